#!/usr/bin/env bash
# Configure and build the C++ library, CLI, example and unit tests into cpp/build (Release).
# OpenVINO comes from the `openvino` Python wheel: run inside the project's venv, or set
# PYTHON to a Python that has it. Extra arguments go to the configure step (-DNAME=VALUE).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
openvino_dir="$("$python" -c "import openvino, os; print(os.path.join(os.path.dirname(openvino.__file__), 'cmake'))")"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=Release -DOpenVINO_DIR="$openvino_dir" \
      -DUNIONCAM_PYTHON="$(command -v "$python")" "$@"
cmake --build "$here/build" -j "${JOBS:-2}"
