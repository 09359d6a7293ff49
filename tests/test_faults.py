"""Faults, kills and bad files: nothing lost, nothing silent (issue 14).

A save killed half-way (a full disk, SIGKILL) leaves the old files or the new ones, never a mix; a
killed `minilora train` resumes to the same adapter, bit for bit; a run that goes wrong stops and says
at which step; a bad config, header, index or argument gets an error naming it. The CUDA emulator's
faults are tested in ``test_faults_emulator.py``.
"""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora.checkpoint import CheckpointError, load_checkpoint, read_header, save_file
from minilora.cli import main as cli
from minilora.data import DataLoader
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.tokenizer import ByteTokenizer
from minilora.train import (NonFiniteLossError, TrainingDivergedError, load_training_state,
                            save_training_state, train)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import background_runs  # noqa: E402  (tests/, on the path just above)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals, rlimits and symlinks")


def tiny_config(hidden=16, vocab=16, **kw):
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                       pad_token_id=2, **kw)


def tiny_model(seed=0, hidden=16):
    ml.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(hidden))


def rows(n=32, length=12):
    return np.array([[(i + j) % 13 + 3 for j in range(length)] for i in range(n)], dtype=np.int64)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


def run_python(code, timeout=60):
    return background_runs.run_process([sys.executable, "-c", code], env=ENV, cwd=ROOT, timeout=timeout)


def leftovers(folder):
    return [e for e in os.listdir(folder) if ".minilora-" in e]


# ==================================================================================================
# Saves that fail half-way: the old model or the new one, never a mix
# ==================================================================================================
# The child builds the new model, then lowers its file-size limit so the weights cannot be written
# (SIGXFSZ ignored: the write fails with EFBIG, as on a full disk) and saves over the old folder.
WRITE_LIMIT_CHILD = """
import errno, resource, signal, sys
sys.path.insert(0, {root!r})
import numpy as np, minilora as ml
from minilora.models import LlamaConfig, LlamaForCausalLM
ml.manual_seed(1)
cfg = LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                  num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=2)
model = LlamaForCausalLM(cfg)
{prepare}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # config.json fits, the weights do not
try:
    {save}
except OSError as exc:
    sys.exit(0 if exc.errno == errno.EFBIG else 3)
sys.exit(4)  # the save should not have succeeded
"""


@posix_only
def test_model_save_that_hits_the_write_limit_leaves_the_old_model(tmp_path):
    folder = str(tmp_path / "model")
    old = tiny_model(0)
    old.save_pretrained(folder)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        f.write("{}")  # a file the save does not write: kept
    child = run_python(WRITE_LIMIT_CHILD.format(root=ROOT, prepare="", save=f"model.save_pretrained({folder!r})"))
    assert child.returncode == 0, child.stderr
    back = LlamaForCausalLM.from_pretrained(folder)  # the old config with the old weights
    assert back.config.hidden_size == 16 and same_weights(back, old)
    assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    assert leftovers(tmp_path) == []  # the failed save removed its temporary folder


@posix_only
def test_adapter_save_that_hits_the_write_limit_leaves_the_old_adapter(tmp_path):
    from minilora.lora import LoraConfig, PeftModel, get_peft_model
    folder = str(tmp_path / "adapter")
    ml.manual_seed(0)
    old = get_peft_model(tiny_model(0, hidden=64), LoraConfig(r=2, target_modules=["q_proj"]))
    old.save_pretrained(folder)
    prepare = ("from minilora.lora import LoraConfig, get_peft_model\n"
               "model = get_peft_model(model, LoraConfig(r=64, target_modules=['q_proj', 'v_proj']))")
    child = run_python(WRITE_LIMIT_CHILD.format(root=ROOT, prepare=prepare,
                                                save=f"model.save_pretrained({folder!r}, overwrite=True)"))
    assert child.returncode == 0, child.stderr
    back = PeftModel.from_pretrained(tiny_model(0, hidden=64), folder)
    assert back.peft_config["default"].r == 2
    assert same_weights(back, old)
    assert leftovers(tmp_path) == []


@posix_only
def test_checkpoint_that_hits_the_write_limit_leaves_the_old_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint.npz")
    save_training_state(path, {"step": 1, "w": np.arange(8.0)})
    save = f"save_training_state({path!r}, {{'step': 2, 'w': np.zeros(100_000)}})"
    child = run_python(WRITE_LIMIT_CHILD.format(root=ROOT, prepare="from minilora.train import save_training_state",
                                                save=save))
    assert child.returncode == 0, child.stderr
    state = load_training_state(path)
    assert state["step"] == 1 and np.array_equal(state["w"], np.arange(8.0))
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


KILL_CHILD = """
import sys
sys.path.insert(0, {root!r})
import minilora as ml
from minilora.models import LlamaConfig, LlamaForCausalLM
def make(seed, hidden):
    ml.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32, bos_token_id=0,
        eos_token_id=1, pad_token_id=2))
models = [make(0, 16), make(1, 32)]
print("saving", flush=True)
i = 0
while True:
    models[i % 2].save_pretrained({folder!r})
    i += 1
"""


@posix_only
def test_sigkill_during_saves_leaves_one_whole_model(tmp_path):
    """Two different models saved in turn into one folder, killed at random moments: the folder
    always loads as one of them, and the next save clears what the killed one left."""
    folder = str(tmp_path / "model")
    expected = {16: tiny_model(0, 16), 32: tiny_model(1, 32)}
    expected[16].save_pretrained(folder)  # there is always an old model (a kill before the first save)
    rng = random.Random(14)
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD.format(root=ROOT, folder=folder)], env=ENV,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "saving"
        time.sleep(rng.uniform(0.02, 0.3))
        child.kill()
        child.wait()
        child.stdout.close()
        back = LlamaForCausalLM.from_pretrained(folder)
        assert same_weights(back, expected[back.config.hidden_size])
    expected[16].save_pretrained(folder)
    assert leftovers(tmp_path) == []


