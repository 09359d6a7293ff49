"""torch.nn / torch.nn.functional conformance, round 4: tutorial-style calls run in torch 2.13 and
minilora side by side: normalized_shape as a bare int, attention with is_causal and a mask together,
16-bit pooling gradients bit for bit, bfloat16 batch norm, interpolate / Upsample, the losses
tutorials reach for, and nn.init.sparse_.
"""
import numpy as np
import pytest

import minilora as ml
from minilora import nn
from minilora.nn import functional as F
from minilora.nn import init
from minilora.testing import grad_check

torch = pytest.importorskip("torch")
TF, tnn, tinit = torch.nn.functional, torch.nn, torch.nn.init

from test_torch_conformance_r3_nn import rng, same_error  # noqa: E402,F401  (rng: a fixture, seed 0)


def _np(x):
    x = x.detach() if hasattr(x, "detach") else x
    if isinstance(x, torch.Tensor):
        return x.float().numpy() if x.dtype in (torch.bfloat16, torch.float16) else x.numpy()
    return np.asarray(x.numpy(force=True), dtype=np.float32) if x.dtype.itemsize == 2 else x.numpy(force=True)


def pair(array, requires_grad=False, dtype="float64"):
    """The same values as a minilora and a torch tensor (floats as ``dtype``)."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        ours = ml.tensor(array.astype(np.float64)).to(getattr(ml, dtype))
        theirs = torch.tensor(array.astype(np.float64)).to(getattr(torch, dtype))
        return ours.requires_grad_(requires_grad), theirs.requires_grad_(requires_grad)
    return ml.tensor(array.copy()), torch.tensor(array.copy())


def check(ml_fn, torch_fn, *arrays, dtype="float64", rtol=1e-10, atol=1e-12, exact=False, constant=()):
    """Run both on the same inputs; compare outputs (dtype and values) and every floating input's
    gradient (through a fixed random projection of the output). ``exact``: bit for bit. The arrays
    at the positions in ``constant`` do not require grad."""
    ours, theirs = zip(*(pair(a, np.asarray(a).dtype.kind == "f" and i not in constant, dtype)
                         for i, a in enumerate(arrays)))
    out_ml, out_t = ml_fn(*ours), torch_fn(*theirs)
    assert str(out_ml.dtype) == str(out_t.dtype).replace("torch.", ""), (out_ml.dtype, out_t.dtype)
    assert tuple(out_ml.shape) == tuple(out_t.shape)
    compare = np.testing.assert_array_equal if exact else \
        lambda a, b, err_msg: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=err_msg)
    compare(_np(out_ml), _np(out_t), err_msg="forward")
    if not out_t.requires_grad:
        return out_ml
    seed = np.random.default_rng(1).standard_normal(tuple(out_t.shape))
    seed_ml, seed_t = pair(seed, dtype=dtype)
    (out_ml * seed_ml).sum().backward()
    (out_t * seed_t).sum().backward()
    for i, (m, t) in enumerate(zip(ours, theirs)):
        if t.grad is not None:
            compare(_np(m.grad), _np(t.grad), err_msg=f"grad of input {i}")
    return out_ml


# ---- normalized_shape: a bare int is torch's TypeError in F (only the modules take one) -------------
@pytest.mark.parametrize("fn", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("shape", [4, np.int64(4), (4.0,), (True,), [2, 4.0]], ids=repr)
def test_norm_normalized_shape_int_or_float_is_torchs_type_error(rng, fn, shape):
    x, tx = pair(rng.standard_normal((3, 2, 4)))
    message = same_error(lambda: getattr(F, fn)(x, shape), lambda: getattr(TF, fn)(tx, shape))
    assert "normalized_shape" in message and "tuple of ints" in message
    same_error(lambda: getattr(F, fn)(x, normalized_shape=shape), lambda: getattr(TF, fn)(tx, normalized_shape=shape))


@pytest.mark.parametrize("fn", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("shape", [(4,), [4], [2, 4], (np.int64(4),)], ids=repr)
def test_norm_normalized_shape_sequences_work_as_torch(rng, fn, shape):
    check(lambda x: getattr(F, fn)(x, shape), lambda x: getattr(TF, fn)(x, shape), rng.standard_normal((3, 2, 4)))


@pytest.mark.parametrize("module", ["LayerNorm", "RMSNorm"])
def test_norm_modules_still_take_an_int_as_torch(rng, module):
    ours, theirs = getattr(nn, module)(4).double(), getattr(tnn, module)(4).double()
    assert tuple(ours.normalized_shape) == tuple(theirs.normalized_shape) == (4,)
    check(ours, theirs, rng.standard_normal((3, 4)))


# ---- scaled_dot_product_attention: is_causal and attn_mask together -------------------------------
_CAUSAL_WITH_MASK = {  # name: (query, key, value shapes, mask shape, options)
    "4d": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (3, 5), {}),
    "4d-mask4d": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (2, 1, 3, 5), {}),
    "4d-square": ((1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 5), {}),
    "4d-more-queries": ((1, 2, 5, 4), (1, 2, 3, 4), (1, 2, 3, 4), (5, 3), {}),  # rows with no key left
    "gqa": ((1, 4, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (3, 5), {"enable_gqa": True}),
    "scale": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (3, 5), {"scale": 0.3}),
    # torch's other path raises: 3-D / 5-D inputs, dropout, a 3-D mask, broadcast batches or heads,
    # a value head size of its own; a 1-D mask is the IndexError of the 4-D kernel
    "3d": ((2, 3, 4), (2, 5, 4), (2, 5, 4), (3, 5), {}),
    "5d": ((1, 1, 2, 3, 4), (1, 1, 2, 5, 4), (1, 1, 2, 5, 4), (3, 5), {}),
    "dropout": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (3, 5), {"dropout_p": 0.5}),
    "mask3d": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (2, 3, 5), {}),
    "mask1d": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (5,), {}),
    "batch-broadcast": ((2, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (3, 5), {}),
    "heads-broadcast": ((1, 4, 3, 4), (1, 1, 5, 4), (1, 1, 5, 4), (3, 5), {}),
    "value-width": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 6), (3, 5), {}),
}


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("case", list(_CAUSAL_WITH_MASK))
def test_sdpa_is_causal_with_attn_mask_as_torch(rng, case, mask_kind):
    q_shape, k_shape, v_shape, mask_shape, options = _CAUSAL_WITH_MASK[case]
    mask = rng.random(mask_shape) > 0.3 if mask_kind == "bool" else rng.standard_normal(mask_shape)
    m, tm = pair(mask)
    arrays = [rng.standard_normal(s) for s in (q_shape, k_shape, v_shape)]
    ours = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, m, is_causal=True, **options)  # noqa: E731
    theirs = lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, tm, is_causal=True, **options)  # noqa: E731
    try:
        theirs(*(torch.tensor(a) for a in arrays))
    except Exception:
        same_error(lambda: ours(*(ml.tensor(a) for a in arrays)), lambda: theirs(*(torch.tensor(a) for a in arrays)))
        return
    check(ours, theirs, *arrays)
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=0.0, is_causal=True,
                                                         **options),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=tm, dropout_p=0.0, is_causal=True,
                                                          **options), *arrays)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_sdpa_is_causal_with_attn_mask_in_every_float_dtype(rng, dtype):
    arrays = [rng.standard_normal((2, 2, 4, 8)) for _ in range(3)]
    m, tm = pair(rng.random((4, 4)) > 0.3)
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, m, is_causal=True),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, tm, is_causal=True), *arrays, dtype=dtype,
          rtol=1e-2 if dtype != "float32" else 1e-5, atol=1e-2 if dtype != "float32" else 1e-6)


# ---- pooling: 16-bit gradients add up in 16 bits, as torch's CPU kernels --------------------------
_POOLS = {  # name: a call that works the same on minilora's F and torch's
    "max_pool2d-overlapping": lambda F, x: F.max_pool2d(x, 3, 1),
    "max_pool2d-padded": lambda F, x: F.max_pool2d(x, 3, 2, 1),
    "max_pool2d-ceil": lambda F, x: F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True),
    "max_pool2d-dilated": lambda F, x: F.max_pool2d(x, 2, 1, 0, 2),
    "max_pool2d-unbatched": lambda F, x: F.max_pool2d(x[0], (3, 2), (1, 2)),
    "max_pool1d": lambda F, x: F.max_pool1d(x[:, :, 0], 3, 1, 1),
    "avg_pool2d-overlapping": lambda F, x: F.avg_pool2d(x, 3, 1),
    "avg_pool2d-padded": lambda F, x: F.avg_pool2d(x, 3, 2, 1),
    "avg_pool2d-no-pad-count": lambda F, x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    "avg_pool2d-ceil": lambda F, x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
    "avg_pool2d-ceil-no-pad-count": lambda F, x: F.avg_pool2d(x, (3, 2), (2, 1), (1, 0), True, False),
    "avg_pool2d-divisor": lambda F, x: F.avg_pool2d(x, 3, 1, divisor_override=5),
    "avg_pool2d-unbatched": lambda F, x: F.avg_pool2d(x[0], 2, 1),
    "avg_pool1d": lambda F, x: F.avg_pool1d(x[:, :, 0], 3, 1, 1),
    "adaptive_avg_pool2d": lambda F, x: F.adaptive_avg_pool2d(x, (3, 5)),
    "adaptive_avg_pool2d-int": lambda F, x: F.adaptive_avg_pool2d(x, 4),
    "adaptive_avg_pool2d-none": lambda F, x: F.adaptive_avg_pool2d(x, (None, 3)),
    "adaptive_avg_pool2d-unbatched": lambda F, x: F.adaptive_avg_pool2d(x[0], output_size=(2, 3)),
}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
@pytest.mark.parametrize("pool", list(_POOLS))
def test_pooling_forward_and_gradient_bit_for_bit_as_torch(rng, pool, dtype):
    """torch's CPU pooling backward adds each output's gradient (divided by the divisor, rounded, for
    the averages) into the input's gradient in the input's dtype, output by output: in 16 bits
    every addition rounds. minilora adds in the same order with the same roundings (and sums a
    window element by element, as torch's forward): the same bits in every float dtype."""
    check(lambda x: _POOLS[pool](F, x), lambda x: _POOLS[pool](TF, x), rng.standard_normal((2, 3, 7, 8)) * 3,
          dtype=dtype, exact=True)


def test_avg_pool2d_divisor_override_zero_is_torchs_error(rng):
    x, tx = pair(rng.standard_normal((1, 1, 4, 4)))
    same_error(lambda: F.avg_pool2d(x, 2, divisor_override=0), lambda: TF.avg_pool2d(tx, 2, divisor_override=0))


# ---- batch_norm in bfloat16 / float16 --------------------------------------------------------------
def _batch_norm_pair(rng, shape, dtype, params_dtype, affine=True):
    x = rng.standard_normal(shape) * 3 + 1
    c = shape[1]
    arrays = {"running_mean": rng.standard_normal(c), "running_var": rng.random(c) + 0.5}
    if affine:
        arrays.update(weight=rng.standard_normal(c), bias=rng.standard_normal(c))
    ours, theirs = {}, {}
    for name, a in arrays.items():
        grad = name in ("weight", "bias")
        ours[name], theirs[name] = pair(a, grad, params_dtype)
    return pair(x, True, dtype), ours, theirs


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("params_dtype", ["same", "float32"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (300, 3), (2, 3, 129)], ids=str)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_batch_norm_16bit_as_torch_running_stats_included(rng, dtype, params_dtype, training, shape, affine,
                                                          two_threads):
    """torch's CPU batch norm with everything in bfloat16 (or float16) keeps the batch mean and 1/std
    in 16 bits and updates the running statistics in 16-bit arithmetic: minilora gives its bits, the
    output, every gradient and the updated running_mean / running_var. With float32 parameters
    (torch's "mixed" kernel) it computes in float32 and rounds once. (Both on 2 threads: a [N, C] batch is
    summed by torch's channels-last kernel in chunks per thread, which minilora's sums follow for its own
    thread count, tests/test_norm_bits_r25.py: torch on 1 thread, minilora on 2, a float16 (300, 3) output
    was a subnormal ulp off.)"""
    params_dtype = dtype if params_dtype == "same" else params_dtype
    (x, tx), ours, theirs = _batch_norm_pair(rng, shape, dtype, params_dtype, affine)
    exact = params_dtype == dtype  # float32 parameters: torch sums in its own order (float32 last bits)
    same = np.testing.assert_array_equal if exact else \
        lambda a, b, err_msg="": np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-5, err_msg=err_msg)
    for momentum in (0.1, 0.3):
        out = F.batch_norm(x, ours["running_mean"], ours["running_var"], ours.get("weight"), ours.get("bias"),
                           training, momentum, 1e-5)
        expected = TF.batch_norm(tx, theirs["running_mean"], theirs["running_var"], theirs.get("weight"),
                                 theirs.get("bias"), training=training, momentum=momentum, eps=1e-5)
        assert str(out.dtype) == dtype
        np.testing.assert_array_equal(_np(out), _np(expected))  # float32 parameters too (autocast's case)
        for name in ("running_mean", "running_var"):
            assert str(ours[name].dtype) == params_dtype
            same(_np(ours[name]), _np(theirs[name]), err_msg=name)
        upstream = np.random.default_rng(2).standard_normal(shape)
        (out * pair(upstream, dtype=dtype)[0]).sum().backward()
        (expected * pair(upstream, dtype=dtype)[1]).sum().backward()
        for mine, theirs_t in [(x, tx)] + [(ours[n], theirs[n]) for n in ("weight", "bias") if n in ours]:
            same(_np(mine.grad), _np(theirs_t.grad))
            mine.grad, theirs_t.grad = None, None


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_batch_norm_module_in_16_bits_trains_and_evaluates_as_torch(rng, dtype):
    ours, theirs = nn.BatchNorm2d(3).to(getattr(ml, dtype)), tnn.BatchNorm2d(3).to(getattr(torch, dtype))
    for step in range(3):
        x = rng.standard_normal((4, 3, 5, 5)) * (step + 1)
        mine, expected = ours(pair(x, dtype=dtype)[0]), theirs(pair(x, dtype=dtype)[1])
        np.testing.assert_array_equal(_np(mine), _np(expected))
    for name in ("running_mean", "running_var"):
        np.testing.assert_array_equal(_np(getattr(ours, name)), _np(getattr(theirs, name)), err_msg=name)
    ours.eval(), theirs.eval()
    x = rng.standard_normal((2, 3, 5, 5))
    np.testing.assert_array_equal(_np(ours(pair(x, dtype=dtype)[0])), _np(theirs(pair(x, dtype=dtype)[1])))


