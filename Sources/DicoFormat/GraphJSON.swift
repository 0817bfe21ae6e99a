import DicoCore
import DicoIR

/// The graph section of a `.dico` header (Formats/DICO.md, "Graph"): values by index, nodes
/// in topological order, op attributes as JSON numbers.
public enum GraphJSON {
    /// Encodes `graph`. A constant's `tensor` is its value name, the name of its entry in the
    /// tensor table.
    public static func encode(_ graph: Graph) -> JSONValue {
        let values: [JSONValue] = graph.values.map { v in
            var members: [(key: String, value: JSONValue)] = [
                ("name", .string(v.name)), ("dtype", .string(v.type.dtype.rawValue)),
                ("shape", .array(v.type.shape.map(encode))),
            ]
            switch v.source {
            case .input: members.append(("source", .string("input")))
            case .constant:
                members.append(("source", .string("constant")))
                members.append(("tensor", .string(v.name)))
            case .node: members.append(("source", .string("node")))
            }
            return .object(members)
        }
        let nodes: [JSONValue] = graph.nodes.map { n in
            .object([("op", .string(n.op.name)), ("name", .string(n.name)),
                     ("inputs", .array(n.inputs.map { .integer($0.index) })), ("output", .integer(n.output.index)),
                     ("attrs", .object(attributes(n.op)))])
        }
        return .object([("values", .array(values)), ("nodes", .array(nodes)),
                        ("inputs", .array(graph.inputs.map { .integer($0.index) })),
                        ("outputs", .array(graph.outputs.map { .integer($0.index) }))])
    }

    /// The op's attributes as JSON (exhaustive: a new op must say what it stores).
    static func attributes(_ op: Op) -> [(key: String, value: JSONValue)] {
        switch op {
        case let .conv2d(stride, padding, groups), let .conv2dGatedAdd(stride, padding, groups):
            return [("stride", .integer(stride)), ("padding", .integer(padding)), ("groups", .integer(groups))]
        case let .conv2dActivation(stride, padding, groups, act):
            return [("stride", .integer(stride)), ("padding", .integer(padding)), ("groups", .integer(groups)), ("activation", .string(act.rawValue))]
        case let .channelLayerNorm(eps), let .layerNormModulate(eps): return [("eps", .number(floatLiteral(eps)))]
        case let .slice(axis, start, length): return [("axis", .integer(axis)), ("start", .integer(start)), ("length", .integer(length))]
        case let .concat(axis): return [("axis", .integer(axis))]
        case let .pixelShuffle(f), let .pixelUnshuffle(f): return [("factor", .integer(f))]
        case let .timestepEmbedding(dim, maxPeriod): return [("dim", .integer(dim)), ("max_period", .number(floatLiteral(maxPeriod)))]
        case .linear, .modulate, .gatedAdd, .gelu, .silu, .sigmoid, .globalAvgPool, .mul, .add, .embedding, .channelAttention: return []
        }
    }

    /// The minor format version that added `op` (Formats/DICO.md, op table).
    static func formatMinor(_ op: Op) -> UInt16 {
        switch op {
        case .conv2dGatedAdd, .channelAttention: return 1
        case .conv2d, .conv2dActivation, .linear, .channelLayerNorm, .layerNormModulate, .modulate, .gatedAdd, .gelu, .silu, .sigmoid,
             .globalAvgPool, .mul, .add, .slice, .concat, .pixelShuffle, .pixelUnshuffle, .embedding, .timestepEmbedding: return 0
        }
    }

