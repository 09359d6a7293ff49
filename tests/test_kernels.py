"""The CUDA kernels (kernels/*.cu through minilora.kernels) against float64 NumPy references.

Every version (v1 naive, v2 tiled, v3 register-blocked) on ragged shapes (no dimension a multiple of
any tile; odd leading dimensions force the scalar-load fallback, multiples of 4 the float4 path), LoRA
ranks 1, 4, 16 and 64, fresh random inputs, outputs poisoned with NaN before the launch, the relative
error printed; on `emu` also under the race check and AddressSanitizer; on `cuda` when a GPU is enabled.
Then the wiring: ops.lora_linear and optim.AdamW on `emu` against `cpu`, and a LoRA training step of a
tiny Llama.
"""
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import kernels
from minilora.device import all_devices
from minilora.ops.lora import lora_dropout_mask
from minilora.testing import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parent))
import background_runs  # noqa: E402  (tests/, on the path just above)

KERNEL_DEVICES = [pytest.param(d.name, id=d.name,
                               marks=pytest.mark.skipif(not d.enabled(), reason=f"{d.name}: {d.why_disabled}"))
                  for d in all_devices() if d.uses_kernels]
SHAPES = {"odd": (67, 45, 77), "mult4": (70, 44, 76)}  # (M, N, K): tiles are 16, 32, 64, 128
RANKS = [1, 4, 16, 64]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def fresh_rng():
    """A new seed every run (printed, so a failure can be replayed)."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"input seed {seed}")
    return np.random.default_rng(seed)


def on(device, *arrays):
    """float32 copies of the arrays on `device` (CuPy arrays for cuda)."""
    out = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
    if device == "cuda":
        import cupy
        out = [cupy.asarray(a) for a in out]
    return out


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def validate(name, got, ref, tol=2e-5):
    """llm.c-style: report the max relative error, then |got - ref| <= atol + rtol |ref| everywhere."""
    got, ref = host(got), np.asarray(ref, dtype=np.float64)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    err = np.abs(got.astype(np.float64) - ref)
    rel = float(np.nanmax(np.where(np.isnan(err), np.inf, err), initial=0.0)) / scale
    print(f"{name}: max error / max|ref| = {rel:.2e}")
    assert_close(got, ref, rtol=tol, atol=tol * scale, name=name)


def make_inputs(rng, M, N, K, r):
    """Random inputs, already rounded to float32 so the float64 reference sees exactly what the kernels see."""
    inputs = {"X": rng.standard_normal((M, K)), "W0": rng.standard_normal((N, K)) / np.sqrt(K),
              "A": rng.standard_normal((r, K)) / np.sqrt(K), "B": rng.standard_normal((N, r)),
              "bias": rng.standard_normal(N), "dY": rng.standard_normal((M, N))}
    return {k: v.astype(np.float32).astype(np.float64) for k, v in inputs.items()}


def reference(X, W0, A, B, bias, dY, s, p, seed):
    """The LoRA forward and backward in float64, straight from the math in lora_forward.cu/lora_backward.cu."""
    M, K = X.shape
    keep = lora_dropout_mask(seed, M, K, p) / (1 - p) if p else np.ones((M, K))
    Xd = X * keep
    U = Xd @ A.T
    Y = X @ W0.T + s * U @ B.T + (0 if bias is None else bias)
    V = s * dY @ B
    return {"Y": Y, "U": U, "dX": dY @ W0 + (V @ A) * keep, "dA": V.T @ Xd, "dB": s * dY.T @ U}


def run_both(device, inp, r, s, p, seed, version, bias=True, split_m=None):
    """Forward then backward through minilora.kernels with poisoned outputs; returns host arrays."""
    X, W0, A, B, b, dY = on(device, inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"], inp["dY"])
    with kernels.checking(poison=True):
        Y, U = kernels.lora_forward(X, W0, A, B, s, bias=b if bias else None, dropout_p=p, seed=seed,
                                    device=device, version=version)
        dX, dA, dB = kernels.lora_backward(dY, X, W0, A, B, U, s, dropout_p=p, seed=seed, device=device,
                                           version=version, split_m=split_m)
    return {k: host(v) for k, v in dict(Y=Y, U=U, dX=dX, dA=dA, dB=dB).items()}


# ------------------------------------------------------------------------------------------------
# LoRA forward and backward: every version, ragged shapes, r in {1, 4, 16, 64}
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("r", RANKS)
@pytest.mark.parametrize("version", kernels.VERSIONS)
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_lora_kernels_match_float64_reference(device, version, r, shape):
    M, N, K = SHAPES[shape]
    rng = fresh_rng()
    inp = make_inputs(rng, M, N, K, r)
    p = 0.25 if r in (4, 64) else 0.0  # dropout on half the cases
    s, seed, bias = 2.0 / r, int(rng.integers(2**32)), shape == "odd"
    got = run_both(device, inp, r, s, p, seed, version, bias=bias, split_m=3)
    ref = reference(inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"] if bias else None, inp["dY"], s, p, seed)
    for name in ("U", "Y", "dX", "dA", "dB"):
        validate(f"{version} r={r} {shape} {name}", got[name], ref[name])


@pytest.mark.parametrize("version", kernels.VERSIONS)
def test_backward_computes_only_what_is_asked(version):
    rng = fresh_rng()
    inp = make_inputs(rng, 21, 19, 13, 3)
    X, W0, A, B, dY = on("emu", inp["X"], inp["W0"], inp["A"], inp["B"], inp["dY"])
    U = np.ascontiguousarray((inp["X"] @ inp["A"].T).astype(np.float32))
    ref = reference(inp["X"], inp["W0"], inp["A"], inp["B"], None, inp["dY"], 0.5, 0.0, 0)
    for need in ("need_dx", "need_dA", "need_dB"):
        flags = {**dict(need_dx=False, need_dA=False, need_dB=False), need: True}
        with kernels.checking(poison=True):
            out = dict(zip(("dX", "dA", "dB"), kernels.lora_backward(dY, X, W0, A, B, U, 0.5, device="emu",
                                                                     version=version, **flags)))
        wanted = {"need_dx": "dX", "need_dA": "dA", "need_dB": "dB"}[need]
        assert [k for k, v in out.items() if v is not None] == [wanted]
        validate(f"{version} {wanted} alone", out[wanted], ref[wanted])


@pytest.mark.parametrize("version", kernels.VERSIONS)
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_dropout_mask_is_bit_identical_to_numpy(device, version):
    """With W0 = 0 and A = B = identity, Y shows the forward's mask and dX the backward's regenerated one;
    both must equal ops.lora.lora_dropout_mask bit for bit."""
    M, K, p, seed = 23, 37, 0.3, 987654321
    eye = np.eye(K)
    X, W0, A, B, dY = on(device, np.ones((M, K)), np.zeros((K, K)), eye, eye, np.ones((M, K)))
    Y, U = kernels.lora_forward(X, W0, A, B, 1.0, dropout_p=p, seed=seed, device=device, version=version)
    dX, _, _ = kernels.lora_backward(dY, X, W0, A, B, U, 1.0, dropout_p=p, seed=seed, device=device,
                                     version=version, need_dA=False, need_dB=False)
    Y, dX, mask = host(Y), host(dX), lora_dropout_mask(seed, M, K, p)
    np.testing.assert_array_equal(Y != 0, mask)
    np.testing.assert_array_equal(dX != 0, mask)
    np.testing.assert_allclose(Y[mask], 1 / (1 - p), rtol=1e-6)


@pytest.mark.parametrize("version", [v for v in kernels.VERSIONS if v != "v1"])
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_backward_is_deterministic(device, version):
    """Split-M partial sums plus a fixed-order second pass, no float atomics: identical bits every run."""
    rng = fresh_rng()
    inp = make_inputs(rng, *SHAPES["mult4"], 16)
    runs = [run_both(device, inp, 16, 0.5, 0.1, 42, version) for _ in range(2)]
    for name in ("dX", "dA", "dB"):
        assert runs[0][name].tobytes() == runs[1][name].tobytes(), f"{name} differs between two runs"


# Race check (several thread and block orders, results compared bit for bit) and AddressSanitizer
# (out-of-bounds global or shared accesses), together, on small shapes: odd sizes exercise the scalar
# edges, multiples of 4 the float4 loads.
@pytest.mark.parametrize("version,shape", [("v1", (21, 19, 13, 3)), ("v2", (21, 19, 13, 3)),
                                           ("v3", (21, 19, 13, 3)), ("v3", (67, 20, 12, 4)),
                                           ("v4", (21, 19, 13, 3)), ("v4", (67, 20, 36, 4)),
                                           ("v5", (21, 19, 13, 3)), ("v5", (140, 150, 36, 4)),
                                           ("v6", (21, 19, 13, 3)), ("v6", (70, 40, 68, 20)),
                                           ("v7", (21, 19, 13, 3)), ("v7", (140, 150, 44, 4)),
                                           ("v8", (21, 19, 13, 3)), ("v8", (70, 40, 68, 20))])
def test_lora_kernels_under_race_check_and_sanitizer(version, shape):
    M, N, K, r = shape
    rng = fresh_rng()
    inp = make_inputs(rng, M, N, K, r)
    X, W0, A, B, b, dY = on("emu", inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"], inp["dY"])
    with kernels.checking(poison=True, check_races=True, sanitize=True):
        Y, U = kernels.lora_forward(X, W0, A, B, 0.5, bias=b, dropout_p=0.2, seed=5, device="emu", version=version)
        dX, dA, dB = kernels.lora_backward(dY, X, W0, A, B, U, 0.5, dropout_p=0.2, seed=5, device="emu",
                                           version=version, split_m=2)
    ref = reference(inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"], inp["dY"], 0.5, 0.2, 5)
    for name, got in dict(Y=Y, U=U, dX=dX, dA=dA, dB=dB).items():
        validate(f"{version} sanitized {name}", got, ref[name])


# ------------------------------------------------------------------------------------------------
# AdamW
# ------------------------------------------------------------------------------------------------
SIZES = [(3, 5), (4099,), (7,), (64, 33), (1,)]  # 4099: more than one 4096-element chunk, not a multiple of 4


def adamw_reference(p, g, m, v, lr, beta1, beta2, eps, wd, step):
    """torch.optim.AdamW's update in float64."""
    p = p * (1 - lr * wd)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**step) * m / (np.sqrt(v) / np.sqrt(1 - beta2**step) + eps)
    return p, m, v


