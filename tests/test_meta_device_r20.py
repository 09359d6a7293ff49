"""The meta device and device context managers, as torch 2.x: ``with torch.device("meta"): model = Model()``
builds shapes without memory or random draws, ``to_empty`` / ``load_state_dict(assign=True)`` give it
values, a meta tensor's values never leave it, and errors are torch's words. torch is the oracle, called
the way its users write these calls."""
import threading
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")
torch.ones(1, device="meta") * 2  # (torch loads its meta kernels at their first use, ~1.5 s: here, not in a test)


def _outcome(call):
    """What a call gave: ``("ok", repr)`` or ``(exception type name, message)``."""
    try:
        return "ok", repr(call())
    except Exception as exc:  # (compared with torch's, type and words)
        return type(exc).__name__, str(exc)


def _both(make):
    """``make(lib)`` run with torch and with minilora: the two outcomes."""
    return _outcome(lambda: make(torch)), _outcome(lambda: make(ml))


def test_meta_factories_and_repr_as_torchs():
    for make in (lambda T: T.empty(3, device="meta"),
                 lambda T: T.zeros(2, 3, dtype=T.float64, device="meta"),
                 lambda T: T.ones((), device="meta"),
                 lambda T: T.arange(5, device="meta"),
                 lambda T: T.tensor([1.0, 2.0], device="meta"),
                 lambda T: T.randn(2, 3, device="meta"),
                 lambda T: T.ones(2, 3, dtype=T.float16, device="meta", requires_grad=True) * 2,
                 lambda T: T.ones(2).to("meta"),
                 lambda T: T.empty_like(T.ones(4, device="meta")),
                 lambda T: T.nn.Linear(2, 3, device="meta").weight,
                 lambda T: T.device("meta"),
                 lambda T: (T.ones(2, 3, device="meta").t().stride(), T.ones(2, device="meta").is_meta,
                            T.ones(2, device="meta").is_cpu, T.ones(2).is_cpu, T.ones(2).is_meta)):
        ours, theirs = _both(make)
        assert ours == theirs


def test_device_context_manager_sets_the_default_nested_and_restores_it_after_an_exception():
    def story(T):
        seen = [T.get_default_device().type]
        meta = T.device("meta")
        with meta:
            seen += [T.get_default_device().type, T.ones(2).device.type, T.tensor([1, 2]).device.type,
                     T.ones(2, device="cpu").device.type, T.nn.Linear(2, 3).weight.device.type]
            with T.device("cpu"):
                seen += [T.get_default_device().type, T.zeros(1).device.type]
            with meta:  # (the same device object entered twice)
                seen.append(T.randn(1).device.type)
            seen.append(T.zeros(1).device.type)
        seen.append(T.zeros(1).device.type)
        try:
            with T.device("meta"):
                raise KeyError("inside")
        except KeyError:
            seen.append(T.zeros(1).device.type)
        T.set_default_device("meta")
        try:
            with T.device("cpu"):
                seen.append(T.get_default_device().type)
            seen.append(T.get_default_device().type)
        finally:
            T.set_default_device(None)
        return seen + [repr(T.get_default_device())]
    assert story(ml) == story(torch)


def test_the_default_device_is_the_calling_threads_as_torchs():
    def in_a_thread(T):
        seen = []
        with T.device("meta"):
            worker = threading.Thread(target=lambda: seen.append((T.get_default_device().type,
                                                                  T.ones(1).device.type)))
            worker.start()
            worker.join()
            seen.append(T.ones(1).device.type)
        return seen
    assert in_a_thread(ml) == in_a_thread(torch) == [("cpu", "cpu"), "meta"]


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_a_model_built_on_meta_takes_no_memory_and_no_draws():
    ml.manual_seed(0)
    torch.manual_seed(0)
    before = _rss_bytes()
    with ml.device("meta"):
        big = ml.nn.Linear(20000, 20000)  # 1.6 GB of float32 were it real
        ml.nn.Embedding(10, 4)
    ml.nn.Linear(3, 4, device="meta")
    ml.empty(5, device="meta").normal_()
    ml.randn(7, device="meta")
    assert _rss_bytes() - before < 50 * 2**20
    assert big.weight.is_meta and tuple(big.weight.shape) == (20000, 20000)
    with torch.device("meta"):
        torch.nn.Linear(2, 3)
        torch.nn.Embedding(10, 4)
    # the global generator did not move: the next draw is the first draw after the seed, as torch's
    np.testing.assert_array_equal(ml.randn(4).numpy(), torch.randn(4).numpy())


