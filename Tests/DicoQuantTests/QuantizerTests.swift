import DicoCore
import DicoQuant
import Foundation
import XCTest

// MARK: - Independent references

/// The spec's int8 formula (Formats/DICO.md, "Quantization") evaluated in Double:
/// m = max |w| over the row, scale = m / 127 (0 for an all-zero row),
/// q = round-half-even(w * (127 / m)) clamped to [-127, 127].
/// Returns the Double product too, so callers can tell a genuine near-tie (where float32
/// evaluation may legitimately land on the other side) from a real difference.
func int8Reference(_ row: [Float]) -> (scale: Float, q: [Int8], product: [Double]) {
    let m = row.map { abs(Double($0)) }.max() ?? 0
    guard m > 0 else { return (0, [Int8](repeating: 0, count: row.count), [Double](repeating: 0, count: row.count)) }
    // m is a float32 value, so m / 127 rounded once to Double and then to Float equals the float32
    // quotient: Double has more than 2 * 24 + 2 significand bits, so double rounding of a quotient
    // is innocuous.
    let scale = Float(m / 127)
    let products = row.map { Double($0) * (127 / m) }
    let q = products.map { v -> Int8 in Int8(min(127, max(-127, v.rounded(.toNearestOrEven)))) }
    return (scale, q, products)
}

/// Runs `Quantizers.int8PerRow` on `rows` (all of one length).
func quantize(_ rows: [[Float]]) -> (finite: Bool, q: [[Int8]], scales: [Float]) {
    let cols = rows.first?.count ?? 0
    let flat = rows.flatMap { $0 }
    var q = [Int8](repeating: 99, count: flat.count)
    var scales = [Float](repeating: -1, count: rows.count)
    let finite = flat.withUnsafeBufferPointer { src in
        q.withUnsafeMutableBufferPointer { qb in
            scales.withUnsafeMutableBufferPointer { sb in
                Quantizers.int8PerRow(src.baseAddress!, rows: rows.count, cols: cols, q: qb.baseAddress!, scales: sb.baseAddress!)
            }
        }
    }
    return (finite, (0..<rows.count).map { Array(q[$0 * cols..<($0 + 1) * cols]) }, scales)
}

func f16(_ values: [Float]) -> (bits: [UInt16], overflow: Int?) {
    var out = [UInt16](repeating: 0xDEAD, count: values.count)
    let o = values.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { Quantizers.toF16(s.baseAddress!, count: values.count, into: $0.baseAddress!) } }
    return (out, o)
}

func bf16(_ values: [Float]) -> (bits: [UInt16], overflow: Int?) {
    var out = [UInt16](repeating: 0xDEAD, count: values.count)
    let o = values.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { Quantizers.toBF16(s.baseAddress!, count: values.count, into: $0.baseAddress!) } }
    return (out, o)
}

/// A small deterministic generator (SplitMix64), so failures reproduce.
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func unit() -> Float { Float(Double(next() >> 11) / Double(1 << 52) - 1) }
}

final class Int8QuantizerTests: XCTestCase {
    /// Random rows of several magnitudes (including a row whose extreme value is negative)
    /// agree with the Double reference element for element. The only tolerated difference is
    /// one step at a value whose exact product lies within 1e-4 of a half-integer: there the
    /// float32 product w * (127/m) (two roundings) may fall on the other side of the tie.
    func testRandomRowsMatchTheDoubleReference() {
        var rng = SplitMix(state: 42)
        var rows: [[Float]] = []
        for r in 0..<64 {
            let magnitude = Float([1e-3, 0.05, 1, 37, 3e4][r % 5])
            rows.append((0..<77).map { _ in rng.unit() * magnitude })
        }
        rows[3][10] = -100   // the row's max |w| comes from a negative value
        let got = quantize(rows)
        XCTAssertTrue(got.finite)
        var nearTies = 0
        for (r, row) in rows.enumerated() {
            let ref = int8Reference(row)
            XCTAssertEqual(got.scales[r], ref.scale, "row \(r) scale")
            for i in row.indices where got.q[r][i] != ref.q[i] {
                let frac = ref.product[i] - ref.product[i].rounded(.down)
                let nearTie = abs(frac - 0.5) < 1e-4
                XCTAssertTrue(nearTie && abs(Int(got.q[r][i]) - Int(ref.q[i])) == 1,
                              "row \(r) col \(i): w \(row[i]) -> \(got.q[r][i]), reference \(ref.q[i]) (product \(ref.product[i]))")
                nearTies += 1
            }
        }
        XCTAssertLessThan(nearTies, 5, "random data should almost never sit on a tie")
        XCTAssertEqual(got.q[3][10], -127, "the extreme value maps to -127")
    }

