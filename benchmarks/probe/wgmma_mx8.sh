#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fifth part: MXFP8 in the wgmma kernel (operand-
# scaled blocks, M > 16, K % 512 == 0). GPU 1: tests/cuda/test_gemm.py, tests/nn. GPU 0:
# bench_gemm MXFP8 at M = 16..256 (the crossover against dequantize + F.linear), NVFP4 / MXFP4
# at M = 64 / 128. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  py 200 -n 6 tests/cuda/test_gemm.py > $L/t_gemm.txt 2>&1 &
  py 200 -n 4 tests/nn > $L/t_nn.txt 2>&1 &
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
timeout 120 python bench_gemm.py --rep 30 --formats mxfp8 --ms 16,17,32,64,96,128,192,256 \
  --out $L/gemm_mx8.md > $L/gemm_mx8.log 2>&1
stamp "gemm mxfp8 rc=$?"
grep -E "^\| MXFP8 \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_mx8.md | cut -d'|' -f2-5,7,9,10
timeout 100 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4 --ms 64,128 \
  --out $L/gemm_e2m1.md > $L/gemm_e2m1.log 2>&1
stamp "gemm e2m1 rc=$?"
grep -E "^\| (NVFP4|MXFP4) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_e2m1.md | cut -d'|' -f2-5
cd ..
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
