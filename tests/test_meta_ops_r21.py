"""The meta device computes shapes, not values (minilora/ops/meta.py): an op on meta tensors gives torch's shape,
dtype and strides without running its arithmetic on the whole inputs, and backward gives meta gradients without
running the ops' backward formulas. torch's meta tensors are the oracle, called the way their users write them."""
import numpy as np
import pytest

import minilora as ml
import minilora.lora as ml_peft
from minilora import mkl_half_gemm
from minilora.ops.elementwise import Mul
from minilora.tensor import Function
from minilora.ops.matmul import Linear, MatMul
from minilora.ops.nn import Attention, CrossEntropy, RMSNorm, SwiGLU

torch = pytest.importorskip("torch")
try:
    import peft  # (imported here, ~10 s, not in a test)
except ImportError:  # (the PEFT tests below skip)
    peft = None
ml.bfloat16  # (minilora loads ml_dtypes, ~1 s, at its first use: here, not in a test)
torch.ones(1, device="meta") * 2  # (torch loads its meta kernels at their first use: here, not in a test)


def _described(call):
    """What a call gave: its result's shape, dtype name and strides (or the refusal), or its error's type."""
    try:
        out = call()
    except Exception as exc:  # (compared with torch's)
        return type(exc).__name__
    try:
        strides = tuple(out.stride())
    except Exception as exc:
        strides = type(exc).__name__
    return tuple(out.shape), str(out.dtype).split(".")[-1], strides


def _ones(T, device, *shape, dtype=None):
    return T.ones(*shape, device=device, dtype=dtype or T.float32)


