"""A bfloat16 Llama (and LoRA on it) gives transformers' bfloat16 numbers bit for bit, not just close ones.

Both sides load the same bfloat16 checkpoint with ``from_pretrained(dtype=bfloat16)`` and run the same ids.
Measured step by step (hooks on every module; the tiny config of tests/test_bf16_llama.py, and a wider one:
hidden 512, MLP 1376, 8 heads, 200 tokens):

* embeddings, RMSNorm, the rotation, sdpa (torch's CPU flash kernel, ``ops/attention16.py``), SiLU * up,
  the residual adds were torch's bits already;
* RoPE's tables came from float64 angles, rounded once; transformers' from float32 angles (off by up to
  position x 2^-24 radians) and a float32 inv_freq: 2394 of 262144 bfloat16 entries over 4096 positions
  differed, from position 43 on (tests/test_bf16_llama.py). 16-bit and float32 models now take
  transformers' recipe (float32's tables had been up to 2.8e-4 off at position 4000);
* "eager" attention was computed by sdpa's kernel: in 16 bits transformers' eager steps round elsewhere
  (q k^T rounded, then the scaling, the weights before the product with v): 28% of the first layer's
  attention outputs and 78% of the logits were a step or more off. It now runs transformers' ops;
* bfloat16 products (every Linear, forward and backward, eager attention's, PEFT's bfloat16 adapters')
  summed float32 copies in OpenBLAS's order; torch's oneDNN adds vdpbf16ps pairs in blocks of k
  (``minilora/bf16_products.py``). Where a sum cancels the order shows: 1 of 6144 gate_proj gradient
  elements of the tiny model, 9 of 4096 logits once down_proj sums 1376 products, 46% of the wider
  model's logits. Now the same order.

tests/test_bf16_llama.py's whole-model comparison reported two thirds of the logits off for another reason:
its transformers model is cast with ``.to(torch.bfloat16)``, which casts RoPE's ``inv_freq`` buffer too,
while its minilora model was built in bfloat16 (float32 frequencies). Loaded alike, they agree.

Not bit for bit (measured, left): PEFT's default float32 adapters' gradients are float32 products, MKL's
order in torch and OpenBLAS's here (most elements differ in their last float32 bit; the forward and the
bfloat16 gradients are equal); sdpa decoding one token over a KV cache (torch's flash kernel with one
query: 36 of 30720 outputs at 100 keys; the whole step's logits then differ, 2 of 12 steps of a
hidden-1536 model, its greedy tokens equal; eager decoding is bit for bit); sdpa over long prompts
(7 of 153600 outputs at 600 keys); RoPE's tables where MKL's cos and sin are not correctly rounded
(0-4 of 262144 entries over 4096 positions); float16 (ATen's own products, not oneDNN's: round 22's
minilora/half_products.py, tests/test_half_bits_r22.py).
"""
import numpy as np
import pytest

import minilora as ml
from minilora import lora as ml_lora
from minilora.models import LlamaConfig, LlamaForCausalLM

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tiny_config(**overrides):
    return LlamaConfig(**{**dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
                          **overrides})


def save_checkpoint(folder, config):
    """A bfloat16 transformers checkpoint with weights large enough that attention is far from uniform."""
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig.from_dict(config.to_dict()))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.3 * torch.randn_like(p))
    model.to(torch.bfloat16).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("bf16_llama"), tiny_config())


def ids_and_labels():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 64, size=(2, 12))
    labels = ids.copy()
    labels[0, :2] = -100
    return ids, labels


def bits(t):
    """The bit patterns of a torch or minilora tensor (bfloat16 or float32), for exact comparison."""
    if isinstance(t, ml.Tensor):
        array = t.detach().numpy()
    else:
        t = t.detach()
        array = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
    return array.view(np.int16 if array.dtype.itemsize == 2 else np.int32)


