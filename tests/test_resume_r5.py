"""A killed run resumes to the same result, round 5: the training options users combine.

Each case trains a reference run straight through, then the same run killed (a KeyboardInterrupt raised
where the data loader hands out a batch: mid-accumulation or at a step's first micro-batch; or a save
that fails with a full disk) and resumed from its last checkpoint into a model whose adapters start
elsewhere. The final weights, the optimizer state, the losses/lrs/gradient norms, the evaluations and
the metrics log must equal the reference bit for bit.
"""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import minilora as ml
from minilora import nn
from minilora import train as train_mod
from minilora.nn.llama import causal_lm_loss
from minilora.lora import AdaLoraConfig, LoraConfig, get_peft_model
from minilora.train import load_training_state, train

import background_runs  # (tests/, on the path as for conftest.py)
from test_faults import ENV, ROOT, byte_model_dir, leftovers, posix_only, save_byte_model  # noqa: F401 (a fixture)
from test_train import DropoutLM, counting_rows, crash_at, tiny_llama

STEPS = 8
# Gradient accumulation, warmup then cosine, clipping that bites, evaluation every 2 steps and a
# checkpoint every 3: evaluations and checkpoints fall on different steps.
KW = dict(batch_size=4, lr=1e-2, warmup_steps=2, grad_accum=2, clip_norm=0.5, eval_every=2, save_every=3,
          progress=False, plot=False)


def lora(init_seed, **config):
    model = tiny_llama(0)  # the same frozen base every time: it is not in the checkpoint
    ml.manual_seed(init_seed)  # where the adapters start: the checkpoint must overwrite it
    return get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.2, **config))


MODELS = {
    "lora-dropout": lambda seed: lora(seed, target_modules="all-linear"),
    "dora": lambda seed: lora(seed, use_dora=True, target_modules=["q_proj", "v_proj", "down_proj"]),
    "lora-bf16-base": lambda seed: get_peft_model(
        tiny_llama(0).to(ml.bfloat16), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.2, target_modules="all-linear")),
    "full-dropout": lambda seed: DropoutLM(seed),
    "full-bf16": lambda seed: tiny_llama(seed).to(ml.bfloat16),  # bfloat16 weights and AdamW moments
    "lora-dropout-gradient-checkpointing": lambda seed: checkpointed(lora(seed, target_modules="all-linear")),
}


def checkpointed(model):
    model.gradient_checkpointing_enable()  # backward replays each layer's dropout masks from the generator
    return model
# batch index -> where the kill falls (2 micro-batches a step; checkpoints at steps 3 and 6)
KILLS = {"mid-accumulation": 9, "first-micro-batch": 12}


def run(make, out, init_seed=0, crash=None, **kw):
    model = make(init_seed)
    rows = counting_rows()
    data = crash_at(rows, crash, batch_size=KW["batch_size"]) if crash is not None else rows
    options = {**KW, **kw}
    hook, make_optimizers = options.pop("after_optimizer_step", None), options.pop("optimizers", None)
    result = train(model, data, rows[:8], steps=STEPS, out_dir=out and str(out),
                   after_optimizer_step=hook(model) if hook else None,
                   optimizers=make_optimizers(model) if make_optimizers else (None, None), **options)
    return model, result


def killed_and_resumed(make, out, crash, **kw):
    with pytest.raises(KeyboardInterrupt):
        run(make, out, crash=crash, **kw)
    return run(make, out, init_seed=7, resume=True, **kw)


