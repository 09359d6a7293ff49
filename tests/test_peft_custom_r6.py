"""PEFT on models users build themselves, as PEFT's "Custom models" guide, its LoRA developer guide and
its "Checkpoint format" page write it: an MLP in an ``nn.Sequential`` (``target_modules=["seq.0", "seq.2"]``,
``modules_to_save=["seq.4"]``), a small CNN (LoRA on Conv2d / Conv1d), embedding tables, Linear layers
nested in ModuleDict / ModuleList, regex vs list targets, layers_to_transform, exclude_modules,
``inject_adapter_in_model``, several adapters.

The same user code runs once per library on the same float64 weights (torch's ``nn`` vs ``minilora.nn``);
compared: trainable names and shapes, the forward after 5 AdamW steps, merged weights, the adapter files
(keys, shapes, dtypes, adapter_config.json) and each library loading the other's folder."""
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
from peft_versions import conv_lora_as_022, freeze_ranknum_as_022, peft_repr_as_022, unload_as_022  # noqa: E402

TOL = 1e-12


# ==================================================================================================
# The user's models, written once against a module namespace (torch.nn or minilora.nn)
# ==================================================================================================
def mlp(nn, dtype):
    class MLP(nn.Module):  # PEFT's custom-models guide
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(nn.Linear(20, 16, dtype=dtype), nn.ReLU(), nn.Linear(16, 16, dtype=dtype),
                                     nn.ReLU(), nn.Linear(16, 2, dtype=dtype))

        def forward(self, x):
            return self.seq(x)
    return MLP()


def cnn(nn, dtype):
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 3, padding=1, dtype=dtype)
            self.conv2 = nn.Conv2d(6, 4, (3, 2), stride=2, dtype=dtype)
            self.pointwise = nn.Conv2d(4, 4, 1, dtype=dtype)
            self.temporal = nn.Conv1d(4, 5, 3, padding=1, dtype=dtype)
            self.head = nn.Linear(5 * 9, 3, dtype=dtype)

        def forward(self, x):
            h = self.pointwise(self.conv2(self.conv1(x).relu())).relu()   # [N, 4, 3, 3]
            h = self.temporal(h.flatten(2))                               # [N, 5, 9]
            return self.head(h.flatten(1))
    return CNN()


def nested(nn, dtype):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.ModuleDict({"up": nn.Linear(8, 12, dtype=dtype), "down": nn.Linear(12, 8, dtype=dtype)})

        def forward(self, x):
            return x + self.proj["down"](self.proj["up"](x).tanh())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(11, 8, padding_idx=0, dtype=dtype)
            self.blocks = nn.ModuleList([Block() for _ in range(3)])
            self.head = nn.Linear(8, 4, dtype=dtype)

        def forward(self, ids):
            h = self.embed(ids)
            for block in self.blocks:
                h = block(h)
            return self.head(h)
    return Net()


def padded_convs(nn, dtype):
    class PaddedConvs(nn.Module):  # PEFT 0.22's lora_A pads as its base (0.21's with zeros)
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding="same", bias=False, dtype=dtype)
            self.b = nn.Conv2d(4, 4, (3, 1), padding=(1, 0), padding_mode="reflect", dtype=dtype)
            self.c = nn.Conv1d(4, 2, 1, dtype=dtype)
            self.d = nn.Conv2d(4, 4, 2, stride=(2, 1), padding=1, padding_mode="circular", dtype=dtype)

        def forward(self, x):
            return self.c(self.d(self.b(self.a(x))).flatten(2))
    return PaddedConvs()


INPUTS = {padded_convs: lambda rng: rng.standard_normal((2, 3, 6, 5)),
          mlp: lambda rng: rng.standard_normal((4, 20)),
          cnn: lambda rng: rng.standard_normal((2, 3, 8, 6)),
          nested: lambda rng: rng.integers(0, 11, (2, 5))}


