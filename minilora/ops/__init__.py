"""Every differentiable op, one ``Function`` subclass each, grouped by family.

Lower-case wrappers (``minilora.ops.matmul(a, b)``) are the public names. They are also Tensor's
operators (``a @ b`` calls ``matmul(a, b)``) and, where PyTorch has them, its methods (``x.sum()``):
both are attached to ``Tensor`` below, so an operator costs no extra call on the way to its op.
"""
import math as _math

from .. import amp as _amp, dtypes, factories as _factories, return_types as _return_types
from ..tensor import Tensor, name_node, tensor
from .elementwise import (abs, add, astype, clone, div, erf, exp, floor_divide, gelu, log,
                          masked_fill, mul, neg, pow, relu, rsqrt, sigmoid, silu, sqrt, sub, tanh,
                          to_device, unbroadcast, where)
from .matmul import linear, matmul
from .lora import lora_dropout_mask, lora_linear
from .bgmv import bgmv
from .nn import (cross_entropy, dropout, embedding, layer_norm, rms_norm, rotary_embedding,
                 rotate_half, scaled_dot_product_attention, swiglu)
from .elementwise import (clamp, clip, cos, isfinite, isinf, isnan, maximum, minimum, sign,
                          sin)
from .elementwise import bitwise_left_shift, bitwise_right_shift
from .elementwise import (bitwise_and, bitwise_not, bitwise_or, bitwise_xor, logical_and,
                          logical_not, logical_or, remainder)
from .elementwise import allclose, ceil, equal, floor, isclose, round, trunc
from .matmul import bmm, dot, einsum, mm, outer
from .shape import flip, unbind
from .index import argsort, cumsum, gather, nonzero, repeat, sort, topk, tril, triu
from .reduce import (all, amax, amin, any, argmax, argmin, log_softmax, logsumexp, max, mean, min,
                     norm, prod, softmax, std, sum, var)
from .shape import (cat, chunk, expand, flatten, getitem, index_put, permute, reshape, split,
                    squeeze, stack, transpose, unsqueeze, view)
from .index import (bincount, count_nonzero, cumprod, index_add, index_select, masked_select, median,
                    repeat_interleave, scatter, scatter_add, take_along_dim, unique)
from .shape import diag, diagonal, movedim, narrow, roll, swapaxes, tile
from .elementwise import (clamp_max, clamp_min, expm1, leaky_relu, lerp, log1p, reciprocal, softplus,
                          square, xlogy)
from .matmul import addmm, baddbmm
from .elementwise import addcdiv, addcmul, fmod, log10, log2, logical_xor
from .shape import broadcast_to, diff, hstack, meshgrid, select, trace, unflatten, vstack
from .reduce import logsumexp_summed_in, std_mean, var_mean
from .elementwise import (celu, elu, hardsigmoid, hardswish, hardtanh, logsigmoid, mish, selu,
                          softsign)
from .elementwise import (acos, acosh, arctan2, asin, asinh, atan, atan2, atanh, cosh, exp2,
                          logaddexp, logit, nan_to_num, sinh, tan)
from .index import bucketize, cummax, cummin, kthvalue, searchsorted
from .reduce import aminmax
from .matmul import cross
from .conv import (adaptive_avg_pool2d, avg_pool1d, avg_pool2d, conv1d, conv2d, max_pool1d,
                   max_pool2d)
from .nn import cosine_similarity, huber_loss, kl_div, normalize, smooth_l1_loss
from .shape import squeeze_, stride, t_, tensor_split, transpose_, unfold, unsqueeze_
from .shape import resize_, resize_as_, sum_to_size
from .shape import as_strided, as_strided_, as_strided_scatter, storage_offset
from .index import index_fill
from .shape import (atleast_1d, atleast_2d, atleast_3d, column_stack, diag_embed, dsplit, dstack,
                    fliplr, flipud, hsplit, narrow_copy, ravel, rot90, split_with_sizes, vsplit)
from .index import index_copy, index_reduce, masked_scatter, nonzero_static, put, scatter_reduce, take
from .index import mode
from .matmul import mv
from .reduce import nanmean, nansum
from . import view_copies  # noqa: F401  (torch's *_copy twins of the view ops; unsafe_split/chunk)
from . import extra  # noqa: F401  (torch's other names, arccos/greater/fix ..., and their Tensor methods)
from . import special  # noqa: F401  (erfc, lgamma, digamma, polygamma, i0 ... and their Tensor methods)
from . import incomplete_gamma  # noqa: F401  (igamma / igammac and their Tensor methods)
from . import siblings  # noqa: F401  (the *_scatter ops, renorm, frexp, nextafter ... and their Tensor methods)


def _reflected(op):
    """The method behind ``2 - x``: Python calls ``x.__rsub__(2)``, which must compute ``sub(2, x)``."""
    def method(self, other):
        return op(other, self)
    return method


def _rsub_method(self, other):
    """``2 - x``: ``sub(2, x)``; torch's node for it is RsubBackward1."""
    return name_node(sub(other, self), "RsubBackward1", self, graph=(self,))


def _rdiv(self, other):
    """``2 / x`` as torch computes it: ``x.reciprocal() * 2`` (torch's Tensor.__rtruediv__), which
    can differ from ``2 / x`` in the last bit; we follow torch (and save what it saves: nothing of x)."""
    return mul(reciprocal(self), other)


def _squeeze_method(squeeze_fn):
    """``x.squeeze(0, 1)``: torch's method also takes the dims as separate arguments (the function does not)."""
    def method(self, *dim, **by_name):  # (dim=: by_name)
        return squeeze_fn(self, dim, **by_name) if len(dim) > 1 else squeeze_fn(self, *dim, **by_name)
    method.__name__ = squeeze_fn.__name__
    return method


