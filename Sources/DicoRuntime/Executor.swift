#if canImport(Glibc)
import Glibc
#endif
import DicoCore
import DicoIR

/// Runs an IR graph on the CPU in float32. Weights stay in the mapped model file when they
/// are float32 and aligned; other float types are widened once, at construction.
///
/// Threads: GEMMs run as a fixed grid of single-threaded sgemm tiles and the other kernels
/// split their outputs into disjoint ranges; either way each output element is computed by
/// the same arithmetic for every thread count, so results do not depend on it. One `run` at a time per executor.
public final class Executor: @unchecked Sendable {
    public let graph: Graph
    public let threads: Int
    /// Float32 pointers to the constants, by value index.
    private var constants: [Int: UnsafePointer<Float>] = [:]
    /// Widened copies of non-float32 or misaligned constants, kept alive here.
    private var owned: [OwnedBytes] = []
    private let pool = BufferPool()
    /// Nodes whose inputs are all constants, evaluated once here; `run` skips them. Passes
    /// leave such nodes in place when folding them would grow the file (the adaLN weight
    /// concatenation of `fold-adaln-linears`), so they cost a copy at load, not per run.
    private var precomputed = Set<Int>()

    /// When true, `run` adds each node's wall and CPU time to `profile`, keyed by op name and
    /// kernel path (for `bench --profile`).
    public var profiling = false
    /// When profiling, also key by the node's output shape and, for convs and linears, the
    /// weight shape (`bench --profile-shapes`), to see which GEMM shapes are slow.
    public var profileShapes = false
    /// After the last node that reads a constant mapped from a file, release its pages from
    /// the resident set (they stay in the page cache). For one-off runs over a large model
    /// (the ONNX import proof), so memory stays flat; a later run faults them back in.
    public var releaseMappedConstants = false
    /// Wall seconds, process CPU seconds, node count and multiply-accumulates per kernel
    /// path, accumulated over profiled runs.
    public private(set) var profile: [String: ProfileEntry] = [:]
    /// Execution-plan fusion: a plain 1x1 `conv2d` whose output only a depthwise 3x3 conv
    /// reads runs with it as one kernel, the 1x1 output never written to graph memory
    /// (`pointwiseDepthwiseKernel`), on images of up to `pointwiseDepthwiseMaxPixels` pixels,
    /// bit-identical to the two nodes. The graph keeps both nodes. Off by default: on DiCo-S
    /// and DiCo-XL batch 2 it measured no faster than the two kernels (`bench --plan-fusion`).
    public var planFusion = false
    /// The fusable pairs, by node index: depthwise node -> the 1x1 node it absorbs.
    private var pointwiseInto: [Int: Int] = [:]

    /// The pairs of nodes the executor may run as one (the 1x1 conv's and the depthwise
    /// conv's names), in graph order, whether or not `planFusion` is on; a pair fuses in a
    /// run when its images have at most `pointwiseDepthwiseMaxPixels` pixels.
    public var fusablePairs: [(pointwise: String, depthwise: String)] {
        pointwiseInto.sorted { $0.key < $1.key }.map { (graph.nodes[$0.value].name, graph.nodes[$0.key].name) }
    }

    /// The number of online CPUs, the default thread count.
    public static var defaultThreads: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Prepares `graph` for execution.
    /// - Throws: `DicoError(.internalError)` if the graph fails the IR verifier, or
    ///   `.invalidInput` if it holds an op this executor cannot run with its attributes.
    public init(graph: Graph, threads: Int = Executor.defaultThreads) throws {
        try graph.verify()
        for o in graph.outputs where graph[o].type.dtype != .f32 {
            throw DicoError(.invalidInput, "graph output '\(graph[o].name)' is \(graph[o].type.dtype.rawValue); the executor produces float32 outputs only")
        }
        for node in graph.nodes {
            for (k, i) in node.inputs.enumerated() where graph[i].type.dtype != .f32 && !(node.op == .embedding && k == 1 && graph.inputs.contains(i)) {
                throw DicoError(.invalidInput, "node '\(node.name)' (\(node.op.name)): input \(k) is \(graph[i].type.dtype.rawValue); only embedding indices taken from a graph input may be integers")
            }
        }
        useSingleThreadedBLAS()
        self.graph = graph
        self.threads = max(1, threads)
        for id in graph.constantIDs {
            guard let d = graph.constant(id), d.logicalDType == .f32 else { continue }
            let raw = d.bytes.baseAddress
            if d.dtype == .f32, let raw, Int(bitPattern: raw) % MemoryLayout<Float>.alignment == 0 {
                constants[id.index] = raw.assumingMemoryBound(to: Float.self)
            } else {
                let o = OwnedBytes(count: max(d.elementCount, 1) * 4)
                convertToFloat32(d, into: o.pointer.assumingMemoryBound(to: Float.self))
                owned.append(o)
                constants[id.index] = UnsafePointer(o.pointer.assumingMemoryBound(to: Float.self))
            }
        }
        try precomputeConstantNodes()
        findPointwiseDepthwisePairs()
    }

