"""torch's refusal of a number, a list or a NumPy array where a top-level function takes a Tensor.

``torch.exp(2.0)``, ``torch.maximum(x, 5)`` or ``torch.isclose(x, 1.0)`` raise in torch's argument parser
(``exp(): argument 'input' (position 1) must be Tensor, not float``), while minilora's functions, written on
arrays, would compute an answer or fail deep inside with an AttributeError. ``TENSOR_PARAMETERS`` lists, for
each top-level name shared with torch, the leading parameters torch types as Tensor (read off torch 2.13 by
calling each with a float in their place); ``check_tensor_arguments`` wraps those names in the ``minilora``
namespace with torch's check. The Tensor methods and the ``ops`` functions the library calls are left as they
are (a method's ``self`` is a Tensor already), so no op the library runs pays for the check.
Functions whose torch overloads take numbers in those places (``normal(mean, std, size)``) are not listed, nor
``tensordot`` (torch's Python code fails on a number with an AttributeError).
"""
import functools
import inspect
import numbers

import numpy as np

from . import dtypes
from .tensor import Tensor, tensor

__all__ = ["TENSOR_PARAMETERS", "OPTIONAL_REQUIRES_GRAD", "FUNCTION_SCALARS", "TENSOR_SEQUENCES", "VARARG_SIZES",
           "INPUT_OVERLOADS", "POSITIONAL_LIMITS", "OVERLOADS", "NUMBER_PAIRS", "SCALARS", "SCALAR_OVERLOADS",
           "check_tensor_arguments", "SECOND_SIZE_LISTS", "FUNCTIONAL_CHECKS", "check_functional_arguments"]

# the parameters (in order, from position 1) that must be Tensors -> the top-level names with that signature head
TENSOR_PARAMETERS = {
    ('input',): """
        abs abs_ absolute acos acos_ acosh acosh_ adaptive_avg_pool1d adaptive_max_pool1d adjoint
        alpha_dropout alpha_dropout_ amax amin aminmax angle arccos arccos_ arccosh arccosh_ arcsin arcsin_
        arcsinh arcsinh_ arctan arctan_ arctanh arctanh_ argmax argmin argsort argwhere as_strided
        as_strided_ asin asin_ asinh asinh_ atan atan_ atanh atanh_ avg_pool1d bernoulli bitwise_not
        broadcast_to ceil ceil_ celu celu_ channel_shuffle cholesky cholesky_inverse chunk clone
        combinations conj conj_physical conj_physical_ corrcoef cos cos_ cosh cosh_ count_nonzero cov cummax
        cummin cumprod cumsum deg2rad deg2rad_ det detach_ diag diag_embed diagflat diagonal diff digamma
        dropout dropout_ empty_like erf erf_ erfc erfc_ erfinv exp exp2 exp2_ exp_ expm1 expm1_
        feature_alpha_dropout feature_alpha_dropout_ feature_dropout feature_dropout_ fix fix_ flatten flip
        fliplr flipud floor floor_ frac frac_ frexp full_like gather geqrf gradient group_norm hardshrink
        histc histogram i0 i0_ imag index_add index_copy index_put index_put_ index_select inverse
        is_complex is_floating_point isfinite isinf isnan isneginf isposinf isreal kthvalue layer_norm
        lgamma log log10 log10_ log1p log1p_ log2 log2_ log_ log_softmax logcumsumexp logdet logical_not
        logit logit_ logsumexp lu matrix_exp matrix_power max max_pool1d max_pool2d mean median min mode
        msort multinomial mvlgamma nan_to_num nan_to_num_ nanmean nanmedian nansum narrow_copy neg neg_
        negative negative_ nonzero numel ones_like permute pinverse pixel_shuffle pixel_unshuffle poisson
        positive prod qr rad2deg rad2deg_ rand_like randn_like ravel real reciprocal reciprocal_ relu relu_
        renorm reshape resolve_conj resolve_neg rms_norm roll rot90 round round_ rrelu rrelu_ rsqrt rsqrt_
        scatter_add scatter_reduce select selu selu_ sgn sigmoid sigmoid_ sign signbit sin sin_ sinc sinc_
        sinh sinh_ slogdet softmax sort split_with_sizes sqrt sqrt_ square square_ squeeze sum svd swapaxes
        swapdims t tan tan_ tanh tanh_ threshold threshold_ tile topk trace transpose tril triu trunc trunc_
        unbind unflatten unique unique_consecutive unsqueeze view_as_complex view_as_real zero_ zeros_like
        detach get_device is_nonzero is_signed is_conj is_neg is_inference nuclear_norm frobenius_norm pdist max_pool3d
        constant_pad_nd native_layer_norm native_dropout native_batch_norm native_group_norm native_channel_shuffle
        batch_norm_update_stats max_pool1d_with_indices embedding_renorm_ lstm_cell
        alias_copy diagonal_copy expand_copy select_copy slice_copy split_copy squeeze_copy t_copy transpose_copy
        unbind_copy unfold_copy unsafe_chunk unsafe_split unsqueeze_copy view_copy permute_copy all any dsplit hsplit
        vsplit
        tensor_split moveaxis movedim quantile nanquantile narrow fill fill_ randint_like std std_mean var var_mean
        clamp_ clamp_max_ clamp_min_ clip_ xlogy_ histogramdd""",
    ('input', 'other'): """
        allclose arctan2 atan2 cross dist equal fmax fmin gcd gcd_ hypot igamma igammac inner isclose kron lcm
        lcm_ ldexp ldexp_ logaddexp logaddexp2 logical_and logical_or logical_xor matmul maximum minimum nextafter
        vdot is_same_size expand_as view_as reshape_as type_as""",
    ('input', 'src'): "as_strided_scatter diagonal_scatter select_scatter slice_scatter",
    ('input', 'weight', 'bias'): "batch_norm conv_transpose1d conv_transpose2d conv_transpose3d instance_norm",
    ('input', 'target'): "hinge_embedding_loss kl_div poisson_nll_loss",
    ('x1', 'x2'): "cdist cosine_similarity pairwise_distance",
    ('y',): "cumulative_trapezoid trapezoid trapz",
    ('input', 'batch1', 'batch2'): "addbmm baddbmm",
    ('input', 'input2'): "cholesky_solve orgqr",
    ('input', 'mat', 'vec'): "addmv addmv_",
    ('input', 'mat2'): "bmm mm",
    ('input', 'tensor1', 'tensor2'): "addcdiv addcmul",
    ('input', 'vec2'): "ger outer",
    ('input1', 'input2', 'target'): "cosine_embedding_loss margin_ranking_loss",
    ('LU_data', 'LU_pivots'): "lu_unpack",
    ('abs', 'angle'): "polar",
    ('anchor', 'positive', 'negative'): "triplet_margin_loss",
    ('condition',): "where",
    ('input', 'A'): "triangular_solve",
    ('input', 'LU_data', 'LU_pivots'): "lu_solve",
    ('input', 'index'): "take",
    ('input', 'index', 'source'): "put",
    ('input', 'indices'): "take_along_dim",
    ('input', 'input2', 'input3'): "ormqr",
    ('input', 'mask'): "masked_select",
    ('input', 'mask', 'source'): "masked_scatter",
    ('input', 'mat1', 'mat2'): "addmm",
    ('input', 'target', 'weight'): "binary_cross_entropy_with_logits",
    ('input', 'tensor'): "dot is_set_to",
    ('input', 'values'): "heaviside",
    ('input', 'vec'): "mv",
    ('input', 'vec1', 'vec2'): "addr",
    ('input', 'weights'): "bincount",
    ('input1', 'input2', 'weight'): "bilinear",
    ('real', 'imag'): "complex",
    ('repeats',): "repeat_interleave",
    ('weight', 'indices'): "embedding",
    ('x',): "vander",
    ('input', 'grid'): "grid_sampler grid_sampler_2d grid_sampler_3d",
    ('input', 'hx', 'w_ih', 'w_hh'): "gru_cell rnn_tanh_cell rnn_relu_cell",
    ('input', 'weight'): "prelu convolution conv_tbc",
    ('data',): "segment_reduce",
    ('v',): "norm_except_dim",
    ('theta',): "affine_grid_generator",
    ('count', 'prob'): "binomial",
    ('input', 'the_template'): "resize_as_",
}
# torch's positional-argument limit of the names above that have one signature (read off torch 2.13: a call with
# more positional arguments is refused before any type is looked at, ``atan2() takes 2 positional arguments but 3
# were given``; a method's limit is one less, self not counted, where Python's own message would count it)
POSITIONAL_LIMITS = {
    1: """
        abs abs_ absolute acos acos_ acosh acosh_ adjoint aminmax angle arccos arccos_ arccosh arccosh_ arcsin
        arcsin_ arcsinh arcsinh_ arctan arctan_ arctanh arctanh_ argwhere asin asin_ asinh asinh_ atan atan_
        atanh atanh_ bitwise_not ceil ceil_ clone conj conj_physical conj_physical_ corrcoef cos cos_ cosh cosh_
        cov deg2rad deg2rad_ det detach_ digamma empty_like erf erf_ erfc erfc_ erfinv exp exp2 exp2_ exp_ expm1
        expm1_ fix fix_ fliplr flipud floor floor_ frac frac_ frexp geqrf i0 i0_ imag inverse is_complex
        is_floating_point isfinite isinf isnan isneginf isposinf isreal lgamma log log10 log10_ log1p log1p_
        log2 log2_ log_ logdet logical_not matrix_exp msort neg neg_ negative negative_ nonzero numel ones_like
        positive rad2deg rad2deg_ ravel real reciprocal reciprocal_ relu relu_ resolve_conj resolve_neg rsqrt
        rsqrt_ selu selu_ sgn sigmoid sigmoid_ sign signbit sin sin_ sinc sinc_ sinh sinh_ slogdet sqrt sqrt_
        square square_ t tan tan_ tanh tanh_ trace trunc trunc_ view_as_complex view_as_real zero_ zeros_like""",
    2: """
        adaptive_avg_pool1d adaptive_max_pool1d arctan2 atan2 broadcast_to channel_shuffle complex cummax cummin
        cumprod cumsum dot equal flip fmax fmin full_like gcd gcd_ ger heaviside hypot inner kron lcm lcm_ ldexp
        ldexp_ logaddexp logaddexp2 logcumsumexp logical_and logical_or logical_xor masked_select matmul
        matrix_power maximum minimum mv mvlgamma nextafter orgqr outer permute pixel_shuffle pixel_unshuffle
        polar prelu reshape take tile unsqueeze vdot permute_copy resize_as_""",
    3: """
        alpha_dropout alpha_dropout_ dropout dropout_ feature_alpha_dropout feature_alpha_dropout_
        feature_dropout feature_dropout_ gather index_select lu_solve masked_scatter select swapaxes swapdims
        threshold threshold_ transpose unflatten""",
    4: """
        index_add index_copy narrow_copy renorm scatter_add select_scatter""",
    5: """
        scatter_reduce""",
    6: """
        poisson_nll_loss""",
}
_LIMITS = {name: int(limit) for limit, names in POSITIONAL_LIMITS.items() for name in names.split()}
_TORCH_NAMES = {"lu": "_lu_with_info", "unique": "_unique2"}  # the name torch's message gives, where another
_MISSING = object()
# the Tensor parameters above that torch takes None for (an optional Tensor left out); None is refused elsewhere
_OPTIONAL_TENSORS = {"batch_norm": {"weight", "bias"}, "instance_norm": {"weight", "bias"},
                     "conv_transpose1d": {"bias"}, "conv_transpose2d": {"bias"}, "conv_transpose3d": {"bias"},
                     "binary_cross_entropy_with_logits": {"weight"}, "bincount": {"weights"}}


