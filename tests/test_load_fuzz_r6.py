"""A seeded fuzzer over every file minilora reads: each corrupted file ends in a clear error that names the
file, or loads the SAME values as the intact one (the mutation touched bytes nobody reads) -- never other
values in silence, a raw KeyError/IndexError/struct.error from deep inside, a crash or a hang.

Formats: model.safetensors + config.json + generation_config.json (``LlamaForCausalLM.from_pretrained``), a
sharded checkpoint's index json and shards, adapter_model.safetensors + adapter_config.json
(``PeftModel.from_pretrained``), tokenizer.json + tokenizer_config.json (``tokenizer.from_pretrained``),
``minilora.save``/``load`` files (a state dict, a nested tutorial checkpoint holding an optimizer's and a
scheduler's state dicts) and ``train()``'s checkpoint.npz (``load_training_state``, and ``train(resume=...)``
itself: its arrays and the JSON tree that places them edited too).

Mutations: truncation at random offsets, bit flips in the header and in the data, safetensors header edits
(another dtype of the same or another width, another shape of the same byte count, offsets overlapping / out
of range / reordered, a duplicate key, an extra or a missing tensor, ``__metadata__`` of the wrong type),
JSON edits (a field's type, negative / zero sizes, a missing field, an unknown field, null), and the file
replaced by a folder, an empty file, a symlink loop, non-UTF-8 text, or made unreadable (skipped as root).

A bit flip in a safetensors file's DATA bytes changes the values undetectably, in every ecosystem: the format
has no checksum (safetensors, transformers and PEFT load the flipped value as minilora does). Those cases are
generated to check nothing crashes, and are not required to keep the values. So is a header that stays
consistent while it lies (two tensors' offsets swapped, another dtype of the same width, another shape of the
same size where nothing knows the right one): the safetensors library loads it too, and ``_verdict`` asks it
(ECOSYSTEM_SILENT counts them). Where a model or an adapter does know, minilora refuses: an integer dtype
where a floating-point weight goes, a shape the config does not give, two entries of one name. Where the
intact value differs only because a JSON field took another *valid* value (rms_norm_eps 1e-6 -> 1e-5) the
file really says so.

``MINILORA_FUZZ_SEEDS=N`` runs N seeds per format (default 12: about 140 cases each, a few seconds) for
longer hunts; REGRESSIONS below are the minimized cases earlier hunts found, each a silent or raw failure
before its fix.
"""
import json
import os
import random
import shutil
import signal
import struct
import warnings

import numpy as np
import pytest

import minilora as ml
from minilora.lora import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from minilora.models import LlamaConfig, LlamaForCausalLM

SEEDS = int(os.environ.get("MINILORA_FUZZ_SEEDS", "12"))
CASES_PER_SEED = 12

# What a user may see: an error of the ecosystem's kinds. A raw KeyError/IndexError/AttributeError/
# struct.error, or a json/Unicode decoding error that does not name the file, is a bug.
CLEAR_ERRORS = (OSError, ValueError, TypeError, RuntimeError, NotImplementedError)
RAW_ERRORS = (KeyError, IndexError, AttributeError, struct.error, ZeroDivisionError, RecursionError,
              OverflowError, UnicodeError, json.JSONDecodeError, AssertionError)


def _config(hidden=16):
    return dict(vocab_size=32, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=32)


def _base():
    ml.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**_config()))


