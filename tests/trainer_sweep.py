"""Sweep (outside CI): minilora's Trainer/TrainingArguments against transformers' on the same tiny Llama in
float64, form by form: ``log_history`` (losses, learning rates, grad norms, epochs, eval losses, steps), the final
weights, ``global_step`` and the optimizer steps taken. Run ``python -m tests.trainer_sweep [substring]``; it prints
each differing form and "N of M forms differ" by class."""
import collections
import os
import shutil
import sys
import tempfile
import traceback
import warnings

import numpy as np
import torch
import transformers
import transformers.trainer

sys.path.insert(0, os.path.dirname(__file__))
from trainer_rows import collator, examples, save_tiny_llama  # noqa: E402

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models  # noqa: E402
from minilora import trainer as ml_trainer  # noqa: E402

def float64_transformers(setattr=setattr):
    """transformers' Llama computing in the model's dtype throughout (as tests/test_llama.py's ``hf`` fixture):
    stock transformers normalizes, computes its RoPE tables, its eager softmax and its causal-LM loss in float32
    even in a float64 model, where minilora's float64 model stays float64."""
    from transformers.loss import loss_utils
    from transformers.models.llama import modeling_llama as llama

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rope(self, x, position_ids):
        init = (self.compute_default_rope_parameters if self.rope_type == "default"
                else llama.ROPE_INIT_FUNCTIONS[self.rope_type])
        float32, torch.float = torch.float, torch.float64
        try:
            inv_freq, attention_scaling = init(self.config)
        finally:
            torch.float = float32
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        return ((angles.cos() * attention_scaling).to(x.dtype), (angles.sin() * attention_scaling).to(x.dtype))

    def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key = llama.repeat_kv(key, module.num_key_value_groups)
        value = llama.repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

    def causal_loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None,
                    **kwargs):
        if shift_labels is None:
            labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
            shift_labels = labels[..., 1:].contiguous()
        return loss_utils.fixed_cross_entropy(logits.view(-1, vocab_size), shift_labels.view(-1), num_items_in_batch,
                                              ignore_index, **kwargs)

    setattr(llama.LlamaRMSNorm, "forward", rms_norm)
    setattr(llama.LlamaRotaryEmbedding, "forward", rope)
    setattr(llama, "eager_attention_forward", eager_attention)
    setattr(transformers.trainer, "ForCausalLMLoss", causal_loss)  # (its Trainer asks: does the loss shift labels?)
    return causal_loss


REL = 1e-10  # float64 sums in another order: a few ulps, grown over a few Adam steps

BASE = dict(learning_rate=1e-2, per_device_train_batch_size=2, num_train_epochs=2, logging_steps=1,
            save_strategy="no", seed=42, optim="adamw_torch", report_to="none", disable_tqdm=True)


