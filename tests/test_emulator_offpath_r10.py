"""Round 10 of CUDA written by others on the emulator (tests/emu_kernels/r10/*.cu), and its compile time.

* Compile time: every build force-includes a precompiled cuda_emu.h (one .gch per cache and set of flags): parsing
  the header was two thirds of a small kernel's compile.  The sanitizer's build too (round 16), with its own .gch.  A damaged .gch is dropped and made again, not fatal.
* CuPy's streams and events: ``kernel(grid, block, args, stream=s)``, ``with stream:``, ``Event.record`` and
  ``get_elapsed_time`` (``minilora.emulator.cuda`` in place of ``cupy.cuda``), with CUDA's errors for an event
  that was never recorded or has timing disabled.
* Argument arrays fenced as a GPU's allocations (minilora/emulator_fence.py): a kernel writing a few elements past
  a NumPy array wrote into the host's heap and Python aborted later; now it is a KernelFault naming the argument.
* ``__isShared`` / ``__isGlobal`` / ``__isLocal`` (and PTX's ``isspacep``), the per-architecture headers old
  samples include themselves (``<sm_60_atomic_functions.h>``, ``<sm_61_intrinsics.h>``, ``<driver_types.h>``) and
  CCCL's ``<cuda/cmath>``.
"""
from __future__ import annotations

import subprocess
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import EmulatorError, RawModule, cuda

R10 = Path(__file__).parent / "emu_kernels" / "r10"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")
rng = np.random.default_rng(1010)


@lru_cache(maxsize=None)
def module(name: str, name_expressions: tuple = ()) -> RawModule:
    return RawModule(path=R10 / name, name_expressions=list(name_expressions)).compile()


def line_of(file: str, text: str) -> int:
    """The line of tests/emu_kernels/r10/`file` holding `text`: the messages name it."""
    return next(n for n, line in enumerate((R10 / file).read_text().splitlines(), 1) if text in line)


