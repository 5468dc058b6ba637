#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 seventh part, second tree: the grouped NVFP4
# kernel with the inference quantize's per-block split (grouped_nvfp4_kernel), the row
# bookkeeping in one kernel (group starts in shared memory up to 3072 groups), the group amax
# with 4 loads in flight; the direct rowwise kernel as committed (0a97edb). Main carried
# (nvfp4_ops/_C.so, TORCH_CUDA_ARCH_LIST=9.0a). GPU 1: every test folder. GPU 0:
# bench_training 8192^2 + MoE, then probe/grouped_prof.py. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 280 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 280 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
(cd benchmarks && timeout 100 python bench_training.py --rep 30 --shapes 8192x8192 --out $L/train.md > $L/train.log 2>&1)
stamp "train rc=$?"
timeout 60 python benchmarks/probe/grouped_prof.py > $L/grouped_prof.txt 2>&1
stamp "prof rc=$?"
grep -E "^\| (\[8192, 8192\]|MoE)" $L/train.md | cut -d'|' -f2-6
grep -E "kernel|Memcpy|Memset|^##" $L/grouped_prof.txt | grep -v cudaLaunch | awk '{n=NF; printf "%-50s %s %s\n", substr($0,1,50), $(n-3), $(n-1)}'
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
