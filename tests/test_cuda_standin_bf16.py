"""STAND-IN for a GPU, bfloat16: what benchmarks/gpu_check.sh will run on ``cuda`` with CuPy >= 14, run here
on the fake CuPy as CuPy 14 (tests/fake_cupy.py, ``install(version="14.0.0")``) beside the same computation
on ``cpu``: a tiny bf16 Llama with LoRA on every linear layer (two AdamW steps, generation), full fine-tuning
in bf16, the benchmark's own bf16 row functions, and the LoRA op on the tensor-core kernels' path.

The stand-in cannot launch kernels. Where the bf16 LoRA op would launch lora_bf16.cu on ``cuda``, the launch
runs the same kernel in the emulator on host copies of the CuPy arrays and writes the results back
(``emulated_launches``): everything around the launch (the op's casts, ``.view(uint16)`` of CuPy bf16
arrays, the argument checks, the output allocations) runs on the stand-in's arrays. The model runs use
``uses_kernels`` off (the op's NumPy math on the device's arrays), as tests/test_cuda_standin.py does.

What the stand-in cannot tell (benchmarks/gpu_check.sh must): how CuPy 14's own bfloat16 kernels round.
It models a bf16 matmul as cuBLAS with float32 compute, rounded once (1-D or 2-D operands: CuPy 14.0's
batched bf16 matmul fails, cupy/cupy#10317; a one-element product is summed in bf16, as CuPy's dot does),
and bf16 reductions as NumPy's (summed in bfloat16, the worst case), so minilora must never hand CuPy a
bf16 sum or a batched bf16 product and expect float32 accuracy. tests/fake_cupy.py's docstring lists the
rest (sorts, rounding, atomics) and where each comes from; test_cuda_standin_r3.py tests minilora on them.
"""
import contextlib

import numpy as np
import pytest

import fake_cupy
import minilora as ml
from minilora import blas, compiled_attention, float32_math, kernels, mkl_half_gemm, ops
from minilora.device import device as _device, xp_of
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.optim import AdamW
from minilora.ops import attention16, lora as lora_ops

BF16 = ml.bfloat16


@pytest.fixture
def cuda14(monkeypatch):
    """The stand-in as CuPy 14 (bfloat16 arrays), the ``cuda`` device on it."""
    return fake_cupy.install(monkeypatch, version="14.0.0")


@pytest.fixture
def cuda14_numpy_math(cuda14, monkeypatch):
    """Every op by its array module's math on ``cuda`` (no kernel launches), as ``cpu`` computes."""
    monkeypatch.setattr(_device("cuda"), "uses_kernels", False)
    return cuda14


def tiny_config(layers=2):
    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def train_two_steps(device, lora):
    """A bf16 Llama (LoRA r=4 on all linear layers, or every weight trained), two AdamW steps, generation:
    the losses, the generated ids, the trained parameters (float32 copies) and their dtypes."""
    ml.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(), dtype="bfloat16", device=device)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW(trained, lr=1e-2, weight_decay=0.01)
    ids = ml.tensor(np.arange(24).reshape(2, 12) % 64, device=device)
    losses, grad_dtypes = [], set()
    for _ in range(2):
        loss = model(ids, labels=ids).loss
        loss.backward()
        grad_dtypes |= {p.grad.dtype for p in trained}
        opt.step()
        opt.zero_grad()
        losses.append(loss)
    generated = model.generate(ids[:, :4], max_new_tokens=5)
    return dict(losses=[(loss.item(), loss.dtype, loss.device.type) for loss in losses],
                generated=generated.cpu().numpy(), generated_device=generated.device.type,
                params=[p.detach().cpu().float().numpy() for p in trained],
                dtypes=[p.dtype for p in trained], grad_dtypes=grad_dtypes,
                printed=repr(trained[0]))


