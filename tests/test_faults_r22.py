"""Faults, round 22: two writers in one folder, and the faults nobody had tried.

Two processes saving different things into one folder at once (a model's ``save_pretrained`` and a tokenizer's, two
adapters): each save is staged in a folder of its own, which then takes the old folder's place with the files it
did not write linked in. Two such swaps at once each linked the old folder's files, so the later one brought back
the other's old files in place of the ones it had just saved, silently. Now the link-and-swap step holds a lock
(``flock`` on a lock file beside the folder, held for that step only, never for a whole run), so the second save
links in the first one's files: both are there, whole. A folder a run is writing (``writing_alone``) is never
swapped: its files are replaced one by one, so the run keeps its lock and its checkpoints.

What was left to try. Two ``minilora.save`` calls into one stream (or a file opened for appending) read back as the
SECOND object, silently: zipfile reads the archive the file ends with; torch refuses such a file, and so does
minilora now, naming the stream, not the temporary file it was read into. A file name with a byte that is not UTF-8
(``os.fsdecode(b"w\xff.pt")``) crashed ``minilora.save`` with a UnicodeEncodeError from its archive name; the
archive is now named as torch names it ("archive" for a name that is not ASCII, the name without its last extension
otherwise). A safetensors header with ``"__metadata__": null`` (safetensors reads it as no metadata) was refused.
A stream of torch < 1.6 objects one after another (torch.save's legacy format, appended) read its first object
and left the stream at its end, where torch.load leaves it after that object (the next load found nothing).
A save over a file the user made read-only replaced it (a rename needs only the folder's permission), where
torch.save and transformers raise open()'s PermissionError. A list run resumed on a dataset of another size trained
on other batches without a word.

Tried and found right (no test added): the weights-only refusals of torch 2.13's allow-list (a Namespace, a
NumPy array, a slice, a module, a date, a defaultdict; zip and legacy format) in torch's words; legacy-format
files (views, shared storages, Parameters, integer, bool, complex, float16 and float64 tensors); safetensors
files with overlapping, gapped or out-of-order tensors, trailing bytes, a header claiming more bytes than the
file holds; unicode, spaces and newlines in folder and file names; a KeyboardInterrupt at each system call of
the model, sharded, tokenizer and training-state saves; a pipe given to ``minilora.load`` (torch needs seek).
"""
import io
import json
import os
import pickle
import struct
import threading
import zipfile

import numpy as np
import pytest

import minilora as ml
from minilora import checkpoint
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.tokenizer import ByteTokenizer


def _tokenizer(padding_side):
    tokenizer = ByteTokenizer()
    tokenizer.padding_side = padding_side
    return tokenizer


def _tiny_llama(seed):
    ml.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16))


def _same_weights(model, folder):
    loaded = LlamaForCausalLM.from_pretrained(folder).state_dict()
    return all(np.array_equal(loaded[k].numpy(), v.numpy()) for k, v in model.state_dict().items())


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork() and flock()")


def _forked(work):
    """Run ``work(wait)`` in a child process (forked: nothing imported again); ``wait()`` inside it tells this
    process it got there and blocks until ``go()``. Returns (reached, go, finish)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            def wait():
                os.write(ready_w, b"r")
                os.read(go_r, 1)
            work(wait)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)

    def reached():
        return os.read(ready_r, 1) == b"r"

    def go():
        os.write(go_w, b"g")

    def finish():
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return reached, go, finish


@needs_fork
def test_two_processes_saving_into_one_folder_at_once_keep_both_saves(tmp_path):
    folder = str(tmp_path / "out")
    _tiny_llama(0).save_pretrained(folder)
    _tokenizer("right").save_pretrained(folder)
    new_model = _tiny_llama(1)

    def save_the_model_pausing_before_its_swap(wait):
        swap = checkpoint._swap_in
        checkpoint._swap_in = lambda tmp, directory: (wait(), swap(tmp, directory))
        new_model.save_pretrained(folder)
    reached, go, finish = _forked(save_the_model_pausing_before_its_swap)
    assert reached()  # the model's files are staged, the old tokenizer linked beside them
    tokenizer_save = threading.Thread(target=_tokenizer("left").save_pretrained, args=(folder,))
    tokenizer_save.start()
    tokenizer_save.join(0.3)  # (before: done by now, the old model linked beside the new tokenizer)
    go()
    assert finish() == 0
    tokenizer_save.join()
    assert _same_weights(new_model, folder)
    assert ml.tokenizer.from_pretrained(folder).padding_side == "left"


@needs_fork
def test_a_save_into_the_folder_a_run_writes_keeps_the_run_s_lock_and_files(tmp_path):
    """A merged model exported into the folder another process's run writes (``writing_alone``): the folder was
    swapped for a new one, so the run's lock stayed on the old one and a second run into it was no longer refused
    (and a checkpoint the run swapped in meanwhile was lost). A run's folder now has its files replaced one by one."""
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    def a_run(wait):
        with checkpoint.writing_alone(folder, "minilora train"):
            wait()
    reached, go, finish = _forked(a_run)
    assert reached()
    inode = os.stat(folder).st_ino
    _tiny_llama(1).save_pretrained(folder)
    try:
        assert os.stat(folder).st_ino == inode
        with pytest.raises(checkpoint.FolderInUseError, match="another process is writing"):
            with checkpoint.writing_alone(folder, "minilora train"):
                pass
    finally:
        go()
        assert finish() == 0
    assert _same_weights(_tiny_llama(1), folder)


