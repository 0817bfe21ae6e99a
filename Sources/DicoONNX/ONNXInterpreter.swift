import COpenBLAS
import DicoCore

/// Runs an `ONNXModel` as written: every node, in file order, on concrete values (the
/// reference the verifier compares optimized graphs against).
///
/// Construction checks everything that can be checked without running: each node's domain,
/// op and attributes are supported at the model's opset, and every input is produced by an
/// earlier node or is an initializer or graph input. Initializers and `Constant` outputs are
/// converted once, here (or, with `convertWeightsOnUse`, the large float initializers at each use,
/// float32 Conv and Gemm weights read in place in the mapped file: for one-off runs over a
/// multi-GB model). The exporters' decomposed LayerNorm and GELU and the transposed channel
/// LayerNormalization are recognized here and run as one kernel each (`ONNXFusion`, counted in
/// `fusions`). Running then evaluates node by node with real shapes, so a
/// `Shape` node sees the runtime batch; each intermediate value is released after its last
/// reader, so memory stays bounded by the live values.
///
/// `run` reads only state fixed at construction, so concurrent runs on one instance are safe.
/// Construction turns OpenBLAS's own threading off for the process, as `Executor` does: the
/// sgemm calls run on the executor's grid of single-threaded tiles over the CPUs, whose blocks
/// do not depend on the thread count.
public final class ONNXInterpreter: @unchecked Sendable {
    /// The default-domain opsets whose operator definitions the interpreter implements.
    public static let supportedOpsets: ClosedRange<Int64> = 11...21

    /// The model's path (the prefix of every error message). The interpreter keeps its own
    /// converted copy of the weights, not the `ONNXModel`, so dropping the model frees its tensors.
    public let modelPath: String
    /// The default-domain opset the model imports.
    public let opset: Int
    /// The graph outputs' names, in graph order.
    public let outputNames: [String]
    /// The declared graph outputs, to check results against.
    private let outputInfos: [ONNXValueInfo]
    /// Workers for the kernels that split their work (bound to `ONNXThreads.limit` while running).
    public let threads: Int

    private struct Step {
        let node: ONNXNode
        let kernel: Kernel
        /// Value slots of the inputs (nil for an omitted optional input) and outputs (nil for
        /// an omitted optional output).
        let inputs: [Int?]
        let outputs: [Int?]
        /// Inputs the kernel reads in place from the mapped file (it gets nil for them), by
        /// position: their pages leave the resident set after the step.
        let inPlace: [(position: Int, tensor: TensorData)]
        /// Slots whose last reader is this step: released after it runs.
        var releases: [Int] = []
    }

    private var steps: [Step] = []
    /// Slots holding initializers and constant-node outputs.
    private var constantSlots: [Int: ONNXValue] = [:]
    /// With `convertWeightsOnUse`: slots of large float initializers (the weights), kept as the
    /// file's tensors and read in place (aligned float32 Conv and Gemm weights) or converted for
    /// the one step that reads them on each run, then dropped, so a one-off run over a 2.8 GB
    /// model costs at most one weight's copy at a time instead of a second copy of every weight
    /// (the import proof). Repeated runs (the verifier) convert once instead.
    private var lazySlots: [Int: TensorData] = [:]
    /// Initializers at least this large (bytes, float types) are converted on use.
    static let lazyInitializerBytes = 1 << 12
    private var inputSlots: [(info: ONNXValueInfo, slot: Int)] = []
    private var outputSlots: [Int] = []
    /// Value names by slot.
    private var slotNames: [String] = []
    private var slotCount: Int { slotNames.count }

    /// When true, `run` adds each step's wall time (weight conversion on use included) to
    /// `profile`, keyed by op type (for benchmarks; off by default, and nothing is printed).
    public var profiling = false
    private let profileLock = Lock()
    private var profileTotals: [String: (seconds: Double, count: Int)] = [:]
    /// Seconds and step count per op type, accumulated over profiled runs.
    public var profile: [String: (seconds: Double, count: Int)] { profileLock.locked { profileTotals } }

