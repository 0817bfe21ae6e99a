import DicoCore

// Ops that compute or change shapes without moving elements: Shape, Size, Reshape,
// Flatten, Squeeze, Unsqueeze, Identity, and the constant makers Constant, ConstantOfShape
// and Range.

let shapePreparers: [String: KernelPreparer] = [
    "Shape": prepareShape, "Size": prepareSize, "Reshape": prepareReshape, "Flatten": prepareFlatten,
    "Squeeze": prepareSqueeze, "Unsqueeze": prepareUnsqueeze, "Identity": prepareIdentity,
    "Constant": prepareConstant, "ConstantOfShape": prepareConstantOfShape, "Range": prepareRange,
]

private func prepareShape(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(spec.opset >= 15 ? ["start", "end"] : [])
    try spec.requireInputs(1, 1)
    try spec.requireOutputs(1, 1)
    let start = try spec.int("start", default: 0)
    let end = spec.node.attributes["end"] == nil ? nil : try spec.int("end", default: 0)
    return { inputs in
        let x = try arg(inputs, 0)
        let r = x.shape.count
        // Opset 15: negative start/end count from the back; both are clamped to [0, rank].
        func clamp(_ v: Int) -> Int { min(max(v < 0 ? v + r : v, 0), r) }
        let lo = clamp(start), hi = clamp(end ?? r)
        let dims = lo < hi ? x.shape[lo..<hi].map { Int64($0) } : []
        return [ONNXValue(unchecked: [dims.count], .i64(dims))]
    }
}

private let prepareSize = plainOp(1) { inputs in ONNXValue(unchecked: [], .i64([Int64(try arg(inputs, 0).count)])) }

private func prepareReshape(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(spec.opset >= 14 ? ["allowzero"] : [])
    try spec.requireInputs(2, 2)
    try spec.requireOutputs(1, 1)
    let allowZero = try spec.int("allowzero", default: 0)
    guard allowZero == 0 || allowZero == 1 else { throw OpFailure("allowzero must be 0 or 1") }
    return { inputs in
        let x = try arg(inputs, 0)
        let target = try requireIntegers(try arg(inputs, 1), "shape")
        return [try reshaped(x, to: resolveReshape(x.shape, target, allowZero: allowZero == 1))]
    }
}

/// Reshape's target: 0 copies the input dimension (unless allowzero), one -1 is inferred.
func resolveReshape(_ input: [Int], _ target: [Int], allowZero: Bool) throws -> [Int] {
    var out = target
    var inferred: Int?
    for (i, d) in target.enumerated() {
        if d == -1 {
            guard inferred == nil else { throw OpFailure("shape \(target) has more than one -1") }
            inferred = i
        } else if d == 0 && !allowZero {
            guard i < input.count else { throw OpFailure("shape \(target) copies dimension \(i) (0), but the input \(input) has rank \(input.count)") }
            out[i] = input[i]
        } else if d < 0 {
            throw OpFailure("shape \(target) has a negative dimension \(d)")
        }
    }
    if allowZero, inferred != nil, target.contains(0) { throw OpFailure("shape \(target) has both 0 and -1 with allowzero = 1") }
    let count = try product(input)
    if let i = inferred {
        out[i] = 1
        let known = try product(out)
        guard known > 0, count % known == 0 else { throw OpFailure("cannot reshape \(input) (\(count) elements) to \(target)") }
        out[i] = count / known
    }
    guard try product(out) == count else { throw OpFailure("cannot reshape \(input) (\(count) elements) to \(target) (\(try product(out)) elements)") }
    return out
}

/// `x` with a new shape of the same element count.
func reshaped(_ x: ONNXValue, to shape: [Int]) throws -> ONNXValue {
    guard checkedElementCount(shape) == x.count else { throw OpFailure("cannot reshape \(x.shape) to \(shape)") }
    return ONNXValue(unchecked: shape, x.storage)
}

