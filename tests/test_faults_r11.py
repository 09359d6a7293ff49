"""Faults and bad input, round 11: nothing a user saved is lost, every bad input named.

Saves: one that fails (a full disk, a read-only folder) names the file the user saves to and keeps what was
there; a killed save's leftover under a reused process id is removed; a folder that cannot be swapped (a
container's mount point) is saved into file by file; a PiSSA adapter converted to plain LoRA and SIGKILLed
mid-save leaves the old adapter whole, and the next save gives the uninterrupted one's bytes; a hotswap
refused half-way changes nothing. Runs: `minilora train` on a full disk says which file and how to go on; a
fresh run leaves no earlier checkpoint to resume; a run resumed into another folder keeps its evaluations,
one in a later epoch of persistent DataLoader workers resumes bit for bit, a newer checkpoint format is
refused, eval_fn's NumPy numbers are logged. Loads: a header longer than the file, generation_config.json and
config.json values of the wrong type (``"do_sample": "false"`` sampled), a state dict for another base named
as such.
"""
import errno
import json
import os
import signal
import struct
import sys

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import train as train_mod
from minilora.checkpoint import CheckpointError, load_file, read_header
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.train import save_training_state, train

from test_faults import byte_model_dir  # noqa: F401 (a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")

CONFIG = dict(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=2)


def tiny_model(seed=0):
    ml.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**CONFIG))


def snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    found = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return found


def leftovers(folder):
    return [entry for entry in os.listdir(folder) if ".minilora-" in entry]


# ==================================================================================================
# A save that fails names what the user saves to, not a temporary file (or nothing)
# ==================================================================================================
# Each writer saves version v of its file (or folder, TARGETS) into folder d.
WRITERS = {
    "model": lambda d, v: tiny_model(v).save_pretrained(os.path.join(d, "m")),
    "ml.save": lambda d, v: ml.save({"w": ml.full((3,), float(v))}, os.path.join(d, "w.safetensors")),
    "training state": lambda d, v: save_training_state(os.path.join(d, "c.npz"), {"step": v}),
}
TARGETS = {"model": "m", "ml.save": "w.safetensors", "training state": "c.npz"}  # (each writer's, in the folder)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_names_the_file_saved_to_and_keeps_the_old_one(tmp_path, monkeypatch, writer):
    # ENOSPC from a write carries no file name ("[Errno 28] No space left on device"): a run saving a
    # model, a checkpoint and a plot could not tell which one failed. fsync is where a full disk shows
    # for written data the kernel had accepted.
    save = WRITERS[writer]
    save(str(tmp_path), 1)
    target = str(tmp_path / TARGETS[writer])
    before = snapshot(tmp_path)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as caught:
        save(str(tmp_path), 2)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename is not None and caught.value.filename.startswith(target), caught.value
    assert ".minilora-" not in caught.value.filename and "unchanged" in str(caught.value)
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_read_only_folder_is_named_not_the_temporary_file(tmp_path, monkeypatch, writer):
    # A read-only or forbidden folder refuses the temporary file the save makes first: the system's error
    # named ".c.npz.minilora-1234-x8a2.tmp", a file the user never asked for. (Simulated: root may write
    # into a 0555 folder.)
    save = WRITERS[writer]
    save(str(tmp_path), 1)
    before = snapshot(tmp_path)
    real_open, real_mkdir = os.open, os.mkdir

    def refused(real):
        def call(path, *args, **kwargs):
            if ".minilora-" in os.fspath(path):
                raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
            return real(path, *args, **kwargs)
        return call
    monkeypatch.setattr(os, "open", refused(real_open))
    monkeypatch.setattr(os, "mkdir", refused(real_mkdir))
    with pytest.raises(OSError) as caught:
        save(str(tmp_path), 2)
    monkeypatch.undo()
    assert caught.value.errno == errno.EROFS
    assert caught.value.filename == str(tmp_path / TARGETS[writer])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_killed_saves_leftover_under_this_process_id_is_removed(tmp_path, writer):
    # A container restarted after a kill runs its first python process under the same small id as before: the
    # killed save's temporary copy (a whole model, on a disk that may be nearly full) carried this process's
    # id and was taken for a save in progress, so it was never removed.
    WRITERS[writer](str(tmp_path), 1)
    leftover = tmp_path / f".{TARGETS[writer]}.minilora-{os.getpid()}-killed.tmp"
    leftover.mkdir() if writer == "model" else leftover.write_bytes(b"half a file")
    WRITERS[writer](str(tmp_path), 2)
    assert leftovers(tmp_path) == []


