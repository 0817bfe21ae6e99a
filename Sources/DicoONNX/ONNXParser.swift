import CONNXProto
import DicoCore

// Reading a `.onnx` file: map it, let protobuf-c (generated from Formats/onnx.proto) unpack the
// ModelProto, convert the tree into the Swift data model of ONNXGraph.swift, free the tree.
// protobuf-c reports only success or failure, so the structural checks that give a useful
// message (which tensor, which node, what is wrong) are all made here, on the unpacked tree.
// Every count and pointer protobuf-c hands back is checked before use.

extension ONNXModel {
    /// protobuf's own limit on a serialized message: larger models must keep their weights
    /// as external data (and protobuf-c's length prefixes are 32-bit).
    public static let maxProtobufBytes = Int(Int32.max)

    /// Reads and checks the ONNX model at `path`: `parse(path:)`, then `validate()`.
    /// - Throws: `DicoError` `.invalidInput` for a malformed model or one that uses an op,
    ///   domain or opset this importer does not support (one message naming the file and the
    ///   tensor or node); `.io` when the model or an external data file cannot be read.
    public static func load(path: String) throws -> ONNXModel {
        let model = try parse(path: path)
        try model.validate()
        return model
    }

    /// Reads the ONNX model at `path` and checks its structure (tensors, external data, names,
    /// attributes, opset imports) but not which ops it uses; see `validate()`.
    ///
    /// Initializers in `raw_data` or typed fields become owned tensors; external data becomes
    /// zero-copy views (`TensorStorage.mapped`) into one mapping per external file.
    /// - Throws: as `load(path:)`, except for the op and opset checks of `validate()`.
    public static func parse(path: String) throws -> ONNXModel {
        let file = try MappedFile(path: path)
        guard file.size > 0, let base = file.base else {
            throw DicoError.invalid(path, "file is empty (0 bytes), not an ONNX model")
        }
        guard file.size <= maxProtobufBytes else {
            throw DicoError.invalid(path, "file is \(file.size) bytes, over protobuf's 2 GiB limit for one message; models this large must keep their weights as external data")
        }
        guard let proto = onnx__model_proto__unpack(nil, file.size, base.assumingMemoryBound(to: UInt8.self)) else {
            throw DicoError.invalid(path, "not an ONNX model: protobuf parse failed (\(file.size) bytes; truncated or not a ModelProto)")
        }
        defer { onnx__model_proto__free_unpacked(proto, nil) }
        let converter = try ModelConverter(path: path)
        return try converter.model(proto)
    }
}

/// The conversion of one unpacked ModelProto; one message phrase per failure.
private struct ModelConverter {
    let path: String
    let tensors: ONNXTensorDecoder

    init(path: String) throws {
        self.path = path
        tensors = ONNXTensorDecoder(path: path, external: try ExternalDataFiles(modelPath: path))
    }

    func invalid(_ message: String) -> DicoError { DicoError.invalid(path, message) }

    /// A required string field: NULL or invalid UTF-8 is an error naming the field.
    func string(_ p: UnsafePointer<CChar>?, _ what: String) throws -> String {
        guard let p else { return "" }
        guard let s = String(validatingCString: p) else { throw invalid("\(what) is not valid UTF-8") }
        return s
    }

    /// The i-th element of a protobuf-c array of message pointers, checked.
    func element<T>(_ array: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ i: Int, _ what: String) throws -> UnsafeMutablePointer<T> {
        guard let array, let e = array[i] else { throw invalid("\(what) is missing (malformed protobuf)") }
        return e
    }

    func model(_ proto: UnsafeMutablePointer<Onnx__ModelProto>) throws -> ONNXModel {
        let m = proto.pointee
        guard m.has_ir_version != 0 else { throw invalid("not an ONNX model: no ir_version (ModelProto field 1)") }
        guard let graph = m.graph else { throw invalid("not an ONNX model: no graph (ModelProto field 7)") }
        var opsets: [String: Int64] = [:]
        for i in 0..<m.n_opset_import {
            let o = try element(m.opset_import, i, "opset_import \(i)").pointee
            var domain = try string(o.domain, "opset_import \(i) domain")
            if domain == "ai.onnx" { domain = "" }  // the two spellings of the default domain
            guard o.has_version != 0 else {
                throw invalid("opset_import for domain '\(domain.isEmpty ? "ai.onnx" : domain)' has no version")
            }
            guard opsets.updateValue(o.version, forKey: domain) == nil else {
                throw invalid("duplicate opset_import for domain '\(domain.isEmpty ? "ai.onnx" : domain)'")
            }
        }
        guard opsets[""] != nil else {
            throw invalid("no opset_import for the default domain ai.onnx (imports: \(opsets.keys.sorted().joined(separator: ", ")))")
        }
        return ONNXModel(path: path, irVersion: m.ir_version, opsetImports: opsets,
                         producerName: try string(m.producer_name, "producer_name"),
                         producerVersion: try string(m.producer_version, "producer_version"),
                         graph: try self.graph(graph))
    }

