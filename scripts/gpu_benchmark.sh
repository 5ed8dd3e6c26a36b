#!/usr/bin/env bash
# Issue 16's GPU figures in one run, on a machine with an NVIDIA GPU and its driver: the whole analysis of a
# 512 x 512 x 300 CT (DICOM in, every output and the twin) on ONNX Runtime's CUDA and TensorRT execution providers,
# stage by stage, and studies per minute with 4 in flight on one loaded model. Prints the tables for the README
# (add the date and the GPU it names first).
#
#   bash scripts/gpu_benchmark.sh [WHEELHOUSE]
#
# It makes its own virtual environment (.venv-gpu) with the [serve] extra and onnxruntime-gpu in place of
# onnxruntime (the two cannot share one environment; Dockerfile.gpu does the same). Where the machine reaches no
# package index, give it a folder of wheels made on one that does, for the GPU machine's Python:
#   pip download -d wheels --python-version 3.11 --only-binary=:all: ".[serve]" onnxruntime-gpu==1.31.1
# TensorRT's own libraries (pip "tensorrt-cu12", or the system's libnvinfer) must be there for the TensorRT
# column; without them ONNX Runtime runs that column on CUDA, and the column's header says so.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv-gpu
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
if [ -n "${1:-}" ]; then PIP+=(--no-index --find-links "$1"); fi
"${PIP[@]}" ".[serve]"
"$VENV/bin/pip" uninstall --quiet -y onnxruntime || true
"${PIP[@]}" onnxruntime-gpu==1.31.1
"$VENV/bin/python" - <<'PY'
import onnxruntime as ort
providers = ort.get_available_providers()
print("ONNX Runtime", ort.__version__, "providers:", ", ".join(providers))
if "CUDAExecutionProvider" not in providers:
    raise SystemExit("this onnxruntime has no CUDA execution provider: is onnxruntime-gpu installed over onnxruntime?")
PY
export TWIN_IMAGING_DATA_DIR=${TWIN_IMAGING_DATA_DIR:-$(mktemp -d)}
for providers in CUDAExecutionProvider TensorrtExecutionProvider,CUDAExecutionProvider; do
  "$VENV/bin/python" benchmarks/bench_analyze.py --providers "$providers" --no-baseline --in-flight 4 --repeats 5
done
