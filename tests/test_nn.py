"""Linear layers (nvfp4_ops.nn), padding helpers and checkpoint converters.

CPU everywhere (small shapes); the CUDA parts skip without a GPU. The "scaled_mm" backend
cannot run here (it needs Blackwell): its backend choice is tested with a mocked device
capability, and its call into torch.nn.functional.scaled_mm is tested against an emulation
of that API's documented semantics (decode scales, 128x4 swizzled block scales, B column
major), which checks our side of the contract, not cuBLAS.
"""

import io

import pytest
import torch
from torch import nn

import nvfp4_ops
from nvfp4_ops import formats, padding
from nvfp4_ops import nn as qnn
from nvfp4_ops import reference as ref
from nvfp4_ops.nn import (
    MXFP8Linear,
    NVFP4Linear,
    apply_mxfp8_linear,
    apply_nvfp4_linear,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)

from ._utils import requires_cuda

ENV = qnn.ENV_VAR


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _linear(K, N, bias=True, dtype=torch.float32, seed=0):
    g = _gen(seed)
    lin = nn.Linear(K, N, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g) * 0.05)
        if bias:
            lin.bias.copy_(torch.randn(N, generator=g) * 0.1)
    return lin.to(dtype)


def _x(shape, dtype=torch.float32, seed=1):
    return torch.randn(shape, generator=_gen(seed)).to(dtype)


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _bytes(t):
    return t.contiguous().view(torch.uint8)


def _nvfp4_weight64(layer):
    return ref.dequantize(layer.weight_packed, layer.weight_scale, layer.weight_global_scale,
                          torch.float32).double()


def _mxfp8_weight64(layer):
    return ref.mx_dequantize(layer.weight, layer.weight_scale, "e4m3", torch.float32).double()


# --------------------------------------------------------------------------------------
# Building from float
# --------------------------------------------------------------------------------------

K, N = 80, 48  # neither a multiple of 32: the scaled_mm path pads both


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


def test_no_bias_and_backends_agree_bf16():
    lin = _linear(K, N, bias=False, dtype=torch.bfloat16)
    x = _x((5, K), torch.bfloat16)
    outs = {b: NVFP4Linear.from_float(lin, act_quant="dynamic", backend=b)(x)
            for b in ("reference", "dequant")}
    assert _rel(outs["dequant"], outs["reference"]) < 1e-2


# --------------------------------------------------------------------------------------
# scaled_mm: our side of torch.nn.functional.scaled_mm, against an emulation
# --------------------------------------------------------------------------------------


def _emulated_scaled_mm(calls):
    """F.scaled_mm with its documented semantics, on CPU, in float64; checks the layouts."""
    ST, SW = torch.nn.functional.ScalingType, torch.nn.functional.SwizzleType

    def lst(v):
        return v if isinstance(v, list) else [v]

    def operand(mat, scales, recipes, swizzles):
        rows = mat.shape[0]
        if mat.dtype == torch.float4_e2m1fn_x2:
            assert recipes == [ST.BlockWise1x16, ST.TensorWise]
            assert swizzles == [SW.SWIZZLE_32_4_4, SW.NO_SWIZZLE]
            k = mat.shape[1] * 2
            vals = ref.e2m1_decode(ref.unpack_e2m1(mat.view(torch.uint8))).double()
            sw = scales[0]
            assert sw.dtype == torch.float8_e4m3fn and sw.is_contiguous()
            kb = k // 16
            assert sw.numel() == padding.round_up(rows, 128) * padding.round_up(kb, 4)
            sw = sw.reshape(padding.round_up(rows, 128), padding.round_up(kb, 4))
            sf = ref.unswizzle_scales(sw, rows, kb).float().double()
            tensorwise = scales[1]
            assert tensorwise.dtype == torch.float32 and tensorwise.numel() == 1
            out = vals.reshape(rows, kb, 16) * sf.unsqueeze(-1) * tensorwise.double()
            return out.reshape(rows, k)
        assert mat.dtype == torch.float8_e4m3fn
        assert recipes == [ST.BlockWise1x32] and swizzles == [SW.SWIZZLE_32_4_4]
        k = mat.shape[1]
        kb = k // 32
        sw = scales[0]
        assert sw.dtype == torch.float8_e8m0fnu and sw.is_contiguous()
        assert sw.numel() == padding.round_up(rows, 128) * padding.round_up(kb, 4)
        sw = sw.view(torch.uint8).reshape(padding.round_up(rows, 128), padding.round_up(kb, 4))
        b = ref.unswizzle_scales(sw, rows, kb).double()
        out = mat.float().double().reshape(rows, kb, 32) * torch.exp2(b - 127).unsqueeze(-1)
        return out.reshape(rows, k)

    def fake(mat_a, mat_b, scale_a, scale_recipe_a, scale_b, scale_recipe_b, swizzle_a=None,
             swizzle_b=None, bias=None, output_dtype=torch.bfloat16, contraction_dim=(),
             use_fast_accum=False):
        # torch's requirements (_meta_registrations._check_scaled_mm_sizes on CUDA)
        assert mat_a.dim() == 2 and mat_b.dim() == 2
        assert mat_a.stride(1) == 1, "A must be row major"
        assert mat_b.stride(0) == 1, "B must be column major"
        assert mat_a.shape[1] % 16 == 0 and mat_b.shape[0] % 16 == 0 and mat_b.shape[1] % 16 == 0
        assert mat_a.shape[1] == mat_b.shape[0]
        a = operand(mat_a, lst(scale_a), lst(scale_recipe_a), lst(swizzle_a))
        b = operand(mat_b.t(), lst(scale_b), lst(scale_recipe_b), lst(swizzle_b))
        calls.append((mat_a.shape, mat_b.shape))
        y = a @ b.t()
        if bias is not None:
            y = y + bias.double()
        return y.to(output_dtype)

    return fake


