"""nn layers as tutorials use them, against torch 2.13 bit for bit with MKL as the BLAS, round 30: what round 29's
sweep (tests/users_nn_sweep.py) left.

The attention inference kernel with a mask: torch's ``_native_multi_head_attention`` (nn.MultiheadAttention in eval
mode without gradients, and TransformerEncoderLayer's fused ``_transformer_encoder_layer_fwd``) reads the merged mask
as bools and calls ``_masked_softmax``, a scalar loop (C's exp, the sum in double for float32, each 16-bit step
rounded), not the vectorized softmax; it ignores ``is_causal`` and applies the mask it is given (minilora dropped
a causal mask there: a wrong value, not a last bit); the encoder layer's fused path takes float masks too (nonzero:
left out). TransformerEncoder's nested fast path (eval, a right-padded key padding mask) softmaxes each sequence's own
keys with the ordinary softmax.
"""
import sys

import numpy as np
import pytest

import minilora as ml
from minilora import blas

torch = pytest.importorskip("torch")
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from users_nn_sweep import CASES, compare, rn  # noqa: E402  (the sweep's cases)

pytestmark = pytest.mark.skipif(blas.library() != "mkl", reason="MKL (minilora[mkl]) is not minilora's BLAS here")
_BY_NAME = {case[0]: case for case in CASES}
_NUMPY_16 = {"bfloat16": ml.bfloat16, "float16": np.float16}


def _differences(name, dtype):
    name, build, call, make, _, grad = _BY_NAME[name]
    return compare(name, build, call, make, dtype, grad)


def _as_numpy(t):
    """A torch tensor's values in NumPy (16-bit ones by their bits)."""
    name = str(t.dtype).removeprefix("torch.")
    return t.view(torch.int16).numpy().view(_NUMPY_16[name]) if name in _NUMPY_16 else t.numpy()


# ---- the attention inference kernel with a mask ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_masked_softmax_is_torchs_scalar_loop(dtype):
    """Rows of every width to 40, a third of the keys masked, some rows with every key masked (NaN)."""
    from minilora.ops.reduce import masked_softmax_rows_as_torch
    g = torch.Generator().manual_seed(0)
    for width in range(1, 41):
        scores = (torch.randn(2, 2, width, width, generator=g) * 3).to(getattr(torch, dtype))
        padding = torch.rand(2, width, generator=g) < 0.3
        padding[0, 0] = width % 3 != 0
        theirs = torch._masked_softmax(scores, padding, 3, 1)
        masked = padding[:, None, None, :].expand(scores.shape).reshape(-1, width).numpy()
        mine = masked_softmax_rows_as_torch(_as_numpy(scores).reshape(-1, width), masked)
        np.testing.assert_array_equal(mine.astype(np.float64), theirs.double().reshape(-1, width).numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("name", ["MHA eval no_grad kpm", "EncoderLayer eval fast kpm"])
def test_the_inference_kernel_with_a_key_padding_mask_is_torchs(name, dtype):
    assert _differences(name, dtype) == []


def _padding(L):
    return L.tensor([[False] * 4 + [True], [False] * 5])


def _causal(L):
    return L.tensor(np.triu(np.ones((5, 5), bool), 1))


_MASKED_CALLS = {
    "need_weights": lambda L, m, x: m(x, x, x, key_padding_mask=_padding(L)),
    "per-head weights": lambda L, m, x: m(x, x, x, key_padding_mask=_padding(L), average_attn_weights=False),
    "attn_mask and padding": lambda L, m, x: m(x, x, x, attn_mask=_causal(L), key_padding_mask=_padding(L)),
    "causal hint": lambda L, m, x: m(x, x, x, attn_mask=_causal(L), is_causal=True, need_weights=False)[0],
    "3-D attn_mask": lambda L, m, x: m(x, x, x, attn_mask=_causal(L).repeat(4, 1, 1), need_weights=False)[0],
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("call", list(_MASKED_CALLS))
def test_multihead_attention_inference_with_masks_is_torchs(call, dtype):
    def run(L, m, x):
        with L.no_grad():
            return _MASKED_CALLS[call](L, m.eval(), x)
    build = lambda L: L.nn.MultiheadAttention(8, 2, batch_first=True)  # noqa: E731
    assert compare(call, build, run, rn(2, 5, 8, seed=2), dtype, False) == []


_LAYER_MASKS = {
    "causal src_mask": lambda L: {"src_mask": L.nn.Transformer.generate_square_subsequent_mask(6), "is_causal": True},
    "float src_mask": lambda L: {"src_mask": L.tensor(np.where(np.eye(6) > 0, -1.5, 0.0).astype(np.float32))},
    "both": lambda L: {"src_mask": L.tensor(np.triu(np.ones((6, 6), bool), 1)),
                       "src_key_padding_mask": L.tensor([[False] * 5 + [True], [False] * 6])},
}


@pytest.mark.parametrize("layer", [{}, {"norm_first": True, "activation": "gelu"}])
@pytest.mark.parametrize("masks", list(_LAYER_MASKS))
def test_the_fused_encoder_layer_reads_its_masks_as_torch_does(masks, layer):
    """A float src_mask of -1.5 on the diagonal leaves those keys out altogether, as torch's fused layer does."""
    def run(L, m, x):
        with L.no_grad():
            return m.eval()(x, **_LAYER_MASKS[masks](L))
    build = lambda L: L.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, **layer)  # noqa: E731
    assert compare(masks, build, run, rn(2, 6, 8, seed=2), "float32", False) == []


def test_an_encoder_layer_with_a_hook_is_not_fused():
    """torch's fused layer refuses modules with hooks: the float mask then takes the ordinary path (its values)."""
    def run(hooked):
        def call(L, m, x):
            if hooked:
                m.linear1.register_forward_hook(lambda *_: None)
            with L.no_grad():
                return m.eval()(x, src_mask=L.tensor(np.where(np.eye(6) > 0, -1.5, 0.0).astype(np.float32)))
        build = lambda L: L.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)  # noqa: E731
        return compare("hooked", build, call, rn(2, 6, 8, seed=2), "float32", False)
    assert run(hooked=False) == [] and run(hooked=True) == []


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_on_nested_sequences_is_torchs(activation, dtype):
    """torch's default (enable_nested_tensor=True) in eval with a right-padded mask: three lengths, two layers."""
    def run(L, m, x):
        with L.no_grad():
            return m.eval()(x, src_key_padding_mask=L.tensor([[False] * 4 + [True] * 3, [False] * 7,
                                                              [False] * 2 + [True] * 5]))
    def build(L):
        layer = L.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, activation=activation)
        return L.nn.TransformerEncoder(layer, 2)
    assert compare("nested", build, run, rn(3, 7, 8, seed=2), dtype, False) == []
