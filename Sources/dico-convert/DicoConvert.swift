import ArgumentParser
import DicoCore
#if canImport(Glibc)
import Glibc
#endif

/// The command-line entry point. Argument parsing, output and exit codes only: every
/// piece of logic lives in the library targets.
@main
struct DicoConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dico-convert",
        abstract: "Convert DiCo diffusion-model weights to .dico (fp32, fp16, bf16, int8), inspect and run them.",
        discussion: """
        Exit status: 0 success; 64 usage error; 65 invalid input (a malformed or non-DiCo file, \
        bad run inputs); 74 I/O failure; 70 internal error; 130 or 143 interrupted by SIGINT or SIGTERM \
        (partial output removed).
        """,
        version: dicoConvertVersion,
        subcommands: [Convert.self, Verify.self, Inspect.self, Run.self, Synth.self, Bench.self],
        defaultSubcommand: Convert.self
    )

    /// Runs the command, turning a `DicoError` into one message on stderr and its
    /// documented exit status.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as DicoError {
            fputs("dico-convert: error: \(error.message)\n", stderr)
            Glibc.exit(error.exitCode)
        } catch {
            exit(withError: error)
        }
    }
}

/// The tool's version, recorded in files it writes.
let dicoConvertVersion = "0.3.0"

/// `--threads`, shared by every command that computes.
struct ThreadOptions: ParsableArguments {
    @Option(name: .long, help: "Threads for computation (default: all online CPUs). Results do not depend on it.")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }
}
