"""Well-known LoRA / fine-tuning tutorials ported line by line, run side by side with torch, PEFT and
transformers on the same weights, every printed value compared:

* Sebastian Raschka's "LoRA from scratch": a user-written ``LoRALayer`` / ``LinearWithLoRA`` /
  ``LinearWithLoRAMerged`` / DoRA-from-scratch, swapped in with ``setattr`` over ``named_modules()``,
  frozen with ``requires_grad = False``, trainable parameters counted, a few Adam steps;
* the PEFT quicktour on a tiny random Llama: ``LoraConfig(task_type=TaskType.CAUSAL_LM, ...)``,
  ``print(model)``, ``print_trainable_parameters``, AdamW + ``get_linear_schedule_with_warmup``,
  ``save_pretrained`` / ``PeftModel.from_pretrained`` both ways, ``merge_and_unload``, ``generate``;
* HF's causal-LM loss by hand (shifted logits, ``CrossEntropyLoss``), gradient accumulation,
  ``clip_grad_norm_``, perplexity with ``math.exp``.

Dropout is 0 where numbers must match. Skipped when torch / transformers / peft are not installed."""
import contextlib
import io
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402

from test_llama import hf_model  # noqa: E402

TINY = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   pad_token_id=0, bos_token_id=1, eos_token_id=2)


def llama_pair():
    """transformers' Llama and minilora's, holding the same random float32 weights, both with "eager" attention
    (hf_model's: minilora's default "sdpa" is torch's flash kernel's bits under no_grad, where MKL is the BLAS)."""
    reference = hf_model(transformers, TINY, dtype="float32")
    model = LlamaForCausalLM(TINY, dtype="float32")
    model.config._attn_implementation = "eager"
    model.load_state_dict({k: v.numpy(force=True) for k, v in reference.state_dict().items()})
    return reference, model


def same_text(torch_text, ml_text):
    """Printed text, the library's name aside (torch.Size / minilora.Size; minilora's dtypes print bare)."""
    def bare(text):
        return text.replace("minilora.", "").replace("torch.", "")
    assert bare(ml_text) == bare(torch_text)


def set_adapter_weights(T, model, seed=1):
    """Copy the same random numbers into every lora_A / lora_B (B nonzero: the adapter matters)."""
    rng = np.random.default_rng(seed)
    with T.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                scale = 0.3 if "lora_A" in name else 0.1
                p.copy_(T.tensor(rng.standard_normal(tuple(p.shape)).astype("f4") * scale))


