"""Three tutorial scripts, ported line by line, run side by side with torch (h67).

1. PyTorch's "Learn the Basics" quickstart (an MLP classifier, on synthetic data instead of
   FashionMNIST): a ``Dataset`` subclass, ``DataLoader(batch_size, shuffle, drop_last)``, ``train()`` /
   ``eval()``, ``loss.item()``, ``no_grad()``, the accuracy sum, saving and loading the state_dict.
2. A nanoGPT / makemore-style character LM: ``manual_seed``, ``randint`` batches, ``cross_entropy`` on
   ``view(-1, C)``, AdamW, ``multinomial`` sampling, ``cat`` in a loop.
3. The ``nn.Module`` API tour: buffers, traversal, ``apply``, state_dict keys, ``load_state_dict``'s
   result, forward and *backward* hooks with their return-value rules, casts, modes, containers, reprs.

Each snippet is written once, the way a torch user writes it, and run with ``lib = torch`` and with
``lib = minilora``; weights are copied from torch where values are compared. Random streams differ
(minilora draws NumPy's), so random draws are compared by dtype, shape, range and distribution only.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
from test_torch_conformance import check, expect_error, run_both  # noqa: E402
from test_torch_conformance_module import names  # noqa: E402
from test_torch_conformance_r3_tensor import REFUSED, torch_result  # noqa: E402


def f64(lib, array, grad=False):
    return lib.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad)


def rounded(x):
    """A tensor (or None, or a tuple of them) as nested lists rounded to 9 places, for hook logs."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(rounded(v) for v in x)
    return np.round(x.detach().numpy().astype(np.float64), 9).tolist()


def _assert_close(theirs, ours, rtol, where=""):
    """``_plain`` results compared as ``check`` does, but floats (float32 training runs) to ``rtol``."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: {ours} vs {theirs}"
        for i, (a, b) in enumerate(zip(theirs, ours)):
            _assert_close(a, b, rtol, f"{where}[{i}]")
    elif isinstance(theirs, tuple) and theirs and theirs[0] == "tensor":
        assert isinstance(ours, tuple) and ours[0] == "tensor", f"{where}: got {ours!r}"
        assert (ours[1], ours[2].shape) == (theirs[1], theirs[2].shape), f"{where}: {ours[1:]} vs {theirs[1:]}"
        np.testing.assert_allclose(ours[2], theirs[2], rtol=rtol, atol=rtol, err_msg=where)
    elif isinstance(theirs, float):
        assert type(ours) is float and ours == pytest.approx(theirs, rel=rtol, abs=rtol), f"{where}: {ours} vs {theirs}"
    else:
        assert ours == theirs, f"{where}: {ours!r}, torch {theirs!r}"


def check_close(snippet, rtol=2e-5):
    theirs, ours = run_both(snippet)
    _assert_close(theirs, ours, rtol, snippet.__name__)


def copy_weights(lib, model, weights):
    """Load torch's initial weights (NumPy arrays by name) into ``model``: the same numbers on both sides."""
    model.load_state_dict({name: lib.tensor(array) for name, array in weights.items()})


# ---- 1. the quickstart ------------------------------------------------------------------------------
DATA_RNG = np.random.default_rng(67)
IMAGES = DATA_RNG.standard_normal((136, 1, 28, 28)).astype(np.float32)  # FashionMNIST's shape, made up
LABELS = DATA_RNG.integers(0, 10, 136)


def quickstart_network(lib):
    """The quickstart's NeuralNetwork, with the same initial weights in both libraries."""
    nn = lib.nn

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28 * 28, 512),
                nn.ReLU(),
                nn.Linear(512, 512),
                nn.ReLU(),
                nn.Linear(512, 10),
            )

        def forward(self, x):
            x = self.flatten(x)
            logits = self.linear_relu_stack(x)
            return logits
    return NeuralNetwork


_QUICKSTART_WEIGHTS = {}


def quickstart_weights():
    if not _QUICKSTART_WEIGHTS:
        torch.manual_seed(0)
        model = quickstart_network(torch)()
        _QUICKSTART_WEIGHTS.update({k: v.numpy().copy() for k, v in model.state_dict().items()})
    return _QUICKSTART_WEIGHTS


def synthetic_images(lib):
    class SyntheticImages(lib.utils.data.Dataset):  # in place of datasets.FashionMNIST(transform=ToTensor())
        def __init__(self, start, stop):
            self.images, self.img_labels = IMAGES[start:stop], LABELS[start:stop]

        def __len__(self):
            return len(self.img_labels)

        def __getitem__(self, idx):
            return lib.tensor(self.images[idx]), int(self.img_labels[idx])
    return SyntheticImages(0, 96), SyntheticImages(96, 136)


def test_quickstart_line_by_line(tmp_path):
    def snippet(lib):
        torch = lib  # noqa: F811 -- the tutorial's own spelling from here on
        from_lib = torch.utils.data
        DataLoader, nn = from_lib.DataLoader, torch.nn
        training_data, test_data = synthetic_images(lib)
        record = []
        batch_size = 32
        train_dataloader = DataLoader(training_data, batch_size=batch_size, drop_last=True)
        test_dataloader = DataLoader(test_data, batch_size=batch_size)
        for X, y in test_dataloader:
            record += [tuple(X.shape), X.dtype, tuple(y.shape), y.dtype]
            break
        record += [len(train_dataloader), len(test_dataloader), len(train_dataloader.dataset)]
        device = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cpu"
        record.append(f"Using {device} device")
        model = quickstart_network(lib)().to(device)
        copy_weights(lib, model, quickstart_weights())
        record.append(repr(model))
        loss_fn = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

        def train(dataloader, model, loss_fn, optimizer):
            size = len(dataloader.dataset)
            model.train()
            for batch, (X, y) in enumerate(dataloader):
                X, y = X.to(device), y.to(device)
                pred = model(X)
                loss = loss_fn(pred, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                loss, current = loss.item(), (batch + 1) * len(X)
                record.append(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]"[:12])
                record.append(loss)

        def test(dataloader, model, loss_fn):
            size = len(dataloader.dataset)
            num_batches = len(dataloader)
            model.eval()
            test_loss, correct = 0, 0
            with torch.no_grad():
                for X, y in dataloader:
                    X, y = X.to(device), y.to(device)
                    pred = model(X)
                    test_loss += loss_fn(pred, y).item()
                    correct += (pred.argmax(1) == y).type(torch.float).sum().item()
            test_loss /= num_batches
            correct /= size
            record.extend([type(correct).__name__, correct, test_loss, model.training])

        for t in range(2):
            train(train_dataloader, model, loss_fn, optimizer)
            test(test_dataloader, model, loss_fn)
        path = tmp_path / f"model_{lib.__name__}.pth"
        torch.save(model.state_dict(), path)
        model = quickstart_network(lib)()
        record.append(repr(model.load_state_dict(torch.load(path, weights_only=True))))
        model.eval()
        x, y = test_data[0][0], test_data[0][1]
        with torch.no_grad():
            x = x.to(device)
            pred = model(x)
            predicted, actual = pred[0].argmax(0), y
            record += [tuple(pred.shape), int(predicted), actual, f'Predicted: "{predicted}", Actual: "{actual}"']
        return record
    check_close(snippet)


def test_default_collate_rules_as_torch():
    """What a batch is made of, sample type by sample type (torch's default_collate)."""
    from collections import namedtuple
    Point = namedtuple("Point", "x y")

    def snippet(lib):
        data = lib.utils.data
        samples = {
            "tensor": [lib.tensor([1.0, 2.0]), lib.tensor([3.0, 4.0])],
            "int": [1, 2], "float": [0.5, 1.5], "bool": [True, False],
            "numpy float32": [np.float32(1.5), np.float32(2.5)], "numpy int32": [np.int32(1), np.int32(2)],
            "numpy array": [np.arange(3, dtype=np.float32), np.ones(3, dtype=np.float32)],
            "str": ["a", "b"],
            "tuple": [(lib.tensor([1]), 0.5, "x"), (lib.tensor([2]), 1.5, "y")],
            "list": [[1, 2], [3, 4]],
            "dict": [{"ids": lib.tensor([1, 2]), "label": 0}, {"ids": lib.tensor([3, 4]), "label": 1}],
            "namedtuple": [Point(1, 2.0), Point(3, 4.0)],
        }
        out = []
        for name, batch in samples.items():
            collated = data.default_collate(batch)
            shown = [[k, v] for k, v in collated.items()] if isinstance(collated, dict) else collated
            out.append((name, type(collated).__name__, shown))
        out.append(data.default_convert(np.float32(2.0)))
        out.append(data.default_convert((np.arange(2), 3)))
        return out
    check(snippet)

    def ragged_lists(lib):
        lib.utils.data.default_collate([[1, 2], [3]])
    expect_error(ragged_lists)

    def ragged_tensors(lib):
        lib.utils.data.default_collate([lib.zeros(2), lib.zeros(3)])
    expect_error(ragged_tensors)


def test_dataloader_options_as_torch():
    def snippet(lib):
        data = lib.utils.data
        x = lib.arange(10.0).reshape(5, 2)
        ds = data.TensorDataset(x, lib.arange(5))
        out = [len(ds), ds[1], ds[-1]]
        for kwargs in ({}, {"batch_size": 2}, {"batch_size": 2, "drop_last": True}, {"batch_size": None},
                       {"batch_size": 3, "shuffle": False, "num_workers": 0},
                       {"batch_sampler": [[4, 0], [1]]}, {"sampler": [3, 1, 2], "batch_size": 2},
                       {"batch_size": 2, "collate_fn": lambda batch: len(batch)}):
            loader = data.DataLoader(ds, **kwargs)
            out.append((sorted(k for k in kwargs if k != "collate_fn"), list(loader), loader.batch_size,
                        loader.drop_last))
            if not isinstance(kwargs.get("sampler"), list):
                out.append(len(loader))
        subset = data.Subset(ds, [4, 2])
        out += [len(subset), subset[0], list(data.DataLoader(subset, batch_size=5))]
        both = ds + subset
        out += [len(both), both[5], both[-1], type(both).__name__]
        return out
    check(snippet)


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"batch_size": -1}, {"batch_size": 2.0}, {"batch_size": 2, "drop_last": 1},
    {"shuffle": True, "sampler": [0, 1]}, {"batch_sampler": [[0]], "batch_size": 2},
    {"batch_sampler": [[0]], "drop_last": True}, {"batch_size": None, "drop_last": True},
    {"num_workers": -1}, {"timeout": -1}, {"prefetch_factor": 2}, {"persistent_workers": True}])
