#!/usr/bin/env bash
# GPU (branch h-occ3): E2M1 GEMM in 256-wide phases with 3 CTAs per SM at one token tile.
# Build; GEMM and layer tests; bench_gemm NVFP4 / MXFP4 at M = 1, 4, 8, 16 (compare with
# benchmarks/RESULTS.md "third part", final2: NVFP4 8192^2 M = 1 25.2 us, MXFP4 25.2 us).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; tar czf $OUT/logs.tgz -C $OUT logs; exit 1; }
echo "[$(el) s] built"
timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda/test_gemm.py tests/nn -n 8 > $L/tests.txt 2>&1; echo "[$(el) s] tests rc=$?"; tail -1 $L/tests.txt
grep -E "^(FAILED|ERROR)" $L/tests.txt | head -10
(cd benchmarks && timeout 150 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4 --ms 1,4,8,16 --out $L/gemm.md > $L/gemm.log 2>&1)
echo "== gemm [$(el) s]"; grep -E "^\| (NVFP4|MXFP4) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-6,10
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
