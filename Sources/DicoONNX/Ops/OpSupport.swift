import DicoCore

// The contract between the interpreter and the op kernels: each op has a *preparer* that
// reads and validates the node's attributes once, at interpreter construction, and returns
// the kernel that runs the node on concrete values.

/// A kernel failure; the interpreter prefixes it with the model path, node name and op.
struct OpFailure: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// The input positions a preparer reads in place (a reference, so the preparer can record them).
final class ClaimedInputs {
    var positions = Set<Int>()
}

/// A float32 kernel operand: an interpreter value's elements, or an aligned float32
/// initializer in its mapped file (read in place).
struct FloatInput {
    let shape: [Int]
    private let value: [Float]?
    private let file: TensorData?

    init(file t: TensorData) { shape = t.shape; value = nil; file = t }

    /// The elements of `v`, or a failure naming `what` and its type.
    init(_ v: ONNXValue, _ what: String) throws {
        shape = v.shape
        value = try requireFloats(v, what)
        file = nil
    }

    /// `claimed` when the preparer claimed the input, else input `k` as a value.
    static func of(_ inputs: [ONNXValue?], _ k: Int, claimed: FloatInput?, _ what: String) throws -> FloatInput {
        if let claimed { return claimed }
        return try FloatInput(try arg(inputs, k), what)
    }

    /// Calls `body` with a pointer to the elements, valid inside it.
    func withFloats<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        if let file { return try body(file.bytes.baseAddress!.assumingMemoryBound(to: Float.self)) }
        return try value!.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }
}

/// Runs one node: its inputs by position (nil for an omitted optional input) to its outputs
/// by position (as many as the node declares).
typealias Kernel = ([ONNXValue?]) throws -> [ONNXValue]

/// Validates a node statically and returns its kernel.
typealias KernelPreparer = (NodeSpec) throws -> Kernel

/// A node as its preparer sees it: the node, the default-domain opset, and the constant
/// inputs known before any run (initializers and Constant outputs).
struct NodeSpec {
    let node: ONNXNode
    let opset: Int
    /// Values of inputs known statically, by input position.
    let constants: [Int: ONNXValue]
    /// Float32 initializers the interpreter keeps in their mapped file (`convertWeightsOnUse`),
    /// by input position: a preparer may `claimInPlace` one and read it there.
    var fileConstants: [Int: TensorData] = [:]
    /// The positions a preparer claimed; the interpreter passes nil for them at run time.
    let claimed = ClaimedInputs()

    /// Input `k` as a float32 operand read in place from its mapped file, if the interpreter
    /// holds it there as aligned float32 (else nil, and the kernel gets it as a value). The
    /// kernel then reads it with no conversion copy: the import proof's one run touches each
    /// weight once, where a copy would cost as much as the convolution reading it.
    func claimInPlace(_ k: Int) -> FloatInput? {
        guard let t = fileConstants[k], t.dtype == .f32, t.quantization == nil,
              let base = t.bytes.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 else { return nil }
        claimed.positions.insert(k)
        return FloatInput(file: t)
    }

    /// Fails unless every attribute is one of `names` (the op's attributes in this opset):
    /// an attribute we do not know could change the result.
    func allowAttributes(_ names: Set<String>) throws {
        for k in node.attributes.keys.sorted() where !names.contains(k) {
            throw OpFailure("attribute '\(k)' is not supported")
        }
    }

    /// Fails unless the node has between `min` and `max` inputs (counting omitted ones).
    func requireInputs(_ min: Int, _ max: Int) throws {
        let n = node.inputs.count
        guard n >= min, n <= max else {
            throw OpFailure(min == max ? "takes \(min) input(s), the node has \(n)" : "takes \(min) to \(max) inputs, the node has \(n)")
        }
        for k in 0..<min where node.inputs[k].isEmpty { throw OpFailure("required input \(k) is omitted") }
    }

    /// Fails unless the node has between `min` and `max` outputs.
    func requireOutputs(_ min: Int, _ max: Int) throws {
        let n = node.outputs.count
        guard n >= min, n <= max else {
            throw OpFailure(min == max ? "has \(min) output(s), the node declares \(n)" : "has \(min) to \(max) outputs, the node declares \(n)")
        }
    }

    /// Whether input `k` is present (not omitted, not past the end).
    func hasInput(_ k: Int) -> Bool { k < node.inputs.count && !node.inputs[k].isEmpty }

