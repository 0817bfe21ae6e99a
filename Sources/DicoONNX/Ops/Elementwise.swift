#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import DicoCore
import DicoRuntime
import Dispatch

// Elementwise ops: float unary functions, arithmetic and comparisons with numpy
// broadcasting, Where, logical ops and Cast. Float math runs in float32 with the C library
// functions, as onnxruntime's reference kernels and PyTorch do.

let elementwisePreparers: [String: KernelPreparer] = {
    var t: [String: KernelPreparer] = [:]
    let floatUnary: [String: (Float) -> Float] = [
        "Sqrt": { sqrtf($0) },
        "Erf": { erff($0) },
        "Sigmoid": { 1 / (1 + expf(-$0)) },
        "Sin": { sinf($0) },
        "Cos": { cosf($0) },
        "Exp": { expf($0) },
        "Log": { logf($0) },
        "Tanh": { tanhf($0) },
        "Reciprocal": { 1 / $0 },
        "Floor": { floorf($0) },
        "Ceil": { ceilf($0) },
    ]
    for (name, f) in floatUnary {
        t[name] = plainOp(1) { inputs in try mapFloats(try arg(inputs, 0), name, f) }
    }
    t["Relu"] = plainOp(1) { inputs in
        try mapNumbers(try arg(inputs, 0), "Relu", { $0 > 0 ? $0 : 0 }, { $0 > 0 ? $0 : 0 }, { max($0, 0) }, { max($0, 0) })
    }
    // Integer negation wraps (INT64_MIN stays), as in C.
    t["Neg"] = plainOp(1) { inputs in try mapNumbers(try arg(inputs, 0), "Neg", { -$0 }, { -$0 }, { 0 &- $0 }, { 0 &- $0 }) }
    t["Gelu"] = { spec in
        try spec.allowAttributes(["approximate"])
        try spec.requireInputs(1, 1)
        try spec.requireOutputs(1, 1)
        guard spec.opset >= 20 else { throw OpFailure("Gelu is an opset 20 operator") }
        switch try spec.string("approximate", default: "none") {
        case "none":
            // 0.5 x (1 + erf(x / sqrt 2)), the form of PyTorch's exact GELU, by the IR
            // executor's kernel: libm's scalar erff cost more than all of DiCo's 1x1 convs,
            // the executor's vectorized erf approximation is within a few float32 ulps of it.
            return { inputs in
                let x = try arg(inputs, 0)
                return [ONNXValue(unchecked: x.shape, .f32(gelu(try requireFloats(x, "input 0 of Gelu"))))]
            }
        case "tanh":
            let c = Float((2 / Double.pi).squareRoot())
            return { inputs in [try mapFloats(try arg(inputs, 0), "Gelu") { x in 0.5 * x * (1 + tanhf(c * (x + 0.044715 * x * x * x))) }] }
        case let other:
            throw OpFailure("approximate '\(other)' is not 'none' or 'tanh'")
        }
    }
    for op in ArithmeticOp.allCases {
        t[op.rawValue] = plainOp(2) { inputs in try arithmetic(op, try arg(inputs, 0), try arg(inputs, 1)) }
    }
    t["Pow"] = plainOp(2) { inputs in try power(try arg(inputs, 0), try arg(inputs, 1)) }
    for op in ComparisonOp.allCases {
        t[op.rawValue] = plainOp(2) { inputs in try compare(op, try arg(inputs, 0), try arg(inputs, 1)) }
    }
    for op in ["And", "Or", "Xor"] {
        t[op] = plainOp(2) { inputs in
            let a = try arg(inputs, 0), b = try arg(inputs, 1)
            guard case let .bool(x) = a.storage, case let .bool(y) = b.storage else { throw OpFailure("\(op) takes bool inputs, got \(a.dtype.rawValue) and \(b.dtype.rawValue)") }
            let (s, v) = op == "And" ? try broadcastBinary(x, a.shape, y, b.shape) { $0 && $1 }
                : op == "Or" ? try broadcastBinary(x, a.shape, y, b.shape) { $0 || $1 } : try broadcastBinary(x, a.shape, y, b.shape) { $0 != $1 }
            return ONNXValue(unchecked: s, .bool(v))
        }
    }
    t["Not"] = plainOp(1) { inputs in
        let x = try arg(inputs, 0)
        guard case let .bool(v) = x.storage else { throw OpFailure("input 0 is \(x.dtype.rawValue); Not takes bool") }
        return ONNXValue(unchecked: x.shape, .bool(v.map { !$0 }))
    }
    t["Where"] = plainOp(3) { inputs in try whereSelect(try arg(inputs, 0), try arg(inputs, 1), try arg(inputs, 2)) }
    t["Cast"] = { spec in
        try spec.allowAttributes(spec.opset >= 19 ? ["to", "saturate"] : ["to"])
        try spec.requireInputs(1, 1)
        try spec.requireOutputs(1, 1)
        guard spec.node.attributes["to"] != nil else { throw OpFailure("attribute 'to' is required") }
        let code = try spec.int("to", default: 0)
        guard let target = CastTarget(rawValue: code) else { throw OpFailure("cast to ONNX data type \(code) is not supported (float, double, float16, bfloat16, int32, int64, bool are)") }
        // saturate (opset 19) only changes casts to float8 types, which are not supported.
        let saturate = try spec.int("saturate", default: 1)
        guard saturate == 0 || saturate == 1 else { throw OpFailure("attribute 'saturate' must be 0 or 1") }
        return { inputs in [cast(try arg(inputs, 0), to: target)] }
    }
    return t
}()

