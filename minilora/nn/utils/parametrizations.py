"""``torch.nn.utils.parametrizations``: ``weight_norm`` and ``spectral_norm`` as parametrizations
(``parametrize.py``), with torch's parameter names, buffers and random draws.

``weight_norm(layer)``: ``weight = g * v / ||v||`` (the norm over every dimension but ``dim``), from
``parametrizations.weight.original0`` (g) and ``original1`` (v), initialised so the weight is unchanged.
``spectral_norm(layer)``: ``weight / sigma``, sigma the largest singular value of the weight as a matrix
(``dim`` first), estimated by power iteration on the buffers ``_u``, ``_v`` (drawn from the global
generator as torch draws them, then 15 iterations; one more per access in training mode).
``orthogonal(layer)``: a weight with orthonormal columns (or rows, when wider than tall), the image of the
unconstrained ``original`` under the matrix exponential, the Cayley map or a product of Householder reflectors,
times the ``base`` buffer (torch's "dynamic trivialization"), initialised to the weight's own Q factor.
"""
from ... import dtypes, factories, linalg, ops
from ...tensor import Tensor, no_grad
from .. import functional as F
from ..module import Module
from . import parametrize

__all__ = ["weight_norm", "spectral_norm", "orthogonal"]


def _norm_except_dim(v, dim):
    """torch's ``norm_except_dim(v, 2, dim)``: the 2-norm over every dimension but ``dim``, kept as size 1
    (``dim=-1``: over all); ``torch.norm_except_dim`` itself, ATen's transposes and views (ops/native_forms.py)."""
    from ...ops.native_forms import norm_except_dim
    return norm_except_dim(v, 2, dim)