def pair(build, seed=0):
    """The same model in both libraries, torch's weights copied into minilora's."""
    torch.manual_seed(seed)
    theirs = build(torch.nn, torch.float64)
    ours = build(ml.nn, ml.float64)
    ours.load_state_dict({k: ml.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return theirs, ours


def run_both(theirs, ours, x):
    with torch.no_grad():
        t = theirs(torch.as_tensor(x)).numpy()
    with ml.no_grad():
        m = ours(ml.tensor(x)).numpy()
    return t, m


def trainable(model):
    return [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]


def copy_trainable(theirs, ours):
    """PEFT's random adapter weights into minilora's (same names)."""
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            ours_params[name]._array[...] = p.detach().numpy()


def train(theirs, ours, x, steps=5):
    t_opt = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-2)
    m_opt = ml.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        t_opt.zero_grad()
        (theirs(torch.as_tensor(x)) ** 2).mean().backward()
        t_opt.step()
        m_opt.zero_grad()
        (ours(ml.tensor(x)) ** 2).mean().backward()
        m_opt.step()


def assert_files_match(ours_dir, theirs_dir):
    ours_t = safetensors_numpy.load_file(os.path.join(ours_dir, "adapter_model.safetensors"))
    theirs_t = safetensors_numpy.load_file(os.path.join(theirs_dir, "adapter_model.safetensors"))
    assert sorted(ours_t) == sorted(theirs_t)
    for key in theirs_t:
        assert ours_t[key].shape == theirs_t[key].shape and ours_t[key].dtype == theirs_t[key].dtype, key
        np.testing.assert_allclose(ours_t[key], theirs_t[key], rtol=0, atol=TOL, err_msg=key)
    with open(os.path.join(ours_dir, "adapter_config.json")) as f:
        ours_c = json.load(f)
    with open(os.path.join(theirs_dir, "adapter_config.json")) as f:
        theirs_c = json.load(f)
    for field in ("target_modules", "modules_to_save", "r", "lora_alpha", "peft_type", "layers_to_transform",
                  "layers_pattern", "exclude_modules", "init_lora_weights", "lora_bias", "base_model_name_or_path"):
        o, t = ours_c.get(field), theirs_c.get(field)
        if isinstance(t, list) and isinstance(o, list):
            o, t = sorted(o), sorted(t)
        assert o == t, (field, o, t)


def side_by_side(build, tmp_path, finish="merge_and_unload", **config):
    """The whole user story in both libraries; returns the two PEFT models (for extra checks)."""
    config = {"r": 4, "lora_alpha": 8, "init_lora_weights": False, **config}
    x = INPUTS[build](np.random.default_rng(1))
    theirs_base, ours_base = pair(build)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    conv_lora_as_022(theirs)
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    assert trainable(ours) == trainable(theirs)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert repr(ours) == peft_repr_as_022(repr(theirs))  # print(model), PEFT's text
    copy_trainable(theirs, ours)
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    train(theirs, ours, x)
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)

    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours.save_pretrained(str(tmp_path / "ours"))
    assert_files_match(str(tmp_path / "ours"), str(tmp_path / "theirs"))
    # each library loads the other's folder onto a fresh base and computes the same output
    fresh_t, fresh_m = pair(build)
    t_loaded = peft.PeftModel.from_pretrained(fresh_t, str(tmp_path / "ours"))
    conv_lora_as_022(t_loaded)
    m_loaded = ml_peft.PeftModel.from_pretrained(fresh_m, str(tmp_path / "theirs"))
    t2, m2 = run_both(t_loaded, m_loaded, x)
    np.testing.assert_allclose(t2, t, rtol=0, atol=TOL)
    np.testing.assert_allclose(m2, t, rtol=0, atol=TOL)

    with theirs.disable_adapter(), ours.disable_adapter():
        t_base, m_base = run_both(theirs, ours, x)
    np.testing.assert_allclose(m_base, t_base, rtol=0, atol=TOL)
    if finish == "merge_and_unload":
        theirs_merged, ours_merged = theirs.merge_and_unload(), ours.merge_and_unload()
    else:
        theirs_merged, ours_merged = unload_as_022(theirs), ours.unload()
    t_sd, m_sd = theirs_merged.state_dict(), ours_merged.state_dict()
    assert sorted(m_sd) == sorted(t_sd)
    for key in t_sd:
        np.testing.assert_allclose(m_sd[key].numpy(), t_sd[key].numpy(), rtol=0, atol=TOL, err_msg=key)
    assert type(ours_merged).__name__ == type(theirs_merged).__name__
    return theirs, ours