def adamw_state(rng, sizes):
    """Params, grads and (non-zero, as after a few steps) moments; the last param is a view one float
    into its buffer, so its address is not 16-byte aligned and the kernel's scalar path runs."""
    params = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    unaligned = np.zeros(101, dtype=np.float32)[1:]
    unaligned[:] = rng.standard_normal(100)
    params.append(unaligned)
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    m = [0.1 * rng.standard_normal(p.shape).astype(np.float32) for p in params]
    v = [0.01 * rng.random(p.shape).astype(np.float32) for p in params]
    return params, grads, m, v


@pytest.mark.parametrize("checks", [dict(), dict(check_races=True, sanitize=True)], ids=["plain", "checked"])
def test_adamw_matches_float64_reference(checks):
    """Per-tensor hyperparameters (two parameter groups, different step counts), one launch."""
    rng = fresh_rng()
    params, grads, m, v = adamw_state(rng, SIZES)
    T = len(params)
    lr = [1e-2 if t % 2 else 3e-3 for t in range(T)]
    step = [1 + t for t in range(T)]
    expected = [adamw_reference(*(a.astype(np.float64) for a in (params[t], grads[t], m[t], v[t])),
                                lr[t], 0.9, 0.99, 1e-6, 0.1, step[t]) for t in range(T)]
    with kernels.checking(poison=False, **checks):
        kernels.adamw_step(params, grads, m, v, lr=lr, beta1=0.9, beta2=0.99, eps=1e-6, weight_decay=0.1,
                           step=step, device="emu")
    for t in range(T):
        for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), (params[t], m[t], v[t]), expected[t]):
            validate(f"tensor {t} {name}", got, want, tol=1e-6)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_adamw_follows_torch_for_several_steps_in_one_launch_each(device, monkeypatch):
    torch = pytest.importorskip("torch")
    rng = fresh_rng()
    params, _, _, _ = adamw_state(rng, SIZES)
    twins = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = torch.optim.AdamW(twins, lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    ps = on(device, *params)
    ms, vs = on(device, *[np.zeros_like(p) for p in params]), on(device, *[np.zeros_like(p) for p in params])
    launches = []
    real_launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda *a: launches.append(a[2]) or real_launch(*a))
    for step in range(1, 4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        for twin, g in zip(twins, grads):
            twin.grad = torch.from_numpy(g)
        opt.step()
        kernels.adamw_step(ps, on(device, *grads), ms, vs, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-6,
                           weight_decay=0.1, step=step, device=device)
    assert launches == ["adamw_multi_tensor"] * 3
    for p, twin in zip(ps, twins):
        validate("param after 3 steps", p, twin.detach().numpy(force=True), tol=1e-6)


def test_adamw_optimizer_on_emu_matches_cpu(monkeypatch):
    """optim.AdamW on `emu` goes through the kernel -- one launch per step for all parameters -- and
    follows the same trajectory as on `cpu`, two parameter groups included."""
    import minilora.optim as optim
    rng = fresh_rng()
    values = [rng.standard_normal(s) for s in [(5, 3), (4100,), (2,)]]
    grads = [[rng.standard_normal(v.shape) for v in values] for _ in range(3)]
    launches = []
    real_launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda *a: launches.append(a[2]) or real_launch(*a))
    result = {}
    for dev in ("cpu", "emu"):
        ps = [ml.tensor(v, dtype=ml.float32, device=dev, requires_grad=True) for v in values]
        opt = optim.AdamW([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.1, "weight_decay": 0.0}], lr=1e-2)
        for step_grads in grads:
            for p, g in zip(ps, step_grads):
                p.grad = ml.tensor(g.astype(np.float32), device=dev)
            opt.step()
        result[dev] = [p.numpy(force=True).copy() for p in ps]
    assert launches == ["adamw_multi_tensor"] * 3
    for got, want in zip(result["emu"], result["cpu"]):
        validate("emu vs cpu", got, want, tol=1e-6)


