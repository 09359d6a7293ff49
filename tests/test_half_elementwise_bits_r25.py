"""bfloat16/float16 elementwise ops against torch, bit for bit, on every 16-bit number (tests/half_bits_sweep.py's
finds, round 25). torch computes a 16-bit op with its float32 kernel on the widened values and rounds once; where
minilora computed otherwise (NumPy's float16 loops, a float64 result rounded straight to 16 bits), a float32 result
that lands on a 16-bit tie rounded the other way (float16 exp(0.0073): 1.00732421875, a tie, rounds up to even).
fmod and remainder: SLEEF's fmodf in torch's vectorized body is NaN where its first quotient overflows (bfloat16
fmod(239616, -7e-34)); C's exact fmodf in the scalar tail. fmax/fmin: a signaling NaN operand gives NaN (C's fmax),
except float16's, which its conversion quiets."""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_math

torch = pytest.importorskip("torch")

vectorized = pytest.mark.skipif(float32_math.CPU_CAPABILITY == "default",
                                reason="torch's default build has no vectorized body (C's functions everywhere)")


def every_number(dtype):
    bits = np.arange(65536, dtype=np.uint16)
    return torch.from_numpy(bits.view(np.int16).copy()).view(getattr(torch, dtype))


def mine(t):
    """The same numbers, bit for bit (a signaling NaN too), as a minilora tensor."""
    if t.dtype in (torch.float16, torch.bfloat16):
        bits = t.contiguous().view(torch.int16).numpy()
        return ml.tensor(bits.view(np.dtype(getattr(ml, str(t.dtype).split(".")[1]))))
    return ml.tensor(t.numpy())


def assert_same_bits(m, t):
    a, b = m.detach().float().numpy(), t.detach().float().numpy()
    same = (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))
    off = np.flatnonzero(~same)
    assert not off.size, f"{off.size} off, first at {off[:4]}: {a.reshape(-1)[off[:4]]} vs torch {b.reshape(-1)[off[:4]]}"


@pytest.mark.parametrize("name", ["exp", "log10", "cos", "tan", "atan", "cosh", "asinh"])
def test_float16_unary_is_the_float32_kernel_rounded_once(name):
    x = every_number("float16")  # (1-4 numbers of each were a float32 tie rounded the other way)
    assert_same_bits(getattr(ml, name)(mine(x)), getattr(torch, name)(x))


@pytest.mark.parametrize("name", ["sinh", "cosh"])
def test_bfloat16_sinh_and_cosh_are_the_float32_kernel_rounded_once(name):
    x = every_number("bfloat16")  # (+-89: SLEEF's float32 sinh overflows there, NumPy's float64 one does not)
    assert_same_bits(getattr(ml, name)(mine(x)), getattr(torch, name)(x))


@vectorized
@pytest.mark.parametrize("name", ["atan2", "logaddexp"])
def test_float16_binary_is_the_float32_kernel_rounded_once(name):
    x = every_number("float16")
    for y in (-148.25, 2472.0, -0.00013458728790283203, -0.0174102783203125, 0.0, -1.0):
        other = torch.full_like(x, y)
        assert_same_bits(getattr(ml, name)(mine(x), mine(other)), getattr(torch, name)(x, other))


@vectorized
@pytest.mark.parametrize("name", ["fmod", "remainder"])
def test_bfloat16_fmod_is_nan_where_sleefs_quotient_overflows(name):
    x = every_number("bfloat16")
    for y in (-7.0115887037847805e-34, -1.4314856808597676e-19, 2.7355895326763857e-13, 3.0, 1e-40):
        other = torch.full_like(x, y)
        assert_same_bits(getattr(ml, name)(mine(x), mine(other)), getattr(torch, name)(x, other))
        assert_same_bits(getattr(ml, name)(mine(x[:47]), mine(other[:47])), getattr(torch, name)(x[:47], other[:47]))


@vectorized
def test_float32_fmod_body_nan_and_exact_tail():
    # 40 elements: 2 vectors of 8, twice (AVX2's build), then 8 in the scalar tail (C's fmodf: the remainder)
    x, y = torch.full((40,), 3e38), torch.full((40,), 7e-34)
    theirs = torch.fmod(x, y)
    assert theirs[:32].isnan().all() and not theirs[32:].isnan().any()
    assert_same_bits(ml.fmod(mine(x), mine(y)), theirs)
    assert_same_bits(ml.remainder(mine(x), mine(y)), torch.remainder(x, y))


@pytest.mark.parametrize("name", ["fmax", "fmin"])
def test_fmax_of_a_signaling_nan_is_nan(name):
    for dtype in ("float32", "float64", "bfloat16", "float16"):  # (float16: the other operand, its sNaN quieted)
        _check_signaling_nan(name, dtype)


def _check_signaling_nan(name, dtype):
    kind, patterns = {"float32": (np.uint32, [0x7F800001, 0x7FC00001, 0xFF800005, 0x3F800000]),
                      "float64": (np.uint64, [0x7FF0000000000001, 0x7FF8000000000001, 0x3FF0000000000000]),
                      "bfloat16": (np.uint16, [0x7F81, 0x7FC1, 0xFF85, 0x3F80]),
                      "float16": (np.uint16, [0x7C01, 0x7E01, 0xFC05, 0x3C00])}[dtype]
    bits = np.resize(np.array(patterns, kind), 70)
    x = torch.from_numpy(bits.view({2: np.int16, 4: np.int32, 8: np.int64}[bits.itemsize]).copy()).view(
        getattr(torch, dtype))
    other = torch.full_like(x, -3.0)
    assert_same_bits(getattr(ml, name)(mine(x), mine(other)), getattr(torch, name)(x, other))
    assert_same_bits(getattr(ml, name)(mine(other), mine(x)), getattr(torch, name)(other, x))


def test_float16_nextafter_of_equal_numbers_is_the_target():
    # C's nextafter(x, y) is y where x == y: nextafter(-0.0, 0.0) is 0.0 (NumPy's float16 loop kept -0.0)
    x = torch.tensor([-0.0, 0.0, 1.0, -2.0] * 20, dtype=torch.float16)
    y = torch.tensor([0.0, -0.0, 1.0, 3.0] * 20, dtype=torch.float16)
    assert_same_bits(ml.nextafter(mine(x), mine(y)), torch.nextafter(x, y))


@vectorized
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_maximum_and_minimum_of_signed_zeros_follow_the_loop(dtype):
    # -0.0 and 0.0 tie: torch's vectorized body answers the second operand (vmaxps), its scalar tail the first
    # (std::max); 70 elements: 64 in the body, 6 in the tail
    x = torch.tensor([-0.0, 0.0, 1.0, -0.0, 0.0] * 14, dtype=getattr(torch, dtype))
    y = torch.tensor([0.0, -0.0, 1.0, -0.0, 0.0] * 14, dtype=getattr(torch, dtype))
    for name in ("maximum", "minimum"):
        assert_same_bits(getattr(ml, name)(mine(x), mine(y)), getattr(torch, name)(x, y))
        assert_same_bits(getattr(ml, name)(mine(x[:5]), mine(y[:5])), getattr(torch, name)(x[:5], y[:5]))