SWAP_CUT_CHILD = """
import os, sys
sys.path.insert(0, {root!r})
import minilora as ml
from minilora import checkpoint
from minilora.models import LlamaConfig, LlamaForCausalLM
ml.manual_seed(1)
model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=2))
checkpoint._exchange = lambda a, b: False       # a filesystem without renameat2(RENAME_EXCHANGE)
real_rename, calls = os.rename, []
def rename(a, b):
    calls.append(a)
    if len(calls) == 2:                          # the old folder is set aside, the new one not yet in
        os._exit(9)                              # killed between the two renames
    real_rename(a, b)
os.rename = rename
model.save_pretrained({folder!r})
"""


@posix_only
def test_swap_cut_between_two_renames_is_undone_by_the_next_save(tmp_path):
    folder = str(tmp_path / "model")
    old = tiny_model(0)
    old.save_pretrained(folder)
    child = run_python(SWAP_CUT_CHILD.format(root=ROOT, folder=folder))
    assert child.returncode == 9, child.stderr
    assert not os.path.exists(folder) and [e for e in leftovers(tmp_path) if e.endswith(".old")]
    from minilora.checkpoint import remove_leftovers
    remove_leftovers(folder)  # what the next save into this folder does first
    assert same_weights(LlamaForCausalLM.from_pretrained(folder), old) and leftovers(tmp_path) == []


def test_a_save_keeps_other_files_and_drops_old_shards(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shard = str(folder / "model-00001-of-00002.safetensors")
    save_file({"model.embed_tokens.weight": np.zeros((2, 2), np.float32)}, shard)
    (folder / "model.safetensors.index.json").write_text("{}")
    (folder / "README.md").write_text("notes")
    tiny_model().save_pretrained(str(folder))
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "generation_config.json", "model.safetensors"]


@posix_only
def test_a_save_through_a_symlink_writes_into_its_target(tmp_path):
    (tmp_path / "run5").mkdir()
    os.symlink(tmp_path / "run5", tmp_path / "latest")
    tiny_model().save_pretrained(str(tmp_path / "latest"))
    assert os.path.islink(tmp_path / "latest") and (tmp_path / "run5" / "model.safetensors").is_file()
    tiny_model(1).save_pretrained(str(tmp_path / "latest"))
    assert same_weights(LlamaForCausalLM.from_pretrained(str(tmp_path / "latest")), tiny_model(1))
    assert sorted(os.listdir(tmp_path)) == ["latest", "run5"]


# ==================================================================================================
# `minilora train`: killed and resumed, it ends where an uninterrupted run ends
# ==================================================================================================
def save_byte_model(path):
    tok = ByteTokenizer()
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def byte_model_dir(tmp_path_factory):
    return save_byte_model(str(tmp_path_factory.mktemp("byte_model")))


def train_argv(model_dir, out, *extra):
    return ["train", "--model", model_dir, "--out", out, "--steps", "8", "--eval-every", "1", "--eval-n", "1",
            "--batch-size", "4", "--warmup-steps", "0", "--r", "2", "--lora-dropout", "0.1", "--no-progress",
            *extra]


def train_losses(out):
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def adapter_bytes(out):
    return {name: open(os.path.join(out, "adapter", name), "rb").read()
            for name in ("adapter_model.safetensors", "adapter_config.json")}


