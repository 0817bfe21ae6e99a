import DicoCore

/// Infers the output type of `op` applied to inputs of types `ins`.
/// - Throws: `DicoError.invalidInput` naming `node` and the rule broken (wrong arity,
///   rank, dtype or mismatched dimensions).
public func inferType(_ op: Op, _ ins: [TensorType], node: String) throws -> TensorType {
    func fail(_ why: String) -> DicoError {
        DicoError(.invalidInput, "node '\(node)' (\(op.name)): \(why)")
    }
    let (lo, hi) = op.arity
    guard ins.count >= lo && ins.count <= hi else {
        throw fail("takes \(lo == hi ? "\(lo)" : "\(lo) to \(hi == Int.max ? "any" : "\(hi)")") inputs, got \(ins.count)")
    }
    func rank(_ i: Int, _ r: Int) throws {
        guard ins[i].shape.count == r else { throw fail("input \(i) must have rank \(r), has \(ins[i])") }
    }
    func float(_ i: Int) throws {
        guard ins[i].dtype.isFloat else { throw fail("input \(i) must be floating point, is \(ins[i].dtype.rawValue)") }
    }
    func same(_ a: Dim, _ b: Dim, _ what: String) throws {
        guard a == b else { throw fail("\(what): \(a) vs \(b)") }
    }
    func constant(_ d: Dim, _ what: String) throws -> Int {
        guard let v = d.constant else { throw fail("\(what) must be a constant dimension, is \(d)") }
        return v
    }
    let f32 = DType.f32
    // Shapes and attributes can come from a file: arithmetic on them is overflow-checked.
    func mul(_ a: Int, _ b: Int) throws -> Int {
        let (r, o) = a.multipliedReportingOverflow(by: b)
        guard !o else { throw fail("dimension arithmetic overflows (\(a) x \(b))") }
        return r
    }
    func sum(_ a: Int, _ b: Int) throws -> Int {
        let (r, o) = a.addingReportingOverflow(b)
        guard !o else { throw fail("dimension arithmetic overflows (\(a) + \(b))") }
        return r
    }

    switch op {
    case let .conv2d(stride, padding, groups), let .conv2dActivation(stride, padding, groups, _), let .conv2dGatedAdd(stride, padding, groups):
        try rank(0, 4); try rank(1, 4); try float(0); try float(1)
        guard stride >= 1, padding >= 0, groups >= 1 else { throw fail("stride, padding and groups must be positive") }
        let x = ins[0].shape, w = ins[1].shape
        let cout = try constant(w[0], "output channels"), cinG = try constant(w[1], "input channels per group")
        let kh = try constant(w[2], "kernel height"), kw = try constant(w[3], "kernel width")
        let cin = try constant(x[1], "input channels")
        guard cin == (try mul(cinG, groups)) else { throw fail("input has \(cin) channels but weight expects \(cinG) x \(groups) groups") }
        guard cout % groups == 0 else { throw fail("\(cout) output channels do not divide into \(groups) groups") }
        if ins.count >= 3 {
            try rank(2, 1); try float(2)
            try same(ins[2].shape[0], .c(cout), "bias length vs output channels")
        }
        // Output size (H + 2p - k) / s + 1: symbolic only for the shape-preserving case.
        func outDim(_ d: Dim, _ k: Int) throws -> Dim {
            if let v = d.constant {
                let o = try sum(v, try mul(2, padding)) - k
                guard o >= 0 else { throw fail("kernel \(k) larger than padded input \(v)") }
                return .c(o / stride + 1)
            }
            guard stride == 1, padding <= k, 2 * padding == k - 1 else {
                throw fail("symbolic spatial size needs stride 1 and 'same' padding")
            }
            return d
        }
        let out = TensorType(f32, [x[0], .c(cout), try outDim(x[2], kh), try outDim(x[3], kw)])
        if case .conv2dGatedAdd = op {
            // The residual has the conv's output shape; the gate one value per (image, channel).
            try rank(3, 4); try rank(4, 2); try float(3); try float(4)
            guard ins[3].shape == out.shape else { throw fail("residual \(ins[3]) vs conv output \(out)") }
            try same(ins[4].shape[0], x[0], "batch of the gate")
            try same(ins[4].shape[1], .c(cout), "width of the gate vs output channels")
        }
        return out

    case .channelAttention:
        try rank(0, 4); try rank(1, 4); try float(0); try float(1)
        let x = ins[0].shape, w = ins[1].shape
        let c = try constant(x[1], "channels")
        // The pooled vector goes through a square 1x1 conv, so the scale has x's channels.
        guard w == [.c(c), .c(c), .c(1), .c(1)] else { throw fail("weight must be [\(c), \(c), 1, 1], is \(ins[1])") }
        if ins.count == 3 {
            try rank(2, 1); try float(2)
            try same(ins[2].shape[0], .c(c), "bias length vs channels")
        }
        return TensorType(f32, x)

    case .linear:
        try rank(0, 2); try rank(1, 2); try float(0); try float(1)
        try same(ins[0].shape[1], ins[1].shape[1], "input features vs weight columns")
        if ins.count == 3 {
            try rank(2, 1); try float(2)
            try same(ins[2].shape[0], ins[1].shape[0], "bias length vs weight rows")
        }
        return TensorType(f32, [ins[0].shape[0], ins[1].shape[0]])

    case let .channelLayerNorm(eps):
        try rank(0, 4); try float(0)
        guard eps > 0 else { throw fail("eps must be positive") }
        return TensorType(f32, ins[0].shape)

    case .modulate, .gatedAdd, .layerNormModulate:
        let isGated = op == .gatedAdd
        if case let .layerNormModulate(eps) = op, !(eps > 0) { throw fail("eps must be positive") }
        try rank(0, 4); try rank(1, 2); try rank(2, isGated ? 4 : 2)
        for i in 0..<3 { try float(i) }
        let x = ins[0].shape
        let vectors = isGated ? [1] : [1, 2]
        for i in vectors {
            try same(ins[i].shape[0], x[0], "batch of input \(i)")
            try same(ins[i].shape[1], x[1], "width of input \(i) vs channels")
        }
        if isGated { guard ins[2].shape == x else { throw fail("residual \(ins[0]) vs branch \(ins[2])") } }
        return TensorType(f32, x)

    case .gelu, .silu, .sigmoid:
        try float(0)
        return TensorType(f32, ins[0].shape)

    case .globalAvgPool:
        try rank(0, 4); try float(0)
        let x = ins[0].shape
        return TensorType(f32, [x[0], x[1], .c(1), .c(1)])

    case .mul, .add:
        try float(0); try float(1)
        let a = ins[0].shape, b = ins[1].shape
        guard a.count == b.count else { throw fail("operands of rank \(a.count) and \(b.count)") }
        var out: [Dim] = []
        for (da, db) in zip(a, b) {
            if da == db { out.append(da) } else if da == .c(1) { out.append(db) } else if db == .c(1) { out.append(da) } else {
                throw fail("cannot broadcast \(ins[0]) with \(ins[1])")
            }
        }
        return TensorType(f32, out)

    case let .slice(axis, start, length):
        try float(0)   // the executor moves float32 data only
        let s = ins[0].shape
        guard axis >= 0 && axis < s.count else { throw fail("axis \(axis) out of range for \(ins[0])") }
        let n = try constant(s[axis], "sliced axis")
        guard start >= 0, length >= 0, start <= n, length <= n - start else { throw fail("slice [\(start), \(start + length)) outside 0..<\(n)") }
        var out = s
        out[axis] = .c(length)
        return TensorType(ins[0].dtype, out)

    case let .concat(axis):
        try float(0)
        let s0 = ins[0].shape
        guard axis >= 0 && axis < s0.count else { throw fail("axis \(axis) out of range") }
        var total = 0
        for (i, t) in ins.enumerated() {
            guard t.shape.count == s0.count, t.dtype == ins[0].dtype else { throw fail("input \(i) \(t) does not match \(ins[0])") }
            for d in 0..<s0.count where d != axis {
                try same(t.shape[d], s0[d], "input \(i) dimension \(d)")
            }
            total = try sum(total, try constant(t.shape[axis], "concatenated axis"))
        }
        var out = s0
        out[axis] = .c(total)
        return TensorType(ins[0].dtype, out)

    case let .pixelShuffle(r), let .pixelUnshuffle(r):
        try rank(0, 4); try float(0)
        guard r >= 1 else { throw fail("factor must be positive") }
        let s = ins[0].shape
        let c = try constant(s[1], "channels")
        let rr = try mul(r, r)
        if case .pixelShuffle = op {
            guard c % rr == 0 else { throw fail("\(c) channels do not divide by \(rr)") }
            guard let h = s[2].scaled(by: r), let w = s[3].scaled(by: r) else { throw fail("spatial size \(s[2]) x \(s[3]) times \(r) overflows") }
            return TensorType(ins[0].dtype, [s[0], .c(c / rr), h, w])
        }
        guard let h = s[2].scaled(by: 1, over: r), let w = s[3].scaled(by: 1, over: r) else {
            throw fail("spatial size \(s[2]) x \(s[3]) does not divide by \(r)")
        }
        return TensorType(ins[0].dtype, [s[0], .c(try mul(c, rr)), h, w])

    case .embedding:
        try rank(0, 2); try rank(1, 1); try float(0)
        guard ins[1].dtype == .i64 else { throw fail("indices must be i64, are \(ins[1].dtype.rawValue)") }
        return TensorType(f32, [ins[1].shape[0], ins[0].shape[1]])

    case let .timestepEmbedding(dim, maxPeriod):
        try rank(0, 1)
        guard ins[0].dtype == .f32 else { throw fail("timesteps must be f32, are \(ins[0].dtype.rawValue)") }
        guard dim > 0, dim % 2 == 0, maxPeriod > 1 else { throw fail("dim must be even and positive, max_period above 1") }
        return TensorType(f32, [ins[0].shape[0], .c(dim)])
    }
}
