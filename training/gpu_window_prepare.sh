#!/usr/bin/env bash
# Here, before a GPU window (docs/training.md, "GPU windows"): build the data pack for this
# checkout's byte budget and fetch the wheels the GPU image lacks, both git-ignored and carried.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
"${PYTHON:-.venv/bin/python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .whl importlib_metadata==10.2.0 lazy-importer==0.1.0
# The gray and video weights are never read by a window: out of the index and ignored until
# gpu_collect (or `window_tree put-back`) puts them back, so the pack gets their 21 MB.
"${PYTHON:-.venv/bin/python}" -m fbcnn_plugins.training.window_tree set-aside
# The wheels count towards the 64 MiB too: the pack's reserve keeps room for them.
"${PYTHON:-.venv/bin/python}" -m fbcnn_plugins.training.data_pack --out data-pack --reserve-mib 1
du -sh data-pack .whl
