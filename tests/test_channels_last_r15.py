"""Random draws follow the layout torch draws in, or refuse; size-1 dimensions and composed ops answer torch's strides.

torch draws a dropout mask, a ``rand_like`` and every in-place random fill in the memory order of the tensor
(or of ``empty_like`` of it). Round 14 marked results whose layout minilora does not follow as unknown, but the
random ops still drew them in C order: after ``group_norm`` or ``rms_norm`` of a channels_last input (torch's
result channels_last) the mask differed from torch's with no error. Every draw now asks
``factories.draw_order``, which refuses an unknown layout. ``bernoulli_(p_tensor)`` and ``multinomial`` drew in
index order where torch walks the tensor in memory order. group_norm and conv_transpose3d answer torch's
channels_last strides where NumPy's are them, avg_pool3d / the adaptive 3-D pools torch's contiguous ones;
channels_last tensors with size-1 dimensions answer torch's strides (known_layout keeps the order), feature
dropout's and rrelu's results torch's layouts."""
import numpy as np
import pytest

import minilora as ml
from minilora.tensor import Function

torch = pytest.importorskip("torch")

DATA = np.random.default_rng(0).uniform(0.05, 0.95, (2, 3, 4, 5)).astype(np.float32)
DATA5 = np.random.default_rng(1).uniform(0.05, 0.95, (2, 3, 2, 3, 4)).astype(np.float32)


def _both(make):
    """``make(T)`` with torch and with minilora, each after manual_seed(3)."""
    out = []
    for T in (torch, ml):
        T.manual_seed(3)
        out.append(make(T))
    return out


W3 = np.random.default_rng(2).standard_normal((4, 3, 2, 2, 2)).astype(np.float32)
class _Unruled(Function):
    """An op minilora has no layout rule for (Function.torch_layout None): its C-ordered result is unknown."""

    @staticmethod
    def forward(ctx, a):
        return a.copy()  # (C order: NumPy's, not torch's)


def _unruled(T):
    x = T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d)
    return x + 0 if T is torch else _Unruled.apply(x)  # (torch's x + 0 is channels_last_3d)


UNKNOWN = {  # results minilora does not lay out as torch (channels_last there): their draws must refuse
    # (max_pool3d's and conv3d's were these until round 16, roll's and erfinv's until round 17, bce_with_logits'
    # reduction='none' until round 23: tests/test_meta_errors_r23.py)
    "unruled": _unruled,
}
FOLLOWED = {  # ops whose result minilora now lays out (or finds laid out) as torch's: they were marked unknown
    "softmax": lambda T: T.nn.functional.softmax(
        T.from_numpy(DATA.copy()).contiguous(memory_format=T.channels_last), 1),
    "layer_norm": lambda T: T.nn.functional.layer_norm(
        T.from_numpy(DATA.copy()).contiguous(memory_format=T.channels_last), (4, 5)),
    "cumsum": lambda T: T.from_numpy(DATA.copy()).contiguous(memory_format=T.channels_last).cumsum(2),
    "rms_norm": lambda T: T.nn.functional.rms_norm(
        T.from_numpy(DATA.copy()).contiguous(memory_format=T.channels_last), (5,)),
    "group_norm": lambda T: T.nn.functional.group_norm(
        T.from_numpy(DATA.copy()).contiguous(memory_format=T.channels_last), 3),
    "conv_transpose3d": lambda T: T.nn.functional.conv_transpose3d(
        T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d), T.from_numpy(W3[:3])),
    "avg_pool3d": lambda T: T.nn.functional.avg_pool3d(
        T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d), 2, 1),
    "roll": lambda T: T.roll(T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d), 1, 2),
    "erfinv": lambda T: T.erfinv(T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d)),
}


@pytest.mark.parametrize("name", sorted(FOLLOWED))
def test_composed_ops_answer_torchs_layout_and_draw_its_mask(name):
    """These results were marked unknown (stride() refused and, before this round, dropout drew C order)."""
    yt, ym = _both(FOLLOWED[name])
    assert ym.stride() == yt.stride()
    for draw in ("dropout", "rand_like", "normal_"):
        dt, dm = _both(lambda T: DRAWS[draw](T, (yt, ym)[T is ml]))
        np.testing.assert_array_equal(dm.detach().numpy() == 0, dt.detach().numpy() == 0)
        if draw != "dropout":
            np.testing.assert_array_equal(dm.numpy(), dt.numpy())
DRAWS = {
    "dropout": lambda T, x: T.nn.functional.dropout(x, 0.5),
    "Dropout": lambda T, x: T.nn.Dropout(0.3)(x),
    "alpha_dropout": lambda T, x: T.nn.functional.alpha_dropout(x, 0.5, True),
    "rand_like": lambda T, x: T.rand_like(x),
    "randn_like": lambda T, x: T.randn_like(x),
    "randint_like": lambda T, x: T.randint_like(x, 10),
    "normal_": lambda T, x: x.detach().normal_(),
    "uniform_": lambda T, x: x.detach().uniform_(),
    "bernoulli_": lambda T, x: x.detach().bernoulli_(0.5),
    "exponential_": lambda T, x: x.detach().exponential_(),
    "random_": lambda T, x: x.detach().random_(10),
    "init.kaiming_uniform_": lambda T, x: T.nn.init.kaiming_uniform_(x.detach()),
}


