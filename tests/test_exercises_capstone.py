"""Exercises 4.5 and 4.6, the capstone: a LoRA linear layer from scratch (minilora/lora/scratch.py),
checked against the library's minilora.lora.Linear.

Run them:  python -m pytest -m "ex4_5 or ex4_6" tests
"""
import math

import numpy as np
import pytest

import minilora as ml
from minilora import nn
from minilora.lora import Linear as LoraLinear
from minilora.lora import LoraConfig
from minilora.lora.scratch import ScratchLoraLinear
from minilora.testing import assert_close


def _pair(rng, d_in=7, d_out=5, r=3, lora_alpha=6, bias=True):
    """A scratch layer and the library's layer around equal copies of one base Linear, with the same
    random A and B (B made non-zero so the LoRA branch matters)."""
    base = nn.Linear(d_in, d_out, bias=bias, dtype=ml.float64)
    twin = nn.Linear(d_in, d_out, bias=bias, dtype=ml.float64)
    twin.load_state_dict(base.state_dict())
    scratch = ScratchLoraLinear(base, r=r, lora_alpha=lora_alpha)
    library = LoraLinear(twin, "default", LoraConfig(r=r, lora_alpha=lora_alpha), r=r, lora_alpha=lora_alpha)
    twin.weight.requires_grad = False
    if bias:
        twin.bias.requires_grad = False
    A, B = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))
    with ml.no_grad():
        scratch.lora_A.copy_(ml.tensor(A, dtype=ml.float64))
        scratch.lora_B.copy_(ml.tensor(B, dtype=ml.float64))
        library.lora_A["default"].weight.copy_(ml.tensor(A, dtype=ml.float64))
        library.lora_B["default"].weight.copy_(ml.tensor(B, dtype=ml.float64))
    return scratch, library


@pytest.mark.ex4_5
def test_scratch_parameters_as_the_library_initialises_them():
    ml.manual_seed(0)
    base = nn.Linear(40, 24, dtype=ml.float64)
    layer = ScratchLoraLinear(base, r=4, lora_alpha=8)
    trainable = {name: tuple(p.shape) for name, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A": (4, 40), "lora_B": (24, 4)}, "train exactly A [r, in] and B [out, r]; freeze W0"
    assert layer.scaling == 2.0
    A, B = layer.lora_A.numpy(), layer.lora_B.numpy()
    assert A.dtype == np.float64 and B.dtype == np.float64, "A and B take the base layer's dtype"
    assert not B.any(), "B starts at zero, so the layer starts exactly at the base layer"
    bound = 1 / math.sqrt(40)            # Kaiming-uniform with a = sqrt(5), as nn.Linear and PEFT draw A
    assert np.abs(A).max() <= bound and np.abs(A).max() > 0.8 * bound and A.std() > 0.4 * bound, \
        (f"A must be Kaiming-uniform with a=sqrt(5), i.e. uniform in +-1/sqrt(in_features) = +-{bound:.4f}; "
         f"got max |A| = {np.abs(A).max():.4f}, std {A.std():.4f}")
    single = ScratchLoraLinear(nn.Linear(6, 3, dtype=ml.float32), r=2)
    assert (single.lora_A.dtype, single.lora_B.dtype) == (ml.float32, ml.float32), \
        "A and B take the base layer's dtype (float32 here), not NumPy's default float64"


@pytest.mark.ex4_6
@pytest.mark.parametrize("bias", [True, False])
def test_scratch_forward_and_gradients_match_the_library(rng, bias):
    scratch, library = _pair(rng, bias=bias)
    x = rng.standard_normal((2, 4, 7))
    xs, xl = (ml.tensor(x, dtype=ml.float64, requires_grad=True) for _ in range(2))
    ys, yl = scratch(xs), library(xl)
    assert_close(ys.numpy(), yl.numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(ys.shape)
    ys.backward(ml.tensor(g, dtype=ml.float64))
    yl.backward(ml.tensor(g, dtype=ml.float64))
    assert_close(np.asarray(xs.grad), np.asarray(xl.grad), rtol=1e-12, atol=1e-12)
    assert_close(np.asarray(scratch.lora_A.grad), np.asarray(library.lora_A["default"].weight.grad), rtol=1e-12, atol=1e-12)
    assert_close(np.asarray(scratch.lora_B.grad), np.asarray(library.lora_B["default"].weight.grad), rtol=1e-12, atol=1e-12)
    assert scratch.base_layer.weight.grad is None, "W0 is frozen: no gradient"


@pytest.mark.ex4_6
def test_scratch_layer_starts_at_the_base_layer(rng):
    ml.manual_seed(1)
    base = nn.Linear(6, 3, dtype=ml.float64)
    layer = ScratchLoraLinear(base, r=2, lora_alpha=4)
    x = ml.tensor(rng.standard_normal((5, 6)), dtype=ml.float64)
    assert np.array_equal(layer(x).numpy(), base(x).numpy())
