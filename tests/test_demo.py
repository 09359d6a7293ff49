"""`minilora demo` and `minilora experiment`: the help texts, and a smoke run of the whole demo with a
few steps (outputs written, merged == unmerged, the base model intact, the adapter reloadable)."""
import json
import os

import numpy as np
import pytest

import minilora as ml
from minilora import cli
from minilora.device import all_devices
from minilora.lora import PeftModel
from minilora.models import BASE_DIR, LlamaForCausalLM


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The shipped base model's folder, or (where it is missing) a small random model saved to disk."""
    if os.path.isfile(os.path.join(BASE_DIR, "config.json")):
        return BASE_DIR
    from minilora.pretrain import base_config
    config = base_config()
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 32, 64, 2
    config.head_dim = 8
    ml.manual_seed(0)
    folder = str(tmp_path_factory.mktemp("base"))
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("command, words", [
    ("demo", ["--steps", "--rank", "--task", "--out", "--device", "--model", "LoRA"]),
    ("experiment", ["ranks", "--ranks", "--no-full", "--steps"]),
])
def test_help(capsys, command, words):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(w in text for w in words)


def test_demo_smoke_run(tmp_path, base, capsys):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--steps", "3", "--rank", "2", "--eval-n", "3", "--batch-size", "4",
                     "--out", str(out), "--model", base, "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "trainable params: " in printed and "full fine-tuning" in printed and "activations" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["rank"] == 2
    assert summary["merged_equals_unmerged"] and summary["disabled_equals_base"]
    assert summary["reload_max_abs_diff"] == 0.0
    assert summary["adapter_bytes"] < summary["full_checkpoint_bytes"]
    assert summary["memory"]["lora_optimizer_state"] < summary["memory"]["full_optimizer_state"]
    assert summary["memory"]["lora_checkpointed_activations"] < summary["memory"]["lora_activations"] / 3
    assert len([line for line in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in line]) == 3
    pytest.importorskip("matplotlib")
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The adapter reloads onto a fresh base, in PEFT's format, and changes the outputs (B moved in 3 steps).
    adapter = out / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 2
    reloaded = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), str(adapter))
    assert reloaded.get_nb_trainable_parameters()[1] == summary["all_params"]
    ids = np.array([[1, 2, 3, 4, 5]])
    with ml.no_grad():
        with_adapter = reloaded(ids).logits.numpy()
        with reloaded.disable_adapter():
            without = reloaded(ids).logits.numpy()
    assert not np.array_equal(with_adapter, without)


def test_demo_refuses_bad_choices(tmp_path, capsys):
    assert cli.main(["demo", "--task", "facts", "--out", str(tmp_path)]) == 2  # the base task, not downstream
    error = capsys.readouterr().err  # one line on stderr, as argparse prints its errors
    assert error.startswith("minilora demo: error: ") and "qa" in error
    if not next(d for d in all_devices() if d.name == "cuda").enabled():
        assert cli.main(["demo", "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "minilora demo: error: " in capsys.readouterr().err


def test_demo_names_the_model_with_model_and_base_is_a_deprecated_alias(capsys, monkeypatch):
    """Every other command (train, generate, info, serve) takes --model; demo's --base still works, warned."""
    from minilora import demo
    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda *args, **kwargs: seen.append(args[9]))
    monkeypatch.setattr(demo, "run_rank_experiment", lambda *args, **kwargs: seen.append(args[11]))
    assert cli.main(["demo", "--model", "m1"]) == 0 and seen.pop() == "m1"
    assert "deprecated" not in capsys.readouterr().err
    assert cli.main(["demo", "--base", "m2"]) == 0 and seen.pop() == "m2"
    assert "minilora demo: warning: --base is deprecated; use --model m2" in capsys.readouterr().err
    assert cli.main(["experiment", "ranks", "--base", "m3", "--model", "m3"]) == 0 and seen.pop() == "m3"
    assert cli.main(["demo"]) == 0 and seen.pop() is None  # the shipped base
    assert cli.main(["demo", "--model", "m1", "--base", "m2"]) == 2
    assert "named twice" in capsys.readouterr().err and not seen