def _type_name(value):
    """A type as torch's parser names it: ``float``, ``list``, ``numpy.ndarray``, ``Tensor``."""
    if isinstance(value, Tensor):
        return "Tensor"
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"


# The names of TENSOR_PARAMETERS that torch's parser knows by several signatures (torch 2.13's, as it prints them):
# a call none takes is its "invalid combination of arguments", listing them, not "argument 'input' must be Tensor"
INPUT_OVERLOADS = {
    'view_copy': ('(Tensor input, torch.dtype dtype, *, Tensor out = None)',
        '(Tensor input, tuple of ints size, *, Tensor out = None)'),
    'all': ('(Tensor input, *, Tensor out = None)',
        '(Tensor input, tuple of ints dim = None, bool keepdim = False, *, Tensor out = None)',
        '(Tensor input, int dim, bool keepdim = False, *, Tensor out = None)'),
    'any': ('(Tensor input, *, Tensor out = None)',
        '(Tensor input, tuple of ints dim = None, bool keepdim = False, *, Tensor out = None)',
        '(Tensor input, int dim, bool keepdim = False, *, Tensor out = None)'),
    'dsplit': ('(Tensor input, int sections)',
        '(Tensor input, tuple of ints indices)'),
    'hsplit': ('(Tensor input, int sections)',
        '(Tensor input, tuple of ints indices)'),
    'vsplit': ('(Tensor input, int sections)',
        '(Tensor input, tuple of ints indices)'),
    'tensor_split': ('(Tensor input, tuple of ints indices, int dim = 0)',
        '(Tensor input, Tensor tensor_indices_or_sections, int dim = 0)',
        '(Tensor input, int sections, int dim = 0)'),
    'moveaxis': ('(Tensor input, int source, int destination)',
        '(Tensor input, tuple of ints source, tuple of ints destination)'),
    'movedim': ('(Tensor input, int source, int destination)',
        '(Tensor input, tuple of ints source, tuple of ints destination)'),
    'quantile': ('(Tensor input, Tensor q, int dim = None, bool keepdim = False, *, str interpolation = "linear", '
        'Tensor out = None)',
        '(Tensor input, float q, int dim = None, bool keepdim = False, *, str interpolation = "linear", '
        'Tensor out = None)'),
    'nanquantile': ('(Tensor input, Tensor q, int dim = None, bool keepdim = False, *, str interpolation = "linear", '
        'Tensor out = None)',
        '(Tensor input, float q, int dim = None, bool keepdim = False, *, str interpolation = "linear", '
        'Tensor out = None)'),
    'narrow': ('(Tensor input, int dim, Tensor start, int length)',
        '(Tensor input, int dim, int start, int length)'),
    'fill': ('(Tensor input, Tensor value)',
        '(Tensor input, Number value)'),
    'fill_': ('(Tensor input, Tensor value)',
        '(Tensor input, Number value)'),
    'randint_like': ('(Tensor input, int low, int high, *, torch.Generator generator, '
        'torch.memory_format memory_format = None, torch.dtype dtype = None, torch.layout layout = None, '
        'torch.device device = None, bool pin_memory = False, bool requires_grad = False)',
        '(Tensor input, int low, int high, *, torch.memory_format memory_format = None, '
        'torch.dtype dtype = None, torch.layout layout = None, torch.device device = None, '
        'bool pin_memory = False, bool requires_grad = False)',
        '(Tensor input, Tensor high, *, torch.Generator generator, '
        'torch.memory_format memory_format = None, torch.dtype dtype = None, torch.layout layout = None, '
        'torch.device device = None, bool pin_memory = False, bool requires_grad = False)',
        '(Tensor input, Tensor high, *, torch.memory_format memory_format = None, '
        'torch.dtype dtype = None, torch.layout layout = None, torch.device device = None, '
        'bool pin_memory = False, bool requires_grad = False)',
        '(Tensor input, int high, *, torch.Generator generator, '
        'torch.memory_format memory_format = None, torch.dtype dtype = None, torch.layout layout = None, '
        'torch.device device = None, bool pin_memory = False, bool requires_grad = False)',
        '(Tensor input, int high, *, torch.memory_format memory_format = None, torch.dtype dtype = None, '
        'torch.layout layout = None, torch.device device = None, bool pin_memory = False, '
        'bool requires_grad = False)'),
    'std': ('(Tensor input, tuple of ints dim, bool unbiased = True, bool keepdim = False, *, '
        'Tensor out = None)',
        '(Tensor input, tuple of ints dim = None, *, Number correction = None, bool keepdim = False, '
        'Tensor out = None)',
        '(Tensor input, bool unbiased = True)'),
    'std_mean': ('(Tensor input, tuple of ints dim, bool unbiased = True, bool keepdim = False)',
        '(Tensor input, tuple of ints dim = None, *, Number correction = None, bool keepdim = False)',
        '(Tensor input, bool unbiased = True)'),
    'var': ('(Tensor input, tuple of ints dim, bool unbiased = True, bool keepdim = False, *, '
        'Tensor out = None)',
        '(Tensor input, tuple of ints dim = None, *, Number correction = None, bool keepdim = False, '
        'Tensor out = None)',
        '(Tensor input, bool unbiased = True)'),
    'var_mean': ('(Tensor input, tuple of ints dim, bool unbiased = True, bool keepdim = False)',
        '(Tensor input, tuple of ints dim = None, *, Number correction = None, bool keepdim = False)',
        '(Tensor input, bool unbiased = True)'),
    'clamp_': ('(Tensor input, Tensor min = None, Tensor max = None)',
        '(Tensor input, Number min = None, Number max = None)'),
    'clamp_max_': ('(Tensor input, Tensor max)',
        '(Tensor input, Number max)'),
    'clamp_min_': ('(Tensor input, Tensor min)',
        '(Tensor input, Number min)'),
    'clip_': ('(Tensor input, Tensor min = None, Tensor max = None)',
        '(Tensor input, Number min = None, Number max = None)'),
    'xlogy_': ('(Tensor input, Tensor other)',
        '(Tensor input, Number other)'),
    'histogramdd': ('(Tensor input, int bins, tuple of floats range = None, Tensor weight = None, '
        'bool density = False)',
        '(Tensor input, tuple of ints bins, tuple of floats range = None, Tensor weight = None, '
        'bool density = False)',
        '(Tensor input, tuple of Tensors bins, tuple of floats range = None, Tensor weight = None, '
        'bool density = False)'),
}