    /// Exact ties round half to even, on both signs: with max |w| = 127 the factor 127/m is
    /// exactly 1, and with m = 254 exactly 0.5, so these products are exact half-integers.
    func testTiesRoundHalfToEven() {
        let a: [Float] = [127, 0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, -126.5, -127]
        let b: [Float] = [254, 1, 3, 5, 7, -1, -3, -5, 253, -253, -254]
        let got = quantize([a, b])
        let expected: [Int8] = [127, 0, 2, 2, 4, 0, -2, -2, 126, -126, -127]
        XCTAssertEqual(got.q[0], expected)
        XCTAssertEqual(got.q[1], expected)
        XCTAssertEqual(got.q[0], int8Reference(a).q)
        XCTAssertEqual(got.q[1], int8Reference(b).q)
        XCTAssertEqual(got.scales, [1, 2])
    }

    /// Negative values map symmetrically, and the largest |w| maps to +-127 exactly.
    func testNegativeValuesAndExtremes() {
        let row: [Float] = [-10, 5, -2.5, 0.01, 10, -7.3]
        let got = quantize([row])
        let ref = int8Reference(row)
        XCTAssertEqual(got.q[0], ref.q)
        XCTAssertEqual(got.q[0][0], -127)
        XCTAssertEqual(got.q[0][4], 127)
        XCTAssertEqual(got.scales[0], Float(10) / 127)
        let mirrored = quantize([row.map { -$0 }])
        XCTAssertEqual(mirrored.q[0], got.q[0].map { -$0 })
    }

    /// An all-zero row (also of negative zeros) has scale 0 and all-zero values, and does not
    /// disturb its neighbours.
    func testAllZeroRow() {
        let rows: [[Float]] = [[0, 0, 0, 0], [-0.0, 0, -0.0, 0], [1, -1, 0.5, 0]]
        let got = quantize(rows)
        XCTAssertTrue(got.finite)
        XCTAssertEqual(got.scales[0], 0)
        XCTAssertEqual(got.scales[1].bitPattern, 0, "a zero row's scale is +0")
        XCTAssertEqual(got.q[0], [0, 0, 0, 0])
        XCTAssertEqual(got.q[1], [0, 0, 0, 0])
        XCTAssertEqual(got.q[2], int8Reference(rows[2]).q)
        XCTAssertEqual(got.q[2], [127, -127, 64, 0])   // 63.5 ties to 64 (even)
    }

    /// A single column and a single row work (degenerate shapes of real tensors).
    func testDegenerateShapes() {
        let col = quantize([[3], [-2], [0]])
        XCTAssertEqual(col.q, [[127], [-127], [0]])
        XCTAssertEqual(col.scales, [Float(3) / 127, Float(2) / 127, 0])
    }

    /// NaN, +Inf and -Inf anywhere make the function report non-finite input.
    func testNonFiniteInputIsReported() {
        XCTAssertFalse(quantize([[1, 2], [3, .nan]]).finite)
        XCTAssertFalse(quantize([[.infinity, 2], [3, 4]]).finite)
        XCTAssertFalse(quantize([[1, -.infinity]]).finite)
        XCTAssertFalse(quantize([[-.nan, 0]]).finite)
        XCTAssertTrue(quantize([[1, 2], [3, 4]]).finite)
    }

    func testNonFiniteCount() {
        let v: [Float] = [1, .nan, .infinity, -.infinity, .greatestFiniteMagnitude, 0, .leastNonzeroMagnitude]
        XCTAssertEqual(v.withUnsafeBufferPointer { Quantizers.nonFiniteCount($0.baseAddress!, count: v.count) }, 3)
    }

