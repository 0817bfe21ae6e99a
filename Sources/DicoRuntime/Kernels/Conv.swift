import DicoIR
import Dispatch

/// Depthwise 3x3 convolution, stride 1, zero padding 1 (DiCo's conv2). Parallel over
/// (image, channel) planes; each plane by `depthwise3x3Plane`, then the epilogue while the
/// plane is in L1.
func depthwise3x3Kernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                        batch: Int, channels: Int, height: Int, width: Int, threads: Int, epilogue: ConvEpilogue = .none) {
    let plane = height * width
    parallelRanges(batch * channels, threads: threads) { range in
        for nc in range {
            let c = nc % channels
            let dst = y + nc * plane
            depthwise3x3Plane(x + nc * plane, w + c * 9, bias?[c] ?? 0, dst, height: height, width: width)
            epilogue.apply(dst, count: plane, image: nc / channels, channel: c, pixel: 0, channels: channels, pixels: plane)
        }
    }
}

/// One plane of the depthwise 3x3 conv: each output row written once, as the bias plus the
/// row sums of the input rows above, at and below it, in that order; each row sum is
/// (left + centre) + right. Interior columns 4 at a time (the same arithmetic per lane, no
/// fused multiply-add), so the result is the scalar definition's, bit for bit. SIMD4, the
/// SSE width of the baseline x86-64 target: SIMD8 lowered to shuffles and ran 3x slower,
/// and the plain loop (the previous kernel) did not vectorize at all, 6x slower.
@inline(__always)
func depthwise3x3Plane(_ src: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ b0: Float, _ dst: UnsafeMutablePointer<Float>,
                       height: Int, width: Int) {
    typealias V = SIMD4<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    let u0 = k[0], u1 = k[1], u2 = k[2], m0 = k[3], m1 = k[4], m2 = k[5], d0 = k[6], d1 = k[7], d2 = k[8]
    let bv = V(repeating: b0)
    let vu0 = V(repeating: u0), vu1 = V(repeating: u1), vu2 = V(repeating: u2)
    let vm0 = V(repeating: m0), vm1 = V(repeating: m1), vm2 = V(repeating: m2)
    let vd0 = V(repeating: d0), vd1 = V(repeating: d1), vd2 = V(repeating: d2)
    for h in 0..<height {
        let o = dst + h * width
        // The rows that exist (zero padding drops the others).
        let up = h > 0 ? src + (h - 1) * width : nil, mid = src + h * width, down = h + 1 < height ? src + (h + 1) * width : nil
        if width == 1 {
            var v = b0
            if let up { v += u1 * up[0] }
            v += m1 * mid[0]
            if let down { v += d1 * down[0] }
            o[0] = v
            continue
        }
        // Left and right edges: one neighbour is padding.
        var l = b0, r = b0
        let e = width - 1
        if let up { l += u1 * up[0] + u2 * up[1]; r += u0 * up[e - 1] + u1 * up[e] }
        l += m1 * mid[0] + m2 * mid[1]; r += m0 * mid[e - 1] + m1 * mid[e]
        if let down { l += d1 * down[0] + d2 * down[1]; r += d0 * down[e - 1] + d1 * down[e] }
        o[0] = l
        o[e] = r
        // Interior columns 1..<e by 4; the last group overlaps the one before it (same values
        // written twice) instead of a scalar tail. Rows with both neighbours, the bulk, have
        // no optional in the loop.
        var i = 1
        if e - 1 >= 4 {
            if let up, let down {
                while true {
                    var v = bv + (vu0 * load(up + i - 1) + vu1 * load(up + i) + vu2 * load(up + i + 1))
                    v += vm0 * load(mid + i - 1) + vm1 * load(mid + i) + vm2 * load(mid + i + 1)
                    v += vd0 * load(down + i - 1) + vd1 * load(down + i) + vd2 * load(down + i + 1)
                    UnsafeMutableRawPointer(o + i).storeBytes(of: v, as: V.self)
                    if i == e - 4 { break }
                    i = min(i + 4, e - 4)
                }
            } else {
                while true {
                    var v = bv
                    if let up { v += vu0 * load(up + i - 1) + vu1 * load(up + i) + vu2 * load(up + i + 1) }
                    v += vm0 * load(mid + i - 1) + vm1 * load(mid + i) + vm2 * load(mid + i + 1)
                    if let down { v += vd0 * load(down + i - 1) + vd1 * load(down + i) + vd2 * load(down + i + 1) }
                    UnsafeMutableRawPointer(o + i).storeBytes(of: v, as: V.self)
                    if i == e - 4 { break }
                    i = min(i + 4, e - 4)
                }
            }
            continue
        }
        while i < e {
            var v = b0
            if let up { v += u0 * up[i - 1] + u1 * up[i] + u2 * up[i + 1] }
            v += m0 * mid[i - 1] + m1 * mid[i] + m2 * mid[i + 1]
            if let down { v += d0 * down[i - 1] + d1 * down[i] + d2 * down[i + 1] }
            o[i] = v
            i += 1
        }
    }
}

