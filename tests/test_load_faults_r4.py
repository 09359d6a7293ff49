"""Loading adapters, models and checkpoints that are wrong, side by side with PEFT 0.21 / transformers 5 /
safetensors: every broken file is an error that names the file and the problem (of the type the ecosystem
raises), never a silent load with wrong numbers nor a NumPy/struct traceback. And a save interrupted
(an exception mid-write, SIGKILL) leaves the old adapter or model whole."""
import json
import os
import shutil
import signal
import struct
import sys
import warnings

import numpy as np
import pytest

import background_runs
import minilora as ml
from minilora import checkpoint
from minilora.checkpoint import CheckpointError
from minilora.lora import LoraConfig, PeftModel, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
st_numpy = pytest.importorskip("safetensors.numpy")
SafetensorError = pytest.importorskip("safetensors").SafetensorError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADAPTER, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"


def _config(hidden=16):
    return dict(vocab_size=32, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=32)


def _ml_base(hidden=16):
    ml.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**_config(hidden)))


def _hf_base(hidden=16):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**_config(hidden)))


def _save_adapter(folder, hidden=16):
    model = get_peft_model(_ml_base(hidden), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                       init_lora_weights=False))
    model.save_pretrained(folder)
    return model


@pytest.fixture
def adapter(tmp_path):
    folder = str(tmp_path / "adapter")
    _save_adapter(folder)
    return folder


def _loads_in_peft(folder):
    """PEFT's answer: None when it loads, else the exception."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft.PeftModel.from_pretrained(_hf_base(), folder)
    except Exception as exc:  # noqa: BLE001 -- the oracle's exception is what the test compares
        return exc
    return None


def _ml_load(folder):
    return PeftModel.from_pretrained(_ml_base(), folder)


def _rewrite_header(path, change):
    """Apply ``change(header)`` to a safetensors file's JSON header (the data bytes stay as they were)."""
    data = open(path, "rb").read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    change(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data[8 + length:])


def _first_tensor(header):
    return sorted(k for k in header if k != "__metadata__")[0]


def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


# --------------------------------------------------------------------------------------------------
# Adapter files
# --------------------------------------------------------------------------------------------------
def test_truncated_adapter_is_an_error_naming_the_file(adapter):
    _truncate(os.path.join(adapter, ADAPTER))
    assert isinstance(_loads_in_peft(adapter), SafetensorError)
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors: truncated"):
        _ml_load(adapter)


def _end_short(h):
    k = _first_tensor(h)
    h[k]["data_offsets"][1] -= 4


def _overlap(h):
    names = sorted((v["data_offsets"][0], k) for k, v in h.items() if k != "__metadata__")
    h[names[1][1]]["data_offsets"] = [v - 4 for v in h[names[1][1]]["data_offsets"]]


def _past_end(h):
    k = _first_tensor(h)
    h[k]["data_offsets"] = [v + 10 ** 6 for v in h[k]["data_offsets"]]


def _shape_lies(h):
    k = _first_tensor(h)
    h[k]["shape"] = [h[k]["shape"][0] * 2] + h[k]["shape"][1:]


def _negative(h):
    k = _first_tensor(h)
    h[k]["data_offsets"][0] = -8


def _not_numbers(h):
    k = _first_tensor(h)
    h[k]["data_offsets"] = ["0", "8"]


def _begin_after_end(h):
    k = _first_tensor(h)
    h[k]["data_offsets"] = h[k]["data_offsets"][::-1]


def _unknown_dtype(h):
    h[_first_tensor(h)]["dtype"] = "F7"


def _metadata_not_strings(h):
    h["__metadata__"] = {"format": 1}


LIES = {f.__name__.strip("_"): f for f in (_end_short, _overlap, _past_end, _shape_lies, _negative, _not_numbers,
                                           _begin_after_end, _unknown_dtype, _metadata_not_strings)}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_header_that_lies_is_refused_as_safetensors_refuses_it(adapter, lie):
    path = os.path.join(adapter, ADAPTER)
    _rewrite_header(path, LIES[lie])
    with pytest.raises(SafetensorError):  # the oracle: the safetensors library refuses the same file
        st_numpy.load_file(path)
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors: "):
        _ml_load(adapter)
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors: "):
        checkpoint.load_file(path)


def _save_resized(path, change):
    tensors = {k: change(k, v) for k, v in st_numpy.load_file(path).items()}
    st_numpy.save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("case", ["other rank", "other hidden size"])
