"""float32 Adam / AdamW bit for bit as torch's CPU single-tensor loop (what ``foreach=None`` runs on the CPU):
``exp_avg.lerp_(g, 1 - beta1)`` and ``exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)`` are fused
multiply-adds where ATen's build fuses (``float32_math.FUSED_MULTIPLY_ADD``), two roundings in its "default"
build; ``param.addcdiv_(m, denom, value=-step_size)`` is ``(value * m) / denom``. torch's ``sqrt`` is MKL VML's
(1 ulp off the correctly rounded root for ~20% of elements, whatever ATEN_CPU_CAPABILITY says): the weights are
compared with torch's own sqrt put in for NumPy's, the moments (which no sqrt touches) as they are."""
import contextlib
import os
import sys

import numpy as np
import pytest

import background_runs
import minilora as ml
from mkl_vml import use_torchs

torch = pytest.importorskip("torch")

SIZES = (3, 17, 2048, 70000)  # all scalar tail; a vector and a tail; many cache slices


def _three_steps(lib, cls, n, kwargs, monkeypatch=None):
    """The weight and moments after three steps of ``lib.optim.<cls>`` on one parameter of ``n`` elements;
    with ``monkeypatch``, minilora's steps take torch's sqrt."""
    rng = np.random.default_rng(0)  # (not randn: its bits change with ATEN_CPU_CAPABILITY)
    p = lib.nn.Parameter(lib.tensor(rng.standard_normal(n, dtype=np.float32)))
    opt = getattr(lib.optim, cls)([p], **kwargs)
    for step in range(3):
        p.grad = lib.tensor(rng.standard_normal(n, dtype=np.float32) * np.float32(0.1))
        with monkeypatch.context() if monkeypatch else _nothing() as patch:
            if patch:
                use_torchs(patch, "sqrt", np.float32)
            opt.step()
    state = opt.state[p]
    as_numpy = (lambda t: t.detach().numpy()) if lib is torch else (lambda t: np.asarray(getattr(t, "_array", t)))
    return [as_numpy(t) for t in (p, state["exp_avg"], state["exp_avg_sq"])]


def _nothing():
    return contextlib.nullcontext()


def _bit_mismatches(cls, n, kwargs, monkeypatch=None):
    ours, theirs = _three_steps(ml, cls, n, kwargs, monkeypatch), _three_steps(torch, cls, n, kwargs)
    return [int((a.view(np.int32) != b.view(np.int32)).sum()) for a, b in zip(ours, theirs)]


@pytest.mark.parametrize("cls,kwargs", [("AdamW", {}), ("Adam", {}), ("Adam", dict(weight_decay=0.1)),
                                        ("AdamW", dict(amsgrad=True)), ("Adam", dict(maximize=True))])
def test_weights_and_moments_bit_for_bit(cls, kwargs, monkeypatch):
    for n in SIZES:
        assert _bit_mismatches(cls, n, kwargs, monkeypatch) == [0, 0, 0], (cls, kwargs, n)



def test_moments_bit_for_bit_without_the_sqrt_swap():
    """exp_avg and exp_avg_sq never meet a sqrt: equal bits with NumPy's own sqrt in the step."""
    for n in SIZES:
        assert _bit_mismatches("AdamW", n, dict(weight_decay=0.1))[1:] == [0, 0], n


def test_gathered_small_parameters_bit_for_bit(monkeypatch):
    """Small parameters updated as one gathered flat array (``GATHER_BELOW``) get torch's bits (each its own
    update there), with its sqrt."""
    shapes = [(3,), (17,), (8, 40), (33, 5)]

    def weights(lib):
        rng = np.random.default_rng(1)
        ps = [lib.nn.Parameter(lib.tensor(rng.standard_normal(s, dtype=np.float32))) for s in shapes]
        opt = lib.optim.AdamW(ps, weight_decay=0.1)
        for step in range(3):
            for p in ps:
                p.grad = lib.tensor(rng.standard_normal(p.shape, dtype=np.float32))
            with monkeypatch.context() as patch:
                if lib is ml:
                    use_torchs(patch, "sqrt", np.float32)
                opt.step()
        return np.concatenate([np.asarray(p.detach().numpy()).ravel() for p in ps])
    assert weights(ml).view(np.int32).tolist() == weights(torch).view(np.int32).tolist()


CHILD = """
import sys
sys.path.insert(0, {tests!r})
import pytest
import test_adam_bits_r10 as t
from minilora import float32_math
assert float32_math.FUSED_MULTIPLY_ADD is False
with pytest.MonkeyPatch.context() as patch:
    print([t._bit_mismatches(cls, 70000, kwargs, patch) for cls, kwargs in t.DEFAULT_BUILD_CASES])
"""
DEFAULT_BUILD_CASES = [("AdamW", {}), ("Adam", dict(weight_decay=0.1))]


def test_default_build_rounds_twice():
    """ATEN_CPU_CAPABILITY=default: ATen's build without FMA, torch's lerp and addcmul round twice (minilora
    follows ``float32_math.torch_cpu_capability()``)."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    out = background_runs.run_process([sys.executable, "-c", CHILD.format(tests=os.path.dirname(__file__))],
                                      env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == str([[0, 0, 0]] * len(DEFAULT_BUILD_CASES))
