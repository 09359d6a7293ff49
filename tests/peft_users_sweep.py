"""Round 33's sweep of PEFT users' forms off the first-hour path, minilora against PEFT 0.22.0 (a script, ~2 min).

    python -m tests.peft_users_sweep              # every form
    python -m tests.peft_users_sweep dora svd     # only the forms whose names hold these words

Each form is a script ``script(lib, lib_peft)`` run once with (torch, peft) on transformers' tiny float64 Llama
and once with (minilora, minilora.lora) on the same weights (tests/test_peft_fields_r13.py's ``llama``); it returns
what a user sees: logits, trainable names and counts, printed text, gradients after one backward, state-dict keys
and values, saved files. Classes: ``same``; ``SILENT`` (both answer, the answers differ: the worst); ``ml-error``
(minilora raises where PEFT answers); ``refusal`` (both raise, other class or words); ``WORST`` (minilora answers
where PEFT raises). Arrays are compared to 1e-6 absolute and 1e-5 relative: transformers computes the RoPE tables
in float32, minilora in float64 (4e-8 seen on logits); a wrong scale, layer or adapter moves them by 1e-3+.
Adapter weights that neither library computes through the model (state dicts, saved files) are compared to 1e-12.

Round 33 (286 forms) started at "22 of 286 forms differ: {'same': 263, 'refusal': 12, 'ml-error': 8, 'SILENT': 2,
'peft-bug': 1}" and left "2 of 286 forms differ: {'same': 282, 'ml-error': 2, 'peft-bug': 2}". The SILENT pair: a LoRA
Embedding was no ``LoraLayer`` (``rescale_adapter_scale`` left its scale alone). The two left are minilora's refusal
of ``ensure_weight_tying=True`` on a tied model (by name: it does not tie the adapters of embed_tokens and lm_head).
The ``peft-bug`` rows are PEFT's own faults that minilora does not copy (``PEFT_BUGS`` says which).
"""
import contextlib
import io
import json
import os
import sys
import tempfile
import traceback
import warnings

import numpy as np

warnings.simplefilter("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from test_peft_fields_r13 import IDS, LIBRARIES, llama  # noqa: E402
from test_hf_offpath_r10 import TINY  # noqa: E402

BASE = dict(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
ATOL, RTOL, EXACT = 1e-6, 1e-5, 1e-12


# --------------------------------------------------------------------------------------------------
# what a user sees
# --------------------------------------------------------------------------------------------------
def arr(lib, t):
    if isinstance(t, np.ndarray):  # (minilora's get_delta_weight: an array)
        return t
    t = t.detach()
    return t.float().numpy() if lib is torch and t.dtype == torch.bfloat16 else t.numpy()


def logits(lib, model, **kwargs):
    with lib.no_grad():
        return arr(lib, model(input_ids=lib.tensor(IDS), **kwargs).logits)


def llama_with(lib, dtype="float64", **extra):
    """llama() of another config (biases: attention_bias / mlp_bias) or dtype, the same weights in both."""
    import transformers
    from minilora import models
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, **extra)).eval()
    with torch.no_grad():  # (transformers zeroes new biases: random ones, so that a bias's part shows)
        for name, p in reference.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, dtype=p.dtype) * 0.1)
    if lib is torch:
        return reference.to(getattr(torch, dtype))
    model = models.LlamaForCausalLM(models.LlamaConfig(**TINY, **extra)).eval()
    model.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()}, strict=False)
    return model.to(getattr(lib, dtype))


def adapted(lib, lib_peft, seed=1, base=None, **config):
    base = llama(lib) if base is None else base
    lib.manual_seed(seed)
    return lib_peft.get_peft_model(base, lib_peft.LoraConfig(**dict(BASE, **config)))


def printed(model):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        model.print_trainable_parameters()
    return out.getvalue()


def trainable(model):
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def sd(lib, lib_peft, model, **kw):
    state = lib_peft.get_peft_model_state_dict(model, **kw)
    return {("exact", k): arr(lib, v) for k, v in state.items()}


def grads(lib, model):
    model.zero_grad() if hasattr(model, "zero_grad") else None
    out = model(input_ids=lib.tensor(IDS), labels=lib.tensor(IDS))
    out.loss.backward()
    return {n: arr(lib, p.grad) for n, p in model.named_parameters() if p.grad is not None}


def everything(lib, lib_peft, model, with_grads=True):
    seen = {"logits": logits(lib, model), "trainable": trainable(model), "printed": printed(model),
            "nb": list(model.get_nb_trainable_parameters()), "state": sd(lib, lib_peft, model)}
    if with_grads:
        seen["grads"] = grads(lib, model)
    return seen


def config_form(**config):
    """A form that builds a PeftModel from BASE + config and reports everything."""
    def script(lib, lib_peft):
        return everything(lib, lib_peft, adapted(lib, lib_peft, **config))
    return script


def merged_equal_base(**config):
    """A random init (no draw order compared): the model's logits with the adapter before and after, the merged
    model's logits, and that unload gives back the base (PiSSA/OLoRA change the base weights: merge restores)."""
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, **config)
        base = logits(lib, llama(lib))
        adapted_logits = logits(lib, model)
        merged = model.merge_and_unload()
        return {"adapted=base": bool(np.allclose(adapted_logits, base, atol=1e-9)),
                "merged": logits(lib, merged), "trainable_before": None}
    return script


# --------------------------------------------------------------------------------------------------
# the forms
# --------------------------------------------------------------------------------------------------
FORMS = {}


def form(name):
    def register(f):
        FORMS[name] = f
        return f
    return register


for _name, _cfg in {
    "target_list": dict(target_modules=["q_proj", "v_proj"]),
    "target_suffix_dotted": dict(target_modules=["self_attn.q_proj", "mlp.down_proj"]),
    "target_regex": dict(target_modules=r".*\.(q|k)_proj"),
    "target_regex_layer": dict(target_modules=r".*layers\.1\.self_attn\.(q|v)_proj"),
    "target_all_linear": dict(target_modules="all-linear"),
    "target_string_name": dict(target_modules="q_proj"),
    "exclude_list": dict(target_modules="all-linear", exclude_modules=["o_proj", "gate_proj"]),
    "exclude_regex": dict(target_modules="all-linear", exclude_modules=r".*layers\.0\..*"),
    "exclude_suffix_dotted": dict(target_modules=["q_proj", "v_proj"], exclude_modules=["layers.0.self_attn.q_proj"]),
    "layers_int": dict(layers_to_transform=1, layers_pattern="layers"),
    "layers_list": dict(layers_to_transform=[0], layers_pattern=["layers"]),
    "layers_no_pattern": dict(layers_to_transform=[1]),
    "layers_regex_target": dict(target_modules=r".*\.(q|v)_proj", layers_to_transform=[1], layers_pattern="layers"),
    "rank_pattern_plain": dict(rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 3}),
    "rank_pattern_regex": dict(rank_pattern={r"^model.layers.1.*v_proj": 6}, alpha_pattern={r".*0\.self_attn\.q_proj": 5}),
    "rank_pattern_full_name": dict(rank_pattern={"model.layers.0.self_attn.q_proj": 2}),
    "rank_pattern_layer_suffix": dict(rank_pattern={"layers.1.self_attn.v_proj": 1},
                                      alpha_pattern={"1.self_attn.q_proj": 16}),
    "rslora": dict(use_rslora=True),
    "rslora_rank_pattern": dict(use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 3}),
    "dora": dict(use_dora=True),
    "dora_all_linear": dict(use_dora=True, target_modules="all-linear"),
    "dora_rslora": dict(use_dora=True, use_rslora=True, rank_pattern={"q_proj": 2}),
    "dropout_eval": dict(lora_dropout=0.3),
    "bias_all": dict(bias="all"),
    "bias_lora_only": dict(bias="lora_only"),
    "modules_to_save_lm_head": dict(modules_to_save=["lm_head"]),
    "modules_to_save_norm": dict(modules_to_save=["input_layernorm"]),
    "lora_bias": dict(lora_bias=True),
    "lora_bias_dora": dict(lora_bias=True, use_dora=True),
    "init_true_seeded": dict(init_lora_weights=True),
    "init_gaussian_seeded": dict(init_lora_weights="gaussian"),
    "target_embed": dict(target_modules=["embed_tokens", "q_proj"]),
    "target_embed_dora": dict(target_modules=["embed_tokens"], use_dora=True),
    "target_lm_head": dict(target_modules=["lm_head"]),
    "task_causal": dict(task_type="CAUSAL_LM"),
    "alpha_float": dict(lora_alpha=5.5),
    "r_1": dict(r=1, lora_alpha=1),
}.items():
    FORMS["config:" + _name] = config_form(**_cfg)

