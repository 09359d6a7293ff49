"""A seeded differential fuzzer for the LoraConfig space: random combinations, minilora against PEFT.

Each seed draws one ``LoraConfig`` (rank, alpha, targets as a list / regex / "all-linear", exclusions,
bias, rsLoRA, DoRA, init, modules_to_save, layers_to_transform + layers_pattern, rank/alpha patterns,
fan_in_fan_out, lora_bias, trainable_token_indices, task_type) and sometimes a second adapter
(add_adapter / set_adapter, add_weighted_adapter). Both libraries get the same tiny float64 Llama;
PEFT's adapter weights (randomised, so B is not zero) are copied into minilora, and then compared:

* accepting or refusing the config (PEFT raises -> minilora raises; minilora refuses -> the message
  names a field the draw set);
* trainable parameter names, shapes, ``print_trainable_parameters`` text;
* logits (float64, 1e-10), gradients after one backward, the parameters after one AdamW step;
* the saved files (adapter_config.json, safetensors keys and values), and loading each into the other;
* ``disable_adapter``, ``merge_and_unload`` and ``unload`` logits.

The fixed seed list runs in the suite; ``MINILORA_PEFT_FUZZ=N`` runs N more seeds (a longer hunt).
Divergences found here are minimized into REGRESSIONS, which run every time.
Skipped when torch / transformers / peft are not installed."""
import contextlib
import functools
import io
import json
import logging
import os
import random
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora.models import LlamaForCausalLM  # noqa: E402

# transformers patched to compute in float64 throughout (stock keeps RMSNorm, softmax, RoPE in float32)
from test_llama import hf, hf_model  # noqa: E402,F401
from peft_versions import modules_to_save_matched_differently_by_021, peft_config_file_as_022  # noqa: E402
from peft_versions import unload_as_022, weighted_adapter_as_022  # noqa: E402
from test_peft_conformance_r3 import IDS, TINY  # noqa: E402  (the tiny Llama and its ids, as the r3 checks)

TOL = dict(rtol=1e-10, atol=1e-10)
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
REGEXES = [r".*\.(q|v)_proj", r"model\.layers\.1\.mlp\..*", r".*layers\.0\.self_attn\.(k|o)_proj",
           r".*(embed_tokens|q_proj)"]


# ==================================================================================================
# drawing a config
# ==================================================================================================
def draw_targets(rng):
    kind = rng.choice(["list", "list", "regex", "all-linear"])
    if kind == "regex":
        return rng.choice(REGEXES)
    if kind == "all-linear":
        return "all-linear"
    names = rng.sample(LINEAR, rng.randint(1, 3))
    if rng.random() < 0.25:
        names.append(rng.choice(["embed_tokens", "lm_head"]))
    return names


def draw_pattern(rng, targets, values):
    """A rank_pattern / alpha_pattern: a short name or a full-name regex, one or two keys."""
    names = targets if isinstance(targets, list) else LINEAR
    keys = [rng.choice(names), rf"^model.layers.{rng.randint(0, 1)}.self_attn.{rng.choice(['q', 'v'])}_proj"]
    return {key: rng.choice(values) for key in rng.sample(keys, rng.randint(1, 2))}


def draw_config(rng):
    """Keyword arguments for LoraConfig; each field is left out (PEFT's default) about half the time."""
    kw = {"r": rng.choice([1, 2, 4]), "lora_alpha": rng.choice([1, 4, 8, 3.5]),
          "target_modules": draw_targets(rng), "lora_dropout": 0.0}
    maybe = lambda p=0.3: rng.random() < p  # noqa: E731
    if maybe():
        kw["exclude_modules"] = rng.choice([["k_proj"], ["q_proj", "down_proj"], r".*layers\.0\..*"])
    if maybe():
        kw["bias"] = rng.choice(["all", "lora_only"])
    if maybe():
        kw["use_rslora"] = True
    if maybe(0.25):
        kw["use_dora"] = True
    kw["init_lora_weights"] = rng.choice([True, False, "gaussian", "pissa", "olora", "pissa_niter_2"])
    if maybe(0.2):
        kw["modules_to_save"] = [rng.choice(["lm_head", "embed_tokens", "norm"])]
    if maybe(0.25) and not isinstance(kw["target_modules"], str):
        kw["layers_to_transform"] = rng.choice([0, 1, [0], [1, 0]])
        if maybe(0.5):
            kw["layers_pattern"] = rng.choice(["layers", ["layers"]])
    if maybe():
        kw["rank_pattern"] = draw_pattern(rng, kw["target_modules"], [1, 2, 3])
    if maybe():
        kw["alpha_pattern"] = draw_pattern(rng, kw["target_modules"], [2, 5, 0.5])
    if maybe(0.1):
        kw["fan_in_fan_out"] = True
    if maybe(0.1):
        kw["lora_bias"] = True
    if maybe(0.05):
        kw["trainable_token_indices"] = [1, 3]
    if maybe(0.4):
        kw["task_type"] = rng.choice(["CAUSAL_LM", "CAUSAL_LM", "FEATURE_EXTRACTION", "TOKEN_CLS"])
    if maybe(0.1) and isinstance(kw["target_modules"], list):
        kw["target_modules"] = rng.choice([tuple, set])(kw["target_modules"])
    if maybe(0.05):
        kw["inference_mode"] = True
    return kw


