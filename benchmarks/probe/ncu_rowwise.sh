#!/usr/bin/env bash
# GPU call (one H200), session of 2026-11-30 seventh part: ncu of the three rowwise NVFP4
# quantize kernels (probe/ncu_rowwise.py): DRAM bytes read / written, L2 write sectors,
# instructions, issue, occupancy. Main carried (nvfp4_ops/_C.so). Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
L=/tmp/logs; rm -rf $L; mkdir -p $L
export CUDA_VISIBLE_DEVICES=0
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
MET=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sectors_op_write.sum,lts__t_requests_op_write.sum,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__occupancy_limit_registers,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__average_warp_latency_issue_stalled_long_scoreboard,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct
timeout 200 $NCU --clock-control none -k "regex:nvfp4_quantize_kernel|train_rowwise" -c 3 \
  --metrics $MET python benchmarks/probe/ncu_rowwise.py > $L/ncu.txt 2>&1
echo "ncu rc=$?"
tar czf $OUT/logs.tgz -C /tmp logs
grep -E "^  [a-z_]+::|void|nvfp4::|  (gpu__|dram__|lts__|smsp__|sm__|launch__|l1tex__)" $L/ncu.txt | sed 's/  */ /g' | cut -c1-150
