"""Faults, round 23: a save inside a folder another process swaps, names torch refuses, and saves that were not one unit.

A save into a subfolder (``peft_model.save_pretrained("out/adapter")``) and a save of the folder around it
(``model.save_pretrained("out")``) from two processes took two different locks (each folder's own), so nothing
ordered them: the swap of ``out`` linked the old ``out/adapter`` beside the new model, and an adapter saved in the
meantime was replaced by its old version when ``out`` was swapped in; a subfolder save still writing its temporary
folder inside ``out`` lost it with the old ``out``. Now a save holds the shared lock of each folder it writes inside
from its start to its end, the lock a swap of that folder holds exclusively: the two take turns, and both are kept.
"""
import os
import re
import signal
import threading
import zipfile

import numpy as np
import pytest

import minilora as ml
from minilora import checkpoint
from minilora.lora import LoraConfig, PeftModel, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM

from test_faults_r22 import _forked, needs_fork


def _tiny_llama(seed):
    ml.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16))


def _adapter(seed):
    peft_model = get_peft_model(_tiny_llama(0), LoraConfig(r=2, target_modules=["q_proj"]))
    rng = np.random.default_rng(seed)
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name:
            parameter.data = ml.tensor(rng.standard_normal(parameter.shape).astype(np.float32))
    return peft_model


def _weights(state):
    return {k: v.numpy().copy() for k, v in state.items()}


def _same(expected, folder, load):
    got = _weights(load(folder))
    return expected.keys() <= got.keys() and all(np.array_equal(got[k], v) for k, v in expected.items())


def _model_state(folder):
    return LlamaForCausalLM.from_pretrained(folder).state_dict()


def _adapter_state(folder):
    loaded = PeftModel.from_pretrained(_tiny_llama(0), folder)
    return {k: v for k, v in loaded.state_dict().items() if "lora_" in k}


def _lora(peft_model):
    return _weights({k: v for k, v in peft_model.state_dict().items() if "lora_" in k})


def _pause_at(name, wait):
    """Make ``checkpoint.<name>`` call ``wait()`` first (in the forked child only)."""
    original = getattr(checkpoint, name)
    setattr(checkpoint, name, lambda *args, **kwargs: (wait(), original(*args, **kwargs))[1])


@needs_fork
def test_a_subfolder_saved_while_another_process_swaps_its_folder_keeps_both_saves(tmp_path):
    folder, subfolder = str(tmp_path / "out"), str(tmp_path / "out" / "adapter")
    _tiny_llama(0).save_pretrained(folder)
    _adapter(0).save_pretrained(subfolder)
    new_model, new_adapter = _tiny_llama(1), _adapter(1)

    def save_the_model_pausing_before_its_swap(wait):  # (the old adapter is linked beside the new model by then)
        _pause_at("_swap_in", wait)
        new_model.save_pretrained(folder)
    reached, go, finish = _forked(save_the_model_pausing_before_its_swap)
    assert reached()
    adapter_save = threading.Thread(target=new_adapter.save_pretrained, args=(subfolder,))
    adapter_save.start()
    adapter_save.join(0.3)  # (before: done by now, and undone by the model's swap)
    go()
    assert finish() == 0
    adapter_save.join()
    assert _same(_weights(new_model.state_dict()), folder, _model_state)
    assert _same(_lora(new_adapter), subfolder, _adapter_state)  # (before: the old adapter)


