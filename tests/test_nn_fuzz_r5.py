"""A seeded differential fuzzer for torch.nn layers and F.* functions (round 5).

tests/test_fuzz_r5.py draws tensor ops; this file draws layers: for every layer minilora.nn has it
draws constructor arguments (positional or by keyword; conv stride / padding int, tuple, "same",
"valid" / dilation / groups / padding_mode; pooling ceil_mode, count_include_pad, divisor_override,
return_indices; norms' affine, eps, momentum incl. None, track_running_stats, train or eval; RNNs'
layers, directions, batch_first, proj_size, h0/c0; attention masks; losses' reduction, weight,
ignore_index, label_smoothing, pos_weight ...) and inputs (batched, batch 1, unbatched; float64,
float32 and, where torch's CPU kernels take them, float16/bfloat16; transposed or sliced views).
The torch layer's initial state_dict is loaded into minilora's, and the two are compared on:
the outputs, the gradients of the float64 inputs and parameters, the state_dict after a forward
(running stats, Embedding's max_norm renormalisation), the state_dict keys, repr, and the error
family when torch refuses the configuration or the input. The F.* forms are drawn the same way.

Seeds are fixed (``SEEDS``); ``MINILORA_FUZZ_SEEDS=N`` runs N seeds per layer for a longer hunt.
The divergences found are minimized into ``REGRESSIONS`` at the end.
"""
import os
import warnings

import numpy as np
import pytest

import minilora as ml
from test_fuzz_r5 import In, _as_record, _builtin_type, _flat, _thunk_outcome, difference

torch = pytest.importorskip("torch")

SEEDS = range(int(os.environ.get("MINILORA_FUZZ_SEEDS", "20")))
TOLERANCE = {"float64": 1e-8, "float32": 2e-4, "float16": 1e-2, "bfloat16": 6e-2}
LOW = ["float16", "bfloat16"]
INVALID = 0.08  # how often a layer's int argument is drawn 0 or -1 (then any error will do, if torch's does)


class Fn:
    """A function argument (an activation passed as a callable), resolved in each library."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"F.{self.name}"


class Sub:
    """A module argument (TransformerEncoder's encoder_layer), built in each library."""

    def __init__(self, name, *args, **kwargs):
        self.name, self.args, self.kwargs = name, args, kwargs

    def __repr__(self):
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"nn.{self.name}({', '.join(shown)})"


def _resolve(lib, value, built):
    if isinstance(value, Sub):
        return getattr(lib.nn, value.name)(*[_resolve(lib, a, built) for a in value.args],
                                           **{k: _resolve(lib, v, built) for k, v in value.kwargs.items()})
    if isinstance(value, In):
        return built[id(value)][1]
    if isinstance(value, Fn):
        return getattr(lib.nn.functional, value.name)
    if isinstance(value, DTypeName):
        return getattr(lib, str(value))
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(lib, v, built) for v in value)
    return value


def _tensors(values):
    found = []
    for v in values:
        if isinstance(v, In):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found += _tensors(v)
    return found


# ----------------------------------------------------------------------------------------------------
# draws

def floats(rng, shape, dtype="float64", view=True):
    """A float input with distinct values (no ties: max pooling's gradient has one winner)."""
    size = int(np.prod(shape))
    values = np.round(rng.standard_normal(shape) * 64) / 64
    values = values + rng.permutation(max(1, size))[:size].reshape(shape) / 4096  # (each a distinct offset)
    kind = "plain"
    if view and len(shape) >= 2 and rng.random() < 0.3:
        kind = str(rng.choice(["transposed", "sliced"]))
    return In(np.asarray(values, dtype=np.float64), dtype, kind)


def ints(rng, shape, low, high):
    return In(np.asarray(rng.integers(low, high, shape)), "int64")


def constant(item):
    """An input no gradient is asked of (a loss's class weights: torch's nll_loss refuses one)."""
    if item is not None:
        item.constant = True
    return item


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


def maybe_tuple(rng, value, rank):
    """``value`` as an int or as a tuple of ``rank`` (possibly differing) entries."""
    if rank > 1 and rng.random() < 0.4:
        return tuple(max(0, value + int(rng.integers(-1, 2))) if value else 0 for _ in range(rank))
    return value


def batch_shape(rng, allow_unbatched=True):
    """() for an unbatched input, else (N,) with N 1..3."""
    if allow_unbatched and rng.random() < 0.2:
        return ()
    return (int(rng.integers(1, 4)),)


def float_dtype(rng, low=True):
    """float64 mostly (gradients are compared there), float32, and 16-bit where the layer has kernels."""
    r = rng.random()
    if r < 0.65:
        return "float64"
    if r < 0.85 or not low:
        return "float32"
    return pick(rng, LOW)


class Case:
    """A layer (or an F.* function) with its constructor arguments, inputs and forward keywords."""

    def __init__(self, name, args=(), kwargs=None, inputs=(), call_kwargs=None, train=True, dtype="float64",
                 functional=False):
        self.name, self.args, self.kwargs = name, tuple(args), dict(kwargs or {})
        self.inputs, self.call_kwargs = tuple(inputs), dict(call_kwargs or {})
        self.train, self.dtype, self.functional = train, dtype, functional

    def __repr__(self):
        ctor = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()])
        call = ", ".join([repr(a) for a in self.inputs] + [f"{k}={v!r}" for k, v in self.call_kwargs.items()])
        if self.functional:
            return f"F.{self.name}({ctor})"
        mode = "train" if self.train else "eval"
        return f"nn.{self.name}({ctor}).to({self.dtype}).{mode}()({call})"


def layer(name, args, kwargs_names, rng, **extra):
    """Case with ``args`` passed positionally up to a random point and by keyword after it; now and
    then one int argument is made 0 or negative (torch refuses most: so must minilora)."""
    numbers = [i for i, a in enumerate(args) if type(a) is int]
    invalid = bool(numbers) and rng.random() < INVALID
    if invalid:
        args = list(args)
        args[pick(rng, numbers)] = pick(rng, [0, -1])
        args = tuple(args)
    cut = int(rng.integers(0, len(args) + 1))
    while cut < len(args) and kwargs_names[cut] is None:  # (positional-only in torch)
        cut += 1
    kwargs = {n: v for n, v in zip(kwargs_names[cut:], args[cut:])}
    case = Case(name, args[:cut], kwargs, **extra)
    case.invalid = invalid
    return case


def draw_linear(rng):
    dtype = float_dtype(rng)
    n_in, n_out = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    shape = pick(rng, [(), (2,), (2, 3)]) + (n_in,)
    return layer("Linear", (n_in, n_out, bool(rng.random() < 0.7)), ("in_features", "out_features", "bias"),
                 rng, inputs=[floats(rng, shape, dtype)], dtype=dtype, train=True)


def draw_bilinear(rng):
    dtype = float_dtype(rng, low=False)
    a, b, c = (int(rng.integers(1, 4)) for _ in range(3))
    batch = pick(rng, [(), (2,), (1,)])
    return layer("Bilinear", (a, b, c, bool(rng.random() < 0.7)), ("in1_features", "in2_features",
                 "out_features", "bias"), rng, inputs=[floats(rng, batch + (a,), dtype),
                                                       floats(rng, batch + (b,), dtype)], dtype=dtype)


def _conv_common(rng, rank):
    groups = pick(rng, [1, 1, 2])
    c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    kernel = maybe_tuple(rng, int(rng.integers(1, 4)), rank)
    stride = maybe_tuple(rng, int(rng.integers(1, 3)), rank)
    dilation = maybe_tuple(rng, int(rng.integers(1, 3)), rank) if rng.random() < 0.4 else 1
    dilation = tuple(max(1, d) for d in dilation) if isinstance(dilation, tuple) else max(1, dilation)
    stride = tuple(max(1, s) for s in stride) if isinstance(stride, tuple) else max(1, stride)
    kernel = tuple(max(1, k) for k in kernel) if isinstance(kernel, tuple) else max(1, kernel)
    return groups, c_in, c_out, kernel, stride, dilation


def draw_conv(rank):
    def draw(rng):
        dtype = float_dtype(rng)
        groups, c_in, c_out, kernel, stride, dilation = _conv_common(rng, rank)
        padding = pick(rng, [0, 1, maybe_tuple(rng, 1, rank), "same", "valid", 2])
        if padding == "same" and rng.random() < 0.8:
            stride = 1
        mode = pick(rng, ["zeros", "zeros", "reflect", "replicate", "circular"])
        spatial = tuple(int(rng.integers(3, 7)) for _ in range(rank))
        x = floats(rng, batch_shape(rng) + (c_in,) + spatial, dtype)
        args = (c_in, c_out, kernel, stride, padding, dilation, groups, bool(rng.random() < 0.7), mode)
        names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "bias", "padding_mode")
        return layer(f"Conv{rank}d", args, names, rng, inputs=[x], dtype=dtype)
    return draw


def draw_conv_transpose(rank):
    def draw(rng):
        dtype = float_dtype(rng)
        groups, c_in, c_out, kernel, stride, dilation = _conv_common(rng, rank)
        padding = pick(rng, [0, 1, maybe_tuple(rng, 1, rank)])
        out_pad = 0 if rng.random() < 0.6 else pick(rng, [1, maybe_tuple(rng, 1, rank)])
        spatial = tuple(int(rng.integers(2, 5)) for _ in range(rank))
        x = floats(rng, batch_shape(rng) + (c_in,) + spatial, dtype)
        args = (c_in, c_out, kernel, stride, padding, out_pad, groups, bool(rng.random() < 0.7), dilation)
        names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding", "groups",
                 "bias", "dilation")
        return layer(f"ConvTranspose{rank}d", args, names, rng, inputs=[x], dtype=dtype)
    return draw


def _pool_input(rng, rank, dtype, channels=None):
    channels = channels or int(rng.integers(1, 3))
    spatial = tuple(int(rng.integers(2, 7)) for _ in range(rank))
    return floats(rng, batch_shape(rng) + (channels,) + spatial, dtype)


