"""Shape rules for the meta ops that still computed on the meta zeros (minilora/ops/meta.py): integer-array
indexing (a sequence classifier's last-token pick), index_put / index_add / index_copy / index_fill, scatter,
scatter_add, scatter_reduce, einsum, sort / argsort / topk, cumprod, prod, logsumexp, interpolate,
conv_transpose, avg_pool, repeat, diag_embed, vector_norm, binary_cross_entropy_with_logits, any / all,
smooth_l1_loss, glu, logcumsumexp (embedding_bag, kthvalue and mode refused meta tensors). Each gives torch's
meta shape, dtype and strides while the op's forward runs on one element of each input only; a bad shape raises
as torch's. The norms' meta results compute none of torch's kernels' bits. torch's meta tensors are the oracle,
called the way their users write them."""
import numpy as np
import pytest

import minilora as ml
from minilora.tensor import Function

torch = pytest.importorskip("torch")
ml.bfloat16  # (ml_dtypes loads at its first use: here, not in a test)
torch.ones(1, device="meta") * 2  # (torch loads its meta kernels at their first use: here, not in a test)


def _described(call):
    """A call's result (or each of a tuple's): shape, dtype name and strides, or its error's type."""
    try:
        out = call()
    except Exception as exc:  # (compared with torch's)
        return type(exc).__name__
    outs = tuple(out) if isinstance(out, tuple) else (out,)
    return [(tuple(t.shape), str(t.dtype).split(".")[-1], _strides(t)) for t in outs]


def _strides(t):
    try:
        return tuple(t.stride())
    except NotImplementedError as exc:  # (minilora's refusal where it does not know torch's)
        return type(exc).__name__


def _ones(T, d, *shape, dtype=None):
    return T.ones(*shape, device=d, dtype=dtype or T.float32)


def _ids(T, d, *shape):
    return T.zeros(*shape, device=d, dtype=T.int64)


