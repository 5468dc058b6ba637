#!/usr/bin/env bash
# GPU (one H200): vectors per thread of the MX rowwise quantize kernel (NVFP4_OPS_MX_UNROLL
# 2 / 4 / 8; 4 is the default, run twice, first and last): bench_mx's rows on two shapes;
# then tests/cuda/test_mx.py under 2 and 8 (in parallel). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
for u in 4 2 8 4b; do
  (cd benchmarks && NVFP4_OPS_MX_UNROLL=${u%b} timeout 90 python bench_mx.py --compile none \
    --shapes 8192x8192,4096x14336 --out $L/mx_$u.md > $L/mx_$u.log 2>&1)
  stamp "unroll $u rc=$?"
  grep -E "axis-1" $L/mx_$u.md | cut -d'|' -f2-5,7,8
done
for u in 2 8; do
  (NVFP4_OPS_MX_UNROLL=$u timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda/test_mx.py -n 6 > $L/test_mx_$u.log 2>&1; echo "test_mx unroll $u rc=$?: $(tail -1 $L/test_mx_$u.log)" > $L/test_mx_$u.rc) &
done
wait
cat $L/test_mx_*.rc; stamp done
