"""PEFT 0.21 side by side with minilora, round 8. minilora draws torch's numbers now, so both libraries are
seeded alike and must hold the SAME adapter weights after get_peft_model (nothing copied across):

* PiSSA ("pissa", "pissa_niter_K") and OLoRA with r > min(out, in): PEFT's adapter is min(out, in) wide
  (its SVD / QR has no more components; ``layer.r`` and the scaling keep r); minilora failed with NumPy's
  broadcast error;
* TrainableTokensConfig on a plain nn.Module (minilora: AttributeError get_input_embeddings);
* ``peft_type`` / ``task_type``: PEFT's str enums (``PeftType.LORA`` in the config, its 45 members);
* add_weighted_adapter with DoRA adapters: PEFT combines A and B and makes the new adapter from the first
  adapter's config (a DoRA adapter when that one is, its magnitude from its own init); minilora refused;
* init_lora_weights="Gaussian" / "OLoRA": PEFT compares these two case-insensitively; minilora refused.

The models are test_peft_custom_r6's small custom models (torch's weights copied into minilora's).
Skipped when torch / peft are not installed."""
import dataclasses
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

from test_peft_custom_r6 import INPUTS, TOL, mlp, nested, pair, run_both, train, trainable  # noqa: E402
from peft_versions import PEFT_022, as_of_peft  # noqa: E402


def seeded(build, config, seed=3, dtype="float64", config_class="LoraConfig"):
    """The same model in both libraries, each library's adapter drawn from its own generator, same seed."""
    theirs_base, ours_base = pair(build) if dtype == "float64" else pair32(build)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(theirs_base, getattr(peft, config_class)(**config))
        ml.manual_seed(seed)
        ours = ml_peft.get_peft_model(ours_base, getattr(ml_peft, config_class)(**config))
    return theirs, ours