def test_adamw_resident_tables_are_bit_identical_to_building_them_each_step():
    """The same steps with tables kept between calls and with tables built per call: equal bit for bit,
    with new gradient arrays every step (as after backward), the unaligned tensor included."""
    rng = fresh_rng()
    params, _, m, v = adamw_state(rng, SIZES)
    kept = [[a.copy() for a in arrays] for arrays in (params, m, v)]
    fresh = [[a.copy() for a in arrays] for arrays in (params, m, v)]
    kept[0][-1] = np.zeros(101, np.float32)[1:]  # keep the last param unaligned in both copies
    kept[0][-1][:] = params[-1]
    fresh[0][-1] = np.zeros(101, np.float32)[1:]
    fresh[0][-1][:] = params[-1]
    tables = kernels.AdamWTables()
    hyper = dict(lr=[1e-2, 3e-3, 1e-2, 3e-3, 1e-2, 3e-3], beta1=0.9, beta2=0.99, eps=1e-6, weight_decay=0.1)
    for step in range(1, 4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        kernels.adamw_step(*kept[:1], grads, *kept[1:], step=step, device="emu", tables=tables, **hyper)
        kernels.adamw_step(*fresh[:1], [g.copy() for g in grads], *fresh[1:], step=step, device="emu", **hyper)
    assert tables.rebuilds == 1
    for got_arrays, want_arrays in zip(kept, fresh):
        for got, want in zip(got_arrays, want_arrays):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(kept[0][0], params[0])  # the steps did move the parameters


def test_adamw_tables_rebuild_only_when_the_parameter_set_changes():
    """optim.AdamW on `emu` keeps one AdamWTables: no rebuild from step to step; one when a parameter
    stops or starts having a gradient, when a parameter's array is replaced (``.to()``-style), and
    when ``load_state_dict`` brings new moment arrays (not when it is handed the optimizer's own tensors, which
    it keeps, as torch). Results stay equal to the `cpu` path throughout."""
    import minilora.optim as optim
    rng = fresh_rng()
    values = [rng.standard_normal(s) for s in [(5, 3), (4100,), (2,)]]
    trajectories = {}
    for dev in ("cpu", "emu"):
        ps = [ml.tensor(v, dtype=ml.float32, device=dev, requires_grad=True) for v in values]
        opt = optim.AdamW(ps, lr=1e-2)
        rebuilds = []
        step_rng = np.random.default_rng(1)

        def step(with_grad=(0, 1, 2)):
            for i, p in enumerate(ps):
                g = step_rng.standard_normal(p.shape).astype(np.float32)
                p.grad = ml.tensor(g, device=dev) if i in with_grad else None
            opt.step()
            tables = opt.__dict__.get("_adamw_tables")
            rebuilds.append(tables.rebuilds if tables is not None else None)

        step(), step(), step()                     # same set: built once
        step(with_grad=(0, 2)), step((0, 2))       # ps[1] has no gradient: a smaller set
        step()                                     # ps[1] back
        ps[2]._array = ps[2]._array.copy()         # a new array object for a parameter (as .to() makes)
        step(), step()
        opt.load_state_dict(opt.state_dict())      # the same tensors (torch shares them): no rebuild
        step()
        opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # new exp_avg / exp_avg_sq arrays
        step(), step()
        rebuilds_of_dev = rebuilds
        trajectories[dev] = [p.numpy(force=True).copy() for p in ps]
    assert rebuilds_of_dev == [1, 1, 1, 2, 2, 3, 4, 4, 4, 5, 5]
    for got, want in zip(trajectories["emu"], trajectories["cpu"]):
        validate("emu (resident tables) vs cpu", got, want, tol=1e-6)


def test_adamw_tables_still_check_each_steps_gradients():
    p = [np.ones(3, np.float32), np.ones(4, np.float32)]
    m, v = [np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p]
    tables = kernels.AdamWTables()
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, device="emu", tables=tables)
    kernels.adamw_step(p, [np.ones(3, np.float32), np.ones(4, np.float32)], m, v, step=1, **hyper)
    with pytest.raises(ValueError, match=r"grads\[1\] must have shape \(4,\)"):
        kernels.adamw_step(p, [np.ones(3, np.float32), np.ones(5, np.float32)], m, v, step=2, **hyper)
    with pytest.raises(TypeError, match=r"grads\[0\] must be float32"):
        kernels.adamw_step(p, [np.ones(3), np.ones(4, np.float32)], m, v, step=2, **hyper)
    assert tables.rebuilds == 1


