"""Faults and bad input, round 18: transformers' ``Trainer`` (``minilora/trainer.py``) loses nothing it saved.

Its ``checkpoint-N`` folders: one killed (SIGKILL) or stopped by a full disk part-way through its files (the
adapter written, optimizer.pt or trainer_state.json not yet) is never seen, so ``resume_from_checkpoint=True``
resumes from the last whole checkpoint to the uninterrupted run's losses and adapter, bit for bit (transformers
writes into ``checkpoint-N`` itself: its newest checkpoint is then the broken one, which resume picks and
refuses); a checkpoint rotated out by ``save_total_limit`` and killed mid-deletion leaves no half-deleted
``checkpoint-N`` (one without its optimizer.pt resumes with a fresh optimizer, silently); what killed saves leave
is removed by the next save. trainer_state.json is written whole, and a damaged one is named before the
checkpoint's adapter replaces the model's. A resume with other step intervals or batch size warns in
transformers' words; a best checkpoint deleted since is transformers' warning, not a crash at the end. The
example scripts' closing calls (``log_metrics``, ``save_metrics``, ``save_state``) write transformers' files,
each whole; a checkpoint either library wrote resumes in the other. A config.json with fewer layers than the
weights gets transformers' LOAD REPORT.
"""
import errno
import json
import logging
import os
import shutil
import signal
import sys
import warnings

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import trainer as ml_trainer
from minilora.lora import LoraConfig, get_peft_model

from test_faults import ENV, leftovers, posix_only
from test_train import VOCAB, tiny_llama

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 5
CHECKPOINT_FILES = {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt",
                    "rng_state.pth", "trainer_state.json", "training_args.bin", "README.md"}


def rows(count=12):
    g = np.random.default_rng(0)
    return [{"input_ids": (ids := g.integers(3, VOCAB, 6).tolist()), "labels": ids} for _ in range(count)]


def make_trainer(out, **arguments):
    """A LoRA run with dropout (the generators' states matter) saving every step, two checkpoints kept."""
    model = get_peft_model(tiny_llama(0), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1,
                                                     target_modules=["q_proj", "v_proj"]))
    eval_dataset = arguments.pop("eval_dataset", None)
    arguments = {**dict(output_dir=str(out), learning_rate=1e-2, per_device_train_batch_size=2, max_steps=STEPS,
                        logging_steps=1, save_steps=1, save_total_limit=2, seed=5, report_to="none",
                        disable_tqdm=True), **arguments}
    return ml_trainer.Trainer(model=model, args=ml_trainer.TrainingArguments(**arguments), train_dataset=rows(),
                              eval_dataset=eval_dataset)


def outcome(trainer):
    """The step logs (the last one, the run's times, aside) and the trained adapter's arrays."""
    adapter = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items() if "lora_" in k}
    return trainer.state.log_history[:-1], adapter


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    trainer = make_trainer(tmp_path_factory.mktemp("uninterrupted"))
    trainer.train()
    return outcome(trainer)


def assert_same_outcome(resumed, uninterrupted):
    assert resumed[0] == uninterrupted[0]
    assert list(resumed[1]) == list(uninterrupted[1])
    for name, array in uninterrupted[1].items():
        np.testing.assert_array_equal(resumed[1][name], array, err_msg=name)


def whole_checkpoints(out):
    """The ``checkpoint-N`` folders in ``out``, each asserted to hold every file a checkpoint has."""
    found = sorted(name for name in os.listdir(out) if name.startswith("checkpoint-"))
    for name in found:
        assert set(os.listdir(os.path.join(out, name))) == CHECKPOINT_FILES, name
    return found