private func prepareFlatten(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(["axis"])
    try spec.requireInputs(1, 1)
    try spec.requireOutputs(1, 1)
    let axis = try spec.int("axis", default: 1)
    return { inputs in
        let x = try arg(inputs, 0)
        let r = x.shape.count
        guard axis >= -r, axis <= r else { throw OpFailure("axis \(axis) is outside [-\(r), \(r)] for rank \(r)") }
        let a = axis < 0 ? axis + r : axis
        return [try reshaped(x, to: [try product(x.shape[..<a]), try product(x.shape[a...])])]
    }
}

/// The axes of Squeeze/Unsqueeze: an attribute before opset 13, an input from 13.
private func axesSource(_ spec: NodeSpec, required: Bool) throws -> ([ONNXValue?]) throws -> [Int]? {
    if spec.opset < 13 {
        try spec.allowAttributes(["axes"])
        try spec.requireInputs(1, 1)
        let axes = try spec.ints("axes")
        if required, axes == nil { throw OpFailure("attribute 'axes' is required before opset 13") }
        return { _ in axes }
    }
    try spec.allowAttributes([])
    try spec.requireInputs(required ? 2 : 1, 2)
    return { inputs in try optionalArg(inputs, 1).map { try requireIntegers($0, "axes") } }
}

private func prepareSqueeze(_ spec: NodeSpec) throws -> Kernel {
    let axesOf = try axesSource(spec, required: false)
    try spec.requireOutputs(1, 1)
    return { inputs in
        let x = try arg(inputs, 0)
        var shape: [Int]
        if let axes = try axesOf(inputs) {
            let n = try normalizeAxes(axes, rank: x.shape.count)
            for a in n where x.shape[a] != 1 { throw OpFailure("cannot squeeze axis \(a) of \(x.shape): its size is not 1") }
            shape = x.shape.enumerated().filter { !n.contains($0.offset) }.map(\.element)
        } else {
            shape = x.shape.filter { $0 != 1 }
        }
        return [try reshaped(x, to: shape)]
    }
}

private func prepareUnsqueeze(_ spec: NodeSpec) throws -> Kernel {
    let axesOf = try axesSource(spec, required: true)
    try spec.requireOutputs(1, 1)
    return { inputs in
        let x = try arg(inputs, 0)
        let axes = try axesOf(inputs) ?? []
        let rank = x.shape.count + axes.count
        let n = Set(try normalizeAxes(axes, rank: rank))
        var shape: [Int] = []
        var it = x.shape.makeIterator()
        for i in 0..<rank { shape.append(n.contains(i) ? 1 : it.next()!) }
        return [try reshaped(x, to: shape)]
    }
}

private let prepareIdentity = plainOp(1) { inputs in try arg(inputs, 0) }

private func prepareConstant(_ spec: NodeSpec) throws -> Kernel {
    try spec.requireInputs(0, 0)
    try spec.requireOutputs(1, 1)
    let known: Set<String> = ["value", "value_float", "value_floats", "value_int", "value_ints"]
    try spec.allowAttributes(known)
    guard spec.node.attributes.count == 1, let (name, attr) = spec.node.attributes.first else {
        throw OpFailure("exactly one of \(known.sorted().joined(separator: ", ")) must be given")
    }
    let value: ONNXValue
    switch (name, attr) {
    case let ("value", .tensor(t)):
        do { value = try ONNXValue(t) } catch let e as DicoError { throw OpFailure("attribute 'value': \(e.message)") }
    case let ("value_float", .float(f)): value = ONNXValue(unchecked: [], .f32([f]))
    case let ("value_floats", .floats(f)): value = ONNXValue(unchecked: [f.count], .f32(f))
    case let ("value_int", .int(i)): value = ONNXValue(unchecked: [], .i64([i]))
    case let ("value_ints", .ints(i)): value = ONNXValue(unchecked: [i.count], .i64(i))
    default: throw OpFailure("attribute '\(name)' has the wrong kind")
    }
    return { _ in [value] }
}

