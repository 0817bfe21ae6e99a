#if canImport(Glibc)
import Glibc
#endif
import DicoCore
import DicoFormat
import DicoONNX
import DicoQuant

/// Conversion of an ONNX graph that is not DiCo to a generic-graph `.dico` (Formats/DICO.md,
/// "Generic ONNX graphs"): the graph as written, its initializers stored by
/// `GenericONNXPolicy`, no DiCo pass. Below float32 the written file is run against the
/// original before it replaces the output (`GenericONNXDrift`).
enum GenericONNXConversion {
    /// Converts `model` (an `.onnx` file) to `output`, as `Converter.convert` does a DiCo.
    /// - Throws: as `Converter.convert`; `DicoError.invalidInput` for an int8 weight holding NaN
    ///   or Inf, an fp16 overflow, or a drift check that cannot run or sees NaN/Inf (nothing is
    ///   written then, and an existing `output` is untouched).
    static func convert(_ model: GenericONNXModel, output: String, options: ConversionOptions, start: Double,
                        progress: ((Int, Int) -> Void)?) throws -> ConversionSummary {
        let onnx = model.onnx, input = onnx.path
        guard options.passOptionsGiven.isEmpty else {
            throw DicoError(.usage, "\(input): \(options.passOptionsGiven.joined(separator: ", ")) choose DiCo graph passes, and none applies to this graph: \(model.note)")
        }
        let policy = QuantPolicy(precision: options.precision, keep: options.keep)
        let decisions = GenericONNXPolicy.decide(onnx.graph, policy: policy)
        let hashes = SourceHashes(input: input, size: model.sourceSize, external: model.externalFiles)
        defer { hashes.wait() }

        // Table names: initializers keep theirs, tensor attributes get theirs, scales take
        // `<name>#scale` (more `#` while that is taken).
        let attributes = ONNXGraphJSON.attributeTensors(onnx.graph)
        var taken = Set(onnx.graph.initializers.map(\.name) + attributes.map(\.name))
        let nonFinite = NameList()
        var jobs: [DicoTensorJob] = []
        var converted = 0, kept = 0, asStored = 0
        var reasons: [GenericONNXPolicy.Reason: Int] = [:]
        for i in onnx.graph.initializers {
            let decision = decisions[i.name] ?? .asStored
            switch decision {
            case .asStored:
                asStored += 1
                jobs.append(Converter.rawJob(name: i.name, source: i.tensor, file: input))
            case let .float32(reason):
                kept += 1
                reasons[reason, default: 0] += 1
                jobs.append(Converter.job(name: i.name, source: i.tensor, plan: .f32, file: input, nonFinite: nonFinite, finiteRequired: false))
            case .f16, .bf16:
                converted += 1
                jobs.append(Converter.job(name: i.name, source: i.tensor, plan: decision == .f16 ? .f16 : .bf16, file: input,
                                          nonFinite: nonFinite, finiteRequired: false))
            case let .int8(axis):
                converted += 1
                var scales = i.name + "#scale"
                while taken.contains(scales) { scales += "#" }
                taken.insert(scales)
                jobs.append(Converter.job(name: i.name, source: i.tensor, plan: .int8PerChannel, file: input, nonFinite: nonFinite,
                                          axis: axis, scalesName: scales))
            }
        }
        for a in attributes {
            asStored += 1
            jobs.append(Converter.rawJob(name: a.name, source: a.tensor, file: input))
        }
        let (total, tensorsByDType, bytesByDType) = Converter.tally(jobs)

        let parameters = onnx.graph.initializers.reduce(0) { $0 + $1.tensor.elementCount }
        let modelJSON: JSONValue = .object([("architecture", .string("onnx")), ("parameters", .integer(parameters))])
        let note = "DiCo recognition and graph passes did not apply: \(model.whyNotDiCo)"
        var quantization: [(key: String, value: JSONValue)] = [("stored_as_is_tensors", .integer(asStored))]
        let shownReasons: [GenericONNXPolicy.Reason] = switch policy.precision {
        case .fp32: []
        case .fp16, .bf16: [.keep]
        case .int8: [.keep, .notAWeight, .axisConflict]
        }
        if !shownReasons.isEmpty {
            quantization.append(("float32_reasons", .object(shownReasons.map { ($0.rawValue, .integer(reasons[$0] ?? 0)) })))
        }
        let generic = (quantization: quantization, members: [(key: String, value: JSONValue)]([("not_dico", .string(model.whyNotDiCo)), ("note", .string(note))]))
        let sourceSize = model.sourceSize
        let (placeholder, finalProvenance) = hashes.provenances(nonFinite: nonFinite, nonFiniteError: { bad in
            DicoError.invalid(input, "initializer\(bad.count == 1 ? "" : "s") \(bad.map { "'\($0)'" }.joined(separator: ", ")) \(bad.count == 1 ? "holds" : "hold") NaN or Inf, which int8 cannot quantize; keep \(bad.count == 1 ? "it" : "them") in float32 with --keep")
        }, make: { digest, external in
            Converter.provenance(input: input, format: LoadedModel.Format.onnx.rawValue, size: sourceSize, sha256: digest, external: external,
                                 policy: policy, options: options, passes: [], converted: converted, kept: kept,
                                 strippedPrefix: "", generic: generic)
        })

        var drift: GenericONNXDrift?
        try DicoWriter.write(to: output, overwrite: options.overwrite, model: modelJSON, onnx: onnx, provenance: placeholder,
                             jobs: jobs, threads: options.threads, progress: { progress?($0, total) },
                             finalProvenance: finalProvenance,
                             beforeCommit: { temporary in
                                 guard policy.precision != .fp32 else { return }
                                 // The file as written, read back; its errors name the output, not the temporary.
                                 let written: ONNXModel
                                 do {
                                     guard let m = try DicoFile(path: temporary).onnxModel else {
                                         throw DicoError(.internalError, "\(output): the written file holds no ONNX graph")
                                     }
                                     written = m
                                 } catch let e as DicoError where e.kind == .invalidInput {
                                     throw DicoError(.internalError, "\(output): the written file does not read back: \(e.message)")
                                 }
                                 let readBack = ONNXModel(path: output, irVersion: written.irVersion, opsetImports: written.opsetImports,
                                                          producerName: written.producerName, producerVersion: written.producerVersion,
                                                          graph: written.graph)
                                 drift = try GenericONNXDrift.measure(original: onnx, converted: readBack, what: policy.precision.rawValue,
                                                                      threads: options.threads)
                             })
        var st = stat()
        let outBytes = stat(output, &st) == 0 ? Int(st.st_size) : 0
        var summary = ConversionSummary(inputBytes: sourceSize + model.externalFiles.reduce(0) { $0 + $1.size }, outputBytes: outBytes,
                                        tensorsByDType: tensorsByDType, bytesByDType: bytesByDType, converted: converted, kept: kept,
                                        seconds: monotonicSeconds() - start)
        summary.notes = [note]
        summary.drift = drift
        return summary
    }
}
