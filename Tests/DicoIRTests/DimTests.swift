import DicoCore
import DicoIR
import XCTest

final class DimTests: XCTestCase {
    func testConstantDimension() {
        let d = Dim.c(6)
        XCTAssertEqual(d.constant, 6)
        XCTAssertNil(d.symbol)
        XCTAssertEqual(d.description, "6")
        XCTAssertEqual(d.evaluate([:]), 6, "a constant needs no bindings")
        XCTAssertEqual(d.scaled(by: 2), .c(12))
        XCTAssertEqual(Dim.c(8).scaled(by: 1, over: 4), .c(2))
        XCTAssertNil(d.scaled(by: 1, over: 4), "6 / 4 is not whole")
        XCTAssertEqual(Dim(symbol: nil, num: 6, den: 3), .c(2), "a constant fraction is stored reduced")
    }

    func testSymbolicDimension() {
        let h = Dim.s(.H)
        XCTAssertNil(h.constant)
        XCTAssertEqual(h.symbol, .H)
        XCTAssertEqual(h.description, "H")
        XCTAssertEqual(h.scaled(by: 1, over: 2)?.description, "H/2")
        XCTAssertEqual(Dim.s(.W).scaled(by: 2)?.description, "2*W")
        XCTAssertEqual(Dim(symbol: .N, num: 3, den: 2).description, "3*N/2")
        // Scaling never fails for a symbol; the fraction is kept reduced, so equal
        // dimensions compare equal however they were reached.
        XCTAssertEqual(Dim.s(.W).scaled(by: 2)!.scaled(by: 1, over: 4)!.description, "W/2")
        XCTAssertEqual(Dim(symbol: .H, num: 2, den: 4), Dim.s(.H).scaled(by: 1, over: 2))
        XCTAssertEqual(h.scaled(by: 1, over: 2)!.scaled(by: 2), h)
        XCTAssertNotEqual(Dim.s(.H), Dim.s(.W))
        XCTAssertNotEqual(Dim.s(.H), Dim.c(1))
    }

    func testEvaluate() {
        let quarter = Dim.s(.H).scaled(by: 1, over: 4)!
        XCTAssertEqual(quarter.evaluate([.H: 16]), 4)
        XCTAssertNil(quarter.evaluate([.H: 6]), "6 / 4 is not whole")
        XCTAssertNil(quarter.evaluate([.W: 16]), "H is unbound")
        XCTAssertEqual(Dim.s(.W).scaled(by: 2)!.evaluate([.W: 3]), 6)
        XCTAssertEqual(Dim(symbol: .N, num: 3, den: 2).evaluate([.N: 4]), 6)
        XCTAssertNil(Dim(symbol: .N, num: 3, den: 2).evaluate([.N: 3]))
        XCTAssertEqual(Dim.s(.N).evaluate([.N: 5, .H: 7]), 5)
    }

    func testTensorTypeDescription() {
        let t = TensorType(.f32, [.s(.N), .c(4), Dim.s(.H).scaled(by: 1, over: 2)!, Dim.s(.W).scaled(by: 2)!])
        XCTAssertEqual(t.description, "f32[N,4,H/2,2*W]")
        XCTAssertEqual(TensorType(.i64, constant: [3]).description, "i64[3]")
        XCTAssertEqual(TensorType(.bf16, constant: [2, 5]).description, "bf16[2,5]")
        XCTAssertEqual(TensorType(.f32, []).description, "f32[]")
        XCTAssertEqual(TensorType(.f32, constant: [2, 3]), TensorType(.f32, [.c(2), .c(3)]))
        XCTAssertNotEqual(TensorType(.f32, constant: [2]), TensorType(.f64, constant: [2]))
    }
}
