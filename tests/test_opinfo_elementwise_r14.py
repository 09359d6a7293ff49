"""torch's OpInfo database (op_db) run through minilora: the elementwise ops.

Every UnaryUfuncInfo and BinaryUfuncInfo (the ufuncs, the __r*__ operators, the dtype conversions, polygamma, i0,
...; torch.special's are tests/test_opinfo_linalg_r14.py's) and the pointwise OpInfos among the rest (addcdiv,
addcmul, clamp, lerp, where, masked_fill, isin, bucketize, ...): the first samples torch's own developers wrote for
each dtype, in each variant the OpInfo has (function, method, in-place, and ``out=`` where it supports it), with the
arguments spelled as torch's database spells them. minilora answers where torch answers, refuses where torch
refuses; its answer has torch's structure, shape and dtype, and its values are torch's bits (float32, bfloat16,
integers, bool) or within 1e-13 (float64), except where a dict below states why not. float64 gradients (a fixed
random cotangent) agree too, and each of the database's error inputs is refused. Type promotion itself
(torch.result_type, a Python number or a 0-d tensor against tensors of every dtype, in-place results that cannot be
cast back) has its own tests. OpInfos minilora does not implement are in REFUSED: the test checks that they are
refused by name.
"""
import functools
import itertools
import types

import numpy as np
import pytest

from torch_db import (as_numpy, assert_same, dtype_name, error_inputs, ml, resolve, sample_inputs,
                      to_minilora, torch)

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.opinfo.core import BinaryUfuncInfo, UnaryUfuncInfo  # noqa: E402

POINTWISE = set("""addcdiv addcmul clamp clamp_min clamp_max clip lerp where masked_fill logaddexp2 float_power
xlogy nan_to_num heaviside copysign frexp ldexp isin bucketize fill""".split())
OPINFOS = [op for op in op_db if (isinstance(op, (UnaryUfuncInfo, BinaryUfuncInfo)) or op.name in POINTWISE
                                  or op.name.startswith("__r")) and op.name != "__rmatmul__"
           and not op.name.startswith("special.")]
# (__rmatmul__ is a matrix product: tests/test_opinfo_reductions_r14.py; torch.special's OpInfos are
# tests/test_opinfo_linalg_r14.py's)


def key(op):
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


# OpInfos minilora does not implement: each is refused by name (an AttributeError naming it)
REFUSED = {
    "chalf": "complex32 (ComplexHalf): torch's own support is experimental; minilora has no such dtype",
}
# torch.cuda.jiterator's ops: CUDA kernels compiled from a C++ string at run time, never run on a CPU
CUDA_ONLY = {"jiterator_unary", "jiterator_binary", "jiterator_binary_return_by_ref"}

# float32 (and bfloat16, integer -> float32) results that are not torch's bits, with the largest distance seen,
# in units in the last place of torch's result (bfloat16: of bfloat16), and the reason
_VML = ("torch's float32 kernel is Intel MKL's vector math (closed code, not correctly rounded in 0.1-18% of the "
        "elements); minilora computes in float64 and rounds once (float32_math.vml)")
