"""AdaLoRA against PEFT 0.22 through a user's training run (not run by CI): ``python -m tests.adalora_sweep``.

Each form builds PEFT's and minilora's AdaLoRA on the same float64 tiny Llama (transformers patched to compute in
float64 throughout, as tests/test_llama.hf), copies PEFT's initial adapter into minilora's, and runs PEFT's
documented loop (``loss = model(**batch).loss; loss.backward(); optimizer.step();
model.base_model.update_and_allocate(step); optimizer.zero_grad()``) on both, comparing after every step: the loss,
every adapter value, which E entries are masked, the allocator's ipt / exp_avg_ipt / exp_avg_unc, the budget and the
rank_pattern. Then files both ways, re-saving a loaded adapter, merge_and_unload, resize_modules_by_rank_pattern,
and errors (type and words). Prints "N of M forms differ" by class."""
import json
import os
import sys
import tempfile
import traceback
import warnings
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402
import torch  # noqa: E402
import peft  # noqa: E402

import minilora as ml  # noqa: E402
from minilora.checkpoint import load_file  # noqa: E402
from minilora.lora import AdaLoraConfig, PeftModel, get_peft_model  # noqa: E402

import test_llama  # noqa: E402
from test_lora_interop import CONFIG, base_pair  # noqa: E402

RTOL = 1e-9   # float64 through AdamW: BLAS orders differ, so values agree to ~1e-12..1e-10 after 10 steps
BASE = dict(init_r=4, target_r=2, tinit=1, tfinal=2, deltaT=2, beta1=0.85, beta2=0.85, orth_reg_weight=0.5,
            total_step=9, target_modules=["q_proj", "v_proj", "down_proj"], lora_alpha=8, lora_dropout=0.0,
            task_type="CAUSAL_LM")
BATCHES = [np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (2, 6)) for seed in range(3)]


def patched_transformers():
    """transformers in float64 throughout (tests/test_llama.hf) and its causal loss in float64."""
    mp = pytest.MonkeyPatch()
    fixture = test_llama.hf
    fn = getattr(fixture, "_get_wrapped_function", None)
    fn = fn() if fn else getattr(fixture, "__wrapped__", fixture)
    transformers = fn(mp)
    from transformers.models.llama import modeling_llama as llama

    def loss_function(self):
        def causal_lm_loss(logits, labels, vocab_size, **kwargs):
            targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1),
                                                     ignore_index=-100)
        return causal_lm_loss
    mp.setattr(llama.LlamaForCausalLM, "loss_function", property(loss_function))
    return transformers


HF = patched_transformers()


class Differs(Exception):
    def __init__(self, kind, what):
        super().__init__(f"[{kind}] {what}")
        self.kind = kind


def arr(x):
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    if isinstance(x, ml.Tensor):
        return x.numpy(force=True)
    return np.asarray(x)


def close(kind, name, got, want, rtol=RTOL):
    got, want = arr(got), arr(want)
    if got.shape != want.shape:
        raise Differs(kind, f"{name}: shape {got.shape} != {want.shape}")
    err = np.abs(got - want).max(initial=0) / max(1e-30, np.abs(want).max(initial=0), 1.0)
    if not err <= rtol:
        raise Differs(kind, f"{name}: rel err {err:.3g}")


def pair(**changes):
    reference, model = base_pair(HF)
    options = {k: v for k, v in dict(BASE, **changes).items() if v is not _DROP}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(reference, peft.AdaLoraConfig(**options))
        ours = get_peft_model(model, AdaLoraConfig(**options))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


_DROP = object()


def values(model):
    return {n: arr(p).copy() for n, p in model.named_parameters() if "lora_" in n or "ranknum" in n}


