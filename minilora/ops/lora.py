"""The LoRA op: ``h = W0 x + bias + scale * B (A dropout(x))`` as ONE differentiable node.

This is where the whole project meets: the LoRA layers call it, the CUDA kernels implement it.

Shapes (PyTorch layout, weights are ``[out, in]``)::

    x  [..., K]  flattened to X [M, K]        A  [r, K]   lora_A.weight
    W0 [N, K]    frozen base weight           B  [N, r]   lora_B.weight

Forward keeps the rank-r intermediate small and never builds the N x K matrix ``B A``::

    U = dropout(X) A^T                 [M, r]
    Y = X W0^T + bias + scale * U B^T  [M, N]

Backward (chain rule through the two small GEMMs; the frozen ``W0`` gets NO gradient GEMM)::

    V  = scale * dY B                  [M, r]   gradient reaching U
    dB = scale * dY^T U                [N, r]
    dA = V^T dropout(X)                [r, K]
    dX = dY W0 + dropout'(V A)         [M, K]   dropout's backward touches the LoRA branch only
    dbias = sum over rows of dY

Dropout (the default, no ``seed=``) is torch's CPU dropout: the mask ``nn.Dropout`` draws from the
global generator (PEFT's ``lora_dropout``), kept for backward, so a seeded PEFT training run drops
the same inputs (on ``emu`` too, which then runs the NumPy math). With ``seed=``, and on ``cuda``
(where torch's own masks come from another generator, Philox), it is a counter-based hash of
(seed, element index) instead: the mask is regenerated in backward (no M x K mask kept in memory)
and the CUDA kernels compute the very same bits, so ``cpu``, ``emu`` and ``cuda`` agree exactly
given a seed (see ``lora_dropout_mask``).

Mixed precision (a float16/bfloat16 model, as PEFT trains it): x, W0 and bias in the 16-bit dtype, A and
B in float32 (PEFT's ``autocast_adapter_dtype=True``) or in the same 16-bit dtype. The op then computes
what PEFT's ``lora.Linear.forward`` computes, rounding exactly where it rounds (``_half_forward``)::

    base = round16(X W0^T + bias)                    the base layer: float32 sums, rounded once
    L    = (dropout(float(X)) A^T) B^T * scale         float32 (each product rounded, if A/B are 16-bit)
    Y    = round16(float(base) + L)                  PEFT's ``result.to(torch_result_dtype)``

On ``emu``/``cuda`` a bfloat16 base with float32 adapters and no dropout runs the tensor-core kernels
(kernels/lora_bf16.cu), which add the LoRA term before the one rounding of Y (and of dX): within one
bfloat16 rounding of the above.
"""
import functools
import operator

import numpy as np

from .. import (amp as _amp, bf16_products, blas, dtypes, float32_sums, gemm_pool, half_products, kernels, mkl_dot,
               mkl_half_gemm, parallel, solutions)
from ..blas import addmm_, matmul
from ..device import xp_of
from ..random import fresh_seed
from ..tensor import Function
from .matmul import linear_saves, one_row_times_weight, refuse_as_linear
from .nn import dropout_noise, dropout_scale

__all__ = ["lora_linear", "lora_dropout_mask", "LoraLinear"]


def lora_dropout_mask(seed, M, K, p, xp=np):
    """Boolean keep-mask ``[M, K]`` for element ``i = m*K + k``: a murmur3-style hash of ``(i, seed)``.

    ``keep = hash(i) >= p * 2^32``, so each element survives with probability ``1 - p``. All
    arithmetic is uint32 and wraps mod 2^32, exactly as the CUDA kernel computes it.
    """
    threshold = xp.uint32(min(int(p * 2.0**32), 2**32 - 1))
    h = xp.arange(M * K, dtype=xp.uint64).astype(xp.uint32)  # index mod 2^32
    h *= xp.uint32(0x9E3779B1)
    h ^= xp.uint32(int(seed) & 0xFFFFFFFF)
    h ^= h >> xp.uint32(16)
    h *= xp.uint32(0x85EBCA6B)
    h ^= h >> xp.uint32(13)
    h *= xp.uint32(0xC2B2AE35)
    h ^= h >> xp.uint32(16)
    return (h >= threshold).reshape(M, K)


def _dropout_multipliers(X, p, seed, mask=None):
    """What dropout multiplies ``X`` by: ``[M, K]`` of 0 and ``1/(1-p)`` (inverted dropout), or
    ``None`` when ``p == 0`` (no dropout, nothing to multiply). ``mask``: torch's drawn mask (then
    torch's ``noise.div_(1 - p)`` scale), else the hash of ``seed``."""
    if p == 0:
        return None
    if mask is not None:
        return mask * dropout_scale(p, X.dtype)
    keep = lora_dropout_mask(seed, X.shape[0], X.shape[1], p, xp_of(X))
    return keep * X.dtype.type(1.0 / (1.0 - p))


def _half_dropout_multipliers(X, adapter_dtype, p, seed, mask=None):
    """Dropout's float32 multipliers on a 16-bit base: dropout runs on ``x.to(A.dtype)``, so ``1/(1-p)`` is
    taken in the adapter's dtype (torch's dropout divides its mask in the input's dtype: bf16 rounds it)."""
    if p == 0:
        return None
    keep = mask if mask is not None else lora_dropout_mask(seed, X.shape[0], X.shape[1], p, xp_of(X))
    scale = dropout_scale(p, np.dtype(np.float32)).astype(adapter_dtype).astype(np.float32)  # on the host
    return keep * scale  # float32: 0 or the scale


