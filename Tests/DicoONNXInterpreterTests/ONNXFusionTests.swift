import DicoTestSupport
import XCTest
import DicoCore
import DicoModel
@testable import DicoONNX
import DicoSafetensors

/// The interpreter's pattern fusions (Sources/DicoONNX/Fusion.swift): how many fire on the
/// legacy and dynamo exports of the tiny DiCo, that fused and unfused runs agree, and built
/// graphs on which they must not fire.
final class ONNXFusionTests: XCTestCase {
    /// Fused against unfused, relative L2 over the whole output. The decomposed LayerNorm is the
    /// nodes' own float32 operations (bit for bit); the transposed LayerNormalization divides
    /// by the channel count as a multiplication in Double (one float32 rounding at most per
    /// element); the GELU's erf approximation is a few ulps from libm's erff. 1e-6 is a few
    /// ulps over the output, far below any wrong fusion (a wrong constant moves it by >1e-3).
    let fusedTolerance = 1e-6

    func interpreters(_ model: ONNXModel) throws -> (fused: ONNXInterpreter, unfused: ONNXInterpreter) {
        let fused = try ONNXInterpreter(model: model)
        let unfused = try ONNXInterpreter.$unfused.withValue(true) { try ONNXInterpreter(model: model) }
        XCTAssertEqual(unfused.fusedPatternCount, 0)
        return (fused, unfused)
    }

    /// Every LayerNorm and GELU of the tiny DiCo fuses: two LayerNorms (norm1, norm2) and two
    /// GELUs (after conv2 and conv4) per block, plus the final layer's LayerNorm.
    func testExportsFuseEveryLayerNormAndGelu() throws {
        let config = try DiCoModelFile.load("\(fixtures)/tiny.safetensors").weights.config
        let blocks = config.depths.reduce(0, +)
        let layerNorms = 2 * blocks + 1, gelus = 2 * blocks
        let ref = try SafetensorsFile(path: "\(fixtures)/tiny_onnx_ref.safetensors")
        let inputs: [String: ONNXValue] = [
            "x": try ONNXValue(ref.tensor("x")!), "y": try ONNXValue(ref.tensor("y")!),
            "t": ONNXValue(shape: ref.tensor("t")!.shape, floats: ref.tensor("t")!.floats())!,
        ]
        // The legacy exporter decomposes both (opset 13) or only GELU (opset 17, which has
        // LayerNormalization between channel Transposes); the dynamo export has the
        // LayerNormalization form and a Gelu op.
        let expected: [(String, [ONNXFusion: Int])] = [
            ("tiny_opset13.onnx", [.decomposedLayerNorm: layerNorms, .decomposedGelu: gelus]),
            ("tiny_opset17.onnx", [.transposedLayerNormalization: layerNorms, .decomposedGelu: gelus]),
            ("tiny_dynamo.onnx", [.transposedLayerNormalization: layerNorms]),
        ]
        for (export, counts) in expected {
            let model = try ONNXModel.load(path: "\(fixtures)/\(export)")
            let (fused, unfused) = try interpreters(model)
            XCTAssertEqual(fused.fusions, counts, export)
            let a = try fused.runOrdered(inputs)[0].floats!, b = try unfused.runOrdered(inputs)[0].floats!
            let err = relativeL2(a.map(Double.init), b.map(Double.init))
            XCTAssertLessThanOrEqual(err, fusedTolerance, export)

        }
    }

    // MARK: - Built graphs

    /// A graph over the float32 input `input` of `shape` (and `extraInputs`) with `nodes`,
    /// float32 initializers, and the output "out".
    func graph(_ nodes: [ONNXNode], initializers: [String: ([Int], [Float])], input: String = "x", extraInputs: [String: [Int]] = [:],
               outputs: [String] = ["out"], shape: [Int] = [2, 5, 3, 4], opset: Int64 = 13) -> ONNXModel {
        let inits = initializers.sorted { $0.key < $1.key }.map { ONNXInitializer(name: $0.key, tensor: TensorData(shape: $0.value.0, floats: $0.value.1)) }
        let ins = ([input: shape].merging(extraInputs) { a, _ in a }).sorted { $0.key < $1.key }
            .map { ONNXValueInfo(name: $0.key, elementType: .f32, shape: $0.value.map { .value(Int64($0)) }) }
        let g = ONNXGraph(name: "g", nodes: nodes, initializers: inits, inputs: ins,
                          outputs: outputs.map { ONNXValueInfo(name: $0, elementType: nil, shape: nil) })
        return ONNXModel(path: "built.onnx", irVersion: 8, opsetImports: ["": opset], producerName: "test", producerVersion: "0", graph: g)
    }

