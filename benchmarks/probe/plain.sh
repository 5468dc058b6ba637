#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 seventh part, third tree: the direct rowwise
# kernel specialised for round to nearest without transform (kPlain: amax and codes from the
# loaded bits as the inference quantize takes them, quant::chunk_amax_bits / encode_chunk).
# Carried: nvfp4_ops/_C.so (kPlain at 3 CTAs per SM) and .carry/plain4.so.gz (the same at 4).
# GPU 1: every test folder (3-CTA build). GPU 0: bench_training 8192^2 with each build.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
mkdir -p /tmp/b4/nvfp4_ops && cp -r nvfp4_ops/. /tmp/b4/nvfp4_ops/ && cp -r benchmarks /tmp/b4/ \
  && gunzip -c .carry/plain4.so.gz > /tmp/b4/nvfp4_ops/_C.so
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 280 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 280 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
for rep in 1 2; do
  (cd benchmarks && timeout 60 python bench_training.py --rep 30 --shapes 8192x8192 --moe none --out $L/train3_$rep.md > $L/train3_$rep.log 2>&1)
  (cd /tmp/b4/benchmarks && timeout 60 python bench_training.py --rep 30 --shapes 8192x8192 --moe none --out $L/train4_$rep.md > $L/train4_$rep.log 2>&1)
done
stamp "bench done"
for f in $L/train3_1.md $L/train4_1.md $L/train3_2.md $L/train4_2.md; do
  echo "--- $(basename $f)"; grep -E "^\| \[8192, 8192\]" $f | grep "axis -1\|rowcol" | cut -d'|' -f3-5
done
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
