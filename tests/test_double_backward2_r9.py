"""Second derivatives (create_graph=True) through the ops the first round refused: the special functions,
prod/cumprod/logcumsumexp, transposed convolution, adaptive max pooling, the scatter and index_* family,
as_strided, diag_embed, median, fmod/remainder, inv/det/logdet/slogdet, a custom Function whose backward
reads the output it saved, the piecewise-linear ops' zero second derivative -- each against torch in float64;
then the tutorials that reach them (WGAN-GP with a transposed-convolution generator, MAML on a CNN with
global max pooling, a physics-informed net with a product boundary factor)."""
import os
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

from test_double_backward_r8 import both, close  # noqa: E402  (float64 leaves in both; compared to 1e-10)

RNG = np.random.default_rng(9)


def F(lib):
    return lib.nn.functional


def f64(lib, values):
    return lib.tensor(values, dtype=lib.float64)


def index(lib, values):
    return lib.tensor(values, dtype=lib.int64)


def with_zero(lib, x):
    """``x`` with its column 2 exactly 0 (the zero-safe product formulas)."""
    return lib.cat([x[:, :2], x[:, 2:3] * 0, x[:, 3:]], 1)


# Each case: (lib, x [3, 4], y [4, 4]) -> a tensor; the loss is sum(out ** 3), and the test compares the
# gradient and a Hessian-vector product with torch's.
CASES = {
    "tan_asin_acos_atan": lambda lib, x, y: (x * 0.3).tan() + (x.tanh() * 0.9).asin() * y[:3]
    + (x.tanh() * 0.9).acos() + lib.atan(x * y[:3]),
    "hyperbolic_exp2": lambda lib, x, y: x.sinh() * y[:3] + x.cosh() + x.asinh() + (x * x + 1.5).acosh()
    + (x.tanh() * 0.9).atanh() + lib.exp2(x),
    "erfc_erfinv": lambda lib, x, y: lib.erfc(x * y[:3]) + lib.erfinv(x.tanh() * 0.9),
    "lgamma_digamma_polygamma": lambda lib, x, y: (x * x + 0.5).lgamma() + (x * x + 0.5).digamma() * y[:3]
    + lib.polygamma(2, x * x + 0.5) + lib.mvlgamma(x * x + 2, 2),
    "bessel": lambda lib, x, y: lib.i0(x * y[:3]) + lib.special.i1(x) + lib.special.i0e(x) + lib.special.i1e(x * y[:3])
    + lib.special.i1(x * f64(lib, [0.0, 1, 1, 1])) + lib.special.i1e(x * f64(lib, [1.0, 0, 1, 1])),
    "ndtri_log_ndtr_xlog1py_zeta": lambda lib, x, y: lib.special.ndtri(x.sigmoid()) + lib.special.log_ndtr(x * y[:3])
    + lib.special.xlog1py(x, y[:3] * y[:3]) + lib.special.zeta(f64(lib, 3.0), x * x + 1),
    "prod": lambda lib, x, y: x.prod(1) * y[:3].prod() + x.prod(0, keepdim=True).sum(),
    "prod_with_a_zero": lambda lib, x, y: with_zero(lib, x * y[:3]).prod(1) + with_zero(lib, x).prod(),
    "cumprod": lambda lib, x, y: (x * y[:3]).cumprod(1) + x.cumprod(0),
    "cumprod_with_a_zero": lambda lib, x, y: with_zero(lib, x * y[:3]).cumprod(1),
    "logcumsumexp": lambda lib, x, y: (x * y[:3]).logcumsumexp(1) * x.logcumsumexp(0),
    "conv_transpose2d": lambda lib, x, y: F(lib).conv_transpose2d(x.reshape(1, 2, 2, 3), y.reshape(2, 2, 2, 2), y[0, :2],
                                                                  stride=2, padding=1, output_padding=1),
    "conv_transpose2d_groups_dilation": lambda lib, x, y: F(lib).conv_transpose2d(
        x.reshape(1, 2, 2, 3), y.reshape(2, 2, 2, 2), groups=2, dilation=(1, 2)),
    "conv_transpose1d": lambda lib, x, y: F(lib).conv_transpose1d(x.reshape(1, 3, 4), y[:3].reshape(3, 2, 2), stride=2),
    "adaptive_max_pool": lambda lib, x, y: F(lib).adaptive_max_pool2d((x * y[:3]).reshape(1, 1, 3, 4), (2, 3))
    .sum() + F(lib).adaptive_max_pool1d(x.reshape(1, 3, 4) * y[1], 3).sum(),
    "scatter": lambda lib, x, y: x.scatter(1, index(lib, [[0, 2], [1, 3], [3, 0]]), y[:3, :2] * y[:3, :2]) * x
    + x.scatter_add(0, index(lib, [[0, 1, 2, 0], [0, 0, 1, 2]]), y[:2] * x[:2]) + x.scatter(1, index(lib, [[1]] * 3), 0.5),
    "scatter_reduce": lambda lib, x, y: x.scatter_reduce(1, index(lib, [[0, 0, 1, 3]] * 3), y[:3] * x, "sum")
    + x.scatter_reduce(1, index(lib, [[0, 2, 2, 1]] * 3), y[:3] * y[:3], "mean", include_self=False) * x,
    "index_add_copy_fill": lambda lib, x, y: x.index_add(0, index(lib, [2, 0, 2]), x * y[:3], alpha=2.0)
    + x.index_copy(1, index(lib, [3, 1]), y[:3, :2] * x[:, :2]) * x + x.index_fill(1, index(lib, [0, 2]), y[0, 0] * y[1, 1]),
    "masked_scatter": lambda lib, x, y: x.masked_scatter(lib.tensor([[True, False, True, False]]), y * x[0]) * x,
    "diag_embed_as_strided_median": lambda lib, x, y: lib.diag_embed(x * y[:3]).sum(0)[:3]
    + lib.as_strided(x * y[:3], (3, 4), (2, 1), 1) * x + (x * y[:3]).median() * x,
    "inv_det_logdet_slogdet": lambda lib, x, y: lib.linalg.inv(x.t() @ x + lib.eye(4, dtype=lib.float64)) * y
    + lib.linalg.det(y + 3 * lib.eye(4, dtype=lib.float64)) + lib.logdet(y @ y.t() + x.t() @ x)
    + lib.linalg.slogdet(x @ x.t() + y[:3, :3])[1].reshape(1, 1),
    "vector_norm": lambda lib, x, y: lib.linalg.vector_norm(x * y[:3], dim=1) * lib.linalg.norm(x, dim=0)[:3]
    + lib.linalg.vector_norm(x, 1) + lib.linalg.vector_norm(x * y[:3], keepdim=True),
    "tensor_unfold": lambda lib, x, y: (x * y[:3]).unfold(1, 2, 1) * x.unfold(0, 2, 1)[:1, 1:],
    "addcmul_float32_and_add_alpha": lambda lib, x, y: lib.addcmul(x.float(), y[:3].float(), x.float(),
                                                                   value=0.5).double() + lib.add(x, y[:3], alpha=2.5),
    "solve": lambda lib, x, y: lib.linalg.solve(y + 3 * lib.eye(4, dtype=lib.float64), x.t())
    + lib.linalg.solve(y * y + lib.eye(4, dtype=lib.float64), x[0])[:, None]
    + lib.linalg.solve(y[:3, :3] + 2 * lib.eye(3, dtype=lib.float64), x[:, :3].t(), left=False).t().sum(),
    "cholesky": lambda lib, x, y: lib.linalg.cholesky(x.t() @ x + y @ y.t() + lib.eye(4, dtype=lib.float64)) * y
    + lib.linalg.cholesky(x @ x.t() + lib.eye(3, dtype=lib.float64), upper=True).sum(),
    "cholesky_solve_inverse": lambda lib, x, y: lib.cholesky_solve(x.t(), y.tril() + 3 * lib.eye(4, dtype=lib.float64))
    + lib.cholesky_solve(x.t(), y.triu() + 3 * lib.eye(4, dtype=lib.float64), upper=True) * y[:, :3]
    + lib.cholesky_inverse(y.tril() + 2 * lib.eye(4, dtype=lib.float64))[:, :3]
    + lib.cholesky_inverse(y.triu() + 2 * lib.eye(4, dtype=lib.float64), upper=True)[:, 1:],
    "solve_triangular": lambda lib, x, y: lib.linalg.solve_triangular(y + 3 * lib.eye(4, dtype=lib.float64), x.t(),
                                                                      upper=False)
    + lib.linalg.solve_triangular(y * y + 1, x, upper=True, left=False, unitriangular=True).sum(),
    "fmod_remainder": lambda lib, x, y: lib.fmod(x * 3, y[:3] * y[:3] + 0.5) * x + lib.remainder(x * 3, y[:3] - 2.5),
}


