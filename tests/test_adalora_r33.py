"""AdaLoRA against PEFT 0.22 (round 33; the sweep is tests/adalora_sweep.py): what PEFT accepts, refuses and
saves around a training run, on the same float64 tiny Llama and the same initial adapter on both sides.

* a cut adapter loaded back saves again (PEFT keeps tensors that already hold the pattern's rank);
* ``resize_modules_by_rank_pattern`` / ``resize_state_dict_by_rank_pattern``, PEFT's public methods;
* configs PEFT takes (any beta until the allocator asserts, deltaT=0 until the first budget step, a negative
  tinit, init_r=0, any init_lora_weights by its truth, lora_bias) and its refusals' words;
* a labelled forward on an adapter loaded for inference and a step past the final one first fail as PEFT's."""
import importlib.util
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

from test_llama import hf  # noqa: E402,F401  (a fixture)
from test_lora_interop import base_pair  # noqa: E402
from test_adalora_r4 import BATCHES, OPTIONS, adalora_pair, hf64, logits  # noqa: E402,F401  (hf64: a fixture)


def cut_by_hand(theirs, ours):
    """The same rank_pattern on both sides, as update_and_allocate leaves it (one layer cut to rank 0)."""
    names = [n for n, _ in theirs.base_model.model.named_parameters() if ".lora_E." in n]
    masks = [[True, False, True, False], [False] * 4, [True] * 4, [False, False, False, True]]
    pattern = {n: masks[i % len(masks)] for i, n in enumerate(names)}
    for model in (theirs, ours):
        model.peft_config["default"].rank_pattern = dict(pattern)
    return pattern


def error_of(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001  (type and words are compared)
        return type(error).__name__, str(error)
    return None


def files(directory):
    config = json.loads((directory / "adapter_config.json").read_text())
    tensors = load_file(directory / "adapter_model.safetensors")
    return config["rank_pattern"], {k: np.asarray(v) for k, v in tensors.items()}


def test_a_loaded_cut_adapter_saves_again_as_peft(hf64, tmp_path):
    """PEFT's resize_state_dict_by_rank_pattern leaves a tensor that already has the kept rank (minilora
    indexed it with the full-length mask again: IndexError)."""
    theirs, ours = adalora_pair(hf64)
    cut_by_hand(theirs, ours)
    theirs.save_pretrained(tmp_path / "first")
    reference, model = base_pair(hf64)
    again_theirs = peft.PeftModel.from_pretrained(reference, tmp_path / "first")
    again_ours = PeftModel.from_pretrained(model, tmp_path / "first")
    again_theirs.save_pretrained(tmp_path / "peft")
    again_ours.save_pretrained(tmp_path / "ours")
    (want_pattern, want), (got_pattern, got) = files(tmp_path / "peft"), files(tmp_path / "ours")
    assert got_pattern == want_pattern
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    for key in want:
        assert_close(got[key], want[key], rtol=0, atol=0, name=key)


@pytest.mark.parametrize("form", ["positional", "keyword"])
def test_resize_modules_by_rank_pattern_as_peft(hf64, form):
    theirs, ours = adalora_pair(hf64)
    pattern = cut_by_hand(theirs, ours)
    theirs.base_model.resize_modules_by_rank_pattern(pattern, "default")
    if form == "positional":
        ours.base_model.resize_modules_by_rank_pattern(pattern, "default")
    else:
        ours.base_model.resize_modules_by_rank_pattern(rank_pattern=pattern, adapter_name="default")
    want = {n: (p.detach().numpy(), p.requires_grad) for n, p in theirs.named_parameters() if "lora_" in n}
    got = {n: (p.numpy(), p.requires_grad) for n, p in ours.named_parameters() if "lora_" in n}
    assert {n: (v.shape, g) for n, (v, g) in got.items()} == {n: (v.shape, g) for n, (v, g) in want.items()}
    for n, (value, _) in want.items():
        assert_close(got[n][0], value, rtol=0, atol=0, name=n)
    assert_close(logits(ours, ml), logits(theirs, torch), rtol=1e-12, atol=1e-12)


def test_resize_state_dict_by_rank_pattern_as_peft(hf64):
    theirs, ours = adalora_pair(hf64)
    pattern = cut_by_hand(theirs, ours)
    want = theirs.base_model.resize_state_dict_by_rank_pattern(
        pattern, {f"base_model.model.{k}": v for k, v in theirs.base_model.model.state_dict().items()}, "default")
    got = ours.base_model.resize_state_dict_by_rank_pattern(
        rank_pattern=pattern, adapter_name="default",
        state_dict={f"base_model.model.{k}": v for k, v in ours.base_model.model.state_dict().items()})
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}
    for key in want:
        assert_close(np.asarray(got[key].numpy()), want[key].numpy(), rtol=0, atol=0, name=key)


