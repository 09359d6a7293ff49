"""Round 17: Trainer / PEFT settings as transformers 5.25 and PEFT 0.21.2 read them, side by side.

* A dataset column named like a keyword minilora's forwards take by name and transformers 5 takes through
  ``**kwargs`` (past_key_values, return_dict, num_items_in_batch, output_hidden_states, output_attentions,
  cache_position): transformers' Trainer keeps only the columns named in the model forward's signature
  (remove_unused_columns), so it drops them; minilora read its own signature and handed them to the model (a
  ``return_dict`` column of zeros made the loss a tuple). minilora's model forwards now show transformers'
  signature (``inspect.signature(model.forward)``: ``cache`` 4th, ``**kwargs`` last), and a column named
  ``cache`` or ``kwargs`` is kept in both.
* ``model_accepts_loss_kwargs`` is transformers' rule: a forward with ``**kwargs`` (a user's module naming
  ``num_items_in_batch`` without ``**kwargs`` is not handed the count; minilora handed it and its loss was then
  a sum over the step's count, not the micro-batch's mean).
* torch.optim.Adafactor(foreach=True): its multi-tensor path scales the step, then adds it (two roundings).
* 16-bit optimizer steps: torch's kernels round each step in their scalar tail (the last n % 32 elements).
* LoraConfig: PEFT 0.21.2's layers_to_transform / layers_pattern checks (order, words) and its rsLoRA warning.
  PEFT's __post_init__ checks little else: a flag given as 1, a dict or a string is kept and read by truthiness
  (``use_dora={"a": 1}`` trains DoRA); minilora refuses such flags by name (TypeError), not silently.
* optim_args parsed as transformers parses them, for every optimizer.
Sweeps (scripts, not tests): 66 TrainingArguments settings and 34 LoraConfig settings, 3 training steps on a tiny
Llama in both stacks: the same logs, weights (PiSSA/MiCA: LAPACK's singular-vector signs) and saved files.
Skipped without torch / transformers."""
import inspect
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora import models, trainer as ml_trainer  # noqa: E402
from trainer_rows import examples, save_tiny_llama  # noqa: E402

HEADS = ("LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaForTokenClassification", "LlamaModel",
         "MistralForCausalLM", "Qwen2ForSequenceClassification", "Qwen3ForTokenClassification")
# minilora's forwards take these by name; transformers 5's through **kwargs (and `cache`, past_key_values' new name)
KWARGS_COLUMNS = ("past_key_values", "return_dict", "num_items_in_batch", "output_hidden_states",
                  "output_attentions", "cache_position")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.mark.parametrize("head", HEADS)
def test_forward_signature_as_transformers(head):
    """What inspect.signature says of a model's forward (the Trainer's columns are read from it): the same
    names, kinds and defaults as transformers' (annotations aside)."""
    def shown(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.forward).parameters.values()]
    assert shown(getattr(models, head)) == shown(getattr(transformers, head))


def passing_collator(tensor):
    """Right-pads the token columns (as trainer_rows.collator) and hands every other column on as a tensor of
    one number a row, so a column reaches the model unless the Trainer removed it."""
    def collate(features):
        n = max(len(f["input_ids"]) for f in features)
        pads = {"input_ids": 0, "attention_mask": 0, "labels": -100}
        batch = {k: tensor([f[k] + [pad] * (n - len(f[k])) for f in features]) for k, pad in pads.items()}
        batch.update({k: tensor([f[k] for f in features]) for k in features[0] if k not in pads})
        return batch
    return collate


