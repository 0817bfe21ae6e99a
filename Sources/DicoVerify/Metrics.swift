#if canImport(Glibc)
import Glibc
#endif

/// How far one float array (the candidate) is from another (the reference), accumulated in
/// Double so that the metric itself adds no float32 rounding to what it measures.
public struct Drift: Sendable, Equatable {
    /// ||c - r|| / ||r||; 0 when both are zero, +infinity when only the reference is zero.
    public var relativeL2: Double
    /// <c, r> / (||c|| ||r||); 1 for identical arrays (both zero included), 0 when only one is zero.
    public var cosine: Double
    /// Signal-to-quantization-noise ratio 10 log10(||r||^2 / ||c - r||^2) in dB; +infinity
    /// for identical arrays. Equal to -20 log10(relativeL2).
    public var sqnrDB: Double
    /// max |c_i - r_i|.
    public var maxAbs: Double

    /// No drift at all (identical arrays).
    public static let zero = Drift(relativeL2: 0, cosine: 1, sqnrDB: .infinity, maxAbs: 0)

    /// A drift with these values.
    public init(relativeL2: Double, cosine: Double, sqnrDB: Double, maxAbs: Double) {
        self.relativeL2 = relativeL2
        self.cosine = cosine
        self.sqnrDB = sqnrDB
        self.maxAbs = maxAbs
    }

    /// The drift of `candidate` from `reference` (same length).
    public init<C: Collection, R: Collection>(candidate: C, reference: R) where C.Element: BinaryFloatingPoint, R.Element: BinaryFloatingPoint {
        precondition(candidate.count == reference.count, "drift of arrays of different lengths")
        var sums = Sums()
        for (c, r) in zip(candidate, reference) { sums.add(Double(c), Double(r)) }
        self = sums.drift
    }

    /// Running sums for `Drift`, so a caller can pool several slices without copying them.
    public struct Sums: Sendable {
        /// Sums of (c - r)^2, r^2, c^2, c r, and the running max |c - r|.
        public var err2 = 0.0, ref2 = 0.0, cand2 = 0.0, dot = 0.0, maxAbs = 0.0
        public init() {}
        /// Adds one pair (candidate value, reference value).
        @inline(__always) public mutating func add(_ c: Double, _ r: Double) {
            let d = c - r
            err2 += d * d
            ref2 += r * r
            cand2 += c * c
            dot += c * r
            maxAbs = Swift.max(maxAbs, Swift.abs(d))
        }
        /// The drift of everything added.
        public var drift: Drift {
            let rel = err2 == 0 ? 0 : ref2 == 0 ? Double.infinity : (err2 / ref2).squareRoot()
            // Identical arrays have cosine 1 exactly (the quotient can round to 1 +- 1 ulp).
            let cos = err2 == 0 ? 1 : cand2 == 0 || ref2 == 0 ? 0 : Swift.min(1, Swift.max(-1, dot / (cand2.squareRoot() * ref2.squareRoot())))
            let sqnr = err2 == 0 ? Double.infinity : ref2 == 0 ? -Double.infinity : 10 * log10(ref2 / err2)
            return Drift(relativeL2: rel, cosine: cos, sqnrDB: sqnr, maxAbs: maxAbs)
        }
    }
}

/// Peak signal-to-noise ratio of `candidate` against `reference` in dB:
/// 10 log10(peak^2 / MSE) with peak = max(reference) - min(reference), the reference's data
/// range (latents have no fixed peak as 8-bit images do). +infinity for identical arrays.
public func psnrDB<C: Collection, R: Collection>(candidate: C, reference: R) -> Double where C.Element: BinaryFloatingPoint, R.Element: BinaryFloatingPoint {
    precondition(candidate.count == reference.count, "PSNR of arrays of different lengths")
    var err2 = 0.0, lo = Double.infinity, hi = -Double.infinity
    for (c, r) in zip(candidate, reference) {
        let d = Double(c) - Double(r)
        err2 += d * d
        lo = min(lo, Double(r))
        hi = max(hi, Double(r))
    }
    guard err2 > 0 else { return .infinity }
    let mse = err2 / Double(max(reference.count, 1))
    let peak = hi - lo
    return 10 * log10(peak * peak / mse)
}