@contextlib.contextmanager
def without_cpu_kernel_roundings():
    """cpu without the orders and roundings only torch's CPU kernels make (the flash attention kernel, PEFT's two
    parts of x's gradient, MKL's order for lora_A(x): mkl_half_gemm; float32 attention's exp, SLEEF's as torch.exp,
    and its C twin, compiled_attention; MKL's sqrt in the optimizer): what is left is the math the cuda stand-in
    runs too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention16, "takes", lambda *args: False)
        patch.setattr(ops.nn, "_softmax_exp", lambda scores: xp_of(scores).exp(scores, out=scores))
        patch.setattr(compiled_attention, "forward", lambda *args: False)
        patch.setattr(compiled_attention, "backward", lambda *args: False)
        patch.setattr(lora_ops, "x_grad_in_two_parts", lambda x: False)
        patch.setattr(mkl_half_gemm, "APPLIES", False)
        patch.setattr(float32_math, "MKL_SQRT_CPU", False)  # (the optimizer's roots: MKL's sqrt on Intel CPUs)
        before = blas.select("openblas")  # (MKL's products and VML functions, where installed: the stand-in's are NumPy's)
        try:
            yield
        finally:
            blas.select(before or "openblas")


@pytest.mark.parametrize("lora", [True, False], ids=["lora-all-linear", "full-fine-tuning"])
def test_bf16_llama_trains_and_generates_on_cuda_as_on_cpu(lora, cuda14_numpy_math):
    """The same NumPy math, and the stand-in's 2-D bf16 matmul (float32 compute, rounded once) is what cpu
    computes, except where cpu follows torch's CPU kernels' own roundings (the flash attention kernel,
    ops/attention16.py, and PEFT's two parts of x's gradient, LoraLinear's x_again, on the CPU only, as
    torch's CUDA kernels round elsewhere): losses within 3e-4 of that; without those two roundings
    (without_cpu_kernel_roundings), bit for bit: losses, weights, generated ids, the printed tensor. Before the
    stand-in modelled CuPy's bf16 matmul (NumPy's gives float32), full fine-tuning failed in o_proj
    ('expected both operands to have the same dtype')."""
    cpu_kernels, cuda = train_two_steps("cpu", lora), train_two_steps("cuda", lora)
    assert [loss[1] for loss in cuda["losses"]] == [loss[1] for loss in cpu_kernels["losses"]]
    np.testing.assert_allclose([loss[0] for loss in cuda["losses"]], [loss[0] for loss in cpu_kernels["losses"]],
                               rtol=3e-4)
    with without_cpu_kernel_roundings():  # the rest of the math: bit for bit
        cpu = train_two_steps("cpu", lora)
    assert [loss[:2] for loss in cuda["losses"]] == [loss[:2] for loss in cpu["losses"]]
    assert {loss[2] for loss in cuda["losses"]} == {"cuda"}  # (generate returns host ids on every device)
    np.testing.assert_array_equal(cuda["generated"], cpu["generated"])
    assert cuda["dtypes"] == cpu["dtypes"]
    assert set(cuda["dtypes"]) == ({np.dtype(np.float32)} if lora else {BF16})  # PEFT's autocast for adapters
    assert cuda["grad_dtypes"] == cpu["grad_dtypes"] == set(cuda["dtypes"])
    for ours, reference in zip(cuda["params"], cpu["params"]):
        np.testing.assert_array_equal(ours, reference)
    assert cuda["printed"].replace("device='cuda', ", "") == cpu["printed"]


def test_printing_and_saving_a_cuda_bf16_model(cuda14_numpy_math, tmp_path):
    ml.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(1), dtype="bfloat16", device="cuda")
    x = ml.tensor([[1.0, 2.5, -3.25]], dtype=BF16, device="cuda")
    assert repr(x) == "tensor([[ 1.0000,  2.5000, -3.2500]], device='cuda', dtype=torch.bfloat16)"
    assert str(x.sum()) == "tensor(0.2500, device='cuda', dtype=torch.bfloat16)"
    weight = model.model.embed_tokens.weight
    assert repr(weight.detach()).replace("device='cuda', ", "") == repr(weight.detach().cpu())
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert loaded.dtype == BF16
    for (name, ours), (_, saved) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert saved.dtype == BF16, name
        np.testing.assert_array_equal(ours.cpu().float().numpy(), saved.float().numpy())


def test_linear_bias_gradient_sums_in_float32_on_cuda(cuda14_numpy_math):
    """dbias = dY.sum(0) over 4096 rows of ones: 4096 as torch (a bfloat16 running sum stops at 256). On cuda
    the matmuls go to cuBLAS in bf16, but CuPy's bf16 sum must not be trusted to accumulate in float32."""
    grads = []
    for device in ("cpu", "cuda"):
        layer = ml.nn.Linear(8, 3, dtype=BF16, device=device)
        x = ml.ones(4096, 8, dtype=BF16, device=device)
        layer(x).sum().backward()
        grads.append((layer.bias.grad, layer.weight.grad))
    for on_cpu, on_cuda in zip(*grads):
        assert on_cuda.dtype == on_cpu.dtype == BF16 and on_cuda.device.type == "cuda"
        np.testing.assert_array_equal(on_cuda.cpu().numpy(), on_cpu.numpy())
    assert grads[1][0].cpu().float().numpy().tolist() == [4096.0] * 3


