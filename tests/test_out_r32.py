"""Round 32: torch's out= rules in one place (minilora/ops/__init__.py, _write_out), swept against torch 2.13
(tests/out_sweep.py): an out that shares part of an input's memory is refused as torch refuses it, torch's second
names and *_copy twins take out=, the kernels that refuse a wider out dtype refuse it, refusals name the kernel
torch runs, a resized out takes torch's layout of the result, and the special polynomials, fft.ihfft* and
chain_matmul resize and cast their out as every other op."""
import warnings

import numpy as np
import pytest
import torch

import minilora as ml

OVERLAP = "some elements of the input tensor and the written-to tensor refer to a single memory location"
VALUES = np.arange(12, dtype=np.float32).reshape(3, 4) / 13 + 0.05


def _both(values=VALUES):
    return torch.tensor(values), ml.tensor(values)


def _shifted_views(lib, values=VALUES):
    """An input of ``values`` and an out of its shape one element further along the same memory."""
    buffer = lib.zeros(values.size + 1)
    buffer[:values.size] = lib.tensor(values.reshape(-1))
    return buffer[:values.size].view(values.shape), buffer[1:].view(values.shape)


@pytest.mark.parametrize("call", [
    lambda lib, x, out: lib.exp(x, out=out),
    lambda lib, x, out: lib.add(x, 1.5, out=out),
    lambda lib, x, out: lib.clamp(x, 0.2, 0.6, out=out),
    lambda lib, x, out: lib.cumsum(x, 1, out=out),
    lambda lib, x, out: lib.special.erf(x, out=out),
], ids=["exp", "add", "clamp", "cumsum", "special.erf"])
def test_an_out_sharing_part_of_an_input_is_refused_as_torch(call):
    for lib in (torch, ml):
        x, out = _shifted_views(lib)
        with pytest.raises(RuntimeError, match=OVERLAP):
            call(lib, x, out)
    t, m = _both()  # the input itself as out is allowed (each element is read before it is written)
    assert call(ml, m, m) is m
    np.testing.assert_array_equal(m.numpy(), call(torch, t, t).numpy())


def test_a_product_into_one_of_its_operands_is_refused():
    """torch's mm(a, b, out=a) writes a while reading it (a silent wrong product); minilora refuses."""
    a = ml.tensor(VALUES[:, :3].copy())
    with pytest.raises(RuntimeError, match=OVERLAP):
        ml.mm(a, ml.eye(3) * 2, out=a)
    with pytest.raises(RuntimeError, match=OVERLAP):
        ml.matmul(a, ml.eye(3) * 2, out=a)


SECOND_NAMES = {
    "absolute": lambda x: (x - 0.5,), "arccos": lambda x: (x,), "arctanh": lambda x: (x,), "fix": lambda x: (x * 9,),
    "multiply": lambda x: (x, x), "subtract": lambda x: (x, x * 3), "divide": lambda x: (x, x + 1),
    "negative": lambda x: (x,), "greater": lambda x: (x, 0.5 - x), "less_equal": lambda x: (x, 0.5 - x),
    "not_equal": lambda x: (x, x.round()), "msort": lambda x: (x.flip(0),), "ger": lambda x: (x[0], x[1]),
    "row_stack": lambda x: ([x, x],), "t_copy": lambda x: (x,), "select_copy": lambda x: (x, 1, 2),
    "unsqueeze_copy": lambda x: (x, 1), "threshold": lambda x: (x, 0.3, -1.0), "hardshrink": lambda x: (x, 0.3),
    "frobenius_norm": lambda x: (x, (0, 1)),
}


@pytest.mark.parametrize("name", sorted(SECOND_NAMES))
def test_second_names_and_copy_twins_take_out(name):
    results = []
    for lib, x in zip((torch, ml), _both()):
        args = SECOND_NAMES[name](x)
        expected = getattr(lib, name)(*args)
        out = lib.zeros(expected.shape, dtype=expected.dtype)
        assert getattr(lib, name)(*args, out=out) is out
        results.append(out)
    np.testing.assert_array_equal(results[1].numpy(), results[0].numpy())


def test_second_names_keep_their_kernels_rules():
    """torch.absolute's out= is abs's: no wider out; msort's is sort's: the values out must be the input's dtype."""
    _, x = _both()
    with pytest.raises(RuntimeError, match="dtype"):
        ml.absolute(x, out=ml.zeros(3, 4, dtype=ml.float64))
    with pytest.raises(RuntimeError, match="Expected out tensor to have dtype float, but got double instead"):
        ml.msort(x, out=ml.zeros(3, 4, dtype=ml.float64))
    with pytest.raises(RuntimeError, match=r"^abs\(\): functions with out=\.\.\. arguments"):
        ml.absolute(x, out=ml.zeros(3, 4, requires_grad=True))


