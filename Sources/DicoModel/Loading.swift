import DicoCore
import DicoIR
import DicoSafetensors

/// A DiCo model loaded from a safetensors file: the mapped file, the recognized weights and
/// the imported graph. Weights stay in the mapping (zero-copy).
public struct DiCoModelFile: @unchecked Sendable {
    public let file: SafetensorsFile
    public let weights: DiCoWeights
    public let graph: Graph

    /// Opens, validates and recognizes `path`, and builds its graph.
    /// - Throws: `DicoError.io` when the file cannot be read; `DicoError.invalidInput`
    ///   naming the file and every offending tensor when it is not a valid DiCo.
    public static func load(_ path: String, checkValues: Bool = true) throws -> DiCoModelFile {
        let file = try SafetensorsFile(path: path)
        let tensors = file.tensors.map { (name: $0.name, data: file.tensor($0.name)!) }
        let weights = try DiCoRecognizer.recognize(tensors, file: path, checkValues: checkValues)
        let graph = try DiCoGraphBuilder.build(weights)
        return DiCoModelFile(file: file, weights: weights, graph: graph)
    }
}

extension DiCoSynth {
    /// Writes a model of `config` with seeded synthetic weights (float32) to `path`,
    /// streaming one tensor at a time, atomically.
    /// - Throws: `DicoError(.usage)` when `path` exists and `overwrite` is false;
    ///   `DicoError.io` when writing fails.
    public static func write(_ config: DiCoConfig, seed: UInt64, to path: String, overwrite: Bool) throws {
        let expected = config.expectedTensors
        let entries = expected.map { SafetensorsEntry(name: $0.name, dtype: .f32, shape: $0.shape) }
        var meta = ["made_by": "dico-convert synth", "seed": String(seed),
                    "dico.config": DiCoRecognizer.describe(config)]
        if let p = config.preset { meta["dico.preset"] = p.displayName }
        try SafetensorsWriter.write(entries: entries, metadata: meta, to: path, overwrite: overwrite) { i, buf in
            let floats = buf.bindMemory(to: Float.self)
            fill(expected[i], index: i, seed: seed, into: floats)
        }
    }
}
