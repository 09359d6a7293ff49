"""Round 30: what PEFT 0.22.0 changed, which minilora now follows (setup.py pins peft==0.22.0).

Each test checks minilora's 0.22 behaviour by itself, and, where the installed PEFT is 0.22, side by side with
it; against PEFT 0.21.2 the comparison is the named difference of tests/peft_versions.py. One 0.22 change is
a regression minilora does not follow: its MultiheadAttention unmerge rewrites the weight the forward saved for
backward (see test_peft_r7.peft_mha_fixed). Skipped when torch / transformers / peft are not installed.
"""
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from packaging.version import Version  # noqa: E402

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

from test_peft_custom_r6 import TOL, pair, run_both  # noqa: E402
from test_peft_fields_r13 import BASE, LIBRARIES, llama  # noqa: E402
from test_peft_r7 import attention  # noqa: E402
from peft_versions import PEFT_022, as_of_peft, conv_lora_as_022  # noqa: E402


def quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


# ==================================================================================================
# LoraConfig: 0.22's new field and inits
# ==================================================================================================
def test_astra_config_is_written_and_astra_refused_by_name():
    """0.22's astra_config is written (None), anything else refused by name, as init_lora_weights='astra'
    (it needs preprocess_astra's activation statistics, which minilora does not compute)."""
    assert ml_peft.LoraConfig().to_dict()["astra_config"] is None
    if PEFT_022:
        assert set(ml_peft.LoraConfig().to_dict()) == set(peft.LoraConfig().to_dict())
    with pytest.raises(NotImplementedError, match="astra_config"):
        ml_peft.LoraConfig(astra_config={"cache_file": "x"})
    with pytest.raises(ValueError, match="init_lora_weights='astra'.*preprocess_astra"):
        ml_peft.LoraConfig(init_lora_weights="astra")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nora_init_is_peft_022s_bit_for_bit(dtype):
    """NoRA: A's columns scaled to unit L2 norm (torch's float32 norm, summed row after row), B = 0."""
    def build(lib):
        lib.manual_seed(0)
        return lib.nn.Sequential(lib.nn.Linear(20, 16), lib.nn.ReLU(), lib.nn.Linear(16, 4)).to(getattr(lib, dtype))
    config = dict(r=4, lora_alpha=4, target_modules=["0", "2"], init_lora_weights="nora")
    ml.manual_seed(3)
    ours = ml_peft.get_peft_model(build(ml), ml_peft.LoraConfig(**config))
    A = ours.base_model.model[0].lora_A["default"].weight.float().numpy()
    assert not ours.base_model.model[0].lora_B["default"].weight.float().numpy().any()
    if dtype == "float32":
        np.testing.assert_allclose(np.linalg.norm(A, axis=0), 1.0, rtol=1e-6)
    if PEFT_022:
        torch.manual_seed(3)
        theirs = peft.get_peft_model(build(torch), peft.LoraConfig(**config))
        np.testing.assert_array_equal(A, theirs.base_model.model[0].lora_A["default"].weight.detach().float().numpy())


def test_peft_type_names_paca():
    assert ml_peft.PeftType.PACA == "PACA"
    assert [m.name for m in ml_peft.PeftType] == [m.name for m in peft.PeftType] + as_of_peft(["PACA"], [])


# ==================================================================================================
# Trainability and train/eval modes
# ==================================================================================================
def test_adalora_ranknum_is_frozen_on_a_float64_base():
    options = dict(init_r=4, target_r=2, total_step=8, target_modules=["q_proj", "v_proj"])
    ours = ml_peft.get_peft_model(llama(ml), ml_peft.AdaLoraConfig(**options))
    ranknums = [(n, p.requires_grad) for n, p in ours.named_parameters() if ".ranknum." in n]
    assert ranknums and not any(trains for _, trains in ranknums)
    if PEFT_022:
        theirs = peft.get_peft_model(llama(torch), peft.AdaLoraConfig(**options))
        assert sorted(n for n, p in ours.named_parameters() if p.requires_grad) == \
            sorted(n for n, p in theirs.named_parameters() if p.requires_grad)


