"""The mx_quantize_rowcol CUDA kernel (csrc/mx/rowcol.cuh) against the reference, bit for bit.

The reference is the two single casts, ``mx_quantize(x, "e4m3", rounding, swizzle, axis)``
for axis -1 and -2. Covered: fp32 / fp16 / bf16, rceil and floor, linear and swizzled
scales, 2-D and 3-D, shapes that end inside a 128 x 128-byte tile along either dim, shapes
with several tiles per persistent CTA (the prefetch of the next tile), the special values of
docs/spec.md sec. 3 (ties, signed zeros, zero blocks, floor clips, subnormals, NaN / inf)
placed along rows and along columns, non-contiguous and misaligned inputs, empty inputs.
Outputs are poisoned before each call (a byte the kernel does not write fails). Also
opcheck, torch.compile, CUDA-graph capture, a second GPU. Skipped without a GPU.
"""

from __future__ import annotations

import zlib

import pytest
import torch

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops import reference as ref

from .._utils import poison_cuda_cache, requires_cuda
from ._helpers import DEV, DTYPE_IDS, DTYPES, OPS, assert_compiles_to_same_bits, assert_exact
from ._helpers import capture_pipeline, opcheck
from .test_mx import many_magnitudes, special_tensor

pytestmark = requires_cuda

ROUNDINGS = ["rceil", "floor"]
NAMES = ("row data", "row scales", "col data", "col scales")


def rowcol(x, rounding, swizzle):
    """The op under test."""
    return OPS.mx_quantize_rowcol(x, rounding, swizzle)


def check_rowcol(x, rounding, swizzle, oracle_device, what):
    """The op (outputs poisoned) against the reference on ``oracle_device``."""
    want = ref.mx_quantize_rowcol(x.to(oracle_device), rounding, swizzle)
    poison_cuda_cache(*want)
    got = rowcol(x, rounding, swizzle)
    assert len(got) == 4
    for g, w, name in zip(got, want, NAMES):
        assert g.device == x.device
        assert_exact(g, w, f"{what} [{rounding} swizzle={swizzle}] {name}")


# M and K multiples of 32; values that end inside a tile (128 rows; 64 columns of 16-bit x,
# 32 of fp32) and values over one tile.
SHAPES = [(m, k) for m in (32, 96, 160, 256) for k in (32, 96, 160, 4096)]


