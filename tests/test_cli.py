"""`minilora train`: its help, a full and a LoRA run on a tiny model, resume, clear failures."""
import json
import os

import pytest

import minilora as ml
from minilora.cli import main
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.tokenizer import ByteTokenizer


def run_cli(argv, capsys):
    """``minilora ARGV`` in-process: (exit code, stdout + stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # --help exits through argparse
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_help_explains_the_command(capsys):
    code, out = run_cli(["train", "--help"], capsys)
    assert code == 0 and out.startswith("usage: minilora train")
    for words in ("--task", "--method", "lora", "full", "--steps", "--lr", "--out", "--resume",
                  "reverse", "qa"):
        assert words in out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny byte-level Llama on disk (the shipped base is too slow for a CLI smoke test)."""
    tok = ByteTokenizer()
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    path = str(tmp_path_factory.mktemp("tiny"))
    LlamaForCausalLM(config).save_pretrained(path)
    return path


FAST = ["--eval-n", "2", "--batch-size", "4", "--no-progress", "--warmup-steps", "0"]


def test_train_full_writes_model_metrics_and_checkpoint(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, text = run_cli(["train", "--method", "full", "--model", tiny_model_dir, "--out", out,
                          "--steps", "2", *FAST], capsys)
    assert code == 0, text
    assert "before: qa:" in text and "after:  qa:" in text and "base task" in text
    assert os.path.isfile(os.path.join(out, "model", "model.safetensors"))
    assert os.path.isfile(os.path.join(out, "checkpoint.npz"))
    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))]
    assert steps[:2] == [1, 2]


def test_train_lora_then_resume(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--task", "reverse", "--r", "2", "--model", tiny_model_dir, "--out", out]
    code, text = run_cli(args + ["--steps", "2", *FAST], capsys)
    assert code == 0, text
    assert "trainable params:" in text
    assert os.path.isfile(os.path.join(out, "adapter", "adapter_config.json"))
    code, text = run_cli(args + ["--steps", "3", "--resume", *FAST], capsys)
    assert code == 0, text
    assert "trained 1 steps" in text


def test_resume_says_which_changed_options_make_a_different_run(tiny_model_dir, tmp_path, capsys):
    """A flag forgotten on the resume line (--grad-accum 2 at the start, none at the resume) is allowed, as
    a changed --steps is, but said aloud; a second resume compares with the values then in effect."""
    out = str(tmp_path / "run")
    args = ["train", "--task", "reverse", "--r", "2", "--model", tiny_model_dir, "--out", out, *FAST]
    code, text = run_cli(args + ["--steps", "2", "--grad-accum", "2"], capsys)
    assert code == 0 and "resume:" not in text, text
    code, text = run_cli(args + ["--steps", "3", "--resume"], capsys)
    assert code == 0, text
    assert "resume: --grad-accum 1, but the run was started with --grad-accum 2" in text
    assert "resume: --steps 3, but the run was started with --steps 2" in text
    code, text = run_cli(args + ["--steps", "3", "--resume"], capsys)
    assert code == 0 and "resume: --" not in text, text


def test_train_with_gradient_checkpointing_follows_the_same_losses(tiny_model_dir, tmp_path, capsys):
    losses = []
    for flags in ([], ["--gradient-checkpointing"]):
        out = str(tmp_path / ("ckpt" if flags else "plain"))
        code, text = run_cli(["train", "--task", "qa", "--r", "2", "--lora-dropout", "0.1", "--model",
                              tiny_model_dir, "--out", out, "--steps", "2", *flags, *FAST], capsys)
        assert code == 0, text
        losses.append([json.loads(line)["loss"] for line in open(os.path.join(out, "metrics.jsonl"))
                       if "loss" in json.loads(line)])
    assert losses[0] and losses[0] == losses[1]


def test_resume_without_checkpoint_fails_clearly(tiny_model_dir, tmp_path, capsys):
    code, text = run_cli(["train", "--model", tiny_model_dir, "--out", str(tmp_path / "none"),
                          "--resume", "--steps", "2", *FAST], capsys)
    assert code == 2  # a usage error, as argparse exits
    assert "no checkpoint" in text and "before:" not in text  # fails before any work