    /// Prepares `model` for running.
    /// - Throws: `DicoError.invalidInput` naming the node, its op and the opset when a node
    ///   uses an unsupported op, domain or attribute, or reads a value nothing produces.
    /// - Parameter convertWeightsOnUse: read float initializers of 4 KiB or more from the file
    ///   when a node reads them (in place for float32 Conv and Gemm weights, else converted),
    ///   on every run, and release their file pages after (for one-off runs).
    /// - Parameter threads: workers for the large kernels (sgemm, elementwise maps); nil for
    ///   the online CPUs. Results do not depend on it.
    public init(model: ONNXModel, convertWeightsOnUse: Bool = false, threads: Int? = nil) throws {
        self.threads = max(1, threads ?? ONNXThreads.limit)
        modelPath = model.path
        outputInfos = model.graph.outputs
        let path = model.path
        guard let opset = model.defaultOpset else { throw DicoError.invalid(path, "the model imports no ai.onnx opset") }
        guard Self.supportedOpsets.contains(opset) else {
            throw DicoError.invalid(path, "ai.onnx opset \(opset) is not supported (the interpreter implements opsets \(Self.supportedOpsets.lowerBound) to \(Self.supportedOpsets.upperBound))")
        }
        self.opset = Int(opset)
        // The sgemm driver splits work itself; OpenBLAS threads on top would oversubscribe
        // (the same process-wide setting the IR executor makes).
        openblas_set_num_threads(1)
        let graph = model.graph
        outputNames = graph.outputs.map(\.name)

        var slotOf: [String: Int] = [:]
        func newSlot(_ name: String) -> Int {
            slotNames.append(name)
            slotOf[name] = slotNames.count - 1
            return slotNames.count - 1
        }
        for i in graph.initializers {
            let s = newSlot(i.name)
            if convertWeightsOnUse, i.tensor.dtype.isFloat, i.tensor.byteCount >= Self.lazyInitializerBytes,
               let n = checkedElementCount(i.tensor.shape), n.multipliedReportingOverflow(by: i.tensor.dtype.byteSize) == (i.tensor.byteCount, false) {
                lazySlots[s] = i.tensor
                continue
            }
            do { constantSlots[s] = try ONNXValue(i.tensor) } catch let e as DicoError {
                throw DicoError.invalid(path, "initializer '\(i.name)': \(e.message)")
            }
        }
        for v in graph.inputs {
            guard slotOf[v.name] == nil else { throw DicoError.invalid(path, "graph input '\(v.name)' is also an initializer or listed twice") }
            inputSlots.append((v, newSlot(v.name)))
        }

        for (index, node) in graph.nodes.enumerated() {
            let label = "node '\(node.name)' (\(node.opType), opset \(opset))"
            guard node.domain.isEmpty || node.domain == "ai.onnx" else {
                throw DicoError.invalid(path, "\(label): domain '\(node.domain)' is not supported (only the default ai.onnx domain is)")
            }
            guard let prepare = onnxKernelPreparers[node.opType] else {
                throw DicoError.invalid(path, "\(label): operator \(node.opType) is not supported")
            }
            var inputs: [Int?] = []
            var constants: [Int: ONNXValue] = [:], fileConstants: [Int: TensorData] = [:]
            for (k, name) in node.inputs.enumerated() {
                if name.isEmpty { inputs.append(nil); continue }
                guard let s = slotOf[name] else {
                    throw DicoError.invalid(path, "\(label): input \(k) '\(name)' is not an initializer, a graph input or the output of an earlier node")
                }
                inputs.append(s)
                if let c = constantSlots[s] { constants[k] = c }
                if let t = lazySlots[s] { fileConstants[k] = t }
            }
            let kernel: Kernel
            var spec = NodeSpec(node: node, opset: Int(opset), constants: constants)
            spec.fileConstants = fileConstants
            do {
                kernel = try prepare(spec)
            } catch let f as OpFailure {
                throw DicoError.invalid(path, "\(label): \(f.message)")
            }
            var outputs: [Int?] = []
            for name in node.outputs {
                if name.isEmpty { outputs.append(nil); continue }
                guard slotOf[name] == nil else { throw DicoError.invalid(path, "\(label): output '\(name)' is already defined (node #\(index))") }
                outputs.append(newSlot(name))
            }
            // A Constant is evaluated now, once; its output becomes a constant slot.
            if node.opType == "Constant" {
                do {
                    guard let s = outputs.first ?? nil else { throw OpFailure("a Constant node needs a named output") }
                    constantSlots[s] = try kernel([])[0]
                } catch let f as OpFailure {
                    throw DicoError.invalid(path, "\(label): \(f.message)")
                }
                continue
            }
            steps.append(Step(node: node, kernel: kernel, inputs: inputs, outputs: outputs,
                              inPlace: spec.claimed.positions.compactMap { k in inputs[k].map { (k, lazySlots[$0]!) } }))
        }
        for o in graph.outputs {
            guard let s = slotOf[o.name] else { throw DicoError.invalid(path, "graph output '\(o.name)' is not produced by any node, input or initializer") }
            outputSlots.append(s)
        }

        if !Self.unfused { fuse() }

        // Last readers: a slot is released after its last step, unless it is a constant (kept
        // for every run) or a graph output.
        var last: [Int: Int] = [:]
        for (i, step) in steps.enumerated() { for case let s? in step.inputs { last[s] = i } }
        let kept = Set(outputSlots).union(constantSlots.keys).union(lazySlots.keys)
        for (s, i) in last where !kept.contains(s) { steps[i].releases.append(s) }
        // Outputs no one reads (an unused LayerNormalization Mean, say) are dropped at once.
        for i in steps.indices {
            for case let s? in steps[i].outputs where last[s] == nil && !kept.contains(s) { steps[i].releases.append(s) }
        }
    }

