"""Round 8, layouts (2): results laid out in memory as torch lays them out, where torch's are not
contiguous. torch's linear algebra hands back LAPACK's batches of column-major matrices; its
elementwise ops, ``clone()`` and ``empty_like`` keep a non-contiguous input's layout. torch draws
dropout masks and in-place random fills in memory order, so a result laid out otherwise gets other
masks for the same seed; ``is_contiguous()`` and ``view()`` read the layout too. Style and helpers
as tests/test_layout_r8.py."""
import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _elements(array):
    return tuple(s // array.itemsize for s in array.strides)


def _same_layout(ours, theirs):
    """Same contiguity, and where torch's result is not contiguous, the same strides (dimensions of
    size 1 aside: their stride means nothing)."""
    if ours._array.flags.c_contiguous != theirs.is_contiguous():
        return False
    if theirs.is_contiguous():
        return True
    keep = [i for i, n in enumerate(theirs.shape) if n > 1]
    return [_elements(ours._array)[i] for i in keep] == [theirs.stride()[i] for i in keep]


def _tensors(result):
    return [result] if not isinstance(result, tuple) else [t for t in result if t is not None]


def _arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in shapes]


def _spd(n, *batch):
    a = np.random.default_rng(7).standard_normal(batch + (n, n))
    return a @ a.swapaxes(-1, -2) + n * np.eye(n)


def _square(n, *batch):
    return np.random.default_rng(8).standard_normal(batch + (n, n)) + 4 * np.eye(n)


def _real(t):
    return t.real if t.is_complex() else t