def forward_backward(model, ids, labels, is_torch):
    wrap = torch.as_tensor if is_torch else (lambda a: a)
    out = model(wrap(ids), labels=wrap(labels))
    out.loss.backward()
    return out.logits, out.loss, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def both(checkpoint, attn, lora=None):
    theirs = transformers.LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16, attn_implementation=attn)
    ours = LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16, attn_implementation=attn)
    if lora is not None:
        import peft
        config = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
                      init_lora_weights=False)
        torch.manual_seed(0)
        theirs = peft.get_peft_model(theirs, peft.LoraConfig(**config), autocast_adapter_dtype=lora == "float32")
        ours = ml_lora.get_peft_model(ours, ml_lora.LoraConfig(**config), autocast_adapter_dtype=lora == "float32")
        ours.load_state_dict({k: ml.dtypes.from_torch(v) for k, v in theirs.state_dict().items()})
    return theirs, ours


def assert_same_bits(ours, theirs, what):
    np.testing.assert_array_equal(bits(ours), bits(theirs), err_msg=what)


def test_eager_bf16_llama_is_transformers_bit_for_bit(checkpoint):
    """logits, loss and every parameter's gradient of one training step, and the greedy tokens."""
    theirs, ours = both(checkpoint, "eager")
    ids, labels = ids_and_labels()
    (logits, loss, grads), (their_logits, their_loss, their_grads) = (
        forward_backward(ours, ids, labels, False), forward_backward(theirs, ids, labels, True))
    assert_same_bits(logits, their_logits, "logits")
    assert loss.item() == their_loss.item()
    assert grads.keys() == their_grads.keys()
    for name, grad in grads.items():
        assert_same_bits(grad, their_grads[name], name)