def _losses(lib, base, folder, dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = lib.TrainingArguments(output_dir=str(folder), report_to="none", disable_tqdm=True, save_strategy="no",
                                     per_device_train_batch_size=2, logging_steps=1, max_steps=2, learning_rate=0.01)
        model = (transformers.LlamaForCausalLM if lib is transformers else models.LlamaForCausalLM).from_pretrained(
            str(base))
        trainer = lib.Trainer(model=model, args=args, train_dataset=dataset,
                              data_collator=passing_collator(torch.tensor if lib is transformers else ml.tensor))
        trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


@pytest.mark.parametrize("hf_dataset", [False, True], ids=["list", "datasets.Dataset"])
def test_columns_named_like_forward_keywords_are_dropped_as_transformers(base, tmp_path, hf_dataset):
    """Every KWARGS_COLUMNS column (zeros) beside the token rows: dropped by both Trainers, the same losses."""
    rows = [{**row, **{name: 0 for name in KWARGS_COLUMNS}} for row in examples(4)]
    for row in rows:
        del row["text"]
    if hf_dataset:
        datasets = pytest.importorskip("datasets")
    make = datasets.Dataset.from_list if hf_dataset else list
    theirs = _losses(transformers, base, tmp_path / "theirs", make(rows))
    ours = _losses(ml_trainer, base, tmp_path / "ours", make(rows))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


class _TorchCounted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, input_ids, labels=None, num_items_in_batch=None):
        return {"loss": (self.weight * input_ids).sum()}


class _MiniloraCounted(ml.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = ml.nn.Parameter(ml.ones(3))

    def forward(self, input_ids, labels=None, num_items_in_batch=None):
        return {"loss": (self.weight * input_ids).sum()}


class _TorchWithKwargs(_TorchCounted):
    def forward(self, input_ids, labels=None, **kwargs):
        return super().forward(input_ids, labels)


class _MiniloraWithKwargs(_MiniloraCounted):
    def forward(self, input_ids, labels=None, **kwargs):
        return super().forward(input_ids, labels)


@pytest.mark.parametrize("modules", [(_TorchCounted, _MiniloraCounted), (_TorchWithKwargs, _MiniloraWithKwargs)],
                         ids=["named num_items_in_batch", "**kwargs"])
def test_model_accepts_loss_kwargs_as_transformers(tmp_path, modules):
    """transformers hands num_items_in_batch only to a forward with **kwargs (or a model saying
    accepts_loss_kwargs), whatever the forward names."""
    answers = []
    for lib, module in zip((transformers, ml_trainer), modules):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), report_to="none")
            answers.append(lib.Trainer(model=module(), args=args).model_accepts_loss_kwargs)
    assert answers[1] == answers[0]


def _adafactor_steps(lib, dtype, foreach, options, shapes=((5, 7), (6,), (2, 3, 4))):
    """Three Adafactor steps on a matrix, a vector and a stack of matrices, from one NumPy draw."""
    g = np.random.default_rng(0)
    drawn = np.float64 if dtype == "float64" else np.float32
    params = [lib.nn.Parameter(lib.tensor(g.standard_normal(s).astype(drawn)).to(getattr(lib, dtype)))
              for s in shapes]
    optimizer = lib.optim.Adafactor(params, lr=0.05, foreach=foreach, **options)
    for _ in range(3):
        for p in params:
            p.grad = lib.tensor(g.standard_normal(p.shape).astype(drawn)).to(getattr(lib, dtype))
        optimizer.step()
    return [p.detach().double().numpy() if lib is torch else p.double().numpy() for p in params]


@pytest.mark.parametrize("dtype, options", [("float32", {}), ("float64", dict(weight_decay=0.1)),
                                            ("float32", dict(maximize=True)), ("bfloat16", {})])
def test_adafactor_foreach_as_torch(dtype, options):
    """torch.optim.Adafactor(foreach=True), its multi-tensor path: the step is scaled (a scalar list, in a
    16-bit tensor's dtype) and then added, two roundings where the single-tensor add_(alpha=) fuses them; minilora
    fused them for both (4 of 65 float32 weights an ulp off after 3 steps). bfloat16 on a 4 x 8 matrix: torch's
    16-bit kernels round each step of their scalar tail (the last n % 32 elements), which minilora's optimizers
    do not follow, on either path (an rsqrt an ulp off in a 5 x 7 matrix's last element)."""
    shapes = {}
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
        shapes = dict(shapes=((4, 8),))
    theirs = _adafactor_steps(torch, dtype, True, options, **shapes)
    ours = _adafactor_steps(ml, dtype, True, options, **shapes)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


