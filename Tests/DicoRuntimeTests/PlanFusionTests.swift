import DicoTestSupport
import XCTest
import DicoCore
import DicoIR
import DicoRuntime

/// The executor's plan fusion of a 1x1 conv into the depthwise 3x3 conv that alone reads it:
/// where it fires, where it must not, and that it computes what the two convs give apart.
extension KernelTests {
    /// A graph x -> `pointwise` (1x1, `cin` -> `channels`) -> `second` (3x3 weight
    /// [channels, channels / groups, 3, 3]); `extraReader` adds a GELU of the 1x1 output as a
    /// second output, `pointwiseOutput` makes the 1x1 output a graph output too.
    struct Chain {
        var graph: Graph
        var x: HostTensor
        /// The constants by name, for the reference.
        var weights: [String: [Float]]
    }

    func chain(batch: Int, cin: Int, channels: Int, height: Int, width: Int, pointwise: Op = .conv2d(stride: 1, padding: 0, groups: 1),
               second: Op, secondGroups: Int? = nil, biases: Bool = true, extraReader: Bool = false, pointwiseOutput: Bool = false) throws -> Chain {
        var g = Graph()
        var weights: [String: [Float]] = [:]
        func constant(_ name: String, _ shape: [Int]) -> ValueID {
            weights[name] = random(shape.reduce(1, *))
            return g.addConstant(name, TensorData(shape: shape, floats: weights[name]!))
        }
        let x = g.addInput("x", TensorType(.f32, constant: [batch, cin, height, width]))
        let w1 = constant("w1", [channels, cin, 1, 1]), b1 = constant("b1", [channels])
        let mid = try g.add(pointwise, biases ? [x, w1, b1] : [x, w1], name: "conv1")
        let perGroup = channels / (secondGroups ?? channels)
        let w2 = constant("w2", [channels, perGroup, 3, 3]), b2 = constant("b2", [channels])
        g.outputs = [try g.add(second, biases ? [mid, w2, b2] : [mid, w2], name: "conv2")]
        if extraReader { g.outputs.append(try g.add(.gelu, [mid], name: "other")) }
        if pointwiseOutput { g.outputs.append(mid) }
        return Chain(graph: g, x: HostTensor(shape: [batch, cin, height, width], floats: random(batch * cin * height * width)), weights: weights)
    }

    /// Runs `c` and returns the outputs and the profile's kernel paths.
    func runChain(_ c: Chain, fusion: Bool, threads: Int) throws -> (out: [HostTensor], paths: Set<String>) {
        let ex = try Executor(graph: c.graph, threads: threads)
        ex.planFusion = fusion
        ex.profiling = true
        return (try ex.run(["x": c.x]), Set(ex.profile.keys))
    }

