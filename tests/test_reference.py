"""Tests of the pure-PyTorch reference (nvfp4_ops/reference.py) against SPEC.md.

CPU only. Exact (atol=0) hand vectors from the spec, an independent literal oracle written
with numpy float32 scalars/arrays and lookup tables (no bit tricks, no torch float8 casts),
properties (round trips, layouts, batching, strides) and the exhaustive scale search
checked against brute force over every candidate.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

# Loaded by path: the reference depends on torch only, so its tests run whether or not the
# compiled extension (imported by the package __init__) is built.
_REF_PATH = Path(__file__).resolve().parents[1] / "nvfp4_ops" / "reference.py"
_spec = importlib.util.spec_from_file_location("nvfp4_ops_reference_under_test", _REF_PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

F32 = torch.float32
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
E8M0 = getattr(torch, "float8_e8m0fnu", None)


@pytest.fixture(autouse=True)
def _single_thread():
    """Run single-threaded: these tests issue many small ops, and on a busy 2-core machine
    OpenMP barriers rather than arithmetic dominate their time. Results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def hexbytes(t: torch.Tensor) -> str:
    return " ".join(f"{b:02X}" for b in t.reshape(-1).view(torch.uint8).tolist())


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view for bitwise comparison (NaN payloads and signed zeros included)."""
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert torch.equal(bits(a.contiguous()), bits(b.contiguous()))


def f32(v: float) -> torch.Tensor:
    return torch.tensor([v], dtype=F32)


def nextafter(v: float, direction: float) -> float:
    return torch.nextafter(f32(v), f32(direction)).item()


# --------------------------------------------------------------------------------------
# Independent oracle: numpy float32 arithmetic (one IEEE op each) and lookup tables
# --------------------------------------------------------------------------------------

NPF = np.float32
# Positive E4M3 values by byte 0x00..0x7E, from the format definition.
E4M3_POS = np.array(
    [(m / 8) * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7) for e in range(16) for m in range(8)][:127]
)
E2M1_POS = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def oracle_e4m3(v: np.ndarray) -> np.ndarray:
    """Bytes of fp32 values: nearest E4M3 value, ties to the even byte, saturating, NaN 0x7F."""
    v = np.asarray(v, dtype=np.float32)
    mag = np.minimum(np.abs(v).astype(np.float64), 448.0)
    hi = np.clip(np.searchsorted(E4M3_POS, mag, side="left"), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    dlo, dhi = mag - E4M3_POS[lo], E4M3_POS[hi] - mag
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    out = (pick | (np.signbit(v).astype(np.int64) << 7)).astype(np.uint8)
    return np.where(np.isnan(v), np.uint8(0x7F), out)


def oracle_e2m1(y: np.ndarray) -> np.ndarray:
    """E2M1 codes by the interval table of SPEC section 1 (NaN magnitude gives 0)."""
    y = np.asarray(y, dtype=np.float32)
    a = np.abs(y).astype(np.float64)
    conds = [
        a <= 0.25,
        (a > 0.25) & (a < 0.75),
        (a >= 0.75) & (a <= 1.25),
        (a > 1.25) & (a < 1.75),
        (a >= 1.75) & (a <= 2.5),
        (a > 2.5) & (a < 3.5),
        (a >= 3.5) & (a <= 5),
        a > 5,
    ]
    mag = np.select(conds, np.arange(8), default=0)
    return (mag | (np.signbit(y).astype(np.int64) << 3)).astype(np.uint8)


def oracle_nvfp4(xb: np.ndarray, gs: float, sf_bytes: np.ndarray | None = None):
    """Literal SPEC section 2 on fp32 blocks [n, 16]: (scale bytes, codes, fp32 dequant)."""
    with np.errstate(all="ignore"):
        xb = xb.astype(np.float32)
        gs = NPF(gs)
        if sf_bytes is None:
            vmax = np.abs(xb).max(axis=1)
            sixth = NPF(1) / NPF(6)
            sf_bytes = oracle_e4m3(gs * (vmax * sixth))
            sf_bytes = np.where(np.isfinite(xb).all(axis=1), sf_bytes, np.uint8(0x7F))
        sf32 = np.where(sf_bytes == 0x7F, np.nan, E4M3_POS[np.minimum(sf_bytes, 126)]).astype(np.float32)
        denom = sf32 * (NPF(1) / gs)
        osc = np.where((sf32 == 0) | (denom == 0), NPF(0), NPF(1) / denom).astype(np.float32)
        y = xb * osc[:, None]
        codes = oracle_e2m1(y)
        codes = np.where(np.isnan(sf32)[:, None], np.uint8(0), codes)
        s = sf32 / gs
        vals = np.where(codes >= 8, -1.0, 1.0) * E2M1_POS[codes & 7]
        dq = vals.astype(np.float32) * s[:, None]
        return sf_bytes.astype(np.uint8), codes, dq


def oracle_sse(xb: np.ndarray, dq: np.ndarray) -> np.ndarray:
    err = xb.astype(np.float32) - dq.astype(np.float32)
    sq = err * err
    acc = sq[:, 0].copy()
    for i in range(1, sq.shape[1]):
        acc = acc + sq[:, i]
    return acc


def oracle_mx(xb: np.ndarray, elem: str, rounding: str):
    """Literal SPEC section 3 on fp32 blocks [n, 32]: (scale bytes, element bytes or codes)."""
    emax_val, emax_exp = {"e4m3": (448.0, 8), "e2m1": (6.0, 2)}[elem]
    xb = xb.astype(np.float32)
    finite = np.isfinite(xb).all(axis=1)
    amax = np.where(finite, np.abs(xb).max(axis=1), NPF(0)).astype(np.float32)
    if rounding == "rceil":
        d = amax / NPF(emax_val)
        b = ((d.view(np.uint32).astype(np.int64) + 0x7FFFFF) & 0x7F800000) >> 23
    else:
        b = np.maximum(((amax.view(np.uint32).astype(np.int64) >> 23) & 0xFF) - emax_exp, 0)
    b = np.where(finite, b, 255)
    # x * 2^(127-b) is exact in float64; one rounding to fp32 gives RN(x * 2^(127-b)).
    y = (xb.astype(np.float64) * np.exp2(127.0 - np.minimum(b, 254))[:, None]).astype(np.float32)
    data = oracle_e4m3(y) if elem == "e4m3" else oracle_e2m1(y)
    data = np.where(finite[:, None], data, np.uint8(0))
    return b.astype(np.uint8), data


def random_blocks(n: int, seed: int, block: int = 16) -> torch.Tensor:
    """fp32 blocks mixing Gaussian values, exact grid ties and tiny values, varied scales."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 0.5, 1.0, 3.0, 4.0])
    ties = grid[torch.randint(len(grid), (n, block), generator=g)]
    ties = ties * torch.where(torch.rand(n, block, generator=g) < 0.5, -1.0, 1.0)
    gauss = torch.randn(n, block, generator=g)
    x = torch.where(torch.rand(n, 1, generator=g) < 0.5, ties, gauss)
    scale = torch.exp2(torch.randint(-20, 20, (n, 1), generator=g).float())
    return (x * scale).to(F32)


