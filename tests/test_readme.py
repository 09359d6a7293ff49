"""The README works as written: its Python blocks run, in order, as a reader would paste them; its
first commands are the two set-up commands; CI runs its test command verbatim; every file it links
is in the repository."""
import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from minilora.models import BASE_NAME

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_opens_with_the_two_setup_commands():
    first = code_blocks("bash")[0].splitlines()
    assert first[0].startswith('pip install -e ".[tools]" && minilora demo')
    assert first[1].startswith('pip install -e ".[test,interop,distributed,serve,mkl]" && python -m pytest -q tests')
    assert README.index("```bash") < README.index("```python")


def test_ci_runs_the_readme_test_command_verbatim():
    command = code_blocks("bash")[0].splitlines()[1].split("#")[0].strip()
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_readme_links_only_files_in_the_repository():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target
    assert "DESIGN.md" not in README and "/work/" not in README  # nothing outside the repository
    assert "(ARCHITECTURE.md)" in README


def test_every_python_block_runs_in_order(tmp_path, monkeypatch):
    """One namespace for all blocks (a reader pastes them one after another), in a scratch folder so
    that the files they write stay out of the source tree."""
    blocks = code_blocks("python")
    assert len(blocks) >= 4  # the first look, the shipped model, a LoRA training loop, the adapter back
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    printed = io.StringIO()
    for number, block in enumerate(blocks):
        with contextlib.redirect_stdout(printed):
            try:
                exec(compile(block, f"README.md python block {number + 1}", "exec"), namespace)
            except Exception as exc:  # name the block that failed
                pytest.fail(f"README python block {number + 1} raised {type(exc).__name__}: {exc}\n{block}")
    out = printed.getvalue()
    assert "trainable params: 16,384 || all params: 853,504" in out  # the number the README shows
    assert "loss after 30 steps" in out
    assert sorted(os.listdir(tmp_path / "reverse-adapter")) == ["README.md", "adapter_config.json",
                                                                "adapter_model.safetensors"]


def test_architecture_names_only_files_and_functions_that_exist():
    """ARCHITECTURE.md is kept true to the code: every path it names exists, every dotted
    ``module.function`` it names is an attribute of that module."""
    import importlib
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for name in re.findall(r"`([\w./{},*-]+)`", text):
        if "{" in name:  # minilora/{data,train}.py
            head, rest = name.split("{")
            inner, tail = rest.split("}")
            paths = [head + part + tail for part in inner.split(",")]
        else:
            paths = [name]
        for path in paths:
            if "/" in path and "*" not in path and path != BASE_NAME:  # from the root, or inside the package
                assert (ROOT / path).exists() or (ROOT / "minilora" / path).exists(), path
    for module, attr in re.findall(r"`(kernels|blas|parallel|models)\.(?!(?:py|cu|cuh|md)`)(\w+)", text):
        assert hasattr(importlib.import_module(f"minilora.{module}"), attr), f"{module}.{attr}"
