"""Round 26: a new batch of tutorial snippets, run with torch / PEFT / transformers and with minilora (``import
minilora as torch``, ``minilora.lora`` for peft) from the same seed, every returned number, dtype, gradient and error
compared (``compared`` from round 24: float32 within 1e-5 relative, float64 within 1e-10).

The idioms no earlier batch (rounds 4-24, listed in their files) ran: torch.utils.checkpoint with tuple, list and
non-tensor outputs, reentrant and not, checkpoint_sequential, preserve_rng_state and its refusals; GradScaler on cpu
(two optimizers, unscale_ twice, growth/backoff, update(new_scale=...), state_dict round trip) and float16 autocast on
cpu; clip_grad_norm_ over every norm type, foreach, a lone tensor, an empty list, NaN with error_if_nonfinite,
clip_grads_with_norm_; the hook-based weight_norm and spectral_norm and their parametrizations, register_parametrization
with cached() and remove_parametrizations; nn.MultiheadAttention with bool/float/per-head attn_mask, float key padding,
fully masked rows, add_zero_attn, unbatched input, the eval fast path and its refusals; F.scaled_dot_product_attention
with scale, enable_gqa and masks; nn.Embedding with max_norm (renormed in place), scale_grad_by_freq, negative padding_idx;
lr_scheduler state_dict round trips (SequentialLR, ChainedScheduler(optimizer=), OneCycleLR past its end,
CosineAnnealingWarmRestarts); torch.func per-sample gradients, model ensembling, vmap randomness, jvp/linearize; hooks
(forward pre/post with_kwargs, prepend, always_call, full backward and backward pre hooks, post-accumulate-grad hooks,
global module hooks, state_dict hooks); named_modules/named_parameters options, zero_grad(set_to_none=False), buffers
that do not persist; grad-mode nesting; transformers' generate (greedy with an eos list, left padding, a seed twice,
GenerationConfig, return_dict, stopping criteria and logits processors) and PEFT (save/load with is_trainable, load_adapter, set_peft_model_state_dict,
modules_to_save training, merge_and_unload(adapter_names), enable/disable_adapter_layers, delete_adapter).

What diverged, and is fixed (the class, not the case):
* Grad mode and inference mode were one switch: ``inference_mode(False)`` left grad mode as it was, where torch's turns
  it on (``with no_grad(): with inference_mode(False): y = x * 2`` required no grad), and ``enable_grad()`` /
  ``set_grad_enabled(True)`` inside ``inference_mode()`` recorded a graph where torch records none. Now two switches
  as torch's (``tensor.py``'s ``_set_modes``): ops record with grad mode on and inference mode off.
* torch.utils.checkpoint refused a function returning a tuple ("must return one Tensor"): a block returning
  ``(hidden, attention)`` as torch's checkpoint takes. Now a tuple (and, without reentrancy, a list) has its floating
  tensors differentiated, other items and non-tensor outputs pass through (``nn/checkpointing.py``'s ``_Outputs``).
* ``nn.utils.spectral_norm`` / ``remove_spectral_norm`` (the hook-based one the GAN tutorials call) and
  ``parametrizations.orthogonal`` (every map, with and without trivialization) did not exist.
* torch.func.vmap over a BatchNorm in training (running statistics shared by the samples) ran, updating the running
  statistics once per sample, where torch refuses: the eval-mode numbers afterwards were other numbers, silently.
* transformers' MaxLengthCriteria / EosTokenCriteria did not exist; now they do, with transformers' precedence (a
  user's criterion replaces the one generate builds: ``MaxLengthCriteria(9)`` with ``max_new_tokens=3`` runs to 9).
* vmap's argument checks: an in_dim past the tensor's dimensions (IndexError), a mapped non-tensor leaf (it ran
  and failed later), in_dims=None, a list, no inputs, and the function's name in the words (``vmap(f, ...)``).
* nn.Module's registration and container errors named values by class ('Tensor') and said '(nn.Parameter or None
  expected)', where torch names them by torch.typename ('torch.FloatTensor') and says 'torch.nn.Parameter'.
* Errors in other words than torch's: an in-place change or requires_grad_() of an inference tensor, a
  post-accumulate-grad hook on a tensor that requires no grad (accepted), vmap's randomness='error', SDPA's enable_gqa
  with heads that do not divide, GradScaler.update(new_scale=) with a [1] tensor (accepted) or an int.
Not changed (deliberate, and said so where they live): minilora's own exception classes (ShapeError, StateDictError,
EmbeddingArgumentError) subclass the built-in class torch raises (compared here by that class); PEFT's adapter-name
errors add minilora's details after PEFT's sentence (test_peft_offpath_r10), as add_param_group's does after torch's
(test_optim); nn.Embedding(sparse=True) is refused by name (no sparse tensors); dtypes print bare ('int64'). PEFT's
add_weighted_adapter(svd_clamp=...) clamps U S and Vh at a quantile, which depends on the signs LAPACK gives the
singular vectors: torch's MKL and NumPy's LAPACK differ for wide matrices (both valid), so it is left out here.
"""
import contextlib
import copy
import functools
import io
import os
import tempfile
import warnings

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import minilora.nn.generation as ml_generation  # noqa: E402
from test_tutorials_r24 import _llama_pair, _model, compared  # noqa: E402


def error_of(call):
    """What a snippet's mistake raised, as a torch user meets it: the built-in class one catches (minilora's own
    classes subclass torch's) and the words (a shape printed as torch.Size); "noerror" when it raised nothing."""
    try:
        call()
    except Exception as error:  # (compared: both libraries must refuse alike)
        builtin = next(c for c in type(error).__mro__ if c.__module__ == "builtins")
        return f"{builtin.__name__}: {error}".replace("minilora.Size", "torch.Size")
    return "noerror"



@compared()
def test_checkpoint_reentrant_dropout_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Dropout(0.5), T.nn.ReLU(), T.nn.Linear(4, 2))
    x = T.randn(3, 4, requires_grad=True)
    y = T.utils.checkpoint.checkpoint(net, x, use_reentrant=True)
    y.sum().backward()
    return [y, x.grad, net[0].weight.grad]


@compared()
def test_checkpoint_sequential_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(*[T.nn.Linear(4, 4) for _ in range(4)])
    x = T.randn(2, 4, requires_grad=True)
    y = T.utils.checkpoint.checkpoint_sequential(net, 2, x, use_reentrant=False)
    y.pow(2).sum().backward()
    return [y, x.grad, net[3].weight.grad]


@compared()
def test_checkpoint_kwargs_preserve_rng_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(3, 3)
    def block(a, scale=1.0):
        return T.nn.functional.dropout(lin(a), 0.5, training=True) * scale
    x = T.randn(2, 3, requires_grad=True)
    y = T.utils.checkpoint.checkpoint(block, x, scale=2.0, use_reentrant=False, preserve_rng_state=True)
    y.sum().backward()
    return [y, x.grad, lin.weight.grad, T.rand(2)]


@compared()
def test_checkpoint_no_grad_input_reentrant_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(3, 3)
    x = T.randn(2, 3)
    y = T.utils.checkpoint.checkpoint(lin, x, use_reentrant=True)
    return [y.requires_grad, y]


@compared()
def test_grad_scaler_cpu_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(4, 2)
    opt = T.optim.SGD(m.parameters(), lr=0.1)
    scaler = T.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=2)
    x = T.randn(3, 4); out = []
    for i in range(4):
        opt.zero_grad()
        with T.autocast(device_type="cpu", dtype=T.float16):
            loss = m(x).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        T.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        out += [loss, scaler.get_scale()]
    return out + [m.weight, scaler.state_dict()["scale"], scaler.state_dict()["_growth_tracker"]]


@compared()
def test_grad_scaler_inf_skips_as_torch(T, P):
    m = T.nn.Linear(2, 1)
    with T.no_grad(): m.weight.fill_(1.0); m.bias.zero_()
    opt = T.optim.SGD(m.parameters(), lr=0.1)
    scaler = T.amp.GradScaler("cpu", init_scale=65536.0 * 65536 * 65536)
    out = []
    for i in range(3):
        opt.zero_grad()
        loss = m(T.tensor([[1e30, 1.0]])).sum()
        scaler.scale(loss).backward()
        scaler.step(opt); scaler.update()
        out += [scaler.get_scale(), m.weight.clone()]
    return out


@compared()
def test_clip_grad_single_tensor_and_none_as_torch(T, P):
    T.manual_seed(0)
    w = T.nn.Parameter(T.randn(3))
    w.grad = T.tensor([3.0, 4.0, 0.0])
    n = T.nn.utils.clip_grad_norm_(w, 1.0)
    n0 = T.nn.utils.clip_grad_norm_([], 1.0)
    p2 = T.nn.Parameter(T.ones(2))
    n1 = T.nn.utils.clip_grad_norm_([p2], 1.0)
    T.nn.utils.clip_grad_value_(w, 0.5, foreach=True)
    return [n, w.grad, n0, n1]


@compared()
def test_clip_grad_nan_error_as_torch(T, P):
    m = T.nn.Linear(2, 1)
    m.weight.grad = T.tensor([[float("nan"), 1.0]]); m.bias.grad = T.tensor([1.0])
    e = error_of(lambda: T.nn.utils.clip_grad_norm_(m.parameters(), 1.0, error_if_nonfinite=True, foreach=True))
    return [e]


@compared()
def test_clip_grads_with_norm_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(3, 2)
    m(T.randn(4, 3)).sum().backward()
    grads = [p.grad for p in m.parameters()]
    total = T.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False, foreach=True)
    T.nn.utils.clip_grads_with_norm_(m.parameters(), max_norm=0.5, total_norm=total)
    return [total, m.weight.grad, m.bias.grad]


@compared()
def test_weight_norm_old_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.utils.weight_norm(T.nn.Linear(3, 4), name="weight")
    x = T.randn(2, 3)
    y = m(x); y.sum().backward()
    names = sorted(n for n, _ in m.named_parameters())
    out = [y, m.weight_g.grad, m.weight_v.grad, names, m.weight_g.shape[0], m.weight_g.shape[1]]
    T.nn.utils.remove_weight_norm(m)
    return out + [sorted(n for n, _ in m.named_parameters()), m(x)]


@compared()
def test_weight_norm_parametrization_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.utils.parametrizations.weight_norm(T.nn.Linear(3, 4), dim=0)
    x = T.randn(2, 3)
    y = m(x); y.sum().backward()
    names = sorted(n for n, _ in m.named_parameters())
    g = m.parametrizations.weight.original0
    return [y, g.grad, m.parametrizations.weight.original1.grad, names, list(g.shape)]


