import DicoConversion
import DicoCore
import DicoIR
import DicoModel
import DicoRuntime

/// A DiCo noise-prediction model the verifier can call, whatever file it came from.
///
/// The verifier needs only the configuration (to check that two models are comparable and to
/// shape inputs), a description of where the model came from (for the report), and one forward
/// pass. A model imported from ONNX conforms by running its graph the same way.
public protocol Denoiser: AnyObject {
    /// The architecture and configuration (what `Identity` compares).
    var config: DiCoConfig { get }
    /// Where the model came from: file, format, and the `.dico` provenance if any.
    var provenance: JSONValue { get }
    /// One forward pass: `x` [N, C, H, W] float32, `t` [N] (training-step indices, may be
    /// fractional), `y` [N] class labels (`config.numClasses` is the null class). Returns the
    /// output [N, outChannels, H, W].
    /// - Throws: `DicoError` from the executor (bad shapes, class index out of range).
    func predict(x: HostTensor, t: [Float], y: [Int64]) throws -> HostTensor
}

/// A `Denoiser` over an IR graph run by our executor: how `.safetensors` and `.dico` models
/// (and later ONNX imports, which give the same IR) are verified.
public final class GraphDenoiser: Denoiser {
    public let config: DiCoConfig
    public let provenance: JSONValue
    let executor: Executor

    /// Prepares `graph` for running.
    /// - Throws: `DicoError` when the executor refuses the graph.
    public init(graph: Graph, config: DiCoConfig, provenance: JSONValue, threads: Int) throws {
        self.config = config
        self.provenance = provenance
        executor = try Executor(graph: graph, threads: threads)
    }

    public func predict(x: HostTensor, t: [Float], y: [Int64]) throws -> HostTensor {
        let n = x.shape[0]
        return try executor.run(["x": x, "t": HostTensor(shape: [n], floats: t), "y": HostTensor(shape: [n], int64s: y)])[0]
    }
}

/// Opening models for verification.
public enum VerifyModels {
    /// Opens a model file for verification, choosing the importer by content (`.dico` magic,
    /// ONNX, else safetensors). An ONNX export runs as written, in the ONNX interpreter.
    /// - Throws: `DicoError.io` / `.invalidInput` naming the file and what is wrong.
    public static func open(_ path: String, threads: Int) throws -> any Denoiser {
        let m = try LoadedModel.open(path)
        if let onnx = m.onnx { return try ONNXDenoiser(model: m, onnx: onnx, provenance: describe(m), threads: threads) }
        return try GraphDenoiser(graph: m.graph, config: m.config, provenance: describe(m), threads: threads)
    }

    /// The report's description of a loaded model: file, format, preset, parameters, and the
    /// `.dico` provenance when there is one.
    public static func describe(_ m: LoadedModel) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("file", .string(m.path)), ("format", .string(m.format.rawValue)),
            ("preset", .string(m.config.preset?.displayName ?? "custom")),
            ("parameters", .integer(m.config.parameterCount)),
            ("bytes_by_dtype", .object(m.bytesByDType.sorted { $0.key < $1.key }.map { ($0.key, .integer($0.value)) })),
        ]
        if let p = m.provenance { members.append(("provenance", p)) }
        return .object(members)
    }
}
