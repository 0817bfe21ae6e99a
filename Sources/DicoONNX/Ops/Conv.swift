import Dispatch
import DicoRuntime

// Conv (2-D, float32). A conv with one stride and one symmetric padding for both axes and
// no dilation (every conv DiCo has) runs through the IR executor's kernels (`conv2D`: tiled
// GEMM for 1x1, a direct depthwise 3x3, im2col + tiled GEMM otherwise), so an export costs
// what its canonical graph does. Other geometries: pointwise convs are one sgemm per image
// and group, depthwise convs (one input and one output channel per group) a direct loop
// per plane, everything else im2col followed by sgemm.

let convPreparers: [String: KernelPreparer] = ["Conv": prepareConv]

/// Conv's static attributes, validated once.
struct ConvAttributes {
    enum AutoPad: String { case notSet = "NOTSET", valid = "VALID", sameUpper = "SAME_UPPER", sameLower = "SAME_LOWER" }
    var autoPad: AutoPad
    var group: Int
    var kernelShape: [Int]?
    /// [top, left, bottom, right] when explicit.
    var pads: [Int]?
    var strides: [Int]?
    var dilations: [Int]?
}

/// The largest kernel size, pad, stride or dilation accepted.
let maxConvAttribute = 1 << 24

private func prepareConv(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])
    try spec.requireInputs(2, 3)
    try spec.requireOutputs(1, 1)
    let padName = try spec.string("auto_pad", default: "NOTSET")
    guard let autoPad = ConvAttributes.AutoPad(rawValue: padName) else { throw OpFailure("auto_pad '\(padName)' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER") }
    let a = ConvAttributes(autoPad: autoPad, group: try spec.int("group", default: 1), kernelShape: try spec.ints("kernel_shape"),
                           pads: try spec.ints("pads"), strides: try spec.ints("strides"), dilations: try spec.ints("dilations"))
    guard a.group >= 1 else { throw OpFailure("group \(a.group) must be at least 1") }
    if a.pads != nil, autoPad != .notSet { throw OpFailure("pads cannot be given with auto_pad \(padName)") }
    if let k = a.kernelShape, k.count != 2 || k.contains(where: { $0 < 1 }) { throw OpFailure("kernel_shape \(k): only 2-D convolutions with positive kernel sizes are supported") }
    if let p = a.pads, p.count != 4 || p.contains(where: { $0 < 0 }) { throw OpFailure("pads \(p) must be 4 non-negative values (2-D convolution)") }
    if let s = a.strides, s.count != 2 || s.contains(where: { $0 < 1 }) { throw OpFailure("strides \(s) must be 2 positive values (2-D convolution)") }
    if let d = a.dilations, d.count != 2 || d.contains(where: { $0 < 1 }) { throw OpFailure("dilations \(d) must be 2 positive values (2-D convolution)") }
    // Bounded so that the output-size arithmetic cannot overflow on hostile values.
    for (name, v) in [("kernel_shape", a.kernelShape), ("pads", a.pads), ("strides", a.strides), ("dilations", a.dilations)] {
        if let v, v.contains(where: { $0 > maxConvAttribute }) { throw OpFailure("\(name) \(v) exceeds \(maxConvAttribute)") }
    }
    if let w = spec.constants[1]?.shape ?? spec.fileConstants[1]?.shape, w.count != 4 {
        throw OpFailure("weight has shape \(w); only 2-D convolutions (rank-4 weights) are supported")
    }
    let weight = spec.claimInPlace(1), bias = spec.hasInput(2) ? spec.claimInPlace(2) : nil
    return { inputs in
        let b: FloatInput? = spec.hasInput(2) ? try FloatInput.of(inputs, 2, claimed: bias, "bias B") : nil
        return [try conv2d(try arg(inputs, 0), try FloatInput.of(inputs, 1, claimed: weight, "weight W"), b, a)]
    }
}

/// Checked Int32 for a BLAS dimension.
func blasInt(_ v: Int) throws -> Int32 {
    guard let i = Int32(exactly: v) else { throw OpFailure("dimension \(v) exceeds the BLAS limit") }
    return i
}

