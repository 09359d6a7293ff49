"""GPU benchmark: one LoRA training step of a ~1B-parameter Llama, minilora vs transformers + PEFT on the
same GPU, in the same run, plus a full fine-tuning step (issue 16, "End to end").

One step = forward with labels (loss), backward, AdamW update of the trainable parameters, zero_grad.
LoRA: r=16, lora_alpha=32, every Linear but the head ("all-linear"), no dropout. The model is built from a
config (TinyLlama-1.1B's shape by default: d=2048, 22 layers, 32 heads, 4 KV heads, intermediate 5632,
vocab 32000) with random weights -- nothing is downloaded. minilora's and transformers' models hold the
same base weights and the same LoRA A (B starts at zero in both), so the first-step losses agree.

Rows (fp32 = fp32: TF32 off in torch, CUPY_TF32=0 for CuPy):
    minilora LoRA fp32 | PEFT LoRA fp32 | PEFT LoRA bf16 and minilora LoRA bf16 (base and activations bf16,
    adapters and AdamW state fp32, as PEFT keeps them; minilora's LoRA layers run lora_bf16.cu's tensor-core
    kernels) | minilora full fine-tuning fp32. minilora's bf16 row needs ml_dtypes and, on the GPU, CuPy >= 14
    (older CuPy has no bfloat16): without them the row says so instead of a number.
Timing: the steps run round-robin, the order rotating each round; each step is wall-clock time with the
device synchronised before and after (a step's host work counts -- it is part of a training step);
median and min. ``--profile`` prints where minilora's LoRA step spends its time (minilora.profile's op
table: kernels vs CuPy elementwise ops; cProfile: Python).

    python benchmarks/gpu_train_step.py                      # on the GPU, ~1.1B parameters
    python benchmarks/gpu_train_step.py --device cpu --tiny  # a dry run of this script on the CPU (tested)
"""
import argparse
import copy
import os
import statistics
import sys
import time

os.environ.setdefault("CUPY_TF32", "0")  # before anything imports CuPy

import numpy as np  # noqa: E402

import minilora as ml  # noqa: E402
from minilora.lora import LoraConfig, get_peft_model  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.optim import AdamW  # noqa: E402

ONE_B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
             num_attention_heads=32, num_key_value_heads=4)
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where both frameworks run")
    p.add_argument("--tiny", action="store_true", help="a 2-layer d=64 model, seq 16, batch 2: a dry run")
    p.add_argument("--layers", type=int, default=None, help="override the number of layers (default 22; tiny 2)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 512; tiny 16)")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 4; tiny 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (after 2 warm-up steps each)")
    p.add_argument("--no-full", action="store_true", help="skip the full fine-tuning row")
    p.add_argument("--profile", action="store_true", help="profile minilora's LoRA step and print the tables")
    p.add_argument("--out", default=None, help="append the table (markdown) to this file")
    return p.parse_args(argv)


def lora_config(args):
    return dict(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules="all-linear")


def synchronize(device):
    if device == "cuda":
        import torch
        ml.cuda.synchronize()
        torch.cuda.synchronize()


# ---- the models ---------------------------------------------------------------------------------------
def build_minilora(config, device):
    """Built on the device itself: a 1B model's random init on the host alone would take minutes."""
    ml.manual_seed(0)  # the same seed each time: the LoRA and the full model start from the same weights
    return LlamaForCausalLM(config, dtype="float32", device=device)


