"""Settings users change on live objects after building them, read at the moment transformers/PEFT/torch read
them: copied at construction, or read live when used. /tmp/h201/survey_*.py (round 15) changed ~130 settings
after construction -- the Llama's config and generation_config, the tokenizer, PEFT's config and layers, torch's
optimizers, schedulers and modules, TrainingArguments after Trainer(), the data collators -- in both stacks with
the same seed, and compared what came next (generate's tokens, logits, losses, weights, tokenizer output).

Divergences found and fixed (each test below fails on the tree before):

* the special-token ids: transformers copies ``config.bos/eos/pad_token_id`` into ``model.generation_config``
  when the model is made (``GenerationConfig.from_model_config``), or loaded from a folder without
  generation_config.json; generate reads them there only. minilora started with an empty generation_config and
  read ``model.config``'s ids at every generate: ``model.config.eos_token_id = 7`` after building stopped at 7
  (transformers: ignored), and a generation_config.json without ids got config.json's (transformers: none).
* generation options on the model config (``model.config.max_length = 50``, an older config.json's ``top_k``):
  transformers 5 drops them from a config when it is made, gives config.json's to the generation_config of a
  folder without generation_config.json, and refuses one set later (generate, save_pretrained); minilora kept
  them and read none. ``config.output_attentions = True`` is refused while the model runs sdpa (its setter).
* the Trainer: ``per_device_train_batch_size``, ``data_seed`` and ``neftune_noise_alpha`` are copied in
  ``Trainer.__init__`` (transformers' ``_train_batch_size``, accelerate's DataLoaderConfiguration,
  ``self.neftune_noise_alpha``); minilora read them from ``args`` at ``train()``. Without data_seed the sampler's
  seed is the global generator's initial seed when train() runs (accelerate's SeedableRandomSampler), which
  Trainer() set from ``args.seed``: minilora read ``args.seed`` itself, so a reseed after Trainer() (or a new
  ``args.seed``) drew another order than transformers.

* round 14's leftovers: beam search returns ``output_attentions`` / ``output_hidden_states`` per step (refused
  before), and ``from_pretrained(use_safetensors=False)`` reads the .bin of a folder holding both formats
  (refused by name before; tests/test_generation_fields_r14.py).
* a classifier's loss reads ``config.num_labels`` when it runs (transformers' loss functions take the config):
  ``model.config.num_labels = 1`` after building a 2-label head is regression there; minilora used the head's size.
* torch's DataLoader refuses ``batch_size``, ``batch_sampler``, ``sampler``, ``drop_last``, ``dataset`` and
  ``persistent_workers`` set after it is made (its ValueError); minilora took them and ignored them.

What already matched (the survey's other cases): optimizer param_groups' lr/momentum/betas/eps/weight_decay/
nesterov/maximize/..., ``defaults`` for a later group, scheduler ``base_lrs``/``gamma``/``T_max``/... and a group lr
changed between steps (10 schedules), module attributes (Dropout.p, LayerNorm.eps, Embedding.max_norm/padding_idx,
Softmax.dim, bias=None, Conv padding, CrossEntropyLoss.ignore_index/label_smoothing, ReLU.inplace), PEFT's
``peft_config[...]`` fields (copied: alpha, r, dropout, targets; read at save), a layer's ``scaling`` and dropout
``p`` (live), the tokenizer's padding/truncation side, model_max_length, pad/bos/eos tokens, add_bos/eos_token,
split_special_tokens, chat_template, the collators' padding_side/pad_to_multiple_of/mlm_probability/
label_pad_token_id, TrainingArguments' learning_rate, max_steps, epochs, accumulation, logging, warmup, scheduler
type and kwargs, weight decay, clipping, label smoothing (copied), optim, betas, drop_last, group_by_length.
``test_already_matched_settings`` keeps a few of them.
"""
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora import models, trainer as ml_trainer  # noqa: E402
from trainer_rows import collator, examples, save_tiny_llama  # noqa: E402

