"""Benchmark: one full fine-tuning training step, minilora vs transformers on torch CPU.

One step = forward with labels (loss), backward, AdamW update, zero_grad -- for every parameter
(full fine-tuning). Both models are the same Llama (minilora's weights are copied into transformers'
model), float32, the same batch, the same thread count. The two are timed alternately (interleaved),
so a noisy machine slows both alike, and the median of the per-pair ratios is printed.

    python benchmarks/train_step.py                 # d=256, 4 layers, seq 128, batch 8, 2 threads
    python benchmarks/train_step.py --repeats 15 --profile

``ratio = minilora time / transformers time``: below 1.0, minilora's step is the faster one. On a
shared machine, other processes disturb single steps: compare runs made at a low load average.
``--profile`` prints minilora's per-op table (``ml.profile()``) and the top cProfile entries.
"""
import argparse
import os
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=688)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9, help="timed steps per framework (after 2 warm-up)")
    p.add_argument("--pause", type=float, default=0.25,
                   help="idle seconds before each timed step (see timed())")
    p.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa | eager)")
    p.add_argument("--profile", action="store_true", help="profile minilora's step and print the tables")
    # Imported by another benchmark (lora_step.py): share its command line, ignore its own options.
    return p.parse_args() if __name__ == "__main__" else p.parse_known_args()[0]


ARGS = parse_args()
# minilora reads its thread count when imported (minilora/parallel.py), to match torch.set_num_threads.
os.environ["MINILORA_NUM_THREADS"] = str(ARGS.threads)

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import minilora as ml  # noqa: E402
ml.parallel.keep_freed_memory()  # as `minilora train` does: malloc keeps freed pages (minilora/parallel.py)
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.optim import AdamW  # noqa: E402


def build_minilora(config):
    ml.manual_seed(0)
    model = LlamaForCausalLM(config, dtype=ml.float32)
    return model, AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)


def build_transformers(config, minilora_model):
    import torch
    import transformers
    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.to_dict().items()
                                            if k not in ("architectures", "model_type")})
    model = transformers.LlamaForCausalLM(hf_config).to(torch.float32)
    model.config._attn_implementation = ARGS.attn
    state = {k: torch.from_numpy(v.numpy(force=True).copy()) for k, v in minilora_model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)


def minilora_step(model, opt, ids):
    loss = model(ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def transformers_step(model, opt, ids):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def timed(fn, *args, pause=None):
    """(wall seconds, CPU seconds of all this process's threads) of one call.

    It first idles for ``pause`` seconds (default ``--pause``): after a parallel region, BLAS and OpenMP
    worker threads spin for a while (OpenBLAS up to ~0.1 s) before they sleep, and spinning workers of
    the framework that just ran would steal the cores from the one being timed. ``pause=0`` times a
    step that follows the same framework's previous one, as in a training loop.
    """
    time.sleep(ARGS.pause if pause is None else pause)
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def profile_minilora(model, opt, ids):
    import cProfile
    import pstats
    with ml.profile() as prof:
        minilora_step(model, opt, ids)
    print(f"\nminilora ops (one step, {prof.total_seconds * 1e3:.1f} ms):")
    print(prof.table(limit=25))
    profiler = cProfile.Profile()
    profiler.runcall(minilora_step, model, opt, ids)
    print("\ncProfile, top 25 by total time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main():
    import torch
    torch.set_num_threads(ARGS.threads)
    config = LlamaConfig(vocab_size=ARGS.vocab, hidden_size=ARGS.hidden,
                         intermediate_size=ARGS.intermediate, num_hidden_layers=ARGS.layers,
                         num_attention_heads=ARGS.heads, max_position_embeddings=max(ARGS.seq, 2048))
    ids = np.random.default_rng(0).integers(0, ARGS.vocab, size=(ARGS.batch, ARGS.seq))
    ml_model, ml_opt = build_minilora(config)
    hf_model, hf_opt = build_transformers(config, ml_model)
    hf_ids = torch.from_numpy(ids)
    first = (minilora_step(ml_model, ml_opt, ids), transformers_step(hf_model, hf_opt, hf_ids))
    print(f"config: d={ARGS.hidden}, layers={ARGS.layers}, heads={ARGS.heads}, "
          f"intermediate={ARGS.intermediate}, vocab={ARGS.vocab}, seq={ARGS.seq}, batch={ARGS.batch}, "
          f"float32, {ARGS.threads} threads, transformers attention={ARGS.attn}, "
          f"{ml_model.num_parameters():,} parameters")
    print(f"first-step loss: minilora {first[0]:.6f}, transformers {first[1]:.6f}")
    minilora_step(ml_model, ml_opt, ids)  # second warm-up step (optimizer state now allocated)
    transformers_step(hf_model, hf_opt, hf_ids)

    ml_times, hf_times = [], []
    for i in range(ARGS.repeats):
        # Alternate which goes first, so neither always runs right after the other.
        if i % 2 == 0:
            ml_times.append(timed(minilora_step, ml_model, ml_opt, ids))
            hf_times.append(timed(transformers_step, hf_model, hf_opt, hf_ids))
        else:
            hf_times.append(timed(transformers_step, hf_model, hf_opt, hf_ids))
            ml_times.append(timed(minilora_step, ml_model, ml_opt, ids))
    median = statistics.median
    for name, times in (("minilora", ml_times), ("transformers", hf_times)):
        wall = [w for w, _ in times]
        print(f"{name:<12} step: median {median(wall) * 1e3:7.1f} ms wall (min {min(wall) * 1e3:.1f}), "
              f"{median([c for _, c in times]) * 1e3:7.1f} ms CPU")
    ratios = [m[0] / h[0] for m, h in zip(ml_times, hf_times)]
    print(f"median ratio minilora / transformers: {median(ratios):.3f} "
          f"(per-pair ratios {', '.join(f'{r:.2f}' for r in ratios)})")
    fastest = min(w for w, _ in ml_times) / min(w for w, _ in hf_times)
    print(f"ratio of the fastest steps: {fastest:.3f} (the least disturbed by other load); "
          f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if ARGS.profile:
        profile_minilora(ml_model, ml_opt, ids)


if __name__ == "__main__":
    sys.exit(main())