def _lora_forward_rows(X, keep, U, Y, W0, A, B, bias, s):
    """The LoRA forward of rows of X: fills ``U`` [rows, r] and ``Y`` [rows, N].

    Called on the whole arrays it is the whole forward; ``LoraLinear.forward`` calls it on blocks of
    rows side by side (``minilora.parallel``), each block writing its own rows of ``U`` and ``Y``.
    ``keep`` is dropout's ``[rows, K]`` multiplier, or None for no dropout.
    Every float32 and float64 LoRA layer on the CPU runs it. Not run, by design: on emu/cuda the CUDA kernels
    (chapter 5; but with a drawn dropout mask), and for a 16-bit base PEFT's mixed-precision order,
    ``_half_forward``, whose roundings (the base's output rounded to 16 bits, then the sum) one ``Y`` cannot follow.
    """
    # EXERCISE 4.2: U = dropout(X) A^T and Y = X W0^T + s U B^T (+ bias), never forming B A
    # BEGIN SOLUTION
    # (matmul: np.matmul through the BLAS minilora calls, MKL's or OpenBLAS's -- minilora.blas)
    matmul(X if keep is None else X * keep, A.T, out=U)  # the only thing LoRA adds to memory
    if bias is None:
        matmul(X, W0.T, out=Y)
    else:  # PEFT's base layer is F.linear, whose addmm starts the sums from the bias (BLAS's beta = 1)
        Y[...] = bias
        addmm_(Y, X, W0.T)
    addmm_(Y, U, B.T, alpha=s)  # Y += s U B^T in place: no [rows, N] temporary
    # END SOLUTION


def _lora_backward_rows(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB):
    """The LoRA backward of rows: fills ``V`` = s dY B and ``dX`` (None: not wanted) for these rows, and
    returns these rows' terms ``(dA, dB)`` of the sums over rows (None where not wanted).

    Called on the whole arrays it is the whole backward; ``LoraLinear.backward`` calls it on blocks
    of rows side by side and adds the blocks' terms up (``minilora.parallel.sum_over_rows``).
    Run where ``_lora_forward_rows`` is (emu/cuda: the backward kernels; a 16-bit base: ``_half_backward``).
    """
    # EXERCISE 4.3: dX, dA, dB (None if not needed) via the rank-r V = s dY B; dropout masks only the LoRA part
    # BEGIN SOLUTION
    matmul(dY, B, out=V)  # [rows, r]: the gradient reaching U
    V *= s
    if dX is not None:  # dY W0 + dropout'(V A): the same mask, since dropout is linear
        matmul(dY, W0, out=dX)
        if keep is None:
            addmm_(dX, V, A)  # dX += V A in place
        else:
            dX += matmul(V, A) * keep
    dA = matmul(V.T, X if keep is None else X * keep) if need_dA else None  # dA = V^T dropout(X)
    dB = s * matmul(dY.T, U) if need_dB else None  # dB = s dY^T U (as torch: U^T dY, transposed, splits otherwise)
    return dA, dB
    # END SOLUTION


# The same products as _lora_forward_rows / _lora_backward_rows, as lists that minilora.gemm_pool runs on
# the blocks of rows in C threads, without the GIL between them. Each is the CBLAS call the NumPy code makes
# on the same block, and dropout's elementwise multiplications are the same on the whole arrays, so the
# numbers are the same to the bit (tests/test_gemm_pool_r25.py); the NumPy functions stay the definition
# (and the exercise).
_forward_is_the_solution = solutions.solution_check(_lora_forward_rows)  # (else the learner's code runs)
_backward_is_the_solution = solutions.solution_check(_lora_backward_rows)


def _products_whole():
    """Whether the layer's products run whole, each on MKL's threads (``blas.threads_products``), not on blocks of
    rows in minilora's threads with one MKL thread each: PEFT's layer is three ``F.linear`` calls, and torch's MKL
    splits each product over its threads its own way -- for many shapes the sum over K, which no split by rows gives.
    Measured (round 31, tests/mkl_lora_sweep.py, 2 threads): hidden 4096 (W0 4096x4096 / 4096x11008, 16 and 128 rows,
    r 8 and 64) y, dx, dA and dB of every layer an ulp or so off PEFT's by blocks (48 of 80 tensors, float32 and
    float64); the tutorials' shapes (64-2048 rows, 256-1376 features, r 8 and 64) 194 of 480 -- at 1024 rows dA and dB
    always, the sums over the rows --; whole, 0 (with dB = dY^T U, torch's orientation). Whole costs speed where blocks
    happened to be right: one layer of benchmarks/lora_step.py (1024 rows, 256 -> 688, r 8: there dA and dB were off)
    took 4.4 ms for forward and backward, 3.7 by blocks (fastest of 40), about the same CPU time."""
    return blas.threads_products() or not _blocks_of_rows_alike()


def _blocks_of_rows_alike():
    """Whether a product on blocks of rows gives the rows of the whole product, bit for bit, so that minilora's threads
    may split the layer's products by rows where torch's (PEFT's) are whole: OpenBLAS, and MKL on the Intel CPU its
    orders were measured on (``mkl_dot.APPLIES``). Not MKL elsewhere: on an AMD EPYC (Zen 4) its dgemm sums a row
    by the call's number of rows (a 300-row layer, 256 -> 256, r 64, float64: V, dx and dA off by 2 blocks of 150;
    its float32 products were alike on the shapes tried, but that was not measured widely enough to rely on)."""
    return blas.library() != "mkl" or mkl_dot.APPLIES


def _rows_matmul(a, b):
    """``a @ b`` split by rows in minilora's threads (``parallel.matmul``) where that keeps the bits, else whole."""
    return parallel.matmul(a, b) if _blocks_of_rows_alike() else matmul(a, b)


def _rows_matmul_into(out, a, b):
    """``out += a @ b`` (BLAS's beta = 1) split by rows where that keeps the bits (``_rows_matmul``), else whole."""
    return parallel.matmul_into(out, a, b) if _blocks_of_rows_alike() else blas.gemm(a, b, out, beta=1.0)


def _forward_in_c_threads(X, keep, U, Y, W0, A, B, bias, s, work):
    """U = dropout(X) A^T, Y = (bias +) X W0^T, Y += s U B^T on blocks of rows in C threads; False: not done."""
    if parallel.parts_for(len(X), work) < 2 or not _forward_is_the_solution():
        return False
    P = gemm_pool.Product
    dropped = X if keep is None else X * keep
    if bias is not None:
        Y[...] = bias  # (the base product's sums start from it, as _lora_forward_rows')
    base = P(X, W0.T, Y, beta=0.0 if bias is None else 1.0)
    return parallel.products_run(len(X), [P(dropped, A.T, U), base, P(U, B.T, Y, alpha=s, beta=1.0)], work)