    func node(_ op: String, _ inputs: [String], _ output: String, _ attributes: [String: ONNXAttribute] = [:]) -> ONNXNode {
        ONNXNode(name: output, opType: op, domain: "", inputs: inputs, outputs: [output], attributes: attributes)
    }

    /// The legacy LayerNorm over `axes` (two ReduceMeans), reading "x", writing "ln".
    func layerNormNodes(axes: [Int64] = [1], secondAxes: [Int64]? = nil, square: ONNXNode? = nil, eps: String = "eps") -> [ONNXNode] {
        [node("ReduceMean", ["x"], "mean", ["axes": .ints(axes)]), node("Sub", ["x", "mean"], "d"),
         square ?? node("Pow", ["d", "two"], "d2"), node("ReduceMean", ["d2"], "var", ["axes": .ints(secondAxes ?? axes)]),
         node("Add", ["var", eps], "ve"), node("Sqrt", ["ve"], "sd"), node("Div", ["d", "sd"], "ln")]
    }

    let lnConstants: [String: ([Int], [Float])] = ["two": ([], [2]), "eps": ([], [1e-6])]

    /// The legacy GELU of "x", writing "out": Div(sqrt 2), Erf, Add(1), Mul(x), Mul(0.5).
    func geluNodes(add: [String] = ["e", "one"], mul: [String] = ["x", "p"]) -> [ONNXNode] {
        [node("Div", ["x", "root2"], "q"), node("Erf", ["q"], "e"), node("Add", add, "p"), node("Mul", mul, "r"),
         node("Mul", ["half", "r"], "out")]
    }

    let geluConstants: [String: ([Int], [Float])] = ["root2": ([], [Float(2).squareRoot()]), "one": ([1], [1]), "half": ([], [0.5])]

    /// Runs `model` fused and unfused on seeded inputs (every graph input, by its declared
    /// shape; inputs after the first are positive, so that an eps input keeps the root real), checks that both give the same outputs, and returns the fused counts.
    func fusedCounts(_ model: ONNXModel, file: StaticString = #filePath, line: UInt = #line) throws -> [ONNXFusion: Int] {
        let (fused, unfused) = try interpreters(model)
        var feeds: [String: ONNXValue] = [:]
        for (k, info) in model.graph.inputs.enumerated() {
            let shape = info.shape!.map { d -> Int in if case let .value(v) = d { return Int(v) }; return 1 }
            feeds[info.name] = ONNXValue(shape: shape, floats: (0..<shape.reduce(1, *)).map { Float(sin(Double($0 + 7 * k) * 1.7)) * 3 + (k == 0 ? 0.5 : 4) })!
        }
        let a = try fused.runOrdered(feeds), b = try unfused.runOrdered(feeds)
        XCTAssertEqual(a.map(\.shape), b.map(\.shape), file: file, line: line)
        for (p, q) in zip(a, b) {
            // NaN where both have it (a Pow 3 variance has negative roots), compared elsewhere.
            let (u, v) = (doubles(p), doubles(q))
            XCTAssertEqual(u.map(\.isNaN), v.map(\.isNaN), file: file, line: line)
            XCTAssertLessThanOrEqual(relativeL2(u.map { $0.isNaN ? 0 : $0 }, v.map { $0.isNaN ? 0 : $0 }), fusedTolerance, file: file, line: line)
        }
        return fused.fusions
    }

