"""LoRA on a bfloat16 model as PEFT users train it (issue 16, CPU side), side by side with PEFT + torch bf16.

The base weights and activations are bfloat16; with ``autocast_adapter_dtype=True`` (PEFT's default) the
adapters are float32 and each LoRA layer computes ``round16(round16(x W0^T + b) + s B A x)``: the base
layer rounded once, the adapter branch in float32, the sum rounded once more. The same model is built in
torch + PEFT and in minilora with the same weights, and forward output, loss, gradients, three AdamW steps,
merging and the adapter file are compared.

Tolerances: one ``lora_linear`` (forward and dX) agrees with torch bit for bit (its float32 sums are
rounded to bfloat16 once, so NumPy's and torch's float32 summation orders almost never show). Through a
whole model a float32 sum that lands on a bfloat16 rounding boundary can round the other way and move
one element by one bfloat16 ulp (2^-8 relative), which then flows on: there we use torch's own
bfloat16 tolerance (``torch.testing.assert_close``: rtol 1.6e-2, atol 1e-5) and check every dtype.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
from minilora import kernels, nn, ops  # noqa: E402
from minilora.lora import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from minilora.ops.lora import LoraLinear, lora_dropout_mask  # noqa: E402

BF16 = ml.bfloat16
BF16_TOL = dict(rtol=1.6e-2, atol=1e-5)  # torch.testing.assert_close's defaults for bfloat16


def as_numpy(t):
    """A torch tensor's values as NumPy (bfloat16 by its bits: torch's .numpy() refuses bfloat16)."""
    t = t.detach()
    return t.view(torch.int16).numpy().view(BF16) if t.dtype == torch.bfloat16 else t.numpy()


def as_torch(a):
    a = a.numpy() if isinstance(a, ml.Tensor) else np.asarray(a)
    return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16) if a.dtype == BF16 else torch.from_numpy(a)


def dtype_name(t):
    return str(t.dtype).removeprefix("torch.")


def assert_bf16_close(ours, theirs, **tol):
    """Same dtype, and values within torch's bfloat16 tolerance (or ``tol``)."""
    ours_t = as_torch(ours)
    assert dtype_name(ours_t) == dtype_name(theirs), (ours_t.dtype, theirs.dtype)
    torch.testing.assert_close(ours_t.float(), theirs.detach().float(), **(tol or BF16_TOL))


# ---- the model: a Linear stack with a bias, an activation and two LoRA targets ---------------------
class TorchStack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(32, 48)
        self.v_proj = torch.nn.Linear(48, 16, bias=False)

    def forward(self, x):
        return self.v_proj(torch.nn.functional.silu(self.q_proj(x)))


class Stack(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.q_proj = nn.Linear(32, 48, dtype=dtype)
        self.v_proj = nn.Linear(48, 16, bias=False, dtype=dtype)

    def forward(self, x):
        return self.v_proj(nn.functional.silu(self.q_proj(x)))


def lora_config(lib, **kw):
    return lib.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                             "init_lora_weights": False, **kw})


def pair(autocast=True, **config):
    """(PEFT model, minilora model) on the same bf16 base weights with the same adapter weights."""
    torch.manual_seed(0)
    base = TorchStack().to(torch.bfloat16)
    theirs = peft.get_peft_model(base, lora_config(peft, **config), autocast_adapter_dtype=autocast)
    ours = get_peft_model(Stack(BF16), lora_config(ml.lora, **config), autocast_adapter_dtype=autocast)
    ours.load_state_dict({k: as_numpy(v) for k, v in theirs.state_dict().items()})
    return theirs, ours


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, 32, generator=g).to(torch.bfloat16)
    target = torch.randn(4, 6, 16, generator=g).to(torch.bfloat16)
    return x, target


def mse(out, target):
    """MSE in float32 on bf16 outputs, as a mixed-precision loss is usually taken (torch's and minilora's
    tensors alike)."""
    return ((out.float() - target.float()) ** 2).mean()