def test_dataloader_refuses_what_torch_refuses(kwargs):
    def snippet(lib):
        ds = lib.utils.data.TensorDataset(lib.arange(4))
        list(lib.utils.data.DataLoader(ds, **kwargs))
    expect_error(snippet)


def test_shuffle_is_a_fresh_permutation_each_epoch_and_follows_manual_seed():
    """Random streams differ from torch's; what must hold: each epoch visits every sample once, epochs
    differ, manual_seed (or generator=) replays the order, drop_last drops the short batch."""
    from minilora.utils.data import DataLoader, TensorDataset
    ds = TensorDataset(ml.arange(50))

    def epochs(loader, n=3):
        return [ml.cat([b for (b,) in loader]).tolist() for _ in range(n)]
    ml.manual_seed(3)
    first = epochs(DataLoader(ds, batch_size=8, shuffle=True))
    assert all(sorted(e) == list(range(50)) for e in first) and first[0] != first[1] != first[2]
    ml.manual_seed(3)
    assert epochs(DataLoader(ds, batch_size=8, shuffle=True)) == first
    g = ml.Generator().manual_seed(5)
    seeded = epochs(DataLoader(ds, batch_size=8, shuffle=True, generator=g), 1)
    assert epochs(DataLoader(ds, batch_size=8, shuffle=True, generator=ml.Generator().manual_seed(5)), 1) == seeded
    dropped = DataLoader(ds, batch_size=8, shuffle=True, drop_last=True)
    assert len(dropped) == 6 and [len(b) for (b,) in dropped] == [8] * 6


def test_random_split_lengths_and_fractions():
    def snippet(lib):
        data = lib.utils.data
        ds = data.TensorDataset(lib.arange(10))
        out = []
        for lengths in ([7, 3], [0.5, 0.5], [0.33, 0.33, 0.34], [0.1, 0.9], [10, 0]):
            parts = data.random_split(ds, lengths)
            out.append(([len(p) for p in parts], type(parts[0]).__name__,
                        sorted(int(i) for p in parts for (i,) in p) == list(range(10))))
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(snippet)

    def wrong_sum(lib):
        lib.utils.data.random_split(lib.utils.data.TensorDataset(lib.arange(10)), [3, 3])
    expect_error(wrong_sum)


def test_iterable_dataset_batches_as_torch():
    def snippet(lib):
        data = lib.utils.data

        class Stream(data.IterableDataset):
            def __iter__(self):
                return iter(range(7))
        return [list(data.DataLoader(Stream(), batch_size=3)),
                list(data.DataLoader(Stream(), batch_size=3, drop_last=True)),
                list(data.DataLoader(Stream(), batch_size=None))]
    check(snippet)

    def shuffled_stream(lib):
        class Stream(lib.utils.data.IterableDataset):
            def __iter__(self):
                return iter(range(7))
        lib.utils.data.DataLoader(Stream(), shuffle=True)
    expect_error(shuffled_stream)


def test_tensor_dataset_size_mismatch_and_bare_dataset():
    def mismatch(lib):
        lib.utils.data.TensorDataset(lib.zeros(3), lib.zeros(4))
    expect_error(mismatch)

    def bare(lib):
        lib.utils.data.Dataset()[0]
    expect_error(bare)


def test_minilora_data_loader_refuses_features_instead_of_truncating_them():
    """minilora.data.DataLoader (the token-id loader) given (features, label) samples, as a torch user
    would write DataLoader(dataset, batch_size): it truncated the float features to integers and
    broadcast the label along the row. Now a TypeError names minilora.utils.data.DataLoader."""
    from minilora.data import DataLoader
    samples = [(ml.tensor([0.5, 1.7, -2.2]), 1) for _ in range(4)]
    with pytest.raises(TypeError, match="minilora.utils.data.DataLoader"):
        next(iter(DataLoader(samples, batch_size=2)))
    with pytest.raises(TypeError, match="length 2"):
        next(iter(DataLoader([([1, 2], [3])], batch_size=1)))


