import DicoCore
import DicoIR
import DicoModel
import DicoRuntime

/// Runs the executor on fixed inputs before and after each pass and stops at the first pass
/// whose output moves by more than `tolerance` (relative L2), naming it.
///
/// 1e-6 by default: every pass is exact or reorders float sums, which moves a DiCo output by
/// about 1e-7; a wrong rewrite moves it by orders of magnitude more.
public final class DifferentialCheck {
    public let tolerance: Double
    let inputs: [String: HostTensor]
    let threads: Int
    var reference: [Float] = []

    /// Fixed inputs for `config`: batch 2, 8x8 latent, t = [17, 901.5], y = [0, null class].
    public init(original: Graph, config: DiCoConfig, threads: Int, tolerance: Double = 1e-6) throws {
        self.tolerance = tolerance
        self.threads = threads
        var rng = SplitMix64(seed: 7)
        let n = 2 * config.inChannels * 64
        inputs = ["x": HostTensor(shape: [2, config.inChannels, 8, 8], floats: (0..<n).map { _ in Float(rng.next() >> 40) / 8_388_608 - 1 }),
                  "t": HostTensor(shape: [2], floats: [17, 901.5]),
                  "y": HostTensor(shape: [2], int64s: [0, Int64(config.tableRows - 1)])]
        reference = try Executor(graph: original, threads: threads).run(inputs)[0].floats!
    }

    /// Checks `graph`, the result of pass `pass`.
    /// - Throws: `DicoError(.internalError)` naming the pass and the drift.
    public func check(pass: String, graph: Graph) throws {
        let out = try Executor(graph: graph, threads: threads).run(inputs)[0].floats!
        let drift = relativeL2(out, reference: reference)
        guard drift <= tolerance else {
            throw DicoError(.internalError, "pass '\(pass)' moved the output by \(drift) relative L2 (allowed \(tolerance))")
        }
    }
}
