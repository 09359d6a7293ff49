"""The package installs what it needs: the CUDA sources travel inside the wheel."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to copy the tracked tree")
def test_wheel_contains_kernel_sources(tmp_path):
    # Build from a copy so the checkout gets no build/ or egg-info litter.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".cache", "build", "*.egg-info",
                                                           "__pycache__", ".venv*", "notebooks"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path / "dist"), str(src)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("minilora-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"minilora/_kernels/{p.relative_to(REPO / 'kernels').as_posix()}"
                for p in (REPO / "kernels").rglob("*")
                if p.is_file() and p.suffix in (".cu", ".cuh", ".h", ".cpp") or p.name == "cassert"}
    assert any(n.endswith(".cu") for n in expected), "no .cu sources found in kernels/"
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks kernel files: {missing}"
    assert "minilora/cli.py" in names


def test_kernels_dir_is_found():
    from minilora.emulator import KERNELS_DIR
    assert (Path(KERNELS_DIR) / "emu" / "cuda_emu.h").is_file()


def test_the_kernels_folder_is_not_an_importable_package():
    """`python -m pytest` puts the checkout first on sys.path; with a kernels/__init__.py the folder would
    shadow the `kernels` package from PyPI, which transformers >= 5.25 installs and peft imports (CI broke
    on exactly that). Without the file, Python prefers the installed package over the bare folder."""
    root = Path(__file__).resolve().parents[1]
    assert not (root / "kernels" / "__init__.py").exists()
