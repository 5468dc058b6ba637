#!/usr/bin/env bash
# GPU: build; GEMM tests; bench_gemm (NVFP4) with the weight ring (bulk copies) and without
# (NVFP4_OPS_GEMM_NO_RING=1); ncu of the ring kernel at M = 1 (8192^2).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
[ -n "${SKIP_BUILD:-}" ] || python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; exit 1; }
echo "[$(el) s] built"
timeout 240 python -m pytest -q -p no:cacheprovider tests/cuda/test_gemm.py ${TESTK:+-k "$TESTK"} > $L/tests.txt 2>&1; echo "[$(el) s] tests rc=$?"; tail -1 $L/tests.txt
grep -E "^(FAILED|ERROR)" $L/tests.txt | head -10
for v in ring regs; do
  if [ $v = regs ]; then export NVFP4_OPS_GEMM_NO_RING=1; else unset NVFP4_OPS_GEMM_NO_RING; fi
  (cd benchmarks && timeout 150 python bench_gemm.py --rep 30 --formats nvfp4 --shapes ${SHAPES:-8192x8192,14336x4096,4096x14336,28672x8192} --ms ${MS:-1,4,8,16} > $L/gemm_$v.txt 2>&1)
  echo "== $v [$(el) s]"; grep -E "^\| NVFP4 " $L/gemm_$v.txt | cut -d'|' -f2-9
done
unset NVFP4_OPS_GEMM_NO_RING
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ] && [ $(el) -lt ${NCU_DEADLINE:-330} ]; then
PYTHONPATH=$PWD timeout 120 $NCU --clock-control none -k regex:"w16_gemm" -c 2 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,gpu__time_duration.sum python benchmarks/probe/ncu_target.py 1 > $L/ncu1.txt 2>&1
echo "== ncu M=1 [$(el) s]"
grep -E "w16_gemm|Duration|DRAM Throughput|Issued Warp|Eligible Warps|Warp Cycles Per Issued|smsp__inst_executed.sum|Registers|Achieved Occupancy|Dynamic Shared" $L/ncu1.txt | head -30
grep -E "issue_stalled" $L/ncu1.txt | awk '{print $1, $NF}' | sort -k2 -g -r | head -8
fi
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
