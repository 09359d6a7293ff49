"""PEFT 0.21 side by side with minilora, round 6: the LoraConfig fields a LoRA learner reaches for that
minilora used to refuse -- ``lora_bias=True`` and ``trainable_token_indices`` (list and dict form, tied
embeddings, the new-token recipe) -- and what a refused ``add_adapter`` leaves behind.

Each case runs on a tiny float64 Llama in both libraries (the seeded fuzzer's ``run_case``: trainable
names and shapes, logits, one AdamW step, the saved files' keys / shapes / dtypes / values and
adapter_config.json, each library loading the other's folder, disable_adapter, merge / unload).
Skipped when torch / transformers / peft are not installed."""
import dataclasses
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

import test_peft_fuzz_r5 as fuzz  # noqa: E402
from test_llama import float64_causal_loss, hf  # noqa: E402,F401  (transformers in float64 throughout)

BIASED = dataclasses.replace(fuzz.TINY, attention_bias=True, mlp_bias=True)  # a base bias to merge into
TIED = dataclasses.replace(fuzz.TINY, tie_word_embeddings=True)


def run(case, tmp_path, monkeypatch, config=None):
    if config is not None:
        monkeypatch.setattr(fuzz, "TINY", config)
    fuzz.run_case(case, tmp_path)


# ==================================================================================================
# lora_bias=True: lora_B has a bias (saved as lora_B.bias); merging adds s * b_B to the base bias
# ==================================================================================================
LORA_BIAS_CASES = {
    "merge_and_unload": ({"first": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                        lora_bias=True), "finish": "merge_and_unload"}, BIASED),
    "init_false_merge_unmerge": ({"first": dict(r=2, lora_alpha=3.5, target_modules=["q_proj"], lora_bias=True,
                                                init_lora_weights=False, use_rslora=True), "finish": "merge_unmerge"},
                                 BIASED),
    # two adapters, one with a bias: per-sample adapter_names (each row its own bias), add_weighted_adapter
    "two_adapters": ({"first": dict(r=2, lora_alpha=4, target_modules=["q_proj"], lora_bias=True),
                      "second": dict(r=1, target_modules=["q_proj", "k_proj"]), "switch": True, "per_sample": True,
                      "weighted": dict(weights=[1.0, 0.5], combination_type="cat"), "finish": "merge_unmerge"},
                     BIASED),
    # bias="all" saves the model's biases; lora_B's own is saved once, as lora_B.bias (fuzzer seed 5372)
    "with_bias_all": ({"first": dict(r=1, lora_alpha=3.5, target_modules=["k_proj", "down_proj"], bias="all",
                                     lora_bias=True), "finish": "merge_and_unload"}, BIASED),
    # no base bias: PEFT's warning at creation and RuntimeError at merge (minilora: before any weight changes)
    "no_base_bias": ({"first": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_bias=True),
                      "finish": "merge_and_unload"}, None),
}


@pytest.mark.parametrize("name", LORA_BIAS_CASES)
def test_lora_bias_as_peft(hf, tmp_path, monkeypatch, name):
    case, config = LORA_BIAS_CASES[name]
    run(case, tmp_path, monkeypatch, config)


