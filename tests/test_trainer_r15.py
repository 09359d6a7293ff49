"""Round 15: the Trainer's and the optimizers' last silent differences from torch/transformers.

* An lr given as a 0-d float64 Tensor to an optimizer of float32 weights: torch computes the hyperparameter
  arithmetic (``1 - lr * weight_decay``, ``corrected * lr``) as 0-d tensor arithmetic and hands the result to
  the float32 kernel, which rounds it to float32 before it touches a weight; NumPy widened the float32 array
  by the float64 scalar and rounded the product once (AdamW: 35 of 40 weights an ulp or more off).
  torch's float32 ``sqrt`` is MKL's and not correctly rounded (17% of roots): ``mkl_sqrt`` stands it in, so
  the comparison sees the optimizers' own arithmetic, bit for bit.
Skipped without torch."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402


@pytest.fixture
def mkl_sqrt(monkeypatch):
    """NumPy's sqrt answering torch's (MKL's) for float arrays, for minilora's optimizers during one test."""
    numpy_sqrt = np.sqrt

    def sqrt(a, out=None, **kwargs):
        if kwargs or not (isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)):
            return numpy_sqrt(a, **kwargs) if out is None else numpy_sqrt(a, out=out, **kwargs)
        root = torch.sqrt(torch.from_numpy(np.ascontiguousarray(a))).numpy()
        if out is None:
            return root
        out[...] = root
        return out
    monkeypatch.setattr(np, "sqrt", sqrt)


def _trajectory(lib, name, options, lr):
    g = np.random.default_rng(0)
    shape = (6, 5) if name == "Muon" else (40,)
    p = lib.nn.Parameter(lib.tensor(g.standard_normal(shape).astype(np.float32)))
    optimizer = getattr(lib.optim, name)([p], lr=lr if lr is None or isinstance(lr, float) else lib.tensor(
        0.0123, dtype=getattr(lib, lr)), **options)
    schedule = lib.optim.lr_scheduler.ExponentialLR(optimizer, 0.87)
    for _ in range(5):
        p.grad = lib.tensor(g.standard_normal(shape).astype(np.float32))
        optimizer.step()
        schedule.step()
    return p.detach().numpy().copy() if lib is torch else p.numpy().copy()


LR_KINDS = (0.0123, "float32", "float64")  # a float, a 0-d float32 or float64 Tensor


@pytest.mark.parametrize("name, options, lr", [
    ("AdamW", dict(weight_decay=0.1), "float64"),
    ("Adam", dict(weight_decay=0.1, decoupled_weight_decay=True), "float64"),
    *[(name, options, lr) for lr in LR_KINDS for name, options in (
        ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)), ("NAdam", dict()), ("RAdam", dict()),
        ("RAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)), ("Muon", dict(weight_decay=0.1)))]])
def test_hyperparameter_arithmetic_as_torch(mkl_sqrt, name, options, lr):
    """An lr of each kind under a schedule, float32 weights, bit for bit.
    Before: a float64 lr widened ``p * (1 - lr * wd)`` (AdamW, Adam/NAdam/RAdam decoupled, Muon) and RAdam's
    ``corrected * lr``; NAdam/RAdam divided by the bias corrections as times their reciprocal (torch divides
    float32/float64 by a number; only its 16-bit kernels multiply by the reciprocal); Muon's last
    ``p.add_(update, alpha=-lr)`` rounded twice where torch's kernel is one fused multiply-add."""
    np.testing.assert_array_equal(_trajectory(ml, name, options, lr), _trajectory(torch, name, options, lr))


# ---- the Trainer ---------------------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")

from trainer_rows import collator, examples, save_tiny_llama  # noqa: E402
from minilora import models  # noqa: E402
from minilora import trainer as ml_trainer  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


def train(lib, base, folder, train_dataset, **arguments):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = lib.TrainingArguments(output_dir=str(folder), report_to="none", disable_tqdm=True, save_strategy="no",
                                     per_device_train_batch_size=2, logging_steps=1, **arguments)
        model = (transformers.LlamaForCausalLM if lib is transformers else models.LlamaForCausalLM).from_pretrained(
            str(base))
        trainer = lib.Trainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=examples(4),
                              data_collator=collator(torch.tensor if lib is transformers else ml.tensor))
        trainer.train()
    return trainer


