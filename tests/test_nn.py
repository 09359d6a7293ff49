"""minilora.nn: layers against torch.nn (float64, same weights), init distributions, the Module
system (registration, traversal, modes, movement) and state_dict round trips and errors."""
import math
import pickle

import numpy as np
import pytest

import minilora as ml
import minilora.nn as nn
from minilora.nn import init
from minilora.testing import assert_close


def _torch_copy(module, torch_module):
    """Load ``module``'s weights into ``torch_module`` (names are the same by design)."""
    torch = pytest.importorskip("torch")
    torch_module.load_state_dict({k: torch.from_numpy(v.numpy(force=True).copy())
                                  for k, v in module.state_dict().items()})
    return torch_module


def _compare_with_torch(module, torch_module, x, seed_grad=0):
    """Forward and backward of both on the same input; outputs, input grads and weight grads match."""
    torch = pytest.importorskip("torch")
    floating = x.dtype.kind == "f"
    ours_in = ml.tensor(x, requires_grad=floating)
    theirs_in = torch.from_numpy(x.copy()).requires_grad_(floating)
    out, tout = module(ours_in), torch_module(theirs_in)
    assert_close(out, tout.detach().numpy(force=True), rtol=1e-12, atol=1e-12, name="forward")
    g = np.random.default_rng(seed_grad).standard_normal(out.shape)
    out.backward(g)
    tout.backward(torch.from_numpy(g))
    if floating:
        assert_close(ours_in.grad, theirs_in.grad.numpy(force=True), rtol=1e-10, atol=1e-12, name="input grad")
    tparams = dict(torch_module.named_parameters())
    for name, p in module.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(force=True), rtol=1e-10, atol=1e-12, name=f"grad of {name}")


# --- layers against torch -----------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(bias, rng):
    torch = pytest.importorskip("torch")
    layer = nn.Linear(5, 3, bias=bias, dtype=ml.float64)
    assert layer.weight.shape == (3, 5) and (layer.bias is None) == (not bias)
    twin = _torch_copy(layer, torch.nn.Linear(5, 3, bias=bias, dtype=torch.float64))
    _compare_with_torch(layer, twin, rng.standard_normal((2, 4, 5)))


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    layer = nn.Embedding(7, 4, dtype=ml.float64)
    twin = _torch_copy(layer, torch.nn.Embedding(7, 4, dtype=torch.float64))
    ids = np.array([[0, 3, 3, 6], [6, 1, 3, 0]])  # repeats: their gradients must add up
    _compare_with_torch(layer, twin, ids)


@pytest.mark.parametrize("padding_idx", [3, -1])
def test_embedding_padding_idx_matches_torch(padding_idx):
    """torch.nn.Embedding(padding_idx=...): the row starts at zero and padding positions give it no gradient."""
    torch = pytest.importorskip("torch")
    layer = nn.Embedding(7, 4, padding_idx=padding_idx, dtype=ml.float64)
    assert layer.padding_idx == padding_idx % 7 and not layer.weight.numpy(force=True)[padding_idx].any()
    assert f"padding_idx={padding_idx % 7}" in repr(layer)
    twin = _torch_copy(layer, torch.nn.Embedding(7, 4, padding_idx=padding_idx, dtype=torch.float64))
    with ml.no_grad():
        layer.weight.numpy(force=True)[padding_idx] = 1.5  # a trained-looking pad row: still no gradient
    with torch.no_grad():
        twin.weight[padding_idx] = 1.5
    _compare_with_torch(layer, twin, np.array([[0, 3, 3, 6], [6, 1, 3, 0]]))
    with pytest.raises(ValueError, match=r"padding_idx must lie in \[-7, 7\), got 7") as refused:  # (a note)
        nn.Embedding(7, 4, padding_idx=7)
    assert str(refused.value) == "Padding_idx must be within num_embeddings"  # (torch's words)


