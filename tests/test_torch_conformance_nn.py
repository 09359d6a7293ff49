"""torch.nn.functional, torch.nn and torch.optim conformance: PyTorch code runs unchanged and gives
PyTorch's numbers (issue 12, part C).

Each check runs the same call, written the way torch users write it (positional and keyword), in
torch and in minilora, in float64, and compares values, gradients, learning-rate sequences and the
error type where torch raises. Signature checks (``inspect.signature``) make a future drift fail.
"""
import copy
import inspect
import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import minilora as ml
from minilora import nn, optim
from minilora.nn import functional as F
from minilora.optim import lr_scheduler as L
from minilora.testing import grad_check

torch = pytest.importorskip("torch")
TF, tnn, TL = torch.nn.functional, torch.nn, torch.optim.lr_scheduler


# ---- helpers ---------------------------------------------------------------------------------------
def _np(x):
    """A NumPy array from a torch or minilora tensor (or an array)."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        return x.detach().numpy()
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def pair(array, requires_grad=True):
    """The same float64 values as a minilora tensor and a torch tensor."""
    array = np.asarray(array, dtype=np.float64)
    return (ml.tensor(array.copy(), requires_grad=requires_grad),
            torch.tensor(array.copy(), requires_grad=requires_grad))


def check(ml_fn, torch_fn, *arrays, rtol=1e-10, atol=1e-12, constants=()):
    """Run both; compare the outputs and the gradients of every array input (via a random
    projection of the output). ``constants`` are passed as they are to both, after the arrays."""
    mls, ts = zip(*(pair(a) for a in arrays)) if arrays else ((), ())
    out_ml, out_t = ml_fn(*mls, *constants), torch_fn(*ts, *constants)
    np.testing.assert_allclose(_np(out_ml), _np(out_t), rtol=rtol, atol=atol, err_msg="forward")
    seed = np.random.default_rng(1).standard_normal(tuple(out_t.shape))
    (out_ml * ml.tensor(seed)).sum().backward()
    (out_t * torch.tensor(seed)).sum().backward()
    for i, (m, t) in enumerate(zip(mls, ts)):
        if t.grad is None:
            assert m.grad is None or not np.any(_np(m.grad)), f"input {i}: torch has no gradient"
            continue
        np.testing.assert_allclose(_np(m.grad), _np(t.grad), rtol=rtol, atol=atol, err_msg=f"grad of input {i}")
    return out_ml


def same_error(ml_call, torch_call, ml_type=None):
    """Both raise; minilora with torch's exception type (or ``ml_type``)."""
    with pytest.raises(Exception) as torch_error:
        torch_call()
    with pytest.raises(ml_type or type(torch_error.value)):
        ml_call()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- signatures ------------------------------------------------------------------------------------
