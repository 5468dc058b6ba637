#!/usr/bin/env bash
# GPU call (one H200), session of 2026-11-30 seventh part, last tree: the MX grouped kernel
# with the per-block split for 16-bit x (lane q owns vector q's block) and, for linear scales,
# no per-row group table (a row is in a group iff it is below the last end). Main carried
# (nvfp4_ops/_C.so). In turn: bench_training's MoE rows (twice), probe/grouped_prof.py,
# tests/cuda/test_training_cuda.py and tests/training. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
L=/tmp/logs; rm -rf $L; mkdir -p $L
for rep in 1 2; do
  (cd benchmarks && timeout 60 python bench_training.py --rep 30 --shapes 8192x8192 --out $L/train_$rep.md > $L/train_$rep.log 2>&1)
  echo "train rc=$?"
  grep -E "^\| MoE" $L/train_$rep.md | cut -d'|' -f2-6
done
timeout 60 python benchmarks/probe/grouped_prof.py > $L/grouped_prof.txt 2>&1
echo "prof rc=$?"
grep -E "kernel|Memcpy|Memset|^##" $L/grouped_prof.txt | grep -v cudaLaunch | awk '{n=NF; printf "%-50s %s %s\n", substr($0,1,50), $(n-3), $(n-1)}'
OMP_NUM_THREADS=2 timeout 200 python -m pytest -q -p no:cacheprovider -n 10 tests/cuda/test_training_cuda.py tests/training tests/ops/test_training_ops.py > $L/t.txt 2>&1
echo "t.txt: $(tail -1 $L/t.txt)"; grep -hE "^(FAILED|ERROR)" $L/t.txt | head -8
tar czf $OUT/logs.tgz -C /tmp logs
