import DicoCore
import DicoIR
import DicoModel
import DicoONNX
import DicoRuntime

/// Canonicalization of an ONNX model into the DiCo IR.
///
/// Every torch export of DiCo seen (the legacy exporter at opsets 13 and 17, the dynamo
/// exporter at opset 18 and later) keeps the state-dict names on the weight initializers, but
/// spells the computation in very different op sequences (decomposed or fused LayerNorm,
/// erf-GELU or `Gelu`, `Slice` or `Split` for the adaLN chunks, shape arithmetic around every
/// reshape). Rather than rewriting each spelling op by op, canonicalization works in two steps
/// that do not depend on the spelling:
///
/// 1. **Recognize** the weights: the initializers whose names DiCo's state dict uses go through
///    the same recognizer as a safetensors file (configuration, every tensor's shape, NaN/Inf),
///    and the canonical graph is built from them by the same builder. So the two paths meet in
///    one graph by construction: same ops in the same order, same shapes, same weight values.
/// 2. **Prove** that the ONNX graph computes that function: the faithful ONNX graph (run by the
///    ONNX interpreter, op by op as written) and the canonical graph (run by the executor) are
///    evaluated on seeded probe inputs, and must agree within `proofTolerance`. A graph that
///    names its weights like DiCo but computes something else (a modified block, a transposed
///    weight the exporter renamed, a different epsilon) fails the proof and is imported as a
///    generic ONNX graph instead, with a note saying why.
///
/// The proof runs at a small latent (8x8, or the export's static size) on two samples, so it
/// costs a fraction of one forward pass at 32x32 when the export leaves H and W dynamic, and two
/// forward passes (one per runtime) at the export's size when it fixes them. `inspect` may skip
/// it (`prove: false`): the result then says the equality is not proven; conversion and `run`
/// always prove.
public enum ONNXCanonicalizer {
    /// Relative L2 bound of the proof. fp32 evaluation of the same function in two op orders
    /// differs by about 1e-6 on DiCo (float rounding, GELU approximations within 1.1e-6); a
    /// wrong op (a transposed weight, a missing `1 +`) moves the output by 1e-2 or more.
    public static let proofTolerance = 1e-4

    /// The result for a DiCo export.
    public struct Canonical: @unchecked Sendable {
        public let weights: DiCoWeights
        public let graph: Graph
        /// The names of the ONNX graph inputs bound to the canonical inputs x, t, y.
        public let inputNames: [String]
        /// Relative L2 difference measured by the proof; nil when the proof was skipped.
        public let proofDifference: Double?
        public let notes: [String]
    }

    /// Why a model was not canonicalized as DiCo (shown as a note; the model then imports as a
    /// generic ONNX graph).
    public struct NotDiCo: Error, Sendable {
        public let reason: String
    }
}

extension ONNXCanonicalizer {
    /// Canonicalizes `model` as DiCo.
    /// - Throws: `NotDiCo` when the model is not a DiCo export (the reason says what is
    ///   missing or what differs: a DiCo-named tensor missing or of the wrong shape or dtype
    ///   included); `DicoError` for a DiCo export whose weights hold NaN or Inf, naming the tensor.
    /// - Parameter prove: run the differential proof (skipped only for a quick look: the
    ///   canonical graph is then what the weights' names say, not shown to be what the file computes).
    public static func canonicalize(_ model: ONNXModel, threads: Int = Executor.defaultThreads,
                                    checkValues: Bool = true, prove: Bool = true) throws -> Canonical {
        let path = model.path
        let inits = model.graph.initializers
        var shapes: [String: [Int]] = [:]
        for i in inits { shapes[i.name] = i.tensor.shape }
        // The state-dict anchors decide whether this is meant to be DiCo at all.
        let config: DiCoConfig
        do { config = try DiCoRecognizer.inferConfig(shapes: shapes, file: path) } catch let e as DicoError {
            throw NotDiCo(reason: e.message.replacingOccurrences(of: "\(path): ", with: ""))
        }
        // Exporters add their own initializers (shape constants, axes); only the state-dict
        // names go to the recognizer, which then requires every one of them.
        let expected = Set(config.expectedTensors.map(\.name))
        let named = inits.filter { expected.contains($0.name) }.map { (name: $0.name, data: $0.tensor) }
        // A DiCo-named tensor of the wrong shape or dtype, or a missing one, shows the graph is
        // not DiCo: it imports as a generic graph, the recognizer's problems as the reason. Values
        // are another matter: a DiCo state dict holding NaN is an error naming the tensor.
        let weights: DiCoWeights
        do { weights = try DiCoRecognizer.recognize(named, file: path, checkValues: false) } catch let e as DicoError {
            throw NotDiCo(reason: e.message.replacingOccurrences(of: "\(path): ", with: "").replacingOccurrences(of: "\n  ", with: "; "))
        }
        if checkValues {
            let order = config.expectedTensors.map { (weights.strippedPrefix + $0.name, weights.tensors[$0.name]!) }
            let problems = DiCoRecognizer.nonFiniteTensors(order)
            guard problems.isEmpty else { throw DiCoRecognizer.invalidStateDict(file: path, config: config, problems: problems) }
        }
        let graph = try DiCoGraphBuilder.build(weights)
        let binding = try bindInputs(model, config: config)
        let head = "ONNX \(model.producerName) \(model.producerVersion) export, opset \(model.defaultOpset ?? 0), \(model.graph.nodes.count) nodes"
        let extra = inits.count - named.count
        let constants = extra > 0 ? ["\(extra) exporter constant\(extra == 1 ? "" : "s") (shapes, axes) not needed by the canonical graph"] : []
        // The proof (and the value check) read every weight through the mappings; give those
        // pages back, so that conversion streams from here as it does from safetensors.
        defer {
            var released = Set<ObjectIdentifier>()
            for i in inits {
                if case .mapped(let file, _) = i.tensor.storage, released.insert(ObjectIdentifier(file)).inserted {
                    file.release(offset: 0, count: file.size)
                }
            }
        }
        guard prove else {
            let note = "\(head): recognized as DiCo by its state-dict initializers; not proven to compute the DiCo forward pass (conversion and run prove it; inspect --prove does here)"
            return Canonical(weights: weights, graph: graph, inputNames: binding.names, proofDifference: nil, notes: [note] + constants)
        }
        let diff = try Self.prove(model, canonical: graph, config: config, binding: binding, threads: threads)
        guard diff <= proofTolerance else {
            throw NotDiCo(reason: "its initializers are a DiCo state dict, but the graph computes something else: relative L2 difference \(formatted(diff)) from the DiCo forward pass on probe inputs (bound \(proofTolerance))")
        }
        let notes = ["\(head): canonicalized as DiCo (probe relative L2 \(formatted(diff)))"] + constants
        return Canonical(weights: weights, graph: graph, inputNames: binding.names, proofDifference: diff, notes: notes)
    }

