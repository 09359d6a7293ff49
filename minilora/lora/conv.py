"""LoRA on convolutions, PEFT's ``lora.Conv1d`` / ``lora.Conv2d`` (its "Custom models" guide adapts a CNN).

A convolution's update is a rank-r convolution: ``lora_A[name]`` is a conv ``in -> r`` with the base
layer's kernel size, stride and padding (no bias), ``lora_B[name]`` a 1x1 conv ``r -> out`` (groups as the
base). So ``h = conv(x, W0) + b + s * B(A(dropout(x)))``, and the merged update is
``s * B A`` contracted over r: ``[out, in, *kernel]``, the base weight's shape. Names, shapes and files
are PEFT's (``conv.lora_A.default.weight`` ``[r, in, kh, kw]``).

As PEFT 0.22, lora_A takes the base's dilation and padding_mode too, so the A branch sees the input as the
base does and ``s B A`` merges into the base kernel exactly (0.21 built A without them: a dilated base's
branches disagreed in shape, a reflect-padded one's A padded with zeros). DoRA (``use_dora=True``) as PEFT's DoraConv2dLayer: one magnitude per output channel, stored
``[1, out, 1, 1]`` (Conv1d: ``[1, out, 1]``), over the norm of each output channel's whole kernel; on a
float16/bfloat16 base each op of that norm rounds to 16 bits where PEFT's does (as ``lora.Linear``'s).
Weight-mutating inits (PiSSA, OLoRA, ...) are refused with PEFT's ValueError.
"""
import warnings

from .. import dtypes
from ..nn import Conv1d as _NNConv1d
from ..nn import Conv2d as _NNConv2d
from ..nn import Identity, Module, init
from ..tensor import Tensor
from .inits import init_name
from .layers import DoraMagnitude, Linear, _dora_norm_rounded, _redraw_A, _row_norm, _to_base_dtype

__all__ = ["Conv1d", "Conv2d"]