def test_rmsnorm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    layer = nn.RMSNorm(6, eps=1e-6, dtype=ml.float64)
    init.normal_(layer.weight)  # not all ones, so the weight's gradient is tested too
    twin = _torch_copy(layer, torch.nn.RMSNorm(6, eps=1e-6, dtype=torch.float64))
    _compare_with_torch(layer, twin, rng.standard_normal((3, 2, 6)))


@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, False)])
def test_layernorm_matches_torch(affine, bias, rng):
    torch = pytest.importorskip("torch")
    layer = nn.LayerNorm(6, elementwise_affine=affine, bias=bias, dtype=ml.float64)
    for p in layer.parameters():
        init.normal_(p)
    twin = _torch_copy(layer, torch.nn.LayerNorm(6, elementwise_affine=affine, bias=bias,
                                                 dtype=torch.float64))
    assert len(list(layer.parameters())) == len(list(twin.parameters()))
    _compare_with_torch(layer, twin, 3 + 2 * rng.standard_normal((4, 6)))


def test_dropout_train_and_eval():
    layer = nn.Dropout(0.25)
    x = ml.ones(200, 50)
    y = layer(x).numpy(force=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)  # inverted dropout keeps the mean
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_dropout_of_one_drops_everything():
    """p = 1 is allowed, as in PyTorch: zeros out, zero gradient (not NaN from 0 * 1/(1-p))."""
    x = ml.tensor(np.ones((3, 4)), requires_grad=True)
    y = nn.Dropout(1.0)(x)
    y.sum().backward()
    assert not y.numpy(force=True).any() and not x.grad.numpy(force=True).any() and np.isfinite(x.grad).all()


def test_activation_modules(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4))
    for ours, theirs in [(nn.GELU(), torch.nn.GELU()), (nn.GELU("tanh"), torch.nn.GELU("tanh")),
                         (nn.SiLU(), torch.nn.SiLU()), (nn.ReLU(), torch.nn.ReLU())]:
        _compare_with_torch(ours, theirs, x)
    assert nn.Identity()(ml.tensor(x)).numpy(force=True) is not None
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("fast")


def test_layer_input_errors():
    # torch's error type and wording: "Given normalized_shape=[6], expected input with shape [*, 6]"
    with pytest.raises(RuntimeError, match=r"^Given normalized_shape=\[6\], expected input with shape \[\*, 6\], "
                                           r"but got input of size\[2, 5\]$"):  # (torch's, no space before [2, 5])
        nn.LayerNorm(6)(ml.zeros(2, 5))
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[4\]"):
        nn.RMSNorm(4)(ml.zeros(3))
    assert nn.LayerNorm((2, 3)).weight.shape == (2, 3)  # several trailing dimensions, as torch
    assert nn.LayerNorm([5]).normalized_shape == (5,)
    with pytest.raises(ValueError, match=r"mat1 and mat2 shapes cannot be multiplied \(2x4 and 3x2\)"):  # (torch's)
        nn.Linear(3, 2)(ml.zeros(2, 4))


# --- init ----------------------------------------------------------------------------------------
def test_linear_init_is_pytorch_default():
    """W and b ~ U(-1/sqrt(in), 1/sqrt(in)): bounds respected, spread and mean as a uniform's."""
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w = layer.weight.numpy(force=True).astype(np.float64)
    assert layer.weight.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(w.mean()) < 0.01 * bound
    assert np.abs(layer.bias.numpy(force=True)).max() <= bound