# torch's builtins have no inspectable signature: their documented ones
BUILTIN_SIGNATURES = {
    "linear": [("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None)],
    "scaled_dot_product_attention": [("query", inspect.Parameter.empty), ("key", inspect.Parameter.empty),
                                     ("value", inspect.Parameter.empty), ("attn_mask", None),
                                     ("dropout_p", 0.0), ("is_causal", False), ("scale", None),
                                     ("enable_gqa", False)],
    "one_hot": [("input", inspect.Parameter.empty), ("num_classes", -1)],  # torch's keyword (doc says tensor)
    "gelu": [("input", inspect.Parameter.empty), ("approximate", "none")],  # approximate keyword-only
    "softplus": [("input", inspect.Parameter.empty), ("beta", 1), ("threshold", 20)],
    "cosine_similarity": [("x1", inspect.Parameter.empty), ("x2", inspect.Parameter.empty), ("dim", 1),
                          ("eps", 1e-8)],
    "logsigmoid": [("input", inspect.Parameter.empty)],
    # the in-place forms (builtins; these are their docstrings' signatures)
    **{name: [("input", inspect.Parameter.empty)] for name in ("relu_", "selu_")},
    **{name: [("input", inspect.Parameter.empty), ("alpha", 1.0)] for name in ("elu_", "celu_")},
    "leaky_relu_": [("input", inspect.Parameter.empty), ("negative_slope", 0.01)],
    "hardtanh_": [("input", inspect.Parameter.empty), ("min_val", -1.0), ("max_val", 1.0)],
    "threshold_": [("input", inspect.Parameter.empty), ("threshold", inspect.Parameter.empty),
                   ("value", inspect.Parameter.empty)],
    "rrelu_": [("input", inspect.Parameter.empty), ("lower", 1.0 / 8), ("upper", 1.0 / 3), ("training", False)],
    "pairwise_distance": [("x1", inspect.Parameter.empty), ("x2", inspect.Parameter.empty), ("p", 2.0),
                          ("eps", 1e-6), ("keepdim", False)],
    # (conv*/avg_pool* are builtins; max_pool* are boolean-dispatch wrappers taking *args, **kwargs)
    **{name: [("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None),
              ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)] for name in ("conv1d", "conv2d")},
    **{name: [("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None),
              ("padding", 0), ("dilation", 1), ("ceil_mode", False), ("return_indices", False)]
       for name in ("max_pool1d", "max_pool2d")},
    "avg_pool1d": [("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None),
                   ("padding", 0), ("ceil_mode", False), ("count_include_pad", True)],
    "avg_pool2d": [("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None),
                   ("padding", 0), ("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None)],
}
BUILTIN_SIGNATURES.update({  # torch builtins without an inspectable signature (their docstrings')
    "hardshrink": [("input", inspect.Parameter.empty), ("lambd", 0.5)],
    "softshrink": [("input", inspect.Parameter.empty), ("lambd", 0.5)],
    "prelu": [("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty)],
    "adaptive_avg_pool1d": [("input", inspect.Parameter.empty), ("output_size", inspect.Parameter.empty)],
    **{name: [("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None), ("stride", 1),
              ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1)]
       for name in ("conv_transpose1d", "conv_transpose2d")},
    "pixel_shuffle": [("input", inspect.Parameter.empty), ("upscale_factor", inspect.Parameter.empty)],
    "pixel_unshuffle": [("input", inspect.Parameter.empty), ("downscale_factor", inspect.Parameter.empty)],
    **{name: [("input", inspect.Parameter.empty), ("output_size", inspect.Parameter.empty), ("return_indices", False)]
       for name in ("adaptive_max_pool1d", "adaptive_max_pool2d")},
    "bilinear": [("input1", inspect.Parameter.empty), ("input2", inspect.Parameter.empty),
                 ("weight", inspect.Parameter.empty), ("bias", None)],
    "conv3d": [("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None),
               ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)],
    "conv_transpose3d": [("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None),
                         ("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1)],
    **{name: [("input", inspect.Parameter.empty), ("groups", inspect.Parameter.empty)]
       for name in ("channel_shuffle", "native_channel_shuffle")},
    "max_pool3d": [("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None),
                   ("padding", 0), ("dilation", 1), ("ceil_mode", False), ("return_indices", False)],
    "avg_pool3d": [("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", None),
                   ("padding", 0), ("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None)],
    "adaptive_max_pool3d": [("input", inspect.Parameter.empty), ("output_size", inspect.Parameter.empty),
                            ("return_indices", False)],
    "pdist": [("input", inspect.Parameter.empty), ("p", 2)],
    "conv_tbc": [("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty),
                 ("bias", inspect.Parameter.empty), ("pad", 0)],
    **{name: [("input", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("output_size", None),
              ("output_ratio", None), ("return_indices", False), ("_random_samples", None)]
       for name in ("fractional_max_pool2d", "fractional_max_pool3d")},
})
MINILORA_ONLY = {"rotary_embedding", "swiglu"}  # no torch.nn.functional counterpart


def _params(fn, drop_self=True):
    return [p for p in inspect.signature(fn).parameters.values() if not (drop_self and p.name == "self")]


def _default(value):
    """A default to compare: a function by its name (torch's default ``activation=F.relu`` is
    minilora's ``F.relu``: same name, another function object)."""
    return ("function", value.__name__) if callable(value) and hasattr(value, "__name__") else value


def _assert_same_signature(ours, theirs, what):
    """Names, order, defaults and kinds as torch's; minilora may add keyword-only extras at the end."""
    ours_core = [(p.name, _default(p.default), p.kind) for p in ours if p.kind != p.KEYWORD_ONLY or
                 p.name in {q.name for q in theirs}]
    theirs_list = [(p.name, _default(p.default), p.kind) for p in theirs]
    assert ours_core == theirs_list, f"{what}: minilora {ours_core}\n   torch {theirs_list}"


@pytest.mark.parametrize("name", sorted(set(F.__all__) - MINILORA_ONLY))
def test_functional_signatures_match_torch(name):
    ours = _params(getattr(F, name))
    if name in BUILTIN_SIGNATURES:
        assert [(p.name, p.default) for p in ours] == BUILTIN_SIGNATURES[name], name
        return
    _assert_same_signature(ours, _params(getattr(TF, name)), f"F.{name}")


def test_every_public_functional_is_checked():
    public = {n for n in dir(F) if not n.startswith("_") and callable(getattr(F, n))
              and getattr(getattr(F, n), "__module__", "").startswith("minilora")}
    assert public <= set(F.__all__), f"public but not in __all__ (so not signature-checked): {public - set(F.__all__)}"


def _torch_counterparts(ours, theirs, names):
    """The classes of ``names`` that torch has too and whose constructor spells out its arguments
    (not ``*args, **kwargs``)."""
    found = []
    for name in names:
        cls, twin = getattr(ours, name), getattr(theirs, name, None)
        if isinstance(cls, type) and isinstance(twin, type):
            kinds = {p.kind for p in _params(twin.__init__)}
            if kinds != {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
                found.append(name)
    return found


MODULES = _torch_counterparts(nn, tnn, nn.__all__)


def test_the_module_list_is_complete():
    assert {"Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout", "GELU", "SiLU", "ReLU", "CrossEntropyLoss",
            "NLLLoss", "MSELoss", "L1Loss", "Sequential", "ModuleList", "ModuleDict"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_constructor_signatures_match_torch(name):
    _assert_same_signature(_params(getattr(nn, name).__init__), _params(getattr(tnn, name).__init__), f"nn.{name}")


@pytest.mark.parametrize("fn", ["Embedding.from_pretrained", "Module.register_forward_hook",
                                "Module.register_forward_pre_hook", "Module.zero_grad",
                                "utils.clip_grad_norm_", "utils.clip_grad_value_"])
def test_nn_method_signatures_match_torch(fn):
    owner, name = fn.split(".")
    ours, theirs = getattr(getattr(nn, owner), name), getattr(getattr(tnn, owner), name)
    _assert_same_signature(_params(ours), _params(theirs), f"nn.{fn}")


@pytest.mark.parametrize("name", ["uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_",
                                  "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
                                  "calculate_gain"])
def test_init_signatures_match_torch(name):
    _assert_same_signature(_params(getattr(nn.init, name)), _params(getattr(tnn.init, name)), f"nn.init.{name}")


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_signatures_match_torch(name):
    _assert_same_signature(_params(getattr(optim, name).__init__), _params(getattr(torch.optim, name).__init__),
                           f"optim.{name}")
    _assert_same_signature(_params(optim.Optimizer.zero_grad), _params(torch.optim.Optimizer.zero_grad), "zero_grad")


@pytest.mark.parametrize("name", _torch_counterparts(L, TL, L.__all__))
def test_scheduler_signatures_match_torch(name):
    _assert_same_signature(_params(getattr(L, name).__init__), _params(getattr(TL, name).__init__), name)


def test_checkpoint_takes_torchs_keywords():
    from torch.utils.checkpoint import checkpoint as torch_checkpoint
    ours = [p.name for p in _params(nn.checkpoint)]
    theirs = [p.name for p in _params(torch_checkpoint)]
    assert ours == theirs[:len(ours)] and "use_reentrant" in ours


# ---- layer_norm / rms_norm -------------------------------------------------------------------------
def test_layer_norm_reads_torchs_arguments(rng):
    x, w, b = rng.standard_normal((2, 3, 6)), rng.standard_normal(6), rng.standard_normal(6)
    check(lambda x, w, b: F.layer_norm(x, (6,), w, b), lambda x, w, b: TF.layer_norm(x, (6,), w, b), x, w, b)
    check(lambda x: F.layer_norm(x, [6]), lambda x: TF.layer_norm(x, [6]), x)  # no weight: not scaled by 6
    # normalized_shape=6 (a bare int) is torch's TypeError in F.layer_norm (only nn.LayerNorm takes an
    # int): tests/test_torch_conformance_r4_nn.py checks that refusal; the list form here
    check(lambda x, w: F.layer_norm(x, normalized_shape=[6], weight=w, eps=1e-2),
          lambda x, w: TF.layer_norm(x, normalized_shape=[6], weight=w, eps=1e-2), x, w)
    # several trailing dimensions
    w2, b2 = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    check(lambda x, w, b: F.layer_norm(x, (3, 6), w, b, 1e-3), lambda x, w, b: TF.layer_norm(x, (3, 6), w, b, 1e-3),
          x, w2, b2)


def test_rms_norm_reads_torchs_arguments_and_eps_none(rng):
    x, w = rng.standard_normal((4, 5)) * 1e-9, rng.standard_normal(5)  # tiny rows: eps shows
    check(lambda x: F.rms_norm(x, (5,)), lambda x: TF.rms_norm(x, (5,)), x, rtol=1e-9)
    check(lambda x, w: F.rms_norm(x, [5], w), lambda x, w: TF.rms_norm(x, [5], w), x, w, rtol=1e-9)
    # (a bare int 5 is torch's TypeError: tests/test_torch_conformance_r4_nn.py)
    check(lambda x, w: F.rms_norm(x, [5], weight=w, eps=1e-6), lambda x, w: TF.rms_norm(x, [5], weight=w, eps=1e-6),
          x, w)
    x3, w3 = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4))
    check(lambda x, w: F.rms_norm(x, (3, 4), w), lambda x, w: TF.rms_norm(x, (3, 4), w), x3, w3)
    # float32 with eps=None uses float32's epsilon
    x32 = (rng.standard_normal((3, 4)) * 1e-4).astype(np.float32)
    np.testing.assert_allclose(F.rms_norm(ml.tensor(x32), (4,)).numpy(),
                               TF.rms_norm(torch.tensor(x32), (4,)).numpy(), rtol=1e-5)


def test_norm_modules_match_torch(rng):
    x = rng.standard_normal((2, 3, 4))
    for ours, theirs in [(nn.RMSNorm(4, dtype=ml.float64), tnn.RMSNorm(4, dtype=torch.float64)),
                         (nn.RMSNorm((3, 4), eps=1e-3, dtype=ml.float64), tnn.RMSNorm((3, 4), eps=1e-3, dtype=torch.float64)),
                         (nn.LayerNorm([3, 4], dtype=ml.float64), tnn.LayerNorm([3, 4], dtype=torch.float64)),
                         (nn.LayerNorm(4, 1e-3, True, False, None, ml.float64),
                          tnn.LayerNorm(4, 1e-3, True, False, None, torch.float64))]:
        assert ours.eps == theirs.eps and tuple(ours.normalized_shape) == tuple(theirs.normalized_shape)
        np.testing.assert_allclose(ours(ml.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    assert nn.RMSNorm(4).eps is None and nn.RMSNorm(4, elementwise_affine=False).weight is None


def test_norm_shape_errors_as_torch(rng):
    x = rng.standard_normal((2, 5))
    same_error(lambda: F.layer_norm(ml.tensor(x), (6,)), lambda: TF.layer_norm(torch.tensor(x), (6,)))
    same_error(lambda: F.rms_norm(ml.tensor(x), (5,), ml.tensor(np.ones(4))),
               lambda: TF.rms_norm(torch.tensor(x), (5,), torch.ones(4, dtype=torch.float64)))
    with pytest.raises(TypeError, match="normalized_shape"):  # the old (x, weight, bias) order
        F.layer_norm(ml.tensor(x), ml.tensor(np.ones(5)))


# ---- scaled_dot_product_attention -----------------------------------------------------------------
def qkv(rng, b=2, hq=2, hkv=2, tq=3, tk=3, d=4, dv=None):
    return (rng.standard_normal((b, hq, tq, d)), rng.standard_normal((b, hkv, tk, d)),
            rng.standard_normal((b, hkv, tk, dv or d)))


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"scale": 0.3}, {"is_causal": True, "scale": 2.0}],
                         ids=["default-not-causal", "causal", "scale", "causal+scale"])
@pytest.mark.parametrize("tq, tk", [(3, 3), (2, 5), (5, 3)], ids=["L=S", "L<S(top-left)", "L>S"])
def test_sdpa_matches_torch(rng, kwargs, tq, tk):
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **kwargs), *qkv(rng, tq=tq, tk=tk))


def test_sdpa_masks_as_torch(rng):
    q, k, v = qkv(rng, tq=3, tk=4)
    boolean = np.array([[True, False, True, True], [False, False, False, False], [True, True, False, True]])
    additive = rng.standard_normal((2, 1, 3, 4))
    # a boolean mask means "True = take part"; a row with no key left gives zeros (and no gradient)
    for mask_ml, mask_t in [(ml.tensor(boolean), torch.tensor(boolean)), (ml.tensor(additive), torch.tensor(additive))]:
        check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask_ml),
              lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, mask_t), q, k, v)
    out = F.scaled_dot_product_attention(*(ml.tensor(a) for a in (q, k, v)), attn_mask=ml.tensor(boolean))
    assert not np.isnan(out.numpy()).any() and not out.numpy()[:, :, 1].any()
    # attn_mask together with is_causal: torch 2.13 applies both on this 4-D, no-dropout path (and raises
    # on others): tests/test_torch_conformance_r4_nn.py sweeps where
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, ml.tensor(additive), is_causal=True),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, torch.tensor(additive), is_causal=True), q, k, v)
    same_error(lambda: F.scaled_dot_product_attention(*(ml.tensor(a) for a in (q, k, v)), ml.tensor(boolean.astype(np.int64))),
               lambda: TF.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)), torch.tensor(boolean.astype(np.int64))))


def test_sdpa_grouped_query_heads_need_enable_gqa(rng):
    q, k, v = qkv(rng, hq=4, hkv=2)
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), q, k, v)
    same_error(lambda: F.scaled_dot_product_attention(*(ml.tensor(a) for a in (q, k, v))),
               lambda: TF.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v))))
    q1, k1, v1 = qkv(rng, hq=3, hkv=1)  # one key/value head broadcasts, as in torch
    check(F.scaled_dot_product_attention, TF.scaled_dot_product_attention, q1, k1, v1)
    q2, k2, v2 = qkv(rng, b=3, hq=2, hkv=2)  # so does a batch of one key/value
    check(F.scaled_dot_product_attention, TF.scaled_dot_product_attention, q2, k2[:1], v2[:1])
    same_error(lambda: F.scaled_dot_product_attention(ml.tensor(q2), ml.tensor(k2[:2]), ml.tensor(v2[:2])),
               lambda: TF.scaled_dot_product_attention(torch.tensor(q2), torch.tensor(k2[:2]), torch.tensor(v2[:2])))


