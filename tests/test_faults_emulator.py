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

import background_runs
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
    faults().get_function("int_divide")((4,), (32,), (a, b, q, np.int32(100)))
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
        faults().get_function(name)((grid,), (block,), args())
    a_normal_launch_works()


def test_stack_follows_the_kernels_needs_and_overflow_hits_the_guard_page():
    big = faults().get_function("big_local_array")
    n = 65536  # a 256 KiB local array per thread: far beyond the old fixed 64 KiB stacks
    out = np.full(4, np.nan, np.float32)
    big((1,), (4,), (out, np.int32(n)))  # the default stack comes from the compiler's -fstack-usage report
    per_thread = sum((i % 7) for i in range(n))
    np.testing.assert_array_equal(out, [per_thread * (t + 1) for t in range(4)])
    with pytest.raises(KernelFault, match=r"crashed at faults\.cu:\d+: stack overflow: the thread needs more than "
                                          r"its 65536-byte stack .* larger stack_size="):
        big((1,), (4,), (out, np.int32(n)), stack_size=64 * 1024)
    big((1,), (4,), (out, np.int32(n)), stack_size=512 * 1024)  # asked for explicitly: enough
    np.testing.assert_array_equal(out, [per_thread * (t + 1) for t in range(4)])
    a_normal_launch_works()


@pytest.mark.parametrize("workers", [1, 2])
def test_unbounded_recursion_is_a_stack_overflow(workers, workers_at_once):
    """On any worker's OS thread: each fiber stack has a guard below it, each worker a signal stack."""
    rec = faults().get_function("deep_recursion")
    out = np.zeros(4, np.int32)
    rec((1,), (4,), (out, np.int32(100)), workers=workers)
    np.testing.assert_array_equal(out, sum(range(101)))
    with pytest.raises(KernelFault, match=r"thread \(0,0,0\) of block \(0,0,0\) .* crashed at faults\.cu:\d+: "
                                          r"stack overflow"):
        rec((3,), (4,), (np.zeros(12, np.int32), np.int32(10 ** 8)), workers=workers)
    a_normal_launch_works()


# ---- out-of-bounds __shared__ accesses -----------------------------------------------------------
# Each shared array ends where an inaccessible guard starts (runtime.cpp, "shared memory"), so an index
# past its end faults on the spot -- on whichever OS thread runs the block -- instead of corrupting the
# heap the interpreter lives on ("double free or corruption" before).  Near misses that stay inside the
# array's page (before its start, or in what its 16-byte alignment leaves after it) hit canary bytes,
# checked when the block ends.
SHARED_OOB = r"""
extern "C" __global__ void static_oob(float* out, int at, int reads) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = float(t);
    __syncthreads();
    if (t == 255 && at != t) {
        if (reads) out[256] = s[at];  // LINE: static read
        else s[at] = -1.0f;  // LINE: static write
    }
    __syncthreads();
    out[t] = s[t];
}
extern "C" __global__ void dynamic_oob(float* out, int at, int reads) {
    extern __shared__ float d[];
    const int t = threadIdx.x;
    d[t] = float(t);  // LINE: dynamic fill
    __syncthreads();
    if (t == 255 && at != t) {
        if (reads) out[256] = d[at];  // LINE: dynamic read
        else d[at] = -1.0f;  // LINE: dynamic write
    }
    __syncthreads();
    out[t] = d[t];
}
extern "C" __global__ void every_thread_writes(float* out) {
    __shared__ float half[256];
    half[threadIdx.x] = 1.0f;  // LINE: 512 threads
    out[threadIdx.x] = half[threadIdx.x];
}
extern "C" __global__ void odd_size(float* out, int at) {
    __shared__ float three[3];
    if (threadIdx.x == 0) {
        three[0] = three[1] = three[2] = 1.0f;
        three[at] = 2.0f;  // LINE: odd size
    }
    out[threadIdx.x] = three[0];
}
"""


@lru_cache(maxsize=None)
def shared_oob() -> RawModule:
    return RawModule(code=SHARED_OOB)


def oob_line(tag: str) -> int:
    return next(i for i, ln in enumerate(SHARED_OOB.splitlines()) if f"// LINE: {tag}" in ln) + 1


def shared_launch(name: str, at: int, reads: bool, workers: int, shared_mem: int = 0, grid: int = 4):
    out = np.full(257, np.nan, np.float32)
    shared_oob().get_function(name)((grid,), (256,), (out, np.int32(at), np.int32(reads)), shared_mem=shared_mem,
                                    workers=workers)
    return out