def _sums_over_all_rows():
    """Whether dA and dB are each one product over all rows, after the blocks (MKL, torch's library: PEFT's
    lora_A / lora_B weight gradients are one mm each, so these are its bits on any thread count), rather than
    each block's terms added up (OpenBLAS: computed while the block's rows are in the cache; the bits are not
    torch's anyway, and depend on the thread count)."""
    return blas.library() == "mkl"


def _backward_in_c_threads(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB, work, onto=None):
    """``(dA, dB)`` of _lora_backward_rows (and V, dX filled) from C threads; None: not done. ``onto``: x's gradient
    summed so far, to which x's two parts are added in torch's order, ``(onto + V A) + dY W0`` (backward_onto; dX
    then holds dY W0 alone): each block of rows adds its own, while they are in its core's cache."""
    parts = parallel.parts_for(len(dY), work)
    if parts < 2 or not _backward_is_the_solution():
        return None
    if (need_dA or need_dB) and _sums_over_all_rows():
        return _backward_sums_whole(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB, work, onto)
    P = gemm_pool.Product
    dA_parts = np.empty((parts,) + A.shape, A.dtype) if need_dA else None  # each block's term of the sum
    dB_parts = np.empty((parts,) + B.shape, B.dtype) if need_dB else None
    products = [P(dY, B, V), P(None, None, V, alpha=s, split="scale")]  # V = s dY B
    lora_dX = None if dX is None or keep is None else np.empty_like(dX)  # V A, for dropout's mask
    branch_to = dX if onto is None else onto
    if dX is not None:  # dX = dY W0 + V A (masked by dropout)
        products += [P(dY, W0, dX), P(V, A, branch_to, beta=1.0) if keep is None else P(V, A, lora_dX)]
        if onto is not None and keep is None:
            products.append(P(onto, dX, onto, split="add"))
    if need_dA:
        products.append(P(V.T, X if keep is None else X * keep, dA_parts, split="sum"))
    if need_dB:
        products.append(P(dY.T, U, dB_parts, split="sum"))
    if not parallel.products_run(len(dY), products, work):
        return None
    if lora_dX is not None:
        branch_to += lora_dX * keep
        if onto is not None:
            parallel.add_(onto, dX)
    dA = None if dA_parts is None else functools.reduce(operator.add, dA_parts)  # in the order of the blocks
    dB = None if dB_parts is None else functools.reduce(operator.add, [s * part for part in dB_parts])
    return dA, dB


def _backward_in_python(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB, work, onto=None):
    """``(dA, dB)`` (and V, dX filled) from ``_lora_backward_rows`` itself: on blocks of rows in minilora's Python
    threads, their terms added in the blocks' order; or, where dA and dB are one product over all rows
    (``_sums_over_all_rows``), on the whole arrays in this thread. ``onto``: as _backward_in_c_threads' (MKL only)."""
    if onto is not None:  # (the exercise gives dX as the two parts summed: V, dA and dB from it, the parts here)
        grads = _lora_backward_rows(dY, X, U, keep, V, None, W0, A, B, s, need_dA, need_dB)
        matmul(dY, W0, out=dX)
        _add_parts_onto(onto, dX, V, A, keep)
        return grads
    if _sums_over_all_rows():
        return _lora_backward_rows(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB)
    return parallel.sum_over_rows(lambda *rows: _lora_backward_rows(*rows, W0, A, B, s, need_dA, need_dB),
                                  dY, X, U, keep, V, dX, work_per_row=work)


def _backward_sums_whole(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB, work, onto=None):
    """``_backward_in_c_threads`` with dA and dB each one product over all the rows: V and dX by blocks of rows
    first, then dA = V^T dropout(X) and dB = s dY^T U side by side, one per thread (``split="whole"``)."""
    if _backward_in_c_threads(dY, X, U, keep, V, dX, W0, A, B, s, False, False, work, onto) is None:
        return None
    P = gemm_pool.Product
    dA = np.empty(A.shape, A.dtype) if need_dA else None
    dB = np.empty(B.shape, B.dtype) if need_dB else None
    sums = ([P(V.T, X if keep is None else X * keep, dA, split="whole", block=0)] if need_dA else []) + (
        [P(dY.T, U, dB, split="whole", block=int(bool(need_dA)))] if need_dB else [])
    if sums and not parallel.products_run(len(dY), sums, work):
        for p in sums:
            matmul(p.a, p.b, out=p.out)
    return dA, None if dB is None else s * dB


def _one_row_as_peft(X, keep, U, Y, W0, A, B, bias, s):
    """A decoded token (one row of X): fills ``U`` and ``Y`` as PEFT computes them and returns True, or False where
    torch's one-row order is not modelled. PEFT's three ``F.linear`` calls (base, lora_A, lora_B) are each one-row
    products, which torch sums as its matrix-vector product (``one_row_times_weight``), and it adds them up as
    ``(X W0^T + bias) + (U B^T) * s``, each step rounded."""
    if len(X) != 1 or type(X) is not np.ndarray:
        return False
    u = one_row_times_weight(X if keep is None else X * keep, A)
    base = one_row_times_weight(X, W0)
    lora = None if u is None else one_row_times_weight(u, B)
    if base is None or lora is None:
        return False
    if bias is not None:
        base += bias
    lora *= s
    np.add(base, lora, out=Y)
    U[...] = u
    return True


def _scale_rounds(s):
    """Whether multiplying by the scale rounds, so that the layer takes PEFT's roundings (``_pefts_order_needed``).
    PEFT rounds the rank-r product before scaling it, ``lora_B(lora_A(x)) * s``, and so scales dY before its
    products backward; minilora's one scaled product (``addmm_(Y, U, B.T, alpha=s)``, ``V = s (dY B)``) rounds
    once: the same numbers only when scaling is exact (s = 2 = 16 / 8, 0.25, 1 ...). rsLoRA's alpha / sqrt(r), or
    alpha = 12 at r = 8, take this path."""
    return np.isfinite(s) and s != 0 and np.frexp(s)[0] != 0.5