# --------------------------------------------------------------------------------------------------
# The intact artifacts and how each is loaded and compared
# --------------------------------------------------------------------------------------------------
def _values(obj):
    """Everything a load gave back, as plain comparable data (arrays with their dtypes)."""
    if isinstance(obj, ml.Tensor):
        return ("tensor", str(obj.dtype), obj.numpy(force=True).copy(), bool(obj.requires_grad))
    if isinstance(obj, np.ndarray):
        return ("array", str(obj.dtype), obj.copy())
    if isinstance(obj, dict):
        return {"dict": [(k, _values(v)) for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [_values(v) for v in obj])
    return obj


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a.view(np.uint8) if a.dtype.kind == "V" else a,
                                                          b.view(np.uint8) if b.dtype.kind == "V" else b,
                                                          equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b


UNKNOWN_FIELD = "an_unknown_field"


def _load_model(folder):
    model = LlamaForCausalLM.from_pretrained(folder)
    config = {k: v for k, v in model.config.to_dict().items() if k != UNKNOWN_FIELD}  # kept, as transformers
    return {"state": _values(model.state_dict()), "config": config,
            "generation": model.generation_config.to_dict()}


def _load_adapter(folder):
    model = PeftModel.from_pretrained(_base(), folder)
    return {"state": _values(get_peft_model_state_dict(model)), "config": model.peft_config["default"].to_dict()}


def _load_tokenizer(folder):
    from minilora import tokenizer
    tok = tokenizer.from_pretrained(folder)
    return {"ids": tok.encode("hello world, hello"), "special": (tok.bos_token, tok.eos_token, tok.pad_token),
            "settings": [getattr(tok, key, None) for key in tokenizer.CONFIG_SETTINGS], "size": len(tok)}


def _load_saved(folder):
    return _values(ml.load(os.path.join(folder, "saved.safetensors")))


def _load_tutorial(folder):
    """A tutorial checkpoint holding the model's, an optimizer's and a scheduler's state dicts."""
    return _values(ml.load(os.path.join(folder, "tutorial.safetensors")))


def _load_training(folder):
    from minilora.train import load_training_state
    return _values(load_training_state(os.path.join(folder, "checkpoint.npz")))


def _write_model(folder):
    model = _base()
    model.generation_config.max_new_tokens = 5
    model.save_pretrained(folder)


def _write_sharded(folder):
    _base().save_pretrained(folder, max_shard_size=9000)


def _write_adapter(folder):
    model = get_peft_model(_base(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder)


def _write_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "hello", "world", ","])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    os.makedirs(folder)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "padding_side": "left",
                   "model_max_length": 64, "chat_template": "{{ messages }}"}, f)


def _write_saved(folder):
    os.makedirs(folder)
    model = _base()
    state = model.state_dict()
    state["model.embed_tokens.weight"].requires_grad_(True)
    ml.save({**state, "alias": state["lm_head.weight"]}, os.path.join(folder, "saved.safetensors"))


def _write_tutorial(folder):
    os.makedirs(folder)
    model = _base()
    optimizer = ml.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = ml.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    model(ml.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    scheduler.step()
    ml.save({"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
             "scheduler_state_dict": scheduler.state_dict(), "loss": 0.25, "note": ("a", None, 1.5)},
            os.path.join(folder, "tutorial.safetensors"))


def _write_training(folder):
    from minilora.train import save_training_state
    os.makedirs(folder)
    save_training_state(os.path.join(folder, "checkpoint.npz"),
                        {"step": 4, "model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                         "optimizer": {"state": {0: {"step": np.float32(4), "exp_avg": np.ones(3, np.float32)}},
                                       "param_groups": [{"lr": 0.1, "params": [0]}]},
                         "losses": [1.0, 0.5], "rng": {"state": {"key": np.arange(3, dtype=np.uint32)}}})


def _training_data():
    return np.arange(24, dtype=np.int64).reshape(4, 6) % 32


def _write_resume(folder):
    from minilora.train import train
    train(_base(), _training_data(), steps=1, batch_size=2, save_every=1, out_dir=folder, progress=False,
          plot=False)


def _load_resume(folder):
    """train(resume=...) of a finished run: restores the model (and checks the optimizer's state) and returns."""
    from minilora.train import train
    model = _base()
    result = train(model, _training_data(), steps=1, batch_size=2, resume=os.path.join(folder, "checkpoint.npz"),
                   progress=False, plot=False)
    return {"model": _values(model.state_dict()), "losses": list(result.losses), "lrs": list(result.lrs)}


# format name: (writer, loader, {file in the folder: kind})
FORMATS = {
    "model": (_write_model, _load_model, {"model.safetensors": "safetensors", "config.json": "config",
                                          "generation_config.json": "json"}),
    "sharded": (_write_sharded, _load_model, {"model.safetensors.index.json": "index", "config.json": "config",
                                              "model-00001-of-00002.safetensors": "safetensors",
                                              "model-00002-of-00002.safetensors": "safetensors"}),
    "adapter": (_write_adapter, _load_adapter, {"adapter_model.safetensors": "safetensors",
                                                "adapter_config.json": "json"}),
    "tokenizer": (_write_tokenizer, _load_tokenizer, {"tokenizer.json": "json", "tokenizer_config.json": "json"}),
    "saved": (_write_saved, _load_saved, {"saved.safetensors": "safetensors"}),
    "tutorial": (_write_tutorial, _load_tutorial, {"tutorial.safetensors": "safetensors"}),
    "training": (_write_training, _load_training, {"checkpoint.npz": "npz"}),
    "resume": (_write_resume, _load_resume, {"checkpoint.npz": "npz"}),
}


