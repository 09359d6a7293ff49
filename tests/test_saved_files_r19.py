"""The folders a user saves, compared with what transformers 5 and PEFT write for the same model, the way a user
compares them: ``os.listdir``, ``json.load``, ``safe_open`` -- and each library loading the other's folder.

Differences kept on purpose are pinned here with their reason: config.json's top-level ``rope_theta`` (transformers 4
reads only that), the version fields naming minilora (``transformers_version``, ``peft_version``), PEFT's model card,
the tokenizer class a rebuilt tokenizer's folder names, and training_args.bin holding ``args.to_dict()`` (no pickle).
"""
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors = pytest.importorskip("safetensors")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models, trainer as ml_trainer  # noqa: E402
from trainer_rows import collator, examples, save_tiny_llama  # noqa: E402
from peft_versions import peft_config_file_as_022  # noqa: E402

TINY = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=32)
WRITER = f"minilora-{ml.__version__}"  # the version field of a file minilora writes in another library's format
PEFT_WRITER = f"0.22.0+minilora.{ml.__version__}"  # adapter_config.json's peft_version: the PEFT release minilora mirrors


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(*args, **kwargs)


def pair(dtype=None, **config):
    """transformers' Llama and minilora's, the same weights (drawn by torch from seed 0)."""
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, **config)).eval()
    ours = models.LlamaForCausalLM(models.LlamaConfig(**TINY, **config)).eval()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    if dtype is not None:
        theirs, ours = theirs.to(getattr(torch, dtype)), ours.to(getattr(ml, dtype))
    return theirs, ours


def files(folder):
    """Every file under ``folder``, as paths relative to it (subfolders' files too)."""
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _dirs, names in os.walk(folder) for name in names)


def header(path):
    """A safetensors file as safe_open shows it: its metadata and each tensor's dtype and shape."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        return f.metadata(), {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape())
                              for name in f.keys()}


def tensors(folder, name):
    with safetensors.safe_open(str(os.path.join(folder, name)), framework="pt") as f:
        return {key: f.get_tensor(key).float().numpy() for key in f.keys()}


def read_json(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


# config.json: minilora writes rope_theta at the top level too (transformers 4 reads only that one: a Llama 3's
# 500000 would silently become 10000 there) and no transformers_version: transformers parses that one as a version
# (its tokenizer loader's Mistral check: packaging's InvalidVersion for "minilora-0.1.0"), and a transformers
# version would claim a writer that did not write it. Transformers reads the same config either way
# (test_config_json_differs_only_where_decided).
CONFIG_ONLY_OURS = {"rope_theta"}
CONFIG_ONLY_THEIRS = {"transformers_version"}


def assert_same_model_folder(theirs, ours, same_values=True):
    """Same file names, the same JSON (but config.json's pinned keys and the writer's version), the same
    safetensors headers -- and, for the same values (``same_values``), the same bytes; generation_config.json the
    same text, as transformers formats it."""
    assert files(ours) == files(theirs)
    for name in files(theirs):
        if name == "config.json":
            written, saved = read_json(theirs, name), read_json(ours, name)
            assert set(saved) - set(written) == CONFIG_ONLY_OURS
            assert set(written) - set(saved) == CONFIG_ONLY_THEIRS  # (use_cache, attention_dropout, ... minilora
            # left out before)
            assert {k: written[k] for k in saved if k in written} == {k: saved[k] for k in saved if k in written}
        elif name.endswith(".json"):
            text = open(os.path.join(ours, name), encoding="utf-8").read()
            assert text.replace(f'"{WRITER}"', f'"{transformers.__version__}"') == \
                open(os.path.join(theirs, name), encoding="utf-8").read(), name
        elif name.endswith(".safetensors"):
            assert header(os.path.join(ours, name)) == header(os.path.join(theirs, name)), name
            if same_values:
                with open(os.path.join(ours, name), "rb") as mine, open(os.path.join(theirs, name), "rb") as written:
                    assert mine.read() == written.read(), name  # (the header's text and the data's order too)


@pytest.mark.parametrize("dtype, options, config", [
    (None, {}, {}), ("bfloat16", {}, {}), (None, {"safe_serialization": False}, {}),
    (None, {"max_shard_size": "3KB"}, {}), (None, {}, {"tie_word_embeddings": True})],
    ids=["float32", "bfloat16", "safe_serialization=False", "sharded", "tied"])
def test_model_save_pretrained_writes_transformers_folder(tmp_path, dtype, options, config):
    theirs, ours = pair(dtype, **config)
    quiet(theirs.save_pretrained, str(tmp_path / "theirs"), **options)
    ours.save_pretrained(tmp_path / "ours", **options)
    assert_same_model_folder(tmp_path / "theirs", tmp_path / "ours")
    if "max_shard_size" in options:
        assert "model.safetensors.index.json" in os.listdir(tmp_path / "ours")
    # each library loads the other's folder: the same tensors
    loaded = quiet(transformers.LlamaForCausalLM.from_pretrained, str(tmp_path / "ours"))
    ours_loaded = models.LlamaForCausalLM.from_pretrained(tmp_path / "theirs")
    expected = {k: v.float().numpy() for k, v in theirs.state_dict().items()}
    for name, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value.float().numpy(), expected[name], err_msg=name)
    for name, value in ours_loaded.state_dict().items():
        np.testing.assert_array_equal(value.float().numpy(), expected[name], err_msg=name)
    assert loaded.generation_config.to_diff_dict() | {"transformers_version": None} == \
        theirs.generation_config.to_diff_dict() | {"transformers_version": None}


def test_config_json_differs_only_where_decided(tmp_path):
    """The pinned config.json difference: transformers reads both folders' config.json as the same config."""
    theirs, ours = pair()
    quiet(theirs.save_pretrained, str(tmp_path / "theirs"))
    ours.save_pretrained(tmp_path / "ours")
    read = [quiet(transformers.AutoConfig.from_pretrained, str(tmp_path / side)).to_dict() for side in ("ours", "theirs")]
    for config in read:
        config.pop("_name_or_path")
    assert read[0] == read[1]
    saved = read_json(tmp_path / "ours", "config.json")
    assert saved["rope_theta"] == saved["rope_parameters"]["rope_theta"]


