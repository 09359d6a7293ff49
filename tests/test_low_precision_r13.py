"""bfloat16/float16 as PyTorch and PEFT users run them on the CPU, side by side with torch 2.13, bit for bit.

* ``F.scaled_dot_product_attention`` on 16-bit 4-D inputs is torch's CPU flash kernel (transformers' default
  "sdpa" Llama attention): it rounds the softmax weights to 16 bits before the product with v, sums them
  with its fast ``fexp_u20``, and accumulates dk/dv in the 16-bit gradient per block of queries and per
  query head of a group (``minilora/ops/attention16.py``). Computing in float32 and rounding once (the
  math kernel's way) differed from torch in ~25% of the outputs and moved a bf16 LoRA step's loss in the
  fourth digit.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora.ops import attention16  # noqa: E402


def pair(shape, dtype, seed):
    """The same 16-bit values as a torch and a minilora leaf."""
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return (torch.from_numpy(values).to(getattr(torch, dtype)).requires_grad_(),
            ml.tensor(values).to(getattr(ml, dtype)).requires_grad_())


def bits(t):
    return t.detach().float().numpy()


def torchs_bf16_products_run_on_amx():
    """Do torch's bfloat16 matrix products here run on AMX tiles (Intel Sapphire Rapids and later)? MKL's
    gemm_bf16bf16f32 (inside the CPU flash-attention kernel) and oneDNN's matmul then sum the products in the
    tiles' order, not the AVX-512 kernels' order that minilora models: measured, MKL_ENABLE_INSTRUCTIONS=AVX512
    and ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 give the bits back. An AMD EPYC (AVX-512, no AMX) gives them too."""
    return torch.cpu._is_amx_tile_supported()


# (batch, query heads, key/value heads, queries, keys, head size, is_causal, mask): one block of queries,
# several (37 > 32, 70 > 64 with head size 64), grouped-query heads, boolean and float masks, 600 > 512 keys
# (two key blocks: the running max and sum rescale the partial output)
CASES = [(2, 4, 4, 16, 16, 16, True, None), (1, 2, 2, 37, 37, 32, False, None), (2, 4, 2, 40, 40, 16, True, None),
         (2, 2, 2, 9, 9, 16, False, "bool"), (1, 2, 2, 6, 20, 16, False, "float"), (1, 1, 1, 3, 600, 16, False, None)]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_sdpa_bfloat16_is_torchs_flash_kernel_bit_for_bit(case):
    b, hq, hkv, tq, tk, d, causal, mask = case
    rng = np.random.default_rng(7)
    masks = {None: None, "bool": np.concatenate([np.ones((b, 1, tq, 1), bool), rng.random((b, 1, tq, tk - 1)) > 0.3], -1),
             "float": rng.standard_normal((tq, tk)).astype(np.float32)}
    results = []
    for lib, side in ((torch, 0), (ml, 1)):
        q, k, v = (pair(shape, "bfloat16", seed)[side] for seed, shape in
                   enumerate([(b, hq, tq, d), (b, hkv, tk, d), (b, hkv, tk, d)]))
        m = masks[mask]
        out = lib.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=None if m is None else (torch.from_numpy(m) if lib is torch else ml.tensor(m)),
            is_causal=causal, enable_gqa=hq != hkv)
        out.backward(pair(out.shape, "bfloat16", 9)[side])
        results.append([bits(out), bits(q.grad), bits(k.grad), bits(v.grad)])
    np.testing.assert_array_equal(results[1][0], results[0][0], err_msg="output")
    for name, theirs, ours in zip(["dq", "dk", "dv"], results[0][1:], results[1][1:]):
        # 0 on an AVX-512 CPU; with AVX2 oneDNN sums the products in another float32 order, and 2 of 2560
        # GQA dk elements land on the other side of a bfloat16 rounding boundary: one step. With AMX, MKL's
        # tile kernel for dS @ K: 5 of 2368 dq elements of (1, 2, 2, 37, 37, 32) apart, one by two steps
        amx = torchs_bf16_products_run_on_amx()
        off = ours != theirs
        assert off.mean() <= (0.005 if amx else 0.001), name
        step = np.spacing(np.abs(theirs[off]).astype(ml.bfloat16)).astype(np.float32)
        np.testing.assert_array_less(np.abs(ours - theirs)[off], step * (2.01 if amx else 1.01), err_msg=name)


def test_sdpa_float16_within_one_step_of_torch():
    """float16 keeps 11 bits, so the float32 summation order of the kernel's products (not reproduced)
    shows in a few gradients (at most 2.5% of dq here), each one float16 step off."""
    results = []
    for lib, side in ((torch, 0), (ml, 1)):
        q, k, v = (pair((2, 4, 16, 16), "float16", seed)[side] for seed in range(3))
        out = lib.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(pair(out.shape, "float16", 9)[side])
        results.append([bits(out), bits(q.grad), bits(k.grad), bits(v.grad)])
    np.testing.assert_array_equal(results[1][0], results[0][0])
    for theirs, ours in zip(results[0][1:], results[1][1:]):
        off = ours != theirs
        assert off.mean() <= 0.025
        # one float16 step, plus (gradients near 0, in float16's subnormals) the float32 sums' own envelope:
        # 2 k 2^-24 with k = 16 terms of magnitude below 1
        step = np.spacing(np.abs(theirs[off]).astype(np.float16)).astype(np.float32)
        np.testing.assert_array_less(np.abs(ours - theirs)[off], step * 1.01 + 2 * 16 * 2.0 ** -24)


@pytest.mark.skipif(ml.float32_math.CPU_CAPABILITY == "default", reason="ATen's AVX2/AVX-512 fast exp")
def test_fexp_u20_is_atens_fast_exp():
    """torch's flash kernel sums fexp_u20's weights: its log-sum-exp (the kernel's second output) shows them."""
    x = np.linspace(-3, 0, 200, dtype=np.float32)
    keys = torch.zeros(200, 1, 16, 16, dtype=torch.bfloat16)
    keys[:, 0, 1:, 0] = torch.from_numpy(x * 4).bfloat16()[:, None]  # scores x (scale 1/4), and 0 for key 0
    query = torch.zeros(200, 1, 1, 16, dtype=torch.bfloat16)
    query[..., 0] = 1
    _, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, keys, keys, 0.0, False)
    scores = keys[:, 0, :, 0].float().numpy() / 4
    theirs = lse.numpy().ravel()
    _, total = attention16._exp_and_lane_sum(scores)
    ours = np.log(total.astype(np.float64)).astype(np.float32)
    # (C's logf, which the kernel takes of the sum, and float64's log rounded can differ in the last bit)
    np.testing.assert_array_less(np.abs(ours - theirs), np.spacing(theirs) * 1.01)
    exact = np.log(np.exp(scores.astype(np.float64)).sum(-1)).astype(np.float32)
    assert np.abs(exact - theirs).max() > 100 * np.spacing(theirs).max()  # C's exp would be hundreds of units off


