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
            // 127 / m overflows for m below about 3.7e-37; an exact power-of-two prescale
            // keeps such rows finite and leaves every other row's arithmetic unchanged.
            let pre: Float = m < 0x1p-100 ? 0x1p100 : 1
            let inv = 127 / (m * pre)
            for i in 0..<cols {
                // Adding and subtracting 1.5 * 2^23 rounds half to even in the default
                // rounding mode for |v| < 2^22 (here |v| <= 127), and unlike
                // .rounded(.toNearestOrEven) it vectorizes (3.4 -> 0.3 ns per weight).
                var v = (row[i] * pre) * inv
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

    /// float32 to IEEE binary16, round to nearest even (NaN becomes a quiet NaN). Returns the
    /// index of the first finite value that overflows to infinity, or nil.
    ///
    /// Integer arithmetic with selects only (after F. Giesen's float_to_half_fast3_rtne), so
    /// it vectorizes: `Float16(x)` is a library call per value on baseline x86-64, which has
    /// no F16C. Tests check it against `Float16(x)` bit for bit.
    public static func toF16(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt16>) -> Int? {
        let bits = UnsafeRawPointer(src).assumingMemoryBound(to: UInt32.self)
        var overflowed = 0
        for i in 0..<count {
            let x = bits[i]
            let sign = (x >> 16) & 0x8000
            let f = x & 0x7FFF_FFFF
            // Normal halves: rebias the exponent, round the 13 dropped mantissa bits to even.
            let normal = (f &+ 0xC800_0FFF &+ ((f >> 13) & 1)) >> 13
            // Halves below 2^-14 (subnormal or zero): let the FPU round by adding 0.5 (the
            // magic constant puts the half's last mantissa bit at float bit 0).
            let sub = (Float(bitPattern: f) + Float(bitPattern: 0x3F00_0000)).bitPattern &- 0x3F00_0000
            var o = f < 0x3880_0000 ? sub : normal
            // 2^16 * (1 - 2^-12) and above rounds past the largest half: infinity (or NaN).
            o = f >= 0x4780_0000 ? (f > 0x7F80_0000 ? 0x7E00 : 0x7C00) : o
            // 65520 (0x477FF000) and above round to infinity on the normal path too.
            overflowed |= (f >= 0x477F_F000 && f < 0x7F80_0000) ? 1 : 0
            dst[i] = UInt16(truncatingIfNeeded: o | sign)
        }
        guard overflowed != 0 else { return nil }
        return (0..<count).first { bits[$0] & 0x7FFF_FFFF >= 0x477F_F000 && bits[$0] & 0x7FFF_FFFF < 0x7F80_0000 }
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
                if out & 0x7FFF == 0x7F80 && bits & 0x7F80_0000 != 0x7F80_0000 && overflow == nil { overflow = i }
            }
            dst[i] = out
        }
        return overflow
    }
}
