import XCTest
import DicoCore
@testable import DicoONNX
import DicoRuntime

/// A model of `nodes` with float32 graph inputs of undeclared shape (unless `inputs` says
/// otherwise) and undeclared outputs.
func model(_ nodes: [ONNXNode], inputs: [ONNXValueInfo], outputs: [String], initializers: [ONNXInitializer] = [],
           opset: Int64 = 17) -> ONNXModel {
    ONNXModel(path: "m.onnx", irVersion: 8, opsetImports: ["": opset], producerName: "test", producerVersion: "0",
              graph: ONNXGraph(name: "g", nodes: nodes, initializers: initializers, inputs: inputs,
                               outputs: outputs.map { ONNXValueInfo(name: $0, elementType: nil, shape: nil) }))
}

func node(_ op: String, _ inputs: [String], _ attributes: [String: ONNXAttribute] = [:], outputs: [String] = ["y"],
          name: String? = nil) -> ONNXNode {
    ONNXNode(name: name ?? op.lowercased(), opType: op, domain: "", inputs: inputs, outputs: outputs, attributes: attributes)
}

func floatInput(_ name: String, _ shape: [ONNXDim]? = nil) -> ONNXValueInfo {
    ONNXValueInfo(name: name, elementType: .f32, shape: shape)
}

func value(_ shape: [Int], _ fill: Float = 1) -> ONNXValue {
    ONNXValue(shape: shape, floats: [Float](repeating: fill, count: shape.reduce(1, *)))!
}

func ints(_ v: [Int64]) -> ONNXValue { ONNXValue(shape: [v.count], int64s: v)! }

final class ONNXInterpreterErrorTests: XCTestCase {
    /// `body` throws an `.invalidInput` DicoError whose message is exactly `message`.
    func assertInvalid(_ message: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Any) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? DicoError else { return XCTFail("not a DicoError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.kind, .invalidInput, file: file, line: line)
            XCTAssertEqual(e.message, message, file: file, line: line)
        }
    }

    // MARK: construction: every static problem names the node, its op and the opset