    /// Fused, the pair runs as one kernel (its own profile label) and gives bit for bit what
    /// the two convs give one after the other, for 1, 2 and 3 threads: the same sgemm calls
    /// (OpenBLAS rounds differently for other call shapes: a 64-row tile of the first three
    /// cases, DiCo's widths with k in the hundreds, differed in the last bits) and the same
    /// depthwise plane code. The cases cover DiCo-S's three levels, small images (the batch
    /// side by side), images of 256 pixels or more (one image per task), row tiles narrower
    /// than the channels, width 1, batch 1, no biases, and both depthwise ops. Those without
    /// an activation also match the Double reference of the two convs within `sumTolerance`
    /// (sums of under 30 unit-order products).
    func testPointwiseDepthwiseFusionEqualsTheTwoConvs() throws {
        let cases: [(batch: Int, cin: Int, channels: Int, h: Int, w: Int, act: Bool, biases: Bool)] = [
            (2, 128, 128, 32, 32, true, true), (2, 256, 256, 16, 16, true, true), (2, 512, 512, 8, 8, true, true),
            (2, 5, 6, 5, 7, true, true), (2, 8, 70, 16, 17, true, true), (1, 8, 70, 5, 7, false, true),
            (3, 4, 3, 4, 1, true, false), (2, 3, 9, 32, 32, false, false), (2, 6, 130, 3, 2, true, true),
        ]
        for k in cases {
            let second: Op = k.act ? .conv2dActivation(stride: 1, padding: 1, groups: k.channels, activation: .gelu)
                : .conv2d(stride: 1, padding: 1, groups: k.channels)
            let c = try chain(batch: k.batch, cin: k.cin, channels: k.channels, height: k.h, width: k.w, second: second, biases: k.biases)
            XCTAssertEqual(try Executor(graph: c.graph, threads: 1).fusablePairs.map(\.pointwise), ["conv1"])
            let apart = try runChain(c, fusion: false, threads: 2)
            XCTAssertFalse(apart.paths.contains { $0.hasSuffix("(fused)") }, "\(k)")
            for threads in [1, 2, 3] {
                let fused = try runChain(c, fusion: true, threads: threads)
                XCTAssertTrue(fused.paths.contains("conv2d 1x1 + \(second.name) 3x3 grouped (fused)"), "\(k): \(fused.paths)")
                XCTAssertTrue(fused.out[0].floats! == apart.out[0].floats!, "\(k) threads \(threads): fused and unfused differ")
            }
            if !k.act {
                let b1 = k.biases ? c.weights["b1"] : nil, b2 = k.biases ? c.weights["b2"] : nil
                let xs = [k.batch, k.cin, k.h, k.w]
                let (mid, ms) = referenceConv(x: c.x.floats!, xs: xs, w: c.weights["w1"]!, ws: [k.channels, k.cin, 1, 1], b: b1,
                                              stride: 1, pad: 0, groups: 1)
                let (want, _) = referenceConv(x: mid.map { Float($0) }, xs: ms, w: c.weights["w2"]!, ws: [k.channels, 1, 3, 3], b: b2,
                                              stride: 1, pad: 1, groups: k.channels)
                assertClose(apart.out[0].floats!, want, sumTolerance, "\(k) vs reference")
            }
        }
    }

    /// Above `pointwiseDepthwiseMaxPixels` the pair stays fusable but runs as two convs.
    func testPointwiseDepthwiseFusionFallsBackOnLargeImages() throws {
        let side = 33
        XCTAssertGreaterThan(side * side, pointwiseDepthwiseMaxPixels)
        let c = try chain(batch: 1, cin: 2, channels: 3, height: side, width: side,
                          second: .conv2dActivation(stride: 1, padding: 1, groups: 3, activation: .gelu))
        let fused = try runChain(c, fusion: true, threads: 2), apart = try runChain(c, fusion: false, threads: 2)
        XCTAssertEqual(fused.paths, ["conv2d 1x1", "conv2d_activation 3x3 grouped"])
        XCTAssertTrue(fused.out[0].floats! == apart.out[0].floats!, "fused and unfused differ")
    }

    /// No fusion where the 1x1 output is needed elsewhere, the second conv is not a stride-1,
    /// padding-1 depthwise 3x3, or the 1x1 conv has an epilogue of its own.
    func testPointwiseDepthwiseFusionDoesNotFireWhereItMustNot() throws {
        let dw: Op = .conv2dActivation(stride: 1, padding: 1, groups: 4, activation: .gelu)
        let cases: [(String, Chain)] = [
            ("second reader", try chain(batch: 2, cin: 3, channels: 4, height: 6, width: 5, second: dw, extraReader: true)),
            ("1x1 output is a graph output", try chain(batch: 2, cin: 3, channels: 4, height: 6, width: 5, second: dw, pointwiseOutput: true)),
            ("stride 2", try chain(batch: 2, cin: 3, channels: 4, height: 6, width: 5, second: .conv2d(stride: 2, padding: 1, groups: 4))),
            ("padding 0", try chain(batch: 2, cin: 3, channels: 4, height: 6, width: 5, second: .conv2d(stride: 1, padding: 0, groups: 4))),
            ("two channels per group", try chain(batch: 2, cin: 3, channels: 4, height: 6, width: 5,
                                                 second: .conv2d(stride: 1, padding: 1, groups: 2), secondGroups: 2)),
            ("1x1 with GELU", try chain(batch: 2, cin: 3, channels: 4, height: 6, width: 5,
                                        pointwise: .conv2dActivation(stride: 1, padding: 0, groups: 1, activation: .gelu), second: dw)),
        ]
        for (what, c) in cases {
            XCTAssertTrue(try Executor(graph: c.graph, threads: 2).fusablePairs.isEmpty, what)
            let run = try runChain(c, fusion: true, threads: 2)
            XCTAssertFalse(run.paths.contains { $0.hasSuffix("(fused)") }, what)
        }
    }
}