LINALG = {
    "inv": lambda L, b: L.linalg.inv(L.tensor(_square(4, *b))),
    "inv_ex": lambda L, b: L.linalg.inv_ex(L.tensor(_square(4, *b))),
    "inverse": lambda L, b: L.inverse(L.tensor(_square(3, *b))),
    "matrix_power(-1)": lambda L, b: L.linalg.matrix_power(L.tensor(_square(3, *b)), -1),
    "matrix_power(-2)": lambda L, b: L.linalg.matrix_power(L.tensor(_square(3, *b)), -2),
    "cholesky": lambda L, b: L.linalg.cholesky(L.tensor(_spd(4, *b))),
    "cholesky upper": lambda L, b: L.linalg.cholesky(L.tensor(_spd(4, *b)), upper=True),
    "cholesky_ex": lambda L, b: L.linalg.cholesky_ex(L.tensor(_spd(4, *b))),
    "eigh": lambda L, b: L.linalg.eigh(L.tensor(_spd(4, *b))),
    "eigh U": lambda L, b: L.linalg.eigh(L.tensor(_spd(4, *b)), UPLO="U"),
    "eigvalsh": lambda L, b: L.linalg.eigvalsh(L.tensor(_spd(4, *b))),
    "eig": lambda L, b: L.linalg.eig(L.tensor(_spd(3, *b))),
    "lu_factor": lambda L, b: L.linalg.lu_factor(L.tensor(_square(4, *b))),
    "lu_factor_ex": lambda L, b: L.linalg.lu_factor_ex(L.tensor(_square(4, *b))),
    "lu": lambda L, b: L.linalg.lu(L.tensor(_square(4, *b))),
    "lu_unpack": lambda L, b: L.lu_unpack(*L.linalg.lu_factor(L.tensor(_square(4, *b)))),
    "ldl_factor": lambda L, b: L.linalg.ldl_factor(L.tensor(_spd(4, *b))),
    "geqrf": lambda L, b: L.geqrf(L.tensor(_arrays(1, b + (5, 3))[0])),
    "geqrf wide": lambda L, b: L.geqrf(L.tensor(_arrays(1, b + (3, 5))[0])),
    "householder_product": lambda L, b: L.linalg.householder_product(*L.geqrf(L.tensor(_arrays(1, b + (5, 3))[0]))),
    "ormqr": lambda L, b: L.ormqr(*L.geqrf(L.tensor(_arrays(1, b + (5, 3))[0])), L.tensor(_arrays(2, b + (5, 2))[0])),
    "svd": lambda L, b: L.linalg.svd(L.tensor(_arrays(1, b + (5, 3))[0])),
    "svd reduced": lambda L, b: L.linalg.svd(L.tensor(_arrays(1, b + (5, 3))[0]), full_matrices=False),
    "svd wide": lambda L, b: L.linalg.svd(L.tensor(_arrays(1, b + (3, 5))[0]), False),
    "torch.svd": lambda L, b: L.svd(L.tensor(_arrays(1, b + (5, 3))[0])),
    "torch.svd some=False": lambda L, b: L.svd(L.tensor(_arrays(1, b + (3, 5))[0]), some=False),
    "svdvals": lambda L, b: L.linalg.svdvals(L.tensor(_arrays(1, b + (5, 3))[0])),
    "qr": lambda L, b: L.linalg.qr(L.tensor(_arrays(1, b + (5, 3))[0])),
    "qr complete": lambda L, b: L.linalg.qr(L.tensor(_arrays(1, b + (5, 3))[0]), mode="complete"),
    "qr r": lambda L, b: L.linalg.qr(L.tensor(_arrays(1, b + (3, 5))[0]), "r"),
    "solve": lambda L, b: L.linalg.solve(L.tensor(_square(4, *b)), L.tensor(_arrays(2, b + (4, 2))[0])),
    "solve left=False": lambda L, b: L.linalg.solve(L.tensor(_square(4, *b)), L.tensor(_arrays(2, b + (2, 4))[0]),
                                                    left=False),
    "solve vector": lambda L, b: L.linalg.solve(L.tensor(_square(4, *b)), L.tensor(_arrays(2, b + (4,))[0])),
    "solve broadcast vector": lambda L, b: L.linalg.solve(L.tensor(_square(4, 2, *b)), L.tensor(_arrays(2, (4,))[0])),
    "solve broadcast A": lambda L, b: L.linalg.solve(L.tensor(_square(4)), L.tensor(_arrays(2, (2,) + b + (4, 3))[0])),
    "solve_ex": lambda L, b: L.linalg.solve_ex(L.tensor(_square(4, *b)), L.tensor(_arrays(2, b + (4, 2))[0])),
    "solve_triangular": lambda L, b: L.linalg.solve_triangular(L.tensor(_square(4, *b)).triu(),
                                                               L.tensor(_arrays(2, b + (4, 2))[0]), upper=True),
    "solve_triangular left=False": lambda L, b: L.linalg.solve_triangular(
        L.tensor(_square(4, *b)).tril(), L.tensor(_arrays(2, b + (2, 4))[0]), upper=False, left=False),
    "triangular_solve": lambda L, b: L.triangular_solve(L.tensor(_arrays(2, b + (4, 2))[0]),
                                                        L.tensor(_square(4, *b)).triu()),
    "cholesky_solve": lambda L, b: L.cholesky_solve(L.tensor(_arrays(2, b + (4, 2))[0]),
                                                    L.linalg.cholesky(L.tensor(_spd(4, *b)))),
    "cholesky_solve upper": lambda L, b: L.cholesky_solve(L.tensor(_arrays(2, b + (4, 3))[0]),
                                                          L.linalg.cholesky(L.tensor(_spd(4, *b)), upper=True), True),
    "cholesky_inverse": lambda L, b: L.cholesky_inverse(L.linalg.cholesky(L.tensor(_spd(4, *b)))),
    "lu_solve": lambda L, b: L.linalg.lu_solve(*L.linalg.lu_factor(L.tensor(_square(4, *b))),
                                               L.tensor(_arrays(2, b + (4, 2))[0])),
    "lu_solve adjoint": lambda L, b: L.linalg.lu_solve(*L.linalg.lu_factor(L.tensor(_square(4, *b))),
                                                       L.tensor(_arrays(2, b + (4, 2))[0]), adjoint=True),
    "lu_solve left=False": lambda L, b: L.linalg.lu_solve(*L.linalg.lu_factor(L.tensor(_square(4, *b))),
                                                          L.tensor(_arrays(2, b + (2, 4))[0]), left=False),
    "ldl_solve": lambda L, b: L.linalg.ldl_solve(*L.linalg.ldl_factor(L.tensor(_spd(4, *b))),
                                                 L.tensor(_arrays(2, b + (4, 2))[0])),
    "lstsq": lambda L, b: L.linalg.lstsq(L.tensor(_arrays(1, b + (5, 3))[0]), L.tensor(_arrays(2, b + (5, 2))[0])),
    "lstsq one column": lambda L, b: L.linalg.lstsq(L.tensor(_arrays(1, b + (5, 3))[0]),
                                                    L.tensor(_arrays(2, b + (5, 1))[0])),
    "lstsq wide": lambda L, b: L.linalg.lstsq(L.tensor(_arrays(1, b + (3, 5))[0]), L.tensor(_arrays(2, b + (3, 2))[0])),
    "tensorinv": lambda L, b: L.linalg.tensorinv(L.tensor(_arrays(1, (4, 6, 8, 3))[0]), ind=2),
    "tensorinv ind=1": lambda L, b: L.linalg.tensorinv(L.tensor(_arrays(1, (6, 2, 3))[0]), ind=1),
    "pinv": lambda L, b: L.linalg.pinv(L.tensor(_arrays(1, b + (5, 3))[0])),
    "matrix_exp": lambda L, b: L.linalg.matrix_exp(L.tensor(_arrays(1, b + (3, 3))[0])),
}
BATCHES = {"": (), "batched": (2,), "batched twice": (2, 3)}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", LINALG)
def test_linalg_result_is_laid_out_as_torch(name, batch):
    make = LINALG[name]
    theirs, ours = _tensors(make(torch, BATCHES[batch])), _tensors(make(minilora, BATCHES[batch]))
    assert len(ours) == len(theirs)
    for i, (mine, their) in enumerate(zip(ours, theirs)):
        assert tuple(mine.shape) == tuple(their.shape), (i, mine.shape, their.shape)
        assert _same_layout(mine, their), (i, _elements(mine._array), their.stride())