_SLEEF = "torch's SLEEF / ATen float32 formula is not ported; minilora rounds the float64 result once"
_CEPHES = "torch's float32 Cephes port (float32 steps) is not reproduced; minilora rounds the float64 result once"
ULPS = {
    **dict.fromkeys("sin cos tan asin acos atan sinh cosh atanh sqrt erf erfc erfinv log log2 log10".split(),
                    (1, _VML)),
    "tanh": (1, "the one element of a 20-element row: torch's scalar tail calls glibc's tanhf, taken as correctly "
                "rounded (float32_math.scalar_tail)"),
    **dict.fromkeys("pow __rpow__ float_power logaddexp2 polar".split(), (1, _SLEEF)),
    "ldexp": (2, _SLEEF + " (x * 2^e with SLEEF's pow)"),
    **dict.fromkeys(["xlogy"], (2, _SLEEF + " (x * log(y): two roundings after MKL's log)")),
    **dict.fromkeys(["logit"],
                    (2, "not torch's kernels step by step (SLEEF's exp and log1p, C's in the scalar tail): "
                        "NumPy's float32 formula")),
    "atan2": (2, _CEPHES),
    **dict.fromkeys("i0 digamma mvlgamma".split(), (4, _CEPHES)),  # (polygamma: torch's bits since round 29)
}
# torch's "default" build (ATEN_CPU_CAPABILITY=default: no SIMD) calls C's functions per element: expm1f, log1pf,
# tanhf as minilora does (float32_math.c_function), lgammaf not (its float32 results lie within 4 ulps there)
DEFAULT_BUILD_ULPS = {"lgamma": 4}
# float64 results within 1e-13 (relative) of torch's: torch's float64 transcendental functions run SLEEF's double
# kernels (and Cephes'), NumPy's libm differs in the last bit; gradients within 1e-12 (a formula amplifies it)
FLOAT64_RTOL, GRAD_RTOL = 1e-13, 1e-12
GRAD_ATOL = {"tanh": (1e-15, "tanh's gradient g (1 - y^2) cancels where |y| nears 1: y's last-bit difference "
                              "(SLEEF's tanh, NumPy's) stays an absolute 1e-16 |g|, relatively up to 3e-9")}

# error inputs of torch's database that torch itself answers (they name a call the op's Python-number variant
# refuses), and calls only torch's C method descriptors refuse
ERROR_INPUTS_TORCH_ANSWERS = {("clamp_min", 0), ("clamp_max", 0), ("__rpow__", 0), ("__rmod__", 0), ("__rsub__", 0)}
UNBOUND_METHOD_WITH_A_NUMBER = ("torch.Tensor.__radd__(2, t): torch's C descriptor refuses a number self; "
                                "minilora's methods are Python functions, which Python's operators never call so")
ERROR_INPUTS_MINILORA_ANSWERS = {
    **{(name, index): UNBOUND_METHOD_WITH_A_NUMBER for name in "__radd__ __rmul__ __rand__ __ror__ __rxor__".split()
       for index in (0, 1)},
}

# torch's nn.functional ops that are C bindings taking out= (minilora's are Python functions without it: a
# TypeError naming the keyword). (Not hardshrink: torch's F.hardshrink is torch.hardshrink, whose out= minilora
# takes since round 32, as the other top-level functions': tests/test_out_r32.py.)
OUT_NOT_TAKEN = {"nn.functional.logsigmoid", "nn.functional.softshrink", "nn.functional.softplus"}

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.int64, torch.bool)
SAMPLES_PER_DTYPE = 2


# ---- carrying an OpInfo's callables over ------------------------------------------------------------
def _with_minilora_seed(op, *args, **kwargs):
    """torch's ``wrapper_set_seed`` (rrelu's draws): torch.manual_seed(42), then the call."""
    ml.manual_seed(42)
    return op(*args, **kwargs)


def minilora_callable(fn):
    """minilora's counterpart of one of an OpInfo's callables: a torch function or Tensor method by name, a
    ``functools.partial`` of one, or the database's own lambda run with ``torch`` meaning minilora."""
    if isinstance(fn, functools.partial):
        return functools.partial(minilora_callable(fn.func), *to_minilora(fn.args), **to_minilora(fn.keywords))
    if isinstance(fn, types.FunctionType) and fn.__module__.startswith("torch.testing"):
        scope = {**fn.__globals__, "torch": ml, "wrapper_set_seed": _with_minilora_seed}
        return types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    name, module = fn.__name__, getattr(fn, "__module__", None) or ""
    if getattr(fn, "__objclass__", None) is not None or fn.__qualname__.startswith(("Tensor.", "TensorBase.")):
        return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)
    if module.startswith(("torch.nn.functional", "torch._C._nn")):
        return resolve(ml, "nn.functional." + {"log_sigmoid": "logsigmoid"}.get(name, name))
    return getattr(ml, name)