# ==================================================================================================
# A run killed with SIGKILL during a checkpoint save resumes to the uninterrupted run
# ==================================================================================================
def _calling(name):
    """Whether a function called ``name`` is on the stack (the checkpoint rotation, whatever it calls)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


def _sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def run_killed(out, where):
    """Train in this process (a subprocess of the test) and SIGKILL it at ``where`` (KILLS)."""
    from minilora import serialization
    options = {}
    if where in ("rotation", "the best kept at the end"):  # one file of a checkpoint deleted, then the kill
        rmtree = ml_trainer.shutil.rmtree
        deleting = "_rotate_checkpoints" if where == "rotation" else "_finalize_training"
        if where == "the best kept at the end":  # (the first checkpoint is the best, the last one goes)
            options = dict(eval_strategy="steps", eval_steps=1, load_best_model_at_end=True, save_total_limit=1,
                           metric_for_best_model="eval_loss", greater_is_better=True, eval_dataset=rows(4))

        def killed_mid_deletion(path, *args, **kwargs):
            if _calling(deleting):
                os.remove(os.path.join(path, "optimizer.pt"))
                _sigkill()
            return rmtree(path, *args, **kwargs)
        ml_trainer.shutil.rmtree = killed_mid_deletion
    else:
        module, attribute, file, folder = KILLS[where]
        owner = {"serialization": serialization, "TrainerState": ml_trainer.TrainerState}[module]
        real = getattr(owner, attribute)

        def killed_before_writing(*args, **kwargs):
            path = os.fspath(args[1])
            if os.path.basename(path) == file and folder in path:
                _sigkill()
            return real(*args, **kwargs)
        setattr(owner, attribute, killed_before_writing)
    make_trainer(out, **options).train()


# where -> (module, function, the file it writes, in which checkpoint)
KILLS = {
    "optimizer.pt, the adapter written": ("serialization", "save", "optimizer.pt", "checkpoint-2"),
    "rng_state.pth": ("serialization", "save", "rng_state.pth", "checkpoint-3"),
    "trainer_state.json, everything else written": ("TrainerState", "save_to_json", "trainer_state.json",
                                                    "checkpoint-3"),
    "rotation": None,
}


def _killed(out, where):
    code = f"import sys; sys.path.insert(0, {HERE!r}); import test_faults_r18 as t; t.run_killed({str(out)!r}, " \
           f"{where!r})"
    done = background_runs.run_process([sys.executable, "-c", code], env=ENV, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


@posix_only
@pytest.mark.parametrize("where", list(KILLS))
def test_a_trainer_killed_during_a_checkpoint_save_resumes_bit_for_bit(tmp_path, uninterrupted, where):
    """Before: the killed save's ``checkpoint-N`` was there without its trainer_state.json (or with it but
    without rng_state.pth: a resume warned and drew other dropout masks), and ``resume_from_checkpoint=True``
    took it: "Can't find a valid checkpoint at .../checkpoint-2", the whole checkpoint-1 beside it unused; a kill
    mid-rotation left checkpoint-1 without its optimizer.pt."""
    _killed(tmp_path, where)
    whole_checkpoints(tmp_path)  # (no half-written or half-deleted one)
    resumed = make_trainer(tmp_path)
    resumed.train(resume_from_checkpoint=True)
    assert_same_outcome(outcome(resumed), uninterrupted)
    assert whole_checkpoints(tmp_path) == ["checkpoint-4", "checkpoint-5"] and leftovers(tmp_path) == []


@posix_only
def test_a_trainer_killed_deleting_all_but_the_best_checkpoint_leaves_no_half_deleted_one(tmp_path):
    """``load_best_model_at_end`` with ``save_total_limit=1``: at the end every checkpoint but the best goes, the
    newest among them. Killed part-way through that: before, the newest ``checkpoint-N`` was left without its
    optimizer.pt, the folder ``resume_from_checkpoint=True`` takes (a fresh optimizer, silently, as
    transformers' resumes one without it)."""
    _killed(tmp_path, "the best kept at the end")
    assert whole_checkpoints(tmp_path) == ["checkpoint-1"]


def test_a_checkpoint_saved_over_an_earlier_run_s_keeps_none_of_its_files(tmp_path):
    """A second run into the same output_dir, with ``save_only_model=True``: its checkpoint-2 holds its own files
    only. Before (and in transformers, which writes into the folder): the first run's optimizer.pt, scheduler.pt
    and rng_state.pth stayed beside the new adapter, and a resume from it took the other run's optimizer."""
    make_trainer(tmp_path, max_steps=2).train()
    make_trainer(tmp_path, max_steps=2, save_only_model=True, learning_rate=5e-2).train()
    assert set(os.listdir(tmp_path / "checkpoint-2")) == CHECKPOINT_FILES - {"optimizer.pt", "scheduler.pt",
                                                                             "rng_state.pth"}


def test_a_run_resumed_from_an_earlier_checkpoint_keeps_the_one_it_writes(finished_run, tmp_path):
    """checkpoint-2, -4 and -5 of a run (saved minutes apart), resumed from checkpoint-2 with
    ``save_total_limit=2``: its checkpoint-3 is the newest by time, and transformers' rotation (by modification
    time) keeps it and checkpoint-5. Before: sorted by step, checkpoint-5 was the newest and the checkpoint-3 just
    written was deleted, leaving only the abandoned run's later ones."""
    transformers = pytest.importorskip("transformers")
    from transformers.trainer_utils import rotate_checkpoints
    now = __import__("time").time()
    for folder in ("ours", "theirs"):
        for age, step in ((300, 2), (200, 4), (100, 5)):
            path = tmp_path / folder / f"checkpoint-{step}"
            shutil.copytree(finished_run / "checkpoint-2", path)
            os.utime(path, (now - age, now - age))
    make_trainer(tmp_path / "ours", max_steps=3).train(resume_from_checkpoint=str(tmp_path / "ours" / "checkpoint-2"))
    os.mkdir(tmp_path / "theirs" / "checkpoint-3")
    rotate_checkpoints(str(tmp_path / "theirs"), save_total_limit=2, use_mtime=True)
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs")) == [
        "checkpoint-3", "checkpoint-5"]