    /// Finds each plain 1x1 conv (stride 1, no padding, one group, no epilogue) whose output
    /// is not a graph output and is read once, as the input of a depthwise 3x3 `conv2d` or
    /// `conv2d_activation` (stride 1, padding 1, one group per channel) of the same channels.
    private func findPointwiseDepthwisePairs() {
        var reads = [Int](repeating: 0, count: graph.values.count)
        for node in graph.nodes { for i in node.inputs { reads[i.index] += 1 } }
        for o in graph.outputs { reads[o.index] += 1 }
        func weightShape(_ node: Node) -> [Int]? {
            let s = graph[node.inputs[1]].type.shape.compactMap(\.constant)
            return s.count == 4 ? s : nil
        }
        for (n, node) in graph.nodes.enumerated() where !precomputed.contains(n) {
            let groups: Int
            switch node.op {
            case .conv2d(stride: 1, padding: 1, groups: let g), .conv2dActivation(stride: 1, padding: 1, groups: let g, activation: _): groups = g
            default: continue
            }
            guard case let .node(p) = graph[node.inputs[0]].source, !precomputed.contains(p), reads[node.inputs[0].index] == 1,
                  case .conv2d(stride: 1, padding: 0, groups: 1) = graph.nodes[p].op,
                  let w1 = weightShape(graph.nodes[p]), w1[2] == 1, w1[3] == 1,
                  let w2 = weightShape(node), w2 == [w1[0], 1, 3, 3], groups == w1[0] else { continue }
            pointwiseInto[n] = p
        }
    }

    /// Evaluates, in order, every node that reads only constants (or other such nodes) and
    /// has a fully constant shape, storing its output beside the constants.
    private func precomputeConstantNodes() throws {
        var shapes = [[Int]](repeating: [], count: graph.values.count)
        for (i, v) in graph.values.enumerated() { shapes[i] = v.type.shape.compactMap(\.constant) }
        for (n, node) in graph.nodes.enumerated() {
            guard node.inputs.allSatisfy({ constants[$0.index] != nil }),
                  graph[node.output].type.shape.allSatisfy({ $0.constant != nil }) else { continue }
            let count = shapes[node.output.index].reduce(1, *)
            let o = OwnedBytes(count: max(count, 1) * 4)
            let out = o.pointer.assumingMemoryBound(to: Float.self)
            try execute(node, out: out, f32: constants, i64: [:], shapes: shapes)
            owned.append(o)
            constants[node.output.index] = UnsafePointer(out)
            precomputed.insert(n)
        }
    }

    /// Whether `node` (by index) was evaluated once at construction (for tests).
    public func isPrecomputed(_ node: Int) -> Bool { precomputed.contains(node) }

