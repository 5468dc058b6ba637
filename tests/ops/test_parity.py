"""One argument contract: every op x every bad-argument case x {cpu, fake, meta, cuda}.

Each case is called on real CPU tensors, under FakeTensorMode, on meta tensors and on CUDA
tensors (when a GPU is present), and must raise the same exception type with the same
message everywhere (device names normalised), a message that starts with the name of the
op called. The CPU kernels and the fakes run the checks of ``nvfp4_ops.reference._checks``;
the CUDA kernels are C++ launchers that must raise the very same text.

The one exception: a non-finite ``hessian`` is only detectable from its values, so fake
and meta tensors (which have none) accept it.
"""

from __future__ import annotations

import math
import re
from typing import Callable, NamedTuple

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from .._utils import requires_cuda

OPS = torch.ops.nvfp4
F32, U8, E4M3 = torch.float32, torch.uint8, torch.float8_e4m3fn
E8M0 = getattr(torch, "float8_e8m0fnu", None)


class Make:
    """Tensor factories on the case's main device ``d`` and on a second device ``o``."""

    def __init__(self, d: str, o: str):
        self.d, self.o = d, o

    def t(self, *shape, dtype=F32, device=None, fill=0.0):
        return torch.full(shape, fill, dtype=dtype, device=device or self.d)

    def u8(self, *shape, device=None):
        return self.t(*shape, dtype=U8, device=device)

    def sc(self, *shape, device=None):
        """E4M3 scale bytes."""
        return self.u8(*shape, device=device).view(E4M3)

    @property
    def one(self):
        """A valid global scale."""
        return self.t(1, fill=1.0)

    def h(self, g=2, dtype=F32, fill=0.0, device=None):
        """A hessian ``[g, 16, 16]``."""
        return self.t(g, 16, 16, dtype=dtype, fill=fill, device=device)


class Case(NamedTuple):
    op: str
    name: str
    call: Callable[[Make], object]
    values_only: bool = False  # an error only real tensors can show (fake / meta exempt)
    match: str = ""  # a regex the message must contain


def q(m, x, gs=None, sm="amax", h=None, swizzle=False):
    return OPS.quantize(x, m.one if gs is None else gs, swizzle, sm, h)


def mxq(x, elem="e4m3", rounding="rceil", swizzle=False, axis=-1, sm="amax"):
    return OPS.mx_quantize(x, elem, rounding, swizzle, axis, sm)


def mxdq(data, scales, elem="e4m3", out_dtype=F32, swizzled=False):
    return OPS.mx_dequantize(data, scales, elem, out_dtype, swizzled)


def dq(m, packed, scales, gs=None, out_dtype=F32, swizzled=False):
    return OPS.dequantize(packed, scales, m.one if gs is None else gs, out_dtype, swizzled)


BF16 = torch.bfloat16


def gx(m, *shape, dtype=BF16, device=None):
    """A GEMM activation (bf16 unless told)."""
    return m.t(*shape, dtype=dtype, device=device)


def gemm(m, x=None, packed=None, scales=None, gs=None, bias=None):
    """gemm_nvfp4_w4a16 of a valid [3, 64] x [8, 64] problem with the given replacements."""
    return OPS.gemm_nvfp4_w4a16(gx(m, 3, 64) if x is None else x,
                                m.u8(8, 32) if packed is None else packed,
                                m.sc(8, 4) if scales is None else scales,
                                m.one if gs is None else gs, bias)


def gemm_pp(m, x=None, packed=None, scales=None, n=8, bias=None):
    """gemm_nvfp4_w4a16_prepacked of a valid [3, 64] x [8, 64] problem."""
    return OPS.gemm_nvfp4_w4a16_prepacked(gx(m, 3, 64) if x is None else x,
                                          m.u8(1, 1, 16, 256) if packed is None else packed,
                                          m.sc(1, 1, 16, 32) if scales is None else scales,
                                          m.one, n, bias)


def gemm_mx(m, x=None, data=None, scales=None, elem="e4m3", bias=None):
    """gemm_mx_w16 of a valid MXFP8 [3, 64] x [8, 64] problem."""
    return OPS.gemm_mx_w16(gx(m, 3, 64) if x is None else x,
                           m.sc(8, 64) if data is None else data,
                           m.u8(8, 2) if scales is None else scales, elem, bias)


