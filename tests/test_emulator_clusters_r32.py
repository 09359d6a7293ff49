"""Round 32: the CUDA emulator runs Hopper thread block clusters (minilora/emulator.py, runtime.cpp "thread block
clusters"): __cluster_dims__, cooperative_groups' this_cluster() (sync, barrier_arrive/wait, ranks, map_shared_rank:
distributed shared memory), the PTX forms users inline (%cluster_ctarank, barrier.cluster, mapa, ld/st.shared::cluster),
and the errors CUDA defines: a grid that is not a whole number of clusters, a cluster barrier that deadlocks, an access
to the shared memory of a block that has exited, races between blocks of a cluster.  Also direct-initialised __device__
globals (`__device__ float a(1.5f);`).

The kernels are written as users write them for sm_90 (each also compiles with nvcc -cubin -arch=sm_90) and checked
against NumPy on ragged shapes.  Two sources hold them all, so the file compiles twice (plus racecheck's build).
"""
import numpy as np
import pytest

from minilora import emulator
from minilora.emulator import BarrierError, CompileError, CUDADriverError, KernelFault, RaceError, RawModule

pytestmark = pytest.mark.skipif(not emulator.is_available(), reason="needs g++")

KERNELS = r"""
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

// Where each block sits in its 2x2 cluster, as cooperative_groups reports it.
extern "C" __global__ void __cluster_dims__(2, 2, 1) cluster_places(int* out) {
    cg::cluster_group cluster = cg::this_cluster();
    __shared__ int here;
    if (threadIdx.x == 0) here = 7;
    cluster.sync();
    const int b = blockIdx.y * gridDim.x + blockIdx.x;
    if (threadIdx.x == 0) {
        dim3 at = cluster.block_index(), dims = cluster.dim_blocks(), threads = cluster.dim_threads();
        int* o = out + b * 10;
        o[0] = cluster.block_rank();
        o[1] = cluster.num_blocks();
        o[2] = at.x; o[3] = at.y; o[4] = dims.x * 10 + dims.y;
        o[5] = cluster.num_threads();
        o[6] = threads.x * 100 + threads.y;
        o[7] = cluster.query_shared_rank(cluster.map_shared_rank(&here, 3 - cluster.block_rank()));
        o[8] = cg::this_grid().block_rank();
    }
    if (threadIdx.x == 1) out[b * 10 + 9] = cluster.thread_rank();
    cluster.sync();
}

// A histogram of `nbins` bins spread over the cluster's 4 blocks (dynamic shared memory, nbins / 4 each): every
// thread adds its values into whichever block holds the bin, then each block adds its slice to the result.
extern "C" __global__ void __cluster_dims__(4, 1, 1) cluster_histogram(const int* values, int n, int* hist,
                                                                       int nbins) {
    extern __shared__ int slice[];
    cg::cluster_group cluster = cg::this_cluster();
    const int per_block = nbins / cluster.num_blocks();
    for (int i = threadIdx.x; i < per_block; i += blockDim.x) slice[i] = 0;
    cluster.sync();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int bin = values[i];
        int* owner = cluster.map_shared_rank(slice, bin / per_block);
        atomicAdd(owner + bin % per_block, 1);
    }
    cluster.sync();  // every block's additions are in, and no block exits while others still add into it
    for (int i = threadIdx.x; i < per_block; i += blockDim.x)
        atomicAdd(&hist[cluster.block_rank() * per_block + i], slice[i]);
}

// The sum of x, one partial per cluster: each block sums its chunk, then rank 0 adds the others' partials.
template <class T>
__global__ void __cluster_dims__(4, 1, 1) cluster_sum(const T* x, int n, T* partials) {
    __shared__ T part[128];
    cg::cluster_group cluster = cg::this_cluster();
    T acc = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) acc += x[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    cluster.sync();
    if (cluster.block_rank() == 0 && threadIdx.x == 0) {
        T total = part[0];
        for (unsigned r = 1; r < cluster.num_blocks(); ++r) total += *cluster.map_shared_rank(&part[0], r);
        partials[blockIdx.x / cluster.dim_blocks().x] = total;
    }
    cluster.sync();
}

// C = A @ B with K split over the 4 blocks of a cluster (blockIdx.z): each computes a partial 16x16 tile, then the
// blocks reduce the tile through distributed shared memory, each adding up 4 of its rows from all 4 partials.
#define TILE 16
extern "C" __global__ void __cluster_dims__(1, 1, 4) splitk_gemm(const float* A, const float* B, float* C, int M,
                                                                 int N, int K) {
    __shared__ float a[TILE][TILE], b[TILE][TILE], partial[TILE][TILE];
    cg::cluster_group cluster = cg::this_cluster();
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    const int splits = cluster.num_blocks(), chunk = (K + splits - 1) / splits;
    const int k0 = cluster.block_rank() * chunk, k1 = min(K, k0 + chunk);
    float acc = 0.f;
    for (int k = k0; k < k1; k += TILE) {
        a[ty][tx] = (row < M && k + tx < k1) ? A[row * K + k + tx] : 0.f;
        b[ty][tx] = (col < N && k + ty < k1) ? B[(k + ty) * N + col] : 0.f;
        __syncthreads();
        for (int j = 0; j < TILE; ++j) acc += a[ty][j] * b[j][tx];
        __syncthreads();
    }
    partial[ty][tx] = acc;
    cluster.sync();
    const int rows_each = TILE / splits;
    if (ty / rows_each == (int)cluster.block_rank()) {
        float sum = 0.f;
        for (int r = 0; r < splits; ++r) sum += cluster.map_shared_rank(&partial[0][0], r)[ty * TILE + tx];
        if (row < M && col < N) C[row * N + col] = sum;
    }
    cluster.sync();
}

// out[i] = x[i-1] + 2 x[i] + x[i+1] (zero outside): a block's halo comes from its neighbours' shared memory inside
// the cluster, from global memory at the cluster's edges.  The split barrier lets the interior run meanwhile.
extern "C" __global__ void __cluster_dims__(4, 1, 1) halo_stencil(const float* x, float* out, int n) {
    __shared__ float tile[64];
    cg::cluster_group cluster = cg::this_cluster();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? x[i] : 0.f;
    auto token = cluster.barrier_arrive();
    const float mid = 2.f * tile[threadIdx.x];
    cluster.barrier_wait(std::move(token));
    const unsigned rank = cluster.block_rank(), last = blockDim.x - 1;
    float left, right;
    if (threadIdx.x > 0) left = tile[threadIdx.x - 1];
    else if (rank > 0) left = *cluster.map_shared_rank(&tile[last], rank - 1);
    else left = i > 0 && i - 1 < n ? x[i - 1] : 0.f;
    if (threadIdx.x < last) right = tile[threadIdx.x + 1];
    else if (rank + 1 < cluster.num_blocks()) right = cluster.map_shared_rank(tile, rank + 1)[0];
    else right = i + 1 < n ? x[i + 1] : 0.f;
    if (i < n) out[i] = left + mid + right;
    cluster.sync();
}

// The PTX forms: the ring exchange of a value through each next block's shared memory (mapa + st.shared::cluster),
// the cluster's special registers, and the split cluster barrier with .relaxed / .aligned.
extern "C" __global__ void __cluster_dims__(3, 1, 1) ptx_ring(int* out) {
    __shared__ int inbox[4];
    unsigned rank, nranks, cluster_id, ctaid_x;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(nranks));
    asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(cluster_id));
    asm volatile("mov.u32 %0, %%cluster_ctaid.x;" : "=r"(ctaid_x));
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
    if (threadIdx.x < 4) {
        unsigned local = (unsigned)__cvta_generic_to_shared(&inbox[threadIdx.x]), remote;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"((rank + 1) % nranks));
        asm volatile("st.shared::cluster.u32 [%0], %1;" :: "r"(remote), "r"(blockIdx.x * 10 + threadIdx.x) : "memory");
        asm volatile("fence.acq_rel.cluster;" ::: "memory");
    }
    asm volatile("barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
    if (threadIdx.x < 4) {
        unsigned local = (unsigned)__cvta_generic_to_shared(&inbox[threadIdx.x]), got;
        asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(got) : "r"(local));
        out[blockIdx.x * 8 + threadIdx.x] = got;
    }
    if (threadIdx.x == 0) {
        out[blockIdx.x * 8 + 4] = rank;
        out[blockIdx.x * 8 + 5] = nranks;
        out[blockIdx.x * 8 + 6] = cluster_id;
        out[blockIdx.x * 8 + 7] = ctaid_x;
    }
    asm volatile("barrier.cluster.arrive;\n\tbarrier.cluster.wait;" ::: "memory");
}

// cg::this_cluster() in a kernel without __cluster_dims__: each block is a cluster of one, as on sm_90.
extern "C" __global__ void lone_cluster(int* out) {
    cg::cluster_group cluster = cg::this_cluster();
    __shared__ int v;
    if (threadIdx.x == 0) v = blockIdx.x + 1;
    cluster.sync();
    if (threadIdx.x == 0) out[blockIdx.x] = *cluster.map_shared_rank(&v, 0) * 100 + cluster.num_blocks();
}

// Direct-initialised globals (round 31's leftover).
__device__ float scale_by(1.5f);
__device__ int launches(0);
__constant__ int offset_by(-2);
struct Shift { int by; constexpr __device__ Shift(int b) : by(b) {} };  // constexpr: a constant initialization
__device__ Shift shift(1);
extern "C" __global__ void direct_globals(const float* x, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] * scale_by + offset_by + shift.by;
    if (i == 0) atomicAdd(&launches, 1);
}
"""

