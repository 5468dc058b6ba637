"""swizzle_scales / unswizzle_scales on CUDA (csrc/swizzle/ops.cu) against the reference, byte
for byte.

The kernel moves 512-byte tiles through shared memory, 32 tiles per CTA when a row of tiles
has that many (else 4), with 16-, 4- or 1-byte pieces of the linear rows depending on the
row length and the address. The shapes below reach every variant: row lengths that are
multiples of 16, of 4 and neither; rows and columns that need padding; a last CTA with fewer
tiles; misaligned views; more rows of tiles and more batches than one grid dimension holds
(65535). Outputs are poisoned first, so an unwritten byte fails. Skipped without a GPU.
"""

import pytest
import torch

from nvfp4_ops import reference as ref

from .._utils import poison_cuda_cache, requires_cuda
from ._helpers import OPS, assert_exact, gen

pytestmark = requires_cuda

U8 = torch.uint8


def _check(s: torch.Tensor) -> None:
    """swizzle (vs the reference on CPU) and unswizzle (back to s) of CUDA scales s."""
    rows, cols = s.shape[-2], s.shape[-1]
    want = ref.swizzle_scales(s.cpu())
    poison_cuda_cache(want)
    sw = OPS.swizzle_scales(s)
    assert_exact(sw, want, f"swizzle {tuple(s.shape)}")
    poison_cuda_cache(s)
    back = OPS.unswizzle_scales(sw, rows, cols)
    assert_exact(back, s.contiguous(), f"unswizzle {tuple(s.shape)}")


def _bytes(shape, seed) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=U8, generator=gen(seed)).cuda()


# (rows, cols): 16-byte rows (cols % 16 == 0), 4-byte rows, odd rows; 4 and 32 tiles per CTA
# (cols >= 128), a partial last CTA (cols = 132: 33 tiles), row padding (rows % 128 != 0).
SHAPES = [(1, 1), (3, 7), (128, 4), (130, 5), (257, 16), (300, 33), (64, 128), (129, 132),
          (200, 256), (1000, 500), (8192, 512), (4096, 896)]


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_swizzle_2d(rows, cols):
    _check(_bytes((rows, cols), seed=rows * 1000 + cols))


@pytest.mark.parametrize("rows,cols", [(1, 4), (130, 5), (129, 132), (300, 64)])
def test_swizzle_3d(rows, cols):
    _check(_bytes((3, rows, cols), seed=rows + cols))


@pytest.mark.parametrize("offset", [1, 4, 8])
def test_swizzle_misaligned_views(offset):
    """A view whose data starts off a 16-byte boundary: 4- or 1-byte pieces (swizzle), an
    aligned copy (unswizzle)."""
    flat = _bytes((offset + 256 * 64,), seed=offset)
    s = flat[offset:].view(256, 64)
    _check(s)
    sw = ref.swizzle_scales(s.cpu()).cuda()
    flat2 = torch.zeros(offset + sw.numel(), dtype=U8, device="cuda")
    flat2[offset:] = sw.flatten()
    back = OPS.unswizzle_scales(flat2[offset:].view(sw.shape), 256, 64)
    assert_exact(back, s.contiguous(), "unswizzle of a misaligned view")


def test_swizzle_non_contiguous_and_dtypes():
    s = _bytes((64, 300), seed=3)[:, ::2]  # [64, 150], strided
    _check(s)
    for dt in (torch.float8_e4m3fn, torch.int8):
        _check(_bytes((130, 36), seed=4).view(dt))


def test_swizzle_grid_limits():
    """More rows of tiles (> 65535) and more batches (> 65535) than one grid dim holds."""
    _check(_bytes((128 * 65536 + 130, 4), seed=5))
    _check(_bytes((65536 + 3, 1, 4), seed=6))


def test_empty():
    for shape in [(0, 4), (4, 0), (2, 0, 4)]:
        s = torch.zeros(shape, dtype=U8, device="cuda")
        sw = OPS.swizzle_scales(s)
        assert sw.shape == ref.swizzle_scales(s.cpu()).shape
        assert OPS.unswizzle_scales(sw, shape[-2], shape[-1]).shape == s.shape
