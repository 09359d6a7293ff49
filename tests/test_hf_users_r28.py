"""Round 28: transformers' and PEFT's calls as their tutorials write them, beside transformers / peft themselves.
What the sweep found differing (LlamaConfig's corners, LoraConfig's options, several adapters, generate()'s
keywords and loading adapters for training agreed already):

* The bare model: ``LlamaModel.from_pretrained`` / ``AutoModel.from_pretrained`` did not exist (an AttributeError),
  nor ``LlamaModel.save_pretrained``; a bare model's folder (``embed_tokens.weight``, no ``model.`` and no head)
  was refused by ``LlamaForCausalLM.from_pretrained``, where transformers reads the body under ``model.`` and
  draws the head anew (reported MISSING), and by the classification classes.
* Merging in float16 / bfloat16: PEFT rounds the update to the weight's dtype before adding it on some paths and
  not on others, by layer kind; minilora rounded by one rule for all, and ``merge_and_unload(safe_merge=True)``
  merged as without it. 1-3% of the merged weights differed by an ulp (lora.Linear's safe merge and unload,
  lora.Embedding's merge, a target_parameters wrapper's merge, VeRA's and AdaLoRA's safe merge and unmerge).
* An adapter named by a piece of its method's prefix ("lora", "a", "_" of "lora_"): PEFT's warning, which
  minilora did not give.

Skipped when torch / transformers / peft are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
from minilora import models  # noqa: E402
from minilora.nn.module import StateDictError  # noqa: E402

from test_peft_fields_r13 import BASE, LIBRARIES, llama  # noqa: E402
from peft_versions import PEFT_022  # noqa: E402

SHAPE = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
IDS = np.array([[3, 4, 5, 6, 7, 8], [9, 8, 7, 6, 5, 4]])


def quietly(run, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(*args, **kwargs)


def said(run):
    """``run()``'s result and the messages it warned (transformers' own deprecations left out)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
    return result, [str(w.message) for w in caught if not issubclass(w.category, FutureWarning)]


# ==================================================================================================
# The bare model: LlamaModel / AutoModel, its folder, and a head on it
# ==================================================================================================
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """transformers' folders of one random Llama: the causal LM's, its bare model's (float32 and bfloat16), and a
    tied model's bare body."""
    root = tmp_path_factory.mktemp("r28")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    quietly(model.save_pretrained, root / "causal")
    quietly(model.model.save_pretrained, root / "bare")
    quietly(model.model.to(torch.bfloat16).save_pretrained, root / "bare16")
    torch.manual_seed(0)
    tied = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE, tie_word_embeddings=True))
    quietly(tied.model.save_pretrained, root / "tied_bare")
    return {name: str(root / name) for name in ("causal", "bare", "bare16", "tied_bare")}


def _hidden(lib, model):
    with torch.no_grad():
        return model(lib.tensor(IDS)).last_hidden_state.float().numpy()


@pytest.mark.parametrize("folder", ["causal", "bare"])
@pytest.mark.parametrize("loader", ["LlamaModel", "AutoModel"])
def test_the_bare_model_loads_from_either_folder_as_transformers(folders, folder, loader):
    """The body's hidden states, the loading report (the causal folder's head UNEXPECTED), and no random number
    drawn."""
    torch.manual_seed(5)
    theirs, their_info = quietly(getattr(transformers, loader).from_pretrained, folders[folder],
                                 output_loading_info=True)
    ml.manual_seed(5)
    ours, our_info = getattr(models, loader).from_pretrained(folders[folder], output_loading_info=True)
    assert type(ours).__name__ == type(theirs).__name__ == "LlamaModel"
    assert our_info == their_info
    assert ml.rand(3).numpy().tolist() == torch.rand(3).numpy().tolist()  # (both streams where the seed put them)
    np.testing.assert_allclose(_hidden(ml, ours), _hidden(torch, theirs), rtol=1e-5, atol=1e-5)
    assert ours.name_or_path == folders[folder] and not ours.training


