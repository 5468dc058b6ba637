#!/usr/bin/env bash
# GPU: build, every test folder (in parallel), ncu source-level stalls of the NVFP4 GEMM at M=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
L=$OUT/logs; mkdir -p $L
s=$(date +%s)
python setup.py build_ext --inplace > $L/build.log 2>&1 || { grep -n "error" $L/build.log | head -30; exit 1; }
echo "build $(( $(date +%s) - s )) s"
for f in ${PATHS:-tests/*/}; do
  n=$(basename $f .py)
  (timeout 420 python -m pytest -q -p no:cacheprovider -x -rs $f > $L/test_$n.log 2>&1; echo $? > $L/test_$n.rc) &
done
wait
for f in ${PATHS:-tests/*/}; do n=$(basename $f .py); echo "== $n rc=$(cat $L/test_$n.rc): $(tail -1 $L/test_$n.log)"; grep -E "^(FAILED|ERROR)|^E  " $L/test_$n.log | head -8; done
if [ -n "${NCU:-}" ]; then
  NCUB=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
  PYTHONPATH=$PWD timeout 200 $NCUB --clock-control none -k regex:w16_gemm -c 1 --section SourceCounters --section WarpStateStats -o $L/gemm python benchmarks/probe/ncu_target.py 1 > $L/ncu_run.txt 2>&1
  $NCUB --import $L/gemm.ncu-rep --page source --csv --print-source sass > $L/src.csv 2>$L/src.err
  python benchmarks/probe/top_stalls.py $L/src.csv 2>&1 | head -60
fi
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
