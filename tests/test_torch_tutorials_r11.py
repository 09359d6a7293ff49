"""Round 11: torch tutorial and docs code run with ``import minilora as torch``, one test per divergence found.

* ``DataLoader(num_workers > 0)``: minilora loaded every batch in the main process, so a dataset that draws
  in ``__getitem__`` (a random flip, noise) drew from the global generator instead of each worker's
  (seeded ``base_seed + worker_id``: other numbers, silently, and the main stream moved on), an
  ``IterableDataset`` was read once instead of once per worker (torch's docs' sharding examples gave
  another order), ``get_worker_info()`` was always None and ``worker_init_fn`` was refused; persistent
  workers drew a new base seed each epoch. NumPy's and Python's generators are seeded in each worker
  as torch seeds them, and a worker's error is re-raised as torch's ``Caught ... in DataLoader worker``;
* transformers' ``DataCollatorForLanguageModeling(seed=...)`` in such workers seeds ``seed + worker id``;
* ``default_collate`` of tuple samples with strings: torch keeps the strings' tuple, minilora made a list;
* small wording: the ``scheduler.step(epoch)`` deprecation warning, ``clip_grad_norm_``'s non-finite error,
  an inference tensor saved for backward;
* ``pack_padded_sequence`` / ``pack_sequence`` / ``PackedSequence`` inputs to RNN, GRU and LSTM (the NLP
  tutorials' pattern): refused;
* ``torch.optim.swa_utils`` (``AveragedModel``, SWA and EMA averaging, ``update_bn``, ``SWALR``): missing;
* ``Tensor.pin_memory`` / ``is_pinned``, ``DataLoader(pin_memory=True)``'s warning without a GPU,
  ``nn.utils.parameters_to_vector`` / ``vector_to_parameters``: missing;
* ``torch.func`` (``functional_call``, ``grad``, ``vmap``, ``stack_module_state``, ...) and ``torch.vmap``: missing
  (the per-sample-gradients and model-ensembling tutorials);
* ``nn.utils.prune`` (the pruning tutorial, which reads ``module._forward_pre_hooks.values()`` as the hooks
  themselves: minilora kept ``(hook, with_kwargs)`` pairs there);
* ``nn.utils.parametrize`` (the parametrizations tutorial) and ``nn.utils.parametrizations.weight_norm`` /
  ``spectral_norm``, and the older hook-based ``nn.utils.weight_norm`` / ``remove_weight_norm``: missing;
* a custom ``autograd.Function``'s output printed ``grad_fn=<_UserOutputBackward0>`` (torch: ``<MyExpBackward>``);
* ``utils.data.ChainDataset`` / ``StackDataset``, ``nn.utils.fuse_conv_bn_eval`` / ``fuse_linear_bn_eval``,
  ``nn.RNNBase`` / ``RNNCellBase``, ``nn.utils.stateless.functional_call``: missing.

Each test runs the same code on torch and on minilora (same seed) and compares numbers, order and
messages. Skipped without torch."""
import math
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402


def _plain(value):
    """A batch as nested Python lists/numbers: torch's and minilora's compare alike."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _both(run):
    """``run(torch)`` and ``run(minilora)``, the global generators seeded alike before each."""
    results = []
    for lib in (torch, ml):
        lib.manual_seed(7), np.random.seed(7), random.seed(7)
        results.append(_plain(run(lib)))
    return results


class Augmented:
    """A map-style dataset that draws in ``__getitem__``: torch, NumPy and Python's random each."""

    def __init__(self, lib, n=7):
        self.lib, self.n = lib, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = self.lib.full((2,), float(i))
        if self.lib.rand(1).item() < 0.5:
            x = x.flip(0)
        return x + self.lib.randn(2) * 0.1, np.random.randint(1000), random.random()


def _epochs(lib, loader, epochs=2):
    batches = [[batch for batch in loader] for _ in range(epochs)]
    return batches, lib.rand(2), lib.initial_seed()  # the main stream after: only base seeds were drawn


@pytest.mark.parametrize("options", [dict(batch_size=2, shuffle=True, num_workers=2),
                                     dict(batch_size=None, num_workers=2),
                                     dict(batch_size=3, num_workers=2, shuffle=True, persistent_workers=True)])
def test_workers_draw_as_torch_workers(options):
    def run(lib):
        D = lib.utils.data
        return _epochs(lib, D.DataLoader(Augmented(lib), generator=lib.Generator().manual_seed(5), **options))
    expected, got = _both(run)
    assert got == expected
    assert expected[0][0] != expected[0][1]  # (the epochs differ: the test sees the workers' streams go on)