CASES = [
    # ---- quantize
    Case("quantize", "K not multiple of 16",
         lambda m: q(m, m.t(4, 70)), match=r"multiple of 16, got 70"),
    Case("quantize", "int32 x", lambda m: q(m, m.t(4, 32, dtype=torch.int32)), match=r"int32"),
    Case("quantize", "float64 x", lambda m: q(m, m.t(4, 32, dtype=torch.float64))),
    Case("quantize", "uint8 x", lambda m: q(m, m.u8(4, 32))),
    Case("quantize", "1-D x", lambda m: q(m, m.t(32))),
    Case("quantize", "4-D x", lambda m: q(m, m.t(2, 3, 4, 32)), match=r"3-D"),
    Case("quantize", "gs numel", lambda m: q(m, m.t(4, 32), m.t(2)), match=r"global_scale"),
    Case("quantize", "gs float64",
         lambda m: q(m, m.t(4, 32), m.t(1, dtype=torch.float64)), match=r"float64"),
    Case("quantize", "gs float16", lambda m: q(m, m.t(4, 32), m.t(1, dtype=torch.float16))),
    Case("quantize", "gs per batch wrong B", lambda m: q(m, m.t(2, 4, 32), m.t(3))),
    Case("quantize", "gs per batch 2-D", lambda m: q(m, m.t(2, 4, 32), m.t(2, 1))),
    Case("quantize", "gs per batch for 2-D x", lambda m: q(m, m.t(4, 32), m.t(4))),
    Case("quantize", "scale_method", lambda m: q(m, m.t(4, 32), sm="best"), match=r"best"),
    Case("quantize", "scale_method quote", lambda m: q(m, m.t(4, 32), sm="it's\n")),
    Case("quantize", "scale_method case", lambda m: q(m, m.t(4, 32), sm="MSE")),
    Case("quantize", "hessian shape",
         lambda m: q(m, m.t(4, 32), sm="hessian", h=m.h(3)), match=r"\[2, 16, 16\]"),
    Case("quantize", "hessian 2-D", lambda m: q(m, m.t(4, 32), sm="hessian", h=m.t(32, 16))),
    Case("quantize", "hessian dtype",
         lambda m: q(m, m.t(4, 32), sm="hessian", h=m.h(dtype=torch.float64))),
    Case("quantize", "hessian bf16",
         lambda m: q(m, m.t(4, 32), sm="hessian", h=m.h(dtype=torch.bfloat16))),
    Case("quantize", "hessian missing", lambda m: q(m, m.t(4, 32), sm="hessian"), match=r"hessian"),
    Case("quantize", "hessian unused", lambda m: q(m, m.t(4, 32), sm="mse", h=m.h())),
    Case("quantize", "hessian unused amax", lambda m: q(m, m.t(4, 32), h=m.h())),
    Case("quantize", "hessian NaN",
         lambda m: q(m, m.t(4, 32), sm="hessian", h=m.h(fill=math.nan)), values_only=True),
    Case("quantize", "hessian inf",
         lambda m: q(m, m.t(4, 32), sm="hessian", h=m.h(fill=-math.inf)), values_only=True),
    Case("quantize", "hessian NaN swizzle 3-D",
         lambda m: q(m, m.t(2, 4, 32), m.t(2, fill=1.0), "hessian", m.h(fill=math.nan), True),
         values_only=True),
    Case("quantize", "devices x, gs", lambda m: q(m, m.t(4, 32), m.t(1, device=m.o))),
    Case("quantize", "devices gs, x", lambda m: q(m, m.t(4, 32, device=m.o), m.one)),
    Case("quantize", "devices hessian",
         lambda m: q(m, m.t(4, 32), sm="hessian", h=m.h(device=m.o))),
    # ---- quant_dequant
    Case("quant_dequant", "K", lambda m: OPS.quant_dequant(m.t(4, 40), m.one)),
    Case("quant_dequant", "dtype",
         lambda m: OPS.quant_dequant(m.t(4, 32, dtype=torch.int64), m.one)),
    Case("quant_dequant", "rank", lambda m: OPS.quant_dequant(m.t(32), m.one)),
    Case("quant_dequant", "gs", lambda m: OPS.quant_dequant(m.t(2, 4, 32), m.t(4))),
    Case("quant_dequant", "gs dtype",
         lambda m: OPS.quant_dequant(m.t(4, 32), m.t(1, dtype=torch.float64))),
    Case("quant_dequant", "devices", lambda m: OPS.quant_dequant(m.t(4, 32), m.t(1, device=m.o))),
    Case("quant_dequant", "scale_method",
         lambda m: OPS.quant_dequant(m.t(4, 32), m.one, "mse"), match=r"'amax' or '4over6'"),
    # ---- dequantize
    Case("dequantize", "packed dtype", lambda m: dq(m, m.t(4, 16), m.sc(4, 2))),
    Case("dequantize", "packed int8", lambda m: dq(m, m.t(4, 16, dtype=torch.int8), m.sc(4, 2))),
    Case("dequantize", "packed dim", lambda m: dq(m, m.u8(16), m.sc(4, 2))),
    Case("dequantize", "packed 4-D", lambda m: dq(m, m.u8(1, 2, 4, 16), m.sc(1, 2, 4, 2))),
    Case("dequantize", "packed K", lambda m: dq(m, m.u8(4, 12), m.sc(4, 1))),
    Case("dequantize", "scales dtype", lambda m: dq(m, m.u8(4, 16), m.u8(4, 2))),
    Case("dequantize", "scales e5m2",
         lambda m: dq(m, m.u8(4, 16), m.u8(4, 2).view(torch.float8_e5m2))),
    Case("dequantize", "scales linear",
         lambda m: dq(m, m.u8(4, 16), m.sc(4, 3)), match=r"\[4, 2\]"),
    Case("dequantize", "scales 3-D", lambda m: dq(m, m.u8(2, 4, 16), m.sc(4, 2))),
    Case("dequantize", "scales swizzled", lambda m: dq(m, m.u8(4, 16), m.sc(4, 2), swizzled=True)),
    Case("dequantize", "scales swz 3-D",
         lambda m: dq(m, m.u8(2, 4, 16), m.sc(128, 4), swizzled=True)),
    Case("dequantize", "scales linear given swizzled",
         lambda m: dq(m, m.u8(4, 16), m.sc(128, 4))),
    Case("dequantize", "gs", lambda m: dq(m, m.u8(4, 16), m.sc(4, 2), m.t(2))),
    Case("dequantize", "gs dtype",
         lambda m: dq(m, m.u8(4, 16), m.sc(4, 2), m.t(1, dtype=torch.float64))),
    Case("dequantize", "gs per batch",
         lambda m: dq(m, m.u8(2, 4, 16), m.sc(2, 4, 2), m.t(3))),
    Case("dequantize", "out_dtype",
         lambda m: dq(m, m.u8(4, 16), m.sc(4, 2), out_dtype=torch.int32)),
    Case("dequantize", "out_dtype f64",
         lambda m: dq(m, m.u8(4, 16), m.sc(4, 2), out_dtype=torch.float64)),
    Case("dequantize", "devices scales", lambda m: dq(m, m.u8(4, 16), m.sc(4, 2, device=m.o))),
    Case("dequantize", "devices gs",
         lambda m: dq(m, m.u8(4, 16), m.sc(4, 2), m.t(1, device=m.o, fill=1.0))),
    # ---- global_scale
    Case("global_scale", "int32", lambda m: OPS.global_scale(m.t(4, dtype=torch.int32))),
    Case("global_scale", "float64", lambda m: OPS.global_scale(m.t(4, 16, dtype=torch.float64))),
    Case("global_scale", "uint8", lambda m: OPS.global_scale(m.u8(4, 16))),
    # ---- mx_quantize
    Case("mx_quantize", "K not multiple of 32",
         lambda m: mxq(m.t(4, 48)), match=r"multiple of 32, got 48"),
    Case("mx_quantize", "K not multiple of 32 (axis=1)",
         lambda m: mxq(m.t(4, 48), "e2m1", "floor", True, 1)),
    Case("mx_quantize", "M not multiple of 32", lambda m: mxq(m.t(40, 64), axis=-2)),
    Case("mx_quantize", "M 48", lambda m: mxq(m.t(48, 64), axis=-2), match="48"),
    Case("mx_quantize", "M not multiple of 32 3-D", lambda m: mxq(m.t(2, 40, 64), axis=1)),
    Case("mx_quantize", "int32 x", lambda m: mxq(m.t(4, 32, dtype=torch.int32))),
    Case("mx_quantize", "float64 x", lambda m: mxq(m.t(4, 32, dtype=torch.float64))),
    Case("mx_quantize", "1-D x", lambda m: mxq(m.t(32))),
    Case("mx_quantize", "4-D x", lambda m: mxq(m.t(2, 3, 4, 32))),
    Case("mx_quantize", "elem", lambda m: mxq(m.t(4, 32), "e5m2"), match=r"e5m2"),
    Case("mx_quantize", "elem quote", lambda m: mxq(m.t(4, 32), "it's")),
    Case("mx_quantize", "elem control chars", lambda m: mxq(m.t(4, 32), "a\tb\n\x01\\\"'")),
    Case("mx_quantize", "elem empty", lambda m: mxq(m.t(4, 32), "")),
    Case("mx_quantize", "rounding", lambda m: mxq(m.t(4, 32), "e4m3", "ceil")),
    Case("mx_quantize", "rounding up", lambda m: mxq(m.t(4, 64), "e4m3", "up"), match=r"up"),
    Case("mx_quantize", "scale_method", lambda m: mxq(m.t(4, 32), sm="hessian")),
    Case("mx_quantize", "axis 0 of 3-D", lambda m: mxq(m.t(2, 32, 32), axis=0)),
    Case("mx_quantize", "axis -3", lambda m: mxq(m.t(2, 32, 32), axis=-3)),
    Case("mx_quantize", "axis 2 of 2-D", lambda m: mxq(m.t(32, 32), axis=2)),
    # ---- mx_quantize_rowcol
    Case("mx_quantize_rowcol", "K not multiple of 32",
         lambda m: OPS.mx_quantize_rowcol(m.t(64, 48)), match=r"K .* multiple of 32, got 48"),
    Case("mx_quantize_rowcol", "M not multiple of 32",
         lambda m: OPS.mx_quantize_rowcol(m.t(48, 64), "floor", True),
         match=r"M \(dim -2, quantized with axis=-2\) must be a multiple of 32, got 48"),
    Case("mx_quantize_rowcol", "M not multiple of 32 3-D",
         lambda m: OPS.mx_quantize_rowcol(m.t(2, 40, 32))),
    Case("mx_quantize_rowcol", "float64 x",
         lambda m: OPS.mx_quantize_rowcol(m.t(32, 32, dtype=torch.float64))),
    Case("mx_quantize_rowcol", "uint8 x", lambda m: OPS.mx_quantize_rowcol(m.u8(32, 32))),
    Case("mx_quantize_rowcol", "1-D x", lambda m: OPS.mx_quantize_rowcol(m.t(32))),
    Case("mx_quantize_rowcol", "4-D x", lambda m: OPS.mx_quantize_rowcol(m.t(1, 2, 32, 32))),
    Case("mx_quantize_rowcol", "rounding",
         lambda m: OPS.mx_quantize_rowcol(m.t(32, 32), "nearest"), match=r"'nearest'"),
    Case("mx_quantize_rowcol", "rounding before shapes",
         lambda m: OPS.mx_quantize_rowcol(m.t(40, 40), "it's")),
    # ---- mx_dequantize
    Case("mx_dequantize", "elem", lambda m: mxdq(m.sc(4, 32), m.u8(4, 1), "fp4")),
    Case("mx_dequantize", "e4m3 data uint8", lambda m: mxdq(m.u8(4, 32), m.u8(4, 1))),
    Case("mx_dequantize", "e2m1 data float8", lambda m: mxdq(m.sc(4, 16), m.u8(4, 1), "e2m1")),
    Case("mx_dequantize", "data float32", lambda m: mxdq(m.t(4, 32), m.u8(4, 1))),
    Case("mx_dequantize", "data dim", lambda m: mxdq(m.sc(32), m.u8(1))),
    Case("mx_dequantize", "data dim e2m1",
         lambda m: mxdq(m.u8(2, 2, 2, 16), m.u8(2, 2, 1), "e2m1")),
    Case("mx_dequantize", "K", lambda m: mxdq(m.sc(4, 48), m.u8(4, 1))),
    Case("mx_dequantize", "K/2", lambda m: mxdq(m.u8(4, 24), m.u8(4, 1), "e2m1")),
    Case("mx_dequantize", "scales dtype", lambda m: mxdq(m.sc(4, 32), m.sc(4, 1))),
    Case("mx_dequantize", "scales int8",
         lambda m: mxdq(m.sc(4, 32), m.t(4, 1, dtype=torch.int8))),
    Case("mx_dequantize", "scales linear", lambda m: mxdq(m.sc(4, 64), m.u8(4, 3))),
    Case("mx_dequantize", "scales 3-D", lambda m: mxdq(m.sc(2, 4, 64), m.u8(4, 2))),
    Case("mx_dequantize", "scales swizzled",
         lambda m: mxdq(m.sc(4, 64), m.u8(4, 2), swizzled=True)),
    Case("mx_dequantize", "scales swz e2m1",
         lambda m: mxdq(m.u8(2, 4, 16), m.u8(2, 128, 2), "e2m1", swizzled=True)),
    Case("mx_dequantize", "out_dtype",
         lambda m: mxdq(m.sc(4, 32), m.u8(4, 1), out_dtype=torch.int32)),
    Case("mx_dequantize", "out_dtype f64",
         lambda m: mxdq(m.sc(4, 32), m.u8(4, 1), out_dtype=torch.float64)),
    Case("mx_dequantize", "devices", lambda m: mxdq(m.sc(4, 64), m.u8(4, 2, device=m.o))),
    # ---- swizzle_scales / unswizzle_scales
    Case("swizzle_scales", "float32", lambda m: OPS.swizzle_scales(m.t(4, 4))),
    Case("swizzle_scales", "float16", lambda m: OPS.swizzle_scales(m.t(4, 4, dtype=torch.float16))),
    Case("swizzle_scales", "int32", lambda m: OPS.swizzle_scales(m.t(4, 4, dtype=torch.int32))),
    Case("swizzle_scales", "1-D", lambda m: OPS.swizzle_scales(m.u8(4))),
    Case("swizzle_scales", "4-D", lambda m: OPS.swizzle_scales(m.u8(1, 2, 4, 4))),
    Case("unswizzle_scales", "float32",
         lambda m: OPS.unswizzle_scales(m.t(128, 4), 128, 4)),
    Case("unswizzle_scales", "int16",
         lambda m: OPS.unswizzle_scales(m.t(128, 4, dtype=torch.int16), 128, 4)),
    Case("unswizzle_scales", "1-D", lambda m: OPS.unswizzle_scales(m.u8(512), 128, 4)),
    Case("unswizzle_scales", "4-D", lambda m: OPS.unswizzle_scales(m.u8(1, 1, 128, 4), 128, 4)),
    Case("unswizzle_scales", "rows",
         lambda m: OPS.unswizzle_scales(m.u8(128, 4), 130, 4), match=r"130"),
    Case("unswizzle_scales", "rows small", lambda m: OPS.unswizzle_scales(m.u8(256, 4), 128, 4)),
    Case("unswizzle_scales", "cols", lambda m: OPS.unswizzle_scales(m.u8(128, 4), 128, 5)),
    Case("unswizzle_scales", "cols 3-D", lambda m: OPS.unswizzle_scales(m.u8(2, 128, 8), 1, 3)),
    Case("unswizzle_scales", "rows negative", lambda m: OPS.unswizzle_scales(m.u8(128, 4), -1, 4)),
    Case("unswizzle_scales", "cols negative", lambda m: OPS.unswizzle_scales(m.u8(128, 4), 1, -4)),
    # ---- gemm_nvfp4_w4a16
    Case("gemm_nvfp4_w4a16", "x float32", lambda m: gemm(m, x=gx(m, 3, 64, dtype=F32)),
         match=r"float16 or bfloat16, got torch.float32"),
    Case("gemm_nvfp4_w4a16", "x 0-D", lambda m: gemm(m, x=gx(m))),
    Case("gemm_nvfp4_w4a16", "packed int8",
         lambda m: gemm(m, packed=m.t(8, 32, dtype=torch.int8))),
    Case("gemm_nvfp4_w4a16", "packed 3-D", lambda m: gemm(m, packed=m.u8(1, 8, 32))),
    Case("gemm_nvfp4_w4a16", "K/2 not multiple of 8",
         lambda m: gemm(m, gx(m, 3, 24), m.u8(8, 12), m.sc(8, 1))),
    Case("gemm_nvfp4_w4a16", "K zero", lambda m: gemm(m, gx(m, 3, 0), m.u8(8, 0), m.sc(8, 0)),
         match=r"K must be > 0, got 0"),
    Case("gemm_nvfp4_w4a16", "K mismatch", lambda m: gemm(m, x=gx(m, 3, 48)),
         match=r"= 64, got 48"),
    Case("gemm_nvfp4_w4a16", "scales uint8", lambda m: gemm(m, scales=m.u8(8, 4))),
    Case("gemm_nvfp4_w4a16", "scales shape", lambda m: gemm(m, scales=m.sc(8, 3))),
    Case("gemm_nvfp4_w4a16", "scales rows", lambda m: gemm(m, scales=m.sc(9, 4))),
    Case("gemm_nvfp4_w4a16", "gs numel", lambda m: gemm(m, gs=m.t(2))),
    Case("gemm_nvfp4_w4a16", "gs bf16", lambda m: gemm(m, gs=m.t(1, dtype=BF16))),
    Case("gemm_nvfp4_w4a16", "bias shape", lambda m: gemm(m, bias=gx(m, 7))),
    Case("gemm_nvfp4_w4a16", "bias dtype", lambda m: gemm(m, bias=m.t(8))),
    Case("gemm_nvfp4_w4a16", "bias 2-D", lambda m: gemm(m, bias=gx(m, 1, 8))),
    Case("gemm_nvfp4_w4a16", "devices packed", lambda m: gemm(m, packed=m.u8(8, 32, device=m.o))),
    Case("gemm_nvfp4_w4a16", "devices bias", lambda m: gemm(m, bias=gx(m, 8, device=m.o))),
    # ---- gemm_nvfp4_w4a16_prepacked
    Case("gemm_nvfp4_w4a16_prepacked", "x float32",
         lambda m: gemm_pp(m, x=gx(m, 3, 64, dtype=F32))),
    Case("gemm_nvfp4_w4a16_prepacked", "K not multiple of 16", lambda m: gemm_pp(m, gx(m, 3, 40))),
    Case("gemm_nvfp4_w4a16_prepacked", "K zero", lambda m: gemm_pp(m, gx(m, 3, 0))),
    Case("gemm_nvfp4_w4a16_prepacked", "n zero", lambda m: gemm_pp(m, n=0),
         match=r"n must be > 0, got 0"),
    Case("gemm_nvfp4_w4a16_prepacked", "n too large", lambda m: gemm_pp(m, n=17),
         match=r"= \[2, 1, 16, 256\]"),
    Case("gemm_nvfp4_w4a16_prepacked", "packed plain", lambda m: gemm_pp(m, packed=m.u8(8, 32))),
    Case("gemm_nvfp4_w4a16_prepacked", "packed int8",
         lambda m: gemm_pp(m, packed=m.t(1, 1, 16, 256, dtype=torch.int8))),
    Case("gemm_nvfp4_w4a16_prepacked", "scales shape",
         lambda m: gemm_pp(m, scales=m.sc(1, 2, 16, 32))),
    Case("gemm_nvfp4_w4a16_prepacked", "scales uint8",
         lambda m: gemm_pp(m, scales=m.u8(1, 1, 16, 32))),
    Case("gemm_nvfp4_w4a16_prepacked", "bias dtype", lambda m: gemm_pp(m, bias=m.t(8))),
    Case("gemm_nvfp4_w4a16_prepacked", "devices",
         lambda m: gemm_pp(m, scales=m.sc(1, 1, 16, 32, device=m.o))),
    # ---- prepack_nvfp4_w4a16 / unprepack_nvfp4_w4a16 (reference on every device)
    Case("prepack_nvfp4_w4a16", "packed 1-D",
         lambda m: OPS.prepack_nvfp4_w4a16(m.u8(32), m.sc(8, 4))),
    Case("prepack_nvfp4_w4a16", "scales shape",
         lambda m: OPS.prepack_nvfp4_w4a16(m.u8(8, 32), m.sc(8, 3))),
    Case("prepack_nvfp4_w4a16", "devices",
         lambda m: OPS.prepack_nvfp4_w4a16(m.u8(8, 32), m.sc(8, 4, device=m.o))),
    Case("unprepack_nvfp4_w4a16", "n negative",
         lambda m: OPS.unprepack_nvfp4_w4a16(m.u8(1, 1, 16, 256), m.sc(1, 1, 16, 32), -1, 64)),
    Case("unprepack_nvfp4_w4a16", "k not multiple of 16",
         lambda m: OPS.unprepack_nvfp4_w4a16(m.u8(1, 1, 16, 256), m.sc(1, 1, 16, 32), 8, 72)),
    Case("unprepack_nvfp4_w4a16", "k zero",
         lambda m: OPS.unprepack_nvfp4_w4a16(m.u8(1, 1, 16, 256), m.sc(1, 1, 16, 32), 8, 0)),
    Case("unprepack_nvfp4_w4a16", "packed shape",
         lambda m: OPS.unprepack_nvfp4_w4a16(m.u8(1, 1, 16, 256), m.sc(1, 1, 16, 32), 8, 600)),
    Case("unprepack_nvfp4_w4a16", "devices",
         lambda m: OPS.unprepack_nvfp4_w4a16(m.u8(1, 1, 16, 256),
                                             m.sc(1, 1, 16, 32, device=m.o), 8, 64)),
    # ---- gemm_mx_w16 (reference on every device)
    Case("gemm_mx_w16", "x float32", lambda m: gemm_mx(m, x=gx(m, 3, 64, dtype=F32))),
    Case("gemm_mx_w16", "elem", lambda m: gemm_mx(m, elem="fp4"), match=r"'fp4'"),
    Case("gemm_mx_w16", "data uint8 for e4m3", lambda m: gemm_mx(m, data=m.u8(8, 64))),
    Case("gemm_mx_w16", "data e4m3 for e2m1", lambda m: gemm_mx(m, data=m.sc(8, 32), elem="e2m1")),
    Case("gemm_mx_w16", "data 3-D", lambda m: gemm_mx(m, data=m.sc(1, 8, 64))),
    Case("gemm_mx_w16", "K not multiple of 32",
         lambda m: gemm_mx(m, gx(m, 3, 48), m.sc(8, 48), m.u8(8, 1))),
    Case("gemm_mx_w16", "K/2 not multiple of 16",
         lambda m: gemm_mx(m, gx(m, 3, 48), m.u8(8, 24), m.u8(8, 1), "e2m1")),
    Case("gemm_mx_w16", "K zero", lambda m: gemm_mx(m, gx(m, 3, 0), m.sc(8, 0), m.u8(8, 0))),
    Case("gemm_mx_w16", "K mismatch", lambda m: gemm_mx(m, x=gx(m, 3, 32))),
    Case("gemm_mx_w16", "K mismatch e2m1",
         lambda m: gemm_mx(m, data=m.u8(8, 64), elem="e2m1"), match=r"2 \* data.shape\[1\]"),
    Case("gemm_mx_w16", "scales e4m3", lambda m: gemm_mx(m, scales=m.sc(8, 2))),
    Case("gemm_mx_w16", "scales shape", lambda m: gemm_mx(m, scales=m.u8(8, 1))),
    Case("gemm_mx_w16", "bias shape", lambda m: gemm_mx(m, bias=gx(m, 9))),
    Case("gemm_mx_w16", "devices", lambda m: gemm_mx(m, scales=m.u8(8, 2, device=m.o))),
]
IDS = [f"{c.op}: {c.name}" for c in CASES]
assert len(set(IDS)) == len(IDS)

