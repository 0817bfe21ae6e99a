/// numpy-style multidirectional broadcasting (ONNX "Broadcasting in ONNX"), shared by every
/// elementwise op with more than one input (Add, Mul, Where, Equal, ...) and by Expand.
///
/// Shapes are right-aligned; each dimension pair must be equal or one of them 1. The plan
/// coalesces adjacent output dimensions along which every operand is either contiguous or
/// constant, so DiCo's [N,C,H,W] x [N,C,1,1] runs as N*C runs of H*W elements.
struct BroadcastPlan {
    /// The broadcast output shape.
    let shape: [Int]
    let count: Int
    /// Coalesced output extents, outermost first (at least one).
    let extents: [Int]
    /// Per operand, its element stride along each coalesced extent (0 where it repeats).
    let strides: [[Int]]

    /// The plan for `shapes`, or a failure naming the first dimension that does not broadcast.
    init(_ shapes: [[Int]]) throws {
        let rank = shapes.map(\.count).max() ?? 0
        var out = [Int](repeating: 1, count: rank)
        for s in shapes {
            for (k, d) in s.enumerated() {
                let j = rank - s.count + k
                if d == out[j] || d == 1 { continue }
                guard out[j] == 1 else {
                    throw OpFailure("shapes \(shapes.map { "\($0)" }.joined(separator: " and ")) do not broadcast (dimension \(j - rank) is \(out[j]) and \(d))")
                }
                out[j] = d
            }
        }
        guard let count = checkedElementCount(out) else { throw OpFailure("broadcast shape \(out) is too large") }
        shape = out
        self.count = count
        // Per operand, full-rank strides (0 on broadcast dimensions).
        let full: [[Int]] = shapes.map { s in
            var st = [Int](repeating: 0, count: rank)
            var acc = 1
            for k in stride(from: s.count - 1, through: 0, by: -1) {
                let j = rank - s.count + k
                st[j] = s[k] == 1 && out[j] != 1 ? 0 : acc
                acc *= s[k]
            }
            return st
        }
        // Coalesce from the innermost dimension: dimension j merges into the run inside it
        // when, for every operand, stride[j] == stride[inner] * extent[inner] (contiguous) or
        // both strides are 0 (repeated). Size-1 dimensions are dropped.
        var ext: [Int] = []
        var st: [[Int]] = shapes.map { _ in [] }
        for j in stride(from: rank - 1, through: 0, by: -1) where out[j] != 1 {
            if let last = ext.last,
               full.indices.allSatisfy({ i in full[i][j] == st[i].last! * last || (full[i][j] == 0 && st[i].last! == 0) }) {
                ext[ext.count - 1] = last * out[j]
                continue
            }
            ext.append(out[j])
            for i in full.indices { st[i].append(full[i][j]) }
        }
        if ext.isEmpty {
            ext = [1]
            st = shapes.map { _ in [0] }
        }
        extents = ext.reversed()
        strides = st.map { $0.reversed() }
    }

    /// Calls `body(outOffset, operandOffsets, innerStrides, length)` for every innermost run,
    /// in output order.
    @inline(__always)
    func forEachRun(_ body: (Int, [Int], [Int], Int) -> Void) {
        let inner = extents.count - 1, len = extents[inner]
        let innerStrides = strides.map { $0[inner] }
        var idx = [Int](repeating: 0, count: inner)
        var offsets = [Int](repeating: 0, count: strides.count)
        var outOffset = 0
        let runs = len == 0 ? 0 : count / len
        for _ in 0..<runs {
            body(outOffset, offsets, innerStrides, len)
            outOffset += len
            // Odometer over the outer extents.
            var k = inner - 1
            while k >= 0 {
                idx[k] += 1
                for i in offsets.indices { offsets[i] += strides[i][k] }
                if idx[k] < extents[k] { break }
                for i in offsets.indices { offsets[i] -= strides[i][k] * extents[k] }
                idx[k] = 0
                k -= 1
            }
        }
    }
}

/// `f` applied elementwise to `a` and `b` broadcast together.
@inline(__always)
func broadcastBinary<T, R>(_ a: [T], _ aShape: [Int], _ b: [T], _ bShape: [Int], _ f: (T, T) -> R) throws -> ([Int], [R]) {
    let plan = try BroadcastPlan([aShape, bShape])
    let out: [R] = a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            makeArray(plan.count) { (y: UnsafeMutableBufferPointer<R>) in
                let y = y.baseAddress!
                plan.forEachRun { o, off, st, n in
                    let x0 = pa.baseAddress! + off[0], x1 = pb.baseAddress! + off[1], dst = y + o
                    // The four stride patterns as separate loops, so each vectorizes.
                    switch (st[0], st[1]) {
                    case (1, 1): for i in 0..<n { (dst + i).initialize(to: f(x0[i], x1[i])) }
                    case (1, 0): let v = x1[0]; for i in 0..<n { (dst + i).initialize(to: f(x0[i], v)) }
                    case (0, 1): let v = x0[0]; for i in 0..<n { (dst + i).initialize(to: f(v, x1[i])) }
                    default: let v = f(x0[0], x1[0]); for i in 0..<n { (dst + i).initialize(to: v) }
                    }
                }
            }
        }
    }
    return (plan.shape, out)
}

/// `values` broadcast to `plan`'s shape as operand `operand` of the plan (Expand, Where).
func broadcastCopy<T>(_ values: [T], plan: BroadcastPlan, operand: Int) -> [T] {
    values.withUnsafeBufferPointer { src in
        makeArray(plan.count) { (y: UnsafeMutableBufferPointer<T>) in
            plan.forEachRun { o, off, st, n in
                let s = src.baseAddress! + off[operand], dst = y.baseAddress! + o
                if st[operand] == 0 {
                    (dst).initialize(repeating: s[0], count: n)
                } else {
                    dst.initialize(from: s, count: n)
                }
            }
        }
    }
}
