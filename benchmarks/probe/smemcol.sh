#!/usr/bin/env bash
# GPU (one H200, issue 14): the shared-memory staged NVFP4 columnwise training-quantize kernel
# (csrc/train/colwise_smem.cuh, NVFP4_OPS_TRAIN_KERNEL=smem: "auto" but that kernel for the
# columnwise operand alone with round to nearest) against "auto": trainfast.sh narrowed to
# those two variants. Build; tests/cuda/test_training_cuda.py under auto and under smem in
# parallel (OMP_NUM_THREADS=2 each; the test of every variant, smem included, runs in the
# auto process); bench_training.py --rep 30 --moe none --shapes 8192x8192 for auto, then
# smem (the axis=-2 rows are the ones that change). Logs in $OUT/logs.tgz. About 3 minutes
# after the build. (TESTS=0 in the environment skips the tests: a second call after a
# time-out.)
VARIANTS="auto smem" exec bash "$(dirname "$0")/trainfast.sh"
