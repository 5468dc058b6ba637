#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 sixth part: A/B of the wgmma GEMM's A register
# sets (MMA groups in flight) and weight buffers at 128 tokens. Three builds of the same tree
# (TORCH_CUDA_ARCH_LIST=9.0a), carried as .carry/C_{base,A,B}.so: base = 2 sets, 3 buffers
# (main); A = 3 sets (3 groups in flight), 3 buffers; B = 4 sets, 2 buffers at 128 tokens.
# Each runs in its own copy of the tree. GPU 1: test_gemm + tests/nn for A and B. GPU 0:
# bench_gemm NVFP4 / MXFP4 (M = 33..512), one build after the other. Logs in $OUT/logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
for v in base A B; do
  rm -rf /tmp/t$v; mkdir -p /tmp/t$v
  cp -r nvfp4_ops tests benchmarks pyproject.toml setup.py /tmp/t$v/ 2>/dev/null
  gunzip -c .carry/C_$v.so.gz > /tmp/t$v/nvfp4_ops/_C.so
done
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  for v in A B; do (cd /tmp/t$v && py 200 -n 10 tests/cuda/test_gemm.py tests/nn > $L/t_$v.txt 2>&1); done
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
for v in base A B; do
  (cd /tmp/t$v/benchmarks && timeout 150 python bench_gemm.py --rep 30 --formats nvfp4,mxfp4 \
    --ms 33,64,128,192,256,512 --out $L/gemm_$v.md > $L/gemm_$v.log 2>&1)
  stamp "gemm $v rc=$?"
done
python - <<'PY'
import re
rows = {}
for v in ["base", "A", "B"]:
    for line in open(f"/tmp/logs/gemm_{v}.md"):
        c = [x.strip() for x in line.split("|")]
        if len(c) > 5 and c[1] in ("NVFP4", "MXFP4") and re.match(r"\d+ x \d+", c[2]):
            rows.setdefault((c[1], c[2], int(c[3])), {})[v] = float(c[4])
print("format | N x K | M | base | A (3 sets) | B (4 sets, 2 buffers)")
for k, d in rows.items():
    print(" | ".join([k[0], k[1], str(k[2])] + [f"{d.get(v, float('nan')):.1f}" for v in ["base", "A", "B"]]))
PY
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
