"""nvfp4_ops: exact, memory-speed NVFP4 / MXFP8 / MXFP4 codecs for PyTorch.

Importing the package loads the compiled library ``nvfp4_ops._C`` (the schemas of
``torch.ops.nvfp4.*`` and the CUDA kernels) and registers the pure-PyTorch reference as
the CPU kernel (and as the CUDA kernel of any op the build has no kernel for), the fake
implementations for torch.compile, and the straight-through gradient of
``quant_dequant``.

``_C`` is loaded tolerantly: without a build, ``nvfp4_ops.reference`` and
``nvfp4_ops.formats`` still work, and calling an op raises an error saying how to build.
"""

import torch  # noqa: F401  (loads libtorch, which _C links against)

from . import _library, reference

if _library.load_extension() is None:
    _library.register_reference_kernels()

from .ops import (  # noqa: E402  (registers the fakes and the autograd formula)
    dequantize,
    gemm_mx_w16,
    gemm_nvfp4_w4a16,
    gemm_nvfp4_w4a16_prepacked,
    global_scale,
    grouped_quantize,
    mx_dequantize,
    mx_grouped_quantize,
    mx_quantize,
    mx_quantize_rowcol,
    prepack_nvfp4_w4a16,
    quant_dequant,
    quantize,
    random_hadamard_signs,
    sr_offset_increment,
    swizzle_scales,
    train_quantize,
    train_quantize_rowcol,
    unprepack_nvfp4_w4a16,
    unswizzle_scales,
)
from .reference import hessian_blocks  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "dequantize",
    "gemm_mx_w16",
    "gemm_nvfp4_w4a16",
    "gemm_nvfp4_w4a16_prepacked",
    "global_scale",
    "grouped_quantize",
    "hessian_blocks",
    "mx_dequantize",
    "mx_grouped_quantize",
    "mx_quantize",
    "mx_quantize_rowcol",
    "quant_dequant",
    "prepack_nvfp4_w4a16",
    "quantize",
    "random_hadamard_signs",
    "reference",
    "sr_offset_increment",
    "swizzle_scales",
    "train_quantize",
    "train_quantize_rowcol",
    "unprepack_nvfp4_w4a16",
    "unswizzle_scales",
]
