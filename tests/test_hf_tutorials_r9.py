"""The Hugging Face causal-LM fine-tuning tutorials as users copy them, run with transformers + PEFT and with
minilora side by side: one small random Llama saved as safetensors (both libraries load the same weights) and
one Llama-2-style tokenizer folder (SentencePiece-like BPE, ``"tokenizer_class": "LlamaTokenizerFast"``).

* transformers' data collators: ``DataCollatorForLanguageModeling(tokenizer, mlm=False)`` (padding, labels =
  ids with the pads -100, ``pad_to_multiple_of``, ``return_tensors``), ``DataCollatorWithPadding``,
  ``default_data_collator`` / ``DefaultDataCollator`` (``minilora.data``; minilora had none);
* the tokenizer's default ``padding_side``: a Llama tokenizer pads on the left in transformers (its class
  says so), minilora padded on the right -- the logits and the loss of an unmasked batch differ;
* ``generate(return_dict_in_generate=True, output_hidden_states=True, output_attentions=True)`` (refused
  before), transformers 5's field ``cache``, and ``model.compute_transition_scores``;
* the PEFT quicktour's Trainer-less loop: LoRA, the collator, AdamW steps, generate, merge_and_unload.
Skipped when torch / transformers / peft / tokenizers are not installed."""
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
tokenizers = pytest.importorskip("tokenizers")

import minilora as ml  # noqa: E402
import minilora.data as ml_data  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models  # noqa: E402
from minilora.tokenizer import from_pretrained as ml_tokenizer  # noqa: E402

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "hello world, the quick brown fox"] * 5
TEXTS = ["the cat sat", "hello world, the quick brown fox", "a dog"]


def _llama2_style_tokenizer(folder, **config):
    """A byte-fallback BPE over "▁"-joined words (Llama 2's tokenizer.json layout), trained on CORPUS."""
    from tokenizers import decoders, normalizers, processors, trainers
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"],
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizerFast",
         **config}))
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The model and its tokenizer in one folder, as on the Hub."""
    folder = _llama2_style_tokenizer(tmp_path_factory.mktemp("llama"))
    config = transformers.LlamaConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def load(folder, **kwargs):
    """(transformers' model, minilora's) from the same files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (transformers.LlamaForCausalLM.from_pretrained(str(folder), **kwargs).eval(),
                models.LlamaForCausalLM.from_pretrained(folder, **kwargs).eval())


def toks(folder):
    """(transformers' tokenizer, minilora's), the tutorials' ``pad_token = eos_token`` set on both."""
    theirs, ours = transformers.AutoTokenizer.from_pretrained(str(folder)), ml_tokenizer(folder)
    theirs.pad_token = theirs.eos_token
    ours.pad_token = ours.eos_token
    return theirs, ours


def plain(batch):
    """A batch as {key: (dtype name, values)}: torch's and minilora's compare alike."""
    return {k: (str(v.dtype).rpartition(".")[2], v.tolist()) for k, v in batch.items()}


