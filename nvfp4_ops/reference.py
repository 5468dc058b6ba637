"""Pure-PyTorch reference codecs for NVFP4, MXFP8 and MXFP4: the numerical ground truth.

Every function here follows ``SPEC.md`` bit for bit. They are the CPU implementation of
the ``torch.ops.nvfp4.*`` operators and the oracle that the CUDA kernels are tested against,
so the code favours being obviously right over being fast:

* every fp32 operation is a single IEEE round-to-nearest-even tensor op (``RN(.)`` in the
  spec); scale arithmetic never goes through Python floats (float64), the only Python float
  constants are exactly representable in fp32, and nothing is divided by a Python scalar
  (CUDA turns ``tensor / scalar`` into a multiplication by the reciprocal, and
  ``scalar / tensor`` is ``tensor.reciprocal() * scalar`` in PyTorch), so divisions are
  always tensor by tensor;
* no reduction whose order is unspecified feeds a result: block maxima are exact, and
  the scale-search objectives are summed left to right, one fp32 op per term;
* torch's float8 casts are only used on values already clamped to the finite range and
  NaN is mapped to ``0x7F`` explicitly, so nothing depends on how a cast saturates;
* everything is vectorised over blocks and rows and written with plain tensor ops, so
  the same code gives the same bytes on CPU and CUDA tensors.

Layouts: ``x`` is ``[M, K]`` or ``[B, M, K]`` (float32, float16 or bfloat16, any strides).
NVFP4 packs two E2M1 codes per byte along ``K`` (element ``2i`` in the low nibble) and
stores one E4M3 scale per 16 elements; MX stores one E8M0 byte per 32 elements. Scales
are linear ``[..., M, K/16]`` / ``[..., M, K/32]`` or in the 128x4 swizzled layout of
SPEC section 4.

The argument checks live in the ``check_*`` functions. They only look at shapes, dtypes
and devices, so the fake (meta) implementations call the very same functions, and every
backend reports the same messages. Violations raise ``RuntimeError`` (through
``torch._check``) with the expected and the actual value in the message.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "E2M1_VALUES",
    "e2m1_encode",
    "e2m1_decode",
    "pack_e2m1",
    "unpack_e2m1",
    "e4m3_from_fp32",
    "e4m3_to_fp32",
    "global_scale",
    "quantize",
    "dequantize",
    "quant_dequant",
    "mx_quantize",
    "mx_dequantize",
    "swizzle_scales",
    "unswizzle_scales",
    "hessian_blocks",
    "nvfp4_block_objective",
    "mx_block_objective",
    "check_global_scale_args",
    "check_quantize_args",
    "check_dequantize_args",
    "check_quant_dequant_args",
    "check_mx_quantize_args",
    "check_mx_dequantize_args",
    "check_swizzle_args",
    "check_unswizzle_args",
    "check_hessian_blocks_args",
    "check_block_objective_args",
    "check_mx_block_objective_args",
]

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

_F32 = torch.float32
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_E8M0_DTYPE = getattr(torch, "float8_e8m0fnu", None)

NVFP4_BLOCK = 16
MX_BLOCK = 32
E4M3_MAX = 448.0
E2M1_MAX = 6.0
#: 448 * 6: the global scale maps the tensor amax onto the largest representable product.
GLOBAL_SCALE_NUMERATOR = 2688.0

#: fp32 value of each E2M1 code 0..15; code 8 is -0.0.
E2M1_VALUES = torch.tensor(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=_F32,
)

# RN(1/6) computed as one fp32 division; held as the Python float of that exact fp32 value.
_RN_ONE_SIXTH = (torch.tensor(1.0, dtype=_F32) / torch.tensor(6.0, dtype=_F32)).item()

# E4M3 bytes tried by the NVFP4 scale search: the 126 positive finite ones.
_NVFP4_CANDIDATES = range(0x01, 0x7F)
# E8M0 bytes tried by the MX scale search: every finite one.
_MX_CANDIDATES = range(0, 255)

# Element budget of one chunk of the scale search (about 10 live fp32 temporaries of this
# size, well under 1 GiB): a few MiB per temporary on CPU, where fewer and longer ops keep
# the thread-pool overhead down; large on accelerators to keep the launch count low.
_SEARCH_CHUNK_ELEMS_CPU = 1 << 19
_SEARCH_CHUNK_ELEMS_DEVICE = 1 << 24

_SCALE_METHODS = ("amax", "mse", "hessian")
_MX_SCALE_METHODS = ("amax", "mse")
_MX_ELEMS = ("e4m3", "e2m1")
_MX_ROUNDINGS = ("rceil", "floor")
_MX_EMAX = {"e4m3": (E4M3_MAX, 8), "e2m1": (E2M1_MAX, 2)}


def _roundup(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# --------------------------------------------------------------------------------------
# Argument checks (metadata only: shapes, dtypes, devices; usable on fake tensors)
# --------------------------------------------------------------------------------------


def _check_float_input(op: str, name: str, t: Tensor) -> None:
    torch._check(
        t.dtype in _FLOAT_DTYPES,
        lambda: f"{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}",
    )


def _check_dim_2_or_3(op: str, name: str, t: Tensor, layout: str = "[M, K] or [B, M, K]") -> None:
    torch._check(
        t.dim() in (2, 3),
        lambda: f"{op}: {name} must be 2-D or 3-D ({layout}), got {t.dim()}-D shape "
        f"{_shape_str(t.shape)}",
    )


def _check_one_device(op: str, **tensors: Optional[Tensor]) -> None:
    named = [(n, t) for n, t in tensors.items() if t is not None]
    first = named[0][1].device
    torch._check(
        all(t.device == first for _, t in named),
        lambda: f"{op}: tensors must be on one device: "
        + ", ".join(f"{n} on {t.device}" for n, t in named),
    )


def _check_choice(op: str, name: str, value: object, choices: Sequence[str]) -> None:
    torch._check(
        isinstance(value, str) and value in choices,
        lambda: f"{op}: {name} must be "
        + (", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}")
        + f", got {value!r}",
    )


def _check_out_dtype(op: str, out_dtype: torch.dtype) -> None:
    torch._check(
        out_dtype in _FLOAT_DTYPES,
        lambda: f"{op}: out_dtype must be torch.float32, torch.float16 or torch.bfloat16, "
        f"got {out_dtype}",
    )


def _check_global_scale(op: str, gs: Tensor, batch: Optional[int]) -> None:
    """``gs``: float32 with one element, or for 3-D data (``batch`` = B) shape ``[B]``."""
    ok = gs.dtype == torch.float32 and (
        gs.numel() == 1 or (batch is not None and gs.dim() == 1 and gs.shape[0] == batch)
    )
    per_batch = "" if batch is None else f" or one per batch ({batch})"
    torch._check(
        ok,
        lambda: f"{op}: global_scale must be float32 with 1 element{per_batch}, got shape "
        f"{_shape_str(gs.shape)} and dtype {gs.dtype}",
    )


def _check_multiple(op: str, what: str, n: int, m: int) -> None:
    torch._check(n % m == 0, lambda: f"{op}: {what} must be a multiple of {m}, got {n}")


def _check_hessian(op: str, hessian: Optional[Tensor], scale_method: str, K: int) -> None:
    G = K // NVFP4_BLOCK
    want = f"[K/16, 16, 16] = [{G}, 16, 16]"
    if scale_method == "hessian":
        torch._check(
            hessian is not None,
            lambda: f"{op}: scale_method='hessian' needs a hessian, float32 of shape {want}, "
            "got None",
        )
        assert hessian is not None
        got_dtype = "" if hessian.dtype == torch.float32 else f" of dtype {hessian.dtype}"
        torch._check(
            hessian.dtype == torch.float32 and tuple(hessian.shape) == (G, 16, 16),
            lambda: f"{op}: hessian must be float32 of shape {want}, got "
            f"{_shape_str(hessian.shape)}{got_dtype}",
        )
    else:
        torch._check(
            hessian is None,
            lambda: f"{op}: a hessian is only used with scale_method='hessian', got "
            f"scale_method={scale_method!r}",
        )


def check_global_scale_args(x: Tensor) -> None:
    """Check the argument of :func:`global_scale`.

    Parameters
    ----------
    x : Tensor
        Any shape; float32, float16 or bfloat16.

    Raises
    ------
    RuntimeError
        If the dtype is not supported.
    """
    _check_float_input("nvfp4.global_scale", "x", x)


def check_quantize_args(
    x: Tensor,
    global_scale: Tensor,
    swizzle: bool = False,
    scale_method: str = "amax",
    hessian: Optional[Tensor] = None,
    op: str = "nvfp4.quantize",
) -> None:
    """Check the arguments of :func:`quantize` (metadata only).

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16, ``K % 16 == 0``.
    global_scale : Tensor
        float32, one element, or shape ``[B]`` for 3-D ``x``.
    swizzle : bool
        Unused by the checks (any value is valid).
    scale_method : str
        ``"amax"``, ``"mse"`` or ``"hessian"``.
    hessian : Tensor or None
        float32 ``[K/16, 16, 16]``; required by, and only allowed with, ``"hessian"``.
    op : str
        Name used in the messages.

    Raises
    ------
    RuntimeError
        On the first violated condition, naming the expected and the actual value.
    """
    _check_float_input(op, "x", x)
    _check_dim_2_or_3(op, "x", x)
    _check_multiple(op, "K (the last dim)", x.shape[-1], NVFP4_BLOCK)
    _check_global_scale(op, global_scale, x.shape[0] if x.dim() == 3 else None)
    _check_choice(op, "scale_method", scale_method, _SCALE_METHODS)
    _check_hessian(op, hessian, scale_method, x.shape[-1])
    _check_one_device(op, x=x, global_scale=global_scale, hessian=hessian)


def check_quant_dequant_args(x: Tensor, global_scale: Tensor) -> None:
    """Check the arguments of :func:`quant_dequant` (same rules as :func:`quantize`).

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16, ``K % 16 == 0``.
    global_scale : Tensor
        float32, one element, or shape ``[B]`` for 3-D ``x``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    check_quantize_args(x, global_scale, op="nvfp4.quant_dequant")


