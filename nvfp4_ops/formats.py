"""Checkpoint layouts: compressed-tensors NVFP4, ModelOpt NVFP4 and gpt-oss MXFP4.

nvfp4_ops holds an NVFP4 weight as ``(packed, scales, global_scale)``:

* ``packed``: uint8 ``[N, K/2]``, element ``2i`` in the low nibble (docs/spec.md section 1);
* ``scales``: float8_e4m3fn ``[N, K/16]``, the linear layout (docs/spec.md section 4);
* ``global_scale``: fp32 ``[1]``, the ENCODE scale ``2688 / amax`` (docs/spec.md section 2);

plus, for W4A4 with a static activation scale, ``input_global_scale`` (fp32 ``[1]``, encode).
The element and block-scale bytes are the same in every layout below; only the names and
the form of the per-tensor scales differ:

=============================  =========================  ==================================
nvfp4_ops                      compressed-tensors         ModelOpt (``hf_quant_config``)
=============================  =========================  ==================================
packed (uint8 [N, K/2])        ``weight_packed``          ``weight``
scales (e4m3 [N, K/16])        ``weight_scale``           ``weight_scale``
global_scale (encode)          ``weight_global_scale``    ``weight_scale_2`` = 1 / gs
input_global_scale (encode)    ``input_global_scale``     ``input_scale`` = 1 / input gs
=============================  =========================  ==================================

Encode <-> decode: ModelOpt stores DECODE scales. The conversions compute ``RN(1 / s)``
as one fp32 division. ``RN(1 / RN(1 / gs))`` is not always ``gs``: for about one fp32 value
in six it is 1 ulp off (never more over the 2e5 global scales the tests sweep), so a
ModelOpt round trip returns the per-tensor scales within 1 ulp, not bit for bit. The packed
and block-scale bytes always round-trip exactly, and compressed-tensors (which stores the
encode form) round-trips every byte. A 1-ulp change of the weight's global scale moves each
dequantized weight by about 1 ulp of fp32 (``2^-23`` relative), far below bf16 resolution;
for a static W4A4 ``input_global_scale`` it can, very rarely, move an activation block scale
or code across a rounding boundary. Keep a checkpoint in the layout it came in when its exact
bits matter.

gpt-oss MXFP4 stores ``blocks`` (uint8 ``[..., N, K/32, 16]``: the 32 E2M1 codes of a
block packed two per byte, low nibble first, the same bytes as nvfp4_ops's packed
``[..., N, K/2]``) and ``scales`` (uint8 E8M0 ``[..., N, K/32]``, bias 127), so the
conversion is a reshape; the leading ``...`` is the expert dim ``E`` of gpt-oss's 3-D
experts (transformers dequantizes with ``ldexp(lut[code], scale - 127)``, which gives
exactly :func:`nvfp4_ops.mx_dequantize`'s values).

Who reads each layout, and the rules this module matches (read in transformers 5.24,
compressed-tensors 0.20.1 and the vLLM 0.33 wheel):

* compressed-tensors (transformers and vLLM). compressed-tensors'
  ``compressors/nvfp4/base.py`` ``decompress`` unpacks ``weight_packed`` to bfloat16 codes
  (``unpack_fp4_from_uint8``), casts ``weight_scale`` to that dtype and dequantizes with
  ``weight_global_scale`` as the ENCODE scale; ``compressors/mxfp4`` and ``mxfp8`` read
  ``weight_scale`` as E8M0 exponents and decompress to bfloat16 too. transformers
  (``quantizers/quantizer_compressed_tensors.py``) applies the config to ``Linear`` targets
  and decompresses at the first forward, so the decompressed weights are bfloat16 whatever
  the model's dtype (the quantizer therefore writes ``dtype: bfloat16`` into config.json).
  vLLM: ``layers/quantization/compressed_tensors/schemes/compressed_tensors_w4a4_nvfp4.py``
  registers ``weight_packed`` uint8 ``[N, K/2]``, ``weight_scale`` e4m3 ``[N, K/16]``,
  ``weight_global_scale`` and ``input_global_scale`` (fp32, one per fused shard) and, after
  loading, uses ``weight_global_scale.max()`` over the shards of a fused layer
  (``nvfp4_ops.cli.groups`` makes them equal).
* ModelOpt (vLLM and SGLang; transformers 5.24 has no ``modelopt`` quant method).
  ``layers/quantization/modelopt.py``: ``weight`` uint8, ``weight_scale`` e4m3,
  ``weight_scale_2`` and ``input_scale`` DECODE scales, ``weight_scale_2.max()`` and
  ``input_scale.max()`` over fused shards; a config whose groups have no
  ``input_activations`` is served as W4A16 NVFP4 (weights only).
* gpt-oss MXFP4 (transformers ``integrations/mxfp4.py``, vLLM ``models/gpt_oss.py``): MoE
  experts only, ``*_blocks`` / ``*_scales`` of 3-D ``[E, N, K/32, 16]`` / ``[E, N, K/32]``
  tensors; see :mod:`nvfp4_ops.cli.experts` for the names, the orientation and the config.

All functions check shapes and dtypes and raise ``ValueError`` naming the expected and
the actual value; they do not copy tensors that are already contiguous.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "to_compressed_tensors",
    "from_compressed_tensors",
    "to_modelopt",
    "from_modelopt",
    "to_gpt_oss_mxfp4",
    "from_gpt_oss_mxfp4",
    "encode_to_decode",
    "decode_to_encode",
]

_E4M3 = torch.float8_e4m3fn
_E8M0 = getattr(torch, "float8_e8m0fnu", None)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _check_nvfp4(fn: str, packed: Tensor, scales: Tensor, global_scale: Tensor,
                 input_global_scale: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    if packed.dtype != torch.uint8 or packed.dim() < 2:
        raise ValueError(
            f"{fn}: packed must be uint8 [N, K/2], got {packed.dtype} {_shape(packed)}")
    n, k = packed.shape[-2], packed.shape[-1] * 2
    if scales.dtype == torch.uint8:  # raw E4M3 bytes are accepted too
        scales = scales.view(_E4M3)
    if scales.dtype != _E4M3:
        raise ValueError(f"{fn}: scales must be float8_e4m3fn, got {scales.dtype}")
    want = tuple(packed.shape[:-2]) + (n, k // 16)
    if k % 16 or tuple(scales.shape) != want:
        raise ValueError(
            f"{fn}: scales must be linear [N, K/16] = [{', '.join(map(str, want))}] for packed "
            f"{_shape(packed)} (swizzled scales: unswizzle_scales first), got {_shape(scales)}"
        )
    for name, t in (("global_scale", global_scale), ("input_global_scale", input_global_scale)):
        if t is not None and (t.dtype != torch.float32 or t.numel() != 1):
            raise ValueError(
                f"{fn}: {name} must be float32 with 1 element, got {t.dtype} {_shape(t)}"
            )
    return packed, scales


def _scalar_f32(t: Tensor) -> Tensor:
    """A 1-element fp32 tensor as shape [1] (no copy when already so)."""
    return t.reshape(1)


def encode_to_decode(s: Tensor) -> Tensor:
    """``RN(1 / s)`` in fp32, one division (an encode global scale -> a decode scale)."""
    return torch.ones_like(s, dtype=torch.float32) / s.to(torch.float32)


def decode_to_encode(s: Tensor) -> Tensor:
    """``RN(1 / s)`` in fp32, one division (a decode scale -> an encode global scale)."""
    return torch.ones_like(s, dtype=torch.float32) / s.to(torch.float32)


def _nvfp4_dict(
    fn: str,
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    input_global_scale: Optional[Tensor],
    keys: Tuple[str, str, str, str],
    per_tensor: Callable[[Tensor], Tensor],
) -> Dict[str, Tensor]:
    """Checked NVFP4 tensors under a format's ``keys`` (packed, scales, global, input).

    ``per_tensor`` turns an encode global scale into what the format stores; the input
    scale's entry is written only when ``input_global_scale`` is given.
    """
    packed, scales = _check_nvfp4(fn, packed, scales, global_scale, input_global_scale)
    out = {
        keys[0]: packed.contiguous(),
        keys[1]: scales.contiguous(),
        keys[2]: per_tensor(global_scale),
    }
    if input_global_scale is not None:
        out[keys[3]] = per_tensor(input_global_scale)
    return out


def _get(fn: str, d: Dict[str, Tensor], key: str) -> Tensor:
    if key not in d:
        raise KeyError(f"{fn}: missing key {key!r}; keys present: {sorted(d)}")
    return d[key]


# --------------------------------------------------------------------------------------
# compressed-tensors NVFP4 (vLLM's CompressedTensorsW4A4Fp4 / W4A16Fp4)
# --------------------------------------------------------------------------------------


def to_compressed_tensors(
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    input_global_scale: Optional[Tensor] = None,
) -> Dict[str, Tensor]:
    """An NVFP4 weight in the compressed-tensors ``nvfp4-pack-quantized`` layout.

    Parameters
    ----------
    packed : Tensor
        uint8 ``[N, K/2]`` (as :func:`nvfp4_ops.quantize` returns).
    scales : Tensor
        float8_e4m3fn ``[N, K/16]``, linear (not swizzled). Raw uint8 bytes are accepted.
    global_scale : Tensor
        fp32, 1 element: the ENCODE scale ``2688 / amax`` (what nvfp4_ops uses).
    input_global_scale : Tensor, optional
        fp32, 1 element: the activation's encode scale (W4A4, static).

    Returns
    -------
    dict
        ``weight_packed`` (uint8 ``[N, K/2]``), ``weight_scale`` (float8_e4m3fn
        ``[N, K/16]``), ``weight_global_scale`` (fp32 ``[1]``, encode) and, when given,
        ``input_global_scale`` (fp32 ``[1]``, encode). Keys are per module: prefix them
        with the module name (``"model.layers.0.mlp.down_proj."``) for a state dict.
    """
    return _nvfp4_dict("to_compressed_tensors", packed, scales, global_scale, input_global_scale,
                       ("weight_packed", "weight_scale", "weight_global_scale",
                        "input_global_scale"), _scalar_f32)


def from_compressed_tensors(
    d: Dict[str, Tensor],
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Read a compressed-tensors NVFP4 module dict (the inverse of :func:`to_compressed_tensors`).

    Parameters
    ----------
    d : dict
        ``weight_packed``, ``weight_scale``, ``weight_global_scale`` and optionally
        ``input_global_scale`` (keys without the module prefix). Other keys are ignored.

    Returns
    -------
    (packed, scales, global_scale, input_global_scale or None)
        uint8 ``[N, K/2]``, float8_e4m3fn ``[N, K/16]``, fp32 ``[1]`` encode scales.
        Bytes are exactly those stored.
    """
    fn = "from_compressed_tensors"
    packed = _get(fn, d, "weight_packed")
    scales = _get(fn, d, "weight_scale")
    gs = _get(fn, d, "weight_global_scale")
    igs = d.get("input_global_scale")
    packed, scales = _check_nvfp4(fn, packed, scales, gs, igs)
    return packed, scales, _scalar_f32(gs), None if igs is None else _scalar_f32(igs)


