"""AdaLoRA trained as PEFT's docs write it, side by side with PEFT 0.22 on a tiny float64 Llama:

    config = AdaLoraConfig(init_r=..., target_r=..., tinit=..., tfinal=..., deltaT=..., beta1=..., beta2=...,
                           orth_reg_weight=..., total_step=..., target_modules=[...], lora_alpha=..., lora_dropout=0.0)
    model = get_peft_model(base, config)
    optimizer = AdamW(model.parameters(), lr=...)
    for step, batch in enumerate(batches):
        loss = model(**batch).loss          # includes AdaLoraModel.forward's orthogonal regulariser
        loss.backward()
        optimizer.step()
        model.base_model.update_and_allocate(step)
        optimizer.zero_grad()

Compared after every step: the loss, every lora_A / lora_E / lora_B / ranknum value, which triplets are
masked and the rank_pattern; then the saved files, loading them back into PEFT, merge_and_unload, and
PEFT's errors. Against PEFT 0.21 the oracle is 0.21 with 0.22's ranknum fix (peft_versions.freeze_ranknum_as_022).
Skipped when torch / transformers / peft are not installed."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import torch  # noqa: E402

import minilora as ml  # noqa: E402
from minilora.checkpoint import load_file  # noqa: E402
from minilora.lora import AdaLoraConfig, PeftModel, get_peft_model  # noqa: E402
from minilora.testing import assert_close  # noqa: E402

from test_cli import FAST, run_cli, tiny_model_dir  # noqa: E402,F401  (a fixture)
from test_llama import hf  # noqa: E402,F401  (transformers computing in float64)
from test_lora_interop import CONFIG, base_pair  # noqa: E402
from peft_versions import PEFT_022, freeze_ranknum_as_022  # noqa: E402

OPTIONS = dict(init_r=4, target_r=2, tinit=1, tfinal=2, deltaT=2, beta1=0.85, beta2=0.85, orth_reg_weight=0.5,
               total_step=9, target_modules=["q_proj", "v_proj", "down_proj"], lora_alpha=8, lora_dropout=0.0,
               task_type="CAUSAL_LM")
BATCHES = [np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (2, 6)) for seed in range(3)]


@pytest.fixture
def hf64(hf, monkeypatch):
    """transformers with its causal-LM loss in the logits' dtype (stock transformers upcasts to float32
    even in a float64 model; minilora keeps float64 there, see the report), so the float64 run compares
    at 1e-10: PEFT's own forward (with its regulariser) is otherwise untouched."""
    from transformers.models.llama import modeling_llama as llama

    def loss_function(self):
        def causal_lm_loss(logits, labels, vocab_size, **kwargs):
            targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1),
                                                     ignore_index=-100)
        return causal_lm_loss
    monkeypatch.setattr(llama.LlamaForCausalLM, "loss_function", property(loss_function))
    return hf


def adalora_pair(transformers, **changes):
    """PEFT's and minilora's AdaLoRA on the same base weights; PEFT's initial adapter copied into minilora."""
    reference, model = base_pair(transformers)
    options = dict(OPTIONS, **changes)
    theirs = peft.get_peft_model(reference, peft.AdaLoraConfig(**options))
    freeze_ranknum_as_022(theirs)
    ours = get_peft_model(model, AdaLoraConfig(**options))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def user_step(model, optimizer, batch, step, tensor):
    """One step of PEFT's documented loop; returns the loss."""
    ids = tensor(batch)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    model.base_model.update_and_allocate(step)
    optimizer.zero_grad()
    return loss.item()


def adapter_values(model):
    """{name: array} of every adapter entry (lora_A/E/B and ranknum)."""
    return {n: (p.detach().numpy() if isinstance(p, torch.Tensor) else p.numpy()).copy()
            for n, p in model.named_parameters() if "lora_" in n or "ranknum" in n}


