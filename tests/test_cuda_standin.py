"""STAND-IN for a GPU: the op suites on the ``cuda`` device with a fake CuPy (tests/fake_cupy.py).

Most machines that run these tests have no GPU, so the ``cuda`` parameters of the suites are
skipped and code that only runs on CuPy arrays would never run. Here ``cupy`` is a stand-in that
computes with NumPy but keeps CuPy 13.3's namespace and rules (no implicit conversion to NumPy,
no NumPy arrays inside device math, 0-d arrays instead of scalars, CuPy's keyword arguments and
ufunc methods), and minilora's ``cuda`` device is enabled on it. The cases are the suites' own:
test_ops.py's gradient checks, test_torch_conformance_methods.py's and _more.py's comparisons
(with ``cuda`` as the default device) and their every-device checks, test_optim.py's float64
trajectories and gradient clipping, random fills; test_lora_composition.py's add_weighted_adapter
and PiSSA/OLoRA cases. The op suites run in float64, so no kernel launches (kernels take float32
only: ``minilora.kernels.supports``); the float32 LoRA models run with ``uses_kernels`` off. A
kernel that tried to launch would raise ``FakeCupyLimit``. A pass here is not a GPU run: that is
benchmarks/gpu_check.sh. bfloat16: CuPy 13.3 has none, so every way onto ``cuda`` must say that CuPy >= 14
is needed; the stand-in as CuPy 14 (``install(version="14.0.0")``) runs bfloat16 cases beside the cpu.
"""
import numpy as np
import pytest

import fake_cupy
import minilora as ml

pytest.importorskip("torch")
import test_ops as ops_suite  # noqa: E402  (modules, not functions: pytest must not collect them twice)
import test_torch_conformance_methods as methods_suite  # noqa: E402
import test_torch_conformance_more as more_suite  # noqa: E402
import test_optim as optim_suite  # noqa: E402
import test_torch_conformance as conformance_suite  # noqa: E402

try:  # needs transformers and peft besides torch
    import test_lora_composition as composition_suite
    from test_llama import hf  # noqa: F401  (the fixture the composition cases take)
except pytest.skip.Exception:
    composition_suite = None


@pytest.fixture
def fake_cuda(monkeypatch):
    """``import cupy`` gives the stand-in and ``ml.device('cuda')`` runs on it, for one test."""
    return fake_cupy.install(monkeypatch)


@pytest.fixture
def cuda_by_default(fake_cuda, monkeypatch):
    """Tensors made without a device land on the fake ``cuda``, so torch-side-by-side cases run there."""
    monkeypatch.setenv("MINILORA_DEVICE", "cuda")
    assert ml.tensor([1.0]).device.type == "cuda"
    return fake_cuda


@pytest.fixture
def cuda_without_kernels(cuda_by_default, monkeypatch):
    """float32 models too: the stand-in cannot launch kernels, so here the cuda device computes
    every op with its array module's math, as cpu does with NumPy's."""
    monkeypatch.setattr(ml.device("cuda"), "uses_kernels", False)
    return cuda_by_default


@pytest.mark.parametrize("case", ops_suite.CASES, ids=ops_suite.CASE_IDS)
def test_ops_grad_check_on_cuda(case, fake_cuda):
    ops_suite.test_grad_check(case, 0, "cuda")


@pytest.mark.parametrize("case", ops_suite.REF_CASES, ids=[c.name for c in ops_suite.REF_CASES])
def test_ops_float32_on_cuda(case, cuda_without_kernels):
    """The float32 branches (fastmath's erf/GELU approximations...) on device arrays, kernels off."""
    ops_suite.test_float32_forward_is_float32_and_close_to_float64(case)


@pytest.mark.parametrize("name,snippet,inputs", methods_suite.CASES, ids=[c[0] for c in methods_suite.CASES])
def test_methods_same_on_cuda_as_on_cpu(name, snippet, inputs, fake_cuda):
    methods_suite.test_same_on_every_device(name, snippet, inputs, "cuda")