@pytest.mark.parametrize("act_quant", ["dynamic", "static"])
def test_nvfp4_scaled_mm_call_emulated(monkeypatch, act_quant):
    calls = []
    monkeypatch.setattr(torch.nn.functional, "scaled_mm", _emulated_scaled_mm(calls))
    lin = _linear(K, N)
    layer = NVFP4Linear.from_float(lin, act_quant=act_quant, calibration=_x((8, K)))
    layer._prepare_scaled_mm()  # done by the backend choice on sm_100+
    assert layer._mm_weight.shape == (64, 48) and layer._mm_weight_scale.shape == (128, 8)
    x = _x((3, 5, K), seed=7)
    y = apply_nvfp4_linear("scaled_mm", layer, x, layer.bias)
    assert calls == [((15, 48), (48, 64))]  # K 80 -> 96 (48 bytes), N 48 -> 64
    want = apply_nvfp4_linear("reference", layer, x, layer.bias)
    assert y.shape == (3, 5, N) and _rel(y, want) < 1e-5


def test_mxfp8_scaled_mm_call_emulated(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.functional, "scaled_mm", _emulated_scaled_mm(calls))
    lin = _linear(96, N)
    layer = MXFP8Linear.from_float(lin, act_quant="dynamic")
    layer._prepare_scaled_mm()
    x = _x((9, 96), seed=8)
    y = apply_mxfp8_linear("scaled_mm", layer, x, layer.bias)
    assert calls == [((9, 96), (96, 64))]
    assert _rel(y, apply_mxfp8_linear("reference", layer, x, layer.bias)) < 1e-5


# --------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------


def _mock_gpu(monkeypatch, cap):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)


@pytest.mark.parametrize("select", [select_nvfp4_linear_backend, select_mxfp8_linear_backend])
def test_select_cpu_default(select):
    name, reasons = select("cpu")
    assert name == "reference"
    assert set(reasons) == {"scaled_mm", "dequant"}
    assert "sm_100+" in reasons["scaled_mm"] and "cpu" in reasons["scaled_mm"]


@pytest.mark.parametrize("select", [select_nvfp4_linear_backend, select_mxfp8_linear_backend])
def test_select_mocked_blackwell_and_hopper(monkeypatch, select):
    _mock_gpu(monkeypatch, (10, 0))
    assert select("cuda") == ("scaled_mm", {})
    assert select() == ("scaled_mm", {})  # the default device is the GPU
    name, reasons = select("cuda", weight_only=True)
    assert name == "dequant" and "weight-only" in reasons["scaled_mm"]
    _mock_gpu(monkeypatch, (12, 0))
    assert select("cuda")[0] == "scaled_mm"
    _mock_gpu(monkeypatch, (9, 0))
    name, reasons = select("cuda")
    assert name == "dequant"
    assert reasons == {"scaled_mm": "scaled_mm needs sm_100+, this GPU is sm_90"}
    with pytest.raises(RuntimeError, match=r"scaled_mm needs sm_100\+, this GPU is sm_90"):
        select("cuda", backend="scaled_mm")
    assert select("cuda", backend="reference") == ("reference", {})
    _mock_gpu(monkeypatch, (8, 0))
    assert select("cuda")[0] == "dequant"