def test_llama_tokenizer_pads_on_the_left_as_transformers_and_the_batch_scores_alike(folder):
    """transformers' LlamaTokenizer pads on the left unless tokenizer_config.json says otherwise; minilora
    padded on the right, which moves every real token and changes an unmasked batch's logits."""
    theirs, ours = toks(folder)
    assert theirs.padding_side == ours.padding_side == "left"
    assert theirs.truncation_side == ours.truncation_side == "right"
    assert ours(TEXTS, padding=True)["input_ids"] == theirs(TEXTS, padding=True)["input_ids"]
    for side in ("left", "right"):  # the per-call padding_side= wins, as there
        assert ours(TEXTS, padding=True, padding_side=side)["input_ids"] == \
            theirs(TEXTS, padding=True, padding_side=side)["input_ids"]
    reference, model = load(folder)
    with torch.no_grad():  # no attention_mask: what a user who forgets it gets
        expected = reference(theirs(TEXTS, padding=True, return_tensors="pt")["input_ids"]).logits.numpy()
    got = model(ours(TEXTS, padding=True, return_tensors="pt")["input_ids"]).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)
    for config, side in (({"padding_side": "right"}, "right"), ({"tokenizer_class": "PreTrainedTokenizerFast"},
                                                                "right")):
        other = folder.parent / f"tokenizer_{next(iter(config))}"
        other.mkdir(exist_ok=True)
        _llama2_style_tokenizer(other, **config)
        assert ml_tokenizer(other).padding_side == transformers.AutoTokenizer.from_pretrained(
            str(other)).padding_side == side


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"return_tensors": "np"}])
def test_data_collator_for_language_modeling_as_transformers(folder, side, options):
    theirs, ours = toks(folder)
    theirs.padding_side = ours.padding_side = side
    features_t, features_m = [dict(theirs(t)) for t in TEXTS], [dict(ours(t)) for t in TEXTS]
    collate_t = transformers.DataCollatorForLanguageModeling(theirs, mlm=False, **options)
    collate_m = ml_data.DataCollatorForLanguageModeling(ours, mlm=False, **options)
    assert plain(collate_m(features_m)) == plain(collate_t(features_t))  # tokenized dicts: tokenizer.pad
    rows_t, rows_m = [f["input_ids"] for f in features_t], [f["input_ids"] for f in features_m]
    assert plain(collate_m(rows_m)) == plain(collate_t(rows_t))  # plain rows of ids
    batch = collate_m(rows_m)
    assert (batch["labels"] == -100).sum() > 0 and (batch["labels"] == -100).sum() == \
        (batch["input_ids"] == ours.pad_token_id).sum()
    int32_t = collate_t([torch.tensor(r, dtype=torch.int32) for r in rows_t], return_tensors="pt")
    int32_m = collate_m([ml.tensor(r, dtype=ml.int32) for r in rows_m], return_tensors="pt")
    assert plain(int32_m) == plain(int32_t)  # tensors keep their dtype


def test_data_collator_refusals_as_transformers(folder):
    theirs, ours = toks(folder)
    cases = [lambda lib, tok: lib.DataCollatorForLanguageModeling(tok),  # mlm=True by default: no mask token
             lambda lib, tok: lib.DataCollatorForLanguageModeling(tok, mlm=False, whole_word_mask=True),
             lambda lib, tok: lib.DataCollatorForLanguageModeling(tok, mlm=False, return_tensors="tf")([[1]])]
    for case in cases:
        with pytest.raises(ValueError) as expected:
            case(transformers, theirs)
        with pytest.raises(ValueError, match=str(expected.value)[:40]):
            case(ml_data, ours)
    theirs.pad_token = ours.pad_token = None
    with pytest.raises(ValueError, match="does not have a pad token"):
        ml_data.DataCollatorForLanguageModeling(ours, mlm=False)([[1, 5, 6], [1, 7]])
    same_length = [[1, 5, 6], [1, 7, 3]]  # nothing to pad: no pad token needed
    assert plain(ml_data.DataCollatorForLanguageModeling(ours, mlm=False)(same_length)) == \
        plain(transformers.DataCollatorForLanguageModeling(theirs, mlm=False)(same_length))


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_padding_and_default_collators_as_transformers(folder, return_tensors):
    theirs, ours = toks(folder)
    for label in (1, 0.5):  # a class, a regression target (float32 / NumPy's float64 as there)
        for options in ({}, {"padding": "max_length", "max_length": 12}, {"pad_to_multiple_of": 4}):
            expected = transformers.DataCollatorWithPadding(theirs, return_tensors=return_tensors, **options)(
                [{**theirs(t), "label": label} for t in TEXTS])
            got = ml_data.DataCollatorWithPadding(ours, return_tensors=return_tensors, **options)(
                [{**ours(t), "label": label} for t in TEXTS])
            assert plain(got) == plain(expected)
    rows = [{"input_ids": [1, 5, 6], "label": 1, "x": [1.0, 2.0], "text": "a", "flag": True, "none": None},
            {"input_ids": [1, 7, 8], "label": 0, "x": [3.0, 2.5], "text": "b", "flag": False, "none": None}]
    for features in (rows, [{**r, "label": 0.25} for r in rows],
                     [{"input_ids": r["input_ids"], "label_ids": [1, 2]} for r in rows]):
        assert plain(ml_data.default_data_collator(features, return_tensors)) == \
            plain(transformers.default_data_collator(features, return_tensors))
        assert plain(ml_data.DefaultDataCollator(return_tensors=return_tensors)(features)) == \
            plain(transformers.DefaultDataCollator(return_tensors=return_tensors)(features))


def _nested(value):
    return [_nested(v) for v in value] if isinstance(value, tuple) else value.detach().numpy()