def test_a_save_into_a_mount_point_replaces_its_files(tmp_path, monkeypatch):
    # A container's volume (docker run -v $PWD/out:/out) is a mount point: the folder cannot be renamed (EBUSY),
    # so a save into it, swapping a sibling folder in, failed where transformers and PEFT save. (Simulated: the
    # folder reported as a mount point, whose renames the kernel refuses.)
    from minilora import checkpoint
    from minilora.lora import LoraConfig, PeftModel, get_peft_model
    volume = str(tmp_path / "out")
    os.makedirs(volume)
    real_ismount, real_rename, real_exchange = os.path.ismount, os.rename, checkpoint._exchange

    def busy(real):
        def call(a, b, *args, **kwargs):
            if volume in (os.path.abspath(a), os.path.abspath(b)):
                raise OSError(errno.EBUSY, "Device or resource busy", a)
            return real(a, b, *args, **kwargs)
        return call
    monkeypatch.setattr(os.path, "ismount", lambda p: os.path.abspath(p) == volume or real_ismount(p))
    monkeypatch.setattr(os, "rename", busy(real_rename))
    monkeypatch.setattr(checkpoint, "_exchange", busy(real_exchange))
    model = tiny_model(1)
    model.save_pretrained(volume, max_shard_size=3000)  # shards, then one file: the old shards go
    model.save_pretrained(volume)
    assert sorted(os.listdir(volume)) == ["config.json", "generation_config.json", "model.safetensors"]  # (as there)
    loaded = LlamaForCausalLM.from_pretrained(volume)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.state_dict().values(),
                                                                     loaded.state_dict().values()))
    adapter = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    adapter.save_pretrained(volume)  # beside the model: its files are kept
    assert {"config.json", "model.safetensors", "adapter_config.json", "adapter_model.safetensors"} <= \
        set(os.listdir(volume))
    PeftModel.from_pretrained(tiny_model(), volume)
    assert [e for e in os.listdir(volume) if ".minilora-" in e] == []


def test_a_full_disk_under_the_metrics_log_names_it(tmp_path, monkeypatch):
    real_open = open

    class FullDisk:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *args, **kwargs):
        return FullDisk() if "a" in mode else real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(train_mod, "open", fake_open, raising=False)
    rows = np.array([[(i + j) % 13 + 3 for j in range(8)] for i in range(8)], dtype=np.int64)
    with pytest.raises(OSError) as caught:
        train(tiny_model(), rows, steps=2, batch_size=4, out_dir=str(tmp_path), progress=False, plot=False)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "metrics.jsonl") and "step 1" in str(caught.value)


# ==================================================================================================
# PiSSA converted to plain LoRA, killed mid-save: the old adapter stays whole
# ==================================================================================================
CONVERT_CHILD = """
import os, shutil, signal, sys
import numpy as np, minilora as ml
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.lora import LoraConfig, get_peft_model, inits
work, kill = sys.argv[1], sys.argv[2] == "kill"
initial, out, reference = (os.path.join(work, name) for name in ("initial", "out", "reference"))
ml.manual_seed(0)
model = get_peft_model(LlamaForCausalLM(LlamaConfig(**{config!r})),
                       LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa"))
model.peft_config["default"].init_lora_weights = True
model.save_pretrained(initial)
for name, p in model.named_parameters():  # "training"
    if "lora_" in name:
        p._array += 0.05
if not kill:  # the same conversion, uninterrupted: into out (resumed after the kill) and a reference folder
    for folder in (out, reference):
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=initial)
    sys.exit(0)
model.save_pretrained(out)  # what the user has there: the trained adapter, rank 2, for the PiSSA base
shutil.copytree(out, os.path.join(work, "before"))
real = inits.save_json

def save_json(obj, path):  # the kill falls between the converted weights and their config
    if os.path.basename(os.path.dirname(os.path.abspath(path))) != "initial":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, path)
inits.save_json = save_json
model.save_pretrained(out, path_initial_model_for_weight_conversion=initial)
"""