@pytest.mark.parametrize("shape_q, shape_k", [((2, 3, 4), (2, 5, 4)), ((3, 4), (5, 4)), ((2, 2, 2, 3, 4), (2, 2, 2, 5, 4))],
                         ids=["3-D", "2-D", "5-D"])
def test_sdpa_other_ranks(rng, shape_q, shape_k):
    q, k, v = rng.standard_normal(shape_q), rng.standard_normal(shape_k), rng.standard_normal(shape_k[:-1] + (6,))
    mask = rng.standard_normal(shape_q[-2:-1] + shape_k[-2:-1])
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v)
    check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, ml.tensor(mask)),
          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, torch.tensor(mask)), q, k, v)


def test_sdpa_dropout(rng):
    q, k, v = (ml.tensor(a, requires_grad=True) for a in qkv(rng, hq=4, hkv=2, tq=4, tk=4))
    # dropout_p=1 drops every weight: zeros, as torch
    zero = F.scaled_dot_product_attention(q, k, v, dropout_p=1.0, enable_gqa=True)
    assert not zero.numpy().any()
    # the project's RNG: the same seed gives the same mask; equal to dropout applied by hand
    ml.manual_seed(5)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4, is_causal=True, enable_gqa=True)
    ml.manual_seed(5)
    kk, vv = (ml.tensor(np.repeat(t.numpy(), 2, axis=1)) for t in (k, v))
    causal = np.where(np.tri(4, dtype=bool), 0.0, -np.inf)
    probs = F.softmax(q.detach() @ kk.transpose(-1, -2) * (1 / 2.0) + ml.tensor(causal), dim=-1)
    np.testing.assert_allclose(out.numpy(), (F.dropout(probs, 0.4) @ vv).numpy(), rtol=1e-12)
    grad_check(lambda q, k, v: (ml.manual_seed(7),
                                F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, enable_gqa=True))[1],
               q, k, v)