def compare_state(theirs, ours, step):
    want, got = values(theirs), values(ours)
    if set(want) != set(got):
        raise Differs("names", f"step {step}: {sorted(set(want) ^ set(got))}")
    for n in want:
        close("values", f"{n} @ {step}", got[n], want[n])
        if ".lora_E." in n and not ((got[n] == 0) == (want[n] == 0)).all():
            raise Differs("mask", f"{n} @ {step}")
    ra, rb = getattr(theirs.base_model, "rankallocator", None), getattr(ours.base_model, "rankallocator", None)
    if (ra is None) != (rb is None):
        raise Differs("allocator", "present on one side only")
    if ra is not None:
        for table in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            a, b = getattr(ra, table), getattr(rb, table)
            if set(a) != set(b):
                raise Differs("ipt", f"{table} keys @ {step}: {sorted(set(a) ^ set(b))}")
            for n in a:
                close("ipt", f"{table}[{n}] @ {step}", b[n], a[n])
        for s in (step, step + 1):
            a, b = (error_of(lambda: ra.budget_schedule(s)) or ra.budget_schedule(s),
                    error_of(lambda: rb.budget_schedule(s)) or rb.budget_schedule(s))
            if a != b:
                raise Differs("budget", f"step {s}: {b} != {a}")
        if (ra.init_bgt, ra.target_bgt, list(ra.name_set)) != (rb.init_bgt, rb.target_bgt, list(rb.name_set)):
            raise Differs("budget", "init/target budget or name_set")
    a, b = theirs.peft_config["default"].rank_pattern, ours.peft_config["default"].rank_pattern
    if a != b:
        raise Differs("rank_pattern", f"step {step}: {b} != {a}")


def user_step(model, optimizer, batch, step, lib, call="kw"):
    ids = (torch.as_tensor if lib is torch else ml.tensor)(batch)
    out = model(input_ids=ids, labels=ids) if call == "kw" else model(ids, labels=ids)
    loss = out.loss
    loss.backward()
    optimizer.step()
    model.base_model.update_and_allocate(step)
    optimizer.zero_grad()
    return float(loss.item())


def train(theirs, ours, steps, optimizer="adamw", start=0, seed=None, call="kw"):
    make = {"adamw": lambda lib, p: lib.optim.AdamW(p, lr=0.05),
            "sgd": lambda lib, p: lib.optim.SGD(p, lr=0.5, momentum=0.9)}[optimizer]
    opt_t, opt_o = make(torch, theirs.parameters()), make(ml, ours.parameters())
    for step in range(start, start + steps):
        batch = BATCHES[step % len(BATCHES)]
        if seed is not None:
            torch.manual_seed(seed + step)
        try:
            want = user_step(theirs, opt_t, batch, step, torch, call)
        except Exception as error:  # noqa: BLE001  (PEFT fails: ours must fail there too, with its type)
            got = error_of(lambda: user_step(ours, opt_o, batch, step, ml, call))
            if got is None or got[0] != type(error).__name__:
                raise Differs("error", f"step {step}: ours {got} != PEFT's {type(error).__name__}: {error}")
            return
        if seed is not None:
            ml.manual_seed(seed + step)
        got = user_step(ours, opt_o, batch, step, ml, call)
        if not abs(got - want) <= RTOL * max(1.0, abs(want)):
            raise Differs("loss", f"step {step}: {got!r} != {want!r}")
        compare_state(theirs, ours, step)


def logits(model, ids=BATCHES[0]):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(input_ids=torch.as_tensor(ids)).logits.numpy()
    return model(input_ids=ml.tensor(ids)).logits.numpy(force=True)


def error_of(call):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except Exception as error:  # noqa: BLE001
        return type(error).__name__, str(error)
    return None


def same_error(kind, name, theirs, ours, words=True):
    a, b = error_of(theirs), error_of(ours)
    if (a and a[0]) != (b and b[0]) or (words and a != b):
        raise Differs(kind, f"{name}: ours {b} != PEFT's {a}")


# ------------------------------------------------------------------------------------------------------------
# forms
# ------------------------------------------------------------------------------------------------------------
FORMS = []


def form(kind):
    def deco(fn):
        FORMS.append((kind, fn.__name__, fn))
        return fn
    return deco


TRAIN_FORMS = {
    "base": dict(),
    "no_warmup_no_final": dict(tinit=0, tfinal=0, deltaT=1),
    "betas": dict(beta1=0.5, beta2=0.95),
    "no_orth": dict(orth_reg_weight=0.0),
    "orth_2": dict(orth_reg_weight=2.0, lora_alpha=32),
    "alpha_0": dict(lora_alpha=0),
    "deltaT_3": dict(deltaT=3, total_step=10, tfinal=1),
    "target_1": dict(target_r=1, init_r=3),
    "regex_modules": dict(target_modules=r".*\.(q_proj|o_proj)"),
    "str_module": dict(target_modules=r".*v_proj"),
    "all_linear": dict(target_modules="all-linear"),
    "default_modules": dict(target_modules=None),
    "no_task_type": dict(task_type=None),
    "layers_to_transform": dict(layers_to_transform=[1]),
    "exclude": dict(target_modules=["q_proj", "v_proj"], exclude_modules=["model.layers.0.self_attn.v_proj"]),
    "init_false": dict(init_lora_weights=False),
    "init_gaussian": dict(init_lora_weights="gaussian"),
    "user_rank_pattern": dict(rank_pattern={"model.layers.0.self_attn.q_proj.lora_E": [True, False, True, True]}),
    "total_step_big": dict(total_step=40, tinit=2, tfinal=5),
    "init_r_equal_target_pastfinal": dict(tinit=0, tfinal=0, total_step=3, deltaT=5),
    "modules_to_save": dict(modules_to_save=["lm_head"]),
    "rslora": dict(use_rslora=True),
    "fan_in_fan_out": dict(fan_in_fan_out=True),
    "layers_pattern": dict(layers_to_transform=[0], layers_pattern="layers"),
    "bias_all": dict(bias="all"),
}


