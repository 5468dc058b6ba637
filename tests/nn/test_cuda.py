"""The layers on a CUDA GPU: every backend that runs against the reference, moves, CUDA graphs."""

import pytest
import torch

from nvfp4_ops.nn import (
    MXFP8Linear,
    NVFP4Linear,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)
from nvfp4_ops.nn.backends import FUSED_AUTO_ARCHS
from nvfp4_ops.nn.gemm import FUSED_MAX_M, fused_path
from nvfp4_ops.reference import gemm as ref_gemm

from .._utils import requires_cuda
from ._common import _linear, _rel, _x
from .test_compile import _two_layer_model


# --------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------


def _check_backends_match_reference(base, x, select):
    """Every backend that runs here gives ``base``'s reference output to bf16 accuracy."""
    want = base(x)
    assert torch.isfinite(want).all()
    backends = ["dequant", "reference"]
    for b in ("scaled_mm", "fused"):
        try:
            select("cuda", backend=b, weight_only=base.weight_only)
            backends.append(b)
        except RuntimeError:
            pass
    for b in backends:
        base.set_backend(b)
        y = base(x)
        assert torch.isfinite(y).all(), b
        assert _rel(y, want) < 1e-2, b


@requires_cuda
@pytest.mark.parametrize("act_quant", [None, "dynamic", "static"])
def test_cuda_nvfp4_backends_match_reference(act_quant):
    lin = _linear(256, 160, dtype=torch.bfloat16).cuda()
    x = _x((3, 33, 256), torch.bfloat16).cuda()
    calib = x.reshape(-1, 256)
    base = NVFP4Linear.from_float(lin, act_quant=act_quant, backend="reference",
                                  calibration=calib if act_quant == "static" else None)
    _check_backends_match_reference(base, x, select_nvfp4_linear_backend)


@requires_cuda
@pytest.mark.parametrize("act_quant", [None, "dynamic"])
def test_cuda_mxfp8_backends_match_reference(act_quant):
    lin = _linear(256, 160, dtype=torch.bfloat16).cuda()
    x = _x((70, 256), torch.bfloat16).cuda()
    base = MXFP8Linear.from_float(lin, act_quant=act_quant, backend="reference")
    _check_backends_match_reference(base, x, select_mxfp8_linear_backend)


@requires_cuda
def test_cuda_default_backend_and_move():
    layer = NVFP4Linear.from_float(_linear(64, 32), act_quant="dynamic")
    assert layer.active_backend == "reference"
    layer.cuda()
    assert layer.active_backend == select_nvfp4_linear_backend("cuda")[0]
    assert layer.weight_scale.dtype == torch.float8_e4m3fn
    layer.cpu()
    assert layer.active_backend == "reference"


@requires_cuda
def test_cuda_compile_reduce_overhead_cuda_graphs():
    torch._dynamo.reset()
    model = _two_layer_model(torch.bfloat16, "cuda", nvfp4_backend=None, mx_backend=None)
    x = _x((16, 64), torch.bfloat16).cuda()
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # warm-up, record, replay
        y = compiled(x)
    torch.cuda.synchronize()
    assert _rel(y, eager) < 1e-2


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_fused_backend_paths(dtype):
    """W4A16 on sm_80..sm_90 picks "fused" by itself; it runs the fused op up to FUSED_MAX_M
    rows (the op's bits) and exactly the dequant backend above; bf16: both within 4e-3 of
    the fp32 reference."""
    lin = _linear(1024, 256, dtype=dtype).cuda()
    layer = NVFP4Linear.from_float(lin)
    cap = torch.cuda.get_device_capability()
    if FUSED_AUTO_ARCHS[0] <= cap <= FUSED_AUTO_ARCHS[1]:
        assert layer.active_backend == "fused", layer.backend_reasons
    layer.set_backend("fused")
    dequant = NVFP4Linear.from_float(lin, backend="dequant").cuda()
    for m in (1, 7, FUSED_MAX_M, FUSED_MAX_M + 1, 300):
        x = _x((m, 1024), dtype, seed=m).cuda()
        y = layer(x)
        assert y.shape == (m, 256) and y.dtype == dtype
        if fused_path(m, dtype)[0] == "fused":
            want = torch.ops.nvfp4.gemm_nvfp4_w4a16(x, layer.weight_packed, layer.weight_scale,
                                                    layer.weight_global_scale, layer.bias)
            assert torch.equal(y, want), m
        else:
            assert m > FUSED_MAX_M and torch.equal(y, dequant(x)), m
        if dtype == torch.bfloat16:
            ref = ref_gemm.gemm_nvfp4_w4a16_fp32(x, layer.weight_packed, layer.weight_scale,
                                                 layer.weight_global_scale, layer.bias)
            assert _rel(y, ref) < 4e-3, m
    # batch dims flatten into M; an fp32 activation takes the dequant path
    x3 = _x((2, 3, 1024), dtype).cuda()
    assert torch.equal(layer(x3).reshape(6, 256), layer(x3.reshape(6, 1024)))
    x32 = _x((2, 1024)).cuda()
    assert fused_path(2, torch.float32)[0] == "dequant"
    assert torch.equal(layer(x32), dequant(x32))


@requires_cuda
def test_cuda_fused_layer_cuda_graph():
    layer = NVFP4Linear.from_float(_linear(512, 128, dtype=torch.bfloat16).cuda(),
                                   backend="fused")
    x = _x((4, 512), torch.bfloat16).cuda()
    eager = layer(x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # warm-up, record, replay
        y = compiled(x)
    torch.cuda.synchronize()
    assert torch.equal(y, eager)