@pytest.mark.parametrize("call", [
    lambda lib, x: lib.sort(x, 1, out=(lib.zeros(3, 4, dtype=lib.float64), lib.zeros(3, 4, dtype=lib.int64))),
    lambda lib, x: lib.topk(x, 2, out=(lib.zeros(3, 2, dtype=lib.float64), lib.zeros(3, 2, dtype=lib.int64))),
    lambda lib, x: lib.kthvalue(x, 2, out=(lib.zeros(3, dtype=lib.float64), lib.zeros(3, dtype=lib.int64))),
    lambda lib, x: lib.cummax(x, 1, out=(lib.zeros(3, 4, dtype=lib.float64), lib.zeros(3, 4, dtype=lib.int64))),
    lambda lib, x: lib.quantile(x, 0.5, out=lib.zeros((), dtype=lib.float64)),
    lambda lib, x: lib.inner(x, x, out=lib.zeros(3, 3, dtype=lib.float64)),
    lambda lib, x: lib.float_power(x, 2, out=lib.zeros(3, 4)),
    lambda lib, x: lib.linalg.svdvals(x, out=lib.zeros(3, dtype=lib.float64)),
    lambda lib, x: lib.linalg.inv(x[:, :3], out=lib.zeros(3, 3, dtype=lib.float64)),
    lambda lib, x: lib.linalg.eigh(x[:, :3], out=(lib.zeros(3, dtype=lib.float64), lib.zeros(3, 3))),
], ids=["sort", "topk", "kthvalue", "cummax", "quantile", "inner", "float_power", "svdvals", "inv", "eigh"])
def test_kernels_that_refuse_another_out_dtype_refuse_it(call):
    """torch refuses these a wider (or narrower) out than their result; minilora wrote the cast values."""
    t, m = _both()
    with pytest.raises(RuntimeError) as theirs:
        call(torch, t)
    with pytest.raises(RuntimeError) as ours:
        call(ml, m)
    if str(theirs.value).startswith("Expected out tensor"):
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name, call", [
    ("linalg_inv_ex", lambda lib, a, out: lib.linalg.inv_ex(a, out=(out, lib.zeros((), dtype=lib.int32)))),
    ("linalg_vector_norm", lambda lib, a, out: lib.linalg.vector_norm(a, out=out[0, 0])),
    ("_linalg_det", lambda lib, a, out: lib.linalg.det(a, out=out[0, 0])),
])
def test_linalg_out_refusals_name_their_kernel(name, call):
    for lib in (torch, ml):
        a = lib.tensor(VALUES[:, :3] + np.eye(3, dtype=np.float32))
        out = lib.zeros(3, 3, requires_grad=True)
        with pytest.raises(RuntimeError, match=rf"^{name}\(\): functions with out="):
            call(lib, a, out)


