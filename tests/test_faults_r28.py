"""Faults, round 28: SIGTERM, and Ctrl-C under ``mpirun``.

``mpirun`` does not pass a Ctrl-C on: it sends its ranks SIGCONT and SIGTERM, then SIGKILL a fraction of a second
later (Open MPI 5 measured: ~0.2 s), and a job scheduler ending a job sends SIGTERM too. SIGTERM killed a training
run at once, so an interrupted distributed run lost every step since its last periodic checkpoint (with
``--eval-every 0``, all of them). Now ``train`` takes SIGTERM over: the step in progress is abandoned (there is no
time to finish it), the last whole step is saved -- with the random generators and the DataLoader's place as they
were when it ended, and the evaluation it had not run yet marked for the resume -- and the run stops with
``TrainingInterrupted`` (``minilora train``: status 143). A SIGTERM while an update is applied waits for its end.
The resume ends where the uninterrupted run does, bit for bit -- under mpirun too, where a checkpoint now holds
every rank's generators (it held rank 0's, which every rank resumed with: other dropout masks on the others).
"""
import json
import os
import signal
import sys

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora.train import TrainingInterrupted, generator_states, load_training_state, train
from minilora.utils.data import DataLoader as TorchDataLoader

from test_faults import posix_only
from test_train import DropoutLM, counting_rows

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = 6


