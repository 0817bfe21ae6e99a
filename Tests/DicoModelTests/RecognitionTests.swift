import XCTest
import DicoCore
import DicoModel

/// Zero-filled float32 tensors of `config`'s expected shapes, in state-dict order.
func zeroStateDict(_ config: DiCoConfig, prefix: String = "") -> [(name: String, data: TensorData)] {
    config.expectedTensors.map { e in
        let n = e.shape.reduce(1, *)
        return (prefix + e.name, TensorData(dtype: .f32, shape: e.shape, storage: .owned(OwnedBytes(count: n * 4)), byteCount: n * 4))
    }
}

final class PresetTests: XCTestCase {
    /// The exact counts of DICO_MODEL.md: they prove the builder knows every tensor.
    func testParameterCountsAreExactForEveryPreset() {
        XCTAssertEqual(DiCoPreset.S.config.parameterCount, 33_137_672)
        XCTAssertEqual(DiCoPreset.B.config.parameterCount, 129_992_712)
        XCTAssertEqual(DiCoPreset.L.config.parameterCount, 463_897_992)
        XCTAssertEqual(DiCoPreset.XL.config.parameterCount, 701_151_368)
        // DiCo-H is given only as "about 1.04 B".
        let h = DiCoPreset.H.config.parameterCount
        XCTAssertTrue((1_035_000_000...1_045_000_000).contains(h), "DiCo-H has \(h) parameters")
    }

    /// Recognition from zero-weight files of each preset's shapes names the preset and
    /// counts its parameters from the shapes actually present.
    func testEveryPresetIsRecognizedFromShapes() throws {
        for p in DiCoPreset.allCases {
            let shapes = Dictionary(uniqueKeysWithValues: p.config.expectedTensors.map { ($0.name, $0.shape) })
            let inferred = try DiCoRecognizer.inferConfig(shapes: shapes, file: "x.safetensors")
            XCTAssertEqual(inferred, p.config, "\(p)")
            XCTAssertEqual(inferred.preset, p)
            XCTAssertEqual(shapes.values.reduce(0) { $0 + $1.reduce(1, *) }, p.config.parameterCount)
        }
    }

    func testPresetNamesParse() {
        XCTAssertEqual(DiCoPreset(name: "xl"), .XL)
        XCTAssertEqual(DiCoPreset(name: "DiCo-S"), .S)
        XCTAssertNil(DiCoPreset(name: "XXL"))
    }
}

final class RecognitionTests: XCTestCase {
    let small = DiCoConfig(hidden: 8, depths: [1, 2, 1, 0, 1], mlpRatio: 3, numClasses: 5)

    func testCustomConfigIsInferred() throws {
        let w = try DiCoRecognizer.recognize(zeroStateDict(small), file: "m.safetensors")
        XCTAssertEqual(w.config, small)
        XCTAssertNil(w.config.preset)
        XCTAssertEqual(w.tensors.count, small.expectedTensors.count)
    }

    func testTrainingPrefixesAreStripped() throws {
        for prefix in ["module.", "model.", "ema.", "module.ema."] {
            let w = try DiCoRecognizer.recognize(zeroStateDict(small, prefix: prefix), file: "m.safetensors")
            XCTAssertEqual(w.config, small, prefix)
            XCTAssertEqual(w.strippedPrefix, prefix)
        }
    }

    /// A checkpoint with both copies samples with the EMA weights.
    func testEMACopyWinsOverModelCopy() throws {
        let both = zeroStateDict(small, prefix: "model.") + zeroStateDict(small, prefix: "ema.")
        let w = try DiCoRecognizer.recognize(both, file: "m.safetensors")
        XCTAssertEqual(w.strippedPrefix, "ema.")
        XCTAssertTrue(w.notes.joined().contains("'model.'"))
    }

