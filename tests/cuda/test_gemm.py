"""The fused low-bit weight GEMMs (csrc/gemm) on the GPU, against the fp32 reference: NVFP4
W4A16 (``nvfp4.gemm_nvfp4_w4a16``, its prepacked form) and MX (``nvfp4.gemm_mx_w16``:
MXFP8 W8A16 with ``elem="e4m3"``, MXFP4 W4A16 with ``"e2m1"``).

On an sm_90 GPU with a build holding sm_90a code, M > 32 runs the wgmma kernel
(csrc/gemm/wgmma.cuh) for NVFP4 with K % 128 == 0 and MXFP4 with K % 512 == 0;
NVFP4_OPS_GEMM_WGMMA=0 in the environment runs the mma.sync kernel there instead
(benchmarks/probe/final6.sh runs this file both ways).

Bound (issue 12): relative Frobenius error against the reference's fp32 result (weight
dequantized to fp32, fp32 matmul, bias in fp32, before its one cast) below 4e-3 for bf16
and 6e-4 for fp16 outputs; never NaN where the reference is finite; the same bits on every
run. The whole file ran on an H200 on 2026-11-30 (benchmarks/RESULTS.md, "third part": the
final kernels of csrc/gemm); ``test_mx_kernel_is_built`` fails when a CUDA build serves
gemm_mx_w16 with the reference instead of a kernel.
"""

import pytest
import torch

import nvfp4_ops
from nvfp4_ops.reference import gemm as ref_gemm

from .._utils import poison_cuda_cache, requires_cuda
from ._helpers import capture_and_replay, opcheck

pytestmark = requires_cuda

OP = torch.ops.nvfp4.gemm_nvfp4_w4a16
TOL = {torch.bfloat16: 4e-3, torch.float16: 6e-4}


def _weight(n, k, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, generator=g, device="cuda") * 0.05
    gs = nvfp4_ops.global_scale(w)
    packed, scales = nvfp4_ops.quantize(w, gs)
    return packed, scales, gs


def _x(shape, dtype, seed=1):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, generator=g, device="cuda").to(dtype)