def test_eager_bf16_greedy_tokens_are_transformers(checkpoint):
    theirs, ours = both(checkpoint, "eager")
    prompt = np.array([[5, 17, 42, 8, 33]])
    with torch.no_grad():
        expected = theirs.generate(torch.as_tensor(prompt), max_new_tokens=6, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
        their_logits = theirs(expected).logits
    tokens = ours.eval().generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert tokens.numpy().tolist() == expected.numpy().tolist()
    with ml.no_grad():
        assert_same_bits(ours(tokens.numpy()).logits, their_logits, "logits over the generated sequence")


def test_sdpa_bf16_llama_with_a_wide_mlp_is_transformers_bit_for_bit(tmp_path):
    """down_proj sums 1376 products: oneDNN adds them in two blocks (1024 + 352), each in vdpbf16ps pairs; the
    float32 sums in OpenBLAS's order rounded elsewhere: 9 of the 4096 logits were one step or more apart."""
    config = tiny_config(intermediate_size=1376, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    theirs, ours = both(save_checkpoint(tmp_path, config), "sdpa")
    ids, labels = ids_and_labels()
    (logits, loss, grads), (their_logits, their_loss, their_grads) = (
        forward_backward(ours, ids, labels, False), forward_backward(theirs, ids, labels, True))
    assert_same_bits(logits, their_logits, "logits")
    assert loss.item() == their_loss.item()
    for name, grad in grads.items():
        assert_same_bits(grad, their_grads[name], name)


def cancelling(m, k, n, seed=0):
    """bfloat16 x [m, k] and W [n, k] whose products cancel (the second half of k undoes the first, nearly), as
    in a weight gradient: the float32 order of the sums shows in the rounded result."""
    g = torch.Generator().manual_seed(seed)
    half = k // 2
    u, v = torch.randn(m, k - half, generator=g), torch.randn(n, k - half, generator=g)
    x = torch.cat([u, u[:, :half]], 1)
    w = torch.cat([v, -1.01 * v[:, :half] + 0.01 * torch.randn(n, half, generator=g)], 1)
    return x.bfloat16(), w.bfloat16()


def cpu_has_bf16_pairs():
    """AVX512-BF16 without AMX (minilora.bf16_products.PAIRS, read here from NumPy's feature table)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return bool(features.get("AVX512BF16")) and not features.get("AVX512_SPR")


@pytest.mark.skipif(not cpu_has_bf16_pairs(), reason="oneDNN's order is modelled for AVX512-BF16 CPUs")
@pytest.mark.parametrize("m, k, n", [(24, 64, 96), (64, 700, 64), (40, 1376, 48), (3, 2500, 33), (1, 900, 64),
                                     (1, 2048, 64)])
def test_bf16_products_are_onednn_bits(m, k, n):
    """F.linear (with a bias), its input and weight gradients, torch.matmul and bmm on bfloat16 operands: each
    sum in oneDNN's order (vdpbf16ps pairs; k in blocks of 512 up to 1024, of 1024 beyond, of 512 for one
    row); a batch of rows times a matrix is one product (torch's matmul folds it), a decoded token's too."""
    x, w = cancelling(m, k, n)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(1)).bfloat16()
    x.requires_grad_(), w.requires_grad_()
    out = torch.nn.functional.linear(x, w, bias)
    dy = cancelling(m, n, k, seed=2)[0][:, :n]
    out.backward(dy)
    ours_x, ours_w = ml.tensor(bits(x).view(ml.bfloat16), requires_grad=True), ml.tensor(bits(w).view(ml.bfloat16),
                                                                                      requires_grad=True)
    ours = ml.nn.functional.linear(ours_x, ours_w, ml.tensor(bits(bias).view(ml.bfloat16)))
    ours.backward(ml.tensor(bits(dy).view(ml.bfloat16)))
    assert_same_bits(ours, out, "linear")
    assert_same_bits(ours_x.grad, x.grad, "the input's gradient")
    assert_same_bits(ours_w.grad, w.grad, "the weight's gradient")
    with torch.no_grad():
        assert_same_bits(ml.matmul(ours_x.detach(), ours_w.detach().T), x @ w.T, "matmul")
        assert_same_bits(ml.bmm(ours_x.detach()[None], ours_w.detach().T[None]), torch.bmm(x[None], w.T[None]), "bmm")
    # [m, 1, k] @ [k, n]: m rows of one product (torch's matmul folds them), forward and backward
    rows, ours_rows = x.detach().reshape(m, 1, k).requires_grad_(), ours_x.detach().reshape(m, 1, k).requires_grad_()
    wt, ours_wt = w.detach().T.requires_grad_(), ours_w.detach().T.requires_grad_()
    (rows @ wt).backward(dy.reshape(m, 1, n))
    ours = ml.matmul(ours_rows, ours_wt)
    ours.backward(ml.tensor(bits(dy).view(ml.bfloat16)).reshape(m, 1, n))
    assert_same_bits(ours, rows @ wt, "matmul of a batch")
    assert_same_bits(ours_rows.grad, rows.grad, "matmul of a batch: the batch's gradient")
    assert_same_bits(ours_wt.grad, wt.grad, "matmul of a batch: the matrix's gradient")


def test_peft_bf16_adapters_on_an_eager_bf16_llama_bit_for_bit(checkpoint):
    """PEFT with ``autocast_adapter_dtype=False`` keeps bfloat16 adapters: its logits and the adapters'
    gradients equal minilora's bit for bit."""
    pytest.importorskip("peft")
    theirs, ours = both(checkpoint, "eager", lora="bfloat16")
    ids, labels = ids_and_labels()
    (logits, loss, grads), (their_logits, their_loss, their_grads) = (
        forward_backward(ours, ids, labels, False), forward_backward(theirs, ids, labels, True))
    assert_same_bits(logits, their_logits, "logits")
    assert loss.item() == their_loss.item()
    assert len(grads) == len(their_grads) == 16 and grads.keys() == their_grads.keys()
    for name, grad in grads.items():
        assert str(grad.dtype) == "bfloat16", name
        assert_same_bits(grad, their_grads[name], name)


def test_peft_float32_adapters_on_an_eager_bf16_llama_give_its_logits(checkpoint):
    """PEFT's default float32 adapters: the forward (bfloat16 base, float32 branch, one rounding of the sum)
    is transformers' bits; the adapters' float32 gradients are not (see the module's docstring)."""
    pytest.importorskip("peft")
    theirs, ours = both(checkpoint, "eager", lora="float32")
    ids, _ = ids_and_labels()
    with torch.no_grad():
        their_logits = theirs(torch.as_tensor(ids)).logits
    with ml.no_grad():
        assert_same_bits(ours(ids).logits, their_logits, "logits")


def test_autocast_bf16_on_a_float32_llama_with_eager_attention_gives_transformers_logits(tmp_path):
    """``torch.autocast("cpu", dtype=torch.bfloat16)`` on a float32 Llama: RoPE promotes q and k to float32,
    and eager attention's products autocast to bfloat16 (transformers' ops), where the fused kernel ran.
    Logits and loss are torch's bits (sdpa's were already); so are the float32 gradients since round 22
    (tests/test_half_bits_r22.py: the embedding's 186 of 4096 were the RMSNorm input's gradient parts added in
    another order, not the embedding's own backward)."""
    save_checkpoint(tmp_path, tiny_config())
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager")
    ours = LlamaForCausalLM.from_pretrained(tmp_path, dtype="float32", attn_implementation="eager")
    ids, labels = ids_and_labels()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = theirs(torch.as_tensor(ids), labels=torch.as_tensor(labels))
    with ml.no_grad(), ml.autocast("cpu", dtype=ml.bfloat16):
        out = ours(ids, labels=labels)
    assert str(out.logits.dtype) == "bfloat16"
    assert_same_bits(out.logits, expected.logits, "logits")
    assert out.loss.item() == expected.loss.item()


@pytest.mark.parametrize("m, k, n", [(9, 1025, 70), (4, 7, 32), (13, 600, 45)])
def test_bf16_products_compiled_and_numpy_agree(m, k, n):
    """The compiled loop (register tiles of 4 x 32 and the edges around them) and the NumPy loop a learner
    reads add the same products in the same order."""
    from minilora import bf16_products, float32_math
    rng = np.random.default_rng(k)
    a = rng.standard_normal((2, m, k)).astype(ml.bfloat16)
    b = rng.standard_normal((k, n)).astype(ml.bfloat16)
    compiled = bf16_products.matmul(a, b)
    with float32_math.numpy_port():
        port = bf16_products.matmul(a, b)
    assert compiled.dtype == port.dtype == np.float32 and compiled.shape == (2, m, n)
    np.testing.assert_array_equal(compiled.view(np.int32), port.view(np.int32))
    assert bf16_products.k_blocks(k)[-1][1] == k


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bf16_llama_far_positions_are_transformers_bits(tmp_path, attn):
    """Tokens at positions 3000-3011 (a long context's end, cheaply: position_ids given): RoPE's tables there
    are transformers' float32 ones rounded, so the logits stay bit for bit (from float64 angles they were not)."""
    config = tiny_config(max_position_embeddings=4096, rope_theta=500000.0, hidden_size=128, num_attention_heads=2,
                         num_key_value_heads=1)
    theirs, ours = both(save_checkpoint(tmp_path, config), attn)
    ids, _ = ids_and_labels()
    positions = np.arange(3000, 3012)[None].repeat(2, axis=0)
    with torch.no_grad():
        expected = theirs(torch.as_tensor(ids), position_ids=torch.as_tensor(positions)).logits
    with ml.no_grad():
        assert_same_bits(ours(ids, position_ids=positions).logits, expected, "logits")


def test_float32_rope_tables_are_transformers_float32_tables():
    """A float32 model's tables are transformers' too (float32 angles): they differ only where MKL's float32
    cos and sin are not correctly rounded, by one float32 ulp. From float64 angles they differed by up to
    2.4e-4 at position 4000 (the float32 angle's own error), in over half the entries."""
    from transformers.models.llama import modeling_llama
    config = tiny_config(hidden_size=512, num_attention_heads=8, max_position_embeddings=4096, rope_theta=500000.0)
    positions = np.arange(4096)[None]
    theirs = modeling_llama.LlamaRotaryEmbedding(transformers.LlamaConfig.from_dict(config.to_dict()))
    with torch.no_grad():
        their_tables = theirs(torch.zeros(1), torch.as_tensor(positions))
    for ours, reference in zip(ml.nn.llama.LlamaRotaryEmbedding(config)(positions, ml.float32), their_tables):
        ours, reference = np.asarray(ours), reference.numpy()
        assert ours.dtype == np.float32
        assert np.abs(ours - reference).max() <= 2.0 ** -24
        assert (ours != reference).mean() < 0.06
