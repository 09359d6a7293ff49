"""A sweep, not a test: torch code as tutorials write it, in the ops earlier sweeps walked least -- cumulative ops,
sort/topk/unique/median ties and NaNs, scatter_reduce/index_reduce/index_add with repeated positions,
searchsorted/bucketize, histc/bincount, clamp/where/masked ops and type promotion, lerp/addcmul/addcdiv, interpolate,
grid_sample, pad, unfold/fold, pixel_shuffle, cosine_similarity/pdist/cdist, embedding_bag, var/std, prod -- minilora
against torch bit for bit: every output (values, indices, dtypes, shapes), and with ``grad`` the gradients of
``sum(out * w)`` (``w`` a fixed draw) for every floating input; a call one library refuses and the other answers is
reported. Inputs are drawn in float64 and rounded to each dtype; minilora gets the same bits (a signaling NaN too).

    PYTHONPATH=. python tests/users_ops_sweep.py [NAME-PART ...]

Round 28 wrote it (torch 2.13.0+cpu, Sapphire Rapids, 2 threads): 2490 (case, dtype) forms, 461 differing at the
round's start -> 69; the fixes are pinned in tests/test_torch_users_r28.py. Left: grid_sample's 16-bit gradients
(torch's scalar fallback computes in 16-bit steps) and bicubic float32/float64 values and gradients (its vectorized
kernel's order); pdist / cdist with p = 3, 0.5 (and float64 pdist p = 1, 2) orders; renorm's 16-bit gradient; one
float16 bilinear align_corners output (the channels-last kernel); bilinear / bicubic antialias and interpolate of a
uint8 image (refused by name); torch.sort(x, 1, descending=True, stable=True), which torch's parser refuses (stable
keyword-only dims), minilora takes; torch's embedding_bag(include_last_offset=True) 'sum' gradient holds uninitialised
memory (minilora's zeros).
"""
import sys
import traceback
import warnings

import numpy as np
import torch

import minilora as ml

DTYPES = ["float32", "float64", "bfloat16", "float16"]
CASES = []  # (name, call(lib, *inputs), make(torch dtype) -> inputs, dtypes, grad)


def case(name, call, make, dtypes=DTYPES, grad=False):
    CASES.append((name, call, make, dtypes, grad))


def F(lib):
    return lib.nn.functional


def rn(*shape, seed=0, scale=1.0):
    """Normal draws of ``shape`` (float64, rounded to the dtype asked)."""
    def make(dtype):
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
    return make


def ties(*shape, seed=0):
    """Integers -3..3 in the dtype asked: many ties."""
    def make(dtype):
        return torch.randint(-3, 4, shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return make


def with_nan(*shape, seed=0):
    """``ties`` with every fifth element NaN."""
    def make(dtype):
        x = ties(*shape, seed=seed)(dtype)
        x.view(-1)[::5] = float("nan")
        return x
    return make


def as_minilora(t):
    """The same numbers, bit for bit."""
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        bits = t.contiguous().view(torch.int16).numpy()
        return ml.tensor(bits.view(np.dtype(getattr(ml, str(t.dtype)[6:]))).copy())
    return ml.tensor(t.contiguous().numpy().copy())


def as_torch(m):
    a = np.array(m.detach().numpy(), order="C")
    if str(a.dtype) == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a)


def flat(x):
    """The tensors (and numbers) of a result, tuples and named tuples opened."""
    if isinstance(x, (tuple, list)):
        return [v for part in x for v in flat(part)]
    return [x]


def difference(theirs, mine):
    """None where equal (NaNs of any payload alike), else a few words on how they differ."""
    if not isinstance(theirs, torch.Tensor):
        return None if theirs == mine or (theirs != theirs and mine != mine) else f"{mine!r} vs {theirs!r}"
    theirs = torch.zeros(theirs.shape, dtype=theirs.dtype) if theirs._is_zerotensor() else theirs.detach()
    if not hasattr(mine, "shape"):
        return f"a {type(mine).__name__}"
    mine = as_torch(mine)
    if tuple(mine.shape) != tuple(theirs.shape) or mine.dtype != theirs.dtype:
        return f"{tuple(mine.shape)} {mine.dtype} vs {tuple(theirs.shape)} {theirs.dtype}"
    if theirs.dtype.is_floating_point:
        a, b = theirs.double().numpy(), mine.double().numpy()
        same = (a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))
    else:
        same = theirs.numpy() == mine.numpy()
    if same.all():
        return None
    off = np.flatnonzero(~same.reshape(-1))
    return f"{off.size}/{same.size} off, e.g. {mine.reshape(-1)[off[:3]].tolist()} vs {theirs.reshape(-1)[off[:3]].tolist()}"


def called(lib, call, inputs):
    try:
        return call(lib, *inputs), None
    except Exception as e:  # noqa: BLE001  (a refusal: compared with the other library's)
        return None, e


def compare(name, call, make, dtype, grad):
    """The lines saying how minilora's (outputs, gradients) differ from torch's for one dtype."""
    inputs = make(getattr(torch, dtype))
    theirs_in = [t.detach().requires_grad_(grad and t.dtype.is_floating_point) if isinstance(t, torch.Tensor) else t
                 for t in (inputs if isinstance(inputs, tuple) else (inputs,))]
    mine_in = [as_minilora(t).requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in theirs_in]
    lines, theirs, mine = output_lines(called(torch, call, theirs_in), called(ml, call, mine_in))
    if theirs is None:
        return lines
    differentiable = [(t, m) for t, m in zip(theirs, mine) if isinstance(t, torch.Tensor) and t.requires_grad]
    if grad and differentiable:
        lines += _gradient_lines(differentiable, theirs_in, mine_in)
    return lines


def output_lines(their_outcome, my_outcome, difference=difference):
    """``(lines, theirs, mine)`` for two ``called`` outcomes: a refusal on one side only, another count of outputs,
    or each output's difference (``theirs``/``mine``: the outputs opened, None where a refusal ends the comparison)."""
    (theirs, their_error), (mine, my_error) = their_outcome, my_outcome
    if their_error or my_error:
        refused = "torch" if their_error else "minilora"
        return ([] if their_error and my_error else [f"{refused} refuses: {their_error or my_error!r}"[:240]]), None, None
    theirs, mine = flat(theirs), flat(mine)
    if len(theirs) != len(mine):
        return [f"{len(mine)} outputs vs {len(theirs)}"], None, None
    return [f"out{i}: {d}" for i, d in enumerate(map(difference, theirs, mine)) if d], theirs, mine


def backward_of_both(outputs):
    """``sum(out * w)``'s backward in both libraries (``outputs``: (torch's, minilora's) pairs; ``w`` a fixed draw
    for each): the line saying why it failed, or None."""
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.dtype) for t, _ in outputs]
    try:
        sum((t * w).sum() for (t, _), w in zip(outputs, weights)).backward()
        sum((m * as_minilora(w)).sum() for (_, m), w in zip(outputs, weights)).backward()
    except Exception as e:  # noqa: BLE001
        return f"backward: {e!r}"[:240]
    return None


def _gradient_lines(outputs, theirs_in, mine_in):
    failed = backward_of_both(outputs)
    if failed:
        return [failed]
    lines = []
    for k, (t, m) in enumerate(zip(theirs_in, mine_in)):
        if isinstance(t, torch.Tensor) and t.requires_grad and (t.grad is not None or m.grad is not None):
            d = "a gradient on one side only" if t.grad is None or m.grad is None else difference(t.grad, m.grad)
            lines += [f"grad{k}: {d}"] if d else []
    return lines