_METHODS = {
    "__add__": add, "__radd__": add, "__sub__": sub, "__rsub__": _rsub_method, "__mul__": mul,
    "__rmul__": mul, "__truediv__": div, "__rtruediv__": _rdiv, "__rdiv__": _rdiv, "__neg__": neg,
    "__pow__": pow, "__rpow__": _reflected(pow), "__matmul__": matmul,
    "__rmatmul__": _reflected(matmul), "__getitem__": getitem,
    "exp": exp, "log": log, "sqrt": sqrt, "rsqrt": rsqrt, "abs": abs, "tanh": tanh,
    "sigmoid": sigmoid, "relu": relu, "sum": sum, "mean": mean, "max": max, "var": var,
    "softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp, "matmul": matmul,
    "reshape": reshape, "view": view, "permute": permute, "transpose": transpose,
    "expand": expand, "chunk": chunk, "squeeze": _squeeze_method(squeeze), "unsqueeze": unsqueeze,
    "flatten": flatten, "masked_fill": masked_fill, "pow": pow,
    "add": add, "sub": sub, "subtract": sub, "mul": mul, "multiply": mul, "div": div,
    "divide": div, "true_divide": div, "neg": neg, "negative": neg, "__floordiv__": floor_divide,
    "__rfloordiv__": _reflected(floor_divide), "floor_divide": floor_divide,
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)


def _T(self):
    """Reverse all axes (``x.T``), as NumPy and PyTorch do for 2-D tensors."""
    return permute(self, tuple(reversed(range(self.ndim))))


Tensor.T = property(_T)


# ---- methods with torch's signatures that are not plain op calls ---------------------------------
def _new(name, fill):
    """``x.new_zeros(size)``-style methods: the dtype and device of ``self`` unless given. The size is read
    as the factories read theirs (``new_zeros(2, 3)``, ``new_zeros((2, 3))``, ``size=``; torch's errors)."""
    def method(self, *size, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
               **size_keyword):
        if layout is not None or pin_memory is not False:
            _factories.check_layout(name, layout, pin_memory, device)
        dtype = self.dtype if dtype is None else dtypes.dtype_argument(name, dtype)
        device = self.device if device is None else device
        array = fill(_factories._sizes(size, size_keyword, name), self.device.xp, dtype)
        return Tensor(array, dtype=dtype, device=device, requires_grad=requires_grad)
    return method


def new_full(self, size, fill_value, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False):
    if layout is not None or pin_memory is not False:
        _factories.check_layout("new_full", layout, pin_memory, device)
    dtype = self.dtype if dtype is None else dtypes.dtype_argument("new_full", dtype)
    fill_value = dtypes.python_number(fill_value)
    if isinstance(fill_value, (int, float)):  # it must fit, as torch checks (uint8: 300 raises)
        fill_value = dtypes.checked_number(fill_value, dtype)
    return Tensor(self.device.xp.full(_factories._size((size,), "new_full"), fill_value), dtype=dtype,
                  device=self.device if device is None else device, requires_grad=requires_grad)


def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False):
    """A new tensor holding ``data`` (copied, no graph), of ``self``'s dtype and device unless given; a tensor's
    copy laid out as torch's (``tensor``: preserve_format)."""
    if isinstance(data, Tensor):
        _warnings.warn("To copy construct from a tensor, it is recommended to use sourceTensor.detach().clone() or "
                      "sourceTensor.detach().clone().requires_grad_(True), rather than "
                      "tensor.new_tensor(sourceTensor).", UserWarning, stacklevel=2)
    dtype = self.dtype if dtype is None else dtypes.dtype_argument("new_tensor", dtype)
    return tensor(data, dtype=dtype,  # (numbers too: 0-d, as torch)
                  device=self.device if device is None else device, requires_grad=requires_grad)


def _where_method(self, condition, other):
    """``x.where(condition, y)`` is ``where(condition, x, y)`` (torch's order; ``other=`` as torch names it)."""
    return where(condition, self, other)


def _mT(self):
    """The last two dimensions swapped (``x.mT``), for a batch of matrices."""
    if self.ndim == 0:  # (torch: the tensor itself, with a deprecation warning)
        return self
    if self.ndim < 2:
        raise RuntimeError(f"tensor.mT is only supported on matrices or batches of matrices. Got "
                           f"{self.ndim}-D tensor.")
    return transpose(self, -2, -1)


def _split_method(self, split_size, dim=0):
    """``x.split(2)``/``x.split([1, 3], dim=1)``: torch names this method's argument ``split_size``."""
    return split(self, split_size, dim)


def _abs_(self):
    if self._array.dtype.kind == "c":  # (|z| is real: it cannot be stored back into z)
        raise RuntimeError("In-place abs is not supported for complex tensors.")
    return self._inplace(abs)


def eq(input, other): return input == other
def ne(input, other): return input != other
def lt(input, other): return input < other
def gt(input, other): return input > other
def le(input, other): return input <= other
def ge(input, other): return input >= other


_MORE_METHODS = {
    "min": min, "amax": amax, "amin": amin, "argmax": argmax, "argmin": argmin, "std": std,
    "norm": norm, "prod": prod, "all": all, "any": any, "clamp": clamp, "clip": clip,
    "maximum": maximum, "minimum": minimum, "sin": sin, "cos": cos, "sign": sign,
    "isnan": isnan, "isinf": isinf, "isfinite": isfinite, "gather": gather, "sort": sort,
    "argsort": argsort, "topk": topk, "cumsum": cumsum, "repeat": repeat, "abs_": _abs_,
    "tril": tril, "triu": triu, "split": _split_method, "nonzero": nonzero,
    "new_zeros": _new("new_zeros", lambda shape, xp, dtype: xp.zeros(shape)),
    "new_ones": _new("new_ones", lambda shape, xp, dtype: xp.ones(shape)),
    "new_empty": _new("new_empty", lambda shape, xp, dtype: xp.zeros(shape)),  # zeroed: no stale memory shown
    "new_full": new_full, "new_tensor": new_tensor, "where": _where_method,
    "expand_as": lambda self, other: expand(self, other.shape),
    "view_as": lambda self, other: view(self, other.shape),
    "reshape_as": lambda self, other: reshape(self, other.shape),
    "eq": eq, "ne": ne, "lt": lt, "gt": gt, "le": le, "ge": ge,
}
for _name, _fn in _MORE_METHODS.items():
    setattr(Tensor, _name, _fn)
Tensor.mT = property(_mT)


# ---- %, &, |, ^, ~, abs(x), x.t(), x.type(dtype) -------------------------------------------------
_TENSOR_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
                      "bfloat16": "BFloat16Tensor", "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor",
                      "int8": "CharTensor", "uint8": "ByteTensor", "bool": "BoolTensor"}
