"""The training loop: loss falls, resume is bit-exact, NaN stops cleanly, checkpoints are atomic."""
import json
import os
import types

import numpy as np
import pytest

import minilora as ml
from minilora import nn
from minilora import train as train_mod
from minilora.data import DataLoader
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.nn.llama import causal_lm_loss
from minilora.train import (NonFiniteLossError, load_training_state, save_training_state, train)

VOCAB = 16


def tiny_llama(seed=0):
    ml.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=32, bos_token_id=0,
                      eos_token_id=1, pad_token_id=2)
    return LlamaForCausalLM(cfg)


class DropoutLM(nn.Module):
    """Embedding -> Dropout -> Linear: a model whose losses depend on the random generator, so a
    resume that forgot to restore it would show."""

    def __init__(self, seed=0):
        super().__init__()
        ml.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, 12)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(12, VOCAB)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.drop(self.embed(input_ids)))
        return types.SimpleNamespace(logits=logits, loss=causal_lm_loss(logits, labels))


def counting_rows(n=40, length=12):
    """A learnable task: each row counts upward mod 13 from a different start."""
    return np.array([[(i + j) % 13 + 3 for j in range(length)] for i in range(n)], dtype=np.int64)


def crash_at(items, batch_index, batch_size=8, seed=0):
    """A DataLoader that dies (like a killed process) when asked for ``batch_index``."""
    loader = DataLoader(items, batch_size, seed)
    original = loader.batch

    def batch(i):
        if i == batch_index:
            raise KeyboardInterrupt("simulated kill")
        return original(i)
    loader.batch = batch
    return loader


KW = dict(batch_size=8, lr=1e-2, warmup_steps=2, progress=False)


def test_loss_falls_on_a_tiny_task(tmp_path):
    result = train(tiny_llama(), counting_rows(), steps=40, out_dir=str(tmp_path), **KW)
    assert result.final_loss < 0.5 * result.losses[0], result.losses
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 41))
    assert os.path.exists(tmp_path / "checkpoint.npz")


