"""Round 28: a Llama's sub-modules called as transformers' users call them, beside transformers itself.

Logit lens, activation patching and steering-vector tutorials run a model's pieces by hand and hook them:
``cos, sin = model.model.rotary_emb(hidden, position_ids)``, ``layer(hidden, attention_mask=..., position_ids=...,
position_embeddings=(cos, sin))`` (a tensor in transformers 5), ``layer.self_attn(hidden_states=...,
position_embeddings=..., attention_mask=...)`` (``(attn_output, attn_weights)``), ``model.model.norm`` and
``model.lm_head`` on an intermediate state, and forward hooks / pre-hooks that read and replace what these modules
take and give. minilora's forwards took their own positional arguments (``rotary_emb(position_ids, dtype, xp)``,
``layer(x, cos, sin, mask, cache)``): the transformers call raised an unhelpful error, and hooks saw other
arguments than transformers' do.

Skipped when torch / transformers are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora import models  # noqa: E402

SHAPE = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
IDS = np.array([[3, 4, 5, 6, 7, 8], [9, 8, 7, 6, 5, 4]])
FAMILIES = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, models.LlamaConfig,
                      models.LlamaForCausalLM),
            "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, models.Qwen3Config,
                      models.Qwen3ForCausalLM)}


def pair(family="llama", dtype="float32", attention="sdpa"):
    """(minilora's model, transformers') with the same random weights, in ``dtype``, in eval mode."""
    their_config, their_class, our_config, our_class = FAMILIES[family]
    shape = dict(SHAPE, head_dim=8) if family == "qwen3" else SHAPE
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = their_class(their_config(**shape)).eval()
    ours = our_class(our_config(**shape)).eval()
    ours.load_state_dict({k: ml.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    if dtype == "bfloat16":
        theirs, ours = theirs.to(torch.bfloat16), ours.to(ml.bfloat16)
    theirs.set_attn_implementation(attention)
    ours.set_attn_implementation(attention)
    return ours, theirs


def ours_of(t):
    """A torch tensor as minilora's (bfloat16 through float32: both round the same way)."""
    if t.dtype == torch.bfloat16:
        return ml.tensor(t.float().numpy()).to(ml.bfloat16)
    return ml.tensor(t.numpy())


def numbers(t):
    """A minilora or torch tensor's values as float64 NumPy."""
    if isinstance(t, torch.Tensor):
        return t.detach().float().numpy().astype(np.float64)
    return t.float().numpy().astype(np.float64)


def embedded(ours, theirs):
    with torch.no_grad():
        hidden = theirs.model.embed_tokens(torch.tensor(IDS))
    return ours.model.embed_tokens(ml.tensor(IDS)), hidden


POSITIONS = np.arange(IDS.shape[1])[None]


# ==================================================================================================
# rotary_emb(x, position_ids)
# ==================================================================================================
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rotary_emb_called_with_hidden_states_and_positions_gives_transformers_tables(dtype):
    ours, theirs = pair(dtype=dtype)
    hidden, their_hidden = embedded(ours, theirs)
    cos, sin = ours.model.rotary_emb(hidden, ml.tensor(POSITIONS, dtype=ml.int64))
    with torch.no_grad():
        their_cos, their_sin = theirs.model.rotary_emb(their_hidden, torch.tensor(POSITIONS))
    for table, reference in ((cos, their_cos), (sin, their_sin)):
        assert isinstance(table, ml.Tensor) and tuple(table.shape) == tuple(reference.shape) == (1, 6, 8)
        assert table.dtype == hidden.dtype and not table.requires_grad
        np.testing.assert_array_equal(numbers(table), numbers(reference))
    # the keyword form transformers' LlamaModel uses, NumPy positions, and a refusal without positions
    again = ours.model.rotary_emb(hidden, position_ids=POSITIONS)
    np.testing.assert_array_equal(again[0].numpy(), cos.numpy())
    with pytest.raises(TypeError, match="position_ids"):
        ours.model.rotary_emb(hidden)