def test_second_adapter_keeps_the_active_bias_mode_as_peft(monkeypatch):
    """PEFT applies the ACTIVE adapters' bias modes after every injection: adding a second adapter keeps the
    first's bias="all" training every bias (the base's, each lora_B's). minilora froze the base biases on
    add_adapter (fuzzer seed 9122)."""
    monkeypatch.setattr(fuzz, "TINY", BIASED)
    reference, model = fuzz.base_pair()
    theirs = peft.get_peft_model(reference, peft.LoraConfig(r=2, target_modules=["k_proj"], bias="all",
                                                           lora_bias=True))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(r=2, target_modules=["k_proj"], bias="all", lora_bias=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.add_adapter("other", peft.LoraConfig(r=2, target_modules=["q_proj"], lora_bias=True))
    ours.add_adapter("other", ml_peft.LoraConfig(r=2, target_modules=["q_proj"], lora_bias=True))
    fuzz.compare_trainable(ours, theirs)
    assert model.model.layers[0].mlp.up_proj.bias.requires_grad


def test_lora_bias_trains_and_merges_into_the_base_bias():
    model = ml_peft.get_peft_model(fuzz.LlamaForCausalLM(BIASED, dtype="float64"),
                                   ml_peft.LoraConfig(r=2, target_modules=["q_proj"], lora_bias=True))
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.lora_B["default"].bias.requires_grad and not q.base_layer.bias.requires_grad
    np.testing.assert_array_equal(q.lora_B["default"].bias.numpy(force=True), 0)  # starts at the base model
    q.lora_B["default"].bias.data = ml.ones(16, dtype=ml.float64)
    before = q.base_layer.bias.numpy(force=True).copy()
    model.merge_adapter()
    np.testing.assert_allclose(q.base_layer.bias.numpy(force=True), before + q.scaling["default"])
    model.unmerge_adapter()
    np.testing.assert_allclose(q.base_layer.bias.numpy(force=True), before)


def test_lora_bias_merge_without_base_bias_changes_no_weight():
    """PEFT raises in the middle of merge_and_unload (earlier layers merged, this one's weight changed);
    minilora refuses before touching any weight, with PEFT's words."""
    model = ml_peft.get_peft_model(fuzz.LlamaForCausalLM(fuzz.TINY, dtype="float64"),
                                   ml_peft.LoraConfig(r=2, target_modules=["q_proj"], lora_bias=True,
                                                      init_lora_weights=False))
    before = {k: v.numpy(force=True).copy() for k, v in model.state_dict().items()}
    for merge in (model.merge_adapter, model.merge_and_unload):
        with pytest.raises(RuntimeError, match="Impossible to merge LoRA with `lora_bias=True` because the base "
                                               "layer has no bias"):
            merge()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(force=True), before[key], err_msg=key)


@pytest.mark.parametrize("kw,error,words", [
    (dict(lora_bias=True, init_lora_weights="gaussian"), ValueError, "only supported with init_lora_weights=True"),
    (dict(lora_bias=True, use_dora=True), ValueError, "not supported for DoRA"),
])
def test_lora_bias_config_refusals_as_peft(kw, error, words):
    for library in (peft, ml_peft):
        with pytest.raises(error, match=words):
            library.LoraConfig(**kw)


def test_lora_bias_must_be_a_bool():  # (PEFT takes any truthy value)
    with pytest.raises(TypeError, match="lora_bias must be True or False"):
        ml_peft.LoraConfig(lora_bias="yes")


def test_lora_bias_on_an_embedding_is_refused_as_peft():
    kw = dict(target_modules=["embed_tokens", "q_proj"], lora_bias=True)
    reference, model = fuzz.base_pair()
    with pytest.raises(ValueError, match="lora_bias=True is not supported for Embedding"):
        peft.get_peft_model(reference, peft.LoraConfig(**kw))
    with pytest.raises(ValueError, match="lora_bias=True is not supported for Embedding"):
        ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw))


def test_adalora_refuses_trainable_tokens_by_name():
    """(lora_bias=True is accepted since round 33: PEFT's AdaLoRA layers ignore it, tests/test_adalora_r33.py.)"""
    with pytest.raises(NotImplementedError, match="trainable_token_indices"):
        ml_peft.AdaLoraConfig(total_step=10, trainable_token_indices=[1])


# ==================================================================================================
# trainable_token_indices: a few rows of the embedding trained, saved as ...token_adapter.trainable_tokens_delta
# ==================================================================================================
TOKEN_CASES = {
    "list": ({"first": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=[1, 3]),
              "finish": "merge_and_unload"}, None),
    "dict_with_head": ({"first": dict(r=2, target_modules=["q_proj"],
                                      trainable_token_indices={"embed_tokens": [1, 3], "lm_head": [0, 5]}),
                        "finish": "merge_unmerge"}, None),
    "two_adapters": ({"first": dict(r=2, target_modules=["q_proj"], trainable_token_indices=[2]),
                      "second": dict(r=1, target_modules=["k_proj"], trainable_token_indices=[4, 5]),
                      "switch": True, "per_sample": True, "finish": "merge_and_unload"}, None),
    "tied_head": ({"first": dict(r=2, target_modules=["q_proj"], trainable_token_indices=[1, 3]),
                   "finish": "merge_and_unload"}, TIED),
    "tied_dict_other_ids": ({"first": dict(r=2, target_modules=["q_proj"],
                                           trainable_token_indices={"embed_tokens": [1, 3], "lm_head": [2]}),
                             "finish": "merge_unmerge"}, TIED),
}