def metrics_lines(out):
    try:
        with open(os.path.join(out, "metrics.jsonl"), "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_train_run(argv, rng, after_lines=None, after_seconds=None):
    """Start ``minilora ARGV`` and SIGKILL it a random moment after it logged ``after_lines`` metrics
    lines (mid-training), or ``after_seconds`` after its start (the final evaluation and save)."""
    child = subprocess.Popen([sys.executable, "-m", "minilora", *argv], env=ENV, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start, out = time.perf_counter(), argv[argv.index("--out") + 1]
    while child.poll() is None and time.perf_counter() - start < 60:
        if after_lines is not None and metrics_lines(out) >= after_lines:
            time.sleep(rng.uniform(0, 0.005))
            break
        if after_seconds is not None and time.perf_counter() - start >= after_seconds:
            break
        time.sleep(0.0005)
    child.send_signal(signal.SIGKILL)
    child.wait()


def killed_and_resumed(folder):
    """A reference `minilora train` run, then four runs SIGKILLed at random points (three mid-training, one in the
    final evaluation and save), each resumed: what the test checks of each, {"reference": ..., "killed": [...]}.
    A background run (tests/background_runs.py) on the core CI's main process leaves idle: ~17 s of subprocesses."""
    model_dir = save_byte_model(os.path.join(folder, "byte_model"))
    reference = os.path.join(folder, "reference")
    start = time.perf_counter()
    done = background_runs.run_process([sys.executable, "-m", "minilora", *train_argv(model_dir, reference)],
                                       env=ENV, cwd=ROOT, timeout=120)
    duration = time.perf_counter() - start
    if done.returncode != 0:
        return {"reference": (done.returncode, done.stderr, None, None), "killed": []}
    results = {"reference": (0, "", adapter_bytes(reference), train_losses(reference)), "killed": []}
    rng = random.Random(0)
    # 8 steps and 8 evaluations log 16 lines: kill mid-training three times, and once late
    kills = [dict(after_lines=rng.randint(1, 15)) for _ in range(3)] + [dict(after_seconds=0.97 * duration)]
    for attempt, when in enumerate(kills):
        out = os.path.join(folder, f"killed{attempt}")
        kill_train_run(train_argv(model_dir, out), rng, **when)
        for _ in range(2):  # resume (or start over if it died before the first checkpoint)
            resume = ["--resume"] if os.path.isfile(os.path.join(out, "checkpoint.npz")) else []
            again = background_runs.run_process([sys.executable, "-m", "minilora",
                                                 *train_argv(model_dir, out, *resume)], env=ENV, cwd=ROOT, timeout=120)
            if again.returncode == 0:
                break
        state = f"killed {when}; left {sorted(os.listdir(out))}; resume said: {again.stdout + again.stderr}"
        ok = again.returncode == 0
        results["killed"].append((again.returncode, state, adapter_bytes(out) if ok else None,
                                  train_losses(out) if ok else None, leftovers(out) + leftovers(folder)))
    return results


KILLS = "test_faults: minilora train killed at random points"


def start_background_runs(items, runs):
    if os.name == "posix" and background_runs.selected(
            items, __name__, "test_train_killed_at_random_points_resumes_to_the_same_adapter"):
        runs.submit(KILLS, __name__, "killed_and_resumed", str(runs.folder("kills")))


@posix_only
def test_train_killed_at_random_points_resumes_to_the_same_adapter(background):
    if KILLS not in background:  # (queued by start_background_runs, unless the session selected it otherwise)
        background.submit(KILLS, __name__, "killed_and_resumed", str(background.folder("kills")))
    results = background.result(KILLS)
    returncode, stderr, reference_adapter, reference_losses = results["reference"]
    assert returncode == 0, stderr
    assert len(results["killed"]) == 4
    for returncode, state, adapter, losses, left in results["killed"]:
        assert returncode == 0, state
        assert adapter == reference_adapter, state
        assert losses == reference_losses, state
        assert left == [], state


def run_cli(argv, capsys):
    try:
        code = cli(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("method, saved", [("lora", "adapter"), ("full", "model")])
def test_resume_after_the_last_checkpoint_writes_the_result(byte_model_dir, tmp_path, capsys, method, saved):
    """Killed after the final checkpoint but before adapter/ (model/) was written: --resume finishes."""
    out = str(tmp_path / "run")
    argv = train_argv(byte_model_dir, out, "--lora-dropout", "0", "--method", method)
    code, text = run_cli(argv, capsys)
    assert code == 0, text
    folder = os.path.join(out, saved)
    whole = {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}
    shutil.rmtree(folder)
    code, text = run_cli(argv + ["--resume"], capsys)
    assert code == 0, text
    assert "already holds all 8 steps" in text
    assert {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)} == whole


# ==================================================================================================
# Runs that go wrong: NaN weights, divergence without NaN, half-written metrics
# ==================================================================================================
KW = dict(batch_size=8, warmup_steps=0, progress=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_checkpoint_with_infinite_weights_is_never_kept(tmp_path):
    out = str(tmp_path)
    train(tiny_model(), rows(), steps=3, lr=1e-2, save_every=1, out_dir=out, **KW)
    # A learning rate past float32's range: the loss and gradient of step 4 are finite, the weights
    # that step 4 makes are not. The checkpoint of step 3 must stay the last one.
    with pytest.raises(NonFiniteLossError, match=r"step 4: after the update.*NaN or inf.*\(step 3\)") as info:
        train(tiny_model(), rows(), steps=6, lr=1e39, save_every=1, out_dir=out, resume=True, **KW)
    assert info.value.checkpoint_step == 3
    state = load_training_state(info.value.checkpoint)
    assert state["step"] == 3 and all(np.isfinite(w).all() for w in state["model"].values())
    # ... and resuming with a sane learning rate goes on from there
    result = train(tiny_model(), rows(), steps=6, lr=1e-3, save_every=1, out_dir=out, resume=True, **KW)
    assert result.steps_run == 3 and np.isfinite(result.losses).all()
    assert result.lrs[3] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 3 / 6)))  # the new peak, same schedule


def test_cli_resume_keeps_the_runs_learning_rate_unless_given(byte_model_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = train_argv(byte_model_dir, out, "--lr", "3e-3")
    argv[argv.index("--steps") + 1] = "2"
    assert run_cli(argv, capsys)[0] == 0
    argv[argv.index("--steps") + 1] = "4"
    code, text = run_cli([a for a in argv if a not in ("--lr", "3e-3")] + ["--resume"], capsys)
    assert code == 0 and "peak learning rate" not in text  # not silently the recommended 2e-3
    code, text = run_cli(argv[:argv.index("--lr")] + argv[argv.index("--lr") + 2:] + ["--resume", "--lr", "1e-3"],
                         capsys)
    assert code == 0 and "peak learning rate 0.003 -> 0.001" in text


def test_a_new_learning_rate_on_resume_is_used_and_said(tmp_path, capsys):
    train(tiny_model(), rows(), steps=2, lr=1e-2, save_every=1, out_dir=str(tmp_path), **KW)
    result = train(tiny_model(), rows(), steps=4, lr=1e-3, out_dir=str(tmp_path), resume=True, **KW)
    assert "peak learning rate 0.01 -> 0.001 from step 3" in capsys.readouterr().err
    assert result.lrs[2] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 2 / 4)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("lr, words", [(1e6, "(the gradient norm is exactly 0 while the loss is 2.77|the gradient "
                                             "norm is nan)"),
                                       (1e2, "the loss .* blew up")])
def test_divergence_without_nan_is_reported_with_its_step(lr, words):
    # (At lr 1e6 the weights of step 2 saturate every activation: on an Intel AVX-512 CPU the float32 kernels leave
    # the gradient exactly 0, on an AMD Zen 4 NaN -- torch's own gradient norm there is NaN too, measured. Either is
    # a divergence reported with its step.)
    with pytest.raises((TrainingDivergedError, NonFiniteLossError), match=rf"stopped at step \d+: {words}") as info:
        train(tiny_model(), rows(), steps=12, lr=lr, **KW)
    assert f"step {info.value.step}:" in str(info.value) and 1 < info.value.step <= 4
    finite = "nan" not in str(info.value)
    assert isinstance(info.value, NonFiniteLossError) != finite  # finite all along: diverged, not NaN
    assert len(info.value.result.losses) == info.value.step - 1


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_healthy_runs_never_trip_the_divergence_rule(lora):
    model = tiny_model()
    if lora:
        from minilora.lora import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    result = train(model, rows(), steps=40, lr=1e-2, **KW)
    # and a second, already low-loss phase with small noisy batches (batch 1) does not trip either
    more = train(model, DataLoader(rows(), 1, seed=3), steps=20, lr=1e-3, batch_size=1, progress=False)
    assert result.final_loss < result.losses[0] and more.steps_run == 20


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cli_exits_non_zero_on_divergence(byte_model_dir, tmp_path, capsys):
    code, text = run_cli(train_argv(byte_model_dir, str(tmp_path / "run"), "--method", "full", "--lr", "1e6"),
                         capsys)
    assert code == 1
    # (which check fires first depends on the step's numbers: since 258480a RMSNorm's backward follows torch's
    # composite formula, and in this run the gradient norm becomes NaN at step 2 before the loss does)
    assert "stopped at step" in text and ("diverged" in text or "the gradient norm is nan" in text)
    assert "(step 1)" in text and "run the same command with --resume --lr 100000" in text  # the way on
    assert not os.path.exists(tmp_path / "run" / "model")


