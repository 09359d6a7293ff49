"""bfloat16 and float16 in matmul, the nn ops and the nn layers, side by side with torch on the CPU
(issue 16).

torch's CPU kernels compute a 16-bit float op in float32 and round the result once; matrix
products and reductions accumulate in float32. Each case runs one call, written as a torch user
writes it, in torch and in minilora on the same 16-bit values, and compares

* the forward value: bit for bit where torch's kernel rounds once (most cases); with torch's own
  16-bit tolerances where its kernel rounds an intermediate value or sums in another order (each
  such case says why);
* the gradients: in the 16-bit dtype, as torch's; within torch's 16-bit relative tolerances
  (``torch.testing.assert_close``'s: bf16 1.6e-2, fp16 1e-3) with an absolute one scaled to the
  largest value, since torch's backward kernels round at other places than minilora's
  float32-then-round-once; and at least about as accurate as torch's against a float64 run.

The regression tests at the end pin the silent divergences NumPy alone would give (a bfloat16
product returned as float32, float16 products and 16-bit norms summed in 16 bits, a gemm that
rounds twice, rms_norm's default eps).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from minilora import blas  # noqa: E402
from test_torch_conformance import t  # noqa: E402

RNG = None  # set for each test by fresh_random_numbers
DTYPES = ["bfloat16", "float16"]


# ---- helpers ----------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_random_numbers():
    """Each test draws the same numbers however the tests are selected (some compare bit for bit)."""
    global RNG
    RNG = np.random.default_rng(16)


def representable(array, dtype):
    """``array`` (float64) rounded to ``dtype``'s values, so both libraries start from the same numbers."""
    return np.asarray(array, dtype=np.float64).astype(ml.dtypes.to_dtype(dtype)).astype(np.float64)


def randn(*shape, dtype="bfloat16"):
    return representable(RNG.standard_normal(shape), dtype)


def as_torch(x):
    """A minilora tensor's values as a torch tensor of the same dtype (bfloat16 through its bits:
    NumPy has no bfloat16 torch could read)."""
    array = x.detach().numpy().copy(order="C")  # (np.ascontiguousarray makes a 0-d array 1-d)
    if array.dtype == ml.bfloat16:
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


TORCH_RTOL = {torch.bfloat16: 1.6e-2, torch.float16: 1e-3}  # torch.testing.assert_close's defaults


def assert_same(ours, theirs, exact, where, scaled=False, roundings=1):
    """Same dtype and shape; the same bits (``exact``) or within torch's tolerances for the dtype.

    ``scaled``: where torch rounds an intermediate result to 16 bits that minilora keeps in float32
    (a product before the sum over broadcast axes, a pairwise product inside an einsum), the two
    differ by about one 16-bit rounding of that intermediate: an error relative to the largest
    terms, absolute for a result that cancels. So the absolute tolerance is torch's relative one
    times the largest value, times ``roundings`` (a wrong formula is off by far more)."""
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch."), \
        f"{where}: dtype {ours.dtype}, torch {theirs.dtype}"
    ours, theirs = as_torch(ours), theirs.detach()
    message = lambda m: f"{where}: {m}"  # noqa: E731
    if exact:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True, msg=message)
    elif scaled:
        rtol = TORCH_RTOL[theirs.dtype]
        atol = roundings * rtol * float(theirs.float().abs().max()) if theirs.numel() else 0.0
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol, equal_nan=True, msg=message)
    else:
        torch.testing.assert_close(ours, theirs, equal_nan=True, msg=message)


def compare(fn, *arrays, dtype="bfloat16", exact=True, grads=True, scaled=False, roundings=1, constants=()):
    """Run ``fn(lib, *tensors, *constants)`` in torch and in minilora, on the ``arrays`` as 16-bit
    tensors that require grad; compare the output (``exact``: bit for bit, else as ``assert_same``
    with ``scaled`` and ``roundings``) and, with ``grads``, the gradient of every input for the same
    upstream gradient.

    Gradients: in the 16-bit dtype, within torch's tolerance ``scaled`` (torch's backward kernels
    round intermediate results that minilora keeps in float32), and at least about as accurate as
    torch's own against a float64 run of torch -- a wrong formula fails that. Returns minilora's output."""
    arrays = [representable(a, dtype) for a in arrays]
    outs, leaves = {}, {}
    for lib, dt in ((torch, dtype), (ml, dtype), (None, "float64")):
        leaves[lib] = [t(lib or torch, a, grad=grads, dtype=dt) for a in arrays]
        outs[lib] = fn(lib or torch, *leaves[lib], *constants)
    assert_same(outs[ml], outs[torch], exact, "forward", scaled, roundings)
    if not grads:
        return outs[ml]
    upstream = representable(np.random.default_rng(1).standard_normal(tuple(outs[torch].shape)), dtype)
    for lib in (torch, ml, None):
        (outs[lib].double() * t(lib or torch, upstream)).sum().backward()
    for i, (ours, theirs, exact64) in enumerate(zip(leaves[ml], leaves[torch], leaves[None])):
        if theirs.grad is None:
            assert ours.grad is None, f"input {i}: torch has no gradient"
            continue
        assert ours.grad is not None, f"input {i}: no gradient, torch has one"
        # torch's backward chains several 16-bit kernels: up to two roundings of the largest value
        assert_same(ours.grad, theirs.grad, False, f"grad of input {i}", scaled=True, roundings=2)
        truth = exact64.grad
        size = float(truth.abs().max()) or 1.0
        our_error = float((as_torch(ours.grad).double() - truth).abs().max()) / size
        torch_error = float((theirs.grad.double() - truth).abs().max()) / size
        rounding = float(np.finfo(ml.dtypes.to_dtype(dtype)).eps) / 2  # one 16-bit rounding (bf16: 2^-8)
        assert our_error <= 1.5 * max(torch_error, rounding), \
            f"grad of input {i}: error {our_error:.2g} of the largest value, torch's {torch_error:.2g}"
    return outs[ml]


