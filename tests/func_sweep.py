"""A sweep, not a test: torch.func's transforms (vmap, grad, grad_and_value, jacrev, jacfwd, hessian, vjp, jvp,
linearize, functional_call and their compositions) over the ops users put under them, minilora's ``ml.func``
against torch 2.13's ``torch.func``, in float32 and float64, with plain inputs and inputs that require grad. Each
form's answer is compared: the output's structure (tuple/list/dict nesting, which leaves are tensors), each
tensor's shape, dtype and requires_grad, its values (float64: bit for bit; float32: within torch's testing
tolerance), or, where torch refuses, the error's class and words. Then the refusals torch's tutorials meet
(``REFUSALS``). It prints each form whose answer differs from torch's, then the counts.

    PYTHONPATH=. python tests/func_sweep.py [NAME-PART ...] [--show N]

Round 32 wrote it (torch 2.13.0+cpu). Before round 32's fixes (tests/test_func_r32.py): 1224 of 8100 op forms and
31 of 94 module/refusal forms differed; after: 877 and 1. Fixed: grad of grad with respect to another argument was
zeros (a mixed second derivative: 21 forms with values off); grad's and vjp's value and aux required grad, and
linearize's did not (326 requires_grad forms); vmap ran torch's refusals (.item(), if, in-place writes of a batched
tensor into an unbatched one), changed an unbatched input once per sample, refused out_dims None and dicts, zipped
short in_dims and out_dims that do not fit; torch's words. Left, each a measured cause:
* float64 bits (737 forms, 1e-16 .. 1e-11 of the largest element): vmap runs func sample by sample, so torch's
  batched kernels (bmm and one gemm for a batch of matmuls, a vectorized loop over 12 elements where a sample has 4)
  round otherwise; jvp/jacfwd/hessian are computed by reverse mode (the double-vjp trick); and minilora's
  create_graph=True backward formulas (ops/higher_order.py, taken where an input requires grad) round otherwise
  than torch's kernels -- tanh, sigmoid, gelu, pow, layer_norm (8e-12) -- also outside torch.func.
* zero signs (69) of Jacobian entries, same cause; requires_grad of Jacobian blocks that are constants (63:
  torch's jacrev runs one vjp for all outputs, so a block for a lone ``x.sum()`` output requires grad; linear's
  jacfwd, conv1d's jacrev follow torch's per-op formulas).
* torch's own errors: hessian of layer_norm with a weight, w.r.t. input and weight (torch's mixed block disagrees
  with its autograd.functional.hessian and finite differences; minilora's agrees with both), linearize of the mlp
  with inputs that require grad (torch refuses an in-place on a leaf inside its trace); the words of shape errors
  inside vmap (torch's name the batched kernel's physical shapes).
"""
import argparse
import sys
import warnings

import numpy as np
import torch

import minilora as ml

B = 3  # the batch vmap maps over

# ---- the ops: name -> (function of (library, *float tensors), the sample shapes of its float arguments) -------
def _const(L, values, dtype=None):
    """A constant (indices, targets, weights) in library ``L``, from the same numbers."""
    t = L.tensor(np.asarray(values).tolist())
    return t if dtype is None else t.to(dtype)


def _weights(L, shape, like):
    count = int(np.prod(shape))
    values = (np.arange(count, dtype=np.float64).reshape(shape) * 0.37 % 1.0) - 0.4
    return _const(L, values).to(like.dtype)


def _F(L):
    return L.nn.functional