def test_select_env_override(monkeypatch):
    monkeypatch.setenv(ENV, "dequant")
    assert select_nvfp4_linear_backend("cpu") == ("dequant", {})
    assert select_nvfp4_linear_backend("cpu", backend="reference")[0] == "reference"  # keyword wins
    monkeypatch.setenv(ENV, "auto")
    assert select_nvfp4_linear_backend("cpu")[0] == "reference"
    monkeypatch.setenv(ENV, "scaled_mm")
    with pytest.raises(RuntimeError, match=f"chosen by the environment variable {ENV}"):
        select_mxfp8_linear_backend("cpu")
    _mock_gpu(monkeypatch, (9, 0))
    with pytest.raises(RuntimeError, match=r"this GPU is sm_90"):
        select_nvfp4_linear_backend("cuda")
    monkeypatch.setenv(ENV, "cutlass")
    with pytest.raises(ValueError, match="unknown linear backend 'cutlass'"):
        select_nvfp4_linear_backend("cpu")
    with pytest.raises(ValueError, match="unknown linear backend 'fast'"):
        NVFP4Linear(64, 8, backend="fast")


def test_layer_backend_resolution(monkeypatch):
    lin = _linear(64, 16)
    assert NVFP4Linear.from_float(lin).active_backend == "reference"
    monkeypatch.setenv(ENV, "dequant")
    layer = NVFP4Linear.from_float(lin)
    assert layer.active_backend == "dequant" and layer.backend is None
    monkeypatch.delenv(ENV)
    # asking for scaled_mm on CPU builds (to be moved to a GPU later) but cannot run here
    layer = NVFP4Linear.from_float(lin, act_quant="dynamic", backend="scaled_mm")
    assert layer.active_backend is None
    assert "backend=unavailable (asked: scaled_mm)" in repr(layer)
    with pytest.raises(RuntimeError, match="scaled_mm needs a CUDA GPU with sm_100"):
        layer(_x((2, 64)))
    with pytest.raises(RuntimeError, match="scaled_mm needs a CUDA GPU"):
        layer.set_backend("scaled_mm")
    layer.set_backend("dequant")
    assert layer(_x((2, 64))).shape == (2, 16)
    w16 = MXFP8Linear.from_float(_linear(64, 16))
    with pytest.raises(RuntimeError, match="weight-only"):
        w16.set_backend("scaled_mm")


# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------


