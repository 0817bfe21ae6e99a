import DicoSafetensors
@testable import DicoVerify
import XCTest

final class FrechetTests: XCTestCase {
    /// `rows` rows of `d` values (a d x d matrix by default).
    func matrix(_ v: [Double], _ d: Int, rows: Int? = nil) -> [[Double]] { (0..<(rows ?? d)).map { Array(v[($0 * d)..<(($0 + 1) * d)]) } }

    /// Against scipy.linalg.sqrtm(s1 s2) on two random 6-dimensional Gaussians, the closed form
    /// for commuting (diagonal) covariances, and numpy.cov fits of two 40-sample sets. Both
    /// sides are float64 square roots of well-conditioned matrices (eigenvalues above 0.5):
    /// 1e-9 relative is their rounding with room; a wrong formula is off by order 1.
    func testMatchesScipyAndClosedForm() throws {
        let f = try SafetensorsFile(path: fixture("verify_frechet.safetensors"))
        let e = try expectedNumbers(f)
        let d = 6
        let fd = Frechet.distance(mean1: try doubles(f, "mu1"), cov1: matrix(try doubles(f, "s1"), d),
                                  mean2: try doubles(f, "mu2"), cov2: matrix(try doubles(f, "s2"), d))
        XCTAssertEqual(fd, e["general"]!, accuracy: 1e-9 * e["general"]!)
        let da = try doubles(f, "diag1"), db = try doubles(f, "diag2")
        func diag(_ v: [Double]) -> [[Double]] { (0..<d).map { i in (0..<d).map { j in i == j ? v[i] : 0 } } }
        let fdDiag = Frechet.distance(mean1: try doubles(f, "mu1"), cov1: diag(da), mean2: try doubles(f, "mu2"), cov2: diag(db))
        XCTAssertEqual(fdDiag, e["diagonal"]!, accuracy: 1e-12 * e["diagonal"]!)
        let x = try doubles(f, "x"), y = try doubles(f, "y")
        let fdSets = Frechet.distance(matrix(x, d, rows: 40), matrix(y, d, rows: 40))
        XCTAssertEqual(fdSets, e["sets"]!, accuracy: 1e-9 * e["sets"]!)
    }

    func testIdenticalSetsHaveZeroDistanceEvenWhenSingular() {
        // 3 samples of 24 features: a rank-2 covariance, where sqrtm(s1 s2) is ill-defined.
        let rows = (0..<3).map { i in (0..<24).map { j in sin(Double(i * 24 + j)) } }
        XCTAssertEqual(Frechet.distance(rows, rows), 0, accuracy: 1e-9)
        let shifted = rows.map { $0.map { $0 + 0.5 } }
        XCTAssertEqual(Frechet.distance(rows, shifted), 24 * 0.25, accuracy: 1e-9, "a pure mean shift costs |d mu|^2")
    }

    func testEigenReconstructs() {
        let a: [[Double]] = [[4, 1, 0.5], [1, 3, 0.2], [0.5, 0.2, 1]]
        let (vals, vecs) = Frechet.symmetricEigen(a)
        for i in 0..<3 {
            for j in 0..<3 {
                let r = (0..<3).reduce(0.0) { $0 + vecs[i][$1] * vals[$1] * vecs[j][$1] }
                XCTAssertEqual(r, a[i][j], accuracy: 1e-13)
            }
        }
        XCTAssertEqual(vals.reduce(0, +), 8, accuracy: 1e-13)
    }

    func testFeatures() {
        // One 2x4 channel: mean, std, then the quadrant means (rows split 1/1, columns 2/2).
        let x: [Double] = [1, 2, 3, 4, 5, 6, 7, 8]
        let f = Frechet.features(x[...], channels: 1, height: 2, width: 4)
        XCTAssertEqual(f, [4.5, (5.25 as Double).squareRoot(), 1.5, 3.5, 5.5, 7.5])
    }
}
