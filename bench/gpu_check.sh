#!/usr/bin/env bash
# The GPU checks of issue 19 in one run, for a machine with a CUDA GPU: the tests marked `cuda`, then bench/gpu.py
# (figures to $OUT/gpu.json, else bench/results/gpu.json; put them in bench/README.md). Extra arguments go to
# bench/gpu.py, e.g. `--skip-stack` or smaller sizes when time is short.
#
# On a lent GPU machine (/work/.library/device: Python 3.12 with a CUDA torch, no package index, only the repository
# travels), build the bundle here first and carry it:
#   .venv/bin/python bench/gpu_bundle.py                       # -> .gpu/ (git-ignored, ~60 MB)
#   device run: command "bash bench/gpu_check.sh", carry [".gpu"], timeout_s 540
# With .gpu/ present this script installs its wheels into /tmp/site, unpacks the fp16 copy of the default encoder,
# and reads the carried tweets; elsewhere it uses .venv (or PY=...) and ../shared as the benchmarks do.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .gpu/whl ]; then
  PY=${PY:-python3}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  weights=.gpu/encoder/model.safetensors
  [ -f "$weights" ] || "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1] + '.xz'),
                                                                           open(sys.argv[1], 'wb'))" "$weights"
  export PYTHONPATH="/tmp/site:$PWD/.gpu/site:$PWD" BERTQUEUE_DATASET="$PWD/.gpu/data/tweets_sentiment.csv"
else
  PY=${PY:-.venv/bin/python}
fi
nvidia-smi -L || true
cpu_smoke=0  # `--device cpu`: bench/gpu.py's CPU smoke run of the same steps (a rehearsal where no GPU is)
for arg in "$@"; do case "$arg" in cpu|--device=cpu) cpu_smoke=1 ;; esac; done
"$PY" -c "import torch, sys; ok = torch.cuda.is_available()
print('torch', torch.__version__, 'CUDA:', ok, torch.cuda.get_device_name(0) if ok else '')
sys.exit(0 if ok or $cpu_smoke else 2)"
# the CUDA tests first (a minute): whatever they say, the benchmark still runs
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/ml/test_precision.py tests/models/test_families.py 2>&1 | tee "$OUT/gpu_tests.log" || true
"$PY" bench/gpu.py --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
