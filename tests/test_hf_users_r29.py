"""Round 29: transformers' and PEFT's calls beside transformers / peft themselves -- the leftovers of round 28 and a
sweep of what PEFT users write (LoraConfig's options, several adapters, merging, loading, saving; most agreed
already). What differed:

* ``LlamaAttention`` (and the decoder layer) called with ``attention_mask=None`` under "eager": transformers adds no
  mask at all there (every query sees every key; its model always builds one), minilora attended causally; and a
  chunk after a cache with no mask is torch's top-left ``is_causal`` under "sdpa", as there;
* SVD factors: minilora took NumPy's LAPACK, whose singular vectors' signs differ from torch's (MKL's) for some
  shapes, so PiSSA's init ("pissa", "pissa_niter_K") and ``add_weighted_adapter``'s SVD combinations held other
  factors than PEFT's (the same product, but other files, and a ``svd_clamp`` that clipped other entries); QR
  too (OLoRA's float16 factors a step off PEFT's here and there): both now MKL's LAPACK, as torch's;
* PiSSA / OLoRA on a float64 base: PEFT's TypeError (it factors in float32), which minilora did not give;
  ``init_lora_weights="loftq"`` without a ``loftq_config``: PEFT's ValueError in its words (minilora's own before);
* a float16 DoRA unmerge a weight or two a step off PEFT's: the row norm's float32 sum in another order; an
  Embedding's DoRA magnitudes (float32) an ulp off: its norm's sum laid out otherwise than torch's; a DoRA adapter
  merged after another: PEFT's replay (unmerge the merged ones from the weight and merge them again), which
  rebuilds the weight it then merges into; several ``target_parameters`` adapters active in 16 bits: their
  updates summed in float32 (PEFT: in the weight's dtype), the logits a step off; a mixed batch
  (``adapter_names=``) through a LoRA Embedding: refused on a 16-bit base (a dtype mismatch), scaled in another
  order in float32; through LoRA Linear layers in float16: NumPy's products, not MKL's;
* adding (or loading) an adapter changed the trainability of the others: PEFT 0.21 keeps every parameter's
  ``requires_grad`` as it was (a second trainable adapter, a frozen one, a base weight the user unfroze).

Checked and left alone: transformers' Trainer on SIGTERM dies, as minilora's does; the ``checkpoint-N`` folders it
leaves are whole (12 runs killed at random times, with and without save_total_limit: every folder held all its
files, a half-written one only as a hidden staging folder that the next save removes).

Skipped when torch / transformers / peft are not installed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
from minilora import blas, models  # noqa: E402

from test_hf_offpath_r10 import IDS, TINY  # noqa: E402
from test_hf_users_r28 import quietly  # noqa: E402
from test_peft_fields_r13 import BASE, LIBRARIES, llama, logits  # noqa: E402

needs_mkl = pytest.mark.skipif(blas.library() != "mkl", reason="torch's singular vectors come from MKL's LAPACK")


# ==================================================================================================
# Attention without a mask
# ==================================================================================================
def llama_pair(implementation):
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, attn_implementation=implementation))
    ours = models.LlamaForCausalLM(models.LlamaConfig(**TINY, attn_implementation=implementation))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()}, strict=False)
    return theirs.eval(), ours.eval()


def layer_outputs(lib, model, x, past=None):
    """The first decoder layer's attention and the whole layer on ``x`` with no mask (``past``: a cache holding the
    keys of a prefix first)."""
    positions = np.arange(x.shape[1])[None] + (0 if past is None else past.get_seq_length())
    with lib.no_grad():
        rotary = model.model.rotary_emb(lib.tensor(x), lib.tensor(positions))
        layer = model.model.layers[0]
        attended = layer.self_attn(lib.tensor(x), rotary, None, cache=past)[0]
        whole = layer(lib.tensor(x), attention_mask=None, position_embeddings=rotary)
    return attended.numpy(), (whole[0] if isinstance(whole, tuple) else whole).numpy()


def test_eager_attention_called_without_a_mask_is_transformers():
    """No mask at all: not causal (the first three outputs change with the last two keys). The model's logits are
    causal all the same: its eager mask is built even where nothing is padded."""
    theirs, ours = llama_pair("eager")
    x = np.random.RandomState(0).randn(2, 5, 32).astype(np.float32)
    for got, want in zip(layer_outputs(ml, ours, x), layer_outputs(torch, theirs, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer_outputs(ml, ours, x)[0][:, :3], layer_outputs(ml, ours, x[:, :3])[0], atol=1e-3)
    with torch.no_grad():
        want = theirs(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(ours(ml.tensor(IDS)).logits.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_a_chunk_after_a_cache_without_a_mask_is_transformers(implementation):
    """Three new tokens after two cached ones, straight into the attention: eager sees every key, sdpa is torch's
    top-left is_causal (query i sees keys 0..i), as transformers' kernels read a missing mask."""
    theirs, ours = llama_pair(implementation)
    x = np.random.RandomState(1).randn(1, 5, 32).astype(np.float32)
    got = {}
    for lib, model, cache in ((torch, theirs, transformers.DynamicCache(config=theirs.config)),
                              (ml, ours, models.DynamicCache(config=ours.config))):
        layer_outputs(lib, model, x[:, :2], past=cache)
        got[lib.__name__] = layer_outputs(lib, model, x[:, 2:], past=cache)[0]
    np.testing.assert_allclose(got["minilora"], got["torch"], rtol=1e-5, atol=1e-6)


