"""v9 of the fp32 LoRA kernels (issue 16): Y = [X | sU] . [W0 | B]^T and dX = mask * (V A) + dY W0, each as ONE
cp.async pipeline on 256 x 128 tiles (8 x 16 outputs per thread), full tiles copied without guards, blocks in
grouped order (common.cuh: accumulate_phases_async, load_full_tile_async, grouped_tile).

On the emulator, against float64 NumPy: shapes that just exceed one tile and one k-step (ragged M, N, K, odd
ranks, rows that are not 16-byte aligned -- the guarded copies -- and interior blocks with whole k-steps -- the
unguarded ones), dropout, bias, the rsLoRA scale; more tile rows than one group of the grouped order; the race
check and the sanitizer.  v9 adds the same products in the same order as v7's forward and v8's dX, so it must
match them bit for bit -- a much finer check than a tolerance.  Then the launch contract (dynamic shared
memory, a trap when short of it), pick_version's rule for problems too small for v9's tiles, the GPU sweep's
list of versions, and, where nvcc and cuobjdump are installed, v9's sm_90 SASS.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minilora import kernels
from minilora.emulator import KernelFault
from test_kernels import KERNEL_DEVICES, host, make_inputs, on, reference, validate  # noqa: E402

# (M, N, K, r): tiles are 256 x 128 (Y: M x N; dX: M x K), k-step 8.
SHAPES = {
    "one tile, ragged": (67, 45, 77, 3),                  # a single edge block, ragged k-steps
    "interior Y blocks": (515, 261, 40, 17),             # 3 x 3 tiles of Y, two of them interior, 5 k-steps
    "interior dX blocks": (260, 20, 132, 5),             # dX's block (0, 0) interior, aligned W0 rows (K % 4 == 0)
    "unaligned rows": (261, 131, 133, 64),               # K odd: every row of X, W0, A starts unaligned
}


def run(version, inp, s, p, seed, bias, device="emu", **checks):
    """Forward then backward through minilora.kernels, outputs NaN-poisoned before each launch; host arrays."""
    X, W0, A, B, b, dY = on(device, inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"], inp["dY"])
    with kernels.checking(poison=True, **checks):
        Y, U = kernels.lora_forward(X, W0, A, B, s, bias=b if bias else None, dropout_p=p, seed=seed, device=device,
                                    version=version)
        dX, dA, dB = kernels.lora_backward(dY, X, W0, A, B, U, s, dropout_p=p, seed=seed, device=device,
                                           version=version, split_m=2)
    return {k: host(v) for k, v in dict(Y=Y, U=U, dX=dX, dA=dA, dB=dB).items()}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_v9_matches_float64_and_v7_v8_bit_for_bit(device, shape):
    """On cuda too (benchmarks/gpu_check.sh runs the tests named cuda): there the unguarded copies are inline PTX
    that the emulator never runs."""
    M, N, K, r = SHAPES[shape]
    rng = np.random.default_rng(sum(map(ord, shape)))
    inp = make_inputs(rng, M, N, K, r)
    s = 16 / math.sqrt(r)  # rsLoRA: lora_alpha / sqrt(r)
    p, bias = (0.25, True) if r % 2 else (0.0, False)
    got = run("v9", inp, s, p, 1234, bias, device)
    ref = reference(inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"] if bias else None, inp["dY"], s, p, 1234)
    for name in ("Y", "U", "dX", "dA", "dB"):
        validate(f"v9 {shape} {name}", got[name], ref[name])
    if device != "emu":
        return  # bit equality is the emulator's promise (one compiler, one fmaf); a GPU build may contract otherwise
    # the same sums in the same order: v7's forward (Y's base loop, then the rank term), v8's dX (rank first)
    v7, v8 = run("v7", inp, s, p, 1234, bias), run("v8", inp, s, p, 1234, bias)
    np.testing.assert_array_equal(got["Y"], v7["Y"])
    for name in ("dX", "dA", "dB"):
        np.testing.assert_array_equal(got[name], v8[name])


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_grouped_block_order_covers_every_tile_once(device):
    """9 rows of Y tiles (M = 2049) and 3 of dX's columns: one whole group of GROUP_M = 8 tile rows and a
    partial one.  A tile computed twice or never shows up as a wrong or a NaN (poisoned) block."""
    assert kernels.tiles().configs["lora_fwd_y_v9"]["GROUP_M"] == 8
    M, N, K, r = 2049, 130, 132, 2
    rng = np.random.default_rng(7)
    inp = make_inputs(rng, M, N, K, r)
    got = run("v9", inp, 0.5, 0.0, 0, True, device)
    ref = reference(inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"], inp["dY"], 0.5, 0.0, 0)
    for name in ("Y", "dX"):
        validate(f"v9 grouped {name}", got[name], ref[name])


def test_v9_under_race_check_and_sanitizer():
    """Several thread and block orders (bit-equal results) and AddressSanitizer, with an interior block of Y and
    of dX (unguarded copies) next to edge blocks, dropout and bias."""
    M, N, K, r = 260, 130, 132, 3
    inp = make_inputs(np.random.default_rng(11), M, N, K, r)
    got = run("v9", inp, 0.5, 0.2, 5, True, check_races=True, sanitize=True)
    ref = reference(inp["X"], inp["W0"], inp["A"], inp["B"], inp["bias"], inp["dY"], 0.5, 0.2, 5)
    for name in ("Y", "U", "dX", "dA", "dB"):
        validate(f"v9 sanitized {name}", got[name], ref[name])


def test_v9_passes_racecheck_with_interior_blocks(racecheck_every_launch):
    """compute-sanitizer-style racecheck (two threads touching one shared byte, one writing, no barrier between)
    over every launch, with interior blocks of Y and dX, so the unguarded copies and both phases run."""
    M, N, K, r = 260, 130, 132, 3
    inp = make_inputs(np.random.default_rng(12), M, N, K, r)
    got = run("v9", inp, 0.5, 0.0, 0, False)
    ref = reference(inp["X"], inp["W0"], inp["A"], inp["B"], None, inp["dY"], 0.5, 0.0, 0)
    for name in ("Y", "dX"):
        validate(f"v9 racecheck {name}", got[name], ref[name])
    assert {"lora_fwd_y_v9", "lora_bwd_dx_v9"} <= set(racecheck_every_launch)


def test_v9_takes_dynamic_shared_memory_and_traps_when_given_too_little():
    """The launcher passes the bytes common.cuh's phases_smem_bytes lays out (over the 48 KB a static array
    may take), in the kernel's last argument and as the launch's dynamic shared memory; a launch with fewer
    stops at __trap() instead of writing past them."""
    cfg = kernels.tiles().configs["lora_fwd_y_v9"]
    need = kernels._phases_smem(cfg)
    assert need == 4 * cfg["STAGES"] * cfg["BK"] * (cfg["BM"] + cfg["BN"] + 8) > 48 * 1024
    assert kernels._phases_smem(kernels.tiles().configs["lora_fwd_y_v7"]) == 0  # static shared memory
    X, W0, U, B, Y = (np.ones(shape, np.float32) for shape in ((4, 8), (5, 8), (4, 2), (5, 2), (4, 5)))
    i32 = np.int32
    args = (X, W0, U, B, Y, i32(0), Y, i32(4), i32(5), i32(8), i32(2), np.float32(1.0))
    dev = kernels._resolve_device("test", "emu", X)
    with pytest.raises(KernelFault, match="__trap"):
        kernels._launch(dev, "lora_forward.cu", "lora_fwd_y_v9", (1, 1), 256, args + (i32(need - 4),), need - 4)
    kernels._launch(dev, "lora_forward.cu", "lora_fwd_y_v9", (1, 1), 256, args + (i32(need),), need)
    np.testing.assert_array_equal(Y, 8.0 + 2.0)


@pytest.fixture
def choice_file(tmp_path, monkeypatch):
    path = tmp_path / "gpu_choice.json"
    monkeypatch.setattr(kernels, "_choice_path", lambda: path)
    monkeypatch.setattr(kernels._Choice, "stamp", None)
    return path


def test_pick_version_takes_v9_only_where_its_tiles_fill_the_gpu(choice_file):
    """v9 runs one 256 x 128 tile per SM: under 132 of them (M = N = 2048: 8 x 16 = 128) SMs would idle, so the
    sweep's fastest version with 128 x 128 tiles runs instead ("big_128_tiles"), or v7 without that table."""
    choice_file.write_text(json.dumps({"choices": {"big": {"forward": {"16": "v9"}, "forward+backward": {"16": "v9"}},
                                                   "big_128_tiles": {"forward": {"16": "v6"}}}}))
    assert kernels.pick_version(8192, 4096, 16) == "v9"                  # 32 x 32 = 1024 tiles
    assert kernels.pick_version(2304, 2048, 16) == "v9"                  # 9 x 16 = 144 tiles
    assert kernels.pick_version(2048, 2048, 16) == "v6"                  # 8 x 16 = 128 tiles: big_128_tiles
    assert kernels.pick_version(2048, 2048, 16, backward=True) == "v7"  # no such table for this pass: v7
    assert kernels.pick_version(512, 512, 16) == "v2"                    # small problems: v2 by rule
    choice_file.write_text(json.dumps({"choices": {"big": {"forward": {"16": "v9"}}}}))  # written before v9
    os.utime(choice_file, ns=(1, 1))
    assert kernels.pick_version(2048, 2048, 16) == "v7"
    # v9 has no 128 x 128 tiles: a file naming it there is refused in that table (the main table still counts)
    choice_file.write_text(json.dumps({"choices": {"big": {"forward": {"16": "v9"}},
                                                   "big_128_tiles": {"forward": {"16": "v9"}}}}))
    os.utime(choice_file, ns=(2, 2))
    assert kernels.pick_version(2048, 2048, 16) == "v7" and kernels.pick_version(8192, 4096, 16) == "v9"


