"""Config files with values of the wrong type, round 11: each is refused at load, naming the file, the key and
the value, where minilora read it without a word -- with transformers' exception type and words where it has
them, and as transformers does where it also accepts the value.

tokenizer_config.json: ``extra_special_tokens`` (or ``additional_special_tokens``) as a string or holding a
number, ``tokenizer_class`` not a string; a dict of named extra tokens gives its tokens, not its names; an
extra token missing from tokenizer.json is added, as transformers adds it, where it was read as <unk>.
config.json: a bad ``rope_scaling`` beside ``rope_parameters``, ``use_cache``/``pretraining_tp``/``num_labels``/
``id2label``/``layer_types`` of the wrong type. generation_config.json: ``cache_implementation``,
``suppress_tokens``, ``begin_suppress_tokens``, ``stop_strings`` of the wrong type. Temporary files: the C
build cache and the emulator's sources remove what a killed build left; the notebook builder writes through
minilora's atomic_write (its own temporary name, fsynced) where two builds shared ``<name>.ipynb.tmp``.
"""
import json
import os
import subprocess
import sys

import pytest

from minilora import native
from minilora.models import LlamaConfig, LlamaForCausalLM
from minilora.nn.generation import GenerationConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = dict(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              max_position_embeddings=32, bos_token_id=0, eos_token_id=1)
VOCAB = ["<unk>", "<s>", "</s>", "<pad>", "hello", "world", ","]


# ==================================================================================================
# tokenizer_config.json
# ==================================================================================================
def _tokenizer_folder(folder, **config):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", **config}, f)
    return str(folder)


def _transformers_refuses(folder, exception, words):
    transformers = pytest.importorskip("transformers")
    with pytest.raises(exception, match=words):
        transformers.AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("key", ["extra_special_tokens", "additional_special_tokens"])
def test_extra_special_tokens_as_a_string_is_transformers_type_error(tmp_path, key):
    # A string was read as a list: "<x>" became one special token per letter ("x" alone: the token "x").
    from minilora import tokenizer
    folder = _tokenizer_folder(tmp_path, **{key: "x"})
    words = "must be a list/tuple of tokens or a dict of named tokens"
    with pytest.raises(TypeError, match=words) as caught:
        tokenizer.from_pretrained(folder)
    assert os.path.join(folder, "tokenizer_config.json") in str(caught.value) and key in str(caught.value)
    _transformers_refuses(folder, TypeError, words)


def test_extra_special_tokens_holding_a_number_is_refused(tmp_path):
    # [1] was dropped without a word; transformers' tokenizers refuses it ("Input must be a List[...]").
    from minilora import tokenizer
    folder = _tokenizer_folder(tmp_path, extra_special_tokens=["<pad>", 1])
    with pytest.raises(TypeError, match=r"tokenizer_config.json: extra_special_tokens must hold tokens .*got 1"):
        tokenizer.from_pretrained(folder)
    _transformers_refuses(folder, TypeError, "Input must be a List")


def test_named_extra_special_tokens_give_their_tokens(tmp_path):
    # transformers 5's dict of named tokens ({"image_token": "<pad>"}): its values are the special tokens;
    # minilora took its names, making "image_token" a special token.
    from minilora import tokenizer
    folder = _tokenizer_folder(tmp_path, extra_special_tokens={"image_token": "<pad>"}, pad_token=None)
    ours = tokenizer.from_pretrained(folder)
    assert ours.extra_special_tokens == ["<pad>"]
    transformers = pytest.importorskip("transformers")
    assert "<pad>" in transformers.AutoTokenizer.from_pretrained(folder).all_special_tokens


