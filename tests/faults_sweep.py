"""A sweep of minilora's writers and loaders against every fault in a table (not a test: CI does not run it).

    PYTHONPATH=. python tests/faults_sweep.py [writers|loaders]

Each writer saves a first version, then a second one under a fault; each case prints one line, and the lines
that start with ``!!`` are findings: the old version lost or half-replaced, a temporary file left behind, a
fault that went through silently, or an error that does not name the user's path. Each loader is handed a
damaged file; a finding is a load that returns (a silently wrong tensor) or an error of a kind that does not say
what is wrong with which file (a KeyError, an OverflowError, a bare struct.error ...).
Running as root, permission faults do not apply (root may write anything) and are skipped.
"""
import contextlib
import errno
import hashlib
import json
import os
import pickle
import signal
import struct
import sys
import tempfile

import numpy as np

import minilora as ml
from minilora import checkpoint
from minilora.lora import LoraConfig, get_peft_model
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.tokenizer import ByteTokenizer
from minilora.train import save_training_state, load_training_state
from test_faults_r32 import file_size_limit

FINDINGS = []


def report(ok, case, detail=""):
    line = f"{'  ' if ok else '!!'} {case}: {detail}"
    print(line, flush=True)
    if not ok:
        FINDINGS.append(line)


def tiny_model(seed):
    ml.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=32, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=2))


def tiny_peft(seed):
    model = get_peft_model(tiny_model(0), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    ml.manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data = ml.randn(*p.shape)
    return model


# --------------------------------------------------------------------------------------------------
# Writers: name -> (kind, save(seed, path)); "file" writers take a file path, "folder" ones a folder
# --------------------------------------------------------------------------------------------------
def _merged(seed, path):
    tiny_peft(seed).merge_and_unload().save_pretrained(path)


WRITERS = {
    "ml.save(.pt)": ("file", lambda seed, p: ml.save({"a": ml.full((64,), float(seed))}, p)),
    "ml.save(.safetensors)": ("file", lambda seed, p: ml.save({"a": ml.full((64,), float(seed))}, p)),
    "ml.save(module pickle)": ("file", lambda seed, p: ml.save(tiny_model(seed), p)),
    "checkpoint.save_file": ("file", lambda seed, p: checkpoint.save_file({"a": np.full(64, seed, np.float32)}, p)),
    "save_training_state": ("file", lambda seed, p: save_training_state(p, {"step": seed, "w": np.full(64, seed)})),
    "model.save_pretrained": ("folder", lambda seed, p: tiny_model(seed).save_pretrained(p)),
    "model.save_pretrained(bin)": ("folder", lambda seed, p: tiny_model(seed).save_pretrained(
        p, safe_serialization=False)),
    "adapter.save_pretrained": ("folder", lambda seed, p: tiny_peft(seed).save_pretrained(p)),
    "adapter.save_pretrained(bin)": ("folder", lambda seed, p: tiny_peft(seed).save_pretrained(
        p, safe_serialization=False)),
    "merge_and_unload().save_pretrained": ("folder", _merged),
    "tokenizer.save_pretrained": ("folder", lambda seed, p: _tokenizer(seed).save_pretrained(p)),
}


TRAINER_OUTPUT = tempfile.mkdtemp()  # (one for every trainer: training_args.bin, saved with the model, names it)


def _trainer(seed):
    from minilora import trainer
    arguments = trainer.TrainingArguments(output_dir=TRAINER_OUTPUT, report_to="none", disable_tqdm=True,
                                          learning_rate=1e-3 * (seed + 1))
    return trainer.Trainer(model=tiny_peft(seed), args=arguments)


def _trainer_state(seed, path):
    from minilora.trainer import TrainerState
    state = TrainerState()
    state.global_step = seed
    state.save_to_json(path)


WRITERS.update({
    "Trainer.save_model": ("folder", lambda seed, p: _trainer(seed).save_model(p)),
    "TrainerState.save_to_json": ("file", _trainer_state),
})


def _tokenizer(seed):
    tok = ByteTokenizer()
    tok.model_max_length = 100 + seed
    return tok


def suffix(name):
    return {"ml.save(.safetensors)": ".safetensors", "checkpoint.save_file": ".safetensors",
            "save_training_state": ".npz"}.get(name, ".pt")


def snapshot(path):
    """Every file under ``path`` (or the file itself) -> its digest; None where nothing is there."""
    if os.path.isfile(path):
        return hashlib.sha256(open(path, "rb").read()).hexdigest()
    if not os.path.isdir(path):
        return None
    out = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = hashlib.sha256(open(full, "rb").read()).hexdigest()
    return out


def leftovers(folder):
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, e) for e in dirs + files
                  if (".minilora-" in e and not e.endswith(".minilora-lock")) or e.endswith(".tmp")]
    return found