_CALLS = {
    "last token of each row": lambda T, d: _ones(T, d, 4, 16, 8)[T.arange(4, device=d), _ids(T, d, 4)],
    "rows by an index": lambda T, d: _ones(T, d, 16, 8)[_ids(T, d, 5)],
    "rows by a CPU index": lambda T, d: _ones(T, d, 16, 8)[T.tensor([[3], [5]]), [6, 7]],
    "index between slices": lambda T, d: _ones(T, d, 6, 16, 8)[:, _ids(T, d, 2, 3)],
    "indices apart": lambda T, d: _ones(T, d, 6, 16, 8)[_ids(T, d, 3), :, _ids(T, d, 3)],
    "int and index": lambda T, d: _ones(T, d, 6, 16, 8)[1, :, _ids(T, d, 3)],
    "index of a float16 view": lambda T, d: _ones(T, d, 6, 16, dtype=T.float16)[2:][_ids(T, d, 3)],
    "index_put": lambda T, d: _ones(T, d, 16, 8).index_put((_ids(T, d, 3),), _ones(T, d, 8)),
    "index_put accumulate": lambda T, d: T.index_put(_ones(T, d, 16, 8), (_ids(T, d, 3),), _ones(T, d, 3, 8), True),
    "index_put at a CPU index": lambda T, d: _ones(T, d, 16, 8).index_put((T.tensor([5]),), _ones(T, d, 8)),
    "index_put of a transpose": lambda T, d: _ones(T, d, 8, 16).t().index_put((_ids(T, d, 3),), _ones(T, d, 8)),
    "index_add": lambda T, d: _ones(T, d, 16, 8).index_add(0, _ids(T, d, 3), _ones(T, d, 3, 8), alpha=2),
    "index_copy": lambda T, d: T.index_copy(_ones(T, d, 16, 8), 1, _ids(T, d, 2), _ones(T, d, 16, 2)),
    "index_fill of a transpose": lambda T, d: _ones(T, d, 8, 16).t().index_fill(0, _ids(T, d, 3), -1.0),
    "scatter": lambda T, d: _ones(T, d, 16, 8).scatter(1, _ids(T, d, 16, 2), _ones(T, d, 16, 3)),
    "scatter at a CPU index": lambda T, d: _ones(T, d, 16, 8).scatter(1, T.tensor([[5, 7]]), 1.0),
    "index_select at a CPU index": lambda T, d: _ones(T, d, 16, 8).index_select(0, T.tensor([5, 9])),
    "scatter of a value": lambda T, d: T.scatter(_ones(T, d, 16, 8), 0, _ids(T, d, 2, 8), 0.5),
    "scatter_add": lambda T, d: _ones(T, d, 16, 8).scatter_add(0, _ids(T, d, 3, 8), _ones(T, d, 3, 8)),
    "scatter_add of a transpose": lambda T, d: _ones(T, d, 8, 16).t().scatter_add(0, _ids(T, d, 3, 8),
                                                                                   _ones(T, d, 3, 8)),
    "scatter_reduce": lambda T, d: _ones(T, d, 16, 8).scatter_reduce(1, _ids(T, d, 16, 2), _ones(T, d, 16, 2),
                                                                     "amax", include_self=False),
    "einsum attention scores": lambda T, d: T.einsum("bhqd,bhkd->bhqk", _ones(T, d, 2, 4, 16, 8),
                                                     _ones(T, d, 2, 4, 16, 8)),
    "einsum laid out by torch's bmm": lambda T, d: T.einsum("bhqk,bhkd->bqhd", _ones(T, d, 2, 4, 16, 16),
                                                            _ones(T, d, 2, 4, 16, 8)),
    "sort": lambda T, d: _ones(T, d, 16, 8).sort(0, descending=True),
    "sort of a transpose": lambda T, d: T.sort(_ones(T, d, 8, 16).t(), -1),
    "argsort": lambda T, d: _ones(T, d, 16, 8).argsort(1),
    "topk": lambda T, d: _ones(T, d, 16, 8).topk(3),
    "topk along dim 0 of a transpose": lambda T, d: T.topk(_ones(T, d, 8, 16).t(), 2, dim=0, largest=False),
    "take_along_dim": lambda T, d: T.take_along_dim(_ones(T, d, 16, 8), _ids(T, d, 16, 2), 1),
    "cumprod": lambda T, d: _ones(T, d, 16, 8).cumprod(1),
    "prod": lambda T, d: _ones(T, d, 16, 8).prod(0, keepdim=True),
    "prod of ints": lambda T, d: _ids(T, d, 16, 8).to(T.int32).prod(1),
    "logsumexp": lambda T, d: T.logsumexp(_ones(T, d, 2, 16, 8), dim=(0, 2)),
    "interpolate nearest": lambda T, d: T.nn.functional.interpolate(_ones(T, d, 1, 2, 4, 4), scale_factor=2),
    "interpolate bilinear": lambda T, d: T.nn.functional.interpolate(_ones(T, d, 1, 2, 4, 4), size=(7, 9),
                                                                     mode="bilinear"),
    "interpolate bilinear, generic kernel": lambda T, d: T.nn.functional.interpolate(
        _ones(T, d, 1, 2, 4, 4), size=(70, 90), mode="bilinear", align_corners=True),
    "interpolate bicubic": lambda T, d: T.nn.functional.interpolate(_ones(T, d, 1, 2, 4, 4), scale_factor=1.5,
                                                                    mode="bicubic"),
    "interpolate linear": lambda T, d: T.nn.functional.interpolate(_ones(T, d, 2, 3, 5), size=8, mode="linear"),
    "conv_transpose2d": lambda T, d: T.nn.functional.conv_transpose2d(_ones(T, d, 2, 4, 3, 3), _ones(T, d, 4, 3, 2, 2),
                                                                      stride=2, output_padding=1),
    "grouped conv_transpose2d": lambda T, d: T.nn.functional.conv_transpose2d(
        _ones(T, d, 1, 4, 3, 2), _ones(T, d, 4, 3, 2, 2), groups=2, dilation=2),
    "conv_transpose1d": lambda T, d: T.nn.functional.conv_transpose1d(_ones(T, d, 2, 4, 5), _ones(T, d, 4, 3, 3),
                                                                      _ones(T, d, 3), stride=3),
    "avg_pool2d": lambda T, d: T.nn.functional.avg_pool2d(_ones(T, d, 2, 3, 5, 3), 2, ceil_mode=True),
    "avg_pool1d": lambda T, d: T.nn.functional.avg_pool1d(_ones(T, d, 2, 3, 9), 3, stride=2, padding=1),
    "repeat": lambda T, d: _ones(T, d, 2, 3).repeat(2, 4, 1),
    "diag_embed": lambda T, d: T.diag_embed(_ones(T, d, 2, 5), offset=-1),
    "diag of a vector": lambda T, d: T.diag(_ones(T, d, 5), 2),
    "vector_norm": lambda T, d: T.linalg.vector_norm(_ones(T, d, 3, 16), ord=3, dim=-1, keepdim=True),
    "bce with logits": lambda T, d: T.nn.functional.binary_cross_entropy_with_logits(_ones(T, d, 3, 16),
                                                                                     _ones(T, d, 3, 16)),
    "embedding_bag of rows": lambda T, d: T.nn.functional.embedding_bag(_ids(T, d, 2, 3), _ones(T, d, 10, 4)),
    "any along a dim": lambda T, d: (_ones(T, d, 4, 8) > 0).any(1),
    "all": lambda T, d: T.all(_ones(T, d, 4, 8, dtype=T.int64)),
    "smooth_l1_loss": lambda T, d: T.nn.functional.smooth_l1_loss(_ones(T, d, 3, 8), _ones(T, d, 3, 8), beta=0.5),
    "glu": lambda T, d: T.nn.functional.glu(_ones(T, d, 3, 8), dim=-1),
    "logcumsumexp": lambda T, d: _ones(T, d, 3, 8).logcumsumexp(0),
    "kthvalue": lambda T, d: _ones(T, d, 3, 8).kthvalue(2, 1),
    "mode of a transpose": lambda T, d: T.mode(_ones(T, d, 8, 3).t(), 0, keepdim=True),
    "embedding_bag at offsets": lambda T, d: T.nn.functional.embedding_bag(
        _ids(T, d, 7), _ones(T, d, 10, 4, dtype=T.float64), _ids(T, d, 3), mode="max", include_last_offset=True),
    "conv1d with a bias": lambda T, d: T.nn.functional.conv1d(_ones(T, d, 2, 4, 9), _ones(T, d, 6, 4, 3),
                                                              _ones(T, d, 6)),
    "bce with logits none": lambda T, d: T.nn.functional.binary_cross_entropy_with_logits(
        _ones(T, d, 3, 16), _ones(T, d, 3, 16), pos_weight=_ones(T, d, 16), reduction="none"),
}

