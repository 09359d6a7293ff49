"""torch.set_printoptions: a tutorial's ``torch.set_printoptions(precision=2)`` (or sci_mode=False,
threshold, edgeitems, linewidth, a profile) changes how minilora prints, character for character
as torch; ``_tensor_str.get_printoptions`` / ``printoptions`` as torch's."""
import math

import numpy as np
import pytest

import minilora
from minilora import _tensor_str

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _default_options():
    yield
    torch.set_printoptions(profile="default")
    minilora.set_printoptions(profile="default")


def _values():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal((3, 4)) * 1e5, rng.standard_normal(3) * 1e-5,
              np.array([1.0, math.nan, math.inf]), np.arange(30.0), rng.standard_normal((50, 50)),
              rng.standard_normal(12), np.array([1e10, 1.0]), np.array([3.0, 4.0]), np.zeros(4),
              rng.standard_normal((4, 5, 6)), np.array([-0.0, 2.5])]
    return arrays


OPTIONS = [dict(precision=2), dict(sci_mode=True), dict(sci_mode=False), dict(threshold=5),
           dict(threshold=5, edgeitems=1), dict(threshold=5, edgeitems=0), dict(linewidth=30),
           dict(profile="short"), dict(profile="full"), dict(profile="full", precision=6), dict(precision=0),
           dict(profile="unknown"), dict(precision=8, sci_mode=True, linewidth=120)]


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_printing_under_options_is_torch_s(options):
    torch.set_printoptions(**options)
    minilora.set_printoptions(**options)
    assert _tensor_str.get_printoptions() == torch._tensor_str.get_printoptions()
    for array in _values():
        for dtype in ("float32", "float64", "bfloat16"):
            theirs = torch.tensor(array).to(getattr(torch, dtype))
            ours = minilora.tensor(array).to(getattr(minilora, dtype))
            assert repr(ours) == repr(theirs), (dtype, array.shape)
    ints = np.arange(-20, 20).reshape(5, 8)
    assert repr(minilora.tensor(ints)) == repr(torch.tensor(ints))


def test_sci_mode_is_reset_by_every_call_as_torch():
    """torch sets sci_mode on every call, to None when not given: the next call undoes an earlier True."""
    for lib in (torch, minilora):
        lib.set_printoptions(sci_mode=True)
        lib.set_printoptions(precision=3)
    assert _tensor_str.get_printoptions() == torch._tensor_str.get_printoptions()
    assert repr(minilora.tensor([1.5, 2.0])) == repr(torch.tensor([1.5, 2.0])) == "tensor([1.500, 2.000])"


def test_printoptions_context_restores_the_options():
    with _tensor_str.printoptions(precision=1, threshold=3), torch._tensor_str.printoptions(precision=1, threshold=3):
        assert repr(minilora.tensor([1.25, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])) == \
            repr(torch.tensor([1.25, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])) == "tensor([1.2, 2.0, 3.0,  ..., 5.0, 6.0, 7.0])"
    assert _tensor_str.get_printoptions()["precision"] == 4
    assert repr(minilora.tensor([1.25])) == "tensor([1.2500])"