@pytest.mark.parametrize("stats, params", [("bfloat16", "float32"), ("float32", "bfloat16")])
def test_batch_norm_16bit_with_mixed_parameter_dtypes_is_torchs_error(rng, stats, params):
    (x, tx), ours, theirs = _batch_norm_pair(rng, (4, 3, 2), "bfloat16", stats)
    w, tw = pair(rng.standard_normal(3), dtype=params)
    same_error(lambda: F.batch_norm(x, ours["running_mean"], ours["running_var"], w, None, True),
               lambda: TF.batch_norm(tx, theirs["running_mean"], theirs["running_var"], tw, None, True))


# ---- F.interpolate and nn.Upsample -----------------------------------------------------------------
_RESIZES = [{"scale_factor": 2}, {"scale_factor": 1.7}, {"scale_factor": 0.5}, {"size": 7}, {"size": 3},
            {"scale_factor": 2.5, "recompute_scale_factor": True}, {"scale_factor": 1 / 3}]
_MODES = [((2, 3, 5), "nearest"), ((2, 3, 5), "nearest-exact"), ((2, 3, 5), "linear"), ((2, 3, 5), "area"),
          ((2, 3, 5, 4), "nearest"), ((2, 3, 5, 4), "nearest-exact"), ((2, 3, 5, 4), "bilinear"),
          ((2, 3, 5, 4), "area"), ((1, 2, 3, 4, 5), "nearest"), ((1, 2, 3, 4, 5), "trilinear")]


@pytest.mark.parametrize("resize", _RESIZES, ids=lambda r: ",".join(f"{k}={v:.3g}" for k, v in r.items()))
@pytest.mark.parametrize("shape, mode", _MODES, ids=lambda v: v if isinstance(v, str) else f"{len(v)}d")
@pytest.mark.parametrize("align_corners", [None, True, False])
def test_interpolate_as_torch_forward_and_gradient_in_float64(rng, shape, mode, resize, align_corners):
    if align_corners is not None and "linear" not in mode:
        return  # a ValueError in both: test_interpolate_errors_are_torchs
    kwargs = dict(resize, mode=mode, align_corners=align_corners)
    check(lambda x: F.interpolate(x, **kwargs), lambda x: TF.interpolate(x, **kwargs), rng.standard_normal(shape))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("shape, mode", _MODES, ids=lambda v: v if isinstance(v, str) else f"{len(v)}d")
def test_interpolate_in_narrow_dtypes_within_one_rounding_of_torch(rng, dtype, shape, mode):
    """Nearest is exact; the linear modes blend in float32 and round once (torch's own 16-bit
    kernel is up to one 16-bit rounding away from that: compared within it)."""
    tol = {"float32": 1e-6, "bfloat16": 2 ** -7, "float16": 2 ** -10}[dtype]
    for resize in ({"scale_factor": 2}, {"size": 7}):
        check(lambda x: F.interpolate(x, mode=mode, **resize), lambda x: TF.interpolate(x, mode=mode, **resize),
              rng.standard_normal(shape), dtype=dtype, rtol=tol, atol=4 * tol, exact=mode.startswith("nearest")
              and dtype != "float32")


def test_interpolate_gradients_check_in_float64(rng):
    x = ml.tensor(rng.standard_normal((1, 2, 3, 4)), requires_grad=True)
    grad_check(lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), x)
    grad_check(lambda x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=True), x)
    grad_check(lambda x: F.interpolate(x, scale_factor=2), x)
    grad_check(lambda x: F.interpolate(x[0], size=6, mode="linear"), x)


@pytest.mark.parametrize("call", [
    lambda F, x: F.interpolate(x, size=4, scale_factor=2),
    lambda F, x: F.interpolate(x),
    lambda F, x: F.interpolate(x, scale_factor=2, align_corners=True),
    lambda F, x: F.interpolate(x, size=(2, 3, 4)),
    lambda F, x: F.interpolate(x, scale_factor=(2, 3, 4)),
    lambda F, x: F.interpolate(x, scale_factor=2, mode="linear"),
    lambda F, x: F.interpolate(x, scale_factor=2, mode="trilinear"),
    lambda F, x: F.interpolate(x, scale_factor=2, mode="cubic"),
    lambda F, x: F.interpolate(x[0, 0], scale_factor=2),
    lambda F, x: F.interpolate(x, size=4, recompute_scale_factor=True),
    lambda F, x: F.interpolate(x, scale_factor=0.1),
    lambda F, x: F.interpolate(x, size=(0, 2)),
], ids=["size-and-scale", "neither", "align-nearest", "size-rank", "scale-rank", "linear-4d", "trilinear-4d",
        "unknown-mode", "2d-input", "recompute-with-size", "empty-output", "zero-size"])
def test_interpolate_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((1, 2, 5, 4)))
    same_error(lambda: call(F, x), lambda: call(TF, tx))


def test_interpolate_refuses_what_minilora_does_not_implement(rng):
    x = ml.tensor(rng.standard_normal((1, 2, 5, 4)))
    with pytest.raises(NotImplementedError, match="minilora"):  # (bicubic is implemented: test_nn_fuzz_r5)
        F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True)


@pytest.mark.parametrize("fn, kwargs", [("upsample", {"scale_factor": 2, "mode": "bilinear"}),
                                        ("upsample_nearest", {"size": 6}),
                                        ("upsample_bilinear", {"scale_factor": 1.5})])
def test_deprecated_upsample_functions_warn_and_resize_as_torch(rng, fn, kwargs):
    with pytest.warns(UserWarning, match="deprecated"):
        check(lambda x: getattr(F, fn)(x, **kwargs), lambda x: getattr(TF, fn)(x, **kwargs),
              rng.standard_normal((1, 2, 3, 4)))


@pytest.mark.parametrize("make", [
    lambda nn: nn.Upsample(scale_factor=2), lambda nn: nn.Upsample(size=(3, 7), mode="bilinear"),
    lambda nn: nn.Upsample(scale_factor=(1.5, 2), mode="bilinear", align_corners=True),
    lambda nn: nn.Upsample(None, 3, "nearest"), lambda nn: nn.UpsamplingNearest2d(scale_factor=2),
    lambda nn: nn.UpsamplingBilinear2d(size=6), lambda nn: nn.UpsamplingBilinear2d(scale_factor=1.5)])
def test_upsample_modules_as_torch(rng, make):
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    assert ours.scale_factor == theirs.scale_factor and ours.align_corners == theirs.align_corners
    check(ours, theirs, rng.standard_normal((2, 3, 4, 5)))


# ---- the losses tutorials reach for ----------------------------------------------------------------
_REDUCTIONS = [{}, {"reduction": "mean"}, {"reduction": "sum"}, {"reduction": "none"}, {"size_average": False},
               {"reduce": False}, {"size_average": True, "reduce": True}, {"size_average": False, "reduce": True}]


def _loss_inputs(rng, name):
    x = rng.standard_normal((4, 5))
    signs = np.sign(rng.standard_normal((4, 5)))
    return {"soft_margin_loss": ([x, signs], ()),
            "hinge_embedding_loss": ([x, signs], (0.7,)),
            "poisson_nll_loss": ([x, rng.integers(0, 5, (4, 5)).astype(float)], ()),
            "multilabel_soft_margin_loss": ([x, (signs > 0).astype(float)], ()),
            "multi_margin_loss": ([x, rng.integers(0, 5, 4)], ()),
            "margin_ranking_loss": ([x[:, 0], x[:, 1], signs[:, 0]], (0.2,)),
            "triplet_margin_loss": ([x, rng.standard_normal((4, 5)), rng.standard_normal((4, 5))], ()),
            "cosine_embedding_loss": ([x, rng.standard_normal((4, 5)), signs[:, 0]], (0.1,)),
            "kl_div": ([np.log(rng.dirichlet(np.ones(5), 4)), rng.dirichlet(np.ones(5), 4)], ())}[name]