# ------------------------------------------------------------------------------------------------
# Errors, sources, version choice
# ------------------------------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors():
    X, W0, A, B = on("emu", np.ones((4, 6)), np.ones((5, 6)), np.ones((2, 6)), np.ones((5, 2)))
    with pytest.raises(TypeError, match="X must be float32.*float64"):
        kernels.lora_forward(X.astype(np.float64), W0, A, B, 1.0, device="emu")
    with pytest.raises(ValueError, match="W0 must be C-contiguous"):
        kernels.lora_forward(X, np.ones((6, 5), np.float32).T, A, B, 1.0, device="emu")
    with pytest.raises(ValueError, match=r"B must have shape \(5, 2\), got \(5, 3\)"):
        kernels.lora_forward(X, W0, A, np.ones((5, 3), np.float32), 1.0, device="emu")
    with pytest.raises(ValueError, match="bias must have shape"):
        kernels.lora_forward(X, W0, A, B, 1.0, bias=np.ones(4, np.float32), device="emu")
    with pytest.raises(ValueError, match="device 'cpu' does not run kernels"):
        kernels.lora_forward(X, W0, A, B, 1.0, device="cpu")
    with pytest.raises(ValueError, match="version must be one of"):
        kernels.lora_forward(X, W0, A, B, 1.0, device="emu", version="v99")
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        kernels.lora_forward(X, W0, A, B, 1.0, dropout_p=1.0, device="emu")
    with pytest.raises(ValueError, match=r"dY must have shape \(4, 5\)"):
        kernels.lora_backward(np.ones((4, 4), np.float32), X, W0, A, B, np.ones((4, 2), np.float32), 1.0,
                              device="emu")
    p = [np.ones(3, np.float32), np.ones(4, np.float32)]
    with pytest.raises(ValueError, match="grads has 1 arrays but params has 2"):
        kernels.adamw_step(p, p[:1], p, p, lr=1, beta1=0.9, beta2=0.9, eps=1, weight_decay=0, step=1, device="emu")
    with pytest.raises(ValueError, match=r"exp_avgs\[1\] must have shape \(4,\)"):
        kernels.adamw_step(p, p, [p[0], p[0]], p, lr=1, beta1=0.9, beta2=0.9, eps=1, weight_decay=0, step=1,
                           device="emu")
    with pytest.raises(ValueError, match="step counts from 1"):
        kernels.adamw_step(p, p, p, p, lr=1, beta1=0.9, beta2=0.9, eps=1, weight_decay=0, step=0, device="emu")


