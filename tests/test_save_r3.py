"""Round 3 (h51): CLI runs that must not lose work.

``minilora train --out DIR`` on a folder that already holds a run must not silently replace its
checkpoint and metrics: it refuses (exit 2) and names ``--resume`` and ``--overwrite``.
"""
import os

from minilora.cli import main


def _old_run(tmp_path, *names):
    out = tmp_path / "run"
    out.mkdir()
    for name in names:
        (out / name).write_bytes(b"the earlier run's work")
    return out


def test_train_refuses_to_replace_an_earlier_runs_checkpoint(tmp_path, capsys):
    out = _old_run(tmp_path, "checkpoint.npz", "metrics.jsonl")
    assert main(["train", "--out", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and str(out) in err
    assert (out / "checkpoint.npz").read_bytes() == b"the earlier run's work"
    assert (out / "metrics.jsonl").read_bytes() == b"the earlier run's work"
    assert not (out / "run.json").exists()  # nothing written before the refusal


def test_train_refuses_when_only_metrics_are_there(tmp_path, capsys):
    out = _old_run(tmp_path, "metrics.jsonl")
    assert main(["train", "--out", str(out), "--steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_train_overwrite_gets_past_the_refusal(tmp_path, capsys):
    out = _old_run(tmp_path, "checkpoint.npz", "metrics.jsonl")
    # A missing --model stops the run right after the check, without training: the error shows
    # the run got past the refusal.
    code = main(["train", "--out", str(out), "--overwrite", "--model", str(tmp_path / "absent")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "--overwrite" not in err


def test_train_into_an_empty_folder_is_not_refused(tmp_path, capsys):
    out = _old_run(tmp_path)
    assert main(["train", "--out", str(out), "--model", str(tmp_path / "absent")]) == 2
    assert "--model" in capsys.readouterr().err