# --------------------------------------------------------------------------------------
# Hand vectors from the brief / SPEC
# --------------------------------------------------------------------------------------


def test_nvfp4_hand_vector_gs1():
    x = f32(0).new_tensor(
        [[0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5, 6]]
    )
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(packed) == "00 22 44 66 A8 CA EC 7E"
    assert scales.dtype == torch.float8_e4m3fn and hexbytes(scales) == "38"


def test_nvfp4_hand_vector_bf16():
    v = [0, -0.0, 0.10009765625, -0.25, 0.30078125, 0.5, -0.75, 1, 1.25, -1.6015625, 2,
         2.40625, -3.296875, 1.1015625, -0.6015625, 0.8984375]
    x = torch.tensor([v], dtype=torch.bfloat16)
    gs = torch.full((1,), 2688.0) / torch.full((1,), 10.0)
    assert gs.item() == np.float32(268.8)
    packed, scales = ref.quantize(x, gs)
    assert hexbytes(scales) == "71"
    assert hexbytes(packed) == "80 90 21 4B D4 66 4F 3A"


@pytest.mark.parametrize(
    "rounding, scale, data",
    [("floor", 127, "7E 85 2A 38 C4 4F 6C F8"), ("rceil", 128, "78 83 22 30 BC 47 64 F0")],
)
def test_mxfp8_hand_vector(rounding, scale, data):
    x = torch.tensor([[500, -0.01, 0.3, 1, -3, 7.5, 100, -250] * 4], dtype=F32)
    d, s = ref.mx_quantize(x, "e4m3", rounding)
    assert d.dtype == torch.float8_e4m3fn and s.dtype == torch.uint8
    assert s.tolist() == [[scale]]
    assert hexbytes(d) == " ".join([data] * 4)


def test_swizzle_hand_positions():
    S = torch.zeros(130, 5, dtype=torch.uint8)
    marks = {(0, 4): 1, (33, 0): 2, (96, 2): 3, (129, 4): 4}
    for (r, c), v in marks.items():
        S[r, c] = v
    sw = ref.swizzle_scales(S)
    assert sw.shape == (256, 8) and sw.numel() == 2048
    flat = sw.reshape(-1)
    assert {i: flat[i].item() for i in (512, 20, 14, 1552)} == {512: 1, 20: 2, 14: 3, 1552: 4}
    assert int((flat != 0).sum()) == 4


# --------------------------------------------------------------------------------------
# Element formats
# --------------------------------------------------------------------------------------

E2M1_CASES = [
    (0.0, 0x0), (-0.0, 0x8), (0.25, 0x0), (-0.25, 0x8), (0.5, 0x1), (0.75, 0x2), (1.25, 0x2),
    (1.5, 0x3), (1.75, 0x4), (2.5, 0x4), (3.0, 0x5), (3.5, 0x6), (5.0, 0x6), (6.0, 0x7),
    (1e30, 0x7), (math.inf, 0x7), (-math.inf, 0xF), (-1e-45, 0x8), (-3.0, 0xD),
]


@pytest.mark.parametrize("value, code", E2M1_CASES)
def test_e2m1_encode_cases(value, code):
    assert ref.e2m1_encode(f32(value)).item() == code


