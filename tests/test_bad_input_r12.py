"""Round 12: bad input anywhere in the torch API gets torch's error, found by a sweep.

The sweep called ~900 torch names that minilora shares (top-level functions, Tensor methods, nn.functional, nn
modules, optimizers and schedulers) with classes of bad arguments -- dims out of range or repeated, shapes that do
not broadcast, wrong ranks, empty tensors, negative sizes, int/bool tensors for float-only ops, out-of-range
indices, mismatched dtypes, in-place ops that would broadcast self or cast down, autograd misuse, bad module and
optimizer hyperparameters -- and compared the exception type with torch's. Each row below is one it found, fixed
as a class where there was one:

* a shape with a negative size other than one -1 (``x.view(-3)``, ``x.reshape(2, -2)``): NumPy reads any negative
  as "infer"; now torch's "invalid shape dimension" (ops/shape.py ``Reshape``);
* one Tensor given to cat/stack/hstack/vstack/dstack/column_stack: its rows were joined, a silently different
  answer; now torch's TypeError (``_tensor_list``);
* repeated or out-of-range dims: ``squeeze((0, 0))``, ``permute(0, 2)``, ``permute(0, 0)``, ``gradient(dim=...)``,
  ``unique_consecutive(dim=5)`` (shape ``_dims`` / ``_distinct_dims``), and ``x.squeeze(0, 1)`` -- torch's method
  takes dims one by one -- was refused;
* no dims for ``x.flip()`` / ``x.tile()`` (NumPy's "all"), ``x.transpose()``: torch's TypeError;
* ``x.new_zeros(-1)`` and friends: NumPy's ValueError; now the factories' size rule (RuntimeError), ``size=``;
* einsum's label sizes that do not broadcast: NumPy's ValueError, now torch's RuntimeError;
* embedding ids of a float, byte or bool dtype (TypeError; byte ids were taken), linear of a 0-d input
  (IndexError), cross_entropy of float targets whose batch disagrees (ValueError, torch's words),
  MultiheadAttention keys and values of different shapes (AssertionError), trapezoid sample points of the wrong
  length (silently broadcast) and bool inputs, cov of bools;
* ``Adam(lr=torch.tensor([0.1, 0.2]))``: torch's ValueError (a 1-element tensor, refused before, is taken);
* ``x.to('bogus')`` / ``device('bogus')``: torch's RuntimeError, ``x.type('torch.Bogus')``: ValueError;
  scaled_dot_product_attention of integers: torch's RuntimeError (NumPy's casting error); take/put of an index
  that is not int64 (int32 was taken, bools read as a mask);
* layers of a negative size (LayerNorm: NumPy's ValueError), RNN sizes in torch's order and words, a module's
  ``.type(torch.long)`` with trainable parameters (they silently became integers);
* a float where torch takes an int (repeat/tile/expand/broadcast_to/unflatten sizes, F.pad's pads, roll's
  shifts, narrow, select, diagonal/diag/diag_embed/tril/triu offsets, unfold, rot90, one_hot's num_classes,
  pixel_shuffle, tril_indices, randint): truncated by int()/NumPy (``one_hot(ids, 3.5)`` had 4 classes), now
  torch's TypeError (``dtypes.int_argument`` / ``int_arguments``);
* the keyword forms torch takes and minilora refused: ``x.view(size=)``, ``x.reshape(shape=)``, ``x.expand(size=)``,
  ``x.permute(dims=)``, ``x.repeat(repeats=)``, ``x.broadcast_to(3)``, ``randint(high=, size=)``.

Each row runs under minilora and must raise torch's exception type with the key phrase; with torch installed the
same code must raise the same under torch (the expectations stay without it). The ``ACCEPTED`` rows are valid
torch calls that minilora refused."""
import numpy as np
import pytest

import minilora as ml

try:
    import torch
except ImportError:  # the minilora expectations still run
    torch = None


