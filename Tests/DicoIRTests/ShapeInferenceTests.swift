import DicoCore
import DicoIR
import XCTest

// Shorthands for the types these tests build.
let N = Dim.s(.N), H = Dim.s(.H), W = Dim.s(.W)
let H2 = Dim.s(.H).scaled(by: 1, over: 2)!, W2 = Dim.s(.W).scaled(by: 1, over: 2)!
func f32(_ shape: Dim...) -> TensorType { TensorType(.f32, shape) }
func f32(_ shape: [Int]) -> TensorType { TensorType(.f32, constant: shape) }
func i64(_ shape: Dim...) -> TensorType { TensorType(.i64, shape) }
extension Dim: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int) { self = .c(value) }
}

/// Asserts that inference fails with an `.invalidInput` error naming the node, the op and
/// containing `why`.
func assertInferFails(_ op: Op, _ ins: [TensorType], _ why: String, node: String = "blk.0.test",
                      file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try inferType(op, ins, node: node), file: file, line: line) { error in
        guard let e = error as? DicoError else { return XCTFail("not a DicoError: \(error)", file: file, line: line) }
        XCTAssertEqual(e.kind, .invalidInput, file: file, line: line)
        XCTAssertTrue(e.message.hasPrefix("node '\(node)' (\(op.name)): "), e.message, file: file, line: line)
        XCTAssertTrue(e.message.contains(why), "'\(e.message)' lacks '\(why)'", file: file, line: line)
    }
}

func assertInfers(_ op: Op, _ ins: [TensorType], _ expected: TensorType, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(try inferType(op, ins, node: "n"), expected, file: file, line: line)
}

final class ShapeInferenceTests: XCTestCase {
    func testArity() {
        assertInferFails(.linear, [f32(N, 4)], "takes 2 to 3 inputs, got 1")
        assertInferFails(.gelu, [f32(N, 4), f32(N, 4)], "takes 1 inputs, got 2")
        assertInferFails(.concat(axis: 0), [], "takes 1 to any inputs, got 0")
        assertInferFails(.modulate, [f32(N, 4, H, W), f32(N, 4)], "takes 3 inputs, got 2")
    }

    func testConv2d() {
        let op = Op.conv2d(stride: 1, padding: 1, groups: 1)
        assertInfers(op, [f32(N, 4, H, W), f32([24, 4, 3, 3]), f32([24])], f32(N, 24, H, W))
        assertInfers(op, [f32(N, 4, H, W), f32([24, 4, 3, 3])], f32(N, 24, H, W))
        // Depthwise, and a strided constant-size case: (8 + 2 - 3) / 2 + 1 = 4.
        assertInfers(.conv2d(stride: 1, padding: 1, groups: 6), [f32(N, 6, H2, W2), f32([6, 1, 3, 3])], f32(N, 6, H2, W2))
        assertInfers(.conv2d(stride: 2, padding: 1, groups: 1), [f32([1, 4, 8, 8]), f32([2, 4, 3, 3])], f32([1, 2, 4, 4]))
        assertInferFails(op, [f32(N, 4, H, W), f32([24, 3, 3, 3])], "input has 4 channels but weight expects 3 x 1 groups")
        assertInferFails(op, [f32(N, 4, H, W), f32([24, 4, 3, 3]), f32([12])], "bias length vs output channels: 12 vs 24")
        assertInferFails(.conv2d(stride: 2, padding: 1, groups: 1), [f32(N, 4, H, W), f32([2, 4, 3, 3])],
                         "symbolic spatial size needs stride 1 and 'same' padding")
        assertInferFails(.conv2d(stride: 1, padding: 0, groups: 1), [f32([1, 4, 2, 2]), f32([2, 4, 3, 3])], "kernel 3 larger than padded input 2")
        assertInferFails(op, [TensorType(.i64, [N, 4, H, W]), f32([24, 4, 3, 3])], "input 0 must be floating point, is i64")
    }

    func testLinear() {
        assertInfers(.linear, [f32(N, 256), f32([24, 256]), f32([24])], f32(N, 24))
        assertInferFails(.linear, [f32(N, 128), f32([24, 256]), f32([24])], "input features vs weight columns: 128 vs 256")
        assertInferFails(.linear, [f32(N, 256), f32([24, 256]), f32([48])], "bias length vs weight rows: 48 vs 24")
        assertInferFails(.linear, [f32(N, 256, 1), f32([24, 256])], "input 0 must have rank 2")
    }