for _name, _cfg in {
    "init_pissa": dict(init_lora_weights="pissa"),
    "init_pissa_niter": dict(init_lora_weights="pissa_niter_2"),
    "init_olora": dict(init_lora_weights="olora"),
    "init_true": dict(init_lora_weights=True),
    "init_gaussian": dict(init_lora_weights="gaussian"),
}.items():
    FORMS["init:" + _name] = merged_equal_base(**_cfg)


@form("init:pissa_weights")
def _(lib, lib_peft):
    """PiSSA: the residual base weight and B @ A are unique (signs of the SVD's vectors cancel)."""
    model = adapted(lib, lib_peft, init_lora_weights="pissa", target_modules=["q_proj"])
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    BA = arr(lib, layer.lora_B["default"].weight) @ arr(lib, layer.lora_A["default"].weight)
    return {"W_res": arr(lib, layer.base_layer.weight), "BA": BA, "logits": logits(lib, model)}


@form("init:olora_weights")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, init_lora_weights="olora", target_modules=["q_proj"])
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    BA = arr(lib, layer.lora_B["default"].weight) @ arr(lib, layer.lora_A["default"].weight)
    return {"W_res": arr(lib, layer.base_layer.weight), "BA": BA, "logits": logits(lib, model)}


@form("init:pissa_save_convert")
def _(lib, lib_peft):
    """save_pretrained(path_initial_model_for_weight_conversion=...): the converted LoRA's delta."""
    with tempfile.TemporaryDirectory() as tmp:
        model = adapted(lib, lib_peft, init_lora_weights="pissa", target_modules=["q_proj"])
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(os.path.join(tmp, "init"))
        model.peft_config["default"].init_lora_weights = "pissa"
        with lib.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.add_(0.01)
        after = logits(lib, model)
        model.save_pretrained(os.path.join(tmp, "conv"), path_initial_model_for_weight_conversion=os.path.join(tmp, "init"))
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), os.path.join(tmp, "conv"))
        cfg = json.load(open(os.path.join(tmp, "conv", "adapter_config.json")))
        return {"after": after, "loaded": logits(lib, loaded), "r": cfg["r"], "alpha": cfg["lora_alpha"],
                "init": cfg["init_lora_weights"]}


# ---- fan_in_fan_out: a GPT-2 Conv1D is transformers', not minilora's; a Linear with fan_in_fan_out=True is
# PEFT's warning and a reset to False
@form("config:fan_in_fan_out_on_linear")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, fan_in_fan_out=True)
    return {"fifo": model.peft_config["default"].fan_in_fan_out, "logits": logits(lib, model)}


# ---- PeftModel methods ------------------------------------------------------------------------------------
def two(lib, lib_peft, other=None, **config):
    model = adapted(lib, lib_peft, **config)
    lib.manual_seed(2)
    model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, **dict(dict(r=2, lora_alpha=6), **(other or {})))))
    return model


@form("method:add_set_adapter")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    before = everything(lib, lib_peft, model)
    model.set_adapter("other")
    return {"before": before, "after": everything(lib, lib_peft, model), "active": model.active_adapter}


@form("method:mixed_batch")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.eval()
    return {"mixed": logits(lib, model, adapter_names=["other", "__base__"]),
            "mixed2": logits(lib, model, adapter_names=["default", "other"])}


@form("method:mixed_batch_dora_refused")
def _(lib, lib_peft):
    model = two(lib, lib_peft, use_dora=True)
    model.eval()
    return logits(lib, model, adapter_names=["other", "default"])


@form("method:mixed_batch_embed")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(target_modules=["embed_tokens", "q_proj"]),
                target_modules=["embed_tokens", "v_proj"])
    model.eval()
    return logits(lib, model, adapter_names=["other", "default"])


@form("method:mixed_batch_generate")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.eval()
    out = model.generate(input_ids=lib.tensor(IDS), adapter_names=["other", "__base__"], max_new_tokens=3,
                         do_sample=False)
    return arr(lib, out)


@form("method:disable_adapter_ctx")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    with model.disable_adapter():
        off = logits(lib, model)
    return {"off": off, "on": logits(lib, model)}


@form("method:merge_unmerge")
def _(lib, lib_peft):
    model = two(lib, lib_peft, use_dora=False)
    model.base_model.merge_adapter()
    merged = logits(lib, model)
    model.base_model.unmerge_adapter()
    return {"merged": merged, "unmerged": logits(lib, model), "state": sd(lib, lib_peft, model)}


@form("method:merge_adapter_names")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.merge_adapter(["default", "other"])
    merged = logits(lib, model)
    model.unmerge_adapter()
    return {"merged": merged, "unmerged": logits(lib, model)}


@form("method:merge_dora_unmerge")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, use_dora=True)
    model.merge_adapter()
    merged = logits(lib, model)
    model.unmerge_adapter()
    return {"merged": merged, "unmerged": logits(lib, model), "state": sd(lib, lib_peft, model)}


@form("method:merge_and_unload_safe_names")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    merged = model.merge_and_unload(safe_merge=True, adapter_names=["other"])
    return {"logits": logits(lib, merged), "type": type(merged).__name__}


@form("method:merge_and_unload_positional")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    merged = model.merge_and_unload(False, True, ["default", "other"])
    return logits(lib, merged)


@form("method:merge_and_unload_bias_all")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, lora_bias=True, target_modules=["q_proj", "o_proj"])
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n and "bias" in n:
                p.fill_(0.25)
    return {"adapted": logits(lib, model), "merged": logits(lib, model.merge_and_unload())}


@form("method:unload")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    base = model.unload()
    return {"logits": logits(lib, base), "names": sorted(n for n, _ in base.named_parameters())}


@form("method:delete_adapter")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.delete_adapter("other")
    return {"all": everything(lib, lib_peft, model), "configs": sorted(model.peft_config)}


@form("method:delete_active_adapter")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.delete_adapter("default")
    return {"active": model.active_adapters, "logits": logits(lib, model), "trainable": trainable(model)}


def weighted(combination_type, weights=(1.0, 0.5), other=None, **kw):
    def script(lib, lib_peft):
        model = two(lib, lib_peft, other=other)
        model.add_weighted_adapter(["default", "other"], list(weights), "mix", combination_type=combination_type,
                                   **kw)
        model.set_adapter("mix")
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        delta = arr(lib, layer.get_delta_weight("mix"))
        return {"logits": logits(lib, model), "delta": delta, "rank": layer.r["mix"],
                "scaling": layer.scaling["mix"], "config_r": model.peft_config["mix"].r,
                "config_alpha": model.peft_config["mix"].lora_alpha,
                "targets": sorted(model.peft_config["mix"].target_modules)}
    return script


def weighted_factors(combination_type, weights=(1.0, 0.5), other=None, **kw):
    """The combined A and B themselves (deterministic combinations)."""
    def script(lib, lib_peft):
        model = two(lib, lib_peft, other=other)
        model.add_weighted_adapter(["default", "other"], list(weights), "mix", combination_type=combination_type,
                                   **kw)
        return {k: v for k, v in sd(lib, lib_peft, model, adapter_name="mix").items()}
    return script


