"""The meta device touches nothing of size (round 22; benchmarks/meta_sweep.py is the sweep that found these):
each meta array is a range of never-written pages (device.unwritten_zeros), and an op on meta tensors reads
none of them past the first page its one-element stand-in run reads -- cross, unfold / fold, the FFTs, einsum
of one or three operands, the logical and bitwise ops, isclose, and the checks that read an index's values
(gather, sort, take_along_dim) among the ones that computed there. ``mincore`` tells which pages of an input the
OS had to back. torch's meta tensors are the oracle for shapes, dtypes and strides."""
import ctypes
import mmap
import sys

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")
torch.ones(1, device="meta") * 2  # (torch loads its meta kernels at their first use: here, not in a test)
ml_device = sys.modules["minilora.device"]  # (minilora.device is the function)
_LIBC = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def own_mappings(monkeypatch):
    """Every meta array made in the test in a mapping of its own (page-aligned), all of them listed."""
    made = []

    def place(self, nbytes):
        made.append(ml_device._UnwrittenMapping(-1, max(nbytes, 1), flags=self._FLAGS))
        made[-1].madvise(mmap.MADV_NOHUGEPAGE)  # (one read of a huge zero page would back 512 pages at once)
        return made[-1], 0
    monkeypatch.setattr(ml_device._UnwrittenPages, "_place", place)
    return made