def sigterm():
    """SIGTERM to this process, as a job scheduler sends: what it would do left to SIGTERM's default is to kill the
    test session (what it did before), so that fails the test instead."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        raise AssertionError("SIGTERM is left to its default during train(): it kills the process, and the run is lost")
    signal.raise_signal(signal.SIGTERM)


class SignalledLM(DropoutLM):
    """DropoutLM whose ``at``-th forward (counted from 1), once its dropout drew, sends SIGTERM to this process
    (``ctrl_c_at``: the forwards after which it sends SIGINT)."""

    def __init__(self, at=None, ctrl_c_at=()):
        super().__init__(seed=0)
        self.at, self.ctrl_c_at, self.calls = at, ctrl_c_at, 0

    def forward(self, input_ids, labels=None):
        out = super().forward(input_ids, labels)
        self.calls += 1
        if self.calls == self.at:
            sigterm()
        if self.calls in self.ctrl_c_at:
            signal.raise_signal(signal.SIGINT)
        return out


def torch_loader():
    """A torch-style DataLoader: where its shuffled epoch is goes into the checkpoint."""
    return TorchDataLoader([{"input_ids": row, "labels": row} for row in counting_rows(20)], batch_size=4,
                           shuffle=True, generator=ml.Generator().manual_seed(3))


def run(model, out, loader=None, **options):
    options = {"steps": STEPS, "batch_size": 4, "lr": 1e-2, "grad_accum": 2, "out_dir": str(out), "seed": 1,
               "progress": False, "plot": False, **options}
    return train(model, counting_rows(20) if loader is None else loader, **options)


def outcome(model, result):
    return {"losses": result.losses, "lrs": result.lrs, "grad_norms": result.grad_norms, "evals": result.evals,
            "weights": {k: v.numpy().tobytes() for k, v in model.state_dict().items()},
            "generators": repr(generator_states())}


def interrupted_then_resumed(tmp_path, model, loader=None, **options):
    """Run ``model`` until its signal stops it, then resume in a fresh model: (the interruption, the checkpoint's
    state then, the outcome)."""
    with pytest.raises(KeyboardInterrupt) as stopped:  # (a TrainingInterrupted)
        run(model, tmp_path, loader, **options)
    saved = load_training_state(stopped.value.checkpoint)
    fresh = SignalledLM()
    resumed = run(fresh, tmp_path, loader if loader is None else torch_loader(), resume=True, **options)
    return stopped.value, saved, outcome(fresh, resumed)


def uninterrupted(tmp_path, loader=None, **options):
    model = SignalledLM()
    result = run(model, tmp_path / "uninterrupted", loader, **options)
    return outcome(model, result)


@posix_only
@pytest.mark.parametrize("loader", [None, "torch"], ids=["minilora-loader", "torch-loader"])
def test_a_sigterm_mid_step_saves_the_last_whole_step_and_the_resume_is_the_uninterrupted_run(tmp_path, loader):
    """The 8th forward is step 4's second micro-batch, its dropout drawn and the loader moved on: the checkpoint
    holds step 3 as it ended. Before, SIGTERM killed the process (here: the test) and nothing was saved."""
    expected = uninterrupted(tmp_path, loader and torch_loader())
    stopped, saved, resumed = interrupted_then_resumed(tmp_path / "run", SignalledLM(at=8), loader and torch_loader())
    assert (stopped.step, stopped.signal, stopped.abandoned, saved["step"]) == (3, "SIGTERM", True, 3)
    assert stopped.checkpoint == str(tmp_path / "run" / "checkpoint.npz")
    assert resumed == expected


@pytest.mark.usefixtures("python_sigint")
def test_a_second_ctrl_c_mid_step_saves_the_last_whole_step(tmp_path):
    """The first Ctrl-C (7th forward: step 4's first micro-batch) asks for a stop after step 4; the second (8th)
    stops at once. Before, it raised a bare KeyboardInterrupt, and every step since the last checkpoint was lost."""
    expected = uninterrupted(tmp_path)
    stopped, saved, resumed = interrupted_then_resumed(tmp_path / "run", SignalledLM(ctrl_c_at=(7, 8)))
    assert (stopped.step, stopped.signal, stopped.abandoned, saved["step"]) == (3, "SIGINT", True, 3)
    assert resumed == expected


@posix_only
def test_a_sigterm_while_the_update_is_applied_finishes_it_and_saves_that_step(tmp_path):
    def sigterm_at_step_2(step):
        if step == 2:
            sigterm()
    expected = uninterrupted(tmp_path)
    stopped, saved, resumed = interrupted_then_resumed(tmp_path / "run", SignalledLM(),
                                                       after_optimizer_step=sigterm_at_step_2)
    assert stopped.step == 2 and saved["step"] == 2
    assert resumed == expected


@posix_only
def test_a_sigterm_during_an_evaluation_leaves_it_to_the_resume(tmp_path):
    """Step 4's update is whole, its evaluation was cut short: the resume runs it first, and logs it once."""
    def evaluation(signal_at=None):
        def eval_fn(model):
            calls.append(1)
            if len(calls) == signal_at:  # (once: the resume's own calls count on)
                sigterm()
            return {"mean_weight": float(model.head.weight.numpy().mean())}
        calls = []
        return eval_fn
    expected = uninterrupted(tmp_path, eval_every=2, eval_fn=evaluation())
    stopped, saved, resumed = interrupted_then_resumed(tmp_path / "run", SignalledLM(), eval_every=2,
                                                       eval_fn=evaluation(signal_at=2))
    assert stopped.step == saved["step"] == 4 and saved["eval_due"] is True
    assert [e["step"] for e in resumed["evals"]] == [2, 4, 6]
    assert resumed == expected
    logged = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in logged if r["kind"] == "eval"] == [2, 4, 6]


@posix_only
def test_a_sigterm_before_the_first_step_ends_saves_nothing_and_says_so(tmp_path):
    with pytest.raises(TrainingInterrupted) as stopped:
        run(SignalledLM(at=1), tmp_path)
    assert (stopped.value.step, stopped.value.checkpoint) == (0, None)
    assert not os.path.exists(tmp_path / "checkpoint.npz")


@posix_only
def test_train_keeps_a_programs_own_sigterm_handler_and_puts_the_default_back(tmp_path):
    """SIGTERM is taken over only where it would kill the process: a handler of the program's, or SIG_IGN, stays."""
    got = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        result = run(SignalledLM(at=3), tmp_path / "own")
        assert got == [signal.SIGTERM] and len(result.losses) == STEPS
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assert len(run(SignalledLM(at=3), tmp_path / "ignored").losses) == STEPS
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with pytest.raises(TrainingInterrupted):
            run(SignalledLM(at=3), tmp_path / "default")
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


