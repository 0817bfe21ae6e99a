import DicoTestSupport
import DicoConversion
import DicoCore
import DicoModel
import DicoQuant
@testable import DicoVerify
import XCTest

/// Whole verifications of the tiny fixture through the real executor.
final class VerifierTests: XCTestCase {
    let tiny = fixture("tiny.safetensors")

    func verify(_ candidate: String, settings: VerifySettings = tinySettings()) throws -> VerifyResult {
        let a = try VerifyModels.open(tiny, threads: 2), b = try VerifyModels.open(candidate, threads: 2)
        return try Verifier.verify(original: a, candidate: b, settings: settings, thresholds: Thresholds())
    }

    func testIdenticalModelsHaveZeroDriftAndPass() throws {
        for kind in SamplerKind.allCases {
            let r = try verify(tiny, settings: tinySettings(kind: kind))
            XCTAssertTrue(r.passed, r.text)
            for p in r.probes { XCTAssertEqual(p.eps, .zero); XCTAssertEqual(p.variance, .zero) }
            XCTAssertEqual(r.stepDrift.count, 5)
            XCTAssertTrue(r.stepDrift.allSatisfy { $0.relativeL2 == 0 })
            XCTAssertEqual(r.final, .zero)
            XCTAssertEqual(r.frechet, 0)
            XCTAssertGreaterThan(r.floorFrechet, 0, "two independent sets differ")
            XCTAssertEqual(r.probes.map(\.timestep), [0, 500, 999])
        }
    }

    func testConversionsPassAndCorruptionsFail() throws {
        let dir = try TempDir(prefix: "dico-verify", removeOnDeinit: true)
        for p in [Precision.fp16, .int8] {
            let out = dir.file("tiny-\(p.rawValue).dico")
            _ = try Converter.convert(input: tiny, output: out, options: ConversionOptions(precision: p, threads: 2, overwrite: false, toolVersion: "test"))
            let r = try verify(out)
            XCTAssertTrue(r.passed, "\(p.rawValue):\n\(r.text)")
            XCTAssertGreaterThan(r.probes.map(\.eps.relativeL2).max()!, 0)
        }
        for c in Corruption.allCases {
            let out = dir.file("tiny-\(c).safetensors")
            try corruptedCopy(of: tiny, to: out, edit: c.apply)
            let r = try verify(out)
            XCTAssertFalse(r.passed, "\(c) must fail:\n\(r.text)")
            XCTAssertFalse(r.gates.first { $0.name == "probe_eps_rel_l2_max" }!.passed, "\(c): the probes alone catch it")
        }
    }

    /// The executor is thread-count independent, so the whole report is too.
    func testResultsDoNotDependOnThreads() throws {
        let dir = try TempDir(prefix: "dico-verify", removeOnDeinit: true)
        let out = dir.file("t.dico")
        _ = try Converter.convert(input: tiny, output: out, options: ConversionOptions(precision: .int8, threads: 2, overwrite: false, toolVersion: "test"))
        func run(_ threads: Int) throws -> VerifyResult {
            try Verifier.verify(original: VerifyModels.open(tiny, threads: threads), candidate: VerifyModels.open(out, threads: threads),
                                settings: tinySettings(), thresholds: Thresholds())
        }
        let a = try run(1), b = try run(3)
        XCTAssertEqual(a.gates.map(\.value), b.gates.map(\.value))
        XCTAssertEqual(a.probes.map(\.eps), b.probes.map(\.eps))
        XCTAssertEqual(a.stepDrift.map(\.relativeL2), b.stepDrift.map(\.relativeL2))
    }

    func testArchitectureMismatchIsRefused() throws {
        let a = try VerifyModels.open(tiny, threads: 1), b = try VerifyModels.open(fixture("tiny_r4.safetensors"), threads: 1)
        XCTAssertThrowsError(try Verifier.verify(original: a, candidate: b, settings: tinySettings(), thresholds: Thresholds(),
                                                 originalName: "A", candidateName: "B")) { e in
            let err = e as? DicoError
            XCTAssertEqual(err?.kind, .invalidInput)
            XCTAssertEqual(err?.message, "A and B are not the same architecture and configuration; they differ in hidden_size: 24 vs 16; "
                           + "depths: [2, 1, 2, 1, 2] vs [1, 1, 1, 1, 1]; mlp_ratio: 2 vs 4; num_classes: 10 vs 7")
        }
    }

    func testGoldenRecordRoundTrip() throws {
        let dir = try TempDir(prefix: "dico-verify", removeOnDeinit: true)
        let path = dir.file("tiny.golden.safetensors")
        let model = try VerifyModels.open(tiny, threads: 2)
        let recorded = try Golden.record(model, settings: tinySettings(), to: path, overwrite: false)
        let read = try Golden.read(path)
        XCTAssertEqual(read.settings, tinySettings())
        XCTAssertEqual(read.config, model.config)
        XCTAssertEqual(read.floorFrechet, recorded.floorFrechet)
        XCTAssertEqual(read.stepLatents.map(\.step), [0, 1, 2, 3, 4], "5 steps: every one is kept")
        let same = try Verifier.compare(reference: read, candidate: model, thresholds: Thresholds(), golden: true)
        XCTAssertTrue(same.passed, same.text)
        XCTAssertEqual(same.final, .zero)
        XCTAssertEqual(same.probes.map(\.eps), [Drift](repeating: .zero, count: 3))
        let bad = dir.file("bad.safetensors")
        try corruptedCopy(of: tiny, to: bad, edit: Corruption.outputScale.apply)
        let r = try Verifier.compare(reference: read, candidate: try VerifyModels.open(bad, threads: 2), thresholds: Thresholds(), golden: true)
        XCTAssertFalse(r.passed)
        XCTAssertThrowsError(try Golden.read(tiny)) { e in
            XCTAssertEqual((e as? DicoError)?.message, "\(tiny): not a golden record: no 'dico.verify.golden' metadata")
        }
    }

    func testThresholds() throws {
        var t = Thresholds()
        try t.apply(flag: "final_psnr_min_db=12.5")
        XCTAssertEqual(t["final_psnr_min_db"], 12.5)
        XCTAssertThrowsError(try t.apply(flag: "nope=1")) { XCTAssertEqual(($0 as? DicoError)?.kind, .usage) }
        XCTAssertThrowsError(try t.apply(flag: "final_psnr_min_db")) { XCTAssertEqual(($0 as? DicoError)?.kind, .usage) }
        let dir = try TempDir(prefix: "dico-verify", removeOnDeinit: true)
        let file = dir.file("t.json")
        try #"{"probe_eps_rel_l2_max": 0.25, "frechet_ratio_max": 2}"#.write(toFile: file, atomically: true, encoding: .utf8)
        try t.apply(file: file)
        XCTAssertEqual(t["probe_eps_rel_l2_max"], 0.25)
        XCTAssertEqual(t["frechet_ratio_max"], 2)
        XCTAssertEqual(t["final_psnr_min_db"], 12.5, "a file leaves other thresholds alone")
        try #"{"probe_eps": 1}"#.write(toFile: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try t.apply(file: file)) { XCTAssertEqual(($0 as? DicoError)?.kind, .invalidInput) }
        XCTAssertTrue(t.passes("probe_eps_rel_l2_max", 0.25))
        XCTAssertFalse(t.passes("probe_eps_rel_l2_max", .nan))
        XCTAssertFalse(t.passes("final_psnr_min_db", .nan))
    }
}
