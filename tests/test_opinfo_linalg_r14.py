"""torch's OpInfo database (op_db) for linalg.*, fft.*, special.*, signal.windows.* and the top-level
decompositions, run through minilora the way torch's own tests call them (tests/torch_db.py carries a call over).

Each OpInfo's first samples (seeded) are called in float64 (with a backward: a fixed cotangent on every output),
float32, complex128 where torch takes it, and an integer dtype where it does; its error inputs must be refused.
Every OpInfo is compared, or listed in ``REFUSED`` (minilora refuses it, and the test checks that it does and how).

How closely: float64 to 1e-12 relative to the largest element (LAPACK under NumPy is OpenBLAS, torch's is MKL:
the same algorithms, other roundings); float32 to 1e-5 (the same, and torch's FFTs are MKL's, its float32
sin/cos/exp SLEEF's, a few ulp from NumPy's); integers and bools exactly. Decompositions are unique up to a sign
(a phase) per vector: MKL and OpenBLAS choose differently for eigh of n <= 25 (LAPACK's small-matrix path) and for
wide SVDs (the LQ path), and minilora keeps LAPACK's choice rather than invent a rule MKL does not document. So
their vectors are compared after aligning each column's sign to torch's, and their gradients through a loss that
does not see the signs (projectors, singular values, eigenvalues).
"""
import itertools
import warnings

import numpy as np
import pytest

from torch_db import as_numpy, call_with, resolve, to_minilora, torch

import minilora as ml

op_db = pytest.importorskip("torch.testing._internal.common_methods_invocations").op_db

TOP_LEVEL = {"cholesky", "cholesky_inverse", "cholesky_solve", "lu", "lu_solve", "lu_unpack", "qr", "svd",
             "svd_lowrank", "pca_lowrank", "pinverse", "matrix_exp", "logdet", "triangular_solve", "geqrf", "ormqr",
             "stft", "istft"}
OPINFOS = [op for op in op_db if op.name.split(".")[0] in ("linalg", "fft", "special", "signal")
           or op.name in TOP_LEVEL]
SAMPLES = 3  # per dtype: the first few (torch's samples start with the plain cases, then batches and keywords)

# OpInfos minilora does not run: each is refused, by a missing name (an AttributeError, as for any name minilora
# lacks) or by name when called: {name: (exception, why)}
REFUSED = {}
# dtypes minilora may refuse for an OpInfo torch runs in them: {name: (dtypes, exception, words in the message)}
# (a sample either equals torch's answer or is refused so; e.g. matrix_power's positive powers of a complex
# matrix are products and run, its negative ones need an inverse and are refused)
_NO_COMPLEX = ({torch.complex128, torch.complex64}, NotImplementedError, "minilora has no complex linear algebra")
COMPLEX_REFUSED = {name: _NO_COMPLEX for name in (
    "cholesky cholesky_inverse cholesky_solve lu lu_solve qr svd svd_lowrank pca_lowrank pinverse "
    "matrix_exp logdet triangular_solve geqrf ormqr linalg.det linalg.cholesky linalg.cholesky_ex linalg.cond "
    "linalg.eig linalg.eigvals linalg.eigh linalg.eigvalsh linalg.householder_product linalg.ldl_factor "
    "linalg.ldl_factor_ex linalg.ldl_solve linalg.lstsq linalg.matrix_power linalg.matrix_norm linalg.norm "
    "linalg.qr linalg.slogdet linalg.lu_factor linalg.lu_factor_ex linalg.lu linalg.lu_solve linalg.inv "
    "linalg.inv_ex linalg.solve linalg.solve_ex linalg.solve_triangular linalg.matrix_rank linalg.pinv "
    "linalg.svd linalg.svdvals linalg.tensorinv linalg.tensorsolve").split()}
# ops whose results are only unique up to a sign per vector: {name: indices of the vector outputs}
GAUGED = {"svd": (0, 2), "linalg.svd": (0, 2), "linalg.eigh": (1,), "linalg.eig": (1,), "svd_lowrank": (0, 2),
          "pca_lowrank": (0, 2)}


def _id(op):
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def _minilora_op(op, lib=ml):
    """minilora's counterpart of ``op.op``, with the database's own wrappers where it has one."""
    if op.name in ("svd_lowrank", "pca_lowrank"):  # torch's samples are factors: the op runs on a @ b.mT, seeded
        low_rank = getattr(lib, op.name)
        return lambda a, b, **kw: (lib.manual_seed(0), low_rank(a @ b.mT, **kw))[1]
    if op.name == "linalg.lstsq" and op.variant_test_name == "grad_oriented":
        return lambda a, b, driver: lib.linalg.lstsq(a, b, driver=driver)[:2]
    if op.name == "linalg.pinv" and op.variant_test_name == "singular":
        return lambda a, b: lib.linalg.pinv(a @ b.mT)
    if op.name == "special.polygamma":
        return lambda x, n, **kw: lib.special.polygamma(n, x, **kw)
    return resolve(lib, op.name)


