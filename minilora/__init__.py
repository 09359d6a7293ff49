"""minilora: LoRA from the autograd engine down to the CUDA kernels.

    import minilora as ml
    x = ml.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad  # [[2., 4.]]
"""
import builtins as _builtins
import math as _math
import types as _types

import numpy as _np

from . import autograd, dtypes, factories, ops
from .autograd import is_anomaly_enabled  # noqa: F401  (torch.is_anomaly_enabled)
from .device import Device, all_devices, device, get_default_device, set_default_device
from .parallel import num_threads, set_num_threads
from .profiler import profile
from .random import Generator, default_generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .dtypes import to_dtype as _to_dtype
# dtypes by torch's names (they shadow the builtins bool/float/int inside this module only, as in torch)
from .dtypes import (bool, double, float, float16, float32, float64, get_default_dtype,  # noqa: E402,F401,A004
                     half, int, int8, int16, int32, int64, long, promote_types, result_type,
                     set_default_dtype, short, uint8)
from .dtypes import can_cast, finfo, iinfo  # noqa: E402,F401  (torch.can_cast, torch.finfo, torch.iinfo)
from .tensor import Size  # noqa: E402,F401
from ._tensor_str import set_printoptions  # noqa: E402,F401  (torch.set_printoptions)
from .tensor import (Tensor, enable_grad, inference_mode, is_grad_enabled,
                     is_inference_mode_enabled, no_grad, set_grad_enabled, tensor)
from .tensor import refuse_negative_strides as _refuse_negative_strides  # noqa: E402

__version__ = "0.1.0"