def _shards(lib, start, end, split):
    """torch's docs' IterableDataset, split between workers in ``__iter__`` by ``get_worker_info()``, or
    (``split=False``) read whole by each worker unless a ``worker_init_fn`` narrows its copy."""
    class Shards(lib.utils.data.IterableDataset):
        def __iter__(self):
            info = lib.utils.data.get_worker_info()
            first, last = self.start, self.end
            if split and info is not None:
                per_worker = int(math.ceil((last - first) / float(info.num_workers)))
                first = first + info.id * per_worker
                last = min(first + per_worker, self.end)
            for i in range(first, last):
                yield i, lib.rand(1).item(), np.random.rand()
    dataset = Shards()
    dataset.start, dataset.end = start, end
    return dataset


def _narrow_to_worker(lib):
    def worker_init_fn(worker_id):  # torch's docs' second sharding recipe: each worker narrows its copy
        info = lib.utils.data.get_worker_info()
        dataset = info.dataset
        per_worker = int(math.ceil((dataset.end - dataset.start) / float(info.num_workers)))
        start = dataset.start + info.id * per_worker
        dataset.start, dataset.end = start, min(start + per_worker, dataset.end)
    return worker_init_fn


@pytest.mark.parametrize("split, init, options", [
    (True, False, dict(num_workers=2)),
    (False, False, dict(num_workers=2, batch_size=3)),  # each sample once per worker, as torch
    (False, True, dict(num_workers=2, batch_size=3, drop_last=True)),
    (False, True, dict(num_workers=2, batch_size=2, persistent_workers=True))])
def test_iterable_dataset_in_workers_as_torch(split, init, options):
    def run(lib):
        D = lib.utils.data
        dataset = _shards(lib, 3, 11, split)
        loader = D.DataLoader(dataset, worker_init_fn=_narrow_to_worker(lib) if init else None, **options)
        return _epochs(lib, loader) + ((dataset.start, dataset.end, D.get_worker_info()),)
    expected, got = _both(run)
    assert got == expected


class WhoAmI:
    def __init__(self, lib):
        self.lib = lib

    def __len__(self):
        return 4

    def __getitem__(self, i):
        info = self.lib.utils.data.get_worker_info()
        return info.id, info.num_workers, info.seed - self.lib.initial_seed(), info.dataset is self


def test_worker_info_and_init_fn_as_torch():
    def run(lib):
        seen = []

        def init(worker_id):
            info = lib.utils.data.get_worker_info()
            seen.append((worker_id, info.id, info.num_workers, info.seed == lib.initial_seed()))
            lib.manual_seed(100 + worker_id)
        loader = lib.utils.data.DataLoader(WhoAmI(lib), batch_size=None, num_workers=2, worker_init_fn=init)
        return list(loader), seen if lib is ml else [(0, 0, 2, True), (1, 1, 2, True)], lib.rand(1)
    expected, got = _both(run)
    assert got == expected


class Faulty:
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 3:
            raise KeyError("sample 3")
        return i


def test_worker_error_reraised_as_torch():
    """What torch's main process raises for a worker's error (its ExceptionWrapper, as the loader uses it: a
    real torch loader that failed takes 10 s to shut its workers down), and minilora's loader."""
    with pytest.raises(KeyError) as ours:
        list(ml.utils.data.DataLoader(Faulty(), num_workers=2))
    try:
        Faulty()[3]  # (sample 3 is the fourth batch: worker 1's)
    except KeyError:
        wrapped = torch._utils.ExceptionWrapper(where="in DataLoader worker process 1")
    with pytest.raises(KeyError) as theirs:
        wrapped.reraise()
    lines = [str(error.value).rstrip().splitlines() for error in (ours, theirs)]
    assert [(found[0], found[1], found[-1]) for found in lines] == 2 * [(
        "Caught KeyError in DataLoader worker process 1.", "Original Traceback (most recent call last):",
        "KeyError: 'sample 3'")]


def test_seeded_mlm_collator_in_workers_as_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    import minilora.data as ml_data
    from minilora.tokenizer import from_pretrained
    from test_hf_tutorials_r9 import TEXTS, _llama2_style_tokenizer
    folder = _llama2_style_tokenizer(tmp_path)
    theirs, ours = transformers.AutoTokenizer.from_pretrained(str(folder)), from_pretrained(folder)
    for tokenizer in (theirs, ours):
        tokenizer.add_special_tokens({"mask_token": "<mask>"})
        tokenizer.pad_token = tokenizer.eos_token

    def run(lib, tokenizer, collator):
        rows = [dict(tokenizer(t)) for t in TEXTS * 4]
        collate = collator(tokenizer, mlm_probability=0.5, seed=11)
        collate(rows[:2])  # made in the main process first: each worker still seeds its own
        loader = lib.utils.data.DataLoader(rows, batch_size=3, num_workers=2, collate_fn=collate)
        return [{k: v.tolist() for k, v in batch.items()} for batch in loader]
    expected = run(torch, theirs, transformers.DataCollatorForLanguageModeling)
    assert run(ml, ours, ml_data.DataCollatorForLanguageModeling) == expected


