"""`minilora train --method adalora` on a tiny model: the rank budget is met at the end, the adapter is
saved in PEFT's AdaLoRA format (only the kept ranks) and loads back with the trained model's logits."""
import json
import os

import numpy as np

from minilora.checkpoint import load_file
from minilora.lora import PeftModel
from minilora.models import LlamaForCausalLM

from test_cli import FAST, run_cli, tiny_model_dir  # noqa: F401  (a fixture)

ADALORA = ["--method", "adalora", "--init-r", "4", "--target-r", "2", "--target-modules", "q_proj,v_proj,up_proj"]


def test_train_adalora_meets_the_budget_and_saves_peft_format(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, text = run_cli(["train", "--task", "reverse", "--model", tiny_model_dir, "--out", out, "--steps", "6",
                          "--lr", "0.05", *ADALORA, *FAST], capsys)
    assert code == 0, text
    assert "AdaLoRA ranks per layer" in text
    adapter = os.path.join(out, "adapter")
    config = json.load(open(os.path.join(adapter, "adapter_config.json")))
    assert config["peft_type"] == "ADALORA" and config["total_step"] == 6 and config["init_r"] == 4
    kept = {name: sum(mask) for name, mask in config["rank_pattern"].items()}
    assert len(kept) == 3 and sum(kept.values()) == 2 * 3  # target_r per matrix on average
    tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    for name, rank in kept.items():
        assert tensors[f"base_model.model.{name[:-len('.lora_E')]}.lora_E"].shape == (rank, 1)
    base = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, adapter)
    ids = np.arange(1, 9)[None]
    assert loaded(ids).logits.shape == (1, 8, base.config.vocab_size)


def test_train_adalora_refuses_resume_and_a_schedule_without_budgeting(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, text = run_cli(["train", "--model", tiny_model_dir, "--out", out, "--steps", "3", "--tinit", "3",
                          *ADALORA, *FAST], capsys)
    assert code == 2 and "budgeting phase" in text
    code, text = run_cli(["train", "--model", tiny_model_dir, "--out", out, "--steps", "3", "--resume",
                          *ADALORA, *FAST], capsys)
    assert code != 0 and ("not supported" in text or "no checkpoint" in text)