def draw_case(seed):
    rng = random.Random(seed)
    case = {"first": draw_config(rng)}
    if rng.random() < 0.35:
        case["second"] = draw_config(rng)
        case["switch"] = rng.random() < 0.5
        if rng.random() < 0.5:
            case["weighted"] = dict(weights=[rng.choice([1.0, 0.5, -0.7]), rng.choice([1.0, 2.0, 0.3])],
                                    combination_type=rng.choice(["linear", "cat", "svd"]))
        case["per_sample"] = rng.random() < 0.5
    case["finish"] = rng.choice(["merge_and_unload", "unload", "merge_unmerge"])
    if "second" in case and rng.random() < 0.3:
        case["delete"] = rng.choice(["default", "other"])
    return case


# ==================================================================================================
# running one case in both libraries
# ==================================================================================================
def base_pair():
    reference = hf_model(transformers, TINY, dtype="float64")
    model = LlamaForCausalLM(TINY, dtype="float64")
    model.load_state_dict(reference.state_dict())
    return reference, model


def attempt(build):
    """(result, None) or (None, the exception); warnings are not the point here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return build(), None
        except Exception as exc:  # noqa: BLE001  (any refusal is compared below)
            return None, exc


def peft_only_limit(error):
    """PEFT refusals that are limits of its implementation, not of the config: minilora goes on.

    PEFT's OLoRA and PiSSA inits take only float32/16-bit bases ("Unsupported data type for the base
    layer. Got torch.float64.", "Please initialize PiSSA under float32, ..."); minilora's factorise a
    float64 base in float64 (compared with PEFT's on float32/16-bit bases in test_peft_conformance_r3)."""
    return isinstance(error, TypeError) and re.search("Unsupported data type for the base layer|Please initialize "
                                                      "PiSSA under float32", str(error)) is not None


def compare_call(fields, theirs_call, ours_call):
    """Call both; True when both returned (results in .theirs/.ours), False when both raised."""
    theirs, theirs_error = attempt(theirs_call)
    ours, ours_error = attempt(ours_call)
    compare_call.theirs, compare_call.ours = theirs, ours
    return check_refusals(fields, theirs_error, ours_error)


def peft_adapts_module_copies(theirs):
    """PEFT's "all-linear" after another adapter's modules_to_save=["lm_head"] adds LoRA to the wrapper's
    insides (lm_head.original_module, lm_head.modules_to_save.default: it collects Linear names by their
    last part, "original_module" and "default", and excludes only "lm_head"). minilora does not copy
    that: such a case stops here."""
    return any(re.search(r"\.(original_module|modules_to_save\.\w+)\.lora_", key) for key in theirs.state_dict())


def check_refusals(kw, theirs_error, ours_error):
    """True when both accepted (go on comparing), False when both refused; a mismatch fails."""
    if peft_only_limit(theirs_error):
        return False
    if theirs_error is not None:
        assert ours_error is not None, f"PEFT refuses {kw} ({theirs_error!r}) but minilora accepts it"
        return False
    if ours_error is not None:
        named = [k for k in kw if k in str(ours_error)]
        assert named, f"minilora refuses {kw} with {ours_error!r}, which names no field of the config"
        return False
    return True


def randomize_adapters(theirs, seed):
    """New random lora_A / lora_B / magnitude values in PEFT (B nonzero, so every adapter matters)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if re.search(r"lora_(A|B|embedding_A|embedding_B)\.", name):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def copy_state(theirs, ours):
    """PEFT's whole state (PiSSA/OLoRA change the base too) into minilora: the same names."""
    state = theirs.state_dict()
    assert sorted(ours.state_dict()) == sorted(state)
    ours.load_state_dict(state)


def logits(model, ids=IDS):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(input_ids=torch.as_tensor(ids)).logits.numpy()
    with ml.no_grad():
        return model(input_ids=ml.tensor(ids)).logits.numpy(force=True)


def assert_same_logits(ours, theirs, what):
    np.testing.assert_allclose(logits(ours), logits(theirs), **TOL, err_msg=what)


def trainable_text(model):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        model.print_trainable_parameters()
    return out.getvalue()


def compare_trainable(ours, theirs):
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    expected = shapes(theirs)
    if all(c.inference_mode for c in theirs.peft_config.values()):
        # PEFT applies bias="all"/"lora_only" after freezing an inference-mode adapter, so its biases (lora_B's
        # too) train; minilora keeps an adapter made for inference frozen: compared without those
        expected = {n: s for n, s in expected.items() if not n.endswith(".bias")}
        if expected != shapes(theirs):
            return
    assert shapes(ours) == expected
    assert trainable_text(ours) == trainable_text(theirs)


def compare_backward_and_step(ours, theirs):
    theirs_params = {n: p for n, p in theirs.named_parameters() if p.requires_grad}
    ours_params = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    if not theirs_params or not ours_params:  # inference_mode=True: nothing trains (names compared before;
        # PEFT's inference-mode biases under bias="all", see compare_trainable)
        return
    labels = np.where(np.arange(IDS.shape[1]) < 2, -100, IDS)
    theirs_out = theirs(input_ids=torch.as_tensor(IDS))
    v = theirs_out.logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(theirs_out.logits[:, :-1].reshape(-1, v),
                                             torch.as_tensor(labels)[:, 1:].reshape(-1), ignore_index=-100)
    loss.backward()
    ours_out = ours(input_ids=ml.tensor(IDS), labels=ml.tensor(labels))
    ours_out.loss.backward()
    assert abs(ours_out.loss.item() - loss.item()) < 1e-10
    for name, p in theirs_params.items():
        if p.grad is None:  # trainable but unused (bias="all" trains an inactive adapter's lora_B.bias, as PEFT)
            assert ours_params[name].grad is None, name
            continue
        np.testing.assert_allclose(ours_params[name].grad.numpy(force=True), p.grad.numpy(), **TOL,
                                   err_msg=f"grad of {name}")
    torch.optim.AdamW(theirs_params.values(), lr=1e-2).step()
    ml.optim.AdamW(list(ours_params.values()), lr=1e-2).step()
    for name, p in theirs_params.items():
        np.testing.assert_allclose(ours_params[name].detach().numpy(force=True), p.detach().numpy(), **TOL,
                                   err_msg=f"{name} after one AdamW step")
    for model in (ours, theirs):
        model.zero_grad()


def adapter_files(folder):
    with open(os.path.join(folder, "adapter_config.json")) as f:
        config = json.load(f)
    for key in ("peft_version", "base_model_name_or_path", "revision"):
        config.pop(key, None)
    for key in ("target_modules", "exclude_modules", "layers_pattern"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])  # PEFT writes a set, in any order
    tensors = safetensors_torch.load_file(os.path.join(folder, "adapter_model.safetensors"))
    return config, tensors


