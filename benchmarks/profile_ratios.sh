#!/usr/bin/env bash
# Suite-vs-bare-loop and real-loader-vs-in-memory ratios at the default study shape (32x32x16), one model at a
# time: the baseline (torch engine, 1 rank, in-memory tensors), the bare-loop reference and the real-loader check
# alternate for 5 rounds in one process (--rounds 5), each timing --steps steps after 5 warm-up steps.
# Figures: benchmarks/profile_cpu.md, "Overhead and data path with the prefetching loader". About 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/profile_ratio}
"$PY" launchers/profile_throughput.py --model unet --steps 40 --warmup 5 --threads 1 --rounds 5 --no-sampling \
  --no-tracking --out "$OUT/unet" > "$OUT-unet.json"
for model in pix2pix3d spade_gan spade_ldm; do
  "$PY" launchers/profile_throughput.py --model "$model" --steps 30 --warmup 5 --threads 1 --rounds 5 --no-sampling \
    --no-tracking --out "$OUT/$model" > "$OUT-$model.json"
done