def _checked(function, name, parameters, after=0):
    """``function`` refusing a non-Tensor for any of ``parameters`` (given by position or keyword), in torch's words.
    ``after=1``: a method, whose ``self`` comes before them (torch counts positions from the first one)."""
    limit = _LIMITS.get(name, _LIMITS.get(name.rstrip("_")))  # (an in-place method: its function's)
    optional = _OPTIONAL_TENSORS.get(name, ())
    overloaded_most = _positional_range(INPUT_OVERLOADS[name])[1] + after if name in INPUT_OVERLOADS else None

    @functools.wraps(function)
    def call(*args, **kwargs):
        if overloaded_most is not None and len(args) > overloaded_most:  # (view_copy(x, 2, 2): sizes are one tuple)
            raise _invalid_combination(name, args[after:], kwargs, INPUT_OVERLOADS[name], bool(after))
        if limit is not None and len(args) > limit:  # (torch counts before it types; a method's self is args[0])
            given, most = len(args) - after, limit - after
            raise TypeError(f"{name}() takes {most} positional argument{'' if most == 1 else 's'} but {given} "
                            f"{'was' if given == 1 else 'were'} given")
        for position, parameter in enumerate(parameters, 1):
            given_by_position = len(args) >= position + after
            value = args[position + after - 1] if given_by_position else kwargs.get(parameter, _MISSING)
            if value is not _MISSING and not isinstance(value, Tensor) and (value is not None or
                                                                             parameter not in optional):
                if name in INPUT_OVERLOADS:
                    raise _invalid_combination(name, args[after:], kwargs, INPUT_OVERLOADS[name], bool(after))
                where = f" (position {position})" if given_by_position else ""
                raise TypeError(f"{name}(): argument '{parameter}'{where} must be Tensor, not {_type_name(value)}")
        return function(*args, **kwargs)
    return call


# Functions with a Number overload for a later argument (``torch.eq(x, 2)``), and some with a Number ``self``
# (``torch.pow(2, x)``): a call no overload takes (``torch.eq(2, x)``, ``torch.pow(2.0, 3.0)``,
# ``torch.clamp(2, min=0)``) is torch's "invalid combination of arguments", listing the overloads.
_BINARY = ("(Tensor input, Tensor other, *, Tensor out = None)", "(Tensor input, Number other, *, Tensor out = None)")
_NUMBER_SELF = (_BINARY[0], "(Number self, Tensor other)", _BINARY[1])
_EXPONENT = ("(Tensor input, Tensor exponent, *, Tensor out = None)",
             "(Number self, Tensor exponent, *, Tensor out = None)",
             "(Tensor input, Number exponent, *, Tensor out = None)")
_CLAMP = ("(Tensor input, Tensor min = None, Tensor max = None, *, Tensor out = None)",
          "(Tensor input, Number min = None, Number max = None, *, Tensor out = None)")
OVERLOADS = {
    **dict.fromkeys("eq ne lt le gt ge greater less greater_equal less_equal not_equal fmod copysign".split(),
                    _BINARY),
    **dict.fromkeys("remainder bitwise_and bitwise_or bitwise_xor bitwise_left_shift bitwise_right_shift".split(),
                    _NUMBER_SELF),
    "xlogy": (_BINARY[0], "(Number self, Tensor other, *, Tensor out = None)", _BINARY[1]),
    "pow": _EXPONENT, "float_power": _EXPONENT, "clamp": _CLAMP, "clip": _CLAMP,
    "clamp_min": ("(Tensor input, Tensor min, *, Tensor out = None)",
                  "(Tensor input, Number min, *, Tensor out = None)"),
    "clamp_max": ("(Tensor input, Tensor max, *, Tensor out = None)",
                  "(Tensor input, Number max, *, Tensor out = None)"),
    "lerp": ("(Tensor input, Tensor end, Tensor weight, *, Tensor out = None)",
             "(Tensor input, Tensor end, Number weight, *, Tensor out = None)"),
    "masked_fill": ("(Tensor input, Tensor mask, Tensor value)", "(Tensor input, Tensor mask, Number value)"),
    "rsub": ("(Tensor input, Tensor other, *, Number alpha = 1)", "(Tensor input, Number other, Number alpha = 1)"),
    "bucketize": ("(Tensor input, Tensor boundaries, *, bool out_int32 = False, bool right = False, Tensor out = None)",
                  "(Number self, Tensor boundaries, *, bool out_int32 = False, bool right = False)"),
    "result_type": ("(Tensor tensor, Tensor other)", "(Number scalar, Tensor tensor)", "(Tensor tensor, Number other)",
                    "(Number scalar1, Number scalar2)"),
}


def _positional_range(overloads):
    """(fewest, most) positional arguments torch's ``overloads`` take: those before ``*`` without a default, and all
    of them (``eq(x)`` and ``result_type(x, y, z)`` match none)."""
    counts = []
    for line in overloads:
        parameters = [p for p in line.strip("()").split(", ") if p]
        positional = parameters[:parameters.index("*")] if "*" in parameters else parameters
        counts.append((sum(" = " not in p for p in positional), len(positional)))
    return min(fewest for fewest, _ in counts), max(most for _, most in counts)


def _second_taken(overloads, second, first_kind="Tensor"):
    """Whether an overload whose first parameter is of ``first_kind`` (Tensor, Number) takes ``second`` as its second
    parameter: a Tensor, a number where one has a Number there, None where one defaults it to None (clamp's min)."""
    for line in overloads:
        first, _, rest = line.strip("()").partition(", ")
        kind = rest.split(" ")[0]
        if not first.startswith(first_kind) or kind not in ("Tensor", "Number"):
            continue
        if isinstance(second, Tensor) or (second is None and rest.split(",")[0].endswith("= None")) or \
                (kind == "Number" and isinstance(second, (numbers.Number, np.generic))):
            return True
    return False


def _overload_taken(overloads, args, kwargs):
    """Whether torch's parser finds an overload: as many positional arguments as one takes, ``input`` a Tensor and
    the second argument of a kind an overload takes, or (where an overload has a Number first) a number by position
    followed by what that overload takes (a keyword ``input=2`` names no Number overload)."""
    fewest, most = _positional_range(overloads)
    if len(args) > most or len(args) + len(kwargs) < fewest:
        return False
    names = {line.strip("()").split(", ")[1].split(" ")[-1].split("=")[0] for line in overloads if ", " in line}
    second = args[1] if len(args) > 1 else next((kwargs[n] for n in names if n in kwargs), _MISSING)
    if isinstance(args[0] if args else kwargs.get("input"), Tensor):
        return second is _MISSING or _second_taken(overloads, second)
    number = bool(args) and isinstance(args[0], (numbers.Number, np.bool_))  # (NumPy's scalars are torch's Numbers)
    return number and second is not _MISSING and _second_taken(overloads, second, "Number")