def compare_files(ours, theirs, tmp_path):
    """The saved folders compared; False when PEFT cannot save (nothing more to compare): PEFT 0.21's
    TrainableTokensWrapper fails with KeyError('token_adapter.trainable_tokens_delta.<name>') when an
    adapter without trainable_token_indices is saved beside one that has them (minilora saves both)."""
    ours.save_pretrained(tmp_path / "ours")
    try:
        theirs.save_pretrained(tmp_path / "peft")
    except KeyError as error:
        if "trainable_tokens_delta" not in str(error):
            raise
        return False
    for adapter in theirs.peft_config:
        sub = "" if adapter == "default" else adapter
        config_ours, tensors_ours = adapter_files(tmp_path / "ours" / sub)
        config_theirs, tensors_theirs = adapter_files(tmp_path / "peft" / sub)
        assert config_ours == peft_config_file_as_022(config_theirs), f"adapter_config.json of {adapter!r}"
        assert sorted(tensors_ours) == sorted(tensors_theirs), f"tensor names in {adapter!r}'s file"
        for key, value in tensors_theirs.items():  # (after an AdamW step: the last bits may differ)
            assert tensors_ours[key].dtype == value.dtype, key
            np.testing.assert_allclose(tensors_ours[key].numpy(), value.numpy(), **TOL, err_msg=key)
    return True