def adapter_params(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


# ==================================================================================================
# one op: ops.lora_linear against PEFT's lora.Linear.forward math in torch
# ==================================================================================================
def peft_math(x, W0, bias, A, B, s, multiplier=None):
    """What PEFT's lora.Linear.forward computes (torch autograd), written out: multiplier = dropout's mask."""
    result = torch.nn.functional.linear(x, W0, bias)
    xd = x.to(A.dtype)
    if multiplier is not None:
        xd = xd * multiplier
    return (result + (xd @ A.T) @ B.T * s).to(x.dtype)


def op_case(adapter_dtype, seed=0, M=37, K=48, N=40, r=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g).to(torch.bfloat16).requires_grad_()
    W0, bias = torch.randn(N, K, generator=g).to(torch.bfloat16), torch.randn(N, generator=g).to(torch.bfloat16)
    A = torch.randn(r, K, generator=g).to(adapter_dtype).requires_grad_()
    B = torch.randn(N, r, generator=g).to(adapter_dtype).requires_grad_()
    dY = torch.randn(M, N, generator=g).to(torch.bfloat16)
    return x, W0, bias, A, B, dY


def ours_of(*tensors, device="cpu"):
    return [ml.tensor(as_numpy(t), device=device, requires_grad=t.requires_grad) for t in tensors]


@pytest.mark.parametrize("adapter_dtype", [torch.float32, torch.bfloat16], ids=["fp32_adapters", "bf16_adapters"])
@pytest.mark.parametrize("p", [0.0, 0.3], ids=["no_dropout", "dropout"])
def test_lora_linear_is_peft_math_bit_for_bit(adapter_dtype, p):
    x, W0, bias, A, B, dY = op_case(adapter_dtype)
    s, seed = 2.0, 1234
    multiplier = None
    if p:  # our dropout mask, in torch: the mask divided by 1-p in the adapter's dtype (torch's dropout)
        keep = torch.from_numpy(lora_dropout_mask(seed, x.shape[0], x.shape[1], p))
        multiplier = keep.to(adapter_dtype) / (1 - p)
    want = peft_math(x, W0, bias, A, B, s, multiplier)
    want.backward(dY)
    xo, W0o, bo, Ao, Bo = ours_of(x, W0, bias, A, B)
    got = ops.lora_linear(xo, W0o, Ao, Bo, s, bias=bo, dropout_p=p, seed=seed)
    got.backward(ml.tensor(as_numpy(dY)))
    assert got.dtype == BF16 and xo.grad.dtype == BF16
    assert dtype_name(Ao.grad) == dtype_name(A) and dtype_name(Bo.grad) == dtype_name(B)
    np.testing.assert_array_equal(got.numpy(), as_numpy(want))  # forward: bit for bit
    np.testing.assert_array_equal(xo.grad.numpy(), as_numpy(x.grad))  # dX: bit for bit
    if adapter_dtype == torch.bfloat16:  # every product rounded to bf16: the same bits
        np.testing.assert_array_equal(Ao.grad.numpy(), as_numpy(A.grad))
        np.testing.assert_array_equal(Bo.grad.numpy(), as_numpy(B.grad))
    else:  # float32 sums in another order (NumPy's OpenBLAS; torch's MKL, whose order follows the CPU)
        # float32 rounding only: two orders of two chained k-long sums are at most 2 k 2^-24 sum|terms|
        # apart (the sizes of the terms, not of the result: 2.4e-5 at 1.39 on an AVX-512 EPYC, where
        # the terms reach ~100, and a fixed 1e-5 failed)
        xs, dYs, As, Bs = (np.abs(as_numpy(t)).astype(np.float64) for t in (x, dY, A, B))
        xs = xs / (1 - p)  # the dropout mask scales x by at most 1/(1-p)
        terms_A, terms_B = s * Bs.T @ dYs.T @ xs, s * dYs.T @ xs @ As.T
        k = sum(x.shape) + dY.shape[1]  # M + K + N covers both chains (M then K, N then M)
        np.testing.assert_array_less(np.abs(Ao.grad.numpy() - A.grad.numpy()), 2 * k * 2.0 ** -24 * terms_A)
        np.testing.assert_array_less(np.abs(Bo.grad.numpy() - B.grad.numpy()), 2 * k * 2.0 ** -24 * terms_B)


def test_lora_linear_refuses_adapters_of_a_third_dtype():
    x, W0, bias, A, B, _ = op_case(torch.float32)
    xo, W0o, bo, Ao, Bo = ours_of(x, W0, bias, A, B)
    with pytest.raises(TypeError, match="float32 on a float16/bfloat16 base"):
        ops.lora_linear(xo, W0o, Ao.double(), Bo.double(), 2.0, bias=bo)
    # x of another dtype than W0: the base product's refusal in torch's words (F.linear's, which PEFT's layer meets
    # first), a RuntimeError as torch's that is a TypeError too
    with pytest.raises(TypeError, match="expected m1 and m2 to have the same dtype, but got: float != c10::BFloat16"):
        ops.lora_linear(xo.float(), W0o, Ao, Bo, 2.0)


# ==================================================================================================
# the tensor-core kernels: dispatched on emu (the same path cuda takes), within one bf16 rounding
# ==================================================================================================
@pytest.mark.parametrize("M,K,N,r", [(33, 40, 24, 3), (70, 24, 72, 17)])  # ragged: no multiple of a tile
def test_bf16_base_with_fp32_adapters_runs_the_tensor_core_kernels_on_emu(monkeypatch, M, K, N, r):
    x, W0, bias, A, B, dY = op_case(torch.float32, M=M, K=K, N=N, r=r)
    calls = []
    for name in ("lora_forward_bf16", "lora_backward_bf16"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    cpu = ours_of(x, W0, bias, A, B)
    emu = ours_of(x, W0, bias, A, B, device="emu")
    outs = []
    for xo, W0o, bo, Ao, Bo in (cpu, emu):
        y = ops.lora_linear(xo, W0o, Ao, Bo, 2.0, bias=bo)
        y.backward(ml.tensor(as_numpy(dY), device=y.device))
        outs.append((y, xo.grad, Ao.grad, Bo.grad))
    assert calls == ["lora_forward_bf16", "lora_backward_bf16"]  # on emu only, forward and backward
    (y_cpu, dx_cpu, dA_cpu, dB_cpu), (y_emu, dx_emu, dA_emu, dB_emu) = outs
    assert y_emu.dtype == dx_emu.dtype == BF16 and dA_emu.dtype == dB_emu.dtype == np.float32
    # The kernel rounds Y = X W0^T + b + s U B^T once where PEFT rounds the base output first and then
    # the sum: they differ by at most a bf16 rounding of each (2^-8 of a number below 2^k is at most 2^(k-8))
    base = x.detach().float().numpy() @ W0.float().numpy().T + bias.float().numpy()
    y32, e32 = y_cpu.numpy().astype(np.float32), y_emu.numpy().astype(np.float32)
    bound = 2.0**-7 * (np.abs(y32) + np.abs(base))
    assert (np.abs(e32 - y32) <= bound).all()
    assert (e32 != y32).mean() < 0.2  # most elements: the same bits
    g, W0f, Af, Bf = (t.detach().double().numpy() for t in (dY, W0, A, B))
    dx_parts = np.abs(g @ W0f) + np.abs(2.0 * (g @ Bf) @ Af)  # the base's and the branch's dX, each rounded
    dx32, dx_e32 = dx_cpu.numpy().astype(np.float32), dx_emu.numpy().astype(np.float32)
    assert (np.abs(dx_e32 - dx32) <= 2.0**-7 * (np.abs(dx32) + dx_parts)).all()
    np.testing.assert_allclose(dA_emu.numpy(), dA_cpu.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dB_emu.numpy(), dB_cpu.numpy(), rtol=1e-4, atol=1e-3)


def test_dropout_on_emu_falls_back_to_the_numpy_math(monkeypatch):
    """The bf16 kernels have no dropout: with it, emu runs the same math as the CPU (bit for bit)."""
    x, W0, bias, A, B, dY = op_case(torch.float32, M=9, K=16, N=8, r=2)
    monkeypatch.setattr(kernels, "lora_forward_bf16", lambda *a, **k: pytest.fail("the bf16 kernel ran"))
    ys = []
    for device in ("cpu", "emu"):
        xo, W0o, bo, Ao, Bo = ours_of(x, W0, bias, A, B, device=device)
        y = ops.lora_linear(xo, W0o, Ao, Bo, 2.0, bias=bo, dropout_p=0.25, seed=7)
        y.backward(ml.tensor(as_numpy(dY), device=device))
        ys.append((y.numpy(), xo.grad.numpy(), Ao.grad.numpy()))
    for a, b in zip(*ys):
        np.testing.assert_array_equal(a, b)


def test_float32_and_16_bit_adapters_do_not_take_the_bf16_kernels():
    from minilora.ops.lora import bf16_kernel_applies
    x, W0, A, B = (np.zeros((2, 2), BF16),) * 2 + (np.zeros((2, 2), np.float32),) * 2
    assert bf16_kernel_applies(x, W0, A, B)
    assert not bf16_kernel_applies(x, W0, A, B, dropout_p=0.1)
    assert not bf16_kernel_applies(x, W0, x, W0)  # bf16 adapters: the NumPy math (PEFT rounds every product)
    assert not bf16_kernel_applies(x.astype(np.float16), W0.astype(np.float16), A, B)
    assert LoraLinear.kernel_supports(A, A, A, B) and not LoraLinear.kernel_supports(x, W0, x, W0)


# ==================================================================================================
# a model: adapter dtypes, forward, loss, gradients as PEFT
# ==================================================================================================
@pytest.mark.parametrize("autocast", [True, False])
def test_adapter_dtypes_as_peft(autocast):
    theirs, ours = pair(autocast)
    want = {n: dtype_name(p) for n, p in theirs.named_parameters()}
    got = {n: str(p.dtype) for n, p in ours.named_parameters()}
    assert got == want
    assert {want[n] for n in want if "lora_" in n} == ({"float32"} if autocast else {"bfloat16"})
    assert {want[n] for n in want if "base_layer" in n} == {"bfloat16"}


@pytest.mark.parametrize("autocast", [True, False])
def test_forward_loss_and_gradients_as_peft(autocast):
    theirs, ours = pair(autocast)
    x, target = batch()
    out_t = theirs(x)
    loss_t = mse(out_t, target)
    loss_t.backward()
    out = ours(ml.tensor(as_numpy(x)))
    loss = mse(out, ml.tensor(as_numpy(target)))
    loss.backward()
    assert out.dtype == BF16 and loss.dtype == np.float32
    # The first LoRA layer's output is bit-exact (test above); silu and the second layer may move one
    # element by one bf16 ulp where a float32 sum lands on a rounding boundary.
    assert_bf16_close(out, out_t)
    assert (out.numpy() != as_numpy(out_t)).mean() < 0.01  # almost every element is the same bits
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-3)
    grads_t = {n: p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    grads = {n: p.grad for n, p in adapter_params(ours).items()}
    assert grads.keys() == grads_t.keys()
    for name in grads:
        assert_bf16_close(grads[name], grads_t[name], rtol=2e-2, atol=1e-4)


def test_three_adamw_steps_as_peft_with_torch_adamw():
    """fp32 adapters and fp32 AdamW state on a bf16 base, three steps: the adapter weights as torch's."""
    theirs, ours = pair(autocast=True)
    opt_t = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    opt = ml.optim.AdamW(list(adapter_params(ours).values()), lr=1e-2, weight_decay=0.01)
    for step in range(3):
        x, target = batch(step)
        opt_t.zero_grad()
        mse(theirs(x), target).backward()
        opt_t.step()
        opt.zero_grad()
        mse(ours(ml.tensor(as_numpy(x))), ml.tensor(as_numpy(target))).backward()
        opt.step()
    for name, p in adapter_params(ours).items():
        assert p.dtype == np.float32
        state = opt.state[p]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == np.float32
        p_t = dict(theirs.named_parameters())[name]
        np.testing.assert_allclose(p.numpy(), p_t.detach().numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
    assert all(p.dtype == BF16 for n, p in ours.named_parameters() if "base_layer" in n)


# ==================================================================================================
# merge, unmerge, merge_and_unload: PEFT's delta in float32, added to the bf16 weight
# ==================================================================================================
@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("autocast", [True, False])
def test_merge_and_unload_as_peft(autocast, use_dora):
    theirs, ours = pair(autocast, use_dora=use_dora)
    x, _ = batch()
    merged_t = theirs.merge_and_unload()
    merged = ours.merge_and_unload()
    for name in ("q_proj", "v_proj"):
        W, W_t = getattr(merged, name).weight, getattr(merged_t, name).weight
        assert W.dtype == BF16
        # delta = s B A in float32 (bf16 adapters: upcast, then rounded once), added and rounded once
        assert (W.numpy() != as_numpy(W_t)).mean() < 0.01, name
        assert_bf16_close(W, W_t)
    assert_bf16_close(merged(ml.tensor(as_numpy(x))), merged_t(x))


@pytest.mark.parametrize("safe_merge", [False, True])
def test_merge_then_unmerge_as_peft(safe_merge):
    """PEFT adds the float32 delta when merging (safe_merge: rounded to bf16 first) and subtracts the
    delta rounded to bf16 when unmerging, so the weight after a round trip is PEFT's, not the original."""
    theirs, ours = pair(autocast=True)
    theirs.merge_adapter(safe_merge=safe_merge)
    ours.merge_adapter(safe_merge=safe_merge)
    W_t = theirs.base_model.model.q_proj.base_layer.weight
    W = ours.base_model.model.q_proj.base_layer.weight
    assert (W.numpy() != as_numpy(W_t)).mean() < 0.01
    theirs.unmerge_adapter()
    ours.unmerge_adapter()
    assert (W.numpy() != as_numpy(W_t)).mean() < 0.01
    assert_bf16_close(W, W_t)


# ==================================================================================================
# the adapter file: float32 tensors (PEFT's); read by PEFT, and PEFT's read by minilora
# ==================================================================================================
@pytest.mark.parametrize("autocast", [True, False])
def test_save_and_load_round_trip_through_peft(autocast, tmp_path):
    from minilora.checkpoint import load_file
    theirs, ours = pair(autocast)
    x, _ = batch()
    ours.save_pretrained(str(tmp_path / "ours"))
    theirs.save_pretrained(str(tmp_path / "theirs"))
    saved, saved_t = load_file(str(tmp_path / "ours" / "adapter_model.safetensors")), \
        load_file(str(tmp_path / "theirs" / "adapter_model.safetensors"))
    assert {k: str(v.dtype) for k, v in saved.items()} == {k: str(v.dtype) for k, v in saved_t.items()}
    # PEFT reads minilora's file onto its bf16 model
    torch.manual_seed(0)
    loaded_t = peft.PeftModel.from_pretrained(TorchStack().to(torch.bfloat16), str(tmp_path / "ours"),
                                              autocast_adapter_dtype=autocast)
    base = {k: as_numpy(v) for k, v in loaded_t.base_model.model.state_dict().items() if "lora_" not in k}
    # minilora reads PEFT's file onto the same base
    stack = Stack(BF16)
    stack.load_state_dict({k.replace(".base_layer", ""): v for k, v in base.items()})
    loaded = PeftModel.from_pretrained(stack, str(tmp_path / "theirs"), autocast_adapter_dtype=autocast)
    assert {n: str(p.dtype) for n, p in loaded.named_parameters()} == \
        {n: dtype_name(p) for n, p in loaded_t.named_parameters()}
    loaded_t.load_adapter(str(tmp_path / "ours"), "second", autocast_adapter_dtype=autocast)
    loaded.load_adapter(str(tmp_path / "theirs"), "second", autocast_adapter_dtype=autocast)
    assert {n: str(p.dtype) for n, p in loaded.named_parameters()} == \
        {n: dtype_name(p) for n, p in loaded_t.named_parameters()}
    with torch.no_grad():
        want = theirs(x)
        np.testing.assert_array_equal(as_numpy(loaded_t(x)), as_numpy(want))  # PEFT on our file: same bits
    with ml.no_grad():
        np.testing.assert_array_equal(loaded(ml.tensor(as_numpy(x))).numpy(), ours(ml.tensor(as_numpy(x))).numpy())


# ==================================================================================================
# several adapters, dropout, DoRA, embedding LoRA, AdaLoRA: the layer follows PEFT's casts
# ==================================================================================================
def test_two_active_adapters_sum_in_float32_and_round_once():
    theirs, ours = pair()
    cfg = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    theirs.add_adapter("second", peft.LoraConfig(**cfg))
    ours.add_adapter("second", ml.lora.LoraConfig(**cfg))
    ours.load_state_dict({k: as_numpy(v) for k, v in theirs.state_dict().items()})
    theirs.base_model.model.q_proj.set_adapter(["default", "second"])
    ours.base_model.model.q_proj.set_adapter(["default", "second"])
    x, _ = batch()
    with torch.no_grad():
        want = theirs.base_model.model.q_proj(x)
    with ml.no_grad():
        got = ours.base_model.model.q_proj(ml.tensor(as_numpy(x)))
    assert got.dtype == BF16
    assert (got.numpy() != as_numpy(want)).mean() < 0.01
    assert_bf16_close(got, want)


@pytest.mark.parametrize("kind", ["dora", "embedding", "adalora"])
def test_other_adapter_kinds_on_a_bf16_model_as_peft(kind):
    """PEFT upcasts DoRA's magnitude, embedding LoRA's tables and AdaLoRA's factors to float32 and
    computes their branch in float32; the layer hands the bf16 dtype on."""
    transformers = pytest.importorskip("transformers")
    from test_llama import hf_model

    from minilora.lora import AdaLoraConfig
    from minilora.nn.llama import LlamaConfig, LlamaForCausalLM
    tiny = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=32)
    make = {"dora": lambda lib: lib.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True,
                                               init_lora_weights=False),
            "embedding": lambda lib: lib.LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"],
                                                    init_lora_weights=False),
            "adalora": lambda lib: lib.AdaLoraConfig(r=2, target_modules=["q_proj"], total_step=10,
                                                     init_lora_weights=False)}[kind]
    lib = type("lib", (), {"LoraConfig": LoraConfig, "AdaLoraConfig": AdaLoraConfig})
    base_t = hf_model(transformers, LlamaConfig(**tiny), dtype="float32").to(torch.bfloat16)
    base = LlamaForCausalLM(LlamaConfig(**tiny), dtype="bfloat16")
    base.load_state_dict({k: as_numpy(v) for k, v in base_t.state_dict().items()})
    theirs, ours = peft.get_peft_model(base_t, make(peft)), get_peft_model(base, make(lib))
    if kind == "adalora":  # PEFT's AdaLoRA starts E at zero whatever init_lora_weights says: give it values
        for n, p in theirs.named_parameters():
            if "lora_E" in n:
                torch.nn.init.normal_(p.data)
    ours.load_state_dict({k: as_numpy(v) for k, v in theirs.state_dict().items()})
    assert {n: str(p.dtype) for n, p in ours.named_parameters() if "lora_" in n} == \
        {n: dtype_name(p) for n, p in theirs.named_parameters() if "lora_" in n} != {}
    ids = np.random.default_rng(0).integers(0, 64, (2, 5))
    # the adapted layer itself: PEFT's numbers (the whole model adds the bf16 Llama's own differences)
    hidden = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with torch.no_grad():
        layer_t = theirs.base_model.model.model.layers[0].self_attn.q_proj
        want_layer = layer_t(hidden)
        if kind == "embedding":
            want_embed = theirs.base_model.model.model.embed_tokens(torch.as_tensor(ids))
    with ml.no_grad():
        got_layer = ours.base_model.model.model.layers[0].self_attn.q_proj(ml.tensor(as_numpy(hidden)))
        assert got_layer.dtype == BF16 and (got_layer.numpy() != as_numpy(want_layer)).mean() < 0.02
        if kind == "embedding":
            got_embed = ours.base_model.model.model.embed_tokens(ids)
            np.testing.assert_array_equal(got_embed.numpy(), as_numpy(want_embed))
    with torch.no_grad():
        want = theirs(torch.as_tensor(ids)).logits
    out = ours(ids, labels=ids)
    assert out.logits.dtype == BF16
    assert_bf16_close(out.logits, want, rtol=3e-2, atol=3e-2)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == p.dtype for p in ours.parameters() if p.requires_grad)