@compared()
def test_spectral_norm_parametrization_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.utils.parametrizations.spectral_norm(T.nn.Linear(5, 3))
    x = T.randn(2, 5)
    y = m(x); y.sum().backward()
    names = sorted(n for n, _ in m.named_parameters()) + sorted(n for n, _ in m.named_buffers())
    m.eval()
    return [y, m.parametrizations.weight.original.grad, names, m(x)]


@compared()
def test_register_parametrization_symmetric_as_torch(T, P):
    T.manual_seed(0)
    class Symmetric(T.nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)
    layer = T.nn.Linear(3, 3)
    T.nn.utils.parametrize.register_parametrization(layer, "weight", Symmetric())
    W = layer.weight
    y = layer(T.ones(1, 3)); y.sum().backward()
    out = [W, (W - W.T).abs().sum(), layer.parametrizations.weight.original.grad,
           T.nn.utils.parametrize.is_parametrized(layer), T.nn.utils.parametrize.is_parametrized(layer, "bias")]
    with T.nn.utils.parametrize.cached():
        out.append(layer.weight is layer.weight)
    T.nn.utils.parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return out + [layer.weight, type(layer.weight).__name__, T.nn.utils.parametrize.is_parametrized(layer)]


@compared()
def test_mha_attn_mask_bool_float_as_torch(T, P):
    T.manual_seed(0)
    mha = T.nn.MultiheadAttention(8, 2, batch_first=True, dropout=0.0)
    x = T.randn(2, 4, 8)
    causal = T.triu(T.ones(4, 4, dtype=T.bool), diagonal=1)
    o1, w1 = mha(x, x, x, attn_mask=causal)
    fm = T.zeros(4, 4).masked_fill(causal, float("-inf"))
    o2, w2 = mha(x, x, x, attn_mask=fm, need_weights=True, average_attn_weights=True)
    o3, w3 = mha(x, x, x, attn_mask=causal, need_weights=False)
    per_head = causal.unsqueeze(0).expand(4, 4, 4)
    o4, w4 = mha(x, x, x, attn_mask=per_head, average_attn_weights=False)
    return [o1, w1, o2, w2, o3, w3 is None, o4, w4]


@compared()
def test_mha_key_padding_float_and_causal_as_torch(T, P):
    T.manual_seed(1)
    mha = T.nn.MultiheadAttention(6, 3)
    x = T.randn(5, 2, 6)
    kpm = T.tensor([[0.0, 0.0, 0.0, float("-inf"), float("-inf")], [0.0] * 5])
    o, w = mha(x, x, x, key_padding_mask=kpm)
    m = T.nn.Transformer.generate_square_subsequent_mask(5)
    o2, w2 = mha(x, x, x, attn_mask=m, is_causal=True)
    o.sum().backward()
    return [o, w, o2, w2, mha.in_proj_weight.grad]


@compared()
def test_mha_unbatched_as_torch(T, P):
    T.manual_seed(2)
    mha = T.nn.MultiheadAttention(4, 2, batch_first=True)
    q = T.randn(3, 4); k = T.randn(5, 4)
    o, w = mha(q, k, k, key_padding_mask=T.tensor([False, False, False, True, True]))
    return [o, w, list(o.shape), list(w.shape)]


@compared()
def test_sdpa_scale_gqa_as_torch(T, P):
    T.manual_seed(0)
    F = T.nn.functional
    q = T.randn(2, 4, 3, 8); k = T.randn(2, 2, 5, 8); v = T.randn(2, 2, 5, 8)
    a = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    b = F.scaled_dot_product_attention(q, k, v, scale=0.5, enable_gqa=True, is_causal=True)
    mask = T.rand(3, 5) > 0.3
    c = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask)
    fm = T.randn(2, 1, 3, 5)
    d = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=fm, scale=0.1)
    return [a, b, c, d]


@compared()
def test_sdpa_errors_as_torch(T, P):
    F = T.nn.functional
    q = T.randn(1, 4, 3, 8); k = T.randn(1, 3, 5, 8)
    return [error_of(lambda: F.scaled_dot_product_attention(q, k, k, enable_gqa=True)),
            error_of(lambda: F.scaled_dot_product_attention(q, k, k)),
            error_of(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=T.ones(3, 3, dtype=T.bool), is_causal=True))]


@compared()
def test_sdpa_grad_as_torch(T, P):
    T.manual_seed(0)
    q = T.randn(1, 2, 4, 3, requires_grad=True); k = T.randn(1, 2, 4, 3, requires_grad=True)
    v = T.randn(1, 2, 4, 3, requires_grad=True)
    o = T.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    o.pow(2).sum().backward()
    return [o, q.grad, k.grad, v.grad]


@compared()
def test_embedding_max_norm_norm_type_as_torch(T, P):
    T.manual_seed(0)
    e = T.nn.Embedding(5, 3, max_norm=0.5, norm_type=1.0)
    ids = T.tensor([1, 1, 3])
    out = e(ids)
    return [out, e.weight]


@compared()
def test_embedding_scale_grad_by_freq_as_torch(T, P):
    T.manual_seed(0)
    e = T.nn.Embedding(5, 2, scale_grad_by_freq=True, padding_idx=4)
    out = e(T.tensor([[1, 1, 2, 4]]))
    out.sum().backward()
    return [e.weight.grad, e.weight[4]]


@compared()
def test_embedding_functional_padding_negative_as_torch(T, P):
    T.manual_seed(0)
    w = T.randn(5, 3, requires_grad=True)
    y = T.nn.functional.embedding(T.tensor([0, 4, 2]), w, padding_idx=-1)
    y.sum().backward()
    e = T.nn.Embedding(5, 3, padding_idx=-2)
    return [y, w.grad, e.padding_idx, e.weight[3]]


@compared()
def test_spectral_norm_old_train_eval_remove_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.utils.spectral_norm(T.nn.Conv2d(2, 3, 3), n_power_iterations=3)
    before = [m.weight.clone(), m.weight.requires_grad]
    opt = T.optim.SGD(m.parameters(), lr=0.1)
    x = T.randn(2, 2, 5, 5); out = []
    for _ in range(2):
        opt.zero_grad(); l = m(x).pow(2).mean(); l.backward(); opt.step(); out += [l, m.weight_orig.grad]
    m.eval(); e = m(x)
    sd = sorted(m.state_dict())
    err2 = error_of(lambda: T.nn.utils.spectral_norm(m))
    T.nn.utils.remove_spectral_norm(m)
    names = [n for n, _ in m.named_parameters()]
    t = T.nn.utils.spectral_norm(T.nn.ConvTranspose1d(2, 3, 3))
    return before + out + [m.weight_u if hasattr(m, "weight_u") else 0, e, sd, err2, names, m.weight,
                           error_of(lambda: T.nn.utils.remove_spectral_norm(m)), list(t.weight_u.shape), t(T.ones(1, 2, 4))]


def _p(T):
    """One parameter for a scheduler's optimizer."""
    return [T.nn.Parameter(T.zeros(1))]


@compared()
def test_sequential_lr_state_roundtrip_as_torch(T, P):
    p = _p(T)
    def make():
        opt = T.optim.SGD(p, lr=0.1)
        s1 = T.optim.lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=3)
        s2 = T.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
        return opt, T.optim.lr_scheduler.SequentialLR(opt, [s1, s2], milestones=[3])
    opt, s = make()
    out = []
    for _ in range(4): opt.step(); s.step(); out.append(s.get_last_lr()[0])
    sd = s.state_dict(); osd = opt.state_dict()
    opt2, s2 = make(); opt2.load_state_dict(osd); s2.load_state_dict(sd)
    for _ in range(4): opt2.step(); s2.step(); out.append(s2.get_last_lr()[0]); out.append(opt2.param_groups[0]["lr"])
    return out + [sd["last_epoch"], sd["_milestones"], sorted(k for k in sd if not k.startswith("_schedulers"))]


@compared()
def test_chained_scheduler_optimizer_arg_state_as_torch(T, P):
    p = _p(T)
    opt = T.optim.SGD(p, lr=1.0)
    a = T.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    b = T.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    ch = T.optim.lr_scheduler.ChainedScheduler([a, b], optimizer=opt)
    out = []
    for _ in range(5): opt.step(); ch.step(); out.append(ch.get_last_lr()[0])
    sd = ch.state_dict()
    return out + [sorted(sd.keys()), len(sd["_schedulers"])]


@compared()
def test_one_cycle_state_roundtrip_as_torch(T, P):
    p = _p(T)
    def make():
        opt = T.optim.AdamW(p, lr=0.1)
        return opt, T.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=12, pct_start=0.25,
                                                   div_factor=10, final_div_factor=100, cycle_momentum=True,
                                                   base_momentum=0.8, max_momentum=0.9)
    opt, s = make()
    out = [opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0], opt.param_groups[0]["initial_lr"],
           opt.param_groups[0]["max_lr"], opt.param_groups[0]["min_lr"]]
    for _ in range(5): opt.step(); s.step(); out.append(s.get_last_lr()[0])
    sd = s.state_dict(); osd = opt.state_dict()
    opt2, s2 = make(); opt2.load_state_dict(osd); s2.load_state_dict(sd)
    for _ in range(6): opt2.step(); s2.step(); out += [s2.get_last_lr()[0], opt2.param_groups[0]["betas"][0]]
    out.append(error_of(lambda: [opt2.step() or s2.step() for _ in range(3)]))
    return out


@compared()
def test_cosine_warm_restarts_state_and_errors_as_torch(T, P):
    p = _p(T)
    opt = T.optim.SGD(p, lr=0.5)
    s = T.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 4, T_mult=1, eta_min=0.05)
    out = []
    for _ in range(6): opt.step(); s.step(); out.append(s.get_last_lr()[0])
    sd = s.state_dict()
    out += [sd["T_i"], sd["T_cur"], sd["last_epoch"], sd["T_0"]]
    opt2 = T.optim.SGD(p, lr=0.5)
    s2 = T.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt2, 4, eta_min=0.05); s2.load_state_dict(sd)
    for _ in range(3): opt2.step(); s2.step(); out.append(s2.get_last_lr()[0])
    out.append(error_of(lambda: T.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 0)))
    out.append(error_of(lambda: T.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 2, T_mult=1.5)))
    out.append(error_of(lambda: s.step(-1)))
    return out


@compared()
def test_scheduler_before_optimizer_warns_as_torch(T, P):
    p = _p(T)
    opt = T.optim.SGD(p, lr=0.1)
    s = T.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s.step(); opt.step()
    return [str(r.message)[:80] for r in rec] + [s.get_last_lr()[0], s.last_epoch]


