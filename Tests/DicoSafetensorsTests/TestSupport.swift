import DicoCore
import DicoTestSupport
import Foundation
import XCTest

/// A safetensors file: 8-byte little-endian length, the header bytes verbatim, then the data.
func safetensorsBytes(headerBytes: [UInt8], data: [UInt8] = []) -> [UInt8] {
    var out: [UInt8] = []
    var n = UInt64(headerBytes.count)
    for _ in 0..<8 { out.append(UInt8(n & 0xFF)); n >>= 8 }
    return out + headerBytes + data
}

/// A safetensors file with `header` as its JSON text and `dataCount` data bytes (0, 1, 2, ...).
func safetensorsBytes(header: String, dataCount: Int = 0) -> [UInt8] {
    safetensorsBytes(headerBytes: Array(header.utf8), data: (0..<dataCount).map { UInt8(truncatingIfNeeded: $0) })
}