def sweep_write_limits(name, kind, save, base):
    """A full disk at every write: limits from 0 bytes up to past the whole save."""
    for limit in (0, 1, 8, 100, 500, 2000, 5000, 20000, 100000):
        target = os.path.join(base, f"limit{limit}", "out" + ("" if kind == "folder" else suffix(name)))
        os.makedirs(os.path.dirname(target))
        save(0, target)
        old = snapshot(target)
        try:
            with file_size_limit(limit):
                save(1, target)
            outcome = "saved"
        except OSError as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - the sweep reports whatever comes
            report(False, f"{name} limit={limit}", f"not an OSError: {type(exc).__name__}: {exc}")
            continue
        now, left = snapshot(target), leftovers(os.path.dirname(target))
        if outcome == "saved":
            report(now != old and not left, f"{name} limit={limit}", "saved whole" + (f"; left {left}" if left else ""))
            continue
        names = target in str(outcome) or os.path.realpath(target) in str(outcome) or any(
            str(outcome).find(os.path.join(target, "")) >= 0 for _ in [0])
        ok = now == old and not left and names
        report(ok, f"{name} limit={limit}", f"{type(outcome).__name__}: {outcome}"[:200] +
               ("" if now == old else " OLD VERSION CHANGED") + (f" LEFT {left}" if left else ""))


def sweep_targets(name, kind, save, base):
    """The target is a folder / a file / a dangling link / a link to a folder / under a missing folder / too long."""
    ext = "" if kind == "folder" else suffix(name)
    cases = {}

    def case(label):
        def register(fn):
            cases[label] = fn
            return fn
        return register

    @case("target is a folder" if kind == "file" else "target is a file")
    def _(d):
        target = os.path.join(d, "out" + ext)
        if kind == "file":
            os.makedirs(target)
        else:
            open(target, "w").write("keep")
        return target

    @case("dangling symlink")
    def _(d):
        target = os.path.join(d, "out" + ext)
        os.symlink(os.path.join(d, "elsewhere" + ext), target)
        return target

    @case("symlink to an existing target")
    def _(d):
        real = os.path.join(d, "real" + ext)
        save(0, real)
        target = os.path.join(d, "out" + ext)
        os.symlink(real, target)
        return target

    @case("missing parent folder")
    def _(d):
        return os.path.join(d, "missing", "out" + ext)

    @case("name too long")
    def _(d):
        return os.path.join(d, "x" * 252 + ext)

    @case("name of 255 bytes")
    def _(d):
        return os.path.join(d, "y" * (255 - len(ext)) + ext)

    for label, make in cases.items():
        d = os.path.join(base, label.replace(" ", "_"))
        os.makedirs(d)
        target = make(d)
        before = snapshot(target) if not os.path.islink(target) else ("link", os.readlink(target))
        try:
            save(1, target)
            result = "saved"
        except Exception as exc:  # noqa: BLE001
            result = f"{type(exc).__name__}: {exc}"
        link_kept = not label.startswith(("dangling", "symlink")) or os.path.islink(target)
        left = leftovers(d)
        detail = result[:220] + ("" if link_kept else " LINK REPLACED") + (f" LEFT {left}" if left else "")
        ok = link_kept and not left and (result == "saved" or "Error" in result.split(":")[0])
        if label.startswith("target is a") and result == "saved":
            ok = False
        report(ok, f"{name} {label}", detail)


# System calls that never fail for want of space (removing, closing a descriptor that wrote nothing)
CANNOT_FILL_THE_DISK = {"remove", "unlink", "rmdir", "close"}


