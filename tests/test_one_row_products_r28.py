"""One-row products as torch computes them: a decoded token's linear layers.

Decoding with a KV cache runs every linear layer on one row (batch 1). ATen hands a one-row ``mm`` to MKL's gemm,
which sums it as its matrix-vector product: ``F.linear(x[1, K], w)`` has ``torch.mv(w, x[0])``'s bits, whose order
``minilora/mkl_dot.py`` models on Intel AVX-512 CPUs. minilora computed these rows with a BLAS gemm and differed from
torch in 65-95% of the outputs (float32 and float64, any BLAS); a PEFT LoRA layer's one row differed as much.
The reference runs torch on one thread (conftest), and minilora here too: MKL splits a large float32 gemv between
threads at a point ``mkl_dot`` does not claim.
"""
import numpy as np
import pytest

import minilora as ml
from minilora import mkl_dot

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(not mkl_dot.APPLIES, reason="MKL's gemv order is modelled on Intel AVX-512 CPUs only")

SHAPES = [(4096, 1024), (640, 384), (1000, 13), (33, 517), (256, 256), (256, 8), (8, 256), (1, 5)]


@pytest.fixture(autouse=True)
def one_thread():
    before = ml.parallel.num_threads()
    ml.parallel.set_num_threads(1)
    yield
    ml.parallel.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,N", SHAPES)
def test_linear_of_one_row_is_torchs(K, N, dtype):
    rng = np.random.default_rng(K + N)
    x, w, b = (rng.standard_normal(shape).astype(dtype) for shape in ((1, K), (N, K), (N,)))
    tx, tw, tb = map(torch.from_numpy, (x, w, b))
    assert np.array_equal(ml.nn.functional.linear(ml.tensor(x), ml.tensor(w)).numpy(), F.linear(tx, tw).numpy())
    assert np.array_equal(ml.nn.functional.linear(ml.tensor(x), ml.tensor(w), ml.tensor(b)).numpy(),
                          F.linear(tx, tw, tb).numpy())
    assert np.array_equal(ml.matmul(ml.tensor(x), ml.tensor(w).T).numpy(), torch.matmul(tx, tw.T).numpy())
    x3 = x.reshape(1, 1, K)  # (a decoding step: batch 1, one new token)
    assert np.array_equal(ml.nn.functional.linear(ml.tensor(x3), ml.tensor(w)).numpy(),
                          F.linear(torch.from_numpy(x3), tw).numpy())


def test_nn_linear_module_of_one_token_is_torchs():
    torch.manual_seed(0)
    theirs = torch.nn.Linear(320, 200)
    ours = ml.nn.Linear(320, 200)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((1, 1, 320)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    assert np.array_equal(ours(ml.tensor(x)).detach().numpy(), expected)


@pytest.mark.parametrize("alpha,bias", [(16, False), (12, False), (16, True), (12, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lora_layer_of_one_token_is_pefts(alpha, bias, dtype):
    """PEFT's ``base_layer(x) + lora_B(lora_A(x)) * s``: three one-row products, each step rounded (any s)."""
    peft = pytest.importorskip("peft")
    rng = np.random.default_rng(alpha)
    K, N, r = 640, 384, 8

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(K, N, bias=bias)

    tnet = Net().to(torch.float64 if dtype == np.float64 else torch.float32)
    tnet = peft.get_peft_model(tnet, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"],
                                                     init_lora_weights=False))
    theirs = tnet.base_model.model.proj
    mnet = ml.nn.Module()
    mnet.proj = ml.nn.Linear(K, N, bias=bias, dtype=ml.float64 if dtype == np.float64 else ml.float32)
    mnet = ml.lora.get_peft_model(mnet, ml.lora.LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"]))
    mnet.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    ours = mnet.base_model.model.proj
    x = rng.standard_normal((1, 1, K)).astype(dtype)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    with ml.no_grad():
        assert np.array_equal(ours(ml.tensor(x)).numpy(), expected)
