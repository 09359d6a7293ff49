"""Round 24: bad inputs to the top-level functions and Tensor methods, found by sweeps against torch 2.13
(``tests/bad_inputs_sweep_torch.py``, ``tests/bad_inputs_sweep_tensor.py``: the siblings of round 21's
``bad_inputs_sweep.py``), and the convolution, pooling, expand, repeat and scatter checks that spoke minilora's words.

* a string, a float or None for a bool, int or float parameter: ``torch.svd(x, some="no")``, ``x.qr(some=None)``,
  ``x.allclose(y, equal_nan="no")``, ``x.addcmul_(a, b, value="1")``, ``torch.hann_window(4.5)``, ``x.std(unbiased=
  "no")`` answered (a string's truth, a converted string, a truncated float); now torch's parser TypeError, its
  "invalid combination" where torch's overloads differ in that parameter (``_argument_types.SCALARS``);
* None for a required Tensor (``torch.abs(None)``, ``torch.logical_and(None, x)``, ``x.copy_(None)``) and a string
  for a comparison's other (``x.eq("a")``): answered, or failed in NumPy's words;
* ``F.conv2d`` with a 3-D weight, ``F.conv1d`` with a 4-D one: minilora's own words; now ATen's checks in its order
  (stride/padding/dilation lengths, then the input's rank against the weight's) and its dtype words;
* a pool's stride of 0 at ``torch.max_pool1d`` (read as "no stride"), a 1-D pool's stride of two ints (its first
  taken): answered; the pools' geometry errors now ATen's words (``pad should be at most half of effective kernel
  size, but got pad=2, kernel_size=2 and dilation=1``);
* ``x.expand(2, -2)``, ``x.tile(-1)``: torch's words; a scatter's ``src`` of another rank: torch's IndexError or
  "same number of dimensions as src"; ``torch.Size`` in binary_cross_entropy's messages, not ``minilora.Size``;
* a non-Tensor where a function or method takes one after its first (``x.dot(3)``, ``x.addmm(None, m)``,
  ``gather(x, 0, [0])``, ``lerp(x, 3, w)``, ``clamp_min(x, None)``): an AttributeError or NumPy's words;
* a bool tensor to bincount or mvlgamma, ``cdist(compute_mode="bogus")``, ``bucketize([1, 2], b)``,
  ``normal(mean_tensor, requires_grad="no")``, ``arange(3, step=1.5)``: answered; now torch's refusals.

Each row runs under torch first (the oracle), then minilora, which must raise the same exception class with the same
first line of message (ROWS), or the same class with torch's key words (PHRASES)."""
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def x(L, *shape):
    return L.ones(*shape) if shape else L.ones(2, 3, 4)


def F(L):
    return L.nn.functional


