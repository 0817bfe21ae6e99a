import DicoCore
import DicoONNX

/// The `onnx_graph` section of a generic-graph `.dico` header (Formats/DICO.md, "Generic ONNX
/// graphs, version 1.1"): an ONNX graph as written, node by node, with its initializers and
/// `Constant` tensors as entries of the tensor table, so that any runtime can rebuild the
/// ONNX model.
public enum ONNXGraphJSON {
    /// A tensor-valued node attribute (a `Constant`'s `value`, say) and the name of its entry in
    /// the tensor table.
    public struct AttributeTensor {
        public let node: Int
        public let attribute: String
        /// The table name: `@node<index>.<attribute>`, with more leading `@` while that is an
        /// initializer's name (so it is unique and depends only on the graph).
        public let name: String
        public let tensor: TensorData
    }

    /// The tensor attributes of `graph`, in node order then attribute-name order.
    public static func attributeTensors(_ graph: ONNXGraph) -> [AttributeTensor] {
        let taken = Set(graph.initializers.map(\.name))
        var out: [AttributeTensor] = []
        for (k, node) in graph.nodes.enumerated() {
            for (attr, value) in node.attributes.sorted(by: { $0.key < $1.key }) {
                guard case let .tensor(t) = value else { continue }
                var name = "@node\(k).\(attr)"
                while taken.contains(name) { name = "@" + name }
                out.append(AttributeTensor(node: k, attribute: attr, name: name, tensor: t))
            }
        }
        return out
    }

    /// Encodes `model`'s graph. Each initializer is listed with its ONNX (logical) dtype; its
    /// table entry of the same name may store it otherwise (int8, fp16, bf16).
    public static func encode(_ model: ONNXModel) -> JSONValue {
        let g = model.graph
        var tensorNames: [Int: [String: String]] = [:]
        for a in attributeTensors(g) { tensorNames[a.node, default: [:]][a.attribute] = a.name }
        let nodes: [JSONValue] = g.nodes.enumerated().map { k, n in
            .object([
                ("op_type", .string(n.opType)), ("domain", .string(n.domain)), ("name", .string(n.name)),
                ("inputs", .array(n.inputs.map { .string($0) })), ("outputs", .array(n.outputs.map { .string($0) })),
                ("attributes", .object(n.attributes.sorted { $0.key < $1.key }.map { key, value in
                    (key, encode(value, tensorName: tensorNames[k]?[key] ?? ""))
                })),
            ])
        }
        return .object([
            ("ir_version", .number(String(model.irVersion))),
            ("producer_name", .string(model.producerName)), ("producer_version", .string(model.producerVersion)),
            ("opset_imports", .array(model.opsetImports.sorted { $0.key < $1.key }.map {
                .object([("domain", .string($0.key)), ("version", .number(String($0.value)))])
            })),
            ("name", .string(g.name)),
            ("inputs", .array(g.inputs.map(encode))), ("outputs", .array(g.outputs.map(encode))),
            ("initializers", .array(g.initializers.map {
                .object([("name", .string($0.name)), ("dtype", .string($0.tensor.logicalONNXType.rawValue))])
            })),
            ("nodes", .array(nodes)),
        ])
    }

    static func encode(_ v: ONNXValueInfo) -> JSONValue {
        let shape: JSONValue = v.shape.map { dims in
            .array(dims.map { d -> JSONValue in
                switch d {
                case let .value(n): return .number(String(n))
                case let .param(p): return .string(p)
                case .unknown: return .null
                }
            })
        } ?? .null
        return .object([("name", .string(v.name)), ("dtype", v.elementType.map { .string($0.rawValue) } ?? .null), ("shape", shape)])
    }

    static func encode(_ a: ONNXAttribute, tensorName: String) -> JSONValue {
        switch a {
        case let .float(f): return .object([("float", encode(f))])
        case let .int(i): return .object([("int", .number(String(i)))])
        case let .string(s): return .object([("string", .string(s))])
        case .tensor: return .object([("tensor", .string(tensorName))])
        case let .floats(v): return .object([("floats", .array(v.map(encode)))])
        case let .ints(v): return .object([("ints", .array(v.map { .number(String($0)) }))])
        case let .strings(v): return .object([("strings", .array(v.map { .string($0) }))])
        }
    }

