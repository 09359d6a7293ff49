"""Training with float32/float64 ``F.scaled_dot_product_attention`` as torch's CPU flash kernel: the backward.

Round 28 gave minilora torch's flash-attention forward bits where no gradient was wanted; training kept the fused
node, whose values and gradients were an ulp or so off torch's. ``ops/attention32.py`` now saves the logsumexp and
takes ``cpu_flash_attention_backward``'s steps (the weights recomputed per block with SLEEF's exp, MKL's products with
the scale as alpha and beta = 1, the rowsum of dO * out in vector lanes, grouped-query heads added one after the
other), so the output and dq, dk, dv are torch's bits, and a float32 Llama trained with LoRA ("sdpa", transformers'
default) has PEFT's loss and adapter gradients bit for bit.
"""
import itertools

import numpy as np
import pytest

import minilora as ml
from minilora import blas

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(blas.library() != "mkl", reason="MKL (minilora[mkl]) is not minilora's BLAS here")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads(), ml.parallel.num_threads()
    torch.set_num_threads(1)
    ml.parallel.set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    ml.parallel.set_num_threads(before[1])


def _inputs(dtype, b, hq, hkv, tq, tk, d, mask, seed, projection_layout):
    """q, k, v (laid out as a Llama's projections [B, T, H, D] viewed as [B, H, T, D], or C order), dO and a mask."""
    rng = np.random.default_rng(seed)

    def heads(h, t):
        if projection_layout:
            return rng.standard_normal((b, t, h, d)).astype(dtype).transpose(0, 2, 1, 3)
        return rng.standard_normal((b, h, t, d)).astype(dtype)
    q, k, v, grad = heads(hq, tq), heads(hkv, tk), heads(hkv, tk), heads(hq, tq)
    if mask == "float":
        mask = (rng.standard_normal((b, hq, tq, tk)) * 2).astype(dtype)
    elif mask == "bool":  # broadcast over the heads; a few rows see no key at all
        mask = rng.random((b, 1, tq, tk)) > 0.4
        mask[:, :, ::7] = False
    return q, k, v, np.ascontiguousarray(grad), mask


def _both(q, k, v, grad, mask, wrap=lambda f, *a: f(*a), **options):
    """(minilora's, torch's) [output, dq, dk, dv] and grad_fn names."""
    results = []
    for lib in (ml, torch):
        leaves = [lib.tensor(a, requires_grad=True) for a in (q, k, v)]
        the_mask = None if mask is None else lib.tensor(mask)
        attend = lambda *qkv: lib.nn.functional.scaled_dot_product_attention(*qkv, attn_mask=the_mask, **options)
        out = wrap(attend, *leaves) if lib is ml else attend(*leaves)
        out.backward(lib.tensor(grad))
        results.append(([out.detach().numpy()] + [t.grad.numpy() for t in leaves], out.grad_fn.name()))
    return results


