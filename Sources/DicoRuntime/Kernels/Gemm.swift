import COpenBLAS

/// C[M,N] = A[M,K] * op(B) (+ C when `accumulate`), row-major, through OpenBLAS sgemm.
/// `transB` selects B stored as [N,K] (a PyTorch linear weight) instead of [K,N].
@inline(__always)
func sgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, transB: Bool,
           c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), accumulate ? 1 : 0, c, Int32(ldc))
}

/// Sets the number of threads OpenBLAS uses for every later call.
func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }

/// Linear layer y[N,out] = x[N,in] W^T + b, W in PyTorch layout [out,in].
func linearKernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                  rows: Int, inFeatures: Int, outFeatures: Int) {
    if let bias {
        for r in 0..<rows { (y + r * outFeatures).update(from: bias, count: outFeatures) }
    }
    sgemm(m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: w, ldb: inFeatures, transB: true,
          c: y, ldc: outFeatures, accumulate: bias != nil)
}

/// 1x1 convolution per image: Y_n[Cout,HW] = W[Cout,Cin] X_n[Cin,HW] + b.
func conv1x1Kernel(x: UnsafePointer<Float>, w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
                   batch: Int, cin: Int, cout: Int, pixels: Int) {
    if pixels == 1 {
        // A pooled [N,C,1,1] input is a plain linear layer over the batch.
        linearKernel(x: x, w: w, bias: bias, y: y, rows: batch, inFeatures: cin, outFeatures: cout)
        return
    }
    for n in 0..<batch {
        let yn = y + n * cout * pixels
        if let bias {
            for c in 0..<cout { (yn + c * pixels).update(repeating: bias[c], count: pixels) }
        }
        sgemm(m: cout, n: pixels, k: cin, a: w, lda: cin, b: x + n * cin * pixels, ldb: pixels, transB: false,
              c: yn, ldc: pixels, accumulate: bias != nil)
    }
}