def test_a_meta_tensors_values_never_leave_it_in_torchs_words():
    for make in (lambda T: T.ones(1, device="meta").item(),
                 lambda T: T.ones((), device="meta").item(),
                 lambda T: bool(T.ones((), device="meta")),
                 lambda T: float(T.ones((), device="meta")),
                 lambda T: T.ones(2, device="meta").numpy(),
                 lambda T: T.ones(2, device="meta").numpy(force=True),
                 lambda T: T.ones(2, device="meta").tolist(),
                 lambda T: T.ones(2, device="meta").to("cpu"),
                 lambda T: T.ones(2, device="meta").cpu(),
                 lambda T: T.ones(2).copy_(T.ones(2, device="meta")),
                 lambda T: format(T.ones((), device="meta"), ".3f"),
                 lambda T: T.ones(2, device="meta").__dlpack__(),
                 lambda T: T.ones(2, device="meta").data_ptr(),
                 lambda T: T.ones(2, requires_grad=True).to("meta").sum().backward()):  # (its gradient: meta to cpu)
        ours, theirs = _both(make)
        assert ours == theirs


def test_a_meta_tensor_meeting_a_cpu_one_is_torchs_error():
    for make in (lambda T: T.ones(2, device="meta") + T.ones(2),
                 lambda T: T.ones(2) * T.ones(2, device="meta"),
                 lambda T: T.ones(2, device="meta") + T.tensor(1.0),  # a 0-d CPU tensor goes anywhere
                 lambda T: T.tensor(2.0) * T.ones(2, device="meta"),
                 lambda T: T.cat([T.ones(2, device="meta"), T.ones(2)]),
                 lambda T: T.nn.Linear(2, 3, device="meta")(T.ones(4, 2, device="meta")),
                 lambda T: T.nn.Linear(2, 3, device="meta")(T.ones(4, 2).t().t())):
        ours, theirs = _both(make)
        if ours[0] == theirs[0] == "ok":
            continue  # (grad_fn names aside: both are meta results of the shape checked here)
        assert ours == theirs
    assert tuple((ml.ones(2, device="meta") + ml.tensor(1.0)).shape) == (2,)


def test_data_dependent_ops_refuse_a_meta_tensor_as_torch():
    for make in (lambda T: T.ones(2, device="meta").nonzero(),
                 lambda T: T.argwhere(T.ones(2, device="meta")),
                 lambda T: T.where(T.ones(2, device="meta") > 0),
                 lambda T: T.ones(2, 2, device="meta")[T.ones(2, 2, dtype=T.bool, device="meta")],
                 lambda T: T.ones(3, device="meta").masked_select(T.ones(3, dtype=T.bool, device="meta")),
                 lambda T: T.unique(T.ones(2, device="meta")),
                 lambda T: T.ones(3, dtype=T.int64, device="meta").bincount(),
                 lambda T: T.equal(T.ones(2, device="meta"), T.ones(2, device="meta")),
                 lambda T: T.allclose(T.ones(2, device="meta"), T.ones(2, device="meta")),
                 lambda T: T.nn.functional.one_hot(T.zeros(3, dtype=T.int64, device="meta")),
                 lambda T: T.nn.functional.one_hot(T.zeros(3, dtype=T.int64, device="meta"), 5),
                 lambda T: T.ones(2, 2, device="meta").repeat_interleave(T.tensor([1, 2], device="meta"), dim=0),
                 lambda T: T.ones(2, 2, device="meta").repeat_interleave(T.tensor([1, 2], device="meta"), dim=0,
                                                                          output_size=3)):
        ours, theirs = _both(make)
        assert ours == theirs