def check_dequantize_args(
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    out_dtype: torch.dtype,
    swizzled: bool = False,
) -> None:
    """Check the arguments of :func:`dequantize` (metadata only).

    Parameters
    ----------
    packed : Tensor
        uint8 ``[M, K/2]`` or ``[B, M, K/2]`` with ``K % 16 == 0``.
    scales : Tensor
        float8_e4m3fn; linear ``[..., M, K/16]`` or, with ``swizzled``,
        ``[..., roundup(M, 128), roundup(K/16, 4)]``.
    global_scale : Tensor
        float32, one element, or shape ``[B]`` for 3-D data.
    out_dtype : torch.dtype
        float32, float16 or bfloat16.
    swizzled : bool
        Layout of ``scales``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.dequantize"
    torch._check(
        packed.dtype == torch.uint8,
        lambda: f"{op}: packed must be uint8 (two E2M1 codes per byte), got {packed.dtype}",
    )
    _check_dim_2_or_3(op, "packed", packed, "[M, K/2] or [B, M, K/2]")
    _check_multiple(op, "the last dim of packed (K/2)", packed.shape[-1], NVFP4_BLOCK // 2)
    torch._check(
        scales.dtype == torch.float8_e4m3fn,
        lambda: f"{op}: scales must be torch.float8_e4m3fn, got {scales.dtype}",
    )
    M, K = packed.shape[-2], packed.shape[-1] * 2
    _check_scales_shape(op, packed, scales, M, K // NVFP4_BLOCK, swizzled, "K/16")
    _check_global_scale(op, global_scale, packed.shape[0] if packed.dim() == 3 else None)
    _check_out_dtype(op, out_dtype)
    _check_one_device(op, packed=packed, scales=scales, global_scale=global_scale)


def _check_scales_shape(
    op: str, data: Tensor, scales: Tensor, M: int, Kb: int, swizzled: bool, kb_name: str
) -> None:
    lead = tuple(data.shape[:-2])
    if swizzled:
        want = lead + (_roundup(M, 128), _roundup(Kb, 4))
        what = f"swizzled, [..., roundup(M, 128), roundup({kb_name}, 4)]"
    else:
        want = lead + (M, Kb)
        what = f"linear, [..., M, {kb_name}]"
    torch._check(
        tuple(scales.shape) == want,
        lambda: f"{op}: scales must have shape {_shape_str(want)} ({what}), got "
        f"{_shape_str(scales.shape)}",
    )


def check_mx_quantize_args(
    x: Tensor,
    elem: str = "e4m3",
    rounding: str = "rceil",
    swizzle: bool = False,
    axis: int = -1,
    scale_method: str = "amax",
) -> None:
    """Check the arguments of :func:`mx_quantize` (metadata only).

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16; the quantized dim
        (``K`` for ``axis=-1``, ``M`` for ``axis=-2``) a multiple of 32.
    elem : str
        ``"e4m3"`` or ``"e2m1"``.
    rounding : str
        ``"rceil"`` or ``"floor"``.
    swizzle : bool
        Unused by the checks.
    axis : int
        ``-1`` or ``-2`` (or the same dims counted from the front).
    scale_method : str
        ``"amax"`` or ``"mse"``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.mx_quantize"
    _check_float_input(op, "x", x)
    _check_dim_2_or_3(op, "x", x)
    _check_choice(op, "elem", elem, _MX_ELEMS)
    _check_choice(op, "rounding", rounding, _MX_ROUNDINGS)
    _check_choice(op, "scale_method", scale_method, _MX_SCALE_METHODS)
    torch._check(
        axis in (-1, -2, x.dim() - 1, x.dim() - 2),
        lambda: f"{op}: axis must be -1 or -2 (the last two dims of a {x.dim()}-D x), got {axis}",
    )
    if axis in (-1, x.dim() - 1):
        _check_multiple(op, "K (the last dim, quantized with axis=-1)", x.shape[-1], MX_BLOCK)
    else:
        _check_multiple(op, "M (dim -2, quantized with axis=-2)", x.shape[-2], MX_BLOCK)


