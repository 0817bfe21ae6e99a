import DicoCore
import DicoModel

/// What a verification runs: the probe set and the sampling trajectories.
public struct VerifySettings: Sendable, Equatable {
    /// "quick" or "default" (or "custom" once a setting is changed), for the report.
    public var mode: String
    /// The per-timestep probe set.
    public var probes: ProbeSettings
    /// The sampling trajectories (sampler, steps, guidance, set size).
    public var sampler: SamplerSettings

    public init(mode: String, probes: ProbeSettings, sampler: SamplerSettings) {
        self.mode = mode
        self.probes = probes
        self.sampler = sampler
    }

    /// The release-decision default: 11 probe timesteps x 4 latents at 32x32 (256x256 images);
    /// DDPM respaced to 250 steps as DiCo samples, guidance 1.4, 4 trajectories per set at 16x16
    /// (a quarter of the cost of 32x32, which keeps three sets of 250 steps inside the time
    /// budget; see BENCHMARKS.md for the cost on DiCo-S).
    public static func standard(seed: UInt64 = 0) -> VerifySettings {
        VerifySettings(mode: "default", probes: ProbeSettings(timesteps: 11, batch: 4, size: 32, seed: seed),
                       sampler: SamplerSettings(kind: .ddpm, respacing: .even(250), guidance: Guidance(scale: 1.4), samples: 4, size: 16, seed: seed))
    }

    /// The CI mode: 3 probe timesteps (0, 500, 999) x 2 latents at 16x16; 10 DDPM steps,
    /// guidance 1.4, 4 trajectories per set at 16x16.
    public static func quick(seed: UInt64 = 0) -> VerifySettings {
        VerifySettings(mode: "quick", probes: ProbeSettings(timesteps: 3, batch: 2, size: 16, seed: seed),
                       sampler: SamplerSettings(kind: .ddpm, respacing: .even(10), guidance: Guidance(scale: 1.4), samples: 4, size: 16, seed: seed))
    }

    /// The seed of the independent original sample set (the Fréchet noise floor).
    var floorSeed: UInt64 { sampler.seed ^ 0x666C_6F6F_7200 }   // "floor"
}

/// Everything the comparison needs from the original side: computed from the original model,
/// or read from a golden record (so that CI can verify without the original model).
public struct ReferenceOutputs: Sendable {
    /// The settings the outputs were made with.
    public var settings: VerifySettings
    /// The original model's configuration (what a candidate must equal).
    public var config: DiCoConfig
    /// Where the reference came from (the original model's description).
    public var provenance: JSONValue
    /// Probe outputs, by probe timestep number, [B, 2C, H, W] each.
    public var probeOutputs: [[Float]]
    /// Latents after trajectory step s (0 = the first step, from x_T), for the steps kept.
    public var stepLatents: [(step: Int, latents: [Float])]
    /// The final latents of the original sample set.
    public var finalLatents: [Float]
    /// The Fréchet distance between the original set and an independent original set of the
    /// same size (other noise, same labels): the sampling noise floor.
    public var floorFrechet: Double
    /// Total sampling steps of each trajectory.
    public var steps: Int
}

/// The result of comparing a candidate against a reference.
public struct VerifyResult: Sendable {
    /// The settings that ran.
    public let settings: VerifySettings
    /// The thresholds the gates used.
    public let thresholds: Thresholds
    /// Both models' provenance (for a golden record: the recorded model's).
    public let original: JSONValue
    public let candidate: JSONValue
    /// Whether the original side came from a golden record.
    public let golden: Bool
    /// One entry per probe timestep.
    public let probes: [ProbeDrift]
    /// Pooled relative L2 of the latents at each compared step.
    public let stepDrift: [(step: Int, relativeL2: Double)]
    /// Drift of the final latents, all samples pooled, and their PSNR in dB.
    public let final: Drift
    public let finalPSNR: Double
    /// Relative L2 of each sample's final latents.
    public let sampleDrift: [Double]
    /// Latent Fréchet distance original-vs-candidate, and original-vs-independent-original.
    public let frechet: Double
    public let floorFrechet: Double
    /// Wall time of the verification.
    public let seconds: Double

    /// candidate Fréchet / floor Fréchet (0 when both are 0, +infinity when only the floor is).
    public var frechetRatio: Double { frechet == 0 ? 0 : floorFrechet == 0 ? .infinity : frechet / floorFrechet }

    /// Each gate: threshold name, the measured value it judges, and whether it passed.
    public var gates: [(name: String, value: Double, passed: Bool)] {
        let worst = { (f: (ProbeDrift) -> Double, maxi: Bool) -> Double in
            let v = probes.map(f)
            return (maxi ? v.max() : v.min()) ?? (maxi ? 0 : 1)
        }
        let measured: [String: Double] = [
            "probe_eps_rel_l2_max": worst({ $0.eps.relativeL2 }, true),
            "probe_eps_cosine_min": worst({ $0.eps.cosine }, false),
            "probe_var_rel_l2_max": worst({ $0.variance.relativeL2 }, true),
            "probe_var_cosine_min": worst({ $0.variance.cosine }, false),
            "trajectory_step_rel_l2_max": stepDrift.map(\.relativeL2).max() ?? 0,
            "final_rel_l2_max": final.relativeL2,
            "final_sample_rel_l2_max": sampleDrift.max() ?? 0,
            "final_psnr_min_db": finalPSNR,
            "frechet_ratio_max": frechetRatio,
        ]
        return Thresholds.definitions.map { d in
            let v = measured[d.name]!
            return (d.name, v, thresholds.passes(d.name, v))
        }
    }

    /// Whether every gate passed.
    public var passed: Bool { gates.allSatisfy(\.passed) }
}

