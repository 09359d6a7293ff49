"""torch's OpInfo database (op_db) run through minilora: every ``nn.functional.*`` OpInfo.

Activations, losses, convolutions, pooling and unpooling, interpolation, grid sampling, padding, the
normalizations, embedding and embedding_bag, the dropout family (torch's ``wrapper_set_seed``: the same seed on
both sides, so the same masks), attention and the distances: the first samples torch's developers wrote for each
dtype, in each variant the OpInfo has (the function and the in-place form), with the arguments spelled as torch's
database spells them. minilora answers where torch answers and refuses where torch refuses; its answer has
torch's structure, shape and dtype, its values are torch's bits (float32, bfloat16, integers, bool) or within
1e-12 (float64), except where a dict below states how far and why. float64 gradients (a fixed random cotangent)
agree too, and each of the database's error inputs is refused. What minilora refuses by name is listed with the
error it raises; the test checks that error. The regression tests at the end pin the divergences this sweep
found (they sit in samples later than the sweep's first few).
"""
import functools
import itertools
import types

import numpy as np
import pytest

from torch_db import as_numpy, assert_same, dtype_name, ml, resolve, to_minilora, torch

from minilora.float32_math import ONEDNN_AVX512, torch_cpu_capability  # noqa: E402

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

OPINFOS = [op for op in op_db if op.name.startswith("nn.functional.")]


def key(op):
    return op.name.removeprefix("nn.functional.") + (f".{op.variant_test_name}" if op.variant_test_name else "")


# ---- what minilora refuses by name: (exception type, words of its message) ---------------------------------
REFUSED_OPINFOS = {  # every sample of these
    "linear_cross_entropy.chunked": (NotImplementedError, "options= .torch's chunked kernel. is not implemented"),
    "linear_cross_entropy.chunked_none": (NotImplementedError, "options= .torch's chunked kernel. is not "
                                                               "implemented"),
}
REFUSED_SAMPLES = [  # (OpInfo, a test on the sample's kwargs / input dtype, exception, words)
    ("embedding", lambda s: s.kwargs.get("sparse"), NotImplementedError, "sparse=True is not supported"),
    ("embedding_bag", lambda s: s.kwargs.get("scale_grad_by_freq"), NotImplementedError,
     "scale_grad_by_freq=True is not implemented"),
    ("embedding_bag", lambda s: s.kwargs.get("sparse"), NotImplementedError, "sparse=True is not supported"),
    *[(f"interpolate.{mode}", lambda s: s.input.dtype == torch.uint8, NotImplementedError,
       "on a uint8 input is not implemented") for mode in ("bilinear", "bicubic")],
    ("upsample_bilinear", lambda s: s.input.dtype == torch.uint8, NotImplementedError,
     "on a uint8 input is not implemented"),
]

# float32 / bfloat16 results that are not torch's bits: (the largest distance allowed, in steps of the result's
# largest value (a sum's rounding errors scale with its terms, not with each result), bfloat16 counted in bfloat16
# steps; the reason). Measured on an AVX-512 machine (ATen's 16-lane vectors): each limit is twice the distance
# the samples below give, at least 2. Every other op's results are torch's bits.
_SUM_ORDER = ("its float32 sums run in another order than torch's kernel (ATen's vector lanes, MKL's or oneDNN's "
              "blocking for the CPU)")