def _check(x, packed, scales, gs, bias=None):
    """Run the kernel on a poisoned output and compare with the fp32 reference."""
    ref = ref_gemm.gemm_nvfp4_w4a16_fp32(x, packed, scales, gs, bias)
    poison_cuda_cache(ref.to(x.dtype))
    y = OP(x, packed, scales, gs, bias)
    assert y.shape == ref.shape and y.dtype == x.dtype and y.is_contiguous()
    assert torch.isfinite(y).all(), "NaN/inf where the reference is finite"
    err = ((y.double() - ref.double()).norm() / ref.double().norm()).item()
    assert err < TOL[x.dtype], f"relative Frobenius error {err:.3g} >= {TOL[x.dtype]}"
    return y


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 2, 7, 16, 24, 32, 33, 64, 127, 256, 1000])
def test_m_sweep(dtype, m):
    packed, scales, gs = _weight(384, 2048)
    _check(_x((m, 2048), dtype), packed, scales, gs, _x((384,), dtype, seed=3) if m % 2 else None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n, k", [(72, 80), (72, 4096), (200, 48), (136, 1040), (130, 640)])
@pytest.mark.parametrize("m", [1, 16, 20, 33])
def test_odd_shapes(dtype, n, k, m):
    packed, scales, gs = _weight(n, k, seed=n + k)
    _check(_x((m, k), dtype), packed, scales, gs, _x((n,), dtype, seed=4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 64])
def test_long_k(dtype, m):
    packed, scales, gs = _weight(256, 16384)
    _check(_x((m, 16384), dtype), packed, scales, gs)


def _batch_dims_and_strides(check, call):
    """A weight of 96 x 512 on a 3-D x (the same bits as its rows in 2-D), a transposed x
    with a bias and a strided x: ``check(x, bias)`` runs the op against the reference and
    returns its output, ``call(x)`` runs it plainly."""
    x3 = _x((3, 5, 512), torch.bfloat16)
    y3 = check(x3, None)
    assert y3.shape == (3, 5, 96)
    assert torch.equal(y3.reshape(15, 96), call(x3.reshape(15, 512)))
    xt = _x((512, 9), torch.float16).t()  # [9, 512], strides (1, 9)
    assert not xt.is_contiguous()
    check(xt, _x((96,), torch.float16))
    check(_x((9, 1024), torch.bfloat16)[:, ::2], None)


def test_batch_dims_and_noncontiguous():
    packed, scales, gs = _weight(96, 512)
    _batch_dims_and_strides(lambda x, b: _check(x, packed, scales, gs, b),
                            lambda x: OP(x, packed, scales, gs, None))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_nan_block(dtype):
    packed, scales, gs = _weight(160, 1024)
    s = scales.view(torch.uint8).clone()
    s[7, 3] = 0x7F
    s[150, 63] = 0x7F
    s = s.view(torch.float8_e4m3fn)
    for m in (1, 40):
        x = _x((m, 1024), dtype)
        y = OP(x, packed, s, gs, None)
        ref = ref_gemm.gemm_nvfp4_w4a16(x, packed, s, gs)
        assert torch.isnan(ref[:, 7]).all() and torch.isnan(y[:, 7]).all()
        assert torch.isnan(y[:, 150]).all()
        keep = torch.ones(160, dtype=torch.bool, device="cuda")
        keep[[7, 150]] = False
        assert torch.isfinite(y[:, keep]).all()


def test_fp16_no_overflow_with_large_scales():
    # gs tiny -> 1/gs huge: the product e2m1 * sf / gs overflows fp16, the kernel must not.
    w = torch.randn(64, 256, device="cuda") * 2000.0
    gs = nvfp4_ops.global_scale(w)
    packed, scales = nvfp4_ops.quantize(w, gs)
    for m in (4, 40):  # (40: the 64-token kernels, wgmma on sm_90)
        _check(_x((m, 256), torch.float16) * 1e-3, packed, scales, gs)


@pytest.mark.parametrize("m", [1, 16, 100])
def test_deterministic(m):
    packed, scales, gs = _weight(4096, 4096)
    x = _x((m, 4096), torch.bfloat16)
    a = OP(x, packed, scales, gs, None)
    for _ in range(3):
        assert torch.equal(a, OP(x, packed, scales, gs, None))


def test_opcheck_cuda():
    packed, scales, gs = _weight(72, 80)
    pp, ss = nvfp4_ops.prepack_nvfp4_w4a16(packed, scales)
    torch.library.opcheck(torch.ops.nvfp4.gemm_nvfp4_w4a16_prepacked,
                          (_x((5, 80), torch.bfloat16), pp, ss, gs, 72, None),
                          test_utils=("test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))
    for b in (None, _x((72,), torch.float16)):
        # test_schema compares the float8 scales with a multiply torch has no float8 kernel for
        torch.library.opcheck(OP, (_x((5, 80), torch.float16), packed, scales, gs, b),
                              test_utils=("test_autograd_registration", "test_faketensor",
                                          "test_aot_dispatch_dynamic"))


def test_compile_and_cuda_graph():
    packed, scales, gs = _weight(512, 1024)
    x = _x((16, 1024), torch.bfloat16)
    bias = _x((512,), torch.bfloat16)

    def f(x):
        return nvfp4_ops.gemm_nvfp4_w4a16(x, packed, scales, gs, bias)

    eager = f(x)
    assert torch.equal(torch.compile(f, fullgraph=True)(x), eager)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        f(x)  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = f(x)
    for _ in range(3):
        x.copy_(_x((16, 1024), torch.bfloat16, seed=9))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, f(x))


def test_empty_and_zero_rows():
    packed, scales, gs = _weight(32, 64)
    assert OP(_x((0, 64), torch.bfloat16), packed, scales, gs, None).shape == (0, 32)
    y = OP(_x((3, 64), torch.bfloat16), packed[:0], scales[:0], gs, None)
    assert y.shape == (3, 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n, k", [(72, 80), (384, 2048), (136, 1040), (4096, 4096)])
@pytest.mark.parametrize("m", [1, 16, 33, 100])
def test_prepacked_equals_plain(dtype, n, k, m):
    # the same k order and split-K as the plain kernel: the same bits
    packed, scales, gs = _weight(n, k, seed=n)
    pp, ss = torch.ops.nvfp4.prepack_nvfp4_w4a16(packed, scales)
    p2, s2 = torch.ops.nvfp4.unprepack_nvfp4_w4a16(pp, ss, n, k)
    assert torch.equal(p2, packed) and torch.equal(s2.view(torch.uint8), scales.view(torch.uint8))
    x = _x((m, k), dtype)
    bias = _x((n,), dtype, seed=5)
    y = torch.ops.nvfp4.gemm_nvfp4_w4a16_prepacked(x, pp, ss, gs, n, bias)
    assert torch.equal(y, OP(x, packed, scales, gs, bias))
    ref = ref_gemm.gemm_nvfp4_w4a16_fp32(x, packed, scales, gs, bias)
    err = ((y.double() - ref.double()).norm() / ref.double().norm()).item()
    assert err < TOL[dtype]


# --------------------------------------------------------------------------------------
# nvfp4.gemm_mx_w16: MXFP8 W8A16 (elem "e4m3") and MXFP4 W4A16 ("e2m1"), same bounds
# --------------------------------------------------------------------------------------

MX_OP = torch.ops.nvfp4.gemm_mx_w16
ELEMS = ["e4m3", "e2m1"]


def _mx_weight(n, k, elem, seed=0, scale=0.05):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, generator=g, device="cuda") * scale
    return nvfp4_ops.mx_quantize(w, elem)


def _mx_check(x, data, scales, elem, bias=None):
    """Run the MX op on a poisoned output and compare with the fp32 reference."""
    ref = ref_gemm.gemm_mx_w16_fp32(x, data, scales, elem, bias)
    assert torch.isfinite(ref).all()
    poison_cuda_cache(ref.to(x.dtype))
    y = MX_OP(x, data, scales, elem, bias)
    assert y.shape == ref.shape and y.dtype == x.dtype and y.is_contiguous()
    assert y.device == x.device
    assert torch.isfinite(y).all(), "NaN/inf where the reference is finite"
    err = ((y.double() - ref.double()).norm() / ref.double().norm()).item()
    assert err < TOL[x.dtype], f"relative Frobenius error {err:.3g} >= {TOL[x.dtype]}"
    return y


def test_mx_kernel_is_built():
    # a CUDA build serves gemm_mx_w16 with the kernel of csrc/gemm (else every MX test
    # below would be testing the reference that stands in for it)
    info = nvfp4_ops._library.build_info()
    impl, why = nvfp4_ops._library.op_implementation("gemm_mx_w16", "cuda")
    if info["cuda"] is not True:
        pytest.skip(f"not a CUDA build: {why}")
    assert impl == "cuda-kernel", why


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 7, 16, 24, 33, 64, 257, 1031])
@pytest.mark.parametrize("elem", ELEMS)
def test_mx_m_sweep(elem, m, dtype):
    data, scales = _mx_weight(384, 2048, elem)
    bias = _x((384,), dtype, seed=3) if m % 2 else None
    _mx_check(_x((m, 2048), dtype), data, scales, elem, bias)