def test_a_mis_sized_adapter_is_peft_s_size_mismatch_runtime_error(tmp_path, adapter, case):
    if case == "other rank":
        _save_resized(os.path.join(adapter, ADAPTER),
                      lambda k, v: np.ascontiguousarray(v[:2] if "lora_A" in k else v[:, :2]))
    else:
        adapter = str(tmp_path / "wide")
        _save_adapter(adapter, hidden=32)
    oracle = _loads_in_peft(adapter)
    assert isinstance(oracle, RuntimeError) and "size mismatch for" in str(oracle)
    with pytest.raises(RuntimeError, match=r"size mismatch for .*lora_A\.default\.weight: copying a param with "
                                           r"shape torch\.Size\(\[\d+, \d+\]\) from checkpoint, the shape "
                                           r"in current model is torch\.Size\(\[4, 16\]\)") as caught:
        _ml_load(adapter)
    assert "adapter_model.safetensors" in caught.value.__notes__[0]  # (which file: minilora's note)


@pytest.mark.parametrize("fault", ["truncated", "other rank", "no config"])
def test_load_adapter_of_a_broken_adapter_leaves_the_model_as_it_was(adapter, fault):
    path = os.path.join(adapter, ADAPTER)
    if fault == "truncated":
        _truncate(path)
    elif fault == "other rank":
        _save_resized(path, lambda k, v: np.ascontiguousarray(v[:2] if "lora_A" in k else v[:, :2]))
    else:
        os.remove(os.path.join(adapter, ADAPTER_CONFIG))
    model = _ml_peft_model()
    names = sorted(model.state_dict())
    with pytest.raises((CheckpointError, RuntimeError, ValueError)):
        model.load_adapter(adapter, "other")
    assert list(model.peft_config) == ["default"] and sorted(model.state_dict()) == names


def test_a_mis_sized_adapter_leaves_the_base_model_as_it_was(adapter):
    _save_resized(os.path.join(adapter, ADAPTER),
                  lambda k, v: np.ascontiguousarray(v[:2] if "lora_A" in k else v[:, :2]))
    base = _ml_base()
    before = {k: v.numpy().copy() for k, v in base.state_dict().items()}
    with pytest.raises(RuntimeError):
        PeftModel.from_pretrained(base, adapter)
    assert set(base.state_dict()) == set(before)
    assert all(np.array_equal(base.state_dict()[k].numpy(), v) for k, v in before.items())


def test_keys_that_match_no_module_are_refused(adapter):
    """PEFT 0.21 drops such keys without a word (the adapter then is not the one that was trained);
    minilora refuses, naming the key."""
    path = os.path.join(adapter, ADAPTER)
    extra = "base_model.model.model.layers.0.mlp.nope.lora_A.weight"
    _save_resized(path, lambda k, v: v)
    tensors = st_numpy.load_file(path) | {extra: np.zeros((4, 16), np.float32)}
    st_numpy.save_file(tensors, path, metadata={"format": "pt"})
    assert _loads_in_peft(adapter) is None  # the oracle loads it, silently
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors has weights for '.*mlp\.nope\.lora_A"):
        _ml_load(adapter)