def generation_config_text(model, folder):
    quiet(model.save_pretrained, str(folder))
    text = (folder / "generation_config.json").read_text()
    return text.replace(f'"{WRITER}"', f'"{transformers.__version__}"')


@pytest.mark.parametrize("setting", ["made", "output flags", "set by the user", "empty", "loaded"])
def test_generation_config_json_as_transformers_writes_it(tmp_path, setting):
    """The ids, the model config's flags (use_cache, output_*), _from_model_config and the writer's version, in
    transformers' key order and indentation; written for every causal LM, an empty config too. minilora wrote the
    ids only, and no file at all for an empty config."""
    theirs, ours = pair(**({"output_hidden_states": True, "use_cache": False} if setting == "output flags" else {}))
    if setting == "set by the user":
        theirs.generation_config = transformers.GenerationConfig(max_new_tokens=5, eos_token_id=[2, 3])
        ours.generation_config = ml.generate.GenerationConfig(max_new_tokens=5, eos_token_id=[2, 3])
    if setting == "empty":
        theirs.generation_config, ours.generation_config = transformers.GenerationConfig(), \
            ml.generate.GenerationConfig()
    if setting == "loaded":  # a folder without generation_config.json: its config.json's ids
        quiet(theirs.save_pretrained, str(tmp_path / "source"))
        os.remove(tmp_path / "source" / "generation_config.json")
        theirs = quiet(transformers.LlamaForCausalLM.from_pretrained, str(tmp_path / "source"))
        ours = models.LlamaForCausalLM.from_pretrained(tmp_path / "source")
    assert generation_config_text(ours, tmp_path / "ours") == generation_config_text(theirs, tmp_path / "theirs")
    assert read_json(tmp_path / "ours", "generation_config.json")["transformers_version"] == WRITER


@pytest.mark.parametrize("options", [{}, dict(max_new_tokens=5, sequence_bias={(1, 2): 1.0}),
                                     dict(do_sample=True, temperature=0.7, eos_token_id=[2, 3])])
