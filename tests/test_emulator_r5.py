"""Round 5 of CUDA written by others on the emulator: CUDA's directed-rounding intrinsics (double and float,
checked against exact rational arithmetic), the SIMD video intrinsics and the integer bit intrinsics
(checked lane by lane against NumPy), then __shared__ structs and unions defined in place, kernels named like
C library functions, and kernels of the kind public CUDA code is made of (tests/emu_kernels/r5/*.cu), each
against a NumPy reference.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import CompileError, RawKernel, RawModule

R5 = Path(__file__).parent / "emu_kernels" / "r5"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(55)


@lru_cache(maxsize=None)
def module(name: str, name_expressions: tuple = ()) -> RawModule:
    return RawModule(path=R5 / name, name_expressions=list(name_expressions)).compile()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------------------------------------
# Directed rounding: each result r must bracket the exact value as its mode says
# ------------------------------------------------------------------------------------------------
OPS = ["add", "sub", "mul", "div", "rcp", "sqrt", "fma", "fms"]


def exact_result(op: str, a, b, c):
    """The exact value as a Fraction, or ('sqrt', x) for a square root (compared through squares)."""
    fa, fb, fc = Fraction(float(a)), Fraction(float(b)), Fraction(float(c))
    if op == "sqrt":
        return ("sqrt", abs(fa))
    return {"add": lambda: fa + fb, "sub": lambda: fa - fb, "mul": lambda: fa * fb,
            "div": lambda: fa / fb, "rcp": lambda: 1 / fb, "fma": lambda: fa * fb + fc,
            "fms": lambda: fa * fb - fc}[op]()


def compare(value, exact) -> int:
    """sign(value - exact) for a float value (inf included) and an exact result."""
    if np.isinf(value):
        return 1 if value > 0 else -1
    v = Fraction(float(value))
    if isinstance(exact, tuple):  # sqrt(x): compare v^2 with x (v >= 0)
        target, v = exact[1], v * v if v >= 0 else -v * v
    else:
        target = exact
    return (v > target) - (v < target)


def check_directed(r, exact, mode: str, dtype) -> bool:
    """r is the exact result rounded down (rd), up (ru) or toward zero (rz): no float lies between them."""
    c = compare(r, exact)
    if c == 0:
        return True
    if mode == "rz":
        mode = "rd" if compare(dtype(0), exact) < 0 else "ru"
    with np.errstate(over="ignore"):
        if mode == "rd":
            return c < 0 and compare(np.nextafter(r, dtype(np.inf)), exact) > 0
        return c > 0 and compare(np.nextafter(r, dtype(-np.inf)), exact) < 0


def zero_sum_is_negative(terms, mode: str) -> bool:
    """IEEE 754's sign of an exact zero sum of terms given as (is zero, sign bit): -0 when every term is -0,
    and in the round-down mode whenever not every term is +0."""
    if all(zero and negative for zero, negative in terms):
        return True
    return mode == "rd" and not all(zero and not negative for zero, negative in terms)


def sum_terms(op: str, a, b, c):
    product = (a == 0 or b == 0, bool(np.signbit(a) ^ np.signbit(b)))
    return {"add": [(a == 0, np.signbit(a)), (b == 0, np.signbit(b))],
            "sub": [(a == 0, np.signbit(a)), (b == 0, not np.signbit(b))],
            "fma": [product, (c == 0, np.signbit(c))],
            "fms": [product, (c == 0, not np.signbit(c))]}[op]


def directed_operands(dtype, n: int):
    info = np.finfo(dtype)
    a = rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))
    b = rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))
    c = rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))
    a, b, c = a.astype(dtype), b.astype(dtype), c.astype(dtype)
    # corners: overflow, subnormal results, exact results, cancellation to zero, a*b == c
    special = [(info.max, info.max, info.max), (-info.max, 2, 0), (info.tiny, info.tiny, info.tiny),
               (info.smallest_subnormal * 3, 0.5, 0), (1.5, 2, 3), (1, 3, 0), (2, 2, 4), (-2, 2, -4),
               (0.0, -0.0, 0.0), (-0.0, 0.0, -0.0), (3, 3, 9), (1e-3, 7, 7e-3), (info.max, 0.5, -info.max)]
    for k, (x, y, z) in enumerate(special):
        a[k], b[k], c[k] = x, y, z
    return a, b, c


@pytest.mark.parametrize("dtype, prefix", [(np.float64, "double"), (np.float32, "float")])
def test_directed_rounding_intrinsics_bracket_the_exact_result(dtype, prefix):
    n = 300
    a, b, c = directed_operands(dtype, n)
    results = {}
    for mode in ("rn", "rz", "rd", "ru"):
        out = np.zeros((n, 8), dtype)
        module("intrinsics.cu").get_function(f"{prefix}_{mode}")((cdiv(n, 64),), (64,), (a, b, c, out, np.int32(n)))
        results[mode] = out
    with np.errstate(all="ignore"):
        native = np.stack([a + b, a - b, a * b, a / b, dtype(1) / b, np.sqrt(np.abs(a))], axis=1)
    np.testing.assert_array_equal(results["rn"][:, :6], native)
    bad = []
    for mode in ("rz", "rd", "ru"):
        for i in range(n):
            for k, op in enumerate(OPS):
                r = results[mode][i, k]
                if op in ("div", "rcp") and b[i] == 0:
                    continue
                exact = exact_result(op, a[i], b[i], c[i])
                if not check_directed(r, exact, mode, dtype):
                    bad.append((mode, op, a[i], b[i], c[i], r))
                elif r == 0 and op in ("add", "sub", "fma", "fms") and exact == 0:
                    if np.signbit(r) != zero_sum_is_negative(sum_terms(op, a[i], b[i], c[i]), mode):
                        bad.append((mode, op, a[i], b[i], c[i], r, "sign of zero"))
    assert not bad, bad[:10]


# ------------------------------------------------------------------------------------------------
# SIMD video intrinsics and integer bit intrinsics, lane by lane against NumPy
# ------------------------------------------------------------------------------------------------
def simd_lanes(x: np.ndarray, lanes: int, signed: bool) -> np.ndarray:
    bits = 32 // lanes
    v = (x[:, None].astype(np.int64) >> (bits * np.arange(lanes))) & ((1 << bits) - 1)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v) if signed else v


def simd_pack(v: np.ndarray, lanes: int) -> np.ndarray:
    bits = 32 // lanes
    return ((v & ((1 << bits) - 1)) << (bits * np.arange(lanes))).sum(axis=1).astype(np.uint32)


def saturate(v, lanes: int, signed: bool):
    bits = 32 // lanes
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else np.clip(v, 0, (1 << bits) - 1)


def halving_avg_away_from_zero(s):
    return np.where(s < 0, s >> 1, (s + 1) >> 1)


# (name, lanes read as signed, lane function) in the order of the `simd` kernel's results, each for ...2 and ...4
SIMD_BINARY = [
    ("vadd", False, lambda x, y, L: x + y), ("vaddss", True, lambda x, y, L: saturate(x + y, L, True)),
    ("vaddus", False, lambda x, y, L: saturate(x + y, L, False)),
    ("vsub", False, lambda x, y, L: x - y), ("vsubss", True, lambda x, y, L: saturate(x - y, L, True)),
    ("vsubus", False, lambda x, y, L: saturate(x - y, L, False)),
    ("vabsdiffs", True, lambda x, y, L: abs(x - y)), ("vabsdiffu", False, lambda x, y, L: abs(x - y)),
    ("vavgs", True, lambda x, y, L: halving_avg_away_from_zero(x + y)),
    ("vavgu", False, lambda x, y, L: (x + y + 1) >> 1), ("vhaddu", False, lambda x, y, L: (x + y) >> 1),
    ("vmaxs", True, lambda x, y, L: np.maximum(x, y)), ("vmaxu", False, lambda x, y, L: np.maximum(x, y)),
    ("vmins", True, lambda x, y, L: np.minimum(x, y)), ("vminu", False, lambda x, y, L: np.minimum(x, y)),
]
COMPARISONS = [("eq", None, np.equal), ("ne", None, np.not_equal), ("ges", True, np.greater_equal),
               ("geu", False, np.greater_equal), ("gts", True, np.greater), ("gtu", False, np.greater),
               ("les", True, np.less_equal), ("leu", False, np.less_equal), ("lts", True, np.less),
               ("ltu", False, np.less)]
SIMD_BINARY += [(f"vcmp{c}", bool(s), lambda x, y, L, f=f: -f(x, y).astype(np.int64)) for c, s, f in COMPARISONS]
SIMD_BINARY += [(f"vset{c}", bool(s), lambda x, y, L, f=f: f(x, y).astype(np.int64)) for c, s, f in COMPARISONS]
SIMD_UNARY = [("vabs", lambda x, L: abs(x)), ("vabsss", lambda x, L: saturate(abs(x), L, True)),
              ("vneg", lambda x, L: -x), ("vnegss", lambda x, L: saturate(-x, L, True))]


def simd_expected(x: np.ndarray, y: np.ndarray) -> dict:
    expected = {}
    for name, signed, f in SIMD_BINARY:
        for L in (2, 4):
            expected[f"__{name}{L}"] = simd_pack(
                f(simd_lanes(x, L, signed), simd_lanes(y, L, signed), L), L)
    for name, signed in (("vsads", True), ("vsadu", False)):
        for L in (2, 4):
            expected[f"__{name}{L}"] = abs(simd_lanes(x, L, signed) - simd_lanes(y, L, signed)).sum(axis=1).astype(np.uint32)
    for name, f in SIMD_UNARY:
        for L in (2, 4):
            expected[f"__{name}{L}"] = simd_pack(f(simd_lanes(x, L, True), L), L)
    return expected


def byte_perm(x: int, y: int, s: int) -> int:
    data = (y << 32) | x
    return sum(((data >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n) for n in range(4))


def test_simd_video_intrinsics_lane_by_lane():
    corners = [0, 0xFFFFFFFF, 0x80008000, 0x7FFF7FFF, 0x80808080, 0x7F7F7F7F, 0x00FF00FF, 0x01010101, 0xFFFF0001]
    x = np.concatenate([rng.integers(0, 2**32, 200, dtype=np.uint64), np.repeat(corners, len(corners))]).astype(np.uint32)
    y = np.concatenate([rng.integers(0, 2**32, 200, dtype=np.uint64), np.tile(corners, len(corners))]).astype(np.uint32)
    y[:20] = x[:20]  # equal operands: the comparisons' other branch
    n = x.size
    out = np.zeros((n, 87), np.uint32)
    module("intrinsics.cu").get_function("simd")((cdiv(n, 128),), (128,), (x, y, out, np.int32(n)))
    expected = simd_expected(x, y)
    names = [f"__{name}{L}" for name, _, _ in SIMD_BINARY for L in (2, 4)]
    names += [f"__{name}{L}" for name in ("vsads", "vsadu") for L in (2, 4)]
    names += [f"__{name}{L}" for name, _ in SIMD_UNARY for L in (2, 4)]
    for k, name in enumerate(names):
        np.testing.assert_array_equal(out[:, k], expected[name], err_msg=name)
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    tail = out[:, len(names):]
    perm = [byte_perm(int(a), int(b), 0x3210 ^ (i & 0x7777)) for i, (a, b) in enumerate(zip(x, y))]
    np.testing.assert_array_equal(tail[:, 0], np.array(perm, np.uint32))
    signed_x, signed_y = x.view(np.int32).astype(np.int64), y.view(np.int32).astype(np.int64)
    np.testing.assert_array_equal(tail[:, 1], ((abs(signed_x - signed_y) + 7) % 2**32).astype(np.uint32))
    np.testing.assert_array_equal(tail[:, 2], ((abs(xi - yi) + 7) % 2**32).astype(np.uint32))
    shift = np.arange(n) & 31
    funnel = [((int(b) << 32 | int(a)) << int(s) >> 32) & 0xFFFFFFFF for a, b, s in zip(x, y, shift)]
    np.testing.assert_array_equal(tail[:, 3], np.array(funnel, np.uint32))
    funnel = [((int(b) << 32 | int(a)) >> int(s)) & 0xFFFFFFFF for a, b, s in zip(x, y, shift)]
    np.testing.assert_array_equal(tail[:, 4], np.array(funnel, np.uint32))


def signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def test_bit_intrinsics_32_and_64_bit():
    corners = [0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 0x00F0_0000_0000_0000, 12345]
    x = np.array(corners + list(rng.integers(0, 2**64, 56, dtype=np.uint64)), np.uint64)
    y = np.array(corners[::-1] + list(rng.integers(0, 2**64, 56, dtype=np.uint64)), np.uint64)
    n = x.size
    out = np.zeros((n, 12), np.uint64)
    module("intrinsics.cu").get_function("bits")((1,), (64,), (x, y, out, np.int32(n)))
    for i in range(n):
        a, b = int(x[i]), int(y[i])
        lo_a, lo_b = a & 0xFFFFFFFF, b & 0xFFFFFFFF
        expected = [bin(lo_a).count("1"), bin(a).count("1"), 32 - lo_a.bit_length(), 64 - a.bit_length(),
                    (lo_a & -lo_a).bit_length(), (a & -a).bit_length(),
                    int(f"{lo_a:032b}"[::-1], 2), int(f"{a:064b}"[::-1], 2),
                    (signed(lo_a, 32) * signed(lo_b, 32) >> 32) & 0xFFFFFFFF, lo_a * lo_b >> 32,
                    (signed(a, 64) * signed(b, 64) >> 64) % 2**64, a * b >> 64]
        assert [int(v) for v in out[i]] == expected, (hex(a), hex(b))


def test_halving_adds_do_not_overflow():
    ints = np.array([2**31 - 1, -2**31, -1, 0, 1, 7, -7, 2**31 - 2], np.int32)
    a, b = np.repeat(ints, ints.size), np.tile(ints, ints.size)
    out = np.zeros((a.size, 4), np.int32)
    module("intrinsics.cu").get_function("halving")((1,), (a.size,), (a, b, out, np.int32(a.size)))
    s, us = a.astype(np.int64) + b, a.view(np.uint32).astype(np.int64) + b.view(np.uint32)
    np.testing.assert_array_equal(out[:, 0], s >> 1)
    np.testing.assert_array_equal(out[:, 1], (s + 1) >> 1)
    np.testing.assert_array_equal(out[:, 2].view(np.uint32), us >> 1)
    np.testing.assert_array_equal(out[:, 3].view(np.uint32), (us + 1) >> 1)


# ------------------------------------------------------------------------------------------------
# __shared__ structs and unions defined in place; kernels named like C library functions
# ------------------------------------------------------------------------------------------------
SHARED_AND_NAMES = ("shared_and_names.cu", ("sqrt", "scale<float>", "scale<double>", "ops::twice", "ops::inner::log"))


def names_fn(name: str):
    return module(*SHARED_AND_NAMES).get_function(name)


@pytest.mark.parametrize("n", [1000, 256, 3])
def test_anonymous_shared_struct_with_arrays(n):
    x = rng.standard_normal(n).astype(np.float32)
    blocks = cdiv(n, 256)
    out = np.zeros((blocks, 3), np.float32)
    names_fn("block_stats")((blocks,), (256,), (x, out, np.int32(n)))
    padded = np.concatenate([x, np.zeros(blocks * 256 - n, np.float32)]).reshape(blocks, 256)
    np.testing.assert_allclose(out[:, 0], padded.sum(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[:, 1], [x[b * 256:(b + 1) * 256].max() for b in range(blocks)])
    np.testing.assert_array_equal(out[:, 2], [min(256, n - b * 256) for b in range(blocks)])


def test_named_shared_struct_defined_in_place_with_two_declarators():
    x = rng.permutation(64).astype(np.float32)
    out = np.zeros(64, np.float32)
    names_fn("pairs")((1,), (64,), (x, out))
    np.testing.assert_array_equal(out, np.full(64, 63 * 1000 + int(np.argmax(x)), np.float32))


def test_shared_union_and_file_scope_shared_struct():
    x = rng.standard_normal(128).astype(np.float32)
    out = np.zeros(128, np.uint32)
    names_fn("float_bits")((1,), (128,), (x, out))
    np.testing.assert_array_equal(out, x.view(np.uint32)[::-1])
    counts = np.zeros(2, np.int32)
    names_fn("count_positive")((1,), (96,), (x, counts, np.int32(128)))
    assert counts.tolist() == [int((x > 0).sum()), int((x <= 0).sum())]


def test_shared_struct_line_numbers_kept_in_messages():
    # The struct's text stays where it was: a compile error below it names the user's own line.
    src = ('extern "C" __global__ void k(float* out) {\n    __shared__ struct {\n        float a[32];\n'
           '    } s;\n    s.a[threadIdx.x] = 1.0f;\n    out[0] = undefined_name;\n}\n')
    with pytest.raises(CompileError, match=r":6:.*undefined_name"):
        RawKernel(src, "k").compile()


def test_kernels_named_like_c_library_functions():
    n = 300
    ints = rng.integers(-1000, 1000, n).astype(np.int32)
    out = np.zeros(n, np.int32)
    names_fn("abs")((cdiv(n, 128),), (128,), (ints, out, np.int32(n)))
    np.testing.assert_array_equal(out, np.abs(ints))
    x = rng.standard_normal(n).astype(np.float32)
    y = np.zeros(n, np.float32)
    names_fn("exp")((cdiv(n, 128),), (128,), (x, y, np.int32(n)))
    np.testing.assert_allclose(y, np.exp(x), rtol=1e-6)
    names_fn("copy")((cdiv(n, 128),), (128,), (x, y, np.int32(n)))
    np.testing.assert_array_equal(y, x)
    names_fn("memset")((cdiv(n, 128),), (128,), (y, np.float32(2.5), np.int32(n)))
    np.testing.assert_array_equal(y, np.full(n, 2.5, np.float32))
    names_fn("sqrt")((cdiv(n, 128),), (128,), (np.abs(x), y, np.int32(n)))
    np.testing.assert_array_equal(y, np.sqrt(np.abs(x)))
    doubles = x.astype(np.float64)
    scaled = np.zeros(n, np.float64)
    names_fn("scale<double>")((cdiv(n, 128),), (128,), (doubles, scaled, np.float64(-3.0), np.int32(n)))
    np.testing.assert_array_equal(scaled, doubles * -3.0)
    with pytest.raises(ValueError, match=r"'copy'.*__launch_bounds__\(256\)"):  # the renamed kernel keeps its bounds
        names_fn("copy")((1,), (512,), (x, y, np.int32(n)))


# ------------------------------------------------------------------------------------------------
# Kernels in the style of public CUDA code (tests/emu_kernels/r5/classics.cu), against NumPy
# ------------------------------------------------------------------------------------------------
CLASSICS = ("classics.cu", ("block_sum_cub_style<256>", "block_sum_cub_style<96>"))


def classic(name: str):
    return module(*CLASSICS).get_function(name)


def test_llm_c_residual_gelu_with_packed_128_bit_loads():
    n = 4096
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = np.zeros(n, np.float32)
    classic("residual_gelu")((cdiv(n // 4, 128),), (128,), (out, a, b, np.int32(n)))
    x = (a + b).astype(np.float64)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("N, C", [(7, 96), (16, 33)])
def test_llm_c_layernorm_one_warp_per_row_with_cooperative_groups(N, C):
    x = rng.standard_normal((N, C)).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    out, mean, rstd = np.zeros_like(x), np.zeros(N, np.float32), np.zeros(N, np.float32)
    classic("layernorm_forward")((cdiv(N, 4),), (128,), (out, mean, rstd, x, w, b, np.int32(N), np.int32(C)))
    m = x.mean(axis=1, dtype=np.float64)
    s = 1 / np.sqrt(((x - m[:, None]) ** 2).mean(axis=1) + 1e-5)
    np.testing.assert_allclose(mean, m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd, s, rtol=1e-5)
    np.testing.assert_allclose(out, (x - m[:, None]) * s[:, None] * w + b, rtol=1e-4, atol=1e-5)


def test_llm_c_online_softmax_with_xor_shuffles():
    N, C = 10, 300
    x = (rng.standard_normal((N, C)) * 8).astype(np.float32)
    out = np.zeros_like(x)
    classic("softmax_online")((cdiv(N, 4),), (128,), (out, x, np.int32(N), np.int32(C)))
    e = np.exp(x - x.max(axis=1, keepdims=True).astype(np.float64))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("n", [1024, 1000, 37])
def test_blelloch_scan_with_conflict_free_offsets(n):
    threads = 128
    blocks = cdiv(n, 2 * threads)
    x = rng.integers(-20, 20, n).astype(np.float32)  # integers: every order sums exactly
    out, sums = np.zeros(n, np.float32), np.zeros(blocks, np.float32)
    smem = (2 * threads + (2 * threads >> 5)) * 4
    classic("prescan")((blocks,), (threads,), (out, x, sums, np.int32(n)), shared_mem=smem)
    offsets = np.concatenate([[0], np.cumsum(sums)[:-1]]).astype(np.float32)
    classic("add_block_offsets")((blocks,), (threads,), (out, offsets, np.int32(n)))
    np.testing.assert_array_equal(out, np.concatenate([[0], np.cumsum(x)[:-1]]))


@pytest.mark.parametrize("height, width", [(96, 96), (64, 160)])
def test_transpose_with_diagonal_block_order(height, width):
    a = rng.standard_normal((height, width)).astype(np.float32)
    out = np.zeros((width, height), np.float32)
    classic("transpose_diagonal")((width // 32, height // 32), (32, 8), (out, a, np.int32(width), np.int32(height)))
    np.testing.assert_array_equal(out, a.T)


@pytest.mark.parametrize("direction", [1, 0])
def test_bitonic_sort_of_key_value_pairs_in_shared_memory(direction):
    blocks = 3
    keys = rng.integers(0, 1000, 1024 * blocks).astype(np.uint32)  # repeated keys: the order of values varies
    values = np.arange(keys.size, dtype=np.uint32)
    out_keys, out_values = np.zeros_like(keys), np.zeros_like(values)
    classic("bitonicSortShared")((blocks,), (512,), (out_keys, out_values, keys, values, np.uint32(1024), np.uint32(direction)))
    for b in range(blocks):
        part = slice(b * 1024, (b + 1) * 1024)
        expected = np.sort(keys[part])
        np.testing.assert_array_equal(out_keys[part], expected if direction else expected[::-1])
        np.testing.assert_array_equal(keys[out_values[part]], out_keys[part])  # each value travelled with its key
        assert sorted(out_values[part]) == list(range(b * 1024, (b + 1) * 1024))


def test_histogram256_per_warp_sub_histograms():
    data = rng.integers(0, 256, 4 * 5000, dtype=np.uint8)
    words = data.view(np.uint32)
    blocks = 5
    partial = np.zeros((blocks, 256), np.uint32)
    classic("histogram256Kernel")((blocks,), (192,), (partial, words, np.uint32(words.size)))
    np.testing.assert_array_equal(partial.sum(axis=0), np.bincount(data, minlength=256))


def test_nbody_tiles_of_float4_in_dynamic_shared_memory():
    n, block = 200, 64
    pos = rng.standard_normal((n, 4)).astype(np.float32)
    pos[:, 3] = rng.uniform(0.5, 1.5, n)  # masses
    vel = (rng.standard_normal((n, 4)) * 0.1).astype(np.float32)
    new_pos, new_vel = np.zeros_like(pos), vel.copy()
    dt, damping, soft2 = 0.01, 0.995, 0.01
    classic("integrateBodies")((cdiv(n, block),), (block,), (new_pos, pos, new_vel, np.float32(dt), np.float32(damping),
                                                       np.float32(soft2), np.int32(n)), shared_mem=block * 16)
    p = pos.astype(np.float64)
    r = p[None, :, :3] - p[:, None, :3]
    inv = ((r**2).sum(axis=2) + soft2) ** -1.5
    acc = (r * (p[None, :, 3] * inv)[:, :, None]).sum(axis=1)
    v = (vel[:, :3] + acc * dt) * damping
    np.testing.assert_allclose(new_vel[:, :3], v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_pos[:, :3], p[:, :3] + v * dt, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new_pos[:, 3], pos[:, 3])


@pytest.mark.parametrize("threads, n", [(256, 1000), (96, 500)])
def test_cub_style_block_reduce_with_temp_storage_union(threads, n):
    x = rng.integers(-100, 100, n).astype(np.float32)
    blocks = cdiv(n, threads)
    out = np.zeros(blocks, np.float32)
    classic(f"block_sum_cub_style<{threads}>")((blocks,), (threads,), (x, out, np.int32(n)))
    np.testing.assert_array_equal(out, [x[b * threads:(b + 1) * threads].sum() for b in range(blocks)])


def test_separable_convolution_rows_with_constant_taps():
    W, H = 128, 8
    image = rng.standard_normal((H, W)).astype(np.float32)
    taps = rng.standard_normal(17).astype(np.float32)
    mod = module(*CLASSICS)
    mod.get_global("c_Kernel")[:] = taps
    out = np.zeros_like(image)
    mod.get_function("convolutionRowsKernel")((W // 64, H // 4), (16, 4), (out, image, np.int32(W), np.int32(H), np.int32(W)))
    padded = np.pad(image.astype(np.float64), ((0, 0), (8, 8)))
    expected = sum(taps[8 - j] * padded[:, 8 + j:8 + j + W] for j in range(-8, 9))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_groups", [1, 0])
def test_warp_aggregated_atomics_compact_the_positive_values(use_groups):
    n = 1000
    src = rng.integers(-5, 5, n).astype(np.int32)
    dst, count = np.zeros(n, np.int32), np.zeros(1, np.int32)
    classic("filter_positive")((cdiv(n, 128),), (128,), (dst, count, src, np.int32(n), np.int32(use_groups)))
    assert count[0] == (src > 0).sum()
    assert sorted(dst[:count[0]]) == sorted(src[src > 0])


def test_shared_through_macros_and_a_qualified_aligned_struct():
    x = rng.standard_normal(64).astype(np.float32)
    out = np.zeros(64, np.float32)
    names_fn("macros_and_qualifiers")((1,), (64,), (x, out))
    r = x[::-1]
    np.testing.assert_array_equal(out, r + np.float32(2) * r + np.float32(63) + np.float32(1000))  # the kernel's order


def test_a_renamed_kernel_keeps_its_own_name_in_compile_errors():
    src = 'extern "C" __global__ void exp(float* out) {\n    out[0] = not_declared;\n}\n'
    with pytest.raises(CompileError) as info:
        RawKernel(src, "exp").compile()
    assert "void exp(float*)" in str(info.value) and "__emu_kernel" not in str(info.value)


def test_math_constants_header_bit_for_bit():
    f, d = np.zeros(11, np.float32), np.zeros(10, np.float64)
    module("intrinsics.cu").get_function("constants")((1,), (1,), (f, d))
    expected_f = np.array([np.pi, np.pi / 2, np.sqrt(0.5), 1 / np.log(2), np.log(2), np.inf, 0, 0, 0, 0], np.float32)
    expected_f.view(np.uint32)[6:] = [0x7FFFFFFF, 0x80000000, 0x00000001, 0x7F7FFFFF]  # CUDA's NaN_F bits, -0, ...
    np.testing.assert_array_equal(f[:10].view(np.uint32), expected_f.view(np.uint32))
    assert f[10] == np.float32(np.pi) + np.float32(1 / np.log(2))
    # pi's rounding error, and sqrt(2 pi) correctly rounded (np.sqrt(2 * np.pi) is one ulp below it)
    pi_lo, sqrt_2pi = 1.2246467991473532e-16, 2.5066282746310007
    expected_d = np.array([np.pi, pi_lo, sqrt_2pi, 1 / np.log(2), np.log(2), np.inf, 0, 0, 0, 2.0**52])
    expected_d.view(np.uint64)[6:9] = [0xFFF8000000000000, 0x8000000000000000, 1]
    np.testing.assert_array_equal(d.view(np.uint64), expected_d.view(np.uint64))


def test_64_bit_integer_to_double_and_to_unsigned_with_directed_rounding():
    big = [2**53 + 1, -(2**53 + 1), 2**63 - 1, -2**63, 2**62 + 3, 12345, 0, -7, 2**54 + 2]
    ll = np.array(big + list(rng.integers(-2**63, 2**63 - 1, 40, dtype=np.int64)), np.int64)
    ull = np.array([2**64 - 1, 2**53 + 1, 2**63 + 1, 0, 5, 2**60 + 7, 3, 2**64 - 2**11 - 1, 2**54 + 2]
                   + list(rng.integers(0, 2**64 - 1, 40, dtype=np.uint64)), np.uint64)
    d = np.concatenate([[-0.5, 0.5, 1.5, -3.7, 4294967295.5, 4294967296.0, 1e30, np.nan, 2.0**64], rng.uniform(-10, 1e10, 40)])
    f = d.astype(np.float32)
    n = ll.size
    to_double, to_unsigned = np.zeros((n, 6)), np.zeros((n, 6), np.uint64)
    module("intrinsics.cu").get_function("conversions")((1,), (64,), (ll, ull, d, f, to_double, to_unsigned, np.int32(n)))
    for i in range(n):
        for k, value in enumerate([int(ll[i])] * 3 + [int(ull[i])] * 3):
            mode = ("rz", "rd", "ru")[k % 3]
            assert check_directed(to_double[i, k], Fraction(value), mode, np.float64), (value, mode, to_double[i, k])

    def saturated(x, rounding, top):  # CUDA's cvt: NaN -> 0, out of range -> the nearest limit
        return 0 if np.isnan(x) else min(max(int(rounding(x)), 0), top)
    u32, u64 = 2**32 - 1, 2**64 - 1
    expected = [[saturated(x, np.floor, u32), saturated(x, np.ceil, u32), saturated(x, np.floor, u64),
                 saturated(x, np.ceil, u64), saturated(float(y), np.floor, u64), saturated(float(y), np.ceil, u64)]
                for x, y in zip(d, f)]
    assert [[int(v) for v in row] for row in to_unsigned] == expected


def test_dpx_min_max_family():
    corners = np.array([0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x80007FFF, 0x7FFF8000, 0x00010001, 0xFFFF0000], np.uint32)
    x = np.concatenate([rng.integers(0, 2**32, 150, dtype=np.uint64).astype(np.uint32), np.repeat(corners, 8)])
    y = np.concatenate([rng.integers(0, 2**32, 150, dtype=np.uint64).astype(np.uint32), np.tile(corners, 8)])
    z = np.concatenate([rng.integers(0, 2**32, 150, dtype=np.uint64).astype(np.uint32), corners[rng.integers(0, 8, 64)]])
    y[:10] = x[:10]  # ties: the predicates say a won
    n = x.size
    out = np.zeros((n, 36), np.uint32)
    module("intrinsics.cu").get_function("dpx")((cdiv(n, 64),), (64,), (x, y, z, out, np.int32(n)))
    s32 = lambda v: v.view(np.int32).astype(np.int64)
    u32 = lambda v: v.astype(np.int64)
    wrap_s32 = lambda v: ((v + 2**31) % 2**32) - 2**31
    relu = lambda v: np.maximum(v, 0)
    as_u32 = lambda v: (np.asarray(v).astype(np.int64) % 2**32).astype(np.uint32)
    halves = lambda v, signed: simd_lanes(v, 2, signed)
    wrap16 = lambda v: ((v + 2**15) % 2**16) - 2**15
    expected = []
    for pick in (np.maximum, np.minimum):
        three = lambda a, b, c: pick(pick(a, b), c)
        S, U = (halves(x, True), halves(y, True), halves(z, True)), (halves(x, False), halves(y, False), halves(z, False))
        expected += [three(s32(x), s32(y), s32(z)), three(u32(x), u32(y), u32(z)), relu(three(s32(x), s32(y), s32(z))),
                     relu(pick(s32(x), s32(y))), pick(wrap_s32(s32(x) + s32(y)), s32(z)), pick((u32(x) + u32(y)) % 2**32, u32(z)),
                     relu(pick(wrap_s32(s32(x) + s32(y)), s32(z))),
                     simd_pack(three(*S), 2), simd_pack(three(*U), 2), simd_pack(relu(three(*S)), 2),
                     simd_pack(relu(pick(S[0], S[1])), 2), simd_pack(pick(wrap16(S[0] + S[1]), S[2]), 2),
                     simd_pack(pick((U[0] + U[1]) % 2**16, U[2]), 2), simd_pack(relu(pick(wrap16(S[0] + S[1]), S[2])), 2)]
    expected += [np.maximum(s32(x), s32(y)), s32(x) >= s32(y), np.minimum(u32(x), u32(y)), u32(x) <= u32(y)]
    S, U = (halves(x, True), halves(y, True)), (halves(x, False), halves(y, False))
    expected += [simd_pack(np.maximum(*S), 2), (S[0][:, 1] >= S[1][:, 1]) * 2 + (S[0][:, 0] >= S[1][:, 0]),
                 simd_pack(np.minimum(*U), 2), (U[0][:, 1] <= U[1][:, 1]) * 2 + (U[0][:, 0] <= U[1][:, 0])]
    for k, e in enumerate(expected):
        np.testing.assert_array_equal(out[:, k], as_u32(e), err_msg=f"result {k}")


def test_shared_struct_with_nested_struct_union_and_member_function():
    out = np.zeros(32, np.float32)
    names_fn("nested_members")((1,), (32,), (out,))
    np.testing.assert_array_equal(out, np.arange(31, -1, -1, dtype=np.float32) + np.float32(0.5))


@pytest.mark.parametrize("struct", ["struct { float a[32]{}; }", "union { int i = 3; float f; }",
                                    "struct Counter { int n = 0; }"])
def test_shared_struct_member_initializers_are_refused_as_nvcc_does(struct):
    src = f'extern "C" __global__ void k(float* out) {{\n    __shared__ {struct} s;\n    out[0] = 1.0f;\n}}\n'
    with pytest.raises(CompileError, match=r"line 2: initializer not allowed for __shared__ variable"):
        RawKernel(src, "k").compile()


@pytest.mark.parametrize("use", ["cudaTextureObject_t t, float* out) { out[0] = tex1Dfetch<float>(t, 0);",
                                 "cudaSurfaceObject_t s, float* out) { surf2Dwrite(1.0f, s, 0, 0);"])
def test_textures_and_surfaces_are_refused_by_name(use):
    src = f'extern "C" __global__ void k({use} }}\n'
    with pytest.raises(CompileError, match=r"k.cu:1: cuda(Texture|Surface)Object_t: textures and surfaces are not "
                                           r"supported by minilora's CUDA emulator.*plain pointer"):
        RawKernel(src, "k").compile()


def test_dp4a_and_dp2a_lo_hi_signed_and_unsigned():
    n = 200
    a, b = rng.integers(-2**31, 2**31, n).astype(np.int32), rng.integers(-2**31, 2**31, n).astype(np.int32)
    c = rng.integers(-2**31, 2**31, n).astype(np.int32)
    a[:4], b[:4] = [-1, 2**31 - 1, -2**31, 0x7FFF8000], [-1, -1, 0x7F80FF01, -2**31]
    out = np.zeros((n, 6), np.int32)
    module("intrinsics.cu").get_function("dot_products")((cdiv(n, 64),), (64,), (a, b, c, out, np.int32(n)))
    ua, ub = a.view(np.uint32), b.view(np.uint32)
    wrap = lambda v: (((v + 2**31) % 2**32) - 2**31).astype(np.int32)
    c64 = c.astype(np.int64)
    expected = [c64 + (simd_lanes(ua, 4, True) * simd_lanes(ub, 4, True)).sum(axis=1),
                c64 + (simd_lanes(ua, 4, False) * simd_lanes(ub, 4, False)).sum(axis=1)]
    for first in (0, 2):
        expected += [c64 + (simd_lanes(ua, 2, True) * simd_lanes(ub, 4, True)[:, first:first + 2]).sum(axis=1),
                     c64 + (simd_lanes(ua, 2, False) * simd_lanes(ub, 4, False)[:, first:first + 2]).sum(axis=1)]
    for k, e in enumerate(expected):
        np.testing.assert_array_equal(out[:, k], wrap(e), err_msg=f"result {k}")


def test_kernels_in_namespaces():
    n = 100
    x = rng.uniform(0.5, 2.0, n).astype(np.float32)
    out = np.zeros(n, np.float32)
    names_fn("ns_fill")((1,), (128,), (out, np.float32(4.0), np.int32(n)))
    np.testing.assert_array_equal(out, np.full(n, 4.0, np.float32))
    names_fn("ops::twice")((1,), (128,), (x, out, np.int32(n)))
    np.testing.assert_array_equal(out, 2 * x)
    names_fn("ops::inner::log")((1,), (128,), (x, out, np.int32(n)))
    np.testing.assert_allclose(out, np.log(x), rtol=1e-6)
    with pytest.raises(AttributeError, match=r"C\+\+ linkage .* name_expressions=\['ops::twice'\]"):
        names_fn("twice")


def fns_reference(mask: int, base: int, offset: int) -> int:
    """PTX's fns.b32, as its specification walks it."""
    if offset == 0:
        return base if mask >> base & 1 else 0xFFFFFFFF
    count, step = abs(offset), 1 if offset > 0 else -1
    for pos in range(base, 32 if step > 0 else -1, step):
        if mask >> pos & 1:
            count -= 1
            if count == 0:
                return pos
    return 0xFFFFFFFF


def test_fns_finds_the_nth_set_bit_both_ways():
    examples = [(0xAAAAAAAA, 3, 1, 3), (0xAAAAAAAA, 3, -1, 3), (0xAAAAAAAA, 2, 1, 3), (0xAAAAAAAA, 2, -1, 1)]  # PTX's
    n_random = 300
    mask = np.concatenate([[e[0] for e in examples], rng.integers(0, 2**32, n_random, dtype=np.uint64),
                           [0, 0xFFFFFFFF, 1, 0x80000000]]).astype(np.uint32)
    base = np.concatenate([[e[1] for e in examples], rng.integers(0, 32, n_random), [5, 31, 0, 0]]).astype(np.uint32)
    offset = np.concatenate([[e[2] for e in examples], rng.integers(-33, 34, n_random), [1, -32, 0, 32]]).astype(np.int32)
    out = np.zeros(mask.size, np.uint32)
    module("intrinsics.cu").get_function("find_nth_set")((cdiv(mask.size, 128),), (128,), (mask, base, offset, out, np.int32(mask.size)))
    assert [int(v) for v in out[:4]] == [e[3] for e in examples]
    assert [int(v) for v in out] == [fns_reference(int(m), int(b), int(o)) for m, b, o in zip(mask, base, offset)]
