"""Fused groups: the linear layers a serving engine runs as ONE GEMM, and their shared scale.

Why
---
vLLM (and SGLang) load q/k/v into one ``qkv_proj`` and gate/up into one ``gate_up_proj``
(``packed_modules_mapping`` of each model class), and an NVFP4 GEMM has ONE per-tensor
weight scale. The loader rules this module matches (vLLM 0.33, read from its wheel):

* compressed-tensors NVFP4, ``vllm/model_executor/layers/quantization/compressed_tensors/
  schemes/compressed_tensors_w4a4_nvfp4.py`` ``process_weights_after_loading``: the shards'
  ``weight_global_scale`` (ENCODE scales) are stacked; when they are not all equal it warns
  "Consider using a checkpoint with a shared global NVFP4 scale for fused layers" and uses
  ``weight_global_scale.max()`` for every shard (so the shards with a larger amax, whose
  block scales were computed with a smaller global scale, dequantize wrong and may saturate);
  the same for ``input_global_scale``.
* ModelOpt NVFP4, ``.../quantization/modelopt.py`` (NVFP4 linear scheme):
  ``weight_scale_2.max()`` (DECODE scales) and ``input_scale.max()`` over the shards.
* MoE experts: ``.../compressed_tensors_moe/compressed_tensors_moe_w4a4_nvfp4.py`` and the
  ModelOpt MoE method use ``w13_weight_global_scale[:, 0]`` / ``w13_weight_scale_2[:, 0]``
  (the w1 = gate scale) for the fused w1/w3 of each expert and warn when w3's differs.

With one global scale per group (``2688 / max(amax)`` over the members, the docs/spec.md rule
including its tiny-amax rule) and every block scale of every member computed with it, any of
these rules gives exactly the per-layer dequantization. llm-compressor writes its checkpoints
so for the same reason.

The fused groups (``packed_modules_mapping`` in ``vllm/model_executor/models/``):

=====================================  ==================================================
family (vLLM model file)               fused members (leaf module names, same parent)
=====================================  ==================================================
Llama, Mistral, Qwen2/3, Gemma,        ``q_proj, k_proj, v_proj``; ``gate_proj, up_proj``
Mixtral attention, GptOss attention    (``llama.py``, ``gemma.py``, ``mixtral.py``,
(llama.py, gemma.py, qwen2.py, ...)    ``gpt_oss.py``)
Qwen2/3-MoE, DeepSeek-V2/3 experts     ``experts.<e>.gate_proj, experts.<e>.up_proj`` (w13
and shared experts                     of each expert; ``deepseek_v2.py`` ``gate_up_proj``)
DeepSeek-V2/3 MLA                      ``q_a_proj, kv_a_proj_with_mqa`` (``fused_qkv_a_proj``)
Mixtral experts                        ``experts.<e>.w1, experts.<e>.w3`` (w13)
BERT / RoBERTa (bert.py)               ``query, key, value``
Phi-3 (phi3.py)                        ``qkv_proj`` and ``gate_up_proj`` are fused already
                                       (one tensor each: nothing to share)
gpt-oss 3-D experts                    ``experts.gate_up_proj`` is one tensor per expert
=====================================  ==================================================

The default rule is :data:`DEFAULT_GROUPS`; ``--fused-groups`` overrides it with
``"q_proj,k_proj,v_proj;gate_proj,up_proj"`` (groups separated by ``;``, members by ``,``),
``"none"`` (every tensor its own scale) or ``"auto"`` (the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_GROUPS",
    "FusedGroup",
    "parse_groups",
    "find_groups",
    "shared_global_scale",
    "group_global_scales",
    "group_input_scales",
]

#: leaf names fused by the serving engines (see the module docstring)
DEFAULT_GROUPS: Tuple[Tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj"),
    ("gate_proj", "up_proj"),
    ("query", "key", "value"),
    ("w1", "w3"),
    ("q_a_proj", "kv_a_proj_with_mqa"),
)

#: the largest finite fp32 (the tiny-amax rule of the contract)
FLT_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class FusedGroup:
    """One fused group: ``members`` are weight tensor names, in the rule's order."""

    parent: str
    members: Tuple[str, ...]

    @property
    def label(self) -> str:
        """``parent.{a,b,c}`` as the report lists it."""
        leaves = ",".join(_split(m)[1] for m in self.members)
        return f"{self.parent}.{{{leaves}}}" if self.parent else f"{{{leaves}}}"


def parse_groups(spec: Optional[str]) -> Tuple[Tuple[str, ...], ...]:
    """Parse a ``--fused-groups`` value into a tuple of leaf-name groups.

    ``None``, ``""`` and ``"auto"`` give :data:`DEFAULT_GROUPS`; ``"none"`` gives ``()``;
    otherwise ``"a,b,c;d,e"``. Raises ``ValueError`` naming the bad part: an empty member,
    a group of fewer than 2 members, or a leaf name in two groups.
    """
    if spec is None or spec.strip().lower() in ("", "auto"):
        return DEFAULT_GROUPS
    if spec.strip().lower() == "none":
        return ()
    groups: List[Tuple[str, ...]] = []
    seen: Dict[str, str] = {}
    for part in spec.split(";"):
        members = tuple(m.strip() for m in part.split(","))
        if any(not m or "." in m for m in members):
            raise ValueError(f"fused groups {spec!r}: group {part!r} has an empty member or a "
                             "dotted one; expected leaf module names like "
                             "'q_proj,k_proj,v_proj;gate_proj,up_proj', 'none' or 'auto'")
        if len(members) < 2:
            raise ValueError(f"fused groups {spec!r}: group {part!r} has {len(members)} member; "
                             "expected at least 2")
        for m in members:
            if m in seen:
                raise ValueError(f"fused groups {spec!r}: {m!r} is in two groups "
                                 f"({seen[m]!r} and {part!r}); expected each name once")
            seen[m] = part
        groups.append(members)
    return tuple(groups)


