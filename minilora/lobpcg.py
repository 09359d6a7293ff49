"""``torch.lobpcg``: a few of the largest (or smallest) eigenpairs of a large symmetric matrix, ``A X = B X E``,
by Knyazev's Locally Optimal Block Preconditioned Conjugate Gradient method, as torch._lobpcg runs it.

    E, X = torch.lobpcg(A, k=2)              # the 2 largest eigenvalues and their eigenvectors

Each step is a Rayleigh-Ritz projection of ``A`` on a small basis ``S = [X, P, W]``: the current estimate X, the
previous step's direction P and the preconditioned residual W = iK (A X - B X E). ``method='basic'`` B-orthonormalises
the basis by a Cholesky factor each step; ``'ortho'`` (the default) keeps S B-orthonormal as it grows, W made
B-orthogonal to [X, P] and B-orthonormal by repeated SVQB (``_orthonormal_to``). Converged pairs (relative residual
under ``tol``) are locked and left out of the next basis. The start X is ``randn(m, n)`` (torch's draws from the
global generator) where none is given; the eigenvalues match torch's to ``tol``, an eigenvector up to its sign
(LAPACK's eigh signs, see linalg.py). minilora computes no gradient through it (torch's LOBPCGAutogradFunction, the
symeig-of-a-subspace backward, is not reproduced): an ``A`` or ``B`` that requires grad is refused by name.
"""
import math

from . import linalg
from .dtypes import float32, float64
from .factories import eye, randn, zeros
from .ops import flip
from .tensor import no_grad

__all__ = ["lobpcg"]


def _times(A, X):
    """``A @ X``, with ``A`` None meaning the identity (torch's _utils.matmul)."""
    return X if A is None else A @ X


def _quadratic_form(A, S):
    """``S^T A S`` (A None: ``S^T S``)."""
    return S.mT @ _times(A, S)


def _eigh(M, largest=False):
    """Eigenvalues ascending, or descending with ``largest`` (their vectors flipped alike)."""
    E, Z = linalg.eigh(M, UPLO="U")
    return (flip(E, (-1,)), flip(Z, (-1,))) if largest else (E, Z)


def lobpcg(A, k=None, B=None, X=None, n=None, iK=None, niter=None, tol=None, largest=None, method=None, tracker=None,
           ortho_iparams=None, ortho_fparams=None, ortho_bparams=None):
    """``(E, X)``: the ``k`` eigenvalues and eigenvectors (of a batch of matrices too: each in turn)."""
    for name, t in (("A", A), ("B", B)):
        if t is not None and t.requires_grad:
            raise NotImplementedError(f"lobpcg: {name} requires grad; minilora's lobpcg computes no gradient "
                                      f"(torch's LOBPCGAutogradFunction is not reproduced)")
    if A.shape[-2] != A.shape[-1]:
        raise AssertionError(f"A must be square, got shape {A.shape}")
    if B is not None and A.shape != B.shape:
        raise AssertionError(f"A and B must have same shape, got {A.shape} vs {B.shape}")
    dtype = float64 if A.dtype == float64 else float32  # (torch's _utils.get_floating_dtype)
    tol = (2.23e-16 if dtype == float64 else 1.2e-07) ** 0.5 if tol is None else tol
    m = A.shape[-1]
    k = (1 if X is None else X.shape[-1]) if k is None else k
    n = (k if n is None else n) if X is None else X.shape[-1]
    if m < 3 * n:
        raise ValueError(f"LOBPCG algorithm is not applicable when the number of A rows (={m}) is smaller than 3 x "
                         f"the number of requested eigenpairs (={n})")
    options = {"m": m, "n": n, "k": k, "niter": 1000 if niter is None else niter, "tol": tol,
               "largest": True if largest is None else largest, "method": "ortho" if method is None else method,
               "ortho_i_max": 3, "ortho_j_max": 3, "ortho_tol": tol, "ortho_tol_drop": tol, "ortho_tol_replace": tol,
               "ortho_use_drop": False}
    if options["method"] == "ortho":
        for given in (ortho_iparams, ortho_fparams, ortho_bparams):
            options.update(given or {})
    with no_grad():
        if A.ndim > 2:
            return _batched(A, B, X, iK, options, dtype)
        X = randn((m, n), dtype=dtype, device=A.device) if X is None else X
        if tuple(X.shape) != (m, n):
            raise AssertionError(f"X shape mismatch: got {X.shape}, expected {(m, n)}")
        worker = _Lobpcg(A, B, X, iK, options)
        worker.run()
        return worker.E[:k], worker.X[:, :k]


