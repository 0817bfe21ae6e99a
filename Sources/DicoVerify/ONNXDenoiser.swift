import DicoConversion
import DicoCore
import DicoModel
import DicoONNX
import DicoRuntime

/// A `Denoiser` that runs an ONNX export as written, op by op, in the ONNX interpreter: the
/// original a converted model is compared against when the user holds DiCo as ONNX (the
/// canonical graph is what conversion writes, so verifying it against itself would prove
/// nothing about the import).
///
/// An export with a static batch (the legacy exporter without dynamic axes) is run in chunks
/// of that batch, the last chunk padded with copies of its last sample (each sample of DiCo is
/// computed independently, so padding does not change the others).
///
/// An export with a fixed latent size cannot run other sizes at all. At another size the
/// canonical graph runs instead: import proved it computes what the export computes at the
/// export's size, and DiCo is convolutional, so it is the function the export would compute
/// there. `canonicalSizes` records the sizes that took that path, for the report.
public final class ONNXDenoiser: Denoiser {
    public let config: DiCoConfig
    public let provenance: JSONValue
    let interpreter: ONNXInterpreter
    let binding: ONNXCanonicalizer.Binding
    /// The export's fixed latent height and width, where it fixes them.
    let fixedH: Int?, fixedW: Int?
    let canonical: GraphDenoiser
    /// Latent sizes ("HxW") run by the canonical graph because the export fixes another.
    public private(set) var canonicalSizes: Set<String> = []

    /// Prepares the ONNX graph of `model` (opened by `LoadedModel.open`, so already proven to
    /// compute DiCo) for running.
    /// - Throws: `DicoError` when the interpreter refuses the graph.
    public init(model: LoadedModel, onnx: ONNXModel, provenance: JSONValue, threads: Int) throws {
        config = model.config
        interpreter = try ONNXInterpreter(model: onnx, threads: threads)
        // The same binding (names, element types, fixed batch) import proved the graph with.
        binding = try ONNXCanonicalizer.bindInputs(onnx, config: model.config)
        let dims = onnx.graph.inputs[0].shape ?? []
        func fixed(_ k: Int) -> Int? {
            guard k < dims.count, case .value(let v) = dims[k] else { return nil }
            return Int(v)
        }
        fixedH = fixed(2)
        fixedW = fixed(3)
        var described = provenance
        if fixedH != nil || fixedW != nil, case .object(var members) = provenance {
            let size = "\(fixedH.map(String.init) ?? "H")x\(fixedW.map(String.init) ?? "W")"
            members.append(("note", .string("the export fixes the latent at \(size); other sizes run the canonical graph import proved equal to it")))
            described = .object(members)
        }
        self.provenance = described
        canonical = try GraphDenoiser(graph: model.graph, config: model.config, provenance: described, threads: threads)
    }

    public func predict(x: HostTensor, t: [Float], y: [Int64]) throws -> HostTensor {
        let n = x.shape.first ?? 0
        guard n > 0 else { throw DicoError(.internalError, "ONNX denoiser: empty batch") }
        if x.shape.count == 4, x.shape[2] != (fixedH ?? x.shape[2]) || x.shape[3] != (fixedW ?? x.shape[3]) {
            canonicalSizes.insert("\(x.shape[2])x\(x.shape[3])")
            return try canonical.predict(x: x, t: t, y: y)
        }
        guard let xs = x.floats else { throw DicoError(.internalError, "ONNX denoiser: x is not float32") }
        let chunk = binding.staticBatch ? binding.batch : n
        let per = xs.count / max(n, 1)
        var out: [Float] = []
        var outShape: [Int] = []
        var start = 0
        while start < n {
            let idx = (0..<chunk).map { min(start + $0, n - 1) }
            let cx = idx.flatMap { xs[($0 * per)..<(($0 + 1) * per)] }
            let ct = idx.map { t[$0] }, cy = idx.map { y[$0] }
            let r = try interpreter.runOrdered(try binding.inputs(x: cx, shape: [chunk] + x.shape.dropFirst(), t: ct, y: cy))[0]
            guard let f = r.floats, r.shape.first == chunk else {
                throw DicoError.invalid(interpreter.modelPath, "the graph's output has shape \(r.shape), expected a float32 batch of \(chunk)")
            }
            let take = min(chunk, n - start)
            out += f[0..<(take * (f.count / chunk))]
            outShape = [n] + r.shape.dropFirst()
            start += chunk
        }
        return HostTensor(shape: outShape, floats: out)
    }
}
