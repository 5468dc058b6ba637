"""Fake (meta) implementations of every nvfp4 op, for torch.compile and FakeTensor.

Each validates its arguments with the same checks as the reference (so a bad
shape fails at trace time with the same message) and returns empty outputs of
exactly the real shapes, dtypes and (contiguous) strides.
"""

from __future__ import annotations

import torch

from . import reference as ref

_E4M3 = torch.float8_e4m3fn


def _round_up(n, m):
    return (n + m - 1) // m * m


def _scales(like, lead, rows, kb, swizzle, dtype):
    """Linear [.., rows, kb] or swizzled [.., roundup(rows,128), roundup(kb,4)] scales."""
    if swizzle:
        return like.new_empty((*lead, _round_up(rows, 128), _round_up(kb, 4)), dtype=dtype)
    return like.new_empty((*lead, rows, kb), dtype=dtype)


@torch.library.register_fake("nvfp4::quantize")
def _quantize(x, global_scale, swizzle=False, scale_method="amax", hessian=None):
    ref.check_quantize_args(x, global_scale, swizzle, scale_method, hessian)
    *lead, m, k = x.shape
    packed = x.new_empty((*lead, m, k // 2), dtype=torch.uint8)
    return packed, _scales(x, lead, m, k // 16, swizzle, _E4M3)


@torch.library.register_fake("nvfp4::dequantize")
def _dequantize(packed, scales, global_scale, out_dtype, swizzled=False):
    ref.check_dequantize_args(packed, scales, global_scale, out_dtype, swizzled)
    *lead, m, half_k = packed.shape
    return packed.new_empty((*lead, m, half_k * 2), dtype=out_dtype)


@torch.library.register_fake("nvfp4::quant_dequant")
def _quant_dequant(x, global_scale):
    ref.check_quantize_args(x, global_scale, False, "amax", None)
    return x.new_empty(x.shape)


@torch.library.register_fake("nvfp4::global_scale")
def _global_scale(x):
    ref.check_global_scale_args(x)
    return x.new_empty((1,), dtype=torch.float32)


@torch.library.register_fake("nvfp4::mx_quantize")
def _mx_quantize(x, elem="e4m3", rounding="rceil", swizzle=False, axis=-1, scale_method="amax"):
    ref.check_mx_quantize_args(x, elem, rounding, swizzle, axis, scale_method)
    *lead, m, k = x.shape
    if axis in (-2, x.dim() - 2):  # the columnwise cast: blocks along M, output transposed
        m, k = k, m
    if elem == "e4m3":
        data = x.new_empty((*lead, m, k), dtype=_E4M3)
    else:
        data = x.new_empty((*lead, m, k // 2), dtype=torch.uint8)
    return data, _scales(x, lead, m, k // 32, swizzle, torch.uint8)


@torch.library.register_fake("nvfp4::mx_dequantize")
def _mx_dequantize(data, scales, elem, out_dtype, swizzled=False):
    ref.check_mx_dequantize_args(data, scales, elem, out_dtype, swizzled)
    *lead, m, k = data.shape
    if elem == "e2m1":
        k = k * 2
    return data.new_empty((*lead, m, k), dtype=out_dtype)


@torch.library.register_fake("nvfp4::swizzle_scales")
def _swizzle_scales(scales):
    ref.check_swizzle_args(scales)
    *lead, m, kb = scales.shape
    return _scales(scales, lead, m, kb, True, scales.dtype)


@torch.library.register_fake("nvfp4::unswizzle_scales")
def _unswizzle_scales(swizzled, rows, cols):
    ref.check_unswizzle_args(swizzled, rows, cols)
    *lead, _, _ = swizzled.shape
    return swizzled.new_empty((*lead, rows, cols))
