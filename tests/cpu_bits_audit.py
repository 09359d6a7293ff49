"""Which of minilora's torch-bit models hold on this CPU: each op on the same inputs in minilora and torch, the count
of elements whose bits differ. A script, run once per machine (not collected by pytest):

    PYTHONPATH=. python tests/cpu_bits_audit.py

Random operands show what a user sees; planted ones (two products of +-big among small ones: what survives says
where partial sums meet) show whether a product's order of additions is torch's. A whole Llama or PEFT model is
compared by tests/test_bf16_bits_r21.py, test_half_bits_r22.py and test_bf16_llama.py.
"""
import platform

import numpy as np
import torch

import minilora as ml
from minilora import bf16_products, float32_math, half_products, mkl_half_gemm

F = torch.nn.functional
rng = np.random.default_rng(0)


def pair(array, dtype):
    return ml.tensor(np.asarray(array, np.float32)).to(getattr(ml, dtype)), \
        torch.from_numpy(np.asarray(array, np.float32)).to(getattr(torch, dtype))


def off(mine, theirs):
    a, b = mine.detach().float().numpy(), theirs.detach().float().numpy()
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return int((~same).sum()), a.size


def report(name, mine, theirs):
    count, size = off(mine, theirs)
    print(f"{name:52s} {count:7d} / {size}")


def planted(k, columns, big, small):
    b = np.zeros((k, columns), np.float32)
    for n in range(columns):
        i, j, s = rng.choice(k, 3, replace=False)
        b[i, n], b[j, n], b[s, n] = big, -big, small
    return b


def products(dtype):
    big, small, scale = (2.0 ** 40, 1.0, 1.0) if dtype == "bfloat16" else (2.0 ** 14, 2.0 ** -12, 2.0 ** 12)
    for m, k, n in [(8, 64, 32), (33, 96, 40), (16, 600, 24), (4, 1100, 8), (1, 256, 64), (4, 64, 16)]:
        (mx, tx), (mw, tw) = pair(rng.standard_normal((m, k)), dtype), pair(rng.standard_normal((n, k)) / 8, dtype)
        mx.requires_grad_(), tx.requires_grad_(), mw.requires_grad_(), tw.requires_grad_()
        my, ty = ml.nn.functional.linear(mx, mw), F.linear(tx, tw)
        gy = rng.standard_normal((m, n))
        my.backward(pair(gy, dtype)[0]), ty.backward(pair(gy, dtype)[1])
        report(f"{dtype} linear {m}x{k}x{n} random", my, ty)
        report(f"{dtype}   dX, dW", ml.cat([mx.grad.flatten(), mw.grad.flatten()]),
               torch.cat([tx.grad.flatten(), tw.grad.flatten()]))
        (ma, ta), (mb, tb) = pair(np.full((m, k), scale), dtype), pair(planted(k, 300, big, small), dtype)
        report(f"{dtype} matmul {m}x{k}x300 planted", ma @ mb, ta @ tb)
    (ma, ta), (mb, tb) = pair(rng.standard_normal((3, 16, 40)), dtype), pair(rng.standard_normal((3, 40, 24)), dtype)
    report(f"{dtype} bmm 3x16x40x24", ml.bmm(ma, mb), torch.bmm(ta, tb))
    (ma, ta), (mb, tb) = pair(rng.standard_normal((8, 256)), dtype), pair(rng.standard_normal((256, 1)), dtype)
    report(f"{dtype} matrix @ one column", ma @ mb, ta @ tb)


def convolution(dtype):
    (mx, tx), (mw, tw) = pair(rng.standard_normal((2, 8, 12, 12)), dtype), pair(rng.standard_normal((16, 8, 3, 3)) / 8,
                                                                                  dtype)
    report(f"{dtype} conv2d 2x8x12x12 * 16x8x3x3", ml.nn.functional.conv2d(mx, mw, padding=1), F.conv2d(tx, tw, padding=1))


def attention(dtype):
    for tq in (64, 1):
        q, k, v = (rng.standard_normal((1, 4, t, 32)) for t in (tq, 96, 96))
        (mq, tq_), (mk, tk), (mv, tv) = pair(q, dtype), pair(k, dtype), pair(v, dtype)
        report(f"{dtype} sdpa 4-D {'decode' if tq == 1 else 'prefill'} q {tq} x 96 keys",
               ml.nn.functional.scaled_dot_product_attention(mq, mk, mv),
               F.scaled_dot_product_attention(tq_, tk, tv))


def pointwise(dtype):
    x = rng.standard_normal((64, 257)) * 3
    (mx, tx) = pair(x, dtype)
    report(f"{dtype} layer_norm", ml.nn.functional.layer_norm(mx, (257,)), F.layer_norm(tx, (257,)))
    report(f"{dtype} rms_norm", ml.nn.functional.rms_norm(mx, (257,)), F.rms_norm(tx, (257,)))
    report(f"{dtype} softmax", ml.softmax(mx, -1), torch.softmax(tx, -1))
    report(f"{dtype} gelu", ml.nn.functional.gelu(mx), F.gelu(tx))
    report(f"{dtype} gelu tanh", ml.nn.functional.gelu(mx, approximate="tanh"), F.gelu(tx, approximate="tanh"))
    report(f"{dtype} silu", ml.nn.functional.silu(mx), F.silu(tx))
    report(f"{dtype} sum(-1)", mx.sum(-1), tx.sum(-1))
    report(f"{dtype} sum()", mx.sum(), tx.sum())
    report(f"{dtype} mean(0)", mx.mean(0), tx.mean(0))
    for name in ("exp", "log", "tanh", "sigmoid", "sqrt", "sin"):
        arg = np.abs(x) + 0.1 if name in ("log", "sqrt") else x
        (ma, ta) = pair(arg, dtype)
        report(f"{dtype} {name}", getattr(ml, name)(ma), getattr(torch, name)(ta))


if __name__ == "__main__":
    print(platform.processor() or platform.machine(), "| capability", float32_math.CPU_CAPABILITY,
          "| bf16 order", getattr(bf16_products, "ORDER", "pairs" if bf16_products.PAIRS else None),
          "| fp16 oneDNN", half_products._ONEDNN, "| MKL one-row model", mkl_half_gemm.APPLIES)
    print(f"{'op':52s} {'off':>7s} / elements")
    for dtype in ("bfloat16", "float16"):
        products(dtype)
        convolution(dtype)
        attention(dtype)
        pointwise(dtype)
    pointwise("float32")