# ---- 3. backward hooks ------------------------------------------------------------------------------
class _TwoOutputs:
    """A module with a tensor input, a number input and two outputs (one of them a plain sum)."""

    @staticmethod
    def make(lib):
        class TwoOutputs(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = lib.nn.Linear(3, 2, dtype=lib.float64)
                with lib.no_grad():
                    self.lin.weight.copy_(f64(lib, np.arange(6.0).reshape(2, 3) / 10))
                    self.lin.bias.zero_()

            def forward(self, x, scale):
                return self.lin(x) * scale, (x * 2).sum()
        return TwoOutputs()


def test_full_backward_hook_sees_grads_and_may_replace_grad_input():
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []

        def pre(module, grad_output):
            log.append(("pre", rounded(grad_output)))

        def full(module, grad_input, grad_output):
            log.append(("full", rounded(grad_input), rounded(grad_output)))
            return (grad_input[0] * 10, None)  # one entry per positional input (3.0 gets None)
        m.register_full_backward_pre_hook(pre)
        handle = m.register_full_backward_hook(full)
        x = f64(lib, [[1.0, 2.0, 3.0]], grad=True)
        out, total = m(x, 3.0)
        (out.sum() + total).backward()
        return [log, x.grad, m.lin.weight.grad, type(handle).__name__]
    check(snippet)


def test_backward_pre_hook_replaces_grad_output_and_handles_remove():
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []
        m.register_full_backward_pre_hook(lambda module, go: (go[0] * 0 + 1, None))
        gone = m.register_full_backward_hook(lambda module, gi, go: log.append("removed hook ran"))
        gone.remove()
        x = f64(lib, [[1.0, 2.0, 3.0]], grad=True)
        out, _ = m(x, 1.0)
        (out * 5).sum().backward()
        return [x.grad, m.lin.weight.grad, log]
    check(snippet)


def test_full_backward_hook_when_no_input_requires_grad_fires_at_the_outputs():
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []
        m.register_full_backward_hook(lambda module, gi, go: log.append((rounded(gi), rounded(go))))
        out, _ = m(f64(lib, [[1.0, 2.0, 3.0]]), 2.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out.sum().backward()
        return [log, [w.category.__name__ for w in caught]]
    check(snippet)


def test_full_backward_hooks_in_a_sequential_run_outputs_first_with_shapes():
    def snippet(lib):
        lib.manual_seed(0)
        seq = lib.nn.Sequential(lib.nn.Linear(3, 3), lib.nn.Tanh(), lib.nn.Linear(3, 1))
        log = []
        for i, child in enumerate(seq):
            child.register_full_backward_hook(
                lambda module, gi, go, i=i: log.append((i, [None if g is None else tuple(g.shape) for g in gi],
                                                        [tuple(g.shape) for g in go])))
        x = lib.ones(4, 3, requires_grad=True)
        seq(x).sum().backward()
        emb = lib.nn.Embedding(5, 2)  # an integer input: its grad_input is None
        emb.register_full_backward_hook(lambda module, gi, go: log.append(("emb", gi, tuple(go[0].shape))))
        emb(lib.tensor([1, 2])).sum().backward()
        return log
    check(snippet)


def test_backward_hook_wrong_length_and_no_grad():
    def wrong_length(lib):
        layer = lib.nn.Linear(3, 2)
        layer.register_full_backward_hook(lambda module, gi, go: (gi[0], gi[0]))
        layer(lib.ones(1, 3, requires_grad=True)).sum().backward()
    expect_error(wrong_length)

    def wrong_pre_length(lib):
        layer = lib.nn.Linear(3, 2)
        layer.register_full_backward_pre_hook(lambda module, go: (go[0], go[0]))
        layer(lib.ones(1, 3, requires_grad=True)).sum().backward()
    expect_error(wrong_pre_length)

    def under_no_grad(lib):
        log = []
        layer = lib.nn.Linear(3, 2)
        layer.register_full_backward_hook(lambda *args: log.append("ran"))
        with lib.no_grad():
            y = layer(lib.ones(1, 3, requires_grad=True))
        return [y.requires_grad, log]
    check(under_no_grad)


def test_forward_hooks_still_see_the_args_and_backward_hooks_keep_values():
    """A forward hook and a backward hook on one module: the forward hook's replacement output is the
    one whose gradient the backward hooks see, and the module's numbers do not change."""
    def snippet(lib):
        m, log = _TwoOutputs.make(lib), []
        m.register_forward_hook(lambda module, args, out: (out[0] * 2, out[1]))
        m.register_full_backward_pre_hook(lambda module, go: log.append(rounded(go)))
        x = f64(lib, [[1.0, -2.0, 0.5]], grad=True)
        out, total = m(x, 1.5)
        (out ** 2).sum().backward()
        return [out, total, x.grad, log]
    check(snippet)


# ---- 3. the nn.Module API tour ----------------------------------------------------------------------
def tour_net(lib):
    """A model with what the tour visits: buffers (persistent, not, integer), a ModuleList, a
    ModuleDict, a Sequential registered under two names, a weight tied between two modules, an
    extra_repr."""
    nn = lib.nn

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc = nn.Linear(d, d)
            self.norm = nn.LayerNorm(d)
            self.register_buffer("running", lib.zeros(d))
            self.register_buffer("cache", lib.ones(d), persistent=False)
            self.register_buffer("count", lib.tensor(0))

        def forward(self, x):
            return self.norm(self.fc(x)) + self.running

        def extra_repr(self):
            return f"d={self.fc.in_features}"

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.blocks = nn.ModuleList([Block(4) for _ in range(2)])
            self.heads = nn.ModuleDict({"a": nn.Linear(4, 10, bias=False), "b": nn.Identity()})
            self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(0.1), nn.Linear(4, 4))
            self.heads["a"].weight = self.emb.weight  # tied, as a language model's head
            self.alias = self.seq

        def forward(self, idx):
            x = self.emb(idx)
            for block in self.blocks:
                x = block(x)
            return self.heads["a"](self.seq(x))
    return Net()


def test_tour_traversal_names_and_state_dict_keys():
    def snippet(lib):
        net = tour_net(lib)
        return [repr(net),
                names(net.named_modules()), names(net.named_modules(remove_duplicate=False)),
                names(net.named_modules(prefix="m")), names(net.named_children()),
                names(net.named_parameters()), names(net.named_parameters(prefix="model")),
                names(net.named_parameters(recurse=False)), names(net.blocks[0].named_parameters("x", False)),
                names(net.named_parameters(remove_duplicate=False)), len(list(net.parameters())),
                sum(p.numel() for p in net.parameters()), names(net.named_buffers()),
                names(net.named_buffers(remove_duplicate=False)), list(net.state_dict().keys()),
                list(net.state_dict(prefix="p.").keys()), [type(m).__name__ for m in net.modules()],
                [type(m).__name__ for m in net.children()]]
    check(snippet)


def test_tour_apply_init_fn_order_and_result():
    def snippet(lib):
        net, order = tour_net(lib), []

        def init_weights(m):
            order.append(type(m).__name__)
            if isinstance(m, lib.nn.Linear):
                lib.nn.init.constant_(m.weight, 0.5)
                if m.bias is not None:
                    lib.nn.init.zeros_(m.bias)
        returned = net.apply(init_weights)
        return [returned is net, order, net.seq[0].weight, net.seq[0].bias, net.emb.weight.sum().item()]
    check(snippet)


def test_tour_load_state_dict_strict_false_result():
    def snippet(lib):
        net = tour_net(lib)
        sd = {k: v.clone() for k, v in net.state_dict().items()}
        del sd["blocks.0.fc.bias"]
        sd["extra.w"] = lib.zeros(2)
        result = net.load_state_dict(sd, strict=False)
        missing, unexpected = result
        return [repr(result), str(result), type(result).__name__, isinstance(result, tuple), result._fields,
                missing, unexpected, result.missing_keys, repr(net.load_state_dict(net.state_dict()))]
    check(snippet)

    def strict(lib):
        net = tour_net(lib)
        sd = dict(net.state_dict())
        del sd["emb.weight"]
        net.load_state_dict(sd)
    expect_error(strict)

    def wrong_shape_even_if_not_strict(lib):
        net = tour_net(lib)
        net.load_state_dict({"emb.weight": lib.zeros(3, 3)}, strict=False)
    expect_error(wrong_shape_even_if_not_strict)


def test_tour_forward_hooks_return_values():
    def snippet(lib):
        net, log = tour_net(lib), []
        torch.manual_seed(1)  # torch's initial weights, the same for both runs
        copy_weights(lib, net, {k: v.numpy() for k, v in tour_net(torch).state_dict().items()})

        def pre(module, args):
            log.append(("pre", type(args).__name__, len(args)))
            return (args[0] * 2,)

        def post(module, args, output):
            log.append(("post", tuple(output.shape)))
            return output * 3

        def pre_not_a_tuple(module, args):
            return args[0] * 0  # a single value is wrapped into a 1-tuple
        idx = lib.tensor([[1, 2, 3]])
        net.eval()
        plain = net(idx)
        handles = [net.blocks[0].register_forward_pre_hook(pre), net.blocks[0].register_forward_hook(post)]
        hooked = net(idx)
        for h in handles:
            h.remove()
        with net.blocks[1].fc.register_forward_pre_hook(pre_not_a_tuple):
            zeroed = net(idx)
        return [log, plain, hooked, zeroed, net(idx)]
    check_close(snippet, rtol=1e-5)


def test_tour_casts_modes_and_gradients():
    def snippet(lib):
        net = tour_net(lib)
        block = net.blocks[0]
        out = [block.fc.weight.dtype, block.count.dtype]
        for cast in (lambda m: m.to(lib.float64), lambda m: m.half(), lambda m: m.bfloat16(),
                     lambda m: m.double(), lambda m: m.float(), lambda m: m.to(dtype=lib.float16),
                     lambda m: m.to("cpu", lib.float64), lambda m: m.to(lib.zeros(1, dtype=lib.float16)),
                     lambda m: m.type(lib.float64)):
            returned = cast(block)
            out.append((returned is block, block.fc.weight.dtype, block.running.dtype, block.cache.dtype,
                        block.count.dtype, type(block.fc.weight).__name__, block.fc.weight.requires_grad))
        net.float()
        net.requires_grad_(False)
        out.append([p.requires_grad for p in net.parameters()])
        out.append(net.requires_grad_() is net)
        net(lib.tensor([[1, 2]])).sum().backward()
        out.append(net.emb.weight.grad is not None)
        net.zero_grad()
        out.append(net.emb.weight.grad)
        net(lib.tensor([[1, 2]])).sum().backward()
        net.zero_grad(set_to_none=False)
        out.append(net.emb.weight.grad.abs().sum().item())
        out.append((net.train(False) is net, net.training, net.seq[2].training))
        net.train()
        out.append((net.training, net.blocks[1].norm.training))
        return out
    check(snippet)

    def int_dtype(lib):
        tour_net(lib).to(lib.int32)
    expect_error(int_dtype)


def test_tour_containers_indexing_and_slicing():
    def snippet(lib):
        net = tour_net(lib)
        seq, blocks, heads = net.seq, net.blocks, net.heads
        return [type(seq[0]).__name__, type(seq[-1]).__name__, type(seq[1:3]).__name__, repr(seq[1:3]),
                len(seq), len(seq[::2]), [type(m).__name__ for m in seq[::-1]], seq[1:3][0] is seq[1],
                type(blocks[0:1]).__name__, len(blocks[0:1]), blocks[-1] is blocks[1], repr(blocks[0:1]),
                list(heads.keys()), type(heads["b"]).__name__, "a" in heads, len(heads),
                [k for k, _ in heads.items()], repr(heads),
                net.get_submodule("blocks.0.fc") is blocks[0].fc, net.get_submodule("") is net,
                tuple(net.get_parameter("blocks.1.norm.weight").shape), tuple(net.get_buffer("blocks.0.running").shape)]
    check(snippet)
    for bad in (lambda lib: tour_net(lib).seq[10], lambda lib: tour_net(lib).blocks[-3],
                lambda lib: tour_net(lib).heads["c"], lambda lib: tour_net(lib).get_submodule("blocks.5"),
                lambda lib: tour_net(lib).get_submodule("nope"), lambda lib: tour_net(lib).get_parameter("blocks.0.running"),
                lambda lib: tour_net(lib).get_parameter("blocks.0.fc.nope"), lambda lib: tour_net(lib).get_buffer("emb.weight")):
        expect_error(bad)


def test_tour_tied_weights_counted_once_and_reprs():
    def snippet(lib):
        nn = lib.nn
        tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        tied[1].weight = tied[0].weight

        class NoExtra(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(lib.zeros(2))

        class TwoLines(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = nn.Linear(1, 1)

            def extra_repr(self):
                return "first\nsecond"
        return [len(list(tied.parameters())), list(tied.state_dict().keys()), names(tied.named_parameters()),
                names(tied.named_parameters(remove_duplicate=False)),
                repr(nn.Linear(3, 4, bias=False)), repr(nn.Embedding(3, 4, padding_idx=0)),
                repr(nn.LayerNorm(4, eps=1e-6)), repr(nn.Dropout(0.5)), repr(nn.GELU(approximate="tanh")),
                repr(nn.ModuleList()), repr(nn.Sequential()), repr(nn.ModuleDict()),
                repr(nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])),
                repr(nn.Sequential(*[nn.ReLU() for _ in range(4)])), repr(NoExtra()), repr(TwoLines()),
                repr(nn.Parameter(lib.zeros(2))), type(nn.Parameter(lib.zeros(2))).__name__]
    check(snippet)


# ---- 2. a character-level language model (nanoGPT / makemore) ----------------------------------------
TEXT = "hello world, this is a tiny corpus for a character level language model. " * 8
BLOCK_SIZE, N_EMBD = 8, 16


def char_lm(lib):
    nn, F = lib.nn, lib.nn.functional
    chars = sorted(list(set(TEXT)))
    vocab_size = len(chars)

    class BigramLanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding_table = nn.Embedding(vocab_size, N_EMBD)
            self.position_embedding_table = nn.Embedding(BLOCK_SIZE, N_EMBD)
            self.ln_f = nn.LayerNorm(N_EMBD)
            self.lm_head = nn.Linear(N_EMBD, vocab_size)
            self.register_buffer("tril", lib.tril(lib.ones(BLOCK_SIZE, BLOCK_SIZE)))

        def forward(self, idx, targets=None):
            B, T = idx.shape
            tok_emb = self.token_embedding_table(idx)
            pos_emb = self.position_embedding_table(lib.arange(T, device=idx.device))
            x = tok_emb + pos_emb
            wei = x @ x.transpose(-2, -1) * N_EMBD ** -0.5
            wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
            wei = F.softmax(wei, dim=-1)
            logits = self.lm_head(self.ln_f(wei @ x))
            if targets is None:
                loss = None
            else:
                B, T, C = logits.shape
                logits = logits.view(B * T, C)
                targets = targets.view(B * T)
                loss = F.cross_entropy(logits, targets)
            return logits, loss

        def generate(self, idx, max_new_tokens):
            for _ in range(max_new_tokens):
                idx_cond = idx[:, -BLOCK_SIZE:]
                logits, loss = self(idx_cond)
                logits = logits[:, -1, :]
                probs = F.softmax(logits, dim=-1)
                idx_next = lib.multinomial(probs, num_samples=1)
                idx = lib.cat((idx, idx_next), dim=1)
            return idx
    return chars, BigramLanguageModel


def test_char_lm_training_loop_line_by_line():
    """Same weights and the same batches (torch's, copied): the logits, the losses of AdamW steps and
    estimate_loss's means agree; then sampling (each library's own random stream) agrees in shape,
    dtype and vocabulary."""
    torch.manual_seed(1337)
    _, torch_model = char_lm(torch)
    weights = {k: v.numpy().copy() for k, v in torch_model().state_dict().items()}
    data = torch.tensor([sorted(set(TEXT)).index(c) for c in TEXT], dtype=torch.long)
    batches = []
    for _ in range(4):
        ix = torch.randint(len(data) - BLOCK_SIZE, (4,))
        batches.append((torch.stack([data[i:i + BLOCK_SIZE] for i in ix]).numpy(),
                        torch.stack([data[i + 1:i + BLOCK_SIZE + 1] for i in ix]).numpy()))

    def snippet(lib):
        lib.manual_seed(1337)
        chars, BigramLanguageModel = char_lm(lib)
        stoi = {ch: i for i, ch in enumerate(chars)}
        itos = {i: ch for i, ch in enumerate(chars)}
        encode = lambda s: [stoi[c] for c in s]  # noqa: E731
        decode = lambda l: "".join([itos[i] for i in l])  # noqa: E731
        data = lib.tensor(encode(TEXT), dtype=lib.long)
        n = int(0.9 * len(data))
        train_data = data[:n]

        def get_batch():
            ix = lib.randint(len(train_data) - BLOCK_SIZE, (4,))
            x = lib.stack([train_data[i:i + BLOCK_SIZE] for i in ix])
            y = lib.stack([train_data[i + 1:i + BLOCK_SIZE + 1] for i in ix])
            return x, y
        xb, yb = get_batch()
        record = [data.dtype, tuple(data.shape), xb.dtype, tuple(xb.shape), bool((xb[:, 1:] == yb[:, :-1]).all())]
        model = BigramLanguageModel()
        copy_weights(lib, model, weights)
        record.append(list(model.state_dict().keys()))
        record.append(sum(p.numel() for p in model.parameters()) / 1e6)

        @lib.no_grad()
        def estimate_loss():
            model.eval()
            losses = lib.zeros(len(batches))
            for k, (X, Y) in enumerate(batches):
                logits, loss = model(lib.tensor(X), lib.tensor(Y))
                losses[k] = loss.item()
            model.train()
            return losses.mean()
        record.append(estimate_loss())
        optimizer = lib.optim.AdamW(model.parameters(), lr=1e-2)
        for X, Y in batches:
            logits, loss = model(lib.tensor(X), lib.tensor(Y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            record += [tuple(logits.shape), logits.dtype, loss.item()]
        record.append(estimate_loss())
        context = lib.zeros((1, 1), dtype=lib.long)
        out = model.generate(context, max_new_tokens=20)
        text = decode(out[0].tolist())
        record += [tuple(out.shape), out.dtype, type(out[0].tolist()[0]).__name__, len(text), set(text) <= set(chars)]
        return record
    check_close(snippet, rtol=1e-5)


def test_makemore_sampling_draws_as_torch_in_distribution():
    """multinomial with a Generator, replacement, and one-hot inputs: dtypes and shapes as torch's;
    the frequencies of many draws match the probabilities (the streams themselves differ)."""
    def snippet(lib):
        F = lib.nn.functional
        g = lib.Generator().manual_seed(2147483647)
        p = lib.tensor([0.1, 0.2, 0.7])
        one = lib.multinomial(p, num_samples=1, replacement=True, generator=g)
        many = lib.multinomial(p, 30000, replacement=True, generator=g)
        freqs = lib.bincount(many, minlength=3).float() / 30000
        rows = lib.multinomial(lib.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), 1)
        no_repeat = lib.multinomial(lib.tensor([1.0, 1.0, 1.0, 1.0]), 4).sort().values
        W = lib.randn((27, 27), generator=g, requires_grad=True)
        xenc = F.one_hot(lib.tensor([1, 2, 3]), num_classes=27).float()
        ints = lib.randint(3, 10, (2000,), generator=g)
        return [one.dtype, tuple(one.shape), type(one.item()).__name__, many.dtype,
                bool((freqs - p).abs().max() < 0.02), rows, no_repeat, W.dtype, W.is_leaf,
                xenc.dtype, tuple(xenc.shape), ints.dtype, ints.min().item(), ints.max().item(),
                lib.randint(10, (2,)).dtype, lib.randn(2, 3).dtype, lib.rand(2).dtype]
    check(snippet)


# ---- seeds (minilora/random.py) ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 7, -1, -5, -2**63, 2**64 - 1, 2**63])
def test_manual_seed_accepts_what_torch_accepts_and_returns_the_default_generator(seed):
    def snippet(lib):
        returned = lib.manual_seed(seed)
        g = lib.Generator().manual_seed(seed)
        return [returned is lib.default_generator, returned.initial_seed(), lib.initial_seed(), g.initial_seed()]
    check(snippet)


@pytest.mark.parametrize("seed", [2**64, -2**63 - 1])
def test_manual_seed_refuses_seeds_torch_refuses(seed):
    expect_error(lambda lib: lib.manual_seed(seed))
    expect_error(lambda lib: lib.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [np.int64(3), "11", 2.0, True, np.float64(2.0)])
def test_manual_seed_takes_what_int_takes(seed):
    check(lambda lib: [lib.manual_seed(seed).initial_seed(), lib.initial_seed()])


def test_seed_draws_a_fresh_seed_and_uses_it():
    """torch.seed() / Generator.seed(): a non-deterministic 64-bit seed, returned and then in force."""
    def snippet(lib):
        first, g = lib.seed(), lib.Generator()
        own = g.seed()
        return [type(first).__name__, 0 <= first < 2**64, lib.initial_seed() == first, g.initial_seed() == own,
                type(own).__name__]
    check(snippet)
    ml.manual_seed(0)
    a = ml.rand(3)
    ml.manual_seed(ml.initial_seed())
    assert ml.rand(3).tolist() == a.tolist()


@pytest.mark.parametrize("seed", [np.int64(3), "11", 2.0, True, np.float64(2.0)])
def test_generator_manual_seed_takes_only_a_python_int_as_torch(seed):
    expect_error(lambda lib: lib.Generator().manual_seed(seed))


# ---- torch.accelerator (the quickstart's first line) -------------------------------------------------
def test_accelerator_without_a_gpu_answers_as_torch_on_a_cpu_machine():
    def snippet(lib):
        acc = lib.accelerator
        device = acc.current_accelerator().type if acc.is_available() else "cpu"
        return [device, acc.is_available(), acc.current_accelerator(), acc.device_count()]
    check(snippet)
    expect_error(lambda lib: lib.accelerator.current_device_index())
    expect_error(lambda lib: lib.accelerator.synchronize())


def test_accelerator_with_the_cuda_stand_in_names_cuda(monkeypatch):
    import fake_cupy
    fake_cupy.install(monkeypatch)
    assert ml.accelerator.is_available() and ml.accelerator.current_accelerator().type == "cuda"
    assert ml.accelerator.device_count() >= 1 and ml.accelerator.current_device_index() == 0
    ml.accelerator.synchronize()


# ---- torch.utils.data, generated --------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 8])
@pytest.mark.parametrize("batch_size", [1, 3, 8, None])
@pytest.mark.parametrize("drop_last", [False, True])
def test_dataloader_batches_and_len_sweep(n, batch_size, drop_last):
    def snippet(lib):
        data = lib.utils.data
        ds = data.TensorDataset(lib.arange(float(n)).reshape(n, 1), lib.arange(n))
        loader = data.DataLoader(ds, batch_size=batch_size, drop_last=drop_last)
        return [len(loader), list(loader), [len(b[0]) if batch_size else 1 for b in loader]]
    if batch_size is None and drop_last:
        expect_error(snippet)
    else:
        check(snippet)


@pytest.mark.parametrize("name", ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset",
                                  "random_split", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
                                  "BatchSampler", "WeightedRandomSampler", "DistributedSampler", "DataLoader", "default_collate",
                                  "default_convert"])
def test_utils_data_signatures_are_torchs(name):
    import inspect
    import torch.utils.data as theirs
    from minilora.utils import data as ours
    signature = lambda obj: [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]  # noqa: E731
    theirs_sig, ours_sig = signature(getattr(theirs, name)), signature(getattr(ours, name))
    if name == "random_split":  # torch's default is its default_generator; minilora's None means the same
        theirs_sig = [(n, k, None if n == "generator" else d) for n, k, d in theirs_sig]
    assert ours_sig == theirs_sig


LAYERS_WITH_HOOKS = {  # name: (constructor, input shape)
    "Linear": (lambda nn: nn.Linear(4, 3), (2, 4)),
    "Conv2d": (lambda nn: nn.Conv2d(2, 3, 3, padding=1), (1, 2, 5, 5)),
    "LayerNorm": (lambda nn: nn.LayerNorm(4), (2, 4)),
    "GELU": (lambda nn: nn.GELU(), (2, 4)),
    "Dropout(eval)": (lambda nn: nn.Dropout(0.5).eval(), (2, 4)),
    "Sequential": (lambda nn: nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), (3, 4)),
    "MultiheadAttention": (lambda nn: nn.MultiheadAttention(4, 2, batch_first=True), (2, 3, 4)),
    "LSTM": (lambda nn: nn.LSTM(4, 3, batch_first=True), (2, 3, 4)),
}


