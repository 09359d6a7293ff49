"""A sweep, not a test: every differentiable op of torch's ``op_db`` that minilora shares by name, on float32
samples (torch's own sample inputs), forward and gradient compared with torch bit for bit. Prints the ops whose
values or gradients differ, worst first, with the count of elements off (and the largest gap in ulps).

    PYTHONPATH=. python tests/grad_bits_sweep.py [--samples 3] [--only NAME,...]

The gradient is that of ``sum(out * w)`` over every floating output, ``w`` a fixed draw, so every element of every
output feeds it. A sample minilora refuses, or that fails in either library, is counted apart (not a mismatch).
Round 19 wrote it to find the rest of the class of ``F.rms_norm``'s and ``F.layer_norm``'s gradients: a float32
gradient an ulp off torch's in many elements, with no error.

Round 26: 421 ops swept, 334 all bits torch's, 76 with elements off, before and after (its float32 samples are
contiguous: round 26's group-norm fixes are channels-last). Of those noticed: as_strided_scatter's input gradient
is torch's own (as_strided_scatter_backward keeps the scattered slice of the gradient, zeros elsewhere -- the
opposite of the derivative; minilora gives the derivative), native_group_norm's when its mean and rstd get gradients
too (torch's infinitely_differentiable formula's sums, a few ulps), corrcoef's near-zero gradients.
"""
import argparse
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch_db  # noqa: E402  (torch's op_db and the conversion of its samples)
from torch_db import ml, resolve, sample_inputs, to_minilora, torch  # noqa: E402


def _floats(value):
    """The floating tensors in an op's answer (a tensor, or tuples/lists of them), in order."""
    if isinstance(value, (torch.Tensor, ml.Tensor)):
        return [value] if value.dtype in (torch.float32, ml.float32) else []
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _floats(item)]
    return []


def _leaves(sample_parts):
    """The tensors of a sample that require grad, in order (input first)."""
    found = []

    def walk(value):
        if isinstance(value, (torch.Tensor, ml.Tensor)):
            if value.requires_grad and all(value is not seen for seen in found):
                found.append(value)
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
    walk(sample_parts)
    return found


def _run(fn, parts, lib):
    first, args, kwargs = parts
    out = fn(first, *args, **kwargs)
    outs = _floats(out)
    leaves = _leaves(parts)
    values = [np.asarray(t.detach().numpy()) for t in outs]
    if not outs or not leaves or not any(t.requires_grad for t in outs):
        return values, []
    rng = np.random.default_rng(7)
    total = None
    for t in outs:
        if t.requires_grad:
            w = lib.tensor(rng.standard_normal(tuple(t.shape)).astype(np.float32))
            term = (t * w).sum()
            total = term if total is None else total + term
    grads = lib.autograd.grad(total, leaves, allow_unused=True)
    return values, [None if g is None else np.asarray(g.detach().numpy()) for g in grads]


def _to_minilora(parts):
    """``to_minilora(parts)``, a leaf that is a view of a larger tensor (op_db's ``base[5:15].requires_grad_()``)
    made the same view of the same storage in minilora: ``as_strided`` reads the storage around it, as torch's."""
    converted = {}

    def walk(value):
        if isinstance(value, torch.Tensor) and value._base is not None and value.is_leaf:
            base = to_minilora(value._base.detach())
            view = base.as_strided(tuple(value.shape), value.stride(), value.storage_offset())
            converted[id(value)] = (value, view.requires_grad_(value.requires_grad))
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
    walk(parts)
    return to_minilora(parts, converted)


def _off(a, b):
    """(elements whose bits differ, the largest gap in ulps among the finite ones) of two float32 arrays."""
    if a.shape != b.shape:
        return a.size or 1, -1
    bits_a, bits_b = a.reshape(-1).view(np.int32).astype(np.int64), b.reshape(-1).view(np.int32).astype(np.int64)
    off = bits_a != bits_b
    both_nan = np.isnan(a.reshape(-1)) & np.isnan(b.reshape(-1))
    off &= ~both_nan
    finite = off & np.isfinite(a.reshape(-1)) & np.isfinite(b.reshape(-1))
    gap = 0
    if finite.any():  # (ulps across zero: the ordered integer images of the floats)
        order_a = np.where(bits_a < 0, -(bits_a & 0x7FFFFFFF), bits_a)
        order_b = np.where(bits_b < 0, -(bits_b & 0x7FFFFFFF), bits_b)
        gap = int(np.abs(order_a - order_b)[finite].max())
    return int(off.sum()), gap


# op_db variants whose op is a lambda that reorders its sample (normal's number_mean sample is (std, mean, ...)),
# or is another function than the one named: minilora's function called as that lambda calls torch's
_VARIANTS = {
    ("normal", "number_mean"): lambda std, mean, *args, **kwargs: ml.normal(mean, std, *args, **kwargs),
    ("normal", "in_place"): lambda input, *args, **kwargs: input.normal_(*args, **kwargs),
}


def sweep(samples, only):
    from torch.testing._internal.common_methods_invocations import op_db
    report = {}
    for op in op_db:
        if only and op.name not in only:
            continue
        if not op.supports_autograd or torch.float32 not in op.supported_dtypes("cpu"):
            continue
        fn = _VARIANTS.get((op.name, op.variant_test_name)) or resolve(ml, op.name)
        if fn is None or not callable(fn):
            continue
        tally = report.setdefault(op.name, {"values": 0, "grads": 0, "elements": 0, "ulps": 0, "errors": 0,
                                            "samples": 0})
        try:
            inputs = list(sample_inputs(op, torch.float32, requires_grad=True))[:samples]
        except Exception:  # noqa: BLE001 (torch's own sample generator)
            continue
        for sample in inputs:
            parts = (sample.input, tuple(sample.args), dict(sample.kwargs))
            try:  # (seeded alike: op_db runs a random op -- dropout, rrelu, normal -- in wrapper_set_seed, seed 42)
                torch.manual_seed(42)
                theirs = _run(op.op, parts, torch)
            except Exception:  # noqa: BLE001 (a sample torch's op itself refuses)
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    minilora_parts = _to_minilora(parts)
                    ml.manual_seed(42)
                    ours = _run(fn, minilora_parts, ml)
            except Exception:  # noqa: BLE001
                tally["errors"] += 1
                continue
            tally["samples"] += 1
            for kind, a_list, b_list in (("values", theirs[0], ours[0]), ("grads", theirs[1], ours[1])):
                for a, b in zip(a_list, b_list):
                    if a is None or b is None:
                        if (a is None) != (b is None) and not (a is not None and not a.any()):
                            tally[kind] += 1
                        continue
                    count, gap = _off(np.asarray(a, np.float32), np.asarray(b, np.float32))
                    tally[kind] += count
                    tally["elements"] += a.size
                    tally["ulps"] = max(tally["ulps"], gap)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--only", default="")
    options = parser.parse_args()
    started = time.time()
    report = sweep(options.samples, set(filter(None, options.only.split(","))))
    off = sorted(((t["values"] + t["grads"], name, t) for name, t in report.items() if t["values"] + t["grads"]),
                 reverse=True)
    print(f"{'op':40} {'values off':>10} {'grads off':>10} {'of':>8} {'max ulps':>9} {'refused':>8}")
    for _, name, t in off:
        print(f"{name:40} {t['values']:>10} {t['grads']:>10} {t['elements']:>8} {t['ulps']:>9} {t['errors']:>8}")
    exact = sum(1 for t in report.values() if t["samples"] and not t["values"] + t["grads"])
    print(f"\n{len(report)} ops swept, {exact} all bits torch's, {len(off)} with elements off "
          f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