def test_loss_curve_png(tmp_path):
    pytest.importorskip("matplotlib")
    train(tiny_llama(), counting_rows(), counting_rows()[:8], steps=4, eval_every=2,
          out_dir=str(tmp_path), **KW)
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make_model", [tiny_llama, DropoutLM], ids=["llama", "dropout"])
def test_resume_gives_the_identical_trajectory(tmp_path, make_model):
    rows = counting_rows()
    straight_model = make_model()
    straight = train(straight_model, rows, steps=6, **KW)

    out = str(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # killed while fetching step 4's batch
        train(make_model(), crash_at(rows, 3), steps=6, out_dir=out, save_every=3, **KW)
    assert load_training_state(os.path.join(out, "checkpoint.npz"))["step"] == 3
    resumed_model = make_model(seed=99)  # different init: the checkpoint must overwrite it
    resumed = train(resumed_model, rows, steps=6, out_dir=out, resume=True, **KW)

    assert resumed.losses == straight.losses  # bit for bit, steps 1-3 restored and 4-6 recomputed
    assert resumed.steps_run == 3
    for (name, a), (_, b) in zip(straight_model.named_parameters(), resumed_model.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log was cut back to step 3, then continued


def test_dropout_model_depends_on_the_seed():
    """Guards the test above: with another seed the dropout model's losses do change."""
    a = train(DropoutLM(), counting_rows(), steps=3, seed=0, **KW)
    b = train(DropoutLM(), counting_rows(), steps=3, seed=1, **KW)
    assert a.losses != b.losses


def test_gradient_accumulation_matches_the_big_batch():
    rows = counting_rows()
    big = train(tiny_llama(), rows, steps=4, **KW)
    accumulated = train(tiny_llama(), rows, steps=4, grad_accum=2, **{**KW, "batch_size": 4})
    np.testing.assert_allclose(accumulated.losses, big.losses, rtol=1e-5)


def test_only_trainable_parameters_change_and_are_saved(tmp_path):
    model = tiny_llama()
    model.requires_grad_(False)
    model.lm_head.weight.requires_grad_(True)
    frozen = {n: p.numpy().copy() for n, p in model.named_parameters() if not p.requires_grad}
    train(model, counting_rows(), steps=3, out_dir=str(tmp_path), **KW)
    for name, p in model.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(p.numpy(), frozen[name], err_msg=name)
    state = load_training_state(str(tmp_path / "checkpoint.npz"))
    assert list(state["model"]) == ["lm_head.weight"]


class NaNAfter(nn.Module):
    """Wraps a model; its loss becomes NaN from the ``bad_call``-th forward on."""

    def __init__(self, model, bad_call):
        super().__init__()
        self.inner, self.bad_call, self.calls = model, bad_call, 0

    def forward(self, input_ids, labels=None):
        self.calls += 1
        out = self.inner(input_ids, labels=labels)
        if self.calls >= self.bad_call:
            out.loss = out.loss * float("nan")
        return out


def test_nan_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    out = str(tmp_path)
    model = NaNAfter(tiny_llama(), bad_call=5)
    with pytest.raises(NonFiniteLossError, match=r"step 5: the loss is nan.*checkpoint\.npz") as info:
        train(model, counting_rows(), steps=10, out_dir=out, save_every=2, **KW)
    assert info.value.step == 5 and info.value.checkpoint.endswith("checkpoint.npz")
    assert info.value.result.losses == pytest.approx(info.value.result.losses[:4])
    state = load_training_state(info.value.checkpoint)
    assert state["step"] == 4
    assert all(np.isfinite(w).all() for w in state["model"].values())
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert max(steps) == 4


class NaNGradient(nn.Module):
    """Finite loss, NaN gradient: adds ``0 * sqrt(w - w)``, whose derivative is ``0 / 0``."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, input_ids, labels=None):
        out = self.inner(input_ids, labels=labels)
        w = self.inner.lm_head.weight
        out.loss = out.loss + 0.0 * ml.sqrt(w - w).sum()
        return out


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_gradient_norm_also_stops():
    with pytest.raises(NonFiniteLossError, match="step 1: the gradient norm is nan"):
        train(NaNGradient(tiny_llama()), counting_rows(), steps=3, **KW)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.npz")
    save_training_state(path, {"step": 1, "w": np.arange(4.0)})

    def dying_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("simulated crash: disk full")
    monkeypatch.setattr(train_mod.np, "savez", dying_savez)
    with pytest.raises(OSError, match="simulated crash"):
        save_training_state(path, {"step": 2, "w": np.zeros(4)})
    monkeypatch.undo()

    state = load_training_state(path)
    assert state["step"] == 1
    np.testing.assert_array_equal(state["w"], np.arange(4.0))
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # no temporary file left behind


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = str(tmp_path / "checkpoint.npz")
    save_training_state(path, {"step": 1, "w": np.arange(100.0)})
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        load_training_state(path)


def test_state_round_trip_keeps_types():
    state = {"step": 3, "betas": (0.9, 0.99), "state": {0: {"step": 2, "m": np.ones((2, 2))}},
             "rng": ml.random.generator().bit_generator.state, "none": None}
    arrays = {}
    flat = train_mod._flatten(state, "s", arrays)
    back = train_mod._unflatten(json.loads(json.dumps(flat)), arrays)
    assert back["betas"] == (0.9, 0.99) and 0 in back["state"] and back["rng"] == state["rng"]


def test_resume_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_llama(), counting_rows(), steps=2, out_dir=str(tmp_path), resume=True, **KW)
    train(tiny_llama(), counting_rows(), steps=2, out_dir=str(tmp_path), **KW)
    other = tiny_llama()
    other.requires_grad_(False)
    other.lm_head.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="trainable parameters"):
        train(other, counting_rows(), steps=4, out_dir=str(tmp_path), resume=True, **KW)


def tiny_lora(seed=0):
    """A LoRA-wrapped tiny Llama, with LoRA dropout so the random generator matters."""
    from minilora.lora import LoraConfig, get_peft_model
    model = tiny_llama(seed)
    ml.manual_seed(0)  # the same LoRA init whatever ``seed`` the base had
    return get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.2,
                                            target_modules=["q_proj", "v_proj"]))


def test_lora_trains_only_adapters_and_resumes_bit_exact(tmp_path):
    rows = counting_rows()
    straight = train(tiny_lora(), rows, steps=4, **KW)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_lora(), crash_at(rows, 2), steps=4, out_dir=str(tmp_path), save_every=2, **KW)
    resumed = train(tiny_lora(), rows, steps=4, out_dir=str(tmp_path), resume=True, **KW)
    assert resumed.losses == straight.losses
    saved = load_training_state(str(tmp_path / "checkpoint.npz"))["model"]
    assert saved and all(".lora_A." in name or ".lora_B." in name for name in saved)
