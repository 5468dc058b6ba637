#!/usr/bin/env bash
# Throughput of the checkpoint quantizer on 1 and 2 GPUs (issue 15): a synthetic checkpoint
# of 8 bf16 8192x8192 linears (1 GiB), quantized by one process and by
# `torchrun --nproc-per-node 2`; prints GB/s of input (wall clock of the whole command,
# start-up included, and of the report's quantize loop), and checks that the two output
# folders are byte-identical (report.json aside: it holds timings).
#
#   bash benchmarks/bench_quantizer.sh                 # nvfp4, mse and amax
#   FORMATS="nvfp4 mxfp8" SCALES="amax" GPUS="1 2" bash benchmarks/bench_quantizer.sh
#
# Needs 2 visible GPUs for the 2-GPU rows (else they are skipped); run from the repository
# root with the extension built. Numbers go into benchmarks/RESULTS.md by hand.
set -euo pipefail
FORMATS=${FORMATS:-nvfp4}
SCALES=${SCALES:-"amax mse"}
GPUS=${GPUS:-"1 2"}
SIZE=${SIZE:-8192}      # a smoke test elsewhere: SIZE=256 DEVICE=cpu
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-$(mktemp -d /tmp/bench_quantizer.XXXXXX)}
NGPU=$(python -c "import torch; print(torch.cuda.device_count() if '$DEVICE' == 'cuda' else 2)")

python - "$WORK/in" "$SIZE" <<'PY'
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
d = Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True)
g = torch.Generator().manual_seed(0)
n = int(sys.argv[2])
t = {f"model.layers.{i}.mlp.down_proj.weight":
     (torch.randn(n, n, generator=g) * 0.02).to(torch.bfloat16) for i in range(8)}
save_file(t, str(d / "model.safetensors"))
(d / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}))
PY
BYTES=$(python -c "import os; print(os.path.getsize('$WORK/in/model.safetensors'))")

printf "%-7s %-5s %-5s %10s %12s %12s  %s\n" format scales gpus wall_s "GB/s(wall)" "GB/s(loop)" same
for fmt in $FORMATS; do
  for sc in $SCALES; do
    ref=""
    for n in $GPUS; do
      if [ "$n" -gt "$NGPU" ]; then echo "skip $fmt/$sc on $n GPUs: $NGPU visible"; continue; fi
      out="$WORK/out_${fmt}_${sc}_$n"
      if [ "$n" -eq 1 ]; then
        cmd=(python -m nvfp4_ops)
      else
        cmd=(python -m torch.distributed.run --standalone --nproc-per-node "$n" -m nvfp4_ops)
      fi
      t0=$(date +%s.%N)
      "${cmd[@]}" quantize "$WORK/in" --out "$out" --format "$fmt" --scales "$sc" \
        --device "$DEVICE" --force --quiet > "$WORK/log_$n" 2>&1 || { cat "$WORK/log_$n"; exit 1; }
      t1=$(date +%s.%N)
      same="-"
      if [ -z "$ref" ]; then ref=$out
      elif diff -rq -x report.json "$ref" "$out" > /dev/null; then same="identical to $(basename "$ref")"
      else same="DIFFERS from $(basename "$ref")"; fi
      python - "$out/report.json" "$BYTES" "$t0" "$t1" "$fmt" "$sc" "$n" "$same" <<'PY'
import json, sys
rep, nbytes, t0, t1, fmt, sc, n, same = sys.argv[1:]
r = json.load(open(rep))["totals"]
wall = float(t1) - float(t0)
print(f"{fmt:<7} {sc:<5} {n:<5} {wall:10.2f} {int(nbytes) / wall / 1e9:12.3f} "
      f"{int(nbytes) / r['loop_time_s'] / 1e9:12.3f}  {same}")
PY
    done
  done
done
echo "(inputs and outputs in $WORK)"
