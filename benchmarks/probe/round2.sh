#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 sixth part: main with h-colfast merged (the raw
# 16-bit staged columnwise kernel) and the wgmma ring-copy fix, carried as nvfp4_ops/_C.so
# (TORCH_CUDA_ARCH_LIST=9.0a); the wgmma experiment builds as .carry/C_*.so.gz.
# GPU 1: every test folder (two pytest-xdist groups). GPU 0: the wgmma experiments
# (wg_exp.sh: without activation refills / weight loads), bench_training (8192^2, 4096 x
# 14336, MoE), bench_gemm (three formats, M = 1..256), bench_decode. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python -c "import nvfp4_ops, torch; print('torch', torch.__version__, nvfp4_ops._library.build_info())"
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  (py 300 -n 4 tests/cli tests/distributed tests/cpp > $L/t_b.txt 2>&1) &
  py 300 -n 10 tests/cuda tests/ops tests/nn tests/training tests/reference > $L/t_a.txt 2>&1
  wait
  NVFP4_OPS_TRAIN_KERNEL=smem py 200 -n 8 tests/cuda/test_training_cuda.py > $L/t_smem.txt 2>&1
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
OUT=$L bash benchmarks/probe/wg_exp.sh > $L/exp_run.log 2>&1
stamp "wg_exp rc=$?"; cat $L/exp.log
cd benchmarks
run() { local name=$1 t=$2; shift 2; timeout $t python "$@" --out $L/$name.md > $L/$name.log 2>&1; stamp "$name rc=$?"; }
run train 120 bench_training.py --rep 30
grep -E "^\| \[[0-9]+, [0-9]+\] \| (quantize|train_quantize)|^\| .*(grouped|moe)" $L/train.md | cut -d'|' -f2-7 | head -40
run gemm 200 bench_gemm.py --rep 30 --formats nvfp4,mxfp4,mxfp8 --ms 1,16,32,33,64,96,128,192,256
grep -E "^\| (NVFP4|MXFP4|MXFP8) \| [0-9]+ x [0-9]+ \| [0-9]+ \|" $L/gemm.md | cut -d'|' -f2-8,10
run decode 120 bench_decode.py --batches 1,16,64
grep -E "^\| (bf16|nvfp4-fused|mxfp4-fused|mxfp8-fused) " $L/decode.md
cd ..
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
