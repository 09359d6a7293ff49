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
    """torch's fused layer refuses modules with hooks: the float mask then takes the ordinary path (its values;
    there the projections of the batch-first input fold into one mm in no_grad too: the weight requires grad)."""
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


# ---- F.linear / matmul of a batch that is not contiguous ---------------------------------------------------------
@pytest.mark.parametrize("shape, weight_grad, dtype", [((3, 5, 4), False, "float32"), ((3, 5, 4), True, "bfloat16"),
                                                      ((3, 5, 4), False, "bfloat16"),
                                                      ((2, 3, 4, 33), True, "bfloat16")])
def test_linear_of_a_transposed_batch_is_torchs(shape, weight_grad, dtype):
    """torch's F.linear fuses the bias (addmm) only into a contiguous batch; a transposed one (a batch-first RNN's
    input) is matmul, then the bias added: a 16-bit product rounded before it. Its matmul folds the batch into one
    mm where the weight requires grad, else runs a bmm with the weight expanded (a frozen weight: other sums)."""
    g = torch.Generator().manual_seed(0)
    x, w, b, grad = (torch.randn(*s, generator=g).to(getattr(torch, dtype))
                     for s in (shape, (7, shape[-1]), (7,), shape[:-3] + (shape[-2], shape[-3], 7)))
    theirs = [x.requires_grad_(), w.requires_grad_(weight_grad), b.requires_grad_(weight_grad)]
    mine = [ml.tensor(_as_numpy(t.detach())).requires_grad_(t.requires_grad) for t in theirs]
    out, my_out = (F.linear(a.transpose(-3, -2), c, d) for F, (a, c, d) in
                   ((torch.nn.functional, theirs), (ml.nn.functional, mine)))
    out.backward(grad)
    my_out.backward(ml.tensor(_as_numpy(grad)))
    for t, m in [(out, my_out)] + [(t.grad, m.grad) for t, m in zip(theirs, mine) if t.requires_grad]:
        np.testing.assert_array_equal(np.asarray(m.detach().float()), t.detach().float().numpy())


@pytest.mark.parametrize("name", ["RNN batch_first", "RNN bidirectional 2 layers", "RNN unbatched", "RNN initial state",
                                  "GRU batch_first", "GRU bidirectional 2 layers", "GRU unbatched", "GRU initial state"])
def test_bfloat16_rnn_and_gru_on_transposed_inputs_are_torchs(name):
    """(batch_first, unbatched and the layers after the first see a non-contiguous input: F.linear's unfused bias.)"""
    assert _differences(name, "bfloat16") == []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_multihead_attention_kdim_vdim_bias_gradient_is_torchs(dtype):
    """(Each projection of a transposed batch-first input: matmul folded into one mm, its backward too.)"""
    assert _differences("MHA kdim vdim", dtype) == []



@pytest.mark.parametrize("name", ["GRU", "GRU positional", "GRU batch_first", "GRU bidirectional 2 layers", "GRU no bias",
                                  "GRU dropout eval", "GRU initial state", "GRUCell state"])
def test_float64_gru_is_torchs(name):
    """torch's GRU cell squashes its reset and update gates in place on chunks of the hidden projection: strided
    rows, its sigmoid's scalar loop (C's exp) where a contiguous sum ran SLEEF's vectors."""
    assert _differences(name, "float64") == []


# ---- float64 BatchNorm1d of [N, C]: torch's channels-last kernel ---------------------------------------------------
@pytest.mark.usefixtures("two_threads")  # (the rows are cut into one chunk a thread)
@pytest.mark.parametrize("name", ["BatchNorm1d train", "BatchNorm1d eval", "BatchNorm1d momentum None"])
def test_float64_batchnorm1d_is_torchs(name):
    assert _differences(name, "float64") == []


