"""Round 24: tutorial code run off minilora's tested paths, with torch / PEFT / transformers and with minilora
(``import minilora as torch``, ``minilora.lora`` for peft) from the same seed; every printed or returned number
compared (float64 where the snippet allows, float32 within 1e-5 relative: a wrong formula moves far more).

69 snippets the way the docs write them: nn.TransformerEncoderLayer / TransformerDecoder / MultiheadAttention
training (kdim/vdim, add_bias_kv, padding masks, per-head weights), LSTM/GRU on pack_padded_sequence (bidirectional,
proj_size, enforce_sorted=False, total_length), a CNN with BatchNorm2d + Dropout in train and eval, torch.func
(vmap with in_dims/out_dims/chunk_size, grad with has_aux, jacrev/jacfwd/hessian, functional_call with (params,
buffers) and strict=False), schedulers (SequentialLR, OneCycleLR three_phase, CosineAnnealingWarmRestarts stepped
with fractional epochs, ChainedScheduler, ReduceLROnPlateau, CyclicLR, a state_dict resume, last_epoch, transformers'
warmup schedules), gradient accumulation with clip_grad_norm_(foreach=True, error_if_nonfinite=True), the DataLoader
with seeded generators, samplers, collate_fn and drop_last, random_split, nn.init under manual_seed, CPU bfloat16
autocast, PEFT LoRA on custom modules (regex target_modules, modules_to_save, exclude_modules, rank/alpha patterns,
several adapters, set_adapter, every add_weighted_adapter combination, merge/unmerge, safe merge, unload,
trainable_token_indices, rsLoRA, DoRA on Linear and Conv2d, every init_lora_weights), generate's sampling and
search options with scores, and a Trainer-style loop.

One diverged, on a path every tutorial's first mistake takes: an input of the wrong width or dtype.
* A PEFT LoRA Linear given an input of the wrong width raised minilora's own ValueError ('lora_linear: x has 5
  features ...') where PEFT's base layer raises torch's RuntimeError 'mat1 and mat2 shapes cannot be multiplied
  (2x5 and 4x3)'; of the wrong dtype, minilora's TypeError where torch's is 'mat1 and mat2 must have the same
  dtype, but got Double and Float'. The class: ``F.linear`` with a bias (ATen's addmm) answered in mm's words
  ('expected m1 and m2 ...: double != float'), and addmm / addbmm / baddbmm with an ``input`` of another dtype in
  minilora's ('addmm: expected both operands to have the same dtype'); now ATen's checks in ATen's order
  (``ops/matmul.py``'s ``refuse_as_linear``, ``refuse_mixed_addmm``).
Not changed: ``str(x.dtype)`` prints 'float32' (a NumPy dtype) where torch prints 'torch.float32', and
``str(x.shape)`` 'minilora.Size([3, 4])' (``size.py``: deliberate); PiSSA/OLoRA on a
float64 base factorise in float64 where PEFT refuses (``lora/inits.py`` says so: a deliberate extension); a conv
bias followed by BatchNorm has a gradient of rounding noise only, which Adam amplifies to 1e-3 (the snippet's conv
has ``bias=False``, as ResNet's).
"""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

BOTH = {"torch": (torch, peft), "minilora": (ml, ml_peft)}


def _flat(value):
    """Every number (and string, bool) a snippet returned, in order."""
    if hasattr(value, "detach"):
        return [float(v) for v in np.asarray(value.detach().double().numpy()).ravel()]
    if isinstance(value, (list, tuple)):
        return [item for part in value for item in _flat(part)]
    if isinstance(value, dict):
        return [item for key in value for item in _flat(value[key])]
    return [value if isinstance(value, (str, bool)) else float(value)]


def _agree(snippet, rtol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, ours = (_flat(snippet(*BOTH[name])) for name in ("torch", "minilora"))
    assert len(theirs) == len(ours)
    for index, (a, b) in enumerate(zip(theirs, ours)):
        if isinstance(a, (str, bool)) or isinstance(b, (str, bool)):
            assert a == b, (index, a, b)
        else:
            assert a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rtol * (1 + abs(a)), (index, a, b)


def compared(rtol=1e-5):
    """``def test_x(T, P)``, the snippet written once, run with torch/PEFT and with minilora and compared."""
    def wrap(snippet):
        def test():
            _agree(snippet, rtol)
        test.__name__, test.__doc__ = snippet.__name__, snippet.__doc__
        return test
    return wrap


# ==================================================================================================
# What diverged: a wrong input's refusal (PEFT's base layer, F.linear with a bias, the addmm family)
# ==================================================================================================
def _refusal(call):
    try:
        call()
    except Exception as error:  # (compared: both libraries must refuse alike)
        return isinstance(error, RuntimeError), str(error)
    return None


@pytest.mark.parametrize("shape, dtype", [((2, 5), "float32"), ((2, 3, 5), "float32"), ((5,), "float32"),
                                          ((2, 4), "float64"), ((4,), "float64")])
def test_a_peft_lora_linear_refuses_a_wrong_input_in_torchs_words(shape, dtype):
    answers = []
    for T, P in BOTH.values():
        T.manual_seed(0)
        model = P.get_peft_model(T.nn.Sequential(T.nn.Linear(4, 3)), P.LoraConfig(r=2, target_modules=["0"]))
        answers.append(_refusal(lambda: model(T.randn(*shape, dtype=getattr(T, dtype)))))
    assert answers[0] is not None and answers[0] == answers[1]


ADDMM_FAMILY = {
    "linear(bias) x double": lambda T: T.nn.functional.linear(T.ones(2, 4, dtype=T.float64), T.ones(3, 4), T.ones(3)),
    "linear(bias) 3-D x double": lambda T: T.nn.Linear(4, 3)(T.ones(2, 3, 4, dtype=T.float64)),
    "linear(bias) all but w double": lambda T: T.nn.functional.linear(T.ones(2, 4, dtype=T.float64), T.ones(3, 4),
                                                                      T.ones(3, dtype=T.float64)),
    "linear(bias) half x, float bias": lambda T: T.nn.functional.linear(T.ones(2, 4, dtype=T.float16),
                                                                        T.ones(3, 4, dtype=T.float16), T.ones(3)),
    "linear(bias) wrong width double": lambda T: T.nn.functional.linear(T.ones(2, 5, dtype=T.float64), T.ones(3, 4),
                                                                        T.ones(3)),
    "linear without bias": lambda T: T.nn.functional.linear(T.ones(2, 4, dtype=T.float64), T.ones(3, 4)),
    "addmm input double": lambda T: T.addmm(T.ones(3, dtype=T.float64), T.ones(2, 4), T.ones(4, 3)),
    "addmm mat1 double": lambda T: T.addmm(T.ones(3), T.ones(2, 4, dtype=T.float64), T.ones(4, 3)),
    "addmm mat2 double": lambda T: T.addmm(T.ones(3), T.ones(2, 4), T.ones(4, 3, dtype=T.float64)),
    "x.addmm input long": lambda T: T.ones(3, dtype=T.int64).addmm(T.ones(2, 4), T.ones(4, 3)),
    "baddbmm input double": lambda T: T.baddbmm(T.ones(3, dtype=T.float64), T.ones(1, 2, 4), T.ones(1, 4, 3)),
    "baddbmm batch1 double": lambda T: T.baddbmm(T.ones(3), T.ones(1, 2, 4, dtype=T.float64), T.ones(1, 4, 3)),
    "baddbmm batch2 double": lambda T: T.baddbmm(T.ones(3), T.ones(1, 2, 4), T.ones(1, 4, 3, dtype=T.float64)),
    "addbmm input double": lambda T: T.addbmm(T.ones(3, dtype=T.float64), T.ones(1, 2, 4), T.ones(1, 4, 3)),
    "addbmm batch1 double": lambda T: T.addbmm(T.ones(3), T.ones(1, 2, 4, dtype=T.float64), T.ones(1, 4, 3)),
}


@pytest.mark.parametrize("name", ADDMM_FAMILY)
def test_linear_with_a_bias_and_the_addmm_family_refuse_mixed_dtypes_in_atens_words_and_order(name):
    theirs, ours = (_refusal(lambda: ADDMM_FAMILY[name](T)) for T in (torch, ml))
    assert theirs is not None and theirs == ours


# ==================================================================================================
# The snippets: the same numbers
# ==================================================================================================
@compared()
def test_transformer_encoder_layer_train_as_torch(T, P):
    T.manual_seed(0)
    layer = T.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=True)
    opt = T.optim.SGD(layer.parameters(), lr=0.1)
    x = T.randn(2, 5, 8)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = layer(x).pow(2).mean()
        loss.backward(); opt.step(); losses.append(loss.item())
    layer.eval()
    with T.no_grad():
        y = layer(x, src_key_padding_mask=T.tensor([[False]*5, [False]*3+[True]*2]))
    return losses + y[0].tolist()


