"""`minilora serve` against vLLM 0.24's SamplingParams and request fields, field by field (round 14): what a client
sends with the openai client's ``extra_body=``, a bad value of each, and the adapter routes mid-request.

| what a client sends                            | before                           | now (vLLM's)                     |
|------------------------------------------------|----------------------------------|----------------------------------|
| bad_words on /v1/completions                   | ignored as unknown (a warning)   | its tokens masked, as chat's     |
| bad_words [""] / ["  "]                        | taken (the word dropped)         | SamplingParams' 400s             |
| presence/frequency_penalty 3, repetition 0/inf,| "X must be a number in [a, b],   | _verify_args' words ("presence_  |
|  top_p 0, top_k -2, min_p 1.5, min_tokens -1,  |  got v" (minilora's), param: it  |  penalty must be in [-2, 2], got |
|  max_tokens -1                                 |  field                           |  3.0."), param null where vLLM's |
|                                                |                                  |  check names none                |
| temperature 3, top_p 0, max_tokens 0 / -1,     | vLLM's sentence alone            | + " (parameter=top_p, value=0.0)"|
|  truncate_prompt_tokens, the context checks    |                                  |  (VLLMValidationError's text)    |
| n 2 at temperature 0                           | "... got 2" (no period), "n"     | "... got 2.", param null         |
| seed 2**64                                     | "seed must be an integer in ..." | pydantic's "Input should be less |
|                                                |                                  |  than or equal to 922...807"     |
| priority 1                                     | "priority is not supported (only | "Got priority 1 but Priority     |
|                                                |  0)"                             |  scheduling is not enabled."     |
| spaces_between_special_tokens false            | 400 not supported                | taken, no effect (vLLM's fast    |
|                                                |                                  |  detokenizer ignores it)         |
| presence_penalty 3, top_k -2, ... with         | 400 (the sampling checks)        | taken: BeamSearchParams checks   |
|  use_beam_search                               |                                  |  nothing (temperature: each step)|
| an adapter unloaded while a beam search runs   | 404 mid-search                   | the search ends with its adapter |
| an adapter reloaded in place mid-beam          | the old weights' cache extended | the next step runs the new       |
|  (load_inplace)                                |  by the new weights              |  weights over each whole beam    |
| ... while a request is queued or running       | the old weights to the end       | the new ones from the reload on  |
| chat: continue_final_message and               | minilora's sentence, param       | "Cannot set both ..." (both sent)|
|  add_generation_prompt true                    |  continue_final_message          |  / transformers' (the default)   |
| a template's raise_exception / TypeError       | "the chat template refused the   | its words alone, param null      |
|                                                |  messages: ...", param messages  |                                  |
| no chat template                               | minilora's sentence              | vLLM's "As of transformers v4.44"|
"""
import asyncio

import numpy as np
import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
from starlette.testclient import TestClient  # noqa: E402

import minilora as ml  # noqa: E402
from minilora.lora import get_peft_model  # noqa: E402
from minilora.serve import Engine, Request  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.serve.beam import beam_search, _BeamCache  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, adapter_config, base_model, served_text, two_adapters  # noqa: E402

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def served():
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    model = two_adapters()
    engine = Engine(model, tok, max_batch_size=4, max_queue=8)
    engine.eos = set()  # random weights: run to max_tokens
    # (requests send chat templates of their own: vLLM's --trust-request-chat-template)
    with TestClient(create_app(engine, "tiny", trust_request_chat_template=True)) as client:
        yield client, model, tok


def api(client):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="EMPTY", max_retries=0, http_client=client)


def ask(client, chat, **fields):
    """A completion (chat: a chat completion) through the openai client, vLLM's fields in extra_body."""
    common = dict(model="a", max_tokens=6, temperature=0)
    if chat:
        got = api(client).chat.completions.create(messages=MESSAGES, **common, extra_body=fields)
        return got.choices[0].message.content
    return api(client).completions.create(prompt="Dan", **common, extra_body=fields).choices[0].text