# x.type()'s names for the dtypes torch has no legacy tensor class of (no torch.ComplexFloatTensor)
_TYPE_NAMES_WITHOUT_CLASS = {"complex64": "ComplexFloatTensor", "complex128": "ComplexDoubleTensor",
                             "uint16": "UInt16Tensor", "uint32": "UInt32Tensor", "uint64": "UInt64Tensor"}


def _type(self, dtype=None, non_blocking=False):
    """``x.type(torch.float64)`` converts (also from torch's names, ``x.type('torch.DoubleTensor')``);
    ``x.type()`` returns torch's name for the dtype (``'torch.FloatTensor'``), the string torch users
    compare against."""
    if dtype is None:
        return "torch." + {**_TENSOR_TYPE_NAMES, **_TYPE_NAMES_WITHOUT_CLASS}[str(self.dtype)]
    if isinstance(dtype, str) and dtype.endswith("Tensor"):
        by_name = {v: k for k, v in {**_TENSOR_TYPE_NAMES, **_TYPE_NAMES_WITHOUT_CLASS}.items()}
        name = dtype.rpartition(".")[2]
        if name not in by_name:
            raise ValueError(f"invalid type: {dtype!r}")
        dtype = dtypes.to_dtype(by_name[name])
    elif isinstance(dtype, type) and dtype.__name__.endswith("Tensor") and hasattr(dtype, "dtype"):
        dtype = dtype.dtype  # torch.DoubleTensor
    elif isinstance(dtype, str):  # torch takes a type's name only: 'float64' is its error
        raise ValueError(f"invalid type: {dtype!r}")
    elif isinstance(dtype, type):  # float, np.float64: named as torch names them
        where = "" if dtype.__module__ == "builtins" else dtype.__module__ + "."
        raise ValueError(f"invalid type: '{where}{dtype.__name__}'")
    elif isinstance(dtype, (Tensor, int, float, list, tuple)):  # (x.type(y) is no type_as: torch's refusal)
        raise TypeError("dtype must be a type, str, or dtype object")
    return self.to(dtype)


def _t(self):
    """``x.t()``: a 2-D tensor transposed (0-D and 1-D returned as they are), as torch."""
    if self.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
    return name_node(transpose(self, 0, 1) if self.ndim == 2 else reshape(self, self.shape), "TBackward0")  # (a view)


def _dims_method(name, fn):
    """``x.flip(0)``, ``x.flip(0, 1)``, ``x.flip([0, 1])`` and ``x.flip(dims=[0, 1])`` (so ``x.tile``), as torch's
    methods take them (``torch.flip``/``torch.tile`` take the tuple only); no dims is torch's TypeError, not
    NumPy's "all of them"."""
    def method(self, *dims, **by_name):
        if by_name:
            if set(by_name) != {"dims"} or dims:
                raise TypeError(f"{name}() takes dims, positionally or as dims=, got {sorted(by_name)}")
            dims = (by_name["dims"],)
        if not dims:
            raise TypeError(f'{name}() missing 1 required positional arguments: "dims"')
        return fn(self, dims[0] if len(dims) == 1 else dims)
    method.__name__ = name
    return method


def _in_place(op):
    """``x //= y``, ``x %= y``, ``mask |= other`` ... write into ``x`` as torch does (without these
    methods Python would fall back to ``x = x // y``: a new tensor, and a view's base unchanged)."""
    def method(self, other):
        self._check_elementwise_inplace(other)  # (before the op: torch's RuntimeError for int &= 2.5)
        return self._inplace(op, other)
    return method


def _invert(self):
    """``~x``: torch's operator checks the dtype first (TypeError), where ``bitwise_not`` leaves it
    to the kernel (NotImplementedError)."""
    if self.dtype.kind not in "biu":
        raise TypeError("~ (operator.invert) is only implemented on integer and Boolean-type tensors")
    return bitwise_not(self)


_OPERATOR_METHODS = {
    "__mod__": remainder, "__rmod__": _reflected(remainder), "remainder": remainder,
    "__and__": bitwise_and, "__rand__": bitwise_and, "__or__": bitwise_or, "__ror__": bitwise_or,
    "__xor__": bitwise_xor, "__rxor__": bitwise_xor, "__invert__": _invert,
    "bitwise_and": bitwise_and, "bitwise_or": bitwise_or, "bitwise_xor": bitwise_xor,
    "bitwise_not": bitwise_not, "logical_and": logical_and, "logical_or": logical_or,
    "logical_not": logical_not, "__abs__": abs, "t": _t, "type": _type,
    "flip": _dims_method("flip", flip),
    "floor": floor, "ceil": ceil, "trunc": trunc, "round": round, "isclose": isclose,
    "allclose": allclose, "equal": equal, "mm": mm, "bmm": bmm, "dot": dot, "outer": outer,
    "unbind": unbind,
    "__ifloordiv__": _in_place(floor_divide), "floor_divide_": _in_place(floor_divide),
    "__imod__": _in_place(remainder), "remainder_": _in_place(remainder),
    "__iand__": _in_place(bitwise_and), "bitwise_and_": _in_place(bitwise_and),
    "__ior__": _in_place(bitwise_or), "bitwise_or_": _in_place(bitwise_or),
    "__ixor__": _in_place(bitwise_xor), "bitwise_xor_": _in_place(bitwise_xor),
    "__lshift__": bitwise_left_shift, "__rlshift__": _reflected(bitwise_left_shift),
    "__rshift__": bitwise_right_shift, "__rrshift__": _reflected(bitwise_right_shift),
    "bitwise_left_shift": bitwise_left_shift, "bitwise_right_shift": bitwise_right_shift,
    "__ilshift__": _in_place(bitwise_left_shift), "bitwise_left_shift_": _in_place(bitwise_left_shift),
    "__irshift__": _in_place(bitwise_right_shift), "bitwise_right_shift_": _in_place(bitwise_right_shift),
}
for _name, _fn in _OPERATOR_METHODS.items():
    setattr(Tensor, _name, _fn)