class _ConvNd(Linear):
    """LoRA around a frozen Conv1d/Conv2d; everything but the factors' shapes is ``lora.Linear``'s
    (adapters by name, activation, merge/unmerge, lora_bias)."""

    def __init__(self, base_layer, adapter_name, config, r, lora_alpha):
        if isinstance(base_layer, self.base_types):  # (anything else: BaseTunerLayer's TypeError)
            _check_convolution(base_layer, config, r)
        super().__init__(base_layer, adapter_name, config, r, lora_alpha)

    def update_layer(self, adapter_name, config, r, lora_alpha):
        _check_init(config.init_lora_weights)
        base = self.base_layer
        W0 = base.weight
        self._record_hyperparameters(adapter_name, config, r, lora_alpha)
        conv = type(base)
        # PEFT's construction: A with the base's kernel, stride, padding, dilation and padding_mode (no groups),
        # B a 1x1 conv with the base's groups, both in the default dtype (drawing their conv init), A drawn
        # again by PEFT's reset, then moved to the base's dtype
        self.lora_A[adapter_name] = conv(self.in_features, r, base.kernel_size, base.stride, base.padding,
                                         dilation=base.dilation, padding_mode=base.padding_mode, bias=False,
                                         device=W0.device)
        self.lora_B[adapter_name] = conv(r, self.out_features, 1, 1, groups=base.groups, bias=config.lora_bias,
                                         device=W0.device)
        _redraw_A(self.lora_A[adapter_name].weight, config.init_lora_weights, r)
        if config.init_lora_weights is not False:  # B = 0
            init.zeros_(self.lora_B[adapter_name].weight)
            if config.lora_bias:
                init.zeros_(self.lora_B[adapter_name].bias)
        _to_base_dtype((self.lora_A[adapter_name], self.lora_B[adapter_name]), W0)
        if config.use_dora:  # m starts at the norm of W0 + s B A: the model is unchanged by it (PEFT takes it
            # while the adapter still has the base's dtype: a 16-bit base rounds each op to 16 bits)
            norms = self._channel_norms(adapter_name, W0.dtype)
            self.lora_magnitude_vector[adapter_name] = DoraConvMagnitude(
                Tensor(norms.reshape(self._magnitude_shape()), dtype=W0.dtype, device=W0.device), type(base).__name__)
        self.set_adapter(self.active_adapters)

    def _magnitude_shape(self):
        """PEFT's ``[1, out, 1, ...]``: the norm taken with keepdim over [out, in, *kernel], transposed."""
        return (1, self.out_features) + (1,) * (self.base_layer.weight.ndim - 2)

    def _channel_norms(self, adapter_name, dtype):
        """PEFT's DoRA weight norm ``||W0 + s B A||`` over each output channel's [in, *kernel] (a plain array
        [out]) computed in ``dtype``: 16-bit rounds B A, s * (B A) and the sum, as PEFT's ops there."""
        W = self.base_layer.weight._array
        rows = W.shape[0]
        return _dora_norm_rounded(W.reshape(rows, -1), self._BA(adapter_name).reshape(rows, -1),
                                  self.scaling[adapter_name], dtype)

    def adapter_forward(self, x):
        """``conv(x, W0) + b + s * B(A(dropout(x)))`` for each active adapter, PEFT's loop: each branch on
        x cast to its adapter's dtype, the sum cast back to the base output's dtype once."""
        result = self.base_layer(x)
        dtype = result.dtype
        for name in self.active_adapters:
            if name in self.lora_magnitude_vector:
                result = self._dora_forward(x.to(self.lora_A[name].weight.dtype), name, result)
            elif name in self.lora_A:
                xd = self.lora_dropout[name](x.to(self.lora_A[name].weight.dtype))
                result = result + self.lora_B[name](self.lora_A[name](xd)) * self.scaling[name]
        return result.to(dtype)

    def _dora_forward(self, x, name, result):
        """PEFT's DoRA for convolutions: ``result + (m/n - 1) * base + (m/n) * s * B(A(x'))``, where base is
        the output so far without the bias (with dropout: the base conv of the dropped-out x', no bias) and
        n = ||W0 + s B A|| per output channel, a constant (no gradient, DoRA paper section 4.3)."""
        base, s = self.base_layer, self.scaling[name]
        # PEFT adds the base weight, not cast, to the adapter-dtype update: the norm's dtype is the promoted one
        dtype = dtypes.promote_types(base.weight.dtype, self.lora_A[name].weight.dtype)
        norm = self._channel_norms(name, dtype).reshape(self._magnitude_shape())
        mag_scale = self.lora_magnitude_vector[name].weight / Tensor._make(norm, result.device, False, None)
        dropout = self.lora_dropout[name]
        if self.training and not isinstance(dropout, Identity):  # PEFT's test
            x = dropout(x)
            base_result = base(x) if base.bias is None else base(x) - base.bias.reshape(self._magnitude_shape()[1:])
        else:
            base_result = result if base.bias is None else result - base.bias.reshape(self._magnitude_shape()[1:])
        return result + (mag_scale - 1) * base_result + mag_scale * self.lora_B[name](self.lora_A[name](x)) * s

    def _mixed_batch_forward(self, x, adapter_names):
        """Per-sample adapters (PEFT's loop over the adapters): each sample adds only its own adapter's
        branch (a 0/1 mask per sample; ``"__base__"`` samples add nothing)."""
        self._check_mixed_batch(x, adapter_names)
        result = self.base_layer(x)
        xp = result.device.xp
        for name in sorted({n for n in adapter_names if n in self.lora_A}):
            mask = xp.asarray([n == name for n in adapter_names], dtype=result.dtype)
            mask = Tensor._make(mask.reshape((-1,) + (1,) * (result.ndim - 1)), result.device, False, None)
            xd = self.lora_dropout[name](x.to(self.lora_A[name].weight.dtype))
            result = result + (self.lora_B[name](self.lora_A[name](xd)) * self.scaling[name]).to(result.dtype) * mask
        return result

    def _BA(self, adapter_name):
        """``B A`` contracted over the rank: ``[out, in, *kernel]`` (16-bit factors in float32, as PEFT
        on the CPU). With groups > 1 there is no such product (PEFT refuses merging)."""
        if self.base_layer.groups > 1:
            raise NotImplementedError(f"no merged update (B A) for a {type(self.base_layer).__name__} with "
                                      f"groups={self.base_layer.groups}: merging and SVD-combining its adapters "
                                      "are not supported (as in PEFT)")
        B = dtypes.upcast(self.lora_B[adapter_name].weight._array)
        A = dtypes.upcast(self.lora_A[adapter_name].weight._array)
        xp = self.base_layer.weight.device.xp
        return xp.tensordot(B.reshape(B.shape[:2]), A, axes=1)

    def merge_math(self, adapter_name, W, unmerge=False, safe_merge=False):
        """LoRA: ``W +- s B A``. DoRA (PEFT's): ``m / n * (W + s B A)`` per output channel, n the norm of the
        unmerged weight plus the update, kept to unmerge (``W / (m / n) - s B A``)."""
        if self.base_layer.groups > 1:  # PEFT's refusal (its words)
            raise NotImplementedError("Merging is not supported for _ConvNd layers with groups > 1!")
        delta = self.get_delta_weight(adapter_name)
        if adapter_name not in self.lora_magnitude_vector:
            return self._with_delta(W, delta, unmerge, safe_merge)
        if not unmerge:
            W0, W = self._replayed(W, safe_merge)
            merged = W0 + delta
            self._dora_merge_norms[adapter_name] = _row_norm(merged.reshape(merged.shape[0], -1))
        magnitude = self.lora_magnitude_vector[adapter_name].weight._array.reshape(-1)
        factor = (magnitude / self._dora_merge_norms[adapter_name]).reshape((-1,) + (1,) * (W.ndim - 1))
        return W / factor - delta if unmerge else factor * (W + delta)