def test_generation_config_json_api_as_transformers(tmp_path, options):
    """print(config), to_json_string (with ignore_metadata, keys_to_pop), to_diff_dict, to_json_file and
    save_pretrained(folder, config_file_name) as transformers' (minilora had save_pretrained(folder) alone and printed
    a Python dict)."""
    theirs, ours = transformers.GenerationConfig(**options), ml.generate.GenerationConfig(**options)
    assert repr(ours) == repr(theirs)
    as_theirs = lambda text: text.replace(f'"{WRITER}"', f'"{transformers.__version__}"')  # noqa: E731
    assert as_theirs(ours.to_json_string()) == theirs.to_json_string()
    assert ours.to_json_string(ignore_metadata=True, keys_to_pop=["max_new_tokens"]) == \
        theirs.to_json_string(ignore_metadata=True, keys_to_pop=["max_new_tokens"])
    assert ours.to_diff_dict() | {"transformers_version": None} == \
        theirs.to_diff_dict() | {"transformers_version": None}
    ours.to_json_file(tmp_path / "ours.json")
    theirs.to_json_file(tmp_path / "theirs.json")
    assert as_theirs((tmp_path / "ours.json").read_text()) == (tmp_path / "theirs.json").read_text()
    ours.save_pretrained(tmp_path / "ours", "sampling.json")
    theirs.save_pretrained(tmp_path / "theirs", "sampling.json")
    assert files(tmp_path / "ours") == files(tmp_path / "theirs") == ["sampling.json"]
    if "sequence_bias" not in options:  # (its tuple keys are strings in the file, in both)
        assert ml.generate.GenerationConfig.from_pretrained(tmp_path / "theirs", "sampling.json").to_dict() == \
            {**ours.to_dict(), "transformers_version": transformers.__version__}
    with pytest.raises(NotImplementedError, match="use_diff=False"):
        ours.to_json_string(use_diff=False)


def test_printed_model_generation_config_as_transformers():
    theirs, ours = pair()
    assert repr(ours.generation_config) == repr(theirs.generation_config)


def test_generate_returns_what_the_model_config_asks_for():
    """A model made with ``output_hidden_states=True``: transformers copies the flag into its generation config and
    generate returns its dict with the hidden states (return_dict_in_generate follows); minilora returned the ids."""
    theirs, ours = pair(output_hidden_states=True)
    expected = quiet(theirs.generate, torch.tensor([[1, 5, 9]]), max_new_tokens=3)
    got = quiet(ours.generate, ml.tensor([[1, 5, 9]]), max_new_tokens=3)
    assert type(got).__name__ == type(expected).__name__ == "GenerateDecoderOnlyOutput"
    assert list(got.keys()) == list(expected.keys())
    np.testing.assert_array_equal(got.sequences.numpy(), expected.sequences.numpy())
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    np.testing.assert_allclose(got.hidden_states[0][-1].numpy(), expected.hidden_states[0][-1].numpy(), atol=1e-5)


def test_merged_model_folder_as_peft_merges_it(tmp_path):
    theirs, ours = pair()
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(ours, ml_peft.LoraConfig(**config))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    quiet(theirs.merge_and_unload().save_pretrained, str(tmp_path / "theirs"))
    ours.merge_and_unload().save_pretrained(tmp_path / "ours")  # (W + s B A: a float32 product, BLAS's own rounding)
    assert_same_model_folder(tmp_path / "theirs", tmp_path / "ours", same_values=False)
    expected, got = tensors(tmp_path / "theirs", "model.safetensors"), tensors(tmp_path / "ours", "model.safetensors")
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)


# PEFT's save_pretrained: the adapter's files, compared as a user diffs them. The model card (README.md) is
# minilora's own short one, and target_modules is written sorted (PEFT writes its set in hash order, which changes
# from one process to the next): compared as sets.
PEFT_CASES = {
    "default": (dict(target_modules=["q_proj", "v_proj"]), {}),
    "modules_to_save": (dict(target_modules=["q_proj"], modules_to_save=["lm_head"]), {}),
    "embedding target, save_embedding_layers": (dict(target_modules=["q_proj", "embed_tokens"]),
                                                dict(save_embedding_layers=True)),
    "two adapters": (dict(target_modules=["q_proj", "v_proj"]), {"second": dict(r=2, target_modules=["k_proj"])}),
    "selected_adapters": (dict(target_modules=["q_proj"]), {"second": dict(r=2, target_modules=["k_proj"]),
                                                            "selected_adapters": ["second"]}),
    "safe_serialization=False": (dict(target_modules=["q_proj"]), {"second": dict(r=2, target_modules=["k_proj"]),
                                                                   "safe_serialization": False}),
}


