"""GPU benchmark of minilora's hand-written kernels (issue 6, item 5).  Needs CuPy and an NVIDIA GPU.

    python benchmarks/gpu_lora.py                       # everything, prints tables, writes RESULTS.md
    python benchmarks/gpu_lora.py --quick               # fewer repetitions, r = 16 only, AdamW at 1M
    bash benchmarks/gpu_check.sh                        # the CUDA tests, then this script

LoRA, float32, M = 8192 tokens, K = N = 4096 features, r in {8, 16, 64}:

* ``base GEMM``      cuBLAS ``X W0^T`` alone (through CuPy) -- the floor: LoRA can only add to it;
* ``unfused``        the path PEFT takes: three GEMMs and an add, ``X W0^T + s (X A^T) B^T``
                     (backward: the six GEMMs autograd runs, no ``dW0``);
* ``fused v3..v9``   ``minilora.kernels.lora_forward`` / ``lora_backward`` at a fixed version (each set of
                     kernels once: v8's forward is v7's), and
  ``fused auto``     at the version ``pick_version`` chooses; the fastest of them per pass and rank is
                     written to ``benchmarks/gpu_choice.json`` (``--choice-out``), which ``pick_version``
                     reads from then on;
* ``fused bf16``     ``lora_forward_bf16`` (+ ``lora_backward_bf16``): the tensor-core kernels of
                     kernels/lora_bf16.cu, X, W0, dY in bf16 and the adapter in fp32;
* ``torch+PEFT``     ``peft.get_peft_model`` around a ``torch.nn.Linear`` on the GPU, if importable, in
                     fp32 and bf16, and cuBLAS's bf16 base GEMM (through torch) as the bf16 yardstick.

BGMV (kernels/bgmv.cu): per-row adapters at 64 and 1024 rows, 8 adapters of rank 16, against a loop
over the adapters (two CuPy GEMMs each).

AdamW at 1M and 100M parameters (128 equal tensors): one fused ``adamw_multi_tensor`` launch vs
per-tensor CuPy array code (``minilora.optim.adam.adamw_update``, what ``AdamW.step`` runs where the kernel
does not: torch's rounded steps, its fused multiply-adds through a float64 work array, ~16 kernels per tensor).

Timing (class Timer): the cases of a table interleaved round by round, L2 flushed before every run,
CUDA events, median and min; the SM clock logged after each table; ``--budget-s`` bounds the whole
run (gpu_check.sh also wraps it in ``timeout``).  TFLOP/s counts the useful flops of the math; GB/s counts the bytes the math
must move at least once (inputs read, outputs written).  Goals from the issue: fused forward within
1.10x of the base GEMM and faster than unfused; AdamW at >= 70% of HBM bandwidth at 100M parameters.
"""
import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# fp32 means fp32 in every row: CuPy's cuBLAS calls use TF32 only when CUPY_TF32=1 -- make sure it is not.
os.environ["CUPY_TF32"] = "0"

M, K, N = 8192, 4096, 4096
RANKS = (8, 16, 64)
ADAMW_SIZES = (1_000_000, 100_000_000)
ADAMW_TENSORS = 128


def gpu_or_exit():
    """The cupy module, or exit (status 1) with a message that says what is missing."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, or the CUDA driver is missing
        sys.exit(f"gpu_lora.py needs CuPy and an NVIDIA GPU: {type(exc).__name__}: {exc}\n"
                 "Install CuPy (pip install -e '.[cuda]') on a machine with a GPU; nothing was measured.")
    if count == 0:
        sys.exit("gpu_lora.py needs an NVIDIA GPU: CuPy imports but sees no device; nothing was measured.")
    return cupy


# ---- timing ----------------------------------------------------------------------------------------
# Fair timing (issue 16): the cases of one table are timed together, one run of each per round in an
# order that rotates every round (a GPU that warms up or throttles slows all cases alike), the L2 cache
# flushed before every run (each run starts from HBM, as a layer of a real model does), CUDA events
# around the run alone, and both the median and the minimum of the rounds reported.  torch work is
# timed with CuPy's events too: both libraries launch on the legacy default stream unless told otherwise.
class Timer:
    def __init__(self, cupy, l2_bytes, deadline):
        self.cupy = cupy
        self.deadline = deadline  # time.monotonic() after which a table stops at its minimum rounds
        self.flush_buffer = cupy.empty(max(2 * l2_bytes, 64 << 20) // 4, dtype=cupy.float32)

    def flush(self):
        self.flush_buffer.fill(0)  # writes twice the L2 size: nothing of the last run stays cached

    def over_budget(self):
        return time.monotonic() > self.deadline

    def run(self, cases, warmup, repeats, min_repeats=3):
        """{name: (median ms, min ms)} over interleaved rounds."""
        cupy, names = self.cupy, list(cases)
        for fn in cases.values():  # warm-up also compiles the kernels and fills the memory pools
            for _ in range(warmup):
                fn()
        cupy.cuda.Device().synchronize()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        times = {name: [] for name in names}
        for round_ in range(repeats):
            if round_ >= min_repeats and self.over_budget():
                break
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                self.flush()
                start.record()
                cases[name]()
                stop.record()
                stop.synchronize()
                times[name].append(cupy.cuda.get_elapsed_time(start, stop))
        return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def time_ms(cupy, fn, warmup, repeats):
    """Median milliseconds of fn() alone, timed as Timer does (L2 flushed, CUDA events): gpu_tile_sweep.py's."""
    l2_bytes = int(cupy.cuda.runtime.getDeviceProperties(0).get("l2CacheSize", 64 << 20))
    return Timer(cupy, l2_bytes, float("inf")).run({"fn": fn}, warmup, repeats)["fn"][0]


