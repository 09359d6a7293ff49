"""A sweep, not a test: every op of torch's OpInfo database (op_db) fed extreme values -- +-0, subnormals, the
smallest normal, +-1, the largest finite, +-inf, NaN, negative integers -- in float32 and float64, minilora against
torch 2.13. Python's own arithmetic under an op (``math.lgamma``, ``math.pow``, a float division) raises where C
returns inf or NaN (OverflowError, ValueError, ZeroDivisionError), so an op that is right on every normal input can
still kill a user's run on a value at the edge. Each sample's floating tensors are replaced by tensors of the same
shape cycling through the extreme values (positions differ per tensor, so a binary op meets mixed pairs); the
answers are classed:

    crash      minilora raises where torch answers (the worst: a run that dies)
    refuses    minilora raises a RuntimeError/ValueError where torch answers (a refusal in words)
    accepts    torch refuses, minilora answers
    special    both answer, but NaN / +-inf / finite differ somewhere (a silent divergence)
    values     both answer, finite values differ beyond float64's 1e-12 / float32's 2 ulps
    same       the rest

    PYTHONPATH=. python tests/extremes_sweep.py [NAME-PART ...] [--dtypes float32,float64] [--show N]

Round 29 wrote it (torch 2.13.0+cpu, MKL): the first pass gave {'same': 2757, 'crash': 148, 'special': 36,
'refuses': 22, 'values': 19, 'accepts': 2} (most crashes the database's torch.masked ops and lambdas, now NOT_SWEPT;
the real ones lgamma/mvlgamma's OverflowError and polygamma/zeta's endless loop); with the gradient pass after the
fixes no crash is left, and the "special" rows are F.bilinear's order, LAPACK's inf/NaN propagation (lu_solve,
triangular_solve, ormqr), stft, grid_sample at huge coordinates, native_batch_norm with an infinite variance and
addmv's / logdet's gradients. The fixes are pinned in tests/test_extremes_r29.py and tests/test_extremes2_r29.py;
``--modules`` (module_db) found no crash.

Round 30 (tests/test_extremes3_r30.py): F.bilinear is ATen's _trilinear (its order: inf/NaN as torch's),
native_batch_norm of float64 [N, C] the channels-last kernel's (statistics, fma on contiguous operands, fma64's
NumPy path past the range), addmm/addmv/addr gradients the product's then times alpha, logdet's value torch's LU sum
where NumPy's slogdet said singular, its gradient masked by the sign only. Left: LAPACK's inf/NaN propagation
(lu_solve, triangular_solve, ormqr, and logdet's gradient of a singular matrix: torch's LU solve), stft, and
grid_sample at huge coordinates. For it, measured on torch: the 2-D kernel's vectorized clip clamps a NaN
coordinate to pixel 0 (border: NaN -> 0, inf -> size - 1; reflection: NaN, +-inf and +-3.4e38 all -> 0), the 3-D
scalar clip sends NaN to size - 1; minilora reads NaN there (border: a NaN coordinate; reflection, whose
``_reflect`` is coord * sign + offset for the gradient: NaN, +-inf and +-3.4e38 alike), and its bicubic differs by
ulps there too.

Round 31 (tests/test_extremes4_r31.py): grid_sample at those coordinates as torch's kernels (2-D: NaN to pixel 0;
3-D: the forward's NaN to size - 1, the backward's kept NaN; a mirrored 1e30 no longer cancelled to 0), its 2-D
bilinear backward at a NaN coordinate left (torch segfaults there), bicubic's last bits left; float64 mv / addmv /
``v @ A`` of a matrix laid out by columns (MKL's plain gemv: the columns fused in order); adaptive pooling and reflect
padding to empty outputs; two-row training batch norm (one thread adds both rows).
"""
import argparse
import collections
import signal
import sys
import warnings

sys.path.insert(0, __import__("os").path.dirname(__file__))
import numpy as np  # noqa: E402

