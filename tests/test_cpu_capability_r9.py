"""minilora's models of torch's float32 CPU kernels follow the instruction set torch dispatches to.

torch compiles its CPU kernels three times on x86 (AVX-512, AVX2, none: "default") and picks one when
it starts, from ``ATEN_CPU_CAPABILITY`` or the CPU's features. The vector width decides which
elements an elementwise loop hands to C's scalar functions (the last ``n % 32`` or ``n % 16`` of a
chunk) and in which order softmax's backward adds a row (16 or 8 lanes); the default build fuses no
multiply-add (lerp, addcmul, linspace, uniform_'s transformation round twice) and calls glibc's
functions on every element. ``float32_math.torch_cpu_capability()``
makes that choice as torch does, without importing torch; each capability is checked here against
torch run under it (a subprocess with ``ATEN_CPU_CAPABILITY`` set, as a user on that CPU runs it).
"""
import os
import sys
import textwrap

import numpy as np
import pytest

import background_runs
import minilora
from minilora import float32_math

torch = pytest.importorskip("torch")

AVX512 = {"AVX512F": True, "AVX512CD": True, "AVX512VL": True, "AVX512BW": True, "AVX512DQ": True,
          "AVX2": True, "FMA3": True, "AVX": True}
KNIGHTS_LANDING = {"AVX512F": True, "AVX512CD": True, "AVX512ER": True, "AVX512PF": True, "AVX2": True,
                   "FMA3": True, "AVX": True}  # (AVX-512 without VL, BW, DQ)


def test_the_capability_is_torchs():
    assert float32_math.CPU_CAPABILITY == float32_math.torch_cpu_capability()
    assert float32_math.CPU_CAPABILITY == torch.backends.cpu.get_cpu_capability().lower()
    assert float32_math.FLOAT_LANES == {"avx512": 16, "avx2": 8, "default": 8}[float32_math.CPU_CAPABILITY]


@pytest.mark.parametrize("environ,features,expected", [
    ({}, AVX512, "avx512"),
    ({}, dict(AVX512, AVX512DQ=False), "avx2"),
    ({}, KNIGHTS_LANDING, "avx2"),
    ({}, {"AVX2": True, "AVX": True}, "default"),  # (AVX2 without FMA)
    ({}, {"AVX": True, "FMA3": True}, "default"),
    ({}, {"ASIMD": True, "NEON": True}, "default"),
    ({"ATEN_CPU_CAPABILITY": "avx2"}, AVX512, "avx2"),
    ({"ATEN_CPU_CAPABILITY": "default"}, AVX512, "default"),
    ({"ATEN_CPU_CAPABILITY": "avx512"}, {"AVX2": True, "FMA3": True}, "avx512"),  # (torch trusts the variable)
])
def test_the_capability_is_chosen_as_torch_chooses(environ, features, expected):
    """ATen's compute_cpu_capability: the variable if it names a capability, else AVX-512 with VL, BW,
    DQ and FMA, else AVX2 with FMA, else none."""
    assert float32_math.torch_cpu_capability(environ, features) == expected


def test_an_unknown_capability_is_ignored_with_torchs_warning():
    with pytest.warns(UserWarning, match="ignoring invalid value for ATEN_CPU_CAPABILITY: AVX2"):
        assert float32_math.torch_cpu_capability({"ATEN_CPU_CAPABILITY": "AVX2"}, AVX512) == "avx512"