def test_peft_bin_save_replaces_an_older_safetensors_adapter(tmp_path):
    """safe_serialization=False into a folder holding the same adapter as safetensors: PEFT (and minilora) load
    adapter_model.safetensors first, so an old one left beside the new adapter_model.bin would be loaded in its place;
    it goes with the save (subfolder adapters too)."""
    _, ours = pair()
    ours = ml_peft.get_peft_model(ours, ml_peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    ours.add_adapter("second", ml_peft.LoraConfig(r=2, target_modules=["k_proj"], init_lora_weights=False))
    ours.save_pretrained(tmp_path)
    with ml.no_grad():
        for name, parameter in ours.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)
    ours.save_pretrained(tmp_path, safe_serialization=False)
    assert files(tmp_path) == ["README.md", "adapter_config.json", "adapter_model.bin", "second/adapter_config.json",
                               "second/adapter_model.bin"]
    for folder in (tmp_path, tmp_path / "second"):
        loaded = quiet(peft.PeftModel.from_pretrained, pair()[0], str(folder))
        assert all((value == 0.5).all() for key, value in loaded.state_dict().items() if "lora_B" in key)


@pytest.mark.parametrize("case", list(PEFT_CASES))
def test_peft_save_pretrained_writes_peft_folder(tmp_path, case):
    config, options = PEFT_CASES[case]
    options = dict(options)
    second = options.pop("second", None)
    theirs, ours = pair()
    config = dict(r=4, lora_alpha=8, init_lora_weights=False, **config)
    torch.manual_seed(1)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(ours, ml_peft.LoraConfig(**config))
    if second:
        theirs.add_adapter("second", peft.LoraConfig(init_lora_weights=False, **second))
        ours.add_adapter("second", ml_peft.LoraConfig(init_lora_weights=False, **second))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    quiet(theirs.save_pretrained, str(tmp_path / "theirs"), **options)
    ours.save_pretrained(tmp_path / "ours", **options)
    names = files(tmp_path / "theirs")
    assert files(tmp_path / "ours") == names
    for name in names:
        mine, peft_file = tmp_path / "ours" / name, tmp_path / "theirs" / name
        if name.endswith(".json"):
            saved, written = read_json(tmp_path / "ours", name), read_json(tmp_path / "theirs", name)
            assert saved.pop("peft_version") == PEFT_WRITER and written.pop("peft_version") == peft.__version__
            assert set(saved.pop("target_modules")) == set(written.pop("target_modules"))
            assert saved == peft_config_file_as_022(written), name
        elif name.endswith(".safetensors"):
            assert header(mine) == header(peft_file), name
            got, expected = tensors(tmp_path / "ours", name), tensors(tmp_path / "theirs", name)
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
        elif name.endswith(".bin"):  # (torch's weights-only loader reads both: no pickled class in either)
            got, expected = torch.load(mine), torch.load(peft_file)
            assert {k: (v.dtype, v.shape) for k, v in got.items()} == {k: (v.dtype, v.shape) for k, v in expected.items()}
            for key in expected:
                np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy(), err_msg=key)
    # each library loads the other's adapter folder into a fresh base: the same adapter tensors
    adapter = "second" if options.get("selected_adapters") else None
    folder = lambda side: str(tmp_path / side / adapter) if adapter else str(tmp_path / side)  # noqa: E731
    reloaded_theirs = quiet(peft.PeftModel.from_pretrained, pair()[0], folder("ours"))
    reloaded_ours = ml_peft.PeftModel.from_pretrained(pair()[1], folder("theirs"))
    expected = {k: v.detach().float().numpy() for k, v in reloaded_theirs.state_dict().items() if "lora_" in k}
    got = {k: v.float().numpy() for k, v in reloaded_ours.state_dict().items() if "lora_" in k}
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_tokenizer_folder_loads_the_same_in_both(tmp_path):
    """Pinned: tokenizer.json is transformers' text; tokenizer_config.json names PreTrainedTokenizerFast for a class
    whose pipeline minilora rebuilt (transformers then runs the saved file as written: the same ids), and records
    padding_side, truncation_side and pad_token; transformers writes the class and, from its loading call, is_local
    and local_files_only. Each library reads the other's folder into the same ids and padding side."""
    from minilora.tokenizer import from_pretrained as ml_tokenizer
    from test_hf_tutorials_r9 import _llama2_style_tokenizer
    (tmp_path / "source").mkdir()
    source = _llama2_style_tokenizer(tmp_path / "source")
    quiet(transformers.AutoTokenizer.from_pretrained, str(source)).save_pretrained(str(tmp_path / "theirs"))
    ml_tokenizer(source).save_pretrained(tmp_path / "ours")
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs"))
    assert (tmp_path / "ours" / "tokenizer.json").read_text() == (tmp_path / "theirs" / "tokenizer.json").read_text()
    saved, written = (read_json(tmp_path / side, "tokenizer_config.json") for side in ("ours", "theirs"))
    assert saved.pop("tokenizer_class") == "PreTrainedTokenizerFast" and written.pop("tokenizer_class") == "LlamaTokenizer"
    assert set(saved) - set(written) == {"pad_token", "padding_side", "truncation_side"}
    assert set(written) - set(saved) == {"add_prefix_space", "backend", "is_local", "local_files_only",
                                         "use_default_system_prompt"}
    assert {k: saved[k] for k in written if k in saved} == {k: written[k] for k in written if k in saved}
    texts = ["Hello world, tokens!", "a b  c"]
    for side in ("ours", "theirs"):
        expected = quiet(transformers.AutoTokenizer.from_pretrained, str(tmp_path / side))
        got = ml_tokenizer(tmp_path / side)
        assert got.padding_side == expected.padding_side
        assert got(texts)["input_ids"] == expected(texts)["input_ids"], side