def test_half_written_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    out = str(tmp_path)
    train(tiny_model(), rows(), steps=4, lr=1e-2, save_every=2, out_dir=out, **KW)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 5, "lo')  # a kill mid-write
    train(tiny_model(), rows(), steps=6, lr=1e-2, save_every=2, out_dir=out, resume=True, **KW)
    assert "dropped 1 half-written" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]


# ==================================================================================================
# Bad config.json values: refused by field name, never misread
# ==================================================================================================
def config_json():
    """A config.json dict in the old style (rope_theta at the top, head_dim derived)."""
    d = tiny_config().to_dict()
    del d["rope_parameters"], d["head_dim"]
    return d


@pytest.mark.parametrize("field, value, words", [
    ("tie_word_embeddings", "false", "true or false"),
    ("attention_bias", 1, "true or false"),
    ("hidden_size", "64", "an integer >= 1"),
    ("hidden_size", 64.0, "an integer >= 1"),
    ("hidden_size", 0, "an integer >= 1"),
    ("vocab_size", -5, "an integer >= 1"),
    ("num_hidden_layers", True, "an integer >= 0"),
    ("intermediate_size", None, "an integer >= 1"),
    ("rms_norm_eps", "1e-6", "a finite number > 0"),
    ("rms_norm_eps", 0, "a finite number > 0"),
    ("rope_theta", float("nan"), "a finite number > 0"),
    ("eos_token_id", "2", "a token id"),
    ("eos_token_id", [1, "2"], "a list of token ids"),
    ("pad_token_id", 1.5, "a token id"),
    ("rope_scaling", [2.0], "an object or null"),
    ("rope_scaling", {"rope_type": "linear", "factor": "2"}, "a finite number > 0"),
])
def test_config_field_of_the_wrong_type_or_range_is_named(field, value, words):
    d = {**config_json(), field: value}
    with pytest.raises(ValueError, match=rf"'{field}(\.factor)?' is .*{words}"):
        LlamaConfig.from_dict(d)


@pytest.mark.parametrize("changes, words", [
    ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size 30 is not a multiple of num_attention_heads 4"),
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of "
                                                            "num_key_value_heads 3"),
])
def test_head_counts_must_divide(changes, words):
    with pytest.raises(ValueError, match=words):
        LlamaConfig.from_dict({**config_json(), **changes})


def test_config_json_that_is_a_list_is_refused(tmp_path):
    tiny_model().save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object.*list"):
        LlamaForCausalLM.from_pretrained(str(tmp_path))


