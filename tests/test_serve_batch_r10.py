"""Big batches in one request, as vLLM takes them, and waits that end.

lm-evaluation-harness (and any batch client) sends one /v1/completions request with 64+ prompts; vLLM
queues every prompt x n sequence and schedules ``--max-num-seqs`` of them per step. minilora serve
answered 400 once prompts x n passed ``--max-num-seqs + --max-queue`` (12 here, 40 by default). Now
the request's sequences wait for free rows, each answered as if sent alone; ``--max-queue`` still
bounds the backlog across requests (a request arriving while it is full gets 429, nothing queued).
"""
import threading

import pytest

from minilora.serve import Engine, EngineError, Request
from minilora.serve.engine import wait_until
from minilora.tokenizer import ByteTokenizer
from test_serve import alone, events, served_text, two_adapters

pytest.importorskip("starlette")
pytest.importorskip("httpx")

# 9 prompts: 3x the rows (all text: vLLM's prompt is a list of texts or a list of id lists, never both mixed)
PROMPTS = ["hi", "yo", "abc", "one more", "hi!", "x", "the sky", "zz", "q?"]


@pytest.fixture(scope="module")
def served():
    from starlette.testclient import TestClient
    from minilora.serve.app import create_app
    model, tok = two_adapters(), ByteTokenizer()
    engine = Engine(model, tok, max_batch_size=2, max_queue=1)  # 3 sequences at once, running or waiting
    engine.eos = set()  # random weights: run to max_tokens, so lengths are known
    with TestClient(create_app(engine, model_name="tiny")) as client:
        yield client, engine, model, tok


def ids_of(tok, prompt):
    return prompt if isinstance(prompt, list) else tok.encode(prompt)


def test_more_prompts_than_the_server_holds_are_answered_each_as_alone(served):
    client, engine, model, tok = served
    r = client.post("/v1/completions", json={"model": "a", "prompt": PROMPTS, "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200, r.text  # was: 400 "9 completions, more than this server runs and queues at once (3)"
    body = r.json()
    assert [c["index"] for c in body["choices"]] == list(range(len(PROMPTS)))
    for choice, prompt in zip(body["choices"], PROMPTS):
        assert choice["text"] == served_text(tok, alone(model, ids_of(tok, prompt), "a", 3))
    assert body["usage"]["completion_tokens"] == 3 * len(PROMPTS)
    assert max(len(rows) for _, rows in engine.steps) == 2  # never more rows than --max-num-seqs per step


def test_n_times_prompts_past_the_bound_sample_with_each_choices_seed(served):
    client = served[0]
    ask = lambda **kw: client.post("/v1/completions", json={  # noqa: E731
        "model": "b", "max_tokens": 4, "temperature": 0.9, **kw}).json()
    body = ask(prompt=["hi", "yo"], n=3, seed=11)  # 6 sequences; choice p * n + i samples with seed + i
    texts = [c["text"] for c in body["choices"]]
    assert texts == [ask(prompt=p, seed=11 + i)["choices"][0]["text"] for p in ("hi", "yo") for i in range(3)]


def test_a_stream_of_a_big_batch_finishes_every_choice(served):
    client, engine, model, tok = served
    with client.stream("POST", "/v1/completions", json={"model": "a", "prompt": PROMPTS[:7], "max_tokens": 2,
                                                        "temperature": 0, "stream": True}) as r:
        chunks = events(r)
    finished = sorted(c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"])
    assert finished == list(range(7))
    text = {i: "".join(c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == i) for i in range(7)}
    assert text[4] == served_text(tok, alone(model, ids_of(tok, PROMPTS[4]), "a", 2))


def test_the_queue_bound_is_across_requests_a_429_queues_nothing():
    tok = ByteTokenizer()
    engine = Engine(two_adapters(), tok, max_batch_size=1, max_queue=1)  # not started: everything stays queued
    big = [Request(tok.encode(p), max_tokens=2) for p in ("a", "b", "c", "d", "e")]
    engine.submit_all(big)  # an idle server takes a request of 5 whole (was a 429 however idle it was)
    assert list(engine.waiting) == big
    late = Request(tok.encode("f"), max_tokens=2)
    with pytest.raises(EngineError) as err:  # the backlog (5) is past 1 + 1: the next client is told to wait
        engine.submit(late)
    assert err.value.status == 429 and "5 queued" in err.value.message
    assert list(engine.waiting) == big and engine.in_use[None] == 5


def test_a_wait_for_a_server_that_died_fails_fast_naming_it():
    """A readiness wait that polls only for "started" spins to its deadline when the server thread died
    (uvicorn exits when its port is taken): serve_in_thread ends the wait when the thread does, with its error."""
    import time
    from minilora.serve.cli import serve_in_thread

    class Broken:
        started = False

        def run(self):
            raise SystemExit(1)  # what uvicorn's startup does when it cannot bind
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"the server stopped before it started: SystemExit: 1"):
        serve_in_thread(Broken(), timeout=30)
    assert time.monotonic() - start < 5  # at once, not at the 30 s deadline

    release = threading.Event()

    class Stuck:
        started = False

        def run(self):
            release.wait(10)
    try:
        with pytest.raises(TimeoutError, match=r"the server did not start listening within 0.2 s"):
            serve_in_thread(Stuck(), timeout=0.2)
    finally:
        release.set()