def _assert_same_nested(got, expected, path):
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_same_nested(g, e, f"{path}[{i}]")
    else:
        assert got.shape == expected.shape and got.dtype == expected.dtype, path
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=path)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("options", [{}, {"use_cache": False}, {"do_sample": True, "top_k": 5}])
def test_generate_returns_hidden_states_and_attentions_as_transformers(folder, attn, options):
    """Per step the model's own tuples: the whole prompt first, then one token with the cache (every position
    again without); with sdpa no attention weights (empty tuples), as transformers 5."""
    reference, model = load(folder, attn_implementation=attn)
    call = dict(max_new_tokens=3, return_dict_in_generate=True, output_scores=True, output_logits=True,
                output_hidden_states=True, output_attentions=True, **options)
    ids, mask = [[0, 1, 5, 7], [1, 4, 9, 3]], [[0, 1, 1, 1], [1, 1, 1, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        expected = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **call)
        ml.manual_seed(0)
        got = model.generate(ml.tensor(ids), attention_mask=ml.tensor(mask), **call)
    assert got.keys() == list(expected.keys())  # transformers 5's fields, "cache" last
    assert (got.cache is None) == (expected.cache is None) and got.past_key_values is got.cache
    assert got.sequences.tolist() == expected.sequences.tolist()
    for name in ("scores", "logits", "hidden_states", "attentions"):
        _assert_same_nested(_nested(got[name]), _nested(expected[name]), name)
    assert len(got.hidden_states[1]) == 3 and got.hidden_states[1][0].shape == \
        ((2, 1, 32) if options.get("use_cache", True) else (2, 5, 32))
    if not options:  # beam search: each step's outputs for every beam's row (minilora refused them before round 15)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), num_beams=2, **call)
            got = model.generate(ml.tensor(ids), attention_mask=ml.tensor(mask), num_beams=2, **call)
        assert got.sequences.tolist() == expected.sequences.tolist()
        for name in ("hidden_states", "attentions"):
            _assert_same_nested(_nested(got[name]), _nested(expected[name]), name)


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "top_k": 5, "temperature": 0.7},
                                     {"num_beams": 3, "num_return_sequences": 2, "eos_token_id": 5}])
def test_compute_transition_scores_as_transformers(folder, options):
    """The generation tutorial's per-token probabilities: model.compute_transition_scores."""
    reference, model = load(folder)
    call = dict(max_new_tokens=4, return_dict_in_generate=True, output_scores=True, output_logits=True, **options)
    torch.manual_seed(0)
    expected = reference.generate(torch.tensor([[0, 1, 5, 7], [1, 4, 9, 3]]),
                                  attention_mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), **call)
    ml.manual_seed(0)
    got = model.generate(ml.tensor([[0, 1, 5, 7], [1, 4, 9, 3]]),
                         attention_mask=ml.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), **call)
    assert got.sequences.tolist() == expected.sequences.tolist()
    beams = "num_beams" in options
    for normalize in (False, True):
        for field in ("scores",) if beams else ("scores", "logits"):
            theirs = reference.compute_transition_scores(expected.sequences, getattr(expected, field),
                                                         expected.beam_indices if beams else None, normalize)
            ours = model.compute_transition_scores(got.sequences, getattr(got, field),
                                                   got.beam_indices if beams else None, normalize)
            assert ours.dtype == ml.float32 and ours.shape == tuple(theirs.shape)
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)


