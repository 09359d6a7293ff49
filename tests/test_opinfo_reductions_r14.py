"""torch's OpInfo database (op_db) run through minilora: reductions, scans, sorting, statistics, matrix products.

Every ReductionOpInfo (but linalg's: tests/test_opinfo_linalg_r14.py) and the OpInfos of cumsum, max/min, median,
sort, topk, unique, histc, cov, norm, trace, softmax, mm, addmm, einsum, tensordot ... each sample torch's own
developers wrote, in each variant the OpInfo has (function, method, in-place), with its arguments spelled as
torch's database spells them: minilora's answer has torch's structure, shape and dtype, and its values are
torch's bits (float32, bfloat16, integers, bool) or within 1e-13 (float64), except where a dict below states
why not. float64 gradients (a fixed random cotangent) agree within 1e-13 too, and each of the database's error
inputs is refused. OpInfos minilora does not implement are in REFUSED: the test checks they are refused by name.
"""
import itertools

import numpy as np
import pytest

from torch_db import assert_same, call_with, ml, resolve, to_minilora, torch, tracked

from torch.testing._internal.common_methods_invocations import ReductionOpInfo, op_db  # noqa: E402

NAMES = set("""aminmax cummax cummin cumsum cumprod logcumsumexp logsumexp max min median nanmedian mode kthvalue
quantile nanquantile sort argsort msort topk unique unique_consecutive histc histogram histogramdd bincount
searchsorted std_mean var_mean norm dist cov corrcoef trace diff gradient trapezoid trapz cumulative_trapezoid
renorm softmax log_softmax mm bmm mv dot vdot inner outer addmm addmv addr addbmm baddbmm matmul __rmatmul__
einsum tensordot kron cross""".split())
OPINFOS = [op for op in op_db if op.name in NAMES or op.name.startswith("masked.")
           or (isinstance(op, ReductionOpInfo) and not op.name.startswith("linalg."))]


def key(op):
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


# OpInfos minilora does not implement: ``minilora.<name>`` is refused by name (an AttributeError naming it)
REFUSED = {
    "hash_tensor": "torch 2.9's tensor hashing (xor / sum of the bits): not a training or tutorial op",
    **{key(op): "torch.masked's prototype reductions with a mask argument: minilora has no torch.masked"
       for op in OPINFOS if op.name.startswith("masked.")},
}

# float32 products summed by a BLAS (or a LAPACK SVD): torch's MKL / oneDNN kernels and minilora's OpenBLAS add
# a length-k dot product in different blocks, each order within k float32 rounding steps of the exact result;
# on these small samples (k <= 20, |values| <= 9) 2e-5 of the largest output element bounds it.
BLAS_FLOAT32 = {"addmm", "addmm.decomposed", "addmv", "addbmm", "baddbmm", "bmm", "bmm.triton_optimized", "mm",
                "mv", "matmul", "__rmatmul__", "einsum", "tensordot", "inner", "dot", "vdot", "cov", "corrcoef",
                "norm.nuc"}
# float64: within 1e-13 of the largest output element (torch's float64 sums run ATen's cascade order, products
# MKL's blocks: the last bit may differ; the project's float64 standard is 1e-13).
FLOAT64_TOLERANCE = 1e-13
# in-place spellings where minilora keeps the tensor's shape and torch resizes it: minilora refuses
INPLACE_REFUSED = {
    "addbmm": "torch's addbmm_ resizes a 1-element self to the product's shape (its deprecated resize_output); "
              "minilora's in-place ops never change a tensor's shape",
}

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.int64, torch.bool)
SAMPLES_PER_DTYPE = 3  # (2 for int64 and bool: the file stays under 15 s on one core, op_db's import 3.5 s of it)
MORE_SAMPLES = {"norm": 6, "trapz": 6, "trapezoid": 6, "addmm": 6}  # (where a later sample found a divergence)


def tolerance(name, expected):
    """(rtol, atol) for comparing the results of ``name`` (by the dtype of its first one); (0, 0): the same bits
    (every float32 result but a BLAS product's, every bfloat16, integer and bool result)."""
    results = flatten(expected)
    dtype = results[0].dtype if results else None
    arrays = [np.abs(np.asarray(to_numpy_any(t), dtype=np.float64)) for t in results]
    scale = max([float(np.nanmax(np.where(np.isinf(a), 0, a))) for a in arrays if a.size] + [1.0])
    if dtype == torch.float64:
        return FLOAT64_TOLERANCE, FLOAT64_TOLERANCE * scale
    if dtype == torch.float32 and name in BLAS_FLOAT32:
        return 2e-5, 2e-5 * scale
    return 0.0, 0.0


def flatten(value):
    if isinstance(value, (tuple, list)):
        return [item for part in value for item in flatten(part)]
    return [value] if isinstance(value, torch.Tensor) else []


def to_numpy_any(tensor):
    return tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()


def minilora_function(op):
    if op.name == "einsum":  # (op_db's wrapper: the operands list first)
        return lambda tensors, equation: ml.einsum(equation, tensors)
    if op.name == "__rmatmul__":
        return ml.Tensor.__rmatmul__
    return resolve(ml, op.name)