@compared()
def test_linear_lr_and_constant_lr_options_as_torch(T, P):
    out = []
    for mk in [lambda o: T.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=4),
               lambda o: T.optim.lr_scheduler.ConstantLR(o, factor=0.25, total_iters=3),
               lambda o: T.optim.lr_scheduler.ExponentialLR(o, 0.5),
               lambda o: T.optim.lr_scheduler.StepLR(o, 3)]:
        opt = T.optim.SGD([{"params": _p(T)}, {"params": _p(T), "lr": 1.0}], lr=0.1)
        s = mk(opt)
        for _ in range(6): opt.step(); s.step(); out += s.get_last_lr()
        out += s._last_lr
    return out


@compared(rtol=1e-10)  # (float64)
def test_func_grad_argnums_and_jvp_as_torch(T, P):
    F = T.func
    f = lambda x, y: (x * y.sin()).sum()
    x = T.tensor([1.0, 2.0], dtype=T.float64); y = T.tensor([0.5, -0.5], dtype=T.float64)
    gx, gy = F.grad(f, argnums=(0, 1))(x, y)
    out, tangent = F.jvp(lambda a: a.exp() * 2, (x,), (T.ones_like(x),))
    jf = F.jacfwd(f, argnums=1)(x, y)
    lin_out, jvp_fn = F.linearize(lambda a: a.cos(), x)
    return [gx, gy, out, tangent, jf, lin_out, jvp_fn(T.ones_like(x))]


@compared()
def test_func_per_sample_grads_as_torch(T, P):
    T.manual_seed(0)
    F = T.func
    model = T.nn.Sequential(T.nn.Linear(3, 4), T.nn.ReLU(), T.nn.Linear(4, 2))
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    def loss_fn(params, buffers, sample, target):
        pred = F.functional_call(model, (params, buffers), (sample.unsqueeze(0),))
        return T.nn.functional.cross_entropy(pred, target.unsqueeze(0))
    data = T.randn(5, 3); targets = T.tensor([0, 1, 1, 0, 1])
    g = F.vmap(F.grad(loss_fn), in_dims=(None, None, 0, 0))(params, buffers, data, targets)
    return [g[k] for k in sorted(g)]


@compared()
def test_func_model_ensembling_as_torch(T, P):
    T.manual_seed(0)
    F = T.func
    models = [T.nn.Linear(3, 2) for _ in range(4)]
    params, buffers = F.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    def fmodel(p, b, x): return F.functional_call(base, (p, b), (x,))
    x = T.randn(5, 3)
    out = F.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, x)
    return [out, sorted(params), params["weight"].requires_grad]


@compared()
def test_func_vmap_randomness_as_torch(T, P):
    T.manual_seed(0)
    F = T.func
    x = T.ones(3, 4)
    r1 = error_of(lambda: F.vmap(lambda r: T.nn.functional.dropout(r, 0.5))(x))
    T.manual_seed(0)
    a = F.vmap(lambda r: r * T.rand(()), randomness="same")(x)
    T.manual_seed(0)
    b = F.vmap(lambda r: r * T.rand(()), randomness="different")(x)
    return [r1, a, b]


@compared(rtol=1e-10)  # (float64)
def test_func_hessian_of_model_loss_as_torch(T, P):
    T.manual_seed(0)
    F = T.func
    m = T.nn.Linear(2, 1).double()
    x = T.randn(4, 2, dtype=T.float64); y = T.randn(4, 1, dtype=T.float64)
    params = dict(m.named_parameters())
    def loss(w): return ((F.functional_call(m, {"weight": w, "bias": params["bias"]}, (x,)) - y) ** 2).mean()
    return [F.hessian(loss)(params["weight"]), F.jacrev(F.jacrev(loss))(params["weight"])]


@compared()
def test_forward_pre_hook_with_kwargs_as_torch(T, P):
    T.manual_seed(0)
    class Net(T.nn.Module):
        def __init__(self):
            super().__init__(); self.lin = T.nn.Linear(3, 3)
        def forward(self, x, scale=1.0):
            return self.lin(x) * scale
    net = Net()
    seen = []
    def pre(module, args, kwargs):
        seen.append(sorted(kwargs)); kwargs["scale"] = 3.0
        return (args[0] * 2,), kwargs
    def post(module, args, kwargs, output):
        seen.append(len(args)); return output + kwargs["scale"]
    h1 = net.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = net.register_forward_hook(post, with_kwargs=True)
    x = T.ones(1, 3)
    a = net(x, scale=0.5)
    h1.remove(); h2.remove()
    b = net(x)
    return [a, b, seen]


@compared()
def test_forward_pre_hook_positional_and_prepend_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(2, 2)
    order = []
    lin.register_forward_pre_hook(lambda m, inp: order.append("a"))
    lin.register_forward_pre_hook(lambda m, inp: (order.append("b"), inp[0] + 1)[1], prepend=True)
    lin.register_forward_hook(lambda m, inp, out: order.append("c"))
    lin.register_forward_hook(lambda m, inp, out: (order.append("d"), out * 0)[1], prepend=True)
    y = lin(T.ones(1, 2))
    return [y, order]


@compared()
def test_forward_hook_always_call_as_torch(T, P):
    lin = T.nn.Linear(2, 2)
    calls = []
    lin.register_forward_hook(lambda m, i, o: calls.append("always"), always_call=True)
    lin.register_forward_hook(lambda m, i, o: calls.append("normal"))
    r = error_of(lambda: lin(T.ones(1, 3)))
    return [r[:40], calls]


@compared()
def test_full_backward_hooks_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(T.nn.Linear(3, 4), T.nn.ReLU(), T.nn.Linear(4, 2))
    log = []
    def bhook(m, grad_input, grad_output):
        log.append([g.clone() if g is not None else None for g in grad_input])
        log.append([g.clone() for g in grad_output])
        return (grad_input[0] * 0.5,)
    def bpre(m, grad_output):
        log.append(grad_output[0].clone())
        return (grad_output[0] * 2,)
    net[2].register_full_backward_hook(bhook)
    net[2].register_full_backward_pre_hook(bpre)
    x = T.randn(2, 3, requires_grad=True)
    net(x).sum().backward()
    flat = []
    for item in log:
        flat += item if isinstance(item, list) else [item]
    return [x.grad, net[0].weight.grad, net[2].weight.grad] + flat


@compared()
def test_post_accumulate_grad_hook_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(3, 2)
    opts = {p: T.optim.SGD([p], lr=0.1) for p in m.parameters()}
    def hook(p):
        opts[p].step(); opts[p].zero_grad()
    for p in m.parameters(): p.register_post_accumulate_grad_hook(hook)
    x = T.randn(4, 3)
    for _ in range(2): m(x).pow(2).sum().backward()
    return [m.weight, m.bias, m.weight.grad is None, str(m.weight.grad)]


@compared()
def test_post_accumulate_grad_hook_errors_as_torch(T, P):
    x = T.ones(2, requires_grad=True)
    y = x * 2
    return [error_of(lambda: y.register_post_accumulate_grad_hook(lambda p: None)),
            error_of(lambda: T.ones(2).register_post_accumulate_grad_hook(lambda p: None))]


@compared()
def test_named_modules_options_as_torch(T, P):
    T.manual_seed(0)
    shared = T.nn.Linear(2, 2)
    net = T.nn.Sequential(shared, T.nn.ReLU(), shared, T.nn.Sequential(T.nn.Linear(2, 1)))
    a = [n for n, _ in net.named_modules()]
    b = [n for n, _ in net.named_modules(remove_duplicate=False)]
    c = [n for n, _ in net.named_modules(prefix="model")]
    d = [n for n, _ in net.named_parameters(remove_duplicate=False)]
    e = [n for n, _ in net.named_parameters(prefix="m", recurse=False)]
    f = [n for n, _ in net.named_children()]
    g = len(list(net.modules())); h = len(list(net.parameters()))
    return [a, b, c, d, e, f, g, h, str(net.get_submodule("3.0")), list(net.get_parameter("3.0.bias").shape)]


@compared()
def test_zero_grad_set_to_none_false_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(2, 2)
    m(T.ones(1, 2)).sum().backward()
    m.zero_grad(set_to_none=False)
    a = [m.weight.grad, m.bias.grad]
    m(T.ones(1, 2)).sum().backward()
    m.zero_grad()
    opt = T.optim.SGD(m.parameters(), lr=0.1)
    m(T.ones(1, 2)).sum().backward()
    opt.zero_grad(set_to_none=False)
    return a + [m.weight.grad is None, opt.param_groups[0]["params"][0].grad]


@compared()
def test_apply_and_requires_grad_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(T.nn.Linear(2, 3), T.nn.BatchNorm1d(3), T.nn.Linear(3, 1))
    visited = []
    net.apply(lambda m: visited.append(type(m).__name__))
    net[0].requires_grad_(False)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    net.train(False)
    modes = [m.training for m in net.modules()]
    net.eval().train()
    return [visited, trainable, modes, net[1].training, sum(p.numel() for p in net.parameters())]


