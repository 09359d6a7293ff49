"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (torch semantics).

Per step, with ``d = grad + weight_decay * p``:

* no momentum:  ``p -= lr * d``
* momentum:     ``buf = d`` on the first step, then ``buf = momentum * buf + (1 - dampening) * d``;
  the step uses ``buf``, or ``d + momentum * buf`` with ``nesterov=True`` (a look-ahead).

Only ``momentum != 0`` creates state: one ``momentum_buffer`` per trained parameter (in the parameter's
dtype, as torch; a float16/bfloat16 parameter is updated op by op as torch rounds: ``_step_16bit``).
"""
import numpy as np

from .. import dtypes
from .optimizer import (Optimizer, _check_range, add_scaled, add_scaled_16bit_rounded, keep_arrays, learning_rate,
                        mul_scalar_16bit, rounds_each_op, state_arrays)

__all__ = ["SGD"]


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
    maximize=False, foreach=None, differentiable=False, fused=None)``, as in PyTorch.
    ``foreach``/``fused`` pick among torch's implementations (accepted, one update here);
    ``differentiable=True`` is not implemented and raises."""
    _state_shaped_as_params = True

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        # torch checks nesterov on the constructor's arguments only: a group may still set momentum=0 (nesterov
        # then does nothing) or a dampening (the look-ahead uses the dampened buffer)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum requires a momentum and zero dampening (got momentum={momentum}, "
                             f"dampening={dampening})")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                      foreach=foreach, differentiable=differentiable, fused=fused))

    def _check_group(self, group, index):
        super()._check_group(group, index)
        _check_range(group, index, "momentum", low=0.0)
        _check_range(group, index, "dampening")  # torch checks no range: (1 - dampening) > 1 is allowed
        _check_range(group, index, "weight_decay", low=0.0)

    def step(self, closure=None):
        """Update every trainable parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            params = self._params_to_update(group)
            # As torch: every momentum buffer is read before any update, so a parameter listed twice (torch
            # warns) starts from two fresh buffers on its first step, then shares one.
            buffers = [_momentum_buffer(self.state[p], p) if group["momentum"] else None for p in params]
            multi_tensor = _multi_tensor_momentum(group, params, buffers)
            for p, buf in zip(params, buffers):
                if rounds_each_op(p.dtype):
                    buf = self._step_16bit(p, group, buf, (p.device, p.dtype) in multi_tensor)
                else:
                    buf = self._step(p, group, buf)
                if group["momentum"]:  # (torch's state: the buffer's Tensor, made on the first step)
                    keep_arrays(self.state[p], {"momentum_buffer": buf}, p.device)
        return loss

    def _step(self, p, group, buf):
        """torch's single-tensor SGD: each ``x.add(y, alpha=a)`` one fused multiply-add where torch's build
        fuses (float32 on an AVX2 CPU: ``add_scaled``). Returns the momentum buffer's array (None without)."""
        lr, momentum, wd = learning_rate(group), group["momentum"], group["weight_decay"]
        d = -p.grad._array if group["maximize"] else p.grad._array  # negated: a new array
        if wd:
            d = add_scaled(d, wd, p._array)  # a new array: p.grad itself is never changed
        if momentum:
            if buf is None:
                buf = d.copy()
            else:
                buf *= momentum
                buf[...] = add_scaled(buf, 1 - group["dampening"], d)
            d = add_scaled(d, momentum, buf) if group["nesterov"] else buf
        p._array[...] = add_scaled(p._array, -lr, d)
        return buf

    def _step_16bit(self, p, group, buf, multi_tensor):
        """torch's single-tensor SGD on a float16/bfloat16 parameter: each torch op (``grad.add(p, alpha=wd)``,
        ``buf.mul_(momentum).add_(d, alpha=1-dampening)``, ``p.add_(d, alpha=-lr)``) computes in float32
        and rounds to the dtype once (each step in its kernel's scalar tail: ``add_scaled_16bit_rounded``);
        ``alpha=`` scalars are rounded to the dtype first, as torch does. ``multi_tensor``: torch's foreach path
        scales the buffers with ``_foreach_mul_(bufs, momentum)`` (``mul_scalar_16bit``)."""
        dtype = p.dtype

        def op(value):
            return value.astype(dtype).astype(np.float32)

        def add(x, value, y):  # x.add(y, alpha=value)
            return add_scaled_16bit_rounded(x, value, y, dtype)
        d = dtypes.upcast(p.grad._array)
        d = -d if group["maximize"] else d
        if group["weight_decay"]:
            d = add(d, group["weight_decay"], dtypes.upcast(p._array))
        momentum = group["momentum"]
        if momentum:
            if buf is None:
                buf = d.astype(dtype)
            else:
                scale = mul_scalar_16bit(momentum, dtype, multi_tensor)
                buf[...] = add(op(dtypes.upcast(buf) * scale), 1 - group["dampening"], d)
            d = add(d, momentum, dtypes.upcast(buf)) if group["nesterov"] else dtypes.upcast(buf)
        p._array[...] = add(dtypes.upcast(p._array), -learning_rate(group), d)
        return buf


def _multi_tensor_momentum(group, params, buffers):
    """The (device, dtype) pairs whose buffers torch's ``foreach=True`` SGD scales with one ``_foreach_mul_``: where
    every parameter of the pair already has a buffer (else it goes tensor by tensor with ``buf.mul_``)."""
    if not (group["foreach"] and group["momentum"]):
        return set()
    pairs = {(p.device, p.dtype) for p in params}
    return pairs - {(p.device, p.dtype) for p, buf in zip(params, buffers) if buf is None}


def _momentum_buffer(state, p):
    """The array of ``state``'s momentum buffer (its Tensor's, or what the user put there), or None before the
    first step (or where torch's state holds None)."""
    return state_arrays(state, p.device).get("momentum_buffer")
