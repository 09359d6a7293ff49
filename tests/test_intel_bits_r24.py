"""16-bit matrix products on an Intel CPU with AMX-BF16 and AVX512-FP16 (Sapphire Rapids class): torch's bits.

There torch's oneDNN multiplies bfloat16 in AMX tiles (``bf16_products.ORDER == "tiles"``: per 32 k the even and the
odd k in two chains, every sum flushed below 2^-126) and float16 in AVX512-FP16 kernels (``half_products._ONEDNN``:
k after k in oneDNN's blocks). Planted operands (two products of +-2^40, or +-2^26, among ones) make each order show:
what survives of the ones says where the partial sums met. Other CPUs skip (AMD's orders: test_bf16_bits_r21,
test_half_bits_r22)."""
import numpy as np
import pytest

import minilora as ml
torch = pytest.importorskip("torch")



def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as info:
            return set(next((line for line in info if line.startswith("flags")), "").split())
    except OSError:
        return set()


_FLAGS = _cpu_flags()  # (read here, not from minilora: these tests say what the CPU is, minilora must follow)
amx = pytest.mark.skipif(not {"amx_bf16", "amx_tile", "avx512_bf16"} <= _FLAGS,
                         reason="AMX-BF16's tile order is torch's on AMX CPUs only")
fp16_onednn = pytest.mark.skipif("avx512_fp16" not in _FLAGS,
                                 reason="oneDNN's float16 blocks are torch's path on AVX512-FP16 CPUs only")


def planted(k, columns, big, seed=0, small=1.0):
    """[k, columns]: each column +big and -big at two random k and ``small`` at a third, zeros elsewhere."""
    rng = np.random.default_rng(seed)
    b = np.zeros((k, columns), np.float32)
    for n in range(columns):
        i, j, s = rng.choice(k, 3, replace=False)
        b[i, n], b[j, n], b[s, n] = big, -big, small
    return b


def both(array, dtype):
    """The same 16-bit values as a minilora and a torch tensor."""
    return ml.tensor(array).to(getattr(ml, dtype)), torch.from_numpy(array).to(getattr(torch, dtype))


def bits(tensor):
    return tensor.detach().float().numpy()


def ones_times_planted(k, dtype, big, rows=8, columns=400, scale=1.0):
    x = np.full((rows, k), scale, np.float32)
    return both(x, dtype), both(planted(k, columns, big / scale, small=1 / scale), dtype)


@amx
@pytest.mark.parametrize("k", [64, 96, 256, 1024])
def test_bf16_matmul_sums_in_amx_tile_order(k):
    (mx, tx), (mb, tb) = ones_times_planted(k, "bfloat16", 2.0 ** 40)
    np.testing.assert_array_equal(bits(mx @ mb), bits(tx @ tb))


@amx
def test_bf16_linear_and_its_gradients_in_amx_tile_order():
    (mx, tx), (mb, tb) = ones_times_planted(128, "bfloat16", 2.0 ** 40, rows=16, columns=64)
    mw, tw = ml.tensor(bits(tb).T.copy()).to(ml.bfloat16).requires_grad_(), tb.T.contiguous().requires_grad_()
    mx.requires_grad_(), tx.requires_grad_()
    my, ty = ml.nn.functional.linear(mx, mw), torch.nn.functional.linear(tx, tw)
    np.testing.assert_array_equal(bits(my), bits(ty))
    grad = planted(64, 16, 2.0 ** 40, seed=1).T.copy()  # [16 rows, 64 outputs]: dW = dY^T X sums over planted rows
    my.backward(ml.tensor(grad).to(ml.bfloat16)), ty.backward(torch.from_numpy(grad).bfloat16())
    np.testing.assert_array_equal(bits(mw.grad), bits(tw.grad))
    np.testing.assert_array_equal(bits(mx.grad), bits(tx.grad))


