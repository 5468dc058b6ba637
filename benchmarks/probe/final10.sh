#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 sixth part, the final tree: c5becca's kernels
# plus h-e2m1 (the shorter exact E2M1 encode, b7705c0). Main carried (nvfp4_ops/_C.so,
# TORCH_CUDA_ARCH_LIST=9.0a). GPU 1: every test folder (two pytest-xdist groups). GPU 0:
# bench_training on 8192^2 (the quantize and training rows, before: final9.sh), then
# bench_codecs-style inference quantize rows come from the same report. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 250 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 250 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
(cd benchmarks && timeout 90 python bench_training.py --rep 30 --shapes 8192x8192 --out $L/train.md > $L/train.log 2>&1)
stamp "train rc=$?"
grep -E "^\| (\[8192, 8192\]|MoE)" $L/train.md | cut -d'|' -f2-6
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