    /// Replaces each pattern `recognizeFusions` finds by one step at the place of its last node
    /// (its input is computed before its first node, its output read only after its last).
    private func fuse() {
        let lazy = lazySlots
        var converted: [Int: ONNXValue] = [:]
        let patterns = recognizeFusions(steps.map { FusionNode(node: $0.node, inputs: $0.inputs, outputs: $0.outputs) },
                                        constant: { [constantSlots] s in
                                            if let c = constantSlots[s] { return c }
                                            // A large affine constant kept in the file: converted once, for the fused kernel.
                                            if converted[s] == nil, let t = lazy[s] { converted[s] = try? ONNXValue(t) }
                                            return converted[s]
                                        },
                                        graphOutputs: Set(outputSlots), opset: opset)
        guard !patterns.isEmpty else { return }
        var at: [Int: FusedPattern] = [:]
        var removed = Set<Int>()
        for p in patterns {
            at[p.nodes.max()!] = p
            removed.formUnion(p.nodes)
            fusions[p.kind, default: 0] += 1
        }
        steps = steps.indices.compactMap { i in
            if let p = at[i] {
                let last = steps[i].node
                let node = ONNXNode(name: last.name, opType: "fused \(p.kind.rawValue)", domain: "", inputs: p.inputs.map { $0.map { slotNames[$0] } ?? "" },
                                    outputs: p.outputs.map { $0.map { slotNames[$0] } ?? "" }, attributes: [:])
                return Step(node: node, kernel: p.kernel, inputs: p.inputs, outputs: p.outputs, inPlace: [])
            }
            return removed.contains(i) ? nil : steps[i]
        }
    }

    /// The patterns of `ONNXFusion` found in the graph and run as one kernel each, by kind
    /// (kinds that never fired are absent).
    public private(set) var fusions: [ONNXFusion: Int] = [:]
    /// How many node patterns run fused (the sum of `fusions`).
    public var fusedPatternCount: Int { fusions.values.reduce(0, +) }
    /// Set (with `$unfused.withValue(true)`) around a construction to run every node on its
    /// own: the tests compare fused and unfused results.
    @TaskLocal static var unfused = false

    /// Runs the graph on `inputs` (by graph-input name) and returns every graph output by name.
    /// - Throws: `DicoError.invalidInput`: "<model path>: input '<name>' ..." for a missing,
    ///   unknown or mistyped input, and "<model path>: node '<name>' (<op>): <what>" when a
    ///   node cannot run on the values it gets (shapes that disagree, indices out of range).
    public func run(_ inputs: [String: ONNXValue]) throws -> [String: ONNXValue] {
        let ordered = try runOrdered(inputs)
        return Dictionary(zip(outputNames, ordered), uniquingKeysWith: { a, _ in a })
    }

    /// `run`, with the outputs in graph-output order.
    public func runOrdered(_ inputs: [String: ONNXValue]) throws -> [ONNXValue] {
        try ONNXThreads.$limit.withValue(threads) { try runSteps(inputs) }
    }

