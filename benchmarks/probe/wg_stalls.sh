#!/usr/bin/env bash
# GPU call (one H200), session of 2026-11-30 sixth part: where the wgmma GEMM's warps wait
# after the ring-copy fix (9384666: instructions -47 %, time unchanged). ncu of the NVFP4
# wgmma kernel (8192^2, bf16) at M = 128 and 64: warp-state sections and source-level stall
# samples by reason. Main carried. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
L=/tmp/logs; rm -rf $L; mkdir -p $L
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for m in 128 64; do
  PYTHONPATH=$ROOT timeout 120 $NCU --clock-control none -k regex:w16_wgmma -c 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section SourceCounters --section MemoryWorkloadAnalysis_Tables \
    --metrics smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum \
    -o $L/m$m python benchmarks/probe/ncu_target.py $m > $L/ncu_m$m.txt 2>&1
  $NCU --import $L/m$m.ncu-rep > $L/m$m.details.txt 2>&1
  $NCU --import $L/m$m.ncu-rep --page raw --csv > $L/m$m.raw.csv 2>/dev/null
  $NCU --import $L/m$m.ncu-rep --page source --csv --print-source sass > $L/src_m$m.csv 2>/dev/null
  grep -E "Duration|inst_executed|issue_active|Eligible Warps|Warp Cycles Per Issued|bank_conf" $L/m$m.details.txt
  tar czf $OUT/logs.tgz -C /tmp logs
done
