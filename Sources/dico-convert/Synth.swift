import ArgumentParser
import DicoCore
import DicoModel

/// `dico-convert synth --preset S OUT`: a preset with seeded synthetic weights.
struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a DiCo preset with seeded random, non-zero weights under the official tensor names.")

    @Option(help: "S, B, L, XL or H.")
    var preset: String

    @Option(help: "Seed of the random weights.")
    var seed: UInt64 = 0

    @Argument(help: "Output .safetensors file.")
    var output: String

    @Flag(help: "Overwrite the output file if it exists.")
    var force = false

    func run() throws {
        installInterruptHandlers()
        guard let p = DiCoPreset(name: preset) else {
            throw DicoError(.usage, "unknown preset '\(preset)'; expected one of S, B, L, XL, H")
        }
        try DiCoSynth.write(p.config, seed: seed, to: output, overwrite: force)
    }
}
