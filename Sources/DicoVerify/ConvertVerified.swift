#if canImport(Glibc)
import Glibc
#endif
import DicoConversion
import DicoCore

/// `convert --verify`: a conversion that is committed only when the converted model passes
/// verification against its source.
public enum VerifiedConversion {
    /// What happened: the conversion summary (nil when nothing was written) and the verification.
    public struct Outcome {
        /// The conversion of the written output; nil when verification failed and nothing was written.
        public let summary: ConversionSummary?
        /// The verification of the converted model.
        public let verification: VerifyResult
    }

    /// Converts `input` to a hidden intermediate `.dico` beside `output`, verifies it against
    /// `input`, and only then writes `output` with the verification summary in its provenance
    /// (the conversion is deterministic, so `output` holds exactly the weights and graph that
    /// were verified). When verification fails nothing is written unless `keepOnFail`. The
    /// intermediate is removed in every case, on SIGINT/SIGTERM too.
    /// - Throws: what `Converter.convert` and `Verifier.verify` throw; `DicoError(.usage)` when
    ///   `output` exists without `options.overwrite`.
    public static func convert(input: String, output: String, options: ConversionOptions, settings: VerifySettings,
                               thresholds: Thresholds, keepOnFail: Bool, progress: ((Int, Int) -> Void)? = nil) throws -> Outcome {
        if !options.overwrite, access(output, F_OK) == 0 { throw DicoError(.usage, "\(output): already exists; pass --force to overwrite") }
        let slash = output.lastIndex(of: "/")
        let dir = slash.map { String(output[...$0]) } ?? ""
        let name = slash.map { String(output[output.index(after: $0)...]) } ?? output
        let intermediate = "\(dir).\(name).verify-\(getpid())"
        let token = AtomicFileWriter.registerTemporary(intermediate)
        defer {
            unlink(intermediate)
            AtomicFileWriter.forgetTemporary(token, intermediate)
        }
        var first = options
        first.overwrite = true
        _ = try Converter.convert(input: input, output: intermediate, options: first, progress: progress)
        let original = try VerifyModels.open(input, threads: options.threads)
        let candidate = try VerifyModels.open(intermediate, threads: options.threads)
        let result = try Verifier.verify(original: original, candidate: candidate, settings: settings, thresholds: thresholds,
                                         originalName: input, candidateName: output)
        guard result.passed || keepOnFail else { return Outcome(summary: nil, verification: result) }
        var final = options
        final.verification = result.provenanceSummary
        let summary = try Converter.convert(input: input, output: output, options: final)
        return Outcome(summary: summary, verification: result)
    }
}
