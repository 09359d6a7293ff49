"""torch's top-level names minilora lacked (round 22): each compared with torch 2.13 as users call it."""
import array
import warnings

import numpy as np
import pytest

import minilora

torch = pytest.importorskip("torch")


def _same(ours, theirs):
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    assert tuple(ours.shape) == tuple(theirs.shape)


def _error(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except Exception as e:  # noqa: BLE001  (the type and words are what is compared)
            return type(e), str(e).split(" (Triggered internally")[0]
    return None


@pytest.mark.parametrize("name", ["detach", "is_nonzero", "is_same_size", "is_signed", "is_conj", "is_neg",
                                  "is_inference", "chain_matmul", "nuclear_norm", "frobenius_norm",
                                  "constant_pad_nd", "pdist", "conv3d", "conv_transpose3d", "max_pool3d",
                                  "frombuffer", "from_dlpack", "get_num_interop_threads",
                                  "set_num_interop_threads", "set_flush_denormal"])
def test_the_name_exists(name):
    assert callable(getattr(minilora, name))


def test_queries_answer_as_torch():
    x = np.arange(6.0).reshape(2, 3)
    for ours, theirs in ((minilora.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)),
                         (minilora.tensor([0], dtype=minilora.uint8), torch.tensor([0], dtype=torch.uint8))):
        for name in ("is_signed", "is_conj", "is_neg", "is_inference"):
            assert getattr(minilora, name)(ours) == getattr(torch, name)(theirs), name
        assert minilora.detach(ours).requires_grad is False
        assert minilora.is_same_size(ours, ours[:1]) == torch.is_same_size(theirs, theirs[:1])
        assert ours.is_same_size(ours) and ours.is_conj() is False and ours.is_neg() is False
        assert minilora.get_device(ours) == ours.get_device() == torch.get_device(theirs) == -1
    for value in ([[3]], [0.0], [float("nan")], [], [1, 2]):
        assert _error(lambda: minilora.is_nonzero(minilora.tensor(value))) == \
            _error(lambda: torch.is_nonzero(torch.tensor(value)))
        if len(value) == 1:
            assert minilora.tensor(value).is_nonzero() == torch.tensor(value).is_nonzero()


def test_old_norms_and_chain_matmul_as_torch():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 4), (4, 5), (5, 2)))
    m, t = minilora.tensor, torch.tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(minilora.nuclear_norm(m(a)).numpy(), torch.nuclear_norm(t(a)).numpy(), rtol=1e-5)
        assert minilora.nuclear_norm(m(a), (0, 2), keepdim=True).shape == torch.nuclear_norm(t(a), (0, 2), True).shape
        assert minilora.nuclear_norm(m(a[0]), True).shape == torch.nuclear_norm(t(a[0]), True).shape
        _same(minilora.frobenius_norm(m(a), (0, 1)), torch.frobenius_norm(t(a), (0, 1)))
        _same(minilora.frobenius_norm(m(a), dim=[2], keepdim=True), torch.frobenius_norm(t(a), dim=[2], keepdim=True))
        np.testing.assert_allclose(minilora.chain_matmul(m(a[0]), m(b), m(c)).numpy(),
                                   torch.chain_matmul(t(a[0]), t(b), t(c)).numpy(), rtol=1e-6)
        _same(minilora.chain_matmul(m(b)), torch.chain_matmul(t(b)))
    for ours, theirs in ((lambda: minilora.frobenius_norm(m(a), (0, 1, 2)), lambda: torch.frobenius_norm(t(a), (0, 1, 2))),
                         (lambda: minilora.chain_matmul(), lambda: torch.chain_matmul()),
                         (lambda: minilora.chain_matmul(m(c[0])), lambda: torch.chain_matmul(t(c[0])))):
        assert _error(ours) == _error(theirs)


