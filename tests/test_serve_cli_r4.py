"""Round 4: generate() as transformers users call it, side by side with transformers 5 on the same
weights (a tiny random Llama saved by transformers, loaded by minilora: the safetensors are HF's), and
`minilora serve` as vLLM's OpenAI server answers (model optional, generation_config.json defaults,
error JSON). Every greedy sequence must equal transformers' token for token.
"""
import json
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora.models import LlamaForCausalLM
from minilora.tokenizer import ByteTokenizer
from test_serve import model_dirs, serve_command, served, two_adapters  # noqa: F401 -- fixtures

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = [[5, 9, 3, 17, 22]]
LEFT_PADDED = [[0, 0, 5, 9, 3], [4, 8, 6, 1, 13]]
LEFT_MASK = [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers' model, minilora's model) with the same weights: large enough for sharp, varied logits."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      bos_token_id=1, eos_token_id=2)
    theirs = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0, 0.3)
    folder = str(tmp_path_factory.mktemp("tiny_hf"))
    theirs.save_pretrained(folder)
    return theirs, LlamaForCausalLM.from_pretrained(folder).eval(), folder


def both(pair, ids=PROMPT, **kwargs):
    """generate(**kwargs) in transformers and in minilora: (theirs, ours), each a result or the exception."""
    theirs, ours, _ = pair
    results = []
    for model, to_input in ((theirs, torch.tensor), (ours, np.array)):
        options = {k: to_input(v) if k == "attention_mask" else v for k, v in kwargs.items()}
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                results.append(model.generate(to_input(ids), **options))
        except Exception as exc:  # noqa: BLE001 -- compared below, type and all
            results.append(exc)
    return results


GREEDY_CASES = {
    "default": dict(max_new_tokens=10),
    "do_sample=False": dict(max_new_tokens=10, do_sample=False),
    "max_length": dict(max_length=12),
    "max_new_tokens wins over max_length": dict(max_length=12, max_new_tokens=4),
    "min_new_tokens": dict(max_new_tokens=10, min_new_tokens=8, eos_token_id=[16, 50]),
    "min_length": dict(max_new_tokens=10, min_length=12, eos_token_id=16),
    "eos list": dict(max_new_tokens=15, eos_token_id=[2, 7, 11]),
    "eos list and pad": dict(max_new_tokens=15, eos_token_id=[7, 11], pad_token_id=0),
    "pad_token_id": dict(max_new_tokens=15, pad_token_id=0),
    "no_repeat_ngram_size=2": dict(max_new_tokens=15, no_repeat_ngram_size=2),
    "no_repeat_ngram_size=1": dict(max_new_tokens=15, no_repeat_ngram_size=1),
    "repetition_penalty": dict(max_new_tokens=15, repetition_penalty=1.3),
    "bad_words_ids": dict(max_new_tokens=15, bad_words_ids=[[16], [53, 4], [50, 53, 1]]),
    "suppress_tokens": dict(max_new_tokens=8, suppress_tokens=[16, 53]),
    "begin_suppress_tokens": dict(max_new_tokens=8, begin_suppress_tokens=[16]),
    "forced_eos_token_id": dict(max_new_tokens=6, forced_eos_token_id=2),
    "sampling options ignored by greedy": dict(max_new_tokens=5, temperature=0.5, top_k=3, min_p=0.1),
}


@pytest.mark.parametrize("case", sorted(GREEDY_CASES))
def test_greedy_sequences_equal_transformers_token_for_token(pair, case):
    theirs, ours = both(pair, **GREEDY_CASES[case])
    assert not isinstance(theirs, Exception), theirs
    assert not isinstance(ours, Exception), ours
    assert ours.tolist() == theirs.tolist()


LEFT_PADDED_CASES = {
    "plain": dict(),
    "repetition_penalty": dict(repetition_penalty=1.4),
    "no_repeat_ngram_size": dict(no_repeat_ngram_size=2),
    "eos list": dict(eos_token_id=[7, 11, 2]),
    "bad_words_ids": dict(bad_words_ids=[[16], [9, 3]]),
}


@pytest.mark.parametrize("case", sorted(LEFT_PADDED_CASES))
def test_left_padded_batches_with_attention_mask_equal_transformers(pair, case):
    theirs, ours = both(pair, LEFT_PADDED, attention_mask=LEFT_MASK, max_new_tokens=10, pad_token_id=0,
                        **LEFT_PADDED_CASES[case])
    assert ours.tolist() == theirs.tolist()
    theirs, ours = both(pair, LEFT_PADDED, max_new_tokens=10, pad_token_id=0)  # no mask: read from the pad id
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize("extra", [dict(), dict(min_new_tokens=3, eos_token_id=[16]),
                                   dict(repetition_penalty=1.5, no_repeat_ngram_size=2),
                                   dict(bad_words_ids=[[16]], suppress_tokens=[53])])