# ---- the cases -------------------------------------------------------------------------------------------------------
def _cumulative_and_sorting_cases():
    import torch, numpy as np
    # cumulative ops
    for op in ["cumsum", "cumprod", "logcumsumexp"]:
        case(f"{op} dim1", lambda L, x, op=op: getattr(L, op)(x, 1), rn(3, 37, grad=None) if False else rn(3, 37), grad=True)
        case(f"{op} dim0 strided", lambda L, x, op=op: getattr(x[:, ::2], op)(dim=0), rn(40, 9), grad=True)
        case(f"{op} dim-1 T", lambda L, x, op=op: getattr(L, op)(x.t(), -1), rn(33, 5), grad=True)
        case(f"{op} 0d", lambda L, x, op=op: getattr(L, op)(x[0, 0], 0), rn(2, 2), grad=True)
        case(f"{op} empty", lambda L, x, op=op: getattr(L, op)(x[:0], 1), rn(2, 3), grad=True)
    case("cumsum long", lambda L, x: L.cumsum(x, 0), rn(3000, seed=3))
    case("cumsum dtype=f32", lambda L, x: L.cumsum(x, 0, dtype=L.float32), rn(300, seed=3))
    case("cumsum int", lambda L, x: L.cumsum(x.to(L.int32), 0), rn(30, seed=3, scale=5), dtypes=["float32"])
    case("cumsum bool", lambda L, x: (x > 0).cumsum(0), rn(30, seed=3), dtypes=["float32"])
    case("cumsum_ int", lambda L, x: x.to(L.int16).cumsum_(0), rn(30, seed=3, scale=5), dtypes=["float32"])
    case("cumprod int8", lambda L, x: L.cumprod(x.to(L.int8), 0), rn(30, seed=3, scale=3), dtypes=["float32"])
    case("cumprod with zero", lambda L, x: L.cumprod(L.where(x.abs() < 0.3, 0.0, x), 1), rn(4, 20, seed=4), grad=True)
    for op in ["cummax", "cummin"]:
        case(f"{op} ties", lambda L, x, op=op: getattr(L, op)(x, 1), ties(3, 25), grad=True)
        case(f"{op} nan", lambda L, x, op=op: getattr(L, op)(x, 1), with_nan(3, 25), grad=True)
        case(f"{op} int", lambda L, x, op=op: getattr(L, op)(x.to(L.int64), 0), ties(25), dtypes=["float32"])
        case(f"{op} bool", lambda L, x, op=op: getattr(L, op)(x > 0, 0), ties(25), dtypes=["float32"])
    case("logcumsumexp inf", lambda L, x: L.logcumsumexp(L.where(x > 1, float("inf"), L.where(x < -1, float("-inf"), x)), 1), rn(3, 20), grad=True)
    case("logcumsumexp nan", lambda L, x: L.logcumsumexp(x, 1), with_nan(3, 20))
    case("cumulative_trapezoid", lambda L, x: L.cumulative_trapezoid(x, dim=1), rn(3, 20), grad=True)
    case("trapezoid dx", lambda L, x: L.trapezoid(x, dx=0.1), rn(3, 20), grad=True)
    case("diff", lambda L, x: L.diff(x, n=2, dim=1), rn(3, 20), grad=True)
    case("diff prepend", lambda L, x: L.diff(x, dim=1, prepend=x[:, :1]), rn(3, 20), grad=True)

    # sorting and selection
    case("sort ties stable", lambda L, x: L.sort(x, dim=1, stable=True), ties(3, 40))
    case("sort ties desc stable", lambda L, x: L.sort(x, 1, descending=True, stable=True), ties(3, 40))
    case("sort nan", lambda L, x: x.sort(dim=-1), with_nan(3, 40))
    case("sort nan desc", lambda L, x: x.sort(dim=-1, descending=True), with_nan(3, 40))
    case("argsort nan stable", lambda L, x: L.argsort(x, stable=True), with_nan(50))
    case("sort -0/0", lambda L, x: L.sort(L.cat([x * 0, -(x * 0)]), stable=True), rn(20))
    case("msort", lambda L, x: L.msort(x), ties(30, 3))
    case("topk ties", lambda L, x: L.topk(x, 5, dim=1), ties(3, 40))
    case("topk ties smallest", lambda L, x: L.topk(x, 5, dim=1, largest=False), ties(3, 40))
    case("topk nan", lambda L, x: x.topk(4), with_nan(3, 40))
    case("topk unsorted", lambda L, x: L.topk(x, 3, sorted=False)[0].sort()[0], rn(40))
    case("topk k=0", lambda L, x: L.topk(x, 0), rn(40))
    case("topk grad", lambda L, x: L.topk(x, 3, dim=0).values, rn(10, 4), grad=True)
    case("kthvalue ties", lambda L, x: L.kthvalue(x, 4, dim=1), ties(3, 40))
    case("kthvalue nan", lambda L, x: L.kthvalue(x, 4, 1), with_nan(3, 40))
    case("kthvalue keepdim", lambda L, x: x.kthvalue(2, 0, keepdim=True), ties(7, 3))
    case("median ties", lambda L, x: L.median(x, dim=1), ties(3, 40))
    case("median all", lambda L, x: L.median(x), ties(40))
    case("median nan", lambda L, x: L.median(x, 1), with_nan(3, 40))
    case("median all nan", lambda L, x: x.median(), with_nan(40))
    case("nanmedian", lambda L, x: L.nanmedian(x, 1), with_nan(3, 40))
    case("nanmedian all", lambda L, x: L.nanmedian(x), with_nan(40))
    case("median even grad", lambda L, x: L.median(x, 0).values, rn(6, 3), grad=True)
    case("median ties grad", lambda L, x: L.median(x), ties(10), grad=True)
    case("mode", lambda L, x: L.mode(x, 1), ties(3, 40))
    case("mode nan", lambda L, x: L.mode(x, 1), with_nan(3, 40))
    case("quantile", lambda L, x: L.quantile(x, 0.3, dim=1), rn(3, 40), dtypes=["float32", "float64"], grad=True)
    case("quantile tensor q", lambda L, x: L.quantile(x, L.tensor([0.1, 0.5, 0.9], dtype=x.dtype)), rn(41), dtypes=["float32", "float64"])
    case("quantile interp", lambda L, x: [L.quantile(x, 0.37, interpolation=m) for m in ("lower", "higher", "nearest", "midpoint")], rn(41), dtypes=["float32", "float64"])
    case("nanquantile", lambda L, x: L.nanquantile(x, 0.3, dim=1), with_nan(3, 40), dtypes=["float32", "float64"])
    case("unique sorted", lambda L, x: L.unique(x, return_inverse=True, return_counts=True), ties(40))
    case("unique nan", lambda L, x: L.unique(x, return_inverse=True, return_counts=True), with_nan(40))
    case("unique dim", lambda L, x: L.unique(x, dim=0, return_inverse=True, return_counts=True), ties(12, 2))
    case("unique int", lambda L, x: x.to(L.int64).unique(return_counts=True), ties(40), dtypes=["float32"])
    case("unique bool", lambda L, x: (x > 0).unique(), ties(40), dtypes=["float32"])
    case("unique_consecutive", lambda L, x: L.unique_consecutive(x.sort()[0], return_inverse=True, return_counts=True), ties(40))
    case("unique_consecutive nan", lambda L, x: L.unique_consecutive(x, return_counts=True), with_nan(40))
    case("unique_consecutive dim", lambda L, x: L.unique_consecutive(x, dim=1), ties(2, 12))
    case("max dim ties", lambda L, x: L.max(x, 1), ties(3, 40))
    case("min dim nan", lambda L, x: x.min(dim=1), with_nan(3, 40))
    case("argmax ties", lambda L, x: L.argmax(x, dim=0), ties(40, 3))
    case("argmin nan", lambda L, x: L.argmin(x), with_nan(40))
    case("aminmax", lambda L, x: L.aminmax(x, dim=1), with_nan(3, 40))
    case("max grad ties", lambda L, x: x.max(), ties(10), grad=True)
    case("amax grad ties", lambda L, x: x.amax(dim=1), ties(3, 10), grad=True)
    case("max dim grad ties", lambda L, x: x.max(dim=1).values, ties(3, 10), grad=True)