@posix_only
def test_a_pissa_conversion_killed_mid_save_leaves_the_old_adapter_whole(tmp_path):
    # Before, the rank-2r weights replaced the old file and the kill left the old rank-r config beside them:
    # a folder that no longer loads (size mismatch), where the user had a working adapter.
    code = CONVERT_CHILD.format(config=CONFIG)
    killed = background_runs.run_process([sys.executable, "-c", code, str(tmp_path), "kill"], env=ENV, cwd=ROOT,
                                         timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = tmp_path / "out"
    assert snapshot(out) == snapshot(tmp_path / "before")  # the old adapter, whole
    config = json.loads((out / "adapter_config.json").read_text())
    assert load_file(str(out / "adapter_model.safetensors"))[
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape[0] == config["r"] == 2
    done = background_runs.run_process([sys.executable, "-c", code, str(tmp_path), "again"], env=ENV, cwd=ROOT,
                                       timeout=120)
    assert done.returncode == 0, done.stderr
    assert snapshot(out) == snapshot(tmp_path / "reference")  # as if it had never been killed
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert leftovers(tmp_path) == []  # the killed save's temporary folder was cleared by the next one


# ==================================================================================================
# A run resumed into another folder keeps its evaluations (the result, and so the loss plot)
# ==================================================================================================
def test_a_run_resumed_in_another_folder_keeps_its_evaluations(tmp_path):
    # resume=PATH continues a run in a new out_dir (the checkpoint copied to faster disk, a fork of the run):
    # the evaluations before the checkpoint came from the old folder's metrics log, so the result (and the
    # loss plot's eval points) started at the resumed step. The checkpoint now holds them, as its losses.
    rows = np.array([[(i + j) % 13 + 3 for j in range(8)] for i in range(16)], dtype=np.int64)
    options = dict(steps=4, batch_size=4, lr=1e-2, eval_every=1, save_every=2, progress=False, plot=False)
    reference = train(tiny_model(), rows, rows[:4], out_dir=str(tmp_path / "reference"), **options)

    def killed_at_step_3(step):
        if step == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), rows, rows[:4], out_dir=str(tmp_path / "first"), after_optimizer_step=killed_at_step_3,
              **options)
    resumed = train(tiny_model(3), rows, rows[:4], out_dir=str(tmp_path / "second"),
                    resume=str(tmp_path / "first" / "checkpoint.npz"), **options)
    assert resumed.steps_run == 2
    assert resumed.evals == reference.evals and [e["step"] for e in resumed.evals] == [1, 2, 3, 4]
    assert resumed.losses == reference.losses


# ==================================================================================================
# Files read: the header's own numbers, JSON values of the wrong type
# ==================================================================================================
def test_a_header_longer_than_the_file_says_how_many_bytes_follow(tmp_path):
    path = tmp_path / "w.safetensors"
    ml.save({"w": ml.ones(4)}, path)
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data)) + data[8:])  # the length of the whole file, not the header
    with pytest.raises(CheckpointError) as caught:
        read_header(str(path))
    # (it said "the header claims 88 bytes but the file has only 88")
    assert f"claims {len(data)} bytes, but only {len(data) - 8} follow" in str(caught.value)


def _with_generation_config(tmp_path, options):
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder)
    (folder / "generation_config.json").write_text(json.dumps(options))
    return folder


# (the option, a value of the wrong type, one of the right type)
@pytest.mark.parametrize("name, wrong, right", [
    ("do_sample", "false", False),  # sampled: a non-empty string is true
    ("eos_token_id", "1", [1, 2]),  # never matched a token: generation never stopped at it
    ("max_length", 5.5, 5),
    ("max_new_tokens", "5", 5),  # "'<=' not supported between instances of 'str' and 'int'"
    ("pad_token_id", [1], 1),  # "'<' not supported between instances of 'list' and 'int'"
    ("temperature", "0.5", 1),  # "`temperature` (=0.5) has to be a strictly positive float"
])
def test_generation_config_json_of_the_wrong_type_is_named(tmp_path, name, wrong, right):
    extra = {"do_sample": True} if name == "temperature" else {}
    folder = _with_generation_config(tmp_path, {name: wrong, **extra})
    file = str(folder / "generation_config.json")
    for load in (LlamaForCausalLM.from_pretrained, ml.nn.generation.GenerationConfig.from_pretrained):
        with pytest.raises(TypeError) as caught:
            load(str(folder))
        assert file in str(caught.value) and f"`{name}`" in str(caught.value), caught.value
    (folder / "generation_config.json").write_text(json.dumps({name: right, **extra}))
    assert getattr(LlamaForCausalLM.from_pretrained(str(folder)).generation_config, name) == right


def test_config_json_attention_dropout_as_a_string_is_refused(tmp_path):
    # It was read with float(): "0.1" trained with dropout 0.1, where transformers' strict config refuses it.
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attention_dropout": "0.1"}))
    with pytest.raises(ValueError, match="config.json: config field 'attention_dropout' is '0.1'"):
        LlamaForCausalLM.from_pretrained(str(folder))
    transformers = pytest.importorskip("transformers")
    errors = pytest.importorskip("huggingface_hub.errors")  # (transformers 5's strict config raises hub's error)
    with pytest.raises((TypeError, getattr(errors, "StrictDataclassFieldValidationError", TypeError)),
                       match="attention_dropout"):
        transformers.LlamaConfig.from_pretrained(str(folder))


