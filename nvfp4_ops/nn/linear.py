"""Linear layers with a weight quantized once: :class:`NVFP4Linear`, :class:`MXFP8Linear`,
:class:`MXFP4Linear`.

:class:`QuantizedLinear` holds everything the formats share: the bias, the state-dict
conventions (raw bytes accepted for float8 buffers, ``[]`` or ``[1]`` per-tensor scales),
dtype-safe moves (``.half()`` never converts a quantized buffer), the backend resolution
on build, move (``.to()``, ``.cuda()``) and load, the ``from_quantized`` plumbing and the
calibration input. A format subclass says what it stores (``_init_buffers``), how its
weight dequantizes (:meth:`~QuantizedLinear.dequantize_weight`) and how an activation is
quantized for its W4A4 / W8A8 schemes (:meth:`~QuantizedLinear.quantize_input`); its
``FORMAT`` names its entry in :data:`nvfp4_ops.nn.backends.FORMATS`.

Schemes
-------
NVFP4: W4A16 (``act_quant=None``), W4A4 dynamic (the activation's global scale
``2688 / amax(x)`` computed per call, on the device, no sync) and W4A4 static (a calibrated
``input_global_scale`` buffer). MXFP8: W8A16 and W8A8 (``"dynamic"``: per-block E8M0 scales
of each input; MX has no per-tensor scale, so there is no static variant). MXFP4: W4A16 only
(gpt-oss style weights). The MX layers share :class:`MXLinear`.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .. import hessian_blocks
from ..formats import from_compressed_tensors
from .backends import FORMATS, LinearFormat, check_backend_name, select_linear_backend
from .gemm import apply_linear, prepare

__all__ = ["MXFP4Linear", "MXFP8Linear", "MXLinear", "NVFP4Linear", "QuantizedLinear",
           "quantize_linears"]

_ops = torch.ops.nvfp4
_E4M3 = torch.float8_e4m3fn
_E8M0 = getattr(torch, "float8_e8m0fnu", None)


def _after_load(module: "QuantizedLinear", incompatible_keys) -> None:
    module._resolve()


class QuantizedLinear(nn.Module):
    """The base of the quantized linear layers (not built directly: use a subclass).

    Parameters
    ----------
    in_features, out_features : int
        ``K`` (a multiple of the format's block size) and ``N``.
    bias : bool
    act_quant : str or None
        None: weight-only. Otherwise one of the format's activation schemes.
    backend : {None, "auto", "scaled_mm", "fused", "dequant", "reference"}
        None / "auto": :func:`~nvfp4_ops.nn.select_linear_backend` picks (the environment
        variable ``NVFP4_OPS_LINEAR_BACKEND`` first).
    device, dtype
        Where the buffers live; ``dtype`` is the bias dtype (the GEMM runs in the input's
        dtype).

    Attributes
    ----------
    backend : str or None
        The backend asked for (None: automatic / environment variable).
    active_backend : str or None
        The backend that runs now (None when the one asked for cannot run here; the
        forward then raises why).
    backend_reasons : dict
        Why the better backends were passed over.
    scale_method : str
        How the weight's block scales were chosen ("amax", "mse", "hessian"; informative).
    """

    #: The key of this format in :data:`nvfp4_ops.nn.backends.FORMATS`.
    FORMAT: str = ""
    #: Buffers whose dtype is part of the format: ``.to(dtype)`` / ``.half()`` move but
    #: never convert them.
    _QUANT_BUFFERS: Tuple[str, ...] = ()
    #: act_quant values that are refused with a format-specific explanation.
    _ACT_QUANT_REFUSED: Dict[str, str] = {}
    #: The scheme's description in ``repr``, by act_quant.
    _ACT_REPR: Dict[Optional[str], str] = {}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 act_quant: Optional[str] = None, backend: Optional[str] = None,
                 device=None, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        name, fmt = type(self).__name__, self.format_info()
        if in_features % fmt.block:
            raise ValueError(f"{name}: in_features (K) must be a multiple of {fmt.block}, got "
                             f"{in_features}")
        if act_quant in self._ACT_QUANT_REFUSED:
            raise ValueError(f"{name}: act_quant={act_quant!r} "
                             f"{self._ACT_QUANT_REFUSED[act_quant]}")
        if act_quant not in fmt.act_quant:
            raise ValueError(f"{name}: act_quant must be one of {fmt.act_quant}, got "
                             f"{act_quant!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.act_quant = act_quant
        self.backend = check_backend_name(backend, "the backend= keyword")
        self.active_backend: Optional[str] = None
        self.backend_reasons: Dict[str, str] = {}
        self._backend_error: Optional[str] = None
        self.scale_method = "amax"
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype),
                                     requires_grad=False)
        else:
            self.register_parameter("bias", None)
        # The weight as the chosen GEMM reads it (nvfp4_ops.nn.gemm.prepare), if not stored.
        self.register_buffer("_mm_weight", None, persistent=False)
        self.register_buffer("_mm_weight_scale", None, persistent=False)
        self.register_buffer("_mm_weight_decode", None, persistent=False)
        self._init_buffers(device)
        self.register_load_state_dict_post_hook(_after_load)
        self._resolve()

    # -- what a format subclass describes -----------------------------------------------

    @classmethod
    def format_info(cls) -> LinearFormat:
        """This format's entry of :data:`nvfp4_ops.nn.backends.FORMATS`."""
        return FORMATS[cls.FORMAT]

    def _init_buffers(self, device) -> None:  # pragma: no cover - overridden
        """Register the format's buffers (zeros of the right shapes and dtypes)."""
        raise NotImplementedError

    def _weight_device(self) -> torch.device:
        return self._buffers[self._QUANT_BUFFERS[0]].device

    def dequantize_weight(self, dtype: torch.dtype) -> Tensor:  # pragma: no cover
        """The weight ``[N, K]`` dequantized into ``dtype`` (through ``torch.ops.nvfp4``)."""
        raise NotImplementedError

    def quantize_input(self, x2: Tensor) -> Tensor:  # pragma: no cover - overridden
        """The activation ``[M, K]`` as the scheme sees it: itself for weight-only schemes,
        else quantized and dequantized into its dtype."""
        raise NotImplementedError

    def _format_repr(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- scheme and backend -------------------------------------------------------------

    @property
    def weight_only(self) -> bool:
        return self.act_quant is None

    @property
    def scheme(self) -> str:
        """"W4A16" / "W4A4" (NVFP4), "W8A16" / "W8A8" (MXFP8), "W4A16" (MXFP4)."""
        return self.format_info().schemes[0 if self.weight_only else 1]

    def set_backend(self, backend: Optional[str] = None) -> "QuantizedLinear":
        """Ask for ``backend`` (None / "auto": choose) and resolve it for the weight's device.

        Raises the :func:`~nvfp4_ops.nn.select_linear_backend` errors at once (unlike
        building the layer on CPU with ``backend="scaled_mm"``, which defers the error to
        the forward so that the layer can be moved to the GPU first).
        """
        self.backend = check_backend_name(backend, "the backend= keyword")
        self._resolve()
        if self._backend_error is not None:
            raise RuntimeError(self._backend_error)
        return self

    def _resolve(self) -> None:
        """Choose the backend for the weight's device and prepare what it reads."""
        try:
            name, reasons = select_linear_backend(self.FORMAT, self._weight_device(),
                                                  backend=self.backend,
                                                  weight_only=self.weight_only)
        except RuntimeError as e:
            self.active_backend, self.backend_reasons, self._backend_error = None, {}, str(e)
            prepare(self, "")
            return
        self.active_backend, self.backend_reasons, self._backend_error = name, reasons, None
        prepare(self, name)

    def _prepare_scaled_mm(self) -> None:
        """Make the ``scaled_mm`` weight layout (done by the backend choice on sm_100+)."""
        prepare(self, "scaled_mm")

    def forward(self, x: Tensor) -> Tensor:
        if self.active_backend is None:
            raise RuntimeError(self._backend_error)
        return apply_linear(self.active_backend, self, x, self.bias)

    # -- moves, state dict, repr --------------------------------------------------------

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

    def extra_repr(self) -> str:
        be = self.active_backend if self.active_backend is not None else "unavailable"
        asked = "" if self.backend is None else f" (asked: {self.backend})"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, format={self._format_repr()}, "
                f"scheme={self.scheme} ({self._ACT_REPR[self.act_quant]}), "
                f"scale_method={self.scale_method}, backend={be}{asked}")

    # -- building -----------------------------------------------------------------------

    @classmethod
    def _from_buffers(cls, buffers: Dict[str, Tensor], in_features: int, out_features: int,
                      bias: Optional[Tensor], **kwargs) -> "QuantizedLinear":
        """A layer whose buffers are ``buffers`` (used as they are when contiguous and on
        the device of the first one), built without allocating its own."""
        dev = next(iter(buffers.values())).device
        layer = cls(in_features, out_features, bias=bias is not None, device="meta",
                    dtype=bias.dtype if bias is not None else torch.bfloat16, **kwargs)
        for name, t in buffers.items():
            setattr(layer, name, t.to(dev).contiguous())
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().to(dev), requires_grad=False)
        layer._resolve()
        return layer

    @classmethod
    def _from_float_quantized(cls, linear: nn.Linear, quantized: Sequence[Optional[Tensor]],
                              scale_method: str, **kwargs) -> "QuantizedLinear":
        """The end of ``from_float``: the layer over the ``quantized`` weight tensors, with
        ``linear``'s bias (kept in its dtype) and the ``scale_method`` noted."""
        bias = None if linear.bias is None else linear.bias.detach()
        layer = cls.from_quantized(*quantized, bias=bias, **kwargs)
        layer.scale_method = scale_method
        return layer

    @staticmethod
    def _calibration_2d(calibration: Union[Tensor, Sequence[Tensor]], k: int) -> Tensor:
        """Sample activations ``[..., K]`` (one tensor or several) as one ``[M, K]``."""
        ts = [calibration] if isinstance(calibration, Tensor) else list(calibration)
        if not ts:
            raise ValueError("calibration: no activations given")
        for t in ts:
            if t.shape[-1] != k:
                raise ValueError(f"calibration activations must have last dim in_features = "
                                 f"{k}, got shape {list(t.shape)}")
        return torch.cat([t.detach().reshape(-1, k) for t in ts])


