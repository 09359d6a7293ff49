"""A whole LoRA training step as PEFT's bit for bit (float32, MKL, eager attention): loss, every adapter gradient,
AdamW's updated weights.

A LoRA layer alone was PEFT's to the bit (test_mkl_blas_r28), but in a Llama step 80-96% of the adapter gradients
were an ulp or so off: torch's engine adds the gradient of a tensor that several nodes use into one buffer as each
node runs, latest node first, and PEFT's layer is two nodes for x (the base layer's dY W0, the branch's V A), so x
shared by q, k and v gets ``((((v_lora + v_base) + k_lora) + k_base) + q_lora) + q_base``. minilora's one node gave
``v + k + q`` of fused sums. Now the engine offers the LoRA node the sum so far (``Function.backward_onto``) and the
node adds its two parts onto it in torch's order (ops/lora.py's ``LoraLinear.backward_onto``).
"""
import contextlib

import numpy as np
import pytest

import minilora as ml
from minilora import blas, parallel

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.skipif(blas._mkl_library() is None, reason="the `mkl` wheel (minilora[mkl]) is not installed")


@pytest.fixture
def mkl():
    before = blas.select("mkl")
    yield
    blas.select(before or "openblas")


@pytest.fixture
def threads():
    """Sets minilora's thread count for the test (the reference torch runs on one thread: conftest)."""
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


class _Shared(torch.nn.Module):
    """Linear layers that share their input x (q, k, v; or gate, up: _shared_x_grads calls them)."""

    def __init__(self, names, d, n):
        super().__init__()
        for name in names:
            setattr(self, name, torch.nn.Linear(d, n, bias=False))


def _shared_pair(names, d=96, n=80, r=8):
    """PEFT's and minilora's LoRA of ``_Shared``, the same weights (B not zero: the branch's part counts)."""
    rng = np.random.default_rng(4)
    theirs = _Shared(names, d, n)
    for p in theirs.parameters():
        p.data = torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32) / 10)
    ours = ml.nn.Module()
    for name in names:
        setattr(ours, name, ml.nn.Linear(d, n, bias=False))
        getattr(ours, name).weight.data = ml.tensor(getattr(theirs, name).weight.detach().numpy().copy())
    config = dict(r=r, lora_alpha=16, target_modules=names)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config))
    ours = ml.lora.get_peft_model(ours, ml.lora.LoraConfig(**config))
    ours_named = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            value = rng.standard_normal(tuple(p.shape)).astype(np.float32) / 10
            p.data = torch.from_numpy(value.copy())
            ours_named[name].data = ml.tensor(value.copy())
    return theirs.base_model.model, ours.base_model.model


def _shared_x_grads(layers, wrap, x0, gs, names, later_use):
    """x's gradient (x a non-leaf: the engine's sum, not .grad's) and, with ``later_use``, ``x + 1``'s (retained)."""
    x = wrap(x0.copy())
    x.requires_grad_(True)
    h = x * 1.0
    h.retain_grad()
    outs = [getattr(layers, name)(h) for name in names] + ([h + 1.0] if later_use else [])
    if later_use:
        outs[-1].retain_grad()
    sum((out * wrap(g)).sum() for out, g in zip(outs, gs)).backward()
    return [h.grad.numpy()] + ([outs[-1].grad.numpy()] if later_use else [])


def _torch_engine_sum(parts, order):
    total = parts[order[0]]
    for name in order[1:]:
        total = total + parts[name]
    return total


@pytest.mark.parametrize("names", [("q", "k", "v"), ("gate", "up")])
def test_x_gradient_is_the_parts_added_latest_node_first(mkl, names):
    """The planted experiment behind backward_onto: torch's gradient of x shared by PEFT layers is their parts added
    one by one, each layer's branch (``lora``) before its base layer, the layer made last first (not the layers'
    sums added up, which minilora's one node per layer gave) -- and minilora's is the same."""
    theirs, ours = _shared_pair(names)
    x0, gs = _planted_inputs(len(names), later_use=False)
    (expected,) = _shared_x_grads(theirs, torch.from_numpy, x0, gs, names, False)
    parts = {}
    with torch.no_grad():
        for name, g in zip(names, gs):
            layer = getattr(theirs, name)
            g = torch.from_numpy(g)
            parts[name + " base"] = (g @ layer.base_layer.weight).numpy()
            lora_B, lora_A = layer.lora_B["default"].weight, layer.lora_A["default"].weight
            parts[name + " lora"] = (((g * layer.scaling["default"]) @ lora_B) @ lora_A).numpy()
    in_torchs_order = [f"{name} {part}" for name in reversed(names) for part in ("lora", "base")]
    assert np.array_equal(expected, _torch_engine_sum(parts, in_torchs_order))
    layer_sums = [parts[f"{name} base"] + parts[f"{name} lora"] for name in reversed(names)]
    assert not np.array_equal(expected, _torch_engine_sum(layer_sums, range(len(layer_sums))))
    (got,) = _shared_x_grads(ours, ml.tensor, x0, gs, names, False)
    assert np.array_equal(got, expected)


def _planted_inputs(n_layers, later_use):
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((2, 24, 96)).astype(np.float32)
    gs = [rng.standard_normal((2, 24, 80)).astype(np.float32) for _ in range(n_layers)]
    return x0, gs + ([rng.standard_normal((2, 24, 96)).astype(np.float32)] if later_use else [])