@compared()
def test_transformer_encoder_layer_norm_first_gelu_as_torch(T, P):
    T.manual_seed(1)
    layer = T.nn.TransformerEncoderLayer(8, 2, 16, 0.0, "gelu", norm_first=True)
    x = T.randn(5, 2, 8)
    mask = T.nn.Transformer.generate_square_subsequent_mask(5)
    y = layer(x, src_mask=mask, is_causal=True)
    y.sum().backward()
    return [y, layer.self_attn.in_proj_weight.grad]


@compared()
def test_multihead_attention_weights_as_torch(T, P):
    T.manual_seed(2)
    mha = T.nn.MultiheadAttention(8, 2, batch_first=True)
    q = T.randn(2, 3, 8); k = T.randn(2, 4, 8)
    out, w = mha(q, k, k, need_weights=True, average_attn_weights=False)
    out2, w2 = mha(q, k, k, key_padding_mask=T.tensor([[False, False, True, True]]*2))
    (out.sum() + out2.sum()).backward()
    return [out, w, out2, w2, mha.out_proj.weight.grad]


@compared()
def test_mha_kdim_vdim_as_torch(T, P):
    T.manual_seed(3)
    mha = T.nn.MultiheadAttention(embed_dim=6, num_heads=3, kdim=4, vdim=5, bias=False, add_bias_kv=True,
                                  add_zero_attn=True)
    q = T.randn(3, 1, 6); k = T.randn(2, 1, 4); v = T.randn(2, 1, 5)
    out, w = mha(q, k, v)
    return [out, w]


@compared()
def test_lstm_packed_as_torch(T, P):
    T.manual_seed(0)
    from_ = T.nn.utils.rnn
    lstm = T.nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True)
    seqs = [T.randn(5, 4), T.randn(3, 4), T.randn(2, 4)]
    lengths = T.tensor([5, 3, 2])
    padded = from_.pad_sequence(seqs, batch_first=True)
    packed = from_.pack_padded_sequence(padded, lengths, batch_first=True)
    out, (h, c) = lstm(packed)
    unp, lens = from_.pad_packed_sequence(out, batch_first=True)
    loss = unp.sum() + h.sum()
    loss.backward()
    return [unp, lens.tolist(), h, c, lstm.weight_hh_l1_reverse.grad]


@compared()
def test_gru_packed_unsorted_as_torch(T, P):
    T.manual_seed(0)
    gru = T.nn.GRU(3, 4)
    x = T.randn(4, 3, 3)
    packed = T.nn.utils.rnn.pack_padded_sequence(x, [2, 4, 1], enforce_sorted=False)
    out, h = gru(packed)
    unp, lens = T.nn.utils.rnn.pad_packed_sequence(out, padding_value=-1.0, total_length=5)
    return [unp, lens, h, packed.sorted_indices, packed.batch_sizes]


@compared()
def test_pack_sequence_lstm_proj_as_torch(T, P):
    T.manual_seed(4)
    lstm = T.nn.LSTM(3, 6, proj_size=2)
    pk = T.nn.utils.rnn.pack_sequence([T.randn(4, 3), T.randn(2, 3)])
    out, (h, c) = lstm(pk)
    return [out.data, h, c]


@compared()
def test_cnn_bn_dropout_train_eval_as_torch(T, P):
    T.manual_seed(0)
    nn = T.nn
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Dropout(0.3), nn.Flatten(), nn.Linear(4*4*4, 3))
    opt = T.optim.Adam(net.parameters(), lr=1e-2)
    x = T.randn(6, 1, 8, 8); y = T.tensor([0, 1, 2, 0, 1, 2])
    losses = []
    for _ in range(3):
        net.train()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward(); opt.step(); losses.append(loss.item())
    net.eval()
    with T.no_grad():
        out = net(x)
    return [losses, out, net[1].running_mean, net[1].running_var, net[1].num_batches_tracked]


@compared()
def test_batchnorm_momentum_none_as_torch(T, P):
    T.manual_seed(0)
    bn = T.nn.BatchNorm1d(3, momentum=None, affine=False)
    for _ in range(3): bn(T.randn(4, 3))
    bn2 = T.nn.BatchNorm2d(2, track_running_stats=False)
    return [bn.running_mean, bn.running_var, bn2.eval()(T.randn(2, 2, 3, 3))]


@compared()
def test_func_vmap_grad_as_torch(T, P):
    T.manual_seed(0)
    from_ = T.func
    model = T.nn.Linear(3, 1)
    params = {k: v.detach() for k, v in model.named_parameters()}
    def loss_fn(p, x, y):
        out = from_.functional_call(model, p, (x.unsqueeze(0),))
        return T.nn.functional.mse_loss(out.squeeze(), y)
    x = T.randn(5, 3); y = T.randn(5)
    g = from_.vmap(from_.grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)
    return [g["weight"], g["bias"]]


@compared(rtol=1e-10)  # (float64)
def test_func_jacrev_hessian_as_torch(T, P):
    from_ = T.func
    x = T.tensor([0.3, -1.2, 2.0], dtype=T.float64)
    f = lambda x: (x.sin() * x.exp()).sum()
    return [from_.jacrev(lambda x: x.sin() * x.cos())(x), from_.hessian(f)(x), from_.grad(f)(x),
            from_.jacrev(lambda a, b: a * b, argnums=(0, 1))(x, x * 2)]