def test_sources_are_found_self_contained_and_marked():
    folder = kernels.kernel_dir()
    for name in kernels.KERNEL_FILES:
        text = (folder / name).read_text()
        assert text.startswith("// " + name) and "Versions" in text, f"{name}: no header comment"
        assert not any(line.startswith('#include "') for line in kernels.source(name).splitlines()), \
            f"{name}: a local #include was not pasted in"
    for name in ("lora_forward.cu", "adamw.cu"):  # regions the exercise builder replaces
        text = (folder / name).read_text()
        assert text.count("// BEGIN SOLUTION") == text.count("// END SOLUTION") == 1, name


@pytest.fixture
def choice_file(tmp_path, monkeypatch):
    """pick_version reading a choice file of the test's making (benchmarks/gpu_choice.json's stand-in)."""
    path = tmp_path / "gpu_choice.json"
    monkeypatch.setattr(kernels, "_choice_path", lambda: path)
    monkeypatch.setattr(kernels._Choice, "stamp", None)
    return path


def test_pick_version_without_a_choice_file_is_v5_for_big_problems(choice_file):
    assert kernels.pick_version(8192, 4096) == kernels.pick_version(8192, 4096, 64, backward=True) == "v5"
    assert kernels.pick_version(32, 64) == "v2"
    assert kernels.pick_version(1024, 512) == "v5"  # 8 x 4 = 32 tiles of 128 x 128
    table, note = kernels.version_choice()
    assert table is None and "gpu_choice.json not found: v5" in note


def test_pick_version_reads_the_gpu_sweeps_choice_file(choice_file):
    import json
    choice_file.write_text(json.dumps({"gpu": "test", "choices": {"big": {
        "forward": {"8": "v7", "16": "v6", "64": "v5"}, "forward+backward": {"16": "v8"}}}}))
    assert kernels.pick_version(8192, 4096, 16) == "v6"
    assert kernels.pick_version(8192, 4096, 4) == "v7"     # the smallest measured rank >= r
    assert kernels.pick_version(8192, 4096, 32) == "v5"
    assert kernels.pick_version(8192, 4096, 128) == "v5"   # above every measured rank: the largest
    assert kernels.pick_version(8192, 4096, 8, backward=True) == "v8"
    assert kernels.pick_version(32, 64, 16) == "v2"        # small problems are not in the sweep
    assert kernels.version_choice()[1].startswith("measured: ")
    # the launchers follow it: lora_forward at a big shape launches the chosen version's kernels
    launched = []
    real = kernels._launch
    kernels._launch = lambda dev, f, name, *a: launched.append(name)
    try:
        X, W0, A, B = (np.zeros(s, np.float32) for s in ((4096, 8), (8, 8), (16, 8), (8, 16)))
        kernels.lora_forward(X, W0, A, B, 1.0, device="emu")  # 32 x 1 tiles of 128: big
    finally:
        kernels._launch = real
    assert launched == ["lora_fwd_u_v6", "lora_fwd_y_v5"]  # v6 = v5's Y GEMM + rank-sized U (aliases)
    # a rewritten file is read again
    choice_file.write_text(json.dumps({"choices": {"big": {"forward": {"16": "v7"}}}}))
    import os
    os.utime(choice_file, ns=(1, 1))
    assert kernels.pick_version(8192, 4096, 16) == "v7" and kernels.pick_version(8192, 4096, 16, backward=True) == "v5"


@pytest.mark.parametrize("text,problem", [
    ("{not json", "cannot read it as JSON"),
    ('{"choices": {"small": {}}}', 'no "choices": {"big": {...}} object'),
    ('{"choices": {"big": {"forward": {"16": "v99"}}}}', "'v99' is not a rank >= 1"),
    ('{"choices": {"big": {"forward": {"sixteen": "v5"}}}}', "'sixteen'"),
    ('{"choices": {"big": {"backward": {"16": "v5"}}}}', "'backward'")])