MISUSES = r"""
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

// Rank 1 returns after the first cluster.sync(); rank 0 then reads its shared memory: undefined in CUDA.
extern "C" __global__ void __cluster_dims__(2, 1, 1) read_after_exit(int* out) {
    __shared__ int v;
    cg::cluster_group cluster = cg::this_cluster();
    if (threadIdx.x == 0) v = 5;
    cluster.sync();
    if (cluster.block_rank() == 1) return;
    out[threadIdx.x] = *cluster.map_shared_rank(&v, 1);
}

// Half of rank 1's threads wait at __syncthreads() for the other half, which waits at cluster.sync(): a deadlock.
extern "C" __global__ void __cluster_dims__(2, 1, 1) split_deadlock(int* out) {
    cg::cluster_group cluster = cg::this_cluster();
    if (cluster.block_rank() == 1 && threadIdx.x >= 16) __syncthreads();
    cluster.sync();
    out[threadIdx.x] = 1;
}

// Each block writes its neighbour's shared memory, and the neighbour reads it with no cluster barrier in between.
extern "C" __global__ void __cluster_dims__(2, 1, 1) unsynced_neighbours(int* out) {
    __shared__ int box[32];
    cg::cluster_group cluster = cg::this_cluster();
    box[threadIdx.x] = 0;
    cluster.sync();
    cluster.map_shared_rank(box, cluster.block_rank() ^ 1)[threadIdx.x] = threadIdx.x;
    out[blockIdx.x * 32 + threadIdx.x] = box[threadIdx.x];
    cluster.sync();
}

// The same with the cluster barrier: no hazard.
extern "C" __global__ void __cluster_dims__(2, 1, 1) synced_neighbours(int* out) {
    __shared__ int box[32];
    cg::cluster_group cluster = cg::this_cluster();
    box[threadIdx.x] = 0;
    cluster.sync();
    cluster.map_shared_rank(box, cluster.block_rank() ^ 1)[threadIdx.x] = threadIdx.x + 1;
    cluster.sync();
    out[blockIdx.x * 32 + threadIdx.x] = box[threadIdx.x];
    cluster.sync();
}

// Rank 0 keeps a pointer into rank 1's shared memory past rank 1's exit (a second cluster.sync() does not wait for
// threads that have exited) and reads through it.
extern "C" __global__ void __cluster_dims__(2, 1, 1) stale_pointer(int* out) {
    __shared__ int v[4];
    cg::cluster_group cluster = cg::this_cluster();
    v[threadIdx.x] = threadIdx.x;
    int* theirs = cluster.map_shared_rank(v, 1);
    cluster.sync();
    if (cluster.block_rank() == 1) return;
    cluster.sync();
    out[threadIdx.x] = theirs[threadIdx.x];
}

// Rank 0 maps rank 1's shared memory before the cluster barrier and reads it after, while rank 1 exits: unordered
// with the exit.  The emulator happens to run the read first; racecheck names it all the same.
extern "C" __global__ void __cluster_dims__(2, 1, 1) mapped_early(int* out) {
    __shared__ int v;
    cg::cluster_group cluster = cg::this_cluster();
    if (threadIdx.x == 0) v = 5;
    int* theirs = cluster.map_shared_rank(&v, 1);
    cluster.sync();
    if (cluster.block_rank() == 1) return;
    out[threadIdx.x] = *theirs;
}

// Rank 1 returns at once; rank 0 maps its shared memory after it has gone.
extern "C" __global__ void __cluster_dims__(2, 1, 1) map_after_exit(int* out) {
    __shared__ int v;
    cg::cluster_group cluster = cg::this_cluster();
    if (cluster.block_rank() == 1) return;
    v = 1;
    cluster.sync();
    out[0] = *cluster.map_shared_rank(&v, 1);
}

extern "C" __global__ void __cluster_dims__(2, 1, 1) rank_out_of_range(int* out) {
    __shared__ int v;
    v = 1;
    cg::this_cluster().sync();
    out[0] = *cg::this_cluster().map_shared_rank(&v, 2);
}

extern "C" __global__ void __cluster_dims__(2, 1, 1) arrive_twice(int* out) {
    cg::cluster_group cluster = cg::this_cluster();
    cluster.barrier_arrive();
    cluster.barrier_arrive();
    out[0] = 1;
}

extern "C" __global__ void __cluster_dims__(16, 1, 1) too_large_cluster(int* out) { out[0] = 1; }
"""


