import DicoCore
import Dispatch

/// Seeded synthetic DiCo weights under the official names, so tests and benchmarks of
/// large presets need no download.
///
/// Values are uniform with a standard deviation of 1/sqrt(fan-in) for weights (so each
/// linear map keeps activations unit-order), 0.5/sqrt(fan-in) for adaLN weights (their
/// outputs are scales, shifts and gates: kept around 0.3 so deep stacks stay finite),
/// 0.02 for biases and 1 for embedding rows. Every value is non-zero with probability 1,
/// so every path of the network influences the output.
///
/// Determinism: tensor i, chunk j draws from its own generator seeded by (seed, i, j),
/// so the bytes do not depend on the thread count.
public enum DiCoSynth {
    /// Elements per independently seeded chunk.
    static let chunk = 1 << 16

    /// Fills `out` with tensor `index`'s values for `seed`.
    public static func fill(_ e: ExpectedTensor, index: Int, seed: UInt64, into out: UnsafeMutableBufferPointer<Float>) {
        let std: Float
        switch e.role {
        case let .weight(fanIn): std = 1 / Float(fanIn).squareRoot()
        case let .modulationWeight(fanIn): std = 0.5 / Float(fanIn).squareRoot()
        case .bias: std = 0.02
        case .embeddingTable: std = 1
        }
        let half = std * Float(3).squareRoot()   // uniform on [-a, a] has std a / sqrt 3
        let n = out.count
        let chunks = (n + chunk - 1) / chunk
        DispatchQueue.concurrentPerform(iterations: chunks) { j in
            var rng = SplitMix64(seed: seed ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(j) &* 0xD1B5_4A32_D192_ED03))
            for k in (j * chunk)..<min(n, (j + 1) * chunk) {
                // 24 random bits to (0, 1), never exactly 0 or 1, then to (-a, a).
                let u = (Float(rng.next() >> 40) + 0.5) * (1.0 / 16_777_216.0)
                out[k] = (2 * u - 1) * half
            }
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for weights.
public struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
