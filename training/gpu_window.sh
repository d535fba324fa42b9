#!/usr/bin/env bash
# One GPU window, run verbatim through the `run` tool (docs/training.md, "GPU windows"):
#   command: bash training/gpu_window.sh      carry: ["data-pack", ".whl"]      timeout_s: 590
# Extra arguments go to gpu_run (e.g. --compile reduce-overhead, --budget 300).
# It installs the project and the two wheels the GPU image lacks (importlib_metadata,
# lazy-importer) into /tmp/site, trains, and leaves report.json, run.log, the weights card and its
# parts in $OUT.  The training budget plus about two minutes of start-up, validation, export and
# inference benchmarks end inside the limit; `timeout` stops a slow run early enough that the
# trainer writes its weights before the command's limit.
set -uo pipefail
: "${OUT:?OUT must name the folder whose files come back}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --target /tmp/site .whl/*.whl . \
  > "$OUT/run.log" 2>&1 || { cat "$OUT/run.log"; exit 3; }
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$OUT/run.log"
timeout --signal=TERM --kill-after=15 "${WINDOW_SECONDS:-565}" \
  python3 -P -m fbcnn_plugins.training.gpu_run --data data-pack --out "$OUT" "$@" 2>&1 | tee -a "$OUT/run.log"
