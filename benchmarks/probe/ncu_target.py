"""One launch of each fused GEMM variant on 8192 x 8192 bf16 (a target for ncu).

Usage: ncu_target.py [M] [linear]: M tokens (default 1); with "linear", only bf16 F.linear.
"""
import sys
import torch
import nvfp4_ops  # noqa: F401

m = int(sys.argv[1]) if len(sys.argv) > 1 else 1
only_linear = len(sys.argv) > 2 and sys.argv[2] == "linear"
n, k = 8192, 8192
ops = torch.ops.nvfp4
w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
if not only_linear:
    gs = ops.global_scale(w)
    packed, scales = ops.quantize(w, gs)
    pp, ps = ops.prepack_nvfp4_w4a16(packed, scales)
    torch.cuda.synchronize()
    ops.gemm_nvfp4_w4a16(x, packed, scales, gs)
    ops.gemm_nvfp4_w4a16_prepacked(x, pp, ps, gs, n)
torch.cuda.synchronize()
torch.nn.functional.linear(x, w)
torch.cuda.synchronize()