from torch_db import as_numpy, ml, sample_inputs, to_minilora, torch  # noqa: E402
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

warnings.simplefilter("ignore")
CRASHES = (OverflowError, ZeroDivisionError, FloatingPointError, ArithmeticError, IndexError, KeyError, TypeError,
           AttributeError, AssertionError, UnboundLocalError, NameError, RecursionError, SystemError)
SAMPLES = 3  # per op and dtype: the first few of torch's own sample inputs
# not swept: torch.masked (minilora has none), uninitialised memory, and database lambdas that call torch itself
NOT_SWEPT = ("masked.", "empty", "new_empty", "max_pool2d_with_indices_backward",
             "nn.functional.triplet_margin_with_distance_loss")


def extremes(dtype):
    """The extreme values of a floating dtype, as float64 numbers (rounded to the dtype by the caller)."""
    info = np.finfo(dtype)
    tiny, huge, sub = float(info.tiny), float(info.max), float(info.smallest_subnormal)
    return [0.0, -0.0, sub, -sub, tiny, -tiny, 1.0, -1.0, huge, -huge, np.inf, -np.inf, np.nan, -2.0, -3.0, 0.5,
            huge / 2, 1e4, -1e4]


def extreme_like(tensor, shift):
    """A tensor of ``tensor``'s shape, dtype and requires_grad, its elements cycling through ``extremes``."""
    values = np.array(extremes(np.float32 if tensor.dtype == torch.float32 else np.float64))
    flat = values[(np.arange(tensor.numel()) + shift) % len(values)]
    result = torch.from_numpy(flat.reshape(tuple(tensor.shape))).to(tensor.dtype)
    return result.requires_grad_(tensor.requires_grad)


def replaced(value, counter):
    """``value`` with every floating tensor in it swapped for ``extreme_like`` (each one shifted differently)."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float32, torch.float64):
        counter[0] += 1
        return extreme_like(value.detach(), 5 * counter[0])
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(replaced(item, counter) for item in value)
    if isinstance(value, dict):
        return {key: replaced(item, counter) for key, item in value.items()}
    return value


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout()


def outcome(fn, args, kwargs):
    """(answer, None) or (None, exception); a call running past 10 s counts as an exception."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs), None
    except BaseException as error:  # noqa: BLE001  (every refusal and every crash is classed)
        if isinstance(error, KeyboardInterrupt):
            raise
        return None, error
    finally:
        signal.alarm(0)


def compare_values(ours, theirs):
    """'same', 'special' or 'values' for two answers that both came."""
    ours, theirs = as_numpy(ours), as_numpy(theirs)
    if isinstance(theirs, list):
        if not isinstance(ours, list) or len(ours) != len(theirs):
            return "values"
        kinds = [compare_values_np(a, b) for a, b in zip(ours, theirs)]
        return "special" if "special" in kinds else "values" if "values" in kinds else "same"
    return compare_values_np(ours, theirs)


def compare_values_np(ours, theirs):
    if not isinstance(theirs, np.ndarray) or not isinstance(ours, np.ndarray):
        return "same" if str(ours) == str(theirs) else "values"
    if ours.shape != theirs.shape:
        return "values"
    if theirs.dtype.kind not in "fc":
        return "same" if np.array_equal(ours, theirs) else "values"
    ours, theirs = ours.astype(theirs.dtype), theirs
    kind = lambda a: np.where(np.isnan(a), 3, np.where(np.isinf(a), np.sign(a.real if a.dtype.kind == "c" else a)  # noqa: E731
                                                       .astype(int) + 1, 0))
    if theirs.dtype.kind == "c":
        kind = lambda a: np.isfinite(a).astype(int)  # noqa: E731
    if not np.array_equal(kind(ours), kind(theirs)):
        return "special"
    finite = np.isfinite(theirs)
    rtol = 1e-12 if theirs.dtype in (np.float64, np.complex128) else 3e-7
    close = np.isclose(ours[finite], theirs[finite], rtol=rtol, atol=0)
    return "same" if close.all() else "values"