for _name, (_ct, _kw) in {
    "linear": ("linear", {}), "cat": ("cat", {}), "svd": ("svd", {}), "ties": ("ties", dict(density=0.5)),
    "ties_frequency": ("ties", dict(density=0.5, majority_sign_method="frequency")),
    "dare_linear": ("dare_linear", dict(density=0.5)), "dare_ties": ("dare_ties", dict(density=0.5)),
    "magnitude_prune": ("magnitude_prune", dict(density=0.5)), "ties_svd": ("ties_svd", dict(density=0.5)),
    "magnitude_prune_svd": ("magnitude_prune_svd", dict(density=0.5)),
    "dare_linear_svd": ("dare_linear_svd", dict(density=0.5)), "svd_rank": ("svd", dict(svd_rank=3)),
    "svd_clamp": ("svd", dict(svd_clamp=0.9)), "svd_positional_rank": ("svd", dict(svd_rank=2, svd_full_matrices=False)),
}.items():
    _other = dict(r=4, lora_alpha=8) if _ct in ("linear", "ties", "dare_linear", "dare_ties",
                                                "magnitude_prune") else None
    FORMS["weighted:" + _name] = weighted(_ct, other=_other, **_kw)
    if _ct in ("linear", "cat", "ties", "magnitude_prune"):
        FORMS["weighted_factors:" + _name] = weighted_factors(_ct, other=_other, **_kw)
FORMS["weighted:negative_cat"] = weighted("cat", weights=(1.0, -0.7))
FORMS["weighted:negative_svd"] = weighted("svd", weights=(-1.0, 0.7))
FORMS["weighted:linear_different_alpha"] = weighted("linear", other=dict(r=4, lora_alpha=2))
FORMS["weighted:linear_different_targets"] = weighted("linear", other=dict(r=4, lora_alpha=8,
                                                                           target_modules=["q_proj", "k_proj"]))
FORMS["weighted:svd_different_targets"] = weighted("svd", other=dict(target_modules=["q_proj", "k_proj"]))
FORMS["weighted:cat_rslora"] = weighted("cat", other=dict(use_rslora=True))


@form("weighted:dare_seeded")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(r=4, lora_alpha=8))
    lib.manual_seed(5)
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="dare_linear",
                               density=0.5)
    model.set_adapter("mix")
    return logits(lib, model)


@form("weighted:svd_seeded")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="svd")
    return sd(lib, lib_peft, model, adapter_name="mix")


@form("method:requires_grad")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.set_requires_grad("other", True)
    a = trainable(model)
    model.set_requires_grad(["default"], requires_grad=False)
    return {"a": a, "b": trainable(model), "nb": list(model.get_nb_trainable_parameters()), "p": printed(model)}


@form("method:enable_disable_layers")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.base_model.disable_adapter_layers()
    off = logits(lib, model)
    model.base_model.enable_adapter_layers()
    return {"off": off, "on": logits(lib, model)}


@form("method:nb_trainable_modules_to_save")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, modules_to_save=["lm_head"], use_dora=True)
    return {"nb": list(model.get_nb_trainable_parameters()), "p": printed(model)}


@form("method:state_dict_roundtrip")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    state = lib_peft.get_peft_model_state_dict(model, adapter_name="other")
    fresh = adapted(lib, lib_peft, seed=7)
    result = lib_peft.set_peft_model_state_dict(fresh, state)
    return {"keys": sorted(state), "logits": logits(lib, fresh),
            "missing": sorted(k for k in result.missing_keys if "lora" in k),
            "unexpected": sorted(result.unexpected_keys)}


@form("method:state_dict_dora_bias")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, use_dora=True, bias="lora_only", lora_bias=False, modules_to_save=["lm_head"])
    return sd(lib, lib_peft, model)


@form("method:state_dict_bias_all")
def _(lib, lib_peft):
    return sd(lib, lib_peft, adapted(lib, lib_peft, bias="all"))


def files(folder):
    from safetensors.numpy import load_file
    out = {}
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if name.endswith(".safetensors"):
                out[rel] = {("exact", k): v for k, v in load_file(path).items()}
                out[rel + ":dtypes"] = {k: str(v.dtype) for k, v in load_file(path).items()}
            elif name.endswith(".bin"):
                state = torch.load(path, weights_only=True) if True else None
                out[rel] = {("exact", k): (v.numpy() if hasattr(v, "numpy") else np.asarray(v._array))
                            for k, v in state.items()}
                out[rel + ":dtypes"] = {k: str(v.dtype).replace("torch.", "") for k, v in state.items()}
            elif name == "adapter_config.json":
                cfg = json.load(open(path))
                # (PEFT writes target_modules from a set: its order is the string hash's, random per process)
                out[rel] = {k: (sorted(v) if k in ("target_modules", "exclude_modules") and isinstance(v, list)
                                else v) for k, v in cfg.items() if k not in ("peft_version", "revision")}
            else:
                out[rel] = "present"
    return out


@form("save:selected_adapters_bin")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, selected_adapters=["other"], safe_serialization=False)
        return files(tmp)


@form("save:all_adapters")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return files(tmp)


@form("save:dora_bias_modules")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, use_dora=True, lora_bias=True, modules_to_save=["lm_head"], bias="all")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return files(tmp)


@form("save:rank_pattern_rslora")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 3},
                    layers_to_transform=[1], layers_pattern="layers")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return files(tmp)


def cross_load(writer_is_peft, adapter_name="default", is_trainable=False, safe=True, **config):
    """One library saves, the other loads (from_pretrained with adapter_name / is_trainable)."""
    def script(lib, lib_peft):
        writer = LIBRARIES["torch" if writer_is_peft else "minilora"]
        with tempfile.TemporaryDirectory() as tmp:
            saver = two(writer[0], writer[1], **config)
            saver.save_pretrained(tmp, safe_serialization=safe)
            expected = logits(writer[0], saver)
            loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp, adapter_name=adapter_name,
                                                        is_trainable=is_trainable)
            loaded.load_adapter(os.path.join(tmp, "other"), adapter_name="second", is_trainable=is_trainable)
            got = logits(lib, loaded)
            loaded.set_adapter("second")
            return {"logits": got, "expected": expected, "second": logits(lib, loaded),
                    "trainable": trainable(loaded), "adapters": sorted(loaded.peft_config),
                    "training": loaded.training, "inference_mode": loaded.peft_config[adapter_name].inference_mode}
    return script


for _w in (True, False):
    _wn = "peft_file" if _w else "minilora_file"
    FORMS[f"load:{_wn}"] = cross_load(_w)
    FORMS[f"load:{_wn}_named_trainable"] = cross_load(_w, adapter_name="mine", is_trainable=True)
    FORMS[f"load:{_wn}_bin"] = cross_load(_w, safe=False)
    FORMS[f"load:{_wn}_dora_modules"] = cross_load(_w, use_dora=True, modules_to_save=["lm_head"],
                                                   target_modules=["q_proj", "embed_tokens"])
    FORMS[f"load:{_wn}_lora_bias_tokens"] = cross_load(_w, lora_bias=True, trainable_token_indices=[2, 4])
    FORMS[f"load:{_wn}_rank_pattern"] = cross_load(_w, rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 3},
                                                   use_rslora=True)


@form("load:load_adapter_positional")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        model = two(lib, lib_peft)
        model.save_pretrained(tmp, selected_adapters=["other"])
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), os.path.join(tmp, "other"), "x")
        loaded.load_adapter(os.path.join(tmp, "other"), "y", True)
        return {"adapters": sorted(loaded.peft_config), "trainable": trainable(loaded),
                "active": loaded.active_adapter, "logits": logits(lib, loaded)}


@form("load:load_adapter_then_forward_mixed")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        model = two(lib, lib_peft)
        model.save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp)
        loaded.load_adapter(os.path.join(tmp, "other"), adapter_name="other")
        return logits(lib, loaded, adapter_names=["other", "default"])


@form("method:train_step_dora")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, use_dora=True, lora_dropout=0.0)
    model.train()
    return grads(lib, model)


@form("method:train_step_two_active")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.base_model.set_adapter(["default", "other"])
    return {"g": grads(lib, model), "t": trainable(model)}


@form("method:rescale_adapter_scale")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    helpers = __import__(lib_peft.__name__ + ".helpers", fromlist=["x"])
    with helpers.rescale_adapter_scale(model, 0.5):
        inside = logits(lib, model)
    return {"inside": inside, "after": logits(lib, model)}


@form("method:set_adapter_scale")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    layer.set_scale("default", 0.5)
    a = logits(lib, model)
    layer.scale_layer(2.0)
    b = logits(lib, model)
    layer.unscale_layer()
    return {"a": a, "b": b, "c": logits(lib, model), "s": layer.scaling["default"]}


