"""The MX CUDA kernels (csrc/ops/mx.cu) against the pure-PyTorch reference, bit for bit.

mx_quantize for MXFP8 (elem e4m3) and MXFP4 (elem e2m1), rounding rceil and floor,
axis -1 (rowwise) and -2 (columnwise, the transposed result), linear and swizzled
scales, fp32 / fp16 / bf16, 2-D and 3-D, shapes that need padding and shapes that end
inside a shared-memory tile; mx_dequantize from both scale layouts (uint8 and
float8_e8m0fnu scales) into fp32 / fp16 / bf16. Data over many magnitudes and the
special cases of docs/spec.md sec. 3: element ties, signed zeros, all-zero blocks, values that
clip under "floor", amax / Emax just above a power of two (rceil rounds up), subnormal
inputs, NaN / inf blocks. Every output is compared byte for byte (floats: the bits, NaN
as NaN); outputs are poisoned before each call, so a byte the kernel does not write fails.
Also: non-contiguous and misaligned inputs,
opcheck, torch.compile, CUDA graphs, a second GPU. Skipped without a GPU.

The sweep compares with the reference run on the same CUDA tensors (fast); the
special-value tests compare with the reference on CPU copies.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops import reference as ref
from nvfp4_ops.reference._common import MX_BLOCK

from .._utils import poison_cuda_cache, requires_cuda
from ._helpers import DEV, DTYPE_IDS, DTYPES, E4M3, OPS, OUT_DTYPES, assert_compiles_to_same_bits
from ._helpers import assert_exact, capture_pipeline, gen, opcheck
from ._helpers import many_magnitudes as _many_magnitudes

pytestmark = requires_cuda

E8M0 = torch.float8_e8m0fnu
ELEMS = ["e4m3", "e2m1"]
ROUNDINGS = ["rceil", "floor"]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _is_colwise(x: torch.Tensor, axis: int) -> bool:
    return axis in (-2, x.dim() - 2)


def many_magnitudes(shape, dtype, seed=0, axis=-1, device=None) -> torch.Tensor:
    """:func:`._helpers.many_magnitudes` with MX's 32-element blocks (along ``axis``)."""
    return _many_magnitudes(shape, dtype, MX_BLOCK, seed, axis, device or DEV)


def run_quantize(x, elem, rounding, swizzle, axis, oracle_device=DEV):
    """Reference result (on oracle_device), then the op with its outputs poisoned."""
    want = ref.mx_quantize(x.to(oracle_device), elem, rounding, swizzle, axis)
    poison_cuda_cache(*want)
    got = OPS.mx_quantize(x, elem, rounding, swizzle, axis, "amax")
    return got, want


def check_mx(x, elem, rounding, axis, oracle_device, what, out_dtypes=None):
    """quantize with both scale layouts, then dequantize both into each out dtype."""
    out_dtypes = out_dtypes if out_dtypes is not None else [x.dtype]
    res = {}
    for swz in (False, True):
        got, want = run_quantize(x, elem, rounding, swz, axis, oracle_device)
        tag = f"{what} [{elem} {rounding} axis={axis} swizzle={swz}]"
        assert_exact(got[0], want[0], f"{tag} data")
        assert_exact(got[1], want[1], f"{tag} scales")
        res[swz] = got
    for od in out_dtypes:
        want = ref.mx_dequantize(res[False][0].to(oracle_device), res[False][1].to(oracle_device),
                                 elem, od)
        for swz in (False, True):
            poison_cuda_cache(want)
            got = OPS.mx_dequantize(res[swz][0], res[swz][1], elem, od, swz)
            assert_exact(got, want, f"{what} [{elem} {rounding} axis={axis}] dequantize "
                                    f"swizzled={swz} -> {od}")


# --------------------------------------------------------------------------------------
# the sweep (reference on the same CUDA tensors)
# --------------------------------------------------------------------------------------

# axis -1: M any, K % 32 == 0. axis -2: M % 32 == 0, K any; K values that end inside a
# column tile (64 columns for 16-bit inputs, 32 for fp32), that make rows not a multiple
# of 16 bytes (the element-load path: 1, 130, 257), and M over one 128-row tile (160).
ROW_SHAPES = [(m, k) for m in (1, 32, 96, 130, 257) for k in (32, 96, 160, 4096)]
COL_SHAPES = [(m, k) for m in (32, 96, 160) for k in (1, 36, 40, 96, 130, 257, 4096)]


