"""Round 30: the extremes sweep's leftovers (tests/extremes_sweep.py) and the float64 gradients whose exp was glibc's
where torch's exp op is MKL's (igamma / igammac, erfc, erfinv, ndtri, log_ndtr).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import minilora as ml  # noqa: E402
from minilora import blas  # noqa: E402


def differing(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return int(((ours != theirs) & ~(np.isnan(ours) & np.isnan(theirs))).sum())


def gradients(name, *values, wrt=-1):
    """(ours, torch's) gradient of sum(name(*values)) with respect to values[wrt]"""
    grads = []
    for library in (ml, torch):
        function = library
        for part in name.split("."):
            function = getattr(function, part)
        tensors = [library.tensor(v) for v in values]
        tensors[wrt].requires_grad_(True)
        function(*tensors).sum().backward()
        grads.append(tensors[wrt].grad.numpy())
    return grads


@pytest.mark.skipif(blas.library() != "mkl", reason="torch's exp op is MKL's VML")
@pytest.mark.parametrize("name", ["igamma", "igammac", "special.gammainc", "erfc", "erfinv", "special.ndtri",
                                  "special.log_ndtr"])
def test_float64_gradient_formulas_take_torchs_exp(name):
    rng = np.random.default_rng(3)
    a = np.abs(rng.standard_normal(20000)) * 5 + 0.1
    x = np.abs(rng.standard_normal(20000)) * 3
    values = {"erfinv": (rng.uniform(-0.999, 0.999, 20000),), "special.ndtri": (rng.uniform(0.001, 0.999, 20000),),
              "erfc": (x - 1.5,), "special.log_ndtr": (x - 1.5,)}.get(name, (a, x))
    assert differing(*gradients(name, *values)) == 0
