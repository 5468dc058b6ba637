"""Quantized linear layers (NVFP4, MXFP8, MXFP4) and the choice of the GEMM that runs them.

* :mod:`~nvfp4_ops.nn.linear`: :class:`QuantizedLinear` (everything the formats share),
  :class:`NVFP4Linear`, :class:`MXFP8Linear`, :class:`MXFP4Linear` (the MX ones share
  :class:`MXLinear`), :func:`quantize_linears`;
* :mod:`~nvfp4_ops.nn.backends`: which GEMM runs a layer and why the others do not
  (:func:`select_linear_backend`, the keyword ``backend=`` and the environment variable
  :data:`ENV_VAR`);
* :mod:`~nvfp4_ops.nn.gemm`: the GEMM of each backend (:func:`apply_linear`);
* :mod:`~nvfp4_ops.nn.padding`: zero padding to the alignment of block-scaled GEMMs.

Every computation goes through the ``torch.ops.nvfp4`` ops, so a layer traces whole under
``torch.compile(fullgraph=True)`` on every device.
"""

from .backends import (
    BACKENDS,
    ENV_VAR,
    FORMATS,
    select_linear_backend,
    select_mxfp4_linear_backend,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)
from .gemm import apply_linear, apply_mxfp4_linear, apply_mxfp8_linear, apply_nvfp4_linear
from .linear import (
    MXFP4Linear,
    MXFP8Linear,
    MXLinear,
    NVFP4Linear,
    QuantizedLinear,
    quantize_linears,
)

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "FORMATS",
    "MXFP4Linear",
    "MXFP8Linear",
    "MXLinear",
    "NVFP4Linear",
    "QuantizedLinear",
    "apply_linear",
    "apply_mxfp4_linear",
    "apply_mxfp8_linear",
    "apply_nvfp4_linear",
    "quantize_linears",
    "select_linear_backend",
    "select_mxfp4_linear_backend",
    "select_mxfp8_linear_backend",
    "select_nvfp4_linear_backend",
]
