"""Round 7 of CUDA written by others on the emulator (tests/emu_kernels/r7/*.cu): kernels written the way 2025-2026
public code writes them, each run with no edits against a float64 (or exact integer) NumPy reference on ragged
shapes: vLLM-style rms_norm / fused_add_rms_norm over a 16-byte vector of __nv_bfloat162 pairs, act_and_mul with the
activation as a function-pointer template parameter, rotary embedding with if constexpr, a simplified paged
attention over block tables; libcu++ (<cuda/std/...>: numeric_limits, array, pair, clamp, bit_cast) with lambdas,
constexpr tables and a __grid_constant__ parameter struct; cooperative-groups scans; cuda::atomic_ref tickets and
flags, and atomicCAS spin locks (a spinning thread must let the others run); CUB's BlockReduce (with ArgMax over
KeyValuePair), BlockScan and WarpReduce; an llm.c-style online softmax
with exp2f and -INFINITY, a Welford layernorm over float4 loads with cache hints, CAS-loop float atomicMax;
bitsandbytes-style NF4 dequantize, row-wise int8 quantization, a bf16 __hfma2 epilogue over int4 loads; a block
radix top-k, a __match_any_sync / __reduce_add_sync histogram and inline-PTX axpy.  Then the intrinsic edges this
round found wrong or missing: 16-bit <-> integer conversions in every rounding mode (64-bit NaN is
0x8000000000000000), __hmax_nan's canonical NaN, the _mask compares, shuffle offsets past 31 or negative (the
low 5 bits count, as shfl.sync's), __mul24 on 32-bit inputs, and numeric_limits of __half / __nv_bfloat16.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import CompileError, RawModule

ml_dtypes = pytest.importorskip("ml_dtypes")
bf16 = ml_dtypes.bfloat16
R7 = Path(__file__).parent / "emu_kernels" / "r7"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(77)

VLLM = ("vllm::rms_norm_kernel<__nv_bfloat16>", "vllm::fused_add_rms_norm_kernel<__nv_bfloat16, 8>",
        "vllm::act_and_mul_kernel<__nv_bfloat16, vllm::silu_kernel<__nv_bfloat16>, true>",
        "vllm::act_and_mul_kernel<float, vllm::gelu_tanh_kernel<float>, false>",
        "vllm::rotary_embedding_kernel<float, true>", "vllm::rotary_embedding_kernel<float, false>",
        "vllm::paged_attention_v1_kernel<64, 16, 128>", "rms_norm_cub<128>", "top1_gate<64>", "expert_offsets<96>")
MODERN = ("row_argmax<128>", "horner_unrolled<4, float>", "horner_unrolled<3, double>", "sum_last_block<128>")
LLMC, QUANT, SORT = ("layernorm_welford<128>",), ("dequantize_nf4_bf16<64>",), ("block_topk<128>",)
CUB = VLLM[7:]  # in vllm_style.cu too: vLLM's own rms_norm reduces with cub::BlockReduce


@lru_cache(maxsize=None)
def module(name: str, name_expressions: tuple = ()) -> RawModule:
    return RawModule(path=R7 / name, name_expressions=list(name_expressions)).compile()


def kernel(file: str, name: str, expressions: tuple = ()):
    return module(file, expressions).get_function(name)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def as_bf16(x) -> np.ndarray:
    """float32 values rounded once to bfloat16."""
    return np.asarray(x, np.float32).astype(bf16)


# ------------------------------------------------------------------------------------------------
# vLLM-style kernels
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens, hidden", [(5, 200), (3, 37)])
def test_rms_norm_bf16_with_a_static_shared_block_reduce(tokens, hidden):
    x, w = as_bf16(rng.standard_normal((tokens, hidden))), as_bf16(rng.standard_normal(hidden))
    out = np.zeros_like(x)
    kernel("vllm_style.cu", VLLM[0], VLLM)((tokens,), (96,), (out, x, w, np.float32(1e-6), np.int32(tokens),
                                                        np.int32(hidden)))
    xd = x.astype(np.float64)
    rstd = (1 / np.sqrt((xd ** 2).mean(1, keepdims=True) + 1e-6)).astype(np.float32)
    expect = as_bf16(as_bf16(x.astype(np.float32) * rstd).astype(np.float32) * w.astype(np.float32))
    np.testing.assert_array_equal(out.view(np.uint16), expect.view(np.uint16))


def test_fused_add_rms_norm_over_a_16_byte_vector_of_bf16_pairs():
    tokens, hidden = 4, 136  # 17 vectors of 8 per row
    inp, res = as_bf16(rng.standard_normal((tokens, hidden))), as_bf16(rng.standard_normal((tokens, hidden)))
    w = as_bf16(rng.standard_normal(hidden))
    got_inp, got_res = inp.copy(), res.copy()
    kernel("vllm_style.cu", VLLM[1], VLLM)((tokens,), (64,), (got_inp, got_res, w, np.float32(1e-6), np.int32(tokens),
                                                       np.int32(hidden)))
    s = as_bf16(inp.astype(np.float32) + res.astype(np.float32))
    np.testing.assert_array_equal(got_res.view(np.uint16), s.view(np.uint16))
    rstd = (1 / np.sqrt((s.astype(np.float64) ** 2).mean(1, keepdims=True) + 1e-6)).astype(np.float32)
    expect = as_bf16(as_bf16(s.astype(np.float32) * rstd).astype(np.float32) * w.astype(np.float32))
    np.testing.assert_array_equal(got_inp.view(np.uint16), expect.view(np.uint16))


def test_act_and_mul_with_the_activation_as_a_function_pointer_template_parameter():
    tokens, d = 5, 77
    x = as_bf16(rng.standard_normal((tokens, 2 * d)))
    out = np.zeros((tokens, d), bf16)
    kernel("vllm_style.cu", VLLM[2], VLLM)((tokens,), (64,), (out, x, np.int32(d)))
    a, b = x[:, :d].astype(np.float64), x[:, d:].astype(np.float32)
    expect = as_bf16(as_bf16(a / (1 + np.exp(-a))).astype(np.float32) * b)
    np.testing.assert_array_equal(out.view(np.uint16), expect.view(np.uint16))
    xf = rng.standard_normal((tokens, 2 * d)).astype(np.float32)
    out = np.zeros((tokens, d), np.float32)
    kernel("vllm_style.cu", VLLM[3], VLLM)((tokens,), (64,), (out, xf, np.int32(d)))
    a, b = xf[:, :d].astype(np.float64), xf[:, d:].astype(np.float64)
    gelu = 0.5 * b * (1 + np.tanh(np.sqrt(2 / np.pi) * (b + 0.044715 * b ** 3)))
    np.testing.assert_allclose(out, a * gelu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neox", [True, False])
def test_rotary_embedding_neox_and_gptj_layouts(neox):
    tokens, heads, kv_heads, head_size, rot = 6, 4, 2, 24, 16  # only the first rot dims of each head turn
    pos = rng.integers(0, 10, tokens).astype(np.int64)
    cache = rng.standard_normal((10, rot)).astype(np.float32)
    q, k = rng.standard_normal((tokens, heads, head_size)).astype(np.float32), \
        rng.standard_normal((tokens, kv_heads, head_size)).astype(np.float32)
    got_q, got_k = q.copy(), k.copy()
    kernel("vllm_style.cu", VLLM[4] if neox else VLLM[5], VLLM)(
        (tokens,), (32,), (pos, got_q, got_k, cache, np.int32(rot), np.int64(heads * head_size),
                     np.int64(kv_heads * head_size), np.int32(heads), np.int32(kv_heads), np.int32(head_size)))

    def rope(t):
        t = t.astype(np.float64)
        cos, sin = cache[pos][:, None, :rot // 2], cache[pos][:, None, rot // 2:]
        xs, ys = (slice(0, rot // 2), slice(rot // 2, rot)) if neox else (slice(0, rot, 2), slice(1, rot, 2))
        x, y = t[..., xs].copy(), t[..., ys].copy()
        t[..., xs], t[..., ys] = x * cos - y * sin, y * cos + x * sin
        return t
    np.testing.assert_allclose(got_q, rope(q), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_k, rope(k), rtol=1e-5, atol=1e-6)


def test_paged_attention_v1_over_block_tables_with_grouped_kv_heads():
    seqs, heads, kv_heads, head_size, block = 3, 4, 2, 64, 16
    lens, max_blocks, n_blocks = np.array([37, 5, 16], np.int32), 3, 9
    tables = rng.permutation(n_blocks).astype(np.int32).reshape(seqs, max_blocks)
    k_cache, v_cache = (rng.standard_normal((n_blocks, kv_heads, block, head_size)).astype(np.float32) for _ in "kv")
    q = rng.standard_normal((seqs, heads, head_size)).astype(np.float32)
    out = np.zeros_like(q)
    scale = head_size ** -0.5
    kernel("vllm_style.cu", VLLM[6], VLLM)((heads, seqs), (128,), (out, q, k_cache, v_cache, np.int32(kv_heads),
                                                                np.float32(scale), tables, lens, np.int32(max_blocks)),
                                           shared_mem=4 * int(lens.max()))
    for s in range(seqs):
        tok = np.arange(lens[s])
        for h in range(heads):
            kv = h // (heads // kv_heads)
            keys = k_cache[tables[s, tok // block], kv, tok % block].astype(np.float64)
            values = v_cache[tables[s, tok // block], kv, tok % block].astype(np.float64)
            p = np.exp(keys @ q[s, h] * scale - (keys @ q[s, h] * scale).max())
            np.testing.assert_allclose(out[s, h], p @ values / p.sum(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# libcu++, lambdas, constexpr, __grid_constant__, cooperative-groups scans
# ------------------------------------------------------------------------------------------------
def test_grid_constant_parameter_struct_with_cuda_std_clamp():
    n = 1000
    x, y = rng.standard_normal(n).astype(np.float32), np.zeros(n, np.float32)
    params = np.zeros((), np.dtype([("x", np.uintp), ("y", np.uintp), ("n", np.int32), ("lo", np.float32),
                                    ("hi", np.float32), ("stride", np.int32)], align=True))
    params["x"], params["y"], params["n"], params["lo"], params["hi"], params["stride"] = \
        x.ctypes.data, y.ctypes.data, n, -0.5, 0.75, 3
    kernel("modern.cu", "clamp_grid_constant", MODERN)((cdiv(n, 3 * 128),), (128,), (params[()],))
    np.testing.assert_array_equal(y, np.clip(x, -0.5, 0.75))


def test_row_argmax_with_cuda_std_pair_array_numeric_limits_and_a_lambda():
    rows, cols = 7, 333
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[2, 5] = x[2, 100] = 10  # ties go to the lower index
    x[3] = -np.inf
    best, where = np.zeros(rows, np.float32), np.zeros(rows, np.int32)
    kernel("modern.cu", MODERN[0], MODERN)((rows,), (128,), (x, best, where, np.int32(cols)))
    np.testing.assert_array_equal(best, x.max(1))
    np.testing.assert_array_equal(where, x.argmax(1))


@pytest.mark.parametrize("name, dtype, per_thread", [(MODERN[1], np.float32, 4), (MODERN[2], np.float64, 3)])
def test_constexpr_table_and_generic_lambda_unrolled_over_a_template_int(name, dtype, per_thread):
    n = 1001
    x, y = rng.standard_normal(n).astype(dtype), np.zeros(n, dtype)
    kernel("modern.cu", name, MODERN)((cdiv(n, 64 * per_thread),), (64,), (x, y, np.int32(n)))
    xd = x.astype(np.float64)
    np.testing.assert_allclose(y, 1 + xd / 2 + xd ** 2 / 4 + xd ** 3 / 8, rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-6 if dtype == np.float32 else 1e-16)


@pytest.mark.parametrize("n, block", [(1000, 96), (31, 64)])
def test_stream_compaction_with_cg_exclusive_and_inclusive_scan(n, block):
    x = rng.integers(-5, 5, n).astype(np.int32)
    out, count = np.zeros(n, np.int32), np.zeros(1, np.int32)
    kernel("modern.cu", "compact_positive", MODERN)((cdiv(n, block),), (block,), (x, out, count, np.int32(n)))
    assert count[0] == (x > 0).sum()
    # in order within a block; blocks claim their slots in any order
    got = out[:count[0]]
    np.testing.assert_array_equal(np.sort(got), np.sort(x[x > 0]))
    for b in range(cdiv(n, block)):
        chunk = x[b * block:(b + 1) * block]
        kept = chunk[chunk > 0]
        if len(kept):
            start = int(np.flatnonzero(got == kept[0])[0]) if (got == kept[0]).any() else -1
            assert any(np.array_equal(got[s:s + len(kept)], kept) for s in np.flatnonzero(got == kept[0])), start


def test_cuda_std_math_follows_libcu_plus_plus_on_nan_and_signed_zero():
    a = np.array([1, -0.0, np.nan, np.inf, -3, 2.5, 0.0], np.float32)
    b = np.array([2, 1, 0, np.nan, -np.inf, 1, -0.0], np.float32)
    out, flags = np.zeros((7, 3), np.float32), np.zeros(7, np.int32)
    kernel("modern.cu", "std_math", MODERN)((1,), (32,), (a, b, out, flags, np.int32(7)))
    np.testing.assert_array_equal(out[:, 0], np.array([3, 1, np.nan, np.nan, np.inf, 3.5, 1], np.float32))
    # std::min(x, y) is (y < x) ? y : x and std::max(x, y) is (x < y) ? y : x: a NaN first operand wins
    np.testing.assert_array_equal(out[:, 1], [1, 0, np.nan, np.inf, -np.inf, 1, 0])
    np.testing.assert_array_equal(out[:, 2], [2, 1, np.nan, np.inf, -3, 2.5, 0])
    assert np.signbit(out[6, 2]) == False  # noqa: E712  max(+0, -0) keeps its first operand
    np.testing.assert_array_equal(flags, [2, 3, 6, 0, 1, 2, 2])


@pytest.mark.parametrize("check_races", [False, True])
def test_last_block_reduction_with_cuda_atomic_ref_ticket_and_float_fetch_max(check_races):
    n, blocks = 5000, 7
    x = rng.standard_normal(n).astype(np.float32)
    partials, ticket = np.zeros(blocks, np.float32), np.zeros(1, np.uint32)
    result, biggest = np.zeros(1, np.float32), np.full(1, -np.inf, np.float32)
    run = kernel("modern.cu", MODERN[3], MODERN)
    for _ in range(2):  # the last block resets the ticket: a second launch works the same
        run((blocks,), (128,), (x, np.int32(n), partials, ticket, result, biggest), check_races=check_races)
        assert ticket[0] == 0
        np.testing.assert_allclose(result[0], x.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
        assert biggest[0] == x.max()
    chunks = np.arange(n) // 128 % blocks  # block b reads the chunks of 128 numbered b, b + blocks, ...
    strided = np.bincount(chunks, x.astype(np.float64), blocks)
    np.testing.assert_allclose(partials, strided, rtol=1e-5, atol=1e-4)


def test_a_thread_spinning_on_an_atomic_flag_lets_the_producer_run():
    flag, data, seen = np.zeros(1, np.int32), np.zeros(1, np.float32), np.zeros(2, np.float32)
    kernel("modern.cu", "flag_handoff", MODERN)((1,), (96,), (flag, data, seen), timeout=20)  # was a timeout KernelFault
    np.testing.assert_array_equal(seen, [42, 42])


def test_missing_libcu_plus_plus_headers_are_named(tmp_path):
    for header, words in (("cuda/std/mdspan", "beyond the emulator's <cuda/std/...> stand-ins"),
                          ("cuda/annotated_ptr", "cuda::annotated_ptr")):  # (<cuda/barrier> exists since round 8)
        src = tmp_path / "k.cu"
        src.write_text(f'#include <{header}>\nextern "C" __global__ void k(int* x) {{ x[0] = 1; }}\n')
        with pytest.raises(CompileError, match="libcu\\+\\+") as info:
            RawModule(path=src).compile()
        assert words in str(info.value)
        assert ("limits" in str(info.value)) == header.startswith("cuda/std/")  # the stand-ins are listed


# ------------------------------------------------------------------------------------------------
# llm.c-style kernels
# ------------------------------------------------------------------------------------------------
def test_online_softmax_with_exp2f_and_masked_minus_infinity_entries():
    rows, cols = 9, 45
    x = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    x[1, ::3] = -np.inf
    x[2, 7:] = -np.inf  # lanes 7..31 see only masked entries: their running max stays -INFINITY
    out = np.zeros_like(x)
    kernel("llmc_style.cu", "softmax_online_exp2", LLMC)((cdiv(rows, 4),), (128,), (out, x, np.int32(rows), np.int32(cols)))
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(1, keepdims=True), rtol=2e-6, atol=1e-7)
    assert (out[2, 7:] == 0).all()


@pytest.mark.parametrize("cols", [64, 45, 1000])
def test_welford_layernorm_with_float4_streaming_loads(cols):
    rows = 9
    x = (rng.standard_normal((rows, cols)) * 2 + 5).astype(np.float32)
    w, b = rng.standard_normal(cols).astype(np.float32), rng.standard_normal(cols).astype(np.float32)
    out, mean, rstd = np.zeros_like(x), np.zeros(rows, np.float32), np.zeros(rows, np.float32)
    kernel("llmc_style.cu", LLMC[0], LLMC)(
        (rows,), (128,), (out, mean, rstd, x, w, b, np.int32(cols), np.float32(1e-5)))
    xd = x.astype(np.float64)
    mu, rs = xd.mean(1), 1 / np.sqrt(xd.var(1) + 1e-5)
    np.testing.assert_allclose(mean, mu, rtol=1e-6)
    np.testing.assert_allclose(rstd, rs, rtol=1e-5)
    np.testing.assert_allclose(out, (xd - mu[:, None]) * rs[:, None] * w + b, rtol=1e-5, atol=1e-5)


def test_float_atomic_max_by_cas_loop_and_by_the_sign_trick():
    n, seg = 1000, 37
    x = rng.standard_normal(n).astype(np.float32)
    x[:seg] = -np.abs(x[:seg])  # a segment of negatives only: the unsigned atomicMin half of the trick
    segments = cdiv(n, seg)
    by_cas, by_sign = np.full(segments, -np.inf, np.float32), np.full(segments, -np.inf, np.float32)
    abs_sum = np.zeros(1)
    kernel("llmc_style.cu", "segment_max", LLMC)((4,), (64,), (x, np.int32(n), np.int32(seg), by_cas, by_sign, abs_sum))
    padded = np.full(segments * seg, -np.inf, np.float32)
    padded[:n] = x
    np.testing.assert_array_equal(by_cas, padded.reshape(segments, seg).max(1))
    np.testing.assert_array_equal(by_sign, padded.reshape(segments, seg).max(1))
    np.testing.assert_allclose(abs_sum[0], np.abs(x.astype(np.float64)).sum(), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Quantization
# ------------------------------------------------------------------------------------------------
def test_nf4_dequantize_from_a_constant_code_book_into_bf16_pairs():
    name = QUANT[0]
    n_bytes = 200
    packed = rng.integers(0, 256, n_bytes).astype(np.uint8)
    absmax = (rng.random(cdiv(2 * n_bytes, 64)) * 3).astype(np.float32)
    out = np.zeros(2 * n_bytes, bf16)
    kernel("quant.cu", name, QUANT)((cdiv(n_bytes, 128),), (128,), (packed, absmax, out, np.int32(n_bytes)))
    code = module("quant.cu", QUANT).get_global("nf4_code")
    codes = np.stack([packed >> 4, packed & 15], 1).ravel()
    expect = as_bf16(code[codes] * absmax[np.arange(2 * n_bytes) // 64])
    np.testing.assert_array_equal(out.view(np.uint16), expect.view(np.uint16))


def test_rowwise_int8_quantization_and_half_to_integer_intrinsics():
    rows, cols = 5, 77
    x = (rng.standard_normal((rows, cols)) * 40).astype(np.float16)
    x[1, 3], x[2, 5], x[3, 1], x[3, 2] = np.nan, 30000, 2.5, -2.5
    q, scales = np.zeros((rows, cols), np.int8), np.zeros(rows, np.float32)
    floors, truncs, wide = (np.zeros((rows, cols), t) for t in (np.int32, np.int16, np.int64))
    kernel("quant.cu", "quantize_rowwise_int8", QUANT)((rows,), (64,), (x, q, scales, floors, truncs, wide, np.int32(cols)))
    xf = x.astype(np.float32)
    amax = np.nanmax(np.abs(xf), 1)  # fmaxf drops the NaN
    np.testing.assert_array_equal(scales, amax / np.float32(127))
    inv = np.float32(127) / amax
    ratio = xf * inv[:, None]
    expect_q = np.clip(np.where(np.isnan(ratio), 0, np.round(np.nan_to_num(ratio))), -127, 127)
    np.testing.assert_array_equal(q, expect_q)
    finite = np.nan_to_num(xf)
    np.testing.assert_array_equal(floors, np.where(np.isnan(xf), 0, np.floor(finite)))
    np.testing.assert_array_equal(truncs, np.where(np.isnan(xf), 0, np.clip(np.trunc(finite), -32768, 32767)))
    np.testing.assert_array_equal(wide, np.where(np.isnan(xf), -2 ** 63, np.round(finite)))  # 2.5 -> 2: even


def test_bf16_hfma2_epilogue_over_int4_loads_with_nan_propagating_max():
    n = 48
    a, b, c = (as_bf16(rng.standard_normal(n)) for _ in range(3))
    a[3] = np.nan
    out = np.zeros(n, bf16)
    kernel("quant.cu", "bf16_fma_clamp", QUANT)((1,), (32,), (a, b, c, out, np.float32(-1), np.float32(1.5),
                                                        np.int32(n // 8)))
    fused = [float(Fraction(float(p)) * Fraction(float(r)) + Fraction(float(s))) if not np.isnan(p) else np.nan
             for p, r, s in zip(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64))]
    rounded = as_bf16(np.array(fused, np.float64).astype(np.float32)).astype(np.float32)  # exact in float64 here
    # __hmax2_nan keeps the NaN, then __hmin2 (not _nan) drops it for the other operand
    np.testing.assert_array_equal(out.astype(np.float32), np.fmin(np.where(np.isnan(rounded), np.nan,
                                                                           np.maximum(rounded, -1)), 1.5))


# ------------------------------------------------------------------------------------------------
# Warp-level code: radix top-k, match_any + reduce_add, inline PTX
# ------------------------------------------------------------------------------------------------
def test_block_radix_topk_orders_nan_first_and_ties_by_index():
    rows, n, k = 4, 100, 10
    x = rng.standard_normal((rows, n)).astype(np.float32)
    x[1, 5] = np.nan  # as torch.topk: NaN is the largest
    x[2, 10:20] = x[2, 3] = 9.0
    x[3, 50], x[3, 51] = np.inf, -np.inf
    values, indices = np.zeros((rows, k), np.float32), np.zeros((rows, k), np.int32)
    kernel("warp_sort.cu", SORT[0], SORT)((rows,), (128,), (x, np.int32(n), np.int32(k),
                                                                                values, indices))
    for r in range(rows):
        order = sorted(range(n), key=lambda j: (not np.isnan(x[r, j]), -np.nan_to_num(x[r, j], nan=0.0), j))
        np.testing.assert_array_equal(indices[r], order[:k])
        np.testing.assert_array_equal(values[r], x[r, order[:k]])


@pytest.mark.parametrize("n", [1000, 45])
def test_match_any_groups_summed_with_reduce_add_over_each_groups_mask(n):
    bins = rng.integers(0, 7, n).astype(np.int32)
    weights = rng.integers(0, 100, n).astype(np.uint32)
    totals, counts, used = np.zeros(7, np.uint32), np.zeros(7, np.uint32), np.zeros(1, np.uint32)
    kernel("warp_sort.cu", "weighted_histogram", SORT)(
        (cdiv(n, 128),), (128,), (bins, weights, np.int32(n), totals, counts, used))
    np.testing.assert_array_equal(totals, np.bincount(bins, weights, 7))
    np.testing.assert_array_equal(counts, np.bincount(bins, minlength=7))
    assert used[0] == sum(len(set(bins[s:s + 32])) for s in range(0, n, 32))  # one atomic per group


def test_axpy_in_inline_ptx_vector_loads_fma_streaming_store_and_red_add():
    n4 = 77
    x, y = rng.standard_normal(4 * n4).astype(np.float32), rng.standard_normal(4 * n4).astype(np.float32)
    y0, total = y.copy(), np.zeros(1, np.float32)
    kernel("warp_sort.cu", "axpy_ptx", SORT)((3,), (32,), (x, y, np.float32(0.5), np.int32(n4), total))
    np.testing.assert_array_equal(y, (0.5 * x.astype(np.float64) + y0).astype(np.float32))  # fma: one rounding
    np.testing.assert_allclose(total[0], y.astype(np.float64).sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blocks, threads", [(1, 96), (3, 50)])
def test_atomic_cas_spin_lock_inside_a_block_and_a_warp(blocks, threads):
    lock, count, items = np.zeros(1, np.int32), np.zeros(1, np.int32), np.full(blocks * threads, -1, np.int32)
    kernel("warp_sort.cu", "append_under_spin_lock", SORT)((blocks,), (threads,), (lock, count, items), timeout=20)
    assert count[0] == blocks * threads and lock[0] == 0
    np.testing.assert_array_equal(np.sort(items), np.arange(blocks * threads))


# ------------------------------------------------------------------------------------------------
# CUB's block and warp collectives (the <cub/cub.cuh> stand-in)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens, hidden", [(5, 300), (2, 40)])
def test_rms_norm_with_cub_block_reduce_over_blockdim_valid_threads(tokens, hidden):
    x, w = rng.standard_normal((tokens, hidden)).astype(np.float32), rng.standard_normal(hidden).astype(np.float32)
    out = np.zeros_like(x)
    kernel("vllm_style.cu", CUB[0], VLLM)((tokens,), (128,), (out, x, w, np.float32(1e-6), np.int32(hidden)))
    xd = x.astype(np.float64)
    np.testing.assert_allclose(out, xd / np.sqrt((xd ** 2).mean(1, keepdims=True) + 1e-6) * w, rtol=1e-5, atol=1e-6)


def test_top1_gate_with_cub_argmax_over_key_value_pairs_in_a_shared_union():
    tokens, experts = 5, 70
    logits = rng.standard_normal((tokens, experts)).astype(np.float32)
    logits[2, 10] = logits[2, 20] = 9.0  # a tie: the lower expert wins (cub::ArgMax)
    weight, expert = np.zeros(tokens, np.float32), np.zeros(tokens, np.int32)
    kernel("vllm_style.cu", CUB[1], VLLM)((tokens,), (64,), (logits, np.int32(experts), weight, expert))
    np.testing.assert_array_equal(expert, logits.argmax(1))
    p = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    np.testing.assert_allclose(weight, 1 / p.sum(1), rtol=1e-5)


@pytest.mark.parametrize("valid", [20, 32])
def test_cub_block_scan_of_two_items_per_thread_and_warp_reduce_of_valid_items(valid):
    counts = rng.integers(0, 9, 192).astype(np.int32)
    offsets, total, warp_sums = np.zeros(192, np.int32), np.zeros(1, np.int32), np.zeros(3, np.int32)
    kernel("vllm_style.cu", CUB[2], VLLM)((1,), (96,), (counts, offsets, total, warp_sums, np.int32(valid)))
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    assert total[0] == counts.sum()
    np.testing.assert_array_equal(warp_sums, [counts[64 * w:64 * w + 64:2][:valid].sum() for w in range(3)])


def test_cub_beyond_the_stand_in_is_refused_by_name(tmp_path):
    src = tmp_path / "sort.cu"
    src.write_text("#include <cub/cub.cuh>\n"
                   'extern "C" __global__ void k(int* x) {\n'
                   "  using It = cub::TexObjInputIterator<int>;\n"  # (every block and warp collective since round 13)
                   "  __shared__ It temp;\n"
                   "  x[0] = sizeof(temp);\n}\n")
    with pytest.raises(CompileError, match=r"cub::TexObjInputIterator is not provided by minilora's CUDA emulator: "
                                           r"textures are not emulated"):
        RawModule(path=src).compile()
    src.write_text('#include <cub/device/device_reduce.cuh>\nextern "C" __global__ void k(int* x) { x[0] = 1; }\n')
    with pytest.raises(CompileError, match=r"CUB beyond the emulator's <cub/cub.cuh> stand-in"):
        RawModule(path=src).compile()


# ------------------------------------------------------------------------------------------------
# Intrinsic edges
# ------------------------------------------------------------------------------------------------
def _to_int(v: float, mode: str, lo: int, hi: int, nan: int) -> int:
    if np.isnan(v):
        return nan
    if np.isinf(v):
        return hi if v > 0 else lo
    r = {"rn": round, "rz": int, "rd": np.floor, "ru": np.ceil}[mode](Fraction(v) if mode == "rn" else v)
    return int(min(max(int(r), lo), hi))


def test_16bit_to_integer_conversions_in_every_rounding_mode():
    bits = np.array([0x3c00, 0x3e00, 0xbe00, 0x7e00, 0x7c00, 0xfc00, 0x7bff, 0x4d00, 0xcd00, 0x8000, 0x3800, 0x4100,
                     0x4500, 0xff80, 0x7fc0], np.uint16)
    out = np.zeros((len(bits), 16), np.int64)
    kernel("intrinsics.cu", "half_to_int")((1,), (32,), (bits, out, np.int32(len(bits))))
    i32, u32, i16, u16, i64, u64 = (-2**31, 2**31 - 1), (0, 2**32 - 1), (-2**15, 2**15 - 1), (0, 2**16 - 1), \
        (-2**63, 2**63 - 1), (0, 2**64 - 1)
    columns = [("h", "rn", i32, 0), ("h", "rd", i32, 0), ("h", "ru", u32, 0), ("h", "rz", i16, 0),
               ("h", "rn", i64, -2**63), ("h", "rz", u64, 2**63), ("h", "rz", (-128, 127), 0), ("h", "rz", (0, 255), 0),
               ("b", "rn", i32, 0), ("b", "rd", i64, -2**63), ("b", "ru", i16, 0), ("b", "rn", u16, 0),
               ("b", "rz", (-128, 127), 0), ("b", "rn", u64, 2**63), ("b", "rz", u32, 0), ("h", "rd", u16, 0)]
    halves, bfloats = bits.view(np.float16).astype(np.float64), bits.view(bf16).astype(np.float64)
    for col, (kind, mode, (lo, hi), nan) in enumerate(columns):
        expect = [_to_int(v, mode, lo, hi, nan) for v in (halves if kind == "h" else bfloats)]
        got = [int(v) & 0xFFFFFFFFFFFFFFFF if hi == 2**64 - 1 else int(v) for v in out[:, col]]
        assert got == expect, (col, kind, mode, got, expect)


def _all_finite(dtype) -> np.ndarray:
    values = np.arange(2**16, dtype=np.uint16).view(dtype)
    values = values[np.isfinite(values)].astype(np.float64)
    return np.unique(values)


def _round_exact(v: int, finite: np.ndarray, mode: str) -> float:
    """The 16-bit value of integer v rounded once (ties to even bits), from the sorted finite values."""
    big = float(finite[-1]) + float(finite[-1] - finite[-2])  # the power of two past the max: rounds to inf
    i = int(np.searchsorted(finite, float(v)))  # float(v) may round: the exact neighbours are near i
    near = [float(f) for f in finite[max(i - 2, 0):i + 2]]
    lo = max([f for f in near if Fraction(f) <= v], default=-big)
    hi = min([f for f in near if Fraction(f) >= v], default=big)
    if lo == v:
        return lo
    if mode == "rz":
        r = lo if v > 0 else hi
    elif mode == "rd":
        r = lo
    elif mode == "ru":
        r = hi
    else:
        d_lo, d_hi = Fraction(v) - Fraction(lo), Fraction(hi) - Fraction(v)
        if d_lo != d_hi:
            r = lo if d_lo < d_hi else hi
        elif big in (abs(hi), abs(lo)):  # a tie with the power of two past the max: it is the even one
            r = hi if abs(hi) == big else lo
        else:  # a tie: the neighbour with the even last bit
            r = lo if int(lo / _ulp(lo, finite)) % 2 == 0 else hi
    return np.inf if r == big else -np.inf if r == -big else r


def _ulp(x: float, finite: np.ndarray) -> float:
    i = np.searchsorted(finite, x)
    return float(finite[min(i + 1, len(finite) - 1)] - finite[i]) if x >= 0 else float(finite[i] - finite[i - 1])


def test_integer_to_16bit_conversions_round_once_in_every_mode():
    ints = np.array([1, 2049, -2049, 4097, 100000, -100000, 2**62 + 1, -(2**40) - 3, 65519, 65520, 0, 257, 2**53 + 3,
                     -(2**63), 2**63 - 1, 2**24 + 2**15 + 1], np.int64)
    out = np.zeros((len(ints), 8), np.uint16)
    kernel("intrinsics.cu", "int_to_16bit")((1,), (32,), (ints, out, np.int32(len(ints))))
    halves, bfloats = _all_finite(np.float16), _all_finite(bf16)
    for col, (table, dtype, mode, unsigned) in enumerate(
            [(halves, np.float16, m, False) for m in ("rn", "rz", "rd", "ru")] +
            [(bfloats, bf16, "rn", False), (bfloats, bf16, "rz", True), (bfloats, bf16, "rd", False),
             (bfloats, bf16, "ru", False)]):
        for row, v in enumerate(ints):
            exact = int(v) & 0xFFFFFFFFFFFFFFFF if unsigned else int(v)
            expect = _round_exact(exact, table, mode)
            got = float(out[row:row + 1, col].view(dtype)[0])
            assert got == expect, (col, mode, exact, got, expect)


def test_nan_max_min_return_the_canonical_nan_and_mask_compares():
    nan_bits = 0xFE01  # a negative NaN with a payload: the _nan forms answer 0x7fff, not their input's bits
    a = np.array([nan_bits, 0x3C00, 0x0000, 0x8000, 0x3C00], np.uint16)
    b = np.array([0x3C00, nan_bits, 0x8000, 0x0000, 0x4000], np.uint16)
    out, masks = np.zeros((5, 4), np.uint16), np.zeros((5, 3), np.uint32)
    kernel("intrinsics.cu", "nan_max_and_masks")((1,), (32,), (a, b, out, masks, np.int32(5)))
    np.testing.assert_array_equal(out[:2, :2], np.full((2, 2), 0x7FFF))
    np.testing.assert_array_equal(out[:2, 2:], np.full((2, 2), 0x3C00))  # as bf16, 0xfe01 is a finite -2^125
    np.testing.assert_array_equal(out[2:4, :2], [[0x0000, 0x8000], [0x0000, 0x8000]])  # +0 > -0
    np.testing.assert_array_equal(out[4], [0x4000, 0x3C00, 0x4000, 0x4000])
    # masks: lane 0 compares a with b, lane 1 b with a; 0xffff per lane where it holds
    np.testing.assert_array_equal(masks[4], [0, 0x0000FFFF, 0xFFFF0000])
    np.testing.assert_array_equal(masks[2], [0xFFFFFFFF, 0, 0xFFFFFFFF])  # -0 == +0
    np.testing.assert_array_equal(masks[0], [0, 0, 0xFFFFFFFF])  # unordered >= holds with a NaN


def test_shuffle_offsets_use_their_low_5_bits_as_shfl_sync():
    out = np.zeros((4, 32), np.int32)
    kernel("intrinsics.cu", "shuffle_offsets")((1,), (32,), (out,))
    lanes = np.arange(32)
    np.testing.assert_array_equal(out[0] - 100, np.where(lanes == 31, 0, lanes))  # -1: lane 31 reads lane 0
    np.testing.assert_array_equal(out[1] - 100, np.minimum(lanes + 1, 31) + (lanes == 31) * 0)
    seg = lanes % 16
    np.testing.assert_array_equal(out[2] - 100, np.where(seg >= 2, lanes - 2, lanes))
    np.testing.assert_array_equal(out[3] - 100, np.where(lanes >= 16, lanes - 16, lanes))


def test_mul24_ignores_the_top_8_bits():
    a = np.array([0x01000001, -1, 0x00800000, 0x7FFFFFFF, 12345, -0x00800000], np.int32)
    b = np.array([3, 0x00FFFFFF, 2, 0x00400000, -6789, 0x00800000], np.int32)
    s, u = np.zeros(6, np.int32), np.zeros(6, np.uint32)
    kernel("intrinsics.cu", "mul24")((1,), (32,), (a, b, s, u, np.int32(6)))

    def low24(v, signed):
        v = int(v) & 0xFFFFFF
        return v - (1 << 24) if signed and v >> 23 else v
    expect_s = [((low24(x, True) * low24(y, True)) + 2**31) % 2**32 - 2**31 for x, y in zip(a, b)]
    expect_u = [(low24(x, False) * low24(y, False)) % 2**32 for x, y in zip(a, b)]
    np.testing.assert_array_equal(s, expect_s)
    np.testing.assert_array_equal(u, expect_u)


def test_numeric_limits_of_half_and_bfloat16_through_cuda_std():
    out = np.zeros(14, np.uint16)
    kernel("intrinsics.cu", "limits_16bit")((1,), (1,), (out,))
    h, b = out[:6].view(np.float16), out[7:13].view(bf16)
    fh, fb = np.finfo(np.float16), ml_dtypes.finfo(bf16)
    np.testing.assert_array_equal(h.astype(np.float64), [fh.min, fh.max, fh.tiny, fh.eps, np.inf, fh.smallest_subnormal])
    np.testing.assert_array_equal(b.astype(np.float64), [float(fb.min), float(fb.max), float(fb.tiny), float(fb.eps),
                                                         np.inf, float(fb.smallest_subnormal)])
    assert (out[6], out[13]) == (11, 8)


def test_16bit_types_built_from_any_integer_type_and_converted_back_by_their_operators():
    rows = np.array([[70000, 5, 3000000001, -7], [65519, 2**40 + 1, -(2**20) - 1, 32767], [1, 2, 0, 0],
                     [4097, 2**63 - 1, 65520, -32768]], np.int64)  # unsigned 70000 and size_t: nvcc finds a constructor
    bits, back = np.zeros((len(rows), 8), np.uint16), np.zeros((len(rows), 10), np.int64)
    kernel("intrinsics.cu", "integer_constructors")((1,), (32,), (rows, bits, back, np.int32(len(rows))))
    for col_base, dtype in ((0, np.float16), (4, bf16)):
        finite = _all_finite(dtype)
        for r, (u, s, ll, short) in enumerate(rows):
            exact = [int(u) & 0xFFFFFFFF, int(s) & 0xFFFFFFFFFFFFFFFF, int(ll), int(short)]
            got = bits[r, col_base:col_base + 4].view(dtype).astype(np.float64)
            np.testing.assert_array_equal(got, [_round_exact(v, finite, "rn") for v in exact])
            x = float(got[2])
            expect = [_to_int(x, "rz", -2**31, 2**31 - 1, 0), _to_int(x, "rz", 0, 2**16 - 1, 0),
                      _to_int(x, "rz", -2**63, 2**63 - 1, -2**63), _to_int(x, "rz", -128, 127, 0), int(x != 0)]
            np.testing.assert_array_equal(back[r, (col_base // 4) * 5:(col_base // 4) * 5 + 5], expect)


def test_min_max_follow_fminf_fmaxf_on_nan_and_take_a_half_as_float():
    a = np.array([np.nan, 1.0, -0.0, 2.0, np.nan], np.float32)
    b = np.array([1.0, np.nan, 3.0, -5.0, np.nan], np.float32)
    h = np.array([-2.5, 3.0, np.nan, 0.5, 1.0], np.float16)
    out = np.zeros((5, 6), np.float32)
    kernel("intrinsics.cu", "min_max_overloads")((1,), (32,), (a, b, h, out, np.int32(5)))
    np.testing.assert_array_equal(out[:, 0], np.fmin(a, b))  # min(NaN, 1) was NaN: (b < a ? b : a)
    np.testing.assert_array_equal(out[:, 1], np.fmax(a, b))
    np.testing.assert_array_equal(out[:, 2], np.fmax(h.astype(np.float32), 0))  # max(__half, float) compiled nowhere
    np.testing.assert_array_equal(out[:, 3], np.fmin(a, b))
    np.testing.assert_array_equal(out[:, 4], [3, 7, 3, 3, 7])
    np.testing.assert_array_equal(out[:, 5], [1] * 5)
