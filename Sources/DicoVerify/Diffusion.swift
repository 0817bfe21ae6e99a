#if canImport(Glibc)
import Glibc
#endif
import DicoCore

/// Which of the 1000 training steps a sampler visits, as ADM/DiT's `space_timesteps` chooses
/// them (DICO_MODEL.md, "Diffusion process").
public enum Respacing: Sendable, Equatable, CustomStringConvertible {
    /// S evenly spread steps: index 0, then round(k * 999 / (S - 1)) (a running float sum of
    /// the stride, rounded half to even as Python's round does).
    case even(Int)
    /// "ddimN": the integer stride that yields exactly N steps, range(0, 1000, stride).
    case ddim(Int)

    /// Parses "250" or "ddim50".
    /// - Throws: `DicoError(.usage)` for anything else, or a step count outside 1...1000.
    public init(parsing text: String, trainingSteps: Int = 1000) throws {
        let ddim = text.hasPrefix("ddim")
        guard let n = Int(ddim ? String(text.dropFirst(4)) : text), n >= 1, n <= trainingSteps else {
            throw DicoError(.usage, "--steps: '\(text)' is not a step count in 1...\(trainingSteps) or 'ddimN'")
        }
        self = ddim ? .ddim(n) : .even(n)
    }

    public var description: String {
        switch self {
        case let .even(n): return String(n)
        case let .ddim(n): return "ddim\(n)"
        }
    }

    /// The kept training-step indices in increasing order.
    /// - Throws: `DicoError(.usage)` when no integer stride yields N steps for "ddimN".
    public func indices(trainingSteps: Int = 1000) throws -> [Int] {
        switch self {
        case let .even(s):
            if s == 1 { return [0] }
            // ADM: frac_stride = (size - 1) / (S - 1); cur += frac_stride; taken = round(cur).
            let stride = Double(trainingSteps - 1) / Double(s - 1)
            var cur = 0.0
            var out: [Int] = []
            for _ in 0..<s {
                out.append(Int(cur.rounded(.toNearestOrEven)))
                cur += stride
            }
            return out
        case let .ddim(n):
            for stride in 1..<max(trainingSteps, 2) where (trainingSteps + stride - 1) / stride == n {
                return Array(Swift.stride(from: 0, to: trainingSteps, by: stride))
            }
            throw DicoError(.usage, "--steps ddim\(n): no integer stride gives exactly \(n) steps out of \(trainingSteps)")
        }
    }
}

/// A Gaussian diffusion process in Double: the training schedule respaced to the visited
/// steps, with the posterior coefficients that ADM's `GaussianDiffusion` derives from it.
public struct DiffusionSchedule: Sendable {
    /// The training-step index of each respaced step (what the model is called with).
    public let timestepMap: [Int]
    /// Respaced betas: beta'_i = 1 - abar[k_i] / abar[k_{i-1}] (abar[k_{-1}] = 1).
    public let betas: [Double]
    /// abar_i = prod (1 - beta'_j) for j <= i, and abar_{i-1} (1 for i = 0).
    public let alphasCumprod: [Double]
    public let alphasCumprodPrev: [Double]
    /// beta'_i (1 - abar_{i-1}) / (1 - abar_i).
    public let posteriorVariance: [Double]
    /// log of the posterior variance with entry 0 replaced by entry 1 (which is 0 otherwise).
    public let posteriorLogVarianceClipped: [Double]
    /// Posterior mean = coef1 x0 + coef2 x_t: beta' sqrt(abar_prev) / (1 - abar) and (1 - abar_prev) sqrt(1 - beta') / (1 - abar).
    public let posteriorMeanCoef1: [Double]
    public let posteriorMeanCoef2: [Double]

    /// DiCo's (DiT's) training schedule: linear betas from 1e-4 to 0.02 over 1000 steps.
    public static func linearBetas(trainingSteps: Int = 1000) -> [Double] {
        // numpy.linspace(scale * 0.0001, scale * 0.02, n) with scale = 1000 / n.
        let scale = 1000 / Double(trainingSteps)
        let lo = scale * 0.0001, hi = scale * 0.02
        if trainingSteps == 1 { return [lo] }
        let step = (hi - lo) / Double(trainingSteps - 1)
        return (0..<trainingSteps).map { i in i == trainingSteps - 1 ? hi : lo + Double(i) * step }
    }

    /// The linear schedule respaced as `respacing` says.
    public init(respacing: Respacing, trainingSteps: Int = 1000) throws {
        let base = DiffusionSchedule.linearBetas(trainingSteps: trainingSteps)
        var abar = 1.0
        var baseCumprod: [Double] = []
        for b in base { abar *= 1 - b; baseCumprod.append(abar) }
        let keep = try respacing.indices(trainingSteps: trainingSteps)
        var last = 1.0
        var betas: [Double] = []
        for k in keep {
            betas.append(1 - baseCumprod[k] / last)
            last = baseCumprod[k]
        }
        self.init(betas: betas, timestepMap: keep)
    }