CHAT = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
TOOL_CHAT = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if tools %} with tools{% endif %}"
TOOLS = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]


@pytest.mark.parametrize("template", [CHAT, {"default": CHAT, "tool_use": TOOL_CHAT}, {"a": CHAT, "b": TOOL_CHAT}],
                         ids=["one", "default and tool_use", "named only"])
def test_chat_templates_saved_and_read_as_transformers_files(tmp_path, template):
    """transformers 5 saves a chat template as chat_template.jinja, named ones as additional_chat_templates/<name>.jinja,
    and reads those files first. minilora wrote the template into tokenizer_config.json and never read the files: a
    transformers-saved chat model's tokenizer had no template (apply_chat_template refused), named templates failed."""
    from minilora.tokenizer import from_pretrained as ml_tokenizer
    from test_hf_tutorials_r9 import _llama2_style_tokenizer
    (tmp_path / "source").mkdir()
    source = _llama2_style_tokenizer(tmp_path / "source")
    theirs, ours = quiet(transformers.AutoTokenizer.from_pretrained, str(source)), ml_tokenizer(source)
    theirs.chat_template = ours.chat_template = template
    written = theirs.save_pretrained(str(tmp_path / "theirs"))
    saved = ours.save_pretrained(str(tmp_path / "ours"))
    assert [os.path.relpath(path, tmp_path / "ours") for path in saved] == \
        [os.path.relpath(path, tmp_path / "theirs") for path in written]  # (the paths it returns, in its order)
    assert files(tmp_path / "ours") == files(tmp_path / "theirs")
    for name in files(tmp_path / "theirs"):
        if name.endswith(".jinja"):
            assert (tmp_path / "ours" / name).read_text() == (tmp_path / "theirs" / name).read_text()
    assert "chat_template" not in read_json(tmp_path / "ours", "tokenizer_config.json")
    messages = [{"role": "user", "content": "hi"}]
    for side in ("ours", "theirs"):
        expected_tokenizer = quiet(transformers.AutoTokenizer.from_pretrained, str(tmp_path / side))
        got_tokenizer = ml_tokenizer(tmp_path / side)
        assert got_tokenizer.chat_template == expected_tokenizer.chat_template
        for call in ({}, {"tools": TOOLS}, {"chat_template": "b"}):
            try:
                expected = expected_tokenizer.apply_chat_template(messages, tokenize=False, **call)
            except ValueError as exc:
                with pytest.raises(ValueError, match="multiple chat templates with no default specified"):
                    got_tokenizer.apply_chat_template(messages, tokenize=False, **call)
                assert "multiple chat templates" in str(exc)
                continue
            assert got_tokenizer.apply_chat_template(messages, tokenize=False, **call) == expected


