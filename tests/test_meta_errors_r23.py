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
