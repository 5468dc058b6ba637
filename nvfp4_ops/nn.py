"""NVFP4 and MXFP8 linear layers, and the choice of the GEMM that runs them.

Layers
------
:class:`NVFP4Linear` holds a weight quantized once to NVFP4 (uint8 ``weight_packed``
``[N, K/2]``, float8_e4m3fn ``weight_scale`` ``[N, K/16]`` in the linear layout, fp32
``weight_global_scale`` ``[1]``, the ENCODE scale of SPEC.md). Schemes:

* W4A16 (``act_quant=None``): the activation stays in its dtype (bf16 / fp16 / fp32);
* W4A4 (``act_quant="dynamic"``): the activation is quantized to NVFP4 with a global
  scale computed from each input (``2688 / amax(x)``, on the device, no sync);
* W4A4 (``act_quant="static"``): with a calibrated ``input_global_scale`` buffer.

:class:`MXFP8Linear` holds float8_e4m3fn ``weight`` ``[N, K]`` and uint8 E8M0
``weight_scale`` ``[N, K/32]``. Schemes W8A16 (``act_quant=None``) and W8A8
(``act_quant="dynamic"``: per-block E8M0 scales of each input; MX has no per-tensor scale,
so there is no static variant).

Backends
--------
``"scaled_mm"``
    The native block-scaled GEMM of Blackwell (sm_100+) through
    ``torch.nn.functional.scaled_mm``: FP4 (``float4_e2m1fn_x2``) or FP8 operands, the
    block scales in the 128x4 swizzled layout, NVFP4's global scales passed as the
    ``TensorWise`` second-level (decode) scales. W4A4 / W8A8 only (both operands must be
    low precision). N and K are zero-padded to multiples of 32 (:mod:`nvfp4_ops.padding`).
    NOT RUN ON BLACKWELL HARDWARE YET: written against torch 2.14's documented API and
    tested on CPU with an emulation of that API's semantics.
``"dequant"``
    ``nvfp4_ops.dequantize`` / ``mx_dequantize`` of the weight into the activation dtype,
    then ``F.linear`` (cuBLAS on CUDA). W4A4 / W8A8 are emulated: the activation goes
    through ``quant_dequant`` (NVFP4) or ``mx_quantize`` + ``mx_dequantize`` (MXFP8)
    first. The default on CUDA GPUs below sm_100 (and for weight-only schemes on sm_100+).
``"reference"``
    The pure-PyTorch functions of :mod:`nvfp4_ops.reference` called directly (on every
    device, also where the ops have CUDA kernels), the weight dequantized to fp32 and the
    matmul in fp32, one cast of the output. Wrapped in the custom ops
    ``torch.ops.nvfp4_nn.nvfp4_linear_reference`` / ``mxfp8_linear_reference`` so that
    ``torch.compile(fullgraph=True)`` keeps it whole. Runs on any device; the default on CPU.

Choice: a ``backend=`` keyword (layer constructor or :func:`select_nvfp4_linear_backend`),
else the environment variable ``NVFP4_OPS_LINEAR_BACKEND`` (``scaled_mm`` | ``dequant`` |
``reference`` | ``auto``), else the best that can run. A chosen backend that cannot run on
the device raises a ``RuntimeError`` that says why. A layer resolves its backend when it is
built and again whenever it is moved (``.to()``, ``.cuda()``), for the device of its
weight; the environment variable is read at those moments.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reference as _ref
from .padding import ALIGN, pad_activation, pad_mx_weight, pad_nvfp4_weight, round_up, unpad_output

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "NVFP4Linear",
    "MXFP8Linear",
    "apply_nvfp4_linear",
    "apply_mxfp8_linear",
    "select_nvfp4_linear_backend",
    "select_mxfp8_linear_backend",
]

_ops = torch.ops.nvfp4

#: The linear backends, best first.
BACKENDS: Tuple[str, ...] = ("scaled_mm", "dequant", "reference")
#: Environment variable that overrides the automatic choice (the keyword wins over it).
ENV_VAR = "NVFP4_OPS_LINEAR_BACKEND"

_E4M3 = torch.float8_e4m3fn
_FP4X2 = getattr(torch, "float4_e2m1fn_x2", None)
_E8M0 = getattr(torch, "float8_e8m0fnu", None)
_NVFP4_ACT = (None, "dynamic", "static")
_MXFP8_ACT = (None, "dynamic")


# --------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _scaled_mm_unavailable(fmt: str, device: torch.device, weight_only: bool) -> Optional[str]:
    """Why torch's block-scaled GEMM cannot serve ``fmt`` on ``device`` (None: it can)."""
    if weight_only:
        a16, use = (("W4A16", "act_quant='dynamic' or 'static'") if fmt == "NVFP4"
                    else ("W8A16", "act_quant='dynamic'"))
        return (f"scaled_mm multiplies two block-scaled operands; the weight-only scheme "
                f"({a16}) keeps the activation in high precision (use {use} for the "
                "native GEMM)")
    if device.type != "cuda":
        return f"scaled_mm needs a CUDA GPU with sm_100+, got device {device.type!r}"
    if getattr(torch.version, "hip", None):
        return "scaled_mm is wired for cuBLAS's block-scaled GEMMs (CUDA), this is a ROCm build"
    want = _FP4X2 if fmt == "NVFP4" else _E8M0
    if not hasattr(F, "scaled_mm") or not hasattr(F, "ScalingType") or want is None:
        return (f"torch {torch.__version__} has no torch.nn.functional.scaled_mm with "
                f"{fmt} operands")
    if not torch.cuda.is_available():
        return "scaled_mm needs a CUDA GPU with sm_100+, and no CUDA device is visible"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 10:
        return f"scaled_mm needs sm_100+, this GPU is sm_{major}{minor}"
    return None


