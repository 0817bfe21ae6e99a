import Foundation
import XCTest

/// The pass options of the convert command, through real processes.
final class PassesCLITests: CLITestCase {
    func inspectJSON(_ path: String) throws -> [String: Any] {
        let r = try dicoConvert(["inspect", path, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any])
    }

    func testDefaultPipelineFusesAndRecordsItsPasses() throws {
        let out = "\(outDir!)/opt.dico"
        XCTAssertEqual(try dicoConvert([tiny, out, "--quiet"]).status, 0)
        let j = try inspectJSON(out)
        let ops = try XCTUnwrap(j["ops"] as? [String: Int])
        XCTAssertEqual(ops["layer_norm_modulate"], 17)
        XCTAssertEqual(ops["timestep_embedding"], 1)
        XCTAssertEqual(j["nodes"] as? Int, ops.values.reduce(0, +))
        let prov = try XCTUnwrap(j["provenance"] as? [String: Any])
        XCTAssertEqual(prov["passes"] as? [String], ["eliminate-common-subexpressions", "fold-adaln-linears", "fold-reduce-chan",
                                                     "fuse-layer-norm-modulate", "fuse-channel-attention", "fuse-conv-activation",
                                                     "fuse-conv-gated-add"])
        XCTAssertEqual(ops["silu"], 6, "one SiLU per conditioning vector and per timestep MLP")
        XCTAssertEqual(ops["linear"], 7, "one adaLN GEMM per conditioning vector, one for the three MLPs' first linears, their three second ones")
        XCTAssertEqual(ops["conv2d_activation"], 16, "conv2 and conv4 of the 8 blocks; ca.1's sigmoid is in the channel attention")
        XCTAssertEqual(ops["channel_attention"], 8)
        XCTAssertEqual(ops["conv2d_gated_add"], 16, "conv3 and conv5 of the 8 blocks")
        XCTAssertNil(ops["gated_add"])
    }

    func testNoOptimizeWritesTheImportedGraph() throws {
        let out = "\(outDir!)/plain.dico"
        XCTAssertEqual(try dicoConvert([tiny, out, "--quiet", "--no-optimize"]).status, 0)
        let j = try inspectJSON(out), src = try inspectJSON(tiny)
        XCTAssertEqual(j["nodes"] as? Int, src["nodes"] as? Int)
        XCTAssertEqual((j["provenance"] as? [String: Any])?["passes"] as? [String], [])
    }

    func testPassesAndSkipPassChooseThePipeline() throws {
        let a = "\(outDir!)/a.dico", b = "\(outDir!)/b.dico"
        XCTAssertEqual(try dicoConvert([tiny, a, "--quiet", "--passes", "fuse-layer-norm-modulate"]).status, 0)
        XCTAssertEqual(try dicoConvert([tiny, b, "--quiet", "--skip-pass", "fuse-layer-norm-modulate", "--check-passes"]).status, 0)
        let opsA = try XCTUnwrap(try inspectJSON(a)["ops"] as? [String: Int]), opsB = try XCTUnwrap(try inspectJSON(b)["ops"] as? [String: Int])
        XCTAssertEqual(opsA["layer_norm_modulate"], 17)
        XCTAssertEqual(opsA["timestep_embedding"], 3)
        XCTAssertNil(opsB["layer_norm_modulate"])
        XCTAssertEqual(opsB["timestep_embedding"], 1)
    }

    func testDumpIRAfterAPass() throws {
        let r = try dicoConvert([tiny, "\(outDir!)/d.dico", "--quiet", "--dump-ir-after", "fuse-layer-norm-modulate"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("graph {"))
        XCTAssertTrue(r.stdout.contains("layer_norm_modulate("))
        XCTAssertFalse(r.stdout.contains("channel_layer_norm("))
    }

    func testUnknownPassIsAUsageErrorAndWritesNothing() throws {
        for args in [["--passes", "fold-everything"], ["--skip-pass", "nope"], ["--dump-ir-after", "nope"]] {
            let r = try dicoConvert([tiny, "\(outDir!)/x.dico", "--quiet"] + args)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("unknown pass"), r.stderr)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outDir), [])
    }
}
