"""The LoRA step's speed paths (round 32): each is the slow path's numbers, and is the one taken.

MKL's workers (on minilora's private copy of GNU OpenMP, ``blas._private_openmp``) spin briefly before they sleep
(``blas.SPINS_BEFORE_SLEEP``) instead of sleeping at once: the benchmarks/lora_step.py step no longer waits for a
sleeping worker at each of its ~220 products. The thread count and MKL's split are unchanged, so every product's
bits are (tests/test_lora_step_bits_r29.py, tests/test_mkl_lora_threads_r31.py guard those). What is checked here
is that the policy is the one set: libgomp reports its settings on ``OMP_DISPLAY_ENV=verbose`` as it loads, in a
fresh process (this one has its libraries loaded already). No timing is measured.
"""
import json
import os
import sys

import pytest

from minilora import blas

import background_runs  # (tests/ is on the path: conftest.py)

pytestmark = pytest.mark.skipif(blas._mkl_library() is None, reason="the `mkl` wheel (minilora[mkl]) is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOAD_MKL = """
import json, os
from minilora import blas
print(json.dumps({"library": blas.library(), "private_openmp": blas._openmp is not None,
                  "left_in_environ": sorted({"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ))}))
"""


def _load_mkl_displaying_openmp(**environ):
    """Load minilora's MKL in a fresh process whose OpenMP prints its settings: ``(its JSON line, stderr)``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(PYTHONPATH=ROOT, OMP_DISPLAY_ENV="verbose", OMP_NUM_THREADS="2", MINILORA_NUM_THREADS="2", **environ)
    done = background_runs.run_process([sys.executable, "-c", LOAD_MKL], env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_mkl_workers_spin_briefly_before_they_sleep():
    loaded, openmp_settings = _load_mkl_displaying_openmp()
    if loaded["library"] != "mkl" or not loaded["private_openmp"]:
        pytest.skip("MKL runs without minilora's private GNU OpenMP here (no compiler, or its sequential layer)")
    assert f"GOMP_SPINCOUNT = '{blas.SPINS_BEFORE_SLEEP}'" in openmp_settings, openmp_settings[-2000:]
    assert 0 < blas.SPINS_BEFORE_SLEEP < 100000  # (longer spins cost much CPU time under load: blas.py's numbers)
    assert loaded["left_in_environ"] == []  # (set while the library loads only: torch's OpenMP keeps its own)