def test_functional_spellings_as_torch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 4, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 2, 2, 2)).astype(np.float32)
    m, t = minilora.tensor, torch.tensor
    _same(minilora.max_pool3d(m(x), 2), torch.max_pool3d(t(x), 2))
    _same(minilora.max_pool3d(m(x), kernel_size=3, stride=1, padding=1), torch.max_pool3d(t(x), kernel_size=3, stride=1, padding=1))
    np.testing.assert_allclose(minilora.conv3d(m(x), m(w), None, 1, 1).numpy(),
                               torch.conv3d(t(x), t(w), None, 1, 1).numpy(), rtol=1e-5, atol=1e-5)
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3, 4))
    np.testing.assert_allclose(minilora.conv_transpose3d(m(x), m(wt), stride=2).numpy(),
                               torch.conv_transpose3d(t(x), t(wt), stride=2).numpy(), rtol=1e-5, atol=1e-5)
    y = x[0, 0, 0]
    _same(minilora.constant_pad_nd(m(y), [1, 2], 2.5), torch.constant_pad_nd(t(y), [1, 2], 2.5))
    _same(minilora.constant_pad_nd(m(y), pad=(1, -1, 0, 2)), torch.constant_pad_nd(t(y), pad=(1, -1, 0, 2)))
    assert _error(lambda: minilora.constant_pad_nd(m(y), [1])) == _error(lambda: torch.constant_pad_nd(t(y), [1]))
    np.testing.assert_allclose(minilora.pdist(m(y)).numpy(), torch.pdist(t(y)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(minilora.pdist(m(y), p=1).numpy(), torch.pdist(t(y), p=1).numpy(), rtol=1e-6)


def test_frombuffer_shares_and_checks_as_torch():
    ours_buffer, their_buffer = array.array("i", [1, 2, 3, 4]), array.array("i", [1, 2, 3, 4])
    ours, theirs = minilora.frombuffer(ours_buffer, dtype=minilora.int32), torch.frombuffer(their_buffer, dtype=torch.int32)
    ours_buffer[0] = their_buffer[0] = 9
    _same(ours, theirs)
    _same(minilora.frombuffer(ours_buffer, dtype=minilora.int16, count=3, offset=2),
          torch.frombuffer(their_buffer, dtype=torch.int16, count=3, offset=2))
    grad = minilora.frombuffer(bytearray(b"abcd"), dtype=minilora.float32, requires_grad=True)
    assert grad.requires_grad and grad.is_leaf
    for kwargs in ({"count": 5}, {"offset": 16}, {"offset": 3}, {"count": 0}, {"offset": -1}):
        assert _error(lambda: minilora.frombuffer(ours_buffer, dtype=minilora.int32, **kwargs)) == \
            _error(lambda: torch.frombuffer(their_buffer, dtype=torch.int32, **kwargs))
    for buffer in (bytearray(), [1, 2]):
        assert _error(lambda: minilora.frombuffer(buffer, dtype=minilora.uint8)) == \
            _error(lambda: torch.frombuffer(buffer, dtype=torch.uint8))
    import minilora.buffer_sharing as sharing
    sharing._warned.discard("frombuffer")
    with pytest.warns(UserWarning, match="The given buffer is not writable"):
        _same(minilora.frombuffer(b"abcd", dtype=minilora.uint8), torch.tensor([97, 98, 99, 100], dtype=torch.uint8))


def test_dlpack_shares_memory_both_ways():
    array_ = np.arange(4.0)
    ours = minilora.from_dlpack(array_)
    array_[0] = 7
    assert ours[0].item() == 7
    theirs = torch.arange(3.0)
    ours = minilora.from_dlpack(theirs)
    theirs[1] = 5
    assert ours.tolist() == [0.0, 5.0, 2.0]
    source = minilora.arange(6.0).reshape(2, 3)
    seen_by_torch = torch.from_dlpack(source.t())
    source[0, 0] = 3
    assert seen_by_torch.tolist() == [[3.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    capsule = minilora.utils.dlpack.to_dlpack(source)
    assert minilora.utils.dlpack.from_dlpack(capsule).tolist() == source.tolist()
    assert minilora.from_dlpack(torch.utils.dlpack.to_dlpack(torch.ones(2))).tolist() == [1.0, 1.0]
    assert _error(lambda: minilora.ones(2, requires_grad=True).__dlpack__()) == \
        _error(lambda: torch.ones(2, requires_grad=True).__dlpack__())


def test_interop_threads_rules_as_torch():
    import minilora.cpu_switches as switches
    saved = switches._interop["threads"]
    try:
        switches._interop["threads"] = None
        assert minilora.get_num_interop_threads() >= 1
        for bad in (0, "a"):
            assert _error(lambda: minilora.set_num_interop_threads(bad)) == (
                RuntimeError, "set_num_interop_threads expects a positive integer" if bad == 0 else
                "set_num_interop_threads expects an int, but got str")
        minilora.set_num_interop_threads(3)
        assert minilora.get_num_interop_threads() == 3
        assert _error(lambda: minilora.set_num_interop_threads(2)) == (
            RuntimeError, "Error: cannot set number of interop threads after parallel work has started or "
            "set_num_interop_threads called")
    finally:
        switches._interop["threads"] = saved


def test_flush_denormal_really_flushes_as_torch():
    assert _error(lambda: minilora.set_flush_denormal(1)) == _error(lambda: torch.set_flush_denormal(1))
    try:
        assert minilora.set_flush_denormal(True) == torch.set_flush_denormal(True) is True
        _same(minilora.tensor([1e-39]), torch.tensor([1e-39]))
        _same(minilora.tensor([1e-38]) * 0.01, torch.tensor([1e-38]) * 0.01)
        assert minilora.tensor([1e-39]).item() == 0.0
    finally:
        assert minilora.set_flush_denormal(False) is True
        torch.set_flush_denormal(False)
    assert minilora.tensor([1e-39]).item() != 0.0


def test_flush_denormal_reaches_the_blocks_of_a_split_op():
    saved = minilora.get_num_threads()
    tiny = minilora.full((1 << 21,), 1e-39)  # (denormal, made before flushing; 2M: parallel.add splits it)
    try:
        minilora.set_num_threads(2)
        minilora.set_flush_denormal(True)
        assert minilora.count_nonzero(tiny + tiny).item() == 0  # (add splits its halves across threads)
        minilora.set_flush_denormal(False)
        assert minilora.count_nonzero(tiny + tiny).item() == 1 << 21
    finally:
        minilora.set_flush_denormal(False)
        minilora.set_num_threads(saved)


@pytest.mark.parametrize("source", ["L.detach(2.0)", "L.get_device(2.0)", "L.is_signed(2.0)", "L.pdist(2.0)", "L.is_same_size(x, 2.0)",
                                    "L.conv_transpose3d(x, 2.0)", "L.constant_pad_nd(2.0, [1, 1])"])
def test_a_number_for_a_tensor_refused_in_torchs_words(source):
    outcomes = [_error(lambda: eval(source, {"L": lib, "x": lib.ones(2, 2)})) for lib in (torch, minilora)]
    assert outcomes[1] == outcomes[0]


def test_set_default_tensor_type_as_torch():
    import minilora.type_objects as types
    types._warned_deprecated.clear()
    try:
        with pytest.warns(UserWarning, match=r"set_default_tensor_type\(\) is deprecated as of PyTorch 2.1"):
            minilora.set_default_tensor_type("torch.DoubleTensor")
        assert minilora.tensor([1.5]).dtype == minilora.float64 and minilora.ones(1).dtype == minilora.float64
        minilora.set_default_tensor_type(minilora.FloatTensor)
        assert minilora.get_default_dtype() == minilora.float32
        for ours, theirs in (("torch.IntTensor", "torch.IntTensor"), (minilora.float64, torch.float64),
                             ("foo", "foo"), (minilora.LongTensor, torch.LongTensor)):
            assert _error(lambda: minilora.set_default_tensor_type(ours)) == \
                _error(lambda: torch.set_default_tensor_type(theirs))
    finally:
        minilora.set_default_dtype(minilora.float32)
        torch.set_default_dtype(torch.float32)
