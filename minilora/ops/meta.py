"""The meta device's kernels: an op on meta tensors computes its result's shape, dtype and strides, never its values.

A meta tensor's array is NumPy zeros in pages nobody wrote (minilora/device.py), so running an op's NumPy
forward on it gives the right shape and dtype -- after doing all of the op's arithmetic and writing its whole
result: a meta Llama 7B forward at 4096 tokens would multiply every matrix and write every attention score.
torch's meta kernels only infer the result's metadata. Here an op with a shape rule (``Function.meta_shape``,
attached below per op family) does the same, in three steps (``forward``):

1. the rule gives the result's shape from the inputs' shapes (None: inputs it does not take -- a shape
   mismatch, an odd argument -- and the op then runs on the meta zeros themselves, raising its own error);
2. the op's own forward runs on one element of each input (``small``: a 1x1... slice, a view, no copy),
   which gives the result's dtype and every error that is not about sizes (a dtype mismatch, bool matmul),
   in the op's words; the rule applied to those stand-ins must agree with what the op gave (else step 1's
   fallback: a rule that misreads an op costs time, never a wrong shape);
3. the result is zeros of that shape and dtype that nobody writes (``unwritten``), laid out as the op lays
   it out (an elementwise op as torch's TensorIterator, ``meta_order`` where the op copies an input's order).

Backward on meta (tensor._run_backward) gives each input that needs one a gradient of zeros of its shape
and dtype (``gradients``) -- what torch's engine checks every gradient against -- without running the op's
backward formula; a user's autograd.Function still runs its own backward (``Function.meta_gradients``).
"""
import numpy as np

from .. import factories
from ..device import unwritten_zeros
from .conv import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, AvgPool3d, Conv2d, ConvBias, ConvTranspose2d,
                   CubicResize, Fold, LinearResize, MaxPool2d, NearestResize, Unfold)
from .elementwise import Clone, LogSigmoid, ToDevice
from .lora import LoraLinear
from .matmul import Cross, Einsum, Linear, MatMul, Trilinear, _torch_einsum_layout, _trilinear_sizes
from .index import (ArgSort, CumProd, CumSum, Gather, IndexAdd, IndexCopy, IndexFill, IndexSelect, MedianAll, Scatter,
                        Repeat, ScatterReduce, TopKOrder)
from .nn import (Attention, BinaryCrossEntropyLoss, BinaryCrossEntropyWithLogits, Cdist, CrossEntropy, Dropout,
                 Embedding, Glu, KernelValues, LayerNorm, MseLoss, NllLoss, Pad, PRelu, RMSNorm, Rotary, SmoothL1Loss,
                 SwiGLU)
from .sampling import GridSampleBilinear2d, GridSampleTrilinear3d
from .special import Erfcx
from .reduce import AMax, ArgMax, Logical, LogCumSumExp, LogSoftmax, LogSumExp, Mean, PNorm, Prod, Softmax, Sum, Var
from .shape import Cat, DiagEmbed, Flip, GetItem, IndexPut, Reshape, Roll, take_indexed, _without_empty_ellipsis
from ..linalg import VectorNorm
from ..tensor import Function

__all__ = ["variant", "forward", "restore_saved", "gradients", "unwritten", "small_operands", "elementwise_result"]


# ---- the dispatch (Function.apply's meta branch) ----------------------------------------------------------
def variant(cls):
    """``cls`` as Function.apply runs it on meta tensors: a subclass of the same name (the graph's node
    shows ``cls``'s name) whose forward is ``forward``'s, made once per op (as tensor._on_kernels' variants)."""
    found = cls.__dict__.get("_meta_variant")
    if found is None:
        def meta_forward(ctx, *arrays, **options):
            return forward(cls, cls, ctx, arrays, options)
        found = type(cls.__name__, (cls,), {"forward": staticmethod(meta_forward), "meta_variant_of": cls,
                                            "__qualname__": cls.__qualname__, "__module__": cls.__module__})
        cls._meta_variant = found
    return found


def forward(cls, fn, ctx, arrays, options):
    """``cls``'s result on meta arrays: unwritten zeros of the shape, dtype and layout the op would give."""
    rule = cls.meta_shape
    shape = None if rule is None else rule(*arrays, **options)
    if shape is None:  # (no rule for these inputs: the op itself, on the zeros)
        return fn.forward(ctx, *arrays, **options)
    if cls.meta_dtype is not None:
        dtype = cls.meta_dtype(*arrays, **options)
    else:
        dtype = _dtype_from_small_run(cls, fn, ctx, arrays, options)
        if dtype is None:
            return fn.forward(ctx, *arrays, **options)
    ctx.meta_call = (fn, arrays, options)  # (what ctx saved is the stand-ins': see restore_saved)
    return _laid_out(cls, tuple(shape), dtype, arrays, options)


def restore_saved(ctx):
    """A recorded backward (create_graph=True: ops/higher_order.py) reads what the op's forward saved, which the
    stand-ins' run saved here: the forward runs again, on the meta zeros themselves (the op's time, as before the
    shape rules), once, for this pass."""
    call = ctx.__dict__.pop("meta_call", None)
    if call is not None:
        fn, arrays, options = call
        with np.errstate(all="ignore"):
            fn.forward(ctx, *arrays, **options)


def _dtype_from_small_run(cls, fn, ctx, arrays, options):
    """The op's result dtype from its forward on one element of each input (its non-size errors raise
    there); None where the rule read the stand-ins otherwise than the op did."""
    small_arrays, small_options = (cls.meta_small or small)(arrays, options)
    with np.errstate(all="ignore"):
        probe = fn.forward(ctx, *small_arrays, **small_options)
    probe = np.asarray(probe)
    if tuple(probe.shape) != tuple(cls.meta_shape(*small_arrays, **small_options) or ()) and probe.ndim:
        return None
    return probe.dtype