@pytest.mark.parametrize("call", [
    lambda lib, x, out: lib.special.chebyshev_polynomial_t(x, 3, out=out),
    lambda lib, x, out: lib.special.hermite_polynomial_h(x, 2, out=out),
    lambda lib, x, out: lib.fft.ihfft(x, out=out),
    lambda lib, x, out: lib.fft.ihfft2(x, out=out),
], ids=["chebyshev_t", "hermite_h", "ihfft", "ihfft2"])
def test_polynomials_and_ihfft_resize_and_cast_their_out_as_every_op(call):
    outs = []
    for lib, x in zip((torch, ml), _both()):
        dtype = call(lib, x, None).dtype
        with pytest.warns(UserWarning, match="An output with one or more elements was resized"):
            out = call(lib, x, lib.zeros(2, dtype=dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            outs.append(call(lib, x, lib.zeros(0, dtype=dtype)))
        assert tuple(out.shape) == tuple(outs[-1].shape)
        with pytest.raises(RuntimeError, match="can't be cast to the desired output type Long|expects a complex "
                                               "output tensor"):
            call(lib, x, lib.zeros(tuple(out.shape), dtype=lib.int64))
    np.testing.assert_allclose(outs[1].numpy(), outs[0].resolve_conj().numpy(), rtol=1e-5, atol=1e-6)


def test_polynomials_write_into_an_out_that_requires_grad():
    """torch cannot differentiate the special polynomials: their out may require grad (it is written, no refusal)."""
    for lib, x in zip((torch, ml), _both()):
        out = lib.zeros(3, 4, requires_grad=True)
        assert lib.special.legendre_polynomial_p(x, 2, out=out) is out
        assert out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("call", [
    lambda lib, out: lib.linalg.inv(lib.eye(3) * 2, out=out),
    lambda lib, out: lib.linalg.qr(lib.eye(3) * 2, out=(out, lib.zeros(0))).Q,
    lambda lib, out: lib.exp(lib.ones(3, 4).t(), out=out),
    lambda lib, out: lib.add(lib.ones(2, 3, 4).permute(2, 0, 1), 1, out=out),
], ids=["linalg.inv", "linalg.qr", "exp-transposed", "add-permuted"])
def test_a_resized_out_is_laid_out_as_torchs_result(call):
    """torch restrides the out it resizes to the result's layout (linalg's column-major factors, an elementwise
    op's input order); minilora made it C-contiguous."""
    assert call(ml, ml.zeros(0)).stride() == call(torch, torch.zeros(0)).stride()


@pytest.mark.parametrize("call", [
    lambda lib, x: lib.clip(x, 0.2, 0.6, out=lib.zeros(3, 4)),
    lambda lib, x: lib.hstack([x, x], out=lib.zeros(3, 8)),
    lambda lib, x: lib.special.expit(x, out=lib.zeros(3, 4)),
    lambda lib, x: lib.special.i1e(x, out=lib.zeros(3, 4)),
    lambda lib, x: lib.outer(x[0], x[1], out=lib.zeros(4, 4)),
], ids=["clip", "hstack", "expit", "i1e", "outer"])
def test_out_refusals_name_the_kernel_torch_runs(call):
    """torch.clip(x, out=o) with x requiring grad is refused as clamp()'s out=, hstack's as cat()'s."""
    errors = []
    for lib, x in zip((torch, ml), _both()):
        with pytest.raises(RuntimeError, match="functions with out=") as caught:
            call(lib, x.requires_grad_())
        errors.append(str(caught.value))
    assert errors[1] == errors[0]


def test_stacking_refuses_an_out_dtype_in_cats_words():
    for lib, x in zip((torch, ml), _both()):
        with pytest.raises(TypeError, match=r"^torch\.cat\(\): input types can't be cast to the desired output type "
                                            r"Long$"):
            lib.vstack([x, x], out=lib.zeros(6, 4, dtype=lib.int64))


def test_chain_matmul_writes_through_a_transposed_out():
    """chain_matmul's out= resized and replaced out's memory (resize_ then copy_): its base never saw the product."""
    bases = []
    for lib in (torch, ml):
        base = lib.zeros(4, 3)
        a, b = lib.tensor(VALUES[:, :3].copy()), lib.tensor(VALUES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (its deprecation)
            assert lib.chain_matmul(a, b, out=base.t()).shape == (3, 4)
        bases.append(base)
    np.testing.assert_allclose(bases[1].numpy(), bases[0].numpy(), rtol=1e-6)
    assert bases[1].abs().sum().item() > 0


@pytest.mark.parametrize("call", [
    lambda lib, x, out: lib.angle(x, out=out),
    lambda lib, x, out: lib.conj_physical(x, out=out),
    lambda lib, x, out: lib.linalg.cross(x.view(4, 3), x.view(4, 3), out=out.view(4, 3)),
], ids=["angle", "conj_physical", "linalg.cross"])
def test_ops_writing_a_result_made_apart_refuse_an_overlapping_out_too(call):
    """angle, conj_physical and linalg.cross computed their result, then wrote it into out unchecked. (Dense
    views: torch's check gives up on others, where minilora's, exact, refuses all overlap.)"""
    for lib in (torch, ml):
        x, out = _shifted_views(lib)
        with pytest.raises(RuntimeError, match=OVERLAP):
            call(lib, x, out)


@pytest.mark.parametrize("call", [
    lambda lib: lib.fft.fftfreq(4, out=lib.zeros(4, dtype=lib.int64)),
    lambda lib: lib.fft.rfftfreq(4, dtype=lib.bool),
], ids=["fftfreq-out", "rfftfreq-dtype"])
def test_frequencies_refuse_an_integer_dtype(call):
    """torch.fft.fftfreq(4, out=long_tensor) is refused; minilora wrote zeros (every frequency rounded)."""
    for lib in (torch, ml):
        with pytest.raises(RuntimeError, match="fftfreq requires a floating point or complex dtype"):
            call(lib)


@pytest.mark.parametrize("call", [
    lambda lib, x, dtype: lib.abs(x, out=lib.zeros(3, 4, dtype=dtype)),
    lambda lib, x, dtype: lib.dot(x[0], x[1], out=lib.zeros((), dtype=dtype)),
    lambda lib, x, dtype: lib.all(x, out=lib.zeros((), dtype=dtype)),
    lambda lib, x, dtype: lib.cummax(x, 1, out=(lib.zeros(3, 4, dtype=dtype), lib.zeros(3, 4, dtype=lib.int64))),
    lambda lib, x, dtype: lib.take(x, lib.tensor([0, 5]), out=lib.zeros(2, dtype=dtype)),
    lambda lib, x, dtype: lib.where(x > 0.5, x, x * 0, out=lib.zeros(3, 4, dtype=dtype)),
], ids=["abs", "dot", "all", "cummax", "take", "where"])
def test_a_refused_out_dtype_in_the_kernels_own_words(call):
    errors = []
    for lib, x in zip((torch, ml), _both()):
        with pytest.raises(RuntimeError) as caught:
            call(lib, x, lib.float64)
        errors.append(str(caught.value))
    assert errors[1] == errors[0]