def test_an_adapter_activated_in_eval_mode_does_not_drop_out():
    """0.22: set_adapter puts the adapter's Dropout in the layer's mode (0.21's kept training after eval())."""
    states = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = lib_peft.get_peft_model(llama(lib), lib_peft.LoraConfig(**BASE))
        model.eval()
        model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, lora_dropout=0.5)))
        dropout = model.base_model.model.model.layers[0].self_attn.q_proj.lora_dropout["other"]
        states[name] = [dropout.training]
        model.set_adapter("other")
        states[name].append(dropout.training)
    assert states["minilora"] == [True, False]  # (made for training, as its config says; then the layer's mode)
    assert states["torch"] == as_of_peft([True, True], states["minilora"])


# ==================================================================================================
# Task heads, modules_to_save, unload
# ==================================================================================================
def test_seq_cls_adds_pre_classifier_once_in_a_new_list():
    given = ["score"]
    config = ml_peft.LoraConfig(task_type="SEQ_CLS", r=2, modules_to_save=given)
    ml_peft.get_peft_model(ml.models.LlamaForSequenceClassification(ml.models.LlamaConfig(
        vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=0)), config)
    assert given == ["score"] and config.modules_to_save == ["score", "classifier", "pre_classifier"]


def test_modules_to_save_names_whole_dotted_parts():
    """"norm" is model.norm, not every "...layernorm" (0.21's bare suffix match wrapped those too)."""
    ours = ml_peft.get_peft_model(llama(ml), ml_peft.LoraConfig(**dict(BASE, modules_to_save=["norm"])))
    wrapped = sorted(n for n, m in ours.named_modules() if type(m).__name__ == "ModulesToSaveWrapper")
    assert wrapped == ["base_model.model.model.norm"]
    if PEFT_022:
        theirs = peft.get_peft_model(llama(torch), peft.LoraConfig(**dict(BASE, modules_to_save=["norm"])))
        assert wrapped == sorted(n for n, m in theirs.named_modules() if type(m).__name__ == "ModulesToSaveWrapper")


def test_unload_gives_the_original_module_back():
    """unload(): the model as it came; merge_and_unload(): the trained copy (0.21's unload kept it too)."""
    for method in ("unload", "merge_and_unload"):
        ours = ml_peft.get_peft_model(llama(ml), ml_peft.LoraConfig(**dict(BASE, modules_to_save=["lm_head"])))
        wrapper = ours.base_model.model.lm_head
        kept = {"unload": wrapper.original_module, "merge_and_unload": wrapper.modules_to_save["default"]}[method]
        assert getattr(ours, method)().lm_head is kept, method


