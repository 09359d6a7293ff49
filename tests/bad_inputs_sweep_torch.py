"""The round-24 sweep of bad inputs over the top-level ``minilora.*`` functions against ``torch.*`` (a script).

    python tests/bad_inputs_sweep_torch.py            # every top-level function shared with torch
    python tests/bad_inputs_sweep_torch.py tile cat   # only these

The sibling of ``bad_inputs_sweep.py`` (nn.functional): each shared name is called with the first of
``bad_inputs_core.CANDIDATES`` both libraries answer, then with one thing changed (a Tensor argument made a number,
a list, None, an ndarray or a string, or int64 or bool; a bad dim, size, option or a value of another type for a
parameter with a default; ``dtype`` is left out: another helper's), classed as in ``bad_inputs_core``.
Round 24 started at {'same': 3482, 'diff': 561, 'words': 484, 'no-base': 131, 'WORST': 112, 'torch-ok': 16,
'names': 7} and left {'same': 4088, 'words': 502, 'no-base': 130, 'torch-ok': 16, 'diff': 56}: the torch-ok rows are
``requires_grad=None`` to the factories (torch's parser takes None for it); of the diffs, the Python-level functions
torch checks its own way (einsum, meshgrid, cartesian_prod), the old linalg names' integer inputs (torch's kernel's
NotImplementedError, minilora's linalg RuntimeError) and the overloads whose lists minilora does not keep (quantile's
q, gradient's edge_order). ``tests/test_bad_inputs_r24.py`` keeps rows of what it found (~2 min here).
Round 25 added the ``accepts`` pass (bad_inputs_core.accepted_calls: every candidate call minilora answers and torch
refuses) and went from {'same': 4191, 'words': 397, 'no-base': 130, 'accepts': 82, 'diff': 56, 'torch-ok': 16} to
{'same': 4259, 'words': 371, 'no-base': 130, 'diff': 30, 'accepts': 11}: left, as_strided_copy's sizes one by one
(its twin takes ``*args``), batch_norm_stats on the CPU (torch has no CPU kernel), broadcast_shapes of a tensor,
device(), histogramdd without bins; ``tests/test_bad_inputs_r25.py`` keeps rows.
Round 26 ({'accepts': 11, 'same': 4259, 'words': 371, 'no-base': 130, 'diff': 30} -> {'accepts': 4, 'same': 4298,
'words': 391, 'no-base': 129, 'diff': 30}: the view twins (as_strided_copy, expand_copy, ...) now show their view's
parameters, so the sweep reaches more of their calls): as_strided_copy's sizes one by one, broadcast_shapes of a
tensor, histogramdd without bins refused (tests/test_silent_values_r26.py). Left: batch_norm_stats on the CPU,
device(), histogramdd(x, tensor).
Round 31: {'accepts': 4, 'same': 4286, 'words': 394, 'no-base': 130, 'diff': 27} -> {'accepts': 4, 'same': 4304,
'words': 397, 'no-base': 129, 'diff': 17}: one int as a top-level function's second int[] (torch.reshape(x, 5)),
slice_scatter's step, gradient's edge_order, nuclear_norm's dim, randint_like(x, None) (tests/test_bad_inputs_r31.py).
"""
import inspect
import sys
import warnings

sys.path.insert(0, __import__("os").path.dirname(__file__))
import torch  # noqa: E402

import minilora as ml  # noqa: E402
from bad_inputs_core import parameter_names, sweep  # noqa: E402

warnings.simplefilter("ignore")

# global state, files, threads, the clock, the interpreter: not for a sweep of bad values
SKIP = {"manual_seed", "seed", "initial_seed", "save", "load", "compile", "set_default_dtype", "set_default_device",
        "set_default_tensor_type", "set_num_threads", "set_num_interop_threads", "set_printoptions", "set_grad_enabled",
        "set_rng_state", "use_deterministic_algorithms", "set_flush_denormal", "set_float32_matmul_precision",
        "set_deterministic_debug_mode", "set_warn_always", "fork", "wait", "cond", "while_loop", "vmap",
        "set_anomaly_enabled", "autocast", "from_file", "frombuffer", "from_numpy", "from_dlpack", "get_rng_state"}


def top_level(L, name):
    return getattr(L, name)


if __name__ == "__main__":
    names = sorted(n for n in dir(ml) if not n.startswith("_") and hasattr(torch, n) and callable(getattr(ml, n))
                   and not inspect.isclass(getattr(ml, n)) and not inspect.ismodule(getattr(ml, n))
                   and not n.startswith("set_"))
    only = sys.argv[1:]
    sweep([n for n in names if not only or n in only], top_level, "torch.",
          lambda n: parameter_names([getattr(torch, n), getattr(ml, n)]), SKIP)
