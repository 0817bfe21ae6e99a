import DicoCore
import DicoIR

/// Runs an ordered pipeline of passes.
public struct PassManager: Sendable {
    /// The default pipeline, in order:
    /// 1. `eliminate-common-subexpressions`: share the timestep features and each SiLU(c).
    /// 2. `fuse-layer-norm-modulate`: LayerNorm and adaLN modulation in one pass.
    /// 3. `fuse-conv-activation`: GELU and sigmoid in the epilogue of the conv before them.
    /// 4. `eliminate-dead-code`: drop what no output needs.
    public static let defaultPipeline: [any GraphPass] = [
        EliminateCommonSubexpressions(), FuseLayerNormModulate(), FuseConvActivation(), EliminateDeadCode(),
    ]

    /// Every pass there is, by name.
    public static let allPasses: [any GraphPass] = defaultPipeline

    /// The pass called `name`, if any.
    public static func pass(named name: String) -> (any GraphPass)? {
        allPasses.first { $0.name == name }
    }

    public let passes: [any GraphPass]
    /// Run the IR verifier after every pass (tests and debug builds always do).
    public let verifyEachPass: Bool

    public init(passes: [any GraphPass] = PassManager.defaultPipeline, verifyEachPass: Bool = false) {
        self.passes = passes
        self.verifyEachPass = verifyEachPass
    }

    /// Parses a comma-separated `--passes` list and `--skip-pass` names into a pipeline.
    /// - Throws: `DicoError(.usage)` naming an unknown pass and listing the known ones.
    public static func pipeline(passes list: String?, skipping: [String]) throws -> [any GraphPass] {
        let known = allPasses.map(\.name).joined(separator: ", ")
        var chosen = defaultPipeline
        if let list {
            chosen = try list.split(separator: ",").map { raw in
                let n = raw.trimmingSpaces
                guard let p = pass(named: n) else { throw DicoError(.usage, "unknown pass '\(n)'; passes are: \(known)") }
                return p
            }
        }
        for s in skipping where pass(named: s) == nil { throw DicoError(.usage, "unknown pass '\(s)'; passes are: \(known)") }
        return chosen.filter { !skipping.contains($0.name) }
    }

    /// Runs the pipeline on `graph`.
    /// - Parameter after: called after each pass with its name, whether it changed the graph,
    ///   and the graph (for `--dump-ir-after` and differential checking).
    /// - Returns: the optimized graph and the names of the passes that changed it.
    /// - Throws: `DicoError(.internalError)` naming the pass when the verifier rejects its
    ///   result; whatever `after` throws.
    public func run(_ graph: Graph, after: ((String, Bool, Graph) throws -> Void)? = nil) throws -> (Graph, [String]) {
        var g = graph
        var applied: [String] = []
        var verify = verifyEachPass
        assert({ verify = true; return true }())   // always verify in debug builds
        for p in passes {
            let changed = try p.run(&g)
            if verify {
                do { try g.verify() } catch let e as DicoError {
                    throw DicoError(.internalError, "pass '\(p.name)' produced an invalid graph: \(e.message)")
                }
            }
            if changed { applied.append(p.name) }
            try after?(p.name, changed, g)
        }
        return (g, applied)
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