def _overloaded(function, name, overloads):
    """``function`` refusing, in torch's words, the calls none of torch's ``overloads`` take."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        if not _overload_taken(overloads, args, kwargs):
            raise _invalid_combination(name, args, kwargs, overloads)
        return function(*args, **kwargs)
    return call


def _invalid_combination(name, args, kwargs, overloads, method=False):
    """torch's TypeError for a call none of ``overloads`` (their signatures, as torch prints them) takes; a
    ``method``'s arguments (self left out) as torch's method parser prints them, keywords alone ending in ", "."""
    got = [_type_name(a) for a in args]
    keywords = [f"{k}={_type_name(v)}" for k, v in kwargs.items()]
    listed = ", ".join(keywords) + ", " if method and keywords and not got else ", ".join(got + keywords)
    return TypeError(f"{name}() received an invalid combination of arguments - got ({listed}), but "
                     "expected one of:\n" + "".join(f" * {line}\n" for line in overloads))


# torch's arithmetic also takes two Python numbers, each a "wrapped number" tensor: torch.add(2, 3) is tensor(5),
# torch.div(2, 3) tensor(0.6667) (the default float dtype); minilora's ops take a number only beside a tensor
NUMBER_PAIRS = "add sub subtract mul multiply div divide true_divide floor_divide"
_PYTHON_NUMBERS = (bool, int, float)


def _taking_two_numbers(function):
    """``function(a, b, ...)`` with ``a`` made a 0-d tensor when both are Python numbers (the pair then promotes as
    torch's two wrapped numbers: int64 for ints, the default float dtype with a float)."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        if len(args) >= 2 and type(args[0]) in _PYTHON_NUMBERS and type(args[1]) in _PYTHON_NUMBERS:
            args = (tensor(args[0]),) + args[1:]
        return function(*args, **kwargs)
    return call


# Tensor methods whose later parameters torch types as Tensor: ``x.maximum(2)``, ``x.isclose(1.0)``, ``x.atan2_(2)``,
# ``x.addcmul(2, y)``
# are refused as the functions are (``maximum(): argument 'other' (position 1) must be Tensor, not int``), where
# minilora's methods, the ``ops`` functions, would answer (maximum, isclose, allclose, dist, inner, logaddexp) or
# fail inside. The library's own calls go to ``ops`` and pay nothing; ``matmul`` and ``@`` (attention code's
# ``q.matmul(k)``, ``q @ k``) pay one isinstance (_matmul_checked).
# Every group whose head is ``input`` followed by other Tensors (x.addmm(None, m), x.dot(3), x.expand_as([1]),
# x.cholesky_solve("a") failed in an AttributeError). (x.addcdiv(y, 2): not y / 2 added: torch's refusal; the
# deprecated x.addcmul_(value, t1, t2) is tried after it, ops/deprecated_signatures)
_METHOD_GROUPS = tuple(group for group in TENSOR_PARAMETERS if group[0] == "input" and len(group) > 1)


def _binary_method_checked(method, name):
    """A comparison method (``x.eq(None)``, ``x.ne("a")``) refusing an ``other`` that is neither a Tensor nor a
    number, as torch's parser does (minilora's ops compared an object array)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        other = args[0] if args else kwargs.get("other", _MISSING)
        if other is not _MISSING and not isinstance(other, (Tensor, numbers.Number, np.generic)):
            raise _invalid_combination(name, args, kwargs, ("(Tensor other)", "(Number other)"), method=True)
        return method(self, *args, **kwargs)
    return call


def _matmul_checked(method, operator=False):
    """``x.matmul(other)`` refusing a non-Tensor ``other`` in torch's words (``x.matmul(3)`` failed in an
    AttributeError, ``x.matmul(array)`` in a dtype error); the operators ``x @ y`` / ``y @ x`` answer NotImplemented,
    so that Python raises its "unsupported operand type(s) for @", as for torch's tensors."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        other = args[0] if args else kwargs.get("other", _MISSING)
        if isinstance(other, Tensor) or other is _MISSING or len(args) + len(kwargs) > 1:
            return method(self, *args, **kwargs)  # (a wrong count: Python's own words)
        if operator:
            return NotImplemented
        where = " (position 1)" if args else ""
        raise TypeError(f"matmul(): argument 'other'{where} must be Tensor, not {_type_name(other)}")
    return call


def _check_method_arguments():
    Tensor.matmul = _matmul_checked(Tensor.matmul)
    Tensor.__matmul__ = _matmul_checked(Tensor.__matmul__, operator=True)
    Tensor.__rmatmul__ = _matmul_checked(Tensor.__rmatmul__, operator=True)
    for name in (name for name, overloads in OVERLOADS.items() if overloads is _BINARY):
        for method_name in (name, name + "_"):  # (the in-place form too: x.eq_("a"))
            if callable(getattr(Tensor, method_name, None)):
                setattr(Tensor, method_name, _binary_method_checked(getattr(Tensor, method_name), method_name))
    for group in _METHOD_GROUPS:
        for name in TENSOR_PARAMETERS[group].split():
            for method_name in {name, name.rstrip("_"), name.rstrip("_") + "_"} - {"matmul", "resize_as"}:
                method = getattr(Tensor, method_name, None)
                if callable(method):
                    setattr(Tensor, method_name, _checked(method, method_name, group[1:], after=1))


# The top-level functions' and Tensor methods' later parameters that torch's parser types, in FUNCTIONAL_SCALARS'
# notation (read off torch 2.13 by passing a string, then None): ``torch.svd(x, some="no")``, ``x.qr(some=None)``,
# ``x.allclose(y, equal_nan="no")``, ``x.addcmul_(a, b, value="1")``, ``torch.hann_window(4.5)`` were taken here (a
# string's truth, a converted string, a truncated float). "+" marks a parameter torch's overloads differ in: its
# parser refuses the call with "invalid combination", listing SCALAR_OVERLOADS (a method's without ``Tensor input``).
SCALARS = {
    **dict.fromkeys(["addcdiv", "addcmul", "addcdiv_", "addcmul_"], "value:Number"),
    **dict.fromkeys(["allclose", "isclose"], "rtol:float atol:float equal_nan:bool"),
    **dict.fromkeys(["cholesky", "cholesky_inverse", "cholesky_solve"], "upper:bool"),
    **dict.fromkeys(["bartlett_window", "blackman_window", "hamming_window", "hann_window"],
                    "window_length:int periodic:bool+"),
    "kaiser_window": "window_length:int periodic:bool+ beta:float+",
    "bucketize": "boundaries:Tensor+ out_int32:bool+ right:bool+",
    "searchsorted": "sorted_sequence:Tensor+ out_int32:bool+ right:bool+",
    **dict.fromkeys(["histogram", "histogramdd"], "weight:Tensor?+ density:bool+"),
    "isin": "assume_unique:bool+ invert:bool+",
    **dict.fromkeys(["std", "var", "std_mean", "var_mean"], "unbiased:bool?+"),
    "nuclear_norm": "keepdim:bool+", "frobenius_norm": "keepdim:bool",
    "combinations": "r:int with_replacement:bool",
    "cov": "correction:int",
    "full_like": "fill_value:Number",
    "gather": "index:Tensor sparse_grad:bool",
    "group_norm": "cudnn_enabled:bool", "layer_norm": "cudnn_enable:bool",
    "histc": "bins:int min:Number max:Number",
    "lu": "pivot:bool",  # (get_infos: torch's Python reads its truth)
    "nonzero": "as_tuple:bool",
    "norm_except_dim": "pow:int dim:int",
    "pinverse": "rcond:float",
    "qr": "some:bool",
    "svd": "some:bool compute_uv:bool",
    "triangular_solve": "upper:bool transpose:bool unitriangular:bool",
    "triplet_margin_loss": "margin:float p:float eps:float swap:bool",
    "vander": "N:int? increasing:bool",
    "tensor": "requires_grad:bool pin_memory:bool",
    "dist": "p:Number", "logit": "eps:float?", "roll": "shifts:ints", "scalar_tensor": "s:Number",
    # (methods only)
    "cauchy_": "median:float sigma:float", "log_normal_": "mean:float std:float", "normal_": "mean:float std:float",
    "copy_": "non_blocking:bool", "type": "non_blocking:bool",
    "slice_inverse": "src:Tensor dim:int start:int? end:int? step:int",
    "logit_": "eps:float?", **dict.fromkeys(["lerp", "lerp_"], "end:Tensor+ weight:TensorOrNumber+"),
    # (round 25's sweep of the calls minilora answered and torch refuses: x.as_strided(2, 2), x.nan_to_num(tensor),
    # x.index_put(1, v), torch.bernoulli(x, tensor), torch.trapezoid(y, 1) (dx is keyword-only))
    **dict.fromkeys(["as_strided", "as_strided_", "as_strided_copy"], "size:sizes stride:sizes storage_offset:int?"),
    "expand_copy": "implicit:bool",  # (round 26: the view twins show their view's parameters to the sweep)
    **dict.fromkeys(["nan_to_num", "nan_to_num_"], "nan:float? posinf:float? neginf:float?"),
    **dict.fromkeys(["celu", "celu_"], "alpha:Number"),
    **dict.fromkeys(["index_put", "index_put_"], "indices:tensors values:Tensor accumulate:bool"),
    "native_dropout": "p:float train:bool?", "batch_norm_stats": "eps:float", "bernoulli": "p:float+",
    **dict.fromkeys(["trapezoid", "trapz"], "x:Tensor?+"), "new_full": "size:sizes",
    **dict.fromkeys(["softmax", "log_softmax"], "dtype:dtype?"),  # (torch's position in its words: softmax(x, 0, 3))
    # (a Tensor or a number, one overload each: None, a list or a string matches neither: x.clamp_min(None),
    # x.quantile("a"), x.float_power("2"))
    **dict.fromkeys(["clamp_min", "clamp_min_"], "min:TensorOrNumber+"),
    **dict.fromkeys(["clamp_max", "clamp_max_"], "max:TensorOrNumber+"),
    **dict.fromkeys(["quantile", "nanquantile"], "q:TensorOrNumber+"), "float_power": "exponent:TensorOrNumber+",
}
# the top-level functions' parameters of SCALARS' kinds whose Tensor method reads them otherwise: torch.flip(x, 0)
# and torch.tile(x, 2) are refused (an int[] after input takes no bare int), x.flip(0) and x.tile(2) are not
FUNCTION_SCALARS = {"flip": "dims:sizes", "tile": "dims:sizes"}
_WINDOW = ["(int window_length, *, torch.dtype dtype = None, torch.layout layout = None, torch.device device = None, "
           "bool pin_memory = False, bool requires_grad = False)",
           "(int window_length, bool periodic, *, torch.dtype dtype = None, torch.layout layout = None, "
           "torch.device device = None, bool pin_memory = False, bool requires_grad = False)"]