def _split(weight_name: str) -> Tuple[str, str]:
    """``model.layers.0.self_attn.q_proj.weight`` -> (``model.layers.0.self_attn``, ``q_proj``)."""
    module = weight_name[:-len(".weight")] if weight_name.endswith(".weight") else weight_name
    parent, _, leaf = module.rpartition(".")
    return parent, leaf


def find_groups(names: Iterable[str],
                rules: Sequence[Sequence[str]] = DEFAULT_GROUPS) -> List[FusedGroup]:
    """The fused groups among ``names`` (the weight tensors that will be quantized).

    A group is every ``parent.<leaf>.weight`` of ``names`` whose leaf is in one rule, under
    the same parent, when at least two members are present (an excluded member is left out
    of the group: its float weight needs no scale). Groups come in the order of their first
    member in ``names``; members in the rule's order.
    """
    names = list(names)
    by_parent: Dict[Tuple[str, int], Dict[str, str]] = {}
    order: Dict[Tuple[str, int], int] = {}
    leaf_rule = {leaf: i for i, rule in enumerate(rules) for leaf in rule}
    for pos, n in enumerate(names):
        parent, leaf = _split(n)
        if leaf in leaf_rule:
            key = (parent, leaf_rule[leaf])
            by_parent.setdefault(key, {})[leaf] = n
            order.setdefault(key, pos)
    out = []
    for key in sorted(by_parent, key=order.__getitem__):
        found = by_parent[key]
        if len(found) >= 2:
            members = tuple(found[leaf] for leaf in rules[key[1]] if leaf in found)
            out.append(FusedGroup(key[0], members))
    return out


def shared_global_scale(amaxes: Sequence[Tensor]) -> Tensor:
    """The NVFP4 ENCODE global scale ``RN(2688 / max(amax))`` shared by a group.

    ``amaxes`` are the members' ``amax(|w|)`` (any float dtype, 1 element each). The result
    follows the contract (docs/spec.md section 2) for the group's max amax: 0 -> 1, inf -> 0, NaN ->
    NaN, and a finite amax > 0 whose ``2688 / amax`` overflows -> the largest finite fp32.
    Returns fp32 ``[1]`` on the device of the first amax.
    """
    from ..reference import global_scale

    if not amaxes:
        raise ValueError("shared_global_scale: expected at least 1 amax, got 0")
    a = torch.cat([x.detach().reshape(-1).to(torch.float32) for x in amaxes])
    if a.numel() != len(amaxes):
        raise ValueError(f"shared_global_scale: expected 1 element per amax, got shapes "
                         f"{[tuple(x.shape) for x in amaxes]}")
    gs = global_scale(a)
    # the tiny-amax rule (idempotent where global_scale applies it already)
    amax = a.abs().amax().reshape(1)
    tiny = torch.isinf(gs) & torch.isfinite(amax) & (amax > 0)
    return torch.where(tiny, torch.full_like(gs, FLT_MAX), gs)


def group_global_scales(groups: Sequence[FusedGroup],
                        amax_of: Callable[[str], Tensor]) -> Tuple[Dict[str, Tensor], List[dict]]:
    """The shared global scale of every member of ``groups``.

    ``amax_of(name)`` gives a member's ``amax(|w|)`` (the CLI reads the weight once for it).
    A member whose amax is not finite (NaN / inf: the quantizer skips such a weight) leaves
    its group; a group left with fewer than 2 members shares nothing. Returns
    ``({member: fp32 [1] scale}, [{"group", "members", "global_scale"}, ...])`` (the second
    for the report).
    """
    scales: Dict[str, Tensor] = {}
    rows: List[dict] = []
    for g in groups:
        amax = {m: amax_of(m).detach().reshape(1).float() for m in g.members}
        members = [m for m in g.members if bool(torch.isfinite(amax[m]).all())]
        if len(members) < 2:
            continue
        gs = shared_global_scale([amax[m] for m in members])
        scales.update({m: gs for m in members})
        rows.append({"group": g.label, "members": members, "global_scale": float(gs)})
    return scales, rows


def group_input_scales(groups: Sequence[FusedGroup],
                       scale_of: Callable[[str], Optional[Tensor]]) -> Dict[str, Tensor]:
    """One static activation scale per fused group (W4A4): every member gets the smallest
    of the members' ENCODE ``input_global_scale`` (``scale_of(name)``, None when a member has
    no calibration inputs: it is left out), i.e. ``2688 / max(input amax)``. vLLM takes
    ``input_global_scale.max()`` (compressed-tensors, encode) or ``input_scale.max()``
    (ModelOpt, decode) over the shards; with equal scales both rules give this one.
    (q/k/v and gate/up read the same input, so their scales are equal already when captured
    together; captured separately, they may differ.) A member whose inputs are all zero has
    scale 1 by the contract and takes part like any other."""
    out: Dict[str, Tensor] = {}
    for g in groups:
        got = {m: scale_of(m) for m in g.members}
        have = [m for m in g.members if got[m] is not None]
        if len(have) < 2:
            continue
        shared = torch.stack([got[m].reshape(()).float() for m in have]).amin().reshape(1)
        out.update({m: shared for m in have})
    return out