@pytest.mark.parametrize("fn, std_or_bound", [
    (lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)), ("bound", 1 / math.sqrt(200))),
    (lambda t: init.kaiming_uniform_(t, nonlinearity="relu"), ("bound", math.sqrt(6 / 200))),
    (lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), ("std", math.sqrt(2 / 300))),
    (lambda t: init.xavier_uniform_(t, gain=2.0), ("bound", 2 * math.sqrt(6 / 500))),
    (lambda t: init.xavier_normal_(t), ("std", math.sqrt(2 / 500))),
    (lambda t: init.normal_(t, 0.0, 0.02), ("std", 0.02)),
    (lambda t: init.uniform_(t, -0.3, 0.3), ("bound", 0.3)),
])
def test_init_distributions(fn, std_or_bound):
    """On a [300, 200] weight: bounds of the uniform ones, standard deviations of the normal ones
    (the formulas of torch.nn.init)."""
    t = nn.Parameter(np.zeros((300, 200), dtype=np.float64))
    fn(t)
    values = t.numpy(force=True)
    kind, value = std_or_bound
    if kind == "bound":
        assert np.abs(values).max() <= value and np.abs(values).max() > 0.99 * value
        assert values.std() == pytest.approx(value / math.sqrt(3), rel=0.02)
    else:
        assert values.std() == pytest.approx(value, rel=0.02)
    assert abs(values.mean()) < 0.02 * values.std()


def test_trunc_normal_constant_and_gain():
    torch = pytest.importorskip("torch")
    t = nn.Parameter(np.zeros((100, 100)))
    init.trunc_normal_(t, mean=0.5, std=1.0, a=-0.5, b=1.5)  # a window of +-1 std around the mean
    assert t.numpy(force=True).min() >= -0.5 and t.numpy(force=True).max() <= 1.5
    assert t.numpy(force=True).mean() == pytest.approx(0.5, abs=0.02)
    assert t.numpy(force=True).std() == pytest.approx(0.5394, rel=0.02)  # a normal's std cut at +-1 sigma
    init.constant_(t, 0.25)
    assert np.all(t.numpy(force=True) == 0.25)
    init.zeros_(t)
    assert not t.numpy(force=True).any()
    init.ones_(t)
    assert np.all(t.numpy(force=True) == 1)
    for name, param in [("linear", None), ("tanh", None), ("relu", None), ("leaky_relu", 0.2),
                        ("leaky_relu", None), ("selu", None), ("sigmoid", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match=r"Mode fan_avg not supported, please use one of \['fan_in', 'fan_out'\]"):
        init.kaiming_uniform_(t, mode="fan_avg")
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(5,\)"):
        init.xavier_uniform_(nn.Parameter(np.zeros(5)))


def test_init_is_seeded():
    ml.manual_seed(3)
    a = nn.Linear(4, 4).weight.numpy(force=True)
    ml.manual_seed(3)
    b = nn.Linear(4, 4).weight.numpy(force=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Linear(4, 4).weight.numpy(force=True))


# --- the Module system ---------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4, bias=False)
        self.register_buffer("scale", ml.tensor([2.0]))
        self.register_buffer("cache", ml.zeros(3), persistent=False)
        self.note = "not registered"

    def forward(self, x):
        return self.proj(self.norm(x)) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([Block(), Block()])
        self.heads = nn.ModuleDict({"lm": nn.Linear(4, 10)})
        self.heads["lm"].weight = self.embed.weight  # tied, as in Llama with tie_word_embeddings

    def forward(self, ids):
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h)
        return self.heads["lm"](h)


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["embed.weight", "layers.0.norm.weight", "layers.0.norm.bias", "layers.0.proj.weight",
                     "layers.1.norm.weight", "layers.1.norm.bias", "layers.1.proj.weight", "heads.lm.bias"]
    assert len(list(net.parameters())) == 8  # the tied weight comes once
    assert [n for n, _ in net.named_modules()] == [
        "", "embed", "layers", "layers.0", "layers.0.norm", "layers.0.proj", "layers.1",
        "layers.1.norm", "layers.1.proj", "heads", "heads.lm"]
    assert [type(m).__name__ for m in net.children()] == ["Embedding", "ModuleList", "ModuleDict"]
    assert [n for n, _ in net.named_buffers()] == ["layers.0.scale", "layers.0.cache",
                                                   "layers.1.scale", "layers.1.cache"]
    assert net.get_submodule("layers.1.proj") is net.layers[1].proj
    assert net.layers[-1] is net.layers[1] and len(net.layers) == 2
    assert list(net.heads.keys()) == ["lm"] and "lm" in net.heads
    assert net.layers[0].note == "not registered"
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'missing'"):
        net.layers[0].missing
    with pytest.raises(AttributeError, match="ModuleList has no attribute `nope`"):
        net.get_submodule("layers.nope")
    out = net(ml.tensor([[1, 2, 3]]))
    assert out.shape == (1, 3, 10)
    visited = []
    net.apply(lambda m: visited.append(type(m).__name__))
    assert visited[-1] == "Net" and visited.index("LayerNorm") < visited.index("Block")


