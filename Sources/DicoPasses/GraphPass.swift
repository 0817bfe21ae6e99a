import DicoCore
import DicoIR

/// One graph-to-graph rewrite. Each pass lives in its own file, named for what it does, with
/// a doc comment listing its rewrite rules and why they preserve the output.
public protocol GraphPass: Sendable {
    /// The name used by `--passes`, `--skip-pass`, `--dump-ir-after` and provenance.
    var name: String { get }
    /// Rewrites `graph`; returns whether anything changed.
    /// - Throws: `DicoError(.internalError)` if the rewrite builds an inconsistent graph.
    func run(_ graph: inout Graph) throws -> Bool
}

/// Rebuilds a graph node by node: passes copy what they keep, emit what they fuse, and
/// alias values they remove. Constants are carried over lazily, on first use, so a constant
/// nothing reads any more disappears.
struct GraphRewriter {
    let old: Graph
    private(set) var new = Graph()
    private var map: [Int: ValueID] = [:]
    private var usedNames = Set<String>()

    init(_ old: Graph) {
        self.old = old
        for id in old.inputs { map[id.index] = new.addInput(old[id].name, old[id].type) }
    }

    /// The new value standing for old value `id`.
    mutating func value(_ id: ValueID) -> ValueID {
        if let v = map[id.index] { return v }
        guard let data = old.constant(id) else { preconditionFailure("value \(id) is used before it is defined") }
        let v = new.addConstant(old[id].name, data)
        map[id.index] = v
        return v
    }

    /// Copies `node` unchanged (inputs remapped).
    mutating func copy(_ node: Node) throws {
        let ins = node.inputs.map { value($0) }
        map[node.output.index] = try new.add(node.op, ins, name: node.name)
    }

    /// Emits a new node from old input values and makes it stand for old value `replacing`.
    mutating func emit(_ op: Op, _ oldInputs: [ValueID], name: String, replacing: ValueID) throws {
        let ins = oldInputs.map { value($0) }
        map[replacing.index] = try new.add(op, ins, name: name)
    }

    /// Makes old value `id` be represented by what old value `by` became.
    mutating func alias(_ id: ValueID, to by: ValueID) {
        map[id.index] = value(by)
    }

    /// Adds a computed constant to the new graph; returns its new-graph id. Constant names
    /// name tensors in a `.dico` file, so they stay unique: a name the old graph or the new
    /// one already has gets `.folded`, `.folded2`, ... before its last component (keeping the
    /// `.weight` suffix the quantization policy reads).
    mutating func newConstant(_ name: String, _ data: TensorData) -> ValueID {
        if usedNames.isEmpty { usedNames = Set(old.values.map(\.name)) }
        var candidate = name, k = 1
        while usedNames.contains(candidate) {
            let dot = name.lastIndex(of: ".") ?? name.endIndex
            candidate = name[..<dot] + ".folded" + (k == 1 ? "" : "\(k)") + name[dot...]
            k += 1
        }
        usedNames.insert(candidate)
        return new.addConstant(candidate, data)
    }

    /// Appends a node reading new-graph values; returns its new-graph output.
    mutating func add(_ op: Op, _ newInputs: [ValueID], name: String) throws -> ValueID {
        try new.add(op, newInputs, name: name)
    }

    /// Makes old value `id` be represented by new-graph value `newID`.
    mutating func bind(_ id: ValueID, toNew newID: ValueID) {
        map[id.index] = newID
    }

    /// The rebuilt graph with the old outputs.
    mutating func finish() -> Graph {
        new.outputs = old.outputs.map { value($0) }
        return new
    }
}

extension Graph {
    /// How many nodes read each value (graph outputs count as readers).
    func useCounts() -> [Int] {
        var uses = [Int](repeating: 0, count: values.count)
        for n in nodes { for i in n.inputs { uses[i.index] += 1 } }
        for o in outputs { uses[o.index] += 1 }
        return uses
    }

    /// The node producing each value, by value index.
    func producers() -> [Int: Int] {
        var p: [Int: Int] = [:]
        for (i, n) in nodes.enumerated() { p[n.output.index] = i }
        return p
    }
}

/// What a two-node fusion produces: the fused op, its inputs (old values) and its name.
struct Fusion {
    let op: Op
    let inputs: [ValueID]
    let name: String
}