# ==================================================================================================
# SVD factors: torch's singular vectors
# ==================================================================================================
@needs_mkl
@pytest.mark.parametrize("shape", [(16, 32), (32, 32), (48, 32), (3, 8, 5)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linalg_svd_gives_torchs_singular_vectors(shape, dtype):
    """Every bit of torch's for m <= n; the same signs and a few ulps apart for m > n (measured: 7e-15 / 7e-6)."""
    a = np.random.RandomState(2).randn(*shape).astype(dtype)
    for full in (True, False):
        ours = ml.linalg.svd(ml.tensor(a), full_matrices=full)
        theirs = torch.linalg.svd(torch.tensor(a), full_matrices=full)
        for got, want in zip(ours, theirs):
            if shape[-2] <= shape[-1]:
                np.testing.assert_array_equal(got.numpy(), want.numpy())
            else:
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5 if dtype == "float32" else
                                           1e-13)


@needs_mkl
@pytest.mark.parametrize("shape", [(16, 32), (32, 32), (3, 5, 8)])
@pytest.mark.parametrize("mode", ["reduced", "complete"])
def test_linalg_qr_gives_torchs_factors(shape, mode):
    """MKL's Householder QR, as torch's: every bit for m <= n (for m > n a few ulps, as NumPy's: see blas.gesdd)."""
    a = np.random.RandomState(3).randn(*shape).astype(np.float32)
    for got, want in zip(ml.linalg.qr(ml.tensor(a), mode=mode), torch.linalg.qr(torch.tensor(a), mode=mode)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def peft_pair(config, dtype="float64"):
    """The tiny Llama with a LoRA adapter from ``config`` in each library ({"torch": model, "minilora": model})."""
    pair = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        base = llama(lib).to(getattr(lib, dtype))
        lib.manual_seed(1)
        pair[name] = quietly(lib_peft.get_peft_model, base, lib_peft.LoraConfig(**dict(BASE, **config)))
    return pair


def assert_same_weights(pair, selected=lambda name: True):
    theirs = {n: p.detach().numpy() for n, p in pair["torch"].named_parameters() if selected(n)}
    ours = {n: p.numpy() for n, p in pair["minilora"].named_parameters() if selected(n)}
    assert sorted(ours) == sorted(theirs) and theirs
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=2e-4, atol=2e-5, err_msg=name)


@needs_mkl
@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4"])
def test_pissa_factors_are_pefts(init):
    """v_proj's [16, 32] weight: NumPy's LAPACK flipped its singular vectors (A and B off by their sign)."""
    assert_same_weights(peft_pair(dict(init_lora_weights=init), "float32"))


@needs_mkl
@pytest.mark.parametrize("init, dtype", [("pissa", "float16"), ("pissa", "bfloat16"), ("olora", "float16")])
def test_16_bit_pissa_and_olora_are_pefts_bits(init, dtype):
    """The factors and the residual base weights, every bit (OLoRA's QR in NumPy's LAPACK: 1-2 weights a step
    off in float16). (pissa_niter_K's QRs are of tall matrices: a few ulps apart, see blas.gesdd.)"""
    pair = peft_pair(dict(init_lora_weights=init), dtype)
    weights = {name: {n: p.detach().float().numpy() for n, p in model.named_parameters()} for name, model in
               pair.items()}
    for name, want in weights["torch"].items():
        np.testing.assert_array_equal(weights["minilora"][name], want, err_msg=name)


@needs_mkl
@pytest.mark.parametrize("combination", [dict(combination_type="svd"), dict(combination_type="ties_svd", density=0.5),
                                         dict(combination_type="svd", svd_rank=3, svd_clamp=0.9),
                                         dict(combination_type="magnitude_prune_svd", density=0.3)])
def test_svd_combinations_are_pefts_factors(combination):
    pair = peft_pair({})
    for name, (lib, lib_peft) in LIBRARIES.items():
        lib.manual_seed(2)
        pair[name].add_adapter("other", lib_peft.LoraConfig(**dict(BASE, lora_alpha=6)))
        quietly(pair[name].add_weighted_adapter, ["default", "other"], [0.7, 0.4], "mix", **combination)
        pair[name].set_adapter("mix")
    assert_same_weights(pair, lambda n: ".mix." in n)
    np.testing.assert_allclose(logits(ml, pair["minilora"]), logits(torch, pair["torch"]), rtol=1e-5, atol=1e-6)


# ==================================================================================================
# PEFT's refusals of a float64 base
# ==================================================================================================
@pytest.mark.parametrize("init, words", [("pissa", "Please initialize PiSSA under float32, float16, or bfloat16"),
                                         ("pissa_niter_2", "Please initialize PiSSA under float32"),
                                         ("olora", "Unsupported data type for the base layer. Got torch.float64.")])
def test_weight_mutating_inits_refuse_a_float64_base_as_peft(init, words):
    for name, (lib, lib_peft) in LIBRARIES.items():
        with pytest.raises(TypeError, match=words.replace(".", r"\.")):
            quietly(lib_peft.get_peft_model, llama(lib), lib_peft.LoraConfig(**dict(BASE, init_lora_weights=init)))


# ==================================================================================================
# A float16 DoRA merged and unmerged
# ==================================================================================================
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "v_proj", "lm_head"]])
@pytest.mark.parametrize("safe_merge", [False, True])
def test_float16_dora_unmerges_to_pefts_bits(targets, safe_merge):
    pair = peft_pair(dict(use_dora=True, target_modules=targets), "float16")
    weights = {}
    for name, model in pair.items():
        model.merge_adapter(safe_merge=safe_merge)
        model.unmerge_adapter()
        weights[name] = {n: p.detach().float().numpy() for n, p in model.named_parameters() if "base_layer" in n}
    for name, want in weights["torch"].items():
        np.testing.assert_array_equal(weights["minilora"][name], want, err_msg=name)