/// Runs verifications: reference outputs from the original, the candidate's drift from them.
public enum Verifier {
    /// Computes the reference side from the original model.
    /// - Parameters:
    ///   - keepSteps: which trajectory steps to keep the latents of (nil: all).
    ///   - name: the model's file, for error messages.
    /// - Throws: `DicoError.invalidInput` when the model lacks what the sampler needs; what the
    ///   model throws; `DicoError(.usage)` for an impossible respacing.
    public static func reference(_ original: any Denoiser, settings: VerifySettings, keepSteps: Set<Int>? = nil,
                                 name: String = "original") throws -> ReferenceOutputs {
        try Identity.checkDrivable(original.config, name)
        let s = settings.sampler
        let schedule = try DiffusionSchedule(respacing: s.respacing)
        let probes = try settings.probes.outputs(of: original)
        let labels = s.labels(numClasses: original.config.numClasses)
        var kept: [(Int, [Float])] = []
        var noise = GaussianNoise(seed: s.seed)
        let final = try Sampler.run(original, schedule: schedule, kind: s.kind, guidance: s.guidance, labels: labels, size: s.size,
                                    noise: &noise) { step, x in
            if keepSteps?.contains(step) ?? true { kept.append((step, x.map { Float($0) })) }
        }
        var floorNoise = GaussianNoise(seed: settings.floorSeed)
        let floorSet = try Sampler.run(original, schedule: schedule, kind: s.kind, guidance: s.guidance, labels: labels, size: s.size,
                                       noise: &floorNoise)
        let finalF = final.map { Float($0) }
        let fd = Frechet.distance(features(finalF, s, original.config), features(floorSet.map { Float($0) }, s, original.config))
        return ReferenceOutputs(settings: settings, config: original.config, provenance: original.provenance, probeOutputs: probes,
                                stepLatents: kept, finalLatents: finalF, floorFrechet: fd, steps: schedule.count)
    }

    /// Compares `candidate` against `reference` under `thresholds`.
    /// - Throws: `DicoError.invalidInput` when the candidate's architecture differs (listing
    ///   what differs); what the model throws.
    public static func compare(reference: ReferenceOutputs, candidate: any Denoiser, thresholds: Thresholds,
                               golden: Bool = false, originalName: String = "original", candidateName: String = "candidate") throws -> VerifyResult {
        let start = monotonicSeconds()
        try Identity.check(reference.config, originalName, candidate.config, candidateName)
        let settings = reference.settings, s = settings.sampler
        let schedule = try DiffusionSchedule(respacing: s.respacing)
        let probeOut = try settings.probes.outputs(of: candidate)
        let times = settings.probes.timestepValues
        let probes = probeOut.indices.map { k in
            ProbeDrift(timestep: times[k], candidate: probeOut[k], reference: reference.probeOutputs[k], batch: settings.probes.batch)
        }
        let labels = s.labels(numClasses: candidate.config.numClasses)
        var byStep: [Int: [Float]] = [:]
        for (st, l) in reference.stepLatents { byStep[st] = l }
        var stepDrift: [(Int, Double)] = []
        var noise = GaussianNoise(seed: s.seed)
        let final = try Sampler.run(candidate, schedule: schedule, kind: s.kind, guidance: s.guidance, labels: labels, size: s.size,
                                    noise: &noise) { step, x in
            guard let ref = byStep[step] else { return }
            stepDrift.append((step, Drift(candidate: x.lazy.map { Float($0) }, reference: ref).relativeL2))
        }
        let finalF = final.map { Float($0) }
        let ref = reference.finalLatents
        let per = ref.count / s.samples
        let sampleDrift = (0..<s.samples).map { i in
            Drift(candidate: finalF[(i * per)..<((i + 1) * per)], reference: ref[(i * per)..<((i + 1) * per)]).relativeL2
        }
        let fd = Frechet.distance(features(ref, s, candidate.config), features(finalF, s, candidate.config))
        return VerifyResult(settings: settings, thresholds: thresholds, original: reference.provenance, candidate: candidate.provenance,
                            golden: golden, probes: probes, stepDrift: stepDrift,
                            final: Drift(candidate: finalF, reference: ref), finalPSNR: psnrDB(candidate: finalF, reference: ref),
                            sampleDrift: sampleDrift, frechet: fd, floorFrechet: reference.floorFrechet, seconds: monotonicSeconds() - start)
    }

    /// Verifies `candidate` against `original` (both run here).
    /// - Throws: as `reference` and `compare`; the architecture check comes first.
    public static func verify(original: any Denoiser, candidate: any Denoiser, settings: VerifySettings, thresholds: Thresholds,
                              originalName: String = "original", candidateName: String = "candidate") throws -> VerifyResult {
        let start = monotonicSeconds()
        try Identity.check(original.config, originalName, candidate.config, candidateName)
        let ref = try reference(original, settings: settings, name: originalName)
        let r = try compare(reference: ref, candidate: candidate, thresholds: thresholds, originalName: originalName, candidateName: candidateName)
        return VerifyResult(settings: r.settings, thresholds: r.thresholds, original: r.original, candidate: r.candidate, golden: false,
                            probes: r.probes, stepDrift: r.stepDrift, final: r.final, finalPSNR: r.finalPSNR, sampleDrift: r.sampleDrift,
                            frechet: r.frechet, floorFrechet: r.floorFrechet, seconds: monotonicSeconds() - start)
    }

    static func features(_ set: [Float], _ s: SamplerSettings, _ c: DiCoConfig) -> [[Double]] {
        Frechet.features(ofSet: set.map { Double($0) }, samples: s.samples, channels: c.inChannels, height: s.size, width: s.size)
    }
}