/// One function per numeric element type applied to every element; bool is refused.
func mapNumbers(_ x: ONNXValue, _ op: String, _ f32: (Float) -> Float, _ f64: (Double) -> Double, _ i64: (Int64) -> Int64,
                _ i32: (Int32) -> Int32) throws -> ONNXValue {
    switch x.storage {
    case let .f32(v): return ONNXValue(unchecked: x.shape, .f32(v.map(f32)))
    case let .f64(v): return ONNXValue(unchecked: x.shape, .f64(v.map(f64)))
    case let .i64(v): return ONNXValue(unchecked: x.shape, .i64(v.map(i64)))
    case let .i32(v): return ONNXValue(unchecked: x.shape, .i32(v.map(i32)))
    case .bool: throw OpFailure("input 0 is bool; \(op) takes a number")
    }
}

/// Exact-form GELU of every element, by the IR executor's kernel (its erf approximation).
func gelu(_ v: [Float]) -> [Float] {
    v.withUnsafeBufferPointer { src in
        makeArray(v.count) { dst in
            if !v.isEmpty { activation(.gelu, x: src.baseAddress!, y: dst.baseAddress!, count: v.count, threads: sgemmThreads) }
        }
    }
}

/// `f` applied to every element of a float32 tensor.
@inline(__always)
func mapFloats(_ x: ONNXValue, _ op: String, _ f: (Float) -> Float) throws -> ONNXValue {
    let v = try requireFloats(x, "input 0 of \(op)")
    let n = v.count
    // Large tensors (DiCo's FFN activations under Erf or Gelu) in chunks over the CPUs; each
    // element is computed alone, so the split does not change any result.
    let chunks = n < mapFloatsSplitCount ? 1 : min(sgemmThreads, n / (mapFloatsSplitCount / 2))
    guard chunks > 1 else { return ONNXValue(unchecked: x.shape, .f32(v.map(f))) }
    let out: [Float] = v.withUnsafeBufferPointer { src in
        makeArray(n) { (dst: UnsafeMutableBufferPointer<Float>) in
            let step = (n + chunks - 1) / chunks
            withoutActuallyEscaping(f) { f in
                DispatchQueue.concurrentPerform(iterations: chunks) { c in
                    for i in (c * step)..<min(n, (c + 1) * step) { (dst.baseAddress! + i).initialize(to: f(src[i])) }
                }
            }
        }
    }
    return ONNXValue(unchecked: x.shape, .f32(out))
}

