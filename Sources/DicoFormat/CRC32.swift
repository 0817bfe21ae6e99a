import CZlib

/// CRC-32 (ISO-HDLC, the zlib polynomial), the checksum `.dico` uses for its header and
/// tensors: Python's `zlib.crc32` computes the same value, so readers need no library of ours.
public enum CRC32 {
    /// The CRC-32 of `bytes`, continuing from `seed` (0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var crc = UInt(seed)
        var p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        var left = bytes.count
        // zlib takes a 32-bit length: feed it in chunks.
        while left > 0, let q = p {
            let n = min(left, 1 << 30)
            crc = crc32(crc, q, UInt32(n))
            p = q + n
            left -= n
        }
        return UInt32(crc)
    }

    /// Eight lower-case hex digits, the header's spelling.
    public static func hex(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}
