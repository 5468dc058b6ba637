"""Times the NVFP4 fused GEMM (8192^2 and 28672 x 8192, bf16) at M = 64, 128, 256 with the
loaded build; the wg_exp.sh experiment builds skip the kernel's activation copies and / or
weight loads (their results are wrong: timing only)."""
import sys
import torch
import nvfp4_ops  # noqa: F401
sys.path.insert(0, "benchmarks")
from _common import bench_ms  # noqa: E402

ops = torch.ops.nvfp4
for n, k in ((8192, 8192), (28672, 8192)):
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    gs = ops.global_scale(w)
    packed, scales = ops.quantize(w, gs)
    for m in (64, 128, 256):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        t = bench_ms(lambda: ops.gemm_nvfp4_w4a16(x, packed, scales, gs), rep=50)
        print(f"{sys.argv[1]} | {n} x {k} | {m} | {1000 * t:.1f} us", flush=True)
