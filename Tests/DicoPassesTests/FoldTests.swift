import DicoTestSupport
import XCTest
import DicoCore
import DicoIR
import DicoModel
import DicoPasses
import DicoQuant
import DicoRuntime

/// A pass that only reorders float sums (or rounds a folded weight once) moves a small
/// graph's output by a few float ulps relative; 1e-6 is the issue's per-pass bound.
let reorderedSumTolerance = 1e-6

/// Small built graphs for each fold: it fires where it should and the real executor gives the
/// same outputs, and it leaves alone what it must not touch.
final class FoldTests: XCTestCase {
    var rng = SplitMix64(seed: 11)

    func randoms(_ n: Int, scale: Float = 1) -> [Float] {
        (0..<n).map { _ in (Float(rng.next() >> 40) / 8_388_608 - 1) * scale }
    }

    func constant(_ g: inout Graph, _ name: String, _ shape: [Int], scale: Float = 1) -> ValueID {
        g.addConstant(name, TensorData(shape: shape, floats: randoms(shape.reduce(1, *), scale: scale)))
    }

    func filled(_ g: inout Graph, _ name: String, _ shape: [Int], _ v: Float) -> ValueID {
        g.addConstant(name, TensorData(shape: shape, floats: [Float](repeating: v, count: shape.reduce(1, *))))
    }

    /// Runs every graph output on `inputs` (random values of the graph inputs' shapes).
    func outputs(_ g: Graph, _ inputs: [String: HostTensor]) throws -> [[Float]] {
        try Executor(graph: g, threads: 2).run(inputs).map { $0.floats! }
    }

    func randomInputs(_ g: Graph) -> [String: HostTensor] {
        var r: [String: HostTensor] = [:]
        for id in g.inputs {
            let s = g[id].type.shape.map { $0.constant! }
            r[g[id].name] = HostTensor(shape: s, floats: randoms(s.reduce(1, *)))
        }
        return r
    }