def test_return_dict_in_generate_scores_and_logits_as_transformers(pair, extra):
    theirs, ours = both(pair, max_new_tokens=6, return_dict_in_generate=True, output_scores=True,
                        output_logits=True, **extra)
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for name in ("scores", "logits"):
        mine, ref = getattr(ours, name), getattr(theirs, name)
        assert isinstance(mine, tuple) and len(mine) == len(ref)
        for a, b in zip(mine, ref):
            assert a.shape == tuple(b.shape) and a.dtype == np.float32
            a, b = a.numpy(), b.numpy()
            assert (np.isinf(a) == np.isinf(b)).all()
            np.testing.assert_allclose(np.where(np.isinf(a), 0, a), np.where(np.isinf(b), 0, b), atol=1e-4)


def test_sampled_scores_are_transformers_warped_scores_and_tokens_stay_inside_them(pair):
    """Seeds differ between the libraries, so no token-for-token check: the first step's scores (same
    prompt) must match, and every sampled token must be one the filters kept (a seed-free property)."""
    options = dict(max_new_tokens=6, do_sample=True, top_k=5, top_p=0.9, temperature=0.7,
                   return_dict_in_generate=True, output_scores=True, num_return_sequences=3)
    theirs, ours = both(pair, **options)
    np.testing.assert_allclose(ours.scores[0].numpy(), theirs.scores[0].numpy(), atol=1e-4)
    seq = ours.sequences.numpy()
    assert seq.shape == (3, 11) and ours.scores[0].shape == (3, 64)
    for step, scores in enumerate(ours.scores):
        chosen = seq[:, 5 + step]
        assert np.isfinite(scores.numpy()[np.arange(3), chosen]).all()
        assert (np.isfinite(scores.numpy()).sum(axis=1) <= 5).all()


@pytest.mark.parametrize("options", [dict(max_new_tokens=0), dict(max_length=5),
                                     dict(max_new_tokens=8, num_return_sequences=2)])
def test_the_same_refusals_as_transformers(pair, options):
    theirs, ours = both(pair, **options)
    assert isinstance(theirs, ValueError) and isinstance(ours, ValueError), (theirs, ours)


@pytest.mark.parametrize("stop_strings", ["5", ["5"], ["555"], ["\x165"], ["\x043", "zz"], ["/?"], ["never"]])
def test_stop_strings_stop_where_transformers_stops(pair, tmp_path, stop_strings):
    """stop_strings with the model's tokenizer (each library's, from the same tokenizer.json): a row ends
    when its text ends with one, also one begun in the prompt ("\x16" is the prompt's last byte)."""
    from minilora import tokenizer as tokenizers
    ByteTokenizer().save_pretrained(str(tmp_path))
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours_tok = tokenizers.from_pretrained(str(tmp_path))
    options = dict(max_new_tokens=20, stop_strings=stop_strings, pad_token_id=0, eos_token_id=[])
    theirs, _ = both(pair, [PROMPT[0], [40, 41, 42, 43, 44]], tokenizer=theirs_tok, **options)
    _, ours = both(pair, [PROMPT[0], [40, 41, 42, 43, 44]], tokenizer=ours_tok, **options)
    assert ours.tolist() == theirs.tolist()
    _, ours = both(pair, max_new_tokens=4, stop_strings=stop_strings)  # no tokenizer: transformers' ValueError
    assert isinstance(ours, ValueError) and "tokenizer" in str(ours)


BEAM_CASES = {
    "2 beams": dict(num_beams=2, max_new_tokens=8),
    "4 beams, 3 returned": dict(num_beams=4, max_new_tokens=8, num_return_sequences=3),
    "eos ids": dict(num_beams=3, max_new_tokens=12, eos_token_id=[53, 50], num_return_sequences=3),
    "early_stopping=True": dict(num_beams=3, max_new_tokens=12, eos_token_id=[16, 47], early_stopping=True),
    "early_stopping='never'": dict(num_beams=3, max_new_tokens=12, eos_token_id=[16, 47], early_stopping="never"),
    "length_penalty=-1": dict(num_beams=3, max_new_tokens=12, eos_token_id=[16, 47], length_penalty=-1.0,
                              num_return_sequences=3),
    "penalties": dict(num_beams=2, max_new_tokens=10, repetition_penalty=1.5, no_repeat_ngram_size=2),
    "min_new_tokens and bad words": dict(num_beams=3, max_new_tokens=9, eos_token_id=[16, 47], min_new_tokens=4,
                                         bad_words_ids=[[53]]),
}