def variants(op):
    """(variant name, torch callable) for each variant the OpInfo has."""
    found = [("function", op.op), ("method", op.method_variant), ("inplace", op.inplace_variant)]
    return [(name, fn) for name, fn in found if fn is not None]


def samples(op, dtype, requires_grad=False, count=SAMPLES_PER_DTYPE):
    """The first ``count`` of torch's sample inputs for ``dtype`` (torch_db.sample_inputs: op.sample_inputs
    without its test-tracking wrapper, which takes more time than the comparisons)."""
    return list(itertools.islice(sample_inputs(op, dtype, requires_grad), count))


class Described:
    """A failure message's description of one call, formatted only when a comparison fails."""

    def __init__(self, *parts):
        self.parts = parts

    def __str__(self):
        return " ".join(part if isinstance(part, str) else str(part) if isinstance(part, Described) else
                        f"{part!r:.300}" for part in self.parts)

    __format__ = lambda self, spec: format(str(self), spec)  # noqa: E731


def run(fn, sample, convert, out=None):
    """(answer, None) or (None, the exception) of ``fn`` on a fresh copy of the sample."""
    copy = (lambda value: value.clone() if isinstance(value, torch.Tensor) else value) if convert is None else convert
    kwargs = {**{k: copy(v) for k, v in sample.kwargs.items()}, **({} if out is None else {"out": out})}
    try:
        return fn(copy(sample.input), *[copy(a) for a in sample.args], **kwargs), None
    except Exception as error:  # noqa: BLE001  (any refusal counts: the test compares who refuses)
        return None, error


# ---- comparing -------------------------------------------------------------------------------------
def assert_close(name, ours, theirs, what):
    """``assert_same`` with the tolerance of ``name``'s results: float64 within FLOAT64_RTOL, others the same
    bits unless ULPS states a distance."""
    first = theirs[0] if isinstance(theirs, (tuple, list)) else theirs
    dtype = first.dtype if isinstance(first, torch.Tensor) else None
    if dtype in (torch.float64, torch.complex128):
        assert_same(ours, theirs, rtol=FLOAT64_RTOL, atol=1e-300, what=what)
    elif name in ULPS and dtype in (torch.float32, torch.bfloat16, torch.complex64):
        assert_within_ulps(ours, theirs, max(ULPS[name][0], default_build_ulps(name)), dtype, what)
    elif default_build_ulps(name) and dtype in (torch.float32, torch.bfloat16):
        assert_within_ulps(ours, theirs, default_build_ulps(name), dtype, what)
    else:
        assert_same(ours, theirs, what=what)


def default_build_ulps(name):
    return DEFAULT_BUILD_ULPS.get(name, 0) if ml.float32_math.torch_cpu_capability() == "default" else 0


def assert_within_ulps(ours, theirs, ulps, dtype, what):
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(theirs), what
        for mine, torchs in zip(ours, theirs):
            assert_within_ulps(mine, torchs, ulps, dtype, what)
        return
    assert dtype_name(ours) == dtype_name(theirs), f"{what}: dtype {dtype_name(ours)}, torch's {dtype_name(theirs)}"
    ours, theirs = as_numpy(ours), as_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, torch's {theirs.shape}"
    if theirs.dtype.kind == "c":
        for part in ("real", "imag"):
            assert_within_ulps(getattr(ours, part), getattr(theirs, part), ulps, dtype, what)
        return
    if theirs.dtype.kind != "f":
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
        return
    step = np.spacing(np.abs(theirs).astype(np.float32)).astype(np.float64) * (2 ** 16 if dtype == torch.bfloat16
                                                                                else 1)
    same_specials = np.isnan(ours) == np.isnan(theirs)
    assert same_specials.all() and (ours[np.isinf(theirs)] == theirs[np.isinf(theirs)]).all(), what
    finite = np.isfinite(theirs)
    distance = np.abs(ours[finite].astype(np.float64) - theirs[finite]) / step[finite]
    assert distance.size == 0 or distance.max() <= ulps, f"{what}: {distance.max():.0f} ulps apart (> {ulps})"


