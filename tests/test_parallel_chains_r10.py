"""Chains of short NumPy calls on threads (``minilora.parallel``): AdamW's 14 ufuncs per parameter and SiLU's
backward. Each call gives up the GIL and takes it back, so two threads running such chains queue for it
(a futex sleep each time, costly on a VM): ``parallel.spans`` shares elements, not parameters, out among
the threads and only where each thread gets enough; inside a split block a chain takes
``parallel.SPLIT_SLICE`` elements a call (``slice_elements``); AdamW updates its small parameters as one
gathered flat array. None of it may change a bit of the results."""
import threading

import numpy as np
import pytest

import minilora as ml
from minilora import fastmath, float32_math, parallel
from minilora.device import CHUNK
from minilora.optim import adam


@pytest.fixture
def threads():
    """Set the thread count for one test, and put it back."""
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


def test_spans_share_the_elements_evenly_and_cover_each_once(threads, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ITEMS", 1)
    threads(3)
    sizes = [5, 0, 100, 3, 40]
    shares, lock = [], threading.Lock()

    def visit(spans):
        with lock:
            shares.append(spans)
    parallel.spans(visit, sizes)
    assert len(shares) == 3
    assert sorted(sum(stop - start for _, start, stop in share) for share in shares) == [49, 49, 50]
    seen = [np.zeros(size, int) for size in sizes]
    for share in shares:
        for item, start, stop in share:
            assert start < stop
            seen[item][start:stop] += 1
    assert all((counts == 1).all() for counts in seen)  # (item 1, empty, is never handed out)


def test_spans_run_inline_below_two_min_items_a_thread(threads):
    threads(2)
    calls = []
    parallel.spans(lambda spans: calls.append((threading.current_thread(), spans)), [parallel.MIN_ITEMS, 7])
    assert calls == [(threading.main_thread(), [(0, 0, parallel.MIN_ITEMS), (1, 0, 7)])]


def test_slice_elements_are_longer_only_inside_a_split_block(threads, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ITEMS", 1)
    threads(2)
    inside = []
    parallel.rows(lambda block: inside.append(parallel.slice_elements()), np.zeros(10), work_per_row=1)
    assert inside == [parallel.SPLIT_SLICE] * 2
    assert parallel.slice_elements() is None  # one thread: cache_slices' own CHUNK


def _run(make_optimizer, start, grads, per_parameter=False):
    """The parameters after ``len(grads)`` steps: one optimizer for all, or one for each parameter alone."""
    params = [ml.tensor(p.copy(), requires_grad=True) for p in start]
    optimizers = ([make_optimizer([p], [i]) for i, p in enumerate(params)] if per_parameter
                  else [make_optimizer(params, range(len(params)))])
    for step, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else ml.tensor(g)
        for opt in optimizers:
            opt.step()
    return [p.detach().numpy() for p in params]


def _two_groups(params, indices):
    """Even-numbered parameters at lr 1e-2, odd ones at 1e-3 (a group left empty is left out)."""
    groups = [{"params": [p for p, i in zip(params, indices) if i % 2 == odd], "lr": lr}
              for odd, lr in ((0, 1e-2), (1, 1e-3))]
    return ml.optim.AdamW([group for group in groups if group["params"]])


OPTIMIZERS = {  # (parameters, their numbers in the test's list) -> optimizer
    "adamw": lambda ps, _: ml.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adam_l2_amsgrad": lambda ps, _: ml.optim.Adam(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
    "adamw_maximize": lambda ps, _: ml.optim.AdamW(ps, lr=1e-2, maximize=True),
    "two_groups": _two_groups,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_small_parameters_update_gathered_as_each_alone(name, dtype, threads, monkeypatch, rng):
    """LoRA-sized matrices, a bias, one large parameter; a parameter that skips a step has another step count."""
    threads(1)
    sizes = [2048, 5504, 7, 2048, adam.GATHER_BELOW + 3, 1]
    start = [rng.standard_normal(size).astype(dtype) for size in sizes]
    grads = [[rng.standard_normal(size).astype(dtype) for size in sizes] for _ in range(3)]
    grads[1][3] = None  # parameter 3 sits step 2 out: a step count behind the others
    updates = []
    real_update = adam.adamw_update_16bit if dtype != np.float32 else (
        adam.amsgrad_update if "amsgrad" in name else adam.adamw_update)
    monkeypatch.setattr(adam, real_update.__name__,
                        lambda param, *args, **kw: updates.append(param.size) or real_update(param, *args, **kw))
    one_pass = float32_math.adamw_step  # (float32 AdamW's update in one compiled pass, where it runs)
    monkeypatch.setattr(float32_math, "adamw_step",
                        lambda param, *args, **kw: one_pass(param, *args, **kw) and (updates.append(param.size) or True))
    gathered = _run(OPTIMIZERS[name], start, grads)
    # each step: the large parameter, and the small ones of each (group, step count) as one flat array
    # (step 3: parameter 3 is a step behind; two groups: {0, 2} + the large one, and {1, 3, 5})
    assert len(updates) == (2 + 2 + 3 if name != "two_groups" else 3 + 3 + 4)
    updates.clear()
    alone = _run(OPTIMIZERS[name], start, grads, per_parameter=True)
    assert len(updates) == 3 * len(sizes) - 1
    for a, b in zip(gathered, alone):
        np.testing.assert_array_equal(a, b)


def test_adamw_splits_by_elements_only_where_each_thread_gets_enough(threads, monkeypatch, rng):
    """56 LoRA matrices (156K elements, the benchmark's Llama): updated gathered on the calling thread (two
    threads cost more than they save there). 1.3M elements in large parameters: shared out, and every
    thread count gives the same bits."""
    threads(2)
    ran_on, slices = set(), []
    real_update = adam.adamw_update  # (exercise 6.1's region: every float32/float64 parameter's update)
    monkeypatch.setattr(adam, "adamw_update", lambda param, *args, **kw: ran_on.add(threading.current_thread())
                        or slices.append(param.size) or real_update(param, *args, **kw))
    one_pass = float32_math.adamw_step  # (float32 AdamW's update in one compiled pass, where it runs)
    monkeypatch.setattr(float32_math, "adamw_step", lambda *args, **kw: ran_on.add(threading.current_thread())
                        or one_pass(*args, **kw))
    lora = [2048, 2048] * 20 + [5504, 2048] * 8
    _run(OPTIMIZERS["adamw"], [rng.standard_normal(size).astype(np.float32) for size in lora],
         [[rng.standard_normal(size).astype(np.float32) for size in lora]])
    assert ran_on == {threading.main_thread()}
    sizes = [655360, 300000, 345000, 1000]
    start = [rng.standard_normal(size).astype(np.float32) for size in sizes]
    grads = [[rng.standard_normal(size).astype(np.float32) for size in sizes] for _ in range(2)]
    results = []
    for count in (1, 2, 3):
        threads(count)
        slices.clear()
        with float32_math.numpy_port():  # (the NumPy chain's slices; the one compiled pass has none)
            results.append(_run(OPTIMIZERS["adamw"], start, grads))
        # split: each thread's share in slices of SPLIT_SLICE (which thread ran a block may vary: a helper
        # that has not started when the caller is done leaves its block to the caller)
        assert max(slices) == (CHUNK if count == 1 else parallel.SPLIT_SLICE)
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_array_equal(a, b)


def test_silu_backward_beside_another_thread_takes_long_slices(threads, monkeypatch, rng):
    """SwiGLU's backward split in two: each thread's block in slices of SPLIT_SLICE elements (it took
    CHUNK: four times the calls, each a chance to queue for the GIL), the same bits as on one thread."""
    n = 2 * parallel.SPLIT_SLICE + 1000
    g, gate, up = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    s = (1 / (1 + np.exp(-gate))).astype(np.float32)
    calls = []
    real_block = float32_math.fused_multiply_add_block
    monkeypatch.setitem(float32_math._native_state, "off", True)  # (the NumPy chain: compiled, it is one call)
    monkeypatch.setattr(float32_math, "fused_multiply_add_block", lambda a, *rest: calls.append(a.size)
                        or real_block(a, *rest))
    results = []
    for count in (1, 2):
        threads(count)
        calls.clear()
        dgate, dup = np.empty(n, np.float32), np.empty(n, np.float32)
        parallel.rows(fastmath.swiglu_backward, g, gate, up, s, dgate, dup, work_per_row=1)
        results.append((dgate, dup))
    if float32_math.FUSED_MULTIPLY_ADD:  # (torch's "default" build fuses none: no float64 blocks)
        assert sorted(calls) == [n // 2 - parallel.SPLIT_SLICE, n - n // 2 - parallel.SPLIT_SLICE,
                                 parallel.SPLIT_SLICE, parallel.SPLIT_SLICE]
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
