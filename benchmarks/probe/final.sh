#!/usr/bin/env bash
# The session's last GPU call (nvidia-h200-x2): build; the 2-GPU tests (NCCL, torchrun) and the
# quantizer throughput on 1 vs 2 GPUs; then CUDA tests on GPU 1 while every benchmark runs
# alone on GPU 0. Logs: $OUT/logs.tgz; the summary on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=32 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
t0=$(date +%s); stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'gpus', torch.cuda.device_count())"
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n "error" $L/build.log | head -30; exit 1; }
stamp build
timeout 240 python -m pytest -q -p no:cacheprovider -rs tests/distributed tests/cli/test_multiprocess.py \
  tests/cuda/test_mx.py::test_second_device tests/cuda/test_nvfp4.py::test_second_device > $L/test_2gpu.log 2>&1
stamp "2-GPU tests rc=$?: $(tail -1 $L/test_2gpu.log)"; grep -E "^(FAILED|ERROR)|SKIPPED" $L/test_2gpu.log | head -10
SCALES="amax mse" timeout 200 bash benchmarks/bench_quantizer.sh > $L/quantizer.txt 2>&1; stamp "quantizer rc=$?"; tail -8 $L/quantizer.txt
# CUDA tests on GPU 1, benchmarks on GPU 0
(CUDA_VISIBLE_DEVICES=1 timeout 400 python -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/cuda tests/ops tests/nn tests/training} -n 4 > $L/test_cuda.log 2>&1; echo $? > $L/test_cuda.rc) &
tp=$!
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
for b in "bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,64,256,1024" "bench_decode.py --batches 1,16" \
         "bench_nvfp4.py --no-compile" "bench_mx.py --compile none" "bench_search.py --no-reference" "bench_training.py" ${EXTRA_BENCH:-}; do
  n=$(echo $b | cut -d. -f1)
  timeout 200 python $b --out $L/$n.md > $L/$n.log 2>&1; stamp "$n rc=$?"
done
cd ..
wait $tp; stamp "cuda tests rc=$(cat $L/test_cuda.rc): $(tail -1 $L/test_cuda.log)"
grep -E "^(FAILED|ERROR)" $L/test_cuda.log | head -15
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
