/* Single-threaded OpenBLAS sgemm microbenchmark behind two choices of the executor's GEMM
 * driver (Sources/DicoRuntime/Kernels/Gemm.swift):
 *   1. the column-tile width of the fixed task grid (each tile is one sgemm call, which packs
 *      its rows of the weights again), on DiCo-XL's 1x1-conv shapes;
 *   2. one GEMM over both images of a batch (inputs gathered side by side, the product
 *      scattered back, copies timed) against one GEMM per image, for small images.
 * Times are thread CPU time, best of R repetitions, so that a shared machine's other load
 * counts as little as possible; compare the figures of one run with each other.
 *
 *   cc -O2 scripts/bench_gemm_tiles.c -o /tmp/bench_gemm_tiles -lopenblas && /tmp/bench_gemm_tiles 15
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *A, *B, *C, *BS, *CS;

/* C[m,n] += A[m,k] B[k,n] as a grid of mt x nt tiles, one sgemm each. */
static double tiled(int m, int n, int k, int mt, int nt) {
    double t0 = cpu();
    for (int i0 = 0; i0 < m; i0 += mt)
        for (int j0 = 0; j0 < n; j0 += nt) {
            int mm = m - i0 < mt ? m - i0 : mt, nn = n - j0 < nt ? n - j0 : nt;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mm, nn, k, 1, A + (size_t)i0 * k, k, B + j0, n, 1,
                        C + (size_t)i0 * n + j0, n);
        }
    return cpu() - t0;
}

/* Two images [k, p] each: per image, or gathered into [k, 2p], multiplied and scattered back. */
static double images(int m, int k, int p, int batched) {
    double t0 = cpu();
    if (!batched) {
        for (int b = 0; b < 2; b++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, p, k, 1, A, k, B + (size_t)b * k * p, p, 1,
                        C + (size_t)b * m * p, p);
    } else {
        for (int r = 0; r < k; r++)
            for (int b = 0; b < 2; b++) memcpy(BS + (size_t)r * 2 * p + b * p, B + ((size_t)b * k + r) * p, p * 4);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, 2 * p, k, 1, A, k, BS, 2 * p, 1, CS, 2 * p);
        for (int b = 0; b < 2; b++)
            for (int r = 0; r < m; r++) memcpy(C + ((size_t)b * m + r) * p, CS + (size_t)r * 2 * p + b * p, p * 4);
    }
    return cpu() - t0;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 15;
    openblas_set_num_threads(1);
    size_t big = (size_t)3328 * 3328;
    A = aligned_alloc(64, big * 4); B = aligned_alloc(64, big * 4); C = aligned_alloc(64, big * 4);
    BS = aligned_alloc(64, big * 4); CS = aligned_alloc(64, big * 4);
    for (size_t i = 0; i < big; i++) { A[i] = (i % 7) * 0.1f; B[i] = (i % 5) * 0.1f; C[i] = 0; CS[i] = 0; }

    int tiles[][5] = {{832, 1024, 832, 416, 256}, {832, 1024, 832, 416, 512}, {832, 1024, 832, 416, 1024},
                      {1664, 1024, 832, 416, 256}, {1664, 1024, 832, 416, 1024}, {832, 1024, 1664, 416, 256},
                      {832, 1024, 1664, 416, 1024}, {832, 256, 832, 416, 256}};
    int nt = sizeof tiles / sizeof tiles[0];
    for (int i = 0; i < nt; i++) {
        double best = 1e9;
        for (int r = 0; r < reps; r++) { double t = tiled(tiles[i][0], tiles[i][1], tiles[i][2], tiles[i][3], tiles[i][4]); if (t < best) best = t; }
        printf("tiles: m=%d n=%d k=%d in %dx%d tiles: %.1f GFLOP/s\n", tiles[i][0], tiles[i][1], tiles[i][2], tiles[i][3], tiles[i][4],
               2.0 * tiles[i][0] * tiles[i][1] * tiles[i][2] / best / 1e9);
    }
    int imgs[][3] = {{1664, 1664, 64}, {3328, 1664, 64}, {1664, 3328, 64}, {832, 832, 256}, {1664, 832, 256}};
    int ni = sizeof imgs / sizeof imgs[0];
    for (int i = 0; i < ni; i++) {
        double per = 1e9, bat = 1e9;
        for (int r = 0; r < reps; r++) {
            double t = images(imgs[i][0], imgs[i][1], imgs[i][2], 0); if (t < per) per = t;
            t = images(imgs[i][0], imgs[i][1], imgs[i][2], 1); if (t < bat) bat = t;
        }
        printf("batch of 2: m=%d k=%d pixels=%d: one GEMM (copies included) / per image = %.3f\n", imgs[i][0], imgs[i][1], imgs[i][2], bat / per);
    }
    return 0;
}