class NVFP4Linear(QuantizedLinear):
    """A linear layer with an NVFP4 weight (W4A16 or W4A4).

    Parameters
    ----------
    in_features, out_features : int
        ``K`` (a multiple of 16) and ``N``.
    bias : bool
    act_quant : {None, "dynamic", "static"}
        None: W4A16 (weight-only). "dynamic": W4A4 with the activation's global scale
        computed per call. "static": W4A4 with the calibrated ``input_global_scale`` buffer.
    backend, device, dtype
        As for :class:`QuantizedLinear`.

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

    FORMAT = "NVFP4"
    _QUANT_BUFFERS = ("weight_packed", "weight_scale", "weight_global_scale",
                      "input_global_scale")
    _ACT_REPR = {None: "weight-only", "dynamic": "dynamic activation global scale",
                 "static": "static activation global scale"}

    def _init_buffers(self, device) -> None:
        N, K = self.out_features, self.in_features
        self.register_buffer("weight_packed", torch.zeros(
            N, K // 2, dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.zeros(
            N, K // 16, dtype=torch.uint8, device=device).view(_E4M3))
        self.register_buffer("weight_global_scale", torch.ones(1, dtype=torch.float32,
                                                               device=device))
        if self.act_quant == "static":
            self.register_buffer("input_global_scale", torch.ones(1, dtype=torch.float32,
                                                                  device=device))
        else:
            self.input_global_scale = None

    def _format_repr(self) -> str:
        return "NVFP4 (E2M1, E4M3 scale per 16, fp32 global scale)"

    def dequantize_weight(self, dtype: torch.dtype) -> Tensor:
        return _ops.dequantize(self.weight_packed, self.weight_scale, self.weight_global_scale,
                               dtype, False)

    def input_encode_scale(self, x2: Tensor) -> Tensor:
        """The activation's encode global scale: the static buffer, or ``2688 / amax(x2)``."""
        if self.act_quant == "static":
            return self.input_global_scale
        return _ops.global_scale(x2.detach())

    def quantize_input(self, x2: Tensor) -> Tensor:
        if self.act_quant is None:
            return x2
        return _ops.quant_dequant(x2, self.input_encode_scale(x2))

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
        scale_method : {"amax", "mse", "hessian", "4over6"}
            How each block's E4M3 scale is chosen (docs/spec.md).
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
        K = w.shape[1]
        calib = None if calibration is None else cls._calibration_2d(calibration, K)
        if scale_method == "hessian" and hessian is None:
            if calib is None:
                raise ValueError("NVFP4Linear.from_float: scale_method='hessian' needs hessian= "
                                 "or calibration= activations")
            hessian = hessian_blocks(calib.to(w.device))
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
        return cls._from_float_quantized(linear, (packed, scales, gs, input_global_scale),
                                         scale_method, act_quant=act_quant, backend=backend)

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
        buffers = {"weight_packed": packed, "weight_scale": scales, "weight_global_scale": gs}
        if act_quant == "static":
            buffers["input_global_scale"] = igs
        return cls._from_buffers(buffers, packed.shape[1] * 2, packed.shape[0], bias,
                                 act_quant=act_quant, backend=backend)


