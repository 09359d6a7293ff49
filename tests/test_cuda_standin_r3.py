"""STAND-IN for a GPU, round 3: what the one GPU run of benchmarks/gpu_check.sh must not trip over.

* benchmarks/gpu_train_step.py's sections -- the bf16 probe, the step table, "where the time goes" -- run
  here on the CPU (``--dry-run``) and on the CuPy 14 stand-in (tests/fake_cupy.py) as ``cuda``, each section
  in RESULTS.md as soon as it is measured, and a run stopped by the time bound keeps what it had.
* CuPy 14's bfloat16 as its sources say (the stand-in models it, tests/fake_cupy.py's docstring lists
  what and where from): no bfloat16 sort (Thrust's type dispatcher has none), a matmul with one output
  element summed in bfloat16 (``dot``'s ReductionKernel), batched bf16 matmul failing (cupy/cupy#10317).
  minilora's ops on ``cuda`` give cpu's numbers anyway.
"""
import importlib.util
import pathlib

import numpy as np
import pytest

import fake_cupy
import minilora as ml
from minilora.device import device as _device
from test_cuda_standin_bf16 import emulated_launches  # noqa: F401  (a fixture: kernel launches emulated)

BF16 = ml.bfloat16


def load_benchmark(name):
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_r3", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.fixture
def cuda14(monkeypatch):
    return fake_cupy.install(monkeypatch, version="14.0.0")


# ---- benchmarks/gpu_train_step.py ------------------------------------------------------------------
def sections(text):
    return [line for line in text.splitlines() if line.startswith("#")]


