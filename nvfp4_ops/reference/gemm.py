"""Reference GEMMs with a low-bit weight, and the prepack layout of the fused NVFP4 kernel.

``y = x @ W^T (+ bias)`` for a weight ``W [N, K]`` stored in NVFP4 or MX: the weight
dequantized to fp32 with the reference codecs, an fp32 matmul, the bias added in fp32, one
cast to the activation dtype. These are the CPU implementations of the GEMM ops and the
ground truth of the CUDA kernel of ``csrc/gemm``, which differs from them only by the fp32
summation order (relative Frobenius error against the ``*_fp32`` result below 4e-3 for
bf16 and 6e-4 for fp16 outputs: ``tests/cuda/test_gemm.py``).

``prepack_nvfp4_w4a16`` / ``unprepack_nvfp4_w4a16`` move bytes only (every device runs
this code): the 16 rows x 512 columns that one warp of the kernel reads per K step become
one contiguous tile, and the tiles of 16 rows follow each other along K.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _checks
from ._checks import PREPACK_K, PREPACK_ROWS, prepacked_shapes
from ._common import F32
from .mx import mx_dequantize
from .nvfp4 import dequantize

__all__ = [
    "gemm_mx_w16",
    "gemm_mx_w16_fp32",
    "gemm_nvfp4_w4a16",
    "gemm_nvfp4_w4a16_fp32",
    "gemm_nvfp4_w4a16_prepacked",
    "prepack_nvfp4_w4a16",
    "unprepack_nvfp4_w4a16",
]


def _linear_fp32(x: Tensor, w: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``x @ w^T (+ bias)`` in fp32 for an fp32 weight ``w [N, K]``: ``[..., N]`` fp32."""
    y = torch.matmul(x.detach().to(F32), w.t())
    if bias is not None:
        y = y + bias.detach().to(F32)
    return y


def gemm_nvfp4_w4a16_fp32(
    x: Tensor, packed: Tensor, scales: Tensor, global_scale: Tensor, bias: Optional[Tensor] = None
) -> Tensor:
    """The result of ``gemm_nvfp4_w4a16`` before its cast: fp32 ``[..., N]``.

    The weight dequantized to fp32 by :func:`~nvfp4_ops.reference.dequantize`, an fp32
    matmul, the bias added in fp32. The CUDA tests measure the kernel's error against this.
    """
    _checks.check_gemm_nvfp4_w4a16_args(x, packed, scales, global_scale, bias)
    return _linear_fp32(x, dequantize(packed, scales, global_scale, F32), bias)


def gemm_nvfp4_w4a16(
    x: Tensor, packed: Tensor, scales: Tensor, global_scale: Tensor, bias: Optional[Tensor] = None
) -> Tensor:
    """``x @ W^T (+ bias)`` for an NVFP4 weight: :func:`gemm_nvfp4_w4a16_fp32`, one cast to
    ``x.dtype``. The arguments: :func:`nvfp4_ops.gemm_nvfp4_w4a16`."""
    return gemm_nvfp4_w4a16_fp32(x, packed, scales, global_scale, bias).to(x.dtype)


#: Where prepack_nvfp4_w4a16 puts the bits of the 8 codes of each little-endian 32-bit code
#: word (code c = element c of the word, its bits m, e0, e1, s = bit 4c + 0..3 of the plain
#: word): PREPACK_BITS[c] = the destination bits of (m, e0, e1, s). The kernel then gets the
#: pairs (c3, c7), (c2, c6), (c1, c5), (c0, c4) in the bf16 / fp16 exponent-field positions
#: with funnel rotations by 0 / 4 / 10 / (6 and 14) and masks (csrc/gemm a_pairs_pp).
PREPACK_BITS = (
    (0, 1, 26, 9),     # c0 (low half of the 4th pair)
    (28, 29, 30, 5),   # c1
    (2, 3, 4, 11),     # c2
    (6, 7, 8, 15),     # c3
    (16, 17, 10, 25),  # c4
    (12, 13, 14, 21),  # c5
    (18, 19, 20, 27),  # c6
    (22, 23, 24, 31),  # c7
)


def _permute_code_bits(t: Tensor, inverse: bool) -> Tensor:
    """The bits of each 4-byte code word of ``t`` (uint8, last dim a multiple of 4) moved as
    :data:`PREPACK_BITS` says (``inverse``: back)."""
    w = t.contiguous().view(torch.int32)
    out = torch.zeros_like(w)
    for c, dests in enumerate(PREPACK_BITS):
        for i, d in enumerate(dests):
            src, dst = (d, 4 * c + i) if inverse else (4 * c + i, d)
            out |= ((w >> src) & 1) << dst
    return out.view(torch.uint8)


