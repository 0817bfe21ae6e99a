// Reductions and normalization on float32: ReduceMean, ReduceSum, GlobalAveragePool and
// LayerNormalization. Sums accumulate in Double: DiCo's LayerNorm runs over up to 4C = 1664
// channels and its channel attention averages whole planes, and the whole-model target is
// 1e-5 relative L2, so the reductions should add no error of their own.

let reducePreparers: [String: KernelPreparer] = [
    "ReduceMean": { try prepareReduce($0, mean: true, axesInputFrom: 18) },
    "ReduceSum": { try prepareReduce($0, mean: false, axesInputFrom: 13) },
    "GlobalAveragePool": prepareGlobalAveragePool,
    "LayerNormalization": prepareLayerNormalization,
]

private func prepareReduce(_ spec: NodeSpec, mean: Bool, axesInputFrom: Int) throws -> Kernel {
    try spec.requireOutputs(1, 1)
    let keepDims = try spec.int("keepdims", default: 1)
    guard keepDims == 0 || keepDims == 1 else { throw OpFailure("keepdims must be 0 or 1") }
    let axesOf: ([ONNXValue?]) throws -> [Int]?
    var noopWithEmptyAxes = false
    if spec.opset < axesInputFrom {
        // Before the axes input: an attribute; absent means every axis.
        try spec.allowAttributes(["axes", "keepdims"])
        try spec.requireInputs(1, 1)
        let axes = try spec.ints("axes")
        axesOf = { _ in axes }
    } else {
        try spec.allowAttributes(["keepdims", "noop_with_empty_axes"])
        try spec.requireInputs(1, 2)
        let noop = try spec.int("noop_with_empty_axes", default: 0)
        guard noop == 0 || noop == 1 else { throw OpFailure("noop_with_empty_axes must be 0 or 1") }
        noopWithEmptyAxes = noop == 1
        axesOf = { inputs in try optionalArg(inputs, 1).map { try requireIntegers($0, "axes") } }
    }
    return { inputs in
        let x = try arg(inputs, 0)
        let v = try requireFloats(x, "input 0")
        let rank = x.shape.count
        var axes = try axesOf(inputs) ?? []
        if axes.isEmpty {
            if noopWithEmptyAxes { return [x] }
            axes = Array(0..<rank)
        }
        let reduced = Set(try normalizeAxes(axes, rank: rank))
        let outShape = x.shape.enumerated().compactMap { reduced.contains($0.offset) ? (keepDims == 1 ? 1 : nil) : $0.element }
        // Reduced axes moved last (a no-op when they already are), then one sum per row.
        let kept = (0..<rank).filter { !reduced.contains($0) }
        let perm = kept + reduced.sorted()
        let moved = perm == Array(0..<rank) ? v : transposed(v, x.shape, perm)
        let rows = try product(kept.map { x.shape[$0] })
        let len = try product(reduced.map { x.shape[$0] })
        let out: [Float] = moved.withUnsafeBufferPointer { src in
            (0..<rows).map { r in
                var acc: Double = 0
                let row = src.baseAddress! + r * len
                for i in 0..<len { acc += Double(row[i]) }
                return Float(mean ? acc / Double(len) : acc)
            }
        }
        return [ONNXValue(unchecked: outShape, .f32(out))]
    }
}

private func prepareGlobalAveragePool(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes([])
    try spec.requireInputs(1, 1)
    try spec.requireOutputs(1, 1)
    return { inputs in
        let x = try arg(inputs, 0)
        let v = try requireFloats(x, "input 0")
        guard x.shape.count >= 3 else { throw OpFailure("input has shape \(x.shape); expected [N, C, spatial...]") }
        let planes = try product(x.shape[..<2]), pixels = try product(x.shape[2...])
        let out: [Float] = v.withUnsafeBufferPointer { src in
            (0..<planes).map { p in
                var acc: Double = 0
                let s = src.baseAddress! + p * pixels
                for i in 0..<pixels { acc += Double(s[i]) }
                return Float(acc / Double(pixels))
            }
        }
        return [ONNXValue(unchecked: Array(x.shape[..<2]) + [Int](repeating: 1, count: x.shape.count - 2), .f32(out))]
    }
}

private func prepareLayerNormalization(_ spec: NodeSpec) throws -> Kernel {
    guard spec.opset >= 17 else { throw OpFailure("LayerNormalization is an opset 17 operator") }
    try spec.allowAttributes(["axis", "epsilon", "stash_type"])
    try spec.requireInputs(2, 3)
    try spec.requireOutputs(1, 3)
    let axis = try spec.int("axis", default: -1)
    let eps = Double(try spec.float("epsilon", default: 1e-5))
    // stash_type picks the precision of mean and inverse standard deviation; 1 (float) is
    // the default and what exporters write. The statistics are computed in Double for
    // either, which is at least as precise as float.
    let stash = try spec.int("stash_type", default: 1)
    guard [1, 11].contains(stash) else { throw OpFailure("stash_type \(stash) is not float (1) or double (11)") }
    let wantsStats = spec.node.outputs.count > 1
    return { inputs in
        let x = try arg(inputs, 0)
        let v = try requireFloats(x, "input X")
        let rank = x.shape.count
        let a = try normalizeAxis(axis, rank: rank)
        let normShape = Array(x.shape[a...])
        let rows = try product(x.shape[..<a]), cols = try product(normShape)
        // Scale and B broadcast (unidirectionally) to the normalized shape.
        func expanded(_ k: Int, _ what: String) throws -> [Float]? {
            guard let t = optionalArg(inputs, k) else { return nil }
            let f = try requireFloats(t, what)
            let plan = try BroadcastPlan([normShape, t.shape])
            guard plan.shape == normShape else { throw OpFailure("\(what) \(t.shape) does not broadcast to the normalized shape \(normShape)") }
            return t.shape == normShape ? f : broadcastCopy(f, plan: plan, operand: 1)
        }
        let scale = try expanded(1, "Scale")!, bias = try expanded(2, "B")
        var means = [Float](), invs = [Float]()
        if wantsStats { means.reserveCapacity(rows); invs.reserveCapacity(rows) }
        let y: [Float] = v.withUnsafeBufferPointer { src in
            makeArray(rows * cols) { (dst: UnsafeMutableBufferPointer<Float>) in
                for r in 0..<rows {
                    let row = src.baseAddress! + r * cols, o = dst.baseAddress! + r * cols
                    var sum: Double = 0
                    for i in 0..<cols { sum += Double(row[i]) }
                    let mu = sum / Double(cols)
                    var sq: Double = 0
                    for i in 0..<cols { let d = Double(row[i]) - mu; sq += d * d }
                    let inv = 1 / (sq / Double(cols) + eps).squareRoot()
                    if let bias {
                        for i in 0..<cols { (o + i).initialize(to: Float((Double(row[i]) - mu) * inv) * scale[i] + bias[i]) }
                    } else {
                        for i in 0..<cols { (o + i).initialize(to: Float((Double(row[i]) - mu) * inv) * scale[i]) }
                    }
                    if wantsStats { means.append(Float(mu)); invs.append(Float(inv)) }
                }
            }
        }
        let statShape = Array(x.shape[..<a]) + [Int](repeating: 1, count: rank - a)
        return [ONNXValue(unchecked: x.shape, .f32(y)),
                ONNXValue(unchecked: wantsStats ? statShape : [0], .f32(means)),
                ONNXValue(unchecked: wantsStats ? statShape : [0], .f32(invs))]
    }
}