def draw_max_pool(rank):
    def draw(rng):
        dtype = float_dtype(rng)
        kernel = int(rng.integers(1, 4))
        stride = pick(rng, [None, 1, 2, maybe_tuple(rng, 2, rank)])
        padding = int(rng.integers(0, kernel // 2 + 1))
        dilation = pick(rng, [1, 1, 2])
        args = (maybe_tuple(rng, kernel, rank), stride, padding, dilation, bool(rng.random() < 0.3),
                bool(rng.random() < 0.4))
        names = ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")
        return layer(f"MaxPool{rank}d", args, names, rng, inputs=[_pool_input(rng, rank, dtype)], dtype=dtype)
    return draw


def draw_avg_pool(rank):
    def draw(rng):
        dtype = float_dtype(rng)
        kernel = int(rng.integers(1, 4))
        stride = pick(rng, [None, 1, 2])
        padding = int(rng.integers(0, kernel // 2 + 1))
        args = [maybe_tuple(rng, kernel, rank), stride, padding, bool(rng.random() < 0.4),
                bool(rng.random() < 0.6)]
        names = ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"]
        if rank == 2:
            args.append(pick(rng, [None, None, 1, 3]))
            names.append("divisor_override")
        return layer(f"AvgPool{rank}d", args, names, rng, inputs=[_pool_input(rng, rank, dtype)], dtype=dtype)
    return draw


def draw_lp_pool(rank):
    def draw(rng):
        dtype = float_dtype(rng, low=False)
        kernel = int(rng.integers(1, 4))
        args = (pick(rng, [1, 2, 3.0]), maybe_tuple(rng, kernel, rank), pick(rng, [None, 1, 2]),
                bool(rng.random() < 0.4))
        x = _pool_input(rng, rank, dtype)
        x.values = np.abs(x.values) + 0.25  # (torch's p-th root of a sum: positive inputs keep it smooth)
        return layer(f"LPPool{rank}d", args, ("norm_type", "kernel_size", "stride", "ceil_mode"), rng,
                     inputs=[x], dtype=dtype)
    return draw


def draw_adaptive(kind, rank):
    def draw(rng):
        dtype = float_dtype(rng)
        size = int(rng.integers(1, 5))
        if rank == 2 and rng.random() < 0.4:
            size = (int(rng.integers(1, 5)), pick(rng, [None, 2, 3]))
        args, names = [size], ["output_size"]
        if kind == "Max":
            args.append(bool(rng.random() < 0.4))
            names.append("return_indices")
        return layer(f"Adaptive{kind}Pool{rank}d", args, names, rng, inputs=[_pool_input(rng, rank, dtype)],
                     dtype=dtype)
    return draw


def draw_batch_norm(rank):
    def draw(rng):
        dtype = float_dtype(rng)
        c = int(rng.integers(1, 4))
        args = (c, pick(rng, [1e-5, 1e-3]), pick(rng, [0.1, None, 0.3]), bool(rng.random() < 0.7),
                bool(rng.random() < 0.7))
        spatial = {1: pick(rng, [(), (3,)]), 2: (2, 3), 3: (2, 2, 2)}[rank]
        x = floats(rng, (int(rng.integers(2, 4)), c) + spatial, dtype)
        return layer(f"BatchNorm{rank}d", args, ("num_features", "eps", "momentum", "affine",
                     "track_running_stats"), rng, inputs=[x], dtype=dtype, train=bool(rng.random() < 0.6))
    return draw


def draw_instance_norm(rank):
    def draw(rng):
        dtype = float_dtype(rng)
        c = int(rng.integers(1, 4))
        args = (c, pick(rng, [1e-5, 1e-3]), pick(rng, [0.1, None]), bool(rng.random() < 0.4),
                bool(rng.random() < 0.4))
        spatial = {1: (4,), 2: (2, 3), 3: (2, 2, 2)}[rank]
        x = floats(rng, batch_shape(rng) + (c,) + spatial, dtype)
        return layer(f"InstanceNorm{rank}d", args, ("num_features", "eps", "momentum", "affine",
                     "track_running_stats"), rng, inputs=[x], dtype=dtype, train=bool(rng.random() < 0.6))
    return draw


def draw_layer_norm(rng):
    dtype = float_dtype(rng)
    shape = tuple(int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 4))))
    k = int(rng.integers(1, len(shape) + 1))
    normalized = shape[-k:] if rng.random() < 0.7 or k > 1 else shape[-1]
    args = (normalized, pick(rng, [1e-5, 1e-2]), bool(rng.random() < 0.7), bool(rng.random() < 0.7))
    return layer("LayerNorm", args, ("normalized_shape", "eps", "elementwise_affine", "bias"), rng,
                 inputs=[floats(rng, shape, dtype)], dtype=dtype)


def draw_rms_norm(rng):
    dtype = float_dtype(rng)
    shape = tuple(int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 4))))
    k = int(rng.integers(1, len(shape) + 1))
    normalized = shape[-k:] if rng.random() < 0.7 or k > 1 else shape[-1]
    args = (normalized, pick(rng, [None, 1e-6, 1e-2]), bool(rng.random() < 0.7))
    return layer("RMSNorm", args, ("normalized_shape", "eps", "elementwise_affine"), rng,
                 inputs=[floats(rng, shape, dtype)], dtype=dtype)


def draw_group_norm(rng):
    dtype = float_dtype(rng)
    groups = int(rng.integers(1, 3))
    c = groups * int(rng.integers(1, 3)) + (1 if rng.random() < 0.1 else 0)
    shape = (int(rng.integers(1, 3)), c) + pick(rng, [(), (3,), (2, 2)])
    args = (groups, c, pick(rng, [1e-5, 1e-2]), bool(rng.random() < 0.7))
    return layer("GroupNorm", args, ("num_groups", "num_channels", "eps", "affine"), rng,
                 inputs=[floats(rng, shape, dtype)], dtype=dtype)


def draw_local_response_norm(rng):
    dtype = float_dtype(rng, low=False)
    args = (int(rng.integers(1, 4)), pick(rng, [1e-4, 0.5]), pick(rng, [0.75, 1.0]), pick(rng, [1.0, 2.0]))
    x = floats(rng, (2, int(rng.integers(1, 5))) + pick(rng, [(3,), (2, 2)]), dtype)
    return layer("LocalResponseNorm", args, ("size", "alpha", "beta", "k"), rng, inputs=[x], dtype=dtype)


def draw_embedding(rng):
    num, dim = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    padding_idx = pick(rng, [None, None, 0, 1, -1])
    max_norm = pick(rng, [None, None, 1.0, 0.5])
    args = (num, dim, padding_idx, max_norm, pick(rng, [2.0, 1.0]), bool(rng.random() < 0.3),
            bool(rng.random() < 0.05))
    names = ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
             "sparse")
    index = ints(rng, pick(rng, [(), (3,), (2, 3)]), 0, num)
    return layer("Embedding", args, names, rng, inputs=[index], dtype=pick(rng, ["float64", "float64", "float32"]))


def draw_embedding_bag(rng):
    num, dim = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    mode = pick(rng, ["mean", "sum", "max"])
    args = [num, dim, None, 2.0, False, mode, False, False, pick(rng, [None, None, 0])]
    names = ["num_embeddings", "embedding_dim", "max_norm", "norm_type", "scale_grad_by_freq", "mode", "sparse",
             "include_last_offset", "padding_idx"]
    weights = mode == "sum" and rng.random() < 0.4
    if rng.random() < 0.5:
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        inputs, kwargs = [ints(rng, shape, 0, num)], {}
    else:
        n = int(rng.integers(1, 6))
        shape = (n,)
        offsets = sorted(set([0] + list(rng.integers(0, n + 1, int(rng.integers(0, 3))))))
        args[7] = bool(rng.random() < 0.3)
        if args[7] and len(offsets) < 2:  # (torch crashes, a segfault, on include_last_offset with no bag)
            offsets.append(n)
        inputs, kwargs = [ints(rng, shape, 0, num)], {"offsets": In(np.array(offsets), "int64")}
    if weights:
        kwargs["per_sample_weights"] = floats(rng, shape, view=False)
    return layer("EmbeddingBag", args, names, rng, inputs=inputs, call_kwargs=kwargs)


def draw_rnn(kind):
    def draw(rng):
        dtype = pick(rng, ["float64", "float64", "float32"])
        n_in, hidden = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        layers, bidirectional = int(rng.integers(1, 3)), bool(rng.random() < 0.4)
        batch_first, bias = bool(rng.random() < 0.4), bool(rng.random() < 0.8)
        args = [n_in, hidden, layers]
        names = ["input_size", "hidden_size", "num_layers"]
        if kind == "RNN":
            args.append(pick(rng, ["tanh", "relu"]))
            names.append("nonlinearity")
        args += [bias, batch_first, 0.0, bidirectional]
        names += ["bias", "batch_first", "dropout", "bidirectional"]
        proj = 0
        if kind == "LSTM" and rng.random() < 0.3:
            proj = int(rng.integers(1, hidden + 1))
            args.append(proj)
            names.append("proj_size")
        seq, batch = int(rng.integers(1, 4)), batch_shape(rng)
        shape = (seq,) + batch + (n_in,)
        if batch_first and batch:
            shape = batch + (seq, n_in)
        inputs = [floats(rng, shape, dtype)]
        if rng.random() < 0.4:
            dirs = (2 if bidirectional else 1) * layers
            h = floats(rng, (dirs,) + batch + (proj or hidden,), dtype, view=False)
            if kind == "LSTM":
                h = (h, floats(rng, (dirs,) + batch + (hidden,), dtype, view=False))
            inputs.append(h)
        return Case(kind, args[:3], dict(zip(names[3:], args[3:])), inputs=inputs, dtype=dtype)
    return draw


def draw_cell(kind):
    def draw(rng):
        dtype = pick(rng, ["float64", "float64", "float32"])
        n_in, hidden = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        args, names = [n_in, hidden, bool(rng.random() < 0.8)], ["input_size", "hidden_size", "bias"]
        if kind == "RNNCell":
            args.append(pick(rng, ["tanh", "relu"]))
            names.append("nonlinearity")
        batch = batch_shape(rng)
        inputs = [floats(rng, batch + (n_in,), dtype)]
        if rng.random() < 0.5:
            h = floats(rng, batch + (hidden,), dtype)
            inputs.append((h, floats(rng, batch + (hidden,), dtype)) if kind == "LSTMCell" else h)
        return layer(kind, args, names, rng, inputs=inputs, dtype=dtype)
    return draw


