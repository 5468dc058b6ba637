#!/usr/bin/env bash
# GPU: build (two accumulator sets per warp); GEMM tests; bench_gemm (NVFP4) with the
# activations preloaded before (NVFP4_OPS_GEMM_XFIRST=1) or after the first weight loads; then
# a rebuild with the .L2::256B hint on the weight loads; ncu pipe use at M = 1 (8192^2).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; exit 1; }
echo "[$(el) s] built"
timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda/test_gemm.py > $L/tests.txt 2>&1; echo "[$(el) s] tests rc=$?"; tail -1 $L/tests.txt
grep -E "^(FAILED|ERROR)" $L/tests.txt | head -10
bench() {  # name
  (cd benchmarks && timeout 120 python bench_gemm.py --rep 30 --formats nvfp4 --shapes ${SHAPES:-8192x8192,14336x4096,4096x14336,28672x8192} --ms ${MS:-1,8,16,64} > $L/gemm_$1.txt 2>&1)
  echo "== $1 [$(el) s]"; grep -E "^\| NVFP4 \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_$1.txt | cut -d'|' -f3-5,9
}
unset NVFP4_OPS_GEMM_XFIRST; bench acc2
NVFP4_OPS_GEMM_XFIRST=1 bench acc2_xfirst
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$PWD timeout 100 $NCU --clock-control none -k regex:"w16_gemm" -c 1 --section SpeedOfLight --section WarpStateStats --section LaunchStats --metrics smsp__inst_executed.sum,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fmaheavy.avg.pct_of_peak_sustained_active,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active python benchmarks/probe/ncu_target.py 1 > $L/ncu1.txt 2>&1
echo "== ncu [$(el) s]"; grep -E "pipe|Duration|DRAM Through|inst_executed.sum|issue_active|Registers" $L/ncu1.txt | head -20
sed -i 's|#define NVFP4_GEMM_L2_HINT ""|#define NVFP4_GEMM_L2_HINT ".L2::256B"|' csrc/gemm/w16_gemm.cuh
python setup.py build_ext --inplace > $L/build2.log 2>&1 || { grep -n error $L/build2.log | head; }
echo "[$(el) s] rebuilt with .L2::256B"
bench acc2_l2hint
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
