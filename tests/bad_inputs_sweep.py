"""The round-21 sweep of bad inputs over ``minilora.nn.functional`` against ``torch.nn.functional`` (a script, ~5 min).

    python tests/bad_inputs_sweep.py                 # every F name shared with torch
    python tests/bad_inputs_sweep.py dropout pad     # only these

Each shared name is called once as ``CALLS`` writes it (both libraries must accept that call), then with one thing
changed: each Tensor argument made a number, a list, None, an ndarray or a string, the first one made int64 or
bool, and each parameter with a default given a value of another type (a string for a float, 1.5 or "1" for an int,
"no" or None for a bool, "bogus" for a string option) or a bad dim, size or option. Each result is classed as
``same`` (torch's exception class, or both answer), ``diff`` (another class), ``torch-ok`` (minilora refuses what
torch takes) or ``WORST`` (minilora answers where torch raises: a silent divergence); all but ``same`` are printed,
then the counts. Round 21 started at {'same': 1302, 'diff': 484, 'WORST': 115, 'torch-ok': 15} and left
{'same': 1871, 'diff': 27, 'WORST': 3, 'torch-ok': 15}: the three are ``F.softmax(x, dim, dtype="float32")`` and its
two siblings, a NumPy dtype name minilora took everywhere (refused in torch's words since round 24:
tests/test_dtype_arguments_r24.py). tests/test_bad_inputs_r21.py keeps rows of what it found.
Round 31: {'same': 1872, 'WORST': 2, 'diff': 27, 'torch-ok': 15} -> {'same': 1877, 'diff': 24, 'torch-ok': 15} (the two:
F.bilinear of an int64 or bool input1; tests/test_bad_inputs_r31.py). Left: torch's NotImplementedError for a bool
convolution or grid_sample (minilora's dtype RuntimeError), torch accepting label_smoothing=-0.1, a bool mse_loss
input or fractional_max_pool's kernel_size=0.
"""
import collections
import inspect
import sys
import warnings

import numpy as np
import torch

import minilora as ml
warnings.simplefilter("ignore")



def X(L, *shape):
    """A float32 tensor of library ``L`` (minilora or torch) drawn from normal numbers, the same in both."""
    return L.tensor(np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32))


def I(L, values):
    """An integer tensor (targets, indices)."""
    return L.tensor(values)


def P(L, *shape):
    """Probabilities in (0.1, 0.9)."""
    return L.tensor(np.random.default_rng(1).uniform(0.1, 0.9, shape).astype(np.float32))


