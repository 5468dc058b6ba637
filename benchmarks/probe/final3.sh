#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fourth part, after merging h-prepack2, h-occ3
# and h-trainfast: the README's test command over every test folder on GPU 1 (two pytest-xdist
# groups in parallel) while GPU 0 runs every benchmark one after the other: bench_gemm (three
# formats, M = 1..128), bench_decode, bench_training, bench_nvfp4, bench_mx, bench_search,
# bench_peers (torchao from the carried wheel in .whl, installed under /tmp/site for that
# script only), probe/copy_sizes.py, and ncu of every codec kernel (probe/ncu_codecs.py).
# The extension comes built (sm_90) in nvfp4_ops/_C.so. Logs in $OUT/logs.tgz after every step.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
(
  export CUDA_VISIBLE_DEVICES=1
  (timeout 520 python -m pytest -q -p no:cacheprovider -rs tests/cli tests/distributed tests/cpp -n 4 > $L/test_b.log 2>&1; echo $? > $L/test_b.rc) &
  timeout 520 python -m pytest -q -p no:cacheprovider -rs tests/cuda tests/ops tests/nn tests/training tests/reference -n 14 > $L/test_a.log 2>&1; echo $? > $L/test_a.rc
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
run() { local name=$1 t=$2; shift 2; timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"; }
run gemm 150 bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,32,64,128
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-7,10
run decode 90 bench_decode.py --batches 1,16
grep -E "^\| (bf16|nvfp4-fused|mxfp4-fused|mxfp8-fused) " $L/decode.md
run training 60 bench_training.py
run nvfp4 60 bench_nvfp4.py --no-compile
run mx 60 bench_mx.py --compile none
run search 60 bench_search.py --no-reference
(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $ROOT/.whl/*.whl > $L/pip.log 2>&1 \
  && PYTHONPATH=/tmp/site timeout 240 python bench_peers.py --out $L/peers.md > $L/peers.log 2>&1); stamp "peers rc=$?"
cat $L/peers.md | cut -c1-400 | grep "^| \[" | head -40
cd $ROOT
timeout 60 python benchmarks/probe/copy_sizes.py > $L/copy_sizes.md 2>&1; stamp "copy sizes"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$ROOT timeout 150 $NCU --clock-control none --nvtx --nvtx-include "timed/" \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section MemoryWorkloadAnalysis \
  --metrics smsp__inst_executed.sum,dram__bytes_read.sum,dram__bytes_write.sum \
  python benchmarks/probe/ncu_codecs.py > $L/ncu_codecs.txt 2>&1
stamp "ncu rc=$? ($(grep -c 'Duration' $L/ncu_codecs.txt) kernels)"
wait $TESTS
stamp "tests A rc=$(cat $L/test_a.rc): $(tail -1 $L/test_a.log)"
stamp "tests B rc=$(cat $L/test_b.rc): $(tail -1 $L/test_b.log)"
grep -hE "^(FAILED|ERROR)" $L/test_a.log $L/test_b.log | head -15
