import DicoCore
import DicoRuntime
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Node patterns the ONNX interpreter recognizes when it is built and runs as one kernel each.
///
/// - `decomposedLayerNorm`: the legacy TorchScript exporter's LayerNorm,
///   `ReduceMean(X, axes=[a]) -> Sub(X, mean) -> Pow(d, 2) (or Mul(d, d)) -> ReduceMean(axes=[a])
///   -> Add(eps) -> Sqrt -> Div(d, sqrt)`, optionally followed by an affine `Mul(scale)` and
///   `Add(bias)` (constants of shape [len] with leading 1s, over the last axis only), and either
///   with DiCo's channel Transposes around it (`Transpose(0,2,3,1)` in, `axes` [-1] or [3],
///   `Transpose(0,3,1,2)` out: it then normalizes the NCHW channel axis in place) or over any
///   one axis directly (axis 1 of NCHW, say). The fused kernel performs the same float32
///   operations on the same values in the same order as the nodes (the means summed in Double
///   in index order and rounded once, as `ReduceMean`; `x - mean`, `d * d`, `var + eps`,
///   `sqrtf`, `d / s`, `* scale`, `+ bias` each rounded to float32), so its output is bit for
///   bit the unfused one; it only skips the intermediate tensors and the two transposes.
/// - `transposedLayerNormalization`: `Transpose(0,2,3,1) -> LayerNormalization(axis -1 or 3,
///   constant Scale and B) -> Transpose(0,3,1,2)`, the channel LayerNorm of the opset-17
///   legacy and dynamo exports, run by the IR executor's channel LayerNorm (statistics in
///   Double, as the interpreter's LayerNormalization) on NCHW directly, then Scale and B per
///   channel unless they are all ones and zeros. Its mean and variance are the same Double
///   sums in the same order, divided by the channel count as a multiplication by its
///   reciprocal: the result differs from the unfused one by at most one float32 rounding.
/// - `decomposedGelu`: the legacy exporter's exact GELU, `Div(x, sqrt 2) -> Erf -> Add(1) ->
///   Mul(x) -> Mul(0.5)`, the commutative operands in either order, run by the IR executor's
///   GELU kernel, as the interpreter runs the `Gelu` op. It evaluates the same function
///   0.5 x (1 + erf(x / sqrt 2)) in float32 with a rational erf approximation (Eigen's, within
///   a few float32 ulps of libm's erff, which the Erf node calls): the fused output differs
///   from the unfused one by those few ulps per element, not by any change of formula. libm's
///   scalar erff made these five nodes 40% of a legacy DiCo-S forward.
///
/// A pattern fires only when each intermediate value is read by nothing but the next nodes of
/// the pattern and is not a graph output, each constant (sqrt 2, 1, 0.5, the exponent 2, eps,
/// scale, bias) is an initializer or a Constant node's output with exactly the expected value,
/// and both ReduceMeans (keepdims 1) reduce the same single axis. Anything else runs node by node.
public enum ONNXFusion: String, CaseIterable, Sendable {
    case decomposedLayerNorm = "decomposed LayerNorm"
    case transposedLayerNormalization = "transposed LayerNormalization"
    case decomposedGelu = "decomposed GELU"
}

/// One node of the graph as the recognizer sees it: its input and output value slots.
struct FusionNode {
    let node: ONNXNode
    let inputs: [Int?]
    let outputs: [Int?]
}

/// A recognized pattern: the nodes it replaces (indices into the node list), and the one
/// kernel that replaces them, reading `inputs` and writing `outputs`.
struct FusedPattern {
    let kind: ONNXFusion
    let nodes: [Int]
    let inputs: [Int?]
    let outputs: [Int?]
    let kernel: Kernel
}