def test_rotary_emb_keeps_minilora_own_call():
    """``rotary_emb(position_ids, dtype)`` (NumPy positions and a dtype) still gives the [B, 1, T, D] arrays."""
    ours, _ = pair()
    cos, sin = ours.model.rotary_emb(POSITIONS, np.float32)
    new_cos, _ = ours.model.rotary_emb(ours.model.embed_tokens(ml.tensor(IDS)), POSITIONS)
    assert cos.shape == (1, 1, 6, 8)
    np.testing.assert_array_equal(cos[:, 0], new_cos.numpy())


# ==================================================================================================
# Layers run by hand: the logit lens
# ==================================================================================================
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_layers_run_by_hand_are_output_hidden_states_and_transformers_logit_lens(family):
    """``for layer in model.model.layers[:k]: h = layer(h, ...)`` (transformers 5: each returns a tensor), then
    ``lm_head(norm(h))``: transformers' numbers; ``hidden_states[k]`` of ``output_hidden_states=True`` is that h
    (the embeddings first, the last one after the final norm)."""
    ours, theirs = pair(family)
    hidden, their_hidden = embedded(ours, theirs)
    keywords = dict(position_ids=ml.tensor(POSITIONS, dtype=ml.int64), attention_mask=None)
    position_embeddings = ours.model.rotary_emb(hidden, keywords["position_ids"])
    with torch.no_grad():
        their_embeddings = theirs.model.rotary_emb(their_hidden, torch.tensor(POSITIONS))
        their_states = theirs(torch.tensor(IDS), output_hidden_states=True).hidden_states
    states = ours(ml.tensor(IDS), output_hidden_states=True).hidden_states
    assert len(states) == len(their_states) == SHAPE["num_hidden_layers"] + 1
    h, their_h = hidden, their_hidden
    for k, (layer, their_layer) in enumerate(zip(ours.model.layers[:2], theirs.model.layers[:2]), start=1):
        h = layer(h, position_embeddings=position_embeddings, **keywords)
        with torch.no_grad():
            their_h = their_layer(their_h, position_embeddings=their_embeddings, position_ids=torch.tensor(POSITIONS),
                                  attention_mask=None)
        assert isinstance(h, ml.Tensor) and tuple(h.shape) == tuple(their_h.shape)
        np.testing.assert_allclose(numbers(h), numbers(their_h), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(h.numpy(), states[k].numpy())
        lens = ours.lm_head(ours.model.norm(h))
        with torch.no_grad():
            their_lens = theirs.lm_head(theirs.model.norm(their_h))
        np.testing.assert_allclose(numbers(lens), numbers(their_lens), rtol=1e-5, atol=1e-6)
    last = ours.model.layers[2](h, position_embeddings=position_embeddings, **keywords)
    np.testing.assert_array_equal(ours.model.norm(last).numpy(), states[-1].numpy())


def test_a_bfloat16_layer_by_hand_gives_transformers_bits():
    ours, theirs = pair(dtype="bfloat16")
    hidden, their_hidden = embedded(ours, theirs)
    out = ours.model.layers[0](hidden, position_embeddings=ours.model.rotary_emb(hidden, POSITIONS))
    with torch.no_grad():
        their_out = theirs.model.layers[0](their_hidden, position_embeddings=theirs.model.rotary_emb(
            their_hidden, torch.tensor(POSITIONS)))
    assert out.dtype == ml.bfloat16
    np.testing.assert_array_equal(numbers(out), numbers(their_out))


def test_a_layer_by_hand_fills_the_cache_it_is_given():
    """A decoding loop by hand: ``cache=`` (transformers 5's name) or ``past_key_values=`` (the older one) gets the
    layer's keys and values; the next position attends to them as transformers' does."""
    ours, theirs = pair()
    hidden, their_hidden = embedded(ours, theirs)
    layer, their_layer = ours.model.layers[0], theirs.model.layers[0]
    results = []
    for name in ("cache", "past_key_values"):
        cache = models.DynamicCache()
        for start, stop in ((0, 5), (5, 6)):
            positions = POSITIONS[:, start:stop]
            h = hidden[:, start:stop]
            out = layer(h, position_embeddings=ours.model.rotary_emb(h, positions), use_cache=True,
                        cache_position=ml.tensor(positions[0], dtype=ml.int64), **{name: cache})
        assert cache.get_seq_length() == 6
        results.append(out)
    their_cache = transformers.DynamicCache(config=theirs.config)
    with torch.no_grad():
        for start, stop in ((0, 5), (5, 6)):
            h = their_hidden[:, start:stop]
            their_out = their_layer(h, position_embeddings=theirs.model.rotary_emb(
                h, torch.tensor(POSITIONS[:, start:stop])), cache=their_cache, use_cache=True)
    for out in results:
        np.testing.assert_allclose(numbers(out), numbers(their_out), rtol=1e-5, atol=1e-6)


# ==================================================================================================
# self_attn, mlp, input_layernorm
# ==================================================================================================
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_self_attn_returns_output_and_weights(attention):
    """``(attn_output, attn_weights)``: the weights [B, heads, T, T] under "eager" attention, None under "sdpa",
    as transformers'; with transformers' 4-D additive causal mask the numbers are its."""
    ours, theirs = pair(attention=attention)
    hidden, their_hidden = embedded(ours, theirs)
    normed = ours.model.layers[0].input_layernorm(hidden)
    with torch.no_grad():
        their_normed = theirs.model.layers[0].input_layernorm(their_hidden)
    np.testing.assert_allclose(numbers(normed), numbers(their_normed), rtol=1e-6, atol=1e-7)
    t = IDS.shape[1]
    mask = np.triu(np.full((t, t), np.finfo(np.float32).min, np.float32), 1)[None, None]
    out, weights = ours.model.layers[0].self_attn(
        hidden_states=normed, position_embeddings=ours.model.rotary_emb(hidden, POSITIONS),
        attention_mask=ml.tensor(mask))
    with torch.no_grad():
        their_out, their_weights = theirs.model.layers[0].self_attn(
            hidden_states=their_normed, position_embeddings=theirs.model.rotary_emb(
                their_hidden, torch.tensor(POSITIONS)), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(numbers(out), numbers(their_out), rtol=1e-5, atol=1e-6)
    if attention == "sdpa":
        assert weights is None and their_weights is None
    else:
        assert tuple(weights.shape) == tuple(their_weights.shape) == (2, 4, t, t)
        np.testing.assert_allclose(numbers(weights), numbers(their_weights), rtol=1e-5, atol=1e-7)
    mlp = ours.model.layers[0].mlp(out)
    with torch.no_grad():
        their_mlp = theirs.model.layers[0].mlp(their_out)
    np.testing.assert_allclose(numbers(mlp), numbers(their_mlp), rtol=1e-5, atol=1e-6)


def test_calls_that_miss_transformers_arguments_are_refused_by_name():
    """No position_embeddings (transformers' own: 'cannot unpack NoneType'), minilora's old positional call
    ``layer(x, cos, sin)`` (which would read cos as the attention mask), and keywords that a Llama would ignore
    while they change transformers' result (flash attention's packed lengths) or are misspelt."""
    ours, _ = pair()
    hidden = ours.model.embed_tokens(ml.tensor(IDS))
    cos, sin = ours.model.rotary_emb(hidden, POSITIONS)
    layer = ours.model.layers[0]
    with pytest.raises(TypeError, match=r"position_embeddings=\(cos, sin\) is required.*rotary_emb"):
        layer(hidden)
    with pytest.raises(TypeError, match="position_embeddings"):
        layer(hidden, cos, sin)
    with pytest.raises(TypeError, match="position_embeddings"):
        layer.self_attn(hidden, cos)
    with pytest.raises(ValueError, match=r"\[batch, seq_len, head_dim\]"):
        layer(hidden, position_embeddings=(cos[0], sin[0]))
    for keyword in ("cu_seq_lens_q", "attn_mask"):
        with pytest.raises(TypeError, match=keyword):
            layer(hidden, position_embeddings=(cos, sin), **{keyword: None})


# ==================================================================================================
# Hooks: what they see, and what they replace
# ==================================================================================================
def _recorder(seen, name):
    def hook(module, args, kwargs, output):
        kinds = (lambda v: "tensor" if isinstance(v, (ml.Tensor, torch.Tensor)) else type(v).__name__)
        out = tuple(kinds(o) for o in output) if isinstance(output, tuple) else kinds(output)
        seen[name] = (len(args), sorted(kwargs), out)
    return hook


def _hooked_modules(model):
    layer = model.model.layers[0]
    return {"rotary_emb": model.model.rotary_emb, "layer": layer, "self_attn": layer.self_attn, "mlp": layer.mlp,
            "input_layernorm": layer.input_layernorm, "norm": model.model.norm, "lm_head": model.lm_head}


@pytest.mark.parametrize("attention, flags", [("sdpa", {}), ("eager", {}),
                                              ("sdpa", dict(output_hidden_states=True, output_attentions=False))])
def test_forward_hooks_see_transformers_arguments_and_outputs(attention, flags):
    """Per module: how many positional arguments, which keywords (the output flags given to the model among
    them), and the output's kind (a tensor, or a tuple: rotary_emb's (cos, sin), self_attn's (output, weights or
    None)), as transformers' hooks see them."""
    ours, theirs = pair(attention=attention)
    seen = {}
    for library, model in (("ours", ours), ("theirs", theirs)):
        for name, module in _hooked_modules(model).items():
            module.register_forward_hook(_recorder(seen.setdefault(library, {}), name), with_kwargs=True)
    ours(ml.tensor(IDS), **flags)
    with torch.no_grad():
        theirs(torch.tensor(IDS), **flags)
    assert seen["ours"] == seen["theirs"]
    assert seen["ours"]["self_attn"][2] == ("tensor", "tensor" if attention == "eager" else "NoneType")


def test_a_steering_vector_added_by_a_forward_hook():
    """Forward hooks that return a layer's output plus a vector (a tensor in transformers 5), and self_attn's
    ``(output[0] + vector, output[1])``, replace those outputs: the logits move as transformers'."""
    ours, theirs = pair()
    vector = np.random.default_rng(1).standard_normal(SHAPE["hidden_size"]).astype(np.float32)
    for model, steer in ((ours, ml.tensor(vector)), (theirs, torch.tensor(vector))):
        model.model.layers[1].register_forward_hook(lambda module, args, output, steer=steer: output + steer)
        model.model.layers[0].self_attn.register_forward_hook(
            lambda module, args, output, steer=steer: (output[0] + 0.5 * steer, output[1]))
    logits = ours(ml.tensor(IDS)).logits
    with torch.no_grad():
        their_logits = theirs(torch.tensor(IDS)).logits
    np.testing.assert_allclose(numbers(logits), numbers(their_logits), rtol=1e-5, atol=1e-5)


def test_activation_patching_through_a_self_attn_pre_hook():
    """A with_kwargs pre-hook on self_attn reads ``kwargs['hidden_states']`` (transformers passes it by keyword)
    and patches one position with another run's; a forward hook swaps in attention outputs cached from a clean
    run: the logits are transformers'."""
    results = []
    for library in ("ours", "theirs"):
        model = pair()[library == "theirs"]
        as_tensor = (lambda a: ml.tensor(a, dtype=ml.int64)) if library == "ours" else torch.tensor
        clean = {}
        handle = model.model.layers[1].self_attn.register_forward_hook(
            lambda module, args, output: clean.setdefault("attn", output[0]))
        model(as_tensor(IDS[::-1].copy()))
        handle.remove()

        def patch_input(module, args, kwargs):
            patched = kwargs["hidden_states"] * 1.0
            patched[:, 2] = 0.5 * kwargs["hidden_states"][:, 3]
            return args, dict(kwargs, hidden_states=patched)

        def patch_output(module, args, output):
            attn = output[0] * 1.0
            attn[:, -1] = clean["attn"][:, -1]
            return attn, output[1]
        model.model.layers[0].self_attn.register_forward_pre_hook(patch_input, with_kwargs=True)
        model.model.layers[1].self_attn.register_forward_hook(patch_output)
        with torch.no_grad():
            results.append(numbers(model(as_tensor(IDS)).logits))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_output_attentions_reach_the_model_through_self_attn_hooks_and_a_users_hook_too():
    ours, theirs = pair(attention="eager")
    seen = []
    ours.model.layers[1].self_attn.register_forward_hook(lambda module, args, kwargs, output: seen.append(
        (kwargs.get("output_attentions"), output[1])), with_kwargs=True)
    out = ours(ml.tensor(IDS), output_attentions=True)
    with torch.no_grad():
        their_out = theirs(torch.tensor(IDS), output_attentions=True)
    assert len(out.attentions) == len(their_out.attentions) == SHAPE["num_hidden_layers"]
    for weights, reference in zip(out.attentions, their_out.attentions):
        np.testing.assert_allclose(numbers(weights), numbers(reference), rtol=1e-5, atol=1e-7)
    assert seen[0][0] is True and seen[0][1] is out.attentions[1]


def test_a_layer_hook_sees_the_padding_mask_as_a_tensor():
    """With padding, transformers' layers get a 4-D mask tensor [B, 1, T, T] (a hook may read or replace it)."""
    ours, theirs = pair()
    padding = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    seen = {}
    for library, model in (("ours", ours), ("theirs", theirs)):
        model.model.layers[0].register_forward_pre_hook(
            lambda module, args, kwargs, library=library: seen.update({library: kwargs["attention_mask"]}),
            with_kwargs=True)
    ours(ml.tensor(IDS), attention_mask=ml.tensor(padding))
    with torch.no_grad():
        theirs(torch.tensor(IDS), attention_mask=torch.tensor(padding))
    assert isinstance(seen["ours"], ml.Tensor) and tuple(seen["ours"].shape) == tuple(seen["theirs"].shape)


# ==================================================================================================
# The attributes tutorials read (and set)
# ==================================================================================================
def test_sub_modules_have_transformers_attributes():
    ours, theirs = pair()
    for name in ("rotary_emb.rope_type", "rotary_emb.attention_scaling", "rotary_emb.max_seq_len_cached",
                 "layers.0.hidden_size", "layers.0.self_attn.num_key_value_groups", "layers.0.self_attn.scaling",
                 "layers.0.self_attn.head_dim", "layers.0.self_attn.layer_idx", "layers.0.mlp.hidden_size",
                 "layers.0.mlp.intermediate_size", "norm.variance_epsilon",
                 "layers.0.input_layernorm.variance_epsilon"):
        path, attribute = name.rsplit(".", 1)
        assert getattr(ours.model.get_submodule(path), attribute) == getattr(theirs.model.get_submodule(path),
                                                                              attribute), name


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_changed_scaling_and_norm_epsilon_are_used(attention):
    """``self_attn.scaling`` multiplies the scores and ``variance_epsilon`` is the norm's, as in transformers (a
    temperature tweak on one layer's attention, an epsilon study)."""
    ours, theirs = pair(attention=attention)
    for model in (ours, theirs):
        model.model.layers[1].self_attn.scaling = 2.0
        model.model.layers[0].input_layernorm.variance_epsilon = 0.5
    logits = ours(ml.tensor(IDS)).logits
    with torch.no_grad():
        their_logits = theirs(torch.tensor(IDS)).logits
    np.testing.assert_allclose(numbers(logits), numbers(their_logits), rtol=1e-5, atol=1e-5)
    assert np.abs(numbers(logits) - numbers(pair(attention=attention)[0](ml.tensor(IDS)).logits)).max() > 1e-3