def host_us(cupy, fn, repeats=20):
    """Median microseconds the host spends in fn() (perf_counter, GPU idle before each call, no wait for
    the launch to finish): the Python work a step pays before the GPU can start -- checks, tables, copies."""
    spent = []
    for _ in range(repeats):
        cupy.cuda.Device().synchronize()
        begin = time.perf_counter()
        fn()
        spent.append((time.perf_counter() - begin) * 1e6)
    cupy.cuda.Device().synchronize()
    return statistics.median(spent)


def sm_clock():
    """The SM clock now and its maximum, with temperature and power (nvidia-smi), or why not."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,temperature.gpu,power.draw",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi unavailable ({type(exc).__name__})"
    fields = out.stdout.strip().split(", ")
    if out.returncode != 0 or len(fields) != 4:
        return f"nvidia-smi failed: {out.stderr.strip() or out.stdout.strip()}"
    return f"SM clock {fields[0]} (max {fields[1]}), {fields[2]} C, {fields[3]}"


# Dense fp32 (non-tensor-core) peak and HBM bandwidth per GPU, from NVIDIA's data sheets; the "of peak"
# columns divide by these. The lent machines are H100 SXM and H200: an H100's memory is 30% slower than an
# H200's, so one table of percentages for both would be wrong for one of them. Matched in order, first hit.
PEAKS = (  # (name contains, fp32 TFLOP/s, GB/s)
    ("H200", 67.0, 4800.0),
    ("H100 NVL", 60.0, 3900.0),
    ("H100 PCIe", 51.0, 2000.0),
    ("H100", 67.0, 3350.0),  # SXM5, "NVIDIA H100 80GB HBM3"
    ("A100-SXM4-80GB", 19.5, 2039.0),
    ("A100", 19.5, 1555.0),
)


def default_peaks(gpu_name):
    """(fp32 TFLOP/s, GB/s) for a device name, or None for a GPU not in PEAKS (pass --peak-* then)."""
    for key, tflops, gbs in PEAKS:
        if key.lower() in gpu_name.lower():
            return tflops, gbs
    return None


def resolve_peaks(args, gpu_name):
    """Fill --peak-tflops/--peak-gbs left unset from the device name; say where the numbers came from."""
    known = default_peaks(gpu_name)
    source = f"data sheet of {gpu_name}" if known else f"{gpu_name} not in PEAKS: H200's, set --peak-* to fix"
    tflops, gbs = known or (67.0, 4800.0)
    if args.peak_tflops is None:
        args.peak_tflops = tflops
    else:
        source = "given"
    if args.peak_gbs is None:
        args.peak_gbs = gbs
    else:
        source = "given"
    return source


# ---- LoRA ----------------------------------------------------------------------------------------
def lora_flops(r, backward):
    fwd = 2 * M * N * K + 2 * M * K * r + 2 * M * N * r
    bwd = 2 * M * N * K + 2 * M * K * r + 4 * M * N * r + 2 * M * K * r  # dX (+ V A), V and dB, dA
    return fwd + (bwd if backward else 0)


def lora_bytes(r, backward):
    fwd = 4 * (M * K + N * K + M * N + 2 * (K + N) * r + M * r)  # X, W0, Y, A, B, U
    bwd = 4 * (M * N + N * K + 2 * M * K + 2 * (K + N) * r + M * r)  # dY, W0, X, dX, A, B, dA, dB, U
    return fwd + (bwd if backward else 0)


def lora_cases(cupy, r, backward):
    """name -> zero-argument function running one forward (and backward) on the GPU."""
    from minilora import kernels
    rng = cupy.random.default_rng(0)
    X = rng.standard_normal((M, K), dtype=cupy.float32)
    W0 = rng.standard_normal((N, K), dtype=cupy.float32) / K**0.5
    A = rng.standard_normal((r, K), dtype=cupy.float32) / K**0.5
    B = rng.standard_normal((N, r), dtype=cupy.float32)
    dY = rng.standard_normal((M, N), dtype=cupy.float32)
    s = 2.0

    def base():
        Y = X @ W0.T
        if backward:
            dY @ W0

    def unfused():
        U = X @ A.T
        Y = X @ W0.T
        Y += s * (U @ B.T)
        if backward:  # what autograd runs for PEFT's lora_B(lora_A(x)) * s, W0 frozen
            V = s * (dY @ B)
            dY.T @ U * s
            V.T @ X
            dX = dY @ W0
            dX += V @ A

    def fused(version):
        def run():
            Y, U = kernels.lora_forward(X, W0, A, B, s, device="cuda", version=version)
            if backward:
                kernels.lora_backward(dY, X, W0, A, B, U, s, device="cuda", version=version)
        return run

    cases = {"base GEMM (cuBLAS)": base, "unfused (PEFT's 3 GEMMs + add)": unfused,
             **{f"fused {v}": fused(v) for v in swept_versions(kernels, backward)},
             f"fused auto ({kernels.pick_version(M, N, r, backward=backward)})": fused(None)}
    # the bf16 tensor-core kernels (kernels/lora_bf16.cu): X, W0, dY in bf16, the adapter in fp32
    X16, W16, dY16 = bf16_bits(X), bf16_bits(W0), bf16_bits(dY)

    def fused_bf16(version):
        def run():
            Y, U = kernels.lora_forward_bf16(X16, W16, A, B, s, device="cuda", version=version)
            if backward:
                kernels.lora_backward_bf16(dY16, X16, W16, A, B, U, s, device="cuda", version=version)
        return run
    for version in kernels.BF16_VERSIONS:
        cases[f"{FUSED_BF16} {version}"] = fused_bf16(version)
    if cupy_has_bfloat16(cupy) and bf16_tensors_importable():  # the same kernels through minilora's op and autograd
        cases[OP_BF16] = op_bf16(X, W0, A, B, dY, s, backward)
    # Check before timing: the fused result agrees with cuBLAS -- the default version's, and each swept version's
    # (a version that is wrong on the GPU must not win the sweep: see MAX_ERROR).
    Y, U = kernels.lora_forward(X, W0, A, B, s, device="cuda")
    want = X @ W0.T + s * ((X @ A.T) @ B.T)
    error = float(cupy.abs(Y - want).max() / cupy.abs(want).max())
    want_dx = dY @ W0 + (s * (dY @ B)) @ A if backward else None
    errors = {}
    for version in swept_versions(kernels, backward):
        Y, U = kernels.lora_forward(X, W0, A, B, s, device="cuda", version=version)
        errors[version] = float(cupy.abs(Y - want).max() / cupy.abs(want).max())
        if backward:
            dX, _, _ = kernels.lora_backward(dY, X, W0, A, B, U, s, device="cuda", version=version, need_dA=False,
                                             need_dB=False)
            errors[version] = max(errors[version], float(cupy.abs(dX - want_dx).max() / cupy.abs(want_dx).max()))
    return cases, error, errors


# A fused fp32 version is eligible for the sweep's choice only if its Y (and dX) agree with cuBLAS (TF32 off) to
# this relative error: correct kernels reach about 1e-6 at K = 4096; a wrong tile or a stale pipeline stage is
# off by O(1).  The emulator runs the kernels' C++, but not their inline PTX (cp.async on the GPU): this is
# where a GPU-only mistake would show.
MAX_ERROR = 1e-4


FUSED_BF16 = "fused bf16 (mma.sync, lora_bf16.cu)"  # + " v1" / " v2"


def launched_kernels(kernels, version, backward):
    """The kernels one fused forward (and backward) of ``version`` launches, aliases resolved (lora_tiles.cuh)."""
    passes = ("lora_fwd_u", "lora_fwd_y") + (("lora_bwd_dy", "lora_bwd_dx", "lora_bwd_da") if backward else ())
    return tuple(kernels.tiles().shape(kernel, version)[0] for kernel in passes)


def swept_versions(kernels, backward):
    """The fp32 versions the sweep times: v3 on -- v1 and v2 took 9-100x cuBLAS's time here (RESULTS.md of
    2026-11-28: v2 47 ms forward, 95 ms forward + backward, 8 s of every run's budget for numbers known) --
    and each set of kernels once: a version that launches exactly an earlier one's kernels (v8's forward is
    v7's) is timed as that one."""
    seen, versions = set(), []
    for version in kernels.VERSIONS:
        launched = launched_kernels(kernels, version, backward) if version not in ("v1", "v2") else None
        if launched is not None and launched not in seen:
            seen.add(launched)
            versions.append(version)
    return versions


