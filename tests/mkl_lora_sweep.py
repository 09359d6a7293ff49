"""Sweep: PEFT's LoRA Linear against minilora's on a 7B model's shapes (hidden 4096: W0 4096x4096 and 4096x11008),
rows 1..2048, r 8/16/64, float32 and float64, on 1 and 2 threads (torch.set_num_threads, minilora's count), and
torch's batched products (attention's [B, H, T, d] products, 3-D @ 2-D) against minilora's. Prints how many of the
tensors (y, dx, dA, dB, dbias; a product) differ in any bit.

Run: ``PYTHONPATH=. python tests/mkl_lora_sweep.py [-v] [--quick]`` (minutes on 2 cores; ``--quick``: the smaller
7B shapes only). Round 31 (2 vCPUs of an Intel Xeon, MKL 2024.2, torch 2.13): see minilora/ops/lora.py's
``_products_whole``; on 2 threads the tutorial shapes (64-2048 rows, 256-1376 features) by blocks of rows were off
PEFT's in 84 of 240 float32 tensors, 110 of 240 float64 ones; whole, 0."""
import sys

import numpy as np
import torch
import peft

import minilora as ml

QUICK = [(rows, k, n, r) for rows in (1, 16, 128) for k, n in ((4096, 4096), (4096, 11008)) for r in (8, 64)]
TUTORIAL = [(rows, k, n, r) for rows in (64, 256, 1024, 2048) for k, n in ((256, 688), (688, 256), (256, 256),
                                                                          (512, 1376), (1376, 512), (1024, 1024))
            for r in (8, 64)]
FULL = [(rows, k, n, r) for rows in (1, 8, 64, 256, 512, 2048) for k, n in ((4096, 4096), (4096, 11008), (11008, 4096))
        for r in (8, 16, 64)]
# attention's products: [B, H, T, d] @ [B, H, d, T] and the weights @ values; 3-D @ 2-D (a Linear's matmul)
BATCHED = [((1, 32, 128, 128), (1, 32, 128, 128)), ((2, 32, 64, 128), (2, 32, 128, 64)),
           ((1, 32, 512, 128), (1, 32, 128, 512)), ((4, 8, 256, 64), (4, 8, 64, 256)),
           ((2, 512, 4096), (4096, 1024)), ((4, 64, 4096), (4096, 4096)), ((8, 16, 1024), (1024, 256))]


class _One(torch.nn.Module):
    def __init__(self, k, n, bias, device=None):
        super().__init__()
        self.proj = torch.nn.Linear(k, n, bias=bias, device=device)


def lora_pair(k, n, r, dtype, alpha, bias=True, seed=0):
    """PEFT's and minilora's LoRA of one Linear [k -> n], the same weights (B not zero)."""
    rng = np.random.default_rng(seed)
    theirs = torch.nn.utils.skip_init(_One, k, n, bias).to(torch.float64 if dtype == np.float64 else torch.float32)
    values = {name: (rng.standard_normal(tuple(p.shape), np.float32) / np.float32(np.sqrt(k))).astype(dtype)
              for name, p in theirs.named_parameters()}
    for name, p in theirs.named_parameters():
        p.data = torch.from_numpy(values[name].copy())
    ours = ml.nn.Module()
    ours.proj = ml.nn.utils.skip_init(ml.nn.Linear, k, n, bias=bias,  # (its values set below: no draw)
                                      dtype=ml.float64 if dtype == np.float64 else ml.float32)
    for name, p in ours.named_parameters():
        p.data = ml.tensor(values[name].copy())
    config = dict(r=r, lora_alpha=alpha, target_modules=["proj"])
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    ours = ml.lora.get_peft_model(ours, ml.lora.LoraConfig(**config))
    ours_named = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.requires_grad or "bias" in name:
            value = (rng.standard_normal(tuple(p.shape)) / 10).astype(dtype)
            p.data = torch.from_numpy(value.copy())
            ours_named[name].data = ml.tensor(value.copy())
    for name, p in theirs.named_parameters():  # the bias trained too: its gradient compared
        if "bias" in name:
            p.requires_grad_(True)
            ours_named[name].requires_grad_(True)
    return theirs, ours


def lora_tensors(lib, model, x, g):
    """y, dx, dA, dB, dbias of the model's one LoRA layer, as NumPy arrays."""
    tx = lib.tensor(x, requires_grad=True)
    y = model.base_model.model.proj(tx)
    y.backward(lib.tensor(g))
    named = dict(model.named_parameters())
    grads = [named[name].grad for name in sorted(named) if named[name].requires_grad]
    return [y.detach().numpy(), tx.grad.numpy()] + [t.numpy() for t in grads]


def lora_sweep(shapes, threads, dtype, alpha=None):
    """(tensors differing, tensors compared, where) for PEFT's and minilora's LoRA layers of ``shapes``."""
    torch.set_num_threads(threads)
    ml.parallel.set_num_threads(threads)
    differing, total, where = 0, 0, []
    for rows, k, n, r in shapes:
        theirs, ours = lora_pair(k, n, r, dtype, 2 * r if alpha is None else alpha)
        rng = np.random.default_rng(rows)
        x = rng.standard_normal((rows, k)).astype(dtype)
        g = rng.standard_normal((rows, n)).astype(dtype)
        pairs = list(zip(lora_tensors(torch, theirs, x, g), lora_tensors(ml, ours, x, g)))
        bad = [str(i) for i, (t, m) in enumerate(pairs) if not np.array_equal(t, m)]
        differing, total = differing + len(bad), total + len(pairs)
        if bad:
            where.append(f"{rows}x{k}->{n}/r{r}:{','.join(bad)}")
    return differing, total, where


def batched_sweep(threads, dtype):
    torch.set_num_threads(threads)
    ml.parallel.set_num_threads(threads)
    rng = np.random.default_rng(3)
    differing, where = 0, []
    for a_shape, b_shape in BATCHED:
        a, b = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
        g = rng.standard_normal(np.broadcast_shapes(a_shape[:-1] + (1,), b_shape[:-2] + (1, 1))[:-1]
                                + b_shape[-1:]).astype(dtype)
        bad = [name for name, t, m in zip(("out", "da", "db"), product_tensors(torch, a, b, g), product_tensors(ml, a, b, g))
               if not np.array_equal(t, m)]
        differing += len(bad)
        if bad:
            where.append(f"{a_shape}@{b_shape}:{','.join(bad)}")
    return differing, 3 * len(BATCHED), where


def product_tensors(lib, a, b, g):
    """``a @ b`` and its gradients for ``a`` and ``b``, as NumPy arrays."""
    ta, tb = lib.tensor(a, requires_grad=True), lib.tensor(b, requires_grad=True)
    out = lib.matmul(ta, tb)
    out.backward(lib.tensor(g))
    return out.detach().numpy(), ta.grad.numpy(), tb.grad.numpy()


if __name__ == "__main__":
    shapes = TUTORIAL + (QUICK if "--quick" in sys.argv else FULL)
    for threads in (1, 2):
        for dtype in (np.float32, np.float64):
            name = f"{threads} thread(s) {np.dtype(dtype).name}"
            for what, (differing, total, where) in (("batched", batched_sweep(threads, dtype)),
                                                    ("lora", lora_sweep(shapes, threads, dtype)),
                                                    ("lora s=1.5", lora_sweep(shapes[:4], threads, dtype, alpha=12))):
                print(f"{name} {what}: {differing} of {total} tensors differ"
                      + ("  " + " ".join(where) if "-v" in sys.argv else ""), flush=True)