    static func formatted(_ v: Double) -> String { String(format: "%.2e", v) }

    /// The graph inputs in DiCo's order x, t, y, their element types, and the sizes to probe
    /// at: the export's static sizes where it has them, else batch 2 at 8x8.
    public struct Binding: Sendable {
        public var names: [String]
        public var batch: Int, height: Int, width: Int
        /// Whether the batch is fixed by the export (then it must be fed exactly).
        public var staticBatch: Bool
        public var tType: DType, yType: DType
    }

    /// Binds the three graph inputs.
    /// - Throws: `NotDiCo` when the inputs are not DiCo's x, t, y.
    public static func bindInputs(_ model: ONNXModel, config: DiCoConfig) throws -> Binding {
        let ins = model.graph.inputs
        guard ins.count == 3 else {
            throw NotDiCo(reason: "DiCo takes three inputs (x, t, y); the graph has \(ins.count): \(ins.map(\.name))")
        }
        // The canonical graph has DiCo's one output; a graph with more (an intermediate exported
        // for debugging, a split of the prediction) would lose them, so it imports as written.
        let outs = model.graph.outputs
        guard outs.count == 1 else {
            throw NotDiCo(reason: "DiCo has one output; the graph has \(outs.count): \(outs.map(\.name))")
        }
        func dims(_ v: ONNXValueInfo) -> [Int?]? {
            v.shape.map { $0.map { if case .value(let n) = $0, n > 0, n <= 1 << 16 { return Int(n) } else { return nil } } }
        }
        guard let xd = dims(ins[0]), xd.count == 4, xd[1] == nil || xd[1] == config.inChannels,
              ins[0].elementType == nil || ins[0].elementType == .f32 else {
            throw NotDiCo(reason: "input '\(ins[0].name)' is not a float32 [N,\(config.inChannels),H,W] latent")
        }
        guard let td = dims(ins[1]), td.count == 1, let tType = ins[1].elementType, [.f32, .i64, .i32, .f64].contains(tType) else {
            throw NotDiCo(reason: "input '\(ins[1].name)' is not a rank-1 timestep vector")
        }
        guard let yd = dims(ins[2]), yd.count == 1, let yType = ins[2].elementType, [.i64, .i32].contains(yType) else {
            throw NotDiCo(reason: "input '\(ins[2].name)' is not a rank-1 integer class vector")
        }
        let fixed = xd[0] ?? td[0] ?? yd[0]
        let height = xd[2] ?? 8, width = xd[3] ?? 8
        // A bounded probe: a declared shape may be absurd (each dimension is capped above, not
        // their product).
        guard height % 4 == 0, width % 4 == 0 else {
            throw NotDiCo(reason: "input '\(ins[0].name)' fixes the latent at \(height)x\(width); DiCo needs H and W divisible by 4")
        }
        let (elements, overflow) = (fixed ?? 2).multipliedReportingOverflow(by: config.inChannels * height * width)
        guard !overflow, elements <= 1 << 26 else {
            throw NotDiCo(reason: "input '\(ins[0].name)' declares a fixed shape of more than 2^26 elements; cannot probe it")
        }
        return Binding(names: ins.map(\.name), batch: fixed ?? 2, height: height, width: width, staticBatch: fixed != nil,
                       tType: tType, yType: yType)
    }
}