def test_pick_version_falls_back_to_v5_on_a_bad_choice_file_and_says_so(choice_file, text, problem):
    choice_file.write_text(text)
    with pytest.warns(RuntimeWarning, match="gpu_choice.json ignored") as caught:
        assert kernels.pick_version(8192, 4096, 16) == "v5"
    assert problem in str(caught[0].message) and "benchmarks/gpu_check.sh" in str(caught[0].message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not on every launch
        assert kernels.pick_version(8192, 4096, 16) == "v5"


@pytest.mark.parametrize("r", [1, 8, 16, 64])
def test_v8_pass_over_dy_launches_at_least_4_blocks_per_sm(r):
    """Issue 16, item 1: at M = 8192 (K = N = 4096) v6's pass over dY launches ceil(M / 64) = 128 blocks at
    r <= 16 -- under one per SM of a 132-SM H200; v8 splits N until it launches at least 4 per SM
    (kernels._MIN_BLOCKS), in whole BN-wide slices, and reduces V's partial sums (the grid math only: no launch)."""
    M, N = 8192, 4096
    tiny = np.zeros((1, 1), np.float32)

    def launches(version):
        out = []
        kernel, cfg = kernels.tiles().shape("lora_bwd_dy", version)
        kernels._dy_pass(lambda name, grid, block, args: out.append((name, grid, args)), kernel, cfg,
                         tiny, tiny, tiny, tiny, tiny, True, M, N, r, 1.0)
        return out
    (_, v6_grid, _), _ = launches("v6")  # the pass, then dB's reduction
    assert int(np.prod(v6_grid)) == -(-r // 16) * 128
    (name, grid, args), (reduce_v, _, reduce_args), (reduce_b, _, _) = launches("v8")
    assert name == "lora_bwd_dy_v8" and int(np.prod(grid)) >= kernels._MIN_BLOCKS == 4 * 132, grid
    n_slice = int(args[-1])
    assert n_slice % 32 == 0 and grid[2] == -(-N // n_slice)  # whole BN = 32 tiles; every slice non-empty
    assert reduce_v == reduce_b == "lora_reduce_partials" and reduce_args[2] == grid[2]  # V's partials, then dB's


def test_empty_batch():
    X, W0, A, B = on("emu", np.ones((0, 6)), np.ones((5, 6)), np.ones((2, 6)), np.ones((5, 2)))
    Y, U = kernels.lora_forward(X, W0, A, B, 1.0, device="emu")
    dX, dA, dB = kernels.lora_backward(np.ones((0, 5), np.float32), X, W0, A, B, U, 1.0, device="emu")
    assert Y.shape == (0, 5) and U.shape == (0, 2) and dX.shape == (0, 6)
    assert not dA.any() and not dB.any()


# ------------------------------------------------------------------------------------------------
# Wiring: the op and a training step
# ------------------------------------------------------------------------------------------------
def test_lora_linear_op_on_emu_uses_the_kernels_and_matches_cpu(monkeypatch):
    """Leading batch dims, dropout, and a broadcast (non-contiguous) output gradient from .sum()."""
    rng = fresh_rng()
    values = [rng.standard_normal(s) for s in [(2, 3, 10), (7, 10), (4, 10), (7, 4), (7,)]]
    launches = []
    real_launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch", lambda *a: launches.append(a[2]) or real_launch(*a))
    result = {}
    for dev in ("cpu", "emu"):
        x, W0, A, B, b = (ml.tensor(v, dtype=ml.float32, device=dev, requires_grad=True) for v in values)
        W0.requires_grad = False
        out = ml.ops.lora_linear(x, W0, A, B, 0.5, bias=b, dropout_p=0.3, seed=3)
        (out * out).sum().backward()
        result[dev] = [out.numpy(force=True)] + [t.grad for t in (x, A, B, b)]
    assert {"lora_fwd_u_v2", "lora_fwd_y_v2", "lora_bwd_dy_v2", "lora_bwd_dx_v2", "lora_bwd_da_v2"} <= set(launches)
    for got, want in zip(result["emu"], result["cpu"]):
        validate("emu vs cpu", got, want, tol=1e-5)


def test_lora_training_step_of_a_tiny_llama_on_emu_matches_cpu():
    """A whole step -- forward, loss, backward through the fused LoRA kernels, fused AdamW -- on `emu`
    lands where the NumPy step on `cpu` does."""
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.models import LlamaConfig, LlamaForCausalLM
    from minilora.optim import AdamW
    config = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    ids = np.random.default_rng(0).integers(0, 37, size=(2, 9))
    result = {}
    for dev in ("cpu", "emu"):
        ml.manual_seed(0)
        base = LlamaForCausalLM(config, device=dev)
        lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])
        model = get_peft_model(base, lora)
        model.train()
        rng = np.random.default_rng(1)
        with ml.no_grad():  # PEFT starts B at zero; random B makes every gradient non-trivial
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(ml.tensor(0.1 * rng.standard_normal(p.shape)))
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt = AdamW([p for _, p in trainable], lr=1e-2)
        out = model(ml.tensor(ids, device=dev), labels=ml.tensor(ids, device=dev))
        out.loss.backward()
        grads = {n: np.array(p.grad) for n, p in trainable}
        opt.step()
        result[dev] = (float(out.loss.numpy(force=True)), grads, {n: p.numpy(force=True).copy() for n, p in trainable})
    (loss_cpu, grads_cpu, after_cpu), (loss_emu, grads_emu, after_emu) = result["cpu"], result["emu"]
    assert len(grads_cpu) == 12 and loss_emu == pytest.approx(loss_cpu, rel=1e-5)
    for name in grads_cpu:
        validate(f"grad {name}", grads_emu[name], grads_cpu[name], tol=1e-4)
        validate(f"updated {name}", after_emu[name], after_cpu[name], tol=1e-5)


# ------------------------------------------------------------------------------------------------
# The GPU benchmark: ready to run, and clear about what it needs when it cannot
# ------------------------------------------------------------------------------------------------
def test_gpu_benchmark_parses_and_explains_a_missing_gpu():
    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    for script in ("gpu_lora.py", "gpu_train_step.py"):
        compile(bench.joinpath(script).read_text(), script, "exec")
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(bench / "gpu_check.sh")]).returncode == 0
    if not any(d.name == "cuda" and d.enabled() for d in all_devices()):
        res = background_runs.run_process([sys.executable, str(bench / "gpu_lora.py"), "--quick"], timeout=120)
        assert res.returncode != 0 and "needs CuPy and an NVIDIA GPU" in res.stderr, res.stderr


