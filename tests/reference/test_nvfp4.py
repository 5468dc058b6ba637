"""NVFP4 (reference.nvfp4): hand vectors from the spec, hand-derived cases, the literal
oracle, batching, strides, global_scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nvfp4_ops import reference as ref

from ._oracle import (
    DTYPES,
    F32,
    assert_bits_equal,
    f32,
    hexbytes,
    oracle_nvfp4,
    one_block,
    random_blocks,
)


def test_nvfp4_hand_vector_gs1():
    x = f32(0).new_tensor(
        [[0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5, 6]]
    )
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(packed) == "00 22 44 66 A8 CA EC 7E"
    assert scales.dtype == torch.float8_e4m3fn and hexbytes(scales) == "38"


def test_nvfp4_hand_vector_bf16():
    v = [0, -0.0, 0.10009765625, -0.25, 0.30078125, 0.5, -0.75, 1, 1.25, -1.6015625, 2,
         2.40625, -3.296875, 1.1015625, -0.6015625, 0.8984375]
    x = torch.tensor([v], dtype=torch.bfloat16)
    gs = torch.full((1,), 2688.0) / torch.full((1,), 10.0)
    assert gs.item() == np.float32(268.8)
    packed, scales = ref.quantize(x, gs)
    assert hexbytes(scales) == "71"
    assert hexbytes(packed) == "80 90 21 4B D4 66 4F 3A"


@pytest.mark.parametrize(
    "vmax, byte, first, dq",
    [
        (6 * 2.0**-8, 0x02, 0xD7, (6 * 2.0**-8, -3 * 2.0**-8)),  # sf = 2^-8: y = 6, -3
        (21 * 2.0**-9, 0x04, 0xD7, (6 * 2.0**-7, -3 * 2.0**-7)),  # 3.5 * 2^-9 ties to 4 * 2^-9
        (15 * 2.0**-9, 0x02, 0xE7, (6 * 2.0**-8, -4 * 2.0**-8)),  # 2.5 * 2^-9 ties to 2 * 2^-9
        (6 * 2.0**-9 * 0.4, 0x00, 0x80, (0.0, -0.0)),  # 0.4 * 2^-9 underflows: osc = 0
    ],
)
def test_nvfp4_subnormal_scale(vmax, byte, first, dq):
    # gs = 1: sf = E4M3(RN(vmax * RN(1/6))) is an E4M3 subnormal (k * 2^-9).
    x = one_block(vmax, -vmax / 2)
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(scales) == f"{byte:02X}"
    assert hexbytes(packed) == f"{first:02X}" + " 00" * 7
    out = ref.dequantize(packed, scales, f32(1.0), F32)
    assert_bits_equal(out[0, :2], torch.tensor(dq, dtype=F32))


def test_nvfp4_scale_uses_rn_of_one_sixth():
    # v = 0x40E3FFFF (7.1249995): RN(v * RN(1/6)) is exactly the E4M3 midpoint 1.1875 and
    # ties to the even byte 0x3A (1.25); RN(v / 6) would be just below it and give 0x39.
    v = torch.tensor([0x40E3FFFF], dtype=torch.int32).view(F32).item()
    packed, scales = ref.quantize(one_block(v, -v), f32(1.0))
    assert hexbytes(scales) == "3A" and hexbytes(packed)[:2] == "F7"


def test_nvfp4_zero_times_inf_takes_sign_of_x():
    # gs = 2^126, vmax = 6 * 2^-135: sf = 2^-9, RN(sf * RN(1/gs)) = 2^-135 and osc = +inf.
    # RN(+-0 * inf) is NaN: magnitude code 0 with the sign of x (not the device's NaN sign).
    gs = f32(2.0**126)
    x = one_block(6 * 2.0**-135, 0.0, -0.0, -3 * 2.0**-135)
    packed, scales = ref.quantize(x, gs)
    assert hexbytes(scales) == "01" and hexbytes(packed)[:5] == "07 F8"
    sf, codes, _ = oracle_nvfp4(x.numpy(), 2.0**126)
    assert codes[0, [0, 3]].tolist() == [0x7, 0xF]  # the oracle agrees where y is not NaN
    dq = ref.dequantize(packed, scales, gs, F32)
    assert_bits_equal(dq[0, :4], torch.tensor([6 * 2.0**-135, 0.0, -0.0, -6 * 2.0**-135]))


def test_nvfp4_saturating_scale():
    x = one_block(6000.0, -100.0, 3.0)
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(scales) == "7E"
    # osc = RN(1/448): 6000 -> 13.4 -> 6; -100 -> -0.223 -> -0 (0x8); 3 -> 0
    assert hexbytes(packed)[:5] == "87 00"
    dq = ref.dequantize(packed, scales, f32(1.0), F32)
    assert dq[0, 0].item() == 2688.0 and dq[0, 1].item() == 0.0 and torch.signbit(dq[0, 1])


def test_nvfp4_zero_blocks_keep_sign():
    x = one_block(0.0, -0.0, 0.0, -0.0)
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(scales) == "00" and hexbytes(packed) == "80 80 00 00 00 00 00 00"
    dq = ref.dequantize(packed, scales, f32(1.0), F32)
    assert torch.equal(dq, torch.zeros_like(dq)) and torch.signbit(dq[0, 1])


def test_nvfp4_non_finite_blocks():
    x = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    x[0, 3], x[0, 20], x[1, 15] = math.nan, math.inf, -math.inf
    gs = f32(100.0)
    packed, scales = ref.quantize(x, gs)
    s = scales.view(torch.uint8)
    assert s[0].tolist() == [0x7F, 0x7F] and s[1, 0].item() == 0x7F
    assert (packed[0] == 0).all() and (packed[1, :8] == 0).all()
    assert torch.equal(packed[1, 8:], ref.quantize(x[1:, 16:], gs)[0][0])
    dq = ref.dequantize(packed, scales, gs, F32)
    assert torch.isnan(dq[0]).all() and torch.isnan(dq[1, :16]).all() and torch.isfinite(dq[1, 16:]).all()
    # NaN anywhere makes the global scale NaN, and then every scale NaN.
    gsn = ref.global_scale(x)
    assert torch.isnan(gsn).all()
    p2, s2 = ref.quantize(x, gsn)
    assert (s2.view(torch.uint8) == 0x7F).all() and (p2 == 0).all()


def test_nvfp4_global_scale_inf_quantizes_as_before():
    # An explicit gs = +inf (global_scale itself never returns it for finite input). Zero
    # block: RN(inf * 0) = NaN -> 0x7F (codes 0); other blocks: sf = 448 and
    # RN(448 * RN(1/inf)) = 0, so osc = 0: codes +-0, dequant 0.
    x = torch.zeros(1, 32)
    x[0, 16:] = torch.linspace(-1e-37, 1e-37, 16)
    gs = f32(math.inf)
    packed, scales = ref.quantize(x, gs)
    assert hexbytes(scales) == "7F 7E"
    assert hexbytes(packed) == "00 " * 8 + "88 88 88 88 00 00 00 00"
    dq = ref.dequantize(packed, scales, gs, F32)
    assert torch.isnan(dq[0, :16]).all() and (dq[0, 16:] == 0).all()


FLT_MAX = float(np.finfo(np.float32).max)
FLT_TRUE_MIN = float(np.finfo(np.float32).smallest_subnormal)


@pytest.mark.parametrize(
    "amax", [1e-37, 7.8e-36, FLT_TRUE_MIN, 1e-40, np.float32(2688) / np.float32(FLT_MAX) / 2]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_global_scale_tiny_amax_gives_flt_max(amax, dtype):
    # docs/spec.md section 2: a finite amax > 0 whose RN(2688 / amax) overflows gives FLT_MAX.
    x = torch.zeros(2, 32, dtype=dtype)
    x[0, 3] = -float(amax)
    x[1, 20] = float(amax) / 2
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(2688) / np.float32(amax))  # the division overflows
    gs = ref.global_scale(x)
    if x[0, 3].item() == 0:  # bfloat16 has no 2^-149: the tensor is zero, gs = 1
        assert dtype == torch.bfloat16 and gs.item() == 1.0
        return
    assert gs.dtype == F32 and gs.item() == FLT_MAX
    packed, scales = ref.quantize(x, gs)
    sf = scales.view(torch.uint8)
    assert not ((sf & 0x7F) == 0x7F).any()  # no NaN scale
    dq = ref.dequantize(packed, scales, gs, dtype)
    assert torch.isfinite(dq).all()
    assert_bits_equal(ref.quant_dequant(x, gs), dq)
    if amax >= 1e-37:  # normal scales: the largest element keeps its value to a few %
        assert dq[0, 3].item() < 0 and abs(dq[0, 3].item() / x[0, 3].item() - 1) < 0.05


def test_global_scale_tiny_amax_boundary():
    # The smallest amax whose division does not overflow keeps RN(2688 / amax); the next
    # smaller fp32 gives FLT_MAX (never inf).
    lo = np.float32(2688) / np.float32(FLT_MAX)
    a = np.float32(lo)
    while np.isinf(np.float32(2688) / a):
        a = np.nextafter(a, np.float32(1))
    below = np.nextafter(a, np.float32(0))
    assert ref.global_scale(f32(float(a))).item() == float(np.float32(2688) / a)
    assert ref.global_scale(f32(float(below))).item() == FLT_MAX
    assert ref.global_scale(f32(-float(below))).item() == FLT_MAX


def test_global_scale_values():
    assert ref.global_scale(torch.zeros(3, 16)).tolist() == [1.0]
    assert ref.global_scale(torch.zeros(0, 16)).tolist() == [1.0]
    x = torch.tensor([[[1.0, -10.0], [3.0, 2.0]]], dtype=torch.bfloat16)
    gs = ref.global_scale(x)
    assert gs.dtype == F32 and gs.shape == (1,) and gs.item() == np.float32(268.8)
    assert ref.global_scale(torch.tensor([1.0, math.inf])).item() == 0.0
    assert math.isnan(ref.global_scale(torch.tensor([1.0, math.nan])).item())
    assert ref.global_scale(torch.tensor([-7.0])).item() == np.float32(2688) / np.float32(7)


# --------------------------------------------------------------------------------------
# NVFP4 against the literal oracle, batching, strides
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gs", [1.0, 268.8, 3.0e-5, 7.5e4])
def test_nvfp4_quantize_matches_oracle(dtype, gs):
    x = random_blocks(512, seed=int(gs * 7) % 1000).to(dtype)
    x[5, 3] = math.nan
    x[9, 0] = -math.inf
    x[11] = 0
    packed, scales = ref.quantize(x, f32(gs))
    sf, codes, dq = oracle_nvfp4(x.float().numpy(), gs)
    assert torch.equal(scales.view(torch.uint8)[:, 0], torch.from_numpy(sf))
    assert torch.equal(ref.unpack_e2m1(packed), torch.from_numpy(codes))
    out = ref.dequantize(packed, scales, f32(gs), F32)
    want = torch.from_numpy(dq.astype(np.float32))
    assert torch.equal(torch.isnan(out), torch.isnan(want))  # NaN payloads may differ
    assert_bits_equal(out.nan_to_num(0.0), want.nan_to_num(0.0))


def test_nvfp4_3d_per_batch_global_scale():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, 64, generator=g) * torch.tensor([1e-3, 1.0, 50.0]).view(3, 1, 1)
    gs = torch.cat([ref.global_scale(x[b]) for b in range(3)])
    packed, scales = ref.quantize(x, gs)
    assert packed.shape == (3, 40, 32) and scales.shape == (3, 40, 4)
    for b in range(3):
        pb, sb = ref.quantize(x[b], gs[b : b + 1])
        assert torch.equal(packed[b], pb) and torch.equal(scales[b].view(torch.uint8), sb.view(torch.uint8))
        assert_bits_equal(ref.dequantize(packed, scales, gs, F32)[b], ref.dequantize(pb, sb, gs[b : b + 1], F32))
    # One scale for all batches equals the 2-D result on the flattened rows.
    p1, s1 = ref.quantize(x, gs[1:2])
    p2, s2 = ref.quantize(x.reshape(120, 64), gs[1:2].reshape(1, 1))
    assert torch.equal(p1.reshape(120, 32), p2) and torch.equal(s1.view(torch.uint8).reshape(120, 4), s2.view(torch.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_input_same_bytes(dtype):
    g = torch.Generator().manual_seed(4)
    base = torch.randn(64, 96, generator=g).to(dtype)
    xt = base.t()  # [96, 64], non-contiguous
    gs = ref.global_scale(xt)
    for a, b in zip(ref.quantize(xt, gs), ref.quantize(xt.contiguous(), gs)):
        assert_bits_equal(a, b)
    assert_bits_equal(ref.quant_dequant(xt, gs), ref.quant_dequant(xt.contiguous(), gs))
    x3 = torch.randn(64, 2, 64, generator=g).to(dtype).permute(1, 0, 2)[:, ::2]
    for a, b in zip(ref.quantize(x3, gs, scale_method="mse"), ref.quantize(x3.contiguous(), gs, scale_method="mse")):
        assert_bits_equal(a, b)
    for axis in (-1, -2):
        for a, b in zip(ref.mx_quantize(xt, axis=axis), ref.mx_quantize(xt.contiguous(), axis=axis)):
            assert_bits_equal(a, b)


def _magnitude_input(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if dtype == F32:
        x = x * torch.pow(10.0, torch.empty(shape[:-1] + (1,)).uniform_(-30, 30, generator=g))
    else:
        x = x * torch.pow(2.0, torch.randint(-8, 8, shape[:-1] + (1,), generator=g).float())
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 16), (90, 48), (2, 33, 80)])
@pytest.mark.parametrize("gs_kind", ["tensor", "tiny", "nonfinite"])
def test_quant_dequant_bit_identical(dtype, shape, gs_kind):
    x = _magnitude_input(shape, dtype, seed=sum(shape))
    if gs_kind == "tiny":  # amax < 2688 / FLT_MAX: gs = inf (fp16: subnormal inputs instead)
        x = (x.float().sign() * 1e-37 if dtype != torch.float16 else x.float() * 2.0**-20).to(dtype)
    if gs_kind == "nonfinite":
        x.view(-1)[0] = math.inf
        x.view(-1)[-1] = math.nan
    if len(shape) == 3:
        gs = torch.cat([ref.global_scale(x[b].nan_to_num(posinf=1.0)) for b in range(shape[0])])
    else:
        gs = ref.global_scale(x.nan_to_num(posinf=1.0))
    packed, scales = ref.quantize(x, gs)
    expect = ref.dequantize(packed, scales, gs, x.dtype)
    got = ref.quant_dequant(x, gs)
    assert_bits_equal(got, expect)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dequantize_error_bound(dtype):
    # Blocks whose scale is an E4M3 normal: |x - dq| <= 0.25 * max(|x|, s) (half a step).
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(64, 256, generator=g) * torch.exp2(torch.randint(-5, 5, (64, 1), generator=g).float())).to(dtype)
    gs = ref.global_scale(x)
    packed, scales = ref.quantize(x, gs)
    dq = ref.dequantize(packed, scales, gs, F32)
    s = (ref.e4m3_to_fp32(scales) / gs).repeat_interleave(16, dim=-1)
    normal = (scales.view(torch.uint8) >= 0x08).repeat_interleave(16, dim=-1)
    xf = x.float()
    bound = 0.25 * torch.maximum(xf.abs(), s) * (1 + 1e-5)
    assert normal.float().mean() > 0.9
    assert ((xf - dq).abs() <= bound)[normal].all()


def test_swizzled_quantize_and_dequantize():
    g = torch.Generator().manual_seed(6)
    for shape in [(130, 80), (2, 90, 48)]:
        x = torch.randn(*shape, generator=g)
        gs = ref.global_scale(x) if len(shape) == 2 else torch.tensor([0.5, 2.0])
        p_lin, s_lin = ref.quantize(x, gs)
        p_sw, s_sw = ref.quantize(x, gs, swizzle=True)
        assert torch.equal(p_lin, p_sw)
        assert s_sw.dtype == torch.float8_e4m3fn
        assert torch.equal(s_sw.view(torch.uint8), ref.swizzle_scales(s_lin).view(torch.uint8))
        Mp, Kp = -(-shape[-2] // 128) * 128, -(-shape[-1] // 16 // 4) * 4
        assert s_sw.shape == shape[:-2] + (Mp, Kp)
        assert_bits_equal(ref.dequantize(p_sw, s_sw, gs, torch.bfloat16, swizzled=True),
                          ref.dequantize(p_lin, s_lin, gs, torch.bfloat16))
