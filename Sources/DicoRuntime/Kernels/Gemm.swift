import COpenBLAS
import DicoIR
import Dispatch

/// Row-major matrix operands of one GEMM, C[M,N] = A[M,K] * op(B) (+ C), repeated over a
/// batch with fixed strides.
struct GemmProblem {
    var m: Int, n: Int, k: Int
    var a: UnsafePointer<Float>, lda: Int, strideA: Int
    /// B is [K,N], or [N,K] when `transB` (a PyTorch linear weight).
    var b: UnsafePointer<Float>, ldb: Int, strideB: Int, transB: Bool
    var c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int
    var batch: Int = 1
    /// Added to every product: one value per row of C (a conv's output channel) or, when
    /// `biasPerColumn`, per column (a linear's output feature). Each tile is filled with it
    /// just before its sgemm accumulates onto it: the same sums as filling all of C first,
    /// but in cache and on the worker threads.
    var bias: UnsafePointer<Float>? = nil
    var biasPerColumn = false
    /// Add the product onto C as it is (the ONNX Gemm's C input, already in place); not with `bias`.
    var accumulate = false
}

/// Where a finished GEMM tile sits in C: batch index, first row, first column.
struct TilePosition {
    let batch: Int, row: Int, column: Int
}

/// Runs on each finished tile while it is in cache: (tile, rows, columns, row stride, position).
typealias TileEpilogue = (UnsafeMutablePointer<Float>, Int, Int, Int, TilePosition) -> Void

/// Tile sizes of the fixed task grid. The grid depends only on the problem, never on the
/// thread count: OpenBLAS's own threading splits work by thread count and so changes
/// results in the last bits, while here each tile is one single-threaded sgemm whose
/// arithmetic is the same however many workers share the tiles.
///
/// Wide tiles: each sgemm call packs its rows of A (a conv's weights) again, so narrow tiles
/// repack the weights once per column tile. Single-threaded sgemm, best of 15 (scripts/bench_gemm_tiles.c):
/// 832x1024x832 runs at 75 GFLOP/s in 416x256 tiles, 79 in 416x512, 81 in 416x1024.
let gemmMaxRowTile = 512
let gemmMaxColTile = 1024
/// Tiles are halved (the wider side first, not below 64) until a problem has this many, so
/// that a batch-1 conv still keeps a few workers busy.
let gemmMinTiles = 4

/// The row and column tile sizes of `p`'s grid (a function of the problem only).
func gemmTiles(_ p: GemmProblem) -> (rows: Int, cols: Int) {
    var maxRow = gemmMaxRowTile, maxCol = gemmMaxColTile
    while true {
        let r = tileSize(p.m, max: maxRow), c = tileSize(p.n, max: maxCol)
        let tiles = p.batch * ((p.m + r - 1) / r) * ((p.n + c - 1) / c)
        if tiles >= gemmMinTiles || (r <= 64 && c <= 64) { return (r, c) }
        if c >= r && c > 64 { maxCol = c / 2 } else { maxRow = r / 2 }
    }
}

/// Splits `extent` into ceil(extent / maxTile) near-equal tiles (rounded up to a multiple
/// of 16, the kernels' register-block width), so workers get balanced shares.
func tileSize(_ extent: Int, max maxTile: Int) -> Int {
    let count = max(1, (extent + maxTile - 1) / maxTile)
    let even = (extent + count - 1) / count
    return max(1, min(extent, (even + 15) / 16 * 16))
}