def test_greedy_schedule_follows_the_evaluations_as_transformers(base, tmp_path):
    """lr_scheduler_type="greedy" (transformers' GreedyLR, was refused): stepped on eval_loss after each
    evaluation, the lr halves after a step without a new best and doubles after better ones, within
    [min_lr, max_lr], as transformers' run does; its state_dict is transformers' too."""
    arguments = dict(lr_scheduler_type="greedy", learning_rate=0.02, max_steps=6, eval_strategy="steps", eval_steps=1,
                     lr_scheduler_kwargs={"patience": 0, "factor": 0.5, "min_lr": 0.004, "max_lr": 0.08,
                                          "smooth": True, "window_size": 2})
    theirs = train(transformers, base, tmp_path / "theirs", examples(12), **arguments)
    ours = train(ml_trainer, base, tmp_path / "ours", examples(12), **arguments)
    rates = [[e["learning_rate"] for e in t.state.log_history if "learning_rate" in e] for t in (theirs, ours)]
    assert rates[1] == rates[0]
    assert rates[0] == [0.02, 0.04, 0.08, 0.08, 0.08, 0.04], rates[0]  # (up to max_lr, then down)
    losses = [[e["eval_loss"] for e in t.state.log_history if "eval_loss" in e] for t in (theirs, ours)]
    # (float32 sums in another order, carried by Adam's normalised steps at lr up to 0.08: 5e-5 by step 6)
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-4)
    states = [t.lr_scheduler.state_dict() for t in (theirs, ours)]
    averages = [state.pop("_streaming_avg") for state in states]  # (of eval losses: float32 sums' last bits)
    assert averages[1]["values"] == pytest.approx(averages[0]["values"], rel=2e-4)
    assert states[1].pop("best") == pytest.approx(states[0].pop("best"), rel=2e-4)
    assert states[1] == states[0]


def _batch_lengths(lib, base, folder, dataset, remove_unused_columns):
    """The input lengths of the first three training batches a group_by_length run fetches."""
    seen, collate = [], collator(torch.tensor if lib is transformers else ml.tensor)

    def recording(features):
        seen.append([len(f["input_ids"]) for f in features])
        return collate(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = lib.TrainingArguments(output_dir=str(folder), report_to="none", save_strategy="no", disable_tqdm=True,
                                     per_device_train_batch_size=2, max_steps=3,
                                     train_sampling_strategy="group_by_length",
                                     remove_unused_columns=remove_unused_columns)
        model = (transformers.LlamaForCausalLM if lib is transformers else models.LlamaForCausalLM).from_pretrained(
            str(base))
        lib.Trainer(model=model, args=args, train_dataset=dataset, data_collator=recording).train()
    return seen[:3]


def test_group_by_length_with_a_length_column_as_transformers(base, tmp_path):
    """train_sampling_strategy="group_by_length" on a datasets.Dataset with a `length` column (length_column_name)
    that does not say the rows' input length: transformers 5 drops the unused columns before it builds the
    sampler, so the column is read only with remove_unused_columns=False (minilora read it always, and its
    batches differed from the first). Skipped without the datasets library (as transformers' path needs it)."""
    datasets = pytest.importorskip("datasets")
    rows = examples(12)
    for i, row in enumerate(rows):
        row["length"] = 100 - 7 * len(row["input_ids"]) + i
    for remove in (True, False):
        batches = [_batch_lengths(lib, base, tmp_path / f"{lib.__name__}{remove}", datasets.Dataset.from_list(rows),
                                  remove) for lib in (transformers, ml_trainer)]
        assert batches[1] == batches[0], remove


def test_memory_metrics_as_transformers(base, tmp_path, monkeypatch):
    """skip_memory_metrics=False (was refused): transformers' TrainerMemoryTracker keys, in the same places --
    the train metrics (log_history's last entry, TrainOutput) with init's and before_init_mem_cpu, evaluate()'s
    (not its log entry), predict()'s; an evaluation during training is not a stage of its own. The values are
    this process's RSS in bytes (transformers' measure: psutil), so only their kind is compared."""
    pytest.importorskip("psutil")
    import gc  # (each stage collects twice, 0.2 s a collection with torch and transformers loaded: skipped here)
    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)
    trainers, outputs = [], []
    for lib in (transformers, ml_trainer):
        trainer = train(lib, base, tmp_path / lib.__name__, examples(2), learning_rate=1e-2, max_steps=1,
                        eval_strategy="steps", eval_steps=1, skip_memory_metrics=False)
        trainers.append(trainer)
        history = list(trainer.state.log_history)  # (evaluate() below logs one entry more)
        outputs.append((history, trainer.evaluate(), trainer.predict(examples(2)).metrics))
    memory = [[sorted(k for k in metrics if "_mem_" in k) for metrics in (history[-1], evaluation, prediction)] +
              [[sorted(k for k in entry if "_mem_" in k) for entry in history[:-1]]]
              for history, evaluation, prediction in outputs]
    assert memory[1] == memory[0]
    assert memory[0][:3] == [["before_init_mem_cpu", "init_mem_cpu_alloc_delta", "init_mem_cpu_peaked_delta",
                              "train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta"],
                             ["eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"],
                             ["test_mem_cpu_alloc_delta", "test_mem_cpu_peaked_delta"]]
    train_metrics = outputs[1][0][-1]
    assert train_metrics["before_init_mem_cpu"] > 0 and train_metrics["train_mem_cpu_peaked_delta"] >= 0
    assert all(type(train_metrics[k]) is int for k in memory[1][0])
