"""``repr(tensor)`` as torch prints it (torch/_tensor_str.py's rules, default print options):

    tensor([1.0000, 2.5000, 3.1406], dtype=torch.bfloat16)
    tensor([[1., 2.]], requires_grad=True)
    tensor([1.0000e-05, 1.0000e+03])

One format for all the elements of a tensor: whole numbers as ``1.``; otherwise 4 decimals, or
scientific notation when the nonzero magnitudes span more than 1000x, pass 1e8 or go below 1e-4.
Columns are right-aligned to the widest element, rows wrap at 80 characters, and a tensor of more than
1000 elements shows only its first and last 3 along each dimension. The dtype is named unless it is
the default float dtype, int64 or bool. 16-bit floats are formatted from their float32 values, as torch.
"""
import math

import numpy as np

from . import dtypes

PRECISION, THRESHOLD, EDGEITEMS, LINEWIDTH = 4, 1000, 3, 80


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
        if finite.size == 0:
            return
        magnitudes = np.abs(finite).astype(np.float64)
        smallest, largest = magnitudes.min(), magnitudes.max()
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        wide_range = largest / smallest > 1000.0 or largest > 1.0e8
        self.sci_mode = wide_range if self.int_mode else wide_range or smallest < 1.0e-4
        for value in finite.tolist():
            if self.sci_mode:
                width = len(f"{value:.{PRECISION}e}")
            elif self.int_mode:
                width = len(f"{value:.0f}") + 1  # the trailing "."
            else:
                width = len(f"{value:.{PRECISION}f}")
            self.max_width = max(self.max_width, width)

    def format(self, value):
        if not self.floating:
            text = str(value)
        elif self.sci_mode:
            text = f"{value:{self.max_width}.{PRECISION}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            text = f"{value:.{PRECISION}f}"
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
    """The first and last EDGEITEMS along every dimension longer than twice that."""
    for axis, n in enumerate(values.shape):
        if n > 2 * EDGEITEMS:
            keep = np.r_[0:EDGEITEMS, n - EDGEITEMS:n]
            values = np.take(values, keep, axis=axis)
    return values


def _vector(values, indent, summarize, formatter):
    per_line = max(1, (LINEWIDTH - indent) // (formatter.max_width + 2))  # ", " between elements
    if summarize and len(values) > 2 * EDGEITEMS:
        data = ([formatter.format(v) for v in values[:EDGEITEMS].tolist()] + [" ..."]
                + [formatter.format(v) for v in values[-EDGEITEMS:].tolist()])
    else:
        data = [formatter.format(v) for v in values.tolist()]
    lines = [", ".join(data[i:i + per_line]) for i in range(0, len(data), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(values, indent, summarize, formatter):
    if values.ndim == 0:
        return formatter.format(values.item())
    if values.ndim == 1:
        return _vector(values, indent, summarize, formatter)
    rows = range(len(values))
    if summarize and len(values) > 2 * EDGEITEMS:
        rows = [*range(EDGEITEMS), None, *range(len(values) - EDGEITEMS, len(values))]
    parts = ["..." if i is None else _nested(values[i], indent + 1, summarize, formatter) for i in rows]
    return "[" + ("," + "\n" * (values.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def _add_suffixes(text, suffixes, indent):
    last_line = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > LINEWIDTH:
            text += ",\n" + " " * indent + suffix
            last_line = indent + len(suffix)
        else:
            text += ", " + suffix
            last_line += len(suffix) + 2
    return text + ")"


def tensor_repr(tensor):
    """``repr(tensor)`` in torch's words (see the module docstring)."""
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
        default_complex = np.dtype(np.complex128 if dtypes.get_default_dtype().itemsize == 8 else np.complex64)
        if dtype not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool, default_complex):
            suffixes.append(shown_dtype)
        summarize = values.size > THRESHOLD
        shown = _summarized(values) if summarize else values
        formatter = _ComplexFormatter(shown) if dtype.kind == "c" else _Formatter(shown)
        body = _nested(values, indent, summarize, formatter)
    if tensor.grad_fn is not None:
        suffixes.append(f"grad_fn=<{tensor.grad_fn.name()}>")
    elif tensor.requires_grad:
        suffixes.append("requires_grad=True")
    return _add_suffixes(prefix + body, suffixes, indent)
