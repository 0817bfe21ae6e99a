import DicoCore
import DicoModel
import DicoRuntime

/// The deterministic per-timestep probe set: seeded latents at timesteps spread over the
/// training range with both ends included, labels including the null class.
public struct ProbeSettings: Sendable, Equatable {
    /// Number of timesteps (at least 2: 0 and the last training step are always in).
    public var timesteps: Int
    /// Probe latents per timestep (one forward pass of this batch size).
    public var batch: Int
    /// Latent height and width.
    public var size: Int
    /// Seed of the probe latents and labels.
    public var seed: UInt64
    /// The training schedule's length (the last probe timestep is trainingSteps - 1).
    public var trainingSteps = 1000

    public init(timesteps: Int, batch: Int, size: Int, seed: UInt64) {
        self.timesteps = timesteps
        self.batch = batch
        self.size = size
        self.seed = seed
    }

    /// round(k (T - 1) / (K - 1)) for k = 0..<K (half to even): 0 and T - 1 included.
    public var timestepValues: [Int] {
        guard timesteps > 1 else { return [0] }
        return (0..<timesteps).map { k in Int((Double(k) * Double(trainingSteps - 1) / Double(timesteps - 1)).rounded(.toNearestOrEven)) }
    }

    /// The inputs at probe timestep number `k`: x standard normal from `GaussianNoise` seeded
    /// with `seed` + k (timesteps do not share latents), labels: the null class first, then
    /// seeded real classes.
    public func inputs(_ k: Int, config: DiCoConfig) -> (x: HostTensor, t: [Float], y: [Int64]) {
        let c = config.inChannels
        var noise = GaussianNoise(seed: seed &+ UInt64(k) &* 0x9E37_79B9)
        let x = noise.next(batch * c * size * size).map { Float($0) }
        var rng = SplitMix64(seed: seed ^ (0x7072_6F62 &+ UInt64(k)))   // "prob"
        let y = (0..<batch).map { j in j == 0 ? Int64(config.numClasses) : Int64(rng.next() % UInt64(max(config.numClasses, 1))) }
        let t = Float(timestepValues[k])
        return (HostTensor(shape: [batch, c, size, size], floats: x), [Float](repeating: t, count: batch), y)
    }

    /// The model's outputs on every probe, by timestep number.
    /// - Throws: what the model throws.
    public func outputs(of model: any Denoiser) throws -> [[Float]] {
        try (0..<timesteps).map { k in
            let (x, t, y) = inputs(k, config: model.config)
            return try model.predict(x: x, t: t, y: y).floats!
        }
    }
}

/// The drift of one probe timestep: noise prediction (channels 0..<C) and variance channels
/// (C..<2C) measured separately.
public struct ProbeDrift: Sendable {
    /// The training-step index probed.
    public let timestep: Int
    /// Drift of channels 0..<C (the noise prediction) and C..<2C (the variance interpolation).
    public let eps: Drift
    public let variance: Drift

    /// Compares outputs [B, 2C, H, W] of the candidate and the reference.
    public init(timestep: Int, candidate: [Float], reference: [Float], batch: Int) {
        self.timestep = timestep
        precondition(candidate.count == reference.count)
        let per = candidate.count / batch, half = per / 2
        var e = Drift.Sums(), v = Drift.Sums()
        for s in 0..<batch {
            for k in 0..<per {
                let i = s * per + k
                if k < half { e.add(Double(candidate[i]), Double(reference[i])) } else { v.add(Double(candidate[i]), Double(reference[i])) }
            }
        }
        eps = e.drift
        variance = v.drift
    }
}
