"""Pools, upsamplings and mvlgamma refuse the dtypes torch's kernels refuse, with torch's NotImplementedError naming
the kernel: complex inputs were averaged (avg/adaptive pools, 'area'), copied (nearest) or compared in NumPy's order
(max pools), integer inputs max-pooled where torch's 1-D kernel takes floats only, and a 16-bit avg_pool3d computed,
all silently, where torch raises."""
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _calls(L):
    F = L.nn.functional
    return {
        "avg_pool1d": lambda x: F.avg_pool1d(x[0, 0], 2),
        "avg_pool2d": lambda x: F.avg_pool2d(x[0], 2),
        "avg_pool3d": lambda x: F.avg_pool3d(x, 2),
        "AvgPool1d": lambda x: L.nn.AvgPool1d(2)(x[0, 0]),
        "adaptive_avg_pool1d": lambda x: F.adaptive_avg_pool1d(x[0, 0], 2),
        "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x[0], 2),
        "adaptive_avg_pool3d": lambda x: F.adaptive_avg_pool3d(x, 2),
        "max_pool1d": lambda x: F.max_pool1d(x[0, 0], 2),
        "max_pool1d(return_indices=True)": lambda x: F.max_pool1d(x[0, 0], 2, return_indices=True)[0],
        "max_pool2d": lambda x: F.max_pool2d(x[0], 2),
        "max_pool3d": lambda x: F.max_pool3d(x, 2),
        "adaptive_max_pool1d": lambda x: F.adaptive_max_pool1d(x[0, 0], 2),
        "adaptive_max_pool2d": lambda x: F.adaptive_max_pool2d(x[0], 2),
        "adaptive_max_pool3d": lambda x: F.adaptive_max_pool3d(x, 2),
        "lp_pool1d": lambda x: F.lp_pool1d(x[0, 0], 2, 2),
        "lp_pool2d": lambda x: F.lp_pool2d(x[0], 2, 2),
        "nearest 1-D": lambda x: F.interpolate(x[0, 0], scale_factor=2),
        "nearest 2-D": lambda x: F.interpolate(x[0], scale_factor=2),
        "Upsample nearest-exact 2-D": lambda x: L.nn.Upsample(scale_factor=2, mode="nearest-exact")(x[0]),
        "nearest 3-D": lambda x: F.interpolate(x, scale_factor=2),
        "linear": lambda x: F.interpolate(x[0, 0], scale_factor=2, mode="linear"),
        "bilinear": lambda x: F.interpolate(x[0], scale_factor=2, mode="bilinear"),
        "bicubic": lambda x: F.interpolate(x[0], scale_factor=2, mode="bicubic"),
        "trilinear": lambda x: F.interpolate(x, scale_factor=2, mode="trilinear"),
        "area": lambda x: F.interpolate(x[0], size=(1, 2), mode="area"),
        "unfold": lambda x: F.unfold(x[0], 2),
        "fold": lambda x: F.fold(x.reshape(1, 4, 4), (3, 3), 2),
        "mvlgamma": lambda x: L.mvlgamma(x + 3, 2),
    }


def _outcome(call, x):
    """('ok', dtype, shape) or (error type, its first line)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call(x)
    except Exception as error:  # noqa: BLE001  (the refusal is what is compared)
        return type(error).__name__, str(error).split("\n")[0]
    return "ok", str(result.dtype).replace("torch.", ""), tuple(result.shape)


# torch rounds a uint8 image's bilinear/bicubic interpolation its own way; minilora refuses it by name
MINILORA_REFUSES = {("uint8", "bilinear"), ("uint8", "bicubic")}


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool", "complex64", "complex128", "float16",
                                   "bfloat16"])
def test_pools_and_upsamplings_take_and_refuse_the_dtypes_torch_does(dtype):
    values = np.arange(1, 17.0).reshape(1, 1, 2, 2, 4)
    ours, theirs = _calls(ml), _calls(torch)
    x_ours, x_theirs = ml.tensor(values).to(getattr(ml, dtype)), torch.from_numpy(values).to(getattr(torch, dtype))
    differ = {name: (_outcome(theirs[name], x_theirs), _outcome(ours[name], x_ours)) for name in theirs
              if (dtype, name) not in MINILORA_REFUSES}
    assert {name: pair for name, pair in differ.items() if pair[0] != pair[1]} == {}


def test_max_pool1d_of_integers_runs_max_pool2d_only_with_indices():
    """torch's max_pool1d has a 1-D kernel of its own (floats only) and runs max_pool2d's (integers too) where the
    indices are asked for."""
    x = ml.tensor([[[3, 1, 4, 1, 5, 9]]])
    with pytest.raises(NotImplementedError, match="\"max_pool1d_impl\" not implemented for 'Long'"):
        ml.nn.functional.max_pool1d(x, 2)
    values, indices = ml.nn.functional.max_pool1d(x, 2, return_indices=True)
    assert values.tolist() == [[[3, 4, 9]]] and indices.tolist() == [[[0, 2, 5]]]
    z = ml.tensor(np.array([[[1 + 1j, 2, 3, 4]]]))
    with pytest.raises(NotImplementedError, match="\"max_pool2d\" not implemented for 'ComplexDouble'"):
        ml.nn.functional.max_pool1d(z, 2, return_indices=True)