# ==================================================================================================
# A full disk during a checkpoint save
# ==================================================================================================
def test_a_full_disk_during_a_checkpoint_save_leaves_no_checkpoint_to_resume_from(tmp_path, monkeypatch,
                                                                                  uninterrupted):
    """The disk fills up while checkpoint-2's optimizer.pt is written (fsync is where a full disk shows): the
    error names checkpoint-2, no checkpoint-2 is left, and the resume from checkpoint-1 is the uninterrupted
    run. Before: a checkpoint-2 of the adapter and training_args.bin alone, which ``resume_from_checkpoint=True``
    picked and refused."""
    fsync = os.fsync

    def full_disk(fd):
        if "optimizer.pt" in os.readlink(f"/proc/self/fd/{fd}") and "checkpoint-2" in os.readlink(
                f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see which file is fsynced")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as caught:
        make_trainer(tmp_path).train()
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and "checkpoint-2" in caught.value.filename
    assert ".minilora-" not in caught.value.filename
    assert whole_checkpoints(tmp_path) == ["checkpoint-1"] and leftovers(tmp_path) == []
    resumed = make_trainer(tmp_path)
    resumed.train(resume_from_checkpoint=True)
    assert_same_outcome(outcome(resumed), uninterrupted)


@pytest.mark.parametrize("fault", ["fsync", "replace"])
def test_trainer_state_save_to_json_that_fails_keeps_the_old_file(tmp_path, monkeypatch, fault):
    """``TrainerState.save_to_json`` (which callbacks call too) on a full disk: the old file whole, the error
    naming the file. Before: opened with "w", the old file was emptied first."""
    path = tmp_path / "trainer_state.json"
    ml_trainer.TrainerState(global_step=1).save_to_json(str(path))
    before = path.read_bytes()

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, fault, full_disk)
    with pytest.raises(OSError) as caught:
        ml_trainer.TrainerState(global_step=2).save_to_json(str(path))
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == before and leftovers(tmp_path) == []


# ==================================================================================================
# trainer_state.json edited by hand, a resume with other settings
# ==================================================================================================
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    make_trainer(out, max_steps=2).train()
    return out


