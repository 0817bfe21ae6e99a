import DicoCore
import DicoModel
import DicoSafetensors

/// Golden records: a candidate's probe and trajectory outputs with the settings that made
/// them, so that CI can check a later build's outputs without the original model. The file is
/// safetensors (layout: Formats/VERIFY_GOLDEN.md):
///
/// - `probe_outputs` f32 [K, B, 2C, S, S]: the outputs on the K probe timesteps;
/// - `step_latents` f32 [J, M, C, S', S'] and `step_index` i64 [J]: the latents after up to 11
///   trajectory steps spread over the trajectory (the last step included);
/// - `final_latents` f32 [M, C, S', S'];
/// - `__metadata__` key `dico.verify.golden`: JSON with `version` 1, `settings` (as in the
///   report), `config`, `steps`, `floor_frechet` and `provenance`.
public enum Golden {
    static let metadataKey = "dico.verify.golden"

    /// Which trajectory steps a record keeps: round(k (n - 1) / 10) for k = 0...10.
    public static func keptSteps(_ n: Int) -> Set<Int> {
        Set((0...10).map { k in Int((Double(k) * Double(n - 1) / 10).rounded(.toNearestOrEven)) })
    }

    /// Computes `model`'s reference outputs and writes them to `path`.
    /// - Throws: `DicoError(.usage)` when `path` exists and `overwrite` is false; `.io` on
    ///   write failure; what the model throws.
    @discardableResult
    public static func record(_ model: any Denoiser, settings: VerifySettings, to path: String, overwrite: Bool,
                              name: String = "model") throws -> ReferenceOutputs {
        let steps = try DiffusionSchedule(respacing: settings.sampler.respacing).count
        let ref = try Verifier.reference(model, settings: settings, keepSteps: keptSteps(steps), name: name)
        try write(ref, to: path, overwrite: overwrite)
        return ref
    }

    /// Writes reference outputs as a golden record.
    public static func write(_ ref: ReferenceOutputs, to path: String, overwrite: Bool) throws {
        let p = ref.settings.probes, s = ref.settings.sampler, c = ref.config
        let meta: JSONValue = .object([
            ("version", .integer(1)), ("settings", ref.settings.json), ("config", c.json), ("steps", .integer(ref.steps)),
            ("floor_frechet", jsonNumber(ref.floorFrechet)), ("provenance", ref.provenance),
        ])
        let latent = [s.samples, c.inChannels, s.size, s.size]
        try SafetensorsWriter.write([
            (name: "probe_outputs", data: TensorData(shape: [p.timesteps, p.batch, c.outChannels, p.size, p.size], floats: ref.probeOutputs.flatMap { $0 })),
            (name: "step_latents", data: TensorData(shape: [ref.stepLatents.count] + latent, floats: ref.stepLatents.flatMap(\.latents))),
            (name: "step_index", data: TensorData(shape: [ref.stepLatents.count], int64s: ref.stepLatents.map { Int64($0.step) })),
            (name: "final_latents", data: TensorData(shape: latent, floats: ref.finalLatents)),
        ], metadata: [metadataKey: meta.serialized(), "made_by": "dico-convert verify --record-golden"], to: path, overwrite: overwrite)
    }

    /// Reads a golden record.
    /// - Throws: `DicoError.io` when it cannot be read; `DicoError.invalidInput` naming the file
    ///   and what is wrong (not safetensors, no record metadata, shapes that disagree with the
    ///   settings).
    public static func read(_ path: String) throws -> ReferenceOutputs {
        let f = try SafetensorsFile(path: path)
        guard let text = f.metadata?[metadataKey] else { throw DicoError.invalid(path, "not a golden record: no '\(metadataKey)' metadata") }
        let json: JSONValue
        do { json = try StrictJSON.parse(text) } catch { throw DicoError.invalid(path, "the '\(metadataKey)' metadata is not valid JSON: \(error)") }
        guard let m = json.objectMembers else { throw DicoError.invalid(path, "the golden metadata is not a JSON object") }
        func get(_ k: String) -> JSONValue? { m.first { $0.key == k }?.value }
        guard get("version")?.exactNonNegativeInt == 1 else { throw DicoError.invalid(path, "unsupported golden record version (this tool reads version 1)") }
        let settings = try VerifySettings(json: get("settings") ?? .null, file: path)
        guard let cj = get("config") else { throw DicoError.invalid(path, "the golden record has no config") }
        let config = try DiCoConfig(json: cj, file: path)
        guard let steps = get("steps")?.exactNonNegativeInt else { throw DicoError.invalid(path, "the golden record has no step count") }
        guard case let .number(fl)? = get("floor_frechet"), let floor = Double(fl) else { throw DicoError.invalid(path, "the golden record has no floor_frechet") }
        let p = settings.probes, s = settings.sampler
        func tensor(_ name: String, _ shape: [Int], _ dtype: DType = .f32) throws -> TensorData {
            guard let t = f.tensor(name) else { throw DicoError.invalid(path, "the golden record has no tensor '\(name)'") }
            guard t.dtype == dtype, t.shape == shape else {
                throw DicoError.invalid(path, "tensor '\(name)' is \(t.dtype.safetensorsName) \(t.shape); the settings need \(dtype.safetensorsName) \(shape)")
            }
            return t
        }
        let latent = [s.samples, config.inChannels, s.size, s.size]
        let probeFlat = try tensor("probe_outputs", [p.timesteps, p.batch, config.outChannels, p.size, p.size]).floats()
        let per = probeFlat.count / p.timesteps
        guard let idxT = f.tensor("step_index"), idxT.shape.count == 1 else { throw DicoError.invalid(path, "the golden record has no 1-D tensor 'step_index'") }
        let idx = try tensor("step_index", idxT.shape, .i64).int64s()!
        guard idx.allSatisfy({ $0 >= 0 && $0 < Int64(steps) }) else { throw DicoError.invalid(path, "'step_index' names a step outside 0..<\(steps)") }
        let stepFlat = try tensor("step_latents", [idx.count] + latent).floats()
        let lper = latent.reduce(1, *)
        return ReferenceOutputs(
            settings: settings, config: config, provenance: get("provenance") ?? .null,
            probeOutputs: (0..<p.timesteps).map { Array(probeFlat[($0 * per)..<(($0 + 1) * per)]) },
            stepLatents: idx.enumerated().map { (Int($0.element), Array(stepFlat[($0.offset * lper)..<(($0.offset + 1) * lper)])) },
            finalLatents: try tensor("final_latents", latent).floats(), floorFrechet: floor, steps: steps)
    }
}
