#!/usr/bin/env bash
# GPU call (one H200 of two), session of 2026-11-30 seventh part: the direct rowwise kernel
# specialised on stochastic rounding (round to nearest at 4 CTAs per SM, 64 registers, 54
# bytes of spills; stochastic at 3), measured beside final11.sh's "rowlane" rows (the same
# kernel at 3 CTAs for both); probe/grouped_prof.py (kernel times of the grouped ops).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
L=/tmp/logs; rm -rf $L; mkdir -p $L
(cd benchmarks && timeout 100 python bench_training.py --rep 30 --shapes 8192x8192 --out $L/train.md > $L/train.log 2>&1)
echo "train rc=$?"
timeout 60 python benchmarks/probe/grouped_prof.py > $L/grouped_prof.txt 2>&1
echo "prof rc=$?"
tar czf $OUT/logs.tgz -C /tmp logs
grep -E "^\| (\[8192, 8192\]|MoE)" $L/train.md | grep "axis -1\|rowcol\|MoE" | cut -d'|' -f2-6
grep -E "^## |Self CUDA|^ +[a-zA-Z_].*us" $L/grouped_prof.txt | cut -c1-60,100-200 | head -70
