#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 sixth part. Main carried (nvfp4_ops/_C.so,
# TORCH_CUDA_ARCH_LIST=9.0a). GPU 1: every test folder (main after the review commits, which
# had not run on a GPU). GPU 0: ncu of the wgmma GEMM kernel (NVFP4, 8192^2, bf16) at M = 128
# and 256 (the 128-token tile: sections, L2 and tensor-pipe metrics, source-level stalls) and
# of cuBLAS's kernel for bf16 F.linear at M = 256 beside it. Logs in $OUT/logs.tgz.
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
  (py 300 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 300 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
MET=smsp__inst_executed.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,lts__t_bytes.sum.per_second,lts__t_sectors_srcunit_tex_op_read.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__m_xbar2l1tex_read_bytes.sum.per_second,dram__bytes_read.sum,lts__t_sector_hit_rate.pct
prof() {  # name, kernel regex, target args...
  local name=$1 kre=$2; shift 2
  PYTHONPATH=$ROOT timeout 150 $NCU --clock-control none -k "regex:$kre" -c 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section SourceCounters \
    --metrics $MET -o $L/$name python benchmarks/probe/ncu_target.py "$@" > $L/ncu_$name.txt 2>&1
  $NCU --import $L/$name.ncu-rep > $L/$name.details.txt 2>&1
  $NCU --import $L/$name.ncu-rep --page source --csv --print-source sass > $L/src_$name.csv 2>/dev/null
  python benchmarks/probe/top_stalls.py $L/src_$name.csv > $L/stalls_$name.txt 2>&1
  stamp "ncu $name"
  grep -E "  [a-zA-Z_]+.*(w16|gemm|sm90|nvjet|Kernel)|Duration|DRAM Through|Registers|Achieved Occ|Eligible|Issued Warp|inst_executed|pipe_tensor|pipe_lsu|issue_active|lts__|l1tex__m|dram__bytes|Block Limit|Grid Size|Block Size|L2 Cache Throughput|Memory Throughput" $L/$name.details.txt | head -40
  head -30 $L/stalls_$name.txt
}
prof wg128 w16_wgmma 128
prof wg256 w16_wgmma 256
prof lin256 "nvjet|xmma|gemm|cutlass" 256 linear
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
