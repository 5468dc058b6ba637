"""Scale layouts (reference.layout): the 128x4 swizzle against its formula, inverses, dtypes."""

from __future__ import annotations

import itertools

import pytest
import torch

from nvfp4_ops import reference as ref

from ._oracle import (
    E8M0,
    F32,
)


def test_swizzle_hand_positions():
    S = torch.zeros(130, 5, dtype=torch.uint8)
    marks = {(0, 4): 1, (33, 0): 2, (96, 2): 3, (129, 4): 4}
    for (r, c), v in marks.items():
        S[r, c] = v
    sw = ref.swizzle_scales(S)
    assert sw.shape == (256, 8) and sw.numel() == 2048
    flat = sw.reshape(-1)
    assert {i: flat[i].item() for i in (512, 20, 14, 1552)} == {512: 1, 20: 2, 14: 3, 1552: 4}
    assert int((flat != 0).sum()) == 4


def _swizzle_by_formula(S: torch.Tensor) -> torch.Tensor:
    M, Kb = S.shape
    Mp, Kp = -(-M // 128) * 128, -(-Kb // 4) * 4
    r = torch.arange(M).view(-1, 1)
    c = torch.arange(Kb).view(1, -1)
    off = ((r // 128) * (Kp // 4) + c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
    out = torch.zeros(Mp * Kp, dtype=torch.uint8)
    out[off.reshape(-1)] = S.view(torch.uint8).reshape(-1)
    return out.view(Mp, Kp)


@pytest.mark.parametrize("M, Kb", list(itertools.product([1, 90, 130, 257], [1, 3, 5, 8])))
def test_swizzle_formula_and_inverse(M, Kb):
    g = torch.Generator().manual_seed(M * 10 + Kb)
    S = torch.randint(1, 256, (M, Kb), generator=g, dtype=torch.int32).to(torch.uint8)
    sw = ref.swizzle_scales(S)
    assert torch.equal(sw, _swizzle_by_formula(S))
    assert torch.equal(ref.unswizzle_scales(sw, M, Kb), S)
    S3 = torch.stack([S, S.flip(0)]).view(torch.float8_e4m3fn)
    sw3 = ref.swizzle_scales(S3)
    assert sw3.dtype == torch.float8_e4m3fn
    assert torch.equal(sw3[1].view(torch.uint8), _swizzle_by_formula(S.flip(0)))
    assert torch.equal(ref.unswizzle_scales(sw3, M, Kb).view(torch.uint8), S3.view(torch.uint8))


@pytest.mark.skipif(E8M0 is None, reason="torch without float8_e8m0fnu")
def test_swizzle_e8m0_dtype_and_outputs_are_new_tensors():
    S = torch.randint(0, 255, (128, 4), dtype=torch.int32).to(torch.uint8).view(E8M0)
    sw = ref.swizzle_scales(S)
    assert sw.dtype == E8M0 and sw.untyped_storage().data_ptr() != S.untyped_storage().data_ptr()
    un = ref.unswizzle_scales(sw, 128, 4)
    assert un.dtype == E8M0 and un.untyped_storage().data_ptr() != sw.untyped_storage().data_ptr()
    assert torch.equal(un.view(torch.uint8), S.view(torch.uint8))


def test_outputs_never_alias_inputs():
    x = torch.randn(16, 32)
    gs = ref.global_scale(x)
    p, s = ref.quantize(x, gs)
    outs = [ref.quant_dequant(x, gs), ref.dequantize(p, s, gs, F32), ref.e4m3_to_fp32(s),
            ref.e2m1_decode(p), ref.unpack_e2m1(p)]
    ins = {t.untyped_storage().data_ptr() for t in (x, gs, p, s)}
    assert all(o.untyped_storage().data_ptr() not in ins for o in outs)
