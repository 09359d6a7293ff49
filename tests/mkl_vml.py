"""torch's vector-math functions (Intel MKL's VML: exp, log, sqrt, ...) as this CPU computes them.

torch's CPU build sends several elementwise functions to MKL's VML, whose code path, and so whose last bits, depend
on the processor: on an Intel Sapphire Rapids float64 exp and log are NumPy's bits, on an AMD EPYC (Zen 4) float64
exp is 1 ulp off NumPy's in ~4% of elements; float32 sqrt is 1 ulp off the correctly rounded root in ~20% of elements
on both, whatever ATEN_CPU_CAPABILITY or MKL_ENABLE_INSTRUCTIONS say. minilora computes these functions one fixed
way (NumPy's in float64, correctly rounded in float32: float32_math.vml), so a test that checks something *else*
bit for bit (a summation order, an optimizer's update) puts torch's function in for NumPy's, and a test that
lists where minilora's bits differ asks ``is_numpys`` which functions differ on this CPU."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

_PROBE = np.random.default_rng(0).uniform(-4.0, 4.0, 4096)


def is_numpys(name, dtype):
    """Whether torch's ``name`` gives NumPy's bits in ``dtype`` on this CPU (checked on 4,096 values)."""
    x = np.abs(_PROBE).astype(dtype) if name in ("log", "sqrt") else _PROBE.astype(dtype)
    return np.array_equal(getattr(torch, name)(torch.from_numpy(x)).numpy(), getattr(np, name)(x))


def use_torchs(monkeypatch, name, dtype):
    """Until ``monkeypatch`` undoes it, ``np.<name>`` of a ``dtype`` array is torch's (MKL's elementwise rounding:
    the same at any offset, so one call over a whole array gives what torch's chunks give); other dtypes NumPy's."""
    numpy_function, dtype = getattr(np, name), np.dtype(dtype)

    def torchs_or_numpys(x, out=None, **kwargs):
        if getattr(x, "dtype", None) != dtype or kwargs:
            return numpy_function(x, **kwargs) if out is None else numpy_function(x, out=out, **kwargs)
        result = getattr(torch, name)(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        if out is None:
            return result
        out[...] = result
        return out

    monkeypatch.setattr(np, name, torchs_or_numpys)