x4 = lambda L: X(L, 2, 3, 4, 5)
x3 = lambda L: X(L, 2, 3, 6)
x5 = lambda L: X(L, 1, 2, 4, 4, 4)
CALLS = {  # name -> lambda L: (args, kwargs)
 "adaptive_avg_pool1d": lambda L: ((x3(L), 2), {}),
 "adaptive_avg_pool2d": lambda L: ((x4(L), 2), {}),
 "adaptive_avg_pool3d": lambda L: ((x5(L), 2), {}),
 "adaptive_max_pool1d": lambda L: ((x3(L), 2), {}),
 "adaptive_max_pool2d": lambda L: ((x4(L), 2), {}),
 "adaptive_max_pool3d": lambda L: ((x5(L), 2), {}),
 "adaptive_max_pool1d_with_indices": lambda L: ((x3(L), 2), {}),
 "adaptive_max_pool2d_with_indices": lambda L: ((x4(L), 2), {}),
 "adaptive_max_pool3d_with_indices": lambda L: ((x5(L), 2), {}),
 "affine_grid": lambda L: ((X(L, 1, 2, 3), [1, 1, 3, 3]), {"align_corners": False}),
 "avg_pool1d": lambda L: ((x3(L), 2), {}),
 "avg_pool2d": lambda L: ((x4(L), 2), {}),
 "avg_pool3d": lambda L: ((x5(L), 2), {}),
 "lp_pool1d": lambda L: ((x3(L), 2, 2), {}),
 "lp_pool2d": lambda L: ((x4(L), 2, 2), {}),
 "lp_pool3d": lambda L: ((x5(L), 2, 2), {}),
 "max_pool1d": lambda L: ((x3(L), 2), {}),
 "max_pool2d": lambda L: ((x4(L), 2), {}),
 "max_pool3d": lambda L: ((x5(L), 2), {}),
 "max_pool1d_with_indices": lambda L: ((x3(L), 2), {}),
 "max_pool2d_with_indices": lambda L: ((x4(L), 2), {}),
 "max_pool3d_with_indices": lambda L: ((x5(L), 2), {}),
 "max_unpool1d": lambda L: (lambda o: ((o[0], o[1], 2), {}))(L.nn.functional.max_pool1d(x3(L), 2, return_indices=True)),
 "max_unpool2d": lambda L: (lambda o: ((o[0], o[1], 2), {}))(L.nn.functional.max_pool2d(x4(L), 2, return_indices=True)),
 "max_unpool3d": lambda L: (lambda o: ((o[0], o[1], 2), {}))(L.nn.functional.max_pool3d(x5(L), 2, return_indices=True)),
 "fractional_max_pool2d": lambda L: ((x4(L), 2), {"output_size": 2}),
 "fractional_max_pool3d": lambda L: ((x5(L), 2), {"output_size": 2}),
 "fractional_max_pool2d_with_indices": lambda L: ((x4(L), 2), {"output_size": 2}),
 "fractional_max_pool3d_with_indices": lambda L: ((x5(L), 2), {"output_size": 2}),
 "batch_norm": lambda L: ((x3(L), L.zeros(3), L.ones(3)), {}),
 "instance_norm": lambda L: ((x3(L),), {}),
 "group_norm": lambda L: ((X(L, 2, 4, 3), 2), {}),
 "layer_norm": lambda L: ((x3(L), [6]), {}),
 "rms_norm": lambda L: ((x3(L), [6]), {}),
 "local_response_norm": lambda L: ((x3(L), 2), {}),
 "bilinear": lambda L: ((X(L, 2, 3), X(L, 2, 4), X(L, 5, 3, 4)), {}),
 "linear": lambda L: ((X(L, 2, 3), X(L, 4, 3)), {}),
 "binary_cross_entropy": lambda L: ((P(L, 4), P(L, 4)), {}),
 "binary_cross_entropy_with_logits": lambda L: ((X(L, 4), P(L, 4)), {}),
 "cosine_embedding_loss": lambda L: ((X(L, 3, 4), X(L, 3, 5).narrow(1, 0, 4), L.tensor([1., -1., 1.])), {}),
 "margin_ranking_loss": lambda L: ((X(L, 4), X(L, 5)[:4], L.tensor([1., -1., 1., 1.])), {}),
 "triplet_margin_loss": lambda L: ((X(L, 3, 4), X(L, 3, 5)[:, :4], X(L, 3, 6)[:, :4]), {}),
 "triplet_margin_with_distance_loss": lambda L: ((X(L, 3, 4), X(L, 3, 5)[:, :4], X(L, 3, 6)[:, :4]), {}),
 "cross_entropy": lambda L: ((X(L, 3, 5), I(L, [0, 4, 2])), {}),
 "nll_loss": lambda L: ((X(L, 3, 5), I(L, [0, 4, 2])), {}),
 "multi_margin_loss": lambda L: ((X(L, 3, 5), I(L, [0, 4, 2])), {}),
 "multilabel_margin_loss": lambda L: ((X(L, 2, 4), I(L, [[0, 2, -1, 0], [1, -1, 0, 0]])), {}),
 "multilabel_soft_margin_loss": lambda L: ((X(L, 2, 4), L.tensor([[0., 1, 0, 1], [1, 0, 0, 1]])), {}),
 "ctc_loss": lambda L: ((X(L, 6, 2, 4).log_softmax(2), I(L, [[1, 2], [3, 1]]), I(L, [6, 5]), I(L, [2, 2])), {}),
 "gaussian_nll_loss": lambda L: ((X(L, 4), X(L, 5)[:4], P(L, 4)), {}),
 "hinge_embedding_loss": lambda L: ((X(L, 4), L.tensor([1., -1., 1., 1.])), {}),
 "huber_loss": lambda L: ((X(L, 4), X(L, 5)[:4]), {}),
 "smooth_l1_loss": lambda L: ((X(L, 4), X(L, 5)[:4]), {}),
 "l1_loss": lambda L: ((X(L, 4), X(L, 5)[:4]), {}),
 "mse_loss": lambda L: ((X(L, 4), X(L, 5)[:4]), {}),
 "soft_margin_loss": lambda L: ((X(L, 4), L.tensor([1., -1., 1., 1.])), {}),
 "kl_div": lambda L: ((X(L, 4).log_softmax(0), P(L, 4)), {"reduction": "batchmean"}),
 "poisson_nll_loss": lambda L: ((X(L, 4), P(L, 4)), {}),
 "conv1d": lambda L: ((x3(L), X(L, 4, 3, 2)), {}),
 "conv2d": lambda L: ((x4(L), X(L, 4, 3, 2, 2)), {}),
 "conv3d": lambda L: ((X(L, 1, 2, 4, 4, 4), X(L, 3, 2, 2, 2, 2)), {}),
 "conv_transpose1d": lambda L: ((x3(L), X(L, 3, 4, 2)), {}),
 "conv_transpose2d": lambda L: ((x4(L), X(L, 3, 4, 2, 2)), {}),
 "conv_transpose3d": lambda L: ((X(L, 1, 2, 4, 4, 4), X(L, 2, 3, 2, 2, 2)), {}),
 "conv_tbc": lambda L: ((X(L, 5, 2, 3), X(L, 2, 3, 4), X(L, 4)), {}),
 "cosine_similarity": lambda L: ((X(L, 3, 4), X(L, 3, 5)[:, :4]), {}),
 "pairwise_distance": lambda L: ((X(L, 3, 4), X(L, 3, 5)[:, :4]), {}),
 "pdist": lambda L: ((X(L, 3, 4),), {}),
 "embedding": lambda L: ((I(L, [0, 2, 1]), X(L, 4, 3)), {}),
 "embedding_bag": lambda L: ((I(L, [0, 2, 1, 3]), X(L, 4, 3), I(L, [0, 2])), {}),
 "fold": lambda L: ((X(L, 1, 12, 4), [3, 3], 2), {}),
 "unfold": lambda L: ((x4(L), 2), {}),
 "glu": lambda L: ((x3(L),), {}),
 "grid_sample": lambda L: ((x4(L), X(L, 2, 3, 3, 2).tanh()), {"align_corners": False}),
 "gumbel_softmax": lambda L: ((x3(L),), {}),
 "interpolate": lambda L: ((x4(L),), {"scale_factor": 2}),
 "upsample": lambda L: ((x4(L),), {"scale_factor": 2}),
 "upsample_bilinear": lambda L: ((x4(L),), {"scale_factor": 2}),
 "upsample_nearest": lambda L: ((x4(L),), {"scale_factor": 2}),
 "one_hot": lambda L: ((I(L, [0, 2, 1]),), {}),
 "pad": lambda L: ((x3(L), [1, 1]), {}),
 "pixel_shuffle": lambda L: ((X(L, 1, 4, 2, 2), 2), {}),
 "pixel_unshuffle": lambda L: ((X(L, 1, 1, 4, 4), 2), {}),
 "channel_shuffle": lambda L: ((X(L, 1, 4, 2, 2), 2), {}),
 "native_channel_shuffle": lambda L: ((X(L, 1, 4, 2, 2), 2), {}),
 "prelu": lambda L: ((x3(L), L.tensor([0.25])), {}),
 "threshold": lambda L: ((x3(L), 0.1, 2.0), {}),
 "threshold_": lambda L: ((x3(L), 0.1, 2.0), {}),
 "scaled_dot_product_attention": lambda L: ((X(L, 1, 2, 3, 4), X(L, 1, 2, 5, 4)[:, :, :3], X(L, 1, 2, 3, 6)[..., :4]), {}),
 "linear_cross_entropy": lambda L: ((X(L, 3, 4), X(L, 5, 4), I(L, [0, 4, 2])), {}),
 "normalize": lambda L: ((x3(L),), {}),
 "softmax": lambda L: ((x3(L),), {"dim": 1}),
 "softmin": lambda L: ((x3(L),), {"dim": 1}),
 "log_softmax": lambda L: ((x3(L),), {"dim": 1}),
 "multi_head_attention_forward": None,
 "dropout": lambda L: ((x3(L), 0.0), {}),
 "dropout1d": lambda L: ((x3(L), 0.0), {}),
 "dropout2d": lambda L: ((x4(L), 0.0), {}),
 "dropout3d": lambda L: ((x5(L), 0.0), {}),
 "alpha_dropout": lambda L: ((x3(L), 0.0), {}),
 "feature_alpha_dropout": lambda L: ((x3(L), 0.0), {}),
}
DEFAULT = lambda L: ((x3(L),), {})