@form("method:get_layer_status")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    status = model.get_model_status()
    return {k: (sorted(v) if isinstance(v, (list, dict)) else v) for k, v in status.__dict__.items()}



# ---- a Llama with biases (attention_bias, mlp_bias): bias="all"/"lora_only", lora_bias merges
def biased_form(action=None, **config):
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, base=llama_with(lib, attention_bias=True, mlp_bias=True), **config)
        if action is None:
            return everything(lib, lib_peft, model)
        return action(lib, lib_peft, model)
    return script


def _lora_bias_set(lib, model):
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n and n.endswith(".bias"):
                p.fill_(0.25)


def _merge_unload(lib, lib_peft, model):
    _lora_bias_set(lib, model)
    before = logits(lib, model)
    merged = model.merge_and_unload()
    return {"before": before, "merged": logits(lib, merged),
            "biases": {("exact", n): arr(lib, p) for n, p in merged.named_parameters() if n.endswith("bias")}}


def _merge_unmerge(lib, lib_peft, model):
    _lora_bias_set(lib, model)
    before = logits(lib, model)
    model.merge_adapter()
    merged = logits(lib, model)
    model.unmerge_adapter()
    return {"before": before, "merged": merged, "after": logits(lib, model),
            "biases": {("exact", n): arr(lib, p) for n, p in model.named_parameters() if n.endswith("bias")}}


def _disabled(lib, lib_peft, model):
    with lib.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".bias") and p.requires_grad:
                p.add_(0.5)
    with model.disable_adapter():
        off = logits(lib, model)
    return {"off": off, "on": logits(lib, model)}


def _unload(lib, lib_peft, model):
    _lora_bias_set(lib, model)
    return logits(lib, model.unload())


for _name, (_action, _cfg) in {
    "plain": (None, {}), "all": (None, dict(bias="all")), "lora_only": (None, dict(bias="lora_only")),
    "all_all_linear": (None, dict(bias="all", target_modules="all-linear")),
    "lora_bias": (None, dict(lora_bias=True)), "lora_bias_mlp": (None, dict(lora_bias=True, target_modules=["up_proj"])),
    "lora_bias_merge": (_merge_unload, dict(lora_bias=True)),
    "lora_bias_merge_unmerge": (_merge_unmerge, dict(lora_bias=True)),
    "lora_bias_unload": (_unload, dict(lora_bias=True)),
    "all_disabled": (_disabled, dict(bias="all")), "lora_only_disabled": (_disabled, dict(bias="lora_only")),
    "dora_bias_merge": (_merge_unmerge, dict(use_dora=True)),
    "dora_bias_merge_unload": (_merge_unload, dict(use_dora=True)),
    "dora_bias": (None, dict(use_dora=True, bias="lora_only")),
    "rslora_bias_merge": (_merge_unload, dict(use_rslora=True, bias="all")),
}.items():
    FORMS["biased:" + _name] = biased_form(_action, **_cfg)


@form("biased:weighted_lora_bias")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, base=llama_with(lib, attention_bias=True), lora_bias=True)
    lib.manual_seed(2)
    model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, lora_bias=True)))
    _lora_bias_set(lib, model)
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="linear")
    model.set_adapter("mix")
    return {"logits": logits(lib, model), "state": sd(lib, lib_peft, model, adapter_name="mix")}


@form("biased:mixed_batch_lora_bias")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, base=llama_with(lib, attention_bias=True), lora_bias=True)
    lib.manual_seed(2)
    model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, lora_bias=True)))
    _lora_bias_set(lib, model)
    model.eval()
    return logits(lib, model, adapter_names=["other", "default"])


# ---- float32 bases: PiSSA / OLoRA (their SVD/QR signs cancel in B @ A and in the residual weight)
def f32_init(init, action):
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, base=llama_with(lib, "float32"), init_lora_weights=init,
                        target_modules=["q_proj", "v_proj"])
        return action(lib, lib_peft, model)
    return script


def _residual(lib, lib_peft, model):
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    BA = arr(lib, layer.lora_B["default"].weight) @ arr(lib, layer.lora_A["default"].weight)
    return {"W_res": arr(lib, layer.base_layer.weight).astype(np.float64),
            "BA": BA.astype(np.float64), "logits": logits(lib, model).astype(np.float64),
            "trainable": trainable(model), "printed": printed(model)}


def _merged(lib, lib_peft, model):
    return logits(lib, model.merge_and_unload()).astype(np.float64)


def _convert(lib, lib_peft, model):
    with tempfile.TemporaryDirectory() as tmp:
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(os.path.join(tmp, "init"))
        model.peft_config["default"].init_lora_weights = lib_peft.LoraConfig().init_lora_weights.__class__(
            model.peft_config["default"].init_lora_weights)
        with lib.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.add_(0.01)
        after = logits(lib, model).astype(np.float64)
        model.save_pretrained(os.path.join(tmp, "conv"),
                              path_initial_model_for_weight_conversion=os.path.join(tmp, "init"))
        loaded = lib_peft.PeftModel.from_pretrained(llama_with(lib, "float32"), os.path.join(tmp, "conv"))
        cfg = json.load(open(os.path.join(tmp, "conv", "adapter_config.json")))
        return {"after": after, "loaded": logits(lib, loaded).astype(np.float64), "r": cfg["r"],
                "alpha": cfg["lora_alpha"], "init": cfg["init_lora_weights"], "rank_pattern": cfg["rank_pattern"]}


for _init in ("pissa", "pissa_niter_2", "olora"):
    FORMS[f"f32:{_init}_residual"] = f32_init(_init, _residual)
    FORMS[f"f32:{_init}_merged"] = f32_init(_init, _merged)
    FORMS[f"f32:{_init}_convert"] = f32_init(_init, _convert)
FORMS["f32:plain"] = f32_init(False, _residual)


@form("f32:pissa_rank_pattern")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, base=llama_with(lib, "float32"), init_lora_weights="pissa",
                    rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 3})
    return _residual(lib, lib_peft, model)


# ---- dropout in training mode, seeded: the same draws
@form("train:dropout_seeded")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, lora_dropout=0.3)
    model.train()
    lib.manual_seed(11)
    return grads(lib, model)


@form("train:dropout_dora_seeded")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, lora_dropout=0.3, use_dora=True)
    model.train()
    lib.manual_seed(11)
    return grads(lib, model)


@form("train:dropout_embed_seeded")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, lora_dropout=0.3, target_modules=["embed_tokens", "q_proj"])
    model.train()
    lib.manual_seed(11)
    return grads(lib, model)


# ---- more config forms
for _name, _cfg in {
    "exclude_all_linear_lm_head": dict(target_modules="all-linear", exclude_modules=["lm_head"]),
    "exclude_and_layers": dict(exclude_modules=["v_proj"], layers_to_transform=[0, 1], layers_pattern="layers"),
    "alpha_pattern_only": dict(alpha_pattern={"v_proj": 2}),
    "rank_pattern_embed": dict(target_modules=["embed_tokens", "q_proj"], rank_pattern={"embed_tokens": 2},
                               alpha_pattern={"embed_tokens": 7}),
    "rank_pattern_dora": dict(use_dora=True, rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 5}),
    "rank_pattern_regex_anchor": dict(rank_pattern={r".*\.1\.self_attn\.q_proj": 2}),
    "modules_to_save_and_target": dict(modules_to_save=["lm_head"], target_modules=["q_proj", "lm_head"]),
    "modules_to_save_embed": dict(modules_to_save=["embed_tokens"]),
    "trainable_token_indices": dict(trainable_token_indices=[3, 5]),
    "trainable_token_indices_dict": dict(trainable_token_indices={"embed_tokens": [3, 5]}),
    "target_parameters": dict(target_modules=[], target_parameters=["mlp.up_proj.weight"]),
    "layers_pattern_wrong": dict(layers_to_transform=[0], layers_pattern="blocks"),
    "dora_embed_rslora": dict(target_modules=["embed_tokens", "v_proj"], use_dora=True, use_rslora=True),
    "init_gaussian_dora": dict(init_lora_weights="gaussian", use_dora=True),
    "init_true_rank_pattern": dict(init_lora_weights=True, rank_pattern={"v_proj": 2}),
    "init_true_embed": dict(init_lora_weights=True, target_modules=["embed_tokens"]),
    "init_gaussian_embed": dict(init_lora_weights="gaussian", target_modules=["embed_tokens"]),
    "init_true_lora_bias": dict(init_lora_weights=True, lora_bias=True),
}.items():
    FORMS["config:" + _name] = config_form(**_cfg)


