import DicoCore

/// An activation a convolution may apply in its epilogue.
public enum Activation: String, Hashable, Sendable, CaseIterable {
    case gelu, silu, sigmoid
}

/// The closed set of operations a graph may hold. Every consumer (shape inference,
/// printer, executor, cost model) switches over it without `default:`, so adding a case
/// makes the compiler list every place that must learn it.
///
/// Layouts: activations are NCHW float32; conditioning vectors are [N, D].
public enum Op: Hashable, Sendable {
    /// 2-D convolution, PyTorch semantics. Inputs: x [N,Cin,H,W], weight [Cout,Cin/groups,kh,kw],
    /// optional bias [Cout]. Zero padding `padding` on every side.
    case conv2d(stride: Int, padding: Int, groups: Int)
    /// `conv2d` followed by an activation, applied to each output tile while it is in cache
    /// (a fusion). Inputs as `conv2d`.
    case conv2dActivation(stride: Int, padding: Int, groups: Int, activation: Activation)
    /// `conv2d` whose output feeds a gated residual, inp + gate * (conv(x) + b), computed on
    /// each output tile while it is in cache (a fusion of `conv2d` and `gatedAdd`). Inputs:
    /// x, weight, bias [Cout] (required), inp [N,Cout,Ho,Wo], gate [N,Cout].
    case conv2dGatedAdd(stride: Int, padding: Int, groups: Int)
    /// DiCo's channel attention x * sigmoid(W mean_HW(x) + b) in one op (a fusion of
    /// `globalAvgPool`, a 1x1 `conv2d`, `sigmoid` and `mul`). Inputs: x [N,C,H,W],
    /// weight [C,C,1,1], optional bias [C].
    case channelAttention
    /// y = x W^T + b. Inputs: x [N,in], weight [out,in], optional bias [out].
    case linear
    /// Layer normalization over the channel axis at every pixel, no affine
    /// (mean and biased variance over C). Input [N,C,H,W].
    case channelLayerNorm(eps: Float)
    /// Channel LayerNorm then modulation in one pass over the activations (a fusion of
    /// `channelLayerNorm` and `modulate`). Inputs: x [N,C,H,W], shift [N,C], scale [N,C].
    case layerNormModulate(eps: Float)
    /// DiCo's adaLN modulation x * (1 + scale) + shift. Inputs: x [N,C,H,W], shift [N,C],
    /// scale [N,C] (broadcast over H and W).
    case modulate
    /// The gated residual inp + gate * y. Inputs: inp [N,C,H,W], gate [N,C], y [N,C,H,W].
    case gatedAdd
    /// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)).
    case gelu
    /// x * sigmoid(x).
    case silu
    /// 1 / (1 + exp(-x)).
    case sigmoid
    /// Mean over H and W: [N,C,H,W] -> [N,C,1,1].
    case globalAvgPool
    /// Elementwise product with numpy broadcasting between equal-rank operands.
    case mul
    /// Elementwise sum with numpy broadcasting between equal-rank operands.
    case add
    /// The slice [start, start + length) of `axis` (DiCo's adaLN chunks).
    case slice(axis: Int, start: Int, length: Int)
    /// Concatenation along `axis`.
    case concat(axis: Int)
    /// PixelShuffle(r): [N, C*r*r, H, W] -> [N, C, H*r, W*r].
    case pixelShuffle(factor: Int)
    /// PixelUnshuffle(r): [N, C, H, W] -> [N, C*r*r, H/r, W/r].
    case pixelUnshuffle(factor: Int)
    /// Row lookup. Inputs: table [R, D] float, indices [N] int64 -> [N, D].
    case embedding
    /// Sinusoidal timestep features [cos(t f_i), sin(t f_i)], f_i = exp(-ln(maxPeriod) i / half).
    /// Input t [N] float32 -> [N, dim].
    case timestepEmbedding(dim: Int, maxPeriod: Float)

    /// The op's name in the text dump and in `inspect` counts.
    public var name: String {
        switch self {
        case .conv2d: return "conv2d"
        case .conv2dActivation: return "conv2d_activation"
        case .conv2dGatedAdd: return "conv2d_gated_add"
        case .channelAttention: return "channel_attention"
        case .linear: return "linear"
        case .channelLayerNorm: return "channel_layer_norm"
        case .layerNormModulate: return "layer_norm_modulate"
        case .modulate: return "modulate"
        case .gatedAdd: return "gated_add"
        case .gelu: return "gelu"
        case .silu: return "silu"
        case .sigmoid: return "sigmoid"
        case .globalAvgPool: return "global_avg_pool"
        case .mul: return "mul"
        case .add: return "add"
        case .slice: return "slice"
        case .concat: return "concat"
        case .pixelShuffle: return "pixel_shuffle"
        case .pixelUnshuffle: return "pixel_unshuffle"
        case .embedding: return "embedding"
        case .timestepEmbedding: return "timestep_embedding"
        }
    }

    /// Attributes as `key=value` pairs for the text dump.
    public var attributes: [(String, String)] {
        switch self {
        case let .conv2d(stride, padding, groups), let .conv2dGatedAdd(stride, padding, groups):
            return [("stride", "\(stride)"), ("padding", "\(padding)"), ("groups", "\(groups)")]
        case let .conv2dActivation(stride, padding, groups, act):
            return [("stride", "\(stride)"), ("padding", "\(padding)"), ("groups", "\(groups)"), ("activation", act.rawValue)]
        case let .channelLayerNorm(eps), let .layerNormModulate(eps): return [("eps", "\(eps)")]
        case let .slice(axis, start, length): return [("axis", "\(axis)"), ("start", "\(start)"), ("length", "\(length)")]
        case let .concat(axis): return [("axis", "\(axis)")]
        case let .pixelShuffle(f), let .pixelUnshuffle(f): return [("factor", "\(f)")]
        case let .timestepEmbedding(dim, maxPeriod): return [("dim", "\(dim)"), ("max_period", "\(maxPeriod)")]
        case .linear, .modulate, .gatedAdd, .gelu, .silu, .sigmoid, .globalAvgPool, .mul, .add, .embedding, .channelAttention: return []
        }
    }

    /// How many inputs the op takes: (minimum, maximum).
    public var arity: (Int, Int) {
        switch self {
        case .conv2d, .conv2dActivation, .linear, .channelAttention: return (2, 3)
        case .conv2dGatedAdd: return (5, 5)
        case .channelLayerNorm, .gelu, .silu, .sigmoid, .globalAvgPool, .slice, .pixelShuffle, .pixelUnshuffle, .timestepEmbedding: return (1, 1)
        case .modulate, .gatedAdd, .layerNormModulate: return (3, 3)
        case .mul, .add, .embedding: return (2, 2)
        case .concat: return (1, Int.max)
        }
    }
}