def sgemm(M: int, N: int, K: int, **launch):
    A, B = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    C = rng.standard_normal((M, N)).astype(np.float32)
    expected = 1.5 * (A.astype(np.float64) @ B) - 0.5 * C
    kernel = module("tiled_sgemm.cu", ("sgemm_tiled<16>",)).get_function("sgemm_tiled<16>")
    kernel((-(-N // 16), -(-M // 16)), (16, 16),
           (np.int32(M), np.int32(N), np.int32(K), np.float32(1.5), A, B, np.float32(-0.5), C), **launch)
    return C, expected


def build_a_new_kernel(**options):
    """Compile and run a kernel no earlier build made (its source names this moment), checking its numbers;
    ``options`` go to RawKernel (sanitize=True)."""
    code = (f"// {time.time_ns()}\nextern \"C\" __global__ void twice(const float* x, float* y, int n) {{\n"
            "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) y[i] = 2.f * x[i];\n}\n")
    x, y = rng.standard_normal(70).astype(np.float32), np.zeros(70, np.float32)
    emu.RawKernel(code, "twice", **options)((2,), (64,), (x, y, np.int32(70)))
    np.testing.assert_array_equal(y, 2 * x)


def recorded_commands(monkeypatch) -> list:
    """The list every command the emulator runs (g++) is appended to, from now on in the test."""
    commands = []
    real_run = subprocess.run

    def recording_run(cmd, *args, **kwargs):
        commands.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(emu.subprocess, "run", recording_run)
    return commands


def test_builds_force_include_one_precompiled_header(monkeypatch):
    commands = recorded_commands(monkeypatch)
    build_a_new_kernel()
    wrapper = next(c for c in commands if "-c" in c and str(c[-3]).endswith("wrapper.cpp"))
    header = Path(wrapper[wrapper.index("-include") + 1])
    gch = header.with_name(header.name + ".gch")
    assert header.parent.name.startswith("pch-") and gch.is_file()
    # the stub includes cuda_emu.h by its own path: g++ falls back to it where the .gch does not fit
    assert header.read_text() == f'#include "{emu.EMU_DIR / "cuda_emu.h"}"\n'
    # a .gch cut short (a full disk, a killed copy) stops g++ with "cannot read PCH file": the build drops it and
    # goes on without, and the next build makes it again
    damaged = gch.with_name(gch.name + ".damaged")
    damaged.write_bytes(gch.read_bytes()[:len(gch.read_bytes()) // 2])
    damaged.replace(gch)
    build_a_new_kernel()
    assert not gch.is_file()
    build_a_new_kernel()
    assert gch.is_file()


def test_the_sanitizer_build_force_includes_a_precompiled_header_of_its_own_flags(monkeypatch):
    commands = recorded_commands(monkeypatch)
    build_a_new_kernel()
    build_a_new_kernel(sanitize=True)
    wrappers = [c for c in commands if "-c" in c and str(c[-3]).endswith("wrapper.cpp")]
    headers = [Path(c[c.index("-include") + 1]) for c in wrappers]
    assert len(headers) == 2 and ["-fsanitize=address" in " ".join(c) for c in wrappers] == [False, True]
    assert all(h.parent.name.startswith("pch-") and h.with_name(h.name + ".gch").is_file() for h in headers)
    assert headers[0] != headers[1]  # a .gch is only good for the flags it was made with


@pytest.mark.parametrize("M, N, K", [(37, 29, 45), (16, 48, 3)])
def test_cupy_streams_and_events_time_a_tiled_sgemm(M, N, K):
    stream = cuda.Stream(non_blocking=True)
    start, end = cuda.Event(), cuda.Event()
    with stream:
        assert cuda.get_current_stream() is stream
        start.record()
        C, expected = sgemm(M, N, K, stream=stream)
        end.record(stream)
    assert cuda.get_current_stream() is cuda.Stream.null
    end.synchronize()
    assert stream.done and end.done and cuda.get_elapsed_time(start, end) >= 0.0
    np.testing.assert_allclose(C, expected, rtol=1e-5, atol=1e-5)
    # stream=None is the current stream, as in CuPy; the element-wise kernels take stream= too
    C, expected = sgemm(M, N, K, stream=None)
    np.testing.assert_allclose(C, expected, rtol=1e-5, atol=1e-5)
    double = emu.ElementwiseKernel("float32 x", "float32 y", "y = 2 * x", "double_it")
    np.testing.assert_array_equal(double(C, stream=stream), 2 * C)


def test_streams_and_events_refuse_what_cuda_refuses():
    with pytest.raises(TypeError, match="stream must be a minilora.emulator.Stream"):
        sgemm(16, 16, 16, stream=7)
    recorded = cuda.Stream().record()
    with pytest.raises(EmulatorError, match="cudaErrorInvalidResourceHandle.*never recorded"):
        cuda.get_elapsed_time(cuda.Event(), recorded)
    untimed = cuda.Event(disable_timing=True)
    untimed.record()
    with pytest.raises(EmulatorError, match="cudaErrorInvalidResourceHandle.*disable_timing"):
        cuda.get_elapsed_time(recorded, untimed)
    with pytest.raises(EmulatorError, match="cudaErrorInvalidValue"):
        cuda.Event(interprocess=True)
    calls = []
    cuda.Stream().launch_host_func(calls.append, "host function")
    assert calls == ["host function"]


@pytest.mark.parametrize("use_shared", [1, 0])
def test_address_space_predicates_name_shared_global_and_local(use_shared):
    n, block = 100, 64
    x, y = rng.standard_normal(n).astype(np.float32), np.zeros(n, np.float32)
    scratch, spaces = np.zeros(2 * block, np.float32), np.zeros(6, np.uint32)
    kernel = module("address_spaces.cu").get_function("stage_and_scale")
    kernel((2,), (block,), (x, y, scratch, spaces, np.float32(-3), np.int32(n), np.int32(use_shared)),
           shared_mem=block * 4)
    np.testing.assert_array_equal(y, -3 * x)
    shared, glob, local = 1, 2, 4
    np.testing.assert_array_equal(spaces[:5], [shared if use_shared else glob, shared, local, glob, shared])
    assert spaces[5] == 0b010 | use_shared  # PTX's isspacep.shared on the stage, a __shared__ array, x


@pytest.mark.parametrize("n", [203, 8, 3])
def test_per_architecture_headers_and_cuda_cmath(n):
    a = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    b = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    total = np.zeros(1, np.float64)
    module("old_headers.cu").get_function("dot_int8_accumulate")((2,), (32,), (a, b, total, np.int32(n)))
    bytes_a, bytes_b = a.view(np.int8).reshape(n, 4).astype(np.int64), b.view(np.int8).reshape(n, 4).astype(np.int64)
    assert total[0] == (bytes_a * bytes_b).sum()  # integers below 2**53: exact in any order


@pytest.mark.parametrize("extra, where", [(3, "slack"), (300, "guard")])
def test_a_write_past_an_array_is_a_named_fault_and_python_lives_on(extra, where):
    kernel = module("bounds.cu").get_function("fill_with_wrong_bound")
    for size in range(97, 104):  # every padding to the 256-byte alignment
        neighbours = [np.full(size, 1.0, np.float32) for _ in range(4)]
        y = neighbours[1]
        slack = -4 * size % 16  # the fenced copy ends within 16 bytes of its guard page (round 11)
        in_slack = where == "slack" and 4 * extra <= slack
        past = slack if where == "slack" else r"\d+"
        message = ("out-of-bounds write past the end of argument 0 \\('y'\\): 12 of the .* bytes after its allocation"
                   if in_slack else
                   rf"crashed at bounds.cu:{line_of('bounds.cu', 'y[i] = 7.0f')}: SIGSEGV.*out of bounds: {past} bytes "
                   rf"past the end of argument 0 \('y'\), an allocation of {4 * size} bytes")
        with pytest.raises(emu.KernelFault, match=message):
            kernel((3,), (128,), (y, np.int32(size), np.int32(extra)))
        if in_slack:  # found after the launch: every element in bounds was written, as on a GPU
            np.testing.assert_array_equal(y, 7.0)
        for other in neighbours[:1] + neighbours[2:]:
            np.testing.assert_array_equal(other, 1.0)
        del neighbours, y  # freeing them walked into the overwritten heap before
    # what a GPU allows still works: the fence is around the allocation, not the view (x[-1] of base[2:] is
    # base[1]), and arguments that share memory share one fenced copy (x and y the same array)
    base, y = rng.standard_normal(50).astype(np.float32), np.zeros(48, np.float32)
    module("bounds.cu").get_function("backward_difference")((1,), (64,), (base[2:], y, np.int32(48)))
    np.testing.assert_array_equal(y, base[2:] - base[1:-1])
    x = rng.standard_normal(70).astype(np.float32)
    expected = np.float32(-2) * x
    module("bounds.cu").get_function("scale_in_place")((1,), (128,), (x, x, np.float32(-2), np.int32(70)))
    np.testing.assert_array_equal(x, expected)