    private func runSteps(_ inputs: [String: ONNXValue]) throws -> [ONNXValue] {
        let path = modelPath
        var slots = [ONNXValue?](repeating: nil, count: slotCount)
        for (s, v) in constantSlots { slots[s] = v }
        let known = Set(inputSlots.map(\.info.name))
        for name in inputs.keys.sorted() where !known.contains(name) {
            throw DicoError.invalid(path, "input '\(name)' is not an input of the graph (inputs: \(inputSlots.map(\.info.name).joined(separator: ", ")))")
        }
        // Inputs must have the declared element type, rank and fixed dimensions, as in
        // onnxruntime: a static-shape export may compute other shapes without any node
        // failing (the legacy exporter writes -1 batches into its Reshape constants), and its
        // result would then not be the model's.
        for (info, s) in inputSlots {
            guard let v = inputs[info.name] else { throw DicoError.invalid(path, "input '\(info.name)' is missing") }
            if let t = info.elementType, t.logicalFloat != v.dtype {
                throw DicoError.invalid(path, "input '\(info.name)' is \(v.dtype.rawValue), the graph declares \(t.rawValue)")
            }
            if let dims = info.shape, !conforms(v.shape, dims) {
                throw DicoError.invalid(path, "input '\(info.name)' has shape \(v.shape), the graph declares \(describe(dims))\(firstReader(s))")
            }
            slots[s] = v
        }
        for step in steps {
            let start = profiling ? monotonicSeconds() : 0
            let args = try step.inputs.enumerated().map { k, slot -> ONNXValue? in
                guard let slot, !step.inPlace.contains(where: { $0.position == k }) else { return nil }
                if let lazy = lazySlots[slot] {
                    let v = try ONNXValue(lazy)
                    // The copy is what the kernel reads: the file's pages can leave our
                    // resident set, so one run over a multi-GB model keeps memory flat.
                    if case .mapped(let file, let offset) = lazy.storage { file.release(offset: offset, count: lazy.byteCount) }
                    return v
                }
                return slots[slot]
            }
            let results: [ONNXValue]
            do {
                results = try step.kernel(args)
            } catch let f as OpFailure {
                throw DicoError.invalid(path, "node '\(step.node.name)' (\(step.node.opType)): \(f.message)")
            }
            guard results.count >= step.outputs.count else {
                throw DicoError(.internalError, "\(path): node '\(step.node.name)' (\(step.node.opType)): kernel returned \(results.count) outputs for \(step.outputs.count)")
            }
            for (_, t) in step.inPlace { if case .mapped(let file, let offset) = t.storage { file.release(offset: offset, count: t.byteCount) } }
            for (k, s) in step.outputs.enumerated() { if let s { slots[s] = results[k] } }
            for s in step.releases { slots[s] = nil }
            if profiling {
                let spent = monotonicSeconds() - start
                profileLock.locked {
                    let prev = profileTotals[step.node.opType] ?? (0, 0)
                    profileTotals[step.node.opType] = (prev.seconds + spent, prev.count + 1)
                }
            }
        }
        return try outputSlots.enumerated().map { k, s in
            guard let v = try slots[s] ?? lazySlots[s].map(ONNXValue.init) else {
                throw DicoError(.internalError, "\(path): graph output '\(outputNames[k])' was not computed")
            }
            if let dims = outputInfos[k].shape, !conforms(v.shape, dims) {
                let producer = steps.first { $0.outputs.contains(s) }.map { " (computed by node '\($0.node.name)' (\($0.node.opType)))" } ?? ""
                throw DicoError.invalid(path, "graph output '\(outputNames[k])' has shape \(v.shape), the graph declares \(describe(dims))\(producer)")
            }
            return v
        }
    }

    /// How many step inputs are read in place from the mapped file (for tests).
    var inPlaceReadCount: Int { steps.reduce(0) { $0 + $1.inPlace.count } }

    /// Per step (Constant nodes excluded), the node's name and the values released after it,
    /// sorted: the memory plan, for tests.
    var releasePlan: [(node: String, released: [String])] {
        steps.map { ($0.node.name, $0.releases.map { slotNames[$0] }.sorted()) }
    }

    /// Whether `shape` has the declared rank and every fixed dimension of `dims`.
    private func conforms(_ shape: [Int], _ dims: [ONNXDim]) -> Bool {
        guard shape.count == dims.count else { return false }
        for (d, actual) in zip(dims, shape) { if case let .value(c) = d, c != Int64(actual) { return false } }
        return true
    }

    /// "; first read by node ..." for a slot, to say where a refused input would have gone.
    private func firstReader(_ slot: Int) -> String {
        guard let step = steps.first(where: { $0.inputs.contains(slot) }) else { return "" }
        return "; first read by node '\(step.node.name)' (\(step.node.opType)): the export has fixed shapes there, re-export with dynamic axes to run other shapes"
    }

    private func describe(_ dims: [ONNXDim]) -> String {
        "[" + dims.map { d -> String in
            switch d {
            case let .value(v): return "\(v)"
            case let .param(p): return p
            case .unknown: return "?"
            }
        }.joined(separator: ", ") + "]"
    }
}

extension DType {
    /// The element type an interpreter value of this declared type has (float16 and
    /// bfloat16 are computed as float32; narrow integers as int32).
    var logicalFloat: DType {
        switch self {
        case .f16, .bf16: return .f32
        case .i16, .i8, .u8: return .i32
        default: return self
        }
    }
}
