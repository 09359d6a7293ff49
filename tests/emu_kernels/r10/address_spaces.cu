// Round 10: a helper that asks where its pointer lives (__isShared, __isGlobal, __isLocal, or PTX's isspacep),
// as generic copy helpers in CUTLASS-style code do before choosing a path.
#include <cuda_runtime.h>

// Where a pointer points, as 1 (shared) | 2 (global) | 4 (local).
__device__ unsigned space_bits(const void* p) {
  return (__isShared(p) ? 1u : 0u) | (__isGlobal(p) ? 2u : 0u) | (__isLocal(p) ? 4u : 0u);
}

__device__ unsigned ptx_is_shared(const void* p) {
  unsigned r;
  asm("{\n  .reg .pred is;\n  isspacep.shared is, %1;\n  selp.u32 %0, 1, 0, is;\n}" : "=r"(r) : "l"(p));
  return r;
}

// Scales x through a staging buffer that is dynamic shared memory or the caller's global scratch, and
// reports the address space of each kind of pointer.
extern "C" __global__ void stage_and_scale(const float* x, float* y, float* scratch, unsigned* spaces, float s, int n,
                                           int use_shared) {
  extern __shared__ float dyn[];
  __shared__ float fixed[4];
  float local[2] = {s, 0.f};
  float* stage = use_shared ? dyn : scratch + blockIdx.x * blockDim.x;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  stage[threadIdx.x] = i < n ? x[i] : 0.f;
  __syncthreads();
  if (i < n) y[i] = stage[threadIdx.x] * local[0];
  if (i == 0) {
    fixed[0] = 1.f;
    spaces[0] = space_bits(stage);
    spaces[1] = space_bits(fixed);
    spaces[2] = space_bits(local);
    spaces[3] = space_bits(x);
    spaces[4] = space_bits(dyn + 3);
    spaces[5] = ptx_is_shared(stage) | ptx_is_shared(fixed + 1) << 1 | ptx_is_shared(x) << 2;
  }
}
