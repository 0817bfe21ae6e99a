import ArgumentParser
import DicoCore
import DicoIR
import DicoConversion
import DicoModel
import DicoONNX

/// `dico-convert inspect FILE`: what a model file holds.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a model's preset, configuration, parameter count, tensors and graph.")

    @Argument(help: "A model (.safetensors, .onnx or .dico).")
    var file: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Flag(help: "Print the IR text dump of the imported graph.")
    var ir = false

    func run() throws {
        let opened = try LoadedModel.openAny(file)
        guard case .dico(let model) = opened else {
            if case .genericONNX(let onnx, let why) = opened {
                if ir { throw DicoError(.usage, "\(file): --ir shows the DiCo IR; this ONNX graph is not DiCo (\(why))") }
                let report = GenericONNXReport(file: file, model: onnx, whyNotDiCo: why)
                print(json ? report.json : report.text)
            }
            return
        }
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

/// What `inspect` prints for an ONNX graph that is not DiCo: it imports and runs in the ONNX
/// interpreter, but none of the DiCo-specific recognition, passes or conversion apply.
struct GenericONNXReport {
    let file: String
    let model: ONNXModel
    let whyNotDiCo: String

    var opCounts: [(String, Int)] {
        Dictionary(model.graph.nodes.map { ($0.opType, 1) }, uniquingKeysWith: +).sorted { $0.key < $1.key }
    }
    var bytesByDType: [(String, Int)] {
        Dictionary(model.graph.initializers.map { ($0.tensor.dtype.safetensorsName, $0.tensor.byteCount) }, uniquingKeysWith: +)
            .sorted { $0.key < $1.key }
    }
    var note: String { "not a DiCo export (\(whyNotDiCo)): runs in the ONNX interpreter; DiCo recognition, passes and conversion do not apply" }

    static func describe(_ v: ONNXValueInfo) -> String {
        let dims = v.shape.map { "[" + $0.map { d -> String in
            switch d {
            case .value(let n): return "\(n)"
            case .param(let p): return p
            case .unknown: return "?"
            }
        }.joined(separator: ", ") + "]" } ?? "(no shape)"
        return "\(v.name) \(v.elementType?.rawValue ?? "?") \(dims)"
    }

    var text: String {
        [
            "file:        \(file)",
            "format:      onnx",
            "model:       not DiCo",
            "producer:    \(model.producerName) \(model.producerVersion), opset \(model.defaultOpset ?? 0)",
            "inputs:      " + model.graph.inputs.map(Self.describe).joined(separator: ", "),
            "outputs:     " + model.graph.outputs.map(Self.describe).joined(separator: ", "),
            "tensors:     \(model.graph.initializers.count)",
            "bytes:       " + bytesByDType.map { "\($0.0) \(grouped($0.1))" }.joined(separator: ", "),
            "nodes:       \(model.graph.nodes.count) (" + opCounts.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")",
            "note:        \(note)",
        ].joined(separator: "\n")
    }

    var json: String {
        JSONValue.object([
            ("file", .string(file)),
            ("format", .string("onnx")),
            ("preset", .null),
            ("opset", .integer(Int(model.defaultOpset ?? 0))),
            ("inputs", .array(model.graph.inputs.map { .string(Self.describe($0)) })),
            ("outputs", .array(model.graph.outputs.map { .string(Self.describe($0)) })),
            ("tensors", .integer(model.graph.initializers.count)),
            ("bytes_by_dtype", .object(bytesByDType.map { ($0.0, .integer($0.1)) })),
            ("nodes", .integer(model.graph.nodes.count)),
            ("ops", .object(opCounts.map { ($0.0, .integer($0.1)) })),
            ("notes", .array([.string(note)])),
        ]).serialized()
    }
}
