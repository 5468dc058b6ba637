"""The argument contract of every ``nvfp4`` op: the single source of its checks and messages.

The reference functions, the fake (meta) implementations in :mod:`nvfp4_ops.ops` and the
C++ launchers (``csrc/torch_utils.h``) all raise exactly these messages, so a bad argument
fails the same way on every device and at trace time. The checks only look at metadata
(dtypes, ranks, shapes, devices, strings), so they run on fake and meta tensors too; the one
exception is the finiteness of a ``hessian``, which needs the values and is skipped on
fake and meta tensors.

Message conventions (the C++ side follows them character for character):

* exception type ``RuntimeError`` (raised through ``torch._check``);
* the text is ``"<op>: <what> must <expected>, got <actual>"`` with ``<op>`` the qualified
  name ``nvfp4.<op>`` of the op called (``nvfp4.quant_dequant``, not ``nvfp4.quantize``);
* a dtype is printed as torch prints it (``torch.float64``); the expected dtypes as the
  :data:`TENSOR_ARGS` table spells them;
* a shape is printed ``[a, b, c]`` (``[]`` for a 0-D tensor), a rank ``3-D``;
* a string argument is printed as Python's ``repr`` (``'foo'``; ``"it's"``; control
  characters escaped), the accepted ones as ``'a', 'b' or 'c'``;
* a device as torch prints it (``cpu``, ``cuda:0``), tensors in argument order;
* the checks run in a fixed order (the order of the statements in each ``check_*``
  function) and the first violated one raises.

The templates are :data:`MESSAGES`; the per-op tensor arguments are :data:`TENSOR_ARGS`,
the string choices :data:`CHOICES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor

from ._common import FLOAT_DTYPES, MX_BLOCK, MX_SCALE_DTYPES, NVFP4_BLOCK, roundup, shape_str

__all__ = [
    "MESSAGES",
    "TENSOR_ARGS",
    "CHOICES",
    "TensorArg",
    "check_global_scale_args",
    "check_quantize_args",
    "check_quant_dequant_args",
    "check_dequantize_args",
    "check_mx_quantize_args",
    "check_mx_quantize_rowcol_args",
    "check_mx_dequantize_args",
    "check_swizzle_args",
    "check_unswizzle_args",
    "check_hessian_blocks_args",
    "check_block_objective_args",
    "check_mx_block_objective_args",
    "check_pack_args",
    "check_gemm_nvfp4_w4a16_args",
    "check_gemm_nvfp4_w4a16_prepacked_args",
    "check_prepack_nvfp4_w4a16_args",
    "check_unprepack_nvfp4_w4a16_args",
    "check_gemm_mx_w16_args",
    "check_train_quantize_args",
    "check_train_quantize_rowcol_args",
    "check_grouped_quantize_args",
    "check_mx_grouped_quantize_args",
    "prepacked_shapes",
]

#: Every message template (``str.format`` fields); each message starts with ``{op}: ``.
MESSAGES = {
    "dtype": "{op}: {name} must {expected}, got {dtype}",
    "rank": "{op}: {name} must be 2-D or 3-D ({layout}), got {dim}-D shape {shape}",
    "rank_2d": "{op}: {name} must be 2-D {layout}, got {dim}-D shape {shape}",
    "multiple": "{op}: {what} must be a multiple of {m}, got {n}",
    "choice": "{op}: {name} must be {choices}, got {value}",
    "devices": "{op}: tensors must be on one device: {placement}",
    "global_scale": "{op}: global_scale must be float32 with 1 element{per_batch}, got shape "
    "{shape} and dtype {dtype}",
    "scales_shape": "{op}: scales must have shape {want} ({layout}), got {shape}",
    "hessian_missing": "{op}: scale_method='hessian' needs a hessian, float32 of shape {want}, "
    "got None",
    "hessian_shape": "{op}: hessian must be float32 of shape {want}, got {shape}{dtype}",
    "hessian_unused": "{op}: a hessian is only used with scale_method='hessian', got "
    "scale_method={scale_method}",
    "hessian_finite": "{op}: hessian must be finite, got NaN or inf",
    "axis": "{op}: axis must be -1 or -2 (the last two dims of a {dim}-D x), got {axis}",
    "rows_cols": "{op}: rows and cols must be >= 0, got rows={rows}, cols={cols}",
    "swizzled_shape": "{op}: swizzled must have shape [..., roundup(rows, 128), roundup(cols, 4)]"
    " = [..., {mp}, {kp}] for rows={rows}, cols={cols}, got {shape}",
    "positive": "{op}: {name} must be > 0, got {value}",
    "even": "{op}: the last dim must be even, got shape {shape}",
    "rank_1d": "{op}: {name} must have at least 1 dim ({layout}), got 0-D",
    "k_match": "{op}: the last dim of x (K) must equal {want_text} = {want}, got {k}",
    "bias": "{op}: bias must be None or of shape [N] = [{n}] and dtype {dtype}, got shape "
    "{shape} and dtype {actual}",
    "prepacked": "{op}: {name} must be {dtype} of shape {layout} = {want} "
    "(nvfp4.prepack_nvfp4_w4a16), got shape {shape} and dtype {actual}",
    "tensor_spec": "{op}: {name} must be {want}, got shape {shape} and dtype {dtype}",
    "rng_missing": "{op}: rounding='stochastic' needs {name} (int64 with 1 element), got None",
    "rng_unused": "{op}: {name} is only used with rounding='stochastic', got a tensor with "
    "rounding={rounding}",
    "rank_exact": "{op}: {name} must be 2-D {layout}, got {dim}-D shape {shape}",
}


def _one_byte(dtype: torch.dtype) -> bool:
    return dtype.itemsize == 1


@dataclass(frozen=True)
class TensorArg:
    """One tensor argument: its name, the dtypes it accepts and how its layout reads.

    ``dtypes`` is a tuple of dtypes or a predicate on the dtype; ``expected`` completes
    ``"<name> must ..."`` in the dtype message; ``layout`` names the 2-D / 3-D layout in the
    rank message (None: the rank is checked elsewhere or not at all).
    """

    name: str
    dtypes: Union[Tuple[torch.dtype, ...], Callable[[torch.dtype], bool]]
    expected: str
    layout: Optional[str] = None

    def accepts(self, dtype: torch.dtype) -> bool:
        """Whether ``dtype`` is allowed."""
        return dtype in self.dtypes if isinstance(self.dtypes, tuple) else self.dtypes(dtype)


_U8, _E4M3 = torch.uint8, torch.float8_e4m3fn
_FLOAT_TEXT = "be float32, float16 or bfloat16"
_ONE_BYTE_TEXT = (
    "have a 1-byte dtype (element_size() == 1: uint8, int8, float8_e4m3fn, float8_e8m0fnu, ...)"
)

#: The tensor arguments of every op (and of the reference helpers that are not ops).
TENSOR_ARGS = {
    "x": TensorArg("x", FLOAT_DTYPES, _FLOAT_TEXT, "[M, K] or [B, M, K]"),
    "global_scale_x": TensorArg("x", FLOAT_DTYPES, _FLOAT_TEXT),
    "packed": TensorArg(
        "packed", (_U8,), "be uint8 (two E2M1 codes per byte)", "[M, K/2] or [B, M, K/2]"
    ),
    "nvfp4_scales": TensorArg("scales", (_E4M3,), "be torch.float8_e4m3fn"),
    "out_dtype": TensorArg(
        "out_dtype", FLOAT_DTYPES, "be torch.float32, torch.float16 or torch.bfloat16"
    ),
    "mx_data_e4m3": TensorArg(
        "data", (_E4M3,), "be torch.float8_e4m3fn for elem='e4m3'", "[M, K] or [B, M, K]"
    ),
    "mx_data_e2m1": TensorArg(
        "data",
        (_U8,),
        "be uint8 (two E2M1 codes per byte) for elem='e2m1'",
        "[M, K/2] or [B, M, K/2]",
    ),
    "mx_scales": TensorArg("scales", MX_SCALE_DTYPES, "be uint8 or torch.float8_e8m0fnu"),
    "swizzle_scales": TensorArg("scales", _one_byte, _ONE_BYTE_TEXT, "[M, Kb] or [B, M, Kb]"),
    "swizzled": TensorArg("swizzled", _one_byte, _ONE_BYTE_TEXT, "[Mp, Kp] or [B, Mp, Kp]"),
    "hessian_X": TensorArg(
        "X", lambda d: d.is_floating_point, "be a floating point tensor", "[T, K]"
    ),
    "nvfp4_scale_bytes": TensorArg(
        "scale_bytes", (_U8, _E4M3), "be uint8 or torch.float8_e4m3fn"
    ),
    "mx_scale_bytes": TensorArg("scale_bytes", MX_SCALE_DTYPES, "be uint8 or torch.float8_e8m0fnu"),
    # the GEMMs: a 16-bit activation [..., K] and a 2-D weight [N, ...]
    "gemm_x": TensorArg("x", (torch.float16, torch.bfloat16), "be float16 or bfloat16",
                        "[..., K]"),
    "gemm_packed": TensorArg("packed", (_U8,), "be uint8 (two E2M1 codes per byte)", "[N, K/2]"),
    "gemm_mx_data_e4m3": TensorArg("data", (_E4M3,), "be torch.float8_e4m3fn for elem='e4m3'",
                                   "[N, K]"),
    "gemm_mx_data_e2m1": TensorArg("data", (_U8,), "be uint8 (two E2M1 codes per byte) for "
                                   "elem='e2m1'", "[N, K/2]"),
}

#: The accepted values of every string argument, keyed by (op, argument).
CHOICES = {
    ("nvfp4.quantize", "scale_method"): ("amax", "mse", "hessian", "4over6"),
    ("nvfp4.quant_dequant", "scale_method"): ("amax", "4over6"),
    ("nvfp4.mx_quantize", "scale_method"): ("amax", "mse"),
    ("nvfp4.mx_quantize", "elem"): ("e4m3", "e2m1"),
    ("nvfp4.mx_quantize", "rounding"): ("rceil", "floor"),
    ("nvfp4.mx_quantize_rowcol", "rounding"): ("rceil", "floor"),
    ("nvfp4.mx_dequantize", "elem"): ("e4m3", "e2m1"),
    ("nvfp4.nvfp4_block_objective", "method"): ("mse", "hessian"),
    ("nvfp4.gemm_mx_w16", "elem"): ("e4m3", "e2m1"),
    ("nvfp4.train_quantize", "rounding"): ("nearest", "stochastic"),
    ("nvfp4.train_quantize_rowcol", "rounding"): ("nearest", "stochastic"),
    ("nvfp4.mx_grouped_quantize", "elem"): ("e4m3", "e2m1"),
    ("nvfp4.mx_grouped_quantize", "rounding"): ("rceil", "floor"),
}


def _fail(key: str, **fields) -> Callable[[], str]:
    return lambda: MESSAGES[key].format(**fields)


# --------------------------------------------------------------------------------------
# Building blocks (each check written once)
# --------------------------------------------------------------------------------------


def _check_dtype(op: str, spec: TensorArg, dtype: torch.dtype) -> None:
    torch._check(
        spec.accepts(dtype),
        lambda: MESSAGES["dtype"].format(
            op=op, name=spec.name, expected=spec.expected, dtype=dtype
        ),
    )


def _check_rank(op: str, spec: TensorArg, t: Tensor) -> None:
    torch._check(
        t.dim() in (2, 3),
        lambda: MESSAGES["rank"].format(
            op=op, name=spec.name, layout=spec.layout, dim=t.dim(), shape=shape_str(t.shape)
        ),
    )


def _check_tensor(op: str, spec: TensorArg, t: Tensor) -> None:
    """dtype, then (where the spec names a layout) 2-D or 3-D."""
    _check_dtype(op, spec, t.dtype)
    if spec.layout is not None:
        _check_rank(op, spec, t)


def _check_choice(op: str, name: str, value: object, key: Optional[str] = None) -> None:
    choices = CHOICES[(key or op, name)]
    text = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
    torch._check(
        isinstance(value, str) and value in choices,
        _fail("choice", op=op, name=name, choices=text, value=repr(value)),
    )


def _check_multiple(op: str, what: str, n: int, m: int) -> None:
    torch._check(n % m == 0, _fail("multiple", op=op, what=what, m=m, n=n))


def _check_one_device(op: str, **tensors: Optional[Tensor]) -> None:
    named = [(n, t) for n, t in tensors.items() if t is not None]
    first = named[0][1].device
    torch._check(
        all(t.device == first for _, t in named),
        lambda: MESSAGES["devices"].format(
            op=op, placement=", ".join(f"{n} on {t.device}" for n, t in named)
        ),
    )


def _check_global_scale(op: str, gs: Tensor, batch: Optional[int]) -> None:
    """``gs``: float32 with one element, or for 3-D data (``batch`` = B) shape ``[B]``."""
    ok = gs.dtype == torch.float32 and (
        gs.numel() == 1 or (batch is not None and gs.dim() == 1 and gs.shape[0] == batch)
    )
    torch._check(
        ok,
        lambda: MESSAGES["global_scale"].format(
            op=op,
            per_batch="" if batch is None else f" or one per batch ({batch})",
            shape=shape_str(gs.shape),
            dtype=gs.dtype,
        ),
    )


def _is_fake(t: Tensor) -> bool:
    return t.device.type == "meta" or torch._subclasses.fake_tensor.is_fake(t)


def _check_hessian(op: str, hessian: Optional[Tensor], scale_method: str, K: int) -> None:
    """Shape and dtype of ``hessian`` (needed by, and only allowed with, "hessian")."""
    want = f"[K/16, 16, 16] = [{K // NVFP4_BLOCK}, 16, 16]"
    if scale_method != "hessian":
        torch._check(
            hessian is None,
            _fail("hessian_unused", op=op, scale_method=repr(scale_method)),
        )
        return
    torch._check(hessian is not None, _fail("hessian_missing", op=op, want=want))
    assert hessian is not None
    torch._check(
        hessian.dtype == torch.float32 and tuple(hessian.shape) == (K // NVFP4_BLOCK, 16, 16),
        lambda: MESSAGES["hessian_shape"].format(
            op=op,
            want=want,
            shape=shape_str(hessian.shape),
            dtype="" if hessian.dtype == torch.float32 else f" of dtype {hessian.dtype}",
        ),
    )


def _check_hessian_finite(op: str, hessian: Optional[Tensor]) -> None:
    """A NaN or inf in a real ``hessian`` (the values are not known on fake / meta tensors)."""
    if hessian is None or _is_fake(hessian):
        return
    torch._check(bool(torch.isfinite(hessian).all()), _fail("hessian_finite", op=op))


def _check_scales_shape(
    op: str, data: Tensor, scales: Tensor, M: int, Kb: int, swizzled: bool, kb_name: str
) -> None:
    lead = tuple(data.shape[:-2])
    if swizzled:
        want = lead + (roundup(M, 128), roundup(Kb, 4))
        layout = f"swizzled, [..., roundup(M, 128), roundup({kb_name}, 4)]"
    else:
        want = lead + (M, Kb)
        layout = f"linear, [..., M, {kb_name}]"
    torch._check(
        tuple(scales.shape) == want,
        lambda: MESSAGES["scales_shape"].format(
            op=op, want=shape_str(want), layout=layout, shape=shape_str(scales.shape)
        ),
    )


# --------------------------------------------------------------------------------------
# One check function per op (and per reference helper). Each raises RuntimeError at the
# first violated condition, its message naming the expected and the actual value.
# --------------------------------------------------------------------------------------


def check_global_scale_args(x: Tensor) -> None:
    """Check the argument of ``global_scale``: ``x`` of any shape, float32/float16/bfloat16."""
    _check_tensor("nvfp4.global_scale", TENSOR_ARGS["global_scale_x"], x)


def check_quantize_args(
    x: Tensor,
    global_scale: Tensor,
    swizzle: bool = False,
    scale_method: str = "amax",
    hessian: Optional[Tensor] = None,
    op: str = "nvfp4.quantize",
) -> None:
    """Check the arguments of ``quantize`` (``op`` names the op in the messages).

    In order: ``x`` float32/float16/bfloat16, 2-D or 3-D, ``K % 16 == 0``; ``global_scale``
    float32 with one element (or ``[B]`` for 3-D ``x``); ``scale_method`` one of "amax",
    "mse", "hessian", "4over6" (``quant_dequant``: "amax" or "4over6"); ``hessian``
    float32 ``[K/16, 16, 16]`` with "hessian" and None otherwise; every tensor on one
    device; ``hessian`` finite (real tensors only: fake and meta tensors have no values). ``swizzle`` takes any value.
    """
    _check_tensor(op, TENSOR_ARGS["x"], x)
    _check_multiple(op, "K (the last dim)", x.shape[-1], NVFP4_BLOCK)
    _check_global_scale(op, global_scale, x.shape[0] if x.dim() == 3 else None)
    choices = "nvfp4.quant_dequant" if op == "nvfp4.quant_dequant" else "nvfp4.quantize"
    _check_choice(op, "scale_method", scale_method, choices)
    _check_hessian(op, hessian, scale_method, x.shape[-1])
    _check_one_device(op, x=x, global_scale=global_scale, hessian=hessian)
    _check_hessian_finite(op, hessian)


def check_quant_dequant_args(
    x: Tensor, global_scale: Tensor, scale_method: str = "amax"
) -> None:
    """Check the arguments of ``quant_dequant``: the rules of ``quantize`` without a hessian,
    ``scale_method`` "amax" or "4over6".

    The messages name ``nvfp4.quant_dequant``.
    """
    check_quantize_args(x, global_scale, scale_method=scale_method, op="nvfp4.quant_dequant")


def check_dequantize_args(
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    out_dtype: torch.dtype,
    swizzled: bool = False,
) -> None:
    """Check the arguments of ``dequantize``.

    In order: ``packed`` uint8, 2-D or 3-D, last dim (K/2) a multiple of 8; ``scales``
    float8_e4m3fn of shape ``[..., M, K/16]`` (``swizzled``: ``[..., roundup(M, 128),
    roundup(K/16, 4)]``); ``global_scale`` as for ``quantize``; ``out_dtype``
    float32/float16/bfloat16; every tensor on one device.
    """
    op = "nvfp4.dequantize"
    _check_tensor(op, TENSOR_ARGS["packed"], packed)
    _check_multiple(op, "the last dim of packed (K/2)", packed.shape[-1], NVFP4_BLOCK // 2)
    _check_dtype(op, TENSOR_ARGS["nvfp4_scales"], scales.dtype)
    M, K = packed.shape[-2], packed.shape[-1] * 2
    _check_scales_shape(op, packed, scales, M, K // NVFP4_BLOCK, swizzled, "K/16")
    _check_global_scale(op, global_scale, packed.shape[0] if packed.dim() == 3 else None)
    _check_dtype(op, TENSOR_ARGS["out_dtype"], out_dtype)
    _check_one_device(op, packed=packed, scales=scales, global_scale=global_scale)


def check_mx_quantize_args(
    x: Tensor,
    elem: str = "e4m3",
    rounding: str = "rceil",
    swizzle: bool = False,
    axis: int = -1,
    scale_method: str = "amax",
) -> None:
    """Check the arguments of ``mx_quantize``.

    In order: ``x`` float32/float16/bfloat16, 2-D or 3-D; ``elem`` "e4m3" or "e2m1";
    ``rounding`` "rceil" or "floor"; ``scale_method`` "amax" or "mse"; ``axis`` -1 or -2
    (or the same dims counted from the front); the quantized dim (``K`` for axis -1, ``M``
    for axis -2) a multiple of 32. ``swizzle`` takes any value.
    """
    op = "nvfp4.mx_quantize"
    _check_tensor(op, TENSOR_ARGS["x"], x)
    _check_choice(op, "elem", elem)
    _check_choice(op, "rounding", rounding)
    _check_choice(op, "scale_method", scale_method)
    _check_quantized_dim(op, x, axis, MX_BLOCK)


def check_mx_quantize_rowcol_args(
    x: Tensor, rounding: str = "rceil", swizzle: bool = False
) -> None:
    """Check the arguments of ``mx_quantize_rowcol``.

    In order: ``x`` float32/float16/bfloat16, 2-D or 3-D; ``rounding`` "rceil" or "floor";
    ``K`` (quantized by the rowwise cast) a multiple of 32, then ``M`` (the columnwise cast)
    a multiple of 32, with the texts of ``mx_quantize`` for axis -1 and -2. ``swizzle``
    takes any value.
    """
    op = "nvfp4.mx_quantize_rowcol"
    _check_tensor(op, TENSOR_ARGS["x"], x)
    _check_choice(op, "rounding", rounding)
    _check_quantized_dim(op, x, -1, MX_BLOCK)
    _check_quantized_dim(op, x, -2, MX_BLOCK)


def check_mx_dequantize_args(
    data: Tensor, scales: Tensor, elem: str, out_dtype: torch.dtype, swizzled: bool = False
) -> None:
    """Check the arguments of ``mx_dequantize``.

    In order: ``elem`` "e4m3" or "e2m1"; ``data`` float8_e4m3fn (e4m3) or uint8 (e2m1,
    two codes per byte), 2-D or 3-D, ``K % 32 == 0``; ``scales`` uint8 or float8_e8m0fnu
    of shape ``[..., M, K/32]`` (``swizzled``: ``[..., roundup(M, 128), roundup(K/32,
    4)]``); ``out_dtype`` float32/float16/bfloat16; both tensors on one device.
    """
    op = "nvfp4.mx_dequantize"
    _check_choice(op, "elem", elem)
    _check_tensor(op, TENSOR_ARGS[f"mx_data_{elem}"], data)
    if elem == "e4m3":
        K = data.shape[-1]
        _check_multiple(op, "K (the last dim of data)", K, MX_BLOCK)
    else:
        K = data.shape[-1] * 2
        _check_multiple(op, "the last dim of data (K/2)", data.shape[-1], MX_BLOCK // 2)
    _check_dtype(op, TENSOR_ARGS["mx_scales"], scales.dtype)
    _check_scales_shape(op, data, scales, data.shape[-2], K // MX_BLOCK, swizzled, "K/32")
    _check_dtype(op, TENSOR_ARGS["out_dtype"], out_dtype)
    _check_one_device(op, data=data, scales=scales)


def check_swizzle_args(scales: Tensor) -> None:
    """Check the argument of ``swizzle_scales``: ``[M, Kb]`` or ``[B, M, Kb]``, 1-byte dtype."""
    _check_tensor("nvfp4.swizzle_scales", TENSOR_ARGS["swizzle_scales"], scales)


def check_unswizzle_args(swizzled: Tensor, rows: int, cols: int) -> None:
    """Check the arguments of ``unswizzle_scales``.

    In order: ``swizzled`` of any 1-byte dtype, 2-D or 3-D; ``rows, cols >= 0``; the last
    two dims of ``swizzled`` equal to ``[roundup(rows, 128), roundup(cols, 4)]``.
    """
    op = "nvfp4.unswizzle_scales"
    _check_tensor(op, TENSOR_ARGS["swizzled"], swizzled)
    torch._check(rows >= 0 and cols >= 0, _fail("rows_cols", op=op, rows=rows, cols=cols))
    mp, kp = roundup(rows, 128), roundup(cols, 4)
    torch._check(
        (mp, kp) == tuple(swizzled.shape[-2:]),
        lambda: MESSAGES["swizzled_shape"].format(
            op=op, mp=mp, kp=kp, rows=rows, cols=cols, shape=shape_str(swizzled.shape)
        ),
    )


def check_hessian_blocks_args(X: Tensor, chunk_rows: int = 4096) -> None:
    """Check the arguments of ``hessian_blocks``: ``X`` floating ``[T, K]``, ``K % 16 == 0``."""
    op = "nvfp4.hessian_blocks"
    spec = TENSOR_ARGS["hessian_X"]
    _check_dtype(op, spec, X.dtype)
    torch._check(
        X.dim() == 2,
        lambda: MESSAGES["rank_2d"].format(
            op=op, name=spec.name, layout=spec.layout, dim=X.dim(), shape=shape_str(X.shape)
        ),
    )
    _check_multiple(op, "K (the last dim)", X.shape[-1], NVFP4_BLOCK)
    torch._check(chunk_rows > 0, _fail("positive", op=op, name="chunk_rows", value=chunk_rows))


def check_block_objective_args(
    x: Tensor,
    scale_bytes: Tensor,
    global_scale: Tensor,
    method: str = "mse",
    hessian: Optional[Tensor] = None,
) -> None:
    """Check the arguments of ``nvfp4_block_objective``.

    ``x``, ``global_scale`` and ``hessian`` as for ``quantize``; ``scale_bytes`` uint8 or
    float8_e4m3fn, linear ``[..., M, K/16]``; ``method`` ``"mse"`` or ``"hessian"``.
    """
    op = "nvfp4.nvfp4_block_objective"
    _check_choice(op, "method", method)
    check_quantize_args(x, global_scale, scale_method=method, hessian=hessian, op=op)
    _check_dtype(op, TENSOR_ARGS["nvfp4_scale_bytes"], scale_bytes.dtype)
    _check_scales_shape(op, x, scale_bytes, x.shape[-2], x.shape[-1] // NVFP4_BLOCK, False, "K/16")
    _check_one_device(op, x=x, scale_bytes=scale_bytes)


def check_mx_block_objective_args(x: Tensor, scale_bytes: Tensor, elem: str) -> None:
    """Check the arguments of ``mx_block_objective``.

    ``x`` and ``elem`` as for ``mx_quantize`` (messages name ``nvfp4.mx_quantize``, as
    before); ``scale_bytes`` uint8 or float8_e8m0fnu, linear ``[..., M, K/32]``.
    """
    op = "nvfp4.mx_block_objective"
    check_mx_quantize_args(x, elem)
    _check_dtype(op, TENSOR_ARGS["mx_scale_bytes"], scale_bytes.dtype)
    _check_scales_shape(op, x, scale_bytes, x.shape[-2], x.shape[-1] // MX_BLOCK, False, "K/32")
    _check_one_device(op, x=x, scale_bytes=scale_bytes)


def check_pack_args(codes: Tensor) -> None:
    """Check the argument of ``pack_e2m1``: at least 1-D with an even last dim."""
    torch._check(
        codes.dim() >= 1 and codes.shape[-1] % 2 == 0,
        lambda: MESSAGES["even"].format(op="nvfp4.pack_e2m1", shape=shape_str(codes.shape)),
    )


# --------------------------------------------------------------------------------------
# The fused weight GEMMs (csrc/gemm; the CUDA launcher raises these texts too)
# --------------------------------------------------------------------------------------

#: Rows and columns of one prepacked weight tile (the GEMM kernel's mma m16 and K step).
PREPACK_ROWS, PREPACK_K = 16, 512


def prepacked_shapes(n: int, k: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Shapes of ``prepack_nvfp4_w4a16``'s outputs for a weight ``[n, k]``: codes, scales."""
    g, s = -(-n // PREPACK_ROWS), -(-k // PREPACK_K)
    return (g, s, PREPACK_ROWS, PREPACK_K // 2), (g, s, PREPACK_ROWS, PREPACK_K // NVFP4_BLOCK)


def _check_rank_2d(op: str, spec: TensorArg, t: Tensor) -> None:
    torch._check(
        t.dim() == 2,
        lambda: MESSAGES["rank_2d"].format(
            op=op, name=spec.name, layout=spec.layout, dim=t.dim(), shape=shape_str(t.shape)
        ),
    )


def _check_gemm_x(op: str, x: Tensor) -> None:
    spec = TENSOR_ARGS["gemm_x"]
    _check_dtype(op, spec, x.dtype)
    torch._check(x.dim() >= 1, _fail("rank_1d", op=op, name="x", layout=spec.layout))


def _check_k_positive(op: str, k: int) -> None:
    torch._check(k > 0, _fail("positive", op=op, name="K", value=k))


def _check_k_match(op: str, x: Tensor, want_text: str, want: int) -> None:
    torch._check(
        x.shape[-1] == want,
        lambda: MESSAGES["k_match"].format(op=op, want_text=want_text, want=want, k=x.shape[-1]),
    )


def _check_bias(op: str, x: Tensor, bias: Optional[Tensor], n: int) -> None:
    if bias is None:
        return
    torch._check(
        bias.dim() == 1 and bias.shape[0] == n and bias.dtype == x.dtype,
        lambda: MESSAGES["bias"].format(
            op=op, n=n, dtype=x.dtype, shape=shape_str(bias.shape), actual=bias.dtype
        ),
    )


def _check_gs_bias_devices(
    op: str, x: Tensor, packed: Tensor, scales: Tensor, global_scale: Tensor,
    bias: Optional[Tensor], n: int,
) -> None:
    """The NVFP4 GEMMs' last checks: the global scale, the bias ``[n]``, one device."""
    _check_global_scale(op, global_scale, None)
    _check_bias(op, x, bias, n)
    _check_one_device(op, x=x, packed=packed, scales=scales, global_scale=global_scale,
                      bias=bias)


def _check_nvfp4_packed(op: str, packed: Tensor) -> Tuple[int, int]:
    """``packed`` uint8 ``[N, K/2]``, K/2 a multiple of 8, K > 0; returns ``(N, K)``."""
    _check_dtype(op, TENSOR_ARGS["gemm_packed"], packed.dtype)
    _check_rank_2d(op, TENSOR_ARGS["gemm_packed"], packed)
    N, K = packed.shape[0], 2 * packed.shape[1]
    _check_multiple(op, "the last dim of packed (K/2)", K // 2, NVFP4_BLOCK // 2)
    _check_k_positive(op, K)
    return N, K


def _check_nvfp4_weight_scales(op: str, packed: Tensor, scales: Tensor, N: int, K: int) -> None:
    """``scales`` float8_e4m3fn ``[N, K/16]`` (linear)."""
    _check_dtype(op, TENSOR_ARGS["nvfp4_scales"], scales.dtype)
    _check_scales_shape(op, packed, scales, N, K // NVFP4_BLOCK, False, "K/16")


def _check_prepacked_weight(op: str, packed: Tensor, scales: Tensor, n: int, k: int) -> None:
    wp, sp = prepacked_shapes(n, k)
    for name, t, dtype, want in (("packed", packed, _U8, wp), ("scales", scales, _E4M3, sp)):
        layout = f"[ceil(n/16), ceil(K/512), 16, {want[-1]}]"
        torch._check(
            t.dtype == dtype and tuple(t.shape) == want,
            lambda: MESSAGES["prepacked"].format(
                op=op, name=name, dtype="uint8" if dtype == _U8 else dtype, layout=layout,
                want=shape_str(want), shape=shape_str(t.shape), actual=t.dtype,
            ),
        )


def check_gemm_nvfp4_w4a16_args(
    x: Tensor, packed: Tensor, scales: Tensor, global_scale: Tensor, bias: Optional[Tensor] = None
) -> None:
    """Check the arguments of ``gemm_nvfp4_w4a16`` (metadata only: fake tensors too).

    In order: ``x`` float16/bfloat16, at least 1-D; ``packed`` uint8, 2-D ``[N, K/2]``, K/2
    a multiple of 8, K > 0; ``x.shape[-1] == K``; ``scales`` float8_e4m3fn ``[N, K/16]``
    (linear); ``global_scale`` float32 with one element; ``bias`` None or ``[N]`` of x's
    dtype; every tensor on one device.

    Raises
    ------
    RuntimeError
        On the first violated condition (the CUDA launcher raises the same texts).
    """
    op = "nvfp4.gemm_nvfp4_w4a16"
    _check_gemm_x(op, x)
    N, K = _check_nvfp4_packed(op, packed)
    _check_k_match(op, x, "2 * packed.shape[1]", K)
    _check_nvfp4_weight_scales(op, packed, scales, N, K)
    _check_gs_bias_devices(op, x, packed, scales, global_scale, bias, N)


def check_gemm_nvfp4_w4a16_prepacked_args(
    x: Tensor, packed: Tensor, scales: Tensor, global_scale: Tensor, n: int,
    bias: Optional[Tensor] = None,
) -> None:
    """Check the arguments of ``gemm_nvfp4_w4a16_prepacked``.

    In order: ``x`` as for ``gemm_nvfp4_w4a16``; ``K = x.shape[-1]`` a multiple of 16,
    K > 0; ``n > 0``; ``packed`` / ``scales`` of the dtypes and shapes
    ``prepack_nvfp4_w4a16`` returns for ``[n, K]``; ``global_scale``, ``bias`` (``[n]``)
    and devices as for ``gemm_nvfp4_w4a16``.

    Raises
    ------
    RuntimeError
        On the first violated condition; ``csrc/gemm/ops.cu`` raises these texts too.
    """
    op = "nvfp4.gemm_nvfp4_w4a16_prepacked"
    _check_gemm_x(op, x)
    K = x.shape[-1]
    _check_multiple(op, "the last dim of x (K)", K, NVFP4_BLOCK)
    _check_k_positive(op, K)
    torch._check(n > 0, _fail("positive", op=op, name="n", value=n))
    _check_prepacked_weight(op, packed, scales, n, K)
    _check_gs_bias_devices(op, x, packed, scales, global_scale, bias, n)


def check_prepack_nvfp4_w4a16_args(packed: Tensor, scales: Tensor) -> None:
    """Check the arguments of ``prepack_nvfp4_w4a16``: the weight as for ``gemm_nvfp4_w4a16``.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.prepack_nvfp4_w4a16"
    N, K = _check_nvfp4_packed(op, packed)
    _check_nvfp4_weight_scales(op, packed, scales, N, K)
    _check_one_device(op, packed=packed, scales=scales)


def check_unprepack_nvfp4_w4a16_args(packed: Tensor, scales: Tensor, n: int, k: int) -> None:
    """Check the arguments of ``unprepack_nvfp4_w4a16``.

    In order: ``n > 0``; ``k`` a multiple of 16, k > 0; ``packed`` / ``scales`` as
    ``prepack_nvfp4_w4a16`` returns them for ``[n, k]``; both on one device.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.unprepack_nvfp4_w4a16"
    torch._check(n > 0, _fail("positive", op=op, name="n", value=n))
    _check_multiple(op, "k", k, NVFP4_BLOCK)
    torch._check(k > 0, _fail("positive", op=op, name="k", value=k))
    _check_prepacked_weight(op, packed, scales, n, k)
    _check_one_device(op, packed=packed, scales=scales)


def check_gemm_mx_w16_args(
    x: Tensor, data: Tensor, scales: Tensor, elem: str, bias: Optional[Tensor] = None
) -> None:
    """Check the arguments of ``gemm_mx_w16``.

    In order: ``x`` float16/bfloat16, at least 1-D; ``elem`` "e4m3" or "e2m1"; ``data``
    float8_e4m3fn ``[N, K]`` (e4m3) or uint8 ``[N, K/2]`` (e2m1), K a multiple of 32,
    K > 0; ``x.shape[-1] == K``; ``scales`` uint8 or float8_e8m0fnu ``[N, K/32]`` (linear);
    ``bias`` None or ``[N]`` of x's dtype; every tensor on one device.

    Raises
    ------
    RuntimeError
        On the first violated condition.
    """
    op = "nvfp4.gemm_mx_w16"
    _check_gemm_x(op, x)
    _check_choice(op, "elem", elem)
    spec = TENSOR_ARGS[f"gemm_mx_data_{elem}"]
    _check_dtype(op, spec, data.dtype)
    _check_rank_2d(op, spec, data)
    per_byte = 1 if elem == "e4m3" else 2
    N, K = data.shape[0], data.shape[1] * per_byte
    _check_multiple(op, "K (the last dim of data)" if per_byte == 1 else
                    "the last dim of data (K/2)", data.shape[1], MX_BLOCK // per_byte)
    _check_k_positive(op, K)
    _check_k_match(op, x, "data.shape[1]" if per_byte == 1 else "2 * data.shape[1]", K)
    _check_dtype(op, TENSOR_ARGS["mx_scales"], scales.dtype)
    _check_scales_shape(op, data, scales, N, K // MX_BLOCK, False, "K/32")
    _check_bias(op, x, bias, N)
    _check_one_device(op, x=x, data=data, scales=scales, bias=bias)


# --------------------------------------------------------------------------------------
# Training recipes (docs/spec.md section 8)
# --------------------------------------------------------------------------------------


def _check_tensor_spec(op: str, name: str, t: Tensor, ok: bool, want: str) -> None:
    torch._check(
        ok,
        lambda: MESSAGES["tensor_spec"].format(
            op=op, name=name, want=want, shape=shape_str(t.shape), dtype=t.dtype
        ),
    )


def _check_rng(op: str, rounding: str, **tensors: Optional[Tensor]) -> None:
    """``seed`` / ``offset``: int64 with 1 element with "stochastic", None otherwise."""
    for name, t in tensors.items():
        if rounding != "stochastic":
            torch._check(t is None, _fail("rng_unused", op=op, name=name, rounding=repr(rounding)))
            continue
        torch._check(t is not None, _fail("rng_missing", op=op, name=name))
        assert t is not None
        _check_tensor_spec(op, name, t, t.dtype == torch.int64 and t.numel() == 1,
                           "int64 with 1 element")


def _check_signs(op: str, name: str, signs: Optional[Tensor]) -> None:
    """Hadamard signs: None or float32 ``[16]`` (the values, +-1, are not checked)."""
    if signs is not None:
        _check_tensor_spec(
            op, name, signs, signs.dtype == torch.float32 and tuple(signs.shape) == (16,),
            "float32 of shape [16] (entries +1 or -1)",
        )


def _check_quantized_dim(op: str, x: Tensor, axis: int, block: int) -> None:
    """``axis`` -1 or -2 (or the same dims counted from the front), then the quantized dim
    (``K`` for axis -1, ``M`` for axis -2) a multiple of ``block``."""
    torch._check(
        axis in (-1, -2, x.dim() - 1, x.dim() - 2),
        _fail("axis", op=op, dim=x.dim(), axis=axis),
    )
    if axis in (-1, x.dim() - 1):
        _check_multiple(op, "K (the last dim, quantized with axis=-1)", x.shape[-1], block)
    else:
        _check_multiple(op, "M (dim -2, quantized with axis=-2)", x.shape[-2], block)


def check_train_quantize_args(
    x: Tensor,
    global_scale: Optional[Tensor],
    axis: int = -1,
    block_2d: bool = False,
    rounding: str = "nearest",
    seed: Optional[Tensor] = None,
    offset: Optional[Tensor] = None,
    hadamard_signs: Optional[Tensor] = None,
    swizzle: bool = False,
    op: str = "nvfp4.train_quantize",
) -> None:
    """Check the arguments of ``train_quantize`` (``op`` names the op in the messages).

    In order: ``x`` float32/float16/bfloat16, 2-D or 3-D; ``axis`` -1 or -2; the quantized
    dim (``K`` for axis -1, ``M`` for axis -2) a multiple of 16; ``global_scale`` None or
    float32 with one element (or ``[B]`` for 3-D ``x``); ``rounding`` "nearest" or
    "stochastic"; ``seed`` then ``offset`` int64 with one element with "stochastic" and None
    otherwise; ``hadamard_signs`` None or float32 ``[16]``; every tensor on one device.
    ``block_2d`` and ``swizzle`` take any value.
    """
    _check_tensor(op, TENSOR_ARGS["x"], x)
    _check_quantized_dim(op, x, axis, NVFP4_BLOCK)
    if global_scale is not None:
        _check_global_scale(op, global_scale, x.shape[0] if x.dim() == 3 else None)
    _check_choice(op, "rounding", rounding)
    _check_rng(op, rounding, seed=seed, offset=offset)
    _check_signs(op, "hadamard_signs", hadamard_signs)
    _check_one_device(op, x=x, global_scale=global_scale, seed=seed, offset=offset,
                      hadamard_signs=hadamard_signs)


def check_train_quantize_rowcol_args(
    x: Tensor,
    global_scale: Optional[Tensor],
    colwise_global_scale: Optional[Tensor],
    block_2d: bool = False,
    rounding: str = "nearest",
    seed: Optional[Tensor] = None,
    offset: Optional[Tensor] = None,
    colwise_hadamard_signs: Optional[Tensor] = None,
    swizzle: bool = False,
) -> None:
    """Check the arguments of ``train_quantize_rowcol``: those of ``train_quantize`` for the
    rowwise operand, then for the columnwise one (so ``M`` and ``K`` multiples of 16), the
    messages naming ``nvfp4.train_quantize_rowcol``."""
    op = "nvfp4.train_quantize_rowcol"
    check_train_quantize_args(x, global_scale, -1, block_2d, rounding, seed, offset, None,
                              swizzle, op)
    if colwise_global_scale is not None:
        _check_global_scale(op, colwise_global_scale, x.shape[0] if x.dim() == 3 else None)
    _check_multiple(op, "M (dim -2, quantized with axis=-2)", x.shape[-2], NVFP4_BLOCK)
    _check_signs(op, "colwise_hadamard_signs", colwise_hadamard_signs)
    _check_one_device(op, x=x, colwise_global_scale=colwise_global_scale,
                      colwise_hadamard_signs=colwise_hadamard_signs)


def _check_grouped(op: str, x: Tensor, group_offsets: Tensor, block: int) -> None:
    """``x`` 2-D ``[T, K]`` float, ``K % block == 0``; ``group_offsets`` int32/int64 ``[G]``."""
    _check_dtype(op, TENSOR_ARGS["x"], x.dtype)
    torch._check(
        x.dim() == 2,
        lambda: MESSAGES["rank_exact"].format(
            op=op, name="x", layout="[T, K] (tokens sorted by group)", dim=x.dim(),
            shape=shape_str(x.shape),
        ),
    )
    _check_multiple(op, "K (the last dim)", x.shape[-1], block)
    _check_tensor_spec(
        op, "group_offsets", group_offsets,
        group_offsets.dtype in (torch.int32, torch.int64) and group_offsets.dim() == 1
        and group_offsets.shape[0] >= 1,
        "int32 or int64 of shape [G], G >= 1 (the end row of each group, non-decreasing)",
    )


def check_grouped_quantize_args(
    x: Tensor, group_offsets: Tensor, global_scale: Optional[Tensor] = None, swizzle: bool = False
) -> None:
    """Check the arguments of ``grouped_quantize``.

    In order: ``x`` float32/float16/bfloat16, 2-D ``[T, K]``, ``K % 16 == 0``;
    ``group_offsets`` int32/int64 ``[G]``, G >= 1; ``global_scale`` None or float32 ``[G]``;
    every tensor on one device. The offsets' values are not checked (that would need a host
    synchronisation): they must be non-decreasing and at most T. ``swizzle``: any value.
    """
    op = "nvfp4.grouped_quantize"
    _check_grouped(op, x, group_offsets, NVFP4_BLOCK)
    if global_scale is not None:
        G = group_offsets.shape[0]
        _check_tensor_spec(
            op, "global_scale", global_scale,
            global_scale.dtype == torch.float32 and tuple(global_scale.shape) == (G,),
            f"float32 of shape [G] = [{G}] (one per group)",
        )
    _check_one_device(op, x=x, group_offsets=group_offsets, global_scale=global_scale)


def check_mx_grouped_quantize_args(
    x: Tensor, group_offsets: Tensor, elem: str = "e4m3", rounding: str = "rceil",
    swizzle: bool = False,
) -> None:
    """Check the arguments of ``mx_grouped_quantize``.

    In order: ``x`` float32/float16/bfloat16, 2-D ``[T, K]``, ``K % 32 == 0``;
    ``group_offsets`` int32/int64 ``[G]``, G >= 1; ``elem`` "e4m3" or "e2m1"; ``rounding``
    "rceil" or "floor"; both tensors on one device. ``swizzle``: any value.
    """
    op = "nvfp4.mx_grouped_quantize"
    _check_grouped(op, x, group_offsets, MX_BLOCK)
    _check_choice(op, "elem", elem)
    _check_choice(op, "rounding", rounding)
    _check_one_device(op, x=x, group_offsets=group_offsets)