def _torch_op(op):
    return _minilora_op(op, torch) if op.name in ("svd_lowrank", "pca_lowrank") else op.op


def _samples(op, dtype, requires_grad=False):
    """The OpInfo's first samples, from its own generator function (``op.sample_inputs`` wraps them in a tracker
    whose set-up walks the stack: most of this file's time), seeded: torch's samples draw from the global one."""
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(itertools.islice(op.sample_inputs_func(op, "cpu", dtype, requires_grad), SAMPLES))


def _outputs(value):
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _align_signs(mine, theirs):
    """``mine`` with each column multiplied by the unit (sign or phase) that brings it closest to torch's."""
    inner = (np.conj(mine) * theirs).sum(-2, keepdims=True)
    unit = np.where(np.abs(inner) > 0, inner / np.where(np.abs(inner) > 0, np.abs(inner), 1), 1)
    return mine * unit, unit


def _close(mine, theirs, what, dtype):
    """torch's answer, to the tolerance of the module docstring."""
    ours, expected = as_numpy(mine), as_numpy(theirs)
    assert type(ours) is type(expected) or np.ndim(expected) == 0, f"{what}: {type(ours)} vs {type(expected)}"
    if isinstance(theirs, torch.Tensor):
        assert str(mine.dtype).removeprefix("torch.") == str(theirs.dtype).removeprefix("torch."), what
    assert np.shape(ours) == np.shape(expected), f"{what}: shape {np.shape(ours)}, torch's {np.shape(expected)}"
    expected = np.asarray(expected)
    if expected.dtype.kind in "biu" or expected.size == 0:
        np.testing.assert_array_equal(ours, expected, err_msg=what)
        return
    finite = np.isfinite(expected)
    scale = max(np.abs(expected[finite]).max(initial=0.0), 1.0)
    rtol = 1e-12 if dtype in (torch.float64, torch.complex128) else 1e-5
    np.testing.assert_allclose(ours, expected, rtol=0, atol=rtol * scale, equal_nan=True, err_msg=what)


def _compare(name, mine, theirs, dtype, what):
    mine, theirs = _outputs(mine), _outputs(theirs)
    assert len(mine) == len(theirs), f"{what}: {len(mine)} outputs, torch's {len(theirs)}"
    gauged = GAUGED.get(name, ())
    units = None
    for index, (ours, expected) in enumerate(zip(mine, theirs)):
        if index in gauged and isinstance(expected, torch.Tensor) and expected.numel():
            ours_np, expected_np = as_numpy(ours), as_numpy(expected)
            if name in ("linalg.svd",) and index == 2:  # Vh: rows are the vectors, aligned as U's columns
                ours_np, expected_np = np.swapaxes(ours_np, -1, -2), np.swapaxes(expected_np, -1, -2)
            aligned, unit = _align_signs(ours_np, expected_np)
            if units is not None and unit.shape == units.shape:  # (U and V share each singular triplet's sign)
                np.testing.assert_allclose(np.abs(unit - units), 0, atol=1e-6, err_msg=f"{what}[{index}]: signs")
            units = unit
            _close(ml.tensor(aligned), expected_np if expected_np.dtype == aligned.dtype else expected_np,
                   f"{what}[{index}] (signs aligned)", dtype)
        else:
            _close(ours, expected, f"{what}[{index}]", dtype)


def _gauge_free(name, outputs, lib):
    """The outputs a loss may see whatever the vectors' signs: projectors instead of the vectors themselves."""
    if name not in GAUGED:
        return outputs
    result = []
    for index, t in enumerate(outputs):
        if index in GAUGED[name] and isinstance(t, lib.Tensor):
            vectors = t.mT if name == "linalg.svd" and index == 2 else t
            if vectors.is_complex():
                vectors = lib.view_as_real(vectors).select(-1, 0)  # (eig: only the real part's projector)
            result.append(vectors @ vectors.mT)
        else:
            result.append(t)
    return result


