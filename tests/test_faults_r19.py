"""Faults, round 19: a run killed after its last checkpoint resumes to the uninterrupted run; a Ctrl-C lands where
torch's lands.

transformers' ``Trainer`` resumed from the checkpoint of its final step (the run SIGKILLed after writing it, before
the closing ``save_model``): a ``max_steps`` that ends part-way through an epoch trained one more update (the resumed
loop runs the rest of that epoch, and the stop rule looks at ``global_step`` only after a step: transformers 5.25
does the same), and the global generators were left as the resuming process had them, where the uninterrupted run
left them as its last checkpoint saved them. Now nothing is trained and the generators are the checkpoint's: the
weights, optimizer and scheduler state, generators and logs are the uninterrupted run's, bit for bit.

Ctrl-C: torch's backward pass is one call into its C++ engine and its fused optimizer step (the Trainer's default)
one kernel, so a Ctrl-C raises KeyboardInterrupt once every gradient is accumulated (every parameter moved).
minilora's run node by node and slice by slice: a Ctrl-C half-way left some ``.grad`` summed and others not, or
every step count bumped with half the parameters moved. Now it is held to the end of the pass (step) and then
raised, or handed to the program's own SIGINT handler. A Ctrl-C while an op split across threads waited for a
helper's block desynchronised the helper: every later split op could return before its own block was computed. A
folder swap cut by a Ctrl-C between its two renames (a filesystem without an atomic exchange, or not Linux) left
no folder there until the next save.

The interruptions are real SIGINTs (``signal.raise_signal``), sent from a profile hook at the n-th call event, so
Python's handler runs where the signal lands, at every point of the pass in turn.
"""
import json
import linecache
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import checkpoint, nn, parallel
from minilora import trainer as ml_trainer
from minilora.lora import LoraConfig, get_peft_model
from minilora.train import generator_states

from test_faults import ENV, leftovers, posix_only
from test_train import VOCAB, tiny_llama

HERE = os.path.dirname(os.path.abspath(__file__))
MINILORA_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ml.__file__)))  # (the child runs this one)
CHILD_ENV = {**ENV, "PYTHONPATH": os.pathsep.join([MINILORA_ROOT, HERE, ENV.get("PYTHONPATH", "")])}


def child_env():
    """CHILD_ENV with this process's MKL threads for a product (OMP_NUM_THREADS: what minilora's products take where
    torch is not imported): once a test imported torch, conftest put it on one thread, and the child, without torch,
    multiplied on two -- on an AMD EPYC a 1-ulp different adapter after the resume (two loaded CI runs)."""
    return {**CHILD_ENV, "OMP_NUM_THREADS": str(ml.blas._threads_for_product())}

# the Ctrl-C tests need Python's own SIGINT handler: a shell that starts pytest in the background leaves SIGINT
# ignored, and then Python installs none (conftest's python_sigint)
pytestmark = pytest.mark.usefixtures("python_sigint")


# ==================================================================================================
# A Trainer killed after its last checkpoint: the resume trains nothing and restores the generators
# ==================================================================================================

def rows(count=11):
    g = np.random.default_rng(0)
    return [{"input_ids": (ids := g.integers(3, VOCAB, 6).tolist()), "labels": ids} for _ in range(count)]


def make_trainer(out, **arguments):
    """LoRA with dropout on a shuffled loader, two micro-batches a step: 6 batches, 3 updates an epoch."""
    model = get_peft_model(tiny_llama(0), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1,
                                                     target_modules=["q_proj", "v_proj"]))
    eval_dataset = arguments.pop("eval_dataset", None)
    arguments = {**dict(output_dir=str(out), learning_rate=1e-2, per_device_train_batch_size=2,
                        gradient_accumulation_steps=2, max_steps=4, logging_steps=1, save_steps=2,
                        save_total_limit=2, seed=5, lr_scheduler_type="cosine", warmup_steps=1, report_to="none",
                        disable_tqdm=True), **arguments}
    return ml_trainer.Trainer(model=model, args=ml_trainer.TrainingArguments(**arguments), train_dataset=rows(),
                              eval_dataset=eval_dataset)


