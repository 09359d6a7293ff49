"""Round 23: torch.linalg on the meta device, CPU strides as torch's, and torch's words for shape errors.

* A meta matrix is never factorized: each linalg op gives unwritten zeros of torch's meta kernels' shapes, dtypes and
  strides (LAPACK's column-major results included; torch's meta svd and eig make Vh and the eigenvectors row-major,
  its CPU column-major) and reads no page of its input (``mincore``, as test_meta_sweep_r22); lstsq and geqrf have no
  meta kernel in torch, and refuse as torch.
* Results whose ``stride()`` refused or differed from torch's on the CPU.
* Bad shapes get torch's exception type and words (ARCHITECTURE: "Bad arguments get torch's exception type and
  words from shared checks").
"""
import mmap

import numpy as np
import pytest

import minilora as ml
from test_meta_sweep_r22 import _backed_pages, _described, _ones, own_mappings  # noqa: F401  (a fixture)

torch = pytest.importorskip("torch")
torch.ones(1, device="meta") * 2  # (torch loads its meta kernels at their first use: here, not in a test)



_LINALG = {
    "svd": lambda T, d: T.linalg.svd(_ones(T, d, 16, 32, 32)),
    "svd wide, reduced": lambda T, d: T.linalg.svd(_ones(T, d, 4, 32, 128), full_matrices=False),
    "svd of a matrix": lambda T, d: T.linalg.svd(_ones(T, d, 128, 128)),
    "svdvals": lambda T, d: T.linalg.svdvals(_ones(T, d, 4, 128, 32)),
    "torch.svd": lambda T, d: T.svd(_ones(T, d, 4, 128, 32)),
    "qr": lambda T, d: T.linalg.qr(_ones(T, d, 4, 128, 32)),
    "qr complete": lambda T, d: T.linalg.qr(_ones(T, d, 4, 128, 32), mode="complete"),
    "qr r": lambda T, d: T.linalg.qr(_ones(T, d, 4, 32, 128), mode="r"),
    "eigh": lambda T, d: T.linalg.eigh(_ones(T, d, 16, 32, 32)),
    "eigvalsh": lambda T, d: T.linalg.eigvalsh(_ones(T, d, 16, 32, 32), UPLO="U"),
    "eig": lambda T, d: T.linalg.eig(_ones(T, d, 16, 32, 32)),
    "eigvals": lambda T, d: T.linalg.eigvals(_ones(T, d, 16, 32, 32, dtype=T.float64)),
    "inv": lambda T, d: T.linalg.inv(_ones(T, d, 16, 32, 32)),
    "inv_ex": lambda T, d: T.linalg.inv_ex(_ones(T, d, 16, 32, 32)),
    "det": lambda T, d: T.linalg.det(_ones(T, d, 16, 32, 32)),
    "slogdet": lambda T, d: T.linalg.slogdet(_ones(T, d, 16, 32, 32)),
    "logdet": lambda T, d: T.logdet(_ones(T, d, 16, 32, 32)),
    "solve": lambda T, d: T.linalg.solve(_ones(T, d, 16, 32, 32), _ones(T, d, 16, 32, 8)),
    "solve a vector, broadcast": lambda T, d: T.linalg.solve(_ones(T, d, 16, 32, 32), _ones(T, d, 32)),
    "solve_ex left=False": lambda T, d: T.linalg.solve_ex(_ones(T, d, 16, 32, 32), _ones(T, d, 8, 32), left=False),
    "solve_triangular": lambda T, d: T.linalg.solve_triangular(_ones(T, d, 16, 32, 32), _ones(T, d, 1, 32, 8),
                                                               upper=True),
    "cholesky": lambda T, d: T.linalg.cholesky(_ones(T, d, 16, 32, 32)),
    "cholesky_ex upper": lambda T, d: T.linalg.cholesky_ex(_ones(T, d, 16, 32, 32), upper=True),
    "cholesky_solve": lambda T, d: T.cholesky_solve(_ones(T, d, 16, 32, 8), _ones(T, d, 16, 32, 32)),
    "cholesky_inverse": lambda T, d: T.cholesky_inverse(_ones(T, d, 16, 32, 32)),
    "lu": lambda T, d: T.linalg.lu(_ones(T, d, 4, 128, 32)),
    "lu_factor": lambda T, d: T.linalg.lu_factor(_ones(T, d, 16, 32, 32)),
    "lu_factor_ex wide": lambda T, d: T.linalg.lu_factor_ex(_ones(T, d, 4, 32, 128)),
    "ldl_factor": lambda T, d: T.linalg.ldl_factor(_ones(T, d, 16, 32, 32)),
    "pinv": lambda T, d: T.linalg.pinv(_ones(T, d, 4, 128, 32)),
    "pinv hermitian": lambda T, d: T.linalg.pinv(_ones(T, d, 16, 32, 32), hermitian=True),
    "matrix_exp": lambda T, d: T.linalg.matrix_exp(_ones(T, d, 16, 32, 32)),
    "matrix_norm 2": lambda T, d: T.linalg.matrix_norm(_ones(T, d, 16, 32, 32), 2),
    "matrix_norm nuc, keepdim": lambda T, d: T.linalg.matrix_norm(_ones(T, d, 16, 32, 32), "nuc", keepdim=True),
    "cond": lambda T, d: T.linalg.cond(_ones(T, d, 16, 32, 32)),
    "matrix_rank": lambda T, d: T.linalg.matrix_rank(_ones(T, d, 16, 32, 32)),
    "matrix_power -2": lambda T, d: T.linalg.matrix_power(_ones(T, d, 16, 32, 32), -2),
}


