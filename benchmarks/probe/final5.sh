#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fifth part, the final tree (main carried:
# nvfp4_ops/_C.so built here for sm_90). GPU 1: every test folder (two pytest-xdist groups,
# OMP_NUM_THREADS=2). GPU 0: bench_training (the rowcol two-pass path, the staged columnwise
# kernel in auto), bench_gemm (three formats, M = 1..128), bench_decode, then ncu of the
# training kernels of the columnwise and rowcol rows (probe/ncu_codecs.py's NVTX ranges;
# sections + source-level stalls of the staged columnwise kernel). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 300 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 300 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
run() { local name=$1 t=$2; shift 2; timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"; }
run training 60 bench_training.py
grep -E "^\| \[[0-9]+, [0-9]+\] \| (train_quantize|grouped|mx_grouped)" $L/training.md | cut -d'|' -f2-4,6-8 | head -24
run gemm 150 bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,32,64,128
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-7,10
run decode 90 bench_decode.py --batches 1,16
grep -E "^\| (bf16|nvfp4-fused|mxfp4-fused|mxfp8-fused) " $L/decode.md
cd $ROOT
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$ROOT timeout 150 $NCU --clock-control none --nvtx \
  --nvtx-include "timed/train_quantize colwise/" --nvtx-include "timed/train_quantize_rowcol/" \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section MemoryWorkloadAnalysis --section SourceCounters \
  --metrics smsp__inst_executed.sum,dram__bytes_read.sum,dram__bytes_write.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum \
  -o $L/train python benchmarks/probe/ncu_codecs.py > $L/ncu_train.txt 2>&1
$NCU --import $L/train.ncu-rep > $L/ncu_train.details.txt 2>&1
stamp "ncu rc=$?"
grep -E "^  [a-z_].*\(|Duration|DRAM Through|Registers Per|Achieved Occ|Eligible Warps|Issued Warp|inst_executed|bank_conf|Block Limit Shared|Block Limit Reg" $L/ncu_train.details.txt | head -60
$NCU --import $L/train.ncu-rep --page source --csv --print-source sass -k regex:smem > $L/src_smem.csv 2>/dev/null
python benchmarks/probe/top_stalls.py $L/src_smem.csv 2>&1 | head -30
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