def _batched(A, B, X, iK, options, dtype):
    """Each matrix of the batch in turn, a start drawn for each where none is given (torch's order)."""
    m, n, k = options["m"], options["n"], options["k"]
    count = math.prod(A.shape[:-2])
    flat = lambda t: None if t is None else t.reshape((count,) + tuple(t.shape[-2:]))  # noqa: E731
    bA, bB, bX = flat(A), flat(B), flat(X)
    values, vectors = zeros((count, k), dtype=dtype, device=A.device), zeros((count, m, k), dtype=dtype,
                                                                              device=A.device)
    for i in range(count):
        start = randn((m, n), dtype=dtype, device=A.device) if bX is None else bX[i]
        worker = _Lobpcg(bA[i], None if bB is None else bB[i], start, iK, options)
        worker.run()
        values[i], vectors[i] = worker.E[:k], worker.X[:, :k]
    return values.reshape(tuple(A.shape[:-2]) + (k,)), vectors.reshape(tuple(A.shape[:-2]) + (m, k))


class _Lobpcg:
    """One matrix's iteration: ``X`` [m, n] the estimates, ``E`` [n] their values, ``S`` [m, 3n] the basis
    [X, P, W] (its first ``converged_end`` columns in use), ``R`` the residual."""

    def __init__(self, A, B, X, iK, options):
        self.A, self.B, self.iK, self.options = A, B, iK, options
        m, n = options["m"], options["n"]
        self.X = X
        self.E = zeros((n,), dtype=X.dtype, device=X.device)
        self.R = zeros((m, n), dtype=X.dtype, device=X.device)
        self.S = zeros((m, 3 * n), dtype=X.dtype, device=X.device)
        self.step, self.converged, self.converged_end = 0, 0, 0

    def run(self):
        self.update()
        while not (self.iterations_left == 0 or self.converged >= self.options["k"]):
            self.update()

    def update(self):
        if self.step == 0:
            inverse_norm = float(self.X.norm()) ** -1
            self.A_norm = float(_times(self.A, self.X).norm()) * inverse_norm
            self.B_norm = float(_times(self.B, self.X).norm()) * inverse_norm
            self.iterations_left = self.options["niter"]
        self._ortho_step() if self.options["method"] == "ortho" else self._basic_step()
        self.iterations_left -= 1
        self.step += 1

    def _residual(self):
        self.R = _times(self.A, self.X) - _times(self.B, self.X) * self.E

    def _count_converged(self):
        """How many leading pairs have a relative residual under tol (a count that never goes down)."""
        E, X, R = self.E, self.X, self.R
        errors = linalg.vector_norm(R, 2, dim=0) / (linalg.vector_norm(X, 2, dim=0)
                                                    * (self.A_norm + E[:X.shape[-1]].abs() * self.B_norm))
        count = 0
        for below in (errors < self.options["tol"]).tolist():
            if not below:
                break
            count += 1
        if count < self.converged:
            raise AssertionError(f"the number of converged eigenpairs (was {self.converged}, got {count}) cannot "
                                 f"decrease")
        self.converged = count

    def _basic_step(self):
        n, nc, largest = self.options["n"], self.converged, self.options["largest"]
        if self.step == 0:
            Ri = self._rayleigh_ritz_transform(self.X)
            E, Z = _eigh(_quadratic_form(_quadratic_form(self.A, self.X), Ri), largest)
            self.X[:] = self.X @ (Ri @ Z)
            self.E[:] = E
            P = self.X[:, :0]
        else:
            S = self.S[:, nc:self.converged_end]
            Ri = self._rayleigh_ritz_transform(S)
            E, Z = _eigh(_quadratic_form(_quadratic_form(self.A, S), Ri), largest)
            self.X[:, nc:] = S @ (Ri @ Z[:, :n - nc])
            self.E[nc:] = E[:n - nc]
            P = S @ (Ri @ Z[:, n:2 * n - nc])
        self._residual()
        self._count_converged()
        self._new_basis(P, _times(self.iK, self.R[:, self.converged:] if self.step else self.R))

    def _ortho_step(self):
        n, nc, largest = self.options["n"], self.converged, self.options["largest"]
        if self.step == 0:  # (E stays 0 here: the first residual is A X, as torch's)
            Ri = self._rayleigh_ritz_transform(self.X)
            _, Z = _eigh(_quadratic_form(_quadratic_form(self.A, self.X), Ri), largest)
            self.X = self.X @ (Ri @ Z)
            self._residual()
            self._count_converged()
            self.S[:, :n] = self.X
            self._append(0, self._orthonormal_to(self.R, self.X))
            return
        S = self.S[:, nc:self.converged_end]
        E, Z = _eigh(_quadratic_form(self.A, S), largest)
        self.X[:, nc:] = S @ Z[:, :n - nc]
        self.E[nc:] = E[:n - nc]
        P = S @ (Z[:, n - nc:] @ linalg.qr(Z[:n - nc, n - nc:].mT).Q)
        self._residual()
        self._count_converged()
        self.S[:, :n] = self.X
        self.S[:, n:n + P.shape[-1]] = P
        self._append(P.shape[-1], self._orthonormal_to(self.R[:, self.converged:], self.S[:, :n + P.shape[-1]]))

    def _new_basis(self, P, W):
        """S = [X, P, W] ('basic')."""
        n = self.options["n"]
        self.S[:, :n] = self.X
        self.S[:, n:n + P.shape[-1]] = P
        self._append(P.shape[-1], W)

    def _append(self, directions, W):
        start = self.options["n"] + directions
        self.converged_end = start + W.shape[-1]
        self.S[:, start:self.converged_end] = W

    def _rayleigh_ritz_transform(self, S):
        """``Ri`` with ``Ri^T S^T B S Ri = I``: the inverse of the upper Cholesky factor of S^T B S scaled to a unit
        diagonal, scaled back."""
        SBS = _quadratic_form(self.B, S)
        d_row = SBS.diagonal(0, -2, -1) ** -0.5
        d_col = d_row.reshape(d_row.shape[0], 1)
        R = linalg.cholesky((SBS * d_row) * d_col, upper=True)
        return linalg.solve_triangular(R, d_row.diag_embed(), upper=True, left=False)

    def _svqb(self, U, drop, tau):
        """U made B-orthonormal by the eigendecomposition of its scaled Gram matrix (columns of zero B-norm left
        out; eigenvalues under ``tau`` times the largest dropped with ``drop``, else raised to it)."""
        if U.numel() == 0:
            return U
        UBU = _quadratic_form(self.B, U)
        d = UBU.diagonal(0, -2, -1)
        nonzero = (d.abs() != 0).nonzero()[:, 0]
        if len(nonzero) < len(d):
            U = U[:, nonzero]
            if U.numel() == 0:
                return U
            UBU = _quadratic_form(self.B, U)
            d = UBU.diagonal(0, -2, -1)
        d_col = (d ** -0.5).reshape(d.shape[0], 1)
        E, Z = _eigh((UBU * d_col) * d_col.mT)
        t = tau * E.abs().max()
        if drop:
            keep = (E > t).nonzero()[:, 0]
            E, Z, d_col = E[keep], Z[:, keep], d_col[keep]
        else:
            E = E.clamp_min(float(t))
        return (U * d_col.mT) @ (Z * E ** -0.5)

    def _orthonormal_to(self, U, V):
        """U made B-orthogonal to the B-orthonormal V and B-orthonormal itself: V's part taken out, then SVQB, each
        repeated until the relative errors are under ``ortho_tol`` (at most ``ortho_i_max`` x ``ortho_j_max``)."""
        o = self.options
        BV_norm = _times(self.B, V).norm()
        VBU = V.mT @ _times(self.B, U)
        for _ in range(o["ortho_i_max"]):
            U = U - V @ VBU
            drop, tau = False, o["ortho_tol_drop"]
            for _ in range(o["ortho_j_max"]):
                if o["ortho_use_drop"]:
                    U, drop, tau = self._svqb(U, drop, tau), True, o["ortho_tol_replace"]
                else:
                    U = self._svqb(U, False, o["ortho_tol_replace"])
                if U.numel() == 0:
                    return U
                BU = _times(self.B, U)
                UBU = U.mT @ BU
                identity_error = (UBU - eye(UBU.shape[-1], dtype=UBU.dtype, device=UBU.device)).norm()
                if float(identity_error) * float(BU.norm() * U.norm()) ** -1 < o["ortho_tol"]:
                    break
            VBU = V.mT @ BU
            if float(VBU.norm()) * float(BV_norm * U.norm()) ** -1 < o["ortho_tol"]:
                break
            if o["m"] < U.shape[-1] + V.shape[-1]:
                raise ValueError(f"Overdetermined shape of U: #B-cols(={o['m']}) >= #U-cols(={U.shape[-1]}) + "
                                 f"#V-cols(={V.shape[-1]}) must hold")
        return U