def pair32(build, seed=0):
    """test_peft_custom_r6's pair in float32 (PEFT factorises float32/16-bit weights only)."""
    torch.manual_seed(seed)
    theirs = build(torch.nn, torch.float32)
    ours = build(ml.nn, ml.float32)
    ours.load_state_dict({k: ml.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return theirs, ours


def states(theirs, ours):
    return ({k: v.detach().numpy() for k, v in theirs.state_dict().items()},
            {k: v.numpy() for k, v in ours.state_dict().items()})


def assert_same_state(theirs, ours, atol=TOL, rtol=0):
    theirs_sd, ours_sd = states(theirs, ours)
    assert sorted(ours_sd) == sorted(theirs_sd)
    for key, value in theirs_sd.items():
        assert ours_sd[key].shape == value.shape and ours_sd[key].dtype == value.dtype, key
        np.testing.assert_allclose(ours_sd[key], value, rtol=rtol, atol=atol, err_msg=key)
    assert trainable(ours) == trainable(theirs)


def assert_same_files(tmp_path, theirs, ours, atol=TOL):
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours.save_pretrained(str(tmp_path / "ours"))
    loaded = [safetensors_numpy.load_file(str(tmp_path / side / "adapter_model.safetensors"))
              for side in ("theirs", "ours")]
    assert sorted(loaded[1]) == sorted(loaded[0])
    for key, value in loaded[0].items():
        assert loaded[1][key].shape == value.shape and loaded[1][key].dtype == value.dtype, key
        np.testing.assert_allclose(loaded[1][key], value, rtol=0, atol=atol, err_msg=key)
    return [json.load(open(tmp_path / side / "adapter_config.json")) for side in ("theirs", "ours")]


# ==================================================================================================
# PiSSA / OLoRA with r > min(out, in)
# ==================================================================================================
def align_signs(theirs, ours):
    """A singular (or QR) pair is defined up to its sign and two LAPACKs may pick either: flip minilora's
    rank-1 pairs (row i of A with column i of B) to PEFT's. B A, the residual and training do not see it."""
    theirs_sd, ours_sd = states(theirs, ours)
    for name in [n for n in theirs_sd if ".lora_A." in n]:
        flip = np.sign((ours_sd[name] * theirs_sd[name]).sum(axis=1))
        b_name = name.replace(".lora_A.", ".lora_B.")
        ours_sd[name], ours_sd[b_name] = ours_sd[name] * flip[:, None], ours_sd[b_name] * flip[None, :]
    return theirs_sd, ours_sd


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_2", "olora"])
def test_weight_mutating_init_with_a_rank_above_the_layer_size_as_peft(tmp_path, init):
    """MLP layers 16x20, 16x16 and 2x16 with r=20: PEFT's factors are 16, 16 and 2 wide."""
    config = dict(r=20, lora_alpha=10, target_modules=["seq.0", "seq.2", "seq.4"], init_lora_weights=init)
    theirs, ours = seeded(mlp, config, dtype="float32")
    theirs_sd, ours_sd = align_signs(theirs, ours)
    assert sorted(ours_sd) == sorted(theirs_sd)
    assert ours_sd["base_model.model.seq.4.lora_A.default.weight"].shape == (2, 16)
    for key, value in theirs_sd.items():  # lora_A, lora_B and the residual base weights
        assert ours_sd[key].shape == value.shape and ours_sd[key].dtype == value.dtype, key
        np.testing.assert_allclose(ours_sd[key], value, rtol=2e-4, atol=2e-5, err_msg=key)
    ours_layer = ours.base_model.model.seq[4]
    assert ours_layer.r["default"] == theirs.base_model.model.seq[4].r["default"] == 20
    assert ours_layer.scaling["default"] == theirs.base_model.model.seq[4].scaling["default"] == 0.5
    x = INPUTS[mlp](np.random.default_rng(1)).astype(np.float32)
    with torch.no_grad():  # W_res + s B A = W0: the output of the base model
        base = pair32(mlp)[0](torch.as_tensor(x)).numpy()
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, base, rtol=0, atol=1e-5)
    np.testing.assert_allclose(t, base, rtol=0, atol=1e-5)
    train(theirs, ours, x, steps=2)
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-4)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours.save_pretrained(str(tmp_path / "ours"))
    files = [safetensors_numpy.load_file(str(tmp_path / side / "adapter_model.safetensors"))
             for side in ("theirs", "ours")]
    assert {k: (v.shape, v.dtype) for k, v in files[1].items()} == {k: (v.shape, v.dtype) for k, v in files[0].items()}


def test_pissa_with_a_wide_rank_saved_as_plain_lora_for_the_original_base(tmp_path):
    """``path_initial_model_for_weight_conversion`` on such an adapter: PEFT's own conversion stops with a
    size mismatch (it loads the narrow initial factors into a fresh rank-r adapter). minilora pads the narrow
    factors with zero ranks up to r, so [A; A0] and [B, -B0] are the rank-2r LoRA the config says (r and
    alpha doubled), and PEFT loads it onto the original base."""
    config = dict(r=20, lora_alpha=10, target_modules=["seq.0", "seq.4"], init_lora_weights="pissa")
    _, ours = seeded(mlp, config, dtype="float32")
    ours.save_pretrained(str(tmp_path / "initial"))
    x = INPUTS[mlp](np.random.default_rng(1)).astype(np.float32)
    optimizer = ml.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    (ours(ml.tensor(x)) ** 2).mean().backward()
    optimizer.step()
    with ml.no_grad():
        trained = ours(ml.tensor(x)).numpy()
    ours.save_pretrained(str(tmp_path / "converted"),
                         path_initial_model_for_weight_conversion=str(tmp_path / "initial"))
    saved = safetensors_numpy.load_file(str(tmp_path / "converted" / "adapter_model.safetensors"))
    assert saved["base_model.model.seq.4.lora_A.weight"].shape == (40, 16)
    assert saved["base_model.model.seq.0.lora_B.weight"].shape == (16, 40)
    assert not saved["base_model.model.seq.4.lora_A.weight"][2:20].any()  # the zero ranks (2x16: two real ones)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(pair32(mlp)[0], str(tmp_path / "converted"))
    assert theirs.peft_config["default"].r == 40 and theirs.peft_config["default"].lora_alpha == 20
    with torch.no_grad():  # PEFT loads it onto the ORIGINAL base: the trained model's output
        np.testing.assert_allclose(theirs(torch.as_tensor(x)).numpy(), trained, rtol=0, atol=1e-5)