def test_a_missing_adapter_tensor_is_refused(adapter):
    """PEFT 0.21 warns "Found missing adapter keys" and loads (lora_B keeps its initial value: not the
    trained adapter); minilora refuses, naming the tensor."""
    path = os.path.join(adapter, ADAPTER)
    tensors = {k: v for k, v in st_numpy.load_file(path).items() if "v_proj.lora_B" not in k}
    st_numpy.save_file(tensors, path, metadata={"format": "pt"})
    assert _loads_in_peft(adapter) is None
    with pytest.raises(ValueError, match=r"has no tensor '.*v_proj\.lora_B\.weight'"):
        _ml_load(adapter)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_an_adapter_saved_in_another_dtype_loads_the_values_peft_loads(adapter, dtype):
    path = os.path.join(adapter, ADAPTER)
    from safetensors.torch import load_file, save_file
    save_file({k: v.to(getattr(torch, dtype)) for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = peft.PeftModel.from_pretrained(_hf_base(), adapter)
    model = _ml_load(adapter)
    for name in ("q_proj", "v_proj"):
        for part in ("lora_A", "lora_B"):
            expected = getattr(getattr(oracle.base_model.model.model.layers[0].self_attn, name), part)["default"]
            got = getattr(getattr(model.get_base_model().model.layers[0].self_attn, name), part)["default"]
            assert str(got.weight.dtype) == str(expected.weight.dtype).replace("torch.", "")
            np.testing.assert_array_equal(got.weight.numpy(), expected.weight.detach().numpy())


def test_an_unknown_config_field_is_ignored_with_a_warning_as_peft(adapter):
    path = os.path.join(adapter, ADAPTER_CONFIG)
    config = json.load(open(path)) | {"some_future_field": 3}
    json.dump(config, open(path, "w"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        peft.PeftModel.from_pretrained(_hf_base(), adapter)
    assert any("some_future_field" in str(w.message) for w in seen)
    with pytest.warns(UserWarning, match="some_future_field"):
        model = _ml_load(adapter)
    saved = st_numpy.load_file(os.path.join(adapter, ADAPTER))
    loaded = model.get_base_model().model.layers[0].self_attn.q_proj.lora_A["default"].weight.numpy()
    assert np.array_equal(loaded, saved["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"])


def test_a_missing_adapter_config_is_peft_s_value_error(adapter):
    """PEFT: ``ValueError: Can't find 'adapter_config.json' at '<folder>'`` (after asking the Hub, which is
    why the oracle is not called here). minilora's error is a ValueError too (and a FileNotFoundError)."""
    os.remove(os.path.join(adapter, ADAPTER_CONFIG))
    for load in (_ml_load, lambda folder: _ml_peft_model().load_adapter(folder, "other")):
        with pytest.raises(ValueError, match=r"Can't find 'adapter_config\.json' at '.*adapter'") as info:
            load(adapter)
        assert isinstance(info.value, FileNotFoundError)


def _ml_peft_model():
    return get_peft_model(_ml_base(), LoraConfig(r=4, target_modules=["q_proj"]))


def test_a_folder_with_only_a_torch_saved_adapter_loads_as_in_peft(adapter):
    """PEFT loads ``adapter_model.bin`` with torch.load; minilora reads torch's format without unpickling
    (tests/test_torch_files_r13.py)."""
    tensors = st_numpy.load_file(os.path.join(adapter, ADAPTER))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, os.path.join(adapter, "adapter_model.bin"))
    os.remove(os.path.join(adapter, ADAPTER))
    assert _loads_in_peft(adapter) is None
    loaded = _ml_load(adapter).state_dict()
    for name, value in tensors.items():
        found = [v for k, v in loaded.items() if k.replace(".default", "") == name]
        assert found and np.array_equal(found[0].numpy(), value), name


@pytest.mark.parametrize("peft_type", ["PREFIX_TUNING", "IA3", "P_TUNING", "BOFT", "NOT_A_METHOD"])
def test_another_method_s_adapter_is_refused_by_name(adapter, peft_type):
    path = os.path.join(adapter, ADAPTER_CONFIG)
    json.dump(json.load(open(path)) | {"peft_type": peft_type}, open(path, "w"))
    for load in (_ml_load, lambda folder: _ml_peft_model().load_adapter(folder, "other")):
        with pytest.raises(NotImplementedError, match=f"adapter type '{peft_type}' is not supported by minilora"):
            load(adapter)


# --------------------------------------------------------------------------------------------------
# Full models
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("hf") / "model")
    _hf_base().save_pretrained(folder)
    return folder


def _copy(source, tmp_path, name="copy"):
    target = str(tmp_path / name)
    shutil.copytree(source, target)
    return target


def _hf_error(folder, **kwargs):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformers.LlamaForCausalLM.from_pretrained(folder, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_a_truncated_model_file_is_an_error_naming_it(hf_model_dir, tmp_path):
    folder = _copy(hf_model_dir, tmp_path)
    _truncate(os.path.join(folder, "model.safetensors"))
    assert isinstance(_hf_error(folder), SafetensorError)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated"):
        LlamaForCausalLM.from_pretrained(folder)


def test_a_missing_shard_is_transformers_file_not_found_error(tmp_path):
    folder = str(tmp_path / "sharded")
    _hf_base().save_pretrained(folder, max_shard_size="3KB")
    shards = sorted(name for name in os.listdir(folder) if name.startswith("model-"))
    assert len(shards) > 1
    os.remove(os.path.join(folder, shards[-1]))
    assert isinstance(_hf_error(folder), FileNotFoundError)
    with pytest.raises(FileNotFoundError, match=f"lists shard '{shards[-1]}', but .* does not exist") as info:
        LlamaForCausalLM.from_pretrained(folder)
    assert isinstance(info.value, CheckpointError)  # minilora's own type, as before


def test_a_config_with_another_hidden_size_is_a_runtime_error(hf_model_dir, tmp_path):
    folder = _copy(hf_model_dir, tmp_path)
    path = os.path.join(folder, "config.json")
    json.dump(json.load(open(path)) | {"hidden_size": 32, "head_dim": 16}, open(path, "w"))
    assert isinstance(_hf_error(folder), RuntimeError)
    with pytest.raises(RuntimeError, match=r"size mismatch for model\.embed_tokens\.weight: copying a param with "
                                           r"shape minilora\.Size\(\[32, 16\]\) from checkpoint, the shape in "
                                           r"current model is minilora\.Size\(\[32, 32\]\)"):
        LlamaForCausalLM.from_pretrained(folder)


def test_a_config_that_is_not_json_is_transformers_os_error(hf_model_dir, tmp_path):
    folder = _copy(hf_model_dir, tmp_path)
    path = os.path.join(folder, "config.json")
    text = open(path).read()
    open(path, "w").write(text[:len(text) // 2])
    assert isinstance(_hf_error(folder), OSError)
    with pytest.raises(OSError, match=r"config\.json: not valid JSON") as info:
        LlamaForCausalLM.from_pretrained(folder)
    assert isinstance(info.value, CheckpointError)  # and a ValueError, as minilora's error was


@pytest.mark.parametrize("field", ["dtype", "torch_dtype"])
def test_a_config_dtype_that_is_no_dtype_names_the_file(hf_model_dir, tmp_path, field):
    """transformers: ``AttributeError: module 'torch' has no attribute 'float17'``; minilora's TypeError
    names config.json."""
    folder = _copy(hf_model_dir, tmp_path)
    path = os.path.join(folder, "config.json")
    config = json.load(open(path))
    config.pop("dtype", None)
    json.dump(config | {field: "float17"}, open(path, "w"))
    assert _hf_error(folder) is not None
    with pytest.raises(TypeError, match=r"config\.json: its dtype 'float17' is not a dtype"):
        LlamaForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def hf_sharded_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("hf") / "sharded")
    _hf_base().save_pretrained(folder, max_shard_size="3KB")
    return folder


def test_a_truncated_shard_is_an_error_naming_it(hf_sharded_dir, tmp_path):
    folder = _copy(hf_sharded_dir, tmp_path)
    shard = sorted(name for name in os.listdir(folder) if name.startswith("model-"))[0]
    _truncate(os.path.join(folder, shard))
    assert isinstance(_hf_error(folder), SafetensorError)
    with pytest.raises(CheckpointError, match=f"{shard}: truncated"):
        LlamaForCausalLM.from_pretrained(folder)


def test_an_index_naming_a_tensor_in_no_shard_is_refused(hf_sharded_dir, tmp_path):
    """transformers loads such a folder without a word; the index then does not describe the files."""
    folder = _copy(hf_sharded_dir, tmp_path)
    path = os.path.join(folder, "model.safetensors.index.json")
    index = json.load(open(path))
    index["weight_map"]["model.extra.weight"] = index["weight_map"]["lm_head.weight"]
    json.dump(index, open(path, "w"))
    assert _hf_error(folder) is None
    with pytest.raises(CheckpointError, match="listed in the index are in no shard: model.extra.weight"):
        LlamaForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("config_dtype", ["float32", "bfloat16", "float16", None])
@pytest.mark.parametrize("file_dtype", ["float32", "float16"])
@pytest.mark.parametrize("kwargs", [{}, {"dtype": "auto"}, {"dtype": "float32"}, {"torch_dtype": "auto"}])
def test_loaded_dtype_follows_transformers(hf_model_dir, tmp_path, config_dtype, file_dtype, kwargs):
    """config.json's dtype and the file's dtype disagreeing: every tensor has transformers' dtype."""
    folder = _copy(hf_model_dir, tmp_path)
    path = os.path.join(folder, "config.json")
    config = json.load(open(path))
    config.pop("dtype", None)
    json.dump(config | ({"dtype": config_dtype} if config_dtype else {}), open(path, "w"))
    weights = os.path.join(folder, "model.safetensors")
    st_numpy.save_file({k: v.astype(file_dtype) for k, v in st_numpy.load_file(weights).items()}, weights,
                       metadata={"format": "pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.LlamaForCausalLM.from_pretrained(folder, **kwargs).state_dict()
        got = LlamaForCausalLM.from_pretrained(folder, **kwargs).state_dict()
    assert {k: str(v.dtype).replace("torch.", "") for k, v in expected.items()} == \
        {k: str(v.dtype) for k, v in got.items()}
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name].float().numpy(), value.float().numpy())


# --------------------------------------------------------------------------------------------------
# minilora.load
# --------------------------------------------------------------------------------------------------
def _good_file(path):
    st_numpy.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    return open(path, "rb").read()


@pytest.mark.parametrize("kind", ["truncated", "zeros", "empty", "seven bytes", "torch .pt zip", "legacy pickle"])
def test_ml_load_of_a_broken_file_names_it(tmp_path, kind):
    path = str(tmp_path / "w.safetensors")
    data = _good_file(path)
    if kind in ("torch .pt zip", "legacy pickle"):  # torch.save's formats, whatever the name: read as torch.load
        torch.save({"a": torch.ones(2)}, path, _use_new_zipfile_serialization=kind == "torch .pt zip")
        assert ml.load(path)["a"].tolist() == [1.0, 1.0]
        return
    body = {"truncated": data[:len(data) // 2], "zeros": bytes(len(data)), "empty": b"",
            "seven bytes": data[:7]}[kind]
    open(path, "wb").write(body)
    with pytest.raises(SafetensorError):
        st_numpy.load_file(path)
    with pytest.raises(CheckpointError, match=f"{path}"):
        ml.load(path)


# --------------------------------------------------------------------------------------------------
# Interrupted saves
# --------------------------------------------------------------------------------------------------
def _snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


class _Interrupted(Exception):
    pass


def _fail_on_second_tensor(monkeypatch):
    """Make the weights writer raise after it produced one tensor's bytes: mid-write."""
    real, calls = checkpoint._little_endian_bytes, []

    def failing(array):
        calls.append(1)
        if len(calls) == 2:
            raise _Interrupted("disk full")
        return real(array)
    monkeypatch.setattr(checkpoint, "_little_endian_bytes", failing)


def _change_weights(model):
    for p in model.parameters():
        p.data = p.data + 1


def test_an_exception_mid_save_leaves_the_old_adapter_whole(tmp_path, monkeypatch):
    folder = str(tmp_path / "adapter")
    model = _save_adapter(folder)
    before = _snapshot(folder)
    _change_weights(model)
    _fail_on_second_tensor(monkeypatch)
    with pytest.raises(_Interrupted):
        model.save_pretrained(folder)
    assert _snapshot(folder) == before
    assert os.listdir(tmp_path) == ["adapter"]  # no temporary folder left behind


def test_an_exception_mid_save_leaves_the_old_model_whole(tmp_path, monkeypatch):
    folder = str(tmp_path / "model")
    model = _ml_base()
    model.save_pretrained(folder)
    before = _snapshot(folder)
    _change_weights(model)
    _fail_on_second_tensor(monkeypatch)
    with pytest.raises(_Interrupted):
        model.save_pretrained(folder)
    assert _snapshot(folder) == before
    assert os.listdir(tmp_path) == ["model"]


KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, {root!r})
import minilora as ml
from minilora import checkpoint
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=2, max_position_embeddings=32)
model = LlamaForCausalLM(config)
if {adapter!r}:
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
real, calls = checkpoint._little_endian_bytes, []
def killed(array):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(array)
checkpoint._little_endian_bytes = killed
model.save_pretrained({folder!r})
"""


@pytest.mark.parametrize("what", ["adapter", "model"])
def test_sigkill_mid_save_leaves_the_old_files_whole(tmp_path, what):
    folder = str(tmp_path / what)
    if what == "adapter":
        _save_adapter(folder)
    else:
        _ml_base().save_pretrained(folder)
    before = _snapshot(folder)
    code = KILLED_SAVE.format(root=ROOT, adapter=what == "adapter", folder=folder)
    done = background_runs.run_process([sys.executable, "-c", code], timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert _snapshot(folder) == before
    loaded = _ml_load(folder) if what == "adapter" else LlamaForCausalLM.from_pretrained(folder)
    assert loaded is not None
    # the killed save's temporary folder is removed by the next save into the same place
    assert len(os.listdir(tmp_path)) == 2
    checkpoint.remove_leftovers(folder)
    assert os.listdir(tmp_path) == [what]
