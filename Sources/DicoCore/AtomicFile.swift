#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a file so that readers see either the old target or the complete new one, never a
/// partial file: bytes go to a temporary file in the target's directory (so the final
/// `rename(2)` stays on one filesystem and is atomic), which `commit()` fsyncs and renames over
/// the target. A writer that is neither committed nor aborted removes its temporary on deinit.
///
/// Not thread-safe: use one writer from one thread at a time.
public final class AtomicFileWriter {
    /// The target path (named in every error message).
    public let path: String
    /// The temporary file being written, `.<target name>.tmp-<pid>-<random>` next to the target.
    public let temporaryPath: String
    private let overwrite: Bool
    private var fd: Int32
    private var finished = false
    private var registrySlot: Int?
    private var buffer: UnsafeMutableRawPointer
    private var buffered = 0
    /// Writes smaller than this are coalesced; larger ones go straight to the file.
    private static let bufferCapacity = 4 << 20

    /// Creates the temporary file for `path`.
    /// - Throws: `DicoError(.usage, "<path>: already exists; pass --force to overwrite")` when
    ///   `overwrite` is false and `path` exists; `DicoError.io` when the temporary file cannot
    ///   be created.
    public init(path: String, overwrite: Bool) throws {
        self.path = path
        self.overwrite = overwrite
        if !overwrite && AtomicFileWriter.exists(path) {
            throw DicoError(.usage, "\(path): already exists; pass --force to overwrite")
        }
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var fd: Int32 = -1
        var tmp = ""
        // O_EXCL with a random suffix: a name clash (another process, a stale temporary) just
        // means trying another name.
        // The name is registered before the file exists, so a signal arriving in between
        // still finds it (unlinking a name that was never created is harmless).
        var slot: Int?
        for _ in 0..<16 {
            let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 16)
            tmp = "\(dir).\(name).tmp-\(getpid())-\(suffix)"
            slot = temporaryRegistry.add(tmp)
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
            if fd >= 0 { break }
            let err = errno
            temporaryRegistry.remove(slot, tmp)
            slot = nil
            errno = err
            if err != EEXIST { break }
        }
        guard fd >= 0 else {
            throw DicoError.io(path, "cannot create temporary file \(tmp): \(AtomicFileWriter.lastError())")
        }
        self.fd = fd
        temporaryPath = tmp
        registrySlot = slot
        buffer = UnsafeMutableRawPointer.allocate(byteCount: AtomicFileWriter.bufferCapacity, alignment: 64)
    }

    deinit {
        if !finished { abort() }
        buffer.deallocate()
    }

    /// Writes `bytes` at absolute file `offset` with pwrite(2), leaving the sequential
    /// position alone. Several threads may call this at once for disjoint ranges. It does not
    /// flush what `write` buffered: call `setLength` (which does) before mixing the two.
    /// - Throws: `DicoError.io` when the OS write fails.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        guard !finished else { throw DicoError(.internalError, "\(path): write after commit or abort") }
        guard var p = bytes.baseAddress, bytes.count > 0 else { return }
        var left = bytes.count, at = offset
        while left > 0 {
            let n = pwrite(fd, p, min(left, 1 << 30), off_t(at))
            if n < 0 {
                if errno == EINTR { continue }
                throw DicoError.io(path, "write failed: \(AtomicFileWriter.lastError())")
            }
            p += n
            left -= n
            at += n
        }
        // Start writing these pages to disk now (on Linux, POSIX_FADV_DONTNEED starts
        // writeback of dirty pages), so that commit's fsync has little left to do: it took
        // 1.4 s for a 0.7 GB file otherwise. A hint: failure changes nothing.
        _ = posix_fadvise(fd, off_t(offset), off_t(bytes.count), POSIX_FADV_DONTNEED)
    }

    /// Sets the file's length (zero bytes past the data written so far), e.g. to reserve
    /// the full size before `write(_:at:)` calls fill it.
    /// - Throws: `DicoError.io` when ftruncate(2) fails.
    public func setLength(_ length: Int) throws {
        try flush()
        guard ftruncate(fd, off_t(length)) == 0 else { throw DicoError.io(path, "cannot set the file length: \(AtomicFileWriter.lastError())") }
    }

    /// Appends `bytes` to the file.
    /// - Throws: `DicoError.io` when the OS write fails (e.g. disk full); `DicoError(.internalError)`
    ///   after `commit()` or `abort()`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard !finished else { throw DicoError(.internalError, "\(path): write after commit or abort") }
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if buffered + bytes.count <= AtomicFileWriter.bufferCapacity {
            (buffer + buffered).copyMemory(from: base, byteCount: bytes.count)
            buffered += bytes.count
            return
        }
        try flush()
        if bytes.count >= AtomicFileWriter.bufferCapacity {
            try writeAll(base, bytes.count)
        } else {
            buffer.copyMemory(from: base, byteCount: bytes.count)
            buffered = bytes.count
        }
    }

    /// Flushes, fsyncs and renames the temporary file over the target, then fsyncs the
    /// directory so the rename itself is durable.
    /// - Throws: `DicoError.io` when flushing, fsync, close or rename fails, or when
    ///   `overwrite` is false and the target appeared while writing (the temporary is removed
    ///   in both cases); `DicoError(.internalError)` after `commit()` or `abort()`.
    public func commit() throws {
        guard !finished else { throw DicoError(.internalError, "\(path): commit after commit or abort") }
        do {
            try flush()
            guard fsync(fd) == 0 else { throw DicoError.io(path, "cannot fsync \(temporaryPath): \(AtomicFileWriter.lastError())") }
            let rc = close(fd)
            fd = -1
            guard rc == 0 else { throw DicoError.io(path, "cannot close \(temporaryPath): \(AtomicFileWriter.lastError())") }
            // Checked again because the target may have been created since init. A small
            // window remains between this check and rename; --force is about intent, not a
            // security boundary.
            if !overwrite && AtomicFileWriter.exists(path) {
                throw DicoError.io(path, "was created by someone else while writing; not overwritten (pass --force to overwrite)")
            }
            guard rename(temporaryPath, path) == 0 else {
                throw DicoError.io(path, "cannot rename \(temporaryPath) over it: \(AtomicFileWriter.lastError())")
            }
        } catch {
            abort()
            throw error
        }
        finished = true
        temporaryRegistry.remove(registrySlot, temporaryPath)
        registrySlot = nil
        syncDirectory()
    }

    /// Discards everything written: closes and removes the temporary file. Safe to call more
    /// than once; does nothing after a successful commit.
    public func abort() {
        guard !finished else { return }
        finished = true
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryPath)
        temporaryRegistry.remove(registrySlot, temporaryPath)
        registrySlot = nil
    }

    /// Builds the temporary-file registry now. Call before installing signal handlers that
    /// use `removeAllTemporaries`: its lazy set-up allocates, which a handler must not do
    /// (an interrupted malloc holds its lock).
    public static func prepareForSignalHandlers() { _ = temporaryRegistry }

    /// Unlinks the temporary file of every live writer in the process. Meant for a SIGINT /
    /// SIGTERM handler that exits right after: it allocates nothing, and only calls
    /// `pthread_mutex_trylock` and `unlink` (if the lock cannot be taken, it goes ahead without
    /// it, as a half-updated slot is still a NUL-terminated path).
    public static func removeAllTemporaries() {
        temporaryRegistry.unlinkAll()
    }

    /// Adds a finished file that is only an intermediate (e.g. a conversion being verified
    /// before the real output is written) to the files `removeAllTemporaries` unlinks, so an
    /// interrupt does not leave it behind. Returns a token for `forgetTemporary`, or nil when
    /// the path does not fit the registry (then only the caller's own cleanup removes it).
    public static func registerTemporary(_ path: String) -> Int? { temporaryRegistry.add(path) }

    /// Takes a path registered with `registerTemporary` out of the registry (call after
    /// removing the file yourself).
    public static func forgetTemporary(_ token: Int?, _ path: String) { temporaryRegistry.remove(token, path) }

    // MARK: - Internals

    private func flush() throws {
        if buffered > 0 {
            try writeAll(UnsafeRawPointer(buffer), buffered)
            buffered = 0
        }
    }

    /// write(2) until everything is out: it may write less than asked, or be interrupted.
    private func writeAll(_ base: UnsafeRawPointer, _ count: Int) throws {
        var done = 0
        while done < count {
            // Linux caps one write at about 2 GiB; stay below it.
            let n = systemWrite(fd, base + done, min(count - done, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                throw DicoError.io(path, "cannot write \(temporaryPath): \(AtomicFileWriter.lastError())")
            }
            if n == 0 { throw DicoError.io(path, "cannot write \(temporaryPath): write returned 0") }
            done += n
        }
    }

    private func syncDirectory() {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd) // best effort: some filesystems refuse fsync on directories
            close(dfd)
        }
    }

    private static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    private static func lastError() -> String { String(cString: strerror(errno)) }
}

