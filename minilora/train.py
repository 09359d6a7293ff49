"""The training loop, and the ``minilora train`` command.

``train(model, train_data, ...)`` works for full fine-tuning and for LoRA alike: it trains exactly the
parameters with ``requires_grad=True`` (after ``get_peft_model`` those are the LoRA matrices only).
One optimizer step is:

    for each of grad_accum micro-batches:  loss = model(ids, labels=labels).loss / grad_accum
                                           loss.backward()          # gradients add up in p.grad
    clip_grad_norm_(params, clip_norm)     # one global norm over all trainable parameters
    optimizer.step(); scheduler.step()     # AdamW, linear warmup then cosine decay
    optimizer.zero_grad()

Around it: a progress bar, a metrics log (``metrics.jsonl``), a loss-curve PNG, periodic evaluation,
and checkpoints. A checkpoint holds everything that decides the rest of the run -- the trainable
weights and the buffers training changes (BatchNorm's running statistics), the optimizer's moments, the
scheduler, the random generator, AdaLoRA's rank allocator and the step -- so a run resumed
from step 3 produces the same losses, bit for bit, as a run that never stopped (batches are a pure
function of ``(seed, step)``, see ``minilora.data.DataLoader``). Checkpoints are written to a temporary
file and renamed over the old one, so a crash mid-write never destroys the previous checkpoint.

A run that goes wrong stops with ``TrainingDivergedError`` naming the step, *before* that step is
saved: a NaN/inf loss or gradient norm (``NonFiniteLossError``), weights or optimizer moments that
became NaN/inf, a loss that blows up far above where the run started, or a gradient that is exactly
zero while the loss is not (the model saturated: nothing can learn any more -- what a learning rate of
1e6 does). A checkpoint is only written after its weights were checked finite, so "the last good
checkpoint" the error names is one to resume from (with a lower ``lr`` or ``clip_norm``).
"""
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import warnings

import numpy as np

from . import parallel
from . import random as ml_random
from .checkpoint import atomic_write, binary_file_kind, remove_leftovers, writing_alone
from .dtypes import is_bfloat16, is_floating, to_dtype
from .data import IGNORE_INDEX, DataLoader, mean_loss
from .tensor import Tensor, no_grad

__all__ = ["train", "TrainResult", "TrainingDivergedError", "NonFiniteLossError", "ResumeError",
           "save_training_state", "load_training_state", "CHECKPOINT_NAME", "add_cli_arguments", "cli_main"]

CHECKPOINT_NAME = "checkpoint.npz"
# The layout of a training checkpoint's state (its keys and what they mean): raised when it changes, so
# that an older minilora refuses a newer checkpoint instead of misreading it.
CHECKPOINT_FORMAT = 1
METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"


class ResumeError(ValueError):
    """``train(resume=...)`` refused the checkpoint: it does not fit this model and setup (another
    rank, model or method), or lacks an entry. ``minilora train --resume`` reports it as a usage error."""


class TrainingDivergedError(FloatingPointError):
    """Training went wrong and stopped before saving the step that did (see the module docstring).

    ``step`` is the step that failed; ``checkpoint`` the last good checkpoint (``None`` if none was
    saved yet) and ``checkpoint_step`` its step; ``result`` the ``TrainResult`` up to the failure."""

    def __init__(self, message, step, checkpoint, result, checkpoint_step=None):
        super().__init__(message)
        self.step, self.checkpoint, self.result = step, checkpoint, result
        self.checkpoint_step = checkpoint_step


class NonFiniteLossError(TrainingDivergedError):
    """The loss, the gradient norm or the updated weights became NaN or infinite."""


# A loss this far above the run's first loss means divergence: more than double it, and at least 5
# nats (the target tokens became e^5 = 150 times less likely). A healthy run, even a noisy one
# whose first loss is tiny, never climbs that far; an exploding one passes it within a step or two.
BLOW_UP_FACTOR, BLOW_UP_NATS = 2.0, 5.0


@dataclasses.dataclass
class TrainResult:
    """What a run did: per-step ``losses``, ``lrs`` and ``grad_norms`` (from step 1, resumed runs
    included), the ``evals`` records, timings and the output folder."""
    losses: list
    lrs: list
    grad_norms: list
    evals: list
    step: int             # the last step done
    steps_run: int        # steps this call ran (fewer than ``step`` after a resume)
    seconds: float        # wall time of this call
    train_seconds: float  # of which spent in training steps (no evaluation, no checkpoint writes)
    out_dir: str = None

    @property
    def final_loss(self):
        return self.losses[-1] if self.losses else float("nan")

    @property
    def seconds_per_step(self):
        return self.train_seconds / max(1, self.steps_run)


# ----------------------------------------------------------------------------------------------
# Checkpoints: nested state dicts -> one .npz of arrays plus one JSON string (no pickle)
# ----------------------------------------------------------------------------------------------
def _to_numpy(value):
    if isinstance(value, Tensor):
        return value.numpy(force=True)
    if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        return value.get()
    return value


