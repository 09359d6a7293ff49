"""Higher-order gradients: autograd.grad / backward with create_graph=True, torch.autograd.functional's
hessian / hvp / vhp / jvp / jacobian / vjp, gradgradcheck -- each against torch in float64.

minilora refused create_graph=True before (NotImplementedError); now a recorded backward pass
(minilora/ops/higher_order.py) gives gradients that are themselves differentiable."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def both(array, grad=True):
    """The same float64 values as a minilora and a torch tensor (leaves that require grad)."""
    array = np.asarray(array, dtype=np.float64)
    return (ml.tensor(array, dtype=ml.float64, requires_grad=grad),
            torch.tensor(array, dtype=torch.float64, requires_grad=grad))


def close(mine, theirs, rtol=1e-10, atol=1e-12):
    if mine is None or theirs is None:
        assert mine is None and theirs is None, (mine, theirs)
        return
    assert tuple(mine.shape) == tuple(theirs.shape)
    assert str(mine.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(mine.detach().numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol)


def warns_of_cycle(lib):
    """backward(create_graph=True)'s warning, once per process in torch (TORCH_WARN_ONCE) and minilora:
    minilora's is re-armed and expected here; torch's is let through silently (it may have been used up)."""
    import contextlib
    import warnings
    if lib is ml:
        ml.ops.higher_order._warned_of_cycle = False
        return pytest.warns(UserWarning, match=r"Using backward\(\) with create_graph=True will create a "
                                               r"reference cycle")
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def lib_f(lib):
    return ml.nn.functional if lib is ml else _TorchFunctional


class _TorchFunctional:
    """torch.nn.functional, with scaled_dot_product_attention on torch's math backend: its CPU flash
    kernel has no double backward (torch raises "derivative for ..._flash_attention_for_cpu_backward is
    not implemented"); minilora's recorded attention backward has one, equal to the math backend's."""

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    @staticmethod
    def scaled_dot_product_attention(*args, **kwargs):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.MATH):
            return torch.nn.functional.scaled_dot_product_attention(*args, **kwargs)


_TorchFunctional = _TorchFunctional()


