"""A sweep, not a test: the loss functions and normalisations as users call them (``F.cross_entropy(logits, labels,
label_smoothing=0.1)``, ``F.layer_norm(x, (L, D))``, ...), minilora against torch bit for bit: the values AND the
gradients (of ``sum(out * w)``, ``w`` a fixed draw, with respect to every input a user differentiates), in float32,
float64, bfloat16 and float16, on four layouts of the batched inputs: contiguous, strided (every other element of
the last dimension), broadcast-expanded (a batch of one expanded) and zero-size (a batch of none). A running
statistic a call updates is compared too. A call one library refuses and the other answers is reported (ACCEPTS:
minilora answers, REFUSES: minilora refuses).

    PYTHONPATH=. python tests/loss_norm_bits_sweep.py [--only NAME,...] [--dtypes float32,...] [--layouts ...]

Prints one line per differing (form, dtype, layout): which output or gradient, how many elements off of how many,
and the largest gap in ulps of the dtype.

Round 27 wrote it (torch 2.13.0+cpu, Sapphire Rapids, AVX-512, 2 threads). (form, dtype, layout) cases differing,
of 2944: 288 at the round's start (float32 18, float64 128, bfloat16 65, float16 77) -> 103 (0, 72, 8, 23); its
fixes are pinned in tests/test_loss_norm_bits_r27.py. Fixed: float64 softmax/log_softmax/cross_entropy (torch's
float32 kernels' template on Vectorized<double>: SLEEF's expd8_u10, 8 lanes added left to right), float64 layer_norm's
backward lanes, binary_cross_entropy's broadcast weight, 16-bit mse_loss and binary_cross_entropy as torch's kernels,
16-bit norms' backward (triplet_margin_loss), float32 batch norm of a sliced or expanded input (torch's
non-contiguous loops), instance_norm of a sliced input (torch normalises input.contiguous()), bfloat16 huber_loss of
an empty batch (ZeroDivisionError). Round 28 (tests/test_float64_norms_r28.py): float64 batch/instance/group norm as
torch's double kernels' orders, 103 -> 76 (float64 72 -> 45). Left: float64 binary_cross_entropy_with_logits and log_softmax along a dim other than the last
(SLEEF's log1pd8/logd8_u10, not ported: an ulp in a few elements), 16-bit batch norm of a sliced or expanded input
(torch's non-contiguous 16-bit loops), float16 huber/smooth_l1 and bfloat16 smooth_l1's mean (the kernels' scalar
tails, 1-8 elements). torch's ctc_loss refuses 16-bit log-probabilities, and so does minilora; ctc_loss matches in
float32 and float64.
"""
import argparse
import sys
import warnings

import numpy as np
import torch

import minilora as ml

N, C, D = 6, 5, 7  # batch, classes, features

# An input: (name, kind, shape, differentiated). Shapes name the batch "N" (laid out by the layout), other sizes
# are numbers. Kinds: x normal, logp log-probabilities over axis 1 (logp2: axis 2, logpl: the last axis), prob
# their exp, unit in (0.02, 0.98), y01 targets in [0, 1] (some exactly 0 and 1), pos in (0.1, 2), sign +-1, cls
# class indices in [0, shape's class count) (int64), len lengths (int64).
X = ("x", "x", ("N", C), True)
LABELS = ("y", "cls", ("N",), False)
CLASS_WEIGHT = ("w", "pos", (C,), False)


def _form(name, call, inputs):
    return name, call, inputs


def _reductions(name, call, inputs):
    """The form under reduction none, sum and mean."""
    return [_form(f"{name}/{r}", (lambda F, a, lib, r=r: call(F, a, lib, r)), inputs) for r in ("none", "sum", "mean")]