@compared()
def test_buffers_state_dict_persistent_as_torch(T, P):
    class M(T.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = T.nn.Linear(2, 2)
            self.register_buffer("mask", T.ones(2), persistent=False)
            self.register_buffer("steps", T.zeros(1))
            self.register_buffer("none_buf", None)
    m = M()
    sd = m.state_dict()
    missing = m.load_state_dict({"lin.weight": T.zeros(2, 2), "lin.bias": T.zeros(2), "extra": T.ones(1)}, strict=False)
    return [list(sd.keys()), sorted(n for n, _ in m.named_buffers()), list(missing.missing_keys),
            list(missing.unexpected_keys), m.lin.weight, str(missing)]


@compared()
def test_load_state_dict_strict_error_as_torch(T, P):
    m = T.nn.Linear(2, 2)
    r1 = error_of(lambda: m.load_state_dict({"weight": T.zeros(2, 2)}))
    r2 = error_of(lambda: m.load_state_dict({"weight": T.zeros(3, 2), "bias": T.zeros(2)}))
    r3 = error_of(lambda: m.load_state_dict({"weight": T.zeros(2, 2), "bias": T.zeros(2), "x": T.zeros(1)}))
    return [r1, r2, r3]


@compared()
def test_state_dict_hooks_as_torch(T, P):
    m = T.nn.Linear(2, 2)
    calls = []
    m.register_state_dict_post_hook(lambda mod, sd, prefix, local_metadata: calls.append(sorted(sd)))
    m.register_load_state_dict_post_hook(lambda mod, keys: calls.append((list(keys.missing_keys), list(keys.unexpected_keys))))
    sd = m.state_dict()
    m.load_state_dict(sd)
    return [calls]


@compared()
def test_grad_mode_nesting_as_torch(T, P):
    x = T.ones(2, requires_grad=True)
    out = []
    with T.inference_mode():
        with T.inference_mode(mode=False):
            a = x * 2
        b = x * 2
        with T.enable_grad():
            c = x * 2
    out += [a.requires_grad, a.is_inference(), b.is_inference(), b.requires_grad, c.requires_grad, c.is_inference()]
    with T.no_grad():
        with T.inference_mode():
            d = x * 2
        with T.set_grad_enabled(True):
            e = x * 2
        T.set_grad_enabled(True)
        f = x * 2
    T.set_grad_enabled(True)
    out += [d.is_inference(), e.requires_grad, f.requires_grad, T.is_grad_enabled(), T.is_inference_mode_enabled()]
    return out


@compared()
def test_inference_tensor_errors_as_torch(T, P):
    with T.inference_mode():
        t = T.ones(2)
    w = T.ones(2, requires_grad=True)
    r1 = error_of(lambda: (t * w).sum().backward())
    r2 = error_of(lambda: t.add_(1))
    def inplace_saved():
        y = T.ones(2, requires_grad=True)
        z = y * t
        return z
    r3 = error_of(inplace_saved)
    r4 = error_of(lambda: t.requires_grad_())
    return [r1, r2, r3, r4, t.clone().is_inference()]


@compared()
def test_grad_mode_decorators_as_torch(T, P):
    x = T.ones(2, requires_grad=True)
    @T.no_grad()
    def gen():
        yield x * 2
        yield x * 3
    @T.enable_grad()
    def f(): return x * 2
    @T.inference_mode()
    def g(): return x * 2
    @T.no_grad
    def h(): return x * 2
    with T.no_grad():
        fo = f()
    outs = [v.requires_grad for v in gen()]
    return outs + [fo.requires_grad, g().requires_grad, g().is_inference(), h().requires_grad]


@compared()
def test_set_grad_enabled_function_form_as_torch(T, P):
    x = T.ones(2, requires_grad=True)
    T.set_grad_enabled(False)
    a = x * 2
    T.set_grad_enabled(True)
    b = x * 2
    prev = T.is_grad_enabled()
    with T.set_grad_enabled(mode=False):
        c = x * 2
    return [a.requires_grad, b.requires_grad, prev, c.requires_grad]


@compared()
def test_no_grad_inplace_on_leaf_as_torch(T, P):
    w = T.ones(3, requires_grad=True)
    r1 = error_of(lambda: w.add_(1))
    with T.no_grad():
        w.mul_(2)
        w[0] = 5.0
    r2 = error_of(lambda: w.data.add_(1))
    y = (w * 3).sum(); y.backward()
    return [r1, w, w.grad, w.is_leaf, w.grad_fn is None, r2]


@compared()
def test_generate_greedy_eos_list_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3, 17]])
    out = []
    g = m.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    out.append(g.tolist())
    stop = int(g[0, 6])
    g2 = m.generate(ids, max_new_tokens=8, eos_token_id=[stop, 30], pad_token_id=0)
    out.append(g2.tolist())
    g3 = m.generate(input_ids=ids, max_length=7, pad_token_id=0)
    out.append(g3.tolist())
    g4 = m.generate(ids, max_new_tokens=3, min_length=6, eos_token_id=stop, pad_token_id=0)
    out.append(g4.tolist())
    return out


@compared()
def test_generate_batch_left_padding_eos_as_torch(T, P):
    m = _model(T)
    ids = T.tensor([[0, 0, 5, 9], [4, 8, 3, 17]]); mask = T.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    g = m.generate(ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0)
    stop = int(g[0, 5])
    g2 = m.generate(ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0, eos_token_id=stop)
    return [g.tolist(), g2.tolist()]


@compared()
def test_generate_sampling_seed_twice_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3]])
    T.manual_seed(42)
    a = m.generate(ids, do_sample=True, max_new_tokens=5, temperature=0.8, top_k=10, pad_token_id=0)
    b = m.generate(ids, do_sample=True, max_new_tokens=5, temperature=0.8, top_k=10, pad_token_id=0)
    T.manual_seed(42)
    c = m.generate(ids, do_sample=True, max_new_tokens=5, temperature=0.8, top_k=10, pad_token_id=0)
    return [a.tolist(), b.tolist(), c.tolist(), T.rand(1)]


@compared()
def test_generate_generation_config_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3]])
    GC = transformers.GenerationConfig if T is torch else ml_generation.GenerationConfig
    cfg = GC(max_new_tokens=4, do_sample=False, repetition_penalty=1.5, pad_token_id=0)
    a = m.generate(ids, generation_config=cfg)
    b = m.generate(ids, generation_config=cfg, max_new_tokens=2)
    return [a.tolist(), b.tolist()]


@compared()
def test_generate_return_dict_greedy_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3]])
    g = m.generate(ids, max_new_tokens=3, return_dict_in_generate=True, output_scores=True, pad_token_id=0)
    return [g.sequences, list(g.scores), type(g).__name__]


@compared()
def test_generate_num_return_sequences_sampling_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9], [3, 17]])
    T.manual_seed(3)
    g = m.generate(ids, do_sample=True, num_return_sequences=3, max_new_tokens=4, pad_token_id=0, top_p=0.95)
    return [g.tolist()]


@compared()
def test_generate_kwargs_input_ids_and_errors_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3]])
    a = m.generate(input_ids=ids, attention_mask=T.ones_like(ids), max_new_tokens=2, pad_token_id=0)
    e1 = error_of(lambda: m.generate(ids, max_new_tokens=2, num_return_sequences=2, pad_token_id=0))
    return [a.tolist(), e1[:60]]


def _seeded_base(T, relu):
    """The same small base model each call (seed 0): Linear(4, 4)[, ReLU], Linear(4, 2), as PEFT's examples load it."""
    T.manual_seed(0)
    middle = [T.nn.ReLU()] if relu else []
    return T.nn.Sequential(T.nn.Linear(4, 4), *middle, T.nn.Linear(4, 2))


def _peft_pair(T, P):
    ref, mine = _llama_pair()
    return ref if T is torch else mine


@compared()
def test_peft_llama_lora_generate_merge_as_torch(T, P):
    base = _peft_pair(T, P)
    T.manual_seed(0)
    cfg = P.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False,
                       task_type="CAUSAL_LM")
    model = P.get_peft_model(base, cfg)
    ids = T.tensor([[5, 9, 3, 17]])
    out = model(input_ids=ids, labels=ids)
    g = model.generate(input_ids=ids, max_new_tokens=4, pad_token_id=0)
    with model.disable_adapter():
        g0 = model.generate(input_ids=ids, max_new_tokens=4, pad_token_id=0)
    merged = model.merge_and_unload()
    g2 = merged.generate(ids, max_new_tokens=4, pad_token_id=0)
    return [out.loss, out.logits[0, -1], g.tolist(), g0.tolist(), g2.tolist(), type(merged).__name__]


@compared()
def test_peft_save_from_pretrained_roundtrip_as_torch(T, P):
    T.manual_seed(0)
    mk = functools.partial(_seeded_base, T, relu=True)
    m = P.get_peft_model(mk(), P.LoraConfig(r=2, target_modules=["0"], modules_to_save=["2"], init_lora_weights=False))
    x = T.randn(3, 4)
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        files = sorted(os.listdir(d))
        loaded = P.PeftModel.from_pretrained(mk(), d)
        trainable = sorted(n for n, p in loaded.named_parameters() if p.requires_grad)
        loaded2 = P.PeftModel.from_pretrained(mk(), d, is_trainable=True)
        trainable2 = sorted(n for n, p in loaded2.named_parameters() if p.requires_grad)
        sd = P.get_peft_model_state_dict(loaded)
    return [files, m(x), loaded(x), trainable, trainable2, sorted(sd), loaded.training, loaded2.training]


@compared()
def test_peft_load_adapter_and_set_as_torch(T, P):
    mk = functools.partial(_seeded_base, T, relu=True)
    T.manual_seed(1)
    a = P.get_peft_model(mk(), P.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    T.manual_seed(2)
    b = P.get_peft_model(mk(), P.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False))
    x = T.randn(2, 4)
    with tempfile.TemporaryDirectory() as d:
        a.save_pretrained(os.path.join(d, "a")); b.save_pretrained(os.path.join(d, "b"))
        m = P.PeftModel.from_pretrained(mk(), os.path.join(d, "a"), adapter_name="first")
        m.load_adapter(os.path.join(d, "b"), adapter_name="second")
        out = [m(x), m.active_adapter, list(m.peft_config)]
        m.set_adapter("second"); out += [m(x), m.active_adapter]
        with m.disable_adapter(): out.append(m(x))
        out.append(m(x))
        m.base_model.set_adapter(["first", "second"]); out.append(m(x))
    return out


@compared()
def test_peft_modules_to_save_training_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(3, 4), T.nn.ReLU(), T.nn.Linear(4, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0"], modules_to_save=["2"]))
    opt = T.optim.Adam(m.parameters(), lr=0.05)
    x = T.randn(5, 3); y = T.tensor([0, 1, 0, 1, 1])
    for _ in range(3):
        l = T.nn.functional.cross_entropy(m(x), y); opt.zero_grad(); l.backward(); opt.step()
    with m.disable_adapter():
        off = m(x)
    mts = m.base_model.model[2]
    names = sorted(n for n, _ in m.named_parameters())
    sd = P.get_peft_model_state_dict(m)
    merged = m.merge_and_unload()
    return [l, off, merged(x), names, sorted(sd), type(mts).__name__]


@compared()
def test_peft_set_peft_model_state_dict_as_torch(T, P):
    mk = functools.partial(_seeded_base, T, relu=False)
    src = P.get_peft_model(mk(), P.LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False))
    sd = P.get_peft_model_state_dict(src)
    dst = P.get_peft_model(mk(), P.LoraConfig(r=2, target_modules=["0", "1"]))
    res = P.set_peft_model_state_dict(dst, sd)
    x = T.ones(1, 4)
    return [src(x), dst(x), sorted(res.unexpected_keys), len(res.missing_keys) > 0]


