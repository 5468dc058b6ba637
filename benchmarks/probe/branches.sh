#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fourth part: the three experiment branches
# (h-occ3, h-prepack2, h-trainfast, each rebased on main, built here for sm_90 and carried
# as .carry/<name>.tgz: source tree + _C.so) beside main (nvfp4_ops/_C.so carried).
# GPU 1: the CUDA tests of each tree, all at once. GPU 0, one after the other: bench_gemm
# for main and h-occ3 (NVFP4/MXFP4, M = 1, 8, 16), h-prepack2 (NVFP4, prepacked column),
# bench_training for each NVFP4_OPS_TRAIN_KERNEL variant of h-trainfast, main's codec
# benchmarks with the L2 flushed by writing and by reading, and ncu of every codec kernel
# (probe/ncu_codecs.py). Logs in $OUT/logs.tgz after every step.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
for b in occ3 prepack2 trainfast; do mkdir -p /tmp/$b && tar xzf .carry/$b.tgz -C /tmp/$b; done
py() { timeout "$1" python -m pytest -q -p no:cacheprovider "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1
  (cd $ROOT && py 300 tests/cuda/test_gemm.py -n 3 > $L/t_main.txt 2>&1) &
  (cd /tmp/occ3 && py 300 tests/cuda/test_gemm.py tests/nn -n 3 > $L/t_occ3.txt 2>&1) &
  (cd /tmp/prepack2 && py 300 tests/cuda/test_gemm.py tests/ops/test_gemm.py -n 3 > $L/t_prepack2.txt 2>&1) &
  for v in auto tile tile2 row direct sr; do
    sel=""; [ $v = auto ] || sel="not every_train_kernel_variant"
    (cd /tmp/trainfast && OMP_NUM_THREADS=2 NVFP4_OPS_TRAIN_KERNEL=$v py 300 \
      tests/cuda/test_training_cuda.py -k "$sel" > $L/t_train_$v.txt 2>&1) &
  done
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
gemm() {  # tree, label, formats, ms
  (cd $1/benchmarks && timeout 150 python bench_gemm.py --rep 30 --formats $3 --ms $4 \
    --out $L/gemm_$2.md > $L/gemm_$2.log 2>&1)
  stamp "gemm $2 rc=$?"
  grep -E "^\| (NVFP4|MXFP4) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_$2.md | cut -d'|' -f2-7,10
}
gemm $ROOT main nvfp4,mxfp4 1,8,16
gemm /tmp/occ3 occ3 nvfp4,mxfp4 1,8,16
gemm /tmp/prepack2 prepack2 nvfp4 1,16,64
for v in auto tile tile2 row direct sr; do
  (cd /tmp/trainfast/benchmarks && NVFP4_OPS_TRAIN_KERNEL=$v timeout 60 python bench_training.py \
    --rep 30 --moe none --shapes 8192x8192 --out $L/train_$v.md > $L/train_$v.log 2>&1)
  stamp "train $v rc=$?"
  grep -E "^\| \[[0-9]+, [0-9]+\] \| (quantize|train_quantize)" $L/train_$v.md | cut -d'|' -f3-4,6
done
cd $ROOT/benchmarks
for f in write read; do
  NVFP4_OPS_BENCH_FLUSH=$f timeout 60 python bench_nvfp4.py --no-compile --out $L/nvfp4_$f.md > $L/nvfp4_$f.log 2>&1
  NVFP4_OPS_BENCH_FLUSH=$f timeout 60 python bench_mx.py --compile none --out $L/mx_$f.md > $L/mx_$f.log 2>&1
  stamp "codecs flush=$f"
done
cd $ROOT
timeout 60 python benchmarks/probe/copy_sizes.py > $L/copy_sizes.md 2>&1; stamp "copy sizes"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$ROOT timeout 200 $NCU --clock-control none --nvtx --nvtx-include "timed/" \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section MemoryWorkloadAnalysis \
  --metrics smsp__inst_executed.sum,dram__bytes_read.sum,dram__bytes_write.sum \
  python benchmarks/probe/ncu_codecs.py > $L/ncu_codecs.txt 2>&1
stamp "ncu rc=$?"
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -5; done
stamp done
