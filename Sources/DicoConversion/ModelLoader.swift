import DicoCore
import DicoFormat
import DicoIR
import DicoModel

/// A model opened from any supported file, ready to inspect, run or convert.
public struct LoadedModel: @unchecked Sendable {
    /// The file formats a model can come from.
    public enum Format: String, Sendable { case safetensors, dico }

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

    /// Opens `path`, choosing the reader by the file's first bytes: the `.dico` magic, else
    /// safetensors.
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
        let m = try DiCoModelFile.load(path, checkValues: checkValues)
        var bytes: [String: Int] = [:]
        for t in m.file.tensors { bytes[t.dtype.safetensorsName, default: 0] += t.byteCount }
        var notes = m.weights.notes
        if !m.weights.strippedPrefix.isEmpty { notes.insert("stripped the name prefix '\(m.weights.strippedPrefix)'", at: 0) }
        return LoadedModel(path: path, format: .safetensors, graph: m.graph, config: m.weights.config, tensorCount: m.file.tensors.count,
                           bytesByDType: bytes, notes: notes, provenance: nil, weights: m.weights, sourceSize: m.file.file.size)
    }
}
