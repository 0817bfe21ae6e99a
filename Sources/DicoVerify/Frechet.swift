/// A latent-space Fréchet distance between two sample sets: both sets are summarized by
/// pooled features, each set's features are fitted with a Gaussian, and the Fréchet (2-
/// Wasserstein) distance between the Gaussians is computed. This is not Inception FID: no image
/// network is involved, the latents are not decoded. It says whether the candidate's samples
/// are distributed like the original's, against the noise floor of two original sets.
public enum Frechet {
    /// The pooled features of one latent [C, H, W]: for each channel, its spatial mean, its
    /// spatial standard deviation (biased) and the means of its four quadrants (H/2 x W/2
    /// blocks, row-major), so 6 C values (24 for DiCo's 4 latent channels), ordered channel
    /// by channel. Means and stds capture the global statistics a VAE decodes into colour and
    /// contrast; the quadrants keep coarse layout.
    public static func features(_ x: ArraySlice<Double>, channels: Int, height: Int, width: Int) -> [Double] {
        var f: [Double] = []
        f.reserveCapacity(6 * channels)
        let plane = height * width
        let hh = height / 2, hw = width / 2
        for c in 0..<channels {
            let base = x.startIndex + c * plane
            var sum = 0.0
            for k in 0..<plane { sum += x[base + k] }
            let mean = sum / Double(plane)
            var ss = 0.0
            for k in 0..<plane { let d = x[base + k] - mean; ss += d * d }
            f.append(mean)
            f.append((ss / Double(plane)).squareRoot())
            for (r0, r1) in [(0, hh), (hh, height)] {
                for (c0, c1) in [(0, hw), (hw, width)] {
                    var q = 0.0
                    for r in r0..<r1 { for col in c0..<c1 { q += x[base + r * width + col] } }
                    f.append(q / Double(max((r1 - r0) * (c1 - c0), 1)))
                }
            }
        }
        return f
    }

    /// The features of every sample of a set of latents [M, C, H, W] flattened.
    public static func features(ofSet x: [Double], samples: Int, channels: Int, height: Int, width: Int) -> [[Double]] {
        let per = channels * height * width
        return (0..<samples).map { features(x[($0 * per)..<(($0 + 1) * per)], channels: channels, height: height, width: width) }
    }

    /// A Gaussian fit: the mean and the (n - 1 normalized, as numpy.cov) covariance of `rows`.
    public static func fit(_ rows: [[Double]]) -> (mean: [Double], cov: [[Double]]) {
        let n = rows.count, d = rows.first?.count ?? 0
        var mu = [Double](repeating: 0, count: d)
        for r in rows { for j in 0..<d { mu[j] += r[j] } }
        for j in 0..<d { mu[j] /= Double(max(n, 1)) }
        var cov = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        guard n > 1 else { return (mu, cov) }
        for r in rows {
            for i in 0..<d { for j in i..<d { cov[i][j] += (r[i] - mu[i]) * (r[j] - mu[j]) } }
        }
        for i in 0..<d { for j in i..<d { cov[i][j] /= Double(n - 1); cov[j][i] = cov[i][j] } }
        return (mu, cov)
    }

    /// The Fréchet distance between N(mu1, s1) and N(mu2, s2):
    /// |mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1^1/2 s2 s1^1/2)^1/2).
    ///
    /// Computed with symmetric square roots only (eigendecompositions of symmetric positive
    /// semi-definite matrices, eigenvalues clamped at 0), which is exact for singular
    /// covariances too (fewer samples than features), where scipy's `sqrtm(s1 s2)` needs a
    /// regularizing offset.
    public static func distance(mean1: [Double], cov1: [[Double]], mean2: [Double], cov2: [[Double]]) -> Double {
        let d = mean1.count
        var diff2 = 0.0
        for j in 0..<d { diff2 += (mean1[j] - mean2[j]) * (mean1[j] - mean2[j]) }
        let r1 = symmetricSqrt(cov1)
        let m = multiply(multiply(r1, cov2), r1)
        var trSqrt = 0.0
        for v in rankClipped(symmetricEigen(m).values) { trSqrt += v.squareRoot() }
        var tr1 = 0.0, tr2 = 0.0
        for i in 0..<d { tr1 += cov1[i][i]; tr2 += cov2[i][i] }
        return max(0, diff2 + tr1 + tr2 - 2 * trSqrt)
    }

