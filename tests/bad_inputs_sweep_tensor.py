"""The round-24 sweep of bad inputs over ``minilora.Tensor``'s methods against ``torch.Tensor``'s (a script).

    python tests/bad_inputs_sweep_tensor.py             # every method shared with torch
    python tests/bad_inputs_sweep_tensor.py tile expand # only these

The sibling of ``bad_inputs_sweep.py`` (nn.functional): each shared method is called on a float32 (2, 3, 4) tensor
(or the first of ``bad_inputs_core.CANDIDATES`` whose first argument is a tensor, as its self) with the rest of
that candidate, then with one thing changed, classed as in ``bad_inputs_core``; ``dtype`` is left out (another
helper's). Round 24 started at {'same': 1874, 'words': 411, 'no-base': 113, 'diff': 190, 'WORST': 63, 'names': 8} and
left {'same': 2170, 'words': 332, 'no-base': 113, 'diff': 44}: of the diffs, ``x.matmul(3)`` (left unchecked: the
attention code's hot call), ``x.repeat``/``x.permute`` of a float (ValueError/ShapeError where torch's parser says
TypeError) and the old linalg names' integer inputs. ``tests/test_bad_inputs_r24.py`` keeps rows (~1 min here).
Round 25 (with the ``accepts`` pass) went from {'same': 2174, 'words': 332, 'no-base': 112, 'accepts': 44, 'diff': 44}
to {'same': 2233, 'words': 294, 'no-base': 112, 'diff': 23, 'accepts': 1} (x.repeat_interleave() without repeats).
Round 26: {'accepts': 5, 'same': 2229, 'words': 294, 'no-base': 113, 'diff': 23} -> {'accepts': 0, 'same': 2235,
'words': 293, 'no-base': 112, 'diff': 22} (x.repeat_interleave() refused; 4 of the 5 were dim_order, whose torch
side failed in sympy in that run).
Round 31: {'accepts': 0, 'same': 2235, 'words': 293, 'no-base': 112, 'diff': 22} -> {..., 'same': 2238, 'diff': 17}
(true_divide's rounding_mode, moveaxis of a float; left: x.matmul(3), resize/new_tensor of None, the old linalg names).
"""
import sys
import warnings

sys.path.insert(0, __import__("os").path.dirname(__file__))
import torch  # noqa: E402

import minilora as ml  # noqa: E402
from bad_inputs_core import parameter_names, sweep  # noqa: E402

warnings.simplefilter("ignore")

# memory, files, threads, devices and hooks: not for a sweep of bad values
SKIP = {"share_memory_", "pin_memory", "cuda", "to", "register_hook", "register_post_accumulate_grad_hook",
        "backward", "record_stream", "new_empty_strided", "storage", "untyped_storage", "set_", "resize_",
        "resize_as_", "apply_", "map_", "map2_", "tolist", "numpy", "item", "data_ptr"}


def method(L, name):
    """The unbound method: called with the candidate's first argument as its self."""
    return getattr(L.Tensor, name)


if __name__ == "__main__":
    names = sorted(n for n in dir(ml.Tensor) if not n.startswith("_") and hasattr(torch.Tensor, n)
                   and callable(getattr(ml.Tensor, n)) and not isinstance(getattr(ml.Tensor, n), type))
    only = sys.argv[1:]
    sweep([n for n in names if not only or n in only], method, "Tensor.",
          lambda n: parameter_names([getattr(ml.Tensor, n)]), SKIP, kept=1)
