"""add_weighted_adapter against PEFT 0.21 in float64: per combination type, the combined adapter's
weights by PEFT parameter name, its logits, its merged weights and its files both ways; PEFT's errors
for bad input. Then the SVD-based initialisations (PiSSA, OLoRA) and PEFT's save-time conversion. Skipped when torch / transformers / peft are not installed."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import torch  # noqa: E402

import minilora as ml  # noqa: E402
from minilora import blas  # noqa: E402
from minilora.lora import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from minilora.lora.compose import dare_linear, prune, ties  # noqa: E402
from minilora.models import LlamaForCausalLM  # noqa: E402
from minilora.testing import assert_close  # noqa: E402

from test_llama import hf  # noqa: E402,F401
from test_lora_interop import CONFIG, IDS, base_pair, our_logits, peft_logits  # noqa: E402

FIRST = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
SECOND = dict(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)


def two_adapter_pair(transformers, first=FIRST, second=SECOND):
    """PEFT and minilora models holding the same two trained-looking adapters, "one" and "two"."""
    reference, model = base_pair(transformers)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**first), adapter_name="one")
    torch.manual_seed(1)
    theirs.add_adapter("two", peft.LoraConfig(**second))
    ours = get_peft_model(model, LoraConfig(**first), adapter_name="one")
    ours.add_adapter("two", LoraConfig(**second))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def adapter_weights(model, adapter):
    """{parameter name: array} of one adapter's weights (PEFT's names are minilora's)."""
    as_array = (lambda v: v.detach().numpy()) if isinstance(model, torch.nn.Module) else (lambda v: v.numpy(force=True))
    return {n: as_array(p) for n, p in model.state_dict().items() if f".{adapter}." in n or n.endswith(f".{adapter}")}


# PEFT turns the weights into torch.tensor(weights), a float32 tensor, even for a float64 model, so its
# results carry the float32 rounding of w and of sqrt(w * s). The weights here make every one of those
# exact in float32 (s = 2 and 1: sqrt(0.5 * 2) = 1, sqrt(0.25 * 1) = 0.5), so float64 results must agree
# to the last bits; minilora itself keeps w in float64.
WEIGHTS = [0.5, -0.25]
WEIGHT_RTOL = 1e-12

CASES = {
    "linear": dict(combination_type="linear"),
    "cat": dict(combination_type="cat"),
    "svd": dict(combination_type="svd"),
    "svd_rank_clamp": dict(combination_type="svd", svd_rank=3, svd_clamp=0.9),
    "ties": dict(combination_type="ties", density=0.5),
    "ties_frequency": dict(combination_type="ties", density=0.4, majority_sign_method="frequency"),
    "magnitude_prune": dict(combination_type="magnitude_prune", density=0.6),
    "ties_svd": dict(combination_type="ties_svd", density=0.5),
}


@pytest.mark.parametrize("case", CASES)
def test_combined_adapter_equals_peft(hf, case, monkeypatch):
    theirs, ours = two_adapter_pair(hf)
    if "svd_clamp" in CASES[case] and blas.library() != "mkl":
        # Singular vectors have a free sign per pair (u_i, v_i) and the clamp quantile depends on the signs:
        # minilora's SVD gives torch's signs through MKL's LAPACK (round 29), NumPy's LAPACK flips some
        pytest.skip("the clamp's quantile needs torch's singular vectors' signs (MKL's LAPACK)")
    theirs.add_weighted_adapter(["one", "two"], WEIGHTS, "mix", **CASES[case])
    ours.add_weighted_adapter(["one", "two"], WEIGHTS, "mix", **CASES[case])
    ref, got = adapter_weights(theirs, "mix"), adapter_weights(ours, "mix")
    assert set(got) == set(ref) and ref
    for name in ref:
        if "svd" in case:  # singular vectors are defined up to sign: compare the update B A
            continue
        assert_close(got[name], ref[name], rtol=WEIGHT_RTOL, atol=1e-12, name=name)
    for prefix in {n.rsplit(".lora_", 1)[0] for n in ref}:
        A, B = f"{prefix}.lora_A.mix.weight", f"{prefix}.lora_B.mix.weight"
        assert_close(got[B] @ got[A], ref[B] @ ref[A], rtol=WEIGHT_RTOL, atol=1e-12, name=prefix)
    theirs.set_adapter("mix")
    ours.set_adapter("mix")
    assert_close(our_logits(ours), peft_logits(theirs), rtol=WEIGHT_RTOL, atol=1e-9)