def check_mx_dequantize_args(
    data: Tensor, scales: Tensor, elem: str, out_dtype: torch.dtype, swizzled: bool = False
) -> None:
    """Check the arguments of :func:`mx_dequantize` (metadata only).

    Parameters
    ----------
    data : Tensor
        ``elem="e4m3"``: float8_e4m3fn ``[..., M, K]``; ``elem="e2m1"``: uint8
        ``[..., M, K/2]``; ``K % 32 == 0``, 2-D or 3-D.
    scales : Tensor
        uint8 or float8_e8m0fnu; linear ``[..., M, K/32]`` or, with ``swizzled``,
        ``[..., roundup(M, 128), roundup(K/32, 4)]``.
    elem : str
        ``"e4m3"`` or ``"e2m1"``.
    out_dtype : torch.dtype
        float32, float16 or bfloat16.
    swizzled : bool
        Layout of ``scales``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.mx_dequantize"
    _check_choice(op, "elem", elem, _MX_ELEMS)
    if elem == "e4m3":
        torch._check(
            data.dtype == torch.float8_e4m3fn,
            lambda: f"{op}: data must be torch.float8_e4m3fn for elem='e4m3', got {data.dtype}",
        )
        _check_dim_2_or_3(op, "data", data)
        K = data.shape[-1]
        _check_multiple(op, "K (the last dim of data)", K, MX_BLOCK)
    else:
        torch._check(
            data.dtype == torch.uint8,
            lambda: f"{op}: data must be uint8 (two E2M1 codes per byte) for elem='e2m1', "
            f"got {data.dtype}",
        )
        _check_dim_2_or_3(op, "data", data, "[M, K/2] or [B, M, K/2]")
        K = data.shape[-1] * 2
        _check_multiple(op, "the last dim of data (K/2)", data.shape[-1], MX_BLOCK // 2)
    scale_dtypes = (torch.uint8,) + ((_E8M0_DTYPE,) if _E8M0_DTYPE is not None else ())
    torch._check(
        scales.dtype in scale_dtypes,
        lambda: f"{op}: scales must be uint8 or torch.float8_e8m0fnu, got {scales.dtype}",
    )
    _check_scales_shape(op, data, scales, data.shape[-2], K // MX_BLOCK, swizzled, "K/32")
    _check_out_dtype(op, out_dtype)
    _check_one_device(op, data=data, scales=scales)


def check_swizzle_args(scales: Tensor) -> None:
    """Check the argument of :func:`swizzle_scales`.

    Parameters
    ----------
    scales : Tensor
        ``[M, Kb]`` or ``[B, M, Kb]`` of a one-byte dtype.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.swizzle_scales"
    torch._check(
        scales.element_size() == 1 and scales.dtype != torch.bool,
        lambda: f"{op}: scales must have a 1-byte dtype (uint8, float8_e4m3fn, "
        f"float8_e8m0fnu), got {scales.dtype}",
    )
    _check_dim_2_or_3(op, "scales", scales, "[M, Kb] or [B, M, Kb]")


def check_unswizzle_args(swizzled: Tensor, rows: int, cols: int) -> None:
    """Check the arguments of :func:`unswizzle_scales`.

    Parameters
    ----------
    swizzled : Tensor
        ``[Mp, Kp]`` or ``[B, Mp, Kp]`` of a one-byte dtype.
    rows, cols : int
        The unpadded ``M`` and ``Kb``: ``roundup(rows, 128) == Mp`` and
        ``roundup(cols, 4) == Kp``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.unswizzle_scales"
    torch._check(
        swizzled.element_size() == 1 and swizzled.dtype != torch.bool,
        lambda: f"{op}: swizzled must have a 1-byte dtype (uint8, float8_e4m3fn, "
        f"float8_e8m0fnu), got {swizzled.dtype}",
    )
    _check_dim_2_or_3(op, "swizzled", swizzled, "[Mp, Kp] or [B, Mp, Kp]")
    torch._check(
        rows >= 0 and cols >= 0,
        lambda: f"{op}: rows and cols must be >= 0, got rows={rows}, cols={cols}",
    )
    Mp, Kp = swizzled.shape[-2], swizzled.shape[-1]
    torch._check(
        _roundup(rows, 128) == Mp and _roundup(cols, 4) == Kp,
        lambda: f"{op}: swizzled must have shape [..., roundup(rows, 128), roundup(cols, 4)] = "
        f"[..., {_roundup(rows, 128)}, {_roundup(cols, 4)}] for rows={rows}, cols={cols}, got "
        f"{_shape_str(swizzled.shape)}",
    )


def check_hessian_blocks_args(X: Tensor, chunk_rows: int = 4096) -> None:
    """Check the arguments of :func:`hessian_blocks`.

    Parameters
    ----------
    X : Tensor
        ``[T, K]`` floating point, ``K % 16 == 0``.
    chunk_rows : int
        Positive.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.hessian_blocks"
    torch._check(
        X.dtype.is_floating_point,
        lambda: f"{op}: X must be a floating point tensor, got {X.dtype}",
    )
    torch._check(
        X.dim() == 2,
        lambda: f"{op}: X must be 2-D [T, K], got {X.dim()}-D shape {_shape_str(X.shape)}",
    )
    _check_multiple(op, "K (the last dim)", X.shape[-1], NVFP4_BLOCK)
    torch._check(chunk_rows > 0, lambda: f"{op}: chunk_rows must be > 0, got {chunk_rows}")


