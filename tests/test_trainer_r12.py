"""transformers' ``Trainer`` / ``TrainingArguments`` (``minilora/trainer.py``), run side by side with
transformers + PEFT on the same tiny Llama weights, the same LoRA init and the same arguments:
``log_history`` (losses, grad norms, learning rates, epochs), ``eval_loss``, ``compute_metrics``, the
checkpoint folders' file names, callbacks, the weight-decay groups, resuming. Skipped without torch,
transformers or peft."""
import dataclasses
import json
import os
import random
import shutil
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
from trainer_rows import VOCAB, collator, examples, save_tiny_llama  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models  # noqa: E402
from minilora import trainer as ml_trainer  # noqa: E402
from minilora.utils.data import Dataset as MlDataset  # noqa: E402

# float32 sums in another order (the gradient norm's, the loss's over tokens): a few ulps apart
RTOL = 1e-6
# the gradient norm after a few steps: its sum of squares runs over gradients whose float32 matrix products are
# MKL's kernel for the CPU (an Intel Sapphire Rapids: 1.2e-6 apart at step 5; an AMD EPYC: within RTOL)
GRAD_NORM_RTOL = 1e-5


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


def lora_pair(base, **config):
    """(PEFT model, minilora's), the LoRA matrices drawn from the same seed."""
    config = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0, **config}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.LlamaForCausalLM.from_pretrained(str(base))
    ours = models.LlamaForCausalLM.from_pretrained(base)
    torch.manual_seed(3)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    ml.manual_seed(3)
    return theirs, ml_peft.get_peft_model(ours, ml_peft.LoraConfig(**config))


def run_both(base, tmp_path, datasets, collators=(None, None), lora=None, callbacks=lambda lib: None,
             compute_metrics=None, **arguments):
    """Train with each library (``callbacks(lib)``: the Trainer's callbacks); return the two trainers."""
    arguments = dict(report_to="none", disable_tqdm=True, **arguments)
    trainers = []
    for lib, model, data, collate, name in zip((transformers, ml_trainer), lora_pair(base, **(lora or {})), datasets,
                                               collators, ("theirs", "ours")):
        args = lib.TrainingArguments(output_dir=str(tmp_path / name), **arguments)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = lib.Trainer(model=model, args=args, train_dataset=data[0], eval_dataset=data[1],
                                  data_collator=collate, callbacks=callbacks(lib),
                                  **({"compute_metrics": compute_metrics or metrics} if data[1] else {}))
            trainer.train()
        trainers.append(trainer)
    return trainers


def metrics(eval_pred):
    predictions, labels = eval_pred
    hits = (predictions[:, :-1].argmax(-1) == labels[:, 1:])[labels[:, 1:] != -100]
    return {"accuracy": np.float32(hits.mean()), "rows": predictions.shape[0]}


def assert_same_history(theirs, ours):
    assert [sorted(e) for e in ours] == [sorted(e) for e in theirs]
    for a, b in zip(theirs, ours):
        assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
        for key in ("loss", "grad_norm", "eval_loss", "eval_accuracy", "train_loss"):
            if key in a:
                rel = GRAD_NORM_RTOL if key == "grad_norm" else RTOL
                assert b[key] == pytest.approx(a[key], rel=rel, abs=0), (key, a, b)
        for key in ("learning_rate", "eval_rows", "total_flos", "num_input_tokens_seen"):
            if key in a:
                assert b[key] == a[key], (key, a, b)


