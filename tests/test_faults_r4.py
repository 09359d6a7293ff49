"""Bad input to the training tools, round 4: each mistake is refused before any work, naming it.

Covers what ``test_faults.py`` does not: learning-rate schedule and clipping values, data with no token
to learn from (torch's cross_entropy over zero targets is NaN: minilora refuses the data, naming the
example, instead of stopping with a NaN loss blamed on the learning rate), and an ``out_dir`` that is a file.
"""
import numpy as np
import pytest
import torch

import background_runs
import minilora as ml
from minilora import nn
from minilora.data import DataLoader
from minilora.train import train


class TinyLM(nn.Module):
    """An embedding and a head: enough for train() (the loss shifts labels as Llama's does)."""

    def __init__(self, vocab=10):
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, 4)
        self.head = nn.Linear(4, vocab)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.embed(ml.tensor(input_ids)))
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, self.vocab),
                                           ml.tensor(labels)[:, 1:].reshape(-1))

        class Output:
            pass
        out = Output()
        out.loss = loss
        return out


DATA = [([1, 2, 3], [1, 2, 3]), ([2, 3, 4], [-100, 3, 4])]
KW = dict(steps=2, batch_size=2, progress=False, plot=False)


def test_zero_targets_is_nan_in_torch_too():
    """The oracle: torch's mean cross-entropy over no target is NaN, so a step on such a batch cannot work."""
    loss = torch.nn.functional.cross_entropy(torch.zeros(2, 5), torch.tensor([-100, -100]))
    assert torch.isnan(loss)


@pytest.mark.parametrize("labels", [[-100, -100, -100], [5, -100, -100], []])
def test_example_with_no_token_to_learn_from_is_named_before_training(labels):
    """All labels -100 (a prompt truncated past the answer), the only label on the first position (the
    model predicts positions 1..), or an empty example: refused by index, before any step."""
    ids = [5, 6, 7][:len(labels)]
    data = [([1, 2, 3], [1, 2, 3]), (ids, labels)]
    model = TinyLM()
    before = model.head.weight.numpy().copy()
    with pytest.raises(ValueError, match=r"train_data example 1 has no token to learn from"):
        train(model, data, lr=1e-2, **KW)
    assert np.array_equal(model.head.weight.numpy(), before)


def test_example_with_no_target_is_named_through_a_dataloader_too():
    loader = DataLoader([([1, 2, 3], [1, 2, 3])] * 3 + [([1, 2], [-100, -100])], batch_size=2)
    with pytest.raises(ValueError, match=r"train_data example 3 has no token to learn from"):
        train(TinyLM(), loader, lr=1e-2, **KW)


def test_batch_larger_than_the_data_still_trains():
    result = train(TinyLM(), DATA, lr=1e-2, **{**KW, "batch_size": 5})
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))


@pytest.mark.parametrize("value", [-1, 2.5, True, "3"])
def test_warmup_steps_must_be_a_whole_number(value):
    with pytest.raises(ValueError, match=rf"warmup_steps must be an integer >= 0, got {value!r}"):
        train(TinyLM(), DATA, lr=1e-2, warmup_steps=value, **KW)


@pytest.mark.parametrize("value", [float("nan"), -1.0, "1", None])
def test_clip_norm_must_be_a_number_at_least_zero(value):
    """clip_norm=nan gave a NaN loss at step 2 blamed on the learning rate; -1 flipped every gradient's
    sign (torch's clip_grad_norm_ multiplies by max_norm / norm, unclamped below) and trained uphill."""
    with pytest.raises(ValueError, match=r"clip_norm must be a number >= 0 \(0 turns clipping off\)"):
        train(TinyLM(), DATA, lr=1e-2, clip_norm=value, **KW)


@pytest.mark.parametrize("lr", [float("nan"), -1.0, float("inf")])
def test_bad_learning_rate_is_named(lr):
    with pytest.raises(ValueError, match="(?i)invalid learning rate|lr must be"):
        train(TinyLM(), DATA, lr=lr, **KW)


def test_out_dir_that_is_a_file_is_named(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="out_dir .*a_file' is a file"):
        train(TinyLM(), DATA, lr=1e-2, out_dir=str(path), **KW)
    assert path.read_text() == "keep me"