# ---- PEFT's LoRA layer on a bfloat16 base: x's gradient adds the adapter branch's part, then the base's ----
class TorchTwoUses(torch.nn.Module):
    """x feeds a LoRA target (q_proj) and a plain layer (k_proj), as a Llama layer's normed input."""

    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(64, 48, bias=False)
        self.k_proj = torch.nn.Linear(64, 32, bias=False)

    def forward(self, x):
        return self.q_proj(x).float().square().sum() + self.k_proj(x).float().sum()


class MiniTwoUses(ml.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = ml.nn.Linear(64, 48, bias=False)
        self.k_proj = ml.nn.Linear(64, 32, bias=False)

    def forward(self, x):
        return self.q_proj(x).float().square().sum() + self.k_proj(x).float().sum()


@pytest.mark.parametrize("adapter_dtype", [True, False], ids=["float32 adapters", "bfloat16 adapters"])
def test_lora_input_gradient_accumulates_as_peft(adapter_dtype):
    """autograd adds PEFT's two uses of x (lora_A's branch, run later, first; then the base layer) to the
    gradient k_proj already gave x, rounding to bfloat16 after each: the fused op hands the engine the two
    parts (ops/lora.py, LoraLinear's x_again). One rounded sum instead differed in 28% of x's gradient."""
    peft = pytest.importorskip("peft")
    from minilora.lora import LoraConfig, get_peft_model
    torch.manual_seed(0)
    theirs = TorchTwoUses().to(torch.bfloat16)
    ours = MiniTwoUses().to(ml.bfloat16)
    ours.load_state_dict({k: v.float().numpy() for k, v in theirs.state_dict().items()})
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config), autocast_adapter_dtype=adapter_dtype)
    ours = get_peft_model(ours, LoraConfig(**config), autocast_adapter_dtype=adapter_dtype)
    ours.load_state_dict({k: v.float().numpy() for k, v in theirs.state_dict().items() if "lora" in k}, strict=False)
    x_t, x_m = pair((8, 16, 64), "bfloat16", 3)
    theirs(x_t).backward()
    ours(x_m).backward()
    np.testing.assert_array_equal(bits(x_m.grad), bits(x_t.grad))


