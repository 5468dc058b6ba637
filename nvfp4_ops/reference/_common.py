"""Constants and tiny helpers shared by the reference modules (formats, block sizes)."""

from __future__ import annotations

from typing import Sequence

import torch

F32 = torch.float32
#: The input / output dtypes of every codec.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: ``torch.float8_e8m0fnu`` where this torch has it, else None.
E8M0_DTYPE = getattr(torch, "float8_e8m0fnu", None)
#: Dtypes of MX scale bytes (E8M0).
MX_SCALE_DTYPES = (torch.uint8,) + ((E8M0_DTYPE,) if E8M0_DTYPE is not None else ())

NVFP4_BLOCK = 16
MX_BLOCK = 32
E4M3_MAX = 448.0
E2M1_MAX = 6.0
#: 448 * 6: the global scale maps the tensor amax onto the largest representable product.
GLOBAL_SCALE_NUMERATOR = 2688.0
#: Largest finite fp32, the global scale of a finite amax too small for ``2688 / amax``.
FLT_MAX = torch.finfo(torch.float32).max


def roundup(n: int, m: int) -> int:
    """``n`` rounded up to a multiple of ``m``."""
    return (n + m - 1) // m * m


def shape_str(shape: Sequence[int]) -> str:
    """``[a, b, c]``: how every message prints a shape."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def batched(t: torch.Tensor) -> torch.Tensor:
    """``t.detach()`` as ``[B, ...]``: a 2-D tensor gets a leading batch dim of 1."""
    t = t.detach()
    return t if t.dim() == 3 else t.unsqueeze(0)


def unbatched(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` (batched) without its batch dim when ``like`` is 2-D: undoes :func:`batched`."""
    return out if like.dim() == 3 else out[0]
