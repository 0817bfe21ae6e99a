import DicoSafetensors
@testable import DicoVerify
import XCTest

/// The schedule and respacing against Fixtures/verify_schedule.safetensors (numpy, after ADM's
/// gaussian_diffusion.py and respace.py).
final class DiffusionTests: XCTestCase {
    func testRespacedIndicesMatchADM() throws {
        let f = try SafetensorsFile(path: fixture("verify_schedule.safetensors"))
        for s in ["250", "100", "10", "ddim25", "ddim50"] {
            let expected = try XCTUnwrap(f.tensor("indices_\(s)")?.int64s()).map { Int($0) }
            XCTAssertEqual(try Respacing(parsing: s).indices(), expected, s)
        }
        XCTAssertEqual(try Respacing(parsing: "250").indices().count, 250)
        XCTAssertThrowsError(try Respacing(parsing: "ddim999").indices(), "strides 1 and 2 give 1000 and 500 steps: none gives 999")
        XCTAssertEqual(try Respacing(parsing: "ddim7").indices().count, 7)
        XCTAssertThrowsError(try Respacing(parsing: "0"))
        XCTAssertThrowsError(try Respacing(parsing: "fast"))
    }

    /// float64 on both sides, the same formulas: 1e-12 relative is rounding (cumulative
    /// products over 1000 factors), a wrong coefficient is off by far more.
    func testScheduleMatchesADM() throws {
        let f = try SafetensorsFile(path: fixture("verify_schedule.safetensors"))
        func close(_ a: [Double], _ b: [Double], _ what: String) {
            XCTAssertEqual(a.count, b.count, what)
            for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-12 * max(abs(y), 1e-300), what) }
        }
        close(DiffusionSchedule.linearBetas(), try doubles(f, "betas"), "betas")
        let s = try DiffusionSchedule(respacing: .even(10))
        close(s.betas, try doubles(f, "r10_betas"), "respaced betas")
        close(s.alphasCumprod, try doubles(f, "r10_alphas_cumprod"), "alphas_cumprod")
        close(s.posteriorLogVarianceClipped, try doubles(f, "r10_posterior_log_variance_clipped"), "posterior log variance")
        close(s.posteriorMeanCoef1, try doubles(f, "r10_posterior_mean_coef1"), "coef1")
        close(s.posteriorMeanCoef2, try doubles(f, "r10_posterior_mean_coef2"), "coef2")
        XCTAssertEqual(s.timestepMap, try Respacing.even(10).indices())
    }

    func testGaussianNoiseIsStandardNormalAndSeeded() {
        var a = GaussianNoise(seed: 1), b = GaussianNoise(seed: 1), c = GaussianNoise(seed: 2)
        let x = a.next(20_000)
        XCTAssertEqual(x, b.next(10_000) + b.next(10_000), "the stream does not depend on how it is drawn")
        XCTAssertNotEqual(Array(x.prefix(10)), c.next(10))
        let mean = x.reduce(0, +) / Double(x.count)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(x.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03, "4 standard errors of 20000 draws")
        XCTAssertEqual(variance, 1, accuracy: 0.04)
    }
}