@pytest.mark.parametrize("shapes", [((2, 5, 8), (8, 3)), ((2, 5, 8), (2, 8, 3)), ((8,), (8, 3)), ((5, 8), (8,)),
                                    ((5, 8), (8, 3))], ids=["3d@2d", "batched", "vec@mat", "mat@vec", "2d"])
def test_bf16_matmul_on_cuda_as_on_cpu(shapes, cuda14_numpy_math):
    """Every shape ``ops.matmul`` takes: CuPy 14.0 multiplies bf16 only as two 2-D arrays (cuBLAS); the
    others go through float32, as on cpu. Values and gradients bit for bit."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(BF16) for s in shapes]
    results = []
    for device in ("cpu", "cuda"):
        a, b = (ml.tensor(x, device=device, requires_grad=True) for x in arrays)
        out = a @ b
        out.backward(ml.ones_like(out))
        results.append((out, a.grad, b.grad))
    for on_cpu, on_cuda in zip(*results):
        assert on_cuda.dtype == on_cpu.dtype == BF16 and on_cuda.device.type == "cuda"
        np.testing.assert_array_equal(on_cuda.cpu().numpy(), on_cpu.numpy())


# ---- the bf16 LoRA op on the tensor-core kernels' path --------------------------------------------
@pytest.fixture
def emulated_launches(cuda14, monkeypatch):
    """``cuda`` launches run in the emulator on host copies of the CuPy arrays, written back after."""
    real_launch, emu = kernels._launch, _device("emu")
    launched = []

    def launch(dev, filename, name, grid, block, args, shared_mem=0):
        if dev.name != "cuda":
            return real_launch(dev, filename, name, grid, block, args, shared_mem)
        on_host = [a.get() if isinstance(a, cuda14.ndarray) else a for a in args]
        real_launch(emu, filename, name, grid, block, tuple(on_host), shared_mem)
        for a, host in zip(args, on_host):
            if isinstance(a, cuda14.ndarray):
                a.set(host)
        launched.append(name)
    monkeypatch.setattr(kernels, "_launch", launch)
    return launched


def lora_op_case(device, M=33, K=40, N=24, r=3):
    rng = np.random.default_rng(1)
    x = ml.tensor(rng.standard_normal((3, M // 3, K)).astype(BF16), device=device, requires_grad=True)
    W0 = ml.tensor(rng.standard_normal((N, K)).astype(BF16), device=device)
    bias = ml.tensor(rng.standard_normal(N).astype(BF16), device=device)
    A = ml.tensor(rng.standard_normal((r, K)).astype(np.float32), device=device, requires_grad=True)
    B = ml.tensor(rng.standard_normal((N, r)).astype(np.float32), device=device, requires_grad=True)
    dY = ml.tensor(rng.standard_normal((3, M // 3, N)).astype(BF16), device=device)
    return x, W0, bias, A, B, dY


def run_lora_op(device):
    x, W0, bias, A, B, dY = lora_op_case(device)
    y = ops.lora_linear(x, W0, A, B, 2.0, bias=bias)
    y.backward(dY)
    return y, x.grad, A.grad, B.grad


def test_bf16_lora_op_reaches_the_tensor_core_kernels_on_cuda(emulated_launches):
    """The bf16 base with float32 adapters on cuda takes lora_bf16.cu (the emulator's result is the kernel's):
    the same numbers as on emu; dtypes as the op promises (y, dx bfloat16; dA, dB float32)."""
    on_cuda = run_lora_op("cuda")
    assert any(n.startswith("lora_bf16_fwd") for n in emulated_launches)
    assert any(n.startswith("lora_bf16_bwd") for n in emulated_launches)
    on_emu = run_lora_op("emu")
    for ours, reference in zip(on_cuda, on_emu):
        assert ours.device.type == "cuda" and ours.dtype == reference.dtype
        np.testing.assert_array_equal(ours.cpu().numpy(), reference.cpu().numpy())
    assert [t.dtype for t in on_cuda] == [BF16, BF16, np.float32, np.float32]


def load_benchmark(name):
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_gpu_lora_op_bf16_row_on_cuda(emulated_launches):
    """benchmarks/gpu_lora.py's "ops.lora_linear bf16" row as it runs on the GPU: CuPy float32 inputs cast
    to bf16 on the device (``X.astype(ml.bfloat16)`` on a CuPy array), the op, its backward, the kernels."""
    bench, cp = load_benchmark("gpu_lora"), fake_cupy.modules()["cupy"]
    assert bench.cupy_has_bfloat16(cp) and bench.bf16_tensor_support(cp).startswith("minilora bfloat16 "
                                                                                    "tensors: available")
    rng = np.random.default_rng(0)
    X, W0, dY = (cp.asarray(rng.standard_normal(shape).astype(np.float32)) for shape in ((9, 16), (8, 16), (9, 8)))
    A, B = cp.asarray(rng.standard_normal((2, 16)).astype(np.float32)), cp.asarray(rng.standard_normal((8, 2)))
    bench.op_bf16(X, W0, A, B.astype(np.float32), dY, 2.0, backward=True)()
    assert any(n.startswith("lora_bf16_bwd_dx") for n in emulated_launches)


# ---- benchmarks/gpu_train_step.py's bf16 row -----------------------------------------------------
def test_gpu_train_step_bf16_row_runs_on_cuda(cuda14_numpy_math):
    """The row's own functions, as main() calls them on cuda (a tiny config instead of the 1.1B one)."""
    bench = load_benchmark("gpu_train_step")
    assert bench.bf16_unavailable("cuda") is None  # CuPy 14 with ml_dtypes: the row runs
    args = bench.parse_args(["--device", "cuda", "--rank", "4"])
    lora16 = get_peft_model(bench.build_minilora(tiny_config(), "cuda").to(BF16), LoraConfig(**bench.lora_config(args)))
    trainable = [p for p in lora16.parameters() if p.requires_grad]
    opt = AdamW(trainable, lr=1e-4, weight_decay=0.01)
    ids = ml.tensor(np.arange(32).reshape(2, 16) % 64, device="cuda")
    losses = [bench.minilora_step(lora16, opt, ids).item() for _ in range(2)]
    assert all(np.isfinite(losses)) and {p.dtype for p in trainable} == {np.dtype(np.float32)}
    assert {p.device.type for p in lora16.parameters()} == {"cuda"}