    /// Runs the graph on `inputs` (by graph-input name) and returns its outputs in order.
    /// - Throws: `DicoError.invalidInput` naming the input when one is missing, has the
    ///   wrong dtype or shape, or holds a class index outside the embedding table.
    public func run(_ inputs: [String: HostTensor]) throws -> [HostTensor] {
        defer { pool.releaseAll() }
        let bindings = try bind(inputs)
        var shapes = [[Int]](repeating: [], count: graph.values.count)
        for (i, v) in graph.values.enumerated() {
            var s: [Int] = []
            for d in v.type.shape {
                guard let e = d.evaluate(bindings) else {
                    throw DicoError(.invalidInput, "input 'x': spatial size \(bindings[.H] ?? 0) x \(bindings[.W] ?? 0) does not fit the graph: '\(v.name)' needs \(d) to be whole (DiCo needs H and W divisible by 4)")
                }
                s.append(e)
            }
            shapes[i] = s
        }

        var f32: [Int: UnsafePointer<Float>] = constants
        var i64: [Int: UnsafePointer<Int64>] = [:]
        var inputStore: [Any] = []   // keeps input arrays' copies alive during the run
        for id in graph.inputs {
            let t = inputs[graph[id].name]!
            switch t.storage {
            case let .f32(v):
                let b = pool.take(v.count)
                v.withUnsafeBufferPointer { b.update(from: $0.baseAddress!, count: v.count) }
                f32[id.index] = UnsafePointer(b)
            case let .i64(v):
                let p = UnsafeMutablePointer<Int64>.allocate(capacity: max(v.count, 1))
                p.initialize(from: v, count: v.count)
                inputStore.append(Deallocator(p))
                i64[id.index] = UnsafePointer(p)
            }
        }
        _ = inputStore

        // The fused pairs of this run (their image size is known now); a 1x1 node absorbed
        // into a depthwise one runs there, so its inputs must live until then.
        var fused: [Int: Int] = [:], absorbed: [Int: Int] = [:]
        if planFusion {
            for (d, p) in pointwiseInto {
                let s = shapes[graph.nodes[p].inputs[0].index]
                if s[2] * s[3] <= pointwiseDepthwiseMaxPixels { fused[d] = p; absorbed[p] = d }
            }
        }
        // The last node that reads each value; a buffer returns to the pool after it.
        var lastUse = [Int](repeating: -1, count: graph.values.count)
        for (n, node) in graph.nodes.enumerated() { for i in node.inputs { lastUse[i.index] = max(lastUse[i.index], absorbed[n] ?? n) } }
        for o in graph.outputs { lastUse[o.index] = Int.max }

        for (n, node) in graph.nodes.enumerated() where !precomputed.contains(n) && absorbed[n] == nil {
            let out = pool.take(shapes[node.output.index].reduce(1, *))
            let start = profiling ? monotonicSeconds() : 0, cpuStart = profiling ? processCPUSeconds() : 0
            let pointwise = fused[n].map { graph.nodes[$0] }
            if let pointwise {
                executePointwiseDepthwise(pointwise, node, out: out, f32: f32, shapes: shapes)
            } else {
                try execute(node, out: out, f32: f32, i64: i64, shapes: shapes)
            }
            if profiling {
                var key = kernelPath(node, shapes) + (profileShapes ? shapeKey(node, shapes) : "")
                if let pointwise { key = kernelPath(pointwise, shapes) + " + " + key + " (fused)" }
                var e = profile[key] ?? ProfileEntry()
                e.seconds += monotonicSeconds() - start
                e.cpuSeconds += processCPUSeconds() - cpuStart
                e.count += 1
                e.macs += multiplyAccumulates(node, shapes) + (pointwise.map { multiplyAccumulates($0, shapes) } ?? 0)
                profile[key] = e
            }
            f32[node.output.index] = UnsafePointer(out)
            // A fused node also reads its 1x1 node's inputs; the 1x1 output never existed.
            let read = Set(node.inputs + (pointwise?.inputs ?? [])).subtracting(pointwise.map { [$0.output] } ?? [])
            if releaseMappedConstants {
                for i in read where lastUse[i.index] == n {
                    if let d = graph.constant(i), case let .mapped(file, offset) = d.storage { file.release(offset: offset, count: d.byteCount) }
                }
            }
            // Set: a node may read one value twice, and its buffer must return to the pool once.
            for i in read where lastUse[i.index] == n && graph.constant(i) == nil {
                if let p = f32[i.index], case let .node(producer) = graph[i].source, !precomputed.contains(producer) {
                    pool.give(UnsafeMutablePointer(mutating: p), shapes[i.index].reduce(1, *))
                }
            }
        }
        return graph.outputs.map { o in
            let s = shapes[o.index]
            let p = f32[o.index]!
            return HostTensor(shape: s, floats: Array(UnsafeBufferPointer(start: p, count: s.reduce(1, *))))
        }
    }