# ---- cross_entropy and the other losses ------------------------------------------------------------
CE_CASES = {
    "[N,C]": ((6, 5), [1, 0, 4, -100, 2, 2]),
    "[N,C,d1,d2]": ((2, 5, 3, 2), [[[1, 0], [4, -100], [2, 2]], [[3, 3], [0, 1], [-100, 4]]]),
    "[C]": ((5,), 3),
}
CE_OPTIONS = {
    "mean": {}, "sum": {"reduction": "sum"}, "none": {"reduction": "none"},
    "weight": {"weight": [0.5, 2.0, 1.0, 0.1, 3.0]},
    "weight-sum": {"weight": [0.5, 2.0, 1.0, 0.1, 3.0], "reduction": "sum"},
    "weight-none": {"weight": [0.5, 2.0, 1.0, 0.1, 3.0], "reduction": "none"},
    "ignore_index=2": {"ignore_index": 2},
    "smoothing": {"label_smoothing": 0.2},
    "smoothing+weight": {"label_smoothing": 0.3, "weight": [0.5, 2.0, 1.0, 0.1, 3.0]},
    "smoothing+weight-none": {"label_smoothing": 0.3, "weight": [0.5, 2.0, 1.0, 0.1, 3.0], "reduction": "none"},
    "smoothing-sum": {"label_smoothing": 0.1, "reduction": "sum"},
    "legacy size_average=False": {"size_average": False},
    "legacy reduce=False": {"reduce": False},
}


def _ce_kwargs(options, lib):
    kwargs = dict(options)
    if "weight" in kwargs:
        kwargs["weight"] = (ml.tensor if lib == "ml" else torch.tensor)(np.array(kwargs["weight"]))
    return kwargs


@pytest.mark.parametrize("option", list(CE_OPTIONS))
@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_matches_torch(rng, case, option):
    shape, target = CE_CASES[case]
    # -100 marks the ignored targets: the option's ignore_index there (torch refuses any other value)
    target = np.where(np.array(target) == -100, CE_OPTIONS[option].get("ignore_index", -100), target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation warning for size_average/reduce
        check(lambda x: F.cross_entropy(x, ml.tensor(target), **_ce_kwargs(CE_OPTIONS[option], "ml")),
              lambda x: TF.cross_entropy(x, torch.tensor(target), **_ce_kwargs(CE_OPTIONS[option], "torch")),
              rng.standard_normal(shape))


def test_cross_entropy_positional_arguments(rng):
    x, t, w = rng.standard_normal((4, 3)), np.array([0, 2, -1, 1]), np.array([1.0, 2.0, 0.5])
    check(lambda x: F.cross_entropy(x, ml.tensor(t), ml.tensor(w), None, -1, None, "sum", 0.1),
          lambda x: TF.cross_entropy(x, torch.tensor(t), torch.tensor(w), None, -1, None, "sum", 0.1), x)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2}, {"weight": [0.5, 2.0, 1.0]},
                                     {"reduction": "none", "weight": [0.5, 2.0, 1.0], "label_smoothing": 0.1}])
def test_cross_entropy_with_probabilities(rng, options):
    x, p = rng.standard_normal((2, 3, 4)), rng.dirichlet(np.ones(3), size=(2, 4)).transpose(0, 2, 1)
    check(lambda x, p: F.cross_entropy(x, p, **_ce_kwargs(options, "ml")),
          lambda x, p: TF.cross_entropy(x, p, **_ce_kwargs(options, "torch")), x, p)  # target gets a gradient too


def test_cross_entropy_errors_as_torch(rng):
    x, t = rng.standard_normal((2, 3, 7)), rng.integers(0, 7, (2, 3))
    # [B, T, C] logits: torch reads T as the classes, so [B, T] targets are the wrong shape
    same_error(lambda: F.cross_entropy(ml.tensor(x), ml.tensor(t)), lambda: TF.cross_entropy(torch.tensor(x), torch.tensor(t)))
    with pytest.raises(RuntimeError, match=r"reshape\(-1, C\)"):
        F.cross_entropy(ml.tensor(x), ml.tensor(t))
    same_error(lambda: F.cross_entropy(ml.tensor(x[0]), ml.tensor(t[0, :2])),
               lambda: TF.cross_entropy(torch.tensor(x[0]), torch.tensor(t[0, :2])))
    same_error(lambda: F.cross_entropy(ml.tensor(x[0]), ml.tensor(np.array([0, 9, 1]))),
               lambda: TF.cross_entropy(torch.tensor(x[0]), torch.tensor([0, 9, 1])))
    # all targets ignored: nan, as torch
    assert np.isnan(F.cross_entropy(ml.tensor(x[0]), ml.tensor(np.full(3, -100))).item())
    # the model's call: flattened [B*T, C]
    check(lambda x: F.cross_entropy(x.reshape(-1, 7), ml.tensor(t.reshape(-1))),
          lambda x: TF.cross_entropy(x.reshape(-1, 7), torch.tensor(t.reshape(-1))), x)


@pytest.mark.parametrize("options", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 1},
                                     {"weight": [1.0, 0.2, 3.0]}])