def classify(ours, torchs):
    (answer, error), (expected, torch_error) = ours, torchs
    if error is not None and torch_error is None:
        return "crash" if isinstance(error, CRASHES + (_Timeout, MemoryError)) or type(error).__name__ in (
            "ValueError",) and "math" in str(error) else "refuses"
    if error is None and torch_error is not None:
        return "accepts"
    if error is not None:
        return "same"
    return compare_values(answer, expected)


def first_float(value):
    """The first floating tensor of an op's answer (a tuple's, a list's), or None."""
    if isinstance(value, (list, tuple)):
        return next((t for t in map(first_float, value) if t is not None), None)
    floating = getattr(value, "dtype", None) in (torch.float32, torch.float64, ml.float32, ml.float64)
    return value if floating and getattr(value, "requires_grad", False) else None


def gradients(op, fn, first, args, kwargs):
    """(kind, (minilora's error, torch's error)) of the gradients of the first floating output's sum with respect
    to every floating input, the sample's extreme values in."""
    leaves = []

    def with_grad(value):
        if isinstance(value, torch.Tensor) and value.dtype == torch.float64:
            leaf = value.detach().clone().requires_grad_(True)
            leaves.append(leaf)
            return leaf
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(with_grad(item) for item in value)
        return value

    first, args = with_grad(first), with_grad(args)
    if not leaves:
        return "same", (None, None)
    converted = {}
    ours_first, ours_args, ours_kwargs = to_minilora((first, args, kwargs), converted)
    ours_leaves = [converted[id(leaf)][1] for leaf in leaves]

    def backward(call, inputs):
        out, error = call
        if error is not None:
            return None, error
        out = first_float(out)
        if out is None:
            return None, None
        return outcome(lambda: [getattr(g, "clone", lambda: g)() if g is not None else None
                                for g in (torch if isinstance(out, torch.Tensor) else ml).autograd.grad(
                                    out.sum(), inputs, allow_unused=True)], (), {})

    theirs = backward(outcome(op.op, (first,) + args, kwargs), leaves)
    ours = backward(outcome(fn, (ours_first,) + ours_args, ours_kwargs), ours_leaves)
    kind = classify(ours, theirs)
    if kind == "values":  # (gradients at extreme values: only inf / NaN patterns and crashes are of interest)
        kind = "same"
    return kind, (ours[1], theirs[1])


def minilora_function(op):
    from test_opinfo_elementwise_r14 import minilora_callable  # (the database's callables carried over)
    try:
        return minilora_callable(op.op)
    except AttributeError:
        return None


def sweep(names, dtypes, show):
    found = collections.defaultdict(list)
    for op in op_db:
        if names and not any(part in op.name for part in names) or op.name.startswith(NOT_SWEPT):
            continue
        fn = minilora_function(op)
        if fn is None:
            continue
        for dtype in dtypes:
            if dtype not in op.supported_dtypes("cpu"):
                continue
            try:
                samples = [s for _, s in zip(range(SAMPLES), sample_inputs(op, dtype))]
            except Exception:  # noqa: BLE001  (a database generator that needs what this machine lacks)
                continue
            for index, sample in enumerate(samples):
                counter = [0]
                first, args, kwargs = replaced((sample.input, tuple(sample.args), dict(sample.kwargs)), counter)
                if counter[0] == 0:
                    continue
                torchs = outcome(op.op, (first,) + args, kwargs)
                ours = outcome(fn, *to_minilora(((first,) + args, kwargs)))
                kind = classify(ours, torchs)
                found[kind].append((op.name, str(dtype).removeprefix("torch."), index, ours[1], torchs[1]))
                if kind == "same" and torchs[1] is None and dtype == torch.float64 and op.supports_autograd:
                    kind, errors = gradients(op, fn, first, args, kwargs)
                    found[kind].append((op.name + " (grad)", "float64", index) + errors)
    counts = {kind: len(rows) for kind, rows in found.items()}
    print(counts)
    for kind in ("crash", "special", "values", "accepts", "refuses"):
        seen = set()
        for name, dtype, index, error, torch_error in found.get(kind, []):
            if (name, dtype) in seen or len(seen) >= show:
                continue
            seen.add((name, dtype))
            detail = f"{type(error).__name__}: {str(error)[:90]}" if error is not None else (
                f"torch: {type(torch_error).__name__}: {str(torch_error)[:90]}" if torch_error is not None else "")
            print(f"{kind:8} {name:34} {dtype:8} sample {index} {detail}")
    return found