# Each case: (lib, x [3, 4], y [4, 4]) -> a tensor. Its loss is sum(out ** 3) (linear ops too then have a
# second derivative through their backward); the test compares the gradient and a Hessian-vector product.
CASES = {
    "add_broadcast": lambda lib, x, y: x + y[0],
    "sub_number": lambda lib, x, y: 2.0 - x,
    "mul_broadcast": lambda lib, x, y: x * y[1:2],
    "div": lambda lib, x, y: x / (y[:3] * y[:3] + 1),
    "div_number": lambda lib, x, y: 3.0 / (x * x + 1),
    "neg": lambda lib, x, y: -x * y[0],
    "pow_int": lambda lib, x, y: x ** 2,
    "pow_float": lambda lib, x, y: (x * x + 1) ** 1.5,
    "pow_tensor": lambda lib, x, y: (x * x + 1) ** y[:3].tanh(),
    "pow_number_base": lambda lib, x, y: 2.0 ** x,
    "exp_log": lambda lib, x, y: x.exp() + (y * y + 1).log()[0],
    "sqrt_rsqrt": lambda lib, x, y: (x * x + 1).sqrt() + (x * x + 2).rsqrt(),
    "tanh_sigmoid": lambda lib, x, y: x.tanh() * y[:3].sigmoid(),
    "relu": lambda lib, x, y: lib.relu(x) * y[:3],
    "leaky_relu": lambda lib, x, y: lib_f(lib).leaky_relu(x * y[:3], 0.1),
    "gelu": lambda lib, x, y: lib_f(lib).gelu(x * y[:3]),
    "gelu_tanh": lambda lib, x, y: lib_f(lib).gelu(x, approximate="tanh"),
    "silu": lambda lib, x, y: lib_f(lib).silu(x * y[:3]),
    "softplus": lambda lib, x, y: lib_f(lib).softplus(x * 3, beta=2, threshold=4),
    "sin_cos_abs": lambda lib, x, y: x.sin() * y[:3].cos() + x.abs(),
    "erf": lambda lib, x, y: lib.erf(x),
    "sum_mean_dims": lambda lib, x, y: x.sum(0) * x.mean(1, keepdim=True) + x.sum((0, 1)) + x.mean(),
    "matmul": lambda lib, x, y: x @ y,
    "matmul_vector": lambda lib, x, y: x @ y[0] + y[1] @ x.t(),
    "mm_bmm": lambda lib, x, y: lib.mm(x, y) + lib.bmm(x[None], y[None])[0],
    "matmul_batched_broadcast": lambda lib, x, y: x.reshape(3, 1, 1, 4) @ y.reshape(2, 4, 2),
    "linear_bias": lambda lib, x, y: lib_f(lib).linear(x, y[:2], y[3, :2]),
    "linear_3d": lambda lib, x, y: lib_f(lib).linear(x.reshape(3, 2, 2), y[:3, :2]),
    "views": lambda lib, x, y: x.view(2, 6).transpose(0, 1).reshape(3, 4).permute(1, 0).flatten()
    * y.unsqueeze(0).squeeze(0).flatten()[:12],
    "expand": lambda lib, x, y: x[:1].expand(4, 4) * y,
    "getitem_slices": lambda lib, x, y: x[1:, ::2] * x[:2, 1::2],
    "getitem_repeated_index": lambda lib, x, y: x[[0, 2, 0]] * y[:3],
    "cat_stack": lambda lib, x, y: lib.cat([x, y], 0).sum(1) + lib.stack([x, x * 2], 1).mean(2).sum(1)[0],
    "softmax": lambda lib, x, y: lib_f(lib).softmax(x * y[:3], dim=1),
    "log_softmax": lambda lib, x, y: lib_f(lib).log_softmax(x * y[:3], dim=0),
    "mse_loss": lambda lib, x, y: lib_f(lib).mse_loss(x * x, y[:3]),
    "cross_entropy": lambda lib, x, y: lib_f(lib).cross_entropy(x * y[:3], lib.tensor([0, 3, 1])),
    "cross_entropy_none": lambda lib, x, y: lib_f(lib).cross_entropy(x.tanh(), lib.tensor([2, 1, 1]),
                                                                   reduction="none"),
    "layer_norm": lambda lib, x, y: lib_f(lib).layer_norm(x * 2, (4,), y[0], y[1], eps=1e-3),
    "clone_double": lambda lib, x, y: x.clone().float().double() * y[:3],
    # siblings: where, maximum, clamp, elu, log1p, expm1, logsigmoid, logsumexp, var/std, amax, norm,
    # rms_norm, embedding
    "where": lambda lib, x, y: lib.where(x > 0, x * y[:3], x.exp()) + lib.where(y[:3] > 0, 1.0, x),
    "maximum_clamp": lambda lib, x, y: lib.maximum(x, y[:3]) * x.clamp(-0.5, 0.5) + x.clamp(min=y[0]),
    "elu_selu": lambda lib, x, y: lib_f(lib).elu(x * y[:3], 0.7) + lib_f(lib).selu(x),
    "log1p_expm1_logsigmoid": lambda lib, x, y: (x * x).log1p() * x.expm1() + lib_f(lib).logsigmoid(x * 3),
    "logsumexp": lambda lib, x, y: lib.logsumexp(x * y[:3], dim=1) + lib.logsumexp(x, (0, 1), keepdim=True),
    "var_std": lambda lib, x, y: x.var(1) * x.std(0, keepdim=True).sum() + x.var(correction=0),
    "amax_max": lambda lib, x, y: x.amax(1) * (x * y[:3]).max() + x.amin(0).sum(),
    "norm": lambda lib, x, y: x.norm(dim=1) * x.norm(3, dim=0).sum() + (x * y[:3]).norm(1.5),
    "rms_norm": lambda lib, x, y: lib_f(lib).rms_norm(x * y[:3], (4,), y[2], eps=1e-2),
    "embedding": lambda lib, x, y: lib_f(lib).embedding(lib.tensor([[1, 3, 1], [0, 1, 2]]), y * x[0], padding_idx=3),
    # linear ops with an index or a geometry: gather, index_select, pad, cumsum, flip, unfold/fold, conv
    "gather_index_select": lambda lib, x, y: x.gather(1, lib.tensor([[0, 0], [3, 1], [2, 2]])) * y[:3, :2]
    + lib.index_select(x, 0, lib.tensor([2, 2, 0]))[:, 1:3],
    "pad": lambda lib, x, y: lib_f(lib).pad(x * y[:3], (1, 2, -1, 0)) * lib_f(lib).pad(x, (0, 3, -1, 0)),
    "cumsum_flip": lambda lib, x, y: (x * y[:3]).cumsum(1) * x.flip(0) + x.flip((0, 1)),
    "unfold_fold": lambda lib, x, y: lib_f(lib).fold(lib_f(lib).unfold((x * y[:3]).reshape(1, 1, 3, 4), (2, 2),
                                                                       padding=1), (3, 4), (2, 2), padding=1),
    "conv2d": lambda lib, x, y: lib_f(lib).conv2d(x.reshape(1, 1, 3, 4), y.reshape(4, 1, 2, 2), y[0],
                                                  padding=1, stride=(1, 2)),
    "conv2d_groups_dilation": lambda lib, x, y: lib_f(lib).conv2d(x.reshape(1, 2, 2, 3), y.reshape(4, 1, 2, 2),
                                                                  groups=2).sum()
    + lib_f(lib).conv2d(x.reshape(1, 1, 3, 4), y[:1].reshape(1, 1, 2, 2), dilation=(2, 1)).sum(),
    "conv1d": lambda lib, x, y: lib_f(lib).conv1d(x.reshape(1, 3, 4), y[:3].reshape(2, 3, 2), stride=2),
    # losses and dropout
    "nll_loss": lambda lib, x, y: lib_f(lib).nll_loss(lib_f(lib).log_softmax(x * y[:3], 1), lib.tensor([3, 0, 3]))
    + lib_f(lib).nll_loss(x.tanh(), lib.tensor([1, -100, 2]), reduction="sum"),
    "nll_loss_weighted_none": lambda lib, x, y: lib_f(lib).nll_loss(
        x * y[:3], lib.tensor([1, 0, 2]), weight=lib.tensor([1.0, 2.0, 0.5, 3.0], dtype=lib.float64), reduction="none"),
    "bce_with_logits": lambda lib, x, y: lib_f(lib).binary_cross_entropy_with_logits(x * y[:3], y[1:].sigmoid())
    + lib_f(lib).binary_cross_entropy_with_logits(x, (y[:3] > 0).double(), reduction="sum",
                                                  pos_weight=lib.tensor([1.0, 2.0, 0.5, 3.0], dtype=lib.float64),
                                                  weight=lib.tensor([2.0], dtype=lib.float64)),
    "bce": lambda lib, x, y: lib_f(lib).binary_cross_entropy(x.sigmoid(), y[:3].sigmoid(), reduction="none"),
    "dropout": lambda lib, x, y: (lib.manual_seed(0), lib_f(lib).dropout(x * y[:3], 0.4))[1],
    # attention (the Llama's): plain, causal, a float mask, grouped-query heads; rotary embedding
    "sdpa": lambda lib, x, y: lib_f(lib).scaled_dot_product_attention(
        x.reshape(1, 1, 3, 4), y.reshape(1, 1, 4, 4), y.reshape(1, 1, 4, 4).tanh()),
    "sdpa_causal_mask": lambda lib, x, y: lib_f(lib).scaled_dot_product_attention(
        x.reshape(1, 1, 3, 4), y.reshape(1, 1, 4, 4), y.sin().reshape(1, 1, 4, 4), is_causal=True)
    + lib_f(lib).scaled_dot_product_attention(x.reshape(1, 1, 3, 4), y.reshape(1, 1, 4, 4), y.reshape(1, 1, 4, 4),
                                              attn_mask=lib.tensor([[0.0, -1.0, 0.5, -float("inf")]] * 3,
                                                                   dtype=lib.float64), scale=0.3),
    "sdpa_gqa": lambda lib, x, y: lib_f(lib).scaled_dot_product_attention(
        x.reshape(1, 2, 3, 2), y.reshape(1, 1, 8, 2), y.cos().reshape(1, 1, 8, 2), enable_gqa=True),
    "rotary": lambda lib, x, y: (ml.ops.rotary_embedding(x.reshape(1, 1, 3, 4), y[:3].detach().cos(),
                                                         y[:3].detach().sin())
                                 if lib is ml else  # (torch has no rotary op: the Llama's composition)
                                 x.reshape(1, 1, 3, 4) * y[:3].detach().cos() + torch.cat(
                                     [-x.reshape(1, 1, 3, 4)[..., 2:], x.reshape(1, 1, 3, 4)[..., :2]], -1)
                                 * y[:3].detach().sin()) * y[0],
    # more pointwise ops and einsum
    "hardswish_mish": lambda lib, x, y: lib_f(lib).hardswish(x * 4) + lib_f(lib).mish(x * y[:3]),
    # (hardsigmoid: torch raises "derivative for aten::hardsigmoid_backward is not implemented"; minilora's
    # second derivative is its true one, 0)
    "atan2_hypot": lambda lib, x, y: lib.atan2(x, y[:3]) * lib.hypot(x, y[1:]),
    "lerp": lambda lib, x, y: lib.lerp(x, y[:3], y[3]) + lib.lerp(x * x, y[1:], 0.3),
    "logit": lambda lib, x, y: lib.logit(x.sigmoid() * 0.9) + lib.logit(x.sigmoid(), eps=0.3),
    "xlogy": lambda lib, x, y: lib.xlogy(x, y[:3] * y[:3] + 0.5) + lib.xlogy(x * x, 2.0),
    "round_floor": lambda lib, x, y: x * (x * 3).round() + (x * y[:3]).floor() * y[:3],
    "einsum": lambda lib, x, y: lib.einsum("ij,jk->ik", x, y) + lib.einsum("ij,kj->ik", x, y.exp())
    + lib.einsum("ij->j", x * y[:3])[None],
    # pooling (a LeNet's, a ResNet head's)
    "max_pool": lambda lib, x, y: lib_f(lib).max_pool2d((x * y[:3]).reshape(1, 1, 3, 4), 2, stride=1)
    + lib_f(lib).max_pool2d(x.reshape(1, 2, 2, 3), (1, 2), padding=(0, 1))[..., :2].sum(),
    "avg_pool": lambda lib, x, y: lib_f(lib).avg_pool2d((x * y[:3]).reshape(1, 1, 3, 4), 2, stride=1, padding=1,
                                                        count_include_pad=False, ceil_mode=True),
    "adaptive_avg_pool": lambda lib, x, y: lib_f(lib).adaptive_avg_pool2d((x * y[:3]).reshape(1, 1, 3, 4), (2, 3)),
    # LoRA's fused linear (PEFT's composition for torch), with the base weight trainable too
    "lora_linear": lambda lib, x, y: (ml.ops.lora_linear(x, y[:2], y[2:3], y[3:, :2].t(), 0.5, bias=y[0, :2].detach())
                                      if lib is ml else
                                      x @ y[:2].t() + y[0, :2].detach() + 0.5 * (x @ y[2:3].t()) @ y[3:, :2]),
    # and a few more: sign, logaddexp, log2/log10, nan_to_num, index_put / setitem, roll, diagonal, repeat
    "sign_logaddexp_logbase": lambda lib, x, y: x.sign() * x + lib.logaddexp(x, y[:3]) * (x * x + 1).log2()
    + (y[1:] * y[1:] + 1).log10(),
    "nan_to_num": lambda lib, x, y: lib.nan_to_num(x.log(), nan=0.5, neginf=-2.0) * y[:3],
    "index_put": lambda lib, x, y: x.index_put((lib.tensor([0, 2]), lib.tensor([1, 3])), y[0, :2] * y[1, :2])
    * x + x.index_put((lib.tensor([1, 1]),), y[:2] * y[:2], accumulate=True),
    "roll_diagonal_repeat": lambda lib, x, y: x.roll(1, 0) * x.roll((1, -1), (0, 1)) + (x * y[:3]).diagonal(1)[:, None]
    + x.repeat(2, 1)[1:4] * y[:3] + lib.diagonal(y, -1).sum(),
    "embedding_by_freq": lambda lib, x, y: lib_f(lib).embedding(lib.tensor([1, 3, 1, 1]), y.tanh(),
                                                                scale_grad_by_freq=True),
}