def test_nll_loss_matches_torch(rng, options):
    x, t = rng.standard_normal((4, 3, 2)), np.array([[0, 1], [2, 2], [1, -100], [0, 2]])
    t = np.where(t == -100, options.get("ignore_index", -100), t)
    check(lambda x: F.nll_loss(F.log_softmax(x, 1), ml.tensor(t), **_ce_kwargs(options, "ml")),
          lambda x: TF.nll_loss(TF.log_softmax(x, 1), torch.tensor(t), **_ce_kwargs(options, "torch")), x)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pointwise_losses_match_torch(rng, name, reduction):
    x, y, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.random((3, 4))
    check(lambda x, y: getattr(F, name)(x, y, reduction=reduction),
          lambda x, y: getattr(TF, name)(x, y, reduction=reduction), x, y)
    check(lambda x, y, w: getattr(F, name)(x, y, None, None, reduction, w),
          lambda x, y, w: getattr(TF, name)(x, y, None, None, reduction, w), x, y, w)  # mean: / sum(w)
    same_error(lambda: getattr(F, name)(ml.tensor(x), ml.tensor(y), weight=ml.tensor(w[0])),
               lambda: getattr(TF, name)(torch.tensor(x), torch.tensor(y), weight=torch.tensor(w[0])))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropies_match_torch(rng, reduction):
    """F.binary_cross_entropy(_with_logits) and their modules (missing before h17), large logits
    included (the stable form), probabilities of exactly 0 and 1 (torch clamps each log at -100)."""
    x, y = rng.standard_normal((4, 3)) * 30, (rng.random((4, 3)) > 0.5) * 1.0
    w, pw = rng.random((4, 3)), rng.random(3) * 3
    check(lambda x: F.binary_cross_entropy_with_logits(x, ml.tensor(y), reduction=reduction),
          lambda x: TF.binary_cross_entropy_with_logits(x, torch.tensor(y), reduction=reduction), x)
    check(lambda x: F.binary_cross_entropy_with_logits(x, ml.tensor(y), ml.tensor(w), reduction=reduction,
                                                       pos_weight=ml.tensor(pw)),
          lambda x: TF.binary_cross_entropy_with_logits(x, torch.tensor(y), torch.tensor(w), reduction=reduction,
                                                        pos_weight=torch.tensor(pw)), x)
    p = rng.random((4, 3))
    p[0, 0], p[1, 1] = 0.0, 1.0  # 0 * log(0) is 0 through the clamp, and the gradient is finite
    y[0, 0], y[1, 1] = 0.0, 1.0  # (where y differs it is (x - y) / 1e-12: compared to rounding only)
    check(lambda p: F.binary_cross_entropy(p, ml.tensor(y), ml.tensor(w), reduction=reduction),
          lambda p: TF.binary_cross_entropy(p, torch.tensor(y), torch.tensor(w), reduction=reduction), p)
    check(lambda x: nn.BCEWithLogitsLoss(pos_weight=ml.tensor(pw), reduction=reduction)(x, ml.tensor(y)),
          lambda x: tnn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw), reduction=reduction)(x, torch.tensor(y)), x)
    check(lambda p: nn.BCELoss(reduction=reduction)(p, ml.tensor(y)),
          lambda p: tnn.BCELoss(reduction=reduction)(p, torch.tensor(y)), rng.random((4, 3)))
    same_error(lambda: F.binary_cross_entropy_with_logits(ml.tensor(x), ml.tensor(y[0])),
               lambda: TF.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y[0])))
    same_error(lambda: F.binary_cross_entropy(ml.tensor(x), ml.tensor(y)),
               lambda: TF.binary_cross_entropy(torch.tensor(x), torch.tensor(y)))
    if reduction == "none":  # float64 central differences too, inside (0, 1), input and target
        from minilora.testing import grad_check
        q = ml.tensor(rng.random((3, 2)) * 0.8 + 0.1, requires_grad=True)
        z = ml.tensor(rng.random((3, 2)), requires_grad=True)
        grad_check(lambda q, z: F.binary_cross_entropy(q, z, reduction="none"), q, z, name="bce")
        grad_check(lambda q, z: F.binary_cross_entropy_with_logits(q, z, reduction="none"), q, z,
                   name="bce_with_logits")


def test_flatten_and_softmax_modules_match_torch(rng):
    x = rng.standard_normal((2, 3, 4))
    check(lambda x: nn.Flatten()(x), lambda x: tnn.Flatten()(x), x)
    check(lambda x: nn.Flatten(0, 1)(x), lambda x: tnn.Flatten(0, 1)(x), x)
    check(lambda x: nn.Softmax(dim=-1)(x), lambda x: tnn.Softmax(dim=-1)(x), x)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        check(lambda x: nn.Softmax()(x), lambda x: tnn.Softmax()(x), x)


def test_view_to_a_dtype_is_refused_clearly():
    """torch reinterprets the bytes; minilora says it does not, instead of a confusing TypeError."""
    with pytest.raises(NotImplementedError, match="reinterprets"):
        ml.ones(2).view(ml.int32)


def test_loss_modules_match_torch(rng):
    x, t, w = rng.standard_normal((5, 3)), np.array([0, 2, 1, 1, -100]), np.array([1.0, 0.5, 2.0])
    check(lambda x: nn.CrossEntropyLoss(ml.tensor(w), label_smoothing=0.1)(x, ml.tensor(t)),
          lambda x: tnn.CrossEntropyLoss(torch.tensor(w), label_smoothing=0.1)(x, torch.tensor(t)), x)
    check(lambda x: nn.NLLLoss(reduction="sum")(x, ml.tensor(t)), lambda x: tnn.NLLLoss(reduction="sum")(x, torch.tensor(t)), x)
    y = rng.standard_normal((5, 3))
    check(lambda x, y: nn.MSELoss()(x, y), lambda x, y: tnn.MSELoss()(x, y), x, y)
    check(lambda x, y: nn.L1Loss(reduction="none")(x, y), lambda x, y: tnn.L1Loss(reduction="none")(x, y), x, y)
    assert "weight" in nn.CrossEntropyLoss(ml.tensor(w)).state_dict()  # a buffer, as torch


# ---- the other functionals -------------------------------------------------------------------------
@pytest.mark.parametrize("pad, value", [((1, 2), None), ((1, 0, 2, 1), 3.5), ((-1, 2, 0, 0, 1, 1), -1.0), ((0, -2), None)])
def test_pad_matches_torch(rng, pad, value):
    check(lambda x: F.pad(x, pad, "constant", value), lambda x: TF.pad(x, pad, "constant", value),
          rng.standard_normal((2, 3, 4)))
    check(lambda x: F.pad(x, list(pad), value=value or 0.0), lambda x: TF.pad(x, list(pad), value=value or 0.0),
          rng.standard_normal((2, 3, 4)))


def test_pad_other_modes_raise_clearly(rng):
    # reflect/replicate/circular are implemented (tests in test_torch_conformance_more.py); a mode
    # torch does not know raises its NotImplementedError
    with pytest.raises(NotImplementedError, match="padding mode"):
        F.pad(ml.tensor(rng.standard_normal((1, 2, 4))), (1, 1), mode="mirror")


def test_gelu_approximate_is_keyword_only_as_torch(rng):
    x = rng.standard_normal(3)
    same_error(lambda: F.gelu(ml.tensor(x), "tanh"), lambda: TF.gelu(torch.tensor(x), "tanh"))
    assert inspect.signature(F.gelu).parameters["approximate"].kind == inspect.Parameter.KEYWORD_ONLY


