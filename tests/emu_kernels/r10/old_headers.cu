// Round 10: an older sample that includes the per-architecture headers <cuda_runtime.h> pulls in itself (for
// the double atomicAdd of sm_60 and __dp4a of sm_61), and a newer one sizing its work with <cuda/cmath>.
#include <cuda_runtime.h>
#include <driver_types.h>
#include <sm_60_atomic_functions.h>
#include <sm_61_intrinsics.h>
#include <cuda/cmath>

// total += sum over i of dot(bytes of a[i], bytes of b[i]); each thread takes a group of up to 4 words.
extern "C" __global__ void dot_int8_accumulate(const int* a, const int* b, double* total, int n) {
  const int group = blockIdx.x * blockDim.x + threadIdx.x;
  if (group >= cuda::ceil_div(n, 4)) return;
  const int begin = 4 * group;
  int sum = 0;
  if (begin < cuda::round_down(n, 4)) {  // a full group of 4 words
#pragma unroll
    for (int k = 0; k < 4; ++k) sum = __dp4a(a[begin + k], b[begin + k], sum);
  } else {  // the ragged tail
    for (int i = begin; i < n; ++i) sum = __dp4a(a[i], b[i], sum);
  }
  atomicAdd(total, (double)sum);
}
