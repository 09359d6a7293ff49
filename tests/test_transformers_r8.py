"""Round 8 of the transformers conformance: the calls a Llama user makes, side by side with transformers'
LlamaForCausalLM built from the same config and weights (float64 where values are compared).

* ``resize_token_embeddings`` with transformers' default ``mean_resizing=True``: the new rows are drawn from
  N(mean, 1e-9 * covariance) of the old ones with torch's generator (minilora wrote the mean: a seeded user
  got other numbers); the float32 mean is torch's to the last bit (its CPU sum's order), the draw torch's.
* ``generate`` with a 1-D prompt: transformers fails (IndexError); minilora answered a 1-D sequence, now a
  ValueError naming the fix.
* The sweep: forward's options (labels with -100 and left padding, position_ids, logits_to_keep,
  hidden states / attentions, return_dict=False, caches, inputs_embeds), training with gradient
  checkpointing, the model's helpers, config fields, sharded checkpoints.
"""
import os
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, os.path.dirname(__file__))
from test_llama import hf  # noqa: E402,F401  (transformers computing in float64 throughout)

import minilora as ml  # noqa: E402
from minilora import parallel  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.nn.llama import _torch_column_sum  # noqa: E402

LLAMA = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


# ==================================================================================================
# resize_token_embeddings: transformers' draw around the mean, with torch's numbers
# ==================================================================================================
def _resized(lib, options, dtype, resize):
    """A fresh model of ``lib`` (seed 0, built in float32 then cast, on both sides), resized under seed 5:
    its embedding and head tables (as float64) and the generator's next numbers."""
    lib.manual_seed(0)
    if lib is torch:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA, **options))
    else:
        model = LlamaForCausalLM(LlamaConfig(**LLAMA, **options))
    model = model.to(getattr(lib, dtype))
    lib.manual_seed(5)
    returned = _quiet(lambda: model.resize_token_embeddings(*resize[0], **resize[1]))
    assert returned is model.get_input_embeddings()
    tables = {name: value.detach().to(lib.float64).numpy() for name, value in model.state_dict().items()
              if "embed_tokens" in name or "lm_head" in name}
    return model, tables, lib.rand(3).tolist()


def _ulps_apart(ours, theirs):
    """How many float32 units in the last place two tables are apart, at most (0: bit for bit)."""
    return int(np.abs(ours.astype(np.float32).view(np.int32).astype(np.int64)
                      - theirs.astype(np.float32).view(np.int32).astype(np.int64)).max())


RESIZES = [((50,), {}), ((45,), {"pad_to_multiple_of": 8}), ((None,), {"pad_to_multiple_of": 16}),
           ((30,), {}), ((50,), {"mean_resizing": False}), ((44,), {"mean_resizing": True})]


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_resize_token_embeddings_draws_transformers_rows(tie, dtype):
    """Positional and keyword calls, grown, padded, shrunk, mean_resizing=False: the same tables as
    transformers (the float32 BLAS steps of the covariance and Cholesky may round a rare value one unit
    in the last place apart), the same config, and the generator left where torch's is."""
    for args, kwargs in RESIZES:
        theirs, their_tables, their_next = _resized(torch, {"tie_word_embeddings": tie}, dtype, (args, kwargs))
        ours, our_tables, our_next = _resized(ml, {"tie_word_embeddings": tie}, dtype, (args, kwargs))
        assert our_next == their_next, (args, kwargs)  # as many numbers drawn
        assert set(our_tables) == set(their_tables)
        for name, table in their_tables.items():
            assert our_tables[name].shape == table.shape
            np.testing.assert_array_equal(our_tables[name][:30], table[:30])  # the old rows, kept
            assert _ulps_apart(our_tables[name], table) <= 1, (name, args, kwargs)
            assert np.mean(our_tables[name] == table) > 0.99, (name, args, kwargs)
        assert ours.config.vocab_size == theirs.config.vocab_size == their_tables["lm_head.weight"].shape[0]
        assert ours.lm_head.out_features == theirs.lm_head.out_features
        assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie


def test_resize_new_rows_are_drawn_not_the_mean():
    """The draw is not the mean itself (what minilora wrote before): each new row differs from the
    float32 mean, by about sqrt(1e-9) of each column's spread, and the rows differ from one another."""
    _, tables, _ = _resized(ml, {}, "float64", ((46,), {}))
    old, new = tables["model.embed_tokens.weight"][:40], tables["model.embed_tokens.weight"][40:]
    mean = old.astype(np.float32).mean(axis=0)
    spread = np.sqrt(1e-9 * old.var(axis=0))
    assert (new != mean).mean() > 0.9 and (new[0] != new[1]).all()
    assert (np.abs(new - mean) < 6 * spread).all()


def test_resize_falls_back_to_the_float32_mean_as_transformers():
    """Fewer old rows than columns: 1e-9 * covariance is not positive-definite, transformers writes the
    float32 mean in every new row and draws nothing; its mean is torch's sum's (bit for bit)."""
    options = {"vocab_size": 12, "tie_word_embeddings": False}

    def build(lib):
        lib.manual_seed(0)
        if lib is torch:
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA, **options}))
        else:
            model = LlamaForCausalLM(LlamaConfig(**{**LLAMA, **options}))
        with lib.no_grad():  # values large and uneven enough for the summation order to show
            model.get_input_embeddings().weight.mul_(37.0).add_(0.013)
        lib.manual_seed(5)
        _quiet(lambda: model.resize_token_embeddings(20))
        return model.get_input_embeddings().weight.detach().numpy(), lib.rand(2).tolist()

    (theirs, their_next), (ours, our_next) = build(torch), build(ml)
    np.testing.assert_array_equal(ours, theirs)
    assert (ours[12:] == ours[12]).all() and our_next == their_next


@pytest.mark.parametrize("tie", [False, True])
def test_resize_keeps_the_embedding_module_its_hooks_and_requires_grad(tie):
    """transformers keeps the embedding module and its Parameter (new rows in it): a hook on it (PEFT's
    enable_input_require_grads) and a frozen table stay; the head keeps its requires_grad. minilora built
    a new module: the hook was lost and a frozen embedding came back trainable."""
    results = []
    for lib in (torch, ml):
        model = (transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA, tie_word_embeddings=tie))
                 if lib is torch else LlamaForCausalLM(LlamaConfig(**LLAMA, tie_word_embeddings=tie)))
        embedding = model.get_input_embeddings()
        weight = embedding.weight
        weight.requires_grad_(False)
        model.enable_input_require_grads()
        returned = _quiet(lambda: model.resize_token_embeddings(48))
        logits = model(torch.tensor([[1, 45]]) if lib is torch else ml.tensor([[1, 45]])).logits
        results.append((returned is embedding is model.get_input_embeddings(), returned.weight is weight,
                        weight.requires_grad, model.lm_head.weight.requires_grad, logits.requires_grad,
                        returned.num_embeddings, model.lm_head.out_features, tuple(model.lm_head.weight.shape)))
    assert results[1] == results[0]
    assert results[1][:3] == (True, True, False) and results[1][4] is True


@pytest.mark.parametrize("threads", [1, 2])
def test_torch_column_sum_is_torchs_float32_sum(threads):
    """The order of torch's CPU sum over rows (its cascade of partial sums, groups of 32 columns, the
    interleaved tail columns, the columns split among threads): the same float32 sums."""
    torch_threads, our_threads = torch.get_num_threads(), parallel.num_threads()
    torch.set_num_threads(threads)
    ml.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        for shape in [(37, 16), (40, 5), (100, 33), (1000, 64), (513, 96), (3000, 100), (2000, 200), (17, 7)]:
            rows = (rng.standard_normal(shape) * 0.02 + 0.001).astype(np.float32)
            np.testing.assert_array_equal(_torch_column_sum(rows), torch.sum(torch.from_numpy(rows), 0).numpy(),
                                          err_msg=str(shape))
    finally:
        torch.set_num_threads(torch_threads)
        ml.set_num_threads(our_threads)


