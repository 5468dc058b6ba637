#!/usr/bin/env bash
# One call on the GPU machine: build for its arch, run the test suite (CUDA tests included),
# run the benchmarks; every log lands under $OUT.
#
#   bash benchmarks/gpu_check.sh [PYTEST_PATHS...]        (default: every folder under tests/)
#   BENCH="bench_nvfp4 bench_mx" bash benchmarks/gpu_check.sh tests/cuda
#   BASELINE=.carry/base bash benchmarks/gpu_check.sh     (also build the source tree in
#       BASELINE, e.g. `git archive <commit>` unpacked there, and run the same benchmarks with
#       it in the same call, for before/after tables: $OUT/base_<bench>.md)
#   BENCH_ARGS_bench_nvfp4="--no-compile" ...             (extra arguments per benchmark)
#   SKIP_BUILD=1 ...        use the extension carried in nvfp4_ops/ (built elsewhere: a stable-ABI
#                           abi3 build loads into any torch >= 2.11 and CPython >= 3.10)
#   PARALLEL=1 ...          run the pytest paths concurrently (one process each; the GPU tests
#                           are small), then the benchmarks alone
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/nvfp4_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
BENCH=${BENCH-bench_nvfp4 bench_mx bench_search}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1

build() {  # build the tree in $1 in place, log to $2
  local start=$(date +%s)
  if ! (cd "$1" && python setup.py build_ext --inplace > "$2" 2>&1); then
    grep -n "error" "$2" | head -40
    echo "BUILD FAILED in $1"
    return 1
  fi
  echo "build of $1: $(( $(date +%s) - start )) s"
}

if [ -z "${SKIP_BUILD:-}" ]; then build "$ROOT" "$OUT/build.log" || exit 1; fi
if [ -n "${BASELINE:-}" ]; then
  build "$ROOT/$BASELINE" "$OUT/base_build.log" &
  base_build=$!
fi
python -m nvfp4_ops info 2>&1 | tee "$OUT/info.txt"

# One pytest process per test folder: a crash in one does not hide the others' results.
run_tests() {  # one pytest process for path $1; its exit code in $OUT/test_<name>.rc
  local name=$(basename "$1" .py)
  python -m pytest -q -p no:cacheprovider -rs "$1" > "$OUT/test_$name.log" 2>&1
  echo $? > "$OUT/test_$name.rc"
}
paths=(${@:-tests/*/})
for f in "${paths[@]}"; do
  [ -e "$f" ] || continue
  if [ -n "${PARALLEL:-}" ]; then run_tests "$f" & else run_tests "$f"; fi
done
wait
rc=0
for f in "${paths[@]}"; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .py)
  r=$(cat "$OUT/test_$name.rc")
  [ "$r" -ne 0 ] && [ "$r" -ne 5 ] && rc=$r
  echo "== $f rc=$r: $(tail -1 "$OUT/test_$name.log")"
  [ "$r" -ne 0 ] && grep -E "^(FAILED|ERROR)|Fatal Python|^E  " "$OUT/test_$name.log" | head -15
done
rm -f "$OUT"/test_*.rc
echo "tests rc=$rc"

if [ -n "${BASELINE:-}" ]; then
  wait "$base_build" || BASELINE=""
fi
for b in $BENCH; do
  args_var="BENCH_ARGS_$b"
  for tree in "$ROOT" ${BASELINE:+"$ROOT/$BASELINE"}; do
    prefix=""; [ "$tree" != "$ROOT" ] && prefix="base_"
    if [ -f "$tree/benchmarks/$b.py" ]; then
      (cd "$tree" && timeout 300 python "benchmarks/$b.py" ${!args_var:-} --out "$OUT/$prefix$b.md" \
        > "$OUT/$prefix$b.log" 2>&1)
      echo "== $prefix$b (rc=$?)"
      tail -40 "$OUT/$prefix$b.log"
    fi
  done
done
exit $rc