def test_peft_quicktour_loop_with_the_collator_as_peft(folder, capsys):
    """LoRA on the causal LM, a DataLoader over the tokenized texts with the LM collator, AdamW steps with
    dropout on, then generate and merge_and_unload: PEFT's numbers, step by step."""
    reference, model = load(folder)
    tok_t, tok_m = toks(folder)
    config = dict(task_type="CAUSAL_LM", r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(1)
    reference = peft.get_peft_model(reference, peft.LoraConfig(**config))
    ml.manual_seed(1)
    model = ml_peft.get_peft_model(model, ml_peft.LoraConfig(**config))
    reference.print_trainable_parameters()
    model.print_trainable_parameters()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == printed[1]
    batch_t = transformers.DataCollatorForLanguageModeling(tok_t, mlm=False)([dict(tok_t(t)) for t in TEXTS])
    batch_m = ml_data.DataCollatorForLanguageModeling(tok_m, mlm=False)([dict(tok_m(t)) for t in TEXTS])
    reference.train(), model.train()
    opt_t = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=1e-2)
    opt_m = ml.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(5)
    ml.manual_seed(5)
    for _ in range(2):
        loss_t, loss_m = reference(**batch_t).loss, model(**batch_m).loss
        assert loss_m.item() == pytest.approx(loss_t.item(), abs=2e-5)
        for loss, opt in ((loss_t, opt_t), (loss_m, opt_m)):
            loss.backward()
            opt.step()
            opt.zero_grad()
    reference.eval(), model.eval()
    prompt_t = tok_t(["the cat", "hello world, the quick"], return_tensors="pt", padding=True)
    prompt_m = tok_m(["the cat", "hello world, the quick"], return_tensors="pt", padding=True)
    assert prompt_m["attention_mask"].tolist() == prompt_t["attention_mask"].tolist()  # left padded, both
    out_t = reference.generate(**prompt_t, max_new_tokens=5, do_sample=False)
    out_m = model.generate(**prompt_m, max_new_tokens=5, do_sample=False)
    assert out_m.tolist() == out_t.tolist()
    merged_t, merged_m = reference.merge_and_unload(), model.merge_and_unload()
    with torch.no_grad():
        expected = merged_t(**prompt_t).logits.numpy()
    np.testing.assert_allclose(merged_m(**prompt_m).logits.numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("rope", [
    {"rope_type": "yarn", "factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 16, "beta_slow": 2,
     "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False},
    {"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.3], "long_factor": [2.0, 3.0, 4.0, 5.0],
     "original_max_position_embeddings": 16}])
def test_yarn_and_longrope_as_transformers(tmp_path, rope):
    """Refused before. longrope switches to its long factors once a call reaches past the original context."""
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      rope_parameters={"rope_theta": 10000.0, **rope})
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    reference, model = load(tmp_path)
    assert model.config.rope_parameters == reference.config.rope_parameters  # original context filled in
    assert model.model.rotary_emb.attention_scaling == pytest.approx(reference.model.rotary_emb.attention_scaling,
                                                                     rel=1e-15)
    ids = np.random.default_rng(0).integers(0, 64, (2, 40))
    for length in (8, 40):
        with torch.no_grad():
            expected = reference(torch.tensor(ids[:, :length])).logits.numpy()
        np.testing.assert_allclose(model(ml.tensor(ids[:, :length])).logits.numpy(), expected, atol=1e-6)
    with torch.no_grad():
        expected = reference.generate(torch.tensor(ids[:, :10]), max_new_tokens=12, do_sample=False)
    assert model.generate(ml.tensor(ids[:, :10]), max_new_tokens=12, do_sample=False).tolist() == expected.tolist()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 12},
                                     {"return_tensors": "np"}])
def test_data_collator_for_seq2seq_as_transformers(folder, side, options):
    """The Alpaca-LoRA recipe: labels -100 on the prompt, padded with -100 on the tokenizer's side; the loss of
    the collated batch is transformers'. Labels as lists, arrays, under "label", or none (labels None)."""
    theirs, ours = toks(folder)
    theirs.padding_side = ours.padding_side = side

    def features(tok, kind):
        out = []
        for text in TEXTS:
            feature = dict(tok(text))
            label = [-100, -100] + list(feature["input_ids"])[2:]
            if kind != "none":
                feature["label" if kind == "label" else "labels"] = np.array(label) if kind == "array" else label
            out.append(feature)
        return out
    for kind in ("list", "array", "label", "none"):
        expected = transformers.DataCollatorForSeq2Seq(theirs, **options)(features(theirs, kind))
        got = ml_data.DataCollatorForSeq2Seq(ours, **options)(features(ours, kind))
        assert got.keys() == expected.keys()
        assert {k: None if v is None else plain({k: v})[k] for k, v in got.items()} == \
            {k: None if v is None else plain({k: v})[k] for k, v in expected.items()}
    if options.get("return_tensors") != "np":
        reference, model = load(folder)
        with torch.no_grad():
            loss = reference(**transformers.DataCollatorForSeq2Seq(theirs, **options)(features(theirs, "list"))).loss
        ours_loss = model(**ml_data.DataCollatorForSeq2Seq(ours, **options)(features(ours, "list"))).loss
        assert ours_loss.item() == pytest.approx(loss.item(), abs=2e-6)