extension Graph {
    /// Fuses producer-consumer pairs: for each node whose input `operand` (0 unless given) is
    /// produced by another node and read by nothing else, `match(consumer, producer)` may
    /// return a fusion; the pair is then replaced by one node standing for the consumer's
    /// output. Returns whether any pair was fused.
    mutating func fusePairs(operand: Int = 0, _ match: (Node, Node) -> Fusion?) throws -> Bool {
        let uses = useCounts(), producers = producers()
        var fused: [Int: Fusion] = [:], absorbed: [Int: Set<Int>] = [:]
        for (i, node) in nodes.enumerated() {
            guard operand < node.inputs.count, case let v = node.inputs[operand], let p = producers[v.index], uses[v.index] == 1,
                  let f = match(node, nodes[p]) else { continue }
            absorbed[i] = [p]
            fused[i] = f
        }
        return try replaceFused(fused, absorbing: absorbed)
    }

    /// Replaces each node `i` of `fused` by its fusion (standing for node i's output, at node
    /// i's place) and drops the nodes `absorbing[i]`, whose outputs only node i read. Returns
    /// whether anything was fused.
    mutating func replaceFused(_ fused: [Int: Fusion], absorbing: [Int: Set<Int>]) throws -> Bool {
        guard !fused.isEmpty else { return false }
        let absorbed = absorbing.values.reduce(into: Set<Int>()) { $0.formUnion($1) }
        var rw = GraphRewriter(self)
        for (i, node) in nodes.enumerated() where !absorbed.contains(i) {
            if let f = fused[i] {
                try rw.emit(f.op, f.inputs, name: f.name, replacing: node.output)
            } else {
                try rw.copy(node)
            }
        }
        self = rw.finish()
        return true
    }
}

extension Graph {
    /// The float32 values of constant `id`, or nil if it is not a float constant.
    func floats(_ id: ValueID) -> [Float]? {
        guard let d = constant(id), d.logicalDType == .f32, d.quantization == nil else { return nil }
        return d.floats()
    }

    /// Whether `id` is a float32 constant that is not quantized (what the folds may rewrite);
    /// cheap, unlike `floats`, which copies the values.
    func isFloatConstant(_ id: ValueID) -> Bool {
        guard let d = constant(id) else { return false }
        return d.logicalDType == .f32 && d.quantization == nil
    }

    /// Calls `body` with the float32 values of constant `id` in place when they are stored as
    /// aligned float32 (a large weight is then not copied), else with a converted copy.
    func withFloats<R>(_ id: ValueID, _ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        let d = constant(id)!
        if d.dtype == .f32, d.quantization == nil, let p = d.bytes.baseAddress, Int(bitPattern: p) % MemoryLayout<Float>.alignment == 0 {
            return try body(p.assumingMemoryBound(to: Float.self))
        }
        return try floats(id)!.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }

    /// The nodes reading each value, by value index (a node reading a value twice is listed twice).
    func readers() -> [Int: [Int]] {
        var r: [Int: [Int]] = [:]
        for (i, n) in nodes.enumerated() { for v in n.inputs { r[v.index, default: []].append(i) } }
        return r
    }

    /// Whether `id` is a graph output.
    func isOutput(_ id: ValueID) -> Bool { outputs.contains(id) }
}

extension Graph {
    /// The values of `id` as one number per channel when it is a float constant broadcasting
    /// along axis 1 only (shape [1, C, 1, ...], or all ones, read as `channels` equal values),
    /// else nil: what a BatchNorm or a norm's affine looks like as a `mul` or `add` operand.
    func perChannelConstant(_ id: ValueID, channels: Int) -> [Float]? {
        guard let v = floats(id) else { return nil }
        let s = self[id].type.shape.map { $0.constant ?? -1 }
        guard s.count >= 2, s.enumerated().allSatisfy({ $0.offset == 1 || $0.element == 1 }) else { return nil }
        if s[1] == channels { return v }
        if s[1] == 1 { return [Float](repeating: v[0], count: channels) }
        return nil
    }

    /// For a `mul` or `add` node, the operand that is not `other` (the constant side), if the
    /// node reads `other` exactly once.
    func otherOperand(_ node: Node, _ other: ValueID) -> ValueID? {
        guard node.inputs.count == 2, node.inputs.filter({ $0 == other }).count == 1 else { return nil }
        return node.inputs[0] == other ? node.inputs[1] : node.inputs[0]
    }
}

extension GraphPass {
    /// Runs `step` (one rewrite sweep) until it changes nothing; whether any sweep changed.
    func toFixpoint(_ graph: inout Graph, _ step: (inout Graph) throws -> Bool) throws -> Bool {
        var changed = false
        while try step(&graph) { changed = true }
        return changed
    }
}