@pytest.mark.parametrize("t", [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
def test_e2m1_thresholds_neighbours(t):
    below, above = nextafter(t, 0.0), nextafter(t, 10.0)
    ys = torch.tensor([below, t, above, -below, -t, -above], dtype=F32)
    assert ref.e2m1_encode(ys).tolist() == oracle_e2m1(ys.numpy()).tolist()
    # The two neighbours fall in different codes, and exactly one of them shares t's code.
    c = ref.e2m1_encode(ys[:3]).tolist()
    assert c[0] != c[2] and (c[1] == c[0]) != (c[1] == c[2])


def test_e2m1_nan_keeps_sign_and_dense_sweep():
    nan = torch.tensor([math.nan], dtype=F32)
    assert ref.e2m1_encode(nan).item() == 0x0
    assert ref.e2m1_encode(-nan).item() == 0x8
    y = torch.linspace(-8, 8, 200001, dtype=F32)
    assert torch.equal(ref.e2m1_encode(y), torch.from_numpy(oracle_e2m1(y.numpy())))


def test_e2m1_decode_pack_unpack():
    codes = torch.arange(16, dtype=torch.uint8)
    vals = ref.e2m1_decode(codes)
    assert_bits_equal(vals, ref.E2M1_VALUES)
    assert torch.signbit(vals[8]) and vals[8] == 0
    assert torch.equal(ref.e2m1_encode(vals), codes)
    assert ref.pack_e2m1(torch.tensor([1, 2, 3, 4], dtype=torch.uint8)).tolist() == [0x21, 0x43]
    c = torch.randint(0, 16, (3, 5, 8), dtype=torch.uint8)
    assert torch.equal(ref.unpack_e2m1(ref.pack_e2m1(c)), c)


def test_e4m3_roundtrip_all_bytes():
    b = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    v = ref.e4m3_to_fp32(b)
    finite = ~torch.isnan(v)
    assert int((~finite).sum()) == 2 and torch.isnan(v[0x7F]) and torch.isnan(v[0xFF])
    assert torch.equal(ref.e4m3_from_fp32(v)[finite], b[finite])
    assert ref.e4m3_to_fp32(torch.tensor([0x7E], dtype=torch.uint8)).item() == 448.0
    assert ref.e4m3_to_fp32(torch.tensor([0x01], dtype=torch.uint8)).item() == 2.0**-9


def test_e4m3_from_fp32_matches_oracle():
    pos = torch.from_numpy(E4M3_POS).to(F32)
    mids = (pos[1:].double() + pos[:-1].double()) / 2  # exact in fp32 (5 significant bits)
    mids = mids.to(F32)
    pts = torch.cat([pos, mids, torch.nextafter(mids, torch.zeros_like(mids)),
                     torch.nextafter(mids, torch.full_like(mids, 1e9)),
                     torch.tensor([448.0, 464.0, nextafter(464.0, 0), 479.9, 480.0, 1e30, math.inf,
                                   1e-45, 2.0**-10, nextafter(2.0**-10, 1.0), 2.0**-11])])
    g = torch.Generator().manual_seed(1)
    rnd = torch.exp2(torch.rand(20000, generator=g) * 30 - 14) * torch.rand(20000, generator=g)
    pts = torch.cat([pts, rnd.to(F32)])
    pts = torch.cat([pts, -pts])
    assert torch.equal(ref.e4m3_from_fp32(pts), torch.from_numpy(oracle_e4m3(pts.numpy())))
    nan = torch.tensor([math.nan, -math.nan], dtype=F32)
    assert ref.e4m3_from_fp32(nan).tolist() == [0x7F, 0x7F]
    assert ref.e4m3_from_fp32(torch.tensor([-1e30, -math.inf])).tolist() == [0xFE, 0xFE]


# --------------------------------------------------------------------------------------
# NVFP4: hand-derived cases
# --------------------------------------------------------------------------------------


def _block(*vals: float, dtype=F32) -> torch.Tensor:
    return torch.tensor([list(vals) + [0.0] * (16 - len(vals))], dtype=dtype)


@pytest.mark.parametrize(
    "vmax, byte, first, dq",
    [
        (6 * 2.0**-8, 0x02, 0xD7, (6 * 2.0**-8, -3 * 2.0**-8)),  # sf = 2^-8: y = 6, -3
        (21 * 2.0**-9, 0x04, 0xD7, (6 * 2.0**-7, -3 * 2.0**-7)),  # 3.5 * 2^-9 ties to 4 * 2^-9
        (15 * 2.0**-9, 0x02, 0xE7, (6 * 2.0**-8, -4 * 2.0**-8)),  # 2.5 * 2^-9 ties to 2 * 2^-9
        (6 * 2.0**-9 * 0.4, 0x00, 0x80, (0.0, -0.0)),  # 0.4 * 2^-9 underflows: osc = 0
    ],
)
def test_nvfp4_subnormal_scale(vmax, byte, first, dq):
    # gs = 1: sf = E4M3(RN(vmax * RN(1/6))) is an E4M3 subnormal (k * 2^-9).
    x = _block(vmax, -vmax / 2)
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(scales) == f"{byte:02X}"
    assert hexbytes(packed) == f"{first:02X}" + " 00" * 7
    out = ref.dequantize(packed, scales, f32(1.0), F32)
    assert_bits_equal(out[0, :2], torch.tensor(dq, dtype=F32))


def test_nvfp4_scale_uses_rn_of_one_sixth():
    # v = 0x40E3FFFF (7.1249995): RN(v * RN(1/6)) is exactly the E4M3 midpoint 1.1875 and
    # ties to the even byte 0x3A (1.25); RN(v / 6) would be just below it and give 0x39.
    v = torch.tensor([0x40E3FFFF], dtype=torch.int32).view(F32).item()
    packed, scales = ref.quantize(_block(v, -v), f32(1.0))
    assert hexbytes(scales) == "3A" and hexbytes(packed)[:2] == "F7"


def test_nvfp4_zero_times_inf_takes_sign_of_x():
    # gs = 2^126, vmax = 6 * 2^-135: sf = 2^-9, RN(sf * RN(1/gs)) = 2^-135 and osc = +inf.
    # RN(+-0 * inf) is NaN: magnitude code 0 with the sign of x (not the device's NaN sign).
    gs = f32(2.0**126)
    x = _block(6 * 2.0**-135, 0.0, -0.0, -3 * 2.0**-135)
    packed, scales = ref.quantize(x, gs)
    assert hexbytes(scales) == "01" and hexbytes(packed)[:5] == "07 F8"
    sf, codes, _ = oracle_nvfp4(x.numpy(), 2.0**126)
    assert codes[0, [0, 3]].tolist() == [0x7, 0xF]  # the oracle agrees where y is not NaN
    dq = ref.dequantize(packed, scales, gs, F32)
    assert_bits_equal(dq[0, :4], torch.tensor([6 * 2.0**-135, 0.0, -0.0, -6 * 2.0**-135]))


def test_nvfp4_saturating_scale():
    x = _block(6000.0, -100.0, 3.0)
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(scales) == "7E"
    # osc = RN(1/448): 6000 -> 13.4 -> 6; -100 -> -0.223 -> -0 (0x8); 3 -> 0
    assert hexbytes(packed)[:5] == "87 00"
    dq = ref.dequantize(packed, scales, f32(1.0), F32)
    assert dq[0, 0].item() == 2688.0 and dq[0, 1].item() == 0.0 and torch.signbit(dq[0, 1])


def test_nvfp4_zero_blocks_keep_sign():
    x = _block(0.0, -0.0, 0.0, -0.0)
    packed, scales = ref.quantize(x, f32(1.0))
    assert hexbytes(scales) == "00" and hexbytes(packed) == "80 80 00 00 00 00 00 00"
    dq = ref.dequantize(packed, scales, f32(1.0), F32)
    assert torch.equal(dq, torch.zeros_like(dq)) and torch.signbit(dq[0, 1])


def test_nvfp4_non_finite_blocks():
    x = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    x[0, 3], x[0, 20], x[1, 15] = math.nan, math.inf, -math.inf
    gs = f32(100.0)
    packed, scales = ref.quantize(x, gs)
    s = scales.view(torch.uint8)
    assert s[0].tolist() == [0x7F, 0x7F] and s[1, 0].item() == 0x7F
    assert (packed[0] == 0).all() and (packed[1, :8] == 0).all()
    assert torch.equal(packed[1, 8:], ref.quantize(x[1:, 16:], gs)[0][0])
    dq = ref.dequantize(packed, scales, gs, F32)
    assert torch.isnan(dq[0]).all() and torch.isnan(dq[1, :16]).all() and torch.isfinite(dq[1, 16:]).all()
    # NaN anywhere makes the global scale NaN, and then every scale NaN.
    gsn = ref.global_scale(x)
    assert torch.isnan(gsn).all()
    p2, s2 = ref.quantize(x, gsn)
    assert (s2.view(torch.uint8) == 0x7F).all() and (p2 == 0).all()


def test_nvfp4_global_scale_inf_for_tiny_tensor():
    # amax < 2688 / FLT_MAX: gs = +inf. Zero block: RN(inf * 0) = NaN -> 0x7F (codes 0);
    # other blocks: sf = 448 and RN(448 * RN(1/inf)) = 0, so osc = 0: codes +-0, dequant 0.
    x = torch.zeros(1, 32)
    x[0, 16:] = torch.linspace(-1e-37, 1e-37, 16)
    gs = ref.global_scale(x)
    assert gs.item() == math.inf
    packed, scales = ref.quantize(x, gs)
    assert hexbytes(scales) == "7F 7E"
    assert hexbytes(packed) == "00 " * 8 + "88 88 88 88 00 00 00 00"
    dq = ref.dequantize(packed, scales, gs, F32)
    assert torch.isnan(dq[0, :16]).all() and (dq[0, 16:] == 0).all()


def test_global_scale_values():
    assert ref.global_scale(torch.zeros(3, 16)).tolist() == [1.0]
    assert ref.global_scale(torch.zeros(0, 16)).tolist() == [1.0]
    x = torch.tensor([[[1.0, -10.0], [3.0, 2.0]]], dtype=torch.bfloat16)
    gs = ref.global_scale(x)
    assert gs.dtype == F32 and gs.shape == (1,) and gs.item() == np.float32(268.8)
    assert ref.global_scale(torch.tensor([1.0, math.inf])).item() == 0.0
    assert math.isnan(ref.global_scale(torch.tensor([1.0, math.nan])).item())
    assert ref.global_scale(torch.tensor([-7.0])).item() == np.float32(2688) / np.float32(7)


# --------------------------------------------------------------------------------------
# NVFP4 against the literal oracle, batching, strides
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gs", [1.0, 268.8, 3.0e-5, 7.5e4])
def test_nvfp4_quantize_matches_oracle(dtype, gs):
    x = random_blocks(512, seed=int(gs * 7) % 1000).to(dtype)
    x[5, 3] = math.nan
    x[9, 0] = -math.inf
    x[11] = 0
    packed, scales = ref.quantize(x, f32(gs))
    sf, codes, dq = oracle_nvfp4(x.float().numpy(), gs)
    assert torch.equal(scales.view(torch.uint8)[:, 0], torch.from_numpy(sf))
    assert torch.equal(ref.unpack_e2m1(packed), torch.from_numpy(codes))
    out = ref.dequantize(packed, scales, f32(gs), F32)
    want = torch.from_numpy(dq.astype(np.float32))
    assert torch.equal(torch.isnan(out), torch.isnan(want))  # NaN payloads may differ
    assert_bits_equal(out.nan_to_num(0.0), want.nan_to_num(0.0))


def test_nvfp4_3d_per_batch_global_scale():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, 64, generator=g) * torch.tensor([1e-3, 1.0, 50.0]).view(3, 1, 1)
    gs = torch.cat([ref.global_scale(x[b]) for b in range(3)])
    packed, scales = ref.quantize(x, gs)
    assert packed.shape == (3, 40, 32) and scales.shape == (3, 40, 4)
    for b in range(3):
        pb, sb = ref.quantize(x[b], gs[b : b + 1])
        assert torch.equal(packed[b], pb) and torch.equal(scales[b].view(torch.uint8), sb.view(torch.uint8))
        assert_bits_equal(ref.dequantize(packed, scales, gs, F32)[b], ref.dequantize(pb, sb, gs[b : b + 1], F32))
    # One scale for all batches equals the 2-D result on the flattened rows.
    p1, s1 = ref.quantize(x, gs[1:2])
    p2, s2 = ref.quantize(x.reshape(120, 64), gs[1:2].reshape(1, 1))
    assert torch.equal(p1.reshape(120, 32), p2) and torch.equal(s1.view(torch.uint8).reshape(120, 4), s2.view(torch.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_input_same_bytes(dtype):
    g = torch.Generator().manual_seed(4)
    base = torch.randn(64, 96, generator=g).to(dtype)
    xt = base.t()  # [96, 64], non-contiguous
    gs = ref.global_scale(xt)
    for a, b in zip(ref.quantize(xt, gs), ref.quantize(xt.contiguous(), gs)):
        assert_bits_equal(a, b)
    assert_bits_equal(ref.quant_dequant(xt, gs), ref.quant_dequant(xt.contiguous(), gs))
    x3 = torch.randn(64, 2, 64, generator=g).to(dtype).permute(1, 0, 2)[:, ::2]
    for a, b in zip(ref.quantize(x3, gs, scale_method="mse"), ref.quantize(x3.contiguous(), gs, scale_method="mse")):
        assert_bits_equal(a, b)
    for axis in (-1, -2):
        for a, b in zip(ref.mx_quantize(xt, axis=axis), ref.mx_quantize(xt.contiguous(), axis=axis)):
            assert_bits_equal(a, b)


def _magnitude_input(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if dtype == F32:
        x = x * torch.pow(10.0, torch.empty(shape[:-1] + (1,)).uniform_(-30, 30, generator=g))
    else:
        x = x * torch.pow(2.0, torch.randint(-8, 8, shape[:-1] + (1,), generator=g).float())
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 16), (90, 48), (2, 33, 80)])
@pytest.mark.parametrize("gs_kind", ["tensor", "tiny", "nonfinite"])
def test_quant_dequant_bit_identical(dtype, shape, gs_kind):
    x = _magnitude_input(shape, dtype, seed=sum(shape))
    if gs_kind == "tiny":  # amax < 2688 / FLT_MAX: gs = inf (fp16: subnormal inputs instead)
        x = (x.float().sign() * 1e-37 if dtype != torch.float16 else x.float() * 2.0**-20).to(dtype)
    if gs_kind == "nonfinite":
        x.view(-1)[0] = math.inf
        x.view(-1)[-1] = math.nan
    if len(shape) == 3:
        gs = torch.cat([ref.global_scale(x[b].nan_to_num(posinf=1.0)) for b in range(shape[0])])
    else:
        gs = ref.global_scale(x.nan_to_num(posinf=1.0))
    packed, scales = ref.quantize(x, gs)
    expect = ref.dequantize(packed, scales, gs, x.dtype)
    got = ref.quant_dequant(x, gs)
    assert_bits_equal(got, expect)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dequantize_error_bound(dtype):
    # Blocks whose scale is an E4M3 normal: |x - dq| <= 0.25 * max(|x|, s) (half a step).
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(64, 256, generator=g) * torch.exp2(torch.randint(-5, 5, (64, 1), generator=g).float())).to(dtype)
    gs = ref.global_scale(x)
    packed, scales = ref.quantize(x, gs)
    dq = ref.dequantize(packed, scales, gs, F32)
    s = (ref.e4m3_to_fp32(scales) / gs).repeat_interleave(16, dim=-1)
    normal = (scales.view(torch.uint8) >= 0x08).repeat_interleave(16, dim=-1)
    xf = x.float()
    bound = 0.25 * torch.maximum(xf.abs(), s) * (1 + 1e-5)
    assert normal.float().mean() > 0.9
    assert ((xf - dq).abs() <= bound)[normal].all()