    /// A row whose max |w| is tiny (below 127 / Float.greatestFiniteMagnitude, about 3.7e-37)
    /// must still quantize by the spec: here to [127, 0, -64] (powers of two, so the products
    /// 127, 0 and -63.5 are exact and -63.5 ties to even -64). A plain float32 factor 127 / m
    /// would overflow to infinity for such rows (0 * inf is NaN, and Int32(NaN) traps).
    func testRowWithTinyMaximum() throws {
        let rows: [[Float]] = [[0x1p-126, 0, -0x1p-127], [0x1p-140, 0, -0x1p-141]]   // normal and subnormal maxima
        let got = quantize(rows)
        XCTAssertTrue(got.finite)
        for (r, row) in rows.enumerated() {
            XCTAssertEqual(got.q[r], int8Reference(row).q)
            XCTAssertEqual(got.q[r], [127, 0, -64])
        }
    }
}

final class HalfConversionTests: XCTestCase {
    /// Hand-picked float32 -> binary16 cases, round to nearest even.
    func testF16HandPickedValues() {
        let cases: [(Float, UInt16, String)] = [
            (1, 0x3C00, "one"),
            (1 + 0x1p-11, 0x3C00, "1 + 2^-11 is the tie between 1 and 1 + 2^-10: even is 1"),
            (1 + 3 * 0x1p-11, 0x3C02, "1 + 3*2^-11 ties to the even 1 + 2^-9"),
            (1 + 0x1p-11 + 0x1p-20, 0x3C01, "just above the tie rounds up"),
            (-2.5, 0xC100, "negative"),
            (65504, 0x7BFF, "largest finite half"),
            (65519.996, 0x7BFF, "just below the overflow midpoint"),
            (0x1p-14, 0x0400, "smallest normal"),
            (0x1p-14 - 0x1p-24, 0x03FF, "largest subnormal"),
            (0x1p-24, 0x0001, "smallest subnormal"),
            (3 * 0x1p-25, 0x0002, "1.5 * 2^-24 ties to the even 2 * 2^-24"),
            (0x1p-25, 0x0000, "2^-25 ties to even zero (underflow, not an overflow)"),
            (-0x1p-24, 0x8001, "negative subnormal"),
            (-0.0, 0x8000, "negative zero keeps its sign"),
            (.infinity, 0x7C00, "infinity stays infinity"),
            (-.infinity, 0xFC00, "negative infinity"),
        ]
        let r = f16(cases.map(\.0))
        XCTAssertNil(r.overflow, "no finite value here overflows")
        for (i, c) in cases.enumerated() {
            XCTAssertEqual(r.bits[i], c.1, "\(c.0): \(c.2)")
        }
        let nan = f16([.nan, -.nan, Float(bitPattern: 0x7F80_0001)])
        XCTAssertNil(nan.overflow)
        for b in nan.bits { XCTAssertTrue(Float16(bitPattern: b).isNaN, "NaN stays NaN: \(String(b, radix: 16))") }
    }

    /// 65520 is the midpoint between 65504 and 65536 (= infinity); ties-to-even rounds it up,
    /// so it overflows and is reported with its index (the first overflowing one).
    func testF16OverflowIsReportedWithItsIndex() {
        let r = f16([1, 2, 65504, 65520, 5, -1e5, 7])
        XCTAssertEqual(r.overflow, 3)
        XCTAssertEqual(r.bits[3], 0x7C00)
        XCTAssertEqual(r.bits[5], 0xFC00)
        XCTAssertEqual(f16([0, -65520]).overflow, 1, "negative overflow too")
        XCTAssertEqual(f16([.infinity, 0, 1e6]).overflow, 2, "an infinite input is not an overflow")
    }