def test_linalg_values_and_gradients_are_unchanged_by_the_layout():
    """The layout is memory order only: values and gradients are torch's."""
    a, b = _square(4, 2), _arrays(3, (2, 4, 3))[0]
    results = []
    for lib in (torch, minilora):
        A, B = lib.tensor(a, requires_grad=True), lib.tensor(b, requires_grad=True)
        X = lib.linalg.solve(A, B)
        Q, R = lib.linalg.qr(B)
        loss = (X * lib.linalg.inv(A)[..., :3]).sum() + (Q.sin() * R.sum()).sum() + lib.linalg.eigh(A @ A.mT)[0].sum()
        loss.backward()
        results.append((X.detach().numpy(), A.grad.numpy(), B.grad.numpy()))
    for ours, theirs in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["inv", "cholesky", "solve", "lstsq"])
def test_dropout_after_a_linalg_result_draws_torch_s_mask(name):
    make = {"inv": lambda L: L.linalg.inv(L.tensor(_square(4, 2))),
            "cholesky": lambda L: L.linalg.cholesky(L.tensor(_spd(5, 3))),
            "solve": lambda L: L.linalg.solve(L.tensor(_square(4, 2)), L.tensor(_arrays(2, (2, 4, 6))[0])),
            "lstsq": lambda L: L.linalg.lstsq(L.tensor(_arrays(1, (2, 6, 3))[0]),
                                              L.tensor(_arrays(2, (2, 6, 4))[0])).solution}[name]
    results = []
    for lib in (torch, minilora):
        lib.manual_seed(5)
        results.append(lib.nn.functional.dropout(make(lib), 0.5).numpy())
    np.testing.assert_array_equal(results[1] == 0, results[0] == 0)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-12)


def test_view_of_a_column_major_result_is_refused_as_torch_s():
    """inv's result cannot be flattened by view() (torch's error), its transpose can."""
    for lib in (torch, minilora):
        inverse = lib.linalg.inv(lib.tensor(_square(3, 2)))
        assert not inverse.is_contiguous()
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            inverse.view(2, 9)
        assert tuple(inverse.mT.view(2, 9).shape) == (2, 9)


def _inputs(lib):
    """Non-contiguous inputs: a transpose, a permutation, a strided slice, broadcasts."""
    base = lib.tensor(np.arange(60.0).reshape(3, 4, 5) / 7 - 4, dtype=lib.float32)
    return {"x.t()": base[0].t(), "permute(2, 0, 1)": base.permute(2, 0, 1), "transpose(0, 1)": base.transpose(0, 1),
            "x[:, ::2]": base[:, ::2], "x[:, ::2].t()": base[0, :, ::2].t(), "expand rows": base[0, :1].expand(3, 5),
            "x.t() broadcast": base[0].t()[:, None].expand(5, 2, 4)}