def sweep_modules(names, show):
    """module_db's modules (float64, training and eval), their forward inputs' floating tensors made extreme:
    outputs, then the gradients of the outputs' sum for the inputs and parameters (crashes and NaN/inf patterns)."""
    import test_module_db_r14 as M
    found = collections.defaultdict(list)
    for info in M.module_db:
        name = M.module_name(info)
        if names and not any(part in name for part in names) or getattr(ml.nn, name, None) is None:
            continue
        for training in (True, False):
            try:
                samples = M.samples_of(info, torch.float64, training)[:SAMPLES]
            except Exception:  # noqa: BLE001
                continue
            for index, sample in enumerate(samples):
                counter = [0]
                sample.forward_input.args = replaced(tuple(sample.forward_input.args), counter)
                sample.forward_input.kwargs = replaced(dict(sample.forward_input.kwargs), counter)
                if counter[0] == 0:
                    continue
                built = outcome(M.build, (info, sample, torch.float64, training), {})
                if built[1] is not None:
                    continue
                theirs, ours = built[0]
                run = outcome(M.forward_both, (theirs, ours, sample), {})
                if run[1] is not None:
                    found["crash" if isinstance(run[1], CRASHES + (_Timeout,)) else "refuses"].append(
                        (name, training, index, run[1], None))
                    continue
                their_out, our_out, _, _ = run[0]
                kind = compare_values(our_out, their_out)
                if kind == "same":
                    kind = _module_gradients(theirs, ours, their_out, our_out)
                found[kind].append((name, training, index, None, None))
    print({kind: len(rows) for kind, rows in found.items()})
    for kind in ("crash", "special", "values", "refuses", "grad-crash", "grad-special"):
        for row in found.get(kind, [])[:show]:
            print(f"{kind:12} {row[0]:28} training={row[1]!s:5} sample {row[2]} {row[3]!r:.120}")
    return found


def _module_gradients(theirs, ours, their_out, our_out):
    """'same', 'grad-crash' or 'grad-special': the parameters' gradients of each library's outputs' sum."""
    def backward(module, outputs):
        floating = [t for t in outputs if getattr(t, "requires_grad", False)]
        if not floating:
            return [], None
        total = floating[0].sum()
        for t in floating[1:]:
            total = total + t.sum()
        answer, error = outcome(total.backward, (), {})
        return [p.grad for _, p in module.named_parameters()], error

    their_grads, their_error = backward(theirs, their_out)
    our_grads, our_error = backward(ours, our_out)
    if our_error is not None and their_error is None:
        return "grad-crash"
    pairs = [(a, b) for a, b in zip(our_grads, their_grads) if a is not None and b is not None]
    return "grad-special" if any(compare_values(a, b) == "special" for a, b in pairs) else "same"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--show", type=int, default=400)
    parser.add_argument("--modules", action="store_true", help="torch's module_db instead of op_db (float64)")
    options = parser.parse_args()
    if options.modules:
        sweep_modules(options.names, options.show)
        return
    sweep(options.names, [getattr(torch, name) for name in options.dtypes.split(",")], options.show)


if __name__ == "__main__":
    main()