_CALLS = {
    "broadcast add": lambda T, d: _ones(T, d, 3, 1, 5) + _ones(T, d, 2, 5),
    "transposed mul": lambda T, d: _ones(T, d, 5, 3).t() * _ones(T, d, 3, 5),
    "int times float": lambda T, d: _ones(T, d, 4, 5, dtype=T.int64) * 2.5,
    "permuted cast": lambda T, d: _ones(T, d, 2, 3, 4).permute(2, 0, 1).to(T.float16),
    "exp of a view": lambda T, d: _ones(T, d, 2, 3, 4, 5).permute(0, 2, 3, 1).exp(),
    "matrix @ vector": lambda T, d: _ones(T, d, 5, 3) @ _ones(T, d, 3),
    "vector @ matrix": lambda T, d: T.matmul(_ones(T, d, 3), _ones(T, d, 3, 5)),
    "batched matmul": lambda T, d: _ones(T, d, 2, 1, 5, 3) @ _ones(T, d, 4, 3, 2),
    "linear": lambda T, d: T.nn.functional.linear(_ones(T, d, 2, 7, 3), _ones(T, d, 4, 3), _ones(T, d, 4)),
    "linear, no bias": lambda T, d: T.nn.functional.linear(_ones(T, d, 3), weight=_ones(T, d, 5, 3)),
    "embedding": lambda T, d: T.nn.functional.embedding(T.zeros(2, 5, dtype=T.int64, device=d), _ones(T, d, 10, 3)),
    "cross entropy": lambda T, d: T.nn.functional.cross_entropy(_ones(T, d, 6, 5), T.zeros(6, dtype=T.int64, device=d)),
    "cross entropy none": lambda T, d: T.nn.functional.cross_entropy(
        _ones(T, d, 6, 5), T.zeros(6, dtype=T.int64, device=d), reduction="none"),
    "softmax": lambda T, d: _ones(T, d, 2, 3, 4).softmax(dim=1),
    "log_softmax": lambda T, d: T.log_softmax(_ones(T, d, 4, 5), -1),
    "sum keepdim": lambda T, d: _ones(T, d, 2, 3, 4).sum(dim=(0, 2), keepdim=True),
    "mean": lambda T, d: _ones(T, d, 2, 3, 4).mean(-1),
    "rms_norm": lambda T, d: T.nn.functional.rms_norm(_ones(T, d, 2, 3, 4), (4,), _ones(T, d, 4)),
    "rms_norm of two dims": lambda T, d: T.nn.functional.rms_norm(_ones(T, d, 2, 3, 4), [3, 4], eps=1e-6),
    "sdpa causal": lambda T, d: T.nn.functional.scaled_dot_product_attention(
        _ones(T, d, 1, 4, 6, 8), _ones(T, d, 1, 4, 6, 8), _ones(T, d, 1, 4, 6, 5), is_causal=True),
    "sdpa mask": lambda T, d: T.nn.functional.scaled_dot_product_attention(
        _ones(T, d, 2, 4, 6, 8), _ones(T, d, 2, 4, 3, 8), _ones(T, d, 2, 4, 3, 8), attn_mask=_ones(T, d, 6, 3)),
    "reshape that copies": lambda T, d: _ones(T, d, 3, 4, 5).permute(2, 0, 1).reshape(-1, 4),
    "flatten that copies": lambda T, d: _ones(T, d, 3, 5).t().flatten(),
    "contiguous": lambda T, d: _ones(T, d, 3, 5).t().contiguous(),
    "clone channels_last": lambda T, d: _ones(T, d, 2, 3, 4, 5).clone(memory_format=T.channels_last),
    "silu times up": lambda T, d: T.nn.functional.silu(_ones(T, d, 3, 6)) * _ones(T, d, 3, 6),
    "layer_norm": lambda T, d: T.nn.functional.layer_norm(_ones(T, d, 2, 3, 4), (4,), _ones(T, d, 4), _ones(T, d, 4)),
    "cat": lambda T, d: T.cat([_ones(T, d, 3, 5), _ones(T, d, 2, 5)]),
    "stack": lambda T, d: T.stack([_ones(T, d, 3, 5), _ones(T, d, 3, 5)], dim=1),
    "amax": lambda T, d: _ones(T, d, 3, 5).amax(1),
    "max along a dim": lambda T, d: _ones(T, d, 3, 5).max(dim=0).values,
    "argmax": lambda T, d: _ones(T, d, 3, 5).argmax(-1, keepdim=True),
    "var": lambda T, d: _ones(T, d, 3, 5).var(1),
    "norm": lambda T, d: _ones(T, d, 3, 5).norm(dim=1),
    "cumsum": lambda T, d: T.cumsum(_ones(T, d, 3, 5), 1),
    "flip": lambda T, d: _ones(T, d, 3, 5).flip(0),
    "roll": lambda T, d: _ones(T, d, 3, 5).roll(1, 0),
    "index_select": lambda T, d: _ones(T, d, 3, 5).index_select(1, T.zeros(4, dtype=T.int64, device=d)),
    "repeat_interleave": lambda T, d: _ones(T, d, 1, 2, 3, 5).repeat_interleave(2, dim=1),
    "gather": lambda T, d: _ones(T, d, 3, 5).gather(1, T.zeros(3, 2, dtype=T.int64, device=d)),
    "mse_loss": lambda T, d: T.nn.functional.mse_loss(_ones(T, d, 3, 5), _ones(T, d, 3, 5)),
    "nll_loss none": lambda T, d: T.nn.functional.nll_loss(_ones(T, d, 6, 5), T.zeros(6, dtype=T.int64, device=d),
                                                            reduction="none"),
    "group_norm": lambda T, d: T.nn.functional.group_norm(_ones(T, d, 2, 4, 3), 2),
    "conv2d": lambda T, d: T.nn.functional.conv2d(_ones(T, d, 2, 4, 3, 3), _ones(T, d, 6, 4, 2, 2), stride=2,
                                                  padding=1),
    "grouped conv2d": lambda T, d: T.nn.functional.conv2d(_ones(T, d, 2, 4, 3, 2), _ones(T, d, 6, 2, 2, 2), padding=1,
                                                          groups=2),
    "max_pool2d": lambda T, d: T.nn.functional.max_pool2d(_ones(T, d, 2, 3, 3, 4), 2, padding=1),
    "pad": lambda T, d: T.nn.functional.pad(_ones(T, d, 2, 3, 4), (1, 2)),
    "pad that crops": lambda T, d: T.nn.functional.pad(_ones(T, d, 8, 3), (-1, 2)),
}


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_meta_results_have_torchs_shape_dtype_and_strides_without_the_ops_arithmetic(name, monkeypatch):
    call = _CALLS[name]
    theirs = _described(lambda: call(torch, "meta"))
    assert _described(lambda: call(ml, "cpu")) == theirs  # (minilora's CPU result is torch's)
    seen = _spy_forwards(monkeypatch, _all_functions())
    assert _described(lambda: call(ml, "meta")) == theirs
    # every op that computed (not a view) ran on stand-ins: one element per dimension (rms_norm: one row)
    assert max(seen.values(), default=0) <= 12  # (each call's largest input holds more)