def sweep_interrupts(name, kind, save, base):
    """KeyboardInterrupt / ENOSPC at each os call of a save: the old version or the new one, nothing left."""
    calls = ["open", "write", "fsync", "rename", "replace", "mkdir", "link", "remove", "unlink", "rmdir", "chmod",
             "makedirs", "fdopen", "close", "ftruncate"]
    real = {c: getattr(os, c) for c in calls if hasattr(os, c)}
    d = os.path.join(base, "interrupts")
    os.makedirs(d)
    target = os.path.join(d, "out" + ("" if kind == "folder" else suffix(name)))
    save(0, target)
    old = snapshot(target)
    save(1, target)
    new = snapshot(target)
    counter = []

    def patched(call, fail_at, error):
        def fn(*args, **kwargs):
            counter.append(call)
            if len(counter) == fail_at:
                if error is KeyboardInterrupt:  # a real SIGINT: it lands at the next bytecode, unless held
                    signal.raise_signal(signal.SIGINT)
                elif call in CANNOT_FILL_THE_DISK or call == "open" and not (args[1] if len(args) > 1 else 0) & \
                        os.O_CREAT:
                    error_counter.append(call)
                else:
                    raise error()
            return real[call](*args, **kwargs)
        return fn

    error_counter = []
    for error_name, error in (("Ctrl-C", KeyboardInterrupt),
                              ("ENOSPC", lambda: OSError(errno.ENOSPC, "No space left on device"))):
        fail_at, problems = 1, []
        while True:
            save(0, target)
            counter.clear()
            for c in real:
                setattr(os, c, patched(c, fail_at, error))
            try:
                save(1, target)
                failed = False
            except (KeyboardInterrupt, OSError):
                failed = True
            except Exception as exc:  # noqa: BLE001
                failed = True
                problems.append(f"#{fail_at} {counter[-1] if counter else '?'}: {type(exc).__name__}: {exc}")
            finally:
                for c in real:
                    setattr(os, c, real[c])
            if len(counter) < fail_at:
                break
            now, left = snapshot(target), leftovers(d)
            where = f"#{fail_at} os.{counter[fail_at - 1]}"
            if now not in (old, new):
                problems.append(f"{where}: a MIX of old and new")
            elif failed and error_name == "ENOSPC" and now != old and counter[fail_at - 1] != "fsync":
                problems.append(f"{where}: failed but the new version is in place")
            if left:
                problems.append(f"{where}: left {left}")
                for p in left:
                    with contextlib.suppress(OSError):
                        (os.remove if os.path.isfile(p) else __import__("shutil").rmtree)(p)
            fail_at += 1
        report(not problems, f"{name} {error_name} at each of {fail_at - 1} os calls", "; ".join(problems)[:600])


def sweep_writers(selected=None):
    for name, (kind, save) in WRITERS.items():
        if selected and selected not in name:
            continue
        with tempfile.TemporaryDirectory() as base:
            for sweep in (sweep_write_limits, sweep_targets, sweep_interrupts):
                sub = os.path.join(base, sweep.__name__)
                os.makedirs(sub)
                try:
                    sweep(name, kind, save, sub)
                except Exception as exc:  # noqa: BLE001
                    report(False, f"{name} {sweep.__name__}", f"the sweep itself failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------------
# Loaders: a damaged file -> a clear error naming it
# --------------------------------------------------------------------------------------------------
CLEAR = (checkpoint.CheckpointError, ValueError, TypeError, OSError, RuntimeError, pickle.UnpicklingError)


def safetensors_bytes(header, data):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def lying_headers():
    data = np.arange(6, dtype=np.float32).tobytes()
    good = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    yield "valid", safetensors_bytes(good, data)
    variants = {
        "offsets past the end": {"data_offsets": [0, 48]},
        "offsets reversed": {"data_offsets": [24, 0]},
        "offsets negative": {"data_offsets": [-24, 0]},
        "offsets floats": {"data_offsets": [0.0, 24.0]},
        "offsets strings": {"data_offsets": ["0", "24"]},
        "offsets three": {"data_offsets": [0, 12, 24]},
        "offsets huge": {"data_offsets": [0, 2 ** 70]},
        "offsets short for the shape": {"data_offsets": [0, 20]},
        "offsets bool": {"data_offsets": [False, True]},
        "offsets missing": {"data_offsets": None},
        "shape negative": {"shape": [-2, -3]},
        "shape floats": {"shape": [2.0, 3.0]},
        "shape bools": {"shape": [True, 6]},
        "shape string": {"shape": "23"},
        "shape huge": {"shape": [2 ** 40, 2 ** 40]},
        "shape overflowing int64": {"shape": [2 ** 62, 2 ** 62, 4]},
        "shape missing": {"shape": None},
        "shape nested": {"shape": [[2], 3]},
        "dtype unknown": {"dtype": "F128"},
        "dtype lower case": {"dtype": "f32"},
        "dtype of another size": {"dtype": "F64"},
        "dtype a number": {"dtype": 32},
        "dtype missing": {"dtype": None},
        "entry a list": "LIST",
        "extra field": {"extra": 1},
    }
    for label, change in variants.items():
        if change == "LIST":
            header = {"a": [1, 2]}
        else:
            entry = dict(good["a"])
            for k, v in change.items():
                if v is None:
                    entry.pop(k)
                else:
                    entry[k] = v
            header = {"a": entry}
        yield label, safetensors_bytes(header, data)
    two = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
           "b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}}
    yield "two tensors overlapping", safetensors_bytes(two, data)
    gap = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}
    yield "a gap between tensors", safetensors_bytes(gap, data)
    yield "header length past the file", struct.pack("<Q", 10 ** 6) + b"{}"
    yield "header length huge", struct.pack("<Q", 2 ** 63) + b"{}"
    yield "header not JSON", struct.pack("<Q", 5) + b"{abc}"
    yield "header a list", safetensors_bytes([1, 2], b"")
    yield "header JSON with a NaN", struct.pack("<Q", 9) + b'{"a":NaN}'
    yield "header not utf-8", struct.pack("<Q", 4) + b'{"\xff"'
    yield "header with duplicate keys", (lambda raw: struct.pack("<Q", len(raw)) + raw + data)(
        b'{"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}')
    yield "metadata not a dict", safetensors_bytes({**good, "__metadata__": [1]}, data)
    yield "zero length", b""
    yield "seven bytes", b"\x01" * 7
    full = safetensors_bytes(good, data)
    for cut in (8, 12, len(full) - 24, len(full) - 1):
        yield f"truncated at {cut} of {len(full)}", full[:cut]