def outcome(fn):
    try:
        r = fn()
        return ("OK", None)
    except Exception as e:
        return (type(e).__name__, str(e).split("\n")[0][:110])

def mutations(name, sig, args, kwargs):
    """The changed calls: (label, where: a position or a keyword, bad(L) -> the value put there, None)."""
    out = []
    tensor_pos = [i for i, a in enumerate(args) if hasattr(a, "shape") and hasattr(a, "dtype")]
    for i in tensor_pos:
        for bad_label, bad in [("int", lambda L: 3), ("list", lambda L: [1.0, 2.0]), ("None", lambda L: None),
                               ("ndarray", lambda L: np.ones((2, 3, 6), np.float32)), ("str", lambda L: "abc")]:
            out.append((f"arg{i}={bad_label}", i, bad, None))
    if tensor_pos and tensor_pos[0] == 0:
        out.append(("arg0 int64", 0, lambda L: "int64", None))
        out.append(("arg0 bool", 0, lambda L: "bool", None))
    params = sig.parameters if sig else {}
    for key, bads in [("dim", [10, 1.5, "a"]), ("reduction", ["avg", "MEAN", None]), ("mode", ["bogus"]),
                      ("padding_mode", ["bogus"]), ("approximate", ["bogus"]), ("p", [-0.5, 1.5]),
                      ("output_size", [-1, 1.5]), ("normalized_shape", [[-1], [1.5]]), ("kernel_size", [-1, 1.5, 0]),
                      ("stride", [0, -1, 1.5]), ("padding", [-1, 1.5]), ("dilation", [0, 1.5]),
                      ("num_groups", [0, 1.5, 5]), ("size", [-1, 1.5]), ("scale_factor", [-1.0, 0]),
                      ("eps", ["a"]), ("num_classes", [-2, 1.5]), ("groups", [0, 1.5, -1]), ("upscale_factor", [0, 1.5]),
                      ("downscale_factor", [0, 1.5]), ("negative_slope", ["a"]), ("alpha", ["a"]), ("margin", ["a"]),
                      ("ignore_index", [1.5]), ("label_smoothing", [-0.1, 1.5]), ("training", ["no"]), ("inplace", ["no"]),
                      ("align_corners", ["no"]), ("pad", [[1], [1.5, 1]]), ("value", ["a"]), ("tau", ["a"]),
                      ("blank", [-1, 1.5]), ("beta", ["a"]), ("delta", [-1.0]), ("momentum", ["a"]), ("dtype", ["float32"])]:
        if key in params:
            for b in bads:
                out.append((f"{key}={b!r}", key, (lambda b: lambda L: b)(b), None))
    seen = {o[0] for o in out}
    for key, p in params.items():
        d = p.default
        if d is inspect.Parameter.empty or key.startswith("_") or key in ("size_average", "reduce"):
            continue
        if type(d) is float: bads = ["0.5"]
        elif type(d) is int: bads = [1.5, "1"]
        elif type(d) is bool: bads = ["no", None]
        elif type(d) is str: bads = ["bogus"]
        else: continue
        for b in bads:
            label = f"{key}={b!r}"
            if label not in seen:
                out.append((label, key, (lambda b: lambda L: b)(b), None))
    return out

