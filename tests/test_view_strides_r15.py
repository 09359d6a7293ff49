"""stride() of views with dimensions of size 1 (or 0): torch's strides or a refusal, never another answer.

NumPy's flags ignore size-1 dimensions and NumPy's own stride of such a dimension is not torch's after
every view op (``x[None]`` gives 0, reshape picks its own), so minilora used to answer contiguous strides
for ``ones(1, 5).t()`` -- (1, 1) where torch says (1, 5). A view now answers its strides by each view op's
rule from the strides of the tensor it views (ops/shape.py _view_strides), and refuses
(NotImplementedError) where minilora cannot tell which rule torch used (its Reshape serves view,
unsqueeze and squeeze, whose rules differ for some strides). Every case below either matches torch's
stride(), is_contiguous() and is_contiguous(memory_format=channels_last), or is refused.
"""
import itertools

import pytest

import minilora as ml

torch = pytest.importorskip("torch")

SHAPES = [(1, 5), (5, 1), (1, 1), (2, 1, 3), (1, 3, 1), (1, 2, 1, 3), (2, 1, 1, 3), (1, 1, 2, 2), (0, 1),
          (3,), (1,)]

VIEW_OPS = {
    "t": lambda x: x.t(), "T": lambda x: x.T, "mT": lambda x: x.mT,
    "transpose": lambda x: x.transpose(0, 1), "transpose_last": lambda x: x.transpose(-1, -2),
    "permute_reversed": lambda x: x.permute(*reversed(range(x.dim()))),
    "permute_rotated": lambda x: x.permute(*range(1, x.dim()), 0),
    "unsqueeze0": lambda x: x.unsqueeze(0), "unsqueeze1": lambda x: x.unsqueeze(1),
    "unsqueeze_last": lambda x: x.unsqueeze(-1),
    "[None]": lambda x: x[None], "[:, None]": lambda x: x[:, None], "[..., None]": lambda x: x[..., None],
    "view_flat": lambda x: x.view(-1), "view_ones": lambda x: x.view(1, *x.shape, 1),
    "reshape_flat": lambda x: x.reshape(-1), "reshape_one": lambda x: x.reshape(*x.shape, 1),
    "reshape_reversed": lambda x: x.reshape(*reversed(x.shape)),
    "flatten": lambda x: x.flatten(), "flatten1": lambda x: x.flatten(1),
    "unflatten": lambda x: x.unflatten(0, (x.shape[0], 1)),
    "squeeze": lambda x: x.squeeze(), "squeeze0": lambda x: x.squeeze(0), "squeeze_last": lambda x: x.squeeze(-1),
    "expand_new": lambda x: x.expand(2, *x.shape), "expand_new1": lambda x: x.expand(1, *x.shape),
    "expand_ones": lambda x: x.expand(*[2 if n == 1 else n for n in x.shape]),
    "expand_same": lambda x: x.expand(*x.shape),
    "narrow_last": lambda x: x.narrow(-1, 0, 1), "narrow0": lambda x: x.narrow(0, 0, 1),
    "select0": lambda x: x.select(0, 0), "select_last": lambda x: x.select(-1, 0),
    "[0:1]": lambda x: x[0:1], "[..., ::2]": lambda x: x[..., ::2], "[:, 0:1]": lambda x: x[:, 0:1],
    "[0]": lambda x: x[0],
    "diagonal": lambda x: x.diagonal(), "diagonal_last": lambda x: x.diagonal(0, -2, -1),
    "movedim": lambda x: x.movedim(0, -1), "swapaxes": lambda x: x.swapaxes(0, -1),
    "unfold_last": lambda x: x.unfold(-1, 1, 1), "unfold0": lambda x: x.unfold(0, 1, 1),
    "as_strided": lambda x: x.as_strided((1, x.numel()), (x.numel(), 1)),
    "as_strided_odd": lambda x: x.as_strided((x.numel(), 1), (1, 7)),
    "contiguous": lambda x: x.contiguous(),
}

# the chains two deep: the ops that give or move dimensions of size 1
CHAINED = ["t", "transpose_last", "permute_rotated", "unsqueeze0", "unsqueeze_last", "[:, None]", "view_ones",
           "flatten", "squeeze", "squeeze0", "expand_new1", "expand_ones", "narrow_last", "select0", "[..., ::2]",
           "diagonal", "movedim", "unfold0"]


def _made(lib, shape, chain):
    x = lib.ones(shape)
    for name in chain:
        x = VIEW_OPS[name](x)
    return x


def _check(shape, chain):
    """Compare minilora's view with torch's; returns how many answers were given (not refused)."""
    try:
        expected = _made(torch, shape, chain)
    except (RuntimeError, IndexError):
        return 0  # (torch refuses this op on this shape)
    view = _made(ml, shape, chain)
    answers = [(lambda: tuple(view.stride()), expected.stride()),
               (lambda: view.is_contiguous(), expected.is_contiguous())]
    if expected.dim() == 4:
        answers.append((lambda: view.is_contiguous(memory_format=ml.channels_last),
                        expected.is_contiguous(memory_format=torch.channels_last)))
    given = 0
    for answer, want in answers:
        try:
            got = answer()
        except NotImplementedError as refusal:
            assert "stride" in str(refusal)
            continue
        assert got == want, (shape, chain, got, want)
        given += 1
    return given


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_one_view_op_answers_torchs_strides_or_refuses(shape):
    given = sum(_check(shape, (name,)) for name in VIEW_OPS)
    assert given > 0


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (2, 1, 3), (1, 2, 1, 3), (0, 1)], ids=str)
def test_two_view_ops_answer_torchs_strides_or_refuse(shape):
    given = sum(_check(shape, chain) for chain in itertools.product(CHAINED, repeat=2))
    assert given > 0