    func graph(_ proto: UnsafeMutablePointer<Onnx__GraphProto>) throws -> ONNXGraph {
        let g = proto.pointee
        guard g.n_sparse_initializer == 0 else {
            throw invalid("graph has \(g.n_sparse_initializer) sparse initializers, which are not supported")
        }
        // Initializers: unique names; each is a value source.
        var initializers: [ONNXInitializer] = []
        initializers.reserveCapacity(g.n_initializer)
        var producer: [String: String] = [:]  // value name -> what produces it (for messages)
        for i in 0..<g.n_initializer {
            let t = try element(g.initializer, i, "initializer \(i)")
            let name = try string(t.pointee.name, "name of initializer \(i)")
            guard !name.isEmpty else { throw invalid("initializer \(i) has no name") }
            guard producer.updateValue("initializer", forKey: name) == nil else {
                throw invalid("duplicate initializer name '\(name)'")
            }
            initializers.append(ONNXInitializer(name: name, tensor: try tensors.decode(t, what: "initializer '\(name)'")))
        }
        // Inputs: an input that is also an initializer (files from before IR 4 list them so)
        // is a default value, not something a caller feeds.
        var inputs: [ONNXValueInfo] = []
        for i in 0..<g.n_input {
            let v = try valueInfo(try element(g.input, i, "graph input \(i)"), "graph input \(i)")
            if producer[v.name] == "initializer" { continue }
            guard producer.updateValue("graph input", forKey: v.name) == nil else {
                throw invalid("duplicate graph input '\(v.name)'")
            }
            inputs.append(v)
        }
        var nodes: [ONNXNode] = []
        nodes.reserveCapacity(g.n_node)
        for i in 0..<g.n_node {
            let node = try self.node(try element(g.node, i, "node \(i)"), index: i)
            // Topological order (required by the spec): every input is already defined.
            for input in node.inputs where !input.isEmpty && producer[input] == nil {
                throw invalid("node '\(node.name)' (\(node.opType)): input '\(input)' is not a graph input, an initializer or the output of an earlier node")
            }
            for output in node.outputs where !output.isEmpty {
                if let first = producer.updateValue("node '\(node.name)'", forKey: output) {
                    throw invalid("value '\(output)' is produced twice: by \(first) and by node '\(node.name)' (\(node.opType))")
                }
            }
            nodes.append(node)
        }
        var outputs: [ONNXValueInfo] = []
        for i in 0..<g.n_output {
            let v = try valueInfo(try element(g.output, i, "graph output \(i)"), "graph output \(i)")
            guard producer[v.name] != nil else { throw invalid("graph output '\(v.name)' is not produced by any node, initializer or input") }
            outputs.append(v)
        }
        guard !outputs.isEmpty else { throw invalid("graph has no outputs") }
        return ONNXGraph(name: try string(g.name, "graph name"), nodes: nodes, initializers: initializers,
                         inputs: inputs, outputs: outputs)
    }

    func valueInfo(_ proto: UnsafeMutablePointer<Onnx__ValueInfoProto>, _ what: String) throws -> ONNXValueInfo {
        let v = proto.pointee
        let name = try string(v.name, "name of \(what)")
        guard !name.isEmpty else { throw invalid("\(what) has no name") }
        guard let type = v.type else { return ONNXValueInfo(name: name, elementType: nil, shape: nil) }
        // Only tensor-typed inputs and outputs exist in the models this importer runs.
        guard type.pointee.value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, let tt = type.pointee.tensor_type else {
            if type.pointee.value_case == ONNX__TYPE_PROTO__VALUE__NOT_SET {
                return ONNXValueInfo(name: name, elementType: nil, shape: nil)
            }
            throw invalid("\(what) '\(name)' is not a tensor (TypeProto case \(type.pointee.value_case.rawValue)); only tensor inputs and outputs are supported")
        }
        let elem = tt.pointee.has_elem_type != 0 ? ONNXDataType.dtype(tt.pointee.elem_type) : nil
        guard let shape = tt.pointee.shape else { return ONNXValueInfo(name: name, elementType: elem, shape: nil) }
        var dims: [ONNXDim] = []
        for i in 0..<shape.pointee.n_dim {
            let d = try element(shape.pointee.dim, i, "dimension \(i) of \(what) '\(name)'").pointee
            switch d.value_case {
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE:
                guard d.dim_value >= 0 else { throw invalid("\(what) '\(name)': dimension \(i) is negative (\(d.dim_value))") }
                dims.append(.value(d.dim_value))
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM:
                let p = try string(d.dim_param, "dimension \(i) of \(what) '\(name)'")
                dims.append(p.isEmpty ? .unknown : .param(p))
            default:
                dims.append(.unknown)
            }
        }
        return ONNXValueInfo(name: name, elementType: elem, shape: dims)
    }

