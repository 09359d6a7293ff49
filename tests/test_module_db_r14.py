"""torch's ModuleInfo database (module_db) run through minilora: every torch.nn module torch tests.

For each ModuleInfo (convolutions and their Lazy forms, pools, paddings, norms, losses, activations, RNN/GRU/LSTM
and their cells, the Transformer family, MultiheadAttention, Embedding, Bilinear, ...) and a spread of its
ModuleInputs (every one with MINILORA_MODULE_DB_ALL=1), built from the same seed with the constructor arguments
exactly as torch's database spells them, in training and in eval mode:
- the module prints as torch's (repr, extra_repr), names its parameters, buffers and submodules in torch's order,
  draws torch's initial values (construction and ``reset_parameters()`` after the same seed; a Lazy module's
  at its first call), and loads torch's state_dict (key names, shapes, buffers such as num_batches_tracked);
- forward (float64) gives torch's outputs and running statistics, within 1e-13, and backward of a fixed random
  cotangent gives torch's parameter and input gradients;
- forward in float32 gives torch's bits, except for the modules in FLOAT32_ROUNDING (the reason stated);
- each of the database's error inputs that torch refuses, minilora refuses.
Modules or options minilora does not implement are in REFUSED: the test checks that they are refused by name.
"""
import os
import re

import numpy as np
import pytest

from torch_db import as_numpy, ml, ml_dtype, to_minilora, torch

from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402

SAMPLES_PER_MODULE = None if os.environ.get("MINILORA_MODULE_DB_ALL") == "1" else 4
TOLERANCE64 = 1e-13  # float64: minilora's sums and products in another order than torch's kernels' (a few ulps)

# float32 outputs that are not torch's bits, and why; compared within FLOAT32_ENVELOPE
_SUM_ORDER = ("torch's float32 kernel sums in its own order (ATen's vectorised reductions / MKL's or oneDNN's "
              "products); minilora's NumPy sums differ in the last bits")
_SLEEF = "the activation's float32 SLEEF/ATen formula (nn.functional's) differs from minilora's by an ulp"
FLOAT32_ROUNDING = {
    **dict.fromkeys("""Linear Bilinear Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d
    LazyConv1d LazyConv2d LazyConv3d LazyConvTranspose1d LazyConvTranspose2d LazyConvTranspose3d MultiheadAttention
    TransformerEncoder TransformerEncoderLayer TransformerDecoderLayer Transformer RNN GRU LSTM RNNCell GRUCell
    LSTMCell""".split(), _SUM_ORDER + " (a matrix product)"),
    **dict.fromkeys("""AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AvgPool3d LPPool1d LPPool2d LPPool3d
    BatchNorm1d BatchNorm2d BatchNorm3d InstanceNorm1d InstanceNorm2d InstanceNorm3d GroupNorm LocalResponseNorm
    BCELoss BCEWithLogitsLoss CrossEntropyLoss LinearCrossEntropyLoss NLLLoss MultiMarginLoss MultiLabelMarginLoss
    PoissonNLLLoss CTCLoss LogSoftmax Softmax2d""".split(), _SUM_ORDER + " (a window sum, mean or norm)"),
    **dict.fromkeys("ELU CELU SELU GELU GLU LogSigmoid Softplus Mish".split(), _SLEEF),
}
# float32 sums of at most a few hundred O(1) terms, each rounded to 2^-24 relative: a few 1e-6 at most
FLOAT32_ENVELOPE = 1e-5

# what minilora refuses by name: ModuleInfo name -> (which samples, the error's type and words)
REFUSED = {
    "nn.LinearCrossEntropyLoss": (lambda sample: sample.constructor_input.kwargs.get("options") is not None,
                                  NotImplementedError, "options= (torch's chunked kernel) is not implemented"),
}


def module_name(info):
    return info.module_cls.__name__


def spread(samples, count):
    """``count`` samples spread evenly over the list (all of them with count None)."""
    if count is None or len(samples) <= count:
        return list(samples)
    return [samples[round(i * (len(samples) - 1) / (count - 1))] for i in range(count)]


# ---- carrying constructor and forward arguments over ------------------------------------------------------
def convert(value, converted):
    """What to_minilora converts, plus the non-tensor values module_db passes: a PackedSequence, a function of
    torch.nn.functional (an activation), a TransformerEncoderLayer instance (TransformerEncoder's layer)."""
    if isinstance(value, torch.nn.utils.rnn.PackedSequence):
        return ml.nn.utils.rnn.PackedSequence(*(convert(part, converted) for part in value))
    if isinstance(value, torch.nn.TransformerEncoderLayer):
        return _encoder_layer(value)
    if callable(value) and getattr(torch.nn.functional, getattr(value, "__name__", ""), None) is value:
        return getattr(ml.nn.functional, value.__name__)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(convert(item, converted) for item in value)
    if isinstance(value, dict):
        return {key: convert(item, converted) for key, item in value.items()}
    return to_minilora(value, converted)