def test_peft_trainer_log_history_checkpoints_as_transformers(base, tmp_path):
    """The quicktour's run: gradient accumulation 2 over ragged rows (the step's token count, not the
    accumulation count, divides each loss), shuffled, LoRA dropout (the masks follow from the generator's
    stream: each epoch's DataLoader draws its base seed from it too), weight decay, warmup then linear decay,
    evaluation and a checkpoint every epoch, activation checkpointing; the last step of each epoch has a one-row
    batch."""
    data = examples()
    theirs, ours = run_both(base, tmp_path, [(data, data[:5])] * 2, (collator(torch.tensor), collator(ml.tensor)),
                            lora=dict(bias="lora_only", lora_dropout=0.1), learning_rate=1e-2,
                            per_device_train_batch_size=2, per_device_eval_batch_size=3, gradient_accumulation_steps=2,
                            num_train_epochs=2, weight_decay=0.1, logging_steps=1, save_strategy="epoch",
                            eval_strategy="epoch", seed=42, lr_scheduler_type="linear", warmup_steps=1,
                            activation_checkpointing=True)
    assert ours.model.get_base_model().is_gradient_checkpointing  # (its backward replays the dropout draws)
    assert [e["step"] for e in ours.state.log_history] == [1, 2, 3, 3, 4, 5, 6, 6, 6]
    assert_same_history(theirs.state.log_history, ours.state.log_history)
    assert ours.evaluate()["eval_loss"] == pytest.approx(theirs.evaluate()["eval_loss"], rel=RTOL)
    for step in (3, 6):
        folder = f"checkpoint-{step}"
        assert sorted(os.listdir(tmp_path / "ours" / folder)) == sorted(os.listdir(tmp_path / "theirs" / folder))
        state = [json.loads((tmp_path / name / folder / "trainer_state.json").read_text())
                 for name in ("theirs", "ours")]
        assert sorted(state[1]) == sorted(state[0])
        assert {k: v for k, v in state[1].items() if k != "log_history"} == \
            {k: v for k, v in state[0].items() if k != "log_history"}
    assert sorted(os.listdir(tmp_path / "ours")) == ["checkpoint-3", "checkpoint-6"]


