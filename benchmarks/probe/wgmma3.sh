#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fifth part: the wgmma kernel with a ring stage
# per phase (6 stages at 64 tokens, 3 at 128) and a 128-token tile for M > 64
# (NVFP4_OPS_GEMM_WG128=0: 64-token tiles there, an A/B switch for this call). GPU 1:
# tests/cuda/test_gemm.py both ways, tests/nn. GPU 0: bench_gemm NVFP4 / MXFP4 at M = 33..512,
# then M = 128..512 with 64-token tiles. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  py 200 -n 4 tests/cuda/test_gemm.py > $L/t_gemm.txt 2>&1 &
  NVFP4_OPS_GEMM_WG128=0 py 200 -n 4 tests/cuda/test_gemm.py > $L/t_gemm_64.txt 2>&1 &
  py 200 -n 4 tests/nn > $L/t_nn.txt 2>&1 &
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
timeout 150 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4 --ms 33,64,96,128,192,256,512 \
  --out $L/gemm.md > $L/gemm.log 2>&1
stamp "gemm rc=$?"
grep -E "^\| (NVFP4|MXFP4) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-7,10
NVFP4_OPS_GEMM_WG128=0 timeout 100 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4 \
  --ms 128,256,512 --out $L/gemm_64.md > $L/gemm_64.log 2>&1
stamp "gemm 64-token tiles rc=$?"
grep -E "^\| (NVFP4|MXFP4) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_64.md | cut -d'|' -f2-5
cd ..
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -5; done
stamp done