def variants(op):
    """(variant, torch's callable, minilora's) for the function, method and in-place spellings."""
    yield "function", op.op, minilora_function(op)
    for kind, torch_variant in (("method", op.method_variant), ("inplace", op.inplace_variant)):
        if torch_variant is not None and op.name != "__rmatmul__":
            name = torch_variant.__name__
            yield kind, torch_variant, (lambda name: lambda x, *a, **k: getattr(x, name)(*a, **k))(name)


def samples(op, dtype):
    requires_grad = dtype == torch.float64 and op.supports_autograd
    count = MORE_SAMPLES.get(key(op), SAMPLES_PER_DTYPE if dtype.is_floating_point else 2)
    # (op.sample_inputs("cpu", dtype, requires_grad=requires_grad)'s samples: torch_db.tracked)
    return list(itertools.islice(tracked(op.sample_inputs_func(op, "cpu", dtype, requires_grad)), count))


COMPARED = [op for op in OPINFOS if key(op) not in REFUSED]


@pytest.mark.parametrize("op", COMPARED, ids=key)
def test_samples_match_torch(op):
    ours_fn = minilora_function(op)
    assert ours_fn is not None, f"minilora lacks {op.name}"
    supported = op.supported_dtypes("cpu")
    for dtype in (d for d in DTYPES if d in supported):
        for sample in samples(op, dtype):
            for kind, theirs_fn, mine_fn in variants(op):
                what = f"{key(op)} {kind} {dtype} {sample.summary() if hasattr(sample, 'summary') else ''}"
                if kind == "inplace":  # (on a copy: the sample's input stays for the next variant)
                    sample = sample.transform(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t)
                converted = to_minilora((sample.input, tuple(sample.args), dict(sample.kwargs)))
                try:
                    theirs = call_with(theirs_fn, sample)
                    if kind == "inplace" and key(op) in INPLACE_REFUSED and \
                            tuple(theirs.shape) != tuple(converted[0].shape):
                        raise RuntimeError(INPLACE_REFUSED[key(op)])
                except Exception:  # torch refuses (an in-place result that would broadcast): so must minilora
                    with pytest.raises(Exception):
                        mine_fn(converted[0], *converted[1], **converted[2])
                    continue
                ours = mine_fn(converted[0], *converted[1], **converted[2])
                rtol, atol = tolerance(key(op), theirs)
                assert_same(ours, theirs, rtol, atol, what)
                if kind == "function" and dtype == torch.float64 and op.supports_autograd:
                    check_gradients(sample, converted, theirs, ours, what)


def check_gradients(sample, converted, theirs, ours, what):
    """sum(outputs * fixed random cotangents) differentiated w.r.t. every input that requires grad."""
    torch_leaves = [t for t in flatten((sample.input, tuple(sample.args), dict(sample.kwargs).values()))
                    if t.requires_grad]
    our_leaves = [t for t in flatten_ml((converted[0], converted[1], tuple(converted[2].values())))
                  if t.requires_grad]
    pairs = [(t, o) for t, o in zip(as_tuple(theirs), as_tuple(ours))
             if isinstance(t, torch.Tensor) and t.requires_grad]
    if not pairs or not torch_leaves:
        return
    generator = torch.Generator().manual_seed(0)
    cotangents = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t, _ in pairs]
    torch_grads = torch.autograd.grad(sum((t * c).sum() for (t, _), c in zip(pairs, cotangents)), torch_leaves,
                                      allow_unused=True)
    our_grads = ml.autograd.grad(sum((o * to_minilora(c)).sum() for (_, o), c in zip(pairs, cotangents)),
                                 our_leaves, allow_unused=True)
    for index, (mine, torchs, leaf) in enumerate(zip(our_grads, torch_grads, torch_leaves)):
        torchs = torch.zeros_like(leaf) if torchs is None else torchs
        mine = ml.zeros(tuple(leaf.shape), dtype=ml.float64) if mine is None else mine
        scale = max(float(torchs.abs().max()) if torchs.numel() else 0.0, 1.0)
        assert_same(mine, torchs, FLOAT64_TOLERANCE, FLOAT64_TOLERANCE * scale, f"{what} gradient {index}")


def as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def flatten_ml(value):
    if isinstance(value, (tuple, list)):
        return [item for part in value for item in flatten_ml(part)]
    return [value] if isinstance(value, ml.Tensor) else []


@pytest.mark.parametrize("op", [op for op in COMPARED if op.error_inputs_func is not None], ids=key)
def test_error_inputs_refused(op):
    """Each call torch's database says torch refuses is refused by minilora too (never a silent answer)."""
    fn = minilora_function(op)
    for error in tracked(op.error_inputs_func(op, "cpu")):  # (op.error_inputs("cpu")'s: torch_db.tracked)
        with pytest.raises(Exception):
            call_with(fn, error.sample_input, to_minilora)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_by_name(name):
    op_name = name.split(".")[0] if not name.startswith("masked.") else "masked"
    assert resolve(ml, name.split(".")[0] if name.startswith("masked.") else name) is None, REFUSED[name]
    with pytest.raises(AttributeError, match=f"'{op_name}'"):
        getattr(ml, op_name)
