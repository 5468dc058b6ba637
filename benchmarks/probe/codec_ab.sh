#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fourth part: the register caps of the NVFP4
# quantize / dequantize kernels (csrc/nvfp4/quantize.cuh, NVFP4_OPS_CODEC_BOUNDS) A/B in one
# run: A = this tree's nvfp4_ops/_C.so (caps on), B = .carry/B_C.so.gz (built with
# NVFP4_OPS_CODEC_BOUNDS 0). GPU 1: the CUDA tests of the codecs and the training ops (A),
# and tests/cli/test_multiprocess.py alone (its two torchrun tests timed out in final3, when
# every test folder and the benchmarks shared the machine). GPU 0: bench_nvfp4 A, B, A;
# bench_training, bench_mx and bench_search (A; the last two timed out in final3); ncu of
# every codec kernel (A). Logs in $OUT/logs.tgz after every step.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
rm -rf /tmp/B && mkdir -p /tmp/B && cp -r benchmarks nvfp4_ops /tmp/B/ && gunzip -c .carry/B_C.so.gz > /tmp/B/nvfp4_ops/_C.so
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=4
  (timeout 400 python -m pytest -q -p no:cacheprovider tests/cli/test_multiprocess.py -n 2 > $L/test_mp.log 2>&1; echo $? > $L/test_mp.rc) &
  timeout 420 python -m pytest -q -p no:cacheprovider tests/cuda/test_nvfp4.py tests/cuda/test_training_cuda.py tests/cuda/test_search.py tests/ops -n 10 > $L/test_a.log 2>&1; echo $? > $L/test_a.rc
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=4
nv() { (cd $1/benchmarks && timeout 60 python bench_nvfp4.py --no-compile --out $L/nvfp4_$2.md > $L/nvfp4_$2.log 2>&1); stamp "nvfp4 $2 rc=$?"; grep -E "^\| \[(8192|4096)" $L/nvfp4_$2.md | cut -d'|' -f2-6 | grep -v 4over6; }
nv $ROOT A1
nv /tmp/B B
nv $ROOT A2
cd benchmarks
run() { local name=$1 t=$2; shift 2; timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"; }
run training 90 bench_training.py
grep -E "^\| \[8192, 8192\] \| train_quantize axis -1|rowcol, (given|computed)" $L/training.md | cut -d'|' -f3-6
run mx 120 bench_mx.py --compile none
run search 120 bench_search.py --no-reference
cd $ROOT
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$ROOT timeout 100 $NCU --clock-control none --nvtx --nvtx-include "timed/" \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --metrics smsp__inst_executed.sum \
  python benchmarks/probe/ncu_codecs.py > $L/ncu_codecs.txt 2>&1
stamp "ncu rc=$? ($(grep -c 'Duration' $L/ncu_codecs.txt) kernels)"
wait $TESTS
stamp "tests A rc=$(cat $L/test_a.rc): $(tail -1 $L/test_a.log)"
stamp "multiprocess rc=$(cat $L/test_mp.rc): $(tail -1 $L/test_mp.log)"
grep -hE "^(FAILED|ERROR)" $L/test_a.log $L/test_mp.log | head -15