def _encoder_layer(layer):
    """minilora's TransformerEncoderLayer with the torch layer's settings and weights."""
    activation = convert(layer.activation, {})
    ours = ml.nn.TransformerEncoderLayer(
        layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features, layer.dropout.p,
        activation, layer.norm1.eps, layer.self_attn.batch_first, layer.norm_first,
        bias=layer.linear1.bias is not None, dtype=ml_dtype(layer.linear1.weight.dtype))
    ours.load_state_dict({key: to_minilora(value) for key, value in layer.state_dict().items()})
    return ours


def build(info, sample, dtype, training):
    """(torch's module, minilora's), each built after manual_seed(0), moved to dtype, in the mode."""
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    theirs = info.module_cls(*args, **kwargs).to(dtype).train(training)
    ml.manual_seed(0)
    converted = {}
    ours = getattr(ml.nn, module_name(info))(*convert(args, converted), **convert(kwargs, converted))
    return theirs, ours.to(ml_dtype(dtype)).train(training)


def flat(value):
    """A module's output (a tensor, tuples of them, a PackedSequence) as a list of tensors."""
    if isinstance(value, (torch.nn.utils.rnn.PackedSequence, ml.nn.utils.rnn.PackedSequence)):
        return [value.data]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in flat(item)]
    return [value]


def forward_both(theirs, ours, sample):
    """Both modules' outputs on the sample's forward arguments (the same draws: manual_seed(1) before each), and
    the two lists of input tensors (a non-leaf torch input keeps its .grad, as minilora's converted leaf)."""
    args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
    inputs = [t for t in flat([*args, *kwargs.values()]) if isinstance(t, torch.Tensor)]
    for tensor in inputs:
        if tensor.requires_grad and not tensor.is_leaf:
            tensor.retain_grad()
    converted = {}
    our_args, our_kwargs = convert(args, converted), convert(kwargs, converted)
    torch.manual_seed(1)
    their_out = theirs(*args, **kwargs)
    ml.manual_seed(1)
    our_out = ours(*our_args, **our_kwargs)
    our_inputs = [t for t in flat([*our_args, *our_kwargs.values()]) if isinstance(t, ml.Tensor)]
    return flat(their_out), flat(our_out), inputs, our_inputs


def assert_close(ours, theirs, what, tolerance):
    """Same shape and dtype, values within ``tolerance`` (relative above 1, absolute below; 0: the same bits)."""
    ours_np, theirs_np = as_numpy(ours), as_numpy(theirs)
    assert ours_np.shape == theirs_np.shape and ours_np.dtype == theirs_np.dtype, \
        f"{what}: {ours_np.dtype}{ours_np.shape}, torch's {theirs_np.dtype}{theirs_np.shape}"
    if tolerance == 0:
        np.testing.assert_array_equal(ours_np, theirs_np, err_msg=what)
    else:
        np.testing.assert_allclose(ours_np, theirs_np, rtol=tolerance, atol=tolerance, equal_nan=True, err_msg=what)


def assert_same_state(ours, theirs, what, tolerance=0):
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state), f"{what}: state_dict keys"
    for key, value in their_state.items():
        assert_close(ours_state[key], value, f"{what}: {key}", tolerance)


def assert_same_structure(ours, theirs, what):
    """repr, extra_repr, and the names (in order) of parameters, buffers and submodules, with their modes."""
    assert repr(ours) == repr(theirs), what
    assert ours.extra_repr() == theirs.extra_repr(), what
    for names in ("named_parameters", "named_buffers"):
        assert [n for n, _ in getattr(ours, names)()] == [n for n, _ in getattr(theirs, names)()], f"{what}: {names}"
    assert [(n, m.training) for n, m in ours.named_modules()] == \
        [(n, m.training) for n, m in theirs.named_modules()], f"{what}: named_modules"


def samples_of(info, dtype, training):
    samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=dtype == torch.float64,
                                      training=training)
    refused = REFUSED.get(info.name, (lambda sample: False,))[0]
    return [sample for sample in samples if not refused(sample)]


