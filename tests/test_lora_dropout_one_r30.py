"""``lora_dropout=1.0``: PEFT takes it (nn.Dropout(p=1) returns ``x * zeros``, so the branch adds nothing in training,
or NaN where x is infinite) and minilora refused it. Now the config, the op, the CLI and every path of the LoRA layer
take a probability in [0, 1], as torch's nn.Dropout does, with PEFT's numbers."""
import numpy as np
import pytest

import minilora as ml
from minilora import ops

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")


def test_config_takes_one_and_refuses_past_it():
    assert ml.lora.LoraConfig(r=2, lora_dropout=1.0).lora_dropout == 1.0
    assert ml.lora.LoraConfig(r=2, lora_dropout=1).lora_dropout == 1
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"lora_dropout must be a probability in \[0, 1\]"):
            ml.lora.LoraConfig(r=2, lora_dropout=bad)


def _small_pair(dtype, **config):
    """torch's Linear-ReLU-Linear under PEFT's LoRA, and minilora's, the same weights (lora_B drawn)."""
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4)).to(dtype)
    ours = ml.nn.Sequential(ml.nn.Linear(8, 6), ml.nn.ReLU(), ml.nn.Linear(6, 4)).to(getattr(ml, str(dtype).split(".")[1]))
    config = dict(r=2, lora_alpha=4, lora_dropout=1.0, target_modules=["0", "2"], **config)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(init_lora_weights=False, **config))
    ours = ml.lora.get_peft_model(ours, ml.lora.LoraConfig(**config))
    ours_named = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        ours_named[name].data = ml.tensor(p.detach().float().numpy()).to(ours_named[name].dtype)
    return theirs.train(), ours.train()


def _forward_backward(model, x):
    y = model(x)
    y.sum().backward()
    grads = {n: p.grad.float().numpy() for n, p in model.named_parameters() if p.requires_grad}
    return y.detach().float().numpy(), grads


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("config", [{}, {"use_dora": True}, {"use_rslora": True}])
def test_a_layer_trains_as_pefts(dtype, config):
    """The branch adds ``s B A (x * 0)``: zeros, NaN on a row with an infinity (in x, or reaching the second layer),
    and the adapters' gradients are zeros or NaN as PEFT's; bfloat16: the 16-bit base with float32 adapters."""
    torch_dtype = getattr(torch, dtype)
    theirs, ours = _small_pair(torch_dtype, **config)
    x = np.random.default_rng(1).standard_normal((3, 8))
    x[0, 0] = np.inf
    y, grads = _forward_backward(theirs, torch.tensor(x, dtype=torch_dtype))
    got_y, got_grads = _forward_backward(ours, ml.tensor(x).to(getattr(ml, dtype)))
    np.testing.assert_array_equal(got_y, y)
    assert np.isnan(y[0]).all() and np.isfinite(y[1:]).all()
    assert got_grads.keys() == grads.keys()
    for name in grads:
        np.testing.assert_array_equal(got_grads[name], grads[name], err_msg=name)


def test_in_eval_mode_dropout_is_off():
    theirs, ours = _small_pair(torch.float32)
    x = np.random.default_rng(2).standard_normal((3, 8)).astype(np.float32)
    with torch.no_grad():
        y = theirs.eval()(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(ours.eval()(ml.tensor(x)).numpy(), y)
    with torch.no_grad(), theirs.disable_adapter():
        assert not np.array_equal(y, theirs(torch.tensor(x)).numpy())  # the branch adds


def test_the_op_drops_everything_with_or_without_a_seed():
    rng = np.random.default_rng(3)
    x = ml.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    W0, A, B = (ml.tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 4), (2, 4), (3, 2)))
    base = (x @ W0.T).numpy()
    for seed in (None, 7):
        out = ops.lora_linear(x, W0, A, B, 2.0, dropout_p=1.0, seed=seed)
        np.testing.assert_array_equal(out.numpy(), base)
        out.sum().backward()
        assert not A.grad.numpy().any() and not B.grad.numpy().any()
        A.grad = B.grad = x.grad = None


def test_the_cli_takes_one():
    from minilora.cli import dropout_probability
    assert dropout_probability("1") == 1.0
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 1\]"):
        dropout_probability("1.01")


def test_a_llama_step_is_pefts():
    """All-linear LoRA on a Llama with lora_dropout=1.0: the loss is the base model's, the adapters' gradients and
    AdamW's weights PEFT's (lora_B drawn, so the zeros come from the dropout, not from B)."""
    from minilora import blas
    if blas._mkl_library() is None:
        pytest.skip("the `mkl` wheel (minilora[mkl]) is not installed: the step's bits are MKL's")
    from test_lora_step_bits_r29 import _peft_llama_pair, _step
    before = blas.select("mkl")
    try:
        theirs, ours = _peft_llama_pair(1.0, 16)
        ids = np.random.default_rng(0).integers(0, 300, (2, 16))
        loss, grads, values = _step(theirs, torch.as_tensor, ids, 3, torch.optim.AdamW)
        got_loss, got_grads, got_values = _step(ours, ml.tensor, ids, 3, ml.optim.AdamW)
    finally:
        blas.select(before or "openblas")
    assert got_loss == loss
    assert len(grads) == 28 and not any(g.any() for g in grads.values())
    for name in grads:
        np.testing.assert_array_equal(got_grads[name], grads[name], err_msg=name)
        np.testing.assert_array_equal(got_values[name], values[name], err_msg=name)
