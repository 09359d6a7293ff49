"""MKL's threads as torch's (round 30): minilora's products torch's on 2 threads, torch left alone.

torch 2.13 multiplies with MKL on MKL's GNU OpenMP layer, and on 2 threads MKL splits the sum over K for few rows,
long K and weight gradients over many rows; minilora now runs its whole products on the same layer, linked against
the libgomp torch uses, with no MKL symbol in the process's global scope (before, libmkl_rt put its sequential
layer there, and torch imported afterwards multiplied on it: its 2-thread products were its 1-thread ones).

Each check runs in a subprocess whose thread settings are fixed in its environment (the pytest process has its
own libraries loaded already); none depends on timing. ``tests/mkl_threads_sweep.py`` sweeps the tutorials' Linear
shapes (328 tensors: 52 differed on 2 threads before, 0 after).
"""
import json
import os
import sys
import textwrap

import pytest

from minilora import blas, mkl_dot

import background_runs  # (tests/ is on the path: conftest.py)

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(blas._mkl_library() is None, reason="the `mkl` wheel (minilora[mkl]) is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Whether MKL's 2 threads give these products other bits than 1 thread (they split the sum over K), so that the bits
# tell how many threads ran: on the Intel AVX-512 CPU the project measured, yes; on an AMD EPYC (Zen 4) torch's own
# 2-thread products were its 1-thread bits for every shape tried (38: 1-2048 rows, K up to 10^6, float32 and
# float64, B as is and transposed), so there the tests check the thread count minilora gives MKL instead.
THREADS_SHOW_IN_BITS = mkl_dot.APPLIES

# torch's own products: few rows, long K, a weight gradient's shape, a square one; on 2 threads then 1
TORCH_PRODUCTS = """
import hashlib
def torch_digests():
    import torch  # (here: a process may load minilora's MKL before torch is imported)
    out = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        g = torch.Generator().manual_seed(0)
        for dtype in (torch.float32, torch.float64):
            for m, k, n in ((16, 784, 256), (64, 4096, 300), (1024, 10, 64), (256, 256, 688)):
                a, b = torch.randn(m, k, generator=g, dtype=dtype), torch.randn(k, n, generator=g, dtype=dtype)
                out.append(hashlib.sha256((a @ b).numpy().tobytes()).hexdigest()[:12])
    return out
"""

MINILORA_PRODUCT = """
import numpy as np
import minilora as ml  # (its import loads no BLAS: the first product does)
def minilora_product():
    x = np.random.default_rng(1).standard_normal((16, 784)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((256, 784)).astype(np.float32)
    return ml.nn.functional.linear(ml.tensor(x), ml.tensor(w)).numpy()
"""


def _run(body, threads=2):
    """Run ``body`` (Python; it prints one JSON line last) in a fresh process with every thread count fixed."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(threads), MINILORA_NUM_THREADS=str(threads))
    env.pop("MKL_NUM_THREADS", None)
    code = TORCH_PRODUCTS + MINILORA_PRODUCT + textwrap.dedent(body)
    done = background_runs.run_process([sys.executable, "-c", code], env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_torch_products_unchanged_whichever_is_imported_first():
    alone = _run("import json\nprint(json.dumps(torch_digests()))")
    minilora_first = _run("""
        import json
        minilora_product()  # (MKL loaded and used before torch is imported)
        print(json.dumps(torch_digests()))""")
    torch_first = _run("""
        import json, torch
        torch_digests()
        minilora_product()
        print(json.dumps(torch_digests()))""")
    assert minilora_first == alone
    assert torch_first == alone


def test_two_thread_linear_and_factorisations_are_torchs():
    """Few rows (MNIST's first layer), long K, a weight gradient over many rows: MKL splits K on 2 threads; and
    MKL's QR and SVD (LAPACK on MKL's threads too). (minilora's MKL loaded first: the next test imports torch first.)"""
    result = _run("""
        import json
        minilora_product()
        import numpy as np, torch, minilora as ml
        torch.set_num_threads(2)
        same = []
        for rows, k, n in ((16, 784, 256), (64, 4096, 512), (1024, 256, 64)):
            for dtype in (np.float32, np.float64):
                rng = np.random.default_rng(rows)
                x, w = rng.standard_normal((rows, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
                g = rng.standard_normal((rows, n)).astype(dtype)
                got = []
                for lib in (torch, ml):
                    tx, tw = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
                    y = lib.nn.functional.linear(tx, tw)
                    y.backward(lib.tensor(g))
                    got.append([y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()])
                same += [bool(np.array_equal(t, m)) for t, m in zip(*got)]
        factors = []
        for dtype in (np.float32, np.float64):
            a = np.random.default_rng(5).standard_normal((1500, 256)).astype(dtype)
            pairs = zip(torch.linalg.qr(torch.tensor(a)) + torch.linalg.svd(torch.tensor(a), full_matrices=False),
                        ml.linalg.qr(ml.tensor(a)) + ml.linalg.svd(ml.tensor(a), full_matrices=False))
            factors += [bool(np.array_equal(t.numpy(), m.numpy())) for t, m in pairs]
        print(json.dumps([same, factors, ml.blas._mkl_layer]))""")
    same, factors, layer = result
    assert layer == "gnu"
    assert all(same), same
    assert all(factors), factors  # (Q, R, U, S, Vh: 2-thread LAPACK's, torch's)


def test_thread_counts_set_in_torch_or_minilora_steer_minilora_alike():
    result = _run("""
        import json, numpy as np, torch
        torch.set_num_threads(2)
        torch.ones(2) @ torch.ones(2)  # (torch imported and used first)
        x = np.random.default_rng(1).standard_normal((16, 784)).astype(np.float32)
        w = np.random.default_rng(2).standard_normal((256, 784)).astype(np.float32)
        torch_at = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch_at[threads] = (torch.tensor(x) @ torch.tensor(w).T).numpy()
        same, counts = {}, []
        torch.set_num_threads(1)
        same["torch 1"] = bool(np.array_equal(minilora_product(), torch_at[1]))
        counts.append(ml.blas._threads_for_product())
        torch.set_num_threads(2)
        same["torch 2"] = bool(np.array_equal(minilora_product(), torch_at[2]))
        counts.append(ml.blas._threads_for_product())
        ml.parallel.set_num_threads(1)
        same["minilora 1"] = bool(np.array_equal(minilora_product(), torch_at[1]))
        counts.append(ml.blas._threads_for_product())
        ml.parallel.set_num_threads(2)
        same["minilora 2"] = bool(np.array_equal(minilora_product(), torch_at[2]))
        counts.append(ml.blas._threads_for_product())
        same["torch's differ"] = not np.array_equal(torch_at[1], torch_at[2])
        print(json.dumps([same, counts]))""")
    result, counts = result
    if not THREADS_SHOW_IN_BITS:  # (the bits equal anyway: the counts minilora gave MKL say it followed)
        result.pop("torch's differ")
        assert counts == [1, 2, 1, 2], counts
    assert all(result.values()), result
    # OMP_NUM_THREADS=1: torch's count, and so minilora's MKL's, is one
    one = _run("""
        import json, numpy as np, torch
        a = minilora_product()
        print(json.dumps([torch.get_num_threads(), bool(np.array_equal(a, (torch.tensor(
            np.random.default_rng(1).standard_normal((16, 784)).astype(np.float32)) @ torch.tensor(
            np.random.default_rng(2).standard_normal((256, 784)).astype(np.float32)).T).numpy()))]))""", threads=1)
    assert one == [1, True]


def test_fork_after_a_threaded_product_does_not_hang():
    """GNU OpenMP's worker threads do not survive fork: a child's next threaded product waited for them forever
    (torch's own does). minilora's child multiplies on one thread: its bits are the 1-thread product's."""
    result = _run("""
        import json, multiprocessing, numpy as np, torch
        torch.set_num_threads(1)
        x = np.random.default_rng(1).standard_normal((16, 784)).astype(np.float32)
        w = np.random.default_rng(2).standard_normal((256, 784)).astype(np.float32)
        one_thread = (torch.tensor(x) @ torch.tensor(w).T).numpy()
        torch.set_num_threads(2)
        threaded = np.array_equal(minilora_product(), (torch.tensor(x) @ torch.tensor(w).T).numpy())  # workers exist
        def child(queue):
            queue.put(bool(np.array_equal(minilora_product(), one_thread)))
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        process = ctx.Process(target=child, args=(queue,))
        process.start()
        process.join(120)
        alive = process.is_alive()
        if alive:
            process.kill()
        print(json.dumps([bool(threaded), alive, process.exitcode, None if alive else queue.get()]))""")
    assert result == [True, False, 0, True]


def test_without_torch():
    """torch hidden: MKL still loads -- on the system's libgomp, where there is one, threaded as torch's would be
    (2 threads: other bits than 1 on MNIST's layer), else on the sequential layer -- and multiplies."""
    result = _run("""
        import sys, json
        sys.modules["torch"] = None
        import numpy as np, minilora as ml
        two = minilora_product()
        ml.parallel.set_num_threads(1)
        one = minilora_product()
        x = np.random.default_rng(1).standard_normal((16, 784))
        w = np.random.default_rng(2).standard_normal((256, 784))
        ml.parallel.set_num_threads(2)
        print(json.dumps([ml.blas.library(), ml.blas._mkl_layer, bool(np.array_equal(one, two)),
                          float(np.abs(two - x @ w.T).max()), ml.blas._threads_for_product()]))""")
    library, layer, threads_agree, error, threads = result
    assert library == "mkl" and error < 1e-3
    threaded = not threads_agree if THREADS_SHOW_IN_BITS else threads == 2  # (THREADS_SHOW_IN_BITS: why)
    assert layer == "sequential" and threads_agree or layer == "gnu" and threaded