_LOSSES = ["soft_margin_loss", "hinge_embedding_loss", "poisson_nll_loss", "multilabel_soft_margin_loss",
           "multi_margin_loss", "margin_ranking_loss", "triplet_margin_loss", "cosine_embedding_loss", "kl_div"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # kl_div's 'mean', the legacy arguments
@pytest.mark.parametrize("reduction", _REDUCTIONS, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()) or "default")
@pytest.mark.parametrize("name", _LOSSES)
def test_losses_every_reduction_spelling_as_torch(rng, name, reduction):
    arrays, extra = _loss_inputs(rng, name)
    check(lambda *t: getattr(F, name)(*t, *extra, **reduction), lambda *t: getattr(TF, name)(*t, *extra, **reduction),
          *arrays, constant=(1,) if name == "soft_margin_loss" else ())


def test_soft_margin_loss_target_that_requires_grad_is_torchs_error(rng):
    (x, tx), (y, ty) = pair(rng.standard_normal(4), True), pair(np.sign(rng.standard_normal(4)), True)
    message = same_error(lambda: F.soft_margin_loss(x, y), lambda: TF.soft_margin_loss(tx, ty))
    assert "target" in message


@pytest.mark.parametrize("kwargs", [{"log_input": False}, {"full": True}, {"log_input": False, "full": True, "eps": 1e-3}])
def test_poisson_nll_loss_options_as_torch(rng, kwargs):
    rates = np.abs(rng.standard_normal((4, 5))) + 0.1
    counts = rng.integers(0, 6, (4, 5)).astype(float)
    check(lambda x, y: F.poisson_nll_loss(x, y, **kwargs), lambda x, y: TF.poisson_nll_loss(x, y, **kwargs), rates, counts)


@pytest.mark.parametrize("var_shape", [(4, 5), (4, 1), (4,), (1, 5)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll_loss_as_torch(rng, var_shape, reduction, full):
    mean, target = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    var = rng.random(var_shape) + 1e-7 * (rng.random(var_shape) < 0.3)  # some below eps: clamped
    check(lambda m, t, v: F.gaussian_nll_loss(m, t, v, full, reduction=reduction),
          lambda m, t, v: TF.gaussian_nll_loss(m, t, v, full, reduction=reduction), mean, target, var, rtol=1e-9)
    check(lambda m, t: F.gaussian_nll_loss(m, t, 0.5, full=full, eps=1e-3, reduction=reduction),
          lambda m, t: TF.gaussian_nll_loss(m, t, 0.5, full=full, eps=1e-3, reduction=reduction), mean, target)


def test_weighted_margin_losses_as_torch(rng):
    x, labels, w = rng.standard_normal((4, 5)), rng.integers(0, 5, 4), rng.random(5)
    for p, margin in ((1, 1.0), (2, 0.5)):
        check(lambda x, w: F.multi_margin_loss(x, ml.tensor(labels), p, margin, w),
              lambda x, w: TF.multi_margin_loss(x, torch.tensor(labels), p, margin, w), x, w, constant=(1,))
    (w_ml, w_t), (x_ml, x_t) = pair(w, True), pair(x)
    same_error(lambda: F.multi_margin_loss(x_ml, ml.tensor(labels), weight=w_ml),
               lambda: TF.multi_margin_loss(x_t, torch.tensor(labels), weight=w_t))
    check(lambda x, w: F.multilabel_soft_margin_loss(x, ml.tensor((x.numpy() > 0) * 1.0), weight=w),
          lambda x, w: TF.multilabel_soft_margin_loss(x, torch.tensor((x.detach().numpy() > 0) * 1.0), weight=w), x, w)
    check(lambda x: F.multi_margin_loss(x, ml.tensor(2)), lambda x: TF.multi_margin_loss(x, torch.tensor(2)), x[0])


@pytest.mark.parametrize("call", [
    lambda F, lib, x: F.multi_margin_loss(x, lib.tensor([0, 1, 7, 2])),
    lambda F, lib, x: F.multi_margin_loss(x, lib.tensor([0, 1, 2])),
    lambda F, lib, x: F.multi_margin_loss(x, lib.tensor([0, 1, 2, 3]), p=3),
    lambda F, lib, x: F.multi_margin_loss(x, lib.tensor([0, 1, 2, 3]), weight=lib.ones(2, 5)),
    lambda F, lib, x: F.gaussian_nll_loss(x, x, -lib.ones(4, 5)),
    lambda F, lib, x: F.gaussian_nll_loss(x, x, lib.ones(3, 5)),
    lambda F, lib, x: F.gaussian_nll_loss(x, x, -1.0),
    lambda F, lib, x: F.gaussian_nll_loss(x, x, lib.ones(4, 5), reduction="foo"),
    lambda F, lib, x: F.soft_margin_loss(x, x, reduction="foo"),
    lambda F, lib, x: F.poisson_nll_loss(x, x, reduction="foo"),
    lambda F, lib, x: F.multilabel_soft_margin_loss(x, x, reduction="foo"),
], ids=["target-out-of-range", "target-size", "p=3", "weight-2d", "negative-var", "var-shape", "negative-float-var",
        "gaussian-reduction", "soft-margin-reduction", "poisson-reduction", "multilabel-reduction"])
def test_loss_errors_are_torchs(rng, call):
    x = rng.standard_normal((4, 5))
    same_error(lambda: call(F, ml, ml.tensor(x)), lambda: call(TF, torch, torch.tensor(x)))


@pytest.mark.parametrize("make, n_inputs", [
    (lambda nn, w: nn.SoftMarginLoss(), 2), (lambda nn, w: nn.HingeEmbeddingLoss(margin=0.5, reduction="sum"), 2),
    (lambda nn, w: nn.PoissonNLLLoss(log_input=True, full=True), 2), (lambda nn, w: nn.GaussianNLLLoss(full=True), 3),
    (lambda nn, w: nn.MultiLabelSoftMarginLoss(weight=w, reduction="none"), 2),
    (lambda nn, w: nn.MultiMarginLoss(p=2, margin=0.5, weight=w), 2)])
def test_loss_modules_as_torch(rng, make, n_inputs):
    w = rng.random(5)
    ours, theirs = make(nn, ml.tensor(w)), make(tnn, torch.tensor(w))
    assert repr(ours) == repr(theirs)
    x = rng.standard_normal((4, 5))
    target = rng.integers(0, 5, 4) if isinstance(theirs, tnn.MultiMarginLoss) else \
        (rng.random((4, 5)) > 0.5) * 1.0 if isinstance(theirs, tnn.MultiLabelSoftMarginLoss) else \
        rng.integers(2, 5, (4, 5)).astype(float)
    extra = [rng.random((4, 5)) + 0.1] if n_inputs == 3 else []
    check(lambda x, *v: ours(x, ml.tensor(target), *v), lambda x, *v: theirs(x, torch.tensor(target), *v), x, *extra)


@pytest.mark.parametrize("name, args", [
    ("soft_margin_loss", lambda x, y: (x, y.sign())), ("hinge_embedding_loss", lambda x, y: (x, y.sign())),
    ("poisson_nll_loss", lambda x, y: (x, y.abs())), ("multilabel_soft_margin_loss", lambda x, y: (x, (y > 0) * 1.0)),
    ("gaussian_nll_loss", lambda x, y: (x, y, (y * y + 0.5).detach()))])
def test_new_losses_gradient_check_in_float64(rng, name, args):
    x = ml.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    y = ml.tensor(rng.standard_normal((3, 4)))
    grad_check(lambda x: getattr(F, name)(*args(x, y)), x)
    var = ml.tensor(rng.random((3, 4)) + 0.5, requires_grad=True)
    grad_check(lambda v: F.gaussian_nll_loss(y, y * 0.5, v), var)
    labels = ml.tensor(rng.integers(0, 4, 3))
    grad_check(lambda x: F.multi_margin_loss(x, labels, p=2, margin=0.3), x)


# ---- nn.init.sparse_ -------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.35, 1.0])
def test_init_sparse_zeros_per_column_and_scale_as_torch(sparsity):
    """The random draws differ (NumPy's generator): the structure is torch's -- ceil(sparsity * rows)
    zeros in every column, the rest N(0, std); same shape, dtype, in place, same return."""
    ours, theirs = ml.empty(40, 30), torch.empty(40, 30)
    assert init.sparse_(ours, sparsity, std=0.5) is ours and tinit.sparse_(theirs, sparsity, std=0.5) is theirs
    for w in (ours.numpy(), theirs.numpy()):
        assert ((w == 0).sum(0) == int(np.ceil(sparsity * 40))).all()
    kept = ours.numpy()[ours.numpy() != 0]
    if kept.size > 100:
        assert 0.4 < kept.std() < 0.6


def test_init_sparse_refuses_what_torch_refuses():
    same_error(lambda: init.sparse_(ml.empty(3), 0.1), lambda: tinit.sparse_(torch.empty(3), 0.1))
    same_error(lambda: init.sparse_(ml.empty(2, 3, 4), 0.1), lambda: tinit.sparse_(torch.empty(2, 3, 4), 0.1))


# ---- sweep: the losses minilora had, every reduction spelling, every float dtype, target dtypes ------
def _older_loss_inputs(rng, name):
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    probabilities = 1 / (1 + np.exp(-x))
    labels = rng.integers(0, 4, 6)
    return {"cross_entropy": [x, labels], "nll_loss": [np.log(probabilities), labels], "mse_loss": [x, y],
            "l1_loss": [x, y], "smooth_l1_loss": [x, y], "binary_cross_entropy": [probabilities, (y > 0) * 1.0],
            "binary_cross_entropy_with_logits": [x, (y > 0) * 1.0],
            "kl_div": [np.log(probabilities), probabilities]}[name]


_OLDER_LOSSES = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy",
                 "binary_cross_entropy_with_logits", "kl_div"]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("reduction", _REDUCTIONS, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()) or "default")
@pytest.mark.parametrize("name", _OLDER_LOSSES)
def test_older_losses_every_reduction_spelling_and_dtype_as_torch(rng, name, reduction, dtype):
    tol = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 2e-2, "float16": 4e-3}[dtype]
    check(lambda x, y: getattr(F, name)(x, y, **reduction), lambda x, y: getattr(TF, name)(x, y, **reduction),
          *_older_loss_inputs(rng, name), dtype=dtype, rtol=tol, atol=tol, constant=(1,))