def small(arrays, options, keep_last=0):
    """Each array input (positional or keyword) as its first element along every dimension (a view of
    the meta zeros: a dimension of size 0 stays 0), but for its last ``keep_last`` dimensions. An integer
    array as zeros: a CPU index of a meta tensor (torch's gather, scatter, x[i] take one) holds values, which
    would point past its stand-in's one element."""
    def first(a):
        if not isinstance(a, np.ndarray):
            return a
        kept = max(a.ndim - keep_last, 0)
        stand_in = a[(slice(0, 1),) * kept]
        return np.zeros(stand_in.shape, a.dtype) if a.dtype.kind in "iu" and stand_in.any() else stand_in
    return [first(a) for a in arrays], {key: first(value) for key, value in options.items()}


def first_spread(a):
    """``a``'s first element spread over ``a``'s shape (a broadcast, read-only): a stand-in that keeps some sizes
    whole (a kernel's, an image's) reads one element, where a slice of a channels_last or transposed input would
    read a page of each row."""
    return np.broadcast_to(a[(slice(0, 1),) * a.ndim], a.shape) if a.size else a


def _laid_out(cls, shape, dtype, arrays, options):
    """Unwritten zeros laid out as the op's CPU result (``meta_order``: the order, and whether the op marks it
    as torch's layout), by default torch's TensorIterator order for elementwise ops, else C order."""
    order, marked = (cls.meta_order or _default_order)(cls, shape, arrays, options)
    if order == "unknown":  # (the op's CPU result is NumPy's layout, which stride() does not claim as torch's)
        return factories.unknown_layout(unwritten(shape, dtype))
    out = unwritten(shape, dtype, order)
    return factories.known_layout(out, order) if marked and not out.flags.c_contiguous else out


def _default_order(cls, shape, arrays, options):
    if cls.torch_layout in ("elementwise", "preserve") and not options.get("contiguous"):
        return iterator_order(cls, shape, arrays, options)
    if cls.torch_layout == "suggested" and arrays and isinstance(arrays[0], np.ndarray) and arrays[0].ndim == len(shape):
        # (the first input's memory format, channels_last from a channels_last input: made so, not copied into it by
        # Function.apply, which would write the whole result)
        format = factories.suggested_format(arrays[0])
        if format is not factories.contiguous_format:
            return factories.layout_order(arrays[0], format), True
    return None, False


def iterator_order(cls, shape, arrays, options):
    """torch's TensorIterator: the result in its operands' order of strides (factories.in_iterator_layout)."""
    return factories.iterator_order_of(shape, [a for a in arrays if isinstance(a, np.ndarray)]), True


def empty_like_order(cls, shape, arrays, options):
    """A result made by NumPy's empty_like of the first input: its order of strides, outermost first."""
    a = arrays[0]
    return tuple(sorted(range(a.ndim), key=lambda i: -abs(a.strides[i]))), False


def preserved_order(cls, shape, arrays, options):
    """A clone of the first input (index_put, index_fill) or an empty_like of it (flip): torch's preserve_format
    layout of it."""
    return factories.layout_order(arrays[0], None), True


def clone_order(cls, shape, arrays, options):
    """clone(memory_format=...): torch's layout for that format (factories.laid_out_copy)."""
    memory_format = arrays[1] if len(arrays) > 1 else options.get("memory_format")
    return factories.layout_order(arrays[0], memory_format), True


def unwritten(shape, dtype, order=None):
    """Zeros of ``shape`` and ``dtype`` nobody writes (device.unwritten_zeros: no memory until written),
    their dimensions laid out outermost first in ``order`` (default: C order)."""
    if order is None or tuple(order) == tuple(range(len(shape))):
        return unwritten_zeros(shape, dtype)
    buffer = unwritten_zeros(tuple(shape[i] for i in order), dtype)
    return buffer.transpose(tuple(np.argsort(order)))


def small_operands(a, b):
    """A comparison's operands (arrays or numbers) as stand-ins of one element per dimension, and the shape of
    the result (None where they do not broadcast: then they stay whole, and the comparison raises its error)."""
    try:
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        return None, a, b
    (a, b), _ = small((a, b), {})
    return shape, a, b


def elementwise_result(shape, dtype, operands):
    """Unwritten zeros for an elementwise result of ``operands`` (arrays and numbers), in torch's
    TensorIterator layout (marked as known, as factories.in_iterator_layout marks it)."""
    arrays = [a for a in operands if isinstance(a, np.ndarray)]
    order = factories.iterator_order_of(shape, arrays)
    out = unwritten(shape, dtype, order)
    return out if out.flags.c_contiguous else factories.known_layout(out, order)


def gradients(ctx):
    """A meta node's backward: zeros of each input's shape and dtype where it needs a gradient."""
    return tuple(unwritten(x._array.shape, x._array.dtype) if need else None
                 for x, need in zip(ctx.inputs, ctx.needs_input_grad))


# ---- shape rules, per op family ---------------------------------------------------------------------------
def _arrays_of(arrays, options):
    return [a for a in (*arrays, *options.values()) if isinstance(a, np.ndarray)]


def _broadcast_shapes(*shapes):
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def broadcast_shape(*arrays, **options):
    """An elementwise op (torch's TensorIterator): its array operands broadcast together."""
    try:
        return np.broadcast_shapes(*(a.shape for a in _arrays_of(arrays, options)))
    except ValueError:
        return None