func conv2d(_ xv: ONNXValue, _ wv: FloatInput, _ bv: FloatInput?, _ a: ConvAttributes) throws -> ONNXValue {
    let x = try requireFloats(xv, "input X")
    guard xv.shape.count == 4 else { throw OpFailure("input X has shape \(xv.shape); only 2-D convolutions (rank-4 NCHW input) are supported") }
    guard wv.shape.count == 4 else { throw OpFailure("weight W has shape \(wv.shape); expected rank 4") }
    let (n, c, h, wd) = (xv.shape[0], xv.shape[1], xv.shape[2], xv.shape[3])
    let (m, cg, kh, kw) = (wv.shape[0], wv.shape[1], wv.shape[2], wv.shape[3])
    let g = a.group
    guard cg * g == c else { throw OpFailure("input X has \(c) channels but weight W \(wv.shape) with group \(g) expects \(cg * g)") }
    guard m % g == 0 else { throw OpFailure("weight W has \(m) output channels, not divisible by group \(g)") }
    if let k = a.kernelShape, k != [kh, kw] { throw OpFailure("kernel_shape \(k) does not match weight W \(wv.shape)") }
    guard kh >= 1, kw >= 1 else { throw OpFailure("weight W \(wv.shape) has an empty kernel") }
    if let bv, bv.shape != [m] { throw OpFailure("bias B has shape \(bv.shape), expected [\(m)]") }
    let s = a.strides ?? [1, 1], d = a.dilations ?? [1, 1]
    // Padding per spatial axis: (begin, end).
    var pad = [(0, 0), (0, 0)]
    let inSize = [h, wd], kSize = [kh, kw]
    switch a.autoPad {
    case .notSet:
        if let p = a.pads { pad = [(p[0], p[2]), (p[1], p[3])] }
    case .valid:
        break
    case .sameUpper, .sameLower:
        for i in 0..<2 {
            let out = (inSize[i] + s[i] - 1) / s[i]
            let total = max(0, (out - 1) * s[i] + (kSize[i] - 1) * d[i] + 1 - inSize[i])
            let small = total / 2
            pad[i] = a.autoPad == .sameUpper ? (small, total - small) : (total - small, small)
        }
    }
    var outSize = [0, 0]
    for i in 0..<2 {
        let span = (kSize[i] - 1) * d[i] + 1
        let room = inSize[i] + pad[i].0 + pad[i].1 - span
        guard room >= 0 else { throw OpFailure("input X \(xv.shape) is smaller than the dilated kernel \(kSize) (with padding)") }
        outSize[i] = room / s[i] + 1
    }
    let (oh, ow) = (outSize[0], outSize[1])
    let total = try product([n, m, oh, ow])
    // The im2col matrix, checked here so that neither path can overflow it.
    _ = try product([cg, kh, kw, oh, ow])
    let y: [Float] = try x.withUnsafeBufferPointer { xp in
        try wv.withFloats { wp in
            try withOptionalFloats(bv) { bias in
                try makeArray(total) { (yb: UnsafeMutableBufferPointer<Float>) in
                    let yp = yb.baseAddress!
                    if total == 0 { return }
                    if d == [1, 1], s[0] == s[1], [pad[0].0, pad[0].1, pad[1].1].allSatisfy({ $0 == pad[1].0 }) {
                        let geometry = Conv2DGeometry(batch: n, cin: c, height: h, width: wd, cout: m, kh: kh, kw: kw,
                                                      stride: s[0], padding: pad[0].0, groups: g)
                        var scratch = [Float](unsafeUninitializedCapacity: geometry.scratchCount) { _, k in k = geometry.scratchCount }
                        scratch.withUnsafeMutableBufferPointer { sp in
                            conv2D(geometry, x: xp.baseAddress!, w: wp, bias: bias, y: yp, scratch: sp.baseAddress, threads: sgemmThreads)
                        }
                        return
                    }
                    try generalConv2d(x: xp.baseAddress!, w: wp, bias: bias, y: yp, n: n, c: c, h: h, wd: wd, m: m, g: g,
                                      kernel: (kh, kw), stride: (s[0], s[1]), dilation: (d[0], d[1]), padBegin: (pad[0].0, pad[1].0),
                                      out: (oh, ow))
                }
            }
        }
    }
    return ONNXValue(unchecked: [n, m, oh, ow], .f32(y))
}

/// `body` with a pointer to `v`'s elements, or with nil.
func withOptionalFloats<R>(_ v: FloatInput?, _ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
    guard let v else { return try body(nil) }
    return try v.withFloats { try body($0) }
}

/// The interpreter's own conv paths, for geometries the executor's kernels do not take
/// (dilation, unequal strides, asymmetric padding): the bias initializes every output plane
/// and the convolution accumulates onto it.
private func generalConv2d(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y yp: UnsafeMutablePointer<Float>,
                           n: Int, c: Int, h: Int, wd: Int, m: Int, g: Int, kernel: (Int, Int), stride s: (Int, Int),
                           dilation d: (Int, Int), padBegin: (Int, Int), out: (Int, Int)) throws {
    let (kh, kw) = kernel, (oh, ow) = out
    let cg = c / g, mg = m / g
    let planeIn = h * wd, planeOut = oh * ow
    let rows = cg * kh * kw
    let pointwise = kh == 1 && kw == 1 && s == (1, 1) && padBegin == (0, 0) && oh == h && ow == wd
    for img in 0..<n {
        for o in 0..<m { (yp + (img * m + o) * planeOut).initialize(repeating: bias?[o] ?? 0, count: planeOut) }
    }
    if cg == 1 && mg == 1 {
        depthwiseConv(x: x, w: w, y: yp, planes: n * c, channels: c, h: h, w: wd, kh: kh, kw: kw,
                      oh: oh, ow: ow, step: s, dilation: d, padBegin: padBegin)
        return
    }
    let (mi, pi, ri) = (try blasInt(mg), try blasInt(planeOut), try blasInt(rows))
    var scratch = pointwise ? [] : [Float](repeating: 0, count: try product([rows, planeOut]))
    for img in 0..<n {
        for gi in 0..<g {
            let xg = x + (img * c + gi * cg) * planeIn
            let yg = yp + (img * m + gi * mg) * planeOut
            let wg = w + gi * mg * rows
            if pointwise {
                sgemm(m: mi, n: pi, k: ri, a: wg, lda: ri, b: xg, ldb: pi, beta: 1, c: yg, ldc: pi)
                continue
            }
            scratch.withUnsafeMutableBufferPointer { col in
                im2col(x: xg, channels: cg, h: h, w: wd, kh: kh, kw: kw, oh: oh, ow: ow, stride: s,
                       dilation: d, padBegin: padBegin, col: col.baseAddress!)
                sgemm(m: mi, n: pi, k: ri, a: wg, lda: ri, b: col.baseAddress!, ldb: pi, beta: 1, c: yg, ldc: pi)
            }
        }
    }
}