def test_the_bare_model_saves_transformers_folder(folders, tmp_path):
    """LlamaModel.save_pretrained: config.json (architectures LlamaModel), the weights under the body's names, no
    generation_config.json; transformers reads it back."""
    import json
    from safetensors.numpy import load_file
    theirs = quietly(transformers.LlamaModel.from_pretrained, folders["causal"])
    quietly(theirs.save_pretrained, tmp_path / "theirs")
    models.LlamaModel.from_pretrained(folders["causal"]).save_pretrained(tmp_path / "ours")
    written = [sorted(p.name for p in (tmp_path / side).iterdir()) for side in ("ours", "theirs")]
    assert written[0] == written[1]
    configs = [json.loads((tmp_path / side / "config.json").read_text()) for side in ("ours", "theirs")]
    assert configs[0]["architectures"] == configs[1]["architectures"] == ["LlamaModel"]
    left_out = ("transformers_version", "rope_theta")  # (minilora writes rope_theta at the top too, for transformers 4)
    assert {k: v for k, v in configs[0].items() if k not in left_out} == \
        {k: v for k, v in configs[1].items() if k not in left_out}
    files = [load_file(str(tmp_path / side / "model.safetensors")) for side in ("ours", "theirs")]
    assert sorted(files[0]) == sorted(files[1])
    for name in files[1]:
        np.testing.assert_array_equal(files[0][name], files[1][name], err_msg=name)
    back = quietly(transformers.AutoModel.from_pretrained, tmp_path / "ours")
    np.testing.assert_array_equal(_hidden(torch, back), _hidden(torch, theirs))


@pytest.mark.parametrize("folder, dtype", [("bare", None), ("bare16", None), ("bare", "bfloat16"), ("tied_bare", None)])
def test_a_causal_lm_from_a_bare_folder_draws_its_head_as_transformers(folders, folder, dtype):
    """transformers reads the body under ``model.`` and draws the head from the global stream (the same numbers
    from the same seed), reporting it MISSING; a tied model's head is its embeddings, nothing missing."""
    options = {} if dtype is None else {"dtype": dtype}
    torch.manual_seed(3)
    theirs, their_info = quietly(transformers.AutoModelForCausalLM.from_pretrained, folders[folder],
                                 output_loading_info=True, **({"dtype": getattr(torch, dtype)} if dtype else {}))
    ml.manual_seed(3)
    (ours, our_info), words = said(lambda: models.AutoModelForCausalLM.from_pretrained(
        folders[folder], output_loading_info=True, **options))
    assert our_info == their_info
    assert any("lm_head.weight is MISSING" in w for w in words) == (folder != "tied_bare")
    assert ml.rand(3).numpy().tolist() == torch.rand(3).numpy().tolist()
    np.testing.assert_array_equal(ours.lm_head.weight.float().numpy(), theirs.lm_head.weight.detach().float().numpy())
    with torch.no_grad():
        expected = theirs(torch.tensor(IDS)).logits.float().numpy()
    np.testing.assert_allclose(ours(ml.tensor(IDS)).logits.float().numpy(), expected, rtol=1e-2 if dtype else 1e-5,
                               atol=1e-2 if dtype else 1e-5)


def test_a_causal_checkpoint_without_its_head_is_still_refused(folders, tmp_path):
    """Only a bare model's folder gets a drawn head: a causal LM's file that lost lm_head is a broken file (where
    transformers would draw a head in silence of any error); a classification head still loads on a bare folder."""
    import shutil
    from safetensors.numpy import load_file, save_file
    shutil.copytree(folders["causal"], tmp_path / "broken")
    state = load_file(str(tmp_path / "broken" / "model.safetensors"))
    del state["lm_head.weight"]
    save_file(state, str(tmp_path / "broken" / "model.safetensors"))
    with pytest.raises(StateDictError, match="lm_head.weight"):
        models.LlamaForCausalLM.from_pretrained(tmp_path / "broken")
    torch.manual_seed(4)
    theirs = quietly(transformers.LlamaForSequenceClassification.from_pretrained, folders["bare"], num_labels=3)
    ml.manual_seed(4)
    ours = models.LlamaForSequenceClassification.from_pretrained(folders["bare"], num_labels=3)
    np.testing.assert_array_equal(ours.score.weight.numpy(), theirs.score.weight.detach().numpy())