def _backed_pages(mapping):
    """How many of ``mapping``'s pages the OS has backed (read or written)."""
    pages = -(-len(mapping) // mmap.PAGESIZE)
    found = (ctypes.c_ubyte * pages)()
    address = np.frombuffer(mapping, np.uint8).ctypes.data
    assert _LIBC.mincore(ctypes.c_void_p(address), ctypes.c_size_t(len(mapping)), found) == 0
    return sum(v & 1 for v in found)


def _ones(T, d, *shape, dtype=None):
    return T.ones(*shape, device=d, dtype=dtype or T.float32)


def _ids(T, d, *shape):
    return T.zeros(*shape, device=d, dtype=T.int64)


_CALLS = {  # (each input 16 pages or more)
    "cross": lambda T, d: T.cross(_ones(T, d, 4096, 3), _ones(T, d, 4096, 3), dim=1),
    "linalg.cross broadcast": lambda T, d: T.linalg.cross(_ones(T, d, 3, 4096), _ones(T, d, 3, 1), dim=0),
    "unfold": lambda T, d: T.nn.functional.unfold(_ones(T, d, 2, 8, 32, 32), 3, padding=1),
    "fold": lambda T, d: T.nn.functional.fold(_ones(T, d, 2, 36, 1024), (32, 32), 3, padding=1),
    "fft": lambda T, d: T.fft.fft(_ones(T, d, 16, 1024)),
    "rfft2": lambda T, d: T.fft.rfft2(_ones(T, d, 16, 32, 32, dtype=T.float64)),
    "irfft": lambda T, d: T.fft.irfft(_ones(T, d, 16, 1024, dtype=T.complex64), n=100),
    "ifftn": lambda T, d: T.fft.ifftn(_ones(T, d, 16, 32, 32), s=(8, 40)),
    "einsum trace": lambda T, d: T.einsum("bii->b", _ones(T, d, 16, 32, 32)),
    "einsum sum": lambda T, d: T.einsum("bij->j", _ones(T, d, 16, 32, 32)),
    "einsum of three": lambda T, d: T.einsum("bij,bjk,bkl->bil", _ones(T, d, 4, 32, 32), _ones(T, d, 4, 32, 32),
                                             _ones(T, d, 4, 32, 32)),
    "einsum outer": lambda T, d: T.einsum("i,j->ij", _ones(T, d, 4096), _ones(T, d, 8)),
    "logical_and": lambda T, d: T.logical_and(_ones(T, d, 16, 1024), _ones(T, d, 16, 1024)),
    "logical_not of a transpose": lambda T, d: T.logical_not(_ones(T, d, 1024, 16).t()),
    "bitwise_not": lambda T, d: ~_ids(T, d, 16, 1024),
    "bitwise_xor": lambda T, d: _ids(T, d, 16, 1024) ^ _ids(T, d, 1024).to(T.int32),
    "isclose": lambda T, d: T.isclose(_ones(T, d, 16, 1024), _ones(T, d, 16, 1024)),
    "gather": lambda T, d: T.gather(_ones(T, d, 16, 1024), 1, _ids(T, d, 16, 512)),
    "sort": lambda T, d: T.sort(_ones(T, d, 16, 1024), dim=-1),
    "take_along_dim": lambda T, d: T.take_along_dim(_ones(T, d, 16, 1024), _ids(T, d, 16, 512), 1),
    "logsigmoid": lambda T, d: T.nn.functional.logsigmoid(_ones(T, d, 16, 1024)),
    "prelu of a permuted view": lambda T, d: T.nn.functional.prelu(_ones(T, d, 4, 32, 128).permute(0, 2, 1),
                                                                   _ones(T, d, 128)),
    "adaptive_avg_pool2d": lambda T, d: T.nn.functional.adaptive_avg_pool2d(_ones(T, d, 2, 8, 32, 32), (5, 7)),
    "adaptive_max_pool2d": lambda T, d: T.nn.functional.adaptive_max_pool2d(_ones(T, d, 16, 32, 32), 3),
    "index of a transpose": lambda T, d: _ones(T, d, 64, 256).t()[_ids(T, d, 3, 5)],
    "indices apart in a permuted view": lambda T, d: _ones(T, d, 16, 32, 32).permute(2, 0, 1)[_ids(T, d, 3), :,
                                                                                          _ids(T, d, 3)],
    "binary_cross_entropy": lambda T, d: T.nn.functional.binary_cross_entropy(_ones(T, d, 16, 1024),
                                                                              _ones(T, d, 16, 1024)),
    "median": lambda T, d: T.median(_ones(T, d, 16, 1024)),
    "median along a dim": lambda T, d: _ones(T, d, 16, 1024).median(1, keepdim=True),
    "searchsorted": lambda T, d: T.searchsorted(_ones(T, d, 16, 1024), _ones(T, d, 16, 5), out_int32=True),
    "bucketize": lambda T, d: T.bucketize(_ones(T, d, 16, 1024), _ones(T, d, 4096)),
    "histc": lambda T, d: T.histc(_ones(T, d, 16, 1024), bins=7),
    "quantile": lambda T, d: T.quantile(_ones(T, d, 16, 1024), _ones(T, d, 3), dim=1),
    "grid_sample": lambda T, d: T.nn.functional.grid_sample(_ones(T, d, 2, 8, 32, 32), _ones(T, d, 2, 64, 64, 2),
                                                            align_corners=False),
    "grid_sample nearest": lambda T, d: T.nn.functional.grid_sample(_ones(T, d, 2, 8, 32, 32), _ones(T, d, 2, 64, 64, 2),
                                                                    mode="nearest", align_corners=True),
    "angle": lambda T, d: T.angle(_ones(T, d, 16, 1024)),
    "polar": lambda T, d: T.polar(_ones(T, d, 16, 1024), _ones(T, d, 1024)),
    "ihfft": lambda T, d: T.fft.ihfft(_ones(T, d, 16, 1024)),
    "frexp": lambda T, d: T.frexp(_ones(T, d, 16, 1024)),
    "mvlgamma": lambda T, d: T.mvlgamma(_ones(T, d, 16, 1024) * 3, 2),
    "entr": lambda T, d: T.special.entr(_ones(T, d, 16, 1024)),
    "erfcx": lambda T, d: T.special.erfcx(_ones(T, d, 16, 1024, dtype=T.float64)),
    "cummax": lambda T, d: _ones(T, d, 16, 1024).cummax(1),
    "pdist": lambda T, d: T.nn.functional.pdist(_ones(T, d, 64, 256)),
    "max_pool2d with indices, channels_last": lambda T, d: T.nn.functional.max_pool2d(
        _ones(T, d, 2, 8, 32, 32).contiguous(memory_format=T.channels_last), 2, return_indices=True),
    "adaptive_max_pool1d with indices": lambda T, d: T.nn.functional.adaptive_max_pool1d(_ones(T, d, 16, 8, 128), 5,
                                                                                         return_indices=True),
    "avg_pool3d": lambda T, d: T.nn.functional.avg_pool3d(_ones(T, d, 2, 4, 16, 16, 16), 2),
    "one_hot": lambda T, d: T.nn.functional.one_hot(_ids(T, d, 16, 1024), 5),
    "isin": lambda T, d: T.isin(_ones(T, d, 16, 1024), _ones(T, d, 4096)),
    "take": lambda T, d: T.take(_ones(T, d, 16, 1024), _ids(T, d, 4096)),
    "index_select": lambda T, d: _ones(T, d, 16, 1024).index_select(1, _ids(T, d, 4096)),
    "cdist p=1": lambda T, d: T.cdist(_ones(T, d, 4, 64, 32), _ones(T, d, 1, 48, 32), p=1),
    "trace": lambda T, d: T.trace(_ones(T, d, 128, 128)),
    "flip of a permuted view": lambda T, d: _ones(T, d, 16, 32, 32).permute(1, 2, 0).flip(-1),  # (its layout kept)
    "interpolate channels_last": lambda T, d: T.nn.functional.interpolate(
        _ones(T, d, 2, 8, 32, 32).contiguous(memory_format=T.channels_last), scale_factor=2),
    "interpolate bilinear channels_last": lambda T, d: T.nn.functional.interpolate(
        _ones(T, d, 2, 8, 32, 32).contiguous(memory_format=T.channels_last), size=(7, 9), mode="bilinear"),
}


def _described(out):
    outs = out if isinstance(out, tuple) else (out,)
    return [(tuple(t.shape), str(t.dtype).split(".")[-1], tuple(t.stride())) for t in outs]


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_meta_ops_read_no_page_past_their_stand_ins(name, own_mappings):
    call = _CALLS[name]
    out = call(ml, "meta")
    assert _described(out) == _described(call(torch, "meta"))
    backed = {len(m): _backed_pages(m) for m in own_mappings if len(m) >= 4 * mmap.PAGESIZE}
    assert backed and max(backed.values()) <= 1, backed  # (the stand-ins: one element of each, on its first page)


@pytest.mark.parametrize("call", [lambda T: T.amax(_ones(T, "meta", 4, 8)), lambda T: _ones(T, "meta", 4, 8).amin(),
                                  lambda T: _ones(T, "meta", 4, 8).sum(dim=())])
def test_reductions_over_every_dim_are_0d_on_meta(call):
    assert _described(call(ml)) == _described(call(torch))  # (was the input's whole shape)


def test_small_meta_tensors_cost_no_memory_of_their_size():
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE
    before = rss()
    kept = [ml.empty(16, 64, device="meta") for _ in range(5000)]  # (4 KiB each: calloc cleared them by writing)
    grown = rss() - before
    assert len(kept) == 5000 and grown < 5000 * 4096 / 4, grown  # (Python's objects only)


def test_a_meta_attention_mask_builds_no_bias_on_the_host():
    import tracemalloc
    from minilora.nn.llama import LlamaConfig, LlamaModel
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    with ml.device("meta"):
        model = LlamaModel(config)
    ids, mask = _ids(ml, "meta", 2, 512), _ids(ml, "meta", 2, 512)
    tracemalloc.start()
    try:
        out = model(ids, attention_mask=mask)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tuple(out.last_hidden_state.shape), out.last_hidden_state.device.type) == ((2, 512, 32), "meta")
    assert peak < 512 * 512  # (a [2, 1, 512, 512] float32 bias and its boolean masks were 3 MiB on the host)
    with pytest.raises(ValueError, match="attention_mask has shape"):  # (the mask is checked all the same)
        model(ids, attention_mask=_ids(ml, "meta", 2, 511))
    with pytest.raises(RuntimeError, match="used as it is"):  # (a 4-D integer one refused as with values)
        model(ids, attention_mask=_ids(ml, "meta", 2, 1, 512, 512))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_3d_convolution_and_max_pooling_results_are_in_torchs_c_order(device):
    # (the depth slices' results were a transpose: stride() claimed (.., 196, 1568, ..), and .view(-1) refused)
    def results(T, d):
        x = _ones(T, d, 2, 4, 8, 8, 8)
        return [T.nn.functional.conv3d(x, _ones(T, d, 6, 4, 3, 3, 3), _ones(T, d, 6), padding=1),
                T.nn.functional.max_pool3d(x, 2), T.nn.functional.conv3d(x[0], _ones(T, d, 6, 4, 3, 3, 3))]
    ours = results(ml, device)
    assert _described(tuple(ours)) == _described(tuple(results(torch, device)))
    assert all(t.is_contiguous() for t in ours) and ours[0].view(-1).shape == (2 * 6 * 512,)


