#!/usr/bin/env bash
# GPU: build; GEMM tests; bench_gemm at several L2 prefetch distances.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; exit 1; }
NVFP4_OPS_GEMM_PREFETCH=3 timeout 300 python -m pytest -q -x -p no:cacheprovider tests/cuda/test_gemm.py > $L/tests.txt 2>&1; echo "tests rc=$?"; tail -1 $L/tests.txt
for pf in ${PFS:-0 1 2 4 8}; do
  echo "== prefetch $pf"
  (cd benchmarks && NVFP4_OPS_GEMM_PREFETCH=$pf timeout 150 python bench_gemm.py --rep 30 --formats ${FORMATS:-nvfp4,mxfp4} --shapes ${SHAPES:-8192x8192,28672x8192,4096x14336} --ms ${MS:-1,16} > $L/gemm$pf.txt 2>&1); grep -E "^\| (NVFP4|MXFP4|MXFP8) " $L/gemm$pf.txt | cut -d'|' -f2-8
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