def arange(start=None, end=None, step=1, *, dtype=None, layout=None, device=None, pin_memory=False,
           requires_grad=False):
    """``arange(5)`` is int64 and ``arange(0, 1, 0.25)`` float32: as torch, the dtype is the default
    float dtype when any bound or the step is a float, else int64. Values are torch's CPU kernel's
    (``factories.arange_values``: ``start + i * step`` by its vectors' bases and lanes, bit for bit), with
    ``ceil((end - start) / step)`` of them; bounds the step walks away from are an error, as torch."""
    if layout is not None or pin_memory is not False:
        factories.check_layout("arange", layout, pin_memory, device)
    if start is None and end is None:  # (arange() was an empty tensor)
        raise TypeError("arange() received an invalid combination of arguments - got (), but expected (Number end) "
                        "or (Number start, Number end, Number step)")
    start = 0 if start is None else start  # (arange(end=3), as torch)
    if end is None and not (isinstance(step, _builtins.int) and step == 1):  # (torch's arange(end) has no step)
        raise TypeError("arange() received an invalid combination of arguments: a step goes with arange(start, end, "
                        "step), not arange(end)")
    if end is None:
        start, end = 0, start
    bounds = [b.item() if isinstance(b, Tensor) else b for b in (start, end, step)]
    if dtype is None:
        floating = _builtins.any(isinstance(b, _builtins.float) for b in bounds)
        dtype = dtypes.get_default_dtype() if floating else dtypes.int64
    dtype = dtypes.dtype_argument("arange", dtype)
    start, end, step = bounds
    if dtype == dtypes.bool or dtype.kind == "c":
        raise NotImplementedError(f"\"arange_cpu\" not implemented for '{dtypes.torch_name(dtype)}'")
    factories.check_range(start, end, step)  # (before int64 truncates the bounds: arange(-0.75, dtype=int64) too)
    if dtype == dtypes.int64 and not _builtins.all(isinstance(b, _builtins.int) for b in bounds):
        # torch reads int64 bounds as integers first: arange(0.5, 5, 1.5, dtype=int64) is arange(0, 5, 1)
        start, end, step = (_builtins.int(b) for b in bounds)
        if step == 0:
            raise ValueError("step must be nonzero")
    if (end - start) * step < 0:  # arange(4, 1): torch refuses rather than return nothing
        raise RuntimeError("upper bound and lower bound inconsistent with step sign")
    exact = dtype == dtypes.int64  # torch counts int64 ranges in integers, every other dtype's in float64
    count = _builtins.max(0, -((start - end) // step) if exact else
                         _math.ceil((_builtins.float(end) - _builtins.float(start)) / _builtins.float(step)))
    if count * dtype.itemsize >= 2 ** 63:  # (NumPy's arange of such a count was empty)
        raise RuntimeError(f"Storage size calculation overflowed with sizes=[{count}]")
    if dtype.kind in "iu":  # the count from the real bounds, the values from start and step cut to
        # integers, wrapped into the dtype as torch's kernel casts them (uint8 from 250 by 10: 250, 4, 14 ...)
        values = (_builtins.int(start) + _np.arange(count, dtype=_np.int64) * _builtins.int(step)).astype(dtype)
    else:  # (torch's kernel: its vectors' bases and lanes, fused where its build fuses)
        values = factories.arange_values(start, step, count, dtype)
    return Tensor(values, dtype=dtype, device=device, requires_grad=requires_grad)


from .factories import with_out as _with_out  # noqa: E402

arange = _with_out(arange)  # (torch.arange(5, out=t))


def from_numpy(ndarray):
    """``torch.from_numpy``: a CPU tensor sharing ``ndarray``'s memory (whatever the default device:
    sharing memory with a NumPy array is only possible on the CPU)."""
    if not isinstance(ndarray, _np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    _refuse_negative_strides(ndarray)
    ndarray = dtypes.canonical(ndarray)  # (an equal copy of bfloat16's dtype: the registered one, shared)
    return Tensor(ndarray, dtype=ndarray.dtype, device="cpu")


# The op wrappers at top level too, as torch.exp / torch.cat users expect.
from .ops import (abs, add, argmax, cat, clone, div, exp, log, log_softmax, logsumexp, matmul,  # noqa: E402,F401
                  max, mean, mul, neg, pow, relu, reshape, rsqrt, sigmoid, softmax, split, sqrt,
                  stack, sub, sum, tanh, transpose, var, where)
from .ops import floor_divide, index_put, permute  # noqa: E402,F401
from .ops import bitwise_left_shift, bitwise_right_shift  # noqa: E402,F401
from .ops import (bitwise_and, bitwise_not, bitwise_or, bitwise_xor, einsum, flip,  # noqa: E402,F401
                  logical_and, logical_not, logical_or, remainder)
from .ops import (allclose, bmm, ceil, dot, equal, floor, isclose, mm, outer, round, trunc,  # noqa: E402,F401,A004
                  unbind)
from .ops import (all, amax, amin, any, argmin, argsort, chunk, clamp, clip, cos, cumsum, eq, flatten,  # noqa: E402,F401
                  gather, ge, gt, isfinite, isinf, isnan, le, lt, maximum, minimum, min, ne, nonzero,
                  norm, prod, sign, sin, sort, squeeze, std, topk, tril, triu, unsqueeze)
from .ops import (addmm, baddbmm, bincount, clamp_max, clamp_min, count_nonzero, cumprod, diag,  # noqa: E402,F401
                  diagonal, expm1, index_add, index_select, lerp, log1p, masked_select, median,
                  movedim, narrow, reciprocal, repeat_interleave, roll, scatter, scatter_add, square,
                  swapaxes, take_along_dim, tile, unique, xlogy)
from .ops import (addcdiv, addcmul, broadcast_to, diff, fmod, hstack, log10, log2, logical_xor,  # noqa: E402,F401
                  meshgrid, select, std_mean, trace, unflatten, var_mean, vstack)
from .ops import (acos, acosh, aminmax, arctan2, asin, asinh, atan, atan2, atanh, cosh, cross,  # noqa: E402,F401
                  cummax, cummin, erf, exp2, kthvalue, logaddexp, nan_to_num, sinh, tan)
from .ops import bucketize, searchsorted  # noqa: E402,F401
from .ops import index_fill, tensor_split  # noqa: E402,F401
from .ops import (atleast_1d, atleast_2d, atleast_3d, column_stack, diag_embed, dsplit, dstack,  # noqa: E402,F401
                  fliplr, flipud, hsplit, index_copy, masked_scatter, narrow_copy, put, ravel, rot90,
                  scatter_reduce, take, vsplit)
from .ops import nanmean, nansum  # noqa: E402,F401
from .factories import (channels_last, channels_last_3d, contiguous_format,  # noqa: E402,F401
                        memory_format, preserve_format)
from .factories import (_mkldnn, jagged, layout, sparse_bsc, sparse_bsr, sparse_coo,  # noqa: E402,F401
                        sparse_csc, sparse_csr, strided)
from .ops import as_strided, as_strided_, as_strided_scatter  # noqa: E402,F401
from .ops import movedim as moveaxis, swapaxes as swapdims  # noqa: E402,F401  (torch's other names)
# torch's functions that are the methods of the same name (torch.t(x) is x.t()) or their other names
t, masked_fill, negative = Tensor.t, Tensor.masked_fill, Tensor.negative
multiply, subtract, divide = Tensor.multiply, Tensor.subtract, Tensor.divide
from .ops import cat as concat, cat as concatenate  # noqa: E402,F401
from .ops import mode, mv  # noqa: E402,F401  (from ops: with torch's out=)
from .ops.elementwise import rsub  # noqa: E402,F401
from .ops import copysign, fmax, fmin, hypot, sgn, signbit  # noqa: E402,F401  (from ops: with out=)
from .ops import logcumsumexp, nanmedian  # noqa: E402,F401
from .ops import dist, inner, kron, tensordot, true_divide, vdot  # noqa: E402,F401
from .ops import nanquantile, quantile  # noqa: E402,F401
# torch's top-level in-place activations: torch.relu_(x) is x.relu_() (torch.nn.functional has the others)
relu_, sigmoid_, tanh_ = Tensor.relu_, Tensor.sigmoid_, Tensor.tanh_
clamp_, clip_, clamp_min_, clamp_max_ = Tensor.clamp_, Tensor.clip_, Tensor.clamp_min_, Tensor.clamp_max_
# ... and of the pointwise ops: torch.exp_(x) is x.exp_() (tests/test_autograd_r6_saved.py lists torch's)
abs_, acos_, acosh_, asin_, asinh_, atan_, atanh_ = (Tensor.abs_, Tensor.acos_, Tensor.acosh_, Tensor.asin_,
                                                     Tensor.asinh_, Tensor.atan_, Tensor.atanh_)
ceil_, cos_, cosh_, erf_, exp2_, exp_, expm1_, floor_ = (Tensor.ceil_, Tensor.cos_, Tensor.cosh_, Tensor.erf_,
                                                         Tensor.exp2_, Tensor.exp_, Tensor.expm1_, Tensor.floor_)
log10_, log1p_, log2_, log_, neg_, negative_ = (Tensor.log10_, Tensor.log1p_, Tensor.log2_, Tensor.log_,
                                                Tensor.neg_, Tensor.negative_)
reciprocal_, round_, rsqrt_, sin_, sinh_, sqrt_ = (Tensor.reciprocal_, Tensor.round_, Tensor.rsqrt_, Tensor.sin_,
                                                   Tensor.sinh_, Tensor.sqrt_)
square_, tan_, trunc_, xlogy_, nan_to_num_, index_put_, logit_ = (
    Tensor.square_, Tensor.tan_, Tensor.trunc_, Tensor.xlogy_, Tensor.nan_to_num_, Tensor.index_put_, Tensor.logit_)
fill_, zero_, detach_ = Tensor.fill_, Tensor.zero_, Tensor.detach_
from .ops import celu, logit, selu  # noqa: E402,F401
from .tensor import scalar_tensor  # noqa: E402,F401
from .factories import as_tensor, asarray  # noqa: E402,F401
from .factories import is_floating_point  # noqa: E402,F401
from .factories import (empty, empty_like, eye, full, full_like, is_tensor, linspace, logspace,  # noqa: E402,F401
                        normal, bernoulli, poisson, randint_like, histc, histogram, histogramdd,
                        multinomial, numel, randperm, ones, ones_like, rand, rand_like, randint, randn,
                        randn_like, tril_indices, triu_indices, zeros, zeros_like)
from .ops.gamma import (binomial, dirichlet_grad as _dirichlet_grad,  # noqa: E402,F401
                        sample_dirichlet as _sample_dirichlet, standard_gamma as _standard_gamma,
                        standard_gamma_grad as _standard_gamma_grad)
from . import amp  # noqa: E402,F401  (torch.amp: autocast, GradScaler)
from .amp import (autocast, clear_autocast_cache, get_autocast_dtype, is_autocast_cache_enabled,  # noqa: E402,F401
                  is_autocast_enabled, set_autocast_cache_enabled, set_autocast_dtype, set_autocast_enabled)
from .amp import (get_autocast_cpu_dtype, get_autocast_gpu_dtype, is_autocast_cpu_enabled,  # noqa: E402,F401
                  set_autocast_cpu_dtype, set_autocast_cpu_enabled, set_autocast_gpu_dtype)  # (torch's older names)
cpu = _types.ModuleType("minilora.cpu", "torch.cpu's amp: the deprecated torch.cpu.amp.autocast / GradScaler")
cpu.amp = amp.cpu_amp

# torch's top-level names for dropout and some activations, with torch's arguments (torch.dropout(x, p,
# train) is F.dropout(x, p, train)). Those nn.functional implements are reached through this module's
# lazy ``nn`` (see __getattr__), as a user's ``minilora.nn`` is: the root package sits on every layer.
def dropout(input, p, train): return ops.dropout(input, p, train)
def dropout_(input, p, train): return ops.dropout(input, p, train, inplace=True)
def alpha_dropout(input, p, train): return _functional().alpha_dropout(input, p, train)
def alpha_dropout_(input, p, train): return _functional().alpha_dropout(input, p, train, inplace=True)
def feature_alpha_dropout(input, p, train): return _functional().feature_alpha_dropout(input, p, train)
def feature_alpha_dropout_(input, p, train):
    return _functional().feature_alpha_dropout(input, p, train, inplace=True)
def celu_(input, alpha=1.0): return _functional().celu_(input, alpha)
def selu_(input): return _functional().selu_(input)
def threshold(input, threshold, value): return _functional().threshold(input, threshold, value)
def threshold_(input, threshold, value): return _functional().threshold_(input, threshold, value)
def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False): return _functional().rrelu(input, lower, upper, training)
def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False): return _functional().rrelu_(input, lower, upper, training)


