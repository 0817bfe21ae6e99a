import Dispatch

/// Splits `0..<count` into at most `threads` contiguous ranges and runs `body` on each,
/// concurrently. Each output element is computed by exactly one range with the same
/// arithmetic whatever the split, so results do not depend on the thread count.
@inline(__always)
func parallelRanges(_ count: Int, threads: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let parts = max(1, min(threads, count / max(minChunk, 1)))
    if parts == 1 {
        body(0..<count)
        return
    }
    let step = (count + parts - 1) / parts
    DispatchQueue.concurrentPerform(iterations: parts) { i in
        let lo = i * step, hi = min(count, lo + step)
        if lo < hi { body(lo..<hi) }
    }
}
