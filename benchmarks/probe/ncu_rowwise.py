"""One launch of each rowwise NVFP4 quantize kernel on 8192 x 8192 bf16, a target for ncu
(benchmarks/probe/ncu_rowwise.sh): the inference quantize (train_quantize axis -1, 1-D, given
gs), the direct rowwise kernel on the same call (NVFP4_OPS_TRAIN_KERNEL=direct) and the
wide rowwise kernel with 2-D scales (auto). When ncu_rowwise.sh ran it, the third launch was
the staged rowwise kernel (train_rowwise_smem_kernel, measured and removed); final13.sh runs
it with the wide kernel."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import nvfp4_ops  # noqa: E402,F401

OPS = torch.ops.nvfp4
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
gs = torch.tensor([1.0], device="cuda")
torch.cuda.synchronize()
os.environ["NVFP4_OPS_TRAIN_KERNEL"] = "auto"
OPS.train_quantize(x, gs, -1)                 # nvfp4_quantize_kernel
os.environ["NVFP4_OPS_TRAIN_KERNEL"] = "direct"
OPS.train_quantize(x, gs, -1)                 # train_rowwise_kernel<bf16, true>
os.environ["NVFP4_OPS_TRAIN_KERNEL"] = "auto"
OPS.train_quantize(x, gs, -1, True)           # train_rowwise_wide_kernel (2-D)
torch.cuda.synchronize()