RTOL = {"bce": 1e-8}  # (torch's bce backward rounds in another order: 2e-10 apart in float64)


def _results(lib, x, y, f, v):
    out = f(lib, x, y)
    loss = (out ** 3).sum()
    grads = lib.autograd.grad(loss, (x, y), create_graph=True, allow_unused=True)
    used = [(g, w) for g, w in zip(grads, v) if g is not None]
    dot = sum((g * w).sum() for g, w in used)
    second = lib.autograd.grad(dot, (x, y), allow_unused=True)
    return out, grads, second


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_derivatives_of_each_op_match_torch(name):
    f = CASES[name]
    xm, xt = both(RNG.standard_normal((3, 4)))
    ym, yt = both(RNG.standard_normal((4, 4)))
    v = [RNG.standard_normal((3, 4)), RNG.standard_normal((4, 4))]
    mine = _results(ml, xm, ym, f, [ml.tensor(a) for a in v])
    theirs = _results(torch, xt, yt, f, [torch.tensor(a) for a in v])
    rtol = RTOL.get(name, 1e-10)
    close(mine[0], theirs[0], rtol)
    for a, b in zip(mine[1], theirs[1]):  # the gradients, with a graph where torch's has one
        close(a, b, rtol)
        assert (a is not None and a.requires_grad) == (b is not None and b.requires_grad)
    for a, b in zip(mine[2], theirs[2]):
        close(a, b, rtol)


