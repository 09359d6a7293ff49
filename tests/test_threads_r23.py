"""Round 23: RoPE's float32 forward in one compiled pass (float32_math.rotary), on blocks of the batch.

The kernel must give the bits of the NumPy passes it replaces, which are torch's (transformers'
``q * cos + rotate_half(q) * sin``), split or whole, on 1 thread or 2, and a Llama's q and k (a transposed
[B, T, H, D] view, broadcast tables) must reach it. Since round 26 ``float32_math.rotary`` is called once per op
and splits the batch itself, in gemm_pool's C threads (``pool_blocks`` records into how many blocks).
"""
import threading

import numpy as np
import pytest

import minilora as ml
from minilora import float32_math, parallel

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not float32_math.native_available(), reason="no compiled kernels here")


def _llama_q(batch, seq, heads, dim, seed=0):
    """A [B, H, T, D] view of [B, T, H, D] memory, as a Llama's attention hands q to RoPE, with NaN, inf, -0."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, seq, heads, dim)).astype(np.float32)
    q.reshape(-1)[::97] = np.nan
    q.reshape(-1)[5::101] = -0.0
    q.reshape(-1)[7::103] = -np.inf
    angles = rng.standard_normal((1, 1, seq, dim)).astype(np.float32) * 3
    return q.transpose(0, 2, 1, 3), np.cos(angles), np.sin(angles)


def _torchs(q, cos, sin):
    """transformers' apply_rotary_pos_emb for one tensor."""
    q = torch.from_numpy(np.ascontiguousarray(q))
    half = q.shape[-1] // 2
    rotated = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
    return (q * torch.from_numpy(cos) + rotated * torch.from_numpy(sin)).numpy()


def _bits(a):
    """float32 values as their bits: NaNs compare, -0 differs from +0."""
    return np.ascontiguousarray(a).view(np.uint32)


def threads_calling(monkeypatch, kernel):
    """The threads that ran ``float32_math.<kernel>`` on blocks, one entry per call, from now on."""
    calls = []
    compiled = getattr(float32_math, kernel)

    def recorded(*blocks):
        calls.append(threading.get_ident())
        compiled(*blocks)
    monkeypatch.setattr(float32_math, kernel, recorded)
    return calls


@pytest.fixture
def pool_blocks(monkeypatch):
    """Into how many blocks gemm_pool's C threads cut each row kernel's rows, one entry per job, from now on."""
    from minilora import gemm_pool
    blocks, run = [], gemm_pool.run

    def recorded(rows, parts, products):
        if any(isinstance(p, gemm_pool.RowKernel) for p in products):
            blocks.append(parts)
        return run(rows, parts, products)
    monkeypatch.setattr(gemm_pool, "run", recorded)
    return blocks


@pytest.fixture
def kernel_calls(monkeypatch):
    """The threads that ran ``float32_math.rotary`` on blocks, one entry per call."""
    return threads_calling(monkeypatch, "rotary")


@pytest.fixture
def threads():
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


def test_llama_rotary_runs_compiled_with_torchs_bits(kernel_calls):
    q, cos, sin = _llama_q(2, 16, 4, 64)
    out = ml.ops.nn.rotary_embedding(ml.tensor(q), cos, sin).numpy()
    assert kernel_calls  # the compiled pass ran, not the NumPy passes
    assert np.array_equal(_bits(out), _bits(_torchs(q, cos, sin)))
    assert out.strides == q.strides  # in q's memory order, as before (no copy when transposed back)


@pytest.mark.parametrize("case", ["odd dim", "strided dim", "float64", "one token"])
def test_what_the_kernel_does_not_take_runs_numpys_passes(case, kernel_calls):
    q, cos, sin = _llama_q(2, 16 if case != "one token" else 1, 4, 63 if case == "odd dim" else 64)
    if case == "strided dim":
        q = q[..., ::2]
        cos, sin = cos[..., ::2], sin[..., ::2]
    if case == "float64":
        q, cos, sin = (a.astype(np.float64) for a in (q, cos, sin))
    out = ml.ops.nn.rotary_embedding(ml.tensor(q), cos, sin).numpy()
    assert not kernel_calls
    expected = _torchs(q, cos, sin)
    as_bits = f"u{out.itemsize}"
    assert np.array_equal(np.ascontiguousarray(out).view(as_bits), expected.view(as_bits))


def test_two_threads_split_big_batches_with_one_threads_bits(kernel_calls, pool_blocks, threads):
    q, cos, sin = _llama_q(32, 128, 4, 64, seed=1)  # 1M elements
    threads(2)
    split = ml.ops.nn.rotary_embedding(ml.tensor(q), cos, sin).numpy()
    assert kernel_calls == [threading.get_ident()] and pool_blocks == [2]  # one call, split in the C threads
    threads(1)
    kernel_calls.clear()
    whole = ml.ops.nn.rotary_embedding(ml.tensor(q), cos, sin).numpy()
    assert kernel_calls == [threading.get_ident()] and pool_blocks == [2]  # set_num_threads(1): whole, here
    assert np.array_equal(_bits(split), _bits(whole))
    assert np.array_equal(_bits(whole), _bits(_torchs(q, cos, sin)))


def test_uneven_blocks_side_by_side_race_free(split_into_blocks, kernel_calls, pool_blocks):
    q, cos, sin = _llama_q(7, 32, 4, 64, seed=2)
    expected = _bits(_torchs(q, cos, sin))
    for _ in range(20):  # 3 uneven blocks on 3 threads each time: every block writes its own rows only
        out = ml.ops.nn.rotary_embedding(ml.tensor(q), cos, sin).numpy()
        assert np.array_equal(_bits(out), expected)
    assert len(kernel_calls) == 20 and pool_blocks == [3] * 20


def test_rotary_gradient_unchanged(kernel_calls):
    q, cos, sin = _llama_q(2, 32, 4, 32, seed=3)
    x = ml.tensor(np.nan_to_num(q, nan=0.5, neginf=-2.0), requires_grad=True)
    ml.ops.nn.rotary_embedding(x, cos, sin).sum().backward()
    assert kernel_calls
    half = q.shape[-1] // 2  # d(sum)/dx = cos + R^T sin, R^T [s1, s2] = [s2, -s1]
    expected = cos + np.concatenate((sin[..., half:], -sin[..., :half]), axis=-1)
    assert np.array_equal(_bits(x.grad.numpy()), _bits(np.broadcast_to(expected, q.shape)))