def _scatter_index_search_histograms_cases():
    F32 = ["float32", "float64"]
    # scatter/index reductions with duplicates
    for red in ["sum", "prod", "mean", "amax", "amin"]:
        for incl in (True, False):
            case(f"scatter_reduce {red} incl={incl}", lambda L, x, s, red=red, incl=incl: L.scatter_reduce(x, 0, L.tensor([0, 1, 0, 2, 0, 1, 3, 0]), s, reduce=red, include_self=incl),
                 lambda dt: (rn(5, seed=1)(dt), rn(8, seed=2)(dt)), grad=red != "prod" or True)
            case(f"scatter_reduce 2d {red} incl={incl}", lambda L, x, s, red=red, incl=incl: x.scatter_reduce(1, L.tensor([[0, 1, 0, 0], [2, 2, 2, 1]]), s, red, include_self=incl),
                 lambda dt: (rn(2, 3, seed=1)(dt), rn(2, 4, seed=2)(dt)), grad=True)
            case(f"index_reduce {red} incl={incl}", lambda L, x, s, red=red, incl=incl: x.index_reduce(0, L.tensor([0, 1, 0, 2, 0]), s, red, include_self=incl) if red != "sum" else x,
                 lambda dt: (rn(4, 3, seed=1)(dt), rn(5, 3, seed=2)(dt)), grad=True)
    case("scatter_reduce sum long", lambda L, x, s: L.scatter_reduce(x, 0, L.tensor([i % 3 for i in range(300)]), s, reduce="sum"), lambda dt: (rn(3, seed=1)(dt), rn(300, seed=2)(dt)))
    case("scatter_reduce mean int", lambda L, x, s: L.scatter_reduce(x.to(L.int64), 0, L.tensor([0, 1, 0, 2, 0, 1, 3, 0]), (s * 10).to(L.int64), reduce="mean"), lambda dt: (rn(5, seed=1)(dt), rn(8, seed=2)(dt)), dtypes=["float32"])
    case("scatter_add dup", lambda L, x, s: x.scatter_add(0, L.tensor([0, 1, 0, 2, 0, 1, 3, 0]), s), lambda dt: (rn(5, seed=1)(dt), rn(8, seed=2)(dt)), grad=True)
    case("scatter_add long", lambda L, x, s: x.scatter_add(0, L.tensor([i % 3 for i in range(300)]), s), lambda dt: (rn(3, seed=1)(dt), rn(300, seed=2)(dt)), grad=True)
    case("scatter reduce=add", lambda L, x, s: x.scatter(0, L.tensor([0, 1, 0, 2, 0, 1, 3, 0]), s, reduce="add"), lambda dt: (rn(5, seed=1)(dt), rn(8, seed=2)(dt)))
    case("scatter reduce=multiply", lambda L, x, s: x.scatter(0, L.tensor([0, 1, 0, 2, 0, 1, 3, 0]), s, reduce="multiply"), lambda dt: (rn(5, seed=1)(dt), rn(8, seed=2)(dt)))
    case("scatter value", lambda L, x: x.scatter(1, L.tensor([[0, 1], [2, 0]]), 2.5), lambda dt: rn(2, 3, seed=1)(dt), grad=True)
    case("scatter_ value reduce", lambda L, x: x.clone().scatter_(1, L.tensor([[0, 0], [2, 0]]), 2.5, reduce="multiply"), lambda dt: rn(2, 3, seed=1)(dt))
    case("index_add dup alpha", lambda L, x, s: x.index_add(0, L.tensor([0, 2, 0, 0, 1]), s, alpha=0.5), lambda dt: (rn(3, 4, seed=1)(dt), rn(5, 4, seed=2)(dt)), grad=True)
    case("index_add dim1", lambda L, x, s: L.index_add(x, 1, L.tensor([0, 2, 0]), s), lambda dt: (rn(3, 4, seed=1)(dt), rn(3, 3, seed=2)(dt)), grad=True)
    case("index_add_ long", lambda L, x, s: x.clone().index_add_(0, L.tensor([i % 3 for i in range(200)]), s), lambda dt: (rn(3, 5, seed=1)(dt), rn(200, 5, seed=2)(dt)))
    case("index_add int", lambda L, x, s: x.to(L.int32).index_add(0, L.tensor([0, 0, 1]), (s * 10).to(L.int32), alpha=2), lambda dt: (rn(3, 2, seed=1)(dt), rn(3, 2, seed=2)(dt)), dtypes=["float32"])
    case("index_copy dup", lambda L, x, s: x.index_copy(0, L.tensor([0, 1, 2]), s), lambda dt: (rn(3, 2, seed=1)(dt), rn(3, 2, seed=2)(dt)), grad=True)
    case("index_fill", lambda L, x: x.index_fill(1, L.tensor([0, 2]), -1.5), lambda dt: rn(3, 4, seed=1)(dt), grad=True)
    case("index_put accumulate", lambda L, x, s: x.index_put((L.tensor([0, 1, 0, 0]),), s, accumulate=True), lambda dt: (rn(3, 2, seed=1)(dt), rn(4, 2, seed=2)(dt)), grad=True)
    case("index_put_ accumulate long", lambda L, x, s: x.clone().index_put_((L.tensor([i % 2 for i in range(100)]),), s, accumulate=True), lambda dt: (rn(3, seed=1)(dt), rn(100, seed=2)(dt)))
    case("x[idx] += dup", lambda L, x, s: (lambda y: (y.__setitem__(L.tensor([0, 0, 1]), y[L.tensor([0, 0, 1])] + s), y)[1])(x.clone()), lambda dt: (rn(3, seed=1)(dt), rn(3, seed=2)(dt)))
    case("put_ accumulate", lambda L, x, s: x.clone().put_(L.tensor([0, 5, 0, 3]), s, accumulate=True), lambda dt: (rn(2, 3, seed=1)(dt), rn(4, seed=2)(dt)))
    case("gather grad dup", lambda L, x: L.gather(x, 1, L.tensor([[0, 0, 1], [2, 2, 2]])), lambda dt: rn(2, 3, seed=1)(dt), grad=True)
    case("take_along_dim", lambda L, x: L.take_along_dim(x, L.argsort(x, dim=1), dim=1), lambda dt: rn(3, 5, seed=1)(dt), grad=True)
    case("embedding grad dup", lambda L, w: L.nn.functional.embedding(L.tensor([[0, 2, 0], [1, 0, 0]]), w), lambda dt: rn(4, 3, seed=1)(dt), grad=True)
    case("embedding padding_idx", lambda L, w: L.nn.functional.embedding(L.tensor([[0, 2, 0], [1, 0, 3]]), w, padding_idx=0), lambda dt: rn(4, 3, seed=1)(dt), grad=True)
    case("embedding max_norm", lambda L, w: L.nn.functional.embedding(L.tensor([[0, 2, 0]]), w.clone(), max_norm=1.0), lambda dt: rn(4, 3, seed=1)(dt))
    case("embedding scale_grad", lambda L, w: L.nn.functional.embedding(L.tensor([[0, 2, 0], [1, 0, 3]]), w, scale_grad_by_freq=True), lambda dt: rn(4, 3, seed=1)(dt), grad=True)
    # search/histograms
    case("bucketize", lambda L, x, b: L.bucketize(x, b), lambda dt: (ties(20)(dt), torch.tensor([-2., 0., 1., 1., 2.]).to(dt)))
    case("bucketize right int32", lambda L, x, b: L.bucketize(x, b, right=True, out_int32=True), lambda dt: (ties(20)(dt), torch.tensor([-2., 0., 1., 1., 2.]).to(dt)))
    case("bucketize nan", lambda L, x, b: L.bucketize(x, b), lambda dt: (with_nan(20)(dt), torch.tensor([-2., 0., 1., 2.]).to(dt)))
    case("bucketize scalar", lambda L, b: L.bucketize(0.5, b), lambda dt: torch.tensor([-2., 0., 1., 2.]).to(dt))
    case("bucketize int in float", lambda L, x, b: L.bucketize(x.to(L.int64), b), lambda dt: (ties(20)(dt), torch.tensor([-2.5, 0., 1.5]).to(dt)))
    case("searchsorted", lambda L, s, v: L.searchsorted(s, v), lambda dt: (torch.tensor([[-2., 0., 1., 1., 2.], [0, 0, 0, 3, 4]]).to(dt), ties(2, 6)(dt)))
    case("searchsorted side right", lambda L, s, v: L.searchsorted(s, v, side="right"), lambda dt: (torch.tensor([-2., 0., 1., 1., 2.]).to(dt), ties(7)(dt)))
    case("searchsorted sorter", lambda L, s, v: L.searchsorted(s, v, sorter=L.argsort(s)), lambda dt: (torch.tensor([2., 0., 1., -1., 3.]).to(dt), ties(7)(dt)))
    case("searchsorted nan", lambda L, s, v: L.searchsorted(s, v), lambda dt: (torch.tensor([-2., 0., 1., float('nan')]).to(dt), with_nan(7)(dt)))
    case("searchsorted scalar", lambda L, s: L.searchsorted(s, 1), lambda dt: torch.tensor([-2., 0., 1., 1., 2.]).to(dt))
    case("searchsorted int seq float v", lambda L, v: L.searchsorted(L.tensor([0, 1, 2, 3]), v), lambda dt: rn(7)(dt))
    case("histc", lambda L, x: L.histc(x, bins=7), rn(100), dtypes=F32 + ["bfloat16", "float16"])
    case("histc range", lambda L, x: L.histc(x, bins=5, min=-1, max=1), rn(100))
    case("histc edges", lambda L, x: L.histc(x, bins=6, min=-3, max=3), ties(100))
    case("histc nan", lambda L, x: L.histc(x, bins=4, min=-3, max=3), with_nan(30))
    case("histc int", lambda L, x: L.histc(x.to(L.int64), bins=4), ties(30), dtypes=["float32"])
    case("histogram", lambda L, x: L.histogram(x, bins=5), rn(100), dtypes=F32)
    case("histogram range weight", lambda L, x, w: L.histogram(x, bins=4, range=(-1., 1.), weight=w, density=True), lambda dt: (rn(50)(dt), rn(50, seed=3)(dt).abs()), dtypes=F32)
    case("histogram bins tensor", lambda L, x: L.histogram(x, L.tensor([-1., 0., 0.5, 2.], dtype=x.dtype)), rn(50), dtypes=F32)
    case("bincount", lambda L, x: L.bincount((x.abs() * 3).to(L.int64)), rn(50), dtypes=["float32"])
    case("bincount weights", lambda L, x, w: L.bincount((x.abs() * 3).to(L.int64), w, minlength=12), lambda dt: (rn(50)(torch.float32), rn(50, seed=4)(dt)))
    case("bincount int weights", lambda L, x: L.bincount((x.abs() * 3).to(L.int64), (x * 4).to(L.int32)), rn(50), dtypes=["float32"])
    case("histogramdd", lambda L, x: L.histogramdd(x, bins=[3, 4]), rn(50, 2), dtypes=F32)


def _index_add_cases():
    H = ["bfloat16", "float16", "float32"]
    i200 = lambda L: L.tensor([i % 3 for i in range(200)])
    for alpha in (1, 0.3):
        case(f"index_add 1d a={alpha}", lambda L, x, s, alpha=alpha: x.index_add(0, i200(L), s, alpha=alpha), lambda dt: (rn(3, seed=1)(dt), rn(200, seed=2)(dt)), dtypes=H)
        case(f"index_add 2d0 a={alpha}", lambda L, x, s, alpha=alpha: x.index_add(0, i200(L), s, alpha=alpha), lambda dt: (rn(3, 5, seed=1)(dt), rn(200, 5, seed=2)(dt)), dtypes=H, grad=True)
        case(f"index_add 2d0 i32 a={alpha}", lambda L, x, s, alpha=alpha: x.index_add(0, i200(L).int(), s, alpha=alpha), lambda dt: (rn(3, 5, seed=1)(dt), rn(200, 5, seed=2)(dt)), dtypes=H)
        case(f"index_add 2d1 a={alpha}", lambda L, x, s, alpha=alpha: L.index_add(x, 1, i200(L), s, alpha=alpha), lambda dt: (rn(5, 3, seed=1)(dt), rn(5, 200, seed=2)(dt)), dtypes=H)
        case(f"index_add 3d1 a={alpha}", lambda L, x, s, alpha=alpha: L.index_add(x, 1, i200(L), s, alpha=alpha), lambda dt: (rn(2, 3, 4, seed=1)(dt), rn(2, 200, 4, seed=2)(dt)), dtypes=H)
        case(f"index_add 3d-1 a={alpha}", lambda L, x, s, alpha=alpha: L.index_add(x, -1, i200(L), s, alpha=alpha), lambda dt: (rn(2, 4, 3, seed=1)(dt), rn(2, 4, 200, seed=2)(dt)), dtypes=H)
        case(f"index_add_ T a={alpha}", lambda L, x, s, alpha=alpha: x.t().clone().t().index_add_(0, i200(L), s, alpha=alpha), lambda dt: (rn(3, 5, seed=1)(dt), rn(200, 5, seed=2)(dt)), dtypes=H)