@pytest.mark.parametrize("name", list(LAYERS_WITH_HOOKS))
def test_backward_hooks_on_each_layer_as_torch(name):
    """Both backward hooks on a layer (multi-output ones too: attention's (output, weights), the
    LSTM's (output, (h, c))): what they see, and the input's gradient after a hook doubles it."""
    make, shape = LAYERS_WITH_HOOKS[name]
    torch.manual_seed(0)
    weights = {k: v.numpy().copy() for k, v in make(torch.nn).double().state_dict().items()}
    x_values = np.random.default_rng(1).standard_normal(shape)

    def snippet(lib):
        layer = make(lib.nn).double()
        copy_weights(lib, layer, weights)
        log = []

        def pre(module, grad_output):
            log.append(("pre", rounded(tuple(g for g in grad_output if isinstance(g, lib.Tensor)))))

        def full(module, grad_input, grad_output):
            log.append(("full", rounded(grad_input)))
            return tuple(None if g is None else 2 * g for g in grad_input)
        layer.register_full_backward_pre_hook(pre)
        layer.register_full_backward_hook(full)
        x = f64(lib, x_values, grad=True)
        out = layer(x, x, x) if name == "MultiheadAttention" else layer(x)
        first = out[0] if isinstance(out, tuple) else out
        (first ** 2).sum().backward()
        return [log, x.grad]
    check_close(snippet, rtol=1e-9)


