#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fifth part: the fused GEMM's ring path (M > 16)
# after mid_m.sh's ncu (2 warps per scheduler, a per-step permute pass with 3 barriers, a
# serial split-K sum in the last CTA): x permuted once per call, one barrier per step, three
# stages, 2 CTAs per SM at 32 tokens, m tiles of a weight tile adjacent, the split-K sum
# vectorised. Main carried (nvfp4_ops/_C.so, sm_90, h-smemcol merged).
# GPU 1: tests/cuda/test_gemm.py also with NVFP4_OPS_GEMM_MAX_NT=4, then every test folder.
# GPU 0: bench_gemm (three formats, M = 1..128), the same E2M1 rows with
# NVFP4_OPS_GEMM_MAX_NT=4 (M > 32 as 32-token tiles), bench_decode, ncu of the NVFP4 GEMM at
# M = 64, bench_training. Logs in $OUT/logs.tgz after every step.
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
  NVFP4_OPS_GEMM_MAX_NT=4 py 200 -n 4 tests/cuda/test_gemm.py > $L/t_gemm_nt4.txt 2>&1
  (py 300 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 300 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
run() { local name=$1 t=$2; shift 2; timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"; }
run gemm 150 bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,32,64,128
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-7,10
NVFP4_OPS_GEMM_MAX_NT=4 run gemm_nt4 100 bench_gemm.py --rep 30 --formats nvfp4,mxfp4 --ms 64,128
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_nt4.md | cut -d'|' -f2-7,10
run decode 90 bench_decode.py --batches 1,16
grep -E "^\| (bf16|nvfp4-fused|mxfp4-fused|mxfp8-fused) " $L/decode.md
cd $ROOT
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$ROOT timeout 100 $NCU --clock-control none -k regex:w16_gemm -c 1 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section SourceCounters \
  --metrics smsp__inst_executed.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active \
  -o $L/gemm_m64 python benchmarks/probe/ncu_target.py 64 > $L/ncu_m64.txt 2>&1
$NCU --import $L/gemm_m64.ncu-rep > $L/ncu_m64.details.txt 2>&1
$NCU --import $L/gemm_m64.ncu-rep --page source --csv --print-source sass > $L/src_m64.csv 2>/dev/null
python benchmarks/probe/top_stalls.py $L/src_m64.csv > $L/stalls_m64.txt 2>&1
stamp "ncu M=64"
grep -E "Duration|DRAM Through|Registers Per|Achieved Occ|Eligible Warps|Issued Warp|inst_executed|pipe_tensor" $L/ncu_m64.details.txt | head -12
cd benchmarks
run training 60 bench_training.py
grep -E "^\| \[[0-9]+, [0-9]+\] \| (train_quantize|grouped|mx_grouped)" $L/training.md | cut -d'|' -f2-4,6-8 | head -40
cd $ROOT
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