@pytest.mark.parametrize("name", sorted(_LINALG))
def test_linalg_on_meta_gives_torchs_results_and_reads_nothing(name, own_mappings):
    call = _LINALG[name]
    assert _described(call(ml, "meta")) == _described(call(torch, "meta"))
    backed = {len(m): _backed_pages(m) for m in own_mappings if len(m) >= 4 * mmap.PAGESIZE}
    assert backed and max(backed.values()) <= 1, backed  # (was every page: LAPACK read the zeros)


def test_linalg_backward_on_meta_gives_zeros_of_the_inputs_shape():
    A = ml.ones(16, 32, 32, device="meta", requires_grad=True)
    U, S, Vh = ml.linalg.svd(A)
    (U.sum() + S.sum() + ml.linalg.inv(A).sum()).backward()
    assert A.grad.is_meta and tuple(A.grad.shape) == (16, 32, 32)


@pytest.mark.parametrize("call", [lambda T: T.linalg.lstsq(_ones(T, "meta", 4, 8, 8), _ones(T, "meta", 4, 8, 2)),
                                  lambda T: T.geqrf(_ones(T, "meta", 4, 8, 8))])
def test_linalg_ops_without_a_meta_kernel_in_torch_refuse_meta(call):
    with pytest.raises(NotImplementedError) as theirs:
        call(torch)
    with pytest.raises(NotImplementedError) as ours:
        call(ml)
    assert str(ours.value).split(":")[:2] == str(theirs.value).split(":")[:2]


# ---- torch's words for shape errors ---------------------------------------------------------------------------------
def _o(T, *shape, **kwargs):
    return T.ones(*shape, **kwargs)


def _F(T):
    return T.nn.functional


