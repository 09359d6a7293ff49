"""Generation: greedy and sampled decoding, determinism, the KV cache, EOS, batches with padding."""
import os

import numpy as np
import pytest

import minilora as ml
from minilora.generate import generate, sample_next_token, top_k_filter, top_p_filter
from minilora.models import LlamaConfig, LlamaForCausalLM


@pytest.fixture(scope="module")
def model():
    """A float64 model with weights large enough to give peaked, varied predictions."""
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=23, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=None)
    model = LlamaForCausalLM(config, dtype="float64")
    rng = np.random.default_rng(0)
    with ml.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.copy_(ml.tensor(rng.standard_normal(p.shape) * 0.5))
    return model


PROMPT = [[3, 7, 1, 12]]


def greedy_by_hand(model, ids, steps):
    """The definition of greedy decoding: full forward, argmax of the last position, append."""
    ids = list(ids)
    for _ in range(steps):
        ids.append(int(model([ids]).logits.numpy()[0, -1].argmax()))
    return ids


def test_greedy_is_argmax_of_the_full_forward(model):
    out = generate(model, PROMPT, max_new_tokens=8, use_cache=True)
    assert out.shape == (1, 12) and out.dtype == np.int64
    assert out.tolist()[0] == greedy_by_hand(model, PROMPT[0], 8)
    assert len(set(out.tolist()[0][4:])) > 1  # not a degenerate constant sequence


@pytest.mark.parametrize("options", [dict(), dict(do_sample=True, seed=3),
                                     dict(do_sample=True, seed=4, temperature=0.7, top_k=5, top_p=0.8)])
def test_cached_and_uncached_decoding_give_identical_tokens(model, options):
    cached = generate(model, PROMPT, max_new_tokens=12, use_cache=True, **options)
    uncached = generate(model, PROMPT, max_new_tokens=12, use_cache=False, **options)
    assert cached.tolist() == uncached.tolist()


def test_seeded_sampling_is_reproducible(model):
    first = generate(model, PROMPT, max_new_tokens=20, do_sample=True, seed=7).tolist()
    assert generate(model, PROMPT, max_new_tokens=20, do_sample=True, seed=7).tolist() == first
    assert generate(model, PROMPT, max_new_tokens=20, do_sample=True, seed=8).tolist() != first
    ml.manual_seed(5)  # without a seed: the global generator, as torch.manual_seed
    a = generate(model, PROMPT, max_new_tokens=20, do_sample=True).tolist()
    ml.manual_seed(5)
    assert generate(model, PROMPT, max_new_tokens=20, do_sample=True).tolist() == a


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, PROMPT, max_new_tokens=8).tolist()
    assert generate(model, PROMPT, max_new_tokens=8, do_sample=True, top_k=1, seed=0).tolist() == greedy
    assert generate(model, PROMPT, max_new_tokens=8, do_sample=True, top_p=1e-9, seed=0).tolist() == greedy


def test_stops_at_eos_and_pads_finished_rows(model):
    greedy = greedy_by_hand(model, PROMPT[0], 6)
    eos = greedy[6]  # the third generated token
    out = generate(model, PROMPT, max_new_tokens=6, eos_token_id=eos).tolist()[0]
    assert out == greedy[:greedy.index(eos, 4) + 1]
    # In a batch, the row that finished gets pad tokens while the other goes on.
    other = [5, 5, 9, 2]
    batch = generate(model, [PROMPT[0], other], max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    rows = batch.tolist()
    stop = greedy.index(eos, 4) + 1
    assert rows[0][:stop] == greedy[:stop] and set(rows[0][stop:]) <= {0}
    assert rows[1] == greedy_by_hand(model, other, 6)[:len(rows[1])]


def test_left_padded_batch_matches_each_prompt_alone(model):
    prompts = [[3, 7, 1, 12], [9, 4]]
    ids = np.array([prompts[0], [0, 0] + prompts[1]])
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    out = generate(model, ids, attention_mask=mask, max_new_tokens=6).tolist()
    for row, prompt in zip(out, prompts):
        alone = generate(model, [prompt], max_new_tokens=6).tolist()[0]
        assert row[-6:] == alone[-6:]


def test_model_generate_and_one_dimensional_prompts(model):
    out = model.generate(PROMPT[:1], max_new_tokens=3)
    assert out.shape == (1, 7) and out.tolist()[0] == greedy_by_hand(model, PROMPT[0], 3)
    with pytest.raises(ValueError, match="1-D sequence of shape"):  # transformers: an IndexError, not an answer
        model.generate(PROMPT[0], max_new_tokens=3)


# --------------------------------------------------------------------------------------------------
# The sampling pieces on their own
# --------------------------------------------------------------------------------------------------
def test_top_k_filter_keeps_the_k_largest():
    logits = np.array([[1.0, 5.0, 3.0, 4.0]])
    assert np.isneginf(top_k_filter(logits, 2)).tolist() == [[True, False, True, False]]
    assert top_k_filter(logits, 10) is logits
    assert top_k_filter(logits, 0) is logits  # transformers' top_k=0: off
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(logits, -1)


def test_top_p_filter_keeps_the_smallest_set_reaching_p():
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    logits = np.log(probs)
    kept = lambda p: (~np.isneginf(top_p_filter(logits, p))).tolist()[0]  # noqa: E731
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.6) == [True, True, False, False]
    assert kept(0.9) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]


