"""Lazy modules (``nn.LazyLinear``, ``nn.LazyConv2d``, ...): layers whose input size is read from the
first input, as torch's.

Until that first call the weight and bias are ``UninitializedParameter``s (no shape, no values). The
first call gives them their shape, draws their initial values exactly as the eager layer's
constructor would (same generator calls, same order: a seeded lazy model equals a seeded eager one
built with the sizes it inferred), and turns the module into the eager class (``LazyLinear`` becomes
``Linear``). Loading a ``state_dict`` into a lazy module gives its parameters the loaded shapes
first (then the first call draws nothing), as torch does.
"""
import numpy as np

from .. import ops
from ..tensor import Tensor, no_grad
from .layers import (BatchNorm1d, BatchNorm2d, BatchNorm3d, Conv1d, Conv2d, Conv3d, ConvTranspose1d,
                     ConvTranspose2d, ConvTranspose3d, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, Linear,
                     _float_dtype)
from .module import Parameter

__all__ = ["UninitializedParameter", "UninitializedBuffer", "LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d",
           "LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d", "LazyBatchNorm1d",
           "LazyBatchNorm2d", "LazyBatchNorm3d", "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d"]

_NO_SHAPE = ("Can't access the shape of an uninitialized parameter or buffer. This error usually happens in "
             "`load_state_dict` when trying to load an uninitialized parameter into an initialized one. Call "
             "`forward` to initialize the parameters before accessing their attributes.")


class _Uninitialized:
    """A tensor without a shape yet (torch's ``UninitializedTensorMixin``): its dtype, device and
    ``requires_grad`` are set; ``materialize(shape)`` gives it a shape (zeros until an initialiser
    draws) and makes it a plain one of ``cls_to_become``."""

    __slots__ = ()
    cls_to_become = None

    @property
    def shape(self):
        raise RuntimeError(_NO_SHAPE)

    def size(self, dim=None):
        raise RuntimeError(_NO_SHAPE)

    def numel(self):
        raise RuntimeError(_NO_SHAPE)

    def materialize(self, shape, device=None, dtype=None):
        """Give it ``shape`` (zeros), in place: the same object, now of ``cls_to_become``."""
        xp = self.device.xp
        self._array = xp.zeros(tuple(shape), dtype=self._array.dtype if dtype is None else _float_dtype(dtype))
        self.__class__ = self.cls_to_become

    def __repr__(self):
        return f"<{type(self).__name__}>"


class UninitializedParameter(_Uninitialized, Parameter):
    """A Parameter without a shape yet (torch's)."""

    __slots__ = ()
    cls_to_become = Parameter

    def __init__(self, requires_grad=True, device=None, dtype=None):
        Parameter.__init__(self, np.empty(0, dtype=_float_dtype(dtype)), requires_grad, device=device)


class UninitializedBuffer(_Uninitialized, Tensor):
    """A buffer without a shape yet (torch's: a lazy norm's running statistics)."""

    __slots__ = ()
    cls_to_become = Tensor

    def __init__(self, requires_grad=False, device=None, dtype=None):
        Tensor.__init__(self, np.empty(0, dtype=_float_dtype(dtype)), dtype=_float_dtype(dtype), device=device,
                        requires_grad=requires_grad)


def _infer_parameters(module, args):
    """The forward pre-hook of a lazy module's first call: shapes from the input, torch's draws,
    then the module becomes its eager class (and the hook goes)."""
    module.initialize_parameters(*args)
    if module.has_uninitialized_params():
        raise RuntimeError(f"module {module._get_name()} has not been fully initialized")
    module._lazy_hook.remove()
    del module._lazy_hook
    module.__class__ = module.cls_to_become


def _materialize_loaded(module, state_dict, prefix, *_):
    """A load_state_dict pre-hook: an uninitialized parameter takes the shape of the value loaded into it."""
    for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
        if isinstance(tensor, _Uninitialized) and prefix + name in state_dict:
            tensor.materialize(np.shape(state_dict[prefix + name]))


class _LazyMixin:
    """What every lazy module shares (torch's ``LazyModuleMixin``)."""

    cls_to_become = None

    def _become_lazy(self, bias, device, dtype, **sizes):
        """Replace the placeholder parameters the eager constructor made (zero-size, nothing drawn)."""
        for name, value in sizes.items():
            setattr(self, name, value)
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        self.bias = UninitializedParameter(device=device, dtype=dtype) if bias else None
        self._lazy_hooks()

    def _lazy_hooks(self):
        self._lazy_hook = self.register_forward_pre_hook(_infer_parameters)
        self.register_load_state_dict_pre_hook(_materialize_loaded)

    def has_uninitialized_params(self):
        return any(isinstance(t, _Uninitialized) for t in [*self._parameters.values(), *self._buffers.values()])

    def _materialize_all(self, weight_shape, bias_shape):
        with no_grad():
            if isinstance(self.weight, UninitializedParameter):
                self.weight.materialize(weight_shape)
            if isinstance(self.bias, UninitializedParameter):
                self.bias.materialize(bias_shape)
            self.reset_parameters()