/// Largest image (pixels) the executor fuses a 1x1 conv into the depthwise conv after it,
/// DiCo's full-resolution level at its 32x32 latent; on larger images the executor runs the
/// two convs one after the other (a task's tile, the 1x1 GEMM's row tile times the image,
/// is already 1.7 MB for DiCo-XL's 416 channels at 1024 pixels; larger sizes not measured).
public let pointwiseDepthwiseMaxPixels = 1024

/// The geometry of a 1x1 conv (`cin` -> `channels`, stride 1, bias optional) feeding a
/// depthwise 3x3 conv (stride 1, padding 1, one group per channel) on `height` x `width` images.
struct PointwiseDepthwiseGeometry {
    var batch: Int, cin: Int, channels: Int, height: Int, width: Int
    var pixels: Int { height * width }
    /// Small images run with the whole batch side by side, as `conv1x1Kernel` does.
    var batched: Bool { conv1x1ScratchCount(batch: batch, cin: cin, cout: channels, pixels: pixels) > 0 }
    /// Columns of one task's GEMM tile: one image, or the whole batch when `batched`.
    var columns: Int { batched ? batch * pixels : pixels }
    /// The grid `conv1x1Kernel`'s GEMM takes for these images (rows = channels, columns = pixels).
    var unfusedTiles: (rows: Int, cols: Int) {
        let none = UnsafeMutablePointer<Float>(bitPattern: 64)!
        return gemmTiles(GemmProblem(m: channels, n: columns, k: cin, a: none, lda: cin, strideA: 0, b: none, ldb: columns, strideB: 0,
                                     transB: false, c: none, ldc: columns, strideC: 0, batch: batched ? 1 : batch))
    }
    /// Channels per task: the unfused GEMM's row tile (OpenBLAS rounds differently for
    /// other row counts once k is in the hundreds, measured by PlanFusionTests).
    var channelTile: Int { unfusedTiles.rows }
    var channelTiles: Int { (channels + channelTile - 1) / channelTile }
    var tasks: Int { (batched ? 1 : batch) * channelTiles }
    func workers(_ threads: Int) -> Int { max(1, min(threads, tasks)) }
    /// Floats of scratch: the gathered input when `batched`, and one tile per worker.
    func scratchCount(threads: Int) -> Int {
        (batched ? cin * batch * pixels : 0) + workers(threads) * channelTile * columns
    }
}

/// y = depthwise3x3(conv1x1(x, w1) + b1, w2) + b2, then the epilogue, without writing the 1x1
/// conv's output to memory: each task computes `channelTile` output channels of the 1x1 conv
/// for one image (or the batch side by side) into its worker's scratch tile, by the same
/// single-threaded sgemm calls as `conv1x1Kernel`'s tiles, then runs the depthwise conv of
/// those channels from the tile (still in cache) straight into `y`. Tasks are fixed by the
/// geometry and each is computed whole by one worker, so results do not depend on `threads`;
/// with the same sgemm calls and the same `depthwise3x3Plane`, they equal the two convs run
/// apart, bit for bit.
func pointwiseDepthwiseKernel(_ g: PointwiseDepthwiseGeometry, x: UnsafePointer<Float>, w1: UnsafePointer<Float>, b1: UnsafePointer<Float>?,
                              w2: UnsafePointer<Float>, b2: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                              scratch: UnsafeMutablePointer<Float>, threads: Int, epilogue: ConvEpilogue = .none) {
    let (cin, channels, pixels, cols) = (g.cin, g.channels, g.pixels, g.columns)
    let tileRows = g.channelTile, channelTiles = g.channelTiles
    // The column split `conv1x1Kernel`'s GEMM takes too: OpenBLAS rounds differently for a
    // different call width.
    let colTile = g.unfusedTiles.cols
    var tiles = scratch
    if g.batched {
        gatherBatchSideBySide(x, into: scratch, batch: g.batch, channels: cin, pixels: pixels, threads: threads)
        tiles += cin * cols
    }
    let workers = g.workers(threads)
    let tileScratch = tiles
    func task(_ t: Int, _ tile: UnsafeMutablePointer<Float>) {
        let block = t / channelTiles, c0 = (t % channelTiles) * tileRows, rows = min(tileRows, channels - c0)
        let b = g.batched ? UnsafePointer(scratch) : x + block * cin * pixels
        for j0 in stride(from: 0, to: cols, by: colTile) {
            sgemmTile(m: rows, n: min(colTile, cols - j0), k: cin, a: w1 + c0 * cin, lda: cin, b: b + j0, ldb: cols, transB: false,
                      c: tile + j0, ldc: cols, bias: b1.map { $0 + c0 })
        }
        let images = g.batched ? 0..<g.batch : block..<(block + 1)
        for r in 0..<rows {
            let c = c0 + r
            for (i, n) in images.enumerated() {
                let dst = y + (n * channels + c) * pixels
                depthwise3x3Plane(tile + r * cols + i * pixels, w2 + c * 9, b2?[c] ?? 0, dst, height: g.height, width: g.width)
                epilogue.apply(dst, count: pixels, image: n, channel: c, pixel: 0, channels: channels, pixels: pixels)
            }
        }
    }
    if workers == 1 {
        for t in 0..<g.tasks { task(t, tileScratch) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { wk in
        let tile = tileScratch + wk * tileRows * cols
        for t in stride(from: wk, to: g.tasks, by: workers) { task(t, tile) }
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
