import DicoTestSupport
import Foundation
import XCTest
import DicoCore
import DicoONNX
import DicoSafetensors

/// The repository's Fixtures/ folder.
let fixtures = fixturesDirectory

/// One case of Fixtures/onnx_op_cases.safetensors (made by Fixtures/make_onnx_op_cases.py).
struct OpCase {
    let name: String
    let op: String
    let opset: Int64
    let attributes: [String: ONNXAttribute]
    /// Input names in node order; nil for an omitted optional input.
    let inputs: [(name: String, initializer: Bool)?]
    let outputs: [String]
    let check: String
}

/// The tensors of the case file, by key.
struct OpCaseTensors {
    let file: SafetensorsFile

    func tensor(_ key: String) throws -> TensorData { try XCTUnwrap(file.tensor(key), key) }
}

/// The cases and the tensors they use.
func loadOpCases() throws -> (OpCaseTensors, [OpCase]) {
    let st = try SafetensorsFile(path: "\(fixtures)/onnx_op_cases.safetensors")
    let file = OpCaseTensors(file: st)
    let json = try XCTUnwrap(st.metadata?["cases"])
    let list = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
    let cases = try list.map { c -> OpCase in
        let name = c["name"] as! String
        var attrs: [String: ONNXAttribute] = [:]
        for (k, v) in c["attributes"] as! [String: [String: Any]] {
            switch v["type"] as! String {
            case "int": attrs[k] = .int((v["value"] as! NSNumber).int64Value)
            case "float": attrs[k] = .float(Float((v["value"] as! NSNumber).doubleValue))
            case "string": attrs[k] = .string(v["value"] as! String)
            case "ints": attrs[k] = .ints((v["value"] as! [NSNumber]).map(\.int64Value))
            case "floats": attrs[k] = .floats((v["value"] as! [NSNumber]).map { Float($0.doubleValue) })
            case "tensor": attrs[k] = .tensor(try file.tensor("\(name).attr.\(k)"))
            case let t: XCTFail("\(name): attribute type \(t)")
            }
        }
        let inputs = (c["inputs"] as! [Any]).map { i -> (String, Bool)? in
            guard let d = i as? [String: Any] else { return nil }
            return (d["name"] as! String, d["initializer"] as! Bool)
        }
        return OpCase(name: name, op: c["op"] as! String, opset: (c["opset"] as! NSNumber).int64Value, attributes: attrs,
                      inputs: inputs, outputs: c["outputs"] as! [String], check: c["check"] as! String)
    }
    return (file, cases)
}

/// A one-node model for `c`, with the inputs it feeds at run time.
func buildModel(_ c: OpCase, _ file: OpCaseTensors) throws -> (ONNXModel, [String: ONNXValue]) {
    var initializers: [ONNXInitializer] = [], graphInputs: [ONNXValueInfo] = [], feeds: [String: ONNXValue] = [:]
    for case let (name, isInit)? in c.inputs {
        let t = try file.tensor("\(c.name).in.\(name)")
        if isInit {
            initializers.append(ONNXInitializer(name: name, tensor: t))
        } else {
            graphInputs.append(ONNXValueInfo(name: name, elementType: t.dtype, shape: t.shape.map { .value(Int64($0)) }))
            feeds[name] = try ONNXValue(t)
        }
    }
    let node = ONNXNode(name: c.name, opType: c.op, domain: "", inputs: c.inputs.map { $0?.name ?? "" }, outputs: c.outputs,
                        attributes: c.attributes)
    let graph = ONNXGraph(name: c.name, nodes: [node], initializers: initializers, inputs: graphInputs,
                          outputs: c.outputs.map { ONNXValueInfo(name: $0, elementType: nil, shape: nil) })
    let model = ONNXModel(path: "onnx_op_cases/\(c.name).onnx", irVersion: 8, opsetImports: ["": c.opset], producerName: "test",
                          producerVersion: "0", graph: graph)
    return (model, feeds)
}

/// The elements of a value as Double (bool as 0/1), for comparisons.
func doubles(_ v: ONNXValue) -> [Double] {
    switch v.storage {
    case let .f32(x): return x.map(Double.init)
    case let .f64(x): return x
    case let .i64(x): return x.map(Double.init)
    case let .i32(x): return x.map(Double.init)
    case let .bool(x): return x.map { $0 ? 1 : 0 }
    }
}