@compared()
def test_func_grad_has_aux_as_torch(T, P):
    from_ = T.func
    def f(x):
        y = x.pow(3).sum()
        return y, {"y": y.detach(), "x2": x * 2}
    g, aux = from_.grad(f, has_aux=True)(T.arange(3.0))
    gv = from_.grad_and_value(lambda x: x.square().sum())(T.arange(3.0))
    out, vjp_fn = from_.vjp(T.tanh, T.tensor([0.5, 1.0]))
    return [g, aux["y"], aux["x2"], gv, out, vjp_fn(T.ones(2))]


@compared()
def test_seq_lr_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=0.1, momentum=0.9)
    s1 = T.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
    s2 = T.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    sch = T.optim.lr_scheduler.SequentialLR(opt, schedulers=[s1, s2], milestones=[3])
    lrs = []
    for _ in range(8):
        opt.step(); sch.step(); lrs.append(sch.get_last_lr()[0])
    return lrs


@compared()
def test_one_cycle_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=0.1, momentum=0.9)
    sch = T.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    lrs, moms = [], []
    for _ in range(10):
        opt.step(); sch.step(); lrs.append(opt.param_groups[0]["lr"]); moms.append(opt.param_groups[0]["momentum"])
    opt2 = T.optim.Adam(p, lr=0.1)
    sch2 = T.optim.lr_scheduler.OneCycleLR(opt2, 0.5, epochs=2, steps_per_epoch=4, anneal_strategy="linear",
                                           three_phase=True)
    l2 = []
    for _ in range(8):
        opt2.step(); sch2.step(); l2.append(opt2.param_groups[0]["lr"]); l2.append(opt2.param_groups[0]["betas"][0])
    return lrs + moms + l2


@compared()
def test_cosine_warm_restarts_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=0.1)
    sch = T.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.001)
    lrs = []
    iters = 4
    for epoch in range(3):
        for i in range(iters):
            opt.step(); sch.step(epoch + i / iters); lrs.append(sch.get_last_lr()[0])
    for _ in range(5):
        sch.step(); lrs.append(opt.param_groups[0]["lr"])
    return lrs


@compared()
def test_chained_scheduler_and_plateau_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=1.0)
    sch = T.optim.lr_scheduler.ChainedScheduler([T.optim.lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=2),
                                                 T.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)])
    lrs = []
    for _ in range(5): opt.step(); sch.step(); lrs.append(sch.get_last_lr()[0])
    opt2 = T.optim.SGD(p, lr=1.0)
    pl = T.optim.lr_scheduler.ReduceLROnPlateau(opt2, mode="min", factor=0.5, patience=1, threshold=0.1, cooldown=1,
                                                min_lr=0.1)
    for v in [1.0, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:
        pl.step(v); lrs.append(opt2.param_groups[0]["lr"])
    return lrs


@compared()
def test_lambda_multiplicative_polynomial_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    out = []
    for mk in [lambda o: T.optim.lr_scheduler.LambdaLR(o, lr_lambda=lambda e: 0.95 ** e),
               lambda o: T.optim.lr_scheduler.MultiplicativeLR(o, lambda e: 0.9),
               lambda o: T.optim.lr_scheduler.PolynomialLR(o, total_iters=4, power=2.0),
               lambda o: T.optim.lr_scheduler.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2, mode="triangular2"),
               lambda o: T.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 4], gamma=0.5),
               lambda o: T.optim.lr_scheduler.CosineAnnealingLR(o, T_max=3)]:
        opt = T.optim.SGD(p, lr=0.1, momentum=0.9)
        s = mk(opt)
        for _ in range(7): opt.step(); s.step(); out.append(s.get_last_lr()[0])
    return out


@compared()
def test_grad_accumulation_as_torch(T, P):
    T.manual_seed(0)
    model = T.nn.Sequential(T.nn.Linear(4, 8), T.nn.Tanh(), T.nn.Linear(8, 1))
    opt = T.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    X = T.randn(16, 4); Y = T.randn(16, 1)
    accum = 4; out = []
    for i in range(8):
        loss = T.nn.functional.mse_loss(model(X[2*i:2*i+2]), Y[2*i:2*i+2]) / accum
        loss.backward()
        if (i + 1) % accum == 0:
            n = T.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5, norm_type=2.0, error_if_nonfinite=True,
                                           foreach=True)
            out.append(n.item())
            opt.step(); opt.zero_grad(set_to_none=True)
    return out + [p for p in model.parameters()]


@compared()
def test_clip_grad_inf_norm_and_value_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Linear(3, 2)
    m(T.randn(4, 3)).sum().backward()
    n = T.nn.utils.clip_grad_norm_(m.parameters(), 0.1, norm_type="inf")
    T.nn.utils.clip_grad_value_(m.parameters(), clip_value=0.05)
    g = T.nn.utils.get_total_norm([p.grad for p in m.parameters()], norm_type=1.0)
    return [n, m.weight.grad, m.bias.grad, g]


@compared()
def test_clip_grad_nonfinite_as_torch(T, P):
    m = T.nn.Linear(2, 1)
    m.weight.grad = T.tensor([[float("inf"), 1.0]]); m.bias.grad = T.tensor([1.0])
    try:
        T.nn.utils.clip_grad_norm_(m.parameters(), 1.0, error_if_nonfinite=True)
        r = "noerror"
    except RuntimeError as e:
        r = type(e).__name__ + str(e)[:60]
    n = T.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    return [r, n, m.weight.grad, m.bias.grad]


@compared()
def test_dataloader_sampler_collate_as_torch(T, P):
    from_ = T.utils.data
    ds = from_.TensorDataset(T.arange(10.0), T.arange(10))
    g = T.Generator().manual_seed(42)
    dl = from_.DataLoader(ds, batch_size=3, shuffle=True, drop_last=True, generator=g)
    out = [b for b in dl] + [b for b in dl]
    ws = from_.WeightedRandomSampler([0.1, 0.5, 0.2, 0.2], num_samples=6, replacement=True,
                                     generator=T.Generator().manual_seed(1))
    out.append(list(ws))
    sub = from_.SubsetRandomSampler([1, 3, 5, 7], generator=T.Generator().manual_seed(3))
    out.append(list(sub))
    bs = from_.BatchSampler(from_.SequentialSampler(range(7)), batch_size=3, drop_last=False)
    out.append([x for b in bs for x in b])
    def collate(batch):
        xs, ys = zip(*batch)
        return T.stack(xs).sum(), list(ys)
    sampler = from_.RandomSampler(ds, generator=T.Generator().manual_seed(5))
    dl2 = from_.DataLoader(ds, batch_size=4, collate_fn=collate, sampler=sampler)
    for a, b in dl2: out.append(a); out.append([int(v) for v in b])
    tr, te = from_.random_split(ds, [0.7, 0.3], generator=T.Generator().manual_seed(0))
    out.append(list(tr.indices)); out.append(list(te.indices))
    return out


@compared()
def test_dataloader_global_seed_as_torch(T, P):
    T.manual_seed(7)
    ds = list(range(9))
    dl = T.utils.data.DataLoader(ds, batch_size=2, shuffle=True)
    a = [b for b in dl]
    r = T.rand(2)
    return a + [r]