def test_an_extra_special_token_missing_from_the_vocabulary_is_added_as_transformers(tmp_path):
    # A class without pipeline rules read "<img>" as <unk>; transformers adds it (the next id) as a special token.
    from minilora import tokenizer
    folder = _tokenizer_folder(tmp_path, extra_special_tokens=["<img>"])
    ours = tokenizer.from_pretrained(folder)
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    assert ours.encode("hello <img>") == theirs.encode("hello <img>") == [4, len(VOCAB)]
    assert len(ours) == len(theirs) == len(VOCAB) + 1


def test_tokenizer_class_not_a_string_is_named(tmp_path):
    # It was ignored (the class's rules silently not applied); transformers fails on it with an AttributeError
    # ('int' object has no attribute 'removesuffix').
    from minilora import tokenizer
    folder = _tokenizer_folder(tmp_path, tokenizer_class=5)
    with pytest.raises(ValueError, match="tokenizer_config.json: tokenizer_class must be a class name string, got 5"):
        tokenizer.from_pretrained(folder)


# ==================================================================================================
# config.json
# ==================================================================================================
def _model_folder(tmp_path, **changes):
    folder = tmp_path / "m"
    LlamaForCausalLM(LlamaConfig(**CONFIG)).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return str(folder)


def _transformers_config_refuses(folder, name):
    transformers = pytest.importorskip("transformers")
    errors = pytest.importorskip("huggingface_hub.errors")  # (transformers 5's strict config raises hub's error)
    strict = getattr(errors, "StrictDataclassFieldValidationError", TypeError)
    with pytest.raises((TypeError, AttributeError, strict), match=name):
        transformers.LlamaConfig.from_pretrained(folder)


@pytest.mark.parametrize("wrong", ["linear", 2, [1]])
def test_a_bad_rope_scaling_beside_rope_parameters_is_refused(tmp_path, wrong):
    # With rope_parameters present, a rope_scaling that is no object was skipped without a word.
    folder = _model_folder(tmp_path, rope_scaling=wrong)
    with pytest.raises(ValueError, match=rf"config.json: config field 'rope_scaling' is {wrong!r}".replace("[", r"\[")):
        LlamaForCausalLM.from_pretrained(folder)
    _transformers_config_refuses(folder, "rope_parameters")  # (transformers 5 reads rope_scaling as it)


@pytest.mark.parametrize("name, wrong", [
    ("use_cache", "no"),  # read as true: a cache was kept
    ("pretraining_tp", "1"),
    ("layer_types", 5),
])
def test_config_attributes_of_the_wrong_type_are_named(tmp_path, name, wrong):
    folder = _model_folder(tmp_path, **{name: wrong})
    with pytest.raises(ValueError, match=rf"config.json: config field '{name}' is {wrong!r}"):
        LlamaForCausalLM.from_pretrained(folder)
    transformers = pytest.importorskip("transformers")
    errors = pytest.importorskip("huggingface_hub.errors")
    with pytest.raises((TypeError, getattr(errors, "StrictDataclassFieldValidationError", TypeError))):
        transformers.LlamaConfig.from_pretrained(folder)


@pytest.mark.parametrize("name, wrong", [("num_labels", "2"), ("id2label", [1])])
def test_task_head_attributes_of_the_wrong_type_are_named(tmp_path, name, wrong):
    # Kept without a word, they failed in the classification head, far from config.json (as in transformers).
    folder = _model_folder(tmp_path, **{name: wrong})
    with pytest.raises(ValueError, match=rf"config.json: config field '{name}' is "):
        LlamaConfig.from_pretrained(folder)
    transformers = pytest.importorskip("transformers")
    with pytest.raises((TypeError, AttributeError)):
        transformers.LlamaConfig.from_pretrained(folder)


# ==================================================================================================
# generation_config.json
# ==================================================================================================
def _generation_folder(tmp_path, options):
    folder = tmp_path / "g"
    folder.mkdir(parents=True)
    (folder / "generation_config.json").write_text(json.dumps(options))
    return str(folder)