    /// The Fréchet distance between the Gaussian fits of two feature sets.
    public static func distance(_ a: [[Double]], _ b: [[Double]]) -> Double {
        let fa = fit(a), fb = fit(b)
        return distance(mean1: fa.mean, cov1: fa.cov, mean2: fb.mean, cov2: fb.cov)
    }

    /// The PSD square root V diag(sqrt(max(l, 0))) V^T of a symmetric matrix.
    static func symmetricSqrt(_ a: [[Double]]) -> [[Double]] {
        let (raw, vecs) = symmetricEigen(a)
        let vals = rankClipped(raw)
        let d = a.count
        var out = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        for k in 0..<d {
            let s = vals[k].squareRoot()
            guard s > 0 else { continue }
            for i in 0..<d { for j in 0..<d { out[i][j] += vecs[i][k] * s * vecs[j][k] } }
        }
        return out
    }

    /// Eigenvalues with those below d x eps x the largest set to 0 (numpy's matrix_rank
    /// cutoff): they are rounding noise of a singular matrix, and their square roots (1e-8 of
    /// the scale each) would otherwise add up to a visible error.
    static func rankClipped(_ vals: [Double]) -> [Double] {
        let cutoff = (vals.map { abs($0) }.max() ?? 0) * Double(vals.count) * Double.ulpOfOne
        return vals.map { $0 > cutoff ? $0 : 0 }
    }

    static func multiply(_ a: [[Double]], _ b: [[Double]]) -> [[Double]] {
        let n = a.count, k = b.count, m = b.first?.count ?? 0
        var out = [[Double]](repeating: [Double](repeating: 0, count: m), count: n)
        for i in 0..<n { for l in 0..<k where a[i][l] != 0 { for j in 0..<m { out[i][j] += a[i][l] * b[l][j] } } }
        return out
    }

    /// Eigenvalues and eigenvectors (columns) of a symmetric matrix by cyclic Jacobi rotations
    /// in Double, to convergence of the off-diagonal mass below 1e-30 of the total (fine for
    /// the few dozen dimensions used here: each sweep is O(d^3)). The input is symmetrized first.
    public static func symmetricEigen(_ input: [[Double]]) -> (values: [Double], vectors: [[Double]]) {
        let n = input.count
        var a = input
        for i in 0..<n { for j in (i + 1)..<max(n, i + 1) { let s = (a[i][j] + a[j][i]) / 2; a[i][j] = s; a[j][i] = s } }
        var v = (0..<n).map { i in (0..<n).map { j in i == j ? 1.0 : 0.0 } }
        var total = 0.0
        for i in 0..<n { for j in 0..<n { total += a[i][j] * a[i][j] } }
        for _ in 0..<100 {
            var off = 0.0
            for i in 0..<n { for j in 0..<n where i != j { off += a[i][j] * a[i][j] } }
            if off <= 1e-30 * total || off == 0 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(n, p + 1) where a[p][q] != 0 {
                    // The rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.4.1).
                    let theta = (a[q][q] - a[p][p]) / (2 * a[p][q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {
                        let akp = a[k][p], akq = a[k][q]
                        a[k][p] = c * akp - s * akq
                        a[k][q] = s * akp + c * akq
                    }
                    for k in 0..<n {
                        let apk = a[p][k], aqk = a[q][k]
                        a[p][k] = c * apk - s * aqk
                        a[q][k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k][p], vkq = v[k][q]
                        v[k][p] = c * vkp - s * vkq
                        v[k][q] = s * vkp + c * vkq
                    }
                }
            }
        }
        return ((0..<n).map { a[$0][$0] }, v)
    }
}
