"""Shared helpers of the reference tests: bit comparisons and the independent oracle.

The oracle is written with numpy float32 scalars/arrays (one IEEE op each) and lookup tables:
no bit tricks and no torch float8 casts, so it shares no code with the reference.
"""

from __future__ import annotations

import numpy as np
import torch

F32 = torch.float32
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
E8M0 = getattr(torch, "float8_e8m0fnu", None)


def hexbytes(t: torch.Tensor) -> str:
    return " ".join(f"{b:02X}" for b in t.reshape(-1).view(torch.uint8).tolist())


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view for bitwise comparison (NaN payloads and signed zeros included)."""
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert torch.equal(bits(a.contiguous()), bits(b.contiguous()))


def f32(v: float) -> torch.Tensor:
    return torch.tensor([v], dtype=F32)


def nextafter(v: float, direction: float) -> float:
    return torch.nextafter(f32(v), f32(direction)).item()


# --------------------------------------------------------------------------------------
# Independent oracle: numpy float32 arithmetic (one IEEE op each) and lookup tables
# --------------------------------------------------------------------------------------

NPF = np.float32
# Positive E4M3 values by byte 0x00..0x7E, from the format definition.
E4M3_POS = np.array(
    [(m / 8) * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7) for e in range(16) for m in range(8)][:127]
)
E2M1_POS = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def oracle_e4m3(v: np.ndarray) -> np.ndarray:
    """Bytes of fp32 values: nearest E4M3 value, ties to the even byte, saturating, NaN 0x7F."""
    v = np.asarray(v, dtype=np.float32)
    mag = np.minimum(np.abs(v).astype(np.float64), 448.0)
    hi = np.clip(np.searchsorted(E4M3_POS, mag, side="left"), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    dlo, dhi = mag - E4M3_POS[lo], E4M3_POS[hi] - mag
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    out = (pick | (np.signbit(v).astype(np.int64) << 7)).astype(np.uint8)
    return np.where(np.isnan(v), np.uint8(0x7F), out)


def oracle_e2m1(y: np.ndarray) -> np.ndarray:
    """E2M1 codes by the interval table of docs/spec.md section 1 (NaN magnitude gives 0)."""
    y = np.asarray(y, dtype=np.float32)
    a = np.abs(y).astype(np.float64)
    conds = [
        a <= 0.25,
        (a > 0.25) & (a < 0.75),
        (a >= 0.75) & (a <= 1.25),
        (a > 1.25) & (a < 1.75),
        (a >= 1.75) & (a <= 2.5),
        (a > 2.5) & (a < 3.5),
        (a >= 3.5) & (a <= 5),
        a > 5,
    ]
    mag = np.select(conds, np.arange(8), default=0)
    return (mag | (np.signbit(y).astype(np.int64) << 3)).astype(np.uint8)


def oracle_nvfp4(xb: np.ndarray, gs: float, sf_bytes: np.ndarray | None = None):
    """Literal docs/spec.md section 2 on fp32 blocks [n, 16]: (scale bytes, codes, fp32 dequant)."""
    with np.errstate(all="ignore"):
        xb = xb.astype(np.float32)
        gs = NPF(gs)
        if sf_bytes is None:
            vmax = np.abs(xb).max(axis=1)
            sixth = NPF(1) / NPF(6)
            sf_bytes = oracle_e4m3(gs * (vmax * sixth))
            sf_bytes = np.where(np.isfinite(xb).all(axis=1), sf_bytes, np.uint8(0x7F))
        sf32 = np.where(sf_bytes == 0x7F, np.nan, E4M3_POS[np.minimum(sf_bytes, 126)]).astype(np.float32)
        denom = sf32 * (NPF(1) / gs)
        osc = np.where((sf32 == 0) | (denom == 0), NPF(0), NPF(1) / denom).astype(np.float32)
        y = xb * osc[:, None]
        codes = oracle_e2m1(y)
        codes = np.where(np.isnan(sf32)[:, None], np.uint8(0), codes)
        s = sf32 / gs
        vals = np.where(codes >= 8, -1.0, 1.0) * E2M1_POS[codes & 7]
        dq = vals.astype(np.float32) * s[:, None]
        return sf_bytes.astype(np.uint8), codes, dq


def oracle_sse(xb: np.ndarray, dq: np.ndarray) -> np.ndarray:
    err = xb.astype(np.float32) - dq.astype(np.float32)
    sq = err * err
    acc = sq[:, 0].copy()
    for i in range(1, sq.shape[1]):
        acc = acc + sq[:, i]
    return acc


def oracle_mx(xb: np.ndarray, elem: str, rounding: str):
    """Literal docs/spec.md section 3 on fp32 blocks [n, 32]: (scale bytes, element bytes or codes)."""
    emax_val, emax_exp = {"e4m3": (448.0, 8), "e2m1": (6.0, 2)}[elem]
    xb = xb.astype(np.float32)
    finite = np.isfinite(xb).all(axis=1)
    amax = np.where(finite, np.abs(xb).max(axis=1), NPF(0)).astype(np.float32)
    if rounding == "rceil":
        d = amax / NPF(emax_val)
        b = ((d.view(np.uint32).astype(np.int64) + 0x7FFFFF) & 0x7F800000) >> 23
    else:
        b = np.maximum(((amax.view(np.uint32).astype(np.int64) >> 23) & 0xFF) - emax_exp, 0)
    b = np.where(finite, b, 255)
    # x * 2^(127-b) is exact in float64; one rounding to fp32 gives RN(x * 2^(127-b)).
    y = (xb.astype(np.float64) * np.exp2(127.0 - np.minimum(b, 254))[:, None]).astype(np.float32)
    data = oracle_e4m3(y) if elem == "e4m3" else oracle_e2m1(y)
    data = np.where(finite[:, None], data, np.uint8(0))
    return b.astype(np.uint8), data


def one_block(*vals: float, dtype=F32) -> torch.Tensor:
    """One block of 16: ``vals`` then zeros, shape ``[1, 16]``."""
    return torch.tensor([list(vals) + [0.0] * (16 - len(vals))], dtype=dtype)


def random_blocks(n: int, seed: int, block: int = 16) -> torch.Tensor:
    """fp32 blocks mixing Gaussian values, exact grid ties and tiny values, varied scales."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 0.5, 1.0, 3.0, 4.0])
    ties = grid[torch.randint(len(grid), (n, block), generator=g)]
    ties = ties * torch.where(torch.rand(n, block, generator=g) < 0.5, -1.0, 1.0)
    gauss = torch.randn(n, block, generator=g)
    x = torch.where(torch.rand(n, 1, generator=g) < 0.5, ties, gauss)
    scale = torch.exp2(torch.randint(-20, 20, (n, 1), generator=g).float())
    return (x * scale).to(F32)