def test_labelled_forward_on_an_inference_adapter_fails_as_peft(hf64, tmp_path):
    """PEFT's AdaLoraModel.forward reads trainable_adapter_name to add the regulariser: an adapter loaded
    without is_trainable has none (minilora returned the loss without the regulariser)."""
    theirs, _ = adalora_pair(hf64)
    theirs.save_pretrained(tmp_path)
    reference, model = base_pair(hf64)
    loaded = (peft.PeftModel.from_pretrained(reference, tmp_path), PeftModel.from_pretrained(model, tmp_path))
    ids = BATCHES[0]
    want = error_of(lambda: loaded[0](input_ids=torch.as_tensor(ids), labels=torch.as_tensor(ids)))
    assert want is not None and want[0] == "AttributeError"
    assert error_of(lambda: loaded[1](input_ids=ml.tensor(ids), labels=ml.tensor(ids))) == want
    # without labels both run (no loss, no regulariser)
    assert_close(logits(loaded[1], ml), logits(loaded[0], torch), rtol=1e-10, atol=1e-10)


def backward_once(model, lib):
    ids = (torch.as_tensor if lib is torch else ml.tensor)(BATCHES[0])
    model(input_ids=ids, labels=ids).loss.backward()


def test_a_step_past_the_final_one_first_fails_as_peft(hf64):
    """No rank_pattern yet: PEFT's mask_using_rank_pattern calls None.keys() (AttributeError)."""
    theirs, ours = adalora_pair(hf64)
    for model, lib in ((theirs, torch), (ours, ml)):
        backward_once(model, lib)
    step = OPTIONS["total_step"] - OPTIONS["tfinal"] + 1
    want = error_of(lambda: theirs.base_model.update_and_allocate(step))
    assert want == ("AttributeError", "'NoneType' object has no attribute 'keys'")
    assert error_of(lambda: ours.base_model.update_and_allocate(step)) == want


CONFIGS_PEFT_TAKES = [dict(beta1=1.0), dict(beta2=0.0), dict(deltaT=0), dict(tinit=-1), dict(tinit=0.5),
                      dict(init_r=0, target_r=0), dict(init_lora_weights="gaussian"), dict(init_lora_weights="pissa"),
                      dict(lora_bias=True), dict(init_r=-1)]


@pytest.mark.parametrize("changes", CONFIGS_PEFT_TAKES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_configs_peft_takes_and_where_they_fail(hf64, changes):
    """The config is built (minilora refused each); then get_peft_model, a backward and the first two
    allocation steps fail (or not) where PEFT's do, with PEFT's exception type, and equal values otherwise."""
    options = dict(OPTIONS, **changes)
    assert error_of(lambda: peft.AdaLoraConfig(**options)) is None
    assert error_of(lambda: AdaLoraConfig(**options)) is None
    reference, model = base_pair(hf64)
    torch.manual_seed(0)
    want = error_of(lambda: peft.get_peft_model(reference, peft.AdaLoraConfig(**options)))
    ml.manual_seed(0)
    got = error_of(lambda: get_peft_model(model, AdaLoraConfig(**options)))
    assert got == want
    if want is not None:
        return
    theirs, ours = adalora_pair(hf64, **changes)
    for side, lib in ((theirs, torch), (ours, ml)):
        backward_once(side, lib)
    for step in (1, 2):
        want = error_of(lambda: theirs.base_model.update_and_allocate(step))
        assert error_of(lambda: ours.base_model.update_and_allocate(step)) == want
        if want:
            break
    for (n, p), (m, q) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert n == m
        assert_close(q.numpy(), p.detach().numpy(), rtol=1e-12, atol=1e-14, name=n)


def test_gaussian_init_draws_as_peft(hf64):
    """init_lora_weights='gaussian' is True for AdaLoRA (PEFT tests its truth): the same seed, the same adapter."""
    reference, model = base_pair(hf64)
    options = dict(OPTIONS, init_lora_weights="gaussian")
    torch.manual_seed(3)
    theirs = peft.get_peft_model(reference, peft.AdaLoraConfig(**options))
    ml.manual_seed(3)
    ours = get_peft_model(model, AdaLoraConfig(**options))
    for (n, p), (m, q) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert n == m
        assert_close(q.numpy(), p.detach().numpy(), rtol=0, atol=0, name=n)


@pytest.mark.parametrize("changes", [dict(use_dora=True), pytest.param(
    dict(init_lora_weights="loftq", loftq_config={"loftq_bits": 4}), marks=pytest.mark.skipif(
        importlib.util.find_spec("scipy") is None, reason="without scipy PEFT's LoftQ check refuses for it first"))])
def test_refusals_in_peft_words(changes):
    options = dict(OPTIONS, **changes)
    want = error_of(lambda: peft.AdaLoraConfig(**options))
    assert want is not None and want[0] == "ValueError"
    assert error_of(lambda: AdaLoraConfig(**options)) == want


def test_load_adapter_of_a_cut_adapter_freezes_as_peft(hf64, tmp_path):
    """PEFT's resize on loading calls update_layer with the loaded (inference) config, whose set_adapter freezes
    the active adapter in every resized layer: training it on would change nothing in PEFT (minilora trained on)."""
    source, other = adalora_pair(hf64)
    cut_by_hand(source, other)
    source.save_pretrained(tmp_path)
    theirs, ours = adalora_pair(hf64)
    theirs.load_adapter(tmp_path, "other")
    ours.load_adapter(tmp_path, adapter_name="other")
    want = {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == want
    assert not any(".default" in n for n in want)