def test_gradient_penalty_of_a_mlp_discriminator():
    """WGAN-GP: the norm of d D(x_hat) / d x_hat in the loss; the penalty and its parameter gradients."""
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 8),
                               torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    mnet = ml.nn.Sequential(ml.nn.Linear(5, 8), ml.nn.LeakyReLU(0.2), ml.nn.Linear(8, 8), ml.nn.Tanh(),
                            ml.nn.Linear(8, 1)).double()
    mnet.load_state_dict({k: ml.tensor(v.numpy()) for k, v in tnet.state_dict().items()})
    real, fake, alpha = RNG.standard_normal((6, 5)), RNG.standard_normal((6, 5)), RNG.random((6, 1))

    def penalty(lib, net):
        x_hat = (lib.tensor(alpha) * lib.tensor(real) + (1 - lib.tensor(alpha)) * lib.tensor(fake)).requires_grad_(True)
        d = net(x_hat)
        g, = lib.autograd.grad(outputs=d, inputs=x_hat, grad_outputs=lib.ones_like(d), create_graph=True,
                               retain_graph=True)
        gp = ((g.norm(2, dim=1) - 1) ** 2).mean() * 10 + d.mean()
        gp.backward()
        return gp, [p.grad for p in net.parameters()]

    gm, grads_m = penalty(ml, mnet)
    gt, grads_t = penalty(torch, tnet)
    close(gm, gt)
    for a, b in zip(grads_m, grads_t):
        close(a, b)