# ==================================================================================================
# The guide's models
# ==================================================================================================
CASES = {
    "mlp_guide": (mlp, dict(target_modules=["seq.0", "seq.2"], modules_to_save=["seq.4"])),
    "mlp_regex_dropout_rslora": (mlp, dict(target_modules=r"seq\.[02]", use_rslora=True, lora_dropout=0.0,
                                           init_lora_weights="gaussian")),
    "mlp_lora_bias_unload": (mlp, dict(target_modules=["seq.2"], lora_bias=True, finish="unload")),
    "cnn_conv2d_conv1d": (cnn, dict(target_modules=["conv1", "conv2", "pointwise", "temporal"],
                                    modules_to_save=["head"])),
    "cnn_conv_lora_bias": (cnn, dict(target_modules=["conv2", "temporal"], lora_bias=True, r=2, lora_alpha=5)),
    "cnn_regex_all": (cnn, dict(target_modules=r"conv\d|pointwise|temporal|head")),
    "padding_modes_1x1_conv1d": (padded_convs, dict(target_modules=["a", "b", "c", "d"])),
    "cnn_dora": (cnn, dict(target_modules=["conv1", "conv2", "pointwise", "temporal"], use_dora=True)),
    "cnn_dora_linear_unload": (cnn, dict(target_modules=["conv1", "conv2", "head"], use_dora=True,
                                         modules_to_save=["temporal"], finish="unload")),
    "padding_modes_lora_bias": (padded_convs, dict(target_modules=["a", "b"], lora_bias=True, finish="unload")),
    "nested_embedding_moduledict": (nested, dict(target_modules=["embed", "up", "down"], modules_to_save=["head"])),
    "nested_layers_to_transform": (nested, dict(target_modules=["up", "down"], layers_to_transform=[0, 2],
                                                layers_pattern="blocks")),
    "nested_exclude_modules": (nested, dict(target_modules=["up", "down", "head"],
                                            exclude_modules=["blocks.1.proj.up"])),
    "nested_regex_full_match": (nested, dict(target_modules=r"blocks\.\d\.proj\.down")),
}


@pytest.mark.parametrize("name", CASES)
def test_custom_model_as_peft(tmp_path, name):
    build, config = CASES[name]
    config = dict(config)
    finish = config.pop("finish", "merge_and_unload")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        side_by_side(build, tmp_path, finish=finish, **config)


# ==================================================================================================
# What PEFT prints and counts, and the low-level API
# ==================================================================================================
def printed(model, capsys):
    capsys.readouterr()
    model.print_trainable_parameters()
    return capsys.readouterr().out


@pytest.mark.parametrize("build,config", [
    (cnn, dict(target_modules=["conv1", "temporal"], lora_dropout=0.1, modules_to_save=["head"])),
    (nested, dict(target_modules=["embed", "up"], modules_to_save=["head"])),
    (mlp, dict(target_modules=["seq.0", "seq.2"], lora_bias=True)),
    (cnn, dict(target_modules=["conv1", "temporal", "head"], use_dora=True))])
def test_print_model_and_trainable_parameters_as_peft(capsys, build, config):
    theirs_base, ours_base = pair(build)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    assert repr(ours) == peft_repr_as_022(repr(theirs))
    assert printed(ours, capsys) == printed(theirs, capsys)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert ours.base_model.model is ours_base and theirs.base_model.model is theirs_base


def test_inject_adapter_in_model_and_state_dict_round_trip():
    config = dict(target_modules=["conv2", "temporal", "head"], r=2, lora_alpha=3, init_lora_weights=False)
    theirs_base, ours_base = pair(cnn)
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(**config), theirs_base)
    ours = ml_peft.inject_adapter_in_model(ml_peft.LoraConfig(**config), model=ours_base, adapter_name="default")
    assert theirs is theirs_base and ours is ours_base  # the same model, changed in place
    assert trainable(ours) == trainable(theirs)
    theirs_sd = peft.get_peft_model_state_dict(theirs)
    ours_sd = ml_peft.get_peft_model_state_dict(ours)
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in theirs_sd.items()}
    # PEFT's adapter weights into minilora's model through set_peft_model_state_dict: the same outputs
    ml_peft.set_peft_model_state_dict(ours, {k: ml.tensor(v.numpy()) for k, v in theirs_sd.items()})
    x = INPUTS[cnn](np.random.default_rng(2))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    # and back: minilora's (changed) weights into PEFT's
    ml_peft.set_peft_model_state_dict(ours, {k: v * 0.5 for k, v in ml_peft.get_peft_model_state_dict(ours).items()})
    peft.set_peft_model_state_dict(theirs, {k: torch.as_tensor(np.asarray(v)) for k, v in
                                            ml_peft.get_peft_model_state_dict(ours).items()})
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)