# ==================================================================================================
# TrainableTokensConfig on a plain nn.Module
# ==================================================================================================
@pytest.mark.parametrize("init_weights", [True, False])
def test_trainable_tokens_on_a_plain_module_as_peft(tmp_path, init_weights):
    config = dict(token_indices=[1, 3, 7], target_modules=["embed"], init_weights=init_weights)
    theirs, ours = seeded(nested, config, config_class="TrainableTokensConfig")
    assert trainable(ours) == trainable(theirs) == [("base_model.model.embed.trainable_tokens_delta.default", (3, 8))]
    assert_same_state(theirs, ours)
    x = INPUTS[nested](np.random.default_rng(1))
    train(theirs, ours, x, steps=2)
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    configs = assert_same_files(tmp_path, theirs, ours)
    assert configs[1]["token_indices"] == configs[0]["token_indices"] and configs[1]["peft_type"] == "TRAINABLE_TOKENS"
    fresh_theirs, fresh_ours = pair(nested)  # each loads the other's folder onto a fresh base
    loaded_theirs = peft.PeftModel.from_pretrained(fresh_theirs, str(tmp_path / "ours"))
    loaded_ours = ml_peft.PeftModel.from_pretrained(fresh_ours, str(tmp_path / "theirs"))
    t2, m2 = run_both(loaded_theirs, loaded_ours, x)
    np.testing.assert_allclose(t2, t, rtol=0, atol=TOL)
    np.testing.assert_allclose(m2, t, rtol=0, atol=TOL)


def test_trainable_tokens_default_target_on_a_plain_module_refused_as_peft():
    """No get_input_embeddings: both look for "embed_tokens" and say they did not find it."""
    theirs_base, ours_base = pair(nested)
    with pytest.raises(ValueError, match="Target modules embed_tokens not found in the base model"):
        peft.get_peft_model(theirs_base, peft.TrainableTokensConfig(token_indices=[1]))
    with pytest.raises(ValueError, match="Target modules embed_tokens not found in the base model"):
        ml_peft.get_peft_model(ours_base, ml_peft.TrainableTokensConfig(token_indices=[1]))


# ==================================================================================================
# peft_type / task_type: PEFT's str enums
# ==================================================================================================
def test_peft_type_and_task_type_are_pefts_str_enums():
    from minilora.lora import PeftType, TaskType
    # PEFT 0.22 added PACA (minilora names it and refuses its configs, as the other methods it lacks)
    assert [m.name for m in PeftType] == [m.name for m in peft.PeftType] + as_of_peft(["PACA"], [])
    assert [(m.name, m.value) for m in TaskType] == [(m.name, m.value) for m in peft.TaskType]
    assert PeftType.LORA == "LORA" and isinstance(PeftType.LORA, str) and {"LORA": 1}[PeftType.LORA] == 1
    assert json.dumps({"t": PeftType.VERA}) == json.dumps({"t": peft.PeftType.VERA}) == '{"t": "VERA"}'
    for config_class, kw in (("LoraConfig", {}), ("VeraConfig", {}), ("TrainableTokensConfig", dict(token_indices=[1])),
                             ("AdaLoraConfig", dict(total_step=10))):
        ours, theirs = getattr(ml_peft, config_class)(**kw), getattr(peft, config_class)(**kw)
        assert repr(ours.peft_type) == repr(theirs.peft_type) and str(ours.peft_type) == str(theirs.peft_type)
        assert type(ours.to_dict()["peft_type"]) is PeftType
    for task_type in ("CAUSAL_LM", TaskType.CAUSAL_LM, "FEATURE_EXTRACTION"):  # kept as given, as PEFT keeps it
        theirs_task = peft.TaskType(task_type) if isinstance(task_type, TaskType) else task_type
        assert repr(ml_peft.LoraConfig(task_type=task_type).task_type) == \
            repr(peft.LoraConfig(task_type=theirs_task).task_type)


