"""transformers 5's ``TrainingArguments`` field by field, as its users set them, through minilora's Trainer
(``minilora/trainer.py``): a value a user sets trains the same run (log_history: losses, grad norms, learning
rates; the weights; checkpoint folders), a bad value is refused where and as transformers refuses it, and a
field minilora does not do is refused by name. The oracle is transformers itself on the same tiny Llama (float32,
the same weights, the same rows). Skipped without torch or transformers."""
import dataclasses
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from trainer_rows import collator, examples, save_tiny_llama  # noqa: E402
from minilora import models  # noqa: E402
from minilora import optim as ml_optim  # noqa: E402
from minilora import trainer as ml_trainer  # noqa: E402

# float32 sums in another order (the loss over tokens, the gradient norm): a few ulps apart, then Adam's
# normalised steps carry them into the weights (~1e-6 after 4 steps at lr 1e-2)
RTOL, WEIGHTS_ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


def rows(count=6):
    """Token rows of 5-7 tokens, one label -100 in each, and a "text" column the model does not take."""
    return examples(count)


USER_DEFAULTS = dict(report_to="none", disable_tqdm=True, learning_rate=1e-2, per_device_train_batch_size=2,
                     max_steps=3, logging_steps=1, save_strategy="no")


def train(lib, base, folder, **arguments):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = lib.TrainingArguments(output_dir=str(folder), **{**USER_DEFAULTS, **arguments})
        model = (transformers.LlamaForCausalLM if lib is transformers else models.LlamaForCausalLM).from_pretrained(
            str(base))
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows(), eval_dataset=rows(4),
                              data_collator=collator(torch.tensor if lib is transformers else ml.tensor))
        trainer.train()
    return trainer


def assert_same_run(theirs, ours):
    """The same log entries (keys, steps, epochs, learning rates; losses and norms to float32 sums' order),
    the same weights, the same files."""
    assert [sorted(e) for e in ours.state.log_history] == [sorted(e) for e in theirs.state.log_history]
    for a, b in zip(theirs.state.log_history, ours.state.log_history):
        for key, value in a.items():
            if key.endswith(("runtime", "per_second")):
                continue
            assert b[key] == pytest.approx(value, rel=RTOL), (key, a, b)
    weights = theirs.model.state_dict()
    for name, value in ours.model.state_dict().items():
        np.testing.assert_allclose(value.numpy(force=True), weights[name].detach().numpy(), rtol=0,
                                   atol=WEIGHTS_ATOL, err_msg=name)
    assert sorted(os.walk(ours.args.output_dir))[1:] == [] or \
        [(os.path.relpath(r, ours.args.output_dir), sorted(f)) for r, _, f in sorted(os.walk(ours.args.output_dir))] \
        == [(os.path.relpath(r, theirs.args.output_dir), sorted(f)) for r, _, f in
            sorted(os.walk(theirs.args.output_dir))]


# Fields (and values) a user sets that minilora ran differently from transformers before this round
RUNS = {
    # transformers 5's other schedules: minilora raised NotImplementedError (their other kwargs: the schedule test)
    "warmup_stable_decay": dict(lr_scheduler_type="warmup_stable_decay", warmup_steps=1,
                                lr_scheduler_kwargs={"num_decay_steps": 2, "decay_type": "1-sqrt",
                                                     "min_lr_ratio": 0.1}),
    "cosine_warmup_with_min_lr": dict(lr_scheduler_type="cosine_warmup_with_min_lr", warmup_steps=2,
                                      lr_scheduler_kwargs={"min_lr": 1e-3, "warmup_lr_rate": 0.1}),
    # a negative weight decay is a parameter group's value, which torch's AdamW does not check (minilora refused);
    # optim_target_modules is read by GaLore / APOLLO only (refused by name): AdamW's run is the same (refused)
    "weight_decay": dict(weight_decay=-0.5, optim_target_modules=["q_proj"]),
    # transformers compiles the model, and inductor computes the eager model's numbers: the oracle runs eagerly
    # here (compiling takes it ~25 s); minilora refused the field
    "torch_compile": dict(torch_compile=True, torch_compile_mode="default"),
    # transformers' LengthGroupedSampler (randperm from the global generator, mega-batches sorted longest first,
    # over batch x accumulation rows): minilora refused it
    # transformers' own Adafactor (not torch's) at the given lr: minilora refused the name
    "optim": dict(optim="adafactor", weight_decay=0.1),
    "train_sampling_strategy": dict(train_sampling_strategy="group_by_length", gradient_accumulation_steps=2,
                                    max_steps=2, per_device_train_batch_size=1),
}
EAGER_ORACLE = {"torch_compile", "torch_compile_mode"}


