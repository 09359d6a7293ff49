"""Round 21: tutorial code copied as written, run with torch / transformers / PEFT and with minilora from the same
seed, one test per divergence found:

* PEFT's model-merging guide on PiSSA / OLoRA adapters: ``add_weighted_adapter`` builds the new adapter from the
  first one's config, init included, so PEFT factorises the (residual) base weights once more before the
  combination replaces the new factors. minilora made the new adapter with ``init_lora_weights=True`` instead: the
  base weights, every adapter's output afterwards and the random draws all differed from PEFT's, silently. Now
  PEFT's numbers, with a warning saying what happened to the base; the same for adapters made with
  ``layer_replication``: PEFT replicates the (already replicated) layers once more, minilora did not;
* the DDP tutorial's ``torch.utils.data.distributed.DistributedSampler`` (and ``torch.utils.data.dataloader.
  default_collate``, ``torch.utils.data.sampler.SubsetRandomSampler``): torch.utils.data's submodules were missing
  (``minilora.utils.data.distributed`` was the ``torch.distributed`` package: an AttributeError);
* ``CrossEntropyLoss(label_smoothing=...)`` with ``ignore_index`` on masked logits (a -inf logit at a padded
  position): minilora's smoothing term multiplied the ignored rows by 0 (inf * 0 = nan: a nan loss where torch's
  masked_fill gives a finite one); and over [N, C, d] logits (a segmentation or a [B, C, T] sequence tutorial),
  label smoothing and probability targets ran log_softmax and the sums on the rows moved to the last axis, where
  torch runs them along axis 1 (values and gradients an ulp or two off); ``reduction="none"`` (then ``(loss *
  mask).sum() / mask.sum()``, as many tutorials write it) gave an ignored row with a -inf logit at class 0 a nan
  loss (its class 0's loss times 0) where torch's is 0, in cross_entropy and nll_loss alike;
* ``nn.TransformerEncoder`` in eval with a ``src_key_padding_mask`` (torch's nested-tensor path): the padded
  positions were the output times 0, -0.0 under a negative value (printed ``-0.0000``) where torch's are +0;
* PEFT's ``delete_adapter`` of the active adapter warns which adapter it activates instead (minilora was silent);
* "add a pad token, ``resize_token_embeddings``, then LoRA" on a checkpoint whose config says
  ``tie_word_embeddings`` but holds two different tables (transformers loads them untied): transformers 5 resizes
  the head too (drawing its Linear's init and its new rows) and then ties it; minilora drew no head, so every draw
  after it (the LoRA init) was other numbers than transformers'.
* the token-classification tutorial's inference (``AutoModelForTokenClassification.from_pretrained(...)``, then
  ``with torch.no_grad(): logits = model(**inputs).logits``): transformers' ``from_pretrained`` returns the model in
  eval mode; minilora's left it training, so the head's dropout (0.1) dropped out: other logits on each call;
* transformers 5's ``model(input_ids, labels=..., shift_labels=...)`` (targets already shifted: context-parallel
  training's, TRL's) was a TypeError.

Numbers are compared bit for bit where both libraries run the same arithmetic, else to a tolerance (a BLAS or
LAPACK order)."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

BOTH = [(torch, peft), (ml, ml_peft)]
ml.bfloat16  # (ml_dtypes' first import, ~0.7 s, at collection rather than inside the first bfloat16 test)


def _numbers(t):
    return t.detach().float().numpy().copy()


def _mlp(T):
    T.manual_seed(0)
    return T.nn.Sequential(T.nn.Linear(12, 16), T.nn.ReLU(), T.nn.Linear(16, 16), T.nn.ReLU(), T.nn.Linear(16, 3))


# ==================================================================================================
# PEFT's model merging guide, on adapters with a weight-mutating init
# ==================================================================================================
def _combined_after_a_weight_mutating_init(T, P, init, combination_type):
    model = P.get_peft_model(_mlp(T), P.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"],
                                                   init_lora_weights=init))
    model.add_adapter("other", P.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"], init_lora_weights=False))
    x = T.linspace(-1, 1, 24).reshape(2, 12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.add_weighted_adapter(["default", "other"], [0.7, 0.3], "mix", combination_type=combination_type)
    model.set_adapter("mix")
    with T.no_grad():
        mixed = model(x)
    model.set_adapter("default")
    with T.no_grad():
        default = model(x)
    layer = model.base_model.model[2]
    return ([_numbers(layer.base_layer.weight), _numbers(mixed), _numbers(default), _numbers(T.rand(3))],
            [str(w.message) for w in caught])


@pytest.mark.parametrize("init", ["pissa", "olora"])
@pytest.mark.parametrize("combination_type", ["cat", "svd"])
def test_add_weighted_adapter_after_pissa_or_olora_as_peft(init, combination_type):
    """The new adapter's init factorises the residual base again (rank 4 for "cat", 2 for "svd"), then its factors
    are replaced: the base, both adapters' outputs and the generator's state afterwards are PEFT's."""
    (expected, _), (got, said) = (_combined_after_a_weight_mutating_init(T, P, init, combination_type)
                                  for T, P in BOTH)
    for what, e, g in zip(("base weight", "mix", "default", "next draws"), expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=what)
    assert any("changed the base weights" in message for message in said)