ULPS = {
    **dict.fromkeys("conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d".split(),
                    (4, "torch's convolution is oneDNN's (its own blocking of the products' sums); minilora's "
                        "sums with BLAS")),
    **dict.fromkeys("linear bilinear linear_cross_entropy".split(),
                    (2, "a matrix product: MKL's float32 GEMM/GEMV blocking for the CPU (MKL picks its kernel by the "
                        "CPU's maker and model: an Intel Sapphire Rapids and an AMD EPYC differ)")),
    "multi_head_attention_forward": (32, "its projections are matrix products (MKL's float32 GEMM blocking) and "
                                         "its attention torch's CPU flash kernel"),
    "scaled_dot_product_attention": (32, "torch's CPU flash kernel (blocks of keys, its running max and sum, "
                                         "ATen's exp) against minilora's float32 math kernel"),
    **dict.fromkeys("batch_norm instance_norm group_norm local_response_norm normalize pairwise_distance "
                    "smooth_l1_loss ctc_loss "
                    "cosine_embedding_loss adaptive_avg_pool3d avg_pool3d "
                    "binary_cross_entropy_with_logits gaussian_nll_loss".split(), (4, _SUM_ORDER)),
    **dict.fromkeys("interpolate.linear interpolate.bilinear interpolate.bicubic interpolate.trilinear "
                    "upsample_bilinear grid_sample".split(),
                    (4, "torch's kernel computes the interpolation weights and their products in another order "
                        "(its vectorised float32 steps)")),
}
if not ONEDNN_AVX512:  # (float32_math.gelu_erf: oneDNN's AVX-512 kernel is ported, its AVX2 one not)
    ULPS["gelu"] = (8, "oneDNN's AVX2 gelu_erf (its own exp in Abramowitz and Stegun's formula) is not ported; "
                       "minilora rounds the float64 formula once there")
if torch_cpu_capability() == "default":  # ATen's scalar kernels (no vectors)
    ULPS["embedding_bag"] = (2, "per_sample_weights: FBGEMM's generated kernel takes the machine's FMA whatever "
                                "ATEN_CPU_CAPABILITY says; minilora's multiply-adds follow the capability (unfused)")
# float64 within 1e-12 relative to the output's largest value: sums in another order (BLAS, pairwise) than torch's
FLOAT64_RTOL = 1e-12
DTYPES = (torch.float64, torch.float32, torch.bfloat16)
SAMPLES = {torch.float64: 4, torch.float32: 3, torch.bfloat16: 2, "integer": 2, torch.bool: 1}


# ---- carrying an OpInfo's callables over ------------------------------------------------------------
def _with_minilora_seed(op, *args, **kwargs):
    """torch's ``wrapper_set_seed`` (dropout, rrelu, fractional pooling): manual_seed(42), then the call."""
    ml.manual_seed(42)
    return op(*args, **kwargs)


def minilora_callable(op, fn):
    """minilora's counterpart of one of an OpInfo's callables: the database's lambda run with ``torch`` meaning
    minilora, a ``functools.partial`` of the op, else the op under the OpInfo's name."""
    if isinstance(fn, functools.partial):
        return functools.partial(resolve(ml, op.name), *to_minilora(fn.args), **to_minilora(fn.keywords))
    if isinstance(fn, types.FunctionType) and fn.__module__.startswith("torch.testing"):
        scope = {**fn.__globals__, "torch": ml, "wrapper_set_seed": _with_minilora_seed}
        return types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    return resolve(ml, op.name)


def convert(value):
    """``to_minilora``, and the one torch module the database passes as an argument (triplet_margin_with_distance_
    loss's ``distance_function=nn.PairwiseDistance()``) as minilora's."""
    if isinstance(value, torch.nn.PairwiseDistance):
        return ml.nn.PairwiseDistance(value.norm, value.eps, value.keepdim)
    if isinstance(value, dict):
        return {k: convert(v) for k, v in value.items()}
    return to_minilora(value)


def samples(op, dtype, requires_grad, count):
    """The first ``count`` of torch's samples (the OpInfo's generator itself, seeded once: ``op.sample_inputs``
    searches the stack for a unittest on every call, more time than the comparisons take)."""
    torch.manual_seed(0)
    return list(itertools.islice(op.sample_inputs_func(op, "cpu", dtype, requires_grad), count))


def dtypes(op):
    supported = op.supported_dtypes("cpu")
    chosen = [(d, SAMPLES[d]) for d in DTYPES if d in supported]
    integers = [d for d in (torch.int64, torch.int32, torch.uint8) if d in supported]
    chosen += [(integers[0], SAMPLES["integer"])] if integers else []
    return chosen + ([(torch.bool, SAMPLES[torch.bool])] if torch.bool in supported else [])