def _backward(op, lib, sample, convert):
    """Input gradients of sum(output * fixed cotangent) over the outputs (their gauge-free forms)."""
    inputs = convert(sample.input), convert(tuple(sample.args)), convert(dict(sample.kwargs))
    outputs = _outputs((_torch_op(op) if lib is torch else _minilora_op(op))(inputs[0], *inputs[1], **inputs[2]))
    generator = np.random.RandomState(7)
    loss = 0
    for t in _gauge_free(op.name, outputs, lib):
        if isinstance(t, lib.Tensor) and t.requires_grad and t.dtype == lib.float64:
            loss = loss + (t * lib.tensor(generator.standard_normal(tuple(t.shape)))).sum()
    leaves = [t for t in (inputs[0], *inputs[1]) if isinstance(t, lib.Tensor) and t.requires_grad]
    if not isinstance(loss, lib.Tensor) or not leaves:
        return None
    return lib.autograd.grad(loss, leaves, allow_unused=True)


@pytest.mark.parametrize("op", OPINFOS, ids=_id)
def test_opinfo_matches_torch_or_is_refused(op):
    name = op.name
    if name in REFUSED:
        with pytest.raises(REFUSED[name][0], match=name.rsplit(".", 1)[-1]):
            function = getattr(resolve(ml, name.rsplit(".", 1)[0]) if "." in name else ml, name.rsplit(".", 1)[-1])
            call_with(function, _samples(op, torch.complex128)[0], to_minilora)
        return
    ml_fn = _minilora_op(op)
    assert ml_fn is not None, f"minilora lacks {name}"
    supported = op.supported_dtypes("cpu")
    dtypes_to_run = [d for d in (torch.float64, torch.float32, torch.complex128, torch.int64) if d in supported]
    for dtype in dtypes_to_run:
        refused = COMPLEX_REFUSED.get(name)
        for number, sample in enumerate(_samples(op, dtype)):
            what = f"{_id(op)} {dtype} sample {number}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs = call_with(_torch_op(op), sample)
            except RuntimeError:  # (a sample torch itself refuses: minilora must refuse it too)
                with pytest.raises(Exception):
                    call_with(ml_fn, sample, to_minilora)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    mine = call_with(ml_fn, sample, to_minilora)
                except Exception as error:  # (only the stated refusal, for the stated dtypes)
                    if not (refused and dtype in refused[0] and isinstance(error, refused[1])
                            and refused[2] in str(error)):
                        raise
                    continue
            _compare(name, mine, theirs, dtype, what)


BACKWARD = [op for op in OPINFOS if op.supports_autograd and op.name not in REFUSED]


@pytest.mark.parametrize("op", BACKWARD, ids=_id)
def test_opinfo_float64_gradients(op):
    for number, sample in enumerate(_samples(op, torch.float64, requires_grad=True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                theirs = _backward(op, torch, sample, lambda value: value)
            except RuntimeError:
                continue  # (torch refuses this sample's backward: the forward test covers the refusal)
            mine = _backward(op, ml, sample, to_minilora)
        if theirs is None:
            continue
        assert mine is not None, f"{_id(op)} sample {number}: no gradient"
        for index, (ours, expected) in enumerate(zip(mine, theirs)):
            if expected is None:
                assert ours is None, f"{_id(op)} sample {number}: gradient {index} should be None, as torch's"
            else:
                _close(ours, expected, f"{_id(op)} sample {number} gradient {index}", torch.float64)


ERRORS = [op for op in OPINFOS if op.name not in REFUSED]


@pytest.mark.parametrize("op", ERRORS, ids=_id)
def test_opinfo_error_inputs_are_refused(op):
    """torch's error inputs: minilora refuses each (never a silent answer), in torch's words where the database
    names them."""
    if op.error_inputs_func is None:  # (no error inputs written for this OpInfo)
        return
    torch.manual_seed(1)
    error_inputs = list(op.error_inputs_func(op, "cpu"))
    for error in error_inputs:
        with pytest.raises(Exception) as refused:
            call_with(_minilora_op(op), error.sample_input, to_minilora)
        if op.name.startswith(("linalg", "ormqr", "fft")) and error.error_regex:
            assert error.error_type is None or isinstance(refused.value, error.error_type), str(refused.value)
            assert pytest.importorskip("re").search(error.error_regex, str(refused.value)), str(refused.value)


# ---- what the database's samples do not reach ------------------------------------------------------------
_SINGULAR = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 4.0]]])  # the second matrix singular
_NOT_PD = np.array([[1.0, 2.0], [2.0, 1.0]])