def check_block_objective_args(
    x: Tensor,
    scale_bytes: Tensor,
    global_scale: Tensor,
    method: str = "mse",
    hessian: Optional[Tensor] = None,
) -> None:
    """Check the arguments of :func:`nvfp4_block_objective`.

    Parameters
    ----------
    x, global_scale, hessian
        As for :func:`quantize`.
    scale_bytes : Tensor
        uint8 or float8_e4m3fn, linear ``[..., M, K/16]``.
    method : str
        ``"mse"`` or ``"hessian"``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.nvfp4_block_objective"
    _check_choice(op, "method", method, ("mse", "hessian"))
    check_quantize_args(x, global_scale, scale_method=method, hessian=hessian, op=op)
    torch._check(
        scale_bytes.dtype in (torch.uint8, torch.float8_e4m3fn),
        lambda: f"{op}: scale_bytes must be uint8 or torch.float8_e4m3fn, got {scale_bytes.dtype}",
    )
    _check_scales_shape(op, x, scale_bytes, x.shape[-2], x.shape[-1] // NVFP4_BLOCK, False, "K/16")
    _check_one_device(op, x=x, scale_bytes=scale_bytes)


def check_mx_block_objective_args(x: Tensor, scale_bytes: Tensor, elem: str) -> None:
    """Check the arguments of :func:`mx_block_objective`.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16, ``K % 32 == 0``.
    scale_bytes : Tensor
        uint8 or float8_e8m0fnu, linear ``[..., M, K/32]``.
    elem : str
        ``"e4m3"`` or ``"e2m1"``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.mx_block_objective"
    check_mx_quantize_args(x, elem)
    scale_dtypes = (torch.uint8,) + ((_E8M0_DTYPE,) if _E8M0_DTYPE is not None else ())
    torch._check(
        scale_bytes.dtype in scale_dtypes,
        lambda: f"{op}: scale_bytes must be uint8 or torch.float8_e8m0fnu, got {scale_bytes.dtype}",
    )
    _check_scales_shape(op, x, scale_bytes, x.shape[-2], x.shape[-1] // MX_BLOCK, False, "K/32")
    _check_one_device(op, x=x, scale_bytes=scale_bytes)


# --------------------------------------------------------------------------------------
# Element formats
# --------------------------------------------------------------------------------------


def _e2m1_round_mag(a: Tensor) -> Tensor:
    """Round magnitudes to the nearest E2M1 magnitude (fp32), ties to even, saturating at 6.

    ``a`` is fp32 and ``>= 0``; NaN gives 0 (a NaN never reaches a code as a value: the
    callers either mask the block or take the sign from elsewhere) and +inf gives 6.
    E2M1 is a float with one mantissa bit, so in the binade ``[2^k, 2^(k+1))`` (``k >= 0``;
    below 1 the spacing stays 0.5) adding ``C = 2^(max(k, 0) + 22)`` rounds ``a`` to a
    multiple of the E2M1 spacing ``2^(max(k, 0) - 1)``, with IEEE ties-to-even matching
    the ties-to-even-code rule of SPEC section 1 (0.25 -> 0, 0.75 -> 1, 1.25 -> 1,
    1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4). Both the add and the subtract are single
    fp32 ops and the subtract is exact.
    """
    a = torch.nan_to_num(a, nan=0.0).clamp_(max=E2M1_MAX)
    c = (a.clamp(min=1.0).view(torch.int32) & 0x7F800000) + (22 << 23)
    c = c.view(_F32)
    return (a + c).sub_(c)


def _e2m1_code_from_value(v: Tensor) -> Tensor:
    """E2M1 code (uint8) of a value already on the E2M1 grid; the sign bit from signbit(v)."""
    m = v.abs()
    mag = torch.where(m < 2.0, m * 2.0, torch.where(m < 5.0, m + 2.0, 7.0)).to(torch.uint8)
    return mag | (torch.signbit(v).to(torch.uint8) << 3)


def e2m1_encode(y: Tensor) -> Tensor:
    """Encode fp32 values as E2M1 codes (SPEC section 1).

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
    y = y.detach().to(_F32)
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
    e, m = (c >> 1) & 3, (c & 1).to(_F32)
    mag = torch.where(e > 0, (1.0 + 0.5 * m) * torch.exp2((e - 1).to(_F32)), 0.5 * m)
    return torch.where((c & 8) != 0, -mag, mag)


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
    torch._check(
        codes.dim() >= 1 and codes.shape[-1] % 2 == 0,
        lambda: f"nvfp4.pack_e2m1: the last dim must be even, got shape {_shape_str(codes.shape)}",
    )
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
    v = v.detach().to(_F32)
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
    return b.detach().view(torch.float8_e4m3fn).to(_F32)


def _e4m3_round(y: Tensor) -> Tensor:
    """Round fp32 to the nearest E4M3 value (RNE, saturating to +-448), as fp32. No NaN in."""
    return y.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(_F32)


def _pow2_from_e8m0(b: Tensor) -> Tensor:
    """``2^(b - 127)`` exactly, from the bits (b=0 gives the subnormal 2^-127); b=255: NaN.

    ``b`` is an int32 tensor with values 0..255.
    """
    bits = torch.where(b == 0, 0x00400000, b << 23)
    bits = torch.where(b == 255, 0x7FC00000, bits)
    return bits.to(torch.int32).view(_F32)


def _inv_pow2_from_e8m0(b: Tensor) -> Tensor:
    """``2^(127 - b)`` exactly, from the bits (b=254 gives the subnormal 2^-127); b=255: 0.

    ``b`` is an int32 tensor with values 0..255.
    """
    e = 254 - b  # biased exponent of 2^(127 - b)
    bits = torch.where(e >= 1, e << 23, 0x00400000)
    bits = torch.where(b == 255, 0, bits)
    return bits.to(torch.int32).view(_F32)


# --------------------------------------------------------------------------------------
# Scale layouts
# --------------------------------------------------------------------------------------


def swizzle_scales(scales: Tensor) -> Tensor:
    """Rearrange a scale matrix into the 128x4 swizzled layout (SPEC section 4).

    The byte of ``S[r][c]`` goes to
    ``((r // 128) * (Kp // 4) + c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4``
    after padding ``M`` to ``Mp = roundup(M, 128)`` and ``Kb`` to ``Kp = roundup(Kb, 4)``
    with zero bytes. Implemented as one reshape/permute: ``r = 128 rb + 32 r1 + r0``,
    ``c = 4 cb + c0`` is stored at ``[rb, cb, r0, r1, c0]``.

    Parameters
    ----------
    scales : Tensor
        ``[M, Kb]`` or ``[B, M, Kb]`` of a one-byte dtype (uint8, float8_e4m3fn,
        float8_e8m0fnu); each batch is swizzled alone and stored back to back.

    Returns
    -------
    Tensor
        ``[Mp, Kp]`` or ``[B, Mp, Kp]``, same dtype, bytes in swizzled order.
    """
    check_swizzle_args(scales)
    s = scales.detach()
    s3 = (s if s.dim() == 3 else s.unsqueeze(0)).view(torch.uint8)
    B, M, Kb = s3.shape
    Mp, Kp = _roundup(M, 128), _roundup(Kb, 4)
    padded = torch.zeros((B, Mp, Kp), dtype=torch.uint8, device=s.device)
    padded[:, :M, :Kb] = s3
    out = (
        padded.view(B, Mp // 128, 4, 32, Kp // 4, 4)
        .permute(0, 1, 4, 3, 2, 5)
        .reshape(B, Mp, Kp)
        .view(scales.dtype)
    )
    return out if scales.dim() == 3 else out[0]


def unswizzle_scales(swizzled: Tensor, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`swizzle_scales`: recover the ``[rows, cols]`` linear scales.

    Parameters
    ----------
    swizzled : Tensor
        ``[Mp, Kp]`` or ``[B, Mp, Kp]`` of a one-byte dtype, ``Mp = roundup(rows, 128)``,
        ``Kp = roundup(cols, 4)``.
    rows, cols : int
        The unpadded ``M`` and ``Kb``.

    Returns
    -------
    Tensor
        ``[rows, cols]`` or ``[B, rows, cols]``, same dtype, a new contiguous tensor.
    """
    check_unswizzle_args(swizzled, rows, cols)
    s = swizzled.detach()
    s3 = (s if s.dim() == 3 else s.unsqueeze(0)).view(torch.uint8)
    B, Mp, Kp = s3.shape
    lin = (
        s3.reshape(B, Mp // 128, Kp // 4, 32, 4, 4)
        .permute(0, 1, 4, 3, 2, 5)
        .reshape(B, Mp, Kp)[:, :rows, :cols]
        .clone(memory_format=torch.contiguous_format)
        .view(swizzled.dtype)
    )
    return lin if swizzled.dim() == 3 else lin[0]


# --------------------------------------------------------------------------------------
# NVFP4
# --------------------------------------------------------------------------------------


def global_scale(x: Tensor) -> Tensor:
    """NVFP4 encode global scale ``RN(2688 / amax(|x|))`` over the whole tensor (SPEC sec. 2).

    ``amax == 0`` (and an empty tensor) gives 1. Otherwise the result is whatever the one
    fp32 division gives: a NaN anywhere gives NaN; an inf anywhere gives 0 (such a tensor
    then dequantizes to NaN everywhere: RN(0/0)); ``amax`` below ``2688 / FLT_MAX``
    (about 7.9e-36) overflows to +inf.

    Parameters
    ----------
    x : Tensor
        Any shape; float32, float16 or bfloat16.

    Returns
    -------
    Tensor
        fp32 of shape ``[1]`` on the device of ``x``.
    """
    check_global_scale_args(x)
    if x.numel() == 0:
        return torch.ones(1, dtype=_F32, device=x.device)
    amax = x.detach().abs().amax().to(_F32).reshape(1)
    gs = torch.full_like(amax, GLOBAL_SCALE_NUMERATOR) / amax
    return torch.where(amax == 0, 1.0, gs)


def _nvfp4_multipliers(sf32: Tensor, gs: Tensor) -> Tuple[Tensor, Tensor]:
    """Encode and decode multipliers of NVFP4 blocks with fp32 scale ``sf32`` (SPEC sec. 2).

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


def _nvfp4_naive_bytes(xb: Tensor, gs_b: Tensor) -> Tensor:
    """Naive scale bytes ``E4M3(RN(gs * RN(vmax * RN(1/6))))`` per block; 0x7F if non-finite.

    ``xb``: fp32 ``[..., 16]`` blocks, ``gs_b`` broadcastable to ``xb.shape[:-1]``.
    """
    vmax = xb.abs().amax(dim=-1)
    finite = torch.isfinite(xb).all(dim=-1)
    sf = e4m3_from_fp32(gs_b * (vmax * _RN_ONE_SIXTH))
    return torch.where(finite, sf, 0x7F)


def _nvfp4_encode_with_scale(xb: Tensor, sf_bytes: Tensor, gs_b: Tensor) -> Tensor:
    """E2M1 codes of NVFP4 blocks quantized with the given scale bytes (SPEC section 2).

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


def _seq_sum(terms: Tensor) -> Tensor:
    """Left-to-right fp32 sum over dim 0: ``s = t[0]; s = RN(s + t[1]); ...``."""
    s = terms[0].clone()
    for i in range(1, terms.shape[0]):
        s.add_(terms[i])
    return s


def _quadratic_form(e: Tensor, hc: Tensor) -> Tensor:
    """``sum_i RN(e_i * t_i)`` with ``t_i = sum_j RN(H[i, j] * e_j)``, both left to right.

    ``e``: ``[16, *S]`` (``e[j]`` is element ``j`` of every block); ``hc``: ``[16, 16, G]``
    with ``hc[i, j]`` broadcasting against ``S`` (its last dim is the block column group).
    """
    n = e.shape[0]
    obj: Optional[Tensor] = None
    for i in range(n):
        t = hc[i, 0] * e[0]
        for j in range(1, n):
            t.add_(hc[i, j] * e[j])
        p = e[i] * t
        obj = p if obj is None else obj.add_(p)
    assert obj is not None
    return obj


def _nvfp4_objective_cols(
    xc: Tensor,
    axc: Tensor,
    sf32: Tensor,
    gsc: Tensor,
    method: str,
    hc: Optional[Tensor],
) -> Tensor:
    """Per-block search objective (SPEC section 5) in column-major block layout.

    Parameters
    ----------
    xc, axc : Tensor
        fp32 ``[16, *S]``: element ``i`` of every block is ``xc[i]``; ``axc = |xc|``.
    sf32 : Tensor
        fp32 block scales broadcastable to ``S``.
    gsc : Tensor
        fp32 global scale broadcastable to ``S``.
    method : str
        ``"mse"`` or ``"hessian"``.
    hc : Tensor or None
        ``hessian.permute(1, 2, 0)`` (``[16, 16, G]``) for ``"hessian"``.

    Returns
    -------
    Tensor
        fp32 objective of shape ``S``.

    Notes
    -----
    ``err_i = RN(x_i - RN(e2m1(code_i) * RN(sf / gs)))``. For ``mse`` the squares are
    computed from magnitudes, ``RN(|x_i| - RN(|q_i| * |s|))``: RN is sign-symmetric and
    the sign of the dequantized value is always that of ``x_i`` (or it is zero), so
    every square is bit-identical to the one of the signed error while saving the sign
    handling. ``hessian`` needs the signed error and computes it literally.
    """
    osc, s = _nvfp4_multipliers(sf32, gsc)
    if method == "mse":
        q = _e2m1_round_mag(axc * osc.abs())
        e = axc - q.mul_(s.abs())
        return _seq_sum(e.mul_(e))
    assert hc is not None
    v = _nvfp4_round(xc, osc)
    e = xc - v.mul_(s)
    return _quadratic_form(e, hc)


def _search_rows_per_chunk(row_elems: int, device: torch.device) -> int:
    budget = _SEARCH_CHUNK_ELEMS_CPU if device.type == "cpu" else _SEARCH_CHUNK_ELEMS_DEVICE
    return max(1, budget // max(1, row_elems))


def _nvfp4_search(
    xr: Tensor, gs_r: Tensor, naive: Tensor, method: str, hessian: Optional[Tensor]
) -> Tensor:
    """Exhaustive scale search over the 126 positive finite E4M3 bytes (SPEC section 5).

    Parameters
    ----------
    xr : Tensor
        fp32 blocks ``[R, G, 16]``.
    gs_r : Tensor
        fp32 ``[R, 1]``: the global scale of each row.
    naive : Tensor
        uint8 ``[R, G]``: the amax scale bytes.
    method : str
        ``"mse"`` or ``"hessian"``.
    hessian : Tensor or None
        fp32 ``[G, 16, 16]``.

    Returns
    -------
    Tensor
        uint8 ``[R, G]``: per block, the byte of least objective; ties go to the naive
        byte, then to the smallest byte (best initialised with the naive byte, candidates
        scanned in increasing order, replaced only on a strictly smaller objective).
        Blocks whose naive byte is 0x7F keep it.
    """
    R, G, _ = xr.shape
    dev = xr.device
    cands = e4m3_to_fp32(torch.tensor(list(_NVFP4_CANDIDATES), dtype=torch.uint8, device=dev))
    hc = hessian.permute(1, 2, 0) if method == "hessian" and hessian is not None else None
    out = torch.empty_like(naive)
    step = _search_rows_per_chunk(G * NVFP4_BLOCK, dev)
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        xc = xr[r0:r1].permute(2, 0, 1).contiguous()  # [16, r, G]
        axc = xc.abs()
        gsc = gs_r[r0:r1]
        best = naive[r0:r1].clone()
        best_obj = _nvfp4_objective_cols(xc, axc, e4m3_to_fp32(best), gsc, method, hc)
        for k, byte in enumerate(_NVFP4_CANDIDATES):
            obj = _nvfp4_objective_cols(xc, axc, cands[k], gsc, method, hc)
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best = torch.where(better, byte, best)
        out[r0:r1] = best
    return torch.where(naive == 0x7F, naive, out)


def _nvfp4_quantize_core(
    x: Tensor, gs: Tensor, scale_method: str, hessian: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor]:
    """Codes ``[B, M, K]`` and scale bytes ``[B, M, K/16]`` of batched ``x``, and ``gs_b``."""
    x3 = x.detach()
    x3 = x3 if x3.dim() == 3 else x3.unsqueeze(0)
    B, M, K = x3.shape
    G = K // NVFP4_BLOCK
    xb = x3.to(_F32).reshape(B, M, G, NVFP4_BLOCK)
    gs_b = gs.detach().reshape(-1, 1, 1)
    sf = _nvfp4_naive_bytes(xb, gs_b)
    if scale_method != "amax":
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
    """Quantize to NVFP4: E2M1 codes with one E4M3 scale per 16 elements (SPEC sec. 2, 5).

    Per block of 16 along the last dim, with ``vmax = max |x_i|``:
    ``sf = E4M3(RN(gs * RN(vmax * RN(1/6))))`` (``scale_method="amax"``) or the
    exhaustive search of SPEC section 5 (``"mse"``, ``"hessian"``); then
    ``osc = RN(1 / RN(fp32(sf) * RN(1/gs)))`` and ``code = E2M1(RN(x * osc))``.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16, ``K % 16 == 0``, any strides.
    global_scale : Tensor
        float32 encode scale (see :func:`global_scale`), one element, or ``[B]`` (one
        per batch) for 3-D ``x``.
    swizzle : bool
        Return the scales in the 128x4 swizzled layout.
    scale_method : str
        ``"amax"``, ``"mse"`` or ``"hessian"``.
    hessian : Tensor, optional
        float32 ``[K/16, 16, 16]`` (see :func:`hessian_blocks`), for ``"hessian"`` only.

    Returns
    -------
    packed : Tensor
        uint8 ``[..., M, K/2]``, element ``2i`` in the low nibble.
    scales : Tensor
        float8_e4m3fn ``[..., M, K/16]``, or swizzled ``[Mp, Kp]`` / ``[B, Mp, Kp]``.

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
    packed = pack_e2m1(codes)
    scales = sf.view(torch.float8_e4m3fn)
    if x.dim() == 2:
        packed, scales = packed[0], scales[0]
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
    """Dequantize NVFP4: ``RN(e2m1(code) * RN(fp32(sf) / gs))``, then one cast (SPEC sec. 2).

    Parameters
    ----------
    packed : Tensor
        uint8 ``[M, K/2]`` or ``[B, M, K/2]``.
    scales : Tensor
        float8_e4m3fn ``[..., M, K/16]``, or swizzled ``[Mp, Kp]`` / ``[B, Mp, Kp]``
        (``M`` and ``K`` are read from ``packed``).
    global_scale : Tensor
        float32, one element or ``[B]``: the encode scale used by :func:`quantize`.
    out_dtype : torch.dtype
        float32, float16 or bfloat16.
    swizzled : bool
        Layout of ``scales``.

    Returns
    -------
    Tensor
        ``[..., M, K]`` of ``out_dtype``. Blocks with scale 0x7F are NaN.
    """
    check_dequantize_args(packed, scales, global_scale, out_dtype, swizzled)
    p3 = packed.detach()
    p3 = p3 if p3.dim() == 3 else p3.unsqueeze(0)
    B, M, Kh = p3.shape
    K = 2 * Kh
    G = K // NVFP4_BLOCK
    s = scales.detach()
    s = s if s.dim() == 3 else s.unsqueeze(0)
    if swizzled:
        s = unswizzle_scales(s, M, G)
    codes_b = unpack_e2m1(p3).reshape(B, M, G, NVFP4_BLOCK)
    out = _nvfp4_dequant_blocks(codes_b, s.view(torch.uint8), global_scale.detach().reshape(-1, 1, 1))
    out = out.reshape(B, M, K).to(out_dtype)
    return out if packed.dim() == 3 else out[0]


def quant_dequant(x: Tensor, global_scale: Tensor) -> Tensor:
    """NVFP4 fake quantization: bit-identical to ``dequantize(*quantize(x, gs), gs, x.dtype)``.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16, ``K % 16 == 0``.
    global_scale : Tensor
        float32, one element or ``[B]`` for 3-D ``x``.

    Returns
    -------
    Tensor
        Same shape and dtype as ``x`` (contiguous).
    """
    check_quant_dequant_args(x, global_scale)
    codes, sf, gs_b = _nvfp4_quantize_core(x, global_scale, "amax", None)
    B, M, K = codes.shape
    out = _nvfp4_dequant_blocks(codes.reshape(B, M, K // NVFP4_BLOCK, NVFP4_BLOCK), sf, gs_b)
    out = out.reshape(B, M, K).to(x.dtype)
    return out if x.dim() == 3 else out[0]


def nvfp4_block_objective(
    x: Tensor,
    scale_bytes: Tensor,
    global_scale: Tensor,
    method: str = "mse",
    hessian: Optional[Tensor] = None,
) -> Tensor:
    """Per-block scale-search objective of NVFP4 blocks for given scale bytes (SPEC sec. 5).

    ``err_i = RN(x_i - RN(e2m1(code_i) * RN(fp32(sf) / gs)))`` with the codes of SPEC
    section 2 for scale ``sf``. ``"mse"``: ``s = RN(err_0^2); s = RN(s + RN(err_1^2)); ...``
    up to ``i = 15``. ``"hessian"``: ``sum_i RN(err_i * t_i)`` left to right, with
    ``t_i = sum_j RN(H[i, j] * err_j)`` left to right and ``H = hessian[k // 16]``.
    This is exactly what the search of :func:`quantize` minimises. Blocks holding NaN or
    inf give whatever the arithmetic gives (NaN or inf).

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16.
    scale_bytes : Tensor
        uint8 or float8_e4m3fn ``[..., M, K/16]``.
    global_scale : Tensor
        float32, one element or ``[B]``.
    method : str
        ``"mse"`` or ``"hessian"``.
    hessian : Tensor, optional
        float32 ``[K/16, 16, 16]`` for ``"hessian"``.

    Returns
    -------
    Tensor
        fp32 ``[..., M, K/16]``.
    """
    check_block_objective_args(x, scale_bytes, global_scale, method, hessian)
    x3 = x.detach()
    x3 = x3 if x3.dim() == 3 else x3.unsqueeze(0)
    B, M, K = x3.shape
    G = K // NVFP4_BLOCK
    xc = x3.to(_F32).reshape(B, M, G, NVFP4_BLOCK).permute(3, 0, 1, 2).contiguous()
    sb = scale_bytes.detach()
    sb = (sb if sb.dim() == 3 else sb.unsqueeze(0)).view(torch.uint8)
    hc = hessian.detach().permute(1, 2, 0) if hessian is not None else None
    obj = _nvfp4_objective_cols(
        xc, xc.abs(), e4m3_to_fp32(sb), global_scale.detach().reshape(-1, 1, 1), method, hc
    )
    return obj if x.dim() == 3 else obj[0]


def hessian_blocks(X: Tensor, chunk_rows: int = 4096) -> Tensor:
    """Per-column-group second moments ``H_j = X_j^T X_j`` for the ``"hessian"`` search.

    ``X_j = X[:, 16j:16j+16].float()``; the products of each chunk of ``chunk_rows`` rows
    are batched fp32 matmuls, always in full fp32 (TF32 is switched off for them whatever
    ``torch.backends.cuda.matmul.allow_tf32`` says, so H does not depend on that setting),
    and the chunks are accumulated in fp32. On a GPU this is cuBLAS at its fp32 rate.

    Parameters
    ----------
    X : Tensor
        ``[T, K]`` calibration activations, ``K % 16 == 0``.
    chunk_rows : int
        Rows per chunk.

    Returns
    -------
    Tensor
        fp32 ``[K/16, 16, 16]``, symmetric positive semi-definite.
    """
    check_hessian_blocks_args(X, chunk_rows)
    X = X.detach()
    T, K = X.shape
    G = K // NVFP4_BLOCK
    H = torch.zeros((G, NVFP4_BLOCK, NVFP4_BLOCK), dtype=_F32, device=X.device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for r0 in range(0, T, chunk_rows):
            xc = X[r0 : r0 + chunk_rows].to(_F32).reshape(-1, G, NVFP4_BLOCK).permute(1, 0, 2)
            H += torch.bmm(xc.transpose(1, 2), xc)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return H


# --------------------------------------------------------------------------------------
# MX (E8M0 scale per 32 elements)
# --------------------------------------------------------------------------------------


def _mx_naive_bytes(xb: Tensor, elem: str, rounding: str) -> Tensor:
    """E8M0 scale bytes of MX blocks ``[..., 32]`` (SPEC section 3), computed on the bits.

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


def _mx_encode_with_scale(xb: Tensor, b_bytes: Tensor, elem: str) -> Tensor:
    """Element bytes (E4M3) or codes (E2M1) of MX blocks ``[..., 32]`` for scale bytes.

    ``y = RN(x * 2^(127 - b))`` then E4M3 RNE saturating or E2M1 (SPEC sections 1, 3).
    Blocks with ``b == 255`` get 0.
    """
    b = b_bytes.to(torch.int32)
    y = xb * _inv_pow2_from_e8m0(b).unsqueeze(-1)
    data = e4m3_from_fp32(y) if elem == "e4m3" else e2m1_encode(y)
    return torch.where((b == 255).unsqueeze(-1), 0, data)


def _mx_objective_cols(axc: Tensor, b: Tensor, elem: str) -> Tensor:
    """MX ``mse`` objective in column-major block layout.

    ``axc``: fp32 ``[32, *S]`` magnitudes; ``b``: int32 E8M0 bytes broadcastable to ``S``.
    ``err_i = RN(x_i - elem_i * 2^(b-127))`` (the product is exact); the squares are
    taken from magnitudes, which gives the same bits (see :func:`_nvfp4_objective_cols`),
    and summed left to right.
    """
    q = _mx_round_mag(axc * _inv_pow2_from_e8m0(b), elem)
    e = axc - q.mul_(_pow2_from_e8m0(b))
    return _seq_sum(e.mul_(e))


def _mx_search(xr: Tensor, naive: Tensor, elem: str) -> Tensor:
    """Exhaustive ``mse`` search over the E8M0 bytes 0..254 (SPEC section 5).

    ``xr``: fp32 ``[R, G, 32]``; ``naive``: uint8 ``[R, G]``. Tie rule as in
    :func:`_nvfp4_search`; blocks whose naive byte is 255 keep it.
    """
    R, G, _ = xr.shape
    dev = xr.device
    out = torch.empty_like(naive)
    step = _search_rows_per_chunk(G * MX_BLOCK, dev)
    cands = torch.tensor(list(_MX_CANDIDATES), dtype=torch.int32, device=dev)
    for r0 in range(0, R, step):
        r1 = min(R, r0 + step)
        axc = xr[r0:r1].permute(2, 0, 1).abs().contiguous()  # [32, r, G]
        best = naive[r0:r1].clone()
        best_obj = _mx_objective_cols(axc, best.to(torch.int32), elem)
        for k, byte in enumerate(_MX_CANDIDATES):
            obj = _mx_objective_cols(axc, cands[k], elem)
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best = torch.where(better, byte, best)
        out[r0:r1] = best
    return torch.where(naive == 255, naive, out)


def mx_quantize(
    x: Tensor,
    elem: str = "e4m3",
    rounding: str = "rceil",
    swizzle: bool = False,
    axis: int = -1,
    scale_method: str = "amax",
) -> Tuple[Tensor, Tensor]:
    """Quantize to MXFP8 (``elem="e4m3"``) or MXFP4 (``elem="e2m1"``) (SPEC sections 3, 5).

    One E8M0 scale byte ``b`` per 32 elements (``rceil`` or ``floor`` rounding, or the
    exhaustive ``mse`` search over 0..254); elements ``RN(x * 2^(127 - b))`` in E4M3
    (RNE, saturating) or E2M1. A block holding NaN or +-inf gets ``b = 255`` and
    element bytes 0.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16; the quantized dim a
        multiple of 32.
    elem : str
        ``"e4m3"`` or ``"e2m1"``.
    rounding : str
        ``"rceil"`` or ``"floor"``; with ``scale_method="mse"`` it picks the naive scale
        that wins ties.
    swizzle : bool
        Return the scales in the 128x4 swizzled layout.
    axis : int
        ``-1`` (rowwise) or ``-2`` (columnwise: exactly the result for
        ``x.transpose(-1, -2).contiguous()``, so the outputs are ``[..., K, M...]``).
    scale_method : str
        ``"amax"`` or ``"mse"``.

    Returns
    -------
    data : Tensor
        float8_e4m3fn ``[..., M, K]`` (e4m3) or uint8 packed ``[..., M, K/2]`` (e2m1).
    scales : Tensor
        uint8 E8M0 bytes ``[..., M, K/32]``, or swizzled ``[Mp, Kp]`` / ``[B, Mp, Kp]``.
    """
    check_mx_quantize_args(x, elem, rounding, swizzle, axis, scale_method)
    x = x.detach()
    if axis in (-2, x.dim() - 2):
        x = x.transpose(-1, -2).contiguous()
    x3 = x if x.dim() == 3 else x.unsqueeze(0)
    B, M, K = x3.shape
    G = K // MX_BLOCK
    xb = x3.to(_F32).reshape(B, M, G, MX_BLOCK)
    b = _mx_naive_bytes(xb, elem, rounding)
    if scale_method == "mse":
        b = _mx_search(xb.reshape(B * M, G, MX_BLOCK), b.reshape(B * M, G), elem).reshape(B, M, G)
    data = _mx_encode_with_scale(xb, b, elem).reshape(B, M, K)
    data = data.view(torch.float8_e4m3fn) if elem == "e4m3" else pack_e2m1(data)
    if x.dim() == 2:
        data, b = data[0], b[0]
    return data, (swizzle_scales(b) if swizzle else b)


def mx_dequantize(
    data: Tensor,
    scales: Tensor,
    elem: str,
    out_dtype: torch.dtype,
    swizzled: bool = False,
) -> Tensor:
    """Dequantize MX: ``elem * 2^(b - 127)`` exactly in fp32, then one cast (SPEC sec. 3).

    Parameters
    ----------
    data : Tensor
        float8_e4m3fn ``[..., M, K]`` (e4m3) or uint8 packed ``[..., M, K/2]`` (e2m1).
    scales : Tensor
        uint8 or float8_e8m0fnu ``[..., M, K/32]``, or swizzled ``[Mp, Kp]`` /
        ``[B, Mp, Kp]``. Byte 255 dequantizes its block to NaN.
    elem : str
        ``"e4m3"`` or ``"e2m1"``.
    out_dtype : torch.dtype
        float32, float16 or bfloat16.
    swizzled : bool
        Layout of ``scales``.

    Returns
    -------
    Tensor
        ``[..., M, K]`` of ``out_dtype``.
    """
    check_mx_dequantize_args(data, scales, elem, out_dtype, swizzled)
    d3 = data.detach()
    d3 = d3 if d3.dim() == 3 else d3.unsqueeze(0)
    vals = d3.to(_F32) if elem == "e4m3" else e2m1_decode(unpack_e2m1(d3))
    B, M, K = vals.shape
    G = K // MX_BLOCK
    s = scales.detach()
    s = (s if s.dim() == 3 else s.unsqueeze(0)).view(torch.uint8)
    if swizzled:
        s = unswizzle_scales(s, M, G)
    mult = _pow2_from_e8m0(s.to(torch.int32))
    out = (vals.reshape(B, M, G, MX_BLOCK) * mult.unsqueeze(-1)).reshape(B, M, K).to(out_dtype)
    return out if data.dim() == 3 else out[0]


def mx_block_objective(x: Tensor, scale_bytes: Tensor, elem: str) -> Tensor:
    """Per-block MX ``mse`` objective for given E8M0 scale bytes (SPEC section 5).

    ``err_i = RN(x_i - elem_i * 2^(b - 127))`` with the elements of SPEC section 3 for
    scale byte ``b``; ``s = RN(err_0^2); s = RN(s + RN(err_1^2)); ...`` up to ``i = 31``.
    Byte 255 gives NaN.

    Parameters
    ----------
    x : Tensor
        ``[M, K]`` or ``[B, M, K]``, float32/float16/bfloat16, ``K % 32 == 0``.
    scale_bytes : Tensor
        uint8 or float8_e8m0fnu ``[..., M, K/32]``.
    elem : str
        ``"e4m3"`` or ``"e2m1"``.

    Returns
    -------
    Tensor
        fp32 ``[..., M, K/32]``.
    """
    check_mx_block_objective_args(x, scale_bytes, elem)
    x3 = x.detach()
    x3 = x3 if x3.dim() == 3 else x3.unsqueeze(0)
    B, M, K = x3.shape
    axc = x3.to(_F32).reshape(B, M, K // MX_BLOCK, MX_BLOCK).permute(3, 0, 1, 2).abs().contiguous()
    sb = scale_bytes.detach()
    sb = (sb if sb.dim() == 3 else sb.unsqueeze(0)).view(torch.uint8).to(torch.int32)
    obj = _mx_objective_cols(axc, sb, elem)
    return obj if x.dim() == 3 else obj[0]
