// Ops that move elements without computing on them, for every element type: Transpose,
// DepthToSpace, SpaceToDepth, Concat, Split, Slice, Gather, Expand.

let layoutPreparers: [String: KernelPreparer] = [
    "Transpose": prepareTranspose, "DepthToSpace": { try prepareBlockRearrange($0, toSpace: true) },
    "SpaceToDepth": { try prepareBlockRearrange($0, toSpace: false) }, "Concat": prepareConcat, "Split": prepareSplit,
    "Slice": prepareSlice, "Gather": prepareGather, "Expand": prepareExpand,
]

/// A rearrangement of one tensor's elements, written once for every element type.
protocol ElementMove {
    func apply<T>(_ v: [T]) throws -> [T]
}

extension ONNXValue.Storage {
    /// The same move applied to whichever element type this storage has. `M` is a concrete
    /// type at each call site, so the optimizer specializes the move per element type.
    func moved<M: ElementMove>(_ m: M) throws -> ONNXValue.Storage {
        switch self {
        case let .f32(v): return .f32(try m.apply(v))
        case let .f64(v): return .f64(try m.apply(v))
        case let .i64(v): return .i64(try m.apply(v))
        case let .i32(v): return .i32(try m.apply(v))
        case let .bool(v): return .bool(try m.apply(v))
        }
    }
}

/// Row-major strides of `shape`.
func contiguousStrides(_ shape: [Int]) -> [Int] {
    var s = [Int](repeating: 1, count: shape.count)
    var acc = 1
    for k in stride(from: shape.count - 1, through: 0, by: -1) {
        s[k] = acc
        acc *= shape[k]
    }
    return s
}

/// Copies elements from `src` at `base + sum(i_k * strides[k])` for every index of `shape`,
/// in row-major order: the one loop behind Transpose, Slice and the block rearrangements.
func stridedGather<T>(_ src: [T], base: Int, shape: [Int], strides: [Int]) -> [T] {
    let count = shape.reduce(1, *)
    guard count > 0 else { return [] }
    guard let inner = shape.last else { return [src[base]] }
    let innerStride = strides.last!
    let outer = shape.count - 1
    return src.withUnsafeBufferPointer { sp in
        makeArray(count) { (dst: UnsafeMutableBufferPointer<T>) in
            var idx = [Int](repeating: 0, count: outer)
            var off = base
            var o = 0
            let s = sp.baseAddress!, d = dst.baseAddress!
            while o < count {
                if innerStride == 1 {
                    (d + o).initialize(from: s + off, count: inner)
                } else {
                    for i in 0..<inner { (d + o + i).initialize(to: s[off + i * innerStride]) }
                }
                o += inner
                var k = outer - 1
                while k >= 0 {
                    idx[k] += 1
                    off += strides[k]
                    if idx[k] < shape[k] { break }
                    off -= strides[k] * shape[k]
                    idx[k] = 0
                    k -= 1
                }
            }
        }
    }
}

/// `v` of shape `shape` with its axes permuted: output axis i is input axis perm[i].
func transposed<T>(_ v: [T], _ shape: [Int], _ perm: [Int]) -> [T] {
    let st = contiguousStrides(shape)
    return stridedGather(v, base: 0, shape: perm.map { shape[$0] }, strides: perm.map { st[$0] })
}

private struct Permute: ElementMove {
    let shape: [Int], perm: [Int]
    func apply<T>(_ v: [T]) -> [T] { transposed(v, shape, perm) }
}

private func prepareTranspose(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(["perm"])
    try spec.requireInputs(1, 1)
    try spec.requireOutputs(1, 1)
    let perm = try spec.ints("perm")
    return { inputs in
        let x = try arg(inputs, 0)
        let r = x.shape.count
        let p = perm ?? Array((0..<r).reversed())   // default: reverse the axes
        guard p.count == r, Set(p) == Set(0..<r) else { throw OpFailure("perm \(p) is not a permutation of the \(r) axes of \(x.shape)") }
        return [ONNXValue(unchecked: p.map { x.shape[$0] }, try x.storage.moved(Permute(shape: x.shape, perm: p)))]
    }
}

