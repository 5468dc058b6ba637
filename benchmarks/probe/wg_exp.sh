#!/usr/bin/env bash
# GPU call (one H200), session of 2026-11-30 sixth part: what the wgmma GEMM waits for. Four
# builds (TORCH_CUDA_ARCH_LIST=9.0a) carried as .carry/C_*.so.gz: base (main, 9384666), E1
# without the ring-stage refills in the main loop (activations: stale shared memory), E2
# without the weight loads of the main loop (registers reused), E3 without both; their
# results are wrong, only their time counts. benchmarks/probe/wg_exp.py times each.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
for v in base E1 E2 E3; do
  rm -rf /tmp/t$v; mkdir -p /tmp/t$v
  cp -r nvfp4_ops benchmarks /tmp/t$v/
  gunzip -c .carry/C_$v.so.gz > /tmp/t$v/nvfp4_ops/_C.so
  (cd /tmp/t$v && PYTHONPATH=/tmp/t$v CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} timeout 100 python benchmarks/probe/wg_exp.py $v 2>&1 | tee -a $OUT/exp.log)
done