class Rows(MlDataset):
    """A torch-style map dataset (``__getitem__`` / ``__len__``) of equal-length rows."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


class TorchRows(Rows, torch.utils.data.Dataset):
    pass


class Recorder(ml_trainer.TrainerCallback):
    def __init__(self):
        self.events = []

    def on_step_end(self, args, state, control, **kwargs):
        self.events.append(("step_end", state.global_step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(("log", state.global_step, sorted(logs)))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.events.append(("evaluate", state.global_step))
        if state.global_step == 2:
            control.should_training_stop = True  # a callback stops the run early
        return control


def test_torch_dataset_default_collator_sgd_max_steps_callbacks(base, tmp_path):
    """A torch-style Dataset through default_data_collator (the "text" column removed first), optim="sgd",
    max_steps, step-wise evaluation with compute_metrics, a cosine schedule with a warmup fraction, no
    clipping, NEFTune's noise on the embeddings (drawn from the generator's stream, float32 magnitude), and a
    callback that stops training after the second evaluation."""
    rows = [{k: v for k, v in row.items() if k != "attention_mask"} for row in examples(9, ragged=False)]
    recorder = Recorder()
    arguments = dict(learning_rate=0.5, per_device_train_batch_size=3, per_device_eval_batch_size=2, max_steps=4,
                     optim="sgd", lr_scheduler_type="cosine", warmup_steps=0.3, max_grad_norm=0.0, logging_steps=1,
                     eval_strategy="steps", eval_steps=1, save_strategy="no", seed=7, neftune_noise_alpha=5.0)
    theirs, ours = run_both(base, tmp_path, [(TorchRows(rows), TorchRows(rows[:5])), (Rows(rows), Rows(rows[:5]))],
                            **arguments)
    assert_same_history(theirs.state.log_history, ours.state.log_history)
    assert ours.state.global_step == 4 and not os.listdir(tmp_path / "ours")
    assert not ours.model.get_base_model().get_input_embeddings()._forward_hooks  # (NEFTune's hook is gone)
    args = ml_trainer.TrainingArguments(output_dir=str(tmp_path / "cb"), report_to="none", disable_tqdm=True,
                                        **arguments)
    trainer = ml_trainer.Trainer(model=lora_pair(base)[1], args=args, train_dataset=Rows(rows),
                                 eval_dataset=Rows(rows[:5]), callbacks=[recorder])
    assert trainer.train().global_step == 2
    assert recorder.events[:4] == [("step_end", 1), ("log", 1, ["epoch", "grad_norm", "learning_rate", "loss"]),
                                   ("log", 1, ["epoch", "eval_loss", "eval_runtime", "eval_samples_per_second",
                                               "eval_steps_per_second"]), ("evaluate", 1)]
    assert recorder.events[-1][:2] == ("log", 2) and "train_loss" in recorder.events[-1][2]
    prediction = trainer.predict(Rows(rows[:5]))
    assert prediction.predictions.shape == (5, 6, VOCAB) and prediction.label_ids.shape == (5, 6)
    assert set(prediction.metrics) >= {"test_loss", "test_runtime"}
    unlabelled = trainer.predict(Rows([{"input_ids": row["input_ids"]} for row in rows[:5]]))
    assert unlabelled.predictions.shape == (5, 6, VOCAB) and unlabelled.label_ids is None
    assert np.array_equal(unlabelled.predictions, prediction.predictions)


class Stream(ml.utils.data.IterableDataset):
    def __init__(self, rows):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)


class TorchStream(torch.utils.data.IterableDataset, Stream):
    __iter__ = Stream.__iter__


def test_iterable_dataset_max_steps_and_its_eval_loss(base, tmp_path):
    """An iterable dataset: read in its own order, epoch after epoch up to max_steps; its evaluation counts the
    short last batch once per example it holds (accelerate's dispatcher), not eval_batch_size times."""
    rows = examples(7)
    theirs, ours = run_both(base, tmp_path, [(TorchStream(rows), TorchStream(rows)), (Stream(rows), Stream(rows))],
                            (collator(torch.tensor), collator(ml.tensor)), learning_rate=1e-2,
                            per_device_train_batch_size=2, per_device_eval_batch_size=3, gradient_accumulation_steps=2,
                            max_steps=3, logging_steps=1, save_strategy="no", eval_strategy="steps", eval_steps=3)
    assert [e["step"] for e in ours.state.log_history] == [1, 2, 3, 3, 3]
    assert_same_history(theirs.state.log_history, ours.state.log_history)


def test_sequence_classification_with_the_tokenizer_as_processing_class(base, tmp_path):
    """The text-classification tutorial: tokenized rows with an integer "label" (and their text, dropped), no
    collator given: the Trainer pads with DataCollatorWithPadding(processing_class), which renames label to
    labels, and gives the model the tokenizer's pad id (the head pools each row's last non-pad token; without
    it minilora refused batches of more than one row). Under gradient accumulation transformers'
    classification heads ignore num_items_in_batch (each micro-batch's mean adds up unscaled: twice the loss at
    2 steps); minilora's divided by the step's label count, half transformers' loss and gradient norm."""
    tokenizers = pytest.importorskip("tokenizers")
    from minilora.tokenizer import from_pretrained as ml_tokenizer
    words = "the cat sat on a mat dog ran in park".split()
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in
                                                                                        enumerate(words)}}, "<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "unk_token": "<unk>"}))
    texts = ["the cat sat", "a dog ran in the park", "the mat", "a cat ran", "the dog sat on a mat", "in the park",
             "a mat", "the cat ran in"]
    out = []
    for lib, tokenizer, cls in ((transformers, transformers.AutoTokenizer.from_pretrained(str(tmp_path)),
                                 transformers.LlamaForSequenceClassification),
                                (ml_trainer, ml_tokenizer(tmp_path), models.LlamaForSequenceClassification)):
        torch.manual_seed(5), ml.manual_seed(5)  # (the new score head's draw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(str(base), num_labels=3)  # (no pad_token_id: the tokenizer's comes in)
            rows = [{**dict(tokenizer(text)), "label": i % 3, "text": text} for i, text in enumerate(texts)]
            args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), learning_rate=1e-3,
                                         per_device_train_batch_size=3, gradient_accumulation_steps=2,
                                         num_train_epochs=2, logging_steps=1, save_strategy="no", report_to="none",
                                         disable_tqdm=True)
            trainer = lib.Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
            trainer.train()
        out.append(trainer.state.log_history)
        assert model.config.pad_token_id == 0
    assert_same_history(*out)