def make_train_form(name, changes, steps=11, **kw):
    def run():
        theirs, ours = pair(**changes)
        train(theirs, ours, steps, **kw)
    run.__name__ = f"train:{name}"
    FORMS.append(("train", run.__name__, run))


for _name, _changes in TRAIN_FORMS.items():
    make_train_form(_name, _changes)
make_train_form("sgd", {}, optimizer="sgd")
make_train_form("from_step_1", {}, start=1)
make_train_form("positional_call", {}, call="pos")
make_train_form("dropout", dict(lora_dropout=0.1), seed=10)


@form("train")
def train_eval_mode():
    theirs, ours = pair()
    theirs.eval(), ours.eval()
    train(theirs, ours, 10)


@form("train")
def train_orth_weight_changed_live():
    theirs, ours = pair()
    theirs.peft_config["default"].orth_reg_weight = 3.0
    ours.peft_config["default"].orth_reg_weight = 3.0
    train(theirs, ours, 4)


@form("train")
def train_loss_on_loaded_for_inference():
    """A model loaded without is_trainable has no trainable adapter: PEFT's forward with labels fails."""
    theirs, ours = pair()
    train(theirs, ours, 9)
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(d)
        reference, model = base_pair(HF)
        a, b = peft.PeftModel.from_pretrained(reference, d), PeftModel.from_pretrained(model, d)
        ids = BATCHES[0]
        same_error("error", "forward(labels) on an inference adapter",
                   lambda: a(input_ids=torch.as_tensor(ids), labels=torch.as_tensor(ids)),
                   lambda: b(input_ids=ml.tensor(ids), labels=ml.tensor(ids)), words=False)


def trained(_steps=9, **changes):
    theirs, ours = pair(**changes)
    train(theirs, ours, _steps)
    return theirs, ours


def compare_dirs(a, b, kind):
    want_c, got_c = (json.load(open(os.path.join(d, "adapter_config.json"))) for d in (a, b))
    for c in (want_c, got_c):
        if isinstance(c.get("target_modules"), list):
            c["target_modules"] = sorted(c["target_modules"])
    for key in sorted(set(want_c) | set(got_c)):
        if key not in ("peft_version", "revision", "auto_mapping") and want_c.get(key) != got_c.get(key):
            raise Differs(kind, f"config {key}: {got_c.get(key)!r} != {want_c.get(key)!r}")
    want, got = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (a, b))
    if {k: tuple(v.shape) for k, v in got.items()} != {k: tuple(v.shape) for k, v in want.items()}:
        raise Differs(kind, f"keys/shapes {sorted(got)} vs {sorted(want)}")
    for k in want:
        close(kind, k, got[k], want[k])


@form("save")
def save_after_cut_both_ways():
    theirs, ours = trained()
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(f"{d}/p"), ours.save_pretrained(f"{d}/o")
        compare_dirs(f"{d}/p", f"{d}/o", "save")
        for src in ("p", "o"):
            reference, model = base_pair(HF)
            a = peft.PeftModel.from_pretrained(reference, f"{d}/{src}")
            b = PeftModel.from_pretrained(model, f"{d}/{src}")
            close("load", f"logits from {src}", logits(b), logits(a))
            if {n: tuple(p.shape) for n, p in a.named_parameters()} != \
                    {n: tuple(p.shape) for n, p in b.named_parameters()}:
                raise Differs("load", f"shapes from {src}")
            compare_state(a, b, 0)


