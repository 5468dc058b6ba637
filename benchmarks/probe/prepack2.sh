#!/usr/bin/env bash
# GPU (branch h-prepack2): the prepacked NVFP4 layout with the code bits pre-placed (PREPACK_BITS)
# and the rotate-and-mask conversion (a_pairs_pp: bf16 9 instructions per code word, fp16 17,
# the plain layout 15). Build; GEMM tests (test_prepacked_equals_plain checks the new decode bit
# for bit against the plain kernel); bench_gemm NVFP4: the "prepacked" column against "fused"
# (main, final2: 8192^2 M = 1 fused 25.2 / prepacked 24.6 us).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n error $L/build.log | head -30; tar czf $OUT/logs.tgz -C $OUT logs; exit 1; }
echo "[$(el) s] built"
timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda/test_gemm.py tests/ops/test_gemm.py -n 8 > $L/tests.txt 2>&1; echo "[$(el) s] tests rc=$?"; tail -1 $L/tests.txt
grep -E "^(FAILED|ERROR)" $L/tests.txt | head -10
(cd benchmarks && timeout 150 python bench_gemm.py --rep 30 --formats nvfp4 --ms 1,16,64 --out $L/gemm.md > $L/gemm.log 2>&1)
echo "== gemm [$(el) s]"; grep -E "^\| NVFP4 \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-6,10,11
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
