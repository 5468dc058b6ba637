#!/usr/bin/env bash
# GPU: build, the GEMM tests, the GEMM benchmark (quick shapes).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; exit 1; }
timeout 240 python -m pytest -q -x -p no:cacheprovider ${TESTS:-tests/cuda/test_gemm.py} > $L/tests.txt 2>&1; echo "tests rc=$?"; tail -5 $L/tests.txt
(cd benchmarks && timeout 200 python bench_gemm.py --rep 30 --shapes ${SHAPES:-8192x8192,28672x8192,4096x14336,14336x4096} --ms ${MS:-1,16,64} > $L/gemm.txt 2>&1); sed -n '/^|/p' $L/gemm.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
