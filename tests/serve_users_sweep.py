"""`minilora serve` called with the official `openai` client as its users write the calls, each answer compared
with what vLLM's semantics give on the same weights (outside CI: ``python -m tests.serve_users_sweep``).

The reference is written here, not taken from minilora: every step's logits come from a full float64 forward of the
served model's twin (the prompt and the tokens so far), and vLLM's v1 sampler is redone in torch float32 op by op
(vllm/v1/sample/sampler.py: allowed ids, bad words, logit_bias, min_tokens, apply_penalties, temperature, min_p,
apply_top_k_top_p, the exponential race with the request's torch.Generator; logprobs the log_softmax of the logits
the sampler is handed -- a structured-output grammar's bitmask already applied --, vLLM's default "raw_logprobs").
Greedy answers are also compared with minilora's and transformers' ``generate`` on the same weights.
Prints "N of M forms differ" by class. Round 33: 4 of 109 on START (structured: the logprobs of a response_format
request were the unmasked model's, and a ruled-out token's -inf was never shown as vLLM's -9999.0), 0 of 109 after.
"""
import json
import sys
import tempfile
import traceback

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import minilora as ml  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from minilora.serve import Engine  # noqa: E402
from minilora.serve.app import create_app  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402
from test_serve import CHAT_TEMPLATE, alone, two_adapters  # noqa: E402

import openai  # noqa: E402

TEXT_VOCAB, EOS = 259, 257
F32 = torch.float32


def make_client(max_batch_size=4):
    tok = ByteTokenizer()
    tok.chat_template = CHAT_TEMPLATE
    engine = Engine(two_adapters(), tok, max_batch_size=max_batch_size, max_queue=64)
    http = TestClient(create_app(engine, model_name="tiny"), base_url="http://testserver")
    http.__enter__()
    return openai.OpenAI(base_url="http://testserver/v1", api_key="EMPTY", max_retries=0, http_client=http), \
        engine, tok, http


class Reference:
    """vLLM's semantics on the twin of the served model."""

    def __init__(self, tok):
        self.model, self.tok = two_adapters(), tok

    def logits(self, ids, adapter):
        with ml.no_grad():
            out = self.model(np.array([ids]), adapter_names=[adapter or "__base__"]).logits.numpy()
        return out[0, -1].astype(np.float64)

    def all_logits(self, ids, adapter):
        with ml.no_grad():
            return self.model(np.array([ids]), adapter_names=[adapter or "__base__"]).logits.numpy()[0].astype(
                np.float64)

    def run(self, prompt, adapter=None, max_tokens=16, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=None,
            presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, logit_bias=None, stop=(),
            stop_token_ids=(), ignore_eos=False, min_tokens=0, include_stop_str_in_output=False,
            allowed_token_ids=None, grammar_mask=None, eos=(EOS,)):
        """(tokens, text, finish_reason, stop_reason, raw logprob rows) of one sequence, as vLLM generates it.
        ``grammar_mask(out)``: a bool row of the ids the grammar takes next (None: no grammar)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        out, rows = [], []
        stop_ids = set(stop_token_ids) | set(eos)
        max_tokens = max_tokens or 10 ** 9
        while True:
            x = torch.tensor(self.logits(list(prompt) + out, adapter), dtype=F32)
            if grammar_mask is not None:
                x[~torch.tensor(grammar_mask(out))] = -float("inf")
            rows.append(torch.log_softmax(x, -1).double().numpy())  # vLLM's raw_logprobs
            x = x.clone()
            x[TEXT_VOCAB:] = -float("inf")  # (minilora never samples the padded ids: no text)
            if allowed_token_ids is not None:
                keep = torch.zeros(len(x), dtype=torch.bool)
                keep[allowed_token_ids] = True
                x[~keep] = -float("inf")
            for token, bias in (logit_bias or {}).items():
                x[int(token)] += bias
            if len(out) < min_tokens:
                x[sorted(stop_ids)] = -float("inf")
            x = penalties(x, prompt, out, repetition_penalty, frequency_penalty, presence_penalty)
            if temperature < 1e-5:
                token = int(torch.argmax(x))
            else:
                x = x / max(temperature, 0.01)
                if min_p:
                    p = torch.softmax(x, -1)
                    x = x.masked_fill(p < p.max() * min_p, -float("inf"))
                x = top_k_top_p(x, top_k, top_p)
                q = torch.empty(len(x)).exponential_(generator=gen)
                token = int(torch.argmax(torch.softmax(x, -1) / q))
            out.append(token)
            if token in eos and not ignore_eos:
                return out, self.text(out), "stop", None, rows
            if token in stop_token_ids:  # (its text only with include_stop_str_in_output)
                return out, self.text(out if include_stop_str_in_output else out[:-1]), "stop", token, rows
            text = self.text(out)
            if stop and len(out) > min_tokens:
                hits = [(text.find(s), s) for s in stop if s in text]
                if hits:
                    at, s = min(hits)
                    return out, text[:at + (len(s) if include_stop_str_in_output else 0)], "stop", s, rows
            if len(out) >= max_tokens:
                return out, text, "length", None, rows

    def text(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True).rstrip("\ufffd")


def penalties(x, prompt, out, repetition, frequency, presence):
    """vllm/model_executor/layers/utils.py apply_penalties (one row): repetition on prompt and output tokens,
    frequency and presence on the output's counts."""
    size = len(x)
    counts = torch.bincount(torch.tensor(out, dtype=torch.long), minlength=size)[:size].to(F32) if out else \
        torch.zeros(size)
    prompt_mask = torch.bincount(torch.tensor(prompt, dtype=torch.long), minlength=size)[:size] > 0
    pen = torch.where(prompt_mask | (counts > 0), torch.tensor(repetition, dtype=F32), torch.tensor(1.0))
    x = x * torch.where(x > 0, 1.0 / pen, pen)
    x = x - frequency * counts
    return x - presence * (counts > 0).to(F32)


