import DicoIR
import XCTest

/// One value of every `Op` case. `caseIndex` switches without `default:`, so adding a case
/// to `Op` stops this file compiling until the case gets an index here, a sample below and
/// `caseCount` is raised (or the coverage assertion fails).
enum OpSamples {
    static let caseCount = 21

    static func caseIndex(_ op: Op) -> Int {
        switch op {
        case .conv2d: return 0
        case .linear: return 1
        case .channelLayerNorm: return 2
        case .modulate: return 3
        case .gatedAdd: return 4
        case .gelu: return 5
        case .silu: return 6
        case .sigmoid: return 7
        case .globalAvgPool: return 8
        case .mul: return 9
        case .add: return 10
        case .slice: return 11
        case .concat: return 12
        case .pixelShuffle: return 13
        case .pixelUnshuffle: return 14
        case .embedding: return 15
        case .timestepEmbedding: return 16
        case .layerNormModulate: return 17
        case .conv2dActivation: return 18
        case .conv2dGatedAdd: return 19
        case .channelAttention: return 20
        }
    }

    static let all: [Op] = [
        .conv2d(stride: 1, padding: 1, groups: 1), .linear, .channelLayerNorm(eps: 1e-6), .modulate, .gatedAdd,
        .gelu, .silu, .sigmoid, .globalAvgPool, .mul, .add, .slice(axis: 1, start: 0, length: 2), .concat(axis: 1),
        .pixelShuffle(factor: 2), .pixelUnshuffle(factor: 2), .embedding, .timestepEmbedding(dim: 256, maxPeriod: 10_000),
        .layerNormModulate(eps: 1e-6), .conv2dActivation(stride: 1, padding: 1, groups: 1, activation: .gelu),
        .conv2dGatedAdd(stride: 1, padding: 0, groups: 1), .channelAttention,
    ]
}

final class OpTests: XCTestCase {
    func testSamplesCoverEveryCase() {
        XCTAssertEqual(OpSamples.all.count, OpSamples.caseCount)
        XCTAssertEqual(Set(OpSamples.all.map(OpSamples.caseIndex)), Set(0..<OpSamples.caseCount),
                       "OpSamples.all must hold exactly one value of each case")
    }

    func testNamesAreDistinctAndNonEmpty() {
        let names = OpSamples.all.map(\.name)
        for (op, name) in zip(OpSamples.all, names) {
            XCTAssertFalse(name.isEmpty, "\(op)")
            XCTAssertFalse(name.contains(" "), "\(op): names appear in dumps and counts as one token")
        }
        XCTAssertEqual(Set(names).count, names.count, "duplicate op names: \(names)")
    }

    func testArityAndAttributes() {
        for op in OpSamples.all {
            let (lo, hi) = op.arity
            XCTAssertGreaterThanOrEqual(lo, 1, op.name)
            XCTAssertLessThanOrEqual(lo, hi, op.name)
            let keys = op.attributes.map(\.0)
            XCTAssertEqual(Set(keys).count, keys.count, "\(op.name): duplicate attribute keys")
        }
        XCTAssertTrue(Op.conv2d(stride: 2, padding: 0, groups: 3).attributes.elementsEqual(
            [("stride", "2"), ("padding", "0"), ("groups", "3")], by: ==))
        XCTAssertTrue(Op.linear.attributes.isEmpty)
    }
}
