/// Where a tensor's bytes live: inside a mapped file (zero-copy) or in memory we own.
public enum TensorStorage: @unchecked Sendable {
    /// A byte range of a mapped file.
    case mapped(MappedFile, offset: Int)
    /// Bytes owned by this process (synthesized or computed tensors).
    case owned(OwnedBytes)
}

/// A heap buffer with a stable address, 64-byte aligned so kernels may use it directly.
public final class OwnedBytes: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let count: Int

    /// Allocates `count` zeroed bytes.
    public init(count: Int) {
        self.count = count
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1))
    }

    /// Copies `bytes` into a new buffer.
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        self.init(count: bytes.count)
        if bytes.count > 0 { pointer.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
    }

    deinit { pointer.deallocate() }
}

/// How stored integers map back to float32 values.
public final class Quantization: @unchecked Sendable {
    /// The quantization schemes; the raw value is the `.dico` spelling (Formats/DICO.md).
    public enum Scheme: String, Sendable, CaseIterable {
        /// int8 values q in [-127, 127]; value = q * scales[c] along `axis`.
        case int8SymmetricPerChannel = "int8_symmetric_per_channel"
    }

    public let scheme: Scheme
    /// The axis the scales run along (0: output channels).
    public let axis: Int
    /// float32 scales, one per index along `axis`.
    public let scales: TensorData

    public init(scheme: Scheme, axis: Int, scales: TensorData) {
        self.scheme = scheme
        self.axis = axis
        self.scales = scales
    }
}

/// A typed, shaped, immutable view of tensor bytes (little-endian, row-major).
public struct TensorData: @unchecked Sendable {
    /// The storage dtype of the bytes.
    public let dtype: DType
    public let shape: [Int]
    public let storage: TensorStorage
    /// Number of bytes the view spans (`elementCount * dtype.byteSize`).
    public let byteCount: Int
    /// Set when the bytes are quantized values of a float32 tensor.
    public let quantization: Quantization?

    public init(dtype: DType, shape: [Int], storage: TensorStorage, byteCount: Int, quantization: Quantization? = nil) {
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
        self.byteCount = byteCount
        self.quantization = quantization
    }

    /// The dtype a graph computes with: float32 for every float or quantized tensor (the
    /// executor widens or dequantizes them), else the storage dtype.
    public var logicalDType: DType { quantization != nil || dtype.isFloat ? .f32 : dtype }

    /// An owned tensor of float32 values.
    public init(shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count, "shape and element count agree")
        let owned = OwnedBytes(count: floats.count * 4)
        floats.withUnsafeBytes { owned.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        self.init(dtype: .f32, shape: shape, storage: .owned(owned), byteCount: floats.count * 4)
    }

    /// An owned tensor of int64 values.
    public init(shape: [Int], int64s: [Int64]) {
        precondition(shape.reduce(1, *) == int64s.count, "shape and element count agree")
        let owned = OwnedBytes(count: int64s.count * 8)
        int64s.withUnsafeBytes { owned.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        self.init(dtype: .i64, shape: shape, storage: .owned(owned), byteCount: int64s.count * 8)
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }

    /// The raw bytes, valid while this value (and so its storage) is alive.
    public var bytes: UnsafeRawBufferPointer {
        switch storage {
        case let .mapped(file, offset): return file.bytes(offset: offset, count: byteCount)
        case let .owned(o): return UnsafeRawBufferPointer(start: o.pointer, count: byteCount)
        }
    }

    /// The values converted to float32 (f64, f32, f16, bf16 and the integer types).
    public func floats() -> [Float] {
        var out = [Float](repeating: 0, count: elementCount)
        out.withUnsafeMutableBufferPointer { convertToFloat32(self, into: $0.baseAddress!) }
        return out
    }

    /// The values converted to Int64; only for integer and bool dtypes.
    public func int64s() -> [Int64]? {
        let b = bytes
        let n = elementCount
        switch dtype {
        case .i64: return (0..<n).map { b.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self) }
        case .i32: return (0..<n).map { Int64(b.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        case .i16: return (0..<n).map { Int64(b.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self)) }
        case .i8: return (0..<n).map { Int64(b.load(fromByteOffset: $0, as: Int8.self)) }
        case .u8, .bool: return (0..<n).map { Int64(b.load(fromByteOffset: $0, as: UInt8.self)) }
        case .f64, .f32, .f16, .bf16: return nil
        }
    }
}

/// Writes `t`'s values as float32 into `out` (which holds `t.elementCount` floats),
/// dequantizing quantized tensors.
public func convertToFloat32(_ t: TensorData, into out: UnsafeMutablePointer<Float>) {
    let b = t.bytes
    let n = t.elementCount
    if let q = t.quantization {
        switch q.scheme {
        case .int8SymmetricPerChannel:
            let scales = q.scales.floats()
            let outer = t.shape[..<q.axis].reduce(1, *), len = t.shape[q.axis], inner = t.shape[(q.axis + 1)...].reduce(1, *)
            let src = b.bindMemory(to: Int8.self)
            for o in 0..<outer {
                for c in 0..<len {
                    let s = scales[c], base = (o * len + c) * inner
                    for i in 0..<inner { out[base + i] = Float(src[base + i]) * s }
                }
            }
        }
        return
    }
    switch t.dtype {
    case .f32:
        if n > 0 { UnsafeMutableRawPointer(out).copyMemory(from: b.baseAddress!, byteCount: n * 4) }
    case .f64:
        for i in 0..<n { out[i] = Float(b.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
    case .f16:
        for i in 0..<n { out[i] = halfToFloat(b.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) }
    case .bf16:
        for i in 0..<n { out[i] = Float(bitPattern: UInt32(b.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16) }
    case .i64:
        for i in 0..<n { out[i] = Float(b.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)) }
    case .i32:
        for i in 0..<n { out[i] = Float(b.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)) }
    case .i16:
        for i in 0..<n { out[i] = Float(b.loadUnaligned(fromByteOffset: i * 2, as: Int16.self)) }
    case .i8:
        for i in 0..<n { out[i] = Float(b.load(fromByteOffset: i, as: Int8.self)) }
    case .u8, .bool:
        for i in 0..<n { out[i] = Float(b.load(fromByteOffset: i, as: UInt8.self)) }
    }
}

/// IEEE 754 binary16 bits to float32 (exact: every half value is a float).
public func halfToFloat(_ h: UInt16) -> Float {
    Float(Float16(bitPattern: h))
}
