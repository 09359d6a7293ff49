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


INPUTS = {mlp: lambda rng: rng.standard_normal((4, 20)),
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
    ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config))
    assert trainable(ours) == trainable(theirs)
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    assert repr(ours).replace("ParameterDict()", "") .split() and type(ours.base_model.model).__name__ == \
        type(theirs.base_model.model).__name__
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
        theirs_merged, ours_merged = theirs.unload(), ours.unload()
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
    "nested_embedding_moduledict": (nested, dict(target_modules=["embed", "up", "down"], modules_to_save=["head"])),
    "nested_layers_to_transform": (nested, dict(target_modules=["up", "down"], layers_to_transform=[0, 2],
                                                layers_pattern="blocks")),
    "nested_exclude_modules": (nested, dict(target_modules=["up", "down", "head"], exclude_modules=["blocks.1.proj.up"])),
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
