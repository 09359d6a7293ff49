"""The bf16 tensor-core primitives of kernels/common.cuh (ldmatrix, mma.sync m16n8k16, cvt.rn to bf16) on
the emulator, through kernels/warp_mma.cu: the fragment layout lane by lane as the PTX ISA gives it, the
rounding bit for bit against torch's bfloat16, and one tile's numbers against fp32 references.
(On a GPU the same source compiles to LDSM, HMMA.16816.F32.BF16 and F2FP: tests/test_cuda_compile.py.)"""
import importlib.util

import numpy as np
import pytest

import background_runs
from minilora import kernels
from minilora.device import all_devices
from minilora.emulator import RawModule


@pytest.fixture(scope="module")
def warp_mma():
    return RawModule(path=kernels.kernel_dir() / "warp_mma.cu")


def bf16_bits_reference(x):
    """float32 -> bf16 bit patterns (uint16) by torch, the oracle for round-to-nearest-even."""
    torch = pytest.importorskip("torch")
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def run_tile(warp_mma, A_bits, Bt_bits, C):
    D = np.full((16, 8), np.nan, np.float32)
    fragments = np.zeros((32, 6), np.uint32)
    warp_mma.get_function("mma_bf16_tile")((1,), (32,), (A_bits, Bt_bits, C, D, fragments))
    return D, fragments