def compare_variant(op, variant, torch_fn, sample, dtype):
    what = Described(key(op), variant, str(dtype).removeprefix("torch."), "sample", sample)
    theirs, torch_error = run(torch_fn, sample, None)
    ours, our_error = run(minilora_callable(torch_fn), sample, to_minilora)
    if torch_error is not None:
        assert our_error is not None, f"{what}: torch refuses ({torch_error}), minilora answers"
        return
    assert our_error is None, f"{what}: minilora refuses ({type(our_error).__name__}: {our_error}), torch answers"
    assert_close(op.name if op.name in ULPS else key(op), ours, theirs, what)
    if variant == "function" and op.supports_out and op.name in OUT_NOT_TAKEN:
        with pytest.raises(TypeError, match="out"):
            minilora_callable(torch_fn)(to_minilora(sample.input), *to_minilora(tuple(sample.args)),
                                        out=to_minilora(theirs), **to_minilora(dict(sample.kwargs)))
    elif variant == "function" and op.supports_out and isinstance(theirs, torch.Tensor):
        out = torch.zeros_like(theirs)
        theirs_out, torch_error = run(torch_fn, sample, None, out=out)
        ours_out, our_error = run(minilora_callable(torch_fn), sample, to_minilora, out=to_minilora(out))
        assert (torch_error is None) == (our_error is None), f"{what} out=: torch {torch_error}, minilora {our_error}"
        if torch_error is None:
            assert_close(op.name if op.name in ULPS else key(op), ours_out, theirs_out, Described(what, "out="))


def compare_gradients(op, sample):
    what = Described(key(op), "float64 gradient, sample", sample)
    torch_fn = op.op
    tensors = [t for t in (sample.input, *sample.args, *sample.kwargs.values())
               if isinstance(t, torch.Tensor) and t.requires_grad]
    theirs = torch_fn(sample.input, *sample.args, **sample.kwargs)
    outputs = [t for t in (theirs if isinstance(theirs, (tuple, list)) else [theirs])
               if isinstance(t, torch.Tensor) and t.requires_grad]
    if not tensors or not outputs:
        return
    generator = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in outputs]
    torch_grads = torch.autograd.grad(outputs, tensors, cotangents, allow_unused=True)
    ml_input, ml_args, ml_kwargs = (to_minilora(sample.input), to_minilora(tuple(sample.args)),
                                    to_minilora(dict(sample.kwargs)))
    ml_tensors = [t for t in (ml_input, *ml_args, *ml_kwargs.values()) if isinstance(t, ml.Tensor) and t.requires_grad]
    ours = minilora_callable(torch_fn)(ml_input, *ml_args, **ml_kwargs)
    ml_outputs = [t for t in (ours if isinstance(ours, (tuple, list)) else [ours])
                  if isinstance(t, ml.Tensor) and t.requires_grad]
    assert len(ml_outputs) == len(outputs), what
    our_grads = ml.autograd.grad(ml_outputs, ml_tensors, [to_minilora(c) for c in cotangents], allow_unused=True)
    atol = GRAD_ATOL.get(op.name, (1e-300,))[0]
    for index, (mine, torchs) in enumerate(zip(our_grads, torch_grads)):
        if torchs is not None and torchs._is_zerotensor():  # (torch's ZeroTensor: zeros it never wrote)
            torchs = torch.zeros(torchs.shape, dtype=torchs.dtype)
        if torchs is None or mine is None:
            assert mine is None or not np.any(mine.numpy()), f"{what}: gradient {index}"
            assert torchs is None or not torchs.any(), f"{what}: gradient {index}"
            continue
        assert_same(mine, torchs, rtol=GRAD_RTOL, atol=atol, what=Described(what, f"gradient {index}"))


# ---- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", [op for op in OPINFOS if key(op) not in REFUSED and op.name not in CUDA_ONLY],
                         ids=key)