ROWS = [
    # the scalar parameters of top-level functions and methods
    ("torch.svd(some='no')", lambda L: L.svd(x(L, 3, 3), some="no")),
    ("x.qr(some=None)", lambda L: x(L, 3, 3).qr(some=None)),
    ("x.allclose(equal_nan='no')", lambda L: x(L).allclose(x(L), equal_nan="no")),
    ("torch.isclose(equal_nan=None)", lambda L: L.isclose(x(L), x(L), equal_nan=None)),
    ("x.addcmul_(value='1')", lambda L: x(L).addcmul_(x(L), x(L), value="1")),
    ("torch.addcdiv(value='1')", lambda L: L.addcdiv(x(L), x(L), x(L), value="1")),
    ("x.normal_(mean='0.5')", lambda L: x(L).normal_(mean="0.5")),
    ("torch.cholesky(upper='no')", lambda L: L.cholesky(L.eye(3), upper="no")),
    ("x.triangular_solve(transpose=None)", lambda L: x(L, 3, 3).triangular_solve(L.eye(3), transpose=None)),
    ("torch.cov(correction=1.5)", lambda L: L.cov(x(L, 3, 3), correction=1.5)),
    ("torch.nonzero(as_tuple='no')", lambda L: L.nonzero(x(L), as_tuple="no")),
    ("torch.lu(pivot='no')", lambda L: L.lu(L.eye(3), pivot="no")),
    ("torch.vander(increasing=None)", lambda L: L.vander(x(L, 3), increasing=None)),
    ("x.gather(sparse_grad=None)", lambda L: x(L, 2, 2).gather(0, L.zeros(2, 2, dtype=L.int64), sparse_grad=None)),
    ("x.copy_(non_blocking='no')", lambda L: x(L).copy_(x(L), non_blocking="no")),
    ("x.slice_inverse(x, step=1.5)", lambda L: x(L).slice_inverse(x(L), step=1.5)),
    ("torch.hann_window(4.5)", lambda L: L.hann_window(4.5)),
    # None for a required Tensor, a string for a comparison's other
    ("torch.abs(None)", lambda L: L.abs(None)),
    ("torch.logical_and(None, x)", lambda L: L.logical_and(None, x(L))),
    ("torch.matmul(x, None)", lambda L: L.matmul(x(L, 2, 2), None)),
    ("torch.cdist(x, None)", lambda L: L.cdist(x(L, 2, 3), None)),
    ("x.copy_(None)", lambda L: x(L).copy_(None)),
    ("x.copy_(list)", lambda L: x(L, 2).copy_([1.0, 2.0])),
    ("torch.unsqueeze_copy(None, 0)", lambda L: L.unsqueeze_copy(None, 0)),
    ("torch.binomial(3, p)", lambda L: L.binomial(3, x(L, 2))),
    ("x.dot(3)", lambda L: x(L, 2).dot(3)),
    ("x.addmm(None, m)", lambda L: x(L, 2, 2).addmm(None, x(L, 2, 2))),
    ("x.expand_as([1])", lambda L: x(L, 2).expand_as([1])),
    ("x.cholesky_solve('a')", lambda L: x(L, 2, 2).cholesky_solve("a")),
    ("x.slice_inverse(None)", lambda L: x(L, 2).slice_inverse(None)),
    ("torch.gather(x, 0, [0])", lambda L: L.gather(x(L, 2), 0, [0])),
    ("x.gather(0, 1.5)", lambda L: x(L, 2).gather(0, 1.5)),
    ("torch.dist(p='a')", lambda L: L.dist(x(L, 2), x(L, 2), "a")),
    ("torch.roll(x, 'a')", lambda L: L.roll(x(L, 2), "a")),
    ("torch.logit(eps='a')", lambda L: L.logit(x(L, 2), eps="a")),
    ("torch.scalar_tensor(None)", lambda L: L.scalar_tensor(None)),
    ("torch.tensordot(dims=1.5)", lambda L: L.tensordot(x(L, 2, 2), x(L, 2, 2), 1.5)),
    ("torch.binomial of an int64 count", lambda L: L.binomial(x(L, 2).long(), x(L, 2))),
    ("torch.div(rounding_mode='bogus')", lambda L: L.div(x(L, 2), x(L, 2), rounding_mode="bogus")),
    # convolutions
    ("conv2d of a 3-D weight", lambda L: F(L).conv2d(x(L, 1, 3, 4, 4), x(L, 2, 3, 2))),
    ("conv2d of a 5-D weight", lambda L: F(L).conv2d(x(L, 1, 3, 4, 4), x(L, 2, 3, 2, 2, 2))),
    ("conv2d of a 2-D weight", lambda L: F(L).conv2d(x(L, 1, 3, 4, 4), x(L, 2, 3))),
    ("conv1d of a 4-D weight", lambda L: F(L).conv1d(x(L, 1, 3, 4), x(L, 2, 3, 2, 2))),
    ("conv2d of a 5-D input", lambda L: F(L).conv2d(x(L, 1, 3, 4, 4, 4), x(L, 2, 3, 2, 2))),
    ("conv1d stride of two", lambda L: F(L).conv1d(x(L, 1, 3, 4), x(L, 2, 3, 2), stride=(1, 1))),
    ("conv_transpose1d output_padding of two",
     lambda L: F(L).conv_transpose1d(x(L, 1, 3, 4), x(L, 3, 2, 2), output_padding=(0, 0))),
    ("conv2d of a float64 weight", lambda L: F(L).conv2d(x(L, 1, 3, 4, 4), x(L, 2, 3, 2, 2).double())),
    ("conv2d of a float16 input", lambda L: F(L).conv2d(x(L, 1, 3, 4, 4).half(), x(L, 2, 3, 2, 2))),
    ("conv2d of a float64 bias", lambda L: F(L).conv2d(x(L, 1, 3, 4, 4), x(L, 2, 3, 2, 2), x(L, 2).double())),
    ("conv_transpose3d of a float64 bias",
     lambda L: F(L).conv_transpose3d(x(L, 1, 3, 4, 4, 4), x(L, 3, 2, 2, 2, 2), x(L, 2).double())),
    # pools
    ("torch.max_pool1d(stride=0)", lambda L: L.max_pool1d(x(L, 1, 2, 6), 2, stride=0)),
    ("torch.avg_pool1d(stride=0)", lambda L: L.avg_pool1d(x(L, 1, 2, 6), 2, stride=0)),
    ("torch.max_pool2d(stride=0)", lambda L: L.max_pool2d(x(L, 1, 2, 6, 6), 2, stride=0)),
    ("F.max_pool1d(padding=2)", lambda L: F(L).max_pool1d(x(L, 1, 2, 6), 2, padding=2)),
    ("F.max_pool1d(stride=(2, 1))", lambda L: F(L).max_pool1d(x(L, 1, 2, 6), 2, stride=(2, 1))),
    ("F.avg_pool1d(stride=(2, 1))", lambda L: F(L).avg_pool1d(x(L, 1, 2, 6), 2, stride=(2, 1))),
    ("F.avg_pool1d(kernel_size=-1)", lambda L: F(L).avg_pool1d(x(L, 1, 2, 6), -1)),
    ("F.avg_pool2d(padding=2)", lambda L: F(L).avg_pool2d(x(L, 1, 1, 4, 4), 2, padding=2)),
    ("F.max_pool2d(stride=-1)", lambda L: F(L).max_pool2d(x(L, 1, 1, 4, 4), 2, stride=-1)),
    ("F.max_pool3d(dilation=0)", lambda L: F(L).max_pool3d(x(L, 1, 1, 4, 4, 4), 2, dilation=0)),
    ("F.avg_pool3d(padding=-1)", lambda L: F(L).avg_pool3d(x(L, 1, 1, 4, 4, 4), 2, padding=-1)),
    # expand, repeat, scatter, losses' sizes
    ("expand(2, -2) of a size-1 dimension", lambda L: x(L, 2, 1).expand(2, -2)),
    ("expand(-2, 1)", lambda L: x(L, 2, 1).expand(-2, 1)),
    ("tile(-1)", lambda L: x(L, 2).tile(-1)),
    ("repeat(-1, 2)", lambda L: x(L, 2, 2).repeat(-1, 2)),
    ("scatter of a 1-D src into 2-D", lambda L: L.zeros(3, 3).scatter(0, L.tensor([[0, 1]]), L.ones(3))),
    ("scatter of a 3-D src into 2-D", lambda L: L.zeros(3, 3).scatter(0, L.tensor([[0, 1]]), L.ones(3, 3, 3))),
    ("scatter_reduce of a 1-D src",
     lambda L: L.zeros(3, 3).scatter_reduce(0, L.tensor([[0, 1]]), L.ones(3), "sum")),
    ("scatter_add of a float64 src", lambda L: L.zeros(3, 3).scatter_add(0, L.tensor([[0, 1]]), L.ones(3, 3).double())),
    ("binary_cross_entropy of another size",
     lambda L: F(L).binary_cross_entropy(x(L, 3) * 0.5, x(L, 4) * 0.5)),
    ("binary_cross_entropy_with_logits of another size",
     lambda L: F(L).binary_cross_entropy_with_logits(x(L, 3), x(L, 4))),
    # dtypes and options torch refuses
    ("bincount of bools", lambda L: L.bincount(L.tensor([True, False]))),
    ("mvlgamma of bools", lambda L: L.mvlgamma(L.tensor([True, False]), 1)),
    ("cdist(compute_mode='bogus')", lambda L: L.cdist(x(L, 2, 3), x(L, 2, 3), compute_mode="bogus")),
]