    /// A float as the shortest literal that reads back to the same value; JSON has no NaN or
    /// infinity, so those are the strings "NaN", "Infinity", "-Infinity".
    static func encode(_ f: Float) -> JSONValue {
        if f.isNaN { return .string("NaN") }
        if f.isInfinite { return .string(f < 0 ? "-Infinity" : "Infinity") }
        return .number("\(f)")
    }

    /// Decodes an `onnx_graph` object into the model the interpreter runs, its initializers and
    /// tensor attributes bound to table tensors by `tensor(name)`. Checks what a runtime relies
    /// on: every name resolves (an initializer's tensor, a node input produced earlier, a graph
    /// output produced at all), no value is defined twice, attributes are well typed.
    /// - Parameter path: the `.dico` file, the model's path (named in the interpreter's errors).
    /// - Throws: a message (without the file name) naming the node, tensor or value and the problem.
    static func decode(_ root: JSONValue, path: String, tensor: (String) -> TensorData?) throws -> ONNXModel {
        func bad(_ m: String) -> DicoError { DicoError(.invalidInput, m) }
        let top = try HeaderObject(root, "the onnx_graph", path)
        guard let ir = int64(top.value("ir_version")), let opsets = top.value("opset_imports")?.arrayValue,
              let producer = top.string("producer_name"), let producerVersion = top.string("producer_version"),
              let name = top.string("name"), let inputs = top.value("inputs")?.arrayValue, let outputs = top.value("outputs")?.arrayValue,
              let initializers = top.value("initializers")?.arrayValue, let nodes = top.value("nodes")?.arrayValue else {
            throw bad("the onnx_graph needs 'ir_version', 'producer_name', 'producer_version', 'opset_imports', 'name', 'inputs', 'outputs', 'initializers' and 'nodes'")
        }
        var opsetImports: [String: Int64] = [:]
        for (i, item) in opsets.enumerated() {
            let o = try HeaderObject(item, "opset import \(i)", path)
            guard let domain = o.string("domain"), let version = int64(o.value("version")), opsetImports[domain] == nil else {
                throw bad("opset import \(i) needs a 'domain' (listed once) and an integer 'version'")
            }
            opsetImports[domain] = version
        }
        var defined = Set<String>()
        var inits: [ONNXInitializer] = []
        for (i, item) in initializers.enumerated() {
            let o = try HeaderObject(item, "initializer \(i)", path)
            guard let n = o.string("name"), let tag = o.string("dtype"), let dtype = DType(rawValue: tag) else {
                throw bad("initializer \(i) needs a 'name' and a known 'dtype'")
            }
            guard let t = tensor(n) else { throw bad("initializer '\(n)' names no tensor of the table") }
            guard t.logicalONNXType == dtype || (dtype == .f32 && t.dtype.isFloat) else {
                throw bad("initializer '\(n)' is declared \(tag) but its tensor stores \(t.dtype.rawValue)\(t.quantization != nil ? " (quantized)" : ""), which does not hold \(tag) values")
            }
            guard defined.insert(n).inserted else { throw bad("initializer '\(n)' is listed twice") }
            inits.append(ONNXInitializer(name: n, tensor: t))
        }
        let graphInputs = try inputs.enumerated().map { try valueInfo($1, "graph input \($0)", path) }
        for v in graphInputs where !defined.insert(v.name).inserted {
            throw bad("graph input '\(v.name)' is also an initializer or listed twice")
        }
        var decodedNodes: [ONNXNode] = []
        for (k, item) in nodes.enumerated() {
            let o = try HeaderObject(item, "node \(k)", path)
            guard let op = o.string("op_type"), let domain = o.string("domain"), let nodeName = o.string("name"),
                  let ins = o.value("inputs")?.arrayValue.flatMap(strings), let outs = o.value("outputs")?.arrayValue.flatMap(strings),
                  let attrs = o.value("attributes")?.objectMembers else {
                throw bad("node \(k) needs 'op_type', 'domain', 'name', 'inputs' and 'outputs' (arrays of strings) and an 'attributes' object")
            }
            let label = "node '\(nodeName)' (\(op))"
            for (j, input) in ins.enumerated() where !input.isEmpty && !defined.contains(input) {
                throw bad("\(label): input \(j) '\(input)' is not an initializer, a graph input or the output of an earlier node")
            }
            var attributes: [String: ONNXAttribute] = [:]
            for (key, value) in attrs {
                guard attributes[key] == nil else { throw bad("\(label): attribute '\(key)' appears twice") }
                attributes[key] = try attribute(value, "\(label): attribute '\(key)'", path, tensor: tensor)
            }
            for output in outs where !output.isEmpty {
                guard defined.insert(output).inserted else { throw bad("\(label): output '\(output)' is already defined") }
            }
            decodedNodes.append(ONNXNode(name: nodeName, opType: op, domain: domain, inputs: ins, outputs: outs, attributes: attributes))
        }
        let graphOutputs = try outputs.enumerated().map { try valueInfo($1, "graph output \($0)", path) }
        for v in graphOutputs where !defined.contains(v.name) {
            throw bad("graph output '\(v.name)' is not produced by any node, input or initializer")
        }
        return ONNXModel(path: path, irVersion: ir, opsetImports: opsetImports, producerName: producer, producerVersion: producerVersion,
                         graph: ONNXGraph(name: name, nodes: decodedNodes, initializers: inits, inputs: graphInputs, outputs: graphOutputs))
    }

