import DicoCore

// Which ONNX models this importer accepts beyond being well-formed: the default domain only,
// opsets 13 to 21, and the ops that torch exports of DiCo (and small conv nets) contain.
// Fixtures/README.md lists the ops each fixture export holds.

extension ONNXModel {
    /// The `ai.onnx` opset versions the importer accepts (torch exporters emit 13 to 20).
    public static let supportedOpsets: ClosedRange<Int64> = 13...21

    /// Every op the importer accepts, all in the default `ai.onnx` domain: the ops of the
    /// fixture exports (legacy TorchScript exporter at opsets 13 and 17, dynamo exporter at 20,
    /// see Fixtures/README.md) plus close relatives other DiCo exports may use.
    public static let supportedOps: Set<String> = [
        // Compute.
        "Conv", "Gemm", "MatMul", "Gather",
        // Elementwise arithmetic and activations.
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Erf", "Gelu", "Sigmoid", "Tanh", "Relu",
        "Sin", "Cos", "Exp",
        // Types, constants and shapes.
        "Cast", "Constant", "ConstantOfShape", "Shape", "Range", "Where", "Equal", "Identity",
        // Layout.
        "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten", "Slice", "Split", "Concat", "Expand",
        "DepthToSpace", "SpaceToDepth",
        // Reductions and normalization.
        "ReduceMean", "GlobalAveragePool", "LayerNormalization",
    ]

    /// Checks what `parse(path:)` leaves to the caller: an `ai.onnx` opset in
    /// `supportedOpsets`, and only ops of `supportedOps` in the default domain.
    /// - Throws: `DicoError.invalid(path, ...)` naming the opset, or the first node that uses
    ///   an unsupported op or domain (with its op and the model's opset).
    public func validate() throws {
        guard let opset = defaultOpset else {
            throw DicoError.invalid(path, "no opset_import for the default domain ai.onnx")
        }
        guard ONNXModel.supportedOpsets.contains(opset) else {
            throw DicoError.invalid(path, "ai.onnx opset \(opset) is not supported (supported: \(ONNXModel.supportedOpsets.lowerBound) to \(ONNXModel.supportedOpsets.upperBound))")
        }
        for node in graph.nodes {
            guard node.domain.isEmpty else {
                throw DicoError.invalid(path, "node '\(node.name)': op '\(node.opType)' is in domain '\(node.domain)' (opset \(opsetImports[node.domain].map(String.init) ?? "not imported")); only the default domain ai.onnx is supported")
            }
            guard ONNXModel.supportedOps.contains(node.opType) else {
                throw DicoError.invalid(path, "node '\(node.name)': op '\(node.opType)' (ai.onnx opset \(opset)) is not supported")
            }
        }
    }
}
