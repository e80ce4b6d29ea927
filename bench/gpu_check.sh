#!/usr/bin/env bash
# The GPU checks of issue 19 in one run, for a machine with a CUDA GPU: the tests marked `cuda`, then
# bench/gpu.py (its figures go to bench/results/gpu.json; put them in bench/README.md). Extra arguments go to
# bench/gpu.py, e.g. `bench/gpu_check.sh --skip-stack` or smaller sizes when time is short.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('CUDA:', ok, torch.cuda.get_device_name(0) if ok else ''); sys.exit(0 if ok else 2)"
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/ml/test_precision.py
"$PY" bench/gpu.py --json bench/results/gpu.json "$@"
