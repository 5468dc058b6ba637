#!/usr/bin/env bash
# GPU call (one H200), session of 2026-11-30 sixth part: the multicast wgmma GEMM (wg_mc.sh:
# an illegal address) under compute-sanitizer: one NVFP4 GEMM at M = 100, N = K = 4096.
set -uo pipefail
cd "$(dirname "$0")/../.."
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
cat > /tmp/one.py <<'PY'
import torch, nvfp4_ops
w = torch.randn(4096, 4096, device="cuda")
gs = nvfp4_ops.global_scale(w)
p, s = nvfp4_ops.quantize(w, gs)
x = torch.randn(100, 4096, device="cuda", dtype=torch.bfloat16)
y = torch.ops.nvfp4.gemm_nvfp4_w4a16(x, p, s, gs)
torch.cuda.synchronize()
print("ok", y.float().abs().sum().item())
PY
PYTHONPATH=$PWD timeout 150 $CS --tool memcheck --print-limit 5 python /tmp/one.py 2>&1 | head -60 | tee $OUT/cs.log
