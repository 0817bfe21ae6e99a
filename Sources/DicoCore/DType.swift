/// The element types a tensor can have, across every format the toolchain reads or writes.
///
/// The safetensors spelling of each type is `safetensorsName`; `.dico` uses `rawValue` as
/// its dtype tag (Formats/DICO.md: a tag, once retired, is never reused).
public enum DType: String, Sendable, CaseIterable, Codable {
    case f64, f32, f16, bf16, i64, i32, i16, i8, u8, bool

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// Whether this is a floating-point type (the only kind a DiCo weight may have).
    public var isFloat: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16: return true
        case .i64, .i32, .i16, .i8, .u8, .bool: return false
        }
    }

    /// The dtype string used in a safetensors header.
    public var safetensorsName: String {
        switch self {
        case .f64: return "F64"
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .i64: return "I64"
        case .i32: return "I32"
        case .i16: return "I16"
        case .i8: return "I8"
        case .u8: return "U8"
        case .bool: return "BOOL"
        }
    }

    /// Parses a safetensors dtype string; nil for a dtype this toolchain does not know.
    public init?(safetensorsName: String) {
        guard let t = DType.allCases.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = t
    }
}
