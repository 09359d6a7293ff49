// complex_mul.cu -- element-wise complex arithmetic with <cuComplex.h>, as signal-processing samples
// write it: c = a * b + conj(a), |a|, and a / b.  Valid CUDA: the tests compile it with nvcc.
#include <cuComplex.h>

extern "C" __global__ void complex_ops(const cuFloatComplex* a, const cuFloatComplex* b, cuFloatComplex* c,
                                       float* magnitude, cuFloatComplex* quotient, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    c[i] = cuCaddf(cuCmulf(a[i], b[i]), cuConjf(a[i]));
    magnitude[i] = cuCabsf(a[i]);
    quotient[i] = cuCdivf(a[i], b[i]);
}

extern "C" __global__ void complex_axpy(cuDoubleComplex alpha, const cuDoubleComplex* x, cuDoubleComplex* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cuCfma(alpha, x[i], y[i]);
}