@pytest.mark.parametrize("target_dtype", ["int32", "int16", "int8", "uint8", "int64"])
@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_class_index_target_dtypes_as_torch(rng, name, target_dtype):
    """torch takes class indices as int64 (Long) or uint8 (Byte) only: an int32 target is its
    RuntimeError, not silently read."""
    x, labels = _older_loss_inputs(rng, name)
    labels = labels.astype(target_dtype)
    try:
        getattr(TF, name)(torch.tensor(x), torch.tensor(labels))
    except RuntimeError:
        message = same_error(lambda: getattr(F, name)(ml.tensor(x), ml.tensor(labels)),
                             lambda: getattr(TF, name)(torch.tensor(x), torch.tensor(labels)))
        assert "Long or Byte" in message
        return
    check(lambda x: getattr(F, name)(x, ml.tensor(labels)), lambda x: getattr(TF, name)(x, torch.tensor(labels)), x)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_class_weight_and_ignore_index_in_every_float_dtype_as_torch(rng, name, ignore_index, reduction, dtype):
    x, labels = _older_loss_inputs(rng, name)
    labels[1] = ignore_index
    w, tw = pair(rng.random(4), dtype=dtype)
    tol = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 2e-2, "float16": 4e-3}[dtype]
    check(lambda x: getattr(F, name)(x, ml.tensor(labels), w, ignore_index=ignore_index, reduction=reduction),
          lambda x: getattr(TF, name)(x, torch.tensor(labels), tw, ignore_index=ignore_index, reduction=reduction),
          x, dtype=dtype, rtol=tol, atol=tol)
    labels[1] = -100 if ignore_index != -100 else 7  # a target neither in range nor ignored: torch's error
    same_error(lambda: getattr(F, name)(ml.tensor(x), ml.tensor(labels), ignore_index=ignore_index),
               lambda: getattr(TF, name)(torch.tensor(x), torch.tensor(labels), ignore_index=ignore_index))


# ---- pooling / resizing: torch's refusals and integer dtypes ---------------------------------------
def _lib_of(F_):
    return torch if F_ is TF else ml


_POOL_ERRORS = {
    "max_pool2d-2d-input": lambda F, x: F.max_pool2d(x[0, 0], 2),
    "max_pool2d-5d-input": lambda F, x: F.max_pool2d(x[None], 2),
    "max_pool2d-kernel-too-big": lambda F, x: F.max_pool2d(x, 7),
    "max_pool2d-empty-plane": lambda F, x: F.max_pool2d(x[:, :, :0], 2),
    "max_pool2d-bool": lambda F, x: F.max_pool2d(x > 0, 2),
    "max_pool1d-4d-input": lambda F, x: F.max_pool1d(x, 2),
    "avg_pool2d-2d-input": lambda F, x: F.avg_pool2d(x[0, 0], 2),
    "avg_pool2d-kernel-too-big": lambda F, x: F.avg_pool2d(x, 7),
    "avg_pool2d-int32": lambda F, x: F.avg_pool2d((x * 10).to(_lib_of(F).int32), 2),
    "avg_pool1d-4d-input": lambda F, x: F.avg_pool1d(x, 2),
    "adaptive-2d-input": lambda F, x: F.adaptive_avg_pool2d(x[0, 0], 2),
    "adaptive-5d-input": lambda F, x: F.adaptive_avg_pool2d(x[None], 2),
    "adaptive-negative-size": lambda F, x: F.adaptive_avg_pool2d(x, -1),
    "adaptive-three-sizes": lambda F, x: F.adaptive_avg_pool2d(x, (1, 2, 3)),
    "adaptive-empty-plane": lambda F, x: F.adaptive_avg_pool2d(x[:, :, :0], 2),
    "adaptive-int64": lambda F, x: F.adaptive_avg_pool2d((x * 10).long(), 2),
    "interpolate-nearest-int64": lambda F, x: F.interpolate((x * 10).long(), scale_factor=2),
    "interpolate-bilinear-int64": lambda F, x: F.interpolate((x * 10).long(), scale_factor=2, mode="bilinear"),
    "batch_norm-1d-input": lambda F, x: F.batch_norm(x[0, 0, 0], _lib_of(F).zeros(6), _lib_of(F).ones(6)),
}


@pytest.mark.parametrize("call", list(_POOL_ERRORS))
def test_pooling_and_resizing_refusals_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((1, 2, 5, 6)))
    same_error(lambda: _POOL_ERRORS[call](F, x), lambda: _POOL_ERRORS[call](TF, tx))


@pytest.mark.parametrize("call", [
    lambda F, x: F.avg_pool2d(x, 2), lambda F, x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    lambda F, x: F.avg_pool2d(x, 2, divisor_override=3), lambda F, x: F.max_pool2d(x, 2),
    lambda F, x: F.max_pool2d(x.to(_lib_of(F).int32), 3, 1)])
def test_integer_pooling_as_torch(rng, call):
    """torch's int64 average pooling divides as C++ integers do (toward zero) and stays int64."""
    x = (rng.standard_normal((1, 2, 5, 6)) * 10).astype(np.int64)
    ours, theirs = call(F, ml.tensor(x)), call(TF, torch.tensor(x))
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_interpolate_nearest_on_uint8_images_as_torch(rng):
    image = rng.integers(0, 256, (1, 3, 4, 5)).astype(np.uint8)
    ours = F.interpolate(ml.tensor(image), scale_factor=2.5)
    theirs = TF.interpolate(torch.tensor(image), scale_factor=2.5)
    assert ours.dtype == ml.uint8
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(NotImplementedError, match="minilora"):  # torch's own rounded uint8 kernel
        F.interpolate(ml.tensor(image), scale_factor=2, mode="bilinear")


@pytest.mark.parametrize("call", [
    lambda x: F.avg_pool2d(x, 3, 1), lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda x: F.adaptive_avg_pool2d(x, (2, 3)), lambda x: F.max_pool2d(x, 2, 1, ceil_mode=True)])
def test_pooling_nodes_gradient_check_in_float64(rng, call):
    grad_check(call, ml.tensor(rng.standard_normal((1, 2, 5, 6)), requires_grad=True))


# ---- threshold, the shrink functions, PReLU, adaptive_avg_pool1d, the padding layers ---------------
_ELEMENTWISE = {
    "threshold": lambda F, x: F.threshold(x, 0.1, 20.0), "threshold-kw": lambda F, x: F.threshold(x, threshold=-0.2, value=0.5),
    "hardshrink": lambda F, x: F.hardshrink(x), "hardshrink-lambd": lambda F, x: F.hardshrink(x, 0.3),
    "softshrink": lambda F, x: F.softshrink(x), "softshrink-lambd": lambda F, x: F.softshrink(x, lambd=0.25),
    "tanhshrink": lambda F, x: F.tanhshrink(x),
    "prelu-one": lambda F, x: F.prelu(x, x.new_full((1,), 0.25)),
    "prelu-channels": lambda F, x: F.prelu(x, x.new_full((3,), 0.1) * _lib_of(F).arange(3).to(x.dtype)),
    "adaptive_avg_pool1d": lambda F, x: F.adaptive_avg_pool1d(x, 3), "adaptive_avg_pool1d-tuple": lambda F, x: F.adaptive_avg_pool1d(x[0], (2,)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", list(_ELEMENTWISE))
def test_shrink_threshold_prelu_as_torch(rng, name, dtype):
    x = rng.standard_normal((2, 3, 7))
    x[0, 0, :5] = [0.5, -0.5, 0.1, 0.3, -0.25]  # on the thresholds
    # bit for bit in 16 bits (float32's tanh differs from torch's in the last bit: NumPy's vs SLEEF's)
    exact = dtype in ("bfloat16", "float16") and not name.startswith("adaptive")
    tol = {"float64": 1e-10, "float32": 1e-6, "bfloat16": 1e-2, "float16": 1e-3}[dtype]
    check(lambda x: _ELEMENTWISE[name](F, x), lambda x: _ELEMENTWISE[name](TF, x), x, dtype=dtype, exact=exact,
          rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["threshold", "hardshrink", "softshrink", "tanhshrink", "prelu-channels",
                                  "adaptive_avg_pool1d"])
def test_shrink_threshold_prelu_gradient_check_in_float64(rng, name):
    x = ml.tensor(rng.standard_normal((2, 3, 7)), requires_grad=True)
    grad_check(lambda x: _ELEMENTWISE[name](F, x), x)
    weight = ml.tensor(rng.random(3), requires_grad=True)
    grad_check(lambda w: F.prelu(x.detach(), w), weight)


@pytest.mark.parametrize("call", [
    lambda F, x: F.hardshrink(x.long()), lambda F, x: F.softshrink(x.long()), lambda F, x: F.softshrink(x, -1.0),
    lambda F, x: F.prelu(x, x.new_ones(2)), lambda F, x: F.prelu(x[0, 0], x.new_ones(7)),
    lambda F, x: F.prelu(x, x.new_ones(1, 3)), lambda F, x: F.prelu(x, x.new_ones(3).float()),
    lambda F, x: F.adaptive_avg_pool1d(x[None], 2)],
    ids=["hardshrink-int", "softshrink-int", "softshrink-negative", "prelu-channels", "prelu-1d",
         "prelu-2d-weight", "prelu-dtypes", "adaptive1d-4d"])
def test_shrink_threshold_prelu_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((2, 3, 7)))
    same_error(lambda: call(F, x), lambda: call(TF, tx))


def test_threshold_keeps_an_integer_dtype_as_torch():
    x = np.arange(-3, 4)
    ours, theirs = F.threshold(ml.tensor(x), 0, 9.7), TF.threshold(torch.tensor(x), 0, 9.7)
    assert ours.dtype == ml.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("make", [
    lambda nn: nn.Threshold(0.1, 20), lambda nn: nn.Hardshrink(), lambda nn: nn.Softshrink(0.3), lambda nn: nn.Tanhshrink(),
    lambda nn: nn.PReLU(), lambda nn: nn.PReLU(3, 0.1), lambda nn: nn.AdaptiveAvgPool1d(3),
    lambda nn: nn.ZeroPad1d((1, 2)), lambda nn: nn.ZeroPad2d(1), lambda nn: nn.ConstantPad1d(2, 3.5),
    lambda nn: nn.ConstantPad2d((1, 0, 2, 1), -1.0), lambda nn: nn.ReflectionPad1d(2), lambda nn: nn.ReflectionPad2d((1, 0, 2, 1)),
    lambda nn: nn.ReplicationPad1d((0, 3)), lambda nn: nn.ReplicationPad2d(2), lambda nn: nn.CircularPad1d(1),
    lambda nn: nn.CircularPad2d((1, 2, 0, 1))])
def test_new_layers_as_torch(rng, make):
    ours, theirs = make(nn).double(), make(tnn).double()
    assert repr(ours) == repr(theirs)
    assert getattr(ours, "padding", None) == getattr(theirs, "padding", None)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    shape = (2, 3, 5) if "1d" in type(theirs).__name__.lower() or isinstance(theirs, tnn.PReLU) else (2, 3, 4, 5)
    check(ours, theirs, rng.standard_normal(shape))
    if isinstance(theirs, tnn.PReLU):
        np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())


# ---- channel-wise dropout: dropout1d / 2d / 3d and their layers -------------------------------------
_FEATURE_DROPOUT = {"dropout1d": (4, 6, 5), "dropout2d": (4, 6, 3, 5), "dropout3d": (4, 6, 2, 3, 5)}


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("name", list(_FEATURE_DROPOUT))
def test_feature_dropout_zeroes_whole_channels_scaled_as_torch(name, p, dtype):
    """The random draws differ (NumPy's generator): the structure is torch's -- each [sample, channel]
    kept or zeroed as a whole, the kept ones scaled by 1/(1-p) rounded as torch rounds it, the
    gradient the same mask."""
    shape = _FEATURE_DROPOUT[name]
    x, tx = pair(np.ones(shape), True, dtype)
    ours, theirs = getattr(F, name)(x, p), getattr(TF, name)(tx, p)
    assert str(ours.dtype) == dtype and tuple(ours.shape) == shape
    values = _np(ours).reshape(shape[0], shape[1], -1)
    assert (values == values[..., :1]).all()  # one decision per channel
    kept = np.unique(values[values != 0])
    np.testing.assert_array_equal(kept, np.unique(_np(theirs)[_np(theirs) != 0]))
    ours.sum().backward()
    np.testing.assert_array_equal(_np(x.grad), values.reshape(shape))