def _results(lib, x, y, f, v):
    out = f(lib, x, y)
    grads = lib.autograd.grad((out ** 3).sum(), (x, y), create_graph=True, allow_unused=True)
    dot = sum((g * w).sum() for g, w in zip(grads, v) if g is not None)
    return out, grads, lib.autograd.grad(dot, (x, y), allow_unused=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_derivatives_of_each_op_match_torch(name):
    xm, xt = both(RNG.standard_normal((3, 4)))
    ym, yt = both(RNG.standard_normal((4, 4)))
    v = [RNG.standard_normal((3, 4)), RNG.standard_normal((4, 4))]
    mine = _results(ml, xm, ym, CASES[name], [ml.tensor(a) for a in v])
    theirs = _results(torch, xt, yt, CASES[name], [torch.tensor(a) for a in v])
    close(mine[0], theirs[0])
    for a, b in zip(mine[1] + mine[2], theirs[1] + theirs[2]):
        close(a, b)


def _sigmoid_function(lib):
    """The tutorials' custom sigmoid: backward reads the output it saved (``out * (1 - out)``)."""
    class Sigmoid(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = 1 / (1 + (-x).exp())
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            out, = ctx.saved_tensors
            return g * out * (1 - out)
    return Sigmoid


def test_custom_function_whose_backward_reads_its_saved_output():
    """torch unpacks a saved output with its own node, so the second derivative runs the Function's
    backward again; minilora refused before (the output was kept outside the graph)."""
    xm, xt = both(RNG.standard_normal(5))
    results = []
    for lib, x in ((ml, xm), (torch, xt)):
        Sigmoid = _sigmoid_function(lib)
        y = Sigmoid.apply(x * 2)
        g, = lib.autograd.grad((y * y).sum(), x, create_graph=True)
        h, = lib.autograd.grad((g * g.tanh()).sum(), x, create_graph=True)
        third, = lib.autograd.grad(h.sum(), x)
        results.append((y, g, h, third, lib.autograd.functional.hessian(lambda a: Sigmoid.apply(a).sum(), x)))
    for a, b in zip(*results):
        close(a, b)


def _copy_of(module, torch_module):
    module.load_state_dict({k: ml.tensor(v.detach().numpy()) for k, v in torch_module.state_dict().items()})
    return module


def test_wgan_gp_with_a_transposed_convolution_generator():
    """DCGAN-style generator (ConvTranspose2d, BatchNorm, ReLU, Tanh), conv discriminator; the penalty's
    x_hat mixes real and *undetached* fake images, so the recorded pass runs through the generator too."""
    torch.manual_seed(0)

    def nets(lib):
        nn = lib.nn
        generator = nn.Sequential(nn.ConvTranspose2d(4, 3, 4, 2, 1), nn.BatchNorm2d(3), nn.ReLU(),
                                  nn.ConvTranspose2d(3, 2, 3, 1, 1, groups=1), nn.Tanh())
        critic = nn.Sequential(nn.Conv2d(2, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 4 * 4, 1))
        return generator.double(), critic.double()

    tg, tc = nets(torch)
    mg, mc = nets(ml)
    _copy_of(mg, tg), _copy_of(mc, tc)
    noise, real, alpha = RNG.standard_normal((3, 4, 4, 4)), RNG.standard_normal((3, 2, 8, 8)), RNG.random((3, 1, 1, 1))

    def step(lib, generator, critic):
        fake = generator(f64(lib, noise))
        x_hat = f64(lib, alpha) * f64(lib, real) + (1 - f64(lib, alpha)) * fake
        score = critic(x_hat)
        g, = lib.autograd.grad(score, x_hat, lib.ones_like(score), create_graph=True)
        loss = critic(fake).mean() - critic(f64(lib, real)).mean() + 10 * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        loss.backward()
        return [loss] + [p.grad for p in list(generator.parameters()) + list(critic.parameters())]

    for a, b in zip(step(ml, mg, mc), step(torch, tg, tc)):
        close(a, b, rtol=1e-9)


def test_maml_on_a_cnn_with_global_max_pooling():
    """MAML's inner step with create_graph=True through conv2d, relu, adaptive max pooling and a
    classifier; the outer loss's gradients for the initial weights."""
    rng = np.random.default_rng(2)
    shapes = [(4, 1, 3, 3), (4,), (3, 4), (3,)]
    start = [rng.standard_normal(s) * 0.5 for s in shapes]
    support, query = rng.standard_normal((5, 1, 6, 6)), rng.standard_normal((5, 1, 6, 6))
    labels = np.array([0, 2, 1, 1, 0])

    def net(lib, params, x):
        w, b, v, c = params
        h = F(lib).relu(F(lib).conv2d(x, w, b, padding=1))
        return F(lib).linear(F(lib).adaptive_max_pool2d(h, 1).flatten(1), v, c)

    def meta_gradient(lib):
        params = [lib.tensor(a, dtype=lib.float64, requires_grad=True) for a in start]
        target = index(lib, labels)
        inner = F(lib).cross_entropy(net(lib, params, f64(lib, support)), target)
        grads = lib.autograd.grad(inner, params, create_graph=True)
        fast = [p - 0.4 * g for p, g in zip(params, grads)]
        outer = F(lib).cross_entropy(net(lib, fast, f64(lib, query)), target)
        return [outer] + list(lib.autograd.grad(outer, params))

    for a, b in zip(meta_gradient(ml), meta_gradient(torch)):
        close(a, b)


def test_physics_informed_net_with_a_product_boundary_factor():
    """u(x) = prod_k x_k (1 - x_k) * net(x) vanishes on the unit square's boundary (the hard-constraint
    trick); the Poisson residual needs u's second derivatives in x, and the loss's parameter gradients."""
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(s) * 0.7 for s in [(8, 2), (8,), (1, 8), (1,)]]
    points = rng.random((6, 2))

    def loss_and_grads(lib):
        params = [lib.tensor(a, dtype=lib.float64, requires_grad=True) for a in start]
        x = f64(lib, points).requires_grad_(True)
        net = F(lib).linear(F(lib).linear(x, params[0], params[1]).sin().tanh(), params[2], params[3])[:, 0]
        u = (x * (1 - x)).prod(1) * net * x[:, 0].sinh()
        du, = lib.autograd.grad(u.sum(), x, create_graph=True)
        laplacian = sum(lib.autograd.grad(du[:, k].sum(), x, create_graph=True)[0][:, k] for k in range(2))
        source = (np.pi * x).sin().prod(1)
        loss = ((laplacian + source) ** 2).mean()
        return [loss, laplacian] + list(lib.autograd.grad(loss, params))

    for a, b in zip(loss_and_grads(ml), loss_and_grads(torch)):
        close(a, b)



PIECEWISE_LINEAR = {
    "relu": lambda lib, h: lib.relu(h),
    "leaky_relu": lambda lib, h: F(lib).leaky_relu(h, 0.2),
    "abs": lambda lib, h: h.abs(),
    "max_pool2d": lambda lib, h: F(lib).max_pool2d(h.reshape(1, 1, 2, 4), 2),
    "avg_pool2d": lambda lib, h: F(lib).avg_pool2d(h.reshape(1, 1, 2, 4), (1, 2)),
    "adaptive_max_pool2d": lambda lib, h: F(lib).adaptive_max_pool2d(h.reshape(1, 1, 2, 4), (1, 3)),
}


@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_a_piecewise_linear_op_keeps_its_input_in_the_graph_as_torch(name):
    """torch's formulas read the input (threshold_backward(grad, result, 0), grad * self.sgn(), pooling's
    zeros_like(self)): the second derivative of a ReLU net in x is zeros, where minilora said the input was
    'not used in the graph' (a PINN with ReLU, the Hessian of a ReLU net in its input)."""
    xm, xt = both(RNG.standard_normal((2, 3)))
    wm, wt = both(RNG.standard_normal((3, 4)))
    results = []
    for lib, x, w in ((ml, xm, wm), (torch, xt, wt)):
        u = PIECEWISE_LINEAR[name](lib, x @ w).sum() * 2
        g, = lib.autograd.grad(u, x, create_graph=True)
        second = lib.autograd.grad(g.sum(), (x, w))
        results.append((g, g.requires_grad) + second)
    assert results[0][1] == results[1][1] is True
    for a, b in zip(results[0][2:] + results[0][:1], results[1][2:] + results[1][:1]):
        close(a, b)


def test_as_strided_scatter_differentiates_twice():
    """Checked by differences, not against torch: torch 2.13's first derivative of as_strided_scatter for
    ``self`` is zero off the scattered slice's first row (``x * y`` below), minilora's is ``grad`` with the
    slice zeroed (torch's derivatives.yaml formula)."""
    x = ml.tensor(RNG.standard_normal((3, 4)), dtype=ml.float64, requires_grad=True)
    y = ml.tensor(RNG.standard_normal((3, 4)), dtype=ml.float64, requires_grad=True)
    f = lambda a, b: ml.as_strided_scatter(a * b, b[0, :2] * a[0, :2], (2,), (3,), 1) ** 2  # noqa: E731
    assert ml.autograd.gradgradcheck(f, (x, y))


@pytest.mark.parametrize("create_graph", [False, True])
def test_logdet_of_a_negative_determinant_passes_no_gradient_as_torch(create_graph):
    """torch.logdet is where(sign < 0, nan, logabsdet): a matrix with a negative determinant gets a zero
    gradient (minilora gave it A^-T, the logabsdet's); found by the survey below."""
    batch = np.stack([np.eye(3) + 0.1, np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 2]]) + 0.1])
    results = []
    for lib in (ml, torch):
        a = lib.tensor(batch, dtype=lib.float64, requires_grad=True)
        g, = lib.autograd.grad((lib.logdet(a) * f64(lib, [2.0, 3.0])).sum(), a, create_graph=create_graph)
        results.append(g)
    close(*results)


