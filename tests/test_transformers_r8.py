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