def _why_not(fmt: str, backend: str, device: torch.device, weight_only: bool,
             explicit: bool) -> Optional[str]:
    if backend == "scaled_mm":
        return _scaled_mm_unavailable(fmt, device, weight_only)
    if backend == "dequant":
        if explicit or device.type == "cuda":
            return None  # the ops run on every device
        return (f"not the default on {device.type}: there the dequantize op is the reference "
                "itself, and the reference backend keeps the matmul in fp32 (ask for 'dequant' "
                "to run it anyway)")
    return None  # reference: everywhere


def _check_backend_name(backend: Optional[str], source: str) -> None:
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown linear backend {backend!r} (from {source}); choose one of "
                         f"{', '.join(map(repr, BACKENDS))} (or 'auto' in {ENV_VAR})")


def _select(fmt: str, device, backend: Optional[str], weight_only: bool
            ) -> Tuple[str, Dict[str, str]]:
    device = _default_device() if device is None else torch.device(device)
    source = "the backend= keyword"
    if backend is None or backend == "auto":
        backend = None
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env != "auto":
            backend, source = env, f"the environment variable {ENV_VAR}"
    _check_backend_name(backend, source)
    if backend is not None:
        why = _why_not(fmt, backend, device, weight_only, explicit=True)
        if why is not None:
            raise RuntimeError(f"{fmt} linear backend {backend!r} (chosen by {source}) cannot run "
                               f"here: {why}")
        return backend, {}
    reasons: Dict[str, str] = {}
    for b in BACKENDS:
        why = _why_not(fmt, b, device, weight_only, explicit=False)
        if why is None:
            return b, reasons
        reasons[b] = why
    raise AssertionError("unreachable: the reference backend always runs")


def select_nvfp4_linear_backend(
    device: Union[str, torch.device, None] = None,
    *,
    backend: Optional[str] = None,
    weight_only: bool = False,
) -> Tuple[str, Dict[str, str]]:
    """The backend that runs an NVFP4 linear layer on ``device``, and why the better ones don't.

    Parameters
    ----------
    device : str or torch.device, optional
        Default: ``"cuda"`` when a GPU is visible, else ``"cpu"``.
    backend : str, optional
        Force ``"scaled_mm"``, ``"dequant"`` or ``"reference"`` (``"auto"`` or None: choose).
        Without it the environment variable ``NVFP4_OPS_LINEAR_BACKEND`` is read.
    weight_only : bool
        W4A16 (True) or W4A4 (False); ``"scaled_mm"`` serves only W4A4.

    Returns
    -------
    (backend, reasons)
        ``reasons`` maps each better backend that was passed over to the reason (empty when
        the backend was forced).

    Raises
    ------
    ValueError
        Unknown backend name.
    RuntimeError
        A forced backend cannot run here, e.g. ``"scaled_mm needs sm_100+, this GPU is sm_90"``.
    """
    return _select("NVFP4", device, backend, weight_only)


def select_mxfp8_linear_backend(
    device: Union[str, torch.device, None] = None,
    *,
    backend: Optional[str] = None,
    weight_only: bool = False,
) -> Tuple[str, Dict[str, str]]:
    """The backend that runs an MXFP8 linear layer on ``device`` (W8A16 if ``weight_only``,
    else W8A8), and why the better ones don't. Same rules as
    :func:`select_nvfp4_linear_backend`."""
    return _select("MXFP8", device, backend, weight_only)


# --------------------------------------------------------------------------------------
# The GEMMs
# --------------------------------------------------------------------------------------


