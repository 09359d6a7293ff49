"""Faults, round 32: what ``tests/faults_sweep.py`` (every writer against every fault) found.

- A name the system takes was refused by every save: a temporary file's name (and a lock file's) is the target's
  with ~40 bytes around it, and past 255 bytes the system refuses it, so ``torch.save(sd, "x" * 250 + ".pt")``
  worked and ``minilora.save`` said "File name too long". Long names are now cut (with a digest of the whole) in
  the temporary and lock names only.
- A Ctrl-C as a save deleted its temporary folder (after a failure, or the old version after the swap) or file
  left the rest of it behind: a hidden copy of the old model beside the new one until some later save of the
  same folder. The deletion now ends first; the Ctrl-C lands after it.
- The kernel cache's own files (the private copy of libgomp, the emulator's sources and records) kept a write's
  temporary file for good when the disk was full: one place (``native.write_atomically``) removes it. Nor were
  they (or a compiled library) flushed before their rename, and a cached library that does not load (cut short by
  a power loss) was used as it was at every start, native code off for good: it is built again once.
- ``model.save_pretrained(link)`` through a symbolic link whose folder does not exist yet said "File exists" of a
  path that did not exist (``os.makedirs``), while an adapter's save wrote into the folder the link names: every
  ``save_pretrained`` now makes that folder, and the link stays.
"""
import contextlib
import errno
import os
import resource
import signal
import sys

import numpy as np
import pytest

import minilora as ml
from minilora import checkpoint
from minilora.lora import LoraConfig
from minilora.models import LlamaForCausalLM
from minilora.nn.generation import GenerationConfig
from test_faults_r8 import same_weights, tiny_model

posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and symbolic links")


def hidden_entries(folder):
    return sorted(e for e in os.listdir(folder) if e.startswith("."))


# ==================================================================================================
# Names as long as the system takes
# ==================================================================================================
@pytest.mark.parametrize("extension", [".pt", ".safetensors", ".npz"])
def test_a_file_name_of_255_bytes_saves_twice_as_open_writes_it(tmp_path, extension):
    path = tmp_path / ("é" * 20 + "y" * (255 - 40 - len(extension)) + extension)  # (255 bytes in UTF-8)
    assert len(os.fsencode(path.name)) == 255
    for value in (1.0, 2.0):  # (the second replaces the first: its temporary file and lock go beside it)
        if extension == ".npz":
            from minilora.train import load_training_state, save_training_state
            save_training_state(path, {"w": np.full(3, value)})
            assert load_training_state(path)["w"].tolist() == [value] * 3
        else:
            ml.save({"a": ml.full((3,), value)}, path)
            assert ml.load(path)["a"].tolist() == [value] * 3
    assert hidden_entries(tmp_path) == []


def test_a_folder_name_of_255_bytes_saves_twice_as_transformers_saves_it(tmp_path):
    folder = tmp_path / ("m" * 255)
    tiny_model(0).save_pretrained(folder)
    tiny_model(1).save_pretrained(folder)  # (the swap: a temporary sibling, a lock file, the old version set aside)
    assert same_weights(LlamaForCausalLM.from_pretrained(folder), tiny_model(1))
    assert hidden_entries(tmp_path) == []


def test_long_names_that_share_their_start_keep_their_saves_apart(tmp_path):
    first, second = tmp_path / ("z" * 250 + "1.pt"), tmp_path / ("z" * 250 + "2.pt")
    assert checkpoint._temp_prefix(first) != checkpoint._temp_prefix(second)
    ml.save({"a": ml.ones(2)}, first)
    ml.save({"a": ml.zeros(2)}, second)
    assert ml.load(first)["a"].tolist() == [1, 1] and ml.load(second)["a"].tolist() == [0, 0]


def test_a_killed_saves_leftover_beside_a_long_name_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / ("w" * 250 + ".pt")
    ml.save({"a": ml.ones(2)}, path)
    dead = os.path.join(tmp_path, checkpoint._temp_prefix(path).replace(f"-{os.getpid()}-", "-999999999-") + "x.tmp")
    open(dead, "wb").write(b"half a save")
    ml.save({"a": ml.zeros(2)}, path)
    assert hidden_entries(tmp_path) == []


# ==================================================================================================
# A Ctrl-C as a save cleans up
# ==================================================================================================
def _sigint_first(real):
    """``real`` called after a SIGINT is sent to this process (Python raises it at its next bytecode, unless held)."""
    def call(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)
    return call


@posix_only
@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_a_ctrl_c_as_a_folder_save_removes_the_old_version_lands_after_it(tmp_path, monkeypatch, python_sigint, swap):
    folder = tmp_path / "model"
    tiny_model(0).save_pretrained(folder)
    if swap == "two renames":
        monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", _sigint_first(checkpoint.shutil.rmtree))
    with pytest.raises(KeyboardInterrupt):
        tiny_model(1).save_pretrained(folder)
    monkeypatch.undo()
    assert hidden_entries(tmp_path) == []  # (before: the old model, hidden beside the new one)
    assert same_weights(LlamaForCausalLM.from_pretrained(folder), tiny_model(1))