def test_opinfo_samples_match_torch(op):
    supported = op.supported_dtypes("cpu")
    for dtype in [d for d in DTYPES if d in supported]:
        for sample in samples(op, dtype):
            for variant, torch_fn in variants(op):
                compare_variant(op, variant, torch_fn, sample, dtype)
    if op.supports_autograd and torch.float64 in supported:
        for sample in samples(op, torch.float64, requires_grad=True, count=2):
            compare_gradients(op, sample)


@pytest.mark.parametrize("op", [op for op in OPINFOS if op.error_inputs_func is not None and key(op) not in REFUSED
                                and op.name not in CUDA_ONLY], ids=key)
def test_opinfo_error_inputs_refused(op):
    for index, error_input in enumerate(error_inputs(op)):
        sample = error_input.sample_input
        theirs, torch_error = run(op.op, sample, None)
        if (op.name, index) in ERROR_INPUTS_TORCH_ANSWERS:
            assert torch_error is None, f"{key(op)} error input {index}: torch refuses now ({torch_error})"
            continue
        assert torch_error is not None, f"{key(op)} error input {index}: torch answers"
        ours, our_error = run(minilora_callable(op.op), sample, to_minilora)
        if (op.name, index) in ERROR_INPUTS_MINILORA_ANSWERS:
            assert our_error is None, f"{key(op)} error input {index}: minilora refuses now, update the dict"
            continue
        assert our_error is not None, (f"{key(op)} error input {index}: torch refuses ({torch_error}), minilora "
                                       f"answers {ours!r:.200}")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_by_name(name):
    """An OpInfo minilora lacks: torch has it, minilora's name is missing (an AttributeError naming it)."""
    assert resolve(torch, name) is not None or hasattr(torch.Tensor, name)
    if name == "chalf":  # (a Tensor method since round 23: refused by name for want of a complex32 dtype)
        with pytest.raises(NotImplementedError, match="chalf"):
            ml.ones(2).chalf()
        return
    *parents, last = name.split(".")
    with pytest.raises(AttributeError, match=last):
        getattr(resolve(ml, ".".join(parents)) if parents else ml, last)


def test_cuda_only_opinfos_are_not_run_on_a_cpu():
    """jiterator's OpInfos wrap torch.cuda.jiterator kernels (compiled CUDA C++ strings): torch itself cannot
    run them without a GPU, and minilora has no jiterator."""
    assert {op.name for op in OPINFOS} >= CUDA_ONLY
    assert not hasattr(ml.cuda, "jiterator")


# ---- type promotion: torch.result_type's rules, through the ops ----------------------------------------------
PROMOTION_DTYPES = ("bool uint8 int8 int16 int32 int64 float16 bfloat16 float32 float64 complex64 "
                    "complex128").split()
NUMBERS = (True, 3, 2.5, 1 + 2j)
OPERATORS = ("__radd__", "__rsub__", "__mul__", "__truediv__", "__pow__", "__floordiv__", "__lt__", "__and__")


def _ones(library, dtype, zero_dim=False):
    return library.ones(() if zero_dim else (2,), dtype=getattr(library, dtype))


def _outcome(call):
    """The result's dtype name, or the exception's type name (refusals compare by type)."""
    try:
        return dtype_name(call())
    except Exception as error:  # noqa: BLE001
        return type(error).__name__