OPS = {
    "add": (lambda L, x, y: x + y, [(3, 4), (3, 4)]),
    "mul": (lambda L, x, y: x * y, [(3, 4), (3, 4)]),
    "div": (lambda L, x, y: x / (y.abs() + 1), [(3, 4), (3, 4)]),
    "exp": (lambda L, x: x.exp(), [(3, 4)]),
    "log": (lambda L, x: (x.abs() + 0.5).log(), [(3, 4)]),
    "sin": (lambda L, x: x.sin(), [(3, 4)]),
    "tanh": (lambda L, x: x.tanh(), [(3, 4)]),
    "sigmoid": (lambda L, x: x.sigmoid(), [(3, 4)]),
    "relu": (lambda L, x: _F(L).relu(x), [(3, 4)]),
    "gelu": (lambda L, x: _F(L).gelu(x), [(3, 4)]),
    "pow": (lambda L, x: x.pow(3), [(3, 4)]),
    "sqrt": (lambda L, x: (x * x + 1).sqrt(), [(3, 4)]),
    "clamp": (lambda L, x: x.clamp(-0.5, 0.5), [(3, 4)]),
    "maximum": (lambda L, x, y: L.maximum(x, y), [(3, 4), (3, 4)]),
    "where": (lambda L, x, y: L.where(x > 0, x, y), [(3, 4), (3, 4)]),
    "sum": (lambda L, x: x.sum(), [(3, 4)]),
    "sum_dim": (lambda L, x: x.sum(dim=1), [(3, 4)]),
    "sum_keepdim": (lambda L, x: x.sum(dim=-1, keepdim=True), [(3, 4)]),
    "mean_dim": (lambda L, x: x.mean(dim=0), [(3, 4)]),
    "amax": (lambda L, x: x.amax(dim=-1), [(3, 4)]),
    "max_dim": (lambda L, x: x.max(dim=1).values, [(3, 4)]),
    "var": (lambda L, x: x.var(dim=1), [(3, 4)]),
    "prod": (lambda L, x: x.prod(dim=0), [(3, 4)]),
    "logsumexp": (lambda L, x: x.logsumexp(dim=1), [(3, 4)]),
    "cumsum": (lambda L, x: x.cumsum(dim=1), [(3, 4)]),
    "norm": (lambda L, x: x.norm(dim=1), [(3, 4)]),
    "norm_all": (lambda L, x: L.linalg.norm(x), [(3, 4)]),
    "matmul": (lambda L, x, y: x @ y, [(3, 4), (4, 2)]),
    "matvec": (lambda L, x, y: x @ y, [(3, 4), (4,)]),
    "dot": (lambda L, x, y: L.dot(x, y), [(4,), (4,)]),
    "linear": (lambda L, x: _F(L).linear(x, _weights(L, (2, 4), x), _weights(L, (2,), x)), [(3, 4)]),
    "linear_w": (lambda L, x, w: _F(L).linear(x, w), [(3, 4), (2, 4)]),
    "einsum": (lambda L, x, y: L.einsum("ij,jk->ik", x, y), [(3, 4), (4, 2)]),
    "softmax": (lambda L, x: x.softmax(dim=-1), [(3, 4)]),
    "log_softmax": (lambda L, x: _F(L).log_softmax(x, dim=1), [(3, 4)]),
    "cross_entropy": (lambda L, x: _F(L).cross_entropy(x, _const(L, [1, 0, 3])), [(3, 4)]),
    "mse_loss": (lambda L, x, y: _F(L).mse_loss(x, y), [(3, 4), (3, 4)]),
    "index": (lambda L, x: x[0], [(3, 4)]),
    "slice": (lambda L, x: x[:, 1:3], [(3, 4)]),
    "index_tensor": (lambda L, x: x[_const(L, [2, 0])], [(3, 4)]),
    "gather": (lambda L, x: x.gather(1, _const(L, [[0, 1], [3, 3], [2, 0]])), [(3, 4)]),
    "index_select": (lambda L, x: x.index_select(0, _const(L, [2, 0])), [(3, 4)]),
    "cat": (lambda L, x, y: L.cat([x, y], dim=1), [(3, 4), (3, 2)]),
    "stack": (lambda L, x, y: L.stack([x, y], dim=-1), [(3, 4), (3, 4)]),
    "reshape": (lambda L, x: x.reshape(-1), [(3, 4)]),
    "view": (lambda L, x: x.view(2, 6), [(3, 4)]),
    "transpose": (lambda L, x: x.transpose(0, 1), [(3, 4)]),
    "movedim": (lambda L, x: x.movedim(0, -1), [(3, 4)]),
    "unsqueeze_expand": (lambda L, x: x.unsqueeze(0).expand(2, 3, 4), [(3, 4)]),
    "layer_norm": (lambda L, x: _F(L).layer_norm(x, (4,)), [(3, 4)]),
    "layer_norm_affine": (lambda L, x, w: _F(L).layer_norm(x, (4,), w, w * 0.5), [(3, 4), (4,)]),
    "conv1d": (lambda L, x: _F(L).conv1d(x, _weights(L, (2, 3, 2), x), padding=1), [(1, 3, 5)]),
    "conv1d_unbatched": (lambda L, x: _F(L).conv1d(x, _weights(L, (2, 3, 2), x)), [(3, 5)]),
    "conv2d": (lambda L, x, w: _F(L).conv2d(x, w), [(1, 2, 4, 4), (3, 2, 2, 2)]),
    "mlp": (lambda L, x: _mlp(L, x), [(4,)]),
}