def test_transposed_row_and_column_answer_torchs_strides():
    # minilora answered (1, 1), (1, 1) and (5, 1): NumPy calls each view C-contiguous
    assert ml.ones(1, 5).t().stride() == (1, 5)
    assert ml.ones(1, 5).transpose(0, 1).stride() == (1, 5)
    assert ml.ones(5, 1).t().stride() == (1, 1)
    assert ml.ones(1, 5).t().stride(1) == 5
    assert ml.ones(3, 4).t()[:, None].stride() == (1, 12, 4)  # (NumPy's: (1, 0, 4))
    assert ml.ones(3).expand(1, 2, 3).stride() == torch.ones(3).expand(1, 2, 3).stride() == (0, 0, 1)
    assert ml.ones(()).expand(1).stride() == (0,)


def test_reshapes_of_one_shape_answer_their_own_ops_rule():
    # minilora's Reshape serves unsqueeze(1) (torch: (1, 5, 5)) and unsqueeze(2) (torch: (1, 5, 1)): one shape,
    # which stride() refused until each view recorded its torch op (round 16); minilora's own reshapes still do
    assert torch.ones(1, 5).t().unsqueeze(1).stride() != torch.ones(1, 5).t().unsqueeze(2).stride()
    assert ml.ones(1, 5).t().unsqueeze(1).stride() == torch.ones(1, 5).t().unsqueeze(1).stride()
    assert ml.ones(1, 5).t().unsqueeze(2).stride() == torch.ones(1, 5).t().unsqueeze(2).stride()
    with pytest.raises(NotImplementedError, match="stride"):
        ml.ops.shape.Reshape.apply(ml.ones(1, 5).t(), shape=(5, 1, 1)).stride()


def test_empty_tensors_channels_last_as_torch():
    # torch's rule on torch's strides: NumPy's strides of an empty array differ (minilora said False)
    for shape in [(1, 0, 1, 1), (2, 0, 3, 3), (0, 3, 2, 2)]:
        assert ml.empty(shape).is_contiguous(memory_format=ml.channels_last) == \
            torch.empty(shape).is_contiguous(memory_format=torch.channels_last)


SAME_STORAGE = {  # tensors over a view's storage that are no views for autograd: torch keeps the strides
    "detach": lambda lib: lib.ones(1, 5).t().detach(),
    "detach_column": lambda lib: lib.ones(5, 1).t().detach(),
    "data": lambda lib: lib.ones(2, 1, 3).transpose(0, 2).data,
    "t_": lambda lib: lib.ones(1, 5).t_(),
    "transpose_": lambda lib: lib.ones(2, 1, 3).transpose_(0, 1),
    "unsqueeze_": lambda lib: lib.ones(1, 5).t().unsqueeze_(0),
    "squeeze_": lambda lib: lib.ones(1, 5).t().squeeze_(0),  # (no dimension 0 of size 1: kept)
    "t_ then view": lambda lib: lib.ones(1, 5).t_()[:, None],
    "detach then t_": lambda lib: lib.ones(1, 5)[:, 1:].detach().t_(),
    # preserve_format copies: torch copies non-overlapping dense strides, else lays out densely in their order
    "clone": lambda lib: lib.ones(1, 5).t().clone(),
    "clone_column": lambda lib: lib.ones(5, 1).t().clone(),
    "clone_unsqueezed": lambda lib: lib.ones(3, 4).t()[:, None].clone(),
    "clone_expanded": lambda lib: lib.ones(1, 5).t()[:, :, None].expand(5, 1, 2).clone(),  # (not dense)
    "clone_of_t_": lambda lib: lib.ones(1, 5).t_().clone(),
    "empty_like": lambda lib: lib.empty_like(lib.ones(1, 5).t()),
    "zeros_like": lambda lib: lib.zeros_like(lib.ones(3, 4).t()[:, None]),
    "ones_like": lambda lib: lib.ones_like(lib.ones(5, 1).t()),
}


@pytest.mark.parametrize("name", SAME_STORAGE)
def test_detached_in_place_and_copied_views_keep_torchs_strides(name):
    # minilora answered NumPy's flags' contiguous strides: (1, 1) for ones(1, 5).t().detach() and .clone()
    make = SAME_STORAGE[name]
    assert make(ml).stride() == make(torch).stride()


EMPTY_VIEWS = ["zeros(0, 6).view(2, 0, 3)", "zeros(0, 6).reshape(3, 0, 2)", "zeros(0, 6).view(0, 6)",
               "zeros(4, 0).view(2, 2, 0)", "zeros(3, 0).t()", "zeros(2, 0, 3)[:, :, 1:]",
               "zeros(2, 0, 3).transpose(0, 2)", "zeros(2, 0, 3).flatten()"]


@pytest.mark.parametrize("source", EMPTY_VIEWS)
def test_views_without_elements_answer_torchs_strides(source):
    # ATen's computeStride without elements: the old strides for the same shape, else contiguous ones (these
    # refused once the size-1/size-0 view rules came in: NumPy's strides of an empty array are anything)
    assert eval(source, {"zeros": ml.zeros}).stride() == eval(source, {"zeros": torch.zeros}).stride()
