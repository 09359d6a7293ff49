"""Round 22's op sweep (tests/grad_bits_sweep.py): float32 values and gradients in torch's bits where the input is
a view -- transposed, expanded -- not only where it is contiguous.

torch's elementwise loop runs its vectorized lambda on each row of its iterator and its scalar one (C's functions)
on the rest; which elements are the rest depends on the operands' layout, and a backward that recomputes a value
(silu's sigmoid, mish's and gelu's tanh) loops over the gradient and the input, not the input alone. A reduction
adds in its iterator's order, where a broadcast dimension (stride 0) decides nothing; and a gradient torch makes as
a new tensor (mean's, a flip's) is summed in that tensor's layout, not the view's."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402

ROWS, COLS = 37, 70  # (70 columns: rows of 2 vectors plus a tail; 37 rows: no tail of whole-array length)


def _bits(a):
    return np.ascontiguousarray(np.asarray(a, np.float32)).view(np.int32)


def _value_and_grads(lib, f, arrays, views):
    leaves = [lib.tensor(a, requires_grad=True) for a in arrays]
    out = f(lib, *(view(x) for view, x in zip(views, leaves)))
    weight = lib.tensor(np.random.default_rng(7).standard_normal(tuple(out.shape)).astype(np.float32))
    grads = lib.autograd.grad((out * weight).sum(), leaves)
    return [out.detach().numpy()] + [g.numpy() for g in grads]


def _same_bits(f, arrays, views):
    theirs = _value_and_grads(torch, f, arrays, views)
    ours = _value_and_grads(ml, f, arrays, views)
    for name, a, b in zip(["value"] + [f"grad {i}" for i in range(len(arrays))], theirs, ours):
        assert a.shape == b.shape, name
        off = int((_bits(a) != _bits(b)).sum())
        assert off == 0, f"{name}: {off} of {a.size} elements not torch's bits"


def _draw(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def transposed(x):
    return x.t()


def expanded_rows(x):  # (1, COLS) -> (ROWS, COLS): strides (0, 1)
    return x.expand(ROWS, COLS)


def expanded_columns(x):  # (ROWS, 1) -> (ROWS, COLS): strides (1, 0)
    return x.expand(ROWS, COLS)


_BASES = {transposed: (COLS, ROWS), expanded_rows: (1, COLS), expanded_columns: (ROWS, 1)}

# elementwise kernels with a SLEEF vectorized lambda and a C scalar one, forward and backward
ACTIVATIONS = {
    "sigmoid": lambda lib, x: lib.sigmoid(x),
    "silu": lambda lib, x: lib.nn.functional.silu(x),
    "gelu_tanh": lambda lib, x: lib.nn.functional.gelu(x, approximate="tanh"),
    "mish": lambda lib, x: lib.nn.functional.mish(x),
    "softplus": lambda lib, x: lib.nn.functional.softplus(x),
    "elu": lambda lib, x: lib.nn.functional.elu(x),
    "glu": lambda lib, x: lib.nn.functional.glu(x, -1),
}


@pytest.mark.parametrize("name, view", [
    ("sigmoid", expanded_rows), ("silu", transposed), ("silu", expanded_rows), ("gelu_tanh", transposed),
    ("gelu_tanh", expanded_rows), ("mish", transposed), ("mish", expanded_rows), ("softplus", expanded_rows),
    ("elu", expanded_rows), ("glu", transposed), ("glu", expanded_columns)], ids=lambda v: getattr(v, "__name__", v))
def test_activation_of_a_view_is_torchs_bits(name, view):
    """silu(x.t()): torch's backward loops over (grad, x) -- a contiguous gradient beside a transposed input is its
    basic_loop, every element scalar -- so its recomputed sigmoid is C's where the forward's was SLEEF's (was 62 of
    2590 gradients off); sigmoid(x.expand(37, 70)): each row of 70 has its own scalar tail (a broadcast stride 0 sorted
    the rows the other way round: 52 values off); glu of an expanded input: two operands broadcast along the row
    is basic_loop too (32 off)."""
    _same_bits(ACTIVATIONS[name], [_draw(*_BASES[view])], [view])


# reductions whose order, or whose gradient's layout, an expanded input changed
REDUCTIONS = {
    "mean(-1)": lambda lib, x: x.mean(-1),
    "mean()": lambda lib, x: x.mean(),
    "norm()": lambda lib, x: x.norm(),
    "prod(-1)": lambda lib, x: x.prod(-1),
    "cumsum(-1)": lambda lib, x: x.cumsum(-1),
    "cumsum(0)": lambda lib, x: x.cumsum(0),
    "cross_entropy": lambda lib, x: lib.nn.functional.cross_entropy(x, lib.tensor(np.arange(ROWS) % COLS)),
}


@pytest.mark.parametrize("name, view", [
    ("mean(-1)", expanded_rows), ("mean(-1)", expanded_columns), ("mean()", expanded_columns),
    ("norm()", expanded_rows),
    ("prod(-1)", expanded_rows), ("cumsum(-1)", expanded_rows), ("cumsum(-1)", expanded_columns),
    ("cumsum(0)", expanded_rows), ("cumsum(0)", expanded_columns), ("cross_entropy", expanded_rows)], ids=lambda v: getattr(v, "__name__", v))
def test_reduction_of_an_expanded_input_is_torchs_bits(name, view):
    """x.expand(37, 70).mean(-1): torch's mean_backward divides the expanded gradient into a new contiguous tensor,
    which expand's backward sums row after row (the broadcast view summed otherwise: 70 of 70 off); .norm(): the
    norm kernel's loop in the iterator's order (a stride 0 sorted innermost: the value off); cumsum's backward flips
    (torch copies: the negative strides were summed by NumPy); cross_entropy's gradient is C order (empty_like of
    the expanded logits was column-major); prod(-1) along an expanded row is torch's vectorized product."""
    _same_bits(REDUCTIONS[name], [_draw(*_BASES[view], seed=1)], [view])