/// Below this many elements a float function runs on the calling thread.
let mapFloatsSplitCount = 1 << 15

enum ArithmeticOp: String, CaseIterable { case add = "Add", sub = "Sub", mul = "Mul", div = "Div" }

/// Add, Sub, Mul, Div on two tensors of the same numeric type, broadcast. Integer
/// arithmetic wraps (as in C, which onnxruntime's kernels use); integer division truncates
/// toward zero and fails on a zero divisor.
func arithmetic(_ op: ArithmeticOp, _ a: ONNXValue, _ b: ONNXValue) throws -> ONNXValue {
    func sameType() -> OpFailure { OpFailure("inputs are \(a.dtype.rawValue) and \(b.dtype.rawValue); \(op.rawValue) takes one type") }
    switch (a.storage, b.storage) {
    case let (.f32(x), .f32(y)):
        let r = try floatArithmetic(op, x, a.shape, y, b.shape)
        return ONNXValue(unchecked: r.0, .f32(r.1))
    case let (.f64(x), .f64(y)):
        let r = try floatArithmetic(op, x, a.shape, y, b.shape)
        return ONNXValue(unchecked: r.0, .f64(r.1))
    case let (.i64(x), .i64(y)):
        let r = try integerArithmetic(op, x, a.shape, y, b.shape)
        return ONNXValue(unchecked: r.0, .i64(r.1))
    case let (.i32(x), .i32(y)):
        let r = try integerArithmetic(op, x, a.shape, y, b.shape)
        return ONNXValue(unchecked: r.0, .i32(r.1))
    case (.bool, .bool):
        throw OpFailure("\(op.rawValue) takes numbers, not bool")
    default:
        throw sameType()
    }
}

private func floatArithmetic<T: BinaryFloatingPoint>(_ op: ArithmeticOp, _ x: [T], _ xs: [Int], _ y: [T], _ ys: [Int]) throws -> ([Int], [T]) {
    switch op {
    case .add: return try broadcastBinary(x, xs, y, ys) { $0 + $1 }
    case .sub: return try broadcastBinary(x, xs, y, ys) { $0 - $1 }
    case .mul: return try broadcastBinary(x, xs, y, ys) { $0 * $1 }
    case .div: return try broadcastBinary(x, xs, y, ys) { $0 / $1 }
    }
}

private func integerArithmetic<T: FixedWidthInteger>(_ op: ArithmeticOp, _ x: [T], _ xs: [Int], _ y: [T], _ ys: [Int]) throws -> ([Int], [T]) {
    switch op {
    case .add: return try broadcastBinary(x, xs, y, ys) { $0 &+ $1 }
    case .sub: return try broadcastBinary(x, xs, y, ys) { $0 &- $1 }
    case .mul: return try broadcastBinary(x, xs, y, ys) { $0 &* $1 }
    case .div:
        guard !y.contains(0) else { throw OpFailure("integer division by zero") }
        return try broadcastBinary(x, xs, y, ys) { $0.dividedReportingOverflow(by: $1).partialValue }
    }
}

