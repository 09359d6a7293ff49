"""Round 18: ~20 kernels in styles the earlier rounds did not cover, run as their users run them through CuPy's API.

tests/emu_kernels/r18/styles.cu: llm.c's layernorm (cooperative_groups ``thread_block_tile<32>``, ``cg::reduce``,
``x128`` packed ``alignas(16)`` structs, ``__ldcs``/``__stcs``), its online softmax, fused classifier and AdamW with
``lerp``; a minimal FlashAttention-2 (shared tiles, ``__expf``/``__fdividef``/``__logf``); ``__half2`` and
``__nv_bfloat162`` intrinsics; warp-aggregated atomics (``__activemask``/``__ffs``/``__popc``), a
``__match_any_sync`` histogram, ``__reduce_add_sync``; a ``__ballot_sync`` radix pass; a Kahan reduction;
``__umulhi``/``__brev``/``__funnelshift_l``; ``cuda::std::array``/``tuple`` with ``if constexpr`` and
``__launch_bounds__(256, 2)``; a ``size_t`` grid-stride loop past 2^31; a persistent kernel with an atomic work
queue; ``__constant__`` coefficients.  Each is checked against a float64 NumPy reference on ragged shapes, built as
its users build it: ``RawModule(code=..., options=("-std=c++17", "--use_fast_math", "-DBLOCK=128"),
name_expressions=[...], jitify=True)``, ``RawKernel(..., backend="nvcc")``, ``__constant__`` memory filled through
what ``get_global`` answers in CuPy, a ``MemoryPointer`` (``copy_from_host``, ``copy_from_device``, ``memset``,
``cupy.ndarray(shape, dtype, memptr)``).

What needed the emulator fixed (each test failed before):
* ``RawKernel(code, name, options, backend="nvcc")``, ``jitify=True``, ``translate_cucomplex=`` were a TypeError (no
  such keyword), and a 4th positional argument -- CuPy's ``backend`` -- was taken as ``sanitize``:
  ``RawKernel(code, name, opts, "nvcc")`` ran the AddressSanitizer build in a child process.  The signatures are
  CuPy's now, with CuPy's refusals ("Invalid backend ...", "Jitify only supports NVRTC", "only nvrtc supports
  retrieving the mangled names for the given name expressions").
* ``get_global`` answered a bare NumPy array, so CuPy's ``memptr.copy_from_host(...)``, ``copy_from_device``,
  ``memset`` and ``cupy.ndarray(shape, dtype, memptr)`` failed: it is a ``MemoryPointer`` as well now
  (minilora/emulator_memory.py), and a copy past the symbol's end is refused by name.
* A Python scalar for a kernel parameter was converted to the parameter's type (2.5 for a ``float`` gave 2.5).
  CuPy passes a Python int as an int64, a float as a float64, a complex as a complex128, and the kernel reads its
  parameter's size of those bytes: on a GPU 2.5 for a ``float`` reads as 0.0, 2 for a ``double`` as 1e-323, without
  an error.  Such a scalar is refused now, naming CuPy's type and the NumPy scalar to pass; where those bytes read
  right (an int into an integer parameter it fits, a float into a double, a complex into a double2) it passes.
* cg::coalesced_threads() / __activemask() in a branch, with the warp's other lanes going on to a __syncwarp(), was
  a BarrierError: the runtime took the lanes still forming their group for arrived at the other lanes' collective.
* cg::reduce / inclusive_scan / exclusive_scan over a coalesced group summed rank by rank; CUDA halves a
  power-of-two group by shfl_down and scans other sizes by rank (Hillis-Steele): float sums differed in last bits.
* cg::inclusive_scan over a tile applied op(below, own) where CUDA applies op(own, below): cg::less with a NaN
  gave another running minimum.
* __expf, __exp10f, __logf, __log10f, __powf were the accurate functions: they are the GPU's instruction sequences
  now, the float product before ex2.approx / lg2.approx rounded as there (up to 54 ulp of __expf's difference).
The kernels themselves computed right once built (two bugs of the test's own: a race on ``logits`` in the classifier
-- the emulator's schedule exposed it -- and float32 betas in the AdamW reference).
"""
from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import RawKernel, RawModule