def matmul_shape(a, b):
    """``a @ b`` (torch.matmul's 1-D and batched cases)."""
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        return None
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        return None
    return batch + a.shape[-2:-1] + (b.shape[-1:] if b.ndim > 1 else ())


def linear_shape(x, w, b=None):
    """``x @ w.T + b``: [..., in] -> [..., out]."""
    if x.ndim == 0 or w.ndim != 2 or x.shape[-1] != w.shape[1] or (b is not None and b.shape != w.shape[:1]):
        return None
    return x.shape[:-1] + w.shape[:1]


def lora_linear_shape(x, W0, A, B, bias=None, *_, mask=None, **__):
    """The fused LoRA op: ``x @ W0.T + scale * x @ A.T @ B.T (+ bias)``: [..., in] -> [..., out]."""
    out, inner = W0.shape[0], A.shape[0]
    if (x.ndim == 0 or x.shape[-1] != W0.shape[1] or A.shape[1:] != W0.shape[1:] or B.shape != (out, inner)
            or (bias is not None and bias.shape != (out,)) or (mask is not None and mask.shape != x.shape)):
        return None
    return x.shape[:-1] + (out,)


def embedding_shape(ids, weight, *_, **__):
    """A row of the table for each id: ids.shape + [dim]."""
    return ids.shape + weight.shape[1:] if weight.ndim == 2 else None


def cross_entropy_shape(logits, targets, *_, reduction="mean", **__):
    """[N, C] logits, [N] targets: a loss per row ('none') or their sum or mean."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        return None
    return targets.shape if reduction == "none" else ()


def same_shapes(a, b):
    """Two operands of one shape (swiglu's gate and up)."""
    return a.shape if a.shape == b.shape else None


def rotary_shape(x, cos, sin):
    """RoPE: cos and sin broadcast over x's heads."""
    return x.shape if broadcast_shape(x, cos, sin) == x.shape else None


def attention_shape(q, k, v, bias=None, scale=None):
    """[B, Hq, Tq, D] queries, [B, Hkv, Tk, D] keys, [B, Hkv, Tk, Dv] values -> [B, Hq, Tq, Dv]."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        return None
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    if k.shape[:3] != v.shape[:3] or k.shape[0] != b or k.shape[3] != d or (hq % hkv if hkv else hq):
        return None
    if bias is not None and _broadcast_shapes(bias.shape, (b, hq, tq, tk)) != (b, hq, tq, tk):
        return None
    return (b, hq, tq, v.shape[3])


def norm_shape(x, weight=None, *_, width, **__):
    """rms_norm over the last dimensions holding ``width`` numbers (``normalized_shape``)."""
    if _normalized_dims(x.shape, width) is None or (weight is not None and weight.size != width):
        return None
    return x.shape


def layer_norm_shape(x, weight=None, bias=None, *_, width, **__):
    """layer_norm over the last dimensions holding ``width`` numbers, with its weight and bias."""
    if any(p is not None and p.size != width for p in (weight, bias)):
        return None
    return norm_shape(x, width=width)


def _normalized_dims(shape, width):
    """How many trailing dimensions of ``shape`` hold ``width`` numbers (None: none do)."""
    size = 1
    for count, n in enumerate(reversed(shape), 1):
        size *= n
        if size == width and width:
            return count
    return None


def norm_small(arrays, options):
    """rms_norm's stand-ins: one row of ``width`` numbers (the weight as it is)."""
    x, rest = arrays[0], arrays[1:]
    kept = _normalized_dims(x.shape, options["width"])
    return [x[(slice(0, 1),) * (x.ndim - kept)], *rest], options


def rotary_small(arrays, options):
    """RoPE's stand-ins keep the head dimension (the rotation pairs its halves)."""
    return small(arrays, options, keep_last=1)


def reduced_shape(a, axis=None, keepdims=False, *_, **__):
    """A reduction over ``axis`` (None: all of them), kept as size 1 with ``keepdims``."""
    if axis is None or (isinstance(axis, (tuple, list)) and not axis):  # (dim=(): all of them, as torch's)
        axes = set(range(a.ndim))
    else:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        if any(not -max(a.ndim, 1) <= ax < max(a.ndim, 1) for ax in axes):
            return None
        axes = {ax % max(a.ndim, 1) for ax in axes}
    return tuple(1 if i in axes else n for i, n in enumerate(a.shape) if keepdims or i not in axes)


def norm_of_shape(a, p, axis=None, keepdims=False, *_, **__):
    """A vector norm over ``axis`` (reduced_shape's rule after the order ``p``)."""
    return reduced_shape(a, axis, keepdims)


def concatenated_shape(*arrays, axis=0):
    """cat: arrays of one rank, alike but along ``axis``, which adds up."""
    first = arrays[0]
    if first.ndim == 0 or not -first.ndim <= axis < first.ndim:
        return None
    axis %= first.ndim
    if any(a.ndim != first.ndim or a.shape[:axis] + a.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]
           for a in arrays):
        return None
    return first.shape[:axis] + (sum(a.shape[axis] for a in arrays),) + first.shape[axis + 1:]


def index_select_shape(a, index, axis):
    """index_select: ``axis`` holds as many entries as the (1-D) index."""
    if index.ndim > 1 or not -max(a.ndim, 1) <= axis < max(a.ndim, 1) or a.ndim == 0:
        return None
    axis %= a.ndim
    return a.shape[:axis] + (index.size,) + a.shape[axis + 1:]


