"""Typed Python wrappers around ``torch.ops.nvfp4.*``.

The ops themselves are the contract (they work in torch.compile graphs and on every
device); these wrappers add keyword defaults, a computed global scale when none is
given, and documentation. Numerics: ``docs/spec.md``. Every function returns new tensors.

Beside each wrapper is the op's fake (meta) implementation for torch.compile and
FakeTensor: it runs the very checks of the reference (:mod:`nvfp4_ops.reference._checks`,
so a bad argument fails at trace time with the message every device raises) and returns
empty outputs of exactly the real shapes, dtypes and (contiguous) strides. The fakes and
the autograd formula are registered when the compiled library ``_C`` (which defines the
schemas) is loaded; without it the wrappers raise an error saying how to build it.

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

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from . import _library
from .reference import _checks
from .reference import training as _reference_training
from .reference._common import roundup

_E4M3 = torch.float8_e4m3fn
_HAVE_C = _library.load_extension() is None


class _MissingOps:
    """Stands for ``torch.ops.nvfp4`` without ``_C``: every op raises how to build it."""

    def __getattr__(self, op: str):
        _library.require_extension(f"nvfp4_ops.{op}")


_ops = torch.ops.nvfp4 if _HAVE_C else _MissingOps()


def _fake(op: str) -> Callable:
    """Register the decorated function as the fake of ``nvfp4::<op>`` (when ``_C`` is loaded)."""

    def register(fn: Callable) -> Callable:
        return torch.library.register_fake(f"nvfp4::{op}")(fn) if _HAVE_C else fn

    return register


def _scales_like(like: Tensor, lead, rows: int, kb: int, swizzle: bool, dtype) -> Tensor:
    """Linear [.., rows, kb] or swizzled [.., roundup(rows,128), roundup(kb,4)] scales."""
    if swizzle:
        return like.new_empty((*lead, roundup(rows, 128), roundup(kb, 4)), dtype=dtype)
    return like.new_empty((*lead, rows, kb), dtype=dtype)


# --------------------------------------------------------------------------------------
# global_scale
# --------------------------------------------------------------------------------------


def global_scale(x: Tensor) -> Tensor:
    """The NVFP4 encode global scale of ``x``: ``2688 / amax(|x|)``, fp32 ``[1]``.

    Parameters
    ----------
    x : Tensor
        Any shape; float32, float16 or bfloat16. One reduction pass over the whole tensor.

    Returns
    -------
    Tensor
        fp32 ``[1]`` on the device of ``x``. ``amax == 0`` (and an empty ``x``) gives 1; a
        finite amax so small that the division overflows gives the largest finite fp32; an
        infinite amax gives 0; a NaN gives NaN.
    """
    return _ops.global_scale(x)


@_fake("global_scale")
def _global_scale_fake(x):
    _checks.check_global_scale_args(x)
    return x.new_empty((1,), dtype=torch.float32)


# --------------------------------------------------------------------------------------
# quantize
# --------------------------------------------------------------------------------------


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
        ``[M, K]`` or ``[B, M, K]``, float32 / float16 / bfloat16, ``K % 16 == 0``, any
        strides.
    global_scale : Tensor, optional
        fp32 encode scale: 1 element, or ``[B]`` (one per batch) for 3-D ``x``.
        Computed with :func:`global_scale` when omitted.
    swizzle : bool
        Write the block scales in the 128x4 swizzled layout of block-scaled GEMMs.
    scale_method : {"amax", "mse", "hessian", "4over6"}
        ``"amax"``: the naive scale ``amax / 6``. ``"4over6"``: of the scales ``amax / 6``
        and ``amax / 4``, the one of smaller squared error per block (docs/spec.md sec. 2).
        ``"mse"`` / ``"hessian"``: per block the E4M3 scale that minimises the squared (or
        Hessian-weighted) error, exactly.
    hessian : Tensor, optional
        ``[K/16, 16, 16]`` fp32, finite, with ``"hessian"`` (None otherwise); see
        :func:`hessian_blocks`.

    Returns
    -------
    packed : Tensor
        uint8 ``[..., M, K/2]``, element ``2i`` in the low nibble.
    scales : Tensor
        float8_e4m3fn ``[..., M, K/16]``, or swizzled ``[..., roundup(M, 128), roundup(K/16, 4)]``.
    """
    if global_scale is None:
        global_scale = _ops.global_scale(x)
    return _ops.quantize(x, global_scale, swizzle, scale_method, hessian)