@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sweep_matches_reference(dtype, rounding, swizzle):
    for m, k in SHAPES:
        for batches in (None, 3):
            shape = (m, k) if batches is None else (batches, m, k)
            seed = zlib.crc32(f"{dtype} {shape}".encode())
            # blocks of varied magnitude along K on half the shapes, along M on the others
            x = many_magnitudes(shape, dtype, seed, axis=-1 if (m + k) % 64 else -2)
            check_rowcol(x, rounding, swizzle, DEV, f"{dtype} {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_special_values(dtype):
    """The special blocks of test_mx along rows (axis -1) and along columns (axis -2)."""
    for axis in (-1, -2):
        x = special_tensor(dtype, rows=96, blocks_per_row=3, axis=axis)      # [96, 96]
        x3 = special_tensor(dtype, rows=64, blocks_per_row=5, batches=2, axis=axis)
        for rounding in ROUNDINGS:
            for swz in (False, True):
                check_rowcol(x, rounding, swz, "cpu", f"{dtype} specials axis={axis}")
                check_rowcol(x3, rounding, swz, "cpu", f"{dtype} specials 3-D axis={axis}")


def test_larger_shapes():
    """Several tiles per persistent CTA (the prefetch loop) and a ragged last wave."""
    x = many_magnitudes((1024, 8192 + 64), torch.bfloat16, seed=30)
    check_rowcol(x, "rceil", True, DEV, "bf16 1024x8256")
    check_rowcol(x, "floor", False, DEV, "bf16 1024x8256")
    y = many_magnitudes((3, 4096 + 32, 544), torch.float32, seed=31, axis=-2)
    check_rowcol(y, "rceil", False, DEV, "fp32 3x4128x544")
    z = many_magnitudes((40, 96, 64), torch.float16, seed=32)
    check_rowcol(z, "floor", True, DEV, "fp16 40x96x64")


def test_non_contiguous_and_misaligned_inputs():
    base = many_magnitudes((96, 160), torch.bfloat16, seed=11)
    cases = {
        "transposed": base.t(),                                          # [160, 96]
        "column slice": base[:, 32:128],
        "row step": base[::3],                                           # [32, 160]
        "aligned offset": base.reshape(-1)[8:8 + 64 * 96].reshape(64, 96),
        "odd offset": base.reshape(-1)[1:1 + 64 * 32].reshape(64, 32),
        "3-D permuted": base.reshape(96, 5, 32).permute(1, 0, 2),        # [5, 96, 32]
    }
    for name, x in cases.items():
        for swz in (False, True):
            check_rowcol(x, "rceil", swz, DEV, name)


def test_empty_shapes():
    for shape in [(0, 32), (32, 0), (3, 0, 32), (0, 64, 32), (2, 32, 0)]:
        x = torch.zeros(shape, device=DEV)
        for swz in (False, True):
            got = rowcol(x, "rceil", swz)
            want = ref.mx_quantize_rowcol(x, "rceil", swz)
            for g, w in zip(got, want):
                assert (g.shape, g.dtype) == (w.shape, w.dtype), (shape, swz)


def test_argument_errors_match_the_reference():
    x = torch.zeros(48, 64, device=DEV)
    with pytest.raises(RuntimeError) as e:
        rowcol(x, "rceil", False)
    assert str(e.value).splitlines()[0] == ("nvfp4.mx_quantize_rowcol: M (dim -2, quantized "
                                            "with axis=-2) must be a multiple of 32, got 48")


# --------------------------------------------------------------------------------------
# torch.library / torch.compile / CUDA graphs / other devices
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("bf16", "rceil", False), ("fp32 3-D", "floor", True), ("fp16", "rceil", True)])
def test_opcheck(args):
    what, rounding, swz = args
    x = {"bf16": lambda: many_magnitudes((160, 96), torch.bfloat16, seed=20),
         "fp32 3-D": lambda: many_magnitudes((2, 96, 64), torch.float32, seed=21),
         "fp16": lambda: many_magnitudes((64, 4096), torch.float16, seed=22)}[what]()
    opcheck(OPS.mx_quantize_rowcol.default, (x, rounding, swz))


def _pipeline(x):
    outs = list(rowcol(x, "rceil", True)) + list(rowcol(x, "floor", False))
    # the columnwise operand dequantized from its swizzled scales
    outs.append(OPS.mx_dequantize(outs[2], outs[3], "e4m3", torch.float32, True))
    return outs


def test_compile_fullgraph():
    x = many_magnitudes((160, 96), torch.bfloat16, seed=23)
    x3 = many_magnitudes((2, 64, 160), torch.float16, seed=24)
    assert_compiles_to_same_bits(_pipeline, x, x3)


def test_cuda_graph_capture():
    x, xt, outs = capture_pipeline(_pipeline, many_magnitudes, 288, 160, pad=8)
    for xx, base in ((x, 0), (xt, 9)):
        want = ref.mx_quantize_rowcol(xx, "rceil", True) + ref.mx_quantize_rowcol(xx, "floor")
        for i, w in enumerate(want):
            assert_exact(outs[base + i], w, f"graph {NAMES[i % 4]} {xx.dtype}")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    dev = "cuda:1"
    assert torch.cuda.current_device() == 0
    x = many_magnitudes((2, 160, 96), torch.bfloat16, seed=28, device=dev)
    got = rowcol(x, "rceil", True)
    want = ref.mx_quantize_rowcol(x.cpu(), "rceil", True)
    for g, w, name in zip(got, want, NAMES):
        assert g.device == torch.device(dev)
        assert_exact(g, w, f"cuda:1 {name}")
    torch.cuda.synchronize(dev)
