"""Gradient checkpointing (minilora.nn.checkpoint, model.gradient_checkpointing_enable): the same
numbers as without it, less memory kept for backward."""
import numpy as np
import pytest

import minilora as ml
from minilora import memory, nn, ops
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM

CONFIG = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
IDS = np.random.default_rng(0).integers(0, 64, (2, 7))


class Block(nn.Module):
    """A small segment with a parameter, a nonlinearity and dropout (so recomputing must replay it)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 5, dtype=ml.float64)
        self.drop = nn.Dropout(0.5)

    def forward(self, x, scale):
        return self.drop(ops.silu(self.lin(x))) * scale


def run(use_checkpoint, x_requires_grad=True, backward_twice=False):
    ml.manual_seed(0)
    block = Block()
    x = ml.tensor(np.random.default_rng(1).standard_normal((3, 5)), requires_grad=x_requires_grad)
    ml.manual_seed(7)  # the dropout mask is drawn from here
    for _ in range(2 if backward_twice else 1):
        y = nn.checkpoint(block, x, 2.0, use_reentrant=False) if use_checkpoint else block(x, 2.0)
        (y * y).sum().backward()
    after = ml.get_rng_state().tolist()  # (torch's 5056 bytes)
    return y.numpy(), x.grad, {n: p.grad for n, p in block.named_parameters()}, after


@pytest.mark.parametrize("backward_twice", [False, True])
def test_checkpoint_gives_the_same_output_and_gradients(backward_twice):
    plain, ckpt = run(False, backward_twice=backward_twice), run(True, backward_twice=backward_twice)
    np.testing.assert_array_equal(ckpt[0], plain[0])
    np.testing.assert_array_equal(ckpt[1], plain[1])  # the input's gradient
    for name in plain[2]:  # parameter gradients, accumulated over two backwards as without it
        np.testing.assert_array_equal(ckpt[2][name], plain[2][name], err_msg=name)
    assert ckpt[3] == plain[3]  # recomputing replays the dropout draws without consuming new ones


def test_checkpoint_trains_parameters_when_the_input_needs_no_gradient():
    """A frozen embedding feeds the segment: its parameters still get their gradients."""
    plain, ckpt = run(False, x_requires_grad=False), run(True, x_requires_grad=False)
    assert ckpt[1] is None
    for name in plain[2]:
        np.testing.assert_array_equal(ckpt[2][name], plain[2][name], err_msg=name)


def test_checkpoint_of_a_function_and_what_it_refuses():
    a = ml.tensor(np.arange(1.0, 4.0), requires_grad=True)
    y = nn.checkpoint(lambda t, u: t * t * u, a, a, use_reentrant=False)  # the same tensor twice: its gradients add up
    y.sum().backward()
    np.testing.assert_allclose(a.grad, 3 * np.arange(1.0, 4.0) ** 2)
    with ml.no_grad():  # nothing to differentiate: a plain call, no graph node
        assert nn.checkpoint(lambda t: t * 2, a, use_reentrant=False)._ctx is None
    # a tuple of outputs, as torch's checkpoint takes (round 26; it once refused "must return one Tensor")
    first, second = nn.checkpoint(lambda t: (t, t * 2), a, use_reentrant=False)
    assert isinstance(first, ml.Tensor) and first.requires_grad and second.requires_grad
    with pytest.raises(NotImplementedError, match="returns a dict"):  # (torch's differentiates through a dict)
        nn.checkpoint(lambda t: {"out": t}, a, use_reentrant=False)


def llama_step(checkpointing, lora=False):
    ml.manual_seed(0)
    model = LlamaForCausalLM(CONFIG, dtype="float64")
    if lora:
        model = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear", lora_dropout=0.2,
                                                 init_lora_weights=False))
    if checkpointing:
        model.gradient_checkpointing_enable()  # through PeftModel too, as in PEFT
    assert model.is_gradient_checkpointing == checkpointing
    model.train()
    ml.manual_seed(3)
    stats = memory.measure_activations(model, IDS)  # (leaves no gradients behind)
    ml.manual_seed(3)
    model(IDS, labels=IDS).loss.backward()
    return stats, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-with-dropout"])
def test_llama_gradient_checkpointing_same_gradients_less_memory(lora):
    (plain, g_plain), (ckpt, g_ckpt) = llama_step(False, lora), llama_step(True, lora)
    assert ckpt.loss == plain.loss
    assert set(g_ckpt) == set(g_plain) and g_plain
    for name, grad in g_plain.items():
        np.testing.assert_array_equal(g_ckpt[name], grad, err_msg=name)
    assert ckpt.graph_bytes < plain.graph_bytes / 3  # only the layers' inputs are kept


def test_checkpointing_leaves_eval_and_generation_alone():
    model = LlamaForCausalLM(CONFIG, dtype="float64")
    plain = model.generate(IDS[:1], max_new_tokens=4)
    model.gradient_checkpointing_enable()
    assert np.array_equal(model.generate(IDS[:1], max_new_tokens=4), plain)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
