"""``repr(tensor)`` as torch prints it (torch/_tensor_str.py's rules, default print options):

    tensor([1.0000, 2.5000, 3.1406], dtype=torch.bfloat16)
    tensor([[1., 2.]], requires_grad=True)
    tensor([1.0000e-05, 1.0000e+03])

One format for all the elements of a tensor: whole numbers as ``1.``; otherwise 4 decimals, or
scientific notation when the nonzero magnitudes span more than 1000x, pass 1e8 or go below 1e-4.
Columns are right-aligned to the widest element, rows wrap at 80 characters, and a tensor of more than
1000 elements shows only its first and last 3 along each dimension. The dtype is named unless it is
the default float dtype, int64 or bool. 16-bit floats are formatted from their float32 values, as torch.
Those numbers (4 decimals, 1000 elements, 3 edge items, 80 characters) are the default print options:
``set_printoptions`` changes them, as ``torch.set_printoptions``.
"""
import contextlib
import dataclasses
import math

import numpy as np

from . import dtypes


@dataclasses.dataclass
class _PrintOptions:
    precision: int = 4
    threshold: float = 1000
    edgeitems: int = 3
    linewidth: int = 80
    sci_mode: object = None  # None: chosen from the values; True/False: forced


PRINT_OPTS = _PrintOptions()
_PROFILES = {"default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
             "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
             "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80)}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None, sci_mode=None):
    """``torch.set_printoptions``: a ``profile`` ("default", "short", "full") first, then each option
    given; ``sci_mode`` is always set (None: chosen from the values again), as torch."""
    if profile is not None:
        for name, value in _PROFILES.get(profile, {}).items():  # (torch ignores an unknown profile)
            setattr(PRINT_OPTS, name, value)
    for name, value in dict(precision=precision, threshold=threshold, edgeitems=edgeitems,
                            linewidth=linewidth).items():
        if value is not None:
            setattr(PRINT_OPTS, name, value)
    PRINT_OPTS.sci_mode = sci_mode


def get_printoptions():
    """The current options as a dict that ``set_printoptions(**options)`` takes back."""
    return dataclasses.asdict(PRINT_OPTS)


@contextlib.contextmanager
def printoptions(**options):
    """``torch._tensor_str.printoptions``: the options changed inside a ``with`` block only."""
    old = get_printoptions()
    set_printoptions(**options)
    try:
        yield
    finally:
        set_printoptions(**old)


class _Formatter:
    """Decides, from all the (shown) values at once, how each element is written and how wide."""

    def __init__(self, values):
        self.floating = values.dtype.kind == "f"
        self.int_mode, self.sci_mode, self.max_width = True, False, 1
        flat = values.reshape(-1)
        if not self.floating:
            for value in flat.tolist():
                self.max_width = max(self.max_width, len(str(value)))
            return
        finite = flat[np.isfinite(flat) & (flat != 0)]
        if finite.size:
            self._measure(finite)

    def _measure(self, finite):
        """Integer or not, scientific or not (set_printoptions' sci_mode, else from the range), and the
        widest element, from the nonzero finite values."""
        precision = PRINT_OPTS.precision
        magnitudes = np.abs(finite).astype(np.float64)
        smallest, largest = magnitudes.min(), magnitudes.max()
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        self.sci_mode = (largest / smallest > 1000.0 or largest > 1.0e8 or smallest < 1.0e-4
                         if PRINT_OPTS.sci_mode is None else bool(PRINT_OPTS.sci_mode))
        for value in finite.tolist():
            if self.sci_mode:
                width = len(f"{value:.{precision}e}")
            elif self.int_mode:
                width = len(f"{value:.0f}") + 1  # the trailing "."
            else:
                width = len(f"{value:.{precision}f}")
            self.max_width = max(self.max_width, width)

    def format(self, value):
        if not self.floating:
            text = str(value)
        elif self.sci_mode:
            text = f"{value:{self.max_width}.{PRINT_OPTS.precision}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            text = f"{value:.{PRINT_OPTS.precision}f}"
        return " " * (self.max_width - len(text)) + text


class _ComplexFormatter:
    """torch's complex elements: the real parts formatted together, the imaginary parts together (no padding),
    joined by their sign: ``1.0000+2.5000j``."""

    def __init__(self, values):
        self.real, self.imag = _Formatter(values.real), _Formatter(values.imag)
        self.max_width = self.real.max_width + self.imag.max_width + 1  # (+1: the "j")

    def format(self, value):
        imag = (self.imag.format(value.imag) + "j").lstrip()
        return self.real.format(value.real) + ("" if imag[0] in "+-" else "+") + imag


def _summarized(values):
    """The first and last ``edgeitems`` along every dimension longer than twice that (the values
    the formatter measures). With 0 edge items torch measures nothing of a matrix and, by its
    ``x[-0:]``, all of a vector."""
    edge = PRINT_OPTS.edgeitems
    if not edge:
        return values if values.ndim == 1 else values[(slice(0, 0),) * values.ndim]
    for axis, n in enumerate(values.shape):
        if n > 2 * edge:
            keep = np.r_[0:edge, n - edge:n]
            values = np.take(values, keep, axis=axis)
    return values


def _vector(values, indent, summarize, formatter):
    per_line = max(1, (PRINT_OPTS.linewidth - indent) // (formatter.max_width + 2))  # ", " between elements
    edge = PRINT_OPTS.edgeitems
    if summarize and not edge:
        data = ["..."]
    elif summarize and len(values) > 2 * edge:
        data = ([formatter.format(v) for v in values[:edge].tolist()] + [" ..."]
                + [formatter.format(v) for v in values[len(values) - edge:].tolist()])
    else:
        data = [formatter.format(v) for v in values.tolist()]
    lines = [", ".join(data[i:i + per_line]) for i in range(0, len(data), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(values, indent, summarize, formatter):
    if values.ndim == 0:
        return formatter.format(values.item())
    if values.ndim == 1:
        return _vector(values, indent, summarize, formatter)
    rows, edge = range(len(values)), PRINT_OPTS.edgeitems
    if summarize and len(values) > 2 * edge:
        rows = [*range(edge), None, *range(len(values) - edge, len(values))]
    parts = ["..." if i is None else _nested(values[i], indent + 1, summarize, formatter) for i in rows]
    return "[" + ("," + "\n" * (values.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def _add_suffixes(text, suffixes, indent):
    last_line = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > PRINT_OPTS.linewidth:
            text += ",\n" + " " * indent + suffix
            last_line = indent + len(suffix)
        else:
            text += ", " + suffix
            last_line += len(suffix) + 2
    return text + ")"


def tensor_repr(tensor):
    """``repr(tensor)`` in torch's words (see the module docstring)."""
    if tensor.device.type == "meta":
        return _meta_repr(tensor)
    values = tensor.detach().cpu().numpy()
    dtype = values.dtype
    if dtype.itemsize == 2 and dtypes.is_floating(dtype):
        values = values.astype(np.float32)  # exact; Python formatting needs a NumPy float
    prefix, suffixes = "tensor(", []
    indent = len(prefix)
    if tensor.device.name != "cpu":
        suffixes.append(f"device='{tensor.device.name}'")
    shown_dtype = f"dtype=torch.{dtype.name}"
    if values.size == 0:
        if values.ndim != 1:
            suffixes.append(f"size={tuple(values.shape)}")
        if dtype != dtypes.get_default_dtype():
            suffixes.append(shown_dtype)
        body = "[]"
    else:
        if not PRINT_OPTS.edgeitems:
            suffixes.append(f"size={tuple(values.shape)}")
        default_complex = np.dtype(np.complex128 if dtypes.get_default_dtype().itemsize == 8 else np.complex64)
        if dtype not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool, default_complex):
            suffixes.append(shown_dtype)
        summarize = values.size > PRINT_OPTS.threshold
        shown = _summarized(values) if summarize else values
        formatter = _ComplexFormatter(shown) if dtype.kind == "c" else _Formatter(shown)
        body = _nested(values, indent, summarize, formatter)
    return _add_suffixes(prefix + body, suffixes + _graph_suffixes(tensor), indent)


def _meta_repr(tensor):
    """A meta tensor has no values to show: torch prints ``...``, its size, and its dtype unless the default."""
    suffixes = ["device='meta'", f"size={tuple(tensor.shape)}"]
    if tensor.dtype != dtypes.get_default_dtype():
        suffixes.append(f"dtype=torch.{tensor.dtype.name}")
    return _add_suffixes("tensor(...", suffixes + _graph_suffixes(tensor), len("tensor("))


def _graph_suffixes(tensor):
    """``grad_fn=<...>`` or ``requires_grad=True``, and an open forward-AD level's ``tangent=``."""
    suffixes = []
    try:
        grad_fn = tensor.grad_fn
        name = None if grad_fn is None else grad_fn.name()
    except RuntimeError:  # (a no_grad view whose base changed in place since has no valid node: torch's repr says so)
        name = "Invalid"
    if name is not None:
        # (torch's _tensor_str: a C++ node's name without its namespace, torch::autograd::CopyBackwards as CopyBackwards)
        suffixes.append(f"grad_fn=<{name.rsplit('::', 1)[-1]}>")
    elif tensor.requires_grad:
        suffixes.append("requires_grad=True")
    tangent = _dual_tangent(tensor)
    if tangent is not None:  # (a 0-d tangent formats as its number, as torch's f"tangent={tangent}")
        suffixes.append(f"tangent={tangent}")
    return suffixes


def _dual_tangent(tensor):
    """The tangent an open torch.autograd.forward_ad level holds for ``tensor`` (minilora/forward_ad.py), or None."""
    from .tensor import _forward_ad as hooks  # (now: tensor.py imports this module; the level may open later)
    return None if hooks is None else hooks.tangent(tensor)