@pytest.mark.parametrize("case", sorted(BEAM_CASES))
def test_beam_search_equals_transformers_token_for_token(pair, case):
    theirs, ours = both(pair, **BEAM_CASES[case])
    assert not isinstance(ours, Exception), ours
    assert ours.tolist() == theirs.tolist()
    theirs, ours = both(pair, LEFT_PADDED, attention_mask=LEFT_MASK, pad_token_id=0, **BEAM_CASES[case])
    assert ours.tolist() == theirs.tolist()


def test_beam_search_dict_output_as_transformers(pair):
    options = dict(num_beams=3, max_new_tokens=7, eos_token_id=[16, 47], num_return_sequences=2,
                   return_dict_in_generate=True, output_scores=True, output_logits=True)
    theirs, ours = both(pair, **options)
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    assert ours.beam_indices.tolist() == theirs.beam_indices.tolist()
    np.testing.assert_allclose(ours.sequences_scores.numpy(), theirs.sequences_scores.numpy(), rtol=1e-5)
    for name in ("scores", "logits"):
        assert len(getattr(ours, name)) == len(getattr(theirs, name))
        for a, b in zip(getattr(ours, name), getattr(theirs, name)):
            a, b = a.numpy(), b.numpy()
            assert a.shape == b.shape and (np.isinf(a) == np.isinf(b)).all()
            np.testing.assert_allclose(np.where(np.isinf(a), 0, a), np.where(np.isinf(b), 0, b), atol=1e-4)


@pytest.mark.parametrize("options", [dict(num_beams=2, num_return_sequences=3), dict(num_beams=0)])
def test_beam_refusals_as_transformers(pair, options):
    theirs, ours = both(pair, max_new_tokens=4, **options)  # num_beams=0: transformers' ZeroDivisionError
    assert isinstance(theirs, Exception) and isinstance(ours, ValueError), (theirs, ours)


@pytest.mark.parametrize("options", [dict(remove_invalid_values=True),  # (taken since r14: tests/*fields_r14.py)
                                     dict(encoder_no_repeat_ngram_size=2), dict(num_beams=4, num_beam_groups=2)])
def test_rarer_options_as_transformers(pair, options):
    theirs, ours = both(pair, max_new_tokens=4, **options)  # group beam search: transformers' ValueError (the Hub)
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs) and str(ours) == str(theirs), (theirs, ours)
    else:
        assert ours.tolist() == theirs.tolist()


def test_the_prompt_as_inputs_or_nothing_as_transformers(pair):
    """transformers names generate's first argument ``inputs`` (``generate(inputs=ids)`` was a TypeError);
    with no prompt it starts from the bos token; both spellings at once is its ValueError."""
    theirs, ours = both(pair, max_new_tokens=5)  # the ids below are passed as inputs= instead
    for model, wrap in ((pair[0], torch.tensor), (pair[1], np.array)):
        with torch.no_grad():
            assert model.generate(inputs=wrap(PROMPT), max_new_tokens=5).tolist() == theirs.tolist()
            assert model.generate(max_new_tokens=4).tolist() == pair[0].generate(max_new_tokens=4).tolist()
    with pytest.raises(ValueError, match="`inputs`.*alongside `input_ids`"):
        pair[1].generate(input_ids=np.array(PROMPT), inputs=np.array(PROMPT), max_new_tokens=2)
    with pytest.raises(TypeError):  # the first positional argument is inputs, as transformers' (its TypeError)
        pair[1].generate(np.array(PROMPT), inputs=np.array(PROMPT), max_new_tokens=2)


@pytest.mark.parametrize("option", ["constraints", "force_words_ids", "penalty_alpha",  # (max_time: now taken,
                                    "dola_layers"])  # test_hf_offpath_r10.py; prompt lookup: test_generate_offpath_r12)
def test_transformers_options_minilora_lacks_are_refused_by_name_not_called_typos(pair, option):
    """transformers' generate takes these; minilora said 'not used by the model (typos...)'. transformers 5 moved
    these methods to the Hub: without trust_remote_code=True, its ValueError in both (r14)."""
    value = [[1]] if option in ("constraints", "force_words_ids") else 3
    theirs, ours = both(pair, max_new_tokens=2, **{option: value})
    assert isinstance(ours, ValueError) and str(ours) == str(theirs) and "requires `trust_remote_code=True`" in str(ours)


