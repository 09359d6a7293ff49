"""``torch.backends.cpu.get_cpu_capability()`` and ``torch.backends.mkl.is_available()`` as torch's (round 32):
minilora answered "DEFAULT" and False whatever the CPU and its BLAS, while its own float32 kernels model the AVX-512
build (``float32_math.CPU_CAPABILITY``) and its products go through MKL -- code branching on them took the other
branch. The capability follows ``ATEN_CPU_CAPABILITY`` as torch's does (checked in fresh processes)."""
import os
import sys

import pytest

import background_runs

import minilora as ml
from minilora import blas, float32_math

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_capability_and_mkl_are_this_machines_as_torchs():
    assert ml.backends.cpu.get_cpu_capability() == torch.backends.cpu.get_cpu_capability()
    assert ml.backends.cpu.get_cpu_capability() == float32_math.CPU_CAPABILITY.upper()
    assert ml.backends.mkl.is_available() is (blas.library() == "mkl")
    if blas.library() == "mkl":
        assert ml.backends.mkl.is_available() is torch.backends.mkl.is_available()


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_the_capability_follows_aten_cpu_capability(capability):
    code = "import minilora, torch; print(minilora.backends.cpu.get_cpu_capability(), " \
           "torch.backends.cpu.get_cpu_capability())"
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, PYTHONPATH=ROOT)
    done = background_runs.run_process([sys.executable, "-c", code], env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    ours, theirs = done.stdout.split()
    assert ours == theirs == capability.upper()
