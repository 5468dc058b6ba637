#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fifth part: the wgmma NVFP4 GEMM kernel
# (csrc/gemm/wgmma.cuh, M > 32, K % 128 == 0), main carried (nvfp4_ops/_C.so built here with
# TORCH_CUDA_ARCH_LIST=9.0a). GPU 1: tests/cuda/test_gemm.py with the wgmma kernel and with
# NVFP4_OPS_GEMM_WGMMA=0 (the mma.sync kernel), tests/nn. GPU 0: bench_gemm NVFP4 at M = 16..1024
# with and without wgmma, then ncu of the wgmma kernel at M = 64 (8192^2). Logs in
# $OUT/logs.tgz after every step.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import nvfp4_ops, torch; print('torch', torch.__version__, nvfp4_ops._library.build_info())"
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  py 200 -n 4 -x tests/cuda/test_gemm.py > $L/t_gemm_wgmma.txt 2>&1 &
  NVFP4_OPS_GEMM_WGMMA=0 py 200 -n 4 tests/cuda/test_gemm.py > $L/t_gemm_mma.txt 2>&1 &
  py 200 -n 4 tests/nn > $L/t_nn.txt 2>&1 &
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
run() { local name=$1 t=$2; shift 2; timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"; tail -3 $L/$name.log | grep -i error; }
run gemm_wg 120 bench_gemm.py --rep 30 --formats nvfp4 --ms 16,32,33,64,128,256,512,1024
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_wg.md | cut -d'|' -f2-7,10
NVFP4_OPS_GEMM_WGMMA=0 run gemm_mma 120 bench_gemm.py --rep 30 --formats nvfp4 --ms 64,128,256
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_mma.md | cut -d'|' -f2-7,10
cd $ROOT
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$ROOT timeout 100 $NCU --clock-control none -k regex:w16_wgmma -c 1 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section SourceCounters \
  --metrics smsp__inst_executed.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active \
  -o $L/wg_m64 python benchmarks/probe/ncu_target.py 64 > $L/ncu_m64.txt 2>&1
$NCU --import $L/wg_m64.ncu-rep > $L/ncu_m64.details.txt 2>&1
$NCU --import $L/wg_m64.ncu-rep --page source --csv --print-source sass > $L/src_m64.csv 2>/dev/null
python benchmarks/probe/top_stalls.py $L/src_m64.csv > $L/stalls_m64.txt 2>&1
stamp "ncu M=64"
grep -E "Duration|DRAM Through|Registers Per|Achieved Occ|Eligible Warps|Issued Warp|inst_executed|gmma" $L/ncu_m64.details.txt | head -12
head -20 $L/stalls_m64.txt
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)|Error" $f | head -8; done
stamp done
