import DicoCore
import DicoModel

/// The reverse-process update a trajectory uses.
public enum SamplerKind: String, Sendable, CaseIterable {
    /// Ancestral DDPM with the learned-range variance (DiCo's default sampler).
    case ddpm
    /// Deterministic DDIM, eta 0.
    case ddim
}

/// Everything that fixes a set of sampling trajectories.
public struct SamplerSettings: Sendable, Equatable {
    /// DDPM or DDIM.
    public var kind: SamplerKind
    /// Which training steps are visited.
    public var respacing: Respacing
    /// Classifier-free guidance scale.
    public var guidance: Guidance
    /// Trajectories in the set (the sample-set size of the Fréchet distance).
    public var samples: Int
    /// Latent height and width.
    public var size: Int
    /// Seed of the noise (initial latents and per-step noise) and of the labels.
    public var seed: UInt64

    public init(kind: SamplerKind, respacing: Respacing, guidance: Guidance, samples: Int, size: Int, seed: UInt64) {
        self.kind = kind
        self.respacing = respacing
        self.guidance = guidance
        self.samples = samples
        self.size = size
        self.seed = seed
    }

    /// The class labels of the set: seeded, uniform over the real classes (never the null one).
    public func labels(numClasses: Int) -> [Int64] {
        var rng = SplitMix64(seed: seed ^ 0x6C61_6265_6C73)   // "labels"
        return (0..<samples).map { _ in Int64(rng.next() % UInt64(max(numClasses, 1))) }
    }
}

/// Runs sampling trajectories of a model through `Guidance`, the `DiffusionSchedule` update,
/// and a `NoiseSource`.
public enum Sampler {
    /// Samples `labels.count` latents of `channels` x `size` x `size`.
    ///
    /// Draw order from `noise`: the initial latents x_T (all samples), then, for DDPM, one
    /// array of the same size per step, drawn at every step including the last (where it is not
    /// used), as ADM's `p_sample` does. DDIM draws only x_T.
    /// - Parameter observe: called after every step with the step number (0 = first step
    ///   taken, from x_T) and the latents it produced.
    /// - Returns: the final latents, [M, C, size, size] flattened.
    /// - Throws: what the model throws.
    public static func run(_ model: any Denoiser, schedule: DiffusionSchedule, kind: SamplerKind, guidance: Guidance,
                           labels: [Int64], size: Int, noise: inout some NoiseSource,
                           observe: (Int, [Double]) throws -> Void = { _, _ in }) throws -> [Double] {
        let m = labels.count, c = model.config.inChannels
        let shape = [m, c, size, size]
        var x = noise.next(shape.reduce(1, *))
        for (step, i) in (0..<schedule.count).reversed().enumerated() {
            let out = try guidance.predict(model, x: x, shape: shape, t: Double(schedule.timestepMap[i]), y: labels)
            switch kind {
            case .ddpm:
                let z = noise.next(x.count)
                schedule.ddpmStep(i, x: &x, out: out, noise: z, samples: m)
            case .ddim:
                schedule.ddimStep(i, x: &x, out: out, samples: m)
            }
            try observe(step, x)
        }
        return x
    }
}

