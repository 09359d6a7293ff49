"""torch.distributions.utils: parameter broadcasting, probs <-> logits, lazy properties, and the
standard-normal draw every reparameterized sampler starts from."""
from .. import arange, broadcast_tensors, dtypes, empty, enable_grad, ops, tensor
from ..ops.special import erfinv  # noqa: F401  (Normal.icdf's; torch.erfinv)
from ..tensor import Tensor

euler_constant = 0.57721566490153286060  # Euler-Mascheroni constant

__all__ = ["broadcast_all", "logits_to_probs", "clamp_probs", "probs_to_logits", "lazy_property", "BinaryProbsOrLogits", "tril_matrix_to_vec",
           "vec_to_tril_matrix", "euler_constant"]

_Number = (bool, int, float)


def broadcast_all(*values):
    """The values as tensors of one broadcast shape; Python numbers take the first tensor's dtype
    and device (or the default dtype), as torch's."""
    if not all(isinstance(v, (Tensor, *_Number)) for v in values):
        raise ValueError("Input arguments must all be instances of Number, torch.Tensor or objects "
                         "implementing __torch_function__.")
    if not all(isinstance(v, Tensor) for v in values):
        like = next((v for v in values if isinstance(v, Tensor)), None)
        options = (dict(dtype=dtypes.get_default_dtype()) if like is None
                   else dict(dtype=like.dtype, device=like.device))
        values = [v if isinstance(v, Tensor) else tensor(v, **options) for v in values]
    return broadcast_tensors(*values)


def _standard_normal(shape, dtype, device):
    # torch fills an empty tensor with normal_(): the generator's stream in memory order.
    return empty(tuple(shape), dtype=dtype, device=device).normal_()


def _sum_rightmost(value, dim):
    """Sums the ``dim`` rightmost dims (an event's log-density terms)."""
    if dim == 0:
        return value
    return value.reshape(tuple(value.shape[:-dim]) + (-1,)).sum(-1)


def logits_to_probs(logits, is_binary=False):
    if is_binary:
        return ops.sigmoid(logits)
    return ops.softmax(logits, dim=-1)


def clamp_probs(probs):
    eps = dtypes.finfo(probs.dtype).eps
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs, is_binary=False):
    ps_clamped = clamp_probs(probs)
    if is_binary:
        return ops.log(ps_clamped) - ops.log1p(-ps_clamped)
    return ops.log(ps_clamped)


class lazy_property:
    """Computed on first read (with gradients on, as torch's), then stored on the instance, so
    ``Categorical(logits=...)`` builds ``probs`` only when asked -- and validation skips it."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.__name__ = wrapped.__name__
        self.__doc__ = wrapped.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        with enable_grad():
            value = self.wrapped(instance)
        setattr(instance, self.wrapped.__name__, value)
        return value




class BinaryProbsOrLogits:
    """The parameter of a two-outcome distribution (Bernoulli, Binomial, Geometric, NegativeBinomial,
    LogitRelaxedBernoulli), given as ``probs`` or as ``logits``: the other is computed when first read.
    torch writes these lines out in each of those classes; here they are written once."""

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits, is_binary=True)

    def _set_count_and_param(self, total_count, probs, logits):
        """Binomial's and NegativeBinomial's ``__init__``: ``total_count`` broadcast with the given parameter,
        in its dtype; ``_param`` is the parameter given."""
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            self.total_count, self.probs = broadcast_all(total_count, probs)
            self._param = self.probs
        else:
            self.total_count, self.logits = broadcast_all(total_count, logits)
            self._param = self.logits
        self.total_count = self.total_count.type_as(self._param)

    def _expand_param_into(self, new, batch_shape):
        """``expand``'s part for the parameter: whichever of probs/logits this instance holds, expanded."""
        if "probs" in self.__dict__:
            new.probs = new._param = self.probs.expand(batch_shape)
        if "logits" in self.__dict__:
            new.logits = new._param = self.logits.expand(batch_shape)


def tril_matrix_to_vec(mat, diag=0):
    """The lower-triangular entries (below diagonal ``diag``) of each matrix, in row order."""
    n = mat.shape[-1]
    if diag < -n or diag >= n:
        raise ValueError(f"diag ({diag}) provided is outside [{-n}, {n - 1}].")
    indices = arange(n, device=mat.device)
    tril_mask = indices < indices.view(-1, 1) + (diag + 1)
    return mat[..., tril_mask]


def vec_to_tril_matrix(vec, diag=0):
    """The inverse of ``tril_matrix_to_vec``: vectors laid into the lower triangle of zero matrices."""
    # (the positive root of D**2 + (1 + 2 diag) D - |diag| (diag + 1) - 2 len = 0)
    n = (-(1 + 2 * diag) + ((1 + 2 * diag) ** 2 + 8 * vec.shape[-1] + 4 * abs(diag) * (diag + 1)) ** 0.5) / 2
    eps = dtypes.finfo(vec.dtype).eps
    if round(n) - n > eps:
        raise ValueError(f"The size of last dimension is {vec.shape[-1]} which cannot be expressed as "
                         "the lower triangular part of a square D x D matrix.")
    n = round(n)
    mat = vec.new_zeros(tuple(vec.shape[:-1]) + (n, n))
    indices = arange(n, device=vec.device)
    tril_mask = indices < indices.view(-1, 1) + (diag + 1)
    mat[..., tril_mask] = vec
    return mat