def test_one_hot_matches_torch():
    ids = np.array([[0, 3], [2, 1]])
    np.testing.assert_array_equal(F.one_hot(ml.tensor(ids)).numpy(), TF.one_hot(torch.tensor(ids)).numpy())
    out = F.one_hot(ml.tensor(ids), num_classes=6)
    assert out.dtype == np.int64 and out.shape == (2, 2, 6)
    np.testing.assert_array_equal(out.numpy(), TF.one_hot(torch.tensor(ids), 6).numpy())
    same_error(lambda: F.one_hot(ml.tensor(ids), 3), lambda: TF.one_hot(torch.tensor(ids), 3))
    same_error(lambda: F.one_hot(ml.tensor(np.array([0.0, 1.0]))), lambda: TF.one_hot(torch.tensor([0.0, 1.0])))


@pytest.mark.parametrize("call", [
    lambda F, x: F.gelu(x), lambda F, x: F.gelu(x, approximate="tanh"), lambda F, x: F.gelu(input=x),
    lambda F, x: F.silu(x), lambda F, x: F.relu(x), lambda F, x: F.sigmoid(x), lambda F, x: F.tanh(x),
    lambda F, x: F.softmax(x, 1), lambda F, x: F.softmax(x, dim=-1), lambda F, x: F.log_softmax(x, 0),
    lambda F, x: F.log_softmax(input=x, dim=2), lambda F, x: F.dropout(x, 0.3, False),
    lambda F, x: F.dropout(x, p=0.0, training=True),
], ids=["gelu", "gelu(tanh)", "gelu(input=)", "silu", "relu", "sigmoid", "tanh", "softmax", "softmax(dim=-1)",
        "log_softmax", "log_softmax(kw)", "dropout(eval)", "dropout(p=0)"])
def test_activations_match_torch(rng, call):
    check(lambda x: call(F, x), lambda x: call(TF, x), rng.standard_normal((2, 3, 4)))


def test_softmax_implicit_dim_and_dtype_as_torch(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        ours = F.softmax(ml.tensor(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(ours.numpy(), TF.softmax(torch.tensor(x)).numpy(), rtol=1e-6)  # dim 1 for 2-D
    out = F.log_softmax(ml.tensor(x), dim=0, dtype=ml.float64)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), TF.log_softmax(torch.tensor(x), 0, dtype=torch.float64).numpy(), rtol=1e-12)


def test_dropout_training_and_inplace():
    x = ml.ones(400, 50)
    y = F.dropout(x, 0.25).numpy()
    assert abs((y != 0).mean() - 0.75) < 0.02 and np.allclose(y[y != 0], 1 / 0.75)
    assert F.dropout(x, 0.5, True, True) is x  # inplace=True: torch's dropout_ (tests/test_torch_conformance_r5_inplace.py)
    assert abs((x.numpy() != 0).mean() - 0.5) < 0.03


def test_linear_and_embedding_match_torch(rng):
    check(F.linear, TF.linear, rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5))
    check(lambda x, w: F.linear(input=x, weight=w), lambda x, w: TF.linear(input=x, weight=w),
          rng.standard_normal((3, 4)), rng.standard_normal((2, 4)))
    ids = np.array([[0, 2, 2], [3, 0, 1]])
    check(lambda w: F.embedding(ml.tensor(ids), w, 2), lambda w: TF.embedding(torch.tensor(ids), w, 2),
          rng.standard_normal((4, 3)))
    weight = ml.tensor(np.full((4, 3), 2.0))  # max_norm rescales the looked-up rows in place, as torch
    F.embedding(ml.tensor(ids), weight, None, 1.0)
    assert np.allclose(np.linalg.norm(weight.numpy(), axis=1), 1.0, atol=1e-6)  # every row was looked up


# ---- modules ------------------------------------------------------------------------------------------
def test_linear_argument_order_and_from_pretrained(rng):
    layer = nn.Linear(3, 2, False, None, ml.float64)  # (in, out, bias, device, dtype), positionally
    assert layer.bias is None and layer.weight.dtype == np.float64
    table = rng.standard_normal((5, 3))
    ours, theirs = nn.Embedding.from_pretrained(ml.tensor(table)), tnn.Embedding.from_pretrained(torch.tensor(table))
    assert ours.weight.requires_grad == theirs.weight.requires_grad == False  # noqa: E712 (frozen by default)
    ids = np.array([1, 4, 4])
    np.testing.assert_array_equal(ours(ml.tensor(ids)).numpy(), theirs(torch.tensor(ids)).numpy())
    ours = nn.Embedding.from_pretrained(ml.tensor(table), freeze=False, padding_idx=1)
    theirs = tnn.Embedding.from_pretrained(torch.tensor(table), freeze=False, padding_idx=1)
    assert ours.weight.requires_grad and ours.padding_idx == 1
    np.testing.assert_array_equal(ours.weight.numpy(), table)  # the padding row is not zeroed, as torch
    ours(ml.tensor(ids)).sum().backward()
    theirs(torch.tensor(ids)).sum().backward()
    np.testing.assert_array_equal(_np(ours.weight.grad), theirs.weight.grad.numpy())


def test_sequential_as_torch(rng):
    torch.manual_seed(0)
    twin = tnn.Sequential(tnn.Linear(4, 5), tnn.GELU(), tnn.Linear(5, 3), tnn.Tanh(), tnn.Sigmoid(), tnn.Identity())
    ours = nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 3), nn.Tanh(), nn.Sigmoid(), nn.Identity())
    ours.load_state_dict({k: v.detach().numpy() for k, v in twin.state_dict().items()})
    assert list(ours.state_dict()) == list(twin.state_dict())
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(ml.tensor(x)).numpy(), twin(torch.tensor(x)).detach().numpy(), rtol=1e-5)
    assert len(ours) == 6 and isinstance(ours[1], nn.GELU) and isinstance(ours[-1], nn.Identity)
    assert isinstance(ours[1:3], nn.Sequential) and len(ours[1:3]) == 2
    ours.append(nn.ReLU())
    assert len(ours) == 7 and "6" in dict(ours.named_children())
    del ours[0]
    assert list(dict(ours.named_children())) == [str(i) for i in range(6)]  # renumbered, as torch
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.SiLU())]))
    assert list(dict(named.named_children())) == ["fc", "act"] and isinstance(named[1], nn.SiLU)


