"""PEFT 0.21 and transformers 5 users' calls that round 10 left refused or answered differently, run once per
library on the same weights (torch's copied into minilora's, adapters drawn from the same seed):

* DoRA on a float16/bfloat16 Conv1d/Conv2d (PEFT's DoraConv2dLayer rounds B A, s * B A, the sum and the
  norm to 16 bits while the adapter still has the base's dtype): refused;
* ``modules_to_save`` naming a module the model does not have (PEFT skips it without a word): refused;
* ``get_peft_model`` twice on one base model with the same adapter name: PEFT's second tuner shares the
  first's ``peft_config`` dict (left on the base model) and replaces the adapter in the layers, so both
  PeftModels run the new one; minilora warned as PEFT, then refused;

Skipped when torch / peft / transformers are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

from test_peft_custom_r6 import INPUTS, cnn, mlp, pair, run_both  # noqa: E402
from test_peft_offpath_r10 import assert_same_states, outputs, pair16, seeded  # noqa: E402


# ==================================================================================================
# PEFT: DoRA on a 16-bit convolution
# ==================================================================================================
@pytest.mark.parametrize("autocast", [True, False])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dora_on_a_16_bit_conv_bit_for_bit_as_peft(dtype, autocast):
    """Before: NotImplementedError. The magnitudes, the forward (float32 or 16-bit adapters), the merged and
    the unmerged weights are PEFT's bit for bit."""
    config = dict(r=2, target_modules=["conv1", "conv2", "temporal"], use_dora=True, init_lora_weights=False)
    theirs, ours = seeded(*pair16(cnn, dtype), config, autocast_adapter_dtype=autocast)
    assert_same_states(theirs, ours)
    x = INPUTS[cnn](np.random.default_rng(1)).astype(np.float32)
    np.testing.assert_array_equal(*outputs(theirs, ours, x, dtype))
    for step in ("merge_adapter", "unmerge_adapter"):
        with torch.no_grad():
            getattr(theirs, step)()
        getattr(ours, step)()
        assert_same_states(theirs, ours)


# ==================================================================================================
# PEFT: modules_to_save naming nothing; get_peft_model twice on one base
# ==================================================================================================
def trainable_shapes(model):
    return [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]


def test_modules_to_save_naming_no_module_is_skipped_as_peft(tmp_path):
    """Before: ValueError("modules_to_save entry 'lm_head' matches no module of the model") (a config shared
    with a model that has no such head)."""
    config = dict(r=2, target_modules=["seq.0"], modules_to_save=["lm_head", "seq.4"], init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT says nothing about it
        theirs, ours = seeded(*pair(mlp), config)
    assert trainable_shapes(ours) == trainable_shapes(theirs)
    assert ours.modules_to_save == theirs.modules_to_save == {"lm_head", "seq.4"}
    assert_same_states(theirs, ours)
    ours.save_pretrained(str(tmp_path))
    loaded = peft.PeftModel.from_pretrained(pair(mlp)[0], str(tmp_path))  # PEFT reads minilora's folder
    x = INPUTS[mlp](np.random.default_rng(2))
    np.testing.assert_allclose(*run_both(loaded, ours, x), rtol=0, atol=1e-13)  # (float64: one fused op here)


def test_get_peft_model_twice_replaces_the_adapter_in_both_models_as_peft():
    """Before: the warning, then ValueError("this model already has an adapter named 'default' ...")."""
    bases = pair(mlp)
    first = dict(r=2, target_modules=["seq.0"], init_lora_weights=False)
    second = dict(r=3, target_modules=["seq.0", "seq.2"], init_lora_weights=False)
    models, messages = [], []
    for library, lib_peft, base in ((torch, peft, bases[0]), (ml, ml_peft, bases[1])):
        library.manual_seed(1)
        one = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**first))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            two = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**second))
        models.append((one, two))
        messages.append([str(w.message) for w in caught])
    assert messages[1] == messages[0] and len(messages[0]) == 2
    (t1, t2), (m1, m2) = models
    for theirs, ours in ((t1, m1), (t2, m2)):
        assert trainable_shapes(ours) == trainable_shapes(theirs)
        assert {k: v.r for k, v in ours.peft_config.items()} == {k: v.r for k, v in theirs.peft_config.items()} \
            == {"default": 3}
        assert_same_states(theirs, ours)
        np.testing.assert_allclose(*run_both(theirs, ours, INPUTS[mlp](np.random.default_rng(3))), rtol=0, atol=1e-13)
    assert m1.peft_config is m2.peft_config and bases[1].peft_config is m1.peft_config  # where PEFT keeps it
    t2.unload(), m2.unload()
    assert not hasattr(bases[0], "peft_config") and not hasattr(bases[1], "peft_config")  # PEFT drops it there
