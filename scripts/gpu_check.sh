#!/usr/bin/env bash
# One command for a CUDA machine's first hour: the CUDA-marked tests, then the benchmark of
# one and two members at 144 crops in fp32, bf16 and compiled bf16, printing crops/s per member
# and the projected time of the full protocol (7 members x 144 crops x 50,000 images).
#
#   bash scripts/gpu_check.sh                     # uses .venv/bin/python and ../shared/data/imagenet-sample
#                                                 # (or, where that is absent, the 8 images of samples/eval)
#   PYTHON=python DATA=/data/imagenet/val IMAGES=64 bash scripts/gpu_check.sh
#
# Everything lands in ${OUT:-gpu-check}/ (test log, one JSON per setting, summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data/imagenet-sample}
if [ ! -d "$DATA" ] && [ "$DATA" = ../shared/data/imagenet-sample ]; then  # a fresh clone: the shipped images
    DATA=samples/eval
    IMAGES=${IMAGES:-8}
fi
IMAGES=${IMAGES:-32}
OUT=${OUT:-gpu-check}

"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA GPU is visible; run it on a CUDA machine')"
mkdir -p "$OUT"
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')" | tee "$OUT/summary.txt"

echo "== CUDA-marked tests" | tee -a "$OUT/summary.txt"
"$PY" -m pytest -m cuda -q tests 2>&1 | tee "$OUT/cuda-tests.txt" | tail -3 | tee -a "$OUT/summary.txt"

for setting in "fp32" "bf16" "bf16 --compile"; do
    name=${setting// --/-}
    echo "== benchmark: $setting" | tee -a "$OUT/summary.txt"
    # shellcheck disable=SC2086
    "$PY" scripts/benchmark.py --device cuda --data "$DATA" --images "$IMAGES" --models 1 2 --crops 144 \
        --precision $setting --no-startup --out "$OUT/bench-$name.json" | tee -a "$OUT/summary.txt"
done
echo "wrote $OUT/"
