/// Depthwise 3x3 convolution, stride 1, zero padding 1 (DiCo's conv2). Parallel over
/// (image, channel) planes. Rows are processed as three shifted, vectorizable passes.
import DicoIR

func depthwise3x3Kernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                        batch: Int, channels: Int, height: Int, width: Int, threads: Int, epilogue: ConvEpilogue = .none) {
    let plane = height * width
    parallelRanges(batch * channels, threads: threads) { range in
        for nc in range {
            let c = nc % channels
            let src = x + nc * plane, dst = y + nc * plane, k = w + c * 9
            let b0 = bias?[c] ?? 0
            for h in 0..<height {
                let o = dst + h * width
                o.update(repeating: b0, count: width)
                for dy in 0..<3 {
                    let sh = h + dy - 1
                    if sh < 0 || sh >= height { continue }
                    let s = src + sh * width
                    let k0 = k[dy * 3], k1 = k[dy * 3 + 1], k2 = k[dy * 3 + 2]
                    if width == 1 {
                        o[0] += k1 * s[0]
                        continue
                    }
                    // Same summation order as the scalar reference: left, centre, right.
                    o[0] += k1 * s[0] + k2 * s[1]
                    for i in 1..<(width - 1) {
                        o[i] += k0 * s[i - 1] + k1 * s[i] + k2 * s[i + 1]
                    }
                    o[width - 1] += k0 * s[width - 2] + k1 * s[width - 1]
                }
            }
            epilogue.apply(dst, count: plane, image: nc / channels, channel: c, pixel: 0, channels: channels, pixels: plane)
        }
    }
}

/// General 2-D convolution through im2col and sgemm, for the dense 3x3 convs (stems,
/// up/down sampling, output projection) and any grouping. `scratch` holds at least
/// `(cin/groups) * kh * kw * outH * outW` floats.
func im2colConvKernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                      batch: Int, cin: Int, height: Int, width: Int, cout: Int, kh: Int, kw: Int,
                      stride: Int, padding: Int, groups: Int, outH: Int, outW: Int,
                      scratch: UnsafeMutablePointer<Float>, threads: Int, epilogue: ConvEpilogue = .none) {
    let cinG = cin / groups, coutG = cout / groups
    let rows = cinG * kh * kw, cols = outH * outW
    for n in 0..<batch {
        for g in 0..<groups {
            let xg = x + (n * cin + g * cinG) * height * width
            // Row r = (ci, ky, kx) of the column matrix holds the input pixel each output reads.
            parallelRanges(rows, threads: threads) { range in
                for r in range {
                    let ci = r / (kh * kw), ky = (r / kw) % kh, kx = r % kw
                    let dst = scratch + r * cols
                    let src = xg + ci * height * width
                    for oh in 0..<outH {
                        let ih = oh * stride + ky - padding
                        let row = dst + oh * outW
                        if ih < 0 || ih >= height {
                            row.update(repeating: 0, count: outW)
                            continue
                        }
                        let s = src + ih * width
                        for ow in 0..<outW {
                            let iw = ow * stride + kx - padding
                            row[ow] = (iw >= 0 && iw < width) ? s[iw] : 0
                        }
                    }
                }
            }
            let yg = y + (n * cout + g * coutG) * cols
            gemm(GemmProblem(m: coutG, n: cols, k: rows, a: w + g * coutG * rows, lda: rows, strideA: 0,
                             b: scratch, ldb: cols, strideB: 0, transB: false, c: yg, ldc: cols, strideC: 0,
                             bias: bias.map { $0 + g * coutG }),
                 threads: threads, epilogue: epilogue.convTiles(channels: cout, pixels: cols, image: n, channel0: g * coutG))
        }
    }
}