class LazyLinear(_LazyMixin, Linear):
    """``nn.Linear`` whose ``in_features`` is the first input's last dimension."""

    cls_to_become = Linear

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        super().__init__(0, 0, False, device, dtype)  # (a zero-size weight: nothing drawn)
        self._become_lazy(bias, device, dtype, out_features=out_features)

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input, *args, **kwargs):
        if self.has_uninitialized_params():
            self.in_features = input.shape[-1]
            self._materialize_all((self.out_features, self.in_features), (self.out_features,))
        if self.in_features == 0:  # (loaded from a state_dict: the size is the loaded weight's)
            if input.shape[-1] != self.weight.shape[-1]:
                raise AssertionError(f"The in_features inferred from input: {input.shape[-1]} is not equal to "
                                     f"in_features from self.weight: {self.weight.shape[-1]}")
            self.in_features = input.shape[-1]


class _LazyConvMixin(_LazyMixin):
    """The lazy convolutions: ``in_channels`` is the first input's channel dimension."""

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        super().__init__(0, 0, kernel_size, stride, padding, dilation, groups, False, padding_mode, device, dtype)
        self._become_lazy(bias, device, dtype, out_channels=out_channels)

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self.in_channels != 0:
            super().reset_parameters()

    def initialize_parameters(self, input, *args, **kwargs):
        if not self.has_uninitialized_params():
            return
        self.in_channels = input.shape[1] if input.ndim == self._rank + 2 else input.shape[0]
        if self.in_channels % self.groups:
            raise ValueError("in_channels must be divisible by groups")
        channels = ((self.in_channels, self.out_channels // self.groups) if self._transposed
                    else (self.out_channels, self.in_channels // self.groups))
        self._materialize_all(channels + self.kernel_size, (self.out_channels,))


class _LazyConvTransposeMixin(_LazyConvMixin):
    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, padding_mode="zeros", device=None, dtype=None):
        # (the eager constructor with no channels: torch's order of arguments for the transposed ones)
        type(self).cls_to_become.__init__(self, 0, 0, kernel_size, stride, padding, output_padding, groups, False,
                                          dilation, padding_mode, device, dtype)
        self._become_lazy(bias, device, dtype, out_channels=out_channels)


class LazyConv1d(_LazyConvMixin, Conv1d):
    cls_to_become = Conv1d


class LazyConv2d(_LazyConvMixin, Conv2d):
    cls_to_become = Conv2d


class LazyConv3d(_LazyConvMixin, Conv3d):
    cls_to_become = Conv3d


class LazyConvTranspose1d(_LazyConvTransposeMixin, ConvTranspose1d):
    cls_to_become = ConvTranspose1d


class LazyConvTranspose2d(_LazyConvTransposeMixin, ConvTranspose2d):
    cls_to_become = ConvTranspose2d


class LazyConvTranspose3d(_LazyConvTransposeMixin, ConvTranspose3d):
    cls_to_become = ConvTranspose3d


class _LazyNormMixin(_LazyMixin):
    """The lazy batch and instance norms (torch's ``_LazyNormBase``): ``num_features`` is the first
    input's dimension 1; ``affine`` and ``track_running_stats`` default to True (for the instance norms
    too, as torch's lazy ones)."""

    def __init__(self, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None,
                 *, bias=True):
        super().__init__(0, eps, momentum, False, False, device, dtype, bias=bias)
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = UninitializedParameter(device=device, dtype=dtype)
            self.bias = UninitializedParameter(device=device, dtype=dtype) if bias else None
        if track_running_stats:
            self.running_mean = UninitializedBuffer(device=device, dtype=dtype)
            self.running_var = UninitializedBuffer(device=device, dtype=dtype)
            self.num_batches_tracked = ops.tensor(0, dtype=np.dtype("int64"), device=device)
        self._lazy_hooks()

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self.num_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input, *args, **kwargs):
        if self.has_uninitialized_params():
            self.num_features = input.shape[1]
            with no_grad():
                for tensor in (self.weight, self.bias, self.running_mean, self.running_var):
                    if isinstance(tensor, _Uninitialized):
                        tensor.materialize((self.num_features,))
                self.reset_parameters()


class LazyBatchNorm1d(_LazyNormMixin, BatchNorm1d):
    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyNormMixin, BatchNorm2d):
    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyNormMixin, BatchNorm3d):
    cls_to_become = BatchNorm3d


class LazyInstanceNorm1d(_LazyNormMixin, InstanceNorm1d):
    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyNormMixin, InstanceNorm2d):
    cls_to_become = InstanceNorm2d


class LazyInstanceNorm3d(_LazyNormMixin, InstanceNorm3d):
    cls_to_become = InstanceNorm3d
