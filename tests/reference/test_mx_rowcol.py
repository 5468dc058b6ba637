"""mx_quantize_rowcol (reference.mx): both MXFP8 casts of x against the literal oracle of
docs/spec.md section 3 (rowwise on x, columnwise on x^T), on random and adversarial inputs
(zero and -0.0 blocks, NaN / inf, values that clip under "floor", E4M3 ties, tiny values),
2-D and 3-D, both roundings, linear and swizzled scales; and its argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from nvfp4_ops import reference as ref

from ._oracle import DTYPES, F32, assert_bits_equal, oracle_mx, random_blocks

E4M3 = torch.float8_e4m3fn


def _e4m3_ties() -> list[float]:
    """448 then 31 midpoints of adjacent E4M3 values: a block whose scale is 2^0 (both
    roundings give b = 127 for amax 448), so each midpoint is an exact tie."""
    grid = torch.arange(0, 0x7F, dtype=torch.uint8).view(E4M3).float().tolist()
    mids = [(a + b) / 2 for a, b in zip(grid[:-1], grid[1:])]
    return [448.0] + [m if i % 2 else -m for i, m in enumerate(mids[::4][:31])]


def adversarial(shape, dtype, seed=0) -> torch.Tensor:
    """``shape`` = ``([B,] M, K)`` with M, K multiples of 32, M >= 96 and K >= 128: random
    blocks (Gaussian, E2M1 grid ties, scales 2^-20..2^20) with special blocks placed so that
    every kind appears along rows and along columns."""
    *lead, m, k = shape
    x = random_blocks(math.prod(shape) // 32, seed, 32).reshape(shape).clone()
    x[..., 0:32, 0:32] = 0.0                      # zero blocks both ways
    x[..., 0:32, 32:64] = -0.0                    # negative zeros both ways
    x[..., 32:64, 0] = torch.tensor(_e4m3_ties())  # E4M3 ties down a column
    x[..., 40, 32:64] = torch.tensor(_e4m3_ties())  # and along a row
    clip = torch.tensor([510.0, -500.0, 449.0, 464.0, -480.0, 7.0] * 5 + [1.0, -0.0])
    x[..., 64, 64:96] = clip                      # "floor" clips (amax in (448, 512))
    x[..., 64:96, 100] = clip
    x[..., 33, 70] = math.nan                     # NaN in one row block and one column block
    x[..., 70, 5] = math.inf
    x[..., 90, 127] = -math.inf
    x[..., 96 - 32:96, 110] = 2.0**-130           # fp32 denormals (zero in fp16 / bf16)
    x[..., 1, 96:128] = torch.tensor([2.0**-126, -(2.0**-140)] * 16)
    if dtype == torch.float16:
        x = x.clamp(-60000.0, 60000.0)  # keep the random blocks finite in fp16
    return x.to(dtype)


def oracle_rowwise(x: torch.Tensor, rounding: str):
    """(data [.., M, K] E4M3, scales [.., M, K/32]) of the literal oracle, blocks along K."""
    *lead, m, k = x.shape
    b, d = oracle_mx(x.float().reshape(-1, 32).numpy(), "e4m3", rounding)
    data = torch.from_numpy(d).reshape(x.shape).view(E4M3)
    return data, torch.from_numpy(b).reshape(*lead, m, k // 32)


@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(96, 128), (2, 128, 160)])
def test_matches_oracle_both_ways(shape, dtype, rounding, swizzle):
    x = adversarial(shape, dtype, seed=len(shape))
    rd, rs, cd, cs = ref.mx_quantize_rowcol(x, rounding, swizzle)
    for (d, s), src in (((rd, rs), x), ((cd, cs), x.transpose(-1, -2).contiguous())):
        want_d, want_s = oracle_rowwise(src, rounding)
        assert_bits_equal(d, want_d)
        assert_bits_equal(s, ref.swizzle_scales(want_s) if swizzle else want_s)


@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
def test_equals_the_two_single_calls(rounding, swizzle):
    """Non-contiguous 3-D input, the positive-axis spellings of the single calls."""
    x = adversarial((2, 96, 128), torch.bfloat16, seed=5)
    x = x.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # the same values, K-major strides
    assert not x.is_contiguous()
    got = ref.mx_quantize_rowcol(x, rounding, swizzle)
    want = (*ref.mx_quantize(x, "e4m3", rounding, swizzle, 2),
            *ref.mx_quantize(x, "e4m3", rounding, swizzle, 1))
    for g, w in zip(got, want, strict=True):
        assert_bits_equal(g, w)
        assert g.is_contiguous()


def test_special_bytes():
    """A few outputs spelled out: the NaN block, the zero blocks, a floor clip."""
    x = adversarial((96, 128), F32)
    rd, rs, cd, cs = ref.mx_quantize_rowcol(x, "floor")
    assert rs[33, 2].item() == 255 and cs[70, 1].item() == 255      # NaN: b = 255 both ways
    assert not rd[33, 64:96].view(torch.uint8).any()                 # and element bytes 0
    assert rs[0, 0].item() == 0 and cs[0, 0].item() == 0              # zero blocks: b = 0
    assert (rd[0:32, 32:64].view(torch.uint8) == 0x80).all()         # -0.0 stays -0.0
    assert rs[64, 2].item() == 127 and rd[64, 64].view(torch.uint8).item() == 0x7E  # 510 -> 448


def test_empty():
    for shape in [(0, 64), (32, 0), (2, 0, 32), (0, 32, 32)]:
        out = ref.mx_quantize_rowcol(torch.zeros(shape), "rceil", True)
        want = (*ref.mx_quantize(torch.zeros(shape), "e4m3", "rceil", True, -1),
                *ref.mx_quantize(torch.zeros(shape), "e4m3", "rceil", True, -2))
        assert [t.shape for t in out] == [t.shape for t in want]


OP = "nvfp4.mx_quantize_rowcol"
ERRORS = [
    (torch.zeros(64, 48), f"{OP}: K (the last dim, quantized with axis=-1) must be a multiple "
     "of 32, got 48", {}),
    (torch.zeros(48, 64), f"{OP}: M (dim -2, quantized with axis=-2) must be a multiple of 32, "
     "got 48", {}),
    (torch.zeros(2, 40, 64), f"{OP}: M (dim -2, quantized with axis=-2) must be a multiple of "
     "32, got 40", {}),
    (torch.zeros(32, 32, dtype=torch.float64), f"{OP}: x must be float32, float16 or bfloat16, "
     "got torch.float64", {}),
    (torch.zeros(32), f"{OP}: x must be 2-D or 3-D ([M, K] or [B, M, K]), got 1-D shape [32]",
     {}),
    (torch.zeros(32, 32), f"{OP}: rounding must be 'rceil' or 'floor', got 'even'",
     {"rounding": "even"}),
    # the order of the checks: the rounding before the shapes
    (torch.zeros(40, 40), f"{OP}: rounding must be 'rceil' or 'floor', got 'up'",
     {"rounding": "up"}),
]


@pytest.mark.parametrize("x, msg, kw", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_error_messages(x, msg, kw):
    with pytest.raises(RuntimeError) as e:
        ref.mx_quantize_rowcol(x, **kw)
    assert str(e.value) == msg
    with pytest.raises(RuntimeError) as e:  # metadata only: meta tensors fail the same way
        ref.check_mx_quantize_rowcol_args(x.to("meta"), **kw)
    assert str(e.value) == msg