def test_forward_hooks_as_torch(rng):
    x = rng.standard_normal((2, 3))
    results = []
    for lib, T in (("ml", ml.tensor), ("torch", torch.tensor)):
        mod = (nn if lib == "ml" else tnn).Linear(3, 3, dtype=ml.float64 if lib == "ml" else torch.float64)
        with (ml.no_grad() if lib == "ml" else torch.no_grad()):
            for p in mod.parameters():
                p.copy_(T(np.eye(3) if p.ndim == 2 else np.zeros(3)))
        seen = []
        pre = mod.register_forward_pre_hook(lambda m, args: args[0] * 2)  # a non-tuple replaces the input
        post = mod.register_forward_hook(lambda m, args, out: out + 1)   # replaces the output
        spy = mod.register_forward_hook(lambda m, args, out: seen.append(float(_np(out).sum())), prepend=True)
        first = _np(mod(T(x)))
        pre.remove()
        second = _np(mod(T(x)))
        post.remove()
        spy.remove()
        third = _np(mod(T(x)))
        kw = mod.register_forward_pre_hook(lambda m, args, kwargs: ((args[0] * 3,), kwargs), with_kwargs=True)
        fourth = _np(mod(T(x)))
        kw.remove()
        results.append((first, second, third, fourth, seen))
    (a, b, c, d, s), (ta, tb, tc, td, ts) = results
    for ours, theirs in ((a, ta), (b, tb), (c, tc), (d, td)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(s, ts)  # the prepended hook saw the output before "+1"
    np.testing.assert_allclose(a, 2 * x + 1)


def test_clip_grad_as_torch(rng):
    grads = [rng.standard_normal((3, 4)) * 5, rng.standard_normal(7)]
    ours = [ml.tensor(g * 0, requires_grad=True) for g in grads]
    theirs = [torch.tensor(g * 0, requires_grad=True) for g in grads]
    for o, t, g in zip(ours, theirs, grads):
        (o * ml.tensor(g)).sum().backward()
        t.grad = torch.tensor(g)
    total = ml.nn.utils.clip_grad_norm_(ours, 2.0, norm_type=2.0, error_if_nonfinite=False, foreach=None)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 2.0, 2.0, False, None)
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    ml.nn.utils.clip_grad_value_(ours, 0.1, foreach=None)
    torch.nn.utils.clip_grad_value_(theirs, 0.1)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(_np(o.grad), t.grad.numpy(), rtol=1e-12)
    assert optim.clip_grad_value_ is not None and optim.clip_grad_norm_ is not None


def test_checkpoint_use_reentrant(rng):
    layer = nn.Linear(3, 3, dtype=ml.float64)
    x = ml.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    out = nn.checkpoint(layer, x, use_reentrant=False)
    np.testing.assert_allclose(out.numpy(), layer(x).numpy())
    out.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    out = nn.checkpoint(layer, x, use_reentrant=True)  # (torch's reentrant variant: tests/test_checkpoint_r8.py)
    np.testing.assert_allclose(out.numpy(), layer(x).numpy())


# ---- optimizers ------------------------------------------------------------------------------------
def _twins(rng, shapes=((3, 4), (5,))):
    values = [rng.standard_normal(s) for s in shapes]
    return [nn.Parameter(v.copy()) for v in values], [torch.nn.Parameter(torch.tensor(v.copy())) for v in values]


def _run_steps(ours, theirs, opt_ml, opt_t, rng, steps=6):
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape) for p in ours]
        for p, g in zip(ours, grads):
            p.grad = None
            (p * ml.tensor(g)).sum().backward()
        for p, g in zip(theirs, grads):
            p.grad = torch.tensor(g)
        opt_ml.step()
        opt_t.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, kwargs", [
    ("Adam", {"lr": 0.1}), ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.1, "maximize": True, "decoupled_weight_decay": True, "weight_decay": 0.2}),
    ("AdamW", {"lr": 0.1}), ("AdamW", {"lr": 0.1, "weight_decay": 0.3, "maximize": True, "foreach": False}),
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
])
def test_optimizers_match_torch(rng, name, kwargs):
    ours, theirs = _twins(rng)
    _run_steps(ours, theirs, getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs), rng)


def test_optimizer_options_that_are_not_implemented_raise(rng):
    ours, _ = _twins(rng)
    with pytest.raises(NotImplementedError, match="differentiable"):
        optim.SGD(ours, differentiable=True)


def test_optimizer_state_param_groups_and_zero_grad_as_torch(rng):
    ours, theirs = _twins(rng)
    opt, topt = optim.AdamW(ours[:1], lr=0.1), torch.optim.AdamW(theirs[:1], lr=0.1)
    assert opt.state[ours[0]] == {} == topt.state[theirs[0]]  # a defaultdict(dict), keyed by parameter
    opt.add_param_group({"params": [ours[1]], "lr": 0.01})
    topt.add_param_group({"params": [theirs[1]], "lr": 0.01})
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in topt.param_groups]
    _run_steps(ours, theirs, opt, topt, rng, steps=2)
    assert set(opt.state[ours[0]]) == set(topt.state[theirs[0]]) == {"step", "exp_avg", "exp_avg_sq"}
    opt.zero_grad(set_to_none=False)
    assert not _np(ours[0].grad).any()
    opt.zero_grad()
    assert ours[0].grad is None


def test_state_dict_layout_and_loading_torchs_own(rng):
    ours, theirs = _twins(rng)
    opt, topt = optim.AdamW(ours, lr=0.1, weight_decay=0.05), torch.optim.AdamW(theirs, lr=0.1, weight_decay=0.05)
    _run_steps(ours, theirs, opt, topt, rng, steps=3)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["param_groups"] == tsd["param_groups"]
    assert set(sd["state"]) == set(tsd["state"]) == {0, 1}
    step = sd["state"][0]["step"]
    assert step.shape == () and step.dtype == np.float32 and float(step) == float(tsd["state"][0]["step"])
    for as_numpy in (False, True):  # torch's tensors, or the same converted to NumPy
        tsd = copy.deepcopy(topt.state_dict())  # torch's next steps write into its step tensors
        state = {"state": {i: {k: v.numpy() if as_numpy else v for k, v in st.items()} for i, st in tsd["state"].items()},
                 "param_groups": tsd["param_groups"]}
        fresh = [nn.Parameter(t.detach().numpy().copy()) for t in theirs]
        opt2 = optim.AdamW(fresh, lr=0.5)
        opt2.load_state_dict(state)
        assert opt2.state[fresh[0]]["step"] == 3 and opt2.param_groups[0]["lr"] == 0.1
        twin = [torch.nn.Parameter(t.detach().clone()) for t in theirs]
        topt2 = torch.optim.AdamW(twin, lr=0.5)
        topt2.load_state_dict(tsd)
        _run_steps(fresh, twin, opt2, topt2, np.random.default_rng(3), steps=2)
    # amsgrad switched on by the saved groups without its state: torch's KeyError at the next step
    bad = dict(tsd, param_groups=[dict(g, amsgrad=True) for g in tsd["param_groups"]])
    fresh = [nn.Parameter(t.detach().numpy().copy()) for t in theirs]
    opt3 = optim.AdamW(fresh)
    opt3.load_state_dict(bad)
    for p in fresh:
        p.grad = ml.tensor(np.ones(p.shape))
    with pytest.raises(KeyError, match="max_exp_avg_sq"):
        opt3.step()