@form("save")
def save_again_after_load():
    """Load a cut adapter, save it again: PEFT keeps the already-cut tensors."""
    theirs, ours = trained()
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(f"{d}/p")
        reference, model = base_pair(HF)
        a = peft.PeftModel.from_pretrained(reference, f"{d}/p")
        b = PeftModel.from_pretrained(model, f"{d}/p")
        err_a = error_of(lambda: a.save_pretrained(f"{d}/p2"))
        err_b = error_of(lambda: b.save_pretrained(f"{d}/o2"))
        if err_a != err_b:
            raise Differs("save", f"re-save: ours {err_b} != PEFT's {err_a}")
        if err_a is None:
            compare_dirs(f"{d}/p2", f"{d}/o2", "save")


@form("save")
def save_before_any_cut():
    theirs, ours = pair()
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(f"{d}/p"), ours.save_pretrained(f"{d}/o")
        compare_dirs(f"{d}/p", f"{d}/o", "save")


@form("save")
def save_during_budget_phase():
    theirs, ours = trained(_steps=5)
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(f"{d}/p"), ours.save_pretrained(f"{d}/o")
        compare_dirs(f"{d}/p", f"{d}/o", "save")
        # training goes on after a save (the config's rank_pattern keys lost the adapter name)
        train(theirs, ours, 6, start=5)


@form("save")
def train_on_from_saved_trainable():
    theirs, _ = trained()
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(d)
        reference, model = base_pair(HF)
        a = peft.PeftModel.from_pretrained(reference, d, is_trainable=True)
        b = PeftModel.from_pretrained(model, d, is_trainable=True)
        compare_state(a, b, 0)
        train(a, b, 11)


def save_both_ways(theirs, ours):
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(f"{d}/p"), ours.save_pretrained(f"{d}/o")
        compare_dirs(f"{d}/p", f"{d}/o", "save")
        for src in ("p", "o"):
            reference, model = base_pair(HF)
            a = peft.PeftModel.from_pretrained(reference, f"{d}/{src}", is_trainable=True)
            b = PeftModel.from_pretrained(model, f"{d}/{src}", is_trainable=True)
            close("load", f"logits from {src}", logits(b), logits(a))
            compare_state(a, b, 0)


@form("save")
def train_on_from_a_file_with_a_rank_0_layer():
    theirs, ours = pair(target_r=1)  # (3 layers of rank 3 and 3 of rank 0: a budget of 9 falls to 6)
    names = [n for n, _ in theirs.base_model.model.named_parameters() if ".lora_E." in n]
    pattern = {n: [True, True, False, True] if i % 2 else [False] * 4 for i, n in enumerate(names)}
    theirs.peft_config["default"].rank_pattern = dict(pattern)
    ours.peft_config["default"].rank_pattern = dict(pattern)
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(f"{d}/p"), ours.save_pretrained(f"{d}/o")
        compare_dirs(f"{d}/p", f"{d}/o", "save")
        reference, model = base_pair(HF)
        a = peft.PeftModel.from_pretrained(reference, f"{d}/p", is_trainable=True)
        b = PeftModel.from_pretrained(model, f"{d}/o", is_trainable=True)
        compare_state(a, b, 0)
        train(a, b, 11)


@form("save")
def save_lora_bias():
    save_both_ways(*trained(lora_bias=True))


@form("save")
def save_init_r_0():
    save_both_ways(*pair(init_r=0, target_r=0))


@form("save")
def save_user_rank_pattern_untrained():
    """A rank_pattern given in the config (masks, keys without the adapter name) cuts the saved file."""
    names = ["model.layers.0.self_attn.q_proj.lora_E", "model.layers.1.mlp.down_proj.lora_E"]
    save_both_ways(*pair(rank_pattern={names[0]: [True, False, True, False], names[1]: [False] * 4}))


@form("save")
def load_adapter_beside_the_trained_one():
    """A cut adapter loaded as a second (inference) adapter into a model being trained, then training goes on."""
    source, _ = trained()
    with tempfile.TemporaryDirectory() as d:
        source.save_pretrained(d)
        theirs, ours = pair()
        train(theirs, ours, 3)
        theirs.load_adapter(d, "other"), ours.load_adapter(d, "other")
        want = {n for n, p in theirs.named_parameters() if p.requires_grad}
        got = {n for n, p in ours.named_parameters() if p.requires_grad}
        if want != got:
            raise Differs("load", f"trainable after load_adapter: {sorted(want ^ got)}")
        # (PEFT froze the trained adapter in every resized layer: its backward then has nothing to differentiate)
        opt_t, opt_o = torch.optim.AdamW(theirs.parameters(), lr=0.05), ml.optim.AdamW(ours.parameters(), lr=0.05)
        same_error("load", "a step after load_adapter", lambda: user_step(theirs, opt_t, BATCHES[0], 3, torch),
                   lambda: user_step(ours, opt_o, BATCHES[0], 3, ml))


