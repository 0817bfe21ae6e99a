import DicoTestSupport
import DicoCore
import XCTest

final class StrictJSONTests: XCTestCase {
    func parse(_ s: String) throws -> JSONValue { try StrictJSON.parse(s) }

    func parseBytes(_ b: [UInt8]) throws -> JSONValue { try b.withUnsafeBytes { try StrictJSON.parse($0) } }

    func error(_ s: String) -> JSONError? { errorBytes(Array(s.utf8)) }

    func errorBytes(_ b: [UInt8]) -> JSONError? {
        do { _ = try parseBytes(b); return nil } catch let e as JSONError { return e } catch { return nil }
    }

    func testLiteralsAndContainers() throws {
        XCTAssertEqual(try parse(" \t\r\n[true, false, null, {}, [], \"\"] \n"),
                       .array([.bool(true), .bool(false), .null, .object([]), .array([]), .string("")]))
        for bad in ["", " ", "tru", "nul", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{1:2}", "[1 2]", "'a'", "[", "{\"a\":"] {
            XCTAssertEqual(error(bad)?.kind, .syntax, bad)
        }
    }

    func testEscapes() throws {
        XCTAssertEqual(try parse(#""\"\\\/\b\f\n\r\t\u0041\u00e9\u20AC\u0000""#), .string("\"\\/\u{08}\u{0C}\n\r\tAé€\u{0}"))
        XCTAssertEqual(error(#""\x""#)?.kind, .syntax)
        XCTAssertEqual(error(#""\u12G4""#)?.kind, .syntax)
        XCTAssertEqual(error(#""\u12""#)?.kind, .syntax)
        XCTAssertEqual(error("\"a\nb\"")?.kind, .syntax, "raw control characters must be escaped")
        XCTAssertEqual(error("\"abc")?.kind, .syntax)
    }

    func testSurrogates() throws {
        XCTAssertEqual(try parse(#""\uD83D\uDE00""#), .string("😀"))
        XCTAssertEqual(try parse(#""\ud834\udd1e x""#), .string("𝄞 x"))
        let lone = [#""\uD83D""#, #""\uD83Dx""#, #""\uDE00""#, #""\uD83D\u0041""#, #""\uD83D\uD83D""#, #""\uDE00\uD83D""#]
        for s in lone {
            let e = error(s)
            XCTAssertEqual(e?.kind, .syntax, s)
            XCTAssertTrue(e?.reason.contains("surrogate") ?? false, "\(s): \(String(describing: e))")
            XCTAssertEqual(e?.offset, 1, s)
        }
    }

    func testInvalidUTF8() throws {
        XCTAssertEqual(try parseBytes(Array("\"é€😀\"".utf8)), .string("é€😀"))
        let cases: [([UInt8], Int)] = [
            ([0x22, 0xFF, 0x22], 1),               // never valid
            ([0x22, 0x61, 0xC0, 0xAF, 0x22], 2),   // overlong '/'
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 1),   // encoded surrogate
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 1), // above U+10FFFF
            ([0x22, 0xE2, 0x82, 0x22], 1),         // truncated sequence
            ([0x22, 0x80, 0x22], 1),               // stray continuation byte
            ([0x5B, 0x31, 0x5D, 0x20, 0xFE], 4),   // outside a string, after the value
        ]
        for (bytes, offset) in cases {
            let e = errorBytes(bytes)
            XCTAssertEqual(e?.kind, .invalidUTF8, "\(bytes)")
            XCTAssertEqual(e?.offset, offset, "\(bytes)")
        }
    }

    func testDepthLimit() throws {
        let ok = String(repeating: "[", count: StrictJSON.maxDepth) + String(repeating: "]", count: StrictJSON.maxDepth)
        XCTAssertNoThrow(try parse(ok))
        let deep = "[" + ok + "]"
        XCTAssertEqual(error(deep)?.kind, .tooDeep)
        let deepObjects = String(repeating: "{\"a\":", count: 65) + "1" + String(repeating: "}", count: 65)
        XCTAssertEqual(error(deepObjects)?.kind, .tooDeep)
        // Far deeper input must fail cleanly, not overflow the stack.
        XCTAssertEqual(error(String(repeating: "[", count: 1_000_000))?.kind, .tooDeep)
    }

    func testDuplicateKeysAndOrderPreserved() throws {
        let v = try parse(#"{"b":1,"a":2,"b":3}"#)
        let members = try XCTUnwrap(v.objectMembers)
        XCTAssertEqual(members.map(\.key), ["b", "a", "b"])
        XCTAssertEqual(members.map(\.value), [.number("1"), .number("2"), .number("3")])
        XCTAssertNotEqual(v, try parse(#"{"a":2,"b":1,"b":3}"#), "order is significant")
    }

    func testNumbers() throws {
        XCTAssertEqual(try parse("[0, -0, 12, -3.25, 1.50e+3, 2E-7, 123456789012345678901234567890]"),
                       .array(["0", "-0", "12", "-3.25", "1.50e+3", "2E-7", "123456789012345678901234567890"].map { .number($0) }))
        for bad in ["01", "-", "+1", ".5", "1.", "1e", "1e+", "-a", "0x10", "1.e3", "NaN", "Infinity"] {
            XCTAssertEqual(error(bad)?.kind, .syntax, bad)
        }
        XCTAssertEqual(JSONValue.number("0").exactNonNegativeInt, 0)
        XCTAssertEqual(JSONValue.number("9223372036854775807").exactNonNegativeInt, Int.max)
        for literal in ["9223372036854775808", "18446744073709551616", "-0", "-1", "1.0", "1e2", "1E0"] {
            XCTAssertNil(JSONValue.number(literal).exactNonNegativeInt, literal)
        }
        XCTAssertNil(JSONValue.string("1").exactNonNegativeInt)
        XCTAssertEqual(JSONValue.integer(-5), .number("-5"))
    }

    func testTrailingData() throws {
        XCTAssertEqual(error("{} x")?.kind, .syntax)
        XCTAssertEqual(error("{}{}")?.offset, 2)
        XCTAssertEqual(error("1 2")?.kind, .syntax)
        let bytes = Array("{\"a\":[1]}   tail".utf8)
        let (value, end) = try bytes.withUnsafeBytes { try StrictJSON.parsePrefix($0) }
        XCTAssertEqual(end, 9)
        XCTAssertEqual(value, .object([(key: "a", value: .array([.number("1")]))]))
    }

    func testSerializer() throws {
        let v: JSONValue = .object([
            (key: "z", value: .string("q\"b\\s/\n\r\t\u{08}\u{0C}\u{01}\u{1F}\u{7F}é😀\u{2028}")),
            (key: "a", value: .array([.null, .bool(true), .bool(false), .number("1.5e3"), .integer(42)])),
            (key: "z", value: .object([])),
        ])
        let text = v.serialized()
        XCTAssertEqual(text, #"{"z":"q\"b\\s/\n\r\t\b\f\u0001\u001f"# + "\u{7F}é😀\u{2028}" + #"","a":[null,true,false,1.5e3,42],"z":{}}"#)
        XCTAssertEqual(try parse(text), v, "serialize then parse is the identity")
    }
}
