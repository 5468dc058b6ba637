#!/usr/bin/env bash
# GPU (one H200), issue 14: the training recipes end to end on the GPU (CUDA kernels), a
# larger MLP and a longer run than the committed CPU run, three seeds (data and student
# initialisation) so that the spread between seeds shows which gaps between recipes are
# real: benchmarks/train_recipes.py --device cuda --steps 1500 --width 1024 --depth 4
# --batch 256 --lr 1e-3 --seed 0/1/2. Each seed's CSV and table in $OUT/tr_<seed>.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
t0=$(date +%s)
for s in 0 1 2; do
  timeout 150 python benchmarks/train_recipes.py --device cuda --steps 1500 --width 1024 \
    --depth 4 --batch 256 --lr 1e-3 --seed $s --out $OUT/tr_$s > $OUT/tr_$s.md 2> $OUT/tr_$s.log
  echo "[$(( $(date +%s) - t0 )) s] seed $s rc=$?"; cat $OUT/tr_$s.md
done