def compare_loading(theirs, tmp_path, trained_base_ours, trained_base_theirs, fields):
    """Each library loads the other's folder onto a fresh base: the logits of PEFT loading its own.

    (Not always the saved model's: PEFT resolves overlapping rank_pattern / alpha_pattern keys by their
    order in the dict, and both libraries write adapter_config.json with sorted keys, so e.g.
    {"q_proj": 2, "^model.layers.0.self_attn.q_proj": 0.5} reloads with the other key first.)
    PiSSA / OLoRA changed the base weights (the residual), so the fresh base gets the adapted model's."""
    active = theirs.active_adapter
    sub = "" if active == "default" else active
    loaded, errors = {}, {}
    for reader, writer in [("peft", "peft"), ("peft", "ours"), ("ours", "peft")]:
        reference, model = base_pair()
        reference.load_state_dict(trained_base_theirs)
        model.load_state_dict(trained_base_ours)
        base, library = (reference, peft) if reader == "peft" else (model, ml_peft)
        loaded[reader, writer], errors[reader, writer] = attempt(lambda: library.PeftModel.from_pretrained(
            base, tmp_path / writer / sub, adapter_name=active))
    if errors["peft", "peft"] is not None:  # PEFT cannot reload its own folder (overlapping rank_pattern
        assert errors["ours", "peft"] is not None  # keys, reloaded in sorted order): neither may minilora
        return
    assert errors["peft", "ours"] is None, errors["peft", "ours"]
    if not check_refusals(fields, None, errors["ours", "peft"]):  # a minilora refusal names a field
        return
    expected = loaded["peft", "peft"]
    assert_same_logits(loaded["peft", "ours"], expected, "PEFT loading minilora's folder")
    assert_same_logits(loaded["ours", "peft"], expected, "minilora loading PEFT's folder")


def base_weights(peft_model):
    """The wrapped model's own weights (PiSSA's residual included), under the plain model's names."""
    out = {}
    for name, value in peft_model.state_dict().items():
        if re.search(r"\.(lora_\w+|modules_to_save|trainable_tokens_delta)\.", name):
            continue
        name = name.replace("base_model.model.", "", 1).replace(".base_layer", "").replace(".original_module", "")
        name = name.replace(".token_adapter", "")  # trainable_token_indices' wrapper
        out[name] = value
    return out