def _cross_entropy_forms():
    forms = []
    index_inputs = [X, LABELS, CLASS_WEIGHT]
    for extra, kwargs in (("", {}), ("weight", {"weight": "w"}), ("ignore", {"ignore_index": 1}),
                          ("smooth", {"label_smoothing": 0.1}), ("weight+ignore+smooth",
                                                                 {"weight": "w", "ignore_index": 1,
                                                                  "label_smoothing": 0.2})):
        forms += _reductions(f"cross_entropy[index,{extra}]", lambda F, a, lib, r, kw=kwargs: F.cross_entropy(
            a["x"], a["y"], reduction=r, **_resolve(kw, a)), index_inputs)
    prob_inputs = [X, ("y", "prob", ("N", C), False), CLASS_WEIGHT]
    for extra, kwargs in (("", {}), ("weight", {"weight": "w"}), ("smooth", {"label_smoothing": 0.1}),
                          ("weight+smooth", {"weight": "w", "label_smoothing": 0.3})):
        forms += _reductions(f"cross_entropy[prob,{extra}]", lambda F, a, lib, r, kw=kwargs: F.cross_entropy(
            a["x"], a["y"], reduction=r, **_resolve(kw, a)), prob_inputs)
    nd_index = [("x", "x", ("N", C, 3, 4), True), ("y", "cls", ("N", 3, 4), False), CLASS_WEIGHT]
    nd_prob = [("x", "x", ("N", C, 3, 4), True), ("y", "prob", ("N", C, 3, 4), False), CLASS_WEIGHT]
    for kind, inputs in (("index", nd_index), ("prob", nd_prob)):
        for extra, kwargs in (("", {}), ("weight+smooth", {"weight": "w", "label_smoothing": 0.1})):
            forms += _reductions(f"cross_entropy[{kind}-4d,{extra}]", lambda F, a, lib, r, kw=kwargs: F.cross_entropy(
                a["x"], a["y"], reduction=r, **_resolve(kw, a)), inputs)
    forms += _reductions("cross_entropy[index-4d,weight+ignore]", lambda F, a, lib, r: F.cross_entropy(
        a["x"], a["y"], weight=a["w"], ignore_index=2, reduction=r), nd_index)
    return forms


def _nll_forms():
    forms = []
    inputs = [("x", "logp", ("N", C), True), LABELS, CLASS_WEIGHT]
    nd = [("x", "logp", ("N", C, 3, 4), True), ("y", "cls", ("N", 3, 4), False), CLASS_WEIGHT]
    for extra, kwargs in (("", {}), ("weight", {"weight": "w"}), ("weight+ignore", {"weight": "w",
                                                                                     "ignore_index": 1})):
        for shape, ins in (("2d", inputs), ("4d", nd)):
            forms += _reductions(f"nll_loss[{shape},{extra}]", lambda F, a, lib, r, kw=kwargs: F.nll_loss(
                a["x"], a["y"], reduction=r, **_resolve(kw, a)), ins)
    return forms


def _kl_forms():
    forms = []
    for log_target in (False, True):
        inputs = [("x", "logpl", ("N", C), True), ("t", "logpl" if log_target else "prob", ("N", C), True)]
        for r in ("none", "sum", "mean", "batchmean"):
            forms.append(_form(f"kl_div[log_target={log_target}]/{r}", lambda F, a, lib, r=r, lt=log_target:
                               F.kl_div(a["x"], a["t"], reduction=r, log_target=lt), inputs))
    return forms


def _binary_forms():
    forms = []
    probs = [("x", "unit", ("N", C), True), ("t", "y01", ("N", C), False), ("w", "pos", ("N", C), False),
             ("wc", "pos", (C,), False)]
    forms += _reductions("binary_cross_entropy", lambda F, a, lib, r: F.binary_cross_entropy(
        a["x"], a["t"], reduction=r), probs)
    forms += _reductions("binary_cross_entropy[weight]", lambda F, a, lib, r: F.binary_cross_entropy(
        a["x"], a["t"], weight=a["w"], reduction=r), probs)
    forms += _reductions("binary_cross_entropy[broadcast weight]", lambda F, a, lib, r: F.binary_cross_entropy(
        a["x"], a["t"], weight=a["wc"], reduction=r), probs)
    logits = [X, ("t", "y01", ("N", C), True), ("w", "pos", ("N", C), False), ("pw", "pos", (C,), False)]
    for extra, kwargs in (("", {}), ("weight", {"weight": "w"}), ("pos_weight", {"pos_weight": "pw"}),
                          ("weight+pos_weight", {"weight": "w", "pos_weight": "pw"})):
        forms += _reductions(f"binary_cross_entropy_with_logits[{extra}]", lambda F, a, lib, r, kw=kwargs:
                             F.binary_cross_entropy_with_logits(a["x"], a["t"], reduction=r, **_resolve(kw, a)),
                             logits)
    return forms