/// Runs `p` as a grid of single-threaded OpenBLAS sgemm calls, `threads` workers at a time.
/// `epilogue`, if given, runs on each finished tile while it is in cache.
func gemm(_ p: GemmProblem, threads: Int, epilogue: TileEpilogue? = nil) {
    let (gemmRowTile, gemmColTile) = gemmTiles(p)
    let mt = (p.m + gemmRowTile - 1) / gemmRowTile, nt = (p.n + gemmColTile - 1) / gemmColTile
    let tiles = p.batch * mt * nt
    guard tiles > 0, p.k >= 0 else { return }
    let workers = max(1, min(threads, tiles))
    func tile(_ t: Int) {
        let bi = t / (mt * nt), i0 = (t / nt % mt) * gemmRowTile, j0 = (t % nt) * gemmColTile
        let mm = min(gemmRowTile, p.m - i0), nn = min(gemmColTile, p.n - j0)
        let a = p.a + bi * p.strideA + i0 * p.lda
        let b = p.b + bi * p.strideB + (p.transB ? j0 * p.ldb : j0)
        let c = p.c + bi * p.strideC + i0 * p.ldc + j0
        sgemmTile(m: mm, n: nn, k: p.k, a: a, lda: p.lda, b: b, ldb: p.ldb, transB: p.transB, c: c, ldc: p.ldc,
                  bias: p.bias.map { p.biasPerColumn ? $0 + j0 : $0 + i0 }, biasPerColumn: p.biasPerColumn, accumulate: p.accumulate)
        epilogue?(c, mm, nn, p.ldc, TilePosition(batch: bi, row: i0, column: j0))
    }
    if workers == 1 {
        for t in 0..<tiles { tile(t) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        for t in stride(from: w, to: tiles, by: workers) { tile(t) }
    }
}

/// One tile of a GEMM as one single-threaded sgemm, C[m,n] = A B (+ C with `accumulate`):
/// the bias is written into C first (`bias` points at the tile's first row's value, or
/// with `biasPerColumn` its first column's), and sgemm accumulates the product onto it, so
/// every caller of the same tile gets the same bits.
@inline(__always)
func sgemmTile(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, transB: Bool,
               c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, biasPerColumn: Bool = false, accumulate: Bool = false) {
    if let bias {
        for r in 0..<m {
            if biasPerColumn { (c + r * ldc).update(from: bias, count: n) } else { (c + r * ldc).update(repeating: bias[r], count: n) }
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), bias != nil || accumulate ? 1 : 0, c, Int32(ldc))
}

/// Copies the batch's [N, C, pixels] planes side by side into `xs` = [C, N * pixels], the
/// layout in which small images run as one GEMM over the batch.
func gatherBatchSideBySide(_ x: UnsafePointer<Float>, into xs: UnsafeMutablePointer<Float>, batch: Int, channels: Int, pixels: Int, threads: Int) {
    let cols = batch * pixels
    parallelRanges(channels, threads: threads) { r in
        for ci in r { for n in 0..<batch { (xs + ci * cols + n * pixels).update(from: x + (n * channels + ci) * pixels, count: pixels) } }
    }
}

/// OpenBLAS must not add threads of its own (see `gemm`); set once per executor.
func useSingleThreadedBLAS() { openblas_set_num_threads(1) }

/// What a convolution (or linear) applies to its output while each tile is in cache.
enum ConvEpilogue {
    case none
    case activation(Activation)
    /// out = inp + gate[n, c] * out, the gated residual: inp has the output's shape
    /// [N, Cout, pixels], gate is [N, Cout]. Same arithmetic as `gatedAddKernel`.
    case gatedAdd(inp: UnsafePointer<Float>, gate: UnsafePointer<Float>)

    /// Applies the epilogue to `count` contiguous outputs of image `n`, channel `c`, starting
    /// at pixel `pixel` of a [N, channels, pixels] output.
    @inline(__always)
    func apply(_ y: UnsafeMutablePointer<Float>, count: Int, image n: Int, channel c: Int, pixel: Int, channels: Int, pixels: Int) {
        switch self {
        case .none: return
        case let .activation(act): applyActivation(act, y, y, count)
        case let .gatedAdd(inp, gate):
            let nc = n * channels + c
            let g = gate[nc], a = inp + nc * pixels + pixel
            for i in 0..<count { y[i] = a[i] + g * y[i] }
        }
    }

    /// The GEMM tile epilogue for an output laid out [N, channels, pixels] with C rows as
    /// channels and columns as pixels (a conv; `channel0` offsets a group's rows), or nil.
    func convTiles(channels: Int, pixels: Int, image: Int? = nil, channel0: Int = 0) -> TileEpilogue? {
        if case .none = self { return nil }
        return { c, rows, cols, ld, at in
            for r in 0..<rows {
                apply(c + r * ld, count: cols, image: image ?? at.batch, channel: channel0 + at.row + r, pixel: at.column, channels: channels, pixels: pixels)
            }
        }
    }

    /// The GEMM tile epilogue for a linear's [rows, features] output read as [N, features, 1].
    func linearTiles(features: Int) -> TileEpilogue? {
        if case .none = self { return nil }
        return { c, rows, cols, ld, at in
            for r in 0..<rows {
                for j in 0..<cols { apply(c + r * ld + j, count: 1, image: at.row + r, channel: at.column + j, pixel: 0, channels: features, pixels: 1) }
            }
        }
    }
}

extension ConvEpilogue {
    /// The activation epilogue, or `.none`.
    init(_ activation: Activation?) { self = activation.map { .activation($0) } ?? .none }
}

/// Linear layer y[N,out] = x[N,in] W^T + b, W in PyTorch layout [out,in].
func linearKernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                  rows: Int, inFeatures: Int, outFeatures: Int, threads: Int, epilogue: ConvEpilogue = .none) {
    let tiles: TileEpilogue?
    if case let .activation(act) = epilogue {
        // Whole tile rows at a time, so the activation loop vectorizes.
        tiles = { c, rows, cols, ld, _ in for r in 0..<rows { applyActivation(act, c + r * ld, c + r * ld, cols) } }
    } else {
        tiles = epilogue.linearTiles(features: outFeatures)
    }
    gemm(GemmProblem(m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, strideA: 0,
                     b: w, ldb: inFeatures, strideB: 0, transB: true, c: y, ldc: outFeatures, strideC: 0,
                     bias: bias, biasPerColumn: true), threads: threads, epilogue: tiles)
}

