"""Crashes and hangs of the CUDA emulator become Python exceptions (issue 14).

A kernel runs inside the Python process, so a null-pointer write, an integer division by zero, a stack
overflow, __trap(), exit() or abort() would kill the interpreter, and an endless loop could not be
stopped.  Each kind below must raise KernelFault (or KeyboardInterrupt for Ctrl-C) naming the thread,
the block and the source line -- and the very next launch must work and give the right answer.
The kernels are in tests/emu_kernels/faults.cu.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from minilora import emulator as emu
from minilora.emulator import KernelFault, RawModule

KDIR = Path(__file__).parent / "emu_kernels"
pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")


@lru_cache(maxsize=None)
def faults() -> RawModule:
    return RawModule(path=KDIR / "faults.cu")


def line_of(tag: str) -> int:
    """Line of the `// LINE: tag` marker in faults.cu."""
    lines = (KDIR / "faults.cu").read_text().splitlines()
    return next(i for i, ln in enumerate(lines) if f"// LINE: {tag}" in ln) + 1


def a_normal_launch_works():
    """The process survived and the emulator still computes right: a ragged element-wise division."""
    a = np.arange(1, 101, dtype=np.int32) * 7
    b = np.arange(1, 101, dtype=np.int32)
    q = np.full(100, -1, np.int32)
    faults().get_function("int_divide")(4, 32, (a, b, q, np.int32(100)))
    np.testing.assert_array_equal(q, a // b)


@pytest.mark.parametrize("name, args, block, tag, pattern", [
    ("null_write", lambda: (np.zeros(32, np.float32), np.int32(5)), 32, "null_write",
     r"thread \(5,0,0\) of block \(0,0,0\) of kernel 'null_write' crashed at faults\.cu:{line}: SIGSEGV: "
     r"invalid memory access at address 0x14 \(a null pointer\)"),
    ("wild_write", lambda: (np.zeros(4, np.float32), np.int64(1 << 44)), 1, "wild_write",
     r"thread \(0,0,0\) .* crashed at faults\.cu:{line}: SIGSEGV: invalid memory access"),
    ("int_divide", lambda: (np.arange(40, dtype=np.int32), np.r_[np.ones(39), 0].astype(np.int32),
                            np.zeros(40, np.int32), np.int32(40)), 32, "int_divide",
     r"thread \(7,0,0\) of block \(1,0,0\) of kernel 'int_divide' crashed at faults\.cu:{line}: SIGFPE: "
     r"integer division by zero"),
    ("traps", lambda: (np.zeros(8, np.int32), np.int32(2)), 8, "traps",
     r"__trap\(\) at faults\.cu:{line} in block \(0,0,0\) of kernel 'traps', thread \(2,0,0\)"),
    ("calls_exit", lambda: (np.zeros(8, np.int32), np.int32(2)), 8, "calls_exit",
     r"thread \(2,0,0\) of block \(0,0,0\) of kernel 'calls_exit' called exit\(3\) at faults\.cu:{line}: "
     r"device code cannot end the program"),
    ("calls_abort", lambda: (np.zeros(8, np.int32), np.int32(3)), 8, "calls_abort",
     r"thread \(3,0,0\) .* called abort\(\) at faults\.cu:{line}"),
])
def test_crash_raises_kernel_fault_and_python_keeps_running(name, args, block, tag, pattern):
    grid = 2 if name == "int_divide" else 1
    with pytest.raises(KernelFault, match=pattern.format(line=line_of(tag))):
        faults().get_function(name)(grid, block, args())
    a_normal_launch_works()


def test_stack_follows_the_kernels_needs_and_overflow_hits_the_guard_page():
    big = faults().get_function("big_local_array")
    n = 65536  # a 256 KiB local array per thread: far beyond the old fixed 64 KiB stacks
    out = np.full(4, np.nan, np.float32)
    big(1, 4, (out, np.int32(n)))  # the default stack comes from the compiler's -fstack-usage report
    per_thread = sum((i % 7) for i in range(n))
    np.testing.assert_array_equal(out, [per_thread * (t + 1) for t in range(4)])
    with pytest.raises(KernelFault, match=r"crashed at faults\.cu:\d+: stack overflow: the thread needs more than "
                                          r"its 65536-byte stack .* larger stack_size="):
        big(1, 4, (out, np.int32(n)), stack_size=64 * 1024)
    big(1, 4, (out, np.int32(n)), stack_size=512 * 1024)  # asked for explicitly: enough
    np.testing.assert_array_equal(out, [per_thread * (t + 1) for t in range(4)])
    a_normal_launch_works()


def test_unbounded_recursion_is_a_stack_overflow():
    rec = faults().get_function("deep_recursion")
    out = np.zeros(4, np.int32)
    rec(1, 4, (out, np.int32(100)))
    np.testing.assert_array_equal(out, sum(range(101)))
    with pytest.raises(KernelFault, match=r"thread \(0,0,0\) .* crashed at faults\.cu:\d+: stack overflow"):
        rec(1, 4, (out, np.int32(10 ** 8)))
    a_normal_launch_works()


def test_bad_stack_size_and_timeout_values_are_refused():
    k = faults().get_function("traps")
    with pytest.raises(ValueError, match="stack_size"):
        k(1, 1, (np.zeros(1, np.int32), np.int32(-1)), stack_size=100)
    with pytest.raises(ValueError, match="timeout"):
        k(1, 1, (np.zeros(1, np.int32), np.int32(-1)), timeout=0)


@pytest.mark.parametrize("name, out", [("spins", np.zeros(1, np.int32)), ("spins_in_libm", np.zeros(1, np.float32))])
def test_timeout_stops_an_endless_kernel(name, out):
    flag = np.zeros(1, np.int32)
    start = time.monotonic()
    with pytest.raises(KernelFault, match=rf"kernel '{name}' did not finish within timeout=0\.2 s; stopped in "
                                          r"thread \(\d,0,0\) of block \(0,0,0\)"):
        faults().get_function(name)(1, 4, (flag, out), timeout=0.2)
    assert time.monotonic() - start < 5
    a_normal_launch_works()


@pytest.fixture
def workers_at_once(monkeypatch):
    """Start every worker with the launch (else a launch this short keeps to the calling thread)."""
    monkeypatch.setattr(emu, "_START_WORKERS_AT_ONCE", True)


def test_a_crash_on_another_os_thread_names_the_first_failing_block(workers_at_once):
    """Blocks run on several OS threads: a crash on any of them is caught there (its own signal stack
    and jump), and the report names the first failing block in block order, as one thread would."""
    n = 16 * 32
    a, b = np.arange(n, dtype=np.int32), np.ones(n, np.int32)
    b[[3 * 32 + 9, 11 * 32 + 2]] = 0  # blocks 3 and 11 divide by zero
    for workers in (1, 4):
        with pytest.raises(KernelFault, match=r"thread \(9,0,0\) of block \(3,0,0\) of kernel 'int_divide' crashed at "
                                              rf"faults\.cu:{line_of('int_divide')}: SIGFPE"):
            faults().get_function("int_divide")(16, 32, (a, b, np.zeros(n, np.int32), np.int32(n)), workers=workers)
        a_normal_launch_works()


def test_timeout_stops_every_os_thread(workers_at_once):
    """A timeout reaches the launching thread, which passes it on to the others spinning in their blocks."""
    start = time.monotonic()
    with pytest.raises(KernelFault, match=r"did not finish within timeout=0\.2 s; stopped in thread \(\d,0,0\) of "
                                          r"block \(0,0,0\)"):
        faults().get_function("spins")(8, 4, (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=0.2, workers=4)
    assert time.monotonic() - start < 5
    a_normal_launch_works()


def test_ctrl_c_stops_a_spinning_launch_with_keyboard_interrupt(workers_at_once):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    spins = faults().get_function("spins")
    # Ctrl-C from another thread 0.3 s in (the kernel may deliver it to either thread: both must work).
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt, match=r"kernel 'spins' interrupted \(Ctrl-C\) while running thread"):
            spins(6, 4, (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=30, workers=3)  # the bound if Ctrl-C fails
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    a_normal_launch_works()


def test_handlers_are_restored_after_a_launch():
    """Python's own handlers (faulthandler's SIGSEGV one under pytest) are back once a launch is over."""
    import faulthandler
    before = faulthandler.is_enabled()
    faulthandler.enable()
    try:
        with pytest.raises(KernelFault):
            faults().get_function("null_write")(1, 8, (np.zeros(8, np.float32), np.int32(0)))
        # A segfault outside any launch must still reach faulthandler: prove it in a child process.
        code = ("import faulthandler, ctypes, numpy as np\n"
                "from minilora.emulator import RawModule, KernelFault\n"
                f"m = RawModule(path={str(KDIR / 'faults.cu')!r})\n"
                "faulthandler.enable()\n"
                "try:\n"
                "    m.get_function('null_write')(1, 8, (np.zeros(8, np.float32), np.int32(0)))\n"
                "except KernelFault:\n"
                "    print('caught', flush=True)\n"
                "ctypes.string_at(0)\n")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert res.stdout.strip() == "caught"
        assert res.returncode == -signal.SIGSEGV and "Fatal Python error: Segmentation fault" in res.stderr
    finally:
        if not before:
            faulthandler.disable()


def test_corrupt_cached_library_is_rebuilt(tmp_path):
    """A truncated module.so in the cache (a full disk, a killed copy) is rebuilt, not a crash."""
    env = dict(os.environ, MINILORA_CACHE_DIR=str(tmp_path))
    code = ("from minilora.emulator import RawModule\n"
            f"RawModule(path={str(KDIR / 'faults.cu')!r}).compile()\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)  # fills the cache
    (library,) = tmp_path.glob("*/module.so")
    library.write_bytes(library.read_bytes()[:200])  # this process never mapped it, so it may change
    check = ("import numpy as np\n"
             "from minilora.emulator import RawModule\n"
             f"m = RawModule(path={str(KDIR / 'faults.cu')!r})\n"
             "a = np.arange(1, 41, dtype=np.int32); q = np.zeros(40, np.int32)\n"
             "m.get_function('int_divide')(2, 32, (a * 3, a, q, np.int32(40)))\n"
             "assert (q == 3).all(), q\n"
             "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    assert library.stat().st_size > 200


def test_exit_under_the_sanitizer_is_a_kernel_fault_with_its_line():
    """sanitize=True runs the launch in a child process: exit() there must not pass for success."""
    k = RawModule(path=KDIR / "faults.cu", sanitize=True).get_function("calls_exit")
    with pytest.raises(KernelFault, match=rf"called exit\(3\) at faults\.cu:{line_of('calls_exit')}"):
        k(1, 8, (np.zeros(8, np.int32), np.int32(2)), timeout=120)
    out = np.zeros(8, np.int32)
    k(1, 8, (out, np.int32(-1)), timeout=120)
    np.testing.assert_array_equal(out, 1)


def test_sanitizer_launch_follows_timeout():
    k = RawModule(path=KDIR / "faults.cu", sanitize=True).get_function("spins")
    start = time.monotonic()
    with pytest.raises(KernelFault, match=r"did not finish within timeout=1 s under the sanitizer"):
        k(1, 2, (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=1)
    assert time.monotonic() - start < 30


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_a_killed_parent_leaves_no_sanitizer_child_spinning():
    code = ("import numpy as np\n"
            "from minilora.emulator import RawModule\n"
            f"k = RawModule(path={str(KDIR / 'faults.cu')!r}, sanitize=True).get_function('spins')\n"
            "print('launching', flush=True)\n"
            "k(1, 2, (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "launching"
        deadline = time.monotonic() + 60
        runner = []
        while not runner and time.monotonic() < deadline:  # the sanitizer's child process appears
            runner = _children_of(parent.pid)
            time.sleep(0.05)
        assert runner, "the sanitizer child never started"
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{runner[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
            try:  # a zombie (reaped by init later) is not spinning any more
                if (Path(f"/proc/{runner[0]}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except OSError:
                break
        alive = Path(f"/proc/{runner[0]}/stat").exists() and \
            Path(f"/proc/{runner[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        assert not alive, "the sanitizer child outlived its killed parent"
    finally:
        parent.kill()