def _beta_adds_rounded(rows, r):
    """Whether BLAS's beta = 1 (``addmm_(Y, U, B.T)``, ``dX += V A``) adds the rounded rank-r product onto its target,
    as torch adds PEFT's two results: measured on MKL (round 31: 1-512 rows, r 1-128, 64-4096 columns, float32 and
    float64, 1 and 2 threads) everywhere but for one or two rows, which MKL sums onto the target as it goes (its
    matrix-vector ways: dx an ulp off PEFT's), and for r = 1 (an outer product, each term added onto the target).
    Only on the CPU it was measured on (``mkl_dot.APPLIES``): MKL picks its kernels by the CPU, and on an AMD EPYC
    (Zen 4) dgemm's beta = 1 sums onto the target from 3 rows up at r 8 and 64 (y and dx an ulp off PEFT's); there
    the product is rounded first, PEFT's order by construction."""
    return mkl_dot.APPLIES and rows > 2 and r > 1


def _pefts_order_needed(X, A, s):
    """Whether the layer runs PEFT's order (``_forward_in_pefts_order``, ``_backward_in_pefts_order``: each product
    rounded, then scaled, then added): where MKL is the BLAS (so the products are torch's, and so the claim is PEFT's
    bits) and either the scale rounds (``_scale_rounds``) or BLAS's beta = 1 would add an unrounded product
    (``_beta_adds_rounded``)."""
    return (type(X) is np.ndarray and blas.library() == "mkl"
            and (_scale_rounds(s) or not _beta_adds_rounded(len(X), A.shape[0])))


def _forward_another_way(X, keep, U, Y, W0, A, B, bias, s, work):
    """Fill U and Y the fast or PEFT-exact way where one applies -- one row as PEFT's mv products, PEFT's order for a
    scale that rounds, the C threads -- and return True; False: ``_lora_forward_rows`` runs. Only while exercise 4.2
    is the shipped solution (a learner's code runs whatever the shapes)."""
    if not _forward_is_the_solution():
        return False
    if _one_row_as_peft(X, keep, U, Y, W0, A, B, bias, s):
        return True
    if _pefts_order_needed(X, A, s):
        _forward_in_pefts_order(X, keep, U, Y, W0, A, B, bias, s)
        return True
    if _products_whole():
        _lora_forward_rows(X, keep, U, Y, W0, A, B, bias, s)  # (on all the rows: each product on MKL's threads)
        return True
    return _forward_in_c_threads(X, keep, U, Y, W0, A, B, bias, s, work)


def _forward_in_pefts_order(X, keep, U, Y, W0, A, B, bias, s):
    """The forward as PEFT rounds it for any s (``_pefts_order_needed``): ``base + (U B^T) * s``, each step rounded; the
    products split by rows (``parallel``) where that keeps their bits (``_rows_matmul``), the rank-r term through a
    temporary."""
    U[...] = _rows_matmul(X if keep is None else X * keep, A.T)
    if bias is None:
        Y[...] = _rows_matmul(X, W0.T)
    else:
        Y[...] = bias
        _rows_matmul_into(Y, X, W0.T)
    lora = _rows_matmul(U, B.T)
    lora *= s
    Y += lora


def _backward_in_pefts_order(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB, onto=None):
    """The backward as torch's autograd runs PEFT's layer for any s: dY scaled first (the forward's ``* s``), then
    V = (s dY) B, dX = dY W0 + V A (dropout's mask on the second), dA = V^T dropout(X), dB = (s dY)^T U.
    ``onto``: as _backward_in_c_threads'."""
    scaled = dY * s
    V[...] = _u_gradient(scaled, B)
    if dX is not None:
        dX[...] = _rows_matmul(dY, W0)
        if onto is None:
            _add_branch(dX, V, A, keep)
        else:
            _add_parts_onto(onto, dX, V, A, keep)
    dA = matmul(V.T, X if keep is None else X * keep) if need_dA else None
    dB = matmul(scaled.T, U) if need_dB else None
    return dA, dB


def _u_gradient(scaled, B):
    """V = (s dY) B, the gradient reaching U, as torch's ``mm_mat1_backward`` takes it for PEFT's lora_B: where U is
    [1, 1] (one row, r = 1: its strides look column-major to ATen) as ``(B^T (s dY)^T)^T``, MKL called with those
    operands (``blas.gemm`` of one output column), where MKL is called as ATen calls it (``mkl_dot.direct``: on an AMD
    EPYC, Zen 4, MKL's sums of the two forms differ, float64 V 2 ulps off at 688 columns); else the row product (on
    the Intel CPU the orders were measured on it gave PEFT's bits)."""
    if len(scaled) == 1 and B.shape[1] == 1 and mkl_dot.direct():
        return blas.gemm(B.T, scaled.T, np.empty((1, 1), scaled.dtype)).T
    return _rows_matmul(scaled, B)


def _add_branch(target, V, A, keep):
    """``target += V A`` (dropout's mask on the product): the branch's part of x's gradient, added onto the base's
    (dX) or onto what x's other uses gave so far (backward_onto). Without dropout BLAS's beta = 1, which for an
    inner size of LoRA's rank adds the rounded product to target, as torch's add of the two gradients, where it does
    (``_beta_adds_rounded``); else the product is rounded first."""
    if keep is None and _beta_adds_rounded(len(target), A.shape[0]):
        _rows_matmul_into(target, V, A)
    elif keep is None:
        target += matmul(V, A)
    else:
        target += matmul(V, A) * keep


def _add_parts_onto(onto, base, V, A, keep):
    """``onto = (onto + V A) + base``: x's two parts (the branch's, the base layer's ``base`` = dY W0) added onto x's
    gradient summed so far, one after the other, as torch's engine adds PEFT's two nodes' (backward_onto)."""
    _add_branch(onto, V, A, keep)
    parallel.add_(onto, base)


def _check_shapes(x, W0, A, B, bias):
    K = x.shape[-1]
    r = A.shape[0]
    if W0.ndim != 2:
        raise ValueError(f"lora_linear: W0 has shape {W0.shape}; W0 must be [out, in] = [N, {K}]")
    refuse_as_linear(x, W0, bias)  # (PEFT's LoRA layer runs its base layer first: F.linear's refusals)
    if A.ndim != 2 or A.shape[1] != K:
        raise ValueError(f"lora_linear: A (lora_A.weight) has shape {A.shape}, expected [r, {K}]")
    if B.ndim != 2 or B.shape != (W0.shape[0], r):
        raise ValueError(f"lora_linear: B (lora_B.weight) has shape {B.shape}, expected "
                         f"[N, r] = [{W0.shape[0]}, {r}] (N from W0 {W0.shape}, r from A {A.shape})")
    if bias is not None and bias.shape != (W0.shape[0],):
        raise ValueError(f"lora_linear: bias has shape {bias.shape}, expected [{W0.shape[0]}]")
    _check_dtypes(x, W0, A, B, bias)