def _mlp_params(lib):
    rng = np.random.default_rng(1)
    shapes = [(6, 4), (6,), (3, 6), (3,)]
    return [lib.tensor(rng.standard_normal(s) * 0.5, dtype=lib.float64, requires_grad=True) for s in shapes]


def _mlp(lib, params, x):
    w1, b1, w2, b2 = params
    return lib_f(lib).linear(lib_f(lib).gelu(lib_f(lib).linear(x, w1, b1)), w2, b2)


def test_hessian_vector_product_of_a_mlp_loss():
    x, target = RNG.standard_normal((5, 4)), np.array([0, 2, 1, 1, 0])
    v = [RNG.standard_normal(p.shape) for p in _mlp_params(ml)]

    def hvp(lib):
        params = _mlp_params(lib)
        loss = lib_f(lib).cross_entropy(_mlp(lib, params, lib.tensor(x)), lib.tensor(target))
        grads = lib.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * lib.tensor(w)).sum() for g, w in zip(grads, v))
        return grads, lib.autograd.grad(dot, params)

    (gm, hm), (gt, ht) = hvp(ml), hvp(torch)
    for a, b in zip(gm + hm, gt + ht):
        close(a, b)


def test_second_derivative_of_a_tanh_net_in_a_physics_informed_loss():
    """u(x) a tanh net; u'' + u = 0 as the residual; its loss's parameter gradients (three levels deep)."""
    params_m, params_t = _mlp_params(ml), _mlp_params(torch)
    grid = np.linspace(-1, 1, 7)[:, None].repeat(4, axis=1)

    def residual(lib, params):
        x = lib.tensor(grid, requires_grad=True)
        w1, b1, w2, b2 = params
        u = lib_f(lib).linear(lib.tanh(lib_f(lib).linear(x, w1, b1)), w2, b2).sum(1)
        du, = lib.autograd.grad(u.sum(), x, create_graph=True)
        d2u, = lib.autograd.grad(du[:, 0].sum(), x, create_graph=True)
        loss = ((d2u[:, 0] + u) ** 2).mean()
        loss.backward()
        return du, d2u, loss, [p.grad for p in params]

    mine, theirs = residual(ml, params_m), residual(torch, params_t)
    for a, b in zip(mine[:3] + tuple(mine[3]), theirs[:3] + tuple(theirs[3])):
        close(a, b)


def test_maml_inner_step_then_outer_gradient():
    xs, ys, xq, yq = (RNG.standard_normal(s) for s in [(8, 3), (8, 2), (5, 3), (5, 2)])

    def meta(lib):
        w = lib.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
        b = lib.tensor([0.1, -0.2], dtype=lib.float64, requires_grad=True)
        inner = lib_f(lib).mse_loss(lib.sigmoid(lib_f(lib).linear(lib.tensor(xs), w, b)), lib.tensor(ys))
        gw, gb = lib.autograd.grad(inner, (w, b), create_graph=True)
        w2, b2 = w - 0.5 * gw, b - 0.5 * gb
        outer = lib_f(lib).mse_loss(lib.sigmoid(lib_f(lib).linear(lib.tensor(xq), w2, b2)), lib.tensor(yq))
        outer.backward()
        return outer, w.grad, b.grad

    for a, b in zip(meta(ml), meta(torch)):
        close(a, b)


def test_backward_with_create_graph_leaves_differentiable_grads():
    xm, xt = both([0.5, -1.0, 2.0])
    for x, lib in ((xm, ml), (xt, torch)):
        with warns_of_cycle(lib):
            (x.sin() * x).sum().backward(create_graph=True)
            (x ** 3).sum().backward(create_graph=True)  # a second one adds (out of place, in the graph)
    close(xm.grad, xt.grad)
    assert xm.grad.grad_fn is not None
    gm, = ml.autograd.grad(xm.grad.sum(), xm)
    gt, = torch.autograd.grad(xt.grad.sum(), xt)
    close(gm, gt)


def _f_two(lib):
    return lambda a, b: (a.exp() * b.sin()).sum() + (a @ b) ** 2


FUNCTIONS = {  # (function of lib, inputs as arrays)
    "one_input": (lambda lib: (lambda a: (a.tanh() * a[[1, 0, 2]]).sum() + a.prod() * 0 + (a ** 3).sum()),
                  (np.array([0.3, -0.7, 1.1]),)),
    "two_inputs": (_f_two, (np.array([0.2, 0.5]), np.array([-0.4, 0.9]))),
}


