#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 sixth part, the final tree: the wgmma GEMM with
# its 128-token stages by bulk copies (64-token: per-thread cp.async set up once per CTA),
# the layers' wgmma crossover at 256 (NVFP4, MXFP4), the raw 16-bit staged columnwise
# kernel. Main carried (nvfp4_ops/_C.so, TORCH_CUDA_ARCH_LIST=9.0a). GPU 1: every test folder
# (two pytest-xdist groups, OMP_NUM_THREADS=2), then test_gemm + tests/nn with
# NVFP4_OPS_GEMM_WGMMA=0. GPU 0: bench_gemm (three formats, M = 1..384), bench_decode at
# batch 1, 16, 64, bench_linear, bench_training (8192^2 only). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import nvfp4_ops, torch; print('torch', torch.__version__, nvfp4_ops._library.build_info())"
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 300 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 300 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
  NVFP4_OPS_GEMM_WGMMA=0 py 200 -n 8 tests/cuda/test_gemm.py tests/nn > $L/t_mma.txt 2>&1
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
run() { local name=$1 t=$2; shift 2; timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"; }
run gemm 200 bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,32,33,64,96,128,192,256,384
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-8,10
run decode 120 bench_decode.py --batches 1,16,64
grep -E "^\| (bf16|nvfp4-fused|mxfp4-fused|mxfp8-fused) " $L/decode.md
run linear 120 bench_linear.py --m 1,16,64,128,256,1024
grep -E "^\| 8192 x 8192 \| (64|128|256|1024) \|" $L/linear.md
run train 60 bench_training.py --rep 30 --shapes 8192x8192 --moe none
cd ..
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