# --------------------------------------------------------------------------------------------------
# Mutations: each changes one file of a copied folder and says whether the values may change undetectably
# --------------------------------------------------------------------------------------------------
def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _split_safetensors(data):
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def _join_safetensors(header, body, raw=None):
    text = raw if raw is not None else json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def truncate(rng, path):
    data = _read(path)
    _write(path, data[:rng.randrange(len(data))])
    return f"truncate at {len(_read(path))}"


def empty(rng, path):
    _write(path, b"")
    return "empty file"


def directory(rng, path):
    os.remove(path)
    os.makedirs(path)
    return "a directory"


def symlink_loop(rng, path):
    os.remove(path)
    os.symlink(path, path)
    return "a symlink to itself"


def unreadable(rng, path):
    if os.geteuid() == 0:
        return None  # root reads anything
    os.chmod(path, 0)
    return "chmod 000"


def not_utf8(rng, path):
    data = _read(path)
    at = rng.randrange(len(data))
    _write(path, data[:at] + b"\xff\xfe" + data[at:])
    return f"invalid UTF-8 at byte {at}"


def bit_flip_header(rng, path):
    data = bytearray(_read(path))
    end = 8 + struct.unpack("<Q", bytes(data[:8]))[0] if path.endswith(".safetensors") else len(data)
    at = rng.randrange(min(end, len(data)))
    data[at] ^= 1 << rng.randrange(8)
    _write(path, bytes(data))
    if path.endswith(".json") and _parses(bytes(data)):  # another valid JSON text ("6" -> "7"): no checksum
        return "FLIPPED", f"bit flip at byte {at}, still valid JSON"
    return f"bit flip at header byte {at}"


def _parses(text):
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def bit_flip_data(rng, path):
    """UNDETECTABLE by design of the format (no checksum): only checked not to crash."""
    data = bytearray(_read(path))
    start = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    if start >= len(data):
        return None
    at = rng.randrange(start, len(data))
    data[at] ^= 1 << rng.randrange(8)
    _write(path, bytes(data))
    return "UNDETECTABLE", f"bit flip at data byte {at}"


def _tensor_names(header):
    return sorted(k for k in header if k != "__metadata__")


def _edit_header(rng, path):
    header, body = _split_safetensors(_read(path))
    names = _tensor_names(header)
    name = rng.choice(names)
    entry = header[name]
    n_bytes = entry["data_offsets"][1] - entry["data_offsets"][0]
    widths = {"F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "F64": 8, "I64": 8,
              "U8": 1, "I8": 1, "BOOL": 1}
    choice = rng.randrange(15)
    raw = None
    if choice == 0:  # another dtype of the same width: the bytes now mean other numbers
        same = [d for d, w in widths.items() if w == widths.get(entry["dtype"]) and d != entry["dtype"]]
        entry["dtype"] = rng.choice(same)
        what = f"{name}: dtype -> {entry['dtype']} (same width)"
    elif choice == 1:
        entry["dtype"] = rng.choice([d for d, w in widths.items() if w != widths.get(entry["dtype"])] + ["F8_E4M3",
                                                                                                        "X9", 7])
        what = f"{name}: dtype -> {entry['dtype']!r}"
    elif choice == 2:  # the same number of elements, another shape
        count = int(np.prod(entry["shape"]))
        entry["shape"] = rng.choice([[count], [1, count], [count, 1], list(reversed(entry["shape"])) or [1]])
        what = f"{name}: shape -> {entry['shape']}"
    elif choice == 3:
        entry["shape"] = rng.choice([[-1], [None], ["4"], 4, [2.0, 2], [True], [2 ** 64]])
        what = f"{name}: shape -> {entry['shape']!r}"
    elif choice == 4 and len(names) > 1:  # two tensors swap their byte ranges (the header order reversed)
        other = rng.choice([n for n in names if n != name])
        entry["data_offsets"], header[other]["data_offsets"] = header[other]["data_offsets"], entry["data_offsets"]
        what = f"{name} <-> {other}: data_offsets swapped"
    elif choice == 5:
        begin = entry["data_offsets"][0]
        shift = rng.choice([-4, -1, 1, 4, len(body)])
        entry["data_offsets"] = [max(begin + shift, 0), max(begin + shift, 0) + n_bytes]
        what = f"{name}: data_offsets shifted by {shift}"
    elif choice == 6:
        entry["data_offsets"] = rng.choice([[0, 0], [0], [1, 0], [-4, n_bytes - 4], ["0", str(n_bytes)], None,
                                            [0, 2 ** 70]])
        what = f"{name}: data_offsets -> {entry['data_offsets']!r}"
    elif choice == 7:  # a duplicate key: JSON allows it, Python's json keeps the last one
        text = json.dumps(header, separators=(",", ":"))
        dup = json.dumps({name: {**entry, "shape": list(reversed(entry["shape"])) + [1]}})[1:-1]
        raw = ("{" + dup + "," + text[1:]).encode()
        what = f"duplicate key {name}"
    elif choice == 8:
        del header[name]
        what = f"{name} removed from the header"
    elif choice == 9:
        header["extra.tensor"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(body), len(body) + 4]}
        body += b"\0\0\0\0"
        what = "an extra tensor appended"
    elif choice == 10:
        header["__metadata__"] = rng.choice([None, [], "pt", {"format": 1}, {"format": None}, {"a": ["x"]}])
        what = f"__metadata__ -> {header['__metadata__']!r}"
    elif choice == 11:
        meta = header.get("__metadata__", {})
        key = rng.choice(sorted(meta) or ["format"])
        meta[key] = rng.choice(["", "{", "[1, 2]", "null", '{"x": [1]}', json.dumps({"dict": [[1]]}), "\ud800"])
        header["__metadata__"] = meta
        what = f"__metadata__[{key!r}] -> {meta[key]!r}"
    elif choice == 12:
        entry["extra_field"] = rng.choice([1, None, "x"])
        what = f"{name}: unknown field in its entry"
    elif choice == 13:
        header = rng.choice([[], None, 1, "x", {}])
        what = f"header -> {header!r}"
        if header == {}:
            body = b""
    else:
        header[name] = rng.choice([None, [], "x", {"dtype": "F32"}, {"shape": [1]}])
        what = f"{name} -> {header[name]!r}"
    _write(path, _join_safetensors(header, body, raw))
    return what