def run_case(case, tmp_path, seed=0):
    reference, model = base_pair()
    kw = case["first"]
    saved_021 = modules_to_save_matched_differently_by_021(
        [*(kw.get("modules_to_save") or ()), *(case.get("second", {}).get("modules_to_save") or ())],
        [name for name, _ in model.named_modules()])
    if saved_021:  # (explicit, on 0.21 only: the case compares nothing that 0.22 did not change)
        pytest.skip(f"PEFT {peft.__version__} wraps {saved_021} for a modules_to_save entry that is only their name's "
                    "bare suffix; 0.22 (and minilora) match whole dotted parts")
    theirs, theirs_error = attempt(lambda: peft.get_peft_model(reference, peft.LoraConfig(**kw)))
    ours, ours_error = attempt(lambda: ml_peft.get_peft_model(model, ml_peft.LoraConfig(**kw)))
    if not check_refusals(kw, theirs_error, ours_error):
        return
    assert type(ours).__name__ == type(theirs).__name__
    if "second" in case:
        kw2 = case["second"]
        _, theirs_error = attempt(lambda: theirs.add_adapter("other", peft.LoraConfig(**kw2)))
        _, ours_error = attempt(lambda: ours.add_adapter("other", ml_peft.LoraConfig(**kw2)))
        # a refused add_adapter may leave layers half-wrapped (PEFT's and minilora's alike): stop there
        if peft_only_limit(theirs_error) or not check_refusals(kw2, theirs_error, ours_error):
            return
        if peft_adapts_module_copies(theirs):
            return
        if case["switch"]:
            theirs.set_adapter("other")
            ours.set_adapter("other")
    randomize_adapters(theirs, seed)
    copy_state(theirs, ours)
    compare_trainable(ours, theirs)
    assert_same_logits(ours, theirs, "adapted logits")
    compare_backward_and_step(ours, theirs)
    assert_same_logits(ours, theirs, "logits after one AdamW step")
    if not compare_files(ours, theirs, tmp_path):
        return
    fields = list(kw) + list(case.get("second", {}))
    compare_loading(theirs, tmp_path, base_weights(ours), base_weights(theirs), fields)
    with theirs.disable_adapter(), ours.disable_adapter():
        assert_same_logits(ours, theirs, "disable_adapter")
    if "other" in theirs.peft_config and not compare_two_adapters(case, ours, theirs):
        return
    if case.get("delete") in theirs.peft_config:
        name = case["delete"]
        if not compare_call(["delete_adapter"], lambda: theirs.delete_adapter(name), lambda: ours.delete_adapter(name)):
            return
        assert list(ours.peft_config) == list(theirs.peft_config)
        assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
        # PEFT takes the new active adapter from the FIRST wrapped layer's leftovers ([] when that layer had
        # only the deleted one, with another adapter left) and makes it trainable even with inference_mode:
        # minilora activates the remaining adapter as it was. Logits are compared where the two agree.
        if ours.active_adapters == theirs.active_adapters:
            assert_same_logits(ours, theirs, f"after delete_adapter({name!r})")
        return
    finish(case.get("finish", "merge_and_unload"), kw, ours, theirs)


def compare_two_adapters(case, ours, theirs):
    """Per-sample adapters in one batch, and add_weighted_adapter of the two; False: stop the case.

    PEFT's ModulesToSaveWrapper crashes with KeyError('default') on a batch naming an adapter that has
    no copy of that module (modules_to_save in the other adapter only); minilora runs the original
    module for those rows, which is what the adapter means: not compared.
    PEFT leaves its per-sample forward hooks on the layers when that forward raises (no try/finally in
    LoraModel._enable_peft_forward_hooks: e.g. "Cannot pass `adapter_names` when DoRA is enabled"), so
    every later forward of that model fails: after such a refusal there is nothing left to compare."""
    if case.get("per_sample"):
        names = ["default", "other"]
        for model in (ours, theirs):
            model.eval()
        theirs_logits, theirs_error = attempt(lambda: per_sample_logits(theirs, names))
        if isinstance(theirs_error, KeyError):  # PEFT's crash, see above
            return False
        ours_logits, ours_error = attempt(lambda: per_sample_logits(ours, names))
        if not check_refusals(["adapter_names"], theirs_error, ours_error):
            return False
        np.testing.assert_allclose(ours_logits, theirs_logits, **TOL, err_msg="adapter_names")
    if "weighted" in case:
        options = dict(adapters=["default", "other"], adapter_name="mix", **case["weighted"])
        if not compare_call(list(options), lambda: theirs.add_weighted_adapter(**options),
                            lambda: ours.add_weighted_adapter(**options)):
            return False
        weighted_adapter_as_022(theirs, options["adapters"], options["weights"], "mix")
        theirs.set_adapter("mix")
        ours.set_adapter("mix")
        compare_trainable(ours, theirs)
        assert_same_logits(ours, theirs, f"add_weighted_adapter {case['weighted']}")
    return True


def per_sample_logits(model, adapter_names):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(input_ids=torch.as_tensor(IDS), adapter_names=adapter_names).logits.numpy()
    with ml.no_grad():
        return model(input_ids=ml.tensor(IDS), adapter_names=adapter_names).logits.numpy(force=True)