_SEARCH = ("*, bool out_int32 = False, bool right = False, str side = None, Tensor sorter = None, Tensor out = None)")
_SPREAD = ("(Tensor input, tuple of ints dim, bool unbiased = True, bool keepdim = False, *, Tensor out = None)",
           "(Tensor input, tuple of ints dim = None, *, Number correction = None, bool keepdim = False, "
           "Tensor out = None)", "(Tensor input, bool unbiased = True)")
_SPREAD_MEAN = tuple(line.replace(", *, Tensor out = None)", ")") for line in _SPREAD)
_HISTOGRAMDD = "tuple of floats range = None, Tensor weight = None, bool density = False)"
SCALAR_OVERLOADS = {
    **dict.fromkeys(["bartlett_window", "blackman_window", "hamming_window", "hann_window"], tuple(_WINDOW)),
    "kaiser_window": tuple(_WINDOW) + (_WINDOW[1].replace("bool periodic,", "bool periodic, float beta,"),),
    "bucketize": OVERLOADS["bucketize"], "lerp": OVERLOADS["lerp"], "lerp_": OVERLOADS["lerp"],
    "searchsorted": (f"(Tensor sorted_sequence, Tensor input, {_SEARCH}",
                     f"(Tensor sorted_sequence, Number self, {_SEARCH}"),
    "histogram": ("(Tensor input, Tensor bins, *, Tensor weight = None, bool density = False, tuple of Tensors out = "
                  "None)", "(Tensor input, int bins = 100, *, tuple of floats range = None, Tensor weight = None, "
                  "bool density = False, tuple of Tensors out = None)"),
    "histogramdd": tuple(f"(Tensor input, {bins} bins, {_HISTOGRAMDD}" for bins in
                         ("int", "tuple of ints", "tuple of Tensors")),
    "isin": tuple(f"({first}, {second}, *, bool assume_unique = False, bool invert = False, Tensor out = None)" for
                  first, second in (("Tensor elements", "Tensor test_elements"),
                                    ("Number element", "Tensor test_elements"),
                                    ("Tensor elements", "Number test_element"))),
    "std": _SPREAD, "var": _SPREAD, "std_mean": _SPREAD_MEAN, "var_mean": _SPREAD_MEAN,
    "bernoulli": ("(Tensor input, *, torch.Generator generator = None, Tensor out = None)",
                  "(Tensor input, float p, *, torch.Generator generator = None)"),
    "trapezoid": ("(Tensor y, Tensor x, *, int dim = -1)", "(Tensor y, *, Number dx = 1, int dim = -1)"),
    "trapz": ("(Tensor y, *, float dx = 1, int dim = -1)", "(Tensor y, Tensor x, *, int dim = -1)"),
    **{name: OVERLOADS[name] for name in ("clamp_min", "clamp_max", "float_power")},
    **{name: INPUT_OVERLOADS[name] for name in ("clamp_min_", "clamp_max_", "quantile", "nanquantile")},
    "nuclear_norm": ("(Tensor input, tuple of ints dim, bool keepdim = False, *, Tensor out = None)",
                     "(Tensor input, bool keepdim = False, *, Tensor out = None)"),
}


def _scalars_checked(function, name, after, specs=None):
    """``function`` (a method where ``after`` is 1) refusing a value of another type for the parameters SCALARS
    (or ``specs``) lists for ``name``, in torch's words."""
    overloads = SCALAR_OVERLOADS.get(name)
    if overloads and after:  # (a method's overloads, as torch prints them, have no leading Tensor)
        overloads = tuple(line.replace("(Tensor input, ", "(").replace("(Tensor input)", "()") for line in overloads)
    return _functional_checked(function, _TORCH_NAMES.get(name, name), "", specs or SCALARS[name], after, overloads)


# Functions taking Tensors one by one from a position (torch's Python packs them into one "tuple of Tensors"):
# name -> (that position, whether one list or tuple there is read as the Tensors themselves). A number, None or a
# list among them is torch's TypeError naming the element, where minilora's code failed on ``.ndim`` (an
# AttributeError) or took the list as a tensor (``broadcast_tensors([x])``)
TENSOR_SEQUENCES = {"meshgrid": (0, True), "einsum": (1, True), "atleast_1d": (0, True), "atleast_2d": (0, True),
                    "atleast_3d": (0, True), "broadcast_tensors": (0, False), "cartesian_prod": (0, False),
                    "chain_matmul": (0, False), "block_diag": (0, False)}


def _sequence_checked(function, first, unpacks):
    """``function`` refusing, in torch's words, a non-Tensor among the Tensors it takes from position ``first``."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        if first and not (args and isinstance(args[0], str)):  # (einsum(x, [0, 1], y, [1]): its sublist form)
            return function(*args, **kwargs)
        values = args[first:]
        if unpacks and len(values) == 1 and isinstance(values[0], (list, tuple)):
            values = values[0]
        for position, value in enumerate(values):
            if not isinstance(value, Tensor):
                raise TypeError(f"expected Tensor as element {position} in argument {first}, but got "
                                f"{_type_name(value)}")
        return function(*args, **kwargs)
    return call


# Top-level functions that are Python in torch and read an attribute of a Tensor argument first, in
# FUNCTIONAL_CHECKS' notation: torch.unravel_index(3, (4,)) is Python's AttributeError there, where minilora answered
PYTHON_TENSOR_CHECKS = {"unravel_index": "indices.is_complex"}


# Tensor methods whose one parameter is an ``int[]`` given whole or one int at a time (``x.repeat(2, 1)``,
# ``x.repeat((2, 1))``): method -> the parameter's name. A non-int is torch's parser's TypeError, in its three
# phrasings, where minilora's code raised int()'s ValueError or a ShapeError (x.permute(1.5, 0, 2)).
VARARG_SIZES = {"repeat": "repeats", "permute": "dims", "tile": "dims", "flip": "dims"}


# Top-level functions whose second parameter is an ``int[]``: one int there is torch's parser's TypeError
# (``torch.reshape(x, 5)``, ``torch.broadcast_to(x, 5)``), where the methods take it (``x.reshape(5)``: the sizes
# are varargs there). minilora's functions, the methods' code, answered.
SECOND_SIZE_LISTS = {"broadcast_to": "size", "expand_copy": "size", "reshape": "shape", "permute": "dims",
                     "permute_copy": "dims", "view_copy": "size"}


def _size_list_checked(function, name, parameter):
    @functools.wraps(function)
    def call(*args, **kwargs):
        positional = len(args) > 1
        value = args[1] if positional else kwargs.get(parameter)
        if isinstance(value, (numbers.Integral, float)) and len(args) <= 2:  # (more: torch counts them first)
            where = " (position 2)" if positional else ""
            raise TypeError(f"{name}(): argument '{parameter}'{where} must be tuple of ints, not {_type_name(value)}")
        return function(*args, **kwargs)
    return call


def _unpack_refusal(name, parameter, index, value):
    return TypeError(f"{name}(): argument '{parameter}' failed to unpack the object at pos {index + 1} with error "
                     f'"type must be tuple of ints,but got {type(value).__name__}"')


def _first_non_int(values):
    return next((index for index, value in enumerate(values) if not _one_int(value, ((), (1,)))), None)


def _varargs_checked(method, name, parameter):
    """``method`` refusing a non-int among its sizes as torch's parser does: a lone value that is neither an int nor
    a sequence (position 1), a first value that is not an int (torch then reads the rest as extra arguments, or a
    lone sequence as no tuple of ints), or a later element that is not an int (by its 1-based position)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if not all(arg.__class__ is int for arg in args):
            sizes = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
            if len(args) == 1 and sizes is args and not _one_int(args[0]):
                raise TypeError(f"{name}(): argument '{parameter}' (position 1) must be tuple of ints, not "
                                f"{_type_name(args[0])}")
            if len(args) > 1 and not _one_int(args[0]):
                raise TypeError(f"{name}() takes 1 positional argument but {len(args)} were given")
            bad = _first_non_int(sizes)
            if bad == 0:  # (one sequence whose first element is no int: torch's parser does not take it as ints)
                raise TypeError(f"{name}(): argument '{parameter}' (position 1) must be tuple of ints, but found "
                                f"element of type {type(sizes[0]).__name__} at pos 0")
            if bad is not None:
                raise _unpack_refusal(name, parameter, bad, sizes[bad])
        return method(self, *args, **kwargs)
    return call


