import CONNXProto
import DicoCore

// TensorProto -> TensorData. The ONNX IR spec (docs/IR.md, "Tensor definition") allows the
// elements in exactly one place: `raw_data` (fixed-width little-endian, row-major), one typed
// field chosen by the data type, or an external file (`data_location = EXTERNAL`). Everything
// else (two places at once, a typed field of the wrong type, a byte count that does not match
// the shape) is refused here with a message naming the tensor.

/// The `TensorProto.DataType` codes of the ONNX spec, with the DType each maps to.
enum ONNXDataType {
    /// The code's spec name (for messages), or nil when the code is not in the spec.
    static func name(_ code: Int32) -> String? {
        let names = [
            "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING", "BOOL",
            "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16", "FLOAT8E4M3FN",
            "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1", "FLOAT8E8M0",
            "UINT2", "INT2", "FLOAT6E2M3", "FLOAT6E3M2",
        ]
        return code >= 0 && Int(code) < names.count ? names[Int(code)] : nil
    }

    /// "FLOAT (1)" or "code 99" for messages.
    static func describe(_ code: Int32) -> String {
        name(code).map { "\($0) (\(code))" } ?? "code \(code)"
    }

    /// The storage dtype for an ONNX data type code; nil for a type this toolchain does not hold.
    static func dtype(_ code: Int32) -> DType? {
        switch code {
        case 1: return .f32
        case 2: return .u8
        case 3: return .i8
        case 5: return .i16
        case 6: return .i32
        case 7: return .i64
        case 9: return .bool
        case 10: return .f16
        case 11: return .f64
        case 16: return .bf16
        default: return nil
        }
    }

    /// The spec names of the supported codes, for the "not supported" message.
    static let supportedNames = "FLOAT, FLOAT16, BFLOAT16, DOUBLE, INT64, INT32, INT16, INT8, UINT8, BOOL"

    /// The ONNX spelling of a DType (for messages).
    static func name(of dtype: DType) -> String {
        switch dtype {
        case .f32: return "FLOAT"
        case .f16: return "FLOAT16"
        case .bf16: return "BFLOAT16"
        case .f64: return "DOUBLE"
        case .i64: return "INT64"
        case .i32: return "INT32"
        case .i16: return "INT16"
        case .i8: return "INT8"
        case .u8: return "UINT8"
        case .bool: return "BOOL"
        }
    }
}

/// Decodes TensorProtos of one model; external data files are mapped once each and shared.
struct ONNXTensorDecoder {
    /// The model path, for messages.
    let path: String
    let external: ExternalDataFiles

    func invalid(_ what: String, _ message: String) -> DicoError {
        DicoError.invalid(path, "\(what): \(message)")
    }