def test_load_best_model_at_end_early_stopping_keeps_and_loads_the_best_checkpoint(base, tmp_path):
    """Evaluation and a checkpoint every step, at most 2 kept, the best by accuracy (higher is better, reached
    at step 1 here), EarlyStoppingCallback(patience 3): training stops at step 4, the best and the newest
    checkpoints stay, the callback's counter is in trainer_state.json, and training ends with the best adapter
    loaded. The tokens seen (the attention masks' ones) are logged with each entry."""
    data = examples()
    theirs, ours = run_both(base, tmp_path, [(data, data[:4])] * 2, (collator(torch.tensor), collator(ml.tensor)),
                            callbacks=lambda lib: [lib.EarlyStoppingCallback(early_stopping_patience=3)],
                            learning_rate=1e-2, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                            num_train_epochs=2, logging_steps=1, eval_strategy="steps", eval_steps=1,
                            save_strategy="steps", save_steps=1, save_total_limit=2, load_best_model_at_end=True,
                            metric_for_best_model="accuracy", include_num_input_tokens_seen="non_padding")
    assert ours.state.global_step == 4 and ours.state.num_input_tokens_seen == theirs.state.num_input_tokens_seen
    assert_same_history(theirs.state.log_history, ours.state.log_history)
    assert sorted(os.listdir(tmp_path / "ours")) == sorted(os.listdir(tmp_path / "theirs")) == \
        ["checkpoint-1", "checkpoint-4"]
    states = [json.loads((tmp_path / name / "checkpoint-4" / "trainer_state.json").read_text())
              for name in ("theirs", "ours")]
    assert states[1]["stateful_callbacks"] == states[0]["stateful_callbacks"]
    assert states[1]["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"] == \
        {"early_stopping_patience_counter": 3}
    assert os.path.basename(ours.state.best_model_checkpoint) == "checkpoint-1"
    assert ours.state.best_metric == theirs.state.best_metric
    assert ours.evaluate()["eval_loss"] == pytest.approx(theirs.evaluate()["eval_loss"], rel=RTOL)
    assert ours.evaluate()["eval_loss"] == pytest.approx(ours.state.log_history[1]["eval_loss"], rel=RTOL)
    with pytest.raises(ValueError, match="requires the save and eval strategy to match"):
        ml_trainer.TrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True, eval_strategy="epoch")


def test_reduce_lr_on_plateau_steps_on_the_evaluations(base, tmp_path):
    """lr_scheduler_type="reduce_lr_on_plateau": not stepped after each optimizer step but after each evaluation,
    on eval_loss (metric_for_best_model's default): the learning rates halve where transformers' do. (A learning
    rate of 1 makes Adam's steps big: a gradient norm's last float32 bits grow to ~1e-5 relative by step 6.)"""
    data = examples()
    theirs, ours = run_both(base, tmp_path, [(data, data[:4])] * 2, (collator(torch.tensor), collator(ml.tensor)),
                            learning_rate=1.0, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                            num_train_epochs=2, logging_steps=1, eval_strategy="steps", eval_steps=1,
                            save_strategy="no", lr_scheduler_type="reduce_lr_on_plateau",
                            lr_scheduler_kwargs={"patience": 0, "factor": 0.5})
    rates = [e["learning_rate"] for e in ours.state.log_history if "learning_rate" in e]
    assert rates == [e["learning_rate"] for e in theirs.state.log_history if "learning_rate" in e]
    assert rates[0] == 1.0 and rates[-1] < 0.5
    for a, b in zip(theirs.state.log_history[:-1], ours.state.log_history[:-1]):
        for key, rel in (("loss", RTOL), ("eval_loss", RTOL), ("grad_norm", 1e-4)):
            assert key not in a or b[key] == pytest.approx(a[key], rel=rel), (key, a, b)