@pytest.mark.parametrize("case", sorted(RUNS))
def test_a_field_a_user_sets_trains_as_transformers(base, tmp_path, case):
    arguments = RUNS[case]
    theirs = train(transformers, base, tmp_path / "theirs",
                   **{k: v for k, v in arguments.items() if k not in EAGER_ORACLE})
    ours = train(ml_trainer, base, tmp_path / "ours", **arguments)
    assert_same_run(theirs, ours)
    rates = [e["learning_rate"] for e in ours.state.log_history if "learning_rate" in e]
    assert rates == [e["learning_rate"] for e in theirs.state.log_history if "learning_rate" in e]


# Bad values: transformers refuses each when TrainingArguments is built (or the Trainer), in these words; minilora
# had taken them (or failed later, in other words: logging_steps=0 was a ZeroDivisionError at the first step)
BAD = {
    "lr_scheduler_type": dict(lr_scheduler_type="cosine_restart"),
    "logging_steps=0": dict(logging_steps=0),
    "logging_steps=1.5": dict(logging_steps=1.5),
    "save_steps=2.5": dict(save_strategy="steps", save_steps=2.5),
    "eval_steps=2.5": dict(eval_strategy="steps", eval_steps=2.5),
    "eval_steps=0,logging_steps=0": dict(eval_strategy="steps", eval_steps=0, logging_steps=0),
    "warmup_steps": dict(warmup_steps=-1),
    "hub_strategy": dict(hub_strategy="sometimes"),
    "debug": dict(debug="underflow"),
    "dataloader_prefetch_factor": dict(dataloader_prefetch_factor=2),
    "tf32": dict(tf32=True),
    "greedy without evaluation": dict(lr_scheduler_type="greedy"),
    "reduce_lr_on_plateau without evaluation": dict(lr_scheduler_type="reduce_lr_on_plateau"),
    "fp16 and bf16": dict(fp16=True, bf16=True, use_cpu=True),
    "torch_empty_cache_steps": dict(torch_empty_cache_steps=0),
}


def error_of(build):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build()
    except Exception as error:  # noqa: BLE001 (the error itself is what is compared)
        return type(error), str(error)
    return None


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_value_is_refused_as_transformers_refuses_it(tmp_path, case):
    theirs = error_of(lambda: transformers.TrainingArguments(output_dir=str(tmp_path), **BAD[case]))
    ours = error_of(lambda: ml_trainer.TrainingArguments(output_dir=str(tmp_path), **BAD[case]))
    assert theirs is not None and ours == theirs


@pytest.mark.parametrize("field", ["log_level", "log_level_replica"])
def test_an_unknown_log_level_stops_the_trainer_as_transformers(tmp_path, field):
    """transformers' Trainer looks the level up when it starts: a KeyError naming it (minilora took it)."""
    errors = []
    for lib, model in ((transformers, torch.nn.Linear(2, 2)), (ml_trainer, ml.nn.Linear(2, 2))):
        args = lib.TrainingArguments(output_dir=str(tmp_path), report_to="none", **{field: "loud"})
        errors.append(error_of(lambda: lib.Trainer(model=model, args=args)))
    assert errors[0] == errors[1] == (KeyError, "'loud'")


@pytest.mark.parametrize("field, value, words", [
    ("dataloader_persistent_workers", True, "persistent_workers option needs num_workers > 0"),
    ("dataloader_multiprocessing_context", "spawn", "multiprocessing_context can only be used with multi-process "
                                                    "loading (num_workers > 0), but got num_workers=0")])
def test_a_worker_option_without_workers_is_refused_as_torch_refuses_it(base, tmp_path, field, value, words):
    """transformers hands these to torch's DataLoader, which refuses them without workers (minilora dropped them
    and trained)."""
    errors = [error_of(lambda: train(lib, base, tmp_path / lib.__name__, **{field: value}))
              for lib in (transformers, ml_trainer)]
    assert errors[0] == errors[1] == (ValueError, words)


# Fields minilora does not do on one CPU process: refused by name when set (transformers runs them, or needs a
# package or a device this machine lacks)
REFUSED = {
    "debug": (dict(debug="underflow_overflow"), ValueError, "does not implement debug"),
    "enable_jit_checkpoint": (dict(enable_jit_checkpoint=True), ValueError, "does not implement enable_jit_checkpoint"),
    "ddp_backend": (dict(ddp_backend="gloo"), ValueError, "does not implement ddp_backend"),
    "use_liger_kernel": (dict(use_liger_kernel=True), ValueError, "does not implement use_liger_kernel"),
    "train_sampling_strategy": (dict(train_sampling_strategy="batch_rebalance"), ValueError,
                                "train_sampling_strategy='batch_rebalance': minilora's Trainer samples 'random', "
                                "'sequential' or 'group_by_length'"),
}


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_a_field_minilora_does_not_do_is_refused_by_name(tmp_path, field):
    arguments, error, words = REFUSED[field]
    with pytest.raises(error, match=words):
        ml_trainer.TrainingArguments(output_dir=str(tmp_path), **arguments)