# the same ops given a bad shape: the error torch's meta kernel raises (minilora's op raises it from its own run).
# (torch's meta index_put does not check its values' shape, nor its meta sort the dim: minilora's neither, and
# raises the CPU's IndexError for the dim)
_BAD_SHAPES = {
    "scatter": lambda T, d: _ones(T, d, 16, 8).scatter(1, _ids(T, d, 17, 2), _ones(T, d, 17, 2)),
    "scatter_add": lambda T, d: _ones(T, d, 16, 8).scatter_add(0, _ids(T, d, 3, 8), _ones(T, d, 2, 8)),
    "einsum attention scores": lambda T, d: T.einsum("bhqd,bhkd->bhqk", _ones(T, d, 2, 4, 16, 8),
                                                     _ones(T, d, 2, 4, 16, 7)),
    "topk": lambda T, d: _ones(T, d, 16, 8).topk(9),
    "logsumexp": lambda T, d: _ones(T, d, 16, 8).logsumexp(2),
    "int and index": lambda T, d: _ones(T, d, 6, 16, 8)[6, :, _ids(T, d, 3)],
    "index_add": lambda T, d: _ones(T, d, 16, 8).index_add(0, _ids(T, d, 3), _ones(T, d, 4, 8)),
    "index_fill of a transpose": lambda T, d: _ones(T, d, 8, 16).t().index_fill(0, _ids(T, d, 3, 1), -1.0),
    "conv_transpose2d": lambda T, d: T.nn.functional.conv_transpose2d(_ones(T, d, 2, 4, 3, 3),
                                                                      _ones(T, d, 4, 3, 2, 2), padding=3),
    "repeat": lambda T, d: _ones(T, d, 2, 3).repeat(4, 1),
    "bce with logits": lambda T, d: T.nn.functional.binary_cross_entropy_with_logits(_ones(T, d, 3, 16),
                                                                                     _ones(T, d, 3, 15)),
    "embedding_bag of rows": lambda T, d: T.nn.functional.embedding_bag(_ids(T, d, 2, 3), _ones(T, d, 10, 4),
                                                                        _ids(T, d, 2)),
    "glu": lambda T, d: T.nn.functional.glu(_ones(T, d, 3, 7)),
    "kthvalue": lambda T, d: _ones(T, d, 3, 8).kthvalue(9, 1),
}


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_meta_results_have_torchs_shape_dtype_and_strides_from_one_element(name, monkeypatch):
    call = _CALLS[name]
    theirs = _described(lambda: call(torch, "meta"))
    assert _described(lambda: call(ml, "cpu")) == theirs  # (minilora's CPU result is torch's)
    seen = _spy_forwards(monkeypatch)
    assert _described(lambda: call(ml, "meta")) == theirs
    # each op that copied ran on stand-ins: one element per dimension (topk and sort: one row along their dim)
    assert max(seen.values(), default=0) <= 16, seen
    if name in _BAD_SHAPES:  # (and a bad shape raises torch's error)
        bad = _BAD_SHAPES[name]
        assert _described(lambda: bad(ml, "meta")) == _described(lambda: bad(torch, "meta")) != theirs


