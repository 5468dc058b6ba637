"""The scaled_mm backend's side of torch.nn.functional.scaled_mm.

It cannot run here (it needs Blackwell): its call is tested against an emulation of that API's
documented semantics (decode scales, 128x4 swizzled block scales, B column major), which checks
our side of the contract, not cuBLAS."""

import pytest
import torch

from nvfp4_ops import reference as ref
from nvfp4_ops.nn import MXFP8Linear, NVFP4Linear, apply_mxfp8_linear, apply_nvfp4_linear, padding

from ._common import K, N, _linear, _rel, _x


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