def _all_functions():
    """Every op class with a forward of its own."""
    found, todo = [], [Function]
    while todo:
        for sub in todo.pop().__subclasses__():
            if "forward" in sub.__dict__ and "meta_variant_of" not in sub.__dict__:  # (the ops, not their meta runs)
                found.append(sub)
            todo.append(sub)
    return found


def _spy_forwards(monkeypatch, classes):
    """Record the size of the largest array each op's forward is given, where its result is no view of it."""
    seen = {}
    for cls in classes:
        def spy(ctx, *arrays, _forward=cls.forward, _name=cls.__name__, **options):
            out = _forward(ctx, *arrays, **options)
            given = [a for a in (*arrays, *options.values()) if isinstance(a, np.ndarray)]
            if not any(isinstance(out, np.ndarray) and np.may_share_memory(out, a) for a in given):
                seen[_name] = max(seen.get(_name, 0), 0, *(a.size for a in given))
            return out
        monkeypatch.setattr(cls, "forward", staticmethod(spy))
    return seen


def _refuse_backwards(monkeypatch, classes):
    for cls in classes:
        def refused(ctx, g, _name=cls.__name__):
            raise AssertionError(f"{_name}.backward ran on meta")
        monkeypatch.setattr(cls, "backward", staticmethod(refused))


def test_meta_ops_run_on_one_element_of_each_input_and_backward_runs_no_formula(monkeypatch):
    seen = _spy_forwards(monkeypatch, (MatMul, Linear, Mul, Attention, CrossEntropy))
    _refuse_backwards(monkeypatch, (MatMul, Linear, Mul, Attention, CrossEntropy))
    x = ml.ones(64, 48, device="meta", requires_grad=True)
    w = ml.nn.Parameter(ml.ones(32, 48, device="meta"))
    h = ml.nn.functional.linear(x, w) * 3.0
    q = (h @ ml.ones(32, 256, device="meta")).reshape(1, 4, 64, 64)
    attended = ml.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    loss = ml.nn.functional.cross_entropy(attended.reshape(256, 64), ml.zeros(256, dtype=ml.long, device="meta"))
    loss.backward()
    assert seen == {"Linear": 1, "Mul": 1, "MatMul": 1, "Attention": 1, "CrossEntropy": 1}
    assert (x.grad.shape, x.grad.device.type, w.grad.shape, w.grad.device.type) == ((64, 48), "meta", (32, 48), "meta")
    for make in (lambda T: T.ones(2, 3, device="meta") @ T.ones(4, 5, device="meta"),  # (shape errors: torch's)
                 lambda T: T.ones(2, 3, device="meta") + T.ones(4, 5, device="meta"),
                 lambda T: T.nn.functional.linear(T.ones(2, 3, device="meta"), T.ones(4, 5, device="meta")),
                 lambda T: T.ones(2, 3, device="meta").sum(dim=5),
                 lambda T: T.ones(2, 3, device="meta").reshape(4, 2)):
        with pytest.raises(Exception) as theirs:
            make(torch)
        with pytest.raises(theirs.type):
            make(ml)

    def twice_differentiated(T):  # (create_graph=True: the recorded backward reads what forward saved)
        x = T.ones(3, 4, device="meta", requires_grad=True)
        w = T.ones(5, 4, device="meta", requires_grad=True)
        y = (T.nn.functional.linear(x, w).tanh() ** 2).softmax(-1).sum()
        g, = T.autograd.grad(y, x, create_graph=True)
        g.sum().backward()
        return tuple(g.shape), g.device.type, g.requires_grad, tuple(w.grad.shape), w.grad.device.type
    monkeypatch.undo()
    assert twice_differentiated(ml) == twice_differentiated(torch)

    def saved_results(T):  # (grad_fn._saved_result: the op's own, not its stand-in's)
        x = T.ones(3, 4, device="meta", requires_grad=True)
        return [tuple(y.grad_fn._saved_result.shape) for y in (x.exp(), x.softmax(-1), x.tanh())]
    assert saved_results(ml) == saved_results(torch)