@form("warn")
def warnings_loading_a_cut_adapter():
    theirs, ours = trained()
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(d)
        got = []
        for side in ("peft", "ours"):
            reference, model = base_pair(HF)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if side == "peft":
                    peft.PeftModel.from_pretrained(reference, d)
                else:
                    PeftModel.from_pretrained(model, d)
            got.append(sorted({(w.category.__name__, str(w.message)) for w in caught}))
        if got[0] != got[1]:
            raise Differs("warn", f"ours {got[1]} != PEFT's {got[0]}")


@form("merge")
def merge_and_unload_after_training():
    theirs, ours = trained()
    with torch.no_grad():
        want = logits(theirs.merge_and_unload())
    close("merge", "merged logits", logits(ours.merge_and_unload()), want)


@form("merge")
def merge_unmerge_during_training():
    theirs, ours = trained(_steps=5)
    theirs.merge_adapter(), ours.merge_adapter()
    close("merge", "merged logits", logits(ours), logits(theirs))
    theirs.unmerge_adapter(), ours.unmerge_adapter()
    close("merge", "unmerged logits", logits(ours), logits(theirs))


@form("resize")
def resize_modules_by_rank_pattern():
    theirs, ours = trained()
    pattern = theirs.peft_config["default"].rank_pattern
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.base_model.resize_modules_by_rank_pattern(pattern, "default")
    err = error_of(lambda: ours.base_model.resize_modules_by_rank_pattern(pattern, "default"))
    if err:
        raise Differs("resize", f"resize_modules_by_rank_pattern: {err}")
    compare_state(theirs, ours, 9)
    close("resize", "logits", logits(ours), logits(theirs))


@form("resize")
def resize_state_dict_by_rank_pattern():
    theirs, ours = trained()
    pattern = theirs.peft_config["default"].rank_pattern
    want = theirs.base_model.resize_state_dict_by_rank_pattern(
        pattern, {f"base_model.model.{k}": v for k, v in theirs.base_model.model.state_dict().items()
                  if "lora_" in k}, "default")
    fn = getattr(ours.base_model, "resize_state_dict_by_rank_pattern", None)
    if fn is None:
        raise Differs("resize", "no resize_state_dict_by_rank_pattern")
    got = fn(pattern, {f"base_model.model.{k}": v for k, v in ours.base_model.model.state_dict().items()
                       if "lora_" in k}, "default")
    if {k: tuple(v.shape) for k, v in got.items()} != {k: tuple(v.shape) for k, v in want.items()}:
        raise Differs("resize", "shapes")


# errors -----------------------------------------------------------------------------------------------------
CONFIG_ERRORS = {
    "no_total_step": dict(total_step=_DROP),
    "total_0": dict(total_step=0),
    "no_budget_phase": dict(total_step=10, tinit=8, tfinal=2),
    "negative_orth": dict(orth_reg_weight=-0.1),
    "dora": dict(use_dora=True),
    "loftq": dict(loftq_config={"loftq_bits": 4}),
    "layers_pattern_alone": dict(layers_pattern="layers"),
    "beta1_1": dict(beta1=1.0),
    "beta2_0": dict(beta2=0.0),
    "beta1_neg": dict(beta1=-0.5),
    "deltaT_0": dict(deltaT=0),
    "init_r_0": dict(init_r=0, target_r=0),
    "init_r_neg": dict(init_r=-1),
    "tinit_neg": dict(tinit=-1),
    "float_tinit": dict(tinit=0.5),
    "init_pissa": dict(init_lora_weights="pissa"),
    "init_olora": dict(init_lora_weights="olora"),
    "lora_bias": dict(lora_bias=True),
    "r_16": dict(r=16),
    "rank_pattern_ints": dict(rank_pattern={"q_proj": 2}),
}


