#!/usr/bin/env bash
# GPU (one H200): the grid of the MX rowwise quantize / dequantize kernels
# (NVFP4_OPS_MX_CTAS_PER_SM, csrc/mx/ops.cu): bench_mx's rows with no cap (one CTA per 1024
# vectors, the default), then 6, 12, 24 CTAs per SM, then no cap again; then
# tests/cuda/test_mx.py with the tightest cap (every CTA loops). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
for c in 0 6 12 24 0b; do
  (cd benchmarks && NVFP4_OPS_MX_CTAS_PER_SM=${c%b} timeout 90 python bench_mx.py --compile none \
    --shapes 8192x8192,4096x14336 --out $L/mx_$c.md > $L/mx_$c.log 2>&1)
  stamp "cap $c rc=$?"
  grep -E "axis-1 linear|dequantize -> bf16" $L/mx_$c.md | cut -d'|' -f2-5
done
NVFP4_OPS_MX_CTAS_PER_SM=6 timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda/test_mx.py -n 8 > $L/test_mx.log 2>&1
stamp "test_mx (cap 6) rc=$?: $(tail -1 $L/test_mx.log)"