def _mask(rng, shape, kind):
    if kind == "bool":
        values = rng.random(shape) < 0.3
        values[..., 0] = False  # (a row with every key masked is nan in both; keep rows finite)
        return In(values, "bool")
    values = np.where(rng.random(shape) < 0.3, -np.inf if rng.random() < 0.5 else -2.0, 0.0)
    values[..., 0] = 0.0
    return constant(In(values, "float64"))


def draw_mha(rng):
    dtype = pick(rng, ["float64", "float64", "float32"])
    heads = int(rng.integers(1, 3))
    embed = heads * int(rng.integers(1, 3))
    kdim = pick(rng, [None, None, embed + 1])
    vdim = pick(rng, [None, kdim, 2]) if kdim else None
    args = (embed, heads, 0.0, bool(rng.random() < 0.8), bool(rng.random() < 0.3), bool(rng.random() < 0.3),
            kdim, vdim, bool(rng.random() < 0.5))
    names = ("embed_dim", "num_heads", "dropout", "bias", "add_bias_kv", "add_zero_attn", "kdim", "vdim",
             "batch_first")
    batch_first = args[-1]
    n, L, S = batch_shape(rng), int(rng.integers(1, 4)), int(rng.integers(1, 4))

    def seq(length, width):
        shape = (n + (length,) if batch_first else (length,) + n) + (width,)
        return floats(rng, shape, dtype)
    q = seq(L, embed)
    k, v = (q, q) if not kdim and rng.random() < 0.3 else (seq(S, kdim or embed), seq(S, vdim or embed))
    S = k.values.shape[-2] if batch_first and n else k.values.shape[0]
    kwargs = {"need_weights": bool(rng.random() < 0.6), "average_attn_weights": bool(rng.random() < 0.6)}
    if rng.random() < 0.3:
        kwargs["key_padding_mask"] = _mask(rng, n + (S,), pick(rng, ["bool", "float"]))
    if rng.random() < 0.4:
        kwargs["attn_mask"] = _mask(rng, pick(rng, [(L, S), ((n[0] if n else 1) * heads, L, S)]),
                                    pick(rng, ["bool", "float"]))
    if rng.random() < 0.15:
        kwargs["is_causal"] = True
    if "float" in str([getattr(m, "dtype", "") for m in kwargs.values()]) and dtype == "float32":
        for key in ("key_padding_mask", "attn_mask"):
            if key in kwargs and kwargs[key].dtype == "float64":
                kwargs[key].dtype = "float32"
    return layer("MultiheadAttention", args, names, rng, inputs=[q, k, v], call_kwargs=kwargs, dtype=dtype,
                 train=bool(rng.random() < 0.5))


def draw_transformer_layer(kind):
    def draw(rng):
        dtype = "float64"
        heads = int(rng.integers(1, 3))
        d = heads * int(rng.integers(1, 3))
        activation = pick(rng, ["relu", "gelu", Fn("gelu"), Fn("relu")])
        args = (d, heads, int(rng.integers(1, 5)), 0.0, activation, pick(rng, [1e-5, 1e-3]),
                bool(rng.random() < 0.5), bool(rng.random() < 0.5), bool(rng.random() < 0.8))
        names = ("d_model", "nhead", "dim_feedforward", "dropout", "activation", "layer_norm_eps", "batch_first",
                 "norm_first", "bias")
        batch_first = args[6]
        n, L = batch_shape(rng), int(rng.integers(1, 4))
        shape = (n + (L,) if batch_first else (L,) + n) + (d,)
        inputs = [floats(rng, shape, dtype)]
        kwargs = {}
        if kind == "TransformerDecoderLayer":
            S = int(rng.integers(1, 4))
            inputs.append(floats(rng, (n + (S,) if batch_first else (S,) + n) + (d,), dtype))
            if rng.random() < 0.4:
                kwargs["tgt_mask"] = _mask(rng, (L, L), "float")
            if rng.random() < 0.3 and n:
                kwargs["memory_key_padding_mask"] = _mask(rng, n + (S,), "bool")
        else:
            if rng.random() < 0.4:
                kwargs["src_mask"] = _mask(rng, (L, L), pick(rng, ["bool", "float"]))
            if rng.random() < 0.3 and n:
                kwargs["src_key_padding_mask"] = _mask(rng, n + (L,), "bool")
            if "src_mask" in kwargs and rng.random() < 0.3:
                kwargs["is_causal"] = True
        return layer(kind, args, names, rng, inputs=inputs, call_kwargs=kwargs, dtype=dtype,
                     train=bool(rng.random() < 0.5))
    return draw


def draw_transformer_stack(kind):
    def draw(rng):
        heads = int(rng.integers(1, 3))
        d = heads * int(rng.integers(1, 3))
        batch_first, norm_first = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        n, L, S = batch_shape(rng), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        seq = lambda length: floats(rng, (n + (length,) if batch_first else (length,) + n) + (d,))  # noqa: E731
        common = {"dim_feedforward": int(rng.integers(1, 5)), "dropout": 0.0, "batch_first": batch_first,
                  "norm_first": norm_first, "activation": pick(rng, ["relu", "gelu", Fn("gelu")])}
        norm = Sub("LayerNorm", d) if rng.random() < 0.5 else None
        layers = int(rng.integers(1, 3))
        train = bool(rng.random() < 0.5)
        if kind == "Transformer":
            args = (d, heads, layers, int(rng.integers(1, 3)), common["dim_feedforward"], 0.0,
                    common["activation"], None, None, 1e-5, batch_first, norm_first)
            names = ("d_model", "nhead", "num_encoder_layers", "num_decoder_layers", "dim_feedforward", "dropout",
                     "activation", "custom_encoder", "custom_decoder", "layer_norm_eps", "batch_first",
                     "norm_first")
            kwargs = {"tgt_mask": _mask(rng, (L, L), "float")} if rng.random() < 0.4 else {}
            return layer(kind, args, names, rng, inputs=[seq(S), seq(L)], call_kwargs=kwargs, train=train)
        if kind == "TransformerEncoder":
            args = (Sub("TransformerEncoderLayer", d, heads, **common), layers, norm, False)
            kwargs = {"mask": _mask(rng, (L, L), pick(rng, ["bool", "float"]))} if rng.random() < 0.4 else {}
            if n and rng.random() < 0.3:
                kwargs["src_key_padding_mask"] = _mask(rng, n + (L,), "bool")
            return layer(kind, args, ("encoder_layer", "num_layers", "norm", "enable_nested_tensor"), rng,
                         inputs=[seq(L)], call_kwargs=kwargs, train=train)
        args = (Sub("TransformerDecoderLayer", d, heads, **common), layers, norm)
        kwargs = {"tgt_mask": _mask(rng, (L, L), "float")} if rng.random() < 0.4 else {}
        return layer(kind, args, ("decoder_layer", "num_layers", "norm"), rng, inputs=[seq(L), seq(S)],
                     call_kwargs=kwargs, train=train)
    return draw


def draw_dropout(name):
    """Deterministic dropouts: eval mode (identity), or p 0 / 1 in training; p outside [0, 1] refused."""
    def draw(rng):
        train = bool(rng.random() < 0.5)
        p = pick(rng, [0.0, 1.0, 0.5, 1.5]) if not train else pick(rng, [0.0, 1.0, -0.1])
        if name in ("AlphaDropout", "FeatureAlphaDropout") and train:
            p = 0.0
        shape = {"Dropout1d": pick(rng, [(2, 3), (2, 3, 4)]), "Dropout2d": (2, 3, 2, 2),
                 "Dropout3d": (1, 2, 2, 2, 2)}.get(name, pick(rng, [(3,), (2, 3)]))
        if name == "FeatureAlphaDropout":
            shape = (2, 3, 2)
        return Case(name, (p,), inputs=[floats(rng, shape)], train=train)
    return draw


def draw_rrelu(rng):
    lower, upper = pick(rng, [(0.125, 1 / 3), (0.1, 0.3), (0.2, 0.2)])
    return Case("RReLU", (lower, upper), inputs=[floats(rng, pick(rng, [(3,), (2, 3)]))], train=False)


def draw_max_unpool(rank):
    def draw(rng):
        kernel, stride = int(rng.integers(1, 4)), pick(rng, [None, 1, 2])
        padding = int(rng.integers(0, kernel // 2 + 1))
        x = _pool_input(rng, rank, "float64")
        pool = getattr(torch.nn.functional, f"max_pool{rank}d")
        try:
            pooled, indices = pool(torch.tensor(x.values), kernel, stride, padding, return_indices=True)
        except RuntimeError:
            pooled, indices = torch.tensor(x.values), torch.zeros(x.values.shape, dtype=torch.int64)
        args = (kernel, stride, padding)
        kwargs = {"output_size": x.values.shape[-rank:]} if rng.random() < 0.3 else {}
        return layer(f"MaxUnpool{rank}d", args, ("kernel_size", "stride", "padding"), rng,
                     inputs=[In(pooled.numpy(), "float64"), In(indices.numpy(), "int64")], call_kwargs=kwargs)
    return draw


def draw_flatten(rng):
    shape = tuple(int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 5))))
    start, end = int(rng.integers(-len(shape), len(shape))), int(rng.integers(-len(shape), len(shape)))
    return layer("Flatten", (start, end), ("start_dim", "end_dim"), rng, inputs=[floats(rng, shape)])


def draw_unflatten(rng):
    shape = (2, 6, 3)
    dim = pick(rng, [1, -2])
    sizes = pick(rng, [(2, 3), (3, -1), (6,), (1, 6), (4, 2)])
    return layer("Unflatten", (dim, sizes), ("dim", "unflattened_size"), rng, inputs=[floats(rng, shape)])


def draw_upsample(rng):
    dtype = float_dtype(rng)
    rank = int(rng.integers(1, 3))
    modes = {1: ["nearest", "linear", "nearest-exact"], 2: ["nearest", "bilinear", "bicubic", "nearest-exact"]}
    mode = pick(rng, modes[rank])
    x = _pool_input(rng, rank, dtype)
    if rng.random() < 0.5:
        size, scale = pick(rng, [int(rng.integers(1, 7)), tuple(int(rng.integers(1, 7)) for _ in range(rank))]), None
    else:
        size, scale = None, pick(rng, [2, 1.5, 0.5, 2.0, tuple(pick(rng, [1.5, 2.0, 0.7]) for _ in range(rank))])
    align = None if mode in ("nearest", "nearest-exact") or rng.random() < 0.3 else bool(rng.random() < 0.5)
    return layer("Upsample", (size, scale, mode, align), ("size", "scale_factor", "mode", "align_corners"), rng,
                 inputs=[x], dtype=dtype)