def test_padding_nvfp4_round_trip_and_gemm():
    w = _x((N, K), seed=11)
    gs = ref.global_scale(w)
    packed, scales = ref.quantize(w, gs)
    pp, ps = padding.pad_nvfp4_weight(packed, scales)
    assert pp.shape == (64, 48) and ps.shape == (64, 6) and ps.dtype == torch.float8_e4m3fn
    up, us = padding.unpad_nvfp4_weight(pp, ps, N, K)
    assert torch.equal(up, packed) and torch.equal(_bytes(us), _bytes(scales))
    wd = ref.dequantize(packed, scales, gs, torch.float32)
    wpd = ref.dequantize(pp, ps, gs, torch.float32)
    assert torch.equal(wpd[:N, :K], wd)
    assert not wpd[N:].any() and not wpd[:, K:].any()
    assert not torch.signbit(wpd[N:]).any()  # +0, not -0
    # activation: padding K before quantizing gives the padded quantization of x
    x = _x((5, K), seed=12)
    gsx = ref.global_scale(x)
    xp = padding.pad_activation(x, 96)
    qp, sp = ref.quantize(xp, gsx)
    q, s = ref.quantize(x, gsx)
    assert torch.equal(qp[:, : K // 2], q) and not qp[:, K // 2:].any()
    assert torch.equal(_bytes(sp[:, : K // 16]), _bytes(s))
    # padded GEMM == unpadded GEMM
    xq = ref.dequantize(qp, sp, gsx, torch.float32).double()
    y_pad = padding.unpad_output(xq @ wpd.double().t(), N)
    y = ref.quant_dequant(x, gsx).double() @ wd.double().t()
    torch.testing.assert_close(y_pad, y, rtol=1e-12, atol=1e-12)
    # aligned input: returned as is
    a, b = ref.quantize(_x((32, 64)), gs)
    assert padding.pad_nvfp4_weight(a, b)[0] is a
    assert padding.pad_activation(x, K) is x
    with pytest.raises(ValueError, match="multiple of 16"):
        padding.pad_nvfp4_weight(packed, scales, multiple=24)
    with pytest.raises(ValueError, match="scales must be linear"):
        padding.pad_nvfp4_weight(packed, ref.quantize(w, gs, True)[1])


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
def test_padding_mx_round_trip(elem):
    w = _x((N, 96), seed=13)
    data, scales = ref.mx_quantize(w, elem)
    pd, ps = padding.pad_mx_weight(data, scales, elem)
    assert pd.shape == (64, 96 if elem == "e4m3" else 48) and ps.shape == (64, 3)
    ud, us = padding.unpad_mx_weight(pd, ps, N, 96, elem)
    assert torch.equal(_bytes(ud), _bytes(data)) and torch.equal(us, scales)
    full = ref.mx_dequantize(pd, ps, elem, torch.float32)
    assert torch.equal(full[:N], ref.mx_dequantize(data, scales, elem, torch.float32))
    assert not full[N:].any()
    # 3-D (experts) weights pad the last two dims
    d3, s3 = ref.mx_quantize(_x((2, 40, 64)), elem)
    p3, q3 = padding.pad_mx_weight(d3, s3, elem)
    assert p3.shape[:2] == (2, 64) and q3.shape == (2, 64, 2)


# --------------------------------------------------------------------------------------
# Checkpoint layouts
# --------------------------------------------------------------------------------------


def _nvfp4_tensors(seed=21):
    w = _x((N, K), torch.bfloat16, seed=seed)
    gs = nvfp4_ops.global_scale(w)
    packed, scales = nvfp4_ops.quantize(w, gs)
    igs = nvfp4_ops.global_scale(_x((16, K), seed=seed + 1))
    return packed, scales, gs, igs


def test_compressed_tensors_round_trip_exact():
    packed, scales, gs, igs = _nvfp4_tensors()
    d = formats.to_compressed_tensors(packed, scales, gs, igs)
    assert set(d) == {"weight_packed", "weight_scale", "weight_global_scale", "input_global_scale"}
    assert d["weight_packed"].dtype == torch.uint8 and d["weight_packed"].shape == (N, K // 2)
    assert d["weight_scale"].dtype == torch.float8_e4m3fn
    assert d["weight_scale"].shape == (N, K // 16)
    assert d["weight_global_scale"].dtype == torch.float32
    assert d["weight_global_scale"].shape == (1,)
    back = formats.from_compressed_tensors(d)
    for a, b in zip(back, (packed, scales, gs, igs)):
        assert torch.equal(_bytes(a), _bytes(b))
    p, s, g, i = formats.from_compressed_tensors(formats.to_compressed_tensors(packed, scales, gs))
    assert i is None
    with pytest.raises(ValueError, match="scales must be linear"):
        formats.to_compressed_tensors(packed, nvfp4_ops.swizzle_scales(scales), gs)
    with pytest.raises(KeyError, match="weight_global_scale"):
        formats.from_compressed_tensors({"weight_packed": packed, "weight_scale": scales})


def test_modelopt_round_trip_and_decode_scales():
    packed, scales, gs, igs = _nvfp4_tensors()
    d = formats.to_modelopt(packed, scales, gs, igs)
    assert set(d) == {"weight", "weight_scale", "weight_scale_2", "input_scale"}
    assert d["weight_scale_2"].dtype == torch.float32 and d["weight_scale_2"].numel() == 1
    assert torch.equal(d["weight_scale_2"].reshape(1), torch.ones(1) / gs)  # decode = RN(1/gs)
    assert torch.equal(d["input_scale"].reshape(1), torch.ones(1) / igs)
    p, s, g, i = formats.from_modelopt(d)
    assert torch.equal(p, packed) and torch.equal(_bytes(s), _bytes(scales))  # bytes exact
    # the per-tensor scales come back within 1 ulp (RN(1/RN(1/gs)) need not be gs)
    for got, want in ((g, gs), (i, igs)):
        ulps = (got.view(torch.int32).long() - want.view(torch.int32).long()).abs().item()
        assert ulps <= 1
    # ModelOpt's own semantics: weight = e2m1 * fp32(scale) * weight_scale_2
    vals = ref.e2m1_decode(ref.unpack_e2m1(packed)).double().reshape(N, K // 16, 16)
    w_modelopt = (vals * s.float().double().unsqueeze(-1) * d["weight_scale_2"].double())
    w_ours = ref.dequantize(p, s, g, torch.float32).double()
    assert _rel(w_ours, w_modelopt.reshape(N, K)) < 1e-6


def test_encode_decode_ulp_statistics():
    # How often 1/(1/gs) != gs in fp32, over gs = 2688 / amax for many amax: documents the
    # claim of formats' docstring (a 1-ulp difference, some of the time, never more).
    amax = torch.logspace(-4, 4, 200001, dtype=torch.float64).float()
    gs = torch.tensor([2688.0]) / amax
    back = formats.decode_to_encode(formats.encode_to_decode(gs))
    ulps = (back.view(torch.int32).long() - gs.view(torch.int32).long()).abs()
    assert ulps.max().item() <= 1
    assert 0.05 < (ulps == 1).double().mean().item() < 0.5


def test_layers_from_both_layouts_agree():
    packed, scales, gs, igs = _nvfp4_tensors()
    bias = _x((N,), torch.float32, seed=30)
    x = _x((6, K), torch.float32, seed=31)
    for act in (None, "static"):
        kw = {} if act else {"act_quant": None}
        ct = NVFP4Linear.from_quantized(*formats.from_compressed_tensors(
            formats.to_compressed_tensors(packed, scales, gs, igs)), bias=bias, **kw)
        mo = NVFP4Linear.from_quantized(*formats.from_modelopt(
            formats.to_modelopt(packed, scales, gs, igs)), bias=bias, **kw)
        assert ct.act_quant == mo.act_quant == act
        # identical bytes; the global scales may differ by 1 ulp (see formats), so the
        # outputs agree to fp32 rounding, not necessarily bit for bit
        y_ct, y_mo = ct(x), mo(x)
        assert _rel(y_mo, y_ct) < 1e-6
        assert _rel(mo(x.bfloat16()), ct(x.bfloat16())) < 1e-2


def test_gpt_oss_mxfp4_round_trip():
    w = _x((3, N, 128), seed=40)  # [experts, N, K]
    data, scales = nvfp4_ops.mx_quantize(w, "e2m1")
    d = formats.to_gpt_oss_mxfp4(data, scales)
    assert d["blocks"].shape == (3, N, 4, 16) and d["blocks"].dtype == torch.uint8
    assert d["scales"].shape == (3, N, 4) and d["scales"].dtype == torch.uint8
    # block j of row r holds elements 32j..32j+31: low nibble = even element
    assert torch.equal(d["blocks"][1, 5, 2], data[1, 5, 32:48])
    back_d, back_s = formats.from_gpt_oss_mxfp4(d)
    assert torch.equal(back_d, data) and torch.equal(back_s, scales)
    e8 = formats.to_gpt_oss_mxfp4(data[0], scales[0].view(torch.float8_e8m0fnu))
    assert e8["scales"].dtype == torch.uint8
    with pytest.raises(ValueError, match="scales must be uint8 E8M0"):
        formats.to_gpt_oss_mxfp4(data[0], scales[0][:, :2])


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
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    assert _rel(y, eager) < 1e-5
    torch.testing.assert_close(compiled(x * 2), model(x * 2), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------


def _cuda_backends(select, weight_only=False):
    out = ["dequant", "reference"]
    try:
        select("cuda", backend="scaled_mm", weight_only=weight_only)
        out.append("scaled_mm")
    except RuntimeError:
        pass
    return out


@requires_cuda
@pytest.mark.parametrize("act_quant", [None, "dynamic", "static"])
def test_cuda_nvfp4_backends_match_reference(act_quant):
    lin = _linear(256, 160, dtype=torch.bfloat16).cuda()
    x = _x((3, 33, 256), torch.bfloat16).cuda()
    calib = x.reshape(-1, 256)
    base = NVFP4Linear.from_float(lin, act_quant=act_quant, backend="reference",
                                  calibration=calib if act_quant == "static" else None)
    want = base(x)
    assert torch.isfinite(want).all()
    for b in _cuda_backends(select_nvfp4_linear_backend, act_quant is None):
        base.set_backend(b)
        y = base(x)
        assert torch.isfinite(y).all(), b
        assert _rel(y, want) < 1e-2, b


@requires_cuda
@pytest.mark.parametrize("act_quant", [None, "dynamic"])
def test_cuda_mxfp8_backends_match_reference(act_quant):
    lin = _linear(256, 160, dtype=torch.bfloat16).cuda()
    x = _x((70, 256), torch.bfloat16).cuda()
    base = MXFP8Linear.from_float(lin, act_quant=act_quant, backend="reference")
    want = base(x)
    for b in _cuda_backends(select_mxfp8_linear_backend, act_quant is None):
        base.set_backend(b)
        y = base(x)
        assert torch.isfinite(y).all(), b
        assert _rel(y, want) < 1e-2, b


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
