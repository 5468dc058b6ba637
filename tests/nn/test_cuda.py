"""The layers on a CUDA GPU: every backend that runs against the reference, moves, CUDA graphs."""

import pytest
import torch

from nvfp4_ops import _library
from nvfp4_ops.nn import (
    MXFP4Linear,
    MXFP8Linear,
    NVFP4Linear,
    select_mxfp4_linear_backend,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)
from nvfp4_ops.nn.backends import FUSED_AUTO_ARCHS
from nvfp4_ops.nn.gemm import FUSED_MAX_M, fused_max_m, fused_path
from nvfp4_ops.reference import gemm as ref_gemm

from .._utils import requires_cuda
from ..cuda._helpers import capture_and_replay
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
def test_cuda_mxfp4_backends_match_reference():
    lin = _linear(256, 160, dtype=torch.bfloat16).cuda()
    x = _x((70, 256), torch.bfloat16).cuda()
    base = MXFP4Linear.from_float(lin, backend="reference")
    _check_backends_match_reference(base, x, select_mxfp4_linear_backend)


def _fused_want(layer, x):
    """The format's fused op on the layer's buffers (what the fused backend runs)."""
    if layer.FORMAT == "NVFP4":
        return torch.ops.nvfp4.gemm_nvfp4_w4a16(x, layer.weight_packed, layer.weight_scale,
                                                layer.weight_global_scale, layer.bias)
    return torch.ops.nvfp4.gemm_mx_w16(x, layer.weight_data, layer.weight_scale, layer.ELEM,
                                       layer.bias)


def _reference_fp32(layer, x):
    if layer.FORMAT == "NVFP4":
        return ref_gemm.gemm_nvfp4_w4a16_fp32(x, layer.weight_packed, layer.weight_scale,
                                              layer.weight_global_scale, layer.bias)
    return ref_gemm.gemm_mx_w16_fp32(x, layer.weight_data, layer.weight_scale, layer.ELEM,
                                     layer.bias)


def _skip_without_kernel(cls):
    impl, why = _library.op_implementation(cls.format_info().fused_op, "cuda")
    if impl != "cuda-kernel":
        pytest.skip(f"no fused {cls.FORMAT} kernel in this build: {why}")


@requires_cuda
@pytest.mark.parametrize("cls", [NVFP4Linear, MXFP8Linear, MXFP4Linear],
                         ids=["NVFP4", "MXFP8", "MXFP4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_fused_backend_paths(cls, dtype):
    """Weight-only schemes on sm_80..sm_90 pick "fused" by themselves; it runs the format's
    fused op up to FUSED_MAX_M[format] rows (the op's bits) and exactly the dequant backend
    above; bf16: both within 4e-3 of the fp32 reference."""
    _skip_without_kernel(cls)
    lin = _linear(1024, 256, dtype=dtype).cuda()
    layer = cls.from_float(lin)
    cap = torch.cuda.get_device_capability()
    if FUSED_AUTO_ARCHS[0] <= cap <= FUSED_AUTO_ARCHS[1]:
        assert layer.active_backend == "fused", layer.backend_reasons
    layer.set_backend("fused")
    dequant = cls.from_float(lin, backend="dequant").cuda()
    # (the wgmma kernel's crossover where it serves: NVFP4 on sm_90 with an sm_90a build)
    max_m = fused_max_m(cls.FORMAT, torch.device("cuda"), 1024)[0]
    assert max_m >= FUSED_MAX_M[cls.FORMAT]
    for m in (1, 7, max_m, max_m + 1, 300):
        x = _x((m, 1024), dtype, seed=m).cuda()
        y = layer(x)
        assert y.shape == (m, 256) and y.dtype == dtype
        if fused_path(cls.FORMAT, m, dtype, x.device, 1024)[0] == "fused":
            assert torch.equal(y, _fused_want(layer, x)), m
        else:
            assert m > max_m and torch.equal(y, dequant(x)), m
        if dtype == torch.bfloat16:
            assert _rel(y, _reference_fp32(layer, x)) < 4e-3, m
    # batch dims flatten into M; an fp32 activation takes the dequant path
    x3 = _x((2, 3, 1024), dtype).cuda()
    assert torch.equal(layer(x3).reshape(6, 256), layer(x3.reshape(6, 1024)))
    x32 = _x((2, 1024)).cuda()
    assert fused_path(cls.FORMAT, 2, torch.float32)[0] == "dequant"
    assert torch.equal(layer(x32), dequant(x32))


@requires_cuda
def test_cuda_fused_layer_cuda_graph():
    _skip_without_kernel(NVFP4Linear)
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


@requires_cuda
@pytest.mark.parametrize("cls", [NVFP4Linear, MXFP8Linear, MXFP4Linear],
                         ids=["NVFP4", "MXFP8", "MXFP4"])
def test_cuda_fused_layer_graph_capture(cls):
    """The fused backend of each format captured in a torch.cuda.CUDAGraph and replayed on
    new inputs: the bits of a plain call (batch 1 and 16, both on the fused op)."""
    _skip_without_kernel(cls)
    layer = cls.from_float(_linear(512, 128, dtype=torch.bfloat16).cuda(), backend="fused")
    xs = [_x((m, 512), torch.bfloat16, seed=m).cuda() for m in (1, 16)]

    def refill():
        for x in xs:
            x.copy_(torch.randn_like(x))

    capture_and_replay(lambda: tuple(layer(x) for x in xs), refill)