def test_meta_gradients_are_torchs_without_running_any_backward_formula(monkeypatch):
    def story(T):
        x = T.ones(5, 3, device="meta", dtype=T.float64, requires_grad=True)
        w = T.nn.Parameter(T.ones(4, 3, device="meta"))
        for _ in range(2):  # (the second pass adds into the meta .grad: no values, one more version)
            y = (T.nn.functional.linear(x.float(), w).softmax(-1) * x[:, :1]).sum()
            y.backward()
        return [(tuple(t.grad.shape), str(t.grad.dtype).split(".")[-1], t.grad.device.type, t.grad._version)
                for t in (x, w)]
    theirs = story(torch)
    _refuse_backwards(monkeypatch, _all_functions())
    assert story(ml) == theirs


def test_a_comparison_of_meta_tensors_compares_one_element(monkeypatch):
    import sys
    tensor_module = sys.modules["minilora.tensor"]
    compared = []

    class NumPyWatched:  # (the NumPy the Tensor's comparisons find: its ufuncs recorded)
        def __getattr__(self, name):
            found = getattr(np, name)
            if name not in ("greater", "equal"):
                return found
            def watched(a, b, _ufunc=found):
                compared.append(max(np.size(a), np.size(b)))
                return _ufunc(a, b)
            return watched
    monkeypatch.setattr(tensor_module, "np", NumPyWatched())
    x = ml.ones(64, 32, device="meta")
    masks = [x > 0, x.t() == ml.ones(32, 1, device="meta")]
    assert compared == [1, 1]
    assert [(tuple(m.shape), m.dtype, m.device.type, m.stride()) for m in masks] == [
        ((64, 32), ml.bool, "meta", (32, 1)), ((32, 64), ml.bool, "meta", (1, 32))]  # (torch's strides)


def test_a_meta_llama_forward_and_backward_runs_no_matrix_product(monkeypatch):
    from minilora.nn.llama import LlamaConfig, LlamaForCausalLM
    seen = _spy_forwards(monkeypatch, (Linear, Attention, RMSNorm, SwiGLU, CrossEntropy))
    _refuse_backwards(monkeypatch, (Linear, Attention, RMSNorm, SwiGLU, CrossEntropy))
    config = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    with ml.device("meta"):
        model = LlamaForCausalLM(config)
    ids = ml.zeros(2, 64, dtype=ml.long, device="meta")
    out = model(ids, labels=ids)
    out.loss.backward()
    weight = model.model.layers[1].mlp.down_proj.weight
    assert (tuple(out.logits.shape), out.loss.shape, weight.grad.shape, weight.grad.device.type) == (
        (2, 64, 1000), (), (256, 512), "meta")
    assert max(seen.values()) <= 256  # (one row of a stand-in: RMSNorm keeps the hidden size)


def test_legacy_constructors_make_cpu_tensors_inside_a_meta_block_and_refuse_device_meta_as_torchs():
    def story(T):
        def outcome(call):
            try:
                t = call()
                return t.device.type, tuple(t.shape), str(t.dtype).split(".")[-1]
            except Exception as exc:
                return type(exc).__name__, str(exc)
        meta = T.ones(2, device="meta")
        with T.device("meta"):
            made = [outcome(lambda: T.Tensor(2, 3)), outcome(lambda: T.Tensor([1.0, 2.0])), outcome(lambda: T.Tensor()),
                    outcome(lambda: T.FloatTensor(2, 3)), outcome(lambda: T.LongTensor([1, 2])),
                    outcome(lambda: T.Tensor(T.Size([2, 3]))), outcome(lambda: T.tensor([1.0]))]
        return made + [outcome(lambda: T.Tensor(meta)), outcome(lambda: T.Tensor(2, 3, device="meta")),
                       outcome(lambda: T.Tensor([1.0], device="meta")),
                       outcome(lambda: T.DoubleTensor(2, device="meta"))]
    assert story(ml) == story(torch)


# ---- PEFT's low_cpu_mem_usage=True: adapters made on meta, given values by an assigning load -------------------
_RNG = np.random.default_rng(0)
_BASE = {"lin.weight": _RNG.standard_normal((3, 4)), "lin.bias": _RNG.standard_normal(3),
         "out.weight": _RNG.standard_normal((2, 3)), "out.bias": _RNG.standard_normal(2)}
