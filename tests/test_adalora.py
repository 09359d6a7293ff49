"""AdaLoRA against PEFT 0.21 in float64: the config's fields and errors, the SVD-form layer's parameters
by PEFT name, logits, the loss with the orthogonal regulariser and its gradients, and the RankAllocator's
masks and rank_pattern after a run of update_and_allocate steps on identical inputs.
Skipped when torch / transformers / peft are not installed."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import torch  # noqa: E402

from minilora.checkpoint import load_file  # noqa: E402
from minilora.lora import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model  # noqa: E402
from minilora.lora.adalora import SVDLinear  # noqa: E402
from minilora.testing import assert_close  # noqa: E402

from test_llama import float64_causal_loss, hf  # noqa: E402,F401
from test_lora_interop import IDS, LABELS, base_pair, our_logits, peft_logits  # noqa: E402
from peft_versions import freeze_ranknum_as_022  # noqa: E402

OPTIONS = dict(task_type="CAUSAL_LM", init_r=4, target_r=2, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
               total_step=8, tinit=1, tfinal=2, deltaT=1, beta1=0.8, beta2=0.7, orth_reg_weight=0.3)


def adalora_pair(transformers, **changes):
    """PEFT and minilora AdaLoRA models with identical weights (PEFT's init_lora_weights=False: all random)."""
    options = dict(OPTIONS, init_lora_weights=False, **changes)
    reference, model = base_pair(transformers)
    theirs = peft.get_peft_model(reference, peft.AdaLoraConfig(**options))
    freeze_ranknum_as_022(theirs)
    ours = get_peft_model(model, AdaLoraConfig(**options))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def trainable_in_peft(model):
    """PEFT's trainable parameters: the factors, ranknum frozen (PEFT 0.22; a 0.21 oracle goes through
    peft_versions.freeze_ranknum_as_022 first)."""
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_config_fields_and_defaults_are_peft():
    theirs = peft.AdaLoraConfig(total_step=100).to_dict()
    ours = AdaLoraConfig(total_step=100).to_dict()
    for key in ("target_r", "init_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight",
                "total_step", "rank_pattern", "peft_type", "lora_alpha", "lora_dropout"):
        assert ours[key] == (theirs[key].value if hasattr(theirs[key], "value") else theirs[key]), key


@pytest.mark.parametrize("bad, message", [
    (dict(), "total_step"),
    (dict(total_step=10, tinit=6, tfinal=4), "budgeting phase"),
    (dict(total_step=10, orth_reg_weight=-1), "orth_reg_weight"),
    (dict(total_step=10, use_dora=True), "DoRA"),
])
def test_bad_configs_get_peft_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        peft.AdaLoraConfig(**bad)
    with pytest.raises(ValueError, match=message):
        AdaLoraConfig(**bad)


def test_parameters_and_init_as_peft(hf):
    reference, model = base_pair(hf)
    theirs = peft.get_peft_model(reference, peft.AdaLoraConfig(**OPTIONS))
    freeze_ranknum_as_022(theirs)
    ours = get_peft_model(model, AdaLoraConfig(**OPTIONS))
    ref = {n: tuple(p.shape) for n, p in theirs.named_parameters()}
    got = {n: tuple(p.shape) for n, p in ours.named_parameters()}
    assert got == ref
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == trainable_in_peft(theirs)
    layer = ours.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, SVDLinear) and float(layer.ranknum["default"].numpy()[0]) == 4.0
    assert not layer.lora_E["default"].numpy().any()  # E = 0: the model starts at the base
    A = np.concatenate([p.numpy().ravel() for n, p in ours.named_parameters() if "lora_A" in n])
    assert abs(A.std() - 0.02) < 0.003
    ours.print_trainable_parameters()


def peft_regulariser(peft_model, monkeypatch):
    """orth_reg_weight * regulariser exactly as AdaLoraModel.forward adds it, in float64: the model's own
    forward is swapped for one whose loss is a float64 zero (transformers' loss is float32)."""
    class Output:
        loss = torch.zeros((), dtype=torch.float64)
    with monkeypatch.context() as patch:
        patch.setattr(peft_model.base_model.model, "forward", lambda *args, **kwargs: Output())
        return peft_model.base_model(input_ids=torch.as_tensor(IDS)).loss


def test_logits_loss_with_orthogonal_regulariser_and_gradients_equal_peft(hf, monkeypatch):
    theirs, ours = adalora_pair(hf)
    ref = theirs(input_ids=torch.as_tensor(IDS), labels=torch.as_tensor(LABELS))
    # PEFT's loss = transformers' loss + orth_reg_weight * regulariser: transformers' part recomputed in
    # float64 (as in test_lora_interop), PEFT's regulariser taken from PEFT's own forward
    ref_loss = float64_causal_loss(ref.logits, LABELS) + peft_regulariser(theirs, monkeypatch)
    ref_loss.backward()
    out = ours(IDS, labels=LABELS)
    out.loss.backward()
    assert_close(out.logits, ref.logits.detach().numpy(), rtol=1e-12, atol=1e-12, name="logits")
    plain = ours.get_base_model()(IDS, labels=LABELS).loss.item()
    assert abs(out.loss.item() - plain) > 1e-3  # the regulariser is really there (random A, B: far from orthogonal)
    assert abs(out.loss.item() - ref_loss.item()) < 1e-10
    ref_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters() if n in trainable_in_peft(theirs)}
    our_grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert set(our_grads) == set(ref_grads)
    for name, grad in ref_grads.items():
        assert_close(our_grads[name], grad, rtol=1e-9, atol=1e-11, name=name)