def test_a_list_index_is_read_as_torch_reads_it():
    # torch (as NumPy once did) reads a list holding a sequence, slice, tensor, ... or None as a tuple: x[[[1], [2]]]
    # is x[[1], [2]], one element, where NumPy read one [2, 1] array of rows (minilora gave [2, 1, 6]: no error)
    for T in (torch, ml):
        x = T.arange(24.0).reshape(4, 6)
        with pytest.warns(UserWarning, match="non-tuple sequence for multidimensional indexing"):
            picked = x[[[1, 2], [0, 3]]]
        with pytest.warns(UserWarning):
            x[[[1], [2]]] = -1.0
        assert (tuple(picked.shape), picked.tolist(), x[1, 2].item()) == ((2,), [6.0, 15.0], -1.0)
    for T in (torch, ml):  # (a list of numbers stays one integer array, on meta too: it raised IndexError there)
        assert tuple(T.ones(4, 6, device="meta")[[1, 2]].shape) == (2, 6)


def test_tensor_of_a_tensor_stays_on_its_device_unless_a_default_is_set():
    # (torch's internal_new_from_data: the copy of a meta tensor is meta; minilora copied it to the default cpu,
    # which refused: 'Cannot copy out of meta tensor')
    def copies(T):
        with pytest.warns(UserWarning, match="copy construct"):
            kept = T.tensor(T.ones(3, 4, device="meta").t())
        with T.device("meta"):
            moved = T.tensor(T.ones(2, device="cpu"))
        return [(t.device.type, tuple(t.shape), tuple(t.stride())) for t in (kept, moved)]
    assert copies(ml) == copies(torch) == [("meta", (4, 3), (1, 4)), ("meta", (2,), (1,))]