def test_two_saves_into_one_stream_are_refused_not_read_as_the_second(tmp_path):
    stream = io.BytesIO()
    ml.save({"first": ml.ones(2)}, stream)
    ml.save({"second": ml.zeros(2)}, stream)
    stream.seek(0)
    with pytest.raises(RuntimeError, match="the BytesIO object: PytorchStreamReader failed reading zip archive"):
        ml.load(stream)  # (before: {"second": ...})
    appended = str(tmp_path / "log.pt")
    for value in (1.0, 2.0):
        with open(appended, "ab") as file:
            ml.save({"w": ml.full((2,), value)}, file)
            ends = file.tell()  # (the second: where its archive starts)
    with pytest.raises(RuntimeError, match="starts at byte"):
        ml.load(appended)
    with open(appended, "rb") as file:  # (a stream at an archive's start reads that archive, as torch's)
        file.seek(ends // 2)
        assert ml.load(file)["w"].tolist() == [2.0, 2.0]


def test_a_file_name_that_is_not_utf8_saves_and_the_archive_is_named_as_torch_names_it(tmp_path):
    names = {os.fsdecode(b"w\xff.pt"): "archive", "données.pt": "archive", "model.v2.pt": "model.v2",
             "noext": "noext", ".hidden.pt": ".hidden"}  # (".pt": torch refuses it, test_faults_r23.py)
    for name, archive in names.items():
        path = os.path.join(str(tmp_path), name)
        ml.save({"w": ml.ones(2)}, path)  # (before: UnicodeEncodeError for the first)
        assert zipfile.ZipFile(path).namelist()[0] == f"{archive}/data.pkl"
        assert ml.load(path)["w"].tolist() == [1.0, 1.0]


def test_safetensors_metadata_null_reads_as_no_metadata(tmp_path):
    path = str(tmp_path / "null.safetensors")
    header = json.dumps({"__metadata__": None, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header)) + header + np.ones(2, np.float32).tobytes())
    assert ml.load(path)["w"].tolist() == [1.0, 1.0]
    assert checkpoint.load_file(path)["w"].tolist() == [1.0, 1.0]


def test_a_run_resumed_on_a_dataset_of_another_size_says_so(tmp_path):
    """A list run resumed on a dataset grown or cut since trained on other batches without a word (a DataLoader's
    cut short was refused: its epoch could not be replayed)."""
    rows = 7
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.train import train
    data = np.array([[(i * 3 + j) % 13 + 3 for j in range(8)] for i in range(15)], np.int64)

    def model():
        return get_peft_model(_tiny_llama(0), LoraConfig(r=2, target_modules=["q_proj"]))
    options = dict(steps=3, lr=1e-2, progress=False, plot=False, batch_size=4)
    train(model(), data[:10], out_dir=str(tmp_path), save_every=2, **{**options, "steps": 2})
    with pytest.warns(UserWarning, match=rf"train_data holds {rows} examples \(the run had 10\).*other batches"):
        train(model(), data[:rows], out_dir=str(tmp_path), resume=True, **options)


def _read_only(monkeypatch, path):
    """``chmod a-w path``, and, for root (whom nothing is refused), ``os.access`` answering as for its owner."""
    os.chmod(path, 0o444)
    if os.geteuid() == 0:
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.path.abspath(p) == path and
                            mode & os.W_OK else access(p, mode, **kw))


def test_a_save_over_a_file_the_user_may_not_write_is_refused_as_open_refuses_it(tmp_path, monkeypatch):
    """A rename needs only the folder's permission: ``ml.save`` and ``save_pretrained`` replaced a file the user had
    made read-only (torch.save and transformers' save_pretrained open it: PermissionError). Now the same error, and
    nothing changed."""
    path = str(tmp_path / "model.pt")
    ml.save({"w": ml.ones(2)}, path)
    _read_only(monkeypatch, path)
    with pytest.raises(PermissionError, match=r"\[Errno 13\] Permission denied: '.*model.pt'"):
        ml.save({"w": ml.zeros(2)}, path)
    assert ml.load(path)["w"].tolist() == [1.0, 1.0]
    folder = str(tmp_path / "model")
    _tiny_llama(0).save_pretrained(folder)
    _read_only(monkeypatch, os.path.join(folder, "model.safetensors"))
    with pytest.raises(PermissionError, match="model.safetensors"):
        _tiny_llama(1).save_pretrained(folder)
    assert _same_weights(_tiny_llama(0), folder)


def _legacy_stream(obj):
    """What torch.save(obj, f, _use_new_zipfile_serialization=False) writes for plain data, made without torch
    (importing it takes seconds): its magic number, protocol, system info, the object, and no storage keys."""
    header = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                             "type_sizes": {"short": 2, "int": 4, "long": 8}})
    return b"".join(pickle.dumps(part, protocol=2) for part in (*header, obj, []))


def test_objects_saved_one_after_another_in_torch_s_legacy_format_load_one_by_one():
    first = _legacy_stream({"epoch": 3})
    stream = io.BytesIO(first + _legacy_stream([1, 2]))
    assert ml.load(stream) == {"epoch": 3} and stream.tell() == len(first)
    assert ml.load(stream) == [1, 2]  # (before: nothing left to read)
