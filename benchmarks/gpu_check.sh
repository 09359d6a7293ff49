#!/usr/bin/env bash
# The GPU check of minilora's CUDA kernels, in one go, inside a total time bound (issues 6 and 16):
#   1. the CUDA tests -- every test parametrised over the `cuda` device (the kernels, BGMV, the one-rank
#      NCCL test of tests/test_distributed.py), plus the nvcc compile checks;
#   2. the kernel benchmarks (benchmarks/gpu_lora.py: the fp32 LoRA kernel versions v3..v9 -- v1 and v2, 9-100x
#      cuBLAS's time, are no longer swept -- the bf16 tensor-core forward and backward, the unfused path,
#      cuBLAS fp32 and bf16, PEFT, BGMV, AdamW), which write benchmarks/RESULTS.md table by table -- and the
#      version sweep's verdict: the fastest fused version per pass (forward; forward + backward) and rank
#      among those that agree with cuBLAS (and the fastest with 128 x 128 tiles, for problems too small for
#      v9's), into benchmarks/gpu_choice.json, which minilora.kernels.pick_version reads from then on
#      (commit it with RESULTS.md);
#   3. the training step of a ~1.1B Llama, minilora vs transformers + PEFT (benchmarks/gpu_train_step.py),
#      appended to RESULTS.md.
# Installs nothing: run it where minilora, CuPy, torch+PEFT and an NVIDIA GPU already are.
#
#   bash benchmarks/gpu_check.sh              # full run, at most GPU_CHECK_BUDGET_S seconds (default 540)
#   bash benchmarks/gpu_check.sh --quick      # a shorter benchmark (options go to gpu_lora.py)
# Each stage runs under `timeout` with its share of what is left, so the whole script ends in time even
# if a stage hangs; a stage cut short says so in its exit status (124) and in the summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${GPU_CHECK_BUDGET_S:-540}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
atleast() { echo $(( $1 > $2 ? $1 : $2 )); }  # a timeout never below a floor, even when the budget is spent

if ! python -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() == 0)" 2>/dev/null; then
    echo "gpu_check.sh: needs CuPy and an NVIDIA GPU (python -c 'import cupy' fails or sees no device)." >&2
    echo "Nothing was run; on a GPU machine: pip install -e '.[cuda,test]' first, or, where CuPy is already" >&2
    echo "installed in another environment, put that environment's bin/ first on PATH and PYTHONPATH=\$PWD." >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv
export CUPY_TF32=0  # fp32 rows are fp32
# A fresh RESULTS.md: gpu_lora.py rewrites it table by table, gpu_train_step.py appends to it; if the first
# died before its first table, the second would append to an earlier run's numbers (git keeps those).
printf '# GPU benchmark results\n\ngpu_check.sh started %s; sections below are this run'"'"'s only.\n\n' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" > benchmarks/RESULTS.md

# 1. tests: at most a third of the budget (the CuPy stand-in tests, tests/test_cuda_standin*.py, run on the CPU in CI:
#    ~1000 of them, minutes of this machine's time for nothing)
log=$(mktemp)
timeout "$(atleast $(( $(left) / 3 )) 30)" python -m pytest tests -q -k "(cuda or compile) and not standin" -p no:cacheprovider 2>&1 | tee "$log"
tests_status=${PIPESTATUS[0]}
summary=$(grep -E "(passed|failed|error)" "$log" | tail -n 1)
rm -f "$log"

# 2. kernel benchmarks: their own budget leaves 40% of what is left for the training step
bench_budget=$(atleast $(( $(left) * 6 / 10 )) 60)
timeout $(( bench_budget + 60 )) python benchmarks/gpu_lora.py --budget-s $(( bench_budget - 30 )) \
    --choice-out benchmarks/gpu_choice.json --tests "${summary:-no summary} (pytest exit status $tests_status)" "$@"
bench_status=$?

# 3. the training step, appended to RESULTS.md (what is left, less a margin). Its "minilora LoRA bf16" row
#    needs bfloat16 tensors: ml_dtypes and CuPy >= 14; without them the row says why, and so does this line.
python - <<'PY' || true
import cupy
try:
    import ml_dtypes  # noqa: F401
except ImportError:
    print("gpu_check.sh: ml_dtypes is not installed: the training step's minilora bf16 row will not run")
major = cupy.__version__.split(".")[0]
if not (major.isdigit() and int(major) >= 14):
    print(f"gpu_check.sh: CuPy {cupy.__version__} has no bfloat16 (needs >= 14): the training step's "
          "minilora bf16 row will not run")
PY
timeout "$(atleast $(( $(left) - 10 )) 30)" python benchmarks/gpu_train_step.py --out benchmarks/RESULTS.md
train_status=$?

echo "gpu_check.sh: tests exit status $tests_status, benchmark $bench_status, train step $train_status" \
     "(124: cut by the time bound), $(( $(date +%s) - start )) s of $budget"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ] && [ "$train_status" -eq 0 ]