    /// Every binary16 value converts back to itself, and the float midpoint between any two
    /// neighbouring finite halves goes to the one with the even significand (the tie rule
    /// checked on all 63,486 gaps, subnormals included).
    func testF16ExhaustiveRoundTripAndMidpoints() {
        var values: [Float] = [], expect: [UInt16] = []
        for h in UInt16(0)...UInt16(0x7BFF) {
            let a = Float(Float16(bitPattern: h))
            for s: UInt16 in [0, 0x8000] {
                values.append(s == 0 ? a : -a); expect.append(h | s)
            }
            if h < 0x7BFF {
                let b = Float(Float16(bitPattern: h + 1))
                let mid = a + (b - a) / 2   // exact in float32 (halves have 11 significand bits)
                values.append(mid); expect.append(h % 2 == 0 ? h : h + 1)
                values.append(mid.nextDown); expect.append(h)
                values.append(mid.nextUp); expect.append(h + 1)
            }
        }
        let r = f16(values)
        XCTAssertNil(r.overflow)
        assertSameBits(values, r.bits, expect)
    }

    /// toF16 agrees bit for bit with the standard library's `Float16(x)` (itself IEEE round to
    /// nearest even) on every float32 exponent, both signs, mantissas that sit on, just below
    /// and just above the rounding boundaries of both the normal (13 dropped bits) and the
    /// subnormal half range, and random mantissas; NaN maps to some NaN. The reported overflow
    /// index is the first finite value that `Float16(x)` makes infinite.
    func testF16MatchesFloat16BitForBit() {
        var rng = SplitMix(state: 7)
        var values: [Float] = []
        let mantissas: [UInt32] = [0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x2FFF, 0x3001, 0x7F_E000, 0x7F_EFFF,
                                   0x7F_F000, 0x7F_F001, 0x7F_FFFF, 0x40_0000, 0x40_0001, 0x3F_FFFF, 0x0800, 0x1800, 0x8000, 0x18000]
        for e: UInt32 in 0...255 {
            for s: UInt32 in [0, 0x8000_0000] {
                for m in mantissas { values.append(Float(bitPattern: s | e << 23 | m)) }
                for _ in 0..<24 { values.append(Float(bitPattern: s | e << 23 | UInt32(truncatingIfNeeded: rng.next()) & 0x7F_FFFF)) }
                // Subnormal-half ties: the dropped bits depend on the exponent there.
                for k: UInt32 in 0..<23 { values.append(Float(bitPattern: s | e << 23 | 1 << k)); values.append(Float(bitPattern: s | e << 23 | 3 << k & 0x7F_FFFF)) }
            }
        }
        let r = f16(values)
        var failures = 0
        for (i, x) in values.enumerated() {
            let want = Float16(x)
            let ok = x.isNaN ? Float16(bitPattern: r.bits[i]).isNaN : r.bits[i] == want.bitPattern
            if !ok {
                failures += 1
                if failures <= 10 { XCTFail("\(x) (0x\(String(x.bitPattern, radix: 16))): 0x\(String(r.bits[i], radix: 16)), Float16 gives 0x\(String(want.bitPattern, radix: 16))") }
            }
        }
        XCTAssertEqual(failures, 0)
        XCTAssertEqual(r.overflow, values.firstIndex { $0.isFinite && Float16($0).isInfinite })
        // Just around the overflow threshold 65520 = 0x477FF000 (the midpoint of 65504 and 2^16).
        for (bits, overflows) in [(UInt32(0x477F_EFFF), false), (0x477F_F000, true), (0x477F_F001, true), (0x477F_FFFF, true), (0x4780_0000, true)] {
            let v = Float(bitPattern: bits)
            let one = f16([0, v, -v])
            XCTAssertEqual(one.overflow, overflows ? 1 : nil, "\(v)")
            XCTAssertEqual(one.bits[1], Float16(v).bitPattern, "\(v)")
        }
    }

