import DicoCore
import DicoIR
import DicoRuntime

/// Splits a 1x1 conv over a channel concatenation, and folds the upsampled half into the
/// 3x3 conv before the pixel shuffle (DiCo's linear fold 2, the decoder's `reduce_chan`).
///
/// Rules, for `y = conv1x1(concat_axis1(p_1..p_k), W, b)` where the concat has no other reader
/// and `W` is constant:
/// 1. Split: `y = conv1x1(p_1, W_1, b) + conv1x1(p_2, W_2) + ...`, `W_j` the input-channel
///    columns of `W` that read `p_j`; the bias goes to exactly one branch (the first). The
///    concatenated tensor is never materialized. Exact in real arithmetic: each output is the
///    same dot product summed in two parts (a reordered float sum, well inside 1e-6).
/// 2. Fold: when `p_j = pixel_shuffle_r(conv2d(z, W3, b3))` (stride 1, groups 1, `W3`
///    constant, each read only here), branch j becomes `pixel_shuffle_r(conv2d(z, W', b'))`
///    with `W'[co*r*r + s] = sum_ci W_j[co, ci] W3[ci*r*r + s]` and likewise `b'` (plus `b`
///    when branch j carries it). PixelShuffle (DICO_MODEL.md) maps channel `ci*r*r + s` of the
///    small side to channel `ci` at sub-pixel `s`, and a 1x1 conv mixes channels per pixel, so
///    the two linear maps compose into one 3x3 conv: exact in real arithmetic (the weights are
///    one float sgemm per sub-pixel, a reordered sum). It fires only when it removes multiply-adds:
///    `W'` has `Cout*r*r` rows where `W3` had `Cin_j*r*r`, so it pays when `Cout <= Cin_j`
///    (DiCo's level 2: 2C -> 2C, the 1x1's multiply-adds vanish) and not when the 1x1 widens
///    (DiCo's level 1: C -> 2C would double the 3x3 conv).
///
/// Rule 1 fires only together with rule 2 unless `splitWithoutFold`: measured on DiCo-S
/// (BENCHMARKS.md), the split alone is not measurably faster than the concat (the add of the
/// two branches moves as many bytes as the concat copy did), so the default keeps the concat
/// where nothing folds.
public struct FoldReduceChan: GraphPass {
    /// `fold-reduce-chan`; the variant that splits everywhere is `split-reduce-chan` (not in
    /// the default pipeline; kept so the benchmark can measure the split alone).
    public var name: String { splitWithoutFold ? "split-reduce-chan" : "fold-reduce-chan" }
    /// Split even where no branch folds.
    public let splitWithoutFold: Bool
    public init(splitWithoutFold: Bool = false) { self.splitWithoutFold = splitWithoutFold }

    public func run(_ graph: inout Graph) throws -> Bool {
        let uses = graph.useCounts(), producers = graph.producers()
        func producer(_ v: ValueID) -> Node? { producers[v.index].map { graph.nodes[$0] } }

        /// Branch j folds: (the 3x3 conv node, the factor).
        func foldable(_ part: ValueID, cout: Int) -> (Node, Int)? {
            guard uses[part.index] == 1, let ps = producer(part), case let .pixelShuffle(r) = ps.op,
                  uses[ps.inputs[0].index] == 1, let conv = producer(ps.inputs[0]),
                  case .conv2d(stride: 1, _, groups: 1) = conv.op, graph.isFloatConstant(conv.inputs[1]),
                  conv.inputs.count == 2 || graph.isFloatConstant(conv.inputs[2]) else { return nil }
            let cin = graph[part].type.shape[1].constant!
            // Multiply-adds per small-side pixel: folded Cout*r*r*K vs Cin*r*r*K + r*r*Cout*Cin.
            let k = graph[conv.inputs[1]].type.shape.dropFirst().reduce(1) { $0 * $1.constant! }
            guard cout * r * r * k < cin * r * r * k + r * r * cout * cin else { return nil }
            return (conv, r)
        }

        struct Plan { let conv: Node; let concat: Node; let folds: [Int: (Node, Int)] }
        var plans: [Int: Plan] = [:]          // by index of the 1x1 conv
        var absorbed = Set<Int>()             // nodes replaced by the plans
        for (i, node) in graph.nodes.enumerated() {
            guard case .conv2d(stride: 1, padding: 0, groups: 1) = node.op, graph.isFloatConstant(node.inputs[1]),
                  node.inputs.count == 2 || graph.isFloatConstant(node.inputs[2]),
                  graph[node.inputs[1]].type.shape[2] == .c(1), graph[node.inputs[1]].type.shape[3] == .c(1),
                  uses[node.inputs[0].index] == 1, let concat = producer(node.inputs[0]), case .concat(axis: 1) = concat.op,
                  concat.inputs.count >= 2 else { continue }
            let cout = graph[node.inputs[1]].type.shape[0].constant!
            var folds: [Int: (Node, Int)] = [:]
            for (j, p) in concat.inputs.enumerated() where !concat.inputs[..<j].contains(p) {
                if let f = foldable(p, cout: cout) { folds[j] = f }
            }
            guard splitWithoutFold || !folds.isEmpty else { continue }
            plans[i] = Plan(conv: node, concat: concat, folds: folds)
            absorbed.insert(producers[concat.output.index]!)
            for (j, (conv, _)) in folds {
                absorbed.insert(producers[concat.inputs[j].index]!)
                absorbed.insert(producers[conv.output.index]!)
            }
        }
        guard !plans.isEmpty else { return false }

        var rw = GraphRewriter(graph)
        for (i, node) in graph.nodes.enumerated() where !absorbed.contains(i) {
            guard let plan = plans[i] else { try rw.copy(node); continue }
            let bias = node.inputs.count == 3 ? graph.floats(node.inputs[2])! : nil
            let wShape = graph[node.inputs[1]].type.shape.map { $0.constant! }
            let cout = wShape[0], cinTotal = wShape[1]
            var branches: [ValueID] = []
            var col = 0
            for (j, part) in plan.concat.inputs.enumerated() {
                let cin = graph[part].type.shape[1].constant!
                // W_j: columns [col, col + cin) of W.
                var wj = [Float](repeating: 0, count: cout * cin)
                graph.withFloats(node.inputs[1]) { w in
                    for co in 0..<cout { for ci in 0..<cin { wj[co * cin + ci] = w[co * cinTotal + col + ci] } }
                }
                let withBias = j == 0 ? bias : nil
                let branchName = "\(node.name).part\(j)"
                if let (conv3, r) = plan.folds[j] {
                    branches.append(try fold(conv3, r: r, wj: wj, cout: cout, cin: cin, bias: withBias, name: branchName,
                                             graph: graph, rw: &rw))
                } else {
                    var ins = [rw.value(part), rw.newConstant(branchName + ".weight", TensorData(shape: [cout, cin, 1, 1], floats: wj))]
                    if let withBias { ins.append(rw.newConstant(branchName + ".bias", TensorData(shape: [cout], floats: withBias))) }
                    branches.append(try rw.add(.conv2d(stride: 1, padding: 0, groups: 1), ins, name: branchName))
                }
                col += cin
            }
            var sum = branches[0]
            for (j, b) in branches.enumerated().dropFirst() {
                sum = try rw.add(.add, [sum, b], name: j == branches.count - 1 ? node.name : "\(node.name).sum\(j)")
            }
            rw.bind(node.output, toNew: sum)
        }
        graph = rw.finish()
        return true
    }