# where minilora's first line holds torch's key words only (an overload list, or the devices of torch's build)
PHRASES = [
    ("x.eq(None)", lambda L: x(L).eq(None), TypeError, "eq() received an invalid combination of arguments - got (NoneType)"),
    ("torch.ne(x, 'a')", lambda L: L.ne(x(L), "a"), TypeError,
     "ne() received an invalid combination of arguments - got (Tensor, str)"),
    ("torch.std(unbiased='no')", lambda L: L.std(x(L), unbiased="no"), TypeError,
     "std() received an invalid combination of arguments - got (Tensor, unbiased=str)"),
    ("x.histogram(density='no')", lambda L: x(L).histogram(density="no"), TypeError,
     "histogram() received an invalid combination of arguments - got (density=str, )"),
    ("torch.hann_window(periodic=None)", lambda L: L.hann_window(4, periodic=None), TypeError,
     "hann_window() received an invalid combination of arguments - got (int, periodic=NoneType)"),
    ("torch.isin(invert='no')", lambda L: L.isin(x(L), x(L), invert="no"), TypeError,
     "isin() received an invalid combination of arguments - got (Tensor, Tensor, invert=str)"),
    ("torch.bucketize(list, b)", lambda L: L.bucketize([1, 2], x(L, 3)), TypeError,
     "bucketize() received an invalid combination of arguments - got (list, Tensor)"),
    ("torch.normal(x, requires_grad='no')", lambda L: L.normal(x(L), requires_grad="no"), TypeError,
     "normal() received an invalid combination of arguments"),
    ("torch.arange(3, step=1.5)", lambda L: L.arange(3, step=1.5), TypeError,
     "arange() received an invalid combination of arguments"),
    ("torch.lerp(x, 3, w)", lambda L: L.lerp(x(L, 2), 3, x(L, 2)), TypeError,
     "lerp() received an invalid combination of arguments - got (Tensor, int, Tensor)"),
    ("x.lerp_(None, w)", lambda L: x(L, 2).lerp_(None, x(L, 2)), TypeError,
     "lerp_() received an invalid combination of arguments - got (NoneType, Tensor)"),
    ("torch.clamp_min(x, None)", lambda L: L.clamp_min(x(L, 2), None), TypeError,
     "clamp_min() received an invalid combination of arguments - got (Tensor, NoneType)"),
    ("torch.float_power(x, 'a')", lambda L: L.float_power(x(L, 2), "a"), TypeError,
     "float_power() received an invalid combination of arguments - got (Tensor, str)"),
    ("x.eq_('a')", lambda L: x(L, 2).eq_("a"), TypeError, "eq_() received an invalid combination of arguments"),
    ("torch.searchsorted([1.0], x)", lambda L: L.searchsorted([1.0], x(L, 2)), TypeError,
     "searchsorted() received an invalid combination of arguments - got (list, Tensor)"),
    ("torch.std(None)", lambda L: L.std(None), TypeError, "std()"),
    ("x.is_pinned('bogus')", lambda L: x(L).is_pinned("bogus"), RuntimeError,
     "device type at start of device string: bogus"),
    ("x.normal_(generator=3)", lambda L: x(L).normal_(generator=3), TypeError,
     "argument 'generator' must be torch.Generator, not int"),
]