@needs_fork
def test_a_folder_swapped_while_another_process_saves_inside_it_waits_for_that_save(tmp_path):
    folder, subfolder = str(tmp_path / "out"), str(tmp_path / "out" / "adapter")
    _tiny_llama(0).save_pretrained(folder)
    new_model, new_adapter = _tiny_llama(1), _adapter(1)

    def save_the_adapter_pausing_before_its_swap(wait):  # (its temporary folder is inside "out", written)
        _pause_at("_publishing", wait)
        new_adapter.save_pretrained(subfolder)
    reached, go, finish = _forked(save_the_adapter_pausing_before_its_swap)
    assert reached()
    model_save = threading.Thread(target=new_model.save_pretrained, args=(folder,))
    model_save.start()
    model_save.join(0.3)  # (before: "out" swapped by now, the adapter's temporary folder gone with the old one)
    go()
    assert finish() == 0  # (before: FileNotFoundError in the adapter's save)
    model_save.join()
    assert _same(_weights(new_model.state_dict()), folder, _model_state)
    assert _same(_lora(new_adapter), subfolder, _adapter_state)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # (no lock file left beside it)
    assert sorted(os.listdir(folder)) == sorted(set(os.listdir(folder)) - {".adapter.minilora-lock"})


def _adapter_with_alpha(seed, alpha):
    peft_model = get_peft_model(_tiny_llama(0), LoraConfig(r=2, lora_alpha=alpha, target_modules=["q_proj"]))
    rng = np.random.default_rng(seed)
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name:
            parameter.data = ml.tensor(rng.standard_normal(parameter.shape).astype(np.float32))
    return peft_model


def _loaded_while_saved_over(monkeypatch, folder, new, load):
    """``load()``, with ``new.save_pretrained(folder)`` started in a thread after the adapter's config was read."""
    from minilora.lora import save as adapter_io
    load_weights, saves = adapter_io.load_adapter_weights, []

    def saved_over_first(*args, **kwargs):
        saves.append(threading.Thread(target=new.save_pretrained, args=(folder,), kwargs={"overwrite": True}))
        saves[-1].start()
        saves[-1].join(0.3)  # (before: swapped in by now)
        return load_weights(*args, **kwargs)
    monkeypatch.setattr(adapter_io, "load_adapter_weights", saved_over_first)
    try:
        return load()
    finally:
        monkeypatch.setattr(adapter_io, "load_adapter_weights", load_weights)
        for save in saves:
            save.join()


def test_an_adapter_loaded_while_another_save_swaps_its_folder_is_one_save_s_config_and_weights(tmp_path,
                                                                                                monkeypatch):
    """A server loading an adapter (``PeftModel.from_pretrained``, ``load_adapter``) that training saves meanwhile
    read adapter_config.json, then the weights: a swap between the two gave the old lora_alpha with the new
    weights, silently. The load now holds the folder's shared lock (``checkpoint.one_version_of``)."""
    folder = str(tmp_path / "adapter")
    old, new = _adapter_with_alpha(0, 4), _adapter_with_alpha(1, 16)
    old.save_pretrained(folder)
    loaded = _loaded_while_saved_over(monkeypatch, folder, new, lambda: PeftModel.from_pretrained(_tiny_llama(0),
                                                                                                  folder))
    assert loaded.peft_config["default"].lora_alpha == 4
    assert _same(_lora(old), None, lambda _: loaded.state_dict())  # (before: the second save's weights)
    old.save_pretrained(folder, overwrite=True)
    served = get_peft_model(_tiny_llama(0), LoraConfig(r=2, target_modules=["q_proj"]))
    _loaded_while_saved_over(monkeypatch, folder, new, lambda: served.load_adapter(folder, adapter_name="served"))
    assert served.peft_config["served"].lora_alpha == 4
    got = {k.replace(".served.", ".default."): v for k, v in _lora(served).items() if ".served." in k}
    assert got.keys() == _lora(old).keys() and all(np.array_equal(v, _lora(old)[k]) for k, v in got.items())
    assert _same(_lora(new), folder, _adapter_state)  # (and the second save is done, whole)


