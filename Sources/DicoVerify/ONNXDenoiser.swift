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
public final class ONNXDenoiser: Denoiser {
    public let config: DiCoConfig
    public let provenance: JSONValue
    let interpreter: ONNXInterpreter
    let names: [String]
    let staticBatch: Int?
    let integerTimesteps: Bool

    /// Prepares the ONNX graph of `model` (opened by `LoadedModel.open`, so already proven to
    /// compute DiCo) for running.
    /// - Throws: `DicoError` when the interpreter refuses the graph.
    public init(model: LoadedModel, onnx: ONNXModel, provenance: JSONValue) throws {
        config = model.config
        self.provenance = provenance
        interpreter = try ONNXInterpreter(model: onnx)
        let inputs = onnx.graph.inputs
        names = inputs.map(\.name)
        if let first = inputs.first?.shape?.first, case .value(let b) = first, b > 0 { staticBatch = Int(b) } else { staticBatch = nil }
        integerTimesteps = inputs.count > 1 && (inputs[1].elementType == .i64)
    }

    public func predict(x: HostTensor, t: [Float], y: [Int64]) throws -> HostTensor {
        let n = x.shape[0]
        guard let xs = x.floats, names.count == 3 else { throw DicoError(.internalError, "ONNX denoiser: x is not float32") }
        let chunk = staticBatch ?? n
        let per = xs.count / max(n, 1)
        var out: [Float] = []
        var outShape: [Int] = []
        var start = 0
        while start < n {
            let idx = (0..<chunk).map { min(start + $0, n - 1) }
            let cx = idx.flatMap { xs[($0 * per)..<(($0 + 1) * per)] }
            let ct = idx.map { t[$0] }, cy = idx.map { y[$0] }
            guard let xv = ONNXValue(shape: [chunk] + x.shape.dropFirst(), floats: cx), let yv = ONNXValue(shape: [chunk], int64s: cy),
                  let tv = integerTimesteps ? ONNXValue(shape: [chunk], int64s: ct.map { Int64($0.rounded()) }) : ONNXValue(shape: [chunk], floats: ct)
            else { throw DicoError(.internalError, "ONNX denoiser: input shapes") }
            let r = try interpreter.runOrdered([names[0]: xv, names[1]: tv, names[2]: yv])[0]
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
