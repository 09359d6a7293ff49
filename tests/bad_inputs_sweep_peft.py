"""The round-31 sweep of bad inputs over minilora's PEFT API against peft 0.22.0 (a script, ~1 min).

    python tests/bad_inputs_sweep_peft.py            # every case
    python tests/bad_inputs_sweep_peft.py rank r=   # only the cases whose names hold these words

The sibling of ``bad_inputs_sweep.py`` for the calls a LoRA user writes: ``LoraConfig`` with one field given a
value of another type or a bad value (positional and keyword), then ``get_peft_model`` and a forward pass;
``get_peft_model`` / ``set_adapter`` / ``delete_adapter`` / ``add_adapter`` / ``add_weighted_adapter`` /
``merge_and_unload`` / ``load_adapter`` / ``PeftModel.from_pretrained`` with bad arguments; and saved adapters
edited on disk (a key missing or extra, a shape or dtype changed, the config's rank changed). Each case runs on a
tiny transformers Llama under PEFT and on minilora's Llama (the same config) and is classed as in
``bad_inputs_core``: ``same`` (both answer, or both raise the same exception class), ``diff`` (another class),
``torch-ok`` (minilora refuses what PEFT takes) or ``WORST`` (minilora answers where PEFT raises). All but
``same`` are printed (with both messages), then the counts.
Round 31 started at {'same': 93, 'diff': 30, 'torch-ok': 36, 'WORST': 1} and left {'same': 104, 'torch-ok': 36,
'diff': 19, 'WORST': 1} (tests/test_bad_inputs_r31.py keeps rows); with five more cases: {'same': 108, 'torch-ok': 37,
'diff': 19, 'WORST': 1}. The WORST row is PEFT's own failure: after
``delete_adapter`` of the only adapter its forward raises KeyError('default') in ``has_active_enabled_adapter``,
where minilora runs the base model. The torch-ok rows are minilora's deliberate refusals (a saved adapter with
keys missing or extra, or weights of an integer dtype: PEFT warns or loads silently; bools given as "no" or 1;
adapter names a merge cannot find; weights and adapters of different lengths). Most diffs are PEFT failing inside
its own code (AttributeError: 'int' object has no attribute 'split') where minilora names the field.
"""
import collections
import json
import os
import sys
import tempfile
import warnings

import numpy as np
import safetensors.numpy

warnings.simplefilter("ignore")

LLAMA = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, max_position_embeddings=32)
BASE = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])


class Side:
    """One library's way to build a Llama and run it: PEFT on transformers, or minilora."""

    def __init__(self, name):
        self.name = name
        if name == "peft":
            import peft
            import torch
            import transformers
            self.L, self.P, self.hf = torch, peft, transformers
        else:
            import minilora as ml
            from minilora import lora
            self.L, self.P, self.hf = ml, lora, None

    def llama(self):
        self.L.manual_seed(0)
        if self.hf is not None:
            config = self.hf.LlamaConfig(**LLAMA)
            config._attn_implementation = "eager"
            return self.hf.LlamaForCausalLM(config)
        return self.L.models.LlamaForCausalLM(self.L.models.LlamaConfig(**LLAMA))

    def run(self, model):
        return model(self.L.tensor([[1, 2, 3]])).logits

    def adapted(self, **changes):
        return self.P.get_peft_model(self.llama(), self.P.LoraConfig(**{**BASE, **changes}))

    def two_adapters(self):
        model = self.adapted()
        model.add_adapter("other", self.P.LoraConfig(**BASE))
        return model

    def saved(self, folder, **changes):
        self.adapted(init_lora_weights=False, **changes).save_pretrained(folder)
        return folder