@pytest.mark.parametrize("name,snippet,inputs", methods_suite.CASES, ids=[c[0] for c in methods_suite.CASES])
def test_methods_same_as_torch_on_cuda(name, snippet, inputs, cuda_by_default):
    methods_suite.test_same_values_dtypes_and_gradients_as_torch(name, snippet, inputs)


@pytest.mark.parametrize("name,snippet,inputs", more_suite.CASES, ids=[c[0] for c in more_suite.CASES])
def test_more_same_as_torch_on_cuda(name, snippet, inputs, cuda_by_default):
    more_suite.test_same_as_torch(name, snippet, inputs)


@pytest.mark.parametrize("name,fn,inputs", more_suite.GRAD_CHECKS, ids=[g[0] for g in more_suite.GRAD_CHECKS])
def test_more_grad_checks_on_cuda(name, fn, inputs, cuda_by_default):
    more_suite.test_gradients_match_central_differences(name, fn, inputs)


def test_more_new_ops_on_cuda(fake_cuda):
    more_suite.test_new_ops_run_on_every_device("cuda")


@pytest.mark.parametrize("case", list(optim_suite.CASES))
@pytest.mark.parametrize("frozen", [False, True], ids=["all-trained", "fc1.bias-frozen"])
def test_optimizer_trajectories_on_cuda(case, frozen, cuda_by_default):
    """float64 SGD/Adam/AdamW steps (NumPy math on the device's arrays: the fused kernel is float32)."""
    optim_suite.test_trajectory_matches_torch(case, frozen)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_clip_grad_norm_on_cuda(norm_type, cuda_by_default):
    optim_suite.test_clip_grad_norm_matches_torch(norm_type, 0.05)


def test_random_fills_on_cuda(cuda_by_default):
    """normal_/uniform_ draw on the host and must move the draw to the device before writing it."""
    conformance_suite.test_data_normal_and_nn_init_on_data()


@pytest.mark.parametrize("dtype", ["int64", "int8", "bool", "float32"])
def test_integer_scatter_adds_on_cuda(dtype, fake_cuda):
    """index_add/scatter_add/index_put(accumulate=True) of integer tensors: CuPy's add.at takes
    float16/32/64 and (u)int32/uint64 only, so the other dtypes go through a wider or unsigned view."""
    big = np.iinfo(np.int64).max if dtype == "int64" else 100  # wraps around, as torch's int64 does
    values = np.array([[big, 3], [big, -2], [1, 1]]).astype(dtype)
    results = []
    for dev in ("cpu", "cuda"):
        x = ml.tensor(np.ones((3, 2), dtype=dtype), device=dev)
        v, idx = ml.tensor(values, device=dev), ml.tensor([0, 0, 2], device=dev)
        parts = [x.index_add(0, idx, v), x.scatter_add(0, ml.tensor([[0, 1], [0, 1], [2, 2]], device=dev), v),
                 ml.index_put(x, (idx,), v, accumulate=True)]
        results.append([p.cpu().numpy() for p in parts])
    for on_cpu, on_cuda in zip(*results):
        assert on_cuda.dtype == on_cpu.dtype
        np.testing.assert_array_equal(on_cuda, on_cpu)


def test_index_tensors_on_cpu_or_the_indexed_device_as_torch(fake_cuda):
    """A cuda tensor takes cpu indices (CuPy copies them in); a cpu tensor refuses cuda ones with
    torch's RuntimeError instead of NumPy failing to read a CuPy array."""
    x, y = ml.arange(6.0).reshape(2, 3), ml.arange(6.0, device="cuda").reshape(2, 3)
    rows, mask = ml.tensor([1, 1, 0]), ml.tensor([True, False])
    np.testing.assert_array_equal(y[rows].cpu().numpy(), x[rows].numpy())
    np.testing.assert_array_equal(y[mask].cpu().numpy(), x[mask].numpy())
    y[rows[:1]] = 0.0
    assert y.sum().item() == 3.0  # row 1 (3 + 4 + 5) written to zero
    for index in (rows.to("cuda"), mask.to("cuda")):
        with pytest.raises(RuntimeError, match=r"indices should be either on cpu or on the same device "
                                               r"as the indexed tensor \(cpu\)"):
            x[index]
        with pytest.raises(RuntimeError, match="indices should be either on cpu"):
            x[index] = 1.0


