"""nn layers as tutorials build models from them, against torch 2.13 bit for bit with MKL as the BLAS, round 29
(tests/users_nn_sweep.py's cases: outputs, the gradients of every floating input and parameter, refusals).

What differed at the round's start: nn.MultiheadAttention's gradients (torch projects self-attention's query, key and
value in one product on the packed weight, keys and values of cross-attention in another, and works in [N H, T, D]
batches: minilora projected each with its own slice and summed three input gradients); its inference kernel (eval,
no gradient, batch first: ``_native_multi_head_attention``) scales the query by the float ``1 / sqrt(d)``; a bfloat16
nn.Transformer with a float32 causal mask was refused; F.cross_entropy / F.nll_loss with class indices took a class
``weight`` that requires grad (torch refuses it by its kernel's name; minilora left its gradient out silently);
float64 convolutions (and float32 ones on one small image), which torch computes image by image with im2col and
MKL's products (ops/conv_mm.py), not as one einsum; bfloat16 Adam/AdamW(fused=True), which torch's fused kernel
computes in float32 (optim/fused_adam.py). What is left: tests/users_nn_sweep.py's docstring.
"""
import sys

import pytest

import minilora as ml
from minilora import blas

torch = pytest.importorskip("torch")
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from users_nn_sweep import CASES, OPTIMIZERS, compare, optimizer_lines, rn  # noqa: E402  (the sweep's cases)

pytestmark = pytest.mark.skipif(blas.library() != "mkl", reason="MKL (minilora[mkl]) is not minilora's BLAS here")
_BY_NAME = {case[0]: case for case in CASES}


def _differences(name, dtype):
    name, build, call, make, _, grad = _BY_NAME[name]
    return compare(name, build, call, make, dtype, grad)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("name", ["MHA self", "MHA batch_first", "MHA key_padding_mask", "MHA causal attn_mask",
                                  "MHA cross", "MHA bias_kv zero_attn", "MHA per-head weights"])
def test_multihead_attention_training_gradients_are_torchs(name, dtype):
    assert _differences(name, dtype) == []


@pytest.mark.parametrize("name, dtype", [("MHA need_weights=False", "float32"), ("MHA need_weights=False", "float64"),
                                         ("EncoderLayer", "float32"), ("Encoder 2 layers norm", "float32"),
                                         ("DecoderLayer norm_first causal", "float32"), ("Transformer", "float64")])
@pytest.mark.usefixtures("two_threads")  # (LayerNorm's weight gradients follow the thread count: both on 2)
def test_transformer_layers_in_training_are_torchs(name, dtype):
    """need_weights=False: SDPA on torch's [N, H, T, D] views of the packed projection (flash forward and backward)."""
    assert _differences(name, dtype) == []


def _native_case(embed_dim, heads):
    """Inference through torch's fast path (eval, no_grad, batch first, self-attention, no mask)."""
    def call(L, m, x):
        with L.no_grad():
            return m.eval()(x, x, x, need_weights=False)[0], m(x, x, x)[1]
    return None, lambda L: L.nn.MultiheadAttention(embed_dim, heads, batch_first=True), call, \
        rn(2, 5, embed_dim, seed=2), None, False


@pytest.mark.parametrize("embed_dim, heads, dtype", [(12, 2, "float32"), (12, 2, "float64"), (12, 4, "float64")])
def test_multihead_attention_inference_kernel_is_torchs(embed_dim, heads, dtype):
    _, build, call, make, _, grad = _native_case(embed_dim, heads)
    assert compare("native", build, call, make, dtype, grad) == []


def test_a_bfloat16_transformer_with_a_float32_causal_mask_is_torchs():
    """(Its outputs: the LayerNorm weights' 16-bit gradients follow torch's thread count, the sweep's 2 threads.)"""
    assert [line for line in _differences("Transformer", "bfloat16") if not line.startswith("grad ")] == []


@pytest.mark.parametrize("shape, kernel", [((5,), "nll_loss_forward"), ((3, 5), "nll_loss_forward"),
                                           ((2, 5, 3), "nll_loss2d_forward")])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss", "cross_entropy label_smoothing"])
def test_a_class_weight_that_requires_grad_is_refused(shape, kernel, loss):
    x = ml.randn(*shape)
    target = ml.zeros(shape[:1] + shape[2:] if len(shape) > 1 else (), dtype=ml.int64)
    weight = ml.rand(5, requires_grad=True)
    fn = getattr(ml.nn.functional, loss.split()[0])
    kwargs = {"label_smoothing": 0.1} if "smoothing" in loss else {}
    with pytest.raises(RuntimeError, match=f"'{kernel}' is not differentiable with respect to argument 'weight'"):
        fn(x, target, weight, **kwargs)
    with ml.no_grad():  # (torch's check is its autograd kernel's: not in no_grad)
        fn(x, target, weight, **kwargs)
    fn(x, target, weight.detach(), **kwargs)
    fn(x, ml.randn(*shape).softmax(0 if len(shape) == 1 else 1), weight) if loss == "cross_entropy" else None


@pytest.mark.parametrize("name", ["Conv2d", "Conv2d stride2 pad1", "Conv2d tuple args", "Conv2d groups", "Conv2d depthwise",
                                  "Conv2d same dil", "Conv2d circular", "Conv2d patchify", "Conv1d", "Conv1d groups same",
                                  "F.conv2d kw", "Conv2d+BN+ReLU+pool", "ConvTranspose2d", "ConvTranspose2d s2 p1 op1",
                                  "ConvTranspose2d groups dil", "ConvTranspose1d", "F.conv_transpose2d"])
def test_float64_convolutions_are_torchs_slow_kernel(name):
    """torch's float64 convolutions: im2col / col2im and MKL's products, image by image (ops/conv_mm.py)."""
    assert _differences(name, "float64") == []


@pytest.mark.parametrize("name", ["Conv2d unbatched", "Conv2d one image", "Conv1d one sequence",
                                  "ConvTranspose2d one image"])
def test_float32_convolutions_outside_onednn_are_torchs(name):
    """A batch of one small image: torch's slow kernel in float32 too (oneDNN elsewhere: see the sweep)."""
    assert _differences(name, "float32") == []


@pytest.mark.parametrize("optimizer", ["Adam fused", "AdamW fused"])
def test_bfloat16_fused_adam_is_torchs_fused_kernel(optimizer):
    """torch's fused CPU kernel computes a 16-bit parameter's step in float32 (optim/fused_adam.py)."""
    make = dict(OPTIMIZERS)[optimizer]
    assert optimizer_lines(make, None, "bfloat16") == []