# ==================================================================================================
# generate() with a 1-D prompt
# ==================================================================================================
def test_generate_refuses_a_1d_prompt_as_transformers_fails():
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).double()
    model = LlamaForCausalLM(LlamaConfig(**LLAMA), dtype="float64")
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    prompt = [3, 7, 1, 12]
    with pytest.raises(IndexError):
        _quiet(lambda: reference.generate(torch.tensor(prompt), max_new_tokens=2, do_sample=False))
    for call in (lambda: model.generate(ml.tensor(prompt), max_new_tokens=2, do_sample=False),
                 lambda: model.generate(input_ids=np.array(prompt), max_new_tokens=2),
                 lambda: model.generate(inputs=prompt, max_new_tokens=2)):
        with pytest.raises(ValueError, match=r"1-D sequence .* pass \[ids\]"):
            call()
    expected = _quiet(lambda: reference.generate(torch.tensor([prompt]), max_new_tokens=2, do_sample=False))
    assert model.generate(ml.tensor([prompt]), max_new_tokens=2, do_sample=False).tolist() == expected.tolist()


# ==================================================================================================
# The sweep: forward's options, side by side (float64, transformers patched to compute in float64)
# ==================================================================================================
IDS = np.array([[0, 0, 3, 5, 6], [7, 8, 9, 10, 11]])
MASK = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # row 0 left-padded


def pair(hf, attn=None, **options):
    """transformers' Llama and minilora's with the same random weights (large enough to show mistakes)."""
    hf_config = hf.LlamaConfig(**LLAMA, **options)
    if attn is not None:
        hf_config._attn_implementation = attn
    torch.manual_seed(0)
    reference = hf.LlamaForCausalLM(hf_config).double()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.3 * torch.randn_like(p))
    model = LlamaForCausalLM(LlamaConfig(**LLAMA, **options), dtype="float64")
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    if attn is not None:
        model.config._attn_implementation = attn
    return reference, model