# ---- more torch methods: index_add / scatter / lerp (each with its in-place ``_`` form), unique ... --
# The in-place forms write the op's result into ``self`` through ``Tensor._inplace`` (torch's rules
# for leaves, views and tensors saved for backward).
def index_add_(self, dim, index, source, *, alpha=1):
    return self._inplace(index_add, dim, index, source, alpha=alpha)


def scatter_(self, dim, index, src=None, *, value=None, reduce=None):
    return self._inplace(scatter, dim, index, src, value=value, reduce=reduce)


def scatter_add_(self, dim, index, src):
    return self._inplace(scatter_add, dim, index, src)


def lerp_(self, end, weight):
    self._check_elementwise_inplace(end, weight if isinstance(weight, Tensor) else None)
    return self._inplace(lerp, end, weight)


def addcmul_(self, tensor1, tensor2, *, value=1):
    self._check_elementwise_inplace(tensor1, tensor2)
    return self._inplace(addcmul, tensor1, tensor2, value=value)


def addcdiv_(self, tensor1, tensor2, *, value=1):
    self._check_elementwise_inplace(tensor1, tensor2)
    return self._inplace(addcdiv, tensor1, tensor2, value=value)


def index_fill_(self, dim, index, value):
    return self._inplace(index_fill, dim, index, value)


def index_copy_(self, dim, index, source):
    return _amp.without_autocast(self._inplace, index_copy, dim, index, source)  # (in-place: not autocast)


def masked_scatter_(self, mask, source):
    return self._inplace(masked_scatter, mask, source)


def put_(self, index, source, accumulate=False):
    return self._inplace(put, index, source, accumulate)


def scatter_reduce_(self, dim, index, src, reduce, *, include_self=True):
    return self._inplace(scatter_reduce, dim, index, src, reduce, include_self=include_self)


def index_reduce_(self, dim, index, source, reduce, *, include_self=True):
    return self._inplace(index_reduce, dim, index, source, reduce, include_self=include_self)


def index_put_(self, indices, values, accumulate=False):
    return self._inplace(index_put, indices, values, accumulate)


def _repeat_interleave_method(self, repeats=None, dim=None, *, output_size=None):
    """``x.repeat_interleave(repeats, dim=None)``: the method has no form of counts alone (the function's
    ``torch.repeat_interleave(counts)``), so ``x.repeat_interleave()`` is refused as torch's parser refuses it."""
    if repeats is None:
        raise TypeError("repeat_interleave() received an invalid combination of arguments - got (), but expected one "
                        "of:\n * (Tensor repeats, int dim = None, *, int output_size = None)\n * (int repeats, int dim "
                        "= None, *, int output_size = None)\n")
    return repeat_interleave(self, repeats, dim, output_size=output_size)


from . import elementwise as _elementwise, reduce as _reduce  # noqa: E402
_MISSING_METHODS = {
    "unique": unique, "bincount": bincount, "repeat_interleave": _repeat_interleave_method, "roll": roll,
    "median": median, "narrow": narrow, "diagonal": diagonal, "diag": diag,
    "nanmedian": _reduce.nanmedian, "logcumsumexp": _reduce.logcumsumexp,
    "fmax": _elementwise.fmax, "fmin": _elementwise.fmin, "sgn": _elementwise.sgn,
    "signbit": _elementwise.signbit, "hypot": _elementwise.hypot, "copysign": _elementwise.copysign,
    "index_add": index_add, "index_add_": index_add_, "index_select": index_select,
    "scatter": scatter, "scatter_": scatter_, "scatter_add": scatter_add,
    "scatter_add_": scatter_add_, "take_along_dim": take_along_dim,
    "masked_select": masked_select, "count_nonzero": count_nonzero, "cumprod": cumprod,
    "lerp": lerp, "lerp_": lerp_, "xlogy": xlogy, "clamp_min": clamp_min,
    "clamp_max": clamp_max, "addmm": addmm, "baddbmm": baddbmm, "movedim": movedim,
    "swapaxes": swapaxes, "tile": _dims_method("tile", tile), "square": square, "reciprocal": reciprocal,
    "log1p": log1p, "expm1": expm1, "log2": log2, "log10": log10, "fmod": fmod,
    "logical_xor": logical_xor, "addcmul": addcmul, "addcmul_": addcmul_, "addcdiv": addcdiv,
    "addcdiv_": addcdiv_, "unflatten": unflatten, "select": select, "broadcast_to": broadcast_to,
    "trace": trace, "diff": diff, "tan": tan, "asin": asin, "acos": acos, "atan": atan,
    "sinh": sinh, "cosh": cosh, "asinh": asinh, "acosh": acosh, "atanh": atanh, "exp2": exp2,
    "atan2": atan2, "arctan2": arctan2, "logaddexp": logaddexp, "nan_to_num": nan_to_num,
    "aminmax": aminmax, "kthvalue": kthvalue, "cummax": cummax, "cummin": cummin, "cross": cross,
    "erf": erf, "tensor_split": tensor_split, "unfold": unfold, "stride": stride,
    "index_fill": index_fill, "index_fill_": index_fill_, "t_": t_, "transpose_": transpose_,
    "swapdims_": transpose_, "swapaxes_": transpose_, "squeeze_": _squeeze_method(squeeze_), "unsqueeze_": unsqueeze_,
    "ravel": ravel, "fliplr": fliplr, "flipud": flipud, "rot90": rot90, "hsplit": hsplit,
    "vsplit": vsplit, "dsplit": dsplit, "narrow_copy": narrow_copy, "split_with_sizes": split_with_sizes,
    "diag_embed": diag_embed, "index_copy": index_copy, "index_copy_": index_copy_,
    "masked_scatter": masked_scatter, "masked_scatter_": masked_scatter_, "take": take, "put": put,
    "put_": put_, "scatter_reduce": scatter_reduce, "scatter_reduce_": scatter_reduce_,
    "index_reduce": index_reduce, "index_reduce_": index_reduce_, "nonzero_static": nonzero_static,
    "index_put": index_put, "index_put_": index_put_, "nansum": nansum, "nanmean": nanmean,
    "as_strided": as_strided, "as_strided_": as_strided_, "as_strided_scatter": as_strided_scatter,
    "storage_offset": storage_offset, "resize_": resize_, "resize_as_": resize_as_, "sum_to_size": sum_to_size,
}
for _name, _fn in _MISSING_METHODS.items():
    setattr(Tensor, _name, _fn)