# ---- the tests ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("info", module_db, ids=lambda info: info.name)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_float64(info, training):
    """Structure, initial values, forward and backward of a spread of the module's samples, as torch's."""
    is_lazy = module_name(info).startswith("Lazy")
    for index, sample in enumerate(spread(samples_of(info, torch.float64, training), SAMPLES_PER_MODULE)):
        what = f"{info.name} {'train' if training else 'eval'} sample {index} {sample.desc!r}"
        theirs, ours = build(info, sample, torch.float64, training)
        assert_same_structure(ours, theirs, what)
        if not is_lazy:
            assert_same_state(ours, theirs, f"{what}: initial values")
            assert_same_reset(ours, theirs, what)
            ours.load_state_dict({key: to_minilora(value) for key, value in theirs.state_dict().items()})
        their_out, our_out, their_inputs, our_inputs = forward_both(theirs, ours, sample)
        if is_lazy:  # materialised at the first call, with torch's draws
            assert_same_structure(ours, theirs, f"{what}: after the first call")
            assert_same_state(ours, theirs, f"{what}: initial values")
        assert len(our_out) == len(their_out), f"{what}: {len(our_out)} outputs, torch's {len(their_out)}"
        for k, (mine, torchs) in enumerate(zip(our_out, their_out)):
            assert_close(mine, torchs, f"{what}: output {k}", TOLERANCE64)
        assert_same_state(ours, theirs, f"{what}: state after forward", TOLERANCE64)
        assert_same_backward(ours, theirs, our_out, their_out, our_inputs, their_inputs, what)


def assert_same_reset(ours, theirs, what):
    """``reset_parameters()`` after the same seed draws torch's values, and as many numbers as torch's."""
    if not hasattr(theirs, "reset_parameters"):
        assert not hasattr(ours, "reset_parameters"), what
        return
    torch.manual_seed(5)
    theirs.reset_parameters()
    ml.manual_seed(5)
    ours.reset_parameters()
    assert_same_state(ours, theirs, f"{what}: reset_parameters()")
    assert ml.rand(1).item() == torch.rand(1).item(), f"{what}: reset_parameters() drew another count"


def assert_same_backward(ours, theirs, our_out, their_out, our_inputs, their_inputs, what):
    """Gradients of sum(output * cotangent) over the differentiable outputs: parameters' and inputs'."""
    cotangents = np.random.default_rng(0)
    their_loss = our_loss = 0
    for mine, torchs in zip(our_out, their_out):
        if isinstance(torchs, torch.Tensor) and torchs.requires_grad:
            cotangent = cotangents.standard_normal(tuple(torchs.shape))
            their_loss = their_loss + (torchs * torch.tensor(cotangent)).sum()
            our_loss = our_loss + (mine * ml.tensor(cotangent)).sum()
    if isinstance(their_loss, int):
        return
    their_loss.backward()
    our_loss.backward()
    their_params = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        assert (parameter.grad is None) == (their_params[name].grad is None), f"{what}: {name}.grad"
        if parameter.grad is not None:
            assert_close(parameter.grad, their_params[name].grad, f"{what}: {name}.grad", TOLERANCE64)
    for k, (mine, torchs) in enumerate(zip(our_inputs, their_inputs)):
        assert (mine.grad is None) == (torchs.grad is None), f"{what}: input {k}'s grad"
        if torchs.grad is not None:
            assert_close(mine.grad, torchs.grad, f"{what}: input {k}'s grad", TOLERANCE64)


@pytest.mark.parametrize("info", module_db, ids=lambda info: info.name)
def test_module_float32(info):
    """The first sample's float32 forward: torch's bits, or within the envelope FLOAT32_ROUNDING states."""
    sample = samples_of(info, torch.float32, False)[0]
    theirs, ours = build(info, sample, torch.float32, False)
    if not module_name(info).startswith("Lazy"):
        ours.load_state_dict({key: to_minilora(value) for key, value in theirs.state_dict().items()})
    their_out, our_out, _, _ = forward_both(theirs, ours, sample)
    tolerance = FLOAT32_ENVELOPE if module_name(info) in FLOAT32_ROUNDING else 0
    for k, (mine, torchs) in enumerate(zip(our_out, their_out)):
        assert_close(mine, torchs, f"{info.name} float32 output {k}", tolerance)


@pytest.mark.parametrize("info", [info for info in module_db if info.module_error_inputs_func],
                         ids=lambda info: info.name)
