#!/usr/bin/env bash
# The GPU checks of one device session, as one command (about 7 minutes on an H200 after the
# machine starts): the gpu-marked tests, then the GPU benchmark (W1, W4, W2; then the stiff and
# SDE parts, not yet run on a GPU, while the deadline allows). Run from the repository root
# on a machine with CUDA and the machine's own PyTorch; logs go to $OUT when it is set (the
# device tool's output folder), else to runs/gpu/. tidal runs from src/ (nothing installed).
set -uo pipefail
out="${OUT:-runs/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src" PYTHONDONTWRITEBYTECODE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/env.log"
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__)" | tee -a "$out/env.log"
# pytest-benchmark (on the device image) warns under xdist, which filterwarnings=error fails
timeout 170 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:benchmark tests 2>&1 \
    | tee "$out/tests.log" | tail -25
timeout 360 python3 benchmarks/bench_gpu.py --only W1,W4,W2,stiff,sde --deadline 230 2>&1 \
    | tee "$out/bench.log"
