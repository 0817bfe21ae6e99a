/// One tensor a DiCo state dict must hold, with its PyTorch-layout shape.
public struct ExpectedTensor: Hashable, Sendable {
    public let name: String
    public let shape: [Int]
    /// How `synth` scales its random values: the fan-in for weights, nil for biases and tables.
    public let role: Role

    /// What a tensor is, which decides how synthetic weights are drawn.
    public enum Role: Hashable, Sendable {
        case weight(fanIn: Int)
        /// An adaLN modulation weight: its outputs scale, shift and gate, so it is drawn smaller.
        case modulationWeight(fanIn: Int)
        case bias
        case embeddingTable
    }
}

extension DiCoConfig {
    /// Every tensor of the state dict, in the module order of the official code
    /// (DICO_MODEL.md, "State-dict tensors").
    public var expectedTensors: [ExpectedTensor] {
        var out: [ExpectedTensor] = []
        func w(_ name: String, _ shape: [Int], modulation: Bool = false) {
            let fanIn = shape.dropFirst().reduce(1, *)
            out.append(ExpectedTensor(name: name, shape: shape, role: modulation ? .modulationWeight(fanIn: fanIn) : .weight(fanIn: fanIn)))
        }
        func b(_ name: String, _ n: Int) { out.append(ExpectedTensor(name: name, shape: [n], role: .bias)) }
        let c = hidden
        w("x_embedder.proj.weight", [c, inChannels, 3, 3]); b("x_embedder.proj.bias", c)
        for k in 1...3 {
            let d = conditioningWidth(k)
            w("t_embedder_\(k).mlp.0.weight", [d, frequencySize]); b("t_embedder_\(k).mlp.0.bias", d)
            w("t_embedder_\(k).mlp.2.weight", [d, d]); b("t_embedder_\(k).mlp.2.bias", d)
        }
        for k in 1...3 {
            out.append(ExpectedTensor(name: "y_embedder.embedding_table_\(k - 1).weight", shape: [tableRows, conditioningWidth(k)], role: .embeddingTable))
        }
        func blocks(_ level: DiCoLevel) {
            let d = width(level), f = mlpRatio * d
            for i in 0..<depths[level.rawValue] {
                let p = "\(level.moduleName).\(i)."
                w(p + "conv1.weight", [d, d, 1, 1]); b(p + "conv1.bias", d)
                w(p + "conv2.weight", [d, 1, 3, 3]); b(p + "conv2.bias", d)
                w(p + "conv3.weight", [d, d, 1, 1]); b(p + "conv3.bias", d)
                w(p + "ca.1.weight", [d, d, 1, 1]); b(p + "ca.1.bias", d)
                w(p + "conv4.weight", [f, d, 1, 1]); b(p + "conv4.bias", f)
                w(p + "conv5.weight", [d, f, 1, 1]); b(p + "conv5.bias", d)
                w(p + "adaLN_modulation.1.weight", [6 * d, d], modulation: true); b(p + "adaLN_modulation.1.bias", 6 * d)
            }
        }
        blocks(.enc1)
        w("down1_2.body.0.weight", [c / 2, c, 3, 3])
        blocks(.enc2)
        w("down2_3.body.0.weight", [c, 2 * c, 3, 3])
        blocks(.latent)
        w("up3_2.body.0.weight", [8 * c, 4 * c, 3, 3])
        w("reduce_chan_level2.weight", [2 * c, 4 * c, 1, 1]); b("reduce_chan_level2.bias", 2 * c)
        blocks(.dec2)
        w("up2_1.body.0.weight", [4 * c, 2 * c, 3, 3])
        w("reduce_chan_level1.weight", [2 * c, 2 * c, 1, 1]); b("reduce_chan_level1.bias", 2 * c)
        blocks(.dec1)
        w("final_layer.adaLN_modulation.1.weight", [4 * c, 2 * c], modulation: true); b("final_layer.adaLN_modulation.1.bias", 4 * c)
        w("final_layer.out_proj.weight", [outChannels, 2 * c, 3, 3]); b("final_layer.out_proj.bias", outChannels)
        return out
    }
}
