"""Typed Python wrappers around ``torch.ops.nvfp4.*``.

The ops themselves are the contract (they work in torch.compile graphs and on every
device); these wrappers add keyword defaults, a computed global scale when none is
given, and documentation. Numerics: SPEC.md. Every function returns new tensors.

Layouts
-------
* NVFP4 packed data: uint8 ``[..., M, K/2]``, element ``2i`` in the low nibble.
* NVFP4 scales: ``float8_e4m3fn`` ``[..., M, K/16]``, or swizzled 128x4 ``[Mp, Kp]``
  (``[B, Mp, Kp]`` for 3-D input), ``Mp = roundup(M, 128)``, ``Kp = roundup(K/16, 4)``.
* MX scales: uint8 E8M0 bytes ``[..., M, K/32]`` (``.view(torch.float8_e8m0fnu)`` to
  reinterpret), or swizzled likewise with ``Kp = roundup(K/32, 4)``.
* The global scale is the ENCODE scale ``2688 / amax`` (vLLM / compressed-tensors);
  ModelOpt's ``weight_scale_2`` and torchao's ``per_tensor_scale`` store ``1 / gs``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

_ops = torch.ops.nvfp4


def global_scale(x: Tensor) -> Tensor:
    """The NVFP4 encode global scale of ``x``: ``2688 / amax(|x|)``, fp32 ``[1]``.

    One reduction pass over the whole tensor (any shape). ``amax == 0`` gives 1.
    A NaN anywhere gives NaN; an infinite amax gives 0.
    """
    return _ops.global_scale(x)


def quantize(
    x: Tensor,
    global_scale: Optional[Tensor] = None,
    *,
    swizzle: bool = False,
    scale_method: str = "amax",
    hessian: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Quantize ``x`` to NVFP4.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32 / float16 / bfloat16, ``K % 16 == 0``.
    global_scale : Tensor, optional
        fp32 encode scale: 1 element, or ``[B]`` (one per batch) for 3-D ``x``.
        Computed with :func:`global_scale` when omitted.
    swizzle : bool
        Write the block scales in the 128x4 swizzled layout of block-scaled GEMMs.
    scale_method : {"amax", "mse", "hessian"}
        ``"amax"``: the naive scale ``amax / 6``. ``"mse"`` / ``"hessian"``: per block the
        E4M3 scale that minimises the squared (or Hessian-weighted) error, exactly.
    hessian : Tensor, optional
        ``[K/16, 16, 16]`` fp32, needed by ``"hessian"``; see :func:`hessian_blocks`.

    Returns
    -------
    (packed, scales) : (uint8 ``[..., M, K/2]``, float8_e4m3fn scales)
    """
    if global_scale is None:
        global_scale = _ops.global_scale(x)
    return _ops.quantize(x, global_scale, swizzle, scale_method, hessian)


def dequantize(
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    swizzled: bool = False,
) -> Tensor:
    """Dequantize NVFP4 ``packed`` ``[..., M, K/2]`` with its scales into ``out_dtype``.

    ``swizzled`` says the scales are in the 128x4 layout (as ``quantize(swizzle=True)``
    writes them). Returns ``[..., M, K]``.
    """
    return _ops.dequantize(packed, scales, global_scale, out_dtype, swizzled)


def quant_dequant(x: Tensor, global_scale: Optional[Tensor] = None) -> Tensor:
    """NVFP4 fake quantization in one pass: ``dequantize(quantize(x))`` in ``x.dtype``.

    Differentiable with a straight-through gradient (identity), for QAT.
    """
    if global_scale is None:
        global_scale = _ops.global_scale(x.detach())
    return _ops.quant_dequant(x, global_scale)


def mx_quantize(
    x: Tensor,
    elem: str = "e4m3",
    *,
    rounding: str = "rceil",
    swizzle: bool = False,
    axis: int = -1,
    scale_method: str = "amax",
) -> Tuple[Tensor, Tensor]:
    """Quantize ``x`` to MXFP8 (``elem="e4m3"``) or MXFP4 (``elem="e2m1"``).

    Blocks of 32 along ``axis`` (-1, or -2 for the columnwise cast, which returns
    exactly ``mx_quantize(x.transpose(-1, -2).contiguous())``). ``rounding`` is
    ``"rceil"`` (cuBLAS / Transformer Engine) or ``"floor"`` (OCP MX v1.0).
    ``scale_method="mse"`` searches the E8M0 scales for the least squared error.

    Returns ``(data, scales)``: float8_e4m3fn ``[..., M, K]`` or packed uint8
    ``[..., M, K/2]``, and uint8 E8M0 scales.
    """
    return _ops.mx_quantize(x, elem, rounding, swizzle, axis, scale_method)


def mx_dequantize(
    data: Tensor,
    scales: Tensor,
    elem: str = "e4m3",
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    swizzled: bool = False,
) -> Tensor:
    """Dequantize MXFP8 / MXFP4 ``data`` with its E8M0 scales into ``out_dtype``."""
    return _ops.mx_dequantize(data, scales, elem, out_dtype, swizzled)


def swizzle_scales(scales: Tensor) -> Tensor:
    """Linear ``[M, Kb]`` / ``[B, M, Kb]`` block scales -> the 128x4 layout, zero padded."""
    return _ops.swizzle_scales(scales)


def unswizzle_scales(swizzled: Tensor, rows: int, cols: int) -> Tensor:
    """The inverse of :func:`swizzle_scales`: back to ``[rows, cols]`` (per batch)."""
    return _ops.unswizzle_scales(swizzled, rows, cols)


def _quant_dequant_backward(ctx, grad):
    return grad, None  # straight-through estimator; no gradient for the global scale


torch.library.register_autograd("nvfp4::quant_dequant", _quant_dequant_backward)
