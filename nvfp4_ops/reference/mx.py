"""MXFP8 / MXFP4: E4M3 or E2M1 elements with an E8M0 scale per 32 elements (docs/spec.md section 3)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ._checks import (
    check_mx_dequantize_args,
    check_mx_quantize_args,
    check_mx_quantize_rowcol_args,
)
from ._common import F32, MX_BLOCK, batched, unbatched
from .elements import (
    _inv_pow2_from_e8m0,
    _mx_naive_bytes,
    _pow2_from_e8m0,
    e2m1_decode,
    e2m1_encode,
    e4m3_from_fp32,
)
from .layout import linear_scale_bytes, pack_e2m1, swizzle_scales, unpack_e2m1
from .search import _mx_search


def _mx_encode_with_scale(xb: Tensor, b_bytes: Tensor, elem: str) -> Tensor:
    """Element bytes (E4M3) or codes (E2M1) of MX blocks ``[..., 32]`` for scale bytes.

    ``y = RN(x * 2^(127 - b))`` then E4M3 RNE saturating or E2M1 (docs/spec.md sections 1, 3).
    Blocks with ``b == 255`` get 0.
    """
    b = b_bytes.to(torch.int32)
    y = xb * _inv_pow2_from_e8m0(b).unsqueeze(-1)
    data = e4m3_from_fp32(y) if elem == "e4m3" else e2m1_encode(y)
    return torch.where((b == 255).unsqueeze(-1), 0, data)


def mx_quantize(
    x: Tensor,
    elem: str = "e4m3",
    rounding: str = "rceil",
    swizzle: bool = False,
    axis: int = -1,
    scale_method: str = "amax",
) -> Tuple[Tensor, Tensor]:
    """Quantize to MXFP8 (``elem="e4m3"``) or MXFP4 (``elem="e2m1"``) (docs/spec.md sections 3, 5).

    One E8M0 scale byte ``b`` per 32 elements (``rceil`` or ``floor`` rounding, or the
    exhaustive ``mse`` search over 0..254); elements ``RN(x * 2^(127 - b))`` in E4M3
    (RNE, saturating) or E2M1. A block holding NaN or +-inf gets ``b = 255`` and
    element bytes 0.

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.mx_quantize`.
    """
    check_mx_quantize_args(x, elem, rounding, swizzle, axis, scale_method)
    x = x.detach()
    if axis in (-2, x.dim() - 2):
        x = x.transpose(-1, -2).contiguous()
    x3 = batched(x)
    B, M, K = x3.shape
    G = K // MX_BLOCK
    xb = x3.to(F32).reshape(B, M, G, MX_BLOCK)
    b = _mx_naive_bytes(xb, elem, rounding)
    if scale_method == "mse":
        b = _mx_search(xb.reshape(B * M, G, MX_BLOCK), b.reshape(B * M, G), elem).reshape(B, M, G)
    data = _mx_encode_with_scale(xb, b, elem).reshape(B, M, K)
    data = data.view(torch.float8_e4m3fn) if elem == "e4m3" else pack_e2m1(data)
    data, b = unbatched(data, x), unbatched(b, x)
    return data, (swizzle_scales(b) if swizzle else b)


def mx_quantize_rowcol(
    x: Tensor, rounding: str = "rceil", swizzle: bool = False
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """MXFP8 of ``x`` along both axes: ``(*mx_quantize(x, "e4m3", rounding, swizzle, -1),
    *mx_quantize(x, "e4m3", rounding, swizzle, -2))`` (docs/spec.md section 3).

    The rowwise operand (blocks of 32 along ``K``: ``data [..., M, K]``, scales
    ``[..., M, K/32]``) and the columnwise one (blocks along ``M``, transposed: ``data
    [..., K, M]``, scales ``[..., K, M/32]``), each set of scales linear or swizzled.
    Elements are E4M3 only.

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.mx_quantize_rowcol`.
    """
    check_mx_quantize_rowcol_args(x, rounding, swizzle)
    row = mx_quantize(x, "e4m3", rounding, swizzle, -1)
    col = mx_quantize(x, "e4m3", rounding, swizzle, -2)
    return (*row, *col)


def mx_dequantize(
    data: Tensor,
    scales: Tensor,
    elem: str,
    out_dtype: torch.dtype,
    swizzled: bool = False,
) -> Tensor:
    """Dequantize MX: ``elem * 2^(b - 127)`` exactly in fp32, then one cast (docs/spec.md sec. 3).

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.mx_dequantize`.
    """
    check_mx_dequantize_args(data, scales, elem, out_dtype, swizzled)
    d3 = batched(data)
    vals = d3.to(F32) if elem == "e4m3" else e2m1_decode(unpack_e2m1(d3))
    B, M, K = vals.shape
    G = K // MX_BLOCK
    mult = _pow2_from_e8m0(linear_scale_bytes(scales, swizzled, M, G).to(torch.int32))
    out = (vals.reshape(B, M, G, MX_BLOCK) * mult.unsqueeze(-1)).reshape(B, M, K).to(out_dtype)
    return unbatched(out, data)