# ---- learning-rate schedulers ----------------------------------------------------------------------
SCHEDULERS = {
    "StepLR": lambda S, o: S.StepLR(o, 7, gamma=0.5),
    "MultiStepLR": lambda S, o: S.MultiStepLR(o, milestones=[3, 8, 8, 20]),
    "ConstantLR": lambda S, o: S.ConstantLR(o),
    "ConstantLR(0.5,10)": lambda S, o: S.ConstantLR(o, 0.5, 10),
    "LinearLR": lambda S, o: S.LinearLR(o),
    "LinearLR(0.1,0.7,13)": lambda S, o: S.LinearLR(o, 0.1, 0.7, 13),
    "ExponentialLR": lambda S, o: S.ExponentialLR(o, 0.93),
    "CosineAnnealingLR": lambda S, o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
    "OneCycleLR": lambda S, o: S.OneCycleLR(o, max_lr=1.0, total_steps=40),
    "OneCycleLR(three_phase,linear,lists)": lambda S, o: S.OneCycleLR(
        o, [1.0, 2.0], epochs=4, steps_per_epoch=10, three_phase=True, anneal_strategy="linear", pct_start=0.25),
    "LambdaLR": lambda S, o: S.LambdaLR(o, [lambda s: 0.9 ** s, lambda s: 1 / (s + 1)]),
    "SequentialLR": lambda S, o: S.SequentialLR(
        o, [S.LinearLR(o, 0.1, total_iters=5), S.CosineAnnealingLR(o, 20), S.ExponentialLR(o, 0.9)], milestones=[5, 25]),
}


def _groups(lib, params):
    return [{"params": params[:1]}, {"params": params[1:], "lr": 0.3}]


@pytest.mark.parametrize("opt_name", ["SGD", "AdamW"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_give_torchs_exact_sequence(rng, name, opt_name):
    ours, theirs = _twins(rng)
    kwargs = {"lr": 0.1, "momentum": 0.9} if opt_name == "SGD" else {"lr": 0.1}
    opt, topt = getattr(optim, opt_name)(_groups("ml", ours), **kwargs), getattr(torch.optim, opt_name)(_groups("t", theirs), **kwargs)
    sched, tsched = SCHEDULERS[name](L, opt), SCHEDULERS[name](TL, topt)
    momentum = "momentum" if opt_name == "SGD" else "betas"
    lrs, tlrs = [sched.get_last_lr()], [tsched.get_last_lr()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(40):
            opt.step()
            topt.step()
            sched.step()
            tsched.step()
            lrs.append(sched.get_last_lr())
            tlrs.append(tsched.get_last_lr())
            assert [g[momentum] for g in opt.param_groups] == [g[momentum] for g in topt.param_groups]
    assert lrs == tlrs  # exactly, float for float
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "OneCycleLR", "SequentialLR"])
def test_scheduler_state_dict_resumes_as_torch(rng, name):
    ours, _ = _twins(rng)
    opt = optim.SGD(_groups("ml", ours), lr=0.1, momentum=0.9)
    sched = SCHEDULERS[name](L, opt)
    for _ in range(12):
        opt.step()
        sched.step()
    saved_opt, saved = opt.state_dict(), sched.state_dict()
    expected = []
    for _ in range(10):
        opt.step()
        sched.step()
        expected.append(sched.get_last_lr())
    ours2, _ = _twins(rng)
    opt2 = optim.SGD(_groups("ml", ours2), lr=0.1, momentum=0.9)
    sched2 = SCHEDULERS[name](L, opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved)
    resumed = []
    for _ in range(10):
        opt2.step()
        sched2.step()
        resumed.append(sched2.get_last_lr())
    assert resumed == expected


def test_scheduler_errors_as_torch(rng):
    ours, theirs = _twins(rng)
    opt, topt = optim.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    same_error(lambda: L.OneCycleLR(opt, 1.0), lambda: TL.OneCycleLR(topt, 1.0))  # no total_steps
    same_error(lambda: L.LinearLR(opt, start_factor=0), lambda: TL.LinearLR(topt, start_factor=0))
    same_error(lambda: L.StepLR(object(), 3), lambda: TL.StepLR(object(), 3))
    sched, tsched = L.OneCycleLR(opt, 1.0, total_steps=2), TL.OneCycleLR(topt, 1.0, total_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            sched.step()
            tsched.step()
        same_error(sched.step, tsched.step)
    assert math.isclose(sched.get_last_lr()[0], tsched.get_last_lr()[0])


# ---- the new ops against central differences (float64) -------------------------------------------
def test_new_ops_pass_grad_check(rng):
    def t(*shape):
        return ml.tensor(rng.standard_normal(shape), requires_grad=True)
    grad_check(lambda x: F.pad(x, (1, -1, 2, 0), value=0.5), t(2, 3, 4))
    targets, weight = ml.tensor(np.array([2, 0, -100, 1])), ml.tensor(np.array([0.3, 1.0, 2.0]))
    grad_check(lambda x: F.nll_loss(x, targets, weight), t(4, 3))
    grad_check(lambda x: F.cross_entropy(x, targets, weight, label_smoothing=0.2), t(4, 3))
    grad_check(lambda x: F.cross_entropy(x, ml.tensor(np.array([[1, 0], [2, 2]])), reduction="none"), t(2, 3, 2))
    grad_check(lambda x, p: F.cross_entropy(x, p, label_smoothing=0.1), t(3, 4), t(3, 4))
    grad_check(lambda x, w: F.layer_norm(x, (2, 3), w), t(4, 2, 3), t(2, 3))
    grad_check(lambda x, w: F.rms_norm(x, (2, 3), w, 1e-3), t(4, 2, 3), t(2, 3))
    mask = ml.tensor(np.array([[True, False, True], [False, False, False]]))
    grad_check(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask), t(2, 2, 4), t(2, 3, 4), t(2, 3, 5))


def test_container_editing_as_torch():
    for lib in (nn, tnn):
        seq = lib.Sequential(lib.ReLU(), lib.Tanh())
        seq.insert(1, lib.Sigmoid())
        seq.extend([lib.Identity()])
        popped = seq.pop(0)
        lst = lib.ModuleList([lib.ReLU(), lib.Tanh(), lib.Sigmoid()])
        lst.insert(0, lib.Identity())
        del lst[1]
        last = lst.pop(-1)
        names = ([type(m).__name__ for m in seq], list(dict(seq.named_children())), type(popped).__name__,
                 [type(m).__name__ for m in lst], list(dict(lst.named_children())), type(last).__name__)
        if lib is nn:
            ours = names
    assert ours == names