def prompt_ids(tok, chat):
    if chat:
        return tok.encode(tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False)
    return tok.encode("Dan")


def greedy_without(model, tok, ids, bad_words, n=6):
    """The reference: greedy tokens through adapter "a" (full forwards, the model's own), where a bad word's last
    token is -inf once the output ends with the word's other tokens (vLLM's rule; a one-token word always), and
    the ids past the tokenizer never picked."""
    out = []
    for _ in range(n):
        with ml.no_grad():
            logits = model(np.array([ids + out]), adapter_names=["a"]).logits.numpy()[0, -1].copy()
        logits[len(tok):] = -np.inf
        for word in bad_words:
            if out[len(out) - len(word) + 1:] == word[:-1] or len(word) == 1:
                logits[word[-1]] = -np.inf
        out.append(int(np.argmax(logits)))
    return out


# ---------------------------------------------------------------------------------------------------
# bad_words: completions and chat alike
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_bad_words_mask_their_tokens_on_completions_and_chat(served, chat):
    client, model, tok = served
    ids = prompt_ids(tok, chat)
    plain = greedy_without(model, tok, ids, [])
    # a one-token word: the first greedy token; a two-token word: the first two ASCII greedy tokens in a row
    at = next(i for i in range(1, len(plain) - 1) if plain[i] < 128 and plain[i + 1] < 128)
    one, two = chr(plain[0]), chr(plain[at]) + chr(plain[at + 1])
    assert ask(client, chat) == served_text(tok, plain)
    for words in ([one], [two], [one, two]):
        expected = greedy_without(model, tok, ids, [tok.encode(w, add_special_tokens=False) for w in words])
        assert expected != plain
        assert ask(client, chat, bad_words=words) == served_text(tok, expected), words


# ---------------------------------------------------------------------------------------------------
# bad values: vLLM's words, and its param (null where its check names none)
# ---------------------------------------------------------------------------------------------------
BAD = [  # (fields, message, param): SamplingParams._verify_args, pydantic's Field bounds, the engine's checks
    ({"presence_penalty": 3}, "presence_penalty must be in [-2, 2], got 3.0.", None),
    ({"frequency_penalty": "-2.5"}, "frequency_penalty must be in [-2, 2], got -2.5.", None),
    ({"repetition_penalty": 0}, "repetition_penalty must be greater than zero, got 0.0.", None),
    ({"repetition_penalty": "inf"}, "repetition_penalty must be a finite number, got inf.", None),
    ({"temperature": 3}, "temperature must be in [0, 2], got 3.0. (parameter=temperature, value=3.0)",
     "temperature"),
    ({"top_p": 0}, "top_p must be in (0, 1], got 0.0. (parameter=top_p, value=0.0)", "top_p"),
    ({"top_k": -2}, "top_k must be 0 (disable), or at least 1, got -2.", None),
    ({"min_p": 1.5}, "min_p must be in [0, 1], got 1.5.", None),
    ({"max_tokens": -1}, "max_tokens must be at least 1, got -1. (parameter=max_tokens, value=-1)", "max_tokens"),
    ({"min_tokens": -1}, "min_tokens must be greater than or equal to 0, got -1.", None),
    ({"min_tokens": 9}, "min_tokens must be less than or equal to max_tokens=6, got 9.", None),
    ({"n": 2}, "n must be 1 when using greedy sampling, got 2.", None),
    ({"seed": 2**64}, "'loc': ('body', 'seed'), 'msg': 'Input should be less than or equal to 9223372036854775807'",
     "body.seed"),
    ({"bad_words": [""]}, "bad_words cannot contain an empty string. Got bad_words=['']", None),
    ({"bad_words": ["  "]}, "bad_words entries must tokenize to at least one token. (parameter=bad_words, "
                            "value=['  '])", "bad_words"),
    ({"priority": 1}, "Got priority 1 but Priority scheduling is not enabled.", None),
]


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
@pytest.mark.parametrize("fields, message, param", BAD, ids=[next(iter(f)) + "=" + repr(next(iter(f.values())))
                                                             for f, _, _ in BAD])
