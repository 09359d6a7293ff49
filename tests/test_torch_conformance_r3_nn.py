"""torch.nn / torch.nn.functional conformance, round 3: tutorial-style calls run in torch 2.13 and
minilora side by side (float64, same weights), for the corners earlier rounds left: attention mask
shapes, soft-label cross-entropy with ignore_index, embedding max_norm / scale_grad_by_freq,
linear with a broadcast bias, pad errors, reprs, and nn.init's gains and initialisers.
"""
import math
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora import nn
from minilora.nn import functional as F
from minilora.nn import init

torch = pytest.importorskip("torch")
TF, tnn, tinit = torch.nn.functional, torch.nn, torch.nn.init


def _np(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x.numpy())


def pair(array, requires_grad=False):
    """The same values as a minilora and a torch tensor (floats as float64)."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = array.astype(np.float64)
    return (ml.tensor(array.copy(), requires_grad=requires_grad),
            torch.tensor(array.copy(), requires_grad=requires_grad))


def close(ours, theirs, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(_np(ours), _np(theirs), rtol=rtol, atol=atol)


def same_error(ml_call, torch_call):
    """Both raise, minilora with torch's exception type; returns minilora's message."""
    with pytest.raises(Exception) as theirs:
        torch_call()
    with pytest.raises(type(theirs.value)) as ours:
        ml_call()
    return str(ours.value)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- scaled_dot_product_attention ------------------------------------------------------------------
@pytest.mark.parametrize("mask_shape", [(4, 5), (2, 3, 5), (1, 2, 4, 3, 5)])
def test_sdpa_mask_that_does_not_broadcast_is_torchs_runtime_error(rng, mask_shape):
    (q, tq), (k, tk) = pair(rng.standard_normal((2, 4, 3, 8))), pair(rng.standard_normal((2, 4, 5, 8)))
    (m, tm) = pair(rng.random(mask_shape) > 0.3)
    with pytest.raises(RuntimeError) as theirs:
        TF.scaled_dot_product_attention(tq, tk, tk, attn_mask=tm)
    with pytest.raises(RuntimeError) as ours:
        F.scaled_dot_product_attention(q, k, k, attn_mask=m)
    hint = " ".join(getattr(ours.value, "__notes__", [str(ours.value)]))  # minilora's words: which tensor, why
    assert "attn_mask" in hint and str(tuple(mask_shape)) in hint
    if str(theirs.value).startswith("The size of tensor"):  # torch's broadcast words, where its kernel has them
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("mask_shape", [(3, 5), (1, 5), (2, 1, 3, 5), (4, 3, 1)])
def test_sdpa_broadcast_masks_and_grads(rng, mask_shape):
    (q, tq), (k, tk), (v, tv) = (pair(rng.standard_normal(s), True) for s in ((2, 4, 3, 8), (2, 4, 5, 8), (2, 4, 5, 6)))
    (m, tm) = pair(rng.standard_normal(mask_shape))
    out, tout = F.scaled_dot_product_attention(q, k, v, m), TF.scaled_dot_product_attention(tq, tk, tv, tm)
    close(out, tout)
    out.sum().backward()
    tout.sum().backward()
    for ours, theirs in ((q, tq), (k, tk), (v, tv)):
        close(ours.grad, theirs.grad)


def test_sdpa_negative_dropout_p_is_a_runtime_error(rng):
    (q, tq) = pair(rng.standard_normal((1, 1, 2, 4)))
    same_error(lambda: F.scaled_dot_product_attention(q, q, q, dropout_p=-0.1),
               lambda: TF.scaled_dot_product_attention(tq, tq, tq, dropout_p=-0.1))


# ---- losses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_index", [0, 2])
def test_cross_entropy_probability_targets_refuse_a_class_to_ignore(rng, ignore_index):
    (x, tx) = pair(rng.standard_normal((4, 3)))
    (t, tt) = pair(np.full((4, 3), 1 / 3))
    message = same_error(lambda: F.cross_entropy(x, t, ignore_index=ignore_index),
                         lambda: TF.cross_entropy(tx, tt, ignore_index=ignore_index))
    assert "ignore_index is not supported for floating point target" in message
    for negative in (-100, -1):  # no class has a negative index: torch computes the loss
        close(F.cross_entropy(x, t, ignore_index=negative), TF.cross_entropy(tx, tt, ignore_index=negative))


def test_one_hot_of_an_empty_tensor_needs_num_classes():
    (ids, tids) = pair(np.zeros(0, dtype=np.int64))
    message = same_error(lambda: F.one_hot(ids), lambda: TF.one_hot(tids))
    assert "Can not infer total number of classes from empty tensor" in message
    assert F.one_hot(ids, 4).shape == tuple(TF.one_hot(tids, 4).shape) == (0, 4)


# ---- linear --------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape", [(5,), (3, 5), (2, 3, 5)])
@pytest.mark.parametrize("bias_shape", [(), (1,)])
def test_linear_with_a_broadcast_bias_has_torchs_gradients(rng, x_shape, bias_shape):
    (x, tx), (w, tw), (b, tb) = (pair(rng.standard_normal(s), True) for s in (x_shape, (4, 5), bias_shape))
    out, tout = F.linear(x, w, b), TF.linear(tx, tw, tb)
    close(out, tout)
    seed = rng.standard_normal(tuple(tout.shape))
    (out * ml.tensor(seed)).sum().backward()
    (tout * torch.tensor(seed)).sum().backward()
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        close(ours.grad, theirs.grad)


def test_linear_with_a_bias_that_does_not_broadcast_is_a_runtime_error(rng):
    (x, tx), (w, tw), (b, tb) = (pair(rng.standard_normal(s)) for s in ((3, 5), (4, 5), (3,)))
    same_error(lambda: F.linear(x, w, b), lambda: TF.linear(tx, tw, tb))


# ---- pad -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pads", [(1,), (1, 1, 1), (1, 1, 1, 1, 1, 1, 1, 1)])
def test_pad_bad_lengths_are_torchs_runtime_errors(rng, pads):
    (x, tx) = pair(rng.standard_normal((2, 3, 5)))
    same_error(lambda: F.pad(x, pads), lambda: TF.pad(tx, pads))


# ---- embedding -----------------------------------------------------------------------------------
IDS = np.array([[0, 2, 5], [2, 2, 1]])


@pytest.mark.parametrize("max_norm, norm_type", [(1.0, 2.0), (1.5, 1.0), (0.5, 3.0), (100.0, 2.0)])
def test_embedding_max_norm_renormalises_the_looked_up_rows_in_place(rng, max_norm, norm_type):
    (w, tw), (ids, tids) = pair(rng.standard_normal((6, 4)) * 2, True), pair(IDS)
    out = F.embedding(ids, w, max_norm=max_norm, norm_type=norm_type)
    tout = TF.embedding(tids, tw, max_norm=max_norm, norm_type=norm_type)
    close(out, tout)
    close(w, tw)  # rows 0, 1, 2 and 5 rescaled in the weight itself; rows 3 and 4 as they were
    seed = rng.standard_normal(IDS.shape + (4,))
    (out * ml.tensor(seed)).sum().backward()
    (tout * torch.tensor(seed)).sum().backward()
    close(w.grad, tw.grad)


def test_embedding_scale_grad_by_freq_divides_by_each_ids_count(rng):
    (w, tw), (ids, tids) = pair(rng.standard_normal((6, 4)), True), pair(IDS)
    seed = rng.standard_normal(IDS.shape + (4,))
    (F.embedding(ids, w, 1, scale_grad_by_freq=True) * ml.tensor(seed)).sum().backward()
    (TF.embedding(tids, tw, 1, scale_grad_by_freq=True) * torch.tensor(seed)).sum().backward()
    close(w.grad, tw.grad)


def _copied(module, tmodule):
    with torch.no_grad():
        tmodule.weight.copy_(torch.tensor(module.weight.numpy()))
    return module, tmodule


@pytest.mark.parametrize("kwargs", [dict(max_norm=1.0), dict(max_norm=2.0, norm_type=1.0, padding_idx=-1),
                                    dict(scale_grad_by_freq=True, padding_idx=2)])
def test_embedding_module_options_as_torch(kwargs):
    ml.manual_seed(0)
    emb, temb = _copied(nn.Embedding(6, 4, **kwargs), tnn.Embedding(6, 4, **kwargs))
    assert repr(emb) == repr(temb)
    out, tout = emb(ml.tensor(IDS)), temb(torch.tensor(IDS))
    close(out, tout, rtol=1e-6, atol=1e-7)
    out.sum().backward()
    tout.sum().backward()
    close(emb.weight, temb.weight, rtol=1e-6, atol=1e-7)
    close(emb.weight.grad, temb.weight.grad, rtol=1e-6, atol=1e-7)


def test_embedding_reprs_and_from_pretrained_max_norm(rng):
    for kwargs in (dict(padding_idx=-2, max_norm=2.0, scale_grad_by_freq=True), dict(norm_type=1.0),
                   dict(max_norm=1, norm_type=3)):
        assert repr(nn.Embedding(5, 3, **kwargs)) == repr(tnn.Embedding(5, 3, **kwargs))
    (w, tw) = pair(rng.standard_normal((6, 4)) * 2)
    emb, temb = nn.Embedding.from_pretrained(w, max_norm=1.0), tnn.Embedding.from_pretrained(tw, max_norm=1.0)
    close(emb(ml.tensor(IDS)), temb(torch.tensor(IDS)))
    close(w, tw)  # the table given is the weight, renormalised in place as torch
    assert repr(emb) == repr(temb)


# ---- reprs and load_state_dict's result ------------------------------------------------------------
REPR_CASES = [
    lambda lib: lib.LayerNorm(4), lambda lib: lib.LayerNorm((2, 4), eps=1e-6, elementwise_affine=False),
    lambda lib: lib.LayerNorm(4, bias=False), lambda lib: lib.Softmax(dim=1), lambda lib: lib.Softmax(),
    lambda lib: lib.Softmin(0), lambda lib: lib.LogSoftmax(-1), lambda lib: lib.GLU(), lambda lib: lib.GLU(0),
    lambda lib: lib.Flatten(), lambda lib: lib.Flatten(0, 2), lambda lib: lib.RMSNorm([4], eps=1e-6),
    lambda lib: lib.Sequential(lib.Linear(3, 4), lib.Sequential(lib.LayerNorm(4), lib.Dropout(0.1)), lib.GELU()),
]


@pytest.mark.parametrize("case", range(len(REPR_CASES)))
def test_module_reprs_are_torchs(case):
    assert repr(REPR_CASES[case](nn)) == repr(REPR_CASES[case](tnn))


def test_load_state_dict_result_repr_is_torchs():
    ml.manual_seed(0)
    model, tmodel = nn.Sequential(nn.Linear(2, 3), nn.ReLU()), tnn.Sequential(tnn.Linear(2, 3), tnn.ReLU())
    state = {"0.weight": ml.zeros(3, 2), "extra": ml.zeros(1)}
    tstate = {"0.weight": torch.zeros(3, 2), "extra": torch.zeros(1)}
    result, tresult = model.load_state_dict(state, strict=False), tmodel.load_state_dict(tstate, strict=False)
    assert repr(result) == repr(tresult) == ("_IncompatibleKeys(missing_keys=['0.bias'], "
                                             "unexpected_keys=['extra'])")
    assert (result.missing_keys, result.unexpected_keys) == (tresult.missing_keys, tresult.unexpected_keys)


# ---- nn.init -------------------------------------------------------------------------------------
GAINS = [("linear", None), ("conv1d", None), ("conv2d", None), ("conv3d", None), ("conv_transpose1d", None),
         ("conv_transpose2d", None), ("conv_transpose3d", None), ("sigmoid", None), ("tanh", None),
         ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 1), ("selu", None),
         ("relu", 3)]


@pytest.mark.parametrize("nonlinearity, param", GAINS)
def test_calculate_gain_table_is_torchs(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == tinit.calculate_gain(nonlinearity, param)


@pytest.mark.parametrize("nonlinearity, param", [("identity", None), ("gelu", None), ("leaky_relu", True),
                                                 ("leaky_relu", "0.1")])
def test_calculate_gain_refuses_what_torch_refuses(nonlinearity, param):
    same_error(lambda: init.calculate_gain(nonlinearity, param), lambda: tinit.calculate_gain(nonlinearity, param))


def _blank(shape):
    return ml.zeros(*shape, dtype=ml.float64), torch.zeros(*shape, dtype=torch.float64)


@pytest.mark.parametrize("shape, gain", [((30, 50), 1.0), ((50, 30), 2.0), ((6, 2, 2, 2), 1.0), ((4, 4), 0.5)])
def test_orthogonal_gives_gain_times_a_semi_orthogonal_matrix(shape, gain):
    t, tt = _blank(shape)
    assert init.orthogonal_(t, gain) is t
    tinit.orthogonal_(tt, gain)
    flat, tflat = t.numpy().reshape(shape[0], -1), tt.numpy().reshape(shape[0], -1)
    small = min(flat.shape)  # rows orthogonal if fewer rows than columns, else columns
    gram = flat @ flat.T if flat.shape[0] == small else flat.T @ flat
    tgram = tflat @ tflat.T if flat.shape[0] == small else tflat.T @ tflat
    np.testing.assert_allclose(gram, tgram, atol=1e-12)
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(small), atol=1e-12)


def test_orthogonal_eye_dirac_shapes_and_values_as_torch():
    for shape, groups in (((4, 2, 3), 1), ((6, 3, 3, 3), 2), ((2, 4, 1, 2, 3), 1)):
        t, tt = _blank(shape)
        np.testing.assert_array_equal(init.dirac_(t, groups).numpy(), tinit.dirac_(tt, groups).numpy())
    for shape in ((3, 5), (5, 3), (4, 4)):
        t, tt = _blank(shape)
        np.testing.assert_array_equal(init.eye_(t).numpy(), tinit.eye_(tt).numpy())
    for call, shape in ((init.orthogonal_, (4,)), (init.eye_, (2, 2, 2)), (init.dirac_, (2, 2)),
                        (lambda t: init.dirac_(t, 3), (4, 2, 3))):
        with pytest.raises(ValueError):
            call(ml.zeros(*shape))
    t, tt = _blank((4, 3, 2))
    assert init._calculate_fan_in_and_fan_out(t) == tinit._calculate_fan_in_and_fan_out(tt) == (6, 8)


@pytest.mark.parametrize("name, args", [("kaiming_uniform_", ()), ("kaiming_normal_", (0, "fan_out")),
                                        ("xavier_uniform_", ()), ("xavier_normal_", ()), ("orthogonal_", ())])
def test_initialising_a_zero_element_tensor_is_a_no_op(name, args):
    t, tt = _blank((0, 4))
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        getattr(tinit, name)(tt, *args)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        assert getattr(init, name)(t, *args) is t
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]


@pytest.mark.parametrize("call", [lambda lib, t: lib.uniform_(t, 1.0, 0.0), lambda lib, t: lib.normal_(t, 0.0, -1.0),
                                  lambda lib, t: lib.trunc_normal_(t, a=1.0, b=0.0)])
def test_bad_distribution_parameters_are_torchs_runtime_errors(call):
    t, tt = _blank((3, 3))
    same_error(lambda: call(init, t), lambda: call(tinit, tt))


@pytest.mark.parametrize("mean, std, a, b", [(0.0, 1.0, 5.0, 6.0), (0.0, 0.02, -2.0, 2.0), (1.0, 2.0, -1.0, 0.0)])
def test_trunc_normal_far_tails_finish_and_follow_torchs_distribution(mean, std, a, b):
    t, tt = _blank((200, 100))
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        tinit.trunc_normal_(tt, mean, std, a, b)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        init.trunc_normal_(t, mean, std, a, b)  # a tail of 3e-7 of the mass: once a near-endless loop
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    values, tvalues = t.numpy(), tt.numpy()
    assert a <= values.min() and values.max() <= b
    spread = (tvalues.std() + 1e-12) / math.sqrt(values.size)
    assert abs(values.mean() - tvalues.mean()) < 8 * spread
    assert values.std() == pytest.approx(tvalues.std(), rel=0.05)


@pytest.mark.parametrize("name", ["orthogonal_", "eye_", "dirac_", "_calculate_fan_in_and_fan_out"])
def test_new_init_signatures_are_torchs(name):
    import inspect
    ours = [(p.name, p.default) for p in inspect.signature(getattr(init, name)).parameters.values()]
    theirs = [(p.name, p.default) for p in inspect.signature(getattr(tinit, name)).parameters.values()]
    assert ours == theirs


# ---- convolution and pooling geometry --------------------------------------------------------------
GEOMETRY_ERRORS = [
    ("conv2d", lambda F, x, w: F.conv2d(x, w, None, 0)), ("conv2d", lambda F, x, w: F.conv2d(x, w, None, 1, -1)),
    ("conv2d", lambda F, x, w: F.conv2d(x, w, None, 1, 0, 0)),
    ("conv2d", lambda F, x, w: F.conv2d(x, w, None, 1, 0, 1, 0)),
    ("conv2d", lambda F, x, w: F.conv2d(x, w, None, (1, 0))),
    ("conv1d", lambda F, x, w: F.conv1d(x[:, :, 0], w[:, :, 0], stride=0)),
    ("conv1d", lambda F, x, w: F.conv1d(x[:, :, 0], w[:, :, 0], padding=-2)),
    ("max_pool2d", lambda F, x, w: F.max_pool2d(x, 2, 0)), ("max_pool2d", lambda F, x, w: F.max_pool2d(x, 2, 1, -1)),
    ("max_pool2d", lambda F, x, w: F.max_pool2d(x, 0)), ("max_pool2d", lambda F, x, w: F.max_pool2d(x, 2, 1, 0, 0)),
    ("avg_pool2d", lambda F, x, w: F.avg_pool2d(x, 2, 1, -1)), ("avg_pool2d", lambda F, x, w: F.avg_pool2d(x, 0)),
    ("max_pool1d", lambda F, x, w: F.max_pool1d(x[:, :, 0], 2, 0)),
    ("max_pool2d", lambda F, x, w: F.max_pool2d(x, 2, -1)),
    ("avg_pool2d", lambda F, x, w: F.avg_pool2d(x, 2, -1)),
]


@pytest.mark.parametrize("case", range(len(GEOMETRY_ERRORS)))
def test_conv_and_pool_refuse_bad_geometry_with_torchs_runtime_error(case):
    _, call = GEOMETRY_ERRORS[case]
    (x, tx), (w, tw) = pair(np.ones((1, 2, 5, 5))), pair(np.ones((3, 2, 3, 3)))
    same_error(lambda: call(F, x, w), lambda: call(TF, tx, tw))


# ---- integer tensors into floating-point ops ---------------------------------------------------------
_I, _T = np.arange(6).reshape(2, 3), np.array([0, 1])
INTEGER_CALLS = [
    ("cross_entropy", (_I, _T)), ("nll_loss", (_I, _T)), ("mse_loss", (_I, _I)), ("l1_loss", (_I, _I)),
    ("smooth_l1_loss", (_I, _I)), ("huber_loss", (_I, _I)), ("kl_div", (_I, _I)), ("binary_cross_entropy", (_I, _I)),
    ("binary_cross_entropy_with_logits", (_I, _I)), ("layer_norm", (_I, (3,))), ("rms_norm", (_I, (3,))),
    ("group_norm", (_I.reshape(2, 3, 1), 1)), ("gelu", (_I,)), ("silu", (_I,)), ("softplus", (_I,)), ("elu", (_I,)),
    ("selu", (_I,)), ("celu", (_I,)), ("leaky_relu", (_I,)), ("logsigmoid", (_I,)), ("glu", (_I[:, :2],)),
    ("mish", (_I,)), ("hardswish", (_I,)), ("dropout", (_I, 0.5)), ("kl_div", (_I * 1.0, _I)),
    ("binary_cross_entropy", (_I / 10, _I.clip(0, 1))), ("binary_cross_entropy_with_logits", (_I * 1.0, _I)),
]


@pytest.mark.parametrize("name, args", INTEGER_CALLS, ids=[c[0] for c in INTEGER_CALLS])
def test_integer_tensors_are_refused_where_torch_refuses_them(name, args):
    """torch has no integer kernel for these: an int64 layer_norm gave zeros, nll_loss an int."""
    ours = [ml.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    theirs = [torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    message = same_error(lambda: getattr(F, name)(*ours), lambda: getattr(TF, name)(*theirs))
    assert "int64" in message or "integer" in message or "Long" in message  # (torch's name for int64)


def test_a_floating_operand_makes_integer_losses_computable():
    for name, args in (("mse_loss", (_I * 1.0, _I)), ("l1_loss", (_I, _I * 1.0)), ("huber_loss", (_I * 1.0, _I)),
                       ("smooth_l1_loss", (_I, _I * 0.5)), ("dropout", (_I, 0.0)), ("dropout", (_I, 0.5, False))):
        # a floating operand: torch promotes and computes, and so does minilora
        ours = getattr(F, name)(*[ml.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        theirs = getattr(TF, name)(*[torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args])
        close(ours, theirs)


def test_activation_modules_refuse_integers_as_their_functions():
    for module, tmodule in ((nn.SiLU(), tnn.SiLU()), (nn.GELU(), tnn.GELU()), (nn.Softplus(), tnn.Softplus())):
        same_error(lambda: module(ml.tensor(_I)), lambda: tmodule(torch.tensor(_I)))


@pytest.mark.parametrize("target", [np.array([0.5, 1.5]), np.array([-0.1, 0.5])])
def test_binary_cross_entropy_refuses_targets_outside_0_1(target):
    (x, tx), (y, ty) = pair(np.array([0.3, 0.6])), pair(target)
    message = same_error(lambda: F.binary_cross_entropy(x, y), lambda: TF.binary_cross_entropy(tx, ty))
    assert "all elements of target should be between 0 and 1" in message


@pytest.mark.parametrize("padding_idx", [6, -7])
def test_embedding_padding_idx_out_of_range_is_torchs_assertion(padding_idx):
    (w, tw), (ids, tids) = pair(np.ones((6, 4))), pair(IDS)
    message = same_error(lambda: F.embedding(ids, w, padding_idx), lambda: TF.embedding(tids, tw, padding_idx))
    assert "Padding_idx must be within num_embeddings" in message
    same_error(lambda: nn.Embedding(6, 4, padding_idx), lambda: tnn.Embedding(6, 4, padding_idx))
    with pytest.raises(ValueError):  # and still the ValueError it was, for code that catches that
        nn.Embedding(6, 4, padding_idx)


def test_from_pretrained_needs_a_2d_table():
    (w, tw) = pair(np.ones(4))
    same_error(lambda: nn.Embedding.from_pretrained(w), lambda: tnn.Embedding.from_pretrained(tw))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_embedding_max_norm_on_16_bit_tables_is_torchs_bit_for_bit(rng, dtype):
    table, ids = rng.standard_normal((8, 16)).astype(np.float32) * 3, rng.integers(0, 8, (10,))
    for norm_type in (1.0, 2.0, 3.0):
        ours, theirs = ml.tensor(table).to(getattr(ml, dtype)), torch.tensor(table).to(getattr(torch, dtype))
        F.embedding(ml.tensor(ids), ours, max_norm=1.5, norm_type=norm_type)
        TF.embedding(torch.tensor(ids), theirs, max_norm=1.5, norm_type=norm_type)
        np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())


# ---- 16-bit huber_loss ---------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("delta, weighted", [(0.5, False), (0.3, False), (1.7, False), (1.0, True)])
def test_bfloat16_huber_loss_is_torchs_bit_for_bit(rng, reduction, delta, weighted):
    """torch's bfloat16 huber kernel rounds every step to bfloat16 (its float16 one computes in float32):
    it was 1 element in 3 off; its backward is (norm * clamp(d, -delta, delta)) * grad, rounded twice.
    (40 x 32 elements: a multiple of 32, so no element falls to torch's scalar tail loop, which rounds
    a little differently -- see BFloat16Huber.)"""
    shape = (40, 32)
    x, y = (rng.standard_normal(shape) * 2).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    w = rng.random(shape).astype(np.float32) if weighted else None
    tensors, tensors_t = [], []
    for a in (x, y):
        tensors.append(ml.tensor(a).to(ml.bfloat16).requires_grad_())
        tensors_t.append(torch.tensor(a).bfloat16().requires_grad_())
    weight = None if w is None else ml.tensor(w).to(ml.bfloat16)
    tweight = None if w is None else torch.tensor(w).bfloat16()
    out = F.huber_loss(*tensors, reduction, delta, weight)
    tout = TF.huber_loss(*tensors_t, reduction=reduction, delta=delta, weight=tweight)
    assert out.dtype == ml.bfloat16
    np.testing.assert_array_equal(out.float().numpy(), tout.float().detach().numpy())
    g = rng.standard_normal(tuple(tout.shape)).astype(np.float32)
    out.backward(ml.tensor(g).to(ml.bfloat16))
    tout.backward(torch.tensor(g).bfloat16())
    for ours, theirs in zip(tensors, tensors_t):
        np.testing.assert_array_equal(ours.grad.float().numpy(), theirs.grad.float().numpy())


SHAPE_MISMATCHES = [("cosine_similarity", ((4, 5), (4, 3))), ("smooth_l1_loss", ((4, 5), (4, 3))),
                    ("huber_loss", ((4, 5), (4, 3))), ("cosine_embedding_loss", ((4, 5), (4, 5), (3,))),
                    ("mse_loss", ((4, 5), (4, 3))), ("pairwise_distance", ((4, 5), (4, 3)))]


@pytest.mark.parametrize("name, shapes", SHAPE_MISMATCHES, ids=[c[0] for c in SHAPE_MISMATCHES])
def test_operands_that_do_not_broadcast_are_torchs_runtime_error(name, shapes):
    arrays = [np.ones(s) for s in shapes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the size-mismatch warning comes first, in both)
        message = same_error(lambda: getattr(F, name)(*map(ml.tensor, arrays)),
                             lambda: getattr(TF, name)(*map(torch.tensor, arrays)))
        with pytest.raises(RuntimeError) as theirs:
            getattr(TF, name)(*map(torch.tensor, arrays))
    assert message == str(theirs.value)  # torch's words since round 22 ("The size of tensor a (5) must match ...")


@pytest.mark.parametrize("q_batch, k_batch", [((1,), (2,)), ((2,), (1,)), ((1, 3), (2, 1))])
def test_sdpa_batch_dimensions_broadcast_both_ways(rng, q_batch, k_batch):
    (q, tq), (k, tk), (v, tv) = (pair(rng.standard_normal(s), True) for s in
                                 (q_batch + (4, 3, 8), k_batch + (2, 5, 8), k_batch + (2, 5, 6)))
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    tout = TF.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True)
    close(out, tout)
    seed = rng.standard_normal(tuple(tout.shape))
    (out * ml.tensor(seed)).sum().backward()
    (tout * torch.tensor(seed)).sum().backward()
    for ours, theirs in ((q, tq), (k, tk), (v, tv)):
        close(ours.grad, theirs.grad)


def test_sdpa_scale_and_enable_gqa_are_keyword_only_as_torch(rng):
    (q, tq) = pair(rng.standard_normal((1, 2, 3, 4)))
    same_error(lambda: F.scaled_dot_product_attention(q, q, q, None, 0.0, False, 0.5),
               lambda: TF.scaled_dot_product_attention(tq, tq, tq, None, 0.0, False, 0.5))
    close(F.scaled_dot_product_attention(q, q, q, None, 0.0, False, scale=0.5, enable_gqa=True),
          TF.scaled_dot_product_attention(tq, tq, tq, None, 0.0, False, scale=0.5, enable_gqa=True))


# ---- a batch whose targets are all ignored -----------------------------------------------------------
ALL_IGNORED = [
    ("cross_entropy", [-100] * 4, {}), ("cross_entropy", [-100] * 4, {"label_smoothing": 0.2}),
    ("cross_entropy", [-100] * 4, {"weight": np.array([0.5, 1.0, 2.0])}),
    ("cross_entropy", [-100] * 4, {"weight": np.array([0.5, 1.0, 2.0]), "label_smoothing": 0.2}),
    ("cross_entropy", [0, 1, 2, 1], {"weight": np.zeros(3)}),
    ("cross_entropy", [0, -100, 2, -100], {"weight": np.zeros(3)}),
    ("cross_entropy", [0, 1, 2, 1], {"weight": np.zeros(3), "label_smoothing": 0.2}),
    ("nll_loss", [-100] * 4, {}), ("nll_loss", [0, 1, 2, 1], {"weight": np.zeros(3)}),
    ("nll_loss", [0, -100, 2, -100], {"weight": np.zeros(3)}),
]


@pytest.mark.parametrize("name, target, kwargs", ALL_IGNORED)
def test_mean_loss_over_no_counted_target_is_nan_with_torchs_gradient(rng, name, target, kwargs):
    """A micro-batch whose labels are all -100 (a prompt-only sequence): torch's loss is nan but its
    gradient zero, so the step leaves the weights alone; minilora's cross_entropy gradient was nan,
    which an optimizer step writes into every weight. Weights that sum to 0 over counted targets:
    nan gradients in those rows, as torch."""
    x = rng.standard_normal((4, 3))
    (logits, tlogits), (t, tt) = pair(x, True), pair(np.array(target))
    ours = {k: ml.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    theirs = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    if name == "nll_loss":
        out, tout = F.nll_loss(logits.log_softmax(1), t, **ours), TF.nll_loss(tlogits.log_softmax(1), tt, **theirs)
    else:
        out, tout = F.cross_entropy(logits, t, **ours), TF.cross_entropy(tlogits, tt, **theirs)
    assert np.isnan(out.item()) and np.isnan(tout.item())
    out.backward()
    tout.backward()
    np.testing.assert_array_equal(logits.grad.numpy(), tlogits.grad.numpy())  # (nan equal to nan)


def test_one_hot_takes_torchs_keyword_input():
    """torch 2.13's F.one_hot names its tensor ``input`` (the docstring still says ``tensor``,
    which torch refuses as a keyword)."""
    ids = np.array([[0, 2], [1, 3]])
    out = F.one_hot(input=ml.tensor(ids), num_classes=5)
    np.testing.assert_array_equal(out.numpy(), TF.one_hot(input=torch.tensor(ids), num_classes=5).numpy())
    same_error(lambda: F.one_hot(tensor=ml.tensor(ids)), lambda: TF.one_hot(tensor=torch.tensor(ids)))


@pytest.mark.parametrize("batch, in_features, out_features", [((3,), 0, 5), ((2, 3), 0, 4), ((3,), 4, 0),
                                                              ((0,), 4, 5)])
def test_linear_with_a_zero_size_dimension_matches_torch(batch, in_features, out_features, rng):
    """nn.Linear(0, n) on [N, 0] gives the bias in every row (torch: an empty sum is 0), Linear(k, 0)
    an empty [N, 0], an empty batch an empty output; the gradients as torch's."""
    x_ml, x_pt = pair(rng.standard_normal(batch + (in_features,)), requires_grad=True)
    w_ml, w_pt = pair(rng.standard_normal((out_features, in_features)), requires_grad=True)
    b_ml, b_pt = pair(rng.standard_normal(out_features), requires_grad=True)
    ours, theirs = F.linear(x_ml, w_ml, b_ml), TF.linear(x_pt, w_pt, b_pt)
    np.testing.assert_allclose(ours.numpy(), _np(theirs))
    (ours * 2.0).sum().backward()
    (theirs * 2.0).sum().backward()
    for mine, torchs in ((x_ml, x_pt), (w_ml, w_pt), (b_ml, b_pt)):
        assert mine.grad.shape == tuple(torchs.grad.shape)
        np.testing.assert_allclose(mine.grad.numpy(), _np(torchs.grad))


