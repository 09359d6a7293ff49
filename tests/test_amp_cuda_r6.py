"""``autocast("cuda")`` / ``autocast("emu")``: torch's CUDA op tables on minilora's GPU devices, side by
side with torch 2.13.

torch's CUDA autocast runs here without a GPU: its AutocastCUDA kernels are in every build, and a
FakeTensor that says ``device="cuda"`` (no storage) carries the AutocastCUDA key, so with CUDA's autocast
switched on torch's own wrappers cast it and report the dtypes each op runs and returns in. That is the
oracle for the dtypes; the tables themselves are checked against torch's dispatcher (which aten ops have an
AutocastCUDA kernel). Values: each op on ``emu`` inside a region against minilora's CPU computation of the
same casts (outside any region). Then a LoRA layer and a tiny Llama under autocast on emu, as transformers
on CUDA (logits 16-bit, loss float32, float32 gradients), and ``autocast("cuda")`` on the CuPy stand-in.
Skipped without torch."""
import contextlib
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")

import minilora as ml  # noqa: E402
import minilora.nn.functional as MF  # noqa: E402
import torch.nn.functional as TF  # noqa: E402
from minilora import amp  # noqa: E402

RNG = np.random.default_rng(0)
F32, F64, LOW, I64 = "float32", "float64", "low", "int64"


@contextlib.contextmanager
def torch_cuda_autocast(dtype):
    """torch's CUDA autocast switched on (``torch.autocast("cuda")`` itself refuses without a GPU) over
    FakeTensors on "cuda"."""
    before = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    try:
        with fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):  # (a meta model's to_empty)
            yield
    finally:
        torch.set_autocast_enabled("cuda", before[0])
        torch.set_autocast_dtype("cuda", before[1])
        torch.clear_autocast_cache()


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


