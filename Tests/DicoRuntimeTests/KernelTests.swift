import DicoTestSupport
import Foundation
import XCTest
import DicoCore
import DicoIR
import DicoModel
import DicoRuntime

/// Each kernel runs through a one-node graph and is compared with a direct Double-precision
/// reference written from the op's definition (not from the kernel).
final class KernelTests: XCTestCase {
    var rng = SplitMix64(seed: 42)

    func random(_ n: Int, scale: Float = 1, offset: Float = 0) -> [Float] {
        (0..<n).map { _ in offset + scale * (Float(rng.next() >> 40) / 16_777_216 * 2 - 1) }
    }

    /// Runs `op` on float inputs; those listed in `constants` become graph constants.
    func run(_ op: Op, _ inputs: [(shape: [Int], values: [Float])], constants: Set<Int> = [], threads: Int = 2) throws -> HostTensor {
        var g = Graph()
        var feed: [String: HostTensor] = [:]
        var ids: [ValueID] = []
        for (i, inp) in inputs.enumerated() {
            if constants.contains(i) {
                ids.append(g.addConstant("c\(i)", TensorData(shape: inp.shape, floats: inp.values)))
            } else {
                ids.append(g.addInput("in\(i)", TensorType(.f32, constant: inp.shape)))
                feed["in\(i)"] = HostTensor(shape: inp.shape, floats: inp.values)
            }
        }
        g.outputs = [try g.add(op, ids, name: "node")]
        return try Executor(graph: g, threads: threads).run(feed)[0]
    }

