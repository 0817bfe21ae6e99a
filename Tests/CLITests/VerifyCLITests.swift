import DicoCore
import DicoSafetensors
import Foundation
import XCTest

/// `verify` and `convert --verify` through real processes on the tiny fixture. Settings are cut
/// down (8x8 trajectories, 3 samples, 5 steps) so that each run takes about a second in debug.
final class VerifyCLITests: CLITestCase {
    let small = ["--quick", "--size", "8", "--samples", "3", "--steps", "5", "--threads", "2"]

    /// A copy of tiny with final_layer.out_proj (weight and bias) scaled by 1.1.
    func outputScaled() throws -> String {
        let f = try SafetensorsFile(path: tiny)
        let path = dir.file("tiny-outscale.safetensors")
        try SafetensorsWriter.write(f.names.map { n in
            let t = f.tensor(n)!
            return (n, n.hasPrefix("final_layer.out_proj.") ? f32Copy(t) { v in v = v.map { $0 * 1.1 } } : t)
        }, metadata: f.metadata, to: path, overwrite: false)
        return path
    }

    func json(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: try XCTUnwrap(readBytes(path))) as? [String: Any])
    }

    func testIdenticalModelsPassWithAJSONReport() throws {
        let report = outDir + "/r.json"
        let r = try dicoConvert(["verify", tiny, tiny, "--json", report] + small)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout.split(separator: "\n").last, "verdict: PASS")
        XCTAssertTrue(r.stdout.contains("latent-space Fréchet distance, not Inception FID"))
        let j = try json(report)
        XCTAssertEqual(j["passed"] as? Bool, true)
        XCTAssertEqual(j["format"] as? String, "dico-verify-report")
        let gates = try XCTUnwrap(j["gates"] as? [[String: Any]])
        XCTAssertEqual(gates.count, 9)
        XCTAssertTrue(gates.allSatisfy { $0["passed"] as? Bool == true })
        let probes = try XCTUnwrap(j["probes"] as? [[String: Any]])
        XCTAssertEqual(probes.map { $0["timestep"] as? Int }, [0, 500, 999])
        XCTAssertNotNil((j["thresholds"] as? [String: Any])?["frechet_ratio_max"])
        XCTAssertEqual(((j["settings"] as? [String: Any])?["sampler"] as? [String: Any])?["steps"] as? String, "5")
        XCTAssertEqual(entries(outDir), ["r.json"])
    }

    func testCorruptionFailsWithStatus1() throws {
        let bad = try outputScaled()
        let r = try dicoConvert(["verify", tiny, bad] + small)
        XCTAssertEqual(r.status, 1, r.stderr)
        let last = String(r.stdout.split(separator: "\n").last ?? "")
        XCTAssertTrue(last.hasPrefix("verdict: FAIL (probe_eps_rel_l2_max"), last)
    }

    func testErrorsHaveTheirStatus() throws {
        let mismatch = try dicoConvert(["verify", tiny, fixture("tiny_r4.safetensors")] + small)
        XCTAssertEqual(mismatch.status, 65)
        XCTAssertTrue(mismatch.stderr.contains("are not the same architecture and configuration; they differ in hidden_size: 24 vs 16"), mismatch.stderr)
        XCTAssertEqual(try dicoConvert(["verify", tiny, dir.file("missing.safetensors")] + small).status, 74)
        XCTAssertEqual(try dicoConvert(["verify", tiny, tiny, "--sampler", "euler"]).status, 64)
        XCTAssertEqual(try dicoConvert(["verify", tiny, tiny, "--threshold", "nope=1"]).status, 64)
        XCTAssertEqual(try dicoConvert(["verify", tiny]).status, 64)
        XCTAssertEqual(try dicoConvert(["verify", "--golden", fixture("tiny_verify_golden.safetensors"), tiny, "--steps", "9"]).status, 64)
        XCTAssertEqual(try dicoConvert(["verify", "--golden", tiny, tiny]).status, 65, "a model is not a golden record")
    }

    /// The committed golden record of the fixture (made with `verify --record-golden
    /// Fixtures/tiny_verify_golden.safetensors Fixtures/tiny.safetensors --quick --size 8
    /// --samples 3 --steps 5`): the fixture still matches it and its int8 conversion passes.
    func testCommittedGoldenRecord() throws {
        let golden = fixture("tiny_verify_golden.safetensors")
        let same = try dicoConvert(["verify", "--golden", golden, tiny, "--threads", "2"])
        XCTAssertEqual(same.status, 0, same.stdout + same.stderr)
        XCTAssertTrue(same.stdout.contains("(golden record)"))
        let int8 = outDir + "/t.dico"
        XCTAssertEqual(try dicoConvert([tiny, int8, "--int8", "--quiet"]).status, 0)
        XCTAssertEqual(try dicoConvert(["verify", "--golden", golden, int8]).status, 0)
        XCTAssertEqual(try dicoConvert(["verify", "--golden", golden, try outputScaled()]).status, 1)
    }

    func testRecordGoldenThenCompare() throws {
        let golden = outDir + "/g.safetensors"
        let rec = try dicoConvert(["verify", "--record-golden", golden, tiny] + small)
        XCTAssertEqual(rec.status, 0, rec.stderr)
        XCTAssertEqual(try dicoConvert(["verify", "--record-golden", golden, tiny] + small).status, 64, "no overwrite without --force")
        XCTAssertEqual(try dicoConvert(["verify", "--golden", golden, tiny]).status, 0)
        XCTAssertEqual(entries(outDir), ["g.safetensors"])
    }

    func testConvertVerifyRecordsTheSummaryOrWritesNothing() throws {
        let out = outDir + "/t.dico"
        let ok = try dicoConvert([tiny, out, "--int8", "--verify"] + small)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("verdict: PASS"))
        XCTAssertEqual(entries(outDir), ["t.dico"], "the intermediate is gone")
        let inspect = try dicoConvert(["inspect", out, "--json"])
        let prov = try XCTUnwrap((JSONSerialization.jsonObject(with: inspect.stdoutData) as? [String: Any])?["provenance"] as? [String: Any])
        let v = try XCTUnwrap(prov["verification"] as? [String: Any])
        XCTAssertEqual(v["passed"] as? Bool, true)
        XCTAssertNotNil((v["gates"] as? [String: Any])?["probe_eps_rel_l2_max"])

        // A threshold no int8 conversion meets: nothing is written, unless --keep-on-fail.
        let strict = ["--threshold", "probe_eps_rel_l2_max=1e-9"]
        let failed = try dicoConvert([tiny, outDir + "/f.dico", "--int8", "--verify"] + small + strict)
        XCTAssertEqual(failed.status, 1)
        XCTAssertTrue(failed.stderr.contains("was not written"), failed.stderr)
        XCTAssertEqual(entries(outDir), ["t.dico"])
        let kept = try dicoConvert([tiny, outDir + "/k.dico", "--int8", "--verify", "--keep-on-fail"] + small + strict)
        XCTAssertEqual(kept.status, 1)
        XCTAssertEqual(entries(outDir), ["k.dico", "t.dico"])
        XCTAssertEqual(try dicoConvert([tiny, outDir + "/x.dico", "--keep-on-fail"]).status, 64, "--keep-on-fail needs --verify")
    }
}