def test_module_backward_hooks_in_a_create_graph_pass():
    """register_full_backward_hook / _pre_hook see the gradients as tensors in the graph, and what they
    return is differentiated again (torch's); minilora refused the hooks' nodes (_Carry)."""
    results = []
    for lib in (ml, torch):
        lib.manual_seed(0)
        net = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 1)).double()
        net[1].register_full_backward_hook(lambda module, grad_in, grad_out: (grad_in[0] * 2,))
        net[2].register_full_backward_pre_hook(lambda module, grad_out: (grad_out[0] * grad_out[0],))
        x = lib.tensor(np.linspace(0, 1, 6).reshape(2, 3), dtype=lib.float64, requires_grad=True)
        g, = lib.autograd.grad(net(x).sum() * 3, x, create_graph=True)
        results.append((g,) + lib.autograd.grad((g * g).sum(), [x] + list(net.parameters()), allow_unused=True))
    for a, b in zip(*results):
        close(a, b)


# ---- the survey: every name minilora shares with torch (top level, nn.functional, Tensor methods), called
# on float64 tensors in a few spellings; its gradient with create_graph=True, then a second gradient, each
# against torch. Opt-in (MINILORA_CREATE_GRAPH_SURVEY=1, ~10 s): the ops above are its finds, minimized.
KNOWN = {  # what the survey still finds, and why it is left
    "group_norm": "two elements per group: the second derivatives are round-off (1e-6 apart)",
}
SURVEY_SHAPES = [(3, 4), (2, 3, 4, 4), (2, 3, 5)]
NOT_SURVEYED = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "rrelu",
                "gumbel_softmax", "fractional_max_pool2d", "fractional_max_pool3d", "backward", "register_hook",
                "retain_grad", "detach", "numpy", "tolist", "item", "pin_memory", "cuda", "cpu", "to", "type",
                "bernoulli", "multinomial", "apply_", "map_", "storage", "untyped_storage", "data_ptr", "DoubleTensor",
                "Tensor", "manual_seed", "seed", "set_printoptions", "save", "load", "compile", "set_default_dtype",
                "use_deterministic_algorithms", "set_grad_enabled", "no_grad", "enable_grad", "inference_mode",
                "set_num_threads", "set_num_interop_threads", "set_default_device", "set_rng_state",
                "set_float32_matmul_precision", "get_rng_state", "initial_seed", "set_default_tensor_type"}