PRESERVING = {
    "clone()": lambda L, x: x.clone(),
    "clone(preserve_format)": lambda L, x: x.clone(memory_format=L.preserve_format),
    "clone(contiguous_format)": lambda L, x: x.clone(memory_format=L.contiguous_format),
    "torch.clone": lambda L, x: L.clone(x),
    "contiguous()": lambda L, x: x.contiguous(),
    "contiguous(contiguous_format)": lambda L, x: x.contiguous(memory_format=L.contiguous_format),
    "to(copy=True)": lambda L, x: x.to(L.float32, copy=True),
}


SOURCES = ["x.t()", "permute(2, 0, 1)", "transpose(0, 1)", "x[:, ::2]", "x[:, ::2].t()", "expand rows",
           "x.t() broadcast"]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", PRESERVING)
def test_copy_keeps_torch_s_layout(name, source):
    theirs = PRESERVING[name](torch, _inputs(torch)[source])
    ours = PRESERVING[name](minilora, _inputs(minilora)[source])
    assert _same_layout(ours, theirs), (_elements(ours._array), theirs.stride())
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("fmt", ["channels_last", "channels_last_3d"])
def test_channels_last_copies_put_channels_innermost(fmt):
    shape = (2, 3, 4, 5) if fmt == "channels_last" else (2, 3, 4, 5, 2)
    data = np.arange(float(np.prod(shape))).reshape(shape)
    for method in ("clone", "contiguous"):
        theirs = getattr(torch.tensor(data), method)(memory_format=getattr(torch, fmt))
        ours = getattr(minilora.tensor(data), method)(memory_format=getattr(minilora, fmt))
        assert _elements(ours._array) == theirs.stride()
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        assert ours.contiguous(memory_format=getattr(minilora, fmt)) is ours  # (already so: itself, as torch)
    for lib in (torch, minilora):
        with pytest.raises(RuntimeError, match=f"required rank {len(shape)} tensor"):
            lib.zeros(3, 4).clone(memory_format=getattr(lib, fmt))
        with pytest.raises(RuntimeError, match="preserve memory format is unsupported by the contiguous"):
            lib.zeros(3, 4).t().contiguous(memory_format=lib.preserve_format)
    assert repr(minilora.preserve_format) == repr(torch.preserve_format) == "torch.preserve_format"


def test_dropout_after_clone_of_a_transpose_draws_torch_s_mask():
    results = []
    for lib in (torch, minilora):
        x = _inputs(lib)["permute(2, 0, 1)"].clone()
        lib.manual_seed(11)
        results.append(lib.nn.functional.dropout(x, 0.5).numpy())
    np.testing.assert_array_equal(results[1] == 0, results[0] == 0)


LIKE = {
    "zeros_like": lambda L, x: L.zeros_like(x),
    "ones_like": lambda L, x: L.ones_like(x, dtype=L.float64),
    "empty_like": lambda L, x: L.empty_like(x).zero_(),
    "full_like": lambda L, x: L.full_like(x, 2.5),
    "zeros_like(contiguous_format)": lambda L, x: L.zeros_like(x, memory_format=L.contiguous_format),
    "rand_like": lambda L, x: L.rand_like(x),
    "randn_like": lambda L, x: L.randn_like(x),
    "randint_like": lambda L, x: L.randint_like(x, 10),
    "new_zeros": lambda L, x: x.new_zeros(x.shape),
    "new_empty": lambda L, x: x.new_empty(x.shape).zero_(),
}
ELEMENTWISE = {
    "gelu": lambda L, x: L.nn.functional.gelu(x),
    "gelu tanh": lambda L, x: L.nn.functional.gelu(x, approximate="tanh"),
    "silu": lambda L, x: L.nn.functional.silu(x),
    "where": lambda L, x: L.where(x > 0, x, 0.0),
    "lerp": lambda L, x: L.lerp(x, x * 2, 0.3),
    "addcmul": lambda L, x: L.addcmul(x, x, x, value=0.5),
    "clamp": lambda L, x: x.clamp(-0.5, 0.5),
    "pow": lambda L, x: x ** 2,
}


