"""torch.compile(fullgraph=True) of a model of quantized layers (every backend goes through
torch.ops.nvfp4, so no graph break)."""

import torch
from torch import nn

from nvfp4_ops.nn import MXFP4Linear, MXFP8Linear, NVFP4Linear
from nvfp4_ops.nn.gemm import FUSED_MAX_M, apply_linear

from ._common import _linear, _rel, _x


# --------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------


def _two_layer_model(dtype=torch.float32, device="cpu", nvfp4_backend=None, mx_backend="dequant"):
    torch.manual_seed(0)
    l1 = _linear(64, 96, dtype=dtype).to(device)
    l2 = _linear(96, 32, dtype=dtype).to(device)
    return nn.Sequential(
        NVFP4Linear.from_float(l1, act_quant="dynamic", backend=nvfp4_backend),
        nn.ReLU(),
        MXFP8Linear.from_float(l2, act_quant="dynamic", backend=mx_backend),
    )


def test_compile_fullgraph_two_layers():
    torch._dynamo.reset()
    model = _two_layer_model()  # NVFP4 on the CPU default (reference), MXFP8 on dequant
    assert model[0].active_backend == "reference" and model[2].active_backend == "dequant"
    x = _x((5, 64), seed=50)
    eager = model(x)
    # aot_eager: dynamo + AOT autograd on the ops' fakes (what fullgraph checks), without
    # inductor's C++ build (25 s on CPU; the CUDA test below runs inductor)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    assert _rel(y, eager) < 1e-5
    torch.testing.assert_close(compiled(x * 2), model(x * 2), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# The fused backend of the MX layers (gemm_mx_w16 through its fake), and of NVFP4
# --------------------------------------------------------------------------------------


def test_compile_fullgraph_fused_backend_every_format():
    # the fused GEMM with the per-format crossover (M = 1: the fused op, M = 65: dequant)
    # traces whole; on CPU the ops are the reference, so compiled == eager bit for bit

    for cls in (NVFP4Linear, MXFP8Linear, MXFP4Linear):
        layer = cls.from_float(_linear(64, 24, dtype=torch.bfloat16))
        torch._dynamo.reset()
        f = torch.compile(lambda x: apply_linear("fused", layer, x, layer.bias),
                          fullgraph=True, backend="aot_eager")
        for m in (1, FUSED_MAX_M[cls.FORMAT] + 1):
            x = _x((m, 64), torch.bfloat16, seed=m)
            assert torch.equal(f(x), apply_linear("fused", layer, x, layer.bias)), (cls, m)