def _forms():
    f = []
    s = lambda name, **kw: f.append(("schedule", name, kw, {}))  # noqa: E731
    s("linear warmup 2", lr_scheduler_type="linear", warmup_steps=2)
    s("linear warmup 0.3", lr_scheduler_type="linear", warmup_steps=0.3)
    s("linear warmup 1.0 float", lr_scheduler_type="linear", warmup_steps=1.0)
    s("linear warmup 1", lr_scheduler_type="linear", warmup_steps=1)
    s("linear warmup 0.5", lr_scheduler_type="linear", warmup_steps=0.5)
    s("cosine", lr_scheduler_type="cosine", warmup_steps=2)
    s("cosine num_cycles", lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": 1.5})
    s("cosine_with_restarts", lr_scheduler_type="cosine_with_restarts", warmup_steps=1,
      lr_scheduler_kwargs={"num_cycles": 3})
    s("polynomial", lr_scheduler_type="polynomial", warmup_steps=1, lr_scheduler_kwargs={"power": 2.0, "lr_end": 1e-4})
    s("polynomial default", lr_scheduler_type="polynomial")
    s("constant", lr_scheduler_type="constant")
    s("constant warmup ignored", lr_scheduler_type="constant", warmup_steps=3)
    s("constant_with_warmup", lr_scheduler_type="constant_with_warmup", warmup_steps=3)
    s("inverse_sqrt", lr_scheduler_type="inverse_sqrt", warmup_steps=2)
    s("inverse_sqrt timescale", lr_scheduler_type="inverse_sqrt", lr_scheduler_kwargs={"timescale": 3})
    s("reduce_lr_on_plateau", lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps", eval_steps=1,
      lr_scheduler_kwargs={"patience": 0, "factor": 0.5})
    s("reduce_lr_on_plateau default", lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="epoch")
    s("cosine_with_min_lr", lr_scheduler_type="cosine_with_min_lr", warmup_steps=1,
      lr_scheduler_kwargs={"min_lr": 1e-3})
    s("cosine_with_min_lr rate", lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1})
    s("cosine_warmup_with_min_lr", lr_scheduler_type="cosine_warmup_with_min_lr", warmup_steps=2,
      lr_scheduler_kwargs={"min_lr_rate": 0.1})
    s("warmup_stable_decay", lr_scheduler_type="warmup_stable_decay", warmup_steps=2,
      lr_scheduler_kwargs={"num_decay_steps": 3})
    s("warmup_stable_decay cosine", lr_scheduler_type="warmup_stable_decay", warmup_steps=1,
      lr_scheduler_kwargs={"num_decay_steps": 2, "num_stable_steps": 2, "decay_type": "1-sqrt",
                           "min_lr_ratio": 0.1, "warmup_type": "cosine"})
    s("warmup_stable_decay ratio", lr_scheduler_type="warmup_stable_decay", warmup_steps=0.2,
      lr_scheduler_kwargs={"num_decay_steps": 2})
    a = lambda name, **kw: f.append(("accumulation", name, kw, {}))  # noqa: E731
    a("accum 2 of 11", gradient_accumulation_steps=2)
    a("accum 3 of 11", gradient_accumulation_steps=3)
    a("accum 4 bs 1", gradient_accumulation_steps=4, per_device_train_batch_size=1)
    a("accum 2 bs 3", gradient_accumulation_steps=2, per_device_train_batch_size=3)
    a("max_steps 5", max_steps=5)
    a("max_steps 7 accum 2", max_steps=7, gradient_accumulation_steps=2)
    a("epochs 1.5", num_train_epochs=1.5)
    a("epochs 0.4 accum 2", num_train_epochs=0.4, gradient_accumulation_steps=2)
    a("epochs 2.3 warmup 0.25", num_train_epochs=2.3, warmup_steps=0.25)
    a("drop_last", dataloader_drop_last=True)
    a("max_steps 20 over epochs", max_steps=20, gradient_accumulation_steps=2)
    a("accum 8 over 6 batches", gradient_accumulation_steps=8)
    a("average_tokens_across_devices False", average_tokens_across_devices=False, gradient_accumulation_steps=2)
    a("label_smoothing", label_smoothing_factor=0.1, gradient_accumulation_steps=2)
    a("neftune", neftune_noise_alpha=5.0)
    o = lambda name, **kw: f.append(("optimizer", name, kw, {}))  # noqa: E731
    o("max_grad_norm 0", max_grad_norm=0)
    o("max_grad_norm None", max_grad_norm=None)
    o("max_grad_norm 0.01", max_grad_norm=0.01)
    o("weight_decay", weight_decay=0.1)
    o("betas eps", adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6, weight_decay=0.05)
    o("adamw_torch_fused", optim="adamw_torch_fused", weight_decay=0.1)
    o("sgd", optim="sgd")
    o("sgd momentum", optim="sgd", optim_args="momentum=0.9,nesterov=True", weight_decay=0.1)
    o("sgd dampening", optim="sgd", optim_args="momentum=0.9,dampening=0.1")
    o("adagrad", optim="adagrad", optim_args="lr_decay=0.01,eps=1e-9", weight_decay=0.1)
    o("rmsprop", optim="rmsprop", weight_decay=0.01)
    o("rmsprop centered", optim="rmsprop", optim_args="momentum=0.5,alpha=0.9,centered=True")
    o("adafactor", optim="adafactor")
    o("adafactor wd", optim="adafactor", weight_decay=0.1)
    o("adamw optim_args", optim="adamw_torch", optim_args="foo=1")
    lg = lambda name, extra=None, **kw: f.append(("logging", name, kw, extra or {}))  # noqa: E731
    lg("logging_steps 3", logging_steps=3)
    lg("logging_steps 0.25", logging_steps=0.25)
    lg("logging_first_step", logging_steps=4, logging_first_step=True)
    lg("logging epoch", logging_strategy="epoch")
    lg("logging no", logging_strategy="no")
    lg("eval steps 2", eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=3)
    lg("eval epoch", eval_strategy="epoch")
    lg("eval steps 0.3", eval_strategy="steps", eval_steps=0.3)
    lg("eval accum", eval_strategy="steps", eval_steps=2, gradient_accumulation_steps=3)
    lg("eval_on_start", eval_strategy="steps", eval_steps=4, eval_on_start=True)
    lg("eval_delay", eval_strategy="steps", eval_steps=1, eval_delay=3)
    lg("tokens seen", include_num_input_tokens_seen="non_padding", gradient_accumulation_steps=2)
    lg("best model", save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
       load_best_model_at_end=True, save_total_limit=1)
    lg("save best", save_strategy="best", eval_strategy="steps", eval_steps=3, metric_for_best_model="loss")
    lg("f64 default + logging 3", {"default_float64": True}, logging_steps=3, eval_strategy="steps", eval_steps=3)
    lg("f64 default + label_smoothing", {"default_float64": True}, label_smoothing_factor=0.2,
       gradient_accumulation_steps=2)
    lg("f64 default + compute_loss_func", {"default_float64": True, "compute_loss_func": True},
       gradient_accumulation_steps=3)
    lg("f64 default + peft", {"default_float64": True, "peft": True}, weight_decay=0.1, gradient_accumulation_steps=2)
    lg("f64 default + neftune", {"default_float64": True}, neftune_noise_alpha=3.0)
    lg("f64 default + resume", {"default_float64": True, "resume": True}, save_strategy="steps", save_steps=4,
       gradient_accumulation_steps=2, num_train_epochs=3)
    lg("callback stops", {"stop_at": 3}, gradient_accumulation_steps=2)
    lg("user optimizers", {"user_optim": True}, gradient_accumulation_steps=2)
    lg("optimizer_cls_and_kwargs", {"cls_kwargs": True})
    lg("group_by_length", train_sampling_strategy="group_by_length", gradient_accumulation_steps=2)
    lg("lr_scheduler_kwargs json", lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs='{"num_cycles": 2}')
    lg("warmup 2.5", warmup_steps=2.5)
    lg("max_grad_norm -1", max_grad_norm=-1.0)
    lg("warmup_ratio (gone in 5)", warmup_ratio=0.1)
    lg("unknown scheduler", lr_scheduler_type="cosine_annealing")
    lg("unknown optim", optim="adamw")
    lg("data_seed", data_seed=7, seed=3)
    lg("seed 0", seed=0)
    lg("label_names", label_names=["labels"])
    lg("sequential", train_sampling_strategy="sequential")
    lg("peft", {"peft": True}, weight_decay=0.1)
    lg("peft accum", {"peft": True}, gradient_accumulation_steps=2, lr_scheduler_type="cosine")
    lg("compute_loss override", {"compute_loss": True}, gradient_accumulation_steps=2)
    lg("loss_is_scaled_for_ga False", {"scaled": False}, gradient_accumulation_steps=3)
    lg("loss_is_scaled_for_ga True", {"scaled": True, "compute_loss": True}, gradient_accumulation_steps=3)
    lg("compute_loss_func", {"compute_loss_func": True}, gradient_accumulation_steps=2)
    lg("callbacks", {"callbacks": True}, gradient_accumulation_steps=2, eval_strategy="steps", eval_steps=3)
    lg("save + resume True", {"resume": True}, save_strategy="steps", save_steps=3, save_total_limit=2)
    lg("save + resume path accum", {"resume": "checkpoint-4"}, save_strategy="steps", save_steps=2,
       gradient_accumulation_steps=2, lr_scheduler_type="cosine", warmup_steps=1, num_train_epochs=3)
    lg("save epoch resume", {"resume": True}, save_strategy="epoch", save_total_limit=1, num_train_epochs=3)
    lg("default dtype float64", {"default_float64": True}, gradient_accumulation_steps=2)
    return f


