"""E2M1, E4M3 and E8M0 element roundings, decoding and nibble packing (reference.elements)."""

from __future__ import annotations

import math

import pytest
import torch

from nvfp4_ops import reference as ref

from ._oracle import (
    E4M3_POS,
    F32,
    assert_bits_equal,
    f32,
    nextafter,
    oracle_e2m1,
    oracle_e4m3,
)


E2M1_CASES = [
    (0.0, 0x0), (-0.0, 0x8), (0.25, 0x0), (-0.25, 0x8), (0.5, 0x1), (0.75, 0x2), (1.25, 0x2),
    (1.5, 0x3), (1.75, 0x4), (2.5, 0x4), (3.0, 0x5), (3.5, 0x6), (5.0, 0x6), (6.0, 0x7),
    (1e30, 0x7), (math.inf, 0x7), (-math.inf, 0xF), (-1e-45, 0x8), (-3.0, 0xD),
]


@pytest.mark.parametrize("value, code", E2M1_CASES)
def test_e2m1_encode_cases(value, code):
    assert ref.e2m1_encode(f32(value)).item() == code


@pytest.mark.parametrize("t", [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
def test_e2m1_thresholds_neighbours(t):
    below, above = nextafter(t, 0.0), nextafter(t, 10.0)
    ys = torch.tensor([below, t, above, -below, -t, -above], dtype=F32)
    assert ref.e2m1_encode(ys).tolist() == oracle_e2m1(ys.numpy()).tolist()
    # The two neighbours fall in different codes, and exactly one of them shares t's code.
    c = ref.e2m1_encode(ys[:3]).tolist()
    assert c[0] != c[2] and (c[1] == c[0]) != (c[1] == c[2])


def test_e2m1_nan_keeps_sign_and_dense_sweep():
    nan = torch.tensor([math.nan], dtype=F32)
    assert ref.e2m1_encode(nan).item() == 0x0
    assert ref.e2m1_encode(-nan).item() == 0x8
    y = torch.linspace(-8, 8, 200001, dtype=F32)
    assert torch.equal(ref.e2m1_encode(y), torch.from_numpy(oracle_e2m1(y.numpy())))


def test_e2m1_decode_pack_unpack():
    codes = torch.arange(16, dtype=torch.uint8)
    vals = ref.e2m1_decode(codes)
    assert_bits_equal(vals, ref.E2M1_VALUES)
    assert torch.signbit(vals[8]) and vals[8] == 0
    assert torch.equal(ref.e2m1_encode(vals), codes)
    assert ref.pack_e2m1(torch.tensor([1, 2, 3, 4], dtype=torch.uint8)).tolist() == [0x21, 0x43]
    c = torch.randint(0, 16, (3, 5, 8), dtype=torch.uint8)
    assert torch.equal(ref.unpack_e2m1(ref.pack_e2m1(c)), c)


def test_e4m3_roundtrip_all_bytes():
    b = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    v = ref.e4m3_to_fp32(b)
    finite = ~torch.isnan(v)
    assert int((~finite).sum()) == 2 and torch.isnan(v[0x7F]) and torch.isnan(v[0xFF])
    assert torch.equal(ref.e4m3_from_fp32(v)[finite], b[finite])
    assert ref.e4m3_to_fp32(torch.tensor([0x7E], dtype=torch.uint8)).item() == 448.0
    assert ref.e4m3_to_fp32(torch.tensor([0x01], dtype=torch.uint8)).item() == 2.0**-9


def test_e4m3_from_fp32_matches_oracle():
    pos = torch.from_numpy(E4M3_POS).to(F32)
    mids = (pos[1:].double() + pos[:-1].double()) / 2  # exact in fp32 (5 significant bits)
    mids = mids.to(F32)
    pts = torch.cat([pos, mids, torch.nextafter(mids, torch.zeros_like(mids)),
                     torch.nextafter(mids, torch.full_like(mids, 1e9)),
                     torch.tensor([448.0, 464.0, nextafter(464.0, 0), 479.9, 480.0, 1e30, math.inf,
                                   1e-45, 2.0**-10, nextafter(2.0**-10, 1.0), 2.0**-11])])
    g = torch.Generator().manual_seed(1)
    rnd = torch.exp2(torch.rand(20000, generator=g) * 30 - 14) * torch.rand(20000, generator=g)
    pts = torch.cat([pts, rnd.to(F32)])
    pts = torch.cat([pts, -pts])
    assert torch.equal(ref.e4m3_from_fp32(pts), torch.from_numpy(oracle_e4m3(pts.numpy())))
    nan = torch.tensor([math.nan, -math.nan], dtype=F32)
    assert ref.e4m3_from_fp32(nan).tolist() == [0x7F, 0x7F]
    assert ref.e4m3_from_fp32(torch.tensor([-1e30, -math.inf])).tolist() == [0xFE, 0xFE]