def top_k_top_p(x, k, p):
    """vllm/v1/sample/ops/topk_topp_sampler.py apply_top_k_top_p on one row."""
    k = k if k and 0 < k < len(x) else None
    if p >= 1.0:
        if k is None:
            return x
        return x.masked_fill(x < torch.topk(x, k).values[-1], -float("inf"))
    s, idx = x.sort(descending=False)
    if k is not None:
        s = s.masked_fill(s < s[len(x) - k], -float("inf"))
    cum = torch.cumsum(torch.softmax(s, -1), -1)
    mask = cum <= 1 - p
    mask[-1] = False
    s = s.masked_fill(mask, -float("inf"))
    return s.scatter(0, idx, s)


# ----------------------------------------------------------------------------------------------------------------
class Sweep:
    def __init__(self):
        self.client, self.engine, self.tok, self.http = make_client()
        self.ref = Reference(self.tok)
        self.results = []  # (class, form, None or what differs)

    def form(self, cls, name, fn):
        try:
            problem = fn()
        except Exception as exc:  # noqa: BLE001
            problem = f"raised {type(exc).__name__}: {exc}"[:300]
            if "-v" in sys.argv:
                traceback.print_exc()
        self.results.append((cls, name, problem))
        if problem:
            print(f"DIFF [{cls}] {name}: {problem}")

    def ids(self, text, special=True):
        return self.tok.encode(text, add_special_tokens=special)

    def chat_ids(self, messages):
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)


def differ(got, want, what):
    return None if got == want else f"{what}: got {got!r}, want {want!r}"


def first(*problems):
    return next((p for p in problems if p), None)


def close(got, want, tol=2e-6):
    got, want = np.asarray(got, float), np.asarray(want, float)
    return got.shape == want.shape and np.allclose(got, want, rtol=0, atol=tol, equal_nan=True)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where does Dan live?"}]


