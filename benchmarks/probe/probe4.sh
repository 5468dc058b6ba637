#!/usr/bin/env bash
# GPU: build, GEMM + nn CUDA tests, GEMM benchmark for the three formats, decode benchmark.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; exit 1; }
timeout 300 python -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests/cuda/test_gemm.py tests/nn/test_cuda.py} > $L/tests.txt 2>&1; echo "tests rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" $L/tests.txt | head -30
(cd benchmarks && timeout 150 python bench_gemm.py --rep 30 --shapes ${SHAPES:-8192x8192,28672x8192} --ms ${MS:-1,16,64} --out $L/gemm.md > $L/gemm.txt 2>&1); grep -E "^\| (8192|28672|4096|14336)" $L/gemm.txt | cut -c1-200 | head -40
(cd benchmarks && timeout 150 python bench_decode.py --batches 1,16 --out $L/decode.md > $L/decode.txt 2>&1); tail -15 $L/decode.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