def test_default_collate_keeps_tuples_of_strings():
    batch = [(1.5, "s", b"x"), (2.5, "t", b"y")]
    expected = _plain(torch.utils.data.default_collate(batch))
    assert _plain(ml.utils.data.default_collate(batch)) == expected == [[1.5, 2.5], ("s", "t"), (b"x", b"y")]


def _message(lib, action):
    """The warning's or error's text ``action(lib)`` gives."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            action(lib)
        except RuntimeError as error:
            return str(error)
    return [str(w.message) for w in caught]


def _step_with_epoch(lib):
    weight = lib.nn.Parameter(lib.ones(2))
    optimizer = lib.optim.SGD([weight], lr=0.1)
    scheduler = lib.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    optimizer.step()
    scheduler.step(3)


def _clip_non_finite(lib):
    weight = lib.nn.Parameter(lib.ones(2))
    weight.grad = lib.tensor([float("inf"), 1.0])
    lib.nn.utils.clip_grad_norm_([weight], 1.0, norm_type=1, error_if_nonfinite=True)


def _inference_tensor_saved(lib):
    x = lib.ones(2, requires_grad=True)
    with lib.inference_mode():
        y = x * 2
    (y * x).sum().backward()


@pytest.mark.parametrize("action", [_step_with_epoch, _clip_non_finite, _inference_tensor_saved])
def test_messages_in_torch_words(action):
    assert _message(ml, action) == _message(torch, action)


# ---- packed sequences: minilora refused pack_padded_sequence / pack_sequence and PackedSequence inputs ------
def _padded_batch(lib, lengths, features=3, batch_first=True, dtype="float64"):
    lib.manual_seed(0)
    sequences = [lib.randn(n, features, dtype=getattr(lib, dtype)) for n in lengths]
    return lib.nn.utils.rnn.pad_sequence(sequences, batch_first=batch_first), sequences


@pytest.mark.parametrize("lengths, batch_first, enforce_sorted", [
    ([5, 2, 4, 2], True, False),  # ties: torch's sort keeps their order
    ([4, 3, 3, 1], False, True), ([3, 1], True, True)])
def test_packing_as_torch(lengths, batch_first, enforce_sorted):
    def run(lib):
        R = lib.nn.utils.rnn
        padded, sequences = _padded_batch(lib, lengths, batch_first=batch_first)
        packed = R.pack_padded_sequence(padded, lib.tensor(lengths), batch_first=batch_first,
                                        enforce_sorted=enforce_sorted)
        again = R.pack_sequence(sequences, enforce_sorted=enforce_sorted)
        unpacked, unpacked_lengths = R.pad_packed_sequence(packed, batch_first=not batch_first, padding_value=-1.0,
                                                           total_length=7)
        return (type(packed).__name__, list(packed), list(again), unpacked, unpacked_lengths,
                R.unpack_sequence(packed), R.invert_permutation(packed.sorted_indices))
    expected, got = _both(run)
    assert got == expected


def test_packing_errors_as_torch():
    def errors(lib):
        R = lib.nn.utils.rnn
        padded, _ = _padded_batch(lib, [4, 3, 2], batch_first=False)
        found = []
        for call in (lambda: R.pack_padded_sequence(padded, [2, 4, 3]),
                     lambda: R.pack_padded_sequence(padded, [4, 3, 0]),
                     lambda: R.pack_padded_sequence(padded, [4, 3]),
                     lambda: R.pad_packed_sequence(R.pack_padded_sequence(padded, [4, 3, 2]), total_length=3)):
            with pytest.raises((RuntimeError, ValueError)) as error:
                call()
            found.append((type(error.value).__name__, str(error.value)))
        return found
    assert errors(ml) == errors(torch)


@pytest.mark.parametrize("kind, options", [
    ("LSTM", dict(num_layers=2, bidirectional=True, dropout=0.5)), ("LSTM", dict(proj_size=2)),
    ("GRU", dict(bidirectional=True)), ("RNN", dict(nonlinearity="relu", num_layers=2))])
def test_rnns_on_packed_sequences_as_torch(kind, options):
    """The NLP tutorials' pattern: pack a padded batch, run the RNN, pad its output back; float64 states,
    outputs and gradients as torch's (dropout between layers drawn on the packed data, as torch)."""
    lengths = [3, 5, 1, 4]

    def run(lib):
        padded, _ = _padded_batch(lib, lengths)
        padded.requires_grad_(True)
        lib.manual_seed(1)
        rnn = getattr(lib.nn, kind)(3, 4, batch_first=True, dtype=lib.float64, **options)
        packed = lib.nn.utils.rnn.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        width = (2 if options.get("bidirectional") else 1) * options.get("num_layers", 1)
        h0 = lib.randn(width, len(lengths), options.get("proj_size") or 4, dtype=lib.float64)
        hx = (h0, lib.randn(width, len(lengths), 4, dtype=lib.float64)) if kind == "LSTM" else h0
        output, state = rnn(packed, hx)
        unpacked, _ = lib.nn.utils.rnn.pad_packed_sequence(output, batch_first=True)
        states = state if kind == "LSTM" else (state,)
        (unpacked.pow(2).sum() + sum(s.sum() for s in states)).backward()
        return (type(output).__name__, output.data, output.batch_sizes, unpacked, states, padded.grad,
                [p.grad for p in rnn.parameters()])
    expected, got = _both(run)
    assert got[0] == expected[0] == "PackedSequence"
    np.testing.assert_allclose(np.array(_flat(got[1:])), np.array(_flat(expected[1:])), rtol=1e-12, atol=1e-13)