def _complex32(dtype, other):
    """torch's ComplexHalf: float16 meeting a complex number or 0-d complex tensor, which minilora refuses."""
    return dtype == "float16" and (isinstance(other, complex) or str(other).startswith("complex"))


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")  # (torch's, for its complex32)
@pytest.mark.parametrize("dtype", PROMOTION_DTYPES)
def test_a_python_number_promotes_as_torch(dtype):
    """``tensor op number`` and ``number op tensor`` for every dtype: the dtype torch.result_type gives, or
    torch's refusal; float16 with a complex number (torch's complex32) refused by name."""
    for number, operator in itertools.product(NUMBERS, OPERATORS):
        theirs = _outcome(lambda: getattr(_ones(torch, dtype), operator)(number))
        ours = _outcome(lambda: getattr(_ones(ml, dtype), operator)(number))
        if _complex32(dtype, number) and theirs == "complex32":
            assert ours == "NotImplementedError", f"{dtype} {operator} {number}"
            continue
        assert ours == theirs, f"{dtype}.{operator}({number!r}): minilora {ours}, torch {theirs}"
    for number in NUMBERS:
        theirs, ours = torch.result_type(_ones(torch, dtype), number), None
        if not _complex32(dtype, number):
            ours = ml.result_type(_ones(ml, dtype), number)
            assert str(ours).split(".")[-1] == str(theirs).split(".")[-1], f"result_type({dtype}, {number!r})"


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("dtype", PROMOTION_DTYPES)
def test_a_zero_dim_tensor_promotes_as_torch(dtype):
    """A dimensioned tensor with a 0-d one (either side) and with another dimensioned one: torch.result_type."""
    for other, zero_dim in itertools.product(PROMOTION_DTYPES, (True, False)):
        theirs = _outcome(lambda: _ones(torch, dtype) + _ones(torch, other, zero_dim))
        ours = _outcome(lambda: _ones(ml, dtype) + _ones(ml, other, zero_dim))
        if zero_dim and _complex32(dtype, other):
            assert theirs == "complex32" and ours == "NotImplementedError", f"{dtype} + 0-d {other}"
            continue
        assert ours == theirs, f"{dtype} + {'0-d ' if zero_dim else ''}{other}: minilora {ours}, torch {theirs}"


IN_PLACE = ("add_", "div_", "pow_", "remainder_", "atan2_", "copysign_", "xlogy_", "float_power_", "heaviside_",
            "logical_and_", "clamp_")


@pytest.mark.filterwarnings("ignore:Casting complex values to real")  # (torch's, logical_and_ of complex)
@pytest.mark.parametrize("dtype", ["bool", "uint8", "int64", "bfloat16", "float32", "float64", "complex64"])
def test_in_place_results_cast_back_or_are_refused_as_torch(dtype):
    """``x.op_(other)`` keeps x's dtype where the result can be cast back, and is refused where it cannot
    (torch's "result type Float can't be cast to the desired output type Long"), for numbers and tensors."""
    others = [*NUMBERS, *(("tensor", other) for other in ("bool", "int64", "float32", "float64", "complex128"))]
    for name, other in itertools.product(IN_PLACE, others):
        def call(library):
            value = _ones(library, other[1]) if isinstance(other, tuple) else other
            return (getattr(_ones(library, dtype), name)(min=value) if name == "clamp_"
                    else getattr(_ones(library, dtype), name)(value))
        theirs, ours = _outcome(lambda: call(torch)), _outcome(lambda: call(ml))
        refusals = (theirs.endswith("Error"), ours.endswith("Error"))
        assert refusals[0] == refusals[1] and (refusals[0] or ours == theirs), \
            f"{dtype}.{name}({other!r}): minilora {ours}, torch {theirs}"


# ---- bad arguments torch's parser refuses ------------------------------------------------------------
BINARY_METHODS = """maximum minimum fmax fmin isclose allclose dist inner logaddexp logaddexp2 atan2 arctan2 hypot
nextafter logical_and logical_or logical_xor ldexp atan2_ hypot_ nextafter_ logical_and_ ldexp_ heaviside
heaviside_""".split()


