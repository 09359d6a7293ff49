"""The PEFT documentation's LoRA paths walked side by side: transformers + PEFT and minilora, small Llamas
built from a config (no downloads), both seeded alike -- minilora draws torch's numbers, so the models,
the adapters, the dropout masks and therefore the losses are the same, nothing copied across.

* quicktour: LoraConfig(task_type=CAUSAL_LM, r=8, lora_alpha=32, lora_dropout=0.1), get_peft_model,
  print_trainable_parameters, trainable names, training steps, save_pretrained, AutoPeftModelForCausalLM,
  merge_and_unload, generate;
* task types: SEQ_CLS / TOKEN_CLS on LlamaForSequenceClassification / LlamaForTokenClassification (minilora
  had neither model, and refused both task types), PEFT's classifier handling (modules_to_save extended
  with "classifier" and "score" in the user's config, the head trains in full, "all-linear" leaves the
  SEQ_CLS head alone), FEATURE_EXTRACTION on LlamaModel;
* prepare_model_for_kbit_training on a float model, a LoRA on a tied lm_head (PEFT's warning, in its
  words for a LoraConfig), the schedules users pair with PEFT.
Skipped when torch / transformers / peft are not installed."""
import json
import random
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models  # noqa: E402
from peft_versions import as_of_peft, classifier_modules_to_save  # noqa: E402

SHAPE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
IDS = np.array([[1, 5, 7, 9, 3, 2], [0, 0, 4, 8, 1, 6], [4, 8, 1, 6, 0, 0]])  # left and right padding (pad 0)
QUICKTOUR = dict(task_type="CAUSAL_LM", inference_mode=False, r=8, lora_alpha=32, lora_dropout=0.1)


def both(class_name, seed=0, **config):
    """transformers' and minilora's model of that class, each drawn from its own generator, same seed."""
    torch.manual_seed(seed)
    theirs = getattr(transformers, class_name)(transformers.LlamaConfig(**SHAPE, **config))
    ml.manual_seed(seed)
    ours = getattr(models, class_name)(models.LlamaConfig(**SHAPE, **config))
    return theirs, ours


def wrap(theirs, ours, seed=1, **config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
        ml.manual_seed(seed)
        ours = ml_peft.get_peft_model(ours, ml_peft.LoraConfig(**config))
    return theirs, ours


def trainable(model):
    return [(name, tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad]


def assert_same_state(theirs, ours, atol=0.0):
    theirs_sd = {k: v.detach().float().numpy() for k, v in theirs.state_dict().items()}
    ours_sd = {k: v.float().numpy() for k, v in ours.state_dict().items()}
    assert sorted(ours_sd) == sorted(theirs_sd)
    for key, value in theirs_sd.items():
        np.testing.assert_allclose(ours_sd[key], value, rtol=0, atol=atol, err_msg=key)


def assert_same_trained_state(theirs, ours):
    """After ``train_both``: each weight within 1e-6 of torch's, but for 1% of its elements, which may be
    up to 1e-4 apart (1% of one AdamW step). The float32 gradients sum in the BLAS's order (torch's MKL
    picks its kernel by CPU: an AVX-512 EPYC's differs from earlier CPUs' and from NumPy's OpenBLAS by
    last bits), and AdamW divides by the gradient's own size: where a gradient nearly cancels, its last
    bits move the step by far more than 1e-6 (3.3e-6 seen). A wrong gradient moves whole steps (1e-2)."""
    theirs_sd = {k: v.detach().float().numpy() for k, v in theirs.state_dict().items()}
    ours_sd = {k: v.float().numpy() for k, v in ours.state_dict().items()}
    assert sorted(ours_sd) == sorted(theirs_sd)
    for key, value in theirs_sd.items():
        assert_close_after_training(ours_sd[key], value, key)


def assert_close_after_training(ours, theirs, key):
    apart = np.abs(ours - theirs)
    assert apart.max() <= 1e-4 and np.mean(apart > 1e-6) <= 0.01, (key, apart.max(), np.mean(apart > 1e-6))


def train_both(theirs, ours, labels, steps=3, lr=1e-2):
    """A manual loop, AdamW, dropout on: the losses of each step, side by side."""
    theirs.train(), ours.train()
    opt_t = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=lr)
    opt_m = ml.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=lr)
    torch.manual_seed(5)
    ml.manual_seed(5)
    losses = []
    for _ in range(steps):
        loss_t = theirs(input_ids=torch.tensor(IDS), labels=torch.tensor(labels)).loss
        loss_m = ours(input_ids=ml.tensor(IDS), labels=ml.tensor(labels)).loss
        losses.append((loss_t.item(), loss_m.item()))
        for loss, opt in ((loss_t, opt_t), (loss_m, opt_m)):
            loss.backward()
            opt.step()
            opt.zero_grad()
    np.testing.assert_allclose([m for _, m in losses], [t for t, _ in losses], rtol=2e-6)
    assert losses[-1][0] < losses[0][0]