def test_compute_metrics_with_inputs_losses_and_unconcatenated_batches(base, tmp_path):
    """include_for_metrics=["inputs", "loss"] hands compute_metrics the input ids and the per-example losses;
    eval_do_concat_batches=False hands each as a list of the batches' arrays (eval batches of 3 over 4 rows);
    label_smoothing_factor: the Trainer's LabelSmoother computes the loss from the logits (shifted labels)."""
    def metrics_of_everything(eval_pred):
        predictions, labels, inputs, losses = eval_pred
        return {"batches": len(predictions), "label_rows": sum(len(b) for b in labels),
                "ids": float(sum(b.sum() for b in inputs)), "mean_loss": float(np.concatenate(losses).mean())}
    data = examples()
    theirs, ours = run_both(base, tmp_path, [(data, data[:4])] * 2, (collator(torch.tensor), collator(ml.tensor)),
                            compute_metrics=metrics_of_everything, learning_rate=1e-2, per_device_train_batch_size=2,
                            per_device_eval_batch_size=3, max_steps=2, logging_steps=1, save_strategy="no",
                            eval_strategy="steps", eval_steps=2, include_for_metrics=["inputs", "loss"],
                            eval_do_concat_batches=False, label_smoothing_factor=0.1)
    assert_same_history(theirs.state.log_history, ours.state.log_history)
    evals = [[e for e in trainer.state.log_history if "eval_loss" in e] for trainer in (theirs, ours)]
    keys = ("eval_batches", "eval_label_rows", "eval_ids")
    assert [[e[k] for k in keys] for e in evals[1]] == [[e[k] for k in keys] for e in evals[0]] == [[2, 4, 562.0]]
    assert evals[1][0]["eval_mean_loss"] == pytest.approx(evals[0][0]["eval_mean_loss"], rel=RTOL)


class Augmented(Rows):
    """Rows whose __getitem__ drops one label at random, drawing from Python's, NumPy's and the framework's
    global generators (as an augmentation does)."""

    def __init__(self, rows, framework):
        super().__init__(rows)
        self.framework = framework

    def __getitem__(self, index):
        row = dict(self.rows[index])
        k = random.randint(0, 3) + int(np.random.randint(0, 3)) + int(self.framework.randint(0, 3, ()))
        row["labels"] = [x if j != k else -100 for j, x in enumerate(row["labels"])]
        return row


class TorchAugmented(Augmented, torch.utils.data.Dataset):
    pass


@pytest.mark.parametrize("workers", [0, 2])
def test_random_augmentation_in_getitem_with_and_without_workers(base, tmp_path, workers):
    """An augmentation's draws interleave with LoRA dropout's as in transformers: in the main process each batch
    is fetched one step early (accelerate's DataLoaderShard looks one batch ahead); in workers each is seeded
    by transformers' seed_worker."""
    rows = [{k: v for k, v in row.items() if k != "text"} for row in examples(8, ragged=False)]
    theirs, ours = run_both(base, tmp_path, [(TorchAugmented(rows, torch), None), (Augmented(rows, ml), None)],
                            lora=dict(lora_dropout=0.1), learning_rate=1e-2, per_device_train_batch_size=2,
                            max_steps=5, logging_steps=1, save_strategy="no", dataloader_num_workers=workers)
    assert_same_history(theirs.state.log_history, ours.state.log_history)