def sweep_safetensors_loaders():
    loaders = {"checkpoint.load_file": lambda p: checkpoint.load_file(p),
               "ml.load": lambda p: ml.load(p),
               "safe_open-like read_header": lambda p: checkpoint.read_header(p)}
    with tempfile.TemporaryDirectory() as d:
        for label, raw in lying_headers():
            path = os.path.join(d, "w.safetensors")
            open(path, "wb").write(raw)
            for lname, load in loaders.items():
                try:
                    out = load(path)
                    result = "loaded"
                except CLEAR as exc:
                    result = exc
                except Exception as exc:  # noqa: BLE001
                    report(False, f"{lname} {label}", f"unclear: {type(exc).__name__}: {exc}"[:300])
                    continue
                if result == "loaded":
                    good = label in ("valid", "extra field", "a gap between tensors") or lname.endswith("read_header")
                    report(good, f"{lname} {label}", f"loaded {summary(out)}"[:300])
                else:
                    report(path in str(result) or "w.safetensors" in str(result), f"{lname} {label}",
                           f"{type(result).__name__}: {result}"[:300])


def summary(out):
    if isinstance(out, dict):
        return {k: (getattr(v, "shape", v), str(getattr(v, "dtype", ""))) for k, v in list(out.items())[:3]}
    return type(out).__name__