@compared()
def test_weight_init_as_torch(T, P):
    T.manual_seed(0)
    nn = T.nn
    w = T.empty(3, 5)
    out = []
    nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("relu")); out.append(w.clone())
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"); out.append(w.clone())
    nn.init.trunc_normal_(w, std=0.02); out.append(w.clone())
    nn.init.orthogonal_(w); out.append(w.clone())
    nn.init.uniform_(w, -0.1, 0.1); out.append(w.clone())
    nn.init.normal_(w, mean=1.0, std=0.5); out.append(w.clone())
    nn.init.kaiming_uniform_(w, a=math.sqrt(5)); out.append(w.clone())
    nn.init.xavier_normal_(w); out.append(w.clone())
    nn.init.sparse_(w, sparsity=0.3); out.append(w.clone())
    c = T.empty(2, 3, 3, 3); nn.init.dirac_(c); out.append(c)
    nn.init.eye_(w); out.append(w.clone())
    nn.init.constant_(w, 0.3); out.append(w.clone())
    return out


@compared()
def test_module_apply_init_as_torch(T, P):
    T.manual_seed(0)
    nn = T.nn
    def init_weights(m):
        if isinstance(m, nn.Linear):
            T.nn.init.xavier_uniform_(m.weight); m.bias.data.fill_(0.01)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Embedding):
            m.weight.data.normal_(mean=0.0, std=0.02)
    net = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 3), nn.Conv2d(1, 2, 3), nn.LSTM(3, 2), nn.GRUCell(2, 3))
    net.apply(init_weights)
    return [p for p in net.parameters()]


@compared()
def test_autocast_cpu_bf16_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(8, 8), T.nn.GELU(), T.nn.LayerNorm(8), T.nn.Linear(8, 2))
    x = T.randn(4, 8)
    with T.autocast(device_type="cpu", dtype=T.bfloat16):
        out = m(x)
        loss = T.nn.functional.cross_entropy(out, T.tensor([0, 1, 0, 1]))
    loss.backward()
    with T.autocast("cpu"):
        o2 = m(x); s = T.softmax(o2, -1)
    with T.amp.autocast("cpu", enabled=False):
        o3 = m(x)
    return [out.dtype == T.bfloat16, loss.dtype == T.float32, out, loss, m[0].weight.grad, o2.dtype == T.bfloat16, o2,
            s.dtype == T.float32, s, o3]


@compared()
def test_lora_custom_mlp_regex_as_torch(T, P):
    T.manual_seed(0)
    class MLP(T.nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = T.nn.Sequential(T.nn.Linear(10, 12), T.nn.ReLU(), T.nn.Linear(12, 12), T.nn.ReLU(),
                                       T.nn.Linear(12, 2))
        def forward(self, x): return self.seq(x)
    config = P.LoraConfig(r=4, lora_alpha=8, target_modules=r".*seq\.(0|2)$", modules_to_save=["seq.4"],
                          lora_dropout=0.0, init_lora_weights="gaussian")
    model = P.get_peft_model(MLP(), config)
    opt = T.optim.SGD(model.parameters(), lr=0.1)
    x = T.randn(6, 10); y = T.tensor([0, 1, 1, 0, 1, 0])
    losses = []
    for _ in range(3):
        loss = T.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    merged = model.merge_and_unload()
    with T.no_grad(): o = merged(x)
    return losses + [n, o, sorted(k for k, _ in merged.named_parameters())]


@compared()
def test_lora_multi_adapter_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(6, 6), T.nn.Tanh(), T.nn.Linear(6, 3))
    model = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False))
    model.add_adapter("other", P.LoraConfig(r=3, lora_alpha=6, target_modules=["0"], use_rslora=True,
                                            init_lora_weights=False))
    x = T.randn(2, 6)
    out = [model(x)]
    model.set_adapter("other"); out.append(model(x))
    model.add_weighted_adapter(["default", "other"], [0.7, 0.3], "mix", combination_type="cat")
    model.set_adapter("mix"); out.append(model(x))
    model.add_weighted_adapter(["default", "other"], [1.0, 1.0], "svdmix", combination_type="svd")
    model.set_adapter("svdmix"); o = model(x); out.append(o)
    with model.disable_adapter(): out.append(model(x))
    return out


@compared()
def test_lora_dora_train_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(5, 7), T.nn.ReLU(), T.nn.Linear(7, 2))
    model = P.get_peft_model(base, P.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"], use_dora=True,
                                                lora_dropout=0.0))
    opt = T.optim.Adam(model.parameters(), lr=1e-2)
    x = T.randn(4, 5)
    ls = []
    for _ in range(3):
        l = model(x).pow(2).mean(); opt.zero_grad(); l.backward(); opt.step(); ls.append(l.item())
    with T.no_grad(): pre = model(x)
    merged = model.merge_and_unload()
    return ls + [pre, merged(x)]


@compared()
def test_lora_init_variants_as_torch(T, P):
    out = []
    for init in [True, "gaussian", False, "pissa", "pissa_niter_2", "olora", "orthogonal"]:
        T.manual_seed(0)
        base = T.nn.Sequential(T.nn.Linear(6, 8), T.nn.ReLU(), T.nn.Linear(8, 3))
        m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0"], init_lora_weights=init))
        x = T.linspace(-1, 1, 12).reshape(2, 6)
        out.append(m(x)); out.append(m.base_model.model[0].lora_B["default"].weight.abs().sum())
    return out


@compared()
def test_lora_merge_unmerge_safe_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.Linear(4, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, lora_alpha=16, target_modules=["0", "1"], init_lora_weights=False,
                                            lora_dropout=0.1))
    m.eval()
    x = T.randn(3, 4)
    a = m(x)
    m.base_model.merge_adapter()
    b = m(x)
    m.base_model.unmerge_adapter()
    c = m(x)
    sd = P.get_peft_model_state_dict(m)
    return [a, b, c, sorted(sd.keys())]


@compared()
def test_lora_on_an_embedding_and_a_linear_as_torch(T, P):
    T.manual_seed(0)
    class Net(T.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = T.nn.Embedding(10, 6); self.lin = T.nn.Linear(6, 2)
        def forward(self, ids): return self.lin(self.emb(ids))
    m = P.get_peft_model(Net(), P.LoraConfig(r=2, target_modules=["emb", "lin"], init_lora_weights=False))
    return [m(T.tensor([[1, 2, 3]])), m.print_trainable_parameters() or 0]


@compared(rtol=1e-10)  # (float64)
def test_optimizers_with_their_options_as_torch(T, P):
    T.manual_seed(0)
    out = []
    for mk in [lambda p: T.optim.AdamW(p, lr=1e-2, amsgrad=True),
               lambda p: T.optim.RMSprop(p, lr=1e-2, momentum=0.9, centered=True),
               lambda p: T.optim.Adagrad(p, lr=0.1, lr_decay=0.01),
               lambda p: T.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
               lambda p: T.optim.Adam(p, lr=1e-2, maximize=True), lambda p: T.optim.NAdam(p, lr=1e-2),
               lambda p: T.optim.RAdam(p, lr=1e-2, decoupled_weight_decay=True, weight_decay=0.1),
               lambda p: T.optim.Adamax(p), lambda p: T.optim.Adadelta(p)]:
        T.manual_seed(0)
        m = T.nn.Linear(3, 2, dtype=T.float64)
        opt = mk(m.parameters())
        x = T.randn(4, 3, dtype=T.float64)
        for _ in range(3):
            opt.zero_grad(); m(x).pow(2).sum().backward(); opt.step()
        out += [m.weight, m.bias]
    return out


@compared(rtol=1e-10)  # (float64)
def test_param_groups_with_their_own_lr_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(3, 3), T.nn.Linear(3, 1)).double()
    opt = T.optim.SGD([{"params": m[0].parameters()}, {"params": m[1].parameters(), "lr": 1e-3}], lr=1e-2, momentum=0.9)
    x = T.randn(5, 3, dtype=T.float64)
    for _ in range(2):
        opt.zero_grad(); m(x).sum().backward(); opt.step()
    sd = opt.state_dict()
    return [list(m.parameters()), [g["lr"] for g in opt.param_groups], sd["param_groups"][1]["params"]]


