#if canImport(Glibc)
import Glibc
#endif

/// Sinusoidal timestep features, computed in float32 exactly as the PyTorch code does:
/// freq_i = exp(-ln(maxPeriod) * i / half), args = t * freq_i, out = [cos(args), sin(args)].
func timestepEmbeddingKernel(t: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int, dim: Int, maxPeriod: Float) {
    let half = dim / 2
    // PyTorch: (-math.log(max_period) * arange(half, float32)) / half, all in float32.
    let negLog = Float(-log(Double(maxPeriod)))
    for n in 0..<batch {
        let row = y + n * dim
        for i in 0..<half {
            let freq = expf(negLog * Float(i) / Float(half))
            let a = t[n] * freq
            row[i] = cosf(a)
            row[half + i] = sinf(a)
        }
    }
}

/// Row lookup out[n, :] = table[idx[n], :]; indices were range-checked by the caller.
func embeddingKernel(table: UnsafePointer<Float>, idx: UnsafePointer<Int64>, y: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
    for n in 0..<rows {
        (y + n * width).update(from: table + Int(idx[n]) * width, count: width)
    }
}