def test_swizzled_quantize_and_dequantize():
    g = torch.Generator().manual_seed(6)
    for shape in [(130, 80), (2, 90, 48)]:
        x = torch.randn(*shape, generator=g)
        gs = ref.global_scale(x) if len(shape) == 2 else torch.tensor([0.5, 2.0])
        p_lin, s_lin = ref.quantize(x, gs)
        p_sw, s_sw = ref.quantize(x, gs, swizzle=True)
        assert torch.equal(p_lin, p_sw)
        assert s_sw.dtype == torch.float8_e4m3fn
        assert torch.equal(s_sw.view(torch.uint8), ref.swizzle_scales(s_lin).view(torch.uint8))
        Mp, Kp = -(-shape[-2] // 128) * 128, -(-shape[-1] // 16 // 4) * 4
        assert s_sw.shape == shape[:-2] + (Mp, Kp)
        assert_bits_equal(ref.dequantize(p_sw, s_sw, gs, torch.bfloat16, swizzled=True),
                          ref.dequantize(p_lin, s_lin, gs, torch.bfloat16))


# --------------------------------------------------------------------------------------
# Scale layouts
# --------------------------------------------------------------------------------------


def _swizzle_by_formula(S: torch.Tensor) -> torch.Tensor:
    M, Kb = S.shape
    Mp, Kp = -(-M // 128) * 128, -(-Kb // 4) * 4
    r = torch.arange(M).view(-1, 1)
    c = torch.arange(Kb).view(1, -1)
    off = ((r // 128) * (Kp // 4) + c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
    out = torch.zeros(Mp * Kp, dtype=torch.uint8)
    out[off.reshape(-1)] = S.view(torch.uint8).reshape(-1)
    return out.view(Mp, Kp)


@pytest.mark.parametrize("M, Kb", list(itertools.product([1, 90, 130, 257], [1, 3, 5, 8])))
def test_swizzle_formula_and_inverse(M, Kb):
    g = torch.Generator().manual_seed(M * 10 + Kb)
    S = torch.randint(1, 256, (M, Kb), generator=g, dtype=torch.int32).to(torch.uint8)
    sw = ref.swizzle_scales(S)
    assert torch.equal(sw, _swizzle_by_formula(S))
    assert torch.equal(ref.unswizzle_scales(sw, M, Kb), S)
    S3 = torch.stack([S, S.flip(0)]).view(torch.float8_e4m3fn)
    sw3 = ref.swizzle_scales(S3)
    assert sw3.dtype == torch.float8_e4m3fn
    assert torch.equal(sw3[1].view(torch.uint8), _swizzle_by_formula(S.flip(0)))
    assert torch.equal(ref.unswizzle_scales(sw3, M, Kb).view(torch.uint8), S3.view(torch.uint8))


@pytest.mark.skipif(E8M0 is None, reason="torch without float8_e8m0fnu")
def test_swizzle_e8m0_dtype_and_outputs_are_new_tensors():
    S = torch.randint(0, 255, (128, 4), dtype=torch.int32).to(torch.uint8).view(E8M0)
    sw = ref.swizzle_scales(S)
    assert sw.dtype == E8M0 and sw.untyped_storage().data_ptr() != S.untyped_storage().data_ptr()
    un = ref.unswizzle_scales(sw, 128, 4)
    assert un.dtype == E8M0 and un.untyped_storage().data_ptr() != sw.untyped_storage().data_ptr()
    assert torch.equal(un.view(torch.uint8), S.view(torch.uint8))


def test_outputs_never_alias_inputs():
    x = torch.randn(16, 32)
    gs = ref.global_scale(x)
    p, s = ref.quantize(x, gs)
    outs = [ref.quant_dequant(x, gs), ref.dequantize(p, s, gs, F32), ref.e4m3_to_fp32(s),
            ref.e2m1_decode(p), ref.unpack_e2m1(p)]
    ins = {t.untyped_storage().data_ptr() for t in (x, gs, p, s)}
    assert all(o.untyped_storage().data_ptr() not in ins for o in outs)


# --------------------------------------------------------------------------------------
# MX
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mx_quantize_matches_oracle(elem, rounding, dtype):
    x = random_blocks(256, seed=11, block=32)
    x[::17] *= 1e-38  # fp32/bf16: denormal amax (floor gives b = 0); fp16: zero blocks
    x[3, 5], x[4, 0], x[5] = math.nan, math.inf, 0.0
    x = x.to(dtype)
    data, scales = ref.mx_quantize(x, elem, rounding)
    b, d = oracle_mx(x.float().numpy(), elem, rounding)
    assert torch.equal(scales[:, 0], torch.from_numpy(b))
    got = data.view(torch.uint8) if elem == "e4m3" else ref.unpack_e2m1(data)
    assert torch.equal(got, torch.from_numpy(d))


@pytest.mark.parametrize(
    "elem, amax, rounding, byte",
    [
        ("e4m3", 448.0, "rceil", 127),
        ("e4m3", nextafter(448.0, 1e9), "rceil", 128),  # RN(amax/448) = 1 + 2^-23
        ("e4m3", nextafter(448.0, 0.0), "rceil", 127),
        ("e2m1", 6.0, "rceil", 127),
        ("e2m1", nextafter(6.0, 1e9), "rceil", 128),
        ("e4m3", 511.0, "floor", 127),
        ("e4m3", 512.0, "floor", 128),
        ("e2m1", 7.5, "floor", 127),
        ("e4m3", 1e-39, "floor", 0),
        ("e4m3", 1e-39, "rceil", 1),  # RN(amax/448) is a denormal: rounds up to 2^-126
        ("e4m3", 0.0, "rceil", 0),
        ("e4m3", 0.0, "floor", 0),
    ],
)
def test_mx_scale_bytes(elem, amax, rounding, byte):
    x = torch.zeros(1, 32)
    x[0, 7] = -amax
    x[0, 8] = amax / 3
    _, s = ref.mx_quantize(x, elem, rounding)
    assert s.item() == byte


def test_mx_floor_clips_and_rceil_does_not():
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1] = 7.5, -7.5
    d, s = ref.mx_quantize(x, "e2m1", "floor")
    assert s.item() == 127 and ref.unpack_e2m1(d)[0, :2].tolist() == [0x7, 0xF]  # 7.5 -> 6
    d, s = ref.mx_quantize(x, "e2m1", "rceil")
    assert s.item() == 128 and ref.unpack_e2m1(d)[0, :2].tolist() == [0x6, 0xE]  # 3.75 -> 4


def test_mx_non_finite_blocks():
    x = torch.ones(2, 64)
    x[0, 40], x[1, 0] = math.nan, -math.inf
    for elem, ok in (("e4m3", 119), ("e2m1", 125)):  # amax 1: 1/448 -> 2^-8, 1/6 -> 2^-2
        d, s = ref.mx_quantize(x, elem)
        assert s.tolist() == [[ok, 255], [255, ok]]
        raw = d.view(torch.uint8)
        half = raw.shape[-1] // 2
        assert (raw[0, half:] == 0).all() and (raw[1, :half] == 0).all()
        out = ref.mx_dequantize(d, s, elem, F32)
        assert torch.isnan(out[0, 32:]).all() and torch.isnan(out[1, :32]).all()
        assert (out[0, :32] == 1).all() and (out[1, 32:] == 1).all()


def test_mx_dequantize_extreme_scales():
    data = torch.full((1, 32), 0x38, dtype=torch.uint8).view(torch.float8_e4m3fn)  # 1.0
    for b, expect in [(0, 2.0**-127), (1, 2.0**-126), (127, 1.0), (254, 2.0**127)]:
        out = ref.mx_dequantize(data, torch.tensor([[b]], dtype=torch.uint8), "e4m3", F32)
        assert (out == expect).all(), b
    out = ref.mx_dequantize(data, torch.tensor([[255]], dtype=torch.uint8), "e4m3", torch.bfloat16)
    assert torch.isnan(out).all()
    if E8M0 is not None:
        s = torch.tensor([[130]], dtype=torch.uint8)
        assert torch.equal(ref.mx_dequantize(data, s.view(E8M0), "e4m3", F32), ref.mx_dequantize(data, s, "e4m3", F32))


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("shape", [(64, 96), (2, 96, 32)])
def test_mx_axis_minus2_is_transpose(elem, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    for swizzle in (False, True):
        a = ref.mx_quantize(x, elem, "floor", swizzle, axis=-2)
        b = ref.mx_quantize(x.transpose(-1, -2).contiguous(), elem, "floor", swizzle, axis=-1)
        for u, v in zip(a, b):
            assert_bits_equal(u, v)
    assert_bits_equal(ref.mx_quantize(x, elem, axis=x.dim() - 2)[0], ref.mx_quantize(x, elem, axis=-2)[0])


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mx_round_trip_and_swizzle(elem, dtype):
    g = torch.Generator().manual_seed(8)
    e = 20 if dtype != torch.float16 else 6
    x = (torch.randn(3, 130, 64, generator=g) * torch.exp2(torch.randint(-e, e, (3, 130, 1), generator=g).float())).to(dtype)
    data, s = ref.mx_quantize(x, elem)
    shape = (3, 130, 64 if elem == "e4m3" else 32)
    assert data.shape == shape and s.shape == (3, 130, 2)
    out = ref.mx_dequantize(data, s, elem, F32)
    step = torch.exp2(s.float() - 127).repeat_interleave(32, dim=-1)
    xf = x.float()
    if elem == "e4m3":  # E4M3: half an ulp is 2^-4 relative, 2^-10 absolute in the subnormals
        bound = torch.maximum(xf.abs() * 2.0**-4, step * 2.0**-10)
    else:  # E2M1: half a step is at most a quarter of max(|y|, 1)
        bound = 0.25 * torch.maximum(xf.abs(), step)
    assert ((xf - out).abs() <= bound).all()
    d_sw, s_sw = ref.mx_quantize(x, elem, swizzle=True)
    assert torch.equal(d_sw.view(torch.uint8), data.view(torch.uint8))
    assert s_sw.shape == (3, 256, 4) and torch.equal(s_sw, ref.swizzle_scales(s))
    assert_bits_equal(ref.mx_dequantize(d_sw, s_sw, elem, dtype, swizzled=True), ref.mx_dequantize(data, s, elem, dtype))


# --------------------------------------------------------------------------------------
# Scale search
# --------------------------------------------------------------------------------------


def _search_input(kind: str, shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    if kind == "gaussian":
        x = torch.randn(n, generator=g)
    elif kind == "student_t":  # 2 degrees of freedom: z / sqrt(chi2_2 / 2)
        chi2 = torch.randn(n, generator=g) ** 2 + torch.randn(n, generator=g) ** 2
        x = torch.randn(n, generator=g) / torch.sqrt(chi2 / 2)
    elif kind == "sparse":
        x = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.15)
    elif kind == "outlier":
        x = torch.randn(n, generator=g)
        x[torch.randint(0, n, (n // 16,), generator=g)] *= 40
    elif kind == "zeros_and_ties":
        x = torch.randn(n, generator=g)
        x.view(-1, 16)[::3] = 0
        x.view(-1, 16)[1::3] = 0.25 * torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 0.5] * 2)
    else:
        raise AssertionError(kind)
    return x.reshape(shape).to(F32)


def _expected_choice(naive_obj, naive_byte, cand_obj, cand_bytes):
    """Closed form of the tie rule: naive wins among equal minima, then the smallest byte."""
    m = cand_obj.min(dim=0).values
    first = torch.tensor(cand_bytes, dtype=torch.uint8)[(cand_obj == m).int().argmax(dim=0)]
    take_naive = naive_obj <= m
    return torch.where(take_naive, naive_byte, first), torch.where(take_naive, naive_obj, m)


SEARCH_KINDS = ["gaussian", "student_t", "sparse", "outlier", "zeros_and_ties"]


@pytest.mark.parametrize("kind", SEARCH_KINDS + ["saturating"])
@pytest.mark.parametrize("method", ["mse", "hessian"])
def test_nvfp4_search_is_exhaustive(kind, method):
    shape = (2, 6, 64)
    x = _search_input("gaussian" if kind == "saturating" else kind, shape, seed=len(kind))
    gs = torch.cat([ref.global_scale(x[b]) for b in range(2)])
    if kind == "saturating":
        gs = gs * 16  # most block scales saturate at 448
    H = ref.hessian_blocks(torch.randn(200, 64, generator=torch.Generator().manual_seed(9))) if method == "hessian" else None
    packed, scales = ref.quantize(x, gs, scale_method=method, hessian=H)
    chosen = scales.view(torch.uint8)
    naive = ref.quantize(x, gs)[1].view(torch.uint8)
    if kind == "saturating":
        assert (naive == 0x7E).float().mean() > 0.5
    obj = lambda b: ref.nvfp4_block_objective(x, b, gs, method, H)
    cands = list(range(1, 127))
    cand_obj = torch.stack([obj(torch.full_like(naive, c)) for c in cands])
    want_byte, want_obj = _expected_choice(obj(naive), naive, cand_obj, cands)
    assert torch.equal(chosen, want_byte)
    got_obj = obj(chosen)
    assert torch.equal(got_obj, want_obj) and (got_obj <= obj(naive)).all()
    # The codes are those of SPEC section 2 for the chosen scales.
    assert torch.equal(packed, ref.pack_e2m1(torch.from_numpy(np.stack([
        oracle_nvfp4(x[b].reshape(-1, 16).numpy(), gs[b].item(), chosen[b].reshape(-1).numpy())[1].reshape(6, 64)
        for b in range(2)]))))


def test_nvfp4_objective_matches_literal_oracle():
    x = random_blocks(64, seed=12)
    gs = 37.5
    for byte in (0x00, 0x01, 0x07, 0x08, 0x30, 0x55, 0x7E):
        sb = torch.full((64, 1), byte, dtype=torch.uint8)
        got = ref.nvfp4_block_objective(x, sb, f32(gs))
        _, _, dq = oracle_nvfp4(x.numpy(), gs, sb[:, 0].numpy())
        assert torch.equal(got[:, 0], torch.from_numpy(oracle_sse(x.numpy(), dq)))
    # hessian: the quadratic form with the documented summation order; H is not symmetric
    # here so that H[i, j] and H[j, i] cannot be confused.
    H = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(2))
    sb = torch.full((64, 1), 0x33, dtype=torch.uint8)
    _, _, dq = oracle_nvfp4(x.numpy(), gs, sb[:, 0].numpy())
    e = x.numpy() - dq
    h = H[0].numpy()
    t = [sum_seq([h[i, j] * e[:, j] for j in range(16)]) for i in range(16)]
    want = sum_seq([e[:, i] * t[i] for i in range(16)])
    got = ref.nvfp4_block_objective(x, sb, f32(gs), "hessian", H)[:, 0]
    assert torch.equal(got, torch.from_numpy(want))


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
def test_mx_objective_matches_literal_oracle(elem):
    g = torch.Generator().manual_seed(14)
    x = torch.randn(6, 32, generator=g) * torch.tensor([1e-38, 1e-30, 1.0, 1e3, 1e30, 3e37]).view(6, 1)
    x[5, 0] = 3.3e38
    x[4] = 0
    x[4, :3] = torch.tensor([1.5, -1.0, 0.5]) * 2.0**127  # exact only with b = 254 (2^-127)
    for b in (0, 1, 100, 127, 200, 252, 253, 254):
        sb = torch.full((6, 1), b, dtype=torch.uint8)
        y = (x.double() * 2.0 ** (127 - b)).float().numpy()  # RN(x * 2^(127-b))
        code = oracle_e4m3(y) if elem == "e4m3" else oracle_e2m1(y)
        table = E4M3_POS if elem == "e4m3" else E2M1_POS
        mag = table[(code & (0x7F if elem == "e4m3" else 7)).astype(np.int64)]
        with np.errstate(over="ignore"):
            dq = (np.where(np.signbit(y), -mag, mag) * 2.0 ** (b - 127)).astype(np.float32)
            want = oracle_sse(x.numpy(), dq)
        got = ref.mx_block_objective(x, sb, elem)[:, 0]
        assert torch.equal(got, torch.from_numpy(want)), (b, got, want)


def sum_seq(terms):
    acc = terms[0]
    for t in terms[1:]:
        acc = (acc + t).astype(np.float32)
    return acc


def test_nvfp4_search_hand_ties():
    gs = f32(1.0)
    # [0.5, 0...]: exact for sf in {0.125, 0.25, 0.5, 1}; the naive scale 0x1B
    # (E4M3(RN(0.5 * RN(1/6))) = 0.0859375) is not; the smallest exact byte 0x20 (0.125) wins.
    x = _block(0.5)
    assert hexbytes(ref.quantize(x, gs)[1]) == "1B"
    packed, scales = ref.quantize(x, gs, scale_method="mse")
    assert hexbytes(scales) == "20" and ref.dequantize(packed, scales, gs, F32)[0, 0].item() == 0.5
    # [1e-4, 0...]: the naive scale underflows to 0x00 and every candidate rounds the block
    # to zero too: all tie, and the naive byte wins over 0x01.
    x = _block(1e-4)
    assert hexbytes(ref.quantize(x, gs, scale_method="mse")[1]) == "00"
    # all-zero, NaN and inf blocks keep their naive bytes
    x = torch.cat([_block(0.0), _block(math.nan, 1.0), _block(-math.inf)], dim=1)
    p, s = ref.quantize(x, gs, scale_method="mse")
    assert hexbytes(s) == "00 7F 7F" and (p[0, 8:] == 0).all()


def test_nvfp4_mse_lowers_error():
    x = torch.randn(256, 1024, generator=torch.Generator().manual_seed(10))
    gs = ref.global_scale(x)
    sse = lambda m: ((x - ref.dequantize(*ref.quantize(x, gs, scale_method=m), gs, F32)).double() ** 2).sum()
    assert sse("mse") < 0.85 * sse("amax")


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("kind", ["gaussian", "student_t", "outlier", "sparse"])
def test_mx_search_is_exhaustive(elem, rounding, kind):
    x = _search_input(kind, (8, 64), seed=3)
    x[0, :32] = 0
    x[1, :32] = torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 6] * 4) * 2.0**-3
    data, scales = ref.mx_quantize(x, elem, rounding, scale_method="mse")
    naive = ref.mx_quantize(x, elem, rounding)[1]
    obj = lambda b: ref.mx_block_objective(x, b, elem)
    cands = list(range(255))
    cand_obj = torch.stack([obj(torch.full_like(naive, c)) for c in cands])
    want_byte, want_obj = _expected_choice(obj(naive), naive, cand_obj, cands)
    assert torch.equal(scales, want_byte)
    assert torch.equal(obj(scales), want_obj) and (obj(scales) <= obj(naive)).all()
    # elements are the section-3 encoding with the chosen scales: dequantized error = objective
    dq = ref.mx_dequantize(data, scales, elem, F32)
    assert torch.equal(torch.from_numpy(oracle_sse(x.reshape(-1, 32).numpy(), dq.reshape(-1, 32).numpy())).view(8, 2), obj(scales))


def test_mx_search_keeps_non_finite_blocks():
    x = torch.ones(1, 64)
    x[0, 3] = math.nan
    d, s = ref.mx_quantize(x, "e2m1", scale_method="mse")
    assert s.tolist() == [[255, 125]] and (d[0, :16] == 0).all()


def test_hessian_blocks():
    X = torch.randn(300, 48, generator=torch.Generator().manual_seed(13)).to(torch.bfloat16)
    H = ref.hessian_blocks(X, chunk_rows=64)
    assert H.shape == (3, 16, 16) and H.dtype == F32
    Xd = X.double().view(300, 3, 16)
    want = torch.einsum("tgi,tgj->gij", Xd, Xd)
    assert torch.allclose(H.double(), want, rtol=1e-5, atol=1e-4)
    assert torch.allclose(H, ref.hessian_blocks(X), rtol=1e-5, atol=1e-4)
    assert (torch.linalg.eigvalsh(H.double()) > 0).all()


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------

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
    (lambda: ref.quantize(x16, gs1, scale_method="foo"), r"scale_method must be 'amax', 'mse' or 'hessian', got 'foo'"),
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