# ---- products and in-place forms added in round 4 ------------------------------------------------
from .matmul import inner, kron, tensordot, vdot  # noqa: E402
from .reduce import nanquantile, quantile  # noqa: E402

def true_divide(input, other):  # noqa: A002
    """torch's other name for div (divide is the third), without div's ``rounding_mode``: torch refuses it here
    (a floor division asked of true_divide is a TypeError, not a floored quotient)."""
    return div(input, other)


def _true_divide_method(self, other):
    return div(self, other)


def _true_divide_in_place(self, other):
    return self.div_(other)


@_amp.autocasts  # (on torch's CUDA float32 list: the difference in float32 too)
def dist(input, other, p=2):  # noqa: A002
    """``torch.dist``: the p-norm of ``input - other`` (broadcast), over all elements."""
    return name_node(norm(input - other, p), "DistBackward0", graph=(input, other))  # (torch's one node)


def _cumsum_(self, dim, *, dtype=None):
    dtype = _no_bool_running_kernel("cumsum", self, dtype)
    return self._inplace(cumsum, dim, dtype=dtype, cast=True)  # (int32 stays int32, as torch)


def _cumprod_(self, dim, *, dtype=None):
    dtype = _no_bool_running_kernel("cumprod", self, dtype)
    return self._inplace(cumprod, dim, dtype=dtype, cast=True)


def _no_bool_running_kernel(name, self, dtype):
    """torch's in-place cumsum_/cumprod_ of a bool tensor runs its kernel in bool, which it lacks
    (the out-of-place forms count in int64); NumPy would count and cast back to bool. (A 0-d or
    empty tensor runs no kernel: torch copies it.) Returns ``dtype`` read as torch's parser reads it."""
    dtype = None if dtype is None else dtypes.dtype_argument(name + "_", dtype)
    if dtype is not None and dtype != self.dtype:  # (torch's in-place writes no other dtype)
        raise RuntimeError(f"Bad in-place call: input tensor dtype {dtypes.torch_name(self.dtype)} and output "
                           f"tensor dtype {dtypes.torch_name(dtype)} should match")
    if self.ndim and self.numel() and (self.dtype if dtype is None else dtype) == dtypes.bool:
        raise NotImplementedError(f'"{name}_out_cpu" not implemented for \'Bool\'')
    return dtype


def _addmm_(self, mat1, mat2, *, beta=1, alpha=1):
    return _amp.without_autocast(self._inplace, addmm, mat1, mat2, beta=beta, alpha=alpha)  # (nor this)


def _nan_to_num_(self, nan=0.0, posinf=None, neginf=None):
    return self._inplace(_elementwise._nan_to_num, nan=nan, posinf=posinf, neginf=neginf)


def _baddbmm_(self, batch1, batch2, *, beta=1, alpha=1):
    return _amp.without_autocast(self._inplace, baddbmm, batch1, batch2, beta=beta, alpha=alpha)  # (as addmm_)


def _logit_(self, eps=None):
    return self._inplace(logit, eps)


for _name, _fn in {"quantile": quantile, "nanquantile": nanquantile, "inner": inner, "kron": kron,
                   "vdot": vdot, "dist": dist, "cumsum_": _cumsum_, "cumprod_": _cumprod_,
                   "addmm_": _addmm_, "nan_to_num_": _nan_to_num_, "baddbmm_": _baddbmm_,
                   "logit": logit, "logit_": _logit_,
                   "divide_": Tensor.div_, "true_divide": _true_divide_method,
                   "true_divide_": _true_divide_in_place}.items():
    setattr(Tensor, _name, _fn)


# ---- out=: torch.add(a, b, out=y) and its kin ----------------------------------------------------
# torch's functions take ``out=``: the result is written into that tensor, which is returned. The
# rules are torch's, kept in one place (``_write_out``) and given to each top-level function torch
# gives out= (not to the Tensor methods, which torch's do not take it, nor to a + b, which stays one
# call). The functions are rebound here, after the methods above took the plain ones.
import builtins as _builtins  # noqa: E402  (all/any in this module are minilora's ops)
import contextlib as _contextlib  # noqa: E402
import functools as _functools  # noqa: E402
import warnings as _warnings  # noqa: E402

from ..tensor import is_grad_enabled, no_grad  # noqa: E402

# Ops whose out tensor must have exactly the result's dtype (torch: "Expected out tensor to have dtype
# float, but got double instead"); the others cast their result into out's dtype where torch.can_cast
# allows it.
_EXACT_OUT_DTYPE = set((
    "matmul mm mv bmm dot addmm baddbmm cross argmax argmin amax amin all any norm softmax log_softmax "
    "abs neg sign signbit ceil floor round trunc nan_to_num clamp clip clamp_min clamp_max where "
    "bitwise_not sgn logcumsumexp aminmax "
    "tril triu diag narrow_copy nonzero argsort bucketize searchsorted gather take take_along_dim "
    "index_select index_add index_copy scatter scatter_add scatter_reduce masked_select "
    # torch's kernels that refuse a wider out as well (sort's values, linalg's factors: "Expected out tensor to have
    # dtype float, but got double instead"; float_power's float64)
    "conj_physical frac heaviside isin isneginf isposinf cummax cummin kthvalue mode median nanmedian sort "
    "topk quantile nanquantile inner tensordot vdot frexp float_power hardshrink frobenius_norm nuclear_norm "
    "alias_copy diagonal_copy permute_copy select_copy slice_copy squeeze_copy t_copy unsqueeze_copy slice_scatter "
    "qr svd slogdet triangular_solve linalg_cholesky_ex linalg_cross _linalg_det _linalg_eigh linalg_inv_ex "
    "linalg_ldl_factor linalg_ldl_factor_ex linalg_lu linalg_lu_factor_ex linalg_qr _linalg_slogdet _linalg_solve_ex "
    "_linalg_svd linalg_vector_norm linalg_matrix_norm linalg_norm linalg_vecdot histc histogram").split())