# (Elementwise ops of a broadcast input are left out: NumPy's ufuncs put the broadcast dimension
# outermost, torch's iterator leaves it in place.)
@pytest.mark.parametrize("name,source", [(name, source) for name in LIKE for source in SOURCES] +
                         [(name, source) for name in ELEMENTWISE for source in SOURCES if "broadcast" not in source])
def test_like_and_elementwise_results_keep_torch_s_layout(name, source):
    """*_like tensors (torch's empty_like: preserve_format) and elementwise results (TensorIterator)
    take the input's layout; random ones are drawn in that memory order (randn one value at a time
    where not contiguous, as torch's normal_), so their values are torch's."""
    make = LIKE.get(name) or ELEMENTWISE[name]
    torch.manual_seed(2)
    theirs = make(torch, _inputs(torch)[source])
    minilora.manual_seed(2)
    ours = make(minilora, _inputs(minilora)[source])
    assert _same_layout(ours, theirs), (_elements(ours._array), theirs.stride())
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)


def test_silu_and_gelu_gradients_through_a_transpose_are_torch_s():
    data = np.random.default_rng(4).standard_normal((4, 6))
    weight = np.random.default_rng(5).standard_normal((6, 4))
    grads = []
    for lib in (torch, minilora):
        x = lib.tensor(data, requires_grad=True)
        ((lib.nn.functional.silu(x.t()) + lib.nn.functional.gelu(x.t())) * lib.tensor(weight)).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=1e-12)


OPS = {
    # torch keeps the input's layout (empty_like(input) or its TensorIterator)
    "flip(0)": lambda L, x: x.flip(0),
    "flip(-1)": lambda L, x: x.flip(-1),
    "sort values": lambda L, x: x.sort(0)[0],
    "sort indices": lambda L, x: x.sort(-1, descending=True)[1],
    "argsort": lambda L, x: x.argsort(1),
    "msort": lambda L, x: L.msort(x),
    "threshold": lambda L, x: L.nn.functional.threshold(x, 0.1, 2.0),
    "hardshrink": lambda L, x: L.nn.functional.hardshrink(x),
    "index_fill": lambda L, x: x.index_fill(0, L.tensor([1]), 2.0),
    "index_put": lambda L, x: x.index_put((L.tensor([1]),), L.tensor(1.0)),
    "index_put accumulate": lambda L, x: x.index_put((L.tensor([0, 0]),), L.tensor(1.0), accumulate=True),
    # torch's result is contiguous whatever the input's layout
    "roll(1, 0)": lambda L, x: x.roll(1, 0),
    "cumsum(0)": lambda L, x: x.cumsum(0),
    "cumprod(-1)": lambda L, x: x.cumprod(-1),
    "logcumsumexp(0)": lambda L, x: x.logcumsumexp(0),
    "cummax values": lambda L, x: x.cummax(0)[0],
    "cummin indices": lambda L, x: x.cummin(1)[1],
    "softmax(-1)": lambda L, x: x.softmax(-1),
    "softmax(0)": lambda L, x: L.softmax(x, 0),
    "log_softmax(-1)": lambda L, x: x.log_softmax(-1),
    "softmin": lambda L, x: L.nn.functional.softmin(x, 0),
    "masked_fill": lambda L, x: x.masked_fill(x > 0, 1.0),
    "scatter_add": lambda L, x: x.scatter_add(0, L.zeros((1,) + tuple(x.shape[1:]), dtype=L.long), L.ones(x.shape)),
    "scatter_reduce": lambda L, x: x.scatter_reduce(0, L.zeros((1,) + tuple(x.shape[1:]), dtype=L.long),
                                                   L.ones(x.shape), "amax"),
    "masked_fill tensor": lambda L, x: x.masked_fill(x > 0, L.tensor(1.0)),
    "2 ** x": lambda L, x: 2 ** x,
    "torch.pow(2, x)": lambda L, x: L.pow(2, x),
    "tril": lambda L, x: x.tril(),
    "triu(1)": lambda L, x: L.triu(x, 1),
    "kthvalue": lambda L, x: x.kthvalue(1, 0)[0],
    "topk": lambda L, x: x.topk(2, 0)[0],
}


