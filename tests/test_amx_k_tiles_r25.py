"""bfloat16 products on an AMX CPU whose k is no multiple of 32: oneDNN's tiles of k (``bf16_products.tile_k``).

Round 24 modelled AMX's tiles of 32 k (tests/test_intel_bits_r24.py) and left k = 48 (a nanoGPT's c_attn gradient
[64, 48] @ [48, 16]) an ulp off. Planted operands (+-2^40 and a one in each column, ones on the left: which ones
survive says which k shared a chain) show oneDNN cutting such a k into ceil(k / 32) equal tiles where they can be
equal and even (48 = 24 + 24, 40 = 20 + 20, 90 = 3 x 30), up to 4 of them; else 32s and a shorter last tile. Other
CPUs skip (their orders: test_bf16_bits_r21)."""
import numpy as np
import pytest

import minilora as ml
from minilora import bf16_products, float32_math

torch = pytest.importorskip("torch")

amx = pytest.mark.skipif(bf16_products.ORDER != "tiles", reason="AMX-BF16's tiles are torch's order on AMX CPUs only")


def planted(k, columns, big=2.0 ** 40, seed=0):
    rng = np.random.default_rng(seed)
    b = np.zeros((k, columns), np.float32)
    for n in range(columns):
        i, j, s = rng.choice(k, 3, replace=False)
        b[i, n], b[j, n], b[s, n] = big, -big, 1.0
    return b


def both(array):
    return ml.tensor(array).to(ml.bfloat16), torch.from_numpy(array).to(torch.bfloat16)


def bits(t):
    return t.detach().float().numpy()


def test_tile_k_splits_into_equal_even_tiles_up_to_four():
    assert [bf16_products.tile_k(k) for k in (32, 64, 48, 40, 56, 36, 90, 120, 34, 62, 88, 100, 130, 24)] == \
        [32, 32, 24, 20, 28, 18, 30, 30, 32, 32, 32, 32, 32, 24]


@amx
@pytest.mark.parametrize("k", [48, 40, 56, 66, 90, 120])
def test_bf16_matmul_with_k_in_equal_tiles_is_torchs(k):
    for rows, columns in ((8, 256), (33, 64), (64, 16)):
        (ma, ta), (mb, tb) = both(np.ones((rows, k), np.float32)), both(planted(k, columns))
        np.testing.assert_array_equal(bits(ma @ mb), bits(ta @ tb))
        with float32_math.numpy_port():  # (the NumPy loop: the same order as the compiled one)
            np.testing.assert_array_equal(bits(ma @ mb), bits(ta @ tb))


@amx
def test_nanogpt_c_attn_input_gradient_is_torchs():
    # [64, 48] @ [48, 16]: the gradient round 24 left an ulp off (one element in 1024)
    # (dX = dY W: a planted dY [64, 48] times a weight of ones, so that what survives of the ones shows the order)
    rng = np.random.default_rng(3)
    (mx, tx), (mw, tw) = both(rng.standard_normal((64, 16)).astype(np.float32)), both(np.ones((48, 16), np.float32))
    mx.requires_grad_(), tx.requires_grad_()
    (mg, tg) = both(planted(48, 64, seed=4).T.copy())
    ml.nn.functional.linear(mx, mw).backward(mg), torch.nn.functional.linear(tx, tw).backward(tg)
    np.testing.assert_array_equal(bits(mx.grad), bits(tx.grad))
