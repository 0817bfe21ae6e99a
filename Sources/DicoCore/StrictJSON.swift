// A strict RFC 8259 JSON parser and a compact serializer.
//
// Foundation's JSONSerialization is not used on purpose: it keeps only the last of duplicate
// object keys and turns integers into Doubles, so a reader built on it can neither detect a
// duplicated tensor name nor read a 64-bit offset exactly. Here objects keep every member in
// document order and numbers keep their exact literal text.

/// A JSON value exactly as written: object members in document order (duplicates kept) and
/// numbers as their literal text.
public indirect enum JSONValue: Sendable, Equatable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// The number literal exactly as it appears in the document (RFC 8259 §6 grammar).
    case number(String)
    /// A string, escapes decoded.
    case string(String)
    /// An array, elements in order.
    case array([JSONValue])
    /// Members in document order; a key may appear more than once so callers can reject that.
    case object([(key: String, value: JSONValue)])

    /// A number value holding the decimal literal of `value`.
    public static func integer(_ value: Int) -> JSONValue { .number(String(value)) }

    /// The literal read as an exact non-negative `Int`; nil for anything else (other kinds,
    /// negative numbers including `-0`, fractions, exponents, values above `Int.max`).
    public var exactNonNegativeInt: Int? {
        guard case let .number(literal) = self else { return nil }
        // A JSON literal made only of ASCII digits is a non-negative integer without fraction
        // or exponent; the grammar already excludes leading zeros.
        var result = 0
        var sawDigit = false
        for byte in literal.utf8 {
            guard byte >= 0x30, byte <= 0x39 else { return nil }
            let (m, o1) = result.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(byte - 0x30))
            if o1 || o2 { return nil }
            result = s
            sawDigit = true
        }
        return sawDigit ? result : nil
    }

    /// The string payload; nil for other kinds.
    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    /// The array elements; nil for other kinds.
    public var arrayValue: [JSONValue]? {
        if case let .array(a) = self { return a }
        return nil
    }

    /// The object members in document order; nil for other kinds.
    public var objectMembers: [(key: String, value: JSONValue)]? {
        if case let .object(o) = self { return o }
        return nil
    }

    /// A short name of the kind ("null", "boolean", "number", "string", "array", "object"),
    /// for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// Structural equality; objects compare member by member in order (so key order and
    /// duplicates matter).
    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }

    /// Compact JSON text: no whitespace, members in stored order, strings escaped per RFC 8259
    /// §7 (`"`, `\` and control characters; everything else is written as raw UTF-8), number
    /// literals written verbatim. Deterministic: equal values give equal text.
    public func serialized() -> String {
        var out = ""
        appendSerialized(to: &out)
        return out
    }

    private func appendSerialized(to out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .number(n): out += n
        case let .string(s): JSONValue.appendEscaped(s, to: &out)
        case let .array(items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.appendSerialized(to: &out)
            }
            out += "]"
        case let .object(members):
            out += "{"
            for (i, member) in members.enumerated() {
                if i > 0 { out += "," }
                JSONValue.appendEscaped(member.key, to: &out)
                out += ":"
                member.value.appendSerialized(to: &out)
            }
            out += "}"
        }
    }

    private static func appendEscaped(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16, uppercase: false)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

/// Why a JSON document was rejected, and where.
public struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The class of problem, so callers can word their own messages.
    public enum Kind: Sendable, Equatable {
        /// The bytes are not well-formed UTF-8 (RFC 8259 §8.1 requires UTF-8).
        case invalidUTF8
        /// The text does not follow the JSON grammar (including trailing garbage).
        case syntax
        /// Arrays/objects are nested deeper than `StrictJSON.maxDepth`.
        case tooDeep
    }

    /// The class of problem.
    public let kind: Kind
    /// Byte offset into the parsed buffer where the problem was found.
    public let offset: Int
    /// What is wrong, e.g. "expected ':' after object key".
    public let reason: String

    /// An error of `kind` found at byte `offset`, described by `reason`.
    public init(_ kind: Kind, offset: Int, reason: String) {
        self.kind = kind
        self.offset = offset
        self.reason = reason
    }

    /// `"<reason> at byte <offset>"`.
    public var description: String { "\(reason) at byte \(offset)" }
}

/// Strict RFC 8259 JSON parsing: UTF-8 only, no duplicate-key collapsing, exact numbers,
/// bounded nesting, nothing but whitespace after the value.
public enum StrictJSON {
    /// Deepest allowed nesting of arrays and objects (a bound on recursion, and far beyond
    /// anything a safetensors header needs).
    public static let maxDepth = 64