def _regression_forms():
    forms = []
    pair = [X, ("t", "x", ("N", C), True)]
    forms += _reductions("mse_loss", lambda F, a, lib, r: F.mse_loss(a["x"], a["t"], reduction=r), pair)
    forms += _reductions("l1_loss", lambda F, a, lib, r: F.l1_loss(a["x"], a["t"], reduction=r), pair)
    for beta in (1.0, 0.5, 0.0):
        forms += _reductions(f"smooth_l1_loss[beta={beta}]", lambda F, a, lib, r, b=beta: F.smooth_l1_loss(
            a["x"], a["t"], reduction=r, beta=b), pair)
    for delta in (1.0, 0.5, 2.0):
        forms += _reductions(f"huber_loss[delta={delta}]", lambda F, a, lib, r, d=delta: F.huber_loss(
            a["x"], a["t"], reduction=r, delta=d), pair)
    # (a target of another shape: torch broadcasts with a warning)
    forms += _reductions("mse_loss[broadcast target]", lambda F, a, lib, r: F.mse_loss(
        a["x"], a["t"][:1], reduction=r), pair)
    return forms


def _embedding_forms():
    forms = []
    vectors = [("a", "x", ("N", D), True), ("b", "x", ("N", D), True), ("c", "x", ("N", D), True),
               ("y", "sign", ("N",), False)]
    for margin in (0.0, 0.2):
        forms += _reductions(f"cosine_embedding_loss[margin={margin}]", lambda F, a, lib, r, m=margin:
                             F.cosine_embedding_loss(a["a"], a["b"], a["y"], margin=m, reduction=r), vectors)
    scalars = [("a", "x", ("N",), True), ("b", "x", ("N",), True), ("y", "sign", ("N",), False)]
    for margin in (0.0, 0.3):
        forms += _reductions(f"margin_ranking_loss[margin={margin}]", lambda F, a, lib, r, m=margin:
                             F.margin_ranking_loss(a["a"], a["b"], a["y"], margin=m, reduction=r), scalars)
    for p, swap in ((2, False), (1, False), (2, True), (3, False)):
        forms += _reductions(f"triplet_margin_loss[p={p},swap={swap}]", lambda F, a, lib, r, p=p, s=swap:
                             F.triplet_margin_loss(a["a"], a["b"], a["c"], margin=0.5, p=p, swap=s, reduction=r),
                             vectors)
    return forms


def _likelihood_forms():
    forms = []
    counts = [X, ("t", "pos", ("N", C), False)]
    for log_input, full in ((True, False), (False, False), (True, True), (False, True)):
        forms += _reductions(f"poisson_nll_loss[log_input={log_input},full={full}]",
                             lambda F, a, lib, r, li=log_input, fu=full: F.poisson_nll_loss(
                                 a["x"] if li else a["x"].abs(), a["t"], log_input=li, full=fu, reduction=r), counts)
    gauss = [X, ("t", "x", ("N", C), True), ("v", "pos", ("N", C), True), ("v1", "pos", ("N", 1), True)]
    for full in (False, True):
        forms += _reductions(f"gaussian_nll_loss[full={full}]", lambda F, a, lib, r, fu=full: F.gaussian_nll_loss(
            a["x"], a["t"], a["v"], full=fu, reduction=r), gauss)
    forms += _reductions("gaussian_nll_loss[var (N, 1)]", lambda F, a, lib, r: F.gaussian_nll_loss(
        a["x"], a["t"], a["v1"], reduction=r), gauss)
    return forms