def _flat(value):
    """Every number in a nested structure, in order."""
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [float(value)]


# ---- torch.optim.swa_utils (the SWA / EMA recipe of torch's docs): minilora had no swa_utils --------------
def _model(lib, dtype):
    lib.manual_seed(0)
    model = lib.nn.Sequential(lib.nn.Linear(4, 6), lib.nn.BatchNorm1d(6), lib.nn.ReLU(), lib.nn.Linear(6, 2))
    return model.to(getattr(lib, dtype))


@pytest.mark.parametrize("averaging", ["swa", "ema", "ema_avg_fn", "swa_multi"])
def test_averaged_model_bit_for_bit(averaging):
    """float32 averages of the same weight sequence: torch's roundings (SWA's CPU formula, EMA's lerp)."""
    def run(lib):
        swa = lib.optim.swa_utils
        model = _model(lib, "float32")
        options = {"swa": {}, "ema": dict(multi_avg_fn=swa.get_ema_multi_avg_fn(0.9)),
                   "ema_avg_fn": dict(avg_fn=swa.get_ema_avg_fn(0.8), use_buffers=True),
                   "swa_multi": dict(multi_avg_fn=swa.get_swa_multi_avg_fn())}[averaging]
        averaged = swa.AveragedModel(model, **options)
        for _ in range(4):
            with lib.no_grad():  # (new weights and statistics drawn, not trained: a product's last bits are the CPU's)
                for p in list(model.parameters()) + [model[1].running_mean, model[1].running_var]:
                    p.add_(lib.randn(p.shape).abs() * 0.3)
            model[1].num_batches_tracked += 1
            averaged.update_parameters(model)
        return averaged.state_dict(), averaged.n_averaged
    expected, got = _both(run)
    assert got == expected


def test_swa_recipe_as_torch():
    """torch's docs' SWA loop in float64: SWALR after a cosine schedule, update_bn over the loader."""
    def run(lib):
        swa = lib.optim.swa_utils
        model = _model(lib, "float64")
        data = lib.utils.data.TensorDataset(lib.randn(16, 4, dtype=lib.float64), lib.randn(16, 2, dtype=lib.float64))
        loader = lib.utils.data.DataLoader(data, batch_size=4, shuffle=True)
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        swa_model = swa.AveragedModel(model)
        scheduler = lib.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
        swa_scheduler = swa.SWALR(optimizer, swa_lr=0.05, anneal_epochs=2, anneal_strategy="linear")
        lrs = []
        for epoch in range(5):
            for x, y in loader:
                optimizer.zero_grad()
                lib.nn.functional.mse_loss(model(x), y).backward()
                optimizer.step()
            if epoch > 1:
                swa_model.update_parameters(model)
                swa_scheduler.step()
            else:
                scheduler.step()
            lrs.append(swa_scheduler.get_last_lr())
        swa.update_bn(loader, swa_model)
        return lrs, swa_model.state_dict(), swa_model.module[1].momentum, sorted(swa_scheduler.state_dict())
    expected, got = _both(run)
    assert got[0] == expected[0] and got[2:] == expected[2:]
    np.testing.assert_allclose(_flat(list(got[1].values())), _flat(list(expected[1].values())), rtol=1e-12)


