"""One launch of each codec kernel on an 8192 x 8192 bf16 input (a target for ncu).

Each op runs once after a warm-up pass, inside an NVTX range "timed" (the row's name in a
range nested in it), so that `ncu --nvtx --nvtx-include "timed/"` profiles exactly the
launches of one call per row, in the order of `rows` (the warm-up pass is outside).
"""
import torch

import nvfp4_ops  # noqa: F401

ops = torch.ops.nvfp4
torch.manual_seed(0)
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
gs = ops.global_scale(x)
q, s = ops.quantize(x, gs)
qs, ss = ops.quantize(x, gs, True)
m8, s8 = ops.mx_quantize(x, "e4m3")
m4, s4 = ops.mx_quantize(x, "e2m1")
sc = torch.randint(0, 255, (8192, 512), device="cuda", dtype=torch.uint8)
rows = [
    ("nvfp4 quantize linear", lambda: ops.quantize(x, gs)),
    ("nvfp4 quantize swizzled", lambda: ops.quantize(x, gs, True)),
    ("nvfp4 quantize 4over6", lambda: ops.quantize(x, gs, False, "4over6")),
    ("nvfp4 dequantize", lambda: ops.dequantize(q, s, gs, torch.bfloat16)),
    ("nvfp4 dequantize swizzled", lambda: ops.dequantize(qs, ss, gs, torch.bfloat16, True)),
    ("nvfp4 quant_dequant", lambda: ops.quant_dequant(x, gs)),
    ("nvfp4 global_scale", lambda: ops.global_scale(x)),
    ("mxfp8 quantize rowwise", lambda: ops.mx_quantize(x, "e4m3")),
    ("mxfp8 quantize colwise", lambda: ops.mx_quantize(x, "e4m3", "rceil", False, -2)),
    ("mxfp8 quantize rowcol", lambda: ops.mx_quantize_rowcol(x)),
    ("mxfp8 dequantize", lambda: ops.mx_dequantize(m8, s8, "e4m3", torch.bfloat16)),
    ("mxfp4 quantize", lambda: ops.mx_quantize(x, "e2m1")),
    ("mxfp4 dequantize", lambda: ops.mx_dequantize(m4, s4, "e2m1", torch.bfloat16)),
    ("swizzle_scales", lambda: ops.swizzle_scales(sc)),
    ("nvfp4 mse search", lambda: ops.quantize(x, gs, False, "mse")),
    ("mxfp4 mse search", lambda: ops.mx_quantize(x, "e2m1", "rceil", False, -1, "mse")),
    ("train_quantize rowwise", lambda: ops.train_quantize(x, gs)),
    ("train_quantize colwise", lambda: ops.train_quantize(x, gs, -2)),
    ("train_quantize_rowcol", lambda: ops.train_quantize_rowcol(x, gs, gs)),
]
for _, fn in rows:
    fn()
torch.cuda.synchronize()
torch.cuda.nvtx.range_push("timed")
for name, fn in rows:
    torch.cuda.nvtx.range_push(name)
    fn()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
torch.cuda.nvtx.range_pop()
print("ran", len(rows), "rows")