    /// Emits `pixel_shuffle_r(conv2d(z, W', b'))` for the 3x3 conv `conv3` composed with the
    /// 1x1 weight `wj` [cout, cin] (and `bias`, added once per output channel).
    private func fold(_ conv3: Node, r: Int, wj: [Float], cout: Int, cin: Int, bias: [Float]?, name: String,
                      graph: Graph, rw: inout GraphRewriter) throws -> ValueID {
        let s3 = graph[conv3.inputs[1]].type.shape.map { $0.constant! }
        let k = s3[1] * s3[2] * s3[3], rr = r * r
        let b3 = conv3.inputs.count == 3 ? graph.floats(conv3.inputs[2])! : nil
        // For each sub-pixel s: W'[co*rr + s, :] = W_j[co, :] . W3[ci*rr + s, :], one GEMM over
        // the rows of W3 that shuffle to s (leading dimension rr*k). W3 is read in place and W'
        // written straight into its tensor: DiCo-XL's are 200 MB each.
        let wOut = OwnedBytes(count: cout * rr * k * 4)
        let c = wOut.pointer.assumingMemoryBound(to: Float.self)
        wj.withUnsafeBufferPointer { a in
            graph.withFloats(conv3.inputs[1]) { b in
                for s in 0..<rr {
                    matrixProduct(m: cout, n: k, k: cin, a: a.baseAddress!, lda: cin, b: b + s * k, ldb: rr * k,
                                  c: c + s * k, ldc: rr * k, threads: Executor.defaultThreads)
                }
            }
        }
        let w = TensorData(dtype: .f32, shape: [cout * rr, s3[1], s3[2], s3[3]], storage: .owned(wOut), byteCount: cout * rr * k * 4)
        // W3 is not needed any more: drop its pages from our resident set, as conversion does
        // for each tensor it has written (they come back from the page cache if read again).
        if let d3 = graph.constant(conv3.inputs[1]), case let .mapped(file, offset) = d3.storage { file.release(offset: offset, count: d3.byteCount) }
        var b = [Float](repeating: 0, count: cout * rr)
        for co in 0..<cout {
            for s in 0..<rr {
                var acc = Double(bias?[co] ?? 0)
                if let b3 { for ci in 0..<cin { acc += Double(wj[co * cin + ci]) * Double(b3[ci * rr + s]) } }
                b[co * rr + s] = Float(acc)
            }
        }
        var ins = [rw.value(conv3.inputs[0]), rw.newConstant(name + ".weight", w)]
        if b3 != nil || bias != nil { ins.append(rw.newConstant(name + ".bias", TensorData(shape: [cout * rr], floats: b))) }
        let conv = try rw.add(conv3.op, ins, name: name + ".conv")
        return try rw.add(.pixelShuffle(factor: r), [conv], name: name)
    }
}