def run_cli(argv, capsys):
    from minilora.cli import main
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("extra", [[], ["--lr", "1e-3"]])
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", bytes(range(100))],
                         ids=["empty", "cut-zip", "not-a-zip"])
def test_resume_from_a_truncated_checkpoint_is_a_usage_error(tmp_path, capsys, content, extra):
    """With or without --lr (which skips reading the old run's lr): one line naming the file, exit 2,
    before any work (with --lr it was a traceback from deep inside np.load)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(content)
    code, text = run_cli(["train", "--resume", "--out", str(run), "--steps", "2", *extra], capsys)
    assert code == 2 and "Traceback" not in text, text
    assert "minilora train: error: " in text and "checkpoint.npz" in text and "truncated or corrupted" in text, text
    assert (run / "checkpoint.npz").read_bytes() == content  # nothing the user saved is touched


def test_resume_without_a_checkpoint_is_a_usage_error(tmp_path, capsys):
    code, text = run_cli(["train", "--resume", "--out", str(tmp_path / "none"), "--steps", "2"], capsys)
    assert code == 2 and "minilora train: error: --resume, but there is no checkpoint at" in text, text
    assert not (tmp_path / "none").exists()


def saved_run(folder, run_json):
    from minilora.train import save_training_state
    folder.mkdir()
    save_training_state(str(folder / "checkpoint.npz"), {"step": 1, "scheduler": {"base_lrs": [1e-3]}})
    (folder / "run.json").write_bytes(run_json)
    return folder


@pytest.mark.parametrize("run_json, words", [(b"[1, 2]", "must be a JSON object, got a list"),
                                             (b"{bad", "not valid JSON"),
                                             (b'{"method": "\xff"}', "not valid JSON")],
                         ids=["list", "syntax", "not-utf8"])
def test_resume_with_a_damaged_run_json_is_a_usage_error(tmp_path, capsys, run_json, words):
    run = saved_run(tmp_path / "run", run_json)
    code, text = run_cli(["train", "--resume", "--out", str(run), "--steps", "2"], capsys)
    assert code == 2 and "Traceback" not in text and "run.json" in text and words in text, text
    assert (run / "run.json").read_bytes() == run_json


def test_python_dash_m_minilora_cli_reports_usage_errors_in_one_line(tmp_path):
    """`python -m minilora.cli` ran the file as __main__, whose UsageError is another class than the one
    the commands raise (minilora.cli's): every usage error found late was a traceback with exit 1."""
    import os
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    (tmp_path / "a_file").write_text("")
    done = background_runs.run_process([sys.executable, "-m", "minilora.cli", "train", "--out",
                                        str(tmp_path / "a_file"), "--steps", "1"], env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "minilora train: error: --out" in done.stderr


@pytest.mark.parametrize("make_argv, words", [
    (lambda tmp: ["--block-size", "257"], "--block-size: must be at most the model's max_position_embeddings 256"),
    (lambda tmp: ["--out", str(tmp / "a_file")], "--out: "),
    (lambda tmp: ["--run-dir", str(tmp / "a_file")], "--run-dir: ")], ids=["block", "out", "run-dir"])
def test_pretrain_refuses_bad_arguments_before_any_work(tmp_path, capsys, monkeypatch, make_argv, words):
    """A block past the positions the saved config declares trained silently past them; an --out or
    --run-dir that is a file failed after the run (or at its first checkpoint)."""
    from minilora import pretrain
    monkeypatch.setattr(pretrain, "pretrain", lambda *a, **k: pytest.fail("pretraining started"))
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(SystemExit) as stop:
        pretrain.main(["--steps", "1", "--out", str(tmp_path / "o"), "--run-dir", str(tmp_path / "r"),
                       *make_argv(tmp_path)])
    assert stop.value.code == 2 and words in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "keep me"


@pytest.mark.parametrize("items, words", [
    (["abc", "def"], r"item 0 should be an \(ids, labels\) pair, got str"),
    ([([1, 2], [1, 2]), [3]], r"item 1 should be an \(ids, labels\) pair, got list of length 1"),
    ([([1, 2], [1, 2]), ([1, 2], [1])], "labels 1 should be a 1-D sequence of integers of length 2"),
    ([([1, 2.5], [1, 2])], "sequence 0 should be a 1-D sequence of integers"),
    (np.arange(5), r"an array of items must be \[N, T\] packed rows, got shape \(5,\)")],
    ids=["strings", "not-a-pair", "labels-length", "float-ids", "1-d-array"])
def test_dataloader_names_a_bad_item_when_built(items, words):
    """Found when the loader is made, not at the batch that first draws the item (a 1-D array batched
    into 1-D 'rows' with no error at all)."""
    with pytest.raises((TypeError, ValueError), match=words):
        DataLoader(items, batch_size=2)


@pytest.mark.parametrize("block_size", [0, -1, 2.5, True])
def test_pack_block_size_must_be_a_whole_number(block_size):
    from minilora.data import pack
    with pytest.raises(ValueError, match=rf"pack: block_size must be an integer >= 1, got {block_size!r}"):
        pack([1, 2, 3], block_size)


@pytest.mark.parametrize("field", ["prompt", "answer"])
@pytest.mark.parametrize("value", [None, 5, ["a"]])
def test_example_text_of_the_wrong_type_is_named(field, value):
    from minilora.data import Example, encode_example
    from minilora.tokenizer import ByteTokenizer
    example = Example(**{"prompt": "Q", "answer": "A", field: value})
    with pytest.raises(TypeError, match=rf"Example\.{field} must be a str, got {type(value).__name__}"):
        encode_example(ByteTokenizer(), example)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_truncation_keeps_special_tokens_as_transformers(tmp_path, side, add_special_tokens):
    """A prompt longer than max_length, truncation=True: transformers cuts the text and keeps the BOS;
    minilora cut the row with its BOS, so truncation_side='left' silently dropped the BOS."""
    transformers = pytest.importorskip("transformers")
    from minilora import tokenizer as mt
    mt.ByteTokenizer().save_pretrained(str(tmp_path))
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    for mine in (mt.ByteTokenizer(), mt.from_pretrained(str(tmp_path))):
        mine.truncation_side = hf.truncation_side = side
        for max_length in range(1, 8):
            kw = dict(truncation=True, max_length=max_length, add_special_tokens=add_special_tokens)
            for text in ("hello world", ["hello world", "hi"]):
                assert dict(mine(text, **kw)) == dict(hf(text, **kw)), (type(mine).__name__, kw, text)


@pytest.mark.parametrize("text", [5, None, b"ab"], ids=["int", "None", "bytes"])
def test_encode_of_what_is_not_text_is_transformers_value_error(tmp_path, text):
    transformers = pytest.importorskip("transformers")
    from minilora import tokenizer as mt
    mt.ByteTokenizer().save_pretrained(str(tmp_path))
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="text input must be of type `str`"):
        hf.encode(text)
    for mine in (mt.ByteTokenizer(), mt.from_pretrained(str(tmp_path))):
        with pytest.raises(ValueError, match="text input must be of type `str`"):
            mine.encode(text)


def test_resume_from_a_checkpoint_that_train_did_not_write_is_named(tmp_path, capsys):
    """A checkpoint without the model's entry (hand-made, or another program's .npz): a KeyError
    traceback from inside train() before; now ResumeError (a ValueError) naming the file and the entry,
    and `minilora train --resume` reports it in one line with exit 2."""
    from minilora.train import ResumeError, save_training_state
    path = tmp_path / "checkpoint.npz"
    save_training_state(str(path), {"step": 1, "scheduler": {"base_lrs": [1e-3]}})
    with pytest.raises(ResumeError, match=r"checkpoint.npz: the checkpoint has no 'model' entry"):
        train(TinyLM(), DATA, lr=1e-2, resume=str(path), **KW)
    run = saved_run(tmp_path / "run", b"{}")
    (run / "run.json").unlink()
    code, text = run_cli(["train", "--resume", "--out", str(run), "--steps", "2", "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in text, text
    assert "minilora train: error: --resume: resume from" in text and "no 'model' entry" in text, text
