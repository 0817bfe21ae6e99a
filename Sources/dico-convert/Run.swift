import ArgumentParser
import DicoCore
import DicoConversion
import DicoModel
import DicoONNX
import DicoRuntime
import DicoSafetensors
#if canImport(Glibc)
import Glibc
#endif

/// `dico-convert run MODEL --input IN --output OUT`: one forward pass.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the model on x [N,4,H,W] f32, t [N] (i64 or f32) and y [N] i64; write out [N,8,H,W] f32.",
        discussion: "Other tensors in the input file are ignored, so a reference file holding its expected output runs as is.")

    @Argument(help: "A model (.safetensors, .onnx or .dico). An ONNX graph that is not DiCo (an .onnx file or a .dico holding one) runs as written in the ONNX interpreter, its inputs read from --input by name.")
    var model: String

    @Option(help: "A safetensors file with the tensors x, t and y.")
    var input: String

    @Option(help: "Where to write the safetensors file holding 'out'.")
    var output: String

    @Flag(help: "Overwrite the output file if it exists.")
    var force = false

    @OptionGroup var threadOptions: ThreadOptions

    func run() throws {
        installInterruptHandlers()
        // Fail before the forward pass, not after it; the atomic writer checks again at the end.
        if !force, access(output, F_OK) == 0 { throw DicoError(.usage, "\(output): already exists; pass --force to overwrite") }
        let opened = try LoadedModel.openAny(model)
        if case .genericONNX(let g) = opened { return try runGeneric(g.onnx) }
        guard case .dico(let loaded) = opened else { return }
        let inputs = try RunInputs.read(input)
        let executor = try Executor(graph: loaded.graph, threads: threadOptions.threads ?? Executor.defaultThreads)
        let out: [HostTensor]
        do {
            out = try executor.run(inputs)
        } catch let e as DicoError where e.kind == .invalidInput {
            throw DicoError.invalid(input, e.message)
        }
        try SafetensorsWriter.write([(name: "out", data: out[0].tensorData)], metadata: ["made_by": "dico-convert \(dicoConvertVersion) run"],
                                    to: output, overwrite: force)
    }
}

extension Run {
    /// A non-DiCo ONNX graph (an `.onnx` file, or a `.dico` holding one, its weights read from
    /// the file's tensors and int8 ones dequantized): every graph input is read from `--input`
    /// under its own name, the graph runs once in the interpreter on `--threads` workers (each
    /// large weight converted when its node runs, then its pages released), and every graph
    /// output is written under its name.
    func runGeneric(_ onnx: ONNXModel) throws {
        let f = try SafetensorsFile(path: input)
        var feeds: [String: ONNXValue] = [:]
        for v in onnx.graph.inputs {
            guard let t = f.tensor(v.name) else {
                throw DicoError.invalid(input, "missing tensor '\(v.name)' (an input of \(model): \(onnx.graph.inputs.map(\.name).joined(separator: ", ")))")
            }
            feeds[v.name] = try ONNXValue(t)
        }
        // The interpreter's errors already name the model and the input or node.
        let outputs = try ONNXInterpreter(model: onnx, convertWeightsOnUse: true, threads: threadOptions.threads).run(feeds)
        let tensors = onnx.graph.outputs.map { (name: $0.name, data: outputs[$0.name]!.tensorData) }
        try SafetensorsWriter.write(tensors, metadata: ["made_by": "dico-convert \(dicoConvertVersion) run"], to: output, overwrite: force)
    }
}

/// Reads the run command's inputs, strictly.
enum RunInputs {
    /// x, t and y from a safetensors file; t may be int64 or float32 and is passed as float32.
    /// - Throws: `DicoError.invalidInput` naming the file and the tensor when one is missing
    ///   or has the wrong dtype or rank.
    static func read(_ path: String) throws -> [String: HostTensor] {
        let f = try SafetensorsFile(path: path)
        func get(_ name: String, _ dtypes: [DType], rank: Int) throws -> TensorData {
            guard let t = f.tensor(name) else { throw DicoError.invalid(path, "missing tensor '\(name)'") }
            guard dtypes.contains(t.dtype) else {
                throw DicoError.invalid(path, "tensor '\(name)' has dtype \(t.dtype.safetensorsName), expected \(dtypes.map(\.safetensorsName).joined(separator: " or "))")
            }
            guard t.shape.count == rank else { throw DicoError.invalid(path, "tensor '\(name)' has shape \(t.shape), expected rank \(rank)") }
            return t
        }
        let x = try get("x", [.f32], rank: 4), t = try get("t", [.i64, .f32], rank: 1), y = try get("y", [.i64], rank: 1)
        if t.dtype == .f32, let bad = t.floats().first(where: { !$0.isFinite }) {
            throw DicoError.invalid(path, "tensor 't' holds a non-finite timestep \(bad)")
        }
        return [
            "x": HostTensor(shape: x.shape, floats: x.floats()),
            "t": HostTensor(shape: t.shape, floats: t.floats()),
            "y": HostTensor(shape: y.shape, int64s: y.int64s()!),
        ]
    }
}