def completion_forms(s):
    c, ref = s.client, s.ref
    P = "The cat sat"
    pid = s.ids(P)

    def check(kwargs, ref_kwargs, prompt_ids=pid, model="tiny", adapter=None, prompt=P, n=1, seeds=None, **extra):
        r = c.completions.create(model=model, prompt=prompt, **kwargs)
        probs = []
        for i in range(n):
            seed = None if seeds is None else seeds[i]
            toks, text, reason, stop_reason, _ = ref.run(prompt_ids, adapter, seed=seed, **ref_kwargs)
            ch = r.choices[i]
            probs += [differ(ch.text, text, f"choice {i} text"), differ(ch.finish_reason, reason, f"choice {i} reason"),
                      differ(getattr(ch, "stop_reason", None), stop_reason, f"choice {i} stop_reason")]
        probs.append(differ(r.usage.prompt_tokens, len(prompt_ids), "prompt_tokens"))
        return first(*probs)

    for t in (0, 0.0):
        s.form("greedy", f"completions temperature={t!r}",
               lambda t=t: check(dict(temperature=t, max_tokens=8), dict(temperature=0, max_tokens=8)))
    s.form("greedy", "completions greedy == minilora generate (base, adapter a)", lambda: first(*[
        differ(c.completions.create(model=m, prompt=P, temperature=0, max_tokens=6, extra_body={
            "ignore_eos": True, "return_token_ids": True}).choices[0].token_ids, alone(ref.model, pid, a, 6), f"{m}")
        for m, a in (("tiny", None), ("a", "a"))]))
    s.form("greedy", "completions greedy == transformers (+ PEFT adapter a) generate", lambda: transformers_greedy(s, pid))
    s.form("seed", "seed=5 same twice", lambda: first(
        check(dict(seed=5, max_tokens=8), dict(max_tokens=8), seeds=[5]),
        differ(c.completions.create(model="tiny", prompt=P, seed=5, max_tokens=8).choices[0].text,
               c.completions.create(model="tiny", prompt=P, seed=5, max_tokens=8).choices[0].text, "repeat")))
    s.form("n", "n=3 seed=9: choice i seeds seed+i",
           lambda: check(dict(seed=9, n=3, max_tokens=6), dict(max_tokens=6), n=3, seeds=[9, 10, 11]))
    s.form("n", "two prompts seed=4: each seeded alike",
           lambda: first(*[differ(ch.text, ref.run(s.ids(p), seed=4, max_tokens=5)[1], f"prompt {i}")
                           for i, (p, ch) in enumerate(zip(["ab", "cd"], c.completions.create(
                               model="tiny", prompt=["ab", "cd"], seed=4, max_tokens=5).choices))]))
    for name, kw, rk in [
            ("top_p=0.8", dict(top_p=0.8), dict(top_p=0.8)),
            ("top_p=0.3 temperature=0.7", dict(top_p=0.3, temperature=0.7), dict(top_p=0.3, temperature=0.7)),
            ("top_k=5 (extra_body)", dict(extra_body={"top_k": 5}), dict(top_k=5)),
            ("top_k=-1", dict(extra_body={"top_k": -1}), dict(top_k=0)),
            ("top_k=3 top_p=0.9", dict(top_p=0.9, extra_body={"top_k": 3}), dict(top_k=3, top_p=0.9)),
            ("min_p=0.1", dict(extra_body={"min_p": 0.1}), dict(min_p=0.1)),
            ("temperature=1.7", dict(temperature=1.7), dict(temperature=1.7)),
            ("temperature=0.003", dict(temperature=0.003), dict(temperature=0.003)),
            ("presence_penalty=1.5", dict(presence_penalty=1.5), dict(presence_penalty=1.5)),
            ("frequency_penalty=-1.2", dict(frequency_penalty=-1.2), dict(frequency_penalty=-1.2)),
            ("repetition_penalty=1.8", dict(extra_body={"repetition_penalty": 1.8}), dict(repetition_penalty=1.8)),
            ("repetition_penalty=0.5", dict(extra_body={"repetition_penalty": 0.5}), dict(repetition_penalty=0.5)),
            ("logit_bias {'97': 8}", dict(logit_bias={"97": 8}), dict(logit_bias={97: 8})),
            ("logit_bias {'97': 150} (clamped)", dict(logit_bias={"97": 150}), dict(logit_bias={97: 100})),
            ("min_tokens=4 stop_token_ids", dict(extra_body={"min_tokens": 4, "stop_token_ids": [101, 32]}),
             dict(min_tokens=4, stop_token_ids=[101, 32])),
            ("allowed_token_ids", dict(extra_body={"allowed_token_ids": [97, 98, 99, 32]}),
             dict(allowed_token_ids=[97, 98, 99, 32])),
    ]:
        s.form("sampling", f"seeded {name}", lambda kw=kw, rk=rk: check(
            dict(seed=13, max_tokens=10, **kw), dict(max_tokens=10, **rk), seeds=[13]))
        s.form("sampling-greedy", f"greedy {name}", lambda kw=kw, rk=rk: check(
            {**kw, "temperature": 0, "max_tokens": 10}, {**rk, "max_tokens": 10, "temperature": 0}, seeds=None))

    # stops
    greedy_text = ref.run(pid, temperature=0, max_tokens=16)[1]
    mid = greedy_text[3:5] if len(greedy_text) > 6 else "zz"
    for name, kw, rk in [
            ("stop str", dict(stop=mid), dict(stop=[mid])),
            ("stop list", dict(stop=["qqq", mid]), dict(stop=["qqq", mid])),
            ("stop include_stop_str_in_output", dict(stop=[mid], extra_body={"include_stop_str_in_output": True}),
             dict(stop=[mid], include_stop_str_in_output=True)),
            ("ignore_eos", dict(extra_body={"ignore_eos": True}), dict(ignore_eos=True)),
    ]:
        s.form("stop", f"greedy {name}", lambda kw=kw, rk=rk: check(
            dict(temperature=0, max_tokens=16, **kw), dict(temperature=0, max_tokens=16, **rk)))

    greedy_ids = ref.run(pid, temperature=0, max_tokens=16)[0]
    for name, kw, rk in [
            ("stop_token_ids hit", dict(extra_body={"stop_token_ids": [greedy_ids[3]]}),
             dict(stop_token_ids=[greedy_ids[3]])),
            ("stop_token_ids hit include_stop_str_in_output",
             dict(extra_body={"stop_token_ids": [greedy_ids[3]], "include_stop_str_in_output": True}),
             dict(stop_token_ids=[greedy_ids[3]], include_stop_str_in_output=True)),
            ("stop_token_ids hit min_tokens=5", dict(extra_body={"stop_token_ids": [greedy_ids[3]], "min_tokens": 5}),
             dict(stop_token_ids=[greedy_ids[3]], min_tokens=5)),
            ("stop str min_tokens=6", dict(stop=[mid], extra_body={"min_tokens": 6}), dict(stop=[mid], min_tokens=6)),
    ]:
        s.form("stop", f"greedy {name}", lambda kw=kw, rk=rk: check(
            dict(temperature=0, max_tokens=16, **kw), dict(temperature=0, max_tokens=16, **rk)))
    s.form("usage", "two prompts: prompt_tokens summed", lambda: differ(
        c.completions.create(model="tiny", prompt=["ab", "cde"], temperature=0, max_tokens=2).usage.prompt_tokens,
        len(s.ids("ab")) + len(s.ids("cde")), "prompt_tokens"))
    s.form("usage", "n=3: prompt_tokens once, completion summed", lambda: (lambda r: first(
        differ(r.usage.prompt_tokens, len(pid), "prompt_tokens"),
        differ(r.usage.completion_tokens, 9, "completion_tokens")))(
        c.completions.create(model="tiny", prompt=P, n=3, max_tokens=3, seed=1, extra_body={"ignore_eos": True})))

    # max_tokens None
    s.form("length", "max_tokens=None is 16", lambda: check(dict(temperature=0, max_tokens=None),
                                                            dict(temperature=0, max_tokens=16)))

    # logprobs
    def logprobs_form(k, echo=False, kwargs=None):
        kwargs = kwargs or {}
        r = c.completions.create(model="tiny", prompt=P, temperature=0, max_tokens=4, logprobs=k, echo=echo, **kwargs)
        toks, text, _, _, rows = ref.run(pid, temperature=0, max_tokens=4, **{k2: v for k2, v in kwargs.items()
                                                                               if k2 != "extra_body"})
        lp = r.choices[0].logprobs
        gen_lp = lp.token_logprobs[len(pid):] if echo else lp.token_logprobs
        want = [row[t] for row, t in zip(rows, toks)]
        probs = [None if close(gen_lp, want) else f"token_logprobs {gen_lp} want {want}"]
        if echo:
            prompt_rows = ref.all_logits(pid, None)
            want_p = [None] + [float(torch.log_softmax(torch.tensor(prompt_rows[i - 1], dtype=F32), -1)[pid[i]])
                               for i in range(1, len(pid))]
            got_p = lp.token_logprobs[:len(pid)]
            probs.append(None if got_p[0] is None and close(got_p[1:], want_p[1:]) else
                         f"echo prompt logprobs {got_p} want {want_p}")
            probs.append(differ(r.choices[0].text, P + text, "echo text"))
        tops = lp.top_logprobs[len(pid):] if echo else lp.top_logprobs
        for row, top, t in zip(rows, tops, toks):  # vLLM's: the chosen token and the k likeliest (k + 1 at most)
            order = list(dict.fromkeys([t] + np.argsort(-row, kind="stable")[:k].tolist()))
            probs.append(None if close(sorted(top.values(), reverse=True), sorted(np.maximum(row[order], -9999.0),
                                                                                  reverse=True)) else f"top {top}")
        return first(*probs)

    s.form("logprobs", "logprobs=3", lambda: logprobs_form(3))
    s.form("logprobs", "logprobs=0", lambda: logprobs_form(0))
    s.form("logprobs", "echo logprobs=2", lambda: logprobs_form(2, echo=True))
    s.form("logprobs", "logprobs raw under penalties",
           lambda: logprobs_form(2, kwargs=dict(presence_penalty=1.0, logit_bias={"97": 5})))

    # prompt as ids / list of prompts
    s.form("prompt", "prompt token ids", lambda: check(dict(temperature=0, max_tokens=5), dict(temperature=0,
                                                       max_tokens=5), prompt=pid, prompt_ids=pid))
    s.form("prompt", "prompt list of id lists", lambda: first(*[
        differ(ch.text, ref.run(p, temperature=0, max_tokens=4)[1], f"prompt {i}") for i, (p, ch) in enumerate(zip(
            [pid, pid[:3]], c.completions.create(model="tiny", prompt=[pid, pid[:3]], temperature=0,
                                                 max_tokens=4).choices))]))
    s.form("prompt", "echo of token ids prompt", lambda: differ(
        c.completions.create(model="tiny", prompt=pid, temperature=0, max_tokens=3, echo=True).choices[0].text,
        s.tok.decode(pid, skip_special_tokens=False) + ref.run(pid, temperature=0, max_tokens=3)[1], "echo text"))
    # adapter by name
    s.form("lora", "model='a' vs base", lambda: first(
        check(dict(temperature=0, max_tokens=6), dict(temperature=0, max_tokens=6), model="a", adapter="a"),
        check(dict(temperature=0, max_tokens=6), dict(temperature=0, max_tokens=6), model="b", adapter="b")))
    # stream
    def stream_form():
        chunks = list(c.completions.create(model="tiny", prompt=P, seed=3, max_tokens=6, n=2, stream=True,
                                           stream_options={"include_usage": True}))
        usage = chunks[-1].usage
        texts = ["", ""]
        reasons = [None, None]
        for ch in chunks[:-1]:
            for choice in ch.choices:
                texts[choice.index] += choice.text
                reasons[choice.index] = choice.finish_reason or reasons[choice.index]
        want = [ref.run(pid, seed=3 + i, max_tokens=6) for i in range(2)]
        return first(*[differ(texts[i], want[i][1], f"stream text {i}") for i in range(2)],
                     *[differ(reasons[i], want[i][2], f"stream reason {i}") for i in range(2)],
                     differ(usage.completion_tokens, sum(len(w[0]) for w in want), "completion_tokens"),
                     differ(usage.prompt_tokens, len(pid), "prompt_tokens"))
    s.form("stream", "stream n=2 include_usage", stream_form)

    # response_format on completions (vLLM's extra: response_format on completions too)
    def json_object_logprobs(chat):
        from minilora.serve.structured import Grammars, constraint_of
        del constraint_of
        kwargs = dict(temperature=0, max_tokens=6, logprobs=True, top_logprobs=2) if chat else \
            dict(temperature=0, max_tokens=6, logprobs=2)
        extra = {"response_format": {"type": "json_object"}}
        if chat:
            r = c.chat.completions.create(model="tiny", messages=MESSAGES, response_format={"type": "json_object"},
                                          **kwargs)
            got = [e.logprob for e in r.choices[0].logprobs.content]
            prompt = s.chat_ids(MESSAGES)
        else:
            r = c.completions.create(model="tiny", prompt=P, extra_body=extra, **kwargs)
            got = r.choices[0].logprobs.token_logprobs
            prompt = pid
        grammar = s.engine_grammar({"type": "json_object"})
        taken = []

        def mask(out):
            for t in out[len(taken):]:
                grammar.accept(t)
                taken.append(t)
            return grammar.allowed()[:260]
        toks, text, _, _, rows = ref.run(prompt, temperature=0, max_tokens=6, grammar_mask=mask)
        want = [row[t] for row, t in zip(rows, toks)]
        return None if close(got, want, 1e-5) else f"logprobs {got} want {want} (grammar-masked)"
    def forced_top(chat):
        # a grammar that leaves one token: the others' logprobs are -inf, shown as vLLM's -9999.0
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
            "k": {"type": "integer"}}, "required": ["k"], "additionalProperties": False}}}
        if chat:
            r = c.chat.completions.create(model="tiny", messages=MESSAGES, response_format=fmt, temperature=0,
                                          max_tokens=3, logprobs=True, top_logprobs=3)
            first_step = [t.logprob for t in r.choices[0].logprobs.content[0].top_logprobs]
        else:
            r = c.completions.create(model="tiny", prompt=P, extra_body={"response_format": fmt}, temperature=0,
                                     max_tokens=3, logprobs=3)
            first_step = sorted(r.choices[0].logprobs.top_logprobs[0].values(), reverse=True)
        return differ(first_step, [0.0, -9999.0, -9999.0], "first step's top logprobs")
    s.form("structured", "completion json_schema forced token top logprobs", lambda: forced_top(False))
    s.form("structured", "chat json_schema forced token top logprobs", lambda: forced_top(True))

    def stream_logprobs():
        chunks = list(c.completions.create(model="tiny", prompt=P, temperature=0, max_tokens=5, logprobs=2,
                                           stream=True))
        got = [v for ch in chunks for v in (ch.choices[0].logprobs.token_logprobs if ch.choices[0].logprobs else [])]
        toks, _, _, _, rows = ref.run(pid, temperature=0, max_tokens=5)
        want = [row[t] for row, t in zip(rows, toks)]
        return None if close(got, want) else f"stream logprobs {got} want {want}"
    s.form("logprobs", "stream logprobs=2", stream_logprobs)

    def continuous_usage():
        chunks = list(c.completions.create(model="tiny", prompt=P, seed=2, max_tokens=4, stream=True,
                                           extra_body={"ignore_eos": True},
                                           stream_options={"include_usage": True, "continuous_usage_stats": True}))
        counts = [ch.usage.completion_tokens for ch in chunks[:-1]]
        return first(differ(counts, list(range(1, len(counts) + 1)), "completion_tokens so far"),
                     differ({ch.usage.prompt_tokens for ch in chunks}, {len(pid)}, "prompt_tokens"))
    s.form("stream", "continuous_usage_stats", continuous_usage)

    def concurrent():
        import concurrent.futures
        jobs = [("tiny", None, "The cat", 31), ("a", "a", "Dan lives", 32), ("b", "b", "x", 33), ("a", "a", "qq", 34)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda j: c.completions.create(model=j[0], prompt=j[2], seed=j[3], max_tokens=8,
                                                               presence_penalty=0.5).choices[0].text, jobs))
        return first(*[differ(g, ref.run(s.ids(j[2]), j[1], seed=j[3], max_tokens=8, presence_penalty=0.5)[1],
                              f"{j}") for g, j in zip(got, jobs)])
    def prompts_times_n():
        r = c.completions.create(model="tiny", prompt=["ab", "cd"], n=2, seed=40, max_tokens=4, echo=True)
        want = [p + ref.run(s.ids(p), seed=40 + j, max_tokens=4)[1] for p in ("ab", "cd") for j in range(2)]
        return first(differ([ch.index for ch in r.choices], [0, 1, 2, 3], "indices"),
                     differ([ch.text for ch in r.choices], want, "texts (prompt i, choice j: index i * n + j)"))
    s.form("n", "two prompts x n=2 echo: index i*n+j, seed+j", prompts_times_n)
    s.form("n", "four seeded requests at once (mixed adapters): each as alone", concurrent)

    def structured_n():
        r = c.completions.create(model="tiny", prompt=P, n=2, seed=8, max_tokens=8,
                                 extra_body={"response_format": {"type": "json_object"}})
        probs = []
        for i in range(2):
            grammar, taken = s.engine_grammar({"type": "json_object"}), []

            def mask(out, grammar=grammar, taken=taken):
                for t in out[len(taken):]:
                    grammar.accept(t)
                    taken.append(t)
                return grammar.allowed()[:260]
            probs.append(differ(r.choices[i].text, ref.run(pid, seed=8 + i, max_tokens=8, grammar_mask=mask)[1],
                                f"choice {i}"))
        return first(*probs)
    s.form("structured", "n=2 seeded json_object", structured_n)

    def echo_adapter():
        r = c.completions.create(model="a", prompt=P, max_tokens=1, temperature=0, echo=True, logprobs=1)
        rows = ref.all_logits(pid, "a")
        want = [float(torch.log_softmax(torch.tensor(rows[i - 1], dtype=F32), -1)[pid[i]]) for i in range(1, len(pid))]
        got = r.choices[0].logprobs.token_logprobs[1:len(pid)]
        return None if close(got, want) else f"{got} want {want}"
    s.form("logprobs", "echo logprobs on adapter a", echo_adapter)

    def bad_words():
        text = ref.run(pid, temperature=0, max_tokens=8)[1]
        word = text[2:4] if len(text) >= 4 and text[2:4].strip() == text[2:4] else "ab"
        r = c.completions.create(model="tiny", prompt=P, temperature=0, max_tokens=8, extra_body={"bad_words": [word]})
        # vLLM's: the word's last token banned where the output ends with its other tokens (one token: always)
        wid = s.ids(word, special=False)
        out = []
        for _ in range(8):
            x = torch.tensor(ref.logits(pid + out, None), dtype=F32)
            x[TEXT_VOCAB:] = -float("inf")
            if out[len(out) - len(wid) + 1:] == wid[:-1] or len(wid) == 1:
                x[wid[-1]] = -float("inf")
            out.append(int(torch.argmax(x)))
            if out[-1] == EOS:
                break
        return differ(r.choices[0].text, ref.text(out), f"bad_words {word!r}")
    s.form("sampling-greedy", "bad_words", bad_words)

    def prompt_logprobs():
        r = c.completions.create(model="tiny", prompt=P, max_tokens=1, temperature=0, extra_body={"prompt_logprobs": 2})
        info = r.choices[0].prompt_logprobs
        rows = ref.all_logits(pid, None)
        probs = [differ(info[0], None, "first")]
        for i in range(1, len(pid)):
            lp = torch.log_softmax(torch.tensor(rows[i - 1], dtype=F32), -1).double().numpy()
            entry = info[i]
            own = entry[str(pid[i])]
            rank = int((lp >= lp[pid[i]]).sum())
            top = np.argsort(-lp, kind="stable")[:2]
            probs += [None if close(own["logprob"], lp[pid[i]]) else f"logprob {i}", differ(own["rank"], rank, "rank"),
                      differ(sorted(int(k) for k in entry), sorted({pid[i], *top.tolist()}), "ids")]
        return first(*probs)
    s.form("logprobs", "prompt_logprobs=2", prompt_logprobs)

    def stream_stop(include):
        extra = {"include_stop_str_in_output": include}
        chunks = list(c.completions.create(model="tiny", prompt=P, temperature=0, max_tokens=16, stop=[mid],
                                           stream=True, extra_body=extra))
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        want = ref.run(pid, temperature=0, max_tokens=16, stop=[mid], include_stop_str_in_output=include)
        reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        return first(differ(text, want[1], "text"), differ(reasons, [want[2]], "finish"))
    s.form("stream", "stream stop", lambda: stream_stop(False))
    s.form("stream", "stream stop include_stop_str_in_output", lambda: stream_stop(True))

    def stream_echo_logprobs():
        chunks = list(c.completions.create(model="tiny", prompt=P, temperature=0, max_tokens=3, echo=True, logprobs=1,
                                           stream=True))
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        lps = [v for ch in chunks if ch.choices and ch.choices[0].logprobs for v in ch.choices[0].logprobs.token_logprobs]
        whole = c.completions.create(model="tiny", prompt=P, temperature=0, max_tokens=3, echo=True, logprobs=1)
        return first(differ(text, whole.choices[0].text, "text"),
                     differ(lps, whole.choices[0].logprobs.token_logprobs, "logprobs"))
    s.form("stream", "stream echo logprobs == whole answer", stream_echo_logprobs)

    def stream_n_logprobs():
        chunks = list(c.completions.create(model="tiny", prompt=P, seed=6, n=2, max_tokens=4, logprobs=1, stream=True))
        per = {0: [], 1: []}
        for ch in chunks:
            for choice in ch.choices:
                if choice.logprobs:
                    per[choice.index] += choice.logprobs.token_logprobs
        probs = []
        for i in range(2):
            toks, _, _, _, rows = ref.run(pid, seed=6 + i, max_tokens=4)
            want = [row[t] for row, t in zip(rows, toks)]
            probs.append(None if close(per[i], want) else f"choice {i} {per[i]} want {want}")
        return first(*probs)
    s.form("stream", "stream n=2 seeded logprobs", stream_n_logprobs)

    s.form("structured", "completion json_object logprobs", lambda: json_object_logprobs(False))
    s.form("structured", "chat json_object logprobs", lambda: json_object_logprobs(True))