def _mlp(L, x):
    F = _F(L)
    h = F.relu(F.linear(x, _weights(L, (5, 4), x), _weights(L, (5,), x)))
    return F.linear(h.tanh(), _weights(L, (2, 5), x))


def _scalar(op):
    """The scalar function grad and hessian take: the op's output squared, summed (second derivatives not 0)."""
    return lambda L, *a: (op(L, *a) ** 2).sum()


# ---- the transforms: name -> (applies to (op, arity), builds the call in library L) -----------------------------
def _batched(base, dim):
    """The batch of samples ``base`` (batch in front) with its batch dimension moved to ``dim`` (contiguous)."""
    return base.movedim(0, dim).contiguous()


def vmap_forms(L, op, args, batched):
    """vmap's forms: (name, thunk)."""
    f = lambda *a: op(L, *a)  # noqa: E731
    v = L.func.vmap
    n = len(args)
    forms = [
        ("vmap", lambda: v(f)(*batched(0))),
        ("vmap_in1", lambda: v(f, in_dims=1)(*batched(1))),
        ("vmap_in-1", lambda: v(f, in_dims=-1)(*batched(-1))),
        ("vmap_out1", lambda: v(f, out_dims=1)(*batched(0))),
        ("vmap_out-1", lambda: v(f, out_dims=-1)(*batched(0))),
        ("vmap_chunk2", lambda: v(f, chunk_size=2)(*batched(0))),
        ("vmap_nested", lambda: v(v(f))(*[b.unsqueeze(0).expand(2, *b.shape).contiguous() for b in batched(0)])),
        ("vmap_nested_in1", lambda: v(v(f, in_dims=1), in_dims=0)(
            *[b.unsqueeze(0).expand(2, *b.shape).contiguous() for b in batched(0)])),
    ]
    if n == 2:
        forms += [
            ("vmap_in(None,0)", lambda: v(f, in_dims=(None, 0))(args[0], batched(0)[1])),
            ("vmap_in(0,None)", lambda: v(f, in_dims=(0, None))(batched(0)[0], args[1])),
            ("vmap_tuple_arg", lambda: v(lambda p: op(L, *p), in_dims=((0, None),))(
                (batched(0)[0], args[1]))),
            ("vmap_dict_arg", lambda: v(lambda d: op(L, d["a"], d["b"]), in_dims=({"a": 0, "b": 1},))(
                {"a": batched(0)[0], "b": batched(1)[1]})),
        ]
    forms.append(("vmap_tuple_out", lambda: v(lambda *a: (op(L, *a), a[0] * 2), out_dims=(0, 1))(*batched(0))))
    forms.append(("vmap_dict_out", lambda: v(lambda *a: {"y": op(L, *a), "z": a[0].sum()})(*batched(0))))
    return forms