def prepack_nvfp4_w4a16(packed: Tensor, scales: Tensor) -> Tuple[Tensor, Tensor]:
    """Reorder an NVFP4 weight for ``gemm_nvfp4_w4a16_prepacked`` (exact, invertible).

    ``packed`` uint8 ``[N, K/2]`` -> ``[ceil(N/16), ceil(K/512), 16, 256]`` and ``scales``
    float8_e4m3fn ``[N, K/16]`` -> ``[ceil(N/16), ceil(K/512), 16, 32]``, zero padded; the
    bits of each 32-bit word of codes permuted as :data:`PREPACK_BITS` says. Nothing is lost:
    :func:`unprepack_nvfp4_w4a16` gives the bytes back.
    """
    _checks.check_prepack_nvfp4_w4a16_args(packed, scales)
    N, K = packed.shape[0], 2 * packed.shape[1]
    (g, s, _, _), _ = prepacked_shapes(N, K)

    def tile(t: Tensor, width: int) -> Tensor:  # [N, c] -> [g, s, 16, width]
        t = F.pad(t, (0, s * width - t.shape[1], 0, g * PREPACK_ROWS - N))
        # into a fresh contiguous tensor: .contiguous() would keep the permuted strides
        # of a size-1 dim, which the fake (and a fresh tensor) do not have
        out = t.new_empty((g, s, PREPACK_ROWS, width))
        return out.copy_(t.reshape(g, PREPACK_ROWS, s, width).permute(0, 2, 1, 3))

    sb = tile(scales.view(torch.uint8), PREPACK_K // 16)
    return _permute_code_bits(tile(packed, PREPACK_K // 2), False), sb.view(torch.float8_e4m3fn)


def unprepack_nvfp4_w4a16(packed: Tensor, scales: Tensor, n: int, k: int) -> Tuple[Tensor, Tensor]:
    """The exact inverse of :func:`prepack_nvfp4_w4a16` for a weight ``[n, k]``."""
    _checks.check_unprepack_nvfp4_w4a16_args(packed, scales, n, k)

    def untile(t: Tensor, width: int) -> Tensor:  # [g, s, 16, width] -> [n, k / (512/width)]
        g, s = t.shape[:2]
        flat = t.permute(0, 2, 1, 3).reshape(g * PREPACK_ROWS, s * width)
        return flat[:n, : k // (PREPACK_K // width)].contiguous()

    sb = untile(scales.view(torch.uint8), PREPACK_K // 16)
    return untile(_permute_code_bits(packed, True), PREPACK_K // 2), sb.view(torch.float8_e4m3fn)


def gemm_nvfp4_w4a16_prepacked(
    x: Tensor, packed: Tensor, scales: Tensor, global_scale: Tensor, n: int,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """``gemm_nvfp4_w4a16`` for a weight of ``n`` rows from :func:`prepack_nvfp4_w4a16`."""
    _checks.check_gemm_nvfp4_w4a16_prepacked_args(x, packed, scales, global_scale, n, bias)
    p, s = unprepack_nvfp4_w4a16(packed, scales, n, x.shape[-1])
    return gemm_nvfp4_w4a16(x, p, s, global_scale, bias)


def gemm_mx_w16_fp32(
    x: Tensor, data: Tensor, scales: Tensor, elem: str, bias: Optional[Tensor] = None
) -> Tensor:
    """The result of ``gemm_mx_w16`` before its cast: fp32 ``[..., N]``.

    The weight dequantized to fp32 by :func:`~nvfp4_ops.reference.mx_dequantize`, an fp32
    matmul, the bias added in fp32.
    """
    _checks.check_gemm_mx_w16_args(x, data, scales, elem, bias)
    return _linear_fp32(x, mx_dequantize(data, scales, elem, F32), bias)


def gemm_mx_w16(
    x: Tensor, data: Tensor, scales: Tensor, elem: str, bias: Optional[Tensor] = None
) -> Tensor:
    """``x @ W^T (+ bias)`` for an MX weight (MXFP8 W8A16 / MXFP4 W4A16):
    :func:`gemm_mx_w16_fp32`, one cast to ``x.dtype``. The arguments:
    :func:`nvfp4_ops.gemm_mx_w16`."""
    return gemm_mx_w16_fp32(x, data, scales, elem, bias).to(x.dtype)
