import DicoCore
import DicoSafetensors
@testable import DicoVerify
import XCTest

/// The sampler (respacing, DDPM learned-range and DDIM updates, DiCo's guidance) against a
/// PyTorch + numpy reference (Fixtures/make_verify_fixtures.py) on Fixtures/tiny.safetensors:
/// the same x_T and per-step noise are replayed, the model runs in our executor here and in
/// PyTorch there.
final class SamplerTests: XCTestCase {
    func run(_ name: String, kind: SamplerKind, cfg: Double) throws -> (steps: [[Double]], ref: [Double], per: Int) {
        let f = try SafetensorsFile(path: fixture("verify_sampler.safetensors"))
        let labels = try XCTUnwrap(f.tensor("labels")?.int64s())
        let xT = try doubles(f, "\(name)_x_T")
        let noise = try doubles(f, "\(name)_noise")
        let ref = try doubles(f, "\(name)_steps")
        let per = xT.count
        var chunks = [xT]
        for s in 0..<(noise.count / per) { chunks.append(Array(noise[(s * per)..<((s + 1) * per)])) }
        var replay = ReplayNoise(chunks)
        let model = try VerifyModels.open(fixture("tiny.safetensors"), threads: 2)
        var steps: [[Double]] = []
        _ = try Sampler.run(model, schedule: DiffusionSchedule(respacing: .even(5)), kind: kind, guidance: Guidance(scale: cfg),
                            labels: labels, size: 8, noise: &replay) { _, x in steps.append(x) }
        return (steps, ref, per)
    }

    /// Per step, relative L2 against the reference. The executor matches PyTorch to about 1e-6
    /// per forward pass (Fixtures/README.md) and the sampler arithmetic is float64 on both
    /// sides; measured: 6.9e-7 to 8.8e-7 at every step. The bound 1e-5 leaves a 10x margin for
    /// other CPUs' SIMD paths; a wrong coefficient, respacing, variance or guidance rule is off
    /// by 1e-2 or more.
    func check(_ name: String, kind: SamplerKind, cfg: Double) throws {
        let (steps, ref, per) = try run(name, kind: kind, cfg: cfg)
        XCTAssertEqual(steps.count * per, ref.count)
        for (s, x) in steps.enumerated() {
            let d = Drift(candidate: x, reference: ref[(s * per)..<((s + 1) * per)])
            XCTAssertLessThan(d.relativeL2, 1e-5, "\(name) step \(s)")
        }
    }

    func testDDPMWithGuidanceMatchesReference() throws { try check("ddpm", kind: .ddpm, cfg: 1.4) }

    func testDDIMWithoutGuidanceMatchesReference() throws { try check("ddim", kind: .ddim, cfg: 1.0) }

    /// Guidance touches the first 3 channels only and equals the plain forward at scale 1.
    func testGuidanceMixesFirstThreeChannels() throws {
        let model = try VerifyModels.open(fixture("tiny.safetensors"), threads: 2)
        var n = GaussianNoise(seed: 9)
        let x = n.next(2 * 4 * 8 * 8), shape = [2, 4, 8, 8]
        let y: [Int64] = [1, 4]
        let plain = try Guidance(scale: 1).predict(model, x: x, shape: shape, t: 500, y: y)
        let guided = try Guidance(scale: 3).predict(model, x: x, shape: shape, t: 500, y: y)
        let uncond = try Guidance(scale: 1).predict(model, x: x, shape: shape, t: 500, y: [10, 10])
        let plane = 64, per = 8 * plane
        for s in 0..<2 {
            for k in 0..<per {
                let i = s * per + k
                if k < 3 * plane {
                    XCTAssertEqual(guided[i], uncond[i] + 3 * (plain[i] - uncond[i]), accuracy: 1e-4 * max(1, abs(guided[i])))
                } else {
                    XCTAssertEqual(guided[i], plain[i], accuracy: 1e-5 * max(1, abs(plain[i])), "channel \(k / plane) passes through")
                }
            }
        }
    }
}
