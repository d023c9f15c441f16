#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): every CUDA path of ckptkd once, under 8 minutes on one GPU.
# Without CUDA it runs the CPU half of check 1, says "no CUDA: ..." and exits 0 (CI runs it so).
# The script stops starting checks at its --time-limit (450 s); `timeout` is the hard cap on top
# (GPU_CHECK_TIMEOUT seconds, default 480), and gpu_check.json keeps every check that finished.
#   bash scripts/gpu_check.sh [--out DIR] [--only cache,compile] [...]   (see --help)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec timeout --signal=TERM --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" \
    "${PYTHON:-python}" "$here/gpu_check.py" "$@"