@pytest.mark.skipif(composition_suite is None, reason="needs transformers and peft")
@pytest.mark.parametrize("case", list(getattr(composition_suite, "CASES", ())))
def test_add_weighted_adapter_on_cuda(hf, case, cuda_without_kernels):
    """The merge rules run on host copies of the factors; the results go back to the device."""
    with pytest.MonkeyPatch.context() as own:  # the case's own patches (it may undo them)
        composition_suite.test_combined_adapter_equals_peft(hf, case, own)


@pytest.mark.skipif(composition_suite is None, reason="needs transformers and peft")
@pytest.mark.parametrize("init", ["pissa", "pissa_niter_2", "olora"])
def test_weight_mutating_inits_on_cuda(hf, init, cuda_without_kernels):
    """PiSSA/OLoRA factor W0 on the host (NumPy's SVD/QR) and write A, B and the residual back."""
    with pytest.MonkeyPatch.context() as own:  # the case calls undo() on the patches it is given
        composition_suite.test_weight_mutating_inits_equal_peft(hf, init, own)


# ---- the stand-in keeps CuPy's rules (else a pass above would prove nothing) ----------------------
def test_minilora_computes_on_the_stand_in(fake_cuda):
    x = ml.tensor([[1.0, 2.0]], device="cuda", requires_grad=True)
    (x * x).sum().backward()
    assert type(x._array) is fake_cuda.ndarray and type(x.grad._array) is fake_cuda.ndarray
    assert not isinstance(x._array, np.ndarray)
    np.testing.assert_array_equal(x.grad.numpy(force=True), [[2.0, 4.0]])


