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
    /// - Parameter prove: for an ONNX export of DiCo, prove that the graph computes the DiCo
    ///   forward pass (`ONNXCanonicalizer`); only a quick look (`inspect`) skips it.
    public static func open(_ path: String, checkValues: Bool = true, prove: Bool = true) throws -> LoadedModel {
        if DicoFile.hasMagic(path) {
            let f = try DicoFile(path: path)
            guard f.onnxModel == nil else {
                throw DicoError.invalid(path, "holds a generic ONNX graph (.dico \(f.major).\(f.minor), not a DiCo model): inspect and run take it; verify, bench and DiCo conversion need a DiCo model")
            }
            return try fromDico(f)
        }
        if isONNX(path) { return try openONNX(path, checkValues: checkValues, prove: prove) }
        let m = try DiCoModelFile.load(path, checkValues: checkValues)
        var bytes: [String: Int] = [:]
        for t in m.file.tensors { bytes[t.dtype.safetensorsName, default: 0] += t.byteCount }
        var notes = m.weights.notes
        if !m.weights.strippedPrefix.isEmpty { notes.insert("stripped the name prefix '\(m.weights.strippedPrefix)'", at: 0) }
        return LoadedModel(path: path, format: .safetensors, graph: m.graph, config: m.weights.config, tensorCount: m.file.tensors.count,
                           bytesByDType: bytes, notes: notes, provenance: nil, weights: m.weights, sourceSize: m.file.file.size)
    }

    /// A DiCo `.dico` file as a loaded model.
    static func fromDico(_ f: DicoFile) throws -> LoadedModel {
        let path = f.path
        guard let members = f.model.objectMembers, let cfg = members.first(where: { $0.key == "config" })?.value else {
            throw DicoError.invalid(path, "the header's 'model' has no 'config'")
        }
        let config = try DiCoConfig(json: cfg, file: path)
        var bytes: [String: Int] = [:]
        for t in f.tensors { bytes[t.dtype.safetensorsName, default: 0] += t.length }
        return LoadedModel(path: path, format: .dico, graph: f.graph, config: config, tensorCount: f.tensors.count,
                           bytesByDType: bytes, notes: [], provenance: f.provenance, weights: nil, sourceSize: f.file.size)
    }
}

extension LoadedModel {
    /// Whether `path` should be read as ONNX: its name ends in `.onnx`, or its first byte is
    /// 0x08 (field 1, varint: `ModelProto.ir_version`) and its ninth is not the `{` that opens
    /// a safetensors header.
    static func isONNX(_ path: String) -> Bool {
        if path.lowercased().hasSuffix(".onnx") { return true }
        guard let b = MappedFile.prefix(of: path, count: 9), b.count == 9 else { return false }
        return b[0] == 0x08 && b[8] != UInt8(ascii: "{")
    }

    /// Opens an ONNX export of DiCo: parse (protobuf-c), then canonicalize (recognize the
    /// state-dict initializers, build the canonical graph, prove it computes what the ONNX graph
    /// computes). See `ONNXCanonicalizer`.
    static func openONNX(_ path: String, checkValues: Bool, prove: Bool) throws -> LoadedModel {
        let onnx = try ONNXModel.load(path: path)
        do {
            return try fromONNX(onnx, checkValues: checkValues, prove: prove)
        } catch let e as ONNXCanonicalizer.NotDiCo {
            throw DicoError.invalid(path, "ONNX model is not a DiCo export: \(e.reason)")
        }
    }

    /// A model file as `inspect`, `run` and conversion take it: a DiCo (from any format), or an
    /// ONNX graph that is not DiCo (an `.onnx` file, or a `.dico` holding one), which runs in the
    /// ONNX interpreter as written.
    public enum AnyModel {
        case dico(LoadedModel)
        case genericONNX(GenericONNXModel)
    }

    /// Opens `path` like `open`, but returns an ONNX graph that is not DiCo instead of refusing it.
    /// - Parameter checkValues: as for `open` (the DiCo case only: a generic graph's values are
    ///   not checked; NaN and Inf are legitimate in ONNX constants, attention masks say).
    /// - Throws: as `open`.
    /// - Parameter prove: as for `open`. Without the proof, an export whose initializers are a
    ///   DiCo state dict opens as DiCo even if its graph computes something else (the model's
    ///   notes say it is not proven).
    public static func openAny(_ path: String, checkValues: Bool = true, prove: Bool = true) throws -> AnyModel {
        if DicoFile.hasMagic(path) {
            let f = try DicoFile(path: path)
            guard let onnx = f.onnxModel else { return .dico(try fromDico(f)) }
            return .genericONNX(GenericONNXModel(dico: f, onnx: onnx))
        }
        guard isONNX(path) else { return .dico(try open(path, checkValues: checkValues)) }
        let onnx = try ONNXModel.load(path: path)
        do {
            return .dico(try fromONNX(onnx, checkValues: checkValues, prove: prove))
        } catch let e as ONNXCanonicalizer.NotDiCo {
            return .genericONNX(try GenericONNXModel(onnx: onnx, whyNotDiCo: e.reason))
        }
    }