    /// The process with these betas (a respaced one when `timestepMap` is not 0..<n).
    public init(betas: [Double], timestepMap: [Int]) {
        precondition(!betas.isEmpty && betas.count == timestepMap.count)
        self.betas = betas
        self.timestepMap = timestepMap
        var acp: [Double] = []
        var a = 1.0
        for b in betas { a *= 1 - b; acp.append(a) }
        alphasCumprod = acp
        alphasCumprodPrev = [1.0] + acp.dropLast()
        let n = betas.count
        var pv: [Double] = [], c1: [Double] = [], c2: [Double] = []
        for i in 0..<n {
            let prev = alphasCumprodPrev[i], denom: Double = 1 - acp[i]
            pv.append(betas[i] * (1 - prev) / denom)
            c1.append(betas[i] * prev.squareRoot() / denom)
            c2.append((1 - prev) * (1 - betas[i]).squareRoot() / denom)
        }
        posteriorVariance = pv
        posteriorMeanCoef1 = c1
        posteriorMeanCoef2 = c2
        // ADM: log(append(posterior_variance[1], posterior_variance[1:])): entry 0 is 0.
        var clipped = pv
        if n > 1 { clipped[0] = pv[1] }
        posteriorLogVarianceClipped = clipped.map { log($0) }
    }

    /// Number of sampling steps.
    public var count: Int { betas.count }

    /// One reverse step of ancestral DDPM sampling with the learned-range variance, in place:
    /// x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps (no clipping), mean = coef1 x0 + coef2 x,
    /// log_var = frac log(beta') + (1 - frac) min_log with frac = (v + 1) / 2, and
    /// x <- mean + exp(log_var / 2) z, without the noise term at step 0.
    /// - Parameters:
    ///   - x: the latents at step `i`, `samples` x [C, H, W] flattened.
    ///   - out: the model output for them, `samples` x [2C, H, W] (eps, then v).
    ///   - noise: standard normal values, as many as `x` (not used at step 0).
    public func ddpmStep(_ i: Int, x: inout [Double], out: [Double], noise: [Double], samples: Int) {
        precondition(out.count == 2 * x.count && noise.count == x.count && x.count % samples == 0,
                     "DDPM needs eps and v for every latent value")
        let sra = (1 / alphasCumprod[i]).squareRoot(), srm1 = (1 / alphasCumprod[i] - 1).squareRoot()
        let minLog = posteriorLogVarianceClipped[i], maxLog = log(betas[i])
        let c1 = posteriorMeanCoef1[i], c2 = posteriorMeanCoef2[i]
        let block = x.count / samples
        for k in x.indices {
            let m = k / block, r = k % block
            let eps = out[m * 2 * block + r], v = out[m * 2 * block + block + r]
            let x0 = sra * x[k] - srm1 * eps
            let mean = c1 * x0 + c2 * x[k]
            let frac = (v + 1) / 2
            let logVar = frac * maxLog + (1 - frac) * minLog
            x[k] = i == 0 ? mean : mean + exp(0.5 * logVar) * noise[k]
        }
    }

    /// One deterministic DDIM step (eta 0), in place, as ADM's `ddim_sample`: x0 as for DDPM,
    /// eps' = (sqrt(1/abar) x - x0) / sqrt(1/abar - 1), x <- x0 sqrt(abar_prev) + sqrt(1 - abar_prev) eps'.
    /// - Parameters:
    ///   - x: the latents at step `i`, `samples` x [C, H, W] flattened.
    ///   - out: the model output, `samples` x [C', H, W] with eps in its first C channels
    ///     (the variance channels, if any, are not used).
    public func ddimStep(_ i: Int, x: inout [Double], out: [Double], samples: Int) {
        precondition(x.count % samples == 0 && out.count % samples == 0 && out.count >= x.count, "DDIM needs eps for every latent value")
        let sra = (1 / alphasCumprod[i]).squareRoot(), srm1 = (1 / alphasCumprod[i] - 1).squareRoot()
        let prev = alphasCumprodPrev[i]
        let block = x.count / samples, outBlock = out.count / samples
        for k in x.indices {
            let m = k / block, r = k % block
            let eps = out[m * outBlock + r]
            let x0 = sra * x[k] - srm1 * eps
            let e = (sra * x[k] - x0) / srm1
            x[k] = x0 * prev.squareRoot() + (1 - prev).squareRoot() * e
        }
    }
}