# ==================================================================================================
# optimizers on bf16 parameters (state in bf16, as torch keeps it) and gradient clipping
# ==================================================================================================
OPTIMIZERS = [("AdamW", dict(lr=1e-2, weight_decay=0.01)), ("Adam", dict(lr=1e-2, weight_decay=0.01)),
              ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), maximize=True)),
              ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)),
              ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.1)), ("SGD", dict(lr=0.1))]


@pytest.mark.parametrize("name,hyper", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
@pytest.mark.parametrize("device,dtype", [("cpu", "bfloat16"), ("emu", "bfloat16"), ("cpu", "float16")])
def test_optimizers_on_16_bit_parameters_as_torch_bit_for_bit(name, hyper, device, dtype):
    """torch's single-tensor update on a bf16 (or fp16) parameter: every op in float32, rounded to the dtype
    once, and ``add(..., alpha=...)`` scalars rounded to it first. NumPy alone would round lr * wd (1 - 1e-4
    is 1.0 in bf16): the weight decay would vanish. (fp16's eps=1e-8 rounds to 0, so a zero second moment
    divides by zero: inf and NaN where torch has them.)"""
    rng = np.random.default_rng(0)
    start = torch.from_numpy(rng.standard_normal((64, 33)).astype(np.float32))
    p_t = torch.nn.Parameter(start.to(getattr(torch, dtype)))
    p = ml.nn.Parameter(ml.tensor(as_numpy(p_t), device=device))
    opt_t, opt = getattr(torch.optim, name)([p_t], **hyper), getattr(ml.optim, name)([p], **hyper)
    for _ in range(4):
        g = torch.from_numpy(rng.standard_normal((64, 33)).astype(np.float32)).to(getattr(torch, dtype))
        p_t.grad, p.grad = g, ml.tensor(as_numpy(g), device=device)
        with np.errstate(divide="ignore", invalid="ignore"):
            opt_t.step()
            opt.step()
    assert str(p.dtype) == dtype
    np.testing.assert_array_equal(p.numpy(), as_numpy(p_t))
    for key, value in opt_t.state[p_t].items():
        if key != "step":
            assert str(opt.state[p][key].dtype) == dtype
            np.testing.assert_array_equal(ml.tensor(opt.state[p][key]).numpy() if device == "cpu"
                                          else opt.state[p][key], as_numpy(value))


def test_weight_decay_is_not_lost_in_bf16():
    """The bug the op-by-op update avoids: ``param *= 1 - lr * wd`` with NumPy rounds the factor to 1.0."""
    p = ml.nn.Parameter(ml.ones(4, dtype=BF16))
    p.grad = ml.zeros(4, dtype=BF16)
    ml.optim.SGD([p], lr=1.0, weight_decay=0.5).step()  # p - lr * (0 + wd * p) = 0.5
    np.testing.assert_array_equal(p.numpy().astype(np.float32), np.full(4, 0.5, np.float32))
    q = ml.nn.Parameter(ml.ones(4, dtype=BF16))
    q.grad = ml.zeros(4, dtype=BF16)
    ml.optim.AdamW([q], lr=0.5, weight_decay=0.5).step()  # 1 * (1 - 0.25); the Adam step of a zero grad is 0
    np.testing.assert_array_equal(q.numpy().astype(np.float32), np.full(4, 0.75, np.float32))


@pytest.mark.parametrize("dtypes_", [("bfloat16", "bfloat16"), ("bfloat16", "float32")], ids=["bf16", "mixed"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_on_bf16_gradients_as_torch(dtypes_, norm_type):
    """torch takes each gradient's norm in its dtype (bf16: float32 sums, rounded once), stacks them in the
    promoted dtype, and computes the coefficient with tensor ops in that dtype."""
    rng = np.random.default_rng(1)
    grads = [torch.from_numpy(rng.standard_normal((100, 7)).astype(np.float32) * 3).to(getattr(torch, d))
             for d in dtypes_]
    params_t = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    params = [ml.nn.Parameter(ml.zeros(100, 7, dtype=getattr(ml, d))) for d in dtypes_]
    for p_t, p, g in zip(params_t, params, grads):
        p_t.grad, p.grad = g.clone(), ml.tensor(as_numpy(g))
    total_t = torch.nn.utils.clip_grad_norm_(params_t, 1.0, norm_type=norm_type)
    total = ml.nn.utils.clip_grad_norm_(params, 1.0, norm_type=norm_type)
    assert str(total.dtype) == dtype_name(total_t)
    for p_t, p in zip(params_t, params):
        assert str(p.grad.dtype) == dtype_name(p_t.grad)
    if dtypes_ == ("bfloat16", "bfloat16"):  # bf16 throughout: the same bits
        np.testing.assert_array_equal(total.numpy(), as_numpy(total_t))
        for p_t, p in zip(params_t, params):
            np.testing.assert_array_equal(p.grad.numpy(), as_numpy(p_t.grad))
    else:  # a float32 norm: float32 summation order only
        np.testing.assert_allclose(total.item(), total_t.item(), rtol=1e-6)
        for p_t, p in zip(params_t, params):
            assert_bf16_close(p.grad, p_t.grad, rtol=1e-5, atol=1e-7)


# ==================================================================================================
# minilora train --dtype bfloat16
# ==================================================================================================
def test_cli_train_on_a_bf16_base(tmp_path, monkeypatch, capsys):
    """``--dtype bfloat16`` loads the base in bf16 (from_pretrained(torch_dtype=...)); LoRA trains float32
    adapters beside it and saves a float32 adapter file, as PEFT does; --resume keeps the run's dtype."""
    from minilora import train as train_module
    from minilora.checkpoint import load_file
    from minilora.cli import main
    monkeypatch.chdir(tmp_path)
    loaded = []
    real = train_module._load_model
    monkeypatch.setattr(train_module, "_load_model", lambda args: loaded.append(real(args)) or loaded[-1])
    common = ["train", "--task", "reverse", "--eval-n", "2", "--eval-every", "2", "--no-progress", "--out", "run",
              "--r", "2", "--dtype", "bfloat16"]
    assert main([*common, "--steps", "2"]) == 0
    assert "step 2/2  loss" in capsys.readouterr().out
    weights = {str(p.dtype) for n, p in loaded[0].named_parameters() if "lora_" not in n}
    adapters = {str(p.dtype) for n, p in loaded[0].named_parameters() if "lora_" in n}
    assert weights == {"bfloat16"} and adapters == {"float32"}
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert {str(v.dtype) for v in saved.values()} == {"float32"}
    assert main([*common[:-1], "float32", "--steps", "3", "--resume"]) == 2
    assert "started with --dtype bfloat16, not --dtype float32" in capsys.readouterr().err


def test_gpu_train_step_says_when_the_gpu_cannot_hold_bf16(monkeypatch):
    """benchmarks/gpu_train_step.py's minilora bf16 row needs CuPy >= 14: with an older CuPy the table says so."""
    import importlib.util
    import sys
    import types
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_train_step.py"
    spec = importlib.util.spec_from_file_location("gpu_train_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.bf16_unavailable("cpu") is None
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="13.3.0"))
    assert "CuPy 13.3.0 has no bfloat16 arrays" in bench.bf16_unavailable("cuda")
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="14.0.1"))
    assert bench.bf16_unavailable("cuda") is None
    monkeypatch.setattr(ml.dtypes, "HAS_BFLOAT16", False)
    assert "ml_dtypes is not installed" in bench.bf16_unavailable("cuda")