def F(lib):
    return lib.nn.functional


def like(lib, array, x):
    """``array`` as a ``lib`` tensor of ``x``'s dtype (a constant: no gradient)."""
    return t(lib, array, dtype=str(x.dtype).removeprefix("torch."))


# ---- matrix products -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 7, 33), (33, 9)), ((4, 1, 5, 6), (3, 6, 2)),
                                    ((6,), (6, 3)), ((5, 6), (6,)), ((6,), (6,))])
def test_matmul(dtype, shapes):
    # broadcast batch axes: torch rounds each product before summing its gradient over them
    scaled = len(shapes[0]) == 4
    compare(lambda lib, a, b: a @ b, randn(*shapes[0]), randn(*shapes[1]), dtype=dtype, scaled=scaled)
    compare(lambda lib, a, b: lib.matmul(a, b), randn(*shapes[0]), randn(*shapes[1]), dtype=dtype, scaled=scaled)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mm_bmm_dot_outer(dtype):
    compare(lambda lib, a, b: lib.mm(a, b), randn(5, 40), randn(40, 3), dtype=dtype)
    compare(lambda lib, a, b: lib.bmm(a, mat2=b), randn(2, 5, 40), randn(2, 40, 3), dtype=dtype)
    compare(lambda lib, a, b: lib.dot(a, b), randn(50), randn(50), dtype=dtype)
    # torch's outer is a broadcast multiply: its gradient rounds g * b before summing the rows
    compare(lambda lib, a, b: lib.outer(a, b), randn(5), randn(4), dtype=dtype, scaled=True)


