#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Dispatch
import DicoCore
import DicoFormat
import DicoIR
import DicoModel
import DicoPasses
import DicoQuant

/// What to convert to, and how.
public struct ConversionOptions: Sendable {
    public var precision: Precision
    public var keep: [NamePattern]
    public var threads: Int
    public var overwrite: Bool
    /// Tool version recorded in provenance.
    public var toolVersion: String
    /// The graph passes, in order (`PassManager.defaultPipeline` unless chosen; empty for
    /// `--no-optimize`).
    public var passes: [any GraphPass]
    /// Called after each pass with its name and the graph (`--dump-ir-after`).
    public var afterPass: (@Sendable (String, Graph) -> Void)?
    /// Run the executor before and after each pass and stop at the first that moves the
    /// output (`--check-passes`).
    public var checkPasses: Bool
    /// A verification summary to record in the provenance under `verification`
    /// (`convert --verify`).
    public var verification: JSONValue?
    /// The pass options the user gave (`--passes`, `--skip-pass`, `--dump-ir-after`,
    /// `--check-passes`): a graph no DiCo pass applies to refuses them rather than ignore them.
    public var passOptionsGiven: [String] = []

    public init(precision: Precision, keep: [NamePattern] = [], threads: Int, overwrite: Bool, toolVersion: String,
                passes: [any GraphPass] = PassManager.defaultPipeline, afterPass: (@Sendable (String, Graph) -> Void)? = nil,
                checkPasses: Bool = false, verification: JSONValue? = nil) {
        self.precision = precision
        self.keep = keep
        self.threads = threads
        self.overwrite = overwrite
        self.toolVersion = toolVersion
        self.passes = passes
        self.afterPass = afterPass
        self.checkPasses = checkPasses
        self.verification = verification
    }
}

/// What a conversion did, for the summary screen.
public struct ConversionSummary: Sendable {
    /// Remarks to print with the summary (for a generic ONNX graph: that DiCo passes did not
    /// apply, and why).
    public var notes: [String] = []
    /// For a generic ONNX graph converted below float32: the drift measured on a seeded input.
    public var drift: GenericONNXDrift?
    public let inputBytes: Int
    public let outputBytes: Int
    /// Tensors and bytes by storage dtype tag in the output.
    public let tensorsByDType: [String: Int]
    public let bytesByDType: [String: Int]
    /// Weights quantized or converted below float32, and those kept in float32.
    public let converted: Int
    public let kept: Int
    public let seconds: Double
}

