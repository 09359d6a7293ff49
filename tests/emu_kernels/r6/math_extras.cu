// CUDA math API functions that scientific kernels call (special functions, norms without overflow) and the
// grid-level cooperative-groups queries of CUDA 11, with the free-function spellings of older code.
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

extern "C" __global__ void special_functions(const double* x, double* out, float* outf, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const double v = x[i];
    out[8 * i + 0] = cyl_bessel_i0(v);
    out[8 * i + 1] = cyl_bessel_i1(v);
    out[8 * i + 2] = erfcx(v);
    out[8 * i + 3] = rhypot(v, 3.0);
    out[8 * i + 4] = norm3d(v, 1e300, 1e300);  // no overflow in the squares
    out[8 * i + 5] = rnorm4d(v, 1.0, 2.0, 3.0);
    out[8 * i + 6] = rcbrt(v);
    const double xs[3] = {v, 2.0, -1.0};
    out[8 * i + 7] = norm(3, xs) * rnorm(3, xs);
    outf[2 * i] = cyl_bessel_i0f((float)v);
    outf[2 * i + 1] = erfcxf((float)v);
}

extern "C" __global__ void grid_queries(unsigned long long* out) {
    cg::grid_group grid = cg::this_grid();
    cg::thread_block block = cg::this_thread_block();
    if (block.thread_rank() != 0) return;
    unsigned long long* o = out + 6 * grid.block_rank();
    o[0] = grid.block_rank();
    o[1] = grid.num_blocks();
    o[2] = grid.dim_blocks().x * 100 + grid.dim_blocks().y;
    o[3] = grid.block_index().x * 100 + grid.block_index().y;
    o[4] = cg::thread_rank(grid);
    o[5] = cg::group_size(block) + cg::num_threads(grid) * 1000;
}
