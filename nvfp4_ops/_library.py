"""The compiled library ``nvfp4_ops._C``: loading it, what it holds, which code serves each op.

Every op has a schema defined by ``_C`` (``csrc/registration.cpp``). Its implementations:

* CPU: always the pure-PyTorch reference (:mod:`nvfp4_ops.reference`).
* CUDA: the hand-written kernel where the build compiled one, else the reference, which
  runs on CUDA tensors too (slowly, but bit-exact).

:func:`register_reference_kernels` fills in the reference wherever ``_C`` registered
nothing, so every op runs on every device and torch.compile traces the same op everywhere.
:func:`op_implementation` says which implementation serves an op on a device, and why.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from . import reference

#: op name -> reference function implementing it (the CPU kernel, and the CUDA fallback).
OPS = {
    "quantize": reference.quantize,
    "dequantize": reference.dequantize,
    "quant_dequant": reference.quant_dequant,
    "global_scale": reference.global_scale,
    "mx_quantize": reference.mx_quantize,
    "mx_quantize_rowcol": reference.mx_quantize_rowcol,
    "mx_dequantize": reference.mx_dequantize,
    "swizzle_scales": reference.swizzle_scales,
    "unswizzle_scales": reference.unswizzle_scales,
    "gemm_nvfp4_w4a16": reference.gemm_nvfp4_w4a16,
    "gemm_nvfp4_w4a16_prepacked": reference.gemm_nvfp4_w4a16_prepacked,
    # byte moves: the same code serves every device (no CUDA kernel needed)
    "prepack_nvfp4_w4a16": reference.prepack_nvfp4_w4a16,
    "unprepack_nvfp4_w4a16": reference.unprepack_nvfp4_w4a16,
    "gemm_mx_w16": reference.gemm_mx_w16,
    # training recipes (docs/spec.md section 8): CUDA kernels in csrc/train/ops.cu
    "train_quantize": reference.train_quantize,
    "train_quantize_rowcol": reference.train_quantize_rowcol,
    "grouped_quantize": reference.grouped_quantize,
    "mx_grouped_quantize": reference.mx_grouped_quantize,
}

#: How to build ``_C``, quoted by every error about it missing.
BUILD_HINT = (
    "build it in the source tree with `python setup.py build_ext --inplace` "
    "(NVFP4_OPS_CPU_ONLY=1 for a build without CUDA) or install the package with "
    "`pip install --no-build-isolation .`; nvfp4_ops.reference and nvfp4_ops.formats "
    "work without it"
)

_REFERENCE_ON_CUDA: set[str] = set()
_lib = None
_load_error: Optional[BaseException] = None
_loaded = False


def load_extension() -> Optional[BaseException]:
    """Import ``nvfp4_ops._C`` once (registering its schemas and kernels).

    Returns None when it is loaded, else the exception its import raised (the package
    still imports, only the ops are unavailable; see :func:`require_extension`).
    """
    global _loaded, _load_error
    if not _loaded:
        _loaded = True
        try:
            importlib.import_module("nvfp4_ops._C")
        except (ImportError, OSError) as e:
            _load_error = e
    return _load_error


def require_extension(what: str) -> None:
    """Raise a RuntimeError saying how to build ``_C`` if it could not be loaded.

    Parameters
    ----------
    what : str
        What needed it, e.g. ``"nvfp4_ops.quantize"``.
    """
    err = load_extension()
    if err is not None:
        raise RuntimeError(
            f"{what} needs the compiled library nvfp4_ops._C, which could not be imported "
            f"({type(err).__name__}: {err}); {BUILD_HINT}"
        ) from err


def _has_cpp_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"nvfp4::{op}", key)


def register_reference_kernels() -> None:
    """Register the reference as the CPU kernel of every op, and as the CUDA kernel of
    every op ``_C`` has no CUDA kernel for. Idempotent; needs ``_C`` (the schemas)."""
    global _lib
    if _lib is not None:
        return
    require_extension("nvfp4_ops._library.register_reference_kernels")
    _lib = torch.library.Library("nvfp4", "IMPL")  # noqa: TOR901 (kept alive for the process)
    for op, fn in OPS.items():
        _lib.impl(op, fn, "CPU")
        if not _has_cpp_kernel(op, "CUDA"):
            _lib.impl(op, fn, "CUDA")
            _REFERENCE_ON_CUDA.add(op)


def build_info() -> dict:
    """What the build holds (from ``nvfp4_ops/_build_info.py``, written by setup.py).

    Returns
    -------
    dict
        ``cuda`` (True, False, or None when unknown), ``archs`` (e.g. ``["sm_80", "sm_90"]``),
        ``ptx`` (the archs whose PTX is embedded, e.g. ``["compute_120"]``),
        ``built_with_torch`` and ``built_with_cuda`` (version strings or None).
    """
    try:
        from . import _build_info as b
    except ImportError:  # built by CMake, or not built
        return {"cuda": None, "archs": [], "ptx": [], "built_with_torch": None,
                "built_with_cuda": None}
    return {
        "cuda": b.CUDA,
        "archs": list(b.ARCHS),
        "ptx": list(getattr(b, "PTX", [])),
        "built_with_torch": b.BUILT_WITH_TORCH,
        "built_with_cuda": b.BUILT_WITH_CUDA,
    }


def _device_arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def _arch_number(arch: str) -> int:
    """``sm_90a`` / ``compute_120`` -> 90 / 120."""
    return int(arch.split("_")[1].rstrip("af"))


def _arch_compiled(arch: str, archs: list[str]) -> bool:
    """Whether a cubin in ``archs`` runs on ``arch``.

    ``sm_90a`` code runs on sm_90 only; a plain ``sm_XY`` cubin also runs on later minors of
    the same major (sm_80 on sm_86 / sm_89).
    """
    n = _arch_number(arch)
    for a in archs:
        m = _arch_number(a)
        if m == n or (not a.endswith(("a", "f")) and m // 10 == n // 10 and m % 10 <= n % 10):
            return True
    return False


def _ptx_for(arch: str, ptx: list[str]) -> Optional[str]:
    """The newest embedded PTX the driver can JIT for ``arch`` (PTX runs on newer archs)."""
    n = _arch_number(arch)
    usable = [p for p in ptx if _arch_number(p) <= n and not p.endswith(("a", "f"))]
    return max(usable, key=_arch_number) if usable else None


def op_implementation(op: str, device: str | torch.device = "cuda") -> tuple[str, str]:
    """The implementation that serves ``op`` on ``device``, and why.

    Parameters
    ----------
    op : str
        A key of :data:`OPS`.
    device : str or torch.device
        The device of the op's tensors.

    Returns
    -------
    (name, reason) : (str, str)
        ``name`` is ``"cuda-kernel"``, ``"reference"`` or ``"unavailable"``.

    Raises
    ------
    ValueError
        For an unknown op.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    device = torch.device(device)
    if load_extension() is not None:
        return "unavailable", f"nvfp4_ops._C is not built: {BUILD_HINT}"
    if device.type != "cuda":
        return "reference", f"{device.type}: the pure-PyTorch reference serves every op"
    register_reference_kernels()
    if op in _REFERENCE_ON_CUDA:
        info = build_info()
        why = ("this is a CPU-only build (no nvcc or no CUDA torch at build time)"
               if info["cuda"] is False else "no CUDA kernel for this op in this build")
        return "reference", why
    if not torch.cuda.is_available():
        return "cuda-kernel", "compiled, but no CUDA device is visible here"
    arch = _device_arch(device)
    info = build_info()
    if not info["archs"] or _arch_compiled(arch, info["archs"]):
        return "cuda-kernel", f"hand-written CUDA kernel ({arch})"
    ptx = _ptx_for(arch, info["ptx"])
    if ptx is not None:
        return "cuda-kernel", (f"hand-written CUDA kernel, JIT-compiled for {arch} from the "
                               f"embedded {ptx} PTX")
    return "unavailable", (f"kernel compiled for {', '.join(info['archs'])} only and no PTX "
                           f"this GPU ({arch}) can JIT: rebuild with TORCH_CUDA_ARCH_LIST "
                           "naming it")