def _json_edit(rng, path, required=()):
    data = json.loads(_read(path))
    if not isinstance(data, dict) or not data:
        _write(path, b"[1, 2]")
        return "a JSON list"
    key = rng.choice(sorted(required) if required and rng.random() < 0.6 else sorted(data))
    old = data.get(key)
    choice = rng.randrange(8)
    if choice == 0:
        del data[key]
        what = f"{key} removed"
    elif choice == 1:
        data[key] = None
        what = f"{key} -> null"
    elif choice == 2:
        data[UNKNOWN_FIELD] = rng.choice([1, "x", None, [1]])
        what = "an unknown field"
    elif choice == 3:
        data[key] = rng.choice([-1, 0, -16])
        what = f"{key} -> {data[key]}"
    elif choice == 4:
        value = data[key]
        data[key] = rng.choice([str(value), [value], {"v": value}, True, 1.5, "x"])
        what = f"{key} -> {data[key]!r} (another type)"
    elif choice == 5:
        data = rng.choice([[], "x", 1, None])
        what = f"the whole file -> {data!r}"
    elif choice == 6:
        data[key] = float("nan") if rng.random() < 0.5 else 2 ** 70
        what = f"{key} -> {data[key]!r}"
    else:
        data[key] = rng.choice([{}, [], ""])
        what = f"{key} -> {data[key]!r}"
    _write(path, json.dumps(data).encode())
    new = data.get(key) if isinstance(data, dict) else None
    if (os.path.basename(path), key) in LEFT_ALONE:
        return "LEFT ALONE", what
    if choice in (0, 1, 2) or key in INFORMATIONAL or (isinstance(data, dict) and key in data and (
            old is None or type(old) is type(new) or {type(old), type(new)} == {int, float} or old == new
            or isinstance(new, ALTERNATIVES.get(key, ())))):
        return "FILE SAYS", what  # a value of the right kind in its place: loading it is right, whatever it changes
    return what


# Other forms a field may take in the ecosystem: transformers' named chat templates (a dict or a list), a list of
# EOS ids (an empty one too: transformers' config takes it)
ALTERNATIVES = {"chat_template": (dict, list), "eos_token_id": (list,)}
# Fields that record where a file came from and change nothing loaded (PEFT keeps any value too; generation_config.json's
# _from_model_config marks a config made from the model's, as transformers writes it)
INFORMATIONAL = ("peft_version", "revision", "base_model_name_or_path", "transformers_version", "auto_mapping",
                 "_from_model_config")