@pytest.mark.parametrize("name", TOKEN_CASES)
def test_trainable_tokens_as_peft(hf, tmp_path, monkeypatch, name):
    case, config = TOKEN_CASES[name]
    run(case, tmp_path, monkeypatch, config)


def test_new_tokens_recipe_as_peft(hf, tmp_path, monkeypatch):
    """resize_token_embeddings for two new tokens, train only their rows (and LoRA): both libraries agree
    after a few AdamW steps; the other rows never move; the file holds the two rows only. (Resizing sets
    vocab_size on the model's own config object, as transformers: a copy here.)"""
    monkeypatch.setattr(fuzz, "TINY", dataclasses.replace(fuzz.TINY))
    reference, model = fuzz.base_pair()
    vocab = fuzz.TINY.vocab_size
    reference.resize_token_embeddings(vocab + 2)
    model.resize_token_embeddings(vocab + 2)
    model.load_state_dict(reference.state_dict())  # transformers' new rows are random: take them
    new_ids = [vocab, vocab + 1]
    theirs = peft.get_peft_model(reference, peft.LoraConfig(r=2, target_modules=["q_proj"],
                                                           trainable_token_indices=new_ids))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(r=2, target_modules=["q_proj"],
                                                           trainable_token_indices=new_ids))
    fuzz.compare_trainable(ours, theirs)
    start = theirs.get_input_embeddings().token_adapter.trainable_tokens_delta["default"].detach().numpy()
    np.testing.assert_array_equal(
        ours.get_input_embeddings().token_adapter.trainable_tokens_delta["default"].numpy(force=True), start)
    fuzz.copy_state(theirs, ours)  # the same lora_A draw
    table = model.get_input_embeddings().token_adapter.base_layer.weight.numpy(force=True).copy()
    ids = np.array([[1, vocab, 5, vocab + 1, 2, vocab]])
    theirs_params = [p for p in theirs.parameters() if p.requires_grad]
    ours_params = [p for p in ours.parameters() if p.requires_grad]
    theirs_opt, ours_opt = torch.optim.AdamW(theirs_params, lr=0.05), ml.optim.AdamW(ours_params, lr=0.05)
    for _ in range(3):
        float64_causal_loss(theirs(input_ids=torch.as_tensor(ids)).logits, ids).backward()  # (transformers': float32)
        ours(input_ids=ml.tensor(ids), labels=ml.tensor(ids)).loss.backward()
        theirs_opt.step(), ours_opt.step()
        theirs_opt.zero_grad(), ours_opt.zero_grad()
    np.testing.assert_allclose(fuzz.logits(ours, ids), fuzz.logits(theirs, ids), rtol=1e-12, atol=1e-12)
    delta = ours.get_input_embeddings().token_adapter.trainable_tokens_delta["default"].numpy(force=True)
    assert not np.allclose(delta, table[new_ids])  # the new rows trained ...
    merged = ours.merge_and_unload().get_input_embeddings().weight.numpy(force=True)
    np.testing.assert_array_equal(merged[:vocab], table[:vocab])  # ... and nothing else moved
    np.testing.assert_array_equal(merged[new_ids], delta)
    np.testing.assert_allclose(merged, theirs.merge_and_unload().get_input_embeddings().weight.detach().numpy(),
                               rtol=1e-12, atol=1e-12)


def test_trainable_tokens_file_holds_only_the_rows(tmp_path):
    model = ml_peft.get_peft_model(fuzz.LlamaForCausalLM(fuzz.TINY, dtype="float64"),
                                   ml_peft.LoraConfig(target_modules=["q_proj"], trainable_token_indices=[4, 7]))
    state = ml_peft.get_peft_model_state_dict(model)
    key = "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"
    assert state[key].shape == (2, 16) and not any("base_layer" in k for k in state)
    assert "embed_tokens.token_adapter.trainable_tokens_original" not in str(list(model.state_dict()))


