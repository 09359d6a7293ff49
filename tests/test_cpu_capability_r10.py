"""minilora draws and computes what torch does on the user's CPU, whichever kernels torch picked for it.

torch compiles its CPU kernels for AVX-512, AVX2 and none ("default": a CPU without AVX2) and picks one
at start, from ``ATEN_CPU_CAPABILITY`` or the CPU (``float32_math.torch_cpu_capability()``). What that
changes, checked here bit for bit against torch run under each capability this CPU can run (a
subprocess with the variable set, as a user on that CPU runs it):

* ``randn`` / ``normal_`` / ``nn.init.normal_``: the AVX2 kernel's avx_mathfun Box-Muller in float, or
  the default build's scalar loop with glibc's ``logf``/``cosf``/``sinf`` (``glibc_math.py``); the
  final ``n std + mean`` one fused multiply-add in both (float64's too);
* ``uniform_``'s ``u (high - low) + low`` and ``add(alpha=)``'s ``a + alpha b``: fused where the build
  fuses (AVX2, AVX-512), two roundings in the default one (SGD's steps too); 16-bit ``add(alpha=)`` and
  ``rsqrt`` round each step to 16 bits in the default build's scalar loop;
* what does not change: ``rand``, dropout's and bernoulli's masks, ``var``, ``mse_loss``;
* histc's refusal of a NaN range prints the vectorized min/max's ``-nan`` or the data's own NaN.
"""
import os
import sys
import textwrap

import pytest

import background_runs
from minilora import float32_math

pytest.importorskip("torch")

SCRIPT = textwrap.dedent("""
    import numpy as np
    import torch
    import minilora
    from minilora import float32_math

    capability = float32_math.CPU_CAPABILITY
    assert capability == torch.backends.cpu.get_cpu_capability().lower(), capability
    rng = np.random.default_rng(0)
    # (2240 elements: whole AVX-512 vectors of 16-bit values, no scalar tail, where torch rounds 16-bit
    # steps as its default build does: not modelled)
    x, y = (rng.standard_normal((7, 320)).astype(np.float32) for _ in range(2))

    def bits(t):
        t = t.detach()
        return (t.float() if t.dtype in (torch.bfloat16, torch.float16) or str(t.dtype).endswith("float16")
                else t).numpy().tobytes()

    def same(name, call):
        torch.manual_seed(0), minilora.manual_seed(0)
        assert bits(call(minilora)) == bits(call(torch)), (capability, name)

    same("randn", lambda L: L.randn(4000))
    same("randn, a partial block", lambda L: L.randn(33))
    same("normal_", lambda L: L.empty(1001).normal_(0.7, 0.3))
    same("normal_ float64", lambda L: L.empty(1001, dtype=L.float64).normal_(-1.5, 0.3))
    same("normal_ bfloat16", lambda L: L.empty(1001, dtype=L.bfloat16).normal_(0.7, 0.3))
    same("init.normal_", lambda L: L.nn.init.normal_(L.empty(64, 8), std=0.02))
    same("rand", lambda L: L.rand(1001))
    same("uniform_", lambda L: L.empty(1001).uniform_(-0.3, 2.1))
    same("dropout", lambda L: L.nn.functional.dropout(L.ones(1001), 0.3))
    same("bernoulli", lambda L: L.bernoulli(L.full((1001,), 0.3)))
    same("var", lambda L: L.tensor(x).var(-1))
    same("mse_loss", lambda L: L.nn.functional.mse_loss(L.tensor(x), L.tensor(y)))
    same("add alpha", lambda L: L.add(L.tensor(x), L.tensor(y), alpha=0.3))
    same("sub alpha, broadcast", lambda L: L.sub(L.tensor(x), L.tensor(y[0]), alpha=1.7))
    for dtype in ("bfloat16", "float16"):
        same("add alpha " + dtype, lambda L: L.add(*(L.tensor(v).to(getattr(L, dtype)) for v in (x, y)),
                                                   alpha=0.3))
        same("rsqrt " + dtype, lambda L: L.rsqrt(L.tensor(np.abs(x) + 0.1).to(getattr(L, dtype))))

    def sgd_steps(L):  # (each x.add(y, alpha=) of torch's SGD: fused where add(alpha=) is)
        w = L.nn.Parameter(L.tensor(x))
        optimizer = L.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
        for g in (y, x * y):
            w.grad = L.tensor(g)
            optimizer.step()
        return w
    same("SGD", sgd_steps)
    for values in ([1.0, float("nan")], [1.0, -float("nan")]):
        errors = []
        for L in (torch, minilora):
            try:
                L.histc(L.tensor(values), 4)
            except RuntimeError as error:
                errors.append(str(error))
        assert len(errors) == 2 and errors[0] == errors[1], (capability, errors)
    print("same", capability)
""")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["default", "avx2", "avx512"]  # (a CPU runs torch's kernels up to its own: forcing more is SIGILL)


def _script_run(runs, module_name, capability, script):
    """Submit (a no-op when submitted already) the run of ``script`` with ``ATEN_CPU_CAPABILITY=capability``, on the
    core the main process leaves idle (tests/background_runs.py): its key.  A regular run, not one queued behind the
    others: this file's tests come ~75 s into CI, before the helper reached a `last` run (the test then ran it
    itself, ~20 s of the main process's time)."""
    key = (module_name, capability)
    command = ([sys.executable, "-c", script], {"ATEN_CPU_CAPABILITY": capability})
    runs.submit(key, "background_runs", "run_commands", (command,), ROOT, 120)
    return key


def _in_a_subprocess(capability):
    """A capability this CPU runs, other than the one this process's torch runs."""
    native = float32_math.torch_cpu_capability({})
    return ORDER.index(capability) <= ORDER.index(native) and capability != float32_math.CPU_CAPABILITY


def submit_scripts_under(items, runs, module_name, test_name, script):
    """Queue the subprocesses of ``module_name``'s ``test_name`` (parametrized by capability) behind the session's
    other runs."""
    for item in background_runs.selected(items, module_name, test_name):
        capability = item.callspec.params["capability"]
        if _in_a_subprocess(capability):
            _script_run(runs, module_name, capability, script)


def check_under(capability, script, runs, module_name):
    """Run ``script`` (which prints "same <capability>") under torch's ``capability``: this CPU's own in
    this process, a lower one in a subprocess with ``ATEN_CPU_CAPABILITY`` set (the background run
    ``submit_scripts_under`` queued, or one started here); a higher one is skipped."""
    native = float32_math.torch_cpu_capability({})
    if ORDER.index(capability) > ORDER.index(native):
        pytest.skip(f"this CPU runs torch's {native} kernels, not {capability}'s")
    if capability == float32_math.CPU_CAPABILITY:
        exec(script, {"__name__": "same_bits"})
        return
    [(returncode, stdout, stderr)] = runs.result(_script_run(runs, module_name, capability, script))
    assert returncode == 0, stderr[-3000:]
    assert stdout.split() == ["same", capability]


def start_background_runs(items, runs):
    submit_scripts_under(items, runs, __name__, "test_draws_and_sums_are_torchs_under_each_capability", SCRIPT)


@pytest.mark.parametrize("capability", ORDER)
def test_draws_and_sums_are_torchs_under_each_capability(capability, background):
    """This CPU's own capability in this process; the lower ones in a subprocess each."""
    check_under(capability, SCRIPT, background, __name__)
