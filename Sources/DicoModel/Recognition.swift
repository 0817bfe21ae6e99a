import DicoCore
import Dispatch

/// A DiCo state dict that passed recognition: its configuration and its tensors under
/// the canonical (unprefixed) names.
public struct DiCoWeights: @unchecked Sendable {
    public let config: DiCoConfig
    /// Tensors by canonical name; zero-copy views into the source file.
    public let tensors: [String: TensorData]
    /// The wrapper prefix that was stripped ("module.", "ema.", ...), or "" if none.
    public let strippedPrefix: String
    /// Human-readable remarks about the recognition (ignored tensors, assumptions made).
    public let notes: [String]
}

/// Recognizes a DiCo model from tensor names and shapes alone (DICO_MODEL.md) and checks
/// the state dict against what that configuration requires.
public enum DiCoRecognizer {
    /// Prefixes training checkpoints put before the state-dict names.
    public static let wrapperPrefixes = ["module.", "model.", "ema."]

    /// Infers the configuration, then checks every tensor: missing, unexpected,
    /// mis-shaped and non-float tensors and NaN or Inf values are collected over the whole
    /// file and reported together.
    /// - Parameters:
    ///   - tensors: the file's tensors in file order.
    ///   - file: the file name used in messages.
    ///   - checkValues: scan every weight for NaN and Inf (on by default).
    /// - Throws: `DicoError.invalidInput` whose message names the file and lists every
    ///   offending tensor.
    public static func recognize(_ tensors: [(name: String, data: TensorData)], file: String,
                                 checkValues: Bool = true) throws -> DiCoWeights {
        let (named, prefix, notes) = stripWrapper(tensors)
        var byName: [String: TensorData] = [:]
        for (n, d) in named { byName[n] = d }
        let config = try inferConfig(shapes: byName.mapValues(\.shape), file: file)

        var problems: [String] = []
        let expected = config.expectedTensors
        let expectedNames = Set(expected.map(\.name))
        for e in expected {
            guard let d = byName[e.name] else {
                problems.append("missing tensor '\(prefix)\(e.name)' \(e.shape)")
                continue
            }
            if d.shape != e.shape { problems.append("tensor '\(prefix)\(e.name)' has shape \(d.shape), expected \(e.shape)") }
            if !d.dtype.isFloat { problems.append("tensor '\(prefix)\(e.name)' has dtype \(d.dtype.safetensorsName), expected a float type") }
        }
        for (n, d) in named where !expectedNames.contains(n) {
            problems.append("unexpected tensor '\(prefix)\(n)' \(d.shape)")
        }
        if checkValues && problems.isEmpty {
            problems += nonFiniteTensors(expected.map { (prefix + $0.name, byName[$0.name]!) })
        }
        guard problems.isEmpty else { throw invalidStateDict(file: file, config: config, problems: problems) }
        return DiCoWeights(config: config, tensors: byName.filter { expectedNames.contains($0.key) }, strippedPrefix: prefix, notes: notes)
    }

    /// The one error for a state dict with `problems` (one line each, all listed).
    public static func invalidStateDict(file: String, config: DiCoConfig, problems: [String]) -> DicoError {
        let what = config.preset.map { $0.displayName } ?? "custom DiCo"
        return DicoError.invalid(file, "not a valid \(what) state dict (\(describe(config))): \(problems.count) problem\(problems.count == 1 ? "" : "s"):\n  " + problems.joined(separator: "\n  "))
    }

    /// The problem line for a tensor holding NaN or Inf.
    public static func nonFiniteProblem(_ name: String) -> String { "tensor '\(name)' holds NaN or Inf values" }

    /// A one-line summary such as `C=128, depths [5, 4, 4, 4, 4], mlp ratio 2, 1000 classes + null`.
    public static func describe(_ c: DiCoConfig) -> String {
        "C=\(c.hidden), depths \(c.depths), mlp ratio \(c.mlpRatio), in \(c.inChannels), out \(c.outChannels), \(c.numClasses) classes\(c.hasNullClass ? " + null" : "")"
    }

    /// Removes a wrapper prefix shared by every name. When a checkpoint holds both `ema.`
    /// and `model.` copies, the EMA weights are the ones DiCo samples with, so they win.
    static func stripWrapper(_ tensors: [(name: String, data: TensorData)]) -> ([(String, TensorData)], String, [String]) {
        var current = tensors.map { ($0.name, $0.data) }
        var stripped = ""
        var notes: [String] = []
        while !current.isEmpty {
            let groups = Dictionary(grouping: current.indices) { i in wrapperPrefixes.first { current[i].0.hasPrefix($0) } ?? "" }
            guard groups[""] == nil else { break }
            let chosen: String
            if groups.count == 1 { chosen = groups.keys.first! } else if groups["ema."] != nil {
                chosen = "ema."
                let others = groups.keys.filter { $0 != "ema." }.sorted()
                notes.append("using the 'ema.' weights; ignored the \(others.map { "'\($0)'" }.joined(separator: ", ")) copies")
            } else { break }
            current = groups[chosen]!.map { (String(current[$0].0.dropFirst(chosen.count)), current[$0].1) }
            stripped += chosen
        }
        return (current, stripped, notes)
    }

