#!/usr/bin/env bash
# GPU: build (MXFP4 in two 256-wide phases per step: no spills); GEMM and layer tests;
# bench_gemm for the three formats (L2 flushed by writing, the default) and NVFP4 / MXFP4 at
# M = 1 with the L2 flushed by reading (clean); bench_decode.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; exit 1; }
echo "[$(el) s] built"
timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda/test_gemm.py tests/nn -x > $L/tests.txt 2>&1; echo "[$(el) s] tests rc=$?"; tail -1 $L/tests.txt
grep -E "^(FAILED|ERROR)" $L/tests.txt | head -10
cd benchmarks
timeout 200 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,64 --out $L/gemm.md > $L/gemm.log 2>&1
echo "== gemm (write flush) [$(el) s]"; grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-5,7,10
timeout 100 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4 --ms 1 --flush read --out $L/gemm_read.md > $L/gemm_read.log 2>&1
echo "== gemm (read flush) [$(el) s]"; grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm_read.md | cut -d'|' -f2-5,7,10
timeout 120 python bench_decode.py --batches 1,16 --out $L/decode.md > $L/decode.log 2>&1
echo "== decode [$(el) s]"; grep -E "^\|" $L/decode.md | head -12
cd ..
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
