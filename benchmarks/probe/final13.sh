#!/usr/bin/env bash
# GPU call (one H200: the two-GPU machine was not lent), session of 2026-11-30 seventh part, the final tree: the wide rowwise
# kernel for 2-D scales (train_rowwise_wide_kernel), the grouped NVFP4 kernel and row
# bookkeeping (final12.sh), encode_block's fused nibble adds (final11.sh). Main carried
# (nvfp4_ops/_C.so, TORCH_CUDA_ARCH_LIST=9.0a). In turn: bench_training on 8192^2 and
# 4096 x 14336 with the MoE rows, ncu of the rowwise kernels (probe/ncu_rowwise.py, the wide
# kernel in place of the staged one), then every test folder. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
python -c "import nvfp4_ops, torch; print('torch', torch.__version__)"
export CUDA_VISIBLE_DEVICES=0
(cd benchmarks && timeout 120 python bench_training.py --rep 30 --shapes 8192x8192,4096x14336 --out $L/train.md > $L/train.log 2>&1)
stamp "train rc=$?"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
MET=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_requests_op_write.sum,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread
timeout 120 $NCU --clock-control none -k "regex:nvfp4_quantize_kernel|train_rowwise" -c 3 \
  --metrics $MET python benchmarks/probe/ncu_rowwise.py > $L/ncu.txt 2>&1
stamp "ncu rc=$?"
grep -E "^\| (\[|MoE)" $L/train.md | cut -d'|' -f2-6
grep -E "void|  (gpu__|dram__|lts__|smsp__|sm__|launch__)" $L/ncu.txt | sed 's/  */ /g' | cut -c1-120
export OMP_NUM_THREADS=2
py 240 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
py 150 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