def test_set_peft_model_state_dict_reports_keys_as_peft():
    """The "Checkpoint format" page's manual load: missing_keys are the base weights only (a
    modules_to_save copy that was loaded is not missing), unexpected_keys empty."""
    config = dict(target_modules=["seq.0", "seq.2"], modules_to_save=["seq.4"], init_lora_weights=False)
    theirs_base, ours_base = pair(mlp)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    state = {k: v * 1.5 for k, v in peft.get_peft_model_state_dict(theirs).items()}
    theirs_result = peft.set_peft_model_state_dict(theirs, state)
    ours_result = ml_peft.set_peft_model_state_dict(ours, {k: v.numpy() for k, v in state.items()})
    assert sorted(ours_result.missing_keys) == sorted(theirs_result.missing_keys)
    assert ours_result.unexpected_keys == theirs_result.unexpected_keys == []
    x = INPUTS[mlp](np.random.default_rng(8))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)


def test_inject_adapter_in_model_refuses_vera_as_peft():
    theirs_base, ours_base = pair(mlp)
    with pytest.raises(ValueError, match="shared state"):
        peft.inject_adapter_in_model(peft.VeraConfig(target_modules=["seq.0"]), theirs_base)
    with pytest.raises(ValueError, match="shared state"):
        ml_peft.inject_adapter_in_model(ml_peft.VeraConfig(target_modules=["seq.0"]), ours_base)


# ==================================================================================================
# Several adapters on a CNN: add_adapter, set_adapter, per-sample adapter_names, merging two
# ==================================================================================================
def test_two_conv_adapters_as_peft():
    x = INPUTS[cnn](np.random.default_rng(3))
    first = dict(target_modules=["conv1", "temporal"], r=2, init_lora_weights=False)
    second = dict(target_modules=["conv1", "conv2"], r=3, lora_alpha=6, init_lora_weights=False)
    theirs_base, ours_base = pair(cnn)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**first))
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**first))
    theirs.add_adapter("other", peft.LoraConfig(**second))
    ours.add_adapter("other", ml_peft.LoraConfig(**second))
    assert trainable(ours) == trainable(theirs)
    for name, p in theirs.named_parameters():  # both adapters' random weights
        if "lora_" in name:
            dict(ours.named_parameters())[name]._array[...] = p.detach().numpy()
    for active in ("other", "default"):
        theirs.set_adapter(active)
        ours.set_adapter(active)
        assert trainable(ours) == trainable(theirs)
        t, m = run_both(theirs, ours, x)
        np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    theirs.eval()  # one adapter per sample: inference only (both refuse it in training mode)
    ours.eval()
    with torch.no_grad():
        t = theirs(torch.as_tensor(x), adapter_names=["other", "__base__"]).numpy()
    with ml.no_grad():
        m = ours(ml.tensor(x), adapter_names=["other", "__base__"]).numpy()
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    theirs.base_model.set_adapter(["default", "other"])
    ours.base_model.set_adapter(["default", "other"])
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    theirs.merge_adapter()
    ours.merge_adapter()
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key].numpy(), value.numpy(), rtol=0, atol=TOL, err_msg=key)
    t2, m2 = run_both(theirs, ours, x)
    np.testing.assert_allclose(m2, t, rtol=0, atol=TOL)
    np.testing.assert_allclose(t2, t, rtol=0, atol=TOL)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_conv_lora_on_16_bit_base_bit_for_bit(dtype):
    """PEFT casts the adapters to float32 (autocast_adapter_dtype) and rounds the sum back once."""
    torch.manual_seed(0)
    theirs_base, ours_base = cnn(torch.nn, getattr(torch, dtype)), cnn(ml.nn, getattr(ml, dtype))
    ours_base.load_state_dict({k: ml.tensor(v.float().numpy()).to(getattr(ml, dtype))
                               for k, v in theirs_base.state_dict().items()})
    config = dict(target_modules=["conv1", "conv2", "temporal"], init_lora_weights=False)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    assert {n: str(p.dtype).replace("torch.", "") for n, p in theirs.named_parameters()} == \
        {n: str(p.dtype) for n, p in ours.named_parameters()}
    copy_trainable(theirs, ours)
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 6)).astype(np.float32)
    with torch.no_grad():
        t = theirs(torch.as_tensor(x).to(getattr(torch, dtype))).float().numpy()
    with ml.no_grad():
        m = ours(ml.tensor(x).to(getattr(ml, dtype))).float().numpy()
    np.testing.assert_array_equal(m, t)
    t_sd, m_sd = theirs.merge_and_unload().state_dict(), ours.merge_and_unload().state_dict()
    for key in t_sd:
        np.testing.assert_array_equal(m_sd[key].float().numpy(), t_sd[key].float().numpy(), err_msg=key)


