"""Which GEMM runs a quantized linear layer, and why the others do not.

Backends (best first, :data:`BACKENDS`)
---------------------------------------
``"scaled_mm"``
    The native block-scaled GEMM of Blackwell (sm_100+) through
    ``torch.nn.functional.scaled_mm``, for W4A4 / W8A8 (both operands low precision).
    NOT RUN ON BLACKWELL HARDWARE YET: written against torch's documented API and tested
    on CPU with an emulation of its semantics. Until it has run on such a GPU it is chosen
    only when asked for (the ``backend=`` keyword or :data:`ENV_VAR`), never automatically.
``"fused"``
    The fused low-bit weight GEMM of ``csrc/gemm`` (the weight dequantized in registers,
    never materialised: op ``nvfp4.gemm_nvfp4_w4a16`` for NVFP4, ``nvfp4.gemm_mx_w16`` for
    MXFP8 and MXFP4) for few rows, dequantize + ``F.linear`` for many (the crossover per
    format is :data:`nvfp4_ops.nn.gemm.FUSED_MAX_M`). Weight-only schemes (W4A16 / W8A16)
    on CUDA; the automatic choice on sm_80..sm_90 where the build has the format's kernel
    (:func:`nvfp4_ops._library.op_implementation` says ``"cuda-kernel"``). The two paths
    agree up to the fp32 accumulation order and the output rounding
    (:mod:`nvfp4_ops.nn.gemm`).
``"dequant"``
    The weight dequantized into the activation dtype, then ``F.linear`` (cuBLAS). The
    automatic choice on every other CUDA GPU and scheme.
``"reference"``
    The weight dequantized to fp32, the matmul in fp32, one cast of the output. Runs on any
    device; the automatic choice on CPU.

Choice: a ``backend=`` keyword, else the environment variable ``NVFP4_OPS_LINEAR_BACKEND``
(``scaled_mm`` | ``fused`` | ``dequant`` | ``reference`` | ``auto``), else the first backend of
:data:`BACKENDS` that may be chosen automatically and can run. A backend asked for that
cannot run on the device raises a ``RuntimeError`` that says why.

A format is one entry of :data:`FORMATS` (what the reasons need to know about it) plus one
layer subclass (:mod:`nvfp4_ops.nn.linear`) and its entries in the per-backend tables of
:mod:`nvfp4_ops.nn.gemm`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .. import _library

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "FUSED_AUTO_ARCHS",
    "FORMATS",
    "LinearFormat",
    "select_linear_backend",
    "select_mxfp4_linear_backend",
    "select_mxfp8_linear_backend",
    "select_nvfp4_linear_backend",
]

#: The linear backends, best first.
BACKENDS: Tuple[str, ...] = ("scaled_mm", "fused", "dequant", "reference")
#: Environment variable that overrides the automatic choice (the keyword wins over it).
ENV_VAR = "NVFP4_OPS_LINEAR_BACKEND"

#: Backends that are never chosen automatically, and why (they run when asked for).
#: scaled_mm leaves this table once it has run on Blackwell hardware.
NOT_AUTOMATIC: Dict[str, str] = {
    "scaled_mm": ("not chosen automatically: it has not run on Blackwell hardware yet; ask for "
                  f"it with backend='scaled_mm' or {ENV_VAR}=scaled_mm"),
}


@dataclass(frozen=True)
class LinearFormat:
    """What backend selection needs to know about one weight format.

    Attributes
    ----------
    name : str
        "NVFP4", "MXFP8", "MXFP4": the ``FORMAT`` of the layer class.
    block : int
        Elements per scale block (``in_features`` must be a multiple of it).
    schemes : (str, str or None)
        The scheme names without and with activation quantization, e.g. ("W4A16", "W4A4");
        None where the layer has no activation-quantized scheme (MXFP4: weight-only).
    act_quant : tuple
        The ``act_quant`` values the layer accepts; None (weight-only) first.
    scaled_mm_dtype : str
        The torch dtype (attribute name) that ``scaled_mm`` needs for this format's operands
        or scales; a torch without it cannot run the format's native GEMM.
    fused_op : str or None
        The ``torch.ops.nvfp4`` op of the format's fused weight-only GEMM (the ``"fused"``
        backend), None where there is none yet.
    """

    name: str
    block: int
    schemes: Tuple[str, Optional[str]]
    act_quant: Tuple[Optional[str], ...]
    scaled_mm_dtype: str
    fused_op: Optional[str] = None


#: Every weight format of the layers, by ``LinearFormat.name``.
FORMATS: Dict[str, LinearFormat] = {
    "NVFP4": LinearFormat("NVFP4", 16, ("W4A16", "W4A4"), (None, "dynamic", "static"),
                          "float4_e2m1fn_x2", "gemm_nvfp4_w4a16"),
    "MXFP8": LinearFormat("MXFP8", 32, ("W8A16", "W8A8"), (None, "dynamic"),
                          "float8_e8m0fnu", "gemm_mx_w16"),
    # gpt-oss style weights: weight-only (no W4A4 layer, so no scaled_mm path)
    "MXFP4": LinearFormat("MXFP4", 32, ("W4A16", None), (None,), "float4_e2m1fn_x2",
                          "gemm_mx_w16"),
}


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _scaled_mm_unavailable(fmt: LinearFormat, device: torch.device,
                           weight_only: bool) -> Optional[str]:
    """Why torch's block-scaled GEMM cannot serve ``fmt`` on ``device`` (None: it can)."""
    if weight_only:
        use = " or ".join(repr(a) for a in fmt.act_quant if a is not None)
        hint = (f"use act_quant={use} for the native GEMM" if use else
                f"the {fmt.name} layer has no activation-quantized scheme")
        return (f"scaled_mm multiplies two block-scaled operands; the weight-only scheme "
                f"({fmt.schemes[0]}) keeps the activation in high precision ({hint})")
    if device.type != "cuda":
        return f"scaled_mm needs a CUDA GPU with sm_100+, got device {device.type!r}"
    if getattr(torch.version, "hip", None):
        return "scaled_mm is wired for cuBLAS's block-scaled GEMMs (CUDA), this is a ROCm build"
    if (not hasattr(F, "scaled_mm") or not hasattr(F, "ScalingType")
            or getattr(torch, fmt.scaled_mm_dtype, None) is None):
        return (f"torch {torch.__version__} has no torch.nn.functional.scaled_mm with "
                f"{fmt.name} operands")
    if not torch.cuda.is_available():
        return "scaled_mm needs a CUDA GPU with sm_100+, and no CUDA device is visible"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 10:
        return f"scaled_mm needs sm_100+, this GPU is sm_{major}{minor}"
    return None