# ==================================================================================================
# A damaged checkpoint is refused by name before the model changes, not resumed as another run
# ==================================================================================================
def _first_moments(state):
    return state["optimizer"]["state"][0]


DAMAGES = {  # what an edited or damaged checkpoint.npz held: resumed, each was another run or a bare error later
    "a step count below zero": (lambda s: s.__setitem__("step", -3), "its step -3 is not a whole number >= 0"),
    "a step count between two steps": (lambda s: s.__setitem__("step", 2.5), "its step 2.5 is not a whole number"),
    "a history shorter than the run": (lambda s: s.__setitem__("losses", s["losses"][:1]), "holds 1 losses for its 2"),
    "a schedule at another step": (lambda s: s["scheduler"].__setitem__("last_epoch", 100),
                                   "its learning-rate schedule is at step 100, the run at step 2"),
    "a moment missing": (lambda s: _first_moments(s).pop("exp_avg"),
                         "the optimizer state of parameter 0 lacks ['exp_avg'], which the others have"),
    "an optimizer step count below zero": (lambda s: _first_moments(s).__setitem__("step", np.array(-5.0, np.float32)),
                                           "parameter 0 counts -5 steps, outside 0..2"),
    "an optimizer step count past the run's": (
        lambda s: _first_moments(s).__setitem__("step", np.array(7.0, np.float32)), "counts 7 steps, outside 0..2"),
    "negative second moments": (lambda s: _first_moments(s).__setitem__("exp_avg_sq", -_first_moments(s)["exp_avg_sq"]
                                                                       - 1), "exp_avg_sq of parameter 0 holds negative"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_by_name_before_the_model_changes(tmp_path, damage):
    from minilora.train import ResumeError, save_training_state
    run(SignalledLM(), tmp_path, steps=2)
    state = load_training_state(str(tmp_path / "checkpoint.npz"))
    edit, words = DAMAGES[damage]
    edit(state)
    save_training_state(str(tmp_path / "damaged.npz"), state)
    model = SignalledLM()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(ResumeError, match="damaged.npz") as refused:
        run(model, tmp_path / "resumed", resume=str(tmp_path / "damaged.npz"))
    assert words in str(refused.value) and "the file is damaged" in str(refused.value)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())


# ==================================================================================================
# Another kind of optimizer's state is refused by name
# ==================================================================================================
def _stepped(optimizer_class, **options):
    ml.manual_seed(0)
    params = [ml.nn.Parameter(ml.randn(4, 3)), ml.nn.Parameter(ml.randn(3))]
    optimizer = optimizer_class(params, lr=1e-2, **options)
    (params[0].sum() + params[1].sum()).backward()
    optimizer.step()
    return params, optimizer


def _adafactor(params, lr):  # (transformers' Adafactor: the Trainer's optim="adafactor")
    from minilora.optim.hf_adafactor import Adafactor
    return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False)


@pytest.mark.parametrize("saved, loaded, words", [
    ("AdamW", "SGD", "has no 'momentum', 'dampening' (SGD's settings) but holds 'betas', 'eps'"),
    ("SGD", "AdamW", "has no 'betas', 'eps' (AdamW's settings) but holds 'momentum', 'dampening'"),
    ("AdamW", "Adafactor", "has no 'clip_threshold', 'decay_rate' (Adafactor's settings) but holds 'betas'")])
