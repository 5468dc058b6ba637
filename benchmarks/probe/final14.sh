#!/usr/bin/env bash
# GPU call (one H200), session of 2026-11-30 seventh part, the final tree (ddb5b73 and the
# documentation commits after it): every test folder. Main carried (nvfp4_ops/_C.so,
# TORCH_CUDA_ARCH_LIST=9.0a). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=2
L=/tmp/logs; rm -rf $L; mkdir -p $L
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
py 240 -n 12 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
py 150 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
tar czf $OUT/logs.tgz -C /tmp logs