class DoraConvMagnitude(DoraMagnitude):
    """DoRA's magnitude on a convolution, ``[1, out, 1, ...]``. Printed as PEFT 0.22 prints it:
    ``lora.dora.DoraConv2dLayer()`` (0.21's conv layer added the prefix to the Linear one's a second time)."""

    def __init__(self, norms, conv_name):
        super().__init__(norms)
        self._peft_class = f"lora.dora.Dora{conv_name}Layer"

    def __repr__(self):
        return self._peft_class + Module.__repr__(self)[len(self._get_name()):]


def _check_convolution(base, config, r):
    """What PEFT's lora conv layers refuse (their words), and the settings where its A branch cannot
    follow the base convolution (refused here, with the reason)."""
    if config.use_dora and base.groups > 1:  # PEFT runs it, but its B A there mixes the groups' channels
        raise NotImplementedError(f"use_dora on a {type(base).__name__} with groups={base.groups} is not "
                                  "implemented in minilora")
    if base.groups > 1:
        warnings.warn("LoRA adapter added to ConvNd layer with groups > 1. Merging is not supported.")
    if r % base.groups:
        raise ValueError(f"Targeting a {type(base).__name__} with groups={base.groups} and rank {r}. Currently, "
                         "support is limited to conv layers where the rank is divisible by groups. Either choose "
                         "a different rank or do not target this specific layer.")


def _check_init(init_lora_weights):
    if init_name(init_lora_weights) not in (True, False, "gaussian"):  # PEFT's ValueError for a conv layer
        raise ValueError(f"Unknown initialization init_lora_weights={init_lora_weights!r} for a LoRA "
                         "convolution (True, False and 'gaussian' are supported, as in PEFT)")


class Conv1d(_ConvNd):
    peft_name = "lora.Conv1d"
    base_types = (_NNConv1d,)


class Conv2d(_ConvNd):
    peft_name = "lora.Conv2d"
    base_types = (_NNConv2d,)
