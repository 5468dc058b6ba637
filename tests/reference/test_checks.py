"""Argument checks of the reference (reference._checks): every message, metadata-only validators."""

from __future__ import annotations

import pytest
import torch

from nvfp4_ops import reference as ref

from ._oracle import (
    F32,
)


x16 = torch.zeros(4, 64)
gs1 = torch.ones(1)
pk, sc = ref.quantize(x16, gs1)
mxd, mxs = ref.mx_quantize(x16)

ERROR_CASES = [
    (lambda: ref.quantize(torch.zeros(4, 70), gs1), r"nvfp4\.quantize: K \(the last dim\) must be a multiple of 16, got 70"),
    (lambda: ref.quantize(torch.zeros(4, 64, dtype=torch.int32), gs1), r"x must be float32, float16 or bfloat16, got torch\.int32"),
    (lambda: ref.quantize(torch.zeros(64), gs1), r"x must be 2-D or 3-D .*got 1-D shape \[64\]"),
    (lambda: ref.quantize(torch.zeros(3, 4, 16), torch.ones(2)),
     r"global_scale must be float32 with 1 element or one per batch \(3\), got shape \[2\] and dtype torch\.float32"),
    (lambda: ref.quantize(x16, torch.ones(1, dtype=torch.float64)), r"global_scale must be float32 with 1 element, got shape \[1\] and dtype torch\.float64"),
    (lambda: ref.quantize(x16, torch.ones(1, device="meta")), r"tensors must be on one device: x on cpu, global_scale on meta"),
    (lambda: ref.quantize(x16, gs1, scale_method="foo"), r"scale_method must be 'amax', 'mse', 'hessian' or '4over6', got 'foo'"),
    (lambda: ref.quant_dequant(x16, gs1, "mse"), r"nvfp4\.quant_dequant: scale_method must be 'amax' or '4over6', got 'mse'"),
    (lambda: ref.quantize(x16, gs1, scale_method="hessian", hessian=torch.zeros(3, 16, 16)),
     r"hessian must be float32 of shape \[K/16, 16, 16\] = \[4, 16, 16\], got \[3, 16, 16\]"),
    (lambda: ref.quantize(x16, gs1, scale_method="hessian", hessian=torch.zeros(4, 16, 16, dtype=torch.float64)),
     r"hessian must be float32 .* got \[4, 16, 16\] of dtype torch\.float64"),
    (lambda: ref.quantize(x16, gs1, scale_method="hessian"), r"scale_method='hessian' needs a hessian"),
    (lambda: ref.quantize(x16, gs1, scale_method="mse", hessian=torch.zeros(4, 16, 16)), r"hessian is only used with scale_method='hessian'"),
    (lambda: ref.quant_dequant(torch.zeros(4, 8), gs1), r"nvfp4\.quant_dequant: K \(the last dim\) must be a multiple of 16, got 8"),
    (lambda: ref.dequantize(pk.float(), sc, gs1, F32), r"packed must be uint8"),
    (lambda: ref.dequantize(pk, sc.view(torch.uint8), gs1, F32), r"scales must be torch\.float8_e4m3fn, got torch\.uint8"),
    (lambda: ref.dequantize(pk, sc[:, :3], gs1, F32), r"scales must have shape \[4, 4\] \(linear, \[\.\.\., M, K/16\]\), got \[4, 3\]"),
    (lambda: ref.dequantize(pk, sc, gs1, F32, swizzled=True), r"scales must have shape \[128, 4\] \(swizzled"),
    (lambda: ref.dequantize(pk, sc, gs1, torch.int8), r"out_dtype must be torch\.float32, torch\.float16 or torch\.bfloat16, got torch\.int8"),
    (lambda: ref.dequantize(pk[:, :5], sc, gs1, F32), r"last dim of packed \(K/2\) must be a multiple of 8, got 5"),
    (lambda: ref.mx_quantize(x16, elem="e5m2"), r"elem must be 'e4m3' or 'e2m1', got 'e5m2'"),
    (lambda: ref.mx_quantize(x16, rounding="even"), r"rounding must be 'rceil' or 'floor', got 'even'"),
    (lambda: ref.mx_quantize(x16, axis=2), r"axis must be -1 or -2 .* got 2"),
    (lambda: ref.mx_quantize(x16, scale_method="hessian"), r"scale_method must be 'amax' or 'mse', got 'hessian'"),
    (lambda: ref.mx_quantize(torch.zeros(4, 48)), r"K \(the last dim, quantized with axis=-1\) must be a multiple of 32, got 48"),
    (lambda: ref.mx_quantize(torch.zeros(48, 64), axis=-2), r"M \(dim -2, quantized with axis=-2\) must be a multiple of 32, got 48"),
    (lambda: ref.mx_dequantize(mxd.view(torch.uint8), mxs, "e4m3", F32), r"data must be torch\.float8_e4m3fn for elem='e4m3', got torch\.uint8"),
    (lambda: ref.mx_dequantize(mxd, mxs.float(), "e4m3", F32), r"scales must be uint8 or torch\.float8_e8m0fnu, got torch\.float32"),
    (lambda: ref.mx_dequantize(mxd, mxs[:3], "e4m3", F32), r"scales must have shape \[4, 2\] \(linear, \[\.\.\., M, K/32\]\), got \[3, 2\]"),
    (lambda: ref.mx_dequantize(mxd, mxs, "e3m2", F32), r"elem must be 'e4m3' or 'e2m1', got 'e3m2'"),
    (lambda: ref.swizzle_scales(torch.zeros(4, 4)), r"scales must have a 1-byte dtype .* got torch\.float32"),
    (lambda: ref.swizzle_scales(torch.zeros(4, dtype=torch.uint8)), r"scales must be 2-D or 3-D"),
    (lambda: ref.unswizzle_scales(torch.zeros(128, 4, dtype=torch.uint8), 129, 4),
     r"swizzled must have shape \[\.\.\., roundup\(rows, 128\), roundup\(cols, 4\)\] = \[\.\.\., 256, 4\] for rows=129, cols=4, got \[128, 4\]"),
    (lambda: ref.hessian_blocks(torch.zeros(8, 20)), r"hessian_blocks: K \(the last dim\) must be a multiple of 16, got 20"),
    (lambda: ref.hessian_blocks(torch.zeros(8, 2, 16)), r"X must be 2-D \[T, K\], got 3-D"),
    (lambda: ref.nvfp4_block_objective(x16, sc, gs1, method="amax"), r"method must be 'mse' or 'hessian', got 'amax'"),
    (lambda: ref.global_scale(torch.zeros(3, dtype=torch.int64)), r"global_scale: x must be float32, float16 or bfloat16, got torch\.int64"),
]


