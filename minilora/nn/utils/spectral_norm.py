"""``torch.nn.utils.spectral_norm`` / ``remove_spectral_norm``: the older, hook-based spectral normalization
(torch now points to ``parametrizations.spectral_norm``; the GAN tutorials and SN-GAN code still call this one).
The weight moves to the parameter ``<name>_orig``; the buffers ``<name>_u`` and ``<name>_v`` hold the power
iteration's singular vectors, and a forward pre-hook sets ``module.<name> = <name>_orig / sigma`` before each call,
stepping the power iteration once more first in training mode (``n_power_iterations`` steps, u and v updated in
place). Unlike the parametrization, nothing is iterated when it is applied: until the first forward,
``module.<name>`` is the plain weight's values. As torch's, names, random draws and order of updates included.
"""
from ...tensor import no_grad
from .. import functional as F
from ..module import Parameter
from .parametrizations import weight_matrix
from .weight_norm import remove_reparametrization_hook

__all__ = ["SpectralNorm", "spectral_norm", "remove_spectral_norm"]


class SpectralNorm:
    """The forward pre-hook: recomputes ``module.<name>`` from ``<name>_orig``, ``<name>_u`` and ``<name>_v``."""

    def __init__(self, name="weight", n_power_iterations=1, dim=0, eps=1e-12):
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.name, self.n_power_iterations, self.dim, self.eps = name, n_power_iterations, dim, eps

    def compute_weight(self, module, do_power_iteration):
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        matrix = weight_matrix(weight, self.dim)
        if do_power_iteration:
            with no_grad():  # (v first, then u: the order of torch's hook, the reverse of the parametrization's)
                for _ in range(self.n_power_iterations):
                    v.copy_(F.normalize(matrix.t().mv(u), dim=0, eps=self.eps))
                    u.copy_(F.normalize(matrix.mv(v), dim=0, eps=self.eps))
            u, v = u.clone(), v.clone()  # (the buffers change in place at the next call; sigma's graph keeps these)
        sigma = u.dot(matrix.mv(v))
        return weight / sigma

    def remove(self, module):
        with no_grad():
            weight = self.compute_weight(module, do_power_iteration=False)
        for suffix in ("", "_u", "_v", "_orig"):
            delattr(module, self.name + suffix)
        module.register_parameter(self.name, Parameter(weight.detach()))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module, do_power_iteration=module.training))

    @staticmethod
    def apply(module, name, n_power_iterations, dim, eps):
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
        fn = SpectralNorm(name, n_power_iterations, dim, eps)
        weight = module._parameters[name]
        if weight is None:
            raise ValueError(f"`SpectralNorm` cannot be applied as parameter `{name}` is None")
        with no_grad():  # (u drawn before v, from the global generator, as torch's)
            height, width = weight_matrix(weight, fn.dim).shape
            u = F.normalize(weight.new_empty(height).normal_(0, 1), dim=0, eps=fn.eps)
            v = F.normalize(weight.new_empty(width).normal_(0, 1), dim=0, eps=fn.eps)
        delattr(module, name)
        module.register_parameter(name + "_orig", weight)
        setattr(module, name, weight.data)
        module.register_buffer(name + "_u", u)
        module.register_buffer(name + "_v", v)
        module.register_forward_pre_hook(fn)
        return fn


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Divide ``module.<name>`` by its spectral norm before each call (torch's hook-based version)."""
    if dim is None:
        dim = 1 if type(module).__name__ in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d") else 0
    SpectralNorm.apply(module, name, n_power_iterations, dim, eps)
    return module


def remove_spectral_norm(module, name="weight"):
    """Undo ``spectral_norm``: one parameter ``<name>`` again, holding the normalized value."""
    return remove_reparametrization_hook(module, name, SpectralNorm, "spectral_norm")
