#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 sixth part: the wgmma GEMM with its ring-stage
# copies set up once per CTA (9384666). Main carried (nvfp4_ops/_C.so, TORCH_CUDA_ARCH_LIST=9.0a).
# GPU 1: tests/cuda/test_gemm.py + tests/nn. GPU 0: bench_gemm (three formats, M = 33..512,
# the fused column forced at every M), then ncu of the NVFP4 wgmma kernel at M = 128 / 256
# (instructions, duration, issue). Logs in $OUT/logs.tgz after every step.
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
  py 300 -n 10 tests/cuda/test_gemm.py tests/nn > $L/t_gemm.txt 2>&1
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
(cd benchmarks && timeout 300 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 \
  --ms 33,64,96,128,192,256,384,512 --out $L/gemm.md > $L/gemm.log 2>&1)
stamp "gemm rc=$?"
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-6,8,10
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for m in 128 256; do
  PYTHONPATH=$ROOT timeout 100 $NCU --clock-control none -k regex:w16_wgmma -c 1 \
    --section SpeedOfLight --section SchedulerStats --section LaunchStats \
    --metrics smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active \
    python benchmarks/probe/ncu_target.py $m > $L/ncu_m$m.txt 2>&1
  grep -E "Duration|Registers|inst_executed|issue_active|Eligible Warps|L2 Cache Throughput|DRAM Throughput" $L/ncu_m$m.txt
  stamp "ncu M=$m"
done
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