def test_assignment_rules():
    block = Block()
    with pytest.raises(TypeError, match=r"cannot assign 'torch.FloatTensor' as parameter 'weight' "
                                        r"\(torch.nn.Parameter or None expected\)"):  # (torch's words, round 26)
        block.proj.weight = ml.zeros(4, 4)
    with pytest.raises(TypeError, match="cannot assign 'int' as child module 'norm'"):
        block.norm = 3
    block.scale = ml.tensor([3.0])  # a registered buffer takes a new Tensor
    assert block.scale.item() == 3.0 and "scale" in block.state_dict()
    block.proj.weight = nn.Parameter(np.eye(4, dtype=np.float32))
    assert np.array_equal(block.state_dict()["proj.weight"].numpy(force=True), np.eye(4))
    block.proj.bias = None
    del block.norm
    assert [n for n, _ in block.named_parameters()] == ["proj.weight"]

    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call \(Forgetful.__init__ must call super\(\).__init__\(\)"):
        Forgetful()
    with pytest.raises(TypeError, match="int is not a Module subclass"):
        nn.ModuleList([nn.Linear(2, 2), 3])
    with pytest.raises(IndexError, match="index 5 is out of range"):
        nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])[5] = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="'b'"):
        nn.ModuleDict({"a": nn.Linear(2, 2)})["b"]
    with pytest.raises(KeyError, match=r'module name can.+t contain "\."'):
        nn.ModuleDict({"a.b": nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="cannot assign 'numpy.ndarray' object to buffer 'x'"):  # (torch.typename)
        block.register_buffer("x", np.zeros(2))


def test_train_eval_requires_grad_zero_grad():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.layers.requires_grad_(False)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["embed.weight", "heads.lm.bias"]
    net(ml.tensor([[1, 2]])).sum().backward()
    assert net.layers[0].proj.weight.grad is None  # frozen: no gradient computed
    assert net.embed.weight.grad is not None
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        net.train("no")


def test_to_dtype_keeps_parameter_objects():
    net = Net()
    params = list(net.parameters())
    net.to(ml.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert all(a is b for a, b in zip(params, net.parameters()))
    assert net.layers[0].scale.dtype == np.float64
    net.float()
    assert net.embed.weight.dtype == np.float32
    net.to(dtype=ml.float16)
    assert net.heads["lm"].bias.dtype == np.float16
    with pytest.raises(TypeError, match="only accepts floating point"):
        net.to(dtype=ml.int32)


def test_to_device(device):
    net = Net()
    out_cpu = net(ml.tensor([[1, 2]])).numpy(force=True)
    net.to(device)
    assert all(p.device.name == device for p in net.parameters())
    assert all(b.device.name == device for b in net.buffers())
    out = net(ml.tensor([[1, 2]], device=device))
    assert out.device.name == device
    np.testing.assert_allclose(out.numpy(force=True), out_cpu, rtol=1e-5, atol=1e-6)


def test_repr():
    text = repr(Net())
    # torch's ModuleList repr: a run of identical modules shown once
    assert "(layers): ModuleList(\n    (0-1): 2 x Block(\n      (norm): LayerNorm((4,), eps=1e-05" in text
    assert "(lm): Linear(in_features=4, out_features=10, bias=True)" in text
    assert repr(nn.Parameter(np.zeros(2))).startswith("Parameter containing:")


# --- state_dict ----------------------------------------------------------------------------------
def test_state_dict_round_trip():
    net = Net()
    sd = net.state_dict()
    # PyTorch's order (a module's own tensors, then its children's); no non-persistent cache;
    # the tied weight under both names.
    assert list(sd) == ["embed.weight", "layers.0.scale", "layers.0.norm.weight", "layers.0.norm.bias",
                        "layers.0.proj.weight", "layers.1.scale", "layers.1.norm.weight",
                        "layers.1.norm.bias", "layers.1.proj.weight", "heads.lm.weight", "heads.lm.bias"]
    assert not any(t.requires_grad for t in sd.values())
    assert net.state_dict(keep_vars=True)["embed.weight"] is net.embed.weight
    saved = pickle.loads(pickle.dumps({k: v.numpy(force=True) for k, v in sd.items()}))
    other = Net()
    ids = ml.tensor([[4, 0, 9]])
    assert not np.allclose(other(ids).numpy(force=True), net(ids).numpy(force=True))
    result = other.load_state_dict(saved)
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(other(ids).numpy(force=True), net(ids).numpy(force=True))


def test_load_state_dict_from_torch_and_casts():
    torch = pytest.importorskip("torch")
    layer = nn.Linear(3, 2)
    tlayer = torch.nn.Linear(3, 2, dtype=torch.float64)
    layer.load_state_dict(tlayer.state_dict())
    assert layer.weight.dtype == np.float32  # cast to the model's dtype
    assert_close(layer.weight, tlayer.weight.detach().numpy(force=True), rtol=1e-6, atol=1e-7)
    layer.load_state_dict(tlayer.to(torch.bfloat16).state_dict())  # NumPy has no bfloat16
    assert_close(layer.bias, tlayer.bias.float().detach().numpy(force=True), rtol=0, atol=0)


def test_load_state_dict_errors_list_everything():
    net = Net()
    before = {k: v.numpy(force=True).copy() for k, v in net.state_dict().items()}
    bad = {k: v.numpy(force=True) for k, v in Net().state_dict().items()}
    del bad["layers.0.proj.weight"]
    bad["layers.0.extra"] = np.zeros(2)
    bad["embed.weight"] = np.zeros((11, 4))
    bad["heads.lm.bias"] = np.zeros((10,))  # fine, but must not be written when loading fails
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(bad)
    message = str(info.value)
    assert message.startswith("Error(s) in loading state_dict for Net:\n\t")  # torch's words, line for line
    assert '\n\tMissing key(s) in state_dict: "layers.0.proj.weight". ' in message
    assert '\n\tUnexpected key(s) in state_dict: "layers.0.extra". ' in message
    assert ("\n\tsize mismatch for embed.weight: copying a param with shape minilora.Size([11, 4]) from checkpoint, "
            "the shape in current model is minilora.Size([10, 4]).") in message
    assert info.value.missing == ["layers.0.proj.weight"]
    assert info.value.mismatched == [("embed.weight", (11, 4), (10, 4))]
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(force=True), before[k], err_msg=k)  # nothing was changed

    bad["embed.weight"] = np.zeros((10, 4))
    result = net.load_state_dict(bad, strict=False)  # key differences allowed, reported
    assert result == (["layers.0.proj.weight"], ["layers.0.extra"])
    assert not net.heads["lm"].bias.numpy(force=True).any()
    with pytest.raises(nn.StateDictError, match="size mismatch for embed.weight"):  # shapes always must match
        net.load_state_dict({"embed.weight": np.zeros((3, 3))}, strict=False)
    many = {f"x{i}": np.zeros(1) for i in range(12)}
    with pytest.raises(nn.StateDictError, match=r'Unexpected key\(s\) in state_dict: "x0", .*"x7", .*"x11"\. $'):
        nn.Linear(2, 2).load_state_dict({**nn.Linear(2, 2).state_dict(), **many})
