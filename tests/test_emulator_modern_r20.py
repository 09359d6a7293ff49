"""Round 20: the emulator runs llm.c-style and modern-CUDA kernels unchanged (tests/emu_kernels/r20/modern.cu).

What was wrong before this round, each fixed in kernels/emu/ and checked here:

* ``cg::thread_block_tile<32, cg::thread_block>`` -- CUDA's declaration is ``thread_block_tile<Size, ParentT = void>``
  and ``tiled_partition<N>(block)`` returns the two-parameter type -- did not compile (the stand-in took one
  parameter), so no kernel of this file built.
* A tile cut from a tile counted its place among the block's tiles: ``tiled_partition<4>(tile16).meta_group_size()``
  was 24 in a 96-thread block where CUDA says 4 (``ParentT::size() / Size``), its ``meta_group_rank()`` up to 23.
* A runtime tile ``tiled_partition(block, 32)`` at the end of a 44-thread block said ``size() == 32`` where CUDA's
  mask holds 12 threads.
* ``tile.shfl`` / ``cg::reduce`` over a value wider than 8 bytes (a Welford struct, a float4) was a static_assert;
  CUDA's cooperative groups move any trivially copyable value.
* ``cg::this_grid().is_valid()`` was true in an ordinary launch (CUDA: only a cooperative launch has the grid's
  workspace).
* Device ``printf`` returned vsnprintf's character count; CUDA's returns the number of arguments parsed.
* A ``__device__ constexpr`` (or ``const``) table crashed Python (SIGSEGV) in every memcheck / racecheck /
  initcheck launch: the sanitized build's globals were copied back into the plain build's read-only page.  Such a
  variable's ``get_global`` array now refuses writes with a ValueError instead of crashing too.
* Two instantiations of a ``__device__`` function template (llm.c's ``blockReduce<warpReduceMax>`` and
  ``blockReduce<warpReduceSum>``) shared their ``__shared__`` array, as did two expansions of one macro: a silent
  wrong sum where no barrier separates the uses.  Each now has its own, as on a GPU.
* ``alignas(N)`` / ``__align__(N)`` on a ``__shared__`` array was ignored past 16 bytes, and
  ``__shared__ __attribute__((aligned(N)))`` did not compile.

The other kernels (llm.c's layernorm forward and backward, online softmax, GELU, AdamW with stochastic rounding, the
bf16x2 encoder; every rounding mode of the 16-bit conversions bit for bit; pair arithmetic; integer and warp
intrinsics; atomics on every type; carved dynamic shared memory and templates through name_expressions) ran right
before this round, but their module used the two-parameter tile, so they fail on the round's start with it.  Each
is checked against float64 NumPy (bits against ml_dtypes / an exact table where CUDA rounds once) on ragged shapes.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import RawModule

ml_dtypes = pytest.importorskip("ml_dtypes")
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
SOURCE = Path(__file__).parent / "emu_kernels" / "r20" / "modern.cu"
TEMPLATES = ("grid_normalize<64>", "carve_and_filter<float, 5>", "carve_and_filter<double, 5>")
bf16, f16, f32, f64, i32, u32 = ml_dtypes.bfloat16, np.float16, np.float32, np.float64, np.int32, np.uint32


MODULE = dict(code=SOURCE.read_text(), name_expressions=TEMPLATES)
EMULATOR_BUILDS = [(MODULE, {})]  # built on the session's helper core meanwhile (tests/background_runs.py)


@lru_cache(maxsize=None)
def module(cooperative: bool = False) -> RawModule:
    return RawModule(**MODULE, enable_cooperative_groups=cooperative)


def fn(name, cooperative=False):
    return module(cooperative).get_function(name)


def rng(seed=0):
    return np.random.default_rng(seed)


def cdiv(a, b):
    return -(-a // b)


# ------------------------------------------------------------------------ exact 16-bit rounding references
@lru_cache(maxsize=None)
def table16(dtype):
    """Every finite value of a 16-bit float type in increasing order, with its bits (-0 left out)."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):  # the NaN patterns
        values = bits.view(dtype).astype(f64)
    keep = np.isfinite(values) & (bits != 0x8000)
    order = np.argsort(values[keep], kind="stable")
    return values[keep][order], bits[keep][order]