def same_kernels_note(kernels, backward):
    """One line naming the versions not timed because they launch an earlier version's kernels."""
    timed_as = {launched_kernels(kernels, v, backward): v for v in reversed(swept_versions(kernels, backward))}
    same = [f"{v} = {timed_as[launched_kernels(kernels, v, backward)]}" for v in kernels.VERSIONS
            if v not in ("v1", "v2") and timed_as[launched_kernels(kernels, v, backward)] != v]
    return f"Not timed again (same kernels): {', '.join(same)}." if same else ""
OP_BF16 = "ops.lora_linear bf16 (Tensors + autograd: the dispatch's cost)"


def bf16_tensors_importable():
    try:
        import ml_dtypes  # noqa: F401
        return True
    except ImportError:
        return False


def op_bf16(X, W0, A, B, dY, s, backward, device="cuda"):
    """``ops.lora_linear`` on bf16 Tensors with fp32 adapters, as a LoRA layer of a bf16 model calls it: the
    tensor-core kernels plus what minilora adds around them (casts, autograd) -- the end-to-end step's view."""
    import minilora as ml
    from minilora import ops
    x = ml.tensor(X.astype(ml.bfloat16), device=device, requires_grad=backward)
    w0 = ml.tensor(W0.astype(ml.bfloat16), device=device)
    a, b = (ml.tensor(t, device=device, requires_grad=True) for t in (A, B))
    g = ml.tensor(dY.astype(ml.bfloat16), device=device)

    def run():
        y = ops.lora_linear(x, w0, a, b, s)
        if backward:
            y.backward(g)
            x.grad = a.grad = b.grad = None
    return run