    /// Infers a configuration from shapes keyed by canonical name.
    /// - Throws: `DicoError.invalidInput` when the anchor tensors that fix the
    ///   configuration are missing or contradict each other.
    public static func inferConfig(shapes: [String: [Int]], file: String) throws -> DiCoConfig {
        let anchors = ["x_embedder.proj.weight", "final_layer.out_proj.weight", "y_embedder.embedding_table_0.weight", "t_embedder_1.mlp.0.weight"]
        let missing = anchors.filter { shapes[$0] == nil }
        guard missing.isEmpty else {
            throw DicoError.invalid(file, "not a DiCo state dict: missing \(missing.map { "'\($0)'" }.joined(separator: ", ")) (found \(shapes.count) tensors)")
        }
        let xe = shapes["x_embedder.proj.weight"]!, op = shapes["final_layer.out_proj.weight"]!
        let table = shapes["y_embedder.embedding_table_0.weight"]!, t0 = shapes["t_embedder_1.mlp.0.weight"]!
        guard xe.count == 4, op.count == 4, table.count == 2, t0.count == 2, xe[0] > 0, xe[0] % 2 == 0 else {
            throw DicoError.invalid(file, "not a DiCo state dict: 'x_embedder.proj.weight' \(xe), 'final_layer.out_proj.weight' \(op), 'y_embedder.embedding_table_0.weight' \(table) or 't_embedder_1.mlp.0.weight' \(t0) has the wrong rank or an odd hidden size")
        }
        // Bounds far above any DiCo keep the size arithmetic below from overflowing on a
        // file that declares absurd (zero-byte) shapes.
        let limit = 1 << 20
        for (what, v) in [("hidden size", xe[0]), ("input channels", xe[1]), ("output channels", op[0]), ("class rows", table[0]), ("frequency size", t0[1])]
            where v > limit || v < 1 {
            throw DicoError.invalid(file, "not a DiCo state dict: \(what) \(v) is outside 1...\(limit)")
        }
        var depths: [Int] = []
        for level in DiCoLevel.allCases {
            let prefix = level.moduleName + "."
            var maxIndex = -1
            for name in shapes.keys where name.hasPrefix(prefix) {
                let rest = name.dropFirst(prefix.count)
                if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]), i >= 0, i < 10_000 { maxIndex = max(maxIndex, i) }
            }
            depths.append(maxIndex + 1)
        }
        // The MLP ratio comes from the first block that has a conv4.
        var ratio = 0
        for level in DiCoLevel.allCases where depths[level.rawValue] > 0 {
            if let s = shapes["\(level.moduleName).0.conv4.weight"], s.count == 4 {
                let d = xe[0] * level.widthMultiple
                guard s[0] % d == 0, s[0] > 0, s[0] / d <= 64 else {
                    throw DicoError.invalid(file, "tensor '\(level.moduleName).0.conv4.weight' has \(s[0]) output channels, not a multiple of the block width \(d)")
                }
                ratio = s[0] / d
                break
            }
        }
        guard ratio > 0 else { throw DicoError.invalid(file, "not a DiCo state dict: no block has a 'conv4.weight' to give the MLP ratio") }
        // DiCo trains with class dropout, so its tables carry a null row: rows = classes + 1.
        // Only a table of exactly 1000 rows (ImageNet without the row) is read as having none.
        let rows = table[0]
        let hasNull = rows != 1000
        return DiCoConfig(hidden: xe[0], depths: depths, mlpRatio: ratio, inChannels: xe[1], outChannels: op[0],
                          numClasses: hasNull ? rows - 1 : rows, hasNullClass: hasNull, frequencySize: t0[1])
    }

    /// The problem lines (`nonFiniteProblem`) of the float tensors holding NaN or Inf, checked
    /// in parallel over tensors.
    public static func nonFiniteTensors(_ tensors: [(String, TensorData)]) -> [String] {
        var bad = [Bool](repeating: false, count: tensors.count)
        bad.withUnsafeMutableBufferPointer { flags in
            let f = flags
            DispatchQueue.concurrentPerform(iterations: tensors.count) { i in
                f[i] = !allFinite(tensors[i].1)
            }
        }
        return tensors.indices.filter { bad[$0] }.map { nonFiniteProblem(tensors[$0].0) }
    }

    /// Whether every value is finite, testing the exponent bits (all ones means NaN or Inf).
    public static func allFinite(_ t: TensorData) -> Bool {
        let b = t.bytes
        let n = t.elementCount
        switch t.dtype {
        case .f32:
            for i in 0..<n where b.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self) & 0x7F80_0000 == 0x7F80_0000 { return false }
        case .f16:
            for i in 0..<n where b.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self) & 0x7C00 == 0x7C00 { return false }
        case .bf16:
            for i in 0..<n where b.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self) & 0x7F80 == 0x7F80 { return false }
        case .f64:
            for i in 0..<n where b.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) & 0x7FF0_0000_0000_0000 == 0x7FF0_0000_0000_0000 { return false }
        case .i64, .i32, .i16, .i8, .u8, .bool:
            return true
        }
        return true
    }
}