/// Finds the patterns of `ONNXFusion` in `nodes` (in file order, without overlaps).
/// `constant` gives the value of a slot known before any run; `graphOutputs` are the slots
/// the graph returns (they must survive, so they end no pattern's intermediates).
func recognizeFusions(_ nodes: [FusionNode], constant: @escaping (Int) -> ONNXValue?, graphOutputs: Set<Int>, opset: Int) -> [FusedPattern] {
    var producer: [Int: Int] = [:]
    var readers: [Int: [Int]] = [:]
    for (i, n) in nodes.enumerated() {
        for case let s? in n.outputs { producer[s] = i }
        for case let s? in n.inputs { readers[s, default: []].append(i) }
    }
    var used = Set<Int>()
    var found: [FusedPattern] = []
    let m = Matcher(nodes: nodes, constant: constant, producer: producer, readers: readers, graphOutputs: graphOutputs, opset: opset)
    for i in nodes.indices where !used.contains(i) {
        let p: FusedPattern?
        switch nodes[i].node.opType {
        case "ReduceMean": p = m.decomposedLayerNorm(at: i)
        case "LayerNormalization": p = m.transposedLayerNormalization(at: i)
        case "Erf": p = m.decomposedGelu(at: i)
        default: p = nil
        }
        if let p, used.isDisjoint(with: p.nodes) {
            used.formUnion(p.nodes)
            found.append(p)
        }
    }
    return found
}

/// The pattern tests, over one graph.
private struct Matcher {
    let nodes: [FusionNode]
    let constant: (Int) -> ONNXValue?
    let producer: [Int: Int]
    let readers: [Int: [Int]]
    let graphOutputs: Set<Int>
    let opset: Int

    /// The first output of node `i`.
    func out(_ i: Int) -> Int? { nodes[i].outputs.first ?? nil }

    /// The node `i`'s only output, when it has exactly one output and it is read only by
    /// the nodes `by` (each at least once) and is not a graph output.
    func intermediate(_ i: Int, readBy by: Set<Int>) -> Int? {
        guard nodes[i].outputs.count == 1, let s = out(i), !graphOutputs.contains(s), Set(readers[s] ?? []) == by else { return nil }
        return s
    }

    /// The single node reading slot `s` (if exactly one node reads it, once or more).
    func soleReader(_ s: Int) -> Int? {
        guard let r = readers[s], Set(r).count == 1 else { return nil }
        return r[0]
    }

    /// Whether node `i` is `op` in the default domain with the given input count.
    func isOp(_ i: Int, _ op: String, inputs: Int) -> Bool {
        let n = nodes[i].node
        return n.opType == op && (n.domain.isEmpty || n.domain == "ai.onnx") && n.inputs.count == inputs && nodes[i].inputs.allSatisfy { $0 != nil }
    }

    /// The single float32 value of a constant slot of shape [] or [1].
    func scalar(_ s: Int?) -> Float? {
        guard let s, let c = constant(s), c.shape.count <= 1, c.count == 1, let f = c.floats else { return nil }
        return f[0]
    }

    /// For a commutative binary node reading `x`: its other operand's slot.
    func other(_ i: Int, than x: Int) -> Int? {
        let ins = nodes[i].inputs
        if ins[0] == x { return ins[1] }
        if ins[1] == x { return ins[0] }
        return nil
    }

    /// A Transpose node with exactly `perm` and no other attribute.
    func isTranspose(_ i: Int, _ perm: [Int64]) -> Bool {
        isOp(i, "Transpose", inputs: 1) && nodes[i].node.attributes.keys.sorted() == ["perm"] && nodes[i].node.attributes["perm"]?.ints == perm
    }

    /// A ReduceMean's single reduced axis (keepdims 1, attribute form before opset 18, a
    /// constant input from 18), or nil.
    func reduceAxis(_ i: Int) -> Int? {
        let n = nodes[i].node
        guard n.opType == "ReduceMean", nodes[i].inputs.first != nil, (n.attributes["keepdims"]?.int ?? 1) == 1 else { return nil }
        let axes: [Int64]?
        if opset < 18 {
            guard n.inputs.count == 1, Set(n.attributes.keys).isSubset(of: ["axes", "keepdims"]) else { return nil }
            axes = n.attributes["axes"]?.ints
        } else {
            guard n.inputs.count == 2, let s = nodes[i].inputs[1], Set(n.attributes.keys).isSubset(of: ["keepdims", "noop_with_empty_axes"]),
                  (n.attributes["noop_with_empty_axes"]?.int ?? 0) == 0 else { return nil }
            axes = constant(s)?.integers
        }
        guard let axes, axes.count == 1, let a = Int(exactly: axes[0]) else { return nil }
        return a
    }