def finish(how, kw, ours, theirs):
    """merge_and_unload, unload, or merge_adapter + unmerge_adapter: the same logits after each."""
    if how == "merge_unmerge":
        if compare_call(kw, theirs.merge_adapter, ours.merge_adapter):
            assert_same_logits(ours, theirs, "merge_adapter")
            theirs.unmerge_adapter()
            ours.unmerge_adapter()
            assert_same_logits(ours, theirs, "unmerge_adapter")
        return
    theirs_finish = functools.partial(unload_as_022, theirs) if how == "unload" else getattr(theirs, how)
    if compare_call(kw, theirs_finish, getattr(ours, how)):
        assert type(compare_call.ours).__name__ == type(compare_call.theirs).__name__
        assert sorted(compare_call.ours.state_dict()) == sorted(compare_call.theirs.state_dict())
        assert_same_logits(compare_call.ours, compare_call.theirs, how)


# ==================================================================================================
# the seeds and the regressions
# ==================================================================================================
SEEDS = list(range(40)) + [1000 + i for i in range(int(os.environ.get("MINILORA_PEFT_FUZZ", "0")))]

# Minimized from the seeds that found them; "before" is minilora's behaviour then.
REGRESSIONS = {
    # before: AttributeError 'ModulesToSaveWrapper' object has no attribute 'weight' in the forward
    # (Llama reads embed_tokens.weight; PEFT's wrapper passes attributes to the running copy)
    "modules_to_save_embed_tokens": {"first": dict(r=4, target_modules=["q_proj"], init_lora_weights=False,
                                                   modules_to_save=["embed_tokens"])},
    # before: the file lacked PEFT's base_model.model.lm_head.base_layer.weight (only a targeted
    # Embedding's table was saved, not the output head's)
    "lm_head_target_saves_its_table": {"first": dict(r=2, target_modules=["lm_head"], init_lora_weights=False)},
    # PEFT saves both embedding tables for an adapter that targets one, whichever adapter wrapped the other
    "embedding_tables_across_adapters": {"first": dict(r=2, target_modules=["embed_tokens", "q_proj"],
                                                       init_lora_weights=False),
                                         "second": dict(r=1, target_modules=["lm_head"], init_lora_weights=False),
                                         "switch": False},
    # before: lm_head left alone; PEFT applies layers_to_transform only to suffix matches, so a target
    # that is the module's full name ("lm_head") is adapted whatever the layers
    "full_name_target_ignores_layers": {"first": dict(r=1, target_modules=["q_proj", "lm_head"],
                                                      layers_to_transform=0, init_lora_weights=False)},
    # before: accepted (PEFT: TypeError "Mixed batching is only supported for the following modules: ...")
    "per_sample_batch_with_a_saved_norm": {"first": dict(r=1, target_modules=["k_proj"], init_lora_weights=False,
                                                         modules_to_save=["norm"]),
                                           "second": dict(r=1, target_modules=["q_proj"], init_lora_weights=False),
                                           "switch": False, "per_sample": True},
    # before: accepted, wrapping the LoRA layer (PEFT: TypeError "modules_to_save cannot be applied to
    # modules of type <class '...lora.layer.Embedding'>")
    "modules_to_save_on_an_adapted_layer": {"first": dict(r=1, target_modules=["embed_tokens"],
                                                          init_lora_weights=False),
                                            "second": dict(r=1, target_modules=["v_proj"], init_lora_weights=False,
                                                           modules_to_save=["embed_tokens"]),
                                            "switch": False},
    # before: logits 4e-7 off: PEFT's svd / task-arithmetic combinations weigh with torch.tensor(weights),
    # float32 numbers (-0.7 is -0.699999988...); minilora used the float64 weights
    "weighted_svd_float32_weights": {"first": dict(r=1, target_modules=["o_proj"], init_lora_weights=False),
                                     "second": dict(r=2, target_modules=["o_proj"], init_lora_weights=False),
                                     "switch": False, "weighted": dict(weights=[-0.7, 0.3], combination_type="svd")},
    # before: a plain PeftModel (PEFT: PeftModelForFeatureExtraction)
    "feature_extraction_class": {"first": dict(r=1, target_modules=["q_proj"], init_lora_weights=False,
                                               task_type="FEATURE_EXTRACTION")},
}


@pytest.fixture(autouse=True)
def quiet_transformers():
    logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_lora_config_as_peft(hf, seed, tmp_path):
    run_case(draw_case(seed), tmp_path, seed)


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(hf, name, tmp_path):
    run_case(REGRESSIONS[name], tmp_path)