# Run in a process of its own under one capability: torch and minilora on the same inputs, the same
# thread counts (torch's chunks and minilora's follow them), each result compared bit for bit, but
# where torch's default build calls glibc's expf (sigmoid): within 2 ulps.
SCRIPT = textwrap.dedent("""
    import types
    import numpy as np
    import torch
    import minilora
    from minilora import fastmath, float32_math
    from minilora.ops import reduce as ops_reduce

    def same(ours, theirs, ulps=0):
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        assert (np.abs(ours - theirs) <= ulps * np.spacing(np.abs(theirs.astype(np.float32)))).all(), \\
            (float32_math.CPU_CAPABILITY, int((ours != theirs).sum()), ours.size)

    assert float32_math.CPU_CAPABILITY == torch.backends.cpu.get_cpu_capability().lower()
    rng = np.random.default_rng(0)
    glibc = float32_math.CPU_CAPABILITY == "default"
    for threads in (1, 2):
        torch.set_num_threads(threads), minilora.set_num_threads(threads)
        x = (rng.standard_normal(70001) * 4).astype(np.float32)  # chunks of 35001: tails of 9 or 25
        same(minilora.sigmoid(minilora.tensor(x)).numpy(), torch.sigmoid(torch.tensor(x)).numpy(),
             2 if glibc else 0)
        for width in (5, 20, 37, 200):  # softmax's backward row sums: lanes, partial block, fold
            y = torch.softmax(torch.tensor(rng.standard_normal((16, width)), dtype=torch.float32), -1)
            g = rng.standard_normal((16, width)).astype(np.float32)
            ctx = types.SimpleNamespace(out=y.numpy(), axis=-1)
            theirs = torch.ops.aten._softmax_backward_data(torch.tensor(g), y, -1, torch.float32)
            same(ops_reduce.Softmax.backward(ctx, g), theirs.numpy())
    x, g = x[:4000], rng.standard_normal(4000).astype(np.float32)  # silu's backward: 1 + x (1 - s) fused or not
    theirs = torch.ops.aten.silu_backward(torch.tensor(g), torch.tensor(x)).numpy()
    ours = np.empty_like(x)
    fastmath.silu_backward(g, x, torch.sigmoid(torch.tensor(x)).numpy(), ours)
    same(ours, theirs)
    a, b = (rng.standard_normal(4099) * 3).astype(np.float32), rng.standard_normal(4099).astype(np.float32)
    for lib in (torch, minilora):  # multiply-adds fused or not: lerp, addcmul, linspace, uniform_
        lib.manual_seed(0)
        t, u = lib.tensor(a), lib.tensor(b)
        results = [lib.lerp(t, u, 0.3), lib.lerp(t, u, 0.8), lib.addcmul(t, t, u, value=0.3),
                   lib.linspace(-3, 2.1, 1001), lib.empty(5000).uniform_(-0.1234567, 0.1234567),
                   lib.empty(500, dtype=lib.float64).uniform_(-0.1234567, 0.1234567)]
        if lib is torch:
            theirs = [r.numpy() for r in results]
    for ours, expected in zip(results, theirs):
        same(ours.numpy(), expected)
    print("ok", float32_math.CPU_CAPABILITY)
""")


@pytest.mark.parametrize("weight", [0.3, 0.8, "tensor"])
def test_float32_lerp_is_torchs_fused_multiply_add(weight):
    """torch's lerp_vec: fmadd(w, end - start, start) for |w| < 0.5, else fmadd(w - 1, end - start, end),
    the weight a float32 (NumPy's two roundings differed in 820 of 4099 elements at 0.3)."""
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal(4099) * 3).astype(np.float32), rng.standard_normal(4099).astype(np.float32)
    w = rng.uniform(-0.2, 1.2, 4099).astype(np.float32) if weight == "tensor" else weight
    theirs = torch.lerp(torch.tensor(a), torch.tensor(b), torch.tensor(w) if weight == "tensor" else w)
    ours = minilora.lerp(minilora.tensor(a), minilora.tensor(b), minilora.tensor(w) if weight == "tensor" else w)
    assert (ours.numpy().view(np.int32) == theirs.numpy().view(np.int32)).all()


def _supported(capability):
    features = float32_math.torch_cpu_capability({}, None)  # what this CPU runs
    order = ["default", "avx2", "avx512"]
    return order.index(capability) <= order.index(features)


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_models_follow_torch_under_each_capability(capability):
    """sigmoid's scalar tail, softmax's backward row sums and silu's backward as torch under AVX2 (16 and
    8 instead of 32 and 16) and its default build (lanes added left to right, no fused multiply-add)."""
    if not _supported(capability):
        pytest.skip(f"this CPU cannot run torch's {capability} kernels")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    run = background_runs.run_process([sys.executable, "-c", SCRIPT], env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["ok", capability]