/// Converts a DiCo safetensors model to `.dico`: streams each tensor from the mapped input
/// through its storage plan (DicoQuant) into the writer, hashing the input alongside.
public enum Converter {
    /// Converts `input` to `output`.
    /// - Parameter progress: called serially with (bytes of output written, total bytes).
    /// - Throws: `DicoError.invalidInput` for an input that is not a valid DiCo or a tensor
    ///   that overflows fp16 (naming it and the `--keep` that avoids it); `DicoError(.usage)`
    ///   when the output exists without `overwrite`; `DicoError.io` for read or write failures.
    ///   Nothing is left at `output` on failure, and an existing file there is untouched.
    public static func convert(input: String, output: String, options: ConversionOptions,
                               progress: ((Int, Int) -> Void)? = nil) throws -> ConversionSummary {
        let start = monotonicSeconds()
        if DicoFile.hasMagic(input) {
            throw DicoError(.usage, "\(input): is already a .dico file; convert from the original safetensors or ONNX model")
        }
        let model: LoadedModel
        switch try LoadedModel.openAny(input, checkValues: false) {
        case let .dico(m): model = m
        case let .genericONNX(g): return try GenericONNXConversion.convert(g, output: output, options: options, start: start, progress: progress)
        }
        guard let weights = model.weights else {
            throw DicoError(.internalError, "\(input): a DiCo model opened for conversion has no weights")
        }
        let policy = QuantPolicy(precision: options.precision, keep: options.keep)

        // The source hash runs beside the conversion, reading with pread so it adds no
        // resident memory.
        // An ONNX export's weights may live in external data files: each is hashed too.
        let hashes = SourceHashes(input: input, size: model.sourceSize, external: model.externalFiles)

        let nonFinite = NameList()
        var jobs: [DicoTensorJob] = []
        var converted = 0, kept = 0
        let checker = options.checkPasses ? try DifferentialCheck(original: model.graph, config: model.config, threads: options.threads) : nil
        let (graph, applied) = try PassManager(passes: options.passes).run(model.graph) { name, changed, g in
            if changed { try checker?.check(pass: name, graph: g) }
            options.afterPass?(name, g)
        }
        for id in graph.constantIDs {
            let name = graph[id].name
            guard let src = graph.constant(id) else { continue }
            let plan = src.dtype.isFloat ? policy.plan(name: name, shape: src.shape) : .f32
            if plan == .f32 { kept += 1 } else { converted += 1 }
            jobs.append(job(name: name, source: src, plan: plan, file: input, nonFinite: nonFinite))
        }
        let (total, tensorsByDType, bytesByDType) = Converter.tally(jobs)

        let modelJSON: JSONValue = .object([
            ("architecture", .string("DiCo")), ("preset", .string(model.config.preset?.displayName ?? "custom")),
            ("config", model.config.json), ("parameters", .integer(model.config.parameterCount)),
        ])
        // The header reserves the digest's 64 hex digits; the real digest replaces them once the
        // hash (running meanwhile) is done. The size comes from the mapping, so a file that
        // changed while it was read is caught by the hasher's byte count.
        let sourceSize = model.sourceSize
        defer { hashes.wait() }
        let (placeholder, finalProvenance) = hashes.provenances(nonFinite: nonFinite, nonFiniteError: { bad in
            // The same message recognition gives when it scans values itself.
            DiCoRecognizer.invalidStateDict(file: input, config: model.config,
                                            problems: bad.map { DiCoRecognizer.nonFiniteProblem(weights.strippedPrefix + $0) })
        }, make: { digest, external in
            provenance(input: input, format: model.format.rawValue, size: sourceSize, sha256: digest, external: external,
                       policy: policy, options: options, passes: applied, converted: converted, kept: kept,
                       strippedPrefix: weights.strippedPrefix)
        })
        try DicoWriter.write(to: output, overwrite: options.overwrite, model: modelJSON, graph: graph, provenance: placeholder,
                             jobs: jobs, threads: options.threads, progress: { progress?($0, total) },
                             finalProvenance: finalProvenance)
        var st = stat()
        let outBytes = stat(output, &st) == 0 ? Int(st.st_size) : 0
        return ConversionSummary(inputBytes: sourceSize + model.externalFiles.reduce(0) { $0 + $1.size }, outputBytes: outBytes, tensorsByDType: tensorsByDType, bytesByDType: bytesByDType,
                                 converted: converted, kept: kept, seconds: monotonicSeconds() - start)
    }

    /// The bytes the jobs write, and their tensors and bytes by storage dtype (safetensors
    /// spelling), for the progress total and the summary.
    static func tally(_ jobs: [DicoTensorJob]) -> (total: Int, tensorsByDType: [String: Int], bytesByDType: [String: Int]) {
        var bytesByDType: [String: Int] = [:], tensorsByDType: [String: Int] = [:], total = 0
        for o in jobs.flatMap(\.tensors) {
            bytesByDType[o.dtype.safetensorsName, default: 0] += o.byteCount
            tensorsByDType[o.dtype.safetensorsName, default: 0] += 1
            total += o.byteCount
        }
        return (total, tensorsByDType, bytesByDType)
    }

    /// `paths` (as resolved by the ONNX reader) relative to the folder of `model`, as the model
    /// names them; computed once, so the placeholder and the final provenance agree byte for byte.
    static func relativeNames(_ paths: [String], to model: String) -> [String] {
        guard !paths.isEmpty else { return [] }
        let slash = model.lastIndex(of: "/")
        let dir = slash.map { $0 == model.startIndex ? "/" : String(model[..<$0]) } ?? "."
        let folder = realpath(dir, nil).map { p in defer { free(p) }; return String(cString: p) } ?? dir
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        return paths.map { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : $0 }
    }