def _first_line(error):
    return str(error).split("\n")[0]


@pytest.mark.parametrize("call", [r[1] for r in ROWS], ids=[r[0] for r in ROWS])
def test_refused_in_torchs_words(call):
    with pytest.raises(Exception) as theirs:  # (the oracle first: torch refuses it so)
        call(torch)
    with pytest.raises(type(theirs.value)) as ours:
        call(ml)
    assert _first_line(ours.value) == _first_line(theirs.value)


@pytest.mark.parametrize("call,error,phrase", [r[1:] for r in PHRASES], ids=[r[0] for r in PHRASES])
def test_refused_as_torch_refuses(call, error, phrase):
    for library in (torch, ml):
        with pytest.raises(error) as refusal:
            call(library)
        assert phrase in _first_line(refusal.value)


def test_the_calls_torch_takes_still_answer():
    assert ml.svd(ml.eye(3), some=False)[0].shape == (3, 3)
    assert ml.std(ml.tensor([1.0, 2.0]), unbiased=False).item() == 0.5
    assert ml.ones(2).allclose(ml.ones(2), equal_nan=True)
    assert ml.nn.functional.max_pool1d(ml.ones(1, 1, 6), 2, stride=[2]).shape == (1, 1, 3)
    assert ml.nn.functional.avg_pool1d(ml.ones(1, 1, 6), [2], stride=[3]).shape == (1, 1, 2)
    assert ml.max_pool1d(ml.ones(1, 1, 6), 2).shape == (1, 1, 3)  # (stride left out: the kernel's)
    assert ml.nn.functional.conv2d(ml.ones(1, 3, 4, 4), ml.ones(2, 3, 2, 2), stride=[1]).shape == (1, 2, 3, 3)
    assert ml.ones(0).repeat(-1).shape == (0,) and ml.ones(0, 2).tile(-1, 1).shape == (0, 2)
    assert ml.eq(ml.ones(2), 1).all() and ml.ones(2).ne(ml.zeros(2)).all()
    assert ml.bucketize(1, ml.tensor([0.0, 2.0])).item() == 1
    assert ml.hann_window(4, False).shape == (4,)
    assert ml.batch_norm(ml.ones(2, 3), None, None, None, None, True, 0.1, 1e-5, False).shape == (2, 3)
    target = ml.zeros(2)
    assert target.copy_(ml.ones(2)).tolist() == [1.0, 1.0] and target.copy_(3).tolist() == [3.0, 3.0]
    assert ml.clamp(ml.ones(2), None, 0.5).tolist() == [0.5, 0.5] and ml.lerp(ml.ones(2), ml.zeros(2), 0.5)[0] == 0.5
    assert ml.tensordot(ml.ones(2, 2), ml.ones(2, 2), ([0, 1], [0, 1])).item() == 4.0
    assert ml.gather(ml.ones(2), 0, ml.tensor([1])).tolist() == [1.0]