def _functional():
    return __getattr__("nn").functional


# Sub-packages load on first use (``ml.nn``, ``ml.optim``, ``ml.lora`` ...), as ``torch.nn`` users
# expect, without making ``import minilora`` pay for all of them.
_SUBMODULES = {"nn", "optim", "lora", "cuda", "models", "memory", "data", "train", "generate", "tokenizer", "utils",
               "trainer", "accelerator", "distributions", "signal",
               "emulator", "kernels", "checkpoint", "testing", "exercises", "serialization", "futures"}
# Names whose module loads on first use: bfloat16 imports ml_dtypes (~0.7 s), torch.save/torch.load's
# file formats (serialization, torch_format) ~40 ms that a program not saving anything need not pay.
_LAZY_NAMES = {"bfloat16": "dtypes", "load": "serialization", "save": "serialization",
               "BFloat16Storage": "storage"}


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        import importlib
        value = globals()[name] = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
        return value
    raise AttributeError(f"module 'minilora' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAMES))


# torch.linalg, and torch's top-level spellings of its functions (torch.svd returns V, not Vh; torch.det ...)
from . import linalg  # noqa: E402
from .linalg import (det, logdet, matrix_exp, matrix_power, pinverse, ger, svd_lowrank, pca_lowrank)  # noqa: E402,F401
from .linalg import old_cholesky as cholesky, old_qr as qr, old_slogdet as slogdet, old_svd as svd  # noqa: E402,F401
from .linalg import inv as inverse  # noqa: E402,F401
from .linalg import (cholesky_inverse, cholesky_solve, geqrf, householder_product as orgqr, lu_unpack, ormqr,  # noqa: E402,F401
                     triangular_solve, old_lu as lu, old_lu_solve as lu_solve)
# complex tensors (minilora/complex_numbers.py: dtypes, views, polar, torch's complex gradients)
from .complex_numbers import (adjoint, angle, cdouble, cfloat, complex, complex64, complex128, conj,  # noqa: E402,F401,A004
                              conj_physical, conj_physical_, imag, is_complex, polar, real, resolve_conj, resolve_neg,
                              view_as_complex, view_as_real)
from . import fft  # noqa: E402  (torch.fft)
# torch.stft and the window factories (torch.hann_window ...): minilora/spectral.py
from .spectral import (bartlett_window, blackman_window, hamming_window, hann_window, istft,  # noqa: E402,F401
                       kaiser_window, stft)
# torch's second names and small functions (torch.arccos, torch.greater, torch.cov ...: minilora/ops/extra.py)
from .ops.extra import (absolute, addbmm, addmv, addr, arccos, arccosh, arcsin, arcsinh, arctan,  # noqa: E402,F401
                        arctanh, argwhere, block_diag, broadcast_shapes, broadcast_tensors, cartesian_prod,
                        chain_matmul, combinations, corrcoef, cov, cumulative_trapezoid, deg2rad, detach, diagflat,
                        fill, fix, float_power, frac, frobenius_norm, get_device, is_conj, is_inference, is_neg,
                        is_nonzero, is_same_size, is_signed, nuclear_norm,
                        gcd, greater, greater_equal, heaviside, isin, isneginf, isposinf, isreal, lcm, ldexp, less,
                        less_equal, logaddexp2, msort, not_equal, positive, rad2deg, sinc, trapezoid, trapz,
                        unique_consecutive, unravel_index, vander)
from .ops import split_with_sizes  # noqa: E402,F401
from . import _functional_names  # noqa: E402,F401
from ._functional_names import (adaptive_avg_pool1d, adaptive_max_pool1d, avg_pool1d, batch_norm,  # noqa: E402,F401
                                binary_cross_entropy_with_logits, bilinear, cdist, channel_shuffle, conv1d, conv2d,
                                conv3d, constant_pad_nd, conv_transpose1d, conv_transpose2d, conv_transpose3d,
                                cosine_embedding_loss, cosine_similarity,
                                embedding, feature_dropout, feature_dropout_, group_norm, hardshrink,
                                hinge_embedding_loss, instance_norm, kl_div, layer_norm, margin_ranking_loss,
                                max_pool1d, max_pool2d, max_pool3d, pdist,
                                pairwise_distance, pixel_shuffle, pixel_unshuffle, poisson_nll_loss, prelu, rms_norm,
                                triplet_margin_loss)
# torch's native_* ops: the norms' and dropout's outputs with their saved statistics (minilora/ops/native_forms.py)
from ._functional_names import native_channel_shuffle  # noqa: E402,F401
from .ops.native_forms import (batch_norm_update_stats, native_batch_norm, native_dropout,  # noqa: E402,F401
                               native_group_norm, native_layer_norm, native_norm, norm_except_dim)
from .ops.native_forms import (batch_norm_backward_elemt, batch_norm_backward_reduce, batch_norm_elemt,  # noqa: E402,F401
                               batch_norm_gather_stats, batch_norm_gather_stats_with_counts, batch_norm_stats)
# torch's functional recurrent cells and layers (torch.lstm_cell, torch.gru ...: minilora/ops/recurrent.py, which
# nn.LSTM / GRU / RNN run)
from .ops.recurrent import (gru, gru_cell, lstm, lstm_cell, rnn_relu, rnn_relu_cell, rnn_tanh,  # noqa: E402,F401
                            rnn_tanh_cell)
from ._functional_names import (affine_grid_generator, conv_tbc, convolution, ctc_loss, embedding_bag,  # noqa: E402,F401
                                embedding_renorm_, grid_sampler, grid_sampler_2d, grid_sampler_3d,
                                max_pool1d_with_indices)
from .ops.segments import segment_reduce  # noqa: E402,F401
from .lobpcg import lobpcg  # noqa: E402,F401  (torch._lobpcg's algorithm: minilora/lobpcg.py)
from .device import AcceleratorError, OutOfMemoryError  # noqa: E402,F401  (torch.cuda.OutOfMemoryError too)
# torch.sym_int ... sym_sum on plain numbers, torch.cond / while_loop / fork / wait run eagerly
from .control_flow import (cond, fork, sym_float, sym_int, sym_ite, sym_max, sym_min, sym_not,  # noqa: E402,F401
                           sym_sqrt, sym_sum, wait, while_loop)
addmv_, negative_, fill_ = Tensor.addmv_, Tensor.negative_, Tensor.fill_  # (torch's top-level in-place forms)
arccos_, arcsin_, arctan_, arccosh_, arcsinh_, arctanh_ = (Tensor.arccos_, Tensor.arcsin_, Tensor.arctan_,
                                                           Tensor.arccosh_, Tensor.arcsinh_, Tensor.arctanh_)
fix_, frac_, deg2rad_, rad2deg_, sinc_, gcd_, lcm_, ldexp_ = (Tensor.fix_, Tensor.frac_, Tensor.deg2rad_,
                                                              Tensor.rad2deg_, Tensor.sinc_, Tensor.gcd_,
                                                              Tensor.lcm_, Tensor.ldexp_)
# torch.backends and torch's process-wide switches (stored, read back: minilora/backends.py), torch.compile /
# torch.compiler / torch.jit / torch._dynamo (no compiling: minilora/compiler.py)
from . import backends, compiler  # noqa: E402
from .backends import (are_deterministic_algorithms_enabled, get_deterministic_debug_mode,  # noqa: E402,F401
                       get_float32_matmul_precision, is_deterministic_algorithms_warn_only_enabled,
                       set_deterministic_debug_mode, set_float32_matmul_precision, use_deterministic_algorithms,
                       set_warn_always, is_warn_always_enabled)
from .compiler import compile, jit, dynamo as _dynamo  # noqa: E402,F401,A004
# torch.func (functional_call, grad, vmap, ...: minilora/func.py) and torch.vmap
from . import func  # noqa: E402
from .func import vmap  # noqa: E402,F401
from .parallel import num_threads as get_num_threads  # noqa: E402,F401  (torch.get_num_threads)
from .buffer_sharing import frombuffer, from_dlpack  # noqa: E402,F401
from .cpu_switches import get_num_interop_threads, set_flush_denormal, set_num_interop_threads  # noqa: E402,F401
from .type_objects import dtype, typename  # noqa: E402,F401  (torch.dtype: isinstance(float32, dtype))
from .type_objects import set_default_tensor_type  # noqa: E402,F401  (deprecated, tutorials call it)
from .type_objects import (BFloat16Tensor, BoolTensor, ByteTensor, CharTensor, DoubleTensor,  # noqa: E402,F401
                           FloatTensor, HalfTensor, IntTensor, LongTensor, ShortTensor)  # (torch's legacy types)
# special functions (minilora/ops/special.py) at top level with torch's out=, and torch.special
from . import special  # noqa: E402
erfc, erfinv, lgamma, digamma, polygamma, mvlgamma, i0 = (ops._with_out(getattr(ops.special, _fn), _fn) for _fn in
                                                          ("erfc", "erfinv", "lgamma", "digamma", "polygamma",
                                                           "mvlgamma", "i0"))
erfc_, erfinv_, lgamma_, i0_ = Tensor.erfc_, Tensor.erfinv_, Tensor.lgamma_, Tensor.i0_
igamma, igammac = (ops._with_out(getattr(ops.incomplete_gamma, _fn), _fn) for _fn in ("igamma", "igammac"))
# small siblings of existing ops (minilora/ops/siblings.py); out= where torch's take it
from .ops.siblings import (diagonal_scatter, empty_strided, gradient, range_ as range, row_stack,  # noqa: E402,F401,A004
                           select_scatter, slice_scatter)
from .ops.siblings import empty_permuted  # noqa: E402,F401
range = _with_out(range)  # noqa: A001  (torch.range(0, 3, out=t): a factory's out=)
from .ops.index import index_reduce, nonzero_static  # noqa: E402,F401
from .ops.shape import resize_as_  # noqa: E402,F401
# torch's *_copy twins of the view ops, and unsafe_split / unsafe_chunk (minilora/ops/view_copies.py)
from .ops.view_copies import (alias_copy, as_strided_copy, diagonal_copy, expand_copy, permute_copy,  # noqa: E402,F401
                              select_copy, slice_copy, split_copy, split_with_sizes_copy, squeeze_copy, t_copy,
                              transpose_copy, unbind_copy, unfold_copy, unsafe_chunk, unsafe_split,
                              unsafe_split_with_sizes, unsqueeze_copy, view_copy)
renorm, frexp, nextafter = (ops._with_out(getattr(ops.siblings, _fn), _fn) for _fn in ("renorm", "frexp", "nextafter"))
for _fn in "deg2rad rad2deg frac sinc float_power ldexp logaddexp2 heaviside gcd lcm isin isposinf isneginf".split():
    globals()[_fn] = ops._with_out(globals()[_fn], _fn)  # (ops/extra.py's, with torch's out=)
# torch's second names, *_copy twins and old linalg names take out= as well, under the rules (and in the words) of
# the kernel torch runs for them: torch.absolute(x, out=o) is abs's out=, torch.msort's is sort's
_OUT_UNDER_KERNEL_NAME = {
    "absolute": "abs", "arccos": "acos", "arccosh": "acosh", "arcsin": "asin", "arcsinh": "asinh",
    "arctan": "atan", "arctanh": "atanh", "fix": "trunc", "multiply": "mul", "subtract": "sub", "divide": "div",
    "negative": "neg", "greater": "gt", "greater_equal": "ge", "less": "lt", "less_equal": "le", "not_equal": "ne",
    "msort": "sort", "ger": "outer", "row_stack": "vstack", **{_fn: _fn for _fn in (
        "alias_copy diagonal_copy permute_copy select_copy slice_copy squeeze_copy t_copy unsqueeze_copy "
        "slice_scatter hardshrink threshold frobenius_norm nuclear_norm cholesky qr slogdet svd "
        "triangular_solve").split()}}
for _fn, _kernel in _OUT_UNDER_KERNEL_NAME.items():
    globals()[_fn] = ops._with_out(globals()[_fn], _kernel)
histc, histogram = ops._with_out(histc, "histc"), ops._with_out(histogram, "histogram")  # (factories' ops: out= here)
# torch's storages (minilora/storage.py): x.untyped_storage(), x.storage(), set_, share_memory_, the legacy classes
# (imported before the check below, which then covers x.is_set_to(3))
from .storage import LEGACY_CLASSES as _LEGACY_STORAGES, TypedStorage, UntypedStorage, is_storage  # noqa: E402,F401
globals().update(_LEGACY_STORAGES)  # (FloatStorage, LongStorage, ...)
Storage = _LEGACY_STORAGES["FloatStorage"]  # (torch.Storage is torch.FloatStorage)
# last, over every name above: torch's TypeError for a number, list or array where a top-level function takes a
# Tensor (torch.exp(2.0), torch.maximum(x, 5)); so do the binary methods (x.maximum(5)); the ops the library calls
# are not wrapped
from ._argument_types import check_tensor_arguments as _check_tensor_arguments  # noqa: E402
_check_tensor_arguments(globals())
# torch's deprecated signatures (x.add_(-lr, g), torch.addmm(beta, M, alpha, m1, m2); minilora/ops/
# deprecated_signatures.py), wrapped outside the check above: its TypeError for a number is their cue
from .ops.deprecated_signatures import install as _install_deprecated_signatures  # noqa: E402
_install_deprecated_signatures(globals())
from .ops.rare_methods import SPARSE_FUNCTIONS as _SPARSE_FUNCTIONS  # noqa: E402
globals().update(_SPARSE_FUNCTIONS)  # (torch.sparse_coo_tensor, ...: refused by name, minilora has no sparse tensors)