    static func provenance(input: String, format: String, size: Int, sha256: String, external: [(file: String, size: Int, sha256: String)],
                           policy: QuantPolicy, options: ConversionOptions, passes: [String],
                           converted: Int, kept: Int, strippedPrefix: String,
                           generic: (quantization: [(key: String, value: JSONValue)], members: [(key: String, value: JSONValue)])? = nil) -> JSONValue {
        let file = input.split(separator: "/").last.map(String.init) ?? input
        var quant: [(key: String, value: JSONValue)] = [
            ("precision", .string(policy.precision.rawValue)),
            ("keep", .array(policy.keepDescription.map { .string($0) })),
            ("converted_tensors", .integer(converted)), ("float32_tensors", .integer(kept)),
        ]
        if policy.precision == .int8 {
            quant.insert(("scheme", .string(Quantization.Scheme.int8SymmetricPerChannel.rawValue)), at: 1)
            // A generic ONNX graph has no names kept by default: its rule is by consumer op.
            if generic == nil { quant.append(("default_keep", .array(QuantPolicy.int8DefaultKeep.map { .string($0) }))) }
        }
        quant += generic?.quantization ?? []
        var source: [(key: String, value: JSONValue)] = [
            ("file", .string(file)), ("format", .string(format)), ("size", .integer(size)),
            ("sha256", .string(sha256)), ("stripped_prefix", .string(strippedPrefix)),
        ]
        if !external.isEmpty {
            source.append(("external_data", .array(external.map { e in
                .object([("file", .string(e.file)), ("size", .integer(e.size)), ("sha256", .string(e.sha256))])
            })))
        }
        var members: [(key: String, value: JSONValue)] = [
            ("tool", .string("dico-convert")), ("tool_version", .string(options.toolVersion)),
            ("source", .object(source)),
            ("passes", .array(passes.map { .string($0) })),
            ("quantization", .object(quant)),
        ]
        members += generic?.members ?? []
        if let v = options.verification { members.append(("verification", v)) }
        return .object(members)
    }