@compared()
def test_peft_add_weighted_adapter_positional_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Linear(4, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False), "x")
    m.add_adapter("y", P.LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False))
    m.add_weighted_adapter(["x", "y"], [0.5, 0.5], "avg")
    m.set_adapter("avg")
    x = T.ones(1, 4)
    out = [m(x), sorted(m.peft_config), m.peft_config["avg"].r, m.peft_config["avg"].lora_alpha]
    m.add_weighted_adapter(adapters=["x", "y"], weights=[2.0, -1.0], adapter_name="diff", combination_type="linear")
    m.set_adapter("diff"); out.append(m(x))
    m.add_weighted_adapter(["x", "y"], [1.0, 0.5], "low", combination_type="svd", svd_rank=1)
    m.set_adapter("low"); out += [m(x), m.peft_config["low"].r, m.peft_config["low"].lora_alpha]
    out.append(error_of(lambda: m.add_weighted_adapter(["x", "nope"], [1.0, 1.0], "bad")))
    return out


@compared()
def test_peft_merge_and_unload_adapter_names_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Linear(4, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False), "x")
    m.add_adapter("y", P.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    x = T.ones(1, 4)
    merged = m.merge_and_unload(adapter_names=["y"])
    return [merged(x), type(merged[0]).__name__]


@compared()
def test_peft_enable_disable_adapter_layers_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Linear(4, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False))
    x = T.ones(1, 4)
    a = m(x)
    m.base_model.disable_adapter_layers(); b = m(x)
    m.base_model.enable_adapter_layers(); c = m(x)
    m.merge_adapter(); d = m(x)
    with m.disable_adapter(): e = m(x)
    f = m(x)
    return [a, b, c, d, e, f]


@compared()
def test_peft_delete_and_active_adapters_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Linear(4, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    m.add_adapter("two", P.LoraConfig(r=3, target_modules=["1"], init_lora_weights=False))
    m.set_adapter("two")
    out = [m.active_adapters, m.active_adapter, m(T.ones(1, 4))]
    m.delete_adapter("default")
    out += [list(m.peft_config), m(T.ones(1, 4)), sorted(n for n, _ in m.named_parameters())]
    out.append(error_of(lambda: m.set_adapter("default")).startswith("ValueError: Adapter default not found."))
    return out


@compared()
def test_checkpoint_use_reentrant_unset_as_torch(T, P):
    lin = T.nn.Linear(2, 2)
    x = T.ones(1, 2, requires_grad=True)
    r = error_of(lambda: T.utils.checkpoint.checkpoint(lin, x))
    return [r]


@compared()
def test_checkpoint_tuple_and_nontensor_outputs_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(3, 3)
    def f(a, b):
        h = lin(a) * b
        return h, h.sum(), "tag", 3
    x = T.randn(2, 3, requires_grad=True); b = T.randn(2, 3, requires_grad=True)
    out = []
    for re in (True, False):
        h, s, tag, n = T.utils.checkpoint.checkpoint(f, x, b, use_reentrant=re)
        (h.pow(2).sum() + s).backward()
        out += [h, s, tag, n, x.grad.clone(), b.grad.clone(), lin.weight.grad.clone()]
        x.grad = None; b.grad = None; lin.zero_grad()
    return out


@compared()
def test_checkpoint_reentrant_kwargs_error_as_torch(T, P):
    lin = T.nn.Linear(2, 2)
    return [error_of(lambda: T.utils.checkpoint.checkpoint(lambda a, s=1: lin(a) * s, T.ones(1, 2), s=2, use_reentrant=True))]


@compared()
def test_checkpoint_reentrant_grad_api_error_as_torch(T, P):
    lin = T.nn.Linear(2, 2)
    x = T.ones(1, 2, requires_grad=True)
    y = T.utils.checkpoint.checkpoint(lin, x, use_reentrant=True)
    return [error_of(lambda: T.autograd.grad(y.sum(), x))]


@compared()
def test_checkpoint_sequential_reentrant_and_segments_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(*[T.nn.Sequential(T.nn.Linear(3, 3), T.nn.Tanh()) for _ in range(5)])
    x = T.randn(2, 3, requires_grad=True)
    y = T.utils.checkpoint.checkpoint_sequential(net, segments=3, input=x, use_reentrant=True)
    y.sum().backward()
    return [y, x.grad, net[4][0].weight.grad]


@compared()
def test_checkpoint_in_eval_no_grad_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(2, 2)
    with T.no_grad():
        y = T.utils.checkpoint.checkpoint(lin, T.ones(1, 2), use_reentrant=False)
    return [y, y.requires_grad]


@compared()
def test_grad_scaler_two_optimizers_unscale_twice_as_torch(T, P):
    T.manual_seed(0)
    a = T.nn.Linear(3, 3); b = T.nn.Linear(3, 1)
    oa = T.optim.SGD(a.parameters(), lr=0.1); ob = T.optim.Adam(b.parameters(), lr=0.01)
    scaler = T.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=4.0, backoff_factor=0.25, growth_interval=1)
    x = T.randn(4, 3); out = []
    for _ in range(3):
        oa.zero_grad(); ob.zero_grad()
        with T.autocast("cpu", dtype=T.bfloat16):
            loss = b(a(x).relu()).float().mean()
        scaler.scale(loss).backward()
        scaler.unscale_(oa)
        out.append(error_of(lambda: scaler.unscale_(oa)))
        scaler.step(oa); scaler.step(ob); scaler.update()
        out += [scaler.get_scale(), a.weight.grad]
    out += [a.weight, b.weight, scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval(),
            scaler.is_enabled()]
    return out


@compared()
def test_grad_scaler_disabled_and_update_new_scale_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(2, 1)
    opt = T.optim.SGD(m.parameters(), lr=0.1)
    s = T.amp.GradScaler("cpu", enabled=False)
    loss = m(T.ones(1, 2)).sum()
    scaled = s.scale(loss)
    scaled.backward(); s.step(opt); s.update()
    out = [scaled, s.get_scale(), m.weight]
    s3 = T.amp.GradScaler("cpu", init_scale=16.0)
    m(T.ones(1, 2)).sum().backward()
    s3.scale(T.tensor(1.0))
    out.append(error_of(lambda: s3.update(new_scale=4.0)))
    out.append(s3.get_scale())
    out.append(error_of(lambda: s3.update(new_scale=T.tensor([2.0]))))
    out.append(s3.get_scale())
    return out


@compared()
def test_grad_scaler_state_dict_roundtrip_as_torch(T, P):
    s = T.amp.GradScaler("cpu", init_scale=256.0, growth_interval=3)
    m = T.nn.Linear(2, 1); opt = T.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad(); s.scale(m(T.ones(1, 2)).sum()).backward(); s.step(opt); s.update()
    sd = s.state_dict()
    s2 = T.amp.GradScaler("cpu"); s2.load_state_dict(sd)
    return [sorted(sd), sd["scale"], sd["_growth_tracker"], s2.get_scale(), s2.state_dict()["_growth_tracker"]]


@compared()
def test_grad_scaler_scale_list_and_step_kwargs_as_torch(T, P):
    s = T.amp.GradScaler("cpu", init_scale=4.0)
    a, b = T.tensor(1.5), T.tensor([2.0, 3.0])
    r = s.scale([a, (b, a)])
    return [r[0], r[1][0], r[1][1], type(r).__name__, type(r[1]).__name__]


@compared()
def test_autocast_cpu_float16_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(6, 6), T.nn.ReLU(), T.nn.Linear(6, 3))
    x = T.randn(4, 6)
    with T.autocast("cpu", dtype=T.float16):
        y = m(x); s = y.softmax(-1); l = T.nn.functional.cross_entropy(y, T.tensor([0, 1, 2, 0]))
        mm = x @ x.T; bmm = T.bmm(x[None], x.T[None]); ad = x + y.float().sum()
    l.backward()
    return [y.dtype == T.float16, str(s.dtype)[-7:], l.dtype == T.float32, y, l, m[0].weight.grad, str(mm.dtype)[-7:],
            str(bmm.dtype)[-7:], str(ad.dtype)[-7:], mm]


@compared()
def test_autocast_decorator_and_nested_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(3, 3)
    x = T.randn(2, 3)
    @T.autocast(device_type="cpu", dtype=T.bfloat16)
    def f(v): return lin(v)
    a = f(x)
    with T.autocast("cpu", dtype=T.bfloat16):
        with T.autocast("cpu", enabled=False):
            b = lin(x)
        c = lin(x)
        d = T.is_autocast_enabled("cpu"), T.get_autocast_dtype("cpu")
    return [str(a.dtype)[-8:], str(b.dtype)[-7:], c, str(d[1])[-8:], d[0], T.is_autocast_enabled("cpu")]


@compared()
def test_autocast_conv_and_layernorm_bf16_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(T.nn.Conv1d(2, 4, 3), T.nn.GroupNorm(2, 4), T.nn.GELU())
    ln = T.nn.LayerNorm(4)
    x = T.randn(2, 2, 6)
    with T.autocast("cpu", dtype=T.bfloat16):
        h = net(x); o = ln(h.transpose(1, 2))
        lsm = T.log_softmax(o, -1); sm = T.nn.functional.softmax(o, -1)
    return [str(h.dtype)[-8:], str(o.dtype)[-8:], str(lsm.dtype)[-8:], h, o, lsm, sm]


@compared()
def test_checkpoint_odd_outputs_as_torch(T, P):
    a = T.arange(1.0, 4.0, requires_grad=True)
    out = []
    for re in (True, False):
        out.append(T.utils.checkpoint.checkpoint(lambda t: 5, a, use_reentrant=re))
        h, n = T.utils.checkpoint.checkpoint(lambda t: (t * 2, T.tensor([3, 4])), a, use_reentrant=re)
        (h * h).sum().backward()
        out += [h, n, a.grad.clone(), h.requires_grad, n.requires_grad]
        a.grad = None
        l = T.utils.checkpoint.checkpoint(lambda t: [t.sin(), None, t.cos() * 2], a, use_reentrant=re)
        out += [type(l).__name__, l[0], l[2], l[1] is None, l[0].requires_grad]
        if not re:
            (l[0] + l[2]).sum().backward(); out.append(a.grad.clone())
        a.grad = None
    return out


@compared()
def test_sdpa_fully_masked_rows_as_torch(T, P):
    T.manual_seed(0)
    F = T.nn.functional
    q = T.randn(1, 2, 3, 4); k = T.randn(1, 2, 3, 4); v = T.randn(1, 2, 3, 4)
    m = T.tensor([[True, True, False], [False, False, False], [True, False, True]])
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    fm = T.zeros(3, 3).masked_fill(~m, float("-inf"))
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=fm)
    c = F.scaled_dot_product_attention(q[0], k[0], v[0], attn_mask=m)
    qg = q.clone().requires_grad_()
    d = F.scaled_dot_product_attention(qg, k, v, attn_mask=m); d.sum().backward()
    return [a, b, c, d, qg.grad]