def run_allocation(theirs, ours, monkeypatch):
    """total_step training steps on both sides, in PEFT's documented order: backward, optimizer step (the
    same SGD here), update_and_allocate(step) (which masks the updated E), zero_grad; after every step each
    trainable parameter (masked E included) must agree."""
    ref_params = dict(theirs.named_parameters())
    trainable = [(name, p) for name, p in ours.named_parameters() if p.requires_grad]
    assert not any(".ranknum." in name for name, _ in trainable)  # frozen, as PEFT 0.22's
    for step in range(OPTIONS["total_step"]):
        logits = theirs(input_ids=torch.as_tensor(IDS)).logits  # PEFT's loss, in float64 throughout
        (float64_causal_loss(logits, LABELS) + peft_regulariser(theirs, monkeypatch)).backward()
        ours(IDS, labels=LABELS).loss.backward()
        for name, p in trainable:
            with torch.no_grad():
                ref_params[name] -= 0.5 * ref_params[name].grad
            p._array -= 0.5 * p.grad._array
        theirs.base_model.update_and_allocate(step)
        ours.base_model.update_and_allocate(step)
        for name, p in trainable:
            assert_close(p, ref_params[name].detach().numpy(), rtol=1e-8, atol=1e-10, name=f"{name} @ {step}")
            ref_params[name].grad = None
            p.grad = None


def test_rank_allocation_run_equals_peft(hf, monkeypatch):
    """The same E masks after every step and the same final rank_pattern."""
    theirs, ours = adalora_pair(hf)
    run_allocation(theirs, ours, monkeypatch)
    ref_pattern = theirs.peft_config["default"].rank_pattern
    our_pattern = ours.peft_config["default"].rank_pattern
    assert our_pattern == ref_pattern
    kept = [sum(v) for v in our_pattern.values()]
    assert sum(kept) == OPTIONS["target_r"] * len(kept)  # the budget: target_r per matrix on average
    assert len(set(kept)) > 1  # ...spread unevenly (that is the point of AdaLoRA)


def test_allocator_needs_gradients_and_one_trainable_adapter(hf):
    _, ours = adalora_pair(hf)
    with pytest.raises(TypeError, match="after loss.backward"):  # PEFT's p * None: a TypeError
        ours.base_model.update_and_allocate(0)
    with pytest.raises(ValueError, match="only 1 trainable adapter"):
        ours.add_adapter("second", AdaLoraConfig(**OPTIONS))
    with pytest.raises(TypeError, match="add_weighted_adapter"):
        ours.add_weighted_adapter(["default"], [1.0], "x")
    with pytest.raises(ValueError, match="cannot add a LORA adapter"):
        ours.add_adapter("lora", LoraConfig(target_modules=["q_proj"]))


def test_merged_adalora_gives_the_same_logits(hf):
    theirs, ours = adalora_pair(hf)
    want = our_logits(ours)
    assert_close(want, peft_logits(theirs), rtol=1e-12, atol=1e-12)
    merged = ours.merge_and_unload()
    assert_close(merged(IDS).logits.numpy(), want, rtol=1e-10, atol=1e-10)


def test_plain_peft_model_adds_no_regulariser_as_in_peft(hf):
    """PEFT adds the regulariser in AdaLoraModel.forward, which PeftModelForCausalLM (task_type="CAUSAL_LM")
    goes through and a plain PeftModel (task_type=None) does not: the same on both sides."""
    theirs, ours = adalora_pair(hf, task_type=None)
    ref = theirs(input_ids=torch.as_tensor(IDS), labels=torch.as_tensor(LABELS))
    out = ours(IDS, labels=LABELS)
    assert type(theirs).__name__ == type(ours).__name__ == "PeftModel"
    assert abs(out.loss.item() - float64_causal_loss(ref.logits, LABELS).item()) < 1e-10


def test_allocated_adapter_files_equal_peft_and_load_both_ways(hf, tmp_path, monkeypatch):
    """After the same run, PEFT and minilora write the same file (only the kept triplets, no ranknum) and the
    same rank_pattern; each side loads the other's file and gives the trained model's logits."""
    theirs, ours = adalora_pair(hf)
    run_allocation(theirs, ours, monkeypatch)
    want = our_logits(ours)
    theirs.save_pretrained(tmp_path / "peft")
    ours.save_pretrained(tmp_path / "ours")
    a, b = (load_file(tmp_path / side / "adapter_model.safetensors") for side in ("peft", "ours"))
    assert set(a) == set(b) and not any("ranknum" in k for k in b)
    for key in a:
        assert_close(b[key], a[key], rtol=1e-8, atol=1e-10, name=key)
    assert any(b[k].shape[0] < OPTIONS["init_r"] for k in b if k.endswith("lora_E"))  # really shrunk
    config_a, config_b = (json.load(open(tmp_path / side / "adapter_config.json")) for side in ("peft", "ours"))
    assert config_b["rank_pattern"] == config_a["rank_pattern"] and config_b["peft_type"] == "ADALORA"
    reference, model = base_pair(hf)
    loaded_by_peft = peft.PeftModel.from_pretrained(reference, tmp_path / "ours")
    assert_close(peft_logits(loaded_by_peft), want, rtol=1e-9, atol=1e-9)
    loaded_by_us = PeftModel.from_pretrained(model, tmp_path / "peft")
    assert_close(our_logits(loaded_by_us), want, rtol=1e-9, atol=1e-9)
    assert not any(p.requires_grad for n, p in loaded_by_us.named_parameters() if "lora_" in n)  # for inference
    # (PEFT 0.21's resize to the rank_pattern re-created ranknum trainable on a float64 base; 0.22 keeps it frozen)
    freeze_ranknum_as_022(loaded_by_peft)
    assert trainable_in_peft(loaded_by_us) == trainable_in_peft(loaded_by_peft)