def test_a_model_loaded_while_another_save_swaps_its_folder_is_one_save_s_config_and_weights(tmp_path, monkeypatch):
    """``from_pretrained`` read config.json, then the weights: a swap between gave one save's config (its
    rms_norm_eps) with the other's weights, silently. It now reads the folder's files under its shared lock."""
    from minilora.nn import llama
    folder = str(tmp_path / "model")
    old = _tiny_llama(0)
    old.save_pretrained(folder)
    ml.manual_seed(1)
    new = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, max_position_embeddings=16, rms_norm_eps=1e-3))
    fits, saves = llama._check_checkpoint_fits, []

    def saved_over_first(*args, **kwargs):  # (config.json is read by now)
        saves.append(threading.Thread(target=new.save_pretrained, args=(folder,)))
        saves[-1].start()
        saves[-1].join(0.3)  # (before: swapped in by now)
        return fits(*args, **kwargs)
    monkeypatch.setattr(llama, "_check_checkpoint_fits", saved_over_first)
    try:
        loaded = LlamaForCausalLM.from_pretrained(folder)
    finally:
        saves[-1].join()
    assert loaded.config.rms_norm_eps == old.config.rms_norm_eps != new.config.rms_norm_eps
    assert _same(_weights(old.state_dict()), None, lambda _: loaded.state_dict())  # (before: the second's)


# ==================================================================================================
# A file name torch.save cannot name its archive after
# ==================================================================================================
# What torch 2.13's torch.save does with each name: the folder its archive's records are in, or None: refused with
# RuntimeError("[enforce fail at inline_container.cc:720] . invalid file name: <path>"), nothing written. (A table, not
# torch itself: importing torch costs this file seconds.)
TORCHS_ARCHIVE = {".pt": None, ".hidden": None, "dir/.x": None, "dir/": None, ".hidden.pt": ".hidden", "..pt": ".",
                  "...": "..", "x.": "x", "a..pt": "a.", "dir/.x.pt": ".x", ".a.b": ".a", ".é": "archive"}


def test_a_name_with_nothing_before_its_last_dot_is_refused_as_torch_save_refuses_it(tmp_path):
    """torch.save names the folder inside its zip after the file's name without its last extension; ``.pt``,
    ``.hidden``, ``dir/.x`` leave no name and torch raises, writing nothing. minilora wrote an ``archive/``."""
    os.makedirs(tmp_path / "dir")
    for name, archive in TORCHS_ARCHIVE.items():
        path = os.path.join(str(tmp_path), name)
        if archive is None:
            with pytest.raises(RuntimeError, match=f"^invalid file name: {re.escape(path)} "):
                ml.save({"w": ml.ones(2)}, path)  # (before: saved, its records in "archive/")
            assert not os.path.isfile(path)
        else:
            ml.save({"w": ml.ones(2)}, path)
            assert zipfile.ZipFile(path).namelist()[0] == f"{archive}/data.pkl", name


# ==================================================================================================
# Tests that failed on a loaded machine without being stuck
# ==================================================================================================
def test_a_test_waiting_for_its_background_run_stops_its_own_timeout_meanwhile():
    """A test taking a run of tests/background_runs.py (an exercise check, a race check under the sanitizer) waited
    for it on its own 300 s clock (pytest-timeout's SIGALRM timer): the helper thread may have started that run
    minutes before, and at load 17 the stub test [1.2] and a bf16 race-check test ran out of time without being
    stuck. The timer now stops for the wait and goes on after it; the run has its own limit, from its start."""
    from background_runs import BackgroundRuns
    seen = []

    class Runs(BackgroundRuns):
        def _call(self, module_name, function_name, args):  # (the run: what the test's timer shows meanwhile)
            seen.append(signal.getitimer(signal.ITIMER_REAL)[0])
            return "done"
    runs = Runs()
    runs._helper = threading.current_thread()  # (no helper thread: the test takes the run itself)
    runs.submit("key", "module", "function")
    handler = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the test's timeout ran out"))
    previous = signal.setitimer(signal.ITIMER_REAL, 1000)  # (pytest-timeout's, set for this test)
    try:
        assert runs.result("key") == "done"
        left = signal.getitimer(signal.ITIMER_REAL)[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, handler)
        if previous[0]:
            signal.setitimer(signal.ITIMER_REAL, *previous)
    assert seen == [0.0]  # (before: ~1000, counting down through the run)
    assert 900 < left <= 1000  # (and running again after it)