REQUIRED = {"config.json": ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
                            "intermediate_size", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
                            "tie_word_embeddings", "max_position_embeddings", "dtype", "rope_parameters"),
            "adapter_config.json": ("r", "lora_alpha", "target_modules", "peft_type", "fan_in_fan_out",
                                    "use_rslora", "bias", "lora_dropout", "layers_to_transform", "use_dora"),
            "model.safetensors.index.json": ("weight_map", "metadata")}


def json_edit(rng, path):
    return _json_edit(rng, path, REQUIRED.get(os.path.basename(path), ()))


def index_edit(rng, path):
    data = json.loads(_read(path))
    names = sorted(data["weight_map"])
    name = rng.choice(names)
    choice = rng.randrange(4)
    shards = sorted(set(data["weight_map"].values()))
    if choice == 0:  # a tensor said to be in the other shard: the file it names decides nothing here
        data["weight_map"][name] = rng.choice(shards)
        what = f"weight_map[{name}] -> {data['weight_map'][name]}"
    elif choice == 1:
        del data["weight_map"][name]
        what = f"weight_map[{name}] removed"
    elif choice == 2:
        data["weight_map"]["model.extra.weight"] = shards[0]
        what = "a tensor no shard holds"
    else:
        data["weight_map"][name] = rng.choice([None, 1, "", "missing.safetensors", "../x.safetensors", "/abs"])
        what = f"weight_map[{name}] -> {data['weight_map'][name]!r}"
    _write(path, json.dumps(data).encode())
    return what


def _npz_rewrite(path, change):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    what = change(meta, arrays)
    if meta is not None:
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return what


def _refs(node, found):
    """Every ``{"__array__": ...}`` / ``{"__dict__": ...}`` / ``{"__number__": ...}`` node of the meta tree."""
    if isinstance(node, list):
        for v in node:
            _refs(v, found)
    elif isinstance(node, dict):
        found.append(node)
        for v in node.values():
            _refs(v, found)
    return found


RAW_READER_ONLY = "FILE SAYS (to a reader that knows no model)"  # an array of another shape


def npz_edit(rng, path):
    """train()'s checkpoint.npz: its arrays and the JSON tree that places them, edited."""
    def change(meta, arrays):
        nodes = _refs(meta, [])
        node = rng.choice(nodes)
        names = sorted(k for k in arrays if k != "__meta__")
        choice = rng.randrange(9)
        if choice == 0 and "__array__" in node:
            node["__array__"] = "missing"
        elif choice == 1 and "__array__" in node:
            node["dtype"] = rng.choice(["nonsense", 3, None, "float64"])
        elif choice == 2 and "__dict__" in node:
            node["__dict__"] = rng.choice([5, [[1]], [[[1], 2]], "x", [[{"__dict__": []}, 1]]])
        elif choice == 3 and "__number__" in node:
            node["__number__"], node["dtype"] = rng.choice([("x", "float32"), (1.5, "nonsense"), ([1], "int64")])
        elif choice == 4:
            del arrays[rng.choice(names)]
        elif choice == 5:  # an array of another shape (same bytes)
            name = rng.choice(names)
            arrays[name] = arrays[name].reshape(-1)[::-1].reshape(-1, 1) if arrays[name].size else arrays[name]
            return RAW_READER_ONLY, f"array {name} reshaped"
        elif choice == 6:
            name = rng.choice(names)
            arrays[name] = arrays[name].astype(rng.choice([np.float64, np.int32, np.bool_, np.complex64]))
            return "FILE SAYS", f"array {name} in another dtype"
        elif choice == 7:
            node.clear()
        else:
            arrays["__meta__"] = np.frombuffer(rng.choice([b"{", b"\xff", b"[]", b"null", b"1"]), np.uint8)
            return "meta replaced"
        return f"meta edit {choice} at {str(node)[:60]}"
    return _npz_rewrite(path, change)


COMMON = [truncate, empty, directory, symlink_loop, unreadable, not_utf8, bit_flip_header]
MUTATIONS = {"safetensors": COMMON + [bit_flip_data] + [_edit_header] * 6,
             "config": COMMON + [json_edit] * 6,
             "json": COMMON + [json_edit] * 4,
             "index": COMMON + [json_edit] * 2 + [index_edit] * 3,
             "npz": COMMON + [npz_edit] * 6}


# --------------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------------
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("no answer in 20 s")