@pytest.mark.parametrize("kw,error,words", [
    (dict(target_modules=["q_proj", "embed_tokens"], trainable_token_indices=[1]), TypeError,
     "trainable_token_indices cannot be applied to modules of type"),
    (dict(target_modules=["q_proj"], trainable_token_indices={"embed": [1]}), ValueError,
     r"Target modules \{'embed'\} not found in the base model"),
    (dict(target_modules=["q_proj"], trainable_token_indices={"q_proj": [1]}), TypeError,
     "trainable_token_indices cannot be applied to modules of type"),
    (dict(target_modules=["q_proj"], trainable_token_indices=[40]), IndexError, "out of bounds"),
])
def test_trainable_tokens_refusals_as_peft(kw, error, words):
    reference, model = fuzz.base_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=words):
            peft.get_peft_model(reference, peft.LoraConfig(**kw))
        with pytest.raises(error, match=words):
            ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw))
    # minilora is stricter: the refused adapter left no layer wrapped
    assert not any(isinstance(m, (ml_peft.Linear, ml_peft.Embedding)) for m in model.modules())


@pytest.mark.parametrize("kw,error,words", [
    (dict(trainable_token_indices=[]), ValueError, "trainable_token_indices is empty"),  # PEFT: crashes in forward
    (dict(trainable_token_indices=[1], modules_to_save=["embed_tokens"]), ValueError,  # PEFT: a broken forward
     "already marked to be trained fully"),
    (dict(trainable_token_indices=[1.5]), ValueError, "list of token ids"),
    (dict(trainable_token_indices={"embed_tokens": 3}), ValueError, "list of token ids"),
])
def test_trainable_tokens_minilora_refuses_what_peft_breaks_on(kw, error, words):
    with pytest.raises(error, match=words):
        ml_peft.get_peft_model(fuzz.LlamaForCausalLM(fuzz.TINY), ml_peft.LoraConfig(target_modules=["q_proj"], **kw))


# ==================================================================================================
# a refused add_adapter leaves nothing behind
# ==================================================================================================
def test_refused_add_adapter_leaves_no_half_wrapped_layers():
    """PEFT 0.21 leaves the layers it reached before the refusal holding the refused adapter's weights
    (q_proj / v_proj below get lora_A.other, then model.norm is refused). minilora rolls back: the
    model's state and wrappers are as before, and the name can be used again."""
    reference, model = fuzz.base_pair()
    theirs = peft.get_peft_model(reference, peft.LoraConfig(target_modules=["v_proj"]))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(target_modules=["v_proj"]))
    before = sorted(ours.state_dict())
    bad = dict(target_modules=["q_proj", "v_proj", "model.norm"], trainable_token_indices=[1])
    with pytest.raises(ValueError, match="is not supported"):
        theirs.add_adapter("other", peft.LoraConfig(**bad))
    with pytest.raises(ValueError, match="is not supported"):
        ours.add_adapter("other", ml_peft.LoraConfig(**bad))
    assert any(".other." in k for k in theirs.state_dict())  # PEFT's leftovers
    assert sorted(ours.state_dict()) == before and list(ours.peft_config) == ["default"]
    ours.add_adapter("other", ml_peft.LoraConfig(target_modules=["q_proj"]))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.other.weight" in ours.state_dict()
    # a refused trainable-tokens target after LoRA was injected: rolled back too
    with pytest.raises(ValueError, match="not found in the base model"):
        ours.add_adapter("third", ml_peft.LoraConfig(target_modules=["k_proj"], trainable_token_indices={"x": [1]}))
    assert not any(".third" in k for k in ours.state_dict())
    assert type(ours.base_model.model.model.layers[0].self_attn.k_proj).__name__ == "Linear"


