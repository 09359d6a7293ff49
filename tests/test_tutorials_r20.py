"""Round 20: tutorial code copied as written, run with torch / PEFT and with minilora from the same seed, one test
per divergence found:

* the optimization loop with gradient clipping (``clip_grad_norm_`` between ``backward`` and ``step``): the clipped
  gradients were an ulp off torch's in about one step in three (a BLAS dot product for the norm, one float64
  division for the coefficient, where torch runs vector_norm's kernel and ``(total + 1e-6).reciprocal() * max_norm``);
* PEFT's LoRA guide: an adapter added to a model already in eval mode has a Dropout module that trains (PEFT's
  outputs are dropped out until the next ``eval()``; minilora's were not), and ``ties_svd`` merges gave float64
  factors;
* "Autograd mechanics": the in-place correctness check's error and ``grad_fn._raw_saved_self.register_hooks``.

Numbers are compared bit for bit where both libraries run the same arithmetic, else to 1e-6 (a BLAS order)."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import mkl_half_gemm  # noqa: E402
from peft_versions import PEFT_022, as_of_peft  # noqa: E402

BOTH = [(torch, peft), (ml, ml_peft)]


def _numbers(t):
    return t.detach().float().numpy().copy()


# ==================================================================================================
# the optimization loop with gradient clipping
# ==================================================================================================
def _clipped_training(T, keyword):
    """A Linear trained by SGD with momentum; each step's loss, total norm and clipped gradients."""
    T.manual_seed(0)
    model = T.nn.Linear(4, 2)
    optimizer = T.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = T.ones(3, 4)
    printed = []
    for step in range(8):
        loss = model(x).pow(2).mean()
        loss.backward()
        if keyword:
            norm = T.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        else:
            norm = T.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        printed.append([_numbers(loss), _numbers(norm), _numbers(model.weight.grad), _numbers(model.bias.grad)])
        optimizer.step()
        optimizer.zero_grad()
    return printed


@pytest.mark.parametrize("keyword", [True, False], ids=["max_norm=", "positional"])
def test_clipped_training_loop_is_torchs_bits(keyword):
    expected, got = (_clipped_training(T, keyword) for T, _ in BOTH)
    forward_diverged = False
    for step, (e, g) in enumerate(zip(expected, got)):
        # Off the AMD EPYC where this was measured (mkl_half_gemm.APPLIES), MKL's sgemm for Linear's 3x4 @ 4x2 sums
        # the 4 products in another order (on an Intel Xeon: FMA lanes reduced as a tree), a float32 ulp off
        # minilora's in one loss (step 5 here). Every step up to that forward stays bit for bit (the clipping is
        # checked there); after it, the ulp carries into the weights: rtol 5e-7 (measured 4.1e-7 by step 7).
        forward_diverged = forward_diverged or (not mkl_half_gemm.APPLIES and not np.array_equal(g[0], e[0]))
        for what, a, b in zip(("loss", "norm", "weight.grad", "bias.grad"), e, g):
            if forward_diverged:
                np.testing.assert_allclose(b, a, rtol=5e-7, atol=0, err_msg=f"step {step}: {what}")
            else:
                np.testing.assert_array_equal(b, a, err_msg=f"step {step}: {what}")


def test_clip_grad_norm_of_half_gradients_rounds_as_torch():
    """float16 gradients: torch's coefficient is float16((total + 1e-6).reciprocal()) * max_norm, each rounded
    (minilora divided max_norm by the float16 denominator in float32 and rounded once)."""
    rng = np.random.default_rng(0)
    grad = (rng.standard_normal((14, 22)).astype(np.float32) * 0.5).astype(np.float16)
    clipped = []
    for T, _ in BOTH:
        p = T.nn.Parameter(T.zeros(14, 22, dtype=T.float16))
        p.grad = T.tensor(grad)
        norm = T.nn.utils.clip_grad_norm_([p], 0.1)
        clipped.append((_numbers(norm), _numbers(p.grad)))
    np.testing.assert_array_equal(clipped[1][0], clipped[0][0])
    np.testing.assert_array_equal(clipped[1][1], clipped[0][1])


# ==================================================================================================
# PEFT's custom-model guide: an MLP, LoRA on two layers
# ==================================================================================================
def _mlp(T):
    T.manual_seed(0)
    return T.nn.Sequential(T.nn.Linear(20, 32), T.nn.ReLU(), T.nn.Linear(32, 32), T.nn.ReLU(), T.nn.Linear(32, 2))


