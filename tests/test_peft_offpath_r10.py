"""PEFT 0.21 side by side with minilora, round 10: user scripts off the paths earlier rounds tested, written as
PEFT's LoRA developer guide, checkpoint-format and model-merging pages write them, run once per library on the
same weights (torch's copied into minilora's, adapters drawn from the same seed):

* DoRA on a bfloat16/float16 Linear or Embedding: the magnitude PEFT starts from is ``||W0 + s B A||`` with
  each op rounded to 16 bits (PEFT's ``DoraLinearLayer.update_layer`` runs in the adapter's dtype, still the
  base's at that point); minilora summed in float32 and rounded once (1 row in 16 one ulp off, and an
  embedding's DoRA forward with 16-bit adapters 1 ulp off on 1 row in 8);
* ``add_weighted_adapter(..., combination_type="svd")`` where a layer's update has fewer singular values than
  the new rank (a 2-output layer under rank 3): PEFT keeps the narrower factors; minilora refused half-way,
  leaving a zero adapter behind;
* ``load_adapter(folder, adapter_name)`` with a name the model has: PEFT loads the folder's weights into it
  (a later checkpoint of the same adapter); minilora refused;
* refusals with PEFT's exception types: a rank that is not an int (TypeError), an unknown ``bias`` mode
  (NotImplementedError), an adapter name with a '.' or empty (KeyError, torch's ModuleDict's).

Skipped when torch / peft are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

from test_peft_custom_r6 import INPUTS, mlp, nested, pair, run_both  # noqa: E402

HALF = {"bfloat16": (torch.bfloat16, ml.bfloat16), "float16": (torch.float16, ml.float16)}


def pair16(build, dtype):
    """test_peft_custom_r6's pair in a 16-bit dtype (torch's float32 init rounded, copied across)."""
    torch.manual_seed(0)
    theirs = build(torch.nn, torch.float32).to(HALF[dtype][0])
    ours = build(ml.nn, ml.float32).to(HALF[dtype][1])
    ours.load_state_dict({k: ml.tensor(v.float().numpy()).to(HALF[dtype][1]) for k, v in theirs.state_dict().items()})
    return theirs, ours


def seeded(theirs_base, ours_base, config, seed=1, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(theirs_base, peft.LoraConfig(**config), **kwargs)
        ml.manual_seed(seed)
        ours = ml_peft.get_peft_model(ours_base, ml_peft.LoraConfig(**config), **kwargs)
    return theirs, ours


def as_float(value):
    """A torch or minilora tensor as float32/float64 NumPy (16-bit values widened exactly)."""
    value = value.detach()
    return (value.float() if value.dtype in (torch.float16, torch.bfloat16, ml.bfloat16, ml.float16)
            else value).numpy()


def assert_same_states(theirs, ours):
    theirs_sd, ours_sd = theirs.state_dict(), ours.state_dict()
    assert sorted(ours_sd) == sorted(theirs_sd)
    for key, value in theirs_sd.items():
        np.testing.assert_array_equal(as_float(ours_sd[key]), as_float(value), err_msg=key)


def outputs(theirs, ours, x, dtype):
    with torch.no_grad():
        t = as_float(theirs(torch.as_tensor(x).to(HALF[dtype][0]) if x.dtype.kind == "f" else torch.as_tensor(x)))
    with ml.no_grad():
        m = as_float(ours(ml.tensor(x).to(HALF[dtype][1]) if x.dtype.kind == "f" else ml.tensor(x)))
    return t, m


# ==================================================================================================
# DoRA on a 16-bit base: the magnitude PEFT starts from
# ==================================================================================================
@pytest.mark.parametrize("autocast", [True, False])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dora_magnitude_of_a_16_bit_linear_bit_for_bit_as_peft(dtype, autocast):
    """Before: the bfloat16 magnitude was one ulp off PEFT's on 1 row of seq.0's 16 (1.296875 vs
    1.3046875), so the forward and the merged weight were too."""
    config = dict(r=2, target_modules=["seq.0", "seq.2", "seq.4"], use_dora=True, init_lora_weights=False)
    theirs, ours = seeded(*pair16(mlp, dtype), config, autocast_adapter_dtype=autocast)
    assert_same_states(theirs, ours)  # the magnitudes (and factors, in the adapter's dtype)
    x = INPUTS[mlp](np.random.default_rng(1)).astype(np.float32)
    t, m = outputs(theirs, ours, x, dtype)
    np.testing.assert_array_equal(m, t)
    with torch.no_grad():
        theirs.merge_adapter()
    ours.merge_adapter()
    assert_same_states(theirs, ours)


@pytest.mark.parametrize("autocast", [True, False])
def test_dora_on_a_bfloat16_embedding_bit_for_bit_as_peft(autocast):
    """Before: the magnitude was summed in float32 (0.0625 off PEFT's on one column), and with bfloat16
    adapters (autocast_adapter_dtype=False) the forward's norm and m/n stayed float32 where PEFT rounds
    them to bfloat16 (outputs one ulp, 0.03, off)."""
    config = dict(r=2, target_modules=["embed"], use_dora=True, init_lora_weights=False)
    theirs, ours = seeded(*pair16(nested, "bfloat16"), config, autocast_adapter_dtype=autocast)
    assert_same_states(theirs, ours)
    ids = INPUTS[nested](np.random.default_rng(1))
    t, m = outputs(theirs, ours, ids, "bfloat16")
    np.testing.assert_array_equal(m, t)
    with torch.no_grad():
        theirs.merge_adapter()
    ours.merge_adapter()
    assert_same_states(theirs, ours)


# ==================================================================================================
# add_weighted_adapter: an SVD rank above a layer's smallest side
# ==================================================================================================
def two_adapters():
    """default (r=2 on seq.0, seq.2) and other (r=3 on seq.2 and the 2-output seq.4), float64."""
    theirs, ours = seeded(*pair(mlp), dict(r=2, target_modules=["seq.0", "seq.2"], init_lora_weights=False))
    other = dict(r=3, lora_alpha=5, target_modules=["seq.2", "seq.4"], init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(2)
        theirs.add_adapter("other", peft.LoraConfig(**other))
        ml.manual_seed(2)
        ours.add_adapter("other", ml_peft.LoraConfig(**other))
    return theirs, ours


def test_svd_combination_keeps_the_narrower_factors_of_a_small_layer_as_peft(tmp_path):
    """Before: ValueError "svd_rank=3 is larger than the update's smallest side 2", with a zero adapter
    "svd" left in the model. PEFT (svd_full_matrices=False) gives seq.4 factors [2, 16] and [2, 2]."""
    theirs, ours = two_adapters()
    for model in (theirs, ours):
        model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "svd", svd_full_matrices=False)
        model.set_adapter("svd")
    t_layer, m_layer = theirs.base_model.model.seq[4], ours.base_model.model.seq[4]
    assert tuple(m_layer.lora_A["svd"].weight.shape) == tuple(t_layer.lora_A["svd"].weight.shape) == (2, 16)
    assert tuple(m_layer.lora_B["svd"].weight.shape) == tuple(t_layer.lora_B["svd"].weight.shape) == (2, 2)
    assert m_layer.r["svd"] == t_layer.r["svd"] == 3 and m_layer.scaling["svd"] == t_layer.scaling["svd"] == 1.0
    with torch.no_grad():  # (singular vectors are defined up to sign: compare B A, not A and B)
        t_delta = (t_layer.lora_B["svd"].weight @ t_layer.lora_A["svd"].weight).numpy()
    np.testing.assert_allclose(as_float(m_layer.lora_B["svd"].weight @ m_layer.lora_A["svd"].weight), t_delta,
                               rtol=0, atol=1e-12)
    x = INPUTS[mlp](np.random.default_rng(1))
    t, m = run_both(theirs, ours, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-12)
    ours.save_pretrained(str(tmp_path), selected_adapters=["svd"])
    saved = safetensors_numpy.load_file(str(tmp_path / "svd" / "adapter_model.safetensors"))
    assert saved["base_model.model.seq.4.lora_A.weight"].shape == (2, 16)


# ==================================================================================================
# load_adapter under a name the model has
# ==================================================================================================
def test_load_adapter_into_an_existing_adapter_loads_its_weights_as_peft(tmp_path):
    """Before: ValueError "an adapter named 'default' already exists"; PEFT loads the folder's weights into
    the adapter (its config kept), as a user reloading a later checkpoint of it does."""
    theirs, ours = two_adapters()
    theirs.save_pretrained(str(tmp_path / "first"))
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_" in name:
                p.mul_(2.0)
    theirs.save_pretrained(str(tmp_path / "later"))
    reloaded = []
    for lib, library_peft, base in ((torch, peft, pair(mlp)[0]), (ml, ml_peft, pair(mlp)[1])):
        model = library_peft.PeftModel.from_pretrained(base, str(tmp_path / "first"))
        result = model.load_adapter(str(tmp_path / "later"), "default", is_trainable=True)
        assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
        reloaded.append(model)
    assert_same_states(*reloaded)
    key = "base_model.model.seq.0.lora_A.default.weight"  # the later checkpoint's weights, not the first's
    np.testing.assert_array_equal(as_float(reloaded[1].state_dict()[key]), as_float(theirs.state_dict()[key]))
    assert reloaded[1].training is reloaded[0].training
    assert sorted(reloaded[1].peft_config) == sorted(reloaded[0].peft_config) == ["default"]
    x = INPUTS[mlp](np.random.default_rng(1))
    t, m = run_both(*reloaded, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="seq.4"):  # "other"'s file does not fit "default": PEFT's type
        reloaded[1].load_adapter(str(tmp_path / "later" / "other"), "default")


# ==================================================================================================
# Refusals: PEFT's exception types
# ==================================================================================================
def peft_error(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as caught:
            build(torch, peft, pair(mlp)[0])
    return caught.type


@pytest.mark.parametrize("field", ["r", "rank_pattern"])
@pytest.mark.parametrize("rank", [2.0, "2", True, None])
def test_a_rank_that_is_not_an_int_is_a_type_error_as_peft(field, rank):
    """Before: ValueError; PEFT's is torch.empty's TypeError (or a comparison's)."""
    def build(lib, library_peft, base):
        kw = dict(r=rank) if field == "r" else dict(r=2, rank_pattern={"seq.0": rank})
        return library_peft.get_peft_model(base, library_peft.LoraConfig(target_modules=["seq.0"], **kw))
    assert peft_error(build) is TypeError
    with pytest.raises(TypeError, match="must be a positive integer"):
        build(ml, ml_peft, pair(mlp)[1])


def test_unknown_bias_mode_is_a_not_implemented_error_as_peft():
    """Before: ValueError; PEFT's NotImplementedError "Requested bias: some, is not implemented."."""
    def build(lib, library_peft, base):
        return library_peft.get_peft_model(base, library_peft.LoraConfig(target_modules=["seq.0"], bias="some"))
    assert peft_error(build) is NotImplementedError
    with pytest.raises(NotImplementedError, match="Requested bias: some, is not implemented"):
        build(ml, ml_peft, pair(mlp)[1])


@pytest.mark.parametrize("name", ["v1.0", ""])
def test_adapter_name_with_a_dot_or_empty_is_a_key_error_as_peft(name):
    """Before: ValueError / TypeError; PEFT's is torch's ModuleDict KeyError. (A name with '/' stays
    refused by minilora, which PEFT takes: save_pretrained would write it into a subfolder.)"""
    def build(lib, library_peft, base):
        config = library_peft.LoraConfig(target_modules=["seq.0"])
        return library_peft.get_peft_model(base, config, adapter_name=name)
    assert peft_error(build) is KeyError
    with pytest.raises(KeyError) as caught:
        build(ml, ml_peft, pair(mlp)[1])
    assert "adapter name" in str(caught.value) and not str(caught.value).startswith("'")
    model = ml_peft.get_peft_model(pair(mlp)[1], ml_peft.LoraConfig(target_modules=["seq.0"]))
    with pytest.raises(KeyError, match="adapter name"):
        model.add_adapter(name, ml_peft.LoraConfig(target_modules=["seq.0"]))


# ==================================================================================================
# ignore_mismatched_sizes: an adapter whose saved head has another number of labels
# ==================================================================================================
def three_labels(nn, dtype):
    model = mlp(nn, dtype)
    model.seq[4] = nn.Linear(16, 3, dtype=dtype)  # the same network with a 3-way head
    return model


def test_from_pretrained_ignore_mismatched_sizes_skips_the_head_as_peft(tmp_path):
    """Before: TypeError (an unexpected keyword) from from_pretrained, NotImplementedError from
    set_peft_model_state_dict. PEFT skips the tensors whose shape differs, warns naming each, and leaves
    those weights as the model had them."""
    theirs, _ = seeded(*pair(mlp), dict(r=2, target_modules=["seq.0"], modules_to_save=["seq.4"],
                                        init_lora_weights=False))
    theirs.save_pretrained(str(tmp_path))
    loaded, warned = [], []
    for library_peft, base in ((peft, pair(three_labels)[0]), (ml_peft, pair(three_labels)[1])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded.append(library_peft.PeftModel.from_pretrained(base, str(tmp_path), ignore_mismatched_sizes=True))
        warned.append([str(w.message) for w in caught if "ignore_mismatched_sizes" in str(w.message)])
    assert [w.replace("minilora.Size", "torch.Size") for w in warned[1]] == warned[0]
    assert "seq.4.modules_to_save.default.weight: found shape minilora.Size([2, 16])" in warned[1][0]
    assert_same_states(*loaded)
    x = INPUTS[mlp](np.random.default_rng(1))
    t, m = run_both(*loaded, x)
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-12)


def test_set_peft_model_state_dict_ignore_mismatched_sizes_as_peft():
    """Rank 3 tensors into a rank 4 adapter: skipped, reported as missing keys, the adapter unchanged."""
    results, states = [], []
    for library_peft, base in ((peft, pair(mlp)[0]), (ml_peft, pair(mlp)[1])):
        model = library_peft.get_peft_model(base, library_peft.LoraConfig(r=3, target_modules=["seq.0", "seq.2"]))
        saved = library_peft.get_peft_model_state_dict(model)
        other = library_peft.get_peft_model(pair(mlp)[library_peft is ml_peft], library_peft.LoraConfig(
            r=4, target_modules=["seq.0"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(library_peft.set_peft_model_state_dict(other, {k: v for k, v in saved.items()
                                                                          if "seq.0" in k}, ignore_mismatched_sizes=True))
        states.append(other)
    assert sorted(results[1].missing_keys) == sorted(results[0].missing_keys)
    assert "base_model.model.seq.0.lora_A.default.weight" in results[1].missing_keys


# ==================================================================================================
# Mistakes with adapter names: PEFT's sentence in minilora's message
# ==================================================================================================
def nan_adapter(model, lib):
    with lib.no_grad():
        model.base_model.model.seq[0].lora_B["default"].weight[0, 0] = float("nan")
    model.merge_adapter(safe_merge=True)


MISTAKES = {"set_adapter": lambda model, lib, tmp: model.set_adapter("nope"),
            "delete_adapter": lambda model, lib, tmp: model.delete_adapter("nope"),
            "add_adapter": lambda model, lib, tmp: model.add_adapter("other", model.peft_config["default"]),
            "save_pretrained": lambda model, lib, tmp: model.save_pretrained(str(tmp), selected_adapters=["nope"]),
            "safe_merge": lambda model, lib, tmp: nan_adapter(model, lib)}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_adapter_mistakes_say_pefts_sentence(tmp_path, mistake):
    """Before: minilora's own words only ("no adapter named 'nope'; adapters: [...]"), so a search for
    PEFT's message found nothing. Now PEFT's sentence, then minilora's details."""
    theirs, ours = two_adapters()
    with pytest.raises(ValueError) as theirs_error:
        MISTAKES[mistake](theirs, torch, tmp_path / "theirs")
    with pytest.raises(ValueError) as ours_error:
        MISTAKES[mistake](ours, ml, tmp_path / "ours")
    peft_sentence = str(theirs_error.value).rstrip(".")
    assert str(ours_error.value).startswith(peft_sentence), (str(ours_error.value), peft_sentence)


# ==================================================================================================
# "all-linear" on a user's own module
# ==================================================================================================
def with_heads(nn, dtype):
    class Net(nn.Module):  # a nanoGPT-like head name on a plain module (not a transformers model)
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(20, 16, dtype=dtype), nn.ReLU())
            self.classifier = nn.Linear(16, 3, dtype=dtype)
            self.lm_head = nn.Linear(16, 5, dtype=dtype)

        def forward(self, x):
            h = self.body(x)
            return self.classifier(h) + self.lm_head(h)[:, :3]
    return Net()


@pytest.mark.parametrize("task_type", [None, "SEQ_CLS"])
def test_all_linear_on_a_plain_module_adapts_every_linear_as_peft(task_type):
    """Before: minilora left out a plain module's ``lm_head`` (by name). PEFT leaves out a head only on a
    transformers model (its output embedding, or a SEQ_CLS model's score/classifier)."""
    config = dict(r=2, target_modules="all-linear", task_type=task_type, init_lora_weights=False)
    theirs, ours = seeded(*pair(with_heads), config)
    assert sorted(ours.peft_config["default"].target_modules) == sorted(theirs.peft_config["default"].target_modules)
    assert "lm_head" in ours.peft_config["default"].target_modules
    assert_same_states(theirs, ours)
    # (PEFT's PeftModelForSequenceClassification.forward needs a transformers config: run the adapted module)
    t, m = run_both(theirs.get_base_model(), ours.get_base_model(), INPUTS[mlp](np.random.default_rng(1)))
    np.testing.assert_allclose(m, t, rtol=0, atol=1e-12)


def test_set_peft_model_state_dict_takes_the_models_own_keys_as_peft():
    """Tensors keyed as model.state_dict() names them (``...lora_A.other.weight``) load as PEFT's (which
    passes keys it does not map on to load_state_dict). Before: AdapterMismatchError, "has weights for
    'base_model.model.seq.2.lora_A.other.weight' ... which this model does not have"."""
    results, loaded, sources = [], [], two_adapters()
    for index, library_peft in enumerate((peft, ml_peft)):
        own_keys = {k: v for k, v in sources[index].state_dict().items() if "lora_" in k and ".other." in k}
        config = dict(r=3, lora_alpha=5, target_modules=["seq.2", "seq.4"])
        target = library_peft.get_peft_model(pair(mlp)[index], library_peft.LoraConfig(**config), adapter_name="other")
        results.append(library_peft.set_peft_model_state_dict(target, own_keys, adapter_name="other"))
        loaded.append(target)
    assert sorted(results[1].missing_keys) == sorted(results[0].missing_keys)
    assert_same_states(*loaded)
    key = "base_model.model.seq.4.lora_B.other.weight"  # the source's weights, not the target's init
    np.testing.assert_array_equal(as_float(loaded[1].state_dict()[key]), as_float(sources[1].state_dict()[key]))