CONFIG = dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
PROMPT = [[5, 9, 3, 17, 22], [7, 7, 4, 12, 30]]


def both_models(**overrides):
    """transformers' and minilora's LlamaForCausalLM built from one config and seed (the same weights)."""
    config = {**CONFIG, **overrides}
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    ml.manual_seed(0)
    return theirs, models.LlamaForCausalLM(models.LlamaConfig(**config)).eval()


def generated(model, **options):
    tensor = torch.tensor if isinstance(model, torch.nn.Module) else ml.tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(tensor(PROMPT), max_new_tokens=6, **options).tolist()


def test_config_ids_changed_after_the_model_is_made_change_nothing():
    theirs, ours = both_models()
    assert generated(ours) == generated(theirs)
    later_token = generated(theirs)[0][6]  # an eos id that would stop row 0 early
    for model in (theirs, ours):
        model.config.eos_token_id, model.config.pad_token_id = later_token, 3
    assert generated(ours) == generated(theirs) == generated(both_models()[0])  # (minilora stopped at it)
    assert (ours.generation_config.eos_token_id, ours.generation_config.pad_token_id,
            ours.generation_config.bos_token_id) == (2, 0, 1)
    ours.generation_config.eos_token_id = later_token  # where the id is read
    theirs.generation_config.eos_token_id = later_token
    assert generated(ours) == generated(theirs)


def test_a_folder_without_generation_config_json_copies_the_ids_when_loaded(tmp_path):
    theirs, ours = both_models()
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.save_pretrained(tmp_path / "theirs")
    written = json.loads((tmp_path / "generation_config.json").read_text())
    assert {**written, "transformers_version": transformers.__version__} == \
        json.loads((tmp_path / "theirs" / "generation_config.json").read_text())  # the ids, flags and mark as there
    assert written["pad_token_id"] == 0
    os.remove(tmp_path / "generation_config.json")
    loaded = models.LlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.generation_config.eos_token_id == 2
    loaded.config.eos_token_id = generated(theirs)[0][6]
    assert generated(loaded) == generated(theirs)


def test_a_generation_config_json_without_ids_takes_none_from_config_json(tmp_path):
    theirs, ours = both_models(eos_token_id=None)
    eos = generated(theirs)[0][6]
    for model in (theirs, ours):
        model.config.eos_token_id = eos
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.save_pretrained(tmp_path / "theirs")
    for folder in (tmp_path, tmp_path / "theirs"):  # a chat model's file that sets sampling options only
        (folder / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "theirs"))
    ours = models.LlamaForCausalLM.from_pretrained(tmp_path)
    assert ours.generation_config.eos_token_id is theirs.generation_config.eos_token_id is None
    assert generated(ours) == generated(theirs)  # (minilora stopped at config.json's eos)


def both_refuse(call_theirs, call_ours):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as theirs:
            call_theirs()
    with pytest.raises(ValueError) as ours:
        call_ours()
    assert str(ours.value) == str(theirs.value)


def test_generation_options_set_on_model_config_are_refused(tmp_path):
    theirs, ours = both_models()
    for model in (theirs, ours):
        model.config.max_length = 7  # (an old tutorial's spelling: minilora generated 20 tokens, silently)
    both_refuse(lambda: generated(theirs), lambda: generated(ours))
    both_refuse(lambda: theirs.save_pretrained(str(tmp_path / "theirs")), lambda: ours.save_pretrained(tmp_path))
    passed = {"generation_config": ml.nn.generation.GenerationConfig(max_new_tokens=2)}  # (then not checked)
    assert np.shape(ours.generate(ml.tensor(PROMPT), **passed).tolist()) == (2, 7)


