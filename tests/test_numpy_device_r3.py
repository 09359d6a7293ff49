"""``Tensor.numpy()`` across devices, as torch's: on a GPU tensor it refuses (TypeError, torch's words)
instead of copying behind the user's back; ``numpy(force=True)`` is the explicit copy; on the CPU the
array shares the tensor's memory. ``cuda`` runs on the CuPy stand-in (tests/fake_cupy.py)."""
import numpy as np
import pytest
import torch

import fake_cupy
import minilora as ml


@pytest.fixture
def cuda(monkeypatch):
    return fake_cupy.install(monkeypatch)


def torch_message_for_cuda():
    """torch's words, from torch's own device-type check (a ``meta`` tensor stands in for a GPU here)."""
    with pytest.raises(TypeError) as caught:
        torch.ones(3, device="meta").numpy()
    return str(caught.value).replace("meta", "cuda:0")


def test_numpy_on_cuda_raises_type_error_with_torchs_words(cuda):
    t = ml.ones(3, device="cuda")
    with pytest.raises(TypeError) as caught:
        t.numpy()
    assert str(caught.value) == torch_message_for_cuda()


def test_numpy_force_true_copies_a_cuda_tensor_to_the_host(cuda):
    t = ml.tensor([1.0, 2.0, 3.0], device="cuda", requires_grad=True)
    for array in (t.numpy(force=True), t.detach().cpu().numpy()):
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, [1.0, 2.0, 3.0])


def test_numpy_on_cpu_shares_memory_as_torchs_does():
    ours, theirs = ml.zeros(3), torch.zeros(3)
    for t in (ours, theirs):
        t.numpy()[0] = 5.0
        t.numpy(force=True)[1] = 7.0  # (force=True copies only when it must: not on the CPU)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_numpy_on_emu_is_the_host_array():
    """``emu`` keeps NumPy arrays on the host (torch has no such device): nothing to copy, nothing refused."""
    t = ml.zeros(3, device="emu")
    t.numpy()[0] = 5.0
    assert t.tolist() == [5.0, 0.0, 0.0]