def cupy_has_bfloat16(cupy):
    """CuPy >= 14 (the first with bfloat16 arrays); a version it cannot read counts as without."""
    major = cupy.__version__.split(".")[0]
    return major.isdigit() and int(major) >= 14


def bf16_tensor_support(cupy):
    """One line for RESULTS.md: whether minilora can hold bfloat16 tensors on this GPU. The fused bf16 rows
    below take bf16 bit patterns (uint16) and run either way; minilora's bf16 *tensors* (a bf16 model,
    ops.lora_linear dispatching to these kernels, gpu_train_step.py's "minilora LoRA bf16" row) need
    ml_dtypes and CuPy >= 14."""
    try:
        import ml_dtypes
    except ImportError:
        return ("minilora bfloat16 tensors: **not available** -- ml_dtypes is not installed (pip install "
                "'minilora[bf16]'): the kernel rows below still run on bit patterns; the training step's "
                "minilora bf16 row cannot.")
    if not cupy_has_bfloat16(cupy):
        return (f"minilora bfloat16 tensors: **not available** -- CuPy {cupy.__version__} has no bfloat16 "
                "(CuPy >= 14 does): the kernel rows below still run on bit patterns; the training step's "
                "minilora bf16 row cannot.")
    return f"minilora bfloat16 tensors: available (CuPy {cupy.__version__}, ml_dtypes {ml_dtypes.__version__})."


def bf16_bits(a):
    """float32 -> bf16 bit patterns (uint16), rounded to nearest even as the GPU's cvt.rn (no NaN here)."""
    u = a.view("uint32")
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("uint16")


def bf16_error(cupy, kernels, r):
    """Max relative error of lora_forward_bf16 against the fp32 forward (cuBLAS, TF32 off), at a small M."""
    rng = cupy.random.default_rng(1)
    X = rng.standard_normal((512, K), dtype=cupy.float32)
    W0 = rng.standard_normal((N, K), dtype=cupy.float32) / K**0.5
    A = rng.standard_normal((r, K), dtype=cupy.float32) / K**0.5
    B = rng.standard_normal((N, r), dtype=cupy.float32)
    Y, _ = kernels.lora_forward_bf16(bf16_bits(X), bf16_bits(W0), A, B, 2.0, device="cuda")
    want = X @ W0.T + 2.0 * ((X @ A.T) @ B.T)
    return float(cupy.abs(Y - want).max() / cupy.abs(want).max())


