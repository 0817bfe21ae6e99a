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

    public init(name: String, type: TensorType, source: ValueSource) {
        self.name = name
        self.type = type
        self.source = source
    }
}

/// One operation applied to values. Every node has exactly one output.
public struct Node: Sendable {
    public var op: Op
    public var inputs: [ValueID]
    public var output: ValueID
    /// Where the node came from (the module path in the source model), for messages and dumps.
    public var name: String

    public init(op: Op, inputs: [ValueID], output: ValueID, name: String) {
        self.op = op
        self.inputs = inputs
        self.output = output
        self.name = name
    }
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

    /// Adds a constant whose type is taken from its data (float32 for quantized data).
    public mutating func addConstant(_ name: String, _ data: TensorData) -> ValueID {
        let id = ValueID(values.count)
        values.append(Value(name: name, type: TensorType(data.logicalDType, constant: data.shape), source: .constant(data)))
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

    /// Replaces the data of constant `id` (a storage change such as quantization), keeping
    /// its name; the new data must have the same shape and logical dtype.
    public mutating func replaceConstant(_ id: ValueID, with data: TensorData) {
        precondition(values[id.index].type == TensorType(data.logicalDType, constant: data.shape), "storage change keeps the type")
        values[id.index].source = .constant(data)
    }

    /// Appends a value exactly as recorded (used by file readers, which then call `verify`).
    public mutating func appendRecorded(_ value: Value) -> ValueID {
        values.append(value)
        return ValueID(values.count - 1)
    }

    /// Appends a node exactly as recorded (used by file readers, which then call `verify`).
    public mutating func appendRecorded(_ node: Node) {
        nodes.append(node)
    }

    /// Declares which values are the graph inputs (used by file readers).
    public mutating func setInputs(_ ids: [ValueID]) {
        inputs = ids
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