def test_to_empty_and_load_state_dict_assign_give_a_meta_model_its_values():
    weights = {"weight": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "bias": [0.5, -0.5, 0.25]}

    def story(T):
        sd = {k: T.tensor(v) for k, v in weights.items()}
        seen = []
        lin = T.nn.Linear(2, 3, device="meta")
        seen.append(_outcome(lambda: lin.to("cpu")))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lin.load_state_dict(sd)  # (assign=False: a copy into meta is no copy)
        seen += [str(w.message) for w in caught] + [lin.weight.device.type]
        lin.load_state_dict(sd, assign=True)
        seen += [lin.weight.device.type, type(lin.weight).__name__, lin.weight.requires_grad,
                 lin(T.ones(1, 2)).tolist()]
        empty = T.nn.Linear(2, 3, device="meta").to_empty(device="cpu")
        seen += [empty.weight.device.type, tuple(empty.weight.shape), empty.weight.requires_grad]
        cpu = T.nn.Linear(2, 3)
        meta_sd = {"weight": T.ones(3, 2, device="meta"), "bias": T.zeros(3, device="meta")}
        kind, message = _outcome(lambda: cpu.load_state_dict(meta_sd))
        seen += [kind == "ok", message.split("\n")[1].replace("torch.Size", "Size")]
        return seen
    ours, theirs = story(ml), story(torch)
    assert ours[-1].replace("minilora.Size", "Size") == theirs[-1]  # (minilora prints its own Size class)
    assert ours[:-1] == theirs[:-1]


def test_a_meta_llama_forward_gives_meta_logits_of_the_right_shape():
    from minilora.nn.llama import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    with ml.device("meta"):
        model = LlamaForCausalLM(config)
        ids = ml.zeros(2, 5, dtype=ml.int64)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    out = model(ids, labels=ids)
    assert out.logits.is_meta and tuple(out.logits.shape) == (2, 5, 64)
    assert out.loss.is_meta and tuple(out.loss.shape) == ()
    out.loss.backward()
    assert model.lm_head.weight.grad.is_meta and tuple(model.lm_head.weight.grad.shape) == (64, 16)
    assert tuple(model(ml.tensor([[1, 2, 3]])).logits.shape) == (1, 3, 64)  # CPU ids into a meta model: meta
    model.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match="Tensor on device meta is not on the expected device cpu!"):
        model(ids)


def test_dropout_and_random_fills_on_meta_draw_nothing():
    def draws(T):
        T.manual_seed(3)
        x = T.ones(4, 3, device="meta")
        shapes = [tuple(T.nn.functional.dropout(x, 0.5).shape), tuple(T.bernoulli(x).shape),
                  tuple(T.nn.functional.alpha_dropout(x, 0.5, training=True).shape),
                  tuple(T.nn.functional.rrelu(x, training=True).shape),
                  tuple(T.nn.functional.gumbel_softmax(x).shape),
                  tuple(T.multinomial(T.ones(5, device="meta"), 2).shape), tuple(T.rand_like(x).shape)]
        x.uniform_()
        T.nn.init.kaiming_uniform_(x)
        return shapes, T.randn(3).tolist()
    assert draws(ml) == draws(torch)


def test_skip_init_builds_on_the_meta_device_as_torchs():
    def given_device(T):
        class Recorder(T.nn.Module):
            def __init__(self, size, device=None):
                super().__init__()
                self.seen = str(device)
                self.weight = T.nn.Parameter(T.empty(size, device=device))
                T.nn.init.normal_(self.weight)
        T.manual_seed(5)
        module = T.nn.utils.skip_init(Recorder, 3)
        return module.seen, module.weight.device.type, tuple(module.weight.shape), T.randn(2).tolist()
    assert given_device(ml) == given_device(torch)