def test_config_json_pad_token_past_the_vocabulary_names_the_file(tmp_path):
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "pad_token_id": 99}))
    with pytest.raises(AssertionError) as caught:  # torch's nn.Embedding asserts, as minilora's
        LlamaForCausalLM.from_pretrained(str(folder))
    assert str(folder / "config.json") in str(caught.value) and "Padding_idx must be within num_embeddings" in \
        str(caught.value)


def test_a_fresh_run_killed_before_its_first_checkpoint_leaves_no_earlier_run_to_resume(tmp_path):
    # A new run in a folder holding an earlier one (minilora train --overwrite, or train() without resume)
    # emptied the metrics log at once but left the earlier checkpoint until its own first one: killed before
    # that, a resume continued the earlier run under the new run's name -- here it returned at once with the
    # earlier run's final weights as the new run's result.
    rows = np.array([[(i + j) % 13 + 3 for j in range(8)] for i in range(16)], dtype=np.int64)
    options = dict(steps=4, batch_size=4, lr=1e-2, save_every=2, out_dir=str(tmp_path), progress=False, plot=False)
    train(tiny_model(), rows, **options)

    def killed_at_step_1(step):
        if step == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), rows, seed=1, after_optimizer_step=killed_at_step_1, **options)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_model(), rows, seed=1, resume=True, **options)


def test_minilora_train_on_a_full_disk_names_the_file_and_how_to_go_on(byte_model_dir, tmp_path, capsys, monkeypatch):
    # Was a traceback ending in "OSError: [Errno 28] No space left on device". The second checkpoint meets
    # the full disk; the first is whole, and --resume goes on from it once there is room.
    from minilora.cli import main as cli
    out = str(tmp_path / "run")
    argv = ["train", "--model", byte_model_dir, "--out", out, "--steps", "4", "--eval-every", "2", "--eval-n", "1",
            "--batch-size", "4", "--r", "2", "--no-progress"]
    real_save, calls = train_mod.save_training_state, []

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left")

    def save_on_a_disk_that_fills(path, state):
        calls.append(path)
        if len(calls) == 2:
            monkeypatch.setattr(os, "fsync", full_disk)
        return real_save(path, state)
    monkeypatch.setattr(train_mod, "save_training_state", save_on_a_disk_that_fills)
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "No space left; the save was abandoned" in err
    assert f"{os.path.join(out, 'checkpoint.npz')} (step 2) is whole" in err and "--resume" in err
    monkeypatch.undo()
    assert cli(argv + ["--resume"]) == 0
    assert os.path.isfile(os.path.join(out, "adapter", "adapter_model.safetensors"))