@compared()
def test_mha_fully_masked_key_padding_as_torch(T, P):
    T.manual_seed(0)
    mha = T.nn.MultiheadAttention(4, 2, batch_first=True)
    x = T.randn(2, 3, 4)
    kpm = T.tensor([[True, True, True], [False, True, False]])
    o, w = mha(x, x, x, key_padding_mask=kpm)
    mha.eval()
    with T.no_grad():
        o2, w2 = mha(x, x, x, key_padding_mask=kpm)
    return [o, w, o2, w2]


@compared()
def test_mha_add_zero_attn_and_bias_kv_with_masks_as_torch(T, P):
    T.manual_seed(0)
    mha = T.nn.MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True, batch_first=True)
    x = T.randn(2, 3, 4)
    kpm = T.tensor([[False, False, True], [False, False, False]])
    am = T.triu(T.ones(3, 3, dtype=T.bool), 1)
    o, w = mha(x, x, x, key_padding_mask=kpm, attn_mask=am, average_attn_weights=False)
    o.sum().backward()
    return [o, w, mha.bias_k.grad, mha.in_proj_bias.grad]


@compared()
def test_mha_eval_fast_path_batch_first_as_torch(T, P):
    T.manual_seed(0)
    mha = T.nn.MultiheadAttention(8, 4, batch_first=True).eval()
    x = T.randn(2, 5, 8)
    kpm = T.tensor([[False] * 5, [False, False, False, True, True]])
    with T.inference_mode():
        o, w = mha(x, x, x, key_padding_mask=kpm, need_weights=False)
        o2, w2 = mha(x, x, x, key_padding_mask=kpm)
    return [o, w is None, o2, w2]


@compared()
def test_mha_mask_type_mismatch_warns_as_torch(T, P):
    T.manual_seed(0)
    mha = T.nn.MultiheadAttention(4, 2, batch_first=True)
    x = T.randn(1, 3, 4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        o, _ = mha(x, x, x, key_padding_mask=T.tensor([[False, False, True]]),
                   attn_mask=T.zeros(3, 3))
    return [o, [str(r.message)[:100] for r in rec]]


@compared()
def test_mha_errors_as_torch(T, P):
    mha = T.nn.MultiheadAttention(4, 2, batch_first=True)
    x = T.randn(1, 3, 4)
    return [error_of(lambda: T.nn.MultiheadAttention(5, 2)),
            error_of(lambda: mha(x, x, x, attn_mask=T.zeros(2, 2))),
            error_of(lambda: mha(x, x, x, attn_mask=T.zeros(3, 3, 3))),
            error_of(lambda: mha(x, x, x, key_padding_mask=T.zeros(1, 2, dtype=T.bool))),
            error_of(lambda: mha(x, x, x, is_causal=True))]


@compared()
def test_embedding_from_pretrained_max_norm_renorms_in_place_as_torch(T, P):
    w = T.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    e = T.nn.Embedding.from_pretrained(w.clone(), freeze=False, max_norm=1.0)
    out = e(T.tensor([0, 2]))
    ww = w.clone()
    f = T.nn.functional.embedding(T.tensor([[2, 2]]), ww, max_norm=2.0, norm_type=2.0)
    return [out, e.weight, f, ww]


@compared()
def test_embedding_padding_idx_grad_and_init_as_torch(T, P):
    T.manual_seed(0)
    e = T.nn.Embedding(4, 3, padding_idx=1)
    opt = T.optim.SGD(e.parameters(), lr=1.0)
    e(T.tensor([[1, 1, 2], [0, 1, 3]])).sum().backward(); opt.step()
    out = [e.weight, e.weight.grad]
    e2 = T.nn.Embedding(3, 2, _weight=T.ones(3, 2), padding_idx=0)
    out += [e2.weight, e2.weight.requires_grad, str(e), str(e2), str(T.nn.Embedding(5, 2, max_norm=1.0, sparse=False))]
    return out


@compared()
def test_embedding_errors_as_torch(T, P):
    e = T.nn.Embedding(4, 3)
    return [error_of(lambda: e(T.tensor([4]))), error_of(lambda: e(T.tensor([1.0]))), error_of(lambda: T.nn.Embedding(4, 3, padding_idx=4)),
            error_of(lambda: e(T.tensor([-1])))]


@compared()
def test_clip_grad_value_foreach_and_norm_types_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(3, 3), T.nn.Linear(3, 1))
    m(T.randn(4, 3)).sum().backward()
    g0 = [p.grad.clone() for p in m.parameters()]
    out = []
    for nt in [0.5, 1, 2, 3.0, float("inf"), -float("inf"), 0]:
        for p, g in zip(m.parameters(), g0): p.grad = g.clone()
        out.append(T.nn.utils.clip_grad_norm_(m.parameters(), 0.2, norm_type=nt, foreach=True))
        out += [p.grad for p in m.parameters()]
    T.nn.utils.clip_grad_value_(m.parameters(), 0.01, foreach=False)
    return out + [p.grad for p in m.parameters()]


@compared()
def test_clip_grad_half_and_mixed_dtypes_as_torch(T, P):
    T.manual_seed(0)
    a = T.nn.Parameter(T.randn(5).half()); b = T.nn.Parameter(T.randn(3))
    a.grad = T.randn(5).half() * 10; b.grad = T.randn(3)
    n = T.nn.utils.clip_grad_norm_([a, b], 1.0)
    return [n, str(n.dtype)[-7:], a.grad, b.grad]


@compared()
def test_parameters_to_vector_roundtrip_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(2, 3), T.nn.Linear(3, 1))
    v = T.nn.utils.parameters_to_vector(m.parameters())
    T.nn.utils.vector_to_parameters(v * 2, m.parameters())
    return [v, list(m.parameters()), error_of(lambda: T.nn.utils.vector_to_parameters([1.0], m.parameters()))]


@compared()
def test_global_module_hooks_as_torch(T, P):
    T.manual_seed(0)
    calls = []
    h1 = T.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    h2 = T.nn.modules.module.register_module_forward_pre_hook(lambda m, i: calls.append("pre:" + type(m).__name__))
    try:
        net = T.nn.Sequential(T.nn.Linear(2, 2), T.nn.ReLU())
        y = net(T.ones(1, 2))
    finally:
        h1.remove(); h2.remove()
    net(T.ones(1, 2))
    return [y, calls]


@compared()
def test_backward_hook_on_multi_input_module_as_torch(T, P):
    T.manual_seed(0)
    class Add(T.nn.Module):
        def forward(self, a, b): return a * 2 + b
    m = Add()
    seen = []
    m.register_full_backward_hook(lambda mod, gi, go: seen.append([g if g is None else g.clone() for g in gi] + [go[0].clone()]))
    a = T.randn(3, requires_grad=True); b = T.randn(3)
    m(a, b).sum().backward()
    return [a.grad, len(seen[0]), seen[0][0], seen[0][1] is None, seen[0][2]]


@compared()
def test_tensor_hooks_order_and_retain_as_torch(T, P):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    y.retain_grad()
    order = []
    y.register_hook(lambda g: order.append(("y1", g.tolist())) or g * 2)
    y.register_hook(lambda g: order.append(("y2", g.tolist())))
    z = (y ** 2).sum()
    z.backward()
    return [x.grad, y.grad, order]


@compared()
def test_module_zero_grad_and_requires_grad_false_paths_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(2, 2)
    m.weight.requires_grad_(False)
    m(T.ones(1, 2)).sum().backward()
    out = [m.weight.grad is None, m.bias.grad]
    m.zero_grad(set_to_none=False)
    return out + [m.bias.grad, m.weight.grad is None]


@compared()
def test_parametrize_assign_through_right_inverse_as_torch(T, P):
    T.manual_seed(0)
    class Sym(T.nn.Module):
        def forward(self, X): return X.triu() + X.triu(1).mT
        def right_inverse(self, A): return A.triu()
    lin = T.nn.Linear(3, 3)
    T.nn.utils.parametrize.register_parametrization(lin, "weight", Sym())
    lin.weight = T.arange(9.0).reshape(3, 3)
    out = [lin.weight, lin.parametrizations.weight.original]
    out.append(T.nn.utils.parametrize.type_before_parametrizations(lin).__name__)
    out.append(type(lin).__name__)
    out.append(str(lin))
    T.nn.utils.parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
    out += [lin.weight, type(lin).__name__]
    return out


@compared()
def test_parametrize_two_stacked_and_bias_as_torch(T, P):
    T.manual_seed(0)
    class Scale(T.nn.Module):
        def __init__(self, s): super().__init__(); self.s = s
        def forward(self, X): return X * self.s
    lin = T.nn.Linear(2, 2)
    P_ = T.nn.utils.parametrize
    P_.register_parametrization(lin, "weight", Scale(2.0))
    P_.register_parametrization(lin, "weight", Scale(3.0))
    P_.register_parametrization(lin, "bias", Scale(0.5))
    y = lin(T.ones(1, 2)); y.sum().backward()
    return [y, lin.parametrizations.weight.original.grad, lin.parametrizations.bias.original.grad,
            len(lin.parametrizations.weight), sorted(n for n, _ in lin.named_parameters()),
            sorted(lin.state_dict())]


@compared()
def test_weight_norm_dim_none_and_conv_as_torch(T, P):
    T.manual_seed(0)
    a = T.nn.utils.parametrizations.weight_norm(T.nn.Conv1d(2, 3, 3), dim=None)
    b = T.nn.utils.weight_norm(T.nn.Conv1d(2, 3, 3), dim=1)
    x = T.randn(1, 2, 5)
    ya = a(x); yb = b(x); (ya.sum() + yb.sum()).backward()
    return [ya, yb, list(a.parametrizations.weight.original0.shape), list(b.weight_g.shape), b.weight_v.grad,
            a.parametrizations.weight.original0.grad]


@compared()
def test_spectral_norm_parametrization_eval_state_dict_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.utils.parametrizations.spectral_norm(T.nn.Linear(4, 3), n_power_iterations=2)
    x = T.randn(2, 4)
    m(x); m(x)
    sd = m.state_dict()
    T.manual_seed(1)
    m2 = T.nn.utils.parametrizations.spectral_norm(T.nn.Linear(4, 3), n_power_iterations=2)
    m2.load_state_dict(sd)
    m2.eval(); m.eval()
    return [sorted(sd), m(x), m2(x)]