def gather_shape(a, index, axis, *_, **__):
    """gather: the index's shape (of the input's rank)."""
    return index.shape if index.ndim == a.ndim else None


def indexed_shape(a, index):
    """``a[index]`` with an integer-array index (a gather, which copies): the index taken from a tensor of
    ``a``'s shape whose elements hold no bytes (NumPy's 'V0'), with zeros of each index array's shape (a
    meta index's values), so nothing is read or written. None for basic slicing (a view, which writes
    nothing, runs as it is) or a mask (its shape is its values'). A non-contiguous input's result is laid out
    as NumPy lays out the CPU's (``indexed_order``)."""
    parts = _listed_as_arrays(index if type(index) is tuple else (index,))
    arrays = [i for i in parts if isinstance(i, np.ndarray)]
    if not arrays or any(i.dtype == np.bool_ for i in arrays):
        return None
    no_bytes = np.lib.stride_tricks.as_strided(np.zeros(1, "V0"), a.shape, (0,) * a.ndim)
    zeros = tuple(np.broadcast_to(np.zeros((), i.dtype), i.shape) if isinstance(i, np.ndarray) else i
                  for i in parts)
    try:
        return take_indexed(no_bytes, _without_empty_ellipsis(zeros if type(index) is tuple else zeros[0],
                                                               a.ndim)).shape
    except (IndexError, ValueError, TypeError):  # (the op's own error, from its run on the zeros)
        return None


def indexed_order(cls, shape, arrays, options):
    """``a[index]``'s layout: C order from a contiguous input (GetItem's copy, as torch's); from another, NumPy's
    layout of the CPU's result (which Function.apply then lays out as torch's, or leaves unclaimed), found on a
    probe of at most 2 along each dimension in the input's order of strides, indexed alike."""
    a = arrays[0]
    index = arrays[1] if len(arrays) > 1 else options["index"]
    if a.flags.c_contiguous:
        return None, False
    outer_first = sorted(range(a.ndim), key=lambda d: -abs(a.strides[d]))
    probe = np.empty([min(a.shape[d], 2) for d in outer_first], np.int8).transpose(np.argsort(outer_first))
    parts = tuple(_probe_part(p) for p in _listed_as_arrays(index if type(index) is tuple else (index,)))
    out = take_indexed(probe, _without_empty_ellipsis(parts if type(index) is tuple else parts[0], a.ndim))
    if out.ndim != len(shape):
        return None, False
    return tuple(sorted(range(out.ndim), key=lambda d: -out.strides[d])), False


def _probe_part(part):
    """An index part for indexed_order's probe: an array cut to 2 along each dimension, a slice whole, an int 0."""
    if isinstance(part, np.ndarray):
        return np.zeros(tuple(min(n, 2) for n in part.shape), part.dtype)
    if isinstance(part, slice):
        return slice(None)
    return 0 if isinstance(part, (int, np.integer)) and not isinstance(part, bool) else part


def _listed_as_arrays(parts):
    """An index's parts with its lists (``x[:, [6, 7]]``) as the integer arrays NumPy reads them as."""
    return tuple(np.asarray(i) if isinstance(i, list) else i for i in parts)


def _first_elements(index):
    """An index's arrays as their first element along every dimension (``small``), its integers as 0 (the
    stand-in holds one element along each dimension)."""
    parts = _listed_as_arrays(index if isinstance(index, tuple) else (index,))
    firsts, _ = small(parts, {})
    firsts = [0 if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else i for i in firsts]
    return tuple(firsts) if isinstance(index, tuple) else firsts[0]


def indexed_small(arrays, options):
    """An index op's stand-ins: one element of the input and of each index array (and values)."""
    (a, *rest), options = small(arrays, options)
    # (an index is a tuple of parts, or one part: a list (x[[1, 2]]) is one integer array)
    positional = [_first_elements(x) if isinstance(x, (tuple, list)) else x for x in rest]
    return [a, *positional], {k: _first_elements(v) if isinstance(v, (tuple, list)) else v for k, v in options.items()}


def overwritten_shape(a, *_, **__):
    """An op that writes into a copy of its first input (index_put, index_add/copy/fill): the input's shape."""
    return a.shape


def scatter_shape(a, src, index, axis, *_, **__):
    """scatter / scatter_add / scatter_reduce: ``a``'s shape, where the index (of ``a``'s rank) fits in ``src``
    and, but along ``axis``, in ``a`` (torch's check; else the op's own error)."""
    if index.size == 0:
        return a.shape
    if index.ndim != a.ndim or not -max(a.ndim, 1) <= axis < max(a.ndim, 1):
        return None
    axis %= max(a.ndim, 1)
    if any(n > m for d, (n, m) in enumerate(zip(index.shape, a.shape)) if d != axis):
        return None
    if isinstance(src, np.ndarray) and (src.ndim != a.ndim or any(n > m for n, m in zip(index.shape, src.shape))):
        return None
    return a.shape


def topk_shape(a, k, axis, *_, **__):
    """topk's indices: ``k`` of them along ``axis`` (topk checked k against the size before)."""
    if a.ndim == 0 or not 0 <= k <= a.shape[axis]:
        return None
    return a.shape[:axis] + (k,) + a.shape[axis + 1:]


def topk_small(arrays, options):
    """topk's stand-ins: one row along its axis, whole (the k it picks must fit in it)."""
    a, axis = arrays[0], options["axis"]
    return [a[tuple(slice(None) if d == axis else slice(0, 1) for d in range(a.ndim))], *arrays[1:]], options