def _flat(x: Tensor, k: int, name: str) -> Tensor:
    if x.shape[-1] != k:  # a plain check: traceable by dynamo (no tensor in a closure)
        raise ValueError(f"{name}: the input's last dim must be in_features = {k}, got shape "
                         f"{list(x.shape)}")
    return x.reshape(-1, k)


def _bias_as(bias: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if bias is None else bias.to(dtype)


def _recip(s: Tensor) -> Tensor:
    # RN(1 / s) in fp32, tensor by tensor (as the reference computes its decode scales).
    return torch.ones_like(s) / s


def _nvfp4_act_gs(layer: "NVFP4Linear", x2: Tensor) -> Tensor:
    if layer.act_quant == "static":
        return layer.input_global_scale
    return _ops.global_scale(x2.detach())


# The reference backend: nvfp4_ops.reference called directly, the matmul in fp32, one cast.
# Wrapped in custom ops so that torch.compile(fullgraph=True) keeps it whole (dynamo does not
# trace into the reference's argument checks) and so that it is the reference on every device
# (the nvfp4 ops would run the CUDA kernels on a GPU).


@torch.library.custom_op("nvfp4_nn::nvfp4_linear_reference", mutates_args=())
def _nvfp4_linear_reference(x: Tensor, packed: Tensor, scales: Tensor, global_scale: Tensor,
                            act_quant: str, input_global_scale: Optional[Tensor],
                            bias: Optional[Tensor]) -> Tensor:
    """``[M, K] -> [M, N]``; ``act_quant``: "None", "dynamic" or "static"."""
    w = _ref.dequantize(packed, scales, global_scale, torch.float32)
    if act_quant == "dynamic":
        x = _ref.quant_dequant(x, _ref.global_scale(x))
    elif act_quant == "static":
        assert input_global_scale is not None
        x = _ref.quant_dequant(x, input_global_scale)
    y = x.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


@_nvfp4_linear_reference.register_fake
def _(x, packed, scales, global_scale, act_quant, input_global_scale, bias):
    return x.new_empty((x.shape[0], packed.shape[0]))


@torch.library.custom_op("nvfp4_nn::mxfp8_linear_reference", mutates_args=())
def _mxfp8_linear_reference(x: Tensor, data: Tensor, scales: Tensor, rounding: str,
                            quantize_activation: bool, bias: Optional[Tensor]) -> Tensor:
    """``[M, K] -> [M, N]``, MXFP8 weight ``data`` ``[N, K]``."""
    w = _ref.mx_dequantize(data, scales, "e4m3", torch.float32)
    if quantize_activation:
        xd, xs = _ref.mx_quantize(x, "e4m3", rounding)
        x = _ref.mx_dequantize(xd, xs, "e4m3", x.dtype)
    y = x.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


@_mxfp8_linear_reference.register_fake
def _(x, data, scales, rounding, quantize_activation, bias):
    return x.new_empty((x.shape[0], data.shape[0]))


def _scaled_mm_enums():
    return F.ScalingType, F.SwizzleType


def apply_nvfp4_linear(backend: str, layer: "NVFP4Linear", x: Tensor,
                       bias: Optional[Tensor] = None) -> Tensor:
    """``y = x W^T + bias`` for an :class:`NVFP4Linear` ``layer`` with the given backend.

    Parameters
    ----------
    backend : {"scaled_mm", "dequant", "reference"}
        See the module docstring; this function does not check that the backend can run
        on the device (:func:`select_nvfp4_linear_backend` does).
    layer : NVFP4Linear
        Supplies the quantized weight, the scheme (``layer.act_quant``) and, for W4A4
        static, ``layer.input_global_scale``.
    x : Tensor
        ``[..., K]``, float32 / float16 / bfloat16.
    bias : Tensor, optional
        ``[N]``; cast to ``x.dtype``.

    Returns
    -------
    Tensor
        ``[..., N]`` in ``x.dtype``.
    """
    K, N = layer.in_features, layer.out_features
    lead = x.shape[:-1]
    x2 = _flat(x, K, "NVFP4Linear")
    if backend == "dequant":
        w = _ops.dequantize(layer.weight_packed, layer.weight_scale, layer.weight_global_scale,
                            x2.dtype, False)
        if layer.act_quant is not None:
            x2 = _ops.quant_dequant(x2, _nvfp4_act_gs(layer, x2))
        y = F.linear(x2, w, _bias_as(bias, x2.dtype))
    elif backend == "reference":
        y = _nvfp4_linear_reference(x2, layer.weight_packed, layer.weight_scale,
                                    layer.weight_global_scale, str(layer.act_quant),
                                    layer.input_global_scale, bias)
    elif backend == "scaled_mm":
        if layer.act_quant is None:
            raise ValueError("NVFP4Linear: the scaled_mm backend needs W4A4 (act_quant set)")
        ScalingType, SwizzleType = _scaled_mm_enums()
        Kp = round_up(K, ALIGN)
        gs_x = _nvfp4_act_gs(layer, x2)
        xq, xs = _ops.quantize(pad_activation(x2, Kp), gs_x, True, "amax", None)
        recipe = [ScalingType.BlockWise1x16, ScalingType.TensorWise]
        swz = [SwizzleType.SWIZZLE_32_4_4, SwizzleType.NO_SWIZZLE]
        y = F.scaled_mm(
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
        y = unpad_output(y, N)
        if bias is not None:
            y = y + bias.to(y.dtype)
    else:
        raise ValueError(f"apply_nvfp4_linear: unknown backend {backend!r}; choose one of "
                         f"{', '.join(map(repr, BACKENDS))}")
    return y.reshape(*lead, N)


def apply_mxfp8_linear(backend: str, layer: "MXFP8Linear", x: Tensor,
                       bias: Optional[Tensor] = None) -> Tensor:
    """``y = x W^T + bias`` for an :class:`MXFP8Linear` ``layer`` with the given backend.

    Same contract as :func:`apply_nvfp4_linear`; W8A8 (``layer.act_quant == "dynamic"``)
    quantizes the activation to MXFP8 with the layer's ``rounding`` mode.
    """
    K, N = layer.in_features, layer.out_features
    lead = x.shape[:-1]
    x2 = _flat(x, K, "MXFP8Linear")
    rounding = layer.rounding
    if backend == "dequant":
        w = _ops.mx_dequantize(layer.weight, layer.weight_scale, "e4m3", x2.dtype, False)
        if layer.act_quant is not None:
            xd, xs = _ops.mx_quantize(x2, "e4m3", rounding, False, -1, "amax")
            x2 = _ops.mx_dequantize(xd, xs, "e4m3", x2.dtype, False)
        y = F.linear(x2, w, _bias_as(bias, x2.dtype))
    elif backend == "reference":
        y = _mxfp8_linear_reference(x2, layer.weight, layer.weight_scale, rounding,
                                    layer.act_quant is not None, bias)
    elif backend == "scaled_mm":
        if layer.act_quant is None:
            raise ValueError("MXFP8Linear: the scaled_mm backend needs W8A8 (act_quant set)")
        ScalingType, SwizzleType = _scaled_mm_enums()
        Kp = round_up(K, ALIGN)
        xd, xs = _ops.mx_quantize(pad_activation(x2, Kp), "e4m3", rounding, True, -1, "amax")
        y = F.scaled_mm(
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
        y = unpad_output(y, N)
        if bias is not None:
            y = y + bias.to(y.dtype)
    else:
        raise ValueError(f"apply_mxfp8_linear: unknown backend {backend!r}; choose one of "
                         f"{', '.join(map(repr, BACKENDS))}")
    return y.reshape(*lead, N)


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


def _calibration_2d(calibration: Union[Tensor, Sequence[Tensor]], k: int) -> Tensor:
    ts = [calibration] if isinstance(calibration, Tensor) else list(calibration)
    if not ts:
        raise ValueError("calibration: no activations given")
    for t in ts:
        if t.shape[-1] != k:
            raise ValueError(f"calibration activations must have last dim in_features = {k}, "
                             f"got shape {list(t.shape)}")
    return torch.cat([t.detach().reshape(-1, k) for t in ts])


class _QuantLinearBase(nn.Module):
    """Shared machinery: backend resolution on build / move / load, and dtype-safe moves."""

    #: Buffers whose dtype is part of the format: ``.to(dtype)`` / ``.half()`` move but
    #: never convert them.
    _QUANT_BUFFERS: Tuple[str, ...] = ()
    _ACT_CHOICES: Tuple[Optional[str], ...] = ()

    def __init__(self, in_features: int, out_features: int, bias: bool,
                 act_quant: Optional[str], backend: Optional[str], device, dtype) -> None:
        super().__init__()
        if act_quant not in self._ACT_CHOICES:
            raise ValueError(f"{type(self).__name__}: act_quant must be one of "
                             f"{self._ACT_CHOICES}, got {act_quant!r}")
        if backend == "auto":
            backend = None
        _check_backend_name(backend, "the backend= keyword")
        self.in_features = in_features
        self.out_features = out_features
        self.act_quant = act_quant
        #: The backend asked for (None: automatic / environment variable).
        self.backend = backend
        #: The backend that runs now (None when the one asked for cannot run here).
        self.active_backend: Optional[str] = None
        #: Why the better backends were passed over.
        self.backend_reasons: Dict[str, str] = {}
        self._backend_error: Optional[str] = None
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype),
                                     requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.register_buffer("_mm_weight", None, persistent=False)
        self.register_buffer("_mm_weight_scale", None, persistent=False)
        self.register_buffer("_mm_weight_decode", None, persistent=False)
        self.register_load_state_dict_post_hook(_after_load)

    # -- backend ------------------------------------------------------------------------

    @property
    def weight_only(self) -> bool:
        return self.act_quant is None

    def _select(self, device, backend):  # pragma: no cover - overridden
        raise NotImplementedError

    def _prepare_scaled_mm(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _weight_device(self) -> torch.device:  # pragma: no cover - overridden
        raise NotImplementedError

    def set_backend(self, backend: Optional[str] = None) -> "_QuantLinearBase":
        """Ask for ``backend`` (None / "auto": choose) and resolve it for the weight's device.

        Raises the :func:`select_nvfp4_linear_backend` errors at once (unlike building the
        layer on CPU with ``backend="scaled_mm"``, which defers the error to the forward so
        that the layer can be moved to the GPU first).
        """
        if backend == "auto":
            backend = None
        _check_backend_name(backend, "the backend= keyword")
        self.backend = backend
        self._resolve()
        if self._backend_error is not None:
            raise RuntimeError(self._backend_error)
        return self

    def _resolve(self) -> None:
        self._mm_weight = self._mm_weight_scale = self._mm_weight_decode = None
        try:
            name, reasons = self._select(self._weight_device(), self.backend)
        except RuntimeError as e:
            self.active_backend, self.backend_reasons, self._backend_error = None, {}, str(e)
            return
        self.active_backend, self.backend_reasons, self._backend_error = name, reasons, None
        if name == "scaled_mm":
            self._prepare_scaled_mm()

    def _apply(self, fn, recurse=True):
        keep = {id(t) for n, t in self._buffers.items()
                if t is not None and n in self._QUANT_BUFFERS}

        def guarded(t):
            out = fn(t)
            if id(t) in keep and isinstance(out, Tensor) and out.dtype != t.dtype:
                out = t.to(device=out.device)  # follow the move, keep the format's dtype
            return out

        super()._apply(guarded, recurse)
        self._resolve()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Accept raw uint8 bytes for float8 buffers and [] / [1] per-tensor scales.
        for name in self._QUANT_BUFFERS:
            key = prefix + name
            cur = self._buffers.get(name)
            t = state_dict.get(key)
            if cur is None or not isinstance(t, Tensor):
                continue
            if t.dtype == torch.uint8 and cur.dtype != torch.uint8 and cur.element_size() == 1:
                t = t.view(cur.dtype)  # raw bytes of a float8 buffer
            elif _E8M0 is not None and t.dtype == _E8M0 and cur.dtype == torch.uint8:
                t = t.view(torch.uint8)  # E8M0 scales stored as float8_e8m0fnu
            if t.numel() == 1 and cur.numel() == 1 and t.shape != cur.shape:
                t = t.reshape(cur.shape)
            state_dict[key] = t
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _raise_backend_error(self) -> None:
        raise RuntimeError(self._backend_error)

    def _extra_common(self) -> str:
        be = self.active_backend if self.active_backend is not None else "unavailable"
        asked = "" if self.backend is None else f" (asked: {self.backend})"
        return f"backend={be}{asked}"


def _after_load(module: "_QuantLinearBase", incompatible_keys) -> None:
    module._resolve()


class NVFP4Linear(_QuantLinearBase):
    """A linear layer with an NVFP4 weight (W4A16 or W4A4).

    Parameters
    ----------
    in_features, out_features : int
        ``K`` (a multiple of 16) and ``N``.
    bias : bool
    act_quant : {None, "dynamic", "static"}
        None: W4A16 (weight-only). "dynamic": W4A4 with the activation's global scale
        computed per call. "static": W4A4 with the calibrated ``input_global_scale`` buffer.
    backend : {None, "auto", "scaled_mm", "dequant", "reference"}
        None / "auto": :func:`select_nvfp4_linear_backend` picks (the environment variable
        ``NVFP4_OPS_LINEAR_BACKEND`` first).
    device, dtype
        Where the buffers live; ``dtype`` is the bias dtype (the GEMM runs in the input's
        dtype).

    Buffers (the state dict; names as compressed-tensors checkpoints)
    ------------------------------------------------------------------
    weight_packed : uint8 ``[N, K/2]``
    weight_scale : float8_e4m3fn ``[N, K/16]`` (linear layout)
    weight_global_scale : fp32 ``[1]``, encode scale
    input_global_scale : fp32 ``[1]``, encode scale (``act_quant="static"`` only)

    Build with :meth:`from_float` (quantize an ``nn.Linear``) or :meth:`from_quantized`
    (stored tensors, e.g. from :func:`nvfp4_ops.formats.from_compressed_tensors` or
    :func:`~nvfp4_ops.formats.from_modelopt`), or construct and ``load_state_dict``.
    """

    _QUANT_BUFFERS = ("weight_packed", "weight_scale", "weight_global_scale",
                      "input_global_scale")
    _ACT_CHOICES = _NVFP4_ACT

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 act_quant: Optional[str] = None, backend: Optional[str] = None,
                 device=None, dtype: torch.dtype = torch.bfloat16) -> None:
        if in_features % 16:
            raise ValueError(f"NVFP4Linear: in_features (K) must be a multiple of 16, got "
                             f"{in_features}")
        super().__init__(in_features, out_features, bias, act_quant, backend, device, dtype)
        #: How the weight's block scales were chosen ("amax", "mse", "hessian"; informative).
        self.scale_method = "amax"
        self.register_buffer("weight_packed", torch.zeros(
            out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.zeros(
            out_features, in_features // 16, dtype=torch.uint8, device=device).view(_E4M3))
        self.register_buffer("weight_global_scale", torch.ones(1, dtype=torch.float32,
                                                               device=device))
        if act_quant == "static":
            self.register_buffer("input_global_scale", torch.ones(1, dtype=torch.float32,
                                                                  device=device))
        else:
            self.input_global_scale = None
        self._resolve()

    def _weight_device(self) -> torch.device:
        return self.weight_packed.device

    def _select(self, device, backend):
        return select_nvfp4_linear_backend(device, backend=backend, weight_only=self.weight_only)

    def _prepare_scaled_mm(self) -> None:
        # Once per build / move / load: pad N and K to 32, swizzle the block scales, and
        # the decode global scale (torch's TensorWise scales are decode scales).
        packed, scales = pad_nvfp4_weight(self.weight_packed, self.weight_scale, ALIGN)
        self._mm_weight = packed.contiguous()
        self._mm_weight_scale = _ops.swizzle_scales(scales.contiguous())
        self._mm_weight_decode = _recip(self.weight_global_scale)

    @property
    def scheme(self) -> str:
        return "W4A16" if self.act_quant is None else "W4A4"

    def forward(self, x: Tensor) -> Tensor:
        if self.active_backend is None:
            self._raise_backend_error()
        return apply_nvfp4_linear(self.active_backend, self, x, self.bias)

    def extra_repr(self) -> str:
        act = {None: "weight-only", "dynamic": "dynamic activation global scale",
               "static": "static activation global scale"}[self.act_quant]
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, format=NVFP4 (E2M1, E4M3 scale per 16, fp32 "
                f"global scale), scheme={self.scheme} ({act}), "
                f"scale_method={self.scale_method}, {self._extra_common()}")

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        *,
        scale_method: str = "amax",
        hessian: Optional[Tensor] = None,
        act_quant: Optional[str] = None,
        input_global_scale: Optional[Tensor] = None,
        calibration: Union[Tensor, Sequence[Tensor], None] = None,
        backend: Optional[str] = None,
    ) -> "NVFP4Linear":
        """Quantize ``linear``'s weight to NVFP4 once (on the weight's device).

        Parameters
        ----------
        linear : nn.Linear
            ``in_features`` a multiple of 16. The bias is kept in its dtype.
        scale_method : {"amax", "mse", "hessian"}
            How each block's E4M3 scale is chosen (SPEC sections 2 and 5).
        hessian : Tensor, optional
            fp32 ``[K/16, 16, 16]`` for ``"hessian"``; built from ``calibration`` with
            :func:`nvfp4_ops.hessian_blocks` when omitted.
        act_quant : {None, "dynamic", "static"}
            W4A16, W4A4 dynamic, W4A4 static.
        input_global_scale : Tensor, optional
            fp32 1-element ENCODE scale of the activations (static). When omitted it is
            calibrated: ``2688 / amax`` over ``calibration``.
        calibration : Tensor or list of Tensors, optional
            Sample activations ``[..., K]`` (for the static scale and / or the Hessian).
        backend : str, optional
            As for the constructor.
        """
        w = linear.weight.detach()
        N, K = w.shape
        calib = None if calibration is None else _calibration_2d(calibration, K)
        if scale_method == "hessian" and hessian is None:
            if calib is None:
                raise ValueError("NVFP4Linear.from_float: scale_method='hessian' needs hessian= "
                                 "or calibration= activations")
            hessian = _ref.hessian_blocks(calib.to(w.device))
        if act_quant == "static" and input_global_scale is None:
            if calib is None:
                raise ValueError("NVFP4Linear.from_float: act_quant='static' needs "
                                 "input_global_scale= or calibration= activations")
            input_global_scale = _ops.global_scale(calib)
        if act_quant != "static" and input_global_scale is not None:
            raise ValueError("NVFP4Linear.from_float: input_global_scale is only used with "
                             f"act_quant='static', got act_quant={act_quant!r}")
        gs = _ops.global_scale(w)
        packed, scales = _ops.quantize(w, gs, False, scale_method,
                                       None if hessian is None else hessian.to(w.device))
        bias = None if linear.bias is None else linear.bias.detach()
        layer = cls.from_quantized(packed, scales, gs, input_global_scale, bias=bias,
                                   act_quant=act_quant, backend=backend)
        layer.scale_method = scale_method
        return layer

    @classmethod
    def from_quantized(
        cls,
        weight_packed: Tensor,
        weight_scale: Tensor,
        weight_global_scale: Tensor,
        input_global_scale: Optional[Tensor] = None,
        *,
        bias: Optional[Tensor] = None,
        act_quant: Optional[str] = "auto",
        backend: Optional[str] = None,
    ) -> "NVFP4Linear":
        """A layer over stored NVFP4 tensors (used as they are: no copy when contiguous).

        The argument order is that of :func:`nvfp4_ops.formats.from_compressed_tensors` /
        :func:`~nvfp4_ops.formats.from_modelopt`'s result, so
        ``NVFP4Linear.from_quantized(*from_modelopt(d), bias=b)`` works.

        Parameters
        ----------
        weight_packed : uint8 ``[N, K/2]``
        weight_scale : float8_e4m3fn ``[N, K/16]`` (uint8 bytes accepted), linear layout
        weight_global_scale : fp32, 1 element, encode scale
        input_global_scale : fp32, 1 element, encode scale, optional
        bias : Tensor ``[N]``, optional
        act_quant : {"auto", None, "dynamic", "static"}
            "auto" (default): "static" when ``input_global_scale`` is given, else None.
        backend : str, optional
        """
        from .formats import from_compressed_tensors

        packed, scales, gs, igs = from_compressed_tensors({
            "weight_packed": weight_packed, "weight_scale": weight_scale,
            "weight_global_scale": weight_global_scale,
            **({} if input_global_scale is None else {"input_global_scale": input_global_scale}),
        })
        if act_quant == "auto":
            act_quant = "static" if igs is not None else None
        if act_quant == "static" and igs is None:
            raise ValueError("NVFP4Linear.from_quantized: act_quant='static' needs "
                             "input_global_scale")
        N, K = packed.shape[0], packed.shape[1] * 2
        dev = packed.device
        layer = cls(K, N, bias=bias is not None, act_quant=act_quant, backend=backend,
                    device="meta", dtype=bias.dtype if bias is not None else torch.bfloat16)
        layer.weight_packed = packed.contiguous()
        layer.weight_scale = scales.contiguous()
        layer.weight_global_scale = gs.to(dev)
        if act_quant == "static":
            layer.input_global_scale = igs.to(dev)
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().to(dev), requires_grad=False)
        layer._resolve()
        return layer


class MXFP8Linear(_QuantLinearBase):
    """A linear layer with an MXFP8 weight (W8A16 or W8A8).

    Parameters
    ----------
    in_features, out_features : int
        ``K`` (a multiple of 32) and ``N``.
    bias : bool
    act_quant : {None, "dynamic"}
        None: W8A16. "dynamic": W8A8, each input quantized to MXFP8 (per-block scales).
    rounding : {"rceil", "floor"}
        The E8M0 scale rounding of the activations (the weight's is fixed when it is
        quantized; :meth:`from_float` uses the same mode).
    backend, device, dtype
        As for :class:`NVFP4Linear`.

    Buffers
    -------
    weight : float8_e4m3fn ``[N, K]``
    weight_scale : uint8 E8M0 ``[N, K/32]`` (linear layout)
    """

    _QUANT_BUFFERS = ("weight", "weight_scale")
    _ACT_CHOICES = _MXFP8_ACT

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 act_quant: Optional[str] = None, rounding: str = "rceil",
                 backend: Optional[str] = None, device=None,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        if in_features % 32:
            raise ValueError(f"MXFP8Linear: in_features (K) must be a multiple of 32, got "
                             f"{in_features}")
        if act_quant == "static":
            raise ValueError("MXFP8Linear: act_quant='static' does not exist for MX formats "
                             "(no per-tensor scale: activations are scaled per block of 32); "
                             "use act_quant='dynamic'")
        if rounding not in ("rceil", "floor"):
            raise ValueError(f"MXFP8Linear: rounding must be 'rceil' or 'floor', got {rounding!r}")
        super().__init__(in_features, out_features, bias, act_quant, backend, device, dtype)
        self.rounding = rounding
        self.scale_method = "amax"
        self.register_buffer("weight", torch.zeros(
            out_features, in_features, dtype=torch.uint8, device=device).view(_E4M3))
        self.register_buffer("weight_scale", torch.full(
            (out_features, in_features // 32), 127, dtype=torch.uint8, device=device))
        self._resolve()

    def _weight_device(self) -> torch.device:
        return self.weight.device

    def _select(self, device, backend):
        return select_mxfp8_linear_backend(device, backend=backend, weight_only=self.weight_only)

    def _prepare_scaled_mm(self) -> None:
        data, scales = pad_mx_weight(self.weight, self.weight_scale, "e4m3", ALIGN)
        self._mm_weight = data.contiguous()
        self._mm_weight_scale = _ops.swizzle_scales(scales.contiguous()).view(_E8M0)

    @property
    def scheme(self) -> str:
        return "W8A16" if self.act_quant is None else "W8A8"

    def forward(self, x: Tensor) -> Tensor:
        if self.active_backend is None:
            self._raise_backend_error()
        return apply_mxfp8_linear(self.active_backend, self, x, self.bias)

    def extra_repr(self) -> str:
        act = "weight-only" if self.act_quant is None else "dynamic per-block activation scales"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, format=MXFP8 (E4M3, E8M0 scale per 32, "
                f"rounding={self.rounding}), scheme={self.scheme} ({act}), "
                f"scale_method={self.scale_method}, {self._extra_common()}")

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        *,
        rounding: str = "rceil",
        scale_method: str = "amax",
        act_quant: Optional[str] = None,
        backend: Optional[str] = None,
    ) -> "MXFP8Linear":
        """Quantize ``linear``'s weight to MXFP8 once (``rounding`` "rceil" or "floor";
        ``scale_method`` "amax" or "mse"), on the weight's device."""
        w = linear.weight.detach()
        data, scales = _ops.mx_quantize(w, "e4m3", rounding, False, -1, scale_method)
        bias = None if linear.bias is None else linear.bias.detach()
        layer = cls.from_quantized(data, scales, bias=bias, act_quant=act_quant,
                                   rounding=rounding, backend=backend)
        layer.scale_method = scale_method
        return layer

    @classmethod
    def from_quantized(
        cls,
        weight: Tensor,
        weight_scale: Tensor,
        *,
        bias: Optional[Tensor] = None,
        act_quant: Optional[str] = None,
        rounding: str = "rceil",
        backend: Optional[str] = None,
    ) -> "MXFP8Linear":
        """A layer over stored MXFP8 tensors: float8_e4m3fn ``[N, K]`` and E8M0 bytes
        ``[N, K/32]`` (uint8 or float8_e8m0fnu), used as they are."""
        if _E8M0 is not None and weight_scale.dtype == _E8M0:
            weight_scale = weight_scale.view(torch.uint8)
        if weight.dtype == torch.uint8:
            weight = weight.view(_E4M3)
        if weight.dtype != _E4M3 or weight.dim() != 2:
            raise ValueError(f"MXFP8Linear.from_quantized: weight must be float8_e4m3fn [N, K], "
                             f"got {weight.dtype} {list(weight.shape)}")
        N, K = weight.shape
        if weight_scale.dtype != torch.uint8 or tuple(weight_scale.shape) != (N, K // 32):
            raise ValueError(f"MXFP8Linear.from_quantized: weight_scale must be uint8 E8M0 "
                             f"[N, K/32] = [{N}, {K // 32}], got {weight_scale.dtype} "
                             f"{list(weight_scale.shape)}")
        layer = cls(K, N, bias=bias is not None, act_quant=act_quant, rounding=rounding,
                    backend=backend, device="meta",
                    dtype=bias.dtype if bias is not None else torch.bfloat16)
        layer.weight = weight.contiguous()
        layer.weight_scale = weight_scale.contiguous()
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().to(weight.device), requires_grad=False)
        layer._resolve()
        return layer


def quantize_linears(
    model: nn.Module,
    fmt: str = "nvfp4",
    *,
    skip: Iterable[str] = (),
    **kwargs,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by :class:`NVFP4Linear`
    (``fmt="nvfp4"``) or :class:`MXFP8Linear` (``"mxfp8"``) built with ``from_float(**kwargs)``.

    Layers whose qualified name is in ``skip``, or whose ``in_features`` does not fit the
    format (16 / 32), are left as they are. Returns ``model``.
    """
    cls = {"nvfp4": NVFP4Linear, "mxfp8": MXFP8Linear}[fmt]
    block = 16 if fmt == "nvfp4" else 32
    skip = set(skip)
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            full = f"{name}.{cname}" if name else cname
            if (type(child) is nn.Linear and full not in skip
                    and child.in_features % block == 0):
                setattr(mod, cname, cls.from_float(child, **kwargs))
    return model
