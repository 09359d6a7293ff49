"""float32/float64 ``F.scaled_dot_product_attention`` as torch's CPU flash-attention kernel (``ops/attention32.py``).

torch computes 4-D float32/float64 attention on the CPU in blocks of queries and keys with its own exp (exp_u20,
SLEEF's for float64), lane-ordered sums, an online softmax rescaled across blocks of 512 keys and MKL's products
per block; minilora's plain softmax differed from it in most outputs (transformers' default "sdpa" Llama too). Where
MKL is minilora's BLAS, minilora now takes the kernel's steps: every output bit is torch's, and a float32 Llama's
logits and generate's scores with "sdpa" attention are transformers'.
"""
import numpy as np
import pytest

import minilora as ml
from minilora import blas
from minilora.ops import attention32

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(blas.library() != "mkl", reason="MKL (minilora[mkl]) is not minilora's BLAS here")


@pytest.fixture(autouse=True)
def one_thread():
    """torch on one thread (as conftest sets it); minilora's MKL is sequential anyway."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(dtype, b, hq, hkv, tq, tk, d, mask, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, hq, tq, d)).astype(dtype)
    k, v = (rng.standard_normal((b, hkv, tk, d)).astype(dtype) for _ in range(2))
    if mask == "float":
        mask = (rng.standard_normal((b, hq, tq, tk)) * 2).astype(dtype)
    elif mask == "bool":  # broadcast over the heads; a few rows see no key at all (their output is 0)
        mask = rng.random((b, 1, tq, tk)) > 0.4
        mask[:, :, ::7] = False
    return q, k, v, mask


def _both(q, k, v, mask, **options):
    theirs = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                            attn_mask=None if mask is None else torch.from_numpy(mask), **options)
    with ml.no_grad():
        ours = ml.nn.functional.scaled_dot_product_attention(*(ml.tensor(a) for a in (q, k, v)),
                                                             attn_mask=None if mask is None else ml.tensor(mask),
                                                             **options)
    return ours.numpy(), theirs.numpy()


CASES = [  # (batch, query heads, key/value heads, Tq, Tk, head size, causal, mask)
    (1, 2, 2, 7, 7, 16, False, None),          # shorter than a vector: C's exp alone
    (2, 4, 2, 40, 40, 32, True, None),         # GQA, two query blocks (32 + a block of 8)
    (1, 2, 2, 33, 37, 128, False, "float"),    # a one-row query block; scale not a power of 2, added mask: one fma
    (1, 4, 2, 3, 45, 80, False, "bool"),       # a chunk of 3 tokens over a cache (GQA)
    (1, 2, 1, 100, 700, 64, False, None),      # two blocks of keys: the running max and sum rescaled
    (1, 1, 1, 200, 1100, 32, True, "bool"),    # query blocks of 64, three blocks of keys, causal and masked
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_sdpa_is_torchs_flash_kernel_bit_for_bit(dtype, case):
    *shape, causal, mask = case
    q, k, v, mask = _inputs(dtype, *shape, mask, seed=len(shape) + shape[3])
    ours, theirs = _both(q, k, v, mask, is_causal=causal, enable_gqa=shape[1] != shape[2])
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_heads_laid_out_as_a_projection_and_training():
    """[B, T, H, D] projections viewed as [B, H, T, D] (a Llama's layout): the same bits. Where a gradient is wanted
    the fused node runs instead (it has the backward), its values within rounding of torch's."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 24, 4, 64)).astype(np.float32).transpose(0, 2, 1, 3) for _ in range(3))
    ours, theirs = _both(q, k, v, None, is_causal=True)
    assert np.array_equal(ours, theirs)
    leaves = [ml.tensor(a, requires_grad=True) for a in (q, k, v)]
    ml.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True).sum().backward()
    torch_leaves = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    F.scaled_dot_product_attention(*torch_leaves, is_causal=True).sum().backward()
    for a, b in zip(leaves, torch_leaves):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_exp_u20_is_atens():
    """ATen's fast exp: within ~3e-6 of exp down to -80 (its 2^(n-1) underflows to 0 from about -87.3), 0 below
    log(FLT_MIN); compiled (native/float32_kernels.c) and in NumPy the same bits, sums included."""
    x = np.concatenate([-np.linspace(0, 80, 100001, dtype=np.float32), np.float32([-88, -np.inf])])
    got = attention32.exp_u20(x)
    assert np.allclose(got[:-2], np.exp(x[:-2].astype(np.float64)), rtol=3e-6, atol=0) and not got[-2:].any()
    rows = -np.abs(np.random.default_rng(4).standard_normal((9, 77)) * 9)
    for dtype in (np.float32, np.float64):
        compiled = attention32._exp_and_lane_sum(rows.astype(dtype))
        with ml.float32_math.numpy_port():
            port = attention32._exp_and_lane_sum(rows.astype(dtype))
        assert all(np.array_equal(a, b) for a, b in zip(compiled, port))


def _llama_pair():
    from test_mkl_vml_r28 import _llama_pair as pair
    reference, model = pair("sdpa")  # transformers' default
    assert model.config._attn_implementation == "sdpa"
    return reference, model


def test_llama_sdpa_logits_are_transformers_bit_for_bit():
    reference, model = _llama_pair()
    ids = np.random.default_rng(0).integers(0, 300, (2, 40))
    padded = np.ones((2, 40), np.int64)
    padded[1, :5] = 0  # left padding: a boolean mask, not is_causal
    for attention_mask in (None, padded):
        with torch.no_grad():
            expected = reference(input_ids=torch.as_tensor(ids), attention_mask=None if attention_mask is None
                                 else torch.as_tensor(attention_mask)).logits.numpy()
        with ml.no_grad():
            got = model(ml.tensor(ids), attention_mask=None if attention_mask is None
                        else ml.tensor(attention_mask)).logits.numpy()
        assert np.array_equal(got, expected)  # (padded positions too: rows that see no key give 0, as torch)


def test_llama_sdpa_generate_scores_are_transformers():
    """Prefill, then one token at a time over the cache: every step's scores are transformers' (sdpa)."""
    from test_mkl_vml_r28 import assert_same_greedy_scores
    assert_same_greedy_scores(*_llama_pair())


@pytest.mark.parametrize("shapes, gqa", [
    (((1, 2, 5, 16), (3, 2, 6, 16), (3, 2, 6, 16)), False),  # the query's batch broadcast
    (((2, 4, 5, 16), (2, 1, 6, 16), (2, 1, 6, 16)), False),  # one key/value head broadcast, without enable_gqa
    (((2, 2, 5, 16), (2, 2, 6, 16), (2, 2, 6, 24)), False),  # values of another head size
], ids=["batch", "heads", "value-size"])
def test_broadcasts_run_torchs_math_kernel(shapes, gqa):
    """torch's dispatcher gives these to its math kernel, not the flash one (its grad_fn says so): minilora runs
    that kernel's ops, and so has its bits (before, the fused node: last bits off)."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for shape in shapes)
    ours, theirs = _both(q, k, v, None, enable_gqa=gqa)
    assert np.array_equal(ours, theirs)
    leaves = [ml.tensor(a, requires_grad=True) for a in (q, k, v)]
    torch_leaves = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    ours = ml.nn.functional.scaled_dot_product_attention(*leaves, enable_gqa=gqa)
    theirs = F.scaled_dot_product_attention(*torch_leaves, enable_gqa=gqa)
    assert ours.grad_fn.name() == theirs.grad_fn.name()
