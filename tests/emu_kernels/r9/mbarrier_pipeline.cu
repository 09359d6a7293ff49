// A warp-specialised producer/consumer pipeline over mbarriers, as Hopper-era tutorials write it with inline PTX
// (no CUTLASS): warp 0 produces tiles of x into a ring of STAGES shared-memory buffers, the other warps consume
// them.  full[s] says "stage s holds a tile", empty[s] "stage s may be overwritten".  The producer fills a stage
// with plain loads and stores (MODE 0: every lane arrives on full[s]), with BULK (MODE 1: lane 0 arms full[s] with
// arrive.expect_tx and issues one cp.async.bulk that completes the transaction) or with Ampere's cp.async (MODE 2:
// each lane's copies arrive on full[s] when they land, cp.async.mbarrier.arrive.noinc).  y = 2 x + 1, and each block adds
// its tiles' sums into *total.  Unedited for the emulator.
#include <stdint.h>

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
    asm volatile(
        "{\n"
        ".reg .pred                P1;\n"
        "LAB_WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
        "@P1                       bra.uni DONE;\n"
        "bra.uni                   LAB_WAIT;\n"
        "DONE:\n"
        "}\n" ::"r"(smem_u32(bar)),
        "r"(phase)
        : "memory");
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}

enum { PLAIN = 0, BULK = 1, CP_ASYNC = 2 };

template <int TILE, int STAGES, int MODE>
__global__ void pipeline(const float* x, float* y, float* total, int n_tiles) {
    __shared__ __align__(16) float buf[STAGES][TILE];
    __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int consumers = blockDim.x - 32;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(&full[s], MODE == BULK ? 1 : 32);
            mbar_init(&empty[s], consumers);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    float sum = 0.0f;
    for (int it = 0, tile = blockIdx.x; tile < n_tiles; ++it, tile += gridDim.x) {
        const int s = it % STAGES;
        const uint32_t phase = (it / STAGES) & 1;
        if (warp == 0) {                // producer
            mbar_wait(&empty[s], phase ^ 1);  // the first round passes: the "previous" phase counts as complete
            if (MODE == BULK) {
                if (lane == 0) {
                    mbar_arrive_expect_tx(&full[s], TILE * sizeof(float));
                    bulk_load(buf[s], x + (size_t)tile * TILE, TILE * sizeof(float), &full[s]);
                }
            } else if (MODE == CP_ASYNC) {
                for (int j = lane; j < TILE; j += 32)
                    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_u32(&buf[s][j])),
                                 "l"(x + (size_t)tile * TILE + j));
                asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_u32(&full[s])));
            } else {
                for (int j = lane; j < TILE; j += 32) buf[s][j] = x[(size_t)tile * TILE + j];
                mbar_arrive(&full[s]);
            }
        } else {                        // consumers
            mbar_wait(&full[s], phase);
            for (int j = threadIdx.x - 32; j < TILE; j += consumers) {
                const float v = buf[s][j];
                y[(size_t)tile * TILE + j] = 2.0f * v + 1.0f;
                sum += v;
            }
            mbar_arrive(&empty[s]);
        }
    }
    if (warp > 0) atomicAdd(total, sum);
}
template __global__ void pipeline<64, 2, PLAIN>(const float*, float*, float*, int);
template __global__ void pipeline<64, 3, BULK>(const float*, float*, float*, int);
template __global__ void pipeline<64, 2, CP_ASYNC>(const float*, float*, float*, int);

// The same ring with the consumers' wait on full[s] left out: they read a stage the producer may not have written
// yet (racecheck=True names the read).
template <int TILE, int STAGES>
__global__ void pipeline_missing_full_wait(const float* x, float* y, int n_tiles) {
    __shared__ __align__(16) float buf[STAGES][TILE];
    __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) mbar_init(&full[s], 32), mbar_init(&empty[s], blockDim.x - 32);
    }
    __syncthreads();
    for (int it = 0; it < n_tiles; ++it) {
        const int s = it % STAGES;
        if (warp == 0) {
            mbar_wait(&empty[s], ((it / STAGES) & 1) ^ 1);
            for (int j = lane; j < TILE; j += 32) buf[s][j] = x[(size_t)it * TILE + j];
            mbar_arrive(&full[s]);
        } else {
            for (int j = threadIdx.x - 32; j < TILE; j += blockDim.x - 32) y[(size_t)it * TILE + j] = buf[s][j];
            mbar_arrive(&empty[s]);
        }
    }
}
template __global__ void pipeline_missing_full_wait<64, 2>(const float*, float*, int);

// sm_80's split barrier: every thread arrives (keeping the token), does independent work, then spins on
// mbarrier.test_wait with its token; the block's partial sums are read only after the phase completed.
extern "C" __global__ void split_arrive_wait(const float* x, float* out) {
    __shared__ uint64_t bar;
    __shared__ float partial[128];
    if (threadIdx.x == 0) mbar_init(&bar, blockDim.x);
    __syncthreads();
    partial[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    uint64_t token;
    asm volatile("mbarrier.arrive.shared.b64 %0, [%1];" : "=l"(token) : "r"(smem_u32(&bar)) : "memory");
    const float mine = 3.0f * partial[threadIdx.x];  // work between the arrive and the wait
    uint32_t done = 0;
    while (!done) {
        asm volatile("{\n .reg .pred p;\n mbarrier.test_wait.shared.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
                     : "=r"(done) : "r"(smem_u32(&bar)), "l"(token) : "memory");
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = mine + partial[(threadIdx.x + 1) % blockDim.x];
}
