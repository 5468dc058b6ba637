"""The layers on a CUDA GPU: every backend that runs against the reference, moves, CUDA graphs."""

import pytest
import torch

from nvfp4_ops.nn import (
    MXFP8Linear,
    NVFP4Linear,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)

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
    try:
        select("cuda", backend="scaled_mm", weight_only=base.weight_only)
        backends.append("scaled_mm")
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