@amx
def test_bf16_amx_flushes_subnormal_sums_and_inputs():
    x = np.zeros((8, 64), np.float32)  # (8 x 64 x 16 multiply-adds: above 16^3, oneDNN's)
    w = np.zeros((16, 64), np.float32)
    x[:, 0], w[:, 0] = 2.0 ** -63, 2.0 ** -64  # a product of 2^-127: a subnormal sum, flushed
    x[1, 2], w[1, 2] = 1.0, 2.0 ** -126
    x[2, 4], w[2, 4] = 2.0 ** -130, 2.0 ** 10  # a subnormal input reads as zero
    x[3, 6], w[3, 6] = 2.0 ** -63, -2.0 ** -63 * (1 - 2 ** -7)  # normal products cancelling to a subnormal
    x[3, 8], w[3, 8] = 2.0 ** -63, 2.0 ** -63
    (mx, tx), (mw, tw) = both(x, "bfloat16"), both(w, "bfloat16")
    np.testing.assert_array_equal(bits(ml.nn.functional.linear(mx, mw)), bits(torch.nn.functional.linear(tx, tw)))


@amx
def test_bf16_bmm_and_batched_matmul_in_amx_tile_order():
    b = planted(96, 48, 2.0 ** 40, seed=2).reshape(96, 3, 16).transpose(1, 0, 2).copy()  # 3 matrices [96, 16]
    (ma, ta), (mb, tb) = both(np.ones((3, 8, 96), np.float32), "bfloat16"), both(b, "bfloat16")
    np.testing.assert_array_equal(bits(ml.bmm(ma, mb)), bits(torch.bmm(ta, tb)))
    np.testing.assert_array_equal(bits(ml.matmul(ma, mb)), bits(torch.matmul(ta, tb)))


@fp16_onednn
@pytest.mark.parametrize("k", [64, 600, 1100])
def test_fp16_matmul_sums_k_after_k_in_onednn_blocks(k):
    (mx, tx), (mb, tb) = ones_times_planted(k, "float16", 2.0 ** 26, scale=2.0 ** 12)
    np.testing.assert_array_equal(bits(mx @ mb), bits(tx @ tb))


@fp16_onednn
def test_fp16_linear_and_its_gradients_in_onednn_order():
    (mx, tx), (mb, tb) = ones_times_planted(96, "float16", 2.0 ** 26, rows=16, columns=64, scale=2.0 ** 12)
    mw, tw = ml.tensor(bits(tb).T.copy()).to(ml.float16).requires_grad_(), tb.T.contiguous().requires_grad_()
    mx.requires_grad_(), tx.requires_grad_()
    my, ty = ml.nn.functional.linear(mx, mw), torch.nn.functional.linear(tx, tw)
    np.testing.assert_array_equal(bits(my), bits(ty))
    grad = planted(64, 16, 2.0 ** 14, seed=3, small=2.0 ** -12).T.copy()
    my.backward(ml.tensor(grad).to(ml.float16)), ty.backward(torch.from_numpy(grad).half())
    np.testing.assert_array_equal(bits(mw.grad), bits(tw.grad))
    np.testing.assert_array_equal(bits(mx.grad), bits(tx.grad))


@amx
def test_bf16_small_product_is_atens_loop():
    # 4 x 64 x 16 = 16^3 multiply-adds: torch's cpublas keeps it (ATen's dot product of 8-lane registers)
    (mx, tx), (mw, tw) = ones_times_planted(64, "bfloat16", 2.0 ** 40, rows=4, columns=16)
    np.testing.assert_array_equal(bits(ml.nn.functional.linear(mx, mw.T)), bits(torch.nn.functional.linear(tx, tw.T)))


@amx
def test_bf16_matrix_vector_keeps_the_float32_sum():
    # one column is torch's matrix-vector kernel, not oneDNN's tiles: not modelled, the float32 sum (to rounding)
    (mx, tx), (mb, tb) = both(np.random.default_rng(4).standard_normal((8, 256)).astype(np.float32), "bfloat16"), \
        both(np.random.default_rng(5).standard_normal((256, 1)).astype(np.float32), "bfloat16")
    np.testing.assert_allclose(bits(mx @ mb), bits(tx @ tb), rtol=2 ** -7, atol=1e-2)