    func testChannelLayerNorm() {
        assertInfers(.channelLayerNorm(eps: 1e-6), [f32(N, 8, H, W)], f32(N, 8, H, W))
        assertInferFails(.channelLayerNorm(eps: 0), [f32(N, 8, H, W)], "eps must be positive")
        assertInferFails(.channelLayerNorm(eps: 1e-6), [f32(N, 8)], "input 0 must have rank 4")
    }

    func testModulateAndGatedAdd() {
        assertInfers(.modulate, [f32(N, 8, H, W), f32(N, 8), f32(N, 8)], f32(N, 8, H, W))
        assertInferFails(.modulate, [f32(N, 8, H, W), f32(N, 8), f32(N, 16)], "width of input 2 vs channels: 16 vs 8")
        assertInferFails(.modulate, [f32(N, 8, H, W), f32(1, 8), f32(N, 8)], "batch of input 1: 1 vs N")
        assertInfers(.gatedAdd, [f32(N, 8, H, W), f32(N, 8), f32(N, 8, H, W)], f32(N, 8, H, W))
        assertInferFails(.gatedAdd, [f32(N, 8, H, W), f32(N, 4), f32(N, 8, H, W)], "width of input 1 vs channels: 4 vs 8")
        assertInferFails(.gatedAdd, [f32(N, 8, H, W), f32(N, 8), f32(N, 8, H2, W2)], "residual f32[N,8,H,W] vs branch f32[N,8,H/2,W/2]")
    }

    func testConvGatedAddAndChannelAttention() {
        let conv = Op.conv2dGatedAdd(stride: 1, padding: 0, groups: 1)
        assertInfers(conv, [f32(N, 4, H, W), f32(8, 4, 1, 1), f32(8), f32(N, 8, H, W), f32(N, 8)], f32(N, 8, H, W))
        assertInferFails(conv, [f32(N, 4, H, W), f32(8, 4, 1, 1), f32(8), f32(N, 8, H, W)], "takes 5 inputs, got 4")
        assertInferFails(conv, [f32(N, 4, H, W), f32(8, 4, 1, 1), f32(8), f32(N, 8, H2, W2), f32(N, 8)],
                         "residual f32[N,8,H/2,W/2] vs conv output f32[N,8,H,W]")
        assertInferFails(conv, [f32(N, 4, H, W), f32(8, 4, 1, 1), f32(8), f32(N, 8, H, W), f32(N, 4)], "width of the gate vs output channels: 4 vs 8")
        assertInferFails(conv, [f32(N, 4, H, W), f32(8, 4, 1, 1), f32(8), f32(N, 8, H, W), f32(N, 8, 1, 1)], "input 4 must have rank 2")
        assertInfers(.channelAttention, [f32(N, 8, H, W), f32(8, 8, 1, 1), f32(8)], f32(N, 8, H, W))
        assertInfers(.channelAttention, [f32(N, 8, H, W), f32(8, 8, 1, 1)], f32(N, 8, H, W))
        assertInferFails(.channelAttention, [f32(N, 8, H, W), f32(4, 8, 1, 1)], "weight must be [8, 8, 1, 1], is f32[4,8,1,1]")
        assertInferFails(.channelAttention, [f32(N, 8, H, W), f32(8, 8, 3, 3)], "weight must be [8, 8, 1, 1]")
        assertInferFails(.channelAttention, [f32(N, 8, H, W), f32(8, 8, 1, 1), f32(4)], "bias length vs channels: 4 vs 8")
    }

    func testActivations() {
        for op in [Op.gelu, .silu, .sigmoid] {
            assertInfers(op, [f32(N, 8, H, W)], f32(N, 8, H, W))
            assertInfers(op, [f32(N, 8)], f32(N, 8))
            assertInferFails(op, [i64(N)], "input 0 must be floating point, is i64")
        }
    }

    func testGlobalAvgPool() {
        assertInfers(.globalAvgPool, [f32(N, 8, H, W)], f32(N, 8, 1, 1))
        assertInferFails(.globalAvgPool, [f32(N, 8)], "input 0 must have rank 4, has f32[N,8]")
    }