def _ctc_forms():
    forms = []
    inputs = [("lp", "logp2", (12, "N", C), True), ("y", "cls1", ("N", 4), False)]

    def ctc(F, a, lib, r, zero_infinity=False):
        n = a["lp"].shape[1]
        lengths = lib.tensor([12 - (i % 3) for i in range(n)], dtype=lib.int64)
        targets = lib.tensor([4 - (i % 2) * 2 for i in range(n)], dtype=lib.int64)
        return F.ctc_loss(a["lp"], a["y"], lengths, targets, reduction=r, zero_infinity=zero_infinity)
    forms += _reductions("ctc_loss", ctc, inputs)
    forms += _reductions("ctc_loss[zero_infinity]", lambda F, a, lib, r: ctc(F, a, lib, r, True), inputs)
    return forms


def _norm_forms():
    forms = []
    seq = [("x", "x", ("N", 3, D), True), ("w", "pos", (D,), True), ("b", "x", (D,), True),
           ("w2", "pos", (3, D), True), ("b2", "x", (3, D), True)]
    forms.append(_form("layer_norm[(D,)]", lambda F, a, lib: F.layer_norm(a["x"], (D,)), seq))
    forms.append(_form("layer_norm[(D,),affine]", lambda F, a, lib: F.layer_norm(a["x"], (D,), a["w"], a["b"]), seq))
    forms.append(_form("layer_norm[(3, D),affine,eps=1e-3]", lambda F, a, lib: F.layer_norm(
        a["x"], (3, D), a["w2"], a["b2"], eps=1e-3), seq))
    forms.append(_form("rms_norm[(D,),eps=None]", lambda F, a, lib: F.rms_norm(a["x"], (D,)), seq))
    forms.append(_form("rms_norm[(D,),weight,eps=None]", lambda F, a, lib: F.rms_norm(a["x"], (D,), a["w"]), seq))
    forms.append(_form("rms_norm[(3, D),weight,eps=1e-3]", lambda F, a, lib: F.rms_norm(
        a["x"], (3, D), a["w2"], eps=1e-3), seq))
    maps = [("x", "x", ("N", 4, 3, 5), True), ("w", "pos", (4,), True), ("b", "x", (4,), True)]
    for training in (True, False):
        for momentum in (0.1, None):
            forms.append(_form(f"batch_norm[training={training},momentum={momentum}]",
                               lambda F, a, lib, t=training, m=momentum: _batch_norm(F, a, lib, t, m), maps))
    forms.append(_form("batch_norm[training,no running stats]", lambda F, a, lib: F.batch_norm(
        a["x"], None, None, a["w"], a["b"], training=True), maps))
    forms.append(_form("instance_norm", lambda F, a, lib: F.instance_norm(a["x"]), maps))
    forms.append(_form("instance_norm[affine]", lambda F, a, lib: F.instance_norm(
        a["x"], weight=a["w"], bias=a["b"]), maps))
    forms.append(_form("instance_norm[running stats]", lambda F, a, lib: _instance_norm_running(F, a, lib), maps))
    forms.append(_form("group_norm[2 groups]", lambda F, a, lib: F.group_norm(a["x"], 2), maps))
    forms.append(_form("group_norm[4 groups,affine]", lambda F, a, lib: F.group_norm(
        a["x"], 4, a["w"], a["b"]), maps))
    forms.append(_form("group_norm[1 group,affine,eps=1e-3]", lambda F, a, lib: F.group_norm(
        a["x"], 1, a["w"], a["b"], eps=1e-3), maps))
    return forms