def as_numpy(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else value.numpy(force=True)


def same(ours, theirs, tol=1e-10):
    ours, theirs = as_numpy(ours), as_numpy(theirs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


def both(reference, model, *args, **kwargs):
    """The same call on both models: numbers as torch tensors for transformers, minilora's for minilora."""
    convert = {torch: lambda v: torch.as_tensor(v) if isinstance(v, np.ndarray) else v,
               ml: lambda v: ml.tensor(v) if isinstance(v, np.ndarray) else v}
    theirs = reference(*map(convert[torch], args), **{k: convert[torch](v) for k, v in kwargs.items()})
    ours = model(*map(convert[ml], args), **{k: convert[ml](v) for k, v in kwargs.items()})
    return theirs, ours


def test_labels_with_ignore_index_and_left_padding(hf):
    """Labels -100 where the mask is 0, positional mask and keyword labels: the same logits and loss
    (transformers computes its loss in float32 even for a float64 model: compared at float32's precision;
    minilora keeps the model's float64)."""
    reference, model = pair(hf)
    labels = np.where(MASK == 1, IDS, -100)
    theirs, ours = both(reference, model, IDS, MASK, labels=labels)
    same(ours.logits, theirs.logits)
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-6 and ours.loss.dtype == ml.float64
    ours.loss.backward(), theirs.loss.backward()
    grads = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        same(grads[name].grad, p.grad, 1e-6)


def test_position_ids_keyword_positional_and_broadcast(hf):
    reference, model = pair(hf)
    positions = np.array([[0, 0, 0, 1, 2], [3, 4, 5, 6, 7]])
    for args, kwargs in (((IDS,), {"position_ids": positions}), ((IDS, None, positions), {}),
                         ((IDS,), {"position_ids": positions[:1]}), ((IDS, MASK), {"position_ids": positions})):
        theirs, ours = both(reference, model, *args, **kwargs)
        same(ours.logits, theirs.logits)


def test_logits_to_keep_int_and_tensor(hf):
    """An int keeps the last positions; a 1-D tensor those positions of every row; a 2-D integer tensor each
    row's own; a 2-D boolean one the True positions, flattened (transformers' slice_logits_to_keep).
    minilora refused every tensor."""
    reference, model = pair(hf)
    for keep in (0, 1, 3, 5, 7, np.array([0, 2]), np.array([4, 4, 1]), np.array([[0, 1], [3, 2]]),
                 MASK.astype(bool)):
        theirs, ours = both(reference, model, IDS, logits_to_keep=keep)
        same(ours.logits, theirs.logits)
    theirs = reference(torch.as_tensor(IDS), logits_to_keep=torch.tensor([1, 3]))
    ours = model(IDS, logits_to_keep=[1, 3])  # (a list, as a tensor's values)
    same(ours.logits, theirs.logits)
    with pytest.raises(TypeError, match="logits_to_keep"):
        model(IDS, logits_to_keep=np.array([0.5]))


@pytest.mark.parametrize("attn", [None, "eager"])
def test_hidden_states_and_attentions(hf, attn):
    """layers + 1 hidden states (the embeddings, each layer's output, the last after the final norm: the
    last_hidden_state); the attention weights of each layer with "eager", none with "sdpa" (an empty tuple,
    as transformers'). minilora refused output_attentions."""
    reference, model = pair(hf, attn)
    theirs, ours = both(reference, model, IDS, attention_mask=MASK, output_hidden_states=True,
                        output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == LLAMA["num_hidden_layers"] + 1
    for mine, reference_state in zip(ours.hidden_states, theirs.hidden_states):
        same(mine, reference_state)
    same(ours.hidden_states[-1], model.model(IDS, MASK).last_hidden_state)
    assert len(ours.attentions) == len(theirs.attentions) == (2 if attn == "eager" else 0)
    for mine, reference_weights in zip(ours.attentions, theirs.attentions):
        same(mine, reference_weights)
    assert ours.keys() == list(theirs.keys()) == ["logits", "cache", "hidden_states", "attentions"]
    assert list(ours) == list(theirs) and len(ours) == len(theirs) == 4  # (iterating gives the names, as a dict)
    assert [name for name, _ in ours.items()] == [name for name, _ in theirs.items()]
    assert ours.values()[0] is ours.logits and ours["past_key_values"] is ours.cache
    same(ours.logits, theirs.logits)


@pytest.mark.parametrize("training", [False, True])
def test_return_dict_false_tuple_order(hf, training):
    """(loss, logits, cache, hidden_states): the cache comes in training mode too (transformers'
    config.use_cache); minilora left it out in training, so out[2] was the hidden states."""
    reference, model = pair(hf)
    reference.train(training), model.train(training)
    theirs, ours = both(reference, model, IDS, labels=IDS, return_dict=False, output_hidden_states=True)
    assert len(ours) == len(theirs) == 4
    assert [type(x).__name__ for x in ours] == ["Tensor", "Tensor", "KVCache", "tuple"]
    same(ours[1], theirs[1])
    assert ours[2].get_seq_length() == theirs[2].get_seq_length() == IDS.shape[1]
    theirs, ours = both(reference, model, IDS, return_dict=False, use_cache=False)
    assert len(ours) == len(theirs) == 1
    ours, theirs = model.model(IDS, return_dict=False), reference.model(torch.as_tensor(IDS), return_dict=False)
    assert len(ours) == len(theirs) == 2
    same(ours[0], theirs[0])


def test_hand_written_decoding_loop_with_cache_position(hf):
    """model(prompt) then model(next, past_key_values=out.past_key_values, cache_position=[n]) token by
    token: the same logits, the cache's length growing (cache_position is accepted and unused, as in
    transformers 5's Llama; minilora refused it)."""
    reference, model = pair(hf)
    reference.eval(), model.eval()
    prompt = IDS[1:, :3]
    theirs, ours = both(reference, model, prompt, cache_position=np.arange(3))
    for step in range(3):
        same(ours.logits, theirs.logits)
        assert ours.past_key_values.get_seq_length() == theirs.past_key_values.get_seq_length() == 3 + step
        assert ours.past_key_values.get_seq_length(1) == theirs.past_key_values.get_seq_length(layer_idx=1)
        token = np.array([[int(theirs.logits[0, -1].argmax())]])
        assert int(ours.logits.numpy()[0, -1].argmax()) == token[0, 0]
        theirs = reference(torch.as_tensor(token), past_key_values=theirs.past_key_values,
                           cache_position=torch.tensor([3 + step]))
        ours = model(token, past_key_values=ours.past_key_values, cache_position=ml.tensor([3 + step]))
    assert model(prompt, use_cache=False).past_key_values is None is reference(torch.as_tensor(prompt),
                                                                                 use_cache=False).past_key_values


def test_inputs_embeds_keyword_and_positional(hf):
    reference, model = pair(hf)
    theirs_embeds = reference.get_input_embeddings()(torch.as_tensor(IDS))
    our_embeds = model.get_input_embeddings()(ml.tensor(IDS))
    same(our_embeds, theirs_embeds)
    for args, kwargs in (((), {"inputs_embeds": True, "attention_mask": MASK}), ((None, MASK, None, None, True), {})):
        theirs = reference(*[theirs_embeds if a is True else None if a is None else torch.as_tensor(a) for a in args],
                           **{k: theirs_embeds if v is True else torch.as_tensor(v) for k, v in kwargs.items()})
        ours = model(*[our_embeds if a is True else a for a in args],
                     **{k: our_embeds if v is True else v for k, v in kwargs.items()})
        same(ours.logits, theirs.logits)


def test_gradient_checkpointing_train_step_has_the_same_gradients(hf):
    """gradient_checkpointing_enable() then a training step: transformers' gradients; no cache comes back
    while layers are recomputed (transformers turns use_cache off, with a warning when asked for)."""
    reference, model = pair(hf)
    for m in (reference, model):
        m.train()
        _quiet(m.gradient_checkpointing_enable)
    assert model.is_gradient_checkpointing and reference.is_gradient_checkpointing
    labels = np.where(MASK == 1, IDS, -100)
    theirs, ours = _quiet(lambda: both(reference, model, IDS, attention_mask=MASK, labels=labels))
    assert ours.past_key_values is None and theirs.past_key_values is None
    ours.loss.backward(), theirs.loss.backward()
    grads = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        same(grads[name].grad, p.grad, 1e-6)
    with pytest.warns(UserWarning, match="use_cache=False"):
        assert model(IDS, use_cache=True).past_key_values is None
    with ml.no_grad():  # no backward to replay: the cache is kept, as transformers
        assert model(IDS).past_key_values is not None


def test_embeddings_helpers_and_num_parameters(hf):
    for tie in (False, True):
        reference, model = pair(hf, tie_word_embeddings=tie)
        for options in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
            assert model.num_parameters(**options) == reference.num_parameters(**options), (tie, options)
    reference, model = pair(hf)
    torch.manual_seed(3)
    new = torch.nn.Embedding(40, 16).double()
    ours_new = ml.nn.Embedding(40, 16, dtype=ml.float64)
    ours_new.load_state_dict({"weight": new.weight.detach().numpy()})
    reference.set_input_embeddings(new), model.set_input_embeddings(ours_new)
    assert model.get_input_embeddings() is ours_new and model.model.embed_tokens is ours_new
    theirs, ours = both(reference, model, IDS)
    same(ours.logits, theirs.logits)


@pytest.mark.parametrize("options", [
    {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16}},
    {"attention_bias": True}, {"mlp_bias": True}, {"head_dim": 8}, {"rope_theta": 500.0}])
def test_config_variants_compute_as_transformers(hf, options):
    reference, model = pair(hf, **options)
    for ids in (IDS, np.arange(30)[None] % 40):
        theirs, ours = both(reference, model, ids)
        same(ours.logits, theirs.logits, 1e-9)
    for name in ("attention_bias", "mlp_bias", "head_dim", "max_position_embeddings", "num_key_value_heads"):
        assert getattr(model.config, name) == getattr(reference.config, name)
    assert model.config.rope_parameters == reference.config.rope_parameters


def test_dynamic_rope_scaling_follows_transformers_state():
    """'dynamic' (NTK) RoPE: past max_position_embeddings the frequencies are recomputed for the longest
    sequence so far, and reset by a shorter call (transformers' stateful rotary embedding; stock float32
    transformers, so compared at float32's precision). minilora refused 'dynamic'."""
    def options():  # (transformers adds rope_theta to the dict it is given)
        return {**LLAMA, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 8}
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**options())).eval()
    model = LlamaForCausalLM(LlamaConfig(**options())).eval()
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    assert model.config.rope_scaling == {"rope_type": "dynamic", "factor": 2.0}
    with torch.no_grad():
        for length in (6, 20, 12, 5, 12):  # grows, stays at the longest, resets below 8, grows again
            ids = (np.arange(length)[None] * 7) % 40
            np.testing.assert_allclose(model(ids).logits.numpy(), reference(torch.as_tensor(ids)).logits.numpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=str(length))
        theirs = reference(torch.as_tensor(IDS[1:, :4]))  # decoding past 8 with a cache: each step rescales
        ours = model(IDS[1:, :4])
        for step in range(8):
            token = np.array([[(step * 5) % 40]])
            theirs = reference(torch.as_tensor(token), past_key_values=theirs.past_key_values)
            ours = model(token, past_key_values=ours.past_key_values)
            np.testing.assert_allclose(ours.logits.numpy(), theirs.logits.numpy(), rtol=1e-4, atol=1e-5)