@form("method:set_adapter_inference_mode")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.set_adapter("other", inference_mode=True)
    return {"t": trainable(model), "nb": list(model.get_nb_trainable_parameters()), "p": printed(model)}


@form("method:state_dict_roundtrip_r2")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    state = lib_peft.get_peft_model_state_dict(model, adapter_name="other")
    fresh = adapted(lib, lib_peft, seed=7, r=2, lora_alpha=6)
    result = lib_peft.set_peft_model_state_dict(fresh, state)
    return {"keys": sorted(state), "logits": logits(lib, fresh),
            "missing": sorted(k for k in result.missing_keys if "lora" in k),
            "unexpected": sorted(result.unexpected_keys)}


@form("method:state_dict_ignore_mismatched")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    state = lib_peft.get_peft_model_state_dict(model, adapter_name="other")
    fresh = adapted(lib, lib_peft, seed=7)
    result = lib_peft.set_peft_model_state_dict(fresh, state, ignore_mismatched_sizes=True)
    return {"logits": logits(lib, fresh), "unexpected": sorted(result.unexpected_keys),
            "missing": sorted(k for k in result.missing_keys if "lora" in k)}


@form("method:state_dict_low_cpu")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    state = lib_peft.get_peft_model_state_dict(model, adapter_name="other")
    fresh = adapted(lib, lib_peft, seed=7)
    fresh.add_adapter("new", lib_peft.LoraConfig(**dict(BASE, r=2, lora_alpha=6)), low_cpu_mem_usage=True)
    lib_peft.set_peft_model_state_dict(fresh, state, adapter_name="new", low_cpu_mem_usage=True)
    fresh.set_adapter("new")
    return logits(lib, fresh)


@form("method:save_embedding_layers_true")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, target_modules=["embed_tokens", "q_proj"])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, save_embedding_layers=True)
        return files(tmp)


@form("method:weighted_embed_cat")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(target_modules=["embed_tokens", "q_proj"]),
                target_modules=["embed_tokens", "q_proj"])
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="cat")
    model.set_adapter("mix")
    return {"logits": logits(lib, model), "state": sd(lib, lib_peft, model, adapter_name="mix")}


@form("method:weighted_embed_svd")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(target_modules=["embed_tokens", "q_proj"]),
                target_modules=["embed_tokens", "q_proj"])
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="svd")
    model.set_adapter("mix")
    return logits(lib, model)


@form("method:weighted_modules_to_save")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(modules_to_save=["lm_head"]), modules_to_save=["lm_head"])
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="cat")
    model.set_adapter("mix")
    return {"logits": logits(lib, model), "t": trainable(model)}


@form("method:weighted_rslora_svd")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(use_rslora=True), use_rslora=True)
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="svd")
    model.set_adapter("mix")
    return {"logits": logits(lib, model), "cfg": model.peft_config["mix"].use_rslora}


@form("method:weighted_linear_rslora")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(use_rslora=True, r=4, lora_alpha=8), use_rslora=True)
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="linear")
    model.set_adapter("mix")
    return logits(lib, model)


@form("method:weighted_rank_pattern")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(rank_pattern={"v_proj": 3}), rank_pattern={"q_proj": 2})
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "mix", combination_type="cat")
    model.set_adapter("mix")
    return {"logits": logits(lib, model), "rp": model.peft_config["mix"].rank_pattern,
            "ap": model.peft_config["mix"].alpha_pattern}


@form("method:mixed_batch_modules_to_save")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(modules_to_save=["lm_head"]), modules_to_save=["lm_head"])
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "modules_to_save.other" in n:
                p.mul_(1.5)
    model.eval()
    return logits(lib, model, adapter_names=["other", "__base__"])


@form("method:mixed_batch_trainable_tokens")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(trainable_token_indices=[1, 5]), trainable_token_indices=[1, 5])
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "token_adapter" in n and "other" in n:
                p.add_(1.0)
    model.eval()
    return logits(lib, model, adapter_names=["other", "default"])


@form("method:merge_two_active")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.base_model.set_adapter(["default", "other"])
    before = logits(lib, model)
    return {"before": before, "merged": logits(lib, model.merge_and_unload())}


@form("method:delete_then_add_same_name")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.delete_adapter("other")
    lib.manual_seed(3)
    model.add_adapter("other", lib_peft.LoraConfig(**dict(BASE, r=3, lora_alpha=3)))
    model.set_adapter("other")
    return {"logits": logits(lib, model), "t": trainable(model), "state": sd(lib, lib_peft, model, adapter_name="other")}


@form("load:from_pretrained_config_kw")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        config = lib_peft.LoraConfig.from_pretrained(tmp)
        config.inference_mode = False
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp, config=config)
        return {"t": trainable(loaded), "logits": logits(lib, loaded)}


@form("load:low_cpu_mem_usage")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp, low_cpu_mem_usage=True)
        loaded.load_adapter(os.path.join(tmp, "other"), "other", low_cpu_mem_usage=True)
        loaded.set_adapter("other")
        return logits(lib, loaded)


@form("load:key_mapping")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp, key_mapping={"^model": "model"})
        return logits(lib, loaded)


@form("load:trainable_then_train")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft, use_dora=True).save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp, is_trainable=True)
        return {"g": grads(lib, loaded), "nb": list(loaded.get_nb_trainable_parameters())}


@form("method:print_after_add")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(modules_to_save=["lm_head"]))
    model.set_adapter("other")
    return {"p": printed(model), "nb": list(model.get_nb_trainable_parameters()), "t": trainable(model)}


@form("method:set_adapter_scale_rslora")
def _(lib, lib_peft):
    model = two(lib, lib_peft, use_rslora=True)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    layer.set_scale("default", 0.5)
    a = layer.scaling["default"]
    layer.scale_layer(3.0)
    b = layer.scaling["default"]
    layer.unscale_layer(3.0)
    c = layer.scaling["default"]
    layer.unscale_layer()
    return [a, b, c, layer.scaling["default"], logits(lib, model)]



# ---- 16-bit bases: the adapters' dtype (autocast_adapter_dtype), saved dtypes, merged weights
def half_form(dtype, autocast=True, action=None, **config):
    def script(lib, lib_peft):
        base = llama_with(lib, dtype)
        lib.manual_seed(1)
        model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**dict(BASE, **config)),
                                        autocast_adapter_dtype=autocast)
        seen = {"dtypes": sorted((n, str(p.dtype).replace("torch.", "").replace("minilora.", ""))
                                 for n, p in model.named_parameters() if p.requires_grad),
                "logits": ("loose", logits(lib, model).astype(np.float64))}
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            seen["files"] = files(tmp)
        if action:
            seen["action"] = action(lib, lib_peft, model)
        return seen
    return script


def _half_merged(lib, lib_peft, model):
    merged = model.merge_and_unload()
    w = merged.model.layers[0].self_attn.q_proj.weight
    return {"w": ("loose", arr(lib, w.float()).astype(np.float64)), "dtype": str(w.dtype).split(".")[-1]}


for _dt in ("bfloat16", "float16"):
    FORMS[f"half:{_dt}"] = half_form(_dt)
    FORMS[f"half:{_dt}_no_autocast"] = half_form(_dt, autocast=False)
    FORMS[f"half:{_dt}_dora"] = half_form(_dt, use_dora=True)
    FORMS[f"half:{_dt}_merged"] = half_form(_dt, action=_half_merged)
    FORMS[f"half:{_dt}_embed_modules"] = half_form(_dt, target_modules=["embed_tokens", "q_proj"],
                                                   modules_to_save=["lm_head"])