@compared()
def test_tensor_inplace_chain_as_torch(T, P):
    T.manual_seed(0)
    x = T.randn(3, 4)
    y = x.clone().mul_(2).add_(1).clamp_(min=-1, max=2).sqrt_()
    z = x.t().contiguous().view(-1).cumsum(0).div(3).floor_()
    w = T.where(x > 0, x, T.zeros_like(x)).sum(dim=1, keepdim=True)
    v = x.masked_fill(x < 0, 0.0).argmax(dim=1)
    return [y, z, w, v, x.std(), x.var(unbiased=False), x.norm(p=1), x.max(dim=0).values, x.topk(2).indices, x.median()]


@compared()
def test_printing_as_torch(T, P):
    T.manual_seed(0)
    x = T.randn(2, 3)
    return [str(x), repr(x.int()), str(x.requires_grad_()), str(x * 2), str(T.tensor(3.5)), str(x.sum())]


@compared()
def test_embedding_bag_and_padding_as_torch(T, P):
    T.manual_seed(0)
    e = T.nn.Embedding(6, 3, padding_idx=0, max_norm=1.0)
    ids = T.tensor([[0, 2, 4], [3, 0, 5]])
    out = e(ids)
    out.sum().backward()
    return [out, e.weight.grad, e.weight]


@compared(rtol=1e-10)  # (float64)
def test_conv_transpose_groups_as_torch(T, P):
    T.manual_seed(0)
    c = T.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, dilation=1, bias=False, padding_mode="reflect").double()
    d = T.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1).double()
    x = T.randn(1, 4, 6, 6, dtype=T.float64)
    y = d(c(x))
    y.sum().backward()
    return [y, c.weight.grad, d.bias.grad]


@compared(rtol=1e-10)  # (float64)
def test_adaptive_pool_upsample_as_torch(T, P):
    T.manual_seed(0)
    x = T.randn(1, 2, 5, 7, dtype=T.float64)
    a = T.nn.AdaptiveAvgPool2d((3, 2))(x)
    b = T.nn.AdaptiveMaxPool2d(2)(x)
    c = T.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(x)
    d = T.nn.functional.interpolate(x, size=(4, 4), mode="nearest")
    return [a, b, c, d]


@compared()
def test_gumbel_and_multinomial_as_torch(T, P):
    T.manual_seed(0)
    logits = T.randn(2, 5)
    a = T.multinomial(T.softmax(logits, -1), num_samples=3, replacement=True)
    b = T.multinomial(T.softmax(logits, -1), 2)
    c = T.nn.functional.gumbel_softmax(logits, tau=0.5, hard=True)
    d = T.distributions.Categorical(logits=logits).sample((3,))
    e = T.bernoulli(T.full((4,), 0.3))
    f = T.randint(0, 10, (5,))
    g = T.randperm(6)
    return [a, b, c, d, e, f, g, T.rand(1)]


@compared(rtol=1e-10)  # (float64)
def test_losses_with_their_options_as_torch(T, P):
    T.manual_seed(0)
    x = T.randn(4, 3, dtype=T.float64, requires_grad=True)
    t = T.rand(4, 3, dtype=T.float64)
    out = [T.nn.functional.smooth_l1_loss(x, t, beta=0.5), T.nn.HuberLoss(delta=0.7)(x, t),
           T.nn.KLDivLoss(reduction="batchmean")(x.log_softmax(-1), t.softmax(-1)),
           T.nn.BCEWithLogitsLoss(pos_weight=T.tensor([1.0, 2.0, 3.0], dtype=T.float64))(x, t),
           T.nn.CosineEmbeddingLoss(margin=0.1)(x, t, T.tensor([1, -1, 1, -1])),
           T.nn.TripletMarginLoss(margin=0.5)(x, t, t.flip(0)),
           T.nn.NLLLoss(weight=T.tensor([1.0, 2.0, 0.5], dtype=T.float64))(x.log_softmax(1), T.tensor([0, 2, 1, 2])),
           T.nn.MarginRankingLoss()(x[:, 0], x[:, 1], T.tensor([1.0, -1.0, 1.0, -1.0], dtype=T.float64)),
           T.nn.GaussianNLLLoss()(x, t, T.ones(4, 3, dtype=T.float64)),
           T.nn.PoissonNLLLoss()(x, t), T.nn.SoftMarginLoss()(x, t.sign()), T.nn.L1Loss(reduction="sum")(x, t)]
    sum(out).backward()
    return out + [x.grad]


@compared(rtol=1e-10)  # (float64)
def test_gradient_checkpoint_and_hooks_as_torch(T, P):
    T.manual_seed(0)
    lin = T.nn.Linear(3, 3).double()
    x = T.randn(2, 3, dtype=T.float64, requires_grad=True)
    y = T.utils.checkpoint.checkpoint(lambda z: lin(z).relu(), x, use_reentrant=False)
    grads = []
    h = x.register_hook(lambda g: grads.append(g.clone()))
    (y ** 2).sum().backward()
    h.remove()
    return [y, x.grad, grads[0], lin.weight.grad]


@compared()
def test_rnn_cells_loop_as_torch(T, P):
    T.manual_seed(0)
    cell = T.nn.LSTMCell(3, 4)
    x = T.randn(5, 2, 3)
    hx = T.zeros(2, 4); cx = T.zeros(2, 4); outs = []
    for i in range(5):
        hx, cx = cell(x[i], (hx, cx)); outs.append(hx)
    out = T.stack(outs, dim=0)
    rnn = T.nn.RNN(3, 4, nonlinearity="relu", num_layers=2, dropout=0.0)
    o2, h2 = rnn(x)
    return [out, o2, h2]