def round16(x, dtype, mode):
    """x (float64, exact) rounded once to `dtype` as CUDA's cvt does in `mode` (rn, rz, rd, ru); NaN is 0x7fff."""
    values, bits = table16(dtype)
    nan = np.isnan(x)
    xs = np.where(nan, 0.0, x)
    below = np.clip(np.searchsorted(values, xs, "right") - 1, 0, len(values) - 1)  # largest <= x
    above = np.clip(np.searchsorted(values, xs, "left"), 0, len(values) - 1)  # smallest >= x
    inf = 0x7c00 if dtype is f16 else 0x7f80
    top = values[-1] + (values[-1] - values[-2]) / 2  # round to nearest overflows from here
    lo = np.where(xs < values[0], inf | 0x8000, bits[below])  # below the most negative finite: -inf
    hi = np.where(xs > values[-1], inf, bits[above])
    if mode == "rn":
        d_lo, d_hi = xs - values[below], values[above] - xs
        pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (bits[above] % 2 == 0))
        r = np.where(pick_hi, bits[above], bits[below])
        r = np.where(xs >= top, inf, np.where(xs <= -top, inf | 0x8000, r))
    elif mode == "rd":
        r = np.where(xs > values[-1], bits[-1], lo)
    elif mode == "ru":
        r = np.where(xs < values[0], bits[0], hi)
    else:
        r = np.where(xs >= 0, np.where(xs > values[-1], bits[-1], lo), np.where(xs < values[0], bits[0], hi))
    r = np.where(np.isinf(xs), np.where(xs > 0, inf, inf | 0x8000), r)
    zero = (r & 0x7fff) == 0  # a zero result has x's sign in every mode (-0 from a tiny negative, +0 from above)
    r = np.where(zero, np.where(np.signbit(xs), 0x8000, 0), r)
    return np.where(nan, 0x7fff, r).astype(np.uint16)


def interesting_floats(seed):
    """Random bit patterns, the specials, and values exactly halfway between 16-bit neighbours (ties)."""
    g = rng(seed)
    random = g.integers(0, 1 << 32, 6000, dtype=np.uint64).astype(u32)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F7FFFFF, 0x477FF000,
                        0x477FEFFF, 0x477FE000, 0x33000000, 0x33000001, 0x32FFFFFF, 0x38800000, 0x387FFFFF,
                        0x3F808000, 0x3F818000, 0x3F808001, 0x00000001, 0x00800000, 0x7F7F8000, 0xFF7F8000,
                        0x7F7F7FFF, 0xC77FF000, 0x80000001], u32)
    base = g.integers(0x30000000, 0x48000000, 1000, dtype=np.uint64).astype(u32)
    ties = [(base & u32(0xFFFF0000)) | u32(0x8000), (base & u32(0xFFFE0000)) | u32(0x18000),
            (base & u32(0xFFFFE000)) | u32(0x1000), (base & u32(0xFFFFC000)) | u32(0x3000), base | u32(0x80000000)]
    return np.concatenate([special, random, *ties]).view(f32)


def bf16_array(values):
    return np.ascontiguousarray(values, dtype=f32).astype(bf16)


