"""CuPy's ElementwiseKernel and ReductionKernel on the emulator (minilora.emulator_kernels), checked against
NumPy on ragged shapes and on the examples of CuPy's user guide (squared_diff, the type-generic kernels, the
raw-argument add_reverse, l2norm), and for CuPy's errors on wrong calls.  Each kernel is defined once at
module level and called on many shapes: the number of dimensions is a run-time value in the generated code,
so only a new combination of dtypes compiles again (the emulator's cache keeps the libraries)."""
from __future__ import annotations

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import ElementwiseKernel, KernelFault, ReductionKernel

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(94)

squared_diff = ElementwiseKernel("float32 x, float32 y", "float32 z", "z = (x - y) * (x - y)", "squared_diff")
# The user guide's type-generic kernel: T is also a type name inside the body.
GENERIC_BODY = "T diff = x - y; z = diff * diff;"
squared_diff_generic = ElementwiseKernel("T x, T y", "T z", GENERIC_BODY, "squared_diff_generic")
squared_diff_super_generic = ElementwiseKernel("X x, Y y", "Z z", "z = (x - y) * (x - y)",
                                               "squared_diff_super_generic")
add_reverse = ElementwiseKernel("T x, raw T y", "T z", "z = x + y[_ind.size() - i - 1]", "add_reverse")
# Two outputs, a template from the preamble, loop_prep and after_loop, return_tuple.
cube_and_count = ElementwiseKernel(
    "T x, T scale", "T c, raw int32 seen",
    "c = cube(x) * scale; atomicAdd(&seen[0], one)", "cube_and_count",
    preamble="template <typename U> __device__ U cube(U v) { return v * v * v; }",
    loop_prep="const int one = 1", after_loop="if (threadIdx.x == 0) atomicAdd(&seen[1], 1)", return_tuple=True)
l2norm = ReductionKernel("T x", "T y", "x * x", "a + b", "y = sqrt(a)", "0", "l2norm")
weighted_sum = ReductionKernel("T x, T w", "T y", "x * w", "a + b", "y = a", "0", "weighted_sum")


def ragged(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------------------------------
# ElementwiseKernel
# ------------------------------------------------------------------------------------------------
def test_user_guide_squared_diff_broadcasts_arrays_and_scalars():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    y = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(squared_diff(x, y), [[0] * 5, [25] * 5])
    np.testing.assert_array_equal(squared_diff(x, 5), (x - 5) ** 2)
    assert 'extern "C" __global__ void squared_diff(' in squared_diff.cached_code  # CuPy's debugging view
    assert "z = (x - y) * (x - y)" in squared_diff.cached_code
    z = np.empty((2, 5), dtype=np.float32)
    assert squared_diff(x, y, z) is z  # the given output is filled and returned
    np.testing.assert_array_equal(z, (x - y) ** 2)
    # Ragged shapes, broadcasting in both directions, a transposed input and a strided output.
    for xs, ys in [((3, 1, 7), (5, 1)), ((1,), (13,)), ((4, 3, 2, 5), (3, 1, 5)), ((), (6,)), ((129,), ())]:
        a, b = ragged(*xs), ragged(*ys)
        got = squared_diff(a, b)
        assert got.shape == np.broadcast_shapes(xs, ys) and got.dtype == np.float32
        np.testing.assert_allclose(got, (a - b) ** 2, rtol=1e-6)
    a, b = ragged(7, 4), ragged(4, 7)
    out = np.zeros((4, 14), np.float32)
    squared_diff(a.T, b, out[:, ::2])
    np.testing.assert_allclose(out[:, ::2], (a.T - b) ** 2, rtol=1e-6)
    assert (out[:, 1::2] == 0).all()
    assert squared_diff(np.empty((0, 3), np.float32), 1.0).shape == (0, 3)


def test_type_placeholders_are_decided_by_the_arguments():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    y = np.arange(5, dtype=np.float32)
    got = squared_diff_generic(x, y)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (x - y) ** 2)
    i = rng.integers(-50, 50, (3, 4, 5)).astype(np.int32)
    got = squared_diff_generic(i, np.int32(7))  # a scalar takes the type T of the array
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, (i - 7) ** 2)
    z = np.empty((2, 5), dtype=np.int16)  # Z comes from the given output
    got = squared_diff_super_generic(x, y, z)
    assert got is z
    np.testing.assert_array_equal(z, ((x - y) ** 2).astype(np.int16))


def test_raw_argument_sees_the_whole_array():
    x = ragged(2, 5)
    y = ragged(10)
    np.testing.assert_allclose(add_reverse(x, y), x + y[::-1].reshape(2, 5), rtol=1e-6)
    y3 = ragged(5, 1, 2)  # a raw argument keeps its own shape: y[k] is its k-th element in C order
    np.testing.assert_allclose(add_reverse(x, y3), x + y3.ravel()[::-1].reshape(2, 5), rtol=1e-6)


