import ArgumentParser
import DicoConversion
import DicoCore
import DicoIR
import DicoPasses
import DicoQuant
import DicoRuntime
import DicoVerify
#if canImport(Glibc)
import Glibc
#endif

/// `dico-convert IN OUT.dico [--fp16|--bf16|--int8]`: the default subcommand.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a DiCo safetensors or ONNX model, or any ONNX graph, to .dico (fp32 unless a precision flag is given).",
        discussion: """
        --int8 stores the weights of 1x1 and dense convolutions and of linear layers as int8, symmetric, \
        one float32 scale per output channel; the first and last layers (x_embedder.proj.weight, \
        final_layer.out_proj.weight), biases, depthwise kernels and embedding tables stay float32. \
        --fp16 and --bf16 convert every tensor (round to nearest even). --keep keeps matching \
        tensors in float32: a glob on tensor names, or re:REGEX. \
        An ONNX graph that is not DiCo converts as written (no DiCo pass): --int8 stores the float32 \
        weight initializers of Conv, Gemm and MatMul as int8 per output channel, --fp16/--bf16 every \
        float32 initializer; below float32 the written file is run against the original on a seeded \
        input and the relative L2 drift of each output is printed.
        """)

    @Argument(help: "The input model (.safetensors or .onnx).")
    var input: String

    @Argument(help: "The output .dico file.")
    var output: String

    @Flag(help: "Store weights as IEEE half precision.")
    var fp16 = false
    @Flag(help: "Store weights as bfloat16.")
    var bf16 = false
    @Flag(help: "Store conv and linear weights as int8 per output channel.")
    var int8 = false

    @Option(help: "Keep tensors matching PATTERN in float32 (glob, or re:REGEX); repeatable.")
    var keep: [String] = []

    @Flag(help: "Write the graph as imported, without optimization passes.")
    var noOptimize = false

    @Option(help: "Comma-separated passes to run instead of the default pipeline.")
    var passes: String?

    @Option(help: "Leave out this pass (repeatable).")
    var skipPass: [String] = []

    @Option(help: "Print the IR to stdout after the named pass.")
    var dumpIrAfter: String?

    @Flag(help: "Debug: run the model before and after each pass and stop at the first that moves the output.")
    var checkPasses = false

    @Flag(help: "Verify the converted model against the input (default verification, or --quick) before writing it; write nothing if it fails.")
    var verify = false

    @Flag(help: "With --verify: write the output even when verification fails (the exit status is still 1).")
    var keepOnFail = false

    @OptionGroup(title: "Verification (with --verify)") var verifyOptions: VerifyOptions

    @Flag(help: "Overwrite the output file if it exists.")
    var force = false

    @Flag(help: "No progress display and no summary.")
    var quiet = false

    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        if [fp16, bf16, int8].filter({ $0 }).count > 1 { throw ValidationError("choose one of --fp16, --bf16, --int8") }
        if !verify && (keepOnFail || verifyOptions.changesSettings || verifyOptions.thresholds != nil || !verifyOptions.threshold.isEmpty) {
            throw ValidationError("--keep-on-fail and the verification options need --verify")
        }
    }

    func run() throws {
        let precision: Precision = fp16 ? .fp16 : bf16 ? .bf16 : int8 ? .int8 : .fp32
        let patterns = try keep.map(NamePattern.init)
        let pipeline = noOptimize ? [] : try PassManager.pipeline(passes: passes, skipping: skipPass)
        if let d = dumpIrAfter, PassManager.pass(named: d) == nil { throw DicoError(.usage, "--dump-ir-after: unknown pass '\(d)'") }
        let dumpAfter = dumpIrAfter
        if !force, access(output, F_OK) == 0 { throw DicoError(.usage, "\(output): already exists; pass --force to overwrite") }
        var a = stat(), b = stat()
        if stat(input, &a) == 0, stat(output, &b) == 0, a.st_dev == b.st_dev, a.st_ino == b.st_ino {
            throw DicoError(.usage, "\(output): is the input file; choose another output")
        }
        installInterruptHandlers()
        let meter = ProgressMeter(enabled: !quiet && isatty(STDERR_FILENO) == 1)
        var options = ConversionOptions(precision: precision, keep: patterns, threads: threadOptions.threads ?? Executor.defaultThreads,
                                        overwrite: force, toolVersion: dicoConvertVersion, passes: pipeline,
                                        afterPass: { name, graph in if name == dumpAfter { print(graph.textDump(), terminator: "") } },
                                        checkPasses: checkPasses)
        options.passOptionsGiven = [passes.map { _ in "--passes" }, skipPass.isEmpty ? nil : "--skip-pass",
                                    dumpIrAfter.map { _ in "--dump-ir-after" }, checkPasses ? "--check-passes" : nil].compactMap { $0 }
        guard verify else {
            let summary = try Converter.convert(input: input, output: output, options: options, progress: meter.update)
            meter.finish()
            if !quiet { print(summaryText(summary, precision)) }
            return
        }
        let outcome = try VerifiedConversion.convert(input: input, output: output, options: options, settings: try verifyOptions.settings(),
                                                     thresholds: try verifyOptions.resolvedThresholds(), keepOnFail: keepOnFail,
                                                     progress: meter.update)
        meter.finish()
        print(outcome.verification.text)
        if let summary = outcome.summary, !quiet { print(summaryText(summary, precision)) }
        if outcome.summary == nil { fputs("dico-convert: verification failed; \(output) was not written (--keep-on-fail writes it anyway)\n", stderr) }
        if !outcome.verification.passed { throw ExitCode(1) }
    }

    func summaryText(_ s: ConversionSummary, _ p: Precision) -> String {
        var lines = [
            "converted \(input) -> \(output) (\(p.rawValue))",
            "  size:     \(megabytes(s.inputBytes)) -> \(megabytes(s.outputBytes)) (\(s.inputBytes > 0 ? String(Int((Double(s.outputBytes) / Double(s.inputBytes) * 100).rounded())) : "-")%)",
            "  weights:  \(s.converted) converted, \(s.kept) kept in float32",
        ]
        for (k, n) in s.tensorsByDType.sorted(by: { $0.key < $1.key }) {
            lines.append("  \(k.padding(8))  \(n) tensors, \(megabytes(s.bytesByDType[k] ?? 0))")
        }
        lines.append("  time:     \(String(format2(s.seconds))) s")
        lines += s.drift?.lines.map { "  " + $0 } ?? []
        lines += s.notes.map { "  note:     \($0)" }
        return lines.joined(separator: "\n")
    }
}