def to_transformers(config, ml_model, dtype, device):
    """transformers' Llama on `device` with minilora's base weights."""
    import torch
    import transformers
    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.to_dict().items()
                                            if k not in ("architectures", "model_type")})
    with torch.device(device):  # random init where the model will run (fast on a GPU), then overwritten
        model = transformers.LlamaForCausalLM(hf_config)
    model.config._attn_implementation = "sdpa"
    state = {k: torch.from_numpy(v.numpy().copy()) for k, v in ml_model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model.to(dtype)


def build_steps(args, config):
    """name -> (step function, model, optimizer, ids) or name -> why it is not run."""
    import peft
    import torch
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(args.batch, args.seq))
    ml_model = build_minilora(config, args.device)
    hf32 = to_transformers(config, ml_model, torch.float32, args.device)
    hf = {torch.float32: hf32, torch.bfloat16: copy.deepcopy(hf32).to(torch.bfloat16)}  # one random init, not two
    ml_lora = get_peft_model(ml_model, LoraConfig(**lora_config(args)))
    ours = {n: p.numpy() for n, p in ml_lora.named_parameters() if p.requires_grad}
    steps = {}
    ml_lora.to(args.device)
    ml_ids = ml.tensor(ids, device=args.device)
    trainable = [p for p in ml_lora.parameters() if p.requires_grad]
    steps["minilora LoRA fp32"] = (minilora_step, ml_lora, AdamW(trainable, lr=1e-4, weight_decay=0.01), ml_ids)
    for dt, name in ((torch.float32, "PEFT LoRA fp32"), (torch.bfloat16, "PEFT LoRA bf16")):
        model = peft.get_peft_model(hf[dt], peft.LoraConfig(**lora_config(args)))  # adapters fp32 (PEFT's autocast)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(torch.from_numpy(ours[n]))
        model = model.to(args.device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
        steps[name] = (transformers_step, model, opt, torch.from_numpy(ids).to(args.device))
    missing = bf16_unavailable(args.device)
    if missing:
        steps["minilora LoRA bf16"] = missing
    else:
        lora16 = get_peft_model(build_minilora(config, args.device).to(ml.bfloat16), LoraConfig(**lora_config(args)))
        for n, p in lora16.named_parameters():  # fp32 adapters (autocast_adapter_dtype): the same A as the others
            if p.requires_grad:
                with ml.no_grad():
                    p.copy_(ml.tensor(ours[n], device=args.device))
        trainable16 = [p for p in lora16.parameters() if p.requires_grad]
        steps["minilora LoRA bf16"] = (minilora_step, lora16, AdamW(trainable16, lr=1e-4, weight_decay=0.01), ml_ids)
    if not args.no_full:
        full = build_minilora(config, args.device)
        steps["minilora full fine-tuning fp32"] = (minilora_step, full, AdamW(full.parameters(), lr=1e-4,
                                                                                 weight_decay=0.01), ml_ids)
    return steps


def bf16_unavailable(device):
    """Why minilora cannot run its bf16 row here (a line for the table), or None."""
    if not ml.dtypes.HAS_BFLOAT16:
        return "not run: ml_dtypes is not installed (pip install 'minilora[bf16]'), so minilora has no bfloat16"
    if device == "cuda":
        import cupy
        major = cupy.__version__.split(".")[0]
        if not (major.isdigit() and int(major) >= 14):
            return f"not run: CuPy {cupy.__version__} has no bfloat16 arrays (minilora's bf16 needs CuPy >= 14)"
    return None


def minilora_step(model, opt, ids):
    loss = model(ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


def transformers_step(model, opt, ids):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


def timed_step(device, step, model, opt, ids):
    """Wall seconds of one step, the device idle before and drained after."""
    synchronize(device)
    start = time.perf_counter()
    step(model, opt, ids)
    synchronize(device)
    return time.perf_counter() - start


def profile(device, step, model, opt, ids):
    import cProfile
    import pstats
    with ml.profile() as prof:
        step(model, opt, ids)
        synchronize(device)
    print(f"\nminilora ops (one LoRA step, {prof.total_seconds * 1e3:.1f} ms):")
    print(prof.table(limit=25))
    profiler = cProfile.Profile()
    profiler.runcall(timed_step, device, step, model, opt, ids)
    print("\ncProfile of one LoRA step, top 25 by total time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main(argv=None):
    args = parse_args(argv)
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.device == "cuda" and not (ml.device("cuda").enabled() and torch.cuda.is_available()):
        sys.exit("gpu_train_step.py --device cuda needs CuPy, torch with CUDA and a GPU; "
                 "use --device cpu --tiny for a dry run")
    args.seq = args.seq or (16 if args.tiny else 512)
    args.batch = args.batch or (2 if args.tiny else 4)
    shape = dict(TINY if args.tiny else ONE_B)
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    config = LlamaConfig(**shape, max_position_embeddings=max(args.seq, 2048))
    steps = build_steps(args, config)
    runnable = {name: s for name, s in steps.items() if not isinstance(s, str)}
    first = {name: float(s[0](*s[1:]).item()) for name, s in runnable.items()}  # warm-up 1: losses agree
    for s in runnable.values():  # warm-up 2: optimizer state allocated, kernels compiled
        s[0](*s[1:])
    times = {name: [] for name in runnable}
    names = list(runnable)
    for round_ in range(args.repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed_step(args.device, *runnable[name]))
    n_params = runnable["minilora LoRA fp32"][1].num_parameters()
    peft32 = statistics.median(times["PEFT LoRA fp32"])
    peft16 = statistics.median(times["PEFT LoRA bf16"])
    lines = [f"## LoRA training step on {args.device}: {n_params / 1e9:.2f}B parameters "
             f"(d={config.hidden_size}, {config.num_hidden_layers} layers), seq {args.seq} x batch {args.batch}, "
             f"r={args.rank}, all-linear\n",
             "| step | median ms | min ms | vs PEFT (same precision) | first-step loss |", "|---|---|---|---|---|"]
    for name, s in steps.items():
        if isinstance(s, str):
            lines.append(f"| {name} | - | - | - | {s} |")
            continue
        med, best = statistics.median(times[name]) * 1e3, min(times[name]) * 1e3
        ref = peft16 if "bf16" in name else peft32
        versus = f"{med / (ref * 1e3):.2f}x" if "LoRA" in name else "-"
        lines.append(f"| {name} | {med:.1f} | {best:.1f} | {versus} | {first[name]:.4f} |")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text + "\n")
    if args.profile:
        for name in ("minilora LoRA fp32", "minilora LoRA bf16"):
            if name in runnable:
                print(f"\n### {name}")
                profile(args.device, *runnable[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