def sig_of(name):
    for mod in (torch.nn.functional, ml.nn.functional):
        try:
            s = inspect.signature(getattr(mod, name))
            if any(p.kind == p.VAR_POSITIONAL for p in s.parameters.values()):
                continue
            if len(s.parameters) > 0: return s
        except Exception:
            pass
    return None

def call(L, name, build, mut):
    args, kwargs = build(L)
    args = list(args); kwargs = dict(kwargs)
    label, where, bad, _ = mut
    v = bad(L)
    if isinstance(where, int):
        if v in ("int64", "bool"):
            args[where] = args[where].to(getattr(L, v)) if v != "int64" else (args[where] * 3).to(L.int64)
        else:
            args[where] = v
    else:
        sig = sig_of(name)
        names = list(sig.parameters)
        pos = names.index(where)
        if pos < len(args): args[pos] = v
        else: kwargs[where] = v
    return getattr(L.nn.functional, name)(*args, **kwargs)

names = sorted(n for n in dir(ml.nn.functional) if not n.startswith("_") and hasattr(torch.nn.functional, n)
               and callable(getattr(ml.nn.functional, n)) and not inspect.isclass(getattr(ml.nn.functional, n)))
counts = collections.Counter()
only = sys.argv[1:]
for name in names:
    if only and name not in only: continue
    build = CALLS.get(name, DEFAULT)
    if build is None: continue
    base = (outcome(lambda: getattr(ml.nn.functional, name)(*build(ml)[0], **build(ml)[1])),
            outcome(lambda: getattr(torch.nn.functional, name)(*build(torch)[0], **build(torch)[1])))
    if base[0][0] != "OK" or base[1][0] != "OK":
        print(f"BASEFAIL {name}: ml={base[0]} torch={base[1]}"); continue
    for mut in mutations(name, sig_of(name), *build(torch)):
        m = outcome(lambda: call(ml, name, build, mut))
        t = outcome(lambda: call(torch, name, build, mut))
        if m[0] == t[0]: cls = "same"
        elif m[0] == "OK": cls = "WORST"
        elif t[0] == "OK": cls = "torch-ok"
        else: cls = "diff"
        counts[cls] += 1
        if cls != "same":
            print(f"{cls:8} F.{name}({mut[0]}): ml={m} | torch={t}")
print(dict(counts))