func megabytes(_ n: Int) -> String { "\(format2(Double(n) / 1_000_000)) MB" }

/// Two decimals without Foundation.
func format2(_ v: Double) -> String {
    let c = Int((v * 100).rounded())
    let f = c % 100
    return "\(c / 100).\(f < 10 ? "0" : "")\(f)"
}

/// On SIGINT or SIGTERM, removes every temporary output file and exits 128 + signal, so an
/// interrupted conversion leaves nothing behind (and an existing target untouched).
func installInterruptHandlers() {
    AtomicFileWriter.prepareForSignalHandlers()
    for sig in [SIGINT, SIGTERM] {
        signal(sig) { s in
            AtomicFileWriter.removeAllTemporaries()
            _exit(128 + s)
        }
    }
}

/// A one-line progress display on stderr (bytes written, rate, time left), redrawn at most
/// ten times a second; silent when stderr is not a terminal.
final class ProgressMeter: @unchecked Sendable {
    let enabled: Bool
    private let start = monotonicSeconds()
    private var last = 0.0
    private var drawn = false

    init(enabled: Bool) { self.enabled = enabled }

    func update(_ done: Int, _ total: Int) {
        guard enabled else { return }
        let now = monotonicSeconds()
        guard now - last >= 0.1 || done == total else { return }
        last = now
        let elapsed = max(now - start, 1e-6)
        let rate = Double(done) / elapsed
        let left = rate > 0 ? Double(total - done) / rate : 0
        fputs("\r  \(megabytes(done)) / \(megabytes(total))  \(megabytes(Int(rate)))/s  \(format2(left)) s left   ", stderr)
        drawn = true
    }

    func finish() {
        if drawn { fputs("\r\u{1B}[K", stderr) }
    }
}