def _running_stats(lib, x, channels):
    """Running statistics in the input's dtype (a 16-bit module's buffers), or float32 beside a 16-bit input when the
    parameters are (torch's mixed kernels)."""
    mean = lib.tensor(np.linspace(-0.5, 0.5, channels)).to(x.dtype)
    var = lib.tensor(np.linspace(0.5, 1.5, channels)).to(x.dtype)
    return mean, var


def _batch_norm(F, a, lib, training, momentum):
    mean, var = _running_stats(lib, a["x"], a["x"].shape[1])
    out = F.batch_norm(a["x"], mean, var, a["w"], a["b"], training=training, momentum=momentum)
    return out, mean, var


def _instance_norm_running(F, a, lib):
    mean, var = _running_stats(lib, a["x"], a["x"].shape[1])
    out = F.instance_norm(a["x"], mean, var, a["w"], a["b"], use_input_stats=True, momentum=0.2)
    return out, mean, var


def all_forms():
    return (_cross_entropy_forms() + _nll_forms() + _kl_forms() + _binary_forms() + _regression_forms()
            + _embedding_forms() + _likelihood_forms() + _ctc_forms() + _norm_forms())


def _resolve(kwargs, inputs):
    """Keyword arguments whose string values name an input."""
    return {k: inputs[v] if isinstance(v, str) else v for k, v in kwargs.items()}


# ---- the inputs ---------------------------------------------------------------------------------------------------
def _values(kind, shape, rng):
    if kind in ("x", "logp", "logp2", "logpl", "prob"):
        x = rng.standard_normal(shape) * 2
        if kind == "x":
            return x
        axis = {"logp": 1, "logp2": 2}.get(kind, -1)
        if kind == "prob":
            axis = 1 if len(shape) > 1 else -1
        logp = x - np.log(np.exp(x).sum(axis=axis, keepdims=True))
        return np.exp(logp) if kind == "prob" else logp
    if kind == "unit":
        return rng.uniform(0.02, 0.98, shape)
    if kind == "y01":
        return np.clip(rng.uniform(-0.2, 1.2, shape), 0, 1)
    if kind == "pos":
        return rng.uniform(0.1, 2.0, shape)
    if kind == "sign":
        return rng.choice([-1.0, 1.0], shape)
    if kind == "cls":
        return rng.integers(0, C, shape)
    if kind == "cls1":  # (CTC's labels: the blank 0 is not one)
        return rng.integers(1, C, shape)
    raise ValueError(kind)


def _shape(shape, n):
    return tuple(n if s == "N" else s for s in shape)


def build_inputs(inputs, dtype, layout, seed=0):
    """{name: (minilora tensor, torch tensor, minilora leaf or None, torch leaf or None)} for one dtype and layout."""
    rng = np.random.default_rng(seed)
    built = {}
    for name, kind, shape, differentiated in inputs:
        batched = "N" in shape
        n = 0 if (layout == "zero-size" and batched) else (1 if layout == "expanded" and batched else N)
        full = _shape(shape, n)
        if layout == "strided" and batched:
            full = full[:-1] + (2 * full[-1],)
        array = _values(kind, full, rng)
        built[name] = tuple(_tensor(lib, array, kind, dtype, differentiated, shape, layout if batched else "")
                            for lib in (ml, torch))
    return built


def _tensor(lib, array, kind, dtype, differentiated, shape, layout):
    if kind.startswith("cls"):
        return lib.tensor(np.ascontiguousarray(array), dtype=lib.int64), None
    leaf = lib.tensor(array).to(getattr(lib, dtype))
    if differentiated:
        leaf.requires_grad_()
    t = leaf
    if layout == "strided":
        t = leaf[..., ::2]
    elif layout == "expanded":
        t = leaf.expand(_shape(shape, N))
    return t, (leaf if differentiated else None)