# ---- op by op: (label, call on (module, F, *inputs), inputs as (shape, dtype[, high for int64])) ----------
M = [((4, 3), F32), ((3, 5), F32)]
X = [((3, 5), LOW)]
XF = [((3, 5), F32)]
U = [((3, 5), LOW, "unit")]  # values in (0.05, 0.45): asin's domain, probabilities
TARGET = ((3,), I64, 5)
OPS = [
    # lower precision
    ("linear", lambda m, F, a, w, b: F.linear(a, w, b), [((3, 4), F32), ((5, 4), F32), ((5,), F32)]),
    ("matmul", lambda m, F, a, b: m.matmul(a, b), M),
    ("@", lambda m, F, a, b: a @ b, [((2, 4, 3), F32), ((3, 5), F32)]),
    ("mm", lambda m, F, a, b: a.mm(b), M),
    ("bmm", lambda m, F, a, b: m.bmm(a, b), [((2, 4, 3), F32), ((2, 3, 5), F32)]),
    ("addmm", lambda m, F, c, a, b: m.addmm(c, a, b, beta=0.5), [((4, 5), F32)] + M),
    ("baddbmm", lambda m, F, c, a, b: m.baddbmm(c, a, b), [((2, 4, 5), F32), ((2, 4, 3), F32), ((2, 3, 5), F32)]),
    ("addbmm", lambda m, F, c, a, b: m.addbmm(c, a, b), [((4, 5), F32), ((2, 4, 3), F32), ((2, 3, 5), F32)]),
    ("mv", lambda m, F, a, v: m.mv(a, v), [((4, 3), F32), ((3,), F32)]),
    ("addmv", lambda m, F, c, a, v: m.addmv(c, a, v), [((4,), F32), ((4, 3), F32), ((3,), F32)]),
    ("addr", lambda m, F, c, a, b: m.addr(c, a, b), [((4, 3), F32), ((4,), F32), ((3,), F32)]),
    ("einsum", lambda m, F, a, b: m.einsum("ij,jk->ik", a, b), M),
    ("einsum transpose", lambda m, F, a: m.einsum("ij->ji", a), XF),
    ("vector_norm", lambda m, F, a: m.linalg.vector_norm(a), X),
    ("matrix_norm", lambda m, F, a: m.linalg.matrix_norm(a), X),
    ("vector_norm dtype=", lambda m, F, a: m.linalg.vector_norm(a, dtype=getattr(m, "float64")), XF),
    ("multi_dot", lambda m, F, a, b, c: m.linalg.multi_dot([a, b, c]), M + [((5, 2), F32)]),
    ("vecdot", lambda m, F, a, b: m.linalg.vecdot(a, b), XF + XF),
    ("index_put", lambda m, F, a, t, v: a.index_put((t,), v), [((5, 3), LOW), ((2,), I64, 5), ((2, 3), F32)]),
    ("cdist", lambda m, F, a, b: m.cdist(a, b), X + [((4, 5), LOW)]),
    ("normalize", lambda m, F, a: F.normalize(a), X), ("dist", lambda m, F, a, b: m.dist(a, b), X + X),
    ("conv1d", lambda m, F, a, w: F.conv1d(a, w, padding=1), [((2, 3, 8), F32), ((4, 3, 3), F32)]),
    ("conv2d", lambda m, F, a, w, b: F.conv2d(a, w, b), [((1, 2, 5, 5), F32), ((3, 2, 3, 3), F32), ((3,), F32)]),
    ("conv_transpose1d", lambda m, F, a, w: F.conv_transpose1d(a, w), [((1, 2, 5), F32), ((2, 3, 3), F32)]),
    ("prelu", lambda m, F, a, w: F.prelu(a, w), [((2, 3, 4), F32), ((3,), F32)]),
    ("sdpa", lambda m, F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     [((1, 2, 4, 8), F32)] * 3),
    ("float64 stays", lambda m, F, a, b: a @ b, [((4, 3), F64), ((3, 5), F64)]),
    # float32
    ("exp", lambda m, F, a: a.exp(), X), ("torch.exp", lambda m, F, a: m.exp(a), X),
    ("log", lambda m, F, a: m.log(a.abs()), X), ("log2", lambda m, F, a: a.abs().log2(), X),
    ("log10", lambda m, F, a: m.log10(a.abs()), X), ("log1p", lambda m, F, a: a.abs().log1p(), X),
    ("expm1", lambda m, F, a: a.expm1(), X), ("rsqrt", lambda m, F, a: a.abs().rsqrt(), X),
    ("reciprocal", lambda m, F, a: a.reciprocal(), X),
    ("** 2", lambda m, F, a: a ** 2, X), ("pow tensor", lambda m, F, a, b: m.pow(a.abs(), b), X + X),
    ("2 ** x", lambda m, F, a: 2 ** a, X), ("pow of float32", lambda m, F, a: a.pow(3), XF),
    ("tan", lambda m, F, a: a.tan(), X), ("sinh", lambda m, F, a: m.sinh(a), X), ("cosh", lambda m, F, a: a.cosh(), X),
    ("asin", lambda m, F, a: a.asin(), U), ("acos", lambda m, F, a: m.acos(a), U),
    ("softplus", lambda m, F, a: F.softplus(a), X),
    ("layer_norm", lambda m, F, a, w: F.layer_norm(a, (5,), w), X + [((5,), F32)]),
    ("layer_norm all 16-bit", lambda m, F, a, w, b: F.layer_norm(a, (5,), w, b), X + [((5,), LOW)] * 2),
    ("group_norm", lambda m, F, a: F.group_norm(a, 2), [((2, 4, 3), LOW)]),
    ("rms_norm", lambda m, F, a, w: F.rms_norm(a, (5,), w), X + [((5,), LOW)]),
    ("cosine_similarity", lambda m, F, a, b: F.cosine_similarity(a, b), X + X),
    ("logsumexp", lambda m, F, a: a.logsumexp(-1), X),
    ("mse_loss", lambda m, F, a, b: F.mse_loss(a, b), X + XF),
    ("l1_loss", lambda m, F, a, b: F.l1_loss(a, b), X + X),
    ("smooth_l1_loss", lambda m, F, a, b: F.smooth_l1_loss(a, b), X + X),
    ("huber_loss", lambda m, F, a, b: F.huber_loss(a, b), X + X),
    ("cross_entropy", lambda m, F, a, t: F.cross_entropy(a, t), X + [TARGET]),
    ("cross_entropy smoothed", lambda m, F, a, t: F.cross_entropy(a, t, label_smoothing=0.1), X + [TARGET]),
    ("nll_loss", lambda m, F, a, t: F.nll_loss(a, t), X + [TARGET]),
    ("kl_div", lambda m, F, a, b: F.kl_div(a, b, reduction="batchmean"), X + X),
    ("bce_with_logits", lambda m, F, a, b: F.binary_cross_entropy_with_logits(a, b), X + U),
    ("soft_margin_loss", lambda m, F, a, b: F.soft_margin_loss(a, b), X + X),
    ("margin_ranking_loss", lambda m, F, a, b, c: F.margin_ranking_loss(a, b, c.sign()), X * 3),
    ("cosine_embedding_loss", lambda m, F, a, b, t: F.cosine_embedding_loss(a, b, t.sign()), X + X + [((3,), LOW)]),
    ("poisson_nll_loss", lambda m, F, a, b: F.poisson_nll_loss(a, b.abs()), X + X),
    ("interpolate nearest", lambda m, F, a: F.interpolate(a, scale_factor=2), [((1, 2, 4), LOW)]),
    ("interpolate bilinear", lambda m, F, a: F.interpolate(a, size=(6, 5), mode="bilinear"), [((1, 2, 4, 3), LOW)]),
    ("interpolate nearest-exact", lambda m, F, a: F.interpolate(a, scale_factor=2, mode="nearest-exact"),
     [((1, 1, 2, 3, 2), LOW)]),
    ("interpolate bicubic", lambda m, F, a: F.interpolate(a, size=(5, 5), mode="bicubic"), [((1, 1, 3, 3), LOW)]),
    ("interpolate area (not listed)", lambda m, F, a: F.interpolate(a, size=(2, 2), mode="area"),
     [((1, 1, 4, 4), LOW)]),
    # float32 unless the call names a dtype (fp32_set_opt_dtype; norm's fp32_append_dtype)
    ("sum", lambda m, F, a: a.sum(), X), ("sum dim", lambda m, F, a: m.sum(a, 1, keepdim=True), X),
    ("sum dtype=", lambda m, F, a: a.sum(dtype=getattr(m, "bfloat16")), X),
    ("sum of ints", lambda m, F, t: t.sum(), [TARGET]),
    ("softmax", lambda m, F, a: a.softmax(-1), X), ("F.softmax", lambda m, F, a: F.softmax(a, dim=0), X),
    ("softmax dtype", lambda m, F, a: m.softmax(a, -1, getattr(m, "float16")), X),
    ("log_softmax", lambda m, F, a: F.log_softmax(a, -1), X),
    ("cumsum", lambda m, F, a: a.cumsum(0), X), ("cumprod", lambda m, F, a: m.cumprod(a, 1), X),
    ("prod", lambda m, F, a: a.prod(), X), ("prod dim", lambda m, F, a: a.prod(1), X),
    ("norm", lambda m, F, a: a.norm(), X), ("norm p dim", lambda m, F, a: m.norm(a, 1, 1), X),
    # the widest of the inputs
    ("addcmul", lambda m, F, a, b, c: m.addcmul(a, b, c, value=0.5), X + XF + X),
    ("addcdiv", lambda m, F, a, b, c: a.addcdiv(b, c.abs() + 1), X + X + X),
    ("atan2", lambda m, F, a, b: m.atan2(a, b), X + XF),
    ("dot", lambda m, F, a, b: m.dot(a, b), [((4,), LOW), ((4,), F32)]),
    ("dot of two float32", lambda m, F, a, b: a.dot(b), [((4,), F32)] * 2),
    ("vdot", lambda m, F, a, b: m.vdot(a, b), [((4,), LOW)] * 2),
    ("cross", lambda m, F, a, b: m.cross(a, b, dim=-1), [((2, 3), LOW), ((2, 3), F32)]),
    ("tensordot", lambda m, F, a, b: m.tensordot(a, b, 1), M),
    ("scatter_add", lambda m, F, a, b: a.scatter_add(0, (b.abs() * 0).long(), b), X + XF),
    ("bilinear", lambda m, F, a, b, w: F.bilinear(a, b, w), [((2, 3), F32), ((2, 4), LOW), ((5, 3, 4), F32)]),
    # on no list: as without autocast
    ("add", lambda m, F, a, b: a + b, X + XF), ("mul 16-bit", lambda m, F, a: a * 3, X),
    ("silu", lambda m, F, a: F.silu(a), X), ("gelu", lambda m, F, a: F.gelu(a), X),
    ("gelu tanh", lambda m, F, a: F.gelu(a, approximate="tanh"), X), ("tanh", lambda m, F, a: a.tanh(), X),
    ("sigmoid", lambda m, F, a: a.sigmoid(), X), ("sqrt", lambda m, F, a: a.abs().sqrt(), X),
    ("mean", lambda m, F, a: a.mean(-1), X), ("var", lambda m, F, a: a.var(0), X),
    ("max", lambda m, F, a: a.amax(0), X), ("cat", lambda m, F, a, b: m.cat([a, b]), X + XF),
    ("stack", lambda m, F, a, b: m.stack([a, b]), X + X), ("dropout eval", lambda m, F, a: F.dropout(a, 0.5, False), X),
    ("embedding", lambda m, F, t, w: F.embedding(t, w), [TARGET, ((5, 4), F32)]),
    ("trace", lambda m, F, a: a.trace(), X), ("exp of float64", lambda m, F, a: a.exp(), [((3,), F64)]),
]