# --- LoraConfig fields -------------------------------------------------------------------------------
BAD_FIELDS = {
    "r": [0, -1, 1.5, "4", None, True, 2.0],
    "lora_alpha": ["8", None, 1.5, True],
    "target_modules": [5, "nonexistent", ["nonexistent"], [5], ["q_proj", 5], "", [], {"q_proj": 1}],
    "lora_dropout": [-0.1, 1.5, "0.1", None, 1.0],
    "bias": ["bogus", None, True, "ALL"],
    "init_lora_weights": ["bogus", None, 5, "Gaussian", 1.0],
    "rank_pattern": [{"q_proj": "4"}, {"q_proj": 0}, {"q_proj": 1.5}, "q_proj", [1], {5: 4}, {"q_proj": -1}],
    "alpha_pattern": [{"q_proj": "8"}, "q_proj", [1], {5: 8}],
    "layers_to_transform": [-1, 5, [0, 99], "0", 1.5, [1.5], [-1], True],
    "layers_pattern": [5, ["layers", 5]],
    "modules_to_save": [5, "lm_head", [5]],
    "fan_in_fan_out": ["no", 1],
    "use_rslora": ["no", 1],
    "use_dora": ["no", 1],
    "task_type": ["bogus", 5],
    "inference_mode": ["no", 1],
    "exclude_modules": [5, [5]],
    "lora_bias": ["no", 1],
    "megatron_core": [5],
    "layer_replication": [[(0, 5)], [[0]], "0", [(1, 0)]],
    "trainable_token_indices": ["0", [1.5], {5: [0]}],
}


def field_case(field, value):
    return lambda side: side.run(side.adapted(**{field: value}))


def positional_config(side, *args):
    return side.P.LoraConfig(*args)


CASES = {f"LoraConfig({field}={value!r})": field_case(field, value)
         for field, values in BAD_FIELDS.items() for value in values}
CASES.update({
    "LoraConfig(8) (positional)": lambda side: positional_config(side, 8),
    "LoraConfig('CAUSAL_LM') (positional)": lambda side: positional_config(side, "CAUSAL_LM"),
    "LoraConfig(r=2, lora_alpha=4, unknown=1)": lambda side: side.P.LoraConfig(r=2, unknown=1),
})

# --- get_peft_model ---------------------------------------------------------------------------------
CASES.update({
    "get_peft_model(model, dict)": lambda side: side.P.get_peft_model(side.llama(), dict(BASE)),
    "get_peft_model(None, config)": lambda side: side.P.get_peft_model(None, side.P.LoraConfig(**BASE)),
    "get_peft_model(model, None)": lambda side: side.P.get_peft_model(side.llama(), None),
    "get_peft_model(adapter_name=5)": lambda side: side.P.get_peft_model(side.llama(), side.P.LoraConfig(**BASE),
                                                                         adapter_name=5),
    "get_peft_model(adapter_name='')": lambda side: side.P.get_peft_model(side.llama(), side.P.LoraConfig(**BASE),
                                                                          adapter_name=""),
    "get_peft_model(adapter_name=None)": lambda side: side.P.get_peft_model(
        side.llama(), side.P.LoraConfig(**BASE), adapter_name=None),
    "get_peft_model(model, config, 'x', 'no') (mixed)": lambda side: side.P.get_peft_model(
        side.llama(), side.P.LoraConfig(**BASE), "x", "no"),
    "get_peft_model(peft_model, config)": lambda side: side.P.get_peft_model(side.adapted(),
                                                                             side.P.LoraConfig(**BASE)),
})

