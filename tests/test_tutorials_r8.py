"""Round 8 tutorials, run as their authors wrote them, under torch and minilora side by side: the same seed
must print the same numbers. Karpathy's makemore (bigram counts and sampling, "Building makemore" part 3's
BatchNorm by hand, part 5's WaveNet with its own Linear/BatchNorm1d/FlattenConsecutive classes and
torch.histogram of the activations), with small sizes and few steps."""
import math

import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _same(ours, theirs, rtol=0.0, atol=0.0):
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert str(ours.dtype).replace("minilora.", "") == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol)


# ---- torch.histogram (makemore part 3 plots the activations' histogram) ------------------------------
_DATA = np.array([0.1, 0.2, 0.30000001, 0.9999999, 1.0, 2.0, -0.5, np.nan, 0.7, 0.7], dtype=np.float32)


@pytest.mark.parametrize("args, kwargs", [
    ((10,), {"range": (0.0, 1.0)}),           # values on the edges: torch's guess corrected by its neighbours
    ((), {"bins": 3, "range": [0, 3]}),
    ((7,), {"range": (-1.0, 2.0), "density": True}),
    ((4,), {"range": (0.0, 1.0), "weight": "w"}),
    ((4,), {"range": (0.0, 1.0), "weight": "w", "density": True}),
    (("edges",), {}),                          # a tensor of edges: a binary search
    (("edges",), {"weight": "w", "density": True}),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_histogram_matches_torch(args, kwargs, dtype):
    def call(lib):
        data = lib.tensor(_DATA.astype(dtype))
        edges = lib.tensor(np.array([0.0, 0.2, 0.7, 1.0], dtype=dtype))
        weight = lib.tensor(np.linspace(0.5, 1.5, _DATA.size).astype(dtype))
        a = tuple(edges if v == "edges" else v for v in args)
        kw = {k: (weight if v == "w" else v) for k, v in kwargs.items()}
        return lib.histogram(data, *a, **kw), data.histogram(*a, **kw)
    (ours, ours_method), (theirs, _) = call(minilora), call(torch)
    for mine in (ours, ours_method):
        _same(mine.hist, theirs.hist, rtol=1e-6)
        _same(mine.bin_edges, theirs.bin_edges)
        _same(mine[0], theirs[0], rtol=1e-6)  # a tuple too


@pytest.mark.parametrize("values, bins", [
    ([2.0, 2.0, 2.0], 2),       # one value: widened by 0.5 each way (histc widens by 1)
    ([], 2),                    # no data: the range [0, 1]
    ([3.0, -1.0, 0.5], 5),      # the data's min..max
])
def test_histogram_default_range(values, bins):
    ours = minilora.histogram(minilora.tensor(values), bins, density=True)
    theirs = torch.histogram(torch.tensor(values), bins, density=True)
    _same(ours.bin_edges, theirs.bin_edges)
    _same(ours.hist, theirs.hist, rtol=1e-6)


def test_histogram_of_many_values_counts_as_torch():
    values = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    for bins in (1, 13, 100):
        ours = minilora.histogram(minilora.tensor(values), bins)
        theirs = torch.histogram(torch.tensor(values), bins)
        _same(ours.hist, theirs.hist)  # whole counts: exact
        _same(ours.bin_edges, theirs.bin_edges)


def test_histogram_of_a_tensor_requiring_grad():
    """Karpathy plots hy.detach(): the results require grad (torch's node raises in backward)."""
    for lib in (minilora, torch):
        hist, edges = lib.histogram(lib.tensor([0.1, 0.5, 0.9], requires_grad=True).tanh(), 4)
        assert hist.requires_grad and edges.requires_grad
        with pytest.raises(RuntimeError, match="derivative for aten::histogram is not implemented"):
            hist.sum().backward()
        with lib.no_grad():
            assert not lib.histogram(lib.tensor([0.1], requires_grad=True), 2).hist.requires_grad


@pytest.mark.parametrize("call, error", [
    (lambda lib: lib.histogram(lib.arange(3), 2), NotImplementedError),
    (lambda lib: lib.histogram(lib.ones(3, dtype=lib.float16), 2), NotImplementedError),
    (lambda lib: lib.histogram(lib.ones(3), 0), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), lib.tensor([1.0])), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, range=(1.0, 0.0)), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, range=(0.0, math.inf)), RuntimeError),
    (lambda lib: lib.histogram(lib.tensor([1.0, math.nan]), 2), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), lib.tensor([0.0, 1.0], dtype=lib.float64)), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, weight=lib.ones(2)), RuntimeError),
    (lambda lib: lib.histogram(lib.ones(3), 2, weight=lib.ones(3, dtype=lib.float64)), RuntimeError),
])
def test_histogram_refusals_as_torch(call, error):
    with pytest.raises(error) as theirs:
        call(torch)
    with pytest.raises(error) as ours:
        call(minilora)
    assert str(ours.value).split(":")[0] == str(theirs.value).split(":")[0]
    assert str(ours.value) == str(theirs.value)