def saved(tmp_path, theirs, ours):
    for side, model in (("theirs", theirs), ("ours", ours)):
        model.save_pretrained(str(tmp_path / side))
    files = [safetensors_numpy.load_file(str(tmp_path / side / "adapter_model.safetensors"))
             for side in ("theirs", "ours")]
    configs = [json.load(open(tmp_path / side / "adapter_config.json")) for side in ("theirs", "ours")]
    assert sorted(files[1]) == sorted(files[0])
    for key, value in files[0].items():
        assert_close_after_training(files[1][key], value, key)  # (trained: see assert_same_trained_state)
    return configs


# ==================================================================================================
# The quicktour, CAUSAL_LM
# ==================================================================================================
def test_quicktour_causal_lm_side_by_side(tmp_path, capsys):
    theirs, ours = wrap(*both("LlamaForCausalLM"), **QUICKTOUR)
    assert type(ours).__name__ == type(theirs).__name__ == "PeftModelForCausalLM"
    assert repr(ours) == repr(theirs)
    theirs.print_trainable_parameters()
    ours.print_trainable_parameters()
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == printed[0] == "trainable params: 1,792 || all params: 24,480 || trainable%: 7.3203"
    assert trainable(ours) == trainable(theirs)
    assert trainable(ours)[0][0] == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    assert_same_state(theirs, ours)
    assert type(ours.base_model.model) is type(ours.get_base_model()) is models.LlamaForCausalLM
    train_both(theirs, ours, IDS)
    ours_config, theirs_config = saved(tmp_path, theirs, ours)[::-1]
    assert sorted(ours_config.pop("target_modules")) == sorted(theirs_config.pop("target_modules"))  # (a set)
    assert {k for k in theirs_config if theirs_config[k] != ours_config.get(k)} == {"peft_version"}
    merged_t, merged_m = theirs.merge_and_unload(), ours.merge_and_unload()
    assert type(merged_m) is models.LlamaForCausalLM
    merged_t.eval(), merged_m.eval()
    prompt = IDS[:1, 2:]
    out_t = merged_t.generate(torch.tensor(prompt), max_new_tokens=4, do_sample=False, eos_token_id=None)
    out_m = merged_m.generate(ml.tensor(prompt), max_new_tokens=4, do_sample=False, eos_token_id=None)
    assert out_m.tolist() == out_t.tolist()


def test_quicktour_config_fields_as_peft():
    theirs, ours = peft.LoraConfig(**QUICKTOUR), ml_peft.LoraConfig(**QUICKTOUR)
    assert repr(ours.runtime_config) == repr(theirs.runtime_config) == "LoraRuntimeConfig(ephemeral_gpu_offload=False)"
    assert ours.runtime_config.ephemeral_gpu_offload is False  # (minilora's default was None: AttributeError)
    with pytest.raises(NotImplementedError, match="ephemeral_gpu_offload"):
        ml_peft.LoraConfig(runtime_config=ml_peft.LoraRuntimeConfig(ephemeral_gpu_offload=True))
    assert ours.task_type == theirs.task_type and ours.inference_mode is theirs.inference_mode is False