# ---- copy.deepcopy(model): the "best model so far" snapshot -----------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_deepcopy_of_a_trained_model_copies_values_not_gradients(dtype):
    """torch's Parameter.__deepcopy__ makes a new Parameter from the values (same requires_grad); the
    gradient stays behind. minilora copied .grad along (a snapshot kept gradients, and memory)."""
    import copy

    def snippet(lib):
        model = lib.nn.Sequential(lib.nn.Linear(2, 2), lib.nn.Linear(2, 1)).to(getattr(lib, dtype))
        model[0].bias.requires_grad_(False)
        with lib.no_grad():
            for p in model.parameters():
                p.copy_(lib.arange(p.numel()).reshape(p.shape))
        model(lib.ones(1, 2, dtype=getattr(lib, dtype))).sum().backward()
        best = copy.deepcopy(model)
        return [[(type(p).__name__, p.dtype, p.requires_grad, p.grad, p is q) for p, q in
                 zip(best.parameters(), model.parameters())], list(best.state_dict().items())]
    check(snippet)


def test_deepcopy_keeps_tied_parameters_tied():
    import copy

    def snippet(lib):
        model = lib.nn.Sequential(lib.nn.Linear(2, 2), lib.nn.Linear(2, 2))
        model[1].weight = model[0].weight
        best = copy.deepcopy(model)
        return [best[0].weight is best[1].weight, len(list(best.parameters()))]
    check(snippet)


def test_weighted_random_sampler_as_torch_in_distribution():
    def snippet(lib):
        data = lib.utils.data
        weights = [0.1, 0.0, 0.9]
        sampler = data.WeightedRandomSampler(weights, 20000)
        draws = list(sampler)
        loader = data.DataLoader(data.TensorDataset(lib.arange(3)), batch_size=4,
                                 sampler=data.WeightedRandomSampler(weights, 10, replacement=True))
        unique = sorted(data.WeightedRandomSampler([1, 1, 1], 3, replacement=False))
        return [len(sampler), type(draws[0]).__name__, draws.count(1), abs(draws.count(2) / 20000 - 0.9) < 0.02,
                sampler.weights.dtype, len(loader), [len(b) for (b,) in loader], unique, data.get_worker_info()]
    check(snippet)
    for bad in (lambda lib: lib.utils.data.WeightedRandomSampler([1.0], 0),
                lambda lib: lib.utils.data.WeightedRandomSampler([1.0], 2, replacement=1),
                lambda lib: lib.utils.data.WeightedRandomSampler([[1.0]], 2)):
        expect_error(bad)


def test_backward_hooks_on_identity_and_on_a_module_called_twice():
    def snippet(lib):
        log = []
        ident = lib.nn.Identity()
        ident.register_full_backward_hook(lambda m, gi, go: log.append(("id", rounded(gi), rounded(go))))
        layer = lib.nn.Linear(2, 2, bias=False, dtype=lib.float64)
        with lib.no_grad():
            layer.weight.copy_(f64(lib, [[1.0, 2.0], [3.0, 4.0]]))
        layer.register_full_backward_hook(lambda m, gi, go: log.append(("lin", rounded(gi), rounded(go))))
        x = f64(lib, [[1.0, -1.0]], grad=True)
        y = layer(layer(ident(x)))  # the same module twice: each call's hooks see their own gradients
        (y * f64(lib, [[1.0, 10.0]])).sum().backward()
        return [log, x.grad]
    check(snippet)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool"])
def test_default_collate_keeps_numpy_dtypes(dtype):
    """Images as uint8 arrays, masks as bool, features as float16...: the batch keeps the sample's dtype
    (arrays and NumPy scalars alike), as torch's."""
    def snippet(lib):
        collate = lib.utils.data.default_collate
        arrays = [np.arange(4).reshape(2, 2).astype(dtype), np.ones((2, 2), dtype=dtype)]
        scalars = [np.arange(2).astype(dtype)[1], np.ones(1, dtype=dtype)[0]]
        return [collate(arrays), collate(scalars), collate([(a, s) for a, s in zip(arrays, scalars)])]
    check(snippet)


@pytest.mark.parametrize("device", ["emu", "cuda"])
def test_backward_hooks_on_the_other_devices(device, monkeypatch):
    """The gate nodes make their zeros with the device's array library (CuPy on cuda: the stand-in)."""
    if device == "cuda":
        import fake_cupy
        fake_cupy.install(monkeypatch)
    layer = ml.nn.Linear(3, 2).to(device)
    log = []
    layer.register_full_backward_pre_hook(lambda m, go: log.append(go[0].device.type))
    layer.register_full_backward_hook(lambda m, gi, go: (log.append(gi[0].device.type), (gi[0] * 2,))[1])
    x = ml.ones(2, 3, requires_grad=True, device=device)
    layer(x).sum().backward()
    expected = 2 * layer.weight.sum(0, keepdim=True).expand(2, 3)
    assert log == [device, device] and ml.allclose(x.grad, expected)


@pytest.mark.parametrize("n", [5, 8, 2])
@pytest.mark.parametrize("replicas", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_sampler_without_shuffle_gives_torchs_indices(n, replicas, drop_last):
    def snippet(lib):
        data = lib.utils.data
        ds = data.TensorDataset(lib.arange(n))
        samplers = [data.DistributedSampler(ds, num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last)
                    for r in range(replicas)]
        loaders = [data.DataLoader(ds, batch_size=2, sampler=s) for s in samplers]
        return [[list(s) for s in samplers], [len(s) for s in samplers], [len(ld) for ld in loaders],
                [samplers[0].num_samples, samplers[0].total_size]]
    check(snippet)


def test_distributed_sampler_shuffles_per_epoch_and_refuses_as_torch():
    from minilora.utils.data import DistributedSampler, TensorDataset
    ds = TensorDataset(ml.arange(10))
    ranks = [DistributedSampler(ds, num_replicas=3, rank=r, seed=4) for r in range(3)]
    epoch0 = [list(s) for s in ranks]
    assert sorted(sum(epoch0, [])) != list(range(10)) and set(sum(epoch0, [])) == set(range(10))  # 12: padded
    assert [list(s) for s in ranks] == epoch0  # no set_epoch: the same order again, as torch
    for s in ranks:
        s.set_epoch(1)
    assert [list(s) for s in ranks] != epoch0
    expect_error(lambda lib: lib.utils.data.DistributedSampler(lib.utils.data.TensorDataset(lib.arange(4))))
    expect_error(lambda lib: lib.utils.data.DistributedSampler(lib.utils.data.TensorDataset(lib.arange(4)),
                                                               num_replicas=2, rank=2))


# ---- "Build the Neural Network": printing a ReLU's output ---------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("spelling", ["nn.ReLU", "F.relu", "torch.relu", "Tensor.relu"])
def test_relu_of_negatives_is_plus_zero_as_torch(dtype, spelling):
    """The tutorial prints ``After ReLU: tensor([[0., 0., ...`` -- minilora printed ``[[-0., -0., ...``:
    its ReLU multiplied by the mask, and -2 * 0 is -0.0 (1 / relu(x) was -inf where torch gives inf).
    torch's ReLU is clamp_min: a negative becomes +0, -0.0 and NaN stay."""
    values = [-2.0, -0.5, -0.0, 0.0, 3.0, float("nan")]

    def snippet(lib):
        x = lib.tensor(values, dtype=getattr(lib, dtype), requires_grad=True)
        y = {"nn.ReLU": lambda: lib.nn.ReLU()(x), "F.relu": lambda: lib.nn.functional.relu(x),
             "torch.relu": lambda: lib.relu(x), "Tensor.relu": lambda: x.relu()}[spelling]()
        y.sum().backward()
        return [y, lib.signbit(y.float()) if hasattr(lib, "signbit") else (y.float() < 0) | (1 / y.float() < 0),
                x.grad, repr(y.detach().float()[:4])]
    check(snippet)


# ---- save / load of a state_dict keeps its order -------------------------------------------------------
@pytest.mark.parametrize("to_memory", [False, True])
def test_a_saved_state_dict_loads_back_in_the_models_order(tmp_path, to_memory):
    """torch.load gives the keys in the order state_dict() had them (buffers of a module before its
    children's parameters, weight before bias). minilora's plain safetensors file came back sorted
    ('0.bias' before '0.weight'), so code zipping the loaded items with model.parameters() paired the
    wrong tensors, silently."""
    import io

    def snippet(lib):
        model = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.LayerNorm(3), lib.nn.Linear(3, 1))
        model.register_buffer("z_first", lib.ones(1))
        target = io.BytesIO() if to_memory else tmp_path / f"{lib.__name__}.pth"
        lib.save(model.state_dict(), target)
        if to_memory:
            target.seek(0)
        loaded = lib.load(target, weights_only=True)
        return [list(loaded.keys()), [tuple(v.shape) for v in loaded.values()]]
    check(snippet)


def test_a_state_dict_with_tied_weights_loads_back_in_order(tmp_path):
    def snippet(lib):
        model = lib.nn.Sequential(lib.nn.Embedding(4, 2), lib.nn.Linear(2, 4, bias=False), lib.nn.LayerNorm(4),
                                  lib.nn.Linear(2, 4, bias=False))
        model[3].weight = model[0].weight  # the LM head tied to the embedding, after a norm
        lib.save(model.state_dict(), tmp_path / f"tied_{lib.__name__}.pth")
        loaded = lib.load(tmp_path / f"tied_{lib.__name__}.pth", weights_only=True)
        return [list(loaded.keys()), loaded["0.weight"] is loaded["3.weight"]]
    check(snippet)


