import ArgumentParser
import DicoCore
import DicoIR
import DicoConversion
import DicoModel

/// `dico-convert inspect FILE`: what a model file holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model's preset, configuration, parameter count, tensors and graph.")

    @Argument(help: "A DiCo model (.safetensors or .dico).")
    var file: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Flag(help: "Print the IR text dump of the imported graph.")
    var ir = false

    func run() throws {
        let model = try LoadedModel.open(file)
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
    let format: String
    let preset: String
    let config: DiCoConfig
    let parameters: Int
    let tensors: Int
    let bytesByDType: [(String, Int)]
    let opCounts: [(String, Int)]
    let nodes: Int
    let notes: [String]

    let provenance: JSONValue?

    init(file: String, model: LoadedModel) {
        self.file = file
        format = model.format.rawValue
        config = model.config
        preset = config.preset?.displayName ?? "custom"
        parameters = config.parameterCount
        tensors = model.tensorCount
        bytesByDType = model.bytesByDType.sorted { $0.key < $1.key }
        opCounts = model.graph.opCounts.sorted { $0.key < $1.key }
        nodes = model.graph.nodes.count
        notes = model.notes
        provenance = model.provenance
    }

    var text: String {
        var lines = [
            "file:        \(file)",
            "format:      \(format)",
            "model:       \(preset)",
            "config:      \(DiCoRecognizer.describe(config)), frequency size \(config.frequencySize)",
            "parameters:  \(grouped(parameters))",
            "tensors:     \(tensors)",
            "bytes:       " + bytesByDType.map { "\($0.0) \(grouped($0.1))" }.joined(separator: ", "),
            "nodes:       \(nodes) (" + opCounts.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")",
        ]
        if let provenance { lines.append("provenance:  \(provenance.serialized())") }
        lines += notes.map { "note:        \($0)" }
        return lines.joined(separator: "\n")
    }

    var json: String {
        var members: [(key: String, value: JSONValue)] = [
            ("file", .string(file)),
            ("format", .string(format)),
            ("preset", .string(preset)),
            ("config", config.json),
            ("parameters", .integer(parameters)),
            ("tensors", .integer(tensors)),
            ("bytes_by_dtype", .object(bytesByDType.map { ($0.0, .integer($0.1)) })),
            ("nodes", .integer(nodes)),
            ("ops", .object(opCounts.map { ($0.0, .integer($0.1)) })),
            ("notes", .array(notes.map { .string($0) })),
        ]
        if let provenance { members.append(("provenance", provenance)) }
        return JSONValue.object(members).serialized()
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