# ==================================================================================================
# the DDP tutorial's data loading: torch.utils.data's submodules
# ==================================================================================================
def _sharded_epochs(T):
    data = T.utils.data
    dataset = data.TensorDataset(T.arange(10), T.arange(10) * 10)
    sampler = data.distributed.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=3)
    loader = data.DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=data.dataloader.default_collate)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        epochs.append([[x.tolist(), y.tolist()] for x, y in loader])
    subset = data.sampler.SubsetRandomSampler([1, 4, 6, 8], generator=T.Generator().manual_seed(0))
    return epochs, list(subset), isinstance(data.dataset.Subset(dataset, [0]), data.Dataset)


def test_ddp_tutorials_sampler_through_torch_utils_data_submodules():
    expected, got = (_sharded_epochs(T) for T, _ in BOTH)
    assert got == expected
    from minilora.utils.data.distributed import DistributedSampler  # the tutorial's import line, minilora's name
    assert DistributedSampler is ml.utils.data.DistributedSampler


# ==================================================================================================
# cross-entropy with label smoothing and ignore_index, on masked and on [N, C, d] logits
# ==================================================================================================
def _smoothed_loss_of_masked_logits(T, reduction):
    logits = T.tensor([[1.0, 2.0, 0.3], [0.5, float("-inf"), 0.1], [0.2, 0.1, 0.7]], requires_grad=True)
    labels = T.tensor([1, -100, 0])  # (smoothing sums every class: a -inf in a counted row is an inf loss)
    loss = T.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1, reduction=reduction)(logits, labels)
    loss.sum().backward()
    return [_numbers(loss), _numbers(logits.grad)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_ignores_a_masked_padded_row_as_torch(reduction):
    expected, got = (_smoothed_loss_of_masked_logits(T, reduction) for T, _ in BOTH)
    assert np.isfinite(expected[0]).all()
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)


def _nd_cross_entropy(T, options, probabilities, dtype_name):
    rng = np.random.default_rng(0)
    dtype = getattr(T, dtype_name)
    logits = T.tensor(rng.standard_normal((6, 5, 7)).astype(np.float32)).to(dtype).requires_grad_()
    if probabilities:
        target = rng.random((6, 5, 7)).astype(np.float32)
        target = T.tensor(target / target.sum(1, keepdims=True)).to(dtype)
    else:
        labels = rng.integers(0, 5, (6, 7))
        labels[0, 1], labels[3] = -100, -100
        target = T.tensor(labels)
    options = dict(options, weight=T.tensor(rng.random(5).astype(np.float32) + 0.5).to(dtype)) \
        if options.pop("weight", False) else options
    loss = T.nn.functional.cross_entropy(logits, target, **options)
    loss.sum().backward()
    return [_numbers(loss), _numbers(logits.grad)]


