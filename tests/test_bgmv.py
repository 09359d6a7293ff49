"""kernels/bgmv.cu (per-row adapters) against a float64 NumPy reference, and the adapter_names path
of LoRA layers on every device."""
import numpy as np
import pytest

import minilora
from minilora import kernels
from minilora.device import device as get_device

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _reference(Y, X, A, B, ranks, scales, index):
    """The math of bgmv.cu in float64, one row at a time."""
    out = Y.astype(np.float64)
    for m, a in enumerate(index):
        if a >= 0:
            r = ranks[a]
            out[m] += scales[a] * (B[a, :, :r].astype(np.float64) @ (A[a, :r].astype(np.float64) @ X[m]))
    return out


def _problem(rng, M, K, N, ranks, index):
    L, R = len(ranks), max(ranks)
    X = rng.standard_normal((M, K)).astype(np.float32)
    Y = rng.standard_normal((M, N)).astype(np.float32)
    A = np.full((L, R, K), np.nan, np.float32)  # padded ranks are NaN: a kernel reading them shows it
    B = np.full((L, N, R), np.nan, np.float32)
    for a, r in enumerate(ranks):
        A[a, :r] = rng.standard_normal((r, K))
        B[a, :, :r] = rng.standard_normal((N, r))
    scales = rng.uniform(0.5, 2.0, L).astype(np.float32)
    return Y, X, A, B, np.array(ranks, np.int32), scales, np.array(index, np.int32)


@pytest.mark.parametrize("version", kernels.BGMV_VERSIONS)
@pytest.mark.parametrize("M,K,N,ranks,index", [
    (5, 37, 29, [3, 8, 1], [0, -1, 2, 1, 0]),            # ragged shapes, mixed ranks, a row with none
    (3, 300, 270, [16, 4], [1, 1, -1]),                  # K spans two shared-memory chunks, N two blocks
    (4, 9, 7, [2], [-1, -1, -1, -1]),                    # nobody uses an adapter: Y unchanged
    (1, 64, 33, [12, 5, 7, 9], [3]),                     # one decode row
])
def test_bgmv_matches_float64_reference(version, M, K, N, ranks, index):
    rng = np.random.default_rng(M * 1000 + K)
    Y, X, A, B, r, s, idx = _problem(rng, M, K, N, ranks, index)
    expected = _reference(Y, X, A, B, r, s, idx)
    with kernels.checking(poison=True, check_races=True):
        out = kernels.bgmv(Y, X, A, B, r, s, idx, device="emu", version=version)
    assert out is Y
    rel = np.abs(out - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert rel < 1e-5, f"{version}: relative error {rel:.2e}"
    no_adapter = idx < 0
    assert np.array_equal(out[no_adapter], Y[no_adapter])


def test_bgmv_under_the_sanitizer():
    rng = np.random.default_rng(0)
    Y, X, A, B, r, s, idx = _problem(rng, 3, 40, 21, [4, 2], [1, -1, 0])
    expected = _reference(Y, X, A, B, r, s, idx)
    for version in kernels.BGMV_VERSIONS:
        out = Y.copy()
        with kernels.checking(sanitize=True):
            kernels.bgmv(out, X, A, B, r, s, idx, device="emu", version=version)
        assert np.abs(out - expected).max() < 1e-4


def test_bgmv_refuses_bad_arguments():
    rng = np.random.default_rng(1)
    Y, X, A, B, r, s, idx = _problem(rng, 2, 8, 6, [3, 2], [0, 1])
    with pytest.raises(ValueError, match="index must name an adapter"):
        kernels.bgmv(Y, X, A, B, r, s, np.array([0, 2], np.int32), device="emu")
    with pytest.raises(ValueError, match="every rank must be in"):
        kernels.bgmv(Y, X, A, B, np.array([3, 4], np.int32), s, idx, device="emu")
    with pytest.raises(TypeError, match="index must be a C-contiguous int32"):
        kernels.bgmv(Y, X, A, B, r, s, idx.astype(np.int64), device="emu")
    with pytest.raises(ValueError, match="B must have shape"):
        kernels.bgmv(Y, X, A, B[:, :5], r, s, idx, device="emu")
    with pytest.raises(ValueError, match="does not run kernels"):
        kernels.bgmv(Y, X, A, B, r, s, idx, device="cpu")


# ---------------------------------------------------------------------------------------------------
# ops.bgmv: the differentiable op, and the adapter_names path of LoRA layers that uses it
# ---------------------------------------------------------------------------------------------------
def test_bgmv_op_gradients_float64():
    from minilora.testing import grad_check
    rng = np.random.default_rng(2)
    M, K, N, ranks = 4, 5, 3, [2, 3]
    A = rng.standard_normal((2, 3, 5))
    B = rng.standard_normal((2, 3, 3))
    A[0, 2:], B[0, :, 2:] = 0, 0  # zero padding above adapter 0's rank
    t = lambda a: minilora.tensor(a, dtype=minilora.float64, requires_grad=True)
    base, x, A, B = t(rng.standard_normal((M, N))), t(rng.standard_normal((M, K))), t(A), t(B)
    grad_check(lambda b, xx, aa, bb: minilora.ops.bgmv(b, xx, aa, bb, ranks, [0.5, 2.0], [1, -1, 0, 1]),
               base, x, A, B, name="bgmv")


def _two_adapter_model(dtype, device):
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn.llama import LlamaConfig, LlamaForCausalLM
    minilora.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config, dtype=dtype)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=False), adapter_name="a")
    model.add_adapter("b", LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "o_proj"],
                                      init_lora_weights=False))
    return model.to(device).eval()


@pytest.mark.parametrize("dev", ["cpu", "emu"])
def test_adapter_names_equal_each_adapter_alone(dev):
    """Per-sample adapters (through kernels/bgmv.cu on emu) give each sample its own adapter's logits."""
    model = _two_adapter_model("float32", dev)
    ids = np.random.default_rng(0).integers(0, 40, (4, 6))
    names = ["a", "__base__", "b", "a"]
    with minilora.no_grad():
        with minilora.profile() as prof:
            mixed = model(ids, adapter_names=names).logits.numpy()
        assert prof.calls("Bgmv") > 0
        for i, name in enumerate(names):
            if name == "__base__":
                with model.disable_adapter():
                    alone = model(ids[i:i + 1]).logits.numpy()
            else:
                model.set_adapter(name)
                alone = model(ids[i:i + 1]).logits.numpy()
            np.testing.assert_allclose(mixed[i:i + 1], alone, rtol=2e-4, atol=2e-5, err_msg=f"sample {i} ({name})")