@pytest.mark.parametrize("combination_type", ["linear", "cat", "svd", "ties"])
@pytest.mark.parametrize("autocast", [True, False])
def test_add_weighted_adapter_dtypes_and_values_as_peft(combination_type, autocast):
    """PEFT computes the combination in float32 and assigns ``lora_A.weight.data``: linear/ties come back in
    the adapters' dtype, the SVD forms in float32, cat in the new adapter's (base) dtype."""
    theirs, ours = pair(autocast)
    cfg = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    theirs.add_adapter("b", peft.LoraConfig(**cfg))
    ours.add_adapter("b", ml.lora.LoraConfig(**cfg))
    ours.load_state_dict({k: as_numpy(v) for k, v in theirs.state_dict().items()})
    density = dict(density=0.5) if combination_type == "ties" else {}
    theirs.add_weighted_adapter(["default", "b"], [0.7, 0.5], "mix", combination_type=combination_type, **density)
    ours.add_weighted_adapter(["default", "b"], [0.7, 0.5], "mix", combination_type=combination_type, **density)
    mine = dict(ours.named_parameters())
    for name, p_t in theirs.named_parameters():
        if ".mix." in name:
            assert str(mine[name].dtype) == dtype_name(p_t), name
    for layer in ("q_proj", "v_proj"):  # B A: the SVD's factors are unique only up to signs
        def delta(model, as_array):
            m = getattr(model.base_model.model, layer)
            B_, A_ = (as_array(w).astype(np.float64) for w in (m.lora_B["mix"].weight, m.lora_A["mix"].weight))
            return B_ @ A_
        want = delta(theirs, lambda t: as_numpy(t).astype(np.float32))
        got = delta(ours, lambda t: t.numpy().astype(np.float32))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_per_sample_adapters_on_a_bf16_base_as_peft():
    """PEFT's _mixed_batch_forward: each sub-batch's float32 LoRA output is rounded to bf16 and added to the
    bf16 base output (``result[rows] += lora.to(bf16)``); ops.bgmv does the same on a 16-bit base."""
    theirs, ours = pair()
    cfg = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    theirs.add_adapter("b", peft.LoraConfig(**cfg))
    ours.add_adapter("b", ml.lora.LoraConfig(**cfg))
    ours.load_state_dict({k: as_numpy(v) for k, v in theirs.state_dict().items()})
    x, _ = batch()
    names = ["default", "b", "__base__", "default"]
    with torch.no_grad():
        want = theirs.base_model.model.q_proj(x, adapter_names=names)
    x_ours = ml.tensor(as_numpy(x), requires_grad=True)
    got = ours.base_model.model.q_proj(x_ours, adapter_names=names)
    assert got.dtype == BF16
    assert (got.numpy() != as_numpy(want)).mean() < 0.01
    assert_bf16_close(got, want)
    got.float().sum().backward()  # gradients in the tensors' own dtypes
    assert x_ours.grad.dtype == BF16
    assert all(p.grad is None or p.grad.dtype == p.dtype for p in ours.parameters())


