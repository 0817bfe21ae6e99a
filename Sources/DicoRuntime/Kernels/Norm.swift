/// Layer normalization over the channel axis at every pixel (no affine): mean and biased
/// variance over C, accumulated in Double in tiles of pixels so the channel sums stay exact
/// to float rounding even for the widest DiCo levels. With `modulation`, the output is
/// modulated in the same pass: y = norm(x) * (1 + scale[n,c]) + shift[n,c], rounded as the
/// separate `modulate` op rounds it (normalize to float, then multiply-add in float).
func channelLayerNormKernel(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, pixels: Int,
                            eps: Float, threads: Int,
                            modulation: (shift: UnsafePointer<Float>, scale: UnsafePointer<Float>)? = nil) {
    let tile = 128
    let tilesPerImage = (pixels + tile - 1) / tile
    parallelRanges(batch * tilesPerImage, threads: threads) { range in
        var mean = [Double](repeating: 0, count: tile)
        var m2 = [Double](repeating: 0, count: tile)
        for job in range {
            let n = job / tilesPerImage, p0 = (job % tilesPerImage) * tile
            let len = min(tile, pixels - p0)
            let base = x + n * channels * pixels + p0, out = y + n * channels * pixels + p0
            mean.withUnsafeMutableBufferPointer { mu in
                m2.withUnsafeMutableBufferPointer { v in
                    for i in 0..<len { mu[i] = 0; v[i] = 0 }
                    for c in 0..<channels {
                        let row = base + c * pixels
                        for i in 0..<len { mu[i] += Double(row[i]) }
                    }
                    let inv = 1 / Double(channels)
                    for i in 0..<len { mu[i] *= inv }
                    for c in 0..<channels {
                        let row = base + c * pixels
                        for i in 0..<len {
                            let d = Double(row[i]) - mu[i]
                            v[i] += d * d
                        }
                    }
                    for i in 0..<len { v[i] = 1 / (v[i] * inv + Double(eps)).squareRoot() }
                    if let (shift, scale) = modulation {
                        for c in 0..<channels {
                            let row = base + c * pixels, o = out + c * pixels
                            let a = 1 + scale[n * channels + c], b = shift[n * channels + c]
                            for i in 0..<len { o[i] = Float((Double(row[i]) - mu[i]) * v[i]) * a + b }
                        }
                    } else {
                        for c in 0..<channels {
                            let row = base + c * pixels, o = out + c * pixels
                            for i in 0..<len { o[i] = Float((Double(row[i]) - mu[i]) * v[i]) }
                        }
                    }
                }
            }
        }
    }
}

/// DiCo's modulation y = x * (1 + scale) + shift, scale and shift [N,C] broadcast over pixels.
func modulateKernel(x: UnsafePointer<Float>, shift: UnsafePointer<Float>, scale: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                    batch: Int, channels: Int, pixels: Int, threads: Int) {
    parallelRanges(batch * channels, threads: threads) { range in
        for nc in range {
            let a = 1 + scale[nc], b = shift[nc]
            let s = x + nc * pixels, o = y + nc * pixels
            for i in 0..<pixels { o[i] = s[i] * a + b }
        }
    }
}

/// The gated residual out = inp + gate * branch, gate [N,C] broadcast over pixels.
func gatedAddKernel(inp: UnsafePointer<Float>, gate: UnsafePointer<Float>, branch: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                    batch: Int, channels: Int, pixels: Int, threads: Int) {
    parallelRanges(batch * channels, threads: threads) { range in
        for nc in range {
            let g = gate[nc]
            let a = inp + nc * pixels, b = branch + nc * pixels, o = y + nc * pixels
            for i in 0..<pixels { o[i] = a[i] + g * b[i] }
        }
    }
}

/// Mean over each [H*W] plane: [N,C,H,W] -> [N,C,1,1], summed in Double.
func globalAvgPoolKernel(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, planes: Int, pixels: Int, threads: Int) {
    parallelRanges(planes, threads: threads) { range in
        for pl in range {
            let s = x + pl * pixels
            var acc: Double = 0
            for i in 0..<pixels { acc += Double(s[i]) }
            y[pl] = Float(acc / Double(pixels))
        }
    }
}

/// DiCo's channel attention y = x * sigmoid(W pool(x) + b) for x [N,C,pixels], W [C,C]:
/// the pooling, the 1x1 conv on the pooled vector and the sigmoid run as the unfused ops
/// do (`globalAvgPoolKernel`, `linearKernel` with a sigmoid epilogue), so the result is
/// bit-identical; the scale is then applied plane by plane. `scratch` holds 2 * N * C floats.
func channelAttentionKernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                            batch: Int, channels: Int, pixels: Int, scratch: UnsafeMutablePointer<Float>, threads: Int) {
    let planes = batch * channels
    let pooled = scratch, scale = scratch + planes
    globalAvgPoolKernel(x: x, y: pooled, planes: planes, pixels: pixels, threads: threads)
    linearKernel(x: pooled, w: w, bias: bias, y: scale, rows: batch, inFeatures: channels, outFeatures: channels, threads: threads,
                 epilogue: .activation(.sigmoid))
    parallelRanges(planes, threads: threads) { range in
        for nc in range {
            let s = scale[nc], src = x + nc * pixels, dst = y + nc * pixels
            for i in 0..<pixels { dst[i] = src[i] * s }
        }
    }
}