# ==================================================================================================
# layer_replication: a deeper model from copies of layers that share their base weights
# ==================================================================================================
def test_layer_replication_as_peft(hf, tmp_path, monkeypatch):
    """[[0, 2], [1, 2]] stacks layers 0, 1, 1: three layers, the third sharing layer 1's base weights and
    holding its own adapter. Names, logits, an AdamW step, files, generate and each loading direction as
    PEFT. (PEFT and minilora alike set num_hidden_layers on the model's own config object: a copy here.)"""
    fresh = lambda: monkeypatch.setattr(fuzz, "TINY", dataclasses.replace(TINY_TWO_LAYERS))  # noqa: E731
    fresh()
    reference, model = fuzz.base_pair()
    kw = dict(r=2, target_modules=["q_proj", "down_proj"], layer_replication=[[0, 2], [1, 2]],
              init_lora_weights=False)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**kw))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw))
    layers = model.model.layers
    assert len(layers) == 3 == model.config.num_hidden_layers and layers[2].self_attn.layer_idx == 2
    assert layers[2].self_attn.q_proj.base_layer.weight is layers[1].self_attn.q_proj.base_layer.weight
    assert layers[2].self_attn.q_proj.lora_A["default"] is not layers[1].self_attn.q_proj.lora_A["default"]
    fuzz.copy_state(theirs, ours)
    fuzz.compare_trainable(ours, theirs)
    fuzz.compare_backward_and_step(ours, theirs)
    fuzz.assert_same_logits(ours, theirs, "after one AdamW step")
    assert fuzz.compare_files(ours, theirs, tmp_path)
    prompt = fuzz.IDS[:1]
    np.testing.assert_array_equal(  # the KV cache: one slot per layer copy
        ours.generate(ml.tensor(prompt), max_new_tokens=3, do_sample=False).numpy(force=True),
        theirs.generate(torch.as_tensor(prompt), max_new_tokens=3, do_sample=False).numpy())
    for library, folder in [(peft, "ours"), (ml_peft, "peft")]:
        fresh()
        reference, model = fuzz.base_pair()
        loaded = library.PeftModel.from_pretrained(reference if library is peft else model, tmp_path / folder)
        fuzz.assert_same_logits(loaded, theirs, f"{library.__name__} loading the {folder} folder")
    with pytest.raises(ValueError, match="Cannot merge LORA layers when base model layers are replicated"):
        ours.merge_and_unload()  # PEFT's check never fires (it merges into the shared weights)


TINY_TWO_LAYERS = dataclasses.replace(fuzz.TINY)


@pytest.mark.parametrize("value", [[0, 2], [[0, 1, 2]], "0-2", [[-1, 1]]])
def test_layer_replication_must_be_ranges(value):
    with pytest.raises(ValueError, match="layer_replication must be a list of"):
        ml_peft.LoraConfig(layer_replication=value)


# ==================================================================================================
# target_parameters: LoRA on a parameter (PEFT's lora.ParamWrapper), W + s B A inside the layer's forward
# ==================================================================================================
PARAMETER_CASES = {
    "linear_weights": ({"first": dict(r=2, lora_alpha=4, target_modules=[],
                                      target_parameters=["q_proj.weight", "down_proj.weight"]),
                        "finish": "merge_and_unload"}, None),
    # rank_pattern keys are matched against the parameter's name (PEFT's rule: "q_proj" alone does not match)
    "with_modules_and_patterns": ({"first": dict(r=2, lora_alpha=4, target_modules=["v_proj"],
                                                 target_parameters=["self_attn.q_proj.weight"],
                                                 rank_pattern={"q_proj": 3, "q_proj.weight": 1},
                                                 init_lora_weights=False), "finish": "merge_unmerge"}, BIASED),
    "embedding_and_head": ({"first": dict(r=2, target_modules=[], init_lora_weights=False,
                                          target_parameters=["embed_tokens.weight", "lm_head.weight"]),
                            "finish": "merge_and_unload"}, None),
    # a second adapter's "all-linear" takes Linear layers only, no ParamWrapper (seeds 7096, 30289)
    "then_all_linear": ({"first": dict(r=2, target_modules=[], target_parameters=["embed_tokens.weight",
                                                                                  "down_proj.weight"]),
                         "second": dict(r=4, target_modules="all-linear"), "switch": True,
                         "finish": "merge_and_unload"}, None),
    "two_adapters": ({"first": dict(r=2, target_modules=[], target_parameters=["q_proj.weight"]),
                      "second": dict(r=1, target_modules=[], target_parameters=["q_proj.weight"]),
                      "switch": True, "per_sample": True, "finish": "merge_and_unload",
                      "weighted": dict(weights=[1.0, 0.5], combination_type="linear")}, None),
}


@pytest.mark.parametrize("name", PARAMETER_CASES)
def test_target_parameters_as_peft(hf, tmp_path, monkeypatch, name):
    case, config = PARAMETER_CASES[name]
    run(case, tmp_path, monkeypatch, config)


