#!/usr/bin/env bash
# GPU call (two H200s), session of 2026-11-30 sixth part: the 128-token wgmma tile in clusters
# of two CTAs that multicast their activation stages (halving the L2 reads of the
# activations). Main carried (nvfp4_ops/_C.so, 9.0a). GPU 1: tests/cuda/test_gemm.py +
# tests/nn. GPU 0: bench_gemm (three formats, M = 96..512) with multicast and with
# NVFP4_OPS_GEMM_MULTICAST=0 (the bulk copies without clusters), one after the other.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
L=/tmp/logs; rm -rf $L; mkdir -p $L
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
stamp() { echo "[$(el) s] $*"; tar czf $OUT/logs.tgz -C /tmp logs; }
py() { timeout "$1" python -m pytest -q -p no:cacheprovider -rs "${@:2}"; }
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=2
  py 200 -n 10 -x tests/cuda/test_gemm.py tests/nn > $L/t_gemm.txt 2>&1
) &
TESTS=$!
export CUDA_VISIBLE_DEVICES=0
for v in mc nomc; do
  e=1; [ $v = nomc ] && e=0
  (cd benchmarks && NVFP4_OPS_GEMM_MULTICAST=$e timeout 120 python bench_gemm.py --rep 30 \
    --formats nvfp4,mxfp4,mxfp8 --ms 96,128,192,256,384,512 --out $L/gemm_$v.md > $L/gemm_$v.log 2>&1)
  stamp "gemm $v rc=$?"
done
python - <<'PY'
import re
rows = {}
for v in ["nomc", "mc"]:
    try:
        lines = open(f"/tmp/logs/gemm_{v}.md")
    except OSError:
        continue
    for line in lines:
        c = [x.strip() for x in line.split("|")]
        if len(c) > 8 and c[1] in ("NVFP4", "MXFP4", "MXFP8") and re.match(r"\d+ x \d+$", c[2]):
            d = rows.setdefault((c[1], c[2], int(c[3])), {})
            d[v] = float(c[4]); d["deq"] = float(c[6]); d["bf16"] = float(c[8])
print("format | N x K | M | bulk | bulk + multicast | dequant | bf16 | multicast vs bf16")
for k, d in rows.items():
    print(" | ".join([k[0], k[1], str(k[2])] + [f"{d.get(v, float('nan')):.1f}" for v in ["nomc", "mc", "deq", "bf16"]] + [f"{d['bf16'] / d['mc']:.2f}x" if 'mc' in d else '']))
PY
wait $TESTS
for f in $L/t_*.txt; do echo "$(basename $f): $(tail -1 $f)"; grep -hE "^(FAILED|ERROR)" $f | head -8; done
stamp done