def test_an_old_config_json_gives_its_generation_options_to_the_generation_config(tmp_path):
    theirs, ours = both_models()
    ours.save_pretrained(tmp_path)
    os.remove(tmp_path / "generation_config.json")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "max_length": 7, "top_k": 3}))
    ours = models.LlamaForCausalLM.from_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path))
    assert ours.generation_config.top_k == theirs.generation_config.top_k == 3
    assert not hasattr(ours.config, "max_length") and not hasattr(theirs.config, "max_length")
    assert generated_to_length(ours) == generated_to_length(theirs)  # 7 tokens (minilora: 25)


def generated_to_length(model):
    tensor = torch.tensor if isinstance(model, torch.nn.Module) else ml.tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(tensor(PROMPT)).tolist()


def test_output_attentions_set_on_the_config_needs_eager_attention():
    theirs, ours = both_models()
    both_refuse(lambda: setattr(theirs.config, "output_attentions", True),
                lambda: setattr(ours.config, "output_attentions", True))  # (minilora answered no weights)
    for model in (theirs, ours):
        model.config._attn_implementation = "eager"
        model.config.output_attentions = True
    tensor_ours = ours(ml.tensor(PROMPT)).attentions
    tensor_theirs = theirs(torch.tensor(PROMPT)).attentions
    np.testing.assert_allclose(tensor_ours[0].detach().numpy(), tensor_theirs[0].detach().numpy(), atol=1e-6)
    for config in (models.LlamaConfig(**CONFIG), transformers.LlamaConfig(**CONFIG)):  # no model yet: eager
        config.output_attentions = True
        assert config._attn_implementation == "eager"


def test_num_labels_changed_after_the_classifier_is_made_picks_the_loss():
    """transformers' classification losses read config.num_labels when they run (1: regression, MSE over the
    head's outputs broadcast against the labels); minilora read the head's size (cross-entropy)."""
    losses = []
    for lib, make in ((torch, transformers), (ml, models)):
        lib.manual_seed(0)
        model = make.LlamaForSequenceClassification(make.LlamaConfig(**CONFIG, num_labels=2))
        model.config.num_labels = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch's broadcasting warning, from both)
            losses.append(float(model(lib.tensor(PROMPT), labels=lib.tensor([1.0, 0.0])).loss))
        assert model.config.problem_type == "regression"
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def test_beam_search_returns_each_steps_attentions_and_hidden_states():
    """Round 14's leftover: beam search refused output_attentions / output_hidden_states; transformers returns, per
    step, the model's tuple for every beam's row (the prompt at the first step, one position after)."""
    answers = []
    for model, tensor in zip(both_models(), (torch.tensor, ml.tensor)):
        model.set_attn_implementation("eager")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model.generate(tensor(PROMPT), max_new_tokens=3, num_beams=2, output_attentions=True,
                                 output_hidden_states=True, return_dict_in_generate=True)
        answers.append({name: [[np.asarray(layer.detach().numpy()) for layer in step] for step in getattr(out, name)]
                        for name in ("attentions", "hidden_states")} | {"sequences": out.sequences.tolist()})
    theirs, ours = answers
    assert ours["sequences"] == theirs["sequences"]
    for name in ("attentions", "hidden_states"):
        assert [[a.shape for a in step] for step in ours[name]] == [[a.shape for a in step] for step in theirs[name]]
        for step_ours, step_theirs in zip(ours[name], theirs[name]):
            for a, b in zip(step_ours, step_theirs):
                np.testing.assert_allclose(a, b, atol=2e-5)  # (float32 matmuls summed in another order)


# ----------------------------------------------------------------------------------------------------------
# TrainingArguments changed after Trainer(): tiny LoRA runs of 3 steps
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


