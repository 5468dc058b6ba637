"""NVFP4Linear / MXFP8Linear: building from float, outputs against float64 and the reference,
state dict, moves, repr."""

import io

import pytest
import torch
from torch import nn

import nvfp4_ops
from nvfp4_ops import nn as qnn
from nvfp4_ops import reference as ref
from nvfp4_ops.nn import MXFP8Linear, NVFP4Linear

from ._common import K, N, _bytes, _linear, _mxfp8_weight64, _nvfp4_weight64, _rel, _x


# --------------------------------------------------------------------------------------
# Building from float
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale_method", ["amax", "mse", "hessian"])
def test_nvfp4_from_float_quantizes_like_the_op(scale_method):
    lin = _linear(K, N, dtype=torch.bfloat16)
    calib = _x((3, 7, K), seed=5)
    layer = NVFP4Linear.from_float(lin, scale_method=scale_method,
                                   calibration=calib if scale_method == "hessian" else None)
    w = lin.weight.detach()
    gs = nvfp4_ops.global_scale(w)
    h = nvfp4_ops.hessian_blocks(calib.reshape(-1, K)) if scale_method == "hessian" else None
    packed, scales = nvfp4_ops.quantize(w, gs, scale_method=scale_method, hessian=h)
    assert torch.equal(layer.weight_packed, packed)
    assert torch.equal(_bytes(layer.weight_scale), _bytes(scales))
    assert torch.equal(layer.weight_global_scale, gs)
    assert layer.weight_packed.shape == (N, K // 2) and layer.weight_scale.shape == (N, K // 16)
    assert layer.scale_method == scale_method
    assert torch.equal(layer.bias, lin.bias.detach())


def test_nvfp4_from_float_static_scale_and_errors():
    lin = _linear(K, N)
    calib = [_x((5, K), seed=s) * (s + 1) for s in range(3)]
    layer = NVFP4Linear.from_float(lin, act_quant="static", calibration=calib)
    amax = torch.cat(calib).abs().max()
    assert torch.equal(layer.input_global_scale,
                       (torch.tensor([2688.0]) / amax.reshape(1)).float())
    given = torch.tensor([3.0])
    assert NVFP4Linear.from_float(lin, act_quant="static",
                                  input_global_scale=given).input_global_scale.item() == 3.0
    with pytest.raises(ValueError, match="needs input_global_scale= or calibration="):
        NVFP4Linear.from_float(lin, act_quant="static")
    with pytest.raises(ValueError, match="hessian= or calibration="):
        NVFP4Linear.from_float(lin, scale_method="hessian")
    with pytest.raises(ValueError, match="only used with act_quant='static'"):
        NVFP4Linear.from_float(lin, act_quant="dynamic", input_global_scale=given)
    with pytest.raises(ValueError, match="multiple of 16, got 40"):
        NVFP4Linear(40, 8)
    with pytest.raises(ValueError, match="act_quant must be one of"):
        NVFP4Linear(64, 8, act_quant="yes")


@pytest.mark.parametrize("rounding", ["rceil", "floor"])
def test_mxfp8_from_float_quantizes_like_the_op(rounding):
    lin = _linear(96, N, dtype=torch.bfloat16)
    layer = MXFP8Linear.from_float(lin, rounding=rounding, scale_method="mse")
    data, scales = nvfp4_ops.mx_quantize(lin.weight.detach(), "e4m3", rounding=rounding,
                                         scale_method="mse")
    assert torch.equal(_bytes(layer.weight), _bytes(data))
    assert torch.equal(layer.weight_scale, scales) and layer.weight_scale.dtype == torch.uint8
    assert layer.rounding == rounding
    with pytest.raises(ValueError, match="does not exist for MX formats"):
        MXFP8Linear(96, 8, act_quant="static")
    with pytest.raises(ValueError, match="multiple of 32, got 80"):
        MXFP8Linear(80, 8)


# --------------------------------------------------------------------------------------
# Outputs against float64
# --------------------------------------------------------------------------------------

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("backend", ["reference", "dequant"])
@pytest.mark.parametrize("act_quant", [None, "dynamic", "static"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nvfp4_outputs_vs_float64(backend, act_quant, dtype):
    lin = _linear(K, N, dtype=dtype)
    x = _x((2, 3, K), dtype, seed=2) * 2
    calib = _x((16, K), seed=3)
    layer = NVFP4Linear.from_float(lin, act_quant=act_quant, backend=backend,
                                   calibration=calib if act_quant == "static" else None)
    assert layer.active_backend == backend
    y = layer(x)
    assert y.shape == (2, 3, N) and y.dtype == dtype
    assert torch.isfinite(y).all()
    x2 = x.reshape(-1, K)
    if act_quant is not None:
        gs_x = layer.input_global_scale if act_quant == "static" else ref.global_scale(x2)
        x2 = ref.quant_dequant(x2, gs_x)
    want = (x2.double() @ _nvfp4_weight64(layer).t() + lin.bias.double()).reshape(2, 3, N)
    assert _rel(y, want) < TOL[dtype]
    # and the quantized layer approximates the float one (E2M1: ~10 % per weight)
    assert _rel(y, lin(x)) < (0.15 if act_quant is None else 0.3)


@pytest.mark.parametrize("backend", ["reference", "dequant"])
@pytest.mark.parametrize("act_quant", [None, "dynamic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mxfp8_outputs_vs_float64(backend, act_quant, dtype):
    lin = _linear(96, N, dtype=dtype)
    x = _x((7, 96), dtype, seed=4)
    layer = MXFP8Linear.from_float(lin, act_quant=act_quant, rounding="floor", backend=backend)
    y = layer(x)
    assert y.shape == (7, N) and torch.isfinite(y).all()
    x2 = x
    if act_quant is not None:
        x2 = ref.mx_dequantize(*ref.mx_quantize(x, "e4m3", "floor"), "e4m3", dtype)
    want = x2.double() @ _mxfp8_weight64(layer).t() + lin.bias.double()
    assert _rel(y, want) < TOL[dtype]
    assert _rel(y, lin(x)) < 0.05


@pytest.mark.parametrize("act_quant", [None, "dynamic", "static"])
def test_nvfp4_reference_backend_is_the_reference_bitwise(act_quant):
    # the reference backend runs the ops (the reference on CPU): weight dequantized to fp32,
    # fp32 matmul, one cast; bit for bit what the reference functions give
    lin = _linear(K, N, dtype=torch.bfloat16)
    layer = NVFP4Linear.from_float(lin, act_quant=act_quant, backend="reference",
                                   calibration=_x((16, K), seed=3))
    x = _x((2, 5, K), torch.bfloat16, seed=6)
    x2 = x.reshape(-1, K)
    if act_quant is not None:
        gs_x = layer.input_global_scale if act_quant == "static" else ref.global_scale(x2)
        x2 = ref.quant_dequant(x2, gs_x)
    w = ref.dequantize(layer.weight_packed, layer.weight_scale, layer.weight_global_scale,
                       torch.float32)
    want = ((x2.float() @ w.t() + lin.bias.float()).to(torch.bfloat16)).reshape(2, 5, N)
    assert torch.equal(_bytes(layer(x)), _bytes(want))


@pytest.mark.parametrize("act_quant", [None, "dynamic"])
def test_mxfp8_reference_backend_is_the_reference_bitwise(act_quant):
    lin = _linear(96, N, dtype=torch.float16)
    layer = MXFP8Linear.from_float(lin, act_quant=act_quant, rounding="floor",
                                   backend="reference")
    x = _x((7, 96), torch.float16, seed=9)
    x2 = x
    if act_quant is not None:
        x2 = ref.mx_dequantize(*ref.mx_quantize(x, "e4m3", "floor"), "e4m3", torch.float16)
    w = ref.mx_dequantize(layer.weight, layer.weight_scale, "e4m3", torch.float32)
    want = (x2.float() @ w.t() + lin.bias.float()).to(torch.float16)
    assert torch.equal(_bytes(layer(x)), _bytes(want))


def test_no_bias_and_backends_agree_bf16():
    lin = _linear(K, N, bias=False, dtype=torch.bfloat16)
    x = _x((5, K), torch.bfloat16)
    outs = {b: NVFP4Linear.from_float(lin, act_quant="dynamic", backend=b)(x)
            for b in ("reference", "dequant")}
    assert _rel(outs["dequant"], outs["reference"]) < 1e-2


# state_dict, moves, repr
# --------------------------------------------------------------------------------------


def _layers():
    lin = _linear(K, N, dtype=torch.bfloat16)
    lin96 = _linear(96, N, bias=False, dtype=torch.bfloat16)
    calib = _x((8, K))
    return [
        (NVFP4Linear.from_float(lin, scale_method="mse"), dict(bias=True)),
        (NVFP4Linear.from_float(lin, act_quant="dynamic"), dict(bias=True, act_quant="dynamic")),
        (NVFP4Linear.from_float(lin, act_quant="static", calibration=calib),
         dict(bias=True, act_quant="static")),
        (MXFP8Linear.from_float(lin96, rounding="floor"), dict(bias=False, rounding="floor")),
        (MXFP8Linear.from_float(lin96, act_quant="dynamic"),
         dict(bias=False, act_quant="dynamic")),
    ]


def test_state_dict_round_trip():
    for layer, kw in _layers():
        sd = layer.state_dict()
        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        sd2 = torch.load(buf, weights_only=True)
        if isinstance(layer, NVFP4Linear):
            want = {"weight_packed", "weight_scale", "weight_global_scale"}
            want |= {"input_global_scale"} if layer.act_quant == "static" else set()
        else:
            want = {"weight", "weight_scale"}
        want |= {"bias"} if kw["bias"] else set()
        assert set(sd2) == want
        new = type(layer)(layer.in_features, layer.out_features, **kw)
        new.load_state_dict(sd2)
        for name in sd:
            assert sd[name].dtype == new.state_dict()[name].dtype
            assert torch.equal(_bytes(sd[name]), _bytes(new.state_dict()[name])), name
        x = _x((4, layer.in_features), torch.bfloat16)
        assert torch.equal(new(x), layer(x))


def test_load_raw_bytes_and_scalar_scales():
    layer, _ = _layers()[2]
    sd = {k: v.clone() for k, v in layer.state_dict().items()}
    sd["weight_scale"] = sd["weight_scale"].view(torch.uint8)  # as some tools store it
    sd["weight_global_scale"] = sd["weight_global_scale"].reshape(())
    new = NVFP4Linear(K, N, act_quant="static")
    new.load_state_dict(sd)
    assert new.weight_scale.dtype == torch.float8_e4m3fn
    assert torch.equal(_bytes(new.weight_scale), _bytes(layer.weight_scale))
    assert new.weight_global_scale.shape == (1,)


def test_load_e8m0_scales_and_quantize_linears():
    m, kw = _layers()[3]
    sd = dict(m.state_dict())
    sd["weight_scale"] = sd["weight_scale"].view(torch.float8_e8m0fnu)
    new = MXFP8Linear(96, N, **kw)
    new.load_state_dict(sd)
    assert torch.equal(new.weight_scale, m.weight_scale)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 4))
    qnn.quantize_linears(model, "nvfp4", skip={"2"}, act_quant="dynamic")
    assert isinstance(model[0], NVFP4Linear) and model[0].act_quant == "dynamic"
    assert type(model[2]) is nn.Linear and type(model[3]) is nn.Linear  # skipped; K=8 too small
    assert model(_x((3, 64))).shape == (3, 4)


def test_dtype_moves_keep_the_format():
    layer, _ = _layers()[2]
    x = _x((4, K), torch.float16)
    before = {k: _bytes(v).clone() for k, v in layer.state_dict().items() if k != "bias"}
    layer.half()
    layer.to(torch.float32)
    assert layer.bias.dtype == torch.float32
    assert layer.weight_scale.dtype == torch.float8_e4m3fn
    assert layer.weight_global_scale.dtype == torch.float32
    for k, v in before.items():
        assert torch.equal(_bytes(layer.state_dict()[k]), v), k
    assert layer(x).dtype == torch.float16
    m, _ = _layers()[3]
    m.to(torch.bfloat16)
    assert m.weight.dtype == torch.float8_e4m3fn and m.weight_scale.dtype == torch.uint8


def test_extra_repr():
    reprs = [repr(layer) for layer, _ in _layers()]
    assert "format=NVFP4" in reprs[0] and "scheme=W4A16 (weight-only)" in reprs[0]
    assert "scale_method=mse" in reprs[0] and "backend=reference" in reprs[0]
    assert "scheme=W4A4 (dynamic activation global scale)" in reprs[1]
    assert "scheme=W4A4 (static activation global scale)" in reprs[2]
    assert "format=MXFP8" in reprs[3] and "rounding=floor" in reprs[3] and "W8A16" in reprs[3]
    assert "scheme=W8A8" in reprs[4]
    assert f"in_features={K}, out_features={N}, bias=True" in reprs[0]
