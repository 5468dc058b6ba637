"""One launch of each fused GEMM variant at M = 1 on 8192 x 8192 (a target for ncu)."""
import sys
import torch
import nvfp4_ops  # noqa: F401

m = int(sys.argv[1]) if len(sys.argv) > 1 else 1
n, k = 8192, 8192
ops = torch.ops.nvfp4
w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
gs = ops.global_scale(w)
packed, scales = ops.quantize(w, gs)
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
pp, ps = ops.prepack_nvfp4_w4a16(packed, scales)
torch.cuda.synchronize()
ops.gemm_nvfp4_w4a16(x, packed, scales, gs)
ops.gemm_nvfp4_w4a16_prepacked(x, pp, ps, gs, n)
torch.nn.functional.linear(x, w)
torch.cuda.synchronize()
