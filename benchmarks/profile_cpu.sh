#!/usr/bin/env bash
# Reproduces the CPU figures of benchmarks/profile_cpu.md: every model at the default study shape (32x32x16,
# configs/default.yaml), 20 timed steps after 5 warm-up steps, one thread per rank, torch and DeepSpeed ZeRO-2 on
# 1 and 2 ranks, the bare-loop reference and the real-data-loader check (alternated 3 rounds in one process) and,
# for spade_ldm, DDIM-50 vs DDPM-1000 sampling; then the U-Net FLOP count at 256x256x64 and the plots.
# spade_ldm runs with r1_gamma=0, as when these figures were taken (DeepSpeed ZeRO-1/2 then failed on the R1
# penalty's torch.autograd.grad; fixed since, see profile_cpu.md).
# One configuration at a time; about 30 minutes on 2 shared cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/profile_cpu}
COMMON=(--steps 20 --warmup 5 --threads 1 --engine torch,deepspeed --zero 2 --ranks 1,2)
for model in unet pix2pix3d spade_gan spade_ldm; do
  extra=()
  [[ $model == spade_ldm ]] && extra=(--set r1_gamma=0)
  "$PY" launchers/profile_throughput.py --model "$model" "${COMMON[@]}" "${extra[@]}" --out "$OUT/$model" \
    > "$OUT-$model.json" \
    || echo "$model: some configurations failed (see $OUT/$model/profile.csv)"
done
# DDIM-50 against DDPM-1000 (configs/default.yaml samples with 25 DDIM steps), and the SPADE-LDM overhead ratios
# again with 5 alternation rounds
"$PY" launchers/profile_throughput.py --model spade_ldm --steps 2 --warmup 1 --threads 1 --no-reference --no-loader \
  --no-tracking --set r1_gamma=0 ddim_steps=50 --out "${OUT}_sampling" > "${OUT}_sampling.json"
"$PY" launchers/profile_throughput.py --model spade_ldm --steps 20 --warmup 5 --threads 1 --rounds 5 --no-sampling \
  --no-tracking --set r1_gamma=0 --out "${OUT}_ldm_ratio" > "${OUT}_ldm_ratio.json"
"$PY" benchmarks/unet_flops.py > "$OUT-unet-flops.json"
"$PY" analysis/profile_report.py "$OUT"/*/profile.csv --out "$OUT/report"