def test_target_parameters_layer_prints_as_peft():
    reference, model = fuzz.base_pair()
    kw = dict(r=2, target_modules=[], target_parameters=["q_proj.weight"])
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**kw))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw))
    assert repr(ours.base_model.model.model.layers[0].self_attn.q_proj) == \
        repr(theirs.base_model.model.model.layers[0].self_attn.q_proj)


@pytest.mark.parametrize("kw,error,words", [
    (dict(target_modules=["q_proj"], target_parameters=["q_proj.weight"]), ValueError,
     "Trying to wrap an `nn.Parameter` of layer 'model.layers.0.self_attn.q_proj' of type Linear"),
    (dict(target_modules=[], target_parameters=["norm.weight"]), ValueError,
     "was initialized with 1 dimensional Parameter, but only 2d and 3d are supported"),
    (dict(target_modules=[], target_parameters=["q_proj.weight"], lora_dropout=0.1), ValueError,
     "does not work with lora_dropout != 0"),
    (dict(target_modules=[], target_parameters=["nothing.weight"]), ValueError,
     "No `target_modules` passed but also no `target_parameters` found"),
    (dict(target_modules=[], target_parameters="q_proj.weight"), TypeError, "must be a list of strings or None"),
])
def test_target_parameters_refusals_as_peft(kw, error, words):
    reference, model = fuzz.base_pair()
    with pytest.raises(error, match=re.escape(words) if "`" in words else words):
        peft.get_peft_model(reference, peft.LoraConfig(**kw))
    with pytest.raises(error, match=re.escape(words) if "`" in words else words):
        ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw))


def test_adapters_must_target_the_same_parameters_as_peft():  # (fuzzer seed 12718)
    reference, model = fuzz.base_pair()
    first, second = dict(target_modules=[], target_parameters=["lm_head.weight"]), \
        dict(target_modules=[], target_parameters=["embed_tokens.weight"])
    words = "all adapters must target the same set of parameters, but got ['embed_tokens.weight'] for the new"
    for library, base in ((peft, reference), (ml_peft, model)):
        peft_model = library.get_peft_model(base, library.LoraConfig(**first))
        with pytest.raises(ValueError, match=re.escape(words)):
            peft_model.add_adapter("other", library.LoraConfig(**second))


def test_second_adapter_on_a_param_wrapper_gets_its_refusals():  # (fuzzer seed 20078)
    """A ParamWrapper adds a second adapter through update_layer: DoRA / dropout are refused there too
    (PEFT: "Invalid or unsupported variant combination: ('use_dora',)")."""
    reference, model = fuzz.base_pair()
    for library, base in ((peft, reference), (ml_peft, model)):
        peft_model = library.get_peft_model(base, library.LoraConfig(target_modules=[], target_parameters=["q_proj.weight"]))
        with pytest.raises(ValueError, match="use_dora"):
            peft_model.add_adapter("other", library.LoraConfig(target_modules=["q_proj"], use_dora=True))


def test_target_parameters_that_match_nothing_warn_as_peft():
    reference, model = fuzz.base_pair()
    kw = dict(target_modules=["k_proj"], target_parameters=["nothing.weight"])
    for library, base in ((peft, reference), (ml_peft, model)):
        with pytest.warns(RuntimeWarning, match=r"target_parameters=\['nothing.weight'\] were set but no parameter"):
            library.get_peft_model(base, library.LoraConfig(**kw))


