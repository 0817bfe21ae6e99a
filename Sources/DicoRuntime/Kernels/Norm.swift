/// Most pixels `channelLayerNormKernel` handles per work item. Long row segments matter:
/// DiCo-XL's 32x32 level puts consecutive channel rows 4 KB apart, and in a standalone copy
/// of the kernel (2 threads, DiCo-XL's norm shapes at batch 2, medians of 30) 512-pixel
/// segments ran 1.2x (416 x 1024) to 1.5x (832 x 256) faster than 64-pixel ones, and faster
/// than 128- or 256-pixel ones.
let layerNormMaxTile = 512

/// Layer normalization over the channel axis at every pixel (no affine), reading x once for
/// the statistics and once for the output. Per pixel, with k the first channel's value and
/// d_c = x_c - k in Double, S1 = sum d_c, S2 = sum d_c^2 (channels four at a time):
/// mean = k + S1/C, variance = S2/C - (S1/C)^2 (biased).
///
/// Why one pass stays exact to float rounding: d_c and d_c^2 are exact or rounded once in
/// Double (2^-53). Shifting by one of the samples bounds the cancellation, since any sample
/// lies within sqrt(C - 1) standard deviations of the mean (Samuelson's inequality):
/// (S1/C)^2 <= (C - 1) variance, so S2/C <= C variance, and the Double sums' rounding leaves
/// the variance a relative error below 3 C^2 2^-53: under 4e-9 for C = 3328 (DiCo's widest),
/// 15x below float32's 2^-24, whatever the common offset. The output is rounded to float
/// once, from Double: Float((x - mean) / sqrt(variance + eps)).
///
/// With `modulation`, the output is modulated in the same pass: y = norm(x) * (1 + scale[n,c])
/// + shift[n,c], rounded as the separate `modulate` op rounds it (normalize to float, then
/// multiply-add in float). Each pixel's arithmetic is the same whatever the tile, so the tile
/// may follow the thread count (halved until every worker has one) without changing a bit.
func channelLayerNormKernel(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, pixels: Int,
                            eps: Float, threads: Int,
                            modulation: (shift: UnsafePointer<Float>, scale: UnsafePointer<Float>)? = nil) {
    guard channels > 0 else { return }
    var tile = max(1, min(pixels, layerNormMaxTile))
    while tile > 16 && batch * ((pixels + tile - 1) / tile) < threads { tile /= 2 }
    let tilesPerImage = (pixels + tile - 1) / tile
    parallelRanges(batch * tilesPerImage, threads: threads) { range in
        let stats = UnsafeMutablePointer<Double>.allocate(capacity: 3 * tile)
        defer { stats.deallocate() }
        // k becomes the mean and s2 the reciprocal standard deviation once the sums are in.
        let k = stats, s1 = stats + tile, s2 = stats + 2 * tile
        for job in range {
            let n = job / tilesPerImage, p0 = (job % tilesPerImage) * tile
            let len = min(tile, pixels - p0)
            let base = x + n * channels * pixels + p0, out = y + n * channels * pixels + p0
            for i in 0..<len { k[i] = Double(base[i]); s1[i] = 0; s2[i] = 0 }
            var c = 1
            while c + 3 < channels {
                let r0 = base + c * pixels, r1 = r0 + pixels, r2 = r1 + pixels, r3 = r2 + pixels
                for i in 0..<len {
                    let d0 = Double(r0[i]) - k[i], d1 = Double(r1[i]) - k[i], d2 = Double(r2[i]) - k[i], d3 = Double(r3[i]) - k[i]
                    s1[i] += (d0 + d1) + (d2 + d3)
                    s2[i] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
                }
                c += 4
            }
            while c < channels {
                let r0 = base + c * pixels
                for i in 0..<len {
                    let d0 = Double(r0[i]) - k[i]
                    s1[i] += d0
                    s2[i] += d0 * d0
                }
                c += 1
            }
            let inv = 1 / Double(channels)
            for i in 0..<len {
                let m = s1[i] * inv
                k[i] += m
                // max: rounding may leave a constant pixel's variance a hair below zero.
                s2[i] = 1 / (max(s2[i] * inv - m * m, 0) + Double(eps)).squareRoot()
            }
            let mu = k, v = s2
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

/// Mean over each [H*W] plane: [N,C,H,W] -> [N,C,1,1], summed in Double as eight
/// interleaved partial sums (element i into sum i mod 8, the last `pixels % 8` into the
/// first) added pairwise at the end. One running sum is a chain of dependent adds at 3-4
/// cycles each; eight let the loop run on vector lanes. The order depends on the plane size
/// alone, so results do not depend on `threads`; Double keeps the sums exact to float
/// rounding for any DiCo plane. `channelAttentionKernel` pools through this function, so
/// the fused op and `global_avg_pool` stay bit-identical.
func globalAvgPoolKernel(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, planes: Int, pixels: Int, threads: Int) {
    parallelRanges(planes, threads: threads) { range in
        for pl in range {
            let s = x + pl * pixels
            var a0: Double = 0, a1: Double = 0, a2: Double = 0, a3: Double = 0
            var a4: Double = 0, a5: Double = 0, a6: Double = 0, a7: Double = 0
            var i = 0
            while i + 8 <= pixels {
                a0 += Double(s[i]); a1 += Double(s[i + 1]); a2 += Double(s[i + 2]); a3 += Double(s[i + 3])
                a4 += Double(s[i + 4]); a5 += Double(s[i + 5]); a6 += Double(s[i + 6]); a7 += Double(s[i + 7])
                i += 8
            }
            while i < pixels { a0 += Double(s[i]); i += 1 }
            let acc = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
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
