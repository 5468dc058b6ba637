"""Pure-PyTorch reference codecs for NVFP4, MXFP8 and MXFP4: the numerical ground truth.

Every function here follows the numerics contract (``docs/spec.md``) bit for bit. They
are the CPU implementation of the ``torch.ops.nvfp4.*`` operators and the oracle that the
CUDA kernels are tested against, so the code favours being obviously right over being fast:

* every fp32 operation is a single IEEE round-to-nearest-even tensor op (``RN(.)`` in the
  spec); scale arithmetic never goes through Python floats (float64), the only Python float
  constants are exactly representable in fp32, and nothing is divided by a Python scalar
  (CUDA turns ``tensor / scalar`` into a multiplication by the reciprocal, and
  ``scalar / tensor`` is ``tensor.reciprocal() * scalar`` in PyTorch), so divisions are
  always tensor by tensor;
* no reduction whose order is unspecified feeds a result: block maxima are exact, and
  the scale-search objectives are summed left to right, one fp32 op per term;
* torch's float8 casts are only used on values already clamped to the finite range and
  NaN is mapped to ``0x7F`` explicitly, so nothing depends on how a cast saturates;
* everything is vectorised over blocks and rows and written with plain tensor ops, so
  the same code gives the same bytes on CPU and CUDA tensors.

Layouts: ``x`` is ``[M, K]`` or ``[B, M, K]`` (float32, float16 or bfloat16, any strides).
NVFP4 packs two E2M1 codes per byte along ``K`` (element ``2i`` in the low nibble) and
stores one E4M3 scale per 16 elements; MX stores one E8M0 byte per 32 elements. Scales
are linear ``[..., M, K/16]`` / ``[..., M, K/32]`` or in the 128x4 swizzled layout of
docs/spec.md section 4.

Modules: ``_checks`` (the argument contract: every check and message, shared with the
fakes and mirrored by the C++ launchers), ``elements`` (E2M1 / E4M3 / E8M0 element and
scale roundings), ``layout`` (nibble packing, 128x4 swizzle), ``nvfp4`` (global scale,
quantize, dequantize, quant_dequant), ``mx`` (MXFP8 / MXFP4), ``search`` (the exact
scale searches, their objectives, ``hessian_blocks``), ``training`` (columnwise / 2-D /
stochastic-rounding / Hadamard NVFP4, Philox4x32-10, grouped MoE quantize) and ``gemm`` (the low-bit weight
GEMMs: dequantize to fp32, fp32 matmul, one cast; the prepack layout). This package imports nothing
compiled: it works without a build of ``nvfp4_ops._C``.
"""

from . import _checks
from ._checks import (
    check_block_objective_args,
    check_dequantize_args,
    check_gemm_mx_w16_args,
    check_gemm_nvfp4_w4a16_args,
    check_gemm_nvfp4_w4a16_prepacked_args,
    check_global_scale_args,
    check_hessian_blocks_args,
    check_mx_block_objective_args,
    check_grouped_quantize_args,
    check_mx_dequantize_args,
    check_mx_grouped_quantize_args,
    check_mx_quantize_args,
    check_mx_quantize_rowcol_args,
    check_pack_args,
    check_prepack_nvfp4_w4a16_args,
    check_quant_dequant_args,
    check_quantize_args,
    check_swizzle_args,
    check_train_quantize_args,
    check_train_quantize_rowcol_args,
    check_unprepack_nvfp4_w4a16_args,
    check_unswizzle_args,
)
from .elements import E2M1_VALUES, e2m1_decode, e2m1_encode, e4m3_from_fp32, e4m3_to_fp32
from .gemm import (
    gemm_mx_w16,
    gemm_nvfp4_w4a16,
    gemm_nvfp4_w4a16_prepacked,
    prepack_nvfp4_w4a16,
    unprepack_nvfp4_w4a16,
)
from .layout import pack_e2m1, swizzle_scales, unpack_e2m1, unswizzle_scales
from .mx import mx_dequantize, mx_quantize, mx_quantize_rowcol
from .nvfp4 import dequantize, global_scale, quant_dequant, quantize
from .search import hessian_blocks, mx_block_objective, nvfp4_block_objective
from .training import (
    grouped_quantize,
    hadamard_matrix,
    hadamard_transform,
    mx_grouped_quantize,
    philox4x32,
    random_hadamard_signs,
    sr_offset_increment,
    train_quantize,
    train_quantize_rowcol,
)

__all__ = [
    "E2M1_VALUES",
    "e2m1_encode",
    "e2m1_decode",
    "pack_e2m1",
    "unpack_e2m1",
    "e4m3_from_fp32",
    "e4m3_to_fp32",
    "global_scale",
    "quantize",
    "dequantize",
    "quant_dequant",
    "mx_quantize",
    "mx_quantize_rowcol",
    "mx_dequantize",
    "swizzle_scales",
    "unswizzle_scales",
    "hessian_blocks",
    "nvfp4_block_objective",
    "mx_block_objective",
    "gemm_nvfp4_w4a16",
    "gemm_nvfp4_w4a16_prepacked",
    "prepack_nvfp4_w4a16",
    "unprepack_nvfp4_w4a16",
    "gemm_mx_w16",
    "train_quantize",
    "train_quantize_rowcol",
    "grouped_quantize",
    "mx_grouped_quantize",
    "philox4x32",
    "random_hadamard_signs",
    "hadamard_matrix",
    "hadamard_transform",
    "sr_offset_increment",
    # every argument check, one per op (and per reference helper)
    *(name for name in _checks.__all__ if name.startswith("check_")),
]