# ==================================================================================================
# (1) Raschka's LoRA from scratch: the same code, `T` is torch or minilora
# ==================================================================================================
def raschka_tutorial(T, nn, F, weights):
    class LoRALayer(nn.Module):
        def __init__(self, in_dim, out_dim, rank, alpha):
            super().__init__()
            self.A = nn.Parameter(T.randn(in_dim, rank) / T.sqrt(T.tensor(rank).float()))
            self.B = nn.Parameter(T.zeros(rank, out_dim))
            self.alpha = alpha

        def forward(self, x):
            return self.alpha * (x @ self.A @ self.B)

    class LinearWithLoRA(nn.Module):
        def __init__(self, linear, rank, alpha):
            super().__init__()
            self.linear = linear
            self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

        def forward(self, x):
            return self.linear(x) + self.lora(x)

    class LinearWithLoRAMerged(LinearWithLoRA):
        def forward(self, x):
            lora = self.lora.A @ self.lora.B
            combined_weight = self.linear.weight + self.lora.alpha * lora.T
            return F.linear(x, combined_weight, self.linear.bias)

    class LinearWithDoRAMerged(LinearWithLoRA):
        def __init__(self, linear, rank, alpha):
            super().__init__(linear, rank, alpha)
            self.magnitude = nn.Parameter(self.linear.weight.norm(p=2, dim=0, keepdim=True))

        def forward(self, x):
            lora = self.lora.A @ self.lora.B
            numerator = self.linear.weight + self.lora.alpha * lora.T
            denominator = numerator.norm(p=2, dim=0, keepdim=True)
            new_weight = self.magnitude * (numerator / denominator)
            return F.linear(x, new_weight, self.linear.bias)

    printed = []
    for wrapper in (LinearWithLoRA, LinearWithLoRAMerged, LinearWithDoRAMerged):
        T.manual_seed(123)
        model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
        with T.no_grad():
            for name, p in model.named_parameters():
                p.copy_(T.tensor(weights[name]))
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Linear):
                setattr(model, name, wrapper(module, rank=4, alpha=8))
        with T.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("lora.A", "lora.B")):
                    p.copy_(T.tensor(weights[name]))
        for param in model.parameters():
            param.requires_grad = False
        for name, param in model.named_parameters():
            if "lora" in name or "magnitude" in name:
                param.requires_grad = True
        printed.append(str(model))
        printed.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
        printed += [f"{n}: {p.requires_grad} {p.shape} {p.dtype}" for n, p in model.named_parameters()]
        x, y = T.tensor(weights["x"]), T.tensor(weights["y"])
        optimizer = T.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(3):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            printed.append((round(loss.item(), 5), str(loss.dtype), tuple(logits.shape)))
        model.eval()
        with T.no_grad():
            _, predicted = T.max(model(x), dim=1)
            printed.append(((predicted == y).sum().item(), (predicted == y).float().mean().item(), str(predicted.dtype)))
    return printed


def raschka_weights():
    rng = np.random.default_rng(0)
    weights = {"x": rng.standard_normal((16, 10)).astype("f4"), "y": rng.integers(0, 3, 16)}
    for index, (fan_in, fan_out) in zip((0, 2, 4), ((10, 8), (8, 6), (6, 3))):
        weights[f"{index}.weight"] = rng.standard_normal((fan_out, fan_in)).astype("f4") * 0.3
        weights[f"{index}.bias"] = rng.standard_normal(fan_out).astype("f4") * 0.1
        weights[f"{index}.lora.A"] = rng.standard_normal((fan_in, 4)).astype("f4") * 0.5
        weights[f"{index}.lora.B"] = rng.standard_normal((4, fan_out)).astype("f4") * 0.1
    return weights


def test_raschka_lora_from_scratch_prints_what_torch_prints():
    weights = raschka_weights()
    expected = raschka_tutorial(torch, torch.nn, torch.nn.functional, weights)
    got = raschka_tutorial(ml, ml.nn, ml.nn.functional, weights)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        if isinstance(e, tuple) and isinstance(e[0], float):  # a loss: float32 sums in another order
            same_text(str(e[1:]), str(g[1:]))
            assert g[0] == pytest.approx(e[0], abs=2e-5)
        else:
            same_text(str(e), str(g))


# ==================================================================================================
# (2) the PEFT quicktour on a tiny random Llama
# ==================================================================================================
def quicktour(T, P, model, optim, linear_schedule_with_warmup, tmp_path):
    printed = []
    peft_config = P.LoraConfig(task_type=P.TaskType.CAUSAL_LM, inference_mode=False, r=8, lora_alpha=32,
                               lora_dropout=0.0)
    model = P.get_peft_model(model, peft_config)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        model.print_trainable_parameters()
    printed.append(out.getvalue())
    set_adapter_weights(T, model)
    optimizer = optim.AdamW(model.parameters(), lr=1e-2)
    lr_scheduler = linear_schedule_with_warmup(optimizer=optimizer, num_warmup_steps=2, num_training_steps=6)
    input_ids = T.tensor(np.random.default_rng(2).integers(3, 37, (2, 6)))
    model.train()
    for step in range(6):
        outputs = model(input_ids=input_ids, attention_mask=T.ones_like(input_ids), labels=input_ids)
        outputs.loss.backward()
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        printed.append((round(outputs.loss.item(), 5), lr_scheduler.get_last_lr(), tuple(outputs.logits.shape),
                        str(outputs.logits.dtype)))
    model.save_pretrained(str(tmp_path))
    merged = model.merge_and_unload()
    printed.append(type(merged).__name__)
    merged.eval()
    prompt = T.tensor([[0, 0, 5, 6, 7], [4, 5, 6, 7, 8]])  # left padded, as for generation
    attention_mask = T.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with T.no_grad():
        generated = merged.generate(input_ids=prompt, attention_mask=attention_mask, max_new_tokens=4,
                                    do_sample=False, pad_token_id=0)
    printed += [generated.tolist(), str(generated.dtype)]
    return printed


