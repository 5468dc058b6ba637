"""Element and scale roundings: E2M1, E4M3 and E8M0 (docs/spec.md sections 1-3).

Each rounding is one vectorised function over fp32 tensors, built from single IEEE
round-to-nearest-even tensor ops and bit manipulation, so it gives the same bytes on
every device. The block formats (:mod:`.nvfp4`, :mod:`.mx`) and the searches
(:mod:`.search`) build on these.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ._common import E2M1_MAX, E4M3_MAX, F32

#: fp32 value of each E2M1 code 0..15; code 8 is -0.0.
E2M1_VALUES = torch.tensor(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=F32,
)

# RN(1/6) computed as one fp32 division; held as the Python float of that exact fp32 value.
_RN_ONE_SIXTH = (torch.tensor(1.0, dtype=F32) / torch.tensor(6.0, dtype=F32)).item()

# Emax (largest element magnitude) and emax (its exponent) of the MX element formats.
_MX_EMAX = {"e4m3": (E4M3_MAX, 8), "e2m1": (E2M1_MAX, 2)}


def _e2m1_round_mag(a: Tensor) -> Tensor:
    """Round magnitudes to the nearest E2M1 magnitude (fp32), ties to even, saturating at 6.

    ``a`` is fp32 and ``>= 0``; NaN gives 0 (a NaN never reaches a code as a value: the
    callers either mask the block or take the sign from elsewhere) and +inf gives 6.
    E2M1 is a float with one mantissa bit, so in the binade ``[2^k, 2^(k+1))`` (``k >= 0``;
    below 1 the spacing stays 0.5) adding ``C = 2^(max(k, 0) + 22)`` rounds ``a`` to a
    multiple of the E2M1 spacing ``2^(max(k, 0) - 1)``, with IEEE ties-to-even matching
    the ties-to-even-code rule of docs/spec.md section 1 (0.25 -> 0, 0.75 -> 1, 1.25 -> 1,
    1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4). Both the add and the subtract are single
    fp32 ops and the subtract is exact.
    """
    a = torch.nan_to_num(a, nan=0.0).clamp_(max=E2M1_MAX)
    c = (a.clamp(min=1.0).view(torch.int32) & 0x7F800000) + (22 << 23)
    c = c.view(F32)
    return (a + c).sub_(c)


def _e2m1_code_from_value(v: Tensor) -> Tensor:
    """E2M1 code (uint8) of a value already on the E2M1 grid; the sign bit from signbit(v)."""
    m = v.abs()
    mag = torch.where(m < 2.0, m * 2.0, torch.where(m < 5.0, m + 2.0, 7.0)).to(torch.uint8)
    return mag | (torch.signbit(v).to(torch.uint8) << 3)


def e2m1_encode(y: Tensor) -> Tensor:
    """Encode fp32 values as E2M1 codes (docs/spec.md section 1).

    Round to nearest with ties to the even code, saturating (``|y| > 5`` and +-inf give
    magnitude 6). The sign bit is the fp32 sign bit, so -0.0 and negative values that
    round to zero give code 0x8. A NaN gives magnitude code 0 with its own sign bit.

    Parameters
    ----------
    y : Tensor
        Floating point, any shape (upcast to fp32, exact for fp16/bf16).

    Returns
    -------
    Tensor
        uint8 codes 0..15, same shape as ``y``.
    """
    y = y.detach().to(F32)
    return _e2m1_code_from_value(torch.copysign(_e2m1_round_mag(y.abs()), y))


def e2m1_decode(codes: Tensor) -> Tensor:
    """Decode E2M1 codes to fp32 (code 8 is -0.0).

    Parameters
    ----------
    codes : Tensor
        Integer tensor of codes; only the low 4 bits of each element are used.

    Returns
    -------
    Tensor
        fp32, same shape as ``codes``.
    """
    c = (codes.detach() & 0x0F).to(torch.int32)
    # Built on the codes' device from their bits (no host table copied per call, so this
    # also runs inside CUDA-graph capture): exponent field e = bits 1-2, mantissa m = bit 0;
    # e > 0: (1 + m/2) * 2^(e-1); e == 0: m/2.
    e, m = (c >> 1) & 3, (c & 1).to(F32)
    mag = torch.where(e > 0, (1.0 + 0.5 * m) * torch.exp2((e - 1).to(F32)), 0.5 * m)
    return torch.where((c & 8) != 0, -mag, mag)


def e4m3_from_fp32(v: Tensor) -> Tensor:
    """Convert to E4M3 bytes: round to nearest even, saturate to +-448, NaN to 0x7F.

    The value is clamped to ``[-448, 448]`` before torch's cast, so the result does not
    depend on how the cast treats out-of-range values; any NaN (either sign) gives 0x7F.

    Parameters
    ----------
    v : Tensor
        Floating point, any shape (upcast to fp32 first).

    Returns
    -------
    Tensor
        uint8 bytes, same shape.
    """
    v = v.detach().to(F32)
    b = v.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).view(torch.uint8)
    return torch.where(torch.isnan(v), 0x7F, b)


def e4m3_to_fp32(b: Tensor) -> Tensor:
    """Decode E4M3 bytes (uint8 or float8_e4m3fn) to fp32; 0x7F and 0xFF are NaN.

    Parameters
    ----------
    b : Tensor
        uint8 or float8_e4m3fn.

    Returns
    -------
    Tensor
        fp32, same shape.
    """
    return b.detach().view(torch.float8_e4m3fn).to(F32)


def _e4m3_round(y: Tensor) -> Tensor:
    """Round fp32 to the nearest E4M3 value (RNE, saturating to +-448), as fp32. No NaN in."""
    return y.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(F32)


def _pow2_from_e8m0(b: Tensor) -> Tensor:
    """``2^(b - 127)`` exactly, from the bits (b=0 gives the subnormal 2^-127); b=255: NaN.

    ``b`` is an int32 tensor with values 0..255.
    """
    bits = torch.where(b == 0, 0x00400000, b << 23)
    bits = torch.where(b == 255, 0x7FC00000, bits)
    return bits.to(torch.int32).view(F32)


def _inv_pow2_from_e8m0(b: Tensor) -> Tensor:
    """``2^(127 - b)`` exactly, from the bits (b=254 gives the subnormal 2^-127); b=255: 0.

    ``b`` is an int32 tensor with values 0..255.
    """
    e = 254 - b  # biased exponent of 2^(127 - b)
    bits = torch.where(e >= 1, e << 23, 0x00400000)
    bits = torch.where(b == 255, 0, bits)
    return bits.to(torch.int32).view(F32)


def _nvfp4_multipliers(sf32: Tensor, gs: Tensor) -> Tuple[Tensor, Tensor]:
    """Encode and decode multipliers of NVFP4 blocks with fp32 scale ``sf32`` (docs/spec.md sec. 2).

    Returns ``osc = RN(1 / RN(sf32 * RN(1 / gs)))`` (0 where ``sf32 == 0`` or where the
    denominator is 0) and ``s = RN(sf32 / gs)``, broadcast to a common shape.
    """
    inv_gs = torch.ones_like(gs) / gs
    denom = sf32 * inv_gs
    osc = torch.where((sf32 == 0) | (denom == 0), 0.0, torch.ones_like(denom) / denom)
    s = sf32 / gs
    return osc, s


def _nvfp4_round(x: Tensor, osc: Tensor) -> Tensor:
    """The signed E2M1 value of ``RN(x * osc)`` (fp32, on the E2M1 grid).

    The sign is that of ``RN(x * osc)``; where that product is NaN (only ``+-0 * inf``
    for a finite ``x`` in a block with a finite scale) the magnitude is 0 and the sign is
    that of ``x``, so that no NaN sign (which differs between devices) reaches a code.
    """
    y = x * osc
    q = _e2m1_round_mag(y.abs())
    return torch.copysign(q, torch.where(torch.isnan(y), x, y))


def _nvfp4_naive_bytes(xb: Tensor, gs_b: Tensor, rcp: float = _RN_ONE_SIXTH) -> Tensor:
    """Naive scale bytes ``E4M3(RN(gs * RN(vmax * RN(1/6))))`` per block; 0x7F if non-finite.

    ``xb``: fp32 ``[..., 16]`` blocks, ``gs_b`` broadcastable to ``xb.shape[:-1]``. ``rcp``
    replaces ``RN(1/6)`` (an fp32 value): 0.25 gives the "/4" byte of ``scale_method="4over6"``.
    """
    vmax = xb.abs().amax(dim=-1)
    finite = torch.isfinite(xb).all(dim=-1)
    sf = e4m3_from_fp32(gs_b * (vmax * rcp))
    return torch.where(finite, sf, 0x7F)


def _mx_naive_bytes(xb: Tensor, elem: str, rounding: str) -> Tensor:
    """E8M0 scale bytes of MX blocks ``[..., 32]`` (docs/spec.md section 3), computed on the bits.

    ``rceil``: ``d = RN(amax / Emax)``, ``b = ((bits(d) + 0x7FFFFF) & 0x7F800000) >> 23``.
    ``floor``: ``b = max(expfield(amax) - emax, 0)``. Non-finite blocks: 255.
    """
    emax_val, emax_exp = _MX_EMAX[elem]
    finite = torch.isfinite(xb).all(dim=-1)
    amax = torch.where(finite, xb.abs().amax(dim=-1), 0.0)
    if rounding == "rceil":
        d = amax / torch.full_like(amax, emax_val)
        b = ((d.view(torch.int32) + 0x007FFFFF) & 0x7F800000) >> 23
    else:
        b = (((amax.view(torch.int32) >> 23) & 0xFF) - emax_exp).clamp_(min=0)
    return torch.where(finite, b, 255).to(torch.uint8)


def _mx_round_mag(a: Tensor, elem: str) -> Tensor:
    """Nearest element magnitude (fp32) of scaled magnitudes ``a >= 0`` (finite or +inf)."""
    if elem == "e4m3":
        return _e4m3_round(a)
    return _e2m1_round_mag(a)