def test_minilora_train_on_the_quicktour_model_is_a_torch_loop():
    """minilora's Trainer-like ``train`` (it does not claim transformers' Trainer): AdamW, gradient clipping
    at 1.0, cosine schedule with warmup -- the same losses as that loop in torch + PEFT."""
    from minilora.train import train
    batch = IDS + (IDS == 0) * 3  # no padding: every row has a target at every position
    theirs, ours = wrap(*both("LlamaForCausalLM"), **{**QUICKTOUR, "lora_dropout": 0.0})
    result = train(ours, batch, steps=4, batch_size=3, lr=1e-2, warmup_steps=1, progress=False, plot=False)
    params = [p for p in theirs.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    schedule = transformers.get_cosine_schedule_with_warmup(optimizer, 1, 4)
    losses = []
    theirs.train()
    for _ in range(4):
        loss = theirs(input_ids=torch.tensor(batch), labels=torch.tensor(batch)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        losses.append(loss.item())
    np.testing.assert_allclose(result.losses, losses, rtol=1e-6)


def test_auto_peft_model_loads_the_base_the_adapter_names(tmp_path):
    theirs, ours = both("LlamaForCausalLM")
    theirs.save_pretrained(str(tmp_path / "base_t"))
    ours.save_pretrained(str(tmp_path / "base_m"))
    theirs = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "base_t"))
    ours = models.LlamaForCausalLM.from_pretrained(str(tmp_path / "base_m"))
    theirs, ours = wrap(theirs, ours, task_type="CAUSAL_LM", r=4, lora_alpha=8, init_lora_weights=False)
    theirs.save_pretrained(str(tmp_path / "adapter_t"))
    ours.save_pretrained(str(tmp_path / "adapter_m"))
    loaded_t = peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter_t"))
    loaded_m = ml_peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter_m"))
    assert type(loaded_m).__name__ == type(loaded_t).__name__ and loaded_m.training is loaded_t.training is False
    with torch.no_grad():
        expected = loaded_t(torch.tensor(IDS)).logits.numpy()
    with ml.no_grad():
        np.testing.assert_allclose(loaded_m(ml.tensor(IDS)).logits.numpy(), expected, rtol=0, atol=1e-5)


# ==================================================================================================
# The classification heads (transformers) and PEFT's SEQ_CLS / TOKEN_CLS
# ==================================================================================================
@pytest.mark.parametrize("class_name, labels", [
    ("LlamaForSequenceClassification", np.array([0, 2, 1])),
    ("LlamaForTokenClassification", np.array([[0, 1, 2, -100, 1, 1]] * 3))])
def test_llama_classification_heads_as_transformers(class_name, labels):
    theirs, ours = both(class_name, pad_token_id=0, num_labels=3)
    assert_same_state(theirs, ours)
    theirs.train(), ours.train()
    torch.manual_seed(3)
    ml.manual_seed(3)  # the token head's dropout draws its mask from the stream
    out_t = theirs(torch.tensor(IDS), labels=torch.tensor(labels))
    out_m = ours(ml.tensor(IDS), labels=ml.tensor(labels))
    assert type(out_m).__name__ == type(out_t).__name__ and out_m.keys() == list(out_t.keys())
    assert out_m.logits.shape == tuple(out_t.logits.shape)
    np.testing.assert_allclose(out_m.logits.numpy(), out_t.logits.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out_m.loss.item(), out_t.loss.item(), rtol=1e-6)


@pytest.mark.parametrize("num_labels, labels, problem_type", [
    (1, np.array([0.5, -1.0, 2.0], dtype=np.float32), "regression"),
    (3, np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=np.float32), "multi_label_classification")])
def test_sequence_classification_problem_types(num_labels, labels, problem_type):
    theirs, ours = both("LlamaForSequenceClassification", pad_token_id=0, num_labels=num_labels)
    loss_t = theirs(torch.tensor(IDS), labels=torch.tensor(labels)).loss
    loss_m = ours(ml.tensor(IDS), labels=ml.tensor(labels)).loss
    assert ours.config.problem_type == theirs.config.problem_type == problem_type
    np.testing.assert_allclose(loss_m.item(), loss_t.item(), rtol=1e-6)


