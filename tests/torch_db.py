"""torch's own test databases as minilora's oracle.

torch tests every operator with sample inputs its developers wrote (``op_db``: one OpInfo per op), every nn
module with constructor and forward argument sets (``module_db``: ModuleInfo) and every optimizer with its
option sets (``optim_db``: OptimizerInfo). Those are the calls torch's users make, in every spelling: function,
method and in-place, positional and keyword, odd shapes and dtypes. This file turns one such call into the same
call on minilora, so a test can compare the two answers. The test files that use it (tests/test_opinfo_*_r14.py,
tests/test_module_db_r14.py, tests/test_optim_db_r14.py) say which entries are compared, how closely, and which
ones minilora refuses by name.

Importing this module skips the calling test file when torch (or ``expecttest``, which torch's test
databases import) is not installed.
"""
import numbers

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

import minilora as ml  # noqa: E402

# torch's test utilities freeze torch.backends' flags when imported (common_utils calls disable_global_flags(): its
# own suite changes them only inside flags()); the test databases import them, and in one pytest process that
# froze the flags for every later file (tests/test_toplevel_r8.py sets them as users do: "not allowed to set
# torch.backends.cudnn flags after disable_global_flags"). Imported here first, so the freeze is lifted once.
import torch.testing._internal.common_utils  # noqa: E402,F401
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True  # (the flag's own module)


# ---- finding minilora's counterpart -----------------------------------------------------------------
def resolve(root, dotted_name):
    """``resolve(ml, "nn.functional.conv2d")`` -> ml.nn.functional.conv2d, or None when a part is missing."""
    for part in dotted_name.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def ml_dtype(torch_dtype):
    """torch.float32 -> ml.float32 (same names; None when minilora has no such dtype)."""
    return getattr(ml, str(torch_dtype).removeprefix("torch."), None)


# ---- op_db's samples, without its test-tracking wrapper ---------------------------------------------
def sample_inputs(op, dtype, requires_grad=False, seed=0):
    """``op.sample_inputs("cpu", dtype, requires_grad)``'s samples, from the OpInfo's own generator after
    ``torch.manual_seed(seed)``. (``op.sample_inputs`` wraps them in a TrackedInputIter whose set-up calls
    ``inspect.stack()``: ~60 ms under pytest's deep stack, per call, most of a sweep file's time.)"""
    torch.manual_seed(seed)
    return op.sample_inputs_func(op, "cpu", dtype, requires_grad)


def tracked(inputs):
    """The samples (or ErrorInputs) of ``op.sample_inputs("cpu", ...)`` (``op.error_inputs("cpu")``) exactly, given
    ``op.sample_inputs_func(op, "cpu", ...)`` (``op.error_inputs_func(op, "cpu")``): torch's wrapper around them
    (TrackedInputIter) reseeds torch, ``random`` and NumPy with common_utils.SEED before each one -- the seed it
    uses outside a unittest.TestCase, as under pytest -- and this does the same, without the wrapper's search for
    that TestCase (``inspect.stack()``, once per call and once per error input: ~60 ms each under pytest)."""
    inputs = iter(inputs)
    while True:
        torch.testing._internal.common_utils.set_rng_seed(torch.testing._internal.common_utils.SEED)
        item = next(inputs, _END)
        if item is _END:
            return
        yield item


_END = object()


def error_inputs(op, seed=0):
    """``op.error_inputs("cpu")``'s ErrorInputs, the same way (none where the OpInfo has no error inputs)."""
    if op.error_inputs_func is None:
        return []
    torch.manual_seed(seed)
    return op.error_inputs_func(op, "cpu")


# ---- carrying a torch call over to minilora ---------------------------------------------------------
def to_numpy(tensor):
    """A torch tensor's values as NumPy, bf16 (which NumPy lacks) widened exactly to float32."""
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy()
    return tensor.numpy()


def to_minilora(value, _converted=None):
    """The same value for minilora: tensors copied with dtype and requires_grad kept, dtypes and sizes
    renamed, containers converted element by element; everything else (numbers, strings, None) as is.
    A tensor met twice becomes the same minilora tensor twice (``[p, p]``: a duplicate parameter, an
    input that is also an argument), as it is one object in torch."""
    converted = {} if _converted is None else _converted
    if isinstance(value, torch.Tensor):
        if id(value) not in converted:
            converted[id(value)] = (value, _tensor_to_minilora(value))  # (value kept: its id stays unique)
        return converted[id(value)][1]
    if isinstance(value, torch.dtype):
        return ml_dtype(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, torch.memory_format):  # (torch.preserve_format -> ml.preserve_format, ...)
        return getattr(ml, str(value).removeprefix("torch."))
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, dict):
        return {key: to_minilora(item, converted) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(to_minilora(item, converted) for item in value)
    return value


def _tensor_to_minilora(tensor):
    array = to_numpy(tensor).copy()
    converted = ml.tensor(array, dtype=ml_dtype(tensor.dtype))
    if tensor.requires_grad:
        converted.requires_grad_(True)
    return converted


def call_with(fn, sample, convert=lambda value: value):
    """``fn(input, *args, **kwargs)`` for one OpInfo SampleInput, arguments passed through ``convert``
    all at once (a tensor that is both the input and an argument stays one tensor)."""
    first, args, kwargs = convert((sample.input, tuple(sample.args), dict(sample.kwargs)))
    return fn(first, *args, **kwargs)


# ---- comparing the answers --------------------------------------------------------------------------
def as_numpy(value):
    """Either framework's answer as NumPy (recursively for tuples and lists), numbers as 0-d arrays."""
    if isinstance(value, torch.Tensor):
        return to_numpy(value)
    if isinstance(value, ml.Tensor):
        array = np.asarray(value.detach().numpy())
        return array.astype(np.float32) if str(array.dtype) == "bfloat16" else array
    if isinstance(value, (list, tuple)):
        return [as_numpy(item) for item in value]
    if isinstance(value, (numbers.Number, np.generic)):
        return np.asarray(value)
    return value


def dtype_name(tensor):
    """'float32', 'bfloat16', ... for a tensor of either framework."""
    return str(tensor.dtype).removeprefix("torch.")


def assert_same(ours, theirs, rtol=0.0, atol=0.0, what="output"):
    """minilora's answer equals torch's: same structure, shapes, dtypes and values (NaN where torch has NaN).
    rtol=atol=0 asks for the same bits; each caller justifies any tolerance it passes."""
    if isinstance(theirs, torch.Tensor) and isinstance(ours, ml.Tensor):
        assert dtype_name(ours) == dtype_name(theirs), \
            f"{what}: dtype {dtype_name(ours)}, torch's {dtype_name(theirs)}"
    ours, theirs = as_numpy(ours), as_numpy(theirs)
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), \
            f"{what}: torch returns {len(theirs)} values, minilora {ours!r:.200}"
        for index, (mine, torchs) in enumerate(zip(ours, theirs)):
            assert_same(mine, torchs, rtol, atol, f"{what}[{index}]")
        return
    if not isinstance(theirs, np.ndarray):
        assert ours == theirs, f"{what}: torch {theirs!r}, minilora {ours!r}"
        return
    assert isinstance(ours, np.ndarray), f"{what}: torch returns an array, minilora {type(ours).__name__}"
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, torch's {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype}, torch's {theirs.dtype}"
    if rtol == 0 and atol == 0:
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
