import DicoCore

/// The quantization and rounding kernels. Each is the scalar definition itself, written so
/// the compiler vectorizes it; Tests/DicoQuantTests checks them against independent
/// computations and bounds.
public enum Quantizers {
    /// Symmetric int8 per row: for each of `rows` rows of `cols` values, scale = max|w| / 127
    /// (0 for an all-zero row) and q = round-half-even(w / scale), in [-127, 127].
    public static func int8PerRow(_ src: UnsafePointer<Float>, rows: Int, cols: Int,
                                  q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            let row = src + r * cols, out = q + r * cols
            var m: Float = 0
            for i in 0..<cols { m = max(m, abs(row[i])) }
            let scale = m / 127
            scales[r] = scale
            guard scale > 0 else {
                out.update(repeating: 0, count: cols)
                continue
            }
            // Dividing (not multiplying by 1/scale) keeps q exactly round(w / scale), the
            // value a reader reproduces from the stored scale.
            for i in 0..<cols {
                let v = (row[i] / scale).rounded(.toNearestOrEven)
                out[i] = Int8(max(-127, min(127, v)))
            }
        }
    }

    /// float32 to IEEE binary16, round to nearest even. Returns the index of the first finite
    /// value that overflows to infinity, or nil.
    public static func toF16(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt16>) -> Int? {
        var overflow: Int?
        for i in 0..<count {
            let h = Float16(src[i])
            dst[i] = h.bitPattern
            if h.isInfinite && src[i].isFinite && overflow == nil { overflow = i }
        }
        return overflow
    }

    /// float32 to bfloat16, round to nearest even (NaN stays a quiet NaN). Returns the index
    /// of the first finite value that rounds to infinity, or nil.
    public static func toBF16(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt16>) -> Int? {
        var overflow: Int?
        for i in 0..<count {
            let bits = src[i].bitPattern
            let out: UInt16
            if src[i].isNaN {
                out = UInt16(bits >> 16) | 0x40
            } else {
                out = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
                if out & 0x7FFF == 0x7F80 && overflow == nil { overflow = i }
            }
            dst[i] = out
        }
        return overflow
    }
}