def test_sequence_classification_without_pad_token_refuses_a_batch_as_transformers():
    theirs, ours = both("LlamaForSequenceClassification")
    with pytest.raises(ValueError, match="no padding token") as expected:
        theirs(torch.tensor(IDS))
    with pytest.raises(ValueError) as got:
        ours(ml.tensor(IDS))
    assert str(got.value) == str(expected.value)
    np.testing.assert_allclose(ours(ml.tensor(IDS[:1])).logits.detach().numpy(),
                               theirs(torch.tensor(IDS[:1])).logits.detach().numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("task, class_name, labels, options", [
    ("SEQ_CLS", "LlamaForSequenceClassification", np.array([0, 2, 1]), dict(modules_to_save=["score"])),
    ("SEQ_CLS", "LlamaForSequenceClassification", np.array([0, 2, 1]), dict(target_modules="all-linear")),
    ("TOKEN_CLS", "LlamaForTokenClassification", np.array([[0, 1, 2, -100, 1, 1]] * 3), {})])
def test_classification_task_types_side_by_side(tmp_path, capsys, task, class_name, labels, options):
    def config():  # a fresh modules_to_save list each: PEFT extends the caller's list itself
        return dict(task_type=task, r=4, lora_alpha=8, lora_dropout=0.1,
                    **{k: list(v) if isinstance(v, list) else v for k, v in options.items()})
    torch.manual_seed(1)
    theirs_config = peft.LoraConfig(**config())
    theirs = peft.get_peft_model(both(class_name, pad_token_id=0, num_labels=3)[0], theirs_config)
    ours_config = ml_peft.LoraConfig(**config())
    ml.manual_seed(1)
    ours = ml_peft.get_peft_model(both(class_name, pad_token_id=0, num_labels=3)[1], ours_config)
    assert type(ours).__name__ == type(theirs).__name__ == f"PeftModelFor{class_name[len('LlamaFor'):]}"
    # PEFT adds its classifier names to the user's config object (see peft_versions.classifier_modules_to_save)
    assert theirs_config.modules_to_save == classifier_modules_to_save(config().get("modules_to_save"))
    assert ours_config.modules_to_save == classifier_modules_to_save(config().get("modules_to_save"), since_022=True)
    assert ours.modules_to_save == {"classifier", "score", "pre_classifier"}
    assert theirs.modules_to_save == as_of_peft({"classifier", "score"}, ours.modules_to_save)
    theirs.print_trainable_parameters()
    ours.print_trainable_parameters()
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == printed[0]
    assert trainable(ours) == trainable(theirs)
    assert "base_model.model.score.modules_to_save.default.weight" in dict(trainable(ours))
    assert repr(ours) == repr(theirs)  # print(model): the token head's dropout printed before score, as theirs
    assert_same_state(theirs, ours)
    train_both(theirs, ours, labels)
    theirs_file, ours_file = saved(tmp_path, theirs, ours)
    assert sorted(ours_file["target_modules"]) == sorted(theirs_file["target_modules"])  # (PEFT writes a set)
    assert ours_file["modules_to_save"] == ours_config.modules_to_save
    assert theirs_file["modules_to_save"] == theirs_config.modules_to_save  # (each the config's list, above)
    assert "score" not in ours_file["target_modules"]
    merged_t, merged_m = theirs.merge_and_unload().eval(), ours.merge_and_unload().eval()
    assert type(merged_m).__name__ == type(merged_t).__name__ == class_name
    assert_same_trained_state(merged_t, merged_m)  # the trained head in place of the original


@pytest.mark.parametrize("config_class, extra", [("VeraConfig", {}), ("AdaLoraConfig", dict(total_step=10))])
def test_seq_cls_with_vera_and_adalora_as_peft(config_class, extra):
    """Other methods on the same path; AdaLoRA's parameters listed in PEFT's order (A, B, E: minilora's was
    A, E, B -- the same set, another named_parameters / optimizer order)."""
    config = dict(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], **extra)
    theirs, ours = both("LlamaForSequenceClassification", pad_token_id=0, num_labels=3)
    torch.manual_seed(1)
    theirs = peft.get_peft_model(theirs, getattr(peft, config_class)(**config))
    ml.manual_seed(1)
    ours = ml_peft.get_peft_model(ours, getattr(ml_peft, config_class)(**config))
    assert type(ours).__name__ == type(theirs).__name__ == "PeftModelForSequenceClassification"
    assert trainable(ours) == trainable(theirs)
    assert_same_state(theirs, ours)
    labels = np.array([0, 2, 1])
    theirs.train(), ours.train()
    np.testing.assert_allclose(ours(ml.tensor(IDS), labels=ml.tensor(labels)).loss.item(),
                               theirs(torch.tensor(IDS), labels=torch.tensor(labels)).loss.item(), rtol=1e-6)


