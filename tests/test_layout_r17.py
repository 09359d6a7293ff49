"""Round 16's layout leftovers: results of empty, channels_last and strided inputs answer torch's strides, and
results torch makes new are never views of their input.

Each case failed before: stride() refused where torch answers (ops without a Function.torch_layout rule, or
composed on raw arrays outside Function.apply: isclose, logical_not, the bitwise ops, heaviside, isreal, frexp),
answered NumPy's strides (a (0, 1) result of contiguous inputs: Function.apply skipped the layout for inputs
that are no views; nonzero's [n, ndim] is column-major in torch), or the result shared the input's memory
(``x ** 1``, flip along a dimension of size 1, ravel of ``x[:, ::2]``, pixel_shuffle / channel_shuffle by 1),
so an in-place change of the result changed the input.
"""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _answer(t, L):
    """What torch users read of a result's layout: strides, contiguity (channels_last too), whether view(-1) works."""
    answer = [t.stride(), t.is_contiguous()]
    if t.dim() in (4, 5):
        answer.append(t.is_contiguous(memory_format=L.channels_last if t.dim() == 4 else L.channels_last_3d))
    try:
        t.view(-1)
        answer.append("view")
    except RuntimeError:
        answer.append("no view")
    return answer


def _check(make):
    """The layout torch users read, and the values (laying a result out anew must not change a number)."""
    theirs, ours = make(torch), make(ml)
    theirs, ours = (theirs, ours) if isinstance(theirs, tuple) else ((theirs,), (ours,))
    for t, m in zip(theirs, ours):
        assert _answer(m, ml) == _answer(t, torch)
        np.testing.assert_allclose(m.detach().numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-6)


def _cl(L):
    return (L.arange(120.) / 130).reshape(2, 3, 4, 5).contiguous(memory_format=L.channels_last)


def _cl3(L):
    return (L.arange(144.) / 150).reshape(2, 3, 2, 3, 4).contiguous(memory_format=L.channels_last_3d)


EMPTY = {  # torch's TensorIterator puts a dimension of size 0 inside one of size 1 when a number is an operand
    "zeros(0, 1) + 1": lambda L: L.zeros(0, 1) + 1,
    "zeros(0, 1, 3) * 2": lambda L: L.zeros(0, 1, 3) * 2,
    "1 - zeros(0, 1)": lambda L: 1 - L.zeros(0, 1),
    "1 / zeros(0, 1)": lambda L: 1 / L.zeros(0, 1),  # (torch's reciprocal() * 1)
    "zeros(0, 1).sort()": lambda L: L.zeros(0, 3).t().sort(),
    "zeros(0, 3).t().clone()": lambda L: L.zeros(0, 3).t().clone(),
    "zeros(0, 1).repeat(2, 1)": lambda L: L.zeros(0, 1).repeat(2, 1),
}


@pytest.mark.parametrize("name", EMPTY)
def test_empty_results_answer_torchs_strides(name):
    _check(EMPTY[name])