def train_both(theirs, ours, make_optimizer=None):
    """The same loop on both sides, checked after every step; returns nothing (asserts inside)."""
    make_optimizer = make_optimizer or (lambda lib, params: lib.optim.AdamW(params, lr=0.05))
    opt_theirs = make_optimizer(torch, theirs.parameters())
    opt_ours = make_optimizer(ml, ours.parameters())
    for step in range(OPTIONS["total_step"]):
        batch = BATCHES[step % len(BATCHES)]
        ref_loss = user_step(theirs, opt_theirs, batch, step, torch.as_tensor)
        our_loss = user_step(ours, opt_ours, batch, step, ml.tensor)
        assert abs(our_loss - ref_loss) < 1e-10 * max(1.0, abs(ref_loss)), (step, our_loss, ref_loss)
        want, got = adapter_values(theirs), adapter_values(ours)
        assert set(got) == set(want)
        for name, value in want.items():
            assert_close(got[name], value, rtol=1e-8, atol=1e-10, name=f"{name} @ step {step}")
            if ".lora_E." in name:  # the masked triplets: exactly the same ones
                assert ((got[name] == 0) == (value == 0)).all(), (name, step)
        assert ours.peft_config["default"].rank_pattern == theirs.peft_config["default"].rank_pattern, step


def test_trainable_parameters_are_peft_s(hf64):
    """The set the user's optimizer receives: model.parameters() with requires_grad."""
    theirs, ours = adalora_pair(hf64)
    want = {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == want
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("autocast", [True, False])
def test_ranknum_is_frozen_on_every_base_as_peft_s(dtype, autocast):
    """PEFT 0.22's ranknum stays frozen on every base (0.21 re-wrapped it as a trainable Parameter when it moved
    to a non-float32 base's dtype): the same trainable set, the same adapter dtypes, either autocast."""
    from test_llama import hf_model
    import transformers
    reference = hf_model(transformers, CONFIG, dtype=dtype)
    model = ml.models.LlamaForCausalLM(CONFIG, dtype=getattr(ml, dtype))
    model.load_state_dict(reference.state_dict())
    theirs = peft.get_peft_model(reference, peft.AdaLoraConfig(**OPTIONS), autocast_adapter_dtype=autocast)
    assert bool(freeze_ranknum_as_022(theirs)) == (not PEFT_022 and dtype != "float32")
    ours = get_peft_model(model, AdaLoraConfig(**OPTIONS), autocast_adapter_dtype=autocast)
    want = {n: (p.requires_grad, str(p.dtype).replace("torch.", "")) for n, p in theirs.named_parameters()
            if "lora_" in n or "ranknum" in n}
    got = {n: (p.requires_grad, str(p.dtype).replace("minilora.", "")) for n, p in ours.named_parameters()
           if "lora_" in n or "ranknum" in n}
    assert got == want


def test_documented_loop_with_adamw_equals_peft(hf64):
    theirs, ours = adalora_pair(hf64)
    train_both(theirs, ours)
    pattern = ours.peft_config["default"].rank_pattern
    assert sum(sum(keep) for keep in pattern.values()) == OPTIONS["target_r"] * len(pattern)


def test_documented_loop_with_sgd_and_peft_init_equals_peft(hf64):
    """The same loop with SGD + momentum (PEFT's default init, as everywhere here: E = 0, so A and B get
    no gradient at the first step and the masks start from E's own scores)."""
    theirs, ours = adalora_pair(hf64)
    train_both(theirs, ours, lambda lib, params: lib.optim.SGD(params, lr=0.5, momentum=0.9))


def trained_pair(transformers):
    theirs, ours = adalora_pair(transformers)
    train_both(theirs, ours)
    return theirs, ours


def logits(model, lib, ids=BATCHES[0]):
    out = model(input_ids=lib.tensor(ids)).logits
    return out.detach().numpy() if lib is torch else out.numpy(force=True)


def test_saved_files_equal_peft_and_load_back_both_ways(hf64, tmp_path):
    theirs, ours = trained_pair(hf64)
    theirs.save_pretrained(tmp_path / "peft")
    ours.save_pretrained(tmp_path / "ours")
    want_config, got_config = (json.loads((tmp_path / side / "adapter_config.json").read_text())
                               for side in ("peft", "ours"))
    for config in (want_config, got_config):  # PEFT keeps target_modules as a set: its file order is random
        config["target_modules"] = sorted(config["target_modules"])
    for key in sorted(set(want_config) | set(got_config)):
        if key not in ("peft_version", "revision", "auto_mapping"):
            assert got_config.get(key) == want_config.get(key), key
    want, got = (load_file(tmp_path / side / "adapter_model.safetensors") for side in ("peft", "ours"))
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}
    for key in want:
        assert_close(got[key], want[key], rtol=1e-8, atol=1e-10, name=key)
    # a saved AdaLoRA adapter has no ranknum (PEFT: "deterministic"), so a reload is init_r's scale on both sides
    reference, model = base_pair(hf64)
    from_ours = peft.PeftModel.from_pretrained(reference, tmp_path / "ours")
    freeze_ranknum_as_022(from_ours)
    from_peft = PeftModel.from_pretrained(model, tmp_path / "peft")
    assert_close(logits(from_peft, ml), logits(from_ours, torch), rtol=1e-9, atol=1e-9)
    assert {n: tuple(p.shape) for n, p in from_peft.named_parameters()} == \
        {n: tuple(p.shape) for n, p in from_ours.named_parameters()}
    assert {n for n, p in from_peft.named_parameters() if p.requires_grad} == \
        {n for n, p in from_ours.named_parameters() if p.requires_grad}


