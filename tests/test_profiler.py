"""``minilora.profile()``: calls, time and FLOPs per op and direction, and the table a learner reads."""
import numpy as np
import pytest

import minilora as ml
from minilora import nn, ops, profiler


def linear_backward_flops(freeze_weight, rows=6, d_in=8, d_out=4):
    """Backward FLOPs the profiler counts for one Linear whose input needs a gradient."""
    layer = nn.Linear(d_in, d_out)
    if freeze_weight:
        layer.weight.requires_grad_(False)
    x = ml.tensor(np.random.default_rng(0).standard_normal((rows, d_in)).astype(np.float32),
                  requires_grad=True)  # as if it came from an earlier layer
    out = layer(x)
    assert (out.grad_fn.x2 is None) == freeze_weight  # a frozen weight does not keep x alive
    with ml.profile() as prof:
        out.sum().backward()
    assert prof.calls("Linear", "backward") == 1
    return prof.flops("Linear", "backward"), layer, x


def test_records_calls_time_and_flops_per_op_and_direction(rng):
    x = ml.tensor(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)
    w = ml.tensor(rng.standard_normal((3, 2)).astype(np.float32), requires_grad=True)
    with ml.profile() as prof:
        y = (x @ w).tanh()
        z = (y * y).sum()
        z.backward()
    assert prof.calls("MatMul") == 1 and prof.calls("Mul") == 1 and prof.calls("Tanh") == 1
    assert prof.calls("MatMul", "backward") == 1 and prof.calls("Sum", "backward") == 1
    assert prof.calls("Exp") == 0
    assert prof.flops("MatMul", "forward") == 2 * 5 * 3 * 2
    assert prof.flops("MatMul", "backward") == 2 * (2 * 5 * 3 * 2)  # dX and dW
    assert prof.flops() >= prof.flops("MatMul")
    rows = prof.rows
    assert all(r.seconds >= 0 for r in rows.values()) and sum(r.seconds for r in rows.values()) > 0
    assert prof.total_seconds >= max(r.seconds for r in rows.values())


def test_nothing_is_recorded_outside_the_block_and_blocks_nest(rng):
    x = ml.tensor(rng.standard_normal(3), requires_grad=True)
    with ml.profile() as outer:
        x.exp()
        with ml.profile() as inner:
            x.tanh()
        x.exp()
    x.exp()  # after the block: not recorded
    assert profiler.active is None
    assert inner.calls("Tanh") == 1 and inner.calls("Exp") == 0
    assert outer.calls("Exp") == 2 and outer.calls("Tanh") == 0


def test_frozen_linear_weight_costs_only_the_input_gradient_gemm():
    """LoRA's saving, visible in the profiler: no weight-gradient GEMM for a frozen weight."""
    trainable, _, _ = linear_backward_flops(freeze_weight=False)
    frozen, layer, x = linear_backward_flops(freeze_weight=True)
    assert frozen == 2 * 6 * 8 * 4  # the dX GEMM: [6, 4] @ [4, 8]
    assert trainable == 2 * frozen  # dX and dW
    assert layer.weight.grad is None and x.grad is not None


def test_table_lists_every_op_sorted(rng, capsys):
    x = ml.tensor(rng.standard_normal((64, 32)).astype(np.float32), requires_grad=True)
    with ml.profile() as prof:
        loss = ops.cross_entropy(ops.linear(ops.gelu(x), ml.tensor(np.ones((10, 32), np.float32))),
                                 np.arange(64) % 10)
        loss.backward()
    print(prof.table())
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    assert lines[0].split()[:3] == ["op", "direction", "calls"]
    for op in ("Gelu", "Linear", "CrossEntropy"):
        assert any(line.startswith(op) and "forward" in line for line in lines[1:]), op
    assert any(line.startswith("Linear") and "backward" in line for line in lines[1:])
    seconds = [float(line.split()[3]) for line in lines[1:]]
    assert seconds == sorted(seconds, reverse=True)
    by_calls = prof.table(sort_by="calls", limit=2).splitlines()
    assert len(by_calls) == 3
    assert str(prof) == prof.table()
    with pytest.raises(ValueError, match="sort_by must be one of.*'nonsense'"):
        prof.table(sort_by="nonsense")