def sweep_config_loaders():
    model_dir_cases = {
        "config not JSON": "{hidden_size: 16",
        "config empty": "",
        "config a string": '"hello"',
        "config hidden_size a string": None,
        "config vocab_size a float": None,
        "config num_hidden_layers negative": None,
        "config rope_theta a list": None,
        "config rms_norm_eps a string": None,
        "config torch_dtype unknown": None,
        "config hidden_act unknown": None,
    }
    changes = {"config hidden_size a string": {"hidden_size": "16"},
               "config vocab_size a float": {"vocab_size": 16.5},
               "config num_hidden_layers negative": {"num_hidden_layers": -1},
               "config rope_theta a list": {"rope_theta": [1, 2]},
               "config rms_norm_eps a string": {"rms_norm_eps": "1e-6"},
               "config torch_dtype unknown": {"torch_dtype": "float13"},
               "config hidden_act unknown": {"hidden_act": "swoosh"}}
    with tempfile.TemporaryDirectory() as d:
        tiny_model(0).save_pretrained(os.path.join(d, "m"))
        peft_dir = os.path.join(d, "a")
        tiny_peft(0).save_pretrained(peft_dir)
        config_path = os.path.join(d, "m", "config.json")
        original = json.load(open(config_path))
        for label, text in model_dir_cases.items():
            if text is None:
                edited = {key: value for key, value in original.items() if key != "dtype"}  # ("dtype" wins over
                text = json.dumps({**edited, **changes[label]})  # torch_dtype where both are, as in transformers)
            open(config_path, "w").write(text)
            try_load(f"LlamaForCausalLM.from_pretrained {label}", lambda: LlamaForCausalLM.from_pretrained(
                os.path.join(d, "m")), "config.json")
        open(config_path, "w").write(json.dumps(original))
        adapter_config = os.path.join(peft_dir, "adapter_config.json")
        original_adapter = json.load(open(adapter_config))
        for label, change in {"r a string": {"r": "2"}, "r zero": {"r": 0}, "lora_alpha a string": {"lora_alpha": "x"},
                              "target_modules a number": {"target_modules": 3}, "lora_dropout 2": {"lora_dropout": 2},
                              "peft_type unknown": {"peft_type": "NOPE"}, "not JSON": "{r: 2"}.items():
            text = change if isinstance(change, str) else json.dumps({**original_adapter, **change})
            open(adapter_config, "w").write(text)
            from minilora.lora import PeftModel
            try_load(f"PeftModel.from_pretrained adapter_config {label}",
                     lambda: PeftModel.from_pretrained(tiny_model(0), peft_dir), "adapter_config.json")
        open(adapter_config, "w").write(json.dumps(original_adapter))
        # the other format under the expected name
        weights = os.path.join(peft_dir, "adapter_model.safetensors")
        kept = open(weights, "rb").read()
        ml.save({"x": ml.ones(2)}, os.path.join(d, "other.pt"))
        open(weights, "wb").write(open(os.path.join(d, "other.pt"), "rb").read())
        try_load("PeftModel.from_pretrained a torch file as adapter_model.safetensors",
                 lambda: PeftModel.from_pretrained(tiny_model(0), peft_dir), "adapter_model.safetensors")
        for cut in (0, 8, 100, len(kept) // 2, len(kept) - 1):
            open(weights, "wb").write(kept[:cut])
            try_load(f"PeftModel.from_pretrained adapter weights truncated to {cut}/{len(kept)}",
                     lambda: PeftModel.from_pretrained(tiny_model(0), peft_dir), "adapter_model.safetensors")
        open(weights, "wb").write(kept)


def try_load(case, load, must_name):
    try:
        load()
        report(False, case, "loaded silently")
    except CLEAR as exc:
        report(must_name in str(exc), case, f"{type(exc).__name__}: {exc}"[:300])
    except Exception as exc:  # noqa: BLE001
        report(False, case, f"unclear: {type(exc).__name__}: {exc}"[:300])


def sweep_torch_files():
    """torch.save files: truncated at each part of the zip, a training state cut short."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.pt")
        ml.save({"a": ml.arange(64, dtype=ml.float32), "b": ml.ones(3, dtype=ml.int64)}, path)
        full = open(path, "rb").read()
        for cut in sorted({0, 1, 4, 30, 64, 200, len(full) // 3, len(full) // 2, len(full) - 100, len(full) - 22,
                           len(full) - 1}):
            open(path, "wb").write(full[:cut])
            try_load(f"ml.load .pt truncated to {cut}/{len(full)}", lambda: ml.load(path), "w.pt")
        for at in range(0, len(full), max(1, len(full) // 40)):
            damaged = bytearray(full)
            damaged[at] ^= 0xFF
            open(path, "wb").write(bytes(damaged))
            try:
                out = ml.load(path)
                same = (np.array_equal(out["a"].numpy(), np.arange(64, dtype=np.float32))
                        and np.array_equal(out["b"].numpy(), np.ones(3, np.int64)))
                report(same, f"ml.load .pt with byte {at} flipped", "loaded the same" if same else
                       f"loaded SILENTLY WRONG {summary(out)}")
            except CLEAR as exc:
                report("w.pt" in str(exc), f"ml.load .pt with byte {at} flipped", f"{type(exc).__name__}: {exc}"[:200])
            except Exception as exc:  # noqa: BLE001
                report(False, f"ml.load .pt with byte {at} flipped", f"unclear: {type(exc).__name__}: {exc}"[:300])
        state = os.path.join(d, "state.npz")
        save_training_state(state, {"step": 3, "w": np.arange(10.0)})
        full = open(state, "rb").read()
        for cut in (0, 10, len(full) // 2, len(full) - 1):
            open(state, "wb").write(full[:cut])
            try_load(f"load_training_state truncated to {cut}/{len(full)}", lambda: load_training_state(state),
                     "state.npz")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    only = sys.argv[2] if len(sys.argv) > 2 else None
    if what in ("all", "writers"):
        sweep_writers(only)
    if what in ("all", "loaders"):
        sweep_safetensors_loaders()
        sweep_config_loaders()
        sweep_torch_files()
    print(f"\n{len(FINDINGS)} findings")
    for line in FINDINGS:
        print(line)