def base_weights(model):
    return {n: p.detach().float().numpy().copy() for n, p in model.named_parameters() if "base_layer" in n}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("first", [{}, dict(use_dora=True)], ids=["lora", "dora"])
def test_a_dora_adapter_merged_after_another_is_pefts_bits(dtype, first):
    """PEFT unmerges the adapters merged so far from the weight itself and merges them again to take the DoRA norm
    of the unmerged weight, then carries on from the rebuilt weight (its rounding a step off the first merge's);
    minilora undid them on a copy and kept the first merge's weight: up to 31 of 512 weights off."""
    pair = peft_pair(first, dtype)
    seen = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = pair[name]
        lib.manual_seed(2)
        model.add_adapter("two", lib_peft.LoraConfig(**dict(BASE, r=2, use_dora=True)))
        model.base_model.set_adapter(["default", "two"])
        model.merge_adapter()
        merged = base_weights(model)
        model.unmerge_adapter()
        seen[name] = merged, base_weights(model)
    for got, want in zip(seen["minilora"], seen["torch"]):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_embedding_dora_magnitudes_and_merge_are_pefts_bits():
    """The table's transpose plus B A is laid out as the transpose in torch, and its norm adds in that order."""
    pair = peft_pair(dict(use_dora=True, target_modules=["embed_tokens"]), "float32")
    seen = {}
    for name, model in pair.items():
        magnitude = model.base_model.model.model.embed_tokens.lora_magnitude_vector["default"].weight
        seen[name] = magnitude.detach().numpy().copy(), model.merge_and_unload().model.embed_tokens.weight.detach()
    for got, want in zip(seen["minilora"], seen["torch"]):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_two_target_parameters_adapters_train_as_pefts_bits(dtype):
    """PEFT sums the active adapters' updates of a targeted parameter in its dtype (each rounded to it first);
    minilora summed them in float32 and rounded once: the 16-bit logits a step off."""
    parameters = dict(target_modules=[], target_parameters=["mlp.down_proj.weight", "self_attn.q_proj.weight"])
    pair = peft_pair(parameters, dtype)
    seen = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = pair[name]
        lib.manual_seed(2)
        model.add_adapter("two", lib_peft.LoraConfig(**dict(BASE, **parameters, r=2)))
        model.base_model.set_adapter(["default", "two"])
        ids = lib.tensor(IDS)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        seen[name] = {"logits": out.logits.detach().float().numpy(),
                      **{n: p.grad.float().numpy() for n, p in model.named_parameters() if p.grad is not None}}
    assert sorted(seen["minilora"]) == sorted(seen["torch"])
    for name, want in seen["torch"].items():
        np.testing.assert_array_equal(seen["minilora"][name], want, err_msg=name)