def test_resume_from_checkpoint_continues_the_run(base, tmp_path):
    """A run resumed from its checkpoint-2 logs the uninterrupted run's steps 3 to 6, bit for bit: the adapter,
    the optimizer's moments, the schedule, the epoch's shuffled order (batches skipped) and the generators (the
    LoRA dropout masks)."""
    data = examples()

    def trainer():
        args = ml_trainer.TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=1e-2,
                                            per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                            num_train_epochs=2, weight_decay=0.1, logging_steps=1, save_steps=2,
                                            seed=5, report_to="none", disable_tqdm=True)
        return ml_trainer.Trainer(model=lora_pair(base, lora_dropout=0.1)[1], args=args, train_dataset=data,
                                  data_collator=collator(ml.tensor))
    whole = trainer()
    whole.train()
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for name in ("checkpoint-4", "checkpoint-6"):
        os.rename(tmp_path / "run" / name, tmp_path / f"kept-{name}")
    resumed = trainer()
    resumed.train(resume_from_checkpoint=True)  # the last checkpoint: checkpoint-2
    assert resumed.state.log_history[:-1] == whole.state.log_history[:-1]
    empty = ml_trainer.Trainer(model=lora_pair(base)[1], train_dataset=data, data_collator=collator(ml.tensor),
                               args=ml_trainer.TrainingArguments(output_dir=str(tmp_path / "empty"), report_to="none"))
    with pytest.raises(ValueError, match="No valid checkpoint found"):
        empty.train(resume_from_checkpoint=True)


def test_resume_restores_the_callbacks_states_when_asked(base, tmp_path):
    """restore_callback_states_from_checkpoint=True: the early-stopping counter saved in checkpoint-2 comes back,
    so the resumed run stops where the whole one did (step 4); without it the counter restarts from 0."""
    data = examples()

    def trainer(folder, restore):
        args = ml_trainer.TrainingArguments(
            output_dir=str(tmp_path / folder), learning_rate=1e-2, per_device_train_batch_size=2,
            gradient_accumulation_steps=2, num_train_epochs=2, logging_steps=1, eval_strategy="steps", eval_steps=1,
            save_steps=1, metric_for_best_model="accuracy", restore_callback_states_from_checkpoint=restore,
            report_to="none", disable_tqdm=True)
        return ml_trainer.Trainer(model=lora_pair(base)[1], args=args, train_dataset=data, eval_dataset=data[:4],
                                  data_collator=collator(ml.tensor), compute_metrics=metrics,
                                  callbacks=[ml_trainer.EarlyStoppingCallback(early_stopping_patience=3)])
    assert trainer("whole", False).train().global_step == 4
    steps = []
    for restore in (True, False):
        resumed = trainer(f"resumed-{restore}", restore)
        shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / f"resumed-{restore}" / "checkpoint-2")
        steps.append(resumed.train(resume_from_checkpoint=True).global_step)
    assert steps == [4, 5]


def test_weight_decay_groups_as_transformers(base, tmp_path):
    """No decay for biases and norm weights, by transformers' name rules (LoRA's and the model's own biases)."""
    theirs_model, ours_model = lora_pair(base, bias="all")
    for module in (theirs_model, ours_model):
        for name, p in module.named_parameters():
            p.requires_grad = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.Trainer(model=theirs_model, args=transformers.TrainingArguments(
            output_dir=str(tmp_path / "t"), report_to="none", weight_decay=0.1))
    ours = ml_trainer.Trainer(model=ours_model, args=ml_trainer.TrainingArguments(
        output_dir=str(tmp_path / "o"), report_to="none", weight_decay=0.1))
    assert ours.get_decay_parameter_names(ours_model) == theirs.get_decay_parameter_names(theirs_model)
    theirs.create_optimizer(), ours.create_optimizer()
    assert [(len(g["params"]), g["weight_decay"]) for g in ours.optimizer.param_groups] == \
        [(len(g["params"]), g["weight_decay"]) for g in theirs.optimizer.param_groups]


