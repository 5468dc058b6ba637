#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fifth part. Main carried (nvfp4_ops/_C.so, built
# here for sm_90); h-smemcol (rebased on main, built here) carried as .carry/smemcol.tgz.
# GPU 1: main's CUDA test folders (the review commit 413e105 and the MXFP8 2-vector dispatch
# had not run on a GPU), then h-smemcol's training tests under auto and smem.
# GPU 0, one after the other: ncu of the NVFP4 GEMM at M = 64 and M = 32 (8192^2, bf16: where
# the fused kernel is slower than bf16; sections + source-level stall samples), bench_gemm at
# M = 32 / 64, then bench_training auto vs smem on h-smemcol. Logs in $OUT/logs.tgz after
# every step.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
[ -f .carry/smemcol.tgz ] && mkdir -p /tmp/smemcol && tar xzf .carry/smemcol.tgz -C /tmp/smemcol
py() { timeout "$1" python -m pytest -q -p no:cacheprovider "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 300 -n 12 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_main.txt 2>&1
   py 200 -n 4 tests/cli tests/distributed tests/cpp > $L/t_main2.txt 2>&1)
  if [ -d /tmp/smemcol ]; then
    for v in auto smem; do
      sel=""; [ $v = auto ] || sel="not every_train_kernel_variant"
      (cd /tmp/smemcol && NVFP4_OPS_TRAIN_KERNEL=$v py 200 -n 3 tests/cuda/test_training_cuda.py \
        -k "$sel" > $L/t_smemcol_$v.txt 2>&1) &
    done
    wait
  fi
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for m in 64 32; do
  PYTHONPATH=$ROOT timeout 120 $NCU --clock-control none -k regex:w16_gemm -c 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section SourceCounters \
    --metrics smsp__inst_executed.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__issue_active.avg.pct_of_peak_sustained_active \
    -o $L/gemm_m$m python benchmarks/probe/ncu_target.py $m > $L/ncu_m$m.txt 2>&1
  $NCU --import $L/gemm_m$m.ncu-rep > $L/ncu_m$m.details.txt 2>&1
  $NCU --import $L/gemm_m$m.ncu-rep --page source --csv --print-source sass > $L/src_m$m.csv 2>/dev/null
  python benchmarks/probe/top_stalls.py $L/src_m$m.csv > $L/stalls_m$m.txt 2>&1
  stamp "ncu M=$m"
  grep -E "Duration|DRAM Through|Registers|Achieved Occ|Eligible|Issued Warp|Stall|inst_executed|pipe_tensor|bank_conf|Theoretical Occ|Block Limit" $L/ncu_m$m.details.txt | head -30
  head -25 $L/stalls_m$m.txt
done
(cd benchmarks && timeout 150 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4 --ms 32,64 \
  --out $L/gemm_main.md > $L/gemm_main.log 2>&1)
stamp "gemm main rc=$?"
grep -E "^\| (NVFP4|MXFP4) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_main.md | cut -d'|' -f2-7,10
if [ -d /tmp/smemcol ]; then
  for v in auto smem; do
    (cd /tmp/smemcol/benchmarks && NVFP4_OPS_TRAIN_KERNEL=$v timeout 60 python bench_training.py \
      --rep 30 --moe none --shapes 8192x8192 --out $L/train_$v.md > $L/train_$v.log 2>&1)
    stamp "train $v rc=$?"
    grep -E "^\| \[[0-9]+, [0-9]+\] \| (quantize|train_quantize)" $L/train_$v.md | cut -d'|' -f3-4,6-8
  done
fi
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -5; done
stamp done