@pytest.mark.parametrize("targets, dtype", [(["embed_tokens"], "float32"), (["embed_tokens"], "float16"),
                                            (["embed_tokens"], "bfloat16"), (["q_proj", "v_proj"], "float16")])
def test_a_mixed_batch_is_pefts_bits(targets, dtype):
    """``adapter_names=`` per row. LoRA on the embeddings: on a 16-bit base (float32 tables) minilora stacked zeros
    of the base's dtype beside the tables and its product refused the mix (a DTypeMismatchError); in float32 it
    scaled B before the product where PEFT scales the product (scalings 1.5 and 2.5 here). LoRA on Linear layers
    in float16: the per-row products were NumPy's, not MKL's (a row's logits a step off here and there)."""
    config = dict(target_modules=targets, lora_alpha=6)
    pair = peft_pair(config, dtype)
    seen = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = pair[name].eval()
        lib.manual_seed(2)
        model.add_adapter("two", lib_peft.LoraConfig(**dict(BASE, **dict(config, r=2, lora_alpha=5))))
        with lib.no_grad():
            out = model(input_ids=lib.tensor(IDS + [[2, 3, 4, 5, 6, 7, 8, 9]]), adapter_names=["default", "two",
                                                                                             "__base__"])
        seen[name] = out.logits.float().numpy()
    np.testing.assert_array_equal(seen["minilora"], seen["torch"])


# ==================================================================================================
# Adding an adapter keeps the others' trainability
# ==================================================================================================
def trainable(model):
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def loaded_flow(lib, lib_peft, folder, first_trainable, steps):
    """A saved adapter loaded as "default", then ``steps``: ("load", name, is_trainable) / ("set", name); the
    trainable names after each."""
    model = lib_peft.PeftModel.from_pretrained(llama(lib), str(folder), is_trainable=first_trainable)
    seen = []
    for step in steps:
        if step[0] == "load":
            model.load_adapter(str(folder), adapter_name=step[1], is_trainable=step[2])
        else:
            model.set_adapter(step[1])
        seen.append(trainable(model))
    return seen


@pytest.mark.parametrize("first_trainable, steps", [
    (False, [("load", "two", False), ("set", "two"), ("load", "three", True), ("set", "three")]),
    (True, [("load", "two", True), ("load", "x", False), ("set", "x")]),
])
def test_loading_an_adapter_keeps_the_others_trainability_as_peft(tmp_path, first_trainable, steps):
    seen = {}
    for name, (lib, lib_peft) in LIBRARIES.items():
        model = llama(lib)
        lib.manual_seed(1)
        quietly(lib_peft.get_peft_model, model, lib_peft.LoraConfig(**BASE)).save_pretrained(str(tmp_path / name))
        seen[name] = quietly(loaded_flow, lib, lib_peft, tmp_path / name, first_trainable, steps)
    assert seen["minilora"] == seen["torch"]


def unfrozen_norm_then_another(lib, lib_peft, model):
    model.base_model.model.model.norm.weight.requires_grad_(True)
    model.add_adapter("b", lib_peft.LoraConfig(**dict(BASE, bias="all")))


def frozen_then_an_inference_adapter(lib, lib_peft, model):
    model.set_requires_grad("default", False)
    model.add_adapter("b", lib_peft.LoraConfig(**dict(BASE, inference_mode=True)))


@pytest.mark.parametrize("flow", [unfrozen_norm_then_another, frozen_then_an_inference_adapter])
def test_add_adapter_keeps_what_was_trainable_as_peft(flow):
    pair = peft_pair({})
    for name, (lib, lib_peft) in LIBRARIES.items():
        flow(lib, lib_peft, pair[name])
    assert trainable(pair["minilora"]) == trainable(pair["torch"])


def test_loftq_without_its_config_is_refused_in_pefts_words():
    """(With a loftq_config minilora's own refusal follows: it has no quantized layers; PEFT needs bitsandbytes.)"""
    import importlib.util
    for lib_peft in (peft, ml.lora):
        if lib_peft is peft and importlib.util.find_spec("scipy") is None:
            continue  # (PEFT asks for scipy first: an ImportError where it is not installed, as in the CI)
        with pytest.raises(ValueError, match="^`loftq_config` must be specified when `init_lora_weights` is 'loftq'.$"):
            lib_peft.LoraConfig(**dict(BASE, init_lora_weights="loftq"))
