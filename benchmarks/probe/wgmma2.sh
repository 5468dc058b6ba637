#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 fifth part: the wgmma kernel with its weights
# loaded NB - 1 phases ahead (NB register buffers; one wgmma group per code word, two A
# sets), NB = 3 (default), 4, 5 (NVFP4_OPS_GEMM_WG_DEPTH). GPU 1: tests/cuda/test_gemm.py
# under each NB. GPU 0: bench_gemm NVFP4 M = 33..256 under each NB, then ncu of the default at
# M = 64 (8192^2). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  for nb in 3 4 5; do
    NVFP4_OPS_GEMM_WG_DEPTH=$nb py 200 -n 4 tests/cuda/test_gemm.py > $L/t_gemm_nb$nb.txt 2>&1 &
  done
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
for nb in 3 4 5; do
  NVFP4_OPS_GEMM_WG_DEPTH=$nb timeout 100 python bench_gemm.py --rep 30 --formats nvfp4 \
    --ms 33,64,128,256 --out $L/gemm_nb$nb.md > $L/gemm_nb$nb.log 2>&1
  stamp "gemm NB=$nb rc=$?"
  grep -E "^\| NVFP4 \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_nb$nb.md | cut -d'|' -f3-7,10
done
cd $ROOT
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$ROOT timeout 100 $NCU --clock-control none -k regex:w16_wgmma -c 1 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
  --section SourceCounters --metrics smsp__inst_executed.sum \
  -o $L/wg_m64 python benchmarks/probe/ncu_target.py 64 > $L/ncu_m64.txt 2>&1
$NCU --import $L/wg_m64.ncu-rep > $L/ncu_m64.details.txt 2>&1
$NCU --import $L/wg_m64.ncu-rep --page source --csv --print-source sass > $L/src_m64.csv 2>/dev/null
python benchmarks/probe/top_stalls.py $L/src_m64.csv > $L/stalls_m64.txt 2>&1
stamp "ncu M=64"
grep -E "Duration|DRAM Through|Registers Per|Eligible Warps|Issued Warp|inst_executed" $L/ncu_m64.details.txt | head -8
sed -n 3,14p $L/stalls_m64.txt
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -5; done
stamp done
