#!/usr/bin/env bash
# GPU (one H200, issue 14): the training-quantize kernel variants of NVFP4_OPS_TRAIN_KERNEL
# (csrc/train/quantize.cuh: auto = the direct rowwise / columnwise kernels + the 2-deep tile
# ring; tile = the kernel before the variants; tile2; row; direct; sr; smem). Build;
# tests/cuda/test_training_cuda.py once per variant (all in parallel: the CPU reference
# dominates); bench_training.py once per variant on 8192 x 8192 (without the MoE rows, which no
# variant touches), one after the other. Logs (build, tests, each variant's Markdown table) in
# $OUT/logs.tgz. About 4 minutes after the build.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
# (VARIANTS="..." and TESTS=0 in the environment narrow a run: a second call after a time-out)
VARIANTS=${VARIANTS:-"auto tile tile2 row direct sr smem"}
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; tar czf $OUT/logs.tgz -C $OUT logs; exit 1; }
echo "[$(el) s] built"
[ "${TESTS:-1}" = 0 ] || for v in $VARIANTS; do  # (the test of every variant, which sets
  # the variable itself, runs in the auto process only)
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