private func prepareConstantOfShape(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(["value"])
    try spec.requireInputs(1, 1)
    try spec.requireOutputs(1, 1)
    var fill = ONNXValue(unchecked: [1], .f32([0]))
    if let a = spec.node.attributes["value"] {
        guard let t = a.tensor else { throw OpFailure("attribute 'value' must be a tensor") }
        do { fill = try ONNXValue(t) } catch let e as DicoError { throw OpFailure("attribute 'value': \(e.message)") }
        guard fill.count == 1 else { throw OpFailure("attribute 'value' must hold one element, it holds \(fill.count)") }
    }
    return { inputs in
        let shape = try requireIntegers(try arg(inputs, 0), "shape")
        guard shape.allSatisfy({ $0 >= 0 }) else { throw OpFailure("shape \(shape) has a negative dimension") }
        let n = try product(shape)
        switch fill.storage {
        case let .f32(v): return [ONNXValue(unchecked: shape, .f32(.init(repeating: v[0], count: n)))]
        case let .f64(v): return [ONNXValue(unchecked: shape, .f64(.init(repeating: v[0], count: n)))]
        case let .i64(v): return [ONNXValue(unchecked: shape, .i64(.init(repeating: v[0], count: n)))]
        case let .i32(v): return [ONNXValue(unchecked: shape, .i32(.init(repeating: v[0], count: n)))]
        case let .bool(v): return [ONNXValue(unchecked: shape, .bool(.init(repeating: v[0], count: n)))]
        }
    }
}

/// The largest Range output accepted (a hostile limit must not allocate without bound).
let maxRangeCount = 1 << 31

private func prepareRange(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes([])
    try spec.requireInputs(3, 3)
    try spec.requireOutputs(1, 1)
    return { inputs in
        let s = try arg(inputs, 0), l = try arg(inputs, 1), d = try arg(inputs, 2)
        for (v, what) in [(s, "start"), (l, "limit"), (d, "delta")] where v.count != 1 || v.shape.count > 1 {
            throw OpFailure("\(what) must be a scalar, it has shape \(v.shape)")
        }
        // Count as the spec defines it, in Double; values by repeated addition in the
        // input type, as the spec's function body (and onnxruntime) computes them.
        func count(_ start: Double, _ limit: Double, _ delta: Double) throws -> Int {
            guard delta != 0 else { throw OpFailure("delta is 0") }
            let c = ((limit - start) / delta).rounded(.up)
            guard c.isFinite || c < 0 else { throw OpFailure("range [\(start), \(limit)) by \(delta) is not finite") }
            guard c <= Double(maxRangeCount) else { throw OpFailure("range [\(start), \(limit)) by \(delta) has more than \(maxRangeCount) elements") }
            return c > 0 ? Int(c) : 0
        }
        func fill<T: AdditiveArithmetic>(_ start: T, _ delta: T, _ n: Int, _ add: (T, T) -> T) -> [T] {
            var out: [T] = []
            out.reserveCapacity(n)
            var v = start
            for _ in 0..<n { out.append(v); v = add(v, delta) }
            return out
        }
        switch (s.storage, l.storage, d.storage) {
        case let (.f32(a), .f32(b), .f32(c)):
            let n = try count(Double(a[0]), Double(b[0]), Double(c[0]))
            return [ONNXValue(unchecked: [n], .f32(fill(a[0], c[0], n, +)))]
        case let (.f64(a), .f64(b), .f64(c)):
            let n = try count(a[0], b[0], c[0])
            return [ONNXValue(unchecked: [n], .f64(fill(a[0], c[0], n, +)))]
        case let (.i64(a), .i64(b), .i64(c)):
            let n = try count(Double(a[0]), Double(b[0]), Double(c[0]))
            return [ONNXValue(unchecked: [n], .i64(fill(a[0], c[0], n, &+)))]
        case let (.i32(a), .i32(b), .i32(c)):
            let n = try count(Double(a[0]), Double(b[0]), Double(c[0]))
            return [ONNXValue(unchecked: [n], .i32(fill(a[0], c[0], n, &+)))]
        default:
            throw OpFailure("start, limit and delta must share a numeric type (they are \(s.dtype.rawValue), \(l.dtype.rawValue), \(d.dtype.rawValue))")
        }
    }
}