def test_token_cls_with_gradient_checkpointing_as_peft():
    """gradient_checkpointing_enable on the head model, then LoRA with dropout: loss, gradients and the
    stream after backward (the recomputation redraws no mask) as transformers + PEFT."""
    theirs, ours = both("LlamaForTokenClassification", pad_token_id=0, num_labels=3)
    theirs.gradient_checkpointing_enable()
    ours.gradient_checkpointing_enable()
    assert ours.is_gradient_checkpointing is theirs.is_gradient_checkpointing is True
    theirs, ours = wrap(theirs, ours, task_type="TOKEN_CLS", r=4, lora_alpha=8, lora_dropout=0.1,
                        init_lora_weights=False)
    labels = np.array([[0, 1, 2, 1, 1, 0]] * 3)
    theirs.train(), ours.train()
    torch.manual_seed(5)
    ml.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss_t = theirs(input_ids=torch.tensor(IDS), labels=torch.tensor(labels)).loss
    loss_m = ours(input_ids=ml.tensor(IDS), labels=ml.tensor(labels)).loss
    loss_t.backward()
    loss_m.backward()
    np.testing.assert_allclose(loss_m.item(), loss_t.item(), rtol=1e-6)
    for (name, p_t), (_, p_m) in zip(
            [(n, p) for n, p in theirs.named_parameters() if p.requires_grad],
            [(n, p) for n, p in ours.named_parameters() if p.requires_grad]):
        np.testing.assert_allclose(p_m.grad.numpy(), p_t.grad.numpy(), rtol=0, atol=1e-5, err_msg=name)
    assert ml.rand(2).tolist() == torch.rand(2).tolist()


def test_seq_cls_leaves_the_callers_modules_to_save_list_as_peft():
    names = [["score"], ["score"]]
    peft.get_peft_model(both("LlamaForSequenceClassification", pad_token_id=0)[0],
                        peft.LoraConfig(task_type="SEQ_CLS", r=2, modules_to_save=names[0]))
    ml_peft.get_peft_model(both("LlamaForSequenceClassification", pad_token_id=0)[1],
                           ml_peft.LoraConfig(task_type="SEQ_CLS", r=2, modules_to_save=names[1]))
    assert names[0] == as_of_peft(["score", "classifier", "score"], ["score"])  # 0.21 extended it in place
    assert names[1] == ["score"]  # PEFT 0.22: the caller's list is left as it was (the config holds a new one)


def test_seq_cls_second_adapter_gets_its_own_head_as_peft():
    theirs, ours = wrap(*both("LlamaForSequenceClassification", pad_token_id=0, num_labels=3),
                        task_type="SEQ_CLS", r=2)
    configs = peft.LoraConfig(task_type="SEQ_CLS", r=2), ml_peft.LoraConfig(task_type="SEQ_CLS", r=2)
    torch.manual_seed(2)
    theirs.add_adapter("b", configs[0])
    ml.manual_seed(2)
    ours.add_adapter("b", configs[1])
    assert configs[1].modules_to_save == classifier_modules_to_save(None, since_022=True)
    assert configs[0].modules_to_save == classifier_modules_to_save(None)
    theirs.set_adapter("b")
    ours.set_adapter("b")
    assert trainable(ours) == trainable(theirs)
    assert "base_model.model.score.modules_to_save.b.weight" in dict(trainable(ours))
    assert_same_state(theirs, ours)


