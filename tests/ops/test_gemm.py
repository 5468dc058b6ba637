"""The low-bit weight GEMM ops on CPU: the reference path against an independent formula,
prepack / unprepack, fakes, opcheck and torch.compile. Argument errors: test_parity.py;
the fused CUDA kernel: tests/cuda/test_gemm.py."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import nvfp4_ops
from nvfp4_ops import reference
from nvfp4_ops.reference import gemm as ref_gemm

OPS = torch.ops.nvfp4
# torch's SchemaCheckMode compares the float8 scales with a multiply that has no float8
# kernel on CPU ("mul_cpu_reduced_float" not implemented): the other three checks run.
OPCHECK_UTILS = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _weight(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    gs = reference.global_scale(w)
    packed, scales = reference.quantize(w, gs)
    return w, packed, scales, gs


def _x(shape, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def _independent(x, packed, scales, gs, bias):
    """fp64 result from the element formulas (unpack, decode, scale), not from dequantize."""
    codes = reference.unpack_e2m1(packed)
    vals = reference.e2m1_decode(codes).reshape(packed.shape[0], -1, 16)
    mult = reference.e4m3_to_fp32(scales.view(torch.uint8)) / gs
    w = (vals * mult.unsqueeze(-1)).reshape(packed.shape[0], -1)
    y = x.double() @ w.double().t()
    if bias is not None:
        y = y + bias.double()
    return y


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("xshape", [(1, 80), (7, 80), (2, 3, 80)])
def test_reference_matches_formula(dtype, bias, xshape):
    w, packed, scales, gs = _weight(72, 80)
    x = _x(xshape, dtype)
    b = _x((72,), dtype, seed=2) if bias else None
    y = nvfp4_ops.gemm_nvfp4_w4a16(x, packed, scales, gs, b)
    assert y.shape == (*xshape[:-1], 72) and y.dtype == dtype
    want = _independent(x, packed, scales, gs, b)
    ref32 = ref_gemm.gemm_nvfp4_w4a16_fp32(x, packed, scales, gs, b)
    assert ref32.dtype == torch.float32
    assert ((ref32.double() - want).norm() / want.norm()).item() < 1e-6
    assert torch.equal(y, ref32.to(dtype))  # one cast of the fp32 result
    # the quantized weight is close to the float one (a gross layout error would fail this)
    yf = x.double() @ w.double().t() + (b.double() if bias else 0)
    assert ((y.double() - yf).norm() / yf.norm()).item() < 0.15


def test_noncontiguous_x_and_empty():
    _, packed, scales, gs = _weight(48, 64)
    x = _x((64, 5), torch.bfloat16).t()  # [5, 64], not contiguous
    assert not x.is_contiguous()
    assert torch.equal(OPS.gemm_nvfp4_w4a16(x, packed, scales, gs, None),
                       OPS.gemm_nvfp4_w4a16(x.contiguous(), packed, scales, gs, None))
    assert OPS.gemm_nvfp4_w4a16(x[:0], packed, scales, gs, None).shape == (0, 48)


def test_nan_block():
    _, packed, scales, gs = _weight(32, 64)
    s = scales.view(torch.uint8).clone()
    s[5, 2] = 0x7F
    y = OPS.gemm_nvfp4_w4a16(_x((3, 64), torch.bfloat16), packed, s.view(torch.float8_e4m3fn),
                             gs, None)
    assert torch.isnan(y[:, 5]).all()
    y[:, 5] = 0
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("n, k", [(72, 80), (33, 1040), (16, 512), (1, 16)])
def test_prepack_round_trip_and_layout(n, k):
    g = torch.Generator().manual_seed(n * k)
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g)
    scales = torch.randint(0, 256, (n, k // 16), dtype=torch.uint8, generator=g)
    pp, ss = nvfp4_ops.prepack_nvfp4_w4a16(packed, scales.view(torch.float8_e4m3fn))
    gn, gk = -(-n // 16), -(-k // 512)
    assert pp.shape == (gn, gk, 16, 256) and ss.shape == (gn, gk, 16, 32)
    assert ss.dtype == torch.float8_e4m3fn and pp.is_contiguous() and ss.is_contiguous()
    # the tile of rows 16a.. and columns 512b.. holds row 16a + r, code words 64b + w with
    # their bits moved as PREPACK_BITS says
    a, b, r, w = gn - 1, gk - 1, (n - 1) % 16, ((k // 8) - 1) % 64
    plain = int(packed[16 * a + r, 4 * (64 * b + w): 4 * (64 * b + w) + 4]
                .contiguous().view(torch.int32)) & 0xFFFFFFFF
    moved = int(pp[a, b, r, 4 * w: 4 * w + 4].contiguous().view(torch.int32)) & 0xFFFFFFFF
    for c, dests in enumerate(ref_gemm.PREPACK_BITS):
        for i, d in enumerate(dests):
            assert (plain >> (4 * c + i)) & 1 == (moved >> d) & 1
    assert ss[a, b, r, ((k // 16) - 1) % 32].view(torch.uint8) == scales[16 * a + r, -1]
    ones = lambda t: int(sum(bin(v).count("1") for v in t.view(-1).tolist()))  # noqa: E731
    assert ones(pp) == ones(packed)  # the padding is zeros
    assert int(ss.view(torch.uint8).sum()) == int(scales.sum())
    p2, s2 = nvfp4_ops.unprepack_nvfp4_w4a16(pp, ss, n, k)
    assert torch.equal(p2, packed) and torch.equal(s2.view(torch.uint8), scales)


@pytest.mark.parametrize("bias", [False, True])
def test_prepacked_gemm_equals_plain(bias):
    _, packed, scales, gs = _weight(40, 592)
    x = _x((2, 3, 592), torch.float16)
    b = _x((40,), torch.float16, seed=7) if bias else None
    pp, ss = OPS.prepack_nvfp4_w4a16(packed, scales)
    assert torch.equal(nvfp4_ops.gemm_nvfp4_w4a16_prepacked(x, pp, ss, gs, 40, b),
                       OPS.gemm_nvfp4_w4a16(x, packed, scales, gs, b))


def _samples():
    _, packed, scales, gs = _weight(24, 64)
    pp, ss = ref_gemm.prepack_nvfp4_w4a16(packed, scales)
    x = _x((5, 64), torch.bfloat16)
    b = _x((24,), torch.bfloat16, seed=3)
    d8, e8 = reference.mx_quantize(torch.randn(24, 64))
    d4, e4 = reference.mx_quantize(torch.randn(24, 64), "e2m1")
    return [
        ("gemm_nvfp4_w4a16", (x, packed, scales, gs, None)),
        ("gemm_nvfp4_w4a16", (x[None], packed, scales, gs, b)),
        ("prepack_nvfp4_w4a16", (packed, scales)),
        ("unprepack_nvfp4_w4a16", (pp, ss, 24, 64)),
        ("gemm_nvfp4_w4a16_prepacked", (x, pp, ss, gs, 24, b)),
        ("gemm_mx_w16", (x, d8, e8, "e4m3", b)),
        ("gemm_mx_w16", (x.half(), d4, e4, "e2m1", None)),
    ]


def test_fakes_match_real():
    for name, args in _samples():
        real = getattr(OPS, name)(*args)
        with FakeTensorMode() as mode:
            fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = getattr(OPS, name)(*fargs)
        real = real if isinstance(real, tuple) else (real,)
        fake = fake if isinstance(fake, tuple) else (fake,)
        for r, f in zip(real, fake):
            assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride()), name


def test_opcheck():
    seen = set()
    for name, args in _samples():
        if name not in seen:
            seen.add(name)
            torch.library.opcheck(getattr(OPS, name).default, args, test_utils=OPCHECK_UTILS)


def test_compile_fullgraph():
    _, packed, scales, gs = _weight(24, 64)
    x = _x((4, 64), torch.float16)

    def f(x):
        pp, ss = OPS.prepack_nvfp4_w4a16(packed, scales)
        return (OPS.gemm_nvfp4_w4a16(x, packed, scales, gs, None) * 2,
                OPS.gemm_nvfp4_w4a16_prepacked(x, pp, ss, gs, 24, None))

    torch._dynamo.reset()
    for got, want in zip(torch.compile(f, fullgraph=True, backend="aot_eager")(x), f(x)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mx_reference_matches_formula(elem, dtype):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(24, 96, generator=g)
    data, scales = reference.mx_quantize(w, elem)
    x = _x((2, 3, 96), dtype)
    b = _x((24,), dtype, seed=4)
    y = nvfp4_ops.gemm_mx_w16(x, data, scales, elem, b)
    vals = data.float() if elem == "e4m3" else reference.e2m1_decode(reference.unpack_e2m1(data))
    wq = vals.reshape(24, 3, 32).double() * torch.exp2(scales.double() - 127).unsqueeze(-1)
    want = x.double() @ wq.reshape(24, 96).t() + b.double()
    assert torch.equal(y, ref_gemm.gemm_mx_w16_fp32(x, data, scales, elem, b).to(dtype))
    assert ((y.double() - want).norm() / want.norm()).item() < 4e-3