#: The compute capabilities on which the fused kernel is chosen automatically: those it was
#: measured on (H200, sm_90) or built for with the same instructions (sm_80..sm_89). It
#: runs on newer GPUs too (mma.sync), where it is used only when asked for.
FUSED_AUTO_ARCHS = ((8, 0), (9, 0))


def _fused_unavailable(fmt: LinearFormat, device: torch.device, weight_only: bool,
                       explicit: bool) -> Optional[str]:
    """Why the fused weight-only GEMM cannot serve ``fmt`` on ``device`` (None: it can)."""
    if fmt.fused_op is None:
        return (f"no fused {fmt.name} kernel yet: {fmt.schemes[0]} runs dequantize + "
                "F.linear")
    if not weight_only:
        return (f"the fused kernel serves the weight-only scheme ({fmt.schemes[0]}, "
                "act_quant=None); this layer quantizes its activation")
    if device.type != "cuda":
        return f"the fused kernel needs a CUDA GPU (sm_80+), got device {device.type!r}"
    if not torch.cuda.is_available():
        return "the fused kernel needs a CUDA GPU (sm_80+), and no CUDA device is visible"
    cap = tuple(torch.cuda.get_device_capability(device))
    arch = f"sm_{cap[0]}{cap[1]}"
    if cap < FUSED_AUTO_ARCHS[0]:
        return f"the fused kernel needs sm_80+ (mma.sync with bf16), this GPU is {arch}"
    impl, why = _library.op_implementation(fmt.fused_op, device)
    if impl != "cuda-kernel":
        return f"the fused kernel is not available in this build: {why}"
    if not explicit and cap > FUSED_AUTO_ARCHS[1]:
        return (f"not chosen automatically on {arch}: measured on sm_80..sm_90 only; ask for "
                f"it with backend='fused' or {ENV_VAR}=fused")
    return None


def _why_not(fmt: LinearFormat, backend: str, device: torch.device, weight_only: bool,
             explicit: bool) -> Optional[str]:
    """Why ``backend`` does not serve (None: it does); ``explicit``: it was asked for."""
    if backend == "scaled_mm":
        why = _scaled_mm_unavailable(fmt, device, weight_only)
    elif backend == "fused":
        why = _fused_unavailable(fmt, device, weight_only, explicit)
    elif backend == "dequant" and not explicit and device.type != "cuda":
        why = (f"not the default on {device.type}: there the dequantize op is the reference "
               "itself, and the reference backend keeps the matmul in fp32 (ask for 'dequant' "
               "to run it anyway)")
    else:
        why = None  # dequant and reference run on every device
    if why is None and not explicit:
        why = NOT_AUTOMATIC.get(backend)
    return why