    func testBF16HandPickedValues() {
        let cases: [(Float, UInt16, String)] = [
            (1, 0x3F80, "one"),
            (Float(bitPattern: 0x3F80_8000), 0x3F80, "tie between 0x3F80 and 0x3F81: even is 0x3F80"),
            (Float(bitPattern: 0x3F81_8000), 0x3F82, "tie between 0x3F81 and 0x3F82: even is 0x3F82"),
            (Float(bitPattern: 0x3F80_8001), 0x3F81, "just above the tie rounds up"),
            (Float(bitPattern: 0x3F80_7FFF), 0x3F80, "just below the tie rounds down"),
            (Float(bitPattern: 0xBF81_8000), 0xBF82, "negative tie to even"),
            (-0.0, 0x8000, "negative zero"),
            (Float(bitPattern: 0x0000_8000), 0x0000, "subnormal tie to even zero"),
            (Float(bitPattern: 0x0001_8000), 0x0002, "subnormal tie to even"),
            (Float(bitPattern: 0x7F7F_7FFF), 0x7F7F, "below the overflow midpoint: largest finite bf16"),
            (1e5, 0x47C3, "1e5 is fine in bf16 (8-bit exponent)"),
        ]
        let r = bf16(cases.map(\.0))
        XCTAssertNil(r.overflow)
        for (i, c) in cases.enumerated() {
            XCTAssertEqual(r.bits[i], c.1, "\(c.0) (\(String(c.0.bitPattern, radix: 16))): \(c.2)")
        }
    }

    /// NaN stays NaN, including a signalling NaN whose payload lies only in the low 16 bits
    /// (plain truncation would turn it into infinity), and is not reported as an overflow.
    func testBF16NaNStaysNaN() {
        let inputs: [Float] = [.nan, -.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFF80_0001), Float(bitPattern: 0x7FFF_FFFF)]
        let r = bf16(inputs)
        XCTAssertNil(r.overflow)
        for (i, b) in r.bits.enumerated() {
            XCTAssertTrue(Float(bitPattern: UInt32(b) << 16).isNaN, "\(String(inputs[i].bitPattern, radix: 16)) -> \(String(b, radix: 16))")
            XCTAssertEqual(b & 0x8000, UInt16(inputs[i].bitPattern >> 16) & 0x8000, "sign kept")
        }
    }

    /// Finite values that round to infinity are reported with the first index.
    func testBF16OverflowDetection() {
        let r = bf16([1, Float(bitPattern: 0x7F7F_8000), .greatestFiniteMagnitude, -.greatestFiniteMagnitude])
        XCTAssertEqual(r.overflow, 1, "the midpoint above the largest bf16 ties to even = infinity")
        XCTAssertEqual(r.bits[1], 0x7F80)
        XCTAssertEqual(r.bits[2], 0x7F80)
        XCTAssertEqual(r.bits[3], 0xFF80)
        XCTAssertEqual(bf16([2, -.greatestFiniteMagnitude]).overflow, 1, "negative overflow")
    }

    /// Infinite inputs convert to infinity but are not an overflow ("the first finite value
    /// that rounds to infinity", as toF16 does). Fails today: toBF16 flags any result
    /// 0x7F80/0xFF80, including an infinite input (see the bug report).
    func testBF16InfiniteInputIsNotAnOverflow() {
        let r = bf16([.infinity, -.infinity, 1])
        XCTAssertEqual(r.bits[0], 0x7F80)
        XCTAssertEqual(r.bits[1], 0xFF80)
        XCTAssertNil(r.overflow, "an infinite input is not a finite value that overflows")
    }

    /// Every bf16 value converts back to itself; midpoints between neighbours tie to even.
    func testBF16ExhaustiveRoundTripAndMidpoints() {
        var values: [Float] = [], expect: [UInt16] = []
        for h in UInt16(0)...UInt16(0x7F7F) {
            let a = Float(bitPattern: UInt32(h) << 16)
            values.append(a); expect.append(h)
            values.append(-a); expect.append(h | 0x8000)
            if h < 0x7F7F {
                let b = Float(bitPattern: UInt32(h + 1) << 16)
                let mid = a + (b - a) / 2   // exact (and no overflow near the top)
                values.append(mid); expect.append(h % 2 == 0 ? h : h + 1)
                values.append(mid.nextDown); expect.append(h)
                values.append(mid.nextUp); expect.append(h + 1)
            }
        }
        let r = bf16(values)
        XCTAssertNil(r.overflow)
        assertSameBits(values, r.bits, expect)
    }
}

