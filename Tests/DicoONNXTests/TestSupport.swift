import CONNXProto
import DicoCore
import DicoTestSupport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The repository's Fixtures/ folder.
let fixtures = fixturesDirectory

/// Builds malformed models from a real one with the generated protobuf-c API: unpack a
/// fixture, change the tree in place, pack it again. Replacement strings and arrays are
/// malloc'ed, because `free_unpacked` frees them with the default allocator.
enum ProtoEdit {
    typealias Model = UnsafeMutablePointer<Onnx__ModelProto>

    /// The bytes of `fixture` (a file of Fixtures/) after `edit`.
    static func edited(_ fixture: String, _ edit: (Model) throws -> Void) throws -> [UInt8] {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/\(fixture)")))
        guard let m = data.withUnsafeBufferPointer({ onnx__model_proto__unpack(nil, $0.count, $0.baseAddress) }) else {
            throw DicoError(.internalError, "fixture \(fixture) does not unpack")
        }
        defer { onnx__model_proto__free_unpacked(m, nil) }
        try edit(m)
        var out = [UInt8](repeating: 0, count: onnx__model_proto__get_packed_size(m))
        let n = out.withUnsafeMutableBufferPointer { onnx__model_proto__pack(m, $0.baseAddress) }
        precondition(n == out.count)
        return out
    }

    static func graph(_ m: Model) -> UnsafeMutablePointer<Onnx__GraphProto> { m.pointee.graph! }
    static func node(_ m: Model, _ i: Int) -> UnsafeMutablePointer<Onnx__NodeProto> { graph(m).pointee.node[i]! }
    static func initializer(_ m: Model, _ i: Int) -> UnsafeMutablePointer<Onnx__TensorProto> {
        graph(m).pointee.initializer[i]!
    }

    /// A malloc'ed copy of `s` (the old string is left to leak: tests only).
    static func string(_ s: String) -> UnsafeMutablePointer<CChar> { strdup(s)! }

    /// The raw_data bytes of `t`.
    static func rawData(_ t: UnsafeMutablePointer<Onnx__TensorProto>) -> [UInt8] {
        Array(UnsafeBufferPointer(start: t.pointee.raw_data.data, count: t.pointee.raw_data.len))
    }

    /// Moves `t`'s data out of raw_data to external data with these entries.
    static func makeExternal(_ t: UnsafeMutablePointer<Onnx__TensorProto>, _ entries: [(String, String)]) {
        free(t.pointee.raw_data.data)
        t.pointee.raw_data = ProtobufCBinaryData(len: 0, data: nil)
        t.pointee.has_raw_data = 0
        t.pointee.has_data_location = 1
        t.pointee.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL
        typealias Entry = UnsafeMutablePointer<Onnx__StringStringEntryProto>
        let array = malloc(entries.count * MemoryLayout<Entry?>.stride)!.bindMemory(to: Entry?.self, capacity: entries.count)
        for (i, (k, v)) in entries.enumerated() {
            let e = malloc(MemoryLayout<Onnx__StringStringEntryProto>.stride)!
                .bindMemory(to: Onnx__StringStringEntryProto.self, capacity: 1)
            onnx__string_string_entry_proto__init(e)
            e.pointee.key = string(k)
            e.pointee.value = string(v)
            array[i] = e
        }
        t.pointee.n_external_data = entries.count
        t.pointee.external_data = array
    }

    /// Moves `t`'s float32 raw_data into float_data.
    static func makeFloatData(_ t: UnsafeMutablePointer<Onnx__TensorProto>) {
        let bytes = rawData(t)
        let n = bytes.count / 4
        let p = malloc(max(bytes.count, 1))!.bindMemory(to: Float.self, capacity: n)
        bytes.withUnsafeBytes { for i in 0..<n { p[i] = $0.loadUnaligned(fromByteOffset: i * 4, as: Float.self) } }
        free(t.pointee.raw_data.data)
        t.pointee.raw_data = ProtobufCBinaryData(len: 0, data: nil)
        t.pointee.has_raw_data = 0
        t.pointee.n_float_data = n
        t.pointee.float_data = p
    }

    /// A malloc'ed copy of `values`.
    static func array<T>(_ values: [T]) -> UnsafeMutablePointer<T> {
        let p = malloc(max(values.count, 1) * MemoryLayout<T>.stride)!.bindMemory(to: T.self, capacity: values.count)
        for (i, v) in values.enumerated() { p[i] = v }
        return p
    }

    /// Drops `t`'s raw_data and gives it data type `dataType` and dims `dims`; the caller then
    /// fills one typed field.
    static func retype(_ t: UnsafeMutablePointer<Onnx__TensorProto>, dataType: Int32, dims: [Int64]) {
        free(t.pointee.raw_data.data)
        t.pointee.raw_data = ProtobufCBinaryData(len: 0, data: nil)
        t.pointee.has_raw_data = 0
        t.pointee.data_type = dataType
        free(t.pointee.dims)
        t.pointee.n_dims = dims.count
        t.pointee.dims = array(dims)
    }

    /// Replaces `t`'s data with int32_data `values`, data type `dataType` and dims `dims`.
    static func setInt32Data(_ t: UnsafeMutablePointer<Onnx__TensorProto>, dataType: Int32, dims: [Int64], _ values: [Int32]) {
        retype(t, dataType: dataType, dims: dims)
        t.pointee.n_int32_data = values.count
        t.pointee.int32_data = array(values)
    }
}