    func assertClose(_ got: [Float], _ want: [Double], _ tol: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, what, file: file, line: line)
        XCTAssertLessThanOrEqual(relativeL2(got, want), tol, what, file: file, line: line)
    }

    /// Direct convolution from the definition, in Double.
    func referenceConv(x: [Float], xs: [Int], w: [Float], ws: [Int], b: [Float]?, stride: Int, pad: Int, groups: Int) -> ([Double], [Int]) {
        let (n, cin, h, wd) = (xs[0], xs[1], xs[2], xs[3]), (cout, cinG, kh, kw) = (ws[0], ws[1], ws[2], ws[3])
        let oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1
        let coutG = cout / groups
        var out = [Double](repeating: 0, count: n * cout * oh * ow)
        for b0 in 0..<n { for co in 0..<cout { for y in 0..<oh { for xx in 0..<ow {
            var acc = Double(b?[co] ?? 0)
            let g = co / coutG
            for ci in 0..<cinG { for ky in 0..<kh { for kx in 0..<kw {
                let iy = y * stride + ky - pad, ix = xx * stride + kx - pad
                guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                acc += Double(x[((b0 * cin + g * cinG + ci) * h + iy) * wd + ix]) * Double(w[((co * cinG + ci) * kh + ky) * kw + kx])
            } } }
            out[((b0 * cout + co) * oh + y) * ow + xx] = acc
        } } } }
        return (out, [n, cout, oh, ow])
    }

    /// Float rounding of sums of at most a few hundred unit-order products: a relative L2
    /// of 1e-6 is about 10x the expected float32 error and far below any indexing mistake.
    let sumTolerance = 1e-6

    func testConvolutionsMatchDirectReference() throws {
        // (x shape, w shape, stride, padding, groups, bias): covers the 1x1 GEMM path (small
        // images batched into one GEMM, one image, images of 256 pixels or more one by one,
        // and the pooled pixels == 1 case), the depthwise 3x3 path (including
        // widths 1 and 2 at the edges) and the im2col path (stride 2, no padding, groups).
        let cases: [([Int], [Int], Int, Int, Int, Bool)] = [
            ([2, 6, 5, 7], [5, 6, 1, 1], 1, 0, 1, true),
            ([1, 6, 5, 7], [5, 6, 1, 1], 1, 0, 1, true),
            ([2, 3, 16, 17], [4, 3, 1, 1], 1, 0, 1, false),
            ([3, 6, 1, 1], [4, 6, 1, 1], 1, 0, 1, true),
            ([2, 6, 5, 7], [6, 1, 3, 3], 1, 1, 6, true),
            ([1, 3, 4, 1], [3, 1, 3, 3], 1, 1, 3, true),
            ([1, 3, 2, 2], [3, 1, 3, 3], 1, 1, 3, false),
            ([2, 4, 6, 5], [7, 4, 3, 3], 1, 1, 1, true),
            ([2, 4, 6, 5], [7, 4, 3, 3], 1, 1, 1, false),
            ([1, 4, 7, 6], [3, 4, 3, 3], 2, 1, 1, true),
            ([1, 4, 7, 6], [6, 2, 3, 3], 1, 0, 2, true),
        ]
        for (xs, ws, s, p, g, hasBias) in cases {
            let x = random(xs.reduce(1, *)), w = random(ws.reduce(1, *)), b = hasBias ? random(ws[0]) : nil
            var ins: [(shape: [Int], values: [Float])] = [(xs, x), (ws, w)]
            if let b { ins.append(([ws[0]], b)) }
            let got = try run(.conv2d(stride: s, padding: p, groups: g), ins, constants: [1, 2])
            let (want, shape) = referenceConv(x: x, xs: xs, w: w, ws: ws, b: b, stride: s, pad: p, groups: g)
            XCTAssertEqual(got.shape, shape)
            assertClose(got.floats!, want, sumTolerance, "conv x\(xs) w\(ws) s\(s) p\(p) g\(g)")
        }
    }

    /// The fused epilogue gives exactly what the conv and then the activation give, on each
    /// kernel path (1x1 GEMM, pooled 1x1, depthwise, im2col).
    func testConvActivationEqualsConvThenActivation() throws {
        let cases: [([Int], [Int], Int, Int, Int)] = [
            ([2, 6, 5, 7], [5, 6, 1, 1], 1, 0, 1), ([3, 6, 1, 1], [4, 6, 1, 1], 1, 0, 1),
            ([2, 6, 5, 7], [6, 1, 3, 3], 1, 1, 6), ([1, 4, 7, 6], [3, 4, 3, 3], 2, 1, 1),
        ]
        for (xs, ws, s, p, g) in cases {
            let x = random(xs.reduce(1, *), scale: 3), w = random(ws.reduce(1, *)), b = random(ws[0])
            let ins: [(shape: [Int], values: [Float])] = [(xs, x), (ws, w), ([ws[0]], b)]
            let plain = try run(.conv2d(stride: s, padding: p, groups: g), ins, constants: [1, 2])
            for act in Activation.allCases {
                let fused = try run(.conv2dActivation(stride: s, padding: p, groups: g, activation: act), ins, constants: [1, 2])
                let separate: Op = act == .gelu ? .gelu : act == .silu ? .silu : .sigmoid
                let want = try run(separate, [(plain.shape, plain.floats!)])
                XCTAssertEqual(fused.floats!, want.floats!, "\(act) x\(xs) w\(ws)")
            }
        }
    }

    /// The gated-residual epilogue gives exactly what the conv and then `gated_add` give, on
    /// each kernel path (1x1 GEMM, pooled 1x1, depthwise, im2col with stride and groups) and
    /// for 1 and 3 threads (tiles split differently), and matches the Double reference
    /// inp + gate * conv(x) within `sumTolerance`.
    func testConvGatedAddEqualsConvThenGatedAdd() throws {
        let cases: [([Int], [Int], Int, Int, Int)] = [
            ([2, 6, 5, 7], [5, 6, 1, 1], 1, 0, 1), ([2, 3, 16, 17], [4, 3, 1, 1], 1, 0, 1), ([3, 6, 1, 1], [4, 6, 1, 1], 1, 0, 1),
            ([2, 6, 5, 7], [6, 1, 3, 3], 1, 1, 6), ([1, 4, 7, 6], [3, 4, 3, 3], 2, 1, 1), ([2, 4, 7, 6], [6, 2, 3, 3], 1, 0, 2),
        ]
        for (xs, ws, s, p, g) in cases {
            let x = random(xs.reduce(1, *)), w = random(ws.reduce(1, *)), b = random(ws[0])
            let convIns: [(shape: [Int], values: [Float])] = [(xs, x), (ws, w), ([ws[0]], b)]
            let plain = try run(.conv2d(stride: s, padding: p, groups: g), convIns, constants: [1, 2])
            let os = plain.shape, inp = random(os.reduce(1, *)), gate = random(os[0] * os[1])
            let want = try run(.gatedAdd, [(os, inp), ([os[0], os[1]], gate), (os, plain.floats!)])
            let (ref, _) = referenceConv(x: x, xs: xs, w: w, ws: ws, b: b, stride: s, pad: p, groups: g)
            let pixels = os[2] * os[3]
            let refGated = ref.indices.map { Double(inp[$0]) + Double(gate[$0 / pixels]) * ref[$0] }
            for threads in [1, 3] {
                let fused = try run(.conv2dGatedAdd(stride: s, padding: p, groups: g), convIns + [(os, inp), ([os[0], os[1]], gate)],
                                    constants: [1, 2], threads: threads)
                XCTAssertEqual(fused.floats!, want.floats!, "x\(xs) w\(ws) threads \(threads)")
                assertClose(fused.floats!, refGated, sumTolerance, "conv gated add x\(xs) w\(ws)")
            }
        }
    }

    /// Channel attention against the Double reference x * sigmoid(W mean(x) + b), and bit for
    /// bit what pool, 1x1 conv, sigmoid and mul give as separate nodes, with and without bias.
    func testChannelAttentionMatchesReferenceAndUnfusedOps() throws {
        let xs = [2, 5, 3, 4], pixels = 12
        for hasBias in [true, false] {
            let x = random(xs.reduce(1, *), scale: 2), w = random(25), b = random(5)
            var ins: [(shape: [Int], values: [Float])] = [(xs, x), ([5, 5, 1, 1], w)]
            if hasBias { ins.append(([5], b)) }
            let got = try run(.channelAttention, ins, constants: [1, 2])
            var want = [Double]()
            for n in 0..<2 {
                let mean = (0..<5).map { c in (0..<pixels).reduce(0.0) { $0 + Double(x[(n * 5 + c) * pixels + $1]) } / Double(pixels) }
                for c in 0..<5 {
                    let z = (0..<5).reduce(hasBias ? Double(b[c]) : 0) { $0 + Double(w[c * 5 + $1]) * mean[$1] }
                    for i in 0..<pixels { want.append(Double(x[(n * 5 + c) * pixels + i]) / (1 + exp(-z))) }
                }
            }
            assertClose(got.floats!, want, sumTolerance, "channel attention, bias \(hasBias)")
            let pooled = try run(.globalAvgPool, [(xs, x)])
            let conv = try run(.conv2d(stride: 1, padding: 0, groups: 1), [(pooled.shape, pooled.floats!)] + ins.dropFirst(), constants: [1, 2])
            let scale = try run(.sigmoid, [(conv.shape, conv.floats!)])
            let unfused = try run(.mul, [(xs, x), (scale.shape, scale.floats!)])
            XCTAssertEqual(got.floats!, unfused.floats!, "bias \(hasBias)")
        }
    }

    /// A node that reads one value twice must not hand its buffer back to the pool twice:
    /// two later nodes would then share one buffer and overwrite each other.
    func testNodeReadingAValueTwice() throws {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [4]))
        let a = try g.add(.silu, [x], name: "a")
        let sq = try g.add(.mul, [a, a], name: "square")
        let p = try g.add(.gelu, [sq], name: "p")
        let q = try g.add(.sigmoid, [sq], name: "q")
        g.outputs = [p, q, try g.add(.add, [p, q], name: "sum")]
        let xs: [Float] = [-1, 0.5, 2, 3]
        let out = try Executor(graph: g, threads: 1).run(["x": HostTensor(shape: [4], floats: xs)])
        let sq0 = xs.map { Double(Activation.silu.applyReference($0)) }.map { $0 * $0 }
        for i in 0..<4 {
            XCTAssertEqual(Double(out[2].floats![i]), Double(out[0].floats![i]) + Double(out[1].floats![i]), accuracy: 1e-6)
            XCTAssertEqual(Double(out[0].floats![i]), 0.5 * sq0[i] * (1 + erf(sq0[i] / 2.0.squareRoot())), accuracy: 1e-5)
            XCTAssertEqual(Double(out[1].floats![i]), 1 / (1 + exp(-sq0[i])), accuracy: 1e-6)
        }
    }

    /// Integer values may only be embedding indices from a graph input: anything else is a
    /// clear error at load, not a crash at run time.
    func testIntegerValuesOutsideEmbeddingIndicesAreRefused() throws {
        var g = Graph()
        let y = g.addInput("y", TensorType(.i64, constant: [2]))
        g.outputs = [y]
        XCTAssertThrowsError(try Executor(graph: g)) { e in
            XCTAssertTrue("\(e)".contains("float32 outputs only"), "\(e)")
        }
    }

    func testLinearMatchesReference() throws {
        let x = random(3 * 10), w = random(4 * 10), b = random(4)
        for withBias in [true, false] {
            let got = try run(.linear, withBias ? [([3, 10], x), ([4, 10], w), ([4], b)] : [([3, 10], x), ([4, 10], w)], constants: [1, 2])
            var want = [Double](repeating: 0, count: 12)
            for r in 0..<3 { for o in 0..<4 {
                var acc: Double = withBias ? Double(b[o]) : 0
                for k in 0..<10 { acc += Double(x[r * 10 + k]) * Double(w[o * 10 + k]) }
                want[r * 4 + o] = acc
            } }
            assertClose(got.floats!, want, sumTolerance, "linear bias=\(withBias)")
        }
    }

    /// A large common offset (100) is the case where a one-pass E[x^2] - E[x]^2 variance
    /// loses digits; the kernel must still agree to float rounding.
    func testChannelLayerNormMatchesReference() throws {
        let shape = [2, 37, 3, 50]   // one tile per image; several tiles: testChannelLayerNormStatisticsAtTheWidestLevel
        let x = random(shape.reduce(1, *), scale: 2, offset: 100)
        let got = try run(.channelLayerNorm(eps: 1e-6), [(shape, x)])
        var want = [Double](repeating: 0, count: x.count)
        let (c, p) = (shape[1], shape[2] * shape[3])
        for n in 0..<shape[0] { for i in 0..<p {
            let vals = (0..<c).map { Double(x[(n * c + $0) * p + i]) }
            let mu = vals.reduce(0, +) / Double(c)
            let v = vals.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(c)
            for k in 0..<c { want[(n * c + k) * p + i] = (vals[k] - mu) / (v + 1e-6).squareRoot() }
        } }
        // Inputs near 100 carry float32 rounding of 100 * 6e-8 = 6e-6 relative to a spread
        // of 2, so 1e-5 is the input's own precision, not slack in the kernel.
        assertClose(got.floats!, want, 1e-5, "channel layer norm")
    }

    /// The one-pass statistics at DiCo's widest level (3328 channels) in the case that costs
    /// them the most digits: a common offset of 100000 and, at even pixels, a first channel (the
    /// kernel's shift) 500 above the rest, as far from the mean as a sample can be. Also the
    /// channel remainders of the four-channel loop (C = 1, 2, 6), a 1000-pixel image (two
    /// tiles) and a batch-1 64-pixel image (its tile split for the workers), each bit for bit
    /// the same with 1, 2 and 3 threads.
    func testChannelLayerNormStatisticsAtTheWidestLevel() throws {
        for shape in [[1, 3328, 1, 19], [2, 1, 2, 3], [2, 2, 3, 3], [1, 6, 40, 25], [1, 5, 8, 8]] {
            let (c, p) = (shape[1], shape[2] * shape[3])
            var x = random(shape.reduce(1, *), scale: 2, offset: shape[1] > 1000 ? 100_000 : 0)
            if c > 1000 { for n in 0..<shape[0] { for i in stride(from: 0, to: p, by: 2) { x[n * c * p + i] += 500 } } }
            var want = [Double](repeating: 0, count: x.count)
            for n in 0..<shape[0] { for i in 0..<p {
                let vals = (0..<c).map { Double(x[(n * c + $0) * p + i]) }
                let mu = vals.reduce(0, +) / Double(c)
                let v = vals.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(c)
                for k in 0..<c { want[(n * c + k) * p + i] = (vals[k] - mu) / (v + 1e-6).squareRoot() }
            } }
            let got = try run(.channelLayerNorm(eps: 1e-6), [(shape, x)], threads: 1).floats!
            // Rounding the exact value to float once errs by at most 2^-24 of it; the Double
            // statistics add under 4e-9 relative (see the kernel), so one float ulp (2^-23) of
            // each value, plus 1e-9 for values that are themselves near zero, bounds every
            // element. At this offset a float variance (one pass or two) misses the bound by 1e6x
            // or more, a Double one-pass without the shift by 300x (numpy, sequential sums).
            let ratios = x.indices.map { abs(Double(got[$0]) - want[$0]) / (0x1p-23 * abs(want[$0]) + 1e-9) }
            let worst = ratios.indices.max { ratios[$0] < ratios[$1] }!
            XCTAssertLessThanOrEqual(ratios[worst], 1, "\(shape): element \(worst) is \(got[worst]), want \(want[worst])")
            for threads in [2, 3] {
                XCTAssertEqual(try run(.channelLayerNorm(eps: 1e-6), [(shape, x)], threads: threads).floats!, got, "\(shape) threads \(threads)")
            }
        }
    }

    func testModulateGatedAddAndPoolMatchReference() throws {
        let xs = [2, 3, 4, 5], n = 120
        let x = random(n), y = random(n), a = random(6), b = random(6)
        let mod = try run(.modulate, [(xs, x), ([2, 3], a), ([2, 3], b)])
        let gated = try run(.gatedAdd, [(xs, x), ([2, 3], a), (xs, y)])
        let pool = try run(.globalAvgPool, [(xs, x)])
        var wantMod = [Double](), wantGate = [Double](), wantPool = [Double]()
        for i in 0..<n {
            let nc = i / 20
            wantMod.append(Double(x[i]) * (1 + Double(b[nc])) + Double(a[nc]))
            wantGate.append(Double(x[i]) + Double(a[nc]) * Double(y[i]))
        }
        for nc in 0..<6 { wantPool.append((0..<20).reduce(0.0) { $0 + Double(x[nc * 20 + $1]) } / 20) }
        assertClose(mod.floats!, wantMod, sumTolerance, "modulate")
        assertClose(gated.floats!, wantGate, sumTolerance, "gated add")
        XCTAssertEqual(pool.shape, [2, 3, 1, 1])
        assertClose(pool.floats!, wantPool, sumTolerance, "global average pool")
    }

    /// libm's erff, expf agree with the Double definitions to a few ulp.
    func testActivationsMatchDefinitions() throws {
        let x = random(5000, scale: 8)
        let gelu = try run(.gelu, [([5000], x)]), silu = try run(.silu, [([5000], x)]), sig = try run(.sigmoid, [([5000], x)])
        assertClose(gelu.floats!, x.map { 0.5 * Double($0) * (1 + erf(Double($0) / 2.0.squareRoot())) }, sumTolerance, "gelu")
        assertClose(silu.floats!, x.map { Double($0) / (1 + exp(-Double($0))) }, sumTolerance, "silu")
        assertClose(sig.floats!, x.map { 1 / (1 + exp(-Double($0))) }, sumTolerance, "sigmoid")
    }

    func testBroadcastingMulAndAdd() throws {
        let a = random(2 * 3 * 4 * 5), s = random(2 * 3), r = random(5)
        let m = try run(.mul, [([2, 3, 4, 5], a), ([2, 3, 1, 1], s)])
        let ad = try run(.add, [([2, 3, 4, 5], a), ([1, 1, 1, 5], r)])
        let same = try run(.add, [([2, 3, 4, 5], a), ([2, 3, 4, 5], a)])
        assertClose(m.floats!, a.indices.map { Double(a[$0]) * Double(s[$0 / 20]) }, sumTolerance, "channel scale")
        assertClose(ad.floats!, a.indices.map { Double(a[$0]) + Double(r[$0 % 5]) }, sumTolerance, "row broadcast")
        XCTAssertEqual(same.floats!, a.map { $0 + $0 })
    }

    /// Layout ops move values without arithmetic, so they must be exact.
    func testPixelShuffleFollowsTheDefinitionAndInverts() throws {
        let (n, c, h, w, r) = (2, 3, 4, 6, 2)
        let x = random(n * c * r * r * h * w)
        let shuffled = try run(.pixelShuffle(factor: r), [([n, c * r * r, h, w], x)])
        XCTAssertEqual(shuffled.shape, [n, c, h * r, w * r])
        let out = shuffled.floats!
        for b in 0..<n { for ch in 0..<c { for hh in 0..<h { for ww in 0..<w { for i in 0..<r { for j in 0..<r {
            // PixelShuffle: out[n, c, h*r+i, w*r+j] = in[n, c*r*r + i*r + j, h, w]
            let o = ((b * c + ch) * h * r + hh * r + i) * w * r + ww * r + j
            let s = ((b * c * r * r + ch * r * r + i * r + j) * h + hh) * w + ww
            XCTAssertEqual(out[o], x[s])
        } } } } } }
        let back = try run(.pixelUnshuffle(factor: r), [(shuffled.shape, out)])
        XCTAssertEqual(back.shape, [n, c * r * r, h, w])
        XCTAssertEqual(back.floats!, x)
    }

    func testSliceAndConcatAreExact() throws {
        let a = random(2 * 12), b = random(2 * 3 * 2)
        let s = try run(.slice(axis: 1, start: 4, length: 4), [([2, 12], a)])
        XCTAssertEqual(s.floats!, Array(a[4..<8]) + Array(a[16..<20]))
        let c = try run(.concat(axis: 1), [([2, 2, 2], Array(a[0..<8])), ([2, 3, 2], b)])
        XCTAssertEqual(c.shape, [2, 5, 2])
        XCTAssertEqual(c.floats!, Array(a[0..<4]) + Array(b[0..<6]) + Array(a[4..<8]) + Array(b[6..<12]))
    }

    func testEmbeddingAndTimestepFeatures() throws {
        var g = Graph()
        let table = g.addConstant("table", TensorData(shape: [3, 2], floats: [1, 2, 3, 4, 5, 6]))
        let idx = g.addInput("y", TensorType(.i64, constant: [2]))
        let t = g.addInput("t", TensorType(.f32, constant: [2]))
        let e = try g.add(.embedding, [table, idx], name: "e")
        let f = try g.add(.timestepEmbedding(dim: 8, maxPeriod: 10_000), [t], name: "f")
        g.outputs = [e, f]
        let out = try Executor(graph: g, threads: 1).run(["y": HostTensor(shape: [2], int64s: [2, 0]), "t": HostTensor(shape: [2], floats: [0, 3.5])])
        XCTAssertEqual(out[0].floats!, [5, 6, 1, 2])
        // t = 0 gives cos = 1, sin = 0 exactly; t = 3.5 follows the definition with half = 4.
        XCTAssertEqual(Array(out[1].floats![0..<8]), [1, 1, 1, 1, 0, 0, 0, 0])
        let args: [Double] = (0..<4).map { (i: Int) -> Double in 3.5 * exp(-log(10_000.0) * Double(i) / 4) }
        let want: [Double] = args.map { cos($0) } + args.map { sin($0) }
        // The float32 frequencies differ from Double ones by an ulp: 1e-6 at this small t.
        assertClose(Array(out[1].floats![8..<16]), want, 1e-6, "timestep features")
    }
}

extension Activation {
    /// The Double definitions, rounded to float.
    func applyReference(_ v: Float) -> Float {
        let d = Double(v)
        switch self {
        case .gelu: return Float(0.5 * d * (1 + erf(d / 2.0.squareRoot())))
        case .silu: return Float(d / (1 + exp(-d)))
        case .sigmoid: return Float(1 / (1 + exp(-d)))
        }
    }
}