ND_CASES = {  # (options, probability targets): class indices without smoothing take the nll path, torch's already
    "smoothed": ({"label_smoothing": 0.1}, False), "smoothed-weighted": ({"label_smoothing": 0.2, "weight": True}, False),
    "smoothed-none": ({"label_smoothing": 0.1, "reduction": "none"}, False),
    "smoothed-sum": ({"label_smoothing": 0.1, "reduction": "sum", "weight": True}, False),
    "probabilities": ({}, True), "probabilities-weighted": ({"weight": True}, True),
    "probabilities-none": ({"reduction": "none"}, True),
    "probabilities-smoothed-sum": ({"label_smoothing": 0.1, "reduction": "sum", "weight": True}, True)}


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(ND_CASES))
def test_cross_entropy_over_classes_on_axis_1_is_torchs_bits(case, dtype_name):
    """[N, C, d] logits: torch's log_softmax and sums along axis 1 (minilora moved the classes last first: with label
    smoothing or probability targets, 10-40% of the gradients an ulp off, the loss often too)."""
    options, probabilities = ND_CASES[case]
    expected, got = (_nd_cross_entropy(T, dict(options), probabilities, dtype_name) for T, _ in BOTH)
    for what, e, g in zip(("loss", "gradient"), expected, got):
        np.testing.assert_array_equal(g, e, err_msg=what)


def _none_loss_of_a_masked_padded_row(T, loss, dtype_name):
    F = T.nn.functional
    logits = T.tensor([[1.0, 2.0, 0.3], [float("-inf"), 0.5, 0.1], [0.2, 0.1, 0.7]],
                      dtype=getattr(T, dtype_name), requires_grad=True)  # class 0 masked out at the padded row
    labels = T.tensor([1, -100, 0])
    per_token = F.cross_entropy(logits, labels, reduction="none") if loss == "cross_entropy" else \
        F.nll_loss(F.log_softmax(logits, dim=-1), labels, reduction="none")
    mask = (labels != -100).to(per_token.dtype)
    mean = (per_token * mask).sum() / mask.sum()
    mean.backward()
    return [_numbers(per_token), _numbers(mean), _numbers(logits.grad)]


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_an_ignored_row_with_a_masked_class_0_loses_0_as_torch(loss, dtype_name):
    expected, got = (_none_loss_of_a_masked_padded_row(T, loss, dtype_name) for T, _ in BOTH)
    assert np.isfinite(expected[1])
    for what, e, g in zip(("per token", "masked mean", "gradient"), expected, got):
        np.testing.assert_array_equal(g, e, err_msg=what)


def _encoded_padded_batch(T):
    T.manual_seed(0)
    layer = T.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    encoder = T.nn.TransformerEncoder(layer, num_layers=2).eval()
    x = T.randn(2, 4, 8)
    padding = T.tensor([[False, False, True, True], [False, False, False, False]])
    with T.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's nested-tensor prototype warning)
        return _numbers(encoder(x, src_key_padding_mask=padding))