def refusal(op, sample):
    for name, applies, error, words in REFUSED_SAMPLES:
        if name == key(op) and applies(sample):
            return error, words
    return None


def run(fn, sample, conversion):
    """(answer, None) or (None, the exception) of ``fn`` on the sample's arguments, converted (minilora's) or
    cloned (torch's, so that an in-place call leaves the sample as it was)."""
    copy = conversion or (lambda value: value.clone() if isinstance(value, torch.Tensor) else value)
    try:
        return fn(copy(sample.input), *[copy(a) for a in sample.args],
                  **{k: copy(v) for k, v in sample.kwargs.items()}), None
    except Exception as error:  # noqa: BLE001  (any refusal counts: the test compares who refuses)
        return None, error


# ---- comparing -------------------------------------------------------------------------------------
def assert_close(name, ours, theirs, what, least_scale=0.0):
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(theirs), f"{what}: {ours!r:.200}"
        for index, (mine, torchs) in enumerate(zip(ours, theirs)):
            assert_close(name, mine, torchs, f"{what}[{index}]", least_scale)
        return
    if isinstance(theirs, torch.Tensor) and theirs.dtype in (torch.float64, torch.complex128):
        theirs = theirs.detach()
        scale = float(theirs.abs().max()) if theirs.numel() and theirs.isfinite().all() else 0.0
        atol = FLOAT64_RTOL * max(scale, least_scale) + 1e-300
        assert_same(ours, theirs, rtol=FLOAT64_RTOL, atol=atol, what=what)
    elif name in ULPS and isinstance(theirs, torch.Tensor) and theirs.dtype in (torch.float32, torch.bfloat16):
        assert_within_ulps(ours, theirs, ULPS[name][0], what)
    else:
        assert_same(ours, theirs, what=what)


def assert_within_ulps(ours, theirs, ulps, what):
    """Within ``ulps`` steps of torch's value, the step taken at the tensor's largest value (a sum's rounding
    errors scale with its terms, not with the result)."""
    assert dtype_name(ours) == dtype_name(theirs), f"{what}: dtype {dtype_name(ours)}, torch's {dtype_name(theirs)}"
    bf16 = theirs.dtype == torch.bfloat16
    ours, theirs = as_numpy(ours), as_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, torch's {theirs.shape}"
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=what)
    finite = np.isfinite(theirs)
    if not finite.any():
        return
    top = np.abs(theirs[finite]).max().astype(np.float32)
    step = float(np.spacing(top)) * (2 ** 16 if bf16 else 1)
    distance = np.abs(ours[finite].astype(np.float64) - theirs[finite]).max() / max(step, 1e-45)
    assert distance <= ulps, f"{what}: {distance:.3g} steps apart (> {ulps})"


def compare(op, variant, torch_fn, sample, dtype):
    what = f"{key(op)} {variant} {dtype_name(sample.input) if hasattr(sample.input, 'dtype') else dtype} {sample}"
    expected_refusal = refusal(op, sample)
    ours, our_error = run(minilora_callable(op, torch_fn), sample, convert)
    if expected_refusal is not None:
        assert isinstance(our_error, expected_refusal[0]), f"{what}: minilora answers {ours!r:.100}"
        assert expected_refusal[1] in str(our_error), our_error
        return
    theirs, torch_error = run(torch_fn, sample, None)
    if torch_error is not None:
        assert our_error is not None, f"{what}: torch refuses ({torch_error}), minilora answers"
        return
    assert our_error is None, f"{what}: minilora refuses ({type(our_error).__name__}: {our_error}), torch answers"
    assert_close(key(op), ours, theirs, what)


def tensors_in(sample_parts, kind):
    return [t for t in sample_parts if isinstance(t, kind) and t.requires_grad]