def test_train_step_dry_run_writes_every_section_in_order(tmp_path):
    bench, out = load_benchmark("gpu_train_step"), tmp_path / "RESULTS.md"
    out.write_text("# kept: what an earlier stage wrote\n")
    assert bench.main(["--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    assert sections(text) == [
        "# kept: what an earlier stage wrote", "## bf16 probe on cpu: what the array module does with bfloat16",
        "## LoRA training step on cpu: 0.00B parameters (d=64, 1 layers), seq 16 x batch 2, r=16, all-linear",
        *(f"### where the time goes: minilora LoRA {precision} on cpu (one step, each op on its own; host clock "
          "(no device here))" for precision in ("fp32", "bf16"))]
    assert "|sum(dtype=float32) | float32, float32 accumulation (rounded once)|" in text
    assert "|sort / argsort | same bits as cpu|" in text and "fails" not in text
    for row in ("minilora LoRA fp32", "minilora LoRA fp32 + autocast bf16", "minilora LoRA bf16",
                "minilora full fine-tuning fp32"):
        assert f"| {row} | " in text
    assert text.count("|Python between ops (modules, autograd engine, optimizer bookkeeping) | ") == 2


def test_train_step_stopped_by_the_time_bound_keeps_what_it_measured(tmp_path, monkeypatch):
    """gpu_check.sh's `timeout` sends SIGTERM: the probe is already in the file, the table is written with
    the rounds done, and the script exits 124 as `timeout` would."""
    bench, out = load_benchmark("gpu_train_step"), tmp_path / "RESULTS.md"
    real, calls = bench.timed_step, []

    def stopped_on_the_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            bench._stop_on_sigterm(15, None)
        return real(*args)
    monkeypatch.setattr(bench, "timed_step", stopped_on_the_fifth)
    assert bench.main(["--dry-run", "--repeats", "3", "--out", str(out)]) == 124
    text = out.read_text()
    assert "## bf16 probe on cpu" in text and "all-linear (cut short by the time bound)" in text
    assert "stopped by signal 15 (the time bound)" in text and "where the time goes" not in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| minilora")}
    assert all(" - | - | - | not timed" not in rows[name] for name in rows)  # four rows timed in round one


def test_train_step_sections_on_the_cuda_stand_in(cuda14, monkeypatch):
    """The GPU run's code paths: the probe on CuPy (14) arrays, the split with CUDA events (the stand-in's
    host-clock events), minilora's ops on cuda beside cpu."""
    monkeypatch.setattr(_device("cuda"), "uses_kernels", False)
    bench = load_benchmark("gpu_train_step")
    probe = bench.bf16_probe("cuda")
    assert "CuPy 14.0.0" in probe and "bfloat16 tensors: available" in probe
    for line in ("|argsort(kind='stable') | fails: ", "|matmul batched 3-D @ 3-D | fails: ",
                 "|sum(dtype=float32) | float32, float32 accumulation (rounded once)|",
                 "|matmul 1x1 out (1,4096)@(4096,1) | bfloat16, 1/1 off the float32 result|"):
        assert line in probe, probe
    ours = probe.split("vs the same op on cpu|")[1]
    assert ours.count("same bits as cpu") == 9, ours
    args = bench.parse_args(["--device", "cuda", "--tiny", "--layers", "1", "--no-peft"])
    config = bench.LlamaConfig(**bench.TINY | {"num_hidden_layers": 1}, max_position_embeddings=64)
    args.seq, args.batch = 8, 2
    steps = bench.build_steps(args, config)
    _, model, opt, ids = steps["minilora LoRA bf16"]
    measured = bench.time_split("cuda", model, opt, ids)
    assert measured["ops"] > 20 and measured["launches"] == 0
    text = bench.split_section("minilora LoRA bf16", "cuda", measured, 0.01)
    assert "CUDA events" in text and "|CuPy elementwise and reductions | " in text


def test_train_step_split_counts_the_lora_kernels(emulated_launches, monkeypatch):
    """On the GPU a bf16 LoRA layer runs lora_bf16.cu: its ops land in 'minilora CUDA kernels' with their
    launches counted (launches emulated on host copies, as in test_cuda_standin_bf16; AdamW's multi-tensor
    kernel reads device pointers the stand-in has not, so its update runs with kernels off)."""
    bench = load_benchmark("gpu_train_step")
    args = bench.parse_args(["--device", "cuda", "--tiny", "--layers", "1", "--no-peft", "--rank", "4"])
    args.seq, args.batch = 8, 2
    config = bench.LlamaConfig(**bench.TINY | {"num_hidden_layers": 1}, max_position_embeddings=64)
    _, model, opt, ids = bench.build_steps(args, config)["minilora LoRA bf16"]
    update = opt.step

    def update_without_kernels():
        with monkeypatch.context() as step:
            step.setattr(_device("cuda"), "uses_kernels", False)
            update()
    monkeypatch.setattr(opt, "step", update_without_kernels)
    measured = bench.time_split("cuda", model, opt, ids)
    kernel_ops = measured["split"][bench.KERNELS][0]
    assert kernel_ops == 2 * 7  # the seven LoRA layers, forward and backward
    assert measured["launches"] == len(emulated_launches) > kernel_ops
    assert measured["per_op"]["LoraLinear forward"][0] == 7


# ---- minilora's bf16 ops where CuPy 14 differs from NumPy -----------------------------------------
def on_both(fn, *arrays, grad=True, ones=False):
    """``fn`` of bf16 tensors made from ``arrays``, on cuda (the stand-in as CuPy 14) and on cpu: the results
    (and the inputs' gradients of ``sum(result * weights)``, bf16 weights 0, 1, 2... or ``ones``: the gradients
    reach ``fn`` in bf16) as float32 host arrays, per device."""
    runs = {}
    for device in ("cuda", "cpu"):
        tensors = [ml.tensor(a, dtype=BF16, device=device, requires_grad=grad) for a in arrays]
        outs = fn(*tensors)
        outs = outs if isinstance(outs, tuple) else (outs,)
        floats = [o for o in outs if o.dtype == BF16]
        if grad and floats:
            weights = [(ml.ones if ones else ml.arange)(o.numel(), device=device).reshape(o.shape).to(BF16)
                       for o in floats]
            sum(((o * w).float().sum() for o, w in zip(floats, weights)), ml.tensor(0.0, device=device)).backward()
        assert {o.device.type for o in outs} == {device}
        runs[device] = [(o.dtype, o.detach().cpu().float().numpy() if o.dtype == BF16 else o.cpu().numpy())
                        for o in outs] + [(t.grad.dtype, t.grad.cpu().float().numpy()) for t in tensors
                                          if t.grad is not None]
    return runs["cuda"], runs["cpu"]


SORT_VALUES = np.array([[2.0, -0.0, 1.5, np.nan, 1.5, -3.0, 0.0, 2.0],
                        [1.0, 1.0, -1.0, 7.0, np.inf, -np.inf, 0.5, 0.5]])


@pytest.mark.parametrize("fn", [
    lambda x: x.sort(dim=-1),
    lambda x: x.sort(dim=-1, descending=True),
    lambda x: x.sort(dim=0, stable=True),
    lambda x: x.argsort(dim=-1),
    lambda x: x.median(),
    lambda x: x.median(dim=-1),
    lambda x: x.msort() if hasattr(x, "msort") else x.sort(dim=0),
], ids=["sort", "sort-descending", "sort-dim0", "argsort", "median", "median-dim",
        "msort"])
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the weighted sum of inf and -inf
def test_bf16_sorts_on_cuda_as_on_cpu(fn, cuda14):
    """CuPy's sort/argsort have no bfloat16 (Thrust's type dispatcher): minilora sorts a float32 copy there
    -- exact, the same order, ties kept in place -- so values, indices and gradients are cpu's bit for bit
    (NaN last, -0.0 and 0.0 tied, as torch)."""
    on_cuda, on_cpu = on_both(fn, SORT_VALUES)
    assert [dt for dt, _ in on_cuda] == [dt for dt, _ in on_cpu]
    for (_, ours), (_, reference) in zip(on_cuda, on_cpu):
        np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("k, largest", [(3, True), (2, False)])
def test_bf16_topk_values_on_cuda_as_on_cpu(k, largest, cuda14):
    """topk's values bit for bit. Not its indices among ties: on the CPU they fall as torch's CPU topk leaves
    them (std::nth_element, std_sort.py), on CuPy in the stable order (torch's CUDA topk has its own)."""
    on_cuda, on_cpu = on_both(lambda x: x.topk(k, dim=-1, largest=largest).values, SORT_VALUES, grad=False)
    for (_, ours), (_, reference) in zip(on_cuda, on_cpu):
        np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("shapes, fn", [
    (((1, 300), (1, 300)), lambda x, w: ml.nn.functional.linear(x, w)),  # forward: (1, K) @ (K, 1)
    (((1, 300), (300, 1)), lambda a, b: a @ b),
    (((1, 300), (300,)), lambda a, b: a @ b),
    (((300,), (300, 1)), lambda a, b: a @ b),
    (((1, 1), (1, 300)), lambda a, b: a @ b),  # backward: a's gradient g @ b^T sums 300 products
    (((300, 1), (1, 1)), lambda x, w: ml.nn.functional.linear(x, w)),  # backward: dW = dY^T X, one element
    (((1, 1), (300, 1)), lambda x, w: ml.nn.functional.linear(x, w)),  # backward: dX = dY W, one element
    (((2, 300), (300, 1)), lambda a, b: a @ b),  # controls: more than one element, cuBLAS
    (((2, 300), (3, 300)), lambda x, w: ml.nn.functional.linear(x, w)),
], ids=["linear-1x1", "mm-1x1", "mm-row-vec", "mm-vec-col", "mm-grad-1x1", "linear-dw-1x1", "linear-dx-1x1",
        "mm-2x1", "linear-2x3"])
def test_bf16_products_with_one_element_on_cuda_as_on_cpu(shapes, fn, cuda14):
    """A 16-bit product with ONE output element is not a GEMM in CuPy: ``dot`` sums it with a reduction
    kernel in the 16-bit dtype (300 bf16 partial sums). minilora computes those in float32 and rounds once,
    as on cpu (and as cuBLAS does every other 16-bit product): values and gradients bit for bit."""
    rng = np.random.default_rng(3)
    arrays = [rng.uniform(0.5, 1.5, s) for s in shapes]  # no cancellation: the 16-bit sum drifts
    on_cuda, on_cpu = on_both(fn, *arrays, ones=True)
    for (dt, ours), (cpu_dt, reference) in zip(on_cuda, on_cpu):
        assert dt == cpu_dt
        np.testing.assert_array_equal(ours, reference)


# ---- a CuPy 14 that still refuses bfloat16 -----------------------------------------------------------
@pytest.fixture
def cuda14_without_bfloat16(cuda14, monkeypatch):
    """CuPy 14 registers ml_dtypes' bfloat16 only when it can (its _scalar.pyx: with NumPy >= 2.1.2 in one
    version of it): otherwise array creation says 'Unsupported dtype bfloat16', as CuPy 13 does."""
    def refuse_bfloat16(dtype):
        if dtype.name == "bfloat16":
            raise ValueError(f"Unsupported dtype {dtype}")
    monkeypatch.setattr(fake_cupy, "_check_dtype", refuse_bfloat16)
    return cuda14


@pytest.mark.parametrize("make", [
    lambda: ml.tensor([1.0], dtype=BF16, device="cuda"),
    lambda: ml.tensor([1.0], dtype=BF16).to("cuda"),
    lambda: ml.ones(2, device="cuda").to(BF16),
    lambda: ml.nn.Linear(2, 2).to("cuda").bfloat16(),
], ids=["tensor", "to-device", "to-dtype", "module"])
def test_cupy_14_refusing_bfloat16_is_a_clear_error(make, cuda14_without_bfloat16):
    with pytest.raises(TypeError, match=r"CuPy 14\.0\.0 refuses bfloat16 arrays.*NumPy >= 2\.1\.2.*NumPy "):
        make()


def test_train_step_says_why_the_bf16_row_cannot_run(cuda14_without_bfloat16):
    bench = load_benchmark("gpu_train_step")
    assert "refuses bfloat16 arrays" in bench.bf16_unavailable("cuda")
    assert "refuses bfloat16 arrays" in bench.bf16_probe("cuda")


def test_train_step_a_failing_row_does_not_take_the_others(tmp_path, monkeypatch):
    """A row that raises (a CuPy without some bf16 routine, say) shows its error in the table; the other rows
    are timed and split as before."""
    bench, out = load_benchmark("gpu_train_step"), tmp_path / "RESULTS.md"
    real = bench.minilora_step

    def fails_in_bf16(model, opt, ids):
        if any(p.dtype == BF16 for p in model.parameters()):
            raise NotImplementedError("Sorting arrays with dtype 'bfloat16' is not supported")
        return real(model, opt, ids)
    monkeypatch.setattr(bench, "minilora_step", fails_in_bf16)
    assert bench.main(["--dry-run", "--no-probe", "--out", str(out)]) == 0
    text = out.read_text()
    assert ("| minilora LoRA bf16 | - | - | - | failed: NotImplementedError: Sorting arrays with dtype 'bfloat16' "
            "is not supported |") in text
    assert "where the time goes: minilora LoRA fp32" in text and "where the time goes: minilora LoRA bf16" not in text
    assert "| minilora full fine-tuning fp32 | " in text