def test_stand_in_refuses_what_cupy_refuses(fake_cuda):
    cp = fake_cuda
    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.concatenate([a, np.ones((1, 3))])
    with pytest.raises(TypeError, match="no implementation found for 'numpy.put_along_axis'"):
        np.put_along_axis(a, a.argmax(axis=1, keepdims=True), 0.0, axis=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'initial'"):
        a.max(initial=0.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cp.exp(a, where=a > 1)
    with pytest.raises(NotImplementedError, match="maximum.accumulate"):
        cp.maximum.accumulate(a, axis=1)
    with pytest.raises(fake_cupy.FakeCupyLimit):
        cp.RawModule(code="")
    for missing in ("errstate", "put_along_axis", "concat", "frompyfunc", "atan2", "spacing"):
        assert not hasattr(cp, missing), missing
    with pytest.raises(TypeError):
        range(a[0, 1])  # no __index__ on CuPy's ndarray
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[...] = np.ones((2, 3))  # a basic index fills; host arrays go in through x.set(host)


def test_stand_in_gives_what_cupy_gives(fake_cuda):
    cp = fake_cuda
    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    for result in (a.sum(), a[0, 1], np.sum(a), a.max(), cp.add.reduce(a, axis=1)[0]):
        assert type(result) is cp.ndarray and result.shape == ()  # 0-d arrays, never NumPy scalars
    assert float(a[1, 2]) == 5.0 and a.tolist()[1] == [3.0, 4.0, 5.0] and isinstance(a.get(), np.ndarray)
    assert type(np.exp(a)) is cp.ndarray  # NumPy functions dispatch to CuPy's
    view = a[1:]
    assert view.base is a and a[:, ::2].base is a  # views are told from copies by identity
    a[np.array([0])] = np.zeros(3)  # host indices and host values are copied in, as CuPy does
    assert float(a.sum()) == 12.0
    cp.add.at(a, (np.array([1, 1]), np.array([0, 0])), 1.0)
    assert float(a[1, 0]) == 5.0
    assert isinstance(cp.asnumpy(a), np.ndarray) and cp.get_array_module(a) is cp
    host = np.zeros(2)
    device_copy = cp.asarray(host)
    host[0] = 1.0  # asarray copied the host data to the device: no shared memory
    assert float(device_copy[0]) == 0.0 and cp.asarray(device_copy) is device_copy
    out = cp.empty(2)
    assert cp.add(device_copy, 1.0, out=out) is out and float(out.sum()) == 2.0


# ---- bfloat16: CuPy 13.3 has none (a clear error), CuPy 14 has ml_dtypes' ---------------------------
def test_cupy_13_refuses_bfloat16_as_cupy_does(fake_cuda):
    """CuPy 13's array creation knows the dtype characters '?bhilqBHILQefdFD' only (bfloat16's is 'E')."""
    cp = fake_cuda
    with pytest.raises(ValueError, match="Unsupported dtype bfloat16"):
        cp.asarray(np.ones(2, dtype=ml.bfloat16))
    with pytest.raises(ValueError, match="Unsupported dtype bfloat16"):
        cp.ones(2).astype(ml.bfloat16)


@pytest.mark.parametrize("make", [
    lambda: ml.tensor([1.0], dtype=ml.bfloat16).to("cuda"),
    lambda: ml.tensor([1.0], dtype=ml.bfloat16).cuda(),
    lambda: ml.ones(2, dtype=ml.bfloat16, device="cuda"),
    lambda: ml.tensor([1.0], dtype=ml.bfloat16, device="cuda"),
    lambda: ml.ones(2, device="cuda").bfloat16(),
    lambda: ml.ones(2, device="cuda").to(dtype=ml.bfloat16),
    lambda: ml.nn.Linear(2, 2).bfloat16().to("cuda"),
    lambda: ml.nn.Linear(2, 2).to("cuda").bfloat16(),
], ids=["to", "cuda", "factory", "tensor", "bfloat16", "to-dtype", "module-to", "module-bfloat16"])
def test_bfloat16_on_cupy_13_is_a_clear_error(make, fake_cuda):
    with pytest.raises(TypeError, match=r"CuPy >= 14.*CuPy 13\.3\.0.*pip install"):
        make()


@pytest.fixture
def fake_cuda_14(monkeypatch):
    """The stand-in as CuPy 14, which takes ml_dtypes' bfloat16."""
    return fake_cupy.install(monkeypatch, version="14.0.0")


def test_bfloat16_on_cupy_14_matches_cpu(fake_cuda_14):
    values = [1.0, 2.5, -3.14159, 1 + 2 ** -8 + 2 ** -30]
    results = {}
    for device in ("cpu", "cuda"):
        x = ml.tensor(values, dtype=ml.bfloat16, device=device, requires_grad=True)
        y = ml.tensor(values, dtype=ml.float64, device=device).bfloat16()
        (x * y * 3).sum().backward()
        model = ml.nn.Linear(4, 2).bfloat16().to(device)
        results[device] = [x, y, x.grad, model.weight.dtype, ml.full((2,), 0.1, dtype=ml.bfloat16, device=device),
                           x.tolist(), repr(x.detach())]
    for ours, reference in zip(results["cuda"], results["cpu"]):
        if isinstance(ours, ml.Tensor):
            assert ours.device.type == "cuda" and ours.dtype == reference.dtype == ml.bfloat16
            assert np.array_equal(ours.cpu().numpy(), reference.numpy())
        elif isinstance(ours, str):  # the values as on the cpu, and where they are
            assert ours.replace("device='cuda',", "").split() == reference.split()
        else:
            assert ours == reference