@pytest.mark.parametrize("name", BINARY_METHODS)
def test_binary_methods_refuse_a_number_in_torchs_words(name):
    """``x.maximum(2)``: torch's parser wants a Tensor (minilora's maximum, isclose, allclose, dist, inner and
    logaddexp had answered)."""
    with pytest.raises(TypeError) as theirs:
        getattr(torch.ones(2), name)(2)
    with pytest.raises(TypeError) as ours:
        getattr(ml.ones(2), name)(2)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("call", [
    lambda lib: lib.ones(2, dtype=lib.complex64).copysign(2.5),
    lambda lib: lib.copysign(lib.ones(2), lib.ones(2, dtype=lib.complex64)),
    lambda lib: lib.heaviside(lib.ones(2, dtype=lib.complex64), lib.ones(2, dtype=lib.complex64)),
    lambda lib: lib.rsub(2, lib.ones(2)),
], ids=["copysign_complex_self", "copysign_complex_other", "heaviside_complex", "rsub_number_first"])
def test_calls_torch_refuses_are_refused(call):
    """Calls minilora had answered (copysign of complex numbers, heaviside of complex tensors, rsub(2, x))."""
    with pytest.raises(Exception) as theirs:
        call(torch)
    with pytest.raises(type(theirs.value)) as ours:
        call(ml)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("shapes", [((1000,), (1000,)), ((6, 40), (40,)), ((), (50,))], ids=str)
def test_float32_logaddexp_is_torchs_sleef_formula(shapes):
    """torch's float32 logaddexp is max + log1p(exp(-|a - b|)) with SLEEF's exp and log1p (C's on each row's
    scalar tail); NumPy's own differed in 10 of 1000 elements, 8 ulps where the sum nears 0."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(shape, generator=generator) * 5 for shape in shapes)
    ours = ml.logaddexp(to_minilora(a), to_minilora(b))
    if ml.float32_math.torch_cpu_capability() == "default":  # (all of it C's expf and log1pf, whose last bits
        assert_within_ulps(ours, torch.logaddexp(a, b), 2, torch.float32, "logaddexp")  # are not modelled)
    else:
        assert_same(ours, torch.logaddexp(a, b))


@pytest.mark.parametrize("name", ["fmod_", "atan2_", "xlogy_", "copysign_", "hypot_", "nextafter_"])
def test_in_place_cast_refusal_comes_first_in_torchs_words(name):
    """torch checks that self can hold the promoted result before its kernel looks at the dtype:
    bool.hypot_(uint8) is "result type Byte can't be cast to the desired output type Bool" (minilora had
    raised hypot's NotImplementedError for Byte), int.atan2_(int) "result type Float ..."."""
    for dtype, other in (("bool", "uint8"), ("int64", "float32"), ("int64", "int64"), ("float32", "complex64")):
        theirs = _outcome_with_message(lambda: getattr(_ones(torch, dtype), name)(_ones(torch, other)))
        ours = _outcome_with_message(lambda: getattr(_ones(ml, dtype), name)(_ones(ml, other)))
        assert ours == theirs, f"{dtype}.{name}({other})"


def _outcome_with_message(call):
    try:
        return dtype_name(call())
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"


def test_zeta_is_nan_below_one_even_at_a_pole():
    """Cephes (torch's zeta) tests s < 1 before the poles q = 0, -1, ...: nan there (minilora gave inf)."""
    s, q = torch.tensor([-3.0, -2.0, 0.0, 1.0, 2.0, 0.5]), torch.tensor([2.0, -3.0, 0.0, -1.0, 0.0, -2.0])
    assert_same(ml.special.zeta(to_minilora(s), to_minilora(q)), torch.special.zeta(s, q))
    assert_same(ml.special.zeta(to_minilora(s.bool()), to_minilora(q.bool())), torch.special.zeta(s.bool(), q.bool()))


@pytest.mark.parametrize("dtypes_", [("int64", "float32"), ("float32", "complex64"), ("bfloat16", "float32")],
                         ids="-".join)
def test_lerp_dtype_mismatch_in_torchs_words(dtypes_):
    """lerp refuses an end or weight of another dtype naming the C types as torch ('expected dtype long int for
    `end` but got dtype float'; minilora had said 'lerp: expected dtype int64 ... float32')."""
    own, other = dtypes_
    for position in ("end", "weight"):
        def call(lib):
            x, y = _ones(lib, own), _ones(lib, other)
            return lib.lerp(x, y, 0.5) if position == "end" else lib.lerp(x, x, y)
        assert _outcome_with_message(lambda: call(ml)) == _outcome_with_message(lambda: call(torch))
