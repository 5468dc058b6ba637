"""MoE experts: 3-D ``[E, ...]`` expert parameters quantized per expert, and the gpt-oss layout.

Two ways a checkpoint stores MoE experts (transformers 5.24, as ``save_pretrained`` writes):

* per-expert 2-D modules: Mixtral ``block_sparse_moe.experts.<e>.w1/w2/w3.weight``,
  Qwen2/3-MoE and DeepSeek ``mlp.experts.<e>.gate_proj/up_proj/down_proj.weight``. They are
  ordinary linear weights: each is quantized on its own, with its own per-tensor scale, and
  gate/up (w1/w3) of one expert share one NVFP4 global scale (:mod:`nvfp4_ops.cli.groups`),
  which is what vLLM's MoE loaders assume: ``compressed_tensors_moe_w4a4_nvfp4.py`` and
  ``modelopt.py`` keep ``w13_weight_global_scale[:, 0]`` / ``w13_weight_scale_2[:, 0]`` (one
  scale per expert for the fused w13, w1's) and warn when w3's differs. compressed-tensors
  (``weight_packed`` / ``weight_scale`` / ``weight_global_scale`` per expert module) and
  ModelOpt (``weight`` / ``weight_scale`` / ``weight_scale_2``) use the same names as any
  linear; MXFP8 / MXFP4 have no per-tensor scale (E8M0 block scales only).
* 3-D parameters (gpt-oss, Llama 4): ``mlp.experts.gate_up_proj`` ``[E, H, 2I]`` and
  ``mlp.experts.down_proj`` ``[E, I, H]`` with biases ``*_bias``; the forward is
  ``x @ W[e]`` (``transformers/models/gpt_oss/modeling_gpt_oss.py`` ``GptOssExperts``), so the
  reduction dim K comes FIRST: the on-disk layout is ``[E, K, N]``. gate and up are
  INTERLEAVED along N (``gate_up[..., ::2]``, ``gate_up[..., 1::2]``), and stay so: they are
  one tensor, quantized per expert over its K rows.

The gpt-oss MXFP4 layout (what the openai/gpt-oss checkpoints are):

* only the experts are MXFP4: ``<P>.gate_up_proj_blocks`` uint8 ``[E, 2I, H/32, 16]``,
  ``<P>.gate_up_proj_scales`` uint8 E8M0 ``[E, 2I, H/32]``, ``<P>.down_proj_blocks``
  ``[E, H, I/32, 16]``, ``<P>.down_proj_scales`` ``[E, H, I/32]``: each expert's weight
  TRANSPOSED to ``[N, K]`` (out, in) and quantized in blocks of 32 along K (= the input dim),
  two E2M1 codes a byte, low nibble first. ``*_bias``, attention, router, embeddings and
  ``lm_head`` stay in float.
  Read by transformers (``transformers/integrations/mxfp4.py``: ``Mxfp4GptOssExperts`` holds
  ``[E, 2I, H/2]`` / ``[E, H, I/2]`` uint8; ``_convert_moe_packed_tensors`` dequantizes
  ``blocks[..., G, 16]`` with ``ldexp(lut[code], scale - 127)`` and returns
  ``out.transpose(1, 2)``, back to ``[E, K, N]``, in the dtype of the model's parameter; on a
  machine without triton + kernels, e.g. CPU, ``quantizer_mxfp4.py`` sets ``dequantize=True``
  and the model runs dequantized) and by vLLM (``vllm/model_executor/models/gpt_oss.py``
  ``_load_weights_mxfp4``: ``.gate_up_proj_blocks`` -> ``w13_weight`` viewed as
  ``[E, 2I, H/2]``, ``.down_proj_blocks`` -> ``w2_weight`` ``[E, H, I/2]``, scales ->
  ``w13_weight_scale`` / ``w2_weight_scale``; tensor parallelism slices rows
  ``2*start:2*end`` of w13, which keeps the interleaved gate/up pairs together).
* ``quantization_config`` = ``{"quant_method": "mxfp4", "modules_to_not_convert": [...]}``
  with gpt-oss's list (``model.layers.*.self_attn``, ``model.layers.*.mlp.router``,
  ``model.embed_tokens``, ``lm_head``) plus the experts left in float.

transformers 5.24 does not load a compressed-tensors checkpoint with per-expert modules
correctly (``integrations/compressed_tensors.py`` ``CompressedTensorsDequantize``, the path
that merges ``experts.<e>.*`` into the 3-D parameters): its NVFP4 expert path builds a module
without ``weight_global_scale`` (every expert comes back scaled by its global scale), rebuilds
K as ``packed columns * (32 // num_bits)`` (4x too large for 4-bit codes packed two per byte)
unless ``weight_shape`` is stored, multiplies MXFP8 weights by the raw E8M0 bytes, and fails
("Concatenate ... Ckpt contains: 0") when the experts are left in float. The quantizer says so
in its report; vLLM and SGLang read these checkpoints.

A model without 3-D expert parameters has nothing this layout can hold:
:func:`require_experts` refuses it with the reason and the alternative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "ExpertParam",
    "find_expert_params",
    "is_k_first",
    "is_moe_router",
    "per_expert_modules",
    "require_experts",
    "to_nk",
    "from_nk",
    "quantize_experts",
    "gpt_oss_tensors",
    "gpt_oss_quantization_config",
    "GPT_OSS_NOT_CONVERT",
]

#: 3-D expert parameters the gpt-oss layout holds (leaf names under ``.experts``)
EXPERT_LEAVES = ("gate_up_proj", "down_proj")
#: model types whose 3-D experts are stored K-first ``[E, K, N]`` (``x @ W[e]``)
_K_FIRST_TYPES = ("gpt_oss", "llama4", "llama4_text")
#: gpt-oss's ``modules_to_not_convert`` (openai/gpt-oss-20b config.json)
GPT_OSS_NOT_CONVERT = ("model.layers.*.self_attn", "model.layers.*.mlp.router",
                       "model.embed_tokens", "lm_head")
_FLOATS = ("F32", "F16", "BF16", "F64")
#: parents of a MoE router named ``gate``
_MOE_BLOCKS = ("mlp", "block_sparse_moe", "feed_forward", "moe")


@dataclass(frozen=True)
class ExpertParam:
    """A 3-D expert parameter: ``name`` (no ``.weight``), on-disk ``shape`` and whether K
    (the reduction dim) comes first (``[E, K, N]``, gpt-oss) or last (``[E, N, K]``)."""

    name: str
    shape: Tuple[int, int, int]
    k_first: bool

    @property
    def nk(self) -> Tuple[int, int, int]:
        """``(E, N, K)``."""
        e, a, b = self.shape
        return (e, b, a) if self.k_first else (e, a, b)


def find_expert_params(tensors: Iterable[Tuple[str, Sequence[int], str]],
                       config: Optional[dict]) -> List[ExpertParam]:
    """The 3-D expert weights among ``tensors`` (``(name, shape, safetensors dtype code)``).

    A 3-D float tensor named ``*.experts.gate_up_proj`` or ``*.experts.down_proj``.
    Orientation: K-first for the model types whose forward is ``x @ W[e]`` (gpt-oss,
    Llama 4: ``config["model_type"]``), ``[E, N, K]`` otherwise.
    """
    k_first = is_k_first(config)
    out = []
    for name, shape, dtype in tensors:
        parent, _, leaf = name.rpartition(".")
        if (len(shape) == 3 and dtype in _FLOATS and leaf in EXPERT_LEAVES
                and parent.rpartition(".")[2] == "experts"):
            out.append(ExpertParam(name, tuple(int(s) for s in shape), k_first))
    return out


def is_k_first(config: Optional[dict]) -> bool:
    """Whether the model's 3-D experts are stored ``[E, K, N]`` (``config["model_type"]``,
    or its ``text_config``'s, is gpt-oss or Llama 4)."""
    mt = (config or {}).get("model_type", "")
    text = (config or {}).get("text_config") or {}
    return mt in _K_FIRST_TYPES or text.get("model_type", "") in _K_FIRST_TYPES