def sort_order(cls, shape, arrays, options):
    """sort's indices (``laid_out``): in its input's layout, as torch's empty_like; argsort's contiguous."""
    laid_out = options["laid_out"] if "laid_out" in options else len(arrays) > 3 and arrays[3]
    return (factories.layout_order(arrays[0]), True) if laid_out else (None, False)


def gather_order(cls, shape, arrays, options):
    """gather's values (``like_index``: sort's, laid out as their indices) or contiguous."""
    like_index = options["like_index"] if "like_index" in options else len(arrays) > 3 and arrays[3]
    return (factories.layout_order(arrays[1]), True) if like_index else (None, False)


def einsum_shape(*arrays, subs, output):
    """einsum: each output label's size, a label of size 1 broadcasting. None for one operand keeping every label
    (a permutation or a diagonal: NumPy's view, which runs as it is)."""
    if len(arrays) != len(subs) or (len(subs) == 1 and set(subs[0]) <= set(output)):
        return None
    sizes = {}
    for a, labels in zip(arrays, subs):
        if a.ndim != len(labels):
            return None
        for label, n in zip(labels, a.shape):
            if sizes.get(label, 1) not in (1, n) and n != 1:
                return None
            sizes[label] = n if sizes.get(label, 1) == 1 else sizes[label]
    return tuple(sizes[label] for label in output)


def einsum_order(cls, shape, arrays, options):
    """torch's einsum result: its bmm's layout, permuted to the output's labels (_torch_einsum_layout)."""
    layout, output = _torch_einsum_layout(options["subs"], options["output"]), options["output"]
    if layout is None:  # (NumPy's einsum result: C order)
        return None, False
    return tuple(output.index(label) for label in layout), True


def trilinear_shape(i1, i2, i3, *, expand1, expand2, expand3, sumdim, products_dtype=None):
    """_trilinear: the operands unsqueezed at their ``expand`` dims, each dim's size theirs, the summed dims out."""
    expands = (expand1, expand2, expand3)
    shapes = [np.expand_dims(np.empty(a.shape, np.bool_), tuple(e)).shape for a, e in zip((i1, i2, i3), expands)]
    return tuple(size for d, size in enumerate(_trilinear_sizes(shapes, expands)) if d not in sumdim)


def cross_shape(a, b, *, dim):
    """linalg.cross: its operands broadcast (each with 3 along ``dim``, checked before)."""
    return broadcast_shape(a, b)


def cross_small(arrays, options):
    """cross's stand-ins: the three components along its dim, one element along the others."""
    dim = options["dim"]
    return [a[tuple(slice(None) if d == dim else slice(0, 1) for d in range(a.ndim))] for a in arrays], options