@pytest.mark.parametrize("name", ["two_inputs"])
def test_functional_hessian_hvp_vhp_jacobian_vjp_jvp(name):
    make, arrays = FUNCTIONS[name]
    v = tuple(RNG.standard_normal(a.shape) for a in arrays)
    results = {}
    for lib in (ml, torch):
        F, f = lib.autograd.functional, make(lib)
        inputs = tuple(lib.tensor(a) for a in arrays)
        vs = tuple(lib.tensor(a) for a in v)
        vector_f = lambda a, b: lib.stack([a.exp() * b, a * b.sin()])  # noqa: E731  (an [2, 2] output)
        results[lib] = [F.hessian(f, inputs), F.hvp(f, inputs, vs), F.vhp(f, inputs, vs),
                        F.jacobian(vector_f, inputs), F.vjp(vector_f, inputs, lib.ones(2, 2, dtype=lib.float64)),
                        F.jvp(vector_f, inputs, vs), F.hessian(lambda a: (a.sin() ** 2).sum(), inputs[0]),
                        F.jacobian(lambda a: a.sigmoid() * 2, inputs[1], create_graph=True)]

    def flat(x):
        return [y for z in x for y in flat(z)] if isinstance(x, (tuple, list)) else [x]

    mine, theirs = flat(results[ml]), flat(results[torch])
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        close(a, b)


def test_functional_create_graph_results_differentiate_further():
    """hessian(create_graph=True) of a function of the caller's own tensor: d(trace H)/d(x), as torch."""
    xm, xt = both([0.4, -0.3, 0.8])
    out = {}
    for lib, x in ((ml, xm), (torch, xt)):
        H = lib.autograd.functional.hessian(lambda a: (a.exp() * a.sin()).sum() * a.sum(), x, create_graph=True)
        g, = lib.autograd.grad(H.diagonal().sum() if lib is torch else (H * lib.eye(3)).sum(), x)
        _, hv = lib.autograd.functional.hvp(lambda a: (a ** 4).sum(), x, x * 2, create_graph=True)
        g2, = lib.autograd.grad(hv.sum(), x)
        _, jv = lib.autograd.functional.jvp(lambda a: a.tanh() * a, x, x.cos(), create_graph=True)
        g3, = lib.autograd.grad(jv.sum(), x)
        value, vj = lib.autograd.functional.vjp(lambda a: a.exp() * a.sum(), x, x.sin(), create_graph=True)
        g4, = lib.autograd.grad((vj * value).sum(), x)
        J = lib.autograd.functional.jacobian(lambda a: a.sigmoid() * a.sum(), x, create_graph=True)
        g5, = lib.autograd.grad(J.sum(), x)
        out[lib] = (H, g, hv, g2, jv, g3, value, vj, g4, J, g5)
    for a, b in zip(out[ml], out[torch]):
        close(a, b)


def test_functional_errors_as_torch():
    for lib in (ml, torch):
        F = lib.autograd.functional
        with pytest.raises(RuntimeError, match="should contain a single element"):
            F.hessian(lambda a: a * 2, lib.ones(2, dtype=lib.float64))
        with pytest.raises(RuntimeError, match="should return a single Tensor"):
            F.vhp(lambda a: (a.sum(), a.sum()), lib.ones(2, dtype=lib.float64), lib.ones(2, dtype=lib.float64))
        with pytest.raises(RuntimeError, match="The vector v can only be None"):
            F.hvp(lambda a: (a * a).sum(), lib.ones(2, dtype=lib.float64))


def test_an_op_without_a_recorded_backward_is_refused_by_name():
    x = ml.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=ml.float64, requires_grad=True)
    def huber(x):  # (a bfloat16 huber loss: the example of a refusal; angle's, then logaddexp2's until round 16)
        return ml.nn.functional.huber_loss(x.bfloat16(), (x * 2).bfloat16(), reduction="none").double()
    with pytest.raises(NotImplementedError, match=r"create_graph=True: BFloat16Huber's backward is not "
                                                  r"differentiable in minilora \(torch's HuberLossBackward0\)"):
        ml.autograd.grad((huber(x) * x).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="BFloat16Huber's backward is not differentiable"), warns_of_cycle(ml):
        (huber(x) ** 2).sum().backward(create_graph=True)
    # without create_graph the same graph differentiates as before (the plain engine)
    g, = ml.autograd.grad((ml.linalg.pinv(x) * x).sum(), x)
    xt = torch.tensor(x.detach().numpy(), requires_grad=True)
    close(g, torch.autograd.grad((torch.linalg.pinv(xt) * xt).sum(), xt)[0])


