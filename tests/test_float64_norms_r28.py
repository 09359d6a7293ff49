"""float64 batch_norm, instance_norm and group_norm as torch's double kernels, round 28 (tests/loss_norm_bits_sweep.py:
27 of 44 float64 (form, layout) cases differed, 50-75% of outputs, up to 3350 ulps; now none).

Measured on torch 2.13's AVX-512 build: batch norm's contiguous kernel adds each channel's elements one after
another in double (NumPy's sum is pairwise), the squares of a sample's odd last element fused into the running sum
(its loop takes the elements in pairs); the backward's reduce_all in 4 double lanes (the kernel's AVX2 vectors); a
strided or expanded input, or a gradient laid out otherwise (``out.sum()``'s), takes the serial TensorIterator loops,
unfused, in the order TensorIterator walks the input (an expanded batch keeps its outermost place). instance_norm is
batch norm of ``input.contiguous()``. group_norm: RowwiseMoments on 4 double lanes, ds's partial last vector of
products fused (torch on 2 threads: on one, its inline copy of the backward's loops fuses otherwise, not modelled).
"""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_math

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    float32_math.CPU_CAPABILITY == "default" or not float32_math.FUSED_MULTIPLY_ADD,
    reason="the orders and fused multiply-adds of torch's vectorized kernels")

LAYOUTS = {"contiguous": lambda a: a, "strided": lambda a: a[..., ::2],
           "expanded": lambda a: a[:1].expand(5, *a.shape[1:])}


def _leaves(array):
    return [lib.tensor(array.copy()).requires_grad_() if lib is ml else torch.from_numpy(array.copy()).requires_grad_()
            for lib in (ml, torch)]


def _run(fn, arrays, layout, weight, lib_index):
    """fn's value, the gradients of sum(value * weight) and any running statistics it updated, as arrays."""
    lib = (ml, torch)[lib_index]
    leaves = [_leaves(a)[lib_index] for a in arrays]
    out, stats = fn(lib, LAYOUTS[layout](leaves[0]), *leaves[1:])
    (out * lib.tensor(weight[:out.numel()].reshape(tuple(out.shape)))).sum().backward()
    return [t.detach().numpy() for t in [out, *stats]] + [leaf.grad.numpy() for leaf in leaves]


def _assert_torchs(fn, channels, layout, shape=(5, 4, 3, 10)):
    rng = np.random.default_rng(3)
    shape = shape[:1] + (channels,) + shape[2:]
    arrays = [rng.standard_normal(shape) * 3 + 1, rng.uniform(0.5, 2, channels), rng.standard_normal(channels)]
    weight = rng.standard_normal(int(np.prod(shape)))
    mine, theirs = _run(fn, arrays, layout, weight, 0), _run(fn, arrays, layout, weight, 1)
    for k, (m, t) in enumerate(zip(mine, theirs)):
        np.testing.assert_array_equal(m, t, err_msg=f"{layout}: output/statistic/gradient {k}")


def _batch_norm(training, momentum=0.1):
    def fn(lib, x, w, b):
        c = x.shape[1]
        mean, var = lib.tensor(np.linspace(-0.5, 0.5, c)), lib.tensor(np.linspace(0.5, 1.5, c))
        out = lib.nn.functional.batch_norm(x, mean, var, w, b, training=training, momentum=momentum)
        return out, (mean, var)
    return fn


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_values_gradients_and_running_statistics(layout, training):
    _assert_torchs(_batch_norm(training), 4, layout)


@pytest.mark.parametrize("shape", [(3, 2, 7), (2, 3, 5, 5), (4, 1, 9, 2)])
def test_batch_norm_odd_rows_fuse_their_last_square(shape):
    """Rows of an odd length: the variance's last square of each sample fused into the sum (plain: ~1.5% of
    variances an ulp off, seen in the running variance with momentum 1)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.standard_normal(shape) * 3 + 1
        c = shape[1]
        ours, theirs = ml.ones(c, dtype=ml.float64), torch.ones(c, dtype=torch.float64)
        ml.nn.functional.batch_norm(ml.tensor(x), ml.zeros(c, dtype=ml.float64), ours, training=True, momentum=1.0)
        torch.nn.functional.batch_norm(torch.from_numpy(x), torch.zeros(c, dtype=torch.float64), theirs,
                                       training=True, momentum=1.0)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_batch_norm_gradient_of_a_sum_takes_the_serial_loops():
    x = np.random.default_rng(1).standard_normal((6, 4, 3, 5))
    grads = []
    for lib in (ml, torch):
        leaf = (lib.tensor(x) if lib is ml else torch.from_numpy(x)).requires_grad_()
        lib.nn.functional.batch_norm(leaf, None, None, training=True).sum().backward()
        grads.append(leaf.grad.numpy())
    np.testing.assert_array_equal(*grads)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_instance_norm_values_and_gradients(layout):
    _assert_torchs(lambda lib, x, w, b: (lib.nn.functional.instance_norm(x, weight=w, bias=b), ()), 4, layout)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("groups, channels", [(2, 4), (4, 4), (1, 6), (3, 9)])
def test_group_norm_values_and_gradients(layout, groups, channels, two_threads):
    # (two_threads: on one thread -- or with one (sample, group) -- torch's at::parallel_for runs the backward's
    # lambda inline, a copy GCC compiled with other fused multiply-adds: dx differs there, not modelled)
    _assert_torchs(lambda lib, x, w, b: (lib.nn.functional.group_norm(x, groups, w, b), ()), channels, layout)