def chat_forms(s):
    c, ref = s.client, s.ref
    ids = s.chat_ids(MESSAGES)

    def check(kwargs, ref_kwargs, seeds=None, n=1, model="tiny", adapter=None):
        r = c.chat.completions.create(model=model, messages=MESSAGES, **kwargs)
        probs = []
        total = 0
        for i in range(n):
            toks, text, reason, stop_reason, _ = ref.run(ids, adapter, seed=None if seeds is None else seeds[i],
                                                         **ref_kwargs)
            total += len(toks)
            ch = r.choices[i]
            probs += [differ(ch.message.content, text, f"choice {i} text"),
                      differ(ch.finish_reason, reason, f"choice {i} reason"),
                      differ(getattr(ch, "stop_reason", None), stop_reason, f"choice {i} stop_reason")]
        probs += [differ(r.usage.prompt_tokens, len(ids), "prompt_tokens"),
                  differ(r.usage.completion_tokens, total, "completion_tokens")]
        return first(*probs)

    s.form("greedy", "chat temperature=0", lambda: check(dict(temperature=0, max_completion_tokens=8),
                                                         dict(temperature=0, max_tokens=8)))
    s.form("seed", "chat n=2 seed=21", lambda: check(dict(seed=21, n=2, max_tokens=6), dict(max_tokens=6),
                                                     seeds=[21, 22], n=2))
    s.form("length", "chat max_tokens None: rest of context",
           lambda: check(dict(temperature=0, extra_body={"ignore_eos": True}),
                         dict(temperature=0, max_tokens=64 - len(ids), ignore_eos=True)))
    for name, kw, rk in [
            ("repetition_penalty=1.3 top_k=7", dict(extra_body={"repetition_penalty": 1.3, "top_k": 7}),
             dict(repetition_penalty=1.3, top_k=7)),
            ("presence/frequency", dict(presence_penalty=0.7, frequency_penalty=0.4),
             dict(presence_penalty=0.7, frequency_penalty=0.4)),
            ("logit_bias", dict(logit_bias={"32": 3.5, "101": -4}), dict(logit_bias={32: 3.5, 101: -4})),
    ]:
        s.form("sampling", f"chat seeded {name}", lambda kw=kw, rk=rk: check(
            dict(seed=2, max_tokens=8, **kw), dict(max_tokens=8, **rk), seeds=[2]))

    def chat_logprobs():
        r = c.chat.completions.create(model="a", messages=MESSAGES, temperature=0, max_tokens=4, logprobs=True,
                                      top_logprobs=2, frequency_penalty=1.0)
        toks, _, _, _, rows = ref.run(ids, "a", temperature=0, max_tokens=4, frequency_penalty=1.0)
        got = [e.logprob for e in r.choices[0].logprobs.content]
        return None if close(got, [row[t] for row, t in zip(rows, toks)]) else f"chat logprobs {got}"
    s.form("logprobs", "chat logprobs adapter a", chat_logprobs)

    def chat_stream():
        chunks = list(c.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=5,
                                                stream=True, stream_options={"include_usage": True}))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        toks, want, reason, _, _ = ref.run(ids, temperature=0, max_tokens=5)
        last = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        return first(differ(text, want, "text"), differ(last, [reason], "finish"),
                     differ(chunks[-1].usage.completion_tokens, len(toks), "usage"))
    s.form("stream", "chat stream include_usage", chat_stream)
    s.form("length", "chat max_completion_tokens=3 beside max_tokens=7 (the newer name wins)",
           lambda: check(dict(temperature=0, max_completion_tokens=3, max_tokens=7, extra_body={"ignore_eos": True}),
                         dict(temperature=0, max_tokens=3, ignore_eos=True)))
    s.form("structured", "chat response_format text: unconstrained",
           lambda: check(dict(temperature=0, max_tokens=5, response_format={"type": "text"}),
                         dict(temperature=0, max_tokens=5)))

    def no_usage():
        chunks = list(c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2, seed=1, stream=True,
                                                stream_options={"include_usage": False}))
        return first(differ([ch.usage for ch in chunks], [None] * len(chunks), "usage"),
                     differ(all(ch.choices for ch in chunks), True, "every chunk has a choice"))
    s.form("stream", "chat include_usage false", no_usage)

    def top0():
        r = c.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=3, logprobs=True,
                                      top_logprobs=0)
        return differ([e.top_logprobs for e in r.choices[0].logprobs.content], [[]] * 3, "top_logprobs")
    s.form("logprobs", "chat top_logprobs=0", top0)

    def chat_seeded_sampled_top():
        # a sampled token that is not the likeliest comes first in a chat's top_logprobs (vLLM's dict order)
        r = c.chat.completions.create(model="tiny", messages=MESSAGES, seed=3, temperature=1.5, max_tokens=6,
                                      logprobs=True, top_logprobs=2)
        toks, _, _, _, rows = ref.run(ids, seed=3, temperature=1.5, max_tokens=6)
        probs = []
        for e, t, row in zip(r.choices[0].logprobs.content, toks, rows):
            order = list(dict.fromkeys([t] + np.argsort(-row, kind="stable")[:2].tolist()))[:2]
            probs.append(None if close([x.logprob for x in e.top_logprobs], row[order]) else
                         f"{[x.logprob for x in e.top_logprobs]} want {row[order]}")
        return first(*probs)
    s.form("logprobs", "chat sampled top_logprobs order", chat_seeded_sampled_top)