def make_trainer(lib, base, output_dir, **arguments):
    """transformers' Trainer (lib=transformers) or minilora's, on the same LoRA model and rows."""
    if lib is transformers:
        import peft
        model, tensor, make_peft = transformers.LlamaForCausalLM.from_pretrained(str(base)), torch.tensor, peft
        torch.manual_seed(3)
    else:
        import minilora.lora as make_peft
        model, tensor = models.LlamaForCausalLM.from_pretrained(base), ml.tensor
        ml.manual_seed(3)
    model = make_peft.get_peft_model(model, make_peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                                 lora_dropout=0.1))
    args = lib.TrainingArguments(output_dir=str(output_dir), report_to="none", disable_tqdm=True, max_steps=3,
                                 logging_steps=1, learning_rate=1e-2, per_device_train_batch_size=2, **arguments)
    return lib.Trainer(model=model, args=args, train_dataset=examples(), data_collator=collator(tensor))


def losses(trainer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return [(entry["step"], round(entry["loss"], 4)) for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture(scope="module")
def transformers_losses(base, tmp_path_factory):
    """transformers' run as built (what a setting changed after Trainer() leaves), and after a reseed."""
    plain = losses(make_trainer(transformers, base, tmp_path_factory.mktemp("theirs")))
    reseeded = make_trainer(transformers, base, tmp_path_factory.mktemp("theirs"))
    torch.manual_seed(0)
    return {"plain": plain, "reseeded": losses(reseeded)}


@pytest.mark.parametrize("name, value", [("per_device_train_batch_size", 3), ("data_seed", 5),
                                         ("neftune_noise_alpha", 5.0), ("seed", 7)])
def test_arguments_copied_when_the_trainer_is_made(base, tmp_path, transformers_losses, name, value):
    trainer = make_trainer(ml_trainer, base, tmp_path)
    setattr(trainer.args, name, value)  # (minilora read these at train(): other batches, order or noise)
    assert losses(trainer) == transformers_losses["plain"]


def test_the_sampler_seed_is_the_global_seed_when_train_runs(base, tmp_path, transformers_losses):
    trainer = make_trainer(ml_trainer, base, tmp_path)
    ml.manual_seed(0)  # after Trainer() seeded 42: accelerate's sampler takes torch.initial_seed() = 0
    assert losses(trainer) == transformers_losses["reseeded"] != transformers_losses["plain"]


@pytest.mark.parametrize("name", ["batch_size", "batch_sampler", "sampler", "drop_last", "dataset",
                                  "persistent_workers"])
def test_dataloader_attributes_fixed_when_it_is_made(name):
    """torch refuses these after __init__ (the batch sampler was built from them); minilora took them and went on
    batching as before (loader.batch_size = 3 still gave batches of 2)."""
    answers = []
    for lib in (torch, ml):
        loader = lib.utils.data.DataLoader(list(range(7)), batch_size=2)
        with pytest.raises(ValueError) as refused:
            setattr(loader, name, 3)
        loader.collate_fn = lambda batch: [10 * x for x in batch]  # (read live by both)
        answers.append((str(refused.value), list(loader)))
    assert answers[1] == answers[0]


def test_already_matched_settings():
    """A few the survey found matching already (documented, not fixed): a group's lr read live by the optimizer,
    a PEFT config's lora_alpha copied into the layers' scaling, a collator reading the tokenizer's padding_side."""
    def sgd_weights(lib):
        lib.manual_seed(0)
        net = lib.nn.Linear(3, 2).double()
        x = lib.randn(4, 3, dtype=lib.float64)
        opt = lib.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            if step == 1:
                opt.param_groups[0]["lr"] = 0.01
            opt.zero_grad()
            (net(x) ** 2).sum().backward()
            opt.step()
        return net.weight.detach().numpy()
    np.testing.assert_allclose(sgd_weights(ml), sgd_weights(torch), rtol=1e-13)
    import minilora.lora as ml_peft
    _, ours = both_models()
    ours = ml_peft.get_peft_model(ours, ml_peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    ours.peft_config["default"].lora_alpha = 64  # (PEFT: scaling was computed when the layer was made)
    assert ours.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == 2.0