def test_peft_quicktour_trains_saves_merges_and_generates_as_peft(tmp_path):
    reference, model = llama_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = quicktour(torch, peft, reference, torch.optim, transformers.get_linear_schedule_with_warmup,
                             tmp_path / "peft")
        got = quicktour(ml, ml_peft, model, ml.optim, ml.optim.lr_scheduler.get_linear_schedule_with_warmup,
                        tmp_path / "minilora")
    for e, g in zip(expected, got):
        same_text(str(e), str(g))
    # each library loads the other's adapter: the same logits
    ids = np.random.default_rng(3).integers(3, 37, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, model = llama_pair()
        theirs = peft.PeftModel.from_pretrained(reference, str(tmp_path / "minilora"))
        ours = ml_peft.PeftModel.from_pretrained(model, str(tmp_path / "peft"))
    with torch.no_grad(), ml.no_grad():
        a = theirs(input_ids=torch.tensor(ids)).logits.numpy()
        b = ours(input_ids=ml.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(b, a, atol=2e-5)


def test_print_peft_model_shows_what_peft_shows():
    """``print(model)`` after get_peft_model: PEFT's ``lora.Linear`` / ``lora.Embedding`` names, the
    (empty) ParameterDicts every LoRA layer has, transformers' Llama submodules and extra_repr."""
    reference, model = llama_pair()
    config = dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "embed_tokens"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = str(peft.get_peft_model(reference, peft.LoraConfig(**config)))
    got = str(ml_peft.get_peft_model(model, ml_peft.LoraConfig(**config)))
    same_text(expected, got)


def test_print_llama_shows_what_transformers_shows():
    reference, model = llama_pair()
    same_text(str(reference), str(model))


# ==================================================================================================
# (3) HF's causal-LM loss by hand, gradient accumulation, clipping, perplexity
# ==================================================================================================
def loss_by_hand(T, P, model, CrossEntropyLoss, optim):
    printed = []
    config = P.LoraConfig(task_type=P.TaskType.CAUSAL_LM, r=4, lora_alpha=8, lora_dropout=0.0,
                          target_modules=["q_proj", "v_proj", "o_proj"])
    model = P.get_peft_model(model, config)
    set_adapter_weights(T, model)
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    batches = np.random.default_rng(2).integers(3, 37, (4, 2, 7))
    accumulation_steps = 2
    model.train()
    for step, batch in enumerate(batches):
        input_ids = T.tensor(batch)
        labels = input_ids.clone()
        labels[0, :2] = -100
        logits = model(input_ids=input_ids).logits
        V = logits.size(-1)
        shift_logits = logits[..., :-1, :].contiguous()
        shift_labels = labels[..., 1:].contiguous()
        loss_fct = CrossEntropyLoss()
        loss = loss_fct(shift_logits.view(-1, V), shift_labels.view(-1))
        builtin = model(input_ids=input_ids, labels=labels).loss
        printed.append((round(loss.item(), 5), round(builtin.item(), 5), str(loss.dtype), tuple(loss.shape)))
        loss = loss / accumulation_steps
        loss.backward()
        if (step + 1) % accumulation_steps == 0:
            norm = T.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            printed.append((round(norm.item(), 4), str(norm.dtype), tuple(norm.shape)))
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    with T.no_grad():
        loss = model(input_ids=T.tensor(batches[0]), labels=T.tensor(batches[0])).loss
        printed.append((round(math.exp(loss), 3), round(math.exp(loss.item()), 3), loss.requires_grad))
    return printed


def test_causal_lm_loss_by_hand_accumulation_clipping_and_perplexity_as_torch():
    reference, model = llama_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = loss_by_hand(torch, peft, reference, torch.nn.CrossEntropyLoss, torch.optim)
    got = loss_by_hand(ml, ml_peft, model, ml.nn.CrossEntropyLoss, ml.optim)
    for e, g in zip(expected, got):
        same_text(str(e), str(g))


@pytest.mark.parametrize("target_modules", [None, "all-linear", ["q_proj", "v_proj"]])
def test_get_peft_model_keeps_the_users_config_as_peft(target_modules):
    """PEFT stores the LoraConfig it was given (``model.peft_config["default"] is config``) and resolves
    ``target_modules`` in it, so ``print(config)`` after get_peft_model names the adapted modules."""
    reference, model = llama_pair()
    theirs = peft.LoraConfig(task_type=peft.TaskType.CAUSAL_LM, r=8, target_modules=target_modules)
    ours = ml_peft.LoraConfig(task_type=ml_peft.TaskType.CAUSAL_LM, r=8, target_modules=target_modules)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_model = peft.get_peft_model(reference, theirs)
    our_model = ml_peft.get_peft_model(model, ours)
    assert (our_model.peft_config["default"] is ours) == (their_model.peft_config["default"] is theirs)
    assert sorted(ours.target_modules) == sorted(theirs.target_modules)


def test_causal_lm_output_names_its_fields_as_transformers_5():
    """transformers 5's CausalLMOutputWithPast: keys() say 'cache', and ``past_key_values`` (the old
    name) still reads it, as an attribute, a key and in ``in``."""
    reference, model = llama_pair()
    reference.eval()
    model.eval()
    ids = [[3, 4, 5]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = reference(input_ids=torch.tensor(ids), labels=torch.tensor(ids))
        expected = [type(theirs).__name__, list(theirs.keys()), "logits" in theirs, "past_key_values" in theirs,
                    "hidden_states" in theirs, theirs["past_key_values"] is theirs.cache, len(theirs.to_tuple())]
    ours = model(input_ids=ml.tensor(ids), labels=ml.tensor(ids))
    assert [type(ours).__name__, list(ours.keys()), "logits" in ours, "past_key_values" in ours,
            "hidden_states" in ours, ours["past_key_values"] is ours.cache, len(ours.to_tuple())] == expected
    assert ours.past_key_values is ours.cache is ours[2]


@pytest.mark.parametrize("config_name, fields", [
    ("VeraConfig", dict(r=4, target_modules=["q_proj"])),
    ("AdaLoraConfig", dict(init_r=4, target_r=2, target_modules=["q_proj"], total_step=8))])
def test_print_other_adapters_names_the_layer_as_peft(config_name, fields):
    """PEFT prints ``vera.Linear(`` and ``adalora.SVDLinear(`` (the class name with the tuner's prefix)."""
    reference, model = llama_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = str(peft.get_peft_model(reference, getattr(peft, config_name)(**fields)))
    got = str(ml_peft.get_peft_model(model, getattr(ml_peft, config_name)(**fields)))
    def q_proj_line(text):
        return next(line.strip() for line in text.splitlines() if "(q_proj)" in line)
    assert q_proj_line(got) == q_proj_line(expected)
    if config_name == "VeraConfig":
        same_text(expected, got)


def test_print_dora_model_shows_what_peft_shows():
    reference, model = llama_pair()
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = str(peft.get_peft_model(reference, peft.LoraConfig(**config)))
    same_text(expected, str(ml_peft.get_peft_model(model, ml_peft.LoraConfig(**config))))