def test_transformer_encoders_padded_positions_are_positive_zeros_as_torch():
    expected, got = (_encoded_padded_batch(T) for T, _ in BOTH)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _warned_when_the_active_adapter_is_deleted(P):
    model = P.get_peft_model(_mlp_of(P), P.LoraConfig(r=2, target_modules=["0"]))
    model.add_adapter("other", P.LoraConfig(r=2, target_modules=["0"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.delete_adapter("default")
    return sorted({str(w.message) for w in caught}), model.active_adapter


def _mlp_of(P):
    return _mlp(torch if P is peft else ml)


def test_deleting_the_active_adapter_warns_as_peft():
    expected, got = (_warned_when_the_active_adapter_is_deleted(P) for _, P in BOTH)
    assert got == expected == (["Adapter default was active which is now deleted. Setting active adapter to other."],
                               "other")


# ==================================================================================================
# new tokens: resize_token_embeddings on a checkpoint that says "tied" but holds two tables
# ==================================================================================================
def _resized_then_drawn(T, model_class, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (both say the tables differ, so they are not tied)
        model = model_class.from_pretrained(str(folder), tie_word_embeddings=True)
    T.manual_seed(5)
    model.resize_token_embeddings(24)
    return [_numbers(model.get_input_embeddings().weight), _numbers(model.get_output_embeddings().weight),
            model.get_output_embeddings().weight is model.get_input_embeddings().weight, _numbers(T.randn(4))]


def test_resizing_an_untied_head_draws_as_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from minilora import models
    config = transformers.LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    expected = _resized_then_drawn(torch, transformers.LlamaForCausalLM, tmp_path)
    got = _resized_then_drawn(ml, models.LlamaForCausalLM, tmp_path)
    assert got[2] is expected[2] is True
    for what, e, g in zip(("embedding", "head", "next draws"), expected[:2] + expected[3:], got[:2] + got[3:]):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=what)


# ==================================================================================================
# add_weighted_adapter of adapters made with layer_replication
# ==================================================================================================
def _replicated_then_combined(T, model_class, P, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = model_class.from_pretrained(str(folder))
    T.manual_seed(0)
    config = dict(r=2, target_modules=["q_proj"], layer_replication=[[0, 2], [1, 2]], init_lora_weights=False)
    model = P.get_peft_model(base, P.LoraConfig(**config))
    model.add_adapter("other", P.LoraConfig(**config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.add_weighted_adapter(["default", "other"], [0.5, 0.5], "mix", combination_type="linear")
    x = T.tensor([[1, 5, 9, 13]])
    logits = []
    for name in ("mix", "default"):
        model.set_adapter(name)
        with T.no_grad():
            logits.append(_numbers(model(x).logits))
    layers = model.base_model.model.model.layers
    return logits, [layers[1] is layers[2]], [str(w.message) for w in caught]


def test_add_weighted_adapter_after_layer_replication_as_peft(tmp_path):
    transformers = pytest.importorskip("transformers")
    from minilora import models
    config = transformers.LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    expected = _replicated_then_combined(torch, transformers.LlamaForCausalLM, peft, tmp_path)
    got = _replicated_then_combined(ml, models.LlamaForCausalLM, ml_peft, tmp_path)
    for what, e, g in zip(("mix", "default"), expected[0], got[0]):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=what)
    assert got[1] == expected[1]
    assert any("replicated by it again" in message for message in got[2])


# ==================================================================================================
# the causal LM's loss with shift_labels
# ==================================================================================================
def _losses_with_shift_labels(T, model_class, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_class.from_pretrained(str(folder))
    ids = T.tensor([[1, 5, 9, 13, 0, 0], [1, 7, 7, 3, 11, 6]])
    labels = ids.clone()
    labels[0, 4:] = -100
    shift_labels = T.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    shift_labels[1, 0] = -100  # (not labels shifted: these are the targets)
    results = [model(input_ids=ids, shift_labels=shift_labels).loss is None]  # (no labels: no loss, as there)
    for options in ({"shift_labels": shift_labels}, {"shift_labels": shift_labels, "num_items_in_batch": 6}):
        loss = model(input_ids=ids, labels=labels, **options).loss
        loss.backward()
        results += [_numbers(loss), _numbers(model.model.embed_tokens.weight.grad)]
        model.zero_grad()
    return results


def test_causal_lm_loss_takes_shift_labels_as_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from minilora import models
    config = transformers.LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    expected = _losses_with_shift_labels(torch, transformers.LlamaForCausalLM, tmp_path)
    got = _losses_with_shift_labels(ml, models.LlamaForCausalLM, tmp_path)
    assert got[0] is expected[0] is True
    for e, g in zip(expected[1:], got[1:]):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)


# ==================================================================================================
# from_pretrained returns a model in eval mode
# ==================================================================================================
def _loaded_token_classifier_infers(T, auto_class, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (both report the new head as missing)
        T.manual_seed(0)
        model = auto_class.from_pretrained(str(folder), num_labels=3)
    ids = T.tensor([[1, 5, 9, 13], [1, 7, 3, 0]])
    with T.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
    return [model.training, _numbers(logits)]


def test_from_pretrained_returns_an_eval_model_as_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from minilora import models
    config = transformers.LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=0)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    expected = _loaded_token_classifier_infers(torch, transformers.AutoModelForTokenClassification, tmp_path)
    got = _loaded_token_classifier_infers(ml, models.AutoModelForTokenClassification, tmp_path)
    assert got[0] is expected[0] is False
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
    for name in ("LlamaForCausalLM", "LlamaForSequenceClassification"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert getattr(models, name).from_pretrained(tmp_path).training is False