def torch_dtypes(call, specs, low):
    """The dtype of torch's result on CUDA, under CUDA autocast to ``low``."""
    with torch_cuda_autocast(low):
        inputs = [torch.zeros(shape, dtype=low if dtype == LOW else getattr(torch, dtype), device="cuda")
                  for shape, dtype, *_ in specs]
        return dtype_name(call(torch, TF, *inputs).dtype)


def minilora_inputs(specs, low, device):
    inputs = []
    for shape, dtype, *kind in specs:
        if dtype == I64:
            inputs.append(ml.tensor(RNG.integers(0, kind[0], shape), device=device))
            continue
        values = (RNG.uniform(0.05, 0.45, shape) if kind else RNG.standard_normal(shape)).astype(np.float32)
        inputs.append(ml.tensor(values, device=device).to(low if dtype == LOW else getattr(ml, dtype)))
    return inputs


TOLERANCE = {"bfloat16": 2e-2, "float16": 2e-3, "float32": 1e-5, "float64": 1e-12}


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
@pytest.mark.parametrize("label, call, specs", OPS, ids=[op[0] for op in OPS])
def test_op_dtype_as_torch_cuda_and_values_as_cpu_casts(label, call, specs, low):
    """Inside autocast("emu", low) an op returns torch's CUDA dtype; its values are minilora's CPU result
    of the same call on inputs cast to that dtype (float64 and integers never cast), outside any region."""
    expected = torch_dtypes(call, specs, getattr(torch, low))
    inputs = minilora_inputs(specs, getattr(ml, low), "emu")
    with ml.autocast("emu", dtype=getattr(ml, low)):
        ours = call(ml, MF, *inputs)
    assert dtype_name(ours.dtype) == expected, label
    if not ml.is_floating_point(ours):
        return
    on_cpu = [t.cpu() if t.dtype in (ml.float64, ml.int64) else t.cpu().to(getattr(ml, expected)) for t in inputs]
    reference = call(ml, MF, *on_cpu)
    assert dtype_name(reference.dtype) == expected
    np.testing.assert_allclose(ours.cpu().double().numpy(), reference.double().numpy(),
                               rtol=TOLERANCE[expected], atol=TOLERANCE[expected], err_msg=label)


