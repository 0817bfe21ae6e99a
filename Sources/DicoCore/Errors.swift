/// The one error type of the toolchain: a category that fixes the exit status, and a
/// message that names the file, the tensor or node, and what is wrong.
public struct DicoError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, in the terms that decide the process exit status.
    public enum Kind: Sendable, Equatable {
        /// The command line was wrong (exit 64, EX_USAGE).
        case usage
        /// An input file is malformed or is not what the command needs (exit 65, EX_DATAERR).
        case invalidInput
        /// Reading or writing a file failed at the OS level (exit 74, EX_IOERR).
        case io
        /// A bug in dico-convert itself (exit 70, EX_SOFTWARE).
        case internalError
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// An `.invalidInput` error about `file`, formatted as `file: message`.
    public static func invalid(_ file: String, _ message: String) -> DicoError {
        DicoError(.invalidInput, "\(file): \(message)")
    }

    /// An `.io` error about `file`, formatted as `file: message`.
    public static func io(_ file: String, _ message: String) -> DicoError {
        DicoError(.io, "\(file): \(message)")
    }

    /// The documented process exit status for this error (see README "Exit status").
    public var exitCode: Int32 {
        switch kind {
        case .usage: return 64
        case .invalidInput: return 65
        case .io: return 74
        case .internalError: return 70
        }
    }

    public var description: String { message }
}