# torch's factories that take TensorOptions read ``requires_grad=None`` as False (their parser's ``bool?``): the
# names below (read off torch 2.13 by passing None); torch.tensor, torch.range and x.new_tensor refuse it, as minilora
# does everywhere else (a leaf's flag is True or False: dtypes.bool_argument); normal reads it itself (only its size
# overload has the keyword: normal(mean_tensor, requires_grad=None) is refused)
OPTIONAL_REQUIRES_GRAD = """
    arange asarray bartlett_window blackman_window empty empty_like empty_strided eye full full_like hamming_window
    hann_window kaiser_window linspace logspace ones ones_like rand rand_like randint randint_like randn
    randn_like randperm scalar_tensor zeros zeros_like"""
OPTIONAL_REQUIRES_GRAD_METHODS = "new_empty new_empty_strided new_full new_ones new_zeros"


def _none_requires_grad(factory):
    """``factory`` reading ``requires_grad=None`` as False, as torch's TensorOptions factories do."""
    @functools.wraps(factory)
    def call(*args, **kwargs):
        if kwargs.get("requires_grad", False) is None:
            kwargs["requires_grad"] = False
        return factory(*args, **kwargs)
    return call


def _take_optional_requires_grad(namespace):
    for name in OPTIONAL_REQUIRES_GRAD.split():
        if callable(namespace.get(name)):
            namespace[name] = _none_requires_grad(namespace[name])
    for name in OPTIONAL_REQUIRES_GRAD_METHODS.split():
        setattr(Tensor, name, _none_requires_grad(getattr(Tensor, name)))


def check_tensor_arguments(namespace):
    """Wrap every name of ``TENSOR_PARAMETERS``, ``OVERLOADS`` and ``SCALARS`` found in ``namespace`` (the
    ``minilora`` module's dict), and the arithmetic of ``NUMBER_PAIRS``; and the Tensor methods of ``_METHOD_GROUPS``
    and ``SCALARS``."""
    _check_method_arguments()
    for name in SCALARS:
        if callable(getattr(Tensor, name, None)):
            setattr(Tensor, name, _scalars_checked(getattr(Tensor, name), name, after=1))
        if callable(namespace.get(name)):
            namespace[name] = _scalars_checked(namespace[name], name, after=0)
    for name, specs in FUNCTION_SCALARS.items():
        namespace[name] = _scalars_checked(namespace[name], name, 0, specs)
    for parameters, names in TENSOR_PARAMETERS.items():
        for name in names.split():
            if callable(namespace.get(name)):
                namespace[name] = _checked(namespace[name], _TORCH_NAMES.get(name, name), parameters)
    for name, overloads in OVERLOADS.items():
        if callable(namespace.get(name)):
            namespace[name] = _overloaded(namespace[name], name, overloads)
    for name in NUMBER_PAIRS.split():
        if callable(namespace.get(name)):
            namespace[name] = _taking_two_numbers(namespace[name])
    _take_optional_requires_grad(namespace)
    for name, parameter in VARARG_SIZES.items():
        setattr(Tensor, name, _varargs_checked(getattr(Tensor, name), name, parameter))
    for name, (first, unpacks) in TENSOR_SEQUENCES.items():
        namespace[name] = _sequence_checked(namespace[name], first, unpacks)
    for name, specs in PYTHON_TENSOR_CHECKS.items():
        namespace[name] = _functional_checked(namespace[name], name, specs, "")
    for name, parameter in SECOND_SIZE_LISTS.items():
        namespace[name] = _size_list_checked(namespace[name], name, parameter)


# ``minilora.nn.functional``: each name's leading parameters that torch 2.13 refuses a non-Tensor for (read off by
# calling each with a float, None and an ndarray in their place), as "param" where torch's argument parser refuses
# it (``dropout(): argument 'input' (position 1) must be Tensor, not int``; "logits=input": the parser's name for
# it; "#2": the position it gives) and "param.attribute" where torch's F function is Python that reads that
# attribute first (``F.tanh(3)``: ``'int' object has no attribute 'tanh'``). Without this, minilora's versions
# took a number, a list or None and answered (``F.dropout(3)``, ``F.tanh(2.0)``, ``F.mse_loss(x, 0)``) or failed
# inside in other words.
# F.linear and the in-place activations check their own arguments.
FUNCTIONAL_CHECKS = {
    "input": """
        adaptive_avg_pool1d adaptive_max_pool1d adaptive_max_pool1d_with_indices alpha_dropout avg_pool1d avg_pool2d
        avg_pool3d batch_norm celu celu_ channel_shuffle dropout elu elu_ feature_alpha_dropout fold gelu hardshrink
        hardsigmoid hardswish hardtanh hardtanh_ layer_norm leaky_relu leaky_relu_ logsigmoid max_pool1d
        max_pool1d_with_indices max_pool2d max_pool2d_with_indices max_pool3d mish multilabel_soft_margin_loss
        native_channel_shuffle one_hot pad pdist pixel_shuffle pixel_unshuffle relu relu6 relu_ rms_norm rrelu rrelu_
        selu selu_ silu softmin softplus softshrink threshold threshold_ unfold""",
    "input.dim": """
        dropout1d dropout2d dropout3d fractional_max_pool2d fractional_max_pool2d_with_indices fractional_max_pool3d
        fractional_max_pool3d_with_indices glu group_norm interpolate local_response_norm upsample upsample_bilinear
        upsample_nearest""",
    "input.size": """
        adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool2d adaptive_max_pool2d_with_indices adaptive_max_pool3d
        adaptive_max_pool3d_with_indices gaussian_nll_loss instance_norm""",
    "input target": """
        cross_entropy hinge_embedding_loss kl_div multi_margin_loss multilabel_margin_loss nll_loss poisson_nll_loss
        soft_margin_loss""",
    "input.size target.size": """
        binary_cross_entropy binary_cross_entropy_with_logits huber_loss l1_loss mse_loss smooth_l1_loss""",
    "input weight": "conv_transpose1d conv_transpose2d conv_transpose3d prelu",
    "input.pow": "lp_pool1d lp_pool2d lp_pool3d",
    "x1 x2": "cosine_similarity pairwise_distance",
    "input.size indices": "max_unpool2d max_unpool3d",
    "input.softmax": "softmax",  # (softmin's first step is -input: Python's TypeError there, "input"'s class)
    "input.tanh": "tanh tanhshrink",
    "theta.is_floating_point": "affine_grid",
    "input1 input2 weight": "bilinear",
    "input weight bias": "conv_tbc",
    "input1 input2 target": "cosine_embedding_loss",
    "input.dim weight.dtype": "embedding_bag",
    "input grid": "grid_sample",
    "logits=input": "gumbel_softmax",
    "input.dim linear_weight.dim target.shape": "linear_cross_entropy",
    "input.log_softmax": "log_softmax",
    "input1.dim input2.dim target.dim": "margin_ranking_loss",
    "input.is_cuda": "max_pool3d_with_indices",
    "input.size indices.unsqueeze": "max_unpool1d",
    "input.norm": "normalize",
    "query key value": "scaled_dot_product_attention",
    "input=indices#2 weight#1": "embedding",  # (torch.embedding(weight, indices) under it)
    "input.sigmoid": "sigmoid",
    "input.abs": "softsign",
    "anchor positive negative": "triplet_margin_loss",
    "anchor.ndim positive.ndim negative.ndim": "triplet_margin_with_distance_loss",
}
# the function torch's parser names, where it is not the F name
FUNCTIONAL_TORCH_NAMES = {
    "adaptive_max_pool1d_with_indices": "adaptive_max_pool1d", "cross_entropy": "cross_entropy_loss", "fold": "col2im",
    "grid_sample": "grid_sampler", "gumbel_softmax": "empty_like", "logsigmoid": "log_sigmoid",
    "multilabel_soft_margin_loss": "log_sigmoid", "nll_loss": "nll_loss_nd", "unfold": "im2col"}
# conv1d/2d/3d and ctc_loss are overloaded in torch: a non-Tensor there matches no overload
_CONV = ("(Tensor input, Tensor weight, Tensor bias = None, tuple of ints stride = 1, tuple of ints padding = 0, "
         "tuple of ints dilation = 1, int groups = 1)",
         "(Tensor input, Tensor weight, Tensor bias = None, tuple of ints stride = 1, str padding = \"valid\", "
         "tuple of ints dilation = 1, int groups = 1)")