# ---- the stand-in's CuPy 14 matmul (else the passes above would prove nothing) ---------------------
def test_stand_in_multiplies_16_bit_floats_as_cublas(cuda14):
    cp = cuda14
    ones = cp.asarray(np.ones((2, 4096), dtype=BF16))
    for product in (ones @ ones.T, cp.matmul(ones, ones.T), np.matmul(ones, ones.T)):
        assert type(product) is cp.ndarray and product.dtype == BF16  # NumPy's would be float32
        assert product.get().astype(np.float32).tolist() == [[4096.0] * 2] * 2  # float32 compute
    half = cp.asarray(np.ones((2, 3), dtype=np.float16))
    assert (half @ half.T).dtype == np.float16
    assert (ones[0] @ ones.T).get().astype(np.float32).tolist() == [4096.0] * 2  # 1-D: dot makes it 2-D
    for a, b in ((ones[None], ones.T), (ones[None], ones[:, :, None])):  # > 2-D: CuPy 14.0 fails (cupy#10317)
        with pytest.raises(TypeError, match="bfloat16 reaches cuBLAS only as 1-D or 2-D operands"):
            a @ b
    assert float(ones.sum()) == 256.0  # reductions: NumPy's bfloat16 running sum, the worst case
    # one output element: dot's reduction kernel sums in the 16-bit dtype, not cuBLAS
    assert float((ones[:1] @ ones[:1].T)[0, 0]) == float(ones[0] @ ones[0]) == 256.0


