"""nvfp4_ops: exact, memory-speed NVFP4 / MXFP8 / MXFP4 codecs for PyTorch.

Importing the package registers ``torch.ops.nvfp4.*``: the schemas and CUDA kernels
from the C++ library ``nvfp4_ops._C``, the pure-PyTorch reference as the CPU kernel
(and as the CUDA kernel of any op this build has no kernel for), the fake
implementations for torch.compile, and the straight-through gradient of
``quant_dequant``.
"""

import torch  # noqa: F401  (loads libtorch, which _C links against)

try:
    from . import _C  # noqa: F401  (registers the schemas and the CUDA kernels)
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "nvfp4_ops._C is not built. Install with "
        "`pip install --no-build-isolation -e .` from the source tree "
        f"(the import failed with: {e})"
    ) from e

from . import _fake  # noqa: F401,E402
from . import backends as _backends  # noqa: E402

_backends.register_reference_kernels()

from . import reference  # noqa: E402
from .ops import (  # noqa: E402
    dequantize,
    global_scale,
    mx_dequantize,
    mx_quantize,
    quant_dequant,
    quantize,
    swizzle_scales,
    unswizzle_scales,
)
from .reference import hessian_blocks  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "dequantize",
    "global_scale",
    "hessian_blocks",
    "mx_dequantize",
    "mx_quantize",
    "quant_dequant",
    "quantize",
    "reference",
    "swizzle_scales",
    "unswizzle_scales",
]
