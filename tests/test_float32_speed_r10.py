"""float32_math's fast paths give the step-by-step ports' bits, block boundaries included.

SLEEF's expm1, tanh and log1p run as their formula in float64, rounded, with the port only on the
elements near a float32 rounding midpoint (``float32_math._modelled``), block by block; torch's fused
multiply-adds run through float64 scratch blocks (``fused_multiply_add``). Each is compared here with
the plain computation it replaces on lengths that are not multiples of the block (16384) or of torch's
32-element step, with the hard values (tiny, out of range, non-finite) spread across blocks. The ports
themselves are compared with torch in tests/test_float32_math_r9.py; every float32 input in the
modelled ranges was checked against the ports once (0 differ).
"""
import numpy as np
import pytest

from minilora import fastmath, float32_math

BLOCK = 16384  # float32_math's block
LENGTHS = [4095, 4096, BLOCK + 37, 3 * BLOCK + 5]
HARD = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, -1e-38, 2 ** -9, -2 ** -9,
                 1e-4, -1e-4, 8.6643, 8.6644, 9.0, -16.5, -16.7, -17.0, 88.0, 88.5, 88.73, -0.99, -0.995,
                 -1.0, -1.5, 1e30, 3e38, -3e38, 0.34657359, -0.34657359], np.float32)

PORTS = {  # the fast function, the step-by-step port's slice function
    "expm1": (float32_math.sleef_expm1, float32_math._sleef_expm1_slice),
    "tanh": (float32_math.sleef_tanh, float32_math._sleef_tanh_slice),
    "log1p": (float32_math.sleef_log1p, float32_math._sleef_log1p_slice),
}


def _values(n, seed=0):
    """randn * 3 and bit patterns drawn over all floats, with the hard values in every block."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    x[::7] = rng.integers(0, 1 << 32, x[::7].size, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for start in range(0, n, BLOCK):
        x[start:start + len(HARD)] = HARD[:n - start]
    x[-len(HARD):] = HARD  # (the last, partial block's end)
    return x


def _port(name, x):
    out = np.empty_like(x)
    for start in range(0, x.size, 4096):
        PORTS[name][1](x[start:start + 4096], out[start:start + 4096])
    return out


def _same_bits(a, b):
    return np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", sorted(PORTS))
def test_modelled_functions_give_the_ports_bits(name, n):
    x = _values(n, seed=n)
    with np.errstate(all="ignore"):
        assert _same_bits(PORTS[name][0](x), _port(name, x))


@pytest.mark.parametrize("name", sorted(PORTS))
def test_the_port_runs_on_few_elements(name, monkeypatch):
    """The speed itself: the port (~100 NumPy passes) sees only the elements the float64 value cannot
    decide, well under 1% of randn's, and once a call, however many blocks."""
    seen = []
    port = PORTS[name][1]
    monkeypatch.setattr(float32_math, port.__name__, lambda x, out: (seen.append(x.size), port(x, out)))
    x = np.abs(_values(5 * BLOCK + 3)) if name == "log1p" else _values(5 * BLOCK + 3)
    x[::7] = 0.5  # (no bit patterns here: randn only)
    expected = _port(name, x)
    with np.errstate(all="ignore"):
        fast = getattr(float32_math, "sleef_" + name)(x)
    assert _same_bits(fast, expected)
    assert len(seen) <= 1 and sum(seen) < 0.01 * x.size, seen


@pytest.mark.parametrize("shape", [(3, 4), (1 << 17,), (1 << 17) + 33, (700, 301)])
def test_fused_multiply_add_rounds_once_in_blocks(shape):
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    exact = (a.astype(np.float64) * b + c).astype(np.float32)  # the product exact, one rounding
    for operands in [(a, b, c), (-b, b, 1), (np.float32(0.044715), a, b)]:
        expected = np.add(np.multiply(operands[0], operands[1], dtype=np.float64), operands[2],
                          dtype=np.float64).astype(np.float32)
        assert _same_bits(float32_math.fused_multiply_add(*operands), expected)
    assert _same_bits(float32_math.fused_multiply_add(a, b, c), exact)
    if len(np.shape(a)) == 2:  # a transposed view: NumPy's whole-array loop, in its layout
        assert _same_bits(np.ascontiguousarray(float32_math.fused_multiply_add(a.T, b.T, c.T)),
                          np.ascontiguousarray(exact.T))


def test_silu_backward_fuses_one_multiply_add_per_block():
    n = 2 * 32768 + 77  # (fastmath's cache slices are 32768 long)
    rng = np.random.default_rng(2)
    g, a = rng.standard_normal(n).astype(np.float32), (rng.standard_normal(n) * 3).astype(np.float32)
    s = (1 / (1 + np.exp(-a))).astype(np.float32)
    gx = np.empty_like(g)
    fastmath.silu_backward(g, a, s, gx)
    slope = (a.astype(np.float64) * (np.float32(1) - s) + 1).astype(np.float32)
    expected = g * s * slope if float32_math.FUSED_MULTIPLY_ADD else g * s * (1 + a * (1 - s))
    assert _same_bits(gx, expected)


BACKWARD = {
    "tanh": lambda F, x: x.tanh(),
    "gelu(tanh)": lambda F, x: F.gelu(x, approximate="tanh"),
    "softplus": lambda F, x: F.softplus(x, beta=2.0),
    "elu": lambda F, x: F.elu(x),
    "celu": lambda F, x: F.celu(x, 0.7),
    "mish": lambda F, x: F.mish(x),
}


@pytest.mark.parametrize("name", list(BACKWARD))
def test_backward_formulas_in_cache_slices_are_torchs(name):
    """Past 32768 elements these backward formulas run a cache slice at a time (float32_math.in_cache_slices):
    torch's gradient bits still, across slice boundaries (a length that is a multiple of 32 but not of the
    slice: no scalar tail, where torch's glibc functions would differ)."""
    torch = pytest.importorskip("torch")
    import minilora as ml
    if float32_math.CPU_CAPABILITY == "default" and name != "tanh":
        pytest.skip("torch's default build computes it with glibc's expf/expm1f/log1pf/tanhf")
    n = 2 * 32768 + 64
    rng = np.random.default_rng(3)
    x, g = (rng.standard_normal(n) * 3).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    outs, grads = [], []
    before = ml.get_num_threads(), torch.get_num_threads()
    ml.set_num_threads(1), torch.set_num_threads(1)  # (one chunk each: the same positions for the tail)
    try:
        for lib in (torch, ml):
            leaf = lib.tensor(x, requires_grad=True)
            out = BACKWARD[name](lib.nn.functional, leaf)
            out.backward(lib.tensor(g))
            outs.append(out.detach().numpy().view(np.uint32))
            grads.append(leaf.grad.numpy().view(np.uint32))
    finally:
        ml.set_num_threads(before[0]), torch.set_num_threads(before[1])
    same_forward = outs[0] == outs[1]  # (all but tanh's: torch.tanh is MKL's, 0.1% not correctly rounded)
    assert same_forward.mean() > 0.99
    assert np.array_equal(grads[1][same_forward], grads[0][same_forward])
