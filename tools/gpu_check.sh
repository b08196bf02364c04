#!/usr/bin/env bash
# GPU readiness in one command: the GPU tests (tests/gpu, as `make test-gpu`) and the
# throughput bench (bench/gpu_throughput.py: DLM and AR, bf16 and FP8, at the 1.7B recipe's
# shape), each under a time limit, in under 8 minutes on one H100/H200. Results go to one folder:
#
#   tools/gpu_check.sh [RESULTS_DIR]          # default: ./gpu_check_results
#
#   RESULTS_DIR/gpu_check_results.txt   the summary: GPU, versions, test counts and failures,
#                                       tokens/s, TFLOP/s/GPU, MFU, DLM/AR and FP8/bf16 ratios
#   RESULTS_DIR/gpu_check_results.json  the same, for tools
#   RESULTS_DIR/tests_gpu.{log,xml}, bench.{log,json}   each step's own output
#
# It needs the package's dependencies importable by $PYTHON (the container of docs/cluster.md
# has them; the repository is put on PYTHONPATH, no install needed) and exits non-zero if a
# test failed or the bench did not finish. Environment: PYTHON (python3), TEST_TIMEOUT (240 s),
# BENCH_TIMEOUT (200 s), BENCH_ARGS (extra bench/gpu_throughput.py flags).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${1:-gpu_check_results}
mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
PYTHON=${PYTHON:-python3}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-200}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUDA_DEVICE_MAX_CONNECTIONS=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
cd "$REPO" || exit 2
started=$SECONDS

echo "[gpu_check] GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader 2>&1 | head -n 8 | tr '\n' ';')"

echo "[gpu_check] 1/2 tests/gpu (limit ${TEST_TIMEOUT} s) -> $RESULTS_DIR/tests_gpu.log"
PER_TEST=()
if "$PYTHON" -c "import pytest_timeout" 2>/dev/null; then
    PER_TEST=(--timeout 180)
fi
timeout -k 10 "$TEST_TIMEOUT" "$PYTHON" -m pytest tests/gpu -q -rs -p no:cacheprovider \
    "${PER_TEST[@]}" --junitxml "$RESULTS_DIR/tests_gpu.xml" >"$RESULTS_DIR/tests_gpu.log" 2>&1
tests_rc=$?
tail -n 3 "$RESULTS_DIR/tests_gpu.log"

echo "[gpu_check] 2/2 bench/gpu_throughput.py (limit ${BENCH_TIMEOUT} s) -> $RESULTS_DIR/bench.log"
# shellcheck disable=SC2086  # BENCH_ARGS holds several flags
timeout -k 10 "$BENCH_TIMEOUT" "$PYTHON" bench/gpu_throughput.py --output "$RESULTS_DIR/bench.json" \
    ${BENCH_ARGS:-} >"$RESULTS_DIR/bench.log" 2>&1
bench_rc=$?
tail -n 8 "$RESULTS_DIR/bench.log"

"$PYTHON" "$REPO/tools/gpu_check_summary.py" "$RESULTS_DIR" --tests-rc "$tests_rc" \
    --bench-rc "$bench_rc" --seconds "$((SECONDS - started))"
summary_rc=$?
echo "[gpu_check] results: $RESULTS_DIR/gpu_check_results.txt (and .json)"
exit "$summary_rc"