@compared()
def test_one_cycle_cos_three_phase_no_momentum_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=0.1)
    s = T.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.5], total_steps=9, three_phase=True, cycle_momentum=False)
    out = []
    for _ in range(9): opt.step(); s.step(); out.append(opt.param_groups[0]["lr"])
    out.append("momentum" in opt.param_groups[0])
    opt2 = T.optim.SGD(p, lr=0.1)
    out.append(error_of(lambda: T.optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.1)))
    out.append(error_of(lambda: T.optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.1, total_steps=5, pct_start=1.5)))
    out.append(error_of(lambda: T.optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.1, total_steps=5, anneal_strategy="x")))
    return out


@compared()
def test_plateau_state_dict_and_max_mode_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=1.0)
    s = T.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0, threshold_mode="abs",
                                               threshold=0.01)
    out = []
    for v in [0.5, 0.505, 0.6, 0.6, 0.7, 0.69]:
        s.step(v); out.append(opt.param_groups[0]["lr"])
    sd = s.state_dict()
    out += [sd["best"], sd["num_bad_epochs"], sd["last_epoch"], s.get_last_lr()[0]]
    return out


@compared()
def test_lambda_lr_per_group_and_state_as_torch(T, P):
    p1 = [T.nn.Parameter(T.zeros(1))]; p2 = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.AdamW([{"params": p1}, {"params": p2, "lr": 0.01}], lr=0.1)
    s = T.optim.lr_scheduler.LambdaLR(opt, [lambda e: 0.9 ** e, lambda e: 1.0 / (e + 1)])
    out = []
    for _ in range(4): opt.step(); s.step(); out += s.get_last_lr()
    sd = s.state_dict()
    out += [[f is None for f in sd["lr_lambdas"]], sd["base_lrs"], sd["last_epoch"]]
    return out


@compared()
def test_cyclic_lr_exp_range_and_momentum_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=0.1, momentum=0.9)
    s = T.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=2,
                                      mode="exp_range", gamma=0.9, base_momentum=0.8, max_momentum=0.95)
    out = []
    for _ in range(8): opt.step(); s.step(); out += [opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]]
    return out


@compared()
def test_vmap_over_module_with_batchnorm_errors_as_torch(T, P):
    T.manual_seed(0)
    F = T.func
    m = T.nn.Sequential(T.nn.Linear(3, 3), T.nn.BatchNorm1d(3))
    params = dict(m.named_parameters()); bufs = dict(m.named_buffers())
    x = T.randn(4, 2, 3)
    r = error_of(lambda: F.vmap(lambda xx: F.functional_call(m, (params, bufs), (xx,)))(x))
    m.eval()
    y = F.vmap(lambda xx: F.functional_call(m, (params, bufs), (xx,)))(x)
    return [r[:120], y]


@compared(rtol=1e-10)  # (float64)
def test_func_jacrev_dict_and_has_aux_as_torch(T, P):
    F = T.func
    x = T.tensor([0.5, 1.5], dtype=T.float64)
    def f(d):
        return (d["a"] * d["b"].exp()).sum(), d["a"].detach() * 2
    jac, aux = F.jacrev(f, has_aux=True)({"a": x, "b": x * 2})
    jf = F.jacfwd(lambda a, b: a * b.sin(), argnums=(0, 1))(x, x)
    vj = F.vmap(F.jacrev(lambda v: v.sin().sum()))(x.reshape(2, 1))
    return [jac["a"], jac["b"], aux, jf[0], jf[1], vj]


@compared()
def test_hooks_with_kwargs_returning_none_and_handles_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(2, 2)
    seen = []
    h = lin.register_forward_pre_hook(lambda m, a, k: seen.append((len(a), sorted(k))), with_kwargs=True)
    h2 = lin.register_forward_hook(lambda m, a, k, o: seen.append(tuple(o.shape)), with_kwargs=True)
    y = lin(input=T.ones(1, 2))
    h.remove(); h.remove(); h2.remove()
    with h:
        pass
    return [y, seen, len(lin._forward_pre_hooks), len(lin._forward_hooks)]


@compared()
def test_backward_hook_module_input_no_grad_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(T.nn.Linear(2, 3), T.nn.Tanh())
    got = []
    net[0].register_full_backward_hook(lambda m, gi, go: got.append((gi[0] is None, go[0].clone())))
    net(T.ones(4, 2)).sum().backward()
    return [got[0][0], got[0][1], net[0].weight.grad]


@compared()
def test_post_accumulate_hook_with_accumulation_and_retain_as_torch(T, P):
    w = T.nn.Parameter(T.tensor([1.0, 2.0]))
    log = []
    w.register_post_accumulate_grad_hook(lambda p: log.append(p.grad.clone()))
    (w * 2).sum().backward()
    (w * 3).sum().backward()
    y = (w ** 2).sum()
    y.backward(retain_graph=True); y.backward()
    return log


@compared()
def test_generate_stopping_and_logits_processor_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3]])
    lib = transformers if T is torch else ml_generation
    class Ban(lib.LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, 7] = -float("inf")
            return scores
    g = m.generate(ids, max_new_tokens=5, logits_processor=lib.LogitsProcessorList([Ban()]), pad_token_id=0)
    crit = lib.StoppingCriteriaList([lib.MaxLengthCriteria(max_length=5)])
    g2 = m.generate(ids, max_new_tokens=10, stopping_criteria=crit, pad_token_id=0)
    return [g.tolist(), g2.tolist()]


@compared()
def test_peft_state_dict_per_adapter_and_selected_save_as_torch(T, P):
    mk = functools.partial(_seeded_base, T, relu=False)
    m = P.get_peft_model(mk(), P.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    m.add_adapter("b", P.LoraConfig(r=2, target_modules=["1"], init_lora_weights=False))
    out = [sorted(P.get_peft_model_state_dict(m)), sorted(P.get_peft_model_state_dict(m, adapter_name="b"))]
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d, selected_adapters=["b"])
        out.append(sorted(os.listdir(d)))
        out.append(sorted(os.listdir(os.path.join(d, "b"))) if os.path.isdir(os.path.join(d, "b")) else "none")
        m.save_pretrained(d)
        out.append(sorted(os.listdir(d)))
    return out


@compared()
def test_peft_inference_mode_config_and_print_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Linear(4, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0"], inference_mode=True))
    return [sorted(n for n, p in m.named_parameters() if p.requires_grad), m.get_nb_trainable_parameters()]


@compared()
def test_autocast_cache_and_dtype_checks_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(3, 3)
    x = T.randn(2, 3)
    with T.autocast("cpu", dtype=T.bfloat16, cache_enabled=False):
        a = lin(x)
    with warnings.catch_warnings(record=True) as rec:  # (an unsupported dtype: autocast turns itself off)
        warnings.simplefilter("always")
        with T.autocast("cpu", dtype=T.float64):
            off = [lin(x), T.is_autocast_enabled("cpu")]
    r = [str(w.message) for w in rec] + off
    with T.autocast("cpu", dtype=T.bfloat16):
        i = T.addmm(T.zeros(3), x, lin.weight.T)
        e = T.exp(x)
        cat = T.cat([x, x.bfloat16()])
    return [str(a.dtype)[-8:], a, r, str(i.dtype)[-8:], str(e.dtype)[-7:], str(cat.dtype)[-7:]]


@compared()
def test_generate_user_eos_and_length_criteria_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3], [4, 8, 2]])
    lib = transformers if T is torch else ml_generation
    g = m.generate(ids, max_new_tokens=6, pad_token_id=0)
    stop = int(g[0, 4])
    eos = lib.EosTokenCriteria(eos_token_id=[stop])
    crit = lib.StoppingCriteriaList([eos])
    g2 = m.generate(ids, max_new_tokens=6, stopping_criteria=crit, pad_token_id=0)
    ml_ = lib.MaxLengthCriteria(5)
    direct = [ml_(T.ones(2, 5, dtype=T.long), None), ml_(T.ones(2, 4, dtype=T.long), None),
              eos(T.tensor([[1, stop], [stop, 1]]), None), eos(T.tensor([[1, stop], [stop, 1]]), None, new_token_length=2),
              lib.EosTokenCriteria(T.tensor([stop, 3]))(T.tensor([[1, 3]]), None)]
    return [g.tolist(), g2.tolist(), [d.tolist() for d in direct], [str(d.dtype)[-4:] for d in direct]]


@compared()
def test_generate_users_criteria_take_precedence_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3], [4, 8, 2]])
    lib = transformers if T is torch else ml_generation
    a = m.generate(ids, max_new_tokens=3, pad_token_id=0,
                   stopping_criteria=lib.StoppingCriteriaList([lib.MaxLengthCriteria(max_length=9)]))
    plain = m.generate(ids, max_new_tokens=10, pad_token_id=0, eos_token_id=8)
    b = m.generate(ids, max_new_tokens=10, pad_token_id=0, eos_token_id=8,
                   stopping_criteria=[lib.EosTokenCriteria(eos_token_id=int(plain[1, 3]))])
    c = m.generate(ids, max_new_tokens=4, pad_token_id=0, stopping_criteria=[lib.MaxLengthCriteria(2)])
    return [a.tolist(), plain.tolist(), b.tolist(), c.tolist()]


@compared()
def test_orthogonal_maps_as_torch(T, P):
    out = []
    for shape, kw in [((3, 3), {}), ((5, 3), {}), ((3, 5), {}), ((4, 4), dict(orthogonal_map="cayley")),
                      ((4, 2), dict(orthogonal_map="matrix_exp")), ((4, 4), dict(orthogonal_map="householder")),
                      ((4, 3), dict(orthogonal_map="householder", use_trivialization=False))]:
        T.manual_seed(0)
        lin = T.nn.utils.parametrizations.orthogonal(T.nn.Linear(shape[1], shape[0]), **kw)
        Q = lin.weight
        x = T.randn(2, shape[1])
        y = lin(x); y.pow(2).sum().backward()
        out += [Q, lin.parametrizations.weight.original.grad, sorted(n for n, _ in lin.named_buffers())]
    return out


@compared()
def test_orthogonal_training_stays_orthogonal_as_torch(T, P):
    T.manual_seed(0)
    rnn_like = T.nn.utils.parametrizations.orthogonal(T.nn.Linear(4, 4, bias=False))
    opt = T.optim.SGD(rnn_like.parameters(), lr=0.1)
    x = T.randn(6, 4)
    for _ in range(3):
        opt.zero_grad(); rnn_like(x).sum().backward(); opt.step()
    Q = rnn_like.weight
    rnn_like.weight = T.eye(4)
    return [Q, (Q.T @ Q - T.eye(4)).abs().max() < 1e-5, rnn_like.weight,
            error_of(lambda: T.nn.utils.parametrizations.orthogonal(T.nn.Linear(3, 3), orthogonal_map="svd")),
            error_of(lambda: T.nn.utils.parametrizations.orthogonal(T.nn.LayerNorm(3))),
            error_of(lambda: T.nn.utils.parametrizations.orthogonal(T.nn.Linear(3, 3), orthogonal_map="cayley",
                                                               use_trivialization=False))]