final class QuantPolicyTests: XCTestCase {
    /// Representative DiCo tensors (names and shapes from Fixtures/tiny.safetensors) and the
    /// int8 default plan for each (DicoQuant/Policy.swift, README "Precision").
    let dico: [(name: String, shape: [Int], int8: StoragePlan)] = [
        ("encoder_level_1.0.conv1.weight", [24, 24, 1, 1], .int8PerChannel),        // 1x1 conv
        ("latent.0.conv5.weight", [96, 192, 1, 1], .int8PerChannel),                // 1x1 conv
        ("encoder_level_1.0.ca.1.weight", [24, 24, 1, 1], .int8PerChannel),         // channel attention 1x1
        ("down1_2.body.0.weight", [12, 24, 3, 3], .int8PerChannel),                 // dense 3x3 conv
        ("up3_2.body.0.weight", [192, 96, 3, 3], .int8PerChannel),
        ("encoder_level_1.0.conv2.weight", [24, 1, 3, 3], .f32),                    // depthwise
        ("latent.1.conv2.weight", [96, 1, 3, 3], .f32),                             // depthwise
        ("encoder_level_1.0.adaLN_modulation.1.weight", [144, 24], .int8PerChannel), // linear
        ("t_embedder_1.mlp.0.weight", [24, 256], .int8PerChannel),                  // linear
        ("final_layer.adaLN_modulation.1.weight", [96, 48], .int8PerChannel),
        ("encoder_level_1.0.conv1.bias", [24], .f32),                                // biases
        ("encoder_level_1.0.adaLN_modulation.1.bias", [144], .f32),
        ("final_layer.out_proj.bias", [8], .f32),
        ("y_embedder.embedding_table_0.weight", [11, 24], .f32),                    // embedding tables
        ("y_embedder.embedding_table_2.weight", [11, 96], .f32),
        ("x_embedder.proj.weight", [24, 4, 3, 3], .f32),                            // first layer
        ("final_layer.out_proj.weight", [8, 48, 3, 3], .f32),                        // last layer
    ]

    func testInt8DefaultPlans() {
        let p = QuantPolicy(precision: .int8)
        for t in dico {
            XCTAssertEqual(p.plan(name: t.name, shape: t.shape), t.int8, t.name)
        }
        XCTAssertEqual(QuantPolicy.int8DefaultKeep, ["x_embedder.proj.weight", "final_layer.out_proj.weight"])
    }

    func testFloatPrecisionsConvertEverything() {
        for (precision, plan) in [(Precision.fp16, StoragePlan.f16), (.bf16, .bf16), (.fp32, .f32)] {
            let p = QuantPolicy(precision: precision)
            for t in dico { XCTAssertEqual(p.plan(name: t.name, shape: t.shape), plan, "\(precision) \(t.name)") }
        }
    }

    func testKeepGlobs() throws {
        let keep = try ["encoder_level_1.*", "*.conv?.bias", "latent.[01].conv5.weight", "t_embedder_?.mlp.0.weight"].map(NamePattern.init)
        for precision in [Precision.int8, .fp16, .bf16] {
            let p = QuantPolicy(precision: precision, keep: keep)
            let other: StoragePlan = precision == .int8 ? .int8PerChannel : precision == .fp16 ? .f16 : .bf16
            XCTAssertEqual(p.plan(name: "encoder_level_1.0.conv1.weight", shape: [24, 24, 1, 1]), .f32, "\(precision)")
            XCTAssertEqual(p.plan(name: "encoder_level_1.1.adaLN_modulation.1.weight", shape: [144, 24]), .f32)
            XCTAssertEqual(p.plan(name: "latent.0.conv5.weight", shape: [96, 192, 1, 1]), .f32)
            XCTAssertEqual(p.plan(name: "latent.1.conv5.weight", shape: [96, 192, 1, 1]), .f32)
            XCTAssertEqual(p.plan(name: "t_embedder_3.mlp.0.weight", shape: [96, 256]), .f32)
            XCTAssertEqual(p.plan(name: "encoder_level_2.0.conv1.weight", shape: [48, 48, 1, 1]), other, "not matched")
            XCTAssertEqual(p.plan(name: "t_embedder_3.mlp.2.weight", shape: [96, 96]), other, "not matched")
            XCTAssertEqual(p.plan(name: "encoder_level_2.0.conv5.weight", shape: [48, 96, 1, 1]), other, "[01] is a class, not 5")
            if precision != .int8 {
                XCTAssertEqual(p.plan(name: "latent.0.conv4.bias", shape: [192]), .f32, "glob on biases")
                XCTAssertEqual(p.plan(name: "latent.0.ca.1.bias", shape: [96]), other)
            }
        }
        // A glob matches the whole name, not a part of it.
        let partial = QuantPolicy(precision: .int8, keep: [try NamePattern("conv1.weight")])
        XCTAssertEqual(partial.plan(name: "latent.0.conv1.weight", shape: [96, 96, 1, 1]), .int8PerChannel)
        XCTAssertTrue(try NamePattern("latent.0.conv1.weight").matches("latent.0.conv1.weight"))
        XCTAssertFalse(try NamePattern("latent.?.conv1.weight").matches("latent.10.conv1.weight"))
    }