def test_bad_values_are_refused_in_vllms_words(served, chat, fields, message, param):
    with pytest.raises(openai.BadRequestError) as err:
        ask(served[0], chat, **fields)
    body = err.value.body
    if message.startswith(("'loc'", "'msg'")):  # the request's pydantic model refused it: vLLM's answer to FastAPI's
        assert message in body["message"] and (body["param"], body["type"]) == (param, "Bad Request")  # (r17)
    else:
        assert (body["message"], body["param"], body["type"]) == (message, param, "BadRequestError")


def test_a_beam_search_is_checked_as_vllms_beam_search_params(served):
    """use_beam_search makes vLLM's BeamSearchParams, which checks nothing, not SamplingParams: the sampling fields
    a search does not read are taken as they come; its temperature reaches each step's one-token request."""
    ignored = dict(use_beam_search=True, n=2, presence_penalty=3, top_k=-2, min_p=1.5, top_p=0, min_tokens=9)
    assert ask(served[0], False, **ignored) == ask(served[0], False, use_beam_search=True, n=2)
    test_bad_values_are_refused_in_vllms_words(served, False, {**ignored, "temperature": 3}, BAD[4][1], "temperature")


CHAT_BAD = [  # a chat's own: ChatCompletionRequest's validator, then the template's refusals (transformers', the
    # template's raise_exception), written as vLLM's create_error_response writes a ValueError: its text, no param
    ({"add_generation_prompt": True, "continue_final_message": True},  # (a ValueError of the model's validator)
     "'msg': 'Value error, Cannot set both `continue_final_message` and `add_generation_prompt` to True.'"),
    ({"continue_final_message": True},
     "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when you want "
     "the model to continue the final message, and add_generation_prompt when you want to add a header that will "
     "prompt it to start a new assistant message instead."),
    ({"chat_template": "{{ raise_exception('Conversation roles must alternate user/assistant') }}"},
     "Conversation roles must alternate user/assistant"),
    ({"chat_template": None, "no template": True}, "As of transformers v4.44, default chat template is no longer "
     "allowed, so you must provide a chat template if the tokenizer does not define one."),
]


@pytest.mark.parametrize("fields, message", CHAT_BAD, ids=["both", "continue", "raise_exception", "no template"])
def test_chat_refusals_are_vllms(served, monkeypatch, fields, message):
    client, _, tok = served
    fields = dict(fields)
    if fields.pop("no template", False):
        monkeypatch.setattr(tok, "chat_template", None)
    test_bad_values_are_refused_in_vllms_words(served, True, fields, message, "body" if "'msg'" in message else None)


def test_fields_vllm_takes_without_effect_here_are_taken(served):
    """vLLM accepts these and they change nothing a request computes here (spaces_between_special_tokens: its
    fast detokenizer ignores it; cache_salt: no prefix cache to salt; kv_transfer_params: no disaggregation)."""
    client = served[0]
    for chat in (False, True):
        plain = ask(client, chat)
        assert ask(client, chat, spaces_between_special_tokens=False, cache_salt="salt", kv_transfer_params={},
                   vllm_xargs={"k": 1}, request_id="r-1", priority=0, length_penalty=2.0, bad_words=[]) == plain
    assert api(client).completions.create(model="a", prompt="Dan", max_tokens=6, temperature=0,
                                          user="u").choices[0].text == plain_text(client)


def plain_text(client):
    return ask(client, False)


# ---------------------------------------------------------------------------------------------------
# the adapter routes while a beam search or a request is in flight
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def quiet_engine(tmp_path):
    """An engine whose loop is not running (between_steps runs at once), and a rank-2 adapter folder."""
    tok = ByteTokenizer()
    engine = Engine(two_adapters(), tok, max_batch_size=4, max_queue=8)
    engine.eos = set()
    folder = tmp_path / "other"
    get_peft_model(base_model(seed=3), adapter_config(2)).save_pretrained(str(folder))
    return engine, str(folder)