def test_size_loop_with_only_raw_arrays_and_several_outputs():
    reverse = ElementwiseKernel("raw T x", "raw T y", "y[i] = x[x.size() - 1 - i]", "reverse_raw")
    x = ragged(3, 7)
    got = reverse(x, size=x.size)
    assert got.shape == (21,)
    np.testing.assert_array_equal(got, x.ravel()[::-1])
    with pytest.raises(ValueError, match="Loop size is undecided"):
        reverse(x)
    with pytest.raises(TypeError, match="size must be a non-negative int"):
        reverse(x, size=2.5)
    with pytest.raises(ValueError, match="Output array size is Undecided"):
        ElementwiseKernel("T x", "raw T y", "y[i] = x", "k")(x)
    with pytest.raises(ValueError, match="'size' can be used only if all of the ndarray are 'raw'"):
        squared_diff(x, x, size=3)
    x = ragged(4, 33)
    seen = np.zeros(2, np.int32)
    c, s = cube_and_count(x, 0.5, np.empty_like(x), seen)
    np.testing.assert_allclose(c, x ** 3 * 0.5, rtol=1e-5)
    # loop_prep's constant counted every element; after_loop ran once per block (132 elements: 2 blocks of 128)
    assert s is seen and seen[0] == x.size and seen[1] == 2
    assert isinstance(cube_and_count(x, 2, np.empty_like(x), seen), tuple)
    # The same generated source as squared_diff_generic's: no new compile.
    no_return = ElementwiseKernel("T x, T y", "T z", GENERIC_BODY, "squared_diff_generic", no_return=True)
    out = np.empty_like(x)
    assert no_return(x, 1, out) is None
    np.testing.assert_array_equal(out, (x - 1) ** 2)


def test_elementwise_errors_are_cupys():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    with pytest.raises(TypeError, match=r"Wrong number of arguments for 'squared_diff'. It must be either 2 or 3 "
                                        r"\(with outputs\), but given 1"):
        squared_diff(x)
    with pytest.raises(TypeError, match="Type is mismatched"):
        squared_diff_generic(x, x.astype(np.float64))
    with pytest.raises(TypeError, match="Type is mismatched"):
        squared_diff(x.astype(np.float64), x)
    with pytest.raises(TypeError, match="Type is mismatched"):
        squared_diff(x, x, np.empty((2, 5), np.int32))
    with pytest.raises(ValueError, match="could not be broadcast together with shapes"):
        squared_diff(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="Out shape is mismatched"):
        squared_diff(x, x, np.empty(5, np.float32))
    with pytest.raises(TypeError, match="cannot decide the type Z"):
        squared_diff_super_generic(x, x)
    with pytest.raises(TypeError, match="Wrong arguments"):
        squared_diff(x, x, axis=0)
    with pytest.raises(ValueError, match="Can not use 'i' as a parameter name"):
        ElementwiseKernel("T i", "T y", "y = i", "k")
    with pytest.raises(ValueError, match="Invalid kernel name"):
        ElementwiseKernel("T x", "T y", "y = x", "my kernel")
    with pytest.raises(TypeError):
        ElementwiseKernel("flaot32 x", "T y", "y = x", "k")
    # (complex64 / complex128 run since round 31, as CuPy's complex<float> / complex<double>; CuPy has no 80-bit one)
    with pytest.raises(TypeError, match="dtype complex256 is not supported"):
        squared_diff_generic(x.astype(np.clongdouble), x.astype(np.clongdouble))
    with pytest.raises(TypeError, match="Output arguments must be"):
        squared_diff(x, x, 3.0)
    with pytest.raises(TypeError, match="must be a NumPy array or a scalar, got list"):
        squared_diff(x, [1.0, 2.0])
    with pytest.raises(TypeError, match="must be a NumPy array or a scalar, got str_"):
        squared_diff(x, np.str_("2"))
    with pytest.raises(Exception, match="Syntax error"):
        ElementwiseKernel("T x,", "T y", "y = x", "k")
    with pytest.raises(Exception, match='Unknown keyword "const"'):
        ElementwiseKernel("const T x", "T y", "y = x", "k")


def test_the_operation_runs_under_the_emulators_checks():
    positive = ElementwiseKernel("T x", "T y", "assert(x >= 0); y = x", "checked_copy")
    np.testing.assert_array_equal(positive(np.arange(5.0)), np.arange(5.0))
    with pytest.raises(KernelFault, match="checked_copy"):
        positive(np.array([1.0, -1.0]))