CASES = [  # (batch, query heads, key/value heads, Tq, Tk, head size, causal, mask)
    (1, 2, 2, 7, 7, 16, False, None),          # shorter than a vector: rowsum(dO * out) in order
    (2, 4, 2, 40, 40, 32, True, None),         # GQA: each query head's dk, dv added onto the previous one's
    (1, 2, 2, 33, 37, 20, False, "float"),     # a one-row block (products with K = 1), a vector and a tail of 4
    (1, 4, 2, 3, 45, 80, False, "bool"),       # a chunk over a cache (GQA), rows that see no key (dq 0)
    (1, 2, 1, 100, 700, 64, False, None),      # two blocks of keys
    (1, 1, 1, 200, 600, 8, True, "bool"),      # query blocks of 64, causal and masked, a head size under a vector
    (1, 2, 2, 5, 513, 16, False, None),        # a block of one key: the forward's E v with K = 1 (gemm_batch's fix)
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_sdpa_gradients_are_torchs_flash_backward_bit_for_bit(dtype, case):
    *shape, causal, mask = case
    q, k, v, grad, mask = _inputs(dtype, *shape, mask, seed=shape[3], projection_layout=shape[0] == 2)
    (ours, our_name), (theirs, their_name) = _both(q, k, v, grad, mask, is_causal=causal,
                                                   enable_gqa=shape[1] != shape[2])
    assert our_name == their_name == "ScaledDotProductFlashAttentionForCpuBackward0"  # (float64's too)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, theirs):
        assert a.dtype == b.dtype and np.array_equal(a, b), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_inputs_give_torchs_values(dtype):
    """A NaN or infinity planted in q, k, v or the mask: torch's outputs and gradients, NaNs where torch's are.
    Causal: the kernel fills the keys after a query's position in place of their products and never reads the
    blocks of keys it skips (before, a -inf bias added to NaN products made NaNs torch does not have)."""
    rng = np.random.default_rng(7)
    for where, value, causal in itertools.product(("q", "k", "v", "mask"), (np.nan, np.inf, -np.inf), (False, True)):
        q, k, v, grad, mask = _inputs(dtype, 1, 2, 2, 9, 40, 16, "float", seed=int(rng.integers(1000)),
                                      projection_layout=False)
        planted = {"q": q, "k": k, "v": v, "mask": mask}[where]
        planted[tuple(rng.integers(0, n) for n in planted.shape)] = value
        (ours, _), (theirs, _) = _both(q, k, v, grad, mask, is_causal=causal)
        for name, a, b in zip(("out", "dq", "dk", "dv"), ours, theirs):
            assert np.array_equal(a, b, equal_nan=True), (where, value, causal, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_kernels_take_the_numpy_steps(dtype):
    """native/float32_kernels.c's forward and backward (MKL's ?gemm called from C) and the NumPy steps of
    ops/attention32.py (``numpy_port``: no compiled code): the same bits, NaNs, masks, GQA and causal blocks
    included."""
    from minilora import float32_math
    from minilora.ops import attention32
    for b, hq, hkv, tq, tk, d, causal, mask in [(2, 4, 2, 40, 45, 20, False, "float"), (1, 2, 1, 70, 530, 8, True, None),
                                                (1, 2, 2, 33, 37, 16, True, "bool")]:
        q, k, v, grad, mask = _inputs(dtype, b, hq, hkv, tq, tk, d, mask, seed=tq, projection_layout=True)
        q[0, 0, 3, 1] = np.nan
        bias = None if mask is None else np.where(mask, 0, -np.inf).astype(dtype) if mask.dtype == bool else mask
        scale = dtype(0.3)
        results = []
        for port in (False, True):
            with float32_math.numpy_port() if port else ml.no_grad():
                out, lse = attention32.flash_forward(q, k, v, bias, scale, causal)
                results.append((out, lse, *attention32.flash_backward(grad, q, k, v, out, lse, bias, scale, causal)))
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(*results))


def test_checkpointed_attention_has_torchs_gradients():
    """A checkpoint's first run (no grad) and its recomputation take the same kernel: torch's gradients (before:
    the fused node in both, an ulp or so off)."""
    q, k, v, grad, _ = _inputs(np.float32, 1, 4, 2, 24, 24, 32, None, seed=1, projection_layout=True)
    (ours, _), (theirs, _) = _both(q, k, v, grad, None, is_causal=True, enable_gqa=True,
                                   wrap=lambda f, *a: ml.utils.checkpoint.checkpoint(f, *a, use_reentrant=False))
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_gemm_batch_is_gemm_on_each_matrix_where_a_dimension_is_1():
    """MKL's batched call and its gemm take other paths where M, N or K is 1 (a block of one query row or key):
    gemm_batch gives each matrix gemm's bits, alpha and beta included."""
    rng = np.random.default_rng(0)
    for dtype, (m, n, k), transposes in itertools.product((np.float32, np.float64), [(1, 37, 5), (3, 1, 8), (7, 16, 1)],
                                                          itertools.product((False, True), repeat=2)):
        a, b = (rng.standard_normal((3, cols, rows) if t else (3, rows, cols)).astype(dtype)
                for (rows, cols), t in zip(((m, k), (k, n)), transposes))
        a, b = (x.swapaxes(-1, -2) if t else x for x, t in zip((a, b), transposes))  # (columns: a transposed form)
        out = rng.standard_normal((3, m, n)).astype(dtype)
        each = out.copy()
        for i in range(3):
            blas.gemm(a[i], b[i], each[i], alpha=0.3, beta=1.0)
        assert np.array_equal(blas.gemm_batch(a, b, out, alpha=0.3, beta=1.0), each)


def test_llama_sdpa_lora_step_is_pefts_bit_for_bit():
    """A float32 Llama with "sdpa" attention and LoRA on every attention projection: the loss and every adapter
    gradient are PEFT's bit for bit, with and without padding (with a mask transformers repeats the key/value heads,
    and minilora too; the x-gradients' order is LoraLinear.backward_onto's, tests/test_lora_step_bits_r29.py).
    Before: the loss an ulp off and none of the 16 gradients PEFT's."""
    peft = pytest.importorskip("peft")
    from test_mkl_vml_r28 import _llama_pair
    reference, model = _llama_pair("sdpa")
    options = dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**options))
    ours = ml.lora.get_peft_model(model, ml.lora.LoraConfig(**options))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ids = np.random.default_rng(0).integers(0, 300, (2, 24))
    padded = np.ones((2, 24), np.int64)
    padded[1, :5] = 0
    for attention_mask in (None, padded):
        expected = theirs(input_ids=torch.as_tensor(ids), labels=torch.as_tensor(ids),
                          attention_mask=None if attention_mask is None else torch.as_tensor(attention_mask)).loss
        got = ours(ml.tensor(ids), labels=ml.tensor(ids),
                   attention_mask=None if attention_mask is None else ml.tensor(attention_mask)).loss
        expected.backward()
        got.backward()
        assert got.item() == expected.item()
        mine = dict(ours.named_parameters())
        for name, p in theirs.named_parameters():
            if p.requires_grad:
                assert np.array_equal(mine[name].grad.numpy(), p.grad.numpy()), name
        theirs.zero_grad()
        ours.zero_grad()
