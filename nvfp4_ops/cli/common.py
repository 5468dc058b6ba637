"""What every part of the CLI shares: the formats and layouts it knows, the error that
becomes one clear line and an exit status, and small helpers (JSON, sizes, the device)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch


FORMATS = ("nvfp4", "mxfp8", "mxfp4")
METHODS = ("amax", "mse", "hessian", "4over6")
BLOCK = {"nvfp4": 16, "mxfp8": 32, "mxfp4": 32}
#: layouts each format can be written in; the first is the default
LAYOUTS = {
    "nvfp4": ("compressed-tensors", "modelopt"),
    "mxfp8": ("compressed-tensors",),
    "mxfp4": ("compressed-tensors", "gpt-oss"),
}
ALL_LAYOUTS = ("compressed-tensors", "modelopt", "gpt-oss")
CT_FORMAT = {"nvfp4": "nvfp4-pack-quantized", "mxfp8": "mxfp8-quantized",
             "mxfp4": "mxfp4-pack-quantized"}
#: compressed-tensors version whose QuantizationConfig the written config was checked with
CT_VERSION = "0.20.0"


class CliError(Exception):
    """A bad input or environment: printed as one clear line, exit status ``code``."""

    def __init__(self, msg: str, code: int = 2, plain: bool = False):
        super().__init__(msg)
        self.code = code
        self.plain = plain  # not an error of the input (an interrupt): no "error:" prefix


def read_json(path: Path, what: str) -> Any:
    """``path`` parsed as JSON; a :class:`CliError` naming ``what`` when it cannot be."""
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CliError(f"{path}: {what} is not valid JSON ({e})") from e
    except OSError as e:
        raise CliError(f"{path}: cannot read {what} ({e.strerror or e})") from e


def pick_device(name: Optional[str]) -> torch.device:
    """``--device``: ``cuda`` or ``cpu`` (None: cuda when a GPU is visible), checked usable."""
    from .. import _library

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is visible here (use --device cpu)")
    if dev.type not in ("cuda", "cpu"):
        raise CliError(f"--device {name}: expected cuda or cpu")
    if dev.type == "cuda":
        b, why = _library.op_implementation("quantize", dev)
        if b == "unavailable":
            raise CliError(f"--device cuda: {why}")
    return dev


def fmt_bytes(n: float) -> str:
    """``n`` bytes as ``12.3 MB`` (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000.0
    return f"{n:.1f} TB"


def parse_size(s: str) -> int:
    """``--max-shard-size``: ``4GB``, ``500MB``, ``2GiB`` ... -> bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(I?B)?\s*", s.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"size {s!r}: expected like 4GB, 500MB")
    mult = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]
    if m.group(3) == "IB":
        mult = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]
    n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size {s!r}: must be more than 0 bytes")
    return n


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= low``."""
    def parse(s: str) -> int:
        try:
            n = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r}: expected an integer") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"{n}: must be at least {low}")
        return n
    return parse