@posix_only
def test_a_ctrl_c_as_a_failed_folder_save_removes_its_new_files_lands_after_it(tmp_path, monkeypatch, python_sigint):
    folder = tmp_path / "model"
    tiny_model(0).save_pretrained(folder)
    monkeypatch.setattr(checkpoint, "_swap_in", lambda tmp, directory: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    monkeypatch.setattr(checkpoint.shutil, "rmtree", _sigint_first(checkpoint.shutil.rmtree))
    with pytest.raises(KeyboardInterrupt):
        tiny_model(1).save_pretrained(folder)
    monkeypatch.undo()
    assert hidden_entries(tmp_path) == []
    assert same_weights(LlamaForCausalLM.from_pretrained(folder), tiny_model(0))


@posix_only
def test_a_ctrl_c_as_a_failed_file_save_removes_its_temporary_file_lands_after_it(tmp_path, monkeypatch, python_sigint):
    path = tmp_path / "w.pt"
    ml.save({"a": ml.ones(2)}, path)

    def full_disk(a, b):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    monkeypatch.setattr(os, "remove", _sigint_first(os.remove))
    with pytest.raises(KeyboardInterrupt):
        ml.save({"a": ml.zeros(2)}, path)
    monkeypatch.undo()
    assert hidden_entries(tmp_path) == []
    assert ml.load(path)["a"].tolist() == [1, 1]


# ==================================================================================================
# A symbolic link to a folder not made yet
# ==================================================================================================
@posix_only
@pytest.mark.parametrize("writer", ["model", "bare model", "adapter config", "generation config"])
def test_save_pretrained_through_a_link_to_a_folder_not_made_yet_makes_it_and_keeps_the_link(tmp_path, writer):
    link, real = tmp_path / "out", tmp_path / "disk" / "run1"
    os.symlink(real, link)
    save, written = {
        "model": (lambda: tiny_model(0).save_pretrained(link), "model.safetensors"),
        "bare model": (lambda: tiny_model(0).model.save_pretrained(link), "model.safetensors"),
        "adapter config": (lambda: LoraConfig(r=2).save_pretrained(link), "adapter_config.json"),
        "generation config": (lambda: GenerationConfig(max_new_tokens=3).save_pretrained(link),
                              "generation_config.json"),
    }[writer]
    save()  # (before: FileExistsError "File exists" for the model's, the configs' ones)
    assert os.path.islink(link) and os.readlink(link) == str(real)
    assert os.path.isfile(real / written)


# ==================================================================================================
# The kernel cache: a write that fails leaves nothing in it
# ==================================================================================================
@contextlib.contextmanager
def file_size_limit(limit):
    """RLIMIT_FSIZE: a write past ``limit`` bytes fails with EFBIG (SIGXFSZ ignored), as on a full disk."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


@posix_only
def test_a_cache_file_that_hits_a_full_disk_leaves_no_partial_copy(tmp_path, monkeypatch):
    from minilora import blas, emulator, native
    monkeypatch.setenv("MINILORA_CACHE_DIR", str(tmp_path))
    library = tmp_path / "libgomp.so.1"
    library.write_bytes(b"x" * 5000 + blas._GOMP_SONAME + b"y" * 5000)
    with file_size_limit(1000):
        assert blas._private_openmp(str(library), native) is None  # (no private copy: the shared library is used)
        with pytest.raises(OSError):
            emulator._write_atomic(tmp_path / "kernels.cu", "z" * 5000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["libgomp.so.1"]  # (before: two .tmp files, for good)


def test_a_cached_library_that_does_not_load_is_built_again(tmp_path, monkeypatch):
    from minilora import native
    monkeypatch.setenv("MINILORA_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "tiny.c"
    source.write_text("int answer(void) { return 42; }\n")
    try:
        library = native._library(source)  # (built, never loaded in this process: dlopen would reuse the mapping)
    except native.CompileFailed:
        pytest.skip("no C compiler")
    library.write_bytes(library.read_bytes()[:200])  # what a power loss leaves of a file renamed before its bytes
    loaded = native.load(source)
    assert loaded is not None, native.why_unavailable  # (before: None, native code off at every start)
    assert loaded.answer() == 42


@posix_only
def test_cache_files_reach_the_disk_before_their_rename(tmp_path, monkeypatch):
    from minilora import native
    events, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(a))) or replace(a, b))
    native.write_atomically(tmp_path / "record.json", "{}")
    native.compile_atomically([sys.executable, "-c", "import sys; open(sys.argv[2], 'w').write('x')"],
                              tmp_path / "x.so")
    renamed = [name for kind, name in events if kind == "replace"]
    assert len(renamed) == 2
    for name in renamed:  # (a power loss could leave the new name on an empty file)
        assert events.index(("fsync", name)) < events.index(("replace", name))