def _adapter_added_in_eval_mode(T, P):
    model = P.get_peft_model(_mlp(T), P.LoraConfig(r=8, target_modules=["0", "2"], lora_dropout=0.1))
    model.eval()
    model.add_adapter("other", P.LoraConfig(r=4, target_modules=["0", "2"], lora_dropout=0.5,
                                            init_lora_weights=False))
    model.set_adapter("other")
    trains = model.base_model.model[0].lora_dropout["other"].training
    x = T.rand(4, 20)
    with T.no_grad():
        first, second = model(x), model(x)
    model.eval()  # (now every Dropout is off, as in PEFT)
    with T.no_grad():
        third = model(x)
    return [trains, _numbers(first), _numbers(second), _numbers(third)]


def test_an_adapter_added_in_eval_mode_does_not_drop_out_as_peft():
    """PEFT 0.22: set_adapter puts the adapter's Dropout in the layer's mode, so one added after ``model.eval()``
    and then activated is off (PEFT calls ``lora_dropout[name](x)``: its own flag decides). 0.21 left it
    training until the next ``model.eval()``, each call drawing another mask."""
    expected, got = (_adapter_added_in_eval_mode(T, P) for T, P in BOTH)
    assert got[0] is False and expected[0] is as_of_peft(True, False)
    np.testing.assert_array_equal(got[1], got[2])  # no mask: the same output twice, and after model.eval()
    np.testing.assert_array_equal(got[1], got[3])
    if PEFT_022:
        for e, g in zip(expected[1:], got[1:]):
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_allclose(got[3], expected[3], rtol=1e-6, atol=1e-6)  # both in eval mode


def _ties_svd(T, P):
    model = P.get_peft_model(_mlp(T), P.LoraConfig(r=8, target_modules=["0", "2"], init_lora_weights=False))
    model.add_adapter("other", P.LoraConfig(r=8, target_modules=["0", "2"], init_lora_weights=False))
    model.add_weighted_adapter(["default", "other"], [0.7, 0.3], "ties", combination_type="ties_svd", density=0.5)
    layer = model.base_model.model[2]
    return [str(layer.lora_A["ties"].weight.dtype).split(".")[-1], _numbers(layer.lora_B["ties"].weight @
                                                                        layer.lora_A["ties"].weight)]


def test_ties_svd_adapter_is_float32_as_peft():
    """PEFT divides the kept sum by ``torch.clamp(count, min=1.0)``, a float32 tensor: minilora's float64 count
    made the SVD, and so the new adapter's factors, float64."""
    expected, got = (_ties_svd(T, P) for T, P in BOTH)
    assert got[0] == expected[0] == "float32"
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)


# ==================================================================================================
# "Autograd mechanics": in-place correctness checks, hooks for saved tensors
# ==================================================================================================
def _sigmoid_output_changed(T):
    a = T.randn(3, requires_grad=True)
    b = a.sigmoid()
    b.mul_(2)
    b.sum().backward()


def _input_changed_after_its_own_in_place_op(T):
    a = T.randn(3, requires_grad=True)
    c = a * 2
    d = c * c
    c.add_(1)
    d.sum().backward()


def _a_constant_operand_changed(T):
    a = T.randn(2, 3, requires_grad=True)
    c = T.randn(3, 4)
    b = a @ c
    c.add_(1)
    b.sum().backward()


def _another_output_of_the_call_changed(T):
    """torch's LinalgQrBackward0 saves Q and R: R's gradient needs Q, so changing Q is the error (minilora's node
    for R read the changed Q: a gradient twice torch's, silently)."""
    a = T.randn(3, 2, requires_grad=True)
    q, r = T.linalg.qr(a)
    q.mul_(2)
    r.sum().backward()


def _output_changed_in_anomaly_mode(T):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch warns that anomaly mode slows things down)
        with T.autograd.set_detect_anomaly(True):
            a = T.randn(3, requires_grad=True)
            b = a.exp()
            b.add_(1)
            b.sum().backward()


@pytest.mark.parametrize("case", [_sigmoid_output_changed, _input_changed_after_its_own_in_place_op,
                                  _a_constant_operand_changed, _another_output_of_the_call_changed,
                                  _output_changed_in_anomaly_mode])