def test_gradgradcheck_passes_and_catches_a_wrong_second_derivative(monkeypatch):
    x = ml.tensor(RNG.standard_normal((2, 3)), dtype=ml.float64, requires_grad=True)
    w = ml.tensor(RNG.standard_normal((3, 3)), dtype=ml.float64, requires_grad=True)

    def f(a, b):
        return (a @ b).tanh() * a.sin()

    assert ml.autograd.gradcheck(f, (x, w))
    assert ml.autograd.gradgradcheck(f, (x, w))
    # a backward that reads sin's input as a constant (what a saved array would be): right first
    # derivatives, wrong second ones -- gradgradcheck must see it
    Sin = x.sin().grad_fn.fn
    monkeypatch.setattr(Sin, "backward_graph", staticmethod(
        lambda ctx, g: g * ml.tensor(np.cos(ctx.inputs[0].detach().numpy()))))
    assert ml.autograd.gradcheck(f, (x, w))
    assert ml.autograd.gradgradcheck(f, (x, w), raise_exception=False) is False
    with pytest.raises(ml.autograd.GradcheckError):
        ml.autograd.gradgradcheck(f, (x, w))


def test_torch_gradgradcheck_agrees_on_the_same_function():
    xt = torch.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a: (a * a).sigmoid(), (xt,))
    xm = ml.tensor(xt.detach().numpy(), requires_grad=True)
    assert ml.autograd.gradgradcheck(lambda a: (a * a).sigmoid(), (xm,))


def _cube(lib, once=False, save_output=False):
    class Cube(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            out = x ** 3 * k
            ctx.save_for_backward(x, out if save_output else None)
            ctx.k = k
            return out

        @staticmethod
        def backward(ctx, g):
            x, _ = ctx.saved_tensors
            return g * 3 * x * x * ctx.k, None

    if once:
        Cube.backward = staticmethod(lib.autograd.function.once_differentiable(Cube.backward.__func__
                                                                                if hasattr(Cube.backward, "__func__")
                                                                                else Cube.backward))
    return Cube


def test_double_backward_through_a_custom_function():
    """torch differentiates a custom Function's backward when it is written with differentiable ops."""
    xm, xt = both([0.5, -1.5, 2.0])
    results = []
    for lib, x in ((ml, xm), (torch, xt)):
        Cube = _cube(lib)
        y = (Cube.apply(x.sin(), 2.0) * x).sum()
        g, = lib.autograd.grad(y, x, create_graph=True)
        h, = lib.autograd.grad((g * g).sum(), x)
        results.append((y, g, h, lib.autograd.functional.hessian(lambda a: Cube.apply(a, 0.5).sum(), x)))
    for a, b in zip(*results):
        close(a, b)


def test_once_differentiable_backward_refuses_a_second_differentiation_as_torch():
    for lib in (ml, torch):
        x = lib.tensor([0.5, 2.0], dtype=lib.float64, requires_grad=True)
        Cube = _cube(lib, once=True)
        g, = lib.autograd.grad(Cube.apply(x, 1.0).sum(), x, create_graph=True)
        np.testing.assert_allclose(g.detach().numpy(), [0.75, 12.0])
        assert not g.requires_grad  # (torch's: its incoming gradient, ones, was in no graph)
        g, = lib.autograd.grad((Cube.apply(x, 1.0) ** 2).sum(), x, create_graph=True)
        np.testing.assert_allclose(g.detach().numpy(), [0.75 * 2 * 0.125, 12.0 * 2 * 8])
        assert g.requires_grad
        with pytest.raises(RuntimeError, match="trying to differentiate twice a function that was marked with "
                                               "@once_differentiable"):
            g.sum().backward()


def test_custom_function_saving_its_output_differentiates_twice():
    """A custom forward's saved output is unpacked with its own node in a create_graph=True pass (torch's
    rule), so saving it no longer refuses (tests/test_double_backward2_r9.py: a backward that reads it)."""
    results = []
    for lib in (ml, torch):
        x = lib.tensor([0.5, 2.0], dtype=lib.float64, requires_grad=True)
        g, = lib.autograd.grad(_cube(lib, save_output=True).apply(x, 1.0).sum(), x, create_graph=True)
        results.append((g, lib.autograd.grad(g.sum(), x)[0]))
    for a, b in zip(*results):
        close(a, b)


def test_gradient_norm_penalty_of_a_tiny_llama_matches_transformers():
    """Double backward through the whole Llama (embedding, RMSNorm, rotary, grouped-query attention, SwiGLU,
    cross-entropy): the squared norm of the loss's parameter gradients, and its own gradients, against
    transformers' (eager attention: torch's CPU flash kernel has no double backward). transformers computes
    the rotary tables in float32, so the two agree to ~1e-7 relative, not to float64's last bits."""
    transformers = pytest.importorskip("transformers")
    from minilora.nn.llama import LlamaConfig, LlamaForCausalLM
    sizes = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=16)
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes, attn_implementation="eager")).double()
    mine = LlamaForCausalLM(LlamaConfig(**sizes)).double()
    mine.load_state_dict({k: ml.tensor(v.numpy()) for k, v in theirs.state_dict().items()})

    def penalty(lib, model):
        ids = lib.tensor([[1, 5, 7, 3, 2]])
        loss = model(ids, labels=ids).loss
        params = [p for _, p in model.named_parameters()]
        grads = lib.autograd.grad(loss, params, create_graph=True)
        total = sum((g * g).sum() for g in grads)
        total.backward()
        return [loss, total] + [p.grad for p in params]

    ours, hf = penalty(ml, mine), penalty(torch, theirs)
    np.testing.assert_allclose(ours[0].item(), hf[0].item(), rtol=1e-6)  # (transformers' loss: in float32)
    for a, b in zip(ours[1:], hf[1:]):
        close(a, b, rtol=1e-5, atol=1e-5)