def _run(loader, folder):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loader(folder), None
    except Exception as exc:  # noqa: BLE001 -- judged by _verdict (a Hang too: a failure)
        return None, exc
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _safetensors_reads_it(path):
    """Whether the safetensors library itself loads the file (then a header that lies consistently, a
    flipped bit in a tensor's name, another dtype of the same width, is undetectable in every ecosystem)."""
    from safetensors import safe_open
    try:
        with safe_open(path, "np") as f:
            for name in f.keys():
                f.get_slice(name)[...]
    except Exception as exc:  # noqa: BLE001
        return "BF16" in str(exc) or "bfloat16" in str(exc).lower()
    return True


ECOSYSTEM_SILENT = []  # (case, what) where safetensors too loads other values: report lines, not failures


# Errors whose words are the ecosystem's and name no file there either: PEFT's for a target_modules that
# matches nothing; NumPy's for a rank of 2**70 (torch's "Trying to create tensor with negative dimension")
PEFT_WORDS = ("Target modules ", "Maximum allowed dimension exceeded")
# Left alone, with the reason (reported): max_new_tokens=true in generation_config.json is 1, as transformers'
# GenerationConfig takes it (bool is an int).
LEFT_ALONE = {("generation_config.json", "max_new_tokens")}


def _verdict(result, error, intact, path, undetectable):
    """None when the case ends well, else what went wrong."""
    if error is None:
        if undetectable or _same(result, intact):
            return None
        if path.endswith(".safetensors") and os.path.isfile(path) and _safetensors_reads_it(path):
            ECOSYSTEM_SILENT.append(path)
            return None
        return "loaded OTHER values in silence"
    if isinstance(error, RAW_ERRORS) or not isinstance(error, CLEAR_ERRORS):
        return f"raw {type(error).__name__}: {error}"
    message = "\n".join([str(error)] + getattr(error, "__notes__", []))  # (PEFT's words, minilora's hints as notes)
    if undetectable in ("FLIPPED", "LEFT ALONE") or message.startswith(PEFT_WORDS):
        return None  # another valid file, refused later (by the tokenizers library at the first call)
    folder, name = os.path.dirname(path), os.path.basename(path)
    if name not in message and folder not in message:
        return f"{type(error).__name__} that names neither the file nor its folder: {message[:300]}"
    return None


