/// The five levels of DiCo's U-shaped hierarchy, in forward order.
public enum DiCoLevel: Int, CaseIterable, Sendable {
    case enc1, enc2, latent, dec2, dec1

    /// The state-dict module name of the level's block list.
    public var moduleName: String {
        switch self {
        case .enc1: return "encoder_level_1"
        case .enc2: return "encoder_level_2"
        case .latent: return "latent"
        case .dec2: return "decoder_level_2"
        case .dec1: return "decoder_level_1"
        }
    }

    /// Channel width as a multiple of the hidden size C (dec1 is 2C, not C).
    public var widthMultiple: Int {
        switch self {
        case .enc1: return 1
        case .enc2, .dec2, .dec1: return 2
        case .latent: return 4
        }
    }

    /// Which conditioning vector (1, 2 or 3, of width C, 2C, 4C) the level's blocks use.
    public var conditioning: Int {
        switch self {
        case .enc1: return 1
        case .enc2, .dec2, .dec1: return 2
        case .latent: return 3
        }
    }
}

/// A DiCo configuration, everything the tensor names and shapes determine.
public struct DiCoConfig: Hashable, Sendable {
    /// Hidden size C (width of enc1).
    public var hidden: Int
    /// Blocks per level, [enc1, enc2, latent, dec2, dec1].
    public var depths: [Int]
    /// MLP ratio r: conv4 widens D to r * D.
    public var mlpRatio: Int
    public var inChannels: Int
    /// 2 x inChannels when the model learns the variance (learn_sigma).
    public var outChannels: Int
    /// Number of real classes (the null class, if present, is index `numClasses`).
    public var numClasses: Int
    /// Whether the embedding tables carry the extra null-class row used for guidance.
    public var hasNullClass: Bool
    /// Width of the sinusoidal timestep features.
    public var frequencySize: Int

    public init(hidden: Int, depths: [Int], mlpRatio: Int, inChannels: Int = 4, outChannels: Int = 8,
                numClasses: Int = 1000, hasNullClass: Bool = true, frequencySize: Int = 256) {
        self.hidden = hidden
        self.depths = depths
        self.mlpRatio = mlpRatio
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.numClasses = numClasses
        self.hasNullClass = hasNullClass
        self.frequencySize = frequencySize
    }

    /// Whether the output carries the learned-variance channels after the noise channels.
    public var learnSigma: Bool { outChannels == 2 * inChannels }

    /// Rows of each class-embedding table.
    public var tableRows: Int { numClasses + (hasNullClass ? 1 : 0) }

    /// Width of level `level`'s blocks.
    public func width(_ level: DiCoLevel) -> Int { hidden * level.widthMultiple }

    /// Width of conditioning vector k (1, 2, 3).
    public func conditioningWidth(_ k: Int) -> Int { hidden << (k - 1) }

    /// The official preset this configuration is, or nil for a custom one.
    public var preset: DiCoPreset? { DiCoPreset.allCases.first { $0.config == self } }

    /// Total number of parameters (exact: the sum over `expectedTensors`).
    public var parameterCount: Int { expectedTensors.reduce(0) { $0 + $1.shape.reduce(1, *) } }
}

/// The official DiCo presets (DICO_MODEL.md, "Presets").
public enum DiCoPreset: String, CaseIterable, Sendable {
    case S, B, L, XL, H

    /// The display name, e.g. "DiCo-XL".
    public var displayName: String { "DiCo-\(rawValue)" }

    /// The official configuration (ImageNet, 1000 classes plus the null row, learn_sigma).
    public var config: DiCoConfig {
        switch self {
        case .S: return DiCoConfig(hidden: 128, depths: [5, 4, 4, 4, 4], mlpRatio: 2)
        case .B: return DiCoConfig(hidden: 256, depths: [5, 4, 4, 4, 4], mlpRatio: 2)
        case .L: return DiCoConfig(hidden: 352, depths: [9, 8, 9, 8, 9], mlpRatio: 2)
        case .XL: return DiCoConfig(hidden: 416, depths: [9, 9, 10, 9, 9], mlpRatio: 2)
        case .H: return DiCoConfig(hidden: 416, depths: [14, 12, 10, 12, 14], mlpRatio: 4)
        }
    }

    /// Parses "S", "DiCo-S", "xl", ...
    public init?(name: String) {
        var n = name.uppercased()
        if n.hasPrefix("DICO-") { n.removeFirst(5) }
        guard let p = DiCoPreset(rawValue: n) else { return nil }
        self = p
    }
}
