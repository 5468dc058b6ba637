"""Checkpoint layouts (nvfp4_ops.formats) and layers built from each of them."""

import pytest
import torch

import nvfp4_ops
from nvfp4_ops import formats
from nvfp4_ops import reference as ref
from nvfp4_ops.nn import NVFP4Linear

from ._common import K, N, _bytes, _rel, _x


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