@pytest.mark.parametrize("family", ["Mistral", "Qwen2", "Qwen3"])
def test_the_relatives_bare_models_load_and_save_as_transformers(tmp_path, family):
    torch.manual_seed(0)
    causal = getattr(transformers, f"{family}ForCausalLM")(getattr(transformers, f"{family}Config")(**SHAPE)).eval()
    quietly(causal.save_pretrained, tmp_path / "causal")
    theirs = quietly(transformers.AutoModel.from_pretrained, tmp_path / "causal")
    ours = models.AutoModel.from_pretrained(tmp_path / "causal")
    assert type(ours).__name__ == type(theirs).__name__ == f"{family}Model"
    np.testing.assert_allclose(_hidden(ml, ours), _hidden(torch, theirs), rtol=1e-5, atol=1e-5)
    ours.save_pretrained(tmp_path / "ours")
    back = quietly(transformers.AutoModel.from_pretrained, tmp_path / "ours")
    assert type(back).__name__ == f"{family}Model"
    np.testing.assert_array_equal(_hidden(torch, back), _hidden(torch, theirs))


def test_an_adapter_on_the_bare_model_as_peft(folders, tmp_path):
    """PEFT's FEATURE_EXTRACTION task on AutoModel: the hidden states and the adapter file's names."""
    from safetensors.numpy import load_file
    seen = {}
    for (lib, lib_peft), auto in zip(LIBRARIES.values(), (transformers.AutoModel, models.AutoModel)):
        base = quietly(auto.from_pretrained, folders["bare"])
        lib.manual_seed(1)
        config = lib_peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False,
                                     task_type="FEATURE_EXTRACTION")
        model = lib_peft.get_peft_model(base, config)
        model.save_pretrained(str(tmp_path / lib.__name__))
        seen[lib.__name__] = (type(model).__name__, _hidden(lib, model), model.get_nb_trainable_parameters(),
                              load_file(str(tmp_path / lib.__name__ / "adapter_model.safetensors")))
    (name, hidden, counts, tensors), theirs = seen["minilora"], seen["torch"]
    assert (name, counts, sorted(tensors)) == (theirs[0], theirs[2], sorted(theirs[3]))
    np.testing.assert_allclose(hidden, theirs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mean_resizing", [True, False])
def test_the_bare_models_pretrained_model_methods_as_transformers(folders, mean_resizing):
    """What a user of AutoModel calls on it (AttributeErrors before): counts, the embeddings and their resizing
    (the same new rows from the same seed), gradient checkpointing, can_generate."""
    theirs = quietly(transformers.AutoModel.from_pretrained, folders["bare"])
    ours = models.AutoModel.from_pretrained(folders["bare"])
    for exclude in (False, True):
        assert ours.num_parameters(exclude_embeddings=exclude) == theirs.num_parameters(exclude_embeddings=exclude)
    # (the parameters' bytes: transformers' rotary layer keeps a second float32 buffer, original_inv_freq, that
    # minilora keeps as float64 NumPy frequencies outside the buffers: 4 * head_dim / 2 bytes apart with buffers)
    assert ours.get_memory_footprint(return_buffers=False) == theirs.get_memory_footprint(return_buffers=False)
    assert ours.can_generate() is theirs.can_generate() is False
    assert ours.get_output_embeddings() is theirs.get_output_embeddings() is None
    assert ours.get_input_embeddings() is ours.embed_tokens and ours.main_input_name == theirs.main_input_name
    torch.manual_seed(2)
    quietly(theirs.resize_token_embeddings, 56, mean_resizing=mean_resizing)
    ml.manual_seed(2)
    table = ours.resize_token_embeddings(53, pad_to_multiple_of=8, mean_resizing=mean_resizing)
    assert table is ours.embed_tokens and ours.config.vocab_size == theirs.config.vocab_size == 56
    np.testing.assert_allclose(table.weight.numpy(), theirs.embed_tokens.weight.detach().numpy(), rtol=1e-6, atol=1e-7)
    ours.train()
    ours.gradient_checkpointing_enable()
    ours.enable_input_require_grads()
    assert ours.is_gradient_checkpointing
    ours.requires_grad_(False)
    ours.layers[0].self_attn.q_proj.weight.requires_grad_(True)
    ours(ml.tensor(IDS)).last_hidden_state.sum().backward()  # (the frozen embeddings' output still takes grad)
    assert ours.layers[0].self_attn.q_proj.weight.grad is not None


def test_base_model_is_the_body_as_transformers(folders):
    """``model.base_model`` (an AttributeError before): a task model's body, the bare model itself."""
    for name in ("AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"):
        theirs = quietly(getattr(transformers, name).from_pretrained, folders["causal"])
        ours = quietly(getattr(models, name).from_pretrained, folders["causal"])
        assert type(ours.base_model).__name__ == type(theirs.base_model).__name__ == "LlamaModel"
        assert (ours.base_model is ours) == (theirs.base_model is theirs) == (name == "AutoModel")


def test_auto_model_from_config_builds_the_bare_model():
    for dtype in (None, "bfloat16"):
        theirs = quietly(transformers.AutoModel.from_config, transformers.LlamaConfig(**SHAPE),
                         **({"dtype": getattr(torch, dtype)} if dtype else {}))
        ours = models.AutoModel.from_config(models.LlamaConfig(**SHAPE), dtype=dtype)
        assert type(ours).__name__ == type(theirs).__name__ == "LlamaModel"
        assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")


# ==================================================================================================
# Merging into float16 / bfloat16 weights: PEFT's rounding, layer kind by layer kind
# ==================================================================================================
def _adapted_16bit(lib, lib_peft, dtype, kind):
    base = llama(lib).to(getattr(lib, dtype))
    lib.manual_seed(1)
    configs = {
        "lora": lambda: lib_peft.LoraConfig(**BASE),
        "embedding": lambda: lib_peft.LoraConfig(**dict(BASE, target_modules=["embed_tokens", "q_proj"])),
        "parameter": lambda: lib_peft.LoraConfig(**dict(BASE, target_modules=[],
                                                        target_parameters=["self_attn.q_proj.weight"])),
        "vera": lambda: lib_peft.VeraConfig(r=4, target_modules=["q_proj", "v_proj"], init_weights=False),
        "adalora": lambda: lib_peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"])}
    model = lib_peft.get_peft_model(base, configs[kind]())
    if kind == "adalora":  # (E starts at zero: no update to round)
        with lib.no_grad():
            for name, p in model.named_parameters():
                if "lora_E" in name:
                    p.copy_(lib.tensor(np.linspace(0.5, 1.5, p.shape[0]).reshape(p.shape)).to(p.dtype))
    return model


def _weights(lib, module):
    return {k: v.float().detach().numpy() for k, v in module.state_dict().items() if "lora" not in k}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("kind, safe_merge", [("lora", True), ("embedding", False), ("embedding", True),
                                              ("parameter", False), ("parameter", True), ("vera", False),
                                              ("vera", True), ("adalora", False), ("adalora", True)])
def test_16bit_merges_round_as_peft(dtype, kind, safe_merge):
    """merge_adapter, unmerge_adapter, then merge_and_unload: every weight's bits as PEFT's. (lora.Linear's plain
    merge agreed already: one float32 sum, rounded once.)"""
    seen = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = _adapted_16bit(lib, lib_peft, dtype, kind)
        model.merge_adapter(safe_merge=safe_merge)
        merged = _weights(lib, model.get_base_model())
        model.unmerge_adapter()
        unmerged = _weights(lib, model.get_base_model())
        seen[name] = (merged, unmerged, _weights(lib, model.merge_and_unload(safe_merge=safe_merge)))
    for step, ours, theirs in zip(("merged", "unmerged", "unloaded"), seen["minilora"], seen["torch"]):
        assert sorted(ours) == sorted(theirs)
        for key in theirs:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{step}: {key}")


# ==================================================================================================
# An adapter named by a piece of the prefix
# ==================================================================================================
PREFIX_WARNING = "should not be contained in the prefix"


@pytest.mark.parametrize("name", ["lora", "a", "_"])
def test_an_adapter_named_inside_the_prefix_warns_as_peft(tmp_path, name):
    """get_peft_model, add_adapter and load_adapter (a new name) warn with PEFT's words; PeftModel.from_pretrained
    and a mixed model's add_adapter do not, as PEFT's. The adapter itself works the same."""
    def script(lib, lib_peft):
        said_by = {}
        model, said_by["get_peft_model"] = said(lambda: lib_peft.get_peft_model(
            llama(lib), lib_peft.LoraConfig(**BASE), adapter_name=name))
        folder = tmp_path / lib.__name__
        model.save_pretrained(str(folder))
        where = folder / name if name != "default" else folder
        _, said_by["from_pretrained"] = said(lambda: lib_peft.PeftModel.from_pretrained(llama(lib), str(where),
                                                                                        adapter_name=name))
        other = lib_peft.get_peft_model(llama(lib), lib_peft.LoraConfig(**BASE), adapter_name="first")
        _, said_by["load_adapter"] = said(lambda: other.load_adapter(str(where), adapter_name=name))
        another = "ora" if name in "lora_" else name + "2"  # (inside the prefix where the name is)
        _, said_by["add_adapter"] = said(lambda: other.add_adapter(another, lib_peft.LoraConfig(**BASE)))
        mixed = lib_peft.get_peft_model(llama(lib), lib_peft.LoraConfig(**BASE), adapter_name="first", mixed=True)
        _, said_by["mixed add_adapter"] = said(lambda: mixed.add_adapter(name, lib_peft.LoraConfig(**BASE)))
        return {call: [w for w in words if PREFIX_WARNING in w] for call, words in said_by.items()}
    got = {lib_name: script(lib, lib_peft) for lib_name, (lib, lib_peft) in LIBRARIES.items()}
    if not PEFT_022:  # 0.22's load_adapter warns about the missing keys it finds (0.21 only returned them):
        # the name inside the prefix makes PEFT's filter catch the other adapter's keys, as its hint says
        checked = [w for w in got["minilora"]["load_adapter"] if w.endswith("while loading the checkpoint.")]
        assert len(checked) == 1 and "lora_A.first.weight" in checked[0]
        got["minilora"]["load_adapter"].remove(checked[0])
    assert got["minilora"] == got["torch"]
    assert got["minilora"]["get_peft_model"] and not got["minilora"]["from_pretrained"]


@pytest.mark.parametrize("config_class, name, prefix", [("VeraConfig", "vera", "vera_lambda_"),
                                                         ("TrainableTokensConfig", "token", "trainable_tokens_")])
def test_each_method_has_its_own_prefix(config_class, name, prefix):
    configs = {"VeraConfig": dict(r=2, target_modules=["q_proj"]), "TrainableTokensConfig": dict(token_indices=[1])}
    for lib, lib_peft in LIBRARIES.values():
        _, words = said(lambda: lib_peft.get_peft_model(llama(lib), getattr(lib_peft, config_class)(
            **configs[config_class]), adapter_name=name))
        assert f"Adapter name '{name}' should not be contained in the prefix '{prefix}'. This may lead to " \
               "reinitialization of the adapter weights during loading." in words
        _, words = said(lambda: lib_peft.get_peft_model(llama(lib), lib_peft.LoraConfig(**BASE), adapter_name="lora_A"))
        assert not [w for w in words if PREFIX_WARNING in w]  # (a name holding the prefix is no piece of it)


# ==================================================================================================
# add_weighted_adapter's magnitude pruning: torch.topk's choice among equal magnitudes
# ==================================================================================================
@pytest.mark.parametrize("shape, density", [((8, 32), 0.5), ((16, 64), 0.02), ((4, 4), 0.7), ((64, 40), 0.3)])
def test_magnitude_pruning_keeps_the_entries_torch_topk_keeps(shape, density):
    """PEFT prunes a task tensor with torch.topk of its magnitudes; a bfloat16 model's adapters (cast from its dtype)
    hold few distinct values, so equal magnitudes straddle the cut, and minilora kept the first ones (a stable
    sort) where torch keeps others (its partial_sort / nth_element)."""
    from peft.utils.merge_utils import magnitude_based_pruning
    from minilora.lora.compose import prune
    values = np.random.default_rng(0).choice([-0.5, -0.25, 0.25, 0.5, 0.125], size=shape).astype(np.float32)
    expected = magnitude_based_pruning(torch.tensor(values), density).numpy()
    np.testing.assert_array_equal(prune(values, density, "magnitude"), expected)


def test_a_magnitude_pruned_adapter_of_a_bfloat16_model_as_peft():
    """(TIES agreed already: its sign election and mean hid the difference in this model.)"""
    seen = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        base = llama(lib).to(lib.bfloat16)
        lib.manual_seed(1)
        model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**BASE))
        lib.manual_seed(2)
        model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, lora_alpha=6)))
        model.add_weighted_adapter(["default", "other"], [0.7, 0.4], "mix", combination_type="magnitude_prune",
                                   density=0.5)
        seen[name] = {k: v.detach().float().numpy() for k, v in model.state_dict().items() if ".mix." in k}
    assert sorted(seen["minilora"]) == sorted(seen["torch"])
    for key, theirs in seen["torch"].items():
        np.testing.assert_array_equal(seen["minilora"][key] == 0, theirs == 0, err_msg=key)  # the same entries kept
        np.testing.assert_allclose(seen["minilora"][key], theirs, rtol=1e-6, atol=1e-7, err_msg=key)