# ==================================================================================================
# Loading: strict_adapter_check, PEFT-parseable peft_version, MultiheadAttention files of PEFT < 0.22
# ==================================================================================================
def test_strict_adapter_check(tmp_path):
    model = ml_peft.get_peft_model(llama(ml), ml_peft.LoraConfig(**BASE), adapter_name="a")
    model.save_pretrained(str(tmp_path))
    other = ml_peft.get_peft_model(llama(ml), ml_peft.LoraConfig(**BASE), adapter_name="first")
    with pytest.raises(ValueError, match="strict_adapter_check must be one of"):
        other.load_adapter(str(tmp_path / "a"), adapter_name="a", strict_adapter_check="loud")
    # "a" is inside the prefix "lora_": PEFT's filter by name counts adapter "first"'s keys as missing
    with pytest.raises(RuntimeError, match="Error\\(s\\) in loading adapter 'a' state_dict: found missing adapter"):
        quiet(lambda: other.load_adapter(str(tmp_path / "a"), adapter_name="a", strict_adapter_check="error"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other.load_adapter(str(tmp_path / "a"), adapter_name="a2", strict_adapter_check="ignore")


def test_set_adapter_with_a_list_names_the_mistake():
    model = ml_peft.get_peft_model(llama(ml), ml_peft.LoraConfig(**BASE))
    with pytest.raises(TypeError, match="only supports a single adapter name as a string"):
        model.set_adapter(["default"])


def mha_pair(tmp_path, peft_version=None):
    """A minilora MultiheadAttention adapter saved (random A and B), its file's peft_version set if given."""
    theirs_base, ours_base = pair(attention)
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(target_modules=["self_attn"], r=2,
                                                                init_lora_weights=False))
    ours.save_pretrained(str(tmp_path))
    if peft_version is not None:
        path = tmp_path / "adapter_config.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), peft_version=peft_version)))
    return theirs_base, ours


def test_peft_version_is_one_peft_022_parses(tmp_path):
    """PEFT 0.22 parses peft_version when it loads a MultiheadAttention adapter ("minilora-0.1.0" raised
    InvalidVersion): minilora writes the PEFT release it mirrors, its own version as a local label."""
    theirs_base, ours = mha_pair(tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())["peft_version"]
    assert Version(written).public == "0.22.0" and Version(written).local == f"minilora.{ml.__version__}"
    if PEFT_022:
        x = np.random.default_rng(0).standard_normal((2, 5, 6))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (no doubling: minilora counts out_proj's update once, as 0.22)
            loaded = peft.PeftModel.from_pretrained(theirs_base, str(tmp_path))
        t, m = run_both(loaded, ours, x)
        np.testing.assert_allclose(m, t, rtol=0, atol=TOL)


def test_mha_file_of_peft_before_022_gets_out_proj_doubled(tmp_path):
    """PEFT < 0.22 added out_proj's update twice (#3774): loading its file doubles lora_B there, as 0.22 does
    (a 0.21 dev build after the fix, 0.22's and minilora's files are taken as they are)."""
    _, ours = mha_pair(tmp_path)
    path = tmp_path / "adapter_config.json"
    config = json.loads(path.read_text())
    config.pop("peft_version")
    key = "base_model.model.self_attn.base_layer.out_proj.lora_B.default.weight"
    for written, doubled in (("0.21.2", True), (None, True), ("0.22.0", False), ("0.21.2.dev0@abc", False),
                             ("minilora-0.1.0", False)):
        path.write_text(json.dumps(config if written is None else dict(config, peft_version=written)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = ml_peft.PeftModel.from_pretrained(pair(attention)[1], str(tmp_path))
        said = [str(w.message) for w in caught if "applied the out_proj LoRA weights" in str(w.message)]
        assert len(said) == doubled, written
        saved, got = ours.state_dict()[key].numpy(), loaded.state_dict()[key].numpy()
        np.testing.assert_array_equal(got, 2 * saved if doubled else saved, err_msg=str(written))


def test_mha_lora_bias_refused_in_peft_022s_words():
    with pytest.raises(ValueError, match="MultiheadAttention does not support lora_bias=True"):
        ml_peft.get_peft_model(pair(attention)[1], ml_peft.LoraConfig(target_modules=["self_attn"], lora_bias=True))


# ==================================================================================================
# Convolutions: lora_A with the base's dilation and padding_mode
# ==================================================================================================
def dilated_and_reflected(nn, dtype):
    class Convs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=2, dilation=2, padding_mode="reflect", dtype=dtype)
            self.b = nn.Conv1d(4, 2, 3, dilation=3, dtype=dtype)

        def forward(self, x):
            return self.b(self.a(x).flatten(2))
    return Convs()


def test_dilated_and_reflect_padded_convs_as_peft_022():
    theirs_base, ours_base = pair(dilated_and_reflected)
    config = dict(target_modules=["a", "b"], r=2, init_lora_weights=False)
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    A = ours.base_model.model.a.lora_A["default"]
    assert (A.dilation, A.padding_mode) == ((2, 2), "reflect")
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6))
    unmerged = ours(ml.tensor(x)).detach().numpy()
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    assert conv_lora_as_022(theirs) == as_of_peft(2, 0)
    theirs.load_state_dict({k: torch.as_tensor(v.numpy()) for k, v in ours.state_dict().items()})
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    merged = ours.merge_and_unload()(ml.tensor(x)).detach().numpy()  # s B A merges into the dilated kernel
    np.testing.assert_allclose(merged, unmerged, rtol=0, atol=1e-12)


# ==================================================================================================
# add_weighted_adapter
# ==================================================================================================
def test_add_weighted_adapter_refuses_dora_and_combines_lora_biases():
    for lib, lib_peft in LIBRARIES.values():
        if lib is torch and not PEFT_022:
            continue  # (0.21 combined DoRA's A and B only, and dropped the biases: tests/peft_versions.py)
        model = lib_peft.get_peft_model(llama(lib), lib_peft.LoraConfig(**dict(BASE, use_dora=True)))
        model.add_adapter("other", lib_peft.LoraConfig(**BASE))
        with pytest.raises(ValueError, match="does not support DoRA \\(problematic adapter 'default'\\)"):
            model.add_weighted_adapter(["default", "other"], [0.5, 0.5], "mix", combination_type="cat")
    models = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = lib_peft.get_peft_model(llama(lib), lib_peft.LoraConfig(**dict(BASE, lora_bias=True,
                                                                                use_rslora=True)))
        lib.manual_seed(4)
        quiet(lambda: model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, lora_bias=True))))
        for layer_name, start in (("default", 1.0), ("other", -0.25)):  # "trained" biases, the same on both sides
            bias = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B[layer_name].bias
            bias.data = lib.tensor(np.linspace(start, start + 1.0, bias.shape[0]))
        model.add_weighted_adapter(["default", "other"], [0.7, 0.3], "mix", combination_type="cat")
        models[name] = model
    layer = models["minilora"].base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["mix"] == 1.0 and not models["minilora"].peft_config["mix"].use_rslora
    biases = {name: layer.lora_B[name].bias.numpy() for name in ("default", "other")}
    want = 0.7 * layer.scaling["default"] * biases["default"] + 0.3 * layer.scaling["other"] * biases["other"]
    np.testing.assert_allclose(layer.lora_B["mix"].bias.numpy(), want, rtol=1e-12)
    if PEFT_022:
        theirs = models["torch"].base_model.model.model.layers[0].self_attn.q_proj.lora_B["mix"].bias
        np.testing.assert_array_equal(layer.lora_B["mix"].bias.numpy(), theirs.detach().numpy())


