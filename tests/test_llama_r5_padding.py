"""Left-padded batches side by side with transformers: the padding before a row's first token.

Such a query may see no key at all (its own and earlier keys are padding, later ones are in its
future). transformers' default attention, "sdpa", gives it a zero attention output (torch's SDPA on
a boolean mask); "eager" adds the most negative finite number for padding and future keys alike, so
it attends evenly to every key of its row. The last padding position's logits predict the first
real token: its label is not -100 (the tokenizer's labels = ids with pad set to -100 keeps it), so
the loss and every gradient depend on the choice. minilora's default is transformers' default, and
``attn_implementation`` picks either.
"""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

sys.path.insert(0, os.path.dirname(__file__))
from test_llama import float64_causal_loss, hf, tiny_config  # noqa: E402,F401  (transformers computing in float64)

from minilora import blas, lora  # noqa: E402
from minilora.models import KVCache, LlamaForCausalLM  # noqa: E402
from minilora.testing import assert_close  # noqa: E402

CONFIG = dict(num_key_value_heads=2)
# "the cat" / "a big red dog ran", left-padded: three padding positions before row 0's first token
IDS = np.array([[0, 0, 0, 5, 6], [7, 8, 9, 10, 11]])
MASK = np.array([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1]])
LABELS = np.where(MASK == 1, IDS, -100)  # position 2 (padding) still predicts the real token 5
LORA = dict(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def base_pair(transformers, dtype="float64", attn=None):
    """transformers' model (``attn`` None: its default) and minilora's, with the same random weights."""
    hf_config = transformers.LlamaConfig.from_dict(tiny_config(**CONFIG).to_dict())
    if attn is not None:
        hf_config._attn_implementation = attn
    reference = transformers.LlamaForCausalLM(hf_config).to(getattr(torch, dtype))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.3 * torch.randn_like(p))
    model = LlamaForCausalLM(tiny_config(**CONFIG), dtype=dtype)
    model.load_state_dict(reference.state_dict())
    if attn is not None:
        model.config._attn_implementation = attn
    return reference, model


def pair(transformers, dtype="float64", attn=None):
    """``base_pair`` with the same LoRA adapters (PEFT's random init) on both."""
    reference, model = base_pair(transformers, dtype, attn)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**LORA))
    ours = lora.get_peft_model(model, lora.LoraConfig(**LORA))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def compare(theirs, ours, tol, **inputs):
    """Logits at every position (padding included), the loss with -100 labels, LoRA gradients."""
    ref = theirs(**{k: torch.as_tensor(v) for k, v in inputs.items()})
    ref_loss = float64_causal_loss(ref.logits, LABELS)  # transformers' own loss is computed in float32
    ref_loss.backward()
    out = ours(**inputs, labels=LABELS)
    out.loss.backward()
    assert_close(out.logits, ref.logits.detach().numpy(), rtol=tol, atol=tol, name="logits")
    assert abs(out.loss.item() - ref_loss.item()) < tol
    ref_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters() if p.requires_grad}
    our_grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert set(our_grads) == set(ref_grads) and ref_grads
    for name, grad in ref_grads.items():
        assert_close(our_grads[name], grad, rtol=tol, atol=tol, name=name)
    return out


@pytest.mark.parametrize("attn", [None, "sdpa", "eager"])
def test_left_padded_float64_equals_transformers(hf, attn):
    theirs, ours = pair(hf, "float64", attn)
    assert theirs.config._attn_implementation == (attn or "sdpa")  # transformers 5's default
    out = compare(theirs, ours, 1e-10, input_ids=IDS, attention_mask=MASK)
    np.testing.assert_array_equal(ours(IDS, MASK).logits.numpy(), out.logits.numpy())  # positional mask
    pad_rows = out.logits.numpy()[0, :3]
    np.testing.assert_array_equal(pad_rows[0], pad_rows[2])  # no key of their own: the same output


@pytest.mark.parametrize("attn", [None, "eager"])
def test_left_padded_float32_equals_stock_transformers(attn):
    """Unpatched transformers (float32 softmax, RMSNorm and RoPE tables) to float32 precision."""
    import transformers
    theirs, ours = pair(transformers, "float32", attn)
    compare(theirs, ours, 2e-4, input_ids=IDS, attention_mask=MASK)


def test_the_two_attentions_really_differ_on_padding_rows(hf):
    """The cases above would pass vacuously if eager and sdpa agreed here: they do not."""
    _, sdpa = pair(hf, "float64", "sdpa")
    _, eager = pair(hf, "float64", "eager")
    a, b = (m(IDS, attention_mask=MASK, labels=LABELS) for m in (sdpa, eager))
    assert abs(a.loss.item() - b.loss.item()) > 1e-3
    assert np.abs(a.logits.numpy()[0, :3] - b.logits.numpy()[0, :3]).max() > 1e-2
    np.testing.assert_allclose(a.logits.numpy()[:, 3:], b.logits.numpy()[:, 3:], rtol=1e-12, atol=1e-12)