/// DepthToSpace (DCR or CRD) and SpaceToDepth as a reshape, a transpose and a reshape.
private func prepareBlockRearrange(_ spec: NodeSpec, toSpace: Bool) throws -> Kernel {
    try spec.allowAttributes(toSpace ? ["blocksize", "mode"] : ["blocksize"])
    try spec.requireInputs(1, 1)
    try spec.requireOutputs(1, 1)
    guard spec.node.attributes["blocksize"] != nil else { throw OpFailure("attribute 'blocksize' is required") }
    let b = try spec.int("blocksize", default: 0)
    // The bound keeps blocksize² and the output sizes far from overflow.
    guard b >= 1, b <= 1 << 16 else { throw OpFailure("blocksize \(b) must be in 1...65536") }
    let mode = try spec.string("mode", default: "DCR")
    guard mode == "DCR" || mode == "CRD" else { throw OpFailure("mode '\(mode)' is not DCR or CRD") }
    return { inputs in
        let x = try arg(inputs, 0)
        guard x.shape.count == 4 else { throw OpFailure("input has shape \(x.shape); expected [N, C, H, W]") }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let view: [Int], perm: [Int], out: [Int]
        if toSpace {
            guard c % (b * b) == 0 else { throw OpFailure("channels \(c) are not divisible by blocksize² = \(b * b)") }
            let cb = c / (b * b)
            if mode == "DCR" {
                (view, perm) = ([n, b, b, cb, h, w], [0, 3, 4, 1, 5, 2])
            } else {
                (view, perm) = ([n, cb, b, b, h, w], [0, 1, 4, 2, 5, 3])
            }
            out = [n, cb, try product([h, b]), try product([w, b])]
        } else {
            guard h % b == 0, w % b == 0 else { throw OpFailure("spatial size \(h) x \(w) is not divisible by blocksize \(b)") }
            (view, perm) = ([n, c, h / b, b, w / b, b], [0, 3, 5, 1, 2, 4])
            out = [n, try product([c, b, b]), h / b, w / b]
        }
        return [ONNXValue(unchecked: out, try x.storage.moved(Permute(shape: view, perm: perm)))]
    }
}

private func prepareConcat(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(["axis"])
    try spec.requireInputs(1, Int.max)
    try spec.requireOutputs(1, 1)
    guard spec.node.attributes["axis"] != nil else { throw OpFailure("attribute 'axis' is required") }
    let axis = try spec.int("axis", default: 0)
    return { inputs in
        let parts = try inputs.indices.map { try arg(inputs, $0) }
        let first = parts[0]
        let r = first.shape.count
        let a = try normalizeAxis(axis, rank: r)
        var total = 0
        for (i, p) in parts.enumerated() {
            guard p.dtype == first.dtype else { throw OpFailure("input \(i) is \(p.dtype.rawValue), input 0 is \(first.dtype.rawValue)") }
            guard p.shape.count == r, p.shape.indices.allSatisfy({ $0 == a || p.shape[$0] == first.shape[$0] }) else {
                throw OpFailure("input \(i) has shape \(p.shape), which does not concatenate with \(first.shape) on axis \(a)")
            }
            total += p.shape[a]
        }
        var outShape = first.shape
        outShape[a] = total
        let outer = try product(first.shape[..<a]), inner = try product(first.shape[(a + 1)...])
        _ = try product(outShape)
        func join<T>(_ arrays: [[T]]) -> [T] {
            var out: [T] = []
            out.reserveCapacity(outer * total * inner)
            for o in 0..<outer {
                for (i, arr) in arrays.enumerated() {
                    let slab = parts[i].shape[a] * inner
                    out.append(contentsOf: arr[(o * slab)..<((o + 1) * slab)])
                }
            }
            return out
        }
        let storage: ONNXValue.Storage
        switch first.storage {
        case .f32: storage = .f32(join(parts.map { $0.floats! }))
        case .f64: storage = .f64(join(parts.map { if case let .f64(v) = $0.storage { return v }; return [] }))
        case .i64: storage = .i64(join(parts.map { $0.int64s! }))
        case .i32: storage = .i32(join(parts.map { if case let .i32(v) = $0.storage { return v }; return [] }))
        case .bool: storage = .bool(join(parts.map { if case let .bool(v) = $0.storage { return v }; return [] }))
        }
        return [ONNXValue(unchecked: outShape, storage)]
    }
}

