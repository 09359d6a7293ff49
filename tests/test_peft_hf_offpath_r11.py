"""PEFT 0.21 and transformers 5 users' calls that round 10 left refused or answered differently, run once per
library on the same weights (torch's copied into minilora's, adapters drawn from the same seed):

* DoRA on a float16/bfloat16 Conv1d/Conv2d (PEFT's DoraConv2dLayer rounds B A, s * B A, the sum and the
  norm to 16 bits while the adapter still has the base's dtype): refused;

Skipped when torch / peft / transformers are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import minilora as ml  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402

from test_peft_custom_r6 import INPUTS, cnn  # noqa: E402
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