class _WeightNorm(Module):
    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight):
        return _norm_except_dim(weight, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """Reparametrize ``module.<name>`` as magnitude times direction (Salimans & Kingma, 2016)."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


def weight_matrix(weight, dim):
    """The weight as the matrix whose largest singular value spectral norm divides by: ``dim`` first, the rest
    flattened (the hook-based ``spectral_norm`` in ``spectral_norm.py`` uses it too)."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return weight.flatten(1)


class _SpectralNorm(Module):
    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError("Dimension out of range (expected to be in range of "
                             f"[-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            weight_mat = self._reshape_weight_to_matrix(weight)
            h, w = weight_mat.shape
            u = weight_mat.new_empty(h).normal_(0, 1)  # (torch's draws, in its order)
            v = weight_mat.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            self._power_method(weight_mat, 15)

    def _reshape_weight_to_matrix(self, weight):
        return weight_matrix(weight, self.dim)

    def _power_method(self, weight_mat, n_power_iterations):
        with no_grad():
            for _ in range(n_power_iterations):
                self._u = F.normalize(weight_mat.mv(self._v), dim=0, eps=self.eps)
                self._v = F.normalize(weight_mat.mH.mv(self._u), dim=0, eps=self.eps)

    def forward(self, weight):
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        sigma = self._u.clone().vdot(weight_mat.mv(self._v.clone()))
        return weight / sigma

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Divide ``module.<name>`` by its spectral norm (Miyato et al., 2018), estimated by power iteration."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if type(module).__name__ in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d") else 0
    parametrize.register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


_ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder")


class _Orthogonal(Module):
    """``forward(X)``: an orthogonal matrix (a batch of them) from an unconstrained X. For the exponential and
    the Cayley map, X's lower triangle gives the skew-symmetric ``A = X - X^H`` whose image is orthogonal; for
    Householder, X's strict lower triangle holds the reflectors and its diagonal (+-1) the signs. A wide matrix
    is handled as its transpose. With ``base`` (use_trivialization), the result is ``base @ Q``: ``original``
    starts at the point whose image is the identity, and ``base`` holds the weight's orthogonalised value."""

    def __init__(self, weight, orthogonal_map, *, use_trivialization=True):
        super().__init__()
        if weight.is_complex() and orthogonal_map == "householder":  # (no tau for complex reflectors)
            raise ValueError("The householder parametrization does not support complex tensors.")
        self.shape, self.orthogonal_map = weight.shape, orthogonal_map
        if use_trivialization:
            self.register_buffer("base", None)

    def forward(self, X):
        wide = X.shape[-2] < X.shape[-1]
        X = X.mT if wide else X
        n, k = X.shape[-2], X.shape[-1]
        if self.orthogonal_map == "householder":
            A = X.tril(diagonal=-1)
            Q = linalg.householder_product(A, 2.0 / (1.0 + (A * A).sum(dim=-2)))
            Q = Q * X.diagonal(dim1=-2, dim2=-1).int().unsqueeze(-2)  # (the signs: not differentiated)
        else:
            X = X.tril()
            if n != k:  # a tall matrix: the first k columns of a square one
                X = ops.cat([X, X.new_zeros(n, n - k).expand(*X.shape[:-2], -1, -1)], dim=-1)
            A = X - X.mH
            if self.orthogonal_map == "matrix_exp":
                Q = linalg.matrix_exp(A)
            else:  # Cayley: (I - A/2)^-1 (I + A/2)
                eye = factories.eye(n, dtype=A.dtype, device=A.device)
                Q = linalg.solve(ops.add(eye, A, alpha=-0.5), ops.add(eye, A, alpha=0.5))
            Q = Q[..., :k] if n != k else Q
        if hasattr(self, "base"):
            Q = self.base @ Q
        return Q.mT if wide else Q

    def right_inverse(self, Q):
        """The ``original`` that gives ``Q`` (what ``layer.weight = Q`` and the registration store)."""
        with no_grad():
            return self._right_inverse(Q)

    def _right_inverse(self, Q):
        if Q.shape != self.shape:
            raise ValueError(f"Expected a matrix or batch of matrices of shape {self.shape}. "
                             f"Got a tensor of shape {Q.shape}.")
        given, wide = Q, Q.shape[-2] < Q.shape[-1]
        Q = Q.mT if wide else Q
        n, k = Q.shape[-2], Q.shape[-1]
        if not hasattr(self, "base"):
            if self.orthogonal_map != "householder":
                raise NotImplementedError("It is not possible to assign to the matrix exponential or the Cayley "
                                          "parametrizations when use_trivialization=False.")
            A, tau = linalg.geqrf(Q)  # reflectors below the diagonal, the signs of R's diagonal on it
            A.diagonal(dim1=-2, dim2=-1).sign_()
            A.diagonal(dim1=-2, dim2=-1)[tau == 0.0] *= -1  # (LAPACK's "no reflection": tau exactly 0)
            return A.mT if wide else A
        if n == k:
            Q = Q.clone() if _is_orthogonal(Q) else _make_orthogonal(Q)
        else:  # completed to a square orthogonal matrix by random columns (the global generator, as torch)
            extra = factories.randn(*(tuple(Q.shape[:-2]) + (n, n - k)), dtype=Q.dtype, device=Q.device)
            Q = _make_orthogonal(ops.cat([Q, extra], dim=-1))
        self.base = Q
        minus_identity = factories.zeros_like(given)  # the original whose image is the identity (base @ I)
        minus_identity.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
        return minus_identity


def _is_orthogonal(Q):
    n, k = Q.shape[-2], Q.shape[-1]
    eye = factories.eye(k, dtype=Q.dtype, device=Q.device)
    return ops.allclose(Q.mH @ Q, eye, atol=10.0 * n * dtypes.finfo(Q.dtype).eps)


def _make_orthogonal(A):
    """The Q factor of a tall ``A``, with R's diagonal made positive (a unique choice)."""
    X, tau = linalg.geqrf(A)
    Q = linalg.householder_product(X, tau)
    return Q * X.diagonal(dim1=-2, dim2=-1).sgn().unsqueeze(-2)


def orthogonal(module, name="weight", orthogonal_map=None, *, use_trivialization=True):
    """Make ``module.<name>`` orthogonal (unitary) for good: ``orthogonal_map`` is "matrix_exp" or "cayley"
    (by default for a square or complex matrix) or "householder" (by default otherwise)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if weight.ndim < 2:
        raise ValueError(f"Expected a matrix or batch of matrices. Got a tensor of {weight.ndim} dimensions.")
    if orthogonal_map is None:
        square = weight.shape[-2] == weight.shape[-1]
        orthogonal_map = "matrix_exp" if square or weight.is_complex() else "householder"
    if orthogonal_map not in _ORTHOGONAL_MAPS:
        raise ValueError('orthogonal_map has to be one of "matrix_exp", "cayley", "householder". '
                         f"Got: {orthogonal_map}")
    orth = _Orthogonal(weight, orthogonal_map, use_trivialization=use_trivialization)
    parametrize.register_parametrization(module, name, orth, unsafe=True)
    return module