    func testUnsupportedOpDomainAndAttributeAreRefusedAtConstruction() {
        assertInvalid("m.onnx: node 'lrn' (LRN, opset 17): operator LRN is not supported") {
            try ONNXInterpreter(model: model([node("LRN", ["x"])], inputs: [floatInput("x")], outputs: ["y"]))
        }
        let custom = ONNXNode(name: "c", opType: "Gelu", domain: "com.microsoft", inputs: ["x"], outputs: ["y"], attributes: [:])
        assertInvalid("m.onnx: node 'c' (Gelu, opset 17): domain 'com.microsoft' is not supported (only the default ai.onnx domain is)") {
            try ONNXInterpreter(model: model([custom], inputs: [floatInput("x")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: node 'conv' (Conv, opset 17): attribute 'foo' is not supported") {
            try ONNXInterpreter(model: model([node("Conv", ["x", "w"], ["foo": .int(1)])], inputs: [floatInput("x"), floatInput("w")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: node 'conv' (Conv, opset 17): auto_pad 'SAME' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER") {
            try ONNXInterpreter(model: model([node("Conv", ["x", "w"], ["auto_pad": .string("SAME")])], inputs: [floatInput("x"), floatInput("w")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: node 'depthtospace' (DepthToSpace, opset 17): mode 'RCD' is not DCR or CRD") {
            try ONNXInterpreter(model: model([node("DepthToSpace", ["x"], ["blocksize": .int(2), "mode": .string("RCD")])], inputs: [floatInput("x")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: node 'gelu' (Gelu, opset 17): Gelu is an opset 20 operator") {
            try ONNXInterpreter(model: model([node("Gelu", ["x"])], inputs: [floatInput("x")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: node 'cast' (Cast, opset 17): cast to ONNX data type 17 is not supported (float, double, float16, bfloat16, int32, int64, bool are)") {
            try ONNXInterpreter(model: model([node("Cast", ["x"], ["to": .int(17)])], inputs: [floatInput("x")], outputs: ["y"]))
        }
        // Opset-dependent forms: Unsqueeze takes axes as an input from opset 13.
        assertInvalid("m.onnx: node 'unsqueeze' (Unsqueeze, opset 13): attribute 'axes' is not supported") {
            try ONNXInterpreter(model: model([node("Unsqueeze", ["x"], ["axes": .ints([0])])], inputs: [floatInput("x")], outputs: ["y"], opset: 13))
        }
        assertInvalid("m.onnx: node 'unsqueeze' (Unsqueeze, opset 11): attribute 'axes' is required before opset 13") {
            try ONNXInterpreter(model: model([node("Unsqueeze", ["x"])], inputs: [floatInput("x")], outputs: ["y"], opset: 11))
        }
    }

    func testGatherOnFloatIndicesIsRefusedAtConstruction() {
        let idx = ONNXInitializer(name: "i", tensor: TensorData(shape: [1], floats: [0]))
        assertInvalid("m.onnx: node 'gather' (Gather, opset 17): indices are f32; Gather takes int32 or int64 indices") {
            try ONNXInterpreter(model: model([node("Gather", ["x", "i"])], inputs: [floatInput("x")], outputs: ["y"], initializers: [idx]))
        }
    }

    func testUndefinedInputsDuplicateOutputsAndOpsetsAreRefused() {
        assertInvalid("m.onnx: node 'relu' (Relu, opset 17): input 0 'nope' is not an initializer, a graph input or the output of an earlier node") {
            try ONNXInterpreter(model: model([node("Relu", ["nope"])], inputs: [floatInput("x")], outputs: ["y"]))
        }
        // A node may not read a value computed after it (the file order is the run order).
        assertInvalid("m.onnx: node 'first' (Relu, opset 17): input 0 'z' is not an initializer, a graph input or the output of an earlier node") {
            try ONNXInterpreter(model: model([node("Relu", ["z"], outputs: ["y"], name: "first"), node("Relu", ["x"], outputs: ["z"], name: "second")],
                                             inputs: [floatInput("x")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: node 'b' (Relu, opset 17): output 'y' is already defined (node #1)") {
            try ONNXInterpreter(model: model([node("Relu", ["x"], name: "a"), node("Relu", ["x"], name: "b")], inputs: [floatInput("x")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: graph output 'w' is not produced by any node, input or initializer") {
            try ONNXInterpreter(model: model([node("Relu", ["x"])], inputs: [floatInput("x")], outputs: ["w"]))
        }
        assertInvalid("m.onnx: ai.onnx opset 22 is not supported (the interpreter implements opsets 11 to 21)") {
            try ONNXInterpreter(model: model([node("Relu", ["x"])], inputs: [floatInput("x")], outputs: ["y"], opset: 22))
        }
    }

    // MARK: running: inputs, then node failures "<path>: node '<name>' (<op>): <what>"

    func testInputsAreChecked() throws {
        let m = model([node("Relu", ["x"])], inputs: [floatInput("x", [.param("N"), .value(3)])], outputs: ["y"])
        let interp = try ONNXInterpreter(model: m)
        assertInvalid("m.onnx: input 'x' is missing") { try interp.run([:]) }
        assertInvalid("m.onnx: input 'q' is not an input of the graph (inputs: x)") { try interp.run(["x": value([2, 3]), "q": value([1])]) }
        assertInvalid("m.onnx: input 'x' is i64, the graph declares f32") { try interp.run(["x": ints([1, 2, 3])]) }
        assertInvalid("m.onnx: input 'x' has shape [2, 4], the graph declares [N, 3]; first read by node 'relu' (Relu): the export has fixed shapes there, re-export with dynamic axes to run other shapes") {
            try interp.run(["x": value([2, 4])])
        }
        // The symbolic dimension takes any size.
        XCTAssertEqual(try interp.run(["x": value([5, 3], -1)])["y"], value([5, 3], 0))
    }

    func testNodeFailuresNameTheNodeAndOp() throws {
        let shape = ONNXInitializer(name: "s", tensor: TensorData(shape: [2], int64s: [2, 6]))
        let reshape = try ONNXInterpreter(model: model([node("Reshape", ["x", "s"], name: "r")], inputs: [floatInput("x")], outputs: ["y"], initializers: [shape]))
        XCTAssertEqual(try reshape.run(["x": value([3, 4])])["y"]?.shape, [2, 6])
        assertInvalid("m.onnx: node 'r' (Reshape): cannot reshape [3, 5] (15 elements) to [2, 6] (12 elements)") { try reshape.run(["x": value([3, 5])]) }

        let gather = try ONNXInterpreter(model: model([node("Gather", ["x", "i"], ["axis": .int(1)])], inputs: [floatInput("x"), ONNXValueInfo(name: "i", elementType: .i64, shape: nil)], outputs: ["y"]))
        assertInvalid("m.onnx: node 'gather' (Gather): index 3 is outside [-3, 2] (axis 1 of [2, 3])") { try gather.run(["x": value([2, 3]), "i": ints([0, 3])]) }

        // 'b' declares no type, so a mistyped value reaches the node.
        let add = try ONNXInterpreter(model: model([node("Add", ["a", "b"])], inputs: [floatInput("a"), ONNXValueInfo(name: "b", elementType: nil, shape: nil)], outputs: ["y"]))
        assertInvalid("m.onnx: node 'add' (Add): shapes [2, 3] and [4] do not broadcast (dimension -1 is 3 and 4)") { try add.run(["a": value([2, 3]), "b": value([4])]) }
        assertInvalid("m.onnx: node 'add' (Add): inputs are f32 and i64; Add takes one type") { try add.run(["a": value([3]), "b": ints([1, 2, 3])]) }

        let conv = try ONNXInterpreter(model: model([node("Conv", ["x", "w"])], inputs: [floatInput("x"), floatInput("w")], outputs: ["y"]))
        assertInvalid("m.onnx: node 'conv' (Conv): input X has 3 channels but weight W [4, 2, 3, 3] with group 1 expects 2") {
            try conv.run(["x": value([1, 3, 5, 5]), "w": value([4, 2, 3, 3])])
        }
        assertInvalid("m.onnx: node 'conv' (Conv): input X [1, 2, 2, 2] is smaller than the dilated kernel [3, 3] (with padding)") {
            try conv.run(["x": value([1, 2, 2, 2]), "w": value([4, 2, 3, 3])])
        }
    }

    /// Hostile sizes and arguments fail with a message instead of trapping or allocating
    /// without bound.
    func testHostileShapesFailCleanly() throws {
        let i64 = ONNXValueInfo(name: "s", elementType: .i64, shape: nil)
        let cos = try ONNXInterpreter(model: model([node("ConstantOfShape", ["s"])], inputs: [i64], outputs: ["y"]))
        assertInvalid("m.onnx: node 'constantofshape' (ConstantOfShape): shape [4611686018427387904, 4] is too large") {
            try cos.run(["s": ints([1 << 62, 4])])
        }
        assertInvalid("m.onnx: node 'constantofshape' (ConstantOfShape): shape [-1] has a negative dimension") { try cos.run(["s": ints([-1])]) }
        // No overflow, but more than any value may hold (2^33 elements).
        assertInvalid("m.onnx: node 'constantofshape' (ConstantOfShape): shape [1048576, 8192] is too large") { try cos.run(["s": ints([1 << 20, 1 << 13])]) }
        assertInvalid("m.onnx: node 'conv' (Conv, opset 17): dilations [1, 9223372036854775807] exceeds 16777216") {
            try ONNXInterpreter(model: model([node("Conv", ["x", "w"], ["dilations": .ints([1, .max])])], inputs: [floatInput("x"), floatInput("w")], outputs: ["y"]))
        }
        assertInvalid("m.onnx: node 'depthtospace' (DepthToSpace, opset 17): blocksize 4294967296 must be in 1...65536") {
            try ONNXInterpreter(model: model([node("DepthToSpace", ["x"], ["blocksize": .int(1 << 32)])], inputs: [floatInput("x")], outputs: ["y"]))
        }

        let reshape = try ONNXInterpreter(model: model([node("Reshape", ["x", "s"])], inputs: [floatInput("x"), i64], outputs: ["y"]))
        assertInvalid("m.onnx: node 'reshape' (Reshape): shape [-1, -1] has more than one -1") { try reshape.run(["x": value([4]), "s": ints([-1, -1])]) }
        assertInvalid("m.onnx: node 'reshape' (Reshape): shape [0, -1] copies dimension 0 (0), but the input [] has rank 0") {
            try reshape.run(["x": ONNXValue(shape: [], floats: [1])!, "s": ints([0, -1])])
        }

        let range = try ONNXInterpreter(model: model([node("Range", ["a", "b", "c"])], inputs: ["a", "b", "c"].map { ONNXValueInfo(name: $0, elementType: .i64, shape: nil) }, outputs: ["y"]))
        func scalar(_ v: Int64) -> ONNXValue { ONNXValue(shape: [], int64s: [v])! }
        assertInvalid("m.onnx: node 'range' (Range): delta is 0") { try range.run(["a": scalar(0), "b": scalar(5), "c": scalar(0)]) }
        assertInvalid("m.onnx: node 'range' (Range): range [0.0, 9.223372036854776e+18) by 1.0 has more than 2147483648 elements") {
            try range.run(["a": scalar(0), "b": scalar(.max), "c": scalar(1)])
        }

        let slice = try ONNXInterpreter(model: model([node("Slice", ["x", "a", "b", "ax", "st"])], inputs: [floatInput("x")] + ["a", "b", "ax", "st"].map { ONNXValueInfo(name: $0, elementType: .i64, shape: nil) }, outputs: ["y"]))
        assertInvalid("m.onnx: node 'slice' (Slice): steps[0] is 0") { try slice.run(["x": value([4]), "a": ints([0]), "b": ints([4]), "ax": ints([0]), "st": ints([0])]) }
        assertInvalid("m.onnx: node 'slice' (Slice): axes [0, -1] repeat an axis") {
            try slice.run(["x": value([4]), "a": ints([0, 0]), "b": ints([4, 4]), "ax": ints([0, -1]), "st": ints([1, 1])])
        }

        let transpose = try ONNXInterpreter(model: model([node("Transpose", ["x"], ["perm": .ints([0, 0])])], inputs: [floatInput("x")], outputs: ["y"]))
        assertInvalid("m.onnx: node 'transpose' (Transpose): perm [0, 0] is not a permutation of the 2 axes of [2, 3]") { try transpose.run(["x": value([2, 3])]) }
    }

    // MARK: values

    func testValuesConvertFromTensorDataAndHostTensor() throws {
        // float16 and bfloat16 initializers widen exactly to float32.
        let halves: [UInt16] = [0x3C00, 0xC000, 0x3555]   // 1, -2, 0.333251953125
        let o = OwnedBytes(count: 6)
        halves.withUnsafeBytes { o.pointer.copyMemory(from: $0.baseAddress!, byteCount: 6) }
        let f16 = try ONNXValue(TensorData(dtype: .f16, shape: [3], storage: .owned(o), byteCount: 6))
        XCTAssertEqual(f16.floats, [1, -2, 0.333251953125])
        let bf16 = try ONNXValue(TensorData(dtype: .bf16, shape: [3], storage: .owned(o), byteCount: 6))
        XCTAssertEqual(bf16.floats, [Float(bitPattern: 0x3C00_0000), Float(bitPattern: 0xC000_0000), Float(bitPattern: 0x3555_0000)])
        // A byte count that does not match the shape is an error, not a crash.
        XCTAssertThrowsError(try ONNXValue(TensorData(dtype: .f32, shape: [2], storage: .owned(o), byteCount: 6)))
        XCTAssertNil(ONNXValue(shape: [2, 2], floats: [1, 2, 3]))

        let h = HostTensor(shape: [2], int64s: [7, -1])
        XCTAssertEqual(ONNXValue(h).hostTensor, h)
        let v = value([2, 2], 0.5)
        XCTAssertEqual(try ONNXValue(v.tensorData), v)
        XCTAssertNil(ONNXValue(shape: [1], storage: .bool([true]))!.hostTensor)
    }

    /// Constant nodes are evaluated once at construction; intermediate values can be graph
    /// outputs and be read by later nodes at once.
    func testConstantsAndIntermediateOutputs() throws {
        let c = node("Constant", [], ["value_floats": .floats([1, 2, 3])], outputs: ["k"], name: "k")
        let m = model([c, node("Add", ["x", "k"], outputs: ["s"]), node("Mul", ["s", "s"])], inputs: [floatInput("x")], outputs: ["s", "y"])
        let out = try ONNXInterpreter(model: m).run(["x": value([2, 3])])
        XCTAssertEqual(out["s"]?.floats, [2, 3, 4, 2, 3, 4])
        XCTAssertEqual(out["y"]?.floats, [4, 9, 16, 4, 9, 16])
    }

    /// Each intermediate is released after its last reader, graph inputs included; outputs,
    /// initializers and constants are kept; an output nobody reads is dropped at once.
    func testIntermediatesAreReleasedAfterTheirLastReader() throws {
        let w = ONNXInitializer(name: "w", tensor: TensorData(shape: [3], floats: [1, 2, 3]))
        let nodes = [
            node("Mul", ["x", "w"], outputs: ["a"], name: "n0"),
            node("Relu", ["a"], outputs: ["b"], name: "n1"),
            node("Add", ["a", "b"], outputs: ["c"], name: "n2"),
            node("LayerNormalization", ["c", "w"], outputs: ["d", "mean", "inv"], name: "n3"),
            node("Neg", ["d"], outputs: ["y"], name: "n4"),
        ]
        let interp = try ONNXInterpreter(model: model(nodes, inputs: [floatInput("x")], outputs: ["y", "inv"], initializers: [w]))
        let plan = interp.releasePlan
        XCTAssertEqual(plan.map(\.node), ["n0", "n1", "n2", "n3", "n4"])
        XCTAssertEqual(plan.map(\.released), [["x"], [], ["a", "b"], ["c", "mean"], ["d"]])
        let out = try interp.run(["x": value([2, 3])])
        XCTAssertEqual(out["y"]?.shape, [2, 3])
        XCTAssertEqual(out["inv"]?.shape, [2, 1])
    }
}