def test_tokenizer_config_json_text_as_transformers_formats_it(tmp_path):
    """Keys sorted, two-space indent, characters as they are (a "▁" is not written \\u2581), a final newline."""
    from minilora.tokenizer import from_pretrained as ml_tokenizer
    from test_hf_tutorials_r9 import _llama2_style_tokenizer
    (tmp_path / "source").mkdir()
    tokenizer = ml_tokenizer(_llama2_style_tokenizer(tmp_path / "source"))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<▁tool>"]})
    tokenizer.save_pretrained(tmp_path / "ours")
    text = (tmp_path / "ours" / "tokenizer_config.json").read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert "<▁tool>" in text


def run_trainer(lib, output_dir, base, save_only_model=False):
    model = quiet(transformers.LlamaForCausalLM.from_pretrained, str(base)) if lib is transformers else \
        models.LlamaForCausalLM.from_pretrained(base)
    args = lib.TrainingArguments(output_dir=str(output_dir), report_to="none", disable_tqdm=True, max_steps=2,
                                 save_steps=1, per_device_train_batch_size=3, learning_rate=1e-2, logging_steps=1,
                                 save_only_model=save_only_model, hub_token="hf_secret")
    trainer = lib.Trainer(model=model, args=args, train_dataset=examples(6, ragged=False),
                          data_collator=collator(torch.tensor if lib is transformers else ml.tensor))
    quiet(trainer.train)
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The same two-step run with each Trainer (a checkpoint a step), then ``save_model()`` and ``save_state()``."""
    base = save_tiny_llama(tmp_path_factory.mktemp("base"))
    folders = {}
    for lib, side in ((transformers, "theirs"), (ml_trainer, "ours")):
        folder = tmp_path_factory.mktemp(side)
        trainer = run_trainer(lib, folder, base)
        quiet(trainer.save_model)
        trainer.save_state()
        folders[side] = folder
    return base, folders


def test_trainer_folders_as_transformers_writes_them(trained):
    """output_dir after save_model and each checkpoint-N: the same names, JSON and safetensors headers as
    transformers'; optimizer.pt, scheduler.pt and rng_state.pth the same structure under torch.load."""
    _base, folders = trained
    theirs, ours = folders["theirs"], folders["ours"]
    assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
    for sub in ("", "checkpoint-1", "checkpoint-2"):
        names = [name for name in os.listdir(theirs / sub) if os.path.isfile(theirs / sub / name)]
        assert sorted(name for name in os.listdir(ours / sub) if os.path.isfile(ours / sub / name)) == sorted(names)
        model_files = [name for name in names if name.endswith((".json", ".safetensors")) and
                       name != "trainer_state.json"]
        for name in model_files:
            if name.endswith(".safetensors"):
                assert header(ours / sub / name) == header(theirs / sub / name)
        generation = [read_json(side / sub, "generation_config.json") for side in (ours, theirs)]
        assert generation[0] | {"transformers_version": None} == generation[1] | {"transformers_version": None}
        state = [read_json(side / sub, "trainer_state.json") for side in (ours, theirs)]  # (save_state's in output_dir)
        assert {k: v for k, v in state[0].items() if k != "log_history"} == \
            {k: v for k, v in state[1].items() if k != "log_history"}
        assert [sorted(entry) for entry in state[0]["log_history"]] == [sorted(entry) for entry in state[1]["log_history"]]
        loaded = quiet(transformers.LlamaForCausalLM.from_pretrained, str(ours / sub))  # (ours, read by transformers)
        for name, value in tensors(ours / sub, "model.safetensors").items():
            np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value, err_msg=name)
        if sub:
            for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
                saved = torch.load(ours / sub / name, weights_only=False)
                written = torch.load(theirs / sub / name, weights_only=False)
                assert sorted(saved) == sorted(written), name
            saved = torch.load(ours / sub / "optimizer.pt")
            written = torch.load(theirs / sub / "optimizer.pt")
            assert saved["param_groups"][0].keys() == written["param_groups"][0].keys()
            assert [sorted(s) for s in saved["state"].values()] == [sorted(s) for s in written["state"].values()]


