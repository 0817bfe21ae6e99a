import DicoCore

/// Index of a value in its graph.
public struct ValueID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let index: Int
    public init(_ index: Int) { self.index = index }
    public static func < (a: ValueID, b: ValueID) -> Bool { a.index < b.index }
    public var description: String { "%\(index)" }
}

/// Where a value comes from.
public enum ValueSource: Sendable {
    /// A graph input, bound by the caller at run time.
    case input
    /// A constant tensor; its bytes usually point into the mapped model file.
    case constant(TensorData)
    /// The output of node `index`.
    case node(Int)
}

/// A typed value: graph input, constant, or node output.
public struct Value: Sendable {
    /// Name: the input name, the state-dict tensor name, or a readable node-output name.
    public var name: String
    public var type: TensorType
    public var source: ValueSource
}

/// One operation applied to values. Every node has exactly one output.
public struct Node: Sendable {
    public var op: Op
    public var inputs: [ValueID]
    public var output: ValueID
    /// Where the node came from (the module path in the source model), for messages and dumps.
    public var name: String
}

/// A dataflow graph in topological order: nodes only read values defined before them.
public struct Graph: Sendable {
    public private(set) var values: [Value] = []
    public private(set) var nodes: [Node] = []
    public private(set) var inputs: [ValueID] = []
    public var outputs: [ValueID] = []

    public init() {}

    /// Adds a graph input.
    public mutating func addInput(_ name: String, _ type: TensorType) -> ValueID {
        let id = ValueID(values.count)
        values.append(Value(name: name, type: type, source: .input))
        inputs.append(id)
        return id
    }

    /// Adds a constant whose type is taken from its data.
    public mutating func addConstant(_ name: String, _ data: TensorData) -> ValueID {
        let id = ValueID(values.count)
        values.append(Value(name: name, type: TensorType(data.dtype, constant: data.shape), source: .constant(data)))
        return id
    }

    /// Appends a node; its output type comes from shape inference.
    /// - Throws: `DicoError.invalidInput` naming the node when the inputs do not fit the op.
    @discardableResult
    public mutating func add(_ op: Op, _ inputs: [ValueID], name: String) throws -> ValueID {
        for i in inputs where i.index < 0 || i.index >= values.count {
            throw DicoError(.internalError, "node '\(name)': input \(i) is not defined")
        }
        let type = try inferType(op, inputs.map { values[$0.index].type }, node: name)
        let id = ValueID(values.count)
        values.append(Value(name: name, type: type, source: .node(nodes.count)))
        nodes.append(Node(op: op, inputs: inputs, output: id, name: name))
        return id
    }

    /// The value behind `id`.
    public subscript(_ id: ValueID) -> Value { values[id.index] }

    /// The constant data of `id`, or nil if it is not a constant.
    public func constant(_ id: ValueID) -> TensorData? {
        if case let .constant(d) = values[id.index].source { return d }
        return nil
    }

    /// All constant values, in definition order.
    public var constantIDs: [ValueID] {
        values.indices.compactMap { i in
            if case .constant = values[i].source { return ValueID(i) }
            return nil
        }
    }

    /// Number of nodes per op name, for `inspect`.
    public var opCounts: [String: Int] {
        nodes.reduce(into: [:]) { $0[$1.op.name, default: 0] += 1 }
    }
}