@pytest.mark.parametrize("fn, pattern", ERROR_CASES, ids=[f"case{i}" for i in range(len(ERROR_CASES))])
def test_error_messages(fn, pattern):
    with pytest.raises(RuntimeError, match=pattern):
        fn()


def test_validators_need_metadata_only():
    # Meta tensors have no data: the validators run on them (as the fake kernels will).
    m = lambda *s, dtype=F32: torch.empty(*s, dtype=dtype, device="meta")
    ref.check_quantize_args(m(2, 8, 64), m(2), True, "hessian", m(4, 16, 16))
    ref.check_quant_dequant_args(m(8, 64, dtype=torch.bfloat16), m(1))
    ref.check_dequantize_args(m(2, 8, 32, dtype=torch.uint8), m(2, 128, 4, dtype=torch.float8_e4m3fn), m(2), torch.float16, True)
    ref.check_mx_quantize_args(m(64, 32), "e2m1", "floor", True, -2, "mse")
    ref.check_mx_dequantize_args(m(8, 32, dtype=torch.uint8), m(8, 2, dtype=torch.uint8), "e2m1", F32)
    ref.check_swizzle_args(m(3, 8, 5, dtype=torch.uint8))
    ref.check_unswizzle_args(m(3, 128, 8, dtype=torch.uint8), 8, 5)
    ref.check_global_scale_args(m(5))
    with pytest.raises(RuntimeError, match="multiple of 16, got 70"):
        ref.check_quantize_args(m(8, 70), m(1))


def test_package_exports_exist():
    """Every name the package lists in __all__ is importable from it."""
    import nvfp4_ops.reference as reference

    missing = [name for name in reference.__all__ if not hasattr(reference, name)]
    assert not missing, f"nvfp4_ops.reference.__all__ names missing attributes: {missing}"