# --- adapters by name ---------------------------------------------------------------------------------
CASES.update({
    "set_adapter('nope')": lambda side: side.adapted().set_adapter("nope"),
    "set_adapter(5)": lambda side: side.adapted().set_adapter(5),
    "set_adapter(None)": lambda side: side.adapted().set_adapter(None),
    "set_adapter(['default', 'nope'])": lambda side: side.two_adapters().set_adapter(["default", "nope"]),
    "base_model.set_adapter(['default', 'other'])": lambda side: side.two_adapters().base_model.set_adapter(
        ["default", "other"]),
    "delete_adapter('nope')": lambda side: side.adapted().delete_adapter("nope"),
    "delete_adapter(5)": lambda side: side.adapted().delete_adapter(5),
    "delete_adapter(['other'])": lambda side: side.two_adapters().delete_adapter(["other"]),
    "delete_adapter('default') (the only one)": lambda side: side.run(_deleted_only(side)),
    "add_adapter('default', config) (taken)": lambda side: side.adapted().add_adapter(
        "default", side.P.LoraConfig(**BASE)),
    "add_adapter(5, config)": lambda side: side.adapted().add_adapter(5, side.P.LoraConfig(**BASE)),
    "add_adapter('x', dict)": lambda side: side.adapted().add_adapter("x", dict(BASE)),
    "add_adapter('x', None)": lambda side: side.adapted().add_adapter("x", None),
    "add_adapter('x', config with other targets)": lambda side: side.run(_added_elsewhere(side)),
    "active_adapter after delete": lambda side: _deleted_only(side).active_adapter,
})


def _deleted_only(side):
    model = side.adapted()
    model.delete_adapter("default")
    return model


def _added_elsewhere(side):
    model = side.adapted()
    model.add_adapter("x", side.P.LoraConfig(r=2, target_modules=["k_proj"]))
    model.set_adapter("x")
    return model


CASES.update({
    "LoraConfig(layers_pattern='bogus', layers_to_transform=[0])": lambda side: side.run(side.adapted(
        layers_pattern="bogus", layers_to_transform=[0])),
    "LoraConfig(modules_to_save=['nonexistent'])": lambda side: side.run(side.adapted(modules_to_save=["nonexistent"])),
    "get_peft_model(autocast_adapter_dtype='no')": lambda side: side.P.get_peft_model(
        side.llama(), side.P.LoraConfig(**BASE), autocast_adapter_dtype="no"),
    "set_adapter('default', inference_mode='no')": lambda side: side.adapted().set_adapter("default",
                                                                                           inference_mode="no"),
    "add_weighted_adapter(['default'], [nan], 'x')": lambda side: side.run(_weighted_nan(side)),
})


def _weighted_nan(side):
    model = side.adapted(init_lora_weights=False)
    model.add_weighted_adapter(["default"], [float("nan")], "x")
    model.set_adapter("x")
    return model


# --- add_weighted_adapter -------------------------------------------------------------------------------
def weighted(*args, **kwargs):
    return lambda side: side.two_adapters().add_weighted_adapter(*args, **kwargs)


CASES.update({
    "add_weighted_adapter(['nope'], [1.0], 'x')": weighted(["nope"], [1.0], "x"),
    "add_weighted_adapter(['default'], [1.0, 2.0], 'x')": weighted(["default"], [1.0, 2.0], "x"),
    "add_weighted_adapter(['default', 'other'], [1.0], 'x')": weighted(["default", "other"], [1.0], "x"),
    "add_weighted_adapter('default', [1.0], 'x')": weighted("default", [1.0], "x"),
    "add_weighted_adapter(['default'], 1.0, 'x')": weighted(["default"], 1.0, "x"),
    "add_weighted_adapter(['default'], ['1'], 'x')": weighted(["default"], ["1"], "x"),
    "add_weighted_adapter(['default'], [1.0], 5)": weighted(["default"], [1.0], 5),
    "add_weighted_adapter(['default'], [1.0], 'default') (taken)": weighted(["default"], [1.0], "default"),
    "add_weighted_adapter(combination_type='bogus')": weighted(["default"], [1.0], "x", combination_type="bogus"),
    "add_weighted_adapter(combination_type=5)": weighted(["default"], [1.0], "x", combination_type=5),
    "add_weighted_adapter(svd_rank=0)": weighted(["default", "other"], [1.0, 1.0], "x", svd_rank=0),
    "add_weighted_adapter(svd_rank=1.5)": weighted(["default", "other"], [1.0, 1.0], "x", svd_rank=1.5),
    "add_weighted_adapter(svd_rank='2')": weighted(["default", "other"], [1.0, 1.0], "x", svd_rank="2"),
    "add_weighted_adapter(svd_rank=-1)": weighted(["default", "other"], [1.0, 1.0], "x", svd_rank=-1),
    "add_weighted_adapter(density=2, ties)": weighted(["default", "other"], [1.0, 1.0], "x",
                                                      combination_type="ties", density=2),
    "add_weighted_adapter(density=None, ties)": weighted(["default", "other"], [1.0, 1.0], "x",
                                                         combination_type="ties"),
    "add_weighted_adapter(majority_sign_method='bogus')": weighted(
        ["default", "other"], [1.0, 1.0], "x", combination_type="ties", density=0.5, majority_sign_method="bogus"),
    "add_weighted_adapter([], [], 'x')": weighted([], [], "x"),
    "add_weighted_adapter(['default'], [], 'x')": weighted(["default"], [], "x"),
})