/// Images with fewer pixels than this go through one GEMM for the whole batch: a
/// per-image GEMM of DiCo-XL's 8x8 level is only 64 columns wide, and sgemm repacks the
/// weights for every call. Single-threaded, best of 15 (scripts/bench_gemm_tiles.c): 1664x1664 weights on
/// two 64-pixel images take 0.86x the time as one 128-column GEMM, copies included, 3328x1664
/// 0.80x; at 256 pixels the two are within 2%, so the copies are not worth making there.
let conv1x1BatchedBelowPixels = 256

/// The scratch floats `conv1x1Kernel` needs (0 when it runs image by image).
func conv1x1ScratchCount(batch: Int, cin: Int, cout: Int, pixels: Int) -> Int {
    batch > 1 && pixels > 1 && pixels < conv1x1BatchedBelowPixels ? (cin + cout) * batch * pixels : 0
}

/// 1x1 convolution: Y_n[Cout,HW] = W[Cout,Cin] X_n[Cin,HW] + b, image by image, or for
/// small images as one GEMM over the batch's pixels side by side (`scratch` holds
/// `conv1x1ScratchCount` floats): the inputs are gathered into [Cin, N*HW], and the
/// [Cout, N*HW] product is scattered back to NCHW with the epilogue applied on the way.
func conv1x1Kernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                   batch: Int, cin: Int, cout: Int, pixels: Int, threads: Int, epilogue: ConvEpilogue = .none,
                   scratch: UnsafeMutablePointer<Float>? = nil) {
    if pixels == 1 {
        // A pooled [N,C,1,1] input is a plain linear layer over the batch.
        linearKernel(x: x, w: w, bias: bias, y: y, rows: batch, inFeatures: cin, outFeatures: cout, threads: threads, epilogue: epilogue)
        return
    }
    if let scratch, conv1x1ScratchCount(batch: batch, cin: cin, cout: cout, pixels: pixels) > 0 {
        let cols = batch * pixels
        let xs = scratch, ys = scratch + cin * cols
        gatherBatchSideBySide(x, into: xs, batch: batch, channels: cin, pixels: pixels, threads: threads)
        gemm(GemmProblem(m: cout, n: cols, k: cin, a: w, lda: cin, strideA: 0, b: xs, ldb: cols, strideB: 0, transB: false,
                         c: ys, ldc: cols, strideC: 0, bias: bias), threads: threads)
        parallelRanges(batch * cout, threads: threads) { r in
            for nc in r {
                let n = nc / cout, c = nc % cout, dst = y + nc * pixels
                dst.update(from: ys + c * cols + n * pixels, count: pixels)
                epilogue.apply(dst, count: pixels, image: n, channel: c, pixel: 0, channels: cout, pixels: pixels)
            }
        }
        return
    }
    gemm(GemmProblem(m: cout, n: pixels, k: cin, a: w, lda: cin, strideA: 0,
                     b: x, ldb: pixels, strideB: cin * pixels, transB: false, c: y, ldc: pixels, strideC: cout * pixels,
                     batch: batch, bias: bias), threads: threads, epilogue: epilogue.convTiles(channels: cout, pixels: pixels))
}

/// C[m,n] = A[m,k] B[k,n] for row-major float32 matrices with leading dimensions, on
/// `threads` workers through the same tiled sgemm as the executor (for passes that compose
/// weight matrices at conversion time).
public func matrixProduct(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                          c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
    useSingleThreadedBLAS()
    gemm(GemmProblem(m: m, n: n, k: k, a: a, lda: lda, strideA: 0, b: b, ldb: ldb, strideB: 0, transB: false,
                     c: c, ldc: ldc, strideC: 0), threads: threads)
}
