"""The NVFP4 CUDA kernels (csrc/ops/nvfp4.cu) against the pure-PyTorch reference, bit for bit.

quantize (linear and swizzled scales), dequantize (from both layouts into fp32 / fp16 /
bf16), quant_dequant and global_scale, for fp32 / fp16 / bf16 inputs, 2-D and 3-D (one
global scale or one per batch), shapes that need padding, data over many magnitudes and
the special cases of docs/spec.md (ties, signed zeros, all-zero blocks, saturating and
subnormal scales, NaN / inf blocks). Every output is compared byte for byte (floats: the
bits, NaN compared as NaN); outputs are poisoned before each call, so a byte the kernel
does not write fails. Also: non-contiguous
and misaligned inputs, opcheck, torch.compile, CUDA graphs, a second GPU.

The big sweep compares with the reference run on the same CUDA tensors (fast); the
special-value tests compare with the reference on CPU copies (an oracle that shares no
GPU arithmetic with the kernels). Skipped without a GPU.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops import reference as ref
from nvfp4_ops.reference._common import NVFP4_BLOCK

from .._utils import poison_cuda_cache, requires_cuda
from ._helpers import DEV, DTYPE_IDS, DTYPES, E4M3, OPS, OUT_DTYPES, assert_compiles_to_same_bits
from ._helpers import assert_exact, bits, capture_pipeline, gen, opcheck
from ._helpers import many_magnitudes as _many_magnitudes

pytestmark = requires_cuda


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def many_magnitudes(shape, dtype, seed=0, device=None) -> torch.Tensor:
    """:func:`._helpers.many_magnitudes` with NVFP4's 16-element blocks."""
    return _many_magnitudes(shape, dtype, NVFP4_BLOCK, seed, device=device or DEV)


def batch_gs(x: torch.Tensor) -> torch.Tensor:
    """One global scale per batch of a 3-D x: [B]."""
    return torch.cat([ref.global_scale(x[b]) for b in range(x.shape[0])])


def check_codec(x: torch.Tensor, gs: torch.Tensor, oracle_device: str, what: str,
                method: str = "amax") -> None:
    """quantize (both layouts), dequantize (both layouts, every out dtype) and quant_dequant
    of x against the reference computed on oracle_device; qdq == dequantize(quantize) bits.
    ``method``: the scale_method of quantize and quant_dequant ("amax" or "4over6")."""
    xo, gso = x.to(oracle_device), gs.to(oracle_device)
    what = f"{what} [{method}]"
    lin_want = ref.quantize(xo, gso, False, method)
    swz_want = ref.quantize(xo, gso, True, method)
    poison_cuda_cache(*lin_want)
    p, s = OPS.quantize(x, gs, False, method)
    assert_exact(p, lin_want[0], f"{what} packed")
    assert_exact(s, lin_want[1], f"{what} scales")
    poison_cuda_cache(*swz_want)
    p2, s2 = OPS.quantize(x, gs, True, method)
    assert_exact(p2, swz_want[0], f"{what} packed (swizzle)")
    assert_exact(s2, swz_want[1], f"{what} scales (swizzled)")
    for od in OUT_DTYPES:
        want = ref.dequantize(lin_want[0], lin_want[1], gso, od)
        poison_cuda_cache(want)
        assert_exact(OPS.dequantize(p, s, gs, od), want, f"{what} dequantize -> {od}")
        poison_cuda_cache(want)
        assert_exact(OPS.dequantize(p2, s2, gs, od, True), want,
                     f"{what} dequantize swizzled -> {od}")
    want = ref.quant_dequant(xo, gso, method)
    poison_cuda_cache(want)
    fq = OPS.quant_dequant(x, gs, method)
    assert_exact(fq, want, f"{what} quant_dequant")
    # one pass == the two ops, to the bit (NaN payloads included)
    assert torch.equal(bits(fq), bits(OPS.dequantize(p, s, gs, x.dtype))), what


