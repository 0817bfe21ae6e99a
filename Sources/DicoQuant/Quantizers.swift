import DicoCore

/// The quantization and rounding kernels. Each is the scalar definition itself, written so
/// the compiler vectorizes it; Tests/DicoQuantTests checks them against independent
/// computations and bounds.
public enum Quantizers {
    /// Symmetric int8 per row (Formats/DICO.md): with m = max |w| over a row, the stored
    /// scale is m / 127 (0 for an all-zero row) and q = round-half-even(w * (127 / m)),
    /// clamped to [-127, 127]. Each row is read from memory once: its maximum, then its
    /// values while they are still in cache.
    /// - Returns: false if a value is NaN or infinite (outputs are then meaningless).
    public static func int8PerRow(_ src: UnsafePointer<Float>, rows: Int, cols: Int,
                                  q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float>) -> Bool {
        var finite = true
        for r in 0..<rows {
            let row = src + r * cols, out = q + r * cols
            // The largest |w| as the largest bit pattern with the sign cleared: for finite
            // floats the orders agree, and NaN or Inf patterns lie above 0x7F800000.
            let bits = UnsafeRawPointer(row).assumingMemoryBound(to: UInt32.self)
            var mb: UInt32 = 0
            for i in 0..<cols { mb = max(mb, bits[i] & 0x7FFF_FFFF) }
            if mb >= 0x7F80_0000 { finite = false }
            let m = Float(bitPattern: mb)
            scales[r] = m / 127
            guard m > 0, finite else {
                out.update(repeating: 0, count: cols)
                continue
            }
            let inv = 127 / m
            for i in 0..<cols {
                // Adding and subtracting 1.5 * 2^23 rounds half to even in the default
                // rounding mode for |v| < 2^22 (here |v| <= 127), and unlike
                // .rounded(.toNearestOrEven) it vectorizes (3.4 -> 0.3 ns per weight).
                var v = row[i] * inv
                v = (v + 12_582_912) - 12_582_912
                v = v < -127 ? -127 : (v > 127 ? 127 : v)
                out[i] = Int8(truncatingIfNeeded: Int32(v))
            }
        }
        return finite
    }

    /// Number of NaN or infinite values (exponent bits all ones), as a vectorizable count.
    public static func nonFiniteCount(_ src: UnsafePointer<Float>, count: Int) -> Int {
        let bits = UnsafeRawPointer(src).assumingMemoryBound(to: UInt32.self)
        var bad = 0
        for i in 0..<count { bad &+= (bits[i] & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0 }
        return bad
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