for _name, _cfg in {
    "target_set": dict(target_modules={"q_proj", "v_proj"}),
    "target_tuple": dict(target_modules=("q_proj", "v_proj")),
    "target_full_name_layers": dict(target_modules=["model.layers.0.self_attn.q_proj", "v_proj"],
                                    layers_to_transform=[0], layers_pattern="layers"),
    "exclude_regex_with_regex_target": dict(target_modules=r".*proj", exclude_modules=r".*mlp.*"),
    "target_regex_and_exclude_list": dict(target_modules=r".*_proj", exclude_modules=["k_proj", "o_proj"]),
    "rank_pattern_overlap_order": dict(rank_pattern={"q_proj": 2, r"model\.layers\.0\.self_attn\.q_proj": 6}),
    "rank_pattern_overlap_order2": dict(rank_pattern={r"model\.layers\.0\.self_attn\.q_proj": 6, "q_proj": 2}),
    "alpha_pattern_dotted": dict(alpha_pattern={"self_attn.v_proj": 2}),
    "bias_all_modules_to_save": dict(bias="all", modules_to_save=["lm_head"]),
    "megatron_none": dict(megatron_config=None),
}.items():
    FORMS["config:" + _name] = config_form(**_cfg)


@form("config:adapter_name_kw")
def _(lib, lib_peft):
    base = llama(lib)
    lib.manual_seed(1)
    model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**BASE), adapter_name="mine")
    return {"state": sd(lib, lib_peft, model, adapter_name="mine"), "logits": logits(lib, model),
            "g": grads(lib, model), "t": trainable(model)}


@form("config:inference_mode")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, inference_mode=True)
    return everything(lib, lib_peft, model, with_grads=False)


@form("method:merge_and_unload_modules_to_save")
def _(lib, lib_peft):
    model = two(lib, lib_peft, modules_to_save=["lm_head"], other=dict(modules_to_save=["lm_head"]))
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "modules_to_save.default" in n:
                p.mul_(1.5)
    merged = model.merge_and_unload()
    return {"logits": logits(lib, merged), "names": sorted(n for n, _ in merged.named_parameters())}


@form("method:unload_modules_to_save")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, modules_to_save=["lm_head"])
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "modules_to_save.default" in n:
                p.mul_(1.5)
    base = model.unload()
    return {"logits": logits(lib, base), "names": sorted(n for n, _ in base.named_parameters())}


@form("method:merge_and_unload_trainable_tokens")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, trainable_token_indices=[3, 5])
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "token_adapter" in n and p.requires_grad:
                p.add_(1.0)
    before = logits(lib, model)
    merged = model.merge_and_unload()
    return {"before": before, "logits": logits(lib, merged), "names": sorted(n for n, _ in merged.named_parameters())}


@form("method:delete_modules_to_save_adapter")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(modules_to_save=["lm_head"]))
    model.set_adapter("other")
    model.delete_adapter("other")
    return {"names": sorted(n for n, _ in model.named_parameters()), "active": model.active_adapters,
            "logits": logits(lib, model)}


@form("method:merge_inactive_adapter")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.merge_adapter(["other"])
    merged = logits(lib, model)
    model.unmerge_adapter()
    return {"merged": merged, "after": logits(lib, model)}


@form("method:safe_merge_dora")
def _(lib, lib_peft):
    model = two(lib, lib_peft, use_dora=True, other=dict(use_dora=True))
    merged = model.merge_and_unload(safe_merge=True, adapter_names=["default", "other"])
    return logits(lib, merged)


@form("method:dora_merge_embed")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, use_dora=True, target_modules=["embed_tokens", "q_proj"])
    before = logits(lib, model)
    model.merge_adapter()
    merged = logits(lib, model)
    model.unmerge_adapter()
    return {"before": before, "merged": merged, "after": logits(lib, model)}


@form("method:train_two_active_dora_embed")
def _(lib, lib_peft):
    model = two(lib, lib_peft, use_dora=True, target_modules=["embed_tokens", "q_proj"],
                other=dict(target_modules=["embed_tokens", "v_proj"]))
    model.base_model.set_adapter(["default", "other"])
    return {"g": grads(lib, model), "t": trainable(model)}



# ---- tied embeddings, layer replication, DoRA with dropout, layer-level calls
def tied_form(**config):
    def script(lib, lib_peft):
        model = adapted(lib, lib_peft, base=llama(lib, tie=True), **config)
        seen = everything(lib, lib_peft, model)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            seen["files"] = files(tmp)
        return seen
    return script


for _name, _cfg in {
    "lm_head": dict(target_modules=["lm_head", "q_proj"]),
    "embed": dict(target_modules=["embed_tokens"]),
    "embed_lm_head_tying": dict(target_modules=["embed_tokens", "lm_head"], ensure_weight_tying=True),
    "modules_to_save_lm_head": dict(modules_to_save=["lm_head"]),
    "modules_to_save_embed_tying": dict(modules_to_save=["embed_tokens"], ensure_weight_tying=True),
    "tokens_tied": dict(trainable_token_indices=[3, 5]),
    "tokens_tied_tying": dict(trainable_token_indices=[3, 5], ensure_weight_tying=True),
}.items():
    FORMS["tied:" + _name] = tied_form(**_cfg)

for _name, _cfg in {
    "layer_replication": dict(layer_replication=[[0, 2], [1, 2]]),
    "dora_dropout_eval": dict(use_dora=True, lora_dropout=0.2),
    "dora_rank_pattern_dropout": dict(use_dora=True, lora_dropout=0.2, rank_pattern={"v_proj": 2}),
}.items():
    FORMS["config:" + _name] = config_form(**_cfg)


@form("train:dora_dropout_seeded_two_active")
def _(lib, lib_peft):
    model = two(lib, lib_peft, use_dora=True, lora_dropout=0.25, other=dict(lora_dropout=0.5))
    model.base_model.set_adapter(["default", "other"])
    model.train()
    lib.manual_seed(13)
    return grads(lib, model)


@form("layer:merge_safe_names")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    layer.merge(safe_merge=True, adapter_names=["other"])
    merged = logits(lib, model)
    names = list(layer.merged_adapters)
    layer.unmerge()
    return {"merged": merged, "names": names, "after": logits(lib, model), "is": layer.merged}


@form("layer:merge_positional")
def _(lib, lib_peft):
    model = two(lib, lib_peft, use_dora=True)
    layer = model.base_model.model.model.layers[1].self_attn.v_proj
    layer.merge(True, ["default", "other"])
    w = arr(lib, layer.base_layer.weight)
    layer.unmerge()
    return {"w": w, "after": arr(lib, layer.base_layer.weight)}


@form("layer:update_layer_and_status")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    status = model.get_layer_status()
    return [(s.name, s.module_type, s.enabled, s.active_adapters, s.merged_adapters, s.available_adapters,
             dict(s.requires_grad), sorted(s.devices)) for s in status]


@form("load:save_named_adapter_subfolder")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), os.path.join(tmp, "other"), adapter_name="x")
        with tempfile.TemporaryDirectory() as tmp2:
            loaded.save_pretrained(tmp2, selected_adapters=["x"], safe_serialization=False)
            return files(tmp2)


@form("load:load_adapter_existing_name")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp)
        loaded.load_adapter(os.path.join(tmp, "other"), adapter_name="default")
        return logits(lib, loaded)



@form("method:rescale_adapter_scale_embed")
def _(lib, lib_peft):
    model = two(lib, lib_peft, target_modules=["embed_tokens", "q_proj"], other=dict(target_modules=["embed_tokens"]))
    helpers = __import__(lib_peft.__name__ + ".helpers", fromlist=["x"])
    with helpers.rescale_adapter_scale(model, 0.5):
        inside = logits(lib, model)
    return {"inside": inside, "after": logits(lib, model)}


@form("method:rescale_adapter_scale_adalora")
def _(lib, lib_peft):
    base = llama(lib)
    lib.manual_seed(1)
    model = lib_peft.get_peft_model(base, lib_peft.AdaLoraConfig(init_r=4, target_r=2, total_step=8, lora_alpha=8,
                                                                 init_lora_weights=False,
                                                                 target_modules=["q_proj", "v_proj"]))
    helpers = __import__(lib_peft.__name__ + ".helpers", fromlist=["x"])
    with helpers.rescale_adapter_scale(model, 0.5):
        inside = logits(lib, model)
    return {"inside": inside, "after": logits(lib, model)}