def test_module_error_inputs(info):
    """Where torch refuses the database's error input (at construction or at the call), minilora refuses it."""
    for training in (True, False):
        for error_input in info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                                         requires_grad=False, training=training):
            sample = error_input.module_error_input
            on_forward = error_input.error_on == ModuleErrorEnum.FORWARD_ERROR
            try:
                module = info.module_cls(*sample.constructor_input.args, **sample.constructor_input.kwargs)
                if on_forward:
                    module.train(training)(*sample.forward_input.args, **sample.forward_input.kwargs)
            except error_input.error_type as error:
                their_words = str(error)
            else:  # (BatchNorm's eps=0 is refused in training only: torch's check)
                continue
            with pytest.raises(Exception) as refusal:
                converted = {}
                ours = getattr(ml.nn, module_name(info))(*convert(sample.constructor_input.args, converted),
                                                         **convert(sample.constructor_input.kwargs, converted))
                if on_forward:
                    ours.train(training)(*convert(sample.forward_input.args, converted),
                                         **convert(sample.forward_input.kwargs, converted))
            assert isinstance(refusal.value, error_input.error_type), \
                f"{info.name}: {refusal.value!r}, torch's {error_input.error_type.__name__}"
            words = error_input.error_regex if re.search(error_input.error_regex, their_words) else re.escape(their_words)
            assert re.search(words, str(refusal.value)), \
                f"{info.name}: {refusal.value!r}, torch's words {words!r}"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_by_name(name):
    """The samples minilora does not implement are refused with an error that names what is missing."""
    info = next(info for info in module_db if info.name == name)
    chosen, error, words = REFUSED[name]
    samples = [sample for sample in info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                                            requires_grad=False, training=True) if chosen(sample)]
    assert samples
    for sample in spread(samples, 3):
        with pytest.raises(error, match=re.escape(words)):
            theirs, ours = build(info, sample, torch.float64, True)
            forward_both(theirs, ours, sample)


# ---- train() and eval(): dropout inside the composite modules ------------------------------------------------
# (module_db builds them with dropout=0; a user's model has dropout, drawn in training only)
DROPOUT_MODULES = {
    "TransformerEncoderLayer": lambda nn: nn.TransformerEncoderLayer(4, 2, 8, dropout=0.5, norm_first=True),
    "TransformerDecoderLayer": lambda nn: nn.TransformerDecoderLayer(4, 2, 8, dropout=0.5, batch_first=True),
    "Transformer": lambda nn: nn.Transformer(4, 2, 1, 1, 8, dropout=0.5),
    "MultiheadAttention": lambda nn: nn.MultiheadAttention(4, 2, dropout=0.5),
    "LSTM": lambda nn: nn.LSTM(4, 3, num_layers=3, dropout=0.5),
    "GRU": lambda nn: nn.GRU(4, 3, num_layers=2, dropout=0.5, bidirectional=True),
}


@pytest.mark.parametrize("name", sorted(DROPOUT_MODULES))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dropout_follows_train_and_eval(name, training):
    """In training the masks are torch's draws (the same seed, the same order); in eval there are none."""
    outputs = []
    for library in (torch, ml):
        library.manual_seed(0)
        module = DROPOUT_MODULES[name](library.nn).double().train(training)
        x = library.randn(3, 2, 4, dtype=library.float64)
        arguments = (x,) * {"TransformerDecoderLayer": 2, "Transformer": 2, "MultiheadAttention": 3}.get(name, 1)
        outputs.append(flat(module(*arguments))[0])
    assert_close(outputs[1], outputs[0], f"{name} {'train' if training else 'eval'}", TOLERANCE64)


def test_torch_nn_parameter_module():
    """``from torch.nn.parameter import Parameter`` (older tutorials, torch's own modules) and its is_lazy."""
    from minilora.nn.parameter import Buffer, Parameter, UninitializedParameter, is_lazy
    assert (Parameter, Buffer, UninitializedParameter) == (ml.nn.Parameter, ml.nn.Buffer, ml.nn.UninitializedParameter)
    lazy = ml.nn.LazyLinear(3)
    assert is_lazy(lazy.weight) and torch.nn.parameter.is_lazy(torch.nn.LazyLinear(3).weight)
    lazy(ml.ones(2, 4))
    assert not is_lazy(lazy.weight) and not is_lazy(ml.nn.Linear(4, 3).weight)


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
def test_double_backward_of_a_scalar_softmax(name):
    """module_db's 'scalar' sample (Softmax(0) on a 0-d input) under create_graph=True: torch's zero second
    derivative (minilora's recorded backward asked for the softmax along no axis: a TypeError)."""
    results = []
    for library in (torch, ml):
        x = library.tensor(0.3, dtype=library.float64, requires_grad=True)
        grad, = library.autograd.grad(getattr(library.nn, name)(0)(x) * 2.0, [x], create_graph=True)
        results.append((grad, *library.autograd.grad(grad * 3.0, [x])))
    for ours, theirs in zip(results[1], results[0]):
        assert_close(ours, theirs, name, TOLERANCE64)