    /// A per-channel affine constant over the last axis: float32 of shape [len] with leading 1s.
    func affineVector(_ s: Int?) -> (values: [Float], len: Int)? {
        guard let s, let c = constant(s), let f = c.floats, let last = c.shape.last, c.shape.dropLast().allSatisfy({ $0 == 1 }) else { return nil }
        return (f, last)
    }

    func decomposedLayerNorm(at m1: Int) -> FusedPattern? {
        guard let axis = reduceAxis(m1), let x = nodes[m1].inputs[0], let mean = out(m1),
              let sub = soleReader(mean), isOp(sub, "Sub", inputs: 2), nodes[sub].inputs == [x, mean],
              intermediate(m1, readBy: [sub]) != nil, let d = out(sub) else { return nil }
        // d feeds the square and the division, nothing else.
        let dReaders = Set(readers[d] ?? [])
        guard dReaders.count == 2, let sq = dReaders.first(where: { nodes[$0].node.opType != "Div" }),
              let div = dReaders.first(where: { nodes[$0].node.opType == "Div" }), intermediate(sub, readBy: [sq, div]) != nil else { return nil }
        if isOp(sq, "Pow", inputs: 2) {
            guard nodes[sq].inputs[0] == d, let e = nodes[sq].inputs[1], let c = constant(e), c.shape.count <= 1, c.count == 1 else { return nil }
            let two: Bool
            switch c.storage {
            case let .f32(v): two = v[0] == 2
            case let .f64(v): two = v[0] == 2
            case let .i64(v): two = v[0] == 2
            case let .i32(v): two = v[0] == 2
            case .bool: two = false
            }
            guard two else { return nil }
        } else {
            guard isOp(sq, "Mul", inputs: 2), nodes[sq].inputs == [d, d] else { return nil }
        }
        guard let sqOut = out(sq), let m2 = soleReader(sqOut), reduceAxis(m2) == axis, nodes[m2].inputs[0] == sqOut,
              intermediate(sq, readBy: [m2]) != nil, let variance = out(m2),
              let add = soleReader(variance), isOp(add, "Add", inputs: 2), intermediate(m2, readBy: [add]) != nil,
              let eps = scalar(other(add, than: variance)),
              let sum = out(add), let sqrt = soleReader(sum), isOp(sqrt, "Sqrt", inputs: 1), intermediate(add, readBy: [sqrt]) != nil,
              let sd = out(sqrt), intermediate(sqrt, readBy: [div]) != nil, isOp(div, "Div", inputs: 2), nodes[div].inputs == [d, sd],
              var y = out(div) else { return nil }
        var members = [m1, sub, sq, m2, add, sqrt, div]
        var last = div
        // Optional affine over the last axis.
        var scale: [Float]?, bias: [Float]?, affineLen: Int?
        if axis == -1 || axis == 3, let mul = soleReader(y), isOp(mul, "Mul", inputs: 2), intermediate(last, readBy: [mul]) != nil,
           let s = affineVector(other(mul, than: y)), let mo = out(mul) {
            scale = s.values; affineLen = s.len
            members.append(mul); last = mul; y = mo
            if let add2 = soleReader(y), isOp(add2, "Add", inputs: 2), intermediate(last, readBy: [add2]) != nil,
               let b = affineVector(other(add2, than: y)), b.len == s.len, let ao = out(add2) {
                bias = b.values
                members.append(add2); last = add2; y = ao
            }
        }
        // DiCo's channel Transposes around it.
        var input = x
        var channelFirst = false
        if axis == -1 || axis == 3, let tIn = producer[x], isTranspose(tIn, [0, 2, 3, 1]), intermediate(tIn, readBy: [m1, sub]) != nil,
           let tOut = soleReader(y), isTranspose(tOut, [0, 3, 1, 2]), intermediate(last, readBy: [tOut]) != nil,
           let source = nodes[tIn].inputs[0], let final = out(tOut) {
            members = [tIn] + members + [tOut]
            input = source
            y = final
            channelFirst = true
        }
        // An affine over axis 3 is over the last axis only at rank 4, which the transposes guarantee.
        if axis == 3, !channelFirst, scale != nil { return nil }
        let layout = channelFirst
        let kernel: Kernel = { inputs in
            let xv = try arg(inputs, 0)
            let v = try requireFloats(xv, "input X")
            let r = xv.shape.count
            // The reduced axis of the NCHW tensor when the transposes are folded in.
            let a = layout ? 1 : try normalizeAxis(axis, rank: r)
            if layout, r != 4 { throw OpFailure("input X has shape \(xv.shape); the transposes need rank 4") }
            if let affineLen, xv.shape[a] != affineLen {
                throw OpFailure("scale [\(affineLen)] does not match axis \(a) of \(xv.shape)")
            }
            let outer = try product(xv.shape[..<a]), len = xv.shape[a], inner = try product(xv.shape[(a + 1)...])
            let y: [Float] = v.withUnsafeBufferPointer { src in
                makeArray(v.count) { dst in
                    floatLayerNorm(x: src.baseAddress!, y: dst.baseAddress!, outer: outer, len: len, inner: inner, eps: eps, scale: scale, bias: bias)
                }
            }
            return [ONNXValue(unchecked: xv.shape, .f32(y))]
        }
        return FusedPattern(kind: .decomposedLayerNorm, nodes: members, inputs: [input], outputs: [y], kernel: kernel)
    }

