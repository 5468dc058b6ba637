#!/usr/bin/env bash
# GPU call 1 of this session: build, stream probe, gemm bench, ncu of the fused kernel at M=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version --format=csv > $L/gpu.txt
python -c "import torch;print(torch.__version__)" >> $L/gpu.txt
[ -n "${SKIP_BUILD:-}" ] || (python setup.py build_ext --inplace > $L/build.log 2>&1; echo "build rc=$?") &
nvcc -O3 -arch=sm_90 -o /tmp/sp benchmarks/probe/stream_probe.cu && /tmp/sp > $L/stream.txt 2>&1
wait
cat $L/stream.txt
if [ -z "${SKIP_BENCH:-}" ]; then (cd benchmarks && timeout 200 python bench_gemm.py --rep 30 --shapes 8192x8192,28672x8192 --ms 1,16,64 > $L/gemm.txt 2>&1); fi
cat $L/gemm.txt | tail -20
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PYTHONPATH=$PWD timeout 200 $NCU --clock-control none -k regex:"nvfp4_w4a16|gemv|gemm" -c 4 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats python benchmarks/probe/ncu_target.py 1 > $L/ncu.txt 2>&1
echo "ncu rc=$?"
grep -E "nvfp4_w4a16_kernel|gemv|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Achieved Occupancy|Registers Per|Stall|Grid Size|L2 Hit|Mem Busy|Max Bandwidth|Warp Cycles Per Issued" $L/ncu.txt | head -120
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
