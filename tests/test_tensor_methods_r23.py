"""Round 23: the Tensor methods and storages users reach for that were AttributeErrors (minilora/storage.py,
minilora/ops/rare_methods.py): fill_diagonal_, untyped_storage()/storage() as views of the tensor's memory,
set_/is_set_to, share_memory_, dim_order, apply_/map_/map2_, resize/resize_as, slice_inverse, module_load,
the boolean properties libraries query and the refusals (sparse, quantized, removed functions), each
compared with torch as its users call it (positional and keyword)."""
import copy
import os
import pickle
import sys
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def plain(value):
    """A result both libraries spell the same: a tensor's values (NaN as a string), dtype and shape; a dtype by
    its name; tuples item by item."""
    if isinstance(value, (torch.Tensor, ml.Tensor)):
        return ("tensor", plain(value.tolist()), str(value.dtype).replace("torch.", ""), tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return type(value).__name__, [plain(v) for v in value]
    if isinstance(value, (torch.dtype, np.dtype)):
        return str(value).replace("torch.", "")
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def outcome(lib, fn, torch_error=None):
    """fn(lib)'s result (plain) or its exception (type and message), the warnings it gave, and the exception's
    type. minilora's exception is named by torch's type where it is one (minilora's ShapeError is a RuntimeError).
    TypedStorage's warn-once flag is reset first, so each call sees the first warning."""
    (torch.storage if lib is torch else ml.storage)._reset_warn_typed_storage_removal()
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = ("value", plain(fn(lib)))
        except Exception as e:  # noqa: BLE001 (compared with torch's)
            error = type(e)
            kind = torch_error if torch_error is not None and isinstance(e, torch_error) else error
            result = ("error", kind.__name__, str(e))
    return (result, [str(w.message) for w in caught]), error


def same(fn, message=True, warned=True):
    expected, error = outcome(torch, fn)
    got, _ = outcome(ml, fn, error)
    if not message and expected[0][0] == "error":
        expected, got = (expected[0][:2], expected[1]), (got[0][:2], got[1])
    if not warned:
        expected, got = expected[0], got[0]
    assert got == expected


# ---- fill_diagonal_ -------------------------------------------------------------------------------------------
FILL_DIAGONAL = [
    lambda t: t.zeros(7, 3).fill_diagonal_(5),
    lambda t: t.zeros(7, 3).fill_diagonal_(5, wrap=True),
    lambda t: t.zeros(7, 3).fill_diagonal_(5, True),
    lambda t: t.zeros(4, 2).fill_diagonal_(fill_value=7, wrap=True),
    lambda t: t.zeros(4, 3).fill_diagonal_(7, wrap=True),  # (height == width + 1: nothing wraps)
    lambda t: t.zeros(3, 7).fill_diagonal_(5, wrap=True),
    lambda t: t.zeros(8, 2)[::2].fill_diagonal_(7, wrap=True),
    lambda t: t.zeros(2, 6).t().fill_diagonal_(1, wrap=True),
    lambda t: t.zeros(3, 3, 3).fill_diagonal_(5),
    lambda t: t.zeros(3, 6)[:, ::2].fill_diagonal_(1),
    lambda t: t.zeros(1, 3).expand(3, 3).fill_diagonal_(1),
    lambda t: t.zeros(0, 3).fill_diagonal_(5),
    lambda t: t.zeros(3, 3, dtype=t.int64).fill_diagonal_(2.7),
    lambda t: t.zeros(3, 3, dtype=t.uint8).fill_diagonal_(-1),
    lambda t: t.zeros(2, 2, dtype=t.bool).fill_diagonal_(0.5),
    lambda t: t.zeros(3, 3).fill_diagonal_(t.tensor(2.)),
    lambda t: t.zeros(3, 3).fill_diagonal_(float("nan")),
    lambda t: t.zeros(3, 3, 2).fill_diagonal_(5),
    lambda t: t.zeros(3).fill_diagonal_(5),
    lambda t: t.zeros(3, 3, dtype=t.int8).fill_diagonal_(300),
    lambda t: t.zeros(3, 3).fill_diagonal_(fill_value=5, wrap=1),
    lambda t: t.zeros(3, 3).fill_diagonal_(t.tensor([1., 2.])),
    lambda t: t.zeros(3, 3, requires_grad=True).fill_diagonal_(1),
]


@pytest.mark.parametrize("case", range(len(FILL_DIAGONAL)))
def test_fill_diagonal_as_torch(case):
    same(FILL_DIAGONAL[case])


def test_fill_diagonal_of_a_non_leaf_differentiates_as_torch():
    def run(t):
        w = t.arange(1., 10.).reshape(3, 3).requires_grad_()
        y = w * 2
        y.fill_diagonal_(0)
        (y * t.arange(9.).reshape(3, 3)).sum().backward()
        return y, w.grad
    same(run)


# ---- storages: a view of the tensor's memory -------------------------------------------------------------------
PAIRS = {  # (x, y): does y share x's storage, and how many bytes does each storage hold?
    "slice": lambda t: (lambda x: (x, x[1:]))(t.arange(6.)),
    "view": lambda t: (lambda x: (x, x.view(3, 2)))(t.arange(6.).reshape(2, 3)),
    "transpose": lambda t: (lambda x: (x, x.t()))(t.zeros(2, 3)),
    "clone": lambda t: (lambda x: (x, x.clone()))(t.zeros(2, 3)),
    "contiguous of a transpose": lambda t: (lambda x: (x, x.t().contiguous()))(t.zeros(2, 3)),
    "contiguous itself": lambda t: (lambda x: (x, x.contiguous()))(t.zeros(2, 3)),
    "detach": lambda t: (lambda x: (x, x.detach()))(t.ones(4, requires_grad=True)),
    "expand": lambda t: (lambda x: (x, x.expand(3, 3)))(t.zeros(1, 3)),
    "reshape of a transpose": lambda t: (lambda x: (x, x.t().reshape(6)))(t.zeros(2, 3)),
    "to the same dtype": lambda t: (lambda x: (x, x.to(t.float32)))(t.zeros(3)),
    "to another dtype": lambda t: (lambda x: (x, x.to(t.float64)))(t.zeros(3)),
    "arithmetic": lambda t: (lambda x: (x, x + 1))(t.zeros(3)),
    "unbind": lambda t: (lambda x: (x, x.unbind(0)[1]))(t.zeros(2, 3)),
    "split": lambda t: (lambda x: (x, x.split(2)[1]))(t.zeros(5)),
    "select, 0-d": lambda t: (lambda x: (x, x[1]))(t.zeros(3)),
}


@pytest.mark.parametrize("name", PAIRS)
def test_untyped_storage_tells_views_from_copies_as_torch(name):
    def run(t):
        x, y = PAIRS[name](t)
        sx, sy = x.untyped_storage(), y.untyped_storage()
        return (sx.data_ptr() == sy.data_ptr(), sx.nbytes(), sy.nbytes(), len(sy), sy.size(),
                y.data_ptr() - sy.data_ptr(), sy.element_size(), str(sy.device))
    same(run)


def test_a_storage_is_the_tensors_memory_both_ways():
    def run(t):
        x = t.arange(6.).reshape(2, 3)
        s = x.untyped_storage()
        before = (s[4], s[-1], s[4:8].tolist(), s[4:8].data_ptr() - x.data_ptr(), s.tolist()[:8], list(s)[4:8])
        s[0:4] = 0  # (a write through the storage shows in the tensor)
        s[5] = 64
        typed = x.storage()
        typed[2] = 7.5
        typed[-1] = t.tensor(3.)
        return before, x, typed[1], typed[-1], typed.tolist(), len(typed), typed.nbytes(), typed.element_size(), \
            typed.dtype, typed.data_ptr() == x.data_ptr(), s is x.untyped_storage(), s is x.t().untyped_storage(), \
            typed.untyped() is s, typed._untyped_storage is s, typed.type(), typed.pickle_storage_type()
    same(run)


STORAGE_ERRORS = [
    lambda t: t.zeros(6).untyped_storage()[100],
    lambda t: t.zeros(6).storage()[6],
    lambda t: t.zeros(6).storage()[1:3],
    lambda t: t.zeros(6).storage()[1.0],
    lambda t: t.zeros(6).untyped_storage()[1.0],
    lambda t: t.zeros(6).untyped_storage().__setitem__(0, 2.7),
    lambda t: t.zeros(6).untyped_storage()[0:8:2],
    lambda t: t.zeros(6).untyped_storage().__setitem__(slice(None, None, -1), 1),
    lambda t: (t.arange(6.).untyped_storage()[-4:].tolist(), t.zeros(6).untyped_storage()[30:40].nbytes()),
    lambda t: t.zeros(6).untyped_storage()[-30],
    lambda t: t.zeros(6).untyped_storage().__setitem__(25, 1),
    lambda t: t.zeros(6).storage().__setitem__(7, 9.),
    lambda t: (lambda x: (x.storage().__setitem__(slice(0, 4, 2), 9.), x.tolist(), x.storage().fill_(2).tolist(),
                          x))(t.arange(6.)),
    lambda t: t.UntypedStorage([1.5]),
    lambda t: t.UntypedStorage(3.0),
    lambda t: t.zeros(6).untyped_storage()[t.tensor(1)],
    lambda t: t.zeros(6).storage().__setitem__(0, "a"),
    lambda t: t.zeros(2, device="meta").untyped_storage()[0],
    lambda t: t.zeros(2, device="meta").untyped_storage().tolist(),
    lambda t: (lambda s: (s.data_ptr(), s.nbytes()))(t.zeros(2, device="meta").untyped_storage()),
    lambda t: t.zeros(6).untyped_storage().copy_(t.zeros(3).untyped_storage()),
    lambda t: t.zeros(6).storage().copy_(t.ones(6, dtype=t.int64).storage()),
    lambda t: t.zeros(3).untyped_storage().copy_(t.ones(3).untyped_storage()).tolist(),
    lambda t: (lambda s: (s.__setitem__(0, 300), s.__setitem__(1, -1), s.tolist()))(t.zeros(1).untyped_storage()),
    lambda t: t.tensor([1.5, 2], dtype=t.bfloat16).storage().tolist(),
    lambda t: t.tensor([1 + 2j]).storage()[0],
    lambda t: list(t.arange(3, dtype=t.int16).untyped_storage()),
    lambda t: (t.empty(0).untyped_storage().data_ptr(), t.tensor(3.).untyped_storage().nbytes()),
    lambda t: t.zeros(3).storage().double().tolist(),
    lambda t: t.arange(3, dtype=t.uint8).untyped_storage().float().tolist(),
    lambda t: (t.zeros(3).untyped_storage().type(), t.zeros(3).untyped_storage().is_pinned(),
               t.zeros(3).storage().is_cuda, t.zeros(3).untyped_storage().get_device()),
]


@pytest.mark.parametrize("case", range(len(STORAGE_ERRORS)))
def test_storage_reads_writes_and_errors_as_torch(case):
    same(STORAGE_ERRORS[case])


def test_storage_classes_and_printing_as_torch():
    def run(t):
        x = t.arange(3)
        return (t.is_storage(x.storage()), t.is_storage(x.untyped_storage()), t.is_storage(x), t.is_storage(3),
                isinstance(x.storage(), t.LongStorage), isinstance(x.storage(), t.FloatStorage),
                isinstance(x.untyped_storage(), t.TypedStorage), t.Storage is t.FloatStorage, t.FloatStorage.dtype,
                t.FloatStorage([1, 2]).tolist(), t.UntypedStorage(5).size(), t.UntypedStorage([1, 2, 300]).tolist(),
                t.UntypedStorage(b"abc").tolist(), t.TypedStorage(3, dtype=t.float16).size(),
                t.TypedStorage([1, 2], dtype=t.int64).tolist(), t.TypedStorage().size(), t.UntypedStorage().nbytes(),
                repr(x.storage()), str(x[:1].untyped_storage()), repr(t.zeros(2, device="meta").untyped_storage()),
                repr(t.empty(0).untyped_storage()), x.storage_type().__name__,
                t.TypedStorage(wrap_storage=t.zeros(3).untyped_storage(), dtype=t.float16).size())
    same(run)


def test_storages_copy_and_pickle_as_torch():
    def run(t):
        x = t.arange(4.)
        s = x.untyped_storage()
        deep = copy.deepcopy([s, s])
        typed = pickle.loads(pickle.dumps(x.storage()))
        return (deep[0] is deep[1], deep[0].data_ptr() != s.data_ptr(), deep[0].tolist() == s.tolist(),
                type(typed).__name__, typed.dtype, typed.tolist(), copy.deepcopy(x.storage()).tolist())
    same(run)


def test_typed_storage_warns_once_as_torch():
    def run(t):  # (outcome resets the warn-once flag first)
        x = t.zeros(2)
        x.storage()
        x.storage()
        return x.storage().size()
    same(run)


def test_set_and_is_set_to_as_torch():
    def run(t):
        x = t.arange(6.).reshape(2, 3)
        s = x.untyped_storage()
        a = t.empty(0).set_(s, 1, (2, 2), (1, 2))
        b = t.empty(0).set_(s, storage_offset=1, size=(2, 2), stride=(1, 2))
        c = t.empty(0).set_(x)
        d = t.empty(0).set_(source=x.storage())
        e = t.empty(0).set_(s, 0, t.Size([2, 3]))
        f = t.empty(0, dtype=t.int32).set_(s)
        a[0, 0] = 100.  # (the same memory as x)
        return (x, a, b, c, d, e, f, t.empty(3).set_(), x.is_set_to(x), x.is_set_to(x[:]), x.is_set_to(c),
                x.is_set_to(x.view(3, 2)), x.is_set_to(x.clone()), x[0].is_set_to(x[0]), x[0].is_set_to(x[1]),
                c.untyped_storage() is s, a.storage_offset(), a.stride())
    same(run)


SET_ERRORS = [
    lambda t: t.empty(0, dtype=t.int64).set_(t.zeros(2)),
    lambda t: t.ones(2, requires_grad=True).set_(t.zeros(2)),
    lambda t: t.empty(0).set_(t.zeros(2).untyped_storage(), 0, (2, 2), (-1, 1)),
]


SET_IN_GRAPH = [
    lambda t: (lambda y: (y.set_(t.ones(2)), type(y.grad_fn).__name__, y.requires_grad))(
        t.arange(3.).requires_grad_() * 2),
    lambda t: (lambda y: (y.set_(t.ones(2)), y.sum().backward()))(t.arange(3.).requires_grad_() * 2),
    lambda t: (lambda y: (y.set_(t.ones(2, requires_grad=True)), type(y.grad_fn).__name__))(t.zeros(3)),
    lambda t: (lambda y: (y.set_(t.ones(2)), y.grad_fn, y.requires_grad))(t.zeros(3)),
    lambda t: t.zeros(3).detach().set_(t.ones(2)),
]


@pytest.mark.parametrize("case", range(len(SET_IN_GRAPH)))
def test_set_in_the_graph_as_torch(case):
    same(SET_IN_GRAPH[case])


@pytest.mark.parametrize("case", range(len(SET_ERRORS)))
def test_set_errors_as_torch(case):
    same(SET_ERRORS[case])


def test_set_past_the_storage_is_refused_by_name():
    with pytest.raises(NotImplementedError, match="torch grows the storage"):
        ml.empty(0).set_(ml.zeros(6).untyped_storage(), 1, (20, 2))


def test_storage_resize_and_share_memory_as_torch():
    def run(t):
        u = t.UntypedStorage(4)
        u[0] = 9
        resized = u.resize_(6).tolist()[:1]  # (torch leaves the other bytes uninitialised)
        shared = t.UntypedStorage(4).share_memory_()
        x = t.arange(4.)
        before = x.is_shared()
        y = x.share_memory_()
        return (resized, u.resizable(), shared.is_shared(), before, y is x, x.is_shared(), x, x.view(2, 2).is_shared(),
                x.untyped_storage().is_shared(), x.storage().is_shared())
    same(run)
    with pytest.raises(RuntimeError, match="Trying to resize storage that is not resizable"):
        ml.UntypedStorage(4).share_memory_().resize_(2)


def test_a_storage_moved_off_an_address_is_not_handed_out_for_it():
    """What a resize_ leaves when its old memory's address is reused: a cache entry for another memory."""
    x = ml.zeros(3)
    stranger = ml.UntypedStorage(12)
    ml.UntypedStorage._of_owner[id(x._array)] = stranger
    assert x.untyped_storage() is not stranger and x.untyped_storage().data_ptr() == x.data_ptr()


def test_share_memory_is_seen_by_a_forked_child():
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    x = ml.zeros(3).share_memory_()
    pid = os.fork()
    if pid == 0:  # (the child writes and leaves at once)
        x[1] = 5.
        os._exit(0)
    os.waitpid(pid, 0)
    assert x.tolist() == [0., 5., 0.]


def test_a_shared_models_weights_are_trained_by_a_forked_child_as_torchs():
    """Hogwild's start: model.share_memory(), then a forked process steps the optimizer on the same weights."""
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")

    def run(t):
        t.manual_seed(0)
        net = t.nn.Sequential(t.nn.Linear(3, 2), t.nn.BatchNorm1d(2))
        shared = net.share_memory() is net and all(p.is_shared() for p in [*net.parameters(), *net.buffers()])
        pid = os.fork()
        if pid == 0:
            optimizer = t.optim.SGD(net[0].parameters(), lr=0.1)
            x = t.arange(12.).reshape(4, 3)
            (net[0](x) * t.tensor([1., -2.])).sum().backward()
            optimizer.step()
            net[1](x[:, :2])  # (a training forward: the running statistics, buffers, change)
            os._exit(0)
        os.waitpid(pid, 0)
        # (the running mean to 4 places: minilora's batch-norm statistics are 1 ulp from torch's here)
        return shared, [p.detach() for p in net.parameters()], (net[1].running_mean * 1e4).round()
    same(run)


def test_share_memory_of_a_parameter_and_its_refusals():
    p = ml.nn.Parameter(ml.ones(3))  # (its base, the ones, is held by nothing else: the parameter lets go of it)
    assert p.share_memory_() is p and p.is_shared() and type(p) is ml.nn.Parameter
    t = ml.ones(3)
    with pytest.raises(NotImplementedError, match="view's memory"):
        ml.nn.Parameter(t).share_memory_()  # (t still shows the memory)


def test_moving_memory_that_others_view_is_refused_by_name():
    """NumPy cannot re-point an array: moving memory another tensor views would silently stop sharing it."""
    x = ml.zeros(3)
    y = x[1:]
    with pytest.raises(NotImplementedError, match="other tensors or storages view"):
        x.share_memory_()
    with pytest.raises(NotImplementedError, match="view's memory"):
        y.share_memory_()
    with pytest.raises(NotImplementedError, match="cannot resize a tensor's storage"):
        x.untyped_storage().resize_(0)
    assert not x.is_shared() and y.data_ptr() - x.data_ptr() == 4


# ---- layout questions ------------------------------------------------------------------------------------------
DIM_ORDER = [
    lambda t: t.zeros(2, 3).dim_order(),
    lambda t: t.zeros(2, 3).t().dim_order(),
    lambda t: t.zeros(2, 3, 5, 7).transpose(1, 2).dim_order(),
    lambda t: t.zeros(2, 1, 3).transpose(0, 1).dim_order(),
    lambda t: t.zeros(2, 3).expand(4, 2, 3).dim_order(),
    lambda t: t.zeros(2, 3, 4, 5).to(memory_format=t.channels_last).dim_order(),
    lambda t: t.zeros(2, 3, 4, 5).to(memory_format=t.channels_last).dim_order(ambiguity_check=True),
    lambda t: t.zeros(2, 1, 4, 5).dim_order(ambiguity_check=True),
    lambda t: t.zeros(2, 1, 4, 5).dim_order(ambiguity_check=[t.contiguous_format, t.channels_last]),
    lambda t: t.zeros(1, 2, 3, 4).dim_order(ambiguity_check=[t.contiguous_format, t.channels_last]),
    lambda t: t.zeros(2, 1, 4, 5).dim_order(ambiguity_check=[t.contiguous_format]),
    lambda t: t.zeros(2, 1, 4, 5).dim_order(ambiguity_check=1),
    lambda t: t.zeros(2, 1, 4, 5).dim_order(ambiguity_check=[1]),
    lambda t: t.zeros(2, 3, 4, 5)[:, :, ::2].dim_order(ambiguity_check=True),
    lambda t: t.zeros(4, 6)[:, ::2].t().dim_order(),
    lambda t: t.zeros(3, 2, 4).permute(2, 0, 1).dim_order(ambiguity_check=True),
    lambda t: (t.tensor(1.).dim_order(), t.zeros(4)[::2].dim_order()),
    lambda t: t.zeros(2, 3).dim_order(ambiguity_check=[t.channels_last]),
    lambda t: t.zeros(1, 2, 1, 4, 4).permute(1, 4, 3, 0, 2).dim_order(),  # (5-D: prims asks channels_last only)
    lambda t: t.zeros(4, 3, 1, 1, 1).permute(3, 1, 0, 4, 2).dim_order(),
    lambda t: t.zeros(1, 2, 1, 2, 1).permute(2, 4, 0, 1, 3).dim_order(ambiguity_check=[t.contiguous_format,
                                                                                      t.channels_last]),
]


@pytest.mark.parametrize("case", range(len(DIM_ORDER)))
def test_dim_order_as_torch(case):
    same(DIM_ORDER[case])


def test_const_data_ptr_as_subclass_and_chalf():
    x = ml.arange(6.).reshape(2, 3)
    assert x.const_data_ptr() == x.data_ptr() and x[1].const_data_ptr() == x.data_ptr() + 12
    p = x.as_subclass(ml.nn.Parameter)
    assert type(p) is ml.nn.Parameter and type(x) is ml.Tensor and p.data_ptr() == x.data_ptr()
    p[0, 0] = 9.
    assert x[0, 0].item() == 9.
    same(lambda t: t.zeros(2).as_subclass(int))

    def graph(t):
        w = t.ones(2, requires_grad=True)
        p = w.as_subclass(t.Tensor)
        q = (w * 2).as_subclass(t.nn.Parameter)
        ((p * 3).sum() + (q * 5).sum()).backward()
        return p.is_leaf, type(p.grad_fn).__name__, type(q).__name__, q.is_leaf, type(q.grad_fn).__name__, w.grad
    same(graph)
    with pytest.raises(NotImplementedError, match="complex32"):
        x.chalf()


# ---- a Python function over the elements ------------------------------------------------------------------------
APPLY = [
    lambda t: t.arange(6.).reshape(2, 3).apply_(lambda v: v * 2),
    lambda t: t.arange(3).apply_(lambda v: v / 2),
    lambda t: t.arange(6.).reshape(2, 3).t().apply_(float),
    lambda t: t.arange(3, dtype=t.uint8).apply_(lambda v: -1),
    lambda t: t.zeros(3, dtype=t.bool).apply_(lambda v: 2),
    lambda t: t.zeros(2, dtype=t.float16).apply_(lambda v: 1e6),
    lambda t: t.tensor([1 + 1j]).apply_(lambda v: v * 2),
    lambda t: t.zeros(2).apply_(lambda v: "a"),
    lambda t: t.zeros(2).apply_(lambda v: 1 + 1j),
    lambda t: t.arange(3).apply_(lambda v: 2 ** 70),
    lambda t: t.ones(2, dtype=t.int64).apply_(lambda v: 1.5 + 0j),
    lambda t: t.arange(3, dtype=t.int8).apply_(lambda v: 127.9),  # (c10's overflow check, on the float)
    lambda t: t.arange(3, dtype=t.uint8).apply_(lambda v: 256),
    lambda t: t.arange(3).apply_(lambda v: 2.0 ** 63),  # (in range as a double: cast, wraps)
    lambda t: t.arange(3).apply_(lambda v: float("nan")),
    lambda t: t.zeros(2).apply_(lambda v: 1e40),
    lambda t: t.ones(3, requires_grad=True).apply_(float),
    lambda t: t.zeros(3, device="meta").apply_(float).shape,
    lambda t: t.arange(6.).reshape(2, 3).map_(t.ones(3), lambda a, b: a + b),
    lambda t: t.arange(6.).reshape(2, 3).map_(t.ones(2, 1) * 2, callable=lambda a, b: a * b),
    lambda t: t.arange(6.).reshape(2, 3).map_(t.ones(3, dtype=t.int64), lambda a, b: a + b),
    lambda t: t.arange(6.).reshape(2, 3).map_(t.ones(4), lambda a, b: a + b),
    lambda t: t.arange(6.).reshape(2, 3).map_(3, lambda a, b: a),
    lambda t: t.ones(2).map_(t.ones(2, requires_grad=True), lambda a, b: a * b),
    lambda t: t.arange(6.).reshape(2, 3).map2_(t.ones(3), t.ones(2, 1), lambda a, b, c: a + b + c),
    lambda t: t.arange(6.).reshape(2, 3).map2_(t.ones(3), t.ones(3, dtype=t.int64), lambda a, b, c: a),
]


@pytest.mark.parametrize("case", range(len(APPLY)))
def test_apply_map_map2_as_torch(case):
    same(APPLY[case])


# ---- resize, resize_as, slice_inverse, module_load, grad_dtype, record_stream -----------------------------------
RESIZE = [
    lambda t: t.arange(6.).reshape(2, 3).resize(3, 2),
    lambda t: t.arange(6.).reshape(2, 3).resize((3, 2)),
    lambda t: t.arange(6.).reshape(2, 3).resize(4),
    lambda t: t.arange(6.).reshape(2, 3).resize_as(t.zeros(3, 2)),
    lambda t: t.arange(6.).reshape(2, 3).resize_as(t.zeros(8)),
    lambda t: (lambda w: (lambda r: (r, type(r.grad_fn).__name__, r.sum().backward(), w.grad))(w.resize(1, 2)))(
        t.ones(2, requires_grad=True)),
    lambda t: (lambda w: type(w.resize_as(t.zeros(2, 1)).grad_fn).__name__)(t.ones(2, requires_grad=True)),
    lambda t: (lambda x: x.resize(6).data_ptr() == x.data_ptr())(t.arange(6.).reshape(2, 3)),
]


@pytest.mark.parametrize("case", range(len(RESIZE)))
def test_deprecated_resize_as_torch(case):
    same(RESIZE[case])


OTHERS = [
    lambda t: (lambda x: x.slice_inverse(x[:1], 0, 0, 1))(t.arange(6.).reshape(2, 3)),
    lambda t: (lambda x: x.slice_inverse(x[:, 1:], dim=1, start=1))(t.arange(6.).reshape(2, 3)),
    lambda t: t.zeros(1, 3).slice_inverse(t.zeros(2, 3), 0, 1, 2),
    lambda t: (lambda x: (x.module_load(t.ones(2, 3)), x))(t.zeros(2, 3)),
    lambda t: (lambda x: (x.module_load(t.ones(2, 3), assign=True), x))(t.zeros(2, 3)),
    lambda t: t.zeros(2, 3).module_load(t.ones(2, 3, dtype=t.int64)),
    lambda t: t.zeros(2, 3).module_load(t.ones(3, 2)),
    lambda t: t.ones(2, requires_grad=True).module_load(t.zeros(2)),
    lambda t: (t.zeros(2).grad_dtype, t.ones(2, requires_grad=True).grad_dtype, t.arange(2).grad_dtype),
    lambda t: setattr(t.ones(2, requires_grad=True) * 2, "grad_dtype", t.float32),
    lambda t: (t.ones(2, requires_grad=True) * 2).grad_dtype,
    lambda t: t.zeros(2).record_stream(None),
    lambda t: t.zeros(2).record_stream(1),
]


@pytest.mark.parametrize("sizes", [((2, 3), (3, 2)), ((2, 3), (4,)), ((2, 3), (2, 2, 3)), ((2, 3), (5, 1, 3)),
                                   ((1, 3), (2, 3)), ((2, 3), (1, 1, 3)), ((2, 3), (1, 3))])
def test_copy_and_expand_shape_errors_as_torch(sizes):
    """module_load is copy_: its shape errors are torch's (TensorIterator's), as expand's are."""
    same(lambda t: t.zeros(*sizes[0]).copy_(t.ones(*sizes[1])))
    same(lambda t: t.ones(*sizes[1]).expand(*sizes[0]))


@pytest.mark.parametrize("case", range(len(OTHERS)))
def test_slice_inverse_module_load_grad_dtype_record_stream_as_torch(case):
    same(OTHERS[case], warned=case != 9)  # (torch's grad_dtype setter warns as a non-leaf's .grad read, then refuses)


def test_grad_dtype_casts_gradients_and_checks_assignments_as_torch():
    def run(t):
        w = t.ones(2, requires_grad=True)
        refused = []
        for value in (t.zeros(2, dtype=t.float64), t.zeros(2, dtype=t.int64), t.zeros(2, dtype=t.bfloat16)):
            try:
                w.grad = value
            except RuntimeError as e:
                refused.append(str(e))
        w.grad_dtype = t.float16
        w.grad = t.zeros(2, dtype=t.float16)
        w.grad = None
        (w * 3).sum().backward()
        first = w.grad.clone()
        (w * 3).sum().backward()  # (added in float16)
        chosen = w.grad_dtype
        w.grad_dtype = None  # (any dtype: a float64 .grad keeps its dtype as float32 gradients add into it)
        w.grad = t.zeros(2, dtype=t.float64)
        (w * 3).sum().backward()
        x = t.ones(2)
        x.grad_dtype = t.float64
        return refused, first, chosen, w.grad, w.grad_dtype, x.grad_dtype, t.ones(2).grad_dtype
    same(run)
    same(lambda t: setattr(t.ones(2, requires_grad=True), "grad_dtype", "float"))


# ---- what libraries ask before they pick a path, and what a dense tensor refuses -------------------------------
FLAGS = ["is_sparse", "is_sparse_csr", "is_quantized", "is_mkldnn", "is_nested", "is_xpu", "is_mps", "is_ipu",
         "is_xla", "is_vulkan", "is_maia", "is_mtia", "is_meta"]


def test_boolean_properties_as_torch():
    same(lambda t: ([getattr(t.zeros(2), name) for name in FLAGS], t.zeros(2).is_distributed(),
                    t.zeros(2, 3).sparse_dim(), t.zeros(2, 3).dense_dim()))
    assert all(isinstance(getattr(ml.Tensor, name), property) for name in FLAGS)


REFUSALS = ["is_coalesced", "coalesce", "indices", "values", "crow_indices", "col_indices", "ccol_indices",
            "row_indices", "int_repr", "q_scale", "q_zero_point", "qscheme", "q_per_channel_scales",
            "q_per_channel_zero_points", "q_per_channel_axis"]


@pytest.mark.parametrize("name", REFUSALS)
def test_sparse_and_quantized_queries_of_a_dense_tensor_refuse_as_torch(name):
    same(lambda t: getattr(t.zeros(2, 3), name)(), message=name not in REFUSALS[8:])


@pytest.mark.parametrize("call", [lambda t: t.zeros(2, 3).eig(), lambda t: t.zeros(2, 2).lstsq(t.zeros(2, 2)),
                                  lambda t: t.zeros(2, 2).solve(t.zeros(2, 2)), lambda t: t.zeros(2, 2).symeig(),
                                  lambda t: t.zeros(2, 2).smm(t.zeros(2, 2)),
                                  lambda t: t.zeros(2, 2).sspaddmm(t.zeros(2, 2), t.zeros(2, 2))])
def test_removed_and_sparse_only_methods_refuse_as_torch(call):
    same(call)


@pytest.mark.parametrize("call", [lambda t: t.zeros(2).xpu(), lambda t: t.zeros(2).ipu(), lambda t: t.zeros(2).mtia(),
                                  lambda t: t.zeros(2).reinforce(1), lambda t: (t.zeros(2).volatile, t.zeros(2).name),
                                  lambda t: setattr(t.zeros(2), "volatile", True)])
def test_other_devices_and_removed_attributes_as_torch(call):
    same(call)


@pytest.mark.parametrize("call", [lambda: ml.zeros(2).to_mkldnn(), lambda: ml.zeros(2).to_padded_tensor(0.)])
def test_mkldnn_and_nested_layouts_are_refused_by_name(call):
    with pytest.raises(NotImplementedError, match="mkldnn|nested"):
        call()


def test_a_meta_views_storage_offset_and_storage_as_torch():
    same(lambda t: (lambda x: (x[1:].storage_offset(), x[1:].untyped_storage().nbytes(), x[1:].data_ptr(),
                               x.as_strided((2,), (2,), 1).shape))(t.zeros(4, device="meta")))


def test_dense_answers_as_torch():
    same(lambda t: (lambda x: (x.to_dense() is x, x.to_dense(dtype=t.float64), x.dequantize() is x,
                               t.arange(3).dequantize()))(t.arange(6.).reshape(2, 3)))


@pytest.mark.parametrize("call", [lambda: ml.zeros(2, 3).to_sparse(), lambda: ml.zeros(2, 3).to_sparse_csr(),
                                  lambda: ml.zeros(2, 3).to_sparse(layout=ml.sparse_coo),
                                  lambda: ml.sparse_coo_tensor([[0]], [1.], (2,)),
                                  lambda: ml.zeros(2).sparse_mask(ml.zeros(2))])
def test_sparse_layouts_are_refused_by_name(call):
    with pytest.raises(NotImplementedError, match="sparse tensors are not supported"):
        call()


def test_every_name_this_round_adds_is_torchs():
    added = ["fill_diagonal_", "untyped_storage", "storage", "storage_type", "set_", "is_set_to", "share_memory_",
             "is_shared", "const_data_ptr", "dim_order", "as_subclass", "chalf", "apply_", "map_", "map2_", "resize",
             "resize_as", "record_stream", "slice_inverse", "module_load", "grad_dtype", *FLAGS, *REFUSALS]
    assert [n for n in added if not hasattr(ml.Tensor, n)] == []
    assert all(hasattr(torch.Tensor, n) for n in added)
    assert sys.modules["minilora.storage"].UntypedStorage is ml.UntypedStorage
    assert np.dtype(ml.FloatStorage.dtype) == np.float32


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_storages_on_cupy_arrays(monkeypatch):
    """The cuda path (CuPy arrays) through tests/fake_cupy.py's stand-in: the same answers as the CPU's (but
    addresses: the stand-in has no device memory to point at, so no data_ptr, storage_offset, fill_diagonal_)."""
    import fake_cupy
    fake_cupy.install(monkeypatch)

    def run(device):
        x = ml.arange(6., device=device).reshape(2, 3)
        s = x.untyped_storage()
        s[0:4] = 0
        typed = x.storage()
        typed[1] = 9.
        y = ml.empty(0, device=device).set_(s, 1, (2, 2), (1, 2))
        return (s.nbytes(), x[1].untyped_storage() is s, x.clone().untyped_storage() is s,
                x.t().untyped_storage() is s, s.tolist()[:8], typed.tolist(), str(s.device), y.tolist(), x.dim_order(),
                x.t().dim_order(), x.record_stream(None) if device == "cuda" else None,
                x.is_shared() == (device == "cuda"), s.is_shared() == (device == "cuda"))
    assert run("cuda")[:6] == run("cpu")[:6] and run("cuda")[7:] == run("cpu")[7:]
    assert run("cuda")[6] == "cuda"
