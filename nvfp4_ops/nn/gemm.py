"""The GEMMs behind the quantized linear layers, one function per backend.

Every backend computes ``y = x W^T + bias`` for a layer of :mod:`nvfp4_ops.nn.linear`,
through the ``torch.ops.nvfp4`` ops only (on CPU they are the reference functions, on CUDA
kernels with the same bits), so each backend traces whole under
``torch.compile(fullgraph=True)`` on every device:

``fused``
    Weight-only schemes on CUDA (NVFP4 W4A16, MXFP8 W8A16, MXFP4 W4A16): for
    ``M <= FUSED_MAX_M[format]`` rows of a float16 / bfloat16 activation, the format's fused
    op (:data:`FUSED`: ``nvfp4.gemm_nvfp4_w4a16``, ``nvfp4.gemm_mx_w16``; the weight
    dequantized in registers, fp32 sums, bias added in fp32, one rounding); otherwise (more
    rows, or an fp32 activation, which the kernels do not take) exactly the ``dequant``
    backend. The two paths compute the same product; they differ by the fp32 accumulation
    order and by roundings (``dequant`` rounds the dequantized weight to the activation
    dtype, the fused kernel's weight operand is exact and only its output is rounded), so
    they are not bit for bit equal. Tolerance: the fused path is within a relative
    Frobenius error of the fp32 reference below 4e-3 for bf16 and 6e-4 for fp16 outputs
    (issue 12's bound, ``tests/cuda/test_gemm.py``); for bf16 both paths stay within 4e-3
    of it (``tests/nn/test_cuda.py``, on each side of the crossover).
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
``dequantize_weight(dtype)``, ``quantize_input(x2)``, the ``_mm_*`` buffers that
:func:`prepare` fills and what its :data:`FUSED` entry reads (NVFP4: ``weight_packed``,
``weight_scale``, ``weight_global_scale``; MX: ``weight_data``, ``weight_scale``, ``ELEM``).
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import BACKENDS, FORMATS
from .padding import ALIGN, pad_activation, pad_mx_weight, pad_nvfp4_weight, round_up, unpad_output

__all__ = ["FUSED", "FUSED_BASIS", "FUSED_MAX_M", "FUSED_MAX_M_WGMMA", "GEMMS", "SCALED_MM",
           "WGMMA_K_MULTIPLE", "apply_linear", "apply_mxfp4_linear", "apply_mxfp8_linear",
           "apply_nvfp4_linear", "fused_max_m", "fused_path", "prepare"]

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


#: Per format: the most rows (the flattened M of ``x [..., K]``) for which the ``fused``
#: backend runs the fused kernel; from M + 1 on it runs dequantize + F.linear (cuBLAS).
#: What set each value is :data:`FUSED_BASIS` (quoted in the reasons of :func:`fused_path`).
#:
#: NVFP4 = 64: measured with benchmarks/bench_gemm.py on an H200 (torch 2.11, bf16, L2
#: flushed, median of 30; microseconds, fused / dequantize + F.linear / bf16 F.linear),
#: kernel of commit ecf22bd of branch h-gemm (the kernel of csrc/gemm):
#:
#: N x K      | M=1               | M=16              | M=64              | M=128
#: 8192x8192  | 27.8 / 91.5 / 43.6 | 35.3 / 91.9 / 44.2 | 80.4 / 92.0 / 44.5 | 111.9 / 94.1 / 46.1
#: 14336x4096 | 27.0 / 82.0 / 40.4 | 35.4 / 82.0 / 40.9 | 62.0 / 82.8 / 41.8 | 114.7 / 83.6 / 42.6
#: 4096x14336 | 27.5 / 82.9 / 41.4 | 37.5 / 83.3 / 41.9 | 71.2 / 85.8 / 44.6 | 118.9 / 86.8 / 44.7
#: 28672x8192 | 77.6/292.4/123.0  | 96.6/292.1/124.6  | 213.2/295.4/127.4 | 440.1/303.6/136.0
#:
#: The fused kernel wins at M <= 64 on all 4 shapes, dequantize + F.linear at M = 128. In
#: between nothing was measured; the kernel tiles M by 64 tokens, so 65 <= M <= 128 should
#: cost about what M = 128 does: hence the cut at 64.
#:
#: (Same machine type after the XPRE change of this session's kernel: 8192x8192 27.0 / 34.6
#: / 80.1 us at M = 1 / 16 / 64, 28672x8192 63.0 / 90.1 / 212.0; the cut stays at 64.)
#:
#: MXFP8 = 16, MXFP4 = 16: bench_gemm.py --formats nvfp4,mxfp4,mxfp8 --ms 1,16,64 on an H200
#: (torch 2.11, bf16; fused / dequantize + F.linear / bf16, microseconds):
#:
#: format N x K        | M=1                 | M=16                | M=64
#: MXFP4  8192x8192    | 37.9 / 95.9 / 43.3  | 47.3 / 95.6 / 43.4  | 113.1 / 98.4 / 45.8
#: MXFP8  8192x8192    | 37.0 / 95.3 / 43.8  | 49.6 / 94.4 / 43.7  | 118.6 / 96.9 / 46.3
#: MXFP4  28672x8192   | 106.2 / 304.6 / 125.4 | 136.5 / 300.4 / 121.0 | 340.0 / 303.7 / 125.1
#: MXFP8  28672x8192   | 94.8 / 305.9 / 119.8 | 134.1 / 302.0 / 121.8 | 362.6 / 304.0 / 124.8
#:
#: fused wins at M <= 16, dequantize + F.linear at M = 64; the MX dispatch takes M = 17..64
#: with one 64-token tile (it has no 32-token one), which costs what M = 64 does: cut at 16.
#:
#: MXFP4 = 64 (since MXFP4 runs in NVFP4's E2M1 layout, with its 32-token tile):
#: bench_gemm.py --formats mxfp4,nvfp4 --ms 1,16,32,64,128 on an H200 (torch 2.11, bf16;
#: MXFP4 fused / dequantize + F.linear, microseconds; benchmarks/probe/probe9.sh):
#:
#: N x K      | M=1         | M=16        | M=32        | M=64         | M=128
#: 8192x8192  | 24.8 / 96.4 | 33.3 / 95.8 | 49.0 / 96.1 | 72.3 / 96.8  | 100.7 / 98.5
#: 14336x4096 | 24.0 / 87.8 | 33.1 / 87.5 | 39.7 / 85.4 | 54.5 / 86.3  | 103.7 / 87.8
#: 4096x14336 | 24.7 / 86.8 | 36.3 / 87.8 | 43.7 / 87.9 | 62.3 / 89.2  | 105.0 / 91.9
#: 28672x8192 | 61.0 / 305  | 88.0 / 300  | 135.7 / 302 | 192.8 / 307  | 404.1 / 315
#:
#: fused wins up to M = 64 on all four shapes, dequantize + F.linear at M = 128: cut at 64,
#: as NVFP4.
#:
#: Confirmed after the ring-path rework (benchmarks/probe/gemm_mid.sh, RESULTS "fifth part";
#: fused / dequantize + F.linear at 8192x8192, microseconds): NVFP4 M = 64 62.4 / 93.7,
#: M = 128 105.5 / 95.7; MXFP4 66.7 / 97.6, 113.3 / 99.1; MXFP8 M = 16 47.9 / 95.5, M = 32
#: 100.1 / 95.9 (the same on the other three shapes): the cuts stay.
FUSED_MAX_M: Dict[str, int] = {"NVFP4": 64, "MXFP8": 16, "MXFP4": 64}

#: Per format: the measurement behind its :data:`FUSED_MAX_M` value, as the reasons of
#: :func:`fused_path` quote it.
FUSED_BASIS: Dict[str, str] = {
    "NVFP4": "measured on an H200",
    "MXFP8": "measured on an H200",
    "MXFP4": "measured on an H200",
}


#: Per format: the crossover of the wgmma kernel (csrc/gemm/wgmma.cuh), where it serves: an
#: sm_90 GPU, a build holding sm_90a code, K a multiple of :data:`WGMMA_K_MULTIPLE` (NVFP4
#: and MX; ``NVFP4_OPS_GEMM_WGMMA=0`` switches it off, in the kernels and here).
#: bench_gemm.py --formats nvfp4,mxfp4,mxfp8 --ms 33,64,128,192,256,384,512 on an H200
#: (torch 2.11, bf16; fused / dequantize + F.linear, microseconds;
#: benchmarks/probe/wg_bulk.sh, RESULTS "sixth part": the 128-token tile's activation stages
#: by bulk copies):
#:
#: format N x K      | M=128         | M=192         | M=256         | M=384
#: NVFP4  8192x8192  | 55.0 / 95.7   | 85.7 / 100.6  | 86.6 / 101.9  | 140.2 / 120.8
#: NVFP4  14336x4096 | 49.5 / 84.4   | 87.3 / 86.9   | 89.4 / 91.7   | 128.3 / 108.5
#: NVFP4  4096x14336 | 52.6 / 134.3  | 81.8 / 95.3   | 84.0 / 139.7  | 129.2 / 130.6
#: NVFP4  28672x8192 | 165.0 / 306.3 | 302.0 / 324.0 | 310.4 / 353.4 | 488.8 / 416.5
#: MXFP4  8192x8192  | 57.1 / 98.9   | 92.0 / 105.4  | 92.9 / 106.3  | 147.9 / 123.5
#: MXFP4  14336x4096 | 52.2 / 88.1   | 93.4 / 90.5   | 95.1 / 96.1   | 136.8 / 111.2
#: MXFP4  4096x14336 | 54.4 / 136.7  | 87.7 / 111.9  | 89.0 / 100.1  | 135.2 / 124.8
#: MXFP4  28672x8192 | 175.4 / 317.0 | 319.9 / 332.0 | 327.7 / 357.9 | 536.3 / 418.3
#:
#: fused wins up to M = 256 on all four shapes but two cells within 3 % (14336x4096 at
#: M = 192), dequantize + cuBLAS at M = 384 on three of four: cut at 256. (The 4096x14336
#: dequantize cells at M = 128 / 256 are slow outliers of this run; the fused kernel also wins
#: against 96.9 us there in gemm_loader.sh.) Before the bulk copies (gemm_loader.sh) the cut was
#: 192, before the ring copies were set up once per CTA (final7.sh) 128.
#:
#: MXFP8 (from M = 17; wg_bulk.sh): 8192x8192 M=128 69.3 / 97.8, M=192 115.9 / 104.8;
#: 14336x4096 64.6 / 110.5, 116.9 / 90.0; 4096x14336 65.8 / 90.3, 109.0 / 97.4; 28672x8192
#: 226.8 / 314.8, 405.6 / 331.3: cut at 128.
FUSED_MAX_M_WGMMA: Dict[str, int] = {"NVFP4": 256, "MXFP4": 256, "MXFP8": 128}

#: Per format: the K multiple the wgmma kernel takes (NVFP4 16-byte code loads, MXFP4
#: and MXFP8 whole-step scale loads).
WGMMA_K_MULTIPLE: Dict[str, int] = {"NVFP4": 128, "MXFP4": 512, "MXFP8": 512}


@functools.lru_cache(maxsize=None)
def _wgmma_serves(index: int) -> bool:
    # the condition of csrc/gemm/ops.cu's wgmma_serves (the environment read once, as there)
    if os.environ.get("NVFP4_OPS_GEMM_WGMMA") == "0":
        return False
    from .. import _library

    if "sm_90a" not in (_library.build_info().get("archs") or []):
        return False
    return torch.cuda.get_device_capability(index) == (9, 0)


def fused_max_m(fmt: str, device: Optional[torch.device] = None,
                k: Optional[int] = None) -> Tuple[int, str]:
    """The largest M that the ``fused`` backend serves with the fused kernel for a ``fmt``
    layer of in_features ``k`` on ``device``, and the measurement behind it:
    :data:`FUSED_MAX_M`, or :data:`FUSED_MAX_M_WGMMA` where the wgmma kernel serves (given
    a CUDA ``device`` and ``k``)."""
    if fmt not in FUSED_MAX_M:
        raise KeyError(f"no fused GEMM crossover for format {fmt!r}; known: "
                       f"{', '.join(FUSED_MAX_M)}")
    if (fmt in FUSED_MAX_M_WGMMA and device is not None and device.type == "cuda"
            and k is not None and k % WGMMA_K_MULTIPLE[fmt] == 0
            and _wgmma_serves(device.index if device.index is not None
                              else torch.cuda.current_device())):
        return FUSED_MAX_M_WGMMA[fmt], f"{FUSED_BASIS[fmt]}, the wgmma kernel"
    return FUSED_MAX_M[fmt], FUSED_BASIS[fmt]


def fused_path(fmt: str, m: int, dtype: torch.dtype, device: Optional[torch.device] = None,
               k: Optional[int] = None) -> Tuple[str, str]:
    """What the ``fused`` backend runs for ``m`` rows of a ``dtype`` activation of a ``fmt``
    layer, and why.

    Parameters
    ----------
    fmt : str
        A key of :data:`FUSED_MAX_M` ("NVFP4", "MXFP8", "MXFP4").
    m : int
        The rows of the flattened activation ``[M, K]``.
    dtype : torch.dtype
        The activation's dtype.
    device, k : torch.device, int, optional
        The activation's device and K: where the wgmma kernel serves, its crossover
        (:func:`fused_max_m`).

    Returns
    -------
    (path, reason) : (str, str)
        ``path`` is ``"fused"`` (the format's fused op, :data:`FUSED`) or ``"dequant"``.
    """
    max_m, basis = fused_max_m(fmt, device, k)
    if dtype not in (torch.float16, torch.bfloat16):
        return "dequant", f"the fused kernel takes float16 / bfloat16 activations, got {dtype}"
    if m > max_m:
        return "dequant", f"M = {m} > {max_m}: dequantize + F.linear is faster ({basis})"
    return "fused", f"M = {m} <= {max_m}: the fused kernel is faster ({basis})"


def _nvfp4_fused(layer, x2: Tensor, bias: Optional[Tensor]) -> Tensor:
    return _ops.gemm_nvfp4_w4a16(x2, layer.weight_packed, layer.weight_scale,
                                 layer.weight_global_scale, bias)


def _mx_fused(layer, x2: Tensor, bias: Optional[Tensor]) -> Tensor:
    return _ops.gemm_mx_w16(x2, layer.weight_data, layer.weight_scale, layer.ELEM, bias)


#: format name -> fused(layer, x2 [M, K] fp16/bf16, bias in x2's dtype or None) -> [M, N]:
#: the format's fused weight-only op (``FORMATS[fmt].fused_op``).
FUSED: Dict[str, Callable[..., Tensor]] = {
    "NVFP4": _nvfp4_fused,
    "MXFP8": _mx_fused,
    "MXFP4": _mx_fused,
}


def _fused(layer, x2: Tensor, bias: Optional[Tensor]) -> Tensor:
    if layer.act_quant is not None:  # the kernels would silently skip the input quantization
        raise ValueError(f"{type(layer).__name__}: the fused backend serves the weight-only "
                         f"scheme ({FORMATS[layer.FORMAT].schemes[0]}, act_quant=None), got "
                         f"act_quant={layer.act_quant!r}")
    if fused_path(layer.FORMAT, x2.shape[0], x2.dtype, x2.device, x2.shape[1])[0] != "fused":
        return _dequant(layer, x2, bias)
    return FUSED[layer.FORMAT](layer, x2, None if bias is None else bias.to(x2.dtype))


#: backend name -> gemm(layer, x2 [M, K], bias) -> [M, N].
GEMMS: Dict[str, Callable[..., Tensor]] = {
    "scaled_mm": _scaled_mm,
    "fused": _fused,
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
    backend : {"scaled_mm", "fused", "dequant", "reference"}
        See the module docstring; this function does not check that the backend can run
        on the device (:func:`~nvfp4_ops.nn.select_nvfp4_linear_backend` does).
    layer : NVFP4Linear, MXFP8Linear or MXFP4Linear
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
apply_mxfp4_linear = apply_linear
