#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CONNXProto
import DicoCore

// External tensor data (ONNX IR spec, "External Tensor Data"): a TensorProto with
// data_location = EXTERNAL names its bytes with string entries
//   location  a path relative to the model file's folder (required)
//   offset    the first byte in that file (decimal; default 0)
//   length    the number of bytes (decimal; default: the tensor's byte size, as onnxruntime)
//   checksum  a SHA-1 of the bytes (optional; not checked: the format's writers rarely set it)
// Models over 2 GB exist only in this form, so the bytes are never read here: each distinct
// file is mapped once and every tensor becomes a view into the mapping.

/// A validated byte range of a mapped external data file.
struct ExternalRange {
    let file: MappedFile
    let offset: Int
}

/// The external data files of one model, each mapped once (by resolved path) and shared by
/// every tensor that lives in it.
final class ExternalDataFiles {
    /// The model path, for messages.
    let modelPath: String
    /// The model's folder after resolving symlinks; every location must resolve inside it.
    let folder: String
    private var files: [String: MappedFile] = [:]

    /// - Throws: `DicoError.io` when the model's folder cannot be resolved.
    init(modelPath: String) throws {
        self.modelPath = modelPath
        let dir = ExternalDataFiles.dirname(modelPath)
        guard let real = ExternalDataFiles.realpath(dir) else {
            throw DicoError.io(modelPath, "cannot resolve the model's folder '\(dir)': \(String(cString: strerror(errno)))")
        }
        folder = real
    }

    /// Every distinct external file mapped so far, by resolved path.
    var mapped: [String: MappedFile] { files }

    func invalid(_ what: String, _ message: String) -> DicoError {
        DicoError.invalid(modelPath, "\(what): \(message)")
    }

    /// Validates `t`'s external_data entries and maps the file they name.
    /// - Throws: `.invalidInput` for a bad key or value, a location outside the model's folder,
    ///   a range past the end of the file or a length that does not match the shape; `.io` for a
    ///   missing or unreadable file.
    func resolve(_ t: Onnx__TensorProto, what: String, expectedBytes: Int, shapeText: String,
                 typeText: String) throws -> ExternalRange {
        var entries: [String: String] = [:]
        for i in 0..<t.n_external_data {
            guard let e = t.external_data?[i] else { throw invalid(what, "external_data entry \(i) is missing") }
            guard let key = cString(e.pointee.key), let value = cString(e.pointee.value) else {
                throw invalid(what, "external_data entry \(i) has a key or value that is not UTF-8")
            }
            guard ["location", "offset", "length", "checksum"].contains(key) else {
                throw invalid(what, "unknown external_data key '\(key)' (allowed: location, offset, length, checksum)")
            }
            guard entries.updateValue(value, forKey: key) == nil else {
                throw invalid(what, "duplicate external_data key '\(key)'")
            }
        }
        guard let location = entries["location"], !location.isEmpty else {
            throw invalid(what, "data_location is EXTERNAL but external_data has no location")
        }
        let offset = try number(entries["offset"], key: "offset", what: what) ?? 0
        let length = try number(entries["length"], key: "length", what: what)

        guard !location.hasPrefix("/") else {
            throw invalid(what, "external data location '\(location)' is an absolute path; it must be relative to the model's folder")
        }
        guard !location.utf8.contains(0) else {
            throw invalid(what, "external data location contains a NUL byte")
        }
        // Lexical check first, so that '../x' is refused whether or not the file exists.
        var depth = 0
        for part in location.split(separator: "/", omittingEmptySubsequences: true) {
            if part == ".." { depth -= 1 } else if part != "." { depth += 1 }
            guard depth >= 0 else {
                throw invalid(what, "external data location '\(location)' escapes the model's folder")
            }
        }
        let joined = folder + "/" + location
        var st = stat()
        guard stat(joined, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            throw DicoError.io(modelPath, "\(what): external data file '\(location)' (looked for at \(joined)) cannot be opened: \(reason)")
        }
        // Then the resolved path, so that a symlink pointing out of the folder is refused too.
        guard let real = ExternalDataFiles.realpath(joined) else {
            throw DicoError.io(modelPath, "\(what): cannot resolve external data file '\(location)': \(String(cString: strerror(errno)))")
        }
        guard real.hasPrefix(folder == "/" ? "/" : folder + "/") else {
            throw invalid(what, "external data location '\(location)' resolves to \(real), outside the model's folder \(folder)")
        }
        let file: MappedFile
        if let f = files[real] {
            file = f
        } else {
            do {
                file = try MappedFile(path: real)
            } catch let e as DicoError {
                throw DicoError(e.kind, "\(modelPath): \(what): external data file '\(location)': \(e.message)")
            }
            files[real] = file
        }
        let count = length ?? expectedBytes
        guard count == expectedBytes else {
            throw invalid(what, "external data length \(count) does not match shape \(shapeText) x \(typeText) (\(expectedBytes) bytes)")
        }
        let (end, o) = offset.addingReportingOverflow(count)
        guard !o, end <= file.size else {
            throw invalid(what, "external data range [\(offset), \(o ? "overflow" : String(end))) runs past the end of '\(location)' (\(file.size) bytes)")
        }
        return ExternalRange(file: file, offset: offset)
    }

    /// A strict non-negative decimal (digits only, no sign or space), or nil when absent.
    func number(_ text: String?, key: String, what: String) throws -> Int? {
        guard let text else { return nil }
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let v = Int(text) else {
            throw invalid(what, "external_data \(key) '\(text)' is not a non-negative decimal integer")
        }
        return v
    }

    static func dirname(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }

    static func realpath(_ path: String) -> String? {
        #if canImport(Glibc)
        guard let p = Glibc.realpath(path, nil) else { return nil }
        #else
        guard let p = Darwin.realpath(path, nil) else { return nil }
        #endif
        defer { free(p) }
        return String(cString: p)
    }
}

/// A protobuf-c string as a Swift String; nil for a NULL pointer or invalid UTF-8.
func cString(_ p: UnsafePointer<CChar>?) -> String? {
    guard let p else { return nil }
    return String(validatingCString: p)
}