def compare_gradients(op, sample):
    """d(sum(output * cotangent)) / d(every input that requires grad), in float64."""
    if refusal(op, sample) is not None:
        return
    what = f"{key(op)} float64 gradient {sample}"
    theirs = sample.output_process_fn_grad(op.op(sample.input, *sample.args, **sample.kwargs))
    torch_inputs = tensors_in((sample.input, *sample.args, *sample.kwargs.values()), torch.Tensor)
    outputs = tensors_in(theirs if isinstance(theirs, (tuple, list)) else [theirs], torch.Tensor)
    if not torch_inputs or not outputs:
        return
    generator = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in outputs]
    torch_grads = torch.autograd.grad(outputs, torch_inputs, cotangents, allow_unused=True)
    ml_input, ml_args, ml_kwargs = convert(sample.input), convert(tuple(sample.args)), convert(dict(sample.kwargs))
    ours = sample.output_process_fn_grad(minilora_callable(op, op.op)(ml_input, *ml_args, **ml_kwargs))
    ml_outputs = tensors_in(ours if isinstance(ours, (tuple, list)) else [ours], ml.Tensor)
    assert len(ml_outputs) == len(outputs), what
    ml_inputs = tensors_in((ml_input, *ml_args, *ml_kwargs.values()), ml.Tensor)
    our_grads = ml.autograd.grad(ml_outputs, ml_inputs, [to_minilora(c) for c in cotangents], allow_unused=True)
    for index, (mine, torchs) in enumerate(zip(our_grads, torch_grads)):
        if torchs is None or mine is None:  # (no gradient: zeros)
            assert mine is None or not np.any(mine.numpy()), f"{what}: gradient {index}"
            assert torchs is None or not torchs.any(), f"{what}: gradient {index}"
            continue
        # (at least an absolute 1e-12: a gradient that is 0 in exact arithmetic, such as normalize's over a
        # dimension of size 1, is rounding noise of the order of the unit cotangent's last bits on both sides)
        assert_close(key(op), mine, torchs, f"{what}: gradient {index}", least_scale=1.0)


# ---- the sweep -------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPINFOS, ids=key)
def test_opinfo_samples_match_torch(op):
    if key(op) in REFUSED_OPINFOS:
        error, words = REFUSED_OPINFOS[key(op)]
        supported = op.supported_dtypes("cpu")
        for sample in samples(op, torch.float32 if torch.float32 in supported else min(supported, key=str), False, 2):
            with pytest.raises(error, match=words):
                minilora_callable(op, op.op)(convert(sample.input), *convert(tuple(sample.args)),
                                             **convert(dict(sample.kwargs)))
        return
    chosen = dtypes(op)
    if op.variant_test_name == "complex":  # (silu.complex: complex128 samples, as torch's complex kernel to rounding;
        chosen = [(torch.complex128, SAMPLES[torch.float64])]  # its complex64 divides in AVX lanes, 1 step apart)
    if not chosen:  # (batch_norm.without_cudnn: a CUDA-only variant, no CPU dtypes)
        assert op.variant_test_name == "without_cudnn"
        return
    for dtype, count in chosen:
        grad = dtype == torch.float64 and op.supports_autograd
        for sample in samples(op, dtype, grad, count):
            compare(op, "function", op.op, sample, dtype)
            if op.inplace_variant is not None and not grad:
                compare(op, "inplace", op.inplace_variant, sample, dtype)
            if grad:
                compare_gradients(op, sample)


@pytest.mark.parametrize("op", [op for op in OPINFOS if op.error_inputs_func is not None], ids=key)
def test_opinfo_error_inputs_are_refused(op):
    """Every call torch's database says torch refuses, minilora refuses too."""
    torch.manual_seed(0)
    for error_input in op.error_inputs_func(op, "cpu"):
        sample = error_input.sample_input
        ours, our_error = run(minilora_callable(op, op.op), sample, convert)
        assert our_error is not None, f"{key(op)}: torch refuses {sample} ({error_input.error_regex}), " \
                                      f"minilora answers {ours!r:.100}"