    func transposedLayerNormalization(at ln: Int) -> FusedPattern? {
        let n = nodes[ln].node
        guard opset >= 17, n.inputs.count >= 2, n.inputs.count <= 3, let x = nodes[ln].inputs[0], let tIn = producer[x],
              isTranspose(tIn, [0, 2, 3, 1]), intermediate(tIn, readBy: [ln]) != nil, let source = nodes[tIn].inputs[0],
              Set(n.attributes.keys).isSubset(of: ["axis", "epsilon", "stash_type"]),
              [-1, 3].contains(n.attributes["axis"]?.int ?? -1), [1, 11].contains(n.attributes["stash_type"]?.int ?? 1),
              let ss = nodes[ln].inputs[1], let scale = affineVector(ss) else { return nil }
        var bias: [Float]?
        if n.inputs.count == 3 {
            guard let bs = nodes[ln].inputs[2], let b = affineVector(bs), b.len == scale.len else { return nil }
            bias = b.values
        }
        // Mean and InvStdDev must be unused.
        for case let s? in nodes[ln].outputs.dropFirst() where readers[s] != nil || graphOutputs.contains(s) { return nil }
        guard let y = out(ln), !graphOutputs.contains(y), let tOut = soleReader(y), isTranspose(tOut, [0, 3, 1, 2]),
              Set(readers[y]!) == [tOut], let final = out(tOut) else { return nil }
        let eps = n.attributes["epsilon"]?.float ?? 1e-5
        let len = scale.len
        let scaleValues = scale.values.allSatisfy { $0 == 1 } ? nil : scale.values
        let biasValues = bias.flatMap { $0.allSatisfy { $0 == 0 } ? nil : $0 }
        let kernel: Kernel = { inputs in
            let xv = try arg(inputs, 0)
            let v = try requireFloats(xv, "input X")
            guard xv.shape.count == 4, xv.shape[1] == len else { throw OpFailure("input X has shape \(xv.shape); expected [N, \(len), H, W]") }
            let (batch, pixels) = (xv.shape[0], xv.shape[2] * xv.shape[3])
            let y: [Float] = v.withUnsafeBufferPointer { src in
                makeArray(v.count) { dst in
                    guard !v.isEmpty else { return }
                    channelLayerNorm(x: src.baseAddress!, y: dst.baseAddress!, batch: batch, channels: len, pixels: pixels, eps: eps, threads: sgemmThreads)
                    if scaleValues != nil || biasValues != nil {
                        channelAffine(dst.baseAddress!, planes: batch * len, channels: len, pixels: pixels, scale: scaleValues, bias: biasValues)
                    }
                }
            }
            return [ONNXValue(unchecked: xv.shape, .f32(y))]
        }
        return FusedPattern(kind: .transposedLayerNormalization, nodes: [tIn, ln, tOut], inputs: [source], outputs: [final], kernel: kernel)
    }