@compared()
def test_transformer_decoder_as_torch(T, P):
    T.manual_seed(0)
    dec = T.nn.TransformerDecoder(T.nn.TransformerDecoderLayer(d_model=8, nhead=2, dim_feedforward=12, dropout=0.0,
                                                               batch_first=True), num_layers=2)
    mem = T.randn(2, 4, 8); tgt = T.randn(2, 3, 8)
    m = T.nn.Transformer.generate_square_subsequent_mask(3)
    y = dec(tgt, mem, tgt_mask=m, tgt_is_causal=True, memory_key_padding_mask=T.tensor([[False]*4, [False, False, True,
                                                                                                    True]]))
    y.mean().backward()
    return [y, dec.layers[0].multihead_attn.in_proj_weight.grad]
@compared()
def test_dropout_variants_train_as_torch(T, P):
    T.manual_seed(0)
    x = T.ones(2, 3, 4, 4)
    a = T.nn.Dropout(0.5)(x); b = T.nn.Dropout2d(p=0.25)(x); c = T.nn.functional.dropout(x[0, 0], 0.2, training=True)
    d = T.nn.AlphaDropout(0.2)(T.randn(3, 4)); e = T.nn.functional.dropout1d(T.ones(2, 3, 4), 0.5)
    f = T.nn.functional.scaled_dot_product_attention(T.randn(1, 2, 3, 4), T.randn(1, 2, 3, 4), T.randn(1, 2, 3, 4),
                                                     dropout_p=0.3, is_causal=True)
    return [a, b, c, d, e, f]


@compared(rtol=1e-10)  # (float64)
def test_norms_as_torch(T, P):
    T.manual_seed(0)
    x = T.randn(2, 4, 3, 3, dtype=T.float64, requires_grad=True)
    gn = T.nn.GroupNorm(2, 4).double(); inn = T.nn.InstanceNorm2d(4, affine=True, track_running_stats=True).double()
    ln = T.nn.LayerNorm([3, 3], elementwise_affine=False).double(); rms = T.nn.RMSNorm(3, eps=1e-6).double()
    ln2 = T.nn.LayerNorm(3, bias=False).double()
    out = [gn(x), inn(x), ln(x), rms(x), ln2(x)]
    sum(o.sum() for o in out).backward()
    inn.eval()
    return out + [x.grad, inn.running_mean, inn.running_var, inn(x)]


@compared()
def test_grad_modes_as_torch(T, P):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    @T.no_grad()
    def f(v): return v * 2
    with T.no_grad():
        with T.enable_grad():
            y = x * 3
    with T.inference_mode():
        z = x * 4
    with T.set_grad_enabled(False):
        w = x * 5
    return [f(x).requires_grad, y.requires_grad, z.requires_grad, w.requires_grad, T.is_grad_enabled(),
            z.is_inference()]


@compared()
def test_distributions_sample_and_score_as_torch(T, P):
    T.manual_seed(0)
    D = T.distributions
    n = D.Normal(T.tensor([0.0, 1.0]), T.tensor([1.0, 2.0]))
    s = n.rsample((3,)); lp = n.log_prob(s); ent = n.entropy()
    kl = D.kl_divergence(n, D.Normal(T.zeros(2), T.ones(2)))
    mvn = D.MultivariateNormal(T.zeros(2), covariance_matrix=T.tensor([[2.0, 0.3], [0.3, 1.0]]))
    ms = mvn.sample((2,))
    b = D.Bernoulli(probs=T.tensor([0.3, 0.9])).sample((4,))
    u = D.Uniform(0.0, 2.0).sample((3,))
    c = D.Categorical(probs=T.tensor([0.1, 0.2, 0.7]))
    return [s, lp, ent, kl, ms, mvn.log_prob(ms), b, u, c.sample((5,)), c.entropy(), D.Beta(2.0, 3.0).sample((2,)),
            D.Independent(n, 1).log_prob(s)]


@compared()
def test_generator_state_as_torch(T, P):
    g = T.Generator().manual_seed(123)
    a = T.randn(3, generator=g)
    st = g.get_state()
    b = T.rand(2, generator=g)
    g.set_state(st)
    c = T.rand(2, generator=g)
    T.manual_seed(5)
    s = T.get_rng_state()
    d = T.randint(0, 100, (4,))
    T.set_rng_state(s)
    e = T.randint(0, 100, (4,))
    T.manual_seed(5)
    f = T.randn(2, 3).normal_(2.0, 0.5)
    h = T.empty(4).uniform_(-1, 1)
    i = T.empty(3).exponential_()
    j = T.empty(5).random_(0, 7)
    k = T.empty(4).bernoulli_(0.4)
    l = T.empty(3).geometric_(0.3)
    m = T.empty(3).log_normal_()
    n = T.empty(3).cauchy_()
    return [a, b, c, d, e, f, h, i, j, k, l, m, n, g.initial_seed()]


@compared()
def test_scheduler_state_resume_as_torch(T, P):
    p = [T.nn.Parameter(T.zeros(1))]
    opt = T.optim.SGD(p, lr=0.1)
    sch = T.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3): opt.step(); sch.step()
    sd = sch.state_dict(); osd = opt.state_dict()
    opt2 = T.optim.SGD(p, lr=0.1); opt2.load_state_dict(osd)
    sch2 = T.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5); sch2.load_state_dict(sd)
    out = []
    for _ in range(4): opt2.step(); sch2.step(); out.append(sch2.get_last_lr()[0])
    opt3 = T.optim.SGD([{"params": p, "initial_lr": 0.1}], lr=0.1)
    sch3 = T.optim.lr_scheduler.CosineAnnealingLR(opt3, T_max=10, last_epoch=4)
    for _ in range(3): opt3.step(); sch3.step(); out.append(opt3.param_groups[0]["lr"])
    return out + [sch.last_epoch, sd["_step_count"]]


@compared()
def test_hf_warmup_schedules_as_torch(T, P):
    lib = transformers if T is torch else T.optim.lr_scheduler
    out = []
    for name, kw in [("get_linear_schedule_with_warmup", dict(num_warmup_steps=2, num_training_steps=8)),
                     ("get_cosine_schedule_with_warmup", dict(num_warmup_steps=2, num_training_steps=8,
                                                              num_cycles=0.5)),
                     ("get_cosine_with_hard_restarts_schedule_with_warmup", dict(num_warmup_steps=1,
                                                                                 num_training_steps=8, num_cycles=2)),
                     ("get_polynomial_decay_schedule_with_warmup", dict(num_warmup_steps=2, num_training_steps=8,
                                                                        lr_end=1e-4, power=2.0)),
                     ("get_inverse_sqrt_schedule", dict(num_warmup_steps=2)),
                     ("get_constant_schedule_with_warmup", dict(num_warmup_steps=3))]:
        p = [T.nn.Parameter(T.zeros(1))]
        opt = T.optim.AdamW(p, lr=1e-3)
        s = getattr(lib, name)(opt, **kw)
        for _ in range(9): opt.step(); s.step(); out.append(s.get_last_lr()[0])
    return out


@compared()
def test_pad_sequence_left_and_embedding_pretrained_as_torch(T, P):
    a = T.nn.utils.rnn.pad_sequence([T.tensor([1, 2, 3]), T.tensor([4])], batch_first=True, padding_value=0,
                                    padding_side="left")
    e = T.nn.Embedding.from_pretrained(T.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), freeze=True, padding_idx=0)
    b = T.nn.utils.rnn.unpad_sequence(T.tensor([[1, 2, 0], [3, 0, 0]]).t(), T.tensor([2, 1]))
    return [a, e(T.tensor([2, 0])), e.weight.requires_grad, b]