class MXLinear(QuantizedLinear):
    """The base of the MX layers (not built directly): :class:`MXFP8Linear`,
    :class:`MXFP4Linear`.

    An MX weight is ``ELEM`` elements (E4M3 or E2M1) with an E8M0 scale per block of 32
    along K, stored as ``(data, weight_scale)`` as :func:`nvfp4_ops.mx_quantize` returns
    them (the scales in the linear layout, uint8 bytes, bias 127). A subclass names the
    element type (``ELEM``), the data buffer (``_QUANT_BUFFERS[0]``) and its form.

    Parameters
    ----------
    in_features, out_features : int
        ``K`` (a multiple of 32) and ``N``.
    bias : bool
    act_quant : str or None
        None: weight-only. ``"dynamic"`` (MXFP8 only): each input quantized to the format
        (per-block scales).
    rounding : {"rceil", "floor"}
        The E8M0 scale rounding of the activations (the weight's is fixed when it is
        quantized; ``from_float`` uses the same mode).
    backend, device, dtype
        As for :class:`QuantizedLinear`.
    """

    #: The MX element type of the weight (and of quantized activations): "e4m3" or "e2m1".
    ELEM: str = ""
    #: The dtype of the data buffer and the elements per byte (2 for packed E2M1).
    _DATA_DTYPE: torch.dtype = torch.uint8
    _PER_BYTE: int = 1
    #: The data buffer's form, as error messages name it.
    _DATA_FORM: str = ""
    _ACT_QUANT_REFUSED = {
        "static": ("does not exist for MX formats (no per-tensor scale: activations are "
                   "scaled per block of 32); use act_quant='dynamic'"),
    }
    _ACT_REPR = {None: "weight-only", "dynamic": "dynamic per-block activation scales"}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 act_quant: Optional[str] = None, rounding: str = "rceil",
                 backend: Optional[str] = None, device=None,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        if rounding not in ("rceil", "floor"):
            raise ValueError(f"{type(self).__name__}: rounding must be 'rceil' or 'floor', "
                             f"got {rounding!r}")
        super().__init__(in_features, out_features, bias, act_quant=act_quant,
                         backend=backend, device=device, dtype=dtype)
        self.rounding = rounding

    def _init_buffers(self, device) -> None:
        N, K = self.out_features, self.in_features
        self.register_buffer(self._QUANT_BUFFERS[0], torch.zeros(
            N, K // self._PER_BYTE, dtype=torch.uint8, device=device).view(self._DATA_DTYPE))
        self.register_buffer("weight_scale", torch.full(
            (N, K // 32), 127, dtype=torch.uint8, device=device))

    @property
    def weight_data(self) -> Tensor:
        """The element buffer (``weight`` of MXFP8, ``weight_packed`` of MXFP4): the
        ``data`` of :func:`nvfp4_ops.mx_quantize` and of ``nvfp4.gemm_mx_w16``."""
        return self._buffers[self._QUANT_BUFFERS[0]]

    def _format_repr(self) -> str:
        return (f"{self.FORMAT} ({self.ELEM.upper()}, E8M0 scale per 32, "
                f"rounding={self.rounding})")

    def dequantize_weight(self, dtype: torch.dtype) -> Tensor:
        return _ops.mx_dequantize(self.weight_data, self.weight_scale, self.ELEM, dtype, False)

    def quantize_input(self, x2: Tensor) -> Tensor:
        if self.act_quant is None:
            return x2
        xd, xs = _ops.mx_quantize(x2, self.ELEM, self.rounding, False, -1, "amax")
        return _ops.mx_dequantize(xd, xs, self.ELEM, x2.dtype, False)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        *,
        rounding: str = "rceil",
        scale_method: str = "amax",
        act_quant: Optional[str] = None,
        backend: Optional[str] = None,
    ) -> "MXLinear":
        """Quantize ``linear``'s weight to the format once (``rounding`` "rceil" or "floor";
        ``scale_method`` "amax" or "mse"), on the weight's device. The bias is kept in its
        dtype."""
        data, scales = _ops.mx_quantize(linear.weight.detach(), cls.ELEM, rounding, False, -1,
                                        scale_method)
        return cls._from_float_quantized(linear, (data, scales), scale_method,
                                         act_quant=act_quant, rounding=rounding,
                                         backend=backend)

    @classmethod
    def _from_mx(cls, data: Tensor, weight_scale: Tensor, *, bias: Optional[Tensor],
                 act_quant: Optional[str], rounding: str,
                 backend: Optional[str]) -> "MXLinear":
        """``from_quantized``: the stored tensors checked and used as they are (uint8 bytes
        accepted for a float8 data buffer, float8_e8m0fnu for the scales)."""
        fn, name = f"{cls.__name__}.from_quantized", cls._QUANT_BUFFERS[0]
        if _E8M0 is not None and weight_scale.dtype == _E8M0:
            weight_scale = weight_scale.view(torch.uint8)
        if data.dtype == torch.uint8:
            data = data.view(cls._DATA_DTYPE)
        if data.dtype != cls._DATA_DTYPE or data.dim() != 2:
            raise ValueError(f"{fn}: {name} must be {cls._DATA_FORM}, got {data.dtype} "
                             f"{list(data.shape)}")
        N, K = data.shape[0], data.shape[1] * cls._PER_BYTE
        if weight_scale.dtype != torch.uint8 or tuple(weight_scale.shape) != (N, K // 32):
            raise ValueError(f"{fn}: weight_scale must be uint8 E8M0 [N, K/32] = "
                             f"[{N}, {K // 32}], got {weight_scale.dtype} "
                             f"{list(weight_scale.shape)}")
        return cls._from_buffers({name: data, "weight_scale": weight_scale}, K, N, bias,
                                 act_quant=act_quant, rounding=rounding, backend=backend)


class MXFP8Linear(MXLinear):
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
        As for :class:`QuantizedLinear`.

    Buffers
    -------
    weight : float8_e4m3fn ``[N, K]``
    weight_scale : uint8 E8M0 ``[N, K/32]`` (linear layout)
    """

    FORMAT = "MXFP8"
    ELEM = "e4m3"
    _DATA_DTYPE = _E4M3
    _PER_BYTE = 1
    _DATA_FORM = "float8_e4m3fn [N, K]"
    _QUANT_BUFFERS = ("weight", "weight_scale")

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
        """A layer over stored MXFP8 tensors: float8_e4m3fn ``[N, K]`` (uint8 bytes
        accepted) and E8M0 bytes ``[N, K/32]`` (uint8 or float8_e8m0fnu), used as they are
        (the compressed-tensors ``mxfp8-quantized`` names: ``weight``, ``weight_scale``)."""
        return cls._from_mx(weight, weight_scale, bias=bias, act_quant=act_quant,
                            rounding=rounding, backend=backend)


class MXFP4Linear(MXLinear):
    """A linear layer with an MXFP4 weight, gpt-oss style (W4A16: weight-only).

    E2M1 elements with an E8M0 scale per 32 (no per-tensor scale), 4.25 bits per weight.
    There is no W4A4 scheme (gpt-oss and the compressed-tensors ``mxfp4-pack-quantized``
    checkpoints quantize weights only), so ``act_quant`` is None and the layer runs on the
    ``fused`` (CUDA sm_80..sm_90, op ``nvfp4.gemm_mx_w16`` with ``elem="e2m1"``),
    ``dequant`` or ``reference`` backend.

    Parameters
    ----------
    in_features, out_features : int
        ``K`` (a multiple of 32) and ``N``.
    bias : bool
    act_quant : None
        Weight-only (the only scheme).
    rounding : {"rceil", "floor"}
        The E8M0 scale rounding :meth:`from_float` quantizes the weight with.
    backend, device, dtype
        As for :class:`QuantizedLinear`.

    Buffers (the state dict; names as compressed-tensors ``mxfp4-pack-quantized``, which
    ``python -m nvfp4_ops quantize --format mxfp4`` writes)
    --------------------------------------------------------------------------------------
    weight_packed : uint8 ``[N, K/2]``, two E2M1 codes per byte, low nibble first
    weight_scale : uint8 E8M0 ``[N, K/32]`` (linear layout, bias 127)

    Build with :meth:`from_float`, :meth:`from_quantized` (stored tensors; a gpt-oss
    ``blocks`` / ``scales`` pair of one 2-D weight through
    :func:`nvfp4_ops.formats.from_gpt_oss_mxfp4`:
    ``MXFP4Linear.from_quantized(*from_gpt_oss_mxfp4(d), bias=b)``), or construct and
    ``load_state_dict``.
    """

    FORMAT = "MXFP4"
    ELEM = "e2m1"
    _DATA_DTYPE = torch.uint8
    _PER_BYTE = 2
    _DATA_FORM = "uint8 [N, K/2] (two E2M1 codes per byte)"
    _QUANT_BUFFERS = ("weight_packed", "weight_scale")
    _ACT_QUANT_REFUSED = {
        "static": ("does not exist for MX formats (no per-tensor scale: activations are "
                   "scaled per block of 32), and MXFP4Linear is weight-only (W4A16): use "
                   "act_quant=None"),
        "dynamic": ("does not exist for MXFP4Linear: it is weight-only (W4A16, gpt-oss "
                    "style); use act_quant=None"),
    }

    @classmethod
    def from_quantized(
        cls,
        weight_packed: Tensor,
        weight_scale: Tensor,
        *,
        bias: Optional[Tensor] = None,
        act_quant: Optional[str] = None,
        rounding: str = "rceil",
        backend: Optional[str] = None,
    ) -> "MXFP4Linear":
        """A layer over stored MXFP4 tensors: packed E2M1 uint8 ``[N, K/2]`` and E8M0 bytes
        ``[N, K/32]`` (uint8 or float8_e8m0fnu), used as they are (no copy when
        contiguous)."""
        return cls._from_mx(weight_packed, weight_scale, bias=bias, act_quant=act_quant,
                            rounding=rounding, backend=backend)


#: The layer class of each format, by the ``fmt`` name of :func:`quantize_linears`.
LAYERS: Dict[str, type] = {cls.FORMAT.lower(): cls
                           for cls in (NVFP4Linear, MXFP8Linear, MXFP4Linear)}


def quantize_linears(
    model: nn.Module,
    fmt: str = "nvfp4",
    *,
    skip: Iterable[str] = (),
    **kwargs,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by :class:`NVFP4Linear`
    (``fmt="nvfp4"``), :class:`MXFP8Linear` (``"mxfp8"``) or :class:`MXFP4Linear`
    (``"mxfp4"``) built with ``from_float(**kwargs)``.

    Layers whose qualified name is in ``skip``, or whose ``in_features`` does not fit the
    format (16 / 32), are left as they are. Returns ``model``.
    """
    if fmt not in LAYERS:
        raise KeyError(f"quantize_linears: fmt must be one of {sorted(LAYERS)}, got {fmt!r}")
    cls = LAYERS[fmt]
    block = cls.format_info().block
    skip = set(skip)
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            full = f"{name}.{cname}" if name else cname
            if (type(child) is nn.Linear and full not in skip
                    and child.in_features % block == 0):
                setattr(mod, cname, cls.from_float(child, **kwargs))
    return model