def test_sharded_save_and_load_as_transformers(hf, tmp_path):
    """save_pretrained(max_shard_size=...): the same shard files and index (weight_map, metadata) as
    transformers; each loads the other's sharded folder; from_pretrained(torch_dtype=...) as transformers."""
    import json
    reference, model = pair(hf)
    for size in ("2KB", 3000, "10MB"):
        _quiet(lambda: reference.save_pretrained(tmp_path / f"theirs{size}", max_shard_size=size))
        model.save_pretrained(tmp_path / f"ours{size}", max_shard_size=size)
        files = sorted(p.name for p in (tmp_path / f"ours{size}").iterdir() if p.name.endswith(".safetensors"))
        assert files == sorted(p.name for p in (tmp_path / f"theirs{size}").iterdir()
                               if p.name.endswith(".safetensors"))
        index = tmp_path / f"ours{size}" / "model.safetensors.index.json"
        if len(files) > 1:
            assert json.loads(index.read_text()) == json.loads(
                (tmp_path / f"theirs{size}" / "model.safetensors.index.json").read_text())
        else:
            assert not index.exists()
    ours = LlamaForCausalLM.from_pretrained(tmp_path / "theirs2KB")
    theirs = _quiet(lambda: transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours2KB"))
    assert ours.dtype == ml.float64 and theirs.dtype == torch.float64
    same(ours(IDS).logits, model(IDS).logits, 0)
    for dtype in (torch.float32, "float32", torch.bfloat16, "auto"):
        loaded = LlamaForCausalLM.from_pretrained(tmp_path / "theirs2KB", torch_dtype=dtype)
        expected = _quiet(lambda: transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours2KB", torch_dtype=dtype))
        assert str(loaded.dtype).split(".")[-1] == str(expected.dtype).split(".")[-1]