    /// Runs the 1x1 conv `pointwise` and the depthwise conv `depthwise` that reads it as one
    /// kernel into `out`.
    private func executePointwiseDepthwise(_ pointwise: Node, _ depthwise: Node, out: UnsafeMutablePointer<Float>,
                                           f32: [Int: UnsafePointer<Float>], shapes: [[Int]]) {
        func opt(_ node: Node, _ k: Int) -> UnsafePointer<Float>? { k < node.inputs.count ? f32[node.inputs[k].index] : nil }
        let s = shapes[pointwise.inputs[0].index], w = shapes[pointwise.inputs[1].index]
        let g = PointwiseDepthwiseGeometry(batch: s[0], cin: s[1], channels: w[0], height: s[2], width: s[3])
        var epilogue = ConvEpilogue.none
        if case let .conv2dActivation(_, _, _, act) = depthwise.op { epilogue = .activation(act) }
        let count = g.scratchCount(threads: threads)
        let scratch = pool.take(count)
        defer { pool.give(scratch, count) }
        pointwiseDepthwiseKernel(g, x: f32[pointwise.inputs[0].index]!, w1: f32[pointwise.inputs[1].index]!, b1: opt(pointwise, 2),
                                 w2: f32[depthwise.inputs[1].index]!, b2: opt(depthwise, 2), y: out, scratch: scratch,
                                 threads: threads, epilogue: epilogue)
    }

    /// The op name, refined by the kernel a conv takes.
    private func kernelPath(_ node: Node, _ shapes: [[Int]]) -> String {
        let groups: Int
        switch node.op {
        case let .conv2d(_, _, g), let .conv2dActivation(_, _, g, _), let .conv2dGatedAdd(_, _, g): groups = g
        default: return node.op.name
        }
        let w = shapes[node.inputs[1].index]
        let path = w[2] == 1 && w[3] == 1 ? "1x1" : groups == 1 ? "\(w[2])x\(w[3]) dense" : "\(w[2])x\(w[3]) grouped"
        return "\(node.op.name) \(path)"
    }

    /// " out [..] w [..]": the output shape and, for convs and linears, the weight shape.
    private func shapeKey(_ node: Node, _ shapes: [[Int]]) -> String {
        let w = node.op.hasWeight ? " w \(shapes[node.inputs[1].index])" : ""
        return " out \(shapes[node.output.index])" + w
    }

    /// The multiply-accumulates of a conv or linear node (0 for other ops).
    private func multiplyAccumulates(_ node: Node, _ shapes: [[Int]]) -> Double {
        guard node.op.hasWeight else { return 0 }
        let w = shapes[node.inputs[1].index], out = shapes[node.output.index]
        // Channel attention multiplies the pooled [N, C] vector only.
        if node.op == .channelAttention { return Double(out[0]) * Double(w[0]) * Double(w[1]) }
        // Every output element takes one product per weight element of its output channel.
        return Double(out.reduce(1, *)) * Double(w.dropFirst().reduce(1, *))
    }

    /// Checks each input against its declared type and binds the shape symbols N, H, W.
    private func bind(_ inputs: [String: HostTensor]) throws -> [DimSymbol: Int] {
        var bindings: [DimSymbol: Int] = [:]
        var boundBy: [DimSymbol: String] = [:]
        for id in graph.inputs {
            let v = graph[id]
            guard let t = inputs[v.name] else { throw DicoError(.invalidInput, "input '\(v.name)' is missing (expected \(v.type))") }
            guard t.dtype == v.type.dtype else {
                throw DicoError(.invalidInput, "input '\(v.name)' has dtype \(t.dtype.rawValue), expected \(v.type.dtype.rawValue)")
            }
            guard t.shape.count == v.type.shape.count else {
                throw DicoError(.invalidInput, "input '\(v.name)' has shape \(t.shape), expected \(v.type)")
            }
            for (k, d) in v.type.shape.enumerated() {
                let actual = t.shape[k]
                if let c = d.constant {
                    guard actual == c else { throw DicoError(.invalidInput, "input '\(v.name)' has shape \(t.shape), expected \(v.type): dimension \(k) must be \(c)") }
                    continue
                }
                let sym = d.symbol!
                let (scaled, overflow) = actual.multipliedReportingOverflow(by: d.den)
                guard actual > 0, !overflow, scaled % d.num == 0 else {
                    throw DicoError(.invalidInput, "input '\(v.name)' has shape \(t.shape): dimension \(k) cannot be \(d)")
                }
                let value = scaled / d.num
                if let prev = bindings[sym], prev != value {
                    throw DicoError(.invalidInput, "input '\(v.name)' has \(sym.rawValue) = \(value) (dimension \(k) of \(t.shape)) but input '\(boundBy[sym]!)' has \(prev)")
                }
                bindings[sym] = value
                boundBy[sym] = v.name
            }
        }
        return bindings
    }