    func testDecomposedLayerNormFires() throws {
        let identity = node("Identity", ["ln"], "out")
        // Over axis 1 of NCHW directly, the square as Pow(2) or as Mul(d, d).
        let plain = graph(layerNormNodes() + [identity], initializers: lnConstants)
        XCTAssertEqual(try fusedCounts(plain), [.decomposedLayerNorm: 1])
        // The fused kernel is the nodes' own float32 arithmetic: equal bit for bit.
        let (fused, unfused) = try interpreters(plain)
        let x = ["x": ONNXValue(shape: [2, 5, 3, 4], floats: (0..<120).map { Float(cos(Double($0) * 0.9)) * 5 - 1 })!]
        XCTAssertEqual(try fused.runOrdered(x)[0].floats!, try unfused.runOrdered(x)[0].floats!)
        XCTAssertEqual(try fusedCounts(graph(layerNormNodes(square: node("Mul", ["d", "d"], "d2")) + [identity], initializers: lnConstants)),
                       [.decomposedLayerNorm: 1])
        // Opset 18: the axes as a constant input.
        let op18 = layerNormNodes().map { n in
            n.opType == "ReduceMean" ? ONNXNode(name: n.name, opType: n.opType, domain: "", inputs: n.inputs + ["axis1"], outputs: n.outputs, attributes: [:]) : n
        }
        let g18 = graph(op18 + [identity], initializers: lnConstants, opset: 18)
        let axesInit = ONNXInitializer(name: "axis1", tensor: TensorData(shape: [1], int64s: [1]))
        let m18 = ONNXModel(path: "built.onnx", irVersion: 8, opsetImports: ["": 18], producerName: "test", producerVersion: "0",
                            graph: ONNXGraph(name: "g", nodes: g18.graph.nodes, initializers: g18.graph.initializers + [axesInit],
                                             inputs: g18.graph.inputs, outputs: g18.graph.outputs))
        XCTAssertEqual(try fusedCounts(m18), [.decomposedLayerNorm: 1])
        // DiCo's channel form with an affine: Transpose in, LayerNorm over -1, Mul, Add, Transpose out.
        var consts = lnConstants
        consts["scale"] = ([5], [0.5, 1.5, -2, 1, 3])
        consts["bias"] = ([1, 5], [0.1, -0.2, 0.3, 0, 7])
        let channel = [node("Transpose", ["in"], "x", ["perm": .ints([0, 2, 3, 1])])] + layerNormNodes(axes: [-1])
            + [node("Mul", ["ln", "scale"], "scaled"), node("Add", ["bias", "scaled"], "shifted"),
               node("Transpose", ["shifted"], "out", ["perm": .ints([0, 3, 1, 2])])]
        XCTAssertEqual(try fusedCounts(graph(channel, initializers: consts, input: "in")), [.decomposedLayerNorm: 1])
    }

    func testDecomposedLayerNormDoesNotFire() throws {
        let identity = node("Identity", ["ln"], "out")
        // An intermediate with another reader (the mean, also a graph output via Identity).
        XCTAssertEqual(try fusedCounts(graph(layerNormNodes() + [identity, node("Identity", ["mean"], "m")], initializers: lnConstants,
                                             outputs: ["out", "m"])), [:])
        // An intermediate that is itself a graph output.
        XCTAssertEqual(try fusedCounts(graph(layerNormNodes() + [identity], initializers: lnConstants, outputs: ["out", "sd"])), [:])
        // Pow 3 instead of 2.
        var pow3 = lnConstants
        pow3["two"] = ([], [3])
        XCTAssertEqual(try fusedCounts(graph(layerNormNodes() + [identity], initializers: pow3)), [:])
        // eps as a graph input, not a constant.
        XCTAssertEqual(try fusedCounts(graph(layerNormNodes(eps: "e") + [identity], initializers: lnConstants, extraInputs: ["e": []])), [:])
        // The two ReduceMeans over different axes.
        XCTAssertEqual(try fusedCounts(graph(layerNormNodes(axes: [1], secondAxes: [-1]) + [identity], initializers: lnConstants)), [:])
        // Two axes at once.
        XCTAssertEqual(try fusedCounts(graph(layerNormNodes(axes: [1, 2]) + [identity], initializers: lnConstants)), [:])
    }

    func testDecomposedGeluFiresInEitherOperandOrder() throws {
        XCTAssertEqual(try fusedCounts(graph(geluNodes(), initializers: geluConstants)), [.decomposedGelu: 1])
        XCTAssertEqual(try fusedCounts(graph(geluNodes(add: ["one", "e"], mul: ["p", "x"]), initializers: geluConstants)), [.decomposedGelu: 1])
    }

    func testDecomposedGeluDoesNotFire() throws {
        // A wrong constant: 1.41 for sqrt 2, 2 for 1, 0.25 for 0.5.
        for (name, value) in [("root2", Float(1.41)), ("one", 2), ("half", 0.25)] {
            var c = geluConstants
            c[name] = (c[name]!.0, [value])
            XCTAssertEqual(try fusedCounts(graph(geluNodes(), initializers: c)), [:], name)
        }
        // The Erf output also read elsewhere.
        XCTAssertEqual(try fusedCounts(graph(geluNodes() + [node("Identity", ["e"], "e2")], initializers: geluConstants, outputs: ["out", "e2"])), [:])
        // Mul by something other than the Div's input.
        XCTAssertEqual(try fusedCounts(graph(geluNodes(mul: ["z", "p"]), initializers: geluConstants, extraInputs: ["z": [2, 5, 3, 4]])), [:])
        // sqrt 2 as a graph input.
        var c = geluConstants
        c["root2"] = nil
        XCTAssertEqual(try fusedCounts(graph(geluNodes(), initializers: c, extraInputs: ["root2": []])), [:])
    }
}