    func testKeepRegexes() throws {
        let p = QuantPolicy(precision: .int8, keep: [try NamePattern(#"re:conv[45]\.weight$"#), try NamePattern("re:^decoder_level_2")])
        XCTAssertEqual(p.plan(name: "latent.0.conv4.weight", shape: [192, 96, 1, 1]), .f32)
        XCTAssertEqual(p.plan(name: "encoder_level_1.1.conv5.weight", shape: [24, 48, 1, 1]), .f32)
        XCTAssertEqual(p.plan(name: "latent.0.conv3.weight", shape: [96, 96, 1, 1]), .int8PerChannel)
        XCTAssertEqual(p.plan(name: "decoder_level_2.0.ca.1.weight", shape: [48, 48, 1, 1]), .f32)
        XCTAssertEqual(p.plan(name: "decoder_level_1.0.ca.1.weight", shape: [48, 48, 1, 1]), .int8PerChannel, "^ anchors")
        // Matched anywhere in the name (not anchored unless written so).
        XCTAssertTrue(try NamePattern("re:ca\\.1").matches("decoder_level_1.0.ca.1.weight"))
        XCTAssertFalse(try NamePattern("re:^ca\\.1").matches("decoder_level_1.0.ca.1.weight"))
        XCTAssertEqual(p.keepDescription, [#"re:conv[45]\.weight$"#, "re:^decoder_level_2"])
        // fp16 with a regex.
        let h = QuantPolicy(precision: .fp16, keep: [try NamePattern("re:embedding_table_[0-9]")])
        XCTAssertEqual(h.plan(name: "y_embedder.embedding_table_1.weight", shape: [11, 48]), .f32)
        XCTAssertEqual(h.plan(name: "x_embedder.proj.weight", shape: [24, 4, 3, 3]), .f16)
    }

    func testInvalidRegexIsAUsageError() {
        for text in ["re:conv[", "re:(unclosed", "re:*x"] {
            XCTAssertThrowsError(try NamePattern(text), text) { error in
                guard let e = error as? DicoError else { return XCTFail("not a DicoError: \(error)") }
                XCTAssertEqual(e.kind, .usage, text)
                XCTAssertEqual(e.exitCode, 64)
                XCTAssertTrue(e.message.contains("--keep '\(text)'"), e.message)
                XCTAssertTrue(e.message.contains("not a valid regular expression"), e.message)
            }
        }
        // An unbalanced bracket is only an error for a regex; as a glob it is just text.
        XCTAssertNoThrow(try NamePattern("conv["))
    }

}

/// Every rounded value equals its expected bit pattern; the first few mismatches are named.
func assertSameBits(_ values: [Float], _ bits: [UInt16], _ expect: [UInt16], file: StaticString = #filePath, line: UInt = #line) {
    var failures = 0
    for i in values.indices where bits[i] != expect[i] {
        failures += 1
        if failures < 10 { XCTFail("\(values[i]) -> \(String(bits[i], radix: 16)), expected \(String(expect[i], radix: 16))", file: file, line: line) }
    }
    XCTAssertEqual(failures, 0, file: file, line: line)
}