_SHAPE_ERRORS = {  # (the errors a tutorial's first shape mistakes meet, on the CPU and on meta alike)
    "mm": lambda T, d: _ones(T, d, 3, 4) @ _ones(T, d, 5, 6),
    "linear of a batch": lambda T, d: T.nn.functional.linear(_ones(T, d, 2, 7, 3), _ones(T, d, 4, 5)),
    "broadcast": lambda T, d: _ones(T, d, 7, 2, 3) - _ones(T, d, 4, 1, 3),
    "broadcast of three": lambda T, d: T.addcmul(_ones(T, d, 3, 4), _ones(T, d, 3, 4), _ones(T, d, 2, 4)),
    "a loss's broadcast": lambda T, d: T.nn.functional.mse_loss(_ones(T, d, 4, 5), _ones(T, d, 3, 5)),
    "view": lambda T, d: _ones(T, d, 3, 4).view(5, -1),
}


@pytest.mark.parametrize("name", sorted(_SHAPE_ERRORS))
def test_shape_errors_are_torchs_on_the_cpu_and_on_meta(name):
    def raised(T, d):
        with pytest.raises(RuntimeError) as caught:
            _SHAPE_ERRORS[name](T, d)
        return str(caught.value)
    assert raised(ml, "cpu") == raised(ml, "meta") == raised(torch, "cpu")