def _flatten(value, prefix, arrays):
    """Replace every array inside nested dicts/lists by ``{"__array__": key}`` and collect it."""
    value = _to_numpy(value)
    if isinstance(value, np.ndarray):
        if is_bfloat16(value.dtype):  # .npy has no bfloat16 (it reads back as raw 'V2')
            arrays[prefix] = value.view(np.uint16)
            return {"__array__": prefix, "dtype": "bfloat16"}
        arrays[prefix] = value
        return {"__array__": prefix}
    if isinstance(value, dict):
        return {"__dict__": [[_flatten(k, f"{prefix}/k{i}", arrays), _flatten(v, f"{prefix}/{i}", arrays)]
                             for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, (list, tuple)):
        out = [_flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(value)]
        return {"__tuple__": out} if isinstance(value, tuple) else out
    if isinstance(value, np.generic):  # a NumPy number (NAdam's float32 mu_product) comes back in its dtype
        return {"__number__": value.item(), "dtype": str(value.dtype)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store a value of type {type(value).__name__} at '{prefix}'")


def _unflatten(value, arrays):
    if isinstance(value, list):
        return [_unflatten(v, arrays) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            array = arrays[value["__array__"]]
            return array.view(to_dtype(value["dtype"])) if "dtype" in value else array
        if "__number__" in value:
            if np.ndim(value["__number__"]) != 0:  # save_training_state writes NumPy scalars here, nothing else
                raise ValueError(f"a number that is not one: {value['__number__']!r}")
            return np.asarray(value["__number__"]).astype(to_dtype(value["dtype"]))[()]
        if "__tuple__" in value:
            return tuple(_unflatten(v, arrays) for v in value["__tuple__"])
        return {_unflatten(k, arrays): _unflatten(v, arrays) for k, v in value["__dict__"]}
    return value


def _non_finite_arrays(state, path=""):
    """Where the float arrays of a training state that hold a NaN or an infinity are, as readable paths
    ("optimizer.state.1.exp_avg_sq", "model.<parameter name>")."""
    value = _to_numpy(state)
    if isinstance(value, np.ndarray):
        floating = value.dtype.kind == "c" or is_floating(value.dtype)  # bfloat16 is kind 'V'
        return [path] if floating and not np.isfinite(value).all() else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return [bad for key, item in items for bad in _non_finite_arrays(item, f"{path}.{key}" if path else str(key))]


def save_training_state(path, state):
    """Write a nested dict of arrays and plain values to ``path`` (an ``.npz``), atomically."""
    arrays = {}
    meta = _flatten(state, "s", arrays)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_write(path) as f:  # temp file + os.replace: a crash never leaves half a file
        np.savez(f, **arrays)


def load_training_state(path):
    """Read what ``save_training_state`` wrote. A truncated or corrupted file raises a clear error, and so
    does another kind of file (safetensors weights, a torch.save file)."""
    _check_is_training_state(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
        return _unflatten(meta, arrays)  # (a tree naming an array not there, a dtype that is none: corrupted too)
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, KeyError, ValueError, json errors...
        raise ValueError(f"checkpoint {path!r} is truncated or corrupted "
                         f"({type(exc).__name__}: {exc})") from exc


def _check_is_training_state(path):
    """A folder, safetensors weights or a torch.save zip are not corrupted checkpoints: say what they are."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint {path!r} is a directory; pass the checkpoint file in it "
                                f"(e.g. {os.path.join(path, CHECKPOINT_NAME)!r})")
    if not os.path.isfile(path):
        return  # (np.load raises FileNotFoundError)
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) >= 9 and head[8:9] == b"{" and not head.startswith(b"PK"):
        raise ValueError(f"checkpoint {path!r} is a safetensors file (weights only), not a training checkpoint: "
                         f"read it with minilora.load")
    if head.startswith(b"PK") and _zip_names(path) and "__meta__.npy" not in _zip_names(path):
        raise ValueError(f"checkpoint {path!r} is a zip archive without minilora's '__meta__' entry: not a "
                         f"training checkpoint written by minilora.train.save_training_state (a torch.save file?)")
    kind = None if head.startswith(b"PK") else binary_file_kind(head)
    if kind is not None:  # (a pickle is never unpickled: np.load refuses it too)
        raise ValueError(f"checkpoint {path!r} is {kind}; it is not a training checkpoint written by "
                         f"minilora.train.save_training_state")
    if len(head) >= 2 and not head.startswith(b"PK"):  # (np.load would blame "pickled (object) data" in it)
        raise ValueError(f"checkpoint {path!r} is truncated or corrupted, or not a training checkpoint: minilora.train."
                         f"save_training_state writes a zip archive (NumPy's .npz), and this file starts {head[:8]!r}")


def _zip_names(path):
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, NotImplementedError):
        return []


def _trainable(model):
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _allocator_owner(model):
    """The AdaLoRA tuner in ``model`` (its rank allocator's state decides which ranks the next steps
    mask, so it belongs in the checkpoint), or None."""
    for owner in (model, getattr(model, "base_model", None)):
        if callable(getattr(owner, "allocator_state_dict", None)) and owner.allocator_state_dict() is not None:
            return owner
    return None


def _training_state(step, named_params, optimizer, scheduler, history, allocator_owner=None, buffers=(),
                    generators=None):
    """``history``: the per-step ``losses``, ``lrs`` and ``grad_norms`` and the ``evals`` records so far (a
    resumed run's result holds them from step 1 on, whatever folder it continues in). ``generators``: the
    random generators' states to save (``generator_states()``, now, by default)."""
    generators = generators or generator_states()
    state = {"format": CHECKPOINT_FORMAT, "step": step,
             "model": {name: p for name, p in named_params},
             "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(),
             "rng": generators["cpu"], "python_rng": generators["python"], "numpy_rng": generators["numpy"],
             **{key: list(values) for key, values in history.items()}}
    if allocator_owner is not None:
        state["allocator"] = allocator_owner.allocator_state_dict()
    if buffers:
        state["buffers"] = dict(buffers)
    return state


def _persistent_buffers(model):
    """``[(name, buffer)]`` of the buffers in ``model.state_dict()``: training can change them (BatchNorm's
    running statistics), so a checkpoint holds them. (minilora's Llama has none.)"""
    saved = set(model.state_dict())
    return [(name, b) for name, b in model.named_buffers() if name in saved]


def _restore(state, named_params, optimizer, scheduler, allocator_owner=None, buffers=(), built_here=False):
    """Load a checkpoint's state into the model (trainable parameters and buffers), optimizer, scheduler,
    random generator and (AdaLoRA) rank allocator. ``built_here``: see ``_check_consistent``."""
    _check_format(state)
    saved, own = state["model"], dict(named_params)
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model's trainable parameters: missing "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''} (was it saved "
                         f"from the same model with the same LoRA/full-fine-tuning setup?)")
    for name, p in own.items():
        if saved[name].shape != p.shape:
            raise ValueError(f"checkpoint: {name} has shape {saved[name].shape}, "
                             f"model has {p.shape}")
        if saved[name].dtype != p._array.dtype:  # (copied in, it would be rounded: not the run that was saved)
            raise ValueError(f"checkpoint: {name} was saved as {saved[name].dtype}, the model's is {p._array.dtype}; "
                             f"resume with the dtype the run was trained in")
    saved_buffers, own_buffers = state.get("buffers", {}), dict(buffers)  # (older checkpoints have none)
    for name, array in saved_buffers.items():
        if name not in own_buffers or tuple(array.shape) != tuple(own_buffers[name].shape):
            raise ValueError(f"checkpoint: buffer {name} of shape {array.shape} is not one of the model's")
    # Everything that can refuse the checkpoint runs before the model changes: a refused resume
    # leaves the caller's model as it was, not holding half the checkpoint's weights.
    _check_generator_states(state)
    _check_consistent(state, built_here)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if allocator_owner is not None:
        _restore_allocator(state, allocator_owner)
    with no_grad():
        for name, p in own.items():
            _copy_into(p, saved[name])
        for name, array in saved_buffers.items():
            _copy_into(own_buffers[name], array)
    set_generator_states({"cpu": state["rng"], "python": state.get("python_rng"), "numpy": state.get("numpy_rng")})
    return int(state["step"]), [float(x) for x in state["losses"]]


def _check_consistent(state, built_here):
    """A checkpoint's parts must agree with its step: an edited or damaged one resumed as another run (a schedule at
    another step, a history of another length) or failed steps later with a bare error (``math domain error``).
    ``built_here``: ``train`` made the optimizer and schedule, which take one step per training step."""
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"checkpoint: its step {step!r} is not a whole number >= 0: the file is damaged")
    if len(state["losses"]) != step:
        raise ValueError(f"checkpoint: it holds {len(state['losses'])} losses for its {step} steps: the file is "
                         "damaged")
    if not built_here:
        return
    scheduled = state["scheduler"].get("last_epoch")
    if scheduled is not None and scheduled != step:
        raise ValueError(f"checkpoint: its learning-rate schedule is at step {scheduled!r}, the run at step {step}: "
                         "the file is damaged")
    _check_optimizer_state(state["optimizer"], step)


def _check_optimizer_state(saved, step):
    """AdamW's state of each parameter, as ``train`` made it: the same entries for every parameter, a step count
    between 0 and the run's, second moments (means of squares) >= 0."""
    per_parameter = list(saved.get("state", {}).items())
    entries = set().union(*(set(values) for _, values in per_parameter))
    for index, values in per_parameter:
        missing = sorted(entries - set(values))
        if missing:
            raise ValueError(f"checkpoint: the optimizer state of parameter {index} lacks {missing}, which the "
                             "others have: the file is damaged")
        count = float(np.asarray(values.get("step", 0)))
        if not 0 <= count <= step:
            raise ValueError(f"checkpoint: the optimizer state of parameter {index} counts {count:g} steps, outside "
                             f"0..{step}: the file is damaged")
        for name in ("exp_avg_sq", "max_exp_avg_sq"):
            if name in values and np.any(np.asarray(values[name]) < 0):
                raise ValueError(f"checkpoint: the optimizer's {name} of parameter {index} holds negative values (it "
                                 "is a mean of squares): the file is damaged")


def _check_format(state):
    """A checkpoint of a later layout than this minilora reads is refused by name: read as this one's, a key
    whose meaning changed would resume another run without a word. (Earlier ones have no "format": 1.)"""
    written = state.get("format", 1)
    if not isinstance(written, int) or isinstance(written, bool) or written > CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint: written in training-checkpoint format {written!r} by a newer minilora; this "
                         f"one reads format {CHECKPOINT_FORMAT} and earlier. Resume it with the minilora that wrote it")


def generator_states():
    """Every global random generator's state: minilora's (torch's 5056 bytes: the stream and its cached
    normal) and Python's and NumPy's, which a model or a data step of the caller's may draw from -- the
    Hugging Face Trainer's ``rng_state.pth`` keys (``cpu``, ``python``, ``numpy``)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": ml_random.get_rng_state()}


def set_generator_states(states):
    """Set what ``generator_states`` returned (a ``python`` / ``numpy`` of None is left alone: older
    training checkpoints have only minilora's)."""
    ml_random.set_rng_state(states["cpu"])
    if states.get("python") is not None:
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])


def check_generator_states(states, names=None):
    """The generators' states, tried on throwaway generators first (a corrupted one, a negative word in
    NumPy's Mersenne Twister, would otherwise fail after the model took the checkpoint's weights).
    ``names``: how the error calls each key (a training checkpoint's own keys)."""
    names = names or {}
    trials = [(lambda: ml_random.Generator().set_state(states["cpu"]), "cpu")]
    if states.get("python") is not None:
        trials += [(lambda: random.Random().setstate(states["python"]), "python"),
                   (lambda: np.random.RandomState().set_state(states["numpy"]), "numpy")]
    for trial, key in trials:
        try:
            trial()
        except (ValueError, TypeError, OverflowError, KeyError, IndexError, RuntimeError) as exc:
            raise ValueError(f"checkpoint: its random generator state {names.get(key, key)!r} is corrupted "
                             f"({type(exc).__name__}: {exc})") from None


def _check_generator_states(state):
    """A training checkpoint's generator states (see ``check_generator_states``), named by its own keys."""
    if isinstance(state["rng"], dict):  # (NumPy's PCG64 state: minilora before it drew torch's stream)
        raise ValueError("checkpoint: written by an older minilora, whose random generator drew NumPy's "
                         "stream; minilora now draws torch's, so this run cannot resume with the same dropout "
                         "masks and samples. Start the run again (or train from these weights without --resume)")
    check_generator_states({"cpu": state["rng"], "python": state.get("python_rng"), "numpy": state.get("numpy_rng")},
                           names={"cpu": "rng", "python": "python_rng", "numpy": "numpy_rng"})


def _copy_into(tensor, array):
    tensor._array[...] = tensor.device.xp.asarray(array, dtype=tensor.dtype)
    tensor._bump_version()


def _restore_allocator(state, owner):
    if "allocator" in state:
        owner.load_allocator_state_dict(state["allocator"])
        return
    # a checkpoint from before allocator states were saved: resumable, but not the same run
    warnings.warn("resume: the checkpoint has no AdaLoRA rank-allocator state (it predates them); the "
                  "importance averages restart from zero, so the ranks kept can differ from an uninterrupted run",
                  stacklevel=5)


# ----------------------------------------------------------------------------------------------
# Logging: metrics.jsonl, the loss plot, the progress bar
# ----------------------------------------------------------------------------------------------
class _MetricsLog:
    """Append-only JSON lines; on resume, records after the resumed step are dropped (they belong
    to the part of the old run that is about to be redone)."""

    def __init__(self, out_dir, resume_step):
        self.path = os.path.join(out_dir, METRICS_NAME) if out_dir else None
        self.records = []
        if self.path and os.path.exists(self.path):
            if resume_step is not None:
                self.records = [r for r in self._read() if r.get("step", 0) <= resume_step]
            with atomic_write(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.records)

    def _read(self):
        """The records of an earlier run. A line cut short (a kill or a full disk mid-write) is
        dropped with a message: the steps it described are redone anyway."""
        records, dropped = [], []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if isinstance(record, dict):
                    records.append(record)
                else:
                    dropped.append(number)
        if dropped:
            print(f"resume: {self.path}: dropped {len(dropped)} half-written or unreadable line(s) "
                  f"(line {', '.join(map(str, dropped))})", file=sys.stderr, flush=True)
        return records

    def write(self, record):
        self.records.append(record)
        if self.path and len(self.records) > 1 and not os.path.exists(self.path):
            self._write_again()  # (a stat a record: the file was there after the last one)
        elif self.path:
            try:
                with open(self.path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as exc:  # (a full disk: the write's own error names no file)
                if exc.errno is None or exc.filename is not None:
                    raise
                raise OSError(exc.errno, f"{exc.strerror} (appending step {record.get('step')}'s record to the "
                                         "run's metrics; the last checkpoint is kept)", self.path) from exc


    def _write_again(self):
        """The log, or the run's whole folder, was deleted while the run trained: written again with every record
        so far, in a folder made again -- as transformers' Trainer makes its output_dir again at its next save (the
        next checkpoint follows at its step). Appending made a log of the records from here on alone."""
        folder = os.path.dirname(self.path) or "."
        if os.path.isdir(folder) or not os.path.exists(folder):  # (a file in its place: atomic_write names it)
            gone = self.path if os.path.isdir(folder) else f"folder {folder}"
            print(f"train: the run's {gone} was deleted while training; writing it again with the metrics so far "
                  f"(a checkpoint deleted with it is written again at the next save)", file=sys.stderr, flush=True)
        with atomic_write(self.path, "w") as f:  # (which makes the folder again)
            f.writelines(json.dumps(r) + "\n" for r in self.records)


def plot_losses(path, losses, evals, title="training loss"):
    """A loss-curve PNG (train loss per step, eval loss as dots). Needs matplotlib; returns whether
    a plot was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1, label="train loss")
    points = [(e["step"], e["eval_loss"]) for e in evals if "eval_loss" in e]
    if points:
        ax.plot(*zip(*points), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return True


class _Progress:
    """``enabled=True``: a tqdm bar when tqdm is installed, else lines; ``"lines"``: a plain line every
    ``log_every`` steps and one per evaluation; ``False``: silent."""

    def __init__(self, total, initial, enabled, log_every):
        self.bar, self.enabled, self.log_every = None, enabled, log_every
        if enabled is True:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, initial=initial, desc="train", unit="step",
                                dynamic_ncols=True)
            except ImportError:
                pass
        self.total = total

    def update(self, step, loss, lr):
        if self.bar is not None:  # the postfix first: the redraw update() does shows THIS step's numbers
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self.bar.update(1)
        elif self.enabled and (step % self.log_every == 0 or step == self.total):
            print(f"step {step}/{self.total}  loss {loss:.4f}  lr {lr:.2e}", flush=True)

    def write(self, text):
        if self.bar is not None:
            self.bar.write(text)
        elif self.enabled:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``train``: with ``out_dir``, the checkpoint ``checkpoint`` holds ``step``, so
    ``resume=True`` continues exactly where the run stopped. ``signal``: the one that stopped it (``"SIGINT"`` or
    ``"SIGTERM"``); ``abandoned``: the step in progress was given up (SIGTERM, a second Ctrl-C) rather than finished
    (a first Ctrl-C), and ``step`` is the last whole one."""

    def __init__(self, step, checkpoint, signal="SIGINT", abandoned=False):
        super().__init__(f"training interrupted after step {step}" +
                         (f" ({signal}: the step in progress was abandoned)" if abandoned else ""))
        self.step, self.checkpoint, self.signal, self.abandoned = step, checkpoint, signal, abandoned


class _StopNow(BaseException):
    """Raised by a signal handler in the middle of a step: ``train`` saves the last whole step and stops."""


class _Interruptions:
    """What stops a training run, and how.

    Ctrl-C (SIGINT): the first one sets ``asked`` -- the loop stops after the current step. SIGTERM (a job scheduler
    ending the job; ``mpirun`` turns a Ctrl-C into SIGTERM to every rank, followed a fraction of a second later by
    SIGKILL), or a second Ctrl-C: no time to finish the step, so the handler raises ``_StopNow`` at once, and
    ``train`` saves the last whole step -- unless the update is being applied (``applying()``), which is finished
    first, so the weights, moments and step count always agree. ``stopping`` names the signal. SIGTERM is taken
    over only where it would kill the process (``SIG_DFL``): a program's own handler, or ``SIG_IGN``, is kept.
    ``restore()`` puts the previous handlers back. (Signals reach the main thread only; elsewhere both keep their
    usual meaning.)"""

    def __init__(self):
        self.asked, self.stopping, self._applying, self.previous = False, None, False, {}
        if threading.current_thread() is not threading.main_thread():
            return
        self.previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigint(self, signum, frame):
        if self.asked:
            self._stop_now("SIGINT")
            return
        self.asked = True
        print("\nCtrl-C: stopping after this step (press Ctrl-C again to stop at once, with the last whole step "
              "saved)", file=sys.stderr, flush=True)

    def _on_sigterm(self, signum, frame):
        self._stop_now("SIGTERM")

    def _stop_now(self, name):
        if self.stopping:
            return  # (already saving the last whole step, and stopping)
        self.stopping = name
        if not self._applying:
            raise _StopNow

    @contextlib.contextmanager
    def applying(self):
        """The update of a step (optimizer, scheduler, the history): a stop asked for inside waits for its end."""
        self._applying = True
        try:
            yield
        finally:
            self._applying = False
        if self.stopping:
            raise _StopNow

    def restore(self):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous = {}


class _StepBoundary:
    """What a checkpoint of the last whole step needs that the step in progress changes before its update: the
    random generators (dropout masks drawn) and a DataLoader's place in its epoch. (Weights, moments and history
    change only in the update.) ``eval_due``: that step's evaluation had not run yet. ``ranks``: with several
    ranks, each rank's generators as the step left them (``_gather_generator_states``)."""

    def __init__(self, step, loader, eval_due=False, ranks=None):
        self.step, self.eval_due, self.generators, self.ranks = step, eval_due, generator_states(), ranks
        self.data = loader.state_dict() if isinstance(loader, _EpochLoader) else None


def _as_loader(data, batch_size, seed, shuffle=True, what="train_data"):
    from .utils.data import DataLoader as TorchDataLoader
    if isinstance(data, DataLoader) or data is None:
        return data
    if isinstance(data, TorchDataLoader):  # torch's DataLoader: its own batch size and order
        return _EpochLoader(data)
    if hasattr(data, "__len__") and len(data) == 0:  # (named here: the user passed no DataLoader)
        raise ValueError(f"train: {what} is empty (no examples to train on)" if what == "train_data"
                         else f"train: {what} is empty (pass None for no evaluation)")
    return DataLoader(data, batch_size, seed, shuffle=shuffle)


class _EpochLoader:
    """``batch(i)`` over a ``minilora.utils.data.DataLoader`` (torch's), epoch after epoch, in order.

    Its batches are decided by random generators -- the global one (each ``iter(loader)`` draws a seed,
    a ``RandomSampler`` without a generator seeds one from it) and any ``generator=`` of the loader or its
    sampler -- as each epoch begins. So a checkpoint holds their states at the start of the current epoch
    and how many of its batches were taken; a resumed run sets them back, replays the epoch's start, skips
    that many batches and restores the checkpoint's global state: the same batches follow, bit for bit."""

    items = None  # (no list of examples to check in advance)

    def __init__(self, loader):
        self.loader, self.taken, self.iterator, self.epoch_start = loader, 0, None, None
        self.workers_start = None  # persistent workers' generators, kept from epoch to epoch (as torch's)

    def _generators(self):
        """Every generator that decides the batches: the global one first, then the loader's and samplers'."""
        owners = [self.loader, self.loader.sampler, self.loader.batch_sampler,
                  getattr(self.loader.batch_sampler, "sampler", None)]
        found = [ml_random.default_generator]
        for owner in owners:
            g = getattr(owner, "generator", None)
            if isinstance(g, ml_random.Generator) and all(g is not f for f in found):
                found.append(g)
        return found

    def _new_epoch(self):
        self.epoch_start = [g.get_state() for g in self._generators()]
        self.workers_start = self.loader._persistent_workers_state()
        self.iterator, self.taken = iter(self.loader), 0

    def batch(self, index):
        if self.iterator is None:
            self._new_epoch()
        try:
            batch = next(self.iterator)
        except StopIteration:
            self._new_epoch()
            batch = next(self.iterator, None)
            if batch is None:
                raise ValueError("train: train_data (a DataLoader) yields no batch") from None
        self.taken += 1
        ids, labels = _as_ids_and_labels(batch)
        if not np.any(labels[:, 1:] != IGNORE_INDEX):  # (a list of examples is checked before any step instead)
            raise ValueError(f"train: batch {index} of train_data (a DataLoader) has no token to learn from: its "
                             f"labels after the first are all {IGNORE_INDEX}, and a mean over no tokens is NaN. "
                             f"Drop such examples or raise the maximum length")
        return ids, labels

    def __iter__(self):  # (as eval_data: one pass)
        return (_as_ids_and_labels(batch) for batch in self.loader)

    def state_dict(self):
        state = {"epoch_start": None if self.epoch_start is None else list(self.epoch_start), "taken": self.taken,
                 "workers_start": self.workers_start}
        if callable(getattr(self.loader.collate_fn, "generator_state", None)):  # (a seeded masking collator)
            state["collator"] = self.loader.collate_fn.generator_state()
        return state

    def load_state_dict(self, state):
        """Where the checkpointed run was in its epoch (called after the global generators were restored)."""
        if state is None:
            raise ValueError("checkpoint: written by a run whose train_data was not a DataLoader, so it does not say "
                             "where this DataLoader's epoch was; resume with the run's own train_data")
        if state["epoch_start"] is None:
            return
        # Replaying the epoch's first batches runs the dataset's __getitem__ and the collate_fn again, which may
        # draw from Python's or NumPy's global generator too (a random crop, a masking collator): all three go
        # back to the checkpoint's states afterwards, or the batches after the replay get other draws.
        generators, now = self._generators(), generator_states()
        if len(state["epoch_start"]) != len(generators):
            raise ValueError(f"checkpoint: its DataLoader drew from {len(state['epoch_start'])} random generator(s), "
                             f"this one from {len(generators)}: not the same train_data")
        for g, saved in zip(generators, state["epoch_start"]):
            try:
                g.set_state(saved)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ValueError(f"checkpoint: its DataLoader's random generator state is corrupted ({exc})") from None
        self.loader._load_persistent_workers_state(state.get("workers_start"))  # (older checkpoints: none)
        self._new_epoch()
        for _ in range(int(state["taken"])):
            if next(self.iterator, None) is None:
                raise ValueError("checkpoint: its DataLoader had taken more batches in this epoch than this "
                                 "train_data has: not the same train_data")
        self.taken = int(state["taken"])
        set_generator_states(now)
        if "collator" in state and callable(getattr(self.loader.collate_fn, "set_generator_state", None)):
            # a collate_fn's own seeded generator goes on from epoch to epoch: the replay from a fresh one left it
            # where the run was in its first epoch only
            self.loader.collate_fn.set_generator_state(state["collator"])


def _batch_options(loader, grad_accum):
    """What decides which examples each step trains on (a checkpoint keeps it: a resume with other values
    trains on other batches from there on)."""
    own = loader.loader if isinstance(loader, _EpochLoader) else loader
    options = {"batch_size": own.batch_size, "grad_accum": grad_accum}
    if isinstance(loader, DataLoader):
        options.update(seed=loader.seed, shuffle=bool(loader.shuffle))
    examples = _count_of(own.items if isinstance(loader, DataLoader) else own.dataset)
    if examples is not None:  # (a dataset grown or cut since: other batches, and the epoch ends elsewhere)
        options["examples"] = examples
    return options


def _count_of(dataset):
    """How many examples ``dataset`` holds, or None for one without a length (an iterable dataset)."""
    try:
        return len(dataset)
    except TypeError:
        return None


def _frozen_fingerprint(model):
    """A digest of the weights training does not change: each frozen parameter's name, shape, dtype and the first
    elements of its first and last rows (a few bytes each: a run's start and each resume read them once). A LoRA
    checkpoint holds only the adapter, so a resume onto another base model of the same shapes trained the adapter
    on weights it never saw, without a word."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            continue
        rows = p._array[:1], p._array[-1:]  # (views: no copy of a large weight)
        ends = [np.ravel(_to_numpy(row))[:16] for row in rows] if p._array.ndim else [np.ravel(_to_numpy(p._array))]
        digest.update(f"{name}{tuple(p.shape)}{p._array.dtype}".encode())
        for values in ends:
            digest.update(np.ascontiguousarray(values).view(np.uint8).tobytes())
    return digest.hexdigest()


def _say_other_base(path, saved, now):
    if saved is not None and saved != now:  # (checkpoints from before they held one: nothing to compare)
        warnings.warn(f"resume from {path}: the model's frozen weights are not the ones this run was trained on "
                      "(another base model, or its files changed since): the trained weights go on from the "
                      "checkpoint on a model they never saw, which is not the run that was saved", stacklevel=4)


def _say_other_batches(path, saved, now):
    changed = [(f"train_data holds {now[name]!r} examples" if name == "examples" else f"{name}={now[name]!r}")
               + f" (the run had {saved[name]!r})" for name in now
               if isinstance(saved, dict) and name in saved and saved[name] != now[name]]
    if changed:
        warnings.warn(f"resume from {path}: {', '.join(changed)}: the steps from here on train on other batches than "
                      f"the run would have (pass the run's own data and values to continue it exactly)", stacklevel=4)


def _as_ids_and_labels(batch):
    """``(input_ids, labels)`` int64 arrays from a torch-style batch: a tensor of token rows (its own labels),
    a list of one or two tensors (``TensorDataset(ids)`` / ``TensorDataset(ids, labels)``), or a dict with
    ``input_ids`` (and ``labels``), as a transformers data collator gives."""
    if isinstance(batch, dict) and "input_ids" in batch:
        batch = [batch["input_ids"]] + ([batch["labels"]] if "labels" in batch else [])
    elif not isinstance(batch, (list, tuple)):
        batch = [batch]
    arrays = [np.asarray(_to_numpy(part)) for part in batch]
    if not 1 <= len(arrays) <= 2 or any(a.ndim != 2 or a.dtype.kind not in "iu" for a in arrays):
        got = ", ".join(f"{type(part).__name__} {getattr(part, 'shape', '')}" for part in batch) \
            if isinstance(batch, (list, tuple)) else type(batch).__name__
        raise TypeError(f"train: each batch of a DataLoader must be token ids [batch, length] (a tensor, a list of "
                        f"ids and labels, or a dict with 'input_ids' and 'labels'), got {got}")
    ids = arrays[0].astype(np.int64)
    return ids, (arrays[1] if len(arrays) == 2 else arrays[0]).astype(np.int64)


def get_decay_parameter_names(model):
    """The parameters weight decay applies to, by the Hugging Face Trainer's rule: all but those inside an
    ``nn.LayerNorm`` and those whose name (relative to each module on the way down) says bias, layernorm,
    rmsnorm or norm. Pulling a norm's scale or a bias towards 0 only hurts."""
    from .nn import LayerNorm
    patterns = [re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")]

    def names(module):
        result = []
        for name, child in module.named_children():
            result += [f"{name}.{n}" for n in names(child) if not isinstance(child, LayerNorm)
                       and not any(p.search(f"{name}.{n}".lower()) for p in patterns)]
        return result + [k for k in module._parameters if not any(p.search(k.lower()) for p in patterns)]
    return names(model)


def _param_groups(model, named_params, weight_decay):
    """AdamW's two groups: ``weight_decay`` on the parameters ``get_decay_parameter_names`` names, 0 on the rest."""
    decay = set(get_decay_parameter_names(model))
    groups = [{"params": [p for n, p in named_params if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named_params if n not in decay], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _evaluate(model, step, eval_loader, eval_fn):
    """The eval record of one step: the eval loss and whatever ``eval_fn(model)`` returns."""
    record = {"kind": "eval", "step": step}
    if eval_loader is not None:
        record["eval_loss"] = mean_loss(model, eval_loader)
    if eval_fn is not None:
        metrics = eval_fn(model)
        if not isinstance(metrics, dict):
            raise TypeError(f"train: eval_fn must return a dict of metric name: value, got a {type(metrics).__name__}")
        record.update(_plain(metrics))
        _check_loggable(record)
    return record


def _plain(value):
    """transformers' denumpify_detensorize (what its Trainer does to compute_metrics' results): NumPy numbers
    and one-element tensors become Python numbers, in lists and dicts too. A metrics log is JSON: np.mean(...)'s
    float32 or a forgotten .item() stopped the run at its first evaluation."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic) or (isinstance(value, Tensor) and value.numel() == 1):
        return value.item()
    return value


def _check_loggable(record):
    """A value the metrics log (JSON) cannot hold is named, with the metric it came from."""
    for key, value in record.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"train: eval_fn's {key!r} is a {type(value).__name__}, which the metrics log (JSON) "
                            f"cannot hold ({exc}); return numbers, strings, or lists and dicts of them") from None


def train(model, train_data, eval_data=None, *, steps, batch_size=16, lr=1e-3, weight_decay=0.0,
          warmup_steps=0, grad_accum=1, clip_norm=1.0, betas=(0.9, 0.999), eval_every=0,
          eval_fn=None, save_every=0, out_dir=None, seed=0, resume=False, log_every=10,
          progress=True, plot=True, after_optimizer_step=None, lr_scheduler_type="cosine",
          lr_scheduler_kwargs=None, optimizers=(None, None)):
    """Train ``model``'s trainable parameters for ``steps`` optimizer steps; return a ``TrainResult``.

    ``model(input_ids, labels=labels)`` is called with int64 NumPy arrays ``[B, T]`` (minilora's
    models move them to their device) and must return an object with a scalar ``.loss``.

    ``train_data`` / ``eval_data``: a ``minilora.data.DataLoader``, or a list of ``(ids, labels)``
    pairs / an ``[N, T]`` array, batched here with ``batch_size`` and ``seed``. Each step uses
    ``grad_accum`` micro-batches (effective batch ``batch_size * grad_accum``).
    ``eval_every``: every that many steps (and at the end) log the eval loss and ``eval_fn(model)``,
    a dict of extra metrics (e.g. exact-match accuracy). ``out_dir``: where ``metrics.jsonl``,
    ``loss.png`` and ``checkpoint.npz`` (every ``save_every`` steps and at the end) go.
    ``resume=True`` continues from ``out_dir/checkpoint.npz`` (``resume=PATH`` from that file); a
    checkpoint already at ``steps`` restores the model and returns (``steps_run == 0``), so the caller
    can write what an interrupted run did not. A different ``lr`` on resume replaces the old one.
    Raises ``TrainingDivergedError`` (``NonFiniteLossError`` for NaN/inf) when the run goes wrong, and
    ``TrainingInterrupted`` after a Ctrl-C (the step in progress finished and checkpointed first) or a
    SIGTERM (the step in progress abandoned, the last whole one checkpointed: see ``_Interruptions``).
    ``progress``: True (a tqdm bar, or lines without tqdm), "lines" (a line per ``log_every`` steps and
    per evaluation) or False (silent).
    ``after_optimizer_step(step)``: called after each ``optimizer.step()``, while the gradients are still
    there (before ``zero_grad()``): AdaLoRA's ``model.base_model.update_and_allocate``.
    ``lr_scheduler_type`` / ``lr_scheduler_kwargs``: the schedule by its transformers name (``"linear"``,
    ``"constant_with_warmup"``, ...; default: warmup then cosine decay to 0), as TrainingArguments.
    ``optimizers=(optimizer, lr_scheduler)``: as the Hugging Face Trainer, an optimizer of your own (LoRA+'s
    ``create_loraplus_optimizer``) used with its own learning rates, ``lr``/``betas``/``weight_decay``
    unused; without a scheduler it gets the ``lr_scheduler_type`` one. Checkpoints hold both states.
    A second process training into the same ``out_dir`` meanwhile is refused (``FolderInUseError``).
    """
    options = dict(locals())
    ddp, _ = _unwrap(model)
    writes = out_dir and (ddp is None or _rank() == 0)  # (with several ranks, rank 0 writes the run's files)
    with writing_alone(out_dir, "minilora train") if writes else contextlib.nullcontext():
        return _train(**options)


def _train(model, train_data, eval_data, *, steps, batch_size, lr, weight_decay, warmup_steps, grad_accum, clip_norm,
           betas, eval_every, eval_fn, save_every, out_dir, seed, resume, log_every, progress, plot,
           after_optimizer_step, lr_scheduler_type, lr_scheduler_kwargs, optimizers):
    from .optim import clip_grad_norm_

    _check_counts(steps=(steps, 1), grad_accum=(grad_accum, 1), batch_size=(batch_size, 1),
                  eval_every=(eval_every or 0, 0), save_every=(save_every or 0, 0),
                  warmup_steps=(warmup_steps, 0))
    _check_clip_norm_and_lr(clip_norm, lr)
    _check_out_dir(out_dir)
    if save_every and not out_dir:  # (the Hugging Face Trainer cannot be asked this: it always has an output_dir)
        warnings.warn(f"train: save_every={save_every} but no out_dir: no checkpoint is written (pass out_dir= to "
                      "save the run, and resume it)", stacklevel=3)
    ddp, model = _unwrap(model)  # with DistributedDataParallel: `ddp` runs the steps, `model` is what it wraps
    writer = ddp is None or _rank() == 0  # with several ranks, rank 0 alone writes files and shows progress
    named = _trainable(model)
    if not named:
        raise ValueError("train: the model has no parameter with requires_grad=True -- nothing to train")
    params = [p for _, p in named]
    allocator_owner, buffers = _allocator_owner(model), _persistent_buffers(model)
    loader = _as_loader(train_data, batch_size, seed)
    _check_every_example_has_a_target(loader, "train_data")
    eval_loader = _as_loader(eval_data, batch_size, seed, shuffle=False, what="eval_data")
    optimizer, scheduler = _optimizer_and_schedule(optimizers, model, named, lr, betas, weight_decay,
                                                   lr_scheduler_type, lr_scheduler_kwargs, warmup_steps, steps)
    ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME) if out_dir else None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    frozen = _frozen_fingerprint(model) if out_dir or resume else None

    ml_random.manual_seed(seed)  # dropout masks: same seed, same run
    start, losses, history = 0, [], {}
    if ckpt_path and writer:
        remove_leftovers(ckpt_path)  # a checkpoint write that a kill cut short
    if resume:
        path = resume if isinstance(resume, (str, os.PathLike)) else ckpt_path
        if path is None or not os.path.exists(path):
            raise FileNotFoundError(f"resume: no checkpoint at {path!r} (train with out_dir= and "
                                    f"save_every= first)")
        state = load_training_state(path)
        bad = _non_finite_arrays(state)
        if bad:  # minilora writes only finite checkpoints: this one was edited, or not written by it
            raise ValueError(f"resume from {path}: {len(bad)} weight/optimizer arrays hold NaN or inf (first: "
                             f"{bad[0]}); training on them gives NaN at once. Resume from another checkpoint")
        try:
            own_generators = _this_ranks_generators(state, ddp)
            start, losses = _restore(state, named, optimizer, scheduler, allocator_owner, buffers,
                                     built_here=optimizers == (None, None))
            if own_generators is not None:
                set_generator_states(own_generators)
            if isinstance(loader, _EpochLoader):
                loader.load_state_dict(state.get("data"))
            _say_other_batches(path, state.get("batches"), _batch_options(loader, grad_accum))
            _say_other_base(path, state.get("frozen"), frozen)
        except (ValueError, TypeError) as exc:  # name the file: the message alone does not say which run it was
            raise ResumeError(f"resume from {path}: {exc}") from None
        except KeyError as exc:  # a file save_training_state did not write (or an edited one)
            raise ResumeError(f"resume from {path}: the checkpoint has no {exc.args[0]!r} entry; it was not "
                              "written by minilora.train") from None
        if start > steps:
            raise ValueError(f"resume: the checkpoint is already at step {start} > steps={steps}")
        if optimizers[0] is None:  # (an optimizer of the caller's keeps its own learning rates)
            _use_new_learning_rate(scheduler, lr, start)
        history = {key: [float(x) for x in state[key]] for key in ("lrs", "grad_norms") if key in state}
        if isinstance(state.get("evals"), list):  # (checkpoints from before they held them: the log's, below)
            history["evals"] = state["evals"]
    if not resume and ckpt_path and writer and os.path.isfile(ckpt_path):
        # A fresh run in a folder holding an earlier run: its metrics log is emptied just below, and its
        # checkpoint goes with it. Left until this run's first checkpoint, a kill before that one left the
        # earlier run's checkpoint to a resume, which continued that run as if it were this one.
        os.remove(ckpt_path)
    log = _MetricsLog(out_dir if writer else None, start if resume else None)
    # the evaluations so far come with the checkpoint, as its losses do: a run resumed in another folder
    # (resume=PATH) has no log of them there, and its result and loss plot would lack them
    evals = history.get("evals", [r for r in log.records if r.get("kind") == "eval"])
    logged = [r for r in log.records if r.get("kind") == "train"]  # (checkpoints from before they held these)
    lrs = history.get("lrs", [r["lr"] for r in logged][:start])
    grad_norms = history.get("grad_norms", [r["grad_norm"] for r in logged][:start])
    last_good = (ckpt_path, start) if resume else (None, None)
    bar = _Progress(steps, start, progress if writer else False, log_every)
    model.train()
    t0 = time.perf_counter()
    train_seconds = 0.0

    def result(step):
        return TrainResult(losses, lrs, grad_norms, evals, step, step - start,
                           time.perf_counter() - t0, train_seconds, out_dir)

    def stop(step, what, error=NonFiniteLossError, diverged=True):
        """``diverged=False``: the run could not learn from the start (no learning rate is to blame)."""
        bar.close()
        path, good_step = last_good
        resume_with = "; resume from it with a lower learning rate or clip_norm" if diverged else ""
        where = f"the last good checkpoint is {path} (step {good_step}){resume_with}" if path else \
            "no checkpoint had been saved yet"
        advice = "Try a lower learning rate, a smaller clip_norm, or float64." if diverged else ""
        frozen = _nonfinite_frozen_weight(model)
        if frozen is not None:  # training never changes a frozen weight: the NaN came with the model
            advice = (f"The frozen weight {frozen!r} already holds NaN or inf values: it came that way "
                      "from the model's files, so no learning rate helps; check or re-download them.")
        raise error(f"training stopped at step {step}: {what}. Nothing was saved for this step; "
                    f"{where}.{' ' + advice if advice else ''}", step, path, result(step - 1), good_step)

    def checkpoint(step, boundary=None):
        """``boundary``: a ``_StepBoundary`` of ``step`` (a step in progress was abandoned since)."""
        nonlocal last_good
        state = _training_state(step, named, optimizer, scheduler,
                                {"losses": losses, "lrs": lrs, "grad_norms": grad_norms, "evals": evals},
                                allocator_owner, buffers, boundary and boundary.generators)
        if ranks_generators is not None:  # (each rank draws its own dropout masks: a resume gives each its own)
            state["rank_generators"] = boundary.ranks if boundary else ranks_generators
        if isinstance(loader, _EpochLoader):
            state["data"] = boundary.data if boundary else loader.state_dict()
        if boundary and boundary.eval_due:  # (a resume runs it first, as this run would have)
            state["eval_due"] = True
        state["batches"] = _batch_options(loader, grad_accum)
        state["frozen"] = frozen
        bad = _non_finite_arrays(state)
        if bad:  # never let a broken state become "the last good checkpoint"
            stop(step, f"after the update, {len(bad)} weight/optimizer arrays hold NaN or inf "
                 f"(first: {bad[0]})")
        if writer:
            save_training_state(ckpt_path, state)
        last_good = (ckpt_path, step)

    def eval_due(step):
        return ((eval_every and step % eval_every == 0) or step == steps) and \
            (eval_loader is not None or eval_fn is not None)

    def evaluate(step):
        evals.append(_evaluate(model, step, eval_loader, eval_fn))
        model.train()  # an eval_fn may leave it in eval mode: the next steps still train with dropout
        log.write(evals[-1])
        bar.write("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in evals[-1].items() if k != "kind"))

    interruptions = _Interruptions()  # from here on, the first Ctrl-C asks the loop to stop after the current step
    ranks_generators = None  # with several ranks: theirs, as the last step (or evaluation) left them
    boundary = _StepBoundary(start, loader)  # (then one each step, as its update ends: nothing draws until the next)
    try:
        if resume and state.get("eval_due"):  # the interrupted run was stopped before its evaluation
            evaluate(start)
            boundary = _StepBoundary(start, loader)
        for step in range(start + 1, steps + 1):
            t_step = time.perf_counter()
            loss_sum, tokens = 0.0, 0
            for micro in range(grad_accum):
                input_ids, labels = loader.batch((step - 1) * grad_accum + micro)
                last = micro == grad_accum - 1  # DDP averages the gradients after the last micro-batch only
                with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
                    loss = (ddp or model)(input_ids, labels=labels).loss
                    if ddp is not None:  # weigh this rank's mean by its share of the batch's targets
                        loss = loss * _token_weight(int((labels[:, 1:] != IGNORE_INDEX).sum()))
                    value = loss.item()
                    if not math.isfinite(value) and ddp is None:  # with ranks: decided together, below
                        stop(step, f"the loss is {value}")
                    (loss / grad_accum).backward()
                loss_sum += value
                tokens += int((labels[:, 1:] != IGNORE_INDEX).sum())
            if ddp is not None:  # every rank must take the same decisions: on the same numbers
                loss_sum, tokens, interruptions.asked = _agree(loss_sum, tokens, interruptions.asked)
                ranks_generators = _gather_generator_states()  # (the step's last draw is done)
                if not math.isfinite(loss_sum):
                    stop(step, f"the loss is {loss_sum / grad_accum}")
            _check_divergence(step, loss_sum / grad_accum, losses, stop)
            grad_norm = float(clip_grad_norm_(params, clip_norm if clip_norm else float("inf")))
            if not math.isfinite(grad_norm):
                stop(step, f"the gradient norm is {grad_norm}")
            if grad_norm == 0.0 and loss_sum > 0:
                reason, diverged = _zero_gradient_reason(model, step == start + 1 and not resume, loss_sum / grad_accum)
                stop(step, reason, TrainingDivergedError, diverged)
            step_lr = scheduler.get_last_lr()[0]
            with interruptions.applying():
                optimizer.step()
                scheduler.step()
                if after_optimizer_step is not None:
                    after_optimizer_step(step)
                optimizer.zero_grad()
                train_seconds += time.perf_counter() - t_step
                losses.append(loss_sum / grad_accum)
                lrs.append(step_lr)
                grad_norms.append(grad_norm)
                boundary = _StepBoundary(step, loader, eval_due(step), ranks_generators)
            log.write({"kind": "train", "step": step, "loss": losses[-1], "lr": step_lr,
                       "grad_norm": grad_norm, "tokens": tokens,
                       "time": round(time.perf_counter() - t0, 3)})
            bar.update(step, losses[-1], step_lr)

            if eval_due(step):
                evaluate(step)
                ranks_generators = ranks_generators and _gather_generator_states()  # (an eval_fn may draw)
                boundary = _StepBoundary(step, loader, ranks=ranks_generators)
            if ckpt_path and ((save_every and step % save_every == 0) or step == steps or interruptions.asked):
                checkpoint(step)
            if interruptions.asked and step < steps:
                raise TrainingInterrupted(step, ckpt_path)
        return result(steps)
    except _StopNow:
        optimizer.zero_grad()  # (the abandoned step's gradients: a caller training on must not add to them)
        if ckpt_path and boundary.step > start:
            checkpoint(boundary.step, boundary)
        raise TrainingInterrupted(boundary.step, last_good[0], interruptions.stopping, abandoned=True) from None
    finally:
        interruptions.restore()
        bar.close()
        if out_dir and plot and losses and writer:
            _plot_on_the_way_out(os.path.join(out_dir, PLOT_NAME), losses, evals)


def _plot_on_the_way_out(path, losses, evals):
    """The loss plot, written as ``train`` returns or raises. When it raises, the plot must not hide
    why: with the disk full the plot fails too, and its error would replace the checkpoint's."""
    failing = sys.exc_info()[1] is not None
    try:
        plot_losses(path, losses, evals)
    except Exception as exc:
        if not failing:
            raise
        print(f"train: the loss plot {path} was not written either ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)


def _optimizer_and_schedule(optimizers, model, named, lr, betas, weight_decay, schedule, schedule_kwargs,
                            warmup_steps, steps):
    """The caller's ``optimizers=(optimizer, lr_scheduler)``, each built when None: AdamW over the trainable
    parameters, the ``schedule`` (a transformers name) with ``warmup_steps`` over ``steps``."""
    from .optim import AdamW, get_scheduler
    if not isinstance(optimizers, (tuple, list)) or len(optimizers) != 2:
        raise ValueError(f"train: optimizers must be a pair (optimizer, lr_scheduler), either of them None, "
                         f"got {optimizers!r}")
    optimizer, scheduler = optimizers
    if optimizer is None:
        if scheduler is not None:
            raise ValueError("train: optimizers=(None, lr_scheduler): a scheduler drives the optimizer it was "
                             "made for; pass that optimizer with it")
        optimizer = AdamW(_param_groups(model, named, weight_decay), lr=lr, betas=betas, weight_decay=weight_decay)
    if scheduler is None:
        if getattr(schedule, "value", schedule) == "reduce_lr_on_plateau":
            raise ValueError("train: lr_scheduler_type='reduce_lr_on_plateau' steps on an evaluation metric, "
                             "which train() does not feed it; choose a schedule over the steps (e.g. 'linear')")
        scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=steps,
                                  scheduler_specific_kwargs=schedule_kwargs)
    return optimizer, scheduler


def _unwrap(model):
    """``(ddp, module)``: a ``DistributedDataParallel`` and the model it wraps, or ``(None, model)``.
    Checkpoints and evaluation use the wrapped model's own names, so a run resumes with any number
    of ranks (one included)."""
    from .nn.parallel import DistributedDataParallel
    return (model, model.module) if isinstance(model, DistributedDataParallel) else (None, model)


def _rank():
    from . import distributed
    return distributed.get_rank()


def _world_size():
    from . import distributed
    return distributed.get_world_size()


def _token_weight(tokens):
    """``tokens * world_size / all ranks' tokens``: each rank's loss is a mean over its own target
    tokens, and DDP averages the ranks' gradients; weighed so, the average is the gradient of the mean
    over *all* the batch's tokens -- what one process with the whole batch computes, even when the
    ranks' slices hold different numbers of targets (the Hugging Face Trainer's
    ``average_tokens_across_devices``). Costs one 8-byte all-reduce per micro-batch."""
    from . import distributed
    total = Tensor(np.array([tokens], dtype=np.float64), dtype="float64")
    distributed.all_reduce(total)
    everyone = float(total.numpy(force=True)[0])
    return tokens * distributed.get_world_size() / everyone if everyone else 1.0


def _agree(loss_sum, tokens, asked):
    """One small all-reduce a step: the loss averaged over the ranks (with ``_token_weight``, the
    one-process loss of the whole batch), the tokens summed, and a Ctrl-C on any rank stops every
    rank after this step."""
    from . import distributed
    numbers = Tensor(np.array([loss_sum, tokens, float(asked)]), dtype="float64")
    distributed.all_reduce(numbers)
    total_loss, total_tokens, asked_count = numbers.numpy(force=True).tolist()
    return total_loss / distributed.get_world_size(), int(total_tokens), asked_count > 0


def _this_ranks_generators(state, ddp):
    """This rank's generator states in a checkpoint of a run on as many ranks (checked), or None: one process, or a
    checkpoint of another number of ranks -- whose batches were split otherwise anyway -- goes on from rank 0's."""
    saved = state.get("rank_generators")
    if ddp is None or not isinstance(saved, list) or len(saved) != _world_size():
        return None
    own = saved[_rank()]
    check_generator_states(own, names={key: f"rank_generators[{_rank()}].{key}" for key in own})
    return own


def _gather_generator_states():
    """Every rank's ``generator_states()``, in rank order (one small all-gather a step: a checkpoint of the step, which
    rank 0 writes alone, holds them all -- as the Hugging Face Trainer's ``rng_state_{rank}.pth`` files do -- so that
    each rank resumes drawing its own dropout masks, not rank 0's)."""
    from . import distributed
    own = {key: _to_numpy(value) for key, value in generator_states().items()}
    everyone = [None] * _world_size()
    distributed.all_gather_object(everyone, own)
    return everyone


def _adapter_scalings(module):
    """A LoRA layer's ``scaling`` dict (adapter -> s); {} for any other module (attention's ``scaling`` is a number,
    transformers' 1 / sqrt(head_dim))."""
    scaling = getattr(module, "scaling", None)
    return scaling if isinstance(scaling, dict) else {}


def _zero_gradient_reason(model, first_step, loss):
    """Why no parameter got a gradient, and whether the run diverged: an adapter whose update is scaled by 0
    (lora_alpha=0), a model whose trainable parameters do not reach the loss (from the first step on), or a run
    that saturated (diverged)."""
    scaled_out = sorted({f"{name} (adapter {adapter!r})" for name, module in model.named_modules()
                         for adapter, value in _adapter_scalings(module).items() if value == 0})
    said = f"the gradient norm is exactly 0 while the loss is {loss:.4f}"
    if scaled_out:
        more = f" and {len(scaled_out) - 1} more" if scaled_out[1:] else ""
        return (f"{said}: the LoRA update of {scaled_out[0]}{more} is scaled by 0 (lora_alpha=0), so no adapter "
                "weight can learn; give lora_alpha a value > 0 (PEFT's default is 8)"), False
    if first_step:
        return (f"{said} at the first step: no trainable parameter reaches the loss (are the parameters that "
                "requires_grad the ones the forward uses?)"), False
    return f"{said}: the model saturated and no parameter can learn any more (the run diverged)", True


def _nonfinite_frozen_weight(model):
    """The name of the first frozen parameter holding NaN or inf, or None (called only when a run stops)."""
    for name, param in model.named_parameters():
        if not param.requires_grad and not np.isfinite(param.numpy(force=True)).all():
            return name
    return None


def _check_counts(**counts):
    """Each ``name=(value, smallest)`` must be a whole number >= smallest: 2.5 steps is refused, not
    rounded (or a TypeError deep in the loop)."""
    for name, (value, smallest) in counts.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < smallest:
            raise ValueError(f"train: {name} must be an integer >= {smallest}, got {value!r}")


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_clip_norm_and_lr(clip_norm, lr):
    """NaN clipped every gradient to NaN; a negative max norm flipped every gradient's sign (torch's
    clip_grad_norm_ multiplies by max_norm / norm) and trained uphill. Both went on without a word.
    An infinite lr (which torch's AdamW takes) made the first update NaN. The optimizer names the rest."""
    if not _is_number(clip_norm) or not clip_norm >= 0:  # (`not >=` is also true for NaN)
        raise ValueError(f"train: clip_norm must be a number >= 0 (0 turns clipping off), got {clip_norm!r}")
    if _is_number(lr) and not math.isfinite(lr):
        raise ValueError(f"train: lr must be a finite number >= 0, got {lr!r}")


def _check_out_dir(out_dir):
    """Before any step: a run folder that is a file, or a folder where one of the run's files goes (found
    only when the first checkpoint or the final plot was written, after the work)."""
    if out_dir and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"train: out_dir {os.fspath(out_dir)!r} is a file; the run folder must be a "
                                 "folder (or a new name)")
    for name in (CHECKPOINT_NAME, METRICS_NAME, PLOT_NAME) if out_dir else ():
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            raise IsADirectoryError(f"train: {path} is a folder, but the run writes its {name} file there; "
                                    "move it away or choose another out_dir")


def _check_every_example_has_a_target(loader, what):
    """Refuse, before any step, an example whose labels leave nothing to predict: every label after
    the first is -100 (the model predicts positions 1..; a prompt cut at max_length leaves no answer).
    It adds nothing to the loss, and a batch made only of such examples has a mean over zero tokens:
    NaN, as in torch, which would stop the run blaming the learning rate."""
    if loader.items is None or isinstance(loader.items, np.ndarray):  # (packed rows: every token is a target)
        return
    empty = [i for i, (_, labels) in enumerate(loader.items)
             if not np.any(np.asarray(labels)[1:] != IGNORE_INDEX)]
    if empty:
        raise ValueError(f"{what} example {empty[0]} has no token to learn from: its labels after the first "
                         f"are all {IGNORE_INDEX} (a prompt truncated past its answer?); {len(empty)} of "
                         f"{len(loader.items)} examples are so. Drop them or raise the maximum length")


def _check_divergence(step, loss, losses, stop):
    """Stop when the loss blew up: above ``BLOW_UP_FACTOR`` times the run's first loss and at least
    ``BLOW_UP_NATS`` above it."""
    if not losses:
        return
    first = losses[0]
    if loss > max(BLOW_UP_FACTOR * first, first + BLOW_UP_NATS):
        stop(step, f"the loss {loss:.4g} blew up (the run started at {first:.4g}): the run diverged",
             TrainingDivergedError)


def _use_new_learning_rate(scheduler, lr, step):
    """On resume, the ``lr`` asked for now replaces the checkpoint's peak learning rate (to continue
    a diverging run more gently); the schedule's shape and position are kept."""
    if all(base == lr for base in scheduler.base_lrs):
        return
    old = scheduler.base_lrs[0]
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"] = lr
    # (the schedule is a LambdaLR: its lr at this step is the new peak times the factor)
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
    print(f"resume: peak learning rate {old:g} -> {lr:g} from step {step + 1} on", file=sys.stderr,
          flush=True)


# ----------------------------------------------------------------------------------------------
# `minilora train`
# ----------------------------------------------------------------------------------------------
# Settings measured on the shipped base with batch 16 (eval exact match reached: qa 98% LoRA r=8,
# 97% full; reverse 95% LoRA r=8, 97% full).
# LoRA's update starts at zero and moves through a small rank, so it takes a larger learning rate;
# `reverse` is a new operation (new attention patterns), so it needs more steps than `qa` (a new format).
RECOMMENDED = {
    ("qa", "lora"): dict(steps=300, lr=2e-3), ("qa", "full"): dict(steps=300, lr=5e-4),
    ("reverse", "lora"): dict(steps=600, lr=5e-3), ("reverse", "full"): dict(steps=600, lr=1e-3),
    ("corpus", "lora"): dict(steps=300, lr=2e-3), ("corpus", "full"): dict(steps=300, lr=5e-4),
}
RECOMMENDED.update({(task, "adalora"): dict(settings) for (task, method), settings in list(RECOMMENDED.items())
                    if method == "lora"})  # AdaLoRA trains like LoRA

_EPILOG = """examples:
  minilora train                                # LoRA (r=8, all linear layers) on the `qa` task
  minilora train --task reverse --r 4           # the new-operation task, smaller rank
  minilora train --method full --out runs/full  # full fine-tuning, for comparison
  minilora train --out runs/qa --resume         # continue an interrupted run from its checkpoint

tasks (all built in, see minilora/data.py):
  qa      answer questions about the base model's invented world in a new Q/A format
          ("Q: Where does Dan Vend live?\\nA:" -> " Stun"); evaluation asks about people never
          seen in fine-tuning, so the answers must come from pretraining
  reverse a new operation: say a list of words backwards ("Reverse: cup kite bread" ->
          "bread kite cup"); the base model can copy lists but has never reversed one
  corpus  keep pretraining on the base corpus (loss only)

The run folder gets metrics.jsonl, loss.png, checkpoint.npz (for --resume) and the result:
adapter/ (PEFT format: adapter_config.json + adapter_model.safetensors) or model/ (full model)."""


def add_cli_arguments(parser, name="train"):
    """The options of ``minilora train``."""
    import argparse

    from .cli import (device_name, dropout_probability, non_negative_float, non_negative_int, positive_float,
                      positive_int)
    parser.description = ("Fine-tune a model on a built-in task, with LoRA (the default: only small "
                          "low-rank matrices are trained) or full fine-tuning (every weight is trained), "
                          "and report exact-match accuracy before and after.")
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    what = parser.add_argument_group("what to train")
    what.add_argument("--task", default="qa", choices=["qa", "reverse", "corpus"],
                      help="the built-in task (default: qa; see below)")
    what.add_argument("--method", default="lora", choices=["lora", "adalora", "full"],
                      help="lora: freeze the model, train adapters (default); adalora: adapters whose ranks "
                           "move to the layers that need them; full: train every weight")
    what.add_argument("--model", default=None, metavar="DIR",
                      help="a Hugging Face-format Llama folder (config.json + model.safetensors); "
                           "default: the base model shipped with minilora")
    what.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                      help="the dtype the base model is loaded in, as from_pretrained(torch_dtype=...): with "
                           "bfloat16, LoRA trains float32 adapters and float32 AdamW state beside bfloat16 "
                           "weights (PEFT's autocast_adapter_dtype=True); --method full trains the bfloat16 "
                           "weights themselves, as torch does (default: float32). Not Trainer's --bf16, which "
                           "keeps float32 weights and autocasts the compute: train() does not autocast "
                           "(minilora.autocast is there for a loop of your own)")
    lora = parser.add_argument_group("LoRA (with --method lora)")
    lora.add_argument("--r", "--rank", dest="r", type=positive_int, default=8,
                      help="rank of the update B A, PEFT's name (--rank is the same; default: 8)")
    lora.add_argument("--lora-alpha", type=positive_float, default=None,
                      help="scale alpha; the update is multiplied by alpha/r (default: 2*r)")
    lora.add_argument("--lora-dropout", type=dropout_probability, default=0.0,
                      help="dropout on the LoRA input (default: 0)")
    lora.add_argument("--target-modules", default="all-linear",
                      help="comma-separated layer names (e.g. q_proj,v_proj) or all-linear (default)")
    ada = parser.add_argument_group("AdaLoRA (with --method adalora; --lora-alpha, --lora-dropout and "
                                    "--target-modules apply too)")
    ada.add_argument("--init-r", type=positive_int, default=12, help="starting rank of every layer (default: 12)")
    ada.add_argument("--target-r", type=positive_int, default=8,
                     help="average rank per layer at the end of the budget schedule (default: 8)")
    ada.add_argument("--tinit", type=non_negative_int, default=0, help="warm-up steps before ranks move (default: 0)")
    ada.add_argument("--tfinal", type=non_negative_int, default=0,
                     help="final steps with the ranks fixed (default: 0)")
    ada.add_argument("--orth-reg-weight", type=non_negative_float, default=0.5,
                     help="weight of the orthogonal regulariser in the loss (default: 0.5)")
    opt = parser.add_argument_group("optimization")
    opt.add_argument("--steps", type=positive_int, default=None,
                     help="optimizer steps (default: 300 for qa, 600 for reverse)")
    opt.add_argument("--lr", type=positive_float, default=None,
                     help="peak learning rate (default: qa 2e-3 with LoRA, 5e-4 full; "
                          "reverse 5e-3 with LoRA, 1e-3 full)")
    opt.add_argument("--batch-size", type=positive_int, default=16,
                     help="sequences per micro-batch (default: 16); under mpirun -n N, split over the N "
                          "processes, so the run is the same one with any N")
    opt.add_argument("--grad-accum", type=positive_int, default=1,
                     help="micro-batches per step: effective batch = batch-size x grad-accum (default: 1)")
    opt.add_argument("--warmup-steps", type=non_negative_int, default=20,
                     help="linear warmup before the cosine decay (default: 20)")
    opt.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="AdamW weight decay (default: 0)")
    opt.add_argument("--clip-norm", type=non_negative_float, default=1.0,
                     help="gradient-norm clipping (default: 1; 0: no clipping)")
    opt.add_argument("--gradient-checkpointing", action="store_true",
                     help="recompute each layer's activations in backward instead of keeping them: "
                          "much less memory, about a third more compute per step")
    opt.add_argument("--seed", type=non_negative_int, default=0,
                     help="seeds data order, LoRA init, dropout (default: 0)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", default=None, metavar="DIR",
                     help="run folder (default: runs/<task>-<method>)")
    run.add_argument("--resume", action="store_true",
                     help="continue from DIR/checkpoint.npz (same model, adapter and seed options as the "
                          "interrupted run; a different --lr, --steps, --batch-size, --grad-accum, "
                          "--warmup-steps, --weight-decay, --clip-norm or --lora-dropout applies from there "
                          "on, and is said). A run killed after its last step gets its adapter/model written")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in a DIR that holds an earlier run, replacing its checkpoint and "
                          "metrics (without it, such a DIR is refused: --resume continues it)")
    run.add_argument("--eval-every", type=non_negative_int, default=100,
                     help="evaluate and checkpoint every N steps (and at the end; 0: only at the end; "
                          "default: 100)")
    run.add_argument("--eval-n", type=positive_int, default=None,
                     help="evaluate on the first N eval examples (default: all)")
    run.add_argument("--device", type=device_name, default=None, help="cpu, emu or cuda (default: cpu)")
    run.add_argument("--no-progress", action="store_true", help="print lines instead of a progress bar")
    run.add_argument("--dist-timeout", type=positive_float, default=1800, metavar="SECONDS",
                     help="under mpirun: how long a rank waits for the others in a collective before the "
                          "job stops (a rank that failed or hangs; default: 1800)")


def _load_model(args):
    from .models import AutoModelForCausalLM, load_base
    if args.model is None:
        return load_base(dtype=args.dtype, device=args.device)
    return AutoModelForCausalLM.from_pretrained(args.model, dtype=args.dtype, device=args.device)  # (Llama, Qwen2, ...)


# The options that make a run what it is: --resume with other values would mix two runs.
SAME_RUN_OPTIONS = ("method", "task", "model", "seed", "r", "lora_alpha", "target_modules", "dtype",
                    "init_r", "target_r", "tinit", "tfinal", "orth_reg_weight")
_ADAPTER_OPTIONS = {"lora": ("r", "lora_alpha", "target_modules"),
                    "adalora": ("init_r", "target_r", "tinit", "tfinal", "orth_reg_weight", "lora_alpha",
                                "target_modules")}
# Options --resume may change (they apply from the resumed step on), said aloud when they do: a flag
# forgotten on the resume line (--grad-accum 4 at the start, none at the resume) is a different run.
# (--lr has its own line: without --lr a resume keeps the checkpoint's.)
CHANGEABLE_RUN_OPTIONS = ("steps", "batch_size", "grad_accum", "warmup_steps", "weight_decay", "clip_norm",
                          "lora_dropout")
RUN_OPTIONS_NAME = "run.json"


def _run_options(args):
    options = {name: getattr(args, name, None) for name in SAME_RUN_OPTIONS + CHANGEABLE_RUN_OPTIONS}
    method = options["method"]
    if options["lora_alpha"] is None and method in _ADAPTER_OPTIONS:  # the default, as the number it became
        options["lora_alpha"] = 2 * options["r" if method == "lora" else "init_r"]
    kept = _ADAPTER_OPTIONS.get(method, ())
    for name in {n for names in _ADAPTER_OPTIONS.values() for n in names} - set(kept):
        options.pop(name)
    return options


def _check_same_run(args, out, write=True):
    """A fresh run writes its defining options to ``run.json``; ``--resume`` must give the same ones."""
    from .checkpoint import load_json, save_json
    from .cli import UsageError
    path = os.path.join(out, RUN_OPTIONS_NAME)
    options = _run_options(args)
    if not args.resume or not os.path.isfile(path):
        if write:
            os.makedirs(out, exist_ok=True)
            save_json(options, path)
        return
    try:
        before = load_json(path)
    except OSError as exc:  # (InvalidJSONError: the message names the file)
        raise UsageError(f"--resume: {exc}") from None
    if not isinstance(before, dict):
        raise UsageError(f"--resume: {path} must be a JSON object, got a {type(before).__name__}")
    before.setdefault("dtype", "float32")  # a run.json from before --dtype: such runs were float32
    if before.get("method") == "adalora":  # a run.json from before AdaLoRA runs could resume kept no options
        for name in _ADAPTER_OPTIONS["adalora"]:
            before.setdefault(name, options.get(name))
    changed = [k for k in SAME_RUN_OPTIONS if k in before or k in options if before.get(k) != options.get(k)]
    if changed:
        flag = changed[0].replace("_", "-")
        raise UsageError(f"--resume: the run in {out} was started with --{flag} {before.get(changed[0])}, not "
                         f"--{flag} {options.get(changed[0])}"
                         + (f" (also different: {', '.join(changed[1:])})" if changed[1:] else "")
                         + "; resume with the run's own options, or start a new run with another --out")
    _say_changed_options(before, options)
    if write:  # the values in effect from here on: a second resume compares with these
        save_json({**before, **{k: options[k] for k in CHANGEABLE_RUN_OPTIONS}}, path)


def _say_changed_options(before, options):
    for name in CHANGEABLE_RUN_OPTIONS:
        if name in before and before[name] != options[name]:  # (a run.json from before these were kept has none)
            flag = "--" + name.replace("_", "-")
            print(f"resume: {flag} {_option_text(options[name])}, but the run was started with {flag} "
                  f"{_option_text(before[name])}: the steps from here on differ from an uninterrupted run's "
                  f"(give {flag} {_option_text(before[name])} to continue it exactly)", file=sys.stderr, flush=True)


def _option_text(value):
    return "(default)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _refuse_to_replace_a_run(args, out):
    """A fresh run into a folder holding an earlier one would silently replace its checkpoint and
    metrics: hours of work. Only ``--resume`` (continue it) or ``--overwrite`` (start over) may."""
    from .cli import UsageError
    if args.resume or args.overwrite:
        return
    found = [name for name in (CHECKPOINT_NAME, METRICS_NAME) if os.path.exists(os.path.join(out, name))]
    if found == [METRICS_NAME]:  # --resume has nothing to continue from
        raise UsageError(f"--out {out} holds a run that stopped before its first checkpoint ({METRICS_NAME} "
                         "only); start it over with --overwrite, or choose another --out")
    if found:
        raise UsageError(f"--out {out} already holds a run ({', '.join(found)}); continue it with --resume, "
                         f"start over with --overwrite (replacing it), or choose another --out")


def _checkpoint_step(out):
    return int(load_training_state(os.path.join(out, CHECKPOINT_NAME))["step"])


def _checkpoint_learning_rate(path):
    """The learning rate of the run checkpointed at ``path``; a missing or unreadable checkpoint is the
    user's to fix (``UsageError``), found before any work -- also when ``--lr`` makes the value unneeded."""
    from .cli import UsageError
    if not os.path.isfile(path):
        stopped_early = os.path.isfile(os.path.join(os.path.dirname(path), METRICS_NAME))
        raise UsageError(f"--resume, but there is no checkpoint at {path}"
                         + ("; the run stopped before its first checkpoint (every --eval-every steps): start it "
                            "over with --overwrite" if stopped_early else ""))
    try:
        return float(load_training_state(path)["scheduler"]["base_lrs"][0])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(f"--resume: {exc}") from None


def cli_main(args):
    """``minilora train``; under ``mpirun -n N`` every rank runs it and they train together: data
    parallelism, ``--batch-size`` split over the ranks, rank 0 writing and printing. A rank that fails
    ends the whole job (MPI_Abort) instead of leaving the others waiting."""
    from . import distributed
    world = distributed.launcher_world_size()
    if world == 1:
        return _train_command_alone(args)
    if not distributed.is_mpi_available():
        print(f"minilora train: started by an MPI launcher with {world} processes, but mpi4py is not "
              "installed: pip install 'minilora[distributed]'", file=sys.stderr)
        return 1
    if args.batch_size % world:
        from .cli import UsageError
        raise UsageError(f"--batch-size {args.batch_size} is the batch of a whole step, split over the "
                         f"{world} processes: it must be a multiple of {world}")
    distributed.init_process_group("nccl" if args.device == "cuda" else "mpi", timeout=args.dist_timeout)
    rank = distributed.get_rank()
    if "MINILORA_NUM_THREADS" not in os.environ:  # the machine's cores are shared by its ranks
        parallel.set_num_threads(max(1, parallel.num_threads() // distributed.local_world_size()))
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # one rank reports; errors still reach stderr
    from .cli import UsageError
    try:
        code = _train_command_alone(args, rank, world) if rank == 0 else _train_command(args, rank, world)
    except (UsageError, SystemExit):  # the same options on every rank: every rank stops with it
        raise
    except _AbandonedStep as stopped:
        _leave_the_job(rank, stopped.code)
    except BaseException as exc:  # noqa: B036 (a Ctrl-C too): the others must not wait for this rank
        import traceback
        print(f"minilora train: rank {rank} of {world} failed; stopping every rank", file=sys.stderr)
        traceback.print_exception(exc)
        sys.stderr.flush()
        distributed.abort(1)
    distributed.destroy_process_group()
    return code


class _AbandonedStep(Exception):
    """A rank of an MPI job stopped mid-step (``code``: its exit status): see ``_leave_the_job``."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


# How long a rank other than 0 stopped by SIGTERM waits before it leaves: rank 0, signalled with it (mpirun's Ctrl-C,
# a job scheduler), saves the last whole step meanwhile and ends the job first.
SAVE_GRACE_SECONDS = 2.0


def _leave_the_job(rank, code):
    """Leave an MPI job after a signal stopped this rank mid-step, at once (rank 0, its checkpoint written) or after
    ``SAVE_GRACE_SECONDS``. Not through MPI_Finalize: the abandoned step's collectives would keep it -- and a rank
    that was not signalled, waiting in them for this one -- until the timeout (30 minutes). The launcher then ends
    the ranks still there with SIGTERM, and rank 0, if it is one, saves its last whole step."""
    if rank != 0:
        time.sleep(SAVE_GRACE_SECONDS)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_folder(args):
    return args.out or os.path.join("runs", f"{args.task}-{args.method}")


def _train_command_alone(args, rank=0, world=1):
    """``_train_command`` by the process writing the run folder, which another process's run meanwhile may not
    write (``checkpoint.writing_alone``): its run.json, checkpoint and metrics lines would mix with this run's."""
    from .checkpoint import FolderInUseError
    from .cli import UsageError
    try:
        with writing_alone(_run_folder(args), "minilora train"):
            return _train_command(args, rank, world)
    except FolderInUseError as exc:
        raise UsageError(f"--out: {exc.strerror}") from None


def _train_command(args, rank=0, world=1):
    from . import data
    from .tokenizer import ByteTokenizer, vocab_mismatch

    method, task_name = args.method, args.task
    recommended = RECOMMENDED[task_name, method]
    steps = args.steps if args.steps is not None else recommended["steps"]
    lr = args.lr if args.lr is not None else recommended["lr"]
    out = _run_folder(args)
    from .cli import UsageError, output_folder
    if args.resume:
        saved_lr = _checkpoint_learning_rate(os.path.join(out, CHECKPOINT_NAME))
        lr = saved_lr if args.lr is None else lr  # no --lr: the interrupted run's own, not the recommended one
    output_folder(out, make=rank == 0)  # (rank 0 alone writes the run's files)
    try:  # (a folder named checkpoint.npz in it: found before any work, not after the first steps)
        _check_out_dir(out)
    except IsADirectoryError as exc:
        raise UsageError(f"--out: {str(exc).removeprefix('train: ')}") from None
    _refuse_to_replace_a_run(args, out)
    _check_same_run(args, out, write=rank == 0)
    tokenizer = ByteTokenizer()
    parallel.keep_freed_memory()  # the command owns its process: malloc may keep freed pages (10-20% faster)
    ml_random.manual_seed(args.seed)  # the LoRA init draws from it
    try:  # the folder named by --model: a missing or broken one is the user's to fix
        model = _load_model(args)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {args.model or '(the shipped base)'}: {exc}") from None
    problem = vocab_mismatch(tokenizer, model.config.vocab_size)
    if problem:  # minilora train feeds bytes: another tokenizer's model would learn on wrong tokens
        print(f"minilora train: --model {args.model}: {problem}", file=sys.stderr)
        return 2
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if method == "adalora" and world > 1:
        print("minilora train --method adalora: mpirun is not supported (the rank allocator runs in one "
              "process)", file=sys.stderr)
        return 2
    after_optimizer_step = None
    if method in ("lora", "adalora"):
        from .lora import AdaLoraConfig, LoraConfig, get_peft_model
        targets = args.target_modules if args.target_modules == "all-linear" else \
            [t.strip() for t in args.target_modules.split(",") if t.strip()]
        if not targets:
            print(f"minilora train: --target-modules {args.target_modules!r} names no module "
                  "(give e.g. q_proj,v_proj or all-linear)", file=sys.stderr)
            return 2
        if method == "lora":
            alpha = args.lora_alpha if args.lora_alpha is not None else 2 * args.r
            config = LoraConfig(r=args.r, lora_alpha=alpha,
                                lora_dropout=args.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
        else:  # AdaLoRA's update is scaled by alpha / init_r: the default 2 * init_r matches LoRA's 2
            alpha = args.lora_alpha if args.lora_alpha is not None else 2 * args.init_r
            try:
                config = AdaLoraConfig(init_r=args.init_r, target_r=args.target_r, tinit=args.tinit,
                                       tfinal=args.tfinal, orth_reg_weight=args.orth_reg_weight, total_step=steps,
                                       lora_alpha=alpha, lora_dropout=args.lora_dropout, target_modules=targets,
                                       task_type="CAUSAL_LM")
            except ValueError as exc:
                print(f"minilora train: {exc}", file=sys.stderr)
                return 2
            if args.target_r >= args.init_r:  # PEFT's allocator fails at its first masking step: say so now
                print(f"minilora train: --target-r ({args.target_r}) must be below --init-r ({args.init_r}): "
                      "AdaLoRA's rank budget falls from init_r to target_r", file=sys.stderr)
                return 2
        model = get_peft_model(model, config)
        model.print_trainable_parameters()
        if method == "adalora":
            after_optimizer_step = model.base_model.update_and_allocate

    if task_name == "corpus":
        train_data = data.corpus_loader(tokenizer, 2000, 128, args.batch_size, args.seed + 1)
        eval_data = data.corpus_loader(tokenizer, 100, 128, args.batch_size, seed=10_000)
        eval_fn = None
    else:
        train_data = data.task_loader(tokenizer, task_name, "train", args.batch_size, args.seed)
        eval_data = None

        def eval_fn(m):
            return {"accuracy": data.evaluate(m, tokenizer, task_name, args.eval_n).accuracy}
        if not args.resume:  # the base model was evaluated when the run started
            print(f"before: {data.evaluate(model, tokenizer, task_name, args.eval_n)}")
    if args.resume:
        print(f"resume: continuing {out} from step {_checkpoint_step(out)} of {steps}")
    trained = model
    if world > 1:
        from .nn.parallel import DistributedDataParallel
        trained = DistributedDataParallel(model)  # rank 0's LoRA init on every rank; gradients averaged
        train_data = DataLoader(train_data.items, args.batch_size // world, train_data.seed, train_data.pad_id,
                                train_data.shuffle, num_replicas=world, rank=rank)  # this rank's slice

    try:
        with warnings.catch_warnings():  # (_check_same_run said already which options differ, in the flags' names)
            warnings.filterwarnings("ignore", "resume from .* other batches", UserWarning)
            result = train(trained, train_data, eval_data, steps=steps, lr=lr, weight_decay=args.weight_decay,
                           warmup_steps=args.warmup_steps, grad_accum=args.grad_accum,
                           clip_norm=args.clip_norm, eval_every=args.eval_every, eval_fn=eval_fn,
                           save_every=args.eval_every, out_dir=out, seed=args.seed, resume=args.resume,
                           progress="lines" if args.no_progress else True,
                           after_optimizer_step=after_optimizer_step)
    except ResumeError as exc:  # checked before the first step: the run folder is the user's to fix
        raise UsageError(f"--resume: {exc}") from None
    except TrainingInterrupted as exc:
        code = _say_interrupted(exc, steps, quiet=rank != 0)
        if exc.abandoned and world > 1:
            raise _AbandonedStep(code) from None
        return code
    except TrainingDivergedError as exc:
        print(f"minilora train: {exc}", file=sys.stderr)
        if exc.checkpoint:
            print(f"to continue from step {exc.checkpoint_step} with a 10x lower learning rate, run the "
                  f"same command with --resume --lr {lr / 10:g}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"minilora train: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        return _cannot_write(exc, out)
    if result.steps_run == 0:
        print(f"resume: the checkpoint already holds all {steps} steps; writing what the interrupted "
              "run did not")
    print(f"trained {result.steps_run} steps in {result.train_seconds:.1f} s "
          f"({1000 * result.seconds_per_step:.0f} ms/step), final loss {result.final_loss:.4f}")
    if task_name != "corpus":
        print(f"after:  {data.evaluate(model, tokenizer, task_name, args.eval_n)}")
    print(f"base task (forgetting check): {data.evaluate(model, tokenizer, 'facts', args.eval_n)}")
    if method == "adalora":
        ranks = model.base_model.allocated_ranks()
        print(f"AdaLoRA ranks per layer (budget {args.target_r} on average): "
              + ", ".join(f"{path.replace('model.layers.', '')} {r}" for path, r in ranks.items()))
    saved = os.path.join(out, "model" if method == "full" else "adapter")
    if rank != 0:
        return 0
    try:
        if method != "full":
            model.save_pretrained(saved, overwrite=True)
        else:
            model.save_pretrained(saved)
    except OSError as exc:
        return _cannot_write(exc, out)
    print(f"saved {saved}; metrics in {os.path.join(out, METRICS_NAME)}")
    return 0


def _say_interrupted(exc, steps, quiet=False):
    """How far an interrupted run got and how to go on (``quiet``: a rank other than 0, which rank 0 speaks for);
    the shell's status for the signal (128 + its number)."""
    how = f"stopped by {exc.signal} (the step in progress abandoned)" if exc.abandoned else "interrupted"
    if exc.checkpoint is None and not quiet:
        print(f"minilora train: {how} after step {exc.step} of {steps}; no checkpoint holds it yet. To start "
              f"again, run the same command with --overwrite.", file=sys.stderr)
    elif not quiet:
        print(f"minilora train: {how} after step {exc.step} of {steps}; checkpoint {exc.checkpoint} holds it. To "
              f"continue, run the same command with --resume.", file=sys.stderr)
    return 128 + int(getattr(signal, exc.signal))


def _cannot_write(exc, out):
    """A full disk or a read-only folder stopped the run: one line naming the file (its OSError says which and
    that the old one is kept), and how to go on from the last checkpoint, which is whole. Other errors raise."""
    from .cli import DISK_ERRNOS
    if exc.errno not in DISK_ERRNOS:
        raise exc
    print(f"minilora train: {exc}", file=sys.stderr)
    path = os.path.join(out, CHECKPOINT_NAME)
    if os.path.isfile(path):
        print(f"the checkpoint {path} (step {_checkpoint_step(out)}) is whole: make room (or make the folder "
              "writable), then run the same command with --resume", file=sys.stderr)
    else:
        print("no checkpoint was written yet: make room (or make the folder writable), then run the same "
              "command with --overwrite", file=sys.stderr)
    return 1
