"""A learner's buggy kernel ends on the emulator as it does on a GPU through CuPy (round 18's sweep).

Each mistake below used to diverge from CuPy on a GPU: an atomic on a misaligned word ran here, where a GPU
stops with CUDA_ERROR_MISALIGNED_ADDRESS; grid=(0,) for an empty input was refused here, where CuPy launches one
block; a block of 1025 threads was a plain ValueError where CuPy raises CUDADriverError naming
CUDA_ERROR_INVALID_VALUE; a kernel called as a plain function ran, where nvcc refuses it; a pointer saved in a
__device__ variable dangled into a freed copy; faults inside the emulator's intrinsics, in printf, or in one of
two identical kernels were named at the wrong line.

After a fault the next launch in the same process works.  On a GPU such an error (an illegal or misaligned
address, a trap, a device assert) is sticky: the CUDA context is unusable until the process restarts.  The
emulator deliberately keeps Python and the next launch working (each launch runs on fresh copies of its
arrays, tests/test_faults_emulator.py), so a learner fixes the kernel and reruns the cell.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest

from minilora import emulator as emu

pytestmark = pytest.mark.skipif(not emu.is_available(), reason="the CUDA emulator needs g++")

SOURCE = r"""
#include <cassert>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
extern "C" __global__ void fill(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * i;
}
extern "C" __global__ void count_threads(int* out) { atomicAdd(out, 1); }
extern "C" __global__ void put_bf16(__nv_bfloat16* out, __nv_bfloat16 v) { out[0] = v; }
extern "C" __global__ void __launch_bounds__(128) bounded(float* out) { out[threadIdx.x] = 1.0f; }
extern "C" __global__ void dynamic_shared(float* out) {
    extern __shared__ float s[];
    s[threadIdx.x] = 1.0f;
    out[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void prints_a_number_as_a_string(int* out, int k) {
    if (threadIdx.x == 1) printf("value %s\n", k);  // LINE: printf
    out[threadIdx.x] = 1;
}
extern "C" __global__ void asserts(int* out, int bad) {
    assert(threadIdx.x != bad);  // LINE: assert
    out[threadIdx.x] = 1;
}
extern "C" __global__ void traps(int* out, int bad) {
    if ((int)threadIdx.x == bad) __trap();  // LINE: trap
    out[threadIdx.x] = 1;
}
extern "C" __global__ void reads(const float* in, float* out, int k) {
    out[threadIdx.x] = in[k];  // LINE: read
}
extern "C" __global__ void static_and_dynamic(float* out) {
    __shared__ float tile[8192];  // 32 KB static
    extern __shared__ float more[];
    tile[threadIdx.x] = 1.0f;
    more[threadIdx.x] = 2.0f;
    out[threadIdx.x] = tile[threadIdx.x] + more[threadIdx.x];
}
extern "C" __global__ void ldg4(const float* in, float* out, int k) {
    float4 v = __ldg(reinterpret_cast<const float4*>(in + k));  // LINE: ldg4
    out[0] = v.x;
}
extern "C" __global__ void ldcs4(const float* in, float* out, int k) {
    float4 v = __ldcs(reinterpret_cast<const float4*>(in + k));  // LINE: ldcs4
    out[0] = v.x;
}
extern "C" __global__ void stcs4(const float* in, float* out, int k) {
    __stcs(reinterpret_cast<float4*>(out + k), make_float4(in[0], 0.0f, 0.0f, 0.0f));  // LINE: stcs4
}
// Atomics at a byte offset: a multiple of the word's size is right, anything else misaligned.
#define AT(T, p, k) reinterpret_cast<T*>(reinterpret_cast<char*>(p) + (k))
extern "C" __global__ void add_int(int* p, int k) {
    atomicAdd(AT(int, p, k), 1);  // LINE: add_int
}
extern "C" __global__ void add_float(float* p, int k) {
    atomicAdd(AT(float, p, k), 1.0f);  // LINE: add_float
}
extern "C" __global__ void add_double(double* p, int k) {
    atomicAdd(AT(double, p, k), 1.0);  // LINE: add_double
}
extern "C" __global__ void cas_u64(unsigned long long* p, int k) {
    atomicCAS(AT(unsigned long long, p, k), 0ull, 1ull);  // LINE: cas_u64
}
extern "C" __global__ void exch_float(float* p, int k) {
    atomicExch(AT(float, p, k), 1.0f);  // LINE: exch_float
}
extern "C" __global__ void max_int(int* p, int k) {
    atomicMax(AT(int, p, k), 1);  // LINE: max_int
}
extern "C" __global__ void inc_uint(unsigned* p, int k) {
    atomicInc(AT(unsigned, p, k), 10u);  // LINE: inc_uint
}
extern "C" __global__ void sub_int(int* p, int k) {
    atomicSub(AT(int, p, k), 1);  // LINE: sub_int
}
extern "C" __global__ void add_half(__half* p, int k) {
    atomicAdd(AT(__half, p, k), __float2half(1.0f));  // LINE: add_half
}
extern "C" __global__ void add_half2(__half2* p, int k) {
    atomicAdd(AT(__half2, p, k), __floats2half2_rn(1.0f, 1.0f));  // LINE: add_half2
}
extern "C" __global__ void add_float4(float4* p, int k) {
    atomicAdd(AT(float4, p, k), make_float4(1.0f, 1.0f, 1.0f, 1.0f));  // LINE: add_float4
}
"""


@lru_cache(maxsize=None)
def module() -> emu.RawModule:
    return emu.RawModule(code=SOURCE, options=("-arch=sm_90",))


def line_of(tag: str) -> int:
    return next(i for i, text in enumerate(SOURCE.splitlines()) if f"// LINE: {tag}" in text)


def a_normal_launch_works():
    out = np.zeros(64, np.float32)
    module().get_function("fill")((2,), (32,), (out, np.int32(64)))
    np.testing.assert_array_equal(out, 2 * np.arange(64, dtype=np.float32))


# ---- Python scalars: what CuPy passes (the refusals: test_emulator_kernels_r18) ------------------------------------
def test_a_bfloat16_scalar_is_taken_as_its_bits_as_cupy_users_pass_it():
    """NumPy has no bfloat16 and CuPy refuses an ml_dtypes scalar ('Unsupported type'), so a CuPy user passes a
    __nv_bfloat16 parameter its bits, np.uint16: the emulator refused those, and its refusal of a Python float
    pointed at ml_dtypes."""
    out = np.zeros(1, np.uint16)
    module().get_function("put_bf16")((1,), (1,), (out, np.uint16(0x3FC0)))  # 1.5
    assert out[0] == 0x3FC0
    with pytest.raises(TypeError, match=r"is __nv_bfloat16 but got float 1\.5, a Python scalar, which CuPy passes as "
                                        r"np\.float64 .* pass its bits as np\.uint16"):
        module().get_function("put_bf16")((1,), (1,), (out, 1.5))


# ---- launch configurations ------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, block, threads", [((0,), (32,), 32), ((2,), (0,), 2), ((-3,), (-1, 4), 4),
                                                  ((1, 0, 0), (8, 0), 8)])
def test_a_dimension_below_one_launches_as_one_as_cupy_does(grid, block, threads):
    """CuPy's Function.__call__ launches max(1, d) of each dimension (cupy/cuda/function.pyx): grid=(0,) for an
    empty input runs one block, whose threads a bounds check keeps idle.  The emulator refused it before."""
    out = np.zeros(1, np.int32)
    module().get_function("count_threads")(grid, block, (out,))
    assert out[0] == threads


@pytest.mark.parametrize("grid, block, shared_mem, name, pattern", [
    ((1,), (1025,), 0, "fill", r"CUDA_ERROR_INVALID_VALUE: invalid argument \(block \(1025, 1, 1\) of kernel "
                               r"'fill' is too large"),
    ((1,), (1, 1, 65), 0, "fill", r"CUDA_ERROR_INVALID_VALUE: .*z <= 64"),
    ((1,), (64, 32), 0, "fill", r"CUDA_ERROR_INVALID_VALUE: .*at most 1024 threads"),
    ((1, 65536), (1,), 0, "fill", r"CUDA_ERROR_INVALID_VALUE: invalid argument \(grid \(1, 65536, 1\) of kernel "
                                  r"'fill' exceeds CUDA's limits"),
    ((1, 1, 65536), (1,), 0, "fill", r"CUDA_ERROR_INVALID_VALUE: "),
    ((2**31,), (1,), 0, "fill", r"CUDA_ERROR_INVALID_VALUE: "),
    ((1,), (256,), 0, "bounded", r"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: too many resources requested for launch "
                                 r"\(block \(256, 1, 1\) .*__launch_bounds__\(128\)"),
    ((1,), (32,), 49 * 1024, "dynamic_shared", r"CUDA_ERROR_INVALID_VALUE: invalid argument \(kernel "
                                               r"'dynamic_shared' asks 50176 bytes of dynamic shared memory"),
    ((1,), (32,), 228 * 1024, "dynamic_shared", r"CUDA_ERROR_INVALID_VALUE: invalid argument \(kernel "
                                                r"'dynamic_shared' asks shared_mem=233472 bytes, above the GPU's "
                                                r"232448 bytes per block"),
])
def test_a_launch_the_driver_refuses_is_cuda_driver_error_with_its_name(grid, block, shared_mem, name, pattern):
    """CuPy hands grid, block and shared_mem to cuLaunchKernel, whose refusal is cupy.cuda.driver.CUDADriverError
    naming the CUDA error; the emulator's CUDADriverError is still a ValueError, as its refusals were."""
    kernel = module().get_function(name)
    with pytest.raises(emu.CUDADriverError, match=pattern) as caught:
        kernel(grid, block, (np.zeros(2048, np.float32),), shared_mem=shared_mem)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, emu.EmulatorError)
    a_normal_launch_works()


@pytest.mark.parametrize("sanitize", [False, True])
def test_static_and_dynamic_shared_memory_past_48_kb_is_cuda_driver_error(sanitize):
    """The static size shows only when the kernel runs (runtime.cpp's check): its refusal was a bare EmulatorError."""
    kernel = emu.RawModule(code=SOURCE, sanitize=sanitize).get_function("static_and_dynamic")
    with pytest.raises(emu.CUDADriverError, match=r"CUDA_ERROR_INVALID_VALUE: invalid argument \(kernel "
                                                  r"'static_and_dynamic' has 32768 bytes of static __shared__ memory"):
        kernel((1,), (32,), (np.zeros(32, np.float32),), shared_mem=20 * 1024, timeout=300)
    kernel.max_dynamic_shared_size_bytes = 20 * 1024  # the opt-in
    out = np.zeros(32, np.float32)
    kernel((1,), (32,), (out,), shared_mem=20 * 1024, timeout=300)
    np.testing.assert_array_equal(out, 3.0)


def test_opting_in_past_the_devices_shared_memory_is_cuda_driver_error():
    kernel = module().get_function("dynamic_shared")
    with pytest.raises(emu.CUDADriverError, match=r"CUDA_ERROR_INVALID_VALUE: invalid argument "
                                                  r"\(max_dynamic_shared_size_bytes must be an int in 0\.\.232448"):
        kernel.max_dynamic_shared_size_bytes = 228 * 1024


# ---- atomics on a misaligned word ---------------------------------------------------------------------
@pytest.mark.parametrize("name, dtype, offset, word", [
    ("add_int", np.int32, 2, 4), ("add_float", np.float32, 1, 4), ("add_double", np.float64, 4, 8),
    ("cas_u64", np.uint64, 4, 8), ("exch_float", np.float32, 2, 4), ("max_int", np.int32, 3, 4),
    ("inc_uint", np.uint32, 2, 4), ("sub_int", np.int32, 2, 4), ("add_half", np.float16, 1, 2),
    ("add_half2", np.float16, 2, 4), ("add_float4", np.float32, 4, 16),
])
def test_an_atomic_on_a_misaligned_word_stops_as_on_a_gpu(name, dtype, offset, word):
    """x86's locked instructions would do a misaligned atomic (a split lock) and the kernel would run on; a GPU
    stops it with CUDA_ERROR_MISALIGNED_ADDRESS.  The fault names the atomic, the word, the line and the thread;
    an aligned offset still works, and so does the next launch."""
    kernel = module().get_function(name)
    a = np.zeros(64 // np.dtype(dtype).itemsize, dtype)
    with pytest.raises(emu.KernelFault, match=rf"atomic\w+ on a {word}-byte word at address 0x[0-9a-f]+, which is "
                                              rf"not a multiple of {word}: a GPU stops the kernel there "
                                              rf"\(CUDA_ERROR_MISALIGNED_ADDRESS: misaligned address\) at "
                                              rf"fill\.cu:{line_of(name) + 1} in block \(0,0,0\) of kernel "
                                              rf"'{name}', thread \(0,0,0\)") as caught:
        kernel((1,), (1,), (a, np.int32(offset)))
    assert re.search(r"CUDA_ERROR_MISALIGNED_ADDRESS", str(caught.value))
    kernel((1,), (1,), (a, np.int32(word)))  # aligned: the atomic lands
    assert a.view(np.uint8)[word:].any()
    a_normal_launch_works()


# ---- printf -------------------------------------------------------------------------------------------------
def test_a_printf_crash_names_the_printf_line_not_libc():
    """printf("%s", an int) makes libc's formatting read a wild pointer: the fault names the kernel's printf call
    (it named "libc.so.6 (the kernel's line that called it is unknown)" before).  On a GPU it is an illegal address
    too."""
    kernel = module().get_function("prints_a_number_as_a_string")
    with pytest.raises(emu.KernelFault, match=rf"thread \(1,0,0\) of block \(0,0,0\) of kernel "
                                              rf"'prints_a_number_as_a_string' crashed in printf at "
                                              rf"fill\.cu:{line_of('printf') + 1}: SIGSEGV: invalid memory access at "
                                              rf"address 0x5 \(a null pointer\) \(an argument that does not match its "
                                              rf"conversion: a %s given something other than a string"):
        kernel((1,), (4,), (np.zeros(4, np.int32), np.int32(5)))
    a_normal_launch_works()


# ---- the CUDA error a GPU would report ----------------------------------------------------------------------
@pytest.mark.parametrize("name, args, pattern", [
    ("asserts", lambda: (np.zeros(8, np.int32), np.int32(3)),
     r"device-side assertion `threadIdx\.x != bad` failed at fill\.cu:{assert} in block \(0,0,0\) of kernel "
     r"'asserts', thread \(3,0,0\) \(on a GPU: CUDA_ERROR_ASSERT: device-side assert triggered\)"),
    ("traps", lambda: (np.zeros(8, np.int32), np.int32(2)),
     r"__trap\(\) at fill\.cu:{trap} in block \(0,0,0\) of kernel 'traps', thread \(2,0,0\) \(on a GPU: "
     r"CUDA_ERROR_ILLEGAL_INSTRUCTION: an illegal instruction was encountered\)"),
    ("reads", lambda: (None, np.zeros(8, np.float32), np.int32(0)),
     r"crashed at fill\.cu:{read}: SIGSEGV: invalid memory access at address 0x0 \(a null pointer\) \(on a GPU: "
     r"CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered\)"),
    ("reads", lambda: (np.ones(8, np.float32), np.zeros(8, np.float32), np.int32(2**31 - 1)),
     r"crashed at fill\.cu:{read}: SIGSEGV: .*\(on a GPU: CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was "
     r"encountered\)"),
])
def test_a_kernel_fault_names_the_cuda_error_cupy_would_raise(name, args, pattern):
    """Each KernelFault also names what CuPy raises on a GPU for the same bug (CUDARuntimeError / CUDADriverError
    with that name), so a learner can match the emulator's report with the GPU's.  On a GPU these errors are sticky
    (every later CUDA call in the process fails the same way); the emulator chooses to keep the next launch working,
    which is checked here, so a learner fixes the kernel and reruns the cell without restarting Python."""
    lines = {tag: line_of(tag) + 1 for tag in ("assert", "trap", "read")}
    with pytest.raises(emu.KernelFault, match=pattern.format(**lines)):
        module().get_function(name)((1,), (8,), args())
    a_normal_launch_works()


# ---- a kernel called as a function -------------------------------------------------------------------------
CALLS_A_KERNEL = r"""
extern "C" __global__ void child(int* out) { out[threadIdx.x] = 7; }
extern "C" __global__ void parent(int* out) {
    child(out);
}
"""


def test_a_kernel_called_as_a_plain_function_is_refused_as_nvcc_does():
    """g++ compiled child(out) as an ordinary call, so the parent ran the child inside each of its threads; nvcc
    refuses it ("a __global__ function call must be configured")."""
    with pytest.raises(emu.CompileError, match=r"child\.cu:4: error: a __global__ function call must be configured: "
                                               r"'parent' calls the kernel 'child' as a function"):
        emu.RawModule(code=CALLS_A_KERNEL).get_function("parent")
    recursive = r"""
extern "C" __global__ void countdown(int* out, int n) {
    if (n > 0) countdown(out, n - 1);
    else out[threadIdx.x] = 1;
}"""
    with pytest.raises(emu.CompileError, match=r"countdown\.cu:3: error: a __global__ function call must be "
                                               r"configured: 'countdown' calls the kernel 'countdown'"):
        emu.RawKernel(recursive, "countdown").compile()
    # A kernel named like a libc function may call that function (other arguments): nvcc's overloads allow it.
    k = emu.RawKernel(r'''
extern "C" __global__ void labs(const long* x, long* out) { out[threadIdx.x] = ::labs(x[threadIdx.x]) + labs(-1L); }
''', "labs")
    out = np.zeros(4, np.int64)
    k((1,), (4,), (np.array([-3, 4, -5, 0], np.int64), out))
    np.testing.assert_array_equal(out, [4, 5, 6, 1])


# ---- a device pointer saved by one launch, used by the next ------------------------------------------------------
SAVES_A_POINTER = r"""
__device__ float* saved;
extern "C" __global__ void keep(float* in) { saved = in; }
extern "C" __global__ void read_saved(float* out) { out[threadIdx.x] = saved[threadIdx.x]; }
extern "C" __global__ void write_saved(int n) { if ((int)threadIdx.x < n) saved[threadIdx.x] = -1.0f; }
extern "C" __global__ void write_arg_read_saved(float* a, float* out) {
    a[threadIdx.x] = 10.0f + threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = saved[(threadIdx.x + 1) % blockDim.x];
}
"""


def test_a_pointer_saved_in_a_device_variable_stays_valid_for_the_next_launch():
    """A launch runs on fenced copies of its arrays: a pointer the kernel saved in a __device__ variable pointed
    into a copy freed (and reused) when the launch ended, so the next launch read someone else's bytes silently.
    On a GPU the pointer stays valid while the array lives: after the launch it points at the array, and a
    launch given the same array again sees one memory through both pointers."""
    m = emu.RawModule(code=SAVES_A_POINTER)
    x = np.arange(8, dtype=np.float32)
    m.get_function("keep")((1,), (1,), (x,))
    assert int(m.get_global("saved").view(np.uint64)[0]) == x.ctypes.data  # what CuPy's get_global would show
    for _ in range(2):  # another launch's copies take the freed mapping in between
        module().get_function("fill")((1,), (64,), (np.zeros(64, np.float32), np.int32(64)))
    out = np.zeros(8, np.float32)
    m.get_function("read_saved")((1,), (8,), (out,))
    np.testing.assert_array_equal(out, np.arange(8, dtype=np.float32))
    m.get_function("write_saved")((1,), (8,), (np.int32(3),))
    np.testing.assert_array_equal(x, [-1, -1, -1, 3, 4, 5, 6, 7])
    m.get_function("write_arg_read_saved")((1,), (8,), (x, out))  # x through the argument and through `saved`
    np.testing.assert_array_equal(x, 10 + np.arange(8, dtype=np.float32))
    np.testing.assert_array_equal(out, 10 + (np.arange(8) + 1) % 8)
    assert int(m.get_global("saved").view(np.uint64)[0]) == x.ctypes.data


# ---- a misaligned access inside an intrinsic -------------------------------------------------------------
@pytest.mark.parametrize("name", ["ldg4", "ldcs4", "stcs4"])
def test_a_misaligned_intrinsic_names_the_kernels_line_not_the_header(name):
    """__ldg / __ldcs / __stcs are the emulator's inline functions: the alignment check fired inside them and the
    fault named cuda_emu.h:1161; the kernel's line is where the learner must look."""
    with pytest.raises(emu.KernelFault, match=rf"kernel '{name}' \w+ a '(?:const )?struct float4' at address "
                                              rf"0x[0-9a-f]+, which is not a multiple of its 16-byte alignment, at "
                                              rf"fill\.cu:{line_of(name) + 1}: a GPU stops the kernel there "
                                              r"\(CUDA_ERROR_MISALIGNED_ADDRESS"):
        module().get_function(name)((1,), (1,), (np.ones(16, np.float32), np.zeros(16, np.float32), np.int32(1)))
    a_normal_launch_works()


TWINS = r"""
extern "C" __global__ void first(float* p) {
    p[threadIdx.x] = 1.0f;
}
extern "C" __global__ void second(float* p) {
    p[threadIdx.x] = 1.0f;
}
"""


def test_a_crash_in_one_of_two_identical_kernels_names_its_own_line():
    """g++ folded kernels with the same body into one (identical code folding), so the crash in 'second' was named
    at 'first''s line 3: a learner's copy of a kernel sent them to the wrong place."""
    with pytest.raises(emu.KernelFault, match=r"kernel 'second' crashed at first\.cu:6: SIGSEGV"):
        emu.RawModule(code=TWINS).get_function("second")((1,), (1,), (None,))


LINKED_LIST = r"""
struct Node { int value; int pad; Node* next; };
extern "C" __global__ void link(Node* nodes, int n) {
    int i = threadIdx.x;
    if (i < n) {
        nodes[i].value = 10 * i;
        nodes[i].next = i + 1 < n ? &nodes[i + 1] : nullptr;
    }
}
extern "C" __global__ void walk(const Node* head, int* out) {
    int sum = 0;
    for (const Node* p = head; p; p = p->next) sum += p->value;
    out[0] = sum;
}
extern "C" __global__ void scale(Node* nodes, int n) {  // writes the values, follows nothing
    if ((int)threadIdx.x < n) nodes[threadIdx.x].value *= 2;
}
"""


def test_pointers_a_launch_leaves_in_an_array_stay_valid_for_the_next():
    """A linked list built by one launch and walked by the next: its `next` pointers pointed into the launch's
    fenced copy, freed when it ended, so the walk read reused memory.  As on a GPU, they point into the array."""
    m = emu.RawModule(code=LINKED_LIST)
    node = np.dtype([("value", np.int32), ("pad", np.int32), ("next", np.uint64)])
    nodes = np.zeros(6, node)
    m.get_function("link")((1,), (8,), (nodes, np.int32(6)))
    np.testing.assert_array_equal(nodes["next"], [nodes.ctypes.data + 16 * (i + 1) for i in range(5)] + [0])
    module().get_function("fill")((1,), (64,), (np.zeros(64, np.float32), np.int32(64)))  # takes the freed mapping
    out = np.zeros(1, np.int32)
    m.get_function("walk")((1,), (1,), (nodes, out))
    assert out[0] == 10 * sum(range(6))
    m.get_function("scale")((1,), (8,), (nodes, np.int32(6)))  # the addresses it did not write stay the arrays'
    np.testing.assert_array_equal(nodes["next"], [nodes.ctypes.data + 16 * (i + 1) for i in range(5)] + [0])
    m.get_function("walk")((1,), (1,), (nodes[2:], out))  # from the third node, a view into the same allocation
    assert out[0] == 2 * 10 * sum(range(2, 6))


def test_a_kernel_returning_a_value_is_refused_in_nvccs_words():
    """g++ failed on the emulator's own wrapper ("no matching function for call to params_of(int (*)(int*))")."""
    with pytest.raises(emu.CompileError, match=r"twice\.cu:3: error: a __global__ function must have a void return "
                                               r"type: 'twice' returns int"):
        emu.RawKernel('''
extern "C"
__global__ int __launch_bounds__(64) twice(int* out) {
    out[threadIdx.x] *= 2;
    return 0;
}''', "twice").compile()