@pytest.mark.parametrize("source", [s for s in SOURCES if "broadcast" not in s and "rows" not in s])
@pytest.mark.parametrize("name", OPS)
def test_op_result_is_laid_out_as_torch_s(name, source):
    theirs = OPS[name](torch, _inputs(torch)[source])
    ours = OPS[name](minilora, _inputs(minilora)[source])
    assert _same_layout(ours, theirs), (_elements(ours._array), theirs.stride())
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)


def test_gradients_through_relaid_ops_are_torch_s():
    data = np.random.default_rng(6).standard_normal((3, 4, 5))
    grads = []
    for lib in (torch, minilora):
        x = lib.tensor(data, requires_grad=True)
        p = x.permute(2, 0, 1)
        loss = (p.flip(0) * p.sort(1)[0]).sum() + (p.cumsum(0) * p.softmax(-1)).sum()
        loss = loss + p.tril().masked_fill(p > 1, 0.5).sum()
        loss.backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-10, atol=1e-12)


STRIDES = {
    "linalg.inv": lambda L, x: L.linalg.inv(x),
    "linalg.qr Q": lambda L, x: L.linalg.qr(x)[0],
    "linalg.solve": lambda L, x: L.linalg.solve(x, x),
    "linalg.cholesky": lambda L, x: L.linalg.cholesky(x @ x.mT),
    "clone of a permute": lambda L, x: x.permute(2, 0, 1).clone(),
    "zeros_like of a transpose": lambda L, x: L.zeros_like(x.mT),
    "randn_like of a permute": lambda L, x: L.randn_like(x.permute(1, 2, 0)),
    "flip of a transpose": lambda L, x: x.mT.flip(0),
    "argsort of a transpose": lambda L, x: x.mT.argsort(1),
    "silu of a transpose": lambda L, x: L.nn.functional.silu(x.mT),
    "contiguous(channels_last)": lambda L, x: x[None].expand(2, 2, 3, 3).contiguous(memory_format=L.channels_last),
}


@pytest.mark.parametrize("name", STRIDES)
def test_stride_reports_torch_s_strides_where_minilora_lays_out_as_torch(name):
    """stride() answers for the results minilora now lays out as torch (it refused: minilora could not
    tell their layout from one NumPy chose)."""
    data = _square(3, 2)
    theirs = STRIDES[name](torch, torch.tensor(data))
    ours = STRIDES[name](minilora, minilora.tensor(data))
    assert ours.stride() == theirs.stride()
    assert ours.is_contiguous() == theirs.is_contiguous()


CONTIGUOUS = {
    # torch writes these into contiguous results whatever the input's layout
    "cat(dim=1)": lambda L, x: L.cat([x, x], 1),
    "stack(dim=2)": lambda L, x: L.stack([x, x], 2),
    "sum(-1)": lambda L, x: x.sum(-1),
    "mean(-1, keepdim=True)": lambda L, x: x.mean(-1, keepdim=True),
    "var(-1)": lambda L, x: x.var(-1),
    "amax(-1)": lambda L, x: x.amax(-1),
    "prod(-1)": lambda L, x: x.prod(-1),
    "norm(dim=-1)": lambda L, x: x.norm(dim=-1),
    "logsumexp(-1)": lambda L, x: x.logsumexp(-1),
    "any(-1)": lambda L, x: (x > 0).any(-1),
    "layer_norm": lambda L, x: L.nn.functional.layer_norm(x, (x.shape[-1],)),
    "rms_norm": lambda L, x: L.nn.functional.rms_norm(x, (x.shape[-1],)),
    "logsigmoid": lambda L, x: L.nn.functional.logsigmoid(x),
    "batch_norm": lambda L, x: L.nn.functional.batch_norm(x, None, None, training=True),
}


@pytest.mark.parametrize("source", ["permute(2, 0, 1)", "transpose(0, 1)"])
@pytest.mark.parametrize("name", CONTIGUOUS)
def test_result_is_contiguous_as_torch_s(name, source):
    theirs = CONTIGUOUS[name](torch, _inputs(torch)[source])
    ours = CONTIGUOUS[name](minilora, _inputs(minilora)[source])
    assert _same_layout(ours, theirs), (_elements(ours._array), theirs.stride())
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_channels_last_inputs_keep_channels_last_through_cat_and_batch_norm():
    data = np.arange(120.0).reshape(2, 3, 4, 5) / 50
    for make in (lambda L, y: L.cat([y, y], 1), lambda L, y: L.nn.functional.batch_norm(y, None, None, training=True)):
        theirs = make(torch, torch.tensor(data).contiguous(memory_format=torch.channels_last))
        ours = make(minilora, minilora.tensor(data).contiguous(memory_format=minilora.channels_last))
        assert _elements(ours._array) == theirs.stride()
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10)