# ---- nanoGPT's model.py, line by line ------------------------------------------------------------------
def nanogpt(lib, flash):
    """karpathy/nanoGPT's model.py (its prints left out), for ``lib``; ``flash``: the
    scaled_dot_product_attention path, else the masked-softmax one."""
    import inspect
    import math
    from dataclasses import dataclass
    torch, nn, F = lib, lib.nn, lib.nn.functional  # noqa: F811 -- nanoGPT's spelling

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)
    class CausalSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.n_embd % config.n_head == 0
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
            self.attn_dropout = nn.Dropout(config.dropout)
            self.resid_dropout = nn.Dropout(config.dropout)
            self.n_head = config.n_head; self.n_embd = config.n_embd; self.dropout = config.dropout
            self.flash = hasattr(torch.nn.functional, 'scaled_dot_product_attention') and flash
            if not self.flash:
                self.register_buffer("bias", torch.tril(torch.ones(config.block_size, config.block_size)).view(1, 1, config.block_size, config.block_size))
        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            if self.flash:
                y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0, is_causal=True)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
                att = att.masked_fill(self.bias[:,:,:T,:T] == 0, float('-inf'))
                att = F.softmax(att, dim=-1)
                att = self.attn_dropout(att)
                y = att @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            y = self.resid_dropout(self.c_proj(y))
            return y
    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
            self.dropout = nn.Dropout(config.dropout)
        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))
    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
            self.attn = CausalSelfAttention(config)
            self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config)
        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
            return x
    @dataclass
    class GPTConfig:
        block_size: int = 16
        vocab_size: int = 50
        n_layer: int = 2
        n_head: int = 2
        n_embd: int = 16
        dropout: float = 0.0
        bias: bool = True
    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.transformer = nn.ModuleDict(dict(
                wte = nn.Embedding(config.vocab_size, config.n_embd),
                wpe = nn.Embedding(config.block_size, config.n_embd),
                drop = nn.Dropout(config.dropout),
                h = nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f = LayerNorm(config.n_embd, bias=config.bias),
            ))
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith('c_proj.weight'):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02/math.sqrt(2 * config.n_layer))
        def get_num_params(self, non_embedding=True):
            n_params = sum(p.numel() for p in self.parameters())
            if non_embedding:
                n_params -= self.transformer.wpe.weight.numel()
            return n_params
        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        def forward(self, idx, targets=None):
            device = idx.device
            b, t = idx.size()
            assert t <= self.config.block_size
            pos = torch.arange(0, t, dtype=torch.long, device=device)
            tok_emb = self.transformer.wte(idx)
            pos_emb = self.transformer.wpe(pos)
            x = self.transformer.drop(tok_emb + pos_emb)
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            else:
                logits = self.lm_head(x[:, [-1], :])
                loss = None
            return logits, loss
        def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
            param_dict = {pn: p for pn, p in self.named_parameters()}
            param_dict = {pn: p for pn, p in param_dict.items() if p.requires_grad}
            decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
            nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
            optim_groups = [{'params': decay_params, 'weight_decay': weight_decay}, {'params': nodecay_params, 'weight_decay': 0.0}]
            fused_available = 'fused' in inspect.signature(torch.optim.AdamW).parameters
            use_fused = fused_available and device_type == 'cuda'
            extra_args = dict(fused=True) if use_fused else dict()
            optimizer = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)
            return optimizer
        @torch.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
            for _ in range(max_new_tokens):
                idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('Inf')
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)
                idx = torch.cat((idx, idx_next), dim=1)
            return idx
    return GPT, GPTConfig