# ---- the divergences the sweep found, each as a user writes the call -------------------------------
def both(call):
    """``call(torch)`` and ``call(minilora)``: (torch's answer, minilora's)."""
    torch.manual_seed(0)
    ml.manual_seed(0)
    return call(torch), call(ml)


def test_embedding_bag_negative_padding_idx_is_the_last_row():
    """padding_idx=-1 is the table's last row (torch's F.embedding_bag counts from the end); minilora had kept
    the -1 and summed the padding rows (every value of the sweep's sample apart)."""
    table = np.random.default_rng(0).standard_normal((5, 3))
    ids, offsets = np.array([4, 1, 4, 0, 2, 4]), np.array([0, 3])

    def call(lib):
        weight = lib.tensor(table, requires_grad=True)
        out = lib.nn.functional.embedding_bag(lib.tensor(ids), weight, lib.tensor(offsets), mode="mean",
                                              padding_idx=-1)
        out.backward(lib.ones_like(out))
        return out, weight.grad
    theirs, ours = both(call)
    assert_same(ours, theirs, rtol=1e-15, atol=1e-15)


def test_embedding_refuses_a_table_that_is_not_a_matrix():
    """A [1, 1, 1] table: minilora's embedding had answered (the sweep's error input), embedding_bag failed in
    NumPy's words."""
    for lib in (torch, ml):
        with pytest.raises(RuntimeError, match="'weight' must be 2-D"):
            lib.nn.functional.embedding(lib.tensor([[0, 0]]), lib.ones(1, 1, 1))
        with pytest.raises(ValueError, match="weight has to be a 2D Tensor, but got Tensor of dimension 3"):
            lib.nn.functional.embedding_bag(lib.tensor([[0, 0]]), lib.ones(1, 1, 1))


@pytest.mark.parametrize("pad", [(-4, 5, 0, 0), (0, 0, 2, -4), (-5, 6, -1, 0), (-2, -2, 0, 0)])
def test_replicate_padding_with_negative_amounts(pad):
    """torch clamps each position into the uncropped input: pad(x, (-4, 5), 'replicate') of a width-4 row is its
    last element five times (minilora had cropped first and refused the empty row)."""
    x = np.arange(32.0).reshape(1, 2, 4, 4)
    theirs, ours = both(lambda lib: lib.nn.functional.pad(lib.tensor(x), pad, mode="replicate"))
    assert_same(ours, theirs)


def test_replicate_padding_to_nothing_is_refused_in_torchs_words():
    for lib in (torch, ml):
        with pytest.raises(RuntimeError, match=r"input \(H: 2, W: 4 \) is too small. Calculated output H: 0 W: 0"):
            lib.nn.functional.pad(lib.zeros(1, 1, 2, 4), (-2, -2, -1, -1), mode="replicate")


def test_pooling_and_convolution_take_one_element_lists_and_an_empty_stride():
    """ATen expands a one-element kernel_size / stride / padding / dilation list to every spatial dimension, and a
    pooling's stride=[] is the kernel size (the database's avg_pool2d samples spell it so)."""
    x, x3 = np.random.default_rng(1).standard_normal((1, 2, 6, 6)), np.random.default_rng(2).standard_normal(
        (1, 1, 4, 4, 4))
    w = np.random.default_rng(3).standard_normal((1, 2, 2, 2))

    def call(lib):
        F, image, volume = lib.nn.functional, lib.tensor(x), lib.tensor(x3)
        return [F.avg_pool2d(image, [3, 3], [1, 1], [1], True, False, 2), F.avg_pool2d(image, [2, 2], [], [0]),
                F.max_pool2d(image, [2], [], [1]), F.avg_pool3d(volume, [2], [], [1]), F.max_pool3d(volume, [2], []),
                F.avg_pool1d(image[0], [2], []), F.max_pool1d(image[0], [2], []),
                F.conv2d(image, lib.tensor(w), stride=[2], padding=[1], dilation=[1]),
                F.conv_transpose2d(image, lib.tensor(w).transpose(0, 1), stride=[2], output_padding=[1])]
    theirs, ours = both(call)
    assert_same(ours, theirs, rtol=1e-13, atol=1e-13)