/// The temporary paths of live writers, in fixed storage allocated once, so that a signal
/// handler can walk it without allocating or chasing freed memory.
private final class TemporaryRegistry: @unchecked Sendable {
    static let slotCount = 64
    static let slotSize = 4096 // PATH_MAX on Linux, NUL included
    private let storage: UnsafeMutablePointer<CChar>
    private let lock: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        storage = .allocate(capacity: TemporaryRegistry.slotCount * TemporaryRegistry.slotSize)
        storage.initialize(repeating: 0, count: TemporaryRegistry.slotCount * TemporaryRegistry.slotSize)
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    /// Records `path`; returns its slot, or nil when it does not fit (too long, or all slots
    /// busy) — then only the writer's own abort/deinit cleans it up.
    func add(_ path: String) -> Int? {
        let utf8 = Array(path.utf8)
        guard utf8.count < TemporaryRegistry.slotSize, !utf8.contains(0) else { return nil }
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        for slot in 0..<TemporaryRegistry.slotCount {
            let p = storage + slot * TemporaryRegistry.slotSize
            if p[0] != 0 { continue }
            // Write the tail first and the first byte last: the slot reads as empty until the
            // whole path is there.
            for (i, b) in utf8.enumerated().dropFirst() { p[i] = CChar(bitPattern: b) }
            p[utf8.count] = 0
            p[0] = CChar(bitPattern: utf8[0])
            return slot
        }
        return nil
    }

    /// Empties `slot` if it still holds `path` (after `unlinkAll` it may hold another
    /// writer's path).
    func remove(_ slot: Int?, _ path: String) {
        guard let slot else { return }
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        let p = storage + slot * TemporaryRegistry.slotSize
        if String(cString: p) == path { p[0] = 0 }
    }

    func unlinkAll() {
        // A signal may interrupt a thread that holds the lock; never block on it.
        var locked = false
        for _ in 0..<1000 where !locked { locked = pthread_mutex_trylock(lock) == 0 }
        for slot in 0..<TemporaryRegistry.slotCount {
            let p = storage + slot * TemporaryRegistry.slotSize
            if p[0] != 0 {
                unlink(p)
                p[0] = 0
            }
        }
        if locked { pthread_mutex_unlock(lock) }
    }
}

/// `write(2)`; a free function because inside `AtomicFileWriter` the name `write` is the method.
private func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }

/// Process-wide; created on first use (the first writer), never freed.
private let temporaryRegistry = TemporaryRegistry()