@pytest.mark.parametrize("invalid", [dict(bad_words_ids=[]), dict(bad_words_ids=[7]), dict(bad_words_ids=[[-1]]),
                                     dict(bad_words_ids=[[64]]), dict(suppress_tokens=7),
                                     dict(sequence_bias={(53,): -1}), dict(sequence_bias={(): -1.0}),
                                     dict(forced_eos_token_id=-1)])
def test_malformed_token_lists_are_refused_as_transformers(pair, invalid):
    theirs, ours = both(pair, max_new_tokens=4, **invalid)
    assert isinstance(theirs, Exception) and isinstance(ours, type(theirs)), (theirs, ours)


@pytest.mark.parametrize("odd", [dict(bad_words_ids=[[]]), dict(bad_words_ids=[[], [53]]), dict(suppress_tokens=[64]),
                                 dict(suppress_tokens=[]), dict(sequence_bias=[[[53], -5.0]]),
                                 dict(sequence_bias={(3, 53): -9.0, (53,): 0.5}), dict(bad_words_ids=[[2]])])
def test_edge_cases_transformers_accepts_give_its_tokens(pair, odd):
    """An empty bad word bans nothing, an id past the vocabulary is suppressed as nothing, an eos id
    alone is no bad word (transformers drops it), the list spelling of sequence_bias."""
    theirs, ours = both(pair, [[5, 9, 3]], max_new_tokens=6, **odd)
    assert ours.tolist() == theirs.tolist()


def test_generation_config_json_options_apply_as_in_transformers(pair, tmp_path):
    """A model folder's generation_config.json (repetition_penalty, no_repeat_ngram_size, bad_words_ids...)
    is applied by transformers' generate: minilora's from_pretrained + generate gives the same tokens."""
    theirs, _, folder = pair
    import shutil
    own = tmp_path / "with_config"
    shutil.copytree(folder, own)
    settings = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "bad_words_ids": [[16]],
                "suppress_tokens": [53], "max_new_tokens": 9, "eos_token_id": 2, "bos_token_id": 1}
    (own / "generation_config.json").write_text(json.dumps(settings))
    hf = transformers.LlamaForCausalLM.from_pretrained(str(own)).eval()
    mine = LlamaForCausalLM.from_pretrained(str(own)).eval()
    with torch.no_grad():
        expected = hf.generate(torch.tensor(PROMPT)).tolist()
    assert mine.generate(np.array(PROMPT)).tolist() == expected


# ---------------------------------------------------------------------------------------------------
# the tokenizer of a model folder: one rule for `minilora generate` and `minilora serve`
# ---------------------------------------------------------------------------------------------------
def test_generate_and_serve_choose_the_tokenizer_by_one_rule(monkeypatch, tmp_path):
    from minilora import generate as generate_cli, tokenizer as tokenizers
    from minilora.serve import cli as serve_cli
    seen = []
    real = tokenizers.model_tokenizer
    monkeypatch.setattr(tokenizers, "model_tokenizer", lambda folder: seen.append(folder) or real(folder))

    class Args:
        tokenizer, model = None, str(tmp_path)
    assert isinstance(generate_cli._command_tokenizer(Args, tokenizers), ByteTokenizer)
    assert isinstance(serve_cli.load_engine(None)[0].tokenizer, ByteTokenizer)
    assert seen == [str(tmp_path), None]
    ByteTokenizer().save_pretrained(str(tmp_path))  # a folder with a tokenizer.json: that one
    assert not isinstance(real(str(tmp_path)), ByteTokenizer)


# ---------------------------------------------------------------------------------------------------
# the OpenAI server, as vLLM's
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("model", ["absent", None, ""])
def test_a_request_without_model_is_for_the_base_model_as_vllm(served, route, model):
    """vLLM's ChatCompletionRequest / CompletionRequest have ``model: Optional[str] = None``, and a
    request without one is served by the base model (minilora answered 400 "model is required")."""
    client, engine, _, _ = served
    body = {"prompt": "hi"} if "chat" not in route else {"messages": [{"role": "user", "content": "hi"}]}
    body.update(max_tokens=4, temperature=0)
    named = client.post(route, json={**body, "model": "tiny"}).json()
    r = client.post(route, json=body if model == "absent" else {**body, "model": model})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny"
    key = "text" if "chat" not in route else "message"
    assert r.json()["choices"][0][key] == named["choices"][0][key]
    assert client.post(route, json={**body, "model": 5}).status_code == 400