@compared()
def test_trainer_style_loop_with_warmup_label_smoothing_and_clipping_as_torch(T, P):
    T.manual_seed(0)
    class Model(T.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = T.nn.Embedding(11, 8)
            self.rnn = T.nn.GRU(8, 8, batch_first=True)
            self.head = T.nn.Linear(8, 11)
        def forward(self, ids, labels=None):
            h, _ = self.rnn(self.emb(ids)); logits = self.head(h)
            loss = None
            if labels is not None:
                loss = T.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)(logits.view(-1, logits.size(-1)),
                                                                                     labels.view(-1))
            return loss, logits
    model = Model()
    ids = T.randint(0, 11, (4, 6)); labels = ids.clone(); labels[:, :2] = -100
    opt = T.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.95), eps=1e-6)
    sched = T.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    out = []
    model.train()
    for step in range(4):
        loss, _ = model(ids, labels=labels)
        loss.backward()
        T.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad()
        out.append(round(loss.item(), 4))
    model.eval()
    with T.no_grad():
        _, logits = model(ids)
        preds = logits.argmax(-1)
        acc = (preds == ids).float().mean().item()
    return out + [acc, preds.tolist()]


@compared()
def test_func_vmap_options_as_torch(T, P):
    from_ = T.func
    x = T.arange(12.0).reshape(3, 4); y = T.arange(4.0)
    a = from_.vmap(T.dot, in_dims=(0, None))(x, y)
    b = from_.vmap(lambda r: r * 2, in_dims=1, out_dims=1)(x)
    c = from_.vmap(from_.vmap(T.outer))(x.reshape(3, 1, 4).expand(3, 2, 4), x.reshape(3, 1, 4).expand(3, 2, 4))
    d = from_.vmap(lambda r: r.sum(), chunk_size=2)(x)
    e = from_.jacfwd(lambda v: v.sin().cumsum(0))(y)
    f = from_.vmap(from_.jacrev(lambda v: (v ** 2).sum() * v))(x)
    return [a, b, c, d, e, f]


@compared()
def test_func_functional_call_strict_tied_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(2, 2), T.nn.BatchNorm1d(2))
    params = dict(m.named_parameters()); bufs = dict(m.named_buffers())
    new = {k: v * 2 for k, v in params.items()}
    out = T.func.functional_call(m, (new, bufs), (T.randn(3, 2),))
    out2 = T.func.functional_call(m, new, T.randn(3, 2), strict=False)
    return [out, out2, m[1].running_mean]


@compared()
def test_peft_more_options_as_torch(T, P):
    T.manual_seed(0)
    class Net(T.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = T.nn.ModuleList([T.nn.Linear(6, 6) for _ in range(3)]); self.out = T.nn.Linear(6, 2)
        def forward(self, x):
            for l in self.layers: x = T.relu(l(x))
            return self.out(x)
    cfg = P.LoraConfig(r=4, lora_alpha=8, target_modules=["layers.0", "layers.1", "layers.2"],
                       exclude_modules=["layers.1"], rank_pattern={"layers.2": 2}, alpha_pattern={"layers.2": 16},
                       bias="lora_only", init_lora_weights=False, lora_dropout=0.2)
    m = P.get_peft_model(Net(), cfg)
    x = T.randn(3, 6)
    m.train(); a = m(x)
    m.eval(); b = m(x)
    tr, tot = m.get_nb_trainable_parameters()
    names = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    c = m.unload()(x)
    return [a, b, tr, tot, names, c]


@compared()
def test_peft_weighted_linear_ties_dare_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(5, 5), T.nn.Linear(5, 2))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False), adapter_name="a")
    m.add_adapter("b", P.LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False))
    x = T.randn(2, 5); out = []
    for ct, kw in [("linear", {}), ("ties", dict(density=0.5)), ("dare_linear", dict(density=0.5)), ("magnitude_prune",
                                                                                                     dict(density=0.4)),
                   ("ties_svd", dict(density=0.5)), ("dare_ties", dict(density=0.5, majority_sign_method="frequency"))]:
        T.manual_seed(1)
        m.add_weighted_adapter(["a", "b"], [0.6, 0.8], ct, combination_type=ct, **kw)
        m.set_adapter(ct); out.append(m(x))
    m.delete_adapter("linear")
    return out + [sorted(m.peft_config.keys())]


@compared()
def test_peft_trainable_token_indices_train_as_torch(T, P):
    import tempfile
    T.manual_seed(0)
    class Net(T.nn.Module):
        def __init__(self):
            super().__init__(); self.emb = T.nn.Embedding(8, 4); self.fc = T.nn.Linear(4, 3)
        def forward(self, ids): return self.fc(self.emb(ids))
    m = P.get_peft_model(Net(), P.LoraConfig(r=2, target_modules=["fc"], trainable_token_indices={"emb": [1, 3]},
                                             init_lora_weights=False))
    ids = T.tensor([[1, 2, 3]])
    opt = T.optim.SGD(m.parameters(), lr=0.5)
    l = m(ids).sum(); l.backward(); opt.step()
    o = m(ids)
    return [o, sorted(n for n, p in m.named_parameters() if p.requires_grad)]


@compared()
def test_peft_lora_dropout_train_draws_as_torch(T, P):
    T.manual_seed(0)
    base = T.nn.Sequential(T.nn.Linear(4, 4), T.nn.GELU(), T.nn.Linear(4, 4))
    m = P.get_peft_model(base, P.LoraConfig(r=2, target_modules=["0", "2"], lora_dropout=0.5, init_lora_weights=False,
                                            use_rslora=True))
    x = T.randn(3, 4)
    a = m(x); b = m(x)
    m.merge_adapter(); c = m(x); m.unmerge_adapter()
    d = m.merge_and_unload(safe_merge=True)(x)
    return [a, b, c, d]


@compared()
def test_peft_dora_on_a_conv_and_a_linear_as_torch(T, P):
    T.manual_seed(0)
    class Net(T.nn.Module):
        def __init__(self):
            super().__init__(); self.conv = T.nn.Conv2d(2, 3, 3); self.fc = T.nn.Linear(3 * 2 * 1, 2)
        def forward(self, x): return self.fc(self.conv(x).flatten(1))
    m = P.get_peft_model(Net(), P.LoraConfig(r=2, target_modules=["conv", "fc"], use_dora=True,
                                             init_lora_weights=False))
    x = T.randn(2, 2, 4, 3)
    o = m(x); o.sum().backward()
    return [o, m.base_model.model.conv.lora_A["default"].weight.grad, m.merge_and_unload()(x)]


def _llama_pair():
    from minilora.models import LlamaConfig, LlamaForCausalLM
    from test_llama import hf_model
    cfg = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    ref = hf_model(transformers, cfg, dtype="float32", seed=0).eval()
    mine = LlamaForCausalLM(cfg, dtype="float32")
    mine.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    return ref, mine.eval()


_PAIR = []  # (made once, on first use: a transformers Llama and minilora's with its weights)