def test_another_kind_of_optimizers_state_is_refused_by_name(saved, loaded, words):
    """torch fails at the first step after (KeyError: 'momentum'); before, the options it lacked took their defaults
    and the run went on with another optimizer's learning rate, and none of its moments."""
    kinds = {"AdamW": ml.optim.AdamW, "SGD": ml.optim.SGD, "Adafactor": _adafactor}
    params, optimizer = _stepped(kinds[saved])
    other = kinds[loaded](params, lr=1e-3)
    with pytest.raises(ValueError, match="saved by another kind of optimizer") as refused:
        other.load_state_dict(optimizer.state_dict())
    assert words in str(refused.value) and other.param_groups[0]["lr"] == 1e-3 and not other.state
    # what still loads, as in torch: Adam's state into AdamW (the same settings), and a save of this kind by an
    # older torch, whose groups lack a later one's flags
    params, adam = _stepped(ml.optim.Adam)
    ml.optim.AdamW(params, lr=1e-3).load_state_dict(adam.state_dict())
    params, sgd = _stepped(ml.optim.SGD, momentum=0.9)
    older = sgd.state_dict()
    for flag in ("nesterov", "maximize", "foreach", "differentiable", "fused"):
        older["param_groups"][0].pop(flag, None)
    ml.optim.SGD(params, lr=1e-3, momentum=0.5).load_state_dict(older)


def test_a_trainer_resumed_with_another_optimizer_names_its_optimizer_file(tmp_path):
    from test_faults_r19 import make_trainer
    make_trainer(tmp_path, max_steps=2, save_steps=2).train()
    with pytest.raises(ValueError, match=r"checkpoint-2/optimizer.pt: loaded state dict's parameter group 0 was "
                                         r"saved by another kind of optimizer"):
        make_trainer(tmp_path, max_steps=4, save_steps=2, optim="sgd").train(resume_from_checkpoint=True)


# ==================================================================================================
# The run's folder, or its metrics log, deleted while it trains
# ==================================================================================================
@pytest.mark.parametrize("deleted", ["folder", "log"])
def test_a_run_whose_folder_is_deleted_while_it_trains_writes_it_again_whole(tmp_path, capsys, deleted):
    """Before: deleting the folder killed the run with FileNotFoundError on metrics.jsonl (every step since the last
    checkpoint lost), and deleting the log alone left one of the last steps only. Now the log is written again with
    every record, the folder made again as transformers' Trainer makes its output_dir again, and the run goes on."""
    import shutil
    out = tmp_path / "run"

    def delete_at_step_3(step):
        if step == 3:
            shutil.rmtree(out) if deleted == "folder" else os.remove(out / "metrics.jsonl")
    result = run(SignalledLM(), out, after_optimizer_step=delete_at_step_3, save_every=2)
    assert len(result.losses) == STEPS
    assert [r["step"] for r in train_records(out)] == list(range(1, STEPS + 1))
    assert load_training_state(str(out / "checkpoint.npz"))["step"] == STEPS
    assert "was deleted while training; writing it again with the metrics so far" in capsys.readouterr().err


# ==================================================================================================
# minilora train under mpirun
# ==================================================================================================
from test_distributed import MPIRUN, SKIP_REASON  # noqa: E402  (the launcher command, or why not)

needs_mpi = pytest.mark.skipif(MPIRUN is None, reason=SKIP_REASON or "")
# (dropout on: each rank draws its own masks, and a resume must give each rank its own generators back)
TRAIN = ["train", "--batch-size", "4", "--eval-n", "2", "--eval-every", "0", "--no-progress", "--steps", "8",
         "--lora-dropout", "0.1"]