# ---- small missing names a tutorial line reaches ---------------------------------------------------------
@pytest.mark.skipif(torch.accelerator.is_available() or ml.accelerator.is_available(), reason="a GPU pins memory")
def test_pin_memory_without_an_accelerator_as_torch():
    """``DataLoader(pin_memory=True)`` (in most training tutorials) warns on a CPU-only machine and yields the same
    batches; ``Tensor.is_pinned()`` is False and ``pin_memory()`` refuses, in torch's words (minilora: no warning,
    AttributeError)."""
    import warnings

    def run(lib):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(lib.utils.data.DataLoader(lib.arange(5.0), batch_size=2, pin_memory=True))
        with pytest.raises(RuntimeError) as error:
            lib.ones(2).pin_memory()
        return batches, [b.is_pinned() for b in batches], [str(w.message) for w in caught], str(error.value)
    expected, got = _both(run)
    assert got == expected


def test_parameters_to_vector_as_torch():
    def run(lib):
        model = _model(lib, "float32")
        vector = lib.nn.utils.parameters_to_vector(model.parameters())
        lib.nn.utils.vector_to_parameters(vector * 2, model.parameters())
        shared = lib.arange(float(vector.numel()))
        lib.nn.utils.vector_to_parameters(shared, model[0].parameters())
        shared[0] = 100.0  # the parameters share the vector's memory, as torch's
        with pytest.raises(TypeError) as error:
            lib.nn.utils.vector_to_parameters([1.0], model.parameters())
        return vector, model.state_dict(), str(error.value)
    expected, got = _both(run)
    assert got == expected


# ---- torch.func: the per-sample-gradients and model-ensembling tutorials (minilora had no torch.func) ------
def _tutorial_model(lib):
    lib.manual_seed(0)

    class SimpleNet(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = lib.nn.Linear(6, 5), lib.nn.Linear(5, 3)

        def forward(self, x):
            return lib.nn.functional.log_softmax(self.fc2(lib.nn.functional.relu(self.fc1(x))), dim=1)
    return SimpleNet


def test_per_sample_gradients_tutorial_as_torch():
    def run(lib):
        ft = lib.func
        model = _tutorial_model(lib)().double()
        data, targets = lib.randn(4, 6, dtype=lib.float64), lib.tensor([0, 2, 1, 1])
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}

        def compute_loss(params, buffers, sample, target):
            predictions = ft.functional_call(model, (params, buffers), (sample.unsqueeze(0),))
            return lib.nn.functional.nll_loss(predictions, target.unsqueeze(0))
        per_sample = ft.vmap(ft.grad(compute_loss), in_dims=(None, None, 0, 0))(params, buffers, data, targets)
        value = ft.grad_and_value(compute_loss)(params, buffers, data[1], targets[1])[1]
        return per_sample, value, [p.grad for p in model.parameters()]
    expected, got = _both(run)
    assert got[2] == expected[2] == [None] * 4  # (the transforms write no .grad)
    np.testing.assert_allclose(_flat(list(got[0].values()) + [got[1]]),
                               _flat(list(expected[0].values()) + [expected[1]]), rtol=1e-13, atol=1e-15)


def test_model_ensembling_tutorial_as_torch():
    def run(lib):
        import copy
        net = _tutorial_model(lib)
        models = [net().double() for _ in range(3)]
        params, buffers = lib.func.stack_module_state(models)
        base = copy.deepcopy(models[0])
        minibatch = lib.randn(4, 6, dtype=lib.float64)

        def fmodel(params, buffers, x):
            return lib.func.functional_call(base, (params, buffers), (x,))
        same_batch = lib.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, minibatch)
        per_model = lib.func.vmap(fmodel)(params, buffers, minibatch.expand(3, 4, 6))
        return ({k: (tuple(v.shape), v.requires_grad) for k, v in params.items()},
                _flat([same_batch.tolist(), per_model.tolist()]), base.fc1.weight)
    expected, got = _both(run)
    assert got[0] == expected[0] and got[2] == expected[2]  # (the base model's own weights are back)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-13)