/// Pow: a float base with an exponent of any numeric type (opset 12+), or an integer base
/// with an integer exponent. An exponent of exactly 2 is x * x (what powf returns, faster).
func power(_ a: ONNXValue, _ b: ONNXValue) throws -> ONNXValue {
    func exponents() throws -> [Double] {
        switch b.storage {
        case let .f32(v): return v.map(Double.init)
        case let .f64(v): return v
        case let .i64(v): return v.map(Double.init)
        case let .i32(v): return v.map(Double.init)
        case .bool: throw OpFailure("exponent is bool")
        }
    }
    switch a.storage {
    case let .f32(x):
        let e = try b.floats ?? exponents().map { Float($0) }
        if b.count == 1, e[0] == 2 { return ONNXValue(unchecked: try BroadcastPlan([a.shape, b.shape]).shape, .f32(x.map { $0 * $0 })) }
        let r = try broadcastBinary(x, a.shape, e, b.shape) { powf($0, $1) }
        return ONNXValue(unchecked: r.0, .f32(r.1))
    case let .f64(x):
        let r = try broadcastBinary(x, a.shape, try exponents(), b.shape) { pow($0, $1) }
        return ONNXValue(unchecked: r.0, .f64(r.1))
    case let .i64(x):
        let r = try broadcastBinary(x.map(Double.init), a.shape, try exponents(), b.shape) { saturatingInt64(pow($0, $1)) }
        return ONNXValue(unchecked: r.0, .i64(r.1))
    case let .i32(x):
        let r = try broadcastBinary(x.map(Double.init), a.shape, try exponents(), b.shape) { Int32(truncatingIfNeeded: saturatingInt64(pow($0, $1))) }
        return ONNXValue(unchecked: r.0, .i32(r.1))
    case .bool:
        throw OpFailure("base is bool")
    }
}

/// `x` truncated toward zero and clamped to Int64 (NaN to 0): a float-to-integer conversion
/// that cannot trap on hostile data.
@inline(__always)
func saturatingInt64(_ x: Double) -> Int64 {
    if x.isNaN { return 0 }
    if x >= 9.223372036854775807e18 { return .max }
    if x <= -9.223372036854775808e18 { return .min }
    return Int64(x)
}

enum ComparisonOp: String, CaseIterable {
    case equal = "Equal", less = "Less", greater = "Greater", lessOrEqual = "LessOrEqual", greaterOrEqual = "GreaterOrEqual"
}

/// Comparisons of two tensors of one type, broadcast, to bool.
func compare(_ op: ComparisonOp, _ a: ONNXValue, _ b: ONNXValue) throws -> ONNXValue {
    func run<T: Comparable>(_ x: [T], _ y: [T]) throws -> ([Int], [Bool]) {
        switch op {
        case .equal: return try broadcastBinary(x, a.shape, y, b.shape) { $0 == $1 }
        case .less: return try broadcastBinary(x, a.shape, y, b.shape) { $0 < $1 }
        case .greater: return try broadcastBinary(x, a.shape, y, b.shape) { $0 > $1 }
        case .lessOrEqual: return try broadcastBinary(x, a.shape, y, b.shape) { $0 <= $1 }
        case .greaterOrEqual: return try broadcastBinary(x, a.shape, y, b.shape) { $0 >= $1 }
        }
    }
    let r: ([Int], [Bool])
    switch (a.storage, b.storage) {
    case let (.f32(x), .f32(y)): r = try run(x, y)
    case let (.f64(x), .f64(y)): r = try run(x, y)
    case let (.i64(x), .i64(y)): r = try run(x, y)
    case let (.i32(x), .i32(y)): r = try run(x, y)
    case let (.bool(x), .bool(y)):
        guard op == .equal else { throw OpFailure("\(op.rawValue) does not take bool") }
        r = try broadcastBinary(x, a.shape, y, b.shape) { $0 == $1 }
    default: throw OpFailure("inputs are \(a.dtype.rawValue) and \(b.dtype.rawValue); \(op.rawValue) takes one type")
    }
    return ONNXValue(unchecked: r.0, .bool(r.1))
}