def test_binary_cross_entropy_is_refused_as_torch_refuses_it_on_cuda():
    with torch_cuda_autocast(torch.float16):
        a = torch.zeros(3, device="cuda")
        with pytest.raises(RuntimeError) as theirs:
            TF.binary_cross_entropy(a, a)
    a = ml.full((3,), 0.5, device="emu")
    with ml.autocast("emu"), pytest.raises(RuntimeError) as ours:
        MF.binary_cross_entropy(a, a)
    assert str(ours.value) == str(theirs.value).split("\n\nException raised from")[0]
    assert MF.binary_cross_entropy(a, a).dtype == ml.float32  # (outside a region: as ever)


# ---- the tables, against torch's dispatcher ----------------------------------------------------------
ATEN = {"conv_transpose1d": "conv_transpose1d", "conv_transpose2d": "conv_transpose2d.input",
        "conv_transpose3d": "conv_transpose3d.input",
        "pow": "pow.Tensor_Scalar", "softmax": "softmax.int", "log_softmax": "log_softmax.int",
        "norm": "norm.Scalar", "vector_norm": "linalg_vector_norm", "matrix_norm": "linalg_matrix_norm",
        "multi_dot": "linalg_multi_dot", "vecdot": "linalg_vecdot",
        "frobenius_norm": "frobenius_norm.dim", "ctc_loss": "ctc_loss.IntList"}
