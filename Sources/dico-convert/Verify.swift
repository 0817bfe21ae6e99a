import ArgumentParser
import DicoCore
import DicoRuntime
import DicoVerify
#if canImport(Glibc)
import Glibc
#endif

/// The settings and thresholds flags that `verify` and `convert --verify` share.
struct VerifyOptions: ParsableArguments {
    @Flag(help: "CI mode: few probes, few steps (see README).")
    var quick = false

    @Option(help: "Sampling steps: N (even respacing, as DiCo) or ddimN (integer stride).")
    var steps: String?

    @Option(help: "Sampler: ddpm (learned-range variance) or ddim (eta 0).")
    var sampler: String?

    @Option(help: "Classifier-free guidance scale (1 = none).")
    var cfg: Double?

    @Option(help: "Trajectories per sample set (the Fréchet sets).")
    var samples: Int?

    @Option(help: "Latent height and width of the trajectories (divisible by 4).")
    var size: Int?

    @Option(help: "Seed of the probes, the noise and the labels.")
    var seed: UInt64?

    @Option(help: "A JSON file of threshold names to values.")
    var thresholds: String?

    @Option(help: "Override one threshold: NAME=VALUE (repeatable).")
    var threshold: [String] = []

    /// Whether any setting flag was given (they cannot be with --golden).
    var changesSettings: Bool { quick || steps != nil || sampler != nil || cfg != nil || samples != nil || size != nil || seed != nil }

    /// The verification settings these flags choose.
    /// - Throws: `DicoError(.usage)` for a bad value.
    func settings() throws -> VerifySettings {
        var s = quick ? VerifySettings.quick(seed: seed ?? 0) : VerifySettings.standard(seed: seed ?? 0)
        var custom = false
        if let steps { s.sampler.respacing = try Respacing(parsing: steps); custom = true }
        if let sampler {
            guard let k = SamplerKind(rawValue: sampler) else { throw DicoError(.usage, "--sampler: '\(sampler)' is not ddpm or ddim") }
            s.sampler.kind = k
            custom = true
        }
        if let cfg {
            guard cfg.isFinite, cfg >= 1 else { throw DicoError(.usage, "--cfg: the guidance scale must be a finite number of at least 1") }
            s.sampler.guidance = Guidance(scale: cfg)
            custom = true
        }
        if let samples {
            guard samples >= 2, samples <= 4096 else { throw DicoError(.usage, "--samples: need 2...4096 trajectories (a covariance needs two)") }
            s.sampler.samples = samples
            custom = true
        }
        if let size {
            guard size >= 4, size % 4 == 0, size <= 512 else { throw DicoError(.usage, "--size: must be a multiple of 4 in 4...512") }
            s.sampler.size = size
            custom = true
        }
        if custom { s.mode = (quick ? "quick" : "default") + "+custom" }
        _ = try s.sampler.respacing.indices()
        return s
    }

    /// The thresholds: defaults, then the file, then each flag.
    func resolvedThresholds() throws -> Thresholds {
        var t = Thresholds()
        if let thresholds { try t.apply(file: thresholds) }
        for f in threshold { try t.apply(flag: f) }
        return t
    }
}

/// `dico-convert verify ORIGINAL CANDIDATE`: how far a converted model drifts, and whether
/// that is acceptable.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare a candidate model with the original: probes, sampling trajectories, latent Fréchet distance; exit 1 if a gate fails.",
        discussion: """
        verify ORIGINAL CANDIDATE runs both models; verify --record-golden FILE MODEL records MODEL's outputs; \
        verify --golden FILE CANDIDATE compares a candidate with a record. Exit status: 0 every gate passes, \
        1 a gate fails, 64 usage, 65 invalid input (including models of different architectures), 74 I/O, 70 internal.
        """)

    @Argument(help: "ORIGINAL CANDIDATE (.safetensors or .dico); only the candidate with --golden or --record-golden.")
    var models: [String] = []

    @OptionGroup var options: VerifyOptions

    @Option(help: "Write the JSON report here.")
    var json: String?

    @Option(help: "Record the model's outputs to this golden file (one model argument).")
    var recordGolden: String?

    @Option(help: "Compare the candidate with this golden record instead of an original model.")
    var golden: String?

    @Flag(help: "Overwrite the --json or --record-golden file if it exists.")
    var force = false

    @OptionGroup var threadOptions: ThreadOptions

    func run() throws {
        let threads = threadOptions.threads ?? Executor.defaultThreads
        if recordGolden != nil && golden != nil { throw DicoError(.usage, "choose one of --record-golden and --golden") }
        let expected = recordGolden != nil || golden != nil ? 1 : 2
        guard models.count == expected else {
            throw DicoError(.usage, expected == 2 ? "verify needs ORIGINAL and CANDIDATE" : "with --golden or --record-golden, give exactly one model")
        }
        for out in [json, recordGolden].compactMap({ $0 }) where !force && access(out, F_OK) == 0 {
            throw DicoError(.usage, "\(out): already exists; pass --force to overwrite")
        }
        let thresholds = try options.resolvedThresholds()
        installInterruptHandlers()
        if let recordGolden {
            let model = try VerifyModels.open(models[0], threads: threads)
            let ref = try Golden.record(model, settings: try options.settings(), to: recordGolden, overwrite: force, name: models[0])
            print("recorded \(models[0]) -> \(recordGolden): \(ref.settings.probes.timesteps) probe timesteps, \(ref.steps) \(ref.settings.sampler.kind.rawValue) steps, \(ref.settings.sampler.samples) samples")
            return
        }
        let result: VerifyResult
        if let golden {
            if options.changesSettings { throw DicoError(.usage, "--golden: the settings come from the record; leave out --quick, --steps, --sampler, --cfg, --samples, --size, --seed") }
            let ref = try Golden.read(golden)
            let candidate = try VerifyModels.open(models[0], threads: threads)
            result = try Verifier.compare(reference: ref, candidate: candidate, thresholds: thresholds, golden: true,
                                          originalName: golden, candidateName: models[0])
        } else {
            let settings = try options.settings()
            let original = try VerifyModels.open(models[0], threads: threads)
            let candidate = try VerifyModels.open(models[1], threads: threads)
            result = try Verifier.verify(original: original, candidate: candidate, settings: settings, thresholds: thresholds,
                                         originalName: models[0], candidateName: models[1])
        }
        if let json { try writeText(result.json.serialized() + "\n", to: json, overwrite: force) }
        print(result.text)
        if !result.passed { throw ExitCode(1) }
    }
}

/// Writes `text` to `path` atomically.
/// - Throws: `DicoError(.usage)` when it exists without `overwrite`; `.io` on failure.
func writeText(_ text: String, to path: String, overwrite: Bool) throws {
    let w = try AtomicFileWriter(path: path, overwrite: overwrite)
    var bytes = Array(text.utf8)
    try bytes.withUnsafeMutableBytes { try w.write(UnsafeRawBufferPointer($0)) }
    try w.commit()
}