def is_moe_router(name: str) -> bool:
    """Whether weight ``name`` is a MoE router: ``mlp.gate`` / ``block_sparse_moe.gate`` /
    ``feed_forward.gate`` (Mixtral, Qwen-MoE, DeepSeek), ``*.router`` (gpt-oss) or Qwen's
    ``shared_expert_gate``. transformers 5 loads these into router modules that are not
    ``nn.Linear`` (a quantized router comes back missing and randomly initialised)."""
    module = name[:-len(".weight")] if name.endswith(".weight") else name
    parent, _, leaf = module.rpartition(".")
    return (leaf in ("router", "shared_expert_gate")
            or (leaf == "gate" and parent.rpartition(".")[2] in _MOE_BLOCKS))


def per_expert_modules(names: Iterable[str]) -> List[str]:
    """The weights of per-expert 2-D modules (``...experts.<e>.<proj>.weight``)."""
    return [n for n in names if ".experts." in n
            and n.split(".experts.", 1)[1].split(".", 1)[0].isdigit()]


def require_experts(params: Sequence[ExpertParam], label: str) -> None:
    """Refuse the gpt-oss layout for a model without 3-D expert parameters (``ValueError``)."""
    if not params:
        raise ValueError(
            f"--layout gpt-oss holds only MoE experts stored as 3-D parameters "
            f"(mlp.experts.gate_up_proj / down_proj, as gpt-oss has), and {label} has none; "
            "use --layout compressed-tensors for MXFP4 of its linear layers")


