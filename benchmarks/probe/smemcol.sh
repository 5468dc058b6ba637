#!/usr/bin/env bash
# GPU (one H200, issue 14): the shared-memory staged NVFP4 columnwise training-quantize kernel
# (csrc/train/colwise_smem.cuh, NVFP4_OPS_TRAIN_KERNEL=smem: "auto" but that kernel for the
# columnwise operand alone with round to nearest) against "auto". Build;
# tests/cuda/test_training_cuda.py under auto and under smem in parallel (the test of every
# variant, smem included, which sets the variable itself, runs in the auto process only);
# bench_training.py on 8192 x 8192 for auto, then smem (the axis=-2 rows are the ones that
# change). Logs (build, tests, each variant's Markdown table) in $OUT/logs.tgz. About 3
# minutes after the build.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
# (TESTS=0 in the environment skips the tests: a second call after a time-out)
VARIANTS="auto smem"
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; tar czf $OUT/logs.tgz -C $OUT logs; exit 1; }
echo "[$(el) s] built"
[ "${TESTS:-1}" = 0 ] || for v in $VARIANTS; do
  sel=""; [ $v = auto ] || sel="not every_train_kernel_variant"
  OMP_NUM_THREADS=2 NVFP4_OPS_TRAIN_KERNEL=$v timeout 240 python -m pytest -q -p no:cacheprovider \
    tests/cuda/test_training_cuda.py -k "$sel" > $L/tests_$v.txt 2>&1 &
done
wait
[ "${TESTS:-1}" = 0 ] || for v in $VARIANTS; do
  echo "[$(el) s] tests $v: $(tail -1 $L/tests_$v.txt)"
  grep -E "^(FAILED|ERROR)" $L/tests_$v.txt | head -8
done
cd benchmarks
for v in $VARIANTS; do
  NVFP4_OPS_TRAIN_KERNEL=$v timeout 60 python bench_training.py --rep 30 --moe none \
    --shapes 8192x8192 --out $L/bench_$v.md > $L/bench_$v.log 2>&1
  echo "== bench $v [$(el) s] rc=$?"
  grep -E "^\| \[[0-9]+, [0-9]+\] \| (quantize|train_quantize)" $L/bench_$v.md | cut -d'|' -f2-4,6-8
done
cd ..
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