def test_a_sum_the_engine_does_not_own_is_not_added_onto(mkl):
    """x used by q, k, v's LoRA layers and then by ``x + 1``: that use's gradient comes first, an array the engine
    does not own (``x + 1``'s own gradient, retained), so the LoRA node adds onto a copy; both are torch's."""
    names = ("q", "k", "v")
    theirs, ours = _shared_pair(names)
    x0, gs = _planted_inputs(len(names), later_use=True)
    expected = _shared_x_grads(theirs, torch.from_numpy, x0, gs, names, True)
    got = _shared_x_grads(ours, ml.tensor, x0, gs, names, True)
    for a, b in zip(got, expected):
        assert np.array_equal(a, b)


def _peft_llama_pair(dropout, alpha):
    """transformers' Llama (eager attention, GQA) with PEFT's LoRA on every Linear, and minilora's, the same weights;
    lora_B drawn (not PEFT's zeros: the adapters' gradients then reach x and each other)."""
    from test_mkl_vml_r28 import _llama_pair
    reference, model = _llama_pair("eager")
    config = dict(r=8, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear")
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**config))
    ours = ml.lora.get_peft_model(model, ml.lora.LoraConfig(**config))
    ours_named = dict(ours.named_parameters())
    rng = np.random.default_rng(2)
    for name, p in theirs.named_parameters():
        if p.requires_grad:
            value = ours_named[name].numpy()
            if "lora_B" in name:
                value = rng.standard_normal(value.shape).astype(np.float32) / 10
                ours_named[name].data = ml.tensor(value.copy())
            p.data = torch.from_numpy(value.copy())
    theirs.train()
    ours.train()
    return theirs, ours


def _step(model, wrap, ids, seed, optimizer, around=contextlib.nullcontext):
    """One step: loss, backward, AdamW; returns the loss, the adapters' gradients and their updated values.
    ``around()``: the context the forward and backward run in."""
    for generator in (torch, ml):  # (dropout's masks: each framework draws them from its global generator)
        generator.manual_seed(seed)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    opt = optimizer(list(params.values()), lr=1e-3, weight_decay=0.01)
    with around():
        loss = model(input_ids=wrap(ids), labels=wrap(ids)).loss
        loss.backward()
    grads = {name: p.grad.numpy().copy() for name, p in params.items()}
    opt.step()
    return loss.item(), grads, {name: p.detach().numpy().copy() for name, p in params.items()}


# 1 thread, and 2 (256 rows: the C threads split the LoRA layers' rows); alpha 12: a scale that rounds (PEFT's order
# of the products, _scale_rounds); dropout: the branch's part of x's gradient is masked
@pytest.mark.parametrize("n_threads,checkpointing,alpha,dropout", [
    (1, False, 16, 0.0), (2, False, 16, 0.0), (1, True, 16, 0.0), (2, True, 12, 0.1)])
def test_lora_step_is_pefts_bit_for_bit(mkl, threads, n_threads, checkpointing, alpha, dropout):
    threads(n_threads)
    theirs, ours = _peft_llama_pair(dropout, alpha)
    if checkpointing:
        theirs.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        ours.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = np.random.default_rng(0).integers(0, 300, (4, 64))
    loss, grads, values = _step(theirs, torch.as_tensor, ids, 3, torch.optim.AdamW)
    got_loss, got_grads, got_values = _step(ours, ml.tensor, ids, 3, ml.optim.AdamW)
    assert got_loss == loss
    assert len(got_grads) == len(grads) == 28
    differ = [name for name in grads if not np.array_equal(got_grads[name], grads[name])]
    assert not differ, f"{len(differ)} of {len(grads)} adapter gradients differ: {differ[:3]}"
    assert all(np.array_equal(got_values[name], values[name]) for name in values)


def _saved_tensors_kept_as_they_are(autograd):
    return autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)


# The engine's other way through a node (saved-tensor hooks unpack what it saved; the profiler times it) adds x's
# parts in the same order
@pytest.mark.parametrize("around", ["saved_tensors_hooks", "profile"])
def test_lora_step_bits_under_saved_tensor_hooks_and_the_profiler(mkl, threads, around):
    threads(1)
    theirs, ours = _peft_llama_pair(0.0, 16)
    ids = np.random.default_rng(0).integers(0, 300, (2, 32))
    ours_around = (lambda: _saved_tensors_kept_as_they_are(ml.autograd)) if around == "saved_tensors_hooks" \
        else ml.profile
    _, grads, _ = _step(theirs, torch.as_tensor, ids, 3, torch.optim.AdamW)
    _, got_grads, _ = _step(ours, ml.tensor, ids, 3, ml.optim.AdamW, ours_around)
    assert all(np.array_equal(got_grads[name], grads[name]) for name in grads)


def test_in_place_add_in_the_c_threads(threads):
    """``parallel.add_``: ``a += b`` split across the threads (gemm_pool's add with out = a), a's own array; and the
    add as a step of a job's blocks of rows (a LoRA layer's backward_onto adds each block's rows in its core's cache)."""
    threads(2)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((512, 300)).astype(np.float32) for _ in range(2))
    expected = a + b
    address = a.ctypes.data
    result = parallel.add_(a, b)
    assert result is a and a.ctypes.data == address and np.array_equal(a, expected)
    if not ml.gemm_pool.available():
        pytest.skip("no C threads here (MINILORA_GEMM_POOL=0 or no compiler)")
    rows_added = parallel.products_run(len(a), [ml.gemm_pool.Product(a, b, a, split="add")], work_per_row=10**6)
    assert rows_added and np.array_equal(a, expected + b)