_CTC = ("(Tensor log_probs, Tensor targets, tuple of ints input_lengths, tuple of ints target_lengths, int blank = 0, "
        "int reduction = at::Reduction::Mean, bool zero_infinity = False)",
        "(Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank = 0, "
        "int reduction = at::Reduction::Mean, bool zero_infinity = False)")
_CONV_TENSORS = ("input:Tensor", "weight:Tensor")
FUNCTIONAL_OVERLOADS = {"conv1d": (_CONV_TENSORS, _CONV), "conv2d": (_CONV_TENSORS, _CONV),
                        "conv3d": (_CONV_TENSORS, _CONV),
                        "ctc_loss": (("log_probs:Tensor", "targets:Tensor", "input_lengths:lengths",
                                      "target_lengths:lengths"), _CTC)}


# ``minilora.nn.functional``'s other parameters that torch's argument parser types, as "param:kind", kind one of
# torch's words (bool, int, float, Number, ints: "tuple of ints", pairs: the same after torch's Python made a tuple
# of it, Tensor), "?" where None passes, "@fn" where torch's message names another function (read off torch 2.13 by
# passing a string, then None). A string, a float for an int, None or a tensor of several numbers was taken here:
# ``F.max_pool2d(x, 2, ceil_mode="no")`` rounded up, ``F.layer_norm(x, [6], eps="0.5")`` and ``F.elu(x, "0.5")``
# converted the string, ``F.cross_entropy(x, t, ignore_index=1.5)`` ignored no target, ``F.avg_pool2d(x,
# tensor([2, 2]))`` pooled. (``dtype=`` is not here: dtypes.dtype_argument reads it, a name refused as torch's.)
FUNCTIONAL_SCALARS = {
    "adaptive_avg_pool1d": "output_size:ints",
    "adaptive_max_pool1d": "output_size:ints",
    "adaptive_max_pool1d_with_indices": "output_size:ints",
    "affine_grid": "align_corners:bool?@affine_grid_generator",
    "avg_pool1d": "kernel_size:ints stride:ints? padding:ints ceil_mode:bool count_include_pad:bool",
    "avg_pool2d": ("kernel_size:ints stride:ints? padding:ints ceil_mode:bool count_include_pad:bool "
                   "divisor_override:int?"),
    "avg_pool3d": ("kernel_size:ints stride:ints? padding:ints ceil_mode:bool count_include_pad:bool "
                   "divisor_override:int?"),
    "batch_norm": "running_mean:Tensor? running_var:Tensor? weight:Tensor? bias:Tensor? training:bool momentum:float",
    "bilinear": "bias:Tensor?",
    "binary_cross_entropy_with_logits": "weight:Tensor? pos_weight:Tensor?",
    "celu": "alpha:Number",
    "celu_": "alpha:Number",
    "channel_shuffle": "groups:int",
    "conv1d": "bias:Tensor? stride:ints dilation:ints groups:int",
    "conv2d": "bias:Tensor? stride:ints dilation:ints groups:int",
    "conv3d": "bias:Tensor? stride:ints dilation:ints groups:int",
    "conv_tbc": "pad:int",
    "conv_transpose1d": "bias:Tensor? stride:ints padding:ints output_padding:ints groups:int dilation:ints",
    "conv_transpose2d": "bias:Tensor? stride:ints padding:ints output_padding:ints groups:int dilation:ints",
    "conv_transpose3d": "bias:Tensor? stride:ints padding:ints output_padding:ints groups:int dilation:ints",
    "cosine_embedding_loss": "margin:float",
    "cosine_similarity": "dim:int eps:float",
    "cross_entropy": "weight:Tensor? ignore_index:int label_smoothing:float",
    "ctc_loss": "blank:int zero_infinity:bool",
    "elu": "alpha:Number",
    "elu_": "alpha:Number",
    "embedding": "max_norm:float?@embedding_renorm_ scale_grad_by_freq:bool sparse:bool",
    "embedding_bag": ("max_norm:float?@embedding_renorm_ scale_grad_by_freq:bool sparse:bool "
                      "include_last_offset:bool padding_idx:int?"),
    "fractional_max_pool2d": "kernel_size:ints output_size:ints?",
    "fractional_max_pool2d_with_indices": ("kernel_size:ints@fractional_max_pool2d "
                                           "output_size:ints?@fractional_max_pool2d"),
    "fractional_max_pool3d": "kernel_size:ints output_size:ints?",
    "fractional_max_pool3d_with_indices": ("kernel_size:ints@fractional_max_pool3d "
                                           "output_size:ints?@fractional_max_pool3d"),
    "glu": "dim:int",
    "grid_sample": "align_corners:bool?",
    "group_norm": "num_groups:int weight:Tensor? bias:Tensor? eps:float",
    "fold": "output_size:pairs kernel_size:pairs dilation:pairs padding:pairs stride:pairs",
    "unfold": "kernel_size:pairs dilation:pairs padding:pairs stride:pairs",
    "gumbel_softmax": "dim:int@softmax",
    "hardshrink": "lambd:Number",
    "hardtanh_": "min_val:Number max_val:Number",
    "hinge_embedding_loss": "margin:float",
    "huber_loss": "delta:float",
    "instance_norm": ("running_mean:Tensor? running_var:Tensor? weight:Tensor? bias:Tensor? use_input_stats:bool "
                      "momentum:float eps:float"),
    "interpolate": "size:ints?",  # (torch's upsample kernels' "invalid combination" for a tensor of sizes)
    "upsample": "size:ints?", "upsample_nearest": "size:ints?", "upsample_bilinear": "size:ints?",
    "kl_div": "log_target:bool",
    "layer_norm": "normalized_shape:ints weight:Tensor? bias:Tensor? eps:float",
    "leaky_relu": "negative_slope:Number",
    "leaky_relu_": "negative_slope:Number",
    "linear_cross_entropy": ("weight:Tensor?@cross_entropy_loss ignore_index:int?@cross_entropy_loss "
                             "label_smoothing:float@cross_entropy_loss"),
    "log_softmax": "dim:int?",
    "lp_pool1d": "kernel_size:ints@avg_pool1d stride:ints?@avg_pool1d ceil_mode:bool@avg_pool1d",
    "lp_pool2d": "kernel_size:ints@avg_pool2d stride:ints?@avg_pool2d ceil_mode:bool@avg_pool2d",
    "lp_pool3d": "stride:ints?@avg_pool3d ceil_mode:bool@avg_pool3d",
    "margin_ranking_loss": "margin:float",
    "max_pool1d": "kernel_size:ints stride:ints? padding:ints dilation:ints ceil_mode:bool",
    "max_pool1d_with_indices": "kernel_size:ints stride:ints? padding:ints dilation:ints ceil_mode:bool",
    "max_pool2d": "kernel_size:ints stride:ints? padding:ints dilation:ints ceil_mode:bool",
    "max_pool2d_with_indices": "kernel_size:ints stride:ints? padding:ints dilation:ints ceil_mode:bool",
    "max_pool3d": "kernel_size:ints stride:ints? padding:ints dilation:ints ceil_mode:bool",
    "max_pool3d_with_indices": "kernel_size:ints stride:ints? padding:ints dilation:ints ceil_mode:bool",
    "max_unpool1d": "kernel_size:ints stride:ints? padding:ints output_size:ints?",  # (torch's Python fails in
    "max_unpool2d": "kernel_size:ints stride:ints? padding:ints output_size:ints?",  # arithmetic on a string: a
    "max_unpool3d": "kernel_size:ints stride:ints? padding:ints output_size:ints?",  # TypeError too)
    "multi_margin_loss": "margin:Number",
    "native_channel_shuffle": "groups:int",
    "nll_loss": "weight:Tensor? ignore_index:int",
    "normalize": "dim:ints?@linalg_vector_norm",
    "one_hot": "num_classes:int",
    "pad": "pad:ints value:float?",
    "pairwise_distance": "p:float eps:float keepdim:bool",
    "pdist": "p:float",
    "pixel_shuffle": "upscale_factor:int",
    "pixel_unshuffle": "downscale_factor:int",
    "poisson_nll_loss": "log_input:bool full:bool eps:float",
    "rms_norm": "normalized_shape:ints weight:Tensor? eps:float?",
    "rrelu": "lower:Number upper:Number training:bool",
    "rrelu_": "lower:Number upper:Number training:bool",
    "scaled_dot_product_attention": "attn_mask:Tensor? dropout_p:float is_causal:bool scale:float? enable_gqa:bool",
    "smooth_l1_loss": "beta:float",
    "softmax": "dim:int?",
    "softmin": "dim:int?@softmax",
    "softplus": "beta:Number threshold:Number",
    "softshrink": "lambd:Number",
    "threshold": "threshold:Number value:Number",
    "threshold_": "threshold:Number value:Number",
    "triplet_margin_loss": "p:float eps:float swap:bool",
}
_WORDS = {"ints": "tuple of ints", "pairs": "tuple of ints", "sizes": "tuple of ints", "tensors": "tuple of Tensors",
          "dtype": "torch.dtype"}