@compared()
def test_peft_print_trainable_and_base_model_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(8, 8), T.nn.Linear(8, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0"]))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        m.print_trainable_parameters()
    return [buf.getvalue(), type(m.get_base_model()).__name__, m.get_base_model() is m.base_model.model]


@compared()
def test_peft_config_roundtrip_as_torch(T, P):
    cfg = P.LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], lora_dropout=0.1, bias="none",
                       modules_to_save=["head"])
    with tempfile.TemporaryDirectory() as d:
        cfg.save_pretrained(d)
        back = P.LoraConfig.from_pretrained(d)
        back2 = P.PeftConfig.from_pretrained(d)
    return [back.r, back.lora_alpha, sorted(back.target_modules), back.modules_to_save, type(back2).__name__,
            str(back.peft_type), back.task_type is None]


@compared()
def test_peft_safe_serialization_false_as_torch(T, P):
    mk = functools.partial(_seeded_base, T, relu=False)
    m = P.get_peft_model(mk(), P.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    with tempfile.TemporaryDirectory() as d:
        try:
            m.save_pretrained(d, safe_serialization=False)
            files = sorted(os.listdir(d))
            y = P.PeftModel.from_pretrained(mk(), d)(T.ones(1, 4))
        except Exception as e:
            files, y = type(e).__name__, 0
    return [files, y]


@compared()
def test_clip_grad_norm_tensor_max_norm_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(3, 2)
    m(T.randn(4, 3)).sum().backward()
    n = T.nn.utils.clip_grad_norm_(m.parameters(), T.tensor(0.5))
    return [n, m.weight.grad, m.bias.grad]


@compared()
def test_add_param_group_with_scheduler_as_torch(T, P):
    a = T.nn.Parameter(T.zeros(1)); b = T.nn.Parameter(T.zeros(1))
    opt = T.optim.SGD([a], lr=0.1)
    s = T.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    opt.step(); s.step()
    opt.add_param_group({"params": [b], "lr": 0.2})
    out = [g["lr"] for g in opt.param_groups]
    out.append(error_of(lambda: (opt.step(), s.step())))
    out.append([g["lr"] for g in opt.param_groups])
    out.append(error_of(lambda: opt.add_param_group({"params": [a]})).startswith(
        "ValueError: some parameters appear in more than one parameter group"))
    return out


@compared()
def test_scheduler_step_with_epoch_warns_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=0.1)
    s = T.optim.lr_scheduler.StepLR(opt, 2, gamma=0.1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        opt.step(); s.step(5)
    return [s.get_last_lr()[0], opt.param_groups[0]["lr"], [str(r.message)[:90] for r in rec], s.last_epoch]


@compared()
def test_module_to_dtype_and_buffers_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(2, 2), T.nn.BatchNorm1d(2))
    def dtypes():
        return [[t.dtype == d for d in (T.float64, T.float16, T.bfloat16, T.int64)]
                for t in list(m.parameters()) + list(m.buffers())]
    m.to(T.float64)
    a = dtypes()
    m.half()
    b = dtypes()
    m.to(dtype=T.bfloat16)
    return [a, b, dtypes(), error_of(lambda: m.to(T.int64)).startswith("TypeError: nn.Module.to only accepts floating")]


@compared()
def test_module_registration_errors_as_torch(T, P):
    m = T.nn.Module()
    return [error_of(lambda: m.add_module("a.b", T.nn.Linear(1, 1))), error_of(lambda: m.register_buffer("x", [1])),
            error_of(lambda: m.register_parameter("w", T.ones(1))),
            error_of(lambda: setattr(m, "w", T.nn.Parameter(T.ones(1))) or m.register_buffer("w", T.ones(1))),
            error_of(lambda: m.add_module("", T.nn.Linear(1, 1))), error_of(lambda: m.get_submodule("nope"))]


@compared()
def test_no_grad_on_a_method_and_class_as_torch(T, P):
    T.manual_seed(0)
    class Net(T.nn.Module):
        def __init__(self):
            super().__init__(); self.l = T.nn.Linear(2, 2)
        @T.no_grad()
        def predict(self, x): return self.l(x)
        @T.inference_mode()
        def fast(self, x): return self.l(x)
        def forward(self, x): return self.l(x)
    n = Net(); x = T.ones(1, 2)
    return [n.predict(x).requires_grad, n.fast(x).is_inference(), n(x).requires_grad, n.predict.__name__]


@compared()
def test_embedding_max_norm_backward_as_torch(T, P):
    T.manual_seed(0)
    e = T.nn.Embedding(4, 3, max_norm=1.0)
    with T.no_grad(): e.weight.mul_(3)
    idx = T.tensor([1, 2, 1])
    out = e(idx); (out * T.arange(9.0).reshape(3, 3)).sum().backward()
    return [out, e.weight, e.weight.grad]


@compared()
def test_func_functional_call_tie_weights_as_torch(T, P):
    T.manual_seed(0)
    class Tied(T.nn.Module):
        def __init__(self):
            super().__init__(); self.a = T.nn.Linear(2, 2); self.b = self.a
        def forward(self, x): return self.b(self.a(x))
    m = Tied()
    new = {"a.weight": T.eye(2) * 2, "a.bias": T.zeros(2)}
    y1 = T.func.functional_call(m, new, (T.ones(1, 2),))
    y2 = T.func.functional_call(m, new, (T.ones(1, 2),), tie_weights=False)
    return [y1, y2]


@compared()
def test_vmap_in_dims_nested_as_torch(T, P):
    F = T.func
    x = T.arange(6.0).reshape(2, 3)
    f = lambda d, t: d["a"] * t[0] + t[1]
    r = F.vmap(f, in_dims=({"a": 0}, (None, 1)))({"a": x}, (T.tensor(2.0), T.ones(3, 2)))
    r2 = F.vmap(lambda a: (a.sum(), a * 2), out_dims=(0, 1))(x)
    return [r, r2[0], r2[1], error_of(lambda: F.vmap(lambda a: a, in_dims=2)(x))]


@compared()
def test_module_containers_and_assignment_errors_as_torch(T, P):
    t = T.ones(1)
    nn = T.nn
    m = nn.Module(); m.register_buffer("b", T.ones(1)); m.l = nn.Linear(1, 1); m.w = nn.Parameter(T.ones(1))
    return [error_of(lambda: setattr(m, "b", [1])), error_of(lambda: setattr(m, "l", t)), error_of(lambda: setattr(m, "w", t)),
            error_of(lambda: m.register_buffer(3, None)), error_of(lambda: m.add_module("x", t)),
            error_of(lambda: nn.ModuleList().extend(t)), error_of(lambda: nn.ModuleDict().update([3])),
            error_of(lambda: nn.ParameterList().extend(t)), error_of(lambda: nn.ParameterDict().update([3])),
            error_of(lambda: nn.ModuleDict().update(3)), error_of(lambda: nn.ParameterDict().update(3)),
            error_of(lambda: nn.ModuleList([nn.Linear(1, 1), 3]))]


@compared()
def test_vmap_argument_errors_as_torch(T, P):
    F = T.func
    x = T.ones(2, 3)
    def f(a, b=None): return a
    return [error_of(lambda: F.vmap(f, in_dims=None)(x)), error_of(lambda: F.vmap(f)()), error_of(lambda: F.vmap(f, in_dims=[0])(x)),
            error_of(lambda: F.vmap(f, in_dims=(0.5,))(x)), error_of(lambda: F.vmap(functools.partial(f, b=1), in_dims=3)(x)),
            error_of(lambda: F.vmap(f, in_dims=({"a": 0},))({"a": [x, 1.0]})),
            error_of(lambda: F.vmap(lambda a: a, in_dims=(None,))(T.ones(2))), error_of(lambda: F.vmap(f, in_dims=-3)(x))]


@compared()
def test_checkpoint_under_autocast_bf16_as_torch(T, P):
    T.manual_seed(0)
    net = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.GELU(), T.nn.Linear(4, 2))
    x = T.randn(3, 4, requires_grad=True)
    with T.autocast("cpu", dtype=T.bfloat16):
        y = T.utils.checkpoint.checkpoint(net, x, use_reentrant=False)
        z = T.utils.checkpoint.checkpoint(net, x, use_reentrant=True)
    (y.float().sum() + z.float().sum()).backward()
    return [str(y.dtype)[-8:], y, z, x.grad, net[0].weight.grad]


@compared()
def test_checkpoint_tuple_in_a_block_training_as_torch(T, P):
    T.manual_seed(0)
    class Block(T.nn.Module):
        def __init__(self):
            super().__init__(); self.attn = T.nn.MultiheadAttention(4, 2, batch_first=True); self.ff = T.nn.Linear(4, 4)
        def forward(self, h):
            a, w = self.attn(h, h, h)
            return self.ff(a) + h, w
    blocks = T.nn.ModuleList([Block(), Block()])
    opt = T.optim.AdamW(blocks.parameters(), lr=1e-2)
    x = T.randn(2, 3, 4)
    out = []
    for step in range(2):
        h = x
        for b in blocks:
            h, w = T.utils.checkpoint.checkpoint(b, h, use_reentrant=False)
        loss = h.pow(2).mean() + w.sum() * 0.1
        opt.zero_grad(); loss.backward(); opt.step(); out += [loss, w]
    return out + [blocks[0].ff.weight]


@compared()
def test_gradscaler_with_clip_and_inf_step_skipped_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(3, 1)
    opt = T.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    scaler = T.amp.GradScaler("cpu", init_scale=8.0)
    out = []
    for i in range(3):
        opt.zero_grad()
        x = T.randn(4, 3) if i != 1 else T.full((4, 3), float("inf"))
        with T.autocast("cpu", dtype=T.bfloat16):
            loss = m(x).float().mean()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        n = T.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
        r = scaler.step(opt)
        scaler.update()
        out += [n, r is None, scaler.get_scale(), m.weight.clone(), len(opt.state)]
    return out


@compared()
def test_mha_train_dropout_weights_as_torch(T, P):
    T.manual_seed(0)
    mha = T.nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True)
    x = T.randn(1, 3, 4)
    o, w = mha(x, x, x)
    o2, w2 = mha(x, x, x, need_weights=False)
    return [o, w, o2, T.rand(1)]