def test_sequence_classification_adapter_reloads_and_merges(tmp_path):
    _, ours = wrap(*both("LlamaForSequenceClassification", pad_token_id=0, num_labels=3),
                   task_type="SEQ_CLS", r=4, lora_alpha=8, init_lora_weights=False)
    ours.eval()
    with ml.no_grad():
        ours.base_model.model.score.modules_to_save["default"].weight.add_(0.5)  # a trained head
        expected = ours(ml.tensor(IDS)).logits.numpy()
    ours.save_pretrained(str(tmp_path))
    loaded = ml_peft.PeftModel.from_pretrained(both("LlamaForSequenceClassification", pad_token_id=0,
                                                    num_labels=3)[1], str(tmp_path))
    assert type(loaded) is ml_peft.PeftModelForSequenceClassification
    with ml.no_grad():
        np.testing.assert_allclose(loaded(ml.tensor(IDS)).logits.numpy(), expected, rtol=0, atol=1e-6)
        merged = loaded.merge_and_unload()
        assert type(merged) is models.LlamaForSequenceClassification
        np.testing.assert_allclose(merged(ml.tensor(IDS)).logits.numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("class_name", ["LlamaForSequenceClassification", "LlamaForTokenClassification"])
def test_classification_head_from_a_causal_lm_folder_as_transformers(tmp_path, class_name):
    """The PEFT docs' start: AutoModelForSequenceClassification.from_pretrained(causal_lm, num_labels=3) --
    the body read, lm_head left out, the new head the stream's next draw (the stream goes on alike)."""
    theirs, ours = both("LlamaForCausalLM", pad_token_id=0)
    theirs.save_pretrained(str(tmp_path / "t"))
    ours.save_pretrained(str(tmp_path / "m"))
    torch.manual_seed(7)
    theirs = getattr(transformers, class_name).from_pretrained(str(tmp_path / "t"), num_labels=3)
    ml.manual_seed(7)
    ours, info = getattr(models, class_name).from_pretrained(str(tmp_path / "m"), num_labels=3,
                                                             output_loading_info=True)
    assert ml.rand(2).tolist() == torch.rand(2).tolist()
    assert ours.config.num_labels == 3 and ours.name_or_path == str(tmp_path / "m")
    assert info["unexpected_keys"] == {"lm_head.weight"}
    assert info["missing_keys"] == {f"score.{name}" for name, _ in theirs.score.named_parameters()}
    assert_same_state(theirs, ours)


@pytest.mark.parametrize("task, class_name", [("SEQ_CLS", "LlamaForSequenceClassification"),
                                              ("TOKEN_CLS", "LlamaForTokenClassification")])
def test_auto_peft_model_for_classification_side_by_side(tmp_path, task, class_name):
    """Base folder -> head model -> adapter (head trained) -> AutoPeftModelFor...: the saved head comes back."""
    theirs, ours = both("LlamaForCausalLM", pad_token_id=0)
    theirs.save_pretrained(str(tmp_path / "base_t"))
    ours.save_pretrained(str(tmp_path / "base_m"))
    torch.manual_seed(3)
    theirs = getattr(transformers, class_name).from_pretrained(str(tmp_path / "base_t"), num_labels=3)
    ml.manual_seed(3)
    ours = getattr(models, class_name).from_pretrained(str(tmp_path / "base_m"), num_labels=3)
    theirs, ours = wrap(theirs, ours, task_type=task, r=4, lora_alpha=8, init_lora_weights=False)
    with torch.no_grad():
        theirs.base_model.model.score.modules_to_save["default"].weight.add_(0.5)  # a trained head
    with ml.no_grad():
        ours.base_model.model.score.modules_to_save["default"].weight.add_(0.5)
    theirs.save_pretrained(str(tmp_path / "adapter_t"))
    ours.save_pretrained(str(tmp_path / "adapter_m"))
    auto = "AutoPeftModelFor" + class_name[len("LlamaFor"):]
    torch.manual_seed(4)
    loaded_t = getattr(peft, auto).from_pretrained(str(tmp_path / "adapter_t"), num_labels=3)
    ml.manual_seed(4)
    loaded_m = getattr(ml_peft, auto).from_pretrained(str(tmp_path / "adapter_m"), num_labels=3)
    assert type(loaded_m).__name__ == type(loaded_t).__name__
    with torch.no_grad():
        expected = loaded_t(torch.tensor(IDS)).logits.numpy()
    with ml.no_grad():
        np.testing.assert_allclose(loaded_m(ml.tensor(IDS)).logits.numpy(), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="Expected target PEFT class") as expected_error:
        peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter_t"))
    with pytest.raises(ValueError) as error:
        ml_peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter_m"))
    assert str(error.value) == str(expected_error.value)


def test_classification_heads_refuse_a_trained_head_checkpoint_and_save_pretrained(tmp_path):
    theirs, ours = both("LlamaForSequenceClassification", pad_token_id=0)
    theirs.save_pretrained(str(tmp_path))
    with pytest.raises(NotImplementedError, match="holds a trained task head"):
        models.LlamaForSequenceClassification.from_pretrained(str(tmp_path))
    with pytest.raises(NotImplementedError, match="save_pretrained .*modules_to_save"):
        ours.save_pretrained(str(tmp_path))


def test_feature_extraction_on_llama_model():
    theirs, ours = wrap(*both("LlamaModel"), task_type="FEATURE_EXTRACTION", r=4, lora_alpha=8,
                        target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    assert type(ours).__name__ == type(theirs).__name__ == "PeftModelForFeatureExtraction"
    assert trainable(ours) == trainable(theirs)
    with torch.no_grad():
        expected = theirs(torch.tensor(IDS)).last_hidden_state.numpy()
    with ml.no_grad():
        np.testing.assert_allclose(ours(ml.tensor(IDS)).last_hidden_state.numpy(), expected, rtol=0, atol=1e-5)


def test_task_types_without_a_minilora_model_are_refused_by_name():
    ours = both("LlamaForCausalLM")[1]
    for task in ("SEQ_2_SEQ_LM", "QUESTION_ANS"):
        with pytest.raises(NotImplementedError, match=f"task_type='{task}'"):
            ml_peft.get_peft_model(ours, ml_peft.LoraConfig(task_type=task, r=4))


# ==================================================================================================
# Around the adapter: kbit preparation on a float model, a tied lm_head, the schedules
# ==================================================================================================
def test_prepare_model_for_kbit_training_on_a_bfloat16_model_as_peft():
    """Without quantization PEFT freezes everything and upcasts 16-bit parameters -- no gradient
    checkpointing, no input hook (those are for quantized models)."""
    theirs, ours = both("LlamaForCausalLM")
    theirs = peft.prepare_model_for_kbit_training(theirs.to(torch.bfloat16))
    ours = ml_peft.prepare_model_for_kbit_training(ours.to(ml.bfloat16))
    assert ours.is_gradient_checkpointing is theirs.is_gradient_checkpointing is False
    assert {str(p.dtype) for p in ours.parameters()} == {"float32"} == \
        {str(p.dtype).removeprefix("torch.") for p in theirs.parameters()}
    assert not any(p.requires_grad for p in ours.parameters())
    assert_same_state(theirs, ours)


def test_lora_on_a_tied_lm_head_as_peft():
    theirs, ours = both("LlamaForCausalLM", tie_word_embeddings=True)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    config = dict(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])
    with pytest.warns(UserWarning) as expected:
        torch.manual_seed(1)
        theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    with pytest.warns(UserWarning) as got:
        ml.manual_seed(1)
        ours = ml_peft.get_peft_model(ours, ml_peft.LoraConfig(**config))
    tied = [[str(w.message) for w in record if "tie_word_embeddings" in str(w.message)] for record in (expected, got)]
    assert tied[1] == tied[0] and len(tied[0]) == 1
    assert trainable(ours) == trainable(theirs)
    assert_same_state(theirs, ours)
    theirs.enable_input_require_grads()
    ours.enable_input_require_grads()
    train_both(theirs, ours, IDS, steps=2)


@pytest.mark.parametrize("name", ["get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup"])
def test_schedules_users_pair_with_peft(name):
    rates = []
    for lib, params in ((torch, [torch.nn.Parameter(torch.zeros(1))]), (ml, [ml.nn.Parameter(ml.zeros(1))])):
        opt = lib.optim.AdamW(params, lr=3e-4)
        schedule = getattr(transformers, name)(opt, 2, 8) if lib is torch else getattr(ml.optim, name)(opt, 2, 8)
        rates.append([])
        for _ in range(9):
            rates[-1].append(schedule.get_last_lr()[0])
            opt.step()
            schedule.step()
    np.testing.assert_allclose(rates[1], rates[0], rtol=1e-12)


def test_set_seed_seeds_what_transformers_set_seed_seeds():
    transformers.set_seed(42)
    expected = random.random(), np.random.rand(), torch.rand(3).tolist(), torch.randn(2).tolist()
    models.set_seed(42)
    assert (random.random(), np.random.rand(), ml.rand(3).tolist(), ml.randn(2).tolist()) == expected
    before = ml.are_deterministic_algorithms_enabled()
    try:
        models.set_seed(0, deterministic=True)
        assert ml.are_deterministic_algorithms_enabled()
    finally:
        ml.use_deterministic_algorithms(before)
