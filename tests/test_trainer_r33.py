"""Round 33: the Trainer on a float64 model, against transformers' Trainer on the same weights, in float64
(transformers' Llama patched to stay in the model's dtype, as tests/trainer_sweep.py does; stock transformers
normalizes, computes RoPE and its loss in float32 even in a float64 model).

* eval_loss: each evaluation batch's loss was rounded to float32 before the mean; transformers keeps the loss's
  dtype (a float64 model's eval_loss is a float64 mean).
* the logged training loss: transformers sums the micro-batch losses in ``torch.tensor(0.0)`` (the default dtype)
  with an in-place add that computes in the wider dtype and rounds once; minilora rounded each loss to float32
  first, then added (one float32 ulp off with gradient accumulation), and kept a float32 sum after
  ``set_default_dtype(float64)``, where transformers' sum is float64.
* ``Trainer.loss_is_scaled_for_ga`` (transformers 5's switch for a compute_loss override) was ignored.
Skipped without torch or transformers."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import transformers.trainer  # noqa: E402,F401
from trainer_rows import collator, examples, save_tiny_llama  # noqa: E402
from trainer_sweep import float64_transformers  # noqa: E402

import minilora as ml  # noqa: E402
from minilora import models  # noqa: E402
from minilora import trainer as ml_trainer  # noqa: E402

REL = 1e-12
COMMON = dict(report_to="none", disable_tqdm=True, seed=42, optim="adamw_torch", learning_rate=1e-2,
              per_device_train_batch_size=2, logging_steps=1, per_device_eval_batch_size=3)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture
def float64_reference(monkeypatch):
    from transformers.loss import loss_utils
    monkeypatch.setitem(loss_utils.LOSS_MAPPING, "ForCausalLM", float64_transformers(monkeypatch.setattr))


def train(lib, base, folder, trainer_class=None, positional=False, **arguments):
    arguments = {**COMMON, "output_dir": str(folder), "save_strategy": "no", **arguments}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lib is transformers:
            model = transformers.LlamaForCausalLM.from_pretrained(str(base), attn_implementation="eager").double()
            args, tensor = transformers.TrainingArguments(**arguments), torch.tensor
        else:
            model = models.LlamaForCausalLM.from_pretrained(str(base)).double()
            args, tensor = ml_trainer.TrainingArguments(**arguments), ml.tensor
        cls = trainer_class or (transformers.Trainer if lib is transformers else ml_trainer.Trainer)
        if positional:  # Trainer(model, args, data_collator, train_dataset, eval_dataset)
            trainer = cls(model, args, collator(tensor), examples(7), examples(4))
        else:
            trainer = cls(model=model, args=args, train_dataset=examples(7), eval_dataset=examples(4),
                          data_collator=collator(tensor))
        trainer.train()
    return trainer


def assert_same(theirs, ours):
    a, b = theirs.state.log_history, ours.state.log_history
    assert [sorted(e) for e in b] == [sorted(e) for e in a]
    for x, y in zip(a, b):
        for key in ("loss", "eval_loss", "grad_norm", "learning_rate", "train_loss", "epoch", "step"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=REL, abs=0), (key, x, y)
    weights = dict(theirs.model.named_parameters())
    for name, p in ours.model.named_parameters():
        np.testing.assert_allclose(p.numpy(), weights[name].detach().numpy(), rtol=1e-10, atol=1e-13)


def test_float64_eval_and_accumulated_losses_as_transformers(base, tmp_path, float64_reference):
    """Gradient accumulation 3 over 4 batches (a last partial step), an evaluation every step: the logged losses
    and eval_loss to 1e-12. Before: eval_loss 4.199322700500488 for transformers' 4.199322642242325 (each batch's
    loss rounded to float32), the accumulated loss 4.1703362464904785 for 4.170336723327637 (each micro-batch's
    loss rounded before the float32 add)."""
    arguments = dict(gradient_accumulation_steps=3, num_train_epochs=2, eval_strategy="steps", eval_steps=1)
    theirs = train(transformers, base, tmp_path / "theirs", positional=True, **arguments)
    ours = train(ml_trainer, base, tmp_path / "ours", positional=True, **arguments)
    assert [e["step"] for e in ours.state.log_history if "eval_loss" in e] == [1, 2, 3, 4]
    assert_same(theirs, ours)
    assert isinstance(ours.evaluate()["eval_loss"], float)
    assert ours.evaluate()["eval_loss"] == pytest.approx(theirs.evaluate()["eval_loss"], rel=REL, abs=0)


def test_loss_sum_in_the_default_dtype_as_transformers(base, tmp_path, float64_reference):
    """``set_default_dtype(float64)``: transformers' loss sum (``torch.tensor(0.0)``) is float64, so the logged
    losses and train_loss are float64 means; minilora's sum stayed float32 (4.175108909606934 for
    4.175108892328511)."""
    old = torch.get_default_dtype(), ml.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    ml.set_default_dtype(ml.float64)
    try:
        arguments = dict(gradient_accumulation_steps=2, max_steps=3, logging_steps=2)
        theirs = train(transformers, base, tmp_path / "theirs", **arguments)
        ours = train(ml_trainer, base, tmp_path / "ours", **arguments)
    finally:
        torch.set_default_dtype(old[0])
        ml.set_default_dtype(old[1])
    assert_same(theirs, ours)


@pytest.mark.parametrize("scaled", [False, True])  # (True: a guard, START's own rule gave the same)
def test_loss_is_scaled_for_ga_as_transformers(base, tmp_path, float64_reference, scaled):
    """A Trainer subclass setting ``loss_is_scaled_for_ga``: False divides the model's loss (already over the
    step's token count) by the accumulation count again, True uses a compute_loss override's per-batch mean as
    is. minilora ignored the attribute (False: three times transformers' losses and other weights)."""
    def subclass(cls):
        class Own(cls):
            loss_is_scaled_for_ga = scaled

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                if not scaled:
                    return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                outputs = model(**inputs)
                return (outputs["loss"], outputs) if return_outputs else outputs["loss"]
        return Own
    arguments = dict(gradient_accumulation_steps=3, max_steps=2)
    theirs = train(transformers, base, tmp_path / "theirs", subclass(transformers.Trainer), **arguments)
    ours = train(ml_trainer, base, tmp_path / "ours", subclass(ml_trainer.Trainer), **arguments)
    assert_same(theirs, ours)


def test_float64_resume_continues_the_uninterrupted_run(base, tmp_path):
    """``train(resume_from_checkpoint=...)`` on a float64 model: the checkpoint's float64 weights went in through
    ``Tensor(array)`` (torch.Tensor's constructor: the default float32), so the resumed run started from weights
    rounded to float32 (6e-8 off on the norm weights) and ended 1e-7 from the uninterrupted run; now bit for bit, as
    transformers' (safetensors' load_file keeps the dtype)."""
    arguments = dict(max_steps=4, save_strategy="steps", save_steps=2, gradient_accumulation_steps=2)
    folder = tmp_path / "run"
    whole = train(ml_trainer, base, folder, **arguments)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = models.LlamaForCausalLM.from_pretrained(str(base)).double()
        args = ml_trainer.TrainingArguments(str(folder), **COMMON, **arguments)
        resumed = ml_trainer.Trainer(model, args, collator(ml.tensor), examples(7))
        resumed.train(str(folder / "checkpoint-2"))
    assert resumed.state.global_step == 4
    weights = dict(whole.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), weights[name].numpy(), err_msg=name)
    steps = [e for e in whole.state.log_history if "grad_norm" in e]
    assert [e for e in resumed.state.log_history if "grad_norm" in e] == steps


def test_neftune_noise_magnitude_as_transformers(base, tmp_path, float64_reference):
    """``neftune_noise_alpha=5``: transformers' magnitude is ``alpha / torch.sqrt(torch.tensor(n))``, a number over
    a tensor, which torch computes as ``reciprocal() * alpha``; minilora divided once (at n = 7 x 16: 0.47245559 for
    0.47245562), so the noise, and every gradient after it, differed (grad_norm 1.3997239853800103 for
    1.3997239849086216)."""
    arguments = dict(neftune_noise_alpha=5.0, max_steps=3)
    theirs = train(transformers, base, tmp_path / "theirs", **arguments)
    ours = train(ml_trainer, base, tmp_path / "ours", **arguments)
    assert_same(theirs, ours)