def test_a_hotswap_refused_half_way_leaves_the_served_adapter_as_it_was(tmp_path):
    # A server swaps adapters in place (peft.utils.hotswap); a swap it refuses must leave the adapter it
    # serves. A DoRA layer the new adapter lacks is refused, but only when the loop reached it: the layers
    # before it had taken the new adapter's scaling (PEFT's loop mutates as it goes, too).
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.lora.hotswap import hotswap_adapter
    served = get_peft_model(tiny_model(), LoraConfig(r=2, use_dora=True, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    other = get_peft_model(tiny_model(), LoraConfig(r=2, lora_alpha=5, use_dora=True, target_modules=["q_proj"],
                                                    init_lora_weights=False))
    other.save_pretrained(str(tmp_path / "other"))
    ids = ml.tensor([[3, 4, 5, 6]])
    with ml.no_grad():
        before = served(ids).logits.numpy()
    weights = {k: v.numpy().copy() for k, v in served.state_dict().items()}
    scalings = {name: dict(m.scaling) for name, m in served.named_modules() if isinstance(getattr(m, "scaling", None), dict)}
    with pytest.raises(NotImplementedError, match="no DoRA weights for .*v_proj"):
        hotswap_adapter(served, str(tmp_path / "other"), "default")
    assert {name: dict(m.scaling) for name, m in served.named_modules()
            if isinstance(getattr(m, "scaling", None), dict)} == scalings  # (attention's scaling: a number)
    assert all(np.array_equal(v.numpy(), weights[k]) for k, v in served.state_dict().items())
    with ml.no_grad():
        np.testing.assert_array_equal(served(ids).logits.numpy(), before)


class NoisyRows:
    """A map-style dataset drawing in __getitem__ (a random shift, as an augmentation draws): in a DataLoader
    worker, from that worker's generator."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        shift = int(ml.randint(0, 5, (1,)).item())
        return ml.tensor([(i + j + shift) % 13 + 3 for j in range(8)])


def test_persistent_workers_resume_bit_for_bit_in_a_later_epoch(tmp_path):
    # persistent_workers=True keeps the workers (and their generators) from epoch to epoch, as torch's; a run
    # resumed in its second epoch made new workers, seeded afresh: other shifts, other losses from there on.
    from minilora.utils.data import DataLoader as TorchDataLoader

    def loader():
        return TorchDataLoader(NoisyRows(), batch_size=4, shuffle=True, num_workers=2, persistent_workers=True)

    options = dict(steps=6, lr=1e-2, save_every=1, progress=False, plot=False)
    reference = train(tiny_model(), loader(), out_dir=str(tmp_path / "reference"), **options)

    def killed_at_step_4(step):  # (2 batches an epoch: the last checkpoint is step 3's, in epoch 2)
        if step == 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), loader(), out_dir=str(tmp_path / "run"), after_optimizer_step=killed_at_step_4, **options)
    resumed = train(tiny_model(), loader(), out_dir=str(tmp_path / "run"), resume=True, **options)
    assert resumed.steps_run == 3 and resumed.losses == reference.losses


def test_a_checkpoint_in_a_newer_format_is_refused_by_name(tmp_path):
    # The training state says which layout it is written in: a later minilora's checkpoint (format 2) was read
    # as this one's, keys whose meaning changed taken at their old meaning, without a word.
    from minilora.train import ResumeError, load_training_state
    rows = np.array([[(i + j) % 13 + 3 for j in range(8)] for i in range(8)], dtype=np.int64)
    options = dict(steps=2, batch_size=4, out_dir=str(tmp_path), progress=False, plot=False)
    train(tiny_model(), rows, **options)
    path = str(tmp_path / "checkpoint.npz")
    state = load_training_state(path)
    assert state["format"] == 1
    save_training_state(path, {**state, "format": 2})
    with pytest.raises(ResumeError, match="format 2 by a newer minilora; this one reads format 1"):
        train(tiny_model(), rows, resume=True, **{**options, "steps": 4})
    del state["format"]  # as minilora wrote them before: format 1
    save_training_state(path, state)
    assert train(tiny_model(), rows, resume=True, **{**options, "steps": 4}).steps_run == 2


def test_a_state_dict_for_another_base_is_named_as_such_not_as_a_file():
    # set_peft_model_state_dict(model, state) with tensors of another shape said "adapter file: size mismatch":
    # there was no file. Nothing is copied before the error (the model keeps its adapter).
    from minilora.lora import AdapterMismatchError, LoraConfig, get_peft_model, set_peft_model_state_dict
    model = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    state = {k.replace(".default", ""): ml.zeros(3, 3) if "lora_B" in k else v
             for k, v in model.state_dict().items() if "lora_" in k}
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterMismatchError) as caught:
        set_peft_model_state_dict(model, state)
    assert str(caught.value).startswith("Error(s) in loading state_dict for PeftModel:\n\tsize mismatch for "), \
        caught.value  # (torch's words, as PEFT's; where the tensors came from is the note)
    assert caught.value.__notes__[0].startswith("peft_model_state_dict: "), caught.value.__notes__
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())


def test_eval_fn_numpy_and_tensor_numbers_are_logged_as_numbers(tmp_path):
    # np.mean over float32 gives a NumPy float32, a count an int64, a metric left a tensor: each stopped the run
    # at its first evaluation ("Object of type float32 is not JSON serializable", from the metrics log). The
    # Hugging Face Trainer makes them Python numbers (denumpify_detensorize); so does train().
    rows = np.array([[(i + j) % 13 + 3 for j in range(8)] for i in range(8)], dtype=np.int64)

    def metrics(model):
        return {"accuracy": np.float32(0.5), "correct": np.int64(3), "loss": ml.tensor(0.25),
                "per_class": [np.float64(1)]}
    options = dict(steps=1, batch_size=4, out_dir=str(tmp_path), progress=False, plot=False)
    result = train(tiny_model(), rows, eval_fn=metrics, **options)
    assert result.evals[-1] == {"kind": "eval", "step": 1, "accuracy": 0.5, "correct": 3, "loss": 0.25,
                                "per_class": [1.0]}
    assert type(result.evals[-1]["correct"]) is int
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["accuracy"] == 0.5
    with pytest.raises(TypeError, match="eval_fn's 'scores' is a ndarray, which the metrics log"):
        train(tiny_model(), rows, eval_fn=lambda m: {"scores": np.zeros(3)}, **{**options, "out_dir": None})
