"""Calibration inputs: each linear layer's input activations, from the model run on
texts or token ids, or from a file of captured inputs, reduced to what the quantizer
needs (Hessian blocks, the Gram matrix for the output error, the input global scale)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from .common import CliError, read_json
from .discover import Source
from .encoder import calibration_and_eval_sentences


class Calibration:
    """Per-layer input activations ``[T, K]``: from the model run on sentences or token ids,
    or from a file of captured inputs (read one layer at a time). Each layer's inputs are
    reduced to what the quantizer needs: the Hessian blocks (``nvfp4_ops.hessian_blocks``),
    the Gram matrix ``X^T X`` for the output error, and the activation's global scale
    (ModelOpt ``input_scale``)."""

    def __init__(self, describe: str):
        self.describe = describe
        self.tokens = 0
        self._acts: Dict[str, Tensor] = {}
        self._loader: Optional[Callable[[str], Optional[Tensor]]] = None
        self._stats: Dict[str, Dict[str, Tensor]] = {}

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
        """``{"gram", "input_global_scale"[, "hessian"]}`` of ``name``'s inputs, or None."""
        st = self._stats.get(name)
        if st is None and name in self._acts:
            st = self._reduce(name, self._acts[name], device, need_hessian)
        if st is None and self._loader is not None:
            X = self._loader(name)
            if X is not None:
                if X.shape[-1] != K:
                    raise CliError(f"calibration inputs of {name} have {X.shape[-1]} features, "
                                   f"but the weight has K = {K}")
                st = self._reduce(name, X, device, need_hessian)
        if st is not None and st["gram"].shape[0] != K:
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


def load_calibration(path: Optional[str], src: Source, model) -> Optional[Calibration]:
    """Calibration inputs: ``--calib`` FILE, else (for a model this tool can run) the
    built-in calibration sentences, else None."""
    if path is None:
        if model is None:
            return None
        cal, _ = calibration_and_eval_sentences()
        c = Calibration(f"{len(cal)} built-in sentences")
        c._acts = model.capture_linear_inputs(cal)
        c.tokens = _count_tokens(c._acts)
        return c
    p = Path(path)
    if not p.is_file():
        raise CliError(f"--calib {p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".safetensors", ".pt", ".pth"):
        return _load_captured(p)
    if suffix == ".txt":
        try:
            texts = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"--calib {p}: cannot read it as text ({e})") from e
        if not texts:
            raise CliError(f"--calib {p}: no text in it (expected one text per line)")
        return _run_model_calib(p, model, texts=texts)
    if suffix in (".json", ".jsonl"):
        if suffix == ".jsonl":
            try:
                data = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
            except ValueError as e:
                raise CliError(f"--calib {p}: not valid JSON lines ({e})") from e
            data = [d.get("text", d.get("input_ids")) if isinstance(d, dict) else d for d in data]
        else:
            data = read_json(p, "the calibration file")
        if isinstance(data, dict):
            data = data.get("texts", data.get("input_ids", data.get("token_ids")))
        if isinstance(data, list) and data and all(isinstance(s, str) for s in data):
            return _run_model_calib(p, model, texts=data)
        if (isinstance(data, list) and data and all(isinstance(r, list) and r and all(
                isinstance(i, int) and not isinstance(i, bool) for i in r) for r in data)):
            return _run_model_calib(p, model, ids=data)
        raise CliError(f"--calib {p}: expected a JSON list of texts or a list of token-id lists "
                       "(or {\"texts\": [...]} / {\"input_ids\": [[...]]})")
    raise CliError(f"--calib {p}: unknown kind of file; use .txt (one text per line), .json "
                   "(texts or token ids) or .safetensors / .pt (captured inputs: one [T, K] "
                   "tensor per linear layer, named like the layer)")


def _count_tokens(acts: Dict[str, Tensor]) -> int:
    """Tokens captured: the rows of the largest non-pooler layer input."""
    return max((int(v.shape[0]) for k, v in acts.items() if "pooler" not in k), default=0)


def _run_model_calib(p: Path, model, texts=None, ids=None) -> Calibration:
    """Run ``model`` on ``texts`` or token ``ids`` from file ``p``, capturing the inputs."""
    if model is None:
        raise CliError(f"--calib {p}: texts and token ids need a model this tool can run (a BERT "
                       "encoder with tokenizer.json, like the embedded default); for other "
                       "models pass captured inputs (.safetensors of [T, K] per linear layer)")
    if ids is not None:
        vocab = int(getattr(model.config, "vocab_size", 0) or 0) or None
        bad = [i for r in ids for i in r if i < 0 or (vocab and i >= vocab)]
        if bad:
            raise CliError(f"--calib {p}: token id {bad[0]} is outside the vocabulary "
                           f"[0, {vocab})")
    c = Calibration(f"{p.name}: {len(texts or ids)} {'texts' if texts else 'token-id sequences'}")
    c._acts = model.capture_linear_inputs(sentences=texts, token_ids=ids)
    c.tokens = _count_tokens(c._acts)
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