@pytest.mark.parametrize("body, kind", [(b"{bad json", "Bad Request"), (b"[1, 2]", "Bad Request"),
                                        (b'{"model": "tiny", "prompt": "hi", "n": 0}', "BadRequestError")])
def test_bad_requests_answer_vllms_error_json(served, body, kind):
    client, *_ = served
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == 400 and error["type"] == kind
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "Not Found"


def test_serve_applies_repetition_penalty_and_min_p_from_generation_config_json(serve_command, model_dirs, capsys):
    """vLLM's --generation-config auto takes repetition_penalty, temperature, top_k, top_p, min_p and
    max_new_tokens from the model's file as request defaults. minilora refused repetition_penalty."""
    from starlette.testclient import TestClient

    from minilora.serve.app import create_app
    tiny = model_dirs / "tiny"
    (tiny / "generation_config.json").write_text(json.dumps({"repetition_penalty": 1.8, "min_p": 0.2}))
    code, err, engine, name = serve_command([str(tiny)], capsys)
    assert code == 0, err
    assert engine.sampling_defaults["repetition_penalty"] == 1.8 and engine.sampling_defaults["min_p"] == 0.2
    engine.eos = set()
    with TestClient(create_app(engine, name)) as client:
        def text(**kw):
            body = {"prompt": "hello hello", "max_tokens": 12, "temperature": 0, **kw}
            return client.post("/v1/completions", json=body).json()["choices"][0]["text"]
        assert text() == text(repetition_penalty=1.8)
        assert text() != text(repetition_penalty=1.0)


def test_stop_lists_n_and_seeds_as_vllms_protocol(served):
    """vLLM's ``stop`` is ``str | list[str]`` of any length (minilora refused more than 4, OpenAI's own
    bound), n > 1 at temperature 0 is refused (vLLM's SamplingParams: "n must be 1 when using greedy
    sampling"), and ``seed`` is an int64 as vLLM's."""
    client, *_ = served
    ask = lambda **kw: client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 12, **kw})  # noqa: E731
    whole = ask(temperature=0).json()["choices"][0]["text"]
    stops = ["zzq", "qqz", "zqz", "qzq", whole[3:5]]  # the fifth one is in the answer
    r = ask(temperature=0, stop=stops)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == whole[:whole.index(whole[3:5])]
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = ask(temperature=0, n=3)
    assert r.status_code == 400 and r.json()["error"]["message"] == "n must be 1 when using greedy sampling, got 3."
    assert ask(seed=2**63 - 1).status_code == 200
    r = ask(seed=2**63)
    assert r.status_code == 400 and r.json()["error"]["param"] == "body.seed"  # (pydantic's loc: r17)


@pytest.mark.parametrize("options", [dict(), dict(temperature=0.6, top_k=8), dict(top_p=0.8), dict(min_p=0.05)])
def test_sampled_first_tokens_follow_transformers_distribution(pair, options):
    """Seed-free: 4000 rows sampled one step. Their token frequencies must match the probabilities
    transformers samples from (softmax of its processed scores) within a few standard errors, and no
    token transformers filters out may appear."""
    theirs, ours = pair[0], pair[1]
    rows = 4000
    with torch.no_grad():
        ref = theirs.generate(torch.tensor(PROMPT), max_new_tokens=1, do_sample=True, return_dict_in_generate=True,
                              output_scores=True, **options).scores[0][0]
    probs = torch.softmax(ref.double(), dim=-1).numpy()
    drawn = ours.generate(np.repeat(np.array(PROMPT), rows, 0), max_new_tokens=1, do_sample=True, seed=123,
                          **options).numpy()[:, -1]
    freq = np.bincount(drawn, minlength=probs.size) / rows
    assert (freq[probs == 0] == 0).all()
    tolerance = 5 * np.sqrt(probs * (1 - probs) / rows) + 1e-3
    assert (np.abs(freq - probs) <= tolerance).all(), np.abs(freq - probs).max()


def test_beam_search_with_one_adapter_per_row_as_peft():
    """PEFT repeats each row's adapter name num_beams times (the rows are expanded per beam); minilora's
    PeftModel.generate said the batch had more samples than adapter_names."""
    model, ids = two_adapters(), np.array([[5, 9, 3], [4, 8, 6]])
    options = dict(num_beams=2, max_new_tokens=4, eos_token_id=[])
    together = model.generate(ids, adapter_names=["a", "b"], **options).tolist()
    alone = [model.generate(ids[i:i + 1], adapter_names=[name], **options).tolist()[0] for i, name in enumerate("ab")]
    assert together == alone