# mode -> (main device, second device, run under FakeTensorMode)
MODES = {
    "cpu": ("cpu", "meta", False),
    "fake": ("cpu", "meta", True),
    "meta": ("meta", "cpu", False),
    "cuda": ("cuda", "cpu", False),
}


def _device_name(device: str) -> str:
    return str(torch.empty(0, device=device).device)


def outcome(case: Case, mode: str):
    """(exception type, message with the devices normalised), or None if nothing raised."""
    d, o, fake = MODES[mode]
    try:
        if fake:
            with FakeTensorMode(allow_non_fake_inputs=True):
                case.call(Make(d, o))
        else:
            case.call(Make(d, o))
    except Exception as e:  # noqa: BLE001  (the type is what is compared)
        msg = str(e).strip().splitlines()[0]
        msg = msg.replace(_device_name(d), "<main>").replace(_device_name(o), "<other>")
        return type(e), msg
    return None


@pytest.fixture(scope="module")
def cpu_outcomes():
    return {c: outcome(c, "cpu") for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cpu_message_follows_the_conventions(case, cpu_outcomes):
    got = cpu_outcomes[case]
    assert got is not None, "no error raised"
    typ, msg = got
    assert typ is RuntimeError
    assert msg.startswith(f"nvfp4.{case.op}: "), msg
    assert ", got " in msg or ": tensors must be on one device: " in msg, msg
    assert re.search(case.match, msg), (case.match, msg)


@pytest.mark.parametrize("mode", ["fake", "meta", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_error_everywhere(case, mode, cpu_outcomes):
    got = outcome(case, mode)
    if case.values_only and mode in ("fake", "meta"):
        assert got is None, f"{mode} tensors carry no values, yet: {got}"
        return
    assert got == cpu_outcomes[case], f"\n{mode}: {got}\ncpu:  {cpu_outcomes[case]}"


def test_known_texts():
    """A few messages spelled out in full (the rest follow from the same templates)."""
    want = {
        "quantize: hessian NaN": "nvfp4.quantize: hessian must be finite, got NaN or inf",
        "quant_dequant: K": "nvfp4.quant_dequant: K (the last dim) must be a multiple of 16, "
        "got 40",
        "quantize: devices x, gs": "nvfp4.quantize: tensors must be on one device: x on <main>, "
        "global_scale on <other>",
        "mx_quantize: elem control chars": "nvfp4.mx_quantize: elem must be 'e4m3' or 'e2m1', "
        "got 'a\\tb\\n\\x01\\\\\"\\''",
        "swizzle_scales: float32": "nvfp4.swizzle_scales: scales must have a 1-byte dtype "
        "(element_size() == 1: uint8, int8, float8_e4m3fn, float8_e8m0fnu, ...), got "
        "torch.float32",
        "unswizzle_scales: rows negative": "nvfp4.unswizzle_scales: rows and cols must be >= 0, "
        "got rows=-1, cols=4",
        "gemm_nvfp4_w4a16: x 0-D": "nvfp4.gemm_nvfp4_w4a16: x must have at least 1 dim "
        "([..., K]), got 0-D",
        "gemm_nvfp4_w4a16: packed 3-D": "nvfp4.gemm_nvfp4_w4a16: packed must be 2-D [N, K/2], "
        "got 3-D shape [1, 8, 32]",
        "gemm_nvfp4_w4a16: scales shape": "nvfp4.gemm_nvfp4_w4a16: scales must have shape "
        "[8, 4] (linear, [..., M, K/16]), got [8, 3]",
        "gemm_nvfp4_w4a16: bias dtype": "nvfp4.gemm_nvfp4_w4a16: bias must be None or of shape "
        "[N] = [8] and dtype torch.bfloat16, got shape [8] and dtype torch.float32",
        "gemm_nvfp4_w4a16: devices bias": "nvfp4.gemm_nvfp4_w4a16: tensors must be on one "
        "device: x on <main>, packed on <main>, scales on <main>, global_scale on <main>, "
        "bias on <other>",
        "gemm_nvfp4_w4a16_prepacked: packed plain": "nvfp4.gemm_nvfp4_w4a16_prepacked: packed "
        "must be uint8 of shape [ceil(n/16), ceil(K/512), 16, 256] = [1, 1, 16, 256] "
        "(nvfp4.prepack_nvfp4_w4a16), got shape [8, 32] and dtype torch.uint8",
        "mx_quantize_rowcol: 1-D x": "nvfp4.mx_quantize_rowcol: x must be 2-D or 3-D "
        "([M, K] or [B, M, K]), got 1-D shape [32]",
        "gemm_mx_w16: data 3-D": "nvfp4.gemm_mx_w16: data must be 2-D [N, K], got 3-D shape "
        "[1, 8, 64]",
    }
    for case in CASES:
        name = f"{case.op}: {case.name}"
        if name in want:
            assert outcome(case, "cpu") == (RuntimeError, want.pop(name))
    assert not want, want


# --------------------------------------------------------------------------------------
# swizzle / unswizzle accept every 1-byte dtype, on every device
# --------------------------------------------------------------------------------------

ONE_BYTE = [torch.uint8, torch.int8, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2]
ONE_BYTE += [d for d in (E8M0, getattr(torch, "float8_e4m3fnuz", None)) if d is not None]
SWIZZLE_DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.mark.parametrize("device", SWIZZLE_DEVICES)
@pytest.mark.parametrize("dtype", ONE_BYTE, ids=str)
def test_swizzle_accepts_every_one_byte_dtype(dtype, device):
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 130, 5), dtype=U8, generator=g)
    if dtype == torch.bool:
        raw = raw & 1
    s = raw.view(dtype).to(device)
    sw = OPS.swizzle_scales(s)
    assert sw.dtype == dtype and sw.shape == (2, 256, 8)
    from nvfp4_ops import reference as ref

    want = ref.swizzle_scales(raw).to(device)
    assert torch.equal(sw.view(U8), want)
    back = OPS.unswizzle_scales(sw, 130, 5)
    assert back.dtype == dtype and torch.equal(back.view(U8), raw.to(device))
    with FakeTensorMode():
        fs = torch.empty(2, 130, 5, dtype=dtype, device=device)
        fsw = OPS.swizzle_scales(fs)
        assert fsw.dtype == dtype and fsw.shape == (2, 256, 8)
        fb = OPS.unswizzle_scales(fsw, 130, 5)
        assert fb.dtype == dtype and fb.shape == (2, 130, 5)