# minilora's names for what torch builds from listed ops (see amp._CUDA_TABLE)
COMPOSITES = {"cross_entropy": "cross_entropy_loss", "lora_linear": None, "einsum_no_contraction": None}


def has_cuda_autocast(aten_name):
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{aten_name}", "AutocastCUDA")


def test_every_cuda_table_entry_is_on_torchs_autocast_cuda_list():
    listed = [n for n in amp._CUDA_TABLE if n not in COMPOSITES]
    assert [n for n in listed if not has_cuda_autocast(ATEN.get(n, n))] == []
    modules = {"lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"}  # (nn.LSTMCell ...)
    assert [n for n in listed if not (minilora_has(n) or n in amp._CPU_TABLE or n in modules or "upsample" in n)] == []
    assert not has_cuda_autocast("cross_entropy_loss") and has_cuda_autocast("log_softmax.int")


# torch's AutocastCUDA ops that minilora has under the same name but runs as called (torch's word, with why)
KNOWN_GAPS = {}


def minilora_has(aten_name):
    return any(hasattr(ns, name) for ns, name in ((ml, aten_name), (MF, aten_name),
                                                    (ml.linalg, aten_name.removeprefix("linalg_"))))


def test_every_op_on_torchs_cuda_list_that_minilora_has_is_in_its_table():
    names = {n[len("aten::"):].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
             if n.startswith("aten::") and has_cuda_autocast(n[len("aten::"):])}
    ours = {n.removeprefix("linalg_") for n in names if minilora_has(n)}
    assert sorted(ours - set(amp._CUDA_TABLE) - set(KNOWN_GAPS)) == []


def test_ops_on_the_cpu_list_only_run_as_called_on_cuda():
    """cat, stack, index_copy, trace, quantile, pads ...: torch's CPU list has them, its CUDA list not."""
    cpu_only = [n for n in amp._CPU_TABLE if n not in amp._CUDA_TABLE and n != "mkldnn_rnn_layer"]
    assert "cat" in cpu_only and "trace" in cpu_only
    assert [n for n in cpu_only if has_cuda_autocast(ATEN.get(n, n))] == []


