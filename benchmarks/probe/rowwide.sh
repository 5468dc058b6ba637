#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 seventh part, fifth tree: the wide rowwise
# kernel (train_rowwise_wide_kernel, csrc/train/rowwise.cuh; "auto") beside the staged rowwise
# kernel (train_rowwise_smem_kernel, csrc/train/colwise_smem.cuh) for the nearest rowwise
# operand with 2-D scales or the transform, and the direct rowwise kernel specialised for
# round to nearest without transform. Main carried (nvfp4_ops/_C.so, TORCH_CUDA_ARCH_LIST=
# 9.0a). GPU 1: every test folder. GPU 0: bench_training 8192^2 and 4096 x 14336 with
# "auto", "smem" (the staged rowwise kernel) and "direct" (the direct rowwise kernel: the
# baseline), twice each.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 280 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 280 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
for rep in 1 2; do
  for v in auto smem direct; do
    (cd benchmarks && NVFP4_OPS_TRAIN_KERNEL=$v timeout 60 python bench_training.py --rep 30 --shapes 8192x8192,4096x14336 --moe none --out $L/train_${v}_$rep.md > $L/train_${v}_$rep.log 2>&1)
  done
done
stamp "bench done"
for f in $L/train_*_1.md $L/train_*_2.md; do
  echo "--- $(basename $f)"; grep -E "^\| \[" $f | grep -E "axis -1, (given|block_2d|Hadamard)|rowcol, (given|block_2d)" | cut -d"|" -f2-4
done
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