def unfold_shape(x, *, kernel, stride, padding, dilation, round_to=None):
    """F.unfold (im2col): [N, C, H, W] -> [N, C * kh * kw, blocks] (the wrapper checked that blocks fit)."""
    if x.ndim != 4:
        return None
    blocks = [_window_count(n, k, s, p, d) for n, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    return (x.shape[0], x.shape[1] * kernel[0] * kernel[1], blocks[0] * blocks[1]) if min(blocks) > 0 else None


def fold_shape(x, size, kernel, *_, **__):
    """F.fold (col2im): [N, C * kh * kw, blocks] -> [N, C, *output_size] (the wrapper checked the blocks)."""
    window = kernel[0] * kernel[1]
    return (x.shape[0], x.shape[1] // window) + tuple(size) if x.ndim == 3 and x.shape[1] % window == 0 else None


def fold_small(arrays, options):
    """fold's stand-ins: one image's one channel (its kh * kw rows, every block kept), all of them its first
    element (a broadcast: the rows' memory is never read)."""
    x, rest = arrays[0], arrays[1:]
    kernel = options["kernel"] if "kernel" in options else rest[1]
    return [np.broadcast_to(x[:1, :1, :1], (1, kernel[0] * kernel[1], x.shape[2])), *rest], options


def fft_shape(x, *, kind, inverse, axes, sizes, norm):
    """torch.fft (complex_numbers.FFT, which attaches it: that module comes after this one): each transformed axis the size asked; a real-to-complex transform keeps the last one's
    non-negative frequencies (n // 2 + 1)."""
    shape = list(x.shape)
    for axis, n in zip(axes, sizes):
        shape[axis] = n
    if kind == "r2c":
        shape[axes[-1]] = sizes[-1] // 2 + 1
    return tuple(shape)


def fft_order(cls, shape, arrays, options):
    """A transform's result: C order from an input in C order (NumPy's, and torch's CPU kernels'), else a layout
    stride() refuses to claim, as for the CPU result (NumPy's pocketfft follows its input's strides)."""
    return (None, False) if arrays[0].flags.c_contiguous else ("unknown", False)


def fft_dtype(x, *, kind, **_):
    """The transform's result dtype, without a transform: complex but for complex-to-real's."""
    if kind == "c2r":
        return np.empty(0, x.dtype).real.dtype
    return np.result_type(x.dtype, np.complex64)


def adaptive_pool2d_shape(x, *, rows, cols, round_to=None):
    """adaptive_avg_pool2d / adaptive_max_pool2d: [..., H, W] -> [..., len(rows), len(cols)] (a window each)."""
    return x.shape[:-2] + (len(rows), len(cols)) if x.ndim >= 2 else None


def adaptive_pool2d_small(arrays, options):
    """The adaptive pools' stand-ins: one image's one channel, its rows and columns kept (the windows read them)."""
    (x,), _ = small(arrays, {}, keep_last=2)
    return [first_spread(x)], options


def prelu_shape(x, w):
    """prelu: ``x``'s shape (the weight broadcast to it)."""
    return x.shape if _broadcast_shapes(x.shape, w.shape) == x.shape else None


def avg_pool3d_shape(x, *, divisors, **__):
    """avg_pool3d: [N, C, D, H, W] -> [N, C] + the divisors' [D_out, H_out, W_out] (one per window)."""
    return x.shape[:2] + divisors.shape if x.ndim == 5 and divisors.ndim == 3 else None


def grid_sample_shape(x, grid, *_, **__):
    """grid_sample: [N, C, *spatial] read at [N, *out, rank] -> [N, C, *out]."""
    if grid.ndim != x.ndim or grid.shape[0] != x.shape[0] or grid.shape[-1] != x.ndim - 2:
        return None
    return x.shape[:2] + grid.shape[1:-1]


def grid_sample_small(arrays, options):
    """grid_sample's stand-ins: one element of each, the grid's coordinates kept."""
    return small(arrays, options, keep_last=1)


def cdist_shape(x1, x2, *, p):
    """cdist: [..., P, M] and [..., R, M] -> [..., P, R], the batch dimensions broadcast."""
    if x1.ndim < 2 or x2.ndim < 2 or x1.shape[-1] != x2.shape[-1]:
        return None
    batch = _broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
    return None if batch is None else batch + (x1.shape[-2], x2.shape[-2])


def loss_shape(x, t, *, reduction, **__):
    """An elementwise loss (mse, smooth_l1): its operands broadcast, or one number when reduced."""
    shape = broadcast_shape(x, t)
    return shape if shape is None or reduction == "none" else ()


def _window_count(size, kernel, stride, padding, dilation):
    """How many windows a convolution or pooling fits along one dimension (floor, as torch's default)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_shape(x, weight, stride, padding, dilation, groups):
    """[N, C, H, W] input, [O, C / groups, kh, kw] weight -> [N, O, H_out, W_out]."""
    if x.ndim != 4 or weight.ndim != 4 or not groups or x.shape[1] != weight.shape[1] * groups \
            or weight.shape[0] % groups:
        return None
    spatial = tuple(_window_count(n, k, s, p, d) for n, k, s, p, d in
                    zip(x.shape[2:], weight.shape[2:], stride, padding, dilation))
    return x.shape[:1] + weight.shape[:1] + spatial if min(spatial) > 0 else None


def conv2d_small(arrays, options):
    """conv2d's stand-ins: one image of one channel per group (the kernel's and the image's sizes kept)."""
    x, weight = arrays[:2]
    groups = options["groups"] if "groups" in options else arrays[5]
    return [first_spread(x[:1, :groups]), first_spread(weight[:groups, :1]), *arrays[2:]], options


def pool2d_shape(x, kernel, stride, padding, dilation, *_, **__):
    """max_pool2d: [N, C, H, W] -> [N, C, H_out, W_out]."""
    if x.ndim != 4:
        return None
    spatial = tuple(_window_count(n, k, s, p, d) for n, k, s, p, d in zip(x.shape[2:], kernel, stride, padding,
                                                                           dilation))
    return x.shape[:2] + spatial if min(spatial) > 0 else None


def pool2d_small(arrays, options):
    """max_pool2d's stand-ins: one channel of one image (its sizes kept)."""
    return [first_spread(arrays[0][:1, :1]), *arrays[1:]], options


def pad_shape(a, widths, value):
    """Constant padding (a negative width crops): each dimension grows by its widths, when no crop cuts past
    an edge (else the op's error)."""
    if len(widths) != a.ndim or any(n + min(before, 0) < 0 or n + before + after < 0
                                    for n, (before, after) in zip(a.shape, widths)):
        return None
    return tuple(n + before + after for n, (before, after) in zip(a.shape, widths))


def pad_small(arrays, options):
    """pad's stand-ins: one element along each dimension it does not pad (the padded ones kept)."""
    a = arrays[0]
    widths = options["widths"] if "widths" in options else arrays[1]
    return [a[tuple(slice(None) if any(w) else slice(0, 1) for w in widths)], *arrays[1:]], options


def conv_transpose2d_shape(x, weight, stride, padding, dilation, groups, output_padding):
    """[N, C, H, W] input, [C, O / groups, kh, kw] weight -> [N, O, H_out, W_out], each input pixel spread
    over its window: ``(n - 1) * stride + dilation * (k - 1) + 1 + output_padding - 2 * padding``."""
    if x.ndim != 4 or weight.ndim != 4 or not groups or x.shape[1] != weight.shape[0] or x.shape[1] % groups:
        return None
    spatial = tuple((n - 1) * s + d * (k - 1) + 1 + extra - 2 * p for n, k, s, p, d, extra in
                    zip(x.shape[2:], weight.shape[2:], stride, padding, dilation, output_padding))
    return x.shape[:1] + (weight.shape[1] * groups,) + spatial if min(spatial) > 0 else None


def conv_transpose2d_small(arrays, options):
    """conv_transpose2d's stand-ins: one image of one channel per group (the kernel's and the image's sizes kept)."""
    x, weight = arrays[:2]
    groups = options["groups"]
    return [first_spread(x[:1, :groups]), first_spread(weight[:groups, :1]), *arrays[2:]], options


def conv_bias_shape(out, bias, *_, **__):
    """A convolution's bias, one per channel (dimension 1), added to its result."""
    return out.shape if out.ndim >= 2 and bias.shape == out.shape[1:2] else None


def conv_bias_order(cls, shape, arrays, options):
    """The bias add's result in the convolution result's order (the per-channel bias is broadcast into it)."""
    return factories.iterator_order_of(shape, arrays[:1]), True


def avg_pool2d_shape(x, kernel, stride, padding, extra, divisors, *_, **__):
    """avg_pool2d: [N, C, H, W] -> [N, C] + the divisors' [H_out, W_out] (one per window)."""
    return x.shape[:2] + divisors.shape if x.ndim == 4 and divisors.ndim == 2 else None


def resized_shape(x, *, sources=None, taps=None, **__):
    """interpolate: [N, C, *spatial] -> [N, C] + each spatial dimension's count of output positions (``sources``:
    per dimension, nearest's input index or linear's (first, second, weights...); bicubic's ``taps``)."""
    per_dimension = sources if sources is not None else taps
    if len(per_dimension) != x.ndim - 2 or not (x.flags.c_contiguous or _channels_last(x)):
        return None  # (another layout: the op's run)
    return x.shape[:2] + tuple(len(_first_index(entry)) for entry in per_dimension)


def _channels_last(x):
    return factories.suggested_format(x) is not factories.contiguous_format


def resized_order(cls, shape, arrays, options):
    """interpolate's result: C order, or a channels_last input's layout (torch's kernels keep it)."""
    x = arrays[0]
    return (None, False) if x.flags.c_contiguous else (factories.layout_order(x, None), True)


def _first_index(entry):
    """An index array of one dimension's resizing entry (nearest's index; linear's or bicubic's tuple of them)."""
    while isinstance(entry, (tuple, list)):
        entry = entry[0]
    return entry


def resized_small(arrays, options):
    """interpolate's stand-ins: one element of the input, and each dimension's indices and weights cut to their
    first output position, reading input index 0."""
    def first(entry):
        if isinstance(entry, (tuple, list)):
            return type(entry)(first(e) for e in entry)
        return np.zeros(1, entry.dtype) if entry.dtype.kind in "iu" else entry[:1]
    (x,), _ = small(arrays[:1], {})
    resized = ("sources", "forward_sources", "taps")
    return [x, *arrays[1:]], {k: first(v) if k in resized and v is not None else v for k, v in options.items()}


def repeat_shape(a, sizes):
    """repeat: ``a`` (with leading dimensions of size 1 to ``sizes``' length) times ``sizes``."""
    if len(sizes) < a.ndim or any(n < 0 for n in sizes):
        return None
    padded = (1,) * (len(sizes) - a.ndim) + a.shape
    return tuple(n * times for n, times in zip(padded, sizes))


def repeat_small(arrays, options):
    """repeat's stand-ins: one element, repeated once along each dimension."""
    (a,), _ = small(arrays[:1], {})
    sizes = options["sizes"] if "sizes" in options else arrays[1]
    ones = tuple(min(n, 1) for n in sizes)
    return ([a], {**options, "sizes": ones}) if "sizes" in options else ([a, ones], options)


def diag_embed_shape(a, offset):
    """diag_embed: each vector along the last dimension on the ``offset`` diagonal of a square matrix."""
    if a.ndim == 0:
        return None
    n = a.shape[-1] + abs(offset)
    return a.shape[:-1] + (n, n)


def vector_norm_shape(x, *, ord, dims, keepdim, number_along_dim=False):
    """linalg.vector_norm over ``dims`` (None: all)."""
    return reduced_shape(x, dims, keepdim)


def bce_shape(x, y, *, weight, reduction):
    """binary_cross_entropy's one node: a loss per element ('none') or one number."""
    if x.shape != y.shape or (weight is not None and weight.shape != x.shape):
        return None
    return x.shape if reduction == "none" else ()


def bce_with_logits_shape(x, y, weight, pos_weight, reduction):
    """binary_cross_entropy_with_logits: a loss per element ('none': its operands broadcast) or one number."""
    shape = broadcast_shape(x, y, weight, pos_weight)
    return shape if shape is None or reduction == "none" else ()


def logical_shape(a, kind, axis=None, keepdims=False):
    """any / all: a reduction over ``axis`` (None: all of them)."""
    return reduced_shape(a, axis, keepdims)


def glu_shape(x, *, dim):
    """glu: ``dim`` halved (its first half gated by its second; an odd size is the op's error)."""
    if x.ndim == 0 or not -x.ndim <= dim < x.ndim or x.shape[dim] % 2:
        return None
    dim %= x.ndim
    return x.shape[:dim] + (x.shape[dim] // 2,) + x.shape[dim + 1:]


def glu_small(arrays, options):
    """glu's stand-ins: one element of each half (two along ``dim``)."""
    x, dim = arrays[0], options["dim"] % arrays[0].ndim
    return [x[tuple(slice(0, 2) if d == dim else slice(0, 1) for d in range(x.ndim))]], options


def softmax_shape(a, axis=-1, *_, **__):
    """softmax and log_softmax: the input's shape."""
    return a.shape if -max(a.ndim, 1) <= axis < max(a.ndim, 1) else None


def whole_shape(a, *_, **__):
    """An op that reduces every element to one (the median of all)."""
    return ()


def first_shape(a, *_, **__):
    """An op whose result has its first input's shape (dropout, clone)."""
    return a.shape


def reshape_copy_shape(a, shape, torch_op=None):
    """A reshape that must copy (its input's strides allow no view): the new shape, -1 inferred. A reshape
    that is a view: None, so it runs as it is (a view writes nothing)."""
    try:
        a.reshape(shape, copy=False)
        return None
    except ValueError:
        pass
    try:  # (a 0-stride stand-in of the input's size: its reshape never copies, and infers -1 as the op)
        return np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), (a.size,), (0,)).reshape(shape).shape
    except ValueError:
        return None


def input_dtype(a, *_, **__):
    return a.dtype


def _attach():
    """Give the op families their rules (the classes keep them: Function.meta_shape's lookup)."""
    for cls in _all_functions():
        if cls.torch_layout in ("elementwise", "preserve"):
            cls.meta_shape = staticmethod(broadcast_shape)
    rules = {MatMul: matmul_shape, Linear: linear_shape, LoraLinear: lora_linear_shape, Embedding: embedding_shape,
             CrossEntropy: cross_entropy_shape, SwiGLU: same_shapes, Rotary: rotary_shape, Attention: attention_shape,
             RMSNorm: norm_shape, Dropout: first_shape, Sum: reduced_shape, Mean: reduced_shape,
             Softmax: softmax_shape, LogSoftmax: softmax_shape, Clone: first_shape, Reshape: reshape_copy_shape,
             LayerNorm: layer_norm_shape, AMax: reduced_shape, ArgMax: reduced_shape, Var: reduced_shape,
             PNorm: norm_of_shape, CumSum: first_shape, Flip: first_shape, Roll: first_shape, Cat: concatenated_shape,
             IndexSelect: index_select_shape, Gather: gather_shape, MseLoss: loss_shape, NllLoss: cross_entropy_shape,
             Conv2d: conv2d_shape, MaxPool2d: pool2d_shape, Pad: pad_shape, GetItem: indexed_shape,
             IndexPut: overwritten_shape, IndexAdd: overwritten_shape, IndexCopy: overwritten_shape,
             IndexFill: overwritten_shape, Scatter: scatter_shape, ScatterReduce: scatter_shape, Einsum: einsum_shape,
             Trilinear: trilinear_shape,
             ArgSort: first_shape, CumProd: first_shape, LogSumExp: reduced_shape, Prod: reduced_shape,
             TopKOrder: topk_shape, ConvBias: conv_bias_shape, ConvTranspose2d: conv_transpose2d_shape, AvgPool2d: avg_pool2d_shape,
             NearestResize: resized_shape, LinearResize: resized_shape, CubicResize: resized_shape,
             Repeat: repeat_shape, DiagEmbed: diag_embed_shape, VectorNorm: vector_norm_shape,
             BinaryCrossEntropyWithLogits: bce_with_logits_shape, Logical: logical_shape, SmoothL1Loss: loss_shape,
             Glu: glu_shape, LogCumSumExp: first_shape,
             # round 22 (benchmarks/meta_sweep.py found them computing on the meta zeros)
             Cross: cross_shape, Cdist: cdist_shape, Unfold: unfold_shape, Fold: fold_shape, LogSigmoid: first_shape,
             PRelu: prelu_shape, AdaptiveAvgPool2d: adaptive_pool2d_shape, AdaptiveMaxPool2d: adaptive_pool2d_shape,
             BinaryCrossEntropyLoss: bce_shape, MedianAll: whole_shape, Erfcx: first_shape, AvgPool3d: avg_pool3d_shape,
             GridSampleBilinear2d: grid_sample_shape, GridSampleTrilinear3d: grid_sample_shape}
    for cls, rule in rules.items():
        cls.meta_shape = staticmethod(rule)
    Rotary.meta_small = staticmethod(rotary_small)
    RMSNorm.meta_small = LayerNorm.meta_small = staticmethod(norm_small)
    Conv2d.meta_small, MaxPool2d.meta_small = staticmethod(conv2d_small), staticmethod(pool2d_small)
    Pad.meta_small = staticmethod(pad_small)
    GetItem.meta_small = IndexPut.meta_small = staticmethod(indexed_small)
    IndexPut.meta_order = IndexFill.meta_order = Flip.meta_order = staticmethod(preserved_order)
    GetItem.meta_order = staticmethod(indexed_order)
    Einsum.meta_order = staticmethod(einsum_order)
    TopKOrder.meta_small = staticmethod(topk_small)
    ConvTranspose2d.meta_small = staticmethod(conv_transpose2d_small)
    AvgPool2d.meta_small = AvgPool3d.meta_small = staticmethod(pool2d_small)
    ConvBias.meta_order = staticmethod(conv_bias_order)
    NearestResize.meta_small = LinearResize.meta_small = CubicResize.meta_small = staticmethod(resized_small)
    NearestResize.meta_order = LinearResize.meta_order = CubicResize.meta_order = staticmethod(resized_order)
    Repeat.meta_small, Glu.meta_small = staticmethod(repeat_small), staticmethod(glu_small)
    ArgSort.meta_order, Gather.meta_order = staticmethod(sort_order), staticmethod(gather_order)
    Rotary.meta_order, Dropout.meta_order = staticmethod(empty_like_order), staticmethod(iterator_order)
    Clone.meta_order = staticmethod(clone_order)
    Cross.meta_small, Unfold.meta_small = staticmethod(cross_small), staticmethod(pool2d_small)
    Fold.meta_small = staticmethod(fold_small)
    AdaptiveAvgPool2d.meta_small = AdaptiveMaxPool2d.meta_small = staticmethod(adaptive_pool2d_small)
    GridSampleBilinear2d.meta_small = GridSampleTrilinear3d.meta_small = staticmethod(grid_sample_small)
    PRelu.meta_order = staticmethod(iterator_order)
    Reshape.meta_dtype = staticmethod(input_dtype)
    KernelValues.meta_shape = None  # (Clone's subclass, whose result is another array's)
    ToDevice.meta_gradients = False  # (a move to meta: its backward is torch's error, no values to move back)


def _all_functions(cls=Function):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_functions(sub)


_attach()
