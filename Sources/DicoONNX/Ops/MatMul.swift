import COpenBLAS
import Dispatch
import DicoRuntime

// Gemm and MatMul (float32) through the IR executor's tiled sgemm, and the sgemm driver
// Conv shares.

/// Workers for large sgemm calls (and the other kernels that split work): the running
/// interpreter's `threads`, by default the IR executor's default, the online CPUs.
var sgemmThreads: Int { ONNXThreads.limit }

/// The thread count of the interpreter run on this thread: a task-local, bound by
/// `ONNXInterpreter.runOrdered` around its steps, so concurrent runs with different counts do
/// not interfere, and the kernels need no extra parameter.
enum ONNXThreads {
    @TaskLocal static var limit: Int = Executor.defaultThreads
}

/// Row-major C[M,N] = alpha * op(A) op(B) + beta * C. The common case (no transposed A,
/// alpha 1, beta 0 or 1: every product DiCo has) runs on the IR executor's fixed grid of
/// single-threaded sgemm tiles (`tiledMatrixProduct`), whose blocks depend only on the
/// problem, so results are the same on every machine; anything else is one OpenBLAS call
/// (OpenBLAS's own threading is off, as `ONNXInterpreter.init` sets it).
func sgemm(transA: Bool = false, transB: Bool = false, m: Int32, n: Int32, k: Int32, alpha: Float = 1,
           a: UnsafePointer<Float>, lda: Int32, b: UnsafePointer<Float>, ldb: Int32, beta: Float,
           c: UnsafeMutablePointer<Float>, ldc: Int32) {
    if !transA, alpha == 1, beta == 0 || beta == 1 {
        tiledMatrixProduct(m: Int(m), n: Int(n), k: Int(k), a: a, lda: Int(lda), b: b, ldb: Int(ldb), transB: transB,
                           c: c, ldc: Int(ldc), accumulate: beta == 1, threads: sgemmThreads)
        return
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

let matMulPreparers: [String: KernelPreparer] = ["Gemm": prepareGemm, "MatMul": prepareMatMul]

private func prepareGemm(_ spec: NodeSpec) throws -> Kernel {
    try spec.allowAttributes(["alpha", "beta", "transA", "transB"])
    try spec.requireInputs(2, 3)
    try spec.requireOutputs(1, 1)
    let alpha = try spec.float("alpha", default: 1), beta = try spec.float("beta", default: 1)
    let ta = try spec.int("transA", default: 0), tb = try spec.int("transB", default: 0)
    guard [0, 1].contains(ta), [0, 1].contains(tb) else { throw OpFailure("transA and transB must be 0 or 1") }
    let weight = spec.claimInPlace(1)
    return { inputs in
        [try gemm(try arg(inputs, 0), try FloatInput.of(inputs, 1, claimed: weight, "input B"), optionalArg(inputs, 2),
                  alpha: alpha, beta: beta, transA: ta == 1, transB: tb == 1)]
    }
}

/// Y = alpha * op(A) op(B) + beta * C, C broadcast unidirectionally to [M, N].
func gemm(_ av: ONNXValue, _ bv: FloatInput, _ cv: ONNXValue?, alpha: Float, beta: Float, transA: Bool, transB: Bool) throws -> ONNXValue {
    let a = try requireFloats(av, "input A")
    guard av.shape.count == 2, bv.shape.count == 2 else { throw OpFailure("inputs A \(av.shape) and B \(bv.shape) must be matrices") }
    let (m, k) = transA ? (av.shape[1], av.shape[0]) : (av.shape[0], av.shape[1])
    let (k2, n) = transB ? (bv.shape[1], bv.shape[0]) : (bv.shape[0], bv.shape[1])
    guard k == k2 else { throw OpFailure("inner dimensions differ: A \(av.shape)\(transA ? " (transposed)" : ""), B \(bv.shape)\(transB ? " (transposed)" : "")") }
    let count = try product([m, n])
    var y: [Float]
    if let cv, beta != 0 {
        let c = try requireFloats(cv, "input C")
        let plan = try BroadcastPlan([[m, n], cv.shape])
        guard plan.shape == [m, n] else { throw OpFailure("input C \(cv.shape) does not broadcast to [\(m), \(n)]") }
        y = broadcastCopy(c, plan: plan, operand: 1)
        if beta != 1 { for i in y.indices { y[i] *= beta } }
    } else {
        y = [Float](repeating: 0, count: count)
    }
    if count == 0 { return ONNXValue(unchecked: [m, n], .f32(y)) }
    let (mi, ni, ki) = (try blasInt(m), try blasInt(n), try blasInt(k))
    let lda = try blasInt(av.shape[1]), ldb = try blasInt(bv.shape[1])
    a.withUnsafeBufferPointer { ap in
        bv.withFloats { bp in
            y.withUnsafeMutableBufferPointer { yp in
                sgemm(transA: transA, transB: transB, m: mi, n: ni, k: ki, alpha: alpha, a: ap.baseAddress!, lda: lda,
                      b: bp, ldb: ldb, beta: 1, c: yp.baseAddress!, ldc: ni)
            }
        }
    }
    return ONNXValue(unchecked: [m, n], .f32(y))
}

private let prepareMatMul = plainOp(2) { inputs in try matMul(try arg(inputs, 0), try arg(inputs, 1)) }

/// numpy matmul: 1-D operands are promoted (and the added dimension removed from the result),
/// leading batch dimensions broadcast.
func matMul(_ av: ONNXValue, _ bv: ONNXValue) throws -> ONNXValue {
    let a = try requireFloats(av, "input A"), b = try requireFloats(bv, "input B")
    guard !av.shape.isEmpty, !bv.shape.isEmpty else { throw OpFailure("MatMul does not take scalars (shapes \(av.shape), \(bv.shape))") }
    let aS = av.shape.count == 1 ? [1, av.shape[0]] : av.shape
    let bS = bv.shape.count == 1 ? [bv.shape[0], 1] : bv.shape
    let (m, k) = (aS[aS.count - 2], aS[aS.count - 1])
    let (k2, n) = (bS[bS.count - 2], bS[bS.count - 1])
    guard k == k2 else { throw OpFailure("inner dimensions differ: A \(av.shape), B \(bv.shape)") }
    let aBatch = Array(aS.dropLast(2)), bBatch = Array(bS.dropLast(2))
    let plan = try BroadcastPlan([aBatch, bBatch])
    var outShape = plan.shape + [m, n]
    let count = try product(outShape)
    let (mi, ni, ki) = (try blasInt(m), try blasInt(n), try blasInt(k))
    let foldedRows = try blasInt(try product([plan.count, m]))
    let y: [Float] = a.withUnsafeBufferPointer { ap in
        b.withUnsafeBufferPointer { bp in
            makeArray(count) { (yb: UnsafeMutableBufferPointer<Float>) in
                guard count > 0 else { return }
                let yp = yb.baseAddress!
                if k == 0 { yp.initialize(repeating: 0, count: count); return }
                if bBatch.allSatisfy({ $0 == 1 }) {
                    // One B for every batch: the batch folds into the rows of a single sgemm.
                    sgemm(m: foldedRows, n: ni, k: ki, a: ap.baseAddress!, lda: ki, b: bp.baseAddress!, ldb: ni, beta: 0, c: yp, ldc: ni)
                    return
                }
                var batch = 0
                plan.forEachRun { _, off, st, len in
                    for i in 0..<len {
                        let pa = ap.baseAddress! + (off[0] + i * st[0]) * m * k, pb = bp.baseAddress! + (off[1] + i * st[1]) * k * n
                        sgemm(m: mi, n: ni, k: ki, a: pa, lda: ki, b: pb, ldb: ni, beta: 0, c: yp + batch * m * n, ldc: ni)
                        batch += 1
                    }
                }
            }
        }
    }
    if av.shape.count == 1 { outShape.remove(at: outShape.count - 2) }
    if bv.shape.count == 1 { outShape.removeLast() }
    return ONNXValue(unchecked: outShape, .f32(y))
}
