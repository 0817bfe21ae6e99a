#if canImport(Glibc)
import Glibc
#endif
import DicoModel

/// A source of standard normal values for the sampler: the initial latents, then the noise of
/// each step. Both models of a comparison draw from sources made with the same seed, so they
/// see the same numbers; a test injects recorded numbers instead.
public protocol NoiseSource {
    /// The next `count` standard normal values.
    mutating func next(_ count: Int) -> [Double]
}

/// Standard normal values from SplitMix64 and the Box-Muller transform, in Double.
///
/// Each pair of values comes from two 53-bit uniforms u1 in (0, 1], u2 in [0, 1):
/// r = sqrt(-2 ln u1), z0 = r cos(2 pi u2), z1 = r sin(2 pi u2). Both values of a pair are
/// used, in that order. The same seed gives the same stream on any machine whose libm
/// rounds log, cos and sin the same way (glibc does, on every x86-64).
public struct GaussianNoise: NoiseSource {
    var rng: SplitMix64
    var spare: Double?

    public init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    public mutating func next(_ count: Int) -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(count)
        while out.count < count {
            if let s = spare { out.append(s); spare = nil; continue }
            let u1 = (Double(rng.next() >> 11) + 1) * 0x1p-53
            let u2 = Double(rng.next() >> 11) * 0x1p-53
            let r = (-2 * log(u1)).squareRoot()
            out.append(r * cos(2 * Double.pi * u2))
            spare = r * sin(2 * Double.pi * u2)
        }
        return out
    }
}

/// Recorded noise, replayed in order: the initial latents, then one array per step (for
/// comparing the sampler with a reference implementation that drew its own noise).
public struct ReplayNoise: NoiseSource {
    var chunks: [[Double]]
    public init(_ chunks: [[Double]]) { self.chunks = chunks.reversed() }
    public mutating func next(_ count: Int) -> [Double] {
        guard let c = chunks.popLast() else { preconditionFailure("replayed noise ran out") }
        precondition(c.count == count, "replayed noise has \(c.count) values where the sampler needs \(count)")
        return c
    }
}