@pytest.mark.parametrize("name", list(_FEATURE_DROPOUT))
def test_feature_dropout_eval_p0_p1_unbatched_as_torch(rng, name):
    shape = _FEATURE_DROPOUT[name]
    x, tx = pair(rng.standard_normal(shape))
    assert getattr(F, name)(x, 0.5, training=False) is x
    np.testing.assert_array_equal(_np(getattr(F, name)(x, p=0.0)), _np(x))
    np.testing.assert_array_equal(_np(getattr(F, name)(x, p=1.0)), _np(getattr(TF, name)(tx, p=1.0)))
    if name != "dropout2d":  # dropout1d/3d read an unbatched input as one sample
        unbatched = getattr(F, name)(ml.ones(*shape[1:]), 0.5)
        assert tuple(unbatched.shape) == shape[1:]
        values = _np(unbatched).reshape(shape[1], -1)
        assert (values == values[:, :1]).all()


@pytest.mark.parametrize("call", [
    lambda F, x: F.dropout1d(x, 1.5), lambda F, x: F.dropout2d(x, -0.1), lambda F, x: F.dropout1d(x[None]),
    lambda F, x: F.dropout1d(x[0, 0, 0])], ids=["p>1", "p<0", "dropout1d-4d", "dropout1d-1d"])
def test_feature_dropout_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((2, 3, 4)))
    same_error(lambda: call(F, x), lambda: call(TF, tx))


@pytest.mark.parametrize("name, shape", [("dropout2d", (2, 3, 4)), ("dropout2d", (2, 3)), ("dropout3d", (2, 3, 4))])
def test_feature_dropout_warnings_as_torch(rng, name, shape):
    x, tx = pair(rng.standard_normal(shape))
    with pytest.warns(UserWarning) as theirs:
        getattr(TF, name)(tx)
    with pytest.warns(UserWarning) as ours:
        getattr(F, name)(x)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]


@pytest.mark.parametrize("name", ["Dropout1d", "Dropout2d", "Dropout3d"])
def test_feature_dropout_layers_as_torch(name):
    ours, theirs = getattr(nn, name)(0.3), getattr(tnn, name)(0.3)
    assert repr(ours) == repr(theirs)
    x = ml.ones(*_FEATURE_DROPOUT[name.lower()])
    assert (ours(x).numpy() != 1).any()
    ours.eval()
    assert ours(x) is x


# ---- conv_transpose1d / conv_transpose2d and their layers ------------------------------------------
_TRANSPOSED = [((2, 4, 5, 6), (4, 3, 3, 3), {}), ((2, 4, 5, 6), (4, 3, 3, 3), {"stride": 2}),
               ((2, 4, 5, 6), (4, 3, 4, 4), {"stride": 2, "padding": 1, "output_padding": 1}),
               ((2, 4, 5, 6), (4, 3, 3, 3), {"stride": (2, 3), "padding": (1, 0), "output_padding": (1, 2)}),
               ((2, 4, 5, 6), (4, 3, 3, 3), {"dilation": 2, "padding": 1}),
               ((2, 4, 5, 6), (4, 3, 3, 3), {"dilation": 2, "stride": 2, "output_padding": 1}),
               ((2, 4, 5, 6), (4, 2, 3, 3), {"groups": 2, "stride": 2}), ((4, 5, 6), (4, 3, 3, 3), {}),
               ((2, 4, 7), (4, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}), ((4, 7), (4, 3, 3), {})]


@pytest.mark.parametrize("x_shape, w_shape, kwargs", _TRANSPOSED, ids=lambda v: str(v).replace(" ", ""))
def test_conv_transpose_as_torch_forward_and_gradients(rng, x_shape, w_shape, kwargs):
    fn = "conv_transpose2d" if len(w_shape) == 4 else "conv_transpose1d"
    bias = rng.standard_normal(w_shape[1] * kwargs.get("groups", 1))
    check(lambda x, w, b: getattr(F, fn)(x, w, b, **kwargs), lambda x, w, b: getattr(TF, fn)(x, w, b, **kwargs),
          rng.standard_normal(x_shape), rng.standard_normal(w_shape), bias)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_conv_transpose_in_narrow_dtypes_as_torch(rng, dtype):
    """float16: torch runs it on oneDNN (float32 sums, one rounding, as minilora) only on CPUs with
    AVX512-FP16/AMX-FP16; elsewhere (an AVX-512 EPYC, most CPUs) its slow path rounds partial sums to
    float16 (each sample's weight-gradient GEMM, then the sum over samples): 2 roundings of 2^-11 of
    partial sums up to |grad| ~8 here, so an absolute 2 * 2^-11 * 8 = 8e-3 (a 0.0039 step was seen)."""
    tol = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 2e-3}[dtype]
    check(lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1), lambda x, w: TF.conv_transpose2d(x, w, stride=2, padding=1),
          rng.standard_normal((2, 4, 5, 6)), rng.standard_normal((4, 3, 3, 3)) * 0.3, dtype=dtype, rtol=tol,
          atol=8e-3 if dtype == "float16" else tol)


@pytest.mark.parametrize("call", [
    lambda F, x, w: F.conv_transpose2d(x, w, output_padding=1), lambda F, x, w: F.conv_transpose2d(x[:, :3], w),
    lambda F, x, w: F.conv_transpose2d(x[:, :, :1, :1], w, padding=2), lambda F, x, w: F.conv_transpose2d(x, w, groups=3),
    lambda F, x, w: F.conv_transpose2d(x, w.float()), lambda F, x, w: F.conv_transpose2d(x, w, stride=0)],
    ids=["output-padding-too-big", "channels", "output-too-small", "groups", "dtypes", "stride-0"])
def test_conv_transpose_errors_are_torchs(rng, call):
    (x, tx), (w, tw) = pair(rng.standard_normal((2, 4, 5, 6))), pair(rng.standard_normal((4, 3, 3, 3)))
    same_error(lambda: call(F, x, w), lambda: call(TF, tx, tw))


def test_conv_transpose_gradient_check_in_float64(rng):
    x = ml.tensor(rng.standard_normal((1, 2, 3, 4)), requires_grad=True)
    w = ml.tensor(rng.standard_normal((2, 3, 3, 2)), requires_grad=True)
    grad_check(lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), x, w)
    grad_check(lambda x, w: F.conv_transpose2d(x, w, dilation=2, groups=2, padding=(0, 1)), x,
               ml.tensor(rng.standard_normal((2, 2, 2, 2)), requires_grad=True))


@pytest.mark.parametrize("make, shape", [
    (lambda nn: nn.ConvTranspose2d(16, 3, 4, 2, 1, bias=False), (2, 16, 4, 5)),
    (lambda nn: nn.ConvTranspose2d(4, 6, 3, output_padding=1, stride=2, groups=2, dilation=2), (2, 4, 3, 3)),
    (lambda nn: nn.ConvTranspose1d(4, 6, 3), (2, 4, 7)), (lambda nn: nn.ConvTranspose1d(4, 6, 3, stride=2), (4, 7))])
def test_conv_transpose_layers_as_torch(rng, make, shape):
    ours, theirs = make(nn).double(), make(tnn).double()
    assert repr(ours) == repr(theirs)
    for name, param in theirs.named_parameters():
        mine = getattr(ours, name)
        assert tuple(mine.shape) == tuple(param.shape)
        bound = 1 / np.sqrt(theirs.weight.shape[1] * np.prod(theirs.kernel_size))  # torch's fan_in
        assert np.abs(mine.numpy()).max() <= bound + 1e-12
        mine.data = ml.tensor(param.detach().numpy().copy())
    check(ours, theirs, rng.standard_normal(shape))


def test_conv_transpose_output_size_as_torch(rng):
    ours, theirs = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double(), tnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
    ours.weight.data, ours.bias.data = (ml.tensor(p.detach().numpy().copy()) for p in (theirs.weight, theirs.bias))
    x, tx = pair(rng.standard_normal((1, 3, 4, 5)))
    for size in ([8, 10], [1, 3, 7, 9], (7, 9)):
        np.testing.assert_allclose(ours(x, output_size=size).numpy(), theirs(tx, output_size=size).detach().numpy(),
                                   rtol=1e-12)
    same_error(lambda: ours(x, output_size=[20, 20]), lambda: theirs(tx, output_size=[20, 20]))


def test_conv_transpose_layer_refuses_other_padding_modes_as_torch():
    same_error(lambda: nn.ConvTranspose2d(4, 6, 3, padding_mode="reflect"),
               lambda: tnn.ConvTranspose2d(4, 6, 3, padding_mode="reflect"))


# ---- pixel_shuffle / pixel_unshuffle, PixelShuffle, PixelUnshuffle, Softmax2d ------------------------
@pytest.mark.parametrize("shape, r", [((2, 8, 3, 4), 2), ((9, 2, 3), 3), ((1, 2, 4, 3, 5), 2), ((2, 3, 4, 5), 1)])
def test_pixel_shuffle_and_unshuffle_as_torch(rng, shape, r):
    check(lambda x: F.pixel_shuffle(x, r), lambda x: TF.pixel_shuffle(x, r), rng.standard_normal(shape))
    spatial = shape[:-2] + (shape[-2] * r, shape[-1] * r)
    check(lambda x: F.pixel_unshuffle(x, downscale_factor=r), lambda x: TF.pixel_unshuffle(x, downscale_factor=r),
          rng.standard_normal(spatial))
    x = (rng.standard_normal(shape) * 10).astype(np.int64)
    np.testing.assert_array_equal(F.pixel_shuffle(ml.tensor(x), r).numpy(), TF.pixel_shuffle(torch.tensor(x), r).numpy())


@pytest.mark.parametrize("call", [
    lambda F, x: F.pixel_shuffle(x[0, 0], 2), lambda F, x: F.pixel_shuffle(x[:, :5], 2), lambda F, x: F.pixel_shuffle(x, 0),
    lambda F, x: F.pixel_unshuffle(x, 2), lambda F, x: F.pixel_unshuffle(x[0, 0], 2), lambda F, x: F.pixel_unshuffle(x, -1)],
    ids=["shuffle-2d", "shuffle-channels", "shuffle-0", "unshuffle-height", "unshuffle-2d", "unshuffle-negative"])
def test_pixel_shuffle_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((2, 8, 3, 3)))
    same_error(lambda: call(F, x), lambda: call(TF, tx))


@pytest.mark.parametrize("make, shape", [(lambda nn: nn.PixelShuffle(2), (2, 8, 3, 3)),
                                         (lambda nn: nn.PixelUnshuffle(3), (2, 1, 6, 9)),
                                         (lambda nn: nn.Softmax2d(), (2, 3, 4, 5)), (lambda nn: nn.Softmax2d(), (3, 4, 5))])
def test_shuffle_and_softmax2d_layers_as_torch(rng, make, shape):
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    check(ours, theirs, rng.standard_normal(shape))