def test_checkpoint_that_does_not_fit_is_refused_from_the_header_alone(tmp_path):
    """``{}`` as config.json means Llama-7B (27 GB): refused before a byte of it is allocated."""
    tiny_model().save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    tracemalloc.start()
    try:
        with pytest.raises(RuntimeError, match=r"size mismatch for model\.embed_tokens\.weight: copying a param with "
                                               r"shape minilora\.Size\(\[16, 16\]\) from checkpoint, the shape in "
                                               r"current model is minilora\.Size\(\[32000, 4096\]\)(.|\n)*file headers"):
            LlamaForCausalLM.from_pretrained(str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak


# ==================================================================================================
# safetensors files and sharded indexes
# ==================================================================================================
def write_raw(path, header, data):
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("dtype, itemsize", [("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("U8", 1)])
@pytest.mark.parametrize("case", ["overlap", "gap", "size", "reversed", "overflow", "negative", "trailing"])
def test_corrupted_header_is_refused_for_every_dtype(tmp_path, dtype, itemsize, case):
    n = 4 * itemsize
    a = {"dtype": dtype, "shape": [4], "data_offsets": [0, n]}
    b = {"dtype": dtype, "shape": [4], "data_offsets": [n, 2 * n]}
    data = bytes(2 * n)
    if case == "overlap":
        b["data_offsets"] = [n // 2, n // 2 + n]
    elif case == "gap":
        b["data_offsets"] = [n + itemsize, 2 * n + itemsize]
        data = bytes(2 * n + itemsize)
    elif case == "size":
        b["shape"] = [3]
    elif case == "reversed":
        b["data_offsets"] = [2 * n, n]
    elif case == "overflow":  # 2^64 * 2^0... elements: a 64-bit product would wrap around to a small number
        b["shape"] = [2**32, 2**32]
    elif case == "negative":
        b["shape"] = [-4]
    elif case == "trailing":
        data = bytes(2 * n + 8)
    path = str(tmp_path / "x.safetensors")
    write_raw(path, {"a": a, "b": b}, data)
    with pytest.raises(CheckpointError, match="x.safetensors: (corrupted|truncated)"):
        read_header(path)


@pytest.mark.parametrize("metadata", [["pt"], {"format": 1}])
def test_metadata_that_is_not_strings_is_refused(tmp_path, metadata):
    path = str(tmp_path / "m.safetensors")
    write_raw(path, {"__metadata__": metadata, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
              bytes(4))
    with pytest.raises(CheckpointError, match="__metadata__ must map names to strings"):
        read_header(path)


def test_a_valid_file_of_every_dtype_still_reads(tmp_path):
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "h": np.ones(3, np.float16),
              "i": np.arange(5, dtype=np.int64), "e": np.zeros((0, 4), np.float32)}
    path = str(tmp_path / "ok.safetensors")
    save_file(arrays, path)
    header, _ = read_header(path)
    assert {k for k in header if k != "__metadata__"} == set(arrays)
    bf16 = tmp_path / "bf16.safetensors"
    write_raw(str(bf16), {"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
              np.array([0x3F80, 0x4000], dtype="<u2").tobytes())
    from minilora.checkpoint import load_file
    np.testing.assert_array_equal(load_file(str(bf16))["w"], [1.0, 2.0])


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"])
def test_sharded_index_naming_a_file_outside_the_folder_is_refused(tmp_path, shard):
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "outside.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(CheckpointError, match="outside the model folder"):
        load_checkpoint(str(folder))


def test_sharded_index_inside_the_folder_loads(tmp_path):
    save_file({"a": np.ones(2, np.float32)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(3, np.float32)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert sorted(load_checkpoint(str(tmp_path))) == ["a", "b"]


# ==================================================================================================
# Errors that name the problem
# ==================================================================================================
@pytest.mark.parametrize("ids", [np.zeros((0, 4), np.int64), np.zeros((2, 0), np.int64)], ids=["no-rows", "no-tokens"])
def test_empty_batches_into_the_model_and_generate_are_named(ids):
    model = tiny_model()
    with pytest.raises(ValueError, match="empty batch or a zero-length sequence"):
        model(ids)
    with pytest.raises(ValueError, match="batch >= 1 and seq_len >= 1"):
        model.generate(ids, max_new_tokens=2)


@pytest.mark.parametrize("name, value", [("steps", 2.5), ("steps", 0), ("grad_accum", 1.5), ("batch_size", 2.5),
                                         ("save_every", -1), ("eval_every", 0.5)])
def test_train_counts_must_be_whole_numbers(name, value):
    kw = {**KW, "steps": 2, name: value}
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= [01], got {value!r}"):
        train(tiny_model(), rows(), lr=1e-2, **kw)


@pytest.mark.parametrize("value", [2.5, True, -1, 0, "3"])
def test_max_new_tokens_must_be_a_whole_number(value):
    """0 included: transformers 5 refuses max_new_tokens=0 (it used to return the prompt unchanged)."""
    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer >= 1|`max_new_tokens` must be greater than 0"):
        tiny_model().generate([[3, 4, 5]], max_new_tokens=value)


def test_attention_mask_of_another_shape_is_refused():
    ids = np.array([[3, 4, 5], [6, 7, 8]])
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 2\) but input_ids has shape \(2, 3\)"):
        tiny_model().generate(ids, attention_mask=np.ones((3, 2), np.int64), max_new_tokens=1)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        tiny_model()(ids, attention_mask=np.ones((2, 4), np.int64))


def test_unbalanced_target_modules_regex_is_named():
    from minilora.lora import LoraConfig
    with pytest.raises(ValueError, match=r"target_modules='\(q_proj\|v_proj' is not a valid regular expression"):
        LoraConfig(target_modules="(q_proj|v_proj")


def test_adapter_config_that_is_a_list_is_refused(tmp_path):
    from minilora.lora import LoraConfig, PeftModel, config_from_dict
    (tmp_path / "adapter_config.json").write_text("[]")
    with pytest.raises(ValueError, match="adapter_config.json: an adapter config must be a JSON object"):
        PeftModel.from_pretrained(tiny_model(), str(tmp_path))
    with pytest.raises(ValueError, match="adapter_config.json: an adapter config must be a JSON object"):
        LoraConfig.from_pretrained(str(tmp_path))  # (the file's name, as the other loaders say it)
    with pytest.raises(ValueError, match="config_from_dict: an adapter config must be a JSON object of field: value, got a list"):
        config_from_dict([])


@pytest.mark.parametrize("argv, words", [
    (["memory", "--matrix", "4096x"], "argument --matrix: must be OUTxIN"),
    (["memory", "--matrix", "0x8"], "argument --matrix: must be OUTxIN"),
    (["memory", "--r", "0"], "argument --r: must be an integer >= 1"),
    (["memory", "--dtype", "float7"], "argument --dtype: unknown dtype 'float7'"),
    (["memory", "--preset", "llama-9"], "argument --preset: unknown preset 'llama-9'"),
    (["info", "--preset", "llama-9"], "argument --preset: unknown preset 'llama-9'"),
    (["train", "--eval-n", "0"], "argument --eval-n: must be an integer >= 1, got '0'"),
    (["train", "--steps", "0"], "argument --steps: must be an integer >= 1"),
    (["train", "--steps", "2.5"], "argument --steps: must be an integer >= 1"),
    (["train", "--lr=-1e-3"], "argument --lr: must be a number > 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a number > 0"),
    (["train", "--lora-dropout", "1.5"], "argument --lora-dropout: must be a probability in"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["train", "--clip-norm", "-1"], "argument --clip-norm: must be a number >= 0"),
    (["train", "--warmup-steps", "-1"], "argument --warmup-steps: must be an integer >= 0"),
    (["generate", "hi", "--max-new-tokens", "2.5"], "argument --max-new-tokens: must be an integer >= 1"),
    (["generate", "hi", "--max-new-tokens", "0"], "argument --max-new-tokens: must be an integer >= 1"),
    (["generate", "hi", "--top-p", "1.5"], "argument --top-p: must be in"),
    (["generate", "hi", "--temperature", "0"], "argument --temperature: must be a number > 0"),
    (["demo", "--eval-n", "0"], "argument --eval-n: must be an integer >= 1"),
    (["experiment", "ranks", "--ranks", "1,x"], "argument --ranks: must be an integer >= 1, got 'x'"),
])
def test_bad_command_line_values_are_named(argv, words, capsys):
    code, text = run_cli(argv, capsys)
    assert code == 2 and words in text, text


def test_bad_model_folder_for_memory_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"hidden_size": "big"}')
    code, text = run_cli(["memory", "--model", str(tmp_path)], capsys)
    assert code == 2 and "'hidden_size' is 'big'" in text and "Traceback" not in text


@pytest.mark.parametrize("text, words", [("[]", "must be a JSON object, got a list"), ("{", "not valid JSON")])
def test_bad_tokenizer_config_is_named(tmp_path, text, words):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models

    from minilora import tokenizer as tokenizers
    Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "a": 2}, unk_token="</s>")).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(text)
    with pytest.raises(ValueError, match=f"tokenizer_config.json: .*{words}"):
        tokenizers.from_file(str(tmp_path / "tokenizer.json"))


# ==================================================================================================
# A user's mistakes beyond the list (found by trying them)
# ==================================================================================================
def saved_adapter(folder, hidden=16, targets=("q_proj", "v_proj")):
    from minilora.lora import LoraConfig, get_peft_model
    get_peft_model(tiny_model(seed=1, hidden=hidden), LoraConfig(r=2, target_modules=list(targets))).save_pretrained(folder)
    return folder


def layout(model):
    """What a failed load must not change: names, values, requires_grad and the layer classes."""
    return ({n: (p.numpy().copy(), p.requires_grad) for n, p in model.named_parameters()},
            [(n, type(m)) for n, m in model.named_modules()])


def same_layout(a, b):
    return a[1] == b[1] and a[0].keys() == b[0].keys() and \
        all(np.array_equal(a[0][k][0], b[0][k][0]) and a[0][k][1] == b[0][k][1] for k in a[0])


def test_adapter_for_another_base_leaves_the_callers_model_as_it_was(tmp_path):
    from minilora.lora import AdapterMismatchError, PeftModel
    other = saved_adapter(str(tmp_path / "hidden32"), hidden=32)
    base = tiny_model()
    before = layout(base)
    with pytest.raises(AdapterMismatchError, match=r"copying a param with shape torch.Size\(\[2, 32\]\) from "
                                                   r"checkpoint, the shape in current model is torch.Size\(\[2, 16\]\)"):
        PeftModel.from_pretrained(base, other)
    assert same_layout(before, layout(base))  # not wrapped, not frozen: usable as it came
    assert isinstance(PeftModel.from_pretrained(base, saved_adapter(str(tmp_path / "fits"))), PeftModel)


def test_failed_load_adapter_leaves_no_wrapped_layers(tmp_path):
    from minilora.lora import AdapterMismatchError, PeftModel
    model = PeftModel.from_pretrained(tiny_model(), saved_adapter(str(tmp_path / "qv")))
    before, ids = layout(model), np.array([[3, 4, 5]])
    logits = model(ids).logits.numpy()
    other = tmp_path / "ko"
    saved_adapter(str(other), targets=("k_proj", "o_proj"))
    config = json.loads((other / "adapter_config.json").read_text())  # config says k/o, the file holds q/v
    shutil.copy(tmp_path / "qv" / "adapter_model.safetensors", other / "adapter_model.safetensors")
    with pytest.raises(AdapterMismatchError, match="which this model does not have"):
        model.load_adapter(str(other), adapter_name="second")
    assert config["target_modules"] and list(model.peft_config) == ["default"]
    assert same_layout(before, layout(model))  # k_proj.weight is not renamed k_proj.base_layer.weight
    assert np.array_equal(model(ids).logits.numpy(), logits)


@pytest.mark.parametrize("name", ["config.json", "adapter_config.json"])
def test_json_that_is_not_utf8_names_its_file(tmp_path, name):
    from minilora.lora import PeftModel
    tiny_model().save_pretrained(str(tmp_path / "model"))
    saved_adapter(str(tmp_path / "adapter"))
    path = tmp_path / ("model" if name == "config.json" else "adapter") / name
    path.write_bytes(path.read_bytes()[:-2] + b"\xff}")
    with pytest.raises(CheckpointError, match=rf"{name}: not valid JSON \(not UTF-8 text: byte \d+ is b'\\xff'\)"):
        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(tmp_path / "model")), str(tmp_path / "adapter"))


@pytest.mark.parametrize("text, words", [
    (b'{"bos_token": "\xff"}', "not valid JSON .*utf-8"),
    (b'{"padding_side": "middle"}', "padding_side must be 'left' or 'right', got 'middle'"),
    (b'{"truncation_side": "both"}', "truncation_side must be 'left' or 'right', got 'both'"),
    (b'{"model_max_length": "2048"}', "model_max_length must be an integer >= 1, got '2048'"),
    (b'{"model_max_length": 0}', "model_max_length must be an integer >= 1, got 0")])
def test_bad_tokenizer_config_values_are_named_at_load(tmp_path, text, words):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models

    from minilora import tokenizer as tokenizers
    Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "a": 2}, unk_token="</s>")).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_bytes(text)
    with pytest.raises(ValueError, match=f"tokenizer_config.json: {words}"):
        tokenizers.from_pretrained(str(tmp_path))