# --------------------------------------------------------------------------------------
# ModelOpt NVFP4 (hf_quant_config quant_algo "NVFP4"; vLLM modelopt_fp4)
# --------------------------------------------------------------------------------------


def to_modelopt(
    packed: Tensor,
    scales: Tensor,
    global_scale: Tensor,
    input_global_scale: Optional[Tensor] = None,
) -> Dict[str, Tensor]:
    """An NVFP4 weight in the ModelOpt unified-checkpoint layout (decode scales).

    Parameters
    ----------
    packed, scales, global_scale, input_global_scale
        As for :func:`to_compressed_tensors` (``global_scale`` and ``input_global_scale``
        are nvfp4_ops's ENCODE scales).

    Returns
    -------
    dict
        ``weight`` (uint8 ``[N, K/2]``), ``weight_scale`` (float8_e4m3fn ``[N, K/16]``),
        ``weight_scale_2`` (fp32 0-d: the DECODE scale ``RN(1 / global_scale)``) and, when
        given, ``input_scale`` (fp32 0-d: ``RN(1 / input_global_scale)``). ModelOpt writes
        these per-tensor scales as scalars; loaders (this module's :func:`from_modelopt`,
        vLLM) accept any 1-element shape.
    """
    return _nvfp4_dict("to_modelopt", packed, scales, global_scale, input_global_scale,
                       ("weight", "weight_scale", "weight_scale_2", "input_scale"),
                       lambda s: encode_to_decode(s).reshape(()))