# Ops that refuse an out dtype they cannot cast into with TypeError (torch.cat's "input types can't be
# cast to the desired output type Long"), not RuntimeError.
_TYPE_ERROR_OUT_DTYPE = {"cat", "stack", "hstack", "vstack", "dstack", "column_stack"}
# Ops whose dtype= argument out's dtype stands for: they compute in it (a float32 tensor summed into a
# float64 out accumulates in float64, as torch.sum(x, dtype=torch.float64)).
_DTYPE_FROM_OUT = {"sum", "mean", "prod", "cumsum", "cumprod", "nansum", "nanmean"}
# Ops with no dtype= that torch computes in out's (floating) dtype all the same: their input is cast (but for one
# output, _one_output).
_INPUT_TO_OUT_DTYPE = {"std", "var"}
# Ops whose kernel, given a wider out, computes part of its steps in out's dtype: run as that (dtype=out's).
_STEPS_IN_OUT_DTYPE = {"logsumexp": logsumexp_summed_in}
# torch's nansum/nanmean(out=) run its floating kernel in out's dtype: a floating input into an integer
# or bool out is refused ("nansum_cpu" not implemented for 'Long'), though nansum(dtype=torch.long) runs.
_NAN_KERNEL_OUT = {"nansum", "nanmean"}
# torch's argsort(out=) is sort's out= underneath: it refuses an input that requires grad, as sort does.
_REFUSES_GRAD_INPUT = {"argsort"}
# Ops torch cannot differentiate (no derivative formula): nothing to refuse, their out may require grad.
_NO_DERIVATIVE_OUT = {"special_" + name for name in (
    "airy_ai bessel_j0 bessel_j1 bessel_y0 bessel_y1 modified_bessel_i0 modified_bessel_i1 modified_bessel_k0 "
    "modified_bessel_k1 scaled_modified_bessel_k0 scaled_modified_bessel_k1 spherical_bessel_j0 "
    "chebyshev_polynomial_t chebyshev_polynomial_u chebyshev_polynomial_v chebyshev_polynomial_w "
    "shifted_chebyshev_polynomial_t shifted_chebyshev_polynomial_u shifted_chebyshev_polynomial_v "
    "shifted_chebyshev_polynomial_w hermite_polynomial_h hermite_polynomial_he laguerre_polynomial_l "
    "legendre_polynomial_p").split()} | {"histc"}
# Ops whose derivative torch leaves unimplemented (a NotImplemented node): an input that requires grad is taken (its
# out's grad_fn is that node in torch; minilora's out gets none), an out that requires grad is refused.
_NOT_IMPLEMENTED_DERIVATIVE_OUT = {"histogram"}
# Ops whose out= torch does not check for memory it shares with an input (reductions, linalg, the *_copy ops): they
# read all of it before writing, so minilora (which computes before writing, always) gives the same values.
_OVERLAP_UNCHECKED = set((
    "amax amin aminmax max min norm std var dot vdot inner tensordot quantile nanquantile mvlgamma "
    "multigammaln logsumexp ndtr diag cholesky qr svd slogdet triangular_solve frobenius_norm nuclear_norm "
    "alias_copy diagonal_copy permute_copy select_copy slice_copy slice_scatter squeeze_copy t_copy "
    "unsqueeze_copy").split())
# Every op's out= is refused where several of its elements are one memory location (an expanded out: ATen's
# assert_no_internal_overlap) or where it shares only part of an input's memory (assert_no_partial_overlap: the op
# would read elements it already wrote). An out that is exactly an input is allowed (torch.exp(x, out=x)), but by
# these ops, which refuse any shared memory (assert_no_overlap). (torch's products do not check: mm(a, b, out=a)
# writes a while reading it, a silent wrong product; minilora refuses with the words of the others.)
_NO_OVERLAP_OUT = {"kthvalue", "gather", "masked_select", "take", "index_select", "cat", "cross", "mm", "bmm",
                   "matmul"}


def _with_out(fn, name):
    """``fn`` taking torch's keyword ``out=`` as well (without it, ``fn`` itself is called)."""
    @_functools.wraps(fn)
    def call(*args, out=None, **kwargs):
        if out is None:
            return fn(*args, **kwargs)
        return _write_out(fn, name, args, kwargs, out)
    return call


def _write_out(fn, name, args, kwargs, out):
    """``fn(*args, **kwargs)`` written into ``out`` (a tensor, or a tuple of them for an op that
    returns several), as torch writes it; returns ``out``."""
    outs = (out,) if isinstance(out, Tensor) else tuple(out) if isinstance(out, (tuple, list)) else None
    if outs is None or not _builtins.all(isinstance(o, Tensor) for o in outs):
        raise TypeError(f"{name}(): argument 'out' must be Tensor or a tuple of Tensors, not "
                        f"{type(out).__name__}")
    if name in _NAN_KERNEL_OUT and args and isinstance(args[0], Tensor) and \
            dtypes.is_floating(args[0].dtype) and not dtypes.is_floating(outs[0].dtype):
        out_name = dtypes.torch_name(outs[0].dtype)
        raise NotImplementedError(f'"nansum_cpu" not implemented for \'{out_name}\'')
    if name in _DTYPE_FROM_OUT and kwargs.get("dtype") is None:
        kwargs = dict(kwargs, dtype=outs[0].dtype)
    elif name in _INPUT_TO_OUT_DTYPE and dtypes.is_floating(outs[0].dtype) and args and \
            not _one_output(args, kwargs):
        args = (args[0].to(outs[0].dtype),) + args[1:]
    elif name in _STEPS_IN_OUT_DTYPE and dtypes.is_floating(outs[0].dtype) and args:
        fn, kwargs = _STEPS_IN_OUT_DTYPE[name], dict(kwargs, dtype=outs[0].dtype)
    inputs = () if name in _OVERLAP_UNCHECKED else args + tuple(kwargs.values())
    _refuse_overlap(outs, inputs, same_allowed=name not in _NO_OVERLAP_OUT)
    result = _amp.without_autocast(fn, *args, **kwargs)  # (torch's out= calls are not autocast)
    results = result if isinstance(result, tuple) else (result,)
    if len(results) != len(outs):
        raise TypeError(f"{name}(): expected {len(results)} out tensor(s), got {len(outs)}")
    _refuse_grad(name, args, results, outs)
    with no_grad() if name in _NO_DERIVATIVE_OUT else _contextlib.nullcontext():
        for position, (o, r) in enumerate(zip(outs, results)):
            _copy_into(o, r, name, position)
    return out if isinstance(out, Tensor) else _return_types.out_type(type(result))(*outs) \
        if hasattr(result, "_fields") else tuple(outs)