def _scatter_and_index_reduce_with_zeros_cases():
    H = ["bfloat16", "float16", "float32", "float64"]
    def zeroed(*shape, seed=0):
        def make(dt):
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(*shape, generator=g, dtype=torch.float64)
            x[x.abs() < 0.25] = 0
            return x.to(dt)
        return make
    for seed in range(4):
        idx = lambda L, seed=seed: L.tensor(torch.randint(0, 6, (40,), generator=torch.Generator().manual_seed(seed + 10)).numpy())
        for red in ["prod", "mean", "sum", "amax", "amin"]:
            for incl in (True, False):
                case(f"scatter_reduce {red} {incl} {seed}", lambda L, x, s, red=red, incl=incl, idx=idx: L.scatter_reduce(x, 0, idx(L), s, red, include_self=incl),
                     lambda dt, seed=seed: (zeroed(6, seed=seed)(dt), zeroed(40, seed=seed + 1)(dt)), dtypes=H, grad=True)
                if red != "sum":
                    case(f"index_reduce {red} {incl} {seed}", lambda L, x, s, red=red, incl=incl, idx=idx: x.index_reduce(0, idx(L), s, red, include_self=incl),
                         lambda dt, seed=seed: (zeroed(6, 3, seed=seed)(dt), zeroed(40, 3, seed=seed + 1)(dt)), dtypes=H, grad=True)


def _resampling_padding_distances_cases():
    ALL = ["float32", "float64", "bfloat16", "float16"]
    img = lambda dt: rn(2, 3, 5, 7)(dt)
    vol = lambda dt: rn(1, 2, 3, 4, 5)(dt)
    seq = lambda dt: rn(2, 3, 9)(dt)
    for mode, ac in (("nearest", None), ("nearest-exact", None), ("bilinear", False), ("bilinear", True), ("bicubic", False), ("bicubic", True), ("area", None)):
        kw = {} if ac is None else {"align_corners": ac}
        case(f"interp {mode} {ac} size", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x, size=(8, 11), mode=mode, **kw), img, grad=True)
        case(f"interp {mode} {ac} sf", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x, scale_factor=1.7, mode=mode, **kw), img, grad=True)
        case(f"interp {mode} {ac} down", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x, scale_factor=0.6, mode=mode, **kw), img, grad=True)
        case(f"interp {mode} {ac} sf recompute", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x, scale_factor=(1.3, 2.1), mode=mode, recompute_scale_factor=True, **kw), img, grad=True)
        case(f"interp {mode} {ac} strided", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x[:, :, ::2, 1:], size=(6, 9), mode=mode, **kw), img, grad=True)
        case(f"interp {mode} {ac} chlast", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), size=(6, 9), mode=mode, **kw), img, grad=True)
    for mode in ("bilinear", "bicubic"):
        case(f"interp {mode} antialias", lambda L, x, mode=mode: F(L).interpolate(x, size=(3, 4), mode=mode, antialias=True), img, grad=True)
    for mode, ac in (("nearest", None), ("linear", False), ("linear", True), ("area", None), ("nearest-exact", None)):
        kw = {} if ac is None else {"align_corners": ac}
        case(f"interp1d {mode} {ac}", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x, size=14, mode=mode, **kw), seq, grad=True)
        case(f"interp1d {mode} {ac} sf", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x, scale_factor=0.7, mode=mode, **kw), seq, grad=True)
    for mode, ac in (("nearest", None), ("trilinear", False), ("trilinear", True), ("area", None)):
        kw = {} if ac is None else {"align_corners": ac}
        case(f"interp3d {mode} {ac}", lambda L, x, mode=mode, kw=kw: F(L).interpolate(x, size=(4, 5, 7), mode=mode, **kw), vol, grad=True)
    case("Upsample module", lambda L, x: L.nn.Upsample(scale_factor=2, mode="bilinear")(x), img, grad=True)
    case("UpsamplingNearest2d", lambda L, x: L.nn.UpsamplingNearest2d(scale_factor=2)(x), img, grad=True)
    case("UpsamplingBilinear2d", lambda L, x: L.nn.UpsamplingBilinear2d(size=(9, 9))(x), img, grad=True)
    # grid_sample / affine_grid
    for mode in ("bilinear", "nearest", "bicubic"):
        for pad in ("zeros", "border", "reflection"):
            for ac in (False, True):
                case(f"grid_sample {mode} {pad} {ac}", lambda L, x, g, mode=mode, pad=pad, ac=ac: F(L).grid_sample(x, g, mode=mode, padding_mode=pad, align_corners=ac),
                     lambda dt: (img(dt), (rn(2, 4, 6, 2, seed=5)(dt) * 0.8)), grad=True)
    case("affine_grid", lambda L, th: F(L).affine_grid(th, (2, 3, 5, 7), align_corners=False), lambda dt: rn(2, 2, 3, seed=3)(dt), grad=True)
    case("affine_grid ac", lambda L, th: F(L).affine_grid(th, [2, 3, 5, 7], align_corners=True), lambda dt: rn(2, 2, 3, seed=3)(dt), grad=True)
    case("affine_grid+sample", lambda L, x, th: F(L).grid_sample(x, F(L).affine_grid(th, x.shape, align_corners=False), align_corners=False), lambda dt: (img(dt), rn(2, 2, 3, seed=3)(dt)), grad=True)
    # pad
    for mode in ("constant", "reflect", "replicate", "circular"):
        case(f"pad {mode} 2d", lambda L, x, mode=mode: F(L).pad(x, (1, 2, 2, 1), mode=mode), img, grad=True)
        case(f"pad {mode} 1d", lambda L, x, mode=mode: F(L).pad(x, (2, 3), mode=mode), seq, grad=True)
        case(f"pad {mode} 3d", lambda L, x, mode=mode: F(L).pad(x, (1, 1, 2, 0, 1, 2), mode=mode), vol, grad=True)
    case("pad constant value", lambda L, x: F(L).pad(x, (1, 1), value=-2.5), seq, grad=True)
    case("pad negative", lambda L, x: F(L).pad(x, (-1, 2, 0, -2)), img, grad=True)
    case("pad int", lambda L, x: F(L).pad((x * 3).to(L.int64), (1, 1), value=7), seq, dtypes=["float32"])
    case("pad bool", lambda L, x: F(L).pad(x > 0, (1, 1), value=True), seq, dtypes=["float32"])
    case("ReflectionPad2d", lambda L, x: L.nn.ReflectionPad2d(2)(x), img, grad=True)
    case("ZeroPad2d", lambda L, x: L.nn.ZeroPad2d((1, 0, 2, 3))(x), img, grad=True)
    case("ConstantPad1d", lambda L, x: L.nn.ConstantPad1d(2, 3.5)(x), seq, grad=True)
    case("ReplicationPad3d", lambda L, x: L.nn.ReplicationPad3d(1)(x), vol, grad=True)
    case("CircularPad2d", lambda L, x: L.nn.CircularPad2d(1)(x), img, grad=True)
    # unfold / fold
    case("unfold", lambda L, x: F(L).unfold(x, kernel_size=(2, 3), dilation=1, padding=1, stride=(1, 2)), img, grad=True)
    case("unfold dil", lambda L, x: F(L).unfold(x, 3, dilation=2, padding=2, stride=2), img, grad=True)
    case("fold", lambda L, x: F(L).fold(x, output_size=(5, 7), kernel_size=(2, 3), padding=1, stride=(1, 2)), lambda dt: rn(2, 18, 24)(dt), grad=True)
    case("fold unfold roundtrip", lambda L, x: F(L).fold(F(L).unfold(x, 3, padding=1), (5, 7), 3, padding=1), img, grad=True)
    case("nn.Unfold", lambda L, x: L.nn.Unfold(kernel_size=2, stride=2)(x), img, grad=True)
    case("Tensor.unfold", lambda L, x: x.unfold(2, 3, 2), seq, grad=True)
    case("Tensor.unfold 0d-ish", lambda L, x: x.unfold(-1, 9, 1), seq, grad=True)
    # pixel shuffle etc
    case("pixel_shuffle", lambda L, x: F(L).pixel_shuffle(x, 2), lambda dt: rn(2, 8, 3, 4)(dt), grad=True)
    case("pixel_unshuffle", lambda L, x: F(L).pixel_unshuffle(x, 2), lambda dt: rn(2, 2, 4, 6)(dt), grad=True)
    case("PixelShuffle", lambda L, x: L.nn.PixelShuffle(3)(x), lambda dt: rn(1, 9, 2, 2)(dt), grad=True)
    case("channel_shuffle", lambda L, x: F(L).channel_shuffle(x, 2) if hasattr(F(L), "channel_shuffle") else L.nn.ChannelShuffle(2)(x), lambda dt: rn(1, 4, 2, 2)(dt))
    # similarities / distances
    case("cosine_similarity", lambda L, a, b: F(L).cosine_similarity(a, b), lambda dt: (rn(4, 7)(dt), rn(4, 7, seed=1)(dt)), grad=True)
    case("cosine_similarity bcast", lambda L, a, b: F(L).cosine_similarity(a[:, None], b[None], dim=-1), lambda dt: (rn(4, 7)(dt), rn(5, 7, seed=1)(dt)), grad=True)
    case("cosine_similarity dim0 eps", lambda L, a, b: L.cosine_similarity(a, b, dim=0, eps=1e-3), lambda dt: (rn(4, 7)(dt), rn(4, 7, seed=1)(dt)), grad=True)
    case("cosine_similarity zero", lambda L, a, b: F(L).cosine_similarity(a * 0, b), lambda dt: (rn(4, 7)(dt), rn(4, 7, seed=1)(dt)), grad=True)
    case("CosineSimilarity", lambda L, a, b: L.nn.CosineSimilarity(dim=1)(a, b), lambda dt: (rn(4, 7)(dt), rn(4, 7, seed=1)(dt)), grad=True)
    case("pairwise_distance", lambda L, a, b: F(L).pairwise_distance(a, b), lambda dt: (rn(4, 7)(dt), rn(4, 7, seed=1)(dt)), grad=True)
    case("pairwise_distance p1 keep", lambda L, a, b: F(L).pairwise_distance(a, b, p=1, keepdim=True), lambda dt: (rn(4, 7)(dt), rn(4, 7, seed=1)(dt)), grad=True)
    case("PairwiseDistance", lambda L, a, b: L.nn.PairwiseDistance(p=3)(a, b), lambda dt: (rn(4, 7)(dt), rn(4, 7, seed=1)(dt)), grad=True)
    for p in (2, 1, 0, 3, float("inf"), 0.5):
        case(f"pdist p={p}", lambda L, a, p=p: F(L).pdist(a, p=p), lambda dt: rn(6, 5)(dt), grad=True)
        case(f"cdist p={p}", lambda L, a, b, p=p: L.cdist(a, b, p=p), lambda dt: (rn(2, 6, 5)(dt), rn(2, 4, 5, seed=1)(dt)), grad=True)
    case("cdist mm", lambda L, a, b: L.cdist(a, b, compute_mode="use_mm_for_euclid_dist"), lambda dt: (rn(6, 5)(dt), rn(4, 5, seed=1)(dt)), grad=True)
    case("cdist big", lambda L, a, b: L.cdist(a, b), lambda dt: (rn(30, 5)(dt), rn(26, 5, seed=1)(dt)), grad=True)
    case("cdist nomm", lambda L, a, b: L.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist"), lambda dt: (rn(30, 5)(dt), rn(26, 5, seed=1)(dt)), grad=True)
    case("cdist bcast", lambda L, a, b: L.cdist(a, b), lambda dt: (rn(2, 1, 6, 5)(dt), rn(3, 4, 5, seed=1)(dt)), grad=True)
    case("cdist same", lambda L, a: L.cdist(a, a), lambda dt: rn(6, 5)(dt), grad=True)


def _adaptive_pooling_cases():
    H = ["bfloat16", "float16", "float32", "float64"]
    for shape, size in (((1, 2, 3, 4, 5), (4, 5, 7)), ((2, 3, 7, 6, 9), (3, 2, 4)), ((1, 1, 5, 5, 5), (2, 3, 2)), ((1, 2, 4, 4, 4), 1), ((1, 2, 8, 9, 10), (8, 9, 10))):
        case(f"adaptive_avg_pool3d {shape}->{size}", lambda L, x, size=size: L.nn.functional.adaptive_avg_pool3d(x, size), rn(*shape), dtypes=H, grad=True)
        case(f"area3d {shape}->{size}", lambda L, x, size=size: L.nn.functional.interpolate(x, size=size, mode="area"), rn(*shape), dtypes=H, grad=True)
    case("AdaptiveAvgPool3d module chlast", lambda L, x: L.nn.AdaptiveAvgPool3d((2, 3, None))(x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)), rn(2, 5, 4, 6, 7), dtypes=H, grad=True)
    for shape, size in (((1, 2, 5, 7), (3, 4)), ((2, 3, 9, 6), (4, 5)), ((1, 2, 9), 4)):
        case(f"adaptive_avg_pool {shape}", lambda L, x, size=size: (L.nn.functional.adaptive_avg_pool2d if len(x.shape) == 4 else L.nn.functional.adaptive_avg_pool1d)(x, size), rn(*shape), dtypes=H, grad=True)


