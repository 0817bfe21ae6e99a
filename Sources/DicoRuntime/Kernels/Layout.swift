/// Copies the slice [start, start+length) of an axis: the tensor seen as [outer, axisLen, inner].
func sliceKernel(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, outer: Int, axisLen: Int, inner: Int, start: Int, length: Int) {
    for o in 0..<outer {
        (y + o * length * inner).update(from: x + (o * axisLen + start) * inner, count: length * inner)
    }
}

/// Concatenation along an axis: each part seen as [outer, len_i, inner].
func concatKernel(parts: [(UnsafePointer<Float>, Int)], y: UnsafeMutablePointer<Float>, outer: Int, inner: Int) {
    let totalLen = parts.reduce(0) { $0 + $1.1 }
    for o in 0..<outer {
        var off = 0
        for (p, len) in parts {
            (y + (o * totalLen + off) * inner).update(from: p + o * len * inner, count: len * inner)
            off += len
        }
    }
}

/// PixelShuffle(r) (DICO_MODEL.md): out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w].
/// With `inverse`, PixelUnshuffle: out[n, c*r*r + i*r + j, h, w] = in[n, c, h*r + i, w*r + j].
/// `channels`, `height`, `width` describe the large-spatial side [N, channels, height, width].
func pixelShuffleKernel(inverse: Bool, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int, channels: Int,
                        height: Int, width: Int, factor r: Int, threads: Int) {
    let sh = height / r, sw = width / r
    parallelRanges(batch * channels, threads: threads) { range in
        for nc in range {
            let big = nc * height * width          // offset of plane (n, c) on the large side
            let small = nc * r * r * sh * sw       // offset of planes (n, c*r*r ...) on the small side
            for i in 0..<r {
                for j in 0..<r {
                    let sp = small + (i * r + j) * sh * sw
                    for h in 0..<sh {
                        for w in 0..<sw {
                            let bi = big + (h * r + i) * width + w * r + j
                            let si = sp + h * sw + w
                            if inverse { y[si] = x[bi] } else { y[bi] = x[si] }
                        }
                    }
                }
            }
        }
    }
}