    func node(_ proto: UnsafeMutablePointer<Onnx__NodeProto>, index: Int) throws -> ONNXNode {
        let n = proto.pointee
        let opType = try string(n.op_type, "op_type of node \(index)")
        guard !opType.isEmpty else { throw invalid("node \(index) has no op_type") }
        var name = try string(n.name, "name of node \(index)")
        if name.isEmpty { name = "\(opType)#\(index)" }
        let domain = try string(n.domain, "domain of node '\(name)'")
        var inputs: [String] = []
        for i in 0..<n.n_input {
            guard let p = n.input?[i] else { throw invalid("node '\(name)': input \(i) is missing (malformed protobuf)") }
            inputs.append(try string(p, "input \(i) of node '\(name)'"))
        }
        var outputs: [String] = []
        for i in 0..<n.n_output {
            guard let p = n.output?[i] else { throw invalid("node '\(name)': output \(i) is missing (malformed protobuf)") }
            outputs.append(try string(p, "output \(i) of node '\(name)'"))
        }
        var attributes: [String: ONNXAttribute] = [:]
        for i in 0..<n.n_attribute {
            let a = try element(n.attribute, i, "attribute \(i) of node '\(name)'")
            let (key, value) = try attribute(a, node: name, opType: opType)
            guard attributes.updateValue(value, forKey: key) == nil else {
                throw invalid("node '\(name)' (\(opType)): duplicate attribute '\(key)'")
            }
        }
        return ONNXNode(name: name, opType: opType, domain: domain == "ai.onnx" ? "" : domain,
                        inputs: inputs, outputs: outputs, attributes: attributes)
    }

    func attribute(_ proto: UnsafeMutablePointer<Onnx__AttributeProto>, node: String, opType: String) throws -> (String, ONNXAttribute) {
        let a = proto.pointee
        let name = try string(a.name, "attribute name in node '\(node)'")
        let what = "node '\(node)' (\(opType)): attribute '\(name)'"
        guard !name.isEmpty else { throw invalid("node '\(node)' (\(opType)): an attribute has no name") }
        if let ref = a.ref_attr_name, ref.pointee != 0 {
            throw invalid("\(what) refers to a function attribute (ref_attr_name), which is only allowed inside functions")
        }
        guard a.has_type != 0 else { throw invalid("\(what) has no type (AttributeProto.type is required since IR version 2)") }
        // AttributeProto.AttributeType codes (Formats/onnx.proto).
        switch a.type.rawValue {
        case 1: return (name, .float(a.f))
        case 2: return (name, .int(a.i))
        case 3: return (name, .string(try bytesString(a.s, what)))
        case 4:
            guard let t = a.t else { throw invalid("\(what) has type TENSOR but no tensor") }
            return (name, .tensor(try tensors.decode(t, what: "tensor of \(what)")))
        case 5, 10:
            throw invalid("\(what) is a graph (\(a.type.rawValue == 5 ? "GRAPH" : "GRAPHS")); control flow with subgraphs is not supported")
        case 6:
            guard a.n_floats == 0 || a.floats != nil else { throw invalid("\(what): floats pointer is missing") }
            return (name, .floats((0..<a.n_floats).map { a.floats[$0] }))
        case 7:
            guard a.n_ints == 0 || a.ints != nil else { throw invalid("\(what): ints pointer is missing") }
            return (name, .ints((0..<a.n_ints).map { a.ints[$0] }))
        case 8:
            guard a.n_strings == 0 || a.strings != nil else { throw invalid("\(what): strings pointer is missing") }
            return (name, .strings(try (0..<a.n_strings).map { try bytesString(a.strings[$0], what) }))
        case 9: throw invalid("\(what) is a list of tensors (TENSORS), which is not supported")
        case 11, 12: throw invalid("\(what) is a sparse tensor, which is not supported")
        case 13, 14: throw invalid("\(what) is a type (TYPE_PROTO), which is not supported")
        default: throw invalid("\(what) has unknown attribute type \(a.type.rawValue)")
        }
    }

    /// A `bytes` attribute value as UTF-8 text.
    func bytesString(_ b: ProtobufCBinaryData, _ what: String) throws -> String {
        guard b.len > 0 else { return "" }
        guard let p = b.data else { throw invalid("\(what): string data pointer is missing") }
        guard let s = String(validating: UnsafeBufferPointer(start: p, count: b.len), as: UTF8.self) else {
            throw invalid("\(what) is not valid UTF-8")
        }
        return s
    }
}