def bf16_backward_error(cupy, kernels, r):
    """Max relative error of lora_backward_bf16's dX, dA, dB against the fp32 backward (cuBLAS, TF32 off)."""
    rng = cupy.random.default_rng(2)
    X = rng.standard_normal((512, K), dtype=cupy.float32)
    W0 = rng.standard_normal((N, K), dtype=cupy.float32) / K**0.5
    A = rng.standard_normal((r, K), dtype=cupy.float32) / K**0.5
    B = rng.standard_normal((N, r), dtype=cupy.float32)
    dY = rng.standard_normal((512, N), dtype=cupy.float32)
    U = X @ A.T
    got = kernels.lora_backward_bf16(bf16_bits(dY), bf16_bits(X), bf16_bits(W0), A, B, U, 2.0, device="cuda")
    V = 2.0 * (dY @ B)
    want = (dY @ W0 + V @ A, V.T @ X, 2.0 * (dY.T @ U))
    return max(float(cupy.abs(g - w).max() / cupy.abs(w).max()) for g, w in zip(got, want))


def torch_cases(r, backward):
    """{name: fn} of torch on the GPU -- PEFT's LoRA Linear in fp32 (TF32 off) and bf16, and cuBLAS's bf16
    base GEMM (the yardstick of a bf16 tensor-core kernel) -- or ({}, why not)."""
    try:
        import torch
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        return {}, f"not importable ({exc})"
    if not torch.cuda.is_available():
        return {}, "torch sees no GPU"
    torch.backends.cuda.matmul.allow_tf32 = False  # plain fp32, like the rest of this table
    torch.backends.cudnn.allow_tf32 = False

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(K, N, bias=False)

        def forward(self, x):
            return self.proj(x)

    def peft(dtype):
        model = get_peft_model(Wrapper(), LoraConfig(r=r, lora_alpha=2 * r, target_modules=["proj"]))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p)
        model = model.to("cuda", dtype)
        x = torch.randn(M, K, device="cuda", dtype=dtype, requires_grad=backward)
        dy = torch.randn(M, N, device="cuda", dtype=dtype)

        def run():
            if backward:
                model(x).backward(dy)
            else:
                with torch.no_grad():
                    model(x)
        return run

    x16 = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w16 = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    dy16 = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)

    def base_bf16():
        with torch.no_grad():
            x16 @ w16.T
            if backward:
                dy16 @ w16
    return {"torch + PEFT fp32": peft(torch.float32), "torch + PEFT bf16": peft(torch.bfloat16),
            "cuBLAS bf16 base GEMM (torch)": base_bf16}, None


# ---- BGMV: many adapters, one batch ----------------------------------------------------------------
def bgmv_cases(cupy, rows, adapters, rank):
    """kernels.bgmv (each row its own adapter) against a loop over the adapters in CuPy (two GEMMs each)."""
    from minilora import kernels
    rng = cupy.random.default_rng(0)
    X = rng.standard_normal((rows, K), dtype=cupy.float32)
    A = rng.standard_normal((adapters, rank, K), dtype=cupy.float32) / K**0.5
    B = rng.standard_normal((adapters, N, rank), dtype=cupy.float32)
    ranks = cupy.full(adapters, rank, dtype=cupy.int32)
    scales = cupy.full(adapters, 2.0, dtype=cupy.float32)
    index = rng.integers(0, adapters, rows).astype(cupy.int32)
    host_index = index.get()
    groups = [(a, cupy.asarray((host_index == a).nonzero()[0])) for a in range(adapters)]
    Y = cupy.zeros((rows, N), cupy.float32)

    def loop():
        for a, where in groups:
            if where.size:
                Y[where] += 2.0 * ((X[where] @ A[a].T) @ B[a].T)

    cases = {f"bgmv {v}": (lambda v=v: kernels.bgmv(Y, X, A, B, ranks, scales, index, device="cuda", version=v))
             for v in kernels.BGMV_VERSIONS}
    cases["loop over adapters (CuPy GEMMs)"] = loop
    want = cupy.zeros((rows, N), cupy.float32)
    for a, where in groups:
        if where.size:
            want[where] = 2.0 * ((X[where] @ A[a].T) @ B[a].T)
    got = kernels.bgmv(cupy.zeros((rows, N), cupy.float32), X, A, B, ranks, scales, index, device="cuda")
    error = float(cupy.abs(got - want).max() / cupy.abs(want).max())
    return cases, error