    func testBroadcastingBinaryOps() {
        for op in [Op.mul, .add] {
            assertInfers(op, [f32(N, 8, H, W), f32(N, 8, 1, 1)], f32(N, 8, H, W))
            assertInfers(op, [f32(N, 8, 1, 1), f32(N, 8, H, W)], f32(N, 8, H, W))
            assertInfers(op, [f32(N, 24), f32(N, 24)], f32(N, 24))
            assertInferFails(op, [f32(N, 8, H, W), f32(N, 4, 1, 1)], "cannot broadcast f32[N,8,H,W] with f32[N,4,1,1]")
            assertInferFails(op, [f32(N, 8, H, W), f32(N, 8)], "operands of rank 4 and 2")
            assertInferFails(op, [f32(N, 8, H, W), f32(N, 8, H2, W2)], "cannot broadcast")
        }
    }

    func testSlice() {
        assertInfers(.slice(axis: 1, start: 24, length: 24), [f32(N, 144)], f32(N, 24))
        assertInfers(.slice(axis: 1, start: 120, length: 24), [f32(N, 144)], f32(N, 24))
        assertInferFails(.slice(axis: 1, start: 130, length: 24), [f32(N, 144)], "slice [130, 154) outside 0..<144")
        assertInferFails(.slice(axis: 2, start: 0, length: 1), [f32(N, 144)], "axis 2 out of range for f32[N,144]")
        assertInferFails(.slice(axis: 0, start: 0, length: 1), [f32(N, 144)], "sliced axis must be a constant dimension, is N")
        assertInferFails(.slice(axis: 1, start: -1, length: 2), [f32(N, 144)], "outside 0..<144")
    }

    func testConcat() {
        assertInfers(.concat(axis: 1), [f32(N, 8, H, W), f32(N, 16, H, W)], f32(N, 24, H, W))
        assertInfers(.concat(axis: 1), [f32(N, 8, H, W)], f32(N, 8, H, W))
        assertInferFails(.concat(axis: 1), [f32(N, 8, H, W), f32(N, 16, H2, W2)], "input 1 dimension 2: H/2 vs H")
        assertInferFails(.concat(axis: 1), [f32(N, 8, H, W), f32(N, 16, H)], "input 1 f32[N,16,H] does not match f32[N,8,H,W]")
        assertInferFails(.concat(axis: 1), [f32(N, 8, H, W), TensorType(.f64, [N, 8, H, W])], "does not match")
        assertInferFails(.concat(axis: 4), [f32(N, 8, H, W)], "axis 4 out of range")
        assertInferFails(.concat(axis: 2), [f32(N, 8, H, W), f32(N, 8, H, W)], "concatenated axis must be a constant dimension, is H")
    }

    func testPixelShuffle() {
        assertInfers(.pixelShuffle(factor: 2), [f32(N, 32, H2, W2)], f32(N, 8, H, W))
        assertInfers(.pixelShuffle(factor: 2), [f32([1, 8, 3, 5])], f32([1, 2, 6, 10]))
        assertInferFails(.pixelShuffle(factor: 2), [f32(N, 6, H, W)], "6 channels do not divide by 4")
        assertInferFails(.pixelShuffle(factor: 0), [f32(N, 8, H, W)], "factor must be positive")
    }

    func testPixelUnshuffle() {
        assertInfers(.pixelUnshuffle(factor: 2), [f32(N, 8, H, W)], f32(N, 32, H2, W2))
        assertInfers(.pixelUnshuffle(factor: 4), [f32([1, 4, 8, 8])], f32([1, 64, 2, 2]))
        assertInferFails(.pixelUnshuffle(factor: 4), [f32([1, 4, 6, 6])], "spatial size 6 x 6 does not divide by 4")
        assertInferFails(.pixelUnshuffle(factor: 2), [f32(N, 8, H)], "input 0 must have rank 4")
    }

    func testEmbedding() {
        assertInfers(.embedding, [f32([11, 24]), i64(N)], f32(N, 24))
        assertInferFails(.embedding, [f32([11, 24]), f32(N)], "indices must be i64, are f32")
        assertInferFails(.embedding, [TensorType(.i64, constant: [11, 24]), i64(N)], "input 0 must be floating point")
    }

    func testTimestepEmbedding() {
        assertInfers(.timestepEmbedding(dim: 256, maxPeriod: 10_000), [f32(N)], f32(N, 256))
        assertInferFails(.timestepEmbedding(dim: 255, maxPeriod: 10_000), [f32(N)], "dim must be even and positive")
        assertInferFails(.timestepEmbedding(dim: 256, maxPeriod: 1), [f32(N)], "max_period above 1")
        assertInferFails(.timestepEmbedding(dim: 256, maxPeriod: 10_000), [i64(N)], "timesteps must be f32, are i64")
    }
}
