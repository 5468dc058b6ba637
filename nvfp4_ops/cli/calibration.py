"""Calibration inputs of the quantizer: the statistics of each linear layer's inputs,
from the model run on calibration texts (``--calib`` text file or ``builtin``: the model
runs layer by layer through :mod:`nvfp4_ops.cli.capture`), or from a file of captured
inputs (``.safetensors`` / ``.pt``: one ``[T, K]`` tensor per layer). Per layer the
quantizer gets the Hessian blocks (``--scales hessian``), the input global scale
``2688 / amax`` (W4A4) and, when kept, the Gram matrix ``X^T X`` (the output error)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .calib_texts import calibration_and_eval_texts, load_texts
from .common import CliError

#: ``--calib`` value naming the built-in texts
BUILTIN = "builtin"
#: calibration texts are truncated to this many tokens (or the model's position table)
MAX_TOKENS_PER_TEXT = 512
#: suffixes of ``--calib`` files holding captured inputs (the rest are texts)
CAPTURED_SUFFIXES = (".safetensors", ".pt", ".pth")
#: a per-expert 2-D weight of a checkpoint: ``<P>.experts.<e>.<leaf>.weight``
_PER_EXPERT = re.compile(r"^(?P<p>.*\.experts)\.(?P<e>\d+)\.(?P<leaf>[^.]+)\.weight$")
#: the fused 3-D parameters (transformers 5 loads per-expert modules into them) whose
#: expert ``e`` reads the same input as each per-expert leaf
_FUSED_OF_LEAF = {"gate_proj": ("gate_up_proj",), "up_proj": ("gate_up_proj", "up_proj"),
                  "w1": ("gate_up_proj",), "w3": ("gate_up_proj", "up_proj"),
                  "down_proj": ("down_proj",), "w2": ("down_proj",)}


def _stat_keys(name: str) -> List[str]:
    """Keys the statistics of checkpoint weight ``name`` may be under: the name itself and,
    for a per-expert module ``P.experts.3.gate_proj.weight``, the captured expert of the
    fused parameter the loaded model has instead (``capture.expert_key("P.experts.
    gate_up_proj", 3)``; gate and up read the same routed rows)."""
    from .capture import expert_key

    m = _PER_EXPERT.match(name)
    if m is None:
        return [name]
    fused = _FUSED_OF_LEAF.get(m["leaf"], ())
    return [name] + [expert_key(f"{m['p']}.{f}", int(m["e"])) + ".weight" for f in fused]


class Calibration:
    """Per-layer statistics of the calibration inputs, keyed by checkpoint weight name:
    ``{"input_global_scale"[, "hessian"][, "gram"]}``. Filled from a model run
    (:func:`from_model`), or from captured inputs held in memory (``.pt``) or read one layer
    at a time (``.safetensors``), reduced on first use."""

    def __init__(self, describe: str):
        self.describe = describe
        self.tokens = 0
        self.notes: List[str] = []
        self._acts: Dict[str, Tensor] = {}
        self._loader: Optional[Callable[[str], Optional[Tensor]]] = None
        self._stats: Dict[str, Dict[str, Tensor]] = {}
        self._prefix = ""  # the model's base_model_prefix + "." (model runs)

    def precompute(self, device: torch.device, need_hessian: bool) -> None:
        """Reduce the activations held in memory to their statistics now, and free them
        (layers that read one input, like query/key/value, share one computation)."""
        by_id: Dict[int, Dict[str, Tensor]] = {}
        for name, X in self._acts.items():
            if id(X) not in by_id:
                by_id[id(X)] = self._reduce(name, X, device, need_hessian)
            self._stats[name] = by_id[id(X)]
        self._acts = {}

    @staticmethod
    def _reduce(name: str, X: Tensor, device: torch.device,
                need_hessian: bool) -> Dict[str, Tensor]:
        import nvfp4_ops

        X = X.reshape(-1, X.shape[-1]) if X.dim() != 2 else X
        Xd = X.to(device=device, dtype=torch.float32)
        if not bool(torch.isfinite(Xd).all()):
            raise CliError(f"calibration inputs of {name} hold NaN or inf")
        st = {"gram": Xd.T @ Xd, "input_global_scale": nvfp4_ops.global_scale(Xd)}
        if need_hessian:
            if Xd.shape[-1] % 16:
                raise CliError(f"calibration inputs of {name} have {Xd.shape[-1]} features, "
                               "not a multiple of 16")
            st["hessian"] = nvfp4_ops.hessian_blocks(Xd)
        return st

    def stats(self, name: str, K: int, device: torch.device,
              need_hessian: bool) -> Optional[Dict[str, Tensor]]:
        """``{"input_global_scale"[, "hessian"][, "gram"]}`` of ``name``'s inputs (on
        ``device``), or None when ``name`` has no calibration inputs."""
        st = None
        for key in _stat_keys(name):
            st = self._stats.get(key)
            if st is None and self._prefix:
                p = self._prefix
                st = self._stats.get(key[len(p):] if key.startswith(p) else p + key)
            if st is not None:
                break
        if st is not None:
            st = {k: v.to(device) for k, v in st.items()}
        if st is None and name in self._acts:
            st = self._reduce(name, self._acts[name], device, need_hessian)
        if st is None and self._loader is not None:
            X = self._loader(name)
            if X is not None:
                if X.shape[-1] != K:
                    raise CliError(f"calibration inputs of {name} have {X.shape[-1]} features, "
                                   f"but the weight has K = {K}")
                st = self._reduce(name, X, device, need_hessian)
        if st is not None and "gram" in st and st["gram"].shape[0] != K:
            raise CliError(f"calibration inputs of {name} have {st['gram'].shape[0]} features, "
                           f"but the weight has K = {K}")
        return st


def _calib_key(k: str) -> str:
    """The weight name a captured-input key stands for (``a.b.input`` -> ``a.b.weight``)."""
    for suf in (".input", ".inputs", ".activations", ".act", ".x"):
        if k.endswith(suf):
            k = k[: -len(suf)]
            break
    return k if k.endswith(".weight") else k + ".weight"


def is_captured(path: Optional[str]) -> bool:
    """True when ``--calib path`` names a file of captured inputs (not texts)."""
    return path is not None and path != BUILTIN and Path(path).suffix.lower() in CAPTURED_SUFFIXES


def load_captured(path: str) -> Calibration:
    """``--calib`` FILE of captured inputs (``.safetensors`` / ``.pt``)."""
    p = Path(path)
    if not p.is_file():
        raise CliError(f"--calib {p}: no such file")
    return _load_captured(p)


def calibration_texts(path: str, n_eval: int = 0) -> Tuple[Union[List[str], List[List[int]]], str]:
    """``(texts, description)`` of ``--calib path``: a text file (:func:`load_texts`: .txt
    one text per line, .json texts or token ids, .jsonl ``"text"`` fields) or ``builtin``
    (the built-in texts, less the last ``n_eval`` that the end-to-end check uses)."""
    if path == BUILTIN:
        texts = calibration_and_eval_texts(n_eval)[0]
        return texts, f"{len(texts)} built-in texts"
    p = Path(path)
    if not p.is_file():
        raise CliError(f"--calib {p}: no such file")
    try:
        texts = load_texts(p)
    except ValueError as e:
        raise CliError(f"--calib {e}") from None
    what = "texts" if isinstance(texts[0], str) else "token-id sequences"
    return texts, f"{p.name}: {len(texts)} {what}"


def from_model(model, tokenizer, texts: Sequence, describe: str, device: torch.device,
               need_hessian: bool, want_gram: bool,
               progress: Optional[Callable[[int, int], None]] = None,
               combine: Optional[Callable] = None) -> Calibration:
    """Run ``texts`` through the transformers ``model`` layer by layer on ``device``
    (:func:`nvfp4_ops.cli.capture.capture_linear_stats`; texts truncated to
    :data:`MAX_TOKENS_PER_TEXT` tokens, or to the model's position table when shorter) and
    keep each linear's statistics; a bad text (a token id outside the vocabulary, no tokenizer for texts) is a
    :class:`CliError`. ``combine`` (several ranks, each with its share of the texts) turns
    this rank's :class:`~nvfp4_ops.cli.capture.CaptureResult` into the one of all the texts
    (:meth:`nvfp4_ops.cli.ranks.Ranks.combine_capture`)."""
    import nvfp4_ops

    from .capture import capture_linear_stats

    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
        else model.config
    positions = int(getattr(cfg, "max_position_embeddings", 0) or 0)
    max_tokens = min(MAX_TOKENS_PER_TEXT, positions) if positions > 0 else MAX_TOKENS_PER_TEXT
    try:
        res = capture_linear_stats(model, texts, device=device, want_hessian=need_hessian,
                                   want_gram=want_gram, tokenizer=tokenizer,
                                   max_tokens_per_text=max_tokens, progress=progress)
    except ValueError as e:
        raise CliError(f"--calib: {e}") from None
    if combine is not None:
        res = combine(res)
    c = Calibration(describe)
    c.tokens, c.notes = res.tokens, list(res.notes)
    c._prefix = getattr(model, "base_model_prefix", "") + "."
    for key, st in res.items():
        if not st.tokens:
            continue  # no token reached it: no calibration inputs
        if not bool(torch.isfinite(st.amax)):
            raise CliError(f"calibration inputs of {key} hold NaN or inf")
        d = {"input_global_scale": nvfp4_ops.global_scale(st.amax.reshape(1))}
        if st.hessian is not None:
            d["hessian"] = st.hessian
        if st.gram is not None:
            d["gram"] = st.gram
        c._stats[key if key.endswith(".weight") else key + ".weight"] = d
    return c


def _load_captured(p: Path) -> Calibration:
    """Captured inputs from a .safetensors (read lazily, layer by layer) or a .pt dict."""
    c = Calibration(f"{p.name}: captured inputs")
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            h = safe_open(str(p), framework="pt")
            keys = {_calib_key(k): k for k in h.keys()}
        except Exception as e:
            raise CliError(f"--calib {p}: not a valid safetensors file ({e})") from e

        def load(name: str, h=h, keys=keys) -> Optional[Tensor]:
            k = keys.get(name)
            return None if k is None else h.get_tensor(k)
        c._loader = load
        c.tokens = max((int(math.prod(h.get_slice(k).get_shape()[:-1])) for k in keys.values()),
                       default=0)
    else:
        try:
            d = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CliError(f"--calib {p}: cannot load it with torch.load ({e})") from e
        if not isinstance(d, dict) or not all(isinstance(v, Tensor) for v in d.values()):
            raise CliError(f"--calib {p}: expected a dict of tensors (layer name -> [T, K])")
        c._acts = {_calib_key(k): v for k, v in d.items()}
        c.tokens = max((int(v.numel() // max(1, v.shape[-1])) for v in d.values()), default=0)
    return c