def draw_pixel_shuffle(rng):
    r = int(rng.integers(1, 3))
    if rng.random() < 0.5:
        x = floats(rng, batch_shape(rng) + (r * r * int(rng.integers(1, 3)), 2, 3))
        return Case("PixelShuffle", (r,), inputs=[x])
    x = floats(rng, batch_shape(rng) + (int(rng.integers(1, 3)), 2 * r, r))
    return Case("PixelUnshuffle", (), {"downscale_factor": r}, inputs=[x])


def draw_unfold(rng):
    kernel = maybe_tuple(rng, int(rng.integers(1, 3)), 2)
    args = (kernel, pick(rng, [1, 2]), pick(rng, [0, 1]), pick(rng, [1, 2]))
    x = floats(rng, batch_shape(rng) + (int(rng.integers(1, 3)), 4, 5))
    return layer("Unfold", args, ("kernel_size", "dilation", "padding", "stride"), rng, inputs=[x])


def draw_fold(rng):
    out = (int(rng.integers(2, 5)), int(rng.integers(2, 5)))
    kernel, dilation, padding, stride = int(rng.integers(1, 3)), pick(rng, [1, 2]), pick(rng, [0, 1]), pick(rng, [1, 2])
    blocks = [(o + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for o in out]
    c = int(rng.integers(1, 3))
    x = floats(rng, batch_shape(rng) + (c * kernel * kernel, max(0, blocks[0] * blocks[1])))
    return layer("Fold", (out, kernel, dilation, padding, stride),
                 ("output_size", "kernel_size", "dilation", "padding", "stride"), rng, inputs=[x])


def draw_pad(rng):
    rank = int(rng.integers(1, 3))
    kind = pick(rng, ["Constant", "Zero", "Reflection", "Replication", "Circular"])
    amount = pick(rng, [1, tuple(int(rng.integers(0, 3)) for _ in range(2 * rank))])
    x = _pool_input(rng, rank, "float64")
    x.values = x.values[..., :] if min(x.values.shape[-rank:]) > 2 else np.repeat(x.values, 3, axis=-1)
    args, names = (amount,), ("padding",)
    if kind == "Constant":
        args, names = (amount, 0.5), ("padding", "value")
    return layer(f"{kind}Pad{rank}d", args, names, rng, inputs=[x])


ACTIVATIONS = {"ReLU": (), "ReLU6": (), "Sigmoid": (), "Tanh": (), "SiLU": (), "Mish": (), "Softsign": (),
               "Tanhshrink": (), "LogSigmoid": (), "SELU": (), "Hardswish": (), "Hardsigmoid": (),
               "Identity": (), "GELU": (("approximate", ["none", "tanh"]),),
               "ELU": (("alpha", [1.0, 0.5]),), "CELU": (("alpha", [1.0, 2.0]),),
               "LeakyReLU": (("negative_slope", [0.01, 0.2]),), "Hardtanh": (("min_val", [-1.0, -0.5]),
                                                                              ("max_val", [1.0, 2.0])),
               "Softplus": (("beta", [1.0, 2.0]), ("threshold", [20.0, 1.0])),
               "Threshold": (("threshold", [0.1, -0.5]), ("value", [0.0, 3.0])),
               "Hardshrink": (("lambd", [0.5, 0.2]),), "Softshrink": (("lambd", [0.5, 0.2]),),
               "Softmax": (("dim", [-1, 0, 1]),), "LogSoftmax": (("dim", [-1, 0, 1]),),
               "Softmin": (("dim", [-1, 0, 1]),), "GLU": (("dim", [-1, 0])),
               "PReLU": (("num_parameters", [1, 3]), ("init", [0.25, -0.1]))}


def draw_activation(name):
    def draw(rng):
        dtype = float_dtype(rng)
        spec = ACTIVATIONS[name]
        if spec and isinstance(spec[0], str):
            spec = (spec,)
        args = tuple(pick(rng, options) for _, options in spec)
        shape = pick(rng, [(3,), (2, 3), (2, 3, 2), (1, 4)])
        if name == "PReLU" and args[0] == 3:
            shape = pick(rng, [(2, 3), (1, 3, 2), (3,)])
        return layer(name, args, tuple(n for n, _ in spec), rng, inputs=[floats(rng, shape, dtype)], dtype=dtype)
    return draw


def draw_softmax2d(rng):
    return Case("Softmax2d", inputs=[floats(rng, batch_shape(rng) + (3, 2, 2))])


def draw_distance(name):
    def draw(rng):
        shape = pick(rng, [(2, 3), (3,), (1, 3)])
        other = shape if rng.random() < 0.7 else (1,) + shape[-1:]
        if name == "CosineSimilarity":
            args, names = (pick(rng, [1, -1, 0]), pick(rng, [1e-8, 0.5])), ("dim", "eps")
        else:
            args, names = (pick(rng, [2.0, 1.0, 3.0]), pick(rng, [1e-6, 0.1]), bool(rng.random() < 0.4)), \
                ("p", "eps", "keepdim")
        return layer(name, args, names, rng, inputs=[floats(rng, shape), floats(rng, other)])
    return draw


# losses: (name, draw of (constructor args/names, inputs))
REDUCTIONS = ["mean", "sum", "none"]


def _classes(rng):
    n, c = int(rng.integers(1, 4)), int(rng.integers(2, 5))
    extra = pick(rng, [(), (), (2,), (2, 2)])
    return n, c, extra


def draw_cross_entropy(rng):
    dtype = float_dtype(rng, low=False)
    n, c, extra = _classes(rng)
    unbatched = not extra and rng.random() < 0.2
    logits = floats(rng, ((c,) if unbatched else (n, c) + extra), dtype)
    weight = floats(rng, (c,), dtype, view=False) if rng.random() < 0.3 else None
    if weight is not None:
        weight.values = np.abs(weight.values) + 0.1
    probabilities = rng.random() < 0.3
    if probabilities:
        p = rng.random(logits.values.shape)
        target = In(p / p.sum(axis=0 if unbatched else 1, keepdims=True), dtype)
        ignore = -100
    else:
        ignore = pick(rng, [-100, 0, 1])
        target = ints(rng, (() if unbatched else (n,) + extra), 0, c)
    args = (weight, None, ignore, None, pick(rng, REDUCTIONS), pick(rng, [0.0, 0.0, 0.1, 0.3]))
    names = ("weight", "size_average", "ignore_index", "reduce", "reduction", "label_smoothing")
    return layer("CrossEntropyLoss", args, names, rng, inputs=[logits, target], dtype=dtype)


def draw_nll(rng):
    n, c, extra = _classes(rng)
    logp = floats(rng, (n, c) + extra)
    weight = floats(rng, (c,), view=False) if rng.random() < 0.3 else None
    if weight is not None:
        weight.values = np.abs(weight.values) + 0.1
    args = (weight, None, pick(rng, [-100, 0, 1]), None, pick(rng, REDUCTIONS))
    names = ("weight", "size_average", "ignore_index", "reduce", "reduction")
    return layer("NLLLoss", args, names, rng, inputs=[logp, ints(rng, (n,) + extra, 0, c)])


def draw_bce(rng):
    shape = pick(rng, [(3,), (2, 3), (2, 1, 2)])
    logits = rng.random() < 0.5
    x = floats(rng, shape)
    if not logits:
        x.values = 1 / (1 + np.exp(-x.values))
    target = In(rng.random(shape), "float64")
    weight = floats(rng, pick(rng, [shape[-1:], shape]), view=False) if rng.random() < 0.3 else None
    if logits:
        pos = floats(rng, shape[-1:], view=False) if rng.random() < 0.4 else None
        if pos is not None:
            pos.values = np.abs(pos.values) + 0.5
        args = (weight, None, None, pick(rng, REDUCTIONS), pos)
        names = ("weight", "size_average", "reduce", "reduction", "pos_weight")
        return layer("BCEWithLogitsLoss", args, names, rng, inputs=[x, target])
    args, names = (weight, None, None, pick(rng, REDUCTIONS)), ("weight", "size_average", "reduce", "reduction")
    return layer("BCELoss", args, names, rng, inputs=[x, target])


def draw_pointwise_loss(name, extra_args=()):
    def draw(rng):
        shape = pick(rng, [(3,), (2, 3), (2, 1, 2)])
        other = shape if rng.random() < 0.85 else shape[-1:]
        args = [None, None, pick(rng, REDUCTIONS)]
        names = ["size_average", "reduce", "reduction"]
        for key, options in extra_args:
            args.append(pick(rng, options))
            names.append(key)
        x, y = floats(rng, shape), floats(rng, other)
        if name == "PoissonNLLLoss":
            y.values = np.abs(np.round(y.values * 2))
            if not args[3]:
                x.values = np.abs(x.values) + 0.1
        if name == "GaussianNLLLoss":  # (input, target, var)
            var = floats(rng, pick(rng, [shape, shape[:-1] + (1,)]))
            var.values = np.abs(var.values) + 0.1
            args, names = [bool(rng.random() < 0.5), pick(rng, [1e-6, 0.5]), pick(rng, REDUCTIONS)], \
                ["full", "eps", "reduction"]
            return layer(name, args, names, rng, inputs=[x, y, var])
        if name == "KLDivLoss":
            args[2] = pick(rng, REDUCTIONS + ["batchmean"])
        if name == "SoftMarginLoss":
            y = In(np.where(rng.random(shape) < 0.5, -1.0, 1.0), "float64")
        if name == "MultiLabelSoftMarginLoss":
            args = [None] + args
            names = ["weight"] + names
            y = In((rng.random(shape) < 0.5).astype(float), "float64")
        return Case(name, (), dict(zip(names, args)), inputs=[x, y])
    return draw


def draw_margin_loss(name):
    def draw(rng):
        n = int(rng.integers(1, 4))
        reduction = pick(rng, REDUCTIONS)
        if name == "MarginRankingLoss":
            ys = In(np.where(rng.random((n,)) < 0.5, -1.0, 1.0), "float64")
            return Case(name, (pick(rng, [0.0, 0.5]),), {"reduction": reduction},
                        inputs=[floats(rng, (n,)), floats(rng, (n,)), ys])
        if name == "HingeEmbeddingLoss":
            ys = In(np.where(rng.random((n, 2)) < 0.5, -1.0, 1.0), "float64")
            return Case(name, (pick(rng, [1.0, 0.3]),), {"reduction": reduction}, inputs=[floats(rng, (n, 2)), ys])
        if name == "CosineEmbeddingLoss":
            ys = In(np.where(rng.random((n,)) < 0.5, -1.0, 1.0), "float64")
            return Case(name, (pick(rng, [0.0, 0.2]),), {"reduction": reduction},
                        inputs=[floats(rng, (n, 3)), floats(rng, (n, 3)), ys])
        if name == "TripletMarginLoss":
            args = (pick(rng, [1.0, 0.5]), pick(rng, [2.0, 1.0]), 1e-6, bool(rng.random() < 0.4))
            return layer(name, args + (None, None, reduction), ("margin", "p", "eps", "swap", "size_average",
                         "reduce", "reduction"), rng, inputs=[floats(rng, (n, 3)) for _ in range(3)])
        c = int(rng.integers(2, 5))
        if name == "MultiMarginLoss":
            weight = floats(rng, (c,), view=False) if rng.random() < 0.3 else None
            args = (pick(rng, [1, 2]), pick(rng, [1.0, 0.5]), weight, None, None, reduction)
            return layer(name, args, ("p", "margin", "weight", "size_average", "reduce", "reduction"), rng,
                         inputs=[floats(rng, pick(rng, [(n, c), (c,)])), ints(rng, (n,), 0, c)])
        target = rng.integers(-1, c, (n, c))  # MultiLabelMarginLoss: classes up to the first -1
        return Case(name, (), {"reduction": reduction}, inputs=[floats(rng, (n, c)), In(target, "int64")])
    return draw


LAYERS = {
    "Linear": draw_linear, "Bilinear": draw_bilinear,
    "Conv1d": draw_conv(1), "Conv2d": draw_conv(2),
    "ConvTranspose1d": draw_conv_transpose(1), "ConvTranspose2d": draw_conv_transpose(2),
    "MaxPool1d": draw_max_pool(1), "MaxPool2d": draw_max_pool(2),
    "AvgPool1d": draw_avg_pool(1), "AvgPool2d": draw_avg_pool(2),
    "LPPool1d": draw_lp_pool(1), "LPPool2d": draw_lp_pool(2),
    "AdaptiveAvgPool1d": draw_adaptive("Avg", 1), "AdaptiveAvgPool2d": draw_adaptive("Avg", 2),
    "AdaptiveMaxPool1d": draw_adaptive("Max", 1), "AdaptiveMaxPool2d": draw_adaptive("Max", 2),
    "BatchNorm1d": draw_batch_norm(1), "BatchNorm2d": draw_batch_norm(2), "BatchNorm3d": draw_batch_norm(3),
    "InstanceNorm1d": draw_instance_norm(1), "InstanceNorm2d": draw_instance_norm(2),
    "InstanceNorm3d": draw_instance_norm(3),
    "LayerNorm": draw_layer_norm, "RMSNorm": draw_rms_norm, "GroupNorm": draw_group_norm,
    "LocalResponseNorm": draw_local_response_norm,
    "Embedding": draw_embedding, "EmbeddingBag": draw_embedding_bag,
    "RNN": draw_rnn("RNN"), "GRU": draw_rnn("GRU"), "LSTM": draw_rnn("LSTM"),
    "RNNCell": draw_cell("RNNCell"), "GRUCell": draw_cell("GRUCell"), "LSTMCell": draw_cell("LSTMCell"),
    "MultiheadAttention": draw_mha,
    "TransformerEncoderLayer": draw_transformer_layer("TransformerEncoderLayer"),
    "TransformerDecoderLayer": draw_transformer_layer("TransformerDecoderLayer"),
    "TransformerEncoder": draw_transformer_stack("TransformerEncoder"),
    "TransformerDecoder": draw_transformer_stack("TransformerDecoder"),
    "Transformer": draw_transformer_stack("Transformer"),
    **{name: draw_dropout(name) for name in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                                             "FeatureAlphaDropout")},
    "RReLU": draw_rrelu, "MaxUnpool1d": draw_max_unpool(1), "MaxUnpool2d": draw_max_unpool(2),
    "Flatten": draw_flatten, "Unflatten": draw_unflatten, "Upsample": draw_upsample,
    "PixelShuffle": draw_pixel_shuffle, "Unfold": draw_unfold, "Fold": draw_fold, "Pad": draw_pad,
    "Softmax2d": draw_softmax2d,
    "CosineSimilarity": draw_distance("CosineSimilarity"), "PairwiseDistance": draw_distance("PairwiseDistance"),
    "CrossEntropyLoss": draw_cross_entropy, "NLLLoss": draw_nll, "BCELoss": draw_bce,
    "MSELoss": draw_pointwise_loss("MSELoss"), "L1Loss": draw_pointwise_loss("L1Loss"),
    "SmoothL1Loss": draw_pointwise_loss("SmoothL1Loss", [("beta", [1.0, 0.5, 0.0])]),
    "HuberLoss": draw_pointwise_loss("HuberLoss", [("delta", [1.0, 0.5])]),
    "KLDivLoss": draw_pointwise_loss("KLDivLoss", [("log_target", [False, True])]),
    "PoissonNLLLoss": draw_pointwise_loss("PoissonNLLLoss", [("log_input", [True, False]),
                                                             ("full", [False, True])]),
    "GaussianNLLLoss": draw_pointwise_loss("GaussianNLLLoss"),
    "SoftMarginLoss": draw_pointwise_loss("SoftMarginLoss"),
    "MultiLabelSoftMarginLoss": draw_pointwise_loss("MultiLabelSoftMarginLoss"),
    **{name: draw_margin_loss(name) for name in ("MarginRankingLoss", "HingeEmbeddingLoss",
                                                 "CosineEmbeddingLoss", "TripletMarginLoss", "MultiMarginLoss",
                                                 "MultiLabelMarginLoss")},
    **{name: draw_activation(name) for name in ACTIVATIONS},
}