@form("method:isinstance_lora_layer")
def _(lib, lib_peft):
    LoraLayer = (__import__("peft.tuners.lora", fromlist=["x"]) if lib is torch else lib_peft).LoraLayer
    model = adapted(lib, lib_peft, target_modules=["embed_tokens", "q_proj", "lm_head"])
    return sorted(n for n, m in model.named_modules() if isinstance(m, LoraLayer))


@form("method:set_scale_embed")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, target_modules=["embed_tokens"], use_rslora=True)
    layer = model.base_model.model.model.embed_tokens
    layer.set_scale("default", 0.25)
    a = logits(lib, model)
    layer.scale_layer(2)
    b = logits(lib, model)
    layer.unscale_layer()
    return [a, b, logits(lib, model), layer.scaling]



@form("refusal:mixed_batch_unknown")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.eval()
    return logits(lib, model, adapter_names=["nope", "default"])


@form("refusal:mixed_batch_length")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.eval()
    return logits(lib, model, adapter_names=["other", "default", "other"])


@form("refusal:mixed_batch_merged")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.eval()
    model.merge_adapter()
    return logits(lib, model, adapter_names=["other", "default"])


@form("refusal:mixed_batch_training")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.train()
    return logits(lib, model, adapter_names=["other", "default"])


@form("refusal:excluded_all")
def _(lib, lib_peft):
    return adapted(lib, lib_peft, target_modules=["q_proj"], exclude_modules=["q_proj"])


@form("refusal:layers_only_missing")
def _(lib, lib_peft):
    return adapted(lib, lib_peft, layers_to_transform=[5])



for _name, _cfg in {
    "dora_init_true": dict(use_dora=True, init_lora_weights=True),
    "dora_gaussian_embed": dict(use_dora=True, init_lora_weights="gaussian", target_modules=["embed_tokens", "q_proj"]),
    "layers_int_zero": dict(layers_to_transform=0, layers_pattern="layers"),
    "layers_tuple": dict(layers_to_transform=(0, 1)),
    "modules_to_save_dotted": dict(modules_to_save=["model.norm"]),
    "modules_to_save_mlp": dict(modules_to_save=["layers.1.mlp.down_proj"]),
    "target_mlp_and_attn_dora_bias": dict(target_modules=["up_proj", "o_proj"], use_dora=True, bias="all"),
    "lora_bias_all_linear": dict(lora_bias=True, target_modules="all-linear"),
    "alpha_zero": dict(lora_alpha=0),
    "negative_alpha": dict(lora_alpha=-4),
}.items():
    FORMS["config:" + _name] = config_form(**_cfg)


@form("method:two_active_save")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.base_model.set_adapter(["default", "other"])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return files(tmp)


@form("method:delete_one_of_two_active")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.base_model.set_adapter(["default", "other"])
    model.base_model.delete_adapter("other")
    return {"l": logits(lib, model), "a": model.base_model.active_adapters, "t": trainable(model)}


@form("method:merge_progressbar")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    return logits(lib, model.merge_and_unload(progressbar=True))


@form("method:rewrap_after_unload")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    base = model.unload()
    lib.manual_seed(4)
    again = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**dict(BASE, r=3)))
    return everything(lib, lib_peft, again)


@form("method:weighted_negative_linear")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(r=4, lora_alpha=8))
    model.add_weighted_adapter(["default", "other"], [-0.5, 2.0], "mix", combination_type="linear")
    model.set_adapter("mix")
    return {"l": logits(lib, model), "s": sd(lib, lib_peft, model, adapter_name="mix")}


@form("method:weighted_single_adapter_svd")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.add_weighted_adapter(["other"], [1.5], "mix", combination_type="svd", svd_rank=2)
    model.set_adapter("mix")
    return logits(lib, model)


@form("method:weighted_ties_trim_total")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(r=4, lora_alpha=8))
    model.add_weighted_adapter(["default", "other"], [0.7, 0.9], "mix", combination_type="ties_svd", density=0.3,
                               majority_sign_method="frequency", svd_rank=3)
    model.set_adapter("mix")
    return logits(lib, model)


@form("load:from_pretrained_config_override")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        config = lib_peft.LoraConfig(**dict(BASE, lora_alpha=2))
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp, config=config)
        return logits(lib, loaded)


@form("load:torch_device_cpu")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp)
        loaded.load_adapter(os.path.join(tmp, "other"), "o2", torch_device="cpu")
        loaded.set_adapter("o2")
        return logits(lib, loaded)


@form("load:set_state_dict_modules_to_save")
def _(lib, lib_peft):
    model = two(lib, lib_peft, modules_to_save=["lm_head"])
    with lib.no_grad():
        for n, p in model.named_parameters():
            if "modules_to_save.default" in n:
                p.mul_(1.5)
    state = lib_peft.get_peft_model_state_dict(model)
    fresh = adapted(lib, lib_peft, seed=9, modules_to_save=["lm_head"])
    lib_peft.set_peft_model_state_dict(fresh, state)
    return {"keys": sorted(state), "l": logits(lib, fresh)}



@form("load:from_pretrained_torch_device_cpu")
def _(lib, lib_peft):
    with tempfile.TemporaryDirectory() as tmp:
        two(lib, lib_peft).save_pretrained(tmp)
        loaded = lib_peft.PeftModel.from_pretrained(llama(lib), tmp, torch_device="cpu", is_trainable=True)
        return {"l": logits(lib, loaded), "t": trainable(loaded)}



@form("method:disable_ctx_modules_tokens")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, modules_to_save=["lm_head"], trainable_token_indices=[3, 5])
    with lib.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and "lora_" not in n:
                p.add_(0.5)
    with model.disable_adapter():
        off = logits(lib, model)
    return {"off": off, "on": logits(lib, model), "base": logits(lib, llama(lib))}


@form("config:embed_padding_idx")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, base=llama_with(lib, pad_token_id=1), target_modules=["embed_tokens", "q_proj"],
                    use_dora=False)
    return everything(lib, lib_peft, model)


@form("config:embed_padding_idx_dora")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft, base=llama_with(lib, pad_token_id=1), target_modules=["embed_tokens"],
                    use_dora=True)
    return everything(lib, lib_peft, model)


@form("method:set_adapter_other_targets")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(target_modules=["k_proj", "down_proj"]))
    model.set_adapter("other")
    a = everything(lib, lib_peft, model)
    model.base_model.set_adapter(["default", "other"])
    return {"a": a, "b": everything(lib, lib_peft, model)}


@form("method:add_adapter_inference_mode")
def _(lib, lib_peft):
    model = two(lib, lib_peft, other=dict(inference_mode=True))
    model.set_adapter("other")
    return {"t": trainable(model), "p": printed(model)}


@form("method:add_adapter_low_cpu_then_set")
def _(lib, lib_peft):
    model = adapted(lib, lib_peft)
    model.add_adapter("x", lib_peft.LoraConfig(**BASE), low_cpu_mem_usage=True)
    return {"t": trainable(model), "meta": sorted(n for n, p in model.named_parameters() if p.is_meta)}


@form("method:merge_then_train_forward")
def _(lib, lib_peft):
    model = two(lib, lib_peft)
    model.merge_adapter()
    model.train()
    g = grads(lib, model)
    model.unmerge_adapter()
    return {"g": g, "l": logits(lib, model)}



# ---- PEFT's custom-model MLP (biases, no RoPE): both libraries compute in the same order, compared to 1e-12
def mlp_pair_form(action, other_targets=("seq.2", "seq.4"), **config):
    def script(lib, lib_peft):
        from test_peft_custom_r6 import mlp, pair
        theirs, ours = pair(mlp)
        base = theirs if lib is torch else ours
        lib.manual_seed(1)
        model = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**dict(dict(r=4, lora_alpha=8, init_lora_weights=False,
                                                                              target_modules=["seq.0", "seq.2"]),
                                                                         **config)))
        lib.manual_seed(2)
        model.add_adapter("other", lib_peft.LoraConfig(**dict(dict(r=2, lora_alpha=6, init_lora_weights=False,
                                                                   target_modules=list(other_targets)), **config)))
        x = lib.tensor(np.random.default_rng(0).standard_normal((4, 20)))
        return action(lib, lib_peft, model, x)
    return script


def _ex(lib, t):
    return ("exact", arr(lib, t))