def test_cat_and_svd_are_exact_weighted_sums(hf):
    _, ours = two_adapter_pair(hf)
    ours.add_weighted_adapter(["one", "two"], [0.7, -0.4], "cat", combination_type="cat")
    ours.add_weighted_adapter(["one", "two"], [0.7, -0.4], "svd", combination_type="svd", svd_rank=8)
    ours.add_weighted_adapter(["one", "two"], [0.7, -0.4], "lin", combination_type="linear")
    layer = ours.base_model.model.model.layers[0].self_attn.q_proj
    want = 0.7 * layer.get_delta_weight("one") - 0.4 * layer.get_delta_weight("two")
    assert layer.r["cat"] == 8 and layer.scaling["cat"] == 1.0
    assert_close(layer.get_delta_weight("cat"), want, rtol=1e-12, atol=1e-12)
    # rank 8 >= rank of the sum; PEFT weighs with torch.tensor([0.7, -0.4]), float32 numbers
    one, two = float(np.float32(0.7)), float(np.float32(-0.4))
    want_svd = one * layer.get_delta_weight("one") + two * layer.get_delta_weight("two")
    assert_close(layer.get_delta_weight("svd"), want_svd, rtol=1e-10, atol=1e-12)
    assert np.abs(layer.get_delta_weight("lin") - want).max() > 1e-3  # linear keeps cross terms: not exact
    assert ours.active_adapter == "one" and not any(
        p.requires_grad for n, p in ours.named_parameters() if ".cat." in n)  # new adapter: inactive, frozen


def test_dare_linear_draws_as_peft_with_the_same_masks(hf, monkeypatch):
    """DARE's random masks: PEFT draws torch.bernoulli(ones_like(t) * density) per task tensor (A's
    then B's); minilora draws torch's numbers in the same order. (Both drawn here from a generator
    of their own seeded 123, so that the new adapter's init draws, which come first, do not matter.)"""
    import minilora.lora.compose as compose
    theirs, ours = two_adapter_pair(hf)
    torch_masks, our_masks = torch.Generator().manual_seed(123), ml.Generator().manual_seed(123)
    bernoulli, random_mask = torch.bernoulli, compose._random_mask
    monkeypatch.setattr(torch, "bernoulli", lambda p: bernoulli(p, generator=torch_masks))
    monkeypatch.setattr(compose, "_random_mask", lambda t, density, rng: random_mask(t, density, our_masks))
    theirs.add_weighted_adapter(["one", "two"], WEIGHTS, "dare", combination_type="dare_linear", density=0.3)
    ours.add_weighted_adapter(["one", "two"], WEIGHTS, "dare", combination_type="dare_linear", density=0.3)
    monkeypatch.undo()
    ref, got = adapter_weights(theirs, "dare"), adapter_weights(ours, "dare")
    for name in ref:
        assert_close(got[name], ref[name], rtol=1e-12, atol=1e-12, name=name)
    ml.manual_seed(123)  # the same seed gives the same adapter
    ours.add_weighted_adapter(["one", "two"], [0.7, 0.5], "dare2", combination_type="dare_ties", density=0.3)
    ml.manual_seed(123)
    ours.add_weighted_adapter(["one", "two"], [0.7, 0.5], "dare3", combination_type="dare_ties", density=0.3)
    layer = ours.base_model.model.model.layers[1].self_attn.v_proj
    assert np.array_equal(layer.lora_A["dare2"].weight.numpy(), layer.lora_A["dare3"].weight.numpy())


def test_merge_rules_by_hand():
    t1, t2 = np.array([[3.0, -1.0], [0.5, 2.0]]), np.array([[-1.5, -2.0], [1.0, 0.1]])
    assert np.array_equal(prune(t1, 0.5, "magnitude"), [[3.0, 0], [0, 2.0]])
    # ties: keep the top half of each, then the majority sign of the sum, then the mean of the agreeing ones
    # (the pruned zeros have sign 0 and agree with nobody: entry (1, 0) keeps nothing)
    assert_close(ties([t1, t2], [1.0, 1.0], 0.5), np.array([[3.0, -2.0], [0.0, 2.0]]))
    ml.manual_seed(0)
    kept = dare_linear([np.ones((200, 200))], [1.0], 0.25)
    assert set(np.unique(kept)) == {0.0, 4.0} and abs(kept.mean() - 1.0) < 0.05  # rescaled by 1/density