ENV = {"MINILORA_NUM_THREADS": "1", "PYTHONPATH": ROOT}
# Each rank: `minilora train`, and once step 3 is logged, by sys.argv[1]: "sigterm", SIGTERM to this rank (as a job
# scheduler sends every rank); "sigterm-rank-1", to rank 1 alone (rank 0 went on into the next step's collectives,
# and waited there for rank 1 until the timeout, 30 minutes); "ctrl-c", rank 0 sends mpirun a SIGINT (a Ctrl-C in its terminal), which ends the
# ranks with SIGTERM, then SIGKILL -- the SIGTERM came after the last step, the run being short: rank 0 waits for it.
SIGNALLED = """
import os, signal, sys, time
from minilora import cli, distributed, train
write, how = train._MetricsLog.write, sys.argv.pop(1)
def write_then_signal(self, record):
    write(self, record)
    if record.get("kind") == "train" and record["step"] == 3:
        if how == "sigterm" or (how == "sigterm-rank-1" and distributed.get_rank() == 1):
            os.kill(os.getpid(), signal.SIGTERM)
        elif how == "ctrl-c" and distributed.get_rank() == 0:
            os.kill(os.getppid(), signal.SIGINT)
            while True:  # (until mpirun's SIGTERM: the steps here take less time than it waits)
                time.sleep(0.01)
train._MetricsLog.write = write_then_signal
sys.exit(cli.main(sys.argv[1:]))
"""
SAVED = """
import json, os, sys
from minilora.train import load_training_state
print(json.dumps({"step": int(load_training_state(os.path.join(sys.argv[1], "checkpoint.npz"))["step"]),
                  "temporary": [name for name in os.listdir(sys.argv[1]) if name.endswith(".tmp")]}))
"""
RUNS = "test_faults_r28: minilora train under mpirun, interrupted and resumed"
HOWS = ("sigterm", "sigterm-rank-1", "ctrl-c")


def _submit(runs):
    """For each way: the interrupted run, what it saved, its resume; then an uninterrupted run (~30 s)."""
    def commands(out):
        for how in HOWS:
            yield MPIRUN + [sys.executable, "-c", SIGNALLED, how] + TRAIN + ["--out", how], ENV
            yield [sys.executable, "-c", SAVED, how], ENV
            yield MPIRUN + [sys.executable, "-m", "minilora"] + TRAIN + ["--out", how, "--resume"], ENV
        yield MPIRUN + [sys.executable, "-m", "minilora"] + TRAIN + ["--out", "straight"], ENV
    return runs.submit_commands(RUNS, lambda out: list(commands(out)), timeout=120)


def start_background_runs(items, runs):
    if MPIRUN is not None and background_runs.selected(
            items, __name__, "test_an_interrupted_mpirun_saves_its_last_whole_step_and_resumes_to_the_uninterrupted_run"):
        _submit(runs)


def adapter_bits(folder):
    from minilora.checkpoint import load_file
    return {k: v.tobytes() for k, v in load_file(os.path.join(folder, "adapter", "adapter_model.safetensors")).items()}


def train_records(folder):
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in open(folder / "metrics.jsonl")]


@posix_only
@needs_mpi
@pytest.mark.parametrize("how", HOWS)
def test_an_interrupted_mpirun_saves_its_last_whole_step_and_resumes_to_the_uninterrupted_run(background, how):
    """Before, every rank died at once (--eval-every 0: no checkpoint at all). Now rank 0 saves the last whole
    step, every rank ends (none waits for another), and the resume gives the uninterrupted run's adapter and log.
    (Before, a checkpoint held rank 0's generators alone, and every rank resumed with them: with dropout, rank 1's
    masks after a resume were not the uninterrupted run's, and neither were the losses.)"""
    out = _submit(background)
    done = background.result(RUNS)
    stopped, saved, resumed = done[3 * HOWS.index(how):3 * HOWS.index(how) + 3]
    assert stopped[0] != 0
    assert saved[0] == 0, stopped[1][-2000:] + stopped[2][-2000:] + saved[2][-2000:]
    saved = json.loads(saved[1])
    # (rank 0 alone goes on, into step 4 or 5, until mpirun ends it with SIGTERM once rank 1 has left)
    assert saved in ({"step": 3, "temporary": []}, {"step": 4, "temporary": []}) if how == "sigterm-rank-1" else \
        saved == {"step": 3, "temporary": []}
    if how == "sigterm":  # (under mpirun's Ctrl-C, its SIGKILL comes before the ranks' last words reach it)
        assert "stopped by SIGTERM (the step in progress abandoned) after step 3 of 8" in stopped[2]
    assert resumed[0] == 0, resumed[2][-3000:]
    assert done[-1][0] == 0, done[-1][2][-3000:]
    assert adapter_bits(out / how) == adapter_bits(out / "straight")
    assert train_records(out / how) == train_records(out / "straight")