def error_forms(s):
    c = s.client
    cases = [
        ("temperature=-1", dict(temperature=-1), 400),
        ("top_p=0", dict(top_p=0), 400),
        ("n=2 greedy", dict(n=2, temperature=0), 400),
        ("logprobs=21", dict(logprobs=21), 400),
        ("unknown model", dict(model="zzz"), 404),
        ("logit_bias out of vocab", dict(logit_bias={"999": 1}), 400),
        ("max_tokens=0", dict(max_tokens=0), 400),
        ("stop_token_ids out of vocab", dict(extra_body={"stop_token_ids": [1000]}), 400),
        ("min_tokens > max_tokens", dict(max_tokens=2, extra_body={"min_tokens": 3}), 400),
        ("presence_penalty=3", dict(presence_penalty=3), 400),
        ("top_k=-2", dict(extra_body={"top_k": -2}), 400),
        ("min_p=1.5", dict(extra_body={"min_p": 1.5}), 400),
        ("repetition_penalty=0", dict(extra_body={"repetition_penalty": 0}), 400),
        ("n=0", dict(n=0), 400),
        ("seed='x'", dict(extra_body={"seed": "x"}), 400),
        ("max_tokens past the context", dict(max_tokens=100), 400),
        ("stream_options without stream", dict(stream_options={"include_usage": True}), 400),
        ("logit_bias key 'abc'", dict(logit_bias={"abc": 1}), 400),
        ("allowed_token_ids []", dict(extra_body={"allowed_token_ids": []}), 400),
        ("response_format xml", dict(extra_body={"response_format": {"type": "xml"}}), 400),
        ("prompt_logprobs=21", dict(extra_body={"prompt_logprobs": 21}), 400),
    ]
    for name, kw, status in cases:
        def one(kw=kw, status=status):
            body = {"model": "tiny", "prompt": "hi", **kw}
            try:
                c.completions.create(**body)
            except openai.APIStatusError as exc:
                err = exc.body if isinstance(exc.body, dict) else {}
                return first(differ(exc.status_code, status, "status"),
                             differ(sorted(err), ["code", "message", "param", "type"], "error keys"))
            return "accepted"
        s.form("errors", name, one)


