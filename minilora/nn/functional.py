"""``minilora.nn.functional`` -- the stateless ops under PyTorch's ``F.`` names."""
from ..ops import (cross_entropy, dropout, embedding, gelu, layer_norm, linear, log_softmax, relu,  # noqa: F401
                   rms_norm, rotary_embedding, scaled_dot_product_attention, sigmoid, silu, softmax,
                   swiglu, tanh)