def test_gpu_sweep_times_v9_and_each_set_of_kernels_once():
    """benchmarks/gpu_lora.py sweeps v3..v9 (v1 and v2 take 9-100x cuBLAS's time at its shape: seconds of the
    GPU script's budget for known numbers), and a version launching exactly an earlier one's kernels -- v8's
    forward is v7's -- only once."""
    sys.path.insert(0, str(kernels.kernel_dir().parent / "benchmarks"))
    try:
        import gpu_lora
    finally:
        sys.path.pop(0)
    assert gpu_lora.swept_versions(kernels, backward=False) == ["v3", "v4", "v5", "v6", "v7", "v9"]
    assert gpu_lora.swept_versions(kernels, backward=True) == ["v3", "v4", "v5", "v6", "v7", "v8", "v9"]
    assert gpu_lora.same_kernels_note(kernels, backward=False) == "Not timed again (same kernels): v8 = v7."
    assert gpu_lora.launched_kernels(kernels, "v9", backward=True) == (
        "lora_fwd_u_v6", "lora_fwd_y_v9", "lora_bwd_dy_v8", "lora_bwd_dx_v9", "lora_bwd_da_v4")


def test_gpu_sweep_never_chooses_a_version_that_is_wrong_on_the_gpu():
    """The emulator does not run the kernels' inline PTX (cp.async on the GPU), so gpu_lora.py checks each swept
    version against cuBLAS before the verdict: a fast but wrong (or NaN) version is reported, never chosen."""
    sys.path.insert(0, str(kernels.kernel_dir().parent / "benchmarks"))
    try:
        import gpu_lora
    finally:
        sys.path.pop(0)
    times = {"base GEMM (cuBLAS)": (5.5, 5.4), "fused v7": (7.0, 6.9), "fused v8": (6.8, 6.7), "fused v9": (6.0, 5.9),
             "fused auto (v5)": (1.0, 1.0), "fused bf16 (mma.sync, lora_bf16.cu) v2": (2.0, 2.0)}
    fused, wrong = gpu_lora.correct_fused_times(kernels, times, {"v7": 1e-6, "v8": float("nan"), "v9": 0.5})
    assert fused == {"v7": 7.0} and set(wrong) == {"v8", "v9"}
    choices, choices_128 = {}, {}
    gpu_lora.record_choice(choices, choices_128, kernels, "forward", 16, {"v7": 7.0, "v9": 6.0, "v5": 8.0})
    assert choices == {"forward": {"16": "v9"}} and choices_128 == {"forward": {"16": "v7"}}