def _cdist_by_products_cases():
    ALL = ["float32", "float64", "bfloat16", "float16"]
    case("cdist mm", lambda L, a, b: L.cdist(a, b, compute_mode="use_mm_for_euclid_dist"), lambda dt: (rn(6, 5)(dt), rn(4, 5, seed=1)(dt)), grad=True)
    case("cdist big", lambda L, a, b: L.cdist(a, b), lambda dt: (rn(30, 5)(dt), rn(26, 5, seed=1)(dt)), grad=True)
    case("cdist big batch", lambda L, a, b: L.cdist(a, b), lambda dt: (rn(2, 30, 5)(dt), rn(2, 26, 5, seed=1)(dt)), grad=True)
    case("cdist bcast mm", lambda L, a, b: L.cdist(a, b, compute_mode="use_mm_for_euclid_dist"), lambda dt: (rn(2, 1, 6, 5)(dt), rn(3, 4, 5, seed=1)(dt)), grad=True)
    case("cdist near dup", lambda L, a: L.cdist(a, a + 1e-3, compute_mode="use_mm_for_euclid_dist"), lambda dt: rn(30, 8)(dt), grad=True)
    case("cdist same", lambda L, a: L.cdist(a, a), lambda dt: rn(30, 8)(dt), grad=True)
    case("cdist wide", lambda L, a, b: L.cdist(a, b), lambda dt: (rn(40, 64)(dt), rn(3, 64, seed=1)(dt)), grad=True)


def _padding_16bit_cases():
    H = ["bfloat16", "float16"]
    for mode in ("reflect", "replicate"):
        case(f"pad {mode} 1d big", lambda L, x, mode=mode: F(L).pad(x, (5, 7), mode=mode), rn(2, 3, 9), dtypes=H, grad=True)
        case(f"pad {mode} 1d unbatched", lambda L, x, mode=mode: F(L).pad(x, (3, 2), mode=mode), rn(3, 9), dtypes=H, grad=True)
        case(f"pad {mode} 2d neg", lambda L, x, mode=mode: F(L).pad(x, (-1, 3, 2, -1), mode=mode), rn(2, 3, 6, 7), dtypes=H, grad=True)
        case(f"pad {mode} 2d chlast", lambda L, x, mode=mode: F(L).pad(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), (2, 2, 3, 3), mode=mode), rn(2, 5, 6, 7), dtypes=H, grad=True)
        case(f"pad {mode} 3d big", lambda L, x, mode=mode: F(L).pad(x, (2, 3, 1, 2, 2, 1), mode=mode), rn(2, 2, 4, 5, 6), dtypes=H, grad=True)
        case(f"pad {mode} 3d unbatched", lambda L, x, mode=mode: F(L).pad(x, (2, 3, 1, 2, 2, 1), mode=mode), rn(2, 4, 5, 6), dtypes=H, grad=True)


