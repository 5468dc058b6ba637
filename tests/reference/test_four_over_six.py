"""NVFP4 ``scale_method="4over6"`` (docs/spec.md section 2) against an independent oracle.

The oracle takes both candidate bytes from the literal section-2 oracle (numpy float32, one
IEEE op each, table lookups, no torch float8 casts), dequantizes each block with each, sums
the squared errors in the contract's tree order and picks "/4" only on a strictly smaller sum.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nvfp4_ops.reference as ref

from ._oracle import DTYPES, F32, NPF, assert_bits_equal, oracle_e4m3, oracle_nvfp4, random_blocks


def oracle_sse_tree(xb: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """Squared errors of blocks [n, 16], summed as "4over6" defines: each quarter left to
    right, then (Q0 + Q1) + (Q2 + Q3)."""
    with np.errstate(all="ignore"):
        err = xb.astype(np.float32) - dq.astype(np.float32)
        sq = (err * err).astype(np.float32)
        quads = []
        for k in range(4):
            acc = sq[:, 4 * k].copy()
            for i in range(4 * k + 1, 4 * k + 4):
                acc = (acc + sq[:, i]).astype(np.float32)
            quads.append(acc)
        return ((quads[0] + quads[1]).astype(np.float32) + (quads[2] + quads[3])).astype(np.float32)


def oracle_4over6(xb: np.ndarray, gs: float):
    """(bytes, codes, fp32 dequant, sf6, sf4, sse6, sse4) of fp32 blocks [n, 16]."""
    with np.errstate(all="ignore"):
        xb = xb.astype(np.float32)
        finite = np.isfinite(xb).all(axis=1)
        vmax = np.abs(xb).max(axis=1)
        cands = []
        for rcp in (NPF(1) / NPF(6), NPF(0.25)):
            sf = oracle_e4m3(NPF(gs) * (vmax * rcp))
            sf = np.where(finite, sf, np.uint8(0x7F)).astype(np.uint8)
            _, _, dq = oracle_nvfp4(xb, gs, sf)
            cands.append((sf, oracle_sse_tree(xb, dq)))
    (sf6, sse6), (sf4, sse4) = cands
    pick = np.where(sse4 < sse6, sf4, sf6).astype(np.uint8)
    _, codes, dq = oracle_nvfp4(xb, gs, pick)
    return pick, codes, dq, sf6, sf4, sse6, sse4


def _check_against_oracle(x: torch.Tensor, gs: float) -> dict:
    """Reference quantize / quant_dequant of fp32 blocks ``x [n, 16]`` vs the oracle."""
    g = torch.tensor([gs], dtype=F32)
    packed, scales = ref.quantize(x, g, scale_method="4over6")
    pick, codes, dq, sf6, sf4, sse6, sse4 = oracle_4over6(x.numpy(), gs)
    assert scales.view(torch.uint8).flatten().tolist() == pick.tolist()
    assert torch.equal(ref.unpack_e2m1(packed), torch.from_numpy(codes.astype(np.uint8)))
    got, want = ref.quant_dequant(x, g, "4over6"), torch.from_numpy(dq.astype(np.float32))
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan)  # NaN payloads differ between numpy and torch
    assert_bits_equal(got[~nan], want[~nan])
    return dict(pick=pick, sf6=sf6, sf4=sf4, sse6=sse6, sse4=sse4)


def _blocks(*rows) -> torch.Tensor:
    return torch.tensor([list(r) + [0.0] * (16 - len(r)) for r in rows], dtype=F32)


def test_4over6_picks_4_on_smaller_error_and_6_on_ties():
    # [4]: /6 gives 0.6875 (4 -> 4.125), /4 gives 1 (4 exact): "/4" strictly better.
    # [6] and [3]: both candidates are exact (error 0) with different bytes: a tie, "/6".
    r = _check_against_oracle(_blocks([4.0], [6.0], [3.0], [6.0, 4.0, -1.0]), 1.0)
    assert (r["sf4"] != r["sf6"]).all()
    assert r["pick"][0] == r["sf4"][0] and r["sse4"][0] < r["sse6"][0]
    assert r["sse4"][1] == r["sse6"][1] == 0 and r["pick"][1] == r["sf6"][1]
    assert r["sse4"][2] == r["sse6"][2] == 0 and r["pick"][2] == r["sf6"][2]


def test_4over6_nonzero_ties_go_to_6():
    # Every block here has equal nonzero errors under both candidates (found by scanning
    # two-element blocks): ties that are not trivially 0.
    rng = np.random.default_rng(0)
    grid = np.array([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0],
                    dtype=np.float32)
    x = np.zeros((4096, 16), dtype=np.float32)
    x[:, :3] = rng.choice(grid, size=(4096, 3)) * rng.choice([-1.0, 1.0], size=(4096, 3))
    _, _, _, sf6, sf4, sse6, sse4 = oracle_4over6(x, 1.0)
    ties = (sse6 == sse4) & (sse6 > 0) & (sf6 != sf4)
    assert ties.sum() >= 3, "the scan should find nonzero ties"
    r = _check_against_oracle(torch.from_numpy(x[ties]), 1.0)
    assert (r["pick"] == r["sf6"]).all()
    # and the blocks where "/4" wins are picked with it
    wins = sse4 < sse6
    assert wins.sum() > 100
    r = _check_against_oracle(torch.from_numpy(x[wins][:256]), 1.0)
    assert (r["pick"] == r["sf4"]).all()


def test_4over6_zero_nonfinite_and_saturated_blocks():
    x = _blocks([], [-0.0, 0.0], [math.nan, 1.0], [1.0, math.inf], [-math.inf],
                [448.0 * 6], [448.0 * 5, 1.0], [448.0 * 4.5, -3.0])
    r = _check_against_oracle(x, 1.0)
    assert r["pick"][:2].tolist() == [0, 0]
    assert r["pick"][2:5].tolist() == [0x7F] * 3
    assert r["sf4"][5] == 0x7E and r["sf6"][5] == 0x7E  # both saturate: one byte
    assert r["sf4"][6] == 0x7E  # /4 saturates, /6 does not
    packed, _ = ref.quantize(x, torch.ones(1), scale_method="4over6")
    assert packed.view(-1, 8)[2:5].eq(0).all()  # non-finite blocks: codes 0


@pytest.mark.parametrize(
    "gs", [1.0, 2.0**-20, 2.0**-130, 1e-45, 3.4028234663852886e38, 2688.0 / 7.0])
def test_4over6_subnormal_and_extreme_scales(gs):
    # Scales in the E4M3 subnormal range and underflowing ones (tiny gs), overflowing
    # ones (huge gs), and subnormal fp32 inputs.
    x = torch.cat([random_blocks(256, seed=3), random_blocks(64, seed=4) * 2.0**-140])
    _check_against_oracle(x, gs)


def test_4over6_nan_global_scale():
    r = _check_against_oracle(random_blocks(16, seed=5), math.nan)
    assert (r["pick"] == 0x7F).all()


@pytest.mark.parametrize("seed", range(3))
def test_4over6_random_blocks(seed):
    x = random_blocks(2048, seed=seed)
    gs = ref.global_scale(x).item()
    r = _check_against_oracle(x, gs)
    # Both choices occur, and the result is never worse than "amax" (the tree sum of
    # the chosen byte is the smaller one).
    assert (r["pick"] == r["sf4"]).any() and (r["pick"] == r["sf6"]).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_4over6_batched_and_dtypes(dtype):
    x = random_blocks(3 * 8 * 4, seed=7).reshape(3, 8, 64).to(dtype)
    gs = torch.tensor([1.0, 100.0, 2.0**-10], dtype=F32)
    packed, scales = ref.quantize(x, gs, scale_method="4over6")
    for b in range(3):
        pick, codes, dq, *_ = oracle_4over6(x[b].float().reshape(-1, 16).numpy(), gs[b].item())
        assert scales[b].view(torch.uint8).flatten().tolist() == pick.tolist()
    # quant_dequant equals dequantize(quantize(...)), swizzled scales are the linear ones swizzled
    got = ref.quant_dequant(x, gs, "4over6")
    assert_bits_equal(got, ref.dequantize(packed, scales, gs, dtype))
    _, sw = ref.quantize(x, gs, swizzle=True, scale_method="4over6")
    assert torch.equal(sw.view(torch.uint8), ref.swizzle_scales(scales).view(torch.uint8))


def test_4over6_arguments():
    x = torch.zeros(4, 32)
    with pytest.raises(RuntimeError, match=r"nvfp4\.quant_dequant: scale_method must be 'amax' or "
                       r"'4over6', got 'mse'"):
        ref.quant_dequant(x, torch.ones(1), "mse")
    with pytest.raises(RuntimeError, match=r"a hessian is only used with scale_method='hessian', "
                       r"got scale_method='4over6'"):
        ref.quantize(x, torch.ones(1), scale_method="4over6", hessian=torch.zeros(2, 16, 16))
