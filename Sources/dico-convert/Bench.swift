import ArgumentParser
import DicoCore
import DicoConversion
import DicoModel
import DicoPasses
import DicoRuntime
#if canImport(Glibc)
import Glibc
#endif

/// `dico-convert bench MODEL`: times forward passes on seeded inputs (for scripts/bench.sh).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time forward passes of a model on seeded inputs and print one JSON line (median, min, all runs).")

    @Argument(help: "A DiCo model (.safetensors or .dico).")
    var model: String

    @Option(help: "Batch size.")
    var batch = 2

    @Option(help: "Latent height and width (divisible by 4).")
    var size = 32

    @Option(help: "Timed runs after one warm-up run.")
    var runs = 5

    @Flag(help: "Print the time per op and kernel path to stderr.")
    var profile = false

    @Flag(name: .customLong("profile-shapes"), help: "With --profile, split each kernel path by output and weight shape.")
    var profileShapes = false

    @Flag(help: "Run the default pass pipeline on the graph first (a .safetensors graph is timed as imported otherwise; a .dico holds the graph its conversion chose).")
    var optimize = false

    @Option(help: "Run these passes (comma-separated, in order) on the graph first; implies --optimize.")
    var passes: String?

    @Option(name: .customLong("skip-pass"), help: "Leave this pass out of the pipeline (repeatable); implies --optimize.")
    var skipPass: [String] = []

    @Flag(name: .customLong("plan-fusion"), help: "Let the executor run a 1x1 conv and the depthwise 3x3 conv that alone reads it as one kernel (execution-plan fusion; the graph and the results are the same either way; off by default, it measured no faster).")
    var planFusion = false

    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard batch >= 1, runs >= 1, size >= 4, size % 4 == 0 else {
            throw ValidationError("--batch and --runs must be at least 1, --size a positive multiple of 4")
        }
    }

    func run() throws {
        let loaded = try LoadedModel.open(model)
        let config = loaded.config
        var graph = loaded.graph
        var applied: [String] = [], pipeline: [String] = []
        if optimize || passes != nil || !skipPass.isEmpty {
            let chosen = try PassManager.pipeline(passes: passes, skipping: skipPass)
            pipeline = chosen.map(\.name)
            (graph, applied) = try PassManager(passes: chosen).run(graph)
        }
        let executor = try Executor(graph: graph, threads: threadOptions.threads ?? Executor.defaultThreads)
        var rng = SplitMix64(seed: 1)
        let n = batch * config.inChannels * size * size
        let x = (0..<n).map { _ in Float(rng.next() >> 40) / 16_777_216 * 2 - 1 }
        let t = (0..<batch).map { _ in Float(rng.next() % 1000) }
        let y = (0..<batch).map { _ in Int64(rng.next() % UInt64(config.tableRows)) }
        let inputs = ["x": HostTensor(shape: [batch, config.inChannels, size, size], floats: x),
                      "t": HostTensor(shape: [batch], floats: t), "y": HostTensor(shape: [batch], int64s: y)]
        executor.planFusion = planFusion
        executor.profiling = profile
        executor.profileShapes = profileShapes
        var finite = true
        var times: [Double] = []
        for i in 0...runs {
            let start = monotonicSeconds()
            let out = try executor.run(inputs)
            let elapsed = monotonicSeconds() - start
            if i > 0 { times.append(elapsed) }
            finite = finite && out[0].floats!.allSatisfy { $0.isFinite }
        }
        let sorted = times.sorted()
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        let obj: JSONValue = .object([
            ("peer", .string("dico-convert")), ("model", .string(config.preset?.displayName ?? "custom")),
            ("batch", .integer(batch)), ("size", .integer(size)), ("threads", .integer(executor.threads)),
            ("median_s", .number(String(format6(median)))), ("min_s", .number(String(format6(sorted[0])))),
            ("runs", .array(times.map { .number(format6($0)) })), ("finite", .bool(finite)),
            ("pipeline", .array(pipeline.map { .string($0) })), ("passes_applied", .array(applied.map { .string($0) })), ("nodes", .integer(graph.nodes.count)),
            ("plan_fusion", .bool(executor.planFusion)),
        ])
        print(obj.serialized())
        if profile {
            // Wall time is what a user waits; CPU time (all threads) is steadier on a shared
            // machine; GFLOP/s (2 per multiply-accumulate, over wall time) shows GEMM efficiency.
            let total = executor.profile.values.reduce(0) { $0 + $1.seconds }
            let perRun = Double(runs + 1)
            for (k, v) in executor.profile.sorted(by: { $0.value.seconds > $1.value.seconds }) {
                let gflops = v.macs > 0 ? "  \(Int(2 * v.macs / v.seconds / 1e9)) GFLOP/s" : ""
                fputs("\(k.padding(24)) \(v.count / (runs + 1)) nodes/run  \(Int(v.seconds / total * 1000) / 10)%  \(format6(v.seconds / perRun)) s/run  cpu \(format6(v.cpuSeconds / perRun)) s/run\(gflops)\n", stderr)
            }
        }
    }
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

/// Seconds with 6 decimals, as a JSON number literal.
func format6(_ v: Double) -> String {
    let scaled = (v * 1_000_000).rounded()
    let whole = Int(scaled) / 1_000_000, frac = Int(scaled) % 1_000_000
    let f = String(frac)
    return "\(whole)." + String(repeating: "0", count: 6 - f.count) + f
}