def test_softmax2d_refuses_other_ranks_as_torch(rng):
    x, tx = pair(rng.standard_normal((3, 4)))
    same_error(lambda: nn.Softmax2d()(x), lambda: tnn.Softmax2d()(tx))


# ---- adaptive max pooling --------------------------------------------------------------------------
_ADAPTIVE_MAX = {
    "2d": lambda F, x: F.adaptive_max_pool2d(x, (2, 3)), "2d-int": lambda F, x: F.adaptive_max_pool2d(x, 3),
    "2d-none": lambda F, x: F.adaptive_max_pool2d(x, (None, 4)), "2d-unbatched": lambda F, x: F.adaptive_max_pool2d(x[0], (4, 4)),
    "2d-indices": lambda F, x: F.adaptive_max_pool2d(x, (3, 3), return_indices=True)[0],
    "1d": lambda F, x: F.adaptive_max_pool1d(x[:, :, 0], 3), "1d-tuple": lambda F, x: F.adaptive_max_pool1d(x[0, :, 0], (4,)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", list(_ADAPTIVE_MAX))
def test_adaptive_max_pool_as_torch_bit_for_bit(rng, name, dtype):
    """The windows overlap when the sizes do not divide: a 16-bit gradient adds up in 16 bits, in
    output order, as torch's kernel -- the same bits."""
    x = rng.standard_normal((2, 3, 5, 7))
    x[0, 0, 0, :2] = 3.0  # a tie: the first wins
    check(lambda x: _ADAPTIVE_MAX[name](F, x), lambda x: _ADAPTIVE_MAX[name](TF, x), x, dtype=dtype, exact=True)


def test_adaptive_max_pool_indices_and_gradient_check(rng):
    x = rng.standard_normal((2, 3, 5, 7))
    _, ours = F.adaptive_max_pool2d(ml.tensor(x), (3, 4), True)
    _, theirs = TF.adaptive_max_pool2d(torch.tensor(x), (3, 4), True)
    assert ours.dtype == ml.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    _, ours1 = F.adaptive_max_pool1d(ml.tensor(x[:, :, 0]), 3, return_indices=True)
    np.testing.assert_array_equal(ours1.numpy(), TF.adaptive_max_pool1d(torch.tensor(x[:, :, 0]), 3, True)[1].numpy())
    grad_check(lambda t: F.adaptive_max_pool2d(t, (3, 4)), ml.tensor(x, requires_grad=True))


@pytest.mark.parametrize("call", [
    lambda F, x: F.adaptive_max_pool2d(x.long(), 2), lambda F, x: F.adaptive_max_pool2d(x[0, 0], 2),
    lambda F, x: F.adaptive_max_pool2d(x[:, :, :0], 2), lambda F, x: F.adaptive_max_pool1d(x, 2)],
    ids=["int64", "2d-input", "empty", "1d-4d-input"])
def test_adaptive_max_pool_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((2, 3, 5, 7)))
    same_error(lambda: call(F, x), lambda: call(TF, tx))


@pytest.mark.parametrize("make, shape", [(lambda nn: nn.AdaptiveMaxPool2d((2, 3)), (2, 3, 5, 7)),
                                         (lambda nn: nn.AdaptiveMaxPool1d(3), (2, 3, 7))])
def test_adaptive_max_pool_layers_as_torch(rng, make, shape):
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    check(ours, theirs, rng.standard_normal(shape))


# ---- instance_norm and InstanceNorm1d/2d -----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("with_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_as_torch(rng, dtype, use_input_stats, with_stats, affine):
    if not use_input_stats and not with_stats:
        return  # test_instance_norm_errors_are_torchs
    x = rng.standard_normal((2, 3, 4, 5)) * 2 + 1
    stats = [pair(rng.standard_normal(3) * 0.1, dtype=dtype), pair(rng.random(3) + 0.5, dtype=dtype)] if with_stats else None
    params = [rng.standard_normal(3), rng.standard_normal(3)] if affine else []
    exact = dtype in ("bfloat16", "float16")
    tol = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 0, "float16": 0}[dtype]

    def call(F_, x, *wb):
        m, v = (None, None) if stats is None else (s[0 if F_ is F else 1] for s in stats)
        return F_.instance_norm(x, m, v, *(wb or (None, None)), use_input_stats, 0.3, 1e-5)
    check(lambda x, *wb: call(F, x, *wb), lambda x, *wb: call(TF, x, *wb), x, *params, dtype=dtype, exact=exact,
          rtol=tol, atol=tol)
    if stats is not None:
        for ours, theirs in stats:
            np.testing.assert_allclose(_np(ours), _np(theirs), rtol=max(tol, 1e-2 if exact else 0), atol=tol)


@pytest.mark.parametrize("call", [lambda F, lib, x: F.instance_norm(x[:, :, :1, :1]),
                                  lambda F, lib, x: F.instance_norm(x, use_input_stats=False)],
                         ids=["one-spatial-element", "no-stats-without-input-stats"])
def test_instance_norm_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((2, 3, 4, 5)))
    same_error(lambda: call(F, ml, x), lambda: call(TF, torch, tx))


@pytest.mark.parametrize("make, shape", [
    (lambda nn: nn.InstanceNorm2d(3), (2, 3, 4, 5)), (lambda nn: nn.InstanceNorm2d(3, affine=True), (3, 4, 5)),
    (lambda nn: nn.InstanceNorm1d(4, affine=True, track_running_stats=True), (2, 4, 6)),
    (lambda nn: nn.InstanceNorm1d(4, momentum=None, track_running_stats=True), (4, 6))])
def test_instance_norm_layers_as_torch(rng, make, shape):
    ours, theirs = make(nn).double(), make(tnn).double()
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    check_norm_layer(ours, theirs, rng, shape)


def check_norm_layer(ours, theirs, rng, shape):
    """A normalisation layer and torch's (float64): the same repr, two training steps with the same
    outputs, gradients and running statistics, then one step in eval mode."""
    assert repr(ours) == repr(theirs)
    for _ in range(2):
        check(ours, theirs, rng.standard_normal(shape))
    for name, buffer in theirs.named_buffers():
        np.testing.assert_allclose(_np(getattr(ours, name)), _np(buffer), rtol=1e-10)
    ours.eval(), theirs.eval()
    check(ours, theirs, rng.standard_normal(shape))


def test_instance_norm_layer_channel_checks_as_torch(rng):
    x, tx = pair(rng.standard_normal((2, 5, 4, 4)))
    same_error(lambda: nn.InstanceNorm2d(3, affine=True)(x), lambda: tnn.InstanceNorm2d(3, affine=True)(tx))
    same_error(lambda: nn.InstanceNorm2d(3)(x[0, 0, 0]), lambda: tnn.InstanceNorm2d(3)(tx[0, 0, 0]))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm2d(3)(x)


# ---- RNNCell, LSTMCell, GRUCell --------------------------------------------------------------------
_CELLS = [lambda nn: nn.RNNCell(3, 4), lambda nn: nn.RNNCell(3, 4, nonlinearity="relu"),
          lambda nn: nn.LSTMCell(3, 4), lambda nn: nn.LSTMCell(3, 4, bias=False), lambda nn: nn.GRUCell(3, 4)]


def _same_weights(ours, theirs):
    for name, param in theirs.named_parameters():
        getattr(ours, name).data = ml.tensor(param.detach().numpy().copy())


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("make", _CELLS)
def test_rnn_cells_as_torch(rng, make, with_state, batched, dtype):
    ours, theirs = make(nn).double(), make(tnn).double()
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    bound = 1 / np.sqrt(4)
    assert all(np.abs(_np(p)).max() <= bound for p in ours.parameters())
    _same_weights(ours, theirs)
    ours, theirs = ours.to(getattr(ml, dtype)), theirs.to(getattr(torch, dtype))
    lstm = isinstance(theirs, tnn.LSTMCell)
    shape = (2,) if batched else ()
    x = rng.standard_normal(shape + (3,))
    h = [rng.standard_normal(shape + (4,)) for _ in range(2 if lstm else 1)] if with_state else []
    tol = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 2e-2}[dtype]

    def run(cell, lib):
        def call(x, *h):
            out = cell(x, (tuple(h) if lstm else h[0]) if h else None)
            return lib.cat([t.reshape(-1) for t in out]) if lstm else out
        return call
    check(run(ours, ml), run(theirs, torch), x, *h, dtype=dtype, rtol=tol, atol=tol)


@pytest.mark.parametrize("call", [
    lambda nn, lib: nn.RNNCell(3, 4)(lib.zeros(2, 2, 3)), lambda nn, lib: nn.RNNCell(3, 4)(lib.zeros(2, 5)),
    lambda nn, lib: nn.GRUCell(3, 4)(lib.zeros(2, 3), lib.zeros(3, 4)), lambda nn, lib: nn.RNNCell(3, 4)(lib.zeros(3), lib.zeros(2, 4)),
    lambda nn, lib: nn.LSTMCell(3, 4)(lib.zeros(2, 3), (lib.zeros(2, 5), lib.zeros(2, 4))),
    lambda nn, lib: nn.RNNCell(3, 4, nonlinearity="foo")(lib.zeros(2, 3))],
    ids=["3d-input", "input-size", "batch", "unbatched-input-batched-state", "hidden-size", "nonlinearity"])
def test_rnn_cell_errors_are_torchs(call):
    same_error(lambda: call(nn, ml), lambda: call(tnn, torch))


def test_lstm_cell_steps_as_one_lstm_layer(rng):
    """A cell stepped over time gives the LSTM layer's outputs (same weights)."""
    layer = nn.LSTM(3, 4).double()
    cell = nn.LSTMCell(3, 4).double()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).data = getattr(layer, f"{name}_l0").detach()
    x = ml.tensor(rng.standard_normal((5, 2, 3)))
    out, _ = layer(x)
    state = None
    for t in range(5):
        state = cell(x[t], state)
        np.testing.assert_allclose(state[0].numpy(), out[t].numpy(), rtol=1e-12)


@pytest.mark.parametrize("make, shape", [(lambda nn: nn.BatchNorm3d(3), (2, 3, 2, 3, 4)),
                                         (lambda nn: nn.BatchNorm3d(3, affine=False, momentum=None), (2, 3, 2, 2, 2)),
                                         (lambda nn: nn.InstanceNorm3d(3, affine=True), (2, 3, 2, 3, 4)),
                                         (lambda nn: nn.InstanceNorm3d(3, track_running_stats=True), (3, 2, 3, 4))])
def test_3d_normalisation_layers_as_torch(rng, make, shape):
    ours, theirs = make(nn).double(), make(tnn).double()
    check_norm_layer(ours, theirs, rng, shape)
    same_error(lambda: ours(ml.zeros(3, 4)), lambda: theirs(torch.zeros(3, 4, dtype=torch.float64)))


