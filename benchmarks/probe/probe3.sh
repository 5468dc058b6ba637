#!/usr/bin/env bash
# GPU: build, ncu stall reasons of the fused GEMM at M=1 (8192^2) and M=16.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
[ -n "${SKIP_BUILD:-}" ] || python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; exit 1; }
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for m in 1 16; do
PYTHONPATH=$PWD timeout 200 $NCU --clock-control none -k regex:"nvfp4_w4a16" -c 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,sm__cycles_active.avg,gpu__time_duration.sum python benchmarks/probe/ncu_target.py $m > $L/ncu$m.txt 2>&1
echo "== M=$m"
grep -E "Duration|DRAM Throughput|Issued Warp|Eligible Warps|Warp Cycles Per Issued|smsp__inst_executed.sum|sm__cycles_active|Grid Size|Registers" $L/ncu$m.txt | head -12
grep -E "issue_stalled" $L/ncu$m.txt | awk '{print $1, $NF}' | sort -k2 -g -r | head -9
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
