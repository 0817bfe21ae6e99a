#if canImport(Glibc)
import Glibc
#endif
import DicoCore
import DicoFormat
import DicoIR
import DicoModel
import DicoONNX

/// A model opened from any supported file, ready to inspect, run or convert.
public struct LoadedModel: @unchecked Sendable {
    /// The file formats a model can come from.
    public enum Format: String, Sendable { case safetensors, dico, onnx }

    public let path: String
    public let format: Format
    public let graph: Graph
    /// The DiCo configuration (inferred from the weights, or recorded in the `.dico`).
    public let config: DiCoConfig
    /// Number of stored tensors and their bytes by storage dtype (safetensors spelling).
    public let tensorCount: Int
    public let bytesByDType: [String: Int]
    /// Remarks made while loading (stripped prefixes, ignored copies).
    public let notes: [String]
    /// The `.dico` provenance, if any.
    public let provenance: JSONValue?
    /// The recognized safetensors weights (nil for `.dico`), what conversion reads from.
    public let weights: DiCoWeights?
    /// Size of the file in bytes.
    public let sourceSize: Int
    /// The parsed ONNX model as written (nil unless `format` is `.onnx`): what the verifier runs
    /// as the original, op by op.
    public var onnx: ONNXModel? = nil
    /// The external data files an ONNX model's weights live in (path as resolved, size), in
    /// the order their first tensor appears; empty for other formats.
    public var externalFiles: [(path: String, size: Int)] = []

    /// Opens `path`, choosing the reader by the file's first bytes: the `.dico` magic, an
    /// ONNX protobuf (a `.onnx` name, or a first byte that is ModelProto's `ir_version` tag where
    /// safetensors would have its header length), else safetensors.
    /// - Throws: `DicoError.io` when the file cannot be read; `DicoError.invalidInput` naming
    ///   the file and what is wrong.
    /// - Parameter checkValues: scan safetensors weights for NaN and Inf (conversion turns
    ///   this off and checks while it streams, to read the input once).
    public static func open(_ path: String, checkValues: Bool = true) throws -> LoadedModel {
        if DicoFile.hasMagic(path) {
            let f = try DicoFile(path: path)
            guard let members = f.model.objectMembers, let cfg = members.first(where: { $0.key == "config" })?.value else {
                throw DicoError.invalid(path, "the header's 'model' has no 'config'")
            }
            let config = try DiCoConfig(json: cfg, file: path)
            var bytes: [String: Int] = [:]
            for t in f.tensors { bytes[t.dtype.safetensorsName, default: 0] += t.length }
            return LoadedModel(path: path, format: .dico, graph: f.graph, config: config, tensorCount: f.tensors.count,
                               bytesByDType: bytes, notes: [], provenance: f.provenance, weights: nil, sourceSize: f.file.size)
        }
        if isONNX(path) { return try openONNX(path, checkValues: checkValues) }
        let m = try DiCoModelFile.load(path, checkValues: checkValues)
        var bytes: [String: Int] = [:]
        for t in m.file.tensors { bytes[t.dtype.safetensorsName, default: 0] += t.byteCount }
        var notes = m.weights.notes
        if !m.weights.strippedPrefix.isEmpty { notes.insert("stripped the name prefix '\(m.weights.strippedPrefix)'", at: 0) }
        return LoadedModel(path: path, format: .safetensors, graph: m.graph, config: m.weights.config, tensorCount: m.file.tensors.count,
                           bytesByDType: bytes, notes: notes, provenance: nil, weights: m.weights, sourceSize: m.file.file.size)
    }
}

extension LoadedModel {
    /// Whether `path` should be read as ONNX: its name ends in `.onnx`, or its first byte is
    /// 0x08 (field 1, varint: `ModelProto.ir_version`) and its ninth is not the `{` that opens
    /// a safetensors header.
    static func isONNX(_ path: String) -> Bool {
        if path.lowercased().hasSuffix(".onnx") { return true }
        guard let f = try? MappedFile(path: path), f.size >= 9, let b = f.base else { return false }
        return b.load(as: UInt8.self) == 0x08 && b.load(fromByteOffset: 8, as: UInt8.self) != UInt8(ascii: "{")
    }

    /// Opens an ONNX export of DiCo: parse (protobuf-c), then canonicalize (recognize the
    /// state-dict initializers, build the canonical graph, prove it computes what the ONNX graph
    /// computes). See `ONNXCanonicalizer`.
    static func openONNX(_ path: String, checkValues: Bool) throws -> LoadedModel {
        let onnx = try ONNXModel.load(path: path)
        do {
            return try fromONNX(onnx, checkValues: checkValues)
        } catch let e as ONNXCanonicalizer.NotDiCo {
            throw DicoError.invalid(path, "ONNX model is not a DiCo export: \(e.reason)")
        }
    }

    /// A model file as `inspect` and `run` take it: a DiCo (from any format), or an ONNX graph
    /// that is not DiCo, which runs in the ONNX interpreter as written.
    public enum AnyModel {
        case dico(LoadedModel)
        /// The parsed ONNX model and why canonicalization did not take it as DiCo.
        case genericONNX(ONNXModel, whyNotDiCo: String)
    }

    /// Opens `path` like `open`, but returns an ONNX graph that is not DiCo instead of refusing it.
    /// - Throws: as `open`.
    public static func openAny(_ path: String) throws -> AnyModel {
        guard isONNX(path) else { return .dico(try open(path)) }
        let onnx = try ONNXModel.load(path: path)
        do {
            return .dico(try fromONNX(onnx, checkValues: true))
        } catch let e as ONNXCanonicalizer.NotDiCo {
            return .genericONNX(onnx, whyNotDiCo: e.reason)
        }
    }

    /// Canonicalizes a parsed ONNX model as DiCo.
    /// - Throws: `ONNXCanonicalizer.NotDiCo`, or `DicoError` for invalid DiCo weights.
    static func fromONNX(_ onnx: ONNXModel, checkValues: Bool) throws -> LoadedModel {
        let path = onnx.path
        let canonical = try ONNXCanonicalizer.canonicalize(onnx, checkValues: checkValues)
        var bytes: [String: Int] = [:]
        for i in onnx.graph.initializers { bytes[i.tensor.dtype.safetensorsName, default: 0] += i.tensor.byteCount }
        // The file was just parsed; its size (for the summary and the hasher's check) needs no
        // second mapping.
        var st = stat()
        guard stat(path, &st) == 0 else { throw DicoError.io(path, "cannot stat: \(String(cString: strerror(errno)))") }
        let size = Int(st.st_size)
        var m = LoadedModel(path: path, format: .onnx, graph: canonical.graph, config: canonical.weights.config,
                            tensorCount: onnx.graph.initializers.count, bytesByDType: bytes, notes: canonical.notes,
                            provenance: nil, weights: canonical.weights, sourceSize: size)
        m.onnx = onnx
        var seen = Set<String>()
        for i in onnx.graph.initializers {
            if case .mapped(let file, _) = i.tensor.storage, file.path != path, seen.insert(file.path).inserted {
                m.externalFiles.append((file.path, file.size))
            }
        }
        return m
    }
}