    /// Decodes one op from its name and attributes.
    /// - Throws: a message (without the file name) naming the node and the problem.
    static func decodeOp(_ name: String, _ attrs: [(key: String, value: JSONValue)], node: String) throws -> Op {
        guard Set(attrs.map(\.key)).count == attrs.count else {
            throw DicoError(.invalidInput, "node '\(node)' (\(name)): an attribute appears twice")
        }
        // Attributes come from a file: bounded far above any real use, so shape arithmetic
        // on them cannot overflow.
        func int(_ key: String) throws -> Int {
            guard let v = attrs.first(where: { $0.key == key })?.value.exactNonNegativeInt, v <= 1 << 30 else {
                throw DicoError(.invalidInput, "node '\(node)' (\(name)): attribute '\(key)' is missing or not an integer in 0...\(1 << 30)")
            }
            return v
        }
        func float(_ key: String) throws -> Float {
            guard case let .number(lit)? = attrs.first(where: { $0.key == key })?.value, let v = Float(lit), v.isFinite else {
                throw DicoError(.invalidInput, "node '\(node)' (\(name)): attribute '\(key)' is missing or not a finite number")
            }
            return v
        }
        let op: Op
        switch name {
        case "conv2d": op = .conv2d(stride: try int("stride"), padding: try int("padding"), groups: try int("groups"))
        case "conv2d_activation":
            guard let a = attrs.first(where: { $0.key == "activation" })?.value.stringValue, let act = Activation(rawValue: a) else {
                throw DicoError(.invalidInput, "node '\(node)' (\(name)): attribute 'activation' is missing or not one of gelu, silu, sigmoid")
            }
            op = .conv2dActivation(stride: try int("stride"), padding: try int("padding"), groups: try int("groups"), activation: act)
        case "conv2d_gated_add": op = .conv2dGatedAdd(stride: try int("stride"), padding: try int("padding"), groups: try int("groups"))
        case "channel_attention": op = .channelAttention
        case "linear": op = .linear
        case "channel_layer_norm": op = .channelLayerNorm(eps: try float("eps"))
        case "modulate": op = .modulate
        case "layer_norm_modulate": op = .layerNormModulate(eps: try float("eps"))
        case "gated_add": op = .gatedAdd
        case "gelu": op = .gelu
        case "silu": op = .silu
        case "sigmoid": op = .sigmoid
        case "global_avg_pool": op = .globalAvgPool
        case "mul": op = .mul
        case "add": op = .add
        case "slice": op = .slice(axis: try int("axis"), start: try int("start"), length: try int("length"))
        case "concat": op = .concat(axis: try int("axis"))
        case "pixel_shuffle": op = .pixelShuffle(factor: try int("factor"))
        case "pixel_unshuffle": op = .pixelUnshuffle(factor: try int("factor"))
        case "embedding": op = .embedding
        case "timestep_embedding": op = .timestepEmbedding(dim: try int("dim"), maxPeriod: try float("max_period"))
        default: throw DicoError(.invalidInput, "node '\(node)': unknown op '\(name)'")
        }
        let known = Set(attributes(op).map(\.key))
        if let extra = attrs.first(where: { !known.contains($0.key) }) {
            throw DicoError(.invalidInput, "node '\(node)' (\(name)): unknown attribute '\(extra.key)'")
        }
        return op
    }

    static func encode(_ d: Dim) -> JSONValue {
        if let c = d.constant { return .integer(c) }
        return .string(d.description)
    }

    /// Parses "N", "H/2", "2*W", "3*N/2" or an integer.
    static func decodeDim(_ v: JSONValue) -> Dim? {
        if let c = v.exactNonNegativeInt { return c <= 1 << 40 ? .c(c) : nil }
        guard var s = v.stringValue else { return nil }
        var num = 1, den = 1
        if let slash = s.lastIndex(of: "/") {
            guard let d = Int(s[s.index(after: slash)...]), d > 0, d <= 1 << 16 else { return nil }
            den = d
            s = String(s[..<slash])
        }
        if let star = s.firstIndex(of: "*") {
            guard let n = Int(s[..<star]), n > 0, n <= 1 << 16 else { return nil }
            num = n
            s = String(s[s.index(after: star)...])
        }
        guard let sym = DimSymbol(rawValue: s) else { return nil }
        return Dim(symbol: sym, num: num, den: den)
    }

    /// A float as the shortest literal that reads back to the same value.
    static func floatLiteral(_ f: Float) -> String { "\(f)" }
}