    /// Converts `proto`, described in messages as `what` (e.g. "initializer 'conv.weight'").
    /// - Throws: `DicoError` `.invalidInput` for every malformed tensor; `.io` when an external
    ///   data file is missing or cannot be mapped.
    func decode(_ proto: UnsafePointer<Onnx__TensorProto>, what: String) throws -> TensorData {
        let t = proto.pointee
        guard t.segment == nil else {
            throw invalid(what, "is segmented (TensorProto.segment), which is not supported")
        }
        guard t.has_data_type != 0, t.data_type != 0 else {
            throw invalid(what, "has no data type (data_type is UNDEFINED)")
        }
        guard let dtype = ONNXDataType.dtype(t.data_type) else {
            throw invalid(what, "data type \(ONNXDataType.describe(t.data_type)) is not supported (supported: \(ONNXDataType.supportedNames))")
        }
        let shape = try dims(t, what: what)
        let shapeText = "[" + shape.map(String.init).joined(separator: ", ") + "]"
        let typeText = ONNXDataType.name(of: dtype)
        // Overflow-checked: the element count and byte size of a hostile shape must not wrap.
        var count = 1
        for d in shape {
            let (m, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw invalid(what, "element count of shape \(shapeText) overflows 64 bits") }
            count = m
        }
        let (byteCount, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !o else { throw invalid(what, "byte size of shape \(shapeText) x \(typeText) overflows 64 bits") }

        // Where the data is: exactly one place.
        var places: [String] = []
        if t.has_raw_data != 0 { places.append("raw_data") }
        if t.n_float_data > 0 { places.append("float_data") }
        if t.n_int32_data > 0 { places.append("int32_data") }
        if t.n_int64_data > 0 { places.append("int64_data") }
        if t.n_double_data > 0 { places.append("double_data") }
        if t.n_uint64_data > 0 { places.append("uint64_data") }
        if t.n_string_data > 0 { places.append("string_data") }
        let isExternal = t.has_data_location != 0 && t.data_location.rawValue == 1
        if t.has_data_location != 0 && t.data_location.rawValue > 1 {
            throw invalid(what, "data_location \(t.data_location.rawValue) is neither DEFAULT (0) nor EXTERNAL (1)")
        }
        if isExternal {
            guard places.isEmpty else {
                throw invalid(what, "has data_location EXTERNAL and also \(places.joined(separator: ", "))")
            }
            let range = try external.resolve(t, what: what, expectedBytes: byteCount, shapeText: shapeText, typeText: typeText)
            return TensorData(dtype: dtype, shape: shape, storage: .mapped(range.file, offset: range.offset), byteCount: byteCount)
        }
        if t.n_external_data > 0 {
            throw invalid(what, "has external_data entries but data_location is not EXTERNAL")
        }
        guard places.count <= 1 else {
            throw invalid(what, "has its data in more than one field (\(places.joined(separator: ", ")))")
        }
        guard let place = places.first else {
            guard count == 0 else {
                throw invalid(what, "has no data (shape \(shapeText) x \(typeText) needs \(byteCount) bytes; no raw_data, typed field or external data)")
            }
            return TensorData(dtype: dtype, shape: shape, storage: .owned(OwnedBytes(count: 0)), byteCount: 0)
        }
        switch place {
        case "raw_data":
            // raw_data is little-endian, as is every platform this builds for.
            let len = t.raw_data.len
            guard len == byteCount else {
                throw invalid(what, "raw_data is \(len) bytes but shape \(shapeText) x \(typeText) needs \(byteCount)")
            }
            guard len == 0 || t.raw_data.data != nil else { throw invalid(what, "raw_data pointer is missing") }
            // protobuf-c already copied the bytes out of the file; this second copy outlives the
            // parser's tree, which is freed right after conversion. Only embedded data (< 2 GB
            // by protobuf's limit) takes this path; large models use external data, mapped.
            let owned = OwnedBytes(copying: UnsafeRawBufferPointer(start: t.raw_data.data, count: len))
            return TensorData(dtype: dtype, shape: shape, storage: .owned(owned), byteCount: byteCount)
        case "float_data":
            guard dtype == .f32 else { throw wrongField(what, place, typeText) }
            return try typed(what, place, t.float_data, t.n_float_data, count, shape, shapeText, typeText, dtype) { $0 }
        case "double_data":
            guard dtype == .f64 else { throw wrongField(what, place, typeText) }
            return try typed(what, place, t.double_data, t.n_double_data, count, shape, shapeText, typeText, dtype) { $0 }
        case "int64_data":
            guard dtype == .i64 else { throw wrongField(what, place, typeText) }
            return try typed(what, place, t.int64_data, t.n_int64_data, count, shape, shapeText, typeText, dtype) { $0 }
        case "int32_data":
            return try int32Field(t, what: what, count: count, shape: shape, shapeText: shapeText, typeText: typeText, dtype: dtype)
        default:
            // uint64_data holds UINT32/UINT64 and string_data STRING, none of them supported.
            throw wrongField(what, place, typeText)
        }
    }

    func wrongField(_ what: String, _ place: String, _ typeText: String) -> DicoError {
        invalid(what, "holds its data in \(place), which \(typeText) tensors do not use")
    }

    func dims(_ t: Onnx__TensorProto, what: String) throws -> [Int] {
        guard t.n_dims > 0 else { return [] }
        guard let p = t.dims else { throw invalid(what, "dims pointer is missing") }
        var shape: [Int] = []
        shape.reserveCapacity(t.n_dims)
        for i in 0..<t.n_dims {
            guard p[i] >= 0 else { throw invalid(what, "dimension \(i) is negative (\(p[i]))") }
            shape.append(Int(p[i]))
        }
        return shape
    }

    /// Copies a typed field whose element type is the storage type.
    func typed<T>(_ what: String, _ place: String, _ p: UnsafeMutablePointer<T>?, _ n: Int, _ count: Int,
                  _ shape: [Int], _ shapeText: String, _ typeText: String, _ dtype: DType,
                  _ convert: (T) -> T) throws -> TensorData {
        guard n == count else {
            throw invalid(what, "\(place) has \(n) elements but shape \(shapeText) x \(typeText) needs \(count)")
        }
        guard let p else { throw invalid(what, "\(place) pointer is missing") }
        let owned = OwnedBytes(count: count * MemoryLayout<T>.size)
        let dst = owned.pointer.bindMemory(to: T.self, capacity: count)
        for i in 0..<count { dst[i] = convert(p[i]) }
        return TensorData(dtype: dtype, shape: shape, storage: .owned(owned), byteCount: count * dtype.byteSize)
    }

    /// int32_data, which the spec uses for INT32 and, one element per int32, for INT16, INT8,
    /// UINT8, BOOL and the bit patterns of FLOAT16 and BFLOAT16. A value outside the type's
    /// range is refused rather than truncated.
    func int32Field(_ t: Onnx__TensorProto, what: String, count: Int, shape: [Int], shapeText: String,
                    typeText: String, dtype: DType) throws -> TensorData {
        let n = t.n_int32_data
        guard n == count else {
            throw invalid(what, "int32_data has \(n) elements but shape \(shapeText) x \(typeText) needs \(count)")
        }
        guard let p = t.int32_data else { throw invalid(what, "int32_data pointer is missing") }
        let range: ClosedRange<Int32>
        switch dtype {
        case .i32: range = Int32.min...Int32.max
        case .i16: range = -32768...32767
        case .i8: range = -128...127
        case .u8: range = 0...255
        case .bool: range = 0...1
        case .f16, .bf16: range = 0...65535
        case .f32, .f64, .i64: throw wrongField(what, "int32_data", typeText)
        }
        let owned = OwnedBytes(count: count * dtype.byteSize)
        for i in 0..<count {
            let v = p[i]
            guard range.contains(v) else {
                throw invalid(what, "int32_data element \(i) is \(v), outside the range of \(typeText) (\(range.lowerBound)...\(range.upperBound))")
            }
            switch dtype.byteSize {
            case 4: owned.pointer.storeBytes(of: v, toByteOffset: i * 4, as: Int32.self)
            case 2: owned.pointer.storeBytes(of: UInt16(truncatingIfNeeded: v), toByteOffset: i * 2, as: UInt16.self)
            default: owned.pointer.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: i, as: UInt8.self)
            }
        }
        return TensorData(dtype: dtype, shape: shape, storage: .owned(owned), byteCount: count * dtype.byteSize)
    }
}