    func decomposedGelu(at e: Int) -> FusedPattern? {
        let root2 = Float(2).squareRoot()
        guard isOp(e, "Erf", inputs: 1), let q = nodes[e].inputs[0], let dv = producer[q], isOp(dv, "Div", inputs: 2),
              let x = nodes[dv].inputs[0], scalar(nodes[dv].inputs[1]) == root2, intermediate(dv, readBy: [e]) != nil,
              let erfOut = out(e), let add = soleReader(erfOut), isOp(add, "Add", inputs: 2), intermediate(e, readBy: [add]) != nil,
              scalar(other(add, than: erfOut)) == 1,
              let p = out(add), let mul = soleReader(p), isOp(mul, "Mul", inputs: 2), intermediate(add, readBy: [mul]) != nil,
              other(mul, than: p) == x, nodes[mul].inputs[0] != nodes[mul].inputs[1],
              let r = out(mul), let half = soleReader(r), isOp(half, "Mul", inputs: 2), intermediate(mul, readBy: [half]) != nil,
              scalar(other(half, than: r)) == 0.5, let y = out(half) else { return nil }
        // The constants' shapes ([] or [1]) broadcast with x: a rank-0 x becomes [1].
        let constShapes = [nodes[dv].inputs[1]!, other(add, than: erfOut)!, other(half, than: r)!].map { constant($0)!.shape }
        let kernel: Kernel = { inputs in
            let xv = try arg(inputs, 0)
            let shape = try BroadcastPlan([xv.shape] + constShapes).shape
            return [ONNXValue(unchecked: shape, .f32(gelu(try requireFloats(xv, "input x"))))]
        }
        return FusedPattern(kind: .decomposedGelu, nodes: [dv, e, add, mul, half], inputs: [x], outputs: [y], kernel: kernel)
    }
}

/// The decomposed LayerNorm's float32 arithmetic over the middle axis of [outer, len, inner]
/// (see `ONNXFusion.decomposedLayerNorm`), parallel over (outer, pixel tile) jobs.
private func floatLayerNorm(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, outer: Int, len: Int, inner: Int, eps: Float,
                            scale: [Float]?, bias: [Float]?) {
    let tile = min(inner, 128)
    guard outer * len * inner > 0 else { return }
    let tiles = (inner + tile - 1) / tile
    let jobs = outer * tiles
    let workers = min(jobs, sgemmThreads)
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        var acc = [Double](repeating: 0, count: tile)
        var mean = [Float](repeating: 0, count: tile), s = [Float](repeating: 0, count: tile)
        for job in stride(from: w, to: jobs, by: workers) {
            let o = job / tiles, i0 = (job % tiles) * tile, n = min(tile, inner - i0)
            let base = o * len * inner + i0
            for i in 0..<n { acc[i] = 0 }
            for c in 0..<len { let row = x + base + c * inner; for i in 0..<n { acc[i] += Double(row[i]) } }
            for i in 0..<n { mean[i] = Float(acc[i] / Double(len)); acc[i] = 0 }
            for c in 0..<len {
                let row = x + base + c * inner
                for i in 0..<n { let d = row[i] - mean[i]; acc[i] += Double(d * d) }
            }
            for i in 0..<n { s[i] = sqrtf(Float(acc[i] / Double(len)) + eps) }
            for c in 0..<len {
                let row = x + base + c * inner, o = y + base + c * inner
                for i in 0..<n { o[i] = (row[i] - mean[i]) / s[i] }
                if let scale { let k = scale[c]; for i in 0..<n { o[i] = o[i] * k } }
                if let bias { let b = bias[c]; for i in 0..<n { o[i] = o[i] + b } }
            }
        }
    }
}

/// y = y * scale[c] + bias[c] per channel plane of [planes = N*C, pixels], in place.
private func channelAffine(_ y: UnsafeMutablePointer<Float>, planes: Int, channels: Int, pixels: Int, scale: [Float]?, bias: [Float]?) {
    for p in 0..<planes {
        let c = p % channels, o = y + p * pixels
        if let scale { let k = scale[c]; for i in 0..<pixels { o[i] = o[i] * k } }
        if let bias { let b = bias[c]; for i in 0..<pixels { o[i] = o[i] + b } }
    }
}