# ==================================================================================================
# TrainableTokensConfig: PEFT's trainable-tokens method on its own (no LoRA)
# ==================================================================================================
@pytest.mark.parametrize("config,kw", [
    (None, dict(token_indices=[1, 3])),  # target_modules=None: the input embedding
    (None, dict(token_indices=[0, 4], target_modules=["embed_tokens", "lm_head"])),
    (TIED, dict(token_indices=[1, 3])),  # the tied head follows the embedding's rows
])
def test_trainable_tokens_config_as_peft(hf, tmp_path, monkeypatch, config, kw):
    if config is not None:
        monkeypatch.setattr(fuzz, "TINY", config)
    reference, model = fuzz.base_pair()
    theirs = peft.get_peft_model(reference, peft.TrainableTokensConfig(**kw))
    ours = ml_peft.get_peft_model(model, ml_peft.TrainableTokensConfig(**kw))
    assert type(ours.base_model).__name__ == "TrainableTokensModel"
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    fuzz.compare_trainable(ours, theirs)
    fuzz.compare_backward_and_step(ours, theirs)
    fuzz.assert_same_logits(ours, theirs, "after one AdamW step")
    assert fuzz.compare_files(ours, theirs, tmp_path)
    for library, folder in [(peft, "ours"), (ml_peft, "peft")]:
        reference, model = fuzz.base_pair()
        loaded = library.PeftModel.from_pretrained(reference if library is peft else model, tmp_path / folder)
        fuzz.assert_same_logits(loaded, theirs, f"{library.__name__} loading the {folder} folder")
    with ours.disable_adapter(), theirs.disable_adapter():
        fuzz.assert_same_logits(ours, theirs, "disable_adapter")
    fuzz.finish("merge_and_unload", kw, ours, theirs)
    fuzz.assert_same_logits(ours.get_base_model(), theirs.get_base_model(), "merge_and_unload")


def test_trainable_tokens_config_random_rows_and_refusals():
    model = ml_peft.get_peft_model(fuzz.LlamaForCausalLM(fuzz.TINY, dtype="float64"),
                                   ml_peft.TrainableTokensConfig(token_indices=[2], init_weights=False))
    layer = model.get_input_embeddings()
    assert not np.allclose(layer.trainable_tokens_delta["default"].numpy(force=True),
                           layer.base_layer.weight.numpy(force=True)[[2]])
    with pytest.raises(ValueError, match="list of token ids"):
        ml_peft.TrainableTokensConfig(token_indices=[1, -1])
    with pytest.raises(ValueError, match="of type 'LORA'"):
        ml_peft.TrainableTokensConfig(peft_type="LORA")


# ==================================================================================================
# init_lora_weights="orthogonal" (PEFT 0.21): A, B from one random orthogonal matrix's rows, B A = 0
# ==================================================================================================
def test_orthogonal_init_as_peft(hf, tmp_path):
    reference, model = fuzz.base_pair()
    kw = dict(r=4, target_modules=["q_proj", "embed_tokens"], init_lora_weights="orthogonal")
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**kw))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw))
    fuzz.compare_trainable(ours, theirs)
    for library_model in (ours, theirs):  # both factors nonzero, their product ~0 (float32 rounding): starts at base
        q = library_model.base_model.model.model.layers[0].self_attn.q_proj
        A, B = (np.asarray(q.lora_A["default"].weight.detach().numpy()),
                np.asarray(q.lora_B["default"].weight.detach().numpy()))
        assert A.shape == (4, 16) and B.shape == (16, 4) and abs(A).min() > 0 and abs(B).max() > 1e-3
        assert abs(B @ A).max() < 1e-7
    with ours.disable_adapter():
        base = fuzz.logits(ours)
    np.testing.assert_allclose(fuzz.logits(ours), base, atol=1e-6)
    fuzz.run_case({"first": kw, "finish": "merge_and_unload"}, tmp_path)  # files, loading, merging (random A, B)


def test_orthogonal_init_needs_an_even_rank_as_peft():
    reference, model = fuzz.base_pair()
    words = "Orthogonal initialization requires the LoRA rank to be even, got 3 instead."
    with pytest.raises(ValueError, match=words):
        peft.get_peft_model(reference, peft.LoraConfig(r=3, target_modules=["q_proj"], init_lora_weights="orthogonal"))
    with pytest.raises(ValueError, match=words):
        ml_peft.get_peft_model(model, ml_peft.LoraConfig(r=3, target_modules=["q_proj"], init_lora_weights="orthogonal"))


@pytest.mark.parametrize("init", ["bogus"])  # (PEFT 0.21's other inits are implemented: test_peft_inits_r12.py)
def test_other_peft_inits_are_refused_by_name(init):
    with pytest.raises(ValueError, match=f"got '{init}'"):
        ml_peft.LoraConfig(init_lora_weights=init)