def test_training_on_from_a_saved_adapter_equals_peft(hf64, tmp_path):
    """PeftModel.from_pretrained(..., is_trainable=True) of a shrunk (rank_pattern) adapter, then the same
    loop again: the allocator restarts on the shrunk layers identically on both sides."""
    theirs, _ = trained_pair(hf64)
    theirs.save_pretrained(tmp_path)
    reference, model = base_pair(hf64)
    from_file = peft.PeftModel.from_pretrained(reference, tmp_path, is_trainable=True)
    freeze_ranknum_as_022(from_file)
    train_both(from_file, PeftModel.from_pretrained(model, tmp_path, is_trainable=True))


def test_merge_and_unload_after_training_equals_peft(hf64):
    theirs, ours = trained_pair(hf64)
    with torch.no_grad():
        want = logits(theirs.merge_and_unload(), torch)
    merged = ours.merge_and_unload()
    assert_close(logits(merged, ml), want, rtol=1e-9, atol=1e-9)


def error_of(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001  (the type is what is compared)
        return type(error)
    return None


def backward_once(model, lib):
    ids = lib.tensor(BATCHES[0])
    model(input_ids=ids, labels=ids).loss.backward()


@pytest.mark.parametrize("schedule", [dict(target_r=4), dict(target_r=6), dict(target_r=2, tinit=0)])
def test_budget_at_or_above_init_r_fails_as_peft_at_the_first_allocation(hf64, schedule):
    """target_r >= init_r: PEFT's torch.kthvalue(k = init_budget - budget <= 0) raises RuntimeError at the
    first masking step (minilora masked nothing and went on). target_r < init_r: both go on."""
    theirs, ours = adalora_pair(hf64, **schedule)
    for model, lib in ((theirs, torch), (ours, ml)):
        backward_once(model, lib)
    for step in range(OPTIONS["total_step"]):
        want = error_of(lambda: theirs.base_model.update_and_allocate(step))
        assert error_of(lambda: ours.base_model.update_and_allocate(step)) is want, step
        if want is not None:
            break
    assert (want is RuntimeError) == (schedule["target_r"] >= OPTIONS["init_r"])


def test_update_and_allocate_errors_as_peft(hf64, tmp_path):
    theirs, ours = adalora_pair(hf64)
    # before any backward: PEFT multiplies p by p.grad = None (TypeError)
    want = error_of(lambda: theirs.base_model.update_and_allocate(0))
    assert want is TypeError
    with pytest.raises(TypeError, match="after loss.backward"):
        ours.base_model.update_and_allocate(0)
    # in eval mode it runs as in train mode (PEFT does not look at it): same masks
    theirs.eval(), ours.eval()
    for model, lib in ((theirs, torch), (ours, ml)):
        backward_once(model, lib)
        model.base_model.update_and_allocate(4)  # a masking step (deltaT=2)
    assert ours.peft_config["default"].rank_pattern == theirs.peft_config["default"].rank_pattern is not None
    # a second trainable adapter is refused; one in inference_mode is not
    for model, config in ((theirs, peft.AdaLoraConfig), (ours, AdaLoraConfig)):
        with pytest.raises(ValueError, match="only 1 trainable adapter"):
            model.add_adapter("second", config(**OPTIONS))
        model.add_adapter("frozen", config(inference_mode=True, **OPTIONS))
    freeze_ranknum_as_022(theirs)
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == \
        {n for n, p in theirs.named_parameters() if p.requires_grad}
    # an adapter loaded for inference has no allocator: the same AttributeError
    theirs.save_pretrained(tmp_path, selected_adapters=["default"])
    reference, model = base_pair(hf64)
    loaded = (peft.PeftModel.from_pretrained(reference, tmp_path), PeftModel.from_pretrained(model, tmp_path))
    for side in loaded:
        with pytest.raises(AttributeError, match="trainable_adapter_name"):
            side.base_model.update_and_allocate(0)


@pytest.mark.parametrize("bad", [dict(), dict(total_step=None), dict(total_step=0), dict(total_step=-3),
                                 dict(total_step=10, tinit=8, tfinal=2), dict(total_step=10, tinit=12),
                                 dict(total_step=10, tfinal=10), dict(total_step=10, orth_reg_weight=-0.1)])
def test_config_errors_as_peft(bad):
    """PEFT 0.21 requires total_step (> 0) and a budgeting phase: tinit < total_step - tfinal."""
    with pytest.raises(ValueError) as want:
        peft.AdaLoraConfig(**bad)
    with pytest.raises(ValueError) as got:
        AdaLoraConfig(**bad)
    assert str(got.value) == str(want.value)


def test_cli_refuses_target_r_at_or_above_init_r_before_training(tiny_model_dir, tmp_path, capsys):
    """The same schedule in ``minilora train`` would fail at PEFT's first masking step: refused up front."""
    code, text = run_cli(["train", "--task", "reverse", "--model", tiny_model_dir, "--out", str(tmp_path / "run"),
                          "--steps", "4", "--method", "adalora", "--init-r", "4", "--target-r", "4", *FAST], capsys)
    assert code == 2 and "--target-r (4) must be below --init-r (4)" in text


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_memory_estimate_counts_trainable_parameters_as_peft(dtype):
    """`minilora memory` / memory.estimate promise PEFT's get_nb_trainable_parameters(): the factors, no ranknum
    on any base (PEFT 0.22; 0.21 counted one per adapted layer on a 16-bit or float64 base)."""
    from minilora import memory
    import transformers
    from test_llama import hf_model
    config = AdaLoraConfig(**OPTIONS)
    theirs = peft.get_peft_model(hf_model(transformers, CONFIG, dtype=dtype), peft.AdaLoraConfig(**OPTIONS))
    freeze_ranknum_as_022(theirs)
    assert memory.estimate(CONFIG, config, dtype=dtype).trainable_params == theirs.get_nb_trainable_parameters()[0]
    ours = get_peft_model(ml.models.LlamaForCausalLM(CONFIG, dtype=getattr(ml, dtype)), config)
    layout = {p.name: (tuple(p.shape), p.trainable) for p in memory.peft_layout(CONFIG, config, dtype=dtype)}
    assert layout == {n: (tuple(p.shape), p.requires_grad) for n, p in ours.named_parameters()}
