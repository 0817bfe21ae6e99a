import DicoCore
import DicoRuntime

/// Classifier-free guidance exactly as DiCo's sampler applies it (DICO_MODEL.md,
/// "Classifier-free guidance as DiCo samples it"), on top of any `Denoiser`.
///
/// With a scale above 1 the batch is [cond half; uncond half]: the same latents in both halves,
/// the labels in the first and `numClasses` (the null class) in the second. After one forward
/// pass eps3 = uncond3 + s (cond3 - uncond3) on the first 3 output channels only (the official
/// code keeps that quirk for exact reproducibility); channels 3 and up are the conditional
/// half's. DiCo writes the guided channels to both halves and keeps the first half, so only the
/// first half is returned. A scale of 1 (or below) is no guidance: one conditional pass, as
/// DiCo's sample script does (`using_cfg = cfg_scale > 1`).
public struct Guidance: Sendable, Equatable {
    /// The guidance scale s.
    public var scale: Double
    /// How many leading output channels guidance mixes (3 in DiCo).
    public static let guidedChannels = 3

    public init(scale: Double) { self.scale = scale }

    /// Whether a forward pass runs the doubled batch.
    public var isActive: Bool { scale > 1 }

    /// The guided model output for latents `x` (M samples of [C, H, W], in Double) at
    /// training step `t`, labels `y`: M x [outC, H, W] in Double.
    /// - Throws: what the denoiser throws.
    public func predict(_ model: any Denoiser, x: [Double], shape: [Int], t: Double, y: [Int64]) throws -> [Double] {
        let m = shape[0], per = x.count / max(m, 1)
        let xf = x.map { Float($0) }
        guard isActive else {
            let out = try model.predict(x: HostTensor(shape: shape, floats: xf), t: [Float](repeating: Float(t), count: m), y: y)
            return out.floats!.map { Double($0) }
        }
        let null = Int64(model.config.numClasses)
        var doubled = shape
        doubled[0] = 2 * m
        let out = try model.predict(x: HostTensor(shape: doubled, floats: xf + xf), t: [Float](repeating: Float(t), count: 2 * m),
                                    y: y + [Int64](repeating: null, count: m)).floats!
        let outPer = out.count / (2 * m), plane = per / shape[1]
        let guided = Guidance.guidedChannels * plane
        var result = [Double](repeating: 0, count: m * outPer)
        for s in 0..<m {
            let cond = s * outPer, uncond = (m + s) * outPer
            for k in 0..<outPer {
                let c = Double(out[cond + k])
                if k < guided {
                    let u = Double(out[uncond + k])
                    result[s * outPer + k] = u + scale * (c - u)
                } else {
                    result[s * outPer + k] = c
                }
            }
        }
        return result
    }
}