def test_files_status_and_card_show_the_type_name(tmp_path):
    theirs, ours = seeded(mlp, dict(target_modules=["seq.0"], task_type=ml_peft.TaskType.FEATURE_EXTRACTION))
    configs = assert_same_files(tmp_path, theirs, ours)
    assert configs[1]["peft_type"] == configs[0]["peft_type"] == "LORA"
    assert configs[1]["task_type"] == configs[0]["task_type"] == "FEATURE_EXTRACTION"
    assert ml_peft.PeftConfig.from_pretrained(str(tmp_path / "theirs")).peft_type is ml_peft.PeftType.LORA
    assert dataclasses.asdict(ours.get_model_status())["peft_types"] == \
        dataclasses.asdict(theirs.get_model_status())["peft_types"] == {"default": "LORA"}
    card = open(tmp_path / "ours" / "README.md").read()
    assert "- lora\n" in card and "A LORA adapter" in card and "PeftType" not in card


def test_refusals_name_the_type_not_the_enum_member():
    with pytest.raises(ValueError, match=r"of type 'VERA', not 'LORA'"):
        ml_peft.LoraConfig.from_dict(ml_peft.VeraConfig(target_modules=["q"]).to_dict())
    with pytest.raises(NotImplementedError, match="adapter type 'LOHA' is not supported by minilora"):
        ml_peft.get_peft_config({"peft_type": ml_peft.PeftType.LOHA})
    _, ours = seeded(mlp, dict(target_modules=["seq.0"]))
    with pytest.raises(ValueError, match="cannot add a VERA adapter to a model with LORA adapters"):
        ours.add_adapter("v", ml_peft.VeraConfig(target_modules=["seq.2"]))


# ==================================================================================================
# add_weighted_adapter with DoRA adapters
# ==================================================================================================
@pytest.mark.parametrize("combination_type", ["linear", "svd", "cat", "ties", "dare_linear"])
@pytest.mark.parametrize("doras", [(True, True), (True, False), (False, True)])
def test_add_weighted_adapter_of_dora_adapters_is_refused_as_peft(combination_type, doras):
    """PEFT 0.22 refuses DoRA adapters here, naming the first: only A and B were combined, and the new adapter's
    magnitude was its own initial one, not the sources' (0.21 combined them so, without a word)."""
    first = dict(r=4, target_modules=["seq.0", "seq.2"], use_dora=doras[0], init_lora_weights=False)
    theirs, ours = seeded(mlp, first)
    second = dict(r=4, target_modules=["seq.0", "seq.2"], use_dora=doras[1], init_lora_weights=False)
    density = dict(density=0.5) if combination_type in ("ties", "dare_linear") else {}
    words = f"add_weighted_adapter does not support DoRA \\(problematic adapter '{'default' if doras[0] else 'b'}'\\)"
    for model, library in ((theirs, peft), (ours, ml_peft)):
        model.add_adapter("b", library.LoraConfig(**second))
        combine = lambda: model.add_weighted_adapter(["default", "b"], [0.7, 0.3], "mix",  # noqa: E731
                                                     combination_type, **density)
        if library is peft and not PEFT_022:
            combine()  # 0.21: combined
            continue
        with pytest.raises(ValueError, match=words):
            combine()
        assert "mix" not in model.peft_config


# ==================================================================================================
# init_lora_weights: "gaussian" and "olora" in any case (PEFT's .lower())
# ==================================================================================================
@pytest.mark.parametrize("init", ["Gaussian", "GAUSSIAN"])
def test_gaussian_in_any_case_as_peft(tmp_path, init):
    theirs, ours = seeded(nested, dict(target_modules=["up", "embed", "head"], init_lora_weights=init))
    assert_same_state(theirs, ours)
    configs = assert_same_files(tmp_path, theirs, ours)
    assert configs[1]["init_lora_weights"] == configs[0]["init_lora_weights"] == init