def _one_output(args, kwargs):
    """Whether std/var(*args, **kwargs) reduce their input to at most one element: ATen's std_var_out then takes its
    CPU path for a whole tensor (std_var_all_cpu) in the input's dtype and fills out with that rounded result."""
    x, dim = args[0], kwargs.get("dim", args[1] if len(args) > 1 else None)
    if dim is None or isinstance(dim, bool) or x.ndim == 0:  # (a bool: the unbiased overload, everything reduced)
        return True
    kept = set(range(x.ndim)) - {d % x.ndim for d in ((dim,) if isinstance(dim, int) else dim)}
    return dim == () or dim == [] or _math.prod(x.shape[d] for d in kept) <= 1


# The kernel torch's refusals of an out= name, where an op runs another's (torch.clip's is clamp's, hstack's
# cat's, special.expit's sigmoid's); the rules above keep the op's own name.
_REPORTED_NAMES = {
    "arctan2": "atan2", "clip": "clamp", "column_stack": "cat", "dstack": "cat", "hstack": "cat", "vstack": "cat",
    "diff": "sub", "float_power": "pow", "square": "pow", "kron": "mul", "outer": "mul", "nanmean": "nansum",
    "norm": "linalg_vector_norm", "frobenius_norm": "norm", "take_along_dim": "gather", "true_divide": "div",
    "cross": "linalg_cross", "qr": "linalg_qr", "histogram": "aten::histogram", "svd": "_linalg_svd", "slogdet": "_linalg_slogdet",
    "special_gammainc": "igamma", "special_gammaincc": "igammac", "linalg_vecdot": "sum",
    **{name: alias for alias, name in (("sigmoid", "expit"), ("lgamma", "gammaln"), ("digamma", "psi"),
                                       ("mvlgamma", "multigammaln"))},
    **{name: "special_" + name for name in "entr erfcx i0e i1 i1e log_ndtr ndtri xlog1py zeta".split()}}


def _refuse_grad(name, args, results, outs):
    """torch's refusal of out= in grad mode where an input or an out tensor requires grad (a result that requires
    grad stands for its inputs), but for the ops that check no such thing."""
    if not is_grad_enabled() or name in _NO_DERIVATIVE_OUT:
        return
    watched = outs if name in _NOT_IMPLEMENTED_DERIVATIVE_OUT else \
        results + outs + (args if name in _REFUSES_GRAD_INPUT else ())
    if _builtins.any(isinstance(t, Tensor) and t.requires_grad for t in watched):
        raise RuntimeError(f"{_REPORTED_NAMES.get(name, name)}(): functions with out=... arguments don't support "
                           f"automatic differentiation, but one of the arguments requires grad.")


def _refuse_overlap(outs, arguments, same_allowed):
    """torch's errors for an out tensor with elements in one place, or in an input tensor's memory."""
    inputs = [a for a in arguments if isinstance(a, Tensor)]
    inputs += [t for a in arguments if isinstance(a, (list, tuple)) for t in a if isinstance(t, Tensor)]
    _factories.refuse_overlapping_out(outs, inputs, same_allowed)


def _copy_into(out, result, name, position=0):
    """One result (the op's ``position``-th) written into its out tensor: dtype checked, resized if its shape differs
    (with torch's warning when it held elements), then the values cast in place."""
    if name in _EXACT_OUT_DTYPE and result.dtype != out.dtype:
        words = _OUT_DTYPE_WORDS.get(name, _EXPECTED_OUT_DTYPE)
        words = words[_builtins.min(position, len(words) - 1)] if isinstance(words, tuple) else words
        raise RuntimeError(words.format(
            name=name, out=dtypes.torch_name(out.dtype), result=dtypes.torch_name(result.dtype),
            out_c=_c_name(out.dtype), result_c=_c_name(result.dtype)))
    if not dtypes.can_cast(result.dtype, out.dtype):
        if name in _TYPE_ERROR_OUT_DTYPE:
            raise TypeError(f"torch.{_REPORTED_NAMES.get(name, name)}(): input types can't be cast to the desired "
                            f"output type {dtypes.torch_name(out.dtype)}")
        raise RuntimeError(f"result type {dtypes.torch_name(result.dtype)} can't be cast to the "
                           f"desired output type {dtypes.torch_name(out.dtype)}")
    if out.device != result.device:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                           f"devices, {out.device} and {result.device}!")
    if out.shape != result.shape:
        if out.numel():
            _warnings.warn(f"An output with one or more elements was resized since it had shape "
                           f"{list(out.shape)}, which does not match the required output shape "
                           f"{list(result.shape)}. This behavior is deprecated, and in a future "
                           f"PyTorch release outputs will not be resized unless they have zero "
                           f"elements. You can explicitly reuse an out tensor t by resizing it, "
                           f"inplace, to zero elements with t.resize_(0).", UserWarning, stacklevel=4)
        out._array = _resized(out, result, name)
    out._check_inplace()
    out._array[...] = dtypes.cast(result._array, out.dtype)
    out._bump_version()


# Ops whose out= torch resizes C-contiguous whatever the result's layout (they copy a result made apart into it).
_RESIZED_IN_C_ORDER = {"cholesky", "cholesky_solve", "cholesky_inverse", "geqrf", "linalg_householder_product",
                       "ihfft2", "ihfftn"}


def _resized(out, result, name):
    """A fresh buffer of the result's shape for ``out`` (torch's resize_), laid out as torch lays out the result
    where minilora knows that layout (linalg's column-major factors, an elementwise op of a transposed input: torch
    restrides a resized out to it); C order where ``stride()`` cannot tell, and for _RESIZED_IN_C_ORDER."""
    xp = out.device.xp
    try:
        strides = None if name in _RESIZED_IN_C_ORDER else result.stride()
    except NotImplementedError:
        strides = None
    if strides is None:
        return xp.empty(result._array.shape, out.dtype)
    order = sorted(range(result.ndim), key=lambda d: -strides[d])  # (outermost first; ties keep their order)
    buffer = xp.empty(tuple(result.shape[d] for d in order), out.dtype)
    return _factories.known_layout(buffer.transpose(tuple(order.index(d) for d in range(result.ndim))), order)