def to_nk(w: Tensor, k_first: bool) -> Tensor:
    """The ``[E, N, K]`` view of an on-disk 3-D expert tensor (no copy)."""
    if w.dim() != 3:
        raise ValueError(f"expert weight: expected 3 dims [E, N, K], got shape {list(w.shape)}")
    return w.transpose(1, 2) if k_first else w


def from_nk(w: Tensor, k_first: bool) -> Tensor:
    """Inverse of :func:`to_nk` (``[E, N, K]`` -> on-disk orientation)."""
    return to_nk(w, k_first)


def _quantize_2d(fmt: str, scale_method: str) -> Callable[[Tensor], Dict[str, Tensor]]:
    """The default per-expert quantizer: nvfp4_ops's ops on one ``[N, K]`` matrix."""
    import nvfp4_ops

    if fmt not in ("nvfp4", "mxfp8", "mxfp4"):
        raise ValueError(f"quantize_experts: format must be nvfp4, mxfp8 or mxfp4, got {fmt!r}")

    def run(x: Tensor) -> Dict[str, Tensor]:
        if fmt == "nvfp4":
            gs = nvfp4_ops.global_scale(x)
            q, s = nvfp4_ops.quantize(x, gs, scale_method=scale_method)
            return {"data": q, "scales": s, "global_scale": gs}
        q, s = nvfp4_ops.mx_quantize(x, "e4m3" if fmt == "mxfp8" else "e2m1",
                                     scale_method=scale_method)
        return {"data": q, "scales": s}

    return run


def quantize_experts(w: Tensor, fmt: str, scale_method: str = "amax",
                     quantize_2d: Optional[Callable[[Tensor], Dict[str, Tensor]]] = None
                     ) -> Dict[str, Tensor]:
    """Quantize ``[E, N, K]`` expert weights, one expert at a time (blocks along K).

    Returns ``data`` (``[E, N, K/2]`` uint8 for nvfp4 / mxfp4, ``[E, N, K]`` e4m3 for mxfp8),
    ``scales`` (``[E, N, K/16]`` e4m3 or ``[E, N, K/32]`` uint8 E8M0) and, for nvfp4,
    ``global_scale`` fp32 ``[E]`` (each expert its own ``2688 / amax``: gate and up of one
    fused expert tensor share it, as vLLM's w13 rule wants). ``quantize_2d`` (one contiguous
    ``[N, K]`` expert -> ``{"data", "scales"[, "global_scale"]}``) replaces nvfp4_ops's ops
    with ``fmt`` / ``scale_method`` (the CLI passes its chunked quantizer that also measures
    the errors).
    """
    if w.dim() != 3:
        raise ValueError(f"quantize_experts: expected [E, N, K], got shape {list(w.shape)}")
    run = quantize_2d or _quantize_2d(fmt, scale_method)
    parts = [run(w[e].contiguous()) for e in range(w.shape[0])]
    out = {"data": torch.stack([p["data"] for p in parts]),
           "scales": torch.stack([p["scales"] for p in parts])}
    if "global_scale" in parts[0]:
        out["global_scale"] = torch.cat([p["global_scale"].reshape(1) for p in parts])
    return out


def gpt_oss_tensors(name: str, data: Tensor, scales: Tensor) -> Dict[str, Tensor]:
    """The gpt-oss tensors of one 3-D expert parameter ``name`` from its per-expert MXFP4
    ``data`` (uint8 ``[E, N, K/2]``) and ``scales`` (E8M0 ``[E, N, K/32]``):
    ``name + "_blocks"`` ``[E, N, K/32, 16]`` and ``name + "_scales"`` ``[E, N, K/32]``."""
    from .. import formats

    if data.dim() != 3:
        raise ValueError(f"gpt_oss_tensors: data must be [E, N, K/2], got {list(data.shape)}")
    g = formats.to_gpt_oss_mxfp4(data, scales)
    return {f"{name}_blocks": g["blocks"], f"{name}_scales": g["scales"]}


def gpt_oss_quantization_config(not_converted: Sequence[str] = ()) -> dict:
    """``quantization_config`` as gpt-oss ships it. ``not_converted``: modules or 3-D expert
    parameters also left in float (e.g. by ``--exclude``); an expert parameter is listed by
    its experts module (``...mlp.experts``: transformers converts or keeps a whole one)."""
    extra = []
    for n in not_converted:
        parent, _, leaf = n.rpartition(".")
        m = parent if leaf in EXPERT_LEAVES and parent.endswith("experts") else n
        if m not in GPT_OSS_NOT_CONVERT and m not in extra:
            extra.append(m)
    return {"quant_method": "mxfp4",
            "modules_to_not_convert": list(GPT_OSS_NOT_CONVERT) + sorted(extra)}
