"""Which tensors are quantized: the name and shape rules, and ``--include`` /
``--exclude`` patterns."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Sequence

from .common import BLOCK, CliError
from .discover import TensorInfo
from .experts import is_moe_router


_EMBED_WORDS = ("embed", "wte", "wpe", "position", "token_type", "rotary", "pos_emb")
_NORM_WORDS = ("norm", "ln_", ".ln", "layernorm")
#: linear layers left in float unless --include names them (as llm-compressor and ModelOpt do)
DEFAULT_EXCLUDE = ("lm_head",)
FLOAT_CODES = ("F32", "F16", "BF16", "F64")


def check_patterns(option: str, patterns: Sequence[str]) -> None:
    """Refuse a ``re:`` pattern that is not a valid regular expression, naming it."""
    for p in patterns:
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                raise CliError(f"{option} {p!r}: not a valid regular expression ({e})") from None


def _pattern_hits(pattern: str, name: str) -> bool:
    """``re:REGEX`` (searched), a glob (``*``, ``?``, ``[``) over the module or tensor name,
    or a plain dotted name that matches whole components (``lm_head``, ``layer.0``)."""
    module = name[: -len(".weight")] if name.endswith(".weight") else name
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return bool(rx.search(module) or rx.search(name))
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module, pattern) or fnmatch.fnmatchcase(name, pattern)
    for s in (module, name):
        if s == pattern or s.startswith(pattern + ".") or s.endswith("." + pattern) \
                or ("." + pattern + ".") in s:
            return True
    return False


@dataclass
class Decision:
    """What happens to one tensor, and why."""

    action: str     # "quantize", "keep" (a tensor that is not a linear weight), "exclude", "skip"
    reason: str = ""


def classify(t: TensorInfo, fmt: str, include: Sequence[str], exclude: Sequence[str]) -> Decision:
    """Whether ``t`` is quantized: names and shapes decide.

    A linear weight is a 2-D float tensor named ``*.weight`` (or ``weight``) that is not an
    embedding or a norm. Embeddings, norms, biases and other tensors are kept as they are;
    linear weights can be excluded by pattern (``lm_head`` by default); a linear weight
    whose K is not a multiple of the block is skipped with the reason.
    """
    low = t.name.lower()
    if t.dtype not in FLOAT_CODES:
        return Decision("keep", f"{t.dtype} tensor")
    if len(t.shape) != 2:
        return Decision("keep", f"{len(t.shape)}-D tensor")
    if not (t.name == "weight" or t.name.endswith(".weight")):
        return Decision("keep", "not a weight")
    if any(w in low for w in _EMBED_WORDS):
        return Decision("keep", "embedding")
    if any(w in low for w in _NORM_WORDS):
        return Decision("keep", "norm")
    if is_moe_router(t.name):
        return Decision("exclude", "MoE router (stays float: transformers' routers are not Linear "
                                "modules, and llm-compressor, ModelOpt and gpt-oss keep it)")
    inc = [p for p in include if _pattern_hits(p, t.name)]
    if include and not inc:
        return Decision("exclude", "not matched by --include")
    for p in exclude:
        if _pattern_hits(p, t.name):
            return Decision("exclude", f"excluded by --exclude {p}")
    if not inc:
        for p in DEFAULT_EXCLUDE:
            if _pattern_hits(p, t.name):
                return Decision("exclude", f"{p} stays in float by default (--include {p} "
                                           "quantizes it)")
    M, K = t.shape
    b = BLOCK[fmt]
    if M == 0 or K == 0:
        return Decision("skip", f"empty weight {M}x{K}")
    if K % b:
        return Decision("skip", f"K = {K} (the last dim) is not a multiple of the {fmt} block "
                                f"of {b}")
    return Decision("quantize")


def module_of(name: str) -> str:
    """The module of a weight: ``a.b.weight`` -> ``a.b``."""
    return name[: -len(".weight")] if name.endswith(".weight") else name