def test_two_adapter_folders_and_status_as_peft(tmp_path):
    """save_pretrained with two adapters (the second in its own subfolder), each library loading the
    other's folders (load_adapter), and get_layer_status / get_model_status on conv layers."""
    first = dict(target_modules=["conv1", "temporal"], r=2, init_lora_weights=False)
    second = dict(target_modules=["conv2"], r=3, init_lora_weights=False, modules_to_save=["head"])
    theirs_base, ours_base = pair(cnn)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**first))
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**first))
    theirs.add_adapter("other", peft.LoraConfig(**second))
    ours.add_adapter("other", ml_peft.LoraConfig(**second))
    for name, p in theirs.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            dict(ours.named_parameters())[name]._array[...] = p.detach().numpy()
    assert [vars(s) for s in ours.get_layer_status()] == [vars(s) for s in theirs.get_layer_status()]
    assert vars(ours.get_model_status()) == vars(theirs.get_model_status())
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ours.save_pretrained(str(tmp_path / "ours"))
    assert_files_match(str(tmp_path / "ours" / "other"), str(tmp_path / "theirs" / "other"))
    fresh_t, fresh_m = pair(cnn)
    t_loaded = peft.PeftModel.from_pretrained(fresh_t, str(tmp_path / "ours"), is_trainable=True)
    t_loaded.load_adapter(str(tmp_path / "ours" / "other"), "other")
    m_loaded = ml_peft.PeftModel.from_pretrained(fresh_m, str(tmp_path / "theirs"), is_trainable=True)
    m_loaded.load_adapter(str(tmp_path / "theirs" / "other"), "other")
    x = INPUTS[cnn](np.random.default_rng(6))
    for name in ("other", "default"):
        for model in (theirs, ours, t_loaded, m_loaded):
            model.set_adapter(name)
        assert trainable(m_loaded) == trainable(t_loaded)
        t, m = run_both(theirs, ours, x)
        t2, m2 = run_both(t_loaded, m_loaded, x)
        for out in (m, t2, m2):
            np.testing.assert_allclose(out, t, rtol=0, atol=TOL)
    theirs.delete_adapter("other")
    ours.delete_adapter("other")
    assert repr(ours) == repr(theirs) and trainable(ours) == trainable(theirs)


@pytest.mark.parametrize("combination_type", ["svd", "cat", "linear", "ties"])
def test_add_weighted_adapter_on_convs_as_peft(combination_type):
    """PEFT combines Conv2d adapters (SVD of the flattened [out, in * kh * kw] update, reshaped back)."""
    x = INPUTS[cnn](np.random.default_rng(7))
    config = dict(target_modules=["conv1", "conv2", "pointwise", "head"], r=2, init_lora_weights=False)
    theirs_base, ours_base = pair(cnn)
    theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    theirs.add_adapter("b", peft.LoraConfig(**config))
    ours.add_adapter("b", ml_peft.LoraConfig(**config))
    for name, p in theirs.named_parameters():
        if "lora_" in name:
            dict(ours.named_parameters())[name]._array[...] = p.detach().numpy()
    options = dict(density=0.5) if combination_type == "ties" else {}
    theirs.add_weighted_adapter(["default", "b"], [1.0, -0.7], "mix", combination_type=combination_type, **options)
    ours.add_weighted_adapter(["default", "b"], [1.0, -0.7], "mix", combination_type=combination_type, **options)
    theirs.set_adapter("mix")
    ours.set_adapter("mix")
    assert trainable(ours) == trainable(theirs)
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)