@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sweep_matches_reference(dtype, elem, rounding, axis):
    shapes = ROW_SHAPES if axis == -1 else COL_SHAPES
    for m, k in shapes:
        for batches in (None, 2):
            shape = (m, k) if batches is None else (batches, m, k)
            seed = zlib.crc32(f"{dtype} {shape} {axis}".encode())
            x = many_magnitudes(shape, dtype, seed, axis=axis)
            # the positive axis spelling on half of the shapes
            ax = axis if (m + k) % 2 else x.dim() + axis
            check_mx(x, elem, rounding, ax, DEV, f"{dtype} {shape}")


# --------------------------------------------------------------------------------------
# special values (reference on CPU copies)
# --------------------------------------------------------------------------------------

_E2M1_BOUNDS = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
_E2M1_GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def _e4m3_grid() -> list[float]:
    return torch.arange(0, 0x7F, dtype=torch.uint8).view(E4M3).float().tolist()  # 0..448


def _special_blocks(dtype) -> list[list[float]]:
    """32-element blocks (Python floats) covering docs/spec.md sec. 3. A block whose amax is
    Emax * 2^s gets b = 127 + s under both roundings, so its values v * 2^s are scaled
    to exactly v: midpoints of the element grid are exact ties."""
    inf, nan = math.inf, math.nan
    fin = torch.finfo(dtype)
    fp16 = dtype == torch.float16

    def nxt(v, d, n=1):  # the n-th next value of the dtype from v towards d
        t = torch.tensor([v], dtype=dtype)
        for _ in range(n):
            t = torch.nextafter(t, torch.tensor([d], dtype=dtype))
        return t.item()

    def fill(vals):
        vals = list(vals)[:32]
        return vals + [0.0] * (32 - len(vals))

    blocks = [[0.0] * 32, [-0.0] * 32, [0.0, -0.0] * 16]
    grid8 = _e4m3_grid()
    mids8 = [(a + b) / 2 for a, b in zip(grid8[:-1], grid8[1:])]  # 126 E4M3 ties
    scales = [0, -3, 4, -9] if fp16 else [0, -3, 4, -9, 30, -40, 100, -120]
    for s in scales:
        S = 2.0**s
        for i in range(0, len(mids8), 30):  # E4M3 ties, alternating signs
            vals = [448 * S] + [(m if j % 2 else -m) * S for j, m in enumerate(mids8[i:i + 30])]
            blocks.append(fill(vals + [-0.0]))
        vals = [6 * S] + [v * S for v in _E2M1_BOUNDS] + [-v * S for v in _E2M1_BOUNDS]
        vals += [v * S for v in _E2M1_GRID] + [-v * S for v in _E2M1_GRID]
        blocks.append(fill(vals + [-0.0, 0.0]))  # E2M1 ties and grid values
        # just off the E2M1 ties (one ulp of the dtype either side)
        blocks.append(fill([-6 * S] + [nxt(v * S, 0.0) for v in _E2M1_BOUNDS]
                           + [-nxt(v * S, 100.0 * S) for v in _E2M1_BOUNDS]))
        # amax / Emax just above 2^s: rceil rounds up (or RN(amax / Emax) == 2^s)
        for e in (448.0, 6.0):
            for n in (1, 2, 3):
                a = nxt(e * S, 1e30 * S, n)
                blocks.append(fill([a, -a / 3, a / 448, -e * S, e * S / 2, 1.1 * S]))
            blocks.append(fill([-nxt(e * S, 0.0), e * S / 7]))  # just below
        # floor clips: amax in (Emax, 2^(emax+1)) * 2^s
        for a in (480.0, 500.0, 510.0, 7.0, 7.5, 449.0, 6.5):
            blocks.append(fill([a * S, -a * S, 464 * S, 7.25 * S, -6.5 * S, 3.3 * S, -0.0]))
    # extremes of the dtype: huge amax, subnormal amax
    big = fin.max
    blocks.append(fill([big, -big / 2, big / 448, 1.0, -0.0]))
    blocks.append(fill([fin.tiny * 0.5, -fin.tiny * 0.25, fin.tiny / 8, 0.0, -0.0]))
    sub = torch.tensor([1.0], dtype=dtype)
    sub = torch.nextafter(torch.zeros(1, dtype=dtype), sub).item()  # smallest subnormal
    blocks.append(fill([sub, -sub, 3 * sub, -7 * sub]))
    blocks.append(fill([fin.tiny, -fin.tiny * 1.5, sub * 5]))
    # non-finite blocks: scale 255, element bytes 0, dequantize to NaN
    blocks.append(fill([1.0, nan] + [0.5] * 30))
    blocks.append(fill([inf] + [-1.0] * 31))
    blocks.append(fill([-inf, 2.0] + [-0.0] * 30))
    blocks.append(fill([nan, inf, -inf] + [3.0] * 29))
    blocks.append(fill([-0.0] * 31 + [nan]))
    # plain blocks
    blocks.append([0.1 * (i - 15) for i in range(32)])
    blocks.append([(-1.0) ** i * 2.0 ** (i - 20) for i in range(32)])
    return blocks