    /// Parses a complete JSON document; whitespace (space, tab, LF, CR) may surround the value.
    /// - Throws: `JSONError` for invalid UTF-8, a grammar violation, lone surrogate escapes,
    ///   nesting deeper than `maxDepth`, or anything but whitespace after the value.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONError) -> JSONValue {
        let (value, end) = try parsePrefix(bytes)
        var p = Parser(bytes: bytes, pos: end)
        p.skipWhitespace()
        if p.pos < bytes.count {
            throw JSONError(.syntax, offset: p.pos, reason: "unexpected data after the JSON value")
        }
        return value
    }

    /// Parses a complete JSON document held in a string (convenience for tests and callers
    /// that already have text).
    /// - Throws: `JSONError`, as `parse(_: UnsafeRawBufferPointer)`.
    public static func parse(_ text: String) throws(JSONError) -> JSONValue {
        var copy = text
        let result: Result<JSONValue, JSONError> = copy.withUTF8 { buf in
            do throws(JSONError) {
                return .success(try parse(UnsafeRawBufferPointer(buf)))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Parses optional leading whitespace and one JSON value, and returns it with the offset
    /// just past it; what follows is left to the caller (safetensors allows only space padding
    /// there, which is stricter than RFC whitespace).
    /// - Throws: `JSONError` for invalid UTF-8 anywhere in `bytes`, a grammar violation, lone
    ///   surrogate escapes or nesting deeper than `maxDepth`.
    public static func parsePrefix(_ bytes: UnsafeRawBufferPointer) throws(JSONError) -> (value: JSONValue, end: Int) {
        // Validating the whole buffer up front keeps the grammar code byte-oriented: any byte
        // >= 0x80 it meets is then part of a well-formed sequence.
        if let bad = firstInvalidUTF8(bytes) {
            throw JSONError(.invalidUTF8, offset: bad, reason: "invalid UTF-8")
        }
        var p = Parser(bytes: bytes, pos: 0)
        p.skipWhitespace()
        let value = try p.parseValue(depth: 0)
        return (value, p.pos)
    }

    /// The offset of the first byte that does not belong to a well-formed UTF-8 sequence
    /// (Unicode §3.9 Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF); nil if
    /// all of `bytes` is valid.
    public static func firstInvalidUTF8(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let n = bytes.count
        var i = 0
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 { i += 1; continue }
            let len: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF // allowed range of the second byte
            switch b0 {
            case 0xC2...0xDF: len = 2
            case 0xE0: len = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: len = 3
            case 0xED: len = 3; hi = 0x9F
            case 0xF0: len = 4; lo = 0x90
            case 0xF1...0xF3: len = 4
            case 0xF4: len = 4; hi = 0x8F
            default: return i
            }
            guard i + len <= n else { return i }
            guard bytes[i + 1] >= lo, bytes[i + 1] <= hi else { return i }
            for k in 2..<len where bytes[i + k] & 0xC0 != 0x80 { return i }
            i += len
        }
        return nil
    }
}

/// Recursive-descent parser over already UTF-8-validated bytes.
private struct Parser {
    let bytes: UnsafeRawBufferPointer
    var pos: Int

    mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1 // RFC 8259 §2 whitespace
            default: return
            }
        }
    }

    func fail(_ reason: String, at offset: Int? = nil) -> JSONError {
        JSONError(.syntax, offset: offset ?? pos, reason: reason)
    }

    func describeByte(_ offset: Int) -> String {
        guard offset < bytes.count else { return "end of input" }
        let b = bytes[offset]
        if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        return "byte 0x" + String(b, radix: 16, uppercase: true)
    }

    mutating func parseValue(depth: Int) throws(JSONError) -> JSONValue {
        guard pos < bytes.count else { throw fail("expected a JSON value but found end of input") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw fail("expected a JSON value but found \(describeByte(pos))")
        }
    }

    mutating func expectLiteral(_ word: StaticString) throws(JSONError) {
        let start = pos
        let n = word.utf8CodeUnitCount
        let p = word.utf8Start
        guard pos + n <= bytes.count else { throw fail("invalid literal", at: start) }
        for k in 0..<n where bytes[pos + k] != p[k] { throw fail("invalid literal", at: start) }
        pos += n
    }

    mutating func parseObject(depth: Int) throws(JSONError) -> JSONValue {
        if depth > StrictJSON.maxDepth {
            throw JSONError(.tooDeep, offset: pos, reason: "nesting deeper than \(StrictJSON.maxDepth) levels")
        }
        pos += 1 // '{'
        var members: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                throw fail("expected a string object key but found \(describeByte(pos))")
            }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else {
                throw fail("expected ':' after object key but found \(describeByte(pos))")
            }
            pos += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            members.append((key: key, value: value))
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unterminated object") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            throw fail("expected ',' or '}' in object but found \(describeByte(pos))")
        }
    }

    mutating func parseArray(depth: Int) throws(JSONError) -> JSONValue {
        if depth > StrictJSON.maxDepth {
            throw JSONError(.tooDeep, offset: pos, reason: "nesting deeper than \(StrictJSON.maxDepth) levels")
        }
        pos += 1 // '['
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count && bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth))
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unterminated array") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw fail("expected ',' or ']' in array but found \(describeByte(pos))")
        }
    }

    /// RFC 8259 §6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    mutating func parseNumber() throws(JSONError) -> String {
        let start = pos
        func isDigit(_ i: Int) -> Bool { i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 }
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        guard isDigit(pos) else { throw fail("invalid number: expected a digit", at: pos) }
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
            if isDigit(pos) { throw fail("invalid number: leading zero", at: start) }
        } else {
            while isDigit(pos) { pos += 1 }
        }
        if pos < bytes.count && bytes[pos] == UInt8(ascii: ".") {
            pos += 1
            guard isDigit(pos) else { throw fail("invalid number: expected a digit after '.'") }
            while isDigit(pos) { pos += 1 }
        }
        if pos < bytes.count && (bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E")) {
            pos += 1
            if pos < bytes.count && (bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-")) { pos += 1 }
            guard isDigit(pos) else { throw fail("invalid number: expected a digit in the exponent") }
            while isDigit(pos) { pos += 1 }
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
    }

    /// RFC 8259 §7. The opening quote is at `pos`.
    mutating func parseString() throws(JSONError) -> String {
        let start = pos
        pos += 1
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw fail("unterminated string", at: start) }
            let b = bytes[pos]
            switch b {
            case UInt8(ascii: "\""):
                pos += 1
                return String(decoding: out, as: UTF8.self) // bytes were validated up front
            case UInt8(ascii: "\\"):
                try parseEscape(into: &out)
            case 0x00..<0x20:
                throw fail("unescaped control character \(describeByte(pos)) in string")
            default:
                out.append(b)
                pos += 1
            }
        }
    }

    mutating func parseEscape(into out: inout [UInt8]) throws(JSONError) {
        let escapeStart = pos
        pos += 1 // '\'
        guard pos < bytes.count else { throw fail("unterminated escape", at: escapeStart) }
        let c = bytes[pos]
        pos += 1
        switch c {
        case UInt8(ascii: "\""): out.append(0x22)
        case UInt8(ascii: "\\"): out.append(0x5C)
        case UInt8(ascii: "/"): out.append(0x2F)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            let unit = try parseHex4()
            var scalarValue = UInt32(unit)
            if (0xD800...0xDBFF).contains(unit) {
                // A high surrogate must be followed by an escaped low surrogate (§7: characters
                // outside the BMP are written as a UTF-16 surrogate pair).
                guard pos + 1 < bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                    throw fail("lone high surrogate \\u\(hex4(unit)) in string", at: escapeStart)
                }
                pos += 2
                let low = try parseHex4()
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw fail("high surrogate \\u\(hex4(unit)) not followed by a low surrogate", at: escapeStart)
                }
                scalarValue = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(unit) {
                throw fail("lone low surrogate \\u\(hex4(unit)) in string", at: escapeStart)
            }
            // Not a surrogate, or a combined pair: always a valid scalar.
            out.append(contentsOf: Array(String(Unicode.Scalar(scalarValue)!).utf8))
        default:
            throw fail("invalid escape \\\(describeByte(pos - 1)) in string", at: escapeStart)
        }
    }

    mutating func parseHex4() throws(JSONError) -> UInt16 {
        guard pos + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt16 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x41...0x46: d = c - 0x41 + 10
            case 0x61...0x66: d = c - 0x61 + 10
            default: throw fail("invalid hex digit \(describeByte(pos)) in \\u escape")
            }
            v = v << 4 | UInt16(d)
            pos += 1
        }
        return v
    }

    func hex4(_ v: UInt16) -> String {
        let h = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: 4 - h.count) + h
    }
}
