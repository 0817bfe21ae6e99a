import DicoIR

// The executor's kernels for other targets: the ONNX interpreter runs DiCo's convolutions,
// linears, channel LayerNorms and GELUs through these, so an export and its canonical graph
// cost the same and are computed by the same tuned code (one implementation of each).
// Every entry point keeps the executor's guarantee: results do not depend on `threads`.

/// A 2-D convolution's geometry: NCHW input, [cout, cin/groups, kh, kw] weight, one stride
/// and one zero padding for both spatial axes, no dilation (the convolutions DiCo has).
public struct Conv2DGeometry: Sendable, Equatable {
    public var batch: Int, cin: Int, height: Int, width: Int
    public var cout: Int, kh: Int, kw: Int
    public var stride: Int, padding: Int, groups: Int

    public init(batch: Int, cin: Int, height: Int, width: Int, cout: Int, kh: Int, kw: Int, stride: Int, padding: Int, groups: Int) {
        (self.batch, self.cin, self.height, self.width) = (batch, cin, height, width)
        (self.cout, self.kh, self.kw) = (cout, kh, kw)
        (self.stride, self.padding, self.groups) = (stride, padding, groups)
    }

    /// Output height and width.
    public var outHeight: Int { (height + 2 * padding - kh) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kw) / stride + 1 }

    var isPointwise: Bool { kh == 1 && kw == 1 && stride == 1 && padding == 0 && groups == 1 }
    var isDepthwise3x3: Bool { kh == 3 && kw == 3 && stride == 1 && padding == 1 && groups == cin && cout == cin }

    /// Floats of scratch `conv2D` needs: the im2col matrix; for a 1x1 conv on small images the
    /// batch gathered side by side (`conv1x1ScratchCount`); 0 for the depthwise path.
    public var scratchCount: Int {
        if isPointwise { return conv1x1ScratchCount(batch: batch, cin: cin, cout: cout, pixels: height * width) }
        return isDepthwise3x3 ? 0 : (cin / groups) * kh * kw * outHeight * outWidth
    }
}

/// y = conv(x, w) + bias, then `activation`, by the executor's kernel path: 1x1 as a tiled
/// GEMM per image (or over the batch's pixels side by side for small images), depthwise 3x3
/// directly, anything else im2col and a tiled GEMM. `scratch` holds at least `g.scratchCount`
/// floats (nil when that is 0).
public func conv2D(_ g: Conv2DGeometry, x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                   y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>?, threads: Int, activation: Activation? = nil) {
    useSingleThreadedBLAS()
    conv2D(g, x: x, w: w, bias: bias, y: y, scratch: scratch, threads: threads, epilogue: activation.map { .activation($0) } ?? .none)
}

/// `conv2D` with any epilogue (the executor's fused ops); OpenBLAS threading is already off.
func conv2D(_ g: Conv2DGeometry, x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
            y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>?, threads: Int, epilogue: ConvEpilogue) {
    if g.isPointwise {
        conv1x1Kernel(x: x, w: w, bias: bias, y: y, batch: g.batch, cin: g.cin, cout: g.cout, pixels: g.height * g.width,
                      threads: threads, epilogue: epilogue, scratch: scratch)
    } else if g.isDepthwise3x3 {
        depthwise3x3Kernel(x: x, w: w, bias: bias, y: y, batch: g.batch, channels: g.cin, height: g.height, width: g.width,
                           threads: threads, epilogue: epilogue)
    } else {
        im2colConvKernel(x: x, w: w, bias: bias, y: y, batch: g.batch, cin: g.cin, height: g.height, width: g.width, cout: g.cout,
                         kh: g.kh, kw: g.kw, stride: g.stride, padding: g.padding, groups: g.groups,
                         outH: g.outHeight, outW: g.outWidth, scratch: scratch!, threads: threads, epilogue: epilogue)
    }
}

/// C[m,n] = A[m,k] op(B) (+ C when `accumulate`), op(B) = B[k,n], or B[n,k] transposed when
/// `transB`, through the executor's fixed grid of single-threaded sgemm tiles.
public func tiledMatrixProduct(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                               transB: Bool, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int) {
    useSingleThreadedBLAS()
    gemm(GemmProblem(m: m, n: n, k: k, a: a, lda: lda, strideA: 0, b: b, ldb: ldb, strideB: 0, transB: transB,
                     c: c, ldc: ldc, strideC: 0, accumulate: accumulate), threads: threads)
}

/// Layer normalization over the channel axis of [batch, channels, pixels] at every pixel
/// (mean and biased variance in Double, no affine), as the executor's `channel_layer_norm`.
public func channelLayerNorm(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, pixels: Int,
                             eps: Float, threads: Int) {
    channelLayerNormKernel(x: x, y: y, batch: batch, channels: channels, pixels: pixels, eps: eps, threads: threads)
}

/// y[i] = act(x[i]) for `count` elements, as the executor computes `act` (GELU by its
/// vectorized erf approximation, within a few float32 ulps of the exact function).
public func activation(_ act: Activation, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int, threads: Int) {
    activationKernel(act, x: x, y: y, count: count, threads: threads)
}