    func int(_ name: String, default d: Int) throws -> Int {
        guard let a = node.attributes[name] else { return d }
        guard let v = a.int else { throw OpFailure("attribute '\(name)' must be an int") }
        guard let i = Int(exactly: v) else { throw OpFailure("attribute '\(name)' = \(v) is out of range") }
        return i
    }

    func float(_ name: String, default d: Float) throws -> Float {
        guard let a = node.attributes[name] else { return d }
        guard let v = a.float else { throw OpFailure("attribute '\(name)' must be a float") }
        return v
    }

    func string(_ name: String, default d: String) throws -> String {
        guard let a = node.attributes[name] else { return d }
        guard let v = a.string else { throw OpFailure("attribute '\(name)' must be a string") }
        return v
    }

    func ints(_ name: String) throws -> [Int]? {
        guard let a = node.attributes[name] else { return nil }
        guard let v = a.ints else { throw OpFailure("attribute '\(name)' must be a list of ints") }
        return try v.map { guard let i = Int(exactly: $0) else { throw OpFailure("attribute '\(name)' holds \($0), out of range") }; return i }
    }
}

/// The preparer of an op without attributes, with `arity` inputs and one output.
func plainOp(_ arity: Int, _ run: @escaping ([ONNXValue?]) throws -> ONNXValue) -> KernelPreparer {
    { spec in
        try spec.allowAttributes([])
        try spec.requireInputs(arity, arity)
        try spec.requireOutputs(1, 1)
        return { inputs in [try run(inputs)] }
    }
}

/// Input `k`, which the preparer made sure is present.
@inline(__always)
func arg(_ inputs: [ONNXValue?], _ k: Int) throws -> ONNXValue {
    guard k < inputs.count, let v = inputs[k] else { throw OpFailure("input \(k) is missing") }
    return v
}

/// Input `k` if present.
@inline(__always)
func optionalArg(_ inputs: [ONNXValue?], _ k: Int) -> ONNXValue? { k < inputs.count ? inputs[k] : nil }

/// The float32 elements of `v`, or a failure naming `what` and the actual type.
func requireFloats(_ v: ONNXValue, _ what: String) throws -> [Float] {
    guard let f = v.floats else { throw OpFailure("\(what) is \(v.dtype.rawValue); this op runs on float32") }
    return f
}

/// The integers of a shape-like input (int64 or int32), or a failure naming it.
func requireIntegers(_ v: ONNXValue, _ what: String) throws -> [Int] {
    guard let i = v.integers else { throw OpFailure("\(what) is \(v.dtype.rawValue), expected int64") }
    return try i.map {
        guard let x = Int(exactly: $0) else { throw OpFailure("\(what) holds \($0), out of range") }
        return x
    }
}

/// `axis` in `-rank..<rank` made non-negative, or a failure naming it.
func normalizeAxis(_ axis: Int, rank: Int, _ what: String = "axis") throws -> Int {
    guard axis >= -rank, axis < rank else { throw OpFailure("\(what) \(axis) is outside [-\(rank), \(rank - 1)] for rank \(rank)") }
    return axis < 0 ? axis + rank : axis
}

/// Distinct axes, normalized, or a failure.
func normalizeAxes(_ axes: [Int], rank: Int, _ what: String = "axes") throws -> [Int] {
    let n = try axes.map { try normalizeAxis($0, rank: rank, what) }
    guard Set(n).count == n.count else { throw OpFailure("\(what) \(axes) repeat an axis") }
    return n
}

/// The most elements one value may have (16 GiB of float32): a hostile shape fails here
/// instead of in the allocator.
let maxValueElements = 1 << 32

/// The product of `dims`, checked for overflow and against `maxValueElements`.
func product<C: Collection>(_ dims: C) throws -> Int where C.Element == Int {
    guard let n = checkedElementCount(Array(dims)), n <= maxValueElements else { throw OpFailure("shape \(Array(dims)) is too large") }
    return n
}

/// The preparer of every supported op in the default domain, by op type.
let onnxKernelPreparers: [String: KernelPreparer] = {
    var all: [String: KernelPreparer] = [:]
    for table in [elementwisePreparers, convPreparers, matMulPreparers, shapePreparers, reducePreparers, layoutPreparers] {
        all.merge(table) { _, _ in preconditionFailure("an op is registered twice") }
    }
    return all
}()