def test_integer_pooling_as_torchs_kernels():
    """max pooling of integers with ceil_mode / padding / return_indices (minilora padded with -inf: an overflow
    error), avg_pool3d of int64 (C++ integer division, toward zero: minilora gave float32) and avg_pool2d's
    integer division by a negative divisor_override."""
    x = np.arange(72).reshape(1, 2, 2, 3, 6) - 40

    def call(lib):
        F, volume = lib.nn.functional, lib.tensor(x)
        return [*F.max_pool2d(volume[0], 3, 2, padding=1, ceil_mode=True, return_indices=True),
                *F.max_pool3d(volume, 2, 2, padding=1, ceil_mode=True, return_indices=True),
                F.avg_pool3d(volume, 2, padding=1, count_include_pad=False), F.avg_pool3d(volume, (1, 2, 2)),
                F.avg_pool2d(volume[0], 2, divisor_override=-3)]
    theirs, ours = both(call)
    assert_same(ours, theirs)


def test_functional_triplet_margin_loss_refuses_a_margin_that_is_not_positive():
    """F.triplet_margin_loss (and nn.TripletMarginLoss, which calls it) refuse margin <= 0; torch's top-level
    torch.triplet_margin_loss (ATen's op) computes it."""
    a, p, n = (np.random.default_rng(s).standard_normal((3, 4)) for s in (4, 5, 6))
    for lib in (torch, ml):
        with pytest.raises(ValueError, match="margin must be greater than 0, got -1.0"):
            lib.nn.functional.triplet_margin_loss(lib.tensor(a), lib.tensor(p), lib.tensor(n), margin=-1.0)
    theirs, ours = both(lambda lib: lib.triplet_margin_loss(lib.tensor(a), lib.tensor(p), lib.tensor(n), -1.0, 2,
                                                            1e-6, False, 1))
    assert_same(ours, theirs, rtol=1e-15)


def test_attention_broadcasts_inputs_of_different_ranks():
    """A [B, L, E] query against [N, B, S, E] keys and values: torch's math kernel broadcasts as its matmuls do
    (minilora had refused inputs of different ranks)."""
    q, k, v = (np.random.default_rng(s).standard_normal(shape) for s, shape in
               ((7, (4, 3, 8)), (8, (2, 4, 6, 8)), (9, (2, 4, 6, 8))))

    def call(lib):
        query = lib.tensor(q, requires_grad=True)
        out = lib.nn.functional.scaled_dot_product_attention(query, lib.tensor(k), lib.tensor(v), is_causal=True)
        out.backward(lib.ones_like(out))
        return out, query.grad
    theirs, ours = both(call)
    assert_same(ours, theirs, rtol=1e-12, atol=1e-13)


def test_unfold_of_a_bool_image():
    x = np.random.default_rng(10).random((2, 1, 5, 5)) > 0.5
    theirs, ours = both(lambda lib: [lib.nn.functional.unfold(lib.tensor(x), 2, padding=1, stride=2),
                                     lib.nn.functional.unfold(lib.zeros(0, 1, 5, 5, dtype=lib.bool), 2)])
    assert_same(ours, theirs)


@pytest.mark.parametrize("shapes", [((4, 4, 3, 8), (4, 4, 6, 8), (3, 6), False), ((2, 3, 8), (2, 5, 8), (3, 5), False),
                                    ((4, 4, 3, 8), (4, 4, 6, 8), (1, 4, 1, 6), False)])