/// The output positions `0..<outCount` whose input coordinate `o * stride - padBegin + offset`
/// lies inside `0..<inCount`.
@inline(__always)
func validOutputRange(outCount: Int, inCount: Int, stride: Int, padBegin: Int, offset: Int) -> Range<Int> {
    // o * stride >= padBegin - offset  and  o * stride <= inCount - 1 + padBegin - offset
    let lowNum = padBegin - offset
    let lo = lowNum <= 0 ? 0 : (lowNum + stride - 1) / stride
    let highNum = inCount - 1 + padBegin - offset
    let hi = highNum < 0 ? -1 : min(outCount - 1, highNum / stride)
    return lo <= hi ? lo..<(hi + 1) : 0..<0
}

/// Rows (ci, ky, kx) of the column matrix: row r, column (oy, ox) holds the input pixel that
/// output (oy, ox) multiplies with weight (ci, ky, kx), or 0 in the padding.
private func im2col(x: UnsafePointer<Float>, channels: Int, h: Int, w: Int, kh: Int, kw: Int, oh: Int, ow: Int,
                    stride: (Int, Int), dilation: (Int, Int), padBegin: (Int, Int), col: UnsafeMutablePointer<Float>) {
    var r = 0
    for ci in 0..<channels {
        let src = x + ci * h * w
        for ky in 0..<kh {
            let ys = validOutputRange(outCount: oh, inCount: h, stride: stride.0, padBegin: padBegin.0, offset: ky * dilation.0)
            for kx in 0..<kw {
                let dst = col + r * oh * ow
                dst.update(repeating: 0, count: oh * ow)
                let xs = validOutputRange(outCount: ow, inCount: w, stride: stride.1, padBegin: padBegin.1, offset: kx * dilation.1)
                for oy in ys {
                    let iy = oy * stride.0 - padBegin.0 + ky * dilation.0
                    let srow = src + iy * w, drow = dst + oy * ow
                    if stride.1 == 1 {
                        let ix0 = xs.lowerBound - padBegin.1 + kx * dilation.1
                        (drow + xs.lowerBound).update(from: srow + ix0, count: xs.count)
                    } else {
                        for ox in xs { drow[ox] = srow[ox * stride.1 - padBegin.1 + kx * dilation.1] }
                    }
                }
                r += 1
            }
        }
    }
}

/// One input channel to one output channel per group, accumulated onto `y` (which holds the
/// bias), parallel over planes.
private func depthwiseConv(x: UnsafePointer<Float>, w: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, planes: Int, channels: Int,
                           h: Int, w wd: Int, kh: Int, kw: Int, oh: Int, ow: Int,
                           step: (Int, Int), dilation: (Int, Int), padBegin: (Int, Int)) {
    let workers = min(planes, 4, sgemmThreads)
    DispatchQueue.concurrentPerform(iterations: workers) { part in
        for p in stride(from: part, to: planes, by: workers) {
            let src = x + p * h * wd, dst = y + p * oh * ow, k = w + (p % channels) * kh * kw
            for ky in 0..<kh {
                let ys = validOutputRange(outCount: oh, inCount: h, stride: step.0, padBegin: padBegin.0, offset: ky * dilation.0)
                for kx in 0..<kw {
                    let xs = validOutputRange(outCount: ow, inCount: wd, stride: step.1, padBegin: padBegin.1, offset: kx * dilation.1)
                    let kv = k[ky * kw + kx]
                    for oy in ys {
                        let iy = oy * step.0 - padBegin.0 + ky * dilation.0
                        let srow = src + iy * wd - padBegin.1 + kx * dilation.1, drow = dst + oy * ow
                        if step.1 == 1 {
                            for ox in xs { drow[ox] += kv * srow[ox] }
                        } else {
                            for ox in xs { drow[ox] += kv * srow[ox * step.1] }
                        }
                    }
                }
            }
        }
    }
}
