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
    /// Fuses producer-consumer pairs: for each node whose input 0 is produced by another node
    /// and read by nothing else, `match(consumer, producer)` may return a fusion; the pair is
    /// then replaced by one node standing for the consumer's output. Returns whether any
    /// pair was fused.
    mutating func fusePairs(_ match: (Node, Node) -> Fusion?) throws -> Bool {
        let uses = useCounts(), producers = producers()
        var absorbed = Set<Int>()
        var fused: [Int: Fusion] = [:]
        for (i, node) in nodes.enumerated() {
            guard let first = node.inputs.first, let p = producers[first.index], uses[first.index] == 1,
                  let f = match(node, nodes[p]) else { continue }
            absorbed.insert(p)
            fused[i] = f
        }
        guard !fused.isEmpty else { return false }
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