def _spy_forwards(monkeypatch):
    """Record the size of the largest array each op's forward is given, where its result is no view of it."""
    seen, todo = {}, [Function]
    while todo:
        for cls in todo.pop().__subclasses__():
            todo.append(cls)
            if "forward" not in cls.__dict__ or "meta_variant_of" in cls.__dict__:
                continue

            def spy(ctx, *arrays, _forward=cls.forward, _name=cls.__name__, **options):
                out = _forward(ctx, *arrays, **options)
                given = [a for a in (*arrays, *options.values()) if isinstance(a, np.ndarray)]
                given += [i for part in (*arrays, *options.values()) if isinstance(part, tuple)
                          for i in part if isinstance(i, np.ndarray)]  # (an index's arrays)
                if not any(isinstance(out, np.ndarray) and np.may_share_memory(out, a) for a in given):
                    seen[_name] = max(seen.get(_name, 0), *(a.size for a in given), 0)
                return out
            monkeypatch.setattr(cls, "forward", staticmethod(spy))
    return seen


def test_a_meta_sequence_classifier_picks_its_last_tokens_from_one_element(monkeypatch):
    from minilora.nn.llama import LlamaConfig, LlamaForSequenceClassification
    config = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=3)
    with ml.device("meta"):
        model = LlamaForSequenceClassification(config)
    ids = ml.zeros(2, 32, dtype=ml.long, device="meta")
    seen = _spy_forwards(monkeypatch)
    out = model(ids, labels=ml.zeros(2, dtype=ml.long, device="meta"))
    out.loss.backward()
    assert (tuple(out.logits.shape), out.logits.device.type, model.score.weight.grad.shape) == ((2, 3), "meta", (3, 64))
    assert seen.get("GetItem", 0) <= 1  # (the pick of each row's last token: one element of the logits)


_NORMS = {  # (torch's own kernels' bits, which minilora computes aside on the CPU: not on meta)
    "group_norm": lambda T, d: T.nn.functional.group_norm(_ones(T, d, 8, 64, 32, 32), 8, _ones(T, d, 64),
                                                          _ones(T, d, 64)),
    "batch_norm training": lambda T, d: T.nn.functional.batch_norm(
        _ones(T, d, 8, 64, 32, 32), T.zeros(64, device=d), _ones(T, d, 64), _ones(T, d, 64), _ones(T, d, 64),
        training=True),
    "batch_norm eval": lambda T, d: T.nn.functional.batch_norm(_ones(T, d, 8, 64, 32, 32), T.zeros(64, device=d),
                                                               _ones(T, d, 64)),
    "layer_norm of bfloat16": lambda T, d: T.nn.functional.layer_norm(_ones(T, d, 512, 1024, dtype=T.bfloat16), (1024,)),
}


@pytest.mark.parametrize("name", sorted(_NORMS))
def test_meta_norms_compute_no_kernel_values(name):
    import tracemalloc
    call = _NORMS[name]
    assert _described(lambda: call(ml, "meta")) == _described(lambda: call(torch, "meta"))
    tracemalloc.start()
    try:
        out = call(ml, "meta")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the composed float32 ops' unwritten results (three of the output's size at most), where the kernels' bits
    # took 9 times as much (float64 copies of the whole input)
    assert peak < 5 * out.numel() * 4


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_meta_reflection_and_replication_pads_are_laid_out_as_torchs_meta_kernels(mode):
    def padded(T):  # (torch's CPU kernels keep a channels_last input's layout, their meta kernels do not)
        x = _ones(T, "meta", 2, 3, 8, 8, dtype=T.float64).requires_grad_()
        outs = [T.nn.functional.pad(x, (2, 1, 1, 2), mode=mode),
                T.nn.functional.pad(x.contiguous(memory_format=T.channels_last), (2, 1, 1, 2), mode=mode),
                T.nn.functional.pad(_ones(T, "meta", 3, 8), (3, 3), mode=mode)]
        outs[0].sum().backward()
        return [(tuple(t.shape), str(t.dtype).split(".")[-1], tuple(t.stride())) for t in outs + [x.grad]]
    assert padded(ml) == padded(torch)