def test_serve_engine_on_a_bf16_base(tmp_path):
    """``minilora serve --dtype bfloat16``: the shipped base in bf16, float32 adapters, requests decoded."""
    from minilora import models
    from minilora.cli import build_parser
    from minilora.serve.cli import load_engine
    from minilora.serve.engine import Request
    from minilora.tokenizer import ByteTokenizer
    assert build_parser("serve").parse_args(["serve", "--dtype", "bfloat16"]).dtype == "bfloat16"
    assert build_parser("serve").parse_args(["serve"]).dtype == "auto"  # vLLM's default
    model = get_peft_model(models.load_base(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                          init_lora_weights=False))
    model.save_pretrained(str(tmp_path / "ad"))
    engine, _ = load_engine(None, [("ad", str(tmp_path / "ad"))], max_batch_size=2, dtype="bfloat16")
    assert {str(p.dtype) for n, p in engine.model.named_parameters() if "lora_" not in n} == {"bfloat16"}
    assert {str(p.dtype) for n, p in engine.model.named_parameters() if "lora_" in n} == {"float32"}
    import threading
    tok, done, both_done = ByteTokenizer(), [], threading.Event()

    def emit(kind, value):
        if kind == "done":
            done.append(value)
            if len(done) == 2:
                both_done.set()
    for adapter in ("ad", None):
        engine.submit(Request(tok.encode("hello", add_special_tokens=False), adapter, max_tokens=3, temperature=0,
                              emit=emit))
    engine.start()
    try:  # (no deadline a loaded machine crosses: the requests end, or the engine's thread does)
        while not both_done.wait(0.05):
            assert engine._thread.is_alive(), "the engine's thread ended before the two requests"
    finally:
        engine.shutdown()
    assert len(done) == 2


