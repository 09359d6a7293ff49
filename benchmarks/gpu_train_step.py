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
    kernels) | minilora and PEFT LoRA fp32 + autocast bf16 (the fp32 models' forward under
    ``autocast(device_type, dtype=bfloat16)``, as ``Trainer(bf16=True)`` runs an fp32 model: matmuls in bf16,
    weights cast each step; the same models as the fp32 rows, so their first-step loss is after the fp32
    rows' two warm-up steps) | minilora full fine-tuning fp32. minilora's bf16 row needs ml_dtypes and, on the GPU, CuPy >= 14
    (older CuPy has no bfloat16): without them the row says so instead of a number.
Timing: the steps run round-robin, the order rotating each round; each step is wall-clock time with the
device synchronised before and after (a step's host work counts -- it is part of a training step);
median and min.

What one run writes (each section goes to ``--out`` as soon as it is measured, so a run cut short by
gpu_check.sh's time bound keeps what it has, and says where it stopped):
  1. ``bf16 probe``: what this CuPy does with bfloat16 -- versions, whether a bf16 sum or a 1x1 / batched
     matmul accumulates in float32, whether sort, add.at, round... take bf16, and the result dtypes -- and
     minilora's own bf16 ops on the device beside the same ops on cpu. The stand-in CuPy of the tests
     (tests/fake_cupy.py) models what CuPy 14's sources say; this is where a GPU answers what they do not.
  2. the step table (above).
  3. ``where the time goes``, per minilora row: one more step with every op run on its own (the device
     drained before and after each), timed on the device (CUDA events) and on the host, grouped into
     minilora's CUDA kernels, cuBLAS GEMMs, attention, CuPy elementwise/reduction ops, and the Python
     between ops; with the count of ops and of minilora kernel launches per step.
``--profile`` also prints minilora.profile's op table and cProfile's top functions (host view). The split's
ops are NVTX ranges on cuda: ``nsys profile python benchmarks/gpu_train_step.py --no-peft`` names them.

    python benchmarks/gpu_train_step.py                      # on the GPU, ~1.1B parameters
    python benchmarks/gpu_train_step.py --dry-run            # seconds on the CPU: minilora rows, probe, split (tested)
    python benchmarks/gpu_train_step.py --device cpu --tiny  # the whole script on the CPU, PEFT rows too (tested)
"""
import argparse
import copy
import os
import signal
import statistics
import sys
import time

os.environ.setdefault("CUPY_TF32", "0")  # before anything imports CuPy

import numpy as np  # noqa: E402

import minilora as ml  # noqa: E402
from minilora import kernels  # noqa: E402
from minilora.device import all_devices  # noqa: E402
from minilora.lora import LoraConfig, get_peft_model  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.nn.utils import skip_init  # noqa: E402
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
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds after 2 warm-up steps (default 5; dry run 1)")
    p.add_argument("--no-full", action="store_true", help="skip the full fine-tuning row")
    p.add_argument("--no-peft", action="store_true", help="skip the transformers + PEFT rows")
    p.add_argument("--no-probe", action="store_true", help="skip the bf16 probe of the array module")
    p.add_argument("--no-split", action="store_true", help="skip 'where the time goes'")
    p.add_argument("--profile", action="store_true", help="also print minilora.profile's op table and cProfile's")
    p.add_argument("--dry-run", action="store_true",
                   help="seconds on the CPU: --device cpu --tiny --no-peft, 1 layer and 1 round unless given")
    p.add_argument("--out", default=None, help="append each section (markdown) to this file as it is measured")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny, args.no_peft = "cpu", True, True
        args.layers, args.repeats = args.layers or 1, args.repeats or 1
    args.repeats = args.repeats or 5
    return args


def lora_config(args):
    return dict(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules="all-linear")


def synchronize(device):
    if device == "cuda":
        ml.cuda.synchronize()
        torch = sys.modules.get("torch")  # (the PEFT rows' work: a --no-peft run has none)
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.synchronize()


# ---- the models ---------------------------------------------------------------------------------------
def build_minilora(config, device):
    """Built without its init (``skip_init``: torch's exact normals for 1.1B weights take over a minute on
    the host), then filled with N(0, initializer_range) from NumPy's fast generator, norms 1: the same
    weights at every call (the LoRA, bf16 and full rows start alike). The timing does not depend on them."""
    model = skip_init(LlamaForCausalLM, config, dtype=ml.float32, device=device)
    rng = np.random.default_rng(0)
    with ml.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                values = rng.standard_normal(tuple(p.shape), dtype=np.float32) * np.float32(config.initializer_range)
                p.copy_(ml.tensor(values, device=device))
    ml.manual_seed(0)  # the LoRA A draws that follow, as every row's
    return model


def to_transformers(config, ml_model, dtype, device):
    """transformers' Llama on `device` with minilora's base weights."""
    import torch
    import transformers
    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.to_dict().items()
                                            if k not in ("architectures", "model_type")})
    with torch.device(device):  # random init where the model will run (fast on a GPU), then overwritten
        model = transformers.LlamaForCausalLM(hf_config)
    model.config._attn_implementation = "sdpa"
    state = {k: torch.from_numpy(v.numpy(force=True).copy()) for k, v in ml_model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model.to(dtype)


def build_steps(args, config):
    """name -> (step function, model, optimizer, ids) or name -> why it is not run."""
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(args.batch, args.seq))
    ml_model = build_minilora(config, args.device)
    hf32 = None if args.no_peft else to_transformers(config, ml_model, _torch().float32, args.device)
    ml_lora = get_peft_model(ml_model, LoraConfig(**lora_config(args)))
    ours = {n: p.numpy(force=True) for n, p in ml_lora.named_parameters() if p.requires_grad}
    steps = {}
    ml_lora.to(args.device)
    ml_ids = ml.tensor(ids, device=args.device)
    trainable = [p for p in ml_lora.parameters() if p.requires_grad]
    steps["minilora LoRA fp32"] = (minilora_step, ml_lora, AdamW(trainable, lr=1e-4, weight_decay=0.01), ml_ids)
    if hf32 is not None:
        steps.update(peft_steps(args, hf32, ours, ids))
    steps.update(autocast_steps(args, steps))
    missing = bf16_unavailable(args.device)
    steps["minilora LoRA bf16"] = missing or _or_why(lambda: bf16_lora_step(args, config, ours, ml_ids))
    if not args.no_full:
        steps["minilora full fine-tuning fp32"] = _or_why(lambda: full_step(args, config, ml_ids))
    return steps


def bf16_lora_step(args, config, ours, ml_ids):
    """A bf16 base with PEFT's fp32 adapters (autocast_adapter_dtype), the same A as the other rows."""
    lora16 = get_peft_model(build_minilora(config, args.device).to(ml.bfloat16), LoraConfig(**lora_config(args)))
    for n, p in lora16.named_parameters():
        if p.requires_grad:
            with ml.no_grad():
                p.copy_(ml.tensor(ours[n], device=args.device))
    trainable16 = [p for p in lora16.parameters() if p.requires_grad]
    return minilora_step, lora16, AdamW(trainable16, lr=1e-4, weight_decay=0.01), ml_ids


def autocast_steps(args, steps):
    """The fp32 LoRA rows again, their forward under bf16 autocast (the same models and optimizers: no
    memory for another copy; the optimizer state only runs on)."""
    rows = {}
    for fp32, name, step in (("minilora LoRA fp32", "minilora LoRA fp32 + autocast bf16", minilora_autocast_step),
                             ("PEFT LoRA fp32", "PEFT LoRA fp32 + autocast bf16", transformers_autocast_step)):
        if fp32 in steps and not isinstance(steps[fp32], str):
            rows[name] = (lambda model, opt, ids, step=step: step(args.device, model, opt, ids),) + steps[fp32][1:]
    return rows


def full_step(args, config, ml_ids):
    full = build_minilora(config, args.device)
    return minilora_step, full, AdamW(full.parameters(), lr=1e-4, weight_decay=0.01), ml_ids


def _or_why(make):
    """``make()``, or the line the table shows instead when it fails: one broken row (a CuPy without some
    bf16 routine) must not take the other rows, and the GPU run, with it."""
    try:
        return make()
    except TimeBoundReached:
        raise
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"


def peft_steps(args, hf32, ours, ids):
    """transformers + PEFT's LoRA rows, fp32 and bf16, with minilora's adapter weights."""
    import peft
    import torch
    hf = {torch.float32: hf32, torch.bfloat16: copy.deepcopy(hf32).to(torch.bfloat16)}  # one random init, not two
    steps = {}
    for dt, name in ((torch.float32, "PEFT LoRA fp32"), (torch.bfloat16, "PEFT LoRA bf16")):
        model = peft.get_peft_model(hf[dt], peft.LoraConfig(**lora_config(args)))  # adapters fp32 (PEFT's autocast)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(torch.from_numpy(ours[n]))
        model = model.to(args.device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
        steps[name] = (transformers_step, model, opt, torch.from_numpy(ids).to(args.device))
    return steps


def _torch():
    import torch
    return torch


def bf16_unavailable(device):
    """Why minilora cannot run its bf16 row here (a line for the table), or None."""
    if not ml.dtypes.HAS_BFLOAT16:
        return "not run: ml_dtypes is not installed (pip install 'minilora[bf16]'), so minilora has no bfloat16"
    if device == "cuda":
        import cupy
        major = cupy.__version__.split(".")[0]
        if not (major.isdigit() and int(major) >= 14):
            return f"not run: CuPy {cupy.__version__} has no bfloat16 arrays (minilora's bf16 needs CuPy >= 14)"
        cuda = next(d for d in all_devices() if d.name == "cuda")
        try:  # CuPy 14 may still refuse them (NumPy < 2.1.2): minilora's check says why
            if cuda.enabled():
                cuda.check_dtype(ml.bfloat16)
        except TypeError as exc:
            return f"not run: {exc}"
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


def minilora_autocast_step(device, model, opt, ids):
    with ml.autocast(device_type=device, dtype=ml.bfloat16):
        loss = model(ids, labels=ids).loss
    loss.backward()  # outside the block, as torch's autocast recipe says
    opt.step()
    opt.zero_grad()
    return loss


def transformers_autocast_step(device, model, opt, ids):
    torch = _torch()
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
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


# ---- the report: each section written as soon as it is measured ---------------------------------------
class TimeBoundReached(Exception):
    """SIGTERM (gpu_check.sh's ``timeout``): stop, keep what was measured."""


def _stop_on_sigterm(signum, frame):
    raise TimeBoundReached(f"stopped by signal {signum} (the time bound)")


class Report:
    """Markdown sections, printed and appended to ``path`` one by one: a later stage that fails or runs out
    of time cannot take an earlier section with it (gpu_check.sh's stages share RESULTS.md)."""

    def __init__(self, path):
        self.path = path

    def add(self, text):
        print("\n" + text, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write("\n" + text + "\n")


# ---- 1. the bf16 probe: what this array module does with bfloat16 ----------------------------------
def _describe(value):
    """An array result in a few words: dtype and the first values (or the error, shortened)."""
    if value is None:
        return "ran"
    flat = value.astype(np.float32).ravel()[:3].tolist() if hasattr(value, "astype") else [value]
    return f"{getattr(value, 'dtype', type(value).__name__)} {', '.join(f'{v:g}' for v in flat)}"


def _attempt(fn):
    try:
        return _describe(fn())
    except Exception as exc:  # the answer the probe is after: what fails, and how
        return f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''}"


def _accumulation(xp, reduce_fn, shape_a, shape_b=None):
    """Whether ``reduce_fn`` of bf16 operands (uniform(0, 1): no cancellation), rounded to bf16, equals the
    float64 result rounded once to bf16 -- what float32 accumulation gives -- or how many elements differ."""
    rng = np.random.default_rng(0)
    host = [rng.uniform(0, 1, s).astype(ml.bfloat16) for s in (shape_a, shape_b) if s is not None]
    try:
        out = reduce_fn(*(xp.asarray(h) for h in host))
        got = (out.get() if hasattr(out, "get") else np.asarray(out)).astype(ml.bfloat16).astype(np.float64)
    except Exception as exc:
        return f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''}"
    want = np.asarray(reduce_fn(*(h.astype(np.float64) for h in host))).astype(ml.bfloat16).astype(np.float64)
    wrong = int(np.count_nonzero(got != want))
    kind = "float32 accumulation (rounded once)" if not wrong else f"{wrong}/{want.size} off the float32 result"
    return f"{out.dtype}, {kind}"


def _array_module_checks(xp, cupyx=None):
    """(what, how it went) for every bf16 call minilora could hand this array module."""
    bf16, f32 = ml.bfloat16, np.float32
    x = xp.asarray(np.array([[0.5, -1.25, 2.0], [3.5, -0.75, 1.0]], dtype=bf16))
    checks = [
        ("sum() of 4096 uniform(0,1)", _accumulation(xp, lambda a: a.sum(), (4096,))),
        ("sum(dtype=float32)", _accumulation(xp, lambda a: a.sum(dtype=f32), (4096,))),
        ("mean()", _accumulation(xp, lambda a: a.mean(), (4096,))),
        ("cumsum()[-1]", _accumulation(xp, lambda a: a.cumsum()[-1], (4096,))),
        ("matmul 2-D (4,4096)@(4096,4)", _accumulation(xp, lambda a, b: a @ b, (4, 4096), (4096, 4))),
        ("matmul 1x1 out (1,4096)@(4096,1)", _accumulation(xp, lambda a, b: a @ b, (1, 4096), (4096, 1))),
        ("matmul 1-D @ 2-D", _accumulation(xp, lambda a, b: a @ b, (4096,), (4096, 4))),
        ("matmul 1-D @ 1-D", _accumulation(xp, lambda a, b: a @ b, (4096,), (4096,))),
        ("matmul batched 3-D @ 3-D", _accumulation(xp, lambda a, b: a @ b, (2, 4, 4096), (2, 4096, 4))),
        ("matmul 3-D @ 2-D (broadcast)", _accumulation(xp, lambda a, b: a @ b, (2, 4, 4096), (4096, 4))),
        ("argsort(kind='stable')", _attempt(lambda: xp.argsort(x, axis=-1, kind="stable"))),
        ("sort", _attempt(lambda: xp.sort(x, axis=-1))),
        ("max / min", _attempt(lambda: x.max(axis=1)) + " / " + _attempt(lambda: x.min(axis=1))),
        ("argmax", _attempt(lambda: x.argmax(axis=1))),
        ("add.at", _attempt(lambda: xp.add.at(xp.zeros(3, bf16), xp.asarray([0, 0, 2]), x[0]))),
        ("round / rint", _attempt(lambda: xp.round(x)) + " / " + _attempt(lambda: xp.rint(x))),
        ("divmod", _attempt(lambda: xp.divmod(x, x)[0])),
        ("exp / tanh", _attempt(lambda: xp.exp(x)) + " / " + _attempt(lambda: xp.tanh(x))),
        ("x * 0.1 (a Python float)", _attempt(lambda: x * 0.1)),
        ("maximum(x, 0)", _attempt(lambda: xp.maximum(x, 0))),
        ("where(x > 0, x, 0)", _attempt(lambda: xp.where(x > 0, x, 0))),
        ("any()", _attempt(lambda: xp.asarray(x.any()))),
        ("astype(float32) / from float32", _attempt(lambda: x.astype(f32)) + " / "
         + _attempt(lambda: xp.ones(2, f32).astype(bf16))),
    ]
    if cupyx is not None:
        checks.append(("cupyx.scipy.special.erf", _attempt(lambda: cupyx.scipy.special.erf(x))))
    checks.append(("the other ufuncs minilora calls on bf16", _ufunc_dtypes(xp, x)))
    return checks


UNARY = ("abs", "sign", "floor", "trunc", "sqrt", "log", "log1p", "log2", "log10", "expm1", "exp2", "sin",
         "cos", "tan", "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arctanh", "isnan", "isinf",
         "isfinite")
BINARY = ("fmod", "copysign", "arctan2", "logaddexp", "maximum", "minimum", "power", "true_divide")


def _ufunc_dtypes(xp, x):
    """The result dtype of each ufunc minilora applies to bf16 arrays (tests/fake_cupy.py assumes bfloat16,
    or bool): grouped, so one line says which came back as what and which failed."""
    by_outcome = {}
    small = abs(x) * 0.125 + 0.0625  # in (0, 1): in every function's domain
    for name in UNARY + BINARY:
        fn = getattr(xp, name, None)
        try:
            out = fn(small) if name in UNARY else fn(small, small)
            outcome = str(out.dtype)
        except Exception as exc:
            outcome = f"fails ({type(exc).__name__})"
        by_outcome.setdefault(outcome, []).append(name)
    return "; ".join(f"{outcome}: {' '.join(names)}" for outcome, names in sorted(by_outcome.items()))


def _minilora_checks(device):
    """minilora's bf16 ops on ``device`` beside the same ops on cpu: 'same bits' or what differs."""
    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((6, 40)), "w": rng.standard_normal((1, 40)), "v": rng.standard_normal(40)}
    cases = [
        # (stable: torch's default sort leaves ties in std::sort's order on the CPU, its own on CUDA)
        ("sort / argsort", lambda t: t["x"].sort(dim=-1, stable=True)[0] + t["x"].argsort(dim=-1, stable=True)),
        ("topk(5)", lambda t: t["x"].topk(5, dim=-1)[0]),
        ("max(dim) / argmax", lambda t: t["x"].max(dim=-1)[0] + t["x"].argmax(dim=-1)),
        ("sum / mean", lambda t: t["x"].sum(dim=-1) + t["x"].mean(dim=-1)),
        ("matmul, one output element", lambda t: t["w"] @ t["v"].reshape(40, 1)),
        ("matmul 2-D", lambda t: t["x"] @ t["x"].T),
        ("softmax / log_softmax", lambda t: t["x"].softmax(-1) + t["x"].log_softmax(-1)),
        ("cumsum", lambda t: t["x"].cumsum(-1)),
        ("round", lambda t: t["x"].round()),
    ]
    results = []
    for what, fn in cases:
        outs = []
        try:
            for dev in (device, "cpu"):
                tensors = {k: ml.tensor(v, dtype=ml.bfloat16, device=dev) for k, v in data.items()}
                out = fn(tensors)
                outs.append((out.dtype, out.detach().cpu().float().numpy()))
        except Exception as exc:
            results.append((what, f"fails on {device}: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"))
            continue
        (dt, ours), (cpu_dt, cpu) = outs
        diff = np.nanmax(np.abs(ours - cpu)) if ours.shape == cpu.shape else None
        same = dt == cpu_dt and ours.shape == cpu.shape and np.array_equal(ours, cpu, equal_nan=True)
        results.append((what, "same bits as cpu" if same else f"{dt} vs cpu's {cpu_dt}, max difference {diff}"))
    return results


def _gpu_name():
    try:
        import cupy
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no GPU, or a CuPy without the call: the name is only for the reader
        return "an unnamed GPU"


def bf16_probe(device):
    """The probe's section (markdown): versions, the array module's answers, minilora's ops vs cpu."""
    where = _gpu_name() if device == "cuda" else "the CPU"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"## bf16 probe on {device}: what the array module does with bfloat16\n",
             f"Measured {when} on {where} by benchmarks/gpu_train_step.py.\n"]
    if not ml.dtypes.HAS_BFLOAT16:
        return "\n".join(lines + ["ml_dtypes is not installed: no bfloat16 anywhere."])
    import ml_dtypes
    versions = f"numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__}"
    xp, cupyx = np, None
    if device == "cuda":
        import cupy
        xp = cupy
        versions = f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, " + versions
        try:
            import cupyx.scipy.special  # (binds cupyx: its erf is one of the probe's calls)
        except ImportError:
            cupyx = None
        try:
            from cupy._core import _accelerator
            versions += f", routine accelerators {_accelerator.get_routine_accelerators()}"
        except Exception:  # an internal module: its name may move
            pass
    unavailable = bf16_unavailable(device)
    lines.append(f"{versions}. {unavailable or 'bfloat16 tensors: available'}\n")
    if unavailable:
        return "\n".join(lines)
    lines += [_row("array module call (bf16)", "result"), "|---|---|"]
    lines += [_row(what, result) for what, result in _array_module_checks(xp, cupyx)]
    lines += ["", _row(f"minilora bf16 op on {device}", "vs the same op on cpu"), "|---|---|"]
    lines += [_row(what, result) for what, result in _minilora_checks(device)]
    return "\n".join(lines)


def _row(*cells):
    """A markdown table row, written ``|a | b|``: only the step table's rows start with ``| `` (tools that
    read the step table back pick its rows by that)."""
    return "|" + " | ".join(str(c) for c in cells) + "|"


# ---- 3. where the time goes --------------------------------------------------------------------------
class Timeline:
    """Marks on the device's clock: CUDA events on cuda (GPU time), the host clock elsewhere."""

    def __init__(self, device):
        self.cuda = device == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        import cupy
        event = cupy.cuda.Event()
        event.record()
        return event

    def seconds(self, start, end):
        if not self.cuda:
            return end - start
        import cupy
        return cupy.cuda.get_elapsed_time(start, end) / 1e3

    def nvtx(self):
        """CuPy's NVTX ranges on cuda (what ``nsys profile`` shows by name), else ones that do nothing."""
        nvtx = getattr(sys.modules.get("cupy.cuda"), "nvtx", None) if self.cuda else None
        return nvtx if getattr(nvtx, "available", False) else _NoRanges


class _NoRanges:
    RangePush = RangePop = staticmethod(lambda *args: None)


GEMM_OPS = {"MatMul", "Linear", "Einsum"}  # ops whose work is a cuBLAS GEMM (on cuda)
KERNELS, GEMMS, ATTENTION, ELEMENTWISE = ("minilora CUDA kernels", "cuBLAS GEMMs (MatMul, Linear, Einsum)",
                                          "attention (batched GEMMs + softmax)", "CuPy elementwise and reductions")


def category(op, launches):
    """Which part of the step an op's time belongs to."""
    if launches:
        return KERNELS
    if op in GEMM_OPS:
        return GEMMS
    return ATTENTION if op == "Attention" else ELEMENTWISE


class OpTimer:
    """Runs every op of a step on its own: the device drained before and after each, its work between two
    marks on the device's clock and its host time (Python + launches) on the host's. Installs itself in
    ``minilora.tensor``'s profiled paths (``_forward``, ``_backward``) and ``kernels._launch``, while a
    ``minilora.profile()`` is active (that is what sends ops through those paths)."""

    def __init__(self, device):
        # (the module: ``minilora.tensor`` the attribute is the tensor() factory)
        self.device, self.clock, self.module = device, Timeline(device), sys.modules["minilora.tensor"]
        self.records, self.launches, self.depth = [], 0, 0

    def run(self, op, direction, fn):
        if self.depth:  # an op inside a timed op: part of the outer one's time
            return fn()
        synchronize(self.device)
        self.depth, launches, start, before = 1, self.launches, time.perf_counter(), self.clock.mark()
        nvtx = self.clock.nvtx()  # named ranges for a profiler (nsys) run around this script, if any
        nvtx.RangePush(f"{op} {direction}")
        try:
            out = fn()
        finally:
            nvtx.RangePop()
            self.depth = 0
        host = time.perf_counter() - start
        after = self.clock.mark()
        synchronize(self.device)
        self.records.append((op, direction, host, time.perf_counter() - start, before, after,
                             self.launches - launches))
        return out

    def __enter__(self):
        m = self.module
        self.saved = m._forward, m._backward, kernels._launch
        forward, backward, launch = self.saved

        def counted_launch(*args, **kwargs):
            self.launches += 1
            return launch(*args, **kwargs)
        m._forward = lambda cls, fn, ctx, arrays, options: self.run(
            cls.__name__, "forward", lambda: forward(cls, fn, ctx, arrays, options))
        m._backward = lambda ctx, g, prof, *how: self.run(  # (how: the engine's backward_onto way, if any)
            ctx.fn.__name__, "backward", lambda: backward(ctx, g, prof, *how))
        kernels._launch = counted_launch
        return self

    def __exit__(self, *exc):
        self.module._forward, self.module._backward, kernels._launch = self.saved
        return False


def time_split(device, model, opt, ids):
    """One step with every op (and AdamW's update) timed on its own: {category: [ops, host s, device s]},
    the step's wall time in this mode, the minilora kernel launches and the ops counted."""
    timer = OpTimer(device)
    synchronize(device)
    start = time.perf_counter()
    with ml.profile(), timer:
        loss = model(ids, labels=ids).loss
        loss.backward()
        timer.run("AdamW update", "step", opt.step)
        opt.zero_grad()
    synchronize(device)
    wall = time.perf_counter() - start
    split, per_op = {}, {}
    for op, direction, host, op_wall, before, after, launches in timer.records:
        on_device = timer.clock.seconds(before, after)
        row = split.setdefault(category(op, launches), [0, 0.0, 0.0, 0.0])
        row[0] += 1
        row[1] += host
        row[2] += on_device
        row[3] += op_wall
        entry = per_op.setdefault(f"{op} {direction}", [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += host
        entry[2] += on_device
    return dict(split=split, per_op=per_op, wall=wall, launches=timer.launches, ops=len(timer.records))


def split_section(name, device, measured, step_median, top=12):
    """'where the time goes' (markdown) for one minilora row."""
    clock = "CUDA events" if device == "cuda" else "host clock (no device here)"
    lines = [f"### where the time goes: {name} on {device} (one step, each op on its own; {clock})\n",
             _row("part of the step", "ops", "host ms (Python + launches)", "device ms", "share of device time"),
             "|---|---|---|---|---|"]
    split = measured["split"]
    device_total = sum(row[2] for row in split.values()) or 1e-12
    for part in (KERNELS, GEMMS, ATTENTION, ELEMENTWISE):
        if part in split:
            n, host, on_device, _ = split[part]
            lines.append(_row(part, n, f"{host * 1e3:.2f}", f"{on_device * 1e3:.2f}",
                              f"{on_device / device_total:.0%}"))
    outside = measured["wall"] - sum(row[3] for row in split.values())
    lines.append(_row("Python between ops (modules, autograd engine, optimizer bookkeeping)", "-",
                      f"{outside * 1e3:.2f}", "-", "-"))
    lines.append(f"\nDevice time of the ops: {device_total * 1e3:.1f} ms; the step timed normally (ops queued "
                 f"back to back): {step_median * 1e3:.1f} ms median, so about "
                 f"{max(step_median - device_total, 0.0) * 1e3:.1f} ms of it the device waits for Python. "
                 f"Per step: {measured['ops']} ops (each at least one launch: CuPy kernels, cuBLAS calls) and "
                 f"{measured['launches']} launches of minilora's own kernels. An op's device time runs from "
                 f"its first launch to its last, so gaps while Python queues its next launch count in it.\n")
    lines += [_row(f"top {top} ops by device time", "calls", "host ms", "device ms"), "|---|---|---|---|"]
    ranked = sorted(measured["per_op"].items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    lines += [_row(op, n, f"{host * 1e3:.2f}", f"{on_device * 1e3:.2f}") for op, (n, host, on_device) in ranked]
    return "\n".join(lines)


# ---- 2. the step table ---------------------------------------------------------------------------
def step_table(args, config, steps, first, times, note=""):
    fp32 = steps["minilora LoRA fp32"]
    n_params = float("nan") if isinstance(fp32, str) else fp32[1].num_parameters()
    lines = [f"## LoRA training step on {args.device}: {n_params / 1e9:.2f}B parameters "
             f"(d={config.hidden_size}, {config.num_hidden_layers} layers), seq {args.seq} x batch {args.batch}, "
             f"r={args.rank}, all-linear{note}\n",
             "| step | median ms | min ms | vs PEFT (same precision) | first-step loss |", "|---|---|---|---|---|"]
    reference = {"fp32": times.get("PEFT LoRA fp32"), "bf16": times.get("PEFT LoRA bf16"),
                 "autocast": times.get("PEFT LoRA fp32 + autocast bf16")}
    for name, s in steps.items():
        if isinstance(s, str):
            lines.append(f"| {name} | - | - | - | {s} |")
            continue
        if not times.get(name):
            lines.append(f"| {name} | - | - | - | not timed (stopped before its turn) |")
            continue
        med, best = statistics.median(times[name]) * 1e3, min(times[name]) * 1e3
        ref = reference["autocast" if "autocast" in name else "bf16" if "bf16" in name else "fp32"]
        versus = f"{med / (statistics.median(ref) * 1e3):.2f}x" if ref and "LoRA" in name else "-"
        loss = f"{first[name]:.4f}" if name in first else "-"
        lines.append(f"| {name} | {med:.1f} | {best:.1f} | {versus} | {loss} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if not args.no_peft:
        torch = _torch()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.device == "cuda" and not (ml.device("cuda").enabled() and (args.no_peft or _torch().cuda.is_available())):
        sys.exit("gpu_train_step.py --device cuda needs CuPy, torch with CUDA and a GPU; "
                 "use --dry-run (or --device cpu --tiny) for a dry run")
    args.seq = args.seq or (16 if args.tiny else 512)
    args.batch = args.batch or (2 if args.tiny else 4)
    shape = dict(TINY if args.tiny else ONE_B)
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    config = LlamaConfig(**shape, max_position_embeddings=max(args.seq, 2048))
    report = Report(args.out)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return run(args, config, report)
    except TimeBoundReached as stop:
        report.add(f"(gpu_train_step.py {stop}: the sections above are all it measured)")
        return 124
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args, config, report):
    if not args.no_probe:
        probe = _or_why(lambda: bf16_probe(args.device))
        report.add(f"## bf16 probe on {args.device}: {probe}" if probe.startswith("failed: ") else probe)
    steps = build_steps(args, config)
    runnable = {name: s for name, s in steps.items() if not isinstance(s, str)}
    first, times, rounds = {}, {name: [] for name in runnable}, 0
    try:
        for name, s in list(runnable.items()):  # warm-up 1: the losses agree; warm-up 2: optimizer state
            outcome = _or_why(lambda: [float(s[0](*s[1:]).item()) for _ in range(2)][0])  # and kernels ready
            if isinstance(outcome, str):  # this row fails: the table says how, the others run
                steps[name] = outcome
                del runnable[name], times[name]
            else:
                first[name] = outcome
        names = list(runnable)
        for rounds in range(args.repeats):
            shift = rounds % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(timed_step(args.device, *runnable[name]))
    except TimeBoundReached:
        report.add(step_table(args, config, steps, first, times, note=" (cut short by the time bound)"))
        raise
    report.add(step_table(args, config, steps, first, times))
    for name in ("minilora LoRA fp32", "minilora LoRA bf16"):
        if name in runnable and not args.no_split:
            _, model, opt, ids = runnable[name]
            measured = _or_why(lambda: time_split(args.device, model, opt, ids))
            report.add(f"### where the time goes: {name}: {measured}" if isinstance(measured, str) else
                       split_section(name, args.device, measured, statistics.median(times[name])))
    if args.profile:
        for name in ("minilora LoRA fp32", "minilora LoRA bf16"):
            if name in runnable:
                print(f"\n### {name}")
                profile(args.device, *runnable[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
