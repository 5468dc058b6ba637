"""NVFP4: E2M1 elements, an E4M3 scale per 16 elements, an fp32 global scale (docs/spec.md section 2)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._checks import (
    check_dequantize_args,
    check_global_scale_args,
    check_quant_dequant_args,
    check_quantize_args,
)
from ._common import F32, FLT_MAX, GLOBAL_SCALE_NUMERATOR, NVFP4_BLOCK, batched, unbatched
from .elements import (
    _e2m1_code_from_value,
    _e2m1_round_mag,
    _nvfp4_multipliers,
    _nvfp4_naive_bytes,
    _nvfp4_round,
    e2m1_decode,
    e4m3_to_fp32,
)
from .layout import linear_scale_bytes, pack_e2m1, swizzle_scales, unpack_e2m1
from .search import _nvfp4_search


def global_scale(x: Tensor) -> Tensor:
    """NVFP4 encode global scale ``RN(2688 / amax(|x|))`` over the whole tensor (docs/spec.md sec. 2).

    ``amax == 0`` (and an empty tensor) gives 1. A finite ``amax > 0`` so small that the
    division overflows (below ``2688 / FLT_MAX``, about 7.9e-36, subnormals included)
    gives the largest finite fp32 ``FLT_MAX`` instead of +inf, so that finite input never
    quantizes to NaN. Otherwise the result is what the one fp32 division gives: a NaN
    anywhere gives NaN; an inf anywhere gives 0 (such a tensor then dequantizes to NaN
    everywhere: RN(0/0)).

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.global_scale`.
    """
    check_global_scale_args(x)
    if x.numel() == 0:
        return torch.ones(1, dtype=F32, device=x.device)
    return _global_scale_from_amax(x.detach().abs().amax().to(F32).reshape(1))


def _global_scale_from_amax(amax: Tensor) -> Tensor:
    """``RN(2688 / amax)`` elementwise for fp32 ``amax``, with docs/spec.md section 2's
    cases: 1 where ``amax == 0``, ``FLT_MAX`` where the division overflows."""
    gs = torch.full_like(amax, GLOBAL_SCALE_NUMERATOR) / amax
    # +inf only comes from a finite amax > 0 (amax == 0 is replaced below, inf gives 0).
    gs = torch.where(gs == float("inf"), FLT_MAX, gs)
    return torch.where(amax == 0, 1.0, gs)


def _nvfp4_encode_with_scale(xb: Tensor, sf_bytes: Tensor, gs_b: Tensor) -> Tensor:
    """E2M1 codes of NVFP4 blocks quantized with the given scale bytes (docs/spec.md section 2).

    Parameters
    ----------
    xb : Tensor
        fp32 blocks ``[..., 16]``.
    sf_bytes : Tensor
        uint8 E4M3 bytes ``xb.shape[:-1]``.
    gs_b : Tensor
        fp32 global scale broadcastable to ``xb.shape[:-1]``.

    Returns
    -------
    Tensor
        uint8 codes, shape of ``xb``. Blocks whose scale is NaN (0x7F: non-finite input,
        or a NaN made by the scale formula itself) get codes 0.
    """
    sf32 = e4m3_to_fp32(sf_bytes)
    osc, _ = _nvfp4_multipliers(sf32, gs_b)
    codes = _e2m1_code_from_value(_nvfp4_round(xb, osc.unsqueeze(-1)))
    return torch.where(torch.isnan(sf32).unsqueeze(-1), 0, codes)


def _nvfp4_dequant_blocks(codes_b: Tensor, sf_bytes: Tensor, gs_b: Tensor) -> Tensor:
    """fp32 ``RN(e2m1(code) * RN(fp32(sf) / gs))`` for code blocks ``[..., 16]``."""
    _, s = _nvfp4_multipliers(e4m3_to_fp32(sf_bytes), gs_b)
    return e2m1_decode(codes_b) * s.unsqueeze(-1)


def _nvfp4_4over6_sse(xb: Tensor, sf_bytes: Tensor, gs_b: Tensor) -> Tensor:
    """The squared error of NVFP4 blocks with given scale bytes, as ``"4over6"`` sums it.

    Per element (docs/spec.md section 2, "4over6"): ``t_i = RN(e_i^2)`` with
    ``e_i = RN(|x_i| - RN(|q_i| * |s|))``, ``q_i`` the element's E2M1 value for the scale
    and ``s = RN(fp32(sf) / gs)`` (the dequantized magnitude; RN is sign-symmetric, so the
    square equals that of the signed error). Sum: ``Q_k = RN(RN(RN(t_4k + t_4k+1) +
    t_4k+2) + t_4k+3)`` for ``k = 0..3``, then ``RN(RN(Q_0 + Q_1) + RN(Q_2 + Q_3))``.

    ``xb``: fp32 ``[..., 16]``; ``sf_bytes``: uint8 ``xb.shape[:-1]``; ``gs_b`` broadcastable.
    """
    osc, s = _nvfp4_multipliers(e4m3_to_fp32(sf_bytes), gs_b)
    ax = xb.abs()
    q = _e2m1_round_mag(ax * osc.abs().unsqueeze(-1))
    e = ax - q * s.abs().unsqueeze(-1)
    t = (e * e).unflatten(-1, (4, 4))
    quads = ((t[..., 0] + t[..., 1]) + t[..., 2]) + t[..., 3]
    return (quads[..., 0] + quads[..., 1]) + (quads[..., 2] + quads[..., 3])


def _nvfp4_4over6_bytes(xb: Tensor, gs_b: Tensor) -> Tensor:
    """Scale bytes of ``scale_method="4over6"`` (docs/spec.md section 2) for fp32 blocks
    ``[..., 16]``: of the bytes that map the block max to 6 and to 4, the one of smaller
    :func:`_nvfp4_4over6_sse`; ties (and NaN objectives) to the "/6" byte."""
    sf6 = _nvfp4_naive_bytes(xb, gs_b)
    sf4 = _nvfp4_naive_bytes(xb, gs_b, 0.25)
    use4 = _nvfp4_4over6_sse(xb, sf4, gs_b) < _nvfp4_4over6_sse(xb, sf6, gs_b)
    return torch.where(use4, sf4, sf6)


def _nvfp4_quantize_core(
    x: Tensor, gs: Tensor, scale_method: str, hessian: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor]:
    """Codes ``[B, M, K]`` and scale bytes ``[B, M, K/16]`` of batched ``x``, and ``gs_b``."""
    x3 = batched(x)
    B, M, K = x3.shape
    G = K // NVFP4_BLOCK
    xb = x3.to(F32).reshape(B, M, G, NVFP4_BLOCK)
    gs_b = gs.detach().reshape(-1, 1, 1)
    if scale_method == "4over6":
        sf = _nvfp4_4over6_bytes(xb, gs_b)
    else:
        sf = _nvfp4_naive_bytes(xb, gs_b)
    if scale_method in ("mse", "hessian"):
        gs_r = gs_b.expand(B, M, 1).reshape(B * M, 1)
        h = hessian.detach() if hessian is not None else None
        sf = _nvfp4_search(
            xb.reshape(B * M, G, NVFP4_BLOCK), gs_r, sf.reshape(B * M, G), scale_method, h
        ).reshape(B, M, G)
    codes = _nvfp4_encode_with_scale(xb, sf, gs_b).reshape(B, M, K)
    return codes, sf, gs_b


def quantize(
    x: Tensor,
    global_scale: Tensor,
    swizzle: bool = False,
    scale_method: str = "amax",
    hessian: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Quantize to NVFP4: E2M1 codes with one E4M3 scale per 16 elements (docs/spec.md sec. 2, 5).

    Per block of 16 along the last dim, with ``vmax = max |x_i|``:
    ``sf = E4M3(RN(gs * RN(vmax * RN(1/6))))`` (``scale_method="amax"``), the better of
    that byte and ``E4M3(RN(gs * RN(vmax * 0.25)))`` (``"4over6"``, docs/spec.md section 2)
    or the exhaustive search of docs/spec.md section 5 (``"mse"``, ``"hessian"``); then
    ``osc = RN(1 / RN(fp32(sf) * RN(1/gs)))`` and ``code = E2M1(RN(x * osc))``.

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.quantize`.

    Notes
    -----
    * ``osc`` is 0 where ``fp32(sf) == 0`` (all-zero block, underflowing scale) and also
      where ``RN(fp32(sf) * RN(1/gs)) == 0`` (only for ``gs = +inf``), as vLLM's
      ``ref_nvfp4_quant`` does.
    * The code's sign bit is the sign of ``RN(x * osc)``; where that is NaN (``+-0 * inf``)
      the magnitude code is 0 and the sign that of ``x``.
    * A block holding NaN or +-inf, or whose scale formula gives NaN (``gs`` NaN, or
      ``gs = +inf`` with an all-zero block) gets scale 0x7F and codes 0.
    """
    check_quantize_args(x, global_scale, swizzle, scale_method, hessian)
    codes, sf, _ = _nvfp4_quantize_core(x, global_scale, scale_method, hessian)
    packed = unbatched(pack_e2m1(codes), x)
    scales = unbatched(sf.view(torch.float8_e4m3fn), x)
    if swizzle:
        scales = swizzle_scales(scales)
    return packed, scales


def dequantize(
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    out_dtype: torch.dtype,
    swizzled: bool = False,
) -> Tensor:
    """Dequantize NVFP4: ``RN(e2m1(code) * RN(fp32(sf) / gs))``, then one cast (docs/spec.md sec. 2).

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.dequantize`.
    """
    check_dequantize_args(packed, scales, global_scale, out_dtype, swizzled)
    p3 = batched(packed)
    B, M, Kh = p3.shape
    K = 2 * Kh
    G = K // NVFP4_BLOCK
    s = linear_scale_bytes(scales, swizzled, M, G)
    codes_b = unpack_e2m1(p3).reshape(B, M, G, NVFP4_BLOCK)
    gs_b = global_scale.detach().reshape(-1, 1, 1)
    out = _nvfp4_dequant_blocks(codes_b, s, gs_b)
    return unbatched(out.reshape(B, M, K).to(out_dtype), packed)


def quant_dequant(x: Tensor, global_scale: Tensor, scale_method: str = "amax") -> Tensor:
    """NVFP4 fake quantization: bit-identical to
    ``dequantize(*quantize(x, gs, scale_method=scale_method), gs, x.dtype)``.

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.quant_dequant`.
    """
    check_quant_dequant_args(x, global_scale, scale_method)
    codes, sf, gs_b = _nvfp4_quantize_core(x, global_scale, scale_method, None)
    B, M, K = codes.shape
    out = _nvfp4_dequant_blocks(codes.reshape(B, M, K // NVFP4_BLOCK, NVFP4_BLOCK), sf, gs_b)
    return unbatched(out.reshape(B, M, K).to(x.dtype), x)
