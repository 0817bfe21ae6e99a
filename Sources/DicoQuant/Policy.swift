#if canImport(Glibc)
import Glibc
#endif
import DicoCore

/// The storage precision a conversion targets.
public enum Precision: String, Sendable, CaseIterable {
    case fp32, fp16, bf16, int8
}

/// How one tensor is stored in the output.
public enum StoragePlan: Equatable, Sendable {
    /// float32 (kept, or the whole conversion is fp32).
    case f32
    case f16
    case bf16
    /// int8 values with one float32 scale per output channel (axis 0).
    case int8PerChannel
}

/// A `--keep` pattern: a shell glob on tensor names (`*`, `?`, `[...]`), or a regular
/// expression when written `re:PATTERN` (matched anywhere in the name).
public struct NamePattern: @unchecked Sendable, CustomStringConvertible {  // Regex is immutable once built
    public let text: String
    private let regex: Regex<AnyRegexOutput>?

    /// - Throws: `DicoError(.usage)` for a regular expression that does not compile.
    public init(_ text: String) throws {
        self.text = text
        if text.hasPrefix("re:") {
            do { regex = try Regex(String(text.dropFirst(3))) } catch {
                throw DicoError(.usage, "--keep '\(text)': not a valid regular expression: \(error)")
            }
        } else {
            regex = nil
        }
    }

    /// Whether `name` matches.
    public func matches(_ name: String) -> Bool {
        if let regex { return name.contains(regex) }
        return fnmatch(text, name, 0) == 0
    }

    public var description: String { text }
}

/// Which tensors a conversion quantizes, and to what.
///
/// Defaults (README "Precision"): with `int8`, the weights of 1x1 and dense convolutions and of
/// linear layers become int8 per output channel, except the first and last layers
/// (`x_embedder.proj.weight`, `final_layer.out_proj.weight`), which set the input and output
/// precision of the whole network and hold 0.01% of its weights. Biases, depthwise kernels
/// (9 weights per channel), embedding tables (looked up, not multiplied) and all other tensors
/// stay float32. With `fp16` or `bf16` every float tensor is converted. `--keep` patterns keep
/// the tensors they match in float32, whatever the precision.
public struct QuantPolicy: Sendable {
    public let precision: Precision
    public let keep: [NamePattern]

    /// Tensors the int8 default keeps in float32, by name.
    public static let int8DefaultKeep = ["x_embedder.proj.weight", "final_layer.out_proj.weight"]

    public init(precision: Precision, keep: [NamePattern] = []) {
        self.precision = precision
        self.keep = keep
    }

    /// The plan for a float tensor `name` of `shape`.
    public func plan(name: String, shape: [Int]) -> StoragePlan {
        if keep.contains(where: { $0.matches(name) }) { return .f32 }
        switch precision {
        case .fp32: return .f32
        case .fp16: return .f16
        case .bf16: return .bf16
        case .int8:
            let isMatrix = shape.count == 2 || (shape.count == 4 && shape[1] > 1)
            let isWeight = name.hasSuffix(".weight") && !name.hasPrefix("y_embedder.")
            guard isMatrix, isWeight, !QuantPolicy.int8DefaultKeep.contains(name) else { return .f32 }
            return .int8PerChannel
        }
    }

    /// A description of the options, recorded in provenance.
    public var keepDescription: [String] { keep.map(\.text) }
}