def test_func_transforms_as_torch():
    def run(lib):
        ft, x = lib.func, lib.tensor([1.0, 2.0, -0.5], dtype=lib.float64)
        cube = lambda t: (t ** 3).sum()  # noqa: E731
        value, vjp_fn = ft.vjp(lib.sin, x)
        results = [ft.grad(cube)(x), ft.grad(lambda t: ft.grad(cube)(t).sum())(x),
                   ft.vmap(ft.grad(lambda t: t.sin().sum()))(x.reshape(3, 1) * lib.ones(3, 2, dtype=lib.float64)),
                   ft.jacrev(lib.sin)(x), value, vjp_fn(lib.ones(3, dtype=lib.float64))[0],
                   ft.grad(lambda a, b: (a * b).sum(), argnums=(0, 1))(x, x * 3),
                   ft.grad(lambda a: ((a ** 2).sum(), a.mean()), has_aux=True)(x),
                   lib.vmap(lib.dot)(lib.ones(3, 2), lib.arange(6.0).reshape(3, 2)),
                   ft.vmap(lambda t: t * 2, in_dims=1, out_dims=1)(lib.arange(6.0).reshape(2, 3))]
        lib.manual_seed(3)
        results += [ft.vmap(lambda t: t + lib.rand(1), randomness="same")(lib.zeros(3, 1)), lib.rand(1)]
        errors = []
        for call in (lambda: ft.vmap(lambda t: t + lib.rand(1))(lib.ones(3, 1)),
                     lambda: ft.grad(lambda t: t * 2)(x),
                     lambda: ft.vmap(lib.mul)(lib.ones(2, 3), lib.ones(3)),
                     lambda: ft.functional_call(lib.nn.Linear(2, 2), {"weight": lib.zeros(2, 2)}, (lib.ones(1, 2),),
                                                strict=True)):
            with pytest.raises((RuntimeError, ValueError)) as error:
                call()
            errors.append((type(error.value).__name__, str(error.value).split("\n")[0][:60]))
        return results, errors
    expected, got = _both(run)
    assert got[1] == expected[1]
    np.testing.assert_allclose(_flat(got[0]), _flat(expected[0]), rtol=1e-15, atol=1e-15)


# ---- the parametrizations tutorial; weight_norm / spectral_norm (minilora had no parametrize) -------------
def _parametrizations_tutorial(lib):
    nn, P = lib.nn, lib.nn.utils.parametrize

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

        def right_inverse(self, A):
            return A.triu()

    class Skew(nn.Module):
        def forward(self, X):
            A = X.triu(1)
            return A - A.transpose(-1, -2)

    class CayleyMap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("Id", lib.eye(n, dtype=lib.float64))

        def forward(self, X):
            return lib.linalg.solve(self.Id - X, self.Id + X)
    lib.manual_seed(0)
    layer = P.register_parametrization(nn.Linear(3, 3).double(), "weight", Symmetric())
    x = lib.rand(2, 3, dtype=lib.float64)
    with P.cached():
        first = layer(x)
    shown = (repr(layer), list(layer.state_dict()), type(layer).__name__, P.is_parametrized(layer),
             P.is_parametrized(layer, "bias"), P.type_before_parametrizations(layer).__name__)
    symmetric = lib.rand(3, 3, dtype=lib.float64)
    layer.weight = symmetric + symmetric.T  # (the setter: right_inverse into original)
    optimizer = lib.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).pow(2).sum().backward()
    optimizer.step()
    values = [first, layer.parametrizations.weight.original, layer.weight]
    P.remove_parametrizations(layer, "weight")
    shown += (type(layer).__name__, list(layer.state_dict()))
    orthogonal = P.register_parametrization(nn.Linear(3, 3).double(), "weight", Skew())
    P.register_parametrization(orthogonal, "weight", CayleyMap(3))
    values += [layer.weight, orthogonal.weight]
    return shown, values


def test_parametrizations_tutorial_as_torch():
    expected, got = _parametrizations_tutorial(torch), _parametrizations_tutorial(ml)
    assert got[0] == expected[0]
    np.testing.assert_allclose(_flat(_plain(got[1])), _flat(_plain(expected[1])), rtol=1e-13, atol=1e-15)