def test_different_target_modules_combine_on_the_union(hf):
    other = dict(SECOND, target_modules=["k_proj", "v_proj"])
    theirs, ours = two_adapter_pair(hf, second=other)
    theirs.add_weighted_adapter(["one", "two"], [1.0, 1.0], "mix", combination_type="cat")
    ours.add_weighted_adapter(["one", "two"], [1.0, 1.0], "mix", combination_type="cat")
    assert sorted(ours.peft_config["mix"].target_modules) == sorted(theirs.peft_config["mix"].target_modules)
    ref, got = adapter_weights(theirs, "mix"), adapter_weights(ours, "mix")
    assert set(got) == set(ref)
    for name in ref:
        assert_close(got[name], ref[name], rtol=1e-12, atol=1e-12, name=name)


def test_combined_adapter_merges_saves_and_loads_in_peft(hf, tmp_path):
    theirs, ours = two_adapter_pair(hf)
    ours.add_weighted_adapter(["one", "two"], [0.6, 0.6], "mix", combination_type="svd", svd_rank=4)
    ours.set_adapter("mix")
    want = our_logits(ours)
    ours.save_pretrained(tmp_path, selected_adapters=["mix"])
    reference, _ = base_pair(hf)
    loaded = peft.PeftModel.from_pretrained(reference, tmp_path / "mix", adapter_name="mix")
    assert_close(peft_logits(loaded), want, rtol=1e-12, atol=1e-12)
    merged = ours.merge_and_unload()
    assert_close(merged(IDS).logits.numpy(), want, rtol=1e-10, atol=1e-10)


def test_bad_input_gets_peft_errors(hf):
    theirs, ours = two_adapter_pair(hf, second=dict(SECOND, r=2))
    for model in (theirs, ours):
        with pytest.raises(ValueError, match="same r value"):
            model.add_weighted_adapter(["one", "two"], [1.0, 1.0], "x", combination_type="linear")
        with pytest.raises(ValueError, match="Adapter nope does not exist"):
            model.add_weighted_adapter(["one", "nope"], [1.0, 1.0], "x", combination_type="cat")
        with pytest.raises(ValueError, match="Invalid combination_type"):
            model.add_weighted_adapter(["one", "two"], [1.0, 1.0], "x", combination_type="mean")
    with pytest.raises(ValueError, match="needs density"):
        ours.add_weighted_adapter(["one", "two"], [1.0, 1.0], "x", combination_type="ties_svd")
    ours.add_weighted_adapter(["one", "two"], [1.0, 1.0], "one", combination_type="cat")  # exists: nothing happens
    assert ours.peft_config["one"].r == 4


# ==================================================================================================
# SVD-based initialisations: PiSSA, PiSSA with a randomised SVD, OLoRA (and "gaussian")
# ==================================================================================================
# PEFT refuses float64 weights for PiSSA/OLoRA (it factorises in float32), so the comparison with PEFT
# runs in float32; minilora factorises in float64 and casts back, hence a float32-sized tolerance.
INIT_TARGETS = ["q_proj", "v_proj", "down_proj"]  # square, wide (8 x 16) and tall (16 x 24) weights


def float32_pair(transformers):
    reference, model = base_pair(transformers)
    reference = reference.float()
    model = LlamaForCausalLM(CONFIG, dtype="float32")
    model.load_state_dict({k: v.float() for k, v in reference.state_dict().items()})
    return reference, model


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_2", "olora"])
def test_weight_mutating_inits_equal_peft(hf, init, monkeypatch):
    reference, model = float32_pair(hf)
    options = dict(r=3, lora_alpha=5, target_modules=INIT_TARGETS, init_lora_weights=init)
    # the randomised SVD's start (pissa_niter_2): the same seed draws the same normals on both sides
    torch.manual_seed(7)
    ml.manual_seed(7)
    with torch.no_grad():
        ref_logits = reference(torch.as_tensor(IDS)).logits.numpy()
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**options))
    ours = get_peft_model(model, LoraConfig(**options))
    monkeypatch.undo()
    ref = {n: p.detach().numpy() for n, p in theirs.state_dict().items()}
    got = {n: p.numpy(force=True) for n, p in ours.state_dict().items()}
    assert set(got) == set(ref)
    for name in [n for n in ref if ".lora_A." in n]:
        # a singular (or QR) pair is defined up to its sign, and LAPACK builds differ: align it per rank
        flip = np.sign((got[name] * ref[name]).sum(axis=1))
        got[name] = got[name] * flip[:, None]
        b_name = name.replace(".lora_A.", ".lora_B.")
        got[b_name] = got[b_name] * flip[None, :]
    for name in ref:  # lora_A, lora_B AND the residual base weights
        assert_close(got[name], ref[name], rtol=2e-4, atol=2e-5, name=name)
    # the model's output is unchanged at init: W_res + s B A = W0
    assert_close(our_logits(ours), ref_logits, rtol=1e-4, atol=1e-4)