def test_a_saved_tensor_changed_in_place_is_reported_in_torchs_words(case):
    messages = []
    for T, _ in BOTH:
        with pytest.raises(RuntimeError) as error:
            case(T)
        messages.append(str(error.value))
    assert messages[1] == messages[0]


def test_a_second_backward_is_refused_in_torchs_words():
    messages = []
    for T, _ in BOTH:
        x = T.randn(3, requires_grad=True)
        y = x.exp().sum()
        y.backward()
        with pytest.raises(RuntimeError) as error:
            y.backward()
        messages.append(str(error.value))
    assert messages[1] == messages[0]


def _hooks_on_one_saved_tensor(T):
    """The autograd mechanics note: ``y.grad_fn._raw_saved_self.register_hooks(pack_hook, unpack_hook)``."""
    log = []

    def pack_hook(t):
        log.append(("pack", tuple(t.shape), t.requires_grad))
        return t * 1

    def unpack_hook(t):
        log.append(("unpack", tuple(t.shape)))
        return t

    T.manual_seed(0)
    x = T.randn(5, requires_grad=True)
    y = x.pow(2)
    y.grad_fn._raw_saved_self.register_hooks(pack_hook, unpack_hook)
    log.append(_numbers(y.grad_fn._saved_self).tolist())
    y.sum().backward()
    z = x.sigmoid()  # an output the node saves, replaced by what unpack returns: the gradient follows it
    z.grad_fn._raw_saved_result.register_hooks(lambda t: t, lambda t: T.full((5,), 0.5))
    z.sum().backward()
    log.append(_numbers(x.grad).tolist())
    for again in (lambda: z.grad_fn._raw_saved_result.register_hooks(pack_hook, unpack_hook),
                  lambda: x.pow(3).grad_fn._raw_saved_self.register_hooks(pack_hook, unpack_hook) or
                  log.append("registered")):
        try:
            again()
        except RuntimeError as error:
            log.append(str(error))
    w = x.exp()
    raw = w.grad_fn._raw_saved_result
    raw.register_hooks(pack_hook, unpack_hook)
    with pytest.raises(RuntimeError) as error:
        raw.register_hooks(pack_hook, unpack_hook)
    log.append(str(error.value))
    return log


def test_hooks_on_one_saved_tensor_as_torch():
    expected, got = (_hooks_on_one_saved_tensor(T) for T, _ in BOTH)
    assert got == expected


def _retained_then_changed_in_place(T):
    """retain_grad(), then an in-place op (directly, and through a view of the tensor): torch moves the retained
    gradient to the new value, and hooks registered before the change still see the old value's."""
    printed = []
    a = T.tensor([1., 2., 3.], requires_grad=True)
    b = a * 2
    b.retain_grad()
    b.mul_(3)
    b.sum().backward()
    printed.append((b.grad.tolist(), a.grad.tolist(), b.retains_grad))
    b = a * 2
    b.retain_grad()
    b.register_hook(lambda g: printed.append(("hook", g.tolist())))
    b[1:].mul_(5)
    (b * b).sum().backward()
    printed.append((b.grad.tolist(), a.grad.tolist(), b.retains_grad))
    return printed


def test_retain_grad_follows_an_in_place_change_as_torch():
    """minilora kept the gradient of the old value in .grad ([3, 3, 3] where torch has [1, 1, 1])."""
    expected, got = (_retained_then_changed_in_place(T) for T, _ in BOTH)
    assert got == expected


def _grad_cam_with_an_in_place_relu(T):
    """Grad-CAM's hooks on a conv layer whose ReLU is in place (as torchvision's ResNets build it): torch's
    BackwardHookFunction returns the layer's output as a view, and the in-place ReLU on it is its error
    (minilora's hook copied the output, and the ReLU changed the copy quietly)."""
    T.manual_seed(0)
    model = T.nn.Sequential(T.nn.Conv2d(1, 2, 3), T.nn.ReLU(inplace=True), T.nn.Flatten(), T.nn.Linear(32, 3))
    grads = []
    model[0].register_full_backward_hook(lambda module, grad_input, grad_output: grads.append(grad_output[0]))
    model(T.randn(1, 1, 6, 6, requires_grad=True))


def test_an_in_place_op_on_a_hooked_modules_output_is_refused_as_torch():
    messages = []
    for T, _ in BOTH:
        with pytest.raises(RuntimeError) as error:
            _grad_cam_with_an_in_place_relu(T)
        messages.append(str(error.value))
    assert messages[1] == messages[0]