    /// The writer job for one source tensor under `plan`: one output tensor, or an int8
    /// tensor and its scales. Source floats are widened if needed (a float32 aligned source
    /// is read in place) and checked for NaN and Inf on the way: recognition skipped that
    /// scan so the input is read once; a bad tensor is recorded and the write fails before
    /// it commits. The source pages are released afterwards.
    ///
    /// For generic ONNX graphs: `axis` is the int8 channel axis (scales named `scalesName`), and
    /// with `finiteRequired` false float32 and fp16/bf16 tensors may hold NaN and Inf (converted
    /// as IEEE says; an ONNX mask constant holds -Inf); int8 always needs finite values.
    static func job(name: String, source: TensorData, plan: StoragePlan, file: String, nonFinite: NameList,
                    axis: Int = 0, scalesName: String? = nil, finiteRequired: Bool = true) -> DicoTensorJob {
        let n = source.elementCount
        func withFloats(_ body: (UnsafePointer<Float>) throws -> Bool) rethrows {
            defer { release(source) }
            if source.dtype == .f32, let p = source.bytes.baseAddress, Int(bitPattern: p) % 4 == 0 {
                if try !body(p.assumingMemoryBound(to: Float.self)) { nonFinite.add(name) }
                return
            }
            let tmp = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            defer { tmp.deallocate() }
            convertToFloat32(source, into: tmp)
            if try !body(tmp) { nonFinite.add(name) }
        }
        func overflow(_ index: Int, _ what: String, _ value: Float) -> DicoError {
            DicoError.invalid(file, "tensor '\(name)': value \(value) at flat index \(index) overflows \(what); keep the tensor in float32 with --keep '\(name)'")
        }
        switch plan {
        case .f32:
            return DicoTensorJob([DicoTensorOutput(name: name, dtype: .f32, shape: source.shape)]) { bufs in
                withFloats { p in
                    bufs[0].baseAddress!.copyMemory(from: p, byteCount: n * 4)
                    return !finiteRequired || Quantizers.nonFiniteCount(p, count: n) == 0
                }
            }
        case .f16, .bf16:
            let half = plan == .f16
            return DicoTensorJob([DicoTensorOutput(name: name, dtype: half ? .f16 : .bf16, shape: source.shape)]) { bufs in
                try withFloats { p in
                    guard !finiteRequired || Quantizers.nonFiniteCount(p, count: n) == 0 else { return false }
                    let dst = bufs[0].baseAddress!.assumingMemoryBound(to: UInt16.self)
                    if let i = half ? Quantizers.toF16(p, count: n, into: dst) : Quantizers.toBF16(p, count: n, into: dst) {
                        throw overflow(i, half ? "fp16 (largest finite 65504)" : "bf16", p[i])
                    }
                    return true
                }
            }
        case .int8PerChannel:
            let rows = source.shape[axis], cols = n / max(rows, 1)
            let outer = source.shape[..<axis].reduce(1, *)
            let scalesName = scalesName ?? name + "#scale"
            return DicoTensorJob([
                DicoTensorOutput(name: name, dtype: .i8, shape: source.shape, quantization: (.int8SymmetricPerChannel, axis, scalesName)),
                DicoTensorOutput(name: scalesName, dtype: .f32, shape: [rows]),
            ]) { bufs in
                let q = bufs[0].baseAddress!.assumingMemoryBound(to: Int8.self), scales = bufs[1].baseAddress!.assumingMemoryBound(to: Float.self)
                return withFloats { p in
                    guard outer > 1 else { return Quantizers.int8PerRow(p, rows: rows, cols: cols, q: q, scales: scales) }
                    return int8AlongAxis(p, outer: outer, channels: rows, inner: cols / outer, q: q, scales: scales)
                }
            }
        }
    }

    /// `Quantizers.int8PerRow` along a middle axis of [outer, channels, inner]: each channel's
    /// values gathered into one row, quantized, and scattered back (the rule is per value
    /// given its channel's maximum, so the order of the values does not change any result).
    static func int8AlongAxis(_ p: UnsafePointer<Float>, outer: Int, channels: Int, inner: Int,
                              q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float>) -> Bool {
        let cols = outer * inner, n = channels * cols
        let rows = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
        let qRows = UnsafeMutablePointer<Int8>.allocate(capacity: max(n, 1))
        defer { rows.deallocate(); qRows.deallocate() }
        for o in 0..<outer {
            for c in 0..<channels {
                (rows + c * cols + o * inner).update(from: p + (o * channels + c) * inner, count: inner)
            }
        }
        let finite = Quantizers.int8PerRow(rows, rows: channels, cols: cols, q: qRows, scales: scales)
        for o in 0..<outer {
            for c in 0..<channels {
                (q + (o * channels + c) * inner).update(from: qRows + c * cols + o * inner, count: inner)
            }
        }
        return finite
    }

    /// The writer job for a tensor stored byte for byte as it is (a non-float32 initializer, a
    /// `Constant`'s tensor in a generic ONNX graph).
    static func rawJob(name: String, source: TensorData, file: String) -> DicoTensorJob {
        DicoTensorJob([DicoTensorOutput(name: name, dtype: source.dtype, shape: source.shape)]) { bufs in
            defer { release(source) }
            guard source.byteCount == bufs[0].count else {
                throw DicoError.invalid(file, "tensor '\(name)': \(source.byteCount) bytes for shape \(source.shape) of \(source.dtype.rawValue)")
            }
            if source.byteCount > 0 { bufs[0].baseAddress!.copyMemory(from: source.bytes.baseAddress!, byteCount: source.byteCount) }
        }
    }

    /// Drops a mapped source tensor's pages from our resident set once it is converted.
    static func release(_ t: TensorData) {
        if case let .mapped(file, offset) = t.storage { file.release(offset: offset, count: t.byteCount) }
    }
}

