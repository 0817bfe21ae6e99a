import DicoTestSupport
import Foundation
import XCTest

final class BenchCLITests: CLITestCase {
    /// `bench --plan-fusion` turns on the executor's execution-plan fusion: the JSON line says so
    /// and the profile shows the tiny model's conv1 -> conv2 pairs under the fused label;
    /// without the flag neither.
    func testPlanFusionFlag() throws {
        for fusion in [false, true] {
            let r = try dicoConvert(["bench", tiny, "--batch", "2", "--size", "8", "--runs", "1", "--threads", "2", "--profile"]
                                        + (fusion ? ["--plan-fusion"] : []))
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stdout.contains("\"plan_fusion\":\(fusion)"), r.stdout)
            XCTAssertEqual(r.stderr.contains("conv2d 1x1 + conv2d 3x3 grouped (fused)"), fusion, r.stderr)
        }
    }
}