/// Where(cond, x, y) with three-way broadcasting.
func whereSelect(_ c: ONNXValue, _ x: ONNXValue, _ y: ONNXValue) throws -> ONNXValue {
    guard case let .bool(cond) = c.storage else { throw OpFailure("condition is \(c.dtype.rawValue), expected bool") }
    let plan = try BroadcastPlan([c.shape, x.shape, y.shape])
    let cb = broadcastCopy(cond, plan: plan, operand: 0)
    func pick<T>(_ a: [T], _ b: [T]) -> [T] {
        let ab = broadcastCopy(a, plan: plan, operand: 1), bb = broadcastCopy(b, plan: plan, operand: 2)
        return (0..<plan.count).map { cb[$0] ? ab[$0] : bb[$0] }
    }
    switch (x.storage, y.storage) {
    case let (.f32(a), .f32(b)): return ONNXValue(unchecked: plan.shape, .f32(pick(a, b)))
    case let (.f64(a), .f64(b)): return ONNXValue(unchecked: plan.shape, .f64(pick(a, b)))
    case let (.i64(a), .i64(b)): return ONNXValue(unchecked: plan.shape, .i64(pick(a, b)))
    case let (.i32(a), .i32(b)): return ONNXValue(unchecked: plan.shape, .i32(pick(a, b)))
    case let (.bool(a), .bool(b)): return ONNXValue(unchecked: plan.shape, .bool(pick(a, b)))
    default: throw OpFailure("inputs 1 and 2 are \(x.dtype.rawValue) and \(y.dtype.rawValue); Where takes one type")
    }
}

/// The Cast targets supported, by ONNX `TensorProto.DataType` code.
enum CastTarget: Int {
    case float = 1, int32 = 6, int64 = 7, bool = 9, float16 = 10, double = 11, bfloat16 = 16
}

/// Cast with C++ semantics: float to integer truncates toward zero (saturating, NaN to 0,
/// where C++ is undefined), integer narrowing wraps, anything to bool is `!= 0`. float16 and
/// bfloat16 results are the values rounded (to nearest even) to that type, held as float32.
func cast(_ x: ONNXValue, to target: CastTarget) -> ONNXValue {
    let s = x.shape
    // Every source as Double (exact for all but int64 beyond 2^53) or as Int64.
    func doubles() -> [Double] {
        switch x.storage {
        case let .f32(v): return v.map(Double.init)
        case let .f64(v): return v
        case let .i64(v): return v.map(Double.init)
        case let .i32(v): return v.map(Double.init)
        case let .bool(v): return v.map { $0 ? 1 : 0 }
        }
    }
    func integers() -> [Int64] {
        switch x.storage {
        case let .f32(v): return v.map { saturatingInt64(Double($0)) }
        case let .f64(v): return v.map(saturatingInt64)
        case let .i64(v): return v
        case let .i32(v): return v.map(Int64.init)
        case let .bool(v): return v.map { $0 ? 1 : 0 }
        }
    }
    func floats() -> [Float] {
        switch x.storage {
        case let .f32(v): return v
        case let .i64(v): return v.map { Float($0) }   // one rounding, as C++ does
        default: return doubles().map { Float($0) }
        }
    }
    switch target {
    case .float: return ONNXValue(unchecked: s, .f32(floats()))
    case .double: return ONNXValue(unchecked: s, .f64(doubles()))
    case .int64: return ONNXValue(unchecked: s, .i64(integers()))
    case .int32:
        if case let .f32(v) = x.storage { return ONNXValue(unchecked: s, .i32(v.map { Int32(truncatingIfNeeded: saturatingInt64(Double($0))) })) }
        return ONNXValue(unchecked: s, .i32(integers().map { Int32(truncatingIfNeeded: $0) }))
    case .bool:
        switch x.storage {
        case let .bool(v): return ONNXValue(unchecked: s, .bool(v))
        case let .i64(v): return ONNXValue(unchecked: s, .bool(v.map { $0 != 0 }))
        default: return ONNXValue(unchecked: s, .bool(doubles().map { $0 != 0 }))
        }
    case .float16:
        if case let .f64(v) = x.storage { return ONNXValue(unchecked: s, .f32(v.map { Float(Float16($0)) })) }
        return ONNXValue(unchecked: s, .f32(floats().map { Float(Float16($0)) }))
    case .bfloat16:
        return ONNXValue(unchecked: s, .f32(floats().map(roundToBFloat16)))
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as float32; NaN stays NaN.
func roundToBFloat16(_ x: Float) -> Float {
    if x.isNaN { return x }
    let bits = x.bitPattern
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return Float(bitPattern: rounded & 0xFFFF_0000)
}
