"""PEFT 0.21's LoraConfig fields and PeftModel / LoraModel methods where a survey (every field, every public
method, one tiny float64 Llama per library) found minilora differing: the wrapped model, trainable parameters,
print_trainable_parameters' line, the forward, one step's adapter gradients and save_pretrained's files are
compared with PEFT's for each row; a case minilora does not implement is refused by name.

Skipped when torch / peft / transformers are not installed."""
import contextlib
import io
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models  # noqa: E402
from minilora.checkpoint import load_file  # noqa: E402

from test_hf_offpath_r10 import IDS, TINY  # noqa: E402
from peft_versions import PEFT_022, peft_config_file_as_022  # noqa: E402

LIBRARIES = {"torch": (torch, peft), "minilora": (ml, ml_peft)}
BASE = dict(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
# float64 models: transformers computes the RoPE tables in float32 whatever the model's dtype, minilora in float64,
# so logits and gradients differ by ~4e-8 (seen; two SGD steps at lr 0.5 grow that to 1.2e-6, hence rtol 1e-5);
# a wrong scale, layer or adapter moves them by 1e-3+
ATOL = 1e-6


def llama(lib, tie=False):
    """transformers' tiny Llama in float64, or minilora's with the same weights."""
    config = dict(TINY, tie_word_embeddings=tie)
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).double().eval()
    if lib is torch:
        return reference
    model = models.LlamaForCausalLM(models.LlamaConfig(**config)).double().eval()
    model.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()}, strict=False)
    return model


def logits(lib, model):
    with lib.no_grad():
        return model(input_ids=lib.tensor(IDS)).logits.numpy()


def add_other(lib, lib_peft, model):
    lib.manual_seed(2)
    model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, r=2, lora_alpha=6)))


def summary(lib, lib_peft, config, action, tmp_path, tie=False, save_kwargs=None):
    """What a user sees of the PeftModel ``action`` leaves: modules, trainable names, the printed line, logits,
    a training step's gradients, and the saved folder (config JSON less volatile keys, tensors)."""
    base = llama(lib, tie)
    lib.manual_seed(1)
    model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**config))
    seen = {"action": action(lib, lib_peft, model) if action else None}
    seen["trainable"] = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model.print_trainable_parameters()
    seen["printed"] = printed.getvalue()
    out = model(input_ids=lib.tensor(IDS), labels=lib.tensor(IDS))
    out.loss.backward()
    seen["logits"] = out.logits.detach().numpy()
    seen["grads"] = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    folder = tmp_path / lib.__name__
    model.save_pretrained(str(folder), **(save_kwargs or {}))
    with open(folder / "adapter_config.json") as f:
        saved = json.load(f)
    seen["config"] = {k: sorted(v) if isinstance(v, list) else v for k, v in saved.items()
                      if k not in ("peft_version", "auto_mapping", "revision", "base_model_name_or_path")}
    seen["tensors"] = load_file(os.path.join(folder, "adapter_model.safetensors"))
    return seen


def assert_close(ours, theirs):
    """Arrays to ATOL (and 1e-5 relative: two SGD steps at lr 0.5 grow the RoPE tables' 4e-8 to 1.2e-6, seen),
    lists item by item, anything else equal."""
    if isinstance(theirs, np.ndarray):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=ATOL)
    elif isinstance(theirs, list) and theirs and isinstance(theirs[0], np.ndarray):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_close(a, b)
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs) and all(assert_close(a, b) is None for a, b in zip(ours, theirs))
    else:
        assert ours == theirs


def assert_same(theirs, ours):
    assert_close(ours["action"], theirs["action"])
    assert ours["trainable"] == theirs["trainable"] and ours["printed"] == theirs["printed"]
    assert ours["config"] == peft_config_file_as_022(theirs["config"])
    np.testing.assert_allclose(ours["logits"], theirs["logits"], rtol=1e-5, atol=ATOL)
    assert sorted(ours["grads"]) == sorted(theirs["grads"])
    for name, grad in theirs["grads"].items():
        np.testing.assert_allclose(ours["grads"][name], grad, rtol=1e-5, atol=ATOL, err_msg=name)
    assert sorted(ours["tensors"]) == sorted(theirs["tensors"])
    for key, value in theirs["tensors"].items():
        np.testing.assert_allclose(ours["tensors"][key], value, rtol=1e-5, atol=ATOL, err_msg=key)


def several_active(lib, lib_peft, model):
    """LoraModel.set_adapter([...]): both adapters add up and train; the PeftModel keeps its one name
    (before: save_pretrained's TypeError, unhashable list, in minilora's active_peft_config)."""
    add_other(lib, lib_peft, model)
    model.base_model.set_adapter(["default", "other"])
    return [model.active_adapter, model.active_adapters]  # (the forward after: compared in summary)


def two_steps(lib, lib_peft, model):
    """SGD on the tied table and the LoRA pairs, then a draw: the same numbers and generator state after."""
    optimizer = lib.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        model(input_ids=lib.tensor(IDS), labels=lib.tensor(IDS)).loss.backward()
        optimizer.step()
    return [logits(lib, model), lib.rand(3).numpy()]


