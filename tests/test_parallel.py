"""``minilora.parallel``: blocks of rows on a thread pool. The ops built on it are checked in
test_ops.py / test_lora_op.py (``split_into_blocks``); here the helper itself, and a whole Llama
training step that must not depend on how many threads ran it."""
import time

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import parallel


def test_rows_covers_every_row_once_in_uneven_blocks(split_into_blocks):
    seen = np.zeros(10, dtype=int)
    got = []

    def visit(block, ids):
        seen[ids] += 1
        got.append(len(block))
    parallel.rows(visit, np.zeros((10, 4)), np.arange(10))
    assert seen.tolist() == [1] * 10
    assert sorted(got) == [3, 3, 4]  # three threads: one block each


def test_each_thread_runs_its_own_block_as_openmps_static_schedule(split_into_blocks):
    import threading
    for _ in range(3):  # the same rows on the same thread, call after call (its core's cache has them)
        by_thread = {}

        def work(block):
            by_thread[threading.current_thread()] = block.tolist()
            time.sleep(0.01)  # (each helper starts well before the caller is done with its own block)
        parallel.rows(work, np.arange(9), work_per_row=1)
        assert by_thread[threading.main_thread()] == [0, 1, 2]
        assert sorted(by_thread.values()) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_a_helper_that_has_not_started_leaves_its_block_to_the_caller(split_into_blocks, monkeypatch):
    import threading
    by_thread = {}
    parallel._start_helpers(2)  # (they start at a first split, not at set_num_threads)
    for helper in parallel._helpers[:2]:  # each helper starts 0.2 s late (its core taken by another process)
        run = helper.run
        monkeypatch.setattr(helper, "run", lambda fn, block, run=run: run(lambda *a: (time.sleep(0.2), fn(*a)), block))

    def work(block):
        by_thread[threading.current_thread()] = by_thread.get(threading.current_thread(), 0) + len(block)
    parallel.rows(work, np.arange(12), work_per_row=1)
    assert by_thread == {threading.main_thread(): 12}  # a fixed split would wait for them


def test_rows_passes_none_through_and_splits_lists(split_into_blocks):
    got = []
    parallel.rows(lambda items, nothing: got.append((list(items), nothing)), list("abcdef"), None,
                  work_per_row=1)
    assert sorted(got) == [(["a", "b"], None), (["c", "d"], None), (["e", "f"], None)]


def test_small_work_runs_inline_in_one_call():
    calls = []
    parallel.rows(lambda a: calls.append(a.shape), np.zeros((4, 3)))
    assert calls == [(4, 3)]  # 12 elements: far below MIN_ITEMS


def test_a_worker_exception_reaches_the_caller(split_into_blocks):
    def fail_on_last_block(block):
        if block[-1] == 9:
            raise ValueError("block with the last row")
    with pytest.raises(ValueError, match="last row"):
        parallel.rows(fail_on_last_block, np.arange(10))


def test_matmul_matches_numpy_for_every_shape_it_splits(split_into_blocks, rng):
    for a_shape, b_shape in [((7, 5), (5, 3)), ((2, 3, 5), (5, 4)), ((3, 4, 5), (3, 5, 2)),
                             ((4, 5), (5,)), ((2, 1, 4, 5), (3, 5, 2))]:
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        np.testing.assert_allclose(parallel.matmul(a, b), a @ b, rtol=1e-13, atol=1e-13)
    # a transposed (strided) left operand, as the weight-gradient GEMM passes it: dY.T @ X
    dy, x = rng.standard_normal((9, 4)), rng.standard_normal((9, 6))
    np.testing.assert_allclose(parallel.matmul(dy.T, x), dy.T @ x, rtol=1e-13, atol=1e-13)


def test_adamw_pieces_split_across_threads_update_like_one_thread(split_into_blocks, rng):
    """A parameter of several cache-sized pieces, shared out among three threads."""
    from minilora.device import CHUNK
    from minilora.optim import AdamW
    start, grads = rng.standard_normal(3 * CHUNK + 5), [rng.standard_normal(3 * CHUNK + 5) for _ in range(3)]
    results = []
    for threads in (1, 3):
        parallel.set_num_threads(threads)
        p = ml.tensor(start.copy(), requires_grad=True)
        opt = AdamW([p], lr=0.1, weight_decay=0.1)
        for g in grads:
            p.grad = ml.tensor(g)
            opt.step()
        results.append(p.numpy())
    np.testing.assert_array_equal(results[1], results[0])