def transformers_greedy(s, pid):
    import transformers
    import peft
    with tempfile.TemporaryDirectory() as d:
        from test_serve import base_model
        base_model().save_pretrained(d + "/base")
        s.ref.model.save_pretrained(d + "/adapters")
        hf = transformers.LlamaForCausalLM.from_pretrained(d + "/base", dtype=torch.float64)
        out = {}
        import os
        adapter_dir = next(os.path.join(root, "") for root, _, files in os.walk(d + "/adapters")
                           if "adapter_config.json" in files and root.rstrip("/").endswith("a"))
        for name in ("tiny", "a"):
            model = hf if name == "tiny" else peft.PeftModel.from_pretrained(hf, adapter_dir, adapter_name="a")
            g = model.generate(torch.tensor([pid]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                               suppress_tokens=[259], pad_token_id=0)
            out[name] = g[0, len(pid):].tolist()
    return first(*[differ(s.client.completions.create(model=name, prompt=pid, temperature=0, max_tokens=6, extra_body={
        "ignore_eos": True, "return_token_ids": True}).choices[0].token_ids, out[name], f"{name} vs transformers/peft")
        for name in ("tiny", "a")])


def main():
    s = Sweep()
    from minilora.serve.structured import constraint_of  # noqa: F401

    def engine_grammar(fmt):
        from minilora.serve import structured
        app_grammars = structured.Grammars(s.tok, 260, TEXT_VOCAB)
        constraint = structured.constraint_of({"response_format": fmt}, chat=None)
        return app_grammars.compile(constraint)
    s.engine_grammar = engine_grammar
    completion_forms(s)
    chat_forms(s)
    error_forms(s)
    s.http.__exit__(None, None, None)
    by = {}
    for cls, _, problem in s.results:
        by.setdefault(cls, [0, 0])
        by[cls][1] += 1
        by[cls][0] += bool(problem)
    for cls, (bad, total) in by.items():
        print(f"  {cls:16s} {bad} of {total} differ")
    bad = sum(1 for r in s.results if r[2])
    print(f"{bad} of {len(s.results)} forms differ")


if __name__ == "__main__":
    main()