    private func execute(_ node: Node, out: UnsafeMutablePointer<Float>, f32: [Int: UnsafePointer<Float>], i64: [Int: UnsafePointer<Int64>],
                         shapes: [[Int]]) throws {
        func x(_ k: Int) -> UnsafePointer<Float> { f32[node.inputs[k].index]! }
        func opt(_ k: Int) -> UnsafePointer<Float>? { k < node.inputs.count ? f32[node.inputs[k].index] : nil }
        func shape(_ k: Int) -> [Int] { shapes[node.inputs[k].index] }
        let outShape = shapes[node.output.index]
        let count = outShape.reduce(1, *)

        // Convolution with an epilogue, by kernel path (`conv2D`).
        func convolve(_ stride: Int, _ padding: Int, _ groups: Int, _ epilogue: ConvEpilogue) {
            let s = shape(0), w = shape(1)
            let g = Conv2DGeometry(batch: s[0], cin: s[1], height: s[2], width: s[3], cout: w[0], kh: w[2], kw: w[3],
                                   stride: stride, padding: padding, groups: groups)
            let scratchCount = g.scratchCount
            let scratch = scratchCount > 0 ? pool.take(scratchCount) : nil
            defer { if let scratch { pool.give(scratch, scratchCount) } }
            conv2D(g, x: x(0), w: x(1), bias: opt(2), y: out, scratch: scratch, threads: threads, epilogue: epilogue)
        }

        switch node.op {
        case let .conv2d(stride, padding, groups):
            convolve(stride, padding, groups, .none)
        case let .conv2dActivation(stride, padding, groups, act):
            convolve(stride, padding, groups, .activation(act))
        case let .conv2dGatedAdd(stride, padding, groups):
            convolve(stride, padding, groups, .gatedAdd(inp: x(3), gate: x(4)))
        case .channelAttention:
            let s = shape(0)
            let scratch = pool.take(2 * s[0] * s[1])
            defer { pool.give(scratch, 2 * s[0] * s[1]) }
            channelAttentionKernel(x: x(0), w: x(1), bias: opt(2), y: out, batch: s[0], channels: s[1], pixels: s[2] * s[3],
                                   scratch: scratch, threads: threads)
        case .linear:
            let s = shape(0)
            linearKernel(x: x(0), w: x(1), bias: opt(2), y: out, rows: s[0], inFeatures: s[1], outFeatures: outShape[1], threads: threads)
        case let .channelLayerNorm(eps):
            channelLayerNormKernel(x: x(0), y: out, batch: outShape[0], channels: outShape[1], pixels: outShape[2] * outShape[3], eps: eps, threads: threads)
        case let .layerNormModulate(eps):
            channelLayerNormKernel(x: x(0), y: out, batch: outShape[0], channels: outShape[1], pixels: outShape[2] * outShape[3], eps: eps,
                                   threads: threads, modulation: (shift: x(1), scale: x(2)))
        case .modulate:
            modulateKernel(x: x(0), shift: x(1), scale: x(2), y: out, batch: outShape[0], channels: outShape[1], pixels: outShape[2] * outShape[3], threads: threads)
        case .gatedAdd:
            gatedAddKernel(inp: x(0), gate: x(1), branch: x(2), y: out, batch: outShape[0], channels: outShape[1], pixels: outShape[2] * outShape[3], threads: threads)
        case .gelu:
            activationKernel(.gelu, x: x(0), y: out, count: count, threads: threads)
        case .silu:
            activationKernel(.silu, x: x(0), y: out, count: count, threads: threads)
        case .sigmoid:
            activationKernel(.sigmoid, x: x(0), y: out, count: count, threads: threads)
        case .globalAvgPool:
            let s = shape(0)
            globalAvgPoolKernel(x: x(0), y: out, planes: s[0] * s[1], pixels: s[2] * s[3], threads: threads)
        case .mul, .add:
            broadcastBinaryKernel(mul: node.op == .mul, a: x(0), aShape: shape(0), b: x(1), bShape: shape(1), y: out, outShape: outShape, threads: threads)
        case let .slice(axis, start, length):
            let s = shape(0)
            sliceKernel(x: x(0), y: out, outer: s[..<axis].reduce(1, *), axisLen: s[axis], inner: s[(axis + 1)...].reduce(1, *), start: start, length: length)
        case let .concat(axis):
            let parts = node.inputs.indices.map { (x($0), shape($0)[axis]) }
            concatKernel(parts: parts, y: out, outer: outShape[..<axis].reduce(1, *), inner: outShape[(axis + 1)...].reduce(1, *))
        case let .pixelShuffle(r):
            pixelShuffleKernel(inverse: false, x: x(0), y: out, batch: outShape[0], channels: outShape[1], height: outShape[2], width: outShape[3], factor: r, threads: threads)
        case let .pixelUnshuffle(r):
            let s = shape(0)
            pixelShuffleKernel(inverse: true, x: x(0), y: out, batch: s[0], channels: s[1], height: s[2], width: s[3], factor: r, threads: threads)
        case .embedding:
            guard let idx = i64[node.inputs[1].index] else {
                throw DicoError(.invalidInput, "node '\(node.name)': indices must be a graph input")
            }
            // Class indices must select a row of the table (whatever computed the table).
            let rows = shape(0)[0]
            for r in 0..<outShape[0] where idx[r] < 0 || idx[r] >= Int64(rows) {
                throw DicoError(.invalidInput, "input '\(graph[node.inputs[1]].name)': class index \(idx[r]) is outside 0..<\(rows) (the table of '\(node.name)')")
            }
            embeddingKernel(table: x(0), idx: idx, y: out, rows: outShape[0], width: outShape[1])
        case let .timestepEmbedding(dim, maxPeriod):
            timestepEmbeddingKernel(t: x(0), y: out, batch: outShape[0], dim: dim, maxPeriod: maxPeriod)
        }
    }
}