# ---- '%.4f' % loss: torch's warning, once per process ------------------------------------------------
def test_float_of_a_tensor_requiring_grad_warns_once_as_torch(monkeypatch):
    """Raschka's and Karpathy's loops print ``'%.4f' % loss`` (float(loss)): torch warns, once."""
    import warnings
    import sys
    monkeypatch.setattr(sys.modules["minilora.tensor"], "_warned_scalar_of_grad_tensor", False)
    loss = (minilora.ones(3, requires_grad=True) * 2).sum()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert f"{loss:.1f}" == "6.0" and loss.item() == 6.0 and int(loss) == 6  # none of these warn
        assert not caught
        assert "%.2f" % loss == "6.00"
        assert len(caught) == 1 and caught[0].category is UserWarning
        assert str(caught[0].message).startswith(
            "Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.\n"
            "Consider using tensor.detach() first.")
        assert caught[0].filename == __file__  # the user's line
        float(loss), float(loss.detach()), float(minilora.ones(()))
        assert len(caught) == 1  # once per process, as torch's TORCH_WARN_ONCE


# ---- makemore: bigram counts and sampling with its own Generator -------------------------------------
_WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"]


def _bigram(torch):
    chars = sorted(set("".join(_WORDS)))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    N = torch.zeros((len(stoi), len(stoi)), dtype=torch.int32)
    for w in _WORDS:
        chs = ["."] + list(w) + ["."]
        for ch1, ch2 in zip(chs, chs[1:]):
            N[stoi[ch1], stoi[ch2]] += 1
    P = (N + 1).float()
    P /= P.sum(1, keepdims=True)
    g = torch.Generator().manual_seed(2147483647)
    names = []
    for _ in range(5):
        out, ix = [], 0
        while True:
            ix = torch.multinomial(P[ix], num_samples=1, replacement=True, generator=g).item()
            out.append(ix)
            if ix == 0:
                break
        names.append(out)
    W = torch.randn((len(stoi), len(stoi)), generator=g, requires_grad=True)
    xs = torch.tensor([stoi[c] for w in _WORDS for c in "." + w])
    ys = torch.tensor([stoi[c] for w in _WORDS for c in w + "."])
    losses = []
    for _ in range(5):
        counts = (torch.nn.functional.one_hot(xs, num_classes=len(stoi)).float() @ W).exp()
        probs = counts / counts.sum(1, keepdims=True)
        loss = -probs[torch.arange(xs.nelement()), ys].log().mean() + 0.01 * (W ** 2).mean()
        W.grad = None
        loss.backward()
        W.data += -50 * W.grad
        losses.append(loss.item())
    return N.numpy(), names, losses


def test_makemore_bigram_as_torch():
    (n_ours, names_ours, losses_ours), (n_theirs, names_theirs, losses_theirs) = _bigram(minilora), _bigram(torch)
    np.testing.assert_array_equal(n_ours, n_theirs)
    assert names_ours == names_theirs
    np.testing.assert_allclose(losses_ours, losses_theirs, rtol=1e-5)