extension ONNXCanonicalizer.Binding {
    /// The graph's inputs for one batch, in the element types the graph declares: `t` rounded
    /// only for an integer timestep input (DiCo's timesteps may be fractional), `y` as int32 or
    /// int64.
    /// - Throws: `DicoError(.internalError)` when the values do not fit their shapes.
    public func inputs(x: [Float], shape xShape: [Int], t: [Float], y: [Int64]) throws -> [String: ONNXValue] {
        let n = t.count
        let tStorage: ONNXValue.Storage
        switch tType {
        case .i64: tStorage = .i64(t.map { Int64($0.rounded()) })
        case .i32: tStorage = .i32(t.map { Int32($0.rounded()) })
        case .f64: tStorage = .f64(t.map(Double.init))
        default: tStorage = .f32(t)
        }
        let yStorage: ONNXValue.Storage = yType == .i32 ? .i32(y.map { Int32($0) }) : .i64(y)
        guard let xv = ONNXValue(shape: xShape, floats: x), let tv = ONNXValue(shape: [n], storage: tStorage),
              let yv = ONNXValue(shape: [n], storage: yStorage) else {
            throw DicoError(.internalError, "ONNX inputs do not fit their shapes")
        }
        return [names[0]: xv, names[1]: tv, names[2]: yv]
    }
}

extension ONNXCanonicalizer {
    /// Runs the ONNX graph as written and the canonical graph on the same seeded probe and
    /// returns the relative L2 difference of their outputs.
    static func prove(_ model: ONNXModel, canonical: Graph, config: DiCoConfig, binding b: Binding, threads: Int) throws -> Double {
        let interpreter: ONNXInterpreter
        do {
            interpreter = try ONNXInterpreter(model: model, convertWeightsOnUse: true, threads: threads)
        } catch let e as DicoError where e.kind == .invalidInput {
            throw NotDiCo(reason: "the graph cannot run in the ONNX interpreter: \(e.message)")
        }
        let executor = try Executor(graph: canonical, threads: threads)
        executor.releaseMappedConstants = true
        // Two probe samples at least, so that the timestep and the class are each seen at two
        // values (a graph that ignored either would otherwise pass): timestep 999 with the null
        // class, timestep 37 with a real class. A fixed batch of one runs them one by one.
        let rows = config.tableRows
        let perRun = b.batch
        let runs = b.batch >= 2 ? 1 : 2
        var theirsAll: [Float] = [], oursAll: [Float] = []
        var rng = SplitMix64(seed: 0x9E37_79B9_7F4A_7C15)
        func next() -> Float { Float(rng.next() >> 40) / Float(1 << 24) * 4 - 2 }
        for r in 0..<runs {
            let n = perRun, xShape = [n, config.inChannels, b.height, b.width]
            // Seeded, unit-scale latents; timesteps at both ends and inside; labels that include
            // the null class (the unconditional half of guidance).
            let x = (0..<(n * config.inChannels * b.height * b.width)).map { _ in next() }
            let t: [Float] = (0..<n).map { i in [999, 37, 500, 0, 750, 250][(i + r) % 6] }
            let y: [Int64] = (0..<n).map { i in Int64((i + r) % 2 == 0 ? rows - 1 : (3 + 7 * (i + r)) % max(rows - 1, 1)) }
            let theirs: ONNXValue
            do {
                theirs = try interpreter.runOrdered(try b.inputs(x: x, shape: xShape, t: t, y: y))[0]
            } catch let e as DicoError where e.kind == .invalidInput {
                throw NotDiCo(reason: "the graph does not run on a DiCo input: \(e.message)")
            }
            let ours = try executor.run([
                "x": HostTensor(shape: xShape, floats: x),
                "t": HostTensor(shape: [n], floats: t),
                "y": HostTensor(shape: [n], int64s: y),
            ])[0]
            guard let a = theirs.floats, theirs.shape == ours.shape, let mine = ours.floats else {
                throw NotDiCo(reason: "the graph's first output is \(theirs.dtype.rawValue) \(theirs.shape); the DiCo forward pass gives float32 \(ours.shape)")
            }
            theirsAll += a
            oursAll += mine
        }
        return relativeL2(theirsAll, reference: oursAll)
    }
}

/// ||a - reference|| / ||reference|| summed in Double; infinity when either side holds NaN or
/// Inf (no agreement can be read from them), 0 for two all-zero outputs.
func relativeL2(_ a: [Float], reference: [Float]) -> Double {
    var num = 0.0, den = 0.0
    for i in reference.indices {
        let d = Double(a[i]) - Double(reference[i])
        num += d * d
        den += Double(reference[i]) * Double(reference[i])
    }
    guard num.isFinite, den.isFinite else { return .infinity }
    return (num / max(den, .leastNormalMagnitude)).squareRoot()
}