def test_weight_norm_and_spectral_norm_as_torch():
    def run(lib):
        W, nn = lib.nn.utils.parametrizations, lib.nn
        lib.manual_seed(1)
        norm = W.weight_norm(nn.Linear(6, 5).double())
        conv = W.weight_norm(nn.Conv1d(2, 3, 3).double(), dim=None)
        spectral = W.spectral_norm(nn.Linear(6, 5).double())
        transposed = W.spectral_norm(nn.ConvTranspose2d(2, 3, 2).double())  # (dim 1 by default)
        x = lib.randn(2, 6, dtype=lib.float64)
        (norm(x).sum() + spectral(x).pow(2).sum()).backward()
        spectral.eval()
        values = [norm.parametrizations.weight.original0, norm.parametrizations.weight.original0.grad, conv.weight,
                  spectral.parametrizations.weight[0]._u, spectral.weight,
                  spectral.parametrizations.weight.original.grad,
                  transposed.parametrizations.weight[0]._v, lib.rand(3)]  # (the draws after: the same stream)
        return (repr(norm), list(norm.state_dict()), list(spectral.state_dict()), repr(spectral)), _plain(values)
    expected, got = _both(run)
    assert got[0] == expected[0]
    np.testing.assert_allclose(_flat(got[1]), _flat(expected[1]), rtol=1e-12, atol=1e-15)


def test_legacy_weight_norm_as_torch():
    """torch.nn.utils.weight_norm / remove_weight_norm (deprecated, in HiFi-GAN-style code): missing."""
    import warnings

    def run(lib):
        lib.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer = lib.nn.utils.weight_norm(lib.nn.Linear(5, 4).double())
            conv = lib.nn.utils.weight_norm(lib.nn.Conv1d(2, 3, 3).double(), dim=None)
        names = ([str(w.message) for w in caught], list(layer.state_dict()), tuple(conv.weight_g.shape))
        x = lib.randn(3, 5, dtype=lib.float64)
        layer(x).pow(2).sum().backward()
        with lib.no_grad():
            layer.weight_g.mul_(2)
        values = [layer.weight_g.grad, layer.weight_v.grad, layer(x)]
        with pytest.raises(RuntimeError) as twice, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the deprecation again)
            lib.nn.utils.weight_norm(layer)
        lib.nn.utils.remove_weight_norm(layer)
        names += (str(twice.value), list(layer.state_dict()), type(layer.weight).__name__)
        return names, _plain(values + [layer.weight])
    expected, got = _both(run)
    assert got[0] == expected[0]
    np.testing.assert_allclose(_flat(got[1]), _flat(expected[1]), rtol=1e-13, atol=1e-15)


