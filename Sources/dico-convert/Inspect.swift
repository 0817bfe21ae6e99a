import ArgumentParser
import DicoCore
import DicoIR
import DicoModel

/// `dico-convert inspect FILE`: what a model file holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model's preset, configuration, parameter count, tensors and graph.")

    @Argument(help: "A DiCo model (.safetensors).")
    var file: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Flag(help: "Print the IR text dump of the imported graph.")
    var ir = false

    func run() throws {
        let model = try DiCoModelFile.load(file)
        if ir {
            print(model.graph.textDump(), terminator: "")
            return
        }
        let report = InspectReport(file: file, model: model)
        print(json ? report.json : report.text)
    }
}

/// The facts `inspect` prints, computed once for both output forms.
struct InspectReport {
    let file: String
    let preset: String
    let config: DiCoConfig
    let parameters: Int
    let tensors: Int
    let bytesByDType: [(String, Int)]
    let opCounts: [(String, Int)]
    let nodes: Int
    let notes: [String]

    init(file: String, model: DiCoModelFile) {
        self.file = file
        config = model.weights.config
        preset = config.preset?.displayName ?? "custom"
        parameters = config.parameterCount
        tensors = model.file.tensors.count
        var bytes: [String: Int] = [:]
        for t in model.file.tensors { bytes[t.dtype.safetensorsName, default: 0] += t.byteCount }
        bytesByDType = bytes.sorted { $0.key < $1.key }
        opCounts = model.graph.opCounts.sorted { $0.key < $1.key }
        nodes = model.graph.nodes.count
        var notes = model.weights.notes
        if !model.weights.strippedPrefix.isEmpty { notes.insert("stripped the name prefix '\(model.weights.strippedPrefix)'", at: 0) }
        self.notes = notes
    }

    var text: String {
        var lines = [
            "file:        \(file)",
            "format:      safetensors",
            "model:       \(preset)",
            "config:      \(DiCoRecognizer.describe(config)), frequency size \(config.frequencySize)",
            "parameters:  \(grouped(parameters))",
            "tensors:     \(tensors)",
            "bytes:       " + bytesByDType.map { "\($0.0) \(grouped($0.1))" }.joined(separator: ", "),
            "nodes:       \(nodes) (" + opCounts.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")",
        ]
        lines += notes.map { "note:        \($0)" }
        return lines.joined(separator: "\n")
    }

    var json: String {
        let cfg: JSONValue = .object([
            ("hidden_size", .integer(config.hidden)),
            ("depths", .array(config.depths.map { .integer($0) })),
            ("mlp_ratio", .integer(config.mlpRatio)),
            ("in_channels", .integer(config.inChannels)),
            ("out_channels", .integer(config.outChannels)),
            ("learn_sigma", .bool(config.learnSigma)),
            ("num_classes", .integer(config.numClasses)),
            ("null_class", .bool(config.hasNullClass)),
            ("frequency_size", .integer(config.frequencySize)),
        ])
        let obj: JSONValue = .object([
            ("file", .string(file)),
            ("format", .string("safetensors")),
            ("preset", .string(preset)),
            ("config", cfg),
            ("parameters", .integer(parameters)),
            ("tensors", .integer(tensors)),
            ("bytes_by_dtype", .object(bytesByDType.map { ($0.0, .integer($0.1)) })),
            ("nodes", .integer(nodes)),
            ("ops", .object(opCounts.map { ($0.0, .integer($0.1)) })),
            ("notes", .array(notes.map { .string($0) })),
        ])
        return obj.serialized()
    }
}

/// 1234567 -> "1,234,567".
func grouped(_ n: Int) -> String {
    let s = String(n)
    var out = ""
    for (i, ch) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
        out.append(ch)
    }
    return out
}