def _is_half(dtype):
    """float16 or bfloat16: a dtype that computes in float32 and is rounded back (``dtypes.compute_dtype``)."""
    return dtype.itemsize == 2 and dtypes.is_floating(dtype)


def _check_dtypes(x, W0, A, B, bias):
    """x, W0 (and bias) share the base dtype; A and B share the adapter dtype, which is the base dtype or,
    on a float16/bfloat16 base, float32 (PEFT's ``autocast_adapter_dtype=True``)."""
    base = {a.dtype for a in (x, W0) + ((bias,) if bias is not None else ())}
    adapter = {A.dtype, B.dtype}
    ok = len(base) == 1 and len(adapter) == 1 and (
        base == adapter or (_is_half(x.dtype) and A.dtype == np.float32))
    if not ok:
        raise TypeError(f"lora_linear: x, W0 (and bias) must share one dtype, and A, B share one dtype: the "
                        f"same, or float32 on a float16/bfloat16 base; got x {x.dtype}, W0 {W0.dtype}, "
                        f"A {A.dtype}, B {B.dtype}" + (f", bias {bias.dtype}" if bias is not None else ""))


# ---- mixed precision: a float16/bfloat16 base, adapters in float32 or the same 16-bit dtype ----------------
def _rounder(dtype):
    """What one op in ``dtype`` does to its float32 result: round it to ``dtype`` (and carry on in float32).
    Nothing for float32 adapters: their products stay float32."""
    if dtype == np.float32:
        return lambda a: a
    return lambda a: a.astype(dtype).astype(np.float32)


def _half_forward(X, keep, W0, A, B, bias, scale):
    """PEFT's ``lora.Linear.forward`` on a 16-bit base: returns ``(Y [M, N] 16-bit, U [M, r] float32)``.

    The base layer computes in float32 and rounds once (``F.linear`` in bf16, bias included); the adapter
    branch runs on ``x.to(A.dtype)``: in float32 (autocast adapters) or rounded after every op (16-bit
    adapters); ``result + lora`` promotes to float32 and ``.to(dtype)`` rounds the sum once more."""
    dtype, rnd = X.dtype, _rounder(A.dtype)
    base_mm, lora_mm = _products(dtype), _products(A.dtype)
    Xf = dtypes.upcast(X)
    base = base_mm(Xf, dtypes.upcast(W0).T)
    if bias is not None:
        base += dtypes.upcast(bias)
    base = base.astype(dtype).astype(np.float32)  # the base layer's output, a 16-bit tensor
    Xd = Xf if keep is None else rnd(Xf * keep)  # dropout(x.to(A.dtype))
    U = rnd(_lora_a_product(Xd, dtypes.upcast(A), lora_mm))  # lora_A(x)
    lora = rnd(rnd(lora_mm(U, dtypes.upcast(B).T)) * np.float32(scale))  # lora_B(lora_A(x)) * scaling
    return (base + lora).astype(dtype), U


def _lora_a_product(x, a, products):
    """``lora_A(x)``: float32 adapters' product is MKL's sgemm in torch, whose order is modelled for LoRA's usual
    ranks (``mkl_half_gemm.narrow_sgemm``); else ``products``' (16-bit adapters: their own order)."""
    if a.dtype == np.float32 and type(x) is np.ndarray and mkl_half_gemm.narrow_sgemm_applies(*x.shape, a.shape[0]):
        return mkl_half_gemm.narrow_sgemm(x, a)
    return products(x, a.T)


def _half_backward(g, X, keep, U, W0, A, B, scale, need_dx, need_dA, need_dB):
    """The gradients torch's autograd takes through ``_half_forward``: ``(dX through the adapter branch, dX
    through the base layer, dA, dB)`` (None where not asked).

    dY reaches the adapter branch as float32; the products of its backward are rounded only for 16-bit
    adapters; the branch's dX is rounded to the base dtype (the backward of ``x.to(A.dtype)``), the base
    layer's is ``round16(dY W0)``: autograd adds the two to x's gradient, the branch's first."""
    dtype, rnd = X.dtype, _rounder(A.dtype)
    base_mm, lora_mm = _products(dtype), _products(A.dtype)
    gf = dtypes.upcast(g)
    g_lora = rnd(gf * np.float32(scale))  # the gradient of lora_B's output
    dB = rnd(lora_mm(g_lora.T, U)).astype(A.dtype) if need_dB else None
    if not (need_dx or need_dA):
        return None, None, None, dB
    dU = rnd(lora_mm(g_lora, dtypes.upcast(B)))
    Xf = dtypes.upcast(X)
    dA = rnd(lora_mm(dU.T, Xf if keep is None else rnd(Xf * keep))).astype(A.dtype) if need_dA else None
    if not need_dx:
        return None, None, dA, dB
    dx_lora = rnd(lora_mm(dU, dtypes.upcast(A)))
    if keep is not None:  # dropout's backward: the same mask
        dx_lora = rnd(dx_lora * keep)
    return dx_lora.astype(dtype), base_mm(gf, dtypes.upcast(W0)).astype(dtype), dA, dB


def _half_base_grads(ctx, dY, dX):
    """``_base_grads`` for a 16-bit base: dW0 and dbias summed in float32 and rounded once, as torch's."""
    _, nw, _, _, nbias = ctx.needs_input_grad[:5]
    gf = dtypes.upcast(dY)
    dW0 = _products(dY.dtype)(gf.T, dtypes.upcast(ctx.X)).astype(dY.dtype) if nw else None
    dbias = gf.sum(axis=0).astype(dY.dtype) if nbias else None
    return _in_shape(dX, ctx), dW0, dbias


def _products(dtype):
    """How torch sums a product of ``dtype`` tensors (given here as float32 copies): bfloat16 in oneDNN's order
    (``bf16_products``), float16 in ATen's loops (``half_products``, by the operands' layout, as PEFT's base layer's
    ``F.linear`` and its gradients), float32/float64 as BLAS's product (``blas.matmul``)."""
    if bf16_products.applies(dtype):
        return bf16_products.matmul
    if dtype == np.float16:
        return _half_loops
    return matmul


