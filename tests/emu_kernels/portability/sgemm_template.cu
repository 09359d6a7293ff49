// sgemm_template.cu -- a templated, register-blocked SGEMM in the style of the SGEMM tutorials:
// C = alpha * A B + beta * C (row-major; A is M x K, B is K x N).  One block computes a BM x BN tile of
// C with (BM/TM) * (BN/TN) threads; each thread keeps a TM x TN tile of C in registers and walks K in
// steps of BK through shared memory.  Launched the CuPy way: RawModule(code=...,
// name_expressions=["sgemm<float, 64, 64, 8, 4, 4>"]) and get_function with the same expression.
// Launch: grid (ceil(N/BN), ceil(M/BM)), block (BM/TM) * (BN/TN).  Valid CUDA: nvcc compiles it.
template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void sgemm(int M, int N, int K, T alpha, const T* A, const T* B, T beta, T* C) {
    __shared__ T As[BK][BM];  // transposed, so the inner loop reads a row of it
    __shared__ T Bs[BK][BN];
    constexpr int threads = (BM / TM) * (BN / TN);
    const int tid = threadIdx.x;
    const int trow = tid / (BN / TN), tcol = tid % (BN / TN);
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    T acc[TM][TN] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int i = tid; i < BM * BK; i += threads) {
            const int r = i / BK, c = i % BK;
            As[c][r] = (row0 + r < M && k0 + c < K) ? A[(row0 + r) * K + k0 + c] : T(0);
        }
        for (int i = tid; i < BK * BN; i += threads) {
            const int r = i / BN, c = i % BN;
            Bs[r][c] = (k0 + r < K && col0 + c < N) ? B[(k0 + r) * N + col0 + c] : T(0);
        }
        __syncthreads();
        for (int k = 0; k < BK; ++k) {
            T a[TM], b[TN];
            for (int m = 0; m < TM; ++m) a[m] = As[k][trow * TM + m];
            for (int n = 0; n < TN; ++n) b[n] = Bs[k][tcol * TN + n];
            for (int m = 0; m < TM; ++m)
                for (int n = 0; n < TN; ++n) acc[m][n] += a[m] * b[n];
        }
        __syncthreads();
    }
    for (int m = 0; m < TM; ++m)
        for (int n = 0; n < TN; ++n) {
            const int r = row0 + trow * TM + m, c = col0 + tcol * TN + n;
            if (r < M && c < N) C[r * N + c] = alpha * acc[m][n] + beta * C[r * N + c];
        }
}

// Explicit instantiations, so nvcc -cubin emits these (CuPy's name_expressions do the same at run time).
template __global__ void sgemm<float, 64, 64, 8, 4, 4>(int, int, int, float, const float*, const float*, float, float*);
template __global__ void sgemm<double, 32, 32, 4, 2, 2>(int, int, int, double, const double*, const double*, double,
                                                         double*);