def grad_forms(L, op, args, batched):
    s = _scalar(op)
    f = lambda *a: s(L, *a)  # noqa: E731
    fn = L.func
    n = len(args)
    forms = [
        ("grad", lambda: fn.grad(f)(*args)),
        ("grad_and_value", lambda: fn.grad_and_value(f)(*args)),
        ("grad_aux", lambda: fn.grad(lambda *a: (f(*a), op(L, *a)), has_aux=True)(*args)),
        ("grad_and_value_aux", lambda: fn.grad_and_value(lambda *a: (f(*a), {"o": op(L, *a)}), has_aux=True)(*args)),
        # (weighted: the plain sum of a shift-invariant op's gradient -- softmax, layer_norm -- is 0 up to rounding)
        ("grad_of_grad", lambda: fn.grad(lambda *a: (fn.grad(f)(*a) * a[0]).sum())(*args)),
        ("vmap_grad", lambda: fn.vmap(fn.grad(f))(*batched(0))),
        ("vmap_grad_in(0,None)", lambda: fn.vmap(fn.grad(f), in_dims=(0,) + (None,) * (n - 1))(
            batched(0)[0], *args[1:])),
        ("jacrev", lambda: fn.jacrev(lambda *a: op(L, *a))(*args)),
        ("jacrev_chunk1", lambda: fn.jacrev(lambda *a: op(L, *a), chunk_size=1)(*args)),
        ("jacrev_aux", lambda: fn.jacrev(lambda *a: (op(L, *a), a[0].sum()), has_aux=True)(*args)),
        ("jacfwd", lambda: fn.jacfwd(lambda *a: op(L, *a))(*args)),
        ("jacfwd_aux", lambda: fn.jacfwd(lambda *a: (op(L, *a), a[0] * 1), has_aux=True)(*args)),
        ("jacrev_tuple_out", lambda: fn.jacrev(lambda *a: (op(L, *a), a[0].sum()))(*args)),
        ("hessian", lambda: fn.hessian(f)(*args)),
        ("jacfwd_jacrev", lambda: fn.jacfwd(fn.jacrev(f))(*args)),
        ("jacrev_jacrev", lambda: fn.jacrev(fn.jacrev(f))(*args)),
        ("vmap_jacrev", lambda: fn.vmap(fn.jacrev(lambda *a: op(L, *a)))(*batched(0))),
        ("vjp", lambda: _vjp_all(L, op, args)),
        ("jvp", lambda: fn.jvp(lambda *a: op(L, *a), tuple(args), tuple(a.cos() for a in args))),
        ("jvp_aux", lambda: fn.jvp(lambda *a: (op(L, *a), a[0] + 1), tuple(args), tuple(a.cos() for a in args),
                                   has_aux=True)),
        ("linearize", lambda: _linearize(L, op, args)),
        ("vmap_jvp", lambda: fn.vmap(lambda *a: fn.jvp(lambda *p: op(L, *p), a, tuple(p.cos() for p in a)))(
            *batched(0))),
        ("vmap_vjp", lambda: fn.vmap(lambda *a: _vjp_all(L, op, a))(*batched(0))),
    ]
    if n == 2:
        forms += [
            ("grad_argnums1", lambda: fn.grad(f, argnums=1)(*args)),
            ("grad_argnums(0,1)", lambda: fn.grad(f, argnums=(0, 1))(*args)),
            ("grad_argnums(1,)", lambda: fn.grad(f, argnums=(1,))(*args)),
            ("jacrev_argnums(0,1)", lambda: fn.jacrev(lambda *a: op(L, *a), argnums=(0, 1))(*args)),
            ("jacfwd_argnums(0,1)", lambda: fn.jacfwd(lambda *a: op(L, *a), argnums=(0, 1))(*args)),
            ("hessian_argnums(0,1)", lambda: fn.hessian(f, argnums=(0, 1))(*args)),
            ("grad_of_grad_other_arg", lambda: fn.grad(lambda a, b: fn.grad(f, argnums=0)(a, b).sum(), argnums=1)(
                *args)),
            ("jacrev_of_jacrev_other_arg", lambda: fn.jacrev(fn.jacrev(lambda *a: op(L, *a), argnums=0), argnums=1)(
                *args)),
            ("grad_tuple_arg", lambda: fn.grad(lambda p: f(*p))(tuple(args))),
            ("grad_dict_arg", lambda: fn.grad(lambda d: f(d["a"], d["b"]))({"a": args[0], "b": args[1]})),
        ]
    return forms


def _vjp_all(L, op, args):
    out, vjp_fn = L.func.vjp(lambda *a: op(L, *a), *args)
    return out, vjp_fn(out.cos())


def _linearize(L, op, args):
    out, jvp_fn = L.func.linearize(lambda *a: op(L, *a), *args)
    return out, jvp_fn(*[a.cos() for a in args])


