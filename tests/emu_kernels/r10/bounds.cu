// Round 10: the off-by-some bugs of tutorial kernels, which wrote into the host's heap next to a NumPy array
// (Python aborted later, "corrupted size vs. prev_size"): a bound checked against the wrong count, and a
// stencil reading one element before its input view (fine on a GPU: the rest of the same allocation).
extern "C" __global__ void fill_with_wrong_bound(float* y, int n, int extra) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n + extra) y[i] = 7.0f;  // should be i < n
}

extern "C" __global__ void backward_difference(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] - x[i - 1];  // x[-1] for i = 0: the element before the view
}

extern "C" __global__ void scale_in_place(const float* x, float* y, float s, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = s * x[i];  // called with x and y the same array
}