# ---- the pruning tutorial (minilora had no nn.utils.prune; module._forward_pre_hooks held (hook, flag) pairs) --
def _pruning_tutorial(lib):
    import importlib
    nn = lib.nn
    prune = importlib.import_module(lib.__name__ + ".nn.utils.prune")  # (torch: import torch.nn.utils.prune)

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 3), nn.Conv2d(6, 16, 3)
            self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    class FooBarPruningMethod(prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def compute_mask(self, t, default_mask):
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask
    lib.manual_seed(0)
    model = LeNet()
    module = model.conv1
    prune.random_unstructured(module, name="weight", amount=0.3)
    prune.l1_unstructured(module, name="bias", amount=3)
    prune.ln_structured(module, name="weight", amount=0.5, n=2, dim=0)
    for hook in module._forward_pre_hooks.values():
        if hook._tensor_name == "weight":
            break
    seen = [[type(h).__name__ for h in hook], list(model.state_dict()), module.weight, module.bias_mask]
    prune.remove(module, "weight")
    seen += [[n for n, _ in module.named_parameters()], [n for n, _ in module.named_buffers()], prune.is_pruned(model)]
    model = LeNet()
    prune.global_unstructured([(model.conv1, "weight"), (model.conv2, "weight"), (model.fc1, "weight"),
                               (model.fc2, "weight"), (model.fc3, "weight")],
                              pruning_method=prune.L1Unstructured, amount=0.2)
    seen += [int((m.weight == 0).sum()) for m in (model.conv1, model.conv2, model.fc1, model.fc2, model.fc3)]
    FooBarPruningMethod.apply(model.fc3, "bias")
    structured = prune.random_structured(nn.Linear(4, 6), "weight", amount=2, dim=0)
    seen += [model.fc3.bias_mask, structured.weight_mask, lib.rand(2)]
    for call in (lambda: prune.remove(LeNet().fc1, "weight"),
                 lambda: prune.l1_unstructured(nn.Linear(2, 2), "weight", 1.5)):
        with pytest.raises(ValueError) as error:
            call()
        seen.append(str(error.value)[-60:])
    return _plain(seen)


def test_pruning_tutorial_as_torch():
    assert _pruning_tutorial(ml) == _pruning_tutorial(torch)


def test_custom_function_nodes_print_as_torch():
    """The custom-Function tutorial prints its outputs: ``grad_fn=<MyExpBackward>`` (minilora:
    ``<_UserOutputBackward0>``), and the node's edges are one per tensor argument."""
    def run(lib):
        class MyExp(lib.autograd.Function):
            @staticmethod
            def forward(ctx, i):
                result = i.exp()
                ctx.save_for_backward(result)
                return result

            @staticmethod
            def backward(ctx, grad_output):
                result, = ctx.saved_tensors
                return grad_output * result

        class MulConstant(lib.autograd.Function):
            @staticmethod
            def forward(ctx, tensor, constant, other):
                ctx.constant = constant
                return tensor * constant, tensor + other

            @staticmethod
            def backward(ctx, grad_a, grad_b):
                return grad_a * ctx.constant + grad_b, None, grad_b
        x = lib.ones(2, requires_grad=True)
        y = MyExp.apply(x)
        a, b = MulConstant.apply(x * 2, 5.0, lib.ones(2))
        edges = [(None if f is None else f.name(), n) for f, n in a.grad_fn.next_functions]
        return repr(y), y.grad_fn.name(), repr(b), edges
    expected, got = _both(run)
    assert got == expected


def test_chain_and_stack_datasets_as_torch():
    """ChainDataset (``a + b`` of IterableDatasets: minilora refused it) and StackDataset: missing."""
    def run(lib):
        D = lib.utils.data

        class Stream(D.IterableDataset):
            def __init__(self, start, stop):
                self.start, self.stop = start, stop

            def __iter__(self):
                return iter(range(self.start, self.stop))

            def __len__(self):
                return self.stop - self.start
        chained = Stream(0, 3) + Stream(10, 12)
        images, labels = lib.arange(8.0).reshape(4, 2), lib.tensor([1, 0, 1, 1])
        stacked = D.StackDataset(D.TensorDataset(images), labels)
        named = D.StackDataset(image=images, label=labels)
        loaders = [list(D.DataLoader(chained, batch_size=2)), list(D.DataLoader(stacked, batch_size=3)),
                   list(D.DataLoader(named, batch_size=3))]
        with pytest.raises(ValueError) as error:
            D.StackDataset(images, labels[:3])
        return type(chained).__name__, len(chained), list(chained), stacked[1], named[2], loaders, str(error.value)
    expected, got = _both(run)
    assert got == expected


def test_fuse_batch_norm_and_rnn_base_as_torch():
    """nn.utils.fuse_conv_bn_eval / fuse_linear_bn_eval (inference recipes) and nn.RNNBase / RNNCellBase
    (init code's isinstance checks): missing."""
    def run(lib):
        nn = lib.nn
        lib.manual_seed(0)
        conv, bn = nn.Conv2d(3, 4, 3).double(), nn.BatchNorm2d(4).double()
        linear, bn1 = nn.Linear(5, 4).double(), nn.BatchNorm1d(4).double()
        transposed, bn_t = nn.ConvTranspose2d(3, 4, 2).double(), nn.BatchNorm2d(4).double()
        x = lib.randn(2, 3, 6, 6, dtype=lib.float64)
        bn(conv(x)), bn1(linear(lib.randn(8, 5, dtype=lib.float64))), bn_t(transposed(x))  # (running statistics)
        for m in (conv, bn, linear, bn1, transposed, bn_t):
            m.eval()
        fused = [nn.utils.fuse_conv_bn_eval(conv, bn), nn.utils.fuse_linear_bn_eval(linear, bn1),
                 nn.utils.fuse_conv_bn_eval(transposed, bn_t, transpose=True)]
        with pytest.raises(AssertionError) as error:
            nn.utils.fuse_conv_bn_eval(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
        kinds = [isinstance(nn.LSTM(2, 2), nn.RNNBase), isinstance(nn.GRUCell(2, 2), nn.RNNCellBase),
                 isinstance(nn.Linear(1, 1), nn.RNNBase), str(error.value)]
        return kinds, _plain([[m.weight, m.bias] for m in fused] + [fused[0](x) - bn(conv(x))])
    expected, got = _both(run)
    assert got[0] == expected[0]
    np.testing.assert_allclose(_flat(got[1]), _flat(expected[1]), rtol=1e-14, atol=1e-14)


def test_stateless_functional_call_as_torch():
    """torch 1.x's nn.utils.stateless.functional_call (MAML-style code): missing."""
    import warnings

    def run(lib):
        lib.manual_seed(0)
        layer = lib.nn.Linear(3, 2).double()
        weights = {"weight": lib.ones(2, 3, dtype=lib.float64)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = lib.nn.utils.stateless.functional_call(layer, weights, (lib.ones(1, 3, dtype=lib.float64),))
        return out, layer.weight, [(w.category.__name__, str(w.message)) for w in caught]
    expected, got = _both(run)
    assert got == expected
