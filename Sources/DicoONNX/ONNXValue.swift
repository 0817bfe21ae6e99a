import DicoCore
import DicoRuntime

/// A runtime tensor of the ONNX interpreter: an element type, a concrete shape and
/// contiguous row-major elements in a Swift array.
///
/// Element types are the ones DiCo exports compute with: float32, float64, int64, int32 and
/// bool. float16 and bfloat16 tensors are widened to float32 when they are loaded (every such
/// value is exactly a float32); a `Cast` to those types rounds to their precision and keeps
/// the rounded values as float32 (see `ONNXInterpreter`).
public struct ONNXValue: Sendable, Equatable {
    /// The elements; the case is the element type.
    public enum Storage: Sendable, Equatable {
        case f32([Float])
        case f64([Double])
        case i64([Int64])
        case i32([Int32])
        case bool([Bool])
    }

    public var shape: [Int]
    public var storage: Storage

    /// A tensor from `shape` and elements; returns nil when the element count is not the
    /// product of the shape (or a dimension is negative).
    public init?(shape: [Int], storage: Storage) {
        guard let n = checkedElementCount(shape), n == storage.count else { return nil }
        self.shape = shape
        self.storage = storage
    }

    /// Internal: the caller guarantees that `storage.count` is the product of `shape`.
    init(unchecked shape: [Int], _ storage: Storage) {
        self.shape = shape
        self.storage = storage
    }

    /// A float32 tensor.
    public init?(shape: [Int], floats: [Float]) { self.init(shape: shape, storage: .f32(floats)) }

    /// An int64 tensor.
    public init?(shape: [Int], int64s: [Int64]) { self.init(shape: shape, storage: .i64(int64s)) }

    /// The element type.
    public var dtype: DType { storage.dtype }

    /// The number of elements (1 for a scalar).
    public var count: Int { storage.count }

    /// The float32 elements, or nil for another element type.
    public var floats: [Float]? { if case let .f32(v) = storage { return v }; return nil }

    /// The int64 elements, or nil for another element type.
    public var int64s: [Int64]? { if case let .i64(v) = storage { return v }; return nil }

    /// The integer elements of an int64 or int32 tensor widened to Int64, else nil
    /// (shape-like inputs: Reshape shapes, Slice starts, Gather indices).
    public var integers: [Int64]? {
        switch storage {
        case let .i64(v): return v
        case let .i32(v): return v.map(Int64.init)
        default: return nil
        }
    }
}

extension ONNXValue.Storage {
    /// The element type of this storage.
    public var dtype: DType {
        switch self {
        case .f32: return .f32
        case .f64: return .f64
        case .i64: return .i64
        case .i32: return .i32
        case .bool: return .bool
        }
    }

    /// The number of elements.
    public var count: Int {
        switch self {
        case let .f32(v): return v.count
        case let .f64(v): return v.count
        case let .i64(v): return v.count
        case let .i32(v): return v.count
        case let .bool(v): return v.count
        }
    }
}

/// The product of `shape`, or nil when a dimension is negative or the product overflows.
func checkedElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        guard !o else { return nil }
        n = p
    }
    return n
}

/// An array of `count` elements written by `fill`, without zero-filling it first.
@inline(__always)
func makeArray<T>(_ count: Int, _ fill: (UnsafeMutableBufferPointer<T>) throws -> Void) rethrows -> [T] {
    try [T](unsafeUninitializedCapacity: count) { buf, n in
        try fill(buf)
        n = count
    }
}

// MARK: - Conversions

extension ONNXValue {
    /// The values of a tensor (an initializer or a Constant attribute), converted once:
    /// float32 is copied, float16 and bfloat16 are widened exactly to float32, u8/i8/i16 are
    /// widened to int32. Quantized tensors are dequantized to float32.
    /// - Throws: `DicoError.invalidInput` when the byte count does not match the shape.
    public init(_ t: TensorData) throws {
        guard let n = checkedElementCount(t.shape), n.multipliedReportingOverflow(by: t.dtype.byteSize) == (t.byteCount, false)
        else {
            throw DicoError(.invalidInput, "tensor of shape \(t.shape) and dtype \(t.dtype.rawValue) holds \(t.byteCount) bytes")
        }
        let b = t.bytes
        if t.quantization != nil || t.dtype == .f32 || t.dtype == .f16 || t.dtype == .bf16 {
            self.init(unchecked: t.shape, .f32(t.floats()))
            return
        }
        switch t.dtype {
        case .f64:
            self.init(unchecked: t.shape, .f64((0..<n).map { b.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }))
        case .i64:
            self.init(unchecked: t.shape, .i64((0..<n).map { b.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self) }))
        case .i32:
            self.init(unchecked: t.shape, .i32((0..<n).map { b.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self) }))
        case .i16:
            self.init(unchecked: t.shape, .i32((0..<n).map { Int32(b.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self)) }))
        case .i8:
            self.init(unchecked: t.shape, .i32((0..<n).map { Int32(b.load(fromByteOffset: $0, as: Int8.self)) }))
        case .u8:
            self.init(unchecked: t.shape, .i32((0..<n).map { Int32(b.load(fromByteOffset: $0, as: UInt8.self)) }))
        case .bool:
            self.init(unchecked: t.shape, .bool((0..<n).map { b.load(fromByteOffset: $0, as: UInt8.self) != 0 }))
        case .f32, .f16, .bf16:
            fatalError("unreachable: handled above")
        }
    }

    /// The same values as an owned `TensorData` (for writing to a file).
    public var tensorData: TensorData {
        func owned<T>(_ v: [T], _ dtype: DType) -> TensorData {
            let o = OwnedBytes(count: v.count * dtype.byteSize)
            v.withUnsafeBytes { if $0.count > 0 { o.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            return TensorData(dtype: dtype, shape: shape, storage: .owned(o), byteCount: v.count * dtype.byteSize)
        }
        switch storage {
        case let .f32(v): return owned(v, .f32)
        case let .f64(v): return owned(v, .f64)
        case let .i64(v): return owned(v, .i64)
        case let .i32(v): return owned(v, .i32)
        case let .bool(v): return owned(v.map { $0 ? UInt8(1) : 0 }, .bool)
        }
    }

    /// A value from an IR executor tensor (float32 or int64).
    public init(_ t: HostTensor) {
        switch t.storage {
        case let .f32(v): self.init(unchecked: t.shape, .f32(v))
        case let .i64(v): self.init(unchecked: t.shape, .i64(v))
        }
    }

    /// The value as an IR executor tensor; nil unless it is float32 or int64.
    public var hostTensor: HostTensor? {
        switch storage {
        case let .f32(v): return HostTensor(shape: shape, floats: v)
        case let .i64(v): return HostTensor(shape: shape, int64s: v)
        default: return nil
        }
    }
}
