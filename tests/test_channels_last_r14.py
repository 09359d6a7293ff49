"""channels_last results: stride() and is_contiguous() answer torch's layout, or refuse -- never another one.

torch keeps channels_last through elementwise ops, convolution, pooling and constant padding; NumPy makes
most of those results C-contiguous. minilora lays out what it follows (Function.torch_layout) and marks the
rest unknown (factories.unknown_layout), so stride() refuses rather than report C-contiguous strides
(round 14's module_db sweep found 63 of 123 4-D/5-D module calls answering another layout)."""
import numpy as np
import pytest

import minilora as ml
from minilora.tensor import Function

torch = pytest.importorskip("torch")

SHAPE4, SHAPE5 = (2, 3, 4, 5), (2, 3, 3, 4, 5)


def _pair(shape):
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    fmt, mfmt = ((torch.channels_last, ml.channels_last) if len(shape) == 4
                 else (torch.channels_last_3d, ml.channels_last_3d))
    return (torch.from_numpy(data).contiguous(memory_format=fmt),
            ml.from_numpy(data).contiguous(memory_format=mfmt), fmt, mfmt)


def _weights(*shape):
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return torch.from_numpy(w), ml.from_numpy(w)


W2, W3 = _weights(5, 3, 3, 3), _weights(5, 3, 2, 2, 2)
CALLS = {  # name: (shape, call(F, x, weight index)); torch's F or minilora's
    "sigmoid": (SHAPE4, lambda F, x, i: x.sigmoid()),
    "relu": (SHAPE4, lambda F, x, i: F.relu(x)),
    "tanh_3d": (SHAPE5, lambda F, x, i: x.tanh()),
    "elu": (SHAPE4, lambda F, x, i: F.elu(x)),
    "hardswish": (SHAPE4, lambda F, x, i: F.hardswish(x)),
    "relu6": (SHAPE4, lambda F, x, i: F.relu6(x)),
    "tanhshrink": (SHAPE4, lambda F, x, i: F.tanhshrink(x)),
    "mul_scalar": (SHAPE4, lambda F, x, i: x * 2 + 1),
    "to_float64": (SHAPE4, lambda F, x, i: x.double()),
    "conv2d": (SHAPE4, lambda F, x, i: F.conv2d(x, W2[i], padding=1)),
    "conv3d": (SHAPE5, lambda F, x, i: F.conv3d(x, W3[i])),
    "max_pool2d": (SHAPE4, lambda F, x, i: F.max_pool2d(x, 2)),
    "avg_pool2d": (SHAPE4, lambda F, x, i: F.avg_pool2d(x, 2, padding=1)),
    "adaptive_avg_pool2d": (SHAPE4, lambda F, x, i: F.adaptive_avg_pool2d(x, 3)),
    "adaptive_max_pool2d": (SHAPE4, lambda F, x, i: F.adaptive_max_pool2d(x, (3, 2))),
    "max_pool3d": (SHAPE5, lambda F, x, i: F.max_pool3d(x, 2)),
    "avg_pool3d": (SHAPE5, lambda F, x, i: F.avg_pool3d(x, 2)),
    "constant_pad": (SHAPE4, lambda F, x, i: F.pad(x, (1, 2, 0, 1))),
    "constant_pad_3d": (SHAPE5, lambda F, x, i: F.pad(x, (1, 1, 1, 1, 1, 1), value=0.5)),
    "reflect_pad": (SHAPE4, lambda F, x, i: F.pad(x, (1, 1, 1, 1), mode="reflect")),
    "group_norm": (SHAPE4, lambda F, x, i: F.group_norm(x, 3)),
    "rms_norm": (SHAPE4, lambda F, x, i: F.rms_norm(x, (5,))),
    "softmax": (SHAPE4, lambda F, x, i: F.softmax(x, 1)),
    "pool_then_slice": (SHAPE5, lambda F, x, i: F.avg_pool3d(x, 2)[:, :, 0]),
}
FOLLOWED = {"sigmoid", "relu", "tanh_3d", "elu", "hardswish", "relu6", "tanhshrink", "mul_scalar", "to_float64",
            "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "constant_pad",
            "constant_pad_3d"}  # the ops whose torch layout minilora follows: they must answer


@pytest.mark.parametrize("name", sorted(CALLS))
def test_stride_is_torchs_or_refused(name):
    shape, call = CALLS[name]
    xt, xm, fmt, mfmt = _pair(shape)
    yt, ym = call(torch.nn.functional, xt, 0), call(ml.nn.functional, xm, 1)
    np.testing.assert_allclose(ym.detach().numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    try:
        strides = ym.stride()
    except NotImplementedError:
        assert name not in FOLLOWED, f"{name}: minilora follows torch's layout here, stride() must answer"
        with pytest.raises(NotImplementedError):
            ym.is_contiguous()
        assert ym.contiguous().stride() == yt.contiguous().stride()  # (a C-ordered copy answers)
        return
    assert strides == yt.stride()
    for format, mformat in ((torch.contiguous_format, ml.contiguous_format), (fmt, mfmt)):
        if yt.ndim == xt.ndim:
            assert ym.is_contiguous(memory_format=mformat) == yt.is_contiguous(memory_format=format)


def test_dropout_after_conv_draws_torchs_mask():
    """torch draws a dropout mask in the input's memory order: after a channels_last conv, channels innermost."""
    xt, xm, _, _ = _pair(SHAPE4)
    torch.manual_seed(0)
    yt = torch.nn.functional.dropout(torch.nn.functional.conv2d(xt, W2[0]), 0.5)
    ml.manual_seed(0)
    ym = ml.nn.functional.dropout(ml.nn.functional.conv2d(xm, W2[1]), 0.5)
    np.testing.assert_array_equal(ym.numpy() == 0, yt.numpy() == 0)


def test_contiguous_and_to_memory_format():
    xt, xm, fmt, mfmt = _pair(SHAPE4)
    for yt, ym in ((xt.contiguous(), xm.contiguous()), (xt.to(memory_format=torch.contiguous_format),
                                                          xm.to(memory_format=ml.contiguous_format)),
                   (xt.sigmoid().to(torch.float64, memory_format=fmt), xm.sigmoid().to(ml.float64, memory_format=mfmt))):
        assert ym.stride() == yt.stride()
        assert ym.is_contiguous() == yt.is_contiguous()
        assert ym.is_contiguous(memory_format=mfmt) == yt.is_contiguous(memory_format=fmt)


class _Unruled(Function):
    """An op minilora has no layout rule for (Function.torch_layout None): its channels_last result is unknown."""

    @staticmethod
    def forward(ctx, a):
        return a.copy()  # (C order: NumPy's, not torch's)


def test_clone_of_an_unknown_layout_stays_unknown():
    """clone() keeps its input's layout (preserve_format): of a result whose layout minilora does not know,
    the copy's is not known either; clone(memory_format=contiguous_format) and contiguous() are."""
    _, xm, _, mfmt = _pair(SHAPE4)
    ym = _Unruled.apply(xm)  # (an op without a layout rule; reflect pad's was used before round 16, roll's before 17)
    with pytest.raises(NotImplementedError):
        ym.clone().stride()
    assert ym.clone(memory_format=ml.contiguous_format).stride() == (60, 20, 5, 1)
    assert ym.clone(memory_format=mfmt).stride() == (60, 1, 15, 3)