@pytest.mark.parametrize("elem", ELEMS)
def test_mx_many_rows(elem):
    data, scales = _mx_weight(96, 256, elem, seed=2)
    _mx_check(_x((16384, 256), torch.bfloat16), data, scales, elem, _x((96,), torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n, k", [(72, 96), (72, 4096), (200, 64), (136, 1056), (40, 32)])
@pytest.mark.parametrize("m", [1, 16, 20, 33])
@pytest.mark.parametrize("elem", ELEMS)
def test_mx_odd_shapes(elem, m, n, k, dtype):
    # N and K multiples of 32 (N: 72, 200, 136, 40 are not) but not of any tile
    data, scales = _mx_weight(n, k, elem, seed=n + k)
    _mx_check(_x((m, k), dtype), data, scales, elem, _x((n,), dtype, seed=4))


@pytest.mark.parametrize("elem", ELEMS)
def test_mx_long_k(elem):
    data, scales = _mx_weight(64, 65536, elem, seed=6)
    _mx_check(_x((3, 65536), torch.bfloat16), data, scales, elem)
    _mx_check(_x((2, 65536), torch.float16), data, scales, elem)


@pytest.mark.parametrize("elem", ELEMS)
def test_mx_batch_dims_noncontiguous_and_e8m0_scales(elem):
    data, scales = _mx_weight(96, 512, elem)
    _batch_dims_and_strides(lambda x, b: _mx_check(x, data, scales, elem, b),
                            lambda x: MX_OP(x, data, scales, elem, None))
    # the scales as float8_e8m0fnu are the same bytes: the same bits
    x = _x((9, 512), torch.bfloat16)
    assert torch.equal(MX_OP(x, data, scales.view(torch.float8_e8m0fnu), elem, None),
                       MX_OP(x, data, scales, elem, None))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("elem", ELEMS)
def test_mx_nan_scale(elem, dtype):
    # E8M0 0xFF is NaN: the whole block of 32 decodes to NaN, so its output column is NaN
    data, scales = _mx_weight(160, 1024, elem)
    s = scales.clone()
    s[7, 3] = 0xFF
    s[150, 31] = 0xFF
    for m in (1, 40):
        x = _x((m, 1024), dtype)
        y = MX_OP(x, data, s, elem, None)
        ref = ref_gemm.gemm_mx_w16(x, data, s, elem)
        assert torch.isnan(ref[:, 7]).all() and torch.isnan(ref[:, 150]).all()
        assert torch.isnan(y[:, 7]).all() and torch.isnan(y[:, 150]).all()
        keep = torch.ones(160, dtype=torch.bool, device="cuda")
        keep[[7, 150]] = False
        assert torch.equal(torch.isnan(y), torch.isnan(ref))
        assert torch.isfinite(y[:, keep]).all()


@pytest.mark.parametrize("elem", ELEMS)
def test_mx_fp16_no_overflow_with_large_scales(elem):
    # large E8M0 scales: element * 2^e overflows fp16 although the fp32 result is finite
    # and small; the kernel must not overflow (the contract: no NaN/inf where the reference
    # is finite)
    data, scales = _mx_weight(64, 256, elem, seed=8, scale=1e6)
    assert scales.min().item() >= 127 + 12  # every element * scale >= 2^12 or 0
    assert (ref_gemm.mx_dequantize(data, scales, elem, torch.float32).abs().max()
            > torch.finfo(torch.float16).max)
    _mx_check(_x((4, 256), torch.float16) * 1e-4, data, scales, elem)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 16, 40])
