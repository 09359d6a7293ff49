"""torch's deprecated call signatures (torch/tools/autograd/deprecated.yaml), which old tutorials and
optimizers still use: ``p.data.add_(-lr, p.grad)``, ``exp_avg_sq.addcmul_(1 - beta2, grad, grad)``,
``torch.addmm(beta, M, alpha, mat1, mat2)``. torch 2.13 still accepts them, with a UserWarning it gives once
per process (one ``TORCH_WARN_ONCE`` in its argument parser serves them all; each time after
``torch.set_warn_always(True)``).

Each function or method here is wrapped so that its own signature is tried first; only a call that fails to
bind (TypeError) is read against the deprecated one, then made in the current spelling. A call that fits
neither raises the original error."""
import functools
import numbers
import warnings

from .. import backends
from ..tensor import Tensor

# name: (the scalars before the tensors in the deprecated order, the tensors' names, whether `input`
# comes after the first scalar (the addmm family: ``addmm(beta, input, alpha, mat1, mat2)``))
_SIGNATURES = {
    "add": (("alpha",), ("other",), False),
    "sub": (("alpha",), ("other",), False),
    "addcmul": (("value",), ("tensor1", "tensor2"), False),
    "addcdiv": (("value",), ("tensor1", "tensor2"), False),
    "addmm": (("beta", "alpha"), ("mat1", "mat2"), True),
    "addbmm": (("beta", "alpha"), ("batch1", "batch2"), True),
    "baddbmm": (("beta", "alpha"), ("batch1", "batch2"), True),
    "addmv": (("beta", "alpha"), ("mat", "vec"), True),
    "addr": (("beta", "alpha"), ("vec1", "vec2"), True),
}
# the current signatures with torch's out_dtype form besides (torch's warning lists it)
_OUT_DTYPE_FORMS = {"addmm", "baddbmm"}
_warned = False


def _forms(name):
    """The deprecated parameter orders of ``name`` (its function's, with ``input``): the addmm family has
    two, ``(beta, input, alpha, m1, m2)`` and ``(beta, input, m1, m2)``."""
    scalars, tensors, input_after_first = _SIGNATURES[name]
    if not input_after_first:
        return [("input",) + scalars + tensors]
    return [(scalars[0], "input") + scalars[1:] + tensors, (scalars[0], "input") + tensors]


def _is_number(value):
    """torch's ``Number``: a Python or NumPy number, or a 0-d tensor (read as its value)."""
    return isinstance(value, numbers.Number) or (isinstance(value, Tensor) and value.ndim == 0)


def _bind(params, args, kwargs, method):
    """``args``/``kwargs`` bound to the deprecated ``params`` (``self`` first for a method), or None."""
    if method:  # a method's self is bound first; the order of the rest is the function's without input
        params = ("input",) + tuple(p for p in params if p != "input")
        if "input" in kwargs:
            return None
    if len(args) > len(params):
        return None
    bound = dict(zip(params, args))
    for key, value in kwargs.items():
        if key in bound or key not in params:
            return None
        bound[key] = value
    return bound if len(bound) == len(params) else None


def _typed(bound, name):
    """Whether the bound values have the deprecated signature's types (add's ``other`` may be a number)."""
    scalars, tensors, _ = _SIGNATURES[name]
    if not isinstance(bound["input"], Tensor) or not all(_is_number(bound[s]) for s in scalars if s in bound):
        return False
    return all(isinstance(bound[t], Tensor) or (t == "other" and _is_number(bound[t])) for t in tensors)


def _signature_text(name, params, method, inplace):
    shown = name + "_" if inplace else name
    parts = [f"{'Tensor' if p in ('input',) + _SIGNATURES[name][1] else 'Number'} {p}"
             for p in params if not (method and p == "input")]
    return f"{shown}({', '.join(parts)}{'' if method or inplace else ', *, Tensor out = None'})"


def _current_texts(name, method, inplace):
    scalars, tensors, _ = _SIGNATURES[name]
    shown = name + "_" if inplace else name
    head = ([] if method else ["Tensor input"]) + [f"Tensor {t}" for t in tensors]
    tail = [f"Number {s} = 1" for s in scalars] + ([] if method or inplace else ["Tensor out = None"])
    texts = [f"{shown}({', '.join(head)}, *, {', '.join(tail)})"]
    if name in _OUT_DTYPE_FORMS and not method and not inplace:
        texts.append(f"{shown}({', '.join(head)}, torch.dtype out_dtype, *, {', '.join(tail)})")
    return texts


def _warn_once(name, params, method, inplace):
    global _warned
    if _warned and not backends.is_warn_always_enabled():
        return
    _warned = True
    current = "".join(f"\n\t{text}" for text in _current_texts(name, method, inplace))
    warnings.warn(f"This overload of {name + '_' if inplace else name} is deprecated:\n\t"
                  f"{_signature_text(name, params, method, inplace)}\nConsider using one of the following "
                  f"signatures instead:{current}", UserWarning, stacklevel=3)


def _scalar(value):
    return value.item() if isinstance(value, Tensor) else value


def accepting_deprecated(fn, name, *, method, inplace=False):
    """``fn`` (the function or method ``name``, in-place if ``inplace``) also accepting torch's deprecated
    signatures. The current signature is tried first: the common call costs one frame, no checks."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError as error:
            out = kwargs.pop("out", None) if not (method or inplace) else None
            for params in _forms(name):
                bound = _bind(params, args, kwargs, method)
                if bound is not None and _typed(bound, name):
                    break
            else:
                raise error
        _warn_once(name, params, method, inplace)
        scalars, tensors, _ = _SIGNATURES[name]
        given = {s: _scalar(bound[s]) for s in scalars if s in bound}
        if out is not None:
            given["out"] = out
        return fn(bound["input"], *(bound[t] for t in tensors), **given)
    return call


def install(namespace):
    """Wraps the top-level functions in ``namespace`` (minilora's: ``addmv_`` is torch's one top-level in-place
    form of these) and the Tensor methods, in-place included."""
    for name in _SIGNATURES:
        namespace[name] = accepting_deprecated(namespace[name], name, method=False)
        if name + "_" in namespace:
            namespace[name + "_"] = accepting_deprecated(namespace[name + "_"], name, method=False, inplace=True)
        setattr(Tensor, name, accepting_deprecated(getattr(Tensor, name), name, method=True))
        setattr(Tensor, name + "_", accepting_deprecated(getattr(Tensor, name + "_"), name, method=True,
                                                         inplace=True))