# (not "eager" with a boolean mask: transformers' eager attention adds it to the scores as 0/1)
@pytest.mark.parametrize("attn, kind", [(None, "bool"), (None, "float"), ("eager", "float")])
def test_a_4d_mask_is_used_as_given(hf, attn, kind):
    """transformers takes a 4-D mask [B, 1, T, T] as already prepared (causality included)."""
    allowed = MASK[:, None, None, :].astype(bool) & np.tril(np.ones((5, 5), bool))
    mask = allowed if kind == "bool" else np.where(allowed, 0.0, np.finfo(np.float64).min)
    theirs, ours = pair(hf, "float64", attn)
    if kind == "float" and attn is None and blas.library() != "mkl":
        # A finite mask: the padding rows attend evenly to every key in both attentions. torch's fused
        # SDPA then computes their gradient as if each of the n keys had probability 1 (n times too
        # large: not the derivative of its own forward: its logsumexp, min + log(n), rounds to min);
        # minilora's fused node is eager's, the true derivative. With MKL minilora runs torch's flash
        # kernel, backward too (ops/attention32.py): torch's gradients, those rows' included (else branch).
        with torch.no_grad():
            sdpa_logits = theirs(torch.as_tensor(IDS), attention_mask=torch.as_tensor(mask)).logits
        theirs, _ = pair(hf, "float64", "eager")
        out = compare(theirs, ours, 1e-10, input_ids=IDS, attention_mask=mask)
        assert_close(out.logits, sdpa_logits.numpy(), rtol=1e-10, atol=1e-10, name="sdpa logits")
    else:
        compare(theirs, ours, 1e-10, input_ids=IDS, attention_mask=mask)


@pytest.mark.parametrize("attn", [None, "eager"])
def test_kv_cache_after_a_left_padded_prompt(hf, attn):
    """The prompt through the cache, then one token and then two: transformers' logits each time."""
    from transformers import DynamicCache
    theirs, ours = pair(hf, "float64", attn)
    steps = [(IDS[:, :3], 3), (IDS[:, 3:4], 4), (IDS[:, 4:], 5)]
    cache, ref_cache = KVCache(), DynamicCache()
    with torch.no_grad():
        for ids, end in steps:
            mask = MASK[:, :end]
            ref = theirs(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), cache=ref_cache,
                         use_cache=True)
            out = ours(ids, attention_mask=mask, past_key_values=cache, use_cache=True)
            assert_close(out.logits, ref.logits.numpy(), rtol=1e-10, atol=1e-10, name=f"logits up to {end}")


def test_an_unknown_attn_implementation_is_refused_by_name():
    model = LlamaForCausalLM(tiny_config(**CONFIG), dtype="float64")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(NotImplementedError, match="flash_attention_2.*'eager' and 'sdpa'"):
        model(IDS, attention_mask=MASK)


def test_a_4d_mask_of_the_wrong_shape_or_of_integers_is_refused():
    model = LlamaForCausalLM(tiny_config(**CONFIG), dtype="float64")
    allowed = MASK[:, None, None, :].astype(bool) & np.tril(np.ones((5, 5), bool))
    with pytest.raises(ValueError, match=r"4-D attention_mask must have shape .*\(2, 1, 5, 5\)"):
        model(IDS, attention_mask=allowed[:, :, :4])
    with pytest.raises(RuntimeError, match="boolean .* or float .*got int64"):
        model(IDS, attention_mask=allowed.astype(np.int64))


def test_from_pretrained_attn_implementation_is_the_forward_s(hf, tmp_path):
    """``from_pretrained(..., attn_implementation="eager")`` gives transformers' eager numbers, and a
    torch 4-D mask (as transformers' users build it) is read too."""
    reference, model = base_pair(hf, "float64", "eager")
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path, dtype="float64", attn_implementation="eager")
    assert loaded.config._attn_implementation == "eager"
    with torch.no_grad():
        ref = reference(torch.as_tensor(IDS), attention_mask=torch.as_tensor(MASK)).logits.numpy()
    assert_close(loaded(IDS, attention_mask=MASK).logits, ref, rtol=1e-10, atol=1e-10, name="logits")
    allowed = torch.as_tensor(MASK[:, None, None, :].astype(bool) & np.tril(np.ones((5, 5), bool)))
    four_d = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    assert_close(loaded(IDS, attention_mask=four_d).logits, ref, rtol=1e-10, atol=1e-10, name="4-D logits")
    default = LlamaForCausalLM.from_pretrained(tmp_path, dtype="float64")  # sdpa: other padding rows
    assert np.abs(default(IDS, attention_mask=MASK).logits.numpy()[0, :3] - ref[0, :3]).max() > 1e-2


def test_attn_implementation_reads_and_switches_as_transformers(hf):
    reference, model = base_pair(hf, "float64")
    assert model.config._attn_implementation == reference.config._attn_implementation == "sdpa"
    reference.set_attn_implementation("eager")
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == reference.config._attn_implementation == "eager"
    with torch.no_grad():
        ref = reference(torch.as_tensor(IDS), attention_mask=torch.as_tensor(MASK)).logits.numpy()
    assert_close(model(IDS, attention_mask=MASK).logits, ref, rtol=1e-10, atol=1e-10, name="eager logits")
    with pytest.raises(NotImplementedError, match="flex_attention"):
        model.set_attn_implementation("flex_attention")
