"""Optimizers on float16/bfloat16 parameters bit for bit as torch's, ``foreach=True`` included: torch's CPU
``_foreach_mul_(tensors, s)`` rounds ``s`` to the tensors' dtype first (``t.mul_(s)`` keeps it in float32), so
SGD's momentum, Adam/AdamW's ``beta2`` and decoupled weight decay, RMSprop's alpha and momentum, Adadelta's rho
scale by other numbers there; foreach Adagrad rounds ``grad * -clr`` to 16 bits before its ``addcdiv_``."""
import numpy as np
import pytest

import minilora
from minilora import optim

torch = pytest.importorskip("torch")

CASES = {  # name: (optimizer class name, positional args after params, keyword args[, steps])
    "sgd_momentum": ("SGD", (0.1, 0.9), {}),
    "sgd_momentum_kw": ("SGD", (), dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd_nesterov": ("SGD", (0.1,), dict(momentum=0.9, nesterov=True, maximize=True)),
    "sgd_plain": ("SGD", (), dict(lr=0.1)),
    "adamw_decay": ("AdamW", (0.1, (0.8, 0.95)), dict(weight_decay=0.1)),
    "adamw_amsgrad": ("AdamW", (), dict(lr=0.1, betas=(0.8, 0.95), weight_decay=0.1, amsgrad=True)),
    "adam": ("Adam", (0.01,), dict(betas=(0.8, 0.95))),
    "rmsprop": ("RMSprop", (0.01, 0.9), dict(momentum=0.9, centered=True)),
    "adagrad": ("Adagrad", (0.01,), {}),
    "adagrad_decay": ("Adagrad", (), dict(lr=0.01, weight_decay=0.1, lr_decay=0.1)),
    "adadelta": ("Adadelta", (1.0, 0.8), {}),
    "adamax": ("Adamax", (0.01, (0.8, 0.9)), {}),
    "radam": ("RAdam", (0.01,), {}),  # momentum steps only (rho_t <= 5)
    "asgd": ("ASGD", (0.01, 0.01), dict(t0=1, weight_decay=0.1)),
    "nadam": ("NAdam", (0.01, (0.8, 0.9)), dict(weight_decay=0.1)),
    "radam_rectified": ("RAdam", (), dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, decoupled_weight_decay=True), 8),
}


def _steps(lib, parameter, case, foreach, p0, grads, dtype):
    name, args, kwargs = CASES[case][:3]
    p = parameter(lib.tensor(p0).to(getattr(lib, dtype)))
    opt = getattr(lib.optim if lib is torch else optim, name)([p], *args, foreach=foreach, **kwargs)
    for g in grads:
        p.grad = lib.tensor(g).to(getattr(lib, dtype))
        opt.step()
    return p.detach().float().numpy()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_16bit_steps_match_torch_bits(case, dtype, foreach):
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (13,), (70,)]:  # scalar tails of 3, 13 and 6 (after 32 + 32 in vector bodies)
        p0 = rng.standard_normal(shape).astype(np.float32)
        grads = [rng.standard_normal(shape).astype(np.float32) for _ in range((CASES[case][3:] or (3,))[0])]
        want = _steps(torch, torch.nn.Parameter, case, foreach, p0, grads, dtype)
        got = _steps(minilora, minilora.nn.Parameter, case, foreach, p0, grads, dtype)
        np.testing.assert_array_equal(got, want, err_msg=f"{case} {dtype} foreach={foreach} shape {shape}")


def test_sgd_foreach_first_step_scales_tensor_by_tensor():
    """torch's foreach SGD scales the buffers with one ``_foreach_mul_`` only where every parameter of a dtype has
    one: a parameter getting its first gradient later sends the whole dtype's group through ``buf.mul_``."""
    rng = np.random.default_rng(1)
    p0 = [rng.standard_normal(n).astype(np.float32) for n in (37, 45)]
    results = []
    for lib, parameter in ((torch, torch.nn.Parameter), (minilora, minilora.nn.Parameter)):
        ps = [parameter(lib.tensor(a).to(lib.bfloat16)) for a in p0]
        opt = (torch.optim.SGD if lib is torch else optim.SGD)(ps, lr=0.1, momentum=0.9, foreach=True)
        rng_g = np.random.default_rng(2)
        for step in range(3):
            for i, p in enumerate(ps):
                p.grad = lib.tensor(rng_g.standard_normal(p.shape[0]).astype(np.float32)).to(lib.bfloat16) \
                    if i == 0 or step > 0 else None
            opt.step()
        results.append([p.detach().float().numpy() for p in ps])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("name, kwargs", [("RAdam", dict(lr=0.01)), ("ASGD", dict(lr=0.01, lambd=0.01, t0=1))])
def test_foreach_steps_and_state_in_every_dtype(name, kwargs, dtype):
    """torch's multi-tensor RAdam takes its momentum steps (``rho_t <= 5``) as ``param.addcmul_(exp_avg, buffer)``
    with ``buffer = 1 / ((sqrt(v) + eps) / -0.0) + step_size``: one fused multiply-add by ``-lr / bc1``; its
    multi-tensor ASGD is ``param.addcmul_(grad + lambd * param, eta, value=-1)``, ``ax.addcmul_(param - ax, mu)``.
    The single-tensor ones round otherwise, in float32 and float64 too."""
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(45).astype(np.float32)
    grads = [rng.standard_normal(45).astype(np.float32) for _ in range(3)]
    results = []
    for lib, parameter in ((torch, torch.nn.Parameter), (minilora, minilora.nn.Parameter)):
        p = parameter(lib.tensor(p0).to(getattr(lib, dtype)))
        opt = getattr(torch.optim if lib is torch else optim, name)([p], foreach=True, **kwargs)
        for g in grads:
            p.grad = lib.tensor(g).to(getattr(lib, dtype))
            opt.step()
        states = [v for k, v in sorted(opt.state[p].items()) if k != "step"]
        results.append([t.detach().float().numpy() for t in [p, *states]])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)