def assert_equal_tree(a, b, where="state"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_equal_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tree(x, y, f"{where}.{i}")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def train_records(out):
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def assert_same_run(reference, resumed):
    (ref_model, ref, ref_out), (model, res, out) = reference, resumed
    assert res.steps_run < STEPS  # it did resume
    assert (res.losses, res.lrs, res.grad_norms, res.evals) == (ref.losses, ref.lrs, ref.grad_norms, ref.evals)
    for (name, a), (_, b) in zip(ref_model.named_parameters(), model.named_parameters()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.numpy(force=True), b.numpy(force=True), err_msg=name)
    final, ref_final = (load_training_state(os.path.join(d, "checkpoint.npz")) for d in (out, ref_out))
    for key in ("optimizer", "scheduler", "rng", "losses", "model"):
        assert_equal_tree(ref_final[key], final[key], key)
    assert train_records(out) == train_records(ref_out)
    assert leftovers(out) == []


_references = {}


def reference(name, tmp_path_factory, **kw):
    key = (name, tuple(sorted(kw)))
    if key not in _references:
        out = tmp_path_factory.mktemp(f"reference-{name}")
        _references[key] = (*run(MODELS[name], out, **kw), str(out))
    return _references[key]


@pytest.mark.parametrize("kill", list(KILLS))
@pytest.mark.parametrize("name", list(MODELS))
def test_killed_run_resumes_bit_for_bit(tmp_path, tmp_path_factory, name, kill):
    resumed = killed_and_resumed(MODELS[name], tmp_path, KILLS[kill])
    assert_same_run(reference(name, tmp_path_factory), (*resumed, str(tmp_path)))


# --- an eval_fn that leaves the model in eval mode ---------------------------------------------------
def leaves_eval_mode(model):
    model.eval()  # what many hand-written evaluation functions do, without switching back
    return {"mode": "eval"}


def test_training_goes_on_in_train_mode_after_an_eval_fn(tmp_path):
    """The Hugging Face Trainer puts the model back in train mode for every step. minilora's loop set it
    once: after an eval_fn that called model.eval(), the rest of the run trained without dropout -- and a
    resumed run (which starts in train mode) trained with it, so resuming changed the result."""
    ref_model, ref = run(MODELS["full-dropout"], tmp_path / "ref", eval_fn=leaves_eval_mode)
    straight_without_eval = run(MODELS["full-dropout"], tmp_path / "plain", eval_every=0)[1]
    assert ref.losses == straight_without_eval.losses  # evaluating changes nothing in the training
    assert ref_model.training
    resumed = killed_and_resumed(MODELS["full-dropout"], tmp_path / "run", KILLS["mid-accumulation"],
                                 eval_fn=leaves_eval_mode)
    assert_same_run((ref_model, ref, str(tmp_path / "ref")), (*resumed, str(tmp_path / "run")))


# --- AdaLoRA: the rank allocator's state is part of the run ------------------------------------------
def adalora(init_seed, total_step=STEPS):
    model = tiny_llama(0)
    ml.manual_seed(init_seed)
    return get_peft_model(model, AdaLoraConfig(init_r=4, target_r=2, tinit=1, tfinal=2, deltaT=2, total_step=total_step,
                                               target_modules="all-linear"))


def allocate(model):
    return model.base_model.update_and_allocate


@pytest.mark.parametrize("crash", [9, 13], ids=["during-the-budget-fall", "after-the-final-mask"])
def test_adalora_resumes_with_its_allocator_state(tmp_path, crash):
    """Killed after total_step - tfinal, a resumed run had no rank pattern to re-apply (TypeError:
    'NoneType' object is not iterable); killed earlier, its importance averages restarted from zero."""
    ref_model, ref = run(adalora, tmp_path / "ref", after_optimizer_step=allocate)
    model, resumed = killed_and_resumed(adalora, tmp_path / "run", crash, after_optimizer_step=allocate)
    assert_same_run((ref_model, ref, str(tmp_path / "ref")), (model, resumed, str(tmp_path / "run")))
    pattern = model.peft_config["default"].rank_pattern
    assert pattern == ref_model.peft_config["default"].rank_pattern and pattern is not None


def test_adalora_importance_averages_survive_a_resume(tmp_path):
    """Before the final mask the allocator's exponential averages carry the run's history: the resumed
    allocator holds the very arrays of the uninterrupted one."""
    def make(seed):
        return adalora(seed, total_step=40)  # the 8 steps stay inside the budget schedule
    ref_model, _ = run(make, tmp_path / "ref", after_optimizer_step=allocate)
    model, _ = killed_and_resumed(make, tmp_path / "run", KILLS["first-micro-batch"], after_optimizer_step=allocate)
    ref_state, state = ref_model.base_model.allocator_state_dict(), model.base_model.allocator_state_dict()
    assert ref_state["exp_avg_ipt"]  # (not empty: the test compares something)
    assert_equal_tree(ref_state, state, "allocator")


def test_adalora_allocator_state_of_another_model_is_refused(tmp_path):
    def make(seed):
        return adalora(seed, total_step=40)  # the final checkpoint still holds importance averages
    run(make, tmp_path, after_optimizer_step=allocate)
    path = os.path.join(tmp_path, "checkpoint.npz")
    state = load_training_state(path)
    name = next(iter(state["allocator"]["exp_avg_ipt"]))
    state["allocator"]["exp_avg_ipt"][name] = np.zeros((3, 3), np.float32)
    train_mod.save_training_state(path, state)
    model = make(7)
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    with pytest.raises(train_mod.ResumeError, match="allocator state holds"):
        train(model, counting_rows(), steps=STEPS, out_dir=str(tmp_path), resume=True, **KW)
    for n, p in model.named_parameters():  # refused before any weight changed
        np.testing.assert_array_equal(p.numpy(), before[n], err_msg=n)


# --- saves that fail: the previous checkpoint stays, and the run resumes from it ---------------------
def disk_full_on_second_checkpoint(where, monkeypatch):
    """Make the second checkpoint save (step 6) fail with ENOSPC: in ``os.replace`` (the new file was
    written whole) or in ``np.savez`` (half of it was written)."""
    calls = []
    if where == "os.replace":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith("checkpoint.npz"):
                calls.append(dst)
                if len(calls) == 2:
                    raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            return real_replace(src, dst, *args, **kwargs)
        monkeypatch.setattr(os, "replace", replace)
    else:
        real_savez = np.savez

        def savez(file, *args, **kwargs):
            calls.append(file)
            if len(calls) == 2:
                file.write(b"PK\x03\x04 half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_savez(file, *args, **kwargs)
        monkeypatch.setattr(np, "savez", savez)


@pytest.mark.parametrize("where", ["os.replace", "np.savez"])
def test_a_checkpoint_save_that_fails_keeps_the_previous_one(tmp_path, tmp_path_factory, monkeypatch, where):
    disk_full_on_second_checkpoint(where, monkeypatch)
    with pytest.raises(OSError) as caught:
        run(MODELS["lora-dropout"], tmp_path, plot=True)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_training_state(os.path.join(tmp_path, "checkpoint.npz"))["step"] == 3
    assert leftovers(tmp_path) == []
    resumed = run(MODELS["lora-dropout"], tmp_path, init_seed=7, resume=True)
    assert_same_run(reference("lora-dropout", tmp_path_factory), (*resumed, str(tmp_path)))


def test_a_failed_checkpoint_is_reported_not_the_plot_after_it(tmp_path, monkeypatch):
    """With the disk full, the loss plot written on the way out fails too: the error the user sees
    must be the checkpoint's, not the plot's."""
    pytest.importorskip("matplotlib")
    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if str(dst).endswith(("checkpoint.npz", "loss.png")):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError) as caught:
        run(MODELS["full-dropout"], tmp_path, plot=True)
    assert caught.value.filename.endswith("checkpoint.npz")


# --- minilora train --method adalora --resume, killed with SIGKILL --------------------------------
ADALORA_ARGV = ["--method", "adalora", "--init-r", "4", "--target-r", "2", "--tinit", "1", "--tfinal", "2",
                "--target-modules", "q_proj,v_proj", "--lora-dropout", "0.1", "--grad-accum", "2",
                "--warmup-steps", "2", "--steps", "8", "--eval-every", "2", "--eval-n", "1", "--batch-size", "4",
                "--no-progress", "--task", "reverse"]


def cli(model_dir, out, *extra, timeout=60):
    """The run's limit is in seconds of a CPU it can have (``background_runs.run_process``): this runs beside the
    main process, and a loaded CI's 60 s of wall time ended a healthy run."""
    return background_runs.run_process([sys.executable, "-m", "minilora", "train", "--model", model_dir, "--out", out,
                                        *ADALORA_ARGV, *extra], env=ENV, cwd=ROOT, timeout=timeout)


def files_of(out):
    adapter = os.path.join(out, "adapter")
    return {name: open(os.path.join(adapter, name), "rb").read() for name in sorted(os.listdir(adapter))}


def adalora_killed_and_resumed(folder):
    """A reference AdaLoRA `minilora train` run, one SIGKILLed after its step-4 checkpoint, and its resume: what
    the test checks of them.  A background run (tests/background_runs.py) on the core CI's main process leaves
    idle: ~7 s of subprocesses."""
    model_dir = save_byte_model(os.path.join(folder, "byte_model"))
    reference_out = os.path.join(folder, "reference")
    done = cli(model_dir, reference_out)
    if done.returncode != 0:
        return {"reference": (done.returncode, done.stderr)}
    out = os.path.join(folder, "killed")
    child = subprocess.Popen([sys.executable, "-m", "minilora", "train", "--model", model_dir, "--out", out,
                              *ADALORA_ARGV], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    checkpoint = os.path.join(out, "checkpoint.npz")
    while child.poll() is None and time.perf_counter() - start < 60:  # after the checkpoint of step 4
        if os.path.isfile(checkpoint) and load_training_state(checkpoint)["step"] >= 4:
            break
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = os.path.isdir(os.path.join(out, "adapter"))
    again = cli(model_dir, out, "--resume")
    ok = again.returncode == 0
    return {"reference": (0, ""), "finished_before_the_kill": finished,
            "resume": (again.returncode, again.stdout, again.stderr),
            "files": (files_of(out) if ok else None, files_of(reference_out)),
            "records": (train_records(out) if ok else None, train_records(reference_out)),
            "leftovers": leftovers(out)}


KILLED = "test_resume_r5: an AdaLoRA minilora train killed and resumed"


def start_background_runs(items, runs):
    if os.name == "posix" and background_runs.selected(
            items, __name__, "test_cli_adalora_killed_with_sigkill_resumes_to_the_same_adapter"):
        runs.submit(KILLED, __name__, "adalora_killed_and_resumed", str(runs.folder("adalora")))


@posix_only
def test_cli_adalora_killed_with_sigkill_resumes_to_the_same_adapter(background):
    if KILLED not in background:  # (queued by start_background_runs, unless the session selected it otherwise)
        background.submit(KILLED, __name__, "adalora_killed_and_resumed", str(background.folder("adalora")))
    got = background.result(KILLED)
    returncode, stderr = got["reference"]
    assert returncode == 0, stderr
    assert not got["finished_before_the_kill"], "killed too late: the run had finished"
    returncode, stdout, stderr = got["resume"]
    assert returncode == 0, stderr
    assert "resume: continuing" in stdout
    assert got["files"][0] == got["files"][1]
    assert got["records"][0] == got["records"][1]
    assert got["leftovers"] == []


def test_cli_adalora_resume_with_other_budget_options_is_refused(byte_model_dir, tmp_path, capsys):
    """The rank budget is part of the run: resuming with another --target-r would mix two schedules."""
    from test_cli import run_cli
    out = str(tmp_path / "run")
    argv = ["train", "--model", byte_model_dir, "--out", out, *ADALORA_ARGV]
    argv[argv.index("--steps") + 1] = "4"
    code, text = run_cli(argv, capsys)
    assert code == 0, text
    with open(os.path.join(out, "run.json")) as f:
        options = json.load(f)
    assert (options["init_r"], options["target_r"], options["tinit"], options["lora_alpha"]) == (4, 2, 1, 8)
    assert "r" not in options  # LoRA's --r does not apply to AdaLoRA
    argv[argv.index("--target-r") + 1] = "3"
    code, text = run_cli([*argv, "--resume"], capsys)
    assert code == 2 and "--target-r 2, not --target-r 3" in text, text


# --- buffers that training changes: BatchNorm's running statistics ---------------------------------
class BatchNormLM(nn.Module):
    """Embedding -> BatchNorm1d -> Linear: its running mean/var (buffers, not parameters) change every
    training step and decide the evaluation loss, so they are part of the run."""

    def __init__(self, seed=0):
        super().__init__()
        ml.manual_seed(seed)
        self.embed = nn.Embedding(16, 12)
        self.norm = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, 16)

    def forward(self, input_ids, labels=None):
        hidden = self.norm(self.embed(input_ids).transpose(1, 2)).transpose(1, 2)
        logits = self.head(hidden)
        return types.SimpleNamespace(logits=logits, loss=causal_lm_loss(logits, labels))


def test_buffers_changed_by_training_resume_too(tmp_path):
    ref_model, ref = run(BatchNormLM, tmp_path / "ref")
    model, resumed = killed_and_resumed(BatchNormLM, tmp_path / "run", KILLS["first-micro-batch"])
    assert_same_run((ref_model, ref, str(tmp_path / "ref")), (model, resumed, str(tmp_path / "run")))
    for (name, a), (_, b) in zip(ref_model.named_buffers(), model.named_buffers()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_resume_from_a_checkpoint_path_into_another_folder(tmp_path, tmp_path_factory):
    """resume=PATH continues a run in a new out_dir (a copy of the checkpoint moved to faster disk, a
    fork of the run): the result's per-step lrs and gradient norms come with the checkpoint, as its
    losses do -- the new folder has no metrics log of the steps before (they were [] there, so
    result.lrs[i] was no longer step i + 1's)."""
    with pytest.raises(KeyboardInterrupt):
        run(MODELS["lora-dropout"], tmp_path / "first", crash=KILLS["first-micro-batch"])
    ref_model, ref, _ = reference("lora-dropout", tmp_path_factory)
    model, resumed = run(MODELS["lora-dropout"], tmp_path / "second", init_seed=7,
                         resume=str(tmp_path / "first" / "checkpoint.npz"))
    assert (resumed.losses, resumed.lrs, resumed.grad_norms) == (ref.losses, ref.lrs, ref.grad_norms)
    for (name, a), (_, b) in zip(ref_model.named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


@pytest.mark.parametrize("name", ["checkpoint.npz", "metrics.jsonl", "loss.png"])
def test_a_folder_where_a_run_file_goes_is_refused_before_training(tmp_path, name):
    """A folder named checkpoint.npz in out_dir failed the first checkpoint save after the steps had run
    (IsADirectoryError from os.replace); one named metrics.jsonl failed step 1's log line. Refused up front,
    naming it, and the folder is left as it was."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "keep.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match=f"{name} is a folder"):
        run(MODELS["full-dropout"], tmp_path, plot=True)
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing ran: no log, no checkpoint
    assert (tmp_path / name / "keep.txt").read_text() == "mine"


def test_cli_out_holding_a_folder_named_like_a_run_file_is_a_usage_error(byte_model_dir, tmp_path, capsys):
    from test_cli import run_cli
    out = tmp_path / "run"
    (out / "checkpoint.npz").mkdir(parents=True)
    # (without --overwrite it was refused as "already holds a run"; with it, the steps ran and the first
    # checkpoint save ended in an IsADirectoryError traceback)
    code, text = run_cli(["train", "--model", byte_model_dir, "--out", str(out), "--overwrite", *ADALORA_ARGV],
                         capsys)
    assert code == 2 and "checkpoint.npz is a folder" in text and "Traceback" not in text, text
    assert os.listdir(out) == ["checkpoint.npz"]


# --- every schedule train() offers, and an optimizer of the caller's (LoRA+) --------------------------
SCHEDULES = {"linear": None, "cosine": None, "cosine_with_restarts": {"num_cycles": 2}, "polynomial": {"power": 2.0},
             "constant": None, "constant_with_warmup": None, "inverse_sqrt": None,
             "cosine_with_min_lr": {"min_lr": 1e-3}}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_every_schedule_resumes_bit_for_bit(tmp_path, schedule):
    options = dict(lr_scheduler_type=schedule, lr_scheduler_kwargs=SCHEDULES[schedule])
    reference_run = run(MODELS["lora-dropout"], tmp_path / "ref", **options)
    resumed = killed_and_resumed(MODELS["lora-dropout"], tmp_path / "run", KILLS["mid-accumulation"], **options)
    assert_same_run((*reference_run, str(tmp_path / "ref")), (*resumed, str(tmp_path / "run")))


def test_lr_scheduler_type_is_transformers_schedule():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for schedule, kwargs in SCHEDULES.items():
        lrs = run(MODELS["lora-dropout"], None, lr_scheduler_type=schedule, lr_scheduler_kwargs=kwargs)[1].lrs
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=KW["lr"])
        expected = transformers.get_scheduler(schedule, optimizer, num_warmup_steps=KW["warmup_steps"],
                                              num_training_steps=STEPS, scheduler_specific_kwargs=kwargs)
        torch_lrs = []
        for _ in range(STEPS):
            torch_lrs.append(expected.get_last_lr()[0])
            optimizer.step()
            expected.step()
        np.testing.assert_allclose(lrs, torch_lrs, rtol=1e-12, atol=1e-15, err_msg=schedule)


def loraplus(model):
    from minilora.lora.loraplus import create_loraplus_optimizer
    from minilora.optim import AdamW, get_linear_schedule_with_warmup
    optimizer = create_loraplus_optimizer(model, AdamW, lr=5e-3, loraplus_lr_ratio=4.0)
    return optimizer, get_linear_schedule_with_warmup(optimizer, 2, STEPS)


@pytest.mark.parametrize("kill", list(KILLS))
def test_loraplus_optimizer_resumes_bit_for_bit(tmp_path, kill):
    """optimizers=(optimizer, lr_scheduler), as the Hugging Face Trainer: LoRA+'s per-group learning rates
    (B learns 4x faster than A) are the run's, and survive the resume (train's lr does not replace them)."""
    reference_run = run(MODELS["lora-dropout"], tmp_path / "ref", optimizers=loraplus)
    resumed = killed_and_resumed(MODELS["lora-dropout"], tmp_path / "run", KILLS[kill], optimizers=loraplus)
    assert_same_run((*reference_run, str(tmp_path / "ref")), (*resumed, str(tmp_path / "run")))
    state = load_training_state(os.path.join(tmp_path, "run", "checkpoint.npz"))
    assert [g["initial_lr"] for g in state["optimizer"]["param_groups"]] == [5e-3, 1e-6, 2e-2, 2e-2]


def test_optimizers_mistakes_are_named(tmp_path):
    model = MODELS["lora-dropout"](0)
    _, scheduler = loraplus(model)
    with pytest.raises(ValueError, match="pass that optimizer with it"):
        train(model, counting_rows(), steps=2, optimizers=(None, scheduler), progress=False)
    with pytest.raises(ValueError, match="must be a pair"):
        train(model, counting_rows(), steps=2, optimizers=loraplus(model)[0], progress=False)
    with pytest.raises(ValueError, match="reduce_lr_on_plateau"):
        train(model, counting_rows(), steps=2, lr_scheduler_type="reduce_lr_on_plateau", progress=False)


# --- Python's and NumPy's global generators, as the Hugging Face Trainer saves them -----------------
class GlobalNoiseLM(nn.Module):
    """Adds noise drawn from Python's `random` and NumPy's global generator (what a user's augmentation or
    a third-party layer does): the Trainer restores both on resume (rng_state.pth), so must train()."""

    def __init__(self, seed=0):
        super().__init__()
        ml.manual_seed(seed)
        self.embed = nn.Embedding(16, 12)
        self.head = nn.Linear(12, 16)

    def forward(self, input_ids, labels=None):
        hidden = self.embed(input_ids)
        if self.training:
            noise = np.random.standard_normal(tuple(hidden.shape)).astype(np.float32) * random.random()
            hidden = hidden + ml.tensor(noise)
        logits = self.head(hidden)
        return types.SimpleNamespace(logits=logits, loss=causal_lm_loss(logits, labels))


def test_python_and_numpy_global_generators_resume_too(tmp_path):
    random.seed(0)
    np.random.seed(0)
    ref_model, ref = run(GlobalNoiseLM, tmp_path / "ref")
    random.seed(0)
    np.random.seed(0)
    with pytest.raises(KeyboardInterrupt):
        run(GlobalNoiseLM, tmp_path / "run", crash=KILLS["mid-accumulation"])
    random.seed(123)  # a new process: other states
    np.random.seed(123)
    model, resumed = run(GlobalNoiseLM, tmp_path / "run", init_seed=7, resume=True)
    assert_same_run((ref_model, ref, str(tmp_path / "ref")), (model, resumed, str(tmp_path / "run")))


def test_cli_adalora_killed_after_its_last_checkpoint_writes_the_same_adapter(byte_model_dir, tmp_path, capsys):
    """Killed between the final checkpoint and the adapter save: --resume restores the allocator's rank
    pattern with the weights, so the adapter holds the kept ranks only, as the run's own save did."""
    import shutil

    from test_cli import run_cli
    out = str(tmp_path / "run")
    argv = ["train", "--model", byte_model_dir, "--out", out, *ADALORA_ARGV]
    code, text = run_cli(argv, capsys)
    assert code == 0, text
    saved = files_of(out)
    shutil.rmtree(os.path.join(out, "adapter"))
    code, text = run_cli([*argv, "--resume"], capsys)
    assert code == 0 and "already holds all 8 steps" in text, text
    assert files_of(out) == saved
    assert json.loads(saved["adapter_config.json"])["rank_pattern"]


def test_cli_run_killed_before_its_first_checkpoint_says_to_start_over(byte_model_dir, tmp_path, capsys):
    """A run killed before its first checkpoint leaves metrics.jsonl only: the plain command said 'continue it
    with --resume', and --resume then said there is no checkpoint. Both now say --overwrite."""
    from test_cli import run_cli
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 3.0}\n')
    argv = ["train", "--model", byte_model_dir, "--out", str(out), *ADALORA_ARGV]
    for extra in ([], ["--resume"]):
        code, text = run_cli([*argv, *extra], capsys)
        assert code == 2 and "before its first checkpoint" in text and "--overwrite" in text, text
        assert "continue it with --resume" not in text
    code, text = run_cli([*argv, "--overwrite", "--steps", "4"], capsys)
    assert code == 0, text


def sampled_tokens(model):
    """An evaluation that samples (draws from minilora's generator between training steps)."""
    out = model.generate(np.array([[3, 4, 5]]), do_sample=True, max_new_tokens=4, top_k=0)
    return {"sample": [int(t) for t in np.asarray(out.numpy() if hasattr(out, "numpy") else out)[0, 3:]]}


def test_an_evaluation_that_samples_resumes_bit_for_bit(tmp_path):
    """Sampling in eval_fn draws from the generator dropout draws from: the checkpoint, written after the
    step's evaluation, holds the generator as the next step finds it."""
    options = dict(eval_fn=sampled_tokens, eval_every=2, save_every=3)
    reference_run = run(MODELS["lora-dropout"], tmp_path / "ref", **options)
    assert len({tuple(e["sample"]) for e in reference_run[1].evals}) > 1  # (it does sample)
    resumed = killed_and_resumed(MODELS["lora-dropout"], tmp_path / "run", KILLS["first-micro-batch"], **options)
    assert_same_run((*reference_run, str(tmp_path / "ref")), (*resumed, str(tmp_path / "run")))