# ---- AdamW -----------------------------------------------------------------------------------------
def adamw_cases(cupy, total):
    from minilora import kernels
    from minilora.optim.adam import adamw_update
    size = total // ADAMW_TENSORS
    rng = cupy.random.default_rng(0)
    p = [rng.standard_normal(size, dtype=cupy.float32) for _ in range(ADAMW_TENSORS)]
    g = [rng.standard_normal(size, dtype=cupy.float32) for _ in range(ADAMW_TENSORS)]
    m = [cupy.zeros(size, cupy.float32) for _ in range(ADAMW_TENSORS)]
    v = [cupy.zeros(size, cupy.float32) for _ in range(ADAMW_TENSORS)]
    scratch = [cupy.empty(size, cupy.float32) for _ in range(ADAMW_TENSORS)]
    wide = [cupy.empty(size, "float64") for _ in range(ADAMW_TENSORS)]  # (the fused multiply-adds' work array)
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)

    def fused():
        kernels.adamw_step(p, g, m, v, step=10, device="cuda", **hyper)

    # As an optimizer runs it: tables kept on the device (built once here, in the warm-up), and the
    # gradients new arrays every step (two lists in turn), so their addresses travel each step.
    tables = kernels.AdamWTables()
    grad_lists, calls = (g, [a.copy() for a in g]), [0]

    def fused_resident():
        calls[0] += 1
        kernels.adamw_step(p, grad_lists[calls[0] % 2], m, v, step=10, device="cuda", tables=tables, **hyper)

    # The launch alone, its arguments prepared once: the kernel's own bandwidth. The row above also pays
    # the host's per-step work (checking 4 x 128 arrays, copying their addresses to the GPU).
    cuda = kernels._resolve_device("gpu_lora", "cuda", p[0])
    table = kernels._adamw_hyper("gpu_lora", ADAMW_TENSORS, step=10, **hyper)
    lists = {"params": p, "grads": g, "exp_avgs": m, "exp_avg_sqs": v}
    blocks, launch_args, _ = kernels._adamw_arguments(cuda, lists, table)

    def fused_launch_only():
        kernels._launch(cuda, "adamw.cu", "adamw_multi_tensor", (blocks,), kernels._adamw_define("ADAMW_THREADS"),
                        launch_args)

    def per_tensor():
        for t in range(ADAMW_TENSORS):
            adamw_update(p[t], g[t], m[t], v[t], scratch[t], step=10, wide=wide[t], **hyper)

    return {"fused adamw_multi_tensor (1 launch)": fused,
            "fused, resident tables (as optim.AdamW runs it)": fused_resident,
            "fused, kernel alone (arguments ready)": fused_launch_only,
            "per-tensor CuPy array code": per_tensor}, size


# ---- report ------------------------------------------------------------------------------------------
def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".RESULTS.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def correct_fused_times(kernels, times, errors):
    """({version: median ms} of the fused fp32 versions timed whose error against cuBLAS is within MAX_ERROR,
    {version: error} of those that are not -- NaN included): only the first may win the sweep."""
    wrong = {v: e for v, e in errors.items() if not e <= MAX_ERROR}
    fused = {name.split()[1]: ms for name, (ms, _) in times.items()
             if name.startswith("fused v") and name.split()[1] in kernels.VERSIONS
             and errors.get(name.split()[1], math.inf) <= MAX_ERROR}
    return fused, wrong


def record_choice(choices, choices_128, kernels, pass_, r, fused):
    """The sweep's verdict for one pass and rank from {version: median ms} of the correct fused versions: the
    fastest into ``choices``, and the fastest with 128 x 128 tiles -- for problems with too few of v9's 256 x 128
    tiles to fill the GPU (kernels.pick_version) -- into ``choices_128``."""
    choices.setdefault(pass_, {})[str(r)] = min(fused, key=fused.get)
    tiles_128 = {v: ms for v, ms in fused.items() if v in kernels._TILES_128}
    if tiles_128:
        choices_128.setdefault(pass_, {})[str(r)] = min(tiles_128, key=tiles_128.get)