@pytest.fixture(scope="module")
def kernels():
    return RawModule(code=KERNELS, name_expressions=["cluster_sum<float>", "cluster_sum<int>"])


@pytest.fixture(scope="module")
def misuses():
    return RawModule(code=MISUSES)


def test_cluster_ranks_and_shapes(kernels):
    out = np.full((2, 4, 10), -1, np.int32)
    kernels.get_function("cluster_places")((4, 2), (32,), (out,))
    for by in range(2):
        for bx in range(4):
            at = (bx % 2, by % 2)
            rank = at[1] * 2 + at[0]
            assert list(out[by, bx, :8]) == [rank, 4, *at, 22, 128, 6402, 3 - rank]
            assert out[by, bx, 8] == by * 4 + bx and out[by, bx, 9] == rank * 32 + 1
    # A kernel without __cluster_dims__: clusters of one block
    lone = np.zeros(3, np.int32)
    kernels.get_function("lone_cluster")((3,), (8,), (lone,))
    assert list(lone) == [101, 201, 301]


@pytest.mark.parametrize("n, nbins", [(1, 8), (1000, 64), (4099, 40)])
def test_histogram_in_distributed_shared_memory(kernels, n, nbins):
    rng = np.random.default_rng(n)
    values = rng.integers(0, nbins, n).astype(np.int32)
    hist = np.zeros(nbins, np.int32)
    kernels.get_function("cluster_histogram")((8,), (64,), (values, np.int32(n), hist, np.int32(nbins)),
                                              shared_mem=nbins // 4 * 4)
    np.testing.assert_array_equal(hist, np.bincount(values, minlength=nbins))


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_cluster_reduction(kernels, dtype):
    n = 3001
    x = (np.arange(n) % 17 - 5).astype(dtype)
    partials = np.zeros(3, dtype)
    kernels.get_function(f"cluster_sum<{'float' if dtype == np.float32 else 'int'}>")(
        (12,), (128,), (x, np.int32(n), partials))
    # each cluster's 4 blocks stride over x with the whole grid: cluster c sums blocks 4c..4c+3's elements
    block_of = (np.arange(n) // 128) % 12
    expected = [x[block_of // 4 == c].sum() for c in range(3)]
    np.testing.assert_allclose(partials, expected, rtol=1e-6)


@pytest.mark.parametrize("m, n, k", [(16, 16, 64), (21, 35, 50), (5, 40, 7)])
def test_split_k_gemm_reduces_through_dsmem(kernels, m, n, k):
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    grid = ((n + 15) // 16, (m + 15) // 16, 4)
    kernels.get_function("splitk_gemm")(grid, (16, 16), (a, b, c, np.int32(m), np.int32(n), np.int32(k)),
                                        check_races=(m == 21))  # (other block and thread orders: the same C)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [64, 200, 257])
def test_stencil_exchanges_halos_between_blocks(kernels, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    out = np.zeros(n, np.float32)
    blocks = -(-n // 64)
    kernels.get_function("halo_stencil")((-(-blocks // 4) * 4,), (64,), (x, out, np.int32(n)))
    padded = np.concatenate([[0], x, [0]])
    np.testing.assert_allclose(out, padded[:-2] + 2 * padded[1:-1] + padded[2:], rtol=1e-6, atol=1e-6)


def test_inline_ptx_cluster_forms(kernels):
    out = np.full((6, 8), -1, np.int32)
    kernels.get_function("ptx_ring")((6,), (32,), (out,))
    for b in range(6):
        rank, cluster = b % 3, b // 3
        sender = cluster * 3 + (rank - 1) % 3  # the previous block of the ring wrote this block's inbox
        assert list(out[b]) == [sender * 10 + t for t in range(4)] + [rank, 3, cluster, rank]


def test_direct_initialised_globals(kernels):
    x = np.arange(5, dtype=np.float32)
    out = np.zeros(5, np.float32)
    kernels.get_function("direct_globals")((1,), (32,), (x, out, np.int32(5)))
    np.testing.assert_array_equal(out, x * 1.5 - 2 + 1)
    assert kernels.get_global("launches")[0] == 1 and kernels.get_global("scale_by")[0] == 1.5


def test_dynamic_initialization_is_refused_as_nvcc_does():
    source = "struct S { int v; __device__ S(int x) : v(x) {} };\n__device__ S s(1);\n" \
             "extern \"C\" __global__ void k(int* o) { o[0] = s.v; }"
    with pytest.raises(CompileError, match="k.cu:2: error: dynamic initialization is not supported for a __device__ "
                                           "variable: 's' is a S"):
        RawModule(code=source).get_function("k")  # (a constexpr constructor compiles: direct_globals' Shift)


def test_launch_shapes_are_checked_as_cuda_does(kernels, misuses):
    out = np.zeros(64, np.int32)
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_INVALID_CLUSTER_SIZE.*multiple"):
        kernels.get_function("cluster_places")((3, 2), (32,), (out,))
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_INVALID_CLUSTER_SIZE.*16 blocks"):
        misuses.get_function("too_large_cluster")((16,), (1,), (out,))


def test_access_to_an_exited_blocks_shared_memory_is_reported(misuses):
    out = np.zeros(32, np.int32)
    with pytest.raises(KernelFault, match=r"\(rank 1 of the cluster\) exits while block \(0,0,0\) of its cluster may "
                                          r"still access its shared memory: that block reached it at \w+\.cu:12"):
        misuses.get_function("read_after_exit")((2,), (32,), (out,))
    with pytest.raises(KernelFault, match=r"a read of __shared__ 'v' .* of block \(1,0,0\) \(rank 1 of the cluster\), "
                                          "which has already exited"):
        misuses.get_function("stale_pointer")((2,), (4,), (out,))
    with pytest.raises(KernelFault, match=r"block \(1,0,0\) \(rank 1 of the cluster\) has already exited"):
        misuses.get_function("map_after_exit")((2,), (1,), (out,))
    with pytest.raises(KernelFault, match=r"rank 2 is not a block of the cluster, which has 2 blocks"):
        misuses.get_function("rank_out_of_range")((2,), (1,), (out,))


def test_cluster_barrier_misuse_is_named(misuses):
    out = np.zeros(32, np.int32)
    with pytest.raises(BarrierError, match=r"deadlock at the cluster barrier.*waits at __syncthreads\(\)"):
        misuses.get_function("split_deadlock")((2,), (32,), (out,))
    with pytest.raises(BarrierError, match="twice without waiting"):
        misuses.get_function("arrive_twice")((2,), (1,), (out,))


def test_racecheck_sees_races_between_blocks_of_a_cluster(misuses):
    out = np.zeros(64, np.int32)
    with pytest.raises(RaceError, match=r"hazard on __shared__ 'box'.*rank \d of the cluster.*cluster.sync\(\)"):
        misuses.get_function("unsynced_neighbours")((2,), (32,), (out,), racecheck=True)
    with pytest.raises(RaceError, match=r"\(rank 1 of the cluster\) exits while block \(0,0,0\) \(rank 0\) reads its "
                                        r"__shared__ 'v' .* at \w+\.cu:\d+ with no cluster barrier"):
        misuses.get_function("mapped_early")((2,), (32,), (out,), racecheck=True)
    misuses.get_function("synced_neighbours")((2,), (32,), (out,), racecheck=True)
    np.testing.assert_array_equal(out, np.tile(np.arange(1, 33), 2))
