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

    // The proof costs two forward passes at the export's latent size (13 s for DiCo-XL at 32x32),
    // far more than the look inspect is for; conversion and run always prove.
    @Flag(help: "For an ONNX export of DiCo, prove that its graph computes the DiCo forward pass (as convert and run do) instead of recognizing it by its weights only.")
    var prove = false

    func run() throws {
        let opened = try LoadedModel.openAny(file, prove: prove)
        guard case .dico(let model) = opened else {
            if case .genericONNX(let g) = opened {
                if ir { throw DicoError(.usage, "\(file): --ir shows the DiCo IR; this ONNX graph is not DiCo (\(g.whyNotDiCo))") }
                let report = GenericONNXReport(file: file, model: g)
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

/// What `inspect` prints for an ONNX graph that is not DiCo (an `.onnx` file, or a `.dico`
/// holding one): it imports and runs in the ONNX interpreter, and converts as a generic graph,
/// but none of the DiCo-specific recognition or passes apply.
struct GenericONNXReport {
    let file: String
    let model: GenericONNXModel

    var graph: ONNXGraph { model.onnx.graph }
    var opCounts: [(String, Int)] {
        Dictionary(graph.nodes.map { ($0.opType, 1) }, uniquingKeysWith: +).sorted { $0.key < $1.key }
    }
    var bytesByDType: [(String, Int)] { model.bytesByDType.sorted { $0.key < $1.key } }
    var tensorsByDType: [(String, Int)] { model.tensorsByDType.sorted { $0.key < $1.key } }
    /// The graph's initializers by storage dtype (a quantized one counts as I8).
    var initializersByDType: [(String, Int)] {
        Dictionary(graph.initializers.map { ($0.tensor.dtype.safetensorsName, 1) }, uniquingKeysWith: +).sorted { $0.key < $1.key }
    }

    /// Whether the ONNX interpreter takes the graph (every op, opset and attribute known), and
    /// the exporter patterns it runs as one kernel; or why it does not take it.
    var interpreter: Result<[(String, Int)], DicoError> {
        // Weights converted on use: building the interpreter then reads no weight.
        do {
            let i = try ONNXInterpreter(model: model.onnx, convertWeightsOnUse: true)
            return .success(i.fusions.map { ($0.key.rawValue, $0.value) }.sorted { $0.0 < $1.0 })
        } catch let e as DicoError {
            return .failure(e)
        } catch {
            return .failure(DicoError(.internalError, "\(error)"))
        }
    }

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
        var lines = [
            "file:        \(file)",
            "format:      \(model.format.rawValue)",
            "model:       not DiCo (generic ONNX graph)",
            "producer:    \(model.onnx.producerName) \(model.onnx.producerVersion), opset \(model.onnx.defaultOpset ?? 0)",
            "inputs:      " + graph.inputs.map(Self.describe).joined(separator: ", "),
            "outputs:     " + graph.outputs.map(Self.describe).joined(separator: ", "),
            "tensors:     \(model.tensorCount) (" + tensorsByDType.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")",
            "initializers: \(graph.initializers.count) (" + initializersByDType.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")",
            "bytes:       " + bytesByDType.map { "\($0.0) \(grouped($0.1))" }.joined(separator: ", "),
            "nodes:       \(graph.nodes.count) (" + opCounts.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")",
        ]
        switch interpreter {
        case .success(let fusions):
            lines.append("interpreter: runs it" + (fusions.isEmpty ? "" : "; fused: " + fusions.map { "\($0.0) \($0.1)" }.joined(separator: ", ")))
        case .failure(let e):
            lines.append("interpreter: cannot run it: \(e.message)")
        }
        if let p = model.provenance { lines.append("provenance:  \(p.serialized())") }
        lines.append("note:        \(model.note)")
        return lines.joined(separator: "\n")
    }

    var json: String {
        var members: [(key: String, value: JSONValue)] = [
            ("file", .string(file)),
            ("format", .string(model.format.rawValue)),
            ("preset", .null),
            ("opset", .integer(Int(model.onnx.defaultOpset ?? 0))),
            ("inputs", .array(graph.inputs.map { .string(Self.describe($0)) })),
            ("outputs", .array(graph.outputs.map { .string(Self.describe($0)) })),
            ("tensors", .integer(model.tensorCount)),
            ("tensors_by_dtype", .object(tensorsByDType.map { ($0.0, .integer($0.1)) })),
            ("initializers_by_dtype", .object(initializersByDType.map { ($0.0, .integer($0.1)) })),
            ("bytes_by_dtype", .object(bytesByDType.map { ($0.0, .integer($0.1)) })),
            ("nodes", .integer(graph.nodes.count)),
            ("ops", .object(opCounts.map { ($0.0, .integer($0.1)) })),
            ("notes", .array([.string(model.note)])),
        ]
        switch interpreter {
        case .success(let fusions):
            members.append(("interpreter", .object([("runs", .bool(true)), ("fusions", .object(fusions.map { ($0.0, .integer($0.1)) }))])))
        case .failure(let e):
            members.append(("interpreter", .object([("runs", .bool(false)), ("error", .string(e.message))])))
        }
        if let p = model.provenance { members.append(("provenance", p)) }
        return JSONValue.object(members).serialized()
    }
}