def shared_memory_still_works(workers: int):
    """The interpreter is alive and the same kernels run right (the canary and guards are in place again)."""
    for name in ("static_oob", "dynamic_oob"):
        np.testing.assert_array_equal(shared_launch(name, 255, False, workers, 1024)[:256], np.arange(256))
    a_normal_launch_works()


def past_end(byte: int, size: int) -> str:
    return "just past the end" if byte == size else f"{byte - size} bytes past the end"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("reads", [False, True], ids=["write", "read"])
@pytest.mark.parametrize("elements_past", [1, 256, (1 << 20) // 4], ids=["1 element", "256 elements", "1 MiB"])
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_shared_overflow_is_a_kernel_fault_naming_the_array(kind, elements_past, reads, workers, workers_at_once):
    at = 255 + elements_past
    byte = 4 * at
    access = "read" if reads else "write"
    array = ("__shared__ 's' \\(1024 bytes, declared at static_oob.cu:3\\)" if kind == "static"
             else "extern __shared__ memory \\(shared_mem=1024 bytes at launch\\)")
    hint = "; launch with a larger shared_mem=" if kind == "dynamic" else "$"
    with pytest.raises(KernelFault, match=rf"^thread \(255,0,0\) of block \(0,0,0\) of kernel '{kind}_oob' crashed at "
                                          rf"static_oob\.cu:{oob_line(f'{kind} {access}')}: out-of-bounds __shared__ "
                                          rf"access: a {access} at byte {byte} of {array}, "
                                          rf"{past_end(byte, 1024)}{hint}"):
        shared_launch(f"{kind}_oob", at, reads, workers, shared_mem=1024)
    shared_memory_still_works(workers)


@pytest.mark.parametrize("workers", [1, 2])
def test_too_small_shared_mem_faults_at_the_first_byte_beyond_it(workers, workers_at_once):
    for shared_mem in (512, 0):
        with pytest.raises(KernelFault, match=rf"thread \({shared_mem // 4},0,0\) of block \(0,0,0\) of kernel "
                                              rf"'dynamic_oob' crashed at static_oob\.cu:{oob_line('dynamic fill')}: "
                                              rf"out-of-bounds __shared__ access: a write at byte {shared_mem} of extern "
                                              rf"__shared__ memory \(shared_mem={shared_mem} bytes at launch\), just "
                                              r"past the end; launch with a larger shared_mem= if the kernel needs"):
            shared_launch("dynamic_oob", 255, False, workers, shared_mem=shared_mem)
    shared_memory_still_works(workers)


def test_more_threads_than_shared_elements(workers_at_once):
    """The learner's classic: `__shared__ float s[256]` indexed by threadIdx.x in a block of 512."""
    with pytest.raises(KernelFault, match=rf"thread \(256,0,0\) of block \(0,0,0\) of kernel 'every_thread_writes' "
                                          rf"crashed at static_oob\.cu:{oob_line('512 threads')}: out-of-bounds "
                                          r"__shared__ access: a write at byte 1024 of __shared__ 'half'"):
        shared_oob().get_function("every_thread_writes")((2,), (512,), (np.zeros(512, np.float32),), workers=2)
    shared_memory_still_works(2)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_shared_underflow_faults_or_is_caught_by_the_canary(kind, workers_at_once):
    array = ("__shared__ 's' \\(1024 bytes, declared at static_oob.cu:3\\)" if kind == "static"
             else "extern __shared__ memory \\(shared_mem=1024 bytes at launch\\)")
    # Far before the start: the lower guard.
    with pytest.raises(KernelFault, match=rf"thread \(255,0,0\) .* crashed at static_oob\.cu:"
                                          rf"{oob_line(f'{kind} write')}: out-of-bounds __shared__ access: a write at "
                                          rf"byte -8000 of {array}, before its start$"):
        shared_launch(f"{kind}_oob", -2000, False, 2, shared_mem=1024)
    # Just before it, inside the array's page: the canary, when the block ends.
    with pytest.raises(KernelFault, match=rf"^out-of-bounds write before the start of {array}: its bytes -4\.\.-1 "
                                          r"changed \(seen when block \(0,0,0\) of kernel '\w+' ended\)"):
        shared_launch(f"{kind}_oob", -1, False, 2, shared_mem=1024)
    shared_memory_still_works(2)


def test_what_alignment_leaves_after_an_array_is_checked_too():
    """`float three[3]` is 12 bytes; its 16-byte alignment leaves 4 canary bytes before the guard."""
    k = shared_oob().get_function("odd_size")
    out = np.zeros(4, np.float32)
    with pytest.raises(KernelFault, match=r"^out-of-bounds write past the end of __shared__ 'three' \(12 bytes, declared "
                                          r"at static_oob\.cu:\d+\): its bytes 12\.\.15 changed"):
        k((1,), (4,), (out, np.int32(3)))
    with pytest.raises(KernelFault, match=rf"crashed at static_oob\.cu:{oob_line('odd size')}: out-of-bounds __shared__ "
                                          r"access: a write at byte 16 of __shared__ 'three' \(12 bytes, declared at "
                                          r"static_oob\.cu:\d+\), 4 bytes past the end$"):
        k((1,), (4,), (out, np.int32(4)))
    k((1,), (4,), (out, np.int32(2)))
    np.testing.assert_array_equal(out, 1.0)
    shared_memory_still_works(1)


def test_shared_overflow_in_a_cooperative_launch():
    """Cooperative launches keep every block's shared memory at once; each array has its own guards."""
    k = RawModule(code=SHARED_OOB, enable_cooperative_groups=True).get_function("static_oob")
    out = np.zeros(257, np.float32)
    k((3,), (256,), (out, np.int32(255), np.int32(0)))
    np.testing.assert_array_equal(out[:256], np.arange(256))
    with pytest.raises(KernelFault, match=r"thread \(255,0,0\) of block \(0,0,0\) .* a write at byte 1024 of "
                                          r"__shared__ 's'"):
        k((3,), (256,), (out, np.int32(256), np.int32(0)))
    k((3,), (256,), (out, np.int32(255), np.int32(0)))
    np.testing.assert_array_equal(out[:256], np.arange(256))


def test_local_array_written_past_the_top_of_the_stack():
    """Upwards from a fiber's stack lies the guard of the next one: a KernelFault that says so (it is no
    stack overflow, and a larger stack_size= would not help).  Through a pointer: the array's own subscript is
    named by the bounds check first (test_emulator_users_r29)."""
    k = RawModule(code='''
extern "C" __global__ void local_past_end(float* out, int n) {
    float a[16], *p = a;
    for (int i = 0; i < n; ++i) p[i] = 1.0f;
    out[threadIdx.x] = a[3];
}''').get_function("local_past_end")
    with pytest.raises(KernelFault, match=r"thread \(0,0,0\) of block \(0,0,0\) .* crashed at local_past_end\.cu:4: "
                                          r"SIGSEGV: an access above the top of the thread's stack, at address 0x[0-9a-f]+ "
                                          r"\(a local array indexed past its end\?\)"):
        k((1,), (4,), (np.zeros(4, np.float32), np.int32(1 << 22)))
    out = np.zeros(4, np.float32)
    k((1,), (4,), (out, np.int32(16)))
    np.testing.assert_array_equal(out, 1.0)


def test_bad_stack_size_and_timeout_values_are_refused():
    k = faults().get_function("traps")
    with pytest.raises(ValueError, match="stack_size"):
        k((1,), (1,), (np.zeros(1, np.int32), np.int32(-1)), stack_size=100)
    with pytest.raises(ValueError, match="timeout"):
        k((1,), (1,), (np.zeros(1, np.int32), np.int32(-1)), timeout=0)


@pytest.mark.parametrize("name, out", [("spins", np.zeros(1, np.int32)), ("spins_in_libm", np.zeros(1, np.float32))])
def test_timeout_stops_an_endless_kernel(name, out):
    flag = np.zeros(1, np.int32)
    start = time.monotonic()
    with pytest.raises(KernelFault, match=rf"kernel '{name}' did not finish within timeout=0\.2 s; stopped in "
                                          r"thread \(\d,0,0\) of block \(0,0,0\)"):
        faults().get_function(name)((1,), (4,), (flag, out), timeout=0.2)
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
            faults().get_function("int_divide")((16,), (32,), (a, b, np.zeros(n, np.int32), np.int32(n)), workers=workers)
        a_normal_launch_works()


def test_timeout_stops_every_os_thread(workers_at_once):
    """A timeout reaches the launching thread, which passes it on to the others spinning in their blocks."""
    start = time.monotonic()
    with pytest.raises(KernelFault, match=r"did not finish within timeout=0\.2 s; stopped in thread \(\d,0,0\) of "
                                          r"block \(0,0,0\)"):
        faults().get_function("spins")((8,), (4,), (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=0.2, workers=4)
    assert time.monotonic() - start < 5
    a_normal_launch_works()


def test_ctrl_c_stops_a_spinning_launch_with_keyboard_interrupt(workers_at_once, python_sigint):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    spins = faults().get_function("spins")
    # Ctrl-C from another thread 0.3 s in (the kernel may deliver it to either thread: both must work).
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt, match=r"kernel 'spins' interrupted \(Ctrl-C\) while running thread"):
            spins((6,), (4,), (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=30, workers=3)  # the bound if Ctrl-C fails
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
            faults().get_function("null_write")((1,), (8,), (np.zeros(8, np.float32), np.int32(0)))
        # A segfault outside any launch must still reach faulthandler: prove it in a child process.
        code = ("import faulthandler, ctypes, numpy as np\n"
                "from minilora.emulator import RawModule, KernelFault\n"
                f"m = RawModule(path={str(KDIR / 'faults.cu')!r})\n"
                "faulthandler.enable()\n"
                "try:\n"
                "    m.get_function('null_write')((1,), (8,), (np.zeros(8, np.float32), np.int32(0)))\n"
                "except KernelFault:\n"
                "    print('caught', flush=True)\n"
                "ctypes.string_at(0)\n")
        res = background_runs.run_process([sys.executable, "-c", code], timeout=120)
        assert res.stdout.strip() == "caught"
        assert res.returncode == -signal.SIGSEGV and "Fatal Python error: Segmentation fault" in res.stderr
    finally:
        if not before:
            faulthandler.disable()


def test_corrupt_cached_library_is_rebuilt(tmp_path):
    """A truncated module.so in the cache (a full disk, a killed copy) is rebuilt, not a crash."""
    # The kernel's build starts from the session cache's runtimes and precompiled headers, where earlier tests built
    # them (linked here, not rebuilt: ~6 s of CI's time that this test is not about); the library is what it
    # builds, truncates and rebuilds
    for built in [*emu.cache_dir().glob("runtime-*.o"), *emu.cache_dir().glob("pch-*")]:
        (tmp_path / built.name).symlink_to(built, target_is_directory=built.is_dir())
    env = dict(os.environ, MINILORA_CACHE_DIR=str(tmp_path))
    code = ("from minilora.emulator import RawModule\n"
            f"RawModule(path={str(KDIR / 'faults.cu')!r}).compile()\n")
    filled = background_runs.run_process([sys.executable, "-c", code], env=env, timeout=300)  # fills the cache
    assert filled.returncode == 0, filled.stderr[-2000:]
    (library,) = tmp_path.glob("*/module.so")
    library.write_bytes(library.read_bytes()[:200])  # this process never mapped it, so it may change
    check = ("import numpy as np\n"
             "from minilora.emulator import RawModule\n"
             f"m = RawModule(path={str(KDIR / 'faults.cu')!r})\n"
             "a = np.arange(1, 41, dtype=np.int32); q = np.zeros(40, np.int32)\n"
             "m.get_function('int_divide')((2,), (32,), (a * 3, a, q, np.int32(40)))\n"
             "assert (q == 3).all(), q\n"
             "print('ok')\n")
    res = background_runs.run_process([sys.executable, "-c", check], env=env, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    assert library.stat().st_size > 200


def test_exit_under_the_sanitizer_is_a_kernel_fault_with_its_line():
    """sanitize=True runs the launch in a child process: exit() there must not pass for success."""
    k = RawModule(path=KDIR / "faults.cu", sanitize=True).get_function("calls_exit")
    with pytest.raises(KernelFault, match=rf"called exit\(3\) at faults\.cu:{line_of('calls_exit')}"):
        k((1,), (8,), (np.zeros(8, np.int32), np.int32(2)), timeout=120)
    out = np.zeros(8, np.int32)
    k((1,), (8,), (out, np.int32(-1)), timeout=120)
    np.testing.assert_array_equal(out, 1)


def test_sanitizer_launch_follows_timeout():
    k = RawModule(path=KDIR / "faults.cu", sanitize=True).get_function("spins")
    start = time.monotonic()
    with pytest.raises(KernelFault, match=r"did not finish within timeout=1 s under the sanitizer"):
        k((1,), (2,), (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=1)
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
            "k((1,), (2,), (np.zeros(1, np.int32), np.zeros(1, np.int32)), timeout=120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "launching"
        runner = []
        while not runner and parent.poll() is None:  # the sanitizer's child process appears (no deadline: on a
            runner = _children_of(parent.pid)  # loaded machine the sanitizer's build before it took minutes)
            time.sleep(0.05)
        assert runner, f"the sanitizer child never started (the launching process ended: {parent.returncode})"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 120  # (from the kill: a last resort, generous for a machine at load 17)
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
