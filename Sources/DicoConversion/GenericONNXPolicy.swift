import DicoCore
import DicoONNX
import DicoQuant

/// How each initializer of a generic (non-DiCo) ONNX graph is stored (Formats/DICO.md,
/// "Generic ONNX graphs"). Without names to go by, the int8 rule goes by what reads a tensor:
/// a float32 initializer becomes int8 per channel only when every reader takes it as the
/// weight operand of a Conv, Gemm or MatMul and all readers agree on the channel axis (the one
/// whose scale factors out of the product: the output channels or columns).
public enum GenericONNXPolicy {
    /// The storage of one initializer.
    public enum Decision: Equatable, Sendable {
        /// Not float32 (f64, f16, bf16, integers, bool): stored byte for byte as in the ONNX file.
        case asStored
        /// Stays float32, and why.
        case float32(Reason)
        case f16
        case bf16
        /// int8 values, one float32 scale per index along `axis`.
        case int8(axis: Int)
    }

    /// Why a float32 initializer stays float32 (the keys of the provenance's `float32_reasons`).
    public enum Reason: String, Sendable, CaseIterable {
        /// The conversion is fp32.
        case precision
        /// A `--keep` pattern matches its name.
        case keep
        /// Some reader is not the weight operand of a Conv, Gemm or MatMul (or it is a graph
        /// output, or nothing reads it, or it is empty).
        case notAWeight = "not_a_weight"
        /// Its Conv/Gemm/MatMul readers want different channel axes.
        case axisConflict = "axis_conflict"
    }

    /// The decision for every initializer of `graph`, by name.
    public static func decide(_ graph: ONNXGraph, policy: QuantPolicy) -> [String: Decision] {
        let axes = weightAxes(graph)
        var out: [String: Decision] = [:]
        for i in graph.initializers {
            let t = i.tensor
            guard t.dtype == .f32, t.quantization == nil else { out[i.name] = .asStored; continue }
            if policy.keep.contains(where: { $0.matches(i.name) }) { out[i.name] = .float32(.keep); continue }
            switch policy.precision {
            case .fp32: out[i.name] = .float32(.precision)
            case .fp16: out[i.name] = .f16
            case .bf16: out[i.name] = .bf16
            case .int8:
                switch axes[i.name] {
                case let .axis(a)? where t.elementCount > 0: out[i.name] = .int8(axis: a)
                case .conflict?: out[i.name] = .float32(.axisConflict)
                default: out[i.name] = .float32(.notAWeight)
                }
            }
        }
        return out
    }

    /// What the readers of an initializer agree on.
    enum Use: Equatable {
        case axis(Int)
        /// Weight readers that want different axes.
        case conflict
        /// A reader that is not a weight operand.
        case other
    }

    /// For each initializer read by some node or listed as a graph output: the axis all its
    /// readers want, or why there is none.
    static func weightAxes(_ graph: ONNXGraph) -> [String: Use] {
        var rank: [String: Int] = [:]
        for i in graph.initializers { rank[i.name] = i.tensor.shape.count }
        var uses: [String: Use] = [:]
        func add(_ name: String, _ u: Use) {
            switch (uses[name], u) {
            case (nil, _): uses[name] = u
            case (.other?, _), (_, .other): uses[name] = .other
            case let (.axis(a)?, .axis(b)) where a == b: break
            default: uses[name] = .conflict
            }
        }
        for node in graph.nodes {
            for (k, name) in node.inputs.enumerated() {
                guard let r = rank[name] else { continue }
                add(name, weightAxis(node, input: k, rank: r).map(Use.axis) ?? .other)
            }
        }
        for o in graph.outputs where rank[o.name] != nil { add(o.name, .other) }
        return uses
    }

    /// The channel axis when input `k` (of rank `rank`) is a weight operand of `node`: Conv's
    /// weight [M, C/group, k...] (axis 0, the output channels); Gemm's B (axis 0 with transB=1,
    /// [N, K], else 1, [K, N]: the output columns); MatMul's rank-2 operand (axis 1 of B, the
    /// output columns; axis 0 of A, the output rows). nil for any other use.
    static func weightAxis(_ node: ONNXNode, input k: Int, rank: Int) -> Int? {
        guard node.domain.isEmpty || node.domain == "ai.onnx" else { return nil }
        switch node.opType {
        case "Conv" where k == 1 && rank >= 3: return 0
        case "Gemm" where k == 1 && rank == 2: return node.attributes["transB"]?.int == 1 ? 0 : 1
        case "MatMul" where rank == 2 && k < 2: return k == 1 ? 1 : 0
        default: return nil
        }
    }
}