# The two benchmark scripts run as background runs (tests/background_runs.py), queued last (this file comes ~780 s
# into CI), on the core the main process leaves idle: ~13 s of CI's main process
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = {"test_gpu_train_step_dry_run_on_cpu": (
               [sys.executable, str(BENCH / "gpu_train_step.py"), "--device", "cpu", "--tiny", "--layers", "1",
                "--repeats", "1"], 300),
           "test_gpu_tile_sweep_variants_are_correct_on_the_emulator": (
               [sys.executable, str(BENCH / "gpu_tile_sweep.py"), "--device", "emu"], 600)}


def _script_run(runs, test_name):
    """Queue (a no-op when queued already) the script of ``test_name``: its key."""
    argv, timeout = SCRIPTS[test_name]
    runs.submit(test_name, "background_runs", "run_commands", ((argv, {}),), str(BENCH.parent), timeout)
    return test_name


def start_background_runs(items, runs):
    for test_name in SCRIPTS:
        if background_runs.selected(items, __name__, test_name):
            _script_run(runs, test_name)


def test_gpu_train_step_dry_run_on_cpu(background):
    """benchmarks/gpu_train_step.py end to end on a tiny model on the CPU, so the one GPU run of the ~1B
    model does not fail on the script itself: every row is there, and the first-step losses of minilora's
    and PEFT's LoRA agree in fp32 and in bf16 (the same weights)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    [res] = (subprocess.CompletedProcess(None, *done) for done in
             background.result(_script_run(background, "test_gpu_train_step_dry_run_on_cpu")))
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in res.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| step")}
    assert set(rows) == {"minilora LoRA fp32", "PEFT LoRA fp32", "PEFT LoRA bf16", "minilora LoRA bf16",
                         "minilora LoRA fp32 + autocast bf16", "PEFT LoRA fp32 + autocast bf16",
                         "minilora full fine-tuning fp32"}, res.stdout
    ours, peft = (float(rows[name][-1]) for name in ("minilora LoRA fp32", "PEFT LoRA fp32"))
    assert abs(ours - peft) < 1e-3, res.stdout
    ours, peft = (float(rows[name][-1]) for name in ("minilora LoRA bf16", "PEFT LoRA bf16"))  # bf16 rounding
    assert abs(ours - peft) < 2e-2, res.stdout
    # the autocast rows run on the fp32 rows' models after their two warm-up steps: the same updates in both
    ours, peft = (float(rows[name][-1]) for name in ("minilora LoRA fp32 + autocast bf16",
                                                      "PEFT LoRA fp32 + autocast bf16"))
    assert abs(ours - peft) < 2e-2, res.stdout


def test_gpu_tile_sweep_variants_are_correct_on_the_emulator(background):
    """benchmarks/gpu_tile_sweep.py's GEMM variants (tile shapes, stages, warp tiles) on a ragged
    shape, each checked against NumPy: the sweep stays runnable for the next GPU session."""
    [res] = (subprocess.CompletedProcess(None, *done) for done in
             background.result(_script_run(background, "test_gpu_tile_sweep_variants_are_correct_on_the_emulator")))
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) >= 9 and all("e-0" in row.split("|")[-2] for row in rows), res.stdout


def test_tile_shapes_come_from_one_header_and_aliases_launch_the_earlier_kernel():
    """kernels/lora_tiles.cuh is the one place the tiles are written: kernels.py reads its launch grids from
    it, every (kernel, version) resolves to a kernel the sources export, and an alias exports none."""
    import re
    folder = kernels.kernel_dir()
    exported = set()
    for name in ("lora_forward.cu", "lora_backward.cu"):
        exported |= set(re.findall(r'extern "C" __global__ void(?: __launch_bounds__\([^)]*\))?\s+(\w+)\s*\(',
                                   (folder / name).read_text()))
    t = kernels.tiles()
    assert t.constants == {"THREADS": 256, "V1_BLOCK": 16, "V2_TILE": 16, "BF16_U_ROWS": 8}
    assert t.configs["lora_bf16_y_v1"] == {"BM": 128, "BN": 128, "BK": 32, "WM": 64, "WN": 32, "STAGES": 2, "RC": 16}
    for kernel in ("lora_fwd_u", "lora_fwd_y", "lora_bwd_dy", "lora_bwd_dx", "lora_bwd_da"):
        for version in kernels.VERSIONS[1:]:
            launched, shape = t.shape(kernel, version)
            assert launched in exported, f"{kernel} {version}: {launched} is not in the sources"
            assert shape["BM"] > 0 and shape["BN"] > 0
    assert t.shape("lora_fwd_y", "v5") == ("lora_fwd_y_v5", {**t.configs["lora_fwd_y_v3"], "STAGES": 2,
                                                             "WARP_TILED": True})  # v5 = v4 + warp tiles
    assert t.shape("lora_bwd_dy", "v5")[0] == "lora_bwd_dy_v3" and "lora_bwd_dy_v5" not in exported
    assert set(t.aliases) == {"lora_fwd_u_v5", "lora_bwd_dy_v4", "lora_bwd_dy_v5", "lora_bwd_da_v5",
                              "lora_fwd_y_v6", "lora_bwd_dx_v6", "lora_bwd_da_v6",
                              "lora_fwd_u_v7", "lora_bwd_dy_v7", "lora_bwd_da_v7",
                              "lora_fwd_u_v8", "lora_fwd_y_v8", "lora_bwd_dx_v8", "lora_bwd_da_v8",
                              "lora_fwd_u_v9", "lora_bwd_dy_v9", "lora_bwd_da_v9",
                              "lora_bf16_dx_v1", "lora_bf16_dy_v1", "lora_bf16_dx_v2"}
    # v8 = v6's pass over dY with N split over blocks; the bf16 backward runs the same pass
    assert t.shape("lora_bwd_dy", "v8") == ("lora_bwd_dy_v8", {**t.configs["lora_bwd_dy_v6"], "SPLIT_N": True})
    assert t.kernel("lora_bf16_dy_v1") == "lora_bwd_dy_v8" and t.kernel("lora_bf16_dx_v1") == "lora_bf16_y_v1"
    assert t.configs["lora_bf16_y_v2"] == {**t.configs["lora_bf16_y_v1"], "STAGES": 4}
    # v6 sizes the side kernels' rank tiles to r: 16 wide, no padding at r = 16 (v4/v3 had 32 and 64)
    assert t.shape("lora_fwd_u", "v6")[1]["BN"] == 16 and t.shape("lora_bwd_dy", "v6")[1]["RC"] == 16
    assert t.shape("lora_bwd_da", "v6")[0] == "lora_bwd_da_v4"  # an alias of an alias resolves
    assert not set(t.aliases) & exported


def test_emulated_cp_async_lands_only_when_a_wait_covers_its_group(tmp_path):
    """common.cuh's cp_async on the emulator (kernels/emu/include/minilora_async_copy.h): a copy is
    performed when cp_async_wait<N> leaves at most N groups in flight, oldest group first, with the bytes
    past src_bytes zero-filled -- so a kernel that reads a pipeline stage before waiting reads stale data
    in the tests instead of passing by luck.  (On a GPU the "before" row would be a race: emulator only.)"""
    from minilora.emulator import RawModule
    (tmp_path / "async_copy.cu").write_text(r'''
#include "common.cuh"
using namespace minilora;
extern "C" __global__ void staged(const float* src, float* seen) {  // seen [3, 8]: before, after 1 wait, after all
    __shared__ __align__(16) float s[8];
    for (int i = 0; i < 8; ++i) s[i] = -1.0f;
    cp_async<16>(s, src, 16);           // group 0: 4 floats
    cp_async_commit();
    cp_async<16>(s + 4, src + 4, 8);    // group 1: 2 floats, 2 zero-filled
    cp_async<4>(s + 7, src + 7, 4);     //          (in group 1 as well)
    cp_async_commit();
    for (int i = 0; i < 8; ++i) seen[i] = s[i];
    cp_async_wait<1>();
    for (int i = 0; i < 8; ++i) seen[8 + i] = s[i];
    cp_async_wait<0>();
    for (int i = 0; i < 8; ++i) seen[16 + i] = s[i];
}
''')
    src = np.arange(1, 9, dtype=np.float32)
    seen = np.zeros((3, 8), np.float32)
    module = RawModule(path=tmp_path / "async_copy.cu", options=("-I", str(kernels.kernel_dir())))
    module.get_function("staged")((1,), (1,), (src, seen))
    np.testing.assert_array_equal(seen[0], -1)
    np.testing.assert_array_equal(seen[1], [1, 2, 3, 4, -1, -1, -1, -1])
    np.testing.assert_array_equal(seen[2], [1, 2, 3, 4, 5, 6, 0, 8])