@pytest.mark.parametrize("draw", sorted(DRAWS))
@pytest.mark.parametrize("made_by", sorted(UNKNOWN))
def test_draw_on_unknown_layout_refuses(made_by, draw):
    """torch draws these in channels_last order; minilora does not know its result's layout, so it refuses
    (it drew in C order: another mask, silently) -- and draws torch's numbers once the layout is made plain."""
    yt, ym = _both(lambda T: UNKNOWN[made_by](T))
    assert not yt.is_contiguous()  # (torch's is channels_last)
    ml.manual_seed(3)
    with pytest.raises(NotImplementedError, match="memory layout"):
        DRAWS[draw](ml, ym)
    torch.manual_seed(3)
    ml.manual_seed(3)
    fmt, mfmt = (torch.channels_last, ml.channels_last) if yt.ndim == 4 else (torch.channels_last_3d,
                                                                               ml.channels_last_3d)
    drawn_t = DRAWS[draw](torch, yt.contiguous(memory_format=fmt))
    drawn_m = DRAWS[draw](ml, ym.contiguous(memory_format=mfmt))
    np.testing.assert_allclose(drawn_m.detach().numpy(), drawn_t.detach().numpy(), rtol=1e-6, atol=1e-6)
    if draw in ("dropout", "bernoulli_"):
        np.testing.assert_array_equal(drawn_m.detach().numpy() == 0, drawn_t.detach().numpy() == 0)


@pytest.mark.parametrize("view", ["select", "slice", "permute"])
def test_results_from_views_of_an_unknown_layout_stay_unknown(view):
    """A view of such a result is of unknown layout too, and so is what an op makes of it: clone() kept
    NumPy's C order for it and normal_() drew C order (torch: the channels_last view's memory order)."""
    _, ym = _both(UNKNOWN["unruled"])
    v = {"select": ym[:, 0], "slice": ym[:, 1:], "permute": ym.permute(0, 2, 1, 3, 4)}[view]
    for call in (lambda t: t.clone().normal_(), lambda t: t.sigmoid().stride(), lambda t: (t * 2).bernoulli_(0.5),
                 lambda t: ml.nn.functional.dropout(t, 0.5)):
        with pytest.raises(NotImplementedError):
            call(v)


def test_contiguous_like_and_clone_of_unknown_layout_stay_unknown():
    """zeros_like keeps a layout minilora does not know: its result's strides are not known either."""
    _, ym = _both(UNKNOWN["unruled"])
    with pytest.raises(NotImplementedError):
        ml.zeros_like(ym).stride()
    assert ml.zeros_like(ym, memory_format=ml.contiguous_format).stride() == (72, 24, 12, 4, 1)


LAYOUTS = {  # inputs minilora knows the layout of: torch's numbers, in torch's memory order
    "channels_last": lambda T: T.from_numpy(DATA.copy()).contiguous(memory_format=T.channels_last),
    "channels_last_3d": lambda T: T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d),
    "transposed": lambda T: T.from_numpy(DATA[0, 0].copy()).t(),
    "permuted": lambda T: T.from_numpy(DATA[0].copy()).permute(2, 0, 1),
    "sliced_channels_last": lambda T: T.from_numpy(DATA.copy()).contiguous(memory_format=T.channels_last)[:, 1:],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_bernoulli_with_tensor_p_draws_in_memory_order(layout):
    """x.bernoulli_(p) walks x in memory order (p broadcast alongside); minilora drew in index order."""
    drawn_t, drawn_m = _both(lambda T: LAYOUTS[layout](T).clone().bernoulli_(LAYOUTS[layout](T)))
    np.testing.assert_array_equal(drawn_m.numpy(), drawn_t.numpy())


@pytest.mark.parametrize("layout", ["transposed", "transposed_sliced"])
def test_multinomial_draws_exponentials_in_memory_order(layout):
    """torch's multinomial (one sample, or several without replacement) fills empty_like(input) with
    exponentials: in the input's memory order."""
    make = (LAYOUTS["transposed"] if layout == "transposed"
            else lambda T: T.from_numpy(DATA[0, 0].copy()).t()[1:])
    for k in (1, 3):
        drawn_t, drawn_m = _both(lambda T: T.multinomial(make(T), k))
        np.testing.assert_array_equal(drawn_m.numpy(), drawn_t.numpy())


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "permuted", "sliced_channels_last"])
def test_dropout_and_rrelu_results_are_laid_out_as_torch(layout):
    """Feature dropout is input * noise (the input's order of strides); rrelu's CPU kernel writes a
    contiguous result. minilora answered other strides for both."""
    F = (torch.nn.functional, ml.nn.functional)
    yt, ym = _both(lambda T: F[T is ml].dropout1d(LAYOUTS[layout](T).reshape(
        LAYOUTS[layout](T).shape[0], LAYOUTS[layout](T).shape[1], -1) if layout == "permuted" else
        LAYOUTS[layout](T), 0.5) if LAYOUTS[layout](T).ndim != 4 else F[T is ml].dropout2d(LAYOUTS[layout](T), 0.5))
    np.testing.assert_array_equal(ym.numpy(), yt.numpy())
    try:
        assert ym.stride() == yt.stride()
    except NotImplementedError:
        pass  # (refusing is allowed: answering another layout is not)
    yt, ym = _both(lambda T: F[T is ml].rrelu(LAYOUTS[layout](T) - 0.5, training=True))
    np.testing.assert_array_equal(ym.numpy(), yt.numpy())
    assert ym.stride() == yt.stride()