def test_olora_in_any_case_as_peft():
    theirs, ours = seeded(mlp, dict(r=4, target_modules=["seq.0", "seq.2"], init_lora_weights="OLoRA"), dtype="float32")
    assert_same_state(theirs, ours, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("init", ["PISSA", "Orthogonal", "bogus"])
def test_other_inits_refused_by_name(init):
    """PEFT refuses these later (upper case, an odd name): minilora names them in the config."""
    with pytest.raises(ValueError, match=f"got '{init}'"):
        ml_peft.LoraConfig(target_modules=["seq.0"], init_lora_weights=init)


# ==================================================================================================
# hotswap_adapter (peft.utils.hotswap): minilora had none
# ==================================================================================================
from minilora.lora.hotswap import hotswap_adapter, prepare_model_for_compiled_hotswap  # noqa: E402
from peft.utils.hotswap import hotswap_adapter as peft_hotswap_adapter  # noqa: E402
from peft.utils.hotswap import prepare_model_for_compiled_hotswap as peft_prepare  # noqa: E402

SWAP_TARGETS = ["seq.0", "seq.2"]
SWAPS = {  # the loaded adapter's config, the swapped-in one's
    "same_rank_other_alpha": (dict(r=4), dict(r=4, lora_alpha=3)),
    "smaller_rank": (dict(r=4), dict(r=2)),
    "larger_rank": (dict(r=2), dict(r=6)),
    "fewer_layers": (dict(r=4), dict(r=4, target_modules=["seq.2"])),
    "lora_bias": (dict(r=4, lora_bias=True), dict(r=4, lora_bias=True)),
}


def saved_adapters(tmp_path, first, second):
    """Two adapters saved by PEFT (random A and B), as a user has them on disk."""
    for name, config, seed in (("first", first, 1), ("second", second, 2)):
        theirs_base, _ = pair(mlp)
        torch.manual_seed(seed)
        config = dict(dict(target_modules=SWAP_TARGETS, init_lora_weights=False), **config)
        peft.get_peft_model(theirs_base, peft.LoraConfig(**config)).save_pretrained(str(tmp_path / name))
    return str(tmp_path / "first"), str(tmp_path / "second")


def loaded_pair(path):
    theirs_base, ours_base = pair(mlp)
    return peft.PeftModel.from_pretrained(theirs_base, path), ml_peft.PeftModel.from_pretrained(ours_base, path)


@pytest.mark.parametrize("target_rank", [None, 8])
@pytest.mark.parametrize("case", SWAPS)
def test_hotswap_adapter_as_peft(tmp_path, case, target_rank):
    """The swapped model computes the second adapter's output; the tensors (shapes, values) are PEFT's."""
    first, second = saved_adapters(tmp_path, *SWAPS[case])
    theirs, ours = loaded_pair(first)
    if target_rank is not None:  # PEFT's padding draws a Linear init: the same draws here
        torch.manual_seed(0)
        peft_prepare(theirs, target_rank=target_rank, config=theirs.peft_config)
        ml.manual_seed(0)
        prepare_model_for_compiled_hotswap(ours, target_rank=target_rank, config=ours.peft_config)
        assert ours.peft_config["default"].r == theirs.peft_config["default"].r == target_rank
    peft_hotswap_adapter(theirs, second, adapter_name="default", torch_device="cpu")
    hotswap_adapter(ours, second, "default")
    assert_same_state(theirs, ours, atol=1e-12)
    x = INPUTS[mlp](np.random.default_rng(1))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-8)  # (PEFT's padded scalings are float32 tensors)
    t_second, m_second = run_both(*loaded_pair(second), x)
    np.testing.assert_allclose(m, m_second, rtol=0, atol=1e-12)


@pytest.mark.parametrize("second, error, words", [
    (dict(r=4, target_modules=["seq.0", "seq.2", "seq.4"]), RuntimeError,
     "unexpected keys found: base_model.model.seq.4"),
    (dict(r=4, use_rslora=True), ValueError, "Configs are incompatible: for use_rslora, False != True"),
    (dict(r=4, lora_dropout=0.1), ValueError, "Configs are incompatible: for lora_dropout, 0.0 != 0.1"),
])
def test_hotswap_refusals_as_peft(tmp_path, second, error, words):
    first, second = saved_adapters(tmp_path, dict(r=4), second)
    theirs, ours = loaded_pair(first)
    with pytest.raises(error, match=words):
        peft_hotswap_adapter(theirs, second, adapter_name="default", torch_device="cpu")
    with pytest.raises(error, match=words):
        hotswap_adapter(ours, second, adapter_name="default")


