import DicoSafetensors
@testable import DicoVerify
import XCTest

final class MetricsTests: XCTestCase {
    func testIdenticalArraysHaveZeroDrift() {
        let a: [Float] = [1, -2, 3.5, 0, 1e-3]
        XCTAssertEqual(Drift(candidate: a, reference: a), .zero)
        XCTAssertEqual(psnrDB(candidate: a, reference: a), .infinity)
    }

    func testEdgeCases() {
        let zero: [Float] = [0, 0], one: [Float] = [1, 0]
        XCTAssertEqual(Drift(candidate: zero, reference: zero), .zero)
        let d = Drift(candidate: one, reference: zero)
        XCTAssertEqual(d.relativeL2, .infinity)
        XCTAssertEqual(d.cosine, 0)
        XCTAssertEqual(d.maxAbs, 1)
        let neg = Drift(candidate: [Float](arrayLiteral: -1, -2), reference: [Float](arrayLiteral: 1, 2))
        XCTAssertEqual(neg.cosine, -1, accuracy: 1e-15)
        XCTAssertEqual(neg.relativeL2, 2, accuracy: 1e-15)
    }

    /// A seeded perturbation of relative size 1e-2, against numpy float64 on the same float32
    /// values (Fixtures/make_verify_fixtures.py). Both sides sum 4096 float64 products in a
    /// different order: agreement to 1e-12 relative is rounding, anything worse is a bug.
    func testPerturbationMatchesNumpy() throws {
        let f = try SafetensorsFile(path: fixture("verify_metrics.safetensors"))
        let ref = try doubles(f, "reference").map { Float($0) }, cand = try doubles(f, "candidate").map { Float($0) }
        let e = try expectedNumbers(f)
        let d = Drift(candidate: cand, reference: ref)
        let tol = 1e-12
        XCTAssertEqual(d.relativeL2, e["rel_l2"]!, accuracy: tol * e["rel_l2"]!)
        XCTAssertEqual(d.relativeL2, 1e-2, accuracy: 1e-6, "the perturbation was made with relative size 1e-2")
        XCTAssertEqual(d.cosine, e["cosine"]!, accuracy: tol)
        XCTAssertEqual(d.sqnrDB, e["sqnr_db"]!, accuracy: tol * 100)
        XCTAssertEqual(d.sqnrDB, -20 * log10(d.relativeL2), accuracy: 1e-9)
        XCTAssertEqual(d.maxAbs, e["max_abs"]!, accuracy: 0, "max abs is one float32 difference widened exactly")
        XCTAssertEqual(psnrDB(candidate: cand, reference: ref), e["psnr_db"]!, accuracy: tol * 100)
    }
}