# ---- unfold / fold (im2col / col2im) ---------------------------------------------------------------
_BLOCKS = [{"kernel_size": 2}, {"kernel_size": 3, "padding": 1, "stride": 2},
           {"kernel_size": (2, 3), "dilation": 2, "padding": 1, "stride": (1, 2)}]


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("blocks", _BLOCKS, ids=str)
def test_unfold_and_fold_bit_for_bit_as_torch(rng, blocks, dtype):
    """Overlapping blocks add up in the order of torch's col2im (kernel offset by offset), rounding
    each addition in 16 bits as it does: the same bits in every float dtype, values and gradients."""
    check(lambda x: F.unfold(x, **blocks), lambda x: TF.unfold(x, **blocks), rng.standard_normal((2, 3, 6, 7)),
          dtype=dtype, exact=True)
    columns = TF.unfold(torch.zeros(2, 3, 6, 7), **blocks).shape
    check(lambda c: F.fold(c, (6, 7), **blocks), lambda c: TF.fold(c, (6, 7), **blocks),
          rng.standard_normal(tuple(columns)), dtype=dtype, exact=True)
    check(lambda x: F.unfold(x, **blocks), lambda x: TF.unfold(x, **blocks), rng.standard_normal((3, 6, 7)), dtype=dtype,
          exact=True)


def test_unfold_fold_gradient_check_in_float64(rng):
    grad_check(lambda x: F.unfold(x, 3, padding=1, stride=2), ml.tensor(rng.standard_normal((1, 2, 5, 4)), requires_grad=True))
    grad_check(lambda c: F.fold(c, (5, 4), 2), ml.tensor(rng.standard_normal((1, 8, 12)), requires_grad=True))


@pytest.mark.parametrize("call", [
    lambda F, x: F.unfold(x[0, 0], 2), lambda F, x: F.unfold(x[None], 2), lambda F, x: F.unfold(x, 8),
    lambda F, x: F.unfold(x.long(), 2),
    lambda F, x: F.fold(x[0, :2].reshape(2, 12, 7)[:, :, :6], (4, 5), 2), lambda F, x: F.fold(x[0, :2].reshape(2, 10, 8)[:, :, :8], (4, 5), 2),
    lambda F, x: F.fold(x, (4, 5), 2)],
    ids=["unfold-2d", "unfold-5d", "unfold-too-big", "unfold-int", "fold-blocks", "fold-channels", "fold-4d"])
def test_unfold_fold_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((2, 3, 6, 7)))
    same_error(lambda: call(F, x), lambda: call(TF, tx))


@pytest.mark.parametrize("make, shape", [(lambda nn: nn.Unfold(2), (2, 3, 4, 5)),
                                         (lambda nn: nn.Unfold((2, 3), dilation=2, padding=1, stride=(1, 2)), (2, 3, 4, 5)),
                                         (lambda nn: nn.Fold((4, 5), 2, stride=2), (2, 8, 4))])
def test_unfold_fold_layers_as_torch(rng, make, shape):
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    check(ours, theirs, rng.standard_normal(shape))


# ---- multilabel_margin_loss, triplet_margin_with_distance_loss -------------------------------------
_MULTILABEL_TARGETS = np.array([[0, 1, -1, 2], [3, -1, 0, 0], [1, 2, 3, 0], [2, 2, -1, 1]])  # a repeat, a full row


@pytest.mark.parametrize("reduction", _REDUCTIONS, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()) or "default")
def test_multilabel_margin_loss_as_torch(rng, reduction):
    targets = _MULTILABEL_TARGETS
    check(lambda x: F.multilabel_margin_loss(x, ml.tensor(targets), **reduction),
          lambda x: TF.multilabel_margin_loss(x, torch.tensor(targets), **reduction), rng.standard_normal((4, 4)))
    check(lambda x: F.multilabel_margin_loss(x, ml.tensor(targets[0]), **reduction),
          lambda x: TF.multilabel_margin_loss(x, torch.tensor(targets[0]), **reduction), rng.standard_normal(4))


@pytest.mark.parametrize("call", [
    lambda F, lib, x: F.multilabel_margin_loss(x, lib.tensor([[0, 1, -1, 2]])),
    lambda F, lib, x: F.multilabel_margin_loss(x, lib.tensor(_MULTILABEL_TARGETS) * 2),
    lambda F, lib, x: F.multilabel_margin_loss(x, lib.tensor(_MULTILABEL_TARGETS).int()),
    lambda F, lib, x: F.triplet_margin_with_distance_loss(x, x, x, margin=0),
    lambda F, lib, x: F.triplet_margin_with_distance_loss(x, x[0], x),
    lambda F, lib, x: F.triplet_margin_with_distance_loss(x, x, x, reduction="foo")],
    ids=["target-shape", "target-range", "target-int32", "margin-0", "ranks", "reduction"])
def test_margin_loss_errors_are_torchs(rng, call):
    x, tx = pair(rng.standard_normal((4, 4)))
    same_error(lambda: call(F, ml, x), lambda: call(TF, torch, tx))


@pytest.mark.parametrize("kwargs", [{}, {"swap": True}, {"margin": 0.3, "reduction": "sum"}, {"reduction": "none"},
                                    {"distance": "cosine"}])
def test_triplet_margin_with_distance_loss_as_torch(rng, kwargs):
    kwargs = dict(kwargs)
    if kwargs.pop("distance", None):
        ours_d = lambda a, b: 1 - F.cosine_similarity(a, b)  # noqa: E731
        theirs_d = lambda a, b: 1 - TF.cosine_similarity(a, b)  # noqa: E731
    else:
        ours_d = theirs_d = None
    check(lambda a, p, n: F.triplet_margin_with_distance_loss(a, p, n, distance_function=ours_d, **kwargs),
          lambda a, p, n: TF.triplet_margin_with_distance_loss(a, p, n, distance_function=theirs_d, **kwargs),
          *(rng.standard_normal((5, 3)) for _ in range(3)))
    ours, theirs = nn.TripletMarginWithDistanceLoss(**kwargs), tnn.TripletMarginWithDistanceLoss(**kwargs)
    assert repr(ours) == repr(theirs)
    check(ours, theirs, *(rng.standard_normal((5, 3)) for _ in range(3)))


def test_multilabel_margin_loss_module_and_gradient_check(rng):
    assert repr(nn.MultiLabelMarginLoss(reduction="sum")) == repr(tnn.MultiLabelMarginLoss(reduction="sum"))
    check(lambda x: nn.MultiLabelMarginLoss()(x, ml.tensor(_MULTILABEL_TARGETS)),
          lambda x: tnn.MultiLabelMarginLoss()(x, torch.tensor(_MULTILABEL_TARGETS)), rng.standard_normal((4, 4)))
    grad_check(lambda x: F.multilabel_margin_loss(x, ml.tensor(_MULTILABEL_TARGETS)),
               ml.tensor(rng.standard_normal((4, 4)), requires_grad=True))


# ---- max_unpool1d/2d, MaxUnpool1d/2d, bilinear, Bilinear ------------------------------------------
@pytest.mark.parametrize("pool, output_size", [({"kernel_size": 2}, None), ({"kernel_size": 2}, (5, 6)),
                                              ({"kernel_size": 3, "stride": 2, "padding": 1}, (5, 6)),
                                              ({"kernel_size": (2, 3), "stride": (2, 2)}, [2, 3, 4, 6])], ids=str)
def test_max_unpool2d_inverts_max_pool2d_as_torch(rng, pool, output_size):
    x = rng.standard_normal((2, 3, 5, 6))
    pooled, indices = TF.max_pool2d(torch.tensor(x), return_indices=True, **pool)
    check(lambda p: F.max_unpool2d(p, ml.tensor(indices.numpy()), output_size=output_size, **pool),
          lambda p: TF.max_unpool2d(p, indices, output_size=output_size, **pool), pooled.numpy())
    ours, theirs = nn.MaxUnpool2d(**pool), tnn.MaxUnpool2d(**pool)
    assert repr(ours) == repr(theirs)
    check(lambda p: ours(p, ml.tensor(indices.numpy()), output_size), lambda p: theirs(p, indices, output_size),
          pooled.numpy())


def test_max_unpool1d_as_torch(rng):
    pooled, indices = TF.max_pool1d(torch.tensor(rng.standard_normal((2, 3, 9))), 3, 2, 1, return_indices=True)
    check(lambda p: F.max_unpool1d(p, ml.tensor(indices.numpy()), 3, 2, 1),
          lambda p: TF.max_unpool1d(p, indices, 3, 2, 1), pooled.numpy())
    check(lambda p: nn.MaxUnpool1d(3, 2, 1)(p, ml.tensor(indices.numpy()), [10]),
          lambda p: tnn.MaxUnpool1d(3, 2, 1)(p, indices, [10]), pooled.numpy())


@pytest.mark.parametrize("call", [
    lambda F, lib, p, i: F.max_unpool2d(p, i, 2, output_size=(7, 7)), lambda F, lib, p, i: F.max_unpool2d(p, i * 5, 2),
    lambda F, lib, p, i: F.max_unpool2d(p, i.int(), 2), lambda F, lib, p, i: F.max_unpool2d(p, i[:, :1], 2),
    lambda F, lib, p, i: F.max_unpool2d(p, i, 2, output_size=(4, 4, 4))],
    ids=["output-size-range", "index-range", "int32-indices", "indices-shape", "output-size-length"])
def test_max_unpool_errors_are_torchs(rng, call):
    pooled, indices = TF.max_pool2d(torch.tensor(rng.standard_normal((1, 2, 4, 4))), 2, return_indices=True)
    ours = (ml.tensor(pooled.numpy()), ml.tensor(indices.numpy()))
    same_error(lambda: call(F, ml, *ours), lambda: call(TF, torch, pooled, indices))


@pytest.mark.parametrize("shapes", [((2, 3), (2, 4)), ((3,), (4,)), ((2, 7, 3), (2, 7, 4))], ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bilinear_as_torch(rng, shapes, with_bias):
    arrays = [rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1]), rng.standard_normal((5, 3, 4))]
    if with_bias:
        arrays.append(rng.standard_normal(5))
    check(F.bilinear, TF.bilinear, *arrays)


@pytest.mark.parametrize("call", [
    lambda F, lib: F.bilinear(lib.zeros(2, 3), lib.zeros(2, 4), lib.zeros(5, 3, 4), lib.zeros(4)),
    lambda F, lib: F.bilinear(lib.zeros(2, 3), lib.zeros(3, 4), lib.zeros(5, 3, 4)),
    lambda F, lib: F.bilinear(lib.zeros(2, 3), lib.zeros(2, 4), lib.zeros(5, 4, 4))],
    ids=["bias-size", "batch", "input1-size"])
def test_bilinear_errors_are_torchs(call):
    same_error(lambda: call(F, ml), lambda: call(TF, torch))


def test_bilinear_layer_as_torch(rng):
    ours, theirs = nn.Bilinear(3, 4, 5).double(), tnn.Bilinear(3, 4, 5).double()
    assert repr(ours) == repr(theirs)
    assert all(np.abs(p.numpy()).max() <= 1 / np.sqrt(3) for p in ours.parameters())
    _same_weights(ours, theirs)
    check(ours, theirs, rng.standard_normal((2, 3)), rng.standard_normal((2, 4)))
    grad_check(lambda a, b: ours(a, b), ml.tensor(rng.standard_normal((2, 3)), requires_grad=True),
               ml.tensor(rng.standard_normal((2, 4)), requires_grad=True))