def test_hotswap_of_a_merged_adapter_refused_as_peft(tmp_path):
    first, second = saved_adapters(tmp_path, dict(r=4), dict(r=4))
    theirs, ours = loaded_pair(first)
    for model, swap in ((theirs, peft_hotswap_adapter), (ours, hotswap_adapter)):
        model.merge_adapter()
        with pytest.raises(ValueError, match="Cannot hot-swap adapter 'default' because it is currently merged"):
            swap(model, second, "default")


@pytest.mark.parametrize("case", ["rank_pattern", "dora", "modules_to_save"])
def test_hotswap_where_peft_goes_wrong_gives_the_second_adapter(tmp_path, case):
    """PEFT 0.21 scales a rank_pattern layer by r (another output than the adapter's), and stops with a
    KeyError on DoRA magnitudes and modules_to_save copies; minilora swaps them: the second adapter's output."""
    first, second = {"rank_pattern": (dict(r=4), dict(r=4, rank_pattern={"seq.2": 2})),
                     "dora": (dict(r=4, use_dora=True), dict(r=4, use_dora=True)),
                     "modules_to_save": (dict(r=4, modules_to_save=["seq.4"]),
                                         dict(r=4, modules_to_save=["seq.4"]))}[case]
    first, second = saved_adapters(tmp_path, first, second)
    _, ours = loaded_pair(first)
    hotswap_adapter(ours, second, "default")
    x = INPUTS[mlp](np.random.default_rng(1))
    t_second, m_second = run_both(*loaded_pair(second), x)
    with ml.no_grad():
        np.testing.assert_allclose(ours(ml.tensor(x)).numpy(), t_second, rtol=0, atol=1e-12)


def test_hotswap_adapter_from_state_dict_as_peft(tmp_path):
    from minilora.lora.hotswap import hotswap_adapter_from_state_dict
    from peft.utils.hotswap import hotswap_adapter_from_state_dict as peft_from_state_dict
    first, second = saved_adapters(tmp_path, dict(r=4), dict(r=2, lora_alpha=5))
    theirs, ours = loaded_pair(first)
    donor_theirs, donor_ours = loaded_pair(second)
    peft_from_state_dict(theirs, {k: v for k, v in donor_theirs.state_dict().items() if "lora_" in k}, "default",
                         donor_theirs.peft_config["default"])
    hotswap_adapter_from_state_dict(ours, {k: v for k, v in donor_ours.state_dict().items() if "lora_" in k},
                                    "default", donor_ours.peft_config["default"])
    assert_same_state(theirs, ours, atol=1e-12)
    assert ours.base_model.model.seq[0].scaling["default"] == theirs.base_model.model.seq[0].scaling["default"] == 2.5


# ==================================================================================================
# The LoRA guide's options, seeded: the same adapter numbers, training, files (no weights copied across)
# ==================================================================================================
GUIDE = {
    "rank_alpha_pattern_regex": (nested, dict(target_modules=["up", "down"], rank_pattern={r"^blocks\.1\..*": 2},
                                              alpha_pattern={"down": 3})),
    "rank_alpha_pattern_full_names": (nested, dict(target_modules=["up", "down"],
                                                   rank_pattern={"blocks.1.proj.up": 2, "blocks.2.proj.down": 6},
                                                   alpha_pattern={"blocks.0.proj.up": 5})),
    "layers_to_transform_pattern": (nested, dict(target_modules=["up", "down"], layers_to_transform=[1],
                                                 layers_pattern="blocks")),
    "rslora_embedding": (nested, dict(target_modules=["up", "down", "embed"], use_rslora=True, r=4, lora_alpha=7)),
    "default_init": (nested, dict(target_modules=["up", "down", "embed"])),
    "random_init": (nested, dict(target_modules=["up", "down", "embed"], init_lora_weights=False)),
    "gaussian_init": (nested, dict(target_modules=["up", "down", "embed"], init_lora_weights="gaussian")),
    "exclude_modules_regex": (nested, dict(target_modules=["up", "down", "head"], exclude_modules=r".*blocks\.1.*")),
    "all_linear": (nested, dict(target_modules="all-linear")),
    "dora_embedding": (nested, dict(target_modules=["up", "embed"], use_dora=True)),
    "dropout_modules_to_save": (mlp, dict(target_modules=["seq.0", "seq.2"], lora_dropout=0.3,
                                          modules_to_save=["seq.4"])),
}


