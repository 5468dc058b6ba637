#!/usr/bin/env bash
# GPU: build (MXFP4 in the E2M1 layout, operands scaled per block against a running row base);
# GEMM and layer tests; bench_gemm for MXFP4 (and NVFP4 beside it) at M = 1..64; bench_decode.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; tar czf $OUT/logs.tgz -C $OUT logs; exit 1; }
echo "[$(el) s] built"
timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda/test_gemm.py tests/nn > $L/tests.txt 2>&1; echo "[$(el) s] tests rc=$?"; tail -1 $L/tests.txt
grep -E "^(FAILED|ERROR)|Error|assert" $L/tests.txt | head -20
cd benchmarks
timeout 200 python bench_gemm.py --rep 30 --formats mxfp4,nvfp4 --ms 1,16,32,64,128 --out $L/gemm.md > $L/gemm.log 2>&1
echo "== gemm [$(el) s]"; grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-5,7,10; grep -A12 "^Crossover" $L/gemm.md | grep MXFP4
timeout 120 python bench_decode.py --batches 1,16 --out $L/decode.md > $L/decode.log 2>&1
echo "== decode [$(el) s]"; grep -E "^\| (bf16|mxfp4|nvfp4-fused)" $L/decode.md | head -8
cd ..
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