def test_lora_bias_and_trainable_tokens_in_bfloat16_as_peft():
    """A bfloat16 base: the adapter's lora_B.bias and token rows are upcast to float32 (PEFT's
    autocast_adapter_dtype), the layers' outputs and the merged bias / weight / table are PEFT's, bit for bit."""
    from test_peft_conformance_r3 import as_numpy, pair
    reference, model = pair("bfloat16", BIASED)
    kw = dict(r=2, target_modules=["q_proj"], lora_bias=True, init_lora_weights=False, trainable_token_indices=[1, 3])
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**kw))
    ours = ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw))
    with torch.no_grad():
        theirs.get_input_embeddings().token_adapter.trainable_tokens_delta["default"].add_(0.5)
    state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        assert str(value.dtype) == str(state[key].dtype).replace("torch.", ""), key
        value._array[...] = as_numpy(state[key]).astype(value._array.dtype)
    q_theirs = theirs.base_model.model.model.layers[0].self_attn.q_proj
    q_ours = ours.base_model.model.model.layers[0].self_attn.q_proj
    x = np.random.default_rng(0).standard_normal((2, 3, 16)).astype(np.float32)
    np.testing.assert_array_equal(as_numpy(q_ours(ml.tensor(x).bfloat16())), as_numpy(q_theirs(torch.tensor(x).bfloat16())))
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(as_numpy(ours.get_input_embeddings()(ml.tensor(ids))),
                                  as_numpy(theirs.get_input_embeddings()(torch.tensor(ids))))
    theirs.merge_adapter()
    ours.merge_adapter()
    for name in ("bias", "weight"):
        np.testing.assert_array_equal(as_numpy(getattr(q_ours.base_layer, name)),
                                      as_numpy(getattr(q_theirs.base_layer, name)), err_msg=name)
    np.testing.assert_array_equal(as_numpy(ours.get_input_embeddings().token_adapter.base_layer.weight),
                                  as_numpy(theirs.get_input_embeddings().token_adapter.base_layer.weight))


def test_diagnostics_pass_over_trainable_token_rows():
    """adapter_spectrum / truncate_adapter read each layer's low-rank update; token rows have none (this
    crashed with AttributeError 'vera_A')."""
    model = ml_peft.get_peft_model(fuzz.LlamaForCausalLM(fuzz.TINY),
                                   ml_peft.LoraConfig(r=2, target_modules=["q_proj"], trainable_token_indices=[1],
                                                      init_lora_weights=False))
    assert [s.name for s in ml_peft.diagnostics.adapter_spectrum(model)] == \
        ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    assert len(ml_peft.diagnostics.truncate_adapter(model, rank=1)) == 2


def test_add_weighted_adapter_combines_lora_bias_and_keeps_replicated_layers():
    """PEFT 0.22 gives the new adapter sum_i w_i s_i b_i as its lora_B bias (0.21 left it at its initial value,
    dropping the trained biases; minilora refused then; side by side: tests/test_peft022_r30.py). With
    layer_replication, PEFT's new adapter would replicate the already replicated layers again; minilora's keeps
    them."""
    model = ml_peft.get_peft_model(fuzz.LlamaForCausalLM(dataclasses.replace(fuzz.TINY)),
                                   ml_peft.LoraConfig(r=2, target_modules=["q_proj"], lora_bias=True))
    model.add_adapter("other", ml_peft.LoraConfig(r=2, target_modules=["q_proj"]))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    trained = np.random.default_rng(0).standard_normal(layer.lora_B["default"].bias.shape).astype(np.float32)
    layer.lora_B["default"].bias.data = ml.tensor(trained)
    model.add_weighted_adapter(["default", "other"], [0.5, 1.0], "mix", combination_type="linear")
    assert model.peft_config["mix"].lora_bias and not model.peft_config["mix"].use_rslora
    np.testing.assert_array_equal(layer.lora_B["mix"].bias.numpy(),
                                  np.float32(0.5 * layer.scaling["default"]) * trained)
    model = ml_peft.get_peft_model(fuzz.LlamaForCausalLM(dataclasses.replace(fuzz.TINY)),
                                   ml_peft.LoraConfig(r=2, target_modules=["q_proj"], layer_replication=[[0, 2], [1, 2]]))
    model.add_weighted_adapter(["default"], [1.0], "mix", combination_type="linear")
    assert len(model.get_base_model().model.layers) == 3
    assert model.peft_config["mix"].layer_replication == [[0, 2], [1, 2]]