def test_is_contiguous_takes_torch_s_memory_formats():
    data = np.arange(120.0).reshape(2, 3, 4, 5)
    for make in (lambda L: L.tensor(data), lambda L: L.tensor(data).contiguous(memory_format=L.channels_last),
                 lambda L: L.tensor(data)[:, :1].contiguous(), lambda L: L.tensor(data)[:, :, :1, :1].clone(),
                 lambda L: L.tensor(data[0]), lambda L: L.tensor(data).permute(0, 3, 1, 2)):
        for fmt in ("contiguous_format", "channels_last", "channels_last_3d", "preserve_format"):
            assert make(minilora).is_contiguous(memory_format=getattr(minilora, fmt)) == \
                make(torch).is_contiguous(memory_format=getattr(torch, fmt)), fmt


BINARY = {
    # torch's TensorIterator: the first input's layout, a later one's where the first is silent
    "x.t() * y": lambda L, x: x.t() * x.t().contiguous(),
    "y * x.t()": lambda L, x: x.t().contiguous() * x.t(),
    "x.t() + row": lambda L, x: x.t() + x[0, :3],
    "x.t() - y": lambda L, x: L.sub(x.t(), x.t().contiguous()),
    "x.t() / y": lambda L, x: x.t() / (x.t().contiguous() + 1),
    "maximum": lambda L, x: L.maximum(x.t(), x.t().contiguous()),
    "where(c, x.t(), y)": lambda L, x: L.where(x.t().contiguous() > 5, x.t(), x.t().contiguous()),
    "lerp": lambda L, x: L.lerp(x.t(), x.t().contiguous(), 0.5),
    "broadcast column + row": lambda L, x: x.t()[:, None] + L.ones(2, 1),
    "pow": lambda L, x: x.t() ** x.t().contiguous(),
    "atan2": lambda L, x: L.atan2(x.t(), x.t().contiguous() + 1),
}


@pytest.mark.parametrize("name", BINARY)
def test_binary_op_of_mixed_layouts_is_laid_out_as_torch_s(name):
    theirs = BINARY[name](torch, torch.tensor(np.arange(12.0).reshape(3, 4)))
    ours = BINARY[name](minilora, minilora.tensor(np.arange(12.0).reshape(3, 4)))
    assert _same_layout(ours, theirs), (_elements(ours._array), theirs.stride())
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    assert ours.stride() == theirs.stride()


TO = {
    "to(contiguous_format) of a transpose": lambda L: L.randn(3, 4).t().to(memory_format=L.contiguous_format),
    "to(channels_last)": lambda L: L.randn(2, 3, 4, 5).to(memory_format=L.channels_last),
    "to(float64, contiguous_format)": lambda L: L.randn(3, 4).t().to(L.float64, memory_format=L.contiguous_format),
    "to(float64) of a transpose": lambda L: L.randn(3, 4).t().to(L.float64),
    "channels_last to(contiguous_format)": lambda L: L.randn(2, 3, 4, 5).contiguous(
        memory_format=L.channels_last).to(memory_format=L.contiguous_format),
    "to(copy=True) of a permute": lambda L: L.randn(2, 3, 4).permute(2, 0, 1).to(copy=True),
    "empty(channels_last)": lambda L: L.empty(2, 3, 4, 5, memory_format=L.channels_last).zero_(),
}


@pytest.mark.parametrize("name", TO)
def test_to_and_empty_take_torch_s_memory_format(name):
    """torch's to(memory_format=...) returns the tensor itself in its suggested format (a transpose stays
    one), else a copy laid out so; empty(memory_format=) allocates so."""
    theirs, ours = TO[name](torch), TO[name](minilora)
    assert _same_layout(ours, theirs), (_elements(ours._array), theirs.stride())
    assert ours.stride() == theirs.stride()