def special_tensor(dtype, rows=130, blocks_per_row=5, batches=None, axis=-1, device=None):
    """Blocks along `axis`; rows = the number of 32-blocks lines."""
    blocks = _special_blocks(dtype)
    n = rows * blocks_per_row * (batches or 1)
    data = [blocks[i % len(blocks)] for i in range(n)]
    data = [b[i % 32:] + b[: i % 32] for i, b in enumerate(data)]  # max not always first
    shape = (rows, blocks_per_row * 32)
    if batches is not None:
        shape = (batches, *shape)
    x = torch.tensor(data, dtype=torch.float64).reshape(shape).to(dtype)
    if axis == -2:
        x = x.transpose(-1, -2).contiguous()
    return x.to(device or DEV)


@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_special_values(dtype, axis):
    n = len(_special_blocks(dtype))
    x = special_tensor(dtype, rows=n // 3 + 1, blocks_per_row=3, axis=axis)
    x3 = special_tensor(dtype, rows=67, blocks_per_row=2, batches=2, axis=axis)
    for elem in ELEMS:
        for rounding in ROUNDINGS:
            check_mx(x, elem, rounding, axis, "cpu", f"{dtype} specials", OUT_DTYPES)
            check_mx(x3, elem, rounding, axis, "cpu", f"{dtype} specials 3-D")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cpu_oracle_agrees(dtype):
    """A slice of the sweep against the reference on CPU."""
    for axis in (-1, -2):
        x = many_magnitudes((2, 160, 96), dtype, seed=7, axis=axis)
        for elem in ELEMS:
            check_mx(x, elem, "rceil", axis, "cpu", f"{dtype} cpu oracle", OUT_DTYPES)
            check_mx(x, elem, "floor", axis, "cpu", f"{dtype} cpu oracle")


def test_fp32_denormal_inputs():
    g = gen(3)
    x = (torch.randn(64, 96, generator=g) * 1e-40).to(DEV)
    x[::3] *= 1e-4
    for axis in (-1, -2):
        for elem in ELEMS:
            for rounding in ROUNDINGS:
                check_mx(x, elem, rounding, axis, "cpu", "fp32 denormals", OUT_DTYPES)


def test_larger_shapes():
    """Several waves of CTAs, a grid-stride tail and many column tiles."""
    x = many_magnitudes((1024, 8192 + 64), torch.bfloat16, seed=30)
    check_mx(x, "e4m3", "rceil", -1, DEV, "bf16 1024x8256")
    check_mx(x, "e2m1", "floor", -1, DEV, "bf16 1024x8256")
    check_mx(x, "e4m3", "floor", -2, DEV, "bf16 1024x8256")
    check_mx(x, "e2m1", "rceil", -2, DEV, "bf16 1024x8256")
    y = many_magnitudes((3, 4096 + 32, 520), torch.float32, seed=31, axis=-2)
    check_mx(y, "e4m3", "rceil", -2, DEV, "fp32 3x4128x520")


# --------------------------------------------------------------------------------------
# dequantize: every element byte with every scale byte
# --------------------------------------------------------------------------------------


def _all_codes(rows=130, kb=8, seed=1):
    """Element bytes 0..255 and scale bytes 0..255 (255 = NaN, 0 and 254 subnormal
    multipliers / huge ones) in shuffled positions."""
    g = gen(seed)
    k = kb * 32
    data = torch.arange(256, dtype=torch.uint8).repeat(rows * k // 256 + 1)[: rows * k]
    data = data[torch.randperm(rows * k, generator=g)].reshape(rows, k)
    scales = torch.arange(256, dtype=torch.uint8).repeat(rows * kb // 256 + 1)[: rows * kb]
    scales = scales[torch.randperm(rows * kb, generator=g)].reshape(rows, kb)
    return data, scales


@pytest.mark.parametrize("out_dtype", OUT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("elem", ELEMS)
def test_dequantize_all_codes(elem, out_dtype):
    data, scales = _all_codes()
    if elem == "e4m3":
        data = data.view(E4M3)
    else:
        data = data[:, : data.shape[1] // 2].contiguous()  # packed: K/2 bytes per row
    want = ref.mx_dequantize(data, scales, elem, out_dtype)
    sw = ref.swizzle_scales(scales)
    for sdt in (torch.uint8, E8M0):
        poison_cuda_cache(want)
        got = OPS.mx_dequantize(data.to(DEV), scales.view(sdt).to(DEV), elem, out_dtype)
        assert_exact(got, want, f"{elem} all codes -> {out_dtype}, scales {sdt}")
        poison_cuda_cache(want)
        got = OPS.mx_dequantize(data.to(DEV), sw.view(sdt).to(DEV), elem, out_dtype, True)
        assert_exact(got, want, f"{elem} all codes, swizzled -> {out_dtype}, scales {sdt}")
    # 3-D, with garbage in the swizzled padding (the kernel must not read it)
    d3 = torch.stack([data, data.flip(0)])
    s3 = torch.stack([scales, scales.flip(1)])
    want = ref.mx_dequantize(d3, s3, elem, out_dtype)
    sw3 = ref.swizzle_scales(s3)
    where_data = ref.swizzle_scales(torch.ones_like(s3))  # 1 where a scale, 0 in padding
    sw3 = torch.where(where_data == 0, torch.full_like(sw3, 0xA5), sw3)
    got = OPS.mx_dequantize(d3.to(DEV), sw3.to(DEV), elem, out_dtype, True)
    assert_exact(got, want, f"{elem} 3-D swizzled with garbage padding -> {out_dtype}")


def test_empty_shapes():
    for shape in [(0, 32), (3, 0, 32), (0, 5, 32), (4, 0), (2, 32, 0)]:
        x = torch.zeros(shape, device=DEV)
        for axis in (-1, -2):
            if x.shape[axis] % 32:
                continue
            for swz in (False, True):
                for elem in ELEMS:
                    want = ref.mx_quantize(x, elem, "rceil", swz, axis)
                    got = OPS.mx_quantize(x, elem, "rceil", swz, axis, "amax")
                    for a, b in zip(got, want):
                        assert a.shape == b.shape and a.dtype == b.dtype, (shape, axis, swz)
                    y = OPS.mx_dequantize(got[0], got[1], elem, torch.bfloat16, swz)
                    assert y.shape == ref.mx_dequantize(*want, elem, torch.bfloat16, swz).shape


# --------------------------------------------------------------------------------------
# layouts of the inputs
# --------------------------------------------------------------------------------------


def test_non_contiguous_and_misaligned_inputs():
    base = many_magnitudes((96, 160), torch.bfloat16, seed=11)
    cases = {
        "transposed": (base.t(), (-1, -2)),                         # [160, 96]
        "column slice": (base[:, 32:128], (-1, -2)),
        "row step": (base[::3], (-1,)),                             # [32, 160]
        "aligned offset": (base.reshape(-1)[8:8 + 64 * 96].reshape(64, 96), (-1, -2)),
        "odd offset": (base.reshape(-1)[1:1 + 64 * 32].reshape(64, 32), (-1, -2)),
        "odd offset, odd K": (base.reshape(-1)[3:3 + 32 * 67].reshape(32, 67), (-2,)),
        "3-D permuted": (base.reshape(96, 5, 32).permute(1, 0, 2), (-1, -2)),  # [5, 96, 32]
    }
    for name, (x, axes) in cases.items():
        for axis in axes:
            for elem in ELEMS:
                check_mx(x, elem, "rceil", axis, DEV, name)
    # non-contiguous data / scales for dequantize
    x = many_magnitudes((4, 130, 64), torch.float16, seed=12)
    d, s = ref.mx_quantize(x, "e4m3")
    want = ref.mx_dequantize(d, s, "e4m3", torch.float32)
    d_nc = torch.cat([d, d], dim=-1)[..., :64]
    s_nc = s.transpose(0, 1).contiguous().transpose(0, 1)
    assert_exact(OPS.mx_dequantize(d_nc, s_nc, "e4m3", torch.float32), want, "non-contiguous")
    d4, s4 = ref.mx_quantize(x, "e2m1")
    want = ref.mx_dequantize(d4, s4, "e2m1", torch.bfloat16)
    d4_off = torch.cat([torch.zeros(1, dtype=torch.uint8, device=DEV), d4.reshape(-1)])[1:]
    assert_exact(OPS.mx_dequantize(d4_off.reshape(d4.shape), s4, "e2m1", torch.bfloat16),
                 want, "misaligned packed data")


# --------------------------------------------------------------------------------------
# scale_method "mse": handed to the search kernels (axis -2 through x^T)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, -2])
def test_mse_dispatch(axis):
    x = many_magnitudes((2, 64, 96), torch.bfloat16, seed=14, axis=axis)
    for elem in ELEMS:
        for swz in (False, True):
            want = ref.mx_quantize(x, elem, "floor", swz, axis, "mse")
            poison_cuda_cache(*want)
            got = OPS.mx_quantize(x, elem, "floor", swz, axis, "mse")
            assert_exact(got[0], want[0], f"mse {elem} axis={axis} swizzle={swz} data")
            assert_exact(got[1], want[1], f"mse {elem} axis={axis} swizzle={swz} scales")


# --------------------------------------------------------------------------------------
# torch.library / torch.compile / CUDA graphs / other devices
# --------------------------------------------------------------------------------------


def _samples():
    x2 = many_magnitudes((130, 64), torch.bfloat16, seed=20)
    x3 = many_magnitudes((2, 96, 96), torch.float32, seed=21)
    d8, s8 = ref.mx_quantize(x2, "e4m3", "rceil", True)
    d4, s4 = ref.mx_quantize(x3, "e2m1", "floor", False, -2)
    return [
        ("mx_quantize", (x2, "e4m3", "rceil", False, -1, "amax")),
        ("mx_quantize", (x2, "e2m1", "floor", True, -1, "amax")),
        ("mx_quantize", (x3, "e4m3", "floor", True, -2, "amax")),
        ("mx_quantize", (x3, "e2m1", "rceil", False, 1, "amax")),
        ("mx_dequantize", (d8, s8, "e4m3", torch.bfloat16, True)),
        ("mx_dequantize", (d4, s4, "e2m1", torch.float32, False)),
        ("mx_dequantize", (d4, s4.view(E8M0), "e2m1", torch.float16, False)),
    ]


@pytest.mark.parametrize("i", range(7))
def test_opcheck(i):
    name, args = _samples()[i]
    float8 = any(isinstance(a, torch.Tensor) and a.dtype in (E4M3, E8M0) for a in args)
    opcheck(getattr(OPS, name).default, args, schema_ok=not float8)


def _pipeline(x):
    outs = []
    for elem, rounding, swz, axis in (("e4m3", "rceil", True, -1), ("e2m1", "floor", False, -1),
                                      ("e4m3", "floor", False, -2), ("e2m1", "rceil", True, -2)):
        d, s = OPS.mx_quantize(x, elem, rounding, swz, axis, "amax")
        y = OPS.mx_dequantize(d, s, elem, torch.float32, swz)
        outs += [d, s, y]
    return outs


def test_compile_fullgraph():
    x = many_magnitudes((160, 96), torch.bfloat16, seed=22)
    x3 = many_magnitudes((2, 64, 160), torch.float16, seed=23)
    assert_compiles_to_same_bits(_pipeline, x, x3)


def test_cuda_graph_capture():
    x, xt, outs = capture_pipeline(_pipeline, many_magnitudes, 288, 160, pad=8)
    want = ref.mx_quantize(x, "e4m3", "rceil", True)
    assert_exact(outs[0], want[0], "graph data")
    assert_exact(outs[1], want[1], "graph scales")
    want = ref.mx_quantize(xt, "e2m1", "rceil", True, -2)
    assert_exact(outs[12 + 9], want[0], "graph data colwise")
    assert_exact(outs[12 + 10], want[1], "graph scales colwise")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    dev = "cuda:1"
    assert torch.cuda.current_device() == 0
    x = many_magnitudes((2, 160, 96), torch.bfloat16, seed=28, device=dev)
    for axis in (-1, -2):
        d, s = OPS.mx_quantize(x, "e4m3", "rceil", True, axis, "amax")
        want = ref.mx_quantize(x.cpu(), "e4m3", "rceil", True, axis)
        assert d.device == torch.device(dev) and s.device == torch.device(dev)
        assert_exact(d, want[0], f"data cuda:1 axis={axis}")
        assert_exact(s, want[1], f"scales cuda:1 axis={axis}")
        y = OPS.mx_dequantize(d, s, "e4m3", torch.float16, True)
        assert y.device == torch.device(dev)
        assert_exact(y, ref.mx_dequantize(*want, "e4m3", torch.float16, True), "dq cuda:1")
    torch.cuda.synchronize(dev)
