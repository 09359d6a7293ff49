"""Shared fixtures: every device-aware test runs on cpu, emu and cuda (skipped when not enabled)."""
import os

import numpy as np
import pytest

import minilora as ml
from minilora.device import all_devices

os.environ.setdefault("MINILORA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache"))


def _device_params():
    params = []
    for dev in all_devices():
        marks = [pytest.mark.skipif(not dev.enabled(), reason=f"{dev.name}: {dev.why_disabled}")]
        params.append(pytest.param(dev.name, marks=marks, id=dev.name))
    return params


DEVICES = _device_params()


@pytest.fixture(params=DEVICES)
def device(request):
    """The name of an enabled device: 'cpu', 'emu' or 'cuda'."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed():
    ml.manual_seed(0)