def _plain(value):
    """Tensors and arrays as (dtype, shape, bytes); containers walked: what ``==`` compares bit for bit."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, ml.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape, value.tobytes()
    return value


def outcome(trainer):
    """Everything a resumed run must give as the uninterrupted one did (the closing log's run times aside)."""
    logs = trainer.state.log_history
    return {"adapter": _plain({k: v for k, v in trainer.model.state_dict().items() if "lora_" in k}),
            "optimizer": _plain(trainer.optimizer.state_dict()), "scheduler": _plain(trainer.lr_scheduler.state_dict()),
            "generators": _plain(generator_states()), "logs": logs[:-1], "global_step": trainer.state.global_step}


def assert_same(resumed, uninterrupted):
    for key in uninterrupted:  # (one by one: the first that differs is named)
        assert resumed[key] == uninterrupted[key], key


def run_killed_after_the_last_checkpoint(out, max_steps):
    """(In a subprocess of the test.) Train, and SIGKILL this process once the final step's checkpoint is whole."""
    class KilledAfterTheLastCheckpoint(ml_trainer.TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == state.max_steps:
                os.kill(os.getpid(), signal.SIGKILL)
    trainer = make_trainer(out, max_steps=max_steps)
    trainer.add_callback(KilledAfterTheLastCheckpoint())
    trainer.train()


@posix_only
def test_a_trainer_killed_after_its_last_checkpoint_resumes_to_the_uninterrupted_run(tmp_path):
    """max_steps=4 ends part-way through the second epoch (3 updates an epoch). Before, the resume ran that epoch's
    last update too: global_step 5, checkpoint-5 written, the adapter and the optimizer moved past the run's end,
    and the generators as the resuming process had them. (A subprocess killed: ~3 s.)"""
    uninterrupted = make_trainer(tmp_path / "uninterrupted")
    uninterrupted.train()
    expected = outcome(uninterrupted)
    out = tmp_path / "killed"
    code = f"import test_faults_r19 as t; t.run_killed_after_the_last_checkpoint({str(out)!r}, 4)"
    done = background_runs.run_process([sys.executable, "-c", code], env=child_env(), cwd=MINILORA_ROOT, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    resumed = make_trainer(out)
    ml.manual_seed(1234)  # (whatever the resuming process drew before)
    resumed.train(resume_from_checkpoint=True)
    assert_same(outcome(resumed), expected)
    assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-4"] and leftovers(out) == []


def test_a_resume_from_the_checkpoint_of_a_runs_last_epoch_puts_its_generators_back(tmp_path):
    """max_steps=6, two whole epochs: no step is left and none was trained, but the global generators stayed as the
    resuming process had them, where the uninterrupted run left them as its last checkpoint saved them (what a
    run killed after that checkpoint leaves is the finished run's folder)."""
    uninterrupted = make_trainer(tmp_path, max_steps=6)
    uninterrupted.train()
    expected = outcome(uninterrupted)
    resumed = make_trainer(tmp_path, max_steps=6)
    ml.manual_seed(1234)
    resumed.train(resume_from_checkpoint=True)
    assert_same(outcome(resumed), expected)


class CtrlCAtStep(ml_trainer.TrainerCallback):
    """A Ctrl-C as step ``step`` begins (in a notebook: the run stops, the process lives on)."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            raise KeyboardInterrupt


def test_a_resumed_run_with_eval_on_start_logs_its_start_evaluation_once(tmp_path):
    """Before, the resume evaluated again (as transformers does), one more eval_loss logged at the resumed step:
    the log was not the uninterrupted run's."""
    options = dict(eval_on_start=True, eval_strategy="steps", eval_steps=2, eval_dataset=rows(3))
    uninterrupted = make_trainer(tmp_path / "uninterrupted", **options)
    uninterrupted.train()
    interrupted = make_trainer(tmp_path / "run", **options)
    interrupted.add_callback(CtrlCAtStep(4))
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    resumed = make_trainer(tmp_path / "run", **options)
    resumed.train(resume_from_checkpoint=True)

    def logged(trainer):  # (the evaluations' times aside)
        return [{k: v for k, v in log.items() if "runtime" not in k and "per_second" not in k}
                for log in trainer.state.log_history[:-1]]
    assert logged(resumed) == logged(uninterrupted)
    expected = outcome(uninterrupted)
    del expected["logs"]  # (compared above, times aside)
    assert_same(outcome(resumed), expected)


def test_a_run_resumed_between_two_logs_logs_the_uninterrupted_runs_mean_loss(tmp_path):
    """logging_steps=2 and a checkpoint at step 3: the loss logged at step 4 is the mean of steps 3 and 4. Before
    (and in transformers, which keeps no unlogged loss in a checkpoint), the resumed run logged step 4's alone."""
    options = dict(logging_steps=2, save_steps=3)
    uninterrupted = make_trainer(tmp_path / "uninterrupted", **options)
    uninterrupted.train()
    interrupted = make_trainer(tmp_path / "run", **options)
    interrupted.add_callback(CtrlCAtStep(4))
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    resumed = make_trainer(tmp_path / "run", **options)
    resumed.train(resume_from_checkpoint=True)
    assert_same(outcome(resumed), outcome(uninterrupted))


# ==================================================================================================
# A second process training into a folder that a run is writing is refused by name
# ==================================================================================================
def hold_a_run_in(out):
    """(In a subprocess of the test.) ``train`` into ``out``, stopping after step 1 -- it says "ready" on stdout --
    until the test writes a line to its stdin, or ends (end of file: no run outlives its test)."""
    from minilora.train import train
    from test_train import DropoutLM, counting_rows

    def wait_for_go(step):
        if step == 1:
            print("ready", flush=True)
            sys.stdin.readline()
    train(DropoutLM(), counting_rows(16), steps=3, batch_size=4, save_every=1, out_dir=out, progress=False,
          plot=False, after_optimizer_step=wait_for_go)


def _said_ready(child):
    """Wait for the child to say "ready" (True), or to end without saying it (False): no clock (the child took
    over a minute to start at load 17, and a 60 s deadline failed a test that was not stuck)."""
    return any(line.strip() == "ready" for line in child.stdout)


def _metrics_steps(out):
    return [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))]


@posix_only
def test_a_second_process_training_into_a_folder_a_run_is_writing_is_refused_by_name(tmp_path, capsys):
    """Before, each run wrote its checkpoint over the other's and their metrics lines interleaved (a later resume
    continued whichever checkpoint came last, with both runs' losses). ``train``, ``minilora train`` and
    ``Trainer.train`` now refuse while another process writes the folder (a lock on it, released when that process
    ends however). (A subprocess: ~3 s.)"""
    from minilora.cli import main as cli
    from minilora.train import train
    from test_train import DropoutLM, counting_rows
    out = tmp_path / "run"
    code = f"import test_faults_r19 as t; t.hold_a_run_in({str(out)!r})"
    child = subprocess.Popen([sys.executable, "-c", code], env=CHILD_ENV, cwd=MINILORA_ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _said_ready(child), child.stderr.read()
        with pytest.raises(OSError, match=f"another process is writing to {tmp_path}"):
            train(DropoutLM(1), counting_rows(16), steps=3, batch_size=4, save_every=1, out_dir=str(out),
                  progress=False, plot=False)
        assert cli(["train", "--out", str(out), "--steps", "2", "--no-progress"]) == 2
        assert "minilora train: error: --out: another process is writing to" in capsys.readouterr().err
        with pytest.raises(OSError, match="another process is writing to"):
            make_trainer(out).train()
    finally:
        _, stderr = child.communicate("go\n")  # (no timeout: the run's two steps left take what the machine gives)
    assert child.returncode == 0, stderr
    assert _metrics_steps(out) == [1, 2, 3]  # (the first run's lines only)
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.jsonl"]


# ==================================================================================================
# Ctrl-C in a backward pass or an optimizer step: all of it or none of it, as torch
# ==================================================================================================
def _sigints_at(events, run):
    """Run ``run()`` with a SIGINT sent at each of its call events numbered in ``events`` (counted by a profile
    hook: Python's handler runs where the signal lands)."""
    seen = [0]

    def count(frame, event, arg):
        seen[0] += 1
        if seen[0] in events:
            signal.raise_signal(signal.SIGINT)
    sys.setprofile(count)
    try:
        run()
    finally:
        sys.setprofile(None)


def _interrupted_at(n, run):
    """Whether a Ctrl-C at ``run()``'s n-th call event came out of it as KeyboardInterrupt."""
    try:
        _sigints_at({n}, run)
    except KeyboardInterrupt:
        return True
    return False


def _events(run):
    seen = [0]

    def count(frame, event, arg):
        seen[0] += 1
    sys.setprofile(count)
    try:
        run()
    finally:
        sys.setprofile(None)
    return seen[0]


def _points(total, count=40):
    """About ``count`` call events spread over the run (not its last few: the profile hook's own way out)."""
    return sorted(set(range(1, max(total - 3, 2), max(1, total // count))))


def three_linears(seed=0):
    ml.manual_seed(seed)  # (large enough for AdamW's update to go slice by slice, on the worker threads)
    return nn.Sequential(nn.Linear(48, 48), nn.Tanh(), nn.Linear(48, 48), nn.Linear(48, 3))


# (a Ctrl-C landing in a weakref callback of the forward, outside the pass, is printed and dropped by Python)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@posix_only
def test_a_ctrl_c_during_backward_leaves_every_gradient_accumulated_or_none():
    model, x = three_linears(), ml.randn(8, 48)

    def backward():
        model(x).pow(2).sum().backward()
    backward()
    full = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    interrupted = 0
    for n in _points(_events(backward)):
        model.zero_grad()
        interrupted += _interrupted_at(n, backward)
        grads = [p.grad for p in model.parameters()]
        if any(g is not None for g in grads):
            for g, want in zip(grads, full):
                assert g is not None and np.array_equal(g.numpy(), want), n
    assert interrupted > 10  # (the Ctrl-C still comes: after the pass, or before it began)


def _trained_one_step(seed=0):
    model = three_linears(seed)
    optimizer = ml.optim.AdamW(model.parameters(), lr=0.1)
    x = ml.randn(8, 48)
    model(x).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    model(x).sum().backward()  # (the gradients of the step to interrupt)
    return model, optimizer


def _state(model, optimizer):
    return [(p.numpy().tobytes(), {k: _plain(v) for k, v in optimizer.state[p].items()}) for p in model.parameters()]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@posix_only
def test_a_ctrl_c_during_an_optimizer_step_moves_every_parameter_or_none():
    """torch's fused AdamW: every parameter and its moments stepped, or none; minilora's update goes slice by slice
    on threads: before, the step counts were all bumped with part of the parameters moved."""
    model, optimizer = _trained_one_step()
    before = _state(model, optimizer)
    total = _events(optimizer.step)
    after = _state(model, optimizer)
    interrupted = 0
    for n in _points(total):
        model, optimizer = _trained_one_step()
        interrupted += _interrupted_at(n, optimizer.step)
        assert _state(model, optimizer) in (before, after), n
    assert interrupted > 10
    # a step given a closure (the user's forward and backward, L-BFGS's many) stays interruptible inside it
    model, optimizer = _trained_one_step()
    reached = []

    def closure():
        signal.raise_signal(signal.SIGINT)
        reached.append("past the Ctrl-C")
    with pytest.raises(KeyboardInterrupt):
        optimizer.step(closure)
    assert reached == []


@posix_only
def test_a_ctrl_c_held_during_backward_reaches_the_programs_own_handler_once_after_it():
    """A program with its own SIGINT handler (``minilora.train``'s: the first Ctrl-C asks the loop to stop after
    the step) gets each Ctrl-C, after the pass, and its handler back."""
    model, x = three_linears(), ml.randn(8, 48)
    got = []

    def handler(signum, frame):
        got.append(sum(p.grad is not None for p in model.parameters()))
    previous = signal.signal(signal.SIGINT, handler)
    try:
        loss = model(x).sum()
        total = _events(lambda: loss.backward(retain_graph=True))
        model.zero_grad()
        _sigints_at({total // 3, total // 2}, loss.backward)
        assert got == [6, 6]  # (each Ctrl-C, once every parameter's gradient was there)
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


def _with_gradients():
    model = three_linears()
    model(ml.randn(8, 48)).pow(2).sum().backward()
    return model


def _grads(model):
    return [p.grad.numpy().tobytes() for p in model.parameters()]


def _each_gradient_or_none_changed(change):
    """Ctrl-C at points all along ``change(model)``: the gradients after it are all as before or all as changed."""
    model = _with_gradients()
    before = _grads(model)
    total = _events(lambda: change(model))
    after = _grads(model)
    assert after != before
    interrupted = 0
    for n in _points(total, 30):
        model = _with_gradients()
        interrupted += _interrupted_at(n, lambda: change(model))
        assert _grads(model) in (before, after), n
    return interrupted


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@posix_only
@pytest.mark.parametrize("clip", ["clip_grad_norm_", "clip_grad_value_"])
def test_a_ctrl_c_during_gradient_clipping_scales_every_gradient_or_none(clip):
    """torch's clipping scales (clamps) the gradients of a device and dtype in one ``_foreach_`` call: before,
    a Ctrl-C half-way left some gradients clipped and the others not."""
    limit = {"clip_grad_norm_": 0.5, "clip_grad_value_": 0.01}[clip]
    assert _each_gradient_or_none_changed(lambda model: getattr(ml.nn.utils, clip)(model.parameters(), limit)) > 5


def _scaled_backward():
    model = three_linears()
    optimizer = ml.optim.SGD(model.parameters(), lr=0.1)
    scaler = ml.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(ml.randn(8, 48)).pow(2).sum()).backward()
    return model, optimizer, scaler


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@posix_only
def test_a_ctrl_c_during_grad_scaler_unscale_unscales_every_gradient_or_none():
    """Before, a Ctrl-C half-way left some gradients unscaled and the scaler not marked: ``scaler.step`` (or a
    retried ``unscale_``) then divided the unscaled ones by the scale a second time."""
    model, optimizer, scaler = _scaled_backward()
    before = _grads(model)
    total = _events(lambda: scaler.unscale_(optimizer))
    after = _grads(model)
    interrupted = 0
    for n in _points(total, 30):
        model, optimizer, scaler = _scaled_backward()
        interrupted += _interrupted_at(n, lambda: scaler.unscale_(optimizer))
        stage = scaler._per_optimizer_states[id(optimizer)]["stage"]
        assert (_grads(model), stage.name) in ((before, "READY"), (after, "UNSCALED")), n
    assert interrupted > 5


# ==================================================================================================
# A folder swap cut by a Ctrl-C between its two renames
# ==================================================================================================
@posix_only
def test_a_ctrl_c_between_the_two_renames_of_a_folder_swap_leaves_the_new_folder(tmp_path, monkeypatch):
    """Without an atomic exchange, a save moves the old folder aside, then the new one in. A Ctrl-C landing between
    the two left no folder there (the old one hidden as a temporary .old, put back by the next save only):
    ``from_pretrained`` found nothing. Now the swap finishes and the KeyboardInterrupt comes after it."""
    from test_train import tiny_llama as model_of
    folder = str(tmp_path / "model")
    model_of(0).save_pretrained(folder)
    monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def rename_then_ctrl_c(source, target):
        real_rename(source, target)
        if os.path.abspath(source) == folder:  # (the old folder set aside: Python's handler runs right after)
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(os, "rename", rename_then_ctrl_c)
    new = model_of(1)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(folder)
    monkeypatch.undo()
    loaded = type(new).from_pretrained(folder)
    for name, value in new.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value.numpy(), err_msg=name)
    assert leftovers(tmp_path) == []


# ==================================================================================================
# A Ctrl-C while an op split across threads waits for a helper's block
# ==================================================================================================
def _helper_held(started, ctrl_c, caller_back):
    """A block function: the helper's block says it began, waits for the Ctrl-C (``ctrl_c``: raised in the caller),
    then for the caller to be back from the op (``caller_back``; 0.2 s at most: a caller that waits, as it must,
    is back only after this block), and writes; the caller's own block waits for that start, so the caller then
    certainly waits for the helper (in ``_Helper.wait``). No clock decides what the test sees: a caller that gave
    up waiting is back before the helper's block is written, on any machine."""
    def fn(block):
        if threading.current_thread() is threading.main_thread():
            started.wait()
        else:
            started.set()
            ctrl_c.wait()
            caller_back.wait(0.2)
        block += 1
    return fn


def _blocked_waiting_for_a_helper(ident):
    """Whether the thread ``ident`` is at ``_Helper.wait``'s acquire (the state a Ctrl-C must find it in: no clock
    says so on a loaded machine, where a 50 ms pause once was not enough to get there)."""
    frame = sys._current_frames().get(ident)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "wait" and code.co_filename == parallel.__file__:
            return "done.acquire()" in linecache.getline(code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return False


@posix_only
def test_a_ctrl_c_while_a_split_op_waits_for_its_helper_stops_after_every_block_and_the_next_op_waits_for_its_own():
    """A Ctrl-C interrupts a waiting lock acquire. Before, the caller gave up waiting: the helper went on writing the
    op's arrays after the KeyboardInterrupt, and its "done" was taken by the next split op's wait, which returned
    before its own block was computed -- every later split op silently missing a block. (torch's OpenMP regions are
    not interruptible: the op finishes, then the KeyboardInterrupt comes.)"""
    threads = parallel.num_threads()
    parallel.set_num_threads(2)
    main, started, ctrl_c, over = threading.main_thread().ident, threading.Event(), threading.Event(), threading.Event()

    def keyboard_interrupt(*_):
        ctrl_c.set()
        raise KeyboardInterrupt
    handler = signal.signal(signal.SIGINT, keyboard_interrupt)

    def ctrl_c_while_the_caller_waits():
        started.wait()
        while not _blocked_waiting_for_a_helper(main) and not over.is_set():
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)
    sender = threading.Thread(target=ctrl_c_while_the_caller_waits)
    try:
        sender.start()
        interrupted, back = np.zeros((2, parallel.MIN_ITEMS), np.float32), threading.Event()
        with pytest.raises(KeyboardInterrupt):
            parallel.rows(_helper_held(started, ctrl_c, back), interrupted)
        seen = interrupted.copy()
        back.set()
        assert (seen == 1).all()  # (every block written when the KeyboardInterrupt came, none after)
        nxt, back = np.zeros((2, parallel.MIN_ITEMS), np.float32), threading.Event()
        parallel.rows(_helper_held(threading.Event(), ctrl_c, back), nxt)
        seen = nxt.copy()
        back.set()
        assert (seen == 1).all()  # (the next op waited for its own helper's block)
    finally:
        over.set()
        sender.join()
        signal.signal(signal.SIGINT, handler)
        parallel.set_num_threads(threads)


@posix_only
def test_a_ctrl_c_while_a_mount_points_files_are_replaced_one_by_one_lands_after_the_last(tmp_path, monkeypatch):
    """A folder that cannot be swapped (a container's mount point) gets the new files one ``os.replace`` at a time.
    Before, a Ctrl-C between two of them left the new config.json beside the old weights."""
    from test_faults_r11 import snapshot
    from test_train import tiny_llama as model_of
    expected, folder = str(tmp_path / "expected"), str(tmp_path / "mounted")
    model_of(1).save_pretrained(expected)
    model_of(0).save_pretrained(folder)
    monkeypatch.setattr(checkpoint, "_cannot_swap", lambda directory, parent: True)
    real_replace = os.replace

    def replace_then_ctrl_c(source, target):
        real_replace(source, target)
        if os.path.dirname(os.path.abspath(target)) == folder:  # (after the first file moved in)
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        model_of(1).save_pretrained(folder)
    monkeypatch.undo()
    assert snapshot(folder) == snapshot(expected) and leftovers(folder) == []


def save_killed_between_the_swaps_renames(folder, what):
    """(In a subprocess of the test.) Save version 1 of ``what`` over ``folder`` the two-rename way, SIGKILLed once
    the old folder is set aside."""
    from test_train import tiny_llama as model_of
    checkpoint._exchange = lambda a, b: False
    real_rename = os.rename

    def rename_then_die(source, target):
        real_rename(source, target)
        if os.path.abspath(source) == folder:
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = rename_then_die
    _versions_of(what, model_of)[1](folder)


def _versions_of(what, model_of):
    from minilora.tokenizer import ByteTokenizer
    tokenizers = [ByteTokenizer(), ByteTokenizer()]
    tokenizers[1].padding_side = "left"
    return {"model": [lambda p, v=v: model_of(v).save_pretrained(p) for v in (0, 1)],
            "adapter": [lambda p, v=v: get_peft_model(model_of(v), LoraConfig(r=2, target_modules=["q_proj"]))
                        .save_pretrained(p) for v in (0, 1)],
            "tokenizer": [lambda p, t=t: t.save_pretrained(p) for t in tokenizers]}[what]


@posix_only
@pytest.mark.parametrize("what", ["model", "adapter", "tokenizer"])
def test_a_save_killed_between_its_swaps_two_renames_still_loads_the_old_version(tmp_path, what):
    """Where a folder cannot be exchanged in one step, a save moves the old folder aside, then the new one in. A
    kill between the two left no folder there (the old one hidden as ``.NAME.minilora-PID-x.old``, put back by the
    next save only): ``from_pretrained`` said there was nothing. Now the loaders put it back. (A subprocess: ~2 s.)"""
    from minilora.lora import PeftConfig
    from minilora.nn.llama import LlamaForCausalLM
    from minilora.tokenizer import from_pretrained as tokenizer_from_pretrained
    from test_faults_r11 import snapshot
    from test_train import tiny_llama as model_of
    folder = str(tmp_path / what)
    _versions_of(what, model_of)[0](folder)
    before = snapshot(folder)
    code = f"import test_faults_r19 as t; t.save_killed_between_the_swaps_renames({folder!r}, {what!r})"
    done = background_runs.run_process([sys.executable, "-c", code], env=child_env(), cwd=MINILORA_ROOT, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert not os.path.exists(folder)  # (the old version set aside, the new one not yet in)
    load = {"model": LlamaForCausalLM.from_pretrained, "adapter": PeftConfig.from_pretrained,
            "tokenizer": tokenizer_from_pretrained}[what]
    load(folder)
    assert snapshot(folder) == before


def test_a_sharded_model_saved_over_while_it_is_read_loads_one_version_whole(tmp_path, monkeypatch):
    """A training job saving the model (the folder swapped in whole) while another process loads it: before, the
    loader read the first shard of one version and the second of the next, a model of both, silently. Now the
    folder is read again when it was replaced meanwhile."""
    from minilora.nn.llama import LlamaForCausalLM
    from test_train import tiny_llama as model_of
    folder = str(tmp_path / "model")
    versions = [model_of(0), model_of(1)]
    versions[0].save_pretrained(folder, max_shard_size=6000)
    real_load_weights = checkpoint.load_weights
    saved = []

    def saved_over_after_the_first_shard(path):
        tensors = real_load_weights(path)
        if not saved:
            saved.append(path)
            versions[1].save_pretrained(folder, max_shard_size=6000)
        return tensors
    monkeypatch.setattr(checkpoint, "load_weights", saved_over_after_the_first_shard)
    loaded = LlamaForCausalLM.from_pretrained(folder).state_dict()
    assert saved and len(checkpoint.checkpoint_files(folder)) > 1  # (sharded, and saved over mid-read)
    whole = [all(np.array_equal(loaded[k].numpy(), v.numpy()) for k, v in version.state_dict().items())
             for version in versions]
    assert whole == [False, True]