/// What `Executor.profile` accumulates per kernel path.
public struct ProfileEntry: Sendable {
    public var seconds = 0.0, cpuSeconds = 0.0
    public var count = 0
    /// Multiply-accumulates (convs and linears), for GFLOP/s.
    public var macs = 0.0
}

private extension Op {
    /// Whether input 1 is a weight whose shape sets the op's multiply-accumulates.
    var hasWeight: Bool {
        switch self {
        case .conv2d, .conv2dActivation, .conv2dGatedAdd, .linear, .channelAttention: return true
        default: return false
        }
    }
}

/// Frees an input copy when the run ends.
private final class Deallocator {
    let p: UnsafeMutablePointer<Int64>
    init(_ p: UnsafeMutablePointer<Int64>) { self.p = p }
    deinit { p.deallocate() }
}

/// Reuses activation buffers by exact size: fresh large allocations would be zero-filled
/// by the kernel page by page on every node, which costs more than the math for DiCo.
/// Buffers are kept across runs and freed with the executor.
final class BufferPool {
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var all: [(UnsafeMutablePointer<Float>, Int)] = []

    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        if let p = free[count]?.popLast() { return p }
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64).bindMemory(to: Float.self, capacity: max(count, 1))
        all.append((p, count))
        return p
    }

    func give(_ p: UnsafeMutablePointer<Float>, _ count: Int) { free[count, default: []].append(p) }

    /// Makes every buffer free again, for the next run.
    func releaseAll() {
        free = Dictionary(grouping: all, by: { $0.1 }).mapValues { $0.map { $0.0 } }
    }

    deinit { for (p, _) in all { p.deallocate() } }
}
