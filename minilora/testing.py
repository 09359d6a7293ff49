"""Checking gradients: analytic backward vs central differences, in float64.

``grad_check(fn, *inputs)`` perturbs every element of every input that requires grad by ``+-eps``,
measures ``(f(x+eps) - f(x-eps)) / 2eps`` of a random projection of the output, and compares it
with what ``backward()`` produced. On failure the message names the function, the input, the worst
element, and both values -- so a learner knows where to look.
"""
import numpy as np

from .tensor import Tensor, no_grad

__all__ = ["grad_check", "GradCheckError", "assert_close"]


class GradCheckError(AssertionError):
    """``input_index``: the position, among ``fn``'s inputs, of the input whose gradient is wrong."""

    def __init__(self, message, input_index=None):
        super().__init__(message)
        self.input_index = input_index


def _name(fn):
    owner = getattr(fn, "__self__", None)  # `Exp.apply` is named after its op, `Exp`
    if isinstance(owner, type):
        return owner.__name__
    return getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))


def grad_check(fn, *inputs, eps=1e-6, atol=1e-7, rtol=1e-5, seed=0, name=None):
    """Raise ``GradCheckError`` unless backward matches central differences for every input.

    ``fn`` maps the inputs (Tensors; float64 ones with ``requires_grad=True`` are checked) to a
    Tensor. ``name`` is what the failure message calls ``fn`` (default: its own name). Returns the
    largest absolute error seen.
    """
    checked = [(i, t) for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    for i, t in checked:
        if t.dtype != np.float64:
            coarse = ("a 16-bit float keeps 8 (bfloat16) or 11 (float16) significant bits, so "
                      f"x + eps rounds back to x: check the op in float64 and compare its {t.dtype} "
                      "result with assert_close" if t.dtype.itemsize == 2 else
                      f"{t.dtype} differences are too coarse to check a gradient")
            raise TypeError(f"grad_check needs float64 inputs (input {i} is {t.dtype}): {coarse}")
        t.grad = None
    out = fn(*inputs)
    # A random projection turns any output shape into a scalar that depends on every element.
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(out.device.xp.asarray(weights))

    def projected(*args):
        with no_grad():
            return float((fn(*args).numpy(force=True) * weights).sum())

    worst = 0.0
    for i, t in checked:
        analytic = t.numpy(force=True) if t.grad is None else _host(t.grad._array)
        if t.grad is None:
            analytic = np.zeros(t.shape)
        numeric = np.zeros(t.shape)
        array = t._array  # perturbed element by element, in place (by index: a transposed or
        for j in np.ndindex(t.shape):  # sliced input has no flat view to write through)
            original = array[j].item()
            array[j] = original + eps
            plus = projected(*inputs)
            array[j] = original - eps
            minus = projected(*inputs)
            array[j] = original
            numeric[j] = (plus - minus) / (2 * eps)
        err = np.abs(analytic - numeric)
        bad = ~(err <= atol + rtol * np.abs(numeric))  # written so that NaN counts as bad
        if bad.any():
            k = np.unravel_index(np.argmax(err - rtol * np.abs(numeric)), t.shape)
            raise GradCheckError(
                f"grad_check({name or _name(fn)}): input {i} (shape {tuple(t.shape)}) has a wrong gradient at "
                f"index {tuple(int(x) for x in k)}: backward gave {analytic[k]:.10g}, central "
                f"differences give {numeric[k]:.10g} (|diff| {err[k]:.3g}; {int(bad.sum())} of "
                f"{bad.size} elements off)", input_index=i)
        worst = max(worst, float(err.max(initial=0.0)))
    return worst


def _host(array):
    """A NumPy array of ``array``: CuPy arrays copied from the device, anything else converted."""
    return array.get() if type(array).__module__.split(".")[0] == "cupy" else np.asarray(array)


# torch.testing.assert_close's defaults for the 16-bit floats: (rtol, atol) -- half a unit in the last
# place of a bfloat16 (2**-7 = 7.8e-3) is far above float32's 1e-6
_DEFAULT_TOLERANCES = {"bfloat16": (1.6e-2, 1e-5), "float16": (1e-3, 1e-5)}


def assert_close(actual, expected, rtol=None, atol=None, name="value"):
    """llm.c-style validator: ``|a - e| <= atol + rtol*|e|`` everywhere, first mismatches shown.

    Default tolerances: rtol = atol = 1e-6, except where either side is a 16-bit float: then
    torch.testing's (bfloat16: rtol 1.6e-2, atol 1e-5; float16: rtol 1e-3, atol 1e-5). Pass both
    to choose your own."""
    a = actual.numpy(force=True) if isinstance(actual, Tensor) else _host(actual)  # np.asarray refuses CuPy
    e = expected.numpy(force=True) if isinstance(expected, Tensor) else _host(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected {e.shape}")
    loose = [_DEFAULT_TOLERANCES[x.dtype.name] for x in (a, e) if x.dtype.name in _DEFAULT_TOLERANCES]
    default_rtol, default_atol = max(loose) if loose else (1e-6, 1e-6)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    bad = ~(np.abs(a.astype(np.float64) - e.astype(np.float64)) <= atol + rtol * np.abs(e.astype(np.float64)))
    if bad.any():
        idx = np.argwhere(bad)[:5]
        shown = "; ".join(f"{tuple(int(x) for x in i)}: {a[tuple(i)]!r} vs {e[tuple(i)]!r}" for i in idx)
        raise AssertionError(f"{name}: {int(bad.sum())} of {a.size} elements differ beyond "
                             f"atol={atol}, rtol={rtol}. First: {shown}")
