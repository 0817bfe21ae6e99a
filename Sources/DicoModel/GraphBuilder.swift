import DicoCore
import DicoIR

/// Builds the DiCo forward pass (DICO_MODEL.md, "Forward pass") as an IR graph whose
/// constants are the recognized weights, with no copy.
///
/// The graph is faithful to the PyTorch module structure: one SiLU per adaLN, three
/// separate timestep-feature computations, LayerNorm then modulate. Fusions are the
/// passes' job, so the imported graph stays a reference.
public enum DiCoGraphBuilder {
    /// LayerNorm epsilon of every DiCo norm.
    public static let layerNormEps: Float = 1e-6

    /// The graph for `weights`, inputs `x` f32[N,in,H,W], `t` f32[N], `y` i64[N], output
    /// `out` f32[N,out,H,W].
    /// - Throws: `DicoError` only if the weights do not fit the configuration (recognition
    ///   has already checked that, so this indicates a bug).
    public static func build(_ weights: DiCoWeights) throws -> Graph {
        var b = Builder(weights: weights)
        return try b.build()
    }

    struct Builder {
        let weights: DiCoWeights
        var g = Graph()
        var config: DiCoConfig { weights.config }

        init(weights: DiCoWeights) { self.weights = weights }

        mutating func const(_ name: String) throws -> ValueID {
            guard let d = weights.tensors[name] else { throw DicoError(.internalError, "graph builder: tensor '\(name)' is missing") }
            return g.addConstant(name, d)
        }

        mutating func conv(_ x: ValueID, _ prefix: String, padding: Int, groups: Int = 1, bias: Bool = true) throws -> ValueID {
            var ins = [x, try const(prefix + ".weight")]
            if bias { ins.append(try const(prefix + ".bias")) }
            return try g.add(.conv2d(stride: 1, padding: padding, groups: groups), ins, name: prefix)
        }

        mutating func linear(_ x: ValueID, _ prefix: String) throws -> ValueID {
            try g.add(.linear, [x, try const(prefix + ".weight"), try const(prefix + ".bias")], name: prefix)
        }

        /// adaLN: Linear(SiLU(c)) split into `chunks` equal slices.
        mutating func modulation(_ c: ValueID, _ prefix: String, width: Int, chunks: Int) throws -> [ValueID] {
            let s = try g.add(.silu, [c], name: prefix + ".0")
            let m = try linear(s, prefix + ".1")
            return try (0..<chunks).map { try g.add(.slice(axis: 1, start: $0 * width, length: width), [m], name: "\(prefix).chunk\($0)") }
        }

        mutating func block(_ inp: ValueID, _ c: ValueID, _ p: String, width d: Int) throws -> ValueID {
            let m = try modulation(c, p + ".adaLN_modulation", width: d, chunks: 6)
            var x = try g.add(.channelLayerNorm(eps: DiCoGraphBuilder.layerNormEps), [inp], name: p + ".norm1")
            x = try g.add(.modulate, [x, m[0], m[1]], name: p + ".modulate1")
            x = try conv(x, p + ".conv1", padding: 0)
            x = try conv(x, p + ".conv2", padding: 1, groups: d)
            x = try g.add(.gelu, [x], name: p + ".gelu1")
            let pooled = try g.add(.globalAvgPool, [x], name: p + ".ca.0")
            var a = try conv(pooled, p + ".ca.1", padding: 0)
            a = try g.add(.sigmoid, [a], name: p + ".ca.sigmoid")
            x = try g.add(.mul, [x, a], name: p + ".ca.mul")
            x = try conv(x, p + ".conv3", padding: 0)
            let mid = try g.add(.gatedAdd, [inp, m[2], x], name: p + ".residual1")
            var h = try g.add(.channelLayerNorm(eps: DiCoGraphBuilder.layerNormEps), [mid], name: p + ".norm2")
            h = try g.add(.modulate, [h, m[3], m[4]], name: p + ".modulate2")
            h = try conv(h, p + ".conv4", padding: 0)
            h = try g.add(.gelu, [h], name: p + ".gelu2")
            h = try conv(h, p + ".conv5", padding: 0)
            return try g.add(.gatedAdd, [mid, m[5], h], name: p + ".residual2")
        }

        mutating func level(_ x: ValueID, _ level: DiCoLevel, _ conds: [ValueID]) throws -> ValueID {
            var h = x
            for i in 0..<config.depths[level.rawValue] {
                h = try block(h, conds[level.conditioning - 1], "\(level.moduleName).\(i)", width: config.width(level))
            }
            return h
        }

        mutating func build() throws -> Graph {
            let c = config.hidden
            let x = g.addInput("x", TensorType(.f32, [.s(.N), .c(config.inChannels), .s(.H), .s(.W)]))
            let t = g.addInput("t", TensorType(.f32, [.s(.N)]))
            let y = g.addInput("y", TensorType(.i64, [.s(.N)]))

            // Conditioning: c_k = MLP_k(sinusoidal(t)) + table_k[y], k = 1, 2, 3.
            var conds: [ValueID] = []
            for k in 1...3 {
                let p = "t_embedder_\(k)"
                let f = try g.add(.timestepEmbedding(dim: config.frequencySize, maxPeriod: 10_000), [t], name: p + ".timestep_embedding")
                var h = try linear(f, p + ".mlp.0")
                h = try g.add(.silu, [h], name: p + ".mlp.1")
                h = try linear(h, p + ".mlp.2")
                let e = try g.add(.embedding, [try const("y_embedder.embedding_table_\(k - 1).weight"), y], name: "y_embedder.embedding_table_\(k - 1)")
                conds.append(try g.add(.add, [h, e], name: "c\(k)"))
            }

            var h = try conv(x, "x_embedder.proj", padding: 1)
            let e1 = try level(h, .enc1, conds)
            h = try conv(e1, "down1_2.body.0", padding: 1, bias: false)
            h = try g.add(.pixelUnshuffle(factor: 2), [h], name: "down1_2.body.1")
            let e2 = try level(h, .enc2, conds)
            h = try conv(e2, "down2_3.body.0", padding: 1, bias: false)
            h = try g.add(.pixelUnshuffle(factor: 2), [h], name: "down2_3.body.1")
            let l = try level(h, .latent, conds)

            h = try conv(l, "up3_2.body.0", padding: 1, bias: false)
            h = try g.add(.pixelShuffle(factor: 2), [h], name: "up3_2.body.1")
            h = try g.add(.concat(axis: 1), [h, e2], name: "concat_level2")
            h = try conv(h, "reduce_chan_level2", padding: 0)
            let d2 = try level(h, .dec2, conds)

            h = try conv(d2, "up2_1.body.0", padding: 1, bias: false)
            h = try g.add(.pixelShuffle(factor: 2), [h], name: "up2_1.body.1")
            h = try g.add(.concat(axis: 1), [h, e1], name: "concat_level1")
            h = try conv(h, "reduce_chan_level1", padding: 0)
            let d1 = try level(h, .dec1, conds)

            let m = try modulation(conds[1], "final_layer.adaLN_modulation", width: 2 * c, chunks: 2)
            h = try g.add(.channelLayerNorm(eps: DiCoGraphBuilder.layerNormEps), [d1], name: "final_layer.norm_final")
            h = try g.add(.modulate, [h, m[0], m[1]], name: "final_layer.modulate")
            let out = try conv(h, "final_layer.out_proj", padding: 1)
            g.outputs = [out]
            return g
        }
    }
}
