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


def test_generate_reads_the_model_folders_tokenizer_json_as_serve_does(tmp_path, capsys):
    """``--model DIR`` with DIR/tokenizer.json: that tokenizer (as ``minilora serve`` and transformers
    use it), not the byte-level default, which would refuse the vocabulary or decode wrong text."""
    tokenizers = __import__("pytest").importorskip("tokenizers")
    import minilora as ml
    from minilora import tokenizer as ml_tokenizers
    from minilora.generate import generate
    from minilora.models import LlamaConfig, LlamaForCausalLM
    vocab = {w: i for i, w in enumerate(["a", "b", "c", "hi", "there", "[UNK]"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder = str(tmp_path / "words")
    os.makedirs(folder)
    tok.save(os.path.join(folder, "tokenizer.json"))
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(folder)
    ours = ml_tokenizers.from_pretrained(folder)
    ids = ours.encode("hi")
    out = generate(LlamaForCausalLM.from_pretrained(folder), ids, max_new_tokens=5)
    expected = "hi" + ours.decode(out.numpy()[len(ids):].tolist(), skip_special_tokens=True)
    assert main(["generate", "hi", "--model", folder, "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == expected + "\n"
