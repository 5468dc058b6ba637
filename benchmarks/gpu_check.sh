#!/usr/bin/env bash
# One call on the GPU machine: build for its arch, run the tests (CUDA ones included),
# run the benchmarks; every log lands under $OUT.
#
#   bash benchmarks/gpu_check.sh [PYTEST_ARGS...]       (default: the whole suite)
#   BENCH="bench_nvfp4 bench_mx" bash benchmarks/gpu_check.sh tests/test_nvfp4_cuda.py
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nvfp4_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
BENCH=${BENCH-bench_nvfp4 bench_mx bench_search}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
start=$(date +%s)
if ! python setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  grep -n "error" "$OUT/build.log" | head -40
  echo "BUILD FAILED"
  exit 1
fi
echo "build: $(( $(date +%s) - start )) s"
python -m nvfp4_ops info 2>&1 | tee "$OUT/info.txt"

# One pytest process per file: a crash in one file does not hide the others' results.
rc=0
for f in ${@:-tests/test_*.py}; do
  name=$(basename "$f" .py)
  python -m pytest -q -p no:cacheprovider -rs "$f" > "$OUT/$name.log" 2>&1
  r=$?
  [ $r -ne 0 ] && rc=$r
  echo "== $f rc=$r: $(tail -1 "$OUT/$name.log")"
  [ $r -ne 0 ] && grep -E "^(FAILED|ERROR)|Fatal Python|^E  " "$OUT/$name.log" | head -15
done
echo "tests rc=$rc"

for b in $BENCH; do
  if [ -f "benchmarks/$b.py" ]; then
    timeout 300 python "benchmarks/$b.py" --out "$OUT/$b.md" > "$OUT/$b.log" 2>&1
    echo "== $b (rc=$?)"
    tail -30 "$OUT/$b.log"
  fi
done
exit $rc
