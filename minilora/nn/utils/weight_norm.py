"""``torch.nn.utils.weight_norm`` / ``remove_weight_norm``: the older, hook-based weight normalization
(deprecated by torch in favour of ``parametrizations.weight_norm``, still in much published code: HiFi-GAN,
WaveGlow). The weight becomes two parameters, ``<name>_g`` (the magnitude: the norm over every dimension
but ``dim``) and ``<name>_v`` (the direction), and a forward pre-hook sets ``module.<name> = v * (g / ||v||)``
before each call; ``remove_weight_norm`` folds them back into one parameter. As torch's, names included.
"""
import warnings

from ..module import Parameter
from .parametrizations import _norm_except_dim

__all__ = ["WeightNorm", "weight_norm", "remove_weight_norm"]


class WeightNorm:
    """The forward pre-hook: recomputes ``module.<name>`` from ``<name>_g`` and ``<name>_v``."""

    def __init__(self, name, dim):
        self.name, self.dim = name, -1 if dim is None else dim

    def compute_weight(self, module):
        g, v = getattr(module, self.name + "_g"), getattr(module, self.name + "_v")
        return v * (g / _norm_except_dim(v, self.dim))

    @staticmethod
    def apply(module, name, dim):
        warnings.warn("`torch.nn.utils.weight_norm` is deprecated in favor of "
                      "`torch.nn.utils.parametrizations.weight_norm`.", FutureWarning, stacklevel=2)  # (where torch's points)
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
        fn = WeightNorm(name, dim)
        weight = getattr(module, name)
        del module._parameters[name]
        module.register_parameter(name + "_g", Parameter(_norm_except_dim(weight, fn.dim).data))
        module.register_parameter(name + "_v", Parameter(weight.data))
        setattr(module, name, fn.compute_weight(module))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module):
        weight = self.compute_weight(module)
        delattr(module, self.name)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        setattr(module, self.name, Parameter(weight.data))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))


def weight_norm(module, name="weight", dim=0):
    """Split ``module.<name>`` into ``<name>_g`` and ``<name>_v`` (torch's deprecated hook-based version)."""
    WeightNorm.apply(module, name, dim)
    return module


def remove_weight_norm(module, name="weight"):
    """Undo ``weight_norm``: one parameter ``<name>`` again, with the current normalized value."""
    return remove_reparametrization_hook(module, name, WeightNorm, "weight_norm")


def remove_reparametrization_hook(module, name, hook_class, what):
    """Take out the ``hook_class`` forward pre-hook that recomputes ``module.<name>`` (``weight_norm``'s,
    ``spectral_norm``'s), folding its parameters back into one, as torch's ``remove_<what>``."""
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, hook_class) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise ValueError(f"{what} of '{name}' not found in {module}")