def test_loftq_config_of_another_type_is_refused_by_name():
    """Found on the way (a corrupted adapter_config.json holding "loftq_config": 0): kept and written back."""
    with pytest.raises(TypeError, match="loftq_config must be a LoftQConfig, a dict or None"):
        ml_peft.LoraConfig(loftq_config=0)


def test_prepare_model_for_kbit_training_takes_022s_keyword():
    """0.22 renamed gradient_checkpointing_kwargs to activation_checkpointing_kwargs (the old one warns)."""
    model = ml.nn.Linear(2, 2)
    assert ml_peft.prepare_model_for_kbit_training(model, activation_checkpointing_kwargs={"use_reentrant": False}) \
        is model
    with pytest.warns(FutureWarning, match="activation_checkpointing_kwargs"):
        ml_peft.prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(ValueError, match="at the same time"):
        ml_peft.prepare_model_for_kbit_training(model, activation_checkpointing_kwargs={"a": 1},
                                                gradient_checkpointing_kwargs={"a": 1})
    if PEFT_022:
        import inspect
        assert list(inspect.signature(ml_peft.prepare_model_for_kbit_training).parameters) == \
            list(inspect.signature(peft.prepare_model_for_kbit_training).parameters)


def test_rank_pattern_order_survives_save_and_load(tmp_path):
    """The first matching rank_pattern key wins, so its order is kept in adapter_config.json (0.22; 0.21 sorted
    it: {"q_proj": 3, "proj": 2} came back as {"proj": 2, "q_proj": 3}, q_proj then rank 2 against a rank-3 file)."""
    config = dict(BASE, rank_pattern={"q_proj": 3, "proj": 2}, alpha_pattern={"v_proj": 5, "proj": 7})
    ours = ml_peft.get_peft_model(llama(ml), ml_peft.LoraConfig(**config))
    ours.save_pretrained(str(tmp_path / "ours"))
    written = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert list(written["rank_pattern"]) == ["q_proj", "proj"] and list(written["alpha_pattern"]) == ["v_proj", "proj"]
    loaded = ml_peft.PeftModel.from_pretrained(llama(ml), str(tmp_path / "ours"))
    assert loaded.base_model.model.model.layers[0].self_attn.q_proj.r["default"] == 3
    if PEFT_022:
        theirs = peft.get_peft_model(llama(torch), peft.LoraConfig(**config))
        theirs.save_pretrained(str(tmp_path / "peft"))
        peft_written = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
        assert list(peft_written["rank_pattern"]) == list(written["rank_pattern"])