def test_save_into_a_missing_folder_or_onto_a_folder_is_refused(tmp_path):
    state = {"w": ml.ones(2)}
    with pytest.raises(FileNotFoundError, match=r"parent directory .*typo does not exist"):
        ml.save(state, str(tmp_path / "typo" / "w.safetensors"))
    assert not (tmp_path / "typo").exists()  # a typo never creates folders (torch.save refuses too)
    with pytest.raises(IsADirectoryError, match="is a directory; pass a file path"):
        ml.save(state, str(tmp_path))
    assert os.listdir(tmp_path) == []
    ml.save(state, str(tmp_path / "w.safetensors"))
    assert np.array_equal(ml.load(str(tmp_path / "w.safetensors"))["w"].numpy(), np.ones(2, np.float32))


@pytest.mark.parametrize("value", [2.5, "4", True, None])
def test_set_num_threads_takes_an_int_only(value):
    before = ml.num_threads()
    with pytest.raises(TypeError, match="set_num_threads expects an int"):
        ml.set_num_threads(value)  # torch: "set_num_threads expects an int"; 2.5 was silently 2
    assert ml.num_threads() == before


@pytest.mark.parametrize("value", ["abc", "0", "-1", "2.5"])
def test_bad_minilora_num_threads_is_named_at_import(value):
    done = background_runs.run_process([sys.executable, "-c", "import minilora"],
                                       env={**ENV, "MINILORA_NUM_THREADS": value}, cwd=ROOT, timeout=60)
    assert done.returncode != 0 and f"MINILORA_NUM_THREADS must be a whole number >= 1, got '{value}'" in done.stderr