def test_set_num_threads_refuses_zero():
    with pytest.raises(ValueError, match="at least 1 thread"):
        parallel.set_num_threads(0)


def _llama_step(threads):
    """Loss, every gradient and the weights after one AdamW step, computed with ``threads`` threads."""
    from minilora.models import LlamaConfig, LlamaForCausalLM
    from minilora.optim import AdamW
    parallel.set_num_threads(threads)
    ml.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(config, dtype="float64")
    ids = np.random.default_rng(0).integers(0, 40, size=(5, 7))
    loss = model(ids, labels=ids).loss
    loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    AdamW(model.parameters(), lr=1e-2).step()
    return loss.item(), grads, {name: p.numpy().copy() for name, p in model.named_parameters()}


def test_a_llama_step_does_not_depend_on_the_thread_count(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ITEMS", 1)  # split everything, even this tiny model
    threads = parallel.num_threads()
    try:
        loss1, grads1, weights1 = _llama_step(1)
        loss3, grads3, weights3 = _llama_step(3)
    finally:
        parallel.set_num_threads(threads)
    assert loss3 == pytest.approx(loss1, rel=1e-13)
    for name in grads1:
        np.testing.assert_allclose(grads3[name], grads1[name], rtol=1e-11, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(weights3[name], weights1[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_a_block_that_splits_again_runs_whole_instead_of_deadlocking(split_into_blocks):
    inner_calls = []

    def outer(block):
        parallel.rows(lambda b: inner_calls.append(len(b)), np.zeros(len(block) * 4), work_per_row=1)
    parallel.rows(outer, np.zeros(9))
    # the calling thread's block may split (3 inner calls); each helper's block runs whole (1 each)
    assert len(inner_calls) in (3 + 1 + 1, 1 + 1 + 1)
    assert sum(inner_calls) == 36


def test_changing_the_thread_count_reuses_the_helpers():
    threads, helpers = parallel.num_threads(), len(parallel._helpers)
    try:
        for n in (3, 1, 3, 2, 3):
            parallel.set_num_threads(n)
            assert parallel.num_threads() == n
            parallel.rows(lambda block: None, np.zeros(n), work_per_row=parallel.MIN_ITEMS)  # (starts them)
        assert len(parallel._helpers) == max(helpers, 2)
    finally:
        parallel.set_num_threads(threads)


def test_matmuls_computes_independent_products_side_by_side(split_into_blocks, rng):
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((5, 3))
    c, d = rng.standard_normal((4, 7)), rng.standard_normal((7, 6))
    ab, none, cd = parallel.matmuls((a, b), None, (c, d))
    assert none is None
    np.testing.assert_allclose(ab, a @ b, rtol=1e-13)
    np.testing.assert_allclose(cd, c @ d, rtol=1e-13)
    assert parallel.matmuls(None, None) == [None, None]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_a_forked_child_still_splits_work_without_hanging(split_into_blocks):
    import os
    pid = os.fork()
    if pid == 0:  # the child: its helpers were not copied; it must make new ones
        try:
            out = parallel.matmul(np.ones((30, 4)), np.ones((4, 2)))
            os._exit(0 if out.sum() == 240 and parallel.num_threads() == 3 else 1)
        except BaseException:
            os._exit(2)
    deadline = time.time() + 30
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the forked child hung in parallel.matmul")


def test_set_num_threads_is_a_top_level_name_as_in_torch():
    assert ml.set_num_threads is parallel.set_num_threads
    assert ml.num_threads() == parallel.num_threads()


def test_sum_over_rows_adds_the_blocks_partial_results_in_row_order(split_into_blocks, rng):
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 4))
    out = np.empty(10)

    def block(x, y, out):
        out[:] = x.sum(axis=1)
        return x.T @ y, None, len(x)
    xty, nothing, count = parallel.sum_over_rows(block, x, y, out)
    np.testing.assert_allclose(xty, x.T @ y, rtol=1e-13)
    assert nothing is None and count == 10
    np.testing.assert_allclose(out, x.sum(axis=1))
    # the same blocks added in the same order: bit for bit the same, run after run
    again = [parallel.sum_over_rows(block, x, y, out)[0] for _ in range(5)]
    assert all(np.array_equal(a, xty) for a in again)
    empty, _, zero = parallel.sum_over_rows(block, x[:0], y[:0], out[:0])
    assert empty.shape == (3, 4) and zero == 0


def test_sum_over_rows_splits_by_the_work_of_its_first_array(monkeypatch):
    """Wide rows are split even though the row numbers it adds in front are one element each."""
    monkeypatch.setattr(parallel, "MIN_ITEMS", 1000)
    threads = parallel.num_threads()
    parallel.set_num_threads(2)
    try:
        blocks = []
        parallel.sum_over_rows(lambda a: (blocks.append(len(a)) or a.sum(axis=0),), np.ones((20, 500)))
        assert len(blocks) > 1
    finally:
        parallel.set_num_threads(threads)


def imports_with_thread_count(value):
    """(exit code and stderr of ``import minilora`` with MINILORA_NUM_THREADS=value, what num_threads() says with
    it 3): a background run (tests/background_runs.py), behind the session's others, on the idle core."""
    import os
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", "import minilora"], capture_output=True, text=True,
                            env={**os.environ, "MINILORA_NUM_THREADS": value})
    good = subprocess.run([sys.executable, "-c", "import minilora; print(minilora.num_threads())"],
                          capture_output=True, text=True, env={**os.environ, "MINILORA_NUM_THREADS": "3"})
    return result.returncode, result.stderr, good.stdout


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_thread_count_in_the_environment_is_named(value, background):
    background.submit(("thread count", value), __name__, "imports_with_thread_count", value)
    returncode, stderr, good = background.result(("thread count", value))
    assert returncode != 0
    assert "MINILORA_NUM_THREADS must be a whole number >= 1" in stderr
    assert good.strip() == "3"


def test_add_and_multiply_split_large_arrays_and_fall_back_for_the_rest(split_into_blocks, rng):
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    for ours, numpys in ((parallel.add, np.add), (parallel.multiply, np.multiply)):
        np.testing.assert_array_equal(ours(a, b), numpys(a, b))  # split: same shape, contiguous
        np.testing.assert_array_equal(ours(a, b[0]), numpys(a, b[0]))  # broadcasting: whole
        np.testing.assert_array_equal(ours(a.T, b.T), numpys(a.T, b.T))  # strided: whole
        assert ours(2.0, 3.0) == numpys(2.0, 3.0)  # Python scalars too
    with pytest.raises(ValueError):  # shapes that do not broadcast keep NumPy's error
        parallel.add(a, b[:, :2])


def test_product_work_counts_multiply_adds_in_elementwise_items():
    assert parallel.product_work(parallel.MACS_PER_ITEM * 10) == 10
    assert parallel.product_work(1) == 1  # never 0: tiny products still count as work


# ---- import minilora changes nothing in the process -----------------------------------------------
_IMPORT_PROBE = r"""
import ctypes, json, sys, threading
import numpy as np  # NumPy (and its OpenBLAS) first: only what minilora itself does is measured

def openblas(verb):
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    for path in paths:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_%s_num_threads64_", "openblas_%s_num_threads64_", "openblas_%s_num_threads"):
            fn = getattr(lib, name % verb, None)
            if fn is not None:
                return fn
    return None

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2

probes = iter(range(4, 32, 4))

def big_blocks_are_mmapped():
    # glibc hands a block of several MiB out by mmap unless the mmap threshold was raised (mallopt).
    # Freeing one raises glibc's own (dynamic) threshold to its size: each probe takes a bigger one.
    before = libc.mallinfo2().hblks
    p = libc.malloc(next(probes) * 2**20)
    mapped = libc.mallinfo2().hblks > before
    libc.free(p)
    return mapped

def os_threads():
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("Threads:")))

get, set_ = openblas("get"), openblas("set")
set_(2)  # what a learner's process might have: BLAS on 2 threads
state = lambda: {"blas": get(), "mmap": big_blocks_are_mmapped(), "threads": os_threads(),
                 "py_threads": threading.active_count()}
out = {"before": state()}
import minilora as ml
out["after_import"] = state()
if "--work" in sys.argv:  # minilora computes (its helpers start, BLAS is limited) and then gives back
    ml.set_num_threads(2)
    from minilora.models import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    model = LlamaForCausalLM(config)
    seen = []
    forward = model.forward
    model.forward = lambda *a, **k: (seen.append(get()), forward(*a, **k))[1]
    ids = np.zeros((2, 8), dtype=np.int64)
    model(ids, labels=ids).loss.backward()
    out["blas_during_forward"] = seen[0]
    out["after_work"] = state()
if "--opt-in" in sys.argv:
    ml.parallel.keep_freed_memory()
    out["after_opt_in"] = state()
print(json.dumps(out))
"""


def import_probe(*flags):
    """(exit code, stdout, stderr) of _IMPORT_PROBE: a background run, as imports_with_thread_count."""
    import sys
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    done = background_runs.run_process([sys.executable, "-c", _IMPORT_PROBE, *flags], env=env, timeout=120)
    return done.returncode, done.stdout, done.stderr


def _probe_import(runs, *flags):
    import json
    import sys
    from minilora import blas
    if not blas._openblas_libraries() or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux with NumPy's OpenBLAS")
    runs.submit(("import probe", flags), __name__, "import_probe", *flags)
    returncode, stdout, stderr = runs.result(("import probe", flags))
    assert returncode == 0, stderr
    return json.loads(stdout)


PROBE_FLAGS = {"test_import_minilora_leaves_blas_threads_malloc_and_threads_as_they_were": (),
               "test_minilora_limits_blas_only_while_it_computes_and_malloc_only_on_request": ("--work", "--opt-in")}


def start_background_runs(items, runs):
    for item in background_runs.selected(items, __name__, "test_a_bad_thread_count_in_the_environment_is_named"):
        value = item.callspec.params["value"]
        runs.submit(("thread count", value), __name__, "imports_with_thread_count", value)
    for test_name, flags in PROBE_FLAGS.items():
        if background_runs.selected(items, __name__, test_name):
            runs.submit(("import probe", flags), __name__, "import_probe", *flags)


def test_import_minilora_leaves_blas_threads_malloc_and_threads_as_they_were(background):
    """A learner's own NumPy in the same process keeps its BLAS threads; no mallopt, no helper threads."""
    out = _probe_import(background)
    assert out["before"]["blas"] == 2 and out["before"]["mmap"] is True  # the probe sees the defaults
    assert out["after_import"] == out["before"]


def test_minilora_limits_blas_only_while_it_computes_and_malloc_only_on_request(background):
    out = _probe_import(background, "--work", "--opt-in")
    assert out["blas_during_forward"] == 1  # minilora's threads split the work; BLAS runs on one
    assert out["after_work"]["blas"] == 2  # ... and the caller's setting is back afterwards
    assert out["after_work"]["mmap"] is True
    # helpers start when work is split (set_num_threads starts none, test_faults_r26): a model this small never is
    assert out["after_work"]["py_threads"] == out["before"]["py_threads"]
    assert out["after_opt_in"]["mmap"] is False  # the probe can tell: keep_freed_memory() did change malloc


@pytest.mark.parametrize("need_x, need_w, need_b", [(True, True, True), (True, True, False), (False, True, True),
                                                     (True, False, True), (True, False, False), (False, False, True)])
def test_input_and_weight_grads_equal_the_serial_backward(split_into_blocks, rng, need_x, need_w, need_b):
    from minilora.ops.matmul import _linear_backward_rows
    calls = []

    def spy(*args):  # records the pieces it was called on: the work must really be split
        calls.append(args[0].shape)
        return _linear_backward_rows(*args)
    g, x, w = rng.standard_normal((11, 7)), rng.standard_normal((11, 5)), rng.standard_normal((7, 5))
    gx = np.full((11, 5), np.nan) if need_x else None
    gw, gb = parallel.input_and_weight_grads(spy, g, x if need_w else None, gx, w, need_w, need_b)
    if need_x:
        np.testing.assert_allclose(gx, g @ w, rtol=1e-13)
    assert (gw is None) != need_w and (gb is None) != need_b
    if need_w:
        np.testing.assert_allclose(gw, g.T @ x, rtol=1e-13)
    if need_b:
        np.testing.assert_allclose(gb, g.sum(axis=0), rtol=1e-13)
    if need_x or need_w:
        assert len(calls) > 1
    if need_x and need_w:  # dX by blocks of rows, dW by blocks of output features, never both at once
        assert (11, 7) not in calls and any(shape[0] == 11 for shape in calls)
