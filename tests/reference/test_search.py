"""The exact scale searches (reference.search): exhaustive against brute force, objectives
against the literal oracle, hessian_blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nvfp4_ops import reference as ref

from ._oracle import (
    one_block,
    E2M1_POS,
    E4M3_POS,
    F32,
    f32,
    hexbytes,
    oracle_e2m1,
    oracle_e4m3,
    oracle_nvfp4,
    oracle_sse,
    random_blocks,
)


def _search_input(kind: str, shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    if kind == "gaussian":
        x = torch.randn(n, generator=g)
    elif kind == "student_t":  # 2 degrees of freedom: z / sqrt(chi2_2 / 2)
        chi2 = torch.randn(n, generator=g) ** 2 + torch.randn(n, generator=g) ** 2
        x = torch.randn(n, generator=g) / torch.sqrt(chi2 / 2)
    elif kind == "sparse":
        x = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.15)
    elif kind == "outlier":
        x = torch.randn(n, generator=g)
        x[torch.randint(0, n, (n // 16,), generator=g)] *= 40
    elif kind == "zeros_and_ties":
        x = torch.randn(n, generator=g)
        x.view(-1, 16)[::3] = 0
        x.view(-1, 16)[1::3] = 0.25 * torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 0.5] * 2)
    else:
        raise AssertionError(kind)
    return x.reshape(shape).to(F32)


def _expected_choice(naive_obj, naive_byte, cand_obj, cand_bytes):
    """Closed form of the tie rule: naive wins among equal minima, then the smallest byte."""
    m = cand_obj.min(dim=0).values
    first = torch.tensor(cand_bytes, dtype=torch.uint8)[(cand_obj == m).int().argmax(dim=0)]
    take_naive = naive_obj <= m
    return torch.where(take_naive, naive_byte, first), torch.where(take_naive, naive_obj, m)


SEARCH_KINDS = ["gaussian", "student_t", "sparse", "outlier", "zeros_and_ties"]


# The hessian objective costs 16x more per candidate: it runs on the adversarial kinds only
# (the gaussian-like ones add nothing the mse runs do not cover).
_SEARCH_CASES = [("mse", k) for k in SEARCH_KINDS + ["saturating"]] + [
    ("hessian", k) for k in ("sparse", "outlier", "zeros_and_ties", "saturating")
]


@pytest.mark.parametrize("method, kind", _SEARCH_CASES)
def test_nvfp4_search_is_exhaustive(kind, method):
    shape = (2, 6, 64)
    x = _search_input("gaussian" if kind == "saturating" else kind, shape, seed=len(kind))
    gs = torch.cat([ref.global_scale(x[b]) for b in range(2)])
    if kind == "saturating":
        gs = gs * 16  # most block scales saturate at 448
    H = ref.hessian_blocks(torch.randn(200, 64, generator=torch.Generator().manual_seed(9))) if method == "hessian" else None
    packed, scales = ref.quantize(x, gs, scale_method=method, hessian=H)
    chosen = scales.view(torch.uint8)
    naive = ref.quantize(x, gs)[1].view(torch.uint8)
    if kind == "saturating":
        assert (naive == 0x7E).float().mean() > 0.5
    obj = lambda b: ref.nvfp4_block_objective(x, b, gs, method, H)
    cands = list(range(1, 127))
    cand_obj = torch.stack([obj(torch.full_like(naive, c)) for c in cands])
    want_byte, want_obj = _expected_choice(obj(naive), naive, cand_obj, cands)
    assert torch.equal(chosen, want_byte)
    got_obj = obj(chosen)
    assert torch.equal(got_obj, want_obj) and (got_obj <= obj(naive)).all()
    # The codes are those of docs/spec.md section 2 for the chosen scales.
    assert torch.equal(packed, ref.pack_e2m1(torch.from_numpy(np.stack([
        oracle_nvfp4(x[b].reshape(-1, 16).numpy(), gs[b].item(), chosen[b].reshape(-1).numpy())[1].reshape(6, 64)
        for b in range(2)]))))


def test_nvfp4_objective_matches_literal_oracle():
    x = random_blocks(64, seed=12)
    gs = 37.5
    for byte in (0x00, 0x01, 0x07, 0x08, 0x30, 0x55, 0x7E):
        sb = torch.full((64, 1), byte, dtype=torch.uint8)
        got = ref.nvfp4_block_objective(x, sb, f32(gs))
        _, _, dq = oracle_nvfp4(x.numpy(), gs, sb[:, 0].numpy())
        assert torch.equal(got[:, 0], torch.from_numpy(oracle_sse(x.numpy(), dq)))
    # hessian: the quadratic form with the documented summation order; H is not symmetric
    # here so that H[i, j] and H[j, i] cannot be confused.
    H = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(2))
    sb = torch.full((64, 1), 0x33, dtype=torch.uint8)
    _, _, dq = oracle_nvfp4(x.numpy(), gs, sb[:, 0].numpy())
    e = x.numpy() - dq
    h = H[0].numpy()
    t = [sum_seq([h[i, j] * e[:, j] for j in range(16)]) for i in range(16)]
    want = sum_seq([e[:, i] * t[i] for i in range(16)])
    got = ref.nvfp4_block_objective(x, sb, f32(gs), "hessian", H)[:, 0]
    assert torch.equal(got, torch.from_numpy(want))


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
def test_mx_objective_matches_literal_oracle(elem):
    g = torch.Generator().manual_seed(14)
    x = torch.randn(6, 32, generator=g) * torch.tensor([1e-38, 1e-30, 1.0, 1e3, 1e30, 3e37]).view(6, 1)
    x[5, 0] = 3.3e38
    x[4] = 0
    x[4, :3] = torch.tensor([1.5, -1.0, 0.5]) * 2.0**127  # exact only with b = 254 (2^-127)
    for b in (0, 1, 100, 127, 200, 252, 253, 254):
        sb = torch.full((6, 1), b, dtype=torch.uint8)
        y = (x.double() * 2.0 ** (127 - b)).float().numpy()  # RN(x * 2^(127-b))
        code = oracle_e4m3(y) if elem == "e4m3" else oracle_e2m1(y)
        table = E4M3_POS if elem == "e4m3" else E2M1_POS
        mag = table[(code & (0x7F if elem == "e4m3" else 7)).astype(np.int64)]
        with np.errstate(over="ignore"):
            dq = (np.where(np.signbit(y), -mag, mag) * 2.0 ** (b - 127)).astype(np.float32)
            want = oracle_sse(x.numpy(), dq)
        got = ref.mx_block_objective(x, sb, elem)[:, 0]
        assert torch.equal(got, torch.from_numpy(want)), (b, got, want)


def sum_seq(terms):
    acc = terms[0]
    for t in terms[1:]:
        acc = (acc + t).astype(np.float32)
    return acc


def test_nvfp4_search_hand_ties():
    gs = f32(1.0)
    # [0.5, 0...]: exact for sf in {0.125, 0.25, 0.5, 1}; the naive scale 0x1B
    # (E4M3(RN(0.5 * RN(1/6))) = 0.0859375) is not; the smallest exact byte 0x20 (0.125) wins.
    x = one_block(0.5)
    assert hexbytes(ref.quantize(x, gs)[1]) == "1B"
    packed, scales = ref.quantize(x, gs, scale_method="mse")
    assert hexbytes(scales) == "20" and ref.dequantize(packed, scales, gs, F32)[0, 0].item() == 0.5
    # [1e-4, 0...]: the naive scale underflows to 0x00 and every candidate rounds the block
    # to zero too: all tie, and the naive byte wins over 0x01.
    x = one_block(1e-4)
    assert hexbytes(ref.quantize(x, gs, scale_method="mse")[1]) == "00"
    # all-zero, NaN and inf blocks keep their naive bytes
    x = torch.cat([one_block(0.0), one_block(math.nan, 1.0), one_block(-math.inf)], dim=1)
    p, s = ref.quantize(x, gs, scale_method="mse")
    assert hexbytes(s) == "00 7F 7F" and (p[0, 8:] == 0).all()


def test_nvfp4_mse_lowers_error():
    x = torch.randn(256, 1024, generator=torch.Generator().manual_seed(10))
    gs = ref.global_scale(x)
    sse = lambda m: ((x - ref.dequantize(*ref.quantize(x, gs, scale_method=m), gs, F32)).double() ** 2).sum()
    assert sse("mse") < 0.85 * sse("amax")


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("kind", ["gaussian", "student_t", "outlier", "sparse"])
def test_mx_search_is_exhaustive(elem, rounding, kind):
    x = _search_input(kind, (8, 64), seed=3)
    x[0, :32] = 0
    x[1, :32] = torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 6] * 4) * 2.0**-3
    data, scales = ref.mx_quantize(x, elem, rounding, scale_method="mse")
    naive = ref.mx_quantize(x, elem, rounding)[1]
    obj = lambda b: ref.mx_block_objective(x, b, elem)
    cands = list(range(255))
    cand_obj = torch.stack([obj(torch.full_like(naive, c)) for c in cands])
    want_byte, want_obj = _expected_choice(obj(naive), naive, cand_obj, cands)
    assert torch.equal(scales, want_byte)
    assert torch.equal(obj(scales), want_obj) and (obj(scales) <= obj(naive)).all()
    # elements are the section-3 encoding with the chosen scales: dequantized error = objective
    dq = ref.mx_dequantize(data, scales, elem, F32)
    assert torch.equal(torch.from_numpy(oracle_sse(x.reshape(-1, 32).numpy(), dq.reshape(-1, 32).numpy())).view(8, 2), obj(scales))


def test_mx_search_keeps_non_finite_blocks():
    x = torch.ones(1, 64)
    x[0, 3] = math.nan
    d, s = ref.mx_quantize(x, "e2m1", scale_method="mse")
    assert s.tolist() == [[255, 125]] and (d[0, :16] == 0).all()


def test_hessian_blocks():
    X = torch.randn(300, 48, generator=torch.Generator().manual_seed(13)).to(torch.bfloat16)
    H = ref.hessian_blocks(X, chunk_rows=64)
    assert H.shape == (3, 16, 16) and H.dtype == F32
    Xd = X.double().view(300, 3, 16)
    want = torch.einsum("tgi,tgj->gij", Xd, Xd)
    assert torch.allclose(H.double(), want, rtol=1e-5, atol=1e-4)
    assert torch.allclose(H, ref.hessian_blocks(X), rtol=1e-5, atol=1e-4)
    assert (torch.linalg.eigvalsh(H.double()) > 0).all()