# ------------------------------------------------------------------------------------------------
# ReductionKernel
# ------------------------------------------------------------------------------------------------
def test_user_guide_l2norm_along_axes():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_allclose(l2norm(x, axis=1), np.sqrt((x * x).sum(axis=1)), rtol=1e-6)
    a = ragged(3, 4, 5)
    for axis in [None, 0, 1, 2, -1, (0, 2), (2, 0), (0, 1, 2)]:
        for keepdims in (False, True):
            got = l2norm(a, axis=axis, keepdims=keepdims)
            want = np.sqrt((a * a).sum(axis=axis, keepdims=keepdims))
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-5)
    big = ragged(700)  # more elements than threads: each thread folds several before the tree
    np.testing.assert_allclose(l2norm(big), np.linalg.norm(big), rtol=1e-5)
    out = np.empty(4, np.float32)
    assert l2norm(a, axis=(0, 2), out=out) is out
    np.testing.assert_allclose(out, np.sqrt((a * a).sum(axis=(0, 2))), rtol=1e-5)
    assert l2norm(np.empty((0, 3), np.float32), axis=0).tolist() == [0.0, 0.0, 0.0]  # post_map of the identity
    assert l2norm(np.array(-3, np.float32)) == 3 and l2norm(np.array(-3, np.float32)).shape == ()
    np.testing.assert_allclose(l2norm(a, axis=()), np.abs(a), rtol=1e-6)  # nothing reduced
    tall = ragged(300, 7)  # more outputs than blocks: each block takes several
    np.testing.assert_allclose(l2norm(tall, axis=1), np.linalg.norm(tall, axis=1), rtol=1e-5)


def test_reduction_broadcasts_inputs_and_takes_scalars():
    x, w = ragged(6, 1, 5), ragged(4, 1)
    for axis in [None, 0, (1, 2)]:
        np.testing.assert_allclose(weighted_sum(x, w, axis=axis), (x * w).sum(axis=axis), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weighted_sum(x, 2, axis=2), 2 * x.sum(axis=2), rtol=1e-5, atol=1e-5)


def test_reduction_indices():
    # _j: the flat index of the mapped element, reduced axes first; _J: its place within its reduction.
    # _i: the output's flat index.  Several outputs (post_map_expr is one expression, as in CuPy: a comma
    # between the assignments); the first output is returned, as CuPy does.
    flat = ReductionKernel("T x", "int64 y, int64 n", "_j + 1000 * _J", "a + b", "y = a, n = _i", "0",
                           "index_sum", reduce_type="long long")
    x = np.zeros((4, 3, 5), np.float32)
    out_size, reduce_size = 4 * 5, 3
    want = sum(r * out_size + 1000 * r for r in range(reduce_size)) + reduce_size * np.arange(out_size)
    y = flat(x, axis=1)
    np.testing.assert_array_equal(y, want.reshape(4, 5))
    y, n = np.empty((4, 5), np.int64), np.empty((4, 5), np.int64)
    assert flat(x, y, n, axis=1) is y
    np.testing.assert_array_equal(n, np.arange(out_size).reshape(4, 5))


def test_reduction_errors_are_cupys():
    x = ragged(2, 5)
    with pytest.raises(TypeError, match="Wrong number of arguments for l2norm"):
        l2norm()
    with pytest.raises(TypeError, match="Type is mismatched"):
        weighted_sum(x, x.astype(np.float64))
    with pytest.raises(ValueError, match="could not be broadcast together"):
        weighted_sum(x, ragged(3))
    with pytest.raises(np.exceptions.AxisError):
        l2norm(x, axis=2)
    with pytest.raises(ValueError, match="Out shape is mismatched"):
        l2norm(x, axis=1, out=np.empty(5, np.float32))
    with pytest.raises(ValueError, match="cannot specify 'out' as both a positional and keyword argument"):
        l2norm(x, np.empty(2, np.float32), out=np.empty(2, np.float32))
    no_identity = ReductionKernel("T x", "T y", "x", "max(a, b)", "y = a", None, "no_identity_max")
    with pytest.raises(ValueError, match="zero-size array to reduction operation no_identity_max which has no "
                                         "identity"):
        no_identity(np.empty(0, np.float32))
    with pytest.raises(ValueError, match="Loop size is undecided"):
        l2norm(3.0)
    raw_sum = ReductionKernel("raw T x, T y", "T z", "x[_j]", "a + b", "z = a", "0", "raw_sum")
    # _j walks the reduced axes first: reducing axis 0 of a (2, 5) array, that is x's own C order ...
    np.testing.assert_allclose(raw_sum(x, x, axis=0), x.sum(axis=0), rtol=1e-6)
    with pytest.raises(NotImplementedError, match="Illegal conditions"):
        raw_sum(x, x, axis=1)  # ... but not for axis 1: that needs a transposed view, which a raw x cannot follow
    with pytest.raises(np.exceptions.AxisError):
        l2norm(x, axis=-3)
    with pytest.raises(ValueError, match="duplicate value in 'axis'"):
        l2norm(x, axis=(1, -1))