def test_fields_are_normalised_as_transformers_normalises_them(tmp_path):
    """The values the Trainer reads back: torch_compile turned on by a mode, its backend, debug as a list,
    integral step counts given as floats, the enums' values."""
    arguments = dict(torch_compile_mode="max-autotune", debug="", logging_steps=4.0, eval_strategy="steps",
                     eval_steps=6.0, save_steps=8.0, hub_strategy="end", lr_scheduler_type="warmup_stable_decay")
    theirs = transformers.TrainingArguments(output_dir=str(tmp_path), **arguments)
    ours = ml_trainer.TrainingArguments(output_dir=str(tmp_path), **arguments)
    for field in ("torch_compile", "torch_compile_backend", "torch_compile_mode", "debug", "logging_steps",
                  "eval_steps", "save_steps", "hub_strategy", "lr_scheduler_type"):
        value = getattr(theirs, field)
        assert getattr(ours, field) == getattr(value, "value", value), field
        assert type(getattr(ours, field)) is type(getattr(value, "value", value)), field


def test_schedules_by_name_follow_transformers_step_by_step():
    """get_scheduler's two schedules new here, against transformers' own lambdas, every step of the run."""
    from transformers import optimization
    for name, kwargs in (("warmup_stable_decay", {"num_decay_steps": 4, "warmup_type": "1-sqrt",
                                                  "decay_type": "linear", "min_lr_ratio": 0.2}),
                         ("warmup_stable_decay", {"num_decay_steps": 3, "num_stable_steps": 2, "num_cycles": 1.0}),
                         ("cosine_warmup_with_min_lr", {"min_lr_rate": 0.1}),
                         ("cosine_warmup_with_min_lr", {"min_lr": 1e-3, "warmup_lr_rate": 0.25, "num_cycles": 1})):
        rates = []
        for lib_optim, param in ((torch.optim, torch.nn.Parameter(torch.ones(1))),
                                 (ml_optim, ml.nn.Parameter(ml.ones(1)))):
            opt = lib_optim.SGD([param], lr=0.01)
            get = optimization.get_scheduler if lib_optim is torch.optim else ml_optim.get_scheduler
            schedule = get(name, opt, num_warmup_steps=3, num_training_steps=12, scheduler_specific_kwargs=kwargs)
            seen = []
            for _ in range(14):
                seen.append(opt.param_groups[0]["lr"])
                opt.step()
                schedule.step()
            rates.append(seen)
        assert rates[1] == rates[0], (name, kwargs)


def test_every_field_is_checked_here(tmp_path):
    """Each transformers field minilora refuses is either one transformers cannot run on this CPU either, or
    listed above as a deliberate refusal (a new field in NOT_IMPLEMENTED must be added here)."""
    fields = {f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init}
    assert set(ml_trainer.NOT_IMPLEMENTED) <= fields
    needs_elsewhere = {"bf16_full_eval", "fp16_full_eval", "liger_kernel_config", "eval_use_gather_object",
                       "batch_eval_metrics", "push_to_hub", "accelerator_config", "parallelism_config", "fsdp",
                       "fsdp_config", "deepspeed"}
    assert set(ml_trainer.NOT_IMPLEMENTED) == needs_elsewhere | set(REFUSED) - {"lr_scheduler_type",
                                                                                        "train_sampling_strategy"}


@pytest.mark.parametrize("options", [dict(lr=1e-2, scale_parameter=False, relative_step=False),
                                     dict(beta1=0.9, weight_decay=0.1),
                                     dict(warmup_init=True, clip_threshold=0.5)])
def test_transformers_adafactor_steps_as_transformers(options):
    """optim="adafactor" builds transformers' Adafactor: its factored second moment for a matrix, the full one
    for a vector, the clipped update, beta1's first moment, relative and RMS-scaled step sizes."""
    from transformers.optimization import Adafactor as TheirAdafactor

    from minilora.optim.hf_adafactor import Adafactor
    g = np.random.default_rng(0)
    weights = [g.standard_normal(shape).astype(np.float32) for shape in ((3, 4), (4,))]
    grads = [[g.standard_normal(w.shape).astype(np.float32) for w in weights] for _ in range(3)]
    theirs = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    ours = [ml.nn.Parameter(ml.tensor(w)) for w in weights]
    optimizers = [TheirAdafactor(theirs, **options), Adafactor(ours, **options)]
    for step in grads:
        for params, optimizer, tensor in zip((theirs, ours), optimizers, (torch.tensor, ml.tensor)):
            for p, grad in zip(params, step):
                p.grad = tensor(grad)
            optimizer.step()
    for a, b in zip(theirs, ours):  # (the RMS norms' float32 sums in another order: a few ulps)
        np.testing.assert_allclose(b.numpy(force=True), a.detach().numpy(), rtol=1e-6, atol=1e-7)