# --------------------------------------------------------------------------------------
# the sweep: dtype x shape x layout, many magnitudes (reference on the same CUDA tensors)
# --------------------------------------------------------------------------------------

MS = [1, 90, 130, 257]
KS = [16, 48, 80, 4096]
LAYOUTS = ["2d", "3d", "3d_per_batch"]
#: The scale methods of the one-pass codec kernels (quantize and quant_dequant).
METHODS = ["amax", "4over6"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_codec_matches_reference(dtype, m, k, layout, method):
    seed = zlib.crc32(f"{dtype} {m} {k} {layout}".encode())
    if layout == "2d":
        x = many_magnitudes((m, k), dtype, seed)
        gs = ref.global_scale(x)
    else:
        x = many_magnitudes((3, m, k), dtype, seed)
        gs = batch_gs(x) if layout == "3d_per_batch" else ref.global_scale(x)
    check_codec(x, gs, DEV, f"{dtype} [{layout} m={m} k={k}]", method)


# --------------------------------------------------------------------------------------
# special values (reference on CPU copies)
# --------------------------------------------------------------------------------------

_BOUNDS = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]


def _special_blocks(dtype) -> list[list[float]]:
    """16-element blocks (as Python floats) covering docs/spec.md's cases, for gs = 1: a block
    with amax 6 * S (S a power of two) gets the scale S exactly, so values b * S sit exactly
    on the E2M1 decision boundaries b (the ties)."""
    inf, nan = math.inf, math.nan
    fin = torch.finfo(dtype)

    def nxt(v, d):  # next representable value of the dtype
        t = torch.tensor([v], dtype=dtype)
        return torch.nextafter(t, torch.tensor([d], dtype=dtype)).item()

    blocks = [
        [0.0] * 16,                                   # all-zero: scale 0, codes 0
        [-0.0] * 16,                                  # all -0.0: codes 0x8
        [0.0, -0.0] * 8,
    ]
    for s in (1.0, 2.0**-4, 8.0, 2.0**-8):            # ties at several scales
        b = [6 * s] + [v * s for v in _BOUNDS] + [-v * s for v in _BOUNDS] + [-0.0]
        blocks.append(b)
    # just off the ties (one ulp of the dtype either side)
    blocks.append([6.0] + [nxt(v, 0.0) for v in _BOUNDS] + [nxt(v, 9.0) for v in _BOUNDS] + [0.0])
    blocks.append([-6.0] + [-nxt(v, 0.0) for v in _BOUNDS] + [-nxt(v, 9.0) for v in _BOUNDS]
                  + [-0.0])
    # saturating scale: amax / 6 far above 448 (clamped to 0x7E), values past 6 -> code 7
    big = min(6000.0, fin.max / 2)
    blocks.append([big, -big, big / 2, 1.0, -3000.0, 0.5, 0.0, -0.0]
                  + [100.0 * i for i in range(8)])
    # subnormal E4M3 scales (2^-8, 2^-9) and an underflowing one (sf = 0, codes keep signs)
    for a in (6 * 2.0**-8, 6 * 2.0**-9, 6 * 2.0**-11, 6 * 2.0**-10 * 1.5):
        blocks.append([a, -a / 2, a / 3, -a / 5, a / 7, -a / 11, a / 13, 0.0,
                       -0.0, a / 4, -a / 6, a / 8, a / 12, -a / 16, a / 24, -a / 64])
    # non-finite blocks: scale 0x7F, codes 0, dequantize to NaN
    blocks.append([1.0, nan] + [0.5] * 14)
    blocks.append([inf] + [-1.0] * 15)
    blocks.append([-inf, 2.0] + [-0.0] * 14)
    blocks.append([nan, inf, -inf] + [3.0] * 13)
    # a plain block
    blocks.append([0.1 * (i - 7) for i in range(16)])
    return blocks