@pytest.mark.parametrize("elem", ELEMS)
def test_mx_row_base_rescaling(elem, m, dtype):
    """Wide E8M0 ranges: MXFP4 scales its operands per block relative to a running per-row
    base (the largest E8M0 byte of the row so far; csrc/gemm MxBase), MXFP8 post-scales each
    block's fp32 sums; both against block scales that grow along K (MXFP4: the sums rescaled at
    every step), a row spanning 2^-120 .. 2^100 (bf16) / 2^-40 .. 2^12 (fp16), a row of zero
    bytes (2^-127; bf16), and one NaN byte (its row NaN, the others finite)."""
    n, k = 72, 4096
    g = torch.Generator(device="cuda").manual_seed(11)
    if elem == "e2m1":
        data = torch.randint(0, 256, (n, k // 2), generator=g, device="cuda", dtype=torch.uint8)
    else:
        data = torch.randn(n, k, generator=g, device="cuda").to(torch.float8_e4m3fn)
    lo, hi = (7, 227) if dtype == torch.bfloat16 else (87, 139)
    ramp = torch.linspace(lo, hi, k // 32, device="cuda").round().to(torch.uint8)
    scales = torch.randint(lo, hi + 1, (n, k // 32), generator=g, device="cuda",
                           dtype=torch.uint8)
    scales[0] = ramp                          # the base grows at every step
    scales[1] = ramp.flip(0)                  # the first block is the largest
    if dtype == torch.bfloat16:
        scales[2] = 0                         # 2^-127 everywhere
    scales[3, 5] = 255                        # NaN
    x = _x((m, k), dtype) * (1e-3 if dtype == torch.float16 else 1.0)
    ref = ref_gemm.gemm_mx_w16_fp32(x, data, scales, elem)
    y = MX_OP(x, data, scales, elem)
    assert torch.isnan(y[:, 3]).all()
    keep = torch.ones(n, dtype=torch.bool, device="cuda")
    keep[3] = False
    ok = torch.isfinite(ref[:, keep])
    assert torch.isfinite(y[:, keep][ok]).all(), "NaN/inf where the reference is finite"
    r, yy = ref[:, keep][ok].double(), y[:, keep][ok].double()
    err = ((yy - r).norm() / r.norm()).item()
    assert err < TOL[dtype], err
    if dtype == torch.bfloat16:  # the row of 2^-127 scales on its own (far below the others)
        r2, y2 = ref[:, 2].double(), y[:, 2].double()
        assert ((y2 - r2).norm() / r2.norm()).item() < TOL[dtype]


@pytest.mark.parametrize("m", [1, 16, 100])
@pytest.mark.parametrize("elem", ELEMS)
def test_mx_deterministic(elem, m):
    data, scales = _mx_weight(4096, 4096, elem)
    x = _x((m, 4096), torch.bfloat16)
    a = MX_OP(x, data, scales, elem, None)
    for _ in range(2):
        assert torch.equal(a, MX_OP(x, data, scales, elem, None))


@pytest.mark.parametrize("elem", ELEMS)
def test_mx_opcheck_cuda(elem):
    data, scales = _mx_weight(72, 96, elem)
    for b in (None, _x((72,), torch.float16)):
        # test_schema compares inputs with a multiply torch has no float8 kernel for
        opcheck(MX_OP.default, (_x((5, 96), torch.float16), data, scales, elem, b),
                schema_ok=elem == "e2m1")


@pytest.mark.parametrize("elem", ELEMS)
def test_mx_compile_and_cuda_graph(elem):
    data, scales = _mx_weight(512, 1024, elem)
    x = _x((16, 1024), torch.bfloat16)
    bias = _x((512,), torch.bfloat16)

    def f(x):
        return nvfp4_ops.gemm_mx_w16(x, data, scales, elem, bias)

    eager = f(x)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, fullgraph=True)(x), eager)

    def refill():
        x.copy_(_x((16, 1024), torch.bfloat16, seed=9))

    capture_and_replay(lambda: (f(x),), refill)


def test_mx_empty_and_zero_rows():
    for elem in ELEMS:
        data, scales = _mx_weight(32, 64, elem)
        assert MX_OP(_x((0, 64), torch.bfloat16), data, scales, elem, None).shape == (0, 32)
        assert MX_OP(_x((3, 64), torch.bfloat16), data[:0], scales[:0], elem, None).shape == (3, 0)
