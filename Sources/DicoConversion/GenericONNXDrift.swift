import DicoCore
import DicoModel
import DicoONNX

/// The drift of a generic ONNX graph converted below float32: the original and the converted
/// graph run in the ONNX interpreter on one seeded input, and each output's relative L2
/// difference is reported. A NaN or Inf output, or a graph that does not run, is an error: no
/// drift can be read from it.
public struct GenericONNXDrift: Sendable {
    /// One graph output's relative L2 difference, converted against original.
    public struct Output: Sendable {
        public let name: String
        public let relativeL2: Double
    }

    public let outputs: [Output]
    /// The seeded inputs, as "name dtype [dims]".
    public let inputs: [String]
    /// The symbolic (or unknown) input dimensions, each run at 1.
    public let symbols: [String]

    /// Seed of the input values (SplitMix64; floats uniform in [-1, 1), integers 0, bools false).
    public static let seed: UInt64 = 0xD1C0_D21F

    /// Runs `original` and `converted` on the seeded input and compares their outputs.
    /// - Parameter what: the conversion, for messages ("int8").
    /// - Throws: `DicoError.invalidInput` naming the file and the input or output: an input
    ///   without a declared shape, a graph that fails to run, a NaN or Inf output.
    public static func measure(original: ONNXModel, converted: ONNXModel, what: String, threads: Int) throws -> GenericONNXDrift {
        var rng = SplitMix64(seed: seed)
        var feeds: [String: ONNXValue] = [:]
        var described: [String] = [], symbols: [String] = []
        for v in original.graph.inputs {
            guard let dims = v.shape else {
                throw DicoError.invalid(original.path, "cannot measure the \(what) drift: graph input '\(v.name)' declares no shape to make a seeded input from")
            }
            let shape = dims.map { d -> Int in
                switch d {
                case let .value(n): return Int(n)
                case let .param(p): symbols.append("\(v.name).\(p)"); return 1
                case .unknown: symbols.append("\(v.name).?"); return 1
                }
            }
            let n = shape.reduce(1, *)
            let storage: ONNXValue.Storage
            switch v.elementType ?? .f32 {
            case .f32, .f16, .bf16: storage = .f32((0..<n).map { _ in Float(rng.next() >> 40) / 8_388_608 - 1 })
            case .f64: storage = .f64((0..<n).map { _ in Double(rng.next() >> 11) / 4_503_599_627_370_496 - 1 })
            case .i64: storage = .i64([Int64](repeating: 0, count: n))
            case .i32, .i16, .i8, .u8: storage = .i32([Int32](repeating: 0, count: n))
            case .bool: storage = .bool([Bool](repeating: false, count: n))
            }
            feeds[v.name] = ONNXValue(shape: shape, storage: storage)
            described.append("\(v.name) \((v.elementType ?? .f32).rawValue) \(shape)")
        }
        func run(_ m: ONNXModel, _ which: String) throws -> [ONNXValue] {
            do {
                return try ONNXInterpreter(model: m, convertWeightsOnUse: true, threads: threads).runOrdered(feeds)
            } catch let e as DicoError where e.kind == .invalidInput {
                throw DicoError.invalid(original.path, "cannot measure the \(what) drift: the \(which) graph does not run on the seeded input: \(e.message)")
            }
        }
        let before = try run(original, "original"), after = try run(converted, "converted")
        var outputs: [Output] = []
        for (k, o) in original.graph.outputs.enumerated() {
            let a = floats(before[k]), b = floats(after[k])
            guard a.allSatisfy(\.isFinite) else {
                throw DicoError.invalid(original.path, "cannot measure the \(what) drift: output '\(o.name)' of the original graph holds NaN or Inf on the seeded input")
            }
            guard b.allSatisfy(\.isFinite), a.count == b.count else {
                throw DicoError.invalid(original.path, "after conversion to \(what), output '\(o.name)' holds NaN or Inf (or changed shape) on the seeded input")
            }
            outputs.append(Output(name: o.name, relativeL2: relativeL2(b, reference: a)))
        }
        return GenericONNXDrift(outputs: outputs, inputs: described, symbols: symbols)
    }

    /// Any value's elements as float32 (integers and bools by value), to compare.
    static func floats(_ v: ONNXValue) -> [Float] {
        switch v.storage {
        case let .f32(x): return x
        case let .f64(x): return x.map { Float($0) }
        case let .i64(x): return x.map { Float($0) }
        case let .i32(x): return x.map { Float($0) }
        case let .bool(x): return x.map { $0 ? 1 : 0 }
        }
    }

    /// The lines `convert` prints.
    public var lines: [String] {
        var out = ["drift (seeded input \(inputs.joined(separator: ", "))\(symbols.isEmpty ? "" : "; symbolic dimensions set to 1: " + symbols.joined(separator: ", "))):"]
        for o in outputs { out.append("  \(o.name): relative L2 \(ONNXCanonicalizer.formatted(o.relativeL2))") }
        return out
    }
}