def test_training_arguments_defaults_and_refusals(tmp_path):
    """Every field of transformers' TrainingArguments, with its default; one asking for what minilora's Trainer
    does not do is refused by name, one that changes nothing on one CPU process (pinned memory, log levels) is
    taken."""
    theirs = transformers.TrainingArguments(output_dir=str(tmp_path))
    ours = ml_trainer.TrainingArguments(output_dir=str(tmp_path), dataloader_pin_memory=False, log_level="info",
                                        ddp_timeout=60, gradient_checkpointing=False)
    assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(theirs) if f.init]
    written = theirs.to_dict()  # (its enums as their values, a token as its placeholder)
    for field, value in ours.to_dict().items():
        if field in ("report_to", "disable_tqdm",  # (transformers resolves these from the
                     "dataloader_pin_memory", "log_level", "ddp_timeout"):  # environment; set above)
            continue
        assert value == written[field], field
    command_line = '{"patience": "2", "factor": "0.5", "nested": {"on": "true"}}'  # (a dict field as a JSON string)
    parsed = [lib.TrainingArguments(output_dir=str(tmp_path), lr_scheduler_kwargs=command_line).lr_scheduler_kwargs
              for lib in (ml_trainer, transformers)]
    assert parsed[0] == parsed[1] == {"patience": 2, "factor": 0.5, "nested": {"on": True}}
    for kwargs in ({"deepspeed": "ds_config.json"}, {"enable_jit_checkpoint": True}, {"push_to_hub": True}):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))}=.*minilora's Trainer does not implement"):
            ml_trainer.TrainingArguments(output_dir=str(tmp_path), **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'warmup_ratio'"):
        ml_trainer.TrainingArguments(output_dir=str(tmp_path), warmup_ratio=0.1)  # (gone in transformers 5)
    for kwargs, words in [({"optim": "bogus"}, "bogus is not a valid OptimizerNames"),
                          ({"save_strategy": "maybe"}, "maybe is not a valid SaveStrategy"),
                          ({"bf16": True}, "Your setup doesn't support bf16/gpu")]:
        with pytest.raises(ValueError, match=words):
            transformers.TrainingArguments(output_dir=str(tmp_path), **kwargs)
        with pytest.raises(ValueError, match=words):
            ml_trainer.TrainingArguments(output_dir=str(tmp_path), **kwargs)
    for kwargs in ({"save_steps": 3, "eval_steps": 2}, {"save_steps": 0.3, "eval_steps": 0.2}):
        words = "saving steps to be a (round )?multiple of the evaluation steps, but found"
        with pytest.raises(ValueError, match=words):
            transformers.TrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True,
                                           eval_strategy="steps", **kwargs)
        with pytest.raises(ValueError, match=words):
            ml_trainer.TrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True, eval_strategy="steps",
                                         **kwargs)
    try:  # full_determinism: transformers' enable_full_determinism (set_seed and deterministic algorithms)
        ml_trainer.Trainer(model=ml.nn.Linear(2, 2), args=ml_trainer.TrainingArguments(
            output_dir=str(tmp_path), full_determinism=True, report_to="none"))
        assert ml.are_deterministic_algorithms_enabled()
    finally:
        ml.use_deterministic_algorithms(False)
    with pytest.raises(ValueError, match="optim='adamw_bnb_8bit' is not available in minilora"):
        ml_trainer.Trainer.get_optimizer_cls_and_kwargs(ml_trainer.TrainingArguments(
            output_dir=str(tmp_path), optim="adamw_bnb_8bit"))


def test_bf16_on_the_cpu_autocasts_as_transformers(base, tmp_path):
    """bf16=True with use_cpu=True: the forward under CPU autocast to bfloat16, as accelerate's. The products
    round to bfloat16 (8 bits) where oneDNN's kernel sums in its own order, so the numbers agree to the
    envelope of a few bfloat16 roundings spread over the mean loss (measured ~5e-5 relative), not bit for bit."""
    data = examples()
    theirs, ours = run_both(base, tmp_path, [(data, None)] * 2, (collator(torch.tensor), collator(ml.tensor)),
                            learning_rate=1e-2, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                            max_steps=3, logging_steps=1, save_strategy="no", bf16=True, use_cpu=True)
    for a, b in zip(theirs.state.log_history[:-1], ours.state.log_history[:-1]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3) and b["grad_norm"] == pytest.approx(a["grad_norm"],
                                                                                                   rel=1e-2)