_BAD_SHAPES = {
    "cat sizes": lambda T: T.cat([_o(T, 2, 3), _o(T, 2, 4)]),
    "cat ranks": lambda T: T.cat([_o(T, 2, 3), _o(T, 3)], dim=1),
    "cat of nothing": lambda T: T.cat([]),
    "hstack": lambda T: T.hstack([_o(T, 2, 3), _o(T, 3, 3)]),
    "expand": lambda T: _o(T, 2, 3).expand(4, 3, 5),
    "expand -1": lambda T: _o(T, 2, 3).expand(-1, 4),
    "expand to fewer dims": lambda T: _o(T, 2, 3).expand(3),
    "expand_as": lambda T: _o(T, 2, 3).expand_as(_o(T, 2, 4)),
    "broadcast_to": lambda T: T.broadcast_to(_o(T, 2, 3), (2, 4)),
    "copy_": lambda T: _o(T, 2, 3).copy_(_o(T, 4)),
    "copy_ growing the output": lambda T: _o(T, 2, 1).copy_(_o(T, 3)),
    "x[0] = v": lambda T: _o(T, 2, 3).__setitem__(0, _o(T, 4)),
    "x[tensor] = v": lambda T: _o(T, 2, 3).__setitem__(T.tensor([0, 1]), _o(T, 4)),
    "bmm batch": lambda T: T.bmm(_o(T, 2, 3, 4), _o(T, 3, 4, 5)),
    "bmm inner": lambda T: T.bmm(_o(T, 2, 3, 4), _o(T, 2, 5, 5)),
    "baddbmm": lambda T: T.baddbmm(_o(T, 2, 2, 5), _o(T, 2, 2, 3), _o(T, 2, 4, 5)),
    "baddbmm input": lambda T: T.baddbmm(_o(T, 2, 3, 5), _o(T, 2, 2, 3), _o(T, 2, 3, 5)),
    "addbmm": lambda T: T.addbmm(_o(T, 2, 5), _o(T, 2, 2, 3), _o(T, 2, 4, 5)),
    "addmm": lambda T: T.addmm(_o(T, 2, 5), _o(T, 2, 3), _o(T, 4, 5)),
    "addmm input": lambda T: T.addmm(_o(T, 3, 5), _o(T, 2, 3), _o(T, 3, 5)),
    "addmv input": lambda T: T.addmv(_o(T, 2, 1), _o(T, 2, 3), _o(T, 3)),
    "dot": lambda T: T.dot(_o(T, 3), _o(T, 4)),
    "mv": lambda T: T.mv(_o(T, 2, 3), _o(T, 4)),
    "matmul vector @ matrix": lambda T: T.matmul(_o(T, 3), _o(T, 4, 5)),
    "matmul batch @ matrix": lambda T: _o(T, 2, 2, 3) @ _o(T, 4, 5),
    "matmul batch @ vector": lambda T: _o(T, 2, 2, 3) @ _o(T, 4),
    "matmul batches": lambda T: _o(T, 2, 2, 3) @ _o(T, 2, 4, 5),
    "matmul batches broadcast": lambda T: _o(T, 6, 2, 2, 3) @ _o(T, 2, 4, 5),
    "matmul batches that do not broadcast": lambda T: _o(T, 1, 2, 2, 3) @ _o(T, 3, 3, 5),
    "matmul matrix (grad) @ batch": lambda T: _o(T, 2, 3, requires_grad=True) @ _o(T, 2, 4, 5),
    "matmul a permuted batch @ vector": lambda T: _o(T, 2, 3, 4).transpose(0, 1) @ _o(T, 5),
    "linear bias": lambda T: _F(T).linear(_o(T, 2, 3), _o(T, 5, 3), _o(T, 4)),
    "linear bias of a vector input": lambda T: _F(T).linear(_o(T, 3), _o(T, 5, 3), _o(T, 4)),
    "linear 2-D bias": lambda T: _F(T).linear(_o(T, 2, 2, 3), _o(T, 5, 3), _o(T, 3, 5)),
    "transpose": lambda T: _o(T, 2, 3).transpose(0, 2),
    "embedding id": lambda T: _F(T).embedding(T.tensor([0, 7]), _o(T, 5, 3)),
    "Embedding id": lambda T: T.nn.Embedding(5, 3)(T.tensor([5])),
    "embedding float ids": lambda T: _F(T).embedding(_o(T, 2), _o(T, 5, 3)),
    "embedding bool ids": lambda T: _F(T).embedding(_o(T, 2, dtype=T.bool), _o(T, 5, 3)),
    "cross_entropy batch": lambda T: _F(T).cross_entropy(_o(T, 4, 5), T.zeros(3, dtype=T.int64)),
    "cross_entropy target": lambda T: _F(T).cross_entropy(_o(T, 4, 5), T.tensor([0, 1, 7, 2])),
    "cross_entropy 2-D float target": lambda T: _F(T).cross_entropy(_o(T, 4, 5), _o(T, 4, 6)),
    "cross_entropy int32 target": lambda T: _F(T).cross_entropy(_o(T, 4, 5), T.zeros(4, dtype=T.int32)),
    "cross_entropy [B, C, T] target": lambda T: _F(T).cross_entropy(_o(T, 2, 5, 3), _o(T, 2, 4)),
    "nll_loss batch": lambda T: _F(T).nll_loss(_o(T, 4, 5), T.zeros(3, dtype=T.int64)),
    "sdpa head dim": lambda T: _F(T).scaled_dot_product_attention(_o(T, 1, 2, 4, 8), _o(T, 1, 2, 5, 7),
                                                                  _o(T, 1, 2, 5, 8)),
    "sdpa heads": lambda T: _F(T).scaled_dot_product_attention(_o(T, 1, 2, 4, 8), _o(T, 1, 3, 5, 8),
                                                               _o(T, 1, 3, 5, 8)),
    "sdpa mask": lambda T: _F(T).scaled_dot_product_attention(_o(T, 1, 2, 4, 8), _o(T, 1, 2, 5, 8),
                                                              _o(T, 1, 2, 5, 8), attn_mask=_o(T, 3, 5)),
    "layer_norm": lambda T: _F(T).layer_norm(_o(T, 2, 3), (4,)),
    "layer_norm weight": lambda T: _F(T).layer_norm(_o(T, 2, 3), (3,), _o(T, 4)),
    "rms_norm": lambda T: _F(T).rms_norm(_o(T, 2, 3), (4,)),
    "conv2d kernel": lambda T: _F(T).conv2d(_o(T, 1, 3, 2, 2), _o(T, 4, 3, 3, 3)),
    "conv1d kernel": lambda T: _F(T).conv1d(_o(T, 1, 3, 2), _o(T, 4, 3, 3)),
    "repeat": lambda T: _o(T, 2, 3).repeat(2),
    "scatter": lambda T: _o(T, 2, 3).scatter(0, T.zeros(2, dtype=T.int64), 1.0),
    "gather": lambda T: _o(T, 2, 3).gather(0, T.zeros(2, dtype=T.int64)),
    "tensordot": lambda T: T.tensordot(_o(T, 2, 3), _o(T, 4, 5), dims=1),
    "einsum": lambda T: T.einsum("ij,jk->ik", _o(T, 2, 3)),
    "topk": lambda T: _o(T, 3).topk(5),
    "kthvalue": lambda T: _o(T, 3).kthvalue(5),
    "gather index larger": lambda T: _o(T, 2, 3).gather(1, T.zeros(3, 3, dtype=T.int64)),
    "scatter src smaller": lambda T: _o(T, 2, 3).scatter(1, T.zeros(2, 3, dtype=T.int64), _o(T, 2, 2)),
    "index_select 2-D index": lambda T: _o(T, 2, 3).index_select(0, T.zeros(1, 1, dtype=T.int64)),
    "one_hot": lambda T: _F(T).one_hot(T.tensor([5]), 3),
    "nll_loss weight": lambda T: _F(T).nll_loss(_o(T, 4, 5), T.zeros(4, dtype=T.int64), weight=_o(T, 3)),
    "pad odd": lambda T: _F(T).pad(_o(T, 2, 3), (1,)),
    "pad reflect": lambda T: _F(T).pad(_o(T, 1, 2, 3), (3, 3), mode="reflect"),
    "glu odd": lambda T: _F(T).glu(_o(T, 2, 3)),
    "sum dims twice": lambda T: _o(T, 2, 3).sum((0, 0)),
    "einsum output label": lambda T: T.einsum("ij,jk->il", _o(T, 2, 3), _o(T, 3, 4)),
    "mask shape": lambda T: _o(T, 2, 3)[T.ones(3, dtype=T.bool)],
    "repeat_interleave": lambda T: _o(T, 3).repeat_interleave(T.tensor([1, 2])),
    "interpolate 2-D": lambda T: _F(T).interpolate(_o(T, 4, 4), scale_factor=2),
    "conv2d bias": lambda T: _F(T).conv2d(_o(T, 1, 3, 5, 5), _o(T, 4, 3, 3, 3), _o(T, 5)),
    "conv1d bias": lambda T: _F(T).conv1d(_o(T, 1, 3, 5), _o(T, 4, 3, 3), _o(T, 5)),
    "conv2d bias of 4 x 1": lambda T: _F(T).conv2d(_o(T, 1, 3, 5, 5), _o(T, 4, 3, 3, 3), _o(T, 4, 1)),
    "linear 3-D weight": lambda T: _F(T).linear(_o(T, 2, 3), _o(T, 4, 5, 3)),
    "masked_select": lambda T: T.masked_select(_o(T, 2, 3), T.ones(4, dtype=T.bool)),
}