def run_case(fmt, seed, case, work, base):
    """Mutate one file of a copy of format ``fmt``'s intact folder, load it, judge: (description, problem)."""
    writer, loader, files = FORMATS[fmt]
    rng = random.Random(f"{fmt}-{seed}-{case}")
    name = rng.choice(sorted(files))
    mutation = rng.choice(MUTATIONS[files[name]])
    folder = os.path.join(work, f"{fmt}-{seed}-{case}")
    shutil.copytree(base[fmt][0], folder, symlinks=True)
    path = os.path.join(folder, name)
    what = mutation(rng, path)
    if what is None:
        return None, None
    undetectable = isinstance(what, tuple) and what[0]  # a data bit flip, or a valid value in a JSON file
    if undetectable == RAW_READER_ONLY and fmt == "resume":
        undetectable = False  # what load_training_state returns as it is, resume must check against the model
    description = f"{fmt} seed {seed} case {case}: {name}: {what[-1] if undetectable else what}"
    result, error = _run(loader, folder)
    return description, _verdict(result, error, base[fmt][1], path, undetectable)


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    pytest.importorskip("safetensors")
    pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("intact")
    out = {}
    for fmt, (writer, loader, files) in FORMATS.items():
        folder = str(root / fmt)
        writer(folder)
        assert set(files) <= set(os.listdir(folder)), (fmt, os.listdir(folder))
        out[fmt] = (folder, loader(folder))
    return out


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_corrupted_file_is_a_clear_error_or_the_same_values(fmt, intact, tmp_path):
    problems = []
    for seed in range(SEEDS):
        for case in range(CASES_PER_SEED):
            description, problem = run_case(fmt, seed, case, str(tmp_path), intact)
            if problem:
                problems.append(f"{description}: {problem}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------
# REGRESSIONS: minimized cases the hunts found, each silent, raw or a hang before its fix
# --------------------------------------------------------------------------------------------------
def _json_set(name, key, value):
    def mutate(folder):
        path = os.path.join(folder, name)
        data = json.loads(_read(path))
        data = value if key is None else {**data, key: value}
        _write(path, json.dumps(data).encode())
    return mutate


def _replace_by(name, kind):
    def mutate(folder):
        path = os.path.join(folder, name)
        os.remove(path)
        os.makedirs(path) if kind == "dir" else os.symlink(path, path)
    return mutate


def _metadata_set(name, key, value):
    def mutate(folder):
        path = os.path.join(folder, name)
        header, body = _split_safetensors(_read(path))
        header["__metadata__"][key] = value
        _write(path, _join_safetensors(header, body))
    return mutate


def _rename_tensor(name):
    def mutate(folder):  # a flipped bit in a tensor's name: safetensors reads it, the metadata lists the old name
        path = os.path.join(folder, name)
        header, body = _split_safetensors(_read(path))
        header["modem.norm.weight"] = header.pop("model.norm.weight")
        _write(path, _join_safetensors(header, body))
    return mutate


def _json_edit_entry(name, tensor, field, value):
    def mutate(folder):
        path = os.path.join(folder, name)
        header, body = _split_safetensors(_read(path))
        header[tensor][field] = value
        _write(path, _join_safetensors(header, body))
    return mutate


def _duplicate_entry(name, tensor):
    def mutate(folder):  # the entry again, last, as another dtype of the same width: the last one wins in JSON
        path = os.path.join(folder, name)
        header, body = _split_safetensors(_read(path))
        key = tensor or _tensor_names(header)[0]
        text = json.dumps(header, separators=(",", ":"))[:-1]
        again = json.dumps({key: {**header[key], "dtype": "I32"}}, separators=(",", ":"))[1:]
        _write(path, _join_safetensors(None, body, (text + "," + again).encode()))
    return mutate


def _npz_meta(kind):
    def mutate(folder):
        def change(meta, arrays):
            first = next(node for node in _refs(meta, []) if "__array__" in node)
            if kind == "missing":
                first["__array__"] = "missing"
            elif kind == "bad dtype":
                first["dtype"] = 3
            elif kind == "number as a list":
                next(node for node in _refs(meta, []) if "__number__" in node)["__number__"] = [1]
            elif kind == "negative rng word":  # NumPy's legacy generator state: its uint32 key array, as int64 -1s
                key = max((n for n in arrays if arrays[n].dtype == np.uint32), key=lambda n: arrays[n].size)
                arrays[key] = np.full(arrays[key].shape, -1, np.int64)
            else:  # the optimizer's step count
                step = next(name for name in sorted(arrays) if arrays[name].ndim == 0 and name != "__meta__")
                arrays[step] = arrays[step].reshape(1, 1)
        _npz_rewrite(os.path.join(folder, "checkpoint.npz"), change)
    return mutate


REGRESSIONS = [  # (format, mutation, error type, words of the message) -- before: what it did
    # hang: parameter_shapes listed 2**70 layers before comparing with the checkpoint
    ("model", _json_set("config.json", "num_hidden_layers", 2 ** 70), RuntimeError, "model.layers.1"),
    ("sharded", _json_set("config.json", "num_hidden_layers", 2 ** 70), RuntimeError, "model.layers.1"),
    # the field's error without the file
    ("model", _json_set("config.json", "num_hidden_layers", -16), ValueError, "config.json: config field"),
    ("model", _json_set("config.json", None, []), ValueError, "config.json: a Llama config"),
    ("adapter", _json_set("adapter_config.json", "r", -16), ValueError, "adapter_config.json: r "),
    ("adapter", _json_set("adapter_config.json", "use_rslora", None), TypeError, "adapter_config.json: use_rslora"),
    # loaded as False in silence (PEFT too), where use_rslora / use_dora refused a non-bool
    ("adapter", _json_set("adapter_config.json", "fan_in_fan_out", []), TypeError,
     "adapter_config.json: fan_in_fan_out must be True or False"),
    ("adapter", _json_set("adapter_config.json", "fan_in_fan_out", 0), TypeError, "adapter_config.json: fan_in_fan"),
    # refused at injection by an error that did not name the file
    ("adapter", _json_set("adapter_config.json", "trainable_token_indices", []), ValueError,
     "adapter_config.json: trainable_token_indices is empty"),
    ("tokenizer", _json_set("tokenizer_config.json", "pad_token", ""), ValueError, "tokenizer_config.json: pad_token"),
    # NumPy's raw ValueError "entry not a 2- or 3- tuple" (a dtype typo is a TypeError naming the file)
    ("model", _json_set("config.json", "dtype", {"v": "float32"}), TypeError, "config.json: its dtype"),
    # raw "'<=' not supported between instances of 'str' and 'int'"
    ("model", _json_set("generation_config.json", "max_new_tokens", "5"), TypeError, "generation_config.json: "),
    # silently skipped: the folder's generation / tokenizer settings were dropped
    ("model", _replace_by("generation_config.json", "dir"), OSError, "generation_config.json is not a readable"),
    ("model", _replace_by("generation_config.json", "loop"), OSError, "generation_config.json is not a readable"),
    ("tokenizer", _replace_by("tokenizer_config.json", "dir"), OSError, "tokenizer_config.json is not a readable"),
    ("tokenizer", _replace_by("tokenizer_config.json", "loop"), OSError, "tokenizer_config.json is not a readable"),
    # silently no BOS / PAD token, or a template that is a number
    ("tokenizer", _json_set("tokenizer_config.json", "bos_token", -16), ValueError, "bos_token must be a string"),
    ("tokenizer", _json_set("tokenizer_config.json", "pad_token", {}), ValueError, "pad_token must be a string"),
    ("tokenizer", _json_set("tokenizer_config.json", "chat_template", float("nan")), ValueError, "chat_template"),
    # raw JSONDecodeError / TypeError from minilora.load's metadata
    ("saved", _metadata_set("saved.safetensors", "minilora.order", "{"), ValueError, "'minilora.order' is not valid"),
    ("saved", _metadata_set("saved.safetensors", "minilora.order", "null"), ValueError, "corrupted: metadata"),
    ("saved", _metadata_set("saved.safetensors", "minilora.shared", "[1]"), ValueError, "'minilora.shared' must"),
    ("tutorial", _metadata_set("tutorial.safetensors", "minilora.structure", "{\"foo\": 1}"), ValueError,
     "'minilora.structure' does not describe"),
    ("tutorial", _metadata_set("tutorial.safetensors", "minilora.structure", '{"dict": [["a", {"tensor": "999"}]]}'),
     ValueError, "KeyError"),
    # torch's raw "only Tensors of floating point dtype can require gradients" (a dtype edited to I32)
    ("saved", _json_edit_entry("saved.safetensors", "model.embed_tokens.weight", "dtype", "I32"), ValueError,
     "was saved requiring grad"),
    # raw KeyError / TypeError from train()'s checkpoint.npz tree (load_training_state and resume)
    ("training", _npz_meta("missing"), ValueError, "truncated or corrupted (KeyError"),
    ("training", _npz_meta("bad dtype"), ValueError, "truncated or corrupted (TypeError"),
    ("resume", _npz_meta("missing"), ValueError, "truncated or corrupted (KeyError"),
    # a "number" that is a list loaded as a 1-d array in silence
    ("training", _npz_meta("number as a list"), ValueError, "a number that is not one"),
    # raw OverflowError from NumPy's set_state (after the model had taken the checkpoint's weights)
    ("resume", _npz_meta("negative rng word"), ValueError, "random generator state 'numpy_rng' is corrupted"),
    # raw TypeError from the optimizer: a 0-d step saved as [[1]]
    ("resume", _npz_meta("step as [[1]]"), ValueError, "resume from"),
    # silently the last of two entries of one name (as the safetensors library itself reads it)
    ("model", _duplicate_entry("model.safetensors", "model.norm.weight"), ValueError, "appear(s) twice"),
    ("adapter", _duplicate_entry("adapter_model.safetensors", None), ValueError, "appear(s) twice"),
    # an integer dtype in a weight's header entry: its bits cast to floats in silence (transformers and PEFT too)
    ("model", _json_edit_entry("model.safetensors", "model.norm.weight", "dtype", "I32"), ValueError,
     "is stored as I32, but a Llama's weights are floating point"),
    ("sharded", _json_edit_entry("model-00002-of-00002.safetensors", "model.norm.weight", "dtype", "U32"),
     ValueError, "is stored as U32"),
    ("adapter", _json_edit_entry("adapter_model.safetensors",
                                 "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "dtype", "I32"),
     ValueError, "an adapter's weights are floating point"),
    # silently another state dict: a renamed tensor (or one added) the file's own metadata does not list
    ("saved", _rename_tensor("saved.safetensors"), ValueError, "the file holds"),
]


@pytest.mark.parametrize("fmt, mutate, error, words", REGRESSIONS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REGRESSIONS)])
def test_regression(fmt, mutate, error, words, intact, tmp_path):
    folder = str(tmp_path / fmt)
    shutil.copytree(intact[fmt][0], folder, symlinks=True)
    mutate(folder)
    result, exc = _run(FORMATS[fmt][1], folder)
    assert exc is not None, f"loaded in silence: {result}"
    assert isinstance(exc, error) and not isinstance(exc, RAW_ERRORS), repr(exc)
    assert words in str(exc) and folder in str(exc), str(exc)