SIZE_ONE = {  # channels_last tensors with dimensions of size 1: torch's strides are well defined
    "cl (2,3,1,5)": lambda T: T.from_numpy(DATA[:, :, :1].copy()).contiguous(memory_format=T.channels_last),
    "cl (2,3,4,1)": lambda T: T.from_numpy(DATA[..., :1].copy()).contiguous(memory_format=T.channels_last),
    "cl (1,3,4,5)": lambda T: T.from_numpy(DATA[:1].copy()).contiguous(memory_format=T.channels_last),
    "cl3d (1,3,2,1,4)": lambda T: T.from_numpy(DATA5[:1, :, :, :1].copy()).contiguous(
        memory_format=T.channels_last_3d),
    "sigmoid of cl (2,3,1,5)": lambda T: T.from_numpy(DATA[:, :, :1].copy()).contiguous(
        memory_format=T.channels_last).sigmoid(),
    "conv2d to (2,4,1,1)": lambda T: T.nn.functional.conv2d(
        T.from_numpy(DATA[:, :, :3, :3].copy()).contiguous(memory_format=T.channels_last),
        T.from_numpy(DATA.reshape(-1)[:108].reshape(4, 3, 3, 3).copy())),
    "max_pool2d to (2,3,1,1)": lambda T: T.nn.functional.max_pool2d(
        T.from_numpy(DATA[:, :, :2, :2].copy()).contiguous(memory_format=T.channels_last), 2),
    "avg_pool3d": lambda T: T.nn.functional.avg_pool3d(
        T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d), 2),
    "adaptive_max_pool3d": lambda T: T.nn.functional.adaptive_max_pool3d(
        T.from_numpy(DATA5.copy()).contiguous(memory_format=T.channels_last_3d), 1),
}


@pytest.mark.parametrize("name", sorted(SIZE_ONE))
def test_size_one_dimensions_and_3d_pools_answer_torchs_strides(name):
    """stride() refused these (a size-1 dimension) or answered C-contiguous strides torch does not have
    ((4, 1, 1, 1) for conv2d's channels_last (2, 4, 1, 1) result, torch's (4, 1, 4, 4)); the 3-D pools'
    contiguous results were marked unknown. Dropout on them draws torch's mask."""
    yt, ym = _both(SIZE_ONE[name])
    np.testing.assert_allclose(ym.numpy(), yt.numpy(), rtol=1e-5, atol=1e-5)
    assert ym.stride() == yt.stride()
    dt, dm = _both(lambda T: T.nn.functional.dropout((yt, ym)[T is ml], 0.5))
    np.testing.assert_array_equal(dm.numpy() == 0, dt.numpy() == 0)


@pytest.mark.parametrize("pool", ["max_pool2d", "adaptive_max_pool2d"])
def test_pool_indices_are_laid_out_as_torchs(pool):
    """torch's indices lie as its values (channels_last here); minilora answered C-contiguous strides."""
    call = {"max_pool2d": lambda T, x: T.nn.functional.max_pool2d(x, 2, return_indices=True),
            "adaptive_max_pool2d": lambda T, x: T.nn.functional.adaptive_max_pool2d(x, (2, 3), return_indices=True)}
    (_, it), (_, im) = _both(lambda T: call[pool](T, LAYOUTS["channels_last"](T)))
    np.testing.assert_array_equal(im.numpy(), it.numpy())
    assert im.stride() == it.stride()


@pytest.mark.parametrize("op", ["pixel_shuffle", "pixel_unshuffle"])
def test_pixel_shuffles_keep_channels_last(op):
    """torch's CPU kernels write a channels_last result from a channels_last input; minilora's reshape gave
    C order and stride() answered it ((72, 36, 6, 1) for torch's (72, 1, 12, 2)), and a dropout after it drew
    another mask."""
    data = np.arange(2 * 8 * 4 * 4, dtype=np.float32).reshape(2, 8, 4, 4)
    yt, ym = _both(lambda T: getattr(T.nn.functional, op)(
        T.from_numpy(data.copy()).contiguous(memory_format=T.channels_last), 2))
    np.testing.assert_array_equal(ym.numpy(), yt.numpy())
    assert ym.stride() == yt.stride()
    assert ym.grad_fn is None or type(ym.grad_fn).__name__ == type(yt.grad_fn).__name__
    dt, dm = _both(lambda T: T.nn.functional.dropout((yt, ym)[T is ml], 0.5))
    np.testing.assert_array_equal(dm.numpy() == 0, dt.numpy() == 0)