    /// Canonicalizes a parsed ONNX model as DiCo.
    /// - Throws: `ONNXCanonicalizer.NotDiCo`, or `DicoError` for invalid DiCo weights.
    static func fromONNX(_ onnx: ONNXModel, checkValues: Bool, prove: Bool = true) throws -> LoadedModel {
        let path = onnx.path
        let canonical = try ONNXCanonicalizer.canonicalize(onnx, checkValues: checkValues, prove: prove)
        var bytes: [String: Int] = [:]
        for i in onnx.graph.initializers { bytes[i.tensor.dtype.safetensorsName, default: 0] += i.tensor.byteCount }
        let size = try fileSize(path)
        var m = LoadedModel(path: path, format: .onnx, graph: canonical.graph, config: canonical.weights.config,
                            tensorCount: onnx.graph.initializers.count, bytesByDType: bytes, notes: canonical.notes,
                            provenance: nil, weights: canonical.weights, sourceSize: size)
        m.onnx = onnx
        m.externalFiles = externalDataFiles(onnx)
        return m
    }

    /// The file was just parsed; its size (for the summary and the hasher's check) needs no
    /// second mapping.
    static func fileSize(_ path: String) throws -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { throw DicoError.io(path, "cannot stat: \(String(cString: strerror(errno)))") }
        return Int(st.st_size)
    }

    /// The external data files `onnx`'s initializers and `Constant` tensors live in (path as
    /// resolved, size), once each, in the order their first tensor appears (initializers first).
    static func externalDataFiles(_ onnx: ONNXModel) -> [(path: String, size: Int)] {
        var seen = Set<String>()
        var files: [(path: String, size: Int)] = []
        let tensors = onnx.graph.initializers.map(\.tensor) + onnx.graph.nodes.flatMap { n in
            n.attributes.sorted { $0.key < $1.key }.compactMap(\.value.tensor)
        }
        for t in tensors {
            if case .mapped(let file, _) = t.storage, file.path != onnx.path, seen.insert(file.path).inserted {
                files.append((file.path, file.size))
            }
        }
        return files
    }
}

/// An ONNX graph that is not DiCo, as `inspect`, `run` and conversion take it: from an `.onnx`
/// file, or from a generic-graph `.dico` (whose initializers are then the file's tensors).
public struct GenericONNXModel: @unchecked Sendable {
    /// The graph; its path is the file's.
    public let onnx: ONNXModel
    /// The format of the file: `.onnx` or `.dico`.
    public let format: LoadedModel.Format
    /// Why DiCo recognition did not take it: the canonicalizer's reason, or for a `.dico` the
    /// one its provenance records.
    public let whyNotDiCo: String
    /// The `.dico` provenance (nil for `.onnx`).
    public let provenance: JSONValue?
    /// Stored tensors (a `.dico`'s whole table, scales included; an `.onnx` file's initializers)
    /// and their bytes by storage dtype, safetensors spelling.
    public let tensorCount: Int
    public let tensorsByDType: [String: Int]
    public let bytesByDType: [String: Int]
    /// Size of the file in bytes.
    public let sourceSize: Int
    /// The external data files of an `.onnx` model (path as resolved, size); empty for `.dico`.
    public let externalFiles: [(path: String, size: Int)]

    init(onnx: ONNXModel, whyNotDiCo: String) throws {
        self.onnx = onnx
        format = .onnx
        self.whyNotDiCo = whyNotDiCo
        provenance = nil
        let dtypes = onnx.graph.initializers.map { ($0.tensor.dtype.safetensorsName, $0.tensor.byteCount) }
        tensorCount = dtypes.count
        tensorsByDType = Dictionary(dtypes.map { ($0.0, 1) }, uniquingKeysWith: +)
        bytesByDType = Dictionary(dtypes, uniquingKeysWith: +)
        sourceSize = try LoadedModel.fileSize(onnx.path)
        externalFiles = LoadedModel.externalDataFiles(onnx)
    }

    init(dico f: DicoFile, onnx: ONNXModel) {
        self.onnx = onnx
        format = .dico
        let members = f.provenance.objectMembers ?? []
        whyNotDiCo = members.first { $0.key == "not_dico" }?.value.stringValue ?? "(not recorded)"
        provenance = f.provenance
        let dtypes = f.tensors.map { ($0.dtype.safetensorsName, $0.length) }
        tensorCount = dtypes.count
        tensorsByDType = Dictionary(dtypes.map { ($0.0, 1) }, uniquingKeysWith: +)
        bytesByDType = Dictionary(dtypes, uniquingKeysWith: +)
        sourceSize = f.file.size
        externalFiles = []
    }

    /// The remark `inspect` and `convert` print: what does and does not apply to this graph.
    public var note: String {
        "not a DiCo export (\(whyNotDiCo)): DiCo recognition and graph passes do not apply; the graph runs in the ONNX interpreter as written and converts as a generic ONNX graph"
    }
}