def test_nan_in_the_base_models_file_is_named_not_blamed_on_the_learning_rate(tmp_path):
    from minilora.lora import LoraConfig, get_peft_model
    model = tiny_model()
    model.model.layers[0].self_attn.k_proj.weight._array[0, 0] = np.nan  # as read from a damaged file
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(NonFiniteLossError, match=r"frozen weight '.*k_proj.weight' already holds NaN .* no "
                                                 r"learning rate helps") as caught:
        train(peft, rows(), lr=1e-3, **{**KW, "steps": 2})
    assert "Try a lower learning rate" not in str(caught.value)


def test_model_for_another_tokenizer_is_refused_by_the_commands(tmp_path, capsys):
    tiny_model().save_pretrained(str(tmp_path / "vocab16"))  # the byte tokenizer has 259 tokens
    for argv in (["generate", "hi", "--model", str(tmp_path / "vocab16")],
                 ["train", "--model", str(tmp_path / "vocab16"), "--out", str(tmp_path / "run"), "--steps", "1"]):
        code, text = run_cli(argv, capsys)
        assert code == 2 and "vocab_size 16 but minilora's byte-level tokenizer has 259 tokens (a byte-level model has 259 to 320)" in text, text
    ml.manual_seed(0)
    for vocab, refused in ((500, True), (260, False)):  # a Llama vocabulary fed bytes; a padded byte vocabulary
        LlamaForCausalLM(tiny_config(vocab=vocab)).save_pretrained(str(tmp_path / f"vocab{vocab}"))
        code, text = run_cli(["generate", "hi", "--max-new-tokens", "1", "--model", str(tmp_path / f"vocab{vocab}")], capsys)
        assert (code == 2 and "vocab_size 500 but" in text) if refused else code == 0, text


def test_refused_resume_leaves_the_model_as_it_was(tmp_path):
    out = str(tmp_path)
    train(tiny_model(), rows(), steps=2, lr=1e-2, save_every=1, out_dir=out, **KW)
    path = os.path.join(out, "checkpoint.npz")
    state = load_training_state(path)
    state["optimizer"]["state"][1]["exp_avg"] = np.zeros((3, 3), np.float32)  # another run's optimizer
    save_training_state(path, state)
    model = tiny_model(seed=5)
    before = layout(model)
    with pytest.raises(ValueError, match=r"resume from .*checkpoint.npz: loaded state 'exp_avg' of parameter 1 "
                                         r"has shape \(3, 3\)"):
        train(model, rows(), steps=4, lr=1e-2, save_every=1, out_dir=out, resume=True, **KW)
    assert same_layout(before, layout(model))  # not half the checkpoint's weights


def test_resume_from_a_checkpoint_holding_nan_is_refused_by_name(tmp_path):
    """minilora writes only finite checkpoints; one that holds NaN (edited, or written elsewhere) used to
    resume and fail one step later as "the loss is NaN", blaming the learning rate."""
    out = str(tmp_path)
    train(tiny_model(), rows(), steps=2, lr=1e-2, save_every=1, out_dir=out, **KW)
    path = os.path.join(out, "checkpoint.npz")
    state = load_training_state(path)
    state["optimizer"]["state"][1]["exp_avg_sq"][0] = np.nan
    save_training_state(path, state)
    with pytest.raises(ValueError, match=r"resume from .*checkpoint.npz: 1 weight/optimizer arrays hold NaN or inf "
                                         r"\(first: optimizer.state.1.exp_avg_sq\)"):
        train(tiny_model(), rows(), steps=4, lr=1e-2, save_every=1, out_dir=out, resume=True, **KW)


def saved_lora_adapter(folder, poison=None):
    """A LoRA adapter for tiny_model() in ``folder``; ``poison(tensors)`` edits the file's arrays first."""
    from minilora.checkpoint import load_file
    from minilora.lora import LoraConfig, get_peft_model
    get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(folder))
    if poison is not None:
        path = os.path.join(folder, "adapter_model.safetensors")
        tensors = load_file(path)
        poison(tensors)
        save_file(tensors, path)
    return str(folder)


def test_adapter_weights_holding_nan_or_inf_load_with_a_warning_naming_them(tmp_path):
    """PEFT loads them silently, and every logit is NaN afterwards: minilora warns, naming the tensor."""
    import warnings

    from minilora.lora import PeftModel

    def poison(tensors):
        name = sorted(k for k in tensors if "lora_B" in k)[0]
        tensors[name][0, 0] = np.nan
        tensors[sorted(k for k in tensors if "lora_A" in k)[0]][0, 0] = np.inf
    bad = saved_lora_adapter(tmp_path / "bad", poison)
    with pytest.warns(UserWarning, match=r"adapter .*adapter_model.safetensors: 'base_model.*lora_[AB].weight' and "
                                         r"1 more tensor\(s\) hold NaN or infinite values"):
        model = PeftModel.from_pretrained(tiny_model(), bad)
    with pytest.warns(UserWarning, match="hold NaN or infinite values"):
        model.load_adapter(bad, "again")
    good = saved_lora_adapter(tmp_path / "good")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PeftModel.from_pretrained(tiny_model(), good).load_adapter(good, "two")