def _survey_run(lib, fn, shape, kind):
    rng = np.random.default_rng(0)
    x, y = (lib.tensor(rng.uniform(0.2, 0.9, shape), dtype=lib.float64, requires_grad=True) for _ in range(2))
    out = fn(lib)(*{1: (x,), 2: (x, y), 3: (x, 2)}[kind])
    out = out[0] if isinstance(out, tuple) else out
    if not isinstance(out, lib.Tensor) or not out.requires_grad or out.dtype != lib.float64:
        return None
    inputs = [x, y] if kind == 2 else [x]
    w = lib.tensor(np.random.default_rng(1).normal(size=tuple(out.shape)), dtype=lib.float64)
    first = lib.autograd.grad((out * w).sum() + (out * out).sum(), inputs, create_graph=True, allow_unused=True)
    cubes = [(g * g * g).sum() for g in first if g is not None and g.requires_grad]
    second = lib.autograd.grad(sum(cubes), inputs, allow_unused=True) if cubes else ()
    return [None if g is None else g.detach().numpy() for g in list(first) + [None] + list(second)]


def _survey_divergence(lib_fn):
    """The first spelling torch runs and differentiates, compared; a message, or None where they agree."""
    for shape in SURVEY_SHAPES:
        for kind in (1, 2, 3):
            try:
                theirs = _survey_run(torch, lib_fn, shape, kind)
            except Exception:  # (not this spelling)
                continue
            if theirs is None:
                return None
            try:
                mine = _survey_run(ml, lib_fn, shape, kind)
            except Exception as error:
                return f"{type(error).__name__}: {error}"
            if mine is None or len(mine) != len(theirs):
                return "not differentiable as torch's"
            for a, b in zip(mine, theirs):
                if (a is None) != (b is None):
                    return "a gradient is None in one library only"
                if a is not None and (a.shape != b.shape or not np.allclose(a, b, 1e-9, 1e-11, equal_nan=True)):
                    return "values differ"
            return None
    return None