def test_training_args_bin_holds_transformers_values_without_the_token(trained):
    """Pinned: training_args.bin is ``args.to_dict()`` (its None values left out) in torch.save's format, loadable
    with torch's default ``weights_only=True``, where transformers pickles the TrainingArguments object (readable
    only with ``weights_only=False`` and transformers installed). Its values are transformers' ``to_dict()``'s -- the
    hub token as transformers' placeholder; minilora wrote the token itself into the file."""
    _base, folders = trained
    saved = torch.load(folders["ours"] / "training_args.bin")
    written = torch.load(folders["theirs"] / "training_args.bin", weights_only=False).to_dict()
    assert saved["hub_token"] == written["hub_token"] == "<HUB_TOKEN>"
    assert b"hf_secret" not in (folders["ours"] / "training_args.bin").read_bytes()
    shared = set(saved) - {"output_dir", "logging_dir"}
    assert {k: saved[k] for k in shared} == {k: written[k] for k in shared}


def test_training_arguments_to_json_string_as_transformers():
    """The same text: accelerator_config is accelerate's defaults (minilora wrote null), a token its placeholder
    (minilora wrote the secret); the dict read back makes the same arguments."""
    options = dict(output_dir="out", report_to="none", learning_rate=1e-3, max_steps=3, hub_token="hf_secret")
    theirs, ours = transformers.TrainingArguments(**options), ml_trainer.TrainingArguments(**options)
    assert ours.to_json_string() == theirs.to_json_string()
    again = ml_trainer.TrainingArguments(**{**json.loads(ours.to_json_string()), "hub_token": "hf_secret"})
    assert again == ours


def test_save_model_writes_into_output_dir_leaving_the_rest_alone(tmp_path, monkeypatch):
    """On a filesystem without hard links, save_model does not copy every checkpoint into a new output_dir (a full
    copy of the run per save): its files replace their old versions in the folder, as transformers writes them, and
    the checkpoints, the folder itself and a user's file stay as they are; a previous save's shards go. (With hard
    links the folder is swapped as one unit: test_faults_r24.)"""
    base = save_tiny_llama(tmp_path / "base")
    trainer = run_trainer(ml_trainer, tmp_path / "out", base)
    out = tmp_path / "out"
    (out / "notes.txt").write_text("mine")
    for i in (1, 2):  # an earlier sharded save of another model
        (out / f"model-0000{i}-of-00002.safetensors").write_bytes(b"old")
    (out / "model.safetensors.index.json").write_text("{}")
    before = {path: os.stat(out / path).st_ino for path in ("", "checkpoint-1", "checkpoint-1/optimizer.pt")}

    def no_hard_links(*args, **kwargs):  # a filesystem without them (FAT, some network mounts)
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_hard_links)
    trainer.save_model()
    assert {path: os.stat(out / path).st_ino for path in before} == before
    assert sorted(os.listdir(out)) == ["checkpoint-1", "checkpoint-2", "config.json", "generation_config.json",
                                       "model.safetensors", "notes.txt", "training_args.bin"]
    loaded = models.LlamaForCausalLM.from_pretrained(out)
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value.numpy(), err_msg=name)


def test_save_model_that_fails_leaves_each_file_whole(tmp_path, monkeypatch):
    """Atomic per file: a save_model stopped after the model's files (here training_args.bin's write fails) leaves
    every file of the previous save whole and loadable, and no temporary folder behind."""
    base = save_tiny_llama(tmp_path / "base")
    trainer = run_trainer(ml_trainer, tmp_path / "out", base, save_only_model=True)
    out = tmp_path / "out"
    trainer.save_model()
    previous = {name: (out / name).read_bytes() for name in os.listdir(out) if (out / name).is_file()}
    trainer.model.model.norm.weight.data.fill_(2.0)  # (the next save would write other weights)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    import minilora.serialization as serialization
    monkeypatch.setattr(serialization, "save", full_disk)
    with pytest.raises(OSError):
        trainer.save_model()
    assert {name: (out / name).read_bytes() for name in os.listdir(out) if (out / name).is_file()} == previous
    assert sorted(os.listdir(out)) == sorted([*previous, "checkpoint-1", "checkpoint-2"])
    models.LlamaForCausalLM.from_pretrained(out)