# ----------------------------------------------------------------------------------------------------
# F.* functions

def functional(name, args, names, rng, dtype="float64"):
    cut = int(rng.integers(1, len(args) + 1))
    return Case(name, args[:cut], dict(zip(names[cut:], args[cut:])), dtype=dtype, functional=True)


def draw_f_conv(rank, transposed=False):
    def draw(rng):
        dtype = float_dtype(rng)
        groups, c_in, c_out, kernel, stride, dilation = _conv_common(rng, rank)
        kernel = kernel if isinstance(kernel, tuple) else (kernel,) * rank
        spatial = tuple(int(rng.integers(3, 6)) for _ in range(rank))
        x = floats(rng, batch_shape(rng) + (c_in,) + spatial, dtype)
        bias = floats(rng, (c_out,), dtype, view=False) if rng.random() < 0.6 else None
        if transposed:
            w = floats(rng, (c_in, c_out // groups) + kernel, dtype)
            args = (x, w, bias, stride, pick(rng, [0, 1]), pick(rng, [0, 0, 1]), groups, dilation)
            names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
            return functional(f"conv_transpose{rank}d", args, names, rng, dtype)
        w = floats(rng, (c_out, c_in // groups) + kernel, dtype)
        padding = pick(rng, [0, 1, "same", "valid", maybe_tuple(rng, 1, rank)])
        if padding == "same" and rng.random() < 0.8:
            stride = 1
        args = (x, w, bias, stride, padding, dilation, groups)
        return functional(f"conv{rank}d", args, ("input", "weight", "bias", "stride", "padding", "dilation",
                                                  "groups"), rng, dtype)
    return draw


def draw_f_interpolate(rng):
    dtype = float_dtype(rng)
    rank = int(rng.integers(1, 3))
    mode = pick(rng, {1: ["nearest", "linear", "nearest-exact", "area"],
                      2: ["nearest", "bilinear", "bicubic", "nearest-exact", "area"]}[rank])
    x = _pool_input(rng, rank, dtype)
    if rng.random() < 0.5:
        size, scale = int(rng.integers(1, 7)), None
    else:
        size, scale = None, pick(rng, [2, 1.5, 0.5, 2.0, 1.7])
    align = bool(rng.random() < 0.5) if mode in ("linear", "bilinear", "bicubic") and rng.random() < 0.7 else None
    recompute = pick(rng, [None, None, True, False]) if scale else None
    antialias = bool(mode in ("bilinear", "bicubic") and rng.random() < 0.3)
    args = (x, size, scale, mode, align, recompute, antialias)
    names = ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")
    return functional("interpolate", args, names, rng, dtype)


def draw_f_pad(rng):
    rank = int(rng.integers(1, 4))
    mode = pick(rng, ["constant", "reflect", "replicate", "circular"])
    x = floats(rng, tuple(int(rng.integers(2, 5)) for _ in range(rank + int(rng.integers(0, 3)))))
    lowest = 0 if mode == "circular" else -1  # (torch's circular crop is its own: see LEFT_ALONE)
    amount = tuple(int(rng.integers(lowest, 3)) for _ in range(2 * rank if mode != "constant" else
                                                              2 * int(rng.integers(1, x.values.ndim + 1))))
    args = (x, amount, mode, pick(rng, [None, 0.5]) if mode == "constant" else None)
    return functional("pad", args, ("input", "pad", "mode", "value"), rng)


def draw_f_norms(rng):
    kind = pick(rng, ["layer_norm", "group_norm", "batch_norm", "instance_norm", "rms_norm", "normalize"])
    dtype = float_dtype(rng)
    c = int(rng.integers(1, 4))
    x = floats(rng, (2, c, 3), dtype)
    affine = rng.random() < 0.5
    w, b = (floats(rng, (c,), dtype, view=False), floats(rng, (c,), dtype, view=False)) if affine else (None, None)
    if kind == "layer_norm":
        return functional(kind, (x, (3,), floats(rng, (3,), dtype) if affine else None, None, 1e-5),
                          ("input", "normalized_shape", "weight", "bias", "eps"), rng, dtype)
    if kind == "rms_norm":
        return functional(kind, (x, (3,), floats(rng, (3,), dtype) if affine else None, pick(rng, [None, 1e-3])),
                          ("input", "normalized_shape", "weight", "eps"), rng, dtype)
    if kind == "group_norm":
        return functional(kind, (x, pick(rng, [1, c]), w, b, 1e-5), ("input", "num_groups", "weight", "bias",
                                                                     "eps"), rng, dtype)
    if kind == "normalize":
        return functional(kind, (x, pick(rng, [2.0, 1.0, 3.0]), pick(rng, [1, -1, 0]), pick(rng, [1e-12, 0.5])),
                          ("input", "p", "dim", "eps"), rng, dtype)
    mean = In(rng.standard_normal(c), dtype) if rng.random() < 0.5 else None
    var = In(rng.random(c) + 0.5, dtype) if mean is not None else None
    training = bool(mean is None or rng.random() < 0.5)
    if kind == "batch_norm":
        args = (x, mean, var, w, b, training, pick(rng, [0.1, 0.5]), 1e-5)
        return functional(kind, args, ("input", "running_mean", "running_var", "weight", "bias", "training",
                                       "momentum", "eps"), rng, dtype)
    args = (x, mean, var, w, b, training or mean is None, 0.1, 1e-5)
    return functional(kind, args, ("input", "running_mean", "running_var", "weight", "bias",
                                   "use_input_stats", "momentum", "eps"), rng, dtype)


def draw_f_sdpa(rng):
    dtype = pick(rng, ["float64", "float32"])
    batch = pick(rng, [(), (2,), (1, 2)])
    L, S, E = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    q, k, v = floats(rng, batch + (L, E), dtype), floats(rng, batch + (S, E), dtype), \
        floats(rng, batch + (S, int(rng.integers(1, 4))), dtype)
    mask = None
    if rng.random() < 0.4:
        mask = _mask(rng, pick(rng, [(L, S), batch + (L, S)]), pick(rng, ["bool", "float"]))
        if mask.dtype == "float64":
            mask.dtype = dtype
    causal = bool(rng.random() < 0.3)
    args = (q, k, v, mask, 0.0, causal, pick(rng, [None, 0.5]))
    return functional("scaled_dot_product_attention", args, ("query", "key", "value", "attn_mask", "dropout_p",
                                                              "is_causal", "scale"), rng, dtype)


def draw_f_losses(rng):
    """The loss functions through F.*: the layer draws, called as functions with the same arguments."""
    name = pick(rng, ["cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "mse_loss",
                      "smooth_l1_loss", "kl_div", "one_hot", "embedding"])
    if name in ("cross_entropy", "nll_loss"):
        case = (draw_cross_entropy if name == "cross_entropy" else draw_nll)(rng)
        kwargs = {**dict(zip(("weight", "size_average", "ignore_index", "reduce", "reduction", "label_smoothing"),
                             case.args)), **case.kwargs}
        constant(kwargs.get("weight"))
        return Case(name, case.inputs, kwargs, dtype=case.dtype, functional=True)
    if name == "binary_cross_entropy_with_logits":
        shape = (2, 3)
        pos = floats(rng, (3,), view=False) if rng.random() < 0.5 else None
        args = (floats(rng, shape), In(rng.random(shape), "float64"), None, None, None, pick(rng, REDUCTIONS), pos)
        return functional(name, args, ("input", "target", "weight", "size_average", "reduce", "reduction",
                                       "pos_weight"), rng)
    if name == "one_hot":
        return functional(name, (ints(rng, pick(rng, [(3,), (2, 2), ()]), 0, 4), pick(rng, [-1, 4, 5])),
                          ("tensor", "num_classes"), rng)
    if name == "embedding":
        w = floats(rng, (5, 3), view=False)
        args = (ints(rng, (2, 3), 0, 5), w, pick(rng, [None, 0, -2]), pick(rng, [None, 1.0]), 2.0, False, False)
        return functional(name, args, ("input", "weight", "padding_idx", "max_norm", "norm_type",
                                       "scale_grad_by_freq", "sparse"), rng)
    x, y = floats(rng, (2, 3)), floats(rng, (2, 3))
    if name == "kl_div":
        return functional(name, (x, y, None, None, pick(rng, REDUCTIONS + ["batchmean"]), bool(rng.random() < 0.5)),
                          ("input", "target", "size_average", "reduce", "reduction", "log_target"), rng)
    extra = (pick(rng, [1.0, 0.5]),) if name == "smooth_l1_loss" else ()
    return functional(name, (x, y, None, None, pick(rng, REDUCTIONS)) + extra,
                      ("input", "target", "size_average", "reduce", "reduction", "beta"), rng)


def draw_f_pool(rng):
    rank = int(rng.integers(1, 3))
    dtype = float_dtype(rng)
    x = _pool_input(rng, rank, dtype)
    kernel = int(rng.integers(1, 4))
    padding = int(rng.integers(0, kernel // 2 + 1))
    if rng.random() < 0.5:
        args = (x, kernel, pick(rng, [None, 1, 2]), padding, pick(rng, [1, 2]), bool(rng.random() < 0.4),
                bool(rng.random() < 0.3))
        return functional(f"max_pool{rank}d", args, ("input", "kernel_size", "stride", "padding", "dilation",
                                                      "ceil_mode", "return_indices"), rng, dtype)
    args = (x, kernel, pick(rng, [None, 1, 2]), padding, bool(rng.random() < 0.4), bool(rng.random() < 0.5))
    return functional(f"avg_pool{rank}d", args, ("input", "kernel_size", "stride", "padding", "ceil_mode",
                                                  "count_include_pad"), rng, dtype)


F_ACTIVATIONS = {"relu": [], "relu6": [], "selu": [], "silu": [], "mish": [], "hardswish": [], "hardsigmoid": [],
                 "tanhshrink": [], "softsign": [], "logsigmoid": [], "elu": [("alpha", [1.0, 0.5])],
                 "celu": [("alpha", [1.0, 2.0])], "leaky_relu": [("negative_slope", [0.01, 0.2])],
                 "hardtanh": [("min_val", [-1.0, -0.5]), ("max_val", [1.0, 2.0])],
                 "softplus": [("beta", [1.0, 2.0]), ("threshold", [20.0, 1.0])],
                 "threshold": [("threshold", [0.1, -0.5]), ("value", [0.0, 3.0])],
                 "hardshrink": [("lambd", [0.5, 0.2])], "softshrink": [("lambd", [0.5, 0.2])],
                 "gelu": [("approximate", ["none", "tanh"])], "glu": [("dim", [-1, 0])],
                 "softmax": [("dim", [-1, 0, 1]), ("_stacklevel", [3]), ("dtype", [None, "float64"])],
                 "log_softmax": [("dim", [-1, 0]), ("_stacklevel", [3]), ("dtype", [None, "float64"])],
                 "softmin": [("dim", [-1, 1]), ("_stacklevel", [3]), ("dtype", [None, "float64"])]}
INPLACE_CAPABLE = {"relu", "relu6", "selu", "elu", "celu", "leaky_relu", "hardtanh", "threshold", "silu", "mish",
                   "hardswish", "hardsigmoid"}


class DTypeName(str):
    """A dtype keyword, resolved in each library (see _resolve)."""


def draw_f_activation(rng):
    """An activation through F.*: its options positionally or by keyword, ``inplace=True`` where torch
    has it (then on a float32 copy: no gradient through a leaf changed in place)."""
    name = pick(rng, sorted(F_ACTIVATIONS))
    dtype = float_dtype(rng)
    x = floats(rng, pick(rng, [(3,), (2, 3), (2, 3, 2)]), dtype)
    spec = F_ACTIVATIONS[name]
    args = [x] + [pick(rng, options) for _, options in spec]
    names = ["input"] + [n for n, _ in spec]
    args = [DTypeName(a) if n == "dtype" and a else a for a, n in zip(args, names)]
    case = functional(name, tuple(args), tuple(names), rng, dtype)
    if name in INPLACE_CAPABLE and rng.random() < 0.3:
        case.kwargs["inplace"] = True
        constant(x)
    return case


def draw_f_resampling(rng):
    name = pick(rng, ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
                      "lp_pool1d", "lp_pool2d", "pixel_shuffle", "pixel_unshuffle", "local_response_norm"])
    dtype = float_dtype(rng, low=False)
    rank = 2 if name.endswith("2d") or "pixel" in name else 1
    x = _pool_input(rng, rank, dtype, channels=4 if "pixel" in name else None)
    if name.startswith("adaptive"):
        args, names = (x, int(rng.integers(1, 5))), ("input", "output_size")
        if "max" in name:
            args, names = args + (bool(rng.random() < 0.5),), names + ("return_indices",)
    elif name.startswith("lp_pool"):
        x.values = np.abs(x.values) + 0.25
        args = (x, pick(rng, [1.0, 2.0, 3.0]), int(rng.integers(1, 3)), pick(rng, [None, 1]), bool(rng.random() < 0.5))
        names = ("input", "norm_type", "kernel_size", "stride", "ceil_mode")
    elif name == "pixel_shuffle":
        args, names = (x, pick(rng, [1, 2])), ("input", "upscale_factor")
    elif name == "pixel_unshuffle":
        x = floats(rng, batch_shape(rng) + (2, 4, 2), dtype)
        args, names = (x, pick(rng, [1, 2])), ("input", "downscale_factor")
    else:
        args = (x, int(rng.integers(1, 4)), pick(rng, [1e-4, 0.5]), 0.75, pick(rng, [1.0, 2.0]))
        names = ("input", "size", "alpha", "beta", "k")
    return functional(name, args, names, rng, dtype)


def draw_f_linear(rng):
    dtype = float_dtype(rng)
    if rng.random() < 0.5:
        n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        bias = floats(rng, pick(rng, [(n_out,), ()]), dtype, view=False) if rng.random() < 0.6 else None
        args = (floats(rng, pick(rng, [(), (2,), (2, 2)]) + (n_in,), dtype), floats(rng, (n_out, n_in), dtype), bias)
        return functional("linear", args, ("input", "weight", "bias"), rng, dtype)
    a, b, c = (int(rng.integers(1, 4)) for _ in range(3))
    batch = pick(rng, [(2,), (1,), ()])
    args = (floats(rng, batch + (a,), dtype), floats(rng, batch + (b,), dtype), floats(rng, (c, a, b), dtype),
            floats(rng, (c,), dtype, view=False) if rng.random() < 0.6 else None)
    return functional("bilinear", args, ("input1", "input2", "weight", "bias"), rng, dtype)


FUNCTIONS = {"activations": draw_f_activation, "resampling": draw_f_resampling, "linear": draw_f_linear,
             "conv1d": draw_f_conv(1), "conv2d": draw_f_conv(2), "conv_transpose1d": draw_f_conv(1, True),
             "conv_transpose2d": draw_f_conv(2, True), "interpolate": draw_f_interpolate, "pad": draw_f_pad,
             "norms": draw_f_norms, "scaled_dot_product_attention": draw_f_sdpa, "losses": draw_f_losses,
             "pooling": draw_f_pool}


# ----------------------------------------------------------------------------------------------------
# running a case in one library

def _error(e):
    return {"error": _builtin_type(e), "type": type(e), "message": f"{type(e).__name__}: {e}"}


def _to_lib(lib, array, dtype):
    return lib.tensor(array.tolist(), dtype=getattr(lib, dtype)).reshape(array.shape)


def _state_arrays(module):
    """{name: (float64/int64 NumPy values, dtype name)} of a torch module's state_dict."""
    state = {}
    for key, value in module.state_dict().items():
        dtype = str(value.dtype).split(".")[-1]
        array = value.detach().double().numpy() if value.is_floating_point() else value.detach().numpy()
        state[key] = (array.copy(), dtype)
    return state


def _build_module(lib, case, initial_state):
    ctor_args = [_resolve(lib, a, {}) for a in case.args]
    ctor_kwargs = {k: _resolve(lib, v, {}) for k, v in case.kwargs.items()}
    module = getattr(lib.nn, case.name)(*ctor_args, **ctor_kwargs)
    if initial_state is not None:
        module.load_state_dict({k: _to_lib(lib, a, d) for k, (a, d) in initial_state.items()})
    module.to(getattr(lib, case.dtype))
    module.train(case.train)
    return module


def _trainable(lib, module):
    return [] if module is None else [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def outcome(lib, case, initial_state=None, grads=False):
    """{"error": ...} or {"result", "inputs", "grads", "state", "keys", "repr"}; for torch, also the
    module's initial state ("initial") to load into minilora's."""
    record = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lib is torch:
            torch.manual_seed(0)
        try:
            module = None if case.functional else _build_module(lib, case, initial_state)
        except Exception as e:  # noqa: BLE001  (its type is what is compared)
            return _error(e)
        if lib is torch and module is not None:
            record["initial"] = _state_arrays(module.float() if case.dtype in LOW else module.double())
            module.to(getattr(torch, case.dtype))
        values = list(case.args) + list(case.kwargs.values()) if case.functional else \
            list(case.inputs) + list(case.call_kwargs.values())
        built = {}
        for item in _tensors(values):
            as_dtype = item.dtype
            if item.dtype == "float64" and case.dtype != "float64" and not case.functional:
                as_dtype = case.dtype  # (a layer's float inputs in the layer's dtype)
            wants_grad = grads and as_dtype == "float64" and not getattr(item, "constant", False)
            built[id(item)] = In(item.values, as_dtype, item.view).build(lib, requires_grad=wants_grad)
        try:
            if case.functional:
                args = [_resolve(lib, a, built) for a in case.args]
                kwargs = {k: _resolve(lib, v, built) for k, v in case.kwargs.items()}
                result = getattr(lib.nn.functional, case.name)(*args, **kwargs)
            else:
                inputs = [_resolve(lib, a, built) for a in case.inputs]
                kwargs = {k: _resolve(lib, v, built) for k, v in case.call_kwargs.items()}
                result = module(*inputs, **kwargs)
        except Exception as e:  # noqa: BLE001
            return {**record, **_error(e)}
        flat = _flat(result)
        record["result"] = [_as_record(v, lib) for v in flat]
        # the inputs after the call: an in-place F.* (inplace=True) changed its input as torch's does?
        record["inputs"] = [_as_record(arg, lib) for _, arg in built.values()] if case.functional else []
        if module is not None:
            record["state"] = {k: _as_record(v, lib) for k, v in module.state_dict().items()}
            record["keys"] = list(module.state_dict())
            record["repr"] = repr(module)
        if grads:
            record["grads"] = _gradients(lib, flat, built, _trainable(lib, module))
    return record


def _gradients(lib, flat, built, params):
    outs = [o for o in flat if isinstance(o, lib.Tensor) and o.requires_grad and o.is_floating_point()]
    if not outs:
        return None
    total = 0
    for out in outs:
        weights = (np.arange(out.numel()) % 5 - 2.5) / 2
        total = total + (out * _to_lib(lib, weights.reshape(tuple(out.shape)), "float64")).sum()
    try:
        total.backward()
    except Exception as e:  # noqa: BLE001
        return _builtin_type(e)
    found = {f"input {i}": leaf.grad for i, (leaf, _) in enumerate(built.values()) if leaf.requires_grad}
    found.update({f"parameter {n}": p.grad for n, p in params})
    found = {k: g.to_dense() if g is not None and getattr(g, "is_sparse", False) else g for k, g in found.items()}
    return {k: None if g is None else g.double().numpy().copy() for k, g in found.items()}


# ----------------------------------------------------------------------------------------------------
# comparing

def _close(got, want, dtype):
    tol = TOLERANCE.get(dtype, 0)
    finite = np.abs(want[np.isfinite(want)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return np.allclose(got, want, rtol=tol, atol=tol * scale, equal_nan=True)


def _compare_records(got, want, where):
    if isinstance(w := want, tuple) and isinstance(got, tuple):
        if got[:2] != w[:2]:
            return f"{where}: dtype/shape {got[:2]} != torch's {w[:2]}"
        if not _close(got[2], w[2], w[0]):
            return f"{where}: values {got[2].tolist()} != torch's {w[2].tolist()}"
        return None
    return None if got == want else f"{where}: {got!r} != torch's {want!r}"


# Where torch's CPU kernels lack a 16-bit dtype the case says nothing about minilora
NO_KERNEL = "not implemented for"
# torch's float32 (mkldnn) transposed convolution returns an empty output where the output size is
# exactly 0; its float64 path raises this RuntimeError, as minilora does for both
TORCH_EMPTY_CONV = "Output size is too small"
# Where minilora refuses on purpose (the error names what it does not support)
DELIBERATE_REFUSALS = ["sparse=True is not supported", "with antialias=True is not implemented"]


def compare(got, want, case):
    if "error" in want and NO_KERNEL in want["message"] and case.dtype in LOW:
        return None
    if "error" in got and any(m in got["message"] for m in DELIBERATE_REFUSALS):
        return None
    if "error" in got and "error" in want and getattr(case, "invalid", False):
        return None  # (a size made 0 or -1: both refuse, each at its own first check)
    if "error" in got and TORCH_EMPTY_CONV in got["message"] and "result" in want \
            and all(isinstance(w, tuple) and 0 in w[1] for w in want["result"]):
        return None
    problem = difference({k: got[k] for k in ("error", "type", "message", "result", "inputs") if k in got},
                         {k: want[k] for k in ("error", "type", "message", "result", "inputs") if k in want})
    if problem and "result" in got and "result" in want:  # (difference's tolerance is by dtype: use ours)
        problem = None
        for i, (g, w) in enumerate(zip(got["result"], want["result"])):
            problem = problem or _compare_records(g, w, f"output {i}")
        if len(got["result"]) != len(want["result"]):
            problem = f"{len(got['result'])} outputs, torch {len(want['result'])}"
    if problem or "error" in want:
        return problem
    if got.get("keys") != want.get("keys"):
        return f"state_dict keys {got.get('keys')} != torch's {want.get('keys')}"
    for key, w in want.get("state", {}).items():
        problem = _compare_records(got["state"][key], w, f"state_dict[{key!r}] after the forward")
        if problem:
            return problem
    if got.get("repr") != want.get("repr"):
        return f"repr {got.get('repr')!r} != torch's {want.get('repr')!r}"
    want_grads, got_grads = want.get("grads"), got.get("grads")
    if isinstance(want_grads, dict):
        if not isinstance(got_grads, dict) or set(got_grads) != set(want_grads):
            return f"gradients {got_grads} != torch's {want_grads}"
        for key, w in want_grads.items():
            g = got_grads[key]
            if (g is None) != (w is None) and not (g is not None and not np.any(g)) \
                    and not (w is not None and not np.any(w)):
                return f"gradient of {key}: {g} != torch's {w}"
            if g is not None and w is not None and not _close(g, w, "float64"):
                return f"gradient of {key}: {g.tolist()} != torch's {w.tolist()}"
    return None


def check(case):
    grads = case.dtype == "float64"
    want = outcome(torch, case, grads=grads)
    got = outcome(ml, case, want.get("initial"), grads=grads)
    return compare(got, want, case)


def _case_rng(name, seed):
    return np.random.default_rng([seed, *name.encode()])


def _hunt(table, name):
    failures = []
    for seed in SEEDS:
        case = table[name](_case_rng(name, seed))
        problem = check(case)
        if problem:
            failures.append(f"seed {seed}: {case!r}\n    {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_against_torch(name):
    _hunt(LAYERS, name)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_functional_against_torch(name):
    _hunt(FUNCTIONS, name)


# LEFT_ALONE: what longer runs (MINILORA_FUZZ_SEEDS=600) still report, each an edge of an edge:
# - zero-size configurations: Conv with out_channels=0 (torch: "non-empty weight tensor expected"),
#   EmbeddingBag with
#   embedding_dim=0 in 'max' mode (minilora's backward fails), MaxUnpool with a zero kernel or an
#   output_size that is negative (torch's ValueError / empty result, minilora's RuntimeError)
# - F.pad 'circular' with a negative amount: torch's kernel gives its own results (or an overlap error),
#   not a crop-then-wrap; not drawn
# - torch itself: EmbeddingBag(include_last_offset=True) with offsets=[0] in 'max' mode segfaults (not
#   drawn); conv_transpose's float32 path returns an empty output where its float64 path raises, and
#   its bfloat16 path takes dilation=0 (an empty output; minilora refuses, as torch's float64 path)
# - KLDivLoss's target gradient at a negative target (outside its domain): torch's is finite where
#   minilora's is nan
# - minilora's deliberate refusals (DELIBERATE_REFUSALS): interpolate antialias, sparse embeddings


# ----------------------------------------------------------------------------------------------------
# the divergences the fuzzer found, minimized (each: torch's result; what minilora did before the fix)

def _max_norm_on_a_view_leaf(L):  # the in-place renorm dropped requires_grad of a view made a leaf
    table = L.tensor([[3.0, 4.0], [0.1, 0.1]], dtype=L.float64).reshape(2, 2)
    table.requires_grad_(True)
    L.nn.functional.embedding(L.tensor([0, 1]), table, max_norm=1.0).sum().backward()
    return table.grad


def _mha_causal_hint(L):  # torch sets attn_mask aside for the causal one (need_weights=False, no kpm)
    mha = L.nn.MultiheadAttention(2, 1)
    with L.no_grad():
        for p in mha.parameters():
            p.copy_((L.arange(p.numel(), dtype=p.dtype).reshape(p.shape) - 2) / 10)
    x = L.arange(6.0).reshape(3, 2) / 5
    mask = L.tensor([[False, True, False], [False, False, False], [True, False, False]])
    return mha(x, x, x, attn_mask=mask, need_weights=False, is_causal=True)[0]


def _sdpa_causal_mask_sliced_key(L):  # torch's fused path needs a contiguous last dim, else it refuses
    q, k = L.ones(1, 1, 2, 2), L.ones(1, 1, 3, 4)[..., ::2]
    return L.nn.functional.scaled_dot_product_attention(q, k, L.ones(1, 1, 3, 2), L.zeros(2, 3), is_causal=True)


def _bag_of_padding_grad(L):
    bag = L.nn.EmbeddingBag(3, 2, mode="max", padding_idx=0)
    with L.no_grad():
        bag.weight.copy_(L.arange(6.0).reshape(3, 2))
    bag(L.tensor([[0, 0]])).sum().backward()
    return bag.weight.grad


def _mha_extra_keys(L):
    mha = L.nn.MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True, kdim=3)
    with L.no_grad():
        for p in mha.parameters():
            p.copy_((L.arange(p.numel(), dtype=p.dtype).reshape(p.shape) % 7 - 3) / 10)
    q, k = L.arange(8.0).reshape(2, 1, 4) / 8, L.arange(9.0).reshape(3, 1, 3) / 9
    out, weights = mha(q, k, L.arange(12.0).reshape(3, 1, 4) / 12, key_padding_mask=L.tensor([[False, True, False]]))
    return list(mha.state_dict()), out, weights


def _projected_lstm(L):
    lstm = L.nn.LSTM(2, 3, 2, bidirectional=True, proj_size=1).double()
    with L.no_grad():
        for p in lstm.parameters():
            p.copy_((L.arange(p.numel(), dtype=p.dtype).reshape(p.shape) % 5 - 2) / 4)
    output, (h, c) = lstm(L.arange(8.0, dtype=L.float64).reshape(4, 1, 2) / 8)
    return list(lstm.state_dict()), repr(lstm), output, h, c


def _zero_width_embedding_grad(L):  # minilora's backward failed to reshape an empty gradient
    table = L.nn.Embedding(4, 0)
    table(L.tensor([2, 0])).sum().backward()
    return table.weight.grad


REGRESSIONS = {
    # F.pad 'reflect' with a negative amount mirrors about the edges of the uncropped input
    # (torch [[[1, 2, 1, 0]]]; minilora cropped first and raised 'Padding size should be less ...')
    "F.pad([0, 1, 2], (-1, 2), 'reflect')":
        lambda L: L.nn.functional.pad(L.arange(3.0).reshape(1, 1, 3), (-1, 2), mode="reflect"),
    "F.scaled_dot_product_attention with 0 heads (minilora: ZeroDivisionError, Hq % Hkv)": lambda L: [
        L.nn.functional.scaled_dot_product_attention(L.zeros(2, 0, 1, 2), L.zeros(2, 0, 3, 2), L.zeros(2, 0, 3, 2))],
    # torch's 1-D reflection/replication kernels refuse an output width below 1 (minilora: an empty result)
    "F.pad(<(2, 4, 2)>, (-1, -1), 'reflect')": lambda L: L.nn.functional.pad(L.zeros(2, 4, 2), (-1, -1), "reflect"),
    "F.pad(<(4, 2)>, (0, -2), 'replicate')": lambda L: L.nn.functional.pad(L.zeros(4, 2), (0, -2), "replicate"),
    # one value per group: torch's ValueError (minilora returned zeros)
    "GroupNorm(2, 2) of a [1, 2] input": lambda L: L.nn.GroupNorm(2, 2)(L.ones(1, 2)),
    "F.group_norm of a [1, 1] input": lambda L: L.nn.functional.group_norm(L.ones(1, 1), 1),
    # a zero kernel: torch's RuntimeError (minilora: NumPy's ValueError, or an empty result)
    "F.unfold with kernel_size (0, 1)": lambda L: L.nn.functional.unfold(L.ones(1, 1, 3, 3), (0, 1)),
    "nn.Unfold((0, 0), padding=1)": lambda L: L.nn.Unfold((0, 0), padding=1)(L.ones(1, 1, 3, 3)),
    "F.fold with stride 0": lambda L: L.nn.functional.fold(L.ones(1, 4, 4), (3, 3), 2, stride=0),
    # mode='bicubic' (minilora refused it): values and gradient
    "interpolate bicubic, scale 1.5": lambda L: L.nn.functional.interpolate(
        L.arange(12.0).reshape(1, 1, 3, 4) ** 2, scale_factor=1.5, mode="bicubic"),
    "Upsample bicubic align_corners, size (2, 5)": lambda L: L.nn.Upsample((2, 5), mode="bicubic", align_corners=True)(
        L.arange(12.0, dtype=L.float64).reshape(1, 1, 3, 4).sin()),
    # torch's ValueErrors come before its mode checks (minilora raised NotImplementedError)
    "interpolate linear with antialias": lambda L: L.nn.functional.interpolate(
        L.ones(1, 1, 4), scale_factor=2, mode="linear", antialias=True),
    "interpolate a 2-D input with a 1-tuple scale": lambda L: L.nn.functional.interpolate(
        L.ones(1, 4), scale_factor=(0.7,), mode="linear"),
    "embedding max_norm into a view made a leaf": _max_norm_on_a_view_leaf,
    "MultiheadAttention is_causal hint, need_weights=False": _mha_causal_hint,
    "sdpa is_causal with a mask and a sliced key": _sdpa_causal_mask_sliced_key,
    # EmbeddingBag 'max' of bags holding only padding_idx: zeros with a grad_fn (minilora's had none)
    "EmbeddingBag max, only padding: weight gradient": _bag_of_padding_grad,
    # invalid sizes: torch's errors (minilora: NumPy's ValueError, an AssertionError, or a result)
    "Linear(-1, 2)": lambda L: L.nn.Linear(-1, 2),
    "PReLU(num_parameters=-1)": lambda L: L.nn.PReLU(-1),
    "MultiheadAttention(0, 1)": lambda L: L.nn.MultiheadAttention(0, 1),
    "BatchNorm1d(0) of a [3, 2] input": lambda L: L.nn.BatchNorm1d(0)(L.ones(3, 2)),
    "F.batch_norm with a 3-element running_mean for 2 channels": lambda L: L.nn.functional.batch_norm(
        L.ones(3, 2), L.zeros(3), L.ones(3)),
    "F.group_norm with a weight of 0 elements": lambda L: L.nn.functional.group_norm(L.ones(1, 1, 2, 2), 1, L.ones(0)),
    "Conv2d(1, 0, 2)": lambda L: L.nn.Conv2d(1, 0, 2)(L.ones(1, 1, 3, 3)),
    "ConvTranspose2d(2, 0, 3, groups=2)": lambda L: L.nn.ConvTranspose2d(2, 0, 3, groups=2)(L.ones(1, 2, 2, 2)),
    "Embedding(4, 0) weight gradient": _zero_width_embedding_grad,
    # MultiheadAttention add_bias_kv / add_zero_attn (minilora refused them): state_dict, output, weights
    "MultiheadAttention add_bias_kv, add_zero_attn, key_padding_mask": _mha_extra_keys,
    # LSTM proj_size (minilora refused it): state_dict keys, outputs and states
    "LSTM(2, 3, 2, bidirectional=True, proj_size=1)": _projected_lstm,
    "LSTM(2, 3, proj_size=3)": lambda L: L.nn.LSTM(2, 3, proj_size=3),
    "TransformerEncoder(num_layers=0)": lambda L: L.nn.TransformerEncoder(
        L.nn.TransformerEncoderLayer(2, 1), 0, enable_nested_tensor=False)(L.ones(3, 1, 2)),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_nn_fuzzer_findings_stay_fixed(name):
    problem = difference(_thunk_outcome(ml, REGRESSIONS[name]), _thunk_outcome(torch, REGRESSIONS[name]))
    assert problem is None, f"{name}: {problem}"


def test_the_layer_comparison_sees_a_divergence():
    """A wrong output, a wrong running stat, a wrong gradient, a wrong repr and a missing error are each
    reported (a fuzzer that compared nothing would pass silently)."""
    case = Case("BatchNorm1d", (2,), inputs=[In(np.array([[1.0, 2.0], [3.0, 5.0]]), "float64")])
    want = outcome(torch, case, grads=True)
    got = outcome(ml, case, want["initial"], grads=True)
    assert compare(got, want, case) is None
    wrong_output = {**got, "result": [got["result"][0][:2] + (got["result"][0][2] + 1,)]}
    wrong_stat = {**got, "state": {**got["state"], "running_mean": ("float64", (2,), np.zeros(2))}}
    wrong_grad = {**got, "grads": {**got["grads"], "parameter weight": np.ones(2)}}
    wrong_repr = {**got, "repr": "BatchNorm1d()"}
    for bad in (wrong_output, wrong_stat, wrong_grad, wrong_repr):
        assert compare(bad, want, case) is not None
    assert compare(got, {"error": ValueError, "type": ValueError, "message": "ValueError: no"}, case) is not None