    static func valueInfo(_ v: JSONValue, _ what: String, _ path: String) throws -> ONNXValueInfo {
        let o = try HeaderObject(v, what, path)
        guard let name = o.string("name"), let dt = o.value("dtype"), let sh = o.value("shape") else {
            throw DicoError(.invalidInput, "\(what) needs 'name', 'dtype' and 'shape'")
        }
        var dtype: DType?
        if dt != .null {
            guard let tag = dt.stringValue, let t = DType(rawValue: tag) else { throw DicoError(.invalidInput, "\(what) '\(name)' has an unknown 'dtype'") }
            dtype = t
        }
        var shape: [ONNXDim]?
        if sh != .null {
            guard let dims = sh.arrayValue else { throw DicoError(.invalidInput, "\(what) '\(name)': 'shape' is neither an array nor null") }
            shape = try dims.map { d in
                if d == .null { return .unknown }
                if let p = d.stringValue { return .param(p) }
                guard let n = int64(d), n >= 0 else { throw DicoError(.invalidInput, "\(what) '\(name)' has an unreadable shape dimension") }
                return .value(n)
            }
        }
        return ONNXValueInfo(name: name, elementType: dtype, shape: shape)
    }

    static func attribute(_ v: JSONValue, _ what: String, _ path: String, tensor: (String) -> TensorData?) throws -> ONNXAttribute {
        guard let m = v.objectMembers, m.count == 1 else {
            throw DicoError(.invalidInput, "\(what) is not an object with one kind key (float, int, string, tensor, floats, ints, strings)")
        }
        let (kind, x) = m[0]
        func fail() -> DicoError { DicoError(.invalidInput, "\(what): its '\(kind)' value is malformed") }
        switch kind {
        case "float": guard let f = float(x) else { throw fail() }; return .float(f)
        case "int": guard let i = int64(x) else { throw fail() }; return .int(i)
        case "string": guard let s = x.stringValue else { throw fail() }; return .string(s)
        case "tensor":
            guard let name = x.stringValue else { throw fail() }
            guard let t = tensor(name) else { throw DicoError(.invalidInput, "\(what) names tensor '\(name)', which is not in the table") }
            return .tensor(t)
        case "floats":
            guard let a = x.arrayValue, case let f = a.compactMap(float), f.count == a.count else { throw fail() }
            return .floats(f)
        case "ints":
            guard let a = x.arrayValue, case let i = a.compactMap(int64), i.count == a.count else { throw fail() }
            return .ints(i)
        case "strings":
            guard let a = x.arrayValue.flatMap(strings) else { throw fail() }
            return .strings(a)
        default: throw DicoError(.invalidInput, "\(what) has the unknown kind '\(kind)'")
        }
    }

    static func strings(_ a: [JSONValue]) -> [String]? {
        let s = a.compactMap(\.stringValue)
        return s.count == a.count ? s : nil
    }

    /// An integer literal (no fraction or exponent) in Int64's range.
    static func int64(_ v: JSONValue?) -> Int64? {
        guard case let .number(lit)? = v else { return nil }
        return Int64(lit)
    }

    static func float(_ v: JSONValue) -> Float? {
        switch v {
        case let .number(lit): return Float(lit)
        case .string("NaN"): return .nan
        case .string("Infinity"): return .infinity
        case .string("-Infinity"): return -.infinity
        default: return nil
        }
    }
}

extension TensorData {
    /// The ONNX element type this tensor holds: float32 when quantized, else its storage dtype.
    var logicalONNXType: DType { quantization != nil ? .f32 : dtype }
}
