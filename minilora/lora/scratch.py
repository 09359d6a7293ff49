"""The capstone: a LoRA linear layer from scratch (exercises 4.5 and 4.6).

Everything notebooks 1-4 built, in about 20 lines: a module that holds a frozen ``nn.Linear`` and two
trainable matrices, and computes ``h = W0 x + (lora_alpha / r) B (A x)`` with plain tensor operations
(``@``, ``+``, ``*``) -- no ``ops.lora_linear``, no fused kernel, no adapter dictionaries. Autograd
does the backward. ``tests/test_exercises_capstone.py`` checks it against the library's
``minilora.lora.Linear``: the same parameters at initialisation (shapes, ``B = 0``, ``A`` drawn like
a ``Linear``'s weight), the same outputs and the same gradients.

It is deliberately smaller than the library's layer: one adapter, no dropout, no merging. Reading
``minilora/lora/layers.py`` afterwards shows what a real adapter layer adds around the same math.
"""
import math

import numpy as np

from ..nn import Module, Parameter, init

__all__ = ["ScratchLoraLinear"]


class ScratchLoraLinear(Module):
    """``base_layer`` (an ``nn.Linear``, frozen here) plus a rank-``r`` update ``s B A``, ``s = lora_alpha / r``.

    Parameters: ``lora_A`` (``r x in_features``, Kaiming-uniform as ``nn.Linear`` draws its weight) and
    ``lora_B`` (``out_features x r``, zeros, so the layer starts exactly at the base layer).
    """

    def __init__(self, base_layer, r=8, lora_alpha=8):
        super().__init__()
        if r < 1:
            raise ValueError(f"r must be a positive integer, got {r}")
        self.base_layer = base_layer
        self.r, self.scaling = r, lora_alpha / r
        out_features, in_features = base_layer.weight.shape
        # EXERCISE 4.5: freeze the base weight; lora_A [r, in] Kaiming-uniform (a=sqrt(5)), lora_B [out, r] zeros
        # BEGIN SOLUTION
        self.base_layer.weight.requires_grad = False
        if self.base_layer.bias is not None:
            self.base_layer.bias.requires_grad = False
        dtype, device = base_layer.weight.dtype, base_layer.weight.device
        self.lora_A = Parameter(np.zeros((r, in_features)), dtype=dtype, device=device)
        init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = Parameter(np.zeros((out_features, r)), dtype=dtype, device=device)
        # END SOLUTION

    def forward(self, x):
        # EXERCISE 4.6: h = base_layer(x) + scaling * (x A^T) B^T, without ever forming B A
        # BEGIN SOLUTION
        return self.base_layer(x) + (x @ self.lora_A.T) @ self.lora_B.T * self.scaling
        # END SOLUTION