@pytest.mark.parametrize("mask", [[True, False, True, True], True, [0.0, -1.0, 0.0, 0.5]])
def test_sdpa_mask_below_2d_on_4d_inputs_is_refused_as_torch(mask, rng):
    """torch's 4-D no-dropout path reads the mask's dimension -2: a 0-d / 1-D mask is an IndexError
    there (it broadcast silently here); other ranks and the dropout path take it, as torch."""
    (q, q_pt), (k, k_pt) = pair(rng.standard_normal((1, 2, 3, 4))), pair(rng.standard_normal((1, 2, 4, 4)))
    (m, m_pt) = pair(np.array(mask))
    same_error(lambda: F.scaled_dot_product_attention(q, k, k, attn_mask=m),
               lambda: TF.scaled_dot_product_attention(q_pt, k_pt, k_pt, attn_mask=m_pt))
    (q3, q3_pt), (k3, k3_pt) = pair(rng.standard_normal((2, 3, 4))), pair(rng.standard_normal((2, 4, 4)))
    close(F.scaled_dot_product_attention(q3, k3, k3, attn_mask=m),
          TF.scaled_dot_product_attention(q3_pt, k3_pt, k3_pt, attn_mask=m_pt))


@pytest.mark.parametrize("q_shape, k_shape", [((1, 2, 3, 4), (1, 2, 0, 4)), ((1, 2, 0, 4), (1, 2, 5, 4)),
                                              ((0, 2, 3, 4), (0, 2, 5, 4)), ((2, 3, 4), (2, 0, 4))])
def test_sdpa_with_no_keys_or_no_queries_matches_torch(q_shape, k_shape, rng):
    """Zero keys: every output row is 0 (torch), with zero gradients; zero queries / an empty batch:
    an empty output. Forward and backward side by side."""
    q, q_pt = pair(rng.standard_normal(q_shape), requires_grad=True)
    k, k_pt = pair(rng.standard_normal(k_shape), requires_grad=True)
    v, v_pt = pair(rng.standard_normal(k_shape), requires_grad=True)
    ours = F.scaled_dot_product_attention(q, k, v)
    theirs = TF.scaled_dot_product_attention(q_pt, k_pt, v_pt)
    close(ours, theirs)
    (ours * 3.0).sum().backward()
    (theirs * 3.0).sum().backward()
    for mine, torchs in ((q, q_pt), (k, k_pt), (v, v_pt)):
        close(mine.grad, torchs.grad)