def test_from_pretrained_builds_a_meta_skeleton_and_loads_the_files_values(monkeypatch):
    from minilora import models
    from minilora.nn import llama
    built_on, build = [], llama.LlamaForCausalLM.__init__
    monkeypatch.setattr(llama.LlamaForCausalLM, "__init__", lambda self, *args, **kwargs: (
        built_on.append(ml.get_default_device().type), build(self, *args, **kwargs))[-1])
    ml.manual_seed(0)
    model = models.load_base()
    torch.manual_seed(0)
    assert ml.randn(3).tolist() == torch.randn(3).tolist()  # (the load drew nothing from the stream seeded above)
    assert built_on == ["meta"]
    assert model.lm_head.weight is model.model.embed_tokens.weight  # (the tie kept)
    in_the_file = llama.load_checkpoint(models.BASE_DIR, True)
    for name, value in model.state_dict().items():
        stored = in_the_file["model.embed_tokens.weight" if name == "lm_head.weight" else name]
        assert value.device.type == "cpu"
        np.testing.assert_array_equal(value.numpy(), np.asarray(stored))
    fresh = llama.LlamaForCausalLM(model.config)  # (the rotary buffer is no weight of the file: computed again)
    np.testing.assert_array_equal(model.model.rotary_emb.inv_freq.numpy(), fresh.model.rotary_emb.inv_freq.numpy())


def test_meta_positions_never_pick_real_rows():
    """Positions from a meta tensor into a tensor with values: torch 2.13 answers rows of uninitialised memory on
    the CPU (its meta index is read as memory that holds nothing); minilora's meta zeros would pick row 0 as
    silently, so it raises torch's device error instead."""
    ids = ml.zeros(2, dtype=ml.int64, device="meta")
    for call in (lambda: ml.ones(3, 2).index_select(0, ids), lambda: ml.nn.functional.embedding(ids, ml.ones(3, 2)),
                 lambda: ml.ones(3, 2).index_add(0, ids, ml.ones(2, 2))):
        with pytest.raises(RuntimeError, match="^Tensor on device meta is not on the expected device cpu!$"):
            call()
    assert ml.nn.functional.embedding(ids, ml.ones(3, 2, device="meta")).is_meta


def test_meta_tensors_go_through_torch_files_both_ways(tmp_path):
    ours, theirs = tmp_path / "ours.pt", tmp_path / "theirs.pt"
    ml.save({"w": ml.nn.Linear(2, 3, device="meta").weight, "x": ml.ones(4, dtype=ml.float64, device="meta")}, ours)
    torch.save({"w": torch.nn.Linear(2, 3, device="meta").weight, "x": torch.ones(4, dtype=torch.float64,
                                                                                 device="meta")}, theirs)
    for loaded in (torch.load(ours), ml.load(theirs), ml.load(ours)):
        assert repr(loaded["w"]) == repr(torch.load(theirs)["w"])
        assert repr(loaded["x"]) == "tensor(..., device='meta', size=(4,), dtype=torch.float64)"


def test_layers_built_on_meta_draw_nothing_as_torchs():
    def after_building(T):
        T.manual_seed(0)
        with T.device("meta"):
            layers = [T.nn.Conv2d(3, 4, 3), T.nn.LSTM(3, 4), T.nn.MultiheadAttention(4, 2),
                      T.nn.TransformerEncoderLayer(8, 2, 16), T.nn.Bilinear(2, 3, 4), T.nn.BatchNorm1d(3)]
        devices = {p.device.type for layer in layers for p in list(layer.parameters()) + list(layer.buffers())}
        return devices, T.randn(3).tolist()
    assert after_building(ml) == after_building(torch)