def _namespace(mod):
    mod.manual_seed(0)
    return dict(torch=mod, F=mod.nn.functional, nn=mod.nn, optim=mod.optim,
                x=mod.randn(2, 3), x3=mod.randn(2, 3, 4), v=mod.randn(3), i=mod.tensor([[1, 2, 3], [4, 5, 6]]),
                w=mod.randn(3, 3, requires_grad=True), b=mod.randn(2, 3) > 0)


# (code, torch's exception type, a phrase of torch's message)
REFUSED = [
    # shapes: negative sizes other than one -1
    ("x.view(-3)", RuntimeError, "invalid shape dimension -3 at index 0 of shape [-3]"),
    ("x.reshape(2, -2)", RuntimeError, "invalid shape dimension -2 at index 1"),
    ("torch.reshape(x, (-3,))", RuntimeError, "invalid shape dimension -3"),
    ("x.view(-1, -1, -3)", RuntimeError, "only one dimension can be inferred"),
    ("x.new_zeros(-1)", RuntimeError, "Trying to create tensor with negative dimension -1: [-1]"),
    ("x.new_empty((2, -1))", RuntimeError, "Trying to create tensor with negative dimension -1: [2, -1]"),
    ("x.new_full((-1,), 1.0)", RuntimeError, "Trying to create tensor with negative dimension -1"),
    ("x.new_ones()", TypeError, 'missing 1 required positional arguments: "size"'),
    # one Tensor where a sequence of tensors is wanted
    ("torch.cat(x)", TypeError, "must be tuple of Tensors, not Tensor"),
    ("torch.stack(x)", TypeError, "must be tuple of Tensors, not Tensor"),
    ("torch.hstack(x)", TypeError, "must be tuple of Tensors, not Tensor"),
    ("torch.vstack(x)", TypeError, "must be tuple of Tensors, not Tensor"),
    ("torch.dstack(x)", TypeError, "must be tuple of Tensors, not Tensor"),
    ("torch.column_stack(x)", TypeError, "must be tuple of Tensors, not Tensor"),
    ("torch.concat(x)", TypeError, "must be tuple of Tensors, not Tensor"),
    # dims: out of range, repeated, missing
    ("x.squeeze((0, 0))", RuntimeError, "dim 0 appears multiple times in the list of dims"),
    ("torch.squeeze(x, (1, -1))", RuntimeError, "dim 1 appears multiple times in the list of dims"),
    ("x.squeeze_(0, 0)", RuntimeError, "dim 0 appears multiple times in the list of dims"),
    ("x.permute(0, 2)", IndexError, "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("x.permute(0, 0)", RuntimeError, "permute(): duplicate dims are not allowed."),
    ("x.permute(1, 0, 2)", RuntimeError, "input.dim() = 2 is not equal to len(dims) = 3"),
    ("torch.gradient(x, dim=-3)", IndexError, "Dimension out of range"),
    ("torch.gradient(x, dim=(0, 0))", RuntimeError, "dim 0 appears multiple times in the list of dims"),
    ("torch.unique_consecutive(x, dim=5)", IndexError, "Dimension out of range"),
    ("x.flip()", TypeError, "flip() missing 1 required positional arguments"),
    ("x.tile()", TypeError, "tile() missing 1 required positional arguments"),
    ("x.transpose()", TypeError, "missing 2 required positional argument"),
    # sizes that do not match
    ("torch.einsum('ij,jk->ik', x, x)", RuntimeError,
     "subscript j has size 2 for operand 1 which does not broadcast with previously seen size 3"),
    ("torch.einsum('ii->i', x)", RuntimeError,
     "subscript i is repeated for operand 0 but the sizes don't match, 3 != 2"),
    ("torch.trapezoid(x, torch.randn(4))", RuntimeError, "There must be one `x` value for each sample point"),
    ("torch.cumulative_trapezoid(x, torch.randn(4))", RuntimeError, "There must be one `x` value for each sample"),
    ("F.cross_entropy(x, torch.randn(4))", ValueError, "Expected input batch_size (2) to match target batch_size (4)."),
    ("F.cross_entropy(x, torch.randn(3, 3))", ValueError, "Expected input batch_size (2) to match target batch_size"),
    ("F.nll_loss(x, torch.randn(4))", ValueError, "Expected input batch_size (2) to match target batch_size (4)"),
    ("nn.MultiheadAttention(4, 2, batch_first=True)(x3, x3, torch.randn(2, 3, 5))", AssertionError,
     "does not match value shape"),
    ("nn.MultiheadAttention(4, 2)(x3, x3, torch.randn(2, 5, 4))", AssertionError, "does not match value shape"),
    ("nn.MultiheadAttention(4, 2, kdim=3, vdim=5)(x3, torch.randn(2, 3, 3), torch.randn(3, 3, 5))", AssertionError,
     "do not match value's"),
    ("nn.Linear(3, 4)(torch.tensor(1.0))", RuntimeError, "both arguments to linear need to be at least 1D"),
    # dtypes
    ("F.embedding(torch.tensor([0.0, 1.0]), x)", RuntimeError,
     "Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int"),
    ("nn.Embedding(3, 2)(torch.tensor([1], dtype=torch.uint8))", RuntimeError, "scalar types: Long, Int"),
    ("nn.Embedding(3, 2)(torch.tensor([True]))", RuntimeError, "scalar types: Long, Int"),
    ("torch.trapezoid(b)", RuntimeError, "received a bool input for `y`, but bool is not supported"),
    ("torch.cov(b)", RuntimeError, "cov(): bool dtype is not supported for input"),
    ("x.take(torch.tensor([0], dtype=torch.int32))", RuntimeError, "Expected a long tensor for index, but got Int"),
    ("x.take(torch.tensor([True]))", RuntimeError, "take(): Expected a long tensor for index, but got Bool"),
    ("x.put(torch.tensor([0.0]), torch.tensor([1.0]))", RuntimeError, "put_(): Expected a long tensor for index"),
    ("F.scaled_dot_product_attention(x3.long(), x3.long(), x3.long())", RuntimeError,
     "expected scalar type Float but found Long"),
    ("torch.corrcoef(b)", RuntimeError, "cov(): bool dtype is not supported for input"),
    # a float where torch takes an int: int(), NumPy and range() truncated it (2.5 repeats became 2)
    ("x.repeat(2.5, 1)", TypeError, "repeat"),
    ("x.tile((2.5, 1))", TypeError, "must be tuple of ints, but found element of type float at pos 0"),
    ("torch.broadcast_to(x, (2.5, 3))", TypeError, "must be tuple of ints, but found element of type float at pos 0"),
    ("x.unflatten(1, (3.5, 1))", TypeError, "must be tuple of ints, but found element of type float at pos 0"),
    ("F.pad(x, (1.5, 1))", TypeError, "must be tuple of ints, but found element of type float at pos 0"),
    ("x.roll(1.5, 0)", TypeError, "argument 'shifts'"),
    ("x.narrow(1, 0.5, 2)", TypeError, "narrow"),
    ("x.select(1, 1.5)", TypeError, "must be int, not float"),
    ("x.diagonal(0.5)", TypeError, "must be int, not float"),
    ("torch.diag(v, 0.5)", TypeError, "must be int, not float"),
    ("x.diag_embed(0.5)", TypeError, "must be int, not float"),
    ("x.tril(0.5)", TypeError, "must be int, not float"),
    ("x.triu(-0.5)", TypeError, "must be int, not float"),
    ("x.unfold(1, 2.5, 1)", TypeError, "must be int, not float"),
    ("x.rot90(1.5)", TypeError, "must be int, not float"),
    ("x.view(5.0)", TypeError, "view"),
    ("torch.tril_indices(3.5, 3)", TypeError, "must be int, not float"),
    ("F.one_hot(torch.tensor([0, 1, 2]), 3.5)", TypeError, "must be int, not float"),
    ("F.pixel_shuffle(torch.randn(1, 4, 2, 2), 2.0)", TypeError, "must be int, not float"),
    ("torch.randint(0, 5.5, (2,))", TypeError, "randint"),
    # layers: negative sizes, integer casts of trainable parameters
    ("nn.LayerNorm(-1)", RuntimeError, "Trying to create tensor with negative dimension -1: [-1]"),
    ("nn.LayerNorm((2, -1))", RuntimeError, "Trying to create tensor with negative dimension -1: [2, -1]"),
    ("nn.RNN(-3, 4)", ValueError, "input_size must be greater than zero"),
    ("nn.GRU(3, -4, num_layers=0)", ValueError, "hidden_size must be greater than zero"),
    ("nn.Linear(2, 2).type(torch.long)", RuntimeError,
     "data set to a tensor that requires gradients must be floating point or complex dtype"),
    # optimizer hyperparameters, devices, type names
    ("optim.Adam([w], lr=torch.tensor([0.1, 0.2]))", ValueError, "Tensor lr must be 1-element"),
    ("x.to('bogus')", RuntimeError, "device type at start of device string: bogus"),
    ("torch.device('bogus')", RuntimeError, "device type at start of device string: bogus"),
    ("x.type('torch.Bogus')", ValueError, "invalid type: 'torch.Bogus'"),
]

# valid torch calls minilora refused: (code, what the result must be)
ACCEPTED = [
    ("r = torch.randn(1, 1, 3).squeeze(0, 1).shape", (3,)),
    ("r = torch.randn(1, 2, 1).squeeze(dim=2).shape", (1, 2)),
    ("r = x.new_zeros(size=(2, 1)).shape", (2, 1)),
    ("r = x.reshape(shape=(3, 2)).shape", (3, 2)),
    ("r = x.view(size=(3, 2)).shape", (3, 2)),
    ("r = torch.randn(3).expand(size=(2, 3)).shape", (2, 3)),
    ("r = torch.randn(3).broadcast_to(3).shape", (3,)),
    ("r = x.permute(dims=(1, 0)).shape", (3, 2)),
    ("r = torch.permute(x, dims=(1, 0)).shape", (3, 2)),
    ("r = x.repeat(repeats=(2, 1)).shape", (4, 3)),
    ("r = torch.randint(high=10, size=(2,)).shape", (2,)),
    ("r = optim.Adam([w], lr=torch.tensor([0.5])).param_groups[0]['lr']", 0.5),
    ("r = torch.cumulative_trapezoid(torch.randn(2, 0)).shape", (2, 0)),
    ("m = nn.Linear(2, 2).requires_grad_(False); r = m.type(torch.long).weight.shape", (2, 2)),
    ("r = torch.einsum('ij,jk->ik', x, torch.ones(1, 4)).shape", (2, 4)),
    ("r = nn.MultiheadAttention(4, 2, kdim=3, vdim=5)(x3, torch.randn(2, 3, 3), torch.randn(2, 3, 5))[0].shape",
     (2, 3, 4)),
]


def _run(mod, code):
    namespace = _namespace(mod)
    exec(code, namespace)
    return namespace.get("r")


@pytest.mark.parametrize("code, error, phrase", REFUSED, ids=[row[0] for row in REFUSED])
def test_minilora_raises_torchs_error(code, error, phrase):
    with pytest.raises(error) as raised:
        _run(ml, code)
    assert phrase in str(raised.value)


@pytest.mark.skipif(torch is None, reason="torch is the oracle")
@pytest.mark.parametrize("code, error, phrase", REFUSED, ids=[row[0] for row in REFUSED])
def test_torch_raises_the_same(code, error, phrase):
    """The expectations are torch's own (the type, and the phrase in torch's message)."""
    with pytest.raises(error) as raised:
        _run(torch, code)
    assert phrase.replace("minilora", "torch") in str(raised.value)


@pytest.mark.parametrize("code, expected", ACCEPTED, ids=[row[0] for row in ACCEPTED])
def test_valid_calls_are_accepted(code, expected):
    result = _run(ml, code)
    if torch is not None:
        theirs = _run(torch, code)
        assert tuple(theirs) == expected if isinstance(expected, tuple) else np.isclose(float(theirs), expected)
    assert tuple(result) == expected if isinstance(expected, tuple) else np.isclose(float(result), expected)