def test_create_graph_with_hooks_retain_grad_and_backward_inputs():
    """Tensor hooks see (and may replace) the gradient as a tensor in the graph; retain_grad() keeps a
    differentiable .grad; backward(inputs=...) fills only those leaves' .grad."""
    results = []
    for lib in (ml, torch):
        x, w = (lib.tensor(a, dtype=lib.float64, requires_grad=True) for a in ([0.5, -1.0, 2.0], [0.3, 0.2, -0.4]))
        h = (x * w).sin()
        h.retain_grad()
        h.register_hook(lambda g: g * h.detach().cos() * 2)
        g, = lib.autograd.grad((h * h * x).sum(), x, create_graph=True)
        second, = lib.autograd.grad(g.sum(), w, retain_graph=True)
        with warns_of_cycle(lib):
            (h.exp() * x).sum().backward(create_graph=True, inputs=[w])
        results.append((g, second, w.grad, x.grad, h.grad))
    for a, b in zip(*results):
        close(a, b)
    assert results[0][2].requires_grad and results[0][3] is None


def test_autograd_grad_fills_retain_grad_tensors_as_torch():
    """torch's grad() (with or without create_graph) fills a retain_grad() tensor's .grad on the way,
    adding up over calls; minilora's left it None."""
    out = []
    for lib in (ml, torch):
        x = lib.tensor([0.5, -1.0], dtype=lib.float64, requires_grad=True)
        h = x * 2
        h.retain_grad()
        lib.autograd.grad((h * h).sum(), x, retain_graph=True)
        lib.autograd.grad((h * h * h).sum(), x, create_graph=True)
        out.append(h.grad)
    close(*out)


def test_gradgradcheck_of_lora_linear_with_a_seeded_dropout_mask():
    """The fused LoRA op's recorded backward with dropout (a fixed seed: the same mask in every call) against
    central differences of its first derivatives."""
    x, A, B = (ml.tensor(RNG.standard_normal(s), dtype=ml.float64, requires_grad=True)
               for s in [(3, 4), (2, 4), (3, 2)])
    W0 = ml.tensor(RNG.standard_normal((3, 4)), dtype=ml.float64)
    f = lambda x, A, B: ml.ops.lora_linear(x, W0, A, B, 0.5, dropout_p=0.4, seed=7).tanh()  # noqa: E731
    assert ml.autograd.gradgradcheck(f, (x, A, B))


def test_create_graph_under_saved_tensor_hooks():
    """save_on_cpu / saved_tensors_hooks pack what nodes save; the recorded pass unpacks it as the plain one."""
    out = []
    for lib in (ml, torch):
        x = lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64, requires_grad=True)
        with lib.autograd.graph.saved_tensors_hooks(lambda t: t * 1, lambda t: t):
            y = (x.abs() * x.relu() + x.exp()).sum()
        g, = lib.autograd.grad(y, x, create_graph=True)
        out.append((g,) + lib.autograd.grad(g.sum(), x))
    for a, b in zip(*out):
        close(a, b)


def test_in_place_changes_in_a_create_graph_pass():
    """In-place ops differentiate twice as torch's; an input changed in place after an op that torch lets
    pass (exp saves its result) is refused by minilora's recorded pass, which recomputes from the inputs."""
    def cases(lib, x):
        h = x * 3
        h[:2] = x[1:] ** 2
        return [(x * 1).exp_().sum(), ((x * 2).relu_() ** 2).sum(), ((x * x).add_(x.exp()) ** 2).sum(),
                (h.exp() ** 2).sum()]
    results = []
    for lib in (ml, torch):
        x = lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64, requires_grad=True)
        grads = [lib.autograd.grad(y, x, create_graph=True)[0] for y in cases(lib, x)]
        results.append(grads + [lib.autograd.grad((g * g).sum(), x)[0] for g in grads])
    for a, b in zip(*results):
        close(a, b)
    x = ml.tensor([0.5, -1.0, 2.0], dtype=ml.float64, requires_grad=True)
    h = x * 1
    e = h.exp()
    h.add_(1)
    with pytest.raises(RuntimeError, match="create_graph=True: input 0 of ExpBackward0 was changed in place"):
        ml.autograd.grad((e * e).sum(), x, create_graph=True)
    g, = ml.autograd.grad((e * e).sum(), x)  # (the plain pass reads exp's saved result: torch's value)
    np.testing.assert_allclose(g.numpy(), 2 * np.exp(2 * np.array([0.5, -1.0, 2.0])))