FORMS = _forms()


class Events:
    """Records the callback events (and each on_optimizer_step) in order."""

    def __init__(self, base):
        names = ("on_train_begin", "on_epoch_begin", "on_step_begin", "on_pre_optimizer_step", "on_optimizer_step",
                 "on_substep_end", "on_step_end", "on_log", "on_evaluate", "on_save", "on_epoch_end", "on_train_end")
        self.events = []
        for name in names:
            setattr(self, name, self._record(name))
        self.__class__ = type("Events", (Events, base), {})

    def _record(self, name):
        def record(args, state, control, **kwargs):
            self.events.append((name, state.global_step))
        return record


def _model(lib, folder, peft_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lib is transformers:
            model = transformers.LlamaForCausalLM.from_pretrained(str(folder), attn_implementation="eager").double()
        else:
            model = models.LlamaForCausalLM.from_pretrained(str(folder)).double()
    if peft_model:
        import peft
        config = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, bias="lora_only")
        if lib is transformers:
            torch.manual_seed(3)
            model = peft.get_peft_model(model, peft.LoraConfig(**config))
        else:
            ml.manual_seed(3)
            model = ml_peft.get_peft_model(model, ml_peft.LoraConfig(**config))
    return model


def _trainer_class(lib, extra):
    base = lib.Trainer
    if "scaled" in extra:
        base = type("Scaled", (base,), {"loss_is_scaled_for_ga": extra["scaled"]})
    if not extra.get("compute_loss"):
        return base

    class Own(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            loss = outputs["loss"] * 1.5
            return (loss, outputs) if return_outputs else loss
    return Own


def _loss_func(lib):
    def loss_func(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"][:, :-1].reshape(-1, outputs["logits"].shape[-1])
        target = labels[:, 1:].reshape(-1)
        F = torch.nn.functional if lib is transformers else ml.nn.functional
        total = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
        return total / num_items_in_batch if num_items_in_batch is not None else total / (target != -100).sum()
    return loss_func


def run(lib, base, folder, arguments, extra):
    tensor = torch.tensor if lib is transformers else ml.tensor
    lib_t = transformers if lib is transformers else ml_trainer
    events = Events(lib_t.TrainerCallback) if extra.get("callbacks") else None
    steps = []

    class Count(lib_t.TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    class Stop(lib_t.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == extra["stop_at"]:
                control.should_training_stop = True

    def make():
        args = lib_t.TrainingArguments(output_dir=str(folder), **arguments)
        kw = {"compute_loss_func": _loss_func(lib)} if extra.get("compute_loss_func") else {}
        model = _model(lib, base, extra.get("peft"))
        optim = torch.optim if lib is transformers else ml.optim
        if extra.get("user_optim"):
            opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            kw["optimizers"] = (opt, optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5))
        if extra.get("cls_kwargs"):
            kw["optimizer_cls_and_kwargs"] = (optim.RMSprop, {"lr": 0.003, "alpha": 0.95})
        callbacks = [Count()] + ([events] if events else []) + ([Stop()] if "stop_at" in extra else [])
        return _trainer_class(lib_t, extra)(
            model=model, args=args, train_dataset=examples(11), eval_dataset=examples(5),
            data_collator=collator(tensor), callbacks=callbacks, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resume = extra.get("resume")
        if resume:  # an interrupted run, resumed by a fresh trainer
            trainer = make()
            trainer.train()
            checkpoints = sorted((d for d in os.listdir(folder) if d.startswith("checkpoint-")),
                                 key=lambda d: int(d.split("-")[1]))
            uninterrupted = ([dict(e) for e in trainer.state.log_history], _weights(lib, trainer.model))
            keep = (checkpoints[-2] if len(checkpoints) > 1 else checkpoints[-1]) if resume is True else resume
            for d in os.listdir(folder):
                if d != keep:
                    shutil.rmtree(os.path.join(folder, d), ignore_errors=True)
            steps.clear()
            trainer = make()
            trainer.train(resume_from_checkpoint=True if resume is True else os.path.join(folder, keep))
        else:
            uninterrupted = None
            trainer = make()
            trainer.train()
    history = [{k: v for k, v in e.items() if not k.endswith(("_runtime", "_per_second"))}
               for e in trainer.state.log_history]
    return {"history": history, "weights": _weights(lib, trainer.model), "global_step": trainer.state.global_step,
            "optimizer_steps": len(steps), "events": events.events if events else None,
            "optimizer_groups": [(len(g["params"]), g.get("weight_decay")) for g in trainer.optimizer.param_groups],
            "uninterrupted": uninterrupted}


def _weights(lib, model):
    return {n: (p.detach().numpy() if lib is transformers else p.numpy()).copy()
            for n, p in model.named_parameters()}


def _close(a, b, rel=REL):
    if isinstance(a, float) and isinstance(b, float) and not (a == 0 or b == 0):
        return abs(a - b) <= rel * max(abs(a), abs(b))
    return a == b


def compare(theirs, ours):
    """The first difference as a string, or None; a resumed run is also compared with its own uninterrupted run
    (bit for bit)."""
    rel = REL
    for key in ("global_step", "optimizer_steps", "events", "optimizer_groups"):
        if theirs[key] != ours[key]:
            return f"{key}: {ours[key]} != transformers' {theirs[key]}"
    th, oh = theirs["history"], ours["history"]
    if [sorted(e) for e in th] != [sorted(e) for e in oh]:
        return f"log keys: {[sorted(e) for e in oh]} != {[sorted(e) for e in th]}"
    for a, b in zip(th, oh):
        for key in a:
            if key in ("total_flos",):
                continue
            if not _close(float(a[key]) if isinstance(a[key], (int, float)) else a[key],
                          float(b[key]) if isinstance(b[key], (int, float)) else b[key], rel):
                return f"step {a['step']} {key}: {b[key]!r} != transformers' {a[key]!r}"
            if key in ("epoch", "step", "learning_rate") and a[key] != b[key]:
                return f"step {a['step']} {key}: {b[key]!r} != transformers' {a[key]!r} (exact)"
    tw, ow = theirs["weights"], ours["weights"]
    if sorted(tw) != sorted(ow):
        return f"parameter names differ: {sorted(set(tw) ^ set(ow))[:4]}"
    for name in tw:
        err = np.max(np.abs(tw[name] - ow[name]) / np.maximum(np.abs(tw[name]), 1e-3))
        if not err <= max(rel, 1e-9):
            return f"weight {name}: rel {err:.2e}"
    if ours["uninterrupted"] is not None:
        hist, weights = ours["uninterrupted"]
        # (the step logs only: a resumed run's closing entry counts this call's steps; transformers' resumed run's
        # first loss after the resume is the mean since the resume, where minilora keeps the unlogged sum)
        steps = [{k: v for k, v in e.items() if k != "loss"} for e in hist if "grad_norm" in e or "eval_loss" in e]
        resumed = [{k: v for k, v in e.items() if k != "loss"} for e in ours["history"]
                   if "grad_norm" in e or "eval_loss" in e]
        if steps != resumed:
            return f"resumed log_history {resumed} != the uninterrupted run's {steps}"
        for name in weights:
            if not np.array_equal(weights[name], ours["weights"][name]):
                return f"resumed weights {name} != the uninterrupted run's"
    return None


def main(argv):
    from transformers.loss import loss_utils
    loss_utils.LOSS_MAPPING["ForCausalLM"] = float64_transformers()
    torch.set_num_threads(1)  # (as conftest.py: torch's sums in one order)
    pattern = argv[1] if len(argv) > 1 else ""
    folder = tempfile.mkdtemp()
    base = save_tiny_llama(os.path.join(folder, "llama"))
    differ, total = collections.Counter(), collections.Counter()
    for kind, name, kw, extra in FORMS:
        if pattern not in name:
            continue
        total[kind] += 1
        arguments = {**BASE, **kw}
        results = []
        for lib in (transformers, ml):
            out = os.path.join(folder, f"{'t' if lib is transformers else 'm'}-{name.replace(' ', '_')}")
            old = torch.get_default_dtype(), ml.get_default_dtype()
            if extra.get("default_float64"):
                torch.set_default_dtype(torch.float64)
                ml.set_default_dtype(ml.float64)
            try:
                results.append(run(lib, base, out, arguments, extra))
            except Exception as e:  # noqa: BLE001
                results.append(f"{type(e).__name__}: {e}".splitlines()[0][:200])
                if os.environ.get("TRACE"):
                    traceback.print_exc()
            finally:
                torch.set_default_dtype(old[0])
                ml.set_default_dtype(old[1])
        theirs, ours = results
        if isinstance(theirs, str) or isinstance(ours, str):
            problem = None if isinstance(theirs, str) and isinstance(ours, str) and \
                theirs.split(":")[0] == ours.split(":")[0] else f"raised: ours={ours!r} theirs={theirs!r}"
        else:
            problem = compare(theirs, ours)
        if problem:
            differ[kind] += 1
            print(f"DIFF [{kind}] {name}: {problem}", flush=True)
        elif isinstance(theirs, str):
            print(f"same error [{kind}] {name}: {theirs}", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    for kind in total:
        print(f"  {kind}: {differ[kind]} of {total[kind]} forms differ")
    print(f"{sum(differ.values())} of {sum(total.values())} forms differ")


if __name__ == "__main__":
    main(sys.argv)