def test_svd_combination_on_conv1d_is_the_weighted_update():
    """PEFT's SVD combination fails on a Conv1d (it decomposes the 3-D update as a batch); minilora
    flattens it as for a Conv2d: at full rank the new adapter's update is exactly the weighted sum."""
    config = ml_peft.LoraConfig(target_modules=["temporal"], r=2, init_lora_weights=False)
    model = ml_peft.get_peft_model(cnn(ml.nn, ml.float64), config)
    model.add_adapter("b", ml_peft.LoraConfig(target_modules=["temporal"], r=2, init_lora_weights=False))
    model.add_weighted_adapter(["default", "b"], [1.0, 0.5], "mix", combination_type="svd", svd_rank=4)
    layer = model.base_model.model.temporal
    assert tuple(layer.lora_A["mix"].weight.shape) == (4, 4, 3) and tuple(layer.lora_B["mix"].weight.shape) == (5, 4, 1)
    expected = layer.get_delta_weight("default") + 0.5 * layer.get_delta_weight("b")
    np.testing.assert_allclose(layer.get_delta_weight("mix"), expected, rtol=0, atol=TOL)


# ==================================================================================================
# Layer subclasses, and PEFT's experimental custom LoRA layers (config._register_custom_module)
# ==================================================================================================
def subclassed(nn, dtype):
    class MyLinear(nn.Linear):  # a user's own Linear type: PEFT adapts it (isinstance), as a Linear
        pass

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = MyLinear(6, 5, dtype=dtype)
            self.plain = nn.Linear(5, 2, dtype=dtype)

        def forward(self, x):
            return self.plain(self.fc(x).relu())
    return Net()


INPUTS[subclassed] = lambda rng: rng.standard_normal((3, 6))


def test_linear_subclass_adapted_as_peft(tmp_path):
    side_by_side(subclassed, tmp_path, target_modules=["fc", "plain"])
    for config in ("VeraConfig", "AdaLoraConfig"):  # the other methods' Linear layers too
        options = dict(target_modules=["fc", "plain"], **({"total_step": 10} if config == "AdaLoraConfig" else {}))
        theirs_base, ours_base = pair(subclassed)
        theirs = peft.get_peft_model(theirs_base, getattr(peft, config)(**options))
        freeze_ranknum_as_022(theirs)
        ours = ml_peft.get_peft_model(ours_base, getattr(ml_peft, config)(**options))
        assert sorted(trainable(ours)) == sorted(trainable(theirs))  # (minilora's AdaLoRA: lora_E before lora_B)


def test_register_custom_module_as_peft():
    """The guide's recipe: a LoRA layer class of one's own for a layer type, tried before the built-in
    ones. Here: LoRA with twice the scaling on the user's MyLinear; nn.Linear keeps PEFT's layer."""
    from peft.tuners.lora import Linear as TheirLoraLinear

    class TheirDoubled(TheirLoraLinear):
        def __init__(self, base_layer, adapter_name, config, **kwargs):
            super().__init__(base_layer, adapter_name, config=config, **kwargs)
            self.scaling[adapter_name] *= 2

    class OurDoubled(ml_peft.LoraLayer):
        def __init__(self, base_layer, adapter_name, config, r, lora_alpha):
            super().__init__(base_layer, adapter_name, config, r, lora_alpha)
            self.scaling[adapter_name] *= 2

    theirs_base, ours_base = pair(subclassed)
    theirs_config = peft.LoraConfig(target_modules=["fc", "plain"], init_lora_weights=False)
    ours_config = ml_peft.LoraConfig(target_modules=["fc", "plain"], init_lora_weights=False)
    theirs_config._register_custom_module({type(theirs_base.fc): TheirDoubled})
    ours_config._register_custom_module({type(ours_base.fc): OurDoubled})
    theirs = peft.get_peft_model(theirs_base, theirs_config)
    ours = ml_peft.get_peft_model(ours_base, ours_config)
    assert isinstance(ours.base_model.model.fc, OurDoubled) and type(ours.base_model.model.plain) is ml_peft.Linear
    assert ours.base_model.model.fc.scaling == theirs.base_model.model.fc.scaling == {"default": 2.0}
    assert trainable(ours) == trainable(theirs)
    assert "_custom_modules" not in ours_config.to_dict()  # not written to adapter_config.json, as PEFT
    copy_trainable(theirs, ours)
    t, m = run_both(theirs, ours, INPUTS[subclassed](np.random.default_rng(9)))
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)