R18 = Path(__file__).parent / "emu_kernels" / "r18"
OPTS = ("-std=c++17", "--use_fast_math", "-DBLOCK=128")
TEMPLATES = ("radix_split_pass<128>", "stencil_stats<float, 5, true>", "stencil_stats<double, 4, false>")
pytestmark = [pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++"),
              pytest.mark.usefixtures("memcheck_every_launch")]
f32, f64, i32, u32 = np.float32, np.float64, np.int32, np.uint32


def rng(seed: int = 0):
    return np.random.default_rng(seed)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# as a CuPy user builds it: C++17, fast math, a -D'd block size, name expressions, Jitify for the C++ headers
STYLES = dict(code=(R18 / "styles.cu").read_text(), options=OPTS, name_expressions=TEMPLATES, jitify=True)
# built on the session's helper core meanwhile (tests/background_runs.py), as memcheck_every_launch has it
EMULATOR_BUILDS = [(STYLES, {"MINILORA_EMU_MEMCHECK": "1"})]


@lru_cache(maxsize=None)
def module() -> RawModule:
    return RawModule(**STYLES)


def fn(name: str) -> RawKernel:
    return module().get_function(name)


# -------------------------------------------------------------------------------------------- llm.c's kernels
@pytest.mark.parametrize("N, C", [(37, 84), (5, 768), (1, 4)])
def test_llmc_layernorm_with_thread_block_tile_reduce_x128_and_cache_hints(N, C):
    x, w, b = (rng(s).standard_normal(shape).astype(f32) for s, shape in ((0, (N, C)), (1, C), (2, C)))
    out, mean, rstd = np.zeros_like(x), np.zeros(N, f32), np.zeros(N, f32)
    fn("layernorm_forward_kernel3")((cdiv(N, 4),), (128,), (out, mean, rstd, x, w, b, i32(N), i32(C)))
    xd = x.astype(f64)
    m, s = xd.mean(1), 1 / np.sqrt(xd.var(1) + 1e-5)
    # float32 sums in a warp's tree order against float64: float32's tolerance
    np.testing.assert_allclose(mean, m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd, s, rtol=1e-5)
    np.testing.assert_allclose(out, (xd - m[:, None]) * s[:, None] * w + b, rtol=1e-4, atol=1e-5)