def test_pissa_takes_the_principal_part_and_leaves_the_residual(hf):
    # float32 (PEFT refuses PiSSA and OLoRA on a float64 base, and so does minilora since round 29): the
    # factors and the residual against float64's, to float32's precision (float32's SVD of this weight puts its
    # rank-2 part up to 4.5e-6 off float64's, 1e-4 relative, seen; a wrong part is off by 1e-2)
    _, model = float32_pair(hf)
    W0 = model.model.layers[0].self_attn.q_proj.weight.numpy().astype(np.float64)
    ours = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights="pissa"))
    layer = ours.base_model.model.model.layers[0].self_attn.q_proj
    U, S, Vh = np.linalg.svd(W0)
    assert_close(layer.get_delta_weight("default"), (U[:, :2] * S[:2]) @ Vh[:2], rtol=2e-4, atol=1e-5)
    assert_close(layer.weight.numpy() + layer.get_delta_weight("default"), W0, rtol=2e-4, atol=1e-5)
    Q, R = np.linalg.qr(W0)
    _, model = float32_pair(hf)
    ours = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights="olora"))
    layer = ours.base_model.model.model.layers[0].self_attn.q_proj
    assert_close(layer.lora_B["default"].weight.numpy(), Q[:, :2], rtol=2e-4, atol=1e-5)
    assert_close(layer.weight.numpy(), W0 - 2.0 * Q[:, :2] @ R[:2], rtol=2e-4, atol=1e-5)


def test_gaussian_init_draws_A_with_std_one_over_r(hf):
    _, model = base_pair(hf)
    ours = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights="gaussian"))
    A = np.concatenate([p.numpy().ravel() for n, p in ours.named_parameters() if "lora_A" in n])
    B = np.concatenate([p.numpy().ravel() for n, p in ours.named_parameters() if "lora_B" in n])
    error = 0.25 / np.sqrt(A.size)  # (the standard error of the mean; the std's is error / sqrt(2))
    assert abs(A.std() - 0.25) < 5 * error and abs(A.mean()) < 5 * error and not B.any()


def test_bad_init_names_are_refused():
    with pytest.raises(ValueError, match="pissa_niter"):
        LoraConfig(init_lora_weights="pissa_niter_x")
    with pytest.raises(ValueError, match="loftq"):
        LoraConfig(init_lora_weights="loftq")


def test_pissa_adapter_saved_as_plain_lora_for_the_original_base(hf, tmp_path):
    """PEFT's recipe: save the initial adapter (init_lora_weights=True so loading never re-inits), train,
    then save_pretrained(..., path_initial_model_for_weight_conversion=initial): a rank-2r LoRA that PEFT
    loads on the ORIGINAL base and that gives the trained model's logits (float64 after the PiSSA init, which
    PEFT and minilora refuse to run on a float64 base)."""
    _, model = float32_pair(hf)
    ours = get_peft_model(model, LoraConfig(r=2, lora_alpha=3, target_modules=INIT_TARGETS, init_lora_weights="pissa"))
    ours.double()
    # the residual W0 - s B0 A0 was rounded to float32 by the init: the original base differs from the trained
    # model's by that rounding (the logits about 2e-7 apart, seen; a wrong conversion moves them by 1e-2)
    close = dict(rtol=1e-6, atol=2e-6)
    ours.peft_config["default"].init_lora_weights = True
    ours.save_pretrained(tmp_path / "initial")
    rng = np.random.default_rng(3)
    for name, p in ours.named_parameters():  # "training"
        if "lora_" in name:
            p._array += 0.05 * rng.standard_normal(p.shape)
    want = our_logits(ours)
    ours.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=str(tmp_path / "initial"))
    written = json.load(open(tmp_path / "lora" / "adapter_config.json"))
    assert written["r"] == 4 and written["lora_alpha"] == 6 and written["init_lora_weights"] is True
    assert json.load(open(tmp_path / "initial" / "adapter_config.json"))["init_lora_weights"] is True
    reference, _ = base_pair(hf)  # the original weights, never mutated
    theirs = peft.PeftModel.from_pretrained(reference, tmp_path / "lora")
    assert_close(peft_logits(theirs), want, **close)
    # and PEFT's own conversion file loads into minilora on the original base with the same logits
    _, fresh = base_pair(hf)
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "lora")
    assert_close(our_logits(loaded), want, **close)