def _clamp_where_promotion_lerp_addc_cases():
    ALL = ["float32", "float64", "bfloat16", "float16"]
    two = lambda dt: (rn(4, 5)(dt), rn(4, 5, seed=1)(dt))
    three = lambda dt: (rn(4, 5)(dt), rn(4, 5, seed=1)(dt), rn(4, 5, seed=2)(dt))
    # clamp with tensors
    case("clamp tensors", lambda L, x, lo, hi: L.clamp(x, lo, hi), three, grad=True)
    case("clamp min tensor bcast", lambda L, x, lo: x.clamp(min=lo[:1]), two, grad=True)
    case("clamp max tensor", lambda L, x, hi: L.clamp(x, max=hi), two, grad=True)
    case("clamp lo>hi", lambda L, x: L.clamp(x, 0.5, -0.5), rn(4, 5), grad=True)
    case("clamp nan", lambda L, x: L.clamp(x, -1, 1), with_nan(20), grad=True)
    case("clamp nan bound", lambda L, x, b: L.clamp(x, b), lambda dt: (rn(20)(dt), with_nan(20)(dt)), grad=True)
    case("clamp int float bound", lambda L, x: L.clamp((x * 3).to(L.int64), 0.5, 2.5), rn(20), dtypes=["float32"])
    case("clamp int tensor float bound", lambda L, x, b: L.clamp((x * 3).to(L.int64), b), lambda dt: (rn(20)(dt), rn(20, seed=1)(dt)), dtypes=["float32"])
    case("clamp_ inplace", lambda L, x: x.clone().clamp_(min=-0.5), rn(20), grad=True)
    case("clamp_min_ tensor", lambda L, x, lo: x.clone().clamp_min_(lo), two)
    case("clip", lambda L, x: x.clip(-0.3, 0.3), rn(20), grad=True)
    case("clamp out", lambda L, x: L.clamp(x, -0.3, 0.3, out=L.empty_like(x)), rn(20))
    case("clamp grad ties", lambda L, x: L.clamp(x, -1.0, 1.0), ties(20), grad=True)
    case("clamp grad ties tensor", lambda L, x, b: L.clamp(x, b, b + 1), lambda dt: (ties(20)(dt), ties(20, seed=3)(dt)), grad=True)
    case("maximum ties grad", lambda L, x, y: L.maximum(x, y), lambda dt: (ties(20)(dt), ties(20, seed=3)(dt)), grad=True)
    case("fmax nan grad", lambda L, x, y: L.fmax(x, y), lambda dt: (with_nan(20)(dt), ties(20, seed=3)(dt)), grad=True)
    # where and promotion
    case("where scalar float int tensor", lambda L, x: L.where(x > 0, (x * 3).to(L.int32), 0.5), rn(20), dtypes=["float32"])
    case("where scalars", lambda L, x: L.where(x > 0, 1.0, 0), rn(20), dtypes=["float32"])
    case("where int scalars", lambda L, x: L.where(x > 0, 2, 3), rn(20), dtypes=["float32"])
    case("where 16 and scalar", lambda L, x: L.where(x > 0, x, 1e-3), rn(20), grad=True)
    case("where 16 and f32", lambda L, x, y: L.where(x > 0, x, y.float()), two, grad=True)
    case("where 0d other", lambda L, x: L.where(x > 0, x, L.tensor(2.5, dtype=L.float64)), rn(20), grad=True)
    case("where bool", lambda L, x: L.where(x > 0, x > 1, False), rn(20), dtypes=["float32"])
    case("masked_fill float on int", lambda L, x: (x * 3).to(L.int64).masked_fill(x > 0, 2.7), rn(20), dtypes=["float32"])
    case("masked_fill tensor value", lambda L, x: x.masked_fill(x > 0, L.tensor(-1.5)), rn(20), grad=True)
    case("masked_fill inf on 16", lambda L, x: x.masked_fill(x > 1, float("-inf")), rn(20), grad=True)
    case("masked_fill big on f16", lambda L, x: x.masked_fill(x > 1, -1e9), rn(20), dtypes=["float16", "bfloat16"])
    case("masked_fill_ bcast", lambda L, x: x.clone().masked_fill_(L.tensor([True, False, True, False, True]), 0.1), rn(4, 5), grad=True)
    case("masked_select", lambda L, x: L.masked_select(x, x > 0), rn(4, 5), grad=True)
    case("masked_scatter", lambda L, x, s: x.masked_scatter(x > 0, s), two, grad=True)
    case("add int tensor + float scalar", lambda L, x: (x * 3).to(L.int64) + 1.5, rn(20), dtypes=["float32"])
    case("int tensor * float 0d", lambda L, x: (x * 3).to(L.int32) * L.tensor(1.5, dtype=L.float64), rn(20), dtypes=["float32"])
    case("uint8 + int", lambda L, x: (x.abs() * 50).to(L.uint8) + 300, rn(20), dtypes=["float32"])
    case("bool + bool", lambda L, x: (x > 0) + (x > 1), rn(20), dtypes=["float32"])
    case("bool * 2.5", lambda L, x: (x > 0) * 2.5, rn(20), dtypes=["float32"])
    case("16 + f64 0d", lambda L, x: x + L.tensor(1.1, dtype=L.float64), rn(20), grad=True)
    case("16 / int tensor", lambda L, x: x / L.arange(1, 21), rn(20), grad=True)
    case("int // float", lambda L, x: (x * 5).to(L.int64) // 1.5, rn(20), dtypes=["float32"])
    case("int % neg", lambda L, x: (x * 5).to(L.int64) % -3, rn(20), dtypes=["float32"])
    case("true_divide int", lambda L, x: L.true_divide((x * 5).to(L.int64), 3), rn(20), dtypes=["float32"])
    case("div floor", lambda L, x, y: L.div(x, y, rounding_mode="floor"), two, grad=True)
    case("div trunc", lambda L, x, y: L.div(x, y, rounding_mode="trunc"), two, grad=True)
    case("div floor int", lambda L, x: L.div((x * 5).to(L.int64), -2, rounding_mode="floor"), rn(20), dtypes=["float32"])
    case("remainder", lambda L, x, y: L.remainder(x, y), two, grad=True)
    case("fmod scalar", lambda L, x: L.fmod(x * 5, 1.5), rn(20), grad=True)
    # lerp / addcmul / addcdiv
    case("lerp scalar", lambda L, a, b: L.lerp(a, b, 0.3), two, grad=True)
    case("lerp 0.7", lambda L, a, b: a.lerp(b, 0.7), two, grad=True)
    case("lerp tensor w", lambda L, a, b, w: L.lerp(a, b, w), three, grad=True)
    case("lerp_ inplace", lambda L, a, b: a.clone().lerp_(b, 0.25), two)
    case("lerp bcast w", lambda L, a, b: L.lerp(a, b, L.tensor([0.1, 0.5, 0.9, 0.6, 1.2], dtype=a.dtype)), two, grad=True)
    case("addcmul value", lambda L, a, b, c: L.addcmul(a, b, c, value=0.3), three, grad=True)
    case("addcmul default", lambda L, a, b, c: a.addcmul(b, c), three, grad=True)
    case("addcmul_ value", lambda L, a, b, c: a.clone().addcmul_(b, c, value=-2), three)
    case("addcdiv value", lambda L, a, b, c: L.addcdiv(a, b, c, value=0.3), three, grad=True)
    case("addcdiv default", lambda L, a, b, c: a.addcdiv(b, c), three, grad=True)
    case("addcdiv_ value", lambda L, a, b, c: a.clone().addcdiv_(b, c, value=-0.01), three)
    case("addcmul int", lambda L, a, b, c: L.addcmul((a * 5).to(L.int64), (b * 5).to(L.int64), (c * 5).to(L.int64), value=2), three, dtypes=["float32"])
    case("addcmul bcast", lambda L, a, b, c: L.addcmul(a[:1], b, c[:, :1], value=0.5), three, grad=True)
    case("addcdiv bcast", lambda L, a, b, c: L.addcdiv(a[:, :1], b[:1], c, value=0.5), three, grad=True)
    case("add alpha", lambda L, a, b: L.add(a, b, alpha=0.3), two, grad=True)
    case("sub alpha", lambda L, a, b: L.sub(a, b, alpha=1.7), two, grad=True)
    case("add_ alpha", lambda L, a, b: a.clone().add_(b, alpha=-0.1), two)
    case("rsub", lambda L, a: L.rsub(a, 2.5), rn(20), grad=True)
    case("xlogy", lambda L, a, b: L.xlogy(a, b.abs()), two, grad=True)
    case("hypot", lambda L, a, b: L.hypot(a, b), two, grad=True)
    case("copysign", lambda L, a, b: L.copysign(a, b), two, grad=True)
    case("float_power", lambda L, a: L.float_power(a, 2), rn(20), grad=True)
    case("heaviside", lambda L, a, b: L.heaviside(a, b), two)
    case("nan_to_num", lambda L, a: L.nan_to_num(a / 0, nan=0.5, posinf=1e3), rn(20))
    case("sgn", lambda L, a: a.sgn(), rn(20), grad=True)


def _addcmul_addcdiv_values_cases():
    H = ["bfloat16", "float16"]
    for v in (0.3, -2, 1e-3, 7.7, 1):
        for shapes in (((4, 5), (4, 5), (4, 5)), ((1, 5), (4, 5), (4, 1)), ((4, 1), (1, 5), (4, 5)), ((), (3,), (3,))):
            mk = lambda dt, shapes=shapes: tuple(rn(*s, seed=i)(dt) for i, s in enumerate(shapes))
            case(f"addcmul {v} {shapes}", lambda L, a, b, c, v=v: L.addcmul(a, b, c, value=v), mk, dtypes=H, grad=True)
            case(f"addcdiv {v} {shapes}", lambda L, a, b, c, v=v: L.addcdiv(a, b, c, value=v), mk, dtypes=H, grad=True)


def _bags_reductions_misc_cases():
    ALL = ["float32", "float64", "bfloat16", "float16"]
    idx = lambda L: L.tensor([0, 2, 1, 2, 4, 0, 3, 3])
    offs = lambda L: L.tensor([0, 3, 3, 5])
    for mode in ("sum", "mean", "max"):
        case(f"embedding_bag {mode}", lambda L, w, mode=mode: F(L).embedding_bag(idx(L), w, offs(L), mode=mode), lambda dt: rn(5, 4)(dt), grad=True)
        case(f"embedding_bag {mode} last", lambda L, w, mode=mode: F(L).embedding_bag(idx(L), w, offs(L), mode=mode, include_last_offset=True), lambda dt: rn(5, 4)(dt), grad=True)
        case(f"embedding_bag {mode} 2d", lambda L, w, mode=mode: F(L).embedding_bag(idx(L).reshape(2, 4), w, mode=mode), lambda dt: rn(5, 4)(dt), grad=True)
        case(f"embedding_bag {mode} pad", lambda L, w, mode=mode: F(L).embedding_bag(idx(L), w, offs(L), mode=mode, padding_idx=2), lambda dt: rn(5, 4)(dt), grad=True)
        case(f"EmbeddingBag {mode} big", lambda L, w, mode=mode: F(L).embedding_bag(L.tensor([i * 7 % 50 for i in range(300)]), w, L.tensor([0, 100, 250]), mode=mode), lambda dt: rn(50, 16)(dt), grad=True)
    case("embedding_bag psw", lambda L, w, p: F(L).embedding_bag(idx(L), w, offs(L), mode="sum", per_sample_weights=p), lambda dt: (rn(5, 4)(dt), rn(8, seed=2)(dt)), grad=True)
    case("embedding_bag max_norm", lambda L, w: F(L).embedding_bag(idx(L), w.clone(), offs(L), max_norm=1.0), lambda dt: rn(5, 4)(dt))
    case("one_hot", lambda L, x: F(L).one_hot((x.abs() * 2).to(L.int64), 5), rn(10), dtypes=["float32"])
    case("one_hot auto", lambda L, x: F(L).one_hot((x.abs() * 2).to(L.int64)), rn(10), dtypes=["float32"])
    case("normalize", lambda L, x: F(L).normalize(x, dim=0), rn(4, 5), grad=True)
    case("normalize p1", lambda L, x: F(L).normalize(x, p=1, dim=-1, eps=1e-3), rn(4, 5), grad=True)
    case("softmax dim0", lambda L, x: F(L).softmax(x, dim=0), rn(4, 5), grad=True)
    case("log_softmax dtype", lambda L, x: F(L).log_softmax(x, dim=1, dtype=L.float32), rn(4, 5), grad=True)
    case("softmin", lambda L, x: F(L).softmin(x, 1), rn(4, 5), grad=True)
    case("logsumexp", lambda L, x: L.logsumexp(x, dim=1), rn(4, 50), grad=True)
    case("logsumexp multi", lambda L, x: x.logsumexp((0, 1), keepdim=True), rn(4, 50), grad=True)
    case("logsumexp inf", lambda L, x: L.logsumexp(L.where(x > 1, float("-inf"), x), 1), rn(4, 5), grad=True)
    case("std_mean", lambda L, x: L.std_mean(x, dim=1), rn(4, 50), grad=True)
    case("var_mean corr0", lambda L, x: L.var_mean(x, 0, correction=0), rn(40, 5), grad=True)
    case("nansum", lambda L, x: L.nansum(x, 1), with_nan(4, 50), grad=True)
    case("nanmean", lambda L, x: L.nanmean(x, 1), with_nan(4, 50), grad=True)
    case("prod dim", lambda L, x: L.prod(x, 1), rn(4, 20), grad=True)
    case("prod all", lambda L, x: x.prod(), rn(20), grad=True)
    case("prod zeros", lambda L, x: L.where(x.abs() < 0.3, 0.0, x).prod(1), rn(4, 20), grad=True)
    case("cumsum grad", lambda L, x: L.cumsum(x, 1), rn(4, 50), grad=True)
    case("cumsum 16 long", lambda L, x: L.cumsum(x, 0), rn(3000), grad=True)
    case("renorm", lambda L, x: L.renorm(x, 2, 0, 1.0), rn(4, 5), grad=True)
    case("dist", lambda L, a, b: L.dist(a, b, 3), lambda dt: (rn(4, 5)(dt), rn(4, 5, seed=1)(dt)), grad=True)
    case("trace", lambda L, x: L.trace(x), rn(5, 5), grad=True)
    case("tril_", lambda L, x: x.tril(-1), rn(5, 5), grad=True)
    case("diag_embed", lambda L, x: L.diag_embed(x, 1), rn(2, 3), grad=True)
    case("kron", lambda L, a, b: L.kron(a, b), lambda dt: (rn(2, 3)(dt), rn(3, 2, seed=1)(dt)), grad=True)
    case("outer", lambda L, a, b: L.outer(a, b), lambda dt: (rn(5)(dt), rn(4, seed=1)(dt)), grad=True)
    case("cross", lambda L, a, b: L.linalg.cross(a, b), lambda dt: (rn(4, 3)(dt), rn(4, 3, seed=1)(dt)), grad=True)
    case("roll", lambda L, x: L.roll(x, (1, -2), (0, 1)), rn(4, 5), grad=True)
    case("flip", lambda L, x: x.flip(0, 1), rn(4, 5), grad=True)
    case("rot90", lambda L, x: L.rot90(x, 3, (0, 1)), rn(4, 5), grad=True)
    case("repeat_interleave t", lambda L, x: L.repeat_interleave(x, L.tensor([1, 0, 3, 2]), dim=0), rn(4, 5), grad=True)
    case("bincount f16 weights", lambda L, x, w: L.bincount((x.abs() * 3).to(L.int64), w), lambda dt: (rn(50)(torch.float32), rn(50, seed=4)(dt)))
    case("histc 16", lambda L, x: L.histc(x, 10, -2, 2), rn(1000))


def _float64_prod_cases():
    D = ["float64", "float32"]
    for n in (1, 3, 15, 16, 17, 20, 33, 47, 64, 100, 257):
        case(f"prod row {n}", lambda L, x: L.prod(x, 1), rn(3, n, scale=1.1), dtypes=D, grad=True)
        case(f"prod col {n}", lambda L, x: L.prod(x, 0), rn(n, 3, scale=1.1), dtypes=D, grad=True)
        case(f"prod T {n}", lambda L, x: L.prod(x.t(), 1), rn(n, 3, scale=1.1), dtypes=D, grad=True)
        case(f"prod all {n}", lambda L, x: x.prod(), rn(n, scale=1.1), dtypes=D, grad=True)
        case(f"prod all 2d {n}", lambda L, x: x.prod(), rn(3, n, scale=1.1), dtypes=D)
    case("prod big 1d", lambda L, x: x.prod(), rn(40000, scale=1.0001), dtypes=D)
    case("prod 3d mid", lambda L, x: x.prod(1), rn(3, 40, 5, scale=1.1), dtypes=D)


def _var_std_cases():
    H = ["bfloat16", "float16"]
    case("var", lambda L, x: L.var(x, 1), rn(4, 50), dtypes=H, grad=True)
    case("std", lambda L, x: x.std(1), rn(4, 50), dtypes=H, grad=True)
    case("var all", lambda L, x: x.var(), rn(4, 50), dtypes=H, grad=True)
    case("std corr0 keep", lambda L, x: L.std(x, 0, correction=0, keepdim=True), rn(40, 5), dtypes=H, grad=True)
    case("var_mean var only", lambda L, x: L.var_mean(x, 1)[0], rn(4, 50), dtypes=H, grad=True)
    case("var_mean mean only", lambda L, x: L.var_mean(x, 1)[1], rn(4, 50), dtypes=H, grad=True)
    case("std_mean std only", lambda L, x: L.std_mean(x, 1)[0], rn(4, 50), dtypes=H, grad=True)
    case("var_mean both", lambda L, x: L.var_mean(x, 1), rn(4, 50), dtypes=H, grad=True)


def _grid_sample_outside_cases():
    H = ["bfloat16", "float16", "float32", "float64"]
    for pad in ("zeros", "border", "reflection"):
        for ac in (False, True):
            case(f"grid_sample3d {pad} {ac}", lambda L, x, g, pad=pad, ac=ac: L.nn.functional.grid_sample(x, g, padding_mode=pad, align_corners=ac),
                 lambda dt: (rn(1, 2, 3, 4, 5)(dt), rn(1, 2, 3, 4, 3, seed=5)(dt) * 1.2), dtypes=H)
            case(f"grid_sample2d far {pad} {ac}", lambda L, x, g, pad=pad, ac=ac: L.nn.functional.grid_sample(x, g, padding_mode=pad, align_corners=ac),
                 lambda dt: (rn(2, 3, 5, 7)(dt), rn(2, 4, 6, 2, seed=5)(dt) * 2.5), dtypes=H)


def _embedding_bag_samples_cases():
    ALL = ["float32", "float64", "bfloat16", "float16"]
    idx = lambda L: L.tensor([0, 2, 1, 2, 4, 0, 3, 3])
    offs = lambda L: L.tensor([0, 3, 3, 5])
    for d in (4, 16, 37, 130):
        case(f"embedding_bag psw {d}", lambda L, w, p: F(L).embedding_bag(idx(L), w, offs(L), mode="sum", per_sample_weights=p), lambda dt, d=d: (rn(5, d)(dt), rn(8, seed=2)(dt)), grad=True)
        case(f"embedding_bag psw pad {d}", lambda L, w, p: F(L).embedding_bag(idx(L), w, offs(L), mode="sum", per_sample_weights=p, padding_idx=2), lambda dt, d=d: (rn(5, d)(dt), rn(8, seed=2)(dt)), grad=True)
        case(f"EmbeddingBag 2d psw {d}", lambda L, w, p: F(L).embedding_bag(idx(L).reshape(2, 4), w, per_sample_weights=p.reshape(2, 4)), lambda dt, d=d: (rn(5, d)(dt), rn(8, seed=2)(dt)), grad=True)


def _integer_and_bool_dtypes_cases():
    F32 = ["float32"]
    I = lambda L, x, dt: (x * 3).to(getattr(L, dt))
    for dt in ("int64", "int32", "uint8", "int8", "bool"):
        case(f"interp nearest {dt}", lambda L, x, dt=dt: F(L).interpolate(I(L, x, dt), scale_factor=2), rn(1, 2, 3, 4), dtypes=F32)
        case(f"interp bilinear {dt}", lambda L, x, dt=dt: F(L).interpolate(I(L, x, dt), scale_factor=2, mode="bilinear"), rn(1, 2, 3, 4), dtypes=F32)
        case(f"pad reflect {dt}", lambda L, x, dt=dt: F(L).pad(I(L, x, dt), (1, 1), mode="reflect"), rn(1, 2, 4), dtypes=F32)
        case(f"pad replicate {dt}", lambda L, x, dt=dt: F(L).pad(I(L, x, dt), (1, 1), mode="replicate"), rn(1, 2, 4), dtypes=F32)
        case(f"pad circular {dt}", lambda L, x, dt=dt: F(L).pad(I(L, x, dt), (1, 1), mode="circular"), rn(1, 2, 4), dtypes=F32)
        case(f"cumprod {dt}", lambda L, x, dt=dt: L.cumprod(I(L, x, dt), 0), rn(6), dtypes=F32)
        case(f"logcumsumexp {dt}", lambda L, x, dt=dt: L.logcumsumexp(I(L, x, dt), 0), rn(6), dtypes=F32)
        case(f"cummax {dt}", lambda L, x, dt=dt: L.cummax(I(L, x, dt), 0), rn(6), dtypes=F32)
        case(f"sort {dt}", lambda L, x, dt=dt: L.sort(I(L, x, dt)), rn(20), dtypes=F32)
        case(f"topk {dt}", lambda L, x, dt=dt: L.topk(I(L, x, dt), 3), rn(20), dtypes=F32)
        case(f"kthvalue {dt}", lambda L, x, dt=dt: L.kthvalue(I(L, x, dt), 3), rn(20), dtypes=F32)
        case(f"median {dt}", lambda L, x, dt=dt: L.median(I(L, x, dt)), rn(20), dtypes=F32)
        case(f"mode {dt}", lambda L, x, dt=dt: L.mode(I(L, x, dt)), rn(20), dtypes=F32)
        case(f"histc {dt}", lambda L, x, dt=dt: L.histc(I(L, x, dt), 4), rn(20), dtypes=F32)
        case(f"bucketize {dt}", lambda L, x, dt=dt: L.bucketize(I(L, x, dt), L.tensor([0, 1, 2])), rn(20), dtypes=F32)
        case(f"searchsorted f seq {dt}", lambda L, x, dt=dt: L.searchsorted(L.tensor([0.5, 1.5, 2.5]), I(L, x, dt)), rn(20), dtypes=F32)
        case(f"scatter_reduce mean {dt}", lambda L, x, dt=dt: L.zeros(3, dtype=getattr(L, dt)).scatter_reduce(0, L.tensor([0, 1, 0, 2, 0]), I(L, x, dt), "mean"), rn(5), dtypes=F32)
        case(f"index_add {dt}", lambda L, x, dt=dt: L.zeros(3, dtype=getattr(L, dt)).index_add(0, L.tensor([0, 1, 0, 2, 0]), I(L, x, dt), alpha=2), rn(5), dtypes=F32)
        case(f"clamp {dt}", lambda L, x, dt=dt: L.clamp(I(L, x, dt), 0, 2), rn(20), dtypes=F32)
        case(f"lerp {dt}", lambda L, x, dt=dt: L.lerp(I(L, x, dt), I(L, x, dt), 0.5), rn(20), dtypes=F32)
        case(f"addcmul {dt}", lambda L, x, dt=dt: L.addcmul(I(L, x, dt), I(L, x, dt), I(L, x, dt), value=2), rn(20), dtypes=F32)
        case(f"cdist {dt}", lambda L, x, dt=dt: L.cdist(I(L, x, dt), I(L, x, dt)), rn(4, 3), dtypes=F32)
        case(f"unique_consecutive {dt}", lambda L, x, dt=dt: L.unique_consecutive(I(L, x, dt), return_counts=True), rn(20), dtypes=F32)
        case(f"diff {dt}", lambda L, x, dt=dt: L.diff(I(L, x, dt)), rn(20), dtypes=F32)
        case(f"pow scalar {dt}", lambda L, x, dt=dt: I(L, x, dt) ** 2, rn(20), dtypes=F32)
        case(f"pow 0 {dt}", lambda L, x, dt=dt: I(L, x, dt) ** 0, rn(20), dtypes=F32)
        case(f"cosine_similarity {dt}", lambda L, x, dt=dt: F(L).cosine_similarity(I(L, x, dt), I(L, x, dt)), rn(4, 3), dtypes=F32)
        case(f"pixel_shuffle {dt}", lambda L, x, dt=dt: F(L).pixel_shuffle(I(L, x, dt), 2), rn(1, 4, 2, 2), dtypes=F32)
        case(f"unfold {dt}", lambda L, x, dt=dt: F(L).unfold(I(L, x, dt), 2), rn(1, 2, 3, 3), dtypes=F32)
        case(f"embedding_bag {dt}", lambda L, x, dt=dt: F(L).embedding_bag(L.tensor([[0, 1]]), I(L, x, dt)), rn(3, 2), dtypes=F32)
        case(f"grid_sample {dt}", lambda L, x, dt=dt: F(L).grid_sample(I(L, x, dt), L.zeros(1, 2, 2, 2), align_corners=False), rn(1, 1, 3, 3), dtypes=F32)


def _index_select_repeat_interleave_cases():
    H = ["bfloat16", "float16", "float32"]
    i200 = lambda L: L.tensor([i % 3 for i in range(200)])
    case("index_select dup 2d0", lambda L, x: L.index_select(x, 0, i200(L)), rn(3, 5), dtypes=H, grad=True)
    case("index_select dup 2d1", lambda L, x: x.index_select(1, i200(L)), rn(5, 3), dtypes=H, grad=True)
    case("index_select dup 3d1", lambda L, x: x.index_select(1, i200(L)), rn(2, 3, 4), dtypes=H, grad=True)
    case("index_select dup 1d", lambda L, x: x.index_select(0, i200(L)), rn(3), dtypes=H, grad=True)
    case("index_select i32", lambda L, x: x.index_select(0, i200(L).int()), rn(3, 5), dtypes=H, grad=True)
    case("repeat_interleave t", lambda L, x: L.repeat_interleave(x, L.tensor([1, 0, 3, 2]), dim=0), rn(4, 5), dtypes=H, grad=True)
    case("repeat_interleave int", lambda L, x: x.repeat_interleave(7, dim=1), rn(4, 5), dtypes=H, grad=True)
    case("repeat_interleave flat", lambda L, x: x.repeat_interleave(30), rn(4, 5), dtypes=H, grad=True)
    ALL = ["bfloat16", "float16", "float32", "float64"]
    case("repeat_interleave 0", lambda L, x: x.repeat_interleave(0, dim=1), rn(4, 5), dtypes=ALL, grad=True)
    case("repeat_interleave 0d", lambda L, x: x[0, 0].repeat_interleave(3), rn(4, 5), dtypes=ALL, grad=True)
    case("repeat_interleave 3d", lambda L, x: L.repeat_interleave(x, 4, dim=-1), rn(2, 3, 4), dtypes=ALL, grad=True)
    case("repeat_interleave os", lambda L, x: L.repeat_interleave(x, 2, dim=0, output_size=8), rn(4, 5), dtypes=ALL, grad=True)
    case("repeat_interleave T", lambda L, x: x.t().repeat_interleave(3, dim=0), rn(4, 5), dtypes=ALL, grad=True)
    case("repeat_interleave int dt", lambda L, x: (x * 3).to(L.int64).repeat_interleave(2), rn(4, 5), dtypes=["float32"])


for _cases in (_cumulative_and_sorting_cases, _scatter_index_search_histograms_cases, _index_add_cases, _scatter_and_index_reduce_with_zeros_cases, _resampling_padding_distances_cases, _adaptive_pooling_cases, _cdist_by_products_cases, _padding_16bit_cases, _clamp_where_promotion_lerp_addc_cases, _addcmul_addcdiv_values_cases, _bags_reductions_misc_cases, _float64_prod_cases, _var_std_cases, _grid_sample_outside_cases, _embedding_bag_samples_cases, _integer_and_bool_dtypes_cases, _index_select_repeat_interleave_cases):
    _cases()


def main(parts):
    warnings.simplefilter("ignore")
    differing = compared = 0
    for name, call, make, dtypes, grad in CASES:
        if parts and not any(part in name for part in parts):
            continue
        for dtype in dtypes:
            compared += 1
            try:
                lines = compare(name, call, make, dtype, grad)
            except Exception:  # noqa: BLE001  (the inputs could not be made)
                lines = ["inputs: " + traceback.format_exc().splitlines()[-1]]
            differing += bool(lines)
            for line in lines:
                print(f"{name:40s} {dtype:9s} {line}", flush=True)
    print(f"{differing} of {compared} (case, dtype) forms differ")


if __name__ == "__main__":
    main(sys.argv[1:])