# ---- the scalar tail of torch's elementwise loop ------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("n", [37, 3000])
def test_rsqrt_scalar_tail_rounds_sqrt_first(dtype, n):
    """torch's rsqrt computes whole vectors in float32 and rounds once, but its scalar lambda for the last
    n % 32 elements is ``1 / std::sqrt(a)`` on c10's 16-bit type: the square root rounded to 16 bits first
    (1 element in 4 of the tail one step away). minilora was right on the vectors only."""
    values = np.random.default_rng(3).uniform(0.1, 4, n).astype(np.float32)
    theirs = torch.from_numpy(values).to(getattr(torch, dtype)).rsqrt()
    ours = ml.tensor(values).to(getattr(ml, dtype)).rsqrt()
    np.testing.assert_array_equal(bits(ours), bits(theirs))


# ---- autocast (float32 model, bfloat16 region), as transformers' Trainer(bf16=True) runs on the CPU --------
def test_rotary_on_an_autocast_query_promotes_as_transformers():
    """A bfloat16 q (an autocast Linear's output) meets transformers' float32 cos/sin: ``q * cos`` promotes to
    float32, and the backward rounds each product's gradient to bfloat16 before adding the two. minilora's
    fused rotation kept q's dtype (bfloat16 out: 94% of an autocast Llama's sdpa inputs differed)."""
    from transformers.models.llama import modeling_llama
    angles = np.arange(12)[:, None] * np.float32(0.37) ** np.arange(8)[None, :]
    cos, sin = (np.concatenate([f(angles)] * 2, -1).astype(np.float32)[None] for f in (np.cos, np.sin))
    (q_t, q_m), g = pair((2, 3, 12, 16), "bfloat16", 5), np.random.default_rng(6).standard_normal((2, 3, 12, 16))
    theirs, _ = modeling_llama.apply_rotary_pos_emb(q_t, q_t, torch.from_numpy(cos), torch.from_numpy(sin))
    ours = ml.ops.rotary_embedding(q_m, cos[:, None], sin[:, None])
    assert str(ours.dtype) == "float32" and theirs.dtype == torch.float32
    np.testing.assert_array_equal(bits(ours), bits(theirs))
    theirs.backward(torch.from_numpy(g.astype(np.float32)))
    ours.backward(ml.tensor(g.astype(np.float32)))
    np.testing.assert_array_equal(bits(q_m.grad), bits(q_t.grad))


