"""Every kernels/*.cu compiles with the real CUDA compiler for sm_80 (A100) and sm_90 (H100/H200), and
the kernels the production path launches (v2, v3, the reduction, AdamW) spill no registers.

No GPU needed: ``nvcc -cubin --resource-usage`` runs ptxas and prints, per kernel, its registers and
"N bytes spill stores, N bytes spill loads". Skipped where nvcc is not installed.
"""
import os
import re
import shutil
import subprocess

import pytest

from minilora import kernels

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")

ARCHS = ("sm_80", "sm_90")
SOURCES = sorted(p.name for p in kernels.kernel_dir().glob("*.cu"))
_PROPERTIES = re.compile(r"Function properties for (\w+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                         r"(\d+) bytes spill loads")


def exported_kernels(name):
    """The extern "C" __global__ function names of a source file."""
    text = (kernels.kernel_dir() / name).read_text()
    return re.findall(r'extern "C" __global__ void(?: __launch_bounds__\([^)]*\))?\s+(\w+)\s*\(', text)


def is_production(kernel):
    return not kernel.endswith("_v1")  # v1 is the naive teaching version, never picked by pick_version


def compile_all(out):
    """{(file, arch): CompletedProcess} of ``nvcc -cubin --resource-usage`` on every source for every arch, one
    after the other, each cubin written to the folder ``out``: the session's background run (tests/background_runs.py),
    on the core the main process leaves idle, as nvcc is slow (~30 s of CI's main process when run here)."""
    folder = kernels.kernel_dir()
    return {(name, arch): subprocess.run(
        ["nvcc", "-cubin", f"-arch={arch}", "--resource-usage", "-I", str(folder), str(folder / name),
         "-o", os.path.join(out, f"{name}.{arch}.cubin")], capture_output=True, text=True)
        for name in SOURCES for arch in ARCHS}


def _submit(runs):
    """Queue the compiles (a no-op when queued already) ahead of the session's later runs: this file runs early."""
    runs.submit(RUN, __name__, "compile_all", str(runs.folder("cubin")))


RUN = "nvcc --resource-usage of kernels/*.cu"


def start_background_runs(items, runs):
    if shutil.which("nvcc") is not None and any(getattr(getattr(item, "module", None), "__name__", None) == __name__
                                                 for item in items):
        _submit(runs)


@pytest.fixture(scope="module")
def ptxas(background):
    """{(file, arch): CompletedProcess} -- every compile, from the background run (or one started here)."""
    _submit(background)
    return background.result(RUN)


def test_every_kernel_file_is_checked():
    assert {"lora_forward.cu", "lora_backward.cu", "adamw.cu", "lora_bf16.cu"} <= set(SOURCES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", SOURCES)
def test_compiles_without_register_spills(ptxas, name, arch):
    res = ptxas[(name, arch)]
    assert res.returncode == 0, f"nvcc rejected {name} for {arch}:\n{res.stderr}"
    report = res.stdout + res.stderr
    spills = {k: (int(st), int(ld)) for k, _, st, ld in _PROPERTIES.findall(report)}
    expected = exported_kernels(name)
    assert expected and set(expected) <= set(spills), \
        f"{name} ({arch}): ptxas reported {sorted(spills)}, expected every exported kernel {expected}"
    spilling = {k: v for k, v in spills.items() if is_production(k) and v != (0, 0)}
    assert not spilling, (f"{name} ({arch}): production kernels spill registers (stores, loads bytes): "
                          f"{spilling}\n{report}")


def _sass_tools():
    """cuobjdump, with nvdisasm next to it or on PATH (pip: nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm)."""
    cuobjdump = shutil.which("cuobjdump")
    env = dict(os.environ)
    try:
        import nvidia
        for root in nvidia.__path__:
            for sub in ("cu13/bin", "cu12/bin", "cuda_cuobjdump/bin", "cuda_nvdisasm/bin"):
                folder = os.path.join(root, sub)
                if os.path.isdir(folder):
                    env["PATH"] = folder + os.pathsep + env["PATH"]
                    cuobjdump = cuobjdump or shutil.which("cuobjdump", path=folder)
    except ImportError:
        pass
    if cuobjdump is None or shutil.which("nvdisasm", path=env["PATH"]) is None:
        return None, None
    return cuobjdump, env


@pytest.mark.parametrize("name,kernel,instructions", [
    ("lora_forward.cu", "lora_fwd_y_v7", ("LDGSTS", "LDGDEPBAR", "DEPBAR.LE")),
    ("lora_backward.cu", "lora_bwd_dx_v7", ("LDGSTS", "LDGDEPBAR", "DEPBAR.LE")),
    ("warp_mma.cu", "mma_bf16_tile", ("LDSM.16.M88.4", "LDSM.16.M88.2", "HMMA.16816.F32.BF16")),
    ("warp_mma.cu", "round_bf16", ("F2FP.BF16.F32.PACK",)),
    ("lora_bf16.cu", "lora_bf16_fwd_y", ("LDGSTS", "LDSM.16.M88.4", "LDSM.16.M88.2", "HMMA.16816.F32.BF16")),
    ("lora_bf16.cu", "lora_bf16_bwd_dx", ("LDGSTS", "LDSM.16.M88.4", "LDSM.16.MT88.4", "HMMA.16816.F32.BF16")),
    ("lora_bf16.cu", "lora_bf16_fwd_y_v2", ("LDGSTS", "LDSM.16.M88.4", "LDSM.16.M88.2", "HMMA.16816.F32.BF16")),
    ("lora_bf16.cu", "lora_bf16_bwd_dx_v2", ("LDGSTS", "LDSM.16.MT88.4", "HMMA.16816.F32.BF16")),
    ("warp_mma.cu", "ldmatrix_trans_tile", ("LDSM.16.MT88.4",))])
def test_sm_90_sass_uses_the_intended_instructions(ptxas, tmp_path, name, kernel, instructions):
    """The inline PTX of common.cuh really reaches the GPU (not the emulator's or the pre-Ampere path):
    v7's main loop is cp.async -- LDGSTS (the copy), LDGDEPBAR (commit_group), DEPBAR (wait_group) --
    and the bf16 primitives are LDSM (ldmatrix; MT88 its .trans form, the backward's W0 fragments), HMMA
    (mma.sync m16n8k16) and F2FP (cvt.rn.bf16x2)."""
    cuobjdump, env = _sass_tools()
    if cuobjdump is None:
        pytest.skip("cuobjdump/nvdisasm not installed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    assert ptxas[(name, "sm_90")].returncode == 0
    folder = kernels.kernel_dir()
    cubin = tmp_path / f"{name}.cubin"
    subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "-I", str(folder), str(folder / name), "-o", str(cubin)],
                   check=True, capture_output=True)
    sass = subprocess.run([cuobjdump, "-sass", "-fun", kernel, str(cubin)], capture_output=True, text=True,
                          env=env, check=True).stdout
    for instruction in instructions:
        assert instruction in sass, f"{kernel}: no {instruction} in its sm_90 SASS"
