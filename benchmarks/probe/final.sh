#!/usr/bin/env bash
# The session's last GPU call (nvidia-h200-x2): build; quantizer throughput on 1 vs 2 GPUs;
# the CUDA tests on GPU 1 in the background; the 2-GPU tests (NCCL, torchrun); every benchmark
# alone on GPU 0. Logs go to $OUT/logs.tgz after every step (a call cut short keeps them).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=32 TORCH_CUDA_ARCH_LIST=9.0
L=/tmp/final_logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp final_logs; }
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'gpus', torch.cuda.device_count())"
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n "error" $L/build.log | head -30; stamp "BUILD FAILED"; exit 1; }
stamp build
SCALES="amax mse" timeout 150 bash benchmarks/bench_quantizer.sh > $L/quantizer.txt 2>&1; stamp "quantizer rc=$?"; tail -6 $L/quantizer.txt
(CUDA_VISIBLE_DEVICES=1 timeout 420 python -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/cuda tests/ops tests/nn tests/training} -n 4 > $L/test_cuda.log 2>&1; echo $? > $L/test_cuda.rc) &
tp=$!
timeout 150 python -m pytest -q -p no:cacheprovider -rs tests/distributed tests/cli/test_multiprocess.py \
  tests/cuda/test_mx.py::test_second_device tests/cuda/test_nvfp4.py::test_second_device > $L/test_2gpu.log 2>&1
stamp "2-GPU tests rc=$?: $(tail -1 $L/test_2gpu.log)"; grep -E "^(FAILED|ERROR)|SKIPPED" $L/test_2gpu.log | head -10
export CUDA_VISIBLE_DEVICES=0
cd benchmarks
for b in "bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,64,256,1024" "bench_mx.py --compile none" \
         "bench_nvfp4.py --no-compile" "bench_decode.py --batches 1,16" "bench_search.py --no-reference" "bench_training.py"; do
  n=$(echo $b | cut -d. -f1)
  if [ $(el) -gt ${DEADLINE:-470} ]; then stamp "$n skipped (time)"; continue; fi
  timeout 120 python $b --out $L/$n.md > $L/$n.log 2>&1; stamp "$n rc=$?"
done
cd ..
wait $tp; stamp "cuda tests rc=$(cat $L/test_cuda.rc): $(tail -1 $L/test_cuda.log)"
grep -E "^(FAILED|ERROR)" $L/test_cuda.log | head -15