def test_matmul_with_a_long_inner_dimension():
    """K = 4096: the order of the float32 additions matters in the last bit (torch's blocked kernel
    sums in another order than NumPy's BLAS), so within torch's tolerance; exact for bfloat16,
    whose 8 bits hide the float32 order in these sizes."""
    compare(lambda lib, a, b: a @ b, randn(8, 4096), randn(4096, 8), grads=False)
    compare(lambda lib, a, b: a @ b, randn(8, 4096, dtype="float16"), randn(4096, 8, dtype="float16"),
            dtype="float16", exact=False, grads=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear(dtype):
    x, w, b = randn(2, 5, 24), randn(7, 24), randn(7)
    compare(lambda lib, x, w, b: F(lib).linear(x, w, b), x, w, b, dtype=dtype)
    compare(lambda lib, x, w, b: F(lib).linear(input=x, weight=w, bias=b), x, w, b, dtype=dtype)
    compare(lambda lib, x, w: F(lib).linear(x, w), x, w, dtype=dtype)
    compare(lambda lib, x, w: F(lib).linear(x, w[0]), x, w, dtype=dtype)  # a 1-D weight


@pytest.mark.parametrize("dtype", DTYPES)
def test_addmm_and_baddbmm_round_once(dtype):
    """torch adds ``beta * input`` to the float32 product before rounding (rounding the product
    first differs from torch in most elements)."""
    compare(lambda lib, i, a, b: lib.addmm(i, a, b), randn(5, 3), randn(5, 16), randn(16, 3), dtype=dtype)
    compare(lambda lib, i, a, b: lib.addmm(i, a, b, beta=0.5, alpha=2.0), randn(3), randn(5, 16),
            randn(16, 3), dtype=dtype)
    compare(lambda lib, i, a, b: lib.baddbmm(i, a, b, alpha=0.125), randn(2, 5, 3), randn(2, 5, 16),
            randn(2, 16, 3), dtype=dtype)
    compare(lambda lib, i, a, b: lib.baddbmm(i, a, b, beta=0, alpha=1.5), randn(2, 5, 3), randn(2, 5, 16),
            randn(2, 16, 3), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_einsum(dtype):
    compare(lambda lib, a, b: lib.einsum("bij,bjk->bik", a, b), randn(2, 5, 16), randn(2, 16, 3), dtype=dtype)
    compare(lambda lib, a, b: lib.einsum("ij,kj", a, b), randn(5, 16), randn(3, 16), dtype=dtype)
    compare(lambda lib, a: lib.einsum("ij->j", a), randn(300, 4), dtype=dtype)  # a sum: in float32
    compare(lambda lib, a: lib.einsum("ii", a), randn(6, 6), dtype=dtype)
    # three operands: torch rounds after its first pairwise product, minilora only at the end
    compare(lambda lib, a, b, c: lib.einsum("ij,jk,kl->il", [a, b, c]), randn(4, 8), randn(8, 8), randn(8, 3),
            dtype=dtype, exact=False, scaled=True)


def test_mixed_dtypes_raise_as_torch():
    for lib in (torch, ml):
        a, b = t(lib, randn(2, 3), dtype="float32"), t(lib, randn(3, 2), dtype="bfloat16")
        bias = t(lib, randn(3), dtype="float32")
        for call in (lambda: a @ b, lambda: lib.mm(a, b), lambda: F(lib).linear(b.T, a),
                     lambda: F(lib).linear(b.T, b.T, bias),  # a float32 bias with bfloat16 weights
                     lambda: F(lib).scaled_dot_product_attention(b[None], a.T[None], a.T[None]),
                     lambda: lib.addmm(t(lib, randn(2, 2), dtype="bfloat16"), a, b.float())):
            with pytest.raises(RuntimeError):
                call()
    with pytest.raises(TypeError, match="same dtype"):  # minilora's error is also a TypeError (as before)
        t(ml, randn(2, 3), dtype="float32") @ t(ml, randn(3, 2), dtype="bfloat16")


# ---- the nn ops ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_activations_and_softmax(dtype):
    """``F.``'s wrappers (signatures, ``dtype=``) in 16 bits. The ops themselves are the elementwise
    and reduction ops, tested bit for bit in tests/test_bf16_ops.py; here within torch's tolerance
    (gelu's float32 erf is an approximation, see there)."""
    x = randn(4, 300) * 3
    compare(lambda lib, x: F(lib).gelu(x), x, dtype=dtype, exact=False)
    compare(lambda lib, x: F(lib).gelu(x, approximate="tanh"), x, dtype=dtype, exact=False)
    compare(lambda lib, x: F(lib).silu(x), x, dtype=dtype, exact=False)
    compare(lambda lib, x: F(lib).softplus(x, beta=2), x, dtype=dtype, exact=False)
    compare(lambda lib, x: F(lib).softmax(x, dim=-1), x, dtype=dtype, exact=False)
    compare(lambda lib, x: F(lib).log_softmax(x, 0), x, dtype=dtype, exact=False)
    compare(lambda lib, x: F(lib).softmin(x, -1), x, dtype=dtype, exact=False)
    compare(lambda lib, x: F(lib).softmax(x, -1, dtype=lib.float32), x, dtype=dtype, exact=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_along_the_last_axis_rounds_as_torch(dtype):
    """torch's 16-bit log_softmax along the last axis rounds the row's sum of exponentials, then its
    log, to 16 bits before subtracting; along another axis it rounds once. Both bit for bit."""
    x = randn(3, 5, 300) * 3
    compare(lambda lib, x: F(lib).log_softmax(x, dim=-1), x, dtype=dtype)
    compare(lambda lib, x: x.log_softmax(2), x, dtype=dtype)
    compare(lambda lib, x: lib.log_softmax(x, dim=1), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm(dtype):
    """Rounded once from float32, as torch; but torch sums the row statistics in another order, and
    its float32 mean and 1/std differ from ours in the last bit, which flips the rounding of about
    one element in two thousand: within torch's tolerance (exact for the other norms)."""
    x, w, b = randn(2, 6, 384) * 2 + 1, randn(384), randn(384)
    compare(lambda lib, x, w, b: F(lib).layer_norm(x, (384,), w, b), x, w, b, dtype=dtype, exact=False)
    compare(lambda lib, x, w, b: F(lib).layer_norm(x, [384], weight=w, bias=b, eps=1e-6), x, w, b, dtype=dtype,
            exact=False)
    compare(lambda lib, x: F(lib).layer_norm(x, x.shape[-2:]), x, dtype=dtype, exact=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm(dtype):
    x, w = randn(2, 6, 384) * 2, randn(384)
    compare(lambda lib, x, w: F(lib).rms_norm(x, (384,), w), x, w, dtype=dtype)
    compare(lambda lib, x, w: F(lib).rms_norm(x, [384], weight=w, eps=1e-6), x, w, dtype=dtype)
    # eps=None is the input dtype's eps (bfloat16: 2^-7, which matters for rows of small numbers)
    compare(lambda lib, x: F(lib).rms_norm(x, (384,)), x * 0.05, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_norm_and_batch_norm(dtype):
    x, w, b = randn(3, 6, 5, 7), randn(6), randn(6)
    # group_norm: as layer_norm (float32 statistics summed in another order: a rare last-bit flip)
    compare(lambda lib, x, w, b: F(lib).group_norm(x, 3, w, b), x, w, b, dtype=dtype, exact=False)
    compare(lambda lib, x, w, b: F(lib).group_norm(x, num_groups=2, weight=w, bias=b, eps=1e-3), x, w, b,
            dtype=dtype, exact=False)
    # batch_norm: torch's kernel folds mean and 1/std into one scale and shift, rounded its own
    # way (neither once from float32 nor step by step): within its tolerance, scaled (see assert_same)
    stats, mean, var = {}, randn(6), np.abs(randn(6)) + 0.5

    def batch_norm(lib, x, w, b):
        running = [like(lib, a, x) for a in (mean, var)]
        out = F(lib).batch_norm(x, *running, w, b, training=True, momentum=0.3)
        stats[lib, str(x.dtype)] = running  # updated in place, in the 16-bit dtype
        return out
    compare(batch_norm, x, w, b, dtype=dtype, exact=False, scaled=True)
    for ours, theirs in zip(stats[ml, dtype], stats[torch, f"torch.{dtype}"]):  # torch's order of the
        assert_same(ours, theirs, False, "running statistics")  # float32 blend differs in the last bit
    compare(lambda lib, x, w, b: F(lib).batch_norm(x, like(lib, mean, x), like(lib, var, x), w, b),
            x, w, b, dtype=dtype, exact=False, scaled=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(dtype):
    """torch's composition in 16 bits: ``nll_loss(log_softmax(x))``, the log-probabilities rounded to
    16 bits before the reduction; per row (reduction='none') bit for bit. A reduced loss: torch's
    nll_loss adds the 16-bit row losses in a cascade of 16-bit partial sums (neither a float32 sum
    rounded once nor a running 16-bit sum), as minilora now does: bit for bit too, over 300 rows (a
    cascade of three levels) with ignored rows and class weights. Label smoothing and class
    probabilities: within torch's tolerance, two roundings of the value (see assert_same)."""
    logits, targets = randn(300, 40) * 3, RNG.integers(0, 40, 300)
    targets[[2, 5, 16, 32, 33, 256]] = -100  # (among them rows where torch's partial sums move up a level)

    def ce(**options):
        return lambda lib, x, target: F(lib).cross_entropy(x, lib.tensor(target), **options)
    compare(ce(reduction="none"), logits, dtype=dtype, constants=(targets,))
    compare(ce(reduction="none", label_smoothing=0.2), logits, dtype=dtype, constants=(targets,))
    for options in ({}, {"reduction": "sum"}):
        compare(ce(**options), logits, dtype=dtype, constants=(targets,))
    compare(ce(ignore_index=7), logits, dtype=dtype, constants=(np.where(targets < 0, 7, targets),))
    reduced = dict(exact=False, scaled=True, roundings=2)
    compare(ce(label_smoothing=0.1), logits, dtype=dtype, constants=(targets,), **reduced)
    # class weights, and class probabilities as the target
    weight = np.abs(randn(40))
    for options in ({}, {"reduction": "sum"}):
        compare(lambda lib, x: F(lib).cross_entropy(x, lib.tensor(targets), weight=like(lib, weight, x), **options),
                logits, dtype=dtype)
    compare(lambda lib, x, p: F(lib).cross_entropy(x, p.softmax(-1)), logits, randn(300, 40), dtype=dtype,
            **reduced)
    compare(lambda lib, x: F(lib).nll_loss(F(lib).log_softmax(x, -1), lib.tensor(targets)), logits, dtype=dtype)
    every_row_ignored = np.full(300, -100)
    compare(lambda lib, x: F(lib).nll_loss(x, lib.tensor(every_row_ignored)), logits, dtype=dtype)  # nan
    compare(lambda lib, x: lib.nn.CrossEntropyLoss(label_smoothing=0.05)(x, lib.tensor(np.abs(targets) % 40)), logits,
            dtype=dtype, **reduced)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regression_losses(dtype):
    x, y, w = randn(8, 50), randn(8, 50), np.abs(randn(8, 50))
    compare(lambda lib, x, y: F(lib).mse_loss(x, y), x, y, dtype=dtype)
    compare(lambda lib, x, y: F(lib).mse_loss(x, y, reduction="none"), x, y, dtype=dtype)
    compare(lambda lib, x, y: F(lib).l1_loss(x, y, reduction="sum"), x, y, dtype=dtype)
    compare(lambda lib, x, y: F(lib).smooth_l1_loss(x, y, beta=0.5), x, y, dtype=dtype)
    compare(lambda lib, x, y: F(lib).huber_loss(x, y, delta=0.7), x, y, dtype=dtype)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    probs = np.exp(y) / np.exp(y).sum(-1, keepdims=True)
    # kl_div is torch's composition of 16-bit ops (xlogy(t, t) - t * input), each exact here
    compare(lambda lib, logp, p: F(lib).kl_div(logp, p, reduction="batchmean"), logp, probs, dtype=dtype)
    compare(lambda lib, logp, p: F(lib).kl_div(logp, p, reduction="none"), logp, probs, dtype=dtype)
    compare(lambda lib, logp, p: F(lib).kl_div(logp, p.log(), reduction="none", log_target=True), logp, probs,
            dtype=dtype)
    # binary_cross_entropy: torch's kernel rounds every step to 16 bits, as NumPy's ufuncs: bit for bit
    p, target = 1 / (1 + np.exp(-x)), np.clip(np.abs(y) / 3, 0, 1)
    p[0, :2] = 1e-30 if dtype == "bfloat16" else 0.5, 0.99609375  # (bfloat16: log x clamped at -100)
    compare(lambda lib, p, y: F(lib).binary_cross_entropy(p, y), p, target, dtype=dtype)
    compare(lambda lib, p, y: F(lib).binary_cross_entropy(p, y, reduction="none"), p, target, dtype=dtype)
    compare(lambda lib, p, y: F(lib).binary_cross_entropy(p, y, weight=like(lib, w, p), reduction="sum"), p,
            target, dtype=dtype)
    # ... and so is its backward for the probabilities (step by step in 16 bits too); at p = 0 and 1
    # the target's gradient is +-inf, as torch's (whose logs there are not clamped)
    p[0, :2] = 0, 1
    leaves = {lib: [t(lib, representable(a, dtype), grad=True, dtype=dtype) for a in (p, target)]
              for lib in (ml, torch)}
    for lib, (probs, y) in leaves.items():
        F(lib).binary_cross_entropy(probs, y, reduction="sum").backward()
    assert_same(leaves[ml][0].grad, leaves[torch][0].grad, True, "binary_cross_entropy's gradient")
    assert as_torch(leaves[ml][1].grad)[0, :2].tolist() == [float("inf"), float("-inf")]
    assert leaves[torch][1].grad[0, :2].tolist() == [float("inf"), float("-inf")]
    # binary_cross_entropy_with_logits is torch's composition, (1 - y) * x - logsigmoid(x) (times the
    # pos_weight term), each op rounded once: the same ops in the same order, bit for bit
    pos_weight = np.abs(randn(50)) * 2
    compare(lambda lib, x, y: F(lib).binary_cross_entropy_with_logits(x, y, weight=like(lib, w, x)), x, target,
            dtype=dtype)
    compare(lambda lib, x, y: F(lib).binary_cross_entropy_with_logits(x, y, reduction="none"), x, target,
            dtype=dtype)
    compare(lambda lib, x, y: F(lib).binary_cross_entropy_with_logits(
        x, y, reduction="none", pos_weight=like(lib, pos_weight, x)), x, target, dtype=dtype)
    compare(lambda lib, x, y: F(lib).binary_cross_entropy_with_logits(
        x, y, reduction="sum", pos_weight=like(lib, pos_weight, x)), x, target, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ops_torch_composes_match_bit_for_bit(dtype):
    """torch builds these from 16-bit ops, each rounding once; minilora from the same ops in the
    same order (glu is one torch kernel: minilora's rounds once too)."""
    a, b = randn(6, 9), randn(6, 9)
    sign = np.sign(RNG.standard_normal(6))
    compare(lambda lib, x, y: F(lib).cosine_similarity(x, y, dim=1), a, b, dtype=dtype)
    compare(lambda lib, x: F(lib).normalize(x, p=2.0, dim=-1), a, dtype=dtype)
    compare(lambda lib, x, y: F(lib).pairwise_distance(x, y), a, b, dtype=dtype)
    compare(lambda lib, x, y: F(lib).margin_ranking_loss(x[:, 0], y[:, 0], lib.tensor(sign).to(x.dtype), margin=0.1),
            a, b, dtype=dtype)
    compare(lambda lib, x, y: F(lib).triplet_margin_loss(x, y, x * 0.5 + y), a, b, dtype=dtype)
    compare(lambda lib, x, y: F(lib).cosine_embedding_loss(x, y, lib.tensor(sign).to(x.dtype)), a, b, dtype=dtype)
    compare(lambda lib, x, y: lib.cross(x[:, :3], y[:, :3], dim=1), a, b, dtype=dtype)
    compare(lambda lib, x: F(lib).pad(x[None], (2, 2), mode="reflect"), a, dtype=dtype)
    compare(lambda lib, x: F(lib).glu(x[:, :8]), a, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding(dtype):
    ids = RNG.integers(0, 10, (4, 50))  # every row used many times: its gradient is a long sum
    compare(lambda lib, w, ids: F(lib).embedding(lib.tensor(ids), w), randn(10, 8), dtype=dtype, constants=(ids,))
    compare(lambda lib, w, ids: F(lib).embedding(lib.tensor(ids), w, padding_idx=3), randn(10, 8), dtype=dtype,
            constants=(ids,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_scaled_dot_product_attention(dtype):
    """In float32, rounded once. torch's CPU kernel (flash attention) rounds the probabilities to
    16 bits before multiplying them with v, block by block: within its tolerance, scaled (see
    assert_same)."""
    q, k, v = randn(2, 4, 9, 16), randn(2, 4, 9, 16), randn(2, 4, 9, 16)
    sdpa = lambda lib: F(lib).scaled_dot_product_attention  # noqa: E731
    compare(lambda lib, q, k, v: sdpa(lib)(q, k, v), q, k, v, dtype=dtype, exact=False, scaled=True)
    compare(lambda lib, q, k, v: sdpa(lib)(q, k, v, is_causal=True), q, k, v, dtype=dtype, exact=False, scaled=True)
    compare(lambda lib, q, k, v: sdpa(lib)(q, k, v, scale=0.3), q, k, v, dtype=dtype, exact=False, scaled=True)
    mask = RNG.random((9, 9)) > 0.3
    compare(lambda lib, q, k, v: sdpa(lib)(q, k, v, attn_mask=lib.tensor(mask)), q, k, v, dtype=dtype,
            exact=False, scaled=True)
    compare(lambda lib, q, k, v, m: sdpa(lib)(q, k, v, attn_mask=m.detach()), q, k, v, randn(9, 9),
            dtype=dtype, exact=False, scaled=True)



def _hf_rotate_half(x):
    return torch.cat((-x[..., x.shape[-1] // 2:], x[..., :x.shape[-1] // 2]), dim=-1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_llama_ops_round_as_transformers_composes_them(dtype):
    """``swiglu`` and ``rotary_embedding`` have no torch function: transformers' Llama writes them
    as ``act_fn(gate) * up`` and ``q * cos + rotate_half(q) * sin``, each op rounding to 16 bits.
    minilora's 16-bit versions round at the same places: bit for bit."""
    def swiglu(lib, gate, up):
        return F(lib).silu(gate) * up if lib is torch else ml.ops.swiglu(gate, up)
    compare(swiglu, randn(3, 40) * 2, randn(3, 40), dtype=dtype)
    angles = np.arange(7)[:, None] * 0.3 ** np.arange(8)[None, :]
    cos, sin = (np.concatenate([f(angles)] * 2, -1) for f in (np.cos, np.sin))

    def rotary(lib, q, cos, sin):
        cos, sin = cos.detach(), sin.detach()
        return q * cos + _hf_rotate_half(q) * sin if lib is torch else ml.ops.rotary_embedding(q, cos, sin)
    compare(rotary, randn(2, 4, 7, 16), cos, sin, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolution_and_pooling(dtype):
    images, kernel, bias = randn(2, 3, 9, 9), randn(4, 3, 3, 3), randn(4)
    compare(lambda lib, x, w, b: F(lib).conv2d(x, w, b, padding=1), images, kernel, bias, dtype=dtype)
    compare(lambda lib, x, w: F(lib).conv2d(x, w, stride=2, dilation=(1, 2)), images, kernel, dtype=dtype)
    compare(lambda lib, x, w: F(lib).conv1d(x, w, padding="same"), images[:, :, 0], kernel[:, :, 0], dtype=dtype)
    compare(lambda lib, x: F(lib).max_pool2d(x, 3, stride=2, padding=1), images, dtype=dtype)
    compare(lambda lib, x: F(lib).avg_pool2d(x, 3), images, dtype=dtype)
    compare(lambda lib, x: F(lib).avg_pool2d(x, 3, 2, 1, count_include_pad=False), images, dtype=dtype)
    compare(lambda lib, x: F(lib).adaptive_avg_pool2d(x, (4, 3)), images, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_scales_as_torch(dtype):
    """torch multiplies by the scale 1/(1-p) rounded to 16 bits (its mask holds the scale): so
    does minilora. The kept elements are compared (the random masks differ)."""
    x = randn(4000) * 3
    for lib in (torch, ml):
        out = F(lib).dropout(t(lib, x, dtype=dtype), p=0.1)
        assert str(out.dtype).removeprefix("torch.") == dtype
        kept = out.float().numpy() if lib is ml else out.float().numpy()
        scale = float(np.array(1 / 0.9).astype(ml.dtypes.to_dtype(dtype)))
        expected = (representable(x, dtype) * scale).astype(np.float32).astype(ml.dtypes.to_dtype(dtype))
        np.testing.assert_array_equal(kept[kept != 0], expected.astype(np.float32)[kept != 0])
        assert 0.85 < np.mean(kept != 0) < 0.95


# ---- layers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_layers_in_16_bits(dtype):
    """``dtype=`` gives 16-bit parameters (minilora's dtype or torch's), drawn as torch's: the values
    cannot match torch's random numbers, the distribution does (Kaiming-uniform bounds)."""
    for spelling in (getattr(ml, dtype), getattr(torch, dtype)):
        layers = [ml.nn.Linear(64, 32, dtype=spelling), ml.nn.Embedding(10, 8, dtype=spelling),
                  ml.nn.LayerNorm(8, dtype=spelling), ml.nn.RMSNorm(8, dtype=spelling),
                  ml.nn.Conv2d(3, 4, 3, dtype=spelling), ml.nn.GroupNorm(2, 4, dtype=spelling),
                  ml.nn.BatchNorm1d(4, dtype=spelling)]
        for layer in layers:
            for name, p in layer.named_parameters():
                assert str(p.dtype) == dtype, (type(layer).__name__, name)
                assert p.requires_grad
    weight = ml.nn.Linear(256, 128, dtype=getattr(ml, dtype)).weight.float().numpy()
    bound = 1 / np.sqrt(256)
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.9 * bound
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.05 * bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_16_bit_layer_computes_as_torchs(dtype):
    """The same weights in torch's layer and minilora's, both moved to 16 bits with ``.to()``:
    forward and parameter gradients."""
    def build(lib):
        lib.manual_seed(0) if lib is torch else None
        model = lib.nn.Sequential(lib.nn.Linear(24, 48), lib.nn.GELU(approximate="tanh"), lib.nn.LayerNorm(48),
                                  lib.nn.Linear(48, 10))
        return model
    theirs, ours = build(torch), build(ml)
    ours.load_state_dict({k: ml.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    theirs, ours = theirs.to(getattr(torch, dtype)), ours.to(getattr(ml, dtype))
    x = randn(16, 24)
    out_t, out_m = theirs(t(torch, x, dtype=dtype)), ours(t(ml, x, dtype=dtype))
    assert_same(out_m, out_t, False, "forward", scaled=True)
    target = RNG.integers(0, 10, 16)
    F(torch).cross_entropy(out_t, torch.tensor(target)).backward()
    F(ml).cross_entropy(out_m, ml.tensor(target)).backward()
    for (name, p_t), (_, p_m) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert_same(p_m.grad, p_t.grad, False, f"grad of {name}", scaled=True, roundings=2)


LAYERS = {  # how to build the layer, how to call it, the input's shape
    "MultiheadAttention": (lambda lib: lib.nn.MultiheadAttention(16, 4, batch_first=True),
                           lambda m, x: m(x, x, x)[0], (2, 5, 16)),
    "TransformerEncoderLayer": (lambda lib: lib.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
                                lambda m, x: m(x), (2, 5, 16)),
    "GRU": (lambda lib: lib.nn.GRU(16, 8, batch_first=True), lambda m, x: m(x)[0], (2, 5, 16)),
    "LSTM": (lambda lib: lib.nn.LSTM(16, 8, batch_first=True), lambda m, x: m(x)[0], (2, 5, 16)),
    "BatchNorm2d": (lambda lib: lib.nn.BatchNorm2d(3), lambda m, x: m(x), (2, 3, 5, 5)),
    "Conv2d": (lambda lib: lib.nn.Conv2d(3, 4, 3, padding=1), lambda m, x: m(x), (2, 3, 5, 5)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_composite_layers_moved_to_16_bits(name, dtype):
    """torch's layer and minilora's with the same weights, ``.to()`` 16 bits: output and input
    gradient within torch's tolerance (these chain many rounded ops: up to three roundings of the
    largest value, see assert_same)."""
    build, call, shape = LAYERS[name]
    torch.manual_seed(0)
    theirs, ours = build(torch), build(ml)
    ours.load_state_dict({k: ml.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    theirs, ours = theirs.to(getattr(torch, dtype)), ours.to(getattr(ml, dtype))
    x = randn(*shape)
    x_t, x_m = t(torch, x, grad=True, dtype=dtype), t(ml, x, grad=True, dtype=dtype)
    out_t, out_m = call(theirs, x_t), call(ours, x_m)
    assert_same(out_m, out_t, False, "forward", scaled=True, roundings=2)
    upstream = np.random.default_rng(1).standard_normal(tuple(out_t.shape))
    (out_t.float() * t(torch, upstream, dtype="float32")).sum().backward()
    (out_m.float() * t(ml, upstream, dtype="float32")).sum().backward()
    assert_same(x_m.grad, x_t.grad, False, "grad of the input", scaled=True, roundings=3)


# ---- regression tests: the silent divergences NumPy alone gives ------------------------------------------------
def test_bfloat16_matmul_is_bfloat16_and_accumulates_in_float32():
    a = ml.ones(1, 4096, dtype=ml.bfloat16)
    out = a @ a.T
    assert out.dtype == ml.bfloat16  # NumPy: float32
    assert out.item() == 4096
    x = ml.full((3, 1000), 0.01, dtype=ml.bfloat16)
    w = ml.ones(2, 1000, dtype=ml.bfloat16)
    # float32 accumulation of 1000 * bf16(0.01) = 9.9945..., rounded once: 10.0 in bfloat16
    assert F(ml).linear(x, w).float().numpy().tolist() == [[10.0, 10.0]] * 3


def test_float16_matmul_accumulates_in_float32():
    a = ml.full((1, 5000), 1.0, dtype=ml.float16)
    assert (a @ a.T).item() == 5000  # NumPy's float16 product stops at 2048 (2048 + 1 rounds back)


def test_blas_gemm_16_bit_rounds_once():
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(ml.bfloat16) for s in ((17, 300), (300, 9)))
    out = rng.standard_normal((17, 9)).astype(ml.bfloat16)
    expected = (0.5 * (a.astype(np.float32) @ b.astype(np.float32)) + out.astype(np.float32)).astype(ml.bfloat16)
    assert blas.addmm_(out, a, b, alpha=0.5) is out
    np.testing.assert_array_equal(out.view(np.int16), expected.view(np.int16))


def test_16_bit_norms_sum_in_float32():
    """A row of 4096 equal numbers: a mean summed in bfloat16 stops growing at 256 terms."""
    x = ml.full((2, 4096), 3.0, dtype=ml.bfloat16)
    assert np.all(F(ml).rms_norm(x, (4096,)).float().numpy() == 1.0)
    y = F(ml).layer_norm(x + (ml.arange(4096) % 2).to(ml.bfloat16), (4096,))  # 3, 4, 3, 4, ...
    np.testing.assert_array_equal(np.unique(y.float().numpy()), [-1.0, 1.0])


def test_rms_norm_default_eps_is_float32s():
    """torch's documentation says eps=None is the input dtype's epsilon; its kernel takes float32's
    for 16-bit inputs (bfloat16's 2^-7 would change a row of small numbers by 6%)."""
    x = ml.full((1, 8), 0.05, dtype=ml.bfloat16)
    assert F(ml).rms_norm(x, (8,)).float().numpy().tolist() == [[1.0] * 8]
    assert F(ml).rms_norm(x, (8,), eps=2.0 ** -7).float().numpy()[0, 0] < 0.95


def test_16_bit_gradients_are_16_bit():
    x = ml.randn(4, 8, dtype=ml.bfloat16, requires_grad=True)
    w = ml.randn(6, 8, dtype=ml.bfloat16, requires_grad=True)
    emb = ml.randn(5, 8, dtype=ml.bfloat16, requires_grad=True)
    hidden = F(ml).layer_norm(x + F(ml).embedding(ml.tensor([0, 1, 1, 4]), emb), (8,))
    loss = F(ml).cross_entropy(F(ml).linear(hidden, w), ml.tensor([0, 1, 2, 3]))
    assert loss.dtype == ml.bfloat16
    loss.backward()
    assert x.grad.dtype == w.grad.dtype == emb.grad.dtype == ml.bfloat16


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_binary_cross_entropy_with_logits_gradient_check(reduction):
    """Its backward is torch's own formula (one node), checked against central differences in
    float64 for the logits and the target, with a weight and a pos_weight; those two may not
    require grad, as in torch."""
    from minilora.testing import grad_check
    rng = np.random.default_rng(4)
    x = ml.tensor(rng.standard_normal((3, 5)) * 3, requires_grad=True)
    y = ml.tensor(rng.uniform(0, 1, (3, 5)), requires_grad=True)
    weight, pos_weight = ml.tensor(rng.uniform(0.5, 2, (3, 5))), ml.tensor(rng.uniform(0.5, 3, 5))
    for options in ({}, {"weight": weight}, {"pos_weight": pos_weight, "weight": weight}):
        grad_check(lambda x, y: ml.nn.functional.binary_cross_entropy_with_logits(
            x, y, reduction=reduction, **options), x, y, name=f"bce_with_logits {options.keys()}")
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'pos_weight'"):
        ml.nn.functional.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight.requires_grad_())
