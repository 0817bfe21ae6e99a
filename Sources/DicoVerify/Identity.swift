import DicoCore
import DicoModel

/// Model identity: two models are comparable only when they are the same DiCo architecture
/// with the same configuration (the storage precision may differ; that is what is verified).
public enum Identity {
    /// Each configuration field on which `a` and `b` differ, as "field: a vs b".
    public static func differences(_ a: DiCoConfig, _ b: DiCoConfig) -> [String] {
        var out: [String] = []
        func check<T: Equatable>(_ name: String, _ x: T, _ y: T) { if x != y { out.append("\(name): \(x) vs \(y)") } }
        check("hidden_size", a.hidden, b.hidden)
        check("depths", a.depths, b.depths)
        check("mlp_ratio", a.mlpRatio, b.mlpRatio)
        check("in_channels", a.inChannels, b.inChannels)
        check("out_channels", a.outChannels, b.outChannels)
        check("num_classes", a.numClasses, b.numClasses)
        check("null_class", a.hasNullClass, b.hasNullClass)
        check("frequency_size", a.frequencySize, b.frequencySize)
        return out
    }

    /// Refuses two models that differ, or that the verifier cannot drive.
    /// - Throws: `DicoError.invalidInput` naming both files and every field that differs, or
    ///   saying what the model lacks (learned variance, the null class) for DiCo's sampler.
    public static func check(_ a: DiCoConfig, _ aName: String, _ b: DiCoConfig, _ bName: String) throws {
        let diff = differences(a, b)
        guard diff.isEmpty else {
            throw DicoError(.invalidInput, "\(aName) and \(bName) are not the same architecture and configuration; they differ in "
                + diff.joined(separator: "; "))
        }
        try checkDrivable(a, aName)
    }

    /// - Throws: `DicoError.invalidInput` when `c` lacks what the verifier needs.
    public static func checkDrivable(_ c: DiCoConfig, _ name: String) throws {
        guard c.learnSigma else {
            throw DicoError.invalid(name, "the model has \(c.outChannels) output channels; the verifier needs learned variance (2 x \(c.inChannels))")
        }
        guard c.hasNullClass else {
            throw DicoError.invalid(name, "the model's embedding tables have no null-class row; classifier-free guidance and the probes need it")
        }
        guard c.inChannels >= Guidance.guidedChannels else {
            throw DicoError.invalid(name, "the model has \(c.inChannels) latent channels; DiCo's guidance mixes the first \(Guidance.guidedChannels)")
        }
    }
}
