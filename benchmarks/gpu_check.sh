#!/usr/bin/env bash
# The GPU check of minilora's CUDA kernels, in one go (issue 6):
#   1. the CUDA tests -- every test parametrised over the `cuda` device, plus the nvcc compile checks;
#   2. every GPU benchmark (benchmarks/gpu_lora.py), which writes benchmarks/RESULTS.md.
# Installs nothing: run it where minilora, CuPy and an NVIDIA GPU already are.
#
#   bash benchmarks/gpu_check.sh              # full run
#   bash benchmarks/gpu_check.sh --quick      # a shorter benchmark (options go to gpu_lora.py)
set -uo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() == 0)" 2>/dev/null; then
    echo "gpu_check.sh: needs CuPy and an NVIDIA GPU (python -c 'import cupy' fails or sees no device)." >&2
    echo "Nothing was run; on a GPU machine: pip install -e '.[cuda,test]' first, or, where CuPy is already" >&2
    echo "installed in another environment, put that environment's bin/ first on PATH and PYTHONPATH=\$PWD." >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

log=$(mktemp)
python -m pytest tests -q -k "cuda or compile" -p no:cacheprovider 2>&1 | tee "$log"
tests_status=${PIPESTATUS[0]}
summary=$(grep -E "(passed|failed|error)" "$log" | tail -n 1)
rm -f "$log"

python benchmarks/gpu_lora.py --tests "${summary:-no summary} (pytest exit status $tests_status)" "$@"
bench_status=$?

echo "gpu_check.sh: tests exit status $tests_status, benchmark exit status $bench_status"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