def reference(folder):
    """The engine's model as it was (adapter "a"), with the folder's adapter as "new": the references' model."""
    model = two_adapters()
    model.load_adapter(folder, adapter_name="new")
    return model.eval()


def run_beam(engine, at_step=None, action=None, width=2, steps=4):
    """beam_search over "a"; ``action()`` runs before step ``at_step`` (from its client_gone check)."""
    calls = iter(range(steps + 1))

    async def between():
        if next(calls) == at_step:
            action()
        return False
    return asyncio.run(beam_search(engine, [72, 105, 33], "a", width, steps, temperature=0.0, client_gone=between))


def test_an_adapter_unloaded_mid_beam_search_serves_the_search_to_its_end(quiet_engine):
    engine, _ = quiet_engine
    undisturbed = run_beam(engine)
    got = run_beam(engine, at_step=2, action=lambda: engine.unload_adapter("a"))
    assert [b.tokens for b in got] == [b.tokens for b in undisturbed]
    assert "a" not in engine.adapters() and "a" not in engine.model.peft_config  # gone with the search


def test_an_adapter_reloaded_in_place_mid_beam_runs_the_new_weights_over_each_whole_beam(quiet_engine, monkeypatch):
    engine, folder = quiet_engine
    seen = []  # (the beams' whole tokens, the logits the step ran on), each step after the first
    extend = _BeamCache.extend

    def spy(self, parents, tokens, sequences):
        logits = extend(self, parents, tokens, sequences)
        seen.append((sequences, logits))
        return logits
    monkeypatch.setattr(_BeamCache, "extend", spy)
    run_beam(engine, at_step=2, action=lambda: engine.load_adapter("a", folder, replace=True))
    assert list(engine.model.peft_config) == ["b", "a_1"]  # the old weights gone with the search's step
    model = reference(folder)
    for step, (sequences, logits) in enumerate(seen):
        names = ["new" if step >= 1 else "a"] * len(sequences)  # step 2's forward is the first after the reload
        with ml.no_grad():
            whole = model(np.array(sequences), adapter_names=names).logits.numpy()[:, -1]
        np.testing.assert_allclose(logits, whole, rtol=1e-10, atol=1e-10)


def test_a_request_in_flight_takes_the_new_weights_of_an_in_place_reload(quiet_engine):
    """vLLM reloads the weights of the adapter's id: a running request's next tokens come from them, over the keys
    and values it computed before; a queued one runs the new weights throughout."""
    engine, folder = quiet_engine
    ids = [72, 105, 33]
    running, queued = Request(ids, "a", max_tokens=5, temperature=0), Request(ids, "a", max_tokens=5, temperature=0)
    engine.max_batch_size = 1
    engine.submit_all([running, queued])
    engine._admit()
    engine._step()  # two tokens with the old weights
    engine.load_adapter("a", folder, replace=True)
    while engine.rows or engine.waiting:
        engine._drop_cancelled()
        engine._admit()
        if engine.rows:
            engine._step()
    model, beyond, key = reference(folder), list(range(engine.text_vocab, engine.vocab_size)), "new"

    def greedy(old_tokens):
        """Greedy with the model's own cache: the prompt and the first old_tokens through "a", the rest through
        the reloaded adapter."""
        with ml.no_grad():
            out = model(np.array([ids]), adapter_names=["a" if old_tokens else key], use_cache=True)
            tokens = []
            while len(tokens) < 5:
                logits = out.logits.numpy()[0, -1].copy()
                logits[beyond] = -np.inf
                tokens.append(int(np.argmax(logits)))
                name = "a" if len(tokens) < old_tokens else key
                out = model(np.array([[tokens[-1]]]), past_key_values=out.past_key_values, adapter_names=[name],
                            use_cache=True)
        return tokens
    assert running.generated == greedy(2) and queued.generated == greedy(0)
    assert running.generated != greedy(5)  # (the old weights to the end: what minilora did before)
