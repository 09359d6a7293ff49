"""Round 33: DistributedDataParallel and the collectives beside torch's (gloo, CPU), as users call them.

ONE ``mpirun -n 2`` runs ``tests/distributed_sweep.py``'s worker on the cases named in ``CASES`` below: each rank
joins minilora's MPI group and a torch gloo group and runs every case with torch's DDP / torch.distributed, then
with minilora's, on the same float64 inputs; the tests compare rank by rank (values exactly, or the exception
type where torch refuses). Without a launcher: the calls before ``init_process_group`` and the post-accumulate
grad hooks DDP runs on. Skipped, with the reason, without mpi4py/mpirun or torch.
"""
import os
import pickle
import sys

import numpy as np
import pytest

import minilora as ml

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import background_runs  # noqa: E402
import distributed_sweep as sweep  # noqa: E402

CASES = [
    "ddp:init-broadcast-frozen",  # a frozen layer made at random on each rank: torch's DDP makes it rank 0's
    "ddp:grads-frozen-middle",  # ... so the gradients through it are rank 0's model's
    "ddp:init-broadcast-trainable",  # the buffers too, at construction, before any forward
    "ddp:buffers-after-no_sync-forward",  # no buffer sync at the forward after a no_sync one
    "ddp:buffers-after-no_grad-forward",  # ... nor after one under no_grad
    "ddp:forward_sync_buffers-False",  # torch 2.13's argument
    "collective:all_reduce-op-string",  # torch's TypeError
    "collective:all_gather_into_tensor-wrong-dtype",  # gloo's RuntimeError, not the list forms' ValueError
    "collective:reduce_scatter_tensor-wrong-dtype",
    "collective:recv-non-contiguous",  # gloo's point to point takes contiguous tensors only
    "collective:send-non-contiguous",
    "collective:isend-non-contiguous",
    "api:send_object_list-recv_object_list",  # torch's names minilora lacked
    "api:names",  # is_torchelastic_launched, default_pg_timeout, get_node_local_rank
    # last: before round 33 these ended the whole job (the ranks' all-reduces no longer matched)
    "ddp:find_unused_parameters",  # ranks that use different layers, gradients accumulated across steps
    "ddp:find_unused-comm-hook",
    "ddp:find_unused-zero_grad",
]


def _launcher():
    from test_distributed import MPIRUN, SKIP_REASON
    if MPIRUN is None:
        return None, SKIP_REASON
    try:
        import torch.distributed as tdist
    except ImportError:
        return None, "torch is not installed"
    if not tdist.is_available() or not tdist.is_gloo_available():
        return None, "torch has no gloo backend"
    return MPIRUN, None


MPIRUN, SKIP = _launcher()
needs_mpi_and_torch = pytest.mark.skipif(MPIRUN is None, reason=SKIP or "")
RUN = "test_distributed_r33: mpirun -n 2, torch's DDP and collectives beside minilora's"


def _submit(runs):
    def commands(out):
        return [(MPIRUN + [sys.executable, sweep.HERE, str(out)] + CASES,
                 {"MINILORA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})]
    return runs.submit_commands(RUN, commands, timeout=120)


def start_background_runs(items, runs):
    if MPIRUN is not None and background_runs.selected(items, __name__, "test_matches_torch_gloo"):
        _submit(runs)


@pytest.fixture(scope="module")
def side_by_side(background):
    out = _submit(background)
    [(returncode, stdout, stderr)] = background.result(RUN)
    errors = "".join(path.read_text() for path in out.glob("rank*.error"))
    ranks = []
    for r in range(sweep.WORLD):  # the results saved so far: a job that ended early fails its own cases
        with open(out / f"rank{r}.pkl", "rb") as f:
            ranks.append(pickle.load(f))
    return ranks, f"exit status {returncode}\n{errors}{stdout[-2000:]}{stderr[-2000:]}"


@needs_mpi_and_torch
@pytest.mark.parametrize("name", CASES)
def test_matches_torch_gloo(side_by_side, name):
    ranks, output = side_by_side
    for rank, results in enumerate(ranks):
        assert name in results.get("minilora", {}), f"rank {rank}: the job ended before {name}: {output}"
        theirs, ours = results["torch"][name], results["minilora"][name]
        assert sweep.same(theirs, ours), f"rank {rank}:\ntorch    {theirs}\nminilora {ours}"


def test_destroy_process_group_before_init_is_torchs_assertion():
    torch_dist = pytest.importorskip("torch.distributed")
    from minilora import distributed as dist
    assert not dist.is_initialized() and not torch_dist.is_initialized()
    with pytest.raises(AssertionError) as theirs:
        torch_dist.destroy_process_group()
    with pytest.raises(AssertionError) as ours:
        dist.destroy_process_group()
    assert str(ours.value) == str(theirs.value)


def test_post_accumulate_hook_writing_another_leafs_grad_does_not_call_that_leafs_hook():
    """DDP's reduction (in one leaf's hook) fills a locally unused parameter's gradient: torch calls hooks for the
    leaves the backward accumulated into only; minilora called the unused one's too, which marked its bucket ready
    a second time (the next forward then refused, or the ranks' all-reduces no longer matched)."""
    torch = pytest.importorskip("torch")
    found = {}
    for L in (torch, ml):
        used, unused = (L.tensor([1.0, 2.0], dtype=L.float64, requires_grad=True) for _ in range(2))
        calls = []

        def fill(leaf, unused=unused, L=L, calls=calls):
            calls.append("used")
            unused.grad = L.ones(2, dtype=L.float64)

        used.register_post_accumulate_grad_hook(fill)
        unused.register_post_accumulate_grad_hook(lambda leaf, calls=calls: calls.append("unused"))
        (used * 3).sum().backward()
        found[L.__name__] = (calls, unused.grad.tolist())
    assert found["minilora"] == found["torch"] == (["used"], [1.0, 1.0])


def test_ddp_refuses_torchs_options_it_does_not_implement_by_name():
    """torch 2.13's mixed_precision, skip_all_reduce_unused_params... are refused by name, not taken silently
    (START had no such parameters: a TypeError)."""
    from minilora.nn.parallel import _refuse_unsupported
    _refuse_unsupported(mixed_precision=None, skip_all_reduce_unused_params=False)
    with pytest.raises(NotImplementedError, match="skip_all_reduce_unused_params"):
        _refuse_unsupported(skip_all_reduce_unused_params=True)


def test_sweep_cases_cover_each_class():
    """Guard (not a START failure): the cases this file runs exist in the sweep."""
    assert set(CASES) <= set(sweep.CASES)
    assert np.unique([name.split(":")[0] for name in CASES]).tolist() == ["api", "collective", "ddp"]