# The words of torch's refusal of an out whose dtype is not the result's, where the kernel has its own ({out} and
# {result}: torch's dtype names, Double and Float; {out_c} and {result_c}: the C names, double and float). A tuple
# holds each out's own words (histogram's hist, then bin_edges); otherwise an op's second out, kthvalue's indices,
# is refused in its first's words, where torch's may differ.
_EXPECTED_OUT_DTYPE = "Expected out tensor to have dtype {result_c}, but got {out_c} instead"
_OUT_DTYPE_WORDS = {
    **{name: "Found dtype {out} but expected {result}" for name in (  # (TensorIterator's unary kernels)
        "abs bitwise_not ceil conj_physical floor frac hardshrink neg round sgn sign trunc").split()},
    **{name: "expected scalar_type {result} but found {out}" for name in ("cummax", "cummin", "logcumsumexp")},
    **{name: "Expected the dtype for input and out to match, but got {result} for input's dtype and {out} for "
             "out's dtype." for name in ("amax", "amin")},
    **{name: "result dtype {out} does not match input dtype {result}" for name in ("dot", "vdot")},
    **{name: "tensordot: Expected the output tensor to have dtype {result}, but got an output tensor with dtype "
             "{out}" for name in ("inner", "tensordot")},
    **{name: "quantile() out tensor must be same dtype as the input tensor" for name in ("quantile", "nanquantile")},
    **{name: "linalg.matrix_norm expected out tensor dtype {result} but got: {out}"
       for name in ("linalg_matrix_norm", "nuclear_norm")},
    **{name: "{name} only supports bool tensor for result, got: {out}" for name in ("all", "any")},
    **{name: "{name}(): self and result must have the same scalar type" for name in ("index_select", "masked_select")},
    **{name: "{name} does not support non-boolean outputs." for name in ("isneginf", "isposinf", "signbit")},
    "linalg_norm": "linalg.norm expected out tensor dtype {result} but got: {out}",
    "histc": "torch.histogram: input tensor and hist tensor should have the same dtype, but got input {result_c} and "
             "hist {out_c}",
    "histogram": ("torch.histogram: input tensor and hist tensor should have the same dtype, but got input {result_c} "
                  "and hist {out_c}", "torch.histogram: input tensor and bin_edges tensor should have the same dtype, "
                  "but got input {result_c} and bin_edges {out_c} for dimension 0"),
    "linalg_vecdot": "linalg.vecdot: Expected out of dtype{result} but found {out}",
    "float_power": "the output given to float_power has dtype {out} but the operation's result requires dtype {result}",
    "frexp": "torch.frexp() expects mantissa to have dtype {result_c} but got {out_c}",
    "heaviside": "heaviside is not yet implemented for tensors with different dtypes.",
    "kthvalue": "output values must be of same type as input",
    "mode": "expected scalar type '{result}' but got '{out}' for values output",
    "mv": "addmv input tensors must have the same dtype, but got {out}, {result}, and {result}",
    "nan_to_num": "nan_to_num: dtype of out: {out} should be same as input: {result}",
    "nonzero": "nonzero: Expected out tensor to have scalar type {result} but got scalar type{out}",
    "take": "take(): self and out expected to have the same dtype, but got self.dtype = {result} and out.dtype = {out}",
    "where": "Expected out type to be {result} but got {out}",
}


def _c_name(dtype):
    """The C type name torch's "Expected out tensor to have dtype ..." message gives."""
    return {"float32": "float", "float64": "double", "float16": "c10::Half", "bfloat16": "c10::BFloat16",
            "int64": "long int", "int32": "int", "int16": "short int", "int8": "signed char",
            "uint8": "unsigned char", "bool": "bool", "complex64": "c10::complex<float>",
            "complex128": "c10::complex<double>"}.get(dtype.name, dtype.name)


_OUT_FUNCTIONS = (
    # elementwise
    "abs acos acosh add addcdiv addcmul arctan2 asin asinh atan atan2 atanh bitwise_and "
    "bitwise_left_shift bitwise_not bitwise_or bitwise_right_shift bitwise_xor ceil clamp clamp_max "
    "clamp_min clip cos cosh div erf exp exp2 expm1 floor floor_divide fmod lerp log log10 log1p log2 "
    "logaddexp logit logical_and logical_not logical_or logical_xor maximum minimum mul nan_to_num neg pow "
    "reciprocal remainder round rsqrt sigmoid sign sin sinh sqrt square sub tan tanh trunc where xlogy "
    "eq ne lt gt le ge "
    # products
    "addmm baddbmm bmm cross dot matmul mm mv outer "
    # reductions
    "all amax amin aminmax any argmax argmin log_softmax logsumexp max mean min nanmean nansum norm "
    "prod softmax std sum var "
    # index
    "argsort bucketize cummax cummin cumprod cumsum gather index_add index_copy index_select "
    "kthvalue masked_select median mode nonzero scatter scatter_add scatter_reduce searchsorted sort "
    "take take_along_dim topk tril triu "
    # shape
    "cat column_stack diag diff dstack hstack narrow_copy stack vstack "
    # kept in their modules until here (not Tensor methods above): top-level with out= from this module
    "copysign fmax fmin hypot sgn signbit logcumsumexp nanmedian inner kron vdot tensordot "
    "true_divide quantile nanquantile").split()
from .elementwise import copysign, fmax, fmin, hypot, sgn, signbit  # noqa: E402
from .reduce import logcumsumexp, nanmedian  # noqa: E402
for _name in _OUT_FUNCTIONS:
    globals()[_name] = _with_out(globals()[_name], _name)

# Tensor methods that are not ops (fill_diagonal_, dim_order, apply_, is_sparse, ...; minilora/ops/rare_methods.py)
from . import rare_methods  # noqa: E402,F401