@pytest.mark.skipif(not os.environ.get("MINILORA_CREATE_GRAPH_SURVEY"), reason="MINILORA_CREATE_GRAPH_SURVEY=1")
def test_survey_of_every_shared_name():
    def public(module, names):
        return sorted(n for n in names if not n.startswith("_") and n not in NOT_SURVEYED
                      and callable(getattr(module, n, None)))
    spellings = {n: (lambda n: lambda lib: getattr(lib, n))(n) for n in public(torch, set(dir(torch)) & set(dir(ml)))}
    spellings.update({n: (lambda n: lambda lib: getattr(lib.nn.functional, n))(n) for n in public(
        torch.nn.functional, set(dir(torch.nn.functional)) & set(dir(ml.nn.functional))) if n not in spellings})
    spellings.update({f"Tensor.{n}": (lambda n: lambda lib: lambda t, *a: getattr(t, n)(*a))(n) for n in public(
        torch.Tensor, set(dir(torch.Tensor)) & set(dir(ml.Tensor))) if not n.endswith("_")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = {name: _survey_divergence(fn) for name, fn in spellings.items()}
    found = {name: message for name, message in found.items() if message is not None}
    assert sorted(set(found) - set(KNOWN)) == [], {n: found[n] for n in set(found) - set(KNOWN)}
    assert sorted(set(KNOWN) - set(found)) == [], "fixed: take these out of KNOWN"