def reloaded(lib, lib_peft, model):
    """The folder loads back (modules_to_save as PEFT rewrote it) with the head tied again."""
    two_steps(lib, lib_peft, model)
    folder = f"{_FOLDER}/{lib.__name__}-tied"
    model.save_pretrained(folder)
    loaded = lib_peft.PeftModel.from_pretrained(llama(lib, tie=True), folder)
    return [logits(lib, loaded), loaded.peft_config["default"].modules_to_save]


ROWS = {
    "set_adapter_list": dict(action=several_active),
    # save_embedding_layers=True with no embedding targeted: PEFT writes both tables under their own names
    # (before: left out)
    "save_embedding_layers": dict(save_kwargs=dict(save_embedding_layers=True)),
    "save_embedding_layers_tied": dict(tie=True, save_kwargs=dict(save_embedding_layers=True)),
    # ensure_weight_tying where PEFT finds nothing to tie: its warning, the same model (before: refused)
    "ensure_weight_tying_untied": dict(config=dict(ensure_weight_tying=True)),
    "ensure_weight_tying_tied_attention_only": dict(tie=True, config=dict(ensure_weight_tying=True)),
    # ensure_weight_tying with a tied table in modules_to_save: the head's copy is the embedding's copy's
    # table (PEFT's nn.Linear(*shape) with its init drawn), modules_to_save rewritten (before: refused)
    "ensure_weight_tying_embedding_saved": dict(tie=True, config=dict(modules_to_save=["embed_tokens"],
                                                                     ensure_weight_tying=True), action=two_steps),
    "ensure_weight_tying_head_saved": dict(tie=True, config=dict(modules_to_save=["lm_head"], ensure_weight_tying=True),
                                           action=reloaded),
    "ensure_weight_tying_tokens_untied": dict(config=dict(ensure_weight_tying=True, trainable_token_indices=[1, 2])),
}


_FOLDER = None  # the test's tmp_path, for reloaded()


@pytest.mark.parametrize("row", ROWS)
def test_row_matches_peft(row, tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "_FOLDER", str(tmp_path))
    spec = ROWS[row]
    config = dict(BASE, **spec.get("config", {}))
    seen = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seen[name] = summary(lib, lib_peft, config, spec.get("action"), tmp_path, spec.get("tie", False),
                                 spec.get("save_kwargs"))
        seen[name]["warned"] = sorted({str(w.message) for w in caught if "weight_tying" in str(w.message)})
    assert_same(seen["torch"], seen["minilora"])
    assert seen["minilora"]["warned"] == seen["torch"]["warned"]


def test_set_adapter_list_on_peft_model_is_peft_type_error():
    """PEFT 0.22 names the mistake (and the way to activate several: base_model.set_adapter); 0.21's TypeError
    was a dict lookup's "unhashable type: 'list'"."""
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = lib_peft.get_peft_model(llama(lib), lib_peft.LoraConfig(**BASE))
        add_other(lib, lib_peft, model)
        words = "unhashable type" if name == "torch" and not PEFT_022 else \
            r"only supports a single adapter name as a string.*model\.base_model\.set_adapter\(adapter_names\)"
        with pytest.raises(TypeError, match=words):
            model.set_adapter(["default", "other"])


def test_saved_embedding_tables_load_back_as_peft(tmp_path):
    """A folder saved with save_embedding_layers=True restores the tables into a base whose tables changed
    (PEFT's load_state_dict(strict=False) takes them); minilora refused the unknown keys before."""
    got = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        base = llama(lib)
        lib.manual_seed(1)
        model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**BASE))
        model.save_pretrained(str(tmp_path / name), save_embedding_layers=True)
        changed = llama(lib)
        with lib.no_grad():
            changed.model.embed_tokens.weight.mul_(0.5)
            changed.lm_head.weight.mul_(2.0)
        got[name] = logits(lib, lib_peft.PeftModel.from_pretrained(changed, str(tmp_path / name)))
        np.testing.assert_allclose(got[name], logits(lib, model), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["minilora"], got["torch"], rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("config, tie, what", [
    (dict(modules_to_save=["lm_head"]), False, "save_embedding_layers=True with base_model.model.lm_head"),
    (dict(trainable_token_indices=[1, 2]), False, "save_embedding_layers=True with .*embed_tokens"),
    (dict(target_modules=["q_proj", "lm_head"], ensure_weight_tying=True), True, "does not tie their adapters"),
    (dict(trainable_token_indices=[1, 2], ensure_weight_tying=True), True, "does not tie their adapters"),
])
def test_unimplemented_cases_refused_by_name(config, tie, what, tmp_path):
    """Where PEFT writes a wrapped embedding's internals or ties two layers' adapters: a clear refusal."""
    with pytest.raises(NotImplementedError, match=what):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ml_peft.get_peft_model(llama(ml, tie), ml_peft.LoraConfig(**dict(BASE, **config)))
            model.save_pretrained(str(tmp_path), save_embedding_layers=True)