def test_round_bf16_matches_torch_bit_for_bit(warp_mma):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(997).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 997),
                        np.float32([0.0, -0.0, np.inf, -np.inf, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8,  # ties to even
                                    3.3895314e38, 1e-40, -1e-45])]).astype(np.float32)
    y = np.zeros(x.size, np.uint16)
    warp_mma.get_function("round_bf16")(((x.size + 511) // 512,), (256,), (x, y, np.int32(x.size)))
    np.testing.assert_array_equal(y, bf16_bits_reference(x))
    nan = np.zeros(2, np.uint16)
    warp_mma.get_function("round_bf16")((1,), (256,), (np.float32([np.nan, -np.nan]), nan, np.int32(2)))
    assert np.isnan(bf16_value(nan)).all()


def test_fragments_follow_the_ptx_layout(warp_mma):
    """Lane l = 4g + t holds a[0] = A[g][2t, 2t+1], a[1] = A[g+8][..], a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8..],
    b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]; the lower-indexed element in the low 16 bits."""
    A_bits = np.arange(256, dtype=np.uint16).reshape(16, 16)  # element (i, k) carries its own index
    Bt_bits = (1000 + np.arange(128, dtype=np.uint16)).reshape(8, 16)  # B^T[n][k]
    _, frag = run_tile(warp_mma, A_bits, Bt_bits, np.zeros((16, 8), np.float32))
    pair = lambda m, i, k: int(m[i, k]) | int(m[i, k + 1]) << 16  # noqa: E731
    for lane in range(32):
        g, t = divmod(lane, 4)
        want = [pair(A_bits, g, 2 * t), pair(A_bits, g + 8, 2 * t), pair(A_bits, g, 2 * t + 8),
                pair(A_bits, g + 8, 2 * t + 8), pair(Bt_bits, g, 2 * t), pair(Bt_bits, g, 2 * t + 8)]
        assert frag[lane].tolist() == want, f"lane {lane}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_tile_against_fp32_references(warp_mma, seed):
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((16, 16)).astype(np.float32), rng.standard_normal((16, 8)).astype(np.float32)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    A_bits, Bt_bits = bf16_bits_reference(A), bf16_bits_reference(np.ascontiguousarray(B.T))
    D, _ = run_tile(warp_mma, A_bits, Bt_bits, C)
    # 1. the inputs as the tensor core sees them (bf16): only fp32 accumulation error remains
    exact = bf16_value(A_bits).astype(np.float64) @ bf16_value(Bt_bits).T.astype(np.float64) + C
    scale = np.abs(bf16_value(A_bits)) @ np.abs(bf16_value(Bt_bits)).T + np.abs(C)
    assert (np.abs(D - exact) <= 1e-6 * scale).all()
    # 2. the fp32 product a user asked for: within bf16 tolerance (two roundings of 2^-9 per product)
    assert (np.abs(D - (A.astype(np.float64) @ B + C)) <= 2 * 2.0**-8 * scale + 1e-6).all()
    # and a 1-ulp change in one input shows up in its row only (the test can fail)
    A_bits2 = A_bits.copy()
    A_bits2[3, 5] ^= 1  # one bf16 ulp
    D2, _ = run_tile(warp_mma, A_bits2, Bt_bits, C)
    assert not np.array_equal(D2[3], D[3]) and np.array_equal(np.delete(D2, 3, 0), np.delete(D, 3, 0))


# ---- the fused bf16 LoRA forward (kernels/lora_bf16.cu) through kernels.lora_forward_bf16 -------------------
# Ragged shapes (M, N, K not multiples of the 128 x 128 x 32 tiles; K % 8 != 0 takes the plain-load path,
# K % 8 == 0 the cp.async path), ranks 1 to 64 (several RC = 16 chunks, a partial one).
DEVICES = [pytest.param(d.name, id=d.name,
                        marks=pytest.mark.skipif(not d.enabled(), reason=f"{d.name}: {d.why_disabled}"))
           for d in all_devices() if d.uses_kernels]  # emu always; cuda where a GPU is (gpu_check.sh)
BF16_SHAPES = [(1, 1, 1, 1), (37, 45, 50, 3), (130, 131, 72, 17), (129, 260, 96, 64), (200, 70, 33, 8),
               (64, 128, 256, 16)]


def lora_bf16_case(seed, M, N, K, r):
    rng = np.random.default_rng(seed)
    X, W0 = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    A = (rng.standard_normal((r, K)) / np.sqrt(K)).astype(np.float32)
    B = rng.standard_normal((N, r)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    return X, W0, A, B, bias


def on_device(device, *arrays):
    if device != "cuda":
        return arrays
    import cupy
    return tuple(cupy.asarray(a) for a in arrays)


@pytest.mark.parametrize("version", kernels.BF16_VERSIONS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M,N,K,r", BF16_SHAPES)
def test_lora_forward_bf16_against_fp32_references(device, M, N, K, r, version):
    X, W0, A, B, bias = lora_bf16_case(M * 7 + r, M, N, K, r)
    Xb, Wb = bf16_bits_reference(X), bf16_bits_reference(W0)
    with kernels.checking(poison=True):  # every element of Y and U must be written
        Y, U = kernels.lora_forward_bf16(*on_device(device, Xb, Wb, A, B), 0.5, bias=on_device(device, bias)[0],
                                         device=device, version=version)
    Y, U = (a.get() if hasattr(a, "get") else a for a in (Y, U))
    assert Y.dtype == U.dtype == np.float32 and Y.shape == (M, N) and U.shape == (M, r)
    # 1. the inputs as the tensor cores see them (bf16 X and W0, fp32 A, B): fp32-accumulation error only
    #    (on a GPU the tensor core's own summation order: a looser bound)
    tol = 1e-5 if device == "emu" else 1e-4
    Xv, Wv = bf16_value(Xb).astype(np.float64), bf16_value(Wb).astype(np.float64)
    U_exact = Xv @ A.T
    Y_exact = Xv @ Wv.T + bias + 0.5 * U_exact @ B.T
    y_scale = np.abs(Xv) @ np.abs(Wv).T + np.abs(bias) + 0.5 * (np.abs(Xv) @ np.abs(A).T) @ np.abs(B).T
    assert (np.abs(U - U_exact) <= tol * (np.abs(Xv) @ np.abs(A).T) + 1e-30).all()
    assert (np.abs(Y - Y_exact) <= tol * y_scale).all()
    # 2. the fp32 forward a user compares with: within bf16 tolerance (X and W0 rounded, 2^-9 each)
    Y_fp32 = X.astype(np.float64) @ W0.T + bias + 0.5 * (X.astype(np.float64) @ A.T) @ B.T
    assert (np.abs(Y - Y_fp32) <= 2 * 2.0**-8 * y_scale).all()
    rel = np.abs(Y - Y_fp32).max() / np.abs(Y_fp32).max()
    assert rel < 2e-2, rel


# The race check and sanitizer tests: their launches (several schedules each; AddressSanitizer in a child process)
# run on the session's helper thread in this file's turn (tests/background_runs.py, ``needed_by``), on the core
# the main process leaves idle; the tests assert on the arrays they return. The inputs are made here (torch
# rounds them to bf16) and handed to the run: its process needs no torch.
RACE_FORWARD_SHAPES = [(130, 131, 72, 17), (130, 136, 72, 17)]  # plain loads; cp.async
RACE_BACKWARD_SHAPES = [(130, 136, 72, 17), (37, 45, 50, 3)]  # cp.async path; plain loads


def forward_under_checks(Xb, Wb, A, B, version):
    """(Y under the race check and sanitizer, Y of Xb with one bf16 ulp changed at [129, 70]): a background run."""
    with kernels.checking(poison=True, check_races=True, sanitize=True):  # races, out-of-bounds accesses
        Y, _ = kernels.lora_forward_bf16(Xb, Wb, A, B, 2.0, device="emu", version=version)
    Xb2 = Xb.copy()
    Xb2[129, 70] ^= 1
    Y2, _ = kernels.lora_forward_bf16(Xb2, Wb, A, B, 2.0, device="emu", version=version)
    return Y, Y2


def backward_under_checks(dYb, Xb, Wb, A, B, U, version):
    """((dX, dA, dB) under the race check and sanitizer with split_m=3, the same again, (dX, dA, dB) of dYb with
    one bf16 ulp changed at its [-1, -2]): a background run."""
    with kernels.checking(poison=True, check_races=True, sanitize=True):  # races, out-of-bounds accesses
        checked = kernels.lora_backward_bf16(dYb, Xb, Wb, A, B, U, 2.0, device="emu", split_m=3, version=version)
    again = kernels.lora_backward_bf16(dYb, Xb, Wb, A, B, U, 2.0, device="emu", split_m=3, version=version)
    dYb2 = dYb.copy()
    dYb2[-1, -2] ^= 1
    moved = kernels.lora_backward_bf16(dYb2, Xb, Wb, A, B, U, 2.0, device="emu", version=version)
    return checked, again, moved


def forward_race_case(M, N, K, r):
    """(X, W0, A, B, Xb, Wb) of the forward race check test."""
    X, W0, A, B, _ = lora_bf16_case(5, M, N, K, r)
    return X, W0, A, B, bf16_bits_reference(X), bf16_bits_reference(W0)


def race_check_run(runs, test_name, M, N, K, r, version):
    """Submit (a no-op when submitted already) the background run of one race check test: its key."""
    key = (test_name, M, N, K, r, version)
    if test_name.startswith("test_lora_forward"):
        _, _, A, B, Xb, Wb = forward_race_case(M, N, K, r)
        runs.submit(key, __name__, "forward_under_checks", Xb, Wb, A, B, version)
    else:
        (_, _, A, B, _, U), (Xb, Wb, dYb) = lora_bf16_backward_case(7, M, N, K, r)
        runs.submit(key, __name__, "backward_under_checks", dYb, Xb, Wb, A, B, U, version)
    return key


RACE_CHECK_TESTS = ("test_lora_forward_bf16_no_bias_race_check_sanitizer_and_the_test_can_fail",
                    "test_lora_backward_bf16_race_check_sanitizer_and_the_test_can_fail")


def start_background_runs(items, runs):
    """The race check and sanitizer launches of the selected tests, behind the session's other runs."""
    if importlib.util.find_spec("torch") is None:  # (the tests skip)
        return
    for test_name in RACE_CHECK_TESTS:
        for item in background_runs.selected(items, __name__, test_name):
            race_check_run(runs, test_name, *(item.callspec.params[k] for k in ("M", "N", "K", "r", "version")))


@pytest.mark.parametrize("version", kernels.BF16_VERSIONS)
@pytest.mark.parametrize("M,N,K,r", RACE_FORWARD_SHAPES)
def test_lora_forward_bf16_no_bias_race_check_sanitizer_and_the_test_can_fail(M, N, K, r, version, background):
    X, W0, A, B, Xb, Wb = forward_race_case(M, N, K, r)
    Y, Y2 = background.result(race_check_run(background, RACE_CHECK_TESTS[0], M, N, K, r, version))
    Xv, Wv = bf16_value(Xb).astype(np.float64), bf16_value(Wb).astype(np.float64)
    want = Xv @ Wv.T + 2.0 * (Xv @ A.T) @ B.T
    np.testing.assert_allclose(Y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # one bf16 ulp in one element of X moves that row of Y, and only it
    assert not np.array_equal(Y2[129], Y[129]) and np.array_equal(Y2[:129], Y[:129])


def test_lora_forward_bf16_rejects_what_it_cannot_compute():
    X, W0 = np.zeros((4, 8), np.uint16), np.zeros((5, 8), np.uint16)
    A, B = np.zeros((2, 8), np.float32), np.zeros((5, 2), np.float32)
    with pytest.raises(TypeError, match="X must be a numpy uint16 array holding bfloat16 bit patterns"):
        kernels.lora_forward_bf16(X.astype(np.float32), W0, A, B, 1.0, device="emu")
    with pytest.raises(ValueError, match=r"W0 must have shape \(5, 8\)"):
        kernels.lora_forward_bf16(X, np.zeros((5, 7), np.uint16), A, B, 1.0, device="emu")
    with pytest.raises(TypeError, match="A must be float32"):
        kernels.lora_forward_bf16(X, W0, A.astype(np.float64), B, 1.0, device="emu")
    with pytest.raises(ValueError, match="device 'cpu' does not run kernels"):
        kernels.lora_forward_bf16(X, W0, A, B, 1.0, device="cpu")
    with pytest.raises(ValueError, match=r"version must be one of \('v1', 'v2'\), got 'v3'"):
        kernels.lora_forward_bf16(X, W0, A, B, 1.0, device="emu", version="v3")


@pytest.mark.parametrize("backward", [False, True])
def test_v2_traps_when_launched_with_too_little_dynamic_shared_memory(backward, monkeypatch):
    """v2's shared memory is sized at launch (kernels._bf16_gemm); one stage less than lora_bf16.cu lays out
    and the kernel stops with a trap instead of writing past the end."""
    from minilora.emulator import KernelFault
    name, cfg, smem = kernels._bf16_gemm("v2", backward)
    assert smem > 48 * 1024 and name.endswith("_v2")  # over the static limit: why v2 is dynamic
    stage = (smem - 1) // cfg["STAGES"] + 1
    real = kernels._bf16_gemm
    def one_stage_short(version, backward):
        name, cfg, smem = real(version, backward)
        return name, cfg, smem - stage
    monkeypatch.setattr(kernels, "_bf16_gemm", one_stage_short)
    (X, W0, A, B, dY, U), (Xb, Wb, dYb) = lora_bf16_backward_case(1, 20, 24, 16, 2)
    with pytest.raises(KernelFault, match="__trap"):
        if backward:
            kernels.lora_backward_bf16(dYb, Xb, Wb, A, B, U, 1.0, device="emu", need_dA=False, need_dB=False)
        else:
            kernels.lora_forward_bf16(Xb, Wb, A, B, 1.0, device="emu")


def test_ldmatrix_trans_delivers_each_quadrant_transposed(warp_mma):
    """Lane l = 4g + t receives, in d[j], elements (2t, g) and (2t + 1, g) of quadrant j (rows 8 (j % 2).., columns
    8 (j / 2)..): mma's B fragment read from a k-major tile (the backward's W0)."""
    S = np.arange(256, dtype=np.uint16).reshape(16, 16)
    out = np.zeros((32, 4), np.uint32)
    warp_mma.get_function("ldmatrix_trans_tile")((1,), (32,), (S, out))
    for lane in range(32):
        g, t = divmod(lane, 4)
        want = [int(S[8 * (j % 2) + 2 * t, 8 * (j // 2) + g]) | int(S[8 * (j % 2) + 2 * t + 1, 8 * (j // 2) + g]) << 16
                for j in range(4)]
        assert out[lane].tolist() == want, f"lane {lane}"


# ---- the fused bf16 LoRA backward (kernels/lora_bf16.cu) through kernels.lora_backward_bf16 ------------------
# Ragged shapes again; N % 8 == K % 8 == 0 (the last three) takes dX's cp.async path, the others plain loads;
# r from 1 to 64 (one, several and a partial 16-rank chunk of the fp32 rank terms).
BF16_BWD_SHAPES = BF16_SHAPES + [(130, 136, 72, 5), (67, 264, 40, 33), (200, 8, 16, 2)]


def lora_bf16_backward_case(seed, M, N, K, r):
    X, W0, A, B, _ = lora_bf16_case(seed, M, N, K, r)
    dY = np.random.default_rng(seed + 1).standard_normal((M, N)).astype(np.float32)
    Xb, Wb, dYb = bf16_bits_reference(X), bf16_bits_reference(W0), bf16_bits_reference(dY)
    U = (bf16_value(Xb).astype(np.float64) @ A.T).astype(np.float32)  # what lora_forward_bf16 hands on
    return (X, W0, A, B, dY, U), (Xb, Wb, dYb)


def bf16_backward_references(X, W0, A, B, dY, U, s):
    """(exact gradients, scales): float64, from the inputs given; scales = the sums of |terms| of each element."""
    X, W0, dY = (a.astype(np.float64) for a in (X, W0, dY))
    V = s * dY @ B
    exact = {"dX": dY @ W0 + V @ A, "dA": V.T @ X, "dB": s * dY.T @ U}
    aV = abs(s) * np.abs(dY) @ np.abs(B)
    aU = np.abs(X) @ np.abs(A).T  # bounds |U| and U's own rounding error
    scales = {"dX": np.abs(dY) @ np.abs(W0) + aV @ np.abs(A), "dA": aV.T @ np.abs(X), "dB": abs(s) * np.abs(dY).T @ aU}
    return exact, scales


@pytest.mark.parametrize("version", kernels.BF16_VERSIONS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M,N,K,r", BF16_BWD_SHAPES)
def test_lora_backward_bf16_against_fp32_references(device, M, N, K, r, version):
    (X, W0, A, B, dY, U), (Xb, Wb, dYb) = lora_bf16_backward_case(M * 11 + r, M, N, K, r)
    s = 0.5
    with kernels.checking(poison=True):  # every element of dX, dA, dB must be written
        got = kernels.lora_backward_bf16(*on_device(device, dYb, Xb, Wb, A, B, U), s, device=device, version=version)
    got = dict(zip(("dX", "dA", "dB"), (a.get() if hasattr(a, "get") else a for a in got)))
    assert got["dX"].shape == (M, K) and got["dA"].shape == (r, K) and got["dB"].shape == (N, r)
    assert all(g.dtype == np.float32 for g in got.values())
    # 1. the inputs as the kernels see them (bf16 dY, X, W0; fp32 A, B, U): fp32-accumulation error only
    tol = 1e-5 if device == "emu" else 1e-4
    exact, scales = bf16_backward_references(bf16_value(Xb), bf16_value(Wb), A, B, bf16_value(dYb), U, s)
    for name in got:
        err = np.abs(got[name] - exact[name])
        assert (err <= tol * scales[name] + 1e-30).all(), (name, float((err / (scales[name] + 1e-30)).max()))
    # 2. the fp32 backward a user compares with (unrounded dY, X, W0): within bf16 tolerance (2^-9 per rounding;
    #    up to three roundings reach one term: dY, W0 or X, and X inside U)
    fp32, _ = bf16_backward_references(X, W0, A, B, dY, U, s)
    for name in got:
        assert (np.abs(got[name] - fp32[name]) <= 3 * 2.0**-8 * scales[name] + 1e-30).all(), name
        rel = np.abs(got[name] - fp32[name]).max() / np.abs(fp32[name]).max()
        assert rel < 2e-2, (name, rel)


@pytest.mark.parametrize("version", kernels.BF16_VERSIONS)
@pytest.mark.parametrize("M,N,K,r", RACE_BACKWARD_SHAPES)
def test_lora_backward_bf16_race_check_sanitizer_and_the_test_can_fail(M, N, K, r, version, background):
    (X, W0, A, B, dY, U), (Xb, Wb, dYb) = lora_bf16_backward_case(7, M, N, K, r)
    (dX, dA, dB), again, (dX2, _, dB2) = background.result(
        race_check_run(background, RACE_CHECK_TESTS[1], M, N, K, r, version))
    exact, scales = bf16_backward_references(bf16_value(Xb), bf16_value(Wb), A, B, bf16_value(dYb), U, 2.0)
    for name, g in (("dX", dX), ("dA", dA), ("dB", dB)):
        assert (np.abs(g - exact[name]) <= 1e-5 * scales[name] + 1e-30).all(), name
    # deterministic: partial sums reduced in a fixed order, no float atomics
    assert all(a.tobytes() == b.tobytes() for a, b in zip((dX, dA, dB), again))
    # one bf16 ulp in one element of dY moves that row of dX (and only it) and that row of dB
    assert not np.array_equal(dX2[M - 1], dX[M - 1]) and np.array_equal(dX2[:M - 1], dX[:M - 1])
    assert not np.array_equal(dB2[N - 2], dB[N - 2])
    assert np.array_equal(np.delete(dB2, N - 2, 0), np.delete(dB, N - 2, 0))


def test_lora_backward_bf16_computes_only_what_is_asked():
    (X, W0, A, B, dY, U), (Xb, Wb, dYb) = lora_bf16_backward_case(3, 21, 19, 13, 3)
    exact, scales = bf16_backward_references(bf16_value(Xb), bf16_value(Wb), A, B, bf16_value(dYb), U, 0.5)
    for wanted in ("dX", "dA", "dB"):
        flags = {f"need_{n if n != 'dX' else 'dx'}": n == wanted for n in ("dX", "dA", "dB")}
        with kernels.checking(poison=True):
            out = dict(zip(("dX", "dA", "dB"), kernels.lora_backward_bf16(dYb, Xb, Wb, A, B, U, 0.5, device="emu",
                                                                          **flags)))
        assert [k for k, v in out.items() if v is not None] == [wanted]
        assert (np.abs(out[wanted] - exact[wanted]) <= 1e-5 * scales[wanted]).all(), wanted


def test_lora_backward_bf16_rejects_what_it_cannot_compute():
    dY, X, W0 = np.zeros((4, 5), np.uint16), np.zeros((4, 8), np.uint16), np.zeros((5, 8), np.uint16)
    A, B, U = np.zeros((2, 8), np.float32), np.zeros((5, 2), np.float32), np.zeros((4, 2), np.float32)
    with pytest.raises(TypeError, match="dY must be a numpy uint16 array holding bfloat16 bit patterns"):
        kernels.lora_backward_bf16(dY.astype(np.float32), X, W0, A, B, U, 1.0, device="emu")
    with pytest.raises(ValueError, match=r"dY must have shape \(4, 5\)"):
        kernels.lora_backward_bf16(np.zeros((4, 6), np.uint16), X, W0, A, B, U, 1.0, device="emu")
    with pytest.raises(ValueError, match=r"U must have shape \(4, 2\)"):
        kernels.lora_backward_bf16(dY, X, W0, A, B, np.zeros((4, 3), np.float32), 1.0, device="emu")
    with pytest.raises(TypeError, match="B must be float32"):
        kernels.lora_backward_bf16(dY, X, W0, A, B.astype(np.float16), U, 1.0, device="emu")
    with pytest.raises(ValueError, match="device 'cpu' does not run kernels"):
        kernels.lora_backward_bf16(dY, X, W0, A, B, U, 1.0, device="cpu")
    dX, dA, dB = kernels.lora_backward_bf16(np.zeros((0, 5), np.uint16), np.zeros((0, 8), np.uint16), W0, A, B,
                                            np.zeros((0, 2), np.float32), 1.0, device="emu")
    assert dX.shape == (0, 8) and not dA.any() and not dB.any()


def test_bf16_kernels_pass_the_shared_memory_racecheck(racecheck_every_launch):
    """Every launch of lora_forward_bf16 and lora_backward_bf16 under the emulator's racecheck (compute-sanitizer's:
    two threads touching the same shared byte, one writing, with no barrier between), on the cp.async path and the
    plain-load path. (check_races above compares whole runs under several schedules; this checks each access.)"""
    launched = racecheck_every_launch
    for version in kernels.BF16_VERSIONS:
        for M, N, K, r in ((40, 136, 136, 17), (37, 45, 50, 3)):
            (X, W0, A, B, dY, _), (Xb, Wb, dYb) = lora_bf16_backward_case(9, M, N, K, r)
            Y, U = kernels.lora_forward_bf16(Xb, Wb, A, B, 0.5, device="emu", version=version)
            dX, dA, dB = kernels.lora_backward_bf16(dYb, Xb, Wb, A, B, U, 0.5, device="emu", split_m=2,
                                                    version=version)
            exact, scales = bf16_backward_references(bf16_value(Xb), bf16_value(Wb), A, B, bf16_value(dYb), U, 0.5)
            assert (np.abs(dX - exact["dX"]) <= 1e-5 * scales["dX"]).all()
    assert {"lora_bf16_fwd_u", "lora_bf16_fwd_y", "lora_bf16_fwd_y_v2", "lora_bf16_bwd_dy", "lora_bf16_bwd_dx",
            "lora_bf16_bwd_dx_v2", "lora_bf16_bwd_da", "lora_reduce_partials"} <= set(launched)


def test_cuda_launch_opts_in_to_dynamic_shared_memory_over_48_kb(monkeypatch):
    """On `cuda`, a launch with over 48 KB of dynamic shared memory first raises the kernel's
    max_dynamic_shared_size_bytes (CuPy's RawKernel attribute for cudaFuncAttributeMaxDynamicSharedMemorySize),
    once, then passes shared_mem: without the opt-in the GPU refuses the launch. (A stand-in kernel: no GPU here.)"""
    calls = []

    class FakeKernel:
        max_dynamic_shared_size_bytes = 0

        def __call__(self, grid, block, args, shared_mem=0):
            calls.append((grid, block, shared_mem, self.max_dynamic_shared_size_bytes))

    kernel = FakeKernel()
    monkeypatch.setattr(kernels, "_module", lambda dev, filename, sanitize=False: type("M", (), {
        "get_function": staticmethod(lambda name: kernel)})())
    cuda = type("Dev", (), {"name": "cuda"})()
    _, _, smem = kernels._bf16_gemm("v2", backward=False)
    kernels._launch(cuda, "lora_bf16.cu", "lora_bf16_fwd_y_v2", (2, 3), 256, (), smem)
    kernels._launch(cuda, "lora_bf16.cu", "lora_bf16_fwd_u", (4,), 256, ())
    assert calls == [((2, 3), (256,), smem, smem), ((4,), (256,), 0, smem)]