# ------------------------------------------------------------------------ cooperative groups: what was wrong
def test_tiles_of_tiles_count_their_place_within_the_parent_tile():
    out = np.zeros((44, 8), u32)
    fn("tile_places")((1,), (44,), (out,))
    rank = np.arange(44)
    assert (out[:, 0] == rank // 16).all() and (out[:, 1] == 3).all()  # 44 threads: three tiles of 16
    assert (out[:, 2] == rank % 16 // 4).all() and (out[:, 3] == 4).all()  # four tiles of 4 in each tile of 16
    assert (out[:32, 4] == 32).all() and (out[32:, 4] == 12).all()  # the block's last 32-tile holds 12 threads
    # 8-tiles of that short tile: 8 then 4 threads, floor(12 / 8) == 1 tile counted, as CUDA counts a tiled group
    assert (out[:, 5] == np.where(rank < 40, 8, 4)).all()
    assert (out[:32, 6] == rank[:32] % 32 // 8 * 100 + 4).all() and (out[32:, 6] == (rank[32:] - 32) // 8 * 100 + 1).all()
    assert not out[:, 7].any()  # an ordinary launch: the grid group is not valid


def test_grid_group_is_valid_in_a_cooperative_launch():
    out = np.zeros((44, 8), u32)
    fn("tile_places", cooperative=True)((1,), (44,), (out,))
    assert (out[:, 7] == 1).all()


def test_cg_reduce_of_a_twelve_byte_struct_and_a_float4_shuffle():
    rows, cols = 7, 45  # 3 warps per block, the last block ragged; 45 columns: lanes hold 1 or 2
    x = (rng(1).standard_normal((rows, cols)) * 3 + 1).astype(f32)
    stats = np.zeros((rows, 4), f32)
    fn("welford_rows")((cdiv(rows, 3),), (96,), (x, stats, i32(rows), i32(cols)))
    np.testing.assert_allclose(stats[:, 0], x.astype(f64).mean(1), rtol=0, atol=2e-6)
    np.testing.assert_allclose(stats[:, 1], x.astype(f64).var(1), rtol=2e-6)
    assert (stats[:, 2] == cols).all() and (stats[:, 3] == 31).all()  # lane 31's float4, every field


def test_printf_returns_the_number_of_arguments_parsed(capfd):
    x = np.array([1.5, -2.25, 3e-5], f32)
    returned = np.full(6, -9, i32)
    fn("print_rows")((1,), (32,), (x, i32(3), returned))
    assert returned.tolist() == [7, 0] * 3
    out = capfd.readouterr().out
    for i, v in enumerate(x):
        assert f"row {i}: {v:.3f} {v:5.1e} ok {chr(97 + i)} 0x{255 + i:x} {1 << 40} %\n" in out
    assert out.count("plain\n") == 3


# ------------------------------------------------------------------------ llm.c's kernels
def layernorm_reference(x, w, b):
    mean = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
    return (x - mean) * rstd * w + b, mean[:, 0], rstd[:, 0]


def test_layernorm_forward_bf16_x128_one_warp_per_row():
    N, C = 11, 40  # 2 warps a block, 6 blocks (the last half empty); 5 x128 per row: lanes 0-4 only
    g = rng(2)
    x, w, b = (bf16_array(g.standard_normal(s) * k + o) for s, k, o in (((N, C), 2, 0.5), (C, 0.5, 1), (C, 0.1, 0)))
    out, mean, rstd = np.zeros((N, C), bf16), np.zeros(N, f32), np.zeros(N, f32)
    fn("layernorm_forward")((cdiv(N, 2),), (64,), (out, mean, rstd, x, w, b, i32(N), i32(C)))
    ref, ref_mean, ref_rstd = layernorm_reference(*(a.astype(f64) for a in (x, w, b)))
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd, ref_rstd, rtol=1e-5)
    np.testing.assert_allclose(out.astype(f64), ref, rtol=2 ** -7, atol=2 ** -9)  # one bf16 rounding


def test_layernorm_backward_shared_atomics_then_global():
    N, C = 13, 37  # 4 warps a block, 4 blocks (the last with one row); 37 columns: a ragged lane loop
    g = rng(3)
    x, dout = g.standard_normal((N, C)), g.standard_normal((N, C))
    w = g.standard_normal(C)
    mean = x.mean(1)
    rstd = 1.0 / np.sqrt(x.var(1) + 1e-5)
    dinp, dw, db = np.ones((N, C), f32), np.zeros(C, f32), np.zeros(C, f32)  # dinp accumulates (+=)
    fn("layernorm_backward")((cdiv(N, 4),), (128,), (dinp, dw, db, dout.astype(f32), x.astype(f32), w.astype(f32),
                                                      mean.astype(f32), rstd.astype(f32), i32(N), i32(C)),
                             shared_mem=2 * C * 4)
    norm = (x - mean[:, None]) * rstd[:, None]
    dnorm = w * dout
    ref = 1.0 + rstd[:, None] * (dnorm - dnorm.mean(1, keepdims=True) - norm * (dnorm * norm).mean(1, keepdims=True))
    np.testing.assert_allclose(dinp, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, dout.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, (norm * dout).sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("C", [5, 77])  # fewer columns than lanes (idle lanes keep -inf), and a ragged loop
def test_online_softmax_one_warp_per_row(C):
    N = 5
    x = bf16_array(rng(C).standard_normal((N, C)) * 4)
    x[1, :2] = -np.inf  # masked entries
    out = np.zeros((N, C), f32)
    fn("softmax_online")((cdiv(N, 4),), (128,), (out, x, i32(N), i32(C)))
    xs = x.astype(f64)
    e = np.exp(xs - xs.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_gelu_forward_and_backward_bf16_x128():
    n = 8 * 37  # 37 packs of 8: a ragged last block
    g = rng(4)
    x = bf16_array(g.standard_normal(n) * 3)
    dout = bf16_array(g.standard_normal(n))
    y = np.zeros(n, bf16)
    fn("gelu_forward")((cdiv(n // 8, 32),), (32,), (y, x, i32(n)))
    d = dout.copy()
    fn("gelu_backward_inplace")((cdiv(n // 8, 32),), (32,), (d, x, i32(n)))
    xs = x.astype(f64)
    s = np.sqrt(2 / np.pi)
    t = np.tanh(s * (xs + 0.044715 * xs ** 3))
    np.testing.assert_allclose(y.astype(f64), 0.5 * xs * (1 + t), rtol=2 ** -7, atol=1e-6)
    grad = 0.5 * (1 + t) + xs * 0.5 * (1 - t * t) * s * (1 + 3 * 0.044715 * xs * xs)
    np.testing.assert_allclose(d.astype(f64), grad * dout.astype(f64), rtol=2 ** -7, atol=1e-6)


def noise_hash(x, seed):
    h = (x.astype(np.uint64) * 0x9E3779B1 + seed) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x85EBCA77) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE3D) & 0xFFFFFFFF
    h ^= h >> 16
    return h.astype(u32)


def test_adamw_with_stochastic_rounding_to_bf16():
    n, seed = 1000, 1234
    g = rng(5)
    master = g.standard_normal(n).astype(f32)
    grads = bf16_array(g.standard_normal(n) * 0.1)
    m, v = (g.standard_normal(n) * 0.01).astype(f32), (g.random(n) * 1e-3).astype(f32)
    params = master.astype(bf16)
    step = 3
    lr, b1, b2, eps, wd = (f32(h) for h in (1e-2, 0.9, 0.95, 1e-8, 0.1))  # the kernel's float hyperparameters
    c1, c2 = f32(1 - b1 ** step), f32(1 - b2 ** step)
    master_out, m_out, v_out = master.copy(), m.copy(), v.copy()
    fn("adamw")((cdiv(n, 128),), (128,), (params, master_out, grads, m_out, v_out, np.uint64(n), lr, b1, b2, c1, c2,
                                          eps, wd, f32(1.0), u32(seed)))
    gs, b1, b2 = grads.astype(f64), f64(b1), f64(b2)
    m_ref, v_ref = b1 * m + (1 - b1) * gs, b2 * v + (1 - b2) * gs * gs
    np.testing.assert_allclose(m_out, m_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(v_out, v_ref, rtol=1e-6, atol=1e-12)
    step_ref = f64(lr) * ((m_ref / f64(c1)) / (np.sqrt(v_ref / f64(c2)) + f64(eps)) + f64(wd) * master)
    np.testing.assert_allclose(master_out, master - step_ref, rtol=1e-6, atol=1e-6)
    # the bf16 copy, bit for bit from the kernel's own float result: up when the dropped bits beat the noise
    bits = master_out.view(u32)
    up = (bits & 0xFFFF) > (noise_hash(np.arange(n), seed) & 0xFFFF)
    expected = np.where(up, bits | 0xFFFF, bits & u32(0xFFFF0000)).view(f32).astype(bf16)
    assert (params.view(np.uint16) == expected.view(np.uint16)).all()
    assert 0 < up.sum() < n  # both ways happen


def test_encoder_bf162_adds_through_int4_loads():
    B, T, C, V = 2, 3, 24, 7
    g = rng(6)
    tokens = g.integers(0, V, (B, T)).astype(i32)
    wte, wpe = bf16_array(g.standard_normal((V, C))), bf16_array(g.standard_normal((T, C)))
    out = np.zeros((B, T, C), bf16)
    fn("encoder_forward")((cdiv(B * T * C // 8, 16),), (16,), (out, tokens, wte, wpe, i32(B), i32(T), i32(C)))
    exact = wte.astype(f64)[tokens] + wpe.astype(f64)[None]
    assert (out.view(np.uint16) == round16(exact.ravel(), bf16, "rn").reshape(exact.shape)).all()


# ------------------------------------------------------------------------ 16-bit conversions and pair math
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN inputs
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_every_rounding_mode_of_float_and_double_to_bf16_and_half_bit_for_bit():
    x = interesting_floats(7)
    g = rng(8)
    d = np.concatenate([g.standard_normal(x.size // 2) * 10.0 ** g.integers(-9, 6, x.size // 2),
                        x[: x.size - x.size // 2].astype(f64) * (1 + 2.0 ** -30)])  # past float32's precision
    d[np.isnan(d)] = 1.0
    out = np.zeros((x.size, 10), np.uint16)
    fn("convert_16bit")((cdiv(x.size, 256),), (256,), (x, d, out, i32(x.size)))
    x64 = x.astype(f64)
    for k, (dtype, mode) in enumerate([(bf16, m) for m in ("rn", "rz", "rd", "ru")] + [(f16, m) for m in ("rn", "rz", "rd", "ru")]):
        expected = round16(x64, dtype, mode)
        bad = np.nonzero(out[:, k] != expected)[0]
        assert bad.size == 0, (dtype, mode, [(hex(x.view(u32)[i]), hex(out[i, k]), hex(expected[i])) for i in bad[:4]])
    assert (out[:, 8] == round16(d, bf16, "rn")).all() and (out[:, 9] == round16(d, f16, "rn")).all()
    assert (out[:, 0] == x.astype(bf16).view(np.uint16))[~np.isnan(x)].all()  # ml_dtypes agrees where defined


def test_bf162_and_half2_arithmetic_rounds_once():
    n = 2000
    g = rng(9)
    a, b, c = ((g.standard_normal(2 * n) * 4.0 ** g.integers(-3, 4, 2 * n)) for _ in range(3))
    f = g.standard_normal(2 * n).astype(f32) * 100
    for dtype, out_index in ((bf16, 3), (f16, 4)):
        a16, b16, c16 = (v.astype(dtype) for v in (a, b, c))
        outs = [np.zeros(5 * n, u32), np.zeros(5 * n, u32)]
        fn("pair_math")((cdiv(n, 128),), (128,), (a16.view(u32), b16.view(u32), c16.view(u32), *outs, f, i32(n)))
        got = (outs[0] if dtype is bf16 else outs[1]).reshape(n, 5)
        x, y, z = (v.astype(f64) for v in (a16, b16, c16))
        for k, exact in enumerate([x + y, x * y, x * y + z, x - y, f.astype(f64)]):
            expected = round16(exact, dtype, "rn").view(u32)
            assert (got[:, k] == expected).all(), (dtype, k, np.nonzero(got[:, k] != expected)[0][:4])


# ------------------------------------------------------------------------ integer and warp intrinsics
def fns_reference(mask, base, offset):
    if offset == 0:
        return base if mask >> base & 1 else 0xFFFFFFFF
    count, step = abs(offset), (1 if offset > 0 else -1)
    for pos in range(base, 32 if step > 0 else -1, step):
        if mask >> pos & 1:
            count -= 1
            if count == 0:
                return pos
    return 0xFFFFFFFF


def test_bit_intrinsics_bit_for_bit():
    n = 600
    g = rng(10)
    a = g.integers(0, 1 << 32, n, dtype=np.uint64).astype(u32)
    a[:4] = [0, 1, 0x80000000, 0xFFFFFFFF]
    b = g.integers(0, 1 << 32, n, dtype=np.uint64).astype(u32)
    s = g.integers(0, 1 << 16, n).astype(i32)
    s[:3] = [32, 33, 0xFFFF]  # funnel shifts past 31: wrapped (l, r) and clamped (lc)
    out = np.zeros((n, 9), u32)
    fn("bit_intrinsics")((cdiv(n, 128),), (128,), (a, b, s, out, i32(n)))
    for i in range(n):
        x, y, sel = int(a[i]), int(b[i]), int(s[i])
        both = y << 32 | x
        expected = [bin(x).count("1"), (x & -x).bit_length(), 32 - x.bit_length(), int(f"{x:032b}"[::-1], 2),
                    sum((both >> 8 * (sel >> 4 * k & 7) & 0xFF) << 8 * k for k in range(4)),
                    (both << (sel & 31)) >> 32 & 0xFFFFFFFF, (both >> (sel & 31)) & 0xFFFFFFFF,
                    (both << min(sel, 32)) >> 32 & 0xFFFFFFFF, fns_reference(x, sel & 31, (sel >> 8) % 41 - 20)]
        assert out[i].tolist() == expected, (i, hex(x), hex(y), sel)


def test_warp_intrinsics_on_a_ragged_last_warp():
    n = 77  # the third warp has 13 lanes in the branch
    v = rng(11).integers(-50, 50, n).astype(i32)
    out = np.zeros((96, 8), u32)
    fn("warp_intrinsics")((1,), (96,), (v, out, i32(n)))
    for i in range(n):
        first, lane = i // 32 * 32, i % 32
        lanes = np.arange(first, min(first + 32, n))
        mine = v[lanes]
        expected = [(1 << lanes.size) - 1 if lanes.size < 32 else 0xFFFFFFFF, int(mine.sum()) & 0xFFFFFFFF,
                    int(mine.max()) & 0xFFFFFFFF, int(mine.min()) & 0xFFFFFFFF,
                    sum(1 << k for k in range(lanes.size) if mine[k] & 3 == v[i] & 3),
                    sum(1 << k for k in range(lanes.size) if mine[k] < 0), 0, 0]
        if lanes.size == 32:
            src8, src16 = lane ^ 4, lane ^ 9
            expected[6] = int(v[first + src8]) & 0xFFFFFFFF  # xor 4 stays in its segment of 8
            # xor 9 in segments of 16: a partner in a later segment is out, the lane keeps its own value
            expected[7] = int(v[first + src16 if src16 < (lane & ~15) + 16 else i]) & 0xFFFFFFFF
        assert out[i].tolist() == expected, i


# ------------------------------------------------------------------------ atomics
def test_atomics_on_every_type():
    n = 200
    v = rng(12).integers(-40, 40, n).astype(i32)
    d, h2, b2 = np.zeros(1), np.zeros(2, f16), np.zeros(2, bf16)
    h, b = np.array([7, 0], f16), np.array([-3, 0], bf16)
    u16, fmax = np.array([65000], np.uint16), np.array([-np.inf], f32)
    inc, dec, per_block = np.zeros(1, u32), np.zeros(1, u32), np.zeros(4, f32)
    ll, aref_sum, aref_max, f2 = np.zeros(1, np.int64), np.zeros(1, f32), np.array([-1000], i32), np.zeros(2, f32)
    fn("atomics_all_types")((4,), (64,), (v, i32(n), d, h2, b2, h, b, u16, fmax, inc, dec, per_block, ll, aref_sum,
                                          aref_max, f2))
    assert d[0] == v.sum() * 0.5
    assert h2.tolist() == [(v & 7).sum(), -(v & 3).sum()] and b2.tolist() == [(v & 1).sum(), 2 * (v & 1).sum()]
    assert h.tolist() == [7, (v & 1).sum()] and b.tolist() == [-3, n]  # the neighbouring element untouched
    assert u16[0] == (65000 + 3 * n) % 65536
    assert fmax[0] == (v * 0.25).max()
    wrap_inc = wrap_dec = 0
    for _ in range(n):  # CUDA's atomicInc / atomicDec wrap rules
        wrap_inc = 0 if wrap_inc >= 5 else wrap_inc + 1
        wrap_dec = 7 if wrap_dec == 0 or wrap_dec > 7 else wrap_dec - 1
    assert (inc[0], dec[0]) == (wrap_inc, wrap_dec)
    assert per_block.tolist() == [64, 64, 64, 8]
    assert ll[0] == int(v.max()) * -1000000000
    assert aref_sum[0] == n * 0.5 and aref_max[0] == v.max()
    assert f2.tolist() == [n, (v & 1).sum()]


# ------------------------------------------------------------------------ const tables in the sanitizer builds
CONST_TABLES = r"""
__device__ constexpr float kTaps[5] = {0.0625f, 0.25f, 0.375f, 0.25f, 0.0625f};
__device__ const int kOffsets[3] = {-1, 0, 1};
__device__ float scale = 2.0f;
extern "C" __global__ void smooth(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float acc = 0.0f;
    for (int k = 0; k < 5; ++k) {
        int j = i + k - 2;
        if (j >= 0 && j < n) acc += kTaps[k] * x[j];
    }
    y[i] = scale * acc + kOffsets[i % 3];
}
"""


def test_constexpr_device_tables_under_memcheck():
    # The sanitizer build runs in a child process; the launch copied every __device__ variable back into the
    # plain build's memory afterwards -- into kTaps' read-only page, which crashed Python (SIGSEGV).
    m = RawModule(code=CONST_TABLES)
    m.get_global("scale")[...] = 3.0
    x = np.arange(10, dtype=f32)
    y = np.zeros(10, f32)
    m.get_function("smooth")((1,), (32,), (x, y, i32(10)), memcheck=True)
    expected = 3.0 * np.convolve(x.astype(f64), [0.0625, 0.25, 0.375, 0.25, 0.0625], "same") + np.arange(10) % 3 - 1
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert m.get_global("kTaps").tolist() == [0.0625, 0.25, 0.375, 0.25, 0.0625]


def test_get_global_refuses_writes_to_a_const_variable():
    m = RawModule(code=CONST_TABLES)
    taps, offsets = m.get_global("kTaps"), m.get_global("kOffsets")
    with pytest.raises(ValueError, match="read-only"):
        taps[...] = 1.0  # was a segmentation fault
    with pytest.raises(ValueError, match="'kOffsets' is declared const"):
        offsets.copy_from_host(np.zeros(3, i32).ctypes.data, 12)
    with pytest.raises(ValueError, match="'kTaps' is declared const"):
        taps.memset(0, 4)
    assert offsets.tolist() == [-1, 0, 1]
    m.get_global("scale")[...] = 5.0  # the non-const one stays writable
    assert m.get_global("scale").tolist() == [5.0]


# ------------------------------------------------------------------------ __shared__ declarations: one per site
SHARED_SITES = r"""
template <int K>
__device__ float block_sum(float v) {  // a shared-memory tree: the result is read from s[0] after the last barrier
    __shared__ float s[128];
    s[threadIdx.x] = v;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
        __syncthreads();
    }
    return s[0];
}
#define SCRATCH(name) __shared__ __align__(64) float name[4];
extern "C" __global__ void two_sums(const float* x, float* out, unsigned long long* misaligned) {
    float a = block_sum<0>(x[threadIdx.x]);  // two instantiations: two arrays on a GPU
    float b = block_sum<1>(2.0f * x[threadIdx.x]);
    SCRATCH(first) SCRATCH(second)  // one macro, two arrays
    __shared__ alignas(128) float tile[33];
    __shared__ __attribute__((aligned(256))) float wide[3];
    if (threadIdx.x < 4) { first[threadIdx.x] = a; second[threadIdx.x] = b; }
    tile[threadIdx.x % 33] = 0.0f;
    wide[threadIdx.x % 3] = 0.0f;
    __syncthreads();
    out[2 * threadIdx.x] = first[threadIdx.x % 4];
    out[2 * threadIdx.x + 1] = second[threadIdx.x % 4];
    if (threadIdx.x == 0) {
        misaligned[0] = (unsigned long long)(size_t)first % 64 + (size_t)second % 64;
        misaligned[1] = (unsigned long long)(size_t)tile % 128 + __cvta_generic_to_shared(wide) % 256;
    }
}
"""


def test_each_template_instantiation_and_macro_expansion_has_its_own_shared_array():
    # block_sum<0> and block_sum<1> shared one array (thread 0 wrote its next value into s[0] before the others
    # read the first sum: 2 instead of 128), and so did the two arrays of one macro
    x = np.ones(128, f32)
    out, misaligned = np.zeros((128, 2), f32), np.full(2, 7, np.uint64)
    RawModule(code=SHARED_SITES).get_function("two_sums")((1,), (128,), (x, out, misaligned))
    assert (out[:, 0] == 128).all() and (out[:, 1] == 256).all()


def test_alignas_and_aligned_attributes_on_shared_arrays_are_honoured():
    # alignas(128) gave a 16-byte boundary; __attribute__((aligned(256))) did not compile
    x = np.ones(128, f32)
    out, misaligned = np.zeros((128, 2), f32), np.full(2, 7, np.uint64)
    RawModule(code=SHARED_SITES).get_function("two_sums")((1,), (128,), (x, out, misaligned))
    assert misaligned.tolist() == [0, 0]


# ------------------------------------------------------------------------ templates, shared memory, grid sync
@pytest.mark.parametrize("dtype, name", [(f32, "carve_and_filter<float, 5>"), (f64, "carve_and_filter<double, 5>")])
def test_dynamic_shared_memory_carved_into_three_arrays(dtype, name):
    n = 13
    g = rng(13)
    a, c = g.random(n).astype(dtype), g.random(n)
    b = np.arange(n, dtype=i32) - 4
    out = np.zeros(n, dtype)
    shared = (n * np.dtype(dtype).itemsize + 4 * n + 7) // 8 * 8 + 8 * n
    fn(name)((1,), (8,), (a, b, c, out, i32(n)), shared_mem=shared)
    taps = np.array([0.0625, 0.25, 0.375, 0.25, 0.0625])
    filtered = np.convolve(a.astype(f64), taps, mode="same")
    np.testing.assert_allclose(out, filtered * b[::-1] + c, rtol=1e-6 if dtype is f32 else 1e-14,
                               atol=1e-6 if dtype is f32 else 0)


def test_memcpy_async_double_buffered_row_sums():
    blocks, rows, cols = 3, 4, 75
    x = rng(15).standard_normal((blocks * rows, cols)).astype(f32)
    sums = np.zeros(blocks * rows, f32)
    fn("row_sums_pipelined")((blocks,), (64,), (x, sums, i32(rows), i32(cols)), shared_mem=2 * cols * 4)
    np.testing.assert_allclose(sums, x.astype(f64).sum(1), rtol=1e-5, atol=1e-5)


def test_grid_sync_normalizes_with_grid_stride_loops():
    n = 1000
    x = rng(14).random(n).astype(f32)
    partial = np.zeros(3, f32)
    y = x.copy()
    fn("grid_normalize<64>", cooperative=True)((3,), (64,), (y, partial, i32(n)))
    np.testing.assert_allclose(partial.sum(), x.astype(f64).sum(), rtol=1e-6)
    np.testing.assert_allclose(y, x / x.astype(f64).sum(), rtol=1e-6)