@pytest.mark.parametrize("case", GUIDE)
def test_guide_options_seeded_as_peft(tmp_path, case):
    build, config = GUIDE[case]
    theirs, ours = seeded(build, config)
    assert_same_state(theirs, ours)  # drawn, not copied
    x = INPUTS[build](np.random.default_rng(1))
    theirs.train(), ours.train()  # (dropout: torch's masks from the same seed)
    torch.manual_seed(9)
    ml.manual_seed(9)
    train(theirs, ours, x, steps=2)
    theirs.eval(), ours.eval()
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    theirs_config, ours_config = assert_same_files(tmp_path, theirs, ours)
    for key in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern",
                "exclude_modules", "use_rslora", "init_lora_weights", "modules_to_save", "peft_type"):
        assert ours_config[key] == theirs_config[key], key
    assert sorted(ours_config["target_modules"]) == sorted(theirs_config["target_modules"])


def test_several_adapters_and_their_calls_seeded_as_peft(tmp_path):
    """add_adapter, set_adapter (which modules_to_save copy trains), merge/unmerge, status, save and load."""
    first = dict(r=4, lora_alpha=8, target_modules=["seq.0", "seq.2"], modules_to_save=["seq.4"])
    second = dict(r=2, lora_alpha=3, target_modules=["seq.2"], modules_to_save=["seq.4"], init_lora_weights=False)
    theirs, ours = seeded(mlp, first)
    theirs.add_adapter("b", peft.LoraConfig(**second))  # drawn after the first: the generators stay in step
    ours.add_adapter("b", ml_peft.LoraConfig(**second))
    x = INPUTS[mlp](np.random.default_rng(1))
    train(theirs, ours, x, steps=2)
    for model in (theirs, ours):
        model.set_adapter("b")
    assert_same_state(theirs, ours)
    assert [n for n, _ in trainable(ours)] == [n for n, _ in trainable(theirs)]
    assert "base_model.model.seq.4.modules_to_save.b.weight" in [n for n, _ in trainable(ours)]
    train(theirs, ours, x, steps=2)
    statuses = [([dataclasses.asdict(s) for s in model.get_layer_status()],
                 dataclasses.asdict(model.get_model_status())) for model in (theirs, ours)]
    assert statuses[1] == statuses[0]
    for model in (theirs, ours):
        model.merge_adapter(["default", "b"])
    assert_same_state(theirs, ours, atol=1e-12)
    for model in (theirs, ours):
        model.unmerge_adapter()
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-12)
    assert_same_files(tmp_path, theirs, ours, atol=1e-12)
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs"))
    fresh_theirs, fresh_ours = pair(mlp)
    loaded = (peft.PeftModel.from_pretrained(fresh_theirs, str(tmp_path / "ours" / "b"), is_trainable=True,
                                             adapter_name="x"),
              ml_peft.PeftModel.from_pretrained(fresh_ours, str(tmp_path / "theirs" / "b"), is_trainable=True,
                                                adapter_name="x"))
    assert_same_state(*loaded, atol=1e-12)
    assert trainable(loaded[1]) == trainable(loaded[0]) != []
    for model in loaded:
        model.load_adapter(str(tmp_path / "theirs"), adapter_name="d")
        model.set_adapter("d")
    assert_same_state(*loaded, atol=1e-12)
    t, m = run_both(*loaded, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-12)