@pytest.mark.parametrize("flash", [True, False])
def test_nanogpt_model_trains_and_generates_as_torch(flash):
    torch.manual_seed(1337)
    GPT, GPTConfig = nanogpt(torch, flash)
    weights = {k: v.numpy().copy() for k, v in GPT(GPTConfig()).state_dict().items()}
    rng = np.random.default_rng(0)
    X, Y = rng.integers(0, 50, (4, 16)), rng.integers(0, 50, (4, 16))

    def snippet(lib):
        GPT, GPTConfig = nanogpt(lib, flash)
        lib.manual_seed(1337)
        model = GPT(GPTConfig())
        record = [list(model.state_dict().keys()), model.get_num_params(),
                  repr(model.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})),
                  model.transformer.wte.weight is model.lm_head.weight]
        optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
        record.append([[p.shape for p in g["params"]] for g in optimizer.param_groups])
        for _ in range(3):
            logits, loss = model(lib.tensor(X), lib.tensor(Y))
            loss.backward()
            record.append(lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            record += [loss.item(), logits]
        model.eval()
        out = model.generate(lib.zeros((1, 1), dtype=lib.long), 10, temperature=0.8, top_k=5)
        record += [tuple(out.shape), out.dtype, model(lib.tensor(X))[0]]
        return record
    check_close(snippet, rtol=2e-5)


def test_default_collate_keeps_the_mapping_type():
    def snippet(lib):
        from collections import OrderedDict
        batch = lib.utils.data.default_collate([OrderedDict(b=1, a=2.0), OrderedDict(b=3, a=4.0)])
        return [type(batch).__name__, list(batch.items())]
    check(snippet)


# ---- model.double() and a float32 batch: the norms refuse mixed dtypes as torch -------------------------
NORM_CALLS = {
    "layer_norm": lambda F, x, p: F.layer_norm(x[:, :, 0], (4,), p(1.0), p(0.0)),
    "group_norm": lambda F, x, p: F.group_norm(x, 2, p(1.0), p(0.0)),
    "batch_norm(training)": lambda F, x, p: F.batch_norm(x, p(0.0), p(1.0), p(1.0), p(0.0), training=True),
    "batch_norm(eval)": lambda F, x, p: F.batch_norm(x, p(0.0), p(1.0), p(1.0), p(0.0)),
    "batch_norm(statistics only)": lambda F, x, p: F.batch_norm(x, p(0.0), p(1.0)),
}


@pytest.mark.parametrize("call", list(NORM_CALLS))
@pytest.mark.parametrize("x_dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("p_dtype", ["float16", "bfloat16", "float32", "float64"])
def test_norms_take_the_parameter_dtypes_torch_takes(call, x_dtype, p_dtype):
    """LayerNorm/GroupNorm/BatchNorm with parameters of another dtype than the input (a model cast with
    .double() fed a float32 batch): torch's CPU kernels take only the same dtype, or float32 parameters
    for a 16-bit input; minilora promoted silently (a float64 result where torch raises)."""
    def snippet(lib):
        x = lib.tensor(np.linspace(-1, 1, 24).reshape(3, 4, 2), dtype=getattr(lib, x_dtype))
        p = lambda value: lib.full((4,), value, dtype=getattr(lib, p_dtype))  # noqa: E731
        return NORM_CALLS[call](lib.nn.functional, x, p).dtype
    if x_dtype == p_dtype or (x_dtype in ("float16", "bfloat16") and p_dtype == "float32"):
        check(snippet)
    else:
        expect_error(snippet)


@pytest.mark.parametrize("layer", ["LayerNorm", "BatchNorm1d", "GroupNorm"])
def test_a_double_model_fed_a_float_batch_raises_as_torch(layer):
    def snippet(lib):
        make = {"LayerNorm": lambda: lib.nn.LayerNorm(4), "BatchNorm1d": lambda: lib.nn.BatchNorm1d(4),
                "GroupNorm": lambda: lib.nn.GroupNorm(2, 4)}[layer]
        make().double()(lib.ones(3, 4))
    expect_error(snippet)


# ---- losses and attention given tensors of two float dtypes (a .double() model, float32 labels) --------
MIXED_LOSS_CALLS = {
    "cross_entropy(weight=)": lambda F, lib, a, b: F.cross_entropy(a(3, 4), lib.tensor([0, 1, 2]), weight=b(4)),
    "CrossEntropyLoss(weight=)": lambda F, lib, a, b: lib.nn.CrossEntropyLoss(weight=b(4))(a(3, 4), lib.tensor([0, 1, 3])),
    "cross_entropy(weight=, label_smoothing=)": lambda F, lib, a, b: F.cross_entropy(
        a(3, 4), lib.tensor([0, 1, 2]), weight=b(4), label_smoothing=0.1),
    "nll_loss(weight=)": lambda F, lib, a, b: F.nll_loss(a(3, 4), lib.tensor([0, 1, 2]), weight=b(4)),
    "binary_cross_entropy": lambda F, lib, a, b: F.binary_cross_entropy(a(3), b(3)),
    "binary_cross_entropy(weight=)": lambda F, lib, a, b: F.binary_cross_entropy(a(3), a(3), weight=b(3)),
    "sdpa(attn_mask=)": lambda F, lib, a, b: F.scaled_dot_product_attention(a(1, 2, 3, 4), a(1, 2, 3, 4),
                                                                           a(1, 2, 3, 4), attn_mask=b(3, 3)),
    "multi_margin_loss(weight=)": lambda F, lib, a, b: F.multi_margin_loss(a(3, 4), lib.tensor([0, 1, 2]),
                                                                           weight=b(4)),
    "soft_margin_loss": lambda F, lib, a, b: F.soft_margin_loss(a(3), b(3) * 2 - 1),
    "soft_margin_loss(reduction='none')": lambda F, lib, a, b: F.soft_margin_loss(a(3), b(3) * 2 - 1,
                                                                                  reduction="none"),
}


@pytest.mark.parametrize("call", list(MIXED_LOSS_CALLS))
@pytest.mark.parametrize("a_dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("b_dtype", ["float16", "bfloat16", "float32", "float64"])
def test_losses_and_attention_with_two_float_dtypes_as_torch(call, a_dtype, b_dtype):
    """torch refuses a class weight of another dtype than the logits, a BCE target of another dtype than
    the input, a float attention mask that is neither float32 nor the query's dtype -- minilora cast
    or promoted silently. Where torch computes, the result's dtype and values must be torch's."""
    def snippet(lib):
        def make(dtype):
            return lambda *shape: lib.tensor(np.linspace(0.1, 0.9, int(np.prod(shape))).reshape(shape),
                                             dtype=getattr(lib, dtype))
        return MIXED_LOSS_CALLS[call](lib.nn.functional, lib, make(a_dtype), make(b_dtype))
    expected = torch_result(snippet, RuntimeError)
    if expected is REFUSED:
        return
    ours = snippet(ml)
    assert str(ours.dtype) == str(expected.dtype).removeprefix("torch.")
    np.testing.assert_allclose(ours.float().numpy(), expected.float().numpy(), rtol=1e-2 if "16" in a_dtype + b_dtype else 1e-6)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("x_dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("t_dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("extra", ["", "weight", "pos_weight"])
def test_bce_with_logits_of_two_dtypes_is_in_the_targets_dtype(reduction, x_dtype, t_dtype, extra):
    """torch composes it with in-place steps that keep the target's dtype: float64 logits with float32
    labels give a float32 loss (minilora promoted to float64). Values and the logits' gradient bit for
    bit where the dtypes agree, to a 16-bit step otherwise."""
    rng = np.random.default_rng(5)
    logits, labels, weights = rng.standard_normal(40) * 3, rng.random(40), rng.random(40) * 2

    def snippet(lib):
        x = lib.tensor(logits, dtype=getattr(lib, x_dtype), requires_grad=True)
        t = lib.tensor(labels, dtype=getattr(lib, t_dtype))
        kwargs = {} if not extra else {extra: lib.tensor(weights, dtype=getattr(lib, x_dtype))}
        loss = lib.nn.functional.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kwargs)
        loss.sum().backward()
        return [loss, x.grad]
    theirs, ours = snippet(torch), snippet(ml)
    for a, b in zip(theirs, ours):  # (torch's backward is one fused formula: a few 16-bit steps apart)
        assert str(b.dtype) == str(a.dtype).removeprefix("torch.")
        expected = a.detach().float().numpy()
        tolerance = 2e-2 * np.abs(expected).max() if "16" in x_dtype + t_dtype else 1e-6
        np.testing.assert_allclose(b.detach().float().numpy(), expected, rtol=tolerance, atol=tolerance)


def conv_with_bias(x_dtype, b_dtype, call):
    def snippet(lib):
        F, dtype = lib.nn.functional, lambda name: getattr(lib, name)
        if call == "conv1d":
            out = F.conv1d(lib.ones(1, 2, 5, dtype=dtype(x_dtype)), lib.ones(3, 2, 3, dtype=dtype(x_dtype)),
                           lib.ones(3, dtype=dtype(b_dtype)))
        elif call == "conv2d":
            out = F.conv2d(lib.ones(1, 2, 4, 4, dtype=dtype(x_dtype)), lib.ones(3, 2, 3, 3, dtype=dtype(x_dtype)),
                           lib.ones(3, dtype=dtype(b_dtype)))
        else:
            layer = lib.nn.Conv2d(2, 3, 3).to(dtype(x_dtype))
            layer.bias.data = layer.bias.data.to(dtype(b_dtype))
            out = layer(lib.ones(1, 2, 4, 4, dtype=dtype(x_dtype)))
        return out.dtype
    return snippet


CONV_CALLS = ["conv1d", "conv2d", "Conv2d with a bias cast alone"]
DTYPE_PAIRS = [(a, b) for a in ("float16", "bfloat16", "float32", "float64")
               for b in ("float16", "bfloat16", "float32", "float64")]


@pytest.mark.parametrize("call", CONV_CALLS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_conv_bias_of_the_inputs_dtype(call, dtype):
    check(conv_with_bias(dtype, dtype, call))


@pytest.mark.parametrize("call", CONV_CALLS)
@pytest.mark.parametrize("x_dtype,b_dtype", [pair for pair in DTYPE_PAIRS if pair[0] != pair[1]])
def test_conv_bias_of_another_dtype_is_refused_as_torch(call, x_dtype, b_dtype):
    """torch: 'Input type (float) and bias type (double) should be the same'; minilora added the bias in
    the promoted dtype (a float64 result)."""
    expect_error(conv_with_bias(x_dtype, b_dtype, call))


@pytest.mark.parametrize("x_dtype,w_dtype", DTYPE_PAIRS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_with_probabilities_promotes_the_weight_as_torch(x_dtype, w_dtype, label_smoothing, reduction):
    """Class-probability targets: torch multiplies by the weight in its own dtype (a float64 weight makes a
    float64 loss); minilora cast the weight to the logits' dtype first."""
    rng = np.random.default_rng(3)
    logits, probs, weights = rng.standard_normal((3, 4)), rng.random((3, 4)), rng.random(4)

    def snippet(lib):
        dtype = getattr(lib, x_dtype)
        return lib.nn.functional.cross_entropy(lib.tensor(logits, dtype=dtype), lib.tensor(probs, dtype=dtype),
                                               weight=lib.tensor(weights, dtype=getattr(lib, w_dtype)),
                                               label_smoothing=label_smoothing, reduction=reduction)
    theirs, ours = snippet(torch), snippet(ml)
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
    np.testing.assert_allclose(ours.float().numpy(), theirs.float().numpy(), rtol=2e-2 if "16" in x_dtype + w_dtype else 1e-6)


@pytest.mark.parametrize("fn", ["conv_transpose1d", "conv_transpose2d"])
@pytest.mark.parametrize("x_dtype,b_dtype", DTYPE_PAIRS)
@pytest.mark.parametrize("batched", [True, False])
def test_conv_transpose_bias_of_another_dtype_as_torch(fn, x_dtype, b_dtype, batched):
    """torch adds a transposed convolution's bias in place: a float64 bias on a float32 input gives a
    float32 result (minilora's was float64). A 16-bit input's result stays 16-bit, where torch takes the
    bias: it refuses another dtype only where it runs that 16-bit dtype on oneDNN, which depends on the
    CPU (float16 with AVX512-FP16/AMX-FP16, bfloat16 with AVX-512: an AVX-512 EPYC refuses bfloat16 and
    takes float16, an AVX2 CPU takes both). minilora takes it on every CPU, as torch's other kernel."""
    x_shape, w_shape = ((2, 5), (2, 3, 3)) if fn == "conv_transpose1d" else ((2, 4, 4), (2, 3, 3, 3))
    rng = np.random.default_rng(4)
    x_values, w_values, b_values = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(3)

    def snippet(lib, in_place=False):
        x = lib.tensor(x_values if not batched else x_values[None], dtype=getattr(lib, x_dtype))
        bias = lib.tensor(b_values, dtype=getattr(lib, b_dtype))
        out = getattr(lib.nn.functional, fn)(x, lib.tensor(w_values, dtype=getattr(lib, x_dtype)),
                                             None if in_place else bias)
        return (out.add_(bias.reshape(-1, *(1,) * (out.ndim - 1 - batched))) if in_place else out).float()
    on_onednn = {"float16": torch.ops.mkldnn._is_mkldnn_fp16_supported,
                 "bfloat16": torch.ops.mkldnn._is_mkldnn_bf16_supported}.get(x_dtype, lambda: False)()
    if x_dtype != b_dtype and on_onednn:  # torch refuses on this CPU: its other kernel's numbers instead
        with pytest.raises(RuntimeError, match="bias type"):
            snippet(torch)
        expected = snippet(torch, in_place=True)
    else:
        expected = torch_result(snippet, RuntimeError)
    if expected is REFUSED:
        return
    ours = snippet(ml)
    assert tuple(ours.shape) == tuple(expected.shape)
    if "16" in x_dtype:  # torch's slow path (where oneDNN does not take the dtype) rounds each kernel tap's
        # GEMM column and each col2im add to 16 bits: 2 roundings per tap, each <= ulp sum|x||w|, where
        # minilora rounds once (bfloat16 with oneDNN held to AVX2: 4 steps apart at 0.13)
        ulp, taps = (2.0 ** -8 if x_dtype == "bfloat16" else 2.0 ** -11), int(np.prod(w_shape[2:]))
        x_abs = torch.tensor(np.abs(x_values if not batched else x_values[None]))
        terms = getattr(torch.nn.functional, fn)(x_abs, torch.tensor(np.abs(w_values))).numpy() + np.abs(
            b_values).reshape(-1, *(1,) * (len(x_shape) - 1))
        np.testing.assert_array_less(np.abs(ours.numpy() - expected.numpy()),
                                     2 * taps * ulp * terms + 2 * ulp * np.abs(expected.numpy()))
    else:
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-6, atol=1e-2)

    def dtype_only(lib):
        x = lib.ones(*((1,) if batched else ()), *x_shape, dtype=getattr(lib, x_dtype))
        return getattr(lib.nn.functional, fn)(x, lib.ones(*w_shape, dtype=getattr(lib, x_dtype)),
                                              lib.ones(3, dtype=getattr(lib, b_dtype))).dtype
    if x_dtype != b_dtype and on_onednn:
        assert str(dtype_only(ml)) == x_dtype
    else:
        check(dtype_only)


# ---- x[index] = value of another dtype ------------------------------------------------------------------
SETITEM_CASES = {
    "tensor index, float64 values": lambda lib, a: a.__setitem__(lib.tensor([0]), lib.ones(1, 3, dtype=lib.float64)),
    "tensor index, 0-d float64": lambda lib, a: a.__setitem__(lib.tensor([0]), lib.tensor(2.0, dtype=lib.float64)),
    "list index, float16 values": lambda lib, a: a.__setitem__([0, 1], lib.ones(2, 3, dtype=lib.float16)),
    "NumPy index": lambda lib, a: a.__setitem__(np.array([0]), lib.ones(1, 3, dtype=lib.float64)),
    "(int, list)": lambda lib, a: a.__setitem__((0, [0, 1]), lib.ones(2, dtype=lib.float64)),
    "(slice, tensor)": lambda lib, a: a.__setitem__((slice(None), lib.tensor([0])), lib.ones(3, 1, dtype=lib.float64)),
    "int64 values": lambda lib, a: a.__setitem__(lib.tensor([0]), lib.ones(1, 3, dtype=lib.int64)),
    "index_put_": lambda lib, a: a.index_put_((lib.tensor([0]),), lib.ones(3, dtype=lib.float64)),
    "index_put": lambda lib, a: a.index_put((lib.tensor([0]),), lib.ones(3, dtype=lib.float64)),
    "bool mask, 3 float64 values": lambda lib, a: a.__setitem__(a[:, 0] > -1, lib.ones(3, 3, dtype=lib.float64)),
    # where torch takes another dtype: basic indexing copies, a one-element value under a mask fills
    "0-d int tensor index": lambda lib, a: a.__setitem__(lib.tensor(0), lib.ones(3, dtype=lib.float64)),
    "slice": lambda lib, a: a.__setitem__(slice(0, 2), lib.ones(2, 3, dtype=lib.float64)),
    "bool mask, 0-d float64": lambda lib, a: a.__setitem__(a > -1, lib.tensor(2.0, dtype=lib.float64)),
    "bool mask, one float64": lambda lib, a: a.__setitem__(a > -1, lib.ones(1, dtype=lib.float64)),
    "row mask and slice, 0-d": lambda lib, a: a.__setitem__((lib.tensor([True, False, True]), slice(None)),
                                                           lib.tensor(2.0, dtype=lib.float64)),
    "tensor index, Python number": lambda lib, a: a.__setitem__(lib.tensor([0]), 5.0),
}


@pytest.mark.parametrize("in_graph", [False, True])
@pytest.mark.parametrize("case", list(SETITEM_CASES))
def test_advanced_index_assignment_of_another_dtype_raises_as_torch(case, in_graph):
    """x[idx] = v with an index tensor/list and v of another dtype is torch's index_put_, which refuses
    ('Index put requires the source and destination dtypes match'); minilora cast v silently."""
    def snippet(lib):
        a = lib.zeros(3, 3, requires_grad=in_graph).clone() if in_graph else lib.zeros(3, 3)
        SETITEM_CASES[case](lib, a)
        return a
    if torch_result(snippet, RuntimeError) is not REFUSED:
        check(snippet)


@pytest.mark.parametrize("a_dtype,b_dtype", [("float32", "float64"), ("float16", "float32"), ("int64", "float32"),
                                             ("int32", "int64"), ("bfloat16", "float64"), ("float64", "float64")])
def test_cross_takes_one_dtype_as_torch(a_dtype, b_dtype):
    """torch.cross refuses two dtypes ('expected scalar type Float but found Double'); minilora promoted."""
    def snippet(lib):
        return lib.cross(lib.ones(2, 3, dtype=getattr(lib, a_dtype)), lib.ones(2, 3, dtype=getattr(lib, b_dtype)), dim=1)
    if a_dtype == b_dtype:
        check(snippet)
    else:
        expect_error(snippet)


@pytest.mark.parametrize("x_dtype,t_dtype", [pair for pair in DTYPE_PAIRS if pair[0] != pair[1]])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_huber_loss_of_two_dtypes_is_in_the_inputs_dtype(x_dtype, t_dtype, reduction):
    """torch's huber kernel computes in the promoted dtype and writes each element in the input's dtype
    (float32 input, float64 target: a float32 loss); minilora promoted the result."""
    rng = np.random.default_rng(8)
    x_values, t_values = rng.standard_normal(50) * 2, rng.standard_normal(50) * 2

    def snippet(lib):
        x = lib.tensor(x_values, dtype=getattr(lib, x_dtype))
        return lib.nn.functional.huber_loss(x, lib.tensor(t_values, dtype=getattr(lib, t_dtype)), reduction=reduction)
    theirs, ours = snippet(torch), snippet(ml)
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
    np.testing.assert_allclose(ours.float().numpy(), theirs.float().numpy(), rtol=1e-2 if "16" in x_dtype + t_dtype else 1e-6)


def test_typed_dataset_subclass_as_torch():
    """``class Pairs(Dataset[tuple])`` -- typed datasets (and samplers) subscript as torch's Generic ones."""
    def snippet(lib):
        data = lib.utils.data

        class Pairs(data.Dataset[tuple]):
            def __len__(self):
                return 3

            def __getitem__(self, i):
                return i, float(i)

        class Evens(data.Sampler[int]):
            def __init__(self, n):
                self.n = n

            def __iter__(self):
                return iter(range(0, self.n, 2))

            def __len__(self):
                return (self.n + 1) // 2
        return [list(data.DataLoader(Pairs(), batch_size=2)), list(data.DataLoader(Pairs(), sampler=Evens(3)))]
    check(snippet)


def test_fork_rng_leaves_the_global_stream_as_it_was():
    def snippet(lib):
        lib.manual_seed(3)
        lib.rand(1)
        expected = lib.rand(4)
        lib.manual_seed(3)
        lib.rand(1)
        with lib.random.fork_rng():
            lib.manual_seed(99)
            lib.rand(5)
            inside = lib.initial_seed()
        with lib.random.fork_rng(enabled=False):
            pass
        return [inside, lib.initial_seed(), bool((lib.rand(4) == expected).all())]
    check(snippet)


def test_makemore_bigram_counts_and_neural_net_as_torch():
    """makemore part 1, line by line: counting bigrams into an int32 tensor with N[i, j] += 1, smoothing,
    P /= P.sum(1, keepdims=True), the average negative log likelihood, then the one-layer net on
    one-hot inputs with W.data += -50 * W.grad (W copied from the same NumPy numbers)."""
    words = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia"]
    w_values = np.random.default_rng(0).standard_normal((27, 27)).astype(np.float32)

    def snippet(lib):
        F = lib.nn.functional
        chars = sorted(list(set("".join(words))))
        stoi = {s: i + 1 for i, s in enumerate(chars)}
        stoi["."] = 0
        N = lib.zeros((27, 27), dtype=lib.int32)
        xs, ys = [], []
        for w in words:
            chs = ["."] + list(w) + ["."]
            for ch1, ch2 in zip(chs, chs[1:]):
                N[stoi[ch1], stoi[ch2]] += 1
                xs.append(stoi[ch1])
                ys.append(stoi[ch2])
        P = (N + 1).float()
        P /= P.sum(1, keepdims=True)
        log_likelihood = 0.0
        for ix1, ix2 in zip(xs, ys):
            log_likelihood += lib.log(P[ix1, ix2])
        xs, ys = lib.tensor(xs), lib.tensor(ys)
        num = xs.nelement()
        W = lib.tensor(w_values, requires_grad=True)
        losses = []
        for _ in range(3):
            xenc = F.one_hot(xs, num_classes=27).float()
            counts = (xenc @ W).exp()
            probs = counts / counts.sum(1, keepdims=True)
            loss = -probs[lib.arange(num), ys].log().mean() + 0.01 * (W ** 2).mean()
            W.grad = None
            loss.backward()
            W.data += -50 * W.grad
            losses.append(loss.item())
        return [N, N.dtype, P, -log_likelihood / num, losses, W]
    check_close(snippet, rtol=1e-5)


# ---- "Transforms": the one-hot target_transform ---------------------------------------------------------
SCATTER_0D = {
    "target_transform": lambda lib: lib.zeros(10, dtype=lib.float).scatter_(0, lib.tensor(3), value=1),
    "scatter, 0-d src": lambda lib: lib.zeros(10).scatter(0, lib.tensor(3), lib.tensor(5.0)),
    "scatter, 1-d src": lambda lib: lib.zeros(10).scatter(0, lib.tensor(3), lib.ones(4)),
    "scatter_add, 0-d": lambda lib: lib.zeros(10).scatter_add(0, lib.tensor(3), lib.tensor(5.0)),
    "1-d index, 0-d src": lambda lib: lib.zeros(10).scatter_(0, lib.tensor([3]), lib.tensor(5.0)),
    "gather, 0-d": lambda lib: lib.arange(10.0).gather(0, lib.tensor(3)),
}


@pytest.mark.parametrize("case", list(SCATTER_0D))
def test_scatter_with_a_0d_index_on_a_1d_tensor_as_torch(case):
    """Learn the Basics' Transforms page one-hot encodes a label with
    ``torch.zeros(10, dtype=torch.float).scatter_(0, torch.tensor(y), value=1)``: a 0-d index, which torch
    reads as one position. minilora raised IndexError inside its kernel."""
    check(SCATTER_0D[case])


def test_backward_hooks_fire_on_each_backward_of_a_retained_graph():
    def snippet(lib):
        layer, log = lib.nn.Linear(2, 1, dtype=lib.float64), []
        with lib.no_grad():
            layer.weight.copy_(f64(lib, [[1.0, -2.0]]))
        layer.register_full_backward_hook(lambda m, gi, go: log.append((rounded(gi), rounded(go))))
        x = f64(lib, [[0.5, 1.5]], grad=True)
        y = layer(x).sum()
        y.backward(retain_graph=True)
        (2 * y).backward()
        return [log, x.grad]
    check(snippet)


@pytest.mark.parametrize("kind", ["pre", "full"])
def test_backward_hook_returning_too_many_gradients_is_torchs_error(kind):
    """A backward pre-hook (or full backward hook) that returns more gradients than it got: torch's
    RuntimeError, word for word."""
    def snippet(lib):
        layer = lib.nn.Linear(2, 2)
        if kind == "pre":
            layer.register_full_backward_pre_hook(lambda module, grad_output: (grad_output[0],) * 2)
        else:
            layer.register_full_backward_hook(lambda module, grad_input, grad_output: (grad_input[0],) * 2)
        with pytest.raises(RuntimeError) as error:
            layer(lib.ones(1, 2, requires_grad=True)).sum().backward()
        return str(error.value)

    theirs, ours = run_both(snippet)
    assert ours == theirs