def test_product_along_a_transposed_column_is_torchs_bits():
    """x.t().prod(0): the product runs along contiguous memory, torch's vectorized inner reduction (was NumPy's)."""
    _same_bits(lambda lib, x: x.prod(0), [_draw(ROWS, COLS, seed=2)], [transposed])


@pytest.mark.parametrize("shape", [(ROWS, COLS), (64, 300)])
def test_softmax_along_the_first_dim_is_torchs_bits(shape, two_threads):
    """softmax(x, 0): ATen's _vec_softmax splits its (outer, inner) positions evenly among the threads whatever the
    size (its float grain is min(GRAIN_SIZE / size, 1)), each range's last positions its scalar loop; with one
    range taken for a few positions, 70 of 19200 values were off (and 154 gradients)."""
    _same_bits(lambda lib, x: lib.softmax(x, 0), [_draw(*shape, seed=3)], [lambda x: x])


@pytest.mark.parametrize("name", ["maximum", "where"])
def test_broadcast_operand_beside_a_transposed_one_is_torchs_bits(name):
    """maximum(x.t(), y[37, 1]), where(x.t() > 0, x.t(), y): torch's where lays its result out by the condition's
    strides (x.t()'s, column-major), and y's gradient sums that tensor over its rows; NumPy's where made it C order
    (23 to 29 of y's 37 gradients off)."""
    ops = {"maximum": lambda lib, x, y: lib.maximum(x.t(), y),
           "where": lambda lib, x, y: lib.where(x.t() > 0, x.t(), y)}
    _same_bits(ops[name], [_draw(COLS, ROWS, seed=4), _draw(ROWS, 1, seed=5)], [lambda x: x, lambda y: y])


def test_glu_gradient_of_an_expanded_input_is_torchs_bits():
    """glu(x[37, 1].expand(37, 70)): both halves broadcast along the row, so torch's forward is all scalar loop,
    while its backward's sigmoid_out (into the gradient's first half) is vectorized; the saved sigmoid is
    recomputed where the two differ, from the forward's loop over both halves (2 of 37 gradients were off)."""
    _same_bits(ACTIVATIONS["glu"], [_draw(ROWS, 1, seed=1)], [expanded_columns])


def test_softmax_scalar_loop_calls_glibcs_expf(two_threads):
    """softmax(x[:, ::2], 0): the positions of _vec_softmax's scalar loop take C's expf, glibc's (not correctly
    rounded everywhere: the correctly rounded stand-in left this draw's one value, and its gradients, off)."""
    _same_bits(lambda lib, x: lib.softmax(x[:, ::2], 0), [_draw(ROWS, 2 * COLS, seed=4)], [lambda x: x])


def test_whole_product_with_two_zeros_has_positive_zero_gradients():
    """-x.prod() of a tensor holding two zeros: torch's prod_backward answers zeros_like(input) (grad mode is off
    in backward), +0; the product of the other factors times a negative gradient gave -0 (op_db's prod samples
    with zeros: 50-74 of 125 gradients off in their sign bit)."""
    x = _draw(5, 5, seed=6)
    x[1, 2] = x[3, 4] = 0
    _same_bits(lambda lib, x: x.prod().reshape(1), [x], [lambda x: x])
    for lib in (torch, ml):  # (and with a negative gradient, explicitly)
        leaf = lib.tensor(x, requires_grad=True)
        grad, = lib.autograd.grad(-leaf.prod(), [leaf])
        assert not np.signbit(grad.numpy()).any(), lib.__name__