LORA_CHECKS = [dict(target_modules="q.*", layers_to_transform=[0]),
               dict(target_modules="q.*", layers_pattern="layers", layers_to_transform=0),
               dict(target_modules="q.*", layers_pattern="layers"),
               dict(target_modules=["q_proj"], layers_pattern="layers"),
               dict(use_rslora=True, rank_pattern={"q_proj": 4}, init_lora_weights="olora"),
               dict(use_rslora=True, alpha_pattern={"q_proj": 4}, init_lora_weights="pissa_niter_2"),
               dict(use_rslora=True, rank_pattern={"q_proj": 4}, init_lora_weights="gaussian")]


def _config_outcome(make, settings):
    """(exception type name, message) or ("ok", the warnings' messages) of ``make(**settings)``."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make(**settings)
    except Exception as exc:  # noqa: BLE001 -- the comparison is of what each library raises
        return type(exc).__name__, str(exc)
    return "ok", [str(w.message) for w in caught]


@pytest.mark.parametrize("settings", LORA_CHECKS, ids=str)
def test_lora_config_checks_as_peft(settings):
    """PEFT 0.21.2's LoraConfig.__post_init__ checks of layers_to_transform / layers_pattern against a regex
    target_modules (its order and words; minilora's were its own), and its warning for rsLoRA with rank or alpha
    patterns under an init that converts the base weights (minilora gave none)."""
    peft = pytest.importorskip("peft")
    import minilora.lora as ml_peft
    assert _config_outcome(ml_peft.LoraConfig, settings) == _config_outcome(peft.LoraConfig, settings)


@pytest.mark.parametrize("optim", ["adamw_torch", "sgd", "adafactor"])
@pytest.mark.parametrize("optim_args", ["betas=(0.8,0.99)", "momentum", "momentum=0.9=1", "momentum=0.5, nesterov=True"])
def test_optim_args_are_parsed_as_transformers(tmp_path, optim, optim_args):
    """transformers parses optim_args ("key=value,...", spaces dropped) for every optimizer before it picks one, so a
    malformed string is its unpacking ValueError whichever optimizer reads it; minilora parsed it only for SGD,
    Adagrad and RMSprop (and there with dict()'s other words), and trained AdamW with it."""
    answers = []
    for lib in (transformers, ml_trainer):
        args = lib.TrainingArguments(output_dir=str(tmp_path), report_to="none", optim=optim, optim_args=optim_args)
        try:
            cls, kwargs = lib.Trainer.get_optimizer_cls_and_kwargs(args)
            answers.append((cls.__name__, {k: v for k, v in kwargs.items() if k != "fused"}))
        except ValueError as error:
            answers.append((ValueError, str(error)))
    assert answers[1] == answers[0]


@pytest.mark.parametrize("name, options", [("Adafactor", dict(foreach=False)), ("Adafactor", dict(foreach=True)),
                                           ("SGD", dict(momentum=0.9)), ("AdamW", dict(weight_decay=0.1))])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_steps_in_the_kernels_scalar_tail_as_torch(name, options, dtype):
    """A 16-bit parameter whose size is no multiple of 32: torch's CPU kernels compute the last n % 32 elements
    with their scalar lambda, in c10's 16-bit arithmetic, each step rounded (rsqrt's root, add's alpha * y);
    the optimizers rounded them once, as the vectorized part (a 5 x 7 bfloat16 SGD or Adafactor step moved its
    last weights by an ulp). Three steps on a 5 x 7 matrix and a 6-vector, bit for bit."""
    pytest.importorskip("ml_dtypes")
    results = []
    for lib in (torch, ml):
        g = np.random.default_rng(0)
        params = [lib.nn.Parameter(lib.tensor(g.standard_normal(s).astype(np.float32)).to(getattr(lib, dtype)))
                  for s in ((5, 7), (6,))]
        optimizer = getattr(lib.optim, name)(params, lr=0.05, **options)
        for _ in range(3):
            for p in params:
                p.grad = lib.tensor(g.standard_normal(p.shape).astype(np.float32)).to(getattr(lib, dtype))
            optimizer.step()
        results.append([p.detach().double().numpy() if lib is torch else p.double().numpy() for p in params])
    for ours, theirs in zip(results[1], results[0]):
        np.testing.assert_array_equal(ours, theirs)