def make_config_error(name, changes):
    def run():
        options = {k: v for k, v in dict(BASE, **changes).items() if v is not _DROP}
        same_error("config", f"AdaLoraConfig({changes})", lambda: peft.AdaLoraConfig(**options),
                   lambda: AdaLoraConfig(**options))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                peft.AdaLoraConfig(**options)
        except Exception:  # noqa: BLE001
            return
        reference, model = base_pair(HF)
        same_error("config", f"get_peft_model({changes})",
                   lambda: peft.get_peft_model(reference, peft.AdaLoraConfig(**options)),
                   lambda: get_peft_model(model, AdaLoraConfig(**options)), words=False)
        try:
            theirs, ours = pair(**changes)
        except Exception:  # noqa: BLE001
            return
        # then train: the error (or not) at the same step
        opt_t, opt_o = torch.optim.AdamW(theirs.parameters(), lr=0.05), ml.optim.AdamW(ours.parameters(), lr=0.05)
        for step in range(11):
            batch = BATCHES[step % 3]
            a = error_of(lambda: user_step(theirs, opt_t, batch, step, torch))
            b = error_of(lambda: user_step(ours, opt_o, batch, step, ml))
            if (a and a[0]) != (b and b[0]):
                raise Differs("config", f"train step {step} with {changes}: ours {b} != PEFT's {a}")
            if a:
                return
            compare_state(theirs, ours, step)
    run.__name__ = f"config:{name}"
    FORMS.append(("config", run.__name__, run))


for _name, _changes in CONFIG_ERRORS.items():
    make_config_error(_name, _changes)


@form("error")
def update_before_backward():
    theirs, ours = pair()
    same_error("error", "update_and_allocate(0) before backward", lambda: theirs.base_model.update_and_allocate(0),
               lambda: ours.base_model.update_and_allocate(0), words=False)


@form("error")
def update_past_boundary_first():
    """Straight to a step past total_step - tfinal: no rank_pattern yet."""
    theirs, ours = pair()
    for m, lib in ((theirs, torch), (ours, ml)):
        ids = (torch.as_tensor if lib is torch else ml.tensor)(BATCHES[0])
        m(input_ids=ids, labels=ids).loss.backward()
    same_error("error", "update_and_allocate(8)", lambda: theirs.base_model.update_and_allocate(8),
               lambda: ours.base_model.update_and_allocate(8), words=False)


@form("error")
def two_trainable_adapters():
    theirs, ours = pair()
    same_error("error", "add_adapter second trainable",
               lambda: theirs.add_adapter("second", peft.AdaLoraConfig(**BASE)),
               lambda: ours.add_adapter("second", AdaLoraConfig(**BASE)))


@form("error")
def embedding_target():
    reference, model = base_pair(HF)
    options = dict(BASE, target_modules=["embed_tokens"])
    same_error("error", "embed_tokens target", lambda: peft.get_peft_model(reference, peft.AdaLoraConfig(**options)),
               lambda: get_peft_model(model, AdaLoraConfig(**options)), words=False)


@form("error")
def str_target_matching_nothing():
    reference, model = base_pair(HF)
    options = dict(BASE, target_modules="v_proj")
    same_error("error", "target_modules='v_proj'", lambda: peft.get_peft_model(reference, peft.AdaLoraConfig(**options)),
               lambda: get_peft_model(model, AdaLoraConfig(**options)), words=False)


@form("error")
def weighted_adapter():
    theirs, ours = pair()
    same_error("error", "add_weighted_adapter", lambda: theirs.add_weighted_adapter(["default"], [1.0], "x"),
               lambda: ours.add_weighted_adapter(["default"], [1.0], "x"))


@form("error")
def update_on_inference_loaded():
    theirs, ours = pair()
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(d)
        reference, model = base_pair(HF)
        a, b = peft.PeftModel.from_pretrained(reference, d), PeftModel.from_pretrained(model, d)
        same_error("error", "update_and_allocate on inference model", lambda: a.base_model.update_and_allocate(0),
                   lambda: b.base_model.update_and_allocate(0), words=False)


def main():
    only = sys.argv[1:]
    counts, differ = Counter(), Counter()
    for kind, name, fn in FORMS:
        if only and not any(o in name for o in only):
            continue
        counts[kind] += 1
        try:
            torch.manual_seed(0), ml.manual_seed(0)
            fn()
        except Differs as d:
            differ[kind] += 1
            print(f"DIFF {name}: {d}")
        except Exception as e:  # noqa: BLE001
            differ[kind] += 1
            print(f"CRASH {name}: {type(e).__name__}: {str(e)[:300]}")
            if os.environ.get("TRACE"):
                traceback.print_exc()
        else:
            print(f"ok   {name}")
    for kind in counts:
        print(f"{kind}: {differ[kind]} of {counts[kind]} forms differ")
    print(f"TOTAL: {sum(differ.values())} of {sum(counts.values())} forms differ")


if __name__ == "__main__":
    main()