# --- merging ----------------------------------------------------------------------------------------------
CASES.update({
    "merge_and_unload(adapter_names=['nope'])": lambda side: side.adapted().merge_and_unload(adapter_names=["nope"]),
    "merge_and_unload(adapter_names=5)": lambda side: side.adapted().merge_and_unload(adapter_names=5),
    "merge_and_unload(adapter_names=[5])": lambda side: side.adapted().merge_and_unload(adapter_names=[5]),
    "merge_and_unload(safe_merge='no')": lambda side: side.adapted().merge_and_unload(safe_merge="no"),
    "merge_and_unload(True, True, ['nope']) (positional)": lambda side: side.adapted().merge_and_unload(
        True, True, ["nope"]),
    "merge_adapter(['nope'])": lambda side: side.adapted().merge_adapter(["nope"]),
    "merge_adapter(adapter_names='default')": lambda side: side.adapted().merge_adapter(adapter_names="default"),
    "unload() twice": lambda side: _unloaded(side).unload(),
})


def _unloaded(side):
    model = side.adapted()
    model.unload()
    return model


# --- saved adapters --------------------------------------------------------------------------------------
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


def edited_weights(edit):
    def case(side):
        with tempfile.TemporaryDirectory() as folder:
            side.saved(folder)
            path = os.path.join(folder, WEIGHTS)
            tensors = safetensors.numpy.load_file(path)
            safetensors.numpy.save_file(edit(dict(tensors)), path, metadata={"format": "pt"})
            return side.run(side.P.PeftModel.from_pretrained(side.llama(), folder))
    return case


def edited_config(edit):
    def case(side):
        with tempfile.TemporaryDirectory() as folder:
            side.saved(folder)
            path = os.path.join(folder, CONFIG)
            with open(path) as f:
                config = json.load(f)
            edit(config)
            with open(path, "w") as f:
                json.dump(config, f)
            return side.run(side.P.PeftModel.from_pretrained(side.llama(), folder))
    return case


def _first_key(tensors, word="lora_A"):
    return sorted(k for k in tensors if word in k)[0]


def _without(tensors, word):
    del tensors[_first_key(tensors, word)]
    return tensors


def _with_extra(tensors, key):
    tensors[key] = np.zeros((2, 16), np.float32)
    return tensors


def _reshaped(tensors, shape):
    key = _first_key(tensors)
    tensors[key] = np.zeros(shape, np.float32)
    return tensors


def _as_dtype(tensors, dtype):
    key = _first_key(tensors)
    tensors[key] = tensors[key].astype(dtype)
    return tensors


def _set(config, **changes):
    config.update(changes)


def loaded(**kwargs):
    def case(side):
        with tempfile.TemporaryDirectory() as folder:
            side.saved(folder)
            return side.run(side.P.PeftModel.from_pretrained(side.llama(), folder, **kwargs))
    return case


def loaded_adapter(name, *args, **kwargs):
    def case(side):
        with tempfile.TemporaryDirectory() as folder:
            side.saved(folder)
            model = side.adapted()
            model.load_adapter(folder, name, *args, **kwargs)
            return side.run(model)
    return case


