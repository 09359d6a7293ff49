"""Faults and bad input, round 8: nothing a user saved is lost, every bad input named.

Saves that fail between their renames, saves through a symbolic link or over a private file, files that
are torch.save pickles where safetensors is expected, adapters whose targets match nothing (PEFT's
NoMatchingPeftModuleError), and training on torch's DataLoader: a run stopped by an exception from a
callback, or killed, resumes to the same weights bit for bit with dropout and shuffling on.
"""
import errno
import os
import pickle
import signal
import sys
import zipfile

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import checkpoint
from minilora.checkpoint import CheckpointError, atomic_write, load_file, save_file
from minilora.lora import LoraConfig, NoMatchingPeftModuleError, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.train import (ResumeError, TrainingDivergedError, load_training_state,
                            save_training_state, train)
from minilora.utils.data import DataLoader, TensorDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions, symlinks and signals")


def tiny_model(seed=0):
    ml.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=32, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=2))


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


def leftovers(folder):
    # (a swap's lock file whose removal failed is left: empty, and taken and removed by the next save)
    return [e for e in os.listdir(folder) if ".minilora-" in e and not e.endswith(".minilora-lock")]


# ==================================================================================================
# Writers: the old files stay whole whatever fails, links and permissions are kept
# ==================================================================================================
def test_a_folder_swap_cut_between_its_renames_puts_the_old_folder_back_at_once(tmp_path, monkeypatch):
    # On a filesystem without an atomic exchange the swap is two renames; a full disk (or a Ctrl-C) at
    # the second must not leave the model folder missing until some later save in another process.
    tiny_model(0).save_pretrained(tmp_path / "m")
    monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:  # the new folder into place
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        tiny_model(1).save_pretrained(tmp_path / "m")
    monkeypatch.setattr(os, "rename", real_rename)
    assert sorted(os.listdir(tmp_path)) == ["m"]
    assert same_weights(LlamaForCausalLM.from_pretrained(tmp_path / "m"), tiny_model(0))


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_replace_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch, error):
    path = tmp_path / "w.safetensors"
    ml.save({"a": ml.ones(3)}, path)

    def replace(a, b):
        raise error

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(type(error)):
        ml.save({"a": ml.zeros(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["w.safetensors"]
    assert ml.load(path)["a"].tolist() == [1.0, 1.0, 1.0]


@posix_only
def test_a_save_onto_a_symbolic_link_writes_the_file_it_points_to(tmp_path):
    # As torch.save (open(path, "wb") follows the link): the link stays, the file behind it changes.
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "best.safetensors"
    ml.save({"a": ml.ones(2)}, target)
    os.symlink(target, tmp_path / "latest.safetensors")
    ml.save({"a": ml.zeros(2)}, tmp_path / "latest.safetensors")
    assert os.path.islink(tmp_path / "latest.safetensors")
    assert ml.load(target)["a"].tolist() == [0.0, 0.0]
    assert leftovers(tmp_path / "runs") == [] and leftovers(tmp_path) == []


@posix_only
def test_a_save_over_a_private_file_keeps_it_private(tmp_path):
    # torch.save over an existing file keeps its permissions; replacing it must not widen a 0600 file
    path = tmp_path / "w.safetensors"
    ml.save({"a": ml.ones(2)}, path)
    os.chmod(path, 0o600)
    ml.save({"a": ml.zeros(2)}, path)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder)
    os.chmod(folder, 0o700)
    tiny_model(1).save_pretrained(folder)
    assert oct(os.stat(folder).st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize("save", [lambda p: tiny_model().save_pretrained(p),
                                  lambda p: tiny_model().config.save_pretrained(p)],
                         ids=["model", "config"])
def test_save_pretrained_onto_a_file_is_named_and_leaves_it(tmp_path, save):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(ValueError, match="needs a directory.*is a file"):
        save(str(path))
    assert path.read_text() == "keep me" and os.listdir(tmp_path) == ["notes.txt"]


def test_writing_under_a_file_or_onto_a_folder_names_it(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"f is a file, not a folder"):
        save_file({"a": np.ones(2, np.float32)}, tmp_path / "f" / "sub" / "w.safetensors")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        with atomic_write(tmp_path / "d") as f:
            f.write(b"x")
    assert sorted(os.listdir(tmp_path)) == ["d", "f"] and os.listdir(tmp_path / "d") == []


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    found = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def lora_on(model, r):
    return get_peft_model(model, LoraConfig(r=r, target_modules=["q_proj"]))


# Each writer: (save the first version, save the second). The second save fails at each of its system
# calls in turn; every time the folder must hold the first version, whole, and nothing else.
def _writers():
    models = tiny_model(0), tiny_model(1)
    adapters = lora_on(tiny_model(0), 2), lora_on(tiny_model(1), 2)
    tokenizers = _tokenizer("right"), _tokenizer("left")
    return {
        "model": [lambda p, m=m: m.save_pretrained(p) for m in models],
        "sharded": [lambda p, m=m, n=n: m.save_pretrained(p, max_shard_size=n) for m, n in zip(models, (9000, 6000))],
        "adapter": [lambda p, m=m: m.save_pretrained(p) for m in adapters],
        "tokenizer": [lambda p, t=t: t.save_pretrained(p) for t in tokenizers],
        "ml.save": [lambda p, v=v: ml.save({"a": ml.full((3,), float(v)), "step": v}, os.path.join(p, "w.safetensors"))
                    for v in (1, 2)],
        "training state": [lambda p, v=v: save_training_state(os.path.join(p, "checkpoint.npz"),
                                                              {"step": v, "w": np.full(3, float(v))}) for v in (1, 2)],
    }


FAILING_CALLS = ["replace", "rename", "link", "fsync", "chmod", "mkdir", "remove"]


def _tokenizer(padding_side):
    from minilora.tokenizer import ByteTokenizer
    tokenizer = ByteTokenizer()
    tokenizer.padding_side = padding_side
    return tokenizer


@posix_only
@pytest.mark.parametrize("writer, error", [("model", OSError), ("sharded", OSError), ("adapter", OSError),
                                           ("tokenizer", OSError), ("ml.save", OSError), ("training state", OSError),
                                           ("adapter", KeyboardInterrupt), ("ml.save", KeyboardInterrupt)])
def test_a_save_that_fails_at_any_system_call_leaves_the_old_version_whole(tmp_path, monkeypatch, writer, error):
    first, second = _writers()[writer]
    folder = str(tmp_path / "out")
    os.makedirs(folder)
    first(folder)
    old = snapshot(folder)
    calls = []

    def failing(name, real, fail_at):
        def call(*args, **kwargs):
            calls.append(name)
            if len(calls) == fail_at:
                raise OSError(errno.ENOSPC, f"No space left on device (injected into os.{name})") \
                    if error is OSError else KeyboardInterrupt()
            return real(*args, **kwargs)
        return call

    def save_failing_at(fail_at):
        calls.clear()
        with monkeypatch.context() as patched:
            patched.setattr(checkpoint, "_exchange", lambda a, b: False)  # the two-rename swap: more to cut
            for name in FAILING_CALLS:  # (fsync itself skipped: durability is not what is tested, and it is slow)
                real = (lambda fd: None) if name == "fsync" else getattr(os, name)
                patched.setattr(os, name, failing(name, real, fail_at))
            try:
                second(folder)
                return False
            except error:
                return True

    save_failing_at(0)  # (never fails: counts the calls, and writes the new version)
    count, new = len(calls), snapshot(folder)
    assert count >= 3 and new != old
    first(folder)
    for fail_at in range(1, count + 1):
        failed = save_failing_at(fail_at)
        where = (fail_at, calls[-1])
        assert leftovers(tmp_path) == [] and leftovers(folder) == [], where
        # the old version, whole; or the new one: an fsync of a folder may fail unheard, and a Ctrl-C can
        # come when the new folder is in place (the save is done; the Ctrl-C is still the caller's)
        now = snapshot(folder)
        assert now in (old, new), where
        if failed and error is OSError:
            assert now == old, where
        if now != old:
            first(folder)


# ==================================================================================================
# Readers: a torch.save file is named as one, wherever a safetensors file is read
# ==================================================================================================
@pytest.fixture(params=["zip", "legacy"])
def torch_file(request, tmp_path):
    """What torch.save writes, made without torch (importing it takes seconds): since torch 1.6 a zip holding
    archive/data.pkl; before, pickles one after the other, the first torch's magic number (protocol 2)."""
    path = tmp_path / "model.safetensors"
    if request.param == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
            archive.writestr("archive/version", "3\n")
    else:
        path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2))
    return path, "a zip archive" if request.param == "zip" else "a pickle"


def test_a_torch_save_file_read_as_safetensors_is_named(torch_file):
    path, kind = torch_file
    with pytest.raises(CheckpointError, match=f"not a safetensors file: it is {kind}.*never unpickles"):
        load_file(path)


def test_a_model_folder_holding_a_torch_save_file_is_named(torch_file, tmp_path):
    path, kind = torch_file
    tiny_model().save_pretrained(tmp_path / "m")
    os.replace(path, tmp_path / "m" / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"model.safetensors is not a safetensors file: it is {kind}"):
        LlamaForCausalLM.from_pretrained(tmp_path / "m")


def test_a_truncated_safetensors_file_is_still_called_truncated(tmp_path):
    save_file({"a": np.ones(64, np.float32)}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_file(tmp_path / "w.safetensors")


@pytest.mark.parametrize("content, words", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 1342\n", "a Git LFS pointer.*git lfs pull"),
    (b"<!DOCTYPE html>\n<html lang='en'><head><title>model.safetensors", "a web page"),
    (b"GGUF\x03\x00\x00\x00" + bytes(56), "a GGUF file")], ids=["lfs", "html", "gguf"])
def test_what_a_download_gone_wrong_left_is_named_by_every_reader(tmp_path, content, words):
    # a clone without git-lfs leaves pointers, a browser download of a "blob" link a web page
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    for read in (load_file, ml.load):
        with pytest.raises(CheckpointError, match=f"is not a safetensors file: it is {words}"):
            read(path)
    with pytest.raises(ValueError, match=f"is {words}.*not a training checkpoint"):
        load_training_state(path)


def test_from_pretrained_given_the_weights_file_asks_for_the_folder(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(OSError, match=r"model\.safetensors is a weights file, not a config\.json: from_pretrained "
                                      r"takes the model's folder"):
        LlamaForCausalLM.from_pretrained(tmp_path / "model.safetensors")


def test_a_config_json_left_as_a_git_lfs_pointer_is_named(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 642\n")
    with pytest.raises(OSError, match=r"config\.json: not valid JSON \(it is a Git LFS pointer.*git lfs pull"):
        LlamaForCausalLM.from_pretrained(tmp_path)


def test_a_tokenizer_json_left_as_a_git_lfs_pointer_is_named(tmp_path):
    from minilora.tokenizer import from_pretrained
    _tokenizer("right").save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 9\n")
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a valid tokenizer\.json \(it is a Git LFS pointer"):
        from_pretrained(tmp_path)


def test_a_torch_save_file_given_to_resume_is_named(torch_file, tmp_path):
    path, _ = torch_file
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_training_state(path)


# ==================================================================================================
# A checkpoint of another shape: load_state_dict's message is torch's, line for line
# ==================================================================================================
STATE_DICT_CASES = {
    "unexpected and mis-sized": ({"weight": (3, 3), "bias": (3,), "extra": (1,)}, True),
    "missing": ({"weight": (3, 2)}, True),
    "missing and unexpected": ({"weight": (3, 2), "extra": (1,), "more": (2,)}, True),
    "mis-sized, not strict": ({"weight": (3, 3), "extra": (1,)}, False),
}


@pytest.mark.parametrize("case", STATE_DICT_CASES)
def test_load_state_dict_of_another_shape_says_what_torch_says(case):
    torch = pytest.importorskip("torch")
    shapes, strict = STATE_DICT_CASES[case]
    with pytest.raises(RuntimeError) as expected:
        torch.nn.Linear(2, 3).load_state_dict({k: torch.zeros(s) for k, s in shapes.items()}, strict=strict)
    with pytest.raises(RuntimeError) as got:
        ml.nn.Linear(2, 3).load_state_dict({k: ml.zeros(s) for k, s in shapes.items()}, strict)
    assert str(got.value) == str(expected.value).replace("torch.Size", "minilora.Size")


# ==================================================================================================
# Bad input to the first calls: PEFT's error types
# ==================================================================================================
@pytest.mark.parametrize("config", [LoraConfig(target_modules=["nope"]), LoraConfig(target_modules=r".*\.nope"),
                                    LoraConfig(target_modules=["q_proj"], layers_to_transform=[5])],
                         ids=["list", "regex", "layers"])
def test_targets_that_match_nothing_are_peft_s_no_matching_module_error(config):
    with pytest.raises(NoMatchingPeftModuleError, match="not found in the base model") as info:
        get_peft_model(tiny_model(), config)
    # peft.NoMatchingPeftModuleError's classes (peft/utils/error.py; importing peft here would take seconds)
    assert [c.__name__ for c in type(info.value).__mro__] == ["NoMatchingPeftModuleError", "PeftError", "ValueError",
                                                             "Exception", "BaseException", "object"]


@pytest.mark.parametrize("data, words", [([], "train_data is empty"),
                                         (np.zeros((0, 8), np.int64), "train_data is empty")])
def test_train_on_no_examples_names_train_data(data, words):
    with pytest.raises(ValueError, match=words):
        train(tiny_model(), data, steps=1, progress=False)


def test_train_on_an_empty_eval_set_names_eval_data():
    rows = np.arange(3, 11, dtype=np.int64).reshape(1, 8)
    with pytest.raises(ValueError, match="eval_data is empty"):
        train(tiny_model(), rows, [], steps=1, progress=False)


def test_a_dataloader_of_what_is_not_token_ids_is_named():
    loader = DataLoader(TensorDataset(ml.randn(4, 8)), batch_size=2)
    with pytest.raises(TypeError, match="each batch of a DataLoader must be token ids"):
        train(tiny_model(), loader, steps=1, progress=False)


# ==================================================================================================
# Training on torch's DataLoader: stopped or killed, resumed, the same run
# ==================================================================================================
ROWS = np.array([[(i * 3 + j) % 13 + 3 for j in range(8)] for i in range(10)], np.int64)


def lora_model():
    return get_peft_model(tiny_model(), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.3,
                                                   target_modules=["q_proj", "v_proj"]))


def shuffled_loader(own_generator, labels=False):
    data = TensorDataset(ml.tensor(ROWS), ml.tensor(ROWS)) if labels else TensorDataset(ml.tensor(ROWS))
    return DataLoader(data, batch_size=3, shuffle=True,
                      generator=ml.Generator().manual_seed(5) if own_generator else None)


class Stop(Exception):
    pass


def stop_at(step):
    def callback(s):
        if s == step:
            raise Stop
    return callback


KW = dict(steps=9, lr=1e-2, progress=False, plot=False)


@pytest.mark.parametrize("own_generator, stop_step, save_every",
                         [(False, 5, 2), (True, 6, 4)])
def test_a_run_on_a_shuffled_dataloader_stopped_by_a_callback_resumes_bit_for_bit(tmp_path, own_generator,
                                                                                  stop_step, save_every):
    # 4 batches an epoch (the last one short), 9 steps: checkpoints mid-epoch and at an epoch's end
    whole = lora_model()
    expected = train(whole, shuffled_loader(own_generator), **KW)
    with pytest.raises(Stop):
        train(lora_model(), shuffled_loader(own_generator), out_dir=tmp_path, save_every=save_every,
              after_optimizer_step=stop_at(stop_step), **KW)
    resumed = lora_model()
    result = train(resumed, shuffled_loader(own_generator), out_dir=tmp_path, save_every=save_every, resume=True, **KW)
    assert result.losses == expected.losses
    assert same_weights(resumed, whole)


def test_a_dataloader_with_labels_and_an_eval_loader_train_as_the_pairs_they_hold(tmp_path):
    loader = shuffled_loader(True, labels=True)
    result = train(lora_model(), loader, DataLoader(TensorDataset(ml.tensor(ROWS[:4])), batch_size=2),
                   eval_every=3, **KW)
    assert len(result.losses) == 9 and [e["step"] for e in result.evals] == [3, 6, 9]
    assert all(np.isfinite(e["eval_loss"]) for e in result.evals)


def test_a_dataloader_batch_with_no_target_is_named_not_blamed_on_the_learning_rate():
    labels = np.where(np.arange(8) < 6, -100, ROWS[:4]).astype(np.int64)  # rows 0-3: targets only at the end
    labels[:2, :] = -100
    loader = DataLoader(TensorDataset(ml.tensor(ROWS[:4]), ml.tensor(labels)), batch_size=2)
    with pytest.raises(ValueError, match="batch 0 of train_data .* has no token to learn from"):
        train(tiny_model(), loader, **KW)


def test_resuming_a_list_run_with_a_dataloader_is_refused_by_name(tmp_path):
    train(lora_model(), ROWS, out_dir=tmp_path, save_every=2, **{**KW, "steps": 2})
    with pytest.raises(ResumeError, match="train_data was not a DataLoader"):
        train(lora_model(), shuffled_loader(False), out_dir=tmp_path, resume=True, **KW)


def test_a_resume_with_other_batches_says_so(tmp_path):
    train(lora_model(), ROWS, out_dir=tmp_path, save_every=2, batch_size=4, **{**KW, "steps": 2})
    with pytest.warns(UserWarning, match=r"batch_size=2 \(the run had 4\), seed=3 \(the run had 0\).*other batches"):
        train(lora_model(), ROWS, out_dir=tmp_path, resume=True, batch_size=2, seed=3, **KW)


def test_a_resume_with_the_run_s_own_batches_says_nothing(tmp_path):
    import warnings
    train(lora_model(), shuffled_loader(True), out_dir=tmp_path, save_every=2, grad_accum=2, **{**KW, "steps": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(lora_model(), shuffled_loader(True), out_dir=tmp_path, resume=True, grad_accum=2, **KW)


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
def test_resuming_in_another_dtype_is_refused_by_name(tmp_path, dtype):
    train(lora_model(), ROWS, out_dir=tmp_path, save_every=2, **{**KW, "steps": 2})
    with pytest.raises(ResumeError, match=f"lora_A.default.weight was saved as float32, the model's is {dtype}"):
        train(lora_model().to(getattr(ml, dtype)), ROWS, out_dir=tmp_path, resume=True, **KW)


def test_an_adapter_scaled_by_zero_is_named_not_blamed_on_the_learning_rate():
    # lora_alpha=0 (PEFT accepts it): the update is scaled by 0, every adapter gradient is 0 from the start
    model = get_peft_model(tiny_model(), LoraConfig(r=2, lora_alpha=0, target_modules=["q_proj"]))
    with pytest.raises(TrainingDivergedError, match=r"q_proj \(adapter 'default'\) is scaled by 0 \(lora_alpha=0\)") \
            as info:
        train(model, ROWS, **KW)
    assert "learning rate" not in str(info.value) and info.value.step == 1


def test_trainable_parameters_that_do_not_reach_the_loss_are_named_at_the_first_step():
    model = tiny_model()
    for name, p in model.named_parameters():
        p.requires_grad_(name == "lm_head.weight")
    model.lm_head.register_forward_hook(lambda module, args, out: out * 0)  # the logits no longer depend on it
    with pytest.raises(TrainingDivergedError, match="at the first step: no trainable parameter reaches the loss") \
            as info:
        train(model, ROWS, **KW)
    assert "learning rate" not in str(info.value)


def test_save_every_without_an_out_dir_says_nothing_is_saved():
    with pytest.warns(UserWarning, match="save_every=2 but no out_dir: no checkpoint is written"):
        train(lora_model(), ROWS, save_every=2, **{**KW, "steps": 1})


KILLED_CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
from test_faults_r8 import KW, lora_model, shuffled_loader
from minilora.train import train
def die(step):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
train(lora_model(), shuffled_loader(False), out_dir={out!r}, save_every=3, after_optimizer_step=die, **KW)
"""


@posix_only
def test_a_run_on_a_shuffled_dataloader_killed_resumes_bit_for_bit(tmp_path):
    whole = lora_model()
    expected = train(whole, shuffled_loader(False), **KW)
    code = KILLED_CHILD.format(root=ROOT, tests=os.path.join(ROOT, "tests"), kill_at=7, out=str(tmp_path))
    child = background_runs.run_process([sys.executable, "-c", code], cwd=ROOT, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert load_training_state(tmp_path / "checkpoint.npz")["step"] == 6
    resumed = lora_model()
    result = train(resumed, shuffled_loader(False), out_dir=tmp_path, save_every=3, resume=True, **KW)
    assert result.losses == expected.losses and same_weights(resumed, whole)