def _mlp_all(lib, lib_peft, model, x):
    seen = {}
    seen["out"] = _ex(lib, model(x))
    model.base_model.set_adapter(["default", "other"])
    out = model(x)
    seen["both"] = _ex(lib, out)
    (out ** 2).sum().backward()
    seen["grads"] = {("exact", n): arr(lib, p.grad) for n, p in model.named_parameters() if p.grad is not None}
    model.merge_adapter(["default", "other"])
    seen["merged_w"] = {("exact", n): arr(lib, p) for n, p in model.named_parameters() if "base_layer" in n}
    seen["merged"] = _ex(lib, model(x))
    model.unmerge_adapter()
    seen["unmerged_w"] = {("exact", n): arr(lib, p) for n, p in model.named_parameters() if "base_layer" in n}
    model.add_weighted_adapter(["default", "other"], [0.7, 1.3], "cat", combination_type="cat")
    model.set_adapter("cat")
    seen["cat"] = _ex(lib, model(x))
    with model.disable_adapter():
        seen["off"] = _ex(lib, model(x))
    model.eval()
    seen["mixed"] = _ex(lib, model(x, adapter_names=["default", "other", "__base__", "cat"]))
    seen["safe"] = _ex(lib, model.merge_and_unload(safe_merge=True, adapter_names=["cat"])(x))
    return seen


def _mlp_train_steps(lib, lib_peft, model, x):
    model.base_model.set_adapter(["default", "other"])
    opt = lib.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()
    return {("exact", n): arr(lib, p) for n, p in model.named_parameters() if p.requires_grad}


def _mlp_svd(lib, lib_peft, model, x):
    model.add_weighted_adapter(["default", "other"], [0.7, 1.3], "svd", combination_type="svd")
    model.set_adapter("svd")
    return model(x).detach().numpy()  # (LAPACK's signs cancel in B @ A: to 1e-6)


FORMS["mlp_svd:same_targets"] = mlp_pair_form(_mlp_svd, other_targets=("seq.0", "seq.2"))
FORMS["mlp_svd:rank_above_a_layers_size"] = mlp_pair_form(_mlp_svd)  # (seq.4 is 16 -> 2: rank 4 > 2)

for _name, _cfg in {
    "plain": {}, "dora": dict(use_dora=True), "rslora": dict(use_rslora=True), "lora_bias": dict(lora_bias=True),
    "bias_all": dict(bias="all"), "bias_lora_only": dict(bias="lora_only"),
    "rank_pattern": dict(rank_pattern={"seq.2": 3}, alpha_pattern={r"seq\.\d": 5}),
}.items():
    if _name not in ("dora",):  # (DoRA: cat/svd and the mixed batch are refused in both)
        FORMS["mlp_exact:" + _name] = mlp_pair_form(_mlp_all, **_cfg)
    FORMS["mlp_steps:" + _name] = mlp_pair_form(_mlp_train_steps, **_cfg)


# --------------------------------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------------------------------
def difference(ours, theirs, path=""):
    """None when equal, else a short text of the first difference."""
    if isinstance(theirs, dict):
        if not isinstance(ours, dict):
            return f"{path}: {type(ours).__name__} vs dict"
        if sorted(map(str, ours)) != sorted(map(str, theirs)):
            o, t = set(map(str, ours)), set(map(str, theirs))
            return f"{path}: keys only minilora {sorted(o - t)[:4]}, only peft {sorted(t - o)[:4]}"
        by_str = {str(k): v for k, v in ours.items()}
        for key, value in theirs.items():
            exact = isinstance(key, tuple) and key[0] == "exact"
            got = difference(by_str[str(key)], value, f"{path}/{key[1] if exact else key}")
            if got is None and exact and isinstance(value, np.ndarray):
                o = np.asarray(by_str[str(key)])
                if o.dtype != value.dtype:
                    got = f"{path}/{key[1]}: dtype {o.dtype} vs {value.dtype}"
                elif not np.allclose(o, value, rtol=EXACT, atol=EXACT):
                    got = f"{path}/{key[1]}: max |diff| {np.abs(o - value).max():.3g} (exact)"
            if got:
                return got
        return None
    if isinstance(theirs, tuple) and len(theirs) == 2 and theirs[0] == "loose":  # 16-bit values
        o, t = np.asarray(ours[1]), theirs[1]
        if o.shape != t.shape or not np.allclose(o, t, rtol=2e-2, atol=2e-2):
            return f"{path}: max |diff| {np.abs(o - t).max() if o.shape == t.shape else o.shape} (16-bit)"
        return None
    if isinstance(theirs, np.ndarray):
        ours = np.asarray(ours)
        if ours.shape != theirs.shape:
            return f"{path}: shape {ours.shape} vs {theirs.shape}"
        if not np.allclose(ours, theirs, rtol=RTOL, atol=ATOL):
            return f"{path}: max |diff| {np.abs(ours - theirs).max():.3g}"
        return None
    if isinstance(theirs, (list, tuple)):
        if not isinstance(ours, (list, tuple)) or len(ours) != len(theirs):
            return f"{path}: {ours!r:.80} vs {theirs!r:.80}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            got = difference(a, b, f"{path}[{i}]")
            if got:
                return got
        return None
    if isinstance(theirs, float) and isinstance(ours, (int, float)):
        return None if abs(ours - theirs) <= 1e-12 * max(1, abs(theirs)) else f"{path}: {ours} vs {theirs}"
    if ours != theirs:
        return f"{path}: {ours!r:.150} vs {theirs!r:.150}"
    return None


def outcome(script, lib, lib_peft):
    try:
        return "ok", script(lib, lib_peft)
    except Exception as error:  # noqa: BLE001
        return "raised", error


# Where PEFT 0.22 is wrong and minilora does not follow it (counted as "peft-bug", not as a difference):
PEFT_BUGS = {
    # LoraLayer.scale_layer / unscale_layer skip every adapter not in lora_A: an Embedding's adapters live in
    # lora_embedding_A, so PEFT never rescales them (diffusers' scale_lora_layers leaves a LoRA'd embedding alone)
    "method:set_scale_embed": "PEFT's scale_layer/unscale_layer do nothing on a LoRA Embedding",
    # add_weighted_adapter(combination_type="svd") of rank 4 on a layer of 2 outputs: PEFT sets lora_B to the
    # [2, 2] of the SVD into a [2, 4] Linear and its forward then fails (mat1 and mat2 shapes cannot be multiplied)
    "mlp_svd:rank_above_a_layers_size": "PEFT's svd combination breaks a layer narrower than the rank",
}


def classify(name, script):
    (tk, tv), (mk, mv) = (outcome(script, *LIBRARIES[side]) for side in ("torch", "minilora"))
    if name in PEFT_BUGS and mk == "ok" and (tk == "raised" or difference(mv, tv) is not None):
        return "peft-bug", PEFT_BUGS[name]
    if tk == "raised" and mk == "raised":
        # PEFT's own classes by name; minilora's subclass of the builtin PEFT raises (AdapterMismatchError of
        # load_state_dict's RuntimeError) is the same refusal
        same = str(tv) == str(mv) and (type(tv).__name__ == type(mv).__name__ or
                                       (type(tv).__module__ == "builtins" and isinstance(mv, type(tv))))
        return ("same" if same else "refusal"), f"peft {type(tv).__name__}: {tv!s:.200}\n      ml   " \
                                                f"{type(mv).__name__}: {mv!s:.200}"
    if tk == "raised":
        return "WORST", f"peft {type(tv).__name__}: {tv!s:.200}"
    if mk == "raised":
        return "ml-error", "".join(traceback.format_exception(type(mv), mv, mv.__traceback__)[-3:])[-600:]
    got = difference(mv, tv)
    return ("same", "") if got is None else ("SILENT", got)


def main(words):
    counts = {}
    for name, script in FORMS.items():
        if words and not any(w in name for w in words):
            continue
        kind, detail = classify(name, script)
        counts[kind] = counts.get(kind, 0) + 1
        if kind != "same" or detail:
            print(f"[{kind}] {name}\n      {detail}", flush=True)
    total = sum(counts.values())
    print(f"\n{total - counts.get('same', 0) - counts.get('peft-bug', 0)} of {total} forms differ: {counts}")


if __name__ == "__main__":
    main(sys.argv[1:])