def test_an_unknown_cache_implementation_is_transformers_value_error(tmp_path):
    # minilora's generate ignores the cache's name, but transformers refuses one it does not know at load.
    folder = _generation_folder(tmp_path, {"cache_implementation": 5})
    with pytest.raises(ValueError, match=r"generation_config.json: Invalid `cache_implementation` \(5\)"):
        GenerationConfig.from_pretrained(folder)
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ValueError, match=r"Invalid `cache_implementation` \(5\)"):
        transformers.GenerationConfig.from_pretrained(folder)
    assert GenerationConfig.from_pretrained(_generation_folder(tmp_path / "ok", {"cache_implementation": "static"}))


@pytest.mark.parametrize("name, wrong, right", [
    ("suppress_tokens", "1", [1]),  # "'<=' not supported between 'int' and 'str'" at the first step
    ("begin_suppress_tokens", 5, [5]),  # "'int' object is not iterable"
    ("stop_strings", 5, ["stop"]),
])
def test_token_lists_of_the_wrong_type_are_named_at_load(tmp_path, name, wrong, right):
    folder = _generation_folder(tmp_path, {name: wrong})
    with pytest.raises(TypeError, match=rf"generation_config.json: generation option `{name}` is {wrong!r}"):
        GenerationConfig.from_pretrained(folder)
    good = _generation_folder(tmp_path / "ok", {name: right})
    assert getattr(GenerationConfig.from_pretrained(good), name) == right


# ==================================================================================================
# Temporary files left by a killed build
# ==================================================================================================
def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_build_cache_removes_a_killed_builds_leftovers(tmp_path):
    # A compile killed mid-way left <library>.<pid>.<thread>.tmp (and g++'s .su reports) in the cache forever.
    output = tmp_path / "kernels-abc.so"
    dead, alive = _dead_pid(), os.getpid()
    left = [f"{output.name}.{dead}.7.tmp", f"{output.name}.{dead}.7.tmp-kernels.su", f"{output.name}.{dead}.7.su"]
    kept = [f"{output.name}.{alive}.9.tmp", "other.so", f"{output.name}.gch"]  # a build in progress, other files
    for name in left + kept:
        (tmp_path / name).write_text("x")
    with pytest.raises(native.CompileFailed):  # (a compiler that fails: nothing of its own is left either)
        native.compile_atomically([sys.executable, "-c", "import sys; sys.exit('no')"], output)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


def test_a_failing_before_rename_leaves_no_temporary_file(tmp_path):
    def refuse(tmp):
        raise RuntimeError("refused")
    with pytest.raises(RuntimeError, match="refused"):
        native.compile_atomically([sys.executable, "-c", "import sys; open(sys.argv[2], 'w')"], tmp_path / "x.so",
                                  refuse)
    assert os.listdir(tmp_path) == []


def test_the_emulators_sources_remove_a_killed_writes_leftovers(tmp_path):
    from minilora.emulator import _write_atomic
    target = tmp_path / "kernel.cu"
    (tmp_path / f"kernel.cu.{_dead_pid()}.k2j4x.tmp").write_text("half")
    _write_atomic(target, "int x;\n")
    assert os.listdir(tmp_path) == ["kernel.cu"] and target.read_text() == "int x;\n"


def test_notebooks_are_written_through_atomic_write(tmp_path, monkeypatch):
    # A fixed "<name>.ipynb.tmp": two builds at once wrote one file, and it was never fsynced.
    pytest.importorskip("nbformat")
    monkeypatch.syspath_prepend(os.path.join(ROOT, "notebooks"))
    import build_notebooks
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / "01.ipynb"
    os.mkdir(str(path) + ".tmp")  # the fixed name taken (another build's, here a folder)
    nb = build_notebooks.to_notebook(build_notebooks.sources()[0])
    build_notebooks._write(nb, path)
    import nbformat
    assert nbformat.read(str(path), as_version=4).cells == nb.cells and synced
    assert sorted(os.listdir(tmp_path)) == ["01.ipynb", "01.ipynb.tmp"]