def _one_int(value, shapes=((),)):
    """An int as torch's parser takes one: a Python or NumPy int, or an integer tensor of one of ``shapes`` (0-d;
    a tuple-of-ints element may be [1] too). A float, a string, a list, a tensor of several elements is not."""
    if isinstance(value, Tensor):
        return value.dtype.kind in "iu" and tuple(value.shape) in shapes
    return isinstance(value, (int, np.integer))


def _accepts_ints(value):
    """torch's "tuple of ints": an int, or a sequence of them (a float element is refused by position)."""
    if _one_int(value, ((), (1,))):
        return True
    if isinstance(value, (list, tuple)):
        for position, element in enumerate(value):
            if not _one_int(element, ((), (1,))):
                return position
        return True
    return False


def _one_number(value):
    """A float or Number as torch's parser takes one: a Python or NumPy number, or a 0-d tensor."""
    if isinstance(value, Tensor):
        return value.ndim == 0
    return isinstance(value, (numbers.Number, np.generic))


def _is_dtype(value):
    """A dtype as torch's parser takes one (``dtypes.dtype_argument``'s: a dtype, or float, int, bool, complex)."""
    try:
        dtypes.dtype_argument(None, value)
    except TypeError:
        return False
    return True


def _accepts_sizes(value):
    """torch's "tuple of ints" for an ``int[]`` of no fixed length after the first argument: a sequence of ints (a
    bare int is refused: ``torch.flip(x, 0)``, ``x.as_strided(2, 2)``)."""
    return _accepts_ints(value) if isinstance(value, (list, tuple)) else False


def _first_non_tensor(values):
    """True where every one of ``values`` is a Tensor, else the position of the first that is not (torch's "tuple of
    Tensors": ``index_put(x, (i, None), v)`` is refused)."""
    return next((position for position, value in enumerate(values) if not isinstance(value, Tensor)), True)


_ACCEPTS = {
    "bool": lambda value: value is True or value is False,  # (NumPy's bool too is refused, as torch's parser)
    "sizes": _accepts_sizes,
    "dtype": lambda value: _is_dtype(value),
    "TensorOrNumber": lambda value: isinstance(value, (Tensor, numbers.Number, np.generic)),
    "tensors": lambda value: _first_non_tensor(value) if isinstance(value, (list, tuple)) else False,
    "int": _one_int,
    "float": _one_number,
    "Number": _one_number,
    "Tensor": lambda value: isinstance(value, Tensor),
    "ints": _accepts_ints,
    # fold's and unfold's sizes, which torch's Python turns into a tuple first (``_pair``): a 1-D tensor of ints too
    "pairs": lambda value: _accepts_ints(value) is True or (isinstance(value, Tensor) and value.ndim == 1 and
                                                           value.dtype.kind in "iu"),
    # ctc_loss's lengths: a Tensor or a sequence of ints (a bare int matches no overload)
    "lengths": lambda value: isinstance(value, Tensor) or (isinstance(value, (list, tuple)) and
                                                          _accepts_ints(value) is True),
}


# per kind, the classes that pass at once (the common case costs a set lookup); anything else is looked at closer
_PLAIN = {"bool": {bool}, "int": {int}, "float": {float, int}, "Number": {float, int}, "ints": {int},
          "pairs": {int}, "Tensor": {Tensor}, "sizes": set(), "tensors": set(),
          "dtype": set(), "TensorOrNumber": {Tensor, int, float}}


def _tensor_refusal(name, spec, index):
    """(parameter, classes passing, refuse) for a leading Tensor parameter described by ``spec`` ("param",
    "param=torch_name" or "param.attribute"): refuse(value, by_position) raises torch's error for a non-Tensor."""
    spec, _, position = spec.partition("#")
    parameter, _, attribute = spec.partition(".")
    parameter, _, torch_parameter = parameter.partition("=")
    torch_parameter, position = torch_parameter or parameter, int(position or index + 1)

    def refuse(value, by_position):
        if not isinstance(value, Tensor):
            if attribute:  # torch's Python reads value.<attribute> first: Python's own AttributeError, word for word
                getattr(value, attribute)  # (an ndarray has .size, .shape, .dtype: then torch fails on it otherwise)
            where = f" (position {position})" if by_position or not attribute else ""
            raise TypeError(f"{name}(): argument '{torch_parameter}'{where} must be Tensor, not {_type_name(value)}")
    return parameter, frozenset({Tensor}), refuse


def _scalar_refusal(name, spec, index, after=0):
    """(parameter, classes passing, refuse) for the parameter at ``index`` of FUNCTIONAL_SCALARS described by
    ``spec`` ("param:kind?@fn"); ``after=1``: a method's, whose position torch counts after self."""
    spec, _, torch_name = spec.partition("@")
    parameter, _, kind = spec.partition(":")
    overloaded = kind.endswith("+")
    kind = kind.rstrip("+")
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    accepts, word, fn = _ACCEPTS[kind], _WORDS.get(kind, kind), torch_name or name

    def refuse(value, by_position):
        if value is None and optional:
            return
        verdict = accepts(value)
        if verdict is True:
            return
        where = f" (position {index + 1 - after})" if by_position else ""
        if verdict is not False and kind == "tensors":  # (a tuple of Tensors with a None in it: which, as torch)
            raise TypeError(f"expected Tensor as element {verdict} in argument {index - after}, but got "
                            f"{_type_name(value[verdict])}")
        if verdict is not False:  # (a tuple of ints with a float in it: which)
            raise TypeError(f"{fn}(): argument '{parameter}'{where} must be {word}, but found element of type "
                            f"{type(value[verdict]).__name__} at pos {verdict}")
        raise TypeError(f"{fn}(): argument '{parameter}'{where} must be {word}, not {_type_name(value)}")
    refuse.overloaded = overloaded
    return parameter, frozenset(_PLAIN[kind] | ({type(None)} if optional else set())), refuse


def _functional_checked(function, torch_name, tensors, scalars, after=0, overloads=None):
    """``function`` refusing, in torch's words, a non-Tensor for the leading parameters ``tensors`` describes (None
    included) and a value of another type for those of ``scalars`` (``torch_name``: the name torch's message gives;
    ``after=1``: a method's parameters; ``overloads``: torch's, whose parser refuses the call as a whole)."""
    order = list(inspect.signature(function).parameters)
    checks = [(index, *_tensor_refusal(torch_name, spec, index)) for index, spec in enumerate(tensors.split())]
    for spec in scalars.split():
        index = order.index(spec.partition(":")[0])
        checks.append((index, *_scalar_refusal(torch_name, spec, index, after)))

    @functools.wraps(function)
    def call(*args, **kwargs):
        given = len(args)
        for index, parameter, plain, refuse in checks:
            value = args[index] if index < given else kwargs.get(parameter, _MISSING)
            if value.__class__ not in plain and value is not _MISSING:
                try:
                    refuse(value, index < given)
                except TypeError:
                    if not getattr(refuse, "overloaded", False):
                        raise
                    raise _invalid_combination(torch_name, args[after:], kwargs, overloads, bool(after)) from None
        return function(*args, **kwargs)
    return call


def _combination_checked(function, name, specs, overloads):
    """``function`` refusing, as torch's overloaded parser does, a call whose parameters in ``specs`` ("param:kind")
    are of another kind."""
    checks = [(parameter, _ACCEPTS[kind]) for parameter, _, kind in (spec.partition(":") for spec in specs)]

    @functools.wraps(function)
    def call(*args, **kwargs):
        values = [(args[i] if i < len(args) else kwargs.get(p, _MISSING), accepts) for i, (p, accepts) in
                  enumerate(checks)]
        if any(v is not _MISSING and accepts(v) is not True for v, accepts in values):
            raise _invalid_combination(name, args, kwargs, overloads)
        return function(*args, **kwargs)
    return call


def check_functional_arguments(namespace):
    """Wrap the names of ``FUNCTIONAL_CHECKS``, ``FUNCTIONAL_SCALARS`` and ``FUNCTIONAL_OVERLOADS`` in ``namespace``
    (``nn.functional``'s)."""
    tensors = {name: specs for specs, names in FUNCTIONAL_CHECKS.items() for name in names.split()}
    for name in sorted(set(tensors) | set(FUNCTIONAL_SCALARS)):
        namespace[name] = _functional_checked(namespace[name], FUNCTIONAL_TORCH_NAMES.get(name, name),
                                              tensors.get(name, ""), FUNCTIONAL_SCALARS.get(name, ""))
    for name, (parameters, overloads) in FUNCTIONAL_OVERLOADS.items():
        namespace[name] = _combination_checked(namespace[name], name, parameters, overloads)
