"""Benchmark: multi-adapter serving over HTTP on loopback -- mixed batches vs one request at a time
(the lesson's swap-per-request server) vs a merged single adapter (the ceiling: no LoRA work at all).

The shipped base model (d=128, 4 layers) with ``--adapters`` random LoRA adapters (r=8 on q/k/v/o) is
served by ``minilora serve``'s own stack (Engine + Starlette + uvicorn) on 127.0.0.1, on a free port.
``--clients`` client threads each send ``--requests`` completions (greedy, ``--max-tokens`` tokens, EOS
ignored so every request decodes the same number of tokens), spread round-robin over 1, 4 and 16
adapters; every request has a timeout, and the run is bounded in count. Three servers:

    mixed    continuous batching, up to --batch requests for DIFFERENT adapters in one forward (BGMV)
    swap     the same server with batch size 1: one request at a time, what the lesson's server that
             swaps a global adapter per request can do (the swap itself, set_adapter, costs nothing)
    merged   one adapter merged into the base weights, batched: what a server of ONE fine-tune gets

Printed: a markdown table of generated tokens/s and latency percentiles (p50/p90/p99 of whole
requests), and with --plot FILE a bar chart of tokens/s. Run it as the other CPU benchmarks:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/serve.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/serve.py --clients 16 --requests 4 --plot serve.png
"""
import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minilora as ml  # noqa: E402
from minilora import models, tokenizer  # noqa: E402
from minilora.lora import LoraConfig, get_peft_model  # noqa: E402
from minilora.serve import Engine  # noqa: E402
from minilora.serve.cli import make_server, serve_in_thread  # noqa: E402

PROMPTS = ["Q: Where does Dan Vend live?\nA:", "The capital of", "Once upon a time", "LoRA adapters are"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n")[-1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapters", type=int, nargs="+", default=[1, 4, 16], help="adapter counts to spread requests over")
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    p.add_argument("--requests", type=int, default=2, help="requests per client (default 2)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per request (default 16)")
    p.add_argument("--batch", type=int, default=8, help="max batch size of the batching servers (default 8)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take (default 120)")
    p.add_argument("--device", default="cpu", help="cpu, emu or cuda (default cpu)")
    p.add_argument("--plot", default=None, metavar="FILE", help="also write a bar chart of tokens/s (matplotlib)")
    return p.parse_args()


def model_with_adapters(n, device):
    """The shipped base with ``n`` random adapters a0..a{n-1} (B not zero, so each changes the output)."""
    rng = np.random.default_rng(0)
    config = lambda: LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                init_lora_weights=False)
    model = get_peft_model(models.load_base(device=device), config(), adapter_name="a0")
    for i in range(1, n):
        model.add_adapter(f"a{i}", config())
    with ml.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * rng.standard_normal(p.shape))
    return model.eval()


def run_clients(url, names, args):
    """Every client's requests (bounded count, each with a timeout): (latencies, tokens, seconds, errors)."""
    import httpx
    latencies, tokens, errors = [], [], []
    lock = threading.Lock()

    def client(c):
        with httpx.Client(timeout=args.timeout) as http:
            for i in range(args.requests):
                k = c * args.requests + i
                body = {"model": names[k % len(names)], "prompt": PROMPTS[k % len(PROMPTS)],
                        "max_tokens": args.max_tokens, "temperature": 0}
                start = time.perf_counter()
                try:
                    r = http.post(f"{url}/completions", json=body)
                    r.raise_for_status()
                    n = r.json()["usage"]["completion_tokens"]
                except Exception as exc:  # counted and reported, never retried
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
                    tokens.append(n)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.timeout * args.requests + 10)
    return latencies, tokens, time.perf_counter() - start, errors


def serve_and_measure(model, names, base_name, batch, args):
    engine = Engine(model, tokenizer.ByteTokenizer(), max_batch_size=batch, max_queue=args.clients * args.requests)
    engine.eos = set()  # every request decodes exactly max_tokens tokens: equal work in every mode
    server = make_server(engine, base_name, "127.0.0.1", 0, log_level="warning")
    thread = serve_in_thread(server, timeout=30)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        result = run_clients(f"http://127.0.0.1:{port}/v1", names, args)
        widths = [len(rows) for _, rows in engine.steps]
        return result, (float(np.mean(widths)) if widths else 0.0)
    finally:
        server.should_exit = True
        thread.join(30)


def row(label, adapters, result, mean_batch):
    latencies, tokens, seconds, errors = result
    lat = np.array(latencies) if latencies else np.array([np.nan])
    p50, p90, p99 = (np.percentile(lat, q) for q in (50, 90, 99))
    rate = sum(tokens) / seconds
    print(f"| {label:7s} | {adapters:8d} | {sum(tokens):6d} | {rate:8.1f} | {p50:6.2f} | {p90:6.2f} | {p99:6.2f} | "
          f"{mean_batch:5.1f} | {len(errors):3d} |", flush=True)
    for e in errors[:3]:
        print(f"  error: {e}", file=sys.stderr)
    return rate


def main():
    args = parse_args()
    print(f"clients={args.clients} x {args.requests} requests, {args.max_tokens} tokens each, batch <= {args.batch}, "
          f"device={args.device}, base d=128 x 4 layers, adapters r=8 on q/k/v/o\n")
    print("| server  | adapters | tokens | tokens/s | p50 s  | p90 s  | p99 s  | batch | err |")
    print("|---------|---------:|-------:|---------:|-------:|-------:|-------:|------:|----:|")
    rates = {}
    for n in args.adapters:
        model = model_with_adapters(n, args.device)
        names = [f"a{i}" for i in range(n)]
        result, width = serve_and_measure(model, names, "base", args.batch, args)
        rates[("mixed", n)] = row("mixed", n, result, width)
        result, width = serve_and_measure(model, names, "base", 1, args)
        rates[("swap", n)] = row("swap", n, result, width)
    merged = model_with_adapters(1, args.device).merge_and_unload()
    result, width = serve_and_measure(merged, ["base"], "base", args.batch, args)
    rates[("merged", 1)] = row("merged", 1, result, width)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        labels = [f"{mode}\n{n} adapter{'s' * (n > 1)}" for mode, n in rates]
        fig, ax = plt.subplots(figsize=(1.2 * len(rates) + 2, 3.5))
        ax.bar(labels, list(rates.values()), color=["C0" if m == "mixed" else "C1" if m == "swap" else "C2"
                                                    for m, _ in rates])
        ax.set_ylabel("generated tokens / s")
        ax.set_title(f"minilora serve, {args.clients} clients, {args.device}")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