def test_attention_mask_that_requires_grad_gets_its_gradient(shapes):
    """A learned float mask (ALiBi's slopes, T5's relative position bias): torch's math kernel adds it to the scores
    and gives it their gradient, summed over the dimensions it was broadcast along (minilora had refused it)."""
    (q_shape, k_shape, mask_shape, causal), rng = shapes, np.random.default_rng(11)
    q, k, v, mask = (rng.standard_normal(shape) for shape in (q_shape, k_shape, k_shape, mask_shape))

    def call(lib):
        inputs = [lib.tensor(a, requires_grad=True) for a in (q, k, v, mask)]
        out = lib.nn.functional.scaled_dot_product_attention(*inputs[:3], attn_mask=inputs[3], is_causal=causal)
        out.backward(lib.full_like(out, 0.3))
        return [out] + [t.grad for t in inputs]
    theirs, ours = both(call)
    assert_same(ours, theirs, rtol=1e-13, atol=1e-14)


def test_attention_refuses_is_causal_with_a_mask_that_requires_grad():
    """torch's CPU flash kernel (the one that applies is_causal and a mask together) gives a mask no gradient: with
    one that requires grad torch takes its math kernel, which refuses the pair."""
    for lib in (torch, ml):
        q = lib.ones(1, 2, 4, 8)
        with pytest.raises(RuntimeError, match="Explicit attn_mask should not be set when is_causal=True"):
            lib.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=lib.zeros(4, 4, requires_grad=True),
                                                           is_causal=True)


def test_softmin_and_softmax_of_a_0d_bfloat16_tensor():
    """op_db's softmin sample #6 (a 0-d bfloat16 input, dim=0): the 16-bit softmax's choice of kernel read the dim
    of a 0-d input (a TypeError)."""
    theirs, ours = both(lambda lib: [lib.nn.functional.softmin(lib.tensor(1.5).bfloat16(), 0),
                                     lib.tensor(-2.0).bfloat16().softmax(-1), lib.tensor(0.5).half().log_softmax(0)])
    assert_same(ours, theirs)


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_bfloat16_embedding_bag_sums_as_torchs_kernels(padding_idx):
    """bfloat16 bags (no gradient asked): float32 sums in each bag's order, rounded to bfloat16 once (half away from
    zero on FBGEMM's path, without padding_idx; to nearest even on ATen's own), 'mean' dividing the bfloat16 sum
    (minilora's one rounding of a BLAS sum had put up to 11 of an op_db sample's 25 values a bfloat16 step away)."""
    rng = np.random.default_rng(12)
    table = (rng.standard_normal((10, 5)) * 10).astype(np.float32)
    ids, offsets, weights = rng.integers(0, 10, 9), np.array([0, 2, 5, 5]), rng.standard_normal(9).astype(np.float32)

    def call(lib):
        F, w, i, o = lib.nn.functional, lib.tensor(table).bfloat16(), lib.tensor(ids), lib.tensor(offsets)
        return [F.embedding_bag(i, w, o, mode="sum", padding_idx=padding_idx),
                F.embedding_bag(i, w, o, mode="mean", padding_idx=padding_idx),
                F.embedding_bag(i, w, o, mode="sum", per_sample_weights=lib.tensor(weights).bfloat16(),
                                padding_idx=padding_idx),
                F.embedding_bag(i[:8].reshape(2, 4), w, mode="mean", padding_idx=padding_idx)]
    theirs, ours = both(call)
    assert_same(ours, theirs)


def test_1d_adaptive_pooling_takes_one_output_size():
    """adaptive_max_pool1d(x, (2, 3)) had pooled to 2 (the first entry) where torch refuses; adaptive_avg_pool1d's
    refusal is torch's too now."""
    for lib in (torch, ml):
        for fn in (lib.nn.functional.adaptive_max_pool1d, lib.nn.functional.adaptive_avg_pool1d):
            for size, count in (((2, 3), 2), ((), 0)):
                words = rf"argument 'output_size' should contain one int \(got {count}\)"
                with pytest.raises(RuntimeError, match=words):
                    fn(lib.ones(1, 2, 4), size)
