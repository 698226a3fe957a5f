#!/usr/bin/env bash
# The GPU check, made for a short loan of one GPU on a bare machine holding only this repository:
#   1. a virtual environment with torch (the default PyPI wheel: CUDA on Linux) and transeg[dev];
#   2. the tests marked `cuda` (mixed-precision training steps with the scaler, SyncBatchNorm,
#      slide and ms-flip on the GPU, fp16/bf16 autocast, channels-last, torch.compile, ONNX Runtime's
#      CUDA provider where onnxruntime-gpu is installed);
#   3. benchmarks/gpu_fps.py: SegFormer-B0/B5 FPS at 1024x2048 against SegFormer Table 2, B0 training
#      images/s, within the time left.
# Everything finishes within GPU_CHECK_BUDGET_S seconds (default 480: 8 minutes).
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine; results in gpu-check-output/
#   bash benchmarks/gpu_check.sh --dry-run    # no GPU: the current Python, no install, tiny CPU sizes
#
# Without a GPU (no nvidia-smi, or torch sees no CUDA device) it runs as the dry run and says so.
set -uo pipefail

cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-480}
OUT=${GPU_CHECK_OUT:-gpu-check-output}
VENV=${GPU_CHECK_VENV:-.venv-gpu}
DRY_RUN=0
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
if [ "$DRY_RUN" = 0 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "no nvidia-smi on this machine: running the dry run"
    DRY_RUN=1
fi
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
mkdir -p "$OUT"

if [ "$DRY_RUN" = 1 ]; then
    PY=${PYTHON:-python3}
    echo "DRY RUN: skipped creating $VENV and installing torch (CUDA) and transeg[dev]; using $PY"
    export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    if [ ! -x "$VENV/bin/python" ]; then
        ${PYTHON:-python3} -m venv "$VENV" || exit 1
    fi
    PY="$VENV/bin/python"
    "$PY" -m pip install --quiet --upgrade pip uv >/dev/null 2>&1
    # uv installs the CUDA wheels several times faster than pip; pip is the fallback
    if ! "$VENV/bin/uv" pip install --quiet --python "$PY" "torch==2.13.0" -e ".[dev]"; then
        "$PY" -m pip install --quiet "torch==2.13.0" -e ".[dev]" || exit 1
    fi
    echo "installed in $(elapsed) s"
    if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        echo "torch sees no CUDA device (driver too old for its CUDA build?): running the dry run"
        DRY_RUN=1
    fi
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"

# 2. the tests marked cuda (they skip, each saying why, without a GPU)
TEST_LIMIT=$(( $(left) / 2 ))
timeout "$TEST_LIMIT" "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests/test_cuda.py 2>&1 \
    | tee "$OUT/cuda_tests.txt"
TESTS_RC=${PIPESTATUS[0]}
echo "cuda tests: exit $TESTS_RC after $(elapsed) s"

# 3. FPS, with what is left of the budget (less a margin to write the results)
FPS_ARGS=(--out "$OUT/gpu_fps.json" --budget-s $(( $(left) - 60 > 10 ? $(left) - 60 : 10 )))
[ "$DRY_RUN" = 1 ] && FPS_ARGS+=(--dry-run)
timeout $(( $(left) > 20 ? $(left) : 20 )) "$PY" benchmarks/gpu_fps.py "${FPS_ARGS[@]}" 2>&1 \
    | tee "$OUT/gpu_fps.txt"
FPS_RC=${PIPESTATUS[0]}
echo "gpu check done in $(elapsed) s (budget $BUDGET s); tests exit $TESTS_RC, fps exit $FPS_RC; results in $OUT/"
[ "$TESTS_RC" = 0 ] && [ "$FPS_RC" = 0 ]