    /// Applies `pass` with the verifier; asserts whether it changed the graph and that every
    /// output agrees with the original within `tolerance` relative L2. Returns the new graph.
    @discardableResult
    func check(_ pass: any GraphPass, _ g: Graph, fires: Bool, tolerance: Double = reorderedSumTolerance,
               inputs given: [String: HostTensor]? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> Graph {
        var h = g
        let changed = try pass.run(&h)
        try h.verify()
        XCTAssertEqual(changed, fires, "\(pass.name) changed the graph", file: file, line: line)
        let inputs = given ?? randomInputs(g)
        let a = try outputs(h, inputs), b = try outputs(g, inputs)
        for (x, y) in zip(a, b) {
            XCTAssertLessThanOrEqual(relativeL2(x, y), tolerance, file: file, line: line)
        }
        return h
    }

    // MARK: - fold-adaln-linears

    func testAdaLNLinearsMergeIntoOneGEMM() throws {
        var g = Graph()
        let c = g.addInput("c", TensorType(.f32, constant: [2, 4]))
        let s = try g.add(.silu, [c], name: "silu")
        let l1 = try g.add(.linear, [s, constant(&g, "a.weight", [12, 4]), constant(&g, "a.bias", [12])], name: "a")
        let l2 = try g.add(.linear, [s, constant(&g, "b.weight", [8, 4])], name: "b")   // no bias
        let l3 = try g.add(.linear, [s, constant(&g, "c.weight", [6, 4]), constant(&g, "c.bias", [6])], name: "c3")
        let a0 = try g.add(.slice(axis: 1, start: 4, length: 4), [l1], name: "a.chunk1")
        let b1 = try g.add(.slice(axis: 1, start: 4, length: 4), [l2], name: "b.chunk1")
        let sum = try g.add(.add, [a0, b1], name: "sum")
        let direct = try g.add(.gelu, [l2], name: "reads_b_whole")       // a reader that is not a slice
        g.outputs = [sum, direct, l3]                                      // a member that is a graph output
        let h = try check(FoldAdaLNLinears(), g, fires: true)
        XCTAssertEqual(h.opCounts["linear"], 1, "one GEMM")
        // The weight concatenation is a node of the original constants, evaluated once at load.
        XCTAssertEqual(h.opCounts["concat"], 2)
        let e = try Executor(graph: h, threads: 1)
        XCTAssertTrue(h.nodes.indices.filter { h.nodes[$0].op == .concat(axis: 0) }.allSatisfy(e.isPrecomputed))
        XCTAssertEqual(Set(h.constantIDs.map { h[$0].name }).isSuperset(of: ["a.weight", "b.weight", "c.weight"]), true)
    }

    /// Linears reading different values, a lone linear, and a linear with a computed weight
    /// stay as they are.
    func testAdaLNLinearsDoNotMergeAcrossInputsOrComputedWeights() throws {
        var g = Graph()
        let c = g.addInput("c", TensorType(.f32, constant: [2, 4]))
        let wIn = g.addInput("w", TensorType(.f32, constant: [3, 4]))
        let s = try g.add(.silu, [c], name: "silu")
        let l1 = try g.add(.linear, [s, constant(&g, "a.weight", [3, 4])], name: "a")
        let l2 = try g.add(.linear, [c, constant(&g, "b.weight", [3, 4])], name: "b")   // reads c, not silu
        let l3 = try g.add(.linear, [s, wIn], name: "computed")                          // weight not constant
        g.outputs = [l1, l2, l3]
        try check(FoldAdaLNLinears(), g, fires: false)
    }

    /// On the fixture after CSE: one GEMM per conditioning vector (c1, c2 with the final
    /// layer, c3) and one for the three timestep MLPs' first linears; the three second
    /// linears read different SiLUs and stay.
    func testAdaLNLinearsOnTheFixture() throws {
        let tiny = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        var g = tiny.graph
        _ = try EliminateCommonSubexpressions().run(&g)
        let h = try check(FoldAdaLNLinears(), g, fires: true, inputs: dicoInputs(tiny.weights.config))
        XCTAssertEqual(h.opCounts["linear"], 3 + 1 + 3)
    }

    // MARK: - fold-reduce-chan

    /// z -> 3x3 conv (8 = 2 x 2^2 channels) -> pixel shuffle -> concat with a skip -> 1x1 conv to `cout`.
    func decoderJoin(cout: Int, extraReader: Bool = false) throws -> Graph {
        var g = Graph()
        let z = g.addInput("z", TensorType(.f32, constant: [2, 3, 4, 4]))
        let skip = g.addInput("skip", TensorType(.f32, constant: [2, 3, 8, 8]))
        let up = try g.add(.conv2d(stride: 1, padding: 1, groups: 1), [z, constant(&g, "up.weight", [8, 3, 3, 3])], name: "up")
        let a = try g.add(.pixelShuffle(factor: 2), [up], name: "up.shuffle")
        let cat = try g.add(.concat(axis: 1), [a, skip], name: "concat")
        let y = try g.add(.conv2d(stride: 1, padding: 0, groups: 1),
                          [cat, constant(&g, "reduce.weight", [cout, 5, 1, 1]), constant(&g, "reduce.bias", [cout])], name: "reduce")
        g.outputs = extraReader ? [y, a] : [y]
        return g
    }

    func testReduceChanFoldsTheUpsampledHalfIntoThe3x3Conv() throws {
        let h = try check(FoldReduceChan(), try decoderJoin(cout: 2), fires: true)
        XCTAssertNil(h.opCounts["concat"], "the concat is never materialized")
        XCTAssertEqual(h.opCounts["conv2d"], 2, "the folded 3x3 and the skip half's 1x1")
        let folded = try XCTUnwrap(h.nodes.first { $0.op == .conv2d(stride: 1, padding: 1, groups: 1) })
        XCTAssertEqual(h[folded.inputs[1]].type.shape, [.c(8), .c(3), .c(3), .c(3)], "Cout * r^2 rows: no wider than before")
        XCTAssertEqual(folded.inputs.count, 3, "the 1x1's bias went to this branch")
        XCTAssertEqual(h.nodes.filter { $0.inputs.count == 3 }.count, 1, "and to no other")
    }

    /// A 1x1 that widens (2 -> 4 channels) would double the 3x3 conv: no fold, and without a
    /// fold the split alone does not fire. Nor does it when the shuffled tensor has another reader.
    func testReduceChanDoesNotFoldAWideningConvOrASharedShuffle() throws {
        try check(FoldReduceChan(), try decoderJoin(cout: 4), fires: false)
        try check(FoldReduceChan(), try decoderJoin(cout: 2, extraReader: true), fires: false)
    }

    /// Rule 1 alone (as `splitWithoutFold` enables it): two 1x1 convs and an add, same output.
    func testReduceChanSplitWithoutFold() throws {
        let h = try check(FoldReduceChan(splitWithoutFold: true), try decoderJoin(cout: 4), fires: true)
        XCTAssertNil(h.opCounts["concat"])
        XCTAssertEqual(h.opCounts["add"], 1)
        XCTAssertEqual(h.opCounts["conv2d"], 3, "the 3x3 and two 1x1 halves")
    }

    /// On the fixture: DiCo's level 2 (2C -> 2C) folds, level 1 (C -> 2C) does not.
    func testReduceChanOnTheFixture() throws {
        let tiny = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        let h = try check(FoldReduceChan(), tiny.graph, fires: true, inputs: dicoInputs(tiny.weights.config))
        XCTAssertEqual(h.opCounts["concat"], 1, "level 1 keeps its concat")
        XCTAssertEqual(h.opCounts["add"]! - tiny.graph.opCounts["add"]!, 1, "level 2's two halves")
    }

    // MARK: - fold-batch-norm

    /// conv -> mul(scale) -> add(shift), per-channel constants [1, C, 1, 1]: one conv.
    func batchNormGraph(scaleShape: [Int] = [1, 4, 1, 1], extraReader: Bool = false, computedScale: Bool = false) throws -> Graph {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [2, 3, 5, 5]))
        let conv = try g.add(.conv2d(stride: 1, padding: 1, groups: 1),
                             [x, constant(&g, "conv.weight", [4, 3, 3, 3]), constant(&g, "conv.bias", [4])], name: "conv")
        let scale = computedScale ? g.addInput("scale", TensorType(.f32, constant: scaleShape)) : constant(&g, "bn.scale", scaleShape)
        let m = try g.add(.mul, [conv, scale], name: "bn.mul")
        let a = try g.add(.add, [constant(&g, "bn.shift", [1, 4, 1, 1]), m], name: "bn.add")   // constant first: either order
        g.outputs = extraReader ? [a, conv] : [a]
        return g
    }

    func testBatchNormFoldsIntoTheConvBefore() throws {
        let h = try check(FoldBatchNorm(), try batchNormGraph(), fires: true)
        XCTAssertEqual(h.nodes.map(\.op.name), ["conv2d"])
    }

    /// The conv's output is read elsewhere; the scale varies over pixels; the scale is computed.
    func testBatchNormDoesNotFoldASharedConvOrANonChannelScale() throws {
        try check(FoldBatchNorm(), try batchNormGraph(extraReader: true), fires: false)
        // The spatial scale stays, and so the shift after it has no conv to fold into.
        let h = try check(FoldBatchNorm(), try batchNormGraph(scaleShape: [1, 4, 5, 5]), fires: false)
        XCTAssertEqual(h.opCounts["mul"], 1)
        try check(FoldBatchNorm(), try batchNormGraph(computedScale: true), fires: false)
    }

    // MARK: - fold-norm-affine

    func testNormAffineFoldsIntoThe1x1ConvAndLinearAfter() throws {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [2, 4, 3, 3]))
        let n = try g.add(.channelLayerNorm(eps: 1e-6), [x], name: "norm")
        let m = try g.add(.mul, [n, constant(&g, "norm.gamma", [1, 4, 1, 1])], name: "norm.scale")
        let a = try g.add(.add, [m, constant(&g, "norm.beta", [1, 4, 1, 1])], name: "norm.shift")
        let y = try g.add(.conv2d(stride: 1, padding: 0, groups: 1),
                          [a, constant(&g, "proj.weight", [5, 4, 1, 1]), constant(&g, "proj.bias", [5])], name: "proj")
        let v = g.addInput("v", TensorType(.f32, constant: [2, 4]))
        let vs = try g.add(.mul, [v, constant(&g, "v.gamma", [1, 4])], name: "v.scale")
        let vl = try g.add(.linear, [vs, constant(&g, "fc.weight", [3, 4])], name: "fc")   // no bias: gains one
        g.outputs = [y, vl]
        let h = try check(FoldNormAffine(), g, fires: true)
        XCTAssertEqual(h.nodes.map(\.op.name), ["channel_layer_norm", "conv2d", "linear"])
    }

    /// The affine before a zero-padded 3x3 conv stays, and here is why: folding the shift
    /// into the bias (b' = b + sum over taps of W beta) adds beta's contribution at every tap,
    /// but at the border some taps read padding zeros, which the shift never reached. The
    /// interior agrees, the border does not.
    func testNormAffineDoesNotFoldIntoAZeroPadded3x3Conv() throws {
        for groups in [1, 4] {   // dense and depthwise
            var g = Graph()
            let x = g.addInput("x", TensorType(.f32, constant: [1, 4, 5, 5]))
            let beta = constant(&g, "beta", [1, 4, 1, 1])
            let a = try g.add(.add, [x, beta], name: "shift")
            let w = constant(&g, "w", [4, 4 / groups, 3, 3]), b = constant(&g, "b", [4])
            g.outputs = [try g.add(.conv2d(stride: 1, padding: 1, groups: groups), [a, w, b], name: "conv")]
            try check(FoldNormAffine(), g, fires: false)

            // The fold done by hand.
            let wv = g.constant(w)!.floats(), bv = g.constant(b)!.floats(), betav = g.constant(beta)!.floats()
            var folded = bv
            let cinG = 4 / groups
            for co in 0..<4 {
                for ci in 0..<cinG {
                    let src = groups == 1 ? ci : co
                    for t in 0..<9 { folded[co] += wv[(co * cinG + ci) * 9 + t] * betav[src] }
                }
            }
            var f = Graph()
            let fx = f.addInput("x", TensorType(.f32, constant: [1, 4, 5, 5]))
            f.outputs = [try f.add(.conv2d(stride: 1, padding: 1, groups: groups),
                                   [fx, f.addConstant("w", g.constant(w)!), f.addConstant("b", TensorData(shape: [4], floats: folded))], name: "conv")]
            let inputs = randomInputs(g)
            let want = try outputs(g, inputs)[0], got = try outputs(f, inputs)[0]
            var interior = 0.0, border = 0.0
            for c in 0..<4 {
                for i in 0..<5 {
                    for j in 0..<5 {
                        let k = (c * 5 + i) * 5 + j
                        let d = Double(abs(want[k] - got[k]))
                        if i == 0 || j == 0 || i == 4 || j == 4 { border = max(border, d) } else { interior = max(interior, d) }
                    }
                }
            }
            XCTAssertLessThan(interior, 1e-5, "interior pixels read no padding: the fold is exact there")
            XCTAssertGreaterThan(border, 1e-2, "border pixels differ by the missing beta taps")
        }
    }

    /// The `1 +` of DiCo's modulation x * (1 + scale) + shift is not folded into the adaLN
    /// linear's bias, and here is why. In the kernels it costs one add per (image, channel),
    /// against a multiply-add per pixel, so the fold saves nothing measurable. And a stored
    /// b + 1 is rounded at the precision of 1 when fp16 or bf16 conversion stores the bias
    /// (bf16 keeps 8 significant bits: an absolute error up to 2^-9 next to 1), while the
    /// stored b keeps 8 bits of b itself. The effective multiplier 1 + b is what the
    /// activations see, so the folded file would carry a far larger error in it. Both
    /// multipliers are run through the executor's `layer_norm_modulate` here: the folded
    /// one as scale = stored(1 + b) - 1, which is exact in float (the subtraction of 1 from
    /// a value in [0.5, 2] is exact).
    func testOnePlusScaleIsNotFoldedIntoAStoredBias() throws {
        let channels = 64, pixels = 16
        // Trained adaLN outputs are small (the adaLN-Zero initialization starts them at 0).
        let b = randoms(channels, scale: 0.05)
        let x = randoms(channels * pixels), shift = randoms(channels, scale: 0.1)
        func stored(_ v: [Float], bf16: Bool) -> [Float] {
            var bits = [UInt16](repeating: 0, count: v.count)
            _ = bf16 ? Quantizers.toBF16(v, count: v.count, into: &bits) : Quantizers.toF16(v, count: v.count, into: &bits)
            return bits.map { bf16 ? Float(bitPattern: UInt32($0) << 16) : halfToFloat($0) }
        }
        var g = Graph()
        let xi = g.addInput("x", TensorType(.f32, constant: [1, channels, 1, pixels]))
        let si = g.addInput("shift", TensorType(.f32, constant: [1, channels]))
        let ci = g.addInput("scale", TensorType(.f32, constant: [1, channels]))
        g.outputs = [try g.add(.layerNormModulate(eps: 1e-6), [xi, si, ci], name: "norm")]
        func run(_ scale: [Float]) throws -> [Float] {
            try outputs(g, ["x": HostTensor(shape: [1, channels, 1, pixels], floats: x),
                            "shift": HostTensor(shape: [1, channels], floats: shift),
                            "scale": HostTensor(shape: [1, channels], floats: scale)])[0]
        }
        let reference = try run(b)
        for bf16 in [true, false] {
            let unfolded = try run(stored(b, bf16: bf16))
            let folded = try run(stored(b.map { 1 + $0 }, bf16: bf16).map { $0 - 1 })
            let eUnfolded = relativeL2(unfolded, reference), eFolded = relativeL2(folded, reference)
            // The factor is about 1 / |b| (here 1 / 0.025 on average): 10 leaves room for the draw.
            XCTAssertGreaterThan(eFolded, 10 * eUnfolded, "\(bf16 ? "bf16" : "fp16"): folded \(eFolded), unfolded \(eUnfolded)")
        }
    }

    /// The affine's output also read elsewhere stays.
    func testNormAffineDoesNotFoldASharedAffine() throws {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [2, 4, 3, 3]))
        let a = try g.add(.add, [x, constant(&g, "beta", [1, 4, 1, 1])], name: "shift")
        let y = try g.add(.conv2d(stride: 1, padding: 0, groups: 1), [a, constant(&g, "w", [5, 4, 1, 1])], name: "proj")
        g.outputs = [y, a]
        try check(FoldNormAffine(), g, fires: false)
    }

    // MARK: - fold-constants

    func testConstantsFold() throws {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [1, 4, 2, 2]))
        let s = try g.add(.add, [constant(&g, "var", [1, 4, 1, 1]), filled(&g, "eps", [1, 1, 1, 1], 1e-5)], name: "var_eps")
        let r = try g.add(.sigmoid, [s], name: "some_fn")
        let y = try g.add(.mul, [x, r], name: "scale")
        g.outputs = [y]
        let h = try check(FoldConstants(), g, fires: true, tolerance: 0)
        XCTAssertEqual(h.nodes.map(\.op.name), ["mul"], "the constant chain became one constant")
    }

    /// Nodes reading an input, and all-constant nodes whose output exceeds the size limit, stay.
    func testConstantsDoNotFoldLargeOutputsOrInputs() throws {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [8]))
        let big = try g.add(.add, [constant(&g, "a", [8]), constant(&g, "b", [8])], name: "big")
        g.outputs = [try g.add(.mul, [x, big], name: "scale")]
        try check(FoldConstants(maxElements: 4), g, fires: false, tolerance: 0)
    }

    // MARK: - remove-identities

    func testIdentitiesAreRemoved() throws {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [1, 4, 4, 4]))
        var h = try g.add(.mul, [filled(&g, "ones", [1, 4, 1, 1], 1), x], name: "times_one")
        h = try g.add(.add, [h, filled(&g, "zeros", [1, 1, 1, 1], 0)], name: "plus_zero")
        h = try g.add(.slice(axis: 1, start: 0, length: 4), [h], name: "full_slice")
        h = try g.add(.concat(axis: 1), [h], name: "one_concat")
        h = try g.add(.pixelUnshuffle(factor: 2), [h], name: "unshuffle")
        h = try g.add(.pixelShuffle(factor: 2), [h], name: "shuffle")
        h = try g.add(.slice(axis: 1, start: 1, length: 3), [h], name: "outer")
        h = try g.add(.slice(axis: 1, start: 1, length: 2), [h], name: "inner")
        g.outputs = [h]
        var r = try check(RemoveIdentities(), g, fires: true, tolerance: 0)
        _ = try EliminateDeadCode().run(&r)
        XCTAssertEqual(r.nodes.map(\.op), [.slice(axis: 1, start: 2, length: 2)])
    }

    /// A multiply by ones that broadcasts x up, a partial slice, a lone unshuffle and a
    /// multiply by twos change the tensor, so they stay.
    func testIdentitiesKeepWhatChangesTheTensor() throws {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [1, 4, 1, 1]))
        let y = g.addInput("y", TensorType(.f32, constant: [1, 4, 4, 4]))
        let grown = try g.add(.mul, [x, filled(&g, "ones", [1, 4, 4, 4], 1)], name: "broadcast_up")
        let part = try g.add(.slice(axis: 1, start: 0, length: 2), [y], name: "part")
        let u = try g.add(.pixelUnshuffle(factor: 2), [y], name: "unshuffle")
        let twice = try g.add(.mul, [y, filled(&g, "twos", [1, 4, 1, 1], 2)], name: "times_two")
        g.outputs = [grown, part, u, twice]
        try check(RemoveIdentities(), g, fires: false, tolerance: 0)
    }
}
