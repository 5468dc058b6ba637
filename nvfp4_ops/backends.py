"""Which implementation serves each op, and why.

Every op has a schema defined by the C++ library (``nvfp4_ops._C``). Its
implementations:

* CPU: always the pure-PyTorch reference (:mod:`nvfp4_ops.reference`).
* CUDA: the hand-written kernel where the build compiled one (``csrc/ops/*.cu``),
  else the reference, which runs on CUDA tensors too (slowly, but bit-exact).

``register_reference_kernels()`` fills in the reference wherever the C++ library
registered nothing, so every op runs on every device, and torch.compile traces the
same op everywhere.
"""

from __future__ import annotations

import torch

from . import reference

#: op name -> reference function implementing it (the CPU kernel, and the CUDA fallback).
OPS = {
    "quantize": reference.quantize,
    "dequantize": reference.dequantize,
    "quant_dequant": reference.quant_dequant,
    "global_scale": reference.global_scale,
    "mx_quantize": reference.mx_quantize,
    "mx_dequantize": reference.mx_dequantize,
    "swizzle_scales": reference.swizzle_scales,
    "unswizzle_scales": reference.unswizzle_scales,
}

_REFERENCE_ON_CUDA: set[str] = set()
_lib = None


def _has_cpp_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"nvfp4::{op}", key)


def register_reference_kernels() -> None:
    """Register the reference as the CPU kernel of every op, and as the CUDA kernel
    of every op the C++ library has no CUDA kernel for. Idempotent."""
    global _lib
    if _lib is not None:
        return
    _lib = torch.library.Library("nvfp4", "IMPL")  # noqa: TOR901 (kept alive for the process)
    for op, fn in OPS.items():
        _lib.impl(op, fn, "CPU")
        if not _has_cpp_kernel(op, "CUDA"):
            _lib.impl(op, fn, "CUDA")
            _REFERENCE_ON_CUDA.add(op)


def build_info() -> dict:
    """What the installed build holds: CUDA or not, the compiled archs."""
    try:
        from . import _build_info as b
    except ImportError:  # built by CMake or an older setup.py
        return {"cuda": None, "archs": [], "built_with_torch": None, "built_with_cuda": None}
    return {
        "cuda": b.CUDA,
        "archs": list(b.ARCHS),
        "built_with_torch": b.BUILT_WITH_TORCH,
        "built_with_cuda": b.BUILT_WITH_CUDA,
    }


def _device_arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def _arch_compiled(arch: str, archs: list[str]) -> bool:
    # sm_90a code runs on sm_90; sm_100a on sm_100; a plain sm_XY cubin also runs on
    # later minors of the same major (sm_80 on sm_86/sm_89).
    base = [a.rstrip("af") for a in archs]
    if arch in base:
        return True
    major = arch[3:-1]
    return any(b[3:-1] == major and int(b[-1]) <= int(arch[-1]) and not a.endswith(("a", "f"))
               for a, b in zip(archs, base))


def op_backend(op: str, device: str | torch.device = "cuda") -> tuple[str, str]:
    """The implementation that serves ``op`` on ``device``, and why.

    Returns ``(backend, reason)`` with backend ``"cuda-kernel"``, ``"reference"`` or
    ``"unavailable"``.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    device = torch.device(device)
    if device.type != "cuda":
        return "reference", f"{device.type}: the pure-PyTorch reference serves every op"
    if op in _REFERENCE_ON_CUDA:
        info = build_info()
        why = ("this is a CPU-only build (no nvcc or no CUDA torch at build time)"
               if info["cuda"] is False else "no CUDA kernel for this op in this build")
        return "reference", why
    if not torch.cuda.is_available():
        return "cuda-kernel", "compiled, but no CUDA device is visible here"
    arch = _device_arch(device)
    archs = build_info()["archs"]
    if archs and not _arch_compiled(arch, archs):
        return "unavailable", (f"kernel compiled for {', '.join(archs)} only; this GPU is {arch}: "
                               "rebuild with TORCH_CUDA_ARCH_LIST naming it")
    return "cuda-kernel", f"hand-written CUDA kernel ({arch})"
