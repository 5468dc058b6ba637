#!/usr/bin/env bash
# The fourth part's last GPU call (two H200s), on the final tree (extension built for sm_90,
# carried in nvfp4_ops/_C.so): GPU 1 runs the README's test command over every test folder
# (two pytest-xdist groups, 2 CPU threads per process); GPU 0 runs every codec row of issues
# 13 and 14 in one run: bench_nvfp4, bench_mx, bench_search, bench_training, bench_peers
# (torchao from the carried wheel, installed under /tmp/site for that script only),
# probe/copy_sizes.py and ncu of every codec kernel (probe/ncu_codecs.py). Steps that would
# start after 460 s are skipped. Logs in $OUT/logs.tgz after every step.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
python -c "import torch; print('torch', torch.__version__)"
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (timeout 540 python -m pytest -q -p no:cacheprovider -rs tests/cli tests/distributed tests/cpp -n 4 > $L/test_b.log 2>&1; echo $? > $L/test_b.rc) &
  timeout 540 python -m pytest -q -p no:cacheprovider -rs tests/cuda tests/ops tests/nn tests/training tests/reference -n 12 > $L/test_a.log 2>&1; echo $? > $L/test_a.rc
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=4
cd benchmarks
run() {
  local name=$1 t=$2; shift 2
  if [ $(el) -gt 460 ]; then stamp "$name skipped (time)"; return; fi
  timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"
}
run nvfp4 90 bench_nvfp4.py --no-compile
run mx 150 bench_mx.py --compile none
run search 150 bench_search.py --no-reference
run training 120 bench_training.py
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $ROOT/.whl/*.whl > $L/pip.log 2>&1
PYTHONPATH=/tmp/site run peers 240 bench_peers.py
cd $ROOT
timeout 60 python benchmarks/probe/copy_sizes.py > $L/copy_sizes.md 2>&1; stamp "copy sizes"
if [ $(el) -lt 480 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  PYTHONPATH=$ROOT timeout 90 $NCU --clock-control none --nvtx --nvtx-include "timed/" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --metrics smsp__inst_executed.sum \
    python benchmarks/probe/ncu_codecs.py > $L/ncu_codecs.txt 2>&1
  stamp "ncu rc=$? ($(grep -c 'Duration' $L/ncu_codecs.txt) kernels)"
fi
wait $TESTS
stamp "tests A rc=$(cat $L/test_a.rc): $(tail -1 $L/test_a.log)"
stamp "tests B rc=$(cat $L/test_b.rc): $(tail -1 $L/test_b.log)"
grep -hE "^(FAILED|ERROR)" $L/test_a.log $L/test_b.log | head -15
grep -E "^\| \[8192, 8192\]" $L/nvfp4.md | cut -d'|' -f2-9 | grep -v 4over6
true