# ---- a LoRA layer and a tiny Llama on emu --------------------------------------------------------------
def test_lora_layer_on_emu_as_peft_on_cuda():
    """PEFT's LoRA Linear under CUDA autocast is three F.linear calls (base_layer, lora_A, lora_B), each
    16-bit (F.linear's dtype above is torch's): the output in the region's dtype, the float32 weights'
    gradients float32; values as the same layer's linears on the CPU with bf16 inputs. (torch aborts
    running PEFT's layer on FakeTensors, so torch's layer itself is not run here.)"""
    ml.manual_seed(0)
    base = ml.nn.Sequential(ml.nn.Linear(4, 3)).to("emu")
    model = ml.lora.get_peft_model(base, ml.lora.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    x = ml.randn(2, 4, device="emu")
    with ml.autocast("emu", dtype=ml.bfloat16):
        ours = model(x)
    ours.float().sum().backward()
    our_grads = {n: dtype_name(p.grad.dtype) for n, p in model.named_parameters() if p.requires_grad}
    assert dtype_name(ours.dtype) == "bfloat16" and len(our_grads) == 2
    assert our_grads == {k: "float32" for k in our_grads}
    with ml.no_grad():  # values: the same layer's CPU result of the same casts (each linear's inputs in bf16)
        cpu = model.to("cpu")
        lora_A, lora_B = cpu.base_model.model[0].lora_A["default"], cpu.base_model.model[0].lora_B["default"]
        bf = ml.bfloat16
        xb = x.cpu().to(bf)
        base_out = MF.linear(xb, cpu.base_model.model[0].base_layer.weight.to(bf),
                             cpu.base_model.model[0].base_layer.bias.to(bf))
        lora_out = MF.linear(MF.linear(xb, lora_A.weight.to(bf)), lora_B.weight.to(bf))
        scale = cpu.base_model.model[0].scaling["default"]
        np.testing.assert_allclose(ours.cpu().float().numpy(), (base_out + lora_out * scale).float().numpy(),
                                   rtol=2e-2, atol=2e-2)


def tiny_llama(device):
    ml.manual_seed(0)
    config = ml.models.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return ml.models.LlamaForCausalLM(config).to(device)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_tiny_llama_with_lora_on_emu_as_transformers_on_cuda(low):
    """transformers' Llama under CUDA autocast: logits in the region's dtype (lm_head is a linear),
    the loss float32 (it upcasts the logits), every float32 parameter's gradient float32; minilora's on
    emu the same, and its loss the CPU model's under autocast-free casts within bf16 rounding."""
    model = ml.lora.get_peft_model(tiny_llama("emu"), ml.lora.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ids = ml.tensor([[1, 5, 7, 3, 2, 9]], device="emu")
    with ml.autocast("emu", dtype=getattr(ml, low)):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert (dtype_name(out.logits.dtype), dtype_name(out.loss.dtype)) == (low, "float32")
    grads = {dtype_name(p.grad.dtype) for p in model.parameters() if p.requires_grad}
    assert grads == {"float32"} and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    plain = model(input_ids=ids, labels=ids).loss  # (outside the region: float32 throughout)
    assert abs(out.loss.item() - plain.item()) < 0.05 and out.loss.item() != plain.item()


def test_gradients_of_an_fp32_op_and_a_lower_op_come_back_in_the_inputs_dtypes():
    w = ml.randn(5, 4, device="emu", requires_grad=True)
    h = ml.randn(3, 4, device="emu", dtype=ml.bfloat16, requires_grad=True)
    with ml.autocast("emu", dtype=ml.bfloat16):
        y = MF.linear(h, w).exp().sum()
    y.backward()
    assert (y.dtype, w.grad.dtype, h.grad.dtype) == (ml.float32, ml.float32, ml.bfloat16)


# ---- the region on "cuda" (CuPy's stand-in) and GradScaler ------------------------------------------
def test_autocast_cuda_on_the_cupy_stand_in(monkeypatch):
    """With a GPU (the stand-in) autocast("cuda") is on: CUDA's tables for cuda tensors, CPU tensors
    untouched (as torch); a GradScaler("cuda") step of a float16 region."""
    import fake_cupy
    fake_cupy.install(monkeypatch)
    monkeypatch.setattr(ml.device("cuda"), "uses_kernels", False)  # the stand-in launches no kernels
    layer = ml.nn.Linear(4, 3, device="cuda")
    x, on_cpu = ml.randn(2, 4, device="cuda"), ml.randn(2, 3)
    optimizer = ml.optim.SGD(layer.parameters(), lr=0.1)
    scaler = ml.amp.GradScaler("cuda", init_scale=8.0)
    with ml.autocast("cuda"):
        y = layer(x)
        loss = y.softmax(-1).log().mean()
        cpu_side = on_cpu.half().exp()
    assert (y.dtype, loss.dtype, cpu_side.dtype) == (ml.float16, ml.float32, ml.float16)
    scaler.scale(loss).backward()
    assert layer.weight.grad.dtype == ml.float32
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 8.0 and layer.weight.device.type == "cuda"


def test_autocast_cuda_without_a_gpu_is_still_torchs_warning_and_off():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        region = ml.autocast("cuda")
    if ml.cuda.is_available():
        pytest.skip("a GPU answers")
    assert not region._enabled and "CUDA is not available" in str(caught[0].message)


def test_outside_a_region_the_hooks_are_one_flag():
    assert amp.active is False
    with ml.autocast("emu"):
        assert amp.active is True
        with ml.autocast("emu", enabled=False):
            assert amp.active is False
    assert amp.active is False


@pytest.mark.parametrize("label, call, shapes", [
    ("addbmm (on torch's CPU list too)", lambda m, c, a, b: m.addbmm(c, a, b), [(4, 5), (2, 4, 3), (2, 3, 5)]),
    ("addmv (on CUDA's list only)", lambda m, c, a, v: m.addmv(c, a, v), [(4,), (4, 3), (3,)]),
    ("einsum transpose (CUDA's only)", lambda m, a: m.einsum("ij->ji", a), [(2, 3)]),
    ("exp (CUDA's only)", lambda m, a: m.exp(a), [(3,)]),
    ("sum (CUDA's only)", lambda m, a: a.half().sum(), [(3,)]),
    ("cdist (float32 on both lists)", lambda m, a, b: m.cdist(a.bfloat16(), b.bfloat16()), [(3, 2), (4, 2)]),
    ("multi_dot (through mm on the CPU)", lambda m, a, b, c: m.linalg.multi_dot([a, b, c]), [(4, 3), (3, 5), (5, 2)]),
    ("vecdot (on the CPU list)", lambda m, a, b: m.linalg.vecdot(a, b), [(4, 3), (4, 3)]),
    ("interpolate bilinear (CUDA's only)",
     lambda m, a: m.nn.functional.interpolate(a.bfloat16(), scale_factor=2, mode="bilinear"), [(1, 1, 2, 2)]),
    ("tensordot (through mm on the CPU)", lambda m, a, b: m.tensordot(a, b, 1), [(4, 3), (3, 5)]),
])
def test_the_new_hooks_keep_torchs_cpu_dtypes(label, call, shapes):
    """The ops hooked for CUDA's tables still follow the CPU's in a CPU region (real torch, CPU autocast)."""
    with torch.autocast("cpu"):
        theirs = call(torch, *[torch.zeros(s) for s in shapes])
    with ml.autocast("cpu"):
        ours = call(ml, *[ml.zeros(s) for s in shapes])
    assert dtype_name(ours.dtype) == dtype_name(theirs.dtype), label


@pytest.mark.parametrize("cls, kwargs", [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {}),
                                         ("RNNCell", {"nonlinearity": "relu"})])
def test_rnn_cells_run_in_16_bit_as_torchs_cuda_cells(cls, kwargs):
    """torch's lstm_cell / gru_cell / rnn_*_cell are on CUDA's lower-precision list (one op each: input,
    state and weights cast; torch cannot run them on FakeTensors, so the dispatcher test above is its
    word): the new state 16-bit, float32 weights' gradients float32, values as the cell in bf16 on the CPU."""
    ml.manual_seed(0)
    cell = getattr(ml.nn, cls)(4, 3, **kwargs).to("emu")
    x = ml.randn(2, 4, device="emu")
    with ml.autocast("emu", dtype=ml.bfloat16):
        out = cell(x)
    states = out if isinstance(out, tuple) else (out,)
    assert {s.dtype for s in states} == {ml.bfloat16}
    sum(s.float().sum() for s in states).backward()
    assert {p.grad.dtype for p in cell.parameters()} == {ml.float32}
    with ml.no_grad():
        reference = cell.to("cpu").to(ml.bfloat16)(x.cpu().to(ml.bfloat16))
    for ours, theirs in zip(states, reference if isinstance(reference, tuple) else (reference,)):
        np.testing.assert_allclose(ours.detach().cpu().float().numpy(), theirs.float().numpy(), rtol=2e-2, atol=2e-2)


def test_out_calls_are_not_cast():
    """torch: "calls that explicitly supply an out=... Tensor ... won't go through autocasting"."""
    x, w = ml.randn(3, 4, device="emu"), ml.randn(4, 2, device="emu")
    out, dots = ml.empty(3, 2, device="emu"), ml.empty(3, device="emu")
    with ml.autocast("emu"):
        ml.mm(x, w, out=out)
        ml.linalg.vecdot(x, x, out=dots)
    expected = (x.cpu() @ w.cpu()).numpy(), (x.cpu() * x.cpu()).sum(-1).numpy()
    for ours, theirs in zip((out, dots), expected):
        assert ours.dtype == ml.float32
        np.testing.assert_allclose(ours.cpu().numpy(), theirs, rtol=1e-5, atol=1e-5)
