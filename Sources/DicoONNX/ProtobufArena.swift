#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CProtobufC

/// A bump allocator for one protobuf-c unpack. protobuf-c allocates every message, string and
/// array of the tree separately, and a dynamo export has tens of thousands of them; malloc and
/// free of those were a third of the parse time. Here they come from 1 MB chunks, `free` does
/// nothing, and the whole tree goes at once when the arena does (so `free_unpacked` is not
/// called on a tree unpacked with it).
final class ProtobufArena {
    private static let chunkSize = 1 << 20
    private var chunks: [UnsafeMutableRawPointer] = []
    private var next: UnsafeMutableRawPointer?
    private var remaining = 0

    /// `size` bytes aligned to 16, or nil when malloc fails (protobuf-c then fails the unpack).
    func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        let (rounded, o) = size.addingReportingOverflow(15)
        guard !o else { return nil }
        let n = max(rounded & ~15, 16)
        if n > remaining {
            // A request larger than a chunk (a big bytes field) gets a chunk of its own.
            guard let p = malloc(max(n, ProtobufArena.chunkSize)) else { return nil }
            chunks.append(p)
            if n >= ProtobufArena.chunkSize { return p }
            next = p
            remaining = ProtobufArena.chunkSize
        }
        let p = next!
        next = p + n
        remaining -= n
        return p
    }

    /// A protobuf-c allocator drawing from this arena; valid while the arena lives.
    var allocator: ProtobufCAllocator {
        ProtobufCAllocator(
            alloc: { data, size in
                Unmanaged<ProtobufArena>.fromOpaque(data!).takeUnretainedValue().allocate(size)
            },
            free: { _, _ in },
            allocator_data: Unmanaged.passUnretained(self).toOpaque())
    }

    deinit { for c in chunks { free(c) } }
}