def special_tensor(dtype, rows=130, blocks_per_row=5, batches=None, device=None):
    blocks = _special_blocks(dtype)
    n = rows * blocks_per_row * (batches or 1)
    data = [blocks[i % len(blocks)] for i in range(n)]
    # rotate within each block so the block max is not always element 0
    data = [b[i % 16:] + b[: i % 16] for i, b in enumerate(data)]
    shape = (rows, blocks_per_row * 16) if batches is None else (batches, rows, blocks_per_row * 16)
    return torch.tensor(data, dtype=torch.float64).reshape(shape).to(dtype).to(device or DEV)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_special_values_gs_one(dtype, method):
    x = special_tensor(dtype)
    check_codec(x, torch.ones(1, device=DEV), "cpu", f"{dtype} specials, gs=1", method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_special_values_gs_from_finite_part(dtype, method):
    """gs made from a tensor of amax 1: big blocks saturate, small ones get subnormal or
    zero scales; one global scale per batch in 3-D."""
    x = special_tensor(dtype, rows=90, blocks_per_row=3, batches=2)
    gs = torch.tensor([2688.0, 2688.0 / 37.0], dtype=torch.float32, device=DEV)
    check_codec(x, gs, "cpu", f"{dtype} specials, per-batch gs", method)
    check_codec(x[1], gs[1:], "cpu", f"{dtype} specials 2-D", method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cpu_oracle_agrees(dtype, method):
    """A slice of the sweep against the reference on CPU (the CUDA reference is only used
    because it is fast; this checks that it gives the same bytes)."""
    x = many_magnitudes((2, 130, 80), dtype, seed=7)
    check_codec(x, batch_gs(x), "cpu", f"{dtype} cpu oracle", method)
    x = many_magnitudes((257, 4096), dtype, seed=8)
    check_codec(x, ref.global_scale(x), "cpu", f"{dtype} cpu oracle 2-D", method)


@pytest.mark.parametrize("method", METHODS)
def test_extreme_global_scales(method):
    """gs = +inf (osc = 0 per the reference), 0, huge (osc = +inf: 0 * inf is NaN, code
    keeps the sign of x), NaN: whatever the formulas give, the same bytes."""
    x = special_tensor(torch.float32, rows=8, blocks_per_row=4)
    x[0, :16] = torch.tensor([0.0, -0.0] * 8)
    x[1, :16] = torch.tensor([1e-38, -0.0, 0.0, -1e-45] * 4)
    for g in (math.inf, 0.0, 3e37, 1e38, math.nan, 2.0**126, -2688.0, 1e-45, 2.0**-130):
        check_codec(x, torch.tensor([g], device=DEV), "cpu", f"gs={g}", method)


@pytest.mark.parametrize("method", METHODS)
def test_fp32_denormal_inputs(method):
    g = gen(3)
    x = (torch.randn(64, 64, generator=g) * 1e-40).to(DEV)
    x[::3] *= 1e-4
    check_codec(x, ref.global_scale(x), "cpu", "fp32 denormals", method)  # gs = FLT_MAX
    check_codec(x, torch.tensor([1e30], device=DEV), "cpu", "fp32 denormals, gs 1e30", method)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_4over6_ties_and_wins(dtype):
    """scale_method="4over6" on blocks of few grid values (gs = 1), where the two candidate
    scales often give equal errors (ties: the "/6" byte) and often differ (both picks
    occur); the reference's picks on CPU are checked against its own candidates first."""
    g = gen(11)
    grid = torch.tensor([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0])
    x = torch.zeros(3, 256, 64)
    x[..., ::16] = grid[torch.randint(len(grid), (3, 256, 4), generator=g)]
    x[..., 5::16] = -grid[torch.randint(len(grid), (3, 256, 4), generator=g)]
    x = x.to(dtype)
    gs = torch.tensor([1.0, 0.5, 2.0**-7])
    _, s46 = ref.quantize(x, gs, scale_method="4over6")
    _, s6 = ref.quantize(x, gs)
    assert (s46.view(torch.uint8) != s6.view(torch.uint8)).any()  # "/4" wins somewhere
    assert (s46.view(torch.uint8) == s6.view(torch.uint8)).any()
    check_codec(x.to(DEV), gs.to(DEV), "cpu", f"{dtype} 4over6 grid blocks", "4over6")


@pytest.mark.parametrize("amax", [1e-37, 1e-40, 1.4e-45])
def test_tiny_amax_gives_flt_max_and_finite_output(amax):
    """docs/spec.md section 2: 2688 / amax overflows -> FLT_MAX, and no NaN comes out."""
    x = (torch.rand(130, 64, generator=gen(4)) * 2 - 1) * amax
    x[0, 0] = amax
    x = x.to(DEV)
    gs = OPS.global_scale(x)
    assert gs.item() == torch.finfo(torch.float32).max
    check_codec(x, gs, "cpu", f"amax {amax}")
    p, s = OPS.quantize(x, gs)
    assert ((s.view(torch.uint8) & 0x7F) != 0x7F).all()
    assert torch.isfinite(OPS.dequantize(p, s, gs, torch.float32)).all()
    assert torch.isfinite(OPS.quant_dequant(x, gs)).all()


def test_all_codes_round_trip():
    """Every packed byte value with every scale byte: dequantize from both layouts."""
    packed = torch.arange(256, dtype=torch.uint8).repeat(130, 1).reshape(130, 256)
    packed = packed[:, torch.randperm(256, generator=gen(1))].contiguous()
    scales = torch.arange(256, dtype=torch.uint8)[torch.randperm(256, generator=gen(2))]
    scales = scales[: 130 * 32].repeat(20)[: 130 * 32].reshape(130, 32).view(E4M3)
    gs = torch.tensor([3.7])
    for od in OUT_DTYPES:
        want = ref.dequantize(packed, scales, gs, od)
        poison_cuda_cache(want)
        got = OPS.dequantize(packed.to(DEV), scales.to(DEV), gs.to(DEV), od)
        assert_exact(got, want, f"all codes -> {od}")
        sw = ref.swizzle_scales(scales)
        poison_cuda_cache(want)
        got = OPS.dequantize(packed.to(DEV), sw.to(DEV), gs.to(DEV), od, True)
        assert_exact(got, want, f"all codes swizzled -> {od}")


def test_empty_shapes():
    for shape in [(0, 32), (3, 0, 32), (0, 5, 32), (4, 0)]:
        x = torch.zeros(shape, device=DEV)
        gs = torch.ones(1, device=DEV)
        for swz in (False, True):
            want = ref.quantize(x, gs, swz)
            got = OPS.quantize(x, gs, swz)
            assert got[0].shape == want[0].shape and got[1].shape == want[1].shape, shape
            assert got[1].dtype == E4M3
        assert OPS.quant_dequant(x, gs).shape == x.shape
        assert OPS.global_scale(x).item() == 1.0


# --------------------------------------------------------------------------------------
# global_scale
# --------------------------------------------------------------------------------------


def _check_gs(x: torch.Tensor, what: str) -> None:
    want = ref.global_scale(x.cpu())
    poison_cuda_cache(want)
    got = OPS.global_scale(x)
    assert got.shape == (1,) and got.dtype == torch.float32 and got.device == x.device, what
    assert_exact(got, want, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_global_scale(dtype):
    fmax = torch.finfo(dtype).max
    for shape in [(1,), (7,), (3, 5, 7), (130, 80), (2, 3, 4, 5), ((1 << 22) + 3,), ()]:
        x = many_magnitudes((1, math.prod(shape)), dtype, seed=len(shape)).reshape(shape)
        _check_gs(x, f"{dtype} {shape}")
        # the max sitting in the unaligned tail, or negative
        y = x.clone().reshape(-1)
        y[-1] = -fmax / 3
        _check_gs(y.reshape(shape), f"{dtype} {shape} tail max")
    big = torch.randn(4096, 4099, generator=gen(5)).to(dtype).to(DEV)
    big[4000, 4098] = 1000.0
    _check_gs(big, "argmax in a late block")
    _check_gs(big[::2, 1:], "non-contiguous")
    _check_gs(big.reshape(-1)[3:1000003], "misaligned view")
    z = torch.zeros(1000, dtype=dtype, device=DEV)
    _check_gs(z, "zeros -> 1")
    _check_gs(-z, "-0.0 -> 1")
    _check_gs(torch.zeros(0, 4, dtype=dtype, device=DEV), "empty -> 1")
    for special, name in [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")]:
        w = big.clone()
        w[17, 33] = special
        _check_gs(w, f"{name} anywhere")
        w[4095, 4098] = math.nan
        _check_gs(w, f"{name} and nan")
    tiny = torch.full((5,), 1e-40, device=DEV)  # 2688 / amax overflows: FLT_MAX
    _check_gs(tiny, "fp32 denormal amax")


# --------------------------------------------------------------------------------------
# layouts of the inputs
# --------------------------------------------------------------------------------------


def test_non_contiguous_and_misaligned_inputs():
    base = many_magnitudes((96, 160), torch.bfloat16, seed=11)
    cases = {
        "transposed": base.t(),                                   # [160, 96]
        "column slice": base[:, 16:144],
        "row step": base[::3],
        "misaligned": base.reshape(-1)[8 : 8 + 50 * 96].reshape(50, 96),  # 16 B offset
        "odd offset": base.reshape(-1)[1 : 1 + 64 * 32].reshape(64, 32),
        "3-D permuted": base.reshape(96, 10, 16).permute(1, 0, 2),  # [10, 96, 16]
    }
    for name, x in cases.items():
        gs = ref.global_scale(x)
        check_codec(x, gs, DEV, name)
        _check_gs(x, name)
    # non-contiguous packed / scales / per-batch global scale for dequantize
    x = many_magnitudes((4, 130, 64), torch.float16, seed=12)
    gs = batch_gs(x)
    p, s = ref.quantize(x, gs)
    p_nc = torch.cat([p, p], dim=-1)[..., :32]
    gs_nc = torch.stack([gs, gs], -1)[:, 0]
    want = ref.dequantize(p, s, gs, torch.float32)
    assert_exact(OPS.dequantize(p_nc, s.transpose(0, 1).contiguous().transpose(0, 1), gs_nc,
                                torch.float32), want, "non-contiguous dequantize args")
    assert_exact(OPS.quant_dequant(x, gs_nc), ref.quant_dequant(x, gs), "gs non-contiguous")


def test_global_scale_shapes_accepted():
    x = many_magnitudes((2, 33, 32), torch.float32, seed=13)
    for gs in (torch.tensor(100.0), torch.tensor([[100.0]]), torch.tensor([100.0, 7.0])):
        gs = gs.to(DEV)
        want = ref.quantize(x, gs, True)
        got = OPS.quantize(x, gs, True)
        assert_exact(got[0], want[0], f"gs {tuple(gs.shape)}")
        assert_exact(got[1], want[1], f"gs {tuple(gs.shape)}")


# --------------------------------------------------------------------------------------
# scale_method mse / hessian: the launcher hands them to the search kernels
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("swizzle", [False, True])
def test_search_methods_dispatch(swizzle):
    x = many_magnitudes((33, 64), torch.bfloat16, seed=14)
    gs = ref.global_scale(x)
    h = ref.hessian_blocks(torch.randn(64, 64, generator=gen(15)).to(DEV))
    for method, hess in (("mse", None), ("hessian", h)):
        want = ref.quantize(x, gs, swizzle, method, hess)
        poison_cuda_cache(*want)
        got = OPS.quantize(x, gs, swizzle, method, hess)
        assert_exact(got[0], want[0], method)
        assert_exact(got[1], want[1], method)
    # a non-contiguous hessian is made contiguous
    want = ref.quantize(x, gs, swizzle, "hessian", h)
    got = OPS.quantize(x, gs, swizzle, "hessian", h.transpose(1, 2).contiguous().transpose(1, 2))
    assert_exact(got[1], want[1], "hessian non-contiguous")


# --------------------------------------------------------------------------------------
# torch.library / torch.compile / CUDA graphs / other devices
# --------------------------------------------------------------------------------------


def _samples():
    x2 = many_magnitudes((130, 64), torch.bfloat16, seed=20)
    x3 = many_magnitudes((2, 33, 96), torch.float32, seed=21)
    gs2, gs3b = ref.global_scale(x2), batch_gs(x3)
    p, s = ref.quantize(x2, gs2, True)
    pl, sl = ref.quantize(x3, gs3b)
    return [
        ("quantize", (x2, gs2), True),
        ("quantize", (x2, gs2, True), True),
        ("quantize", (x3, gs3b, True), True),
        ("dequantize", (p, s, gs2, torch.bfloat16, True), False),
        ("dequantize", (pl, sl, gs3b, torch.float32), False),
        ("quant_dequant", (x2, gs2), True),
        ("quant_dequant", (x3, gs3b), True),
        ("global_scale", (x3,), True),
        ("global_scale", (x2[:, 1:],), True),
        ("quantize", (x2, gs2, True, "4over6"), True),
        ("quantize", (x3, gs3b, False, "4over6"), True),
        ("quant_dequant", (x3, gs3b, "4over6"), True),
    ]


@pytest.mark.parametrize("i", range(12))
def test_opcheck(i):
    name, args, schema_ok = _samples()[i]
    opcheck(getattr(OPS, name).default, args, schema_ok)


def _pipeline(x):
    gs = OPS.global_scale(x)
    p, s = OPS.quantize(x, gs, True)
    y = OPS.dequantize(p, s, gs, torch.float32, True)
    fq = OPS.quant_dequant(x, gs)
    pl, sl = OPS.quantize(x, gs, False)
    p46, s46 = OPS.quantize(x, gs, True, "4over6")
    fq46 = OPS.quant_dequant(x, gs, "4over6")
    return gs, p, s, y, fq, pl, sl, p46, s46, fq46


def test_compile_fullgraph():
    x = many_magnitudes((130, 96), torch.bfloat16, seed=22)
    x3 = many_magnitudes((2, 40, 48), torch.float16, seed=23)
    assert_compiles_to_same_bits(_pipeline, x, x3)


def test_cuda_graph_capture():
    x, _, outs = capture_pipeline(_pipeline, many_magnitudes, 257, 80, pad=7)
    # and the replayed results are the reference's
    gs = ref.global_scale(x)
    assert_exact(outs[0], gs, "graph gs")
    want = ref.quantize(x, gs, True)
    assert_exact(outs[1], want[0], "graph packed")
    assert_exact(outs[2], want[1], "graph scales")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    dev = "cuda:1"
    assert torch.cuda.current_device() == 0
    x = many_magnitudes((2, 130, 80), torch.bfloat16, seed=28, device=dev)
    gs = OPS.global_scale(x)
    assert gs.device == torch.device(dev)
    assert_exact(gs, ref.global_scale(x.cpu()), "gs on cuda:1")
    gsb = batch_gs(x)
    p, s = OPS.quantize(x, gsb, True)
    want = ref.quantize(x.cpu(), gsb.cpu(), True)
    assert p.device == torch.device(dev) and s.device == torch.device(dev)
    assert_exact(p, want[0], "packed cuda:1")
    assert_exact(s, want[1], "scales cuda:1")
    y = OPS.dequantize(p, s, gsb, torch.float16, True)
    assert_exact(y, ref.dequantize(want[0], want[1], gsb.cpu(), torch.float16, True), "dq cuda:1")
    assert_exact(OPS.quant_dequant(x, gsb), ref.quant_dequant(x.cpu(), gsb.cpu()), "qdq cuda:1")
    torch.cuda.synchronize(dev)
    with pytest.raises(RuntimeError, match="x on cuda:1, global_scale on cuda:0"):
        OPS.quantize(x, gsb.to("cuda:0"))
