"""Kernel-by-kernel time of the grouped quantize ops (issue 14, session of 2026-11-30, seventh
part): torch.profiler over 20 calls of each bench_training MoE case (16384 x 4096 bf16, 64
uneven groups), so that the small bookkeeping kernels show beside the quantize kernel.
Run on a GPU: python benchmarks/probe/grouped_prof.py."""
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", ".."), os.path.join(HERE, "..")]

import nvfp4_ops  # noqa: F401  (registers torch.ops.nvfp4)
from bench_training import moe_offsets

OPS = torch.ops.nvfp4
x = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16)
offs = moe_offsets(16384, 64, "cuda")
ggs = OPS.grouped_quantize(x, offs, None)[2]
cases = {
    "nvfp4 given linear": lambda: OPS.grouped_quantize(x, offs, ggs, False),
    "nvfp4 computed linear": lambda: OPS.grouped_quantize(x, offs, None, False),
    "nvfp4 given swizzled": lambda: OPS.grouped_quantize(x, offs, ggs, True),
    "mxfp8 linear": lambda: OPS.mx_grouped_quantize(x, offs, "e4m3", "rceil", False),
    "inference quantize": lambda: OPS.quantize(x, ggs[:1], False),
}
for name, fn in cases.items():
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
    print(f"## {name}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))