@pytest.mark.parametrize("name", sorted(_BAD_SHAPES))
def test_bad_shapes_raise_torchs_exception_and_words(name):
    call = _BAD_SHAPES[name]
    with pytest.raises(Exception) as theirs:
        call(torch)
    with pytest.raises(Exception) as ours:
        call(ml)
    assert isinstance(ours.value, type(theirs.value)), (type(ours.value), type(theirs.value))
    assert str(ours.value) == str(theirs.value)


# ---- CPU results' strides as torch's ------------------------------------------------------------------------------------
def _laid_out(T, kind):
    x = T.arange(120, dtype=T.float32).reshape(2, 3, 4, 5) / 7 + 0.5
    return {"channels_last": lambda: x.contiguous(memory_format=T.channels_last),
            "permuted": lambda: x.permute(0, 2, 3, 1), "transposed": lambda: x[0, 0].t()}[kind]()


_ALL = ("channels_last", "permuted", "transposed")
_STRIDED = {  # (name: call, the inputs' layouts whose result's strides were not torch's, or refused)
    "quantile keepdim": (lambda T, x: T.quantile(x, 0.5, dim=1, keepdim=True), ("permuted",)),
    "nanquantile keepdim": (lambda T, x: T.nanquantile(x, 0.3, dim=0, keepdim=True), ("channels_last", "permuted")),
    "angle of a complex": (lambda T, x: T.angle(x.to(T.complex64)), _ALL),
    "conj": (lambda T, x: x.to(T.complex64).conj(), _ALL),
    "torch.complex": (lambda T, x: T.complex(x, x * 2), _ALL),
    "prelu": (lambda T, x: T.nn.functional.prelu(x, T.ones(1) * 0.25), _ALL),
    "matmul": (lambda T, x: x @ T.ones(x.shape[-1], 3), ("channels_last",)),
    "scatter": (lambda T, x: x.scatter(0, T.zeros(1, *x.shape[1:], dtype=T.int64), 1.0), ("channels_last",)),
    "index_add": (lambda T, x: x.index_add(0, T.tensor([0]), x[:1]), ("channels_last",)),
    "masked_scatter": (lambda T, x: x.masked_scatter(x > 1, T.zeros(x.numel())), ("channels_last",)),
    "renorm": (lambda T, x: x.renorm(2, 1, 1.0), _ALL),
    "mvlgamma": (lambda T, x: T.mvlgamma(x + 2, 2), ("channels_last",)),
    "special.entr": (lambda T, x: T.special.entr(x), _ALL),
    "glu": (lambda T, x: T.nn.functional.glu(T.cat([x, x], -1), -1), ("channels_last",)),
    "mse_loss none": (lambda T, x: T.nn.functional.mse_loss(x, x * 2, reduction="none"), _ALL),
    "bce_with_logits none": (lambda T, x: T.nn.functional.binary_cross_entropy_with_logits(x, x / 10,
                                                                                          reduction="none"), _ALL),
}