/// Elements `[start + i * step]` of one axis for every output index (Slice), or a
/// contiguous range of it (Split).
private struct AxisWindow: ElementMove {
    let shape: [Int]
    let starts: [Int], steps: [Int], counts: [Int]
    func apply<T>(_ v: [T]) -> [T] {
        let st = contiguousStrides(shape)
        let base = zip(starts, st).reduce(0) { $0 + $1.0 * $1.1 }
        return stridedGather(v, base: base, shape: counts, strides: zip(st, steps).map { $0 * $1 })
    }
}

private func prepareSplit(_ spec: NodeSpec) throws -> Kernel {
    try spec.requireOutputs(1, Int.max)
    let outputs = spec.node.outputs.count
    var numOutputs: Int?
    let sizesOf: ([ONNXValue?]) throws -> [Int]?
    if spec.opset < 13 {
        try spec.allowAttributes(["axis", "split"])
        try spec.requireInputs(1, 1)
        let split = try spec.ints("split")
        sizesOf = { _ in split }
    } else {
        try spec.allowAttributes(spec.opset >= 18 ? ["axis", "num_outputs"] : ["axis"])
        try spec.requireInputs(1, 2)
        if spec.opset >= 18, spec.node.attributes["num_outputs"] != nil {
            let n = try spec.int("num_outputs", default: 0)
            guard n >= 1, n == outputs else { throw OpFailure("num_outputs \(n) does not match the node's \(outputs) outputs") }
            guard !spec.hasInput(1) else { throw OpFailure("input 'split' and attribute 'num_outputs' cannot both be given") }
            numOutputs = n
        }
        sizesOf = { inputs in try optionalArg(inputs, 1).map { try requireIntegers($0, "split") } }
    }
    let axis = try spec.int("axis", default: 0)
    let chunked = numOutputs != nil
    return { inputs in
        let x = try arg(inputs, 0)
        let a = try normalizeAxis(axis, rank: x.shape.count)
        let dim = x.shape[a]
        var sizes: [Int]
        if let s = try sizesOf(inputs) {
            guard s.count == outputs, s.allSatisfy({ $0 >= 0 }), s.reduce(0, +) == dim else {
                throw OpFailure("split \(s) does not divide axis \(a) of \(x.shape) into \(outputs) parts")
            }
            sizes = s
        } else if chunked {
            // Opset 18 num_outputs: chunks of ceil(dim / n), the last one smaller.
            let chunk = (dim + outputs - 1) / outputs
            sizes = (0..<outputs).map { max(0, min(chunk, dim - $0 * chunk)) }
            guard sizes.reduce(0, +) == dim, sizes.last! > 0 || dim == 0 else { throw OpFailure("axis \(a) of \(x.shape) cannot be split into \(outputs) chunks") }
        } else {
            guard dim % outputs == 0 else { throw OpFailure("axis \(a) of \(x.shape) does not split evenly into \(outputs) parts") }
            sizes = [Int](repeating: dim / outputs, count: outputs)
        }
        var start = 0
        return try sizes.map { len in
            var counts = x.shape
            counts[a] = len
            var starts = [Int](repeating: 0, count: x.shape.count)
            starts[a] = start
            start += len
            let w = AxisWindow(shape: x.shape, starts: starts, steps: [Int](repeating: 1, count: x.shape.count), counts: counts)
            return ONNXValue(unchecked: counts, try x.storage.moved(w))
        }
    }
}