CHANNELS_LAST = {  # torch's answer: contiguous (reductions, cumulative ops, copies) or channels_last
    "max(1)": lambda L, x: x.max(1), "min(-1)": lambda L, x: x.min(-1), "max(2, keepdim)": lambda L, x: x.max(2, True),
    "median(1)": lambda L, x: x.median(1), "nanmedian(0)": lambda L, x: x.nanmedian(0),
    "mode(1)": lambda L, x: x.mode(1), "kthvalue(2, 1)": lambda L, x: x.kthvalue(2, 1),
    "topk(2, 1)": lambda L, x: x.topk(2, 1), "sort(1)": lambda L, x: x.sort(1), "msort": lambda L, x: x.msort(),
    "cummax(1)": lambda L, x: x.cummax(1), "cummin(-1)": lambda L, x: x.cummin(-1),
    "cumprod(1)": lambda L, x: x.cumprod(1), "logcumsumexp(2)": lambda L, x: x.logcumsumexp(2),
    "roll(1, 1)": lambda L, x: x.roll(1, 1), "roll((1, 2), (1, 2))": lambda L, x: x.roll((1, 2), (1, 2)),
    "roll(1)": lambda L, x: x.roll(1), "rot90(0)": lambda L, x: x.rot90(0),
    "repeat(1, 2, 1, 1)": lambda L, x: x.repeat((1, 2) + (1,) * (x.dim() - 2)),
    "tile(2)": lambda L, x: x.tile(2), "repeat_interleave(2, 1)": lambda L, x: x.repeat_interleave(2, 1),
    "index_select(1)": lambda L, x: x.index_select(1, L.tensor([x.shape[1] - 1, 0])), "diag_embed": lambda L, x: x.diag_embed(),
    "erfinv": lambda L, x: x.erfinv(), "digamma": lambda L, x: x.digamma(), "lgamma": lambda L, x: x.lgamma(),
    "i0": lambda L, x: x.i0(), "erfc": lambda L, x: x.erfc(), "polygamma(1)": lambda L, x: x.polygamma(1),
    "isnan": lambda L, x: x.isnan(), "isinf": lambda L, x: x.isinf(), "signbit": lambda L, x: x.signbit(),
    "isposinf": lambda L, x: L.isposinf(x), "logical_not": lambda L, x: x.logical_not(),
    "logical_and": lambda L, x: x.logical_and(x > 0.5), "mask & mask": lambda L, x: (x > 0.1) & (x < 0.5),
    "isclose": lambda L, x: x.isclose(x * 2), "heaviside": lambda L, x: x.heaviside(x),
    "nextafter": lambda L, x: x.nextafter(x * 2), "logaddexp2": lambda L, x: x.logaddexp2(x),
    "angle": lambda L, x: x.angle(), "frexp": lambda L, x: x.frexp(), "isreal": lambda L, x: x.isreal(),
    "xlog1py": lambda L, x: L.special.xlog1py(x, x), "i1": lambda L, x: L.special.i1(x),
}


@pytest.mark.parametrize("name", CHANNELS_LAST)
@pytest.mark.parametrize("make", [_cl, _cl3], ids=["channels_last", "channels_last_3d"])
def test_results_from_channels_last_answer_torchs_layout(name, make):
    _check(lambda L: CHANNELS_LAST[name](L, make(L)))


STRIDED = {  # inputs that are views: transposed, permuted, sliced with a step, expanded, size-1 dims
    "t()": lambda L: (L.arange(12.) / 13).reshape(3, 4).t(),
    "permute": lambda L: (L.arange(24.) / 25).reshape(2, 3, 4).permute(2, 0, 1),
    "step": lambda L: (L.arange(24.) / 25).reshape(4, 6)[:, ::2],
    "expand": lambda L: (L.arange(3.) / 4).reshape(3, 1).expand(3, 4),
    "size-1 t()": lambda L: (L.arange(5.) / 6).reshape(1, 5).t(),
    "size-1 permute": lambda L: (L.arange(6.) / 7).reshape(2, 1, 3).permute(1, 2, 0),
}
EVERYWHERE = ["sort(1)", "msort", "frexp", "isreal", "rot90(0)"]
ELEMENTWISE = ["erfinv", "digamma", "isnan", "logical_not", "mask & mask", "isclose"]
ON_VIEWS = {"t()": EVERYWHERE + ELEMENTWISE + ["repeat_interleave(2, 1)", "index_select(1)"],
            "permute": EVERYWHERE + ELEMENTWISE + ["repeat_interleave(2, 1)", "index_select(1)"],
            "step": ["repeat_interleave(2, 1)", "index_select(1)"],
            "expand": ["repeat_interleave(2, 1)", "index_select(1)"],
            "size-1 t()": EVERYWHERE, "size-1 permute": EVERYWHERE + ELEMENTWISE}


