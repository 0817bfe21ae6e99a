#if canImport(Glibc)
import Glibc
#endif

import DicoIR

extension Activation {
    /// The scalar definition every fast path is measured against.
    @inline(__always)
    func apply(_ v: Float) -> Float {
        switch self {
        case .gelu: return geluApprox(v)
        case .silu: return v / (1 + expf(-v))
        case .sigmoid: return 1 / (1 + expf(-v))
        }
    }
}

/// y[i] = act(x[i]), parallel over contiguous chunks. GELU takes the fast `gelu` (libm's
/// scalar erff cost as much as all of DiCo's 1x1 convs); SiLU and sigmoid only ever see
/// the small conditioning vectors and keep libm's expf.
func activationKernel(_ act: Activation, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
    parallelRanges(count, threads: threads, minChunk: 4096) { r in
        applyActivation(act, x + r.lowerBound, y + r.lowerBound, r.count)
    }
}

/// y[i] = act(x[i]) for i < count, one thread (in place when x == y). Each case is its own
/// loop so that the GELU one vectorizes.
@inline(__always)
func applyActivation(_ act: Activation, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
    switch act {
    case .gelu: for i in 0..<count { y[i] = geluApprox(x[i]) }
    case .silu: for i in 0..<count { y[i] = Activation.silu.apply(x[i]) }
    case .sigmoid: for i in 0..<count { y[i] = Activation.sigmoid.apply(x[i]) }
    }
}

/// Exact-form GELU 0.5 x (1 + erf(x / sqrt 2)) with erf from a rational approximation
/// z P(z^2) / Q(z^2) on z in [-4, 4] (beyond which erf is +-1 in float32), the form Eigen
/// uses for float erf. Written as straight-line scalar code so the compiler vectorizes the
/// calling loop (Swift's generic SIMD16 helpers did not: 18 ns per element). KernelTests
/// bounds its error against Double erf.
@inline(__always)
func geluApprox(_ v: Float) -> Float {
    var z = v * 0.707_106_781_186_547_6
    z = z < -4 ? -4 : (z > 4 ? 4 : z)
    let z2 = z * z
    var p = z2 * -2.726_142_258_013_06e-10 + 2.770_681_424_959_02e-08
    p = p * z2 + -2.101_024_020_825_08e-06
    p = p * z2 + -5.692_506_394_623_46e-05
    p = p * z2 + -7.349_906_303_268_55e-04
    p = p * z2 + -2.954_599_808_540_25e-03
    p = p * z2 + -1.609_603_332_624_15e-02
    p = p * z
    var q = z2 * -1.456_607_184_649_96e-05 + -2.133_740_552_789_05e-04
    q = q * z2 + -1.682_826_974_382_03e-03
    q = q * z2 + -7.373_329_167_204_68e-03
    q = q * z2 + -1.426_473_905_141_89e-02
    return 0.5 * v * (1 + p / q)
}

/// Binary elementwise op with numpy broadcasting between equal-rank shapes `a` and `b`
/// (a dimension of 1 repeats). The fast path is an [.., C, H, W] by [.., C, 1, 1]
/// channel scale, as in DiCo's channel attention.
func broadcastBinaryKernel(mul: Bool, a: UnsafePointer<Float>, aShape: [Int], b: UnsafePointer<Float>, bShape: [Int],
                           y: UnsafeMutablePointer<Float>, outShape: [Int], threads: Int) {
    let rank = outShape.count
    let total = outShape.reduce(1, *)
    if aShape == bShape {
        parallelRanges(total, threads: threads, minChunk: 4096) { r in
            if mul { for i in r { y[i] = a[i] * b[i] } } else { for i in r { y[i] = a[i] + b[i] } }
        }
        return
    }
    // Strides of each operand over the output index space (0 where it broadcasts).
    func strides(_ s: [Int]) -> [Int] {
        var st = [Int](repeating: 0, count: rank)
        var acc = 1
        for d in stride(from: rank - 1, through: 0, by: -1) {
            st[d] = s[d] == 1 && outShape[d] != 1 ? 0 : acc
            acc *= s[d]
        }
        return st
    }
    let sa = strides(aShape), sb = strides(bShape)
    let inner = outShape.last ?? 1
    let outer = total / max(inner, 1)
    parallelRanges(outer, threads: threads) { r in
        var idx = [Int](repeating: 0, count: rank)
        for o in r {
            var rem = o, offA = 0, offB = 0
            for d in stride(from: rank - 2, through: 0, by: -1) {
                idx[d] = rem % outShape[d]
                rem /= outShape[d]
                offA += idx[d] * sa[d]
                offB += idx[d] * sb[d]
            }
            let la = sa[rank - 1], lb = sb[rank - 1]
            let dst = y + o * inner
            for i in 0..<inner {
                let va = a[offA + i * la], vb = b[offB + i * lb]
                dst[i] = mul ? va * vb : va + vb
            }
        }
    }
}