def check_backend_name(backend: Optional[str], source: str) -> Optional[str]:
    """``backend`` with "auto" read as None; a ``ValueError`` naming ``source`` if unknown."""
    if backend == "auto":
        return None
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown linear backend {backend!r} (from {source}); choose one of "
                         f"{', '.join(map(repr, BACKENDS))} (or 'auto' in {ENV_VAR})")
    return backend


def requested_backend(backend: Optional[str]) -> Tuple[Optional[str], str]:
    """The backend asked for, and by what: the ``backend=`` keyword, else :data:`ENV_VAR`;
    ``(None, ...)`` when neither names one (None / "auto": the automatic choice)."""
    source = "the backend= keyword"
    backend = check_backend_name(backend, source)
    if backend is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env != "auto":
            backend, source = env, f"the environment variable {ENV_VAR}"
            check_backend_name(backend, source)
    return backend, source


def select_linear_backend(
    fmt: str,
    device: Union[str, torch.device, None] = None,
    *,
    backend: Optional[str] = None,
    weight_only: bool = False,
) -> Tuple[str, Dict[str, str]]:
    """The backend that runs a ``fmt`` linear layer on ``device``, and why the better ones don't.

    Parameters
    ----------
    fmt : str
        A key of :data:`FORMATS` ("NVFP4", "MXFP8", "MXFP4").
    device : str or torch.device, optional
        Default: ``"cuda"`` when a GPU is visible, else ``"cpu"``.
    backend : str, optional
        Force ``"scaled_mm"``, ``"fused"``, ``"dequant"`` or ``"reference"`` (``"auto"`` or
        None: choose).
        Without it the environment variable ``NVFP4_OPS_LINEAR_BACKEND`` is read.
    weight_only : bool
        Weight-only scheme (W4A16 / W8A16) or not (W4A4 / W8A8); ``"scaled_mm"`` serves
        only the latter, ``"fused"`` only the former. A format without an
        activation-quantized scheme (MXFP4) is always weight-only.

    Returns
    -------
    (backend, reasons)
        ``reasons`` maps each better backend that was passed over to the reason (empty when
        the backend was forced).

    Raises
    ------
    KeyError
        Unknown format.
    ValueError
        Unknown backend name.
    RuntimeError
        A forced backend cannot run here, e.g. ``"scaled_mm needs sm_100+, this GPU is sm_90"``.
    """
    if fmt not in FORMATS:
        raise KeyError(f"unknown linear format {fmt!r}; known: {', '.join(FORMATS)}")
    info = FORMATS[fmt]
    weight_only = weight_only or info.schemes[1] is None
    device = _default_device() if device is None else torch.device(device)
    backend, source = requested_backend(backend)
    if backend is not None:
        why = _why_not(info, backend, device, weight_only, explicit=True)
        if why is not None:
            raise RuntimeError(f"{fmt} linear backend {backend!r} (chosen by {source}) cannot run "
                               f"here: {why}")
        return backend, {}
    reasons: Dict[str, str] = {}
    for b in BACKENDS:
        why = _why_not(info, b, device, weight_only, explicit=False)
        if why is None:
            return b, reasons
        reasons[b] = why
    raise AssertionError("unreachable: the reference backend always runs")


def _selector(fmt: str):
    """``select_linear_backend`` with ``fmt`` bound: the per-format public name."""
    info = FORMATS[fmt]

    def select(device: Union[str, torch.device, None] = None, *, backend: Optional[str] = None,
               weight_only: bool = False) -> Tuple[str, Dict[str, str]]:
        return select_linear_backend(fmt, device, backend=backend, weight_only=weight_only)

    select.__name__ = select.__qualname__ = f"select_{fmt.lower()}_linear_backend"
    schemes = (f"{info.schemes[0]} if ``weight_only``, else {info.schemes[1]}"
               if info.schemes[1] else f"{info.schemes[0]}, always weight-only")
    select.__doc__ = (f"The backend that runs an {fmt} linear layer ({schemes}), and why the "
                      f"better ones don't: :func:`select_linear_backend` for ``{fmt!r}``.")
    return select


select_nvfp4_linear_backend = _selector("NVFP4")
select_mxfp8_linear_backend = _selector("MXFP8")
select_mxfp4_linear_backend = _selector("MXFP4")