def test_minilora_load_warns_about_nan_values(tmp_path):
    import warnings
    path = str(tmp_path / "w.safetensors")
    ml.save({"ok": ml.tensor([1.0, 2.0]), "bad": ml.tensor([1.0, float("inf")])}, path)
    with pytest.warns(UserWarning, match=r"minilora.load\(.*w.safetensors'\): 'bad' hold NaN or infinite"):
        loaded = ml.load(path)
    assert np.isinf(loaded["bad"].numpy()[1])  # loaded as it is: the warning is the point
    ml.save({"ok": ml.tensor([1.0, 2.0]), "ints": ml.tensor([1, 2])}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ml.load(path)


@posix_only
def test_unusable_kernel_cache_folder_names_minilora_cache_dir(tmp_path, monkeypatch):
    from minilora import emulator
    if not emulator.is_available():
        pytest.skip("the CUDA emulator needs a C++ compiler")
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("MINILORA_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    module = emulator.RawModule(code='extern "C" __global__ void nothing(float* x) { x[0] = 1.0f; }')
    with pytest.raises(emulator.EmulatorError, match=r"cannot create the emulator's kernel cache .*a_file/cache.* "
                                                     r"\(Not a directory\); it comes from MINILORA_CACHE_DIR"):
        module.compile()


def test_prompt_bytes_that_are_not_utf8_are_named(capsys):
    code, text = run_cli(["generate", "ab\udcff\udcfe", "--max-new-tokens", "1"], capsys)  # argv of b"ab\xff\xfe"
    assert code == 2 and "the prompt is not UTF-8 text (bytes b'\\xff\\xfe' at character 2)" in text, text


def test_served_prompt_with_a_lone_surrogate_is_a_400_not_a_500():
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from minilora.serve.app import create_app
    from minilora.serve.engine import Engine
    tok = ByteTokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ml.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                                         bos_token_id=256, eos_token_id=257, pad_token_id=258))
    bodies = {"/v1/completions": b'{"model": "base", "prompt": "a\\udcff", "max_tokens": 2}',
              "/v1/chat/completions": b'{"model": "base", "messages": [{"role": "user", "content": "a\\udcff"}]}'}
    with TestClient(create_app(Engine(model, tok, max_batch_size=2, max_queue=2)), raise_server_exceptions=False) as client:
        for route, body in bodies.items():  # valid JSON, but "\udcff" is half a UTF-16 pair: no text
            answer = client.post(route, content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400 and "(a lone surrogate)" in answer.json()["error"]["message"], answer.text
        assert client.post("/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("meta, error, words", [
    ("not json", CheckpointError, "metadata 'minilora' is not valid JSON"),
    ('{"x": "cpu"}', CheckpointError, r"must map tensor names to \[device, requires_grad\]"),
    ('{"x": ["cpu", "yes"]}', CheckpointError, r"must map tensor names to \[device, requires_grad\]"),  # was True
    ('{"x": ["tpu", false]}', RuntimeError, "saved on device 'tpu', which cannot be used here .* map_location='cpu'")])
def test_damaged_minilora_metadata_is_named_by_load(tmp_path, meta, error, words):
    path = str(tmp_path / "w.safetensors")
    save_file({"x": np.ones(2, np.float32)}, path, metadata={"minilora": meta})
    with pytest.raises(error, match=f"w.safetensors.*{words}"):
        ml.load(path)
    if error is RuntimeError:  # as torch.load: map_location puts them where they can go
        assert ml.load(path, map_location="cpu")["x"].device.name == "cpu"


def test_train_names_a_bad_model_folder_or_out_path_in_one_line(tmp_path, capsys):
    tiny_model().save_pretrained(str(tmp_path / "broken"))
    (tmp_path / "broken" / "model.safetensors").unlink()
    (tmp_path / "a_file").write_text("")
    for extra, words in ((["--model", str(tmp_path / "missing")], "missing: no config.json at"),
                         (["--model", str(tmp_path / "broken")], "broken: no model.safetensors"),
                         (["--out", str(tmp_path / "a_file")], "a_file is a file; the run folder must be a folder")):
        argv = ["train", "--out", str(tmp_path / "run"), "--steps", "1", *extra]
        code, text = run_cli(argv, capsys)
        assert code == 2 and words in text and "Traceback" not in text, text


def test_serve_and_demo_name_a_model_for_another_tokenizer_and_an_out_file(tmp_path, capsys):
    from minilora.serve.cli import load_engine
    tiny_model().save_pretrained(str(tmp_path / "vocab16"))  # no tokenizer.json: the byte tokenizer would serve it
    with pytest.raises(ValueError, match="vocab_size 16 but minilora's byte-level tokenizer has 259 tokens.*"
                                         "put the model's tokenizer.json in that folder"):
        load_engine(str(tmp_path / "vocab16"))
    (tmp_path / "a_file").write_text("")
    for command in (["demo"], ["experiment", "ranks"]):
        code, text = run_cli([*command, "--out", str(tmp_path / "a_file")], capsys)
        assert code == 2 and "a_file is a file; the run folder must be a folder" in text, text


@pytest.mark.parametrize("field, value, words", [
    ("rope_theta", 500000.0, r"rope_theta 500000.0 but rope_parameters.rope_theta 10000.0"),
    ("rope_scaling", {"rope_type": "linear", "factor": 2.0}, r"rope_scaling .*'linear'.* but rope_parameters")])
def test_hand_edited_rope_field_that_the_other_format_contradicts_is_refused(tmp_path, field, value, words):
    # minilora writes rope settings twice (transformers 4 and 5 each read one); editing one was ignored
    tiny_model().save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ValueError, match=words):
        LlamaForCausalLM.from_pretrained(str(tmp_path))


def test_rank_pattern_that_is_not_a_dict_is_named():
    from minilora.lora import LoraConfig
    with pytest.raises(TypeError, match=r"rank_pattern must be a dict of module name pattern: value, got \[1\]"):
        LoraConfig(rank_pattern=[1])  # an adapter_config.json with a list: was AttributeError '.items'
    with pytest.raises(TypeError, match="alpha_pattern must be a dict"):
        LoraConfig(alpha_pattern="q_proj")
    assert LoraConfig(rank_pattern=None).rank_pattern == {}  # PEFT reads null as no overrides