@pytest.mark.parametrize("view, name", [(view, name) for view, names in ON_VIEWS.items() for name in names])
def test_results_from_views_answer_torchs_layout(view, name):
    _check(lambda L: CHANNELS_LAST[name](L, STRIDED[view](L)))


OTHERS = {  # torch's kernel writes a contiguous result (an unbatched pool: a 3-D input's suggested format), or
    # sees only the input (threshold's mask and fill value are no operands of it); minilora answered NumPy's
    "max_pool2d of [C, H, W]": lambda L: L.nn.functional.max_pool2d(STRIDED["permute"](L), 1),
    "avg_pool2d of [C, H, W]": lambda L: L.nn.functional.avg_pool2d(STRIDED["permute"](L), (2, 1)),
    "max_pool1d of [C, L]": lambda L: L.nn.functional.max_pool1d(STRIDED["t()"](L), 2, 1),
    "logsigmoid": lambda L: L.nn.functional.logsigmoid(_cl(L)),
    "threshold": lambda L: L.nn.functional.threshold(STRIDED["size-1 permute"](L), 0.2, 0.),
    "hardshrink": lambda L: L.nn.functional.hardshrink(STRIDED["size-1 t()"](L), 0.2),
    "rrelu (eval)": lambda L: L.nn.functional.rrelu(STRIDED["t()"](L) - 0.5),
    "mvlgamma": lambda L: (STRIDED["t()"](L) + 1).mvlgamma(2),
    "diag of [5, 1]": lambda L: STRIDED["size-1 t()"](L).diag(),
    "diag_embed(dim1=0)": lambda L: STRIDED["permute"](L).diag_embed(0, 0, 2),
}


@pytest.mark.parametrize("name", OTHERS)
def test_other_results_answer_torchs_layout(name):
    _check(OTHERS[name])


@pytest.mark.parametrize("view", ["t()", "permute", "step", "expand"])
def test_detach_of_a_view_answers_its_strides(view):
    # x.t().detach() is no view: stride() refused it (only a size-1 dimension's strides were kept)
    _check(lambda L: STRIDED[view](L).detach())


@pytest.mark.parametrize("make", [lambda L: L.ones(3, 4), lambda L: L.ones(12), lambda L: L.zeros(3, 4),
                                  lambda L: L.ones(2, 3, 4), lambda L: L.ones(3, 4).t()])
def test_nonzero_is_column_major_as_torchs(make):
    # torch's CPU nonzero writes one coordinate after another: [n, ndim] with strides (1, n); minilora's was C order
    _check(lambda L: (L.nonzero(make(L)), L.argwhere(make(L))))


NEW_TENSORS = {  # torch makes a new tensor: changing it in place must leave the input as it was
    "x ** 1": lambda L, x: x ** 1,
    "pow(x, 1) of t()": lambda L, x: L.pow(x.t(), 1),
    "flip(0) of [1, 12]": lambda L, x: x.reshape(1, 12).flip(0),
    "ravel of x[:, ::2]": lambda L, x: x.reshape(3, 4)[:, ::2].ravel(),
    "pixel_shuffle(x, 1)": lambda L, x: L.nn.functional.pixel_shuffle(x.reshape(1, 3, 2, 2), 1),
    "pixel_unshuffle(x, 1)": lambda L, x: L.nn.functional.pixel_unshuffle(x.reshape(1, 3, 2, 2), 1),
    "channel_shuffle(x, 1)": lambda L, x: L.nn.functional.channel_shuffle(x.reshape(1, 3, 4), 1),
    "torch.channel_shuffle(x, 1)": lambda L, x: L.channel_shuffle(x.reshape(1, 3, 4), 1),
}


@pytest.mark.parametrize("name", NEW_TENSORS)
def test_new_results_do_not_share_the_inputs_memory(name):
    for L in (torch, ml):
        x = L.zeros(12)
        NEW_TENSORS[name](L, x).add_(1)
        assert x.sum().item() == 0, L.__name__