@pytest.mark.parametrize("text, error, words", [
    ('{"global_step": 2, "log_hist', OSError, "not valid JSON"),  # (truncated)
    ('[2]', TypeError, "JSON object of TrainerState's fields, not a list"),
    ('{"global_step": 2, "learning_rate": 0.1}', TypeError, "unexpected keyword argument 'learning_rate'"),
])
def test_a_damaged_trainer_state_json_is_named_before_the_model_changes(finished_run, tmp_path, text, error, words):
    """Before: json's "Expecting value: line 1 column 1" or ``TrainerState.__init__()``'s error, naming no file,
    raised after the checkpoint's adapter had replaced the model's."""
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(finished_run / "checkpoint-2", checkpoint)
    (checkpoint / "trainer_state.json").write_text(text)
    trainer = make_trainer(tmp_path / "resumed")
    before = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(error, match=words) as caught:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert str(checkpoint / "trainer_state.json") in str(caught.value)
    for name, array in before.items():
        np.testing.assert_array_equal(trainer.model.state_dict()[name].numpy(), array, err_msg=name)


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_truncated_training_file_is_named_before_the_model_changes(finished_run, tmp_path, name):
    """optimizer.pt, scheduler.pt or rng_state.pth cut short (a copy that ran out of space, transformers' own
    write killed): the error names the file, and the model still holds its own adapter. Before: named, but only
    once the checkpoint's adapter had replaced the model's, which a ``train()`` without resume then went on from."""
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(finished_run / "checkpoint-2", checkpoint)
    data = (checkpoint / name).read_bytes()
    (checkpoint / name).write_bytes(data[:len(data) // 2])
    trainer = make_trainer(tmp_path / "resumed")
    before = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(Exception) as caught:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert str(checkpoint / name) in str(caught.value)
    for key, array in before.items():
        np.testing.assert_array_equal(trainer.model.state_dict()[key].numpy(), array, err_msg=key)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("changes", [dict(per_device_train_batch_size=3), dict(logging_steps=2, save_steps=3)])
def test_a_resume_with_other_step_intervals_or_batch_size_warns_as_transformers(finished_run, tmp_path, caplog,
                                                                              changes):
    """transformers' ``compare_trainer_and_checkpoint_args``, its words run on the same arguments and state (the
    checkpoint's intervals are the resumed run's, as in transformers: the state's). Before: no word.

    What transformers resumes without a word, and so does minilora (the same losses, checked side by side): a
    new ``learning_rate`` (the scheduler's saved state brings the checkpoint's back), a new
    ``gradient_accumulation_steps`` or dataset length (the batches skipped are counted with the new values, so
    the epoch goes on from another example), a new ``seed`` (the epoch is shuffled anew from it and its first
    batches skipped as if they were those trained on), a ``max_steps`` below the checkpoint's step (one more step
    is trained), a new ``lora_alpha``, ``lora_dropout`` or ``use_rslora`` (PEFT's ``load_adapter`` into the
    model's existing adapter loads the weights only: the model's config computes, not the checkpoint's
    adapter_config.json). A new ``r``, ``target_modules`` or ``use_dora`` is refused, here naming the adapter
    file (transformers: PEFT's size mismatch, or the optimizer's "doesn't match the size of optimizer's group")."""
    transformers = pytest.importorskip("transformers")
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import compare_trainer_and_checkpoint_args
    checkpoint = str(finished_run / "checkpoint-2")
    trainer = make_trainer(tmp_path, max_steps=3, **changes)
    arguments = {k: v for k, v in dict(trainer.args.to_dict(), **changes).items() if k in (
        "per_device_train_batch_size", "logging_steps", "save_steps", "eval_steps", "eval_strategy")}
    theirs = transformers.TrainingArguments(output_dir=str(tmp_path / "theirs"), report_to="none", **arguments)
    state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    transformers.utils.logging.enable_propagation()  # (transformers' loggers do not reach caplog's otherwise)
    verbosity = transformers.utils.logging.get_verbosity()  # (a test run before may have quieted them)
    transformers.utils.logging.set_verbosity_warning()
    try:
        with caplog.at_level(logging.WARNING):
            compare_trainer_and_checkpoint_args(theirs, state)
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        transformers.utils.logging.disable_propagation()
    expected = _warnings(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        trainer.train(resume_from_checkpoint=checkpoint)
    assert expected and expected[0] in _warnings(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # (the run's own settings: no word)
        make_trainer(tmp_path / "same", max_steps=3).train(resume_from_checkpoint=checkpoint)
    assert not [message for message in _warnings(caplog) if "do not match" in message]


def test_a_best_checkpoint_deleted_since_is_forgotten_with_transformers_warning(finished_run, tmp_path, caplog):
    """trainer_state.json names a best checkpoint that is no longer there: transformers warns and drops it (its
    rotation and ``load_best_model_at_end`` would look for it). Before: kept without a word."""
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(finished_run / "checkpoint-2", checkpoint)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    gone = str(tmp_path / "checkpoint-1")
    (checkpoint / "trainer_state.json").write_text(json.dumps(dict(state, best_model_checkpoint=gone)))
    trainer = make_trainer(tmp_path, max_steps=3)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert (f"The best checkpoint {gone} recorded in the resumed state does not exist anymore. Ignoring it for "
            "this run.") in _warnings(caplog)
    assert trainer.state.best_model_checkpoint is None


# ==================================================================================================
# config.json edited by hand: fewer layers than the weights
# ==================================================================================================
@pytest.mark.parametrize("layers, keyword", [(0, False), (1, False), (1, True)])
def test_layers_past_num_hidden_layers_are_reported_as_transformers_reports_them(tmp_path, layers, keyword):
    """A config.json saying fewer layers than model.safetensors holds (edited by hand, or another model's), or
    ``from_pretrained(num_hidden_layers=n)``: transformers builds the smaller model and logs its LOAD REPORT of
    the UNEXPECTED weights; the same model here, and the report as a warning naming the folder and the source of
    the layer count. Before: the smaller model without a word (``output_loading_info`` aside)."""
    from minilora.models import LlamaConfig, LlamaForCausalLM
    ml.manual_seed(0)
    config = dict(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=32)
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(str(tmp_path))
    if not keyword:
        edited = json.loads((tmp_path / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps(dict(edited, num_hidden_layers=layers)))
    with pytest.warns(UserWarning) as caught:
        model = LlamaForCausalLM.from_pretrained(str(tmp_path), **({"num_hidden_layers": layers} if keyword else {}))
    assert len(model.model.layers) == layers
    report = [str(w.message) for w in caught if "LOAD REPORT" in str(w.message)]
    assert len(report) == 1 and f"LlamaForCausalLM LOAD REPORT from: {tmp_path}" in report[0]
    assert f"'model.layers.{layers}." in report[0] and "UNEXPECTED" in report[0]
    assert ("num_hidden_layers keyword" if keyword else str(tmp_path / "config.json")) in report[0]
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, info = transformers.LlamaForCausalLM.from_pretrained(
            str(tmp_path), output_loading_info=True, **({"num_hidden_layers": layers} if keyword else {}))
    assert len(theirs.model.layers) == layers and info["unexpected_keys"]  # (what its report lists)



# ==================================================================================================
# The example scripts' closing lines: save_model, log_metrics, save_metrics, save_state
# ==================================================================================================
METRICS = {"train_runtime": 3723.456, "train_samples_per_second": 12.3456789, "total_flos": 5 * 2 ** 30 + 7,
           "train_loss": 2.718281828, "epoch": 3.0, "train_mem_cpu_alloc_delta": 3 * 2 ** 20 + 5, "step": 7}


def _their_helpers(out):
    """transformers' functions behind Trainer.save_metrics / save_state / log_metrics, on a stand-in Trainer."""
    from types import SimpleNamespace
    from transformers import trainer_pt_utils
    state = ml_trainer.TrainerState(global_step=7)  # (its save_to_json is the same dataclass dump)
    stand_in = SimpleNamespace(args=SimpleNamespace(output_dir=str(out)), state=state,
                               is_world_process_zero=lambda: True)
    return stand_in, trainer_pt_utils


def test_an_example_script_s_closing_calls_write_transformers_files(tmp_path, capsys):
    """run_clm.py's ``trainer.log_metrics("train", m); trainer.save_metrics("train", m); trainer.save_state()``
    (and the eval split's): the same printout and the same bytes in train_results.json, eval_results.json,
    all_results.json and trainer_state.json as transformers' own functions write. Before: AttributeError, at the
    end of the run."""
    transformers = pytest.importorskip("transformers")  # noqa: F841
    trainer = make_trainer(tmp_path / "ours", max_steps=1, save_strategy="no")
    trainer.train()
    trainer.state = ml_trainer.TrainerState(global_step=7)
    capsys.readouterr()
    stand_in, theirs = _their_helpers(tmp_path / "theirs")
    os.makedirs(tmp_path / "theirs")
    for split, metrics in (("train", METRICS), ("eval", {"eval_loss": 1.25, "eval_runtime": 0.5, "epoch": 3.0})):
        trainer.log_metrics(split, metrics)
        ours = capsys.readouterr().out
        theirs.log_metrics(stand_in, split, metrics)
        assert ours == capsys.readouterr().out
        trainer.save_metrics(split, metrics)
        theirs.save_metrics(stand_in, split, metrics)
    trainer.save_state()
    theirs.save_state(stand_in)
    for name in ("train_results.json", "eval_results.json", "all_results.json", "trainer_state.json"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes(), name
    assert trainer.get_num_trainable_parameters() == 4 * 2 * 16  # (q_proj and v_proj: A 2x16 and B 16x2 each)
    assert trainer.get_learning_rates() == [group["lr"] for group in trainer.optimizer.param_groups]


@pytest.mark.parametrize("fault", ["fsync", "replace"])
def test_save_metrics_on_a_full_disk_keeps_all_results_json(tmp_path, monkeypatch, fault):
    """all_results.json gathers every split's metrics of a run: a full disk while it is rewritten leaves it as it
    was, the error naming it. (transformers opens it with "w": emptied first, then a JSONDecodeError at the next
    save_metrics.)"""
    trainer = make_trainer(tmp_path)
    trainer.save_metrics("train", {"train_loss": 1.5})
    before = (tmp_path / "all_results.json").read_bytes()
    real = getattr(os, fault)

    def full_disk(*args):
        if "all_results.json" in str(args[-1]) or (fault == "fsync" and "all_results" in os.readlink(
                f"/proc/self/fd/{args[0]}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see which file is fsynced")
    monkeypatch.setattr(os, fault, full_disk)
    with pytest.raises(OSError) as caught:
        trainer.save_metrics("eval", {"eval_loss": 2.5})
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "all_results.json")
    assert (tmp_path / "all_results.json").read_bytes() == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("text, words", [("", "not valid JSON"), ("[1, 2]", "JSON object of metrics, not a list")])
def test_a_damaged_all_results_json_is_named(tmp_path, text, words):
    (tmp_path / "all_results.json").write_text(text)
    with pytest.raises((OSError, TypeError), match=words) as caught:
        make_trainer(tmp_path).save_metrics("eval", {"eval_loss": 2.5})
    assert str(tmp_path / "all_results.json") in str(caught.value)
    assert (tmp_path / "all_results.json").read_text() == text


# ==================================================================================================
# A run checkpointed by transformers resumed here, and the other way round
# ==================================================================================================
@pytest.mark.parametrize("writer", ["transformers", "minilora"])
def test_a_checkpoint_either_library_wrote_resumes_in_the_other(tmp_path, writer):
    """One library trains to checkpoint-2 (LoRA dropout on, so the generators' states matter); each resumes from
    that folder: the same steps 3 and 4. Before: transformers' rng_state.pth (a torch.save of NumPy's generator
    state, which transformers reads weights-only with NumPy's classes allowed) was refused here with torch's
    "Weights only load failed"; minilora's was a safetensors file (NumPy's key array) that torch.load refused
    ("Unsupported operand 0")."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from test_trainer_r12 import assert_same_history, lora_pair
    from trainer_rows import collator, examples, save_tiny_llama
    import torch
    base = save_tiny_llama(tmp_path / "base")
    arguments = dict(learning_rate=1e-2, per_device_train_batch_size=2, max_steps=4, logging_steps=1, save_steps=2,
                     seed=5, report_to="none", disable_tqdm=True)

    def trainer(lib):
        model = lora_pair(base, lora_dropout=0.1)[lib is ml_trainer]
        return lib.Trainer(model=model, train_dataset=examples(), data_collator=collator(
            ml.tensor if lib is ml_trainer else torch.tensor), args=lib.TrainingArguments(
            output_dir=str(tmp_path / lib.__name__), **arguments))
    checkpoint = str(tmp_path / {"transformers": "transformers", "minilora": "minilora.trainer"}[writer] /
                     "checkpoint-2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(transformers if writer == "transformers" else ml_trainer).train()
        theirs = trainer(transformers)  # (each made and run in turn: making one seeds the global generators)
        theirs.train(resume_from_checkpoint=checkpoint)
    ours = trainer(ml_trainer)
    ours.train(resume_from_checkpoint=checkpoint)
    assert theirs.state.global_step == ours.state.global_step == 4
    assert_same_history(theirs.state.log_history[:-1], ours.state.log_history[:-1])