private func prepareSlice(_ spec: NodeSpec) throws -> Kernel {
    guard spec.opset >= 10 else { throw OpFailure("Slice before opset 10 (attribute form) is not supported") }
    try spec.allowAttributes([])
    try spec.requireInputs(3, 5)
    try spec.requireOutputs(1, 1)
    return { inputs in
        let x = try arg(inputs, 0)
        let r = x.shape.count
        let starts = try requireIntegers(try arg(inputs, 1), "starts"), ends = try requireIntegers(try arg(inputs, 2), "ends")
        let axes = try optionalArg(inputs, 3).map { try requireIntegers($0, "axes") } ?? Array(0..<starts.count)
        let steps = try optionalArg(inputs, 4).map { try requireIntegers($0, "steps") } ?? [Int](repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, steps.count == starts.count else {
            throw OpFailure("starts, ends, axes and steps have different lengths (\(starts.count), \(ends.count), \(axes.count), \(steps.count))")
        }
        let ax = try normalizeAxes(axes, rank: r)
        var st = [Int](repeating: 0, count: r), sp = [Int](repeating: 1, count: r), counts = x.shape
        for (i, a) in ax.enumerated() {
            let dim = x.shape[a], step = steps[i]
            guard step != 0 else { throw OpFailure("steps[\(i)] is 0") }
            // Negative indices count from the end; then clamp to [0, dim] for forward steps
            // and [-1, dim - 1] for backward ones (INT64_MIN/MAX ends are common).
            func clamped(_ v: Int, _ lo: Int, _ hi: Int) -> Int { min(max(v < 0 ? (v < -dim ? lo : v + dim) : v, lo), hi) }
            let s: Int, e: Int
            if step > 0 {
                s = clamped(starts[i], 0, dim); e = clamped(ends[i], 0, dim)
            } else {
                s = clamped(starts[i], -1, dim - 1); e = clamped(ends[i], -1, dim - 1)
            }
            let span = e - s
            let n = step > 0 ? (span <= 0 ? 0 : (span + step - 1) / step) : (span >= 0 ? 0 : (-span + (-step) - 1) / (-step))
            st[a] = n == 0 ? 0 : s
            sp[a] = step
            counts[a] = n
        }
        return [ONNXValue(unchecked: counts, try x.storage.moved(AxisWindow(shape: x.shape, starts: st, steps: sp, counts: counts)))]
    }
}

private struct GatherRows: ElementMove {
    let outer: Int, dim: Int, inner: Int, indices: [Int]
    func apply<T>(_ v: [T]) -> [T] {
        var out: [T] = []
        out.reserveCapacity(outer * indices.count * inner)
        for o in 0..<outer {
            for i in indices {
                let s = (o * dim + i) * inner
                out.append(contentsOf: v[s..<(s + inner)])
            }
        }
        return out
    }
}

private func prepareGather(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(["axis"])
    try spec.requireInputs(2, 2)
    try spec.requireOutputs(1, 1)
    let axis = try spec.int("axis", default: 0)
    if let idx = spec.constants[1], idx.integers == nil { throw OpFailure("indices are \(idx.dtype.rawValue); Gather takes int32 or int64 indices") }
    return { inputs in
        let x = try arg(inputs, 0), iv = try arg(inputs, 1)
        let a = try normalizeAxis(axis, rank: x.shape.count)
        let dim = x.shape[a]
        let raw = try requireIntegers(iv, "indices")
        let idx = try raw.map { i -> Int in
            guard i >= -dim, i < dim else { throw OpFailure("index \(i) is outside [-\(dim), \(dim - 1)] (axis \(a) of \(x.shape))") }
            return i < 0 ? i + dim : i
        }
        let outShape = Array(x.shape[..<a]) + iv.shape + Array(x.shape[(a + 1)...])
        _ = try product(outShape)
        let m = GatherRows(outer: try product(x.shape[..<a]), dim: dim, inner: try product(x.shape[(a + 1)...]), indices: idx)
        return [ONNXValue(unchecked: outShape, try x.storage.moved(m))]
    }
}

private struct BroadcastTo: ElementMove {
    let plan: BroadcastPlan
    func apply<T>(_ v: [T]) -> [T] { broadcastCopy(v, plan: plan, operand: 0) }
}

private func prepareExpand(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes([])
    try spec.requireInputs(2, 2)
    try spec.requireOutputs(1, 1)
    return { inputs in
        let x = try arg(inputs, 0)
        let shape = try requireIntegers(try arg(inputs, 1), "shape")
        guard shape.allSatisfy({ $0 >= 0 }) else { throw OpFailure("shape \(shape) has a negative dimension") }
        // Bidirectional: the output is the broadcast of the input shape and `shape`.
        let plan = try BroadcastPlan([x.shape, shape])
        return [ONNXValue(unchecked: plan.shape, try x.storage.moved(BroadcastTo(plan: plan)))]
    }
}
