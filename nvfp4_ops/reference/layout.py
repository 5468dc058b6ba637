"""Data and scale layouts: E2M1 nibble packing and the 128x4 scale swizzle (docs/spec.md sections 1, 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_pack_args, check_swizzle_args, check_unswizzle_args
from ._common import batched, roundup, unbatched


def pack_e2m1(codes: Tensor) -> Tensor:
    """Pack E2M1 codes two per byte: element ``2i`` in the low nibble, ``2i+1`` in the high.

    Parameters
    ----------
    codes : Tensor
        uint8 ``[..., K]`` with ``K`` even, values 0..15.

    Returns
    -------
    Tensor
        uint8 ``[..., K/2]``.
    """
    check_pack_args(codes)
    c = codes.detach().to(torch.uint8) & 0x0F
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_e2m1(packed: Tensor) -> Tensor:
    """Unpack bytes into E2M1 codes; the inverse of :func:`pack_e2m1`.

    Parameters
    ----------
    packed : Tensor
        uint8 ``[..., K/2]``.

    Returns
    -------
    Tensor
        uint8 ``[..., K]``, values 0..15.
    """
    p = packed.detach()
    return torch.stack((p & 0x0F, p >> 4), dim=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)


def swizzle_scales(scales: Tensor) -> Tensor:
    """Rearrange a scale matrix into the 128x4 swizzled layout (docs/spec.md section 4).

    The byte of ``S[r][c]`` goes to
    ``((r // 128) * (Kp // 4) + c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4``
    after padding ``M`` to ``Mp = roundup(M, 128)`` and ``Kb`` to ``Kp = roundup(Kb, 4)``
    with zero bytes. Implemented as one reshape/permute: ``r = 128 rb + 32 r1 + r0``,
    ``c = 4 cb + c0`` is stored at ``[rb, cb, r0, r1, c0]``.

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.swizzle_scales`.
    """
    check_swizzle_args(scales)
    s3 = batched(scales).view(torch.uint8)
    B, M, Kb = s3.shape
    Mp, Kp = roundup(M, 128), roundup(Kb, 4)
    padded = torch.zeros((B, Mp, Kp), dtype=torch.uint8, device=s3.device)
    padded[:, :M, :Kb] = s3
    out = (
        padded.view(B, Mp // 128, 4, 32, Kp // 4, 4)
        .permute(0, 1, 4, 3, 2, 5)
        .reshape(B, Mp, Kp)
        .view(scales.dtype)
    )
    return unbatched(out, scales)


def unswizzle_scales(swizzled: Tensor, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`swizzle_scales`: recover the ``[rows, cols]`` linear scales.

    Arguments and outputs: see the op, :func:`nvfp4_ops.ops.unswizzle_scales`.
    """
    check_unswizzle_args(swizzled, rows, cols)
    s3 = batched(swizzled).view(torch.uint8)
    B, Mp, Kp = s3.shape
    lin = (
        s3.reshape(B, Mp // 128, Kp // 4, 32, 4, 4)
        .permute(0, 1, 4, 3, 2, 5)
        .reshape(B, Mp, Kp)[:, :rows, :cols]
        .clone(memory_format=torch.contiguous_format)
        .view(swizzled.dtype)
    )
    return unbatched(lin, swizzled)


def linear_scale_bytes(scales: Tensor, swizzled: bool, rows: int, cols: int) -> Tensor:
    """Block scales as batched linear uint8 bytes ``[B, rows, cols]`` (unswizzled if needed)."""
    s = batched(scales).view(torch.uint8)
    return unswizzle_scales(s, rows, cols) if swizzled else s