# ---- lp_pool1d/2d, local_response_norm and their layers ---------------------------------------------
_LP_AND_LRN = {
    "lp_pool2d-p2": lambda F, x: F.lp_pool2d(x, 2, 2), "lp_pool2d-p3-stride": lambda F, x: F.lp_pool2d(x, 3.0, (2, 3), 1),
    "lp_pool2d-ceil": lambda F, x: F.lp_pool2d(x, 1.5, 3, 2, ceil_mode=True),
    "lp_pool2d-inf": lambda F, x: F.lp_pool2d(x, float("inf"), 2), "lp_pool1d": lambda F, x: F.lp_pool1d(x[:, :, 0], 2, 3, 1),
    "lrn-4d": lambda F, x: F.local_response_norm(x, 2), "lrn-3d": lambda F, x: F.local_response_norm(x[0], 3, 1e-2, 0.5, 2.0),
    "lrn-5d": lambda F, x: F.local_response_norm(x[None], size=4, alpha=0.1),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(_LP_AND_LRN))
def test_lp_pool_and_local_response_norm_as_torch(rng, name, dtype):
    x = np.abs(rng.standard_normal((2, 5, 6, 7))) + 0.1 if name.startswith("lp") else rng.standard_normal((2, 5, 6, 7))
    tol = 1e-10 if dtype == "float64" else 1e-5
    check(lambda x: _LP_AND_LRN[name](F, x), lambda x: _LP_AND_LRN[name](TF, x), x, dtype=dtype, rtol=tol, atol=tol)


@pytest.mark.parametrize("make, shape", [(lambda nn: nn.LPPool2d(2, 3), (2, 3, 6, 7)), (lambda nn: nn.LPPool1d(1.5, 2, stride=1), (2, 3, 7)),
                                         (lambda nn: nn.LocalResponseNorm(2), (2, 5, 4, 4))])
def test_lp_pool_and_local_response_norm_layers_as_torch(rng, make, shape):
    ours, theirs = make(nn), make(tnn)
    assert repr(ours) == repr(theirs)
    check(ours, theirs, np.abs(rng.standard_normal(shape)) + 0.1)


def test_local_response_norm_refuses_2d_as_torch(rng):
    x, tx = pair(rng.standard_normal((2, 5)))
    same_error(lambda: F.local_response_norm(x, 2), lambda: TF.local_response_norm(tx, 2))


# ---- embedding_bag / EmbeddingBag (torch's text-classification tutorial) ----------------------------
_BAG_IDS, _BAG_OFFSETS = np.array([1, 2, 4, 5, 4, 3, 2, 9]), np.array([0, 4, 4])  # the middle bag is empty


@pytest.mark.parametrize("kwargs", [{"mode": "mean"}, {"mode": "sum"}, {"mode": "max"}, {"mode": "mean", "padding_idx": 2},
                                    {"mode": "max", "padding_idx": 4}],
                         ids=str)
def test_embedding_bag_with_offsets_as_torch(rng, kwargs):
    check(lambda w: F.embedding_bag(ml.tensor(_BAG_IDS), w, ml.tensor(_BAG_OFFSETS), **kwargs),
          lambda w: TF.embedding_bag(torch.tensor(_BAG_IDS), w, torch.tensor(_BAG_OFFSETS), **kwargs),
          rng.standard_normal((10, 3)))


def test_embedding_bag_2d_input_per_sample_weights_and_last_offset_as_torch(rng):
    ids = _BAG_IDS.reshape(2, 4)
    check(lambda w: F.embedding_bag(ml.tensor(ids), w), lambda w: TF.embedding_bag(torch.tensor(ids), w),
          rng.standard_normal((10, 3)))
    check(lambda w, p: F.embedding_bag(ml.tensor(_BAG_IDS), w, ml.tensor(_BAG_OFFSETS), mode="sum", per_sample_weights=p),
          lambda w, p: TF.embedding_bag(torch.tensor(_BAG_IDS), w, torch.tensor(_BAG_OFFSETS), mode="sum",
                                        per_sample_weights=p), rng.standard_normal((10, 3)), rng.random(8))
    last = np.array([0, 4, 4, 8])
    check(lambda w: F.embedding_bag(ml.tensor(_BAG_IDS), w, ml.tensor(last), include_last_offset=True),
          lambda w: TF.embedding_bag(torch.tensor(_BAG_IDS), w, torch.tensor(last), include_last_offset=True),
          rng.standard_normal((10, 3)))


@pytest.mark.parametrize("call", [
    lambda F, lib, w: F.embedding_bag(lib.tensor(_BAG_IDS.reshape(2, 4)), w, lib.tensor(_BAG_OFFSETS)),
    lambda F, lib, w: F.embedding_bag(lib.tensor(_BAG_IDS), w),
    lambda F, lib, w: F.embedding_bag(lib.tensor(_BAG_IDS), w, lib.tensor(_BAG_OFFSETS), per_sample_weights=w[0, :1].expand(8)),
    lambda F, lib, w: F.embedding_bag(lib.tensor(_BAG_IDS.reshape(1, 2, 4)), w),
    lambda F, lib, w: F.embedding_bag(lib.tensor(_BAG_IDS), w, lib.tensor([[0], [4]])),
    lambda F, lib, w: F.embedding_bag(lib.tensor(_BAG_IDS), w, lib.tensor([1, 4])),
    lambda F, lib, w: F.embedding_bag(lib.tensor(_BAG_IDS), w, lib.tensor([0, 9]))],
    ids=["2d-with-offsets", "1d-without-offsets", "weights-in-mean-mode", "3d", "2d-offsets", "offset-0", "offset-past-end"])
def test_embedding_bag_errors_are_torchs(rng, call):
    w, tw = pair(rng.standard_normal((10, 3)))
    same_error(lambda: call(F, ml, w), lambda: call(TF, torch, tw))


@pytest.mark.parametrize("kwargs", [{}, {"mode": "sum", "padding_idx": 2}, {"mode": "max"}])
def test_embedding_bag_layer_as_torch(rng, kwargs):
    ours, theirs = nn.EmbeddingBag(10, 3, **kwargs).double(), tnn.EmbeddingBag(10, 3, **kwargs).double()
    assert repr(ours) == repr(theirs)
    if "padding_idx" in kwargs:
        assert not ours.weight.numpy()[2].any()
    _same_weights(ours, theirs)
    out = ours(ml.tensor(_BAG_IDS), ml.tensor(_BAG_OFFSETS))
    np.testing.assert_allclose(out.numpy(), theirs(torch.tensor(_BAG_IDS), torch.tensor(_BAG_OFFSETS)).detach().numpy(),
                               rtol=1e-12)


def test_embedding_bag_refuses_scale_grad_by_freq():
    with pytest.raises(NotImplementedError, match="scale_grad_by_freq"):
        F.embedding_bag(ml.tensor(_BAG_IDS), ml.randn(10, 3), ml.tensor(_BAG_OFFSETS), scale_grad_by_freq=True)


# ---- alpha_dropout / feature_alpha_dropout, AlphaDropout / FeatureAlphaDropout ----------------------
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("p", [0.1, 0.3])
@pytest.mark.parametrize("value", [1.0, -2.5])
@pytest.mark.parametrize("name", ["alpha_dropout", "feature_alpha_dropout"])
def test_alpha_dropout_values_as_torch(name, value, p, dtype):
    """The draws differ (NumPy's generator): the two values a constant input can become (kept: a x + b,
    dropped: SELU's saturation mapped alike) are torch's, bit for bit, computed in torch's steps; the
    feature version decides per channel; the gradient is the scale a where kept, 0 where dropped."""
    x, tx = pair(np.full((200, 6, 5), value), True, dtype)
    out, expected = getattr(F, name)(x, p, True), getattr(TF, name)(tx, p, True)
    assert str(out.dtype) == dtype
    assert set(np.unique(_np(out))) == set(np.unique(_np(expected)))
    if name == "feature_alpha_dropout":
        values = _np(out).reshape(200, 6, -1)
        assert (values == values[:, :, :1]).all()
    out.sum().backward()
    expected.sum().backward()
    assert set(np.unique(_np(x.grad))) == set(np.unique(_np(tx.grad)))


@pytest.mark.parametrize("name", ["alpha_dropout", "feature_alpha_dropout"])
def test_alpha_dropout_defaults_and_edges_as_torch(rng, name):
    x, tx = pair(rng.standard_normal((4, 6, 5)))
    assert getattr(F, name)(x) is x  # torch's default: training=False
    np.testing.assert_array_equal(_np(getattr(F, name)(x, 1.0, True)), _np(getattr(TF, name)(tx, 1.0, True)))
    np.testing.assert_array_equal(_np(getattr(F, name)(x, 0.0, True)), _np(x))
    same_error(lambda: getattr(F, name)(x, 1.5, True), lambda: getattr(TF, name)(tx, 1.5, True))
    ones, tones = pair(np.ones((200, 6, 5)))
    assert set(np.unique(_np(getattr(F, name)(ones, 0.3, True)))) == set(np.unique(_np(getattr(TF, name)(tones, 0.3, True))))


@pytest.mark.parametrize("name", ["AlphaDropout", "FeatureAlphaDropout"])
def test_alpha_dropout_layers_as_torch(name):
    ours, theirs = getattr(nn, name)(0.2), getattr(tnn, name)(0.2)
    assert repr(ours) == repr(theirs)
    x = ml.ones(4, 6, 5)
    assert (ours(x).numpy() != 1).any()
    ours.eval()
    assert ours(x) is x


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
@pytest.mark.parametrize("shape", [(4, 2), (3, 3), (6,)])
def test_embedding_given_a_table_of_another_shape_is_torchs_assertion(cls, shape):
    """``nn.Embedding(3, 2, _weight=w)`` / ``nn.EmbeddingBag(...)`` with ``w`` not [3, 2]: torch's
    AssertionError (EmbeddingBag took any table silently, Embedding raised ValueError)."""
    message = same_error(lambda: getattr(nn, cls)(3, 2, _weight=ml.ones(*shape)),
                         lambda: getattr(tnn, cls)(3, 2, _weight=torch.ones(*shape)))
    assert message == "Shape of weight does not match num_embeddings and embedding_dim"


@pytest.mark.parametrize("options", [dict(), dict(freeze=False, mode="sum"), dict(mode="max", padding_idx=1),
                                     dict(max_norm=1.0, include_last_offset=True)], ids=repr)
def test_embedding_bag_from_pretrained_as_torch(options):
    """``nn.EmbeddingBag.from_pretrained(table, ...)`` (GloVe vectors into a text classifier): the table
    as it is, frozen by default; it was an AttributeError."""
    table = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    ours = nn.EmbeddingBag.from_pretrained(ml.tensor(table), **options)
    theirs = tnn.EmbeddingBag.from_pretrained(torch.tensor(table), **options)
    assert repr(ours) == repr(theirs)
    assert ours.weight.requires_grad == theirs.weight.requires_grad
    ids, offsets = [0, 2, 1, 3, 3], [0, 2, 5]
    out = ours(ml.tensor(ids), ml.tensor(offsets))
    expected = theirs(torch.tensor(ids), torch.tensor(offsets))
    np.testing.assert_allclose(_np(out), _np(expected), rtol=1e-12)
    np.testing.assert_allclose(_np(ours.weight), _np(theirs.weight), rtol=1e-12)  # max_norm renormalises both
    same_error(lambda: nn.EmbeddingBag.from_pretrained(ml.ones(4)), lambda: tnn.EmbeddingBag.from_pretrained(torch.ones(4)))
