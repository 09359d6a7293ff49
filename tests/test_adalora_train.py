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


def test_memory_estimate_knows_adalora_parameters():
    """memory.peft_layout / estimate count AdaLoRA's A, E, B (trained) and ranknum (frozen) exactly as
    get_peft_model builds them, and `minilora memory --adalora` reports them."""
    from minilora import memory
    from minilora.lora import AdaLoraConfig, get_peft_model
    from minilora.models import LlamaConfig
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    ada = AdaLoraConfig(init_r=5, target_modules=["q_proj", "down_proj"], total_step=10)
    model = get_peft_model(LlamaForCausalLM(config), ada)
    real = {n: (tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()}
    layout = {p.name: (tuple(p.shape), p.trainable) for p in memory.peft_layout(config, ada)}
    assert layout == real
    estimate = memory.estimate(config, ada)
    assert estimate.trainable_params == 2 * (5 * 16 + 5 + 16 * 5) + 2 * (5 * 24 + 5 + 16 * 5)


def test_minilora_memory_adalora_command(capsys):
    code, text = run_cli(["memory", "--preset", "llama-2-7b", "--adalora", "--r", "12"], capsys)
    assert code == 0, text
    # 32 layers x (q_proj, v_proj) x (A 12x4096 + E 12 + B 4096x12)
    assert "AdaLoRA init_r=12" in text and f"trainable params: {64 * (12 * 4096 + 12 + 4096 * 12):,d}" in text