# ==================================================================================================
# What PEFT refuses on convolutions, and what minilora refuses by name
# ==================================================================================================
def grouped(nn, dtype):
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 6, 3, groups=2, dtype=dtype)

        def forward(self, x):
            return self.conv(x)
    return Grouped()


@pytest.mark.filterwarnings("ignore:LoRA adapter added to ConvNd")
def test_grouped_conv_as_peft():
    theirs_base, ours_base = pair(grouped)
    with pytest.raises(ValueError, match="rank is divisible by groups"):
        peft.get_peft_model(theirs_base, peft.LoraConfig(target_modules=["conv"], r=3))
    with pytest.raises(ValueError, match="rank is divisible by groups"):
        ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(target_modules=["conv"], r=3))
    theirs_base, ours_base = pair(grouped)
    config = dict(target_modules=["conv"], r=4, init_lora_weights=False)
    with pytest.warns(UserWarning, match="groups > 1"):
        theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config))
    with pytest.warns(UserWarning, match="groups > 1"):
        ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    assert trainable(ours) == trainable(theirs)
    copy_trainable(theirs, ours)
    x = np.random.default_rng(4).standard_normal((2, 4, 5, 5))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
    before = ours.state_dict()["base_model.model.conv.base_layer.weight"].numpy().copy()
    with pytest.raises(NotImplementedError, match="groups > 1"):
        theirs.merge_and_unload()
    with pytest.raises(NotImplementedError, match="groups > 1"):
        ours.merge_and_unload()
    np.testing.assert_array_equal(ours.state_dict()["base_model.model.conv.base_layer.weight"].numpy(), before)


def test_conv_refusals_name_the_problem():
    def grouped(nn, dtype):  # (16-bit DoRA convs are PEFT's since r11: tests/test_peft_hf_offpath_r11.py)
        return nn.Sequential(nn.Conv2d(4, 4, 3, groups=2, dtype=dtype))
    with pytest.raises(NotImplementedError, match="use_dora"):
        ml_peft.get_peft_model(grouped(ml.nn, ml.float32), ml_peft.LoraConfig(target_modules=["0"], use_dora=True))
    theirs_base, ours_base = pair(cnn)
    with pytest.raises(ValueError, match="Unknown initialization"):
        peft.get_peft_model(theirs_base, peft.LoraConfig(target_modules=["conv1"], init_lora_weights="pissa"))
    with pytest.raises(ValueError, match="Unknown initialization"):
        ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(target_modules=["conv1"], init_lora_weights="pissa"))


def test_unsupported_targets_refused_as_peft():
    theirs_base, ours_base = pair(mlp)
    with pytest.raises(ValueError, match="is not supported"):  # a ReLU
        peft.get_peft_model(theirs_base, peft.LoraConfig(target_modules=["seq.1"]))
    with pytest.raises(ValueError, match="is not supported"):
        ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(target_modules=["seq.1"]))
    with pytest.raises(ValueError, match="not found in the base model") as refused:
        ml_peft.get_peft_model(mlp(ml.nn, ml.float64), ml_peft.LoraConfig(target_modules=["nope"]))
    assert "seq.0, seq.1, seq.2" in refused.value.__notes__[0]  # a small model's full names, which target_modules
    # takes (minilora's hint, a note under PEFT's words)
    # (MultiheadAttention, refused here before, is adapted as PEFT does: test_peft_r7)
    with pytest.raises(ValueError, match="Conv2d"):  # PEFT's AdaLoRA also wraps Conv2d; minilora's Linear only
        ml_peft.get_peft_model(cnn(ml.nn, ml.float64), ml_peft.AdaLoraConfig(target_modules=["conv1"], total_step=10))
    with pytest.raises(NotImplementedError, match="PeftMixedModel with a ADALORA adapter"):  # LoRA mixes (r7)
        ml_peft.get_peft_model(mlp(ml.nn, ml.float64), ml_peft.AdaLoraConfig(target_modules=["seq.0"], total_step=9),
                               mixed=True)