V9_KERNELS = {"lora_forward.cu": "lora_fwd_y_v9", "lora_backward.cu": "lora_bwd_dx_v9"}


@pytest.fixture(scope="module")
def sm90(tmp_path_factory):
    """{kernel: (ptxas report, its sm_90 SASS)} for v9's two kernels, both files compiled at once; skip where
    nvcc or cuobjdump/nvdisasm is missing."""
    from concurrent.futures import ThreadPoolExecutor

    from test_cuda_compile import _sass_tools
    cuobjdump, env = _sass_tools()
    if shutil.which("nvcc") is None or cuobjdump is None:
        pytest.skip("nvcc or cuobjdump/nvdisasm not installed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    folder, out = kernels.kernel_dir(), tmp_path_factory.mktemp("v9_cubin")

    def compile_one(name):
        cubin = out / f"{name}.cubin"
        res = subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "--resource-usage", "-I", str(folder),
                              str(folder / name), "-o", str(cubin)], capture_output=True, text=True, check=True)
        sass = subprocess.run([cuobjdump, "-sass", "-fun", V9_KERNELS[name], str(cubin)], capture_output=True,
                              text=True, env=env, check=True).stdout
        return V9_KERNELS[name], (res.stdout + res.stderr, sass)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(compile_one, V9_KERNELS))


@pytest.mark.parametrize("kernel,full_copy", [("lora_fwd_y_v9", "LDGSTS.E ["),
                                              ("lora_bwd_dx_v9", "LDGSTS.E.BYPASS.128 [")])
def test_v9_sm_90_sass_has_unguarded_cp_async_and_no_local_memory(sm90, kernel, full_copy):
    """ptxas: no spills (128 accumulators in at most 255 registers); SASS: the copies of full tiles are
    cp.async without a predicate (no zero-fill guard), plus commit and wait, and no local memory."""
    report, sass = sm90[kernel]
    line = report[report.index(f"Function properties for {kernel}"):].splitlines()[1]
    assert "0 bytes spill stores, 0 bytes spill loads" in line, line
    copies = [row for row in sass.splitlines() if "LDGSTS" in row]
    # "LDGSTS.E [R87+0x80], desc[UR6][R70.64] ;" -- a predicated (guarded) copy ends in ", P2 ;"
    assert any(full_copy in row and row.split(";")[0].rstrip().endswith(".64]") for row in copies), \
        f"no unpredicated cp.async in {kernel}"
    for instruction in ("LDGDEPBAR", "DEPBAR.LE", "FFMA"):
        assert instruction in sass, instruction
    assert "LDL" not in sass and "STL" not in sass, "local memory (spills or a stack array) in the kernel"