@pytest.mark.usefixtures("two_threads")  # (the rows are cut into one chunk a thread)
@pytest.mark.parametrize("n, c", [(2, 3), (5, 8), (17, 13), (64, 6)])
def test_float64_batchnorm1d_shapes_are_torchs(n, c):
    """Its statistics as the channels-last kernel adds them in double (a chunk of rows a thread, squares by fused
    multiply-adds), the output fma(x, alpha, beta), the backward its own sums: outputs, running stats, gradients."""
    g = torch.Generator().manual_seed(n * c)
    x, grad = torch.randn(n, c, generator=g, dtype=torch.float64) * 3 + 1, torch.randn(n, c, generator=g, dtype=torch.float64)
    theirs = torch.nn.BatchNorm1d(c).double()
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5, generator=g)
        theirs.bias.uniform_(-1, 1, generator=g)
    mine = ml.nn.BatchNorm1d(c).to(ml.float64)
    mine.load_state_dict({k: ml.tensor(v.numpy().copy()) for k, v in theirs.state_dict().items()})
    x_theirs, x_mine = x.clone().requires_grad_(), ml.tensor(x.numpy().copy()).requires_grad_()
    out, my_out = theirs(x_theirs), mine(x_mine)
    out.backward(grad)
    my_out.backward(ml.tensor(grad.numpy()))
    for t, m in [(out, my_out), (x_theirs.grad, x_mine.grad), (theirs.running_mean, mine.running_mean),
                 (theirs.running_var, mine.running_var), (theirs.weight.grad, mine.weight.grad),
                 (theirs.bias.grad, mine.bias.grad)]:
        np.testing.assert_array_equal(m.detach().numpy(), t.detach().numpy())


def test_bfloat16_rnn_cell_weight_gradient_of_a_zero_state_is_plus_zero():
    """A zero initial state's weight gradient sums -0 products: +0 in oneDNN, whose accumulators start from +0."""
    assert _differences("RNNCell", "bfloat16") == []


# ---- float32 convolutions where torch runs oneDNN: its forward kernels' orders ------------------------------------
_ONEDNN_CONVOLUTIONS = {  # kernel (as ONEDNN_VERBOSE names it): (input, weight, stride, padding, dilation, groups)
    "jit:avx512_core": [((2, 4, 9, 11), (6, 4, 3, 3), 1, 0, 1, 1), ((2, 4, 9, 11), (6, 4, 3, 3), 2, 1, 2, 1),
                        ((4, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1), ((2, 3, 16, 16), (8, 3, 4, 4), 4, 0, 1, 1),
                        ((2, 16, 8, 8), (8, 16, 3, 3), 1, 1, 1, 1)],
    "jit_1x1": [((2, 4, 9, 11), (6, 4, 1, 1), 1, 0, 1, 1), ((2, 64, 6, 6), (32, 64, 1, 1), 1, 0, 1, 1)],
    "jit_dw": [((2, 4, 9, 11), (4, 1, 3, 3), 1, 1, 1, 4)],
    "jit:avx2": [((2, 4, 10, 10), (16, 2, 3, 3), 1, 1, 1, 2)],
    "gemm:jit": [((2, 6, 10, 10), (6, 3, 3, 3), 1, 1, 1, 2), ((2, 12, 14, 14), (6, 6, 5, 5), 2, 1, 1, 2),
                 ((2, 4, 9, 11), (8, 1, 3, 3), 2, 1, 2, 4), ((2, 4, 9, 11), (8, 2, 3, 3), 1, 1, 1, 2)],
}


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("kernel", list(_ONEDNN_CONVOLUTIONS))
def test_float32_convolution_forward_is_onednns(kernel):
    """Each output one fused multiply-add after another in the kernel's order (tap row, column, channel; or im2col's
    channel, row, column), from 0 with the bias after or from the bias: torch's bits, where the einsum's differed."""
    for x_shape, w_shape, stride, padding, dilation, groups in _ONEDNN_CONVOLUTIONS[kernel]:
        g = torch.Generator().manual_seed(sum(x_shape) + sum(w_shape))
        x, w = torch.randn(*x_shape, generator=g), torch.randn(*w_shape, generator=g)
        b = torch.randn(w_shape[0], generator=g)
        theirs = torch.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups)
        mine = ml.nn.functional.conv2d(*(ml.tensor(t.numpy()) for t in (x, w, b)), stride, padding, dilation, groups)
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