/// Names collected from several threads.
final class NameList: @unchecked Sendable {
    private let lock = Lock()
    private var names: [String] = []
    func add(_ n: String) { lock.locked { names.append(n) } }
    var sorted: [String] { lock.locked { names.sorted() } }
}

/// The SHA-256 of a model file and of its external data files, each computed on a background
/// thread beside the conversion.
final class SourceHashes: @unchecked Sendable {
    let input: String, size: Int
    let files: [(path: String, size: Int)]
    private let main: SourceHasher
    private let external: [SourceHasher]

    /// Starts hashing `input` (`size` bytes, as mapped) and the `external` files.
    init(input: String, size: Int, external files: [(path: String, size: Int)]) {
        self.input = input
        self.size = size
        self.files = files
        main = SourceHasher(path: input)
        external = files.map { SourceHasher(path: $0.path) }
        main.start()
        external.forEach { $0.start() }
    }

    /// The provenance of a conversion's output in the two forms the writer needs: `placeholder`
    /// with zero digests, for the header it writes while the hashes still run, and `final`,
    /// called once the tensors are written, which refuses the output if a tensor job found a
    /// NaN or Inf (`nonFiniteError` words that for the caller's kind of model, given the
    /// sorted names) and otherwise waits for the digests. `make` builds the provenance from
    /// the source digest and the external files (named relative to the input's folder).
    func provenances(nonFinite: NameList, nonFiniteError: @escaping ([String]) -> Error,
                     make: @escaping (_ sha256: String, _ external: [(file: String, size: Int, sha256: String)]) -> JSONValue)
        -> (placeholder: JSONValue, final: () throws -> JSONValue) {
        let names = Converter.relativeNames(files.map(\.path), to: input)
        let files = self.files
        let external = { (digests: [String]) in files.indices.map { (file: names[$0], size: files[$0].size, sha256: digests[$0]) } }
        let zeros = String(repeating: "0", count: 64)
        let placeholder = make(zeros, external(files.map { _ in zeros }))
        return (placeholder, {
            let bad = nonFinite.sorted
            guard bad.isEmpty else { throw nonFiniteError(bad) }
            let (digest, digests) = try self.digests()
            return make(digest, external(digests))
        })
    }

    /// Waits for every hash: the model's digest and the external files', in order.
    /// - Throws: `DicoError.io` when a file cannot be read or changed size while it was read.
    func digests() throws -> (String, [String]) {
        let (n, digest) = try main.finish()
        guard n == size else { throw DicoError.io(input, "the file changed while it was converted") }
        var digests: [String] = []
        for (h, f) in zip(external, files) {
            let (n, d) = try h.finish()
            guard n == f.size else { throw DicoError.io(f.path, "the file changed while it was converted") }
            digests.append(d)
        }
        return (digest, digests)
    }

    /// Waits for every hash, whatever its outcome (before returning after another error).
    func wait() {
        _ = try? main.finish()
        for h in external { _ = try? h.finish() }
    }
}

/// SHA-256 of a file computed on a background thread with pread (no mapping, so no resident
/// memory beyond one buffer).
final class SourceHasher: @unchecked Sendable {
    let path: String
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<(Int, String), Error> = .failure(DicoError(.internalError, "hash not started"))
    private var cancelled = false

    init(path: String) { self.path = path }

    func start() {
        DispatchQueue.global().async { [self] in
            result = Result { try hash() }
            done.signal()
        }
    }

    /// Waits for the hash: (size in bytes, lower-case hex SHA-256).
    func finish() throws -> (Int, String) {
        done.wait()
        done.signal()   // later calls return at once
        return try result.get()
    }

    private func hash() throws -> (Int, String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DicoError.io(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var h = SHA256()
        let size = 8 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        defer { buf.deallocate() }
        var total = 0
        while true {
            let n = read(fd, buf.baseAddress, size)
            if n < 0 {
                if errno == EINTR { continue }
                throw DicoError.io(path, "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            h.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            total += n
        }
        let digest = h.finalize()
        return (total, digest.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined())
    }
}
