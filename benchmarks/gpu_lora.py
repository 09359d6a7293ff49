"""GPU benchmark of minilora's hand-written kernels (issue 6, item 5).  Needs CuPy and an NVIDIA GPU.

    python benchmarks/gpu_lora.py                       # everything, prints tables, writes RESULTS.md
    python benchmarks/gpu_lora.py --quick               # fewer repetitions, r = 16 only, AdamW at 1M
    bash benchmarks/gpu_check.sh                        # the CUDA tests, then this script

LoRA, float32, M = 8192 tokens, K = N = 4096 features, r in {8, 16, 64}:

* ``base GEMM``      cuBLAS ``X W0^T`` alone (through CuPy) -- the floor: LoRA can only add to it;
* ``unfused``        the path PEFT takes: three GEMMs and an add, ``X W0^T + s (X A^T) B^T``
                     (backward: the six GEMMs autograd runs, no ``dW0``);
* ``fused v2..v4``   ``minilora.kernels.lora_forward`` / ``lora_backward`` at a fixed version, and
  ``fused auto``     at the version ``pick_version`` chooses;
* ``torch+PEFT``     ``peft.get_peft_model`` around a ``torch.nn.Linear`` on the GPU, if importable.

AdamW at 1M and 100M parameters (128 equal tensors): one fused ``adamw_multi_tensor`` launch vs
per-tensor CuPy array code (``minilora.optim.adam.adamw_update``, a dozen kernels per tensor).

Every time is the median over many runs, measured with CUDA events after warm-up runs (which also
compile the kernels).  TFLOP/s counts the useful flops of the math; GB/s counts the bytes the math
must move at least once (inputs read, outputs written).  Goals from the issue: fused forward within
1.10x of the base GEMM and faster than unfused; AdamW at >= 70% of HBM bandwidth at 100M parameters.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile

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
def time_ms(cupy, fn, warmup, repeats):
    """Median milliseconds of fn() over `repeats` runs, each bracketed by CUDA events, after warm-up."""
    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def time_torch_ms(torch, fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


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
             **{f"fused {v}": fused(v) for v in kernels.VERSIONS if v != "v1"},  # v1 takes seconds here
             f"fused auto ({kernels.pick_version(M, N)})": fused(None)}
    # Check before timing: the fused result agrees with cuBLAS.
    Y, U = kernels.lora_forward(X, W0, A, B, s, device="cuda")
    want = X @ W0.T + s * ((X @ A.T) @ B.T)
    error = float(cupy.abs(Y - want).max() / cupy.abs(want).max())
    return cases, error


def torch_peft_case(r, backward):
    """torch + PEFT on the GPU, or None with the reason."""
    try:
        import torch
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        return None, f"not importable ({exc})"
    if not torch.cuda.is_available():
        return None, "torch sees no GPU"
    torch.backends.cuda.matmul.allow_tf32 = False  # plain fp32, like the rest of this table

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(K, N, bias=False)

        def forward(self, x):
            return self.proj(x)

    model = get_peft_model(Wrapper(), LoraConfig(r=r, lora_alpha=2 * r, target_modules=["proj"])).cuda()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    x = torch.randn(M, K, device="cuda", requires_grad=backward)
    dy = torch.randn(M, N, device="cuda")

    def run():
        if backward:
            model(x).backward(dy)
        else:
            with torch.no_grad():
                model(x)
    return (torch, run), None


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
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)

    def fused():
        kernels.adamw_step(p, g, m, v, step=10, device="cuda", **hyper)

    # The launch alone, its arguments prepared once: the kernel's own bandwidth. The row above also pays
    # the host's per-step work (checking 4 x 128 arrays, copying their addresses to the GPU).
    cuda = kernels._resolve_device("gpu_lora", "cuda", p[0])
    table = kernels._adamw_hyper("gpu_lora", ADAMW_TENSORS, step=10, **hyper)
    lists = {"params": p, "grads": g, "exp_avgs": m, "exp_avg_sqs": v}
    blocks, launch_args, _ = kernels._adamw_arguments(cuda, lists, table)

    def fused_launch_only():
        kernels._launch(cuda, "adamw.cu", "adamw_multi_tensor", (blocks,), kernels._THREADS, launch_args)

    def per_tensor():
        for t in range(ADAMW_TENSORS):
            adamw_update(p[t], g[t], m[t], v[t], scratch[t], step=10, **hyper)

    return {"fused adamw_multi_tensor (1 launch)": fused, "fused, kernel alone (arguments ready)": fused_launch_only,
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="r = 16 only, AdamW at 1M, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 30; quick 5)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=67.0, help="fp32 dense peak (H200: 67)")
    parser.add_argument("--peak-gbs", type=float, default=4800.0, help="HBM bandwidth in GB/s (H200: 4800)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    parser.add_argument("--tests", default="", help="summary line of the CUDA test run (gpu_check.sh passes it)")
    args = parser.parse_args(argv)
    cupy = gpu_or_exit()
    repeats = args.repeats or (5 if args.quick else 30)
    ranks = (16,) if args.quick else RANKS
    sizes = ADAMW_SIZES[:1] if args.quick else ADAMW_SIZES

    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    sections = [f"# GPU benchmark results\n\n{gpu}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
                f"CuPy {cupy.__version__}, Python {platform.python_version()}, "
                f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.\n"
                f"Command: `python benchmarks/gpu_lora.py{' --quick' if args.quick else ''}`; "
                f"median of {repeats} runs after {args.warmup} warm-up runs, CUDA events. "
                f"Peaks assumed: {args.peak_tflops} TFLOP/s fp32, {args.peak_gbs:.0f} GB/s."]
    if args.tests:
        sections.append(f"CUDA tests (`bash benchmarks/gpu_check.sh`): {args.tests}")

    for backward in (False, True):
        rows = []
        for r in ranks:
            cases, error = lora_cases(cupy, r, backward)
            times = {name: time_ms(cupy, fn, args.warmup, repeats) for name, fn in cases.items()}
            torch_case, why = torch_peft_case(r, backward)
            if torch_case is not None:
                times["torch + PEFT"] = time_torch_ms(*torch_case, args.warmup, repeats)
            base, unfused = times["base GEMM (cuBLAS)"], times["unfused (PEFT's 3 GEMMs + add)"]
            flops, nbytes = lora_flops(r, backward), lora_bytes(r, backward)
            for name, ms in times.items():
                tflops = flops / ms / 1e9
                rows.append([r, name, f"{ms:.3f}", f"{tflops:.1f}", f"{100 * tflops / args.peak_tflops:.0f}%",
                             f"{nbytes / ms / 1e6:.0f}", f"{ms / base:.2f}x", f"{ms / unfused:.2f}x"])
            if torch_case is None:
                rows.append([r, "torch + PEFT", "-", "-", "-", "-", "-", f"skipped: {why}"])
            print(f"r={r} {'forward+backward' if backward else 'forward'}: fused vs cuBLAS max rel. error {error:.1e}",
                  flush=True)
        title = "forward + backward (dX, dA, dB)" if backward else "forward"
        sections.append(f"## LoRA {title}: M={M}, K=N={K}, float32\n\n"
                        + table(rows, ["r", "path", "ms", "TFLOP/s", "of fp32 peak", "GB/s", "vs base GEMM",
                                       "vs unfused"]))
        print(sections[-1], flush=True)

    rows = []
    for total in sizes:
        cases, size = adamw_cases(cupy, total)
        times = {name: time_ms(cupy, fn, args.warmup, repeats) for name, fn in cases.items()}
        nbytes = 28 * size * ADAMW_TENSORS  # read p, g, m, v; write p, m, v: 7 float32 per parameter
        per_tensor = times["per-tensor CuPy array code"]
        for name, ms in times.items():
            gbs = nbytes / ms / 1e6
            rows.append([f"{size * ADAMW_TENSORS / 1e6:.0f}M", name, f"{ms:.3f}", f"{gbs:.0f}",
                         f"{100 * gbs / args.peak_gbs:.0f}%", f"{per_tensor / ms:.1f}x"])
    sections.append(f"## AdamW, {ADAMW_TENSORS} equal float32 tensors\n\n"
                    + table(rows, ["params", "path", "ms", "GB/s", "of HBM peak", "speed-up vs per-tensor"]))
    print(sections[-1], flush=True)
    write_atomic(args.out, "\n\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