def test_sampling_follows_the_filtered_distribution():
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    logits = np.tile(np.log(probs), (20000, 1))
    rng = np.random.default_rng(0)
    draws = sample_next_token(logits, do_sample=True, top_k=3, rng=rng)
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [4 / 9, 3 / 9, 2 / 9, 0], atol=0.015)
    hot = sample_next_token(logits, do_sample=True, temperature=0.5, rng=rng)
    sharpened = probs ** 2 / (probs ** 2).sum()
    np.testing.assert_allclose(np.bincount(hot, minlength=4) / len(hot), sharpened, atol=0.015)
    with pytest.raises(ValueError, match=r"`temperature` \(=0.0\) has to be a strictly positive float"):
        sample_next_token(logits, do_sample=True, temperature=0.0)


def test_generate_command_continues_a_prompt_greedily(capsys):
    from minilora.cli import main
    from minilora.models import BASE_DIR
    if not os.path.isfile(os.path.join(BASE_DIR, "config.json")):
        pytest.skip("the shipped base model is missing")
    assert main(["generate", "Alice is", "--max-new-tokens", "5"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("Alice is") and len(first.strip()) > len("Alice is")
    main(["generate", "Alice is", "--max-new-tokens", "5"])
    assert capsys.readouterr().out == first  # greedy decoding is deterministic


def test_generate_command_help_explains_itself(capsys):
    from minilora.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    assert "--adapter" in capsys.readouterr().out


@pytest.fixture(scope="module")
def byte_model_dir(tmp_path_factory):
    """A tiny byte-level Llama on disk: its 259-token vocabulary makes top-k 50 and "all" differ."""
    from minilora.tokenizer import ByteTokenizer
    tok = ByteTokenizer()
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = str(tmp_path_factory.mktemp("bytes"))
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_generate_command_samples_with_generates_defaults(byte_model_dir, capsys):
    """One set of defaults: `--sample` without --top-k is generate()'s top_k=50 (transformers'), not
    "no filter" (the CLI used to default to None while generate() defaulted to 50)."""
    from minilora.cli import main
    from minilora.tokenizer import ByteTokenizer
    tok, model = ByteTokenizer(), LlamaForCausalLM.from_pretrained(byte_model_dir)
    ids = tok.encode("hi")

    def text(**options):
        out = generate(model, [ids], max_new_tokens=12, do_sample=True, seed=3, eos_token_id=tok.eos_token_id, **options)
        return "hi" + tok.decode(out.numpy()[0, len(ids):].tolist(), skip_special_tokens=True)
    assert text() == text(top_k=50) != text(top_k=0)  # the test can tell the two apart
    for flags, expected in (([], text()), (["--top-k", "0"], text(top_k=0)), (["--top-k", "7"], text(top_k=7))):
        code = main(["generate", "hi", "--model", byte_model_dir, "--sample", "--seed", "3", "--max-new-tokens", "12",
                     *flags])
        assert code == 0 and capsys.readouterr().out == expected + "\n"
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "default 50" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("flags", [["--temperature", "0.5"], ["--top-k", "5"], ["--top-p", "0.9"]])
def test_generate_command_refuses_sampling_flags_without_sample(byte_model_dir, flags, capsys):
    """Greedy decoding would silently ignore them."""
    from minilora.cli import main
    assert main(["generate", "hi", "--model", byte_model_dir, *flags]) == 2
    assert f"{flags[0]} only apply with --sample" in capsys.readouterr().err


def test_right_padding_is_warned_about_as_transformers_does(model):
    """A right-padded row would continue after its padding: transformers warns, and so do we."""
    import warnings
    ids, mask = np.array([[3, 7, 1], [3, 7, 0]]), np.array([[1, 1, 1], [1, 1, 0]])
    with pytest.warns(UserWarning, match="right-padding was detected"):
        generate(model, ids, attention_mask=mask, max_new_tokens=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # left padding is the right way: no warning
        generate(model, ids[:, ::-1].copy(), attention_mask=mask[:, ::-1].copy(), max_new_tokens=2)