# ---- running one form in both libraries -----------------------------------------------------------------------
def _inputs(shapes, dtype, requires_grad, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    batches = [rng.standard_normal((B,) + s) for s in shapes]
    return arrays, batches


def _tensors(L, arrays, dtype, requires_grad):
    made = []
    for a in arrays:
        t = L.from_numpy(a.copy()).to(getattr(L, dtype))
        made.append(t.requires_grad_() if requires_grad else t)
    return made


def _run(thunk):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ("ok", thunk())
        except Exception as error:  # noqa: BLE001 -- the sweep compares any refusal
            return ("error", error)


def _describe(tree, out, prefix=""):
    """(path, leaf) for each leaf, and the structure as a string."""
    if isinstance(tree, (torch.Tensor, ml.Tensor)):
        out.append((prefix, tree))
        return "T"
    if isinstance(tree, (tuple, list)):
        return type(tree).__name__ + "(" + ",".join(_describe(t, out, f"{prefix}[{i}]")
                                                  for i, t in enumerate(tree)) + ")"
    if isinstance(tree, dict):
        return "dict(" + ",".join(f"{k}:" + _describe(v, out, f"{prefix}[{k!r}]") for k, v in tree.items()) + ")"
    out.append((prefix, tree))
    return type(tree).__name__


def _array(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.detach().numpy()


def compare(theirs, ours, dtype):
    """None when the answers agree, else what differs (the first thing)."""
    if theirs[0] != ours[0]:
        return f"torch {theirs[0]} ({_short(theirs[1])}), minilora {ours[0]} ({_short(ours[1])})"
    if theirs[0] == "error":
        t, o = theirs[1], ours[1]
        if not isinstance(o, type(t)) and not issubclass(type(o), type(t)):
            return f"error class: torch {type(t).__name__}, minilora {type(o).__name__}: {o}"
        if str(t).split("\n")[0] != str(o).split("\n")[0]:
            return f"error words: torch {str(t)[:200]!r}, minilora {str(o)[:200]!r}"
        return None
    tl, ol = [], []
    ts, os_ = _describe(theirs[1], tl), _describe(ours[1], ol)
    if ts != os_:
        return f"structure: torch {ts}, minilora {os_}"
    for (path, t), (_, o) in zip(tl, ol):
        if not isinstance(t, torch.Tensor):
            if t != o:
                return f"{path}: torch {t!r}, minilora {o!r}"
            continue
        if tuple(t.shape) != tuple(o.shape):
            return f"{path} shape: torch {tuple(t.shape)}, minilora {tuple(o.shape)}"
        if str(t.dtype).replace("torch.", "") != str(o.dtype).replace("minilora.", "").replace("torch.", ""):
            return f"{path} dtype: torch {t.dtype}, minilora {o.dtype}"
        if t.requires_grad != o.requires_grad:
            return f"{path} requires_grad: torch {t.requires_grad}, minilora {o.requires_grad}"
        a, b = _array(t), _array(o)
        if dtype == "float64":
            if not np.array_equal(a.view(np.int64) if a.dtype == np.float64 else a,
                                  b.view(np.int64) if b.dtype == np.float64 else b):
                if np.array_equal(a, b, equal_nan=True):
                    return f"{path} zero sign: torch {a.ravel()[:6]}, minilora {b.ravel()[:6]}"
                err = np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300) if a.size else 0
                return f"{path} bits (max difference {err:.1e} of the largest element)"
        elif not np.allclose(a, b, rtol=1.3e-6, atol=1e-5, equal_nan=True):
            return f"{path} values: max abs {np.max(np.abs(a - b)):.2e}"
    return None


def _short(x):
    return (f"{type(x).__name__}: {str(x)[:150]}" if isinstance(x, Exception) else
            type(x).__name__)


def sweep():
    """(label, torch's answer, minilora's, dtype) for each op x transform x dtype x requires_grad."""
    for name, (op, shapes) in OPS.items():
        for dtype in ("float32", "float64"):
            for requires_grad in (False, True):
                arrays, batches = _inputs(shapes, dtype, requires_grad, seed=len(name))
                answers = {}
                for L in (torch, ml):
                    args = _tensors(L, arrays, dtype, requires_grad)
                    base = _tensors(L, batches, dtype, requires_grad)
                    batched = lambda dim, base=base: [_batched(b, dim) for b in base]  # noqa: E731
                    for form, thunk in vmap_forms(L, op, args, batched) + grad_forms(L, op, args, batched):
                        answers.setdefault(form, []).append(_run(thunk))
                for form, (theirs, ours) in answers.items():
                    yield f"{name} {form} {dtype}{' rg' if requires_grad else ''}", theirs, ours, dtype


def tally(rows, select, show):
    """Print each row whose answers differ (``show`` at most), and return (how many differ, how many rows)."""
    differ = total = 0
    for label, theirs, ours, dtype in rows:
        if select and not any(s in label for s in select):
            continue
        total += 1
        why = compare(theirs, ours, dtype)
        if why is not None:
            differ += 1
            if differ <= show:
                print(f"{label}: {why}")
    return differ, total


# ---- torch's refusals and the module forms (functional_call, stack_module_state) -----------------------------
def _module_forms(L):
    nn, fn = L.nn, L.func

    def model():
        L.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))

    def ensemble():
        models = [model() for _ in range(3)]
        params, buffers = fn.stack_module_state(models)
        base = model().to("meta") if L is torch else model()
        x = L.arange(8.0).reshape(2, 4) / 8

        def one(p, b, x):
            return fn.functional_call(base, (p, b), (x,))
        return fn.vmap(one, in_dims=(0, 0, None))(params, buffers, x)

    def per_sample_grads():
        m = model()
        params = {k: v.detach() for k, v in m.named_parameters()}
        x, y = L.arange(12.0).reshape(3, 4) / 12, L.tensor([0, 1, 1])

        def loss(p, x, y):
            out = fn.functional_call(m, p, (x.unsqueeze(0),))
            return nn.functional.cross_entropy(out, y.unsqueeze(0))
        return fn.vmap(fn.grad(loss), in_dims=(None, 0, 0))(params, x, y)

    def ntk():
        m = model()
        params = {k: v.detach() for k, v in m.named_parameters()}
        x = L.arange(8.0).reshape(2, 4) / 8
        jac = fn.vmap(fn.jacrev(lambda p, x: fn.functional_call(m, p, (x.unsqueeze(0),)).squeeze(0)),
                      (None, 0))(params, x)
        return jac

    def call(params, strict=False, tie=True, module=None):
        m = module or model()
        return fn.functional_call(m, params, (L.ones(1, 4),), strict=strict, tie_weights=tie)

    def named(m):
        return {k: v.detach() * 2 for k, v in m.named_parameters()}

    def tied_module():
        L.manual_seed(0)
        m = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
        m[1].weight = m[0].weight
        return m

    def bn_module():
        L.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()

    def buffers_call():
        m = bn_module()
        b = {k: v + 1 for k, v in m.named_buffers()}
        return fn.functional_call(m, b, (L.ones(2, 4),)), m[1].running_mean

    x = L.arange(12.0).reshape(3, 4) / 7
    y = L.arange(4.0)
    return {
        "ensemble": ensemble,
        "per_sample_grads": per_sample_grads,
        "ntk": ntk,
        "functional_call": lambda: call(named(model())),
        "functional_call_strict_ok": lambda: call(named(model()), strict=True),
        "functional_call_missing_strict": lambda: call({"0.weight": L.ones(5, 4)}, strict=True),
        "functional_call_unexpected_strict": lambda: call({**named(model()), "x": L.ones(1)}, strict=True),
        "functional_call_missing": lambda: call({"0.weight": L.ones(5, 4)}),
        "functional_call_two_dicts": lambda: call(({"0.weight": L.ones(5, 4)}, {"2.bias": L.ones(2)})),
        "functional_call_two_dicts_same": lambda: call(({"0.weight": L.ones(5, 4)}, {"0.weight": L.ones(5, 4)})),
        "tied": lambda: call({"0.weight": L.ones(3, 3) / 3}, module=tied_module(), tie=True)
        if False else fn.functional_call(tied_module(), {"0.weight": L.eye(3) * 2}, (L.ones(1, 3),)),
        "tied_false": lambda: fn.functional_call(tied_module(), {"0.weight": L.eye(3) * 2}, (L.ones(1, 3),),
                                                 tie_weights=False),
        "tied_both": lambda: fn.functional_call(tied_module(), {"0.weight": L.eye(3), "1.weight": L.eye(3) * 2},
                                                (L.ones(1, 3),)),
        "tied_strict": lambda: fn.functional_call(tied_module(), {"0.weight": L.eye(3)}, (L.ones(1, 3),),
                                                  strict=True),
        "buffers": buffers_call,
        "functional_call_kwargs": lambda: fn.functional_call(model(), named(model()), (), {"input": L.ones(1, 4)}),
        "functional_call_tensor_arg": lambda: fn.functional_call(model(), named(model()), L.ones(1, 4)),
        # refusals
        "vmap_item": lambda: fn.vmap(lambda t: t * t.sum().item())(x),
        "vmap_if": lambda: fn.vmap(lambda t: t if t.sum() > 0 else -t)(x),
        "vmap_inplace_unbatched": lambda: fn.vmap(lambda t: L.zeros(4).add_(t))(x),
        "vmap_inplace_unbatched_mul": lambda: fn.vmap(lambda t, u: u.mul_(t), in_dims=(0, None))(x, y.clone()),
        "vmap_inplace_batched_ok": lambda: fn.vmap(lambda t, u: t.add_(u), in_dims=(0, None))(x.clone(), y),
        "vmap_new_zeros_add_": lambda: fn.vmap(lambda t: t.new_zeros(4).add_(t))(x),
        "vmap_zeros_like_add_": lambda: fn.vmap(lambda t: L.zeros_like(t).add_(t))(x),
        "vmap_clone_add_": lambda: fn.vmap(lambda t, u: t.clone().add_(u), in_dims=(0, None))(x, y),
        "vmap_detach_mul_": lambda: fn.vmap(lambda t: t.detach().mul_(t))(x),
        "vmap_iadd_batched": lambda: fn.vmap(lambda t, u: (t * 1).__iadd__(u), in_dims=(0, None))(x, y),
        "vmap_unbatched_add_1": lambda: fn.vmap(lambda t, u: u.add_(1) * t, in_dims=(0, None))(x, y.clone()),
        "vmap_copy_into_unbatched": lambda: fn.vmap(lambda t, u: u.copy_(t), in_dims=(0, None))(x, y.clone()),
        "vmap_setitem_unbatched": lambda: fn.vmap(lambda t: L.zeros(4).__setitem__(0, t[0]))(x),
        "vmap_setitem_batched": lambda: fn.vmap(lambda t: (t.clone().__setitem__(0, 5.0), t)[1])(x),
        "vmap_fill_unbatched": lambda: fn.vmap(lambda t, u: u.fill_(t.sum()), in_dims=(0, None))(x, y.clone()),
        "vmap_zeros_add_": lambda: fn.vmap(lambda t: L.zeros(1).add_(t))(x),
        "vmap_pow_": lambda: fn.vmap(lambda t, u: u.pow_(t), in_dims=(0, None))(x, y.clone()),
        "vmap_item_unbatched": lambda: fn.vmap(lambda t, u: t * u.sum().item(), in_dims=(0, None))(x, y),
        "vmap_if_unbatched": lambda: fn.vmap(lambda t, u: t if u.sum() > 0 else -t, in_dims=(0, None))(x, y),
        "vmap_float": lambda: fn.vmap(lambda t: t * float(t.sum()))(x),
        "vmap_nested_item": lambda: fn.vmap(fn.vmap(lambda r: r * r.item()))(x),
        "vmap_grad_item": lambda: fn.vmap(lambda t: t * fn.grad(lambda r: (r ** 2).sum())(t).sum().item())(x),
        "vmap_grad_inplace_ok": lambda: fn.vmap(lambda t: fn.grad(lambda r: (r ** 2).sum())(t).add_(t))(x),
        "vmap_relu_inplace": lambda: fn.vmap(lambda t: nn.functional.relu(t * 1, inplace=True))(x - 0.5),
        "vmap_sequential_relu_inplace": lambda: fn.vmap(nn.Sequential(nn.Linear(4, 3), nn.ReLU(inplace=True)))(x),
        "vmap_out_dims_dict": lambda: fn.vmap(lambda t: {"a": t, "b": t.sum()}, out_dims={"a": 1, "b": 0})(x),
        "vmap_out_dims_list_tuple": lambda: fn.vmap(lambda t: (t, t), out_dims=[0, 1])(x),
        "vmap_in_dims_nested_bad": lambda: fn.vmap(lambda p: p[0], in_dims=((0, (0, 0)),))((x, x)),
        "vmap_in_dims_list_for_tuple": lambda: fn.vmap(lambda p: p[0], in_dims=([0, 0],))((x, x)),
        "vmap_in_dims_dict_keys": lambda: fn.vmap(lambda d: d["a"], in_dims=({"a": 0, "c": 0},))({"a": x, "b": x}),
        "vmap_in_dims_long": lambda: fn.vmap(lambda t: t, in_dims=(0, 0))(x),
        "vmap_in_dims_list": lambda: fn.vmap(lambda t: t, in_dims=[0])(x),
        "vmap_in_dims_too_big": lambda: fn.vmap(lambda t: t, in_dims=2)(x),
        "vmap_sizes": lambda: fn.vmap(lambda t, u: t + u)(x, L.ones(2, 4)),
        "vmap_out_dims_nontensor": lambda: fn.vmap(lambda t: 3)(x),
        "vmap_out_dims_none_nontensor": lambda: fn.vmap(lambda t: (t, 3), out_dims=(0, None))(x),
        "vmap_out_dims_none_tensor": lambda: fn.vmap(lambda t: (t, y), out_dims=(0, None))(x),
        "vmap_out_dims_too_big": lambda: fn.vmap(lambda t: t, out_dims=2)(x),
        "vmap_out_dims_structure": lambda: fn.vmap(lambda t: (t, t), out_dims=(0, 1, 0))(x),
        "vmap_random_error": lambda: fn.vmap(lambda t: t + L.rand(4))(x),
        "vmap_randn_like_error": lambda: fn.vmap(lambda t: L.randn_like(t))(x),
        "vmap_dropout_error": lambda: fn.vmap(lambda t: nn.functional.dropout(t, 0.5))(x),
        "vmap_dropout_eval": lambda: fn.vmap(lambda t: nn.functional.dropout(t, 0.5, training=False))(x),
        "vmap_dropout_same": lambda: (L.manual_seed(1), fn.vmap(lambda t: nn.functional.dropout(t, 0.5),
                                                                randomness="same")(x))[1],
        "vmap_dropout_different": lambda: (L.manual_seed(1), fn.vmap(lambda t: nn.functional.dropout(t, 0.5),
                                                                     randomness="different")(x))[1],
        "vmap_rand_different": lambda: (L.manual_seed(1), fn.vmap(lambda t: t + L.rand(4),
                                                                  randomness="different")(x))[1],
        "vmap_no_tensor": lambda: fn.vmap(lambda t: t, in_dims=None)(x),
        "vmap_kwargs": lambda: fn.vmap(lambda t, scale=1.0: t * scale)(x, scale=L.ones(3)),
        "vmap_scalar_out": lambda: fn.vmap(lambda t: t.sum())(x),
        "vmap_none_out": lambda: fn.vmap(lambda t: None)(x),
        "vmap_returns_input_unbatched": lambda: fn.vmap(lambda t, u: u, in_dims=(0, None))(x, y),
        "grad_nonscalar": lambda: fn.grad(lambda t: t * 2)(x),
        "grad_no_dependence": lambda: fn.grad(lambda t: L.tensor(1.0))(x),
        "grad_no_dependence_sum": lambda: fn.grad(lambda t: y.sum())(x),
        "grad_int_input": lambda: fn.grad(lambda t: t.sum())(L.arange(3)),
        "grad_argnums_dup": lambda: fn.grad(lambda t, u: (t * u).sum(), argnums=(0, 0))(x, x),
        "grad_argnums_float": lambda: fn.grad(lambda t: t.sum(), argnums=0.0)(x),
        "jacrev_argnums_empty": lambda: fn.jacrev(lambda t: t, argnums=())(x),
        "jvp_structure": lambda: fn.jvp(lambda t, u: t, (x, x), (x,)),
        "grad_argnums_bad": lambda: fn.grad(lambda t: t.sum(), argnums=1)(x),
        "grad_aux_bad": lambda: fn.grad(lambda t: t.sum(), has_aux=True)(x),
        "grad_nontensor_out": lambda: fn.grad(lambda t: 1.0)(x),
        "jacrev_nontensor_out": lambda: fn.jacrev(lambda t: 1.0)(x),
        "jacrev_no_dependence": lambda: fn.jacrev(lambda t: y * 2)(x),
        "jacfwd_no_dependence": lambda: fn.jacfwd(lambda t: y * 2)(x),
        "jacrev_chunk0": lambda: fn.jacrev(lambda t: t, chunk_size=0)(x),
        "jacfwd_random": lambda: fn.jacfwd(lambda t: t * L.rand(4))(x),
        "jacfwd_random_same": lambda: (L.manual_seed(1), fn.jacfwd(lambda t: t * L.rand(4),
                                                                   randomness="same")(x))[1],
        "vjp_int": lambda: fn.vjp(lambda t: t, L.arange(3)),
        "jvp_not_tuple": lambda: fn.jvp(lambda t: t, x, x),
        "jvp_shape": lambda: fn.jvp(lambda t: t, (x,), (y,)),
        "hessian_nonscalar": lambda: fn.hessian(lambda t: t.sin())(y),
        "vmap_grad_requires_grad": lambda: fn.vmap(fn.grad(lambda t: (t ** 2).sum()))(x.requires_grad_()),
        "grad_of_vmap": lambda: fn.grad(lambda t: fn.vmap(lambda r: (r ** 2).sum())(t).sum())(x),
        "jacrev_of_vmap": lambda: fn.jacrev(fn.vmap(lambda r: r.sin()))(x),
        "vmap_chunk_bad": lambda: fn.vmap(lambda t: t, chunk_size=0)(x),
        "vmap_randomness_bad": lambda: fn.vmap(lambda t: t, randomness="x")(x),
    }


def refusals():
    ours_forms, theirs_forms = _module_forms(ml), _module_forms(torch)
    for name in theirs_forms:
        yield f"module/refusal {name}", _run(theirs_forms[name]), _run(ours_forms[name]), "float32"


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("select", nargs="*")
    parser.add_argument("--show", type=int, default=200)
    parser.add_argument("--refusals-only", action="store_true")
    options = parser.parse_args(argv)
    if not options.refusals_only:
        differ, total = tally(sweep(), options.select, options.show)
        print(f"ops x transforms: {differ} of {total} forms differ from torch")
    differ, total = tally(refusals(), options.select, options.show)
    print(f"modules and refusals: {differ} of {total} forms differ from torch")


if __name__ == "__main__":
    main(sys.argv[1:])
