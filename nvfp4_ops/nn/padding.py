"""Padding for the alignment of block-scaled GEMMs (CUTLASS / cuBLAS).

cuBLAS's NVFP4 and MXFP8 GEMMs (``torch.nn.functional.scaled_mm``) want the weight's
``N`` and ``K`` to be multiples of 32 (FP4 operands hold two elements per byte and the
packed dims must be multiples of 16 bytes). A layer whose shape is not aligned is
padded once, at load time, with zero elements; each call pads its activation's ``K``
with zeros and slices the output back to ``N`` columns.

Zero padding is exact: a padded NVFP4 block is all-zero codes with scale byte 0x00 and
a padded MX block is zero elements (any finite scale), so every padded element
dequantizes to +0 and adds nothing to the GEMM; the activation's zero columns meet the
weight's zero columns, and the quantized activation's blocks are unchanged (a block of
16 / 32 lies either fully inside ``K`` or fully inside the padding, because ``K`` is a
multiple of the block size already, and zeros do not change a global amax).

Every ``pad_*`` has an exact inverse (``unpad_*``): ``unpad(pad(t)) == t`` byte for byte.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ALIGN",
    "round_up",
    "pad_nvfp4_weight",
    "unpad_nvfp4_weight",
    "pad_mx_weight",
    "unpad_mx_weight",
    "pad_activation",
    "unpad_output",
]

#: The alignment of N and K used by the linear layers' native-GEMM path.
ALIGN = 32


def round_up(n: int, multiple: int = ALIGN) -> int:
    """The smallest multiple of ``multiple`` that is ``>= n``."""
    return (n + multiple - 1) // multiple * multiple


def _pad_last2(t: Tensor, rows: int, cols: int) -> Tensor:
    """Zero-pad the last two dims of ``t`` to ``[rows, cols]`` (bytes, any dtype)."""
    dr, dc = rows - t.shape[-2], cols - t.shape[-1]
    if dr == 0 and dc == 0:
        return t
    # F.pad has no kernels for the float8 / fp4 dtypes: pad the raw bytes.
    raw = t.view(torch.uint8) if t.element_size() == 1 and t.dtype != torch.uint8 else t
    out = F.pad(raw, (0, dc, 0, dr))
    return out.view(t.dtype) if raw is not t else out


def pad_nvfp4_weight(
    packed: Tensor, scales: Tensor, multiple: int = ALIGN
) -> Tuple[Tensor, Tensor]:
    """Zero-pad an NVFP4 weight so that ``N`` and ``K`` are multiples of ``multiple``.

    Parameters
    ----------
    packed : Tensor
        uint8 ``[N, K/2]`` (or ``[..., N, K/2]``), two E2M1 codes per byte.
    scales : Tensor
        float8_e4m3fn ``[..., N, K/16]``, the linear (not swizzled) layout.
    multiple : int
        The alignment (32 for cuBLAS / CUTLASS NVFP4 GEMMs); a multiple of 16.

    Returns
    -------
    (packed, scales) : uint8 ``[..., Np, Kp/2]`` and float8_e4m3fn ``[..., Np, Kp/16]``
        with ``Np = round_up(N)``, ``Kp = round_up(K)``; the new bytes are 0 (code +0,
        scale 0), so the padded rows and columns dequantize to 0. The inputs are
        returned unchanged (not copied) when already aligned.
    """
    if multiple % 16:
        raise ValueError(f"pad_nvfp4_weight: multiple must be a multiple of 16, got {multiple}")
    n, k = packed.shape[-2], packed.shape[-1] * 2
    if tuple(scales.shape[-2:]) != (n, k // 16):
        raise ValueError(
            f"pad_nvfp4_weight: scales must be linear [N, K/16] = [{n}, {k // 16}], "
            f"got {list(scales.shape)}"
        )
    np_, kp = round_up(n, multiple), round_up(k, multiple)
    return _pad_last2(packed, np_, kp // 2), _pad_last2(scales, np_, kp // 16)


def unpad_nvfp4_weight(
    packed: Tensor, scales: Tensor, out_features: int, in_features: int
) -> Tuple[Tensor, Tensor]:
    """The exact inverse of :func:`pad_nvfp4_weight`: slice back to ``[N, K/2]``, ``[N, K/16]``."""
    return (
        packed[..., :out_features, : in_features // 2],
        scales[..., :out_features, : in_features // 16],
    )


def pad_mx_weight(
    data: Tensor, scales: Tensor, elem: str = "e4m3", multiple: int = ALIGN
) -> Tuple[Tensor, Tensor]:
    """Zero-pad an MX weight (MXFP8 ``elem="e4m3"`` or MXFP4 ``"e2m1"``) to aligned N, K.

    Parameters
    ----------
    data : Tensor
        float8_e4m3fn ``[..., N, K]`` (MXFP8) or packed uint8 ``[..., N, K/2]`` (MXFP4).
    scales : Tensor
        E8M0 bytes (uint8 or float8_e8m0fnu) ``[..., N, K/32]``, linear.
    elem : {"e4m3", "e2m1"}
    multiple : int
        A multiple of 32.

    Returns
    -------
    (data, scales) with ``N`` and ``K`` rounded up; new elements are 0 and new scale
    bytes 0 (2^-127: finite, and multiplying zeros only).
    """
    if multiple % 32:
        raise ValueError(f"pad_mx_weight: multiple must be a multiple of 32, got {multiple}")
    per_byte = 2 if elem == "e2m1" else 1
    n, k = data.shape[-2], data.shape[-1] * per_byte
    if tuple(scales.shape[-2:]) != (n, k // 32):
        raise ValueError(
            f"pad_mx_weight: scales must be linear [N, K/32] = [{n}, {k // 32}], "
            f"got {list(scales.shape)}"
        )
    np_, kp = round_up(n, multiple), round_up(k, multiple)
    return _pad_last2(data, np_, kp // per_byte), _pad_last2(scales, np_, kp // 32)


def unpad_mx_weight(
    data: Tensor, scales: Tensor, out_features: int, in_features: int, elem: str = "e4m3"
) -> Tuple[Tensor, Tensor]:
    """The exact inverse of :func:`pad_mx_weight`."""
    per_byte = 2 if elem == "e2m1" else 1
    return (
        data[..., :out_features, : in_features // per_byte],
        scales[..., :out_features, : in_features // 32],
    )


def pad_activation(x: Tensor, in_features_padded: int) -> Tensor:
    """Zero-pad the last dim (``K``) of an activation ``[..., K]`` to ``in_features_padded``.

    Pad before quantizing: the padded blocks are all zero and quantize to zero.
    Returns ``x`` itself when no padding is needed.
    """
    k = x.shape[-1]
    if in_features_padded < k:
        raise ValueError(
            f"pad_activation: in_features_padded ({in_features_padded}) < K ({k})"
        )
    if in_features_padded == k:
        return x
    return F.pad(x, (0, in_features_padded - k))


def unpad_output(y: Tensor, out_features: int) -> Tensor:
    """Slice a padded GEMM output ``[..., Np]`` back to ``[..., out_features]`` (a view)."""
    return y if y.shape[-1] == out_features else y[..., :out_features]