# ---- CuPy-only failures found by running the bf16 suites on the stand-in -----------------------------
@pytest.mark.parametrize("op", [
    lambda x: x[ml.tensor([0, 2, 0], device=x.device)],
    lambda x: x.index_select(0, ml.tensor([1, 1, 0], device=x.device)),
    lambda x: x.repeat_interleave(2, dim=0),
    lambda x: x.masked_select(x > 0),
], ids=["getitem-repeats", "index_select", "repeat_interleave", "masked_select"])
def test_bf16_index_backward_on_cuda(op, cuda14_numpy_math):
    """Their backward added bf16 with CuPy's add.at, which has no bfloat16 (now through float32). Small
    integers: every sum exact, so cpu's bf16 adds and cuda's float32 adds agree bit for bit."""
    values = np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0], [7.0, 8.0, 9.0]])
    grads = []
    for device in ("cpu", "cuda"):
        x = ml.tensor(values, dtype=BF16, device=device, requires_grad=True)
        out = op(x)
        (out * ml.arange(out.numel(), device=device).reshape(out.shape).to(BF16)).sum().backward()
        grads.append(x.grad)
    assert grads[1].dtype == BF16 and grads[1].device.type == "cuda"
    np.testing.assert_array_equal(grads[1].cpu().numpy(), grads[0].numpy())


@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bfloat16", "float16"])
def test_16_bit_linear_with_bias_rounds_once_on_cuda(dtype, cuda14_numpy_math):
    """x W^T + b as torch: product and bias in float32, rounded once. On cuda the 16-bit product came back
    rounded from cuBLAS and the bias was added in 16 bits: a second rounding (1 element in 4 differed)."""
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((64, 16), (24, 16), (24,)))
    outs = [ml.nn.functional.linear(*(ml.tensor(a, device=device) for a in (x, w, b))) for device in ("cpu", "cuda")]
    assert outs[1].dtype == dtype and outs[1].device.type == "cuda"
    np.testing.assert_array_equal(outs[1].cpu().numpy(), outs[0].numpy())


def test_per_sample_adapters_on_a_bf16_model_on_cuda(cuda14_numpy_math):
    """ops.bgmv on a 16-bit base (PEFT's mixed batch) took np.float32() of a CuPy 0-d scale: CuPy refuses
    that implicit conversion. Two adapters, a base row, forward and backward as on cpu without the CPU kernels'
    own roundings, bit for bit."""
    results = []
    for device in ("cpu", "cuda"):
        with without_cpu_kernel_roundings():
            results.append(_per_sample_adapter_run(device))
    assert len(results[1]) == len(results[0]) > 1
    for on_cpu, on_cuda in zip(*results):
        assert on_cuda.dtype == on_cpu.dtype and on_cuda.device.type == "cuda"
        np.testing.assert_array_equal(on_cuda.cpu().numpy(), on_cpu.numpy())


def _per_sample_adapter_run(device):
    """A bf16 tiny Llama with adapters "default" and "b", a mixed batch's logits and their gradients."""
    ml.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(1), dtype="bfloat16", device=device)
    cfg = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(model, LoraConfig(**cfg))
    model.add_adapter("b", LoraConfig(**cfg))
    model.eval()  # per-sample adapters are for inference (PEFT's rule); gradients still flow
    ids = ml.tensor(np.arange(18).reshape(3, 6) % 64, device=device)
    logits = model(ids, adapter_names=["default", "b", "__base__"]).logits
    logits.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return [logits] + grads