final class ONNXOpConformanceTests: XCTestCase {
    /// "exact" cases (layout, integer and logic ops, Cast, and single correctly rounded IEEE
    /// operations such as Add, Div, Sqrt) must match onnxruntime bit for bit.
    /// "elementwise" cases are float32 transcendental functions (erf, exp, sin, tanh,
    /// sigmoid, pow, Gelu): this interpreter calls the C library, onnxruntime uses MLAS or
    /// Eigen approximations; both are within a few ulps of the true value, so each element
    /// may differ by 1e-6 of its magnitude (about 8 float32 ulps), with the same bound as an
    /// absolute floor near zero.
    let elementwiseTolerance = 1e-6
    /// "l2" cases (Conv, Gemm, MatMul, reductions, LayerNormalization) sum in a different
    /// order (sgemm blocking; Double accumulation here, float there): relative L2 1e-6 is a
    /// few float32 ulps over the whole output, far below any real mistake (>1e-2).
    let l2Tolerance = 1e-6

    func testEveryCaseMatchesOnnxruntime() throws {
        let (file, cases) = try loadOpCases()
        XCTAssertGreaterThan(cases.count, 100)
        var ops = Set<String>()
        var worst: [String: (Double, String)] = [:]   // per check class: largest error and its case
        func note(_ check: String, _ err: Double, _ name: String) { if err >= (worst[check]?.0 ?? -1) { worst[check] = (err, name) } }
        for c in cases {
            ops.insert(c.op)
            let (model, feeds) = try buildModel(c, file)
            let out: [ONNXValue]
            do {
                out = try ONNXInterpreter(model: model).runOrdered(feeds)
            } catch {
                XCTFail("\(c.name): \(error)")
                continue
            }
            XCTAssertEqual(out.count, c.outputs.count, c.name)
            for (k, got) in out.enumerated() {
                let ref = try ONNXValue(try file.tensor("\(c.name).out.\(k)"))
                XCTAssertEqual(got.shape, ref.shape, "\(c.name) output \(k) shape")
                XCTAssertEqual(got.dtype, ref.dtype, "\(c.name) output \(k) dtype")
                guard got.shape == ref.shape, got.dtype == ref.dtype else { continue }
                let a = doubles(got), b = doubles(ref)
                switch c.check {
                case "exact":
                    let same = zip(a, b).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
                    note(c.check, same ? 0 : 1, c.name)
                    XCTAssertTrue(same, "\(c.name) output \(k): \(a.prefix(8)) vs onnxruntime \(b.prefix(8))")
                case "elementwise":
                    let err = zip(a, b).map { abs($0 - $1) / max(abs($1), 1) }.max() ?? 0
                    note(c.check, err, c.name)
                    XCTAssertLessThanOrEqual(err, elementwiseTolerance, "\(c.name) output \(k)")
                case "l2":
                    note(c.check, relativeL2(a, b), c.name)
                    XCTAssertLessThanOrEqual(relativeL2(a, b), l2Tolerance, "\(c.name) output \(k)")
                default:
                    XCTFail("\(c.name): unknown check \(c.check)")
                }
            }
        }
        for (check, (err, name)) in worst.sorted(by: { $0.key < $1.key }) {
            print("\(check): largest error \(String(format: "%.2e", err)) (\(name))")
        }
        // Every op the DiCo exports use has at least one case.
        let dicoOps: Set<String> = ["Conv", "Gemm", "MatMul", "Gather", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Gelu",
                                    "Sigmoid", "Sin", "Cos", "Exp", "Cast", "Constant", "Shape", "Reshape", "Transpose", "Unsqueeze",
                                    "Squeeze", "Slice", "Split", "Concat", "ReduceMean", "GlobalAveragePool", "LayerNormalization",
                                    "DepthToSpace", "SpaceToDepth", "Identity", "Expand", "Range", "ConstantOfShape", "Where", "Equal",
                                    "Neg", "Tanh"]
        XCTAssertEqual(dicoOps.subtracting(ops), [], "ops without a conformance case")
    }
}