def _strides(T, y):
    channels_last = y.is_contiguous(memory_format=T.channels_last) if y.ndim == 4 else None
    return tuple(y.shape), tuple(y.stride()), y.is_contiguous(), channels_last


@pytest.mark.parametrize("name, kind", [(name, kind) for name, (_, kinds) in sorted(_STRIDED.items()) for kind in kinds])
def test_results_strides_are_torchs(name, kind):
    call = _STRIDED[name][0]
    assert _strides(ml, call(ml, _laid_out(ml, kind))) == _strides(torch, call(torch, _laid_out(torch, kind)))


_IHFFTN = {
    "ihfft2": lambda T, d: T.fft.ihfft2(_ones(T, d, 2, 3, 4, 5)),
    "ihfft2 of a matrix": lambda T, d: T.fft.ihfft2(_ones(T, d, 4, 5)),
    "ihfftn": lambda T, d: T.fft.ihfftn(_ones(T, d, 2, 3, 4, 5)),
    "ihfftn dims out of order": lambda T, d: T.fft.ihfftn(_ones(T, d, 2, 3, 4, 5), dim=(2, 0, 3)),
    "ihfftn with s": lambda T, d: T.fft.ihfftn(_ones(T, d, 2, 3, 4, 5), s=(3, 4)),
}


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("name", sorted(_IHFFTN))
def test_ihfftn_results_are_laid_out_as_torchs(name, device):
    # (ATen's ihfftn: the dimensions not transformed outermost, then the halved one, then the other transformed
    # ones; minilora answered C order)
    call = _IHFFTN[name]
    assert _described(call(ml, device)) == _described(call(torch, device))
