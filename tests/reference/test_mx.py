"""MXFP8 / MXFP4 (reference.mx) against the literal oracle, scale bytes, axis=-2, round trips."""

from __future__ import annotations

import math

import pytest
import torch

from nvfp4_ops import reference as ref

from ._oracle import (
    DTYPES,
    E8M0,
    F32,
    assert_bits_equal,
    hexbytes,
    nextafter,
    oracle_mx,
    random_blocks,
)


@pytest.mark.parametrize(
    "rounding, scale, data",
    [("floor", 127, "7E 85 2A 38 C4 4F 6C F8"), ("rceil", 128, "78 83 22 30 BC 47 64 F0")],
)
def test_mxfp8_hand_vector(rounding, scale, data):
    x = torch.tensor([[500, -0.01, 0.3, 1, -3, 7.5, 100, -250] * 4], dtype=F32)
    d, s = ref.mx_quantize(x, "e4m3", rounding)
    assert d.dtype == torch.float8_e4m3fn and s.dtype == torch.uint8
    assert s.tolist() == [[scale]]
    assert hexbytes(d) == " ".join([data] * 4)


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mx_quantize_matches_oracle(elem, rounding, dtype):
    x = random_blocks(256, seed=11, block=32)
    x[::17] *= 1e-38  # fp32/bf16: denormal amax (floor gives b = 0); fp16: zero blocks
    x[3, 5], x[4, 0], x[5] = math.nan, math.inf, 0.0
    x = x.to(dtype)
    data, scales = ref.mx_quantize(x, elem, rounding)
    b, d = oracle_mx(x.float().numpy(), elem, rounding)
    assert torch.equal(scales[:, 0], torch.from_numpy(b))
    got = data.view(torch.uint8) if elem == "e4m3" else ref.unpack_e2m1(data)
    assert torch.equal(got, torch.from_numpy(d))


@pytest.mark.parametrize(
    "elem, amax, rounding, byte",
    [
        ("e4m3", 448.0, "rceil", 127),
        ("e4m3", nextafter(448.0, 1e9), "rceil", 128),  # RN(amax/448) = 1 + 2^-23
        ("e4m3", nextafter(448.0, 0.0), "rceil", 127),
        ("e2m1", 6.0, "rceil", 127),
        ("e2m1", nextafter(6.0, 1e9), "rceil", 128),
        ("e4m3", 511.0, "floor", 127),
        ("e4m3", 512.0, "floor", 128),
        ("e2m1", 7.5, "floor", 127),
        ("e4m3", 1e-39, "floor", 0),
        ("e4m3", 1e-39, "rceil", 1),  # RN(amax/448) is a denormal: rounds up to 2^-126
        ("e4m3", 0.0, "rceil", 0),
        ("e4m3", 0.0, "floor", 0),
    ],
)
def test_mx_scale_bytes(elem, amax, rounding, byte):
    x = torch.zeros(1, 32)
    x[0, 7] = -amax
    x[0, 8] = amax / 3
    _, s = ref.mx_quantize(x, elem, rounding)
    assert s.item() == byte


def test_mx_floor_clips_and_rceil_does_not():
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1] = 7.5, -7.5
    d, s = ref.mx_quantize(x, "e2m1", "floor")
    assert s.item() == 127 and ref.unpack_e2m1(d)[0, :2].tolist() == [0x7, 0xF]  # 7.5 -> 6
    d, s = ref.mx_quantize(x, "e2m1", "rceil")
    assert s.item() == 128 and ref.unpack_e2m1(d)[0, :2].tolist() == [0x6, 0xE]  # 3.75 -> 4


def test_mx_non_finite_blocks():
    x = torch.ones(2, 64)
    x[0, 40], x[1, 0] = math.nan, -math.inf
    for elem, ok in (("e4m3", 119), ("e2m1", 125)):  # amax 1: 1/448 -> 2^-8, 1/6 -> 2^-2
        d, s = ref.mx_quantize(x, elem)
        assert s.tolist() == [[ok, 255], [255, ok]]
        raw = d.view(torch.uint8)
        half = raw.shape[-1] // 2
        assert (raw[0, half:] == 0).all() and (raw[1, :half] == 0).all()
        out = ref.mx_dequantize(d, s, elem, F32)
        assert torch.isnan(out[0, 32:]).all() and torch.isnan(out[1, :32]).all()
        assert (out[0, :32] == 1).all() and (out[1, 32:] == 1).all()


def test_mx_dequantize_extreme_scales():
    data = torch.full((1, 32), 0x38, dtype=torch.uint8).view(torch.float8_e4m3fn)  # 1.0
    for b, expect in [(0, 2.0**-127), (1, 2.0**-126), (127, 1.0), (254, 2.0**127)]:
        out = ref.mx_dequantize(data, torch.tensor([[b]], dtype=torch.uint8), "e4m3", F32)
        assert (out == expect).all(), b
    out = ref.mx_dequantize(data, torch.tensor([[255]], dtype=torch.uint8), "e4m3", torch.bfloat16)
    assert torch.isnan(out).all()
    if E8M0 is not None:
        s = torch.tensor([[130]], dtype=torch.uint8)
        assert torch.equal(ref.mx_dequantize(data, s.view(E8M0), "e4m3", F32), ref.mx_dequantize(data, s, "e4m3", F32))


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("shape", [(64, 96), (2, 96, 32)])
def test_mx_axis_minus2_is_transpose(elem, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    for swizzle in (False, True):
        a = ref.mx_quantize(x, elem, "floor", swizzle, axis=-2)
        b = ref.mx_quantize(x.transpose(-1, -2).contiguous(), elem, "floor", swizzle, axis=-1)
        for u, v in zip(a, b):
            assert_bits_equal(u, v)
    assert_bits_equal(ref.mx_quantize(x, elem, axis=x.dim() - 2)[0], ref.mx_quantize(x, elem, axis=-2)[0])


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mx_round_trip_and_swizzle(elem, dtype):
    g = torch.Generator().manual_seed(8)
    e = 20 if dtype != torch.float16 else 6
    x = (torch.randn(3, 130, 64, generator=g) * torch.exp2(torch.randint(-e, e, (3, 130, 1), generator=g).float())).to(dtype)
    data, s = ref.mx_quantize(x, elem)
    shape = (3, 130, 64 if elem == "e4m3" else 32)
    assert data.shape == shape and s.shape == (3, 130, 2)
    out = ref.mx_dequantize(data, s, elem, F32)
    step = torch.exp2(s.float() - 127).repeat_interleave(32, dim=-1)
    xf = x.float()
    if elem == "e4m3":  # E4M3: half an ulp is 2^-4 relative, 2^-10 absolute in the subnormals
        bound = torch.maximum(xf.abs() * 2.0**-4, step * 2.0**-10)
    else:  # E2M1: half a step is at most a quarter of max(|y|, 1)
        bound = 0.25 * torch.maximum(xf.abs(), step)
    assert ((xf - out).abs() <= bound).all()
    d_sw, s_sw = ref.mx_quantize(x, elem, swizzle=True)
    assert torch.equal(d_sw.view(torch.uint8), data.view(torch.uint8))
    assert s_sw.shape == (3, 256, 4) and torch.equal(s_sw, ref.swizzle_scales(s))
    assert_bits_equal(ref.mx_dequantize(d_sw, s_sw, elem, dtype, swizzled=True), ref.mx_dequantize(data, s, elem, dtype))
