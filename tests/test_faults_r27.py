"""Round 27's fault pass: flush-to-zero outside minilora's parallel regions, the OpenAI-compatible server, the
CLI and the distributed path (each test names what it found)."""
import numpy as np
import pytest

import minilora
from minilora import blas


@pytest.fixture
def openblas_threaded():
    """OpenBLAS on 2 of its own threads, as a plain script has it (minilora's ops outside a module's forward
    run their products there); the count and this thread's flushing put back afterwards."""
    if blas.get_num_threads() is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    before, threads = blas.get_num_threads(), minilora.get_num_threads()
    blas.set_num_threads(2)
    minilora.set_num_threads(1)  # (a product run inline: minilora's own helpers follow the register already)
    yield
    minilora.set_flush_denormal(False)
    minilora.set_num_threads(threads)
    blas.set_num_threads(before)


def test_flush_denormal_flushes_products_on_openblas_threads(openblas_threaded):
    """OpenBLAS's worker threads keep the register they started with: after set_flush_denormal(True) a 256^3
    product of 1e-20s (each term 1e-40, subnormal) came out half 0 (the caller's rows) and half 2.56e-38 (the
    workers'), where torch's is 0 throughout."""
    torch = pytest.importorskip("torch")
    a = np.full((256, 256), 1e-20, np.float32)
    assert minilora.set_flush_denormal(True)
    for out in (minilora.tensor(a) @ minilora.tensor(a), minilora.bmm(minilora.tensor(a[None]), minilora.tensor(a[None])),
                minilora.nn.functional.linear(minilora.tensor(a), minilora.tensor(a))):
        assert not out.numpy().any()
    flushed_before = torch.set_flush_denormal(True)
    try:
        assert not (torch.tensor(a) @ torch.tensor(a)).any()
    finally:
        torch.set_flush_denormal(False) if flushed_before else None
    assert minilora.set_flush_denormal(False)
    assert blas.get_num_threads() == 2  # (OpenBLAS's count back once nothing flushes)
    assert np.all((minilora.tensor(a) @ minilora.tensor(a)).numpy() > 0)  # subnormal terms kept again


def test_thread_count_set_while_flushing_waits_for_the_end(openblas_threaded):
    """A count set while flushing (parallel.computing's restore at the end of a forward) takes effect after."""
    minilora.set_flush_denormal(True)
    assert blas.get_num_threads() == 1
    blas.set_num_threads(2)
    assert blas.get_num_threads() == 1
    minilora.set_flush_denormal(False)
    assert blas.get_num_threads() == 2