_ADAPTER = {"base_model.model.lin.lora_A.weight": _RNG.standard_normal((2, 4)),
            "base_model.model.lin.lora_B.weight": _RNG.standard_normal((3, 2))}


def _libraries(T):
    """(the library, its PEFT) for torch and for minilora."""
    if peft is None:
        pytest.skip("PEFT is not installed")
    if T is torch:
        return torch, peft
    return ml, ml_peft


def _base_model(T, dtype="float32"):
    class Model(T.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = T.nn.Linear(4, 3), T.nn.Linear(3, 2)

        def forward(self, x):
            return self.out(self.lin(x))
    model = Model()
    if dtype is None:  # (as made: on meta inside a meta block)
        return model
    model.load_state_dict({k: T.tensor(v, dtype=T.float32) for k, v in _BASE.items()})
    return model.to(getattr(T, dtype))


def _assert_output_close(ours, theirs):
    """The model's float32 output as torch's: rtol 1e-6 on the AMD EPYC where it was measured
    (mkl_half_gemm.APPLIES). Elsewhere MKL's sgemm sums the 1x4 @ 4x3 and 1x3 @ 3x2 Linears' products in another
    order (an Intel Xeon: each base Linear an ulp off minilora's), and out's second output, 0.0517 left of terms
    near 2, keeps that ulp as 3.5e-6 of itself: rtol 5e-6 there (a wrong scaling or adapter is off by 10% or more)."""
    np.testing.assert_allclose(ours, theirs, rtol=1e-6 if mkl_half_gemm.APPLIES else 5e-6)


def _adapters(model):
    return {name: (p.device.type, str(p.dtype).split(".")[-1], p.requires_grad)
            for name, p in model.named_parameters() if "lora" in name}


def _output(T, model, dtype="float32"):
    try:
        return np.asarray(model(T.ones(1, 4, dtype=getattr(T, dtype))).detach().float().numpy())
    except RuntimeError as exc:  # (minilora's: torch 2.13's linear of a CPU input and a meta weight reads garbage)
        return str(exc)


def test_get_peft_model_low_cpu_mem_usage_makes_meta_adapters_that_an_assigning_load_fills_as_peft():
    def story(T):
        T, tuners = _libraries(T)
        state = {k: T.tensor(v, dtype=T.float32) for k, v in _ADAPTER.items()}
        model = tuners.get_peft_model(_base_model(T), tuners.LoraConfig(r=2, target_modules=["lin"]),
                                    low_cpu_mem_usage=True)
        made, unloaded = _adapters(model), _output(T, model)
        with pytest.warns(UserWarning) as caught:  # (a copying load leaves them on meta: torch's warning each)
            tuners.set_peft_model_state_dict(model, state)
        warned = sorted(str(w.message) for w in caught if "meta parameter" in str(w.message))
        result = tuners.set_peft_model_state_dict(model, state, low_cpu_mem_usage=True)
        return made, unloaded, warned, sorted(result.missing_keys), _adapters(model), _output(T, model)
    ours, theirs = story(ml), story(torch)
    assert ours[0] == theirs[0] and ours[2:5] == theirs[2:5]
    assert ours[1] == "Tensor on device meta is not on the expected device cpu!"  # (torch reads uninitialised memory)
    _assert_output_close(ours[5], theirs[5])


def test_an_assigning_load_takes_the_base_layers_dtype_and_from_pretrained_casts_it_back_as_peft(tmp_path):
    _libraries(torch)
    source = peft.get_peft_model(_base_model(torch), peft.LoraConfig(r=2, target_modules=["lin"],
                                                                     init_lora_weights=False))
    source.save_pretrained(tmp_path)

    def story(T):
        T, tuners = _libraries(T)
        state = {k: T.tensor(v, dtype=T.float32) for k, v in _ADAPTER.items()}
        model = tuners.get_peft_model(_base_model(T, "bfloat16"), tuners.LoraConfig(r=2, target_modules=["lin"]),
                                    low_cpu_mem_usage=True)
        tuners.set_peft_model_state_dict(model, state, low_cpu_mem_usage=True)
        loaded = [_adapters(tuners.PeftModel.from_pretrained(_base_model(T), tmp_path, low_cpu_mem_usage=True,
                                                           is_trainable=trainable)) for trainable in (False, True)]
        bf16 = tuners.PeftModel.from_pretrained(_base_model(T, "bfloat16"), tmp_path, low_cpu_mem_usage=True)
        plain = tuners.PeftModel.from_pretrained(_base_model(T), tmp_path, low_cpu_mem_usage=True)
        return [_adapters(model), *loaded, _adapters(bf16)], _output(T, plain)
    ours, theirs = story(ml), story(torch)
    assert ours[0] == theirs[0]
    # (float32 products summed in BLAS's orders: an output near zero is a difference of terms the size of the
    # largest, so its error is a few ulps of that; the adapter's init_lora_weights=False draws are unseeded)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6, atol=4e-7 * np.abs(theirs[1]).max())


def test_inject_adapter_in_model_low_cpu_mem_usage_then_load_state_dict_assign_as_peft():
    def story(T):
        T, tuners = _libraries(T)
        model = tuners.inject_adapter_in_model(tuners.LoraConfig(r=2, target_modules=["lin"]), _base_model(T),
                                             low_cpu_mem_usage=True)
        made, unloaded = _adapters(model), _output(T, model)
        state = {k.replace("base_model.model.", "").replace(".weight", ".default.weight"): T.tensor(v, dtype=T.float32)
                 for k, v in _ADAPTER.items()}
        result = model.load_state_dict(state, strict=False, assign=True)
        return made, unloaded, sorted(result.missing_keys), _adapters(model), _output(T, model)
    ours, theirs = story(ml), story(torch)
    assert (ours[0], ours[2], ours[3]) == (theirs[0], theirs[2], theirs[3])
    assert ours[1] == "Tensor on device meta is not on the expected device cpu!"
    _assert_output_close(ours[4], theirs[4])


def test_tensor_new_is_torchs_legacy_constructor_on_the_tensors_dtype_and_device():
    def story(T):
        def outcome(call):
            try:
                t = call()
                values = t.tolist() if t.device.type == "cpu" and t.numel() < 5 and t.dim() == 1 else None
                return t.device.type, tuple(t.shape), str(t.dtype).split(".")[-1], t.requires_grad, values
            except Exception as exc:
                return type(exc).__name__
        x, meta = T.ones(2, dtype=T.float64, requires_grad=True), T.ones(2, dtype=T.int64, device="meta")
        return [outcome(lambda: x.new()), outcome(lambda: x.new(2, 3)), outcome(lambda: x.new(T.Size([2, 3]))),
                outcome(lambda: x.new([1, 2])), outcome(lambda: x.new((1, 2))), outcome(lambda: x.new(np.ones(2))),
                outcome(lambda: x.new(T.ones(2, dtype=T.float64))), outcome(lambda: x.new(T.ones(2))),
                outcome(lambda: x.new(2, device="meta")), outcome(lambda: x.new(2.5)), outcome(lambda: meta.new(2, 3)),
                outcome(lambda: meta.new([1, 2])), outcome(lambda: meta.new(2, device="cpu"))]
    assert story(ml) == story(torch)
    shared = ml.ones(2)
    assert np.shares_memory(shared.new(shared)._array, shared._array)  # (torch's shares its storage too)


def test_lora_dropout_of_a_meta_model_draws_nothing_as_peft():
    def story(T):
        T, tuners = _libraries(T)
        with T.device("meta"):
            model = tuners.get_peft_model(_base_model(T, None), tuners.LoraConfig(r=2, target_modules=["lin"],
                                                                                  lora_dropout=0.5))
        model.train()
        T.manual_seed(0)
        out = model(T.ones(3, 4, device="meta"))
        return tuple(out.shape), out.device.type, T.rand(2).tolist()  # (the generator untouched)
    assert story(ml) == story(torch)


def test_casting_a_meta_model_writes_nothing():
    with ml.device("meta"):
        model = ml.nn.Linear(8192, 4096)
    before = _resident_bytes()
    model.to(ml.bfloat16)  # (64 MiB of bfloat16 zeros, were they written)
    assert _resident_bytes() - before < 16 << 20
    weight = model.weight
    assert (weight.dtype, weight.device.type, tuple(weight.shape)) == (ml.bfloat16, "meta", (4096, 8192))


def _resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

