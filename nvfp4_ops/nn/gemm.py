"""The GEMMs behind the quantized linear layers, one function per backend.

Every backend computes ``y = x W^T + bias`` for a layer of :mod:`nvfp4_ops.nn.linear`,
through the ``torch.ops.nvfp4`` ops only (on CPU they are the reference functions, on CUDA
kernels with the same bits), so each backend traces whole under
``torch.compile(fullgraph=True)`` on every device:

``dequant``
    ``layer.dequantize_weight(x.dtype)``, the activation through ``layer.quantize_input``
    (identity for weight-only schemes), ``F.linear`` in the activation dtype.
``reference``
    The same, but the weight dequantized to fp32, the matmul in fp32 and one cast of the
    output: the ground truth the other backends are measured against.
``scaled_mm``
    ``torch.nn.functional.scaled_mm`` (Blackwell block-scaled GEMM): the per-format
    preparation of the weight (once per build / move / load) and the per-format call are
    the entries of :data:`SCALED_MM`.

A layer supplies: ``in_features``, ``out_features``, ``act_quant``, ``FORMAT``,
``dequantize_weight(dtype)``, ``quantize_input(x2)`` and the ``_mm_*`` buffers that
:func:`prepare` fills.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import BACKENDS, FORMATS
from .padding import ALIGN, pad_activation, pad_mx_weight, pad_nvfp4_weight, round_up, unpad_output

__all__ = ["GEMMS", "SCALED_MM", "apply_linear", "apply_mxfp8_linear", "apply_nvfp4_linear",
           "prepare"]

_ops = torch.ops.nvfp4
_FP4X2 = getattr(torch, "float4_e2m1fn_x2", None)
_E8M0 = getattr(torch, "float8_e8m0fnu", None)


def _recip(s: Tensor) -> Tensor:
    # RN(1 / s) in fp32, tensor by tensor (as the reference computes its decode scales).
    return torch.ones_like(s) / s


# --------------------------------------------------------------------------------------
# scaled_mm, per format: (prepare the weight once, call F.scaled_mm on a padded [M, K])
# --------------------------------------------------------------------------------------


def _nvfp4_scaled_mm_prepare(layer) -> None:
    # Pad N and K to 32, swizzle the block scales; torch's TensorWise scales are decode
    # scales, so keep RN(1 / encode global scale).
    packed, scales = pad_nvfp4_weight(layer.weight_packed, layer.weight_scale, ALIGN)
    layer._mm_weight = packed.contiguous()
    layer._mm_weight_scale = _ops.swizzle_scales(scales.contiguous())
    layer._mm_weight_decode = _recip(layer.weight_global_scale)


def _nvfp4_scaled_mm(layer, x2: Tensor) -> Tensor:
    ScalingType, SwizzleType = F.ScalingType, F.SwizzleType
    gs_x = layer.input_encode_scale(x2)
    xq, xs = _ops.quantize(pad_activation(x2, round_up(layer.in_features, ALIGN)), gs_x, True,
                           "amax", None)
    recipe = [ScalingType.BlockWise1x16, ScalingType.TensorWise]
    swz = [SwizzleType.SWIZZLE_32_4_4, SwizzleType.NO_SWIZZLE]
    return F.scaled_mm(
        xq.view(_FP4X2),
        layer._mm_weight.view(_FP4X2).t(),
        scale_a=[xs.reshape(-1), _recip(gs_x)],
        scale_recipe_a=recipe,
        scale_b=[layer._mm_weight_scale.reshape(-1), layer._mm_weight_decode],
        scale_recipe_b=recipe,
        swizzle_a=swz,
        swizzle_b=swz,
        output_dtype=x2.dtype,
    )


def _mxfp8_scaled_mm_prepare(layer) -> None:
    data, scales = pad_mx_weight(layer.weight, layer.weight_scale, "e4m3", ALIGN)
    layer._mm_weight = data.contiguous()
    layer._mm_weight_scale = _ops.swizzle_scales(scales.contiguous()).view(_E8M0)


def _mxfp8_scaled_mm(layer, x2: Tensor) -> Tensor:
    ScalingType, SwizzleType = F.ScalingType, F.SwizzleType
    xd, xs = _ops.mx_quantize(pad_activation(x2, round_up(layer.in_features, ALIGN)), "e4m3",
                              layer.rounding, True, -1, "amax")
    return F.scaled_mm(
        xd,
        layer._mm_weight.t(),
        scale_a=xs.view(_E8M0).reshape(-1),
        scale_recipe_a=ScalingType.BlockWise1x32,
        scale_b=layer._mm_weight_scale.reshape(-1),
        scale_recipe_b=ScalingType.BlockWise1x32,
        swizzle_a=SwizzleType.SWIZZLE_32_4_4,
        swizzle_b=SwizzleType.SWIZZLE_32_4_4,
        output_dtype=x2.dtype,
    )


#: format name -> (prepare(layer), call(layer, x2) -> padded [M, Np] output).
SCALED_MM: Dict[str, Tuple[Callable[..., None], Callable[..., Tensor]]] = {
    "NVFP4": (_nvfp4_scaled_mm_prepare, _nvfp4_scaled_mm),
    "MXFP8": (_mxfp8_scaled_mm_prepare, _mxfp8_scaled_mm),
}


# --------------------------------------------------------------------------------------
# The backends
# --------------------------------------------------------------------------------------


def _dequant(layer, x2: Tensor, bias: Optional[Tensor]) -> Tensor:
    w = layer.dequantize_weight(x2.dtype)
    x2 = layer.quantize_input(x2)
    return F.linear(x2, w, None if bias is None else bias.to(x2.dtype))


def _reference(layer, x2: Tensor, bias: Optional[Tensor]) -> Tensor:
    w = layer.dequantize_weight(torch.float32)
    x2 = layer.quantize_input(x2)
    y = x2.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x2.dtype)


def _scaled_mm(layer, x2: Tensor, bias: Optional[Tensor]) -> Tensor:
    if layer.act_quant is None:
        raise ValueError(f"{type(layer).__name__}: the scaled_mm backend needs "
                         f"{FORMATS[layer.FORMAT].schemes[1]} (act_quant set)")
    y = unpad_output(SCALED_MM[layer.FORMAT][1](layer, x2), layer.out_features)
    return y if bias is None else y + bias.to(y.dtype)


#: backend name -> gemm(layer, x2 [M, K], bias) -> [M, N].
GEMMS: Dict[str, Callable[..., Tensor]] = {
    "scaled_mm": _scaled_mm,
    "dequant": _dequant,
    "reference": _reference,
}

#: backend name -> {format name: prepare(layer)}: the weight layout a backend reads, made
#: once per build / move / load (backends that read the stored buffers have no entry).
_PREPARE: Dict[str, Dict[str, Callable[..., None]]] = {
    "scaled_mm": {fmt: fns[0] for fmt, fns in SCALED_MM.items()},
}


def prepare(layer, backend: str) -> None:
    """Make the ``_mm_*`` buffers that ``backend`` reads for ``layer`` (or clear them)."""
    layer._mm_weight = layer._mm_weight_scale = layer._mm_weight_decode = None
    fn = _PREPARE.get(backend, {}).get(layer.FORMAT)
    if fn is not None:
        fn(layer)


def apply_linear(backend: str, layer, x: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``y = x W^T + bias`` for a quantized linear ``layer`` with the given backend.

    Parameters
    ----------
    backend : {"scaled_mm", "dequant", "reference"}
        See the module docstring; this function does not check that the backend can run
        on the device (:func:`~nvfp4_ops.nn.select_nvfp4_linear_backend` does).
    layer : NVFP4Linear or MXFP8Linear
        Supplies the quantized weight and the scheme (``layer.act_quant``: W4A4 quantizes
        the activation with a dynamic or the static ``input_global_scale``; W8A8 with the
        layer's ``rounding``).
    x : Tensor
        ``[..., K]``, float32 / float16 / bfloat16.
    bias : Tensor, optional
        ``[N]``; cast to ``x.dtype``.

    Returns
    -------
    Tensor
        ``[..., N]`` in ``x.dtype``.
    """
    K = layer.in_features
    if x.shape[-1] != K:  # a plain check: traceable by dynamo (no tensor in a closure)
        raise ValueError(f"{type(layer).__name__}: the input's last dim must be in_features = "
                         f"{K}, got shape {list(x.shape)}")
    gemm = GEMMS.get(backend)
    if gemm is None:
        raise ValueError(f"{type(layer).__name__}: unknown linear backend {backend!r}; choose "
                         f"one of {', '.join(map(repr, BACKENDS))}")
    y = gemm(layer, x.reshape(-1, K), bias)
    return y.reshape(*x.shape[:-1], layer.out_features)


#: The per-format names of :func:`apply_linear` (one function serves every format).
apply_nvfp4_linear = apply_linear
apply_mxfp8_linear = apply_linear