def test_bf16_lora_llama_on_the_kernel_path_on_cuda(emulated_launches, monkeypatch):
    """The GPU run's path: every LoRA layer of a bf16 Llama on lora_bf16.cu (emulated launches), forward and
    backward, two steps. AdamW steps with kernels off: its fused multi-tensor kernel reads device pointers
    (``.data.ptr``), which the stand-in has not. The kernels round Y once where PEFT's math (cpu) rounds the
    base output, then the sum: the losses agree to a bf16 rounding, not bit for bit."""
    cuda = _device("cuda")
    runs = {}
    for device in ("cpu", "cuda"):
        ml.manual_seed(0)
        model = get_peft_model(LlamaForCausalLM(tiny_config(1), dtype="bfloat16", device=device),
                               LoraConfig(r=4, target_modules="all-linear"))
        trained = [p for p in model.parameters() if p.requires_grad]
        opt = AdamW(trained, lr=1e-2)
        ids = ml.tensor(np.arange(16).reshape(2, 8) % 64, device=device)
        losses = []
        for _ in range(2):
            loss = model(ids, labels=ids).loss
            loss.backward()
            assert {p.grad.dtype for p in trained} == {np.dtype(np.float32)}
            with monkeypatch.context() as step:
                step.setattr(cuda, "uses_kernels", False)
                opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        runs[device] = losses, [p.detach().cpu().numpy() for p in trained]
    assert {"lora_bf16_fwd_u", "lora_bf16_bwd_dy", "lora_bf16_bwd_da"} <= set(emulated_launches)
    assert any(n.startswith("lora_bf16_fwd_y") for n in emulated_launches)
    assert any(n.startswith("lora_bf16_bwd_dx") for n in emulated_launches)
    np.testing.assert_allclose(runs["cuda"][0], runs["cpu"][0], rtol=2.0**-8)
    for ours, reference in zip(runs["cuda"][1], runs["cpu"][1]):
        np.testing.assert_allclose(ours, reference, rtol=0.05, atol=1e-2)  # two Adam steps of lr 1e-2


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16bit_losses_on_cuda(cuda14, dtype, reduction):
    """cross_entropy (nll_loss's reduction) and binary_cross_entropy_with_logits on 16-bit cuda tensors.
    torch's CPU kernel adds nll's row losses in a 16-bit cascade (minilora's cpu does too); its CUDA
    kernel sums them in float32 and rounds once, which cuda follows here. The cascade's NumPy scalars
    failed on CuPy ('expected number, got ndarray')."""
    rng = np.random.default_rng(0)
    logits, target = rng.standard_normal((37, 11)).astype(np.float32), rng.integers(0, 11, 37)
    target[3] = -100
    results = {}
    for dev in ("cpu", "cuda"):
        x = ml.tensor(logits, dtype=getattr(ml, dtype), device=dev, requires_grad=True)
        loss = ml.nn.functional.cross_entropy(x, ml.tensor(target, device=dev), reduction=reduction)
        loss.sum().backward()
        rows = ml.nn.functional.cross_entropy(x.detach(), ml.tensor(target, device=dev), reduction="none")
        y = ml.tensor(logits > 0, dtype=getattr(ml, dtype), device=dev)
        bce = ml.nn.functional.binary_cross_entropy_with_logits(x.detach(), y, reduction=reduction)
        results[dev] = [t.float().cpu().numpy() for t in (loss, x.grad, rows, bce)]
    cpu, cuda = results["cpu"], results["cuda"]
    np.testing.assert_array_equal(cuda[2], cpu[2])  # the row losses: the same 16-bit ops
    np.testing.assert_array_equal(cuda[3], cpu[3])
    if reduction == "none":
        np.testing.assert_array_equal(cuda[0], cpu[0])
    else:  # float32 sum of the 16-bit row losses, rounded once (torch's CUDA kernel)
        total = cuda[2].astype(np.float32).sum(dtype=np.float32)
        expected = total / np.float32(36) if reduction == "mean" else total
        assert cuda[0] == np.float32(expected).astype(dtype).astype(np.float32)
    np.testing.assert_allclose(cuda[1], cpu[1], rtol=1e-2, atol=1e-6)  # (mean: divisor 36 either way)