def from_modelopt(d: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Read a ModelOpt NVFP4 module dict, converting its decode scales to encode scales.

    Parameters
    ----------
    d : dict
        ``weight`` (uint8 ``[N, K/2]``), ``weight_scale`` (float8_e4m3fn ``[N, K/16]``),
        ``weight_scale_2`` (fp32, 1 element, decode) and optionally ``input_scale``
        (fp32, 1 element, decode). Other keys (e.g. ``pre_quant_scale`` of NVFP4_AWQ,
        which this does not apply) are ignored.

    Returns
    -------
    (packed, scales, global_scale, input_global_scale or None)
        As :func:`from_compressed_tensors`; ``global_scale = RN(1 / weight_scale_2)`` and
        ``input_global_scale = RN(1 / input_scale)`` in fp32. These may differ from the
        encode scales a checkpoint was made from by 1 ulp (see the module docstring).
    """
    fn = "from_modelopt"
    packed = _get(fn, d, "weight")
    scales = _get(fn, d, "weight_scale")
    ws2 = _get(fn, d, "weight_scale_2")
    inp = d.get("input_scale")
    for name, t in (("weight_scale_2", ws2), ("input_scale", inp)):
        if t is not None and (not t.is_floating_point() or t.numel() != 1):
            raise ValueError(f"{fn}: {name} must be a 1-element float tensor, got "
                             f"{t.dtype} {_shape(t)}")
    gs = decode_to_encode(ws2).reshape(1)
    igs = None if inp is None else decode_to_encode(inp).reshape(1)
    packed, scales = _check_nvfp4(fn, packed, scales, gs, igs)
    return packed, scales, gs, igs


# --------------------------------------------------------------------------------------
# gpt-oss MXFP4 (openai/gpt-oss *.blocks / *.scales)
# --------------------------------------------------------------------------------------


def to_gpt_oss_mxfp4(data: Tensor, scales: Tensor) -> Dict[str, Tensor]:
    """MXFP4 (``mx_quantize(x, "e2m1")``) in gpt-oss's checkpoint layout.

    Parameters
    ----------
    data : Tensor
        uint8 ``[..., N, K/2]``, two E2M1 codes per byte (low nibble first).
    scales : Tensor
        E8M0 bytes ``[..., N, K/32]``, uint8 or float8_e8m0fnu, linear (not swizzled).

    Returns
    -------
    dict
        ``blocks``: uint8 ``[..., N, K/32, 16]`` (a view of ``data`` reshaped: the same
        bytes); ``scales``: uint8 ``[..., N, K/32]`` (E8M0, bias 127, as gpt-oss stores).
    """
    fn = "to_gpt_oss_mxfp4"
    if data.dtype != torch.uint8 or data.dim() < 2:
        raise ValueError(f"{fn}: data must be packed uint8 [N, K/2] (MXFP4), got "
                         f"{data.dtype} {_shape(data)}")
    if _E8M0 is not None and scales.dtype == _E8M0:
        scales = scales.view(torch.uint8)
    k2 = data.shape[-1]
    want = tuple(data.shape[:-1]) + (k2 // 16,)
    if scales.dtype != torch.uint8 or k2 % 16 or tuple(scales.shape) != want:
        raise ValueError(
            f"{fn}: scales must be uint8 E8M0 [N, K/32] = [{', '.join(map(str, want))}] for "
            f"data {_shape(data)} (K a multiple of 32), got {scales.dtype} {_shape(scales)}"
        )
    blocks = data.contiguous().reshape(*data.shape[:-1], k2 // 16, 16)
    return {"blocks": blocks, "scales": scales.contiguous()}


def from_gpt_oss_mxfp4(d: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
    """Read gpt-oss MXFP4 ``{"blocks", "scales"}`` (the inverse of :func:`to_gpt_oss_mxfp4`).

    Parameters
    ----------
    d : dict
        ``blocks``: uint8 ``[..., N, K/32, 16]``; ``scales``: uint8 ``[..., N, K/32]``.

    Returns
    -------
    (data, scales)
        uint8 ``[..., N, K/2]`` and uint8 E8M0 ``[..., N, K/32]``, ready for
        :func:`nvfp4_ops.mx_dequantize` ``(data, scales, "e2m1", ...)``.
    """
    fn = "from_gpt_oss_mxfp4"
    blocks = _get(fn, d, "blocks")
    scales = _get(fn, d, "scales")
    if _E8M0 is not None and scales.dtype == _E8M0:
        scales = scales.view(torch.uint8)
    if blocks.dtype != torch.uint8 or blocks.dim() < 3 or blocks.shape[-1] != 16:
        raise ValueError(f"{fn}: blocks must be uint8 [N, K/32, 16], got {blocks.dtype} "
                         f"{_shape(blocks)}")
    if scales.dtype != torch.uint8 or tuple(scales.shape) != tuple(blocks.shape[:-1]):
        raise ValueError(f"{fn}: scales must be uint8 [N, K/32] = "
                         f"[{', '.join(map(str, blocks.shape[:-1]))}], got {scales.dtype} "
                         f"{_shape(scales)}")
    data = blocks.contiguous().reshape(*blocks.shape[:-2], blocks.shape[-2] * 16)
    return data, scales.contiguous()