# ---- running and comparing ----------------------------------------------------------------------------------------
def run(lib, call, built, side):
    args = {name: pair[side][0] for name, pair in built.items()}
    leaves = [pair[side][1] for pair in built.values() if pair[side][1] is not None]
    F = lib.nn.functional
    out = call(F, args, lib)
    outs = list(out) if isinstance(out, tuple) else [out]
    values = [_numpy(o) for o in outs]
    grads = []
    differentiable = [o for o in outs if o.requires_grad]
    if differentiable and leaves:
        rng = np.random.default_rng(7)
        total = None
        for o in differentiable:
            w = lib.tensor(rng.standard_normal(tuple(o.shape))).to(o.dtype)
            term = (o * w).sum()
            total = term if total is None else total + term
        grads = [None if g is None else _numpy(g) for g in lib.autograd.grad(total, leaves, allow_unused=True)]
    return values, grads


def _numpy(t):
    t = t.detach()
    if str(t.dtype).endswith("bfloat16"):
        return t.float().numpy()  # (bfloat16 -> float32 is exact)
    return np.array(t.numpy())


def _off(a, b, dtype):
    """(elements off, of how many, the largest gap in ulps of dtype among finite ones)."""
    if a is None or b is None:
        return (0 if a is None and b is None else -1), 0, 0
    if a.shape != b.shape:
        return -1, b.size, 0
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    off = ~((a == b) & (np.signbit(a) == np.signbit(b)) | (np.isnan(a) & np.isnan(b)))
    finite = off & np.isfinite(a) & np.isfinite(b)
    gap = 0
    if finite.any():
        kind = np.float32 if dtype == "bfloat16" else getattr(np, dtype)
        magnitude = np.maximum(np.abs(b[finite]), np.finfo(kind).tiny).astype(kind)  # (no ulp of 0: a subnormal's)
        ulp = np.spacing(magnitude).astype(np.float64) * (65536 if dtype == "bfloat16" else 1)
        gap = float(np.max(np.abs(a[finite] - b[finite]) / np.maximum(ulp, 1e-300)))
    return int(off.sum()), a.size, gap


def compare(name, call, inputs, dtype, layout):
    """A list of the differences, or [] when every bit is torch's."""
    built = build_inputs(inputs, dtype, layout)
    results = []
    for side, lib in ((1, torch), (0, ml)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results.append(run(lib, call, built, side))
        except Exception as e:  # noqa: BLE001  (a refusal, compared below)
            results.append(e)
    theirs, mine = results
    if isinstance(theirs, Exception) or isinstance(mine, Exception):
        if isinstance(theirs, Exception) and isinstance(mine, Exception):
            return []
        if isinstance(mine, Exception):
            return [f"REFUSES ({type(mine).__name__}: {str(mine).splitlines()[0][:100]})"]
        return [f"ACCEPTS (torch: {type(theirs).__name__}: {str(theirs).splitlines()[0][:100]})"]
    found = []
    for kind, m_list, t_list in (("out", mine[0], theirs[0]), ("grad", mine[1], theirs[1])):
        if len(m_list) != len(t_list):
            found.append(f"{kind}: {len(m_list)} tensors, torch {len(t_list)}")
            continue
        for i, (m, t) in enumerate(zip(m_list, t_list)):
            off, total, gap = _off(m, t, dtype)
            if off:
                found.append(f"{kind}{i}: {off}/{total} off, up to {gap:.3g} ulps")
    return found


DTYPES = ["float32", "float64", "bfloat16", "float16"]
LAYOUTS = ["contiguous", "strided", "expanded", "zero-size"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated prefixes of form names")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    args = parser.parse_args(argv)
    prefixes = [p for p in args.only.split(",") if p]
    forms = [f for f in all_forms() if not prefixes or any(f[0].startswith(p) for p in prefixes)]
    compared = differing = 0
    for name, call, inputs in forms:
        for dtype in args.dtypes.split(","):
            for layout in args.layouts.split(","):
                compared += 1
                found = compare(name, call, inputs, dtype, layout)
                if found:
                    differing += 1
                    print(f"{name:52s} {dtype:8s} {layout:10s} " + "; ".join(found), flush=True)
    print(f"{differing} of {compared} (form, dtype, layout) differ", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
