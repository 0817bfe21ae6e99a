/// The symbols a graph's shapes may use: batch size and spatial size are left open so one
/// graph serves any N and any H, W divisible by 4.
public enum DimSymbol: String, Sendable, Hashable, CaseIterable, Codable {
    case N, H, W
}

/// One dimension of a value's shape: a constant, or a symbol times a reduced fraction
/// (`H/2`, `2*W`). Fractions come from pixel (un)shuffle; the executor checks at run
/// time that they divide exactly.
public struct Dim: Hashable, Sendable, CustomStringConvertible {
    /// nil for a constant dimension.
    public let symbol: DimSymbol?
    public let num: Int
    public let den: Int

    /// A constant dimension.
    public static func c(_ value: Int) -> Dim { Dim(symbol: nil, num: value, den: 1) }
    /// A symbolic dimension equal to the symbol itself.
    public static func s(_ symbol: DimSymbol) -> Dim { Dim(symbol: symbol, num: 1, den: 1) }

    public init(symbol: DimSymbol?, num: Int, den: Int) {
        precondition(den > 0 && num >= 0, "dimension fraction is non-negative with a positive denominator")
        precondition(symbol != nil || num % den == 0, "a constant dimension must be whole")
        let g = Dim.gcd(num, den)
        self.symbol = symbol
        self.num = symbol == nil ? num / den : num / max(g, 1)
        self.den = symbol == nil ? 1 : den / max(g, 1)
    }

    /// The constant value, or nil for a symbolic dimension.
    public var constant: Int? { symbol == nil ? num : nil }

    /// This dimension times `k / d`; nil when a constant does not divide exactly or the
    /// arithmetic overflows (shapes can come from files).
    public func scaled(by k: Int, over d: Int = 1) -> Dim? {
        let (v, o1) = num.multipliedReportingOverflow(by: k)
        guard !o1, k >= 0, d > 0 else { return nil }
        if symbol == nil {
            guard v % d == 0 else { return nil }
            return .c(v / d)
        }
        let (w, o2) = den.multipliedReportingOverflow(by: d)
        guard !o2 else { return nil }
        return Dim(symbol: symbol, num: v, den: w)
    }

    /// The value under `bindings`; nil if the symbol is unbound or the fraction is not exact.
    public func evaluate(_ bindings: [DimSymbol: Int]) -> Int? {
        guard let symbol else { return num }
        guard let v = bindings[symbol] else { return nil }
        let (p, overflow) = v.multipliedReportingOverflow(by: num)
        guard !overflow, p % den == 0 else { return nil }
        return p / den
    }

    public var description: String {
        guard let symbol else { return String(num) }
        var s = symbol.rawValue
        if num != 1 { s = "\(num)*" + s }
        if den != 1 { s += "/\(den)" }
        return s
    }

    static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
}

/// A value's type: element type and (possibly symbolic) shape.
public struct TensorType: Hashable, Sendable, CustomStringConvertible {
    public var dtype: DType
    public var shape: [Dim]

    public init(_ dtype: DType, _ shape: [Dim]) {
        self.dtype = dtype
        self.shape = shape
    }

    /// A type with a fully constant shape.
    public init(_ dtype: DType, constant shape: [Int]) {
        self.init(dtype, shape.map { .c($0) })
    }

    public var description: String { "\(dtype.rawValue)[\(shape.map(\.description).joined(separator: ","))]" }
}

import DicoCore
