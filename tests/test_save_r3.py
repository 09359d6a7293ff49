"""Nothing a user saved is lost, and what they save comes back as torch gives it back.

``minilora train --out DIR`` on a folder that already holds a run must not silently replace its
checkpoint and metrics: it refuses (exit 2) and names ``--resume`` and ``--overwrite``. ``minilora.save``
takes what ``torch.save`` users save (the tutorial checkpoint dict, file objects) without pickle.
"""
import os
import pickle

import numpy as np
import pytest

import minilora as ml
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
    out = generate(LlamaForCausalLM.from_pretrained(folder), [ids], max_new_tokens=5)
    expected = "hi" + ours.decode(out.numpy()[0, len(ids):].tolist(), skip_special_tokens=True)
    assert main(["generate", "hi", "--model", folder, "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == expected + "\n"


# ---- minilora.save / load: what torch.save / torch.load(weights_only=True) store -------------------------
def _same_structure(ours, theirs):
    """Equal as torch's round trip gives them back: containers, keys (and their types), numbers, tensors."""
    torch = pytest.importorskip("torch")
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, ml.Tensor) and np.array_equal(ours.numpy(), theirs.numpy())
    elif isinstance(theirs, dict):
        assert type(ours) is dict and list(ours) == list(theirs)
        for key in theirs:
            _same_structure(ours[key], theirs[key])
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _same_structure(a, b)
    else:
        assert type(ours) is type(theirs) and (ours == theirs or (ours != ours and theirs != theirs))


def test_a_nested_checkpoint_comes_back_as_torch_load_gives_it(tmp_path):
    torch = pytest.importorskip("torch")
    w = np.arange(6.0).reshape(2, 3)
    def build(lib):
        t = lib.tensor(w)
        return {"epoch": 3, "loss": 0.25, "nan": float("nan"), "note": "warmup", "none": None, "ok": True,
                "shape": (2, 3), "history": [1.5, 2.5], "state": {0: {"step": lib.tensor(4.0), "buf": t}},
                "model": {"weight": t, "bias": lib.tensor([1.0, 2.0])}}
    torch.save(build(torch), tmp_path / "t.pt")
    ml.save(build(ml), tmp_path / "m.pt")
    ours, theirs = ml.load(tmp_path / "m.pt"), torch.load(tmp_path / "t.pt")
    _same_structure(ours, theirs)
    assert ours["state"][0]["buf"] is ours["model"]["weight"]  # one tensor saved twice: shared, as torch's
    assert theirs["state"][0]["buf"] is theirs["model"]["weight"]


def test_tied_weights_in_a_state_dict_stay_one_tensor_and_the_file_stays_plain(tmp_path):
    from safetensors.numpy import load_file
    shared = ml.randn(4, 3)
    ml.save({"embed.weight": shared, "head.weight": shared, "norm": ml.ones(3)}, tmp_path / "w.safetensors")
    back = ml.load(tmp_path / "w.safetensors")
    assert back["embed.weight"] is back["head.weight"] and back["norm"] is not back["embed.weight"]
    assert sorted(load_file(str(tmp_path / "w.safetensors"))) == ["embed.weight", "head.weight", "norm"]


def test_devices_requires_grad_and_numpy_arrays_survive_a_structured_save(tmp_path):
    import io
    p = ml.nn.Parameter(np.ones((2, 2)))
    buffer = io.BytesIO()
    ml.save({"params": [p, ml.zeros(2, device="emu")], "array": np.arange(3), "scalar": np.float32(2.5)}, buffer)
    buffer.seek(0)
    back = ml.load(buffer)
    assert back["params"][0].requires_grad and back["params"][1].device.name == "emu"
    assert isinstance(back["array"], np.ndarray) and back["array"].tolist() == [0, 1, 2]
    assert back["scalar"].dtype == np.float32 and float(back["scalar"]) == 2.5


def test_a_failed_structured_save_leaves_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    ml.save({"epoch": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a module pickles, as torch's; a local lambda not
        ml.save({"epoch": 2, "model": ml.nn.Linear(2, 2), "fn": lambda: 0}, path)
    assert ml.load(path) == {"epoch": 1}