# ---- makemore part 5: WaveNet from its own classes, part 3's histogram of the activations --------------
def _wavenet(torch):
    F = torch.nn.functional

    class Linear:
        def __init__(self, fan_in, fan_out, bias=True):
            self.weight = torch.randn((fan_in, fan_out)) / fan_in ** 0.5
            self.bias = torch.zeros(fan_out) if bias else None

        def __call__(self, x):
            self.out = x @ self.weight
            if self.bias is not None:
                self.out += self.bias
            return self.out

        def parameters(self):
            return [self.weight] + ([] if self.bias is None else [self.bias])

    class BatchNorm1d:
        def __init__(self, dim, eps=1e-5, momentum=0.1):
            self.eps, self.momentum, self.training = eps, momentum, True
            self.gamma, self.beta = torch.ones(dim), torch.zeros(dim)
            self.running_mean, self.running_var = torch.zeros(dim), torch.ones(dim)

        def __call__(self, x):
            if self.training:
                dim = 0 if x.ndim == 2 else (0, 1)
                xmean, xvar = x.mean(dim, keepdim=True), x.var(dim, keepdim=True)
            else:
                xmean, xvar = self.running_mean, self.running_var
            self.out = self.gamma * (x - xmean) / torch.sqrt(xvar + self.eps) + self.beta
            if self.training:
                with torch.no_grad():
                    self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                    self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
            return self.out

        def parameters(self):
            return [self.gamma, self.beta]

    class Tanh:
        def __call__(self, x):
            self.out = torch.tanh(x)
            return self.out

        def parameters(self):
            return []

    class Embedding:
        def __init__(self, num_embeddings, embedding_dim):
            self.weight = torch.randn((num_embeddings, embedding_dim))

        def __call__(self, IX):
            self.out = self.weight[IX]
            return self.out

        def parameters(self):
            return [self.weight]

    class FlattenConsecutive:
        def __init__(self, n):
            self.n = n

        def __call__(self, x):
            B, T, C = x.shape
            x = x.view(B, T // self.n, C * self.n)
            self.out = x.squeeze(1) if x.shape[1] == 1 else x
            return self.out

        def parameters(self):
            return []

    torch.manual_seed(42)
    X, Y = torch.randint(0, 27, (200, 8)), torch.randint(0, 27, (200,))
    layers = [Embedding(27, 10), FlattenConsecutive(2), Linear(20, 24, bias=False), BatchNorm1d(24), Tanh(),
              FlattenConsecutive(2), Linear(48, 24, bias=False), BatchNorm1d(24), Tanh(),
              FlattenConsecutive(2), Linear(48, 24, bias=False), BatchNorm1d(24), Tanh(), Linear(24, 27)]
    with torch.no_grad():
        layers[-1].weight *= 0.1
    parameters = [p for layer in layers for p in layer.parameters()]
    for p in parameters:
        p.requires_grad = True
    losses = []
    for i in range(15):
        ix = torch.randint(0, X.shape[0], (16,))
        x = X[ix]
        for layer in layers:
            x = layer(x)
        loss = F.cross_entropy(x, Y[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        for p in parameters:
            p.data += -0.1 * p.grad
        losses.append(loss.log10().item())
    hy, hx = torch.histogram(layers[4].out, density=True)
    return losses, hy.detach().numpy(), hx.detach().numpy(), layers[3].running_var.numpy()


def test_makemore_wavenet_as_torch():
    ours, theirs = _wavenet(minilora), _wavenet(torch)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-4)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-3, atol=1e-4)
    for mine, its in zip(ours[2:], theirs[2:]):
        np.testing.assert_allclose(mine, its, rtol=1e-4, atol=1e-6)


# ---- what torch tells a tutorial's user: size-mismatch and deprecation warnings -----------------------
def _warnings_of(call):
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [(w.category, str(w.message).replace("torch.Size", "minilora.Size")) for w in caught], caught


@pytest.mark.parametrize("loss", ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"])
@pytest.mark.parametrize("as_module", [False, True])
def test_loss_of_a_column_against_a_row_warns_as_torch(loss, as_module):
    """"Learning PyTorch with examples" flattens its [N, 1] output (Flatten(0, 1)) because MSELoss of [N, 1]
    against [N] broadcasts to an N x N loss: torch warns; minilora was silent for mse_loss and l1_loss."""
    modules = {"mse_loss": "MSELoss", "l1_loss": "L1Loss", "smooth_l1_loss": "SmoothL1Loss", "huber_loss": "HuberLoss"}
    def call(lib):
        prediction = lib.tensor([[0.5], [1.5], [3.0]], requires_grad=True)
        fn = getattr(lib.nn, modules[loss])() if as_module else getattr(lib.nn.functional, loss)
        out = fn(prediction, lib.tensor([1.0, 2.0, 3.0]))
        out.backward()
        return out, prediction.grad
    (ours, ours_grad), ours_warned, caught = _warnings_of(lambda: call(minilora))
    (theirs, theirs_grad), theirs_warned, _ = _warnings_of(lambda: call(torch))
    assert ours_warned == theirs_warned and len(ours_warned) == 1
    assert caught[0].filename == __file__  # the user's line, not minilora's
    _same(ours, theirs, rtol=1e-6)
    _same(ours_grad, theirs_grad, rtol=1e-6)


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_binary_losses_refuse_a_mismatched_target_naming_sizes_as_torch(loss):
    messages = []
    for lib in (torch, minilora):
        with pytest.raises(ValueError) as error:
            getattr(lib.nn.functional, loss)(lib.full((4, 1), 0.5), lib.ones(4))
        messages.append(str(error.value).replace("minilora.Size", "torch.Size"))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("make", [
    lambda lib: lib.nn.MSELoss(size_average=False)(lib.ones(2), lib.zeros(2)),
    lambda lib: lib.nn.CrossEntropyLoss(reduce=False)(lib.ones(2, 3), lib.tensor([0, 2])),
    lambda lib: lib.nn.functional.nll_loss(lib.ones(2, 3), lib.tensor([0, 2]), size_average=True, reduce=True),
    lambda lib: lib.nn.functional.mse_loss(lib.ones(2), lib.zeros(2), reduce=False),
])
def test_size_average_and_reduce_warn_naming_the_reduction_as_torch(make):
    ours, ours_warned, _ = _warnings_of(lambda: make(minilora))
    theirs, theirs_warned, _ = _warnings_of(lambda: make(torch))
    assert ours_warned == theirs_warned and len(ours_warned) == 1
    _same(ours, theirs)


def test_tensor_of_a_tensor_warns_as_torch():
    for make in (lambda lib, t: lib.tensor(t), lambda lib, t: lib.tensor(t, dtype=lib.float64)):
        ours, ours_warned, caught = _warnings_of(lambda: make(minilora, minilora.ones(2, requires_grad=True)))
        theirs, theirs_warned, _ = _warnings_of(lambda: make(torch, torch.ones(2, requires_grad=True)))
        assert ours_warned == [(UserWarning, m.replace("torch.tensor(", "minilora.tensor(")) for _, m in
                               theirs_warned] or ours_warned == theirs_warned
        assert len(ours_warned) == 1 and caught[0].filename == __file__
        assert not ours.requires_grad and not theirs.requires_grad
    for lib in (minilora, torch):  # lists of tensors, arrays, as_tensor: no warning
        quiet = [lambda: lib.tensor([lib.ones(()), lib.ones(())]), lambda: lib.tensor(np.ones(2)),
                 lambda: lib.as_tensor(lib.ones(2))]
        for call in quiet:
            assert _warnings_of(call)[1] == []


@pytest.mark.parametrize("name, args", [
    ("normal", (0.0, 0.02)), ("uniform", (-0.1, 0.1)), ("constant", (0.3,)), ("xavier_uniform", ()),
    ("xavier_normal", ()), ("kaiming_uniform", ()), ("kaiming_normal", ()), ("orthogonal", ()), ("eye", ()),
    ("sparse", (0.5,)),
])
def test_old_init_names_work_and_warn_as_torch(name, args):
    def call(lib):
        lib.manual_seed(3)
        return getattr(lib.nn.init, name)(lib.empty(4, 3), *args)
    ours, ours_warned, caught = _warnings_of(lambda: call(minilora))
    theirs, theirs_warned, _ = _warnings_of(lambda: call(torch))
    assert ours_warned == theirs_warned and ours_warned[0][0] is FutureWarning
    assert caught[0].filename == __file__
    _same(ours, theirs, rtol=1e-6)


def test_clip_grad_norm_old_name_as_torch():
    def call(lib):
        w = lib.nn.Parameter(lib.tensor([3.0, 4.0]))
        (w * lib.tensor([1.0, 2.0])).sum().backward()
        return lib.nn.utils.clip_grad_norm([w], 1.0), w.grad
    (ours, ours_grad), ours_warned, _ = _warnings_of(lambda: call(minilora))
    (theirs, theirs_grad), theirs_warned, _ = _warnings_of(lambda: call(torch))
    assert ours_warned == theirs_warned and ours_warned[0][0] is FutureWarning
    _same(ours, theirs, rtol=1e-6)
    _same(ours_grad, theirs_grad, rtol=1e-6)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_dropout_on_a_one_layer_rnn_warns_as_torch(kind):
    """(The word-language-model and seq2seq tutorials pass dropout to their RNNs.)"""
    _, ours, caught = _warnings_of(lambda: getattr(minilora.nn, kind)(4, 8, dropout=0.2))
    _, theirs, _ = _warnings_of(lambda: getattr(torch.nn, kind)(4, 8, dropout=0.2))
    assert ours == theirs and len(ours) == 1 and caught[0].filename == __file__
    for lib in (minilora, torch):
        assert _warnings_of(lambda: getattr(lib.nn, kind)(4, 8, 2, dropout=0.2))[1] == []


# ---- the legacy typed constructors (PyTorch's "NLP from scratch" tutorials: torch.LongTensor(indexes)) ------
_TYPES = ["FloatTensor", "DoubleTensor", "HalfTensor", "ByteTensor", "CharTensor", "ShortTensor", "IntTensor",
          "LongTensor", "BoolTensor"]


@pytest.mark.parametrize("name", _TYPES)
@pytest.mark.parametrize("args", [([1, 0, 3],), ([[1.5, 2.7]],), (2, 3), (3,), (), ("size",)])
def test_legacy_tensor_types_construct_as_torch(name, args):
    def make(lib):
        a = tuple(lib.Size([2, 1]) if v == "size" else v for v in args)
        return getattr(lib, name)(*a)
    ours, theirs = make(minilora), make(torch)
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    if args and isinstance(args[0], list):  # (sizes: torch leaves the memory uninitialised)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_legacy_tensor_types_check_and_share_as_torch():
    for lib in (minilora, torch):
        x = lib.ones(3)
        assert isinstance(x, lib.FloatTensor) and not isinstance(x, lib.LongTensor)
        assert isinstance(x.long(), lib.LongTensor) and not isinstance(3, lib.LongTensor)
        shared = lib.FloatTensor(x)  # the same storage
        shared[0] = 5
        assert x[0].item() == 5
        with pytest.raises(TypeError):
            lib.LongTensor(x)
        assert tuple(lib.Tensor(lib.Size([4, 2])).shape) == (4, 2)  # a Size is a size
        assert x.type() == "torch.FloatTensor" and lib.FloatTensor.dtype == lib.float32


# ---- torch 0.3-era tutorials: Variable, and loss.data[0] (now torch's pointer to item()) ---------------
def _old_two_layer_net(torch):
    Variable = torch.autograd.Variable  # (from torch.autograd import Variable, for either library)
    torch.manual_seed(0)
    x = Variable(torch.randn(16, 8))
    y = Variable(torch.randn(16, 2), requires_grad=False)
    w1 = Variable(torch.randn(8, 12), requires_grad=True)
    w2 = Variable(torch.randn(12, 2), requires_grad=True)
    losses = []
    for t in range(5):
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        w1.data -= 1e-3 * w1.grad.data
        w2.data -= 1e-3 * w2.grad.data
        w1.grad.data.zero_()
        w2.grad.data.zero_()
    assert isinstance(loss, Variable) and w1.is_leaf and not x.requires_grad
    with pytest.raises(IndexError) as error:
        loss.data[0]
    return losses, str(error.value)


def test_variable_era_tutorial_as_torch():
    (ours, ours_error), (theirs, theirs_error) = _old_two_layer_net(minilora), _old_two_layer_net(torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert ours_error == theirs_error  # "invalid index of a 0-dim tensor. Use `tensor.item()` ..."


def test_variable_as_torch():
    for lib in (minilora, torch):
        x = lib.ones(2)
        v = lib.autograd.Variable(x, requires_grad=True)
        assert v is not x and v.requires_grad and not x.requires_grad and v.is_leaf
        v.data[0] = 3  # the same values
        assert x[0].item() == 3
        assert tuple(lib.autograd.Variable().shape) == (0,)
        with pytest.raises(TypeError, match="Variable data has to be a tensor, but got list"):
            lib.autograd.Variable([1.0])
    _, ours, _ = _warnings_of(lambda: minilora.autograd.Variable(minilora.ones(1), volatile=True))
    _, theirs, _ = _warnings_of(lambda: torch.autograd.Variable(torch.ones(1), volatile=True))
    assert ours == theirs and len(ours) == 1


@pytest.mark.parametrize("shape, index", [((), 0), ((), (0, 0)), ((), "tensor0"), ((2,), (0, 0)), ((2, 3), (0, 1, 0))])
def test_too_many_indices_in_torch_words(shape, index):
    messages = []
    for lib in (torch, minilora):
        x = lib.ones(shape)
        i = lib.tensor(0) if index == "tensor0" else index
        with pytest.raises(IndexError) as error:
            x[i]
        messages.append(str(error.value))
        if shape == () and index == 0:
            with pytest.raises(IndexError) as error:
                x[i] = 2.0
            messages.append(str(error.value))
    assert messages[:len(messages) // 2] == messages[len(messages) // 2:]


# ---- print(torch.max(outputs, 1)): the named tuples print (and pickle) as torch's --------------------------
@pytest.mark.parametrize("call", [
    lambda lib: lib.max(lib.tensor([[1.0, 3.0], [4.0, 2.0]]), 1),
    lambda lib: lib.tensor([3.0, 1.0, 2.0]).sort(descending=True),
    lambda lib: lib.tensor([3.0, 1.0, 2.0]).topk(2),
    lambda lib: lib.aminmax(lib.tensor([3.0, 1.0])),
    lambda lib: lib.histogram(lib.tensor([1.0, 2.0]), 2),
    lambda lib: lib.linalg.slogdet(lib.eye(2)),
])
def test_return_types_print_and_pickle_as_torch(call):
    import pickle
    ours, theirs = call(minilora), call(torch)
    assert repr(ours) == repr(theirs).replace("torch.return_types.", "minilora.return_types.")
    assert str(ours) == repr(ours)
    again = pickle.loads(pickle.dumps(ours))
    assert type(again) is type(ours) and repr(again) == repr(ours)


# ---- "Building makemore part 4: becoming a backprop ninja": dhpreact = (1 - h**2) * dh is *not* exact ----
@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tanh_and_sigmoid_gradients_round_as_torch(name, dtype):
    """torch's tanh_backward rounds 1 - y*y once (a fused multiply-add) and sigmoid_backward computes
    (g * (1 - y)) * y: where the forward values agree, the gradients must agree bit for bit."""
    values = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 2
    grads = np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    def run(lib):
        x = lib.tensor(values).to(getattr(lib, dtype)).requires_grad_()
        y = getattr(x, name)()
        y.backward(lib.tensor(grads).to(getattr(lib, dtype)))
        return y.detach().float().numpy(), x.grad.float().numpy()
    (ours_y, ours_g), (theirs_y, theirs_g) = run(minilora), run(torch)
    same_forward = ours_y == theirs_y
    assert same_forward.mean() > 0.4
    np.testing.assert_array_equal(ours_g[same_forward], theirs_g[same_forward])


@pytest.mark.parametrize("dtype", ["uint8", "int64", "float32", "float16"])
@pytest.mark.parametrize("call", [
    lambda lib, mask: lib.zeros(3).masked_fill_(mask, 1.0),
    lambda lib, mask: lib.zeros(3).masked_fill(mask, 1.0),
    lambda lib, mask: lib.zeros(3).masked_scatter_(mask, lib.ones(3)),
])
def test_a_non_bool_mask_is_refused_in_torch_words(dtype, call):
    """(Old tutorials build masks as uint8: torch names the mask's type, 'unsigned char' / 'Byte'.)"""
    import warnings
    messages = []
    for lib in (torch, minilora):
        with pytest.raises(RuntimeError) as error, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(lib, lib.tensor([1, 0, 1]).to(getattr(lib, dtype)))
        messages.append(str(error.value))
    assert messages[0] == messages[1]
