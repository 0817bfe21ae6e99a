#if canImport(Glibc)
import Glibc
#endif

/// The unary activations the op set has.
enum Activation {
    case gelu, silu, sigmoid

    /// The scalar definition every fast path is measured against.
    @inline(__always)
    func apply(_ v: Float) -> Float {
        switch self {
        case .gelu: return 0.5 * v * (1 + erff(v * 0.707_106_781_186_547_6))
        case .silu: return v / (1 + expf(-v))
        case .sigmoid: return 1 / (1 + expf(-v))
        }
    }
}

/// y[i] = act(x[i]), parallel over contiguous chunks.
func activationKernel(_ act: Activation, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
    parallelRanges(count, threads: threads, minChunk: 4096) { r in
        switch act {
        case .gelu: for i in r { y[i] = Activation.gelu.apply(x[i]) }
        case .silu: for i in r { y[i] = Activation.silu.apply(x[i]) }
        case .sigmoid: for i in r { y[i] = Activation.sigmoid.apply(x[i]) }
        }
    }
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
