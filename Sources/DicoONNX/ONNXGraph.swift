import DicoCore

// The ONNX model as the importer holds it: a faithful, Swift-native copy of the parts of
// ModelProto that dico-convert uses (Formats/onnx.proto lists the fields). The parser
// (ONNXParser.swift) fills these from protobuf-c; the interpreter (ONNXInterpreter.swift)
// runs them as written; canonicalization rewrites them into the DiCo IR.

/// A parsed `.onnx` file.
public struct ONNXModel: @unchecked Sendable {
    /// The path the model was read from (used in every error message about it).
    public let path: String
    /// `ModelProto.ir_version`.
    public let irVersion: Int64
    /// Operator set versions by domain; the default domain `ai.onnx` is stored under "".
    public let opsetImports: [String: Int64]
    /// `ModelProto.producer_name` and `producer_version` (e.g. "pytorch", "2.15.0").
    public let producerName: String
    public let producerVersion: String
    /// The main graph.
    public let graph: ONNXGraph

    public init(path: String, irVersion: Int64, opsetImports: [String: Int64], producerName: String,
                producerVersion: String, graph: ONNXGraph) {
        self.path = path
        self.irVersion = irVersion
        self.opsetImports = opsetImports
        self.producerName = producerName
        self.producerVersion = producerVersion
        self.graph = graph
    }

    /// The `ai.onnx` opset version (domain "" or "ai.onnx").
    public var defaultOpset: Int64? { opsetImports[""] ?? opsetImports["ai.onnx"] }

    /// The same model with `graph` in place of its graph (an edited copy, as tests build).
    public func replacingGraph(_ graph: ONNXGraph) -> ONNXModel {
        ONNXModel(path: path, irVersion: irVersion, opsetImports: opsetImports, producerName: producerName,
                  producerVersion: producerVersion, graph: graph)
    }
}

/// `GraphProto`: nodes in the file's (topological) order, initializers, inputs and outputs.
public struct ONNXGraph: @unchecked Sendable {
    public var name: String
    public var nodes: [ONNXNode]
    /// Initializers in file order (names are unique; the parser rejects duplicates).
    public var initializers: [ONNXInitializer]
    /// Graph inputs that are not initializers (what a caller must feed).
    public var inputs: [ONNXValueInfo]
    public var outputs: [ONNXValueInfo]

    public init(name: String, nodes: [ONNXNode], initializers: [ONNXInitializer], inputs: [ONNXValueInfo],
                outputs: [ONNXValueInfo]) {
        self.name = name
        self.nodes = nodes
        self.initializers = initializers
        self.inputs = inputs
        self.outputs = outputs
    }

    /// Initializer by name.
    public func initializer(_ name: String) -> TensorData? {
        initializers.first(where: { $0.name == name })?.tensor
    }
}

/// One named constant tensor of the graph (`GraphProto.initializer`). Its data is a view into
/// the mapped `.onnx` file or its external data file when the bytes can be used as stored
/// (little-endian `raw_data`), else an owned copy (typed fields such as `float_data`).
public struct ONNXInitializer: @unchecked Sendable {
    public let name: String
    public let tensor: TensorData

    public init(name: String, tensor: TensorData) {
        self.name = name
        self.tensor = tensor
    }
}

/// `ValueInfoProto` for a graph input or output.
public struct ONNXValueInfo: Sendable, Equatable {
    public let name: String
    /// The element type, if the file declares a tensor type this toolchain knows.
    public let elementType: DType?
    /// The declared shape; nil when the file declares none.
    public let shape: [ONNXDim]?

    public init(name: String, elementType: DType?, shape: [ONNXDim]?) {
        self.name = name
        self.elementType = elementType
        self.shape = shape
    }
}

/// One dimension of a declared shape.
public enum ONNXDim: Sendable, Equatable {
    case value(Int64)
    case param(String)
    case unknown
}

/// `NodeProto`.
public struct ONNXNode: @unchecked Sendable {
    /// The node's name (may be empty in the file; the parser then names it "<op_type>#<index>").
    public let name: String
    public let opType: String
    /// The operator domain; "" is the default `ai.onnx` domain.
    public let domain: String
    /// Input value names in order; "" marks an omitted optional input.
    public let inputs: [String]
    public let outputs: [String]
    public let attributes: [String: ONNXAttribute]

    public init(name: String, opType: String, domain: String, inputs: [String], outputs: [String],
                attributes: [String: ONNXAttribute]) {
        self.name = name
        self.opType = opType
        self.domain = domain
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }
}

/// `AttributeProto`, the kinds DiCo exports use. Graph-valued attributes (If, Loop) are
/// refused by the parser, naming the node.
public enum ONNXAttribute: @unchecked Sendable {
    case float(Float)
    case int(Int64)
    case string(String)
    case tensor(TensorData)
    case floats([Float])
    case ints([Int64])
    case strings([String])

    public var int: Int64? { if case .int(let v) = self { return v }; return nil }
    public var float: Float? { if case .float(let v) = self { return v }; return nil }
    public var ints: [Int64]? { if case .ints(let v) = self { return v }; return nil }
    public var string: String? { if case .string(let v) = self { return v }; return nil }
    public var tensor: TensorData? { if case .tensor(let v) = self { return v }; return nil }
}