def _model(T):
    if not _PAIR:
        _PAIR.extend(_llama_pair())
    return _PAIR[0] if T is torch else _PAIR[1]


@compared()
def test_generate_sampling_options_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3, 17]])
    out = []
    for kw in [dict(do_sample=True, top_k=5, top_p=0.9, temperature=0.7),
               dict(do_sample=True, min_p=0.1, repetition_penalty=1.3, num_return_sequences=2),
               dict(do_sample=True, typical_p=0.8, no_repeat_ngram_size=2),
               dict(do_sample=True, epsilon_cutoff=3e-2, top_k=0),
               dict(do_sample=True, eta_cutoff=1e-3),
               dict(num_beams=3, length_penalty=0.5, early_stopping=True, num_return_sequences=2),
               dict(do_sample=False, min_new_tokens=4, bad_words_ids=[[7], [8, 9]], forced_eos_token_id=2),
               dict(do_sample=False, suppress_tokens=[4, 5], begin_suppress_tokens=[6], encoder_repetition_penalty=1.0),
               dict(do_sample=True, num_beams=2, temperature=1.5),
               dict(do_sample=False, sequence_bias={(9,): -10.0}, exponential_decay_length_penalty=(2, 1.5))]:
        T.manual_seed(0)
        try:
            g = m.generate(ids, max_new_tokens=6, pad_token_id=0, **kw)
            out.append(g.tolist() if hasattr(g, "tolist") else g)
        except Exception as e:
            out.append(type(e).__name__)
    return out


@compared()
def test_generate_scores_as_torch(T, P):
    m = _model(T); ids = T.tensor([[5, 9, 3, 17], [0, 4, 8, 2]]); mask = T.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    T.manual_seed(0)
    g = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=True, top_k=4, output_scores=True,
                   output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    sc = m.compute_transition_scores(g.sequences, g.scores, normalize_logits=True)
    return [g.sequences, [s for s in g.scores], [l for l in g.logits], sc]


@compared()
def test_full_transformer_as_torch(T, P):
    T.manual_seed(0)
    tr = T.nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                          dropout=0.1, batch_first=True)
    src = T.randn(2, 5, 8); tgt = T.randn(2, 4, 8)
    padding = T.tensor([[False] * 5, [False] * 4 + [True]])
    out = tr(src, tgt, tgt_mask=tr.generate_square_subsequent_mask(4), src_key_padding_mask=padding)
    out.sum().backward()
    return [out, tr.encoder.layers[0].linear1.weight.grad]


@compared()
def test_clip_foreach_false_l1_as_torch(T, P):
    T.manual_seed(0)
    m = T.nn.Sequential(T.nn.Linear(3, 4), T.nn.Linear(4, 2))
    m(T.randn(5, 3)).pow(2).sum().backward()
    n = T.nn.utils.clip_grad_norm_(m.parameters(), 0.3, 1, foreach=False)
    n2 = T.nn.utils.clip_grad_norm_([p for p in m.parameters()], max_norm=0.1, norm_type=3.0)
    return [n, n2] + [p.grad for p in m.parameters()]


@compared()
def test_optimizer_foreach_fused_flags_as_torch(T, P):
    out = []
    for kw in [dict(foreach=False), dict(foreach=True), dict(fused=True), dict(capturable=False, differentiable=False)]:
        T.manual_seed(0)
        m = T.nn.Linear(3, 2)
        opt = T.optim.AdamW(m.parameters(), lr=1e-2, **kw)
        for _ in range(2):
            opt.zero_grad(); m(T.ones(2, 3)).sum().backward(); opt.step()
        out += [m.weight]
    return out


@compared()
def test_lstm_seq_classifier_batch_first_train_as_torch(T, P):
    T.manual_seed(0)
    class Net(T.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = T.nn.Embedding(20, 6, padding_idx=0)
            self.lstm = T.nn.LSTM(6, 5, batch_first=True, dropout=0.2, num_layers=2)
            self.fc = T.nn.Linear(5, 2); self.drop = T.nn.Dropout(0.5)
        def forward(self, ids, lens):
            packed = T.nn.utils.rnn.pack_padded_sequence(self.emb(ids), lens.cpu(), batch_first=True,
                                                         enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            return self.fc(self.drop(h[-1]))
    net = Net(); opt = T.optim.Adam(net.parameters(), lr=0.01)
    ids = T.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]]); lens = T.tensor([3, 2, 4]); y = T.tensor([0, 1, 1])
    out = []
    for _ in range(3):
        opt.zero_grad()
        loss = T.nn.functional.cross_entropy(net(ids, lens), y)
        loss.backward()
        opt.step()
        out.append(loss.item())
    net.eval()
    with T.no_grad(): p = net(ids, lens).softmax(-1)
    return out + [p]


@compared()
def test_embedding_bag_offsets_as_torch(T, P):
    T.manual_seed(0)
    eb = T.nn.EmbeddingBag(10, 3, mode="mean")
    out = eb(T.tensor([1, 2, 4, 5, 4, 3, 2, 9]), T.tensor([0, 4]))
    eb2 = T.nn.EmbeddingBag(10, 3, mode="sum", padding_idx=2)
    o2 = eb2(T.tensor([[1, 2], [2, 2]]), per_sample_weights=T.tensor([[0.5, 1.0], [1.0, 2.0]]))
    return [out, o2]


@compared(rtol=1e-10)  # (float64)
def test_interpolate_and_pixel_shuffle_as_torch(T, P):
    T.manual_seed(0)
    x = T.randn(1, 4, 3, 3, dtype=T.float64)
    return [T.nn.PixelShuffle(2)(x), T.nn.functional.interpolate(x, scale_factor=1.5, mode="bicubic",
                                                                 align_corners=True),
            T.nn.functional.interpolate(x, scale_factor=2, mode="nearest-exact"),
            T.nn.functional.unfold(x, kernel_size=2, stride=1)]


@compared()
def test_tensor_methods_printing_as_torch(T, P):
    T.manual_seed(0)
    x = T.randn(3, 4)
    r = []
    r.append(tuple(x.shape)); r.append(str(x.size(1))); r.append(repr(x[0, :2])); r.append(str(x.mean().item())[:8])
    r.append(str(T.arange(6).view(2, 3))); r.append(str(T.zeros(2, dtype=T.bool))); r.append(str(T.tensor([1e-8, 1.0])))
    r.append(str(T.tensor([[1.5, 2.0], [3.0, 4.25]], dtype=T.float64)))
    r.append(str(T.tensor([1, 2]).float() / 3))
    return r


@compared()
def test_cross_entropy_3d_and_weights_as_torch(T, P):
    T.manual_seed(0)
    logits = T.randn(2, 5, 4, requires_grad=True); tgt = T.randint(0, 5, (2, 4)); tgt[0, 1] = -100
    l1 = T.nn.functional.cross_entropy(logits, tgt, weight=T.rand(5), label_smoothing=0.2)
    l2 = T.nn.CrossEntropyLoss(reduction="sum")(logits.transpose(1, 2).reshape(-1, 5), tgt.view(-1))
    (l1 + l2).backward()
    return [l1, l2, logits.grad]