@pytest.mark.parametrize("autocast", [True, False])
def test_dora_on_a_bf16_base_as_peft(autocast):
    """DoRA follows PEFT's DoraLinearLayer op for op on a 16-bit base (result - bias, (m/n - 1) * that,
    + (m/n) * lora * s, the norm in the adapter's dtype): the same output, and gradients to PEFT's."""
    theirs, ours = pair(autocast, use_dora=True)
    assert {n: str(p.dtype) for n, p in ours.named_parameters() if "magnitude" in n} == \
        {n: dtype_name(p) for n, p in theirs.named_parameters() if "magnitude" in n}
    x, target = batch()
    out_t = theirs(x)
    mse(out_t, target).backward()
    out = ours(ml.tensor(as_numpy(x)))
    mse(out, ml.tensor(as_numpy(target))).backward()
    assert (out.numpy() != as_numpy(out_t)).mean() < 0.01
    assert_bf16_close(out, out_t)
    grads_t = {n: p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    for name, p in adapter_params(ours).items():
        assert_bf16_close(p.grad, grads_t[name], rtol=2e-2, atol=1e-4)


def test_the_bf16_kernels_take_bfloat16_arrays_as_well_as_their_bits():
    x, W0, bias, A, B, dY = op_case(torch.float32, M=9, K=16, N=8, r=2)
    Xb, Wb, dYb = (as_numpy(t) for t in (x, W0, dY))
    A, B = A.detach().numpy(), B.detach().numpy()
    from_bits = kernels.lora_forward_bf16(Xb.view(np.uint16), Wb.view(np.uint16), A, B, 2.0, device="emu")
    from_bf16 = kernels.lora_forward_bf16(Xb, Wb, A, B, 2.0, device="emu")
    for a, b in zip(from_bits, from_bf16):
        np.testing.assert_array_equal(a, b)
    back = kernels.lora_backward_bf16(dYb, Xb, Wb, A, B, from_bf16[1], 2.0, device="emu")
    back_bits = kernels.lora_backward_bf16(dYb.view(np.uint16), Xb.view(np.uint16), Wb.view(np.uint16), A, B,
                                           from_bf16[1], 2.0, device="emu")
    for a, b in zip(back, back_bits):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="uint16 array holding bfloat16 bit patterns \\(or a bfloat16 array\\)"):
        kernels.lora_forward_bf16(Xb.astype(np.float16), Wb, A, B, 2.0, device="emu")


def test_gpu_lora_op_row_runs_the_bf16_kernels_through_the_op(monkeypatch):
    """benchmarks/gpu_lora.py's "ops.lora_linear bf16" row (run on a GPU with CuPy >= 14) on the emulator."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_lora.py"
    spec = importlib.util.spec_from_file_location("gpu_lora_for_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    calls = []
    real = kernels.lora_backward_bf16
    monkeypatch.setattr(kernels, "lora_backward_bf16", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(0)
    X, W0, dY = (rng.standard_normal(shape).astype(np.float32) for shape in ((9, 16), (8, 16), (9, 8)))
    A, B = rng.standard_normal((2, 16)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32)
    bench.op_bf16(X, W0, A, B, dY, 2.0, backward=True, device="emu")()
    assert calls == [1]