@pytest.mark.parametrize("call", [
    lambda L: L.linalg.inv(L.tensor(_SINGULAR)), lambda L: L.linalg.inv(L.tensor(_SINGULAR[1])),
    lambda L: L.inverse(L.tensor(_SINGULAR)), lambda L: L.linalg.inv_ex(L.tensor(_SINGULAR), check_errors=True),
    lambda L: L.linalg.matrix_power(L.tensor(_SINGULAR[1]), -1),
    lambda L: L.linalg.solve(L.tensor(_SINGULAR), L.ones(2, 2, 1, dtype=L.float64)),
    lambda L: L.linalg.solve_ex(L.tensor(_SINGULAR), L.ones(2, 2, 1, dtype=L.float64), check_errors=True),
    lambda L: L.linalg.cholesky(L.tensor(np.stack([np.eye(2), _NOT_PD]))), lambda L: L.cholesky(L.tensor(_NOT_PD)),
    lambda L: L.linalg.svd(L.tensor([[np.nan, 0.0], [0.0, 1.0]])),
    lambda L: L.linalg.svdvals(L.tensor([[1.0, 0.0], [0.0, np.nan]])),
    lambda L: L.special.zeta(2, 3), lambda L: L.special.xlog1py(2, 3),
], ids=["inv batch", "inv", "inverse", "inv_ex", "matrix_power", "solve", "solve_ex", "cholesky batch",
        "torch.cholesky", "svd nan", "svdvals nan", "zeta numbers", "xlog1py numbers"])
def test_refusals_in_torchs_words(call):
    """A singular or indefinite matrix names the matrix of the batch and LAPACK's pivot or minor (1-based), as
    torch's messages; NumPy's "SVD did not converge" becomes torch's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as theirs:
            call(torch)
        with pytest.raises(type(theirs.value).__mro__[1] if type(theirs.value).__name__ == "_LinAlgError"
                           else type(theirs.value)) as mine:
            call(ml)
    assert str(mine.value) == str(theirs.value)


def test_gradients_torch_leaves_undefined():
    """vector_norm(ord=0) and a Householder product of no reflectors: results in the graph whose inputs get
    no gradient (None), as torch's -- before, zeros, and an error that the result did not require grad."""
    for lib in (torch, ml):
        x = lib.tensor([1.0, 0.0, 2.0], dtype=lib.float64, requires_grad=True)
        assert lib.autograd.grad(lib.linalg.vector_norm(x, 0), x, allow_unused=True) == (None,)
        A, tau = lib.zeros(3, 2, requires_grad=True), lib.zeros(0, requires_grad=True)
        Q = lib.linalg.householder_product(A, tau)
        assert Q.requires_grad and lib.autograd.grad(Q.sum(), (A, tau), allow_unused=True) == (None, None)


def test_vander_and_svd_lowrank_as_torch():
    """torch.vander's and linalg.vander's powers are torch's cumprod, kept in float64 (complex128) for float32 (complex64) inputs:
    torch's bits (and complex64 cumsum/cumprod's); a seeded svd_lowrank draws torch's start and finds torch's singular values and subspace."""
    x = torch.randn(64) * 3
    for dtype in (torch.float32, torch.complex64):
        expected = torch.linalg.vander(x.to(dtype), N=6)
        np.testing.assert_array_equal(ml.linalg.vander(to_minilora(x.to(dtype)), N=6).numpy(), expected.numpy())
        np.testing.assert_array_equal(ml.vander(to_minilora(x.to(dtype)), N=6).numpy(), torch.vander(x.to(dtype), N=6))
    z = torch.randn(40, 8, dtype=torch.complex64)  # (torch's running sums and products: complex128 inside)
    for name in ("cumsum", "cumprod"):
        np.testing.assert_array_equal(getattr(ml, name)(to_minilora(z), 0).numpy(), getattr(torch, name)(z, 0).numpy())
    A = torch.randn(12, 30, dtype=torch.float64)
    torch.manual_seed(3)
    U, S, V = torch.svd_lowrank(A, q=4)
    ml.manual_seed(3)
    u, s, v = ml.svd_lowrank(to_minilora(A), q=4)
    np.testing.assert_allclose(s.numpy(), S.numpy(), rtol=1e-12)
    np.testing.assert_allclose((u @ ml.diag(s) @ v.mT).numpy(), (U @ torch.diag(S) @ V.mT).numpy(), atol=1e-12)


@pytest.mark.parametrize("name", ["hann_window", "hamming_window", "bartlett_window", "blackman_window",
                                  "kaiser_window"])
def test_stft_window_factories(name):
    """torch's window factories (stft's windows): ATen's own composition, periodic and symmetric; float64 to the
    last bits, float32 within a float32 step (minilora's float32 cos and i0 are not SLEEF's)."""
    for length, periodic, dtype in itertools.product((0, 1, 2, 7, 16), (True, False), (torch.float64, torch.float32)):
        expected = getattr(torch, name)(length, periodic, dtype=dtype)
        _close(getattr(ml, name)(length, periodic, dtype=to_minilora(dtype)), expected, f"{name}({length})", dtype)
    with pytest.raises(RuntimeError, match=f"{name} expects floating point dtypes"):
        getattr(ml, name)(4, dtype=ml.int64)
