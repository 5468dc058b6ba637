#!/usr/bin/env bash
# The session's last GPU call (one H200): build; bench_gemm (three formats, M = 1..128) and
# bench_decode; then the README's test command over every test folder (pytest-xdist, two
# groups in parallel). Logs go to $OUT/logs.tgz after every step.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=/tmp/final_logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp final_logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n "error" $L/build.log | head -30; stamp "BUILD FAILED"; exit 1; }
stamp build
cd benchmarks
timeout 200 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,32,64,128 --out $L/bench_gemm.md > $L/bench_gemm.log 2>&1; stamp "bench_gemm rc=$?"
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/bench_gemm.md | cut -d'|' -f2-5,7,10
grep -A16 "^Crossover" $L/bench_gemm.md | grep -E "MX|NV"
timeout 120 python bench_decode.py --batches 1,16 --out $L/bench_decode.md > $L/bench_decode.log 2>&1; stamp "bench_decode rc=$?"
grep -E "^\| (bf16|nvfp4-fused|mxfp4-fused|mxfp8-fused) " $L/bench_decode.md
cd ..
(timeout 420 python -m pytest -q -p no:cacheprovider -rs tests/cli tests/distributed tests/cpp -n 4 > $L/test_b.log 2>&1; echo $? > $L/test_b.rc) &
tb=$!
timeout 420 python -m pytest -q -p no:cacheprovider -rs tests/cuda tests/ops tests/nn tests/training tests/reference -n 10 > $L/test_a.log 2>&1; echo $? > $L/test_a.rc
wait $tb
stamp "tests A rc=$(cat $L/test_a.rc): $(tail -1 $L/test_a.log)"
stamp "tests B rc=$(cat $L/test_b.rc): $(tail -1 $L/test_b.log)"
grep -hE "^(FAILED|ERROR)" $L/test_a.log $L/test_b.log | head -15