def _half_loops(a, b):
    """``a @ b`` of float32 copies of float16 values, summed as ATen's float16 loops (NumPy's where one is empty)."""
    return half_products.matmul(a, b) if a.size and b.size else matmul(a, b)


def bf16_kernel_applies(x, W0, A, B, bias=None, dropout_p=0.0):
    """Whether the tensor-core kernels (kernels/lora_bf16.cu) compute this op: a bfloat16 base (x, W0,
    bias) with float32 adapters, and no dropout (the bf16 kernels have none). On ``cuda`` the arrays are
    then CuPy >= 14 arrays (older CuPy has no bfloat16 to hold them)."""
    is_bf16 = dtypes.is_bfloat16
    return (is_bf16(x.dtype) and is_bf16(W0.dtype) and A.dtype == B.dtype == np.float32
            and (bias is None or is_bf16(bias.dtype)) and dropout_p == 0)


def _save(ctx, x, X, U, W0, A, B, scale, dropout_p, seed, mask=None):
    ctx.X, ctx.U, ctx.W0, ctx.A, ctx.B = X, U, W0, A, B
    ctx.scale, ctx.p, ctx.seed, ctx.mask, ctx.x_shape = scale, dropout_p, seed, mask, x.shape


def _in_shape(dX, ctx):
    return None if dX is None else dX.reshape(ctx.x_shape)


def _in_c_order(grad):
    """An adapter's gradient laid out as torch's (C order: B.grad.stride() answers), whatever layout the rows'
    products gave it (a learner's exercise 4.3 may give dB as (U^T dY)^T); a C-ordered one as it is."""
    return grad if grad is None or grad.flags.c_contiguous else xp_of(grad).ascontiguousarray(grad)


def _base_grads(ctx, dY, dX):
    """What both backward paths share: dW0 (full fine-tuning only), dbias, and dX back in x's shape."""
    _, nw, _, _, nbias = ctx.needs_input_grad[:5]
    dW0 = _rows_matmul(dY.T, ctx.X) if nw else None  # only when the caller made W0 trainable
    dbias = _bias_grad(dY) if nbias else None
    return (None if dX is None else dX.reshape(ctx.x_shape)), dW0, dbias


def _bias_grad(dY):
    """``dY.sum(axis=0)``: PEFT's base layer is F.linear, whose bias gradient is addmm's ``sum_to``, torch's sum
    kernel: added in its order where ``float32_sums`` models it (float32, float64 NumPy arrays), else NumPy's."""
    total = float32_sums.torch_order_sum(dY, (0,))
    return dY.sum(axis=0) if total is None else total


def _bf16_kernel_forward(ctx, x, W0, A, B, bias, scale):
    """The bf16 forward on the tensor cores: ``Y`` comes back float32 and is rounded to bfloat16 once (PEFT
    rounds the base output first, then the sum: at most one bfloat16 rounding apart)."""
    X, W0, A, B = kernels.contiguous(x.reshape(-1, x.shape[-1]), W0, A, B)
    Y, U = kernels.lora_forward_bf16(X, W0, A, B, scale,
                                     bias=None if bias is None else bias.astype(np.float32), device=ctx.device)
    _save(ctx, x, X, U, W0, A, B, scale, 0.0, 0)
    return Y.astype(x.dtype).reshape(x.shape[:-1] + (W0.shape[0],))


def _bf16_kernel_backward(ctx, g):
    """The bf16 backward on the tensor cores: dA, dB float32 (the adapter's dtype), dX rounded to bfloat16."""
    nx, _, na, nb, _ = ctx.needs_input_grad[:5]
    (dY,) = kernels.contiguous(g.reshape(-1, g.shape[-1]))
    dX, dA, dB = kernels.lora_backward_bf16(dY, ctx.X, ctx.W0, ctx.A, ctx.B, ctx.U, ctx.scale,
                                            need_dx=nx, need_dA=na, need_dB=nb, device=ctx.device)
    dX, dW0, dbias = _half_base_grads(ctx, dY, None if dX is None else dX.astype(g.dtype))
    return dX, dW0, dA, dB, dbias


def _peft_saves(ctx):
    """What torch saves for PEFT's LoRA Linear (three products: base, lora_A, lora_B; see
    Function.torch_saves): each operand for the other's gradient, and lora_A's output ``U`` for B's.
    With dropout torch saves its mask and the dropped input, which minilora regenerates: None."""
    if ctx.p:
        return None
    nx, nw, na, nb, _ = ctx.needs_input_grad[:5]
    with_bias = len(ctx.inputs) > 4 and ctx.inputs[4] is not None
    return (linear_saves(nx, nw, 0, 1, with_bias)  # base: x for W0, W0.t() for x
            + linear_saves(nx, na, 0, 2, False)  # lora_A: x for A, A.t() for x
            + linear_saves(nx or na, nb, "U", 3, False))  # lora_B: U for B, B.t() for U


def _float_backward(ctx, dY, onto=None):
    """LoraLinear's float32/float64 backward of the rows dY: ``(dX, dW0, dA, dB, dbias)``. ``onto``: x's gradient
    summed so far ([M, K]), onto which x's two parts are added (``(onto + V A) + dY W0``); dX is then dY W0 alone."""
    nx, _, na, nb, _ = ctx.needs_input_grad[:5]
    X, U, W0, A, B = ctx.X, ctx.U, ctx.W0, ctx.A, ctx.B
    xp = xp_of(dY)
    keep = _dropout_multipliers(X, ctx.p, ctx.seed, ctx.mask)  # the forward's mask (kept or regenerated)
    V = xp.empty((X.shape[0], A.shape[0]), X.dtype)
    dX = xp.empty(X.shape, X.dtype) if nx else None
    s = dY.dtype.type(ctx.scale)
    work = parallel.product_work(W0.size if nx else B.size)
    grads = None  # (whole products on MKL's threads, _products_whole: _backward_in_python's, on all the rows)
    if _pefts_order_needed(X, A, s) and _backward_is_the_solution():
        grads = _backward_in_pefts_order(dY, X, U, keep, V, dX, W0, A, B, s, na, nb, onto)
    elif not _products_whole():
        grads = _backward_in_c_threads(dY, X, U, keep, V, dX, W0, A, B, s, na, nb, work, onto)
    if grads is None:
        grads = _backward_in_python(dY, X, U, keep, V, dX, W0, A, B, s, na, nb, work, onto)
    dA, dB = grads
    dA, dB = _in_c_order(dA), _in_c_order(dB)
    dX, dW0, dbias = _base_grads(ctx, dY, dX)
    return dX, dW0, dA, dB, dbias