CASES.update({
    "from_pretrained(a lora_A missing)": edited_weights(lambda t: _without(t, "lora_A")),
    "from_pretrained(a lora_B missing)": edited_weights(lambda t: _without(t, "lora_B")),
    "from_pretrained(an extra unknown key)": edited_weights(lambda t: _with_extra(t, "base_model.model.bogus.weight")),
    "from_pretrained(an extra lora key of an untargeted module)": edited_weights(lambda t: _with_extra(
        t, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight")),
    "from_pretrained(lora_A of another rank)": edited_weights(lambda t: _reshaped(t, (3, 16))),
    "from_pretrained(lora_A transposed)": edited_weights(lambda t: _reshaped(t, (16, 2))),
    "from_pretrained(lora_A 1-D)": edited_weights(lambda t: _reshaped(t, (32,))),
    "from_pretrained(lora_A float16)": edited_weights(lambda t: _as_dtype(t, np.float16)),
    "from_pretrained(lora_A float64)": edited_weights(lambda t: _as_dtype(t, np.float64)),
    "from_pretrained(lora_A int32)": edited_weights(lambda t: _as_dtype(t, np.int32)),
    "from_pretrained(no weights)": edited_weights(lambda t: {}),
    "from_pretrained(config r=3)": edited_config(lambda c: _set(c, r=3)),
    "from_pretrained(config r='2')": edited_config(lambda c: _set(c, r="2")),
    "from_pretrained(config peft_type bogus)": edited_config(lambda c: _set(c, peft_type="BOGUS")),
    "from_pretrained(config no peft_type)": edited_config(lambda c: c.pop("peft_type")),
    "from_pretrained(config target k_proj)": edited_config(lambda c: _set(c, target_modules=["k_proj"])),
    "from_pretrained(config unknown key)": edited_config(lambda c: _set(c, bogus_field=1)),
    "from_pretrained(config lora_dropout='x')": edited_config(lambda c: _set(c, lora_dropout="x")),
    "from_pretrained(missing folder)": lambda side: side.P.PeftModel.from_pretrained(side.llama(), "/no/such/dir"),
    "from_pretrained(adapter_name=5)": loaded(adapter_name=5),
    "from_pretrained(is_trainable=1)": loaded(is_trainable=1),
    "from_pretrained(config=dict)": loaded(config=dict(BASE)),
    "from_pretrained(model=None)": lambda side: side.P.PeftModel.from_pretrained(None, "/no/such/dir"),
    "load_adapter('default') (taken)": loaded_adapter("default"),
    "load_adapter(5)": loaded_adapter(5),
    "load_adapter(None)": loaded_adapter(None),
    "load_adapter(missing folder)": lambda side: side.adapted().load_adapter("/no/such/dir", "x"),
    "load_adapter('x', 'no') (is_trainable positional)": loaded_adapter("x", "no"),
})


def outcome(side, call):
    try:
        call(side)
        return None
    except Exception as error:  # noqa: BLE001 -- the exception class is what the sweep compares
        return error


def classify(theirs, ours):
    if theirs is None and ours is None:
        return "same"
    if theirs is None:
        return "torch-ok"
    if ours is None:
        return "WORST"
    return "same" if type(ours).__name__ == type(theirs).__name__ or isinstance(ours, type(theirs)) else "diff"


def words(error):
    return "answers" if error is None else f"{type(error).__name__}: {str(error)[:160]!r}"


def main(filters):
    peft_side, ours_side = Side("peft"), Side("minilora")
    counts = collections.Counter()
    for name, call in CASES.items():
        if filters and not any(word in name for word in filters):
            continue
        theirs, ours = outcome(peft_side, call), outcome(ours_side, call)
        kind = classify(theirs, ours)
        counts[kind] += 1
        if kind != "same":
            print(f"{kind:8} {name}\n         peft:     {words(theirs)}\n         minilora: {words(ours)}")
    print(dict(counts))


if __name__ == "__main__":
    main(sys.argv[1:])
