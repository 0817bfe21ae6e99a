import DicoCore
import DicoIR

/// Runs an ordered pipeline of passes.
public struct PassManager: Sendable {
    /// The default pipeline, in order (each pass's file lists its rules and why they are exact):
    /// 1. `remove-identities`: drop x*1, x+0, full slices, one-input concats, shuffle/unshuffle
    ///    pairs; compose slices. First, so the folds below see through them.
    /// 2. `fold-constants`: evaluate small all-constant subgraphs (an importer's BatchNorm
    ///    arithmetic on gamma, beta, mean and var) so the folds below see plain constants.
    /// 3. `eliminate-common-subexpressions`: share the timestep features and each SiLU(c);
    ///    before `fold-adaln-linears`, which groups linears by the value they read.
    /// 4. `fold-batch-norm`: per-channel scale and shift after a conv into its weights.
    /// 5. `fold-norm-affine`: per-channel scale and shift before a 1x1 conv or linear into it.
    ///    Both before the fusions, which turn `conv2d` into ops these folds do not look into.
    /// 6. `fold-adaln-linears`: the linears reading one SiLU(c) as one GEMM.
    /// 7. `fold-reduce-chan`: the decoder's 1x1 over a concat split, the upsampled half folded
    ///    into the 3x3 conv before the pixel shuffle. Before `fuse-conv-activation`, which
    ///    would hide the 3x3 conv's `conv2d`.
    /// 8. `fuse-layer-norm-modulate`: LayerNorm and adaLN modulation in one pass.
    /// 9. `fuse-channel-attention`: pool, 1x1 conv, sigmoid and multiply as one op. Before
    ///    `fuse-conv-activation`, so the sigmoid is taken with the rest rather than into the
    ///    conv alone (the pass also matches it there, for pipelines in another order).
    /// 10. `fuse-conv-activation`: GELU and sigmoid in the epilogue of the conv before them.
    /// 11. `fuse-conv-gated-add`: the gated residual in the epilogue of the conv it reads.
    ///     After every fold that looks for a `conv2d` (4, 5, 7), which it hides.
    /// 12. `eliminate-dead-code`: drop what no output needs (the folds leave their inputs behind).
    public static let defaultPipeline: [any GraphPass] = [
        RemoveIdentities(), FoldConstants(), EliminateCommonSubexpressions(), FoldBatchNorm(), FoldNormAffine(),
        FoldAdaLNLinears(), FoldReduceChan(), FuseLayerNormModulate(), FuseChannelAttention(), FuseConvActivation(),
        FuseConvGatedAdd(), EliminateDeadCode(),
    ]

    /// Every pass there is, by name: the default pipeline and `split-reduce-chan` (rule 1 of
    /// `fold-reduce-chan` also where nothing folds, for measuring; see BENCHMARKS.md).
    public static let allPasses: [any GraphPass] = defaultPipeline + [FoldReduceChan(splitWithoutFold: true)]

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