# C >= 32, as llm.c's rows: a lane with no element combines -inf - -inf = NaN into its sum, on a GPU too
@pytest.mark.parametrize("N, C", [(21, 77), (3, 1000), (8, 33)])
def test_llmc_online_softmax_one_warp_a_row(N, C):
    x = (rng(3).standard_normal((N, C)) * 5).astype(f32)
    out = np.full_like(x, np.nan)
    fn("softmax_forward_online_kernel")((cdiv(N, 4),), (128,), (out, x, i32(N), i32(C)))
    e = np.exp(x.astype(f64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(1, keepdims=True), rtol=2e-6, atol=1e-8)


@pytest.mark.parametrize("B, T, V, P", [(2, 5, 50, 64), (1, 3, 97, 128)])
def test_llmc_fused_classifier_loss_and_gradient_in_place(B, T, V, P):
    BT = B * T
    logits = (rng(4).standard_normal((BT, P)) * 3).astype(f32)
    logits[:, V:] = 0  # padded vocabulary
    targets = rng(5).integers(0, V, BT).astype(i32)
    losses, probs = np.zeros(BT, f32), np.zeros((BT, P), f32)
    z = logits[:, :V].astype(f64)
    fn("fused_classifier_kernel")((BT,), (64,), (logits, losses, probs, None, targets, i32(B), i32(T), i32(V), i32(P)))
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(probs[:, :V], p, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(losses, -np.log(p[np.arange(BT), targets]), rtol=1e-5)
    grad = p.copy()
    grad[np.arange(BT), targets] -= 1
    np.testing.assert_allclose(logits[:, :V], grad / BT, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(logits[:, V:], 0)  # the padding is never touched


@pytest.mark.parametrize("n", [1000, 129, 1])
def test_llmc_adamw_with_lerp(n):
    r = rng(6)
    p, g = r.standard_normal(n).astype(f32), r.standard_normal(n).astype(f32)
    m, v = (r.standard_normal(n) * 0.1).astype(f32), np.abs(r.standard_normal(n) * 0.1).astype(f32)
    lr, b1, b2, eps, wd, t = f32(1e-3), f32(0.9), f32(0.999), f32(1e-8), f32(0.01), 3
    c1, c2 = f32(1 - b1 ** t), f32(1 - b2 ** t)
    P, G, M, V = (a.astype(f64) for a in (p, g, m, v))
    fn("adamw_kernel2")((cdiv(n, 128),), (128,), (p, g, m, v, np.int64(n), lr, b1, b2, c1, c2, eps, wd))
    b1, b2 = f64(b1), f64(b2)  # the float32 betas the kernel sees
    M, V = b1 * M + (1 - b1) * G, b2 * V + (1 - b2) * G * G
    np.testing.assert_allclose(m, M, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v, V, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(p, P - f64(lr) * ((M / f64(c1)) / (np.sqrt(V / f64(c2)) + f64(eps)) + f64(wd) * P),
                               rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------------------------------- FlashAttention-2
@pytest.mark.parametrize("B, nh, N, d", [(2, 3, 45, 16), (1, 1, 32, 64), (1, 2, 7, 8)])
def test_flash_attention2_minimal_with_shared_tiles(B, nh, N, d):
    Bc = Br = 32
    q, k, v = (rng(s).standard_normal((B, nh, N, d)).astype(f32) for s in (7, 8, 9))
    O, L = np.full_like(q, np.nan), np.full((B, nh, N), np.nan, f32)
    scale = f32(1 / np.sqrt(d))
    smem = (3 * Bc * d + Bc * Br) * 4
    fn("flash_attn2_forward")((B, nh), (Bc,), (q, k, v, i32(N), i32(d), i32(cdiv(N, Bc)), i32(cdiv(N, Br)), i32(Bc),
                                               i32(Br), scale, O, L), shared_mem=smem)
    s = np.einsum("bhnd,bhmd->bhnm", q.astype(f64), k.astype(f64)) * f64(scale)
    mx = s.max(-1, keepdims=True)
    e = np.exp(s - mx)
    np.testing.assert_allclose(O, e / e.sum(-1, keepdims=True) @ v.astype(f64), rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(L, mx[..., 0] + np.log(e.sum(-1)), rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------- 16-bit pairs
@pytest.mark.parametrize("n2", [301, 1, 64])
def test_half2_fma_max_and_division_round_once(n2):
    x = rng(10).standard_normal(2 * n2).astype(np.float16)
    s = rng(11).uniform(0.5, 3, 2 * n2).astype(np.float16)
    ab = np.array([[1.5, -0.75], [0.25, 0.1]], f32)
    y = np.zeros(2 * n2, np.float16)
    fn("half2_axpb_relu_div")((2,), (64,), (x, ab, s, y, i32(n2)))
    a, b = (np.tile(row.astype(np.float16), n2).astype(f64) for row in ab)
    t = np.maximum((a * x.astype(f64) + b).astype(np.float16), np.float16(0))  # __hfma2: one rounding (exact in f64)
    np.testing.assert_array_equal(y, (t.astype(f64) / s.astype(f64)).astype(np.float16))


@pytest.mark.parametrize("n2", [157, 1])
def test_bfloat162_fma_and_clamp_round_once(n2):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    a, b, c = (rng(s).standard_normal(2 * n2).astype(bf16) for s in (12, 13, 14))
    out = np.zeros(2 * n2, bf16)
    fn("bf162_fma_clamp")((cdiv(n2, 64),), (64,), (a, b, c, out, f32(-1.0), f32(1.25), i32(n2)))
    fused = (a.astype(f64) * b.astype(f64) + c.astype(f64)).astype(bf16)  # the exact sum, rounded once
    np.testing.assert_array_equal(out.astype(f64), np.clip(fused.astype(f64), -1.0, 1.25))


# -------------------------------------------------------------------------------------------- warp-level atomics
@pytest.mark.parametrize("n, threshold", [(1001, 60), (31, 0), (5, 99)])
def test_warp_aggregated_atomic_stream_compaction(n, threshold):
    src = rng(15).integers(0, 100, n).astype(i32)
    dst, count = np.full(n, -1, i32), np.zeros(1, i32)
    fn("filter_k")((cdiv(n, 128),), (128,), (dst, count, src, i32(n), i32(threshold)))
    kept = src[src > threshold]
    assert count[0] == kept.size
    np.testing.assert_array_equal(np.sort(dst[:kept.size]), np.sort(kept))  # the order is the schedule's, as on a GPU
    np.testing.assert_array_equal(dst[kept.size:], -1)


@pytest.mark.parametrize("n", [1000, 70, 1])
def test_coalesced_group_and_activemask_in_branches_then_the_warp_meets_again(n):
    """The lanes of an `if` form a cg::coalesced_threads() group (later those of another an __activemask()) while the
    others go on to a __syncwarp() and a full-mask __reduce_add_sync, where all meet again.  Was a BarrierError
    ("lanes meet in different warp collectives"): the lanes at the __syncwarp took those still forming their group
    for arrived."""
    src = rng(26).integers(-50, 50, n).astype(i32)
    warps = cdiv(n, 128) * 4  # every warp launched, those past n included
    dst, count = np.full(n, -1, i32), np.zeros(1, i32)
    counts, low = np.zeros(warps, u32), np.zeros(warps, u32)
    fn("compact_then_count_per_warp")((cdiv(n, 128),), (128,), (dst, count, counts, low, src, i32(n)))
    padded = np.concatenate([src, np.zeros(warps * 32 - n, i32)]).reshape(warps, 32)  # lanes past n keep nothing
    kept = src[src > 0]
    assert count[0] == kept.size
    np.testing.assert_array_equal(np.sort(dst[:kept.size]), np.sort(kept))
    np.testing.assert_array_equal(counts, (padded > 0).sum(1))
    bits = (padded < -25).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    np.testing.assert_array_equal(low, bits.sum(1).astype(u32))  # 0: no lane of the warp took the branch


def cuda_coalesced_scan(v: np.ndarray) -> np.ndarray:
    """CUDA's scan of a coalesced group by rank (cooperative_groups/details/coalesced_scan.h): at step i each rank
    adds the value i ranks below it, in float32."""
    out = v.copy()
    i = 1
    while i < v.size:
        out = np.array([out[r] + out[r - i] if i <= r else out[r] for r in range(v.size)], f32)
        i *= 2
    return out


def cuda_coalesced_reduce(v: np.ndarray) -> f32:
    """CUDA's reduce of a coalesced group (details/coalesced_reduce.h): a power-of-two size halves by shfl_down
    (rank 0's sum), any other is the last rank of the scan."""
    if v.size & (v.size - 1):
        return cuda_coalesced_scan(v)[-1]
    out, offset = v.copy(), v.size // 2
    while offset:
        out = np.array([out[r] + (out[r + offset] if r + offset < v.size else out[r]) for r in range(v.size)], f32)
        offset //= 2
    return out[0]


@pytest.mark.parametrize("k", [3, 4, 5, 8, 13, 31, 32])
def test_coalesced_group_float_reduce_and_scans_associate_as_cudas(k):
    """Were summed rank by rank here, ((v0 + v1) + v2) + v3, where CUDA halves a power-of-two group by shfl_down,
    (v0 + v2) + (v1 + v3), and scans any other size by rank: float32 sums differed in their last bits."""
    r = rng(27)
    x = (r.standard_normal(128) * 10.0 ** r.uniform(-4, 4, 128)).astype(f32)  # magnitudes apart: rounding shows
    sums, inclusive, exclusive = (np.full(128, np.nan, f32) for _ in range(3))
    fn("coalesced_float_sums")((1,), (128,), (x, sums, inclusive, exclusive, i32(k)))
    for warp in range(4):
        v = x[warp * 32:warp * 32 + k]
        lanes = slice(warp * 32, warp * 32 + k)
        scan = cuda_coalesced_scan(v)
        np.testing.assert_array_equal(sums[lanes], np.full(k, cuda_coalesced_reduce(v)))
        np.testing.assert_array_equal(inclusive[lanes], scan)
        np.testing.assert_array_equal(exclusive[lanes], np.concatenate([[0], scan[:-1]]).astype(f32))
        assert np.isnan(sums[warp * 32 + k:(warp + 1) * 32]).all()  # the lanes outside the group wrote nothing


def test_tile_inclusive_scan_applies_op_in_cudas_operand_order():
    """CUDA's scan step is op(own, value d ranks below); it was op(below, own) here, the same for a sum but not for
    cg::less with a NaN: less(x, NaN) is x, less(NaN, x) NaN (CUDA's definition, `b < a ? b : a`)."""
    x = np.array([1, np.nan, 3, 0, np.nan, 2, 5, 1, 4, 4], f32)
    out = np.zeros_like(x)
    fn("tile_running_min")((1,), (32,), (x, out, i32(x.size)))

    def less(a, b):
        return b if b < a else a

    want = []
    for t in range(0, 12, 4):  # tiles of 4; lanes past n hold +inf
        vals = list(np.concatenate([x, [np.inf] * 2])[t:t + 4])
        d = 1
        while d < 4:
            vals = [less(vals[r], vals[r - d]) if r >= d else vals[r] for r in range(4)]
            d *= 2
        want += vals
    np.testing.assert_array_equal(out, np.array(want[:x.size], f32))  # NaN where CUDA's order keeps it
    assert np.isnan(out[1]) and out[2] == 1  # rank 1: less(NaN, 1) is NaN; rank 2: less(less(3, NaN), 1) is 1


@pytest.mark.parametrize("n, bins", [(999, 13), (40, 1), (3, 7)])
def test_match_any_sync_histogram_one_atomic_per_key_per_warp(n, bins):
    keys = rng(16).integers(0, bins, n).astype(i32)
    hist = np.zeros(bins, u32)
    fn("match_any_histogram")((3,), (96,), (keys, hist, i32(n)))
    np.testing.assert_array_equal(hist, np.bincount(keys, minlength=bins))


@pytest.mark.parametrize("n", [250, 32, 7])
def test_reduce_add_sync_on_a_ragged_last_warp(n):
    x = rng(17).integers(0, 2 ** 32, n, dtype=np.uint64).astype(u32)
    sums = np.zeros(cdiv(n, 32), u32)
    fn("warp_sums_reduce_add")((cdiv(n, 128),), (128,), (x, sums, i32(n)))
    np.testing.assert_array_equal(sums, [int(x[k:k + 32].astype(np.uint64).sum()) % 2 ** 32 for k in range(0, n, 32)])


@pytest.mark.parametrize("n", [300, 128, 45])
def test_ballot_sync_radix_split_is_stable(n):
    keys = rng(18).integers(0, 2 ** 32, n, dtype=np.uint64).astype(u32)
    out = np.zeros(n, u32)
    for bit in (0, 7, 31):
        fn("radix_split_pass<128>")((cdiv(n, 128),), (128,), (keys, out, i32(n), i32(bit)))
        tiles = (keys[k:k + 128] for k in range(0, n, 128))
        want = np.concatenate([t[np.argsort((t >> bit) & 1, kind="stable")] for t in tiles])
        np.testing.assert_array_equal(out, want, err_msg=f"bit {bit}")


# -------------------------------------------------------------------------------------------- sums and integers
def test_kahan_block_sums_keep_float32_sums_to_float64s_accuracy():
    n = 100_003
    x = (rng(19).standard_normal(n) * 1e3 + 1e4).astype(f32)
    partial = np.zeros(5, f32)
    fn("kahan_block_sum")((5,), (128,), (x, partial, np.uint64(n)))
    exact = x.astype(f64).sum()
    naive = np.cumsum(x, dtype=f32)[-1]  # a plain float32 running sum drifts
    assert abs(partial.astype(f64).sum() - exact) <= 1e-7 * abs(exact) < abs(f64(naive) - exact)


@pytest.mark.parametrize("n", [77, 1])
def test_umulhi_brev_funnelshift_bits(n):
    a, b = (rng(s).integers(0, 2 ** 32, n, dtype=np.uint64).astype(u32) for s in (20, 21))
    hi, rev, funnel, reduced = (np.zeros(n, u32) for _ in range(4))
    fn("bit_tricks")((1,), (128,), (a, b, hi, rev, funnel, reduced, i32(n)))
    A, B = [int(v) for v in a], [int(v) for v in b]
    np.testing.assert_array_equal(hi, [p * q >> 32 for p, q in zip(A, B)])
    np.testing.assert_array_equal(rev, [int(f"{p:032b}"[::-1], 2) for p in A])
    np.testing.assert_array_equal(funnel, [((q << 32 | p) << (i & 31) >> 32) & 0xFFFFFFFF
                                           for i, (p, q) in enumerate(zip(A, B))])
    np.testing.assert_array_equal(reduced, [p * (i + 1) >> 32 for i, p in enumerate(A)])


@pytest.mark.parametrize("name, dtype, width, squared", [("stencil_stats<float, 5, true>", f32, 5, True),
                                                         ("stencil_stats<double, 4, false>", f64, 4, False)])
@pytest.mark.parametrize("n", [203, 3])
def test_cuda_std_array_tuple_if_constexpr_launch_bounds_template(name, dtype, width, squared, n):
    x = rng(22).standard_normal(n).astype(dtype)
    out, where = np.zeros(n, dtype), np.zeros(n, i32)
    fn(name)((cdiv(n, 256),), (256,), (x, out, where, i32(n)))
    window = x[np.clip(np.arange(n)[:, None] + np.arange(width) - width // 2, 0, n - 1)].astype(f64)
    np.testing.assert_allclose(out, (window * window if squared else window).sum(1), rtol=1e-6)
    np.testing.assert_array_equal(where, np.arange(n) + np.argmax(window, 1) - width // 2)


def test_size_t_grid_stride_loop_past_two_to_the_31_through_an_nvcc_raw_kernel():
    # RawKernel(code, name, options, backend): a 4th positional argument was taken as sanitize=
    kernel = RawKernel((R18 / "styles.cu").read_text(), "offset_scale", OPTS, "nvcc")
    assert (kernel.backend, kernel.sanitize) == ("nvcc", False)
    n, base = 1000, 2 ** 32 - 500  # base + i crosses 2^32: the % 7 must see 64-bit values
    x, out = rng(23).standard_normal(n).astype(f32), np.zeros(n, f32)
    kernel((3,), (128,), (x, out, np.uint64(n), np.uint64(base)))
    np.testing.assert_array_equal(out, x * ((base + np.arange(n, dtype=np.uint64)) % 7).astype(f32))


# -------------------------------------------------------------------------------------------- module globals
@pytest.mark.parametrize("rows, cols, blocks", [(53, 70, 4), (1, 300, 8), (9, 1, 2)])
def test_persistent_kernel_with_an_atomic_work_queue_reset_by_memset(rows, cols, blocks):
    m = rng(24).standard_normal((rows, cols)).astype(f32)
    out = np.full(rows, np.nan, f32)
    for _ in range(2):  # the queue head is reset between launches, as CuPy code does through the MemoryPointer
        module().get_global("queue_head").memset(0, 4)
        fn("persistent_rowsum")((blocks,), (128,), (m, out, i32(rows), i32(cols)))
        np.testing.assert_allclose(out, m.astype(f64).sum(1), rtol=1e-5, atol=1e-5)
    assert module().get_global("queue_head")[0] == rows + blocks  # every block took one row past the end


def test_constant_memory_filled_through_memory_pointer_copies():
    coeffs = np.array([1, -2, 0.5, 0.25, 0, 0, 0, 0], f32)
    x = rng(25).standard_normal(99).astype(f32)
    X = x.astype(f64)
    expected = 1 - 2 * X + 0.5 * X ** 2 + 0.25 * X ** 3
    poly, degree = module().get_global("c_poly"), module().get_global("c_degree")
    assert isinstance(poly, emu.cuda.MemoryPointer) and poly.ptr == poly.ctypes.data
    fillings = [  # the ways CuPy code fills a __constant__ symbol
        lambda: poly.copy_from_host(coeffs.ctypes.data_as(ctypes.c_void_p), coeffs.nbytes),
        lambda: poly.copy_from_host(coeffs.ctypes.data, coeffs.nbytes),
        lambda: poly.copy_from_device(coeffs.data, coeffs.nbytes),
        lambda: poly.copy_from(coeffs.data, coeffs.nbytes),
        lambda: poly.copy_from_host_async(coeffs.ctypes.data, coeffs.nbytes, emu.cuda.Stream()),
        lambda: emu.ndarray((8,), np.float32, poly).__setitem__(Ellipsis, coeffs),
    ]
    for fill in fillings:
        poly.memset(0xFF, poly.nbytes)  # NaN until filled
        fill()
        emu.ndarray((1,), np.int32, degree)[...] = 3
        y = np.zeros_like(x)
        fn("horner_const")((1,), (128,), (x, y, i32(x.size)))
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    back = np.zeros(8, f32)
    poly.copy_to_host(back.ctypes.data_as(ctypes.c_void_p), back.nbytes)
    np.testing.assert_array_equal(back, coeffs)


# -------------------------------------------------------------------------------------------- the API's refusals
SMALL = r'''
__constant__ float c_small[4];
template <class T> __global__ void twice(T* y) { y[threadIdx.x] *= 2; }
extern "C" __global__ void one(float* y) { y[0] = 1.0f; }
'''


@pytest.mark.parametrize("make, error, message", [
    (lambda: RawKernel(SMALL, "one", (), "gcc"), ValueError, "Invalid backend gcc"),
    (lambda: RawKernel(SMALL, "one", backend="nvcc", jitify=True), ValueError, "Jitify only supports NVRTC"),
    (lambda: RawKernel(SMALL, "one", (), True), TypeError,
     r"Argument 'backend' has incorrect type \(expected str, got bool\)"),
    (lambda: RawModule(code=SMALL, backend="nvcc", name_expressions=["twice<float>"]), ValueError,
     "only nvrtc supports retrieving the mangled names for the given name expressions"),
    (lambda: RawModule(code=SMALL, backend="NVRTC"), ValueError, "Invalid backend NVRTC"),
    (lambda: RawModule(code=SMALL, backend="nvcc", jitify=True), ValueError, "Jitify only supports NVRTC"),
])
def test_backend_and_jitify_are_refused_as_cupy_refuses_them(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_backends_jitify_and_translate_cucomplex_build_the_same_kernel():
    for backend, jitify in (("nvrtc", False), ("nvrtc", True), ("nvcc", False)):
        y = np.zeros(1, f32)
        RawKernel(SMALL, "one", ("-std=c++17",), backend, translate_cucomplex=True, jitify=jitify)((1,), (1,), (y,))
        assert y[0] == 1.0
        mod = RawModule(code=SMALL, backend=backend, jitify=jitify,
                        **({"name_expressions": ["twice<float>"]} if backend == "nvrtc" else {}))
        kernel = mod.get_function("one")
        assert (kernel.backend, kernel.jitify, kernel.sanitize) == (backend, jitify, False)


def test_memory_pointer_copies_past_the_symbol_or_of_the_wrong_kind_are_refused():
    mod = RawModule(code=SMALL)
    c = mod.get_global("c_small")
    big = np.arange(5, dtype=f32)
    with pytest.raises(ValueError, match=r"copy_from_host of 20 bytes runs past the end of 'c_small' \(16 bytes\)"):
        c.copy_from_host(big.ctypes.data, big.nbytes)
    with pytest.raises(ValueError, match="copy_from_device of 16 bytes reads past the end of its 8-byte source"):
        c.copy_from_device(big[:2].data, 16)
    with pytest.raises(TypeError, match="a host pointer is an int or a ctypes pointer"):
        c.copy_from_host(big, 16)
    with pytest.raises(ValueError, match=r"needs 32 bytes, past the end of 'c_small' \(16 bytes\)"):
        emu.ndarray((8,), np.float32, c)
    c.copy_from_host(big.ctypes.data, 16)
    np.testing.assert_array_equal(c, big[:4])  # still the NumPy array of its elements


# -------------------------------------------------------------------------------------------- fast-math intrinsics
FAST = r'''
extern "C" __global__ void fast_intrinsics(const float* e, const float* p, const float* y, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[5 * i + 0] = __expf(e[i]);
    out[5 * i + 1] = __exp10f(e[i] * 0.25f);
    out[5 * i + 2] = __logf(p[i]);
    out[5 * i + 3] = __log10f(p[i]);
    out[5 * i + 4] = __powf(p[i], y[i]);
}
'''


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distance in float32 steps (same-sign finite values; equal infinities and NaNs count 0)."""
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return np.where(same, 0, np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)))


def test_fast_exp_log_and_pow_round_their_argument_products_as_the_gpus_instruction_sequences():
    """__expf(x) is ex2.approx(x * log2(e)) on a GPU, the product rounded to float: that rounding is most of its
    documented 2 + 1.16|x| ulp.  It was expf(x) here, correctly rounded: 54 ulp from the GPU's at x = 54.75.  The
    approximate instructions are exp2f / log2f here, so the reference is exp2 / log2 in float64 of the float32
    products, rounded once (glibc's exp2f/log2f are within 0.502 ulp: 1 step allowed)."""
    e = np.concatenate([np.linspace(-87, 88, 301), [80.0, -80.0, 0.0, 1.0]]).astype(f32)
    p = np.concatenate([np.geomspace(1e-30, 1e30, 301), [-2.0, 0.0, 1.0, np.inf]]).astype(f32)
    y = np.concatenate([np.linspace(-3, 3, 301), [2.0, 0.0, 5.0, 1.0]]).astype(f32)
    out = np.zeros((e.size, 5), f32)
    RawKernel(FAST, "fast_intrinsics", OPTS)((cdiv(e.size, 128),), (128,), (e, p, y, out, i32(e.size)))
    c = {k: f32(v) for k, v in (("log2e", np.log2(np.e)), ("log2_10", np.log2(10)), ("ln2", np.log(2)),
                                 ("log10_2", np.log10(2)))}
    with np.errstate(all="ignore"):
        lg2 = np.log2(p.astype(f64)).astype(f32)
        want = np.stack([np.exp2((e * c["log2e"]).astype(f64)).astype(f32),
                         np.exp2((e * f32(0.25) * c["log2_10"]).astype(f64)).astype(f32),
                         lg2 * c["ln2"], lg2 * c["log10_2"],
                         np.exp2((y * lg2).astype(f64)).astype(f32)], 1)
        assert ulps(out, want).max() <= 1
        accurate = np.exp(e.astype(f64)).astype(f32)
    assert ulps(out[:, 0], accurate).max() >= 50  # the correctly rounded exp is not the GPU's
    # a negative base or 0 ** 0 goes through lg2.approx: NaN, where powf gives 4 and 1
    assert np.isnan(out[-4, 4]) and np.isnan(out[-3, 4]) and out[-2, 4] == 1.0


# -------------------------------------------------------------------------------------------- Python scalars
SCALARS = r'''
#include <cuda_bf16.h>
#include <cuda_fp16.h>
extern "C" __global__ void scalars(float* out, float f, double d, int n, unsigned char c, __half h, __nv_bfloat16 b,
                                   float2 z, double2 w) {
    out[0] = f; out[1] = (float)d; out[2] = (float)n; out[3] = c; out[4] = __half2float(h);
    out[5] = __bfloat162float(b); out[6] = z.x; out[7] = z.y; out[8] = (float)w.x; out[9] = (float)w.y;
}
'''


def scalar_arguments():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return [f32(1.5), 2.25, -3, 7, np.float16(0.5), ml_dtypes.bfloat16(0.75), np.complex64(1 + 2j), 3 + 4j]


@pytest.mark.parametrize("slot, value, message", [
    (0, 2.5, r"argument 1 \('f'\) .* is float but got float 2.5, a Python scalar, which CuPy passes as np.float64 "
             r"\(8 bytes\): the kernel would read its bytes as the wrong type .*; pass np.float32\(2.5\)"),
    (0, 2, r"is float but got int 2, a Python scalar, which CuPy passes as np.int64 \(8 bytes\)"),
    (1, 2, r"argument 2 \('d'\) .* is double but got int 2, a Python scalar, which CuPy passes as np.int64"),
    (4, 0.5, r"argument 5 \('h'\) .* is __half but got float 0.5, .* pass np.float16\(0.5\)"),
    (5, 0.75, r"argument 6 \('b'\) .* is __nv_bfloat16 but got float 0.75, .* pass its bits as np.uint16"),
    (6, 1 + 2j, r"argument 7 \('z'\) .* is a 8-byte pair of floats but got complex \(1\+2j\), a Python scalar, which "
                r"CuPy passes as np.complex128 \(16 bytes\)"),
    (7, 3.0, r"argument 8 \('w'\) .* pair of doubles but got float 3.0, a Python scalar, which CuPy passes as "
             r"np.float64"),
])
def test_python_scalars_a_gpu_would_read_as_other_bits_are_refused(slot, value, message):
    """Were converted to the parameter's type here, where CuPy's int64 / float64 / complex128 bytes read on a GPU
    as another number without an error (2.5 into a float parameter: the float64's low half, 0.0)."""
    args, out = scalar_arguments(), np.zeros(10, f32)
    # CuPy passes a Python int as an int64, a float as a float64, a complex as a complex128: an int into an int or
    # unsigned char parameter, a float into a double and a complex into a double2 read the value, and pass
    RawKernel(SCALARS, "scalars")((1,), (1,), (out, *args))
    np.testing.assert_array_equal(out, [1.5, 2.25, -3, 7, 0.5, 0.75, 1, 2, 3, 4])
    args[slot] = value
    with pytest.raises(TypeError, match=message):
        RawKernel(SCALARS, "scalars")((1,), (1,), (np.zeros(10, f32), *args))