def _adds_in_torchs_order(ctx, g):
    """Whether ``backward_onto`` adds x's two parts where torch's engine adds PEFT's: float32/float64 NumPy arrays
    with MKL as the BLAS (where the products are torch's, the claim of the same bits; and beta = 1 adds a rounded
    rank-r product: _add_branch), LoraLinear's own NumPy backward (not the kernels' variant), and the shipped
    exercise 4.3 (a learner's backward gives dX as one array)."""
    return (ctx.fn is LoraLinear and type(g) is np.ndarray and g.dtype.kind == "f" and g.dtype.itemsize >= 4
            and blas.library() == "mkl" and _backward_is_the_solution())


class LoraLinear(Function):
    """One node for base GEMM + LoRA branch. Inputs: ``x, W0, A, B, bias``; options: scale, dropout.
    A 16-bit ``x`` on the CPU comes a second time (``x_again``): its first slot takes the adapter branch's
    dX, the second the base layer's, so the engine adds them to x's gradient in the order (and with the
    16-bit roundings) torch's autograd adds PEFT's two uses of x: the branch's nodes are the later ones.

    ``forward`` / ``backward`` are the NumPy math. On a device that launches kernels (``emu``,
    ``cuda``), for float32 or a bfloat16 base with float32 adapters (``kernel_supports``),
    ``Function.apply`` runs ``kernel_forward`` / ``kernel_backward`` instead: the same op through the
    fused CUDA kernels (kernels/lora_forward.cu, lora_backward.cu; lora_bf16.cu on tensor cores).
    """

    torch_saves = staticmethod(_peft_saves)

    @staticmethod
    def forward(ctx, x, W0, A, B, bias=None, x_again=None, scale=1.0, dropout_p=0.0, seed=0, mask=None):
        _check_shapes(x, W0, A, B, bias)
        xp = xp_of(x)
        X = x.reshape(-1, x.shape[-1])
        mask = None if mask is None else mask.reshape(X.shape)
        if _is_half(X.dtype):  # a float16/bfloat16 model: PEFT's mixed-precision math
            keep = _half_dropout_multipliers(X, A.dtype, dropout_p, seed, mask)
            Y, U = _half_forward(X, keep, W0, A, B, bias, scale)
            _save(ctx, x, X, U, W0, A, B, scale, dropout_p, seed, mask)
            return Y.reshape(x.shape[:-1] + (W0.shape[0],))
        keep = _dropout_multipliers(X, dropout_p, seed, mask)
        Y = xp.empty((X.shape[0], W0.shape[0]), X.dtype)
        U = xp.empty((X.shape[0], A.shape[0]), X.dtype)
        s = X.dtype.type(scale)
        work = parallel.product_work(W0.size)
        if not _forward_another_way(X, keep, U, Y, W0, A, B, bias, s, work):  # else exercise 4.2, by rows
            parallel.rows(lambda *rows: _lora_forward_rows(*rows, W0, A, B, bias, s), X, keep, U, Y,
                          work_per_row=work)
        _save(ctx, x, X, U, W0, A, B, scale, dropout_p, seed, mask)
        return Y.reshape(x.shape[:-1] + (W0.shape[0],))

    @staticmethod
    def backward(ctx, g):
        nx, _, na, nb, _ = ctx.needs_input_grad[:5]
        X, U, W0, A, B = ctx.X, ctx.U, ctx.W0, ctx.A, ctx.B
        dY = g.reshape(-1, g.shape[-1])
        if _is_half(X.dtype):
            keep = _half_dropout_multipliers(X, A.dtype, ctx.p, ctx.seed, ctx.mask)  # the forward's mask
            dx_lora, dx_base, dA, dB = _half_backward(dY, X, keep, U, W0, A, B, ctx.scale, nx, na, nb)
            if len(ctx.inputs) > 5:  # x_again: the two parts, for the engine to add (class docstring)
                _, dW0, dbias = _half_base_grads(ctx, dY, None)
                return _in_shape(dx_lora, ctx), dW0, dA, dB, dbias, _in_shape(dx_base, ctx)
            dX = None if dx_base is None else (dx_base.astype(np.float32) + dx_lora.astype(np.float32)).astype(
                X.dtype)
            dX, dW0, dbias = _half_base_grads(ctx, dY, dX)
            return dX, dW0, dA, dB, dbias
        return _float_backward(ctx, dY)

    @staticmethod
    def backward_onto(ctx, g, so_far, writable):
        """``backward``, x's gradient added onto ``so_far`` (x's other uses' gradients, summed so far by the engine;
        None: none yet) in torch's order for PEFT's layer: the adapter branch's part first, then the base layer's
        (``(so_far + V A) + dY W0``; see tensor._backward_onto). The first entry returned is that sum."""
        if so_far is None or not _adds_in_torchs_order(ctx, g):  # (the first part of x's: dX = dY W0 + V A as it is)
            grads = ctx.fn.backward(ctx, g)
            if so_far is None or grads[0] is None:
                return grads
            return (parallel.add(so_far, grads[0]),) + grads[1:]  # (the engine's add)
        onto = so_far if writable and so_far.flags.c_contiguous else np.array(so_far, order="C")
        _, dW0, dA, dB, dbias = _float_backward(ctx, g.reshape(-1, g.shape[-1]), onto.reshape(ctx.X.shape))
        return onto, dW0, dA, dB, dbias

    @staticmethod
    def kernel_supports(x, W0, A, B, bias=None, x_again=None):
        """Whether the kernels take these inputs (``Function.apply`` asks before running ``kernel_forward``):
        float32 throughout (lora_forward.cu / lora_backward.cu), or a bfloat16 base with float32 adapters
        (the tensor-core kernels of lora_bf16.cu). Anything else runs the NumPy math on the device's arrays."""
        arrays = (x, W0, A, B) + ((bias,) if bias is not None else ())
        return kernels.supports(*(a.dtype for a in arrays)) or bf16_kernel_applies(x, W0, A, B, bias)

    @staticmethod
    def kernel_forward(ctx, x, W0, A, B, bias=None, x_again=None, scale=1.0, dropout_p=0.0, seed=0, mask=None):
        _check_shapes(x, W0, A, B, bias)
        if mask is not None:  # (a drawn mask: the kernels hash theirs from the seed)
            ctx.numpy_math = True
            return LoraLinear.forward(ctx, x, W0, A, B, bias, None, scale, dropout_p, seed, mask)
        if x.dtype != np.float32:  # the bf16 base: tensor cores, unless dropout (which they do not have)
            if not bf16_kernel_applies(x, W0, A, B, bias, dropout_p):
                ctx.numpy_math = True
                return LoraLinear.forward(ctx, x, W0, A, B, bias, None, scale, dropout_p, seed)
            return _bf16_kernel_forward(ctx, x, W0, A, B, bias, scale)
        X, W0, A, B = kernels.contiguous(x.reshape(-1, x.shape[-1]), W0, A, B)
        Y, U = kernels.lora_forward(X, W0, A, B, scale, bias=bias, dropout_p=dropout_p, seed=seed,
                                    device=ctx.device)
        _save(ctx, x, X, U, W0, A, B, scale, dropout_p, seed)
        return Y.reshape(x.shape[:-1] + (W0.shape[0],))

    @staticmethod
    def kernel_backward(ctx, g):
        if ctx.__dict__.get("numpy_math"):
            return LoraLinear.backward(ctx, g)
        if g.dtype != np.float32:
            return _bf16_kernel_backward(ctx, g)
        nx, _, na, nb, _ = ctx.needs_input_grad[:5]
        (dY,) = kernels.contiguous(g.reshape(-1, g.shape[-1]))
        dX, dA, dB = kernels.lora_backward(dY, ctx.X, ctx.W0, ctx.A, ctx.B, ctx.U, ctx.scale, dropout_p=ctx.p,
                                           seed=ctx.seed, need_dx=nx, need_dA=na, need_dB=nb, device=ctx.device)
        dX, dW0, dbias = _base_grads(ctx, dY, dX)
        return dX, dW0, dA, dB, dbias

    @staticmethod
    def flops(ctx, arrays, out):
        M, K = ctx.X.shape
        N, r = ctx.B.shape
        return 2 * M * K * N + 2 * M * K * r + 2 * M * r * N

    @staticmethod
    def backward_flops(ctx):
        """The GEMMs backward actually runs: note that no ``dW0`` term appears for a frozen W0."""
        nx, nw, na, nb, _ = ctx.needs_input_grad[:5]
        M, K = ctx.X.shape
        N, r = ctx.B.shape
        flops = 2 * M * N * r if (nx or na) else 0  # V
        flops += 2 * M * N * r if nb else 0  # dB
        flops += 2 * M * r * K if na else 0  # dA
        flops += (2 * M * N * K + 2 * M * r * K) if nx else 0  # dX = dY W0 + V A
        flops += 2 * M * N * K if nw else 0  # dW0, full fine-tuning only
        return flops