def test_lora_layer_under_autocast_casts_x_twice_as_peft():
    """PEFT's layer under autocast: its base layer and lora_A each cast the float32 x to bfloat16, and each
    cast's backward adds its part of x's gradient in float32 (the adapter branch's first). One cast, with
    the parts added in bfloat16, differed from torch in 64% of x's gradient."""
    peft = pytest.importorskip("peft")
    from minilora.lora import LoraConfig, get_peft_model
    torch.manual_seed(0)
    theirs, ours = TorchTwoUses(), MiniTwoUses()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    ours = get_peft_model(ours, LoraConfig(**config))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items() if "lora" in k}, strict=False)
    x_t, x_m = pair((8, 16, 64), "float32", 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # (x * 2: not a leaf, which autocast would cast once)
        loss_t = theirs(x_t * 2)
    with ml.autocast("cpu", dtype=ml.bfloat16):
        loss_m = ours(x_m * 2)
    loss_t.backward()
    loss_m.backward()
    np.testing.assert_array_equal(bits(x_m.grad), bits(x_t.grad))
    for name in ("lora_A", "lora_B"):
        layer_t, layer_m = theirs.base_model.model.q_proj, ours.base_model.model.q_proj
        np.testing.assert_array_equal(bits(getattr(layer_m, name)["default"].weight.grad),
                                      bits(getattr(layer_t, name)["default"].weight.grad))


# ---- a Llama + LoRA step in bfloat16, as PEFT users run it -------------------------------------------------
def llama_pair():
    """transformers' Llama (sdpa attention, its default) and minilora's, same bf16-exact float32 weights."""
    transformers = pytest.importorskip("transformers")
    from minilora.nn.llama import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    hf_config = transformers.LlamaConfig.from_dict(config.to_dict())
    hf_config._attn_implementation = "sdpa"
    theirs = transformers.LlamaForCausalLM(hf_config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_((1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.3 * torch.randn_like(p))
                    .bfloat16().float())
    ours = LlamaForCausalLM(config)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return theirs, ours


@pytest.mark.parametrize("mode", ["model.to(bfloat16)", "autocast", "autocast, padded", "model.to(bfloat16), padded"])
def test_llama_lora_step_in_bfloat16_as_peft(mode):
    """PEFT's LoRA on q/v/o/gate/down of a 2-layer Llama: the loss bit for bit, and the adapters' (float32)
    gradients bit for bit under autocast (padded, on an AMX CPU: within its envelope, see
    torchs_bf16_products_run_on_amx); after model.to(bfloat16) within float32 summation noise (the
    adapters' gradients sum bf16 products in float32 in BLAS's order: 1.2e-3 of the largest gradient at most
    here, where the loss and every bf16 activation are torch's). Before: loss 6.9188 against 6.9248 (to
    bfloat16), gradients up to 13% apart. ``model.to(bfloat16)`` also rounds RoPE's inv_freq buffer, as torch's.
    Padded: with a mask transformers' sdpa repeats the key/value heads (repeat_kv), whose gradients are then
    summed per group (the GQA kernel's order left 1941 of the 4,864 adapter gradient elements apart)."""
    peft = pytest.importorskip("peft")
    from minilora.lora import LoraConfig, get_peft_model
    theirs, ours = llama_pair()
    if "autocast" not in mode:
        theirs, ours = theirs.to(torch.bfloat16), ours.to(ml.bfloat16)
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
                  init_lora_weights=False)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    ours = get_peft_model(ours, LoraConfig(**config))
    ours.load_state_dict({k: bits(v) for k, v in theirs.state_dict().items() if "lora" in k}, strict=False)
    ids = np.random.default_rng(0).integers(0, 64, (2, 16))
    mask = np.ones((2, 16), np.int64)
    mask[1, 12:] = 0 if "padded" in mode else 1
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled="autocast" in mode):
        loss_t = theirs(input_ids=torch.tensor(ids), labels=torch.tensor(ids), attention_mask=torch.tensor(mask)).loss
    with ml.autocast("cpu", dtype=ml.bfloat16, enabled="autocast" in mode):
        loss_m = ours(input_ids=ml.tensor(ids), labels=ml.tensor(ids), attention_mask=ml.tensor(mask)).loss
    assert loss_m.item() == loss_t.item()
    loss_t.backward()
    loss_m.backward()
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.grad is None:
            continue
        theirs_grad, ours_grad = bits(p.grad), bits(ours_params[name].grad)
        if "autocast" in mode and not ("padded" in mode and torchs_bf16_products_run_on_amx()):
            np.testing.assert_array_equal(ours_grad, theirs_grad, err_msg=name)
        elif "autocast" in mode:  # (padded: oneDNN's bf16 products on AMX, 6.1e-3 of the largest gradient here)
            assert np.abs(ours_grad - theirs_grad).max() <= 1.2e-2 * np.abs(theirs_grad).max(), name
        else:
            assert np.abs(ours_grad - theirs_grad).max() <= 2e-3 * np.abs(theirs_grad).max(), name


def test_sdpa_bad_16_bit_input_gets_the_float32_error():
    """The flash path's check runs before sdpa's own: a 0-d bfloat16 query is still sdpa's RuntimeError."""
    for dtype in (ml.bfloat16, ml.float32):
        q = ml.tensor(1.0).to(dtype)
        with pytest.raises(RuntimeError, match="at least 2 dimensional"):  # (torch's words)
            ml.nn.functional.scaled_dot_product_attention(q, q, q)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_add_with_alpha_scalar_tail_rounds_the_product_first(dtype):
    """torch's add kernel: whole vectors as ``a + alpha * b`` in float32, rounded once; its scalar lambda
    (the last n % 32) rounds ``alpha * b`` to 16 bits first (5 of 2100 bf16 elements were a step off)."""
    (a_t, a_m), (b_t, b_m) = pair((7, 300), dtype, 1), pair((7, 300), dtype, 2)
    np.testing.assert_array_equal(bits(a_m.add(b_m, alpha=0.3)), bits(a_t.add(b_t, alpha=0.3)))
    with torch.no_grad(), ml.no_grad():
        theirs, ours = a_t.detach().clone(), a_m.detach().clone()
        theirs.add_(b_t, alpha=-0.7)
        ours.add_(b_m, alpha=-0.7)
    np.testing.assert_array_equal(bits(ours), bits(theirs))