@_fake("quantize")
def _quantize_fake(x, global_scale, swizzle=False, scale_method="amax", hessian=None):
    _checks.check_quantize_args(x, global_scale, swizzle, scale_method, hessian)
    *lead, m, k = x.shape
    packed = x.new_empty((*lead, m, k // 2), dtype=torch.uint8)
    return packed, _scales_like(x, lead, m, k // 16, swizzle, _E4M3)


# --------------------------------------------------------------------------------------
# dequantize
# --------------------------------------------------------------------------------------


def dequantize(
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    swizzled: bool = False,
) -> Tensor:
    """Dequantize NVFP4 data with its block scales and global scale.

    Parameters
    ----------
    packed : Tensor
        uint8 ``[M, K/2]`` or ``[B, M, K/2]``.
    scales : Tensor
        float8_e4m3fn ``[..., M, K/16]``, or swizzled (see ``swizzled``); ``M`` and ``K``
        are read from ``packed``.
    global_scale : Tensor
        The fp32 encode scale :func:`quantize` used: 1 element, or ``[B]``.
    out_dtype : torch.dtype
        float32, float16 or bfloat16.
    swizzled : bool
        The scales are in the 128x4 layout (as ``quantize(swizzle=True)`` writes them).

    Returns
    -------
    Tensor
        ``[..., M, K]`` of ``out_dtype``. Blocks with scale 0x7F (non-finite input) are NaN.
    """
    return _ops.dequantize(packed, scales, global_scale, out_dtype, swizzled)


@_fake("dequantize")
def _dequantize_fake(packed, scales, global_scale, out_dtype, swizzled=False):
    _checks.check_dequantize_args(packed, scales, global_scale, out_dtype, swizzled)
    *lead, m, half_k = packed.shape
    return packed.new_empty((*lead, m, half_k * 2), dtype=out_dtype)


# --------------------------------------------------------------------------------------
# quant_dequant
# --------------------------------------------------------------------------------------


def quant_dequant(
    x: Tensor, global_scale: Optional[Tensor] = None, *, scale_method: str = "amax"
) -> Tensor:
    """NVFP4 fake quantization in one pass: ``dequantize(quantize(x))`` in ``x.dtype``.

    Differentiable with a straight-through gradient (identity), for QAT.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32 / float16 / bfloat16, ``K % 16 == 0``.
    global_scale : Tensor, optional
        fp32, 1 element or ``[B]``; computed from ``x`` when omitted.
    scale_method : {"amax", "4over6"}
        The block scales, as in :func:`quantize`.

    Returns
    -------
    Tensor
        Same shape and dtype as ``x``, contiguous.
    """
    if global_scale is None:
        global_scale = _ops.global_scale(x.detach())
    return _ops.quant_dequant(x, global_scale, scale_method)


@_fake("quant_dequant")
def _quant_dequant_fake(x, global_scale, scale_method="amax"):
    _checks.check_quant_dequant_args(x, global_scale, scale_method)
    return x.new_empty(x.shape)


def _quant_dequant_backward(ctx, grad):
    return grad, None, None  # straight-through estimator; nothing for the global scale


if _HAVE_C:
    torch.library.register_autograd("nvfp4::quant_dequant", _quant_dequant_backward)


# --------------------------------------------------------------------------------------
# mx_quantize
# --------------------------------------------------------------------------------------


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

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32 / float16 / bfloat16; the quantized dim a
        multiple of 32.
    elem : {"e4m3", "e2m1"}
        Element format.
    rounding : {"rceil", "floor"}
        E8M0 scale rounding: ``"rceil"`` (cuBLAS / Transformer Engine) or ``"floor"``
        (OCP MX v1.0); with ``scale_method="mse"`` it picks the naive scale that wins ties.
    swizzle : bool
        Write the scales in the 128x4 swizzled layout.
    axis : {-1, -2}
        Blocks of 32 along ``axis``; ``-2`` is the columnwise cast, exactly
        ``mx_quantize(x.transpose(-1, -2).contiguous())``.
    scale_method : {"amax", "mse"}
        ``"mse"`` searches all E8M0 scales 0..254 for the least squared error, exactly.

    Returns
    -------
    data : Tensor
        float8_e4m3fn ``[..., M, K]`` or packed uint8 ``[..., M, K/2]``.
    scales : Tensor
        uint8 E8M0 bytes ``[..., M, K/32]`` (or swizzled).
    """
    return _ops.mx_quantize(x, elem, rounding, swizzle, axis, scale_method)


@_fake("mx_quantize")
def _mx_quantize_fake(x, elem="e4m3", rounding="rceil", swizzle=False, axis=-1,
                      scale_method="amax"):
    _checks.check_mx_quantize_args(x, elem, rounding, swizzle, axis, scale_method)
    *lead, m, k = x.shape
    if axis in (-2, x.dim() - 2):  # the columnwise cast: blocks along M, output transposed
        m, k = k, m
    if elem == "e4m3":
        data = x.new_empty((*lead, m, k), dtype=_E4M3)
    else:
        data = x.new_empty((*lead, m, k // 2), dtype=torch.uint8)
    return data, _scales_like(x, lead, m, k // 32, swizzle, torch.uint8)


# --------------------------------------------------------------------------------------
# mx_quantize_rowcol
# --------------------------------------------------------------------------------------


def mx_quantize_rowcol(
    x: Tensor, *, rounding: str = "rceil", swizzle: bool = False
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Both MXFP8 operands of ``x`` from one read: rowwise (blocks along ``K``) and
    columnwise (blocks along ``M``), as training needs for the forward and backward GEMMs.

    Bit for bit ``(*mx_quantize(x, "e4m3", rounding=rounding, swizzle=swizzle, axis=-1),
    *mx_quantize(x, "e4m3", rounding=rounding, swizzle=swizzle, axis=-2))``. Elements are
    E4M3 only (MXFP8); the scale method is "amax".

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32 / float16 / bfloat16, ``M`` and ``K``
        multiples of 32, any strides.
    rounding : {"rceil", "floor"}
        E8M0 scale rounding, as in :func:`mx_quantize`.
    swizzle : bool
        Write both sets of scales in the 128x4 swizzled layout.

    Returns
    -------
    row_data : Tensor
        float8_e4m3fn ``[..., M, K]``.
    row_scales : Tensor
        uint8 E8M0 bytes ``[..., M, K/32]`` (swizzled: ``[..., roundup(M, 128),
        roundup(K/32, 4)]``).
    col_data : Tensor
        float8_e4m3fn ``[..., K, M]``: the MXFP8 of ``x^T``.
    col_scales : Tensor
        uint8 E8M0 bytes ``[..., K, M/32]`` (swizzled: ``[..., roundup(K, 128),
        roundup(M/32, 4)]``).
    """
    return _ops.mx_quantize_rowcol(x, rounding, swizzle)


@_fake("mx_quantize_rowcol")
def _mx_quantize_rowcol_fake(x, rounding="rceil", swizzle=False):
    _checks.check_mx_quantize_rowcol_args(x, rounding, swizzle)
    row = _mx_quantize_fake(x, "e4m3", rounding, swizzle, -1)
    col = _mx_quantize_fake(x, "e4m3", rounding, swizzle, -2)
    return (*row, *col)


# --------------------------------------------------------------------------------------
# mx_dequantize
# --------------------------------------------------------------------------------------


def mx_dequantize(
    data: Tensor,
    scales: Tensor,
    elem: str = "e4m3",
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    swizzled: bool = False,
) -> Tensor:
    """Dequantize MXFP8 / MXFP4 ``data`` with its E8M0 scales.

    Parameters
    ----------
    data : Tensor
        float8_e4m3fn ``[..., M, K]`` (e4m3) or packed uint8 ``[..., M, K/2]`` (e2m1).
    scales : Tensor
        uint8 or float8_e8m0fnu ``[..., M, K/32]`` (or swizzled); byte 255 gives NaN.
    elem : {"e4m3", "e2m1"}
        Element format.
    out_dtype : torch.dtype
        float32, float16 or bfloat16.
    swizzled : bool
        The scales are in the 128x4 layout.

    Returns
    -------
    Tensor
        ``[..., M, K]`` of ``out_dtype``.
    """
    return _ops.mx_dequantize(data, scales, elem, out_dtype, swizzled)


@_fake("mx_dequantize")
def _mx_dequantize_fake(data, scales, elem, out_dtype, swizzled=False):
    _checks.check_mx_dequantize_args(data, scales, elem, out_dtype, swizzled)
    *lead, m, k = data.shape
    if elem == "e2m1":
        k = k * 2
    return data.new_empty((*lead, m, k), dtype=out_dtype)


# --------------------------------------------------------------------------------------
# swizzle_scales / unswizzle_scales
# --------------------------------------------------------------------------------------


def swizzle_scales(scales: Tensor) -> Tensor:
    """Linear block scales -> the 128x4 swizzled layout, zero padded.

    Parameters
    ----------
    scales : Tensor
        ``[M, Kb]`` or ``[B, M, Kb]`` of any 1-byte dtype (each batch swizzled alone).

    Returns
    -------
    Tensor
        ``[..., roundup(M, 128), roundup(Kb, 4)]``, same dtype.
    """
    return _ops.swizzle_scales(scales)


@_fake("swizzle_scales")
def _swizzle_scales_fake(scales):
    _checks.check_swizzle_args(scales)
    *lead, m, kb = scales.shape
    return _scales_like(scales, lead, m, kb, True, scales.dtype)


def unswizzle_scales(swizzled: Tensor, rows: int, cols: int) -> Tensor:
    """The inverse of :func:`swizzle_scales`.

    Parameters
    ----------
    swizzled : Tensor
        ``[Mp, Kp]`` or ``[B, Mp, Kp]`` of any 1-byte dtype.
    rows, cols : int
        The unpadded ``M`` and ``Kb``: ``Mp = roundup(rows, 128)``, ``Kp = roundup(cols, 4)``.

    Returns
    -------
    Tensor
        ``[..., rows, cols]``, same dtype, a new contiguous tensor.
    """
    return _ops.unswizzle_scales(swizzled, rows, cols)


@_fake("unswizzle_scales")
def _unswizzle_scales_fake(swizzled, rows, cols):
    _checks.check_unswizzle_args(swizzled, rows, cols)
    *lead, _, _ = swizzled.shape
    return swizzled.new_empty((*lead, rows, cols))


# --------------------------------------------------------------------------------------
# Low-bit weight GEMMs (W4A16 / W8A16): y = x @ W^T (+ bias)
# --------------------------------------------------------------------------------------


def gemm_nvfp4_w4a16(
    x: Tensor,
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """``x @ W^T (+ bias)`` for an NVFP4 weight ``W [N, K]`` and a 16-bit activation.

    On CUDA (sm_80+) the fused kernel of ``csrc/gemm``: the weight is dequantized in
    registers (never materialised), tensor-core ``mma.sync`` with fp32 sums, split-K with a
    fixed-order reduction (the same bits on every run). It equals the reference (the weight
    dequantized to fp32, an fp32 matmul, one cast) up to the fp32 summation order: relative
    Frobenius error against the reference's fp32 result below 4e-3 for bf16 and 6e-4 for
    fp16 outputs; a NaN block scale gives NaN in its output column, as there. Fastest
    for few rows (``nvfp4_ops.nn`` switches to dequantize + ``F.linear`` above
    ``nvfp4_ops.nn.gemm.FUSED_MAX_M`` rows).

    Parameters
    ----------
    x : Tensor
        float16 or bfloat16 ``[..., K]``, any strides.
    packed, scales, global_scale : Tensor
        The weight as :func:`quantize` returns it: uint8 ``[N, K/2]``, float8_e4m3fn
        ``[N, K/16]`` (linear, not swizzled), the fp32 encode scale with one element.
    bias : Tensor, optional
        ``[N]`` of ``x``'s dtype, added in fp32 before the one rounding.

    Returns
    -------
    Tensor
        ``[..., N]`` of ``x``'s dtype.
    """
    return _ops.gemm_nvfp4_w4a16(x, packed, scales, global_scale, bias)


@_fake("gemm_nvfp4_w4a16")
def _gemm_nvfp4_w4a16_fake(x, packed, scales, global_scale, bias=None):
    _checks.check_gemm_nvfp4_w4a16_args(x, packed, scales, global_scale, bias)
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


def prepack_nvfp4_w4a16(packed: Tensor, scales: Tensor) -> Tuple[Tensor, Tensor]:
    """Reorder an NVFP4 weight for :func:`gemm_nvfp4_w4a16_prepacked` (bytes moved, exact).

    Parameters
    ----------
    packed, scales : Tensor
        uint8 ``[N, K/2]`` and float8_e4m3fn ``[N, K/16]`` (linear).

    Returns
    -------
    packed : Tensor
        uint8 ``[ceil(N/16), ceil(K/512), 16, 256]``: the 16 x 512 tile one warp of the
        kernel reads per step, contiguous, tiles of 16 rows in K order; zero padded.
    scales : Tensor
        float8_e4m3fn ``[ceil(N/16), ceil(K/512), 16, 32]``, likewise.
    """
    return _ops.prepack_nvfp4_w4a16(packed, scales)


@_fake("prepack_nvfp4_w4a16")
def _prepack_nvfp4_w4a16_fake(packed, scales):
    _checks.check_prepack_nvfp4_w4a16_args(packed, scales)
    wp, sp = _checks.prepacked_shapes(packed.shape[0], 2 * packed.shape[1])
    return packed.new_empty(wp), scales.new_empty(sp)


def unprepack_nvfp4_w4a16(packed: Tensor, scales: Tensor, n: int, k: int) -> Tuple[Tensor, Tensor]:
    """The exact inverse of :func:`prepack_nvfp4_w4a16` for a weight ``[n, k]``.

    Returns
    -------
    (packed, scales) : (Tensor, Tensor)
        uint8 ``[n, k/2]`` and float8_e4m3fn ``[n, k/16]``, bit for bit the input of
        :func:`prepack_nvfp4_w4a16`.
    """
    return _ops.unprepack_nvfp4_w4a16(packed, scales, n, k)


@_fake("unprepack_nvfp4_w4a16")
def _unprepack_nvfp4_w4a16_fake(packed, scales, n, k):
    _checks.check_unprepack_nvfp4_w4a16_args(packed, scales, n, k)
    return packed.new_empty((n, k // 2)), scales.new_empty((n, k // 16))


def gemm_nvfp4_w4a16_prepacked(
    x: Tensor,
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    n: int,
    bias: Optional[Tensor] = None,
) -> Tensor:
    """:func:`gemm_nvfp4_w4a16` with a weight of ``n`` rows from :func:`prepack_nvfp4_w4a16`.

    The same arithmetic and the same bits as the plain op; each warp of the kernel streams
    its weight in address order. NOT RUN ON A GPU YET (compiled; ``csrc/gemm/NOTES.md``).

    Returns
    -------
    Tensor
        ``[..., n]`` of ``x``'s dtype.
    """
    return _ops.gemm_nvfp4_w4a16_prepacked(x, packed, scales, global_scale, n, bias)


@_fake("gemm_nvfp4_w4a16_prepacked")
def _gemm_nvfp4_w4a16_prepacked_fake(x, packed, scales, global_scale, n, bias=None):
    _checks.check_gemm_nvfp4_w4a16_prepacked_args(x, packed, scales, global_scale, n, bias)
    return x.new_empty((*x.shape[:-1], n))


def gemm_mx_w16(
    x: Tensor, data: Tensor, scales: Tensor, elem: str, bias: Optional[Tensor] = None
) -> Tensor:
    """``x @ W^T (+ bias)`` for an MX weight ``W [N, K]`` (MXFP8 W8A16, MXFP4 W4A16).

    On CUDA a fused kernel (sm_80+: the codes converted to fp16/bf16 in registers, tensor-core
    mma, each 32-block's E8M0 scale applied to its fp32 partial sums; split-K summed in a
    fixed order, so the same bits on every run). Elsewhere the reference: the weight
    dequantized to fp32, an fp32 matmul, one cast. The layers (``nvfp4_ops.nn``) use it for
    weight-only MX schemes at small M.

    Parameters
    ----------
    x : Tensor
        float16 or bfloat16 ``[..., K]``, ``K % 32 == 0``.
    data, scales : Tensor
        The weight as :func:`mx_quantize` returns it: float8_e4m3fn ``[N, K]``
        (``elem="e4m3"``) or uint8 ``[N, K/2]`` (``"e2m1"``); E8M0 ``[N, K/32]`` (linear).
    elem : str
        ``"e4m3"`` or ``"e2m1"``.
    bias : Tensor, optional
        ``[N]`` of ``x``'s dtype.

    Returns
    -------
    Tensor
        ``[..., N]`` of ``x``'s dtype.
    """
    return _ops.gemm_mx_w16(x, data, scales, elem, bias)


@_fake("gemm_mx_w16")
def _gemm_mx_w16_fake(x, data, scales, elem, bias=None):
    _checks.check_gemm_mx_w16_args(x, data, scales, elem, bias)
    return x.new_empty((*x.shape[:-1], data.shape[0]))


# --------------------------------------------------------------------------------------
# training recipes (docs/spec.md section 8)
# --------------------------------------------------------------------------------------


def train_quantize(
    x: Tensor,
    global_scale: Optional[Tensor] = None,
    *,
    axis: int = -1,
    block_2d: bool = False,
    rounding: str = "nearest",
    seed: Optional[Tensor] = None,
    offset: Optional[Tensor] = None,
    hadamard_signs: Optional[Tensor] = None,
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """NVFP4 quantize with the options of the training recipes (docs/spec.md section 8).

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32 / float16 / bfloat16; the quantized dim a
        multiple of 16.
    global_scale : Tensor, optional
        fp32 encode scale, 1 element or ``[B]``. None: ``2688 / amax`` of the operand the
        op quantizes (after the Hadamard transform, if any), computed by the op.
    axis : {-1, -2}
        ``-1``: blocks of 16 along ``K`` (rowwise). ``-2``: blocks along ``M``
        (columnwise): the operand is ``x^T``, as if ``x.transpose(-1, -2)`` were quantized
        rowwise (data ``[..., K, M/2]``, scales ``[..., K, M/16]``).
    block_2d : bool
        One scale per 16x16 tile of ``x`` (from the tile's amax), repeated in the 1-D scale
        layout; quantizing with ``axis=-1`` and ``axis=-2`` then gives the same element
        values (``W`` and ``W^T`` agree). A last partial tile takes the rows present.
    rounding : {"nearest", "stochastic"}
        Element rounding: round to nearest even, or stochastic from the Philox4x32-10
        stream of ``seed`` at ``offset`` (element ``(b, m, k)`` uses word
        ``(b M + m) K + k``, whatever the axis).
    seed, offset : Tensor, optional
        int64, 1 element each, on ``x``'s device; needed by ``"stochastic"`` only. The op
        does not advance ``offset``: add :func:`sr_offset_increment` ``(x.numel())`` to it
        (in place; CUDA-graph safe) for fresh numbers on the next call.
    hadamard_signs : Tensor, optional
        fp32 ``[16]`` of +-1: apply the random Hadamard transform ``H16 diag(s) / 4`` to each
        block of 16 along the quantized dim before quantizing (see
        :func:`random_hadamard_signs`).
    swizzle : bool
        Scales in the 128x4 swizzled layout.

    Returns
    -------
    packed : Tensor
        uint8 ``[..., R, C/2]`` with ``(R, C) = (M, K)`` for axis -1 and ``(K, M)`` for -2.
    scales : Tensor
        float8_e4m3fn ``[..., R, C/16]`` or swizzled ``[..., roundup(R, 128), roundup(C/16, 4)]``.
    global_scale : Tensor
        fp32: the scale used (a copy of the one given, or the computed one, ``[1]``).
    """
    return _ops.train_quantize(x, global_scale, axis, block_2d, rounding, seed, offset,
                               hadamard_signs, swizzle)


@_fake("train_quantize")
def _train_quantize_fake(x, global_scale=None, axis=-1, block_2d=False, rounding="nearest",
                         seed=None, offset=None, hadamard_signs=None, swizzle=False):
    _checks.check_train_quantize_args(x, global_scale, axis, block_2d, rounding, seed, offset,
                                      hadamard_signs, swizzle)
    *lead, m, k = x.shape
    r, c = (k, m) if axis in (-2, x.dim() - 2) else (m, k)
    packed = x.new_empty((*lead, r, c // 2), dtype=torch.uint8)
    gs = x.new_empty((1 if global_scale is None else global_scale.numel(),), dtype=torch.float32)
    return packed, _scales_like(x, lead, r, c // 16, swizzle, _E4M3), gs


def train_quantize_rowcol(
    x: Tensor,
    global_scale: Optional[Tensor] = None,
    colwise_global_scale: Optional[Tensor] = None,
    *,
    block_2d: bool = False,
    rounding: str = "nearest",
    seed: Optional[Tensor] = None,
    offset: Optional[Tensor] = None,
    colwise_hadamard_signs: Optional[Tensor] = None,
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Both NVFP4 operands of ``x`` from one read: rowwise (blocks along ``K``) and
    columnwise (blocks along ``M``), as :func:`train_quantize` with ``axis=-1`` and ``-2``.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32 / float16 / bfloat16, ``M`` and ``K``
        multiples of 16.
    global_scale, colwise_global_scale : Tensor, optional
        The fp32 encode scale of each operand (1 element or ``[B]``); None: computed from
        that operand (the columnwise one after its Hadamard transform).
    block_2d, rounding, seed, offset, swizzle
        As in :func:`train_quantize`, shared by both operands; with stochastic rounding an
        element draws the same number in both.
    colwise_hadamard_signs : Tensor, optional
        fp32 ``[16]``: the random Hadamard transform on the columnwise operand only.

    Returns
    -------
    row_packed, row_scales, row_global_scale, col_packed, col_scales, col_global_scale
        The outputs of :func:`train_quantize` for ``axis=-1``, then for ``axis=-2``.
    """
    return _ops.train_quantize_rowcol(x, global_scale, colwise_global_scale, block_2d,
                                      rounding, seed, offset, colwise_hadamard_signs, swizzle)


@_fake("train_quantize_rowcol")
def _train_quantize_rowcol_fake(x, global_scale=None, colwise_global_scale=None, block_2d=False,
                                rounding="nearest", seed=None, offset=None,
                                colwise_hadamard_signs=None, swizzle=False):
    _checks.check_train_quantize_rowcol_args(x, global_scale, colwise_global_scale, block_2d,
                                             rounding, seed, offset, colwise_hadamard_signs,
                                             swizzle)
    row = _train_quantize_fake(x, global_scale, -1, block_2d, rounding, seed, offset, None,
                               swizzle)
    col = _train_quantize_fake(x, colwise_global_scale, -2, block_2d, rounding, seed, offset,
                               colwise_hadamard_signs, swizzle)
    return (*row, *col)


def sr_offset_increment(numel: int) -> int:
    """How far to advance a stochastic-rounding ``offset`` after a call on ``numel``
    elements so that the next call draws fresh numbers: ``ceil(numel / 4)``."""
    return _reference_training.sr_offset_increment(numel)


def random_hadamard_signs(seed: Tensor) -> Tensor:
    """The fp32 ``[16]`` sign vector (+-1) of the random Hadamard transform from an int64
    seed tensor (bits 0..15 of one Philox4x32-10 word; docs/spec.md section 8.4)."""
    return _reference_training.random_hadamard_signs(seed)


def grouped_quantize(
    x: Tensor,
    group_offsets: Tensor,
    global_scale: Optional[Tensor] = None,
    *,
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """NVFP4 quantize of MoE tokens sorted by group (expert), one global scale per group.

    Parameters
    ----------
    x : Tensor
        ``[T, K]``, float32 / float16 / bfloat16, ``K % 16 == 0``, rows sorted by group.
    group_offsets : Tensor
        int32 / int64 ``[G]`` on ``x``'s device: the end row of each group (group ``g`` is
        rows ``[offs[g-1], offs[g])``, from 0 for ``g = 0``), non-decreasing, at most ``T``
        (not checked: that would synchronise with the device). Rows past ``offs[G-1]``
        belong to no group and get zero bytes.
    global_scale : Tensor, optional
        fp32 ``[G]``; None: each group's ``2688 / amax`` (1 for an empty group).
    swizzle : bool
        Scales swizzled 128x4 with each group's rows starting at a multiple of 128 (row
        ``sum_{h<g} roundup(n_h, 128)``), as grouped block-scaled GEMMs read them; the
        output has the static size ``roundup(T, 128) + 128 G`` rows, the rest zero.

    Returns
    -------
    packed : Tensor
        uint8 ``[T, K/2]``.
    scales : Tensor
        float8_e4m3fn ``[T, K/16]`` or swizzled ``[roundup(T, 128) + 128 G, roundup(K/16, 4)]``.
    global_scale : Tensor
        fp32 ``[G]``: the scales used.
    """
    return _ops.grouped_quantize(x, group_offsets, global_scale, swizzle)


def _grouped_scales_fake(x, group_offsets, kb, swizzle, dtype):
    t, g = x.shape[0], group_offsets.shape[0]
    if swizzle:
        rows = _reference_training.grouped_scale_rows(t, g)
        return x.new_empty((rows, roundup(kb, 4)), dtype=dtype)
    return x.new_empty((t, kb), dtype=dtype)


@_fake("grouped_quantize")
def _grouped_quantize_fake(x, group_offsets, global_scale=None, swizzle=False):
    _checks.check_grouped_quantize_args(x, group_offsets, global_scale, swizzle)
    t, k = x.shape
    packed = x.new_empty((t, k // 2), dtype=torch.uint8)
    gs = x.new_empty((group_offsets.shape[0],), dtype=torch.float32)
    return packed, _grouped_scales_fake(x, group_offsets, k // 16, swizzle, _E4M3), gs


def mx_grouped_quantize(
    x: Tensor,
    group_offsets: Tensor,
    elem: str = "e4m3",
    *,
    rounding: str = "rceil",
    swizzle: bool = False,
) -> Tuple[Tensor, Tensor]:
    """MXFP8 / MXFP4 quantize of MoE tokens sorted by group (expert).

    Parameters
    ----------
    x : Tensor
        ``[T, K]``, float32 / float16 / bfloat16, ``K % 32 == 0``, rows sorted by group.
    group_offsets : Tensor
        int32 / int64 ``[G]``: the end row of each group, as in :func:`grouped_quantize`.
    elem : {"e4m3", "e2m1"}
        Element format.
    rounding : {"rceil", "floor"}
        E8M0 scale rounding, as in :func:`mx_quantize`.
    swizzle : bool
        Scales swizzled with 128-row-aligned groups, as in :func:`grouped_quantize`.

    Returns
    -------
    data : Tensor
        float8_e4m3fn ``[T, K]`` (e4m3) or uint8 ``[T, K/2]`` (e2m1); the rows of
        :func:`mx_quantize` applied row by row, zero past the last group.
    scales : Tensor
        uint8 E8M0 ``[T, K/32]`` or swizzled ``[roundup(T, 128) + 128 G, roundup(K/32, 4)]``.
    """
    return _ops.mx_grouped_quantize(x, group_offsets, elem, rounding, swizzle)


@_fake("mx_grouped_quantize")
def _mx_grouped_quantize_fake(x, group_offsets, elem="e4m3", rounding="rceil", swizzle=False):
    _checks.check_mx_grouped_quantize_args(x, group_offsets, elem, rounding, swizzle)
    t, k = x.shape
    if elem == "e4m3":
        data = x.new_empty((t, k), dtype=_E4M3)
    else:
        data = x.new_empty((t, k // 2), dtype=torch.uint8)
    return data, _grouped_scales_fake(x, group_offsets, k // 32, swizzle, torch.uint8)