def write_choice(path, choices, choices_128, gpu, quick):
    """benchmarks/gpu_choice.json: the fastest fused fp32 version per pass and rank at M x K x N, the one shape
    class measured ("big": at least 32 tiles of 128 x 128; smaller problems keep v2 by rule), and the fastest
    of the versions with 128 x 128 tiles ("big_128_tiles": for problems too small for v9's 256 x 128 tiles).
    The format minilora.kernels.pick_version reads (and checks): {"choices": {"big": {pass: {rank: version}},
    "big_128_tiles": {...}}}."""
    import json
    data = {"about": "fastest fused LoRA kernel version per pass and rank, written by benchmarks/gpu_lora.py "
                     "(bash benchmarks/gpu_check.sh); read by minilora.kernels.pick_version",
            "gpu": gpu, "measured": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "shape": {"M": M, "K": K, "N": N}, "quick": quick,
            "choices": {"big": choices, **({"big_128_tiles": choices_128} if choices_128 else {})}}
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="r = 16 only, AdamW at 1M, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per table (default 20; quick 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="time budget: past it, each table stops after 3 rounds and whole sections are "
                             "skipped (said so in RESULTS.md); default 360")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="fp32 dense peak in TFLOP/s (default: from the device name, PEAKS; H100/H200: 67)")
    parser.add_argument("--peak-gbs", type=float, default=None,
                        help="HBM bandwidth in GB/s (default: from the device name; H100 SXM 3350, H200 4800)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    parser.add_argument("--tests", default="", help="summary line of the CUDA test run (gpu_check.sh passes it)")
    parser.add_argument("--choice-out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "gpu_choice.json"),
                        help="where the fastest fused version per pass and rank goes (read by "
                             "minilora.kernels.pick_version); default benchmarks/gpu_choice.json")
    args = parser.parse_args(argv)
    cupy = gpu_or_exit()
    from minilora import kernels
    repeats = args.repeats or (5 if args.quick else 20)
    ranks = (16,) if args.quick else RANKS
    sizes = ADAMW_SIZES[:1] if args.quick else ADAMW_SIZES

    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peaks_source = resolve_peaks(args, gpu)
    timer = Timer(cupy, int(props.get("l2CacheSize", 64 << 20)), time.monotonic() + args.budget_s)
    sections = [f"# GPU benchmark results\n\n{gpu}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
                f"CuPy {cupy.__version__}, Python {platform.python_version()}, "
                f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.\n"
                f"Command: `python benchmarks/gpu_lora.py{' --quick' if args.quick else ''}`; per table, up to "
                f"{repeats} interleaved rounds (order rotating) after {args.warmup} warm-up runs, L2 flushed "
                f"before every run, CUDA events; median and min. fp32 everywhere is fp32 (CUPY_TF32=0, torch "
                f"allow_tf32=False). Peaks assumed: {args.peak_tflops} TFLOP/s fp32, {args.peak_gbs:.0f} GB/s "
                f"({peaks_source}). "
                f"Before: {sm_clock()}."]
    sections.append(bf16_tensor_support(cupy))
    if args.tests:
        sections.append(f"CUDA tests (`bash benchmarks/gpu_check.sh`): {args.tests}")
    skipped = []
    choices = {}  # {"forward" | "forward+backward": {rank: fastest fused version}} -> --choice-out
    choices_128 = {}  # the same among the versions with 128 x 128 tiles ("big_128_tiles")

    def section(title, body):
        sections.append(f"## {title}\n\n{body}\n\nAfter this table: {sm_clock()}.")
        print(sections[-1], flush=True)
        write_atomic(args.out, "\n\n".join(sections) + "\n")  # a run cut short still leaves its tables

    for backward in (False, True):
        rows = []
        for r in ranks:
            if timer.over_budget():
                skipped.append(f"LoRA {'fwd+bwd' if backward else 'forward'} r={r}")
                continue
            cases, error, errors = lora_cases(cupy, r, backward)
            extra, why = torch_cases(r, backward)
            times = timer.run({**cases, **extra}, args.warmup, repeats)
            base, unfused = times["base GEMM (cuBLAS)"][0], times["unfused (PEFT's 3 GEMMs + add)"][0]
            flops, nbytes = lora_flops(r, backward), lora_bytes(r, backward)
            for name, (ms, best) in times.items():
                tflops = flops / ms / 1e9
                fp32 = "bf16" not in name
                rows.append([r, name, f"{ms:.3f}", f"{best:.3f}", f"{tflops:.1f}",
                             f"{100 * tflops / args.peak_tflops:.0f}%" if fp32 else "-",
                             f"{nbytes / ms / 1e6:.0f}" if fp32 else "-",
                             f"{ms / base:.2f}x" if fp32 else "-", f"{ms / unfused:.2f}x" if fp32 else "-"])
            if "cuBLAS bf16 base GEMM (torch)" in times:
                bf16_base = times["cuBLAS bf16 base GEMM (torch)"][0]
                peft16 = times["torch + PEFT bf16"][0]
                best16 = min((name for name in times if name.startswith(FUSED_BF16)), key=lambda n: times[n][0])
                ours = times[best16][0]
                error16 = bf16_backward_error(cupy, kernels, r) if backward else bf16_error(cupy, kernels, r)
                gemms = "GEMMs" if backward else "GEMM"
                verdict = (f"fastest {best16.split()[-1]}: {ours / bf16_base:.2f}x cuBLAS bf16 base {gemms} "
                           f"(goal <= 1.35x), {ours / peft16:.2f}x PEFT bf16 (torch's unfused path); "
                           f"max rel. error vs fp32 {error16:.1e} (default version)")
                rows.append([r, "fused bf16 (mma.sync) vs yardsticks", "-", "-", "-", "-", "-", "-",
                             f"{verdict}; cuBLAS bf16 {bf16_base:.3f} ms, PEFT bf16 {peft16:.3f} ms "
                             f"({peft16 / bf16_base:.2f}x)"])
            fused, wrong = correct_fused_times(kernels, times, errors)
            if wrong:
                rows.append([r, "WRONG on this GPU, not chosen: " + ", ".join(f"{v} (max rel. error {e:.1e})"
                                                                            for v, e in wrong.items()),
                             "-", "-", "-", "-", "-", "-", "-"])
            if fused:
                record_choice(choices, choices_128, kernels, "forward+backward" if backward else "forward", r, fused)
                winner = choices["forward+backward" if backward else "forward"][str(r)]
                rows.append([r, f"fastest fused fp32 version: {winner}", f"{fused[winner]:.3f}", "-", "-", "-",
                             "-", f"{fused[winner] / base:.2f}x", f"written to {os.path.basename(args.choice_out)}"])
            if why:
                rows.append([r, "torch + PEFT", "-", "-", "-", "-", "-", "-", f"skipped: {why}"])
            print(f"r={r} {'forward+backward' if backward else 'forward'}: fused vs cuBLAS max rel. error {error:.1e}; "
                  "per version: " + ", ".join(f"{v} {e:.1e}" for v, e in errors.items()), flush=True)
        if choices:
            write_choice(args.choice_out, choices, choices_128, gpu, args.quick)
        title = "forward + backward (dX, dA, dB)" if backward else "forward"
        section(f"LoRA {title}: M={M}, K=N={K}",
                table(rows, ["r", "path", "median ms", "min ms", "TFLOP/s", "of fp32 peak", "GB/s",
                             "vs base GEMM", "vs unfused"]) + "\n\n" + same_kernels_note(kernels, backward))

    if timer.over_budget():
        skipped.append("BGMV")
    else:
        rows = []
        for rows_, adapters in ((64, 8), (1024, 8)):
            cases, error = bgmv_cases(cupy, rows_, adapters, 16)
            times = timer.run(cases, args.warmup, repeats)
            loop = times["loop over adapters (CuPy GEMMs)"][0]
            for name, (ms, best) in times.items():
                rows.append([rows_, adapters, name, f"{ms:.3f}", f"{best:.3f}", f"{loop / ms:.1f}x", f"{error:.1e}"])
        section(f"BGMV: per-row adapters, K=N={K}, rank 16, float32",
                table(rows, ["rows", "adapters", "path", "median ms", "min ms", "speed-up vs loop",
                             "bgmv max rel. error"]))

    rows = []
    for total in sizes:
        if timer.over_budget():
            skipped.append(f"AdamW {total / 1e6:.0f}M")
            continue
        cases, size = adamw_cases(cupy, total)
        times = timer.run(cases, args.warmup, repeats)
        nbytes = 28 * size * ADAMW_TENSORS  # read p, g, m, v; write p, m, v: 7 float32 per parameter
        per_tensor = times["per-tensor CuPy array code"][0]
        for name, (ms, best) in times.items():
            gbs = nbytes / ms / 1e6
            rows.append([f"{size * ADAMW_TENSORS / 1e6:.0f}M", name, f"{ms:.3f}", f"{best:.3f}", f"{gbs:.0f}",
                         f"{100 * gbs / args.peak_gbs:.0f}%", f"{per_tensor / ms:.1f}x",
                         f"{host_us(cupy, cases[name]):.0f}"])
    if rows:
        section(f"AdamW, {ADAMW_TENSORS} equal float32 tensors",
                table(rows, ["params", "path", "median ms", "min ms", "GB/s", "of HBM peak",
                             "speed-up vs per-tensor", "host µs per call"]))
    if skipped:
        sections.append(f"Skipped (time budget of {args.budget_s:.0f} s spent): {', '.join(skipped)}.")
    sections.append("Kernel versions timed: " + ", ".join(swept_versions(kernels, True)) + " (v1 and v2, 9-100x "
                    "cuBLAS's time at this shape, are no longer swept: see the results of 2026-11-28). "
                    "v6 (rank-sized side kernels), v7 (cp.async main loop), v8 (the pass over dY split over N), "
                    "v9 (256 x 128 tiles, 8 x 16 per thread, the rank term inside the cp.async pipeline, grouped "
                    "block order) and the bf16 backward were written without a GPU: this is their first measurement. "
                    f"The fastest fused version per pass and rank went to {os.path.basename(args.choice_out)} "
                    "(minilora.kernels.pick_version reads it).")
    write_atomic(args.out, "\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