    /// Every offending tensor is listed in one message, not just the first.
    func testAllProblemsAreListedTogether() {
        var dict = zeroStateDict(small)
        dict.removeAll { $0.name == "encoder_level_2.1.conv3.bias" || $0.name == "up2_1.body.0.weight" }
        dict.append((name: "extra.weight", data: TensorData(shape: [2], floats: [1, 2])))
        let i = dict.firstIndex { $0.name == "latent.0.conv2.weight" }!
        dict[i] = (name: dict[i].name, data: TensorData(shape: [32, 1, 3, 1], floats: [Float](repeating: 0, count: 96)))
        let j = dict.firstIndex { $0.name == "final_layer.out_proj.bias" }!
        dict[j] = (name: dict[j].name, data: TensorData(shape: [8], int64s: [Int64](repeating: 0, count: 8)))
        XCTAssertThrowsError(try DiCoRecognizer.recognize(dict, file: "bad.safetensors")) { e in
            let err = e as! DicoError
            XCTAssertEqual(err.kind, .invalidInput)
            XCTAssertTrue(err.message.hasPrefix("bad.safetensors: "), err.message)
            XCTAssertTrue(err.message.contains("5 problems"), err.message)
            for needle in ["missing tensor 'encoder_level_2.1.conv3.bias'", "missing tensor 'up2_1.body.0.weight'",
                           "unexpected tensor 'extra.weight'", "tensor 'latent.0.conv2.weight' has shape [32, 1, 3, 1], expected [32, 1, 3, 3]",
                           "tensor 'final_layer.out_proj.bias' has dtype I64, expected a float type"] {
                XCTAssertTrue(err.message.contains(needle), "missing '\(needle)' in \(err.message)")
            }
        }
    }

    func testNaNAndInfAreReportedByName() {
        var dict = zeroStateDict(small)
        for (k, bad) in [("encoder_level_1.0.conv1.weight", Float.nan), ("decoder_level_1.0.conv5.bias", Float.infinity)] {
            let i = dict.firstIndex { $0.name == k }!
            var v = [Float](repeating: 0, count: dict[i].data.elementCount)
            v[v.count - 1] = bad
            dict[i] = (name: k, data: TensorData(shape: dict[i].data.shape, floats: v))
        }
        XCTAssertThrowsError(try DiCoRecognizer.recognize(dict, file: "nan.safetensors")) { e in
            let m = (e as! DicoError).message
            XCTAssertTrue(m.contains("2 problems"), m)
            XCTAssertTrue(m.contains("tensor 'encoder_level_1.0.conv1.weight' holds NaN or Inf"), m)
            XCTAssertTrue(m.contains("tensor 'decoder_level_1.0.conv5.bias' holds NaN or Inf"), m)
        }
    }

    func testHalfPrecisionNonFiniteIsDetected() {
        let inf16 = TensorData(dtype: .f16, shape: [1], storage: .owned(OwnedBytes(copying: UnsafeRawBufferPointer(start: [UInt16(0x7C00)], count: 2))), byteCount: 2)
        let one16 = TensorData(dtype: .bf16, shape: [1], storage: .owned(OwnedBytes(copying: UnsafeRawBufferPointer(start: [UInt16(0x3F80)], count: 2))), byteCount: 2)
        XCTAssertFalse(DiCoRecognizer.allFinite(inf16))
        XCTAssertTrue(DiCoRecognizer.allFinite(one16))
    }

    /// Zero-byte tensors may declare huge dimensions; the configuration they imply must be
    /// refused before any size arithmetic on it can overflow.
    func testAbsurdShapesAreRefusedNotATrap() {
        var dict = zeroStateDict(small)
        let i = dict.firstIndex { $0.name == "x_embedder.proj.weight" }!
        dict[i] = (name: dict[i].name, data: TensorData(dtype: .f32, shape: [1 << 62, 0, 3, 3], storage: .owned(OwnedBytes(count: 0)), byteCount: 0))
        XCTAssertThrowsError(try DiCoRecognizer.recognize(dict, file: "absurd.safetensors")) { e in
            XCTAssertTrue("\(e)".contains("hidden size 4611686018427387904 is outside"), "\(e)")
        }
    }

    func testNonDiCoFileIsRefusedWithTheAnchorsNamed() {
        XCTAssertThrowsError(try DiCoRecognizer.recognize([(name: "fc.weight", data: TensorData(shape: [1], floats: [1]))], file: "other.safetensors")) { e in
            let m = (e as! DicoError).message
            XCTAssertTrue(m.contains("not a DiCo state dict: missing 'x_embedder.proj.weight'"), m)
        }
    }
}