def lora_linear(x, W0, A, B, scale, bias=None, dropout_p=0.0, seed=None):
    """``x W0^T + bias + scale * dropout(x) A^T B^T`` with gradients for x, A, B (and W0 only if trainable).

    Without ``seed``, dropout is torch's CPU ``nn.Dropout`` mask for ``x`` from the global generator
    (PEFT's numbers for the same seed); on ``cuda`` a hash of a seed drawn from it (the fused kernels').
    ``seed`` fixes a hashed mask, the same on every device. In an autocast region x is cast twice, first
    for the base layer, then for lora_A, as PEFT's two Linear calls cast it (each cast's backward then
    adds its part of x's gradient in float32, the branch's first).
    """
    if _amp.used and _amp.state.active:  # (x given again last: autocast casts it after the first)
        return _amp.autocast_op("lora_linear", _lora_linear_cast_twice, x, W0, A, B, scale, bias, dropout_p, seed, x)
    return _lora_linear(x, W0, A, B, scale, bias, dropout_p, seed)


def _lora_linear_cast_twice(x_base, W0, A, B, scale, bias, dropout_p, seed, x):
    return _lora_linear(x, W0, A, B, scale, bias, dropout_p, seed, x_base)


def x_grad_in_two_parts(x):
    """Whether x's gradient goes to the engine in PEFT's two parts (``LoraLinear``'s ``x_again``): a 16-bit x on
    the CPU, where torch's autograd adds the base layer's and the branch's bf16 gradients with a rounding.
    (float32/float64 with MKL: x given twice cost ~5% of a LoRA step, round 28. Instead the engine offers the node
    x's gradient summed so far and the node adds its two parts onto it in torch's order, ``LoraLinear.backward_onto``:
    the same work as one fused dX = dY W0 + V A added by the engine, whose sums, grouped otherwise than torch's, left
    80-96% of a Llama's adapter gradients an ulp or so off; tests/test_lora_step_bits_r29.py.)"""
    return x.dtype.itemsize == 2 and x.device.type == "cpu"


def _lora_linear(x, W0, A, B, scale, bias=None, dropout_p=0.0, seed=None, x_base=None):
    if not 0 <= dropout_p <= 1:
        raise ValueError(f"lora_linear: dropout_p must be in [0, 1], got {dropout_p}")
    mask = None
    if dropout_p == 1 and not x.is_meta:  # every value dropped, seeded or not: torch's x * zeros (inf * 0 is NaN)
        mask = dropout_noise(x._array, 1.0)  # (the kernels' hash has no p = 1; a mask runs the array math)
    elif dropout_p > 0 and seed is None and not x.is_meta:  # (meta: no values, no mask, nothing drawn: torch's)
        if x.device.type != "cuda":
            mask = dropout_noise(x._array, dropout_p)
        else:
            seed = fresh_seed()
    x_again = (x if x_base is None else x_base,) if x_grad_in_two_parts(x) else ()
    return LoraLinear.apply(x, W0, A, B, bias, *x_again, scale=float(scale), dropout_p=float(dropout_p),
                            seed=0 if seed is None else int(seed), mask=mask)
