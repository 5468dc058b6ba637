"""The CUDA scale search (docs/spec.md section 5): quantize(scale_method="mse" / "hessian") and
mx_quantize(scale_method="mse") on CUDA against the exhaustive reference, bit for bit.

The kernels prune the 126 (255) candidates with proven bounds (docs/search.md); these tests
feed them the inputs where a wrong bound would show: heavy tails, sparse blocks, a single
outlier, grids on which many candidates tie exactly, zero, saturating and non-finite
blocks, unusual global scales and Hessians that are singular, not symmetric or indefinite.
Every output byte is compared with the reference on the same CUDA inputs, after poisoning
the allocator so that an unwritten byte fails too. Skipped without a GPU.
"""

import pytest
import torch

import nvfp4_ops
from nvfp4_ops import _library as backends
from nvfp4_ops import reference as ref

from .._utils import poison_cuda_cache, requires_cuda
from ._helpers import DTYPES, OPS, gen

pytestmark = [requires_cuda, pytest.mark.cuda]

F32 = torch.float32


def _need_kernel(op):
    name, why = backends.op_implementation(op, "cuda")
    if name != "cuda-kernel":
        pytest.skip(f"nvfp4.{op} has no CUDA kernel here ({why}): nothing to compare")


def _input(kind, shape, seed=0):
    """fp32 CPU test data of one of the search's hard cases."""
    g = gen(seed)
    n = 1
    for d in shape:
        n *= d
    if kind == "gaussian":
        x = torch.randn(n, generator=g)
    elif kind == "student_t":  # heavy tails: block maxima far from the global one
        x = torch.randn(n, generator=g) / (torch.rand(n, generator=g) + 0.02).sqrt()
    elif kind == "sparse":
        x = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.15)
    elif kind == "outlier":  # one large element per block, the rest tiny: many exact ties
        x = torch.randn(n, generator=g) * 0.01
        x.view(-1, 16)[:, 5] = torch.randn(n // 16, generator=g) * 30
    elif kind == "near_equal":  # values on small grids: several candidates reach the same SSE
        x = torch.randint(-6, 7, (n,), generator=g).float() * 0.5
        x.view(-1, 16)[1::4] = torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 6] * 2) * 0.75
        x.view(-1, 16)[2::4] *= 2.0 ** torch.randint(-8, 8, (x.view(-1, 16)[2::4].shape[0], 1),
                                                      generator=g).float()
    elif kind == "zeros":  # all-zero blocks (with -0.0) between normal ones
        x = torch.randn(n, generator=g)
        x.view(-1, 16)[::3] = 0.0
        x.view(-1, 16)[1::3] = -0.0
    elif kind == "nonfinite":
        x = torch.randn(n, generator=g)
        v = x.view(-1, 16)
        v[::5, 3] = float("nan")
        v[1::5, 0] = float("inf")
        v[2::5, 15] = -float("inf")
    elif kind == "wide":  # per-block magnitudes over 12 decades
        x = torch.randn(n, generator=g)
        x.view(-1, 16).mul_(10.0 ** torch.randint(-6, 7, (n // 16, 1), generator=g).float())
    else:
        raise AssertionError(kind)
    return x.reshape(shape)


def _same_bytes(a, b):
    return torch.equal(a.view(torch.uint8).cpu(), b.view(torch.uint8).cpu())


def _check_quantize(x, gs, swizzle=False, method="mse", H=None):
    """The op on CUDA vs the reference on the same CUDA tensors, outputs poisoned first."""
    want = ref.quantize(x, gs, swizzle, method, H)
    poison_cuda_cache(*want)
    got = OPS.quantize(x, gs, swizzle, method, H)
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape and g_.dtype == w_.dtype and g_.stride() == w_.stride()
    assert _same_bytes(got[1], want[1]), "scale bytes differ"
    assert _same_bytes(got[0], want[0]), "codes differ"
    return got


def _check_mx(x, elem, rounding, swizzle=False, axis=-1):
    want = ref.mx_quantize(x, elem, rounding, swizzle, axis, "mse")
    poison_cuda_cache(*want)
    got = OPS.mx_quantize(x, elem, rounding, swizzle, axis, "mse")
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape and g_.dtype == w_.dtype and g_.stride() == w_.stride()
    assert _same_bytes(got[1], want[1]), "scale bytes differ"
    assert _same_bytes(got[0], want[0]), "elements differ"
    return got


def _hessian(kind, K, seed=7):
    """[K/16, 16, 16] fp32 on CUDA: from correlated activations, or a hard case."""
    g = gen(seed)
    if kind == "correlated":
        mix = torch.eye(K) + 0.5 * torch.randn(K, K, generator=g) / K**0.5
        X = torch.randn(512, K, generator=g) @ mix
        return ref.hessian_blocks(X.cuda())
    if kind == "singular":  # rank 8 < 16: no lambda_min bound, the search runs unbounded
        return ref.hessian_blocks(torch.randn(8, K, generator=g).cuda())
    if kind == "indefinite":  # not symmetric, negative diagonal entries
        return torch.randn(K // 16, 16, 16, generator=g).cuda()
    if kind == "outlier_channel":  # one channel 100x larger
        X = torch.randn(256, K, generator=g)
        X[:, 3] *= 100
        return ref.hessian_blocks(X.cuda())
    raise AssertionError(kind)


# ---- NVFP4 "mse" -------------------------------------------------------------------------------


@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("K", [16, 48, 4096])
@pytest.mark.parametrize("M", [1, 90, 130])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_shapes_dtypes(dtype, M, K, swizzle):
    _need_kernel("quantize")
    x = (_input("gaussian", (M, K), seed=M + K) * 3).to(dtype).cuda()
    _check_quantize(x, ref.global_scale(x), swizzle)


@pytest.mark.parametrize("kind", ["gaussian", "student_t", "sparse", "outlier", "near_equal",
                                  "zeros", "nonfinite", "wide"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mse_hard_inputs(kind, dtype):
    _need_kernel("quantize")
    x = _input(kind, (130, 256), seed=3).to(dtype).cuda()
    gs = ref.global_scale(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
    _check_quantize(x, gs, swizzle=kind in ("gaussian", "zeros"))


@pytest.mark.parametrize("factor", [1.0, 16.0, 1000.0, 1e-3])
def test_mse_saturating_and_scaled_global_scale(factor):
    # factor > 1: block maxima far above what the global scale maps to 448 (scales saturate
    # at 0x7E); factor < 1: tiny scales (subnormal E4M3 bytes).
    _need_kernel("quantize")
    x = _input("student_t", (64, 512), seed=4).cuda()
    gs = ref.global_scale(x) * factor
    _, s = _check_quantize(x, gs)
    if factor == 16.0:
        assert (s.view(torch.uint8) == 0x7E).float().mean() > 0.3


@pytest.mark.parametrize("gs_value", [-37.5, 0.0, float("inf"), float("nan"), 1e-35, 3e33,
                                      2.0**-101, 2.0**101, 1.0])
def test_mse_unusual_global_scales(gs_value):
    # Outside [2^-100, 2^100] the kernel runs the exhaustive search with the reference's
    # arithmetic (NaN rules included); inside it, the bounded one.
    _need_kernel("quantize")
    x = _input("gaussian", (16, 64), seed=5).cuda()
    x[0, :16] = 0.0
    _check_quantize(x, torch.tensor([gs_value], device="cuda"))


@pytest.mark.parametrize("swizzle", [False, True])
def test_mse_3d_per_batch_global_scale(swizzle):
    _need_kernel("quantize")
    x = torch.stack([_input("gaussian", (90, 64), seed=6) * s for s in (1.0, 1e-3, 50.0)])
    x = x.to(torch.bfloat16).cuda()
    gs = torch.cat([ref.global_scale(x[b]) for b in range(3)])
    gs[2] *= 8  # saturating batch
    _check_quantize(x, gs, swizzle)
    _check_quantize(x, ref.global_scale(x), swizzle)  # one global scale for every batch


def _batched_input(B, M, K, seed):
    """[B, M, K] fp32 CUDA data whose batches differ in magnitude, with per-batch global
    scales (some saturating, some tiny)."""
    x = _input("student_t", (B, M, K), seed=seed)
    x *= (10.0 ** torch.randint(-4, 5, (B, 1, 1), generator=gen(seed + 1)).float())
    x = x.cuda()
    gs = torch.cat([ref.global_scale(x[b]) for b in range(B)])
    gs[::7] *= 16  # saturating batches
    gs[3::11] = 2.0**-20  # underflowing scales
    return x, gs


# Many small batches with one global scale each: tiles of the kernels that span one batch,
# a few, and more than the tables a CTA holds at once (8 batches); per-batch block counts
# that do not divide the tile.
BATCHED_SHAPES = [(300, 1, 32), (129, 3, 80), (40, 16, 256), (5, 130, 48)]


@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("B,M,K", BATCHED_SHAPES)
def test_mse_many_small_batches(B, M, K, swizzle):
    """Bit for bit the reference, and each batch as its own 2-D tensor with its scale."""
    _need_kernel("quantize")
    x, gs = _batched_input(B, M, K, seed=B + M + K)
    x = x.to(torch.bfloat16)
    packed, scales = _check_quantize(x, gs, swizzle)
    for b in range(0, B, max(1, B // 16)):
        p2, s2 = OPS.quantize(x[b], gs[b:b + 1], swizzle, "mse")
        assert _same_bytes(packed[b], p2) and _same_bytes(scales[b], s2), b


@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("B,M,K", [(200, 3, 64), (21, 16, 32), (3, 129, 16)])
def test_hessian_many_small_batches(B, M, K, swizzle):
    _need_kernel("quantize")
    x, gs = _batched_input(B, M, K, seed=B * M + K)
    H = _hessian("correlated", K)
    packed, scales = _check_quantize(x, gs, swizzle, "hessian", H)
    for b in range(0, B, max(1, B // 16)):
        p2, s2 = OPS.quantize(x[b], gs[b:b + 1], swizzle, "hessian", H)
        assert _same_bytes(packed[b], p2) and _same_bytes(scales[b], s2), b
    # one global scale for all batches: the same bytes as the 2-D [B * M, K] tensor
    g1 = ref.global_scale(x)
    p3, s3 = _check_quantize(x, g1, False, "hessian", H)
    p2, s2 = OPS.quantize(x.reshape(B * M, K), g1, False, "hessian", H)
    assert _same_bytes(p3.reshape(B * M, -1), p2) and _same_bytes(s3.reshape(B * M, -1), s2)


def test_mse_tiny_and_huge_magnitudes():
    # Block maxima outside [2^-60, 2^60] take the exhaustive path.
    _need_kernel("quantize")
    x = _input("gaussian", (8, 64), seed=8)
    x[0:2] *= 1e-25
    x[2:4] *= 1e25
    x = x.cuda()
    _check_quantize(x, ref.global_scale(x))
    _check_quantize(x, torch.tensor([2.0**-90], device="cuda"))


# ---- NVFP4 "hessian" ---------------------------------------------------------------------------


@pytest.mark.parametrize("hkind", ["correlated", "singular", "indefinite", "outlier_channel"])
def test_hessian_kinds(hkind):
    _need_kernel("quantize")
    x = _input("student_t", (90, 64), seed=9).cuda()
    _check_quantize(x, ref.global_scale(x), False, "hessian", _hessian(hkind, 64))


@pytest.mark.parametrize("dtype,M,K,swizzle", [
    (torch.bfloat16, 130, 48, True),
    (torch.float16, 1, 16, False),
    (torch.float32, 90, 4096, False),
])
def test_hessian_shapes_dtypes(dtype, M, K, swizzle):
    _need_kernel("quantize")
    x = (_input("gaussian", (M, K), seed=K) * 3).to(dtype).cuda()
    _check_quantize(x, ref.global_scale(x), swizzle, "hessian", _hessian("correlated", K))


@pytest.mark.parametrize("kind", ["sparse", "outlier", "near_equal", "zeros", "nonfinite"])
def test_hessian_hard_inputs(kind):
    _need_kernel("quantize")
    x = _input(kind, (64, 64), seed=10).cuda()
    gs = ref.global_scale(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
    _check_quantize(x, gs, False, "hessian", _hessian("correlated", 64))


def test_hessian_3d_per_batch_saturating():
    _need_kernel("quantize")
    x = torch.stack([_input("gaussian", (40, 64), seed=11), _input("student_t", (40, 64), seed=12)])
    x = x.cuda()
    gs = torch.cat([ref.global_scale(x[0]), ref.global_scale(x[1]) * 16])
    _check_quantize(x, gs, True, "hessian", _hessian("correlated", 64))


# ---- optimality: every chosen scale is the exhaustive minimum, with the tie rule ---------------


def _expected_choice(naive_obj, naive_byte, cand_obj, cand_bytes):
    m = cand_obj.min(dim=0).values
    idx = (cand_obj == m).int().argmax(dim=0)  # the smallest byte reaching the minimum
    first = torch.tensor(cand_bytes, dtype=torch.uint8, device=idx.device)[idx]
    take_naive = naive_obj <= m
    return torch.where(take_naive, naive_byte, first), torch.where(take_naive, naive_obj, m)


@pytest.mark.parametrize("method", ["mse", "hessian"])
@pytest.mark.parametrize("kind", ["gaussian", "student_t", "outlier", "near_equal"])
def test_chosen_objective_is_the_brute_force_minimum(method, kind):
    _need_kernel("quantize")
    x = _input(kind, (24, 64), seed=13).cuda()
    gs = ref.global_scale(x)
    H = _hessian("correlated", 64) if method == "hessian" else None
    _, scales = OPS.quantize(x, gs, False, method, H)
    chosen = scales.view(torch.uint8)
    naive = OPS.quantize(x, gs)[1].view(torch.uint8)
    obj = lambda b: ref.nvfp4_block_objective(x, b, gs, method, H)  # noqa: E731
    cands = list(range(1, 127))
    cand_obj = torch.stack([obj(torch.full_like(naive, c)) for c in cands])
    want_byte, want_obj = _expected_choice(obj(naive), naive, cand_obj, cands)
    assert torch.equal(chosen, want_byte)
    got = obj(chosen)
    assert torch.equal(got, want_obj)
    assert (got <= obj(naive)).all()  # never worse than "amax"


# ---- MX "mse" ------------------------------------------------------------------------------------


@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("elem", ["e2m1", "e4m3"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mx_mse(dtype, elem, rounding, swizzle):
    _need_kernel("mx_quantize")
    x = (_input("gaussian", (130, 96), seed=14) * 5).to(dtype).cuda()
    _check_mx(x, elem, rounding, swizzle)


@pytest.mark.parametrize("kind", ["student_t", "sparse", "outlier", "near_equal", "zeros",
                                  "nonfinite", "wide"])
@pytest.mark.parametrize("elem", ["e2m1", "e4m3"])
def test_mx_mse_hard_inputs(kind, elem):
    _need_kernel("mx_quantize")
    x = _input(kind, (64, 128), seed=15).cuda()
    for rounding in ("rceil", "floor"):
        _check_mx(x, elem, rounding)


def test_mx_mse_3d_and_columnwise():
    _need_kernel("mx_quantize")
    x = _input("student_t", (2, 64, 96), seed=16).to(torch.bfloat16).cuda()
    _check_mx(x, "e2m1", "floor", True)
    _check_mx(x, "e4m3", "rceil", False, -2)


@pytest.mark.parametrize("elem", ["e2m1", "e4m3"])
def test_mx_chosen_objective_is_the_brute_force_minimum(elem):
    _need_kernel("mx_quantize")
    x = _input("student_t", (16, 64), seed=17).cuda()
    for rounding in ("rceil", "floor"):
        scales = OPS.mx_quantize(x, elem, rounding, False, -1, "mse")[1]
        naive = OPS.mx_quantize(x, elem, rounding)[1]
        obj = lambda b: ref.mx_block_objective(x, b, elem)  # noqa: E731
        cands = list(range(255))
        cand_obj = torch.stack([obj(torch.full_like(naive, c)) for c in cands])
        want_byte, want_obj = _expected_choice(obj(naive), naive, cand_obj, cands)
        assert torch.equal(scales, want_byte)
        assert torch.equal(obj(scales), want_obj)


# ---- op machinery --------------------------------------------------------------------------------


def _samples():
    x = (_input("gaussian", (130, 64), seed=18) * 3).to(torch.bfloat16).cuda()
    gs = ref.global_scale(x)
    H = _hessian("correlated", 64)
    xm = _input("student_t", (64, 64), seed=19).cuda()
    return [
        ("quantize", (x, gs, False, "mse", None)),
        ("quantize", (x, gs, True, "hessian", H)),
        ("mx_quantize", (xm, "e2m1", "rceil", True, -1, "mse")),
        ("mx_quantize", (xm, "e4m3", "floor", False, -1, "mse")),
    ]


def test_opcheck():
    _need_kernel("quantize")
    for name, args in _samples():
        torch.library.opcheck(getattr(OPS, name).default, args)


def test_compile_fullgraph():
    _need_kernel("quantize")
    x = (_input("gaussian", (64, 128), seed=20) * 3).cuda()
    H = _hessian("correlated", 128)

    def f(x, H):
        gs = OPS.global_scale(x)
        a = OPS.quantize(x, gs, True, "mse", None)
        b = OPS.quantize(x, gs, False, "hessian", H)
        c = OPS.mx_quantize(x, "e2m1", "rceil", False, -1, "mse")
        return (*a, *b, *c)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    for u, v in zip(compiled(x, H), f(x, H)):
        assert _same_bytes(u, v)


def test_wrappers_reach_the_search():
    _need_kernel("quantize")
    x = (_input("gaussian", (32, 64), seed=21)).cuda()
    p, s = nvfp4_ops.quantize(x, scale_method="mse")
    w = ref.quantize(x, ref.global_scale(x), scale_method="mse")
    assert _same_bytes(p, w[0]) and _same_bytes(s, w[1])


# ---- hessian_blocks on CUDA ----------------------------------------------------------------------


def test_hessian_blocks_cuda_is_fp32_and_tf32_independent():
    # fp32 activations: bf16 ones would be exact in TF32 and could not show the difference.
    X = torch.randn(5000, 64, generator=gen(22))
    want = torch.einsum("tgi,tgj->gij", *(2 * [X.double().view(5000, 4, 16)]))
    m = torch.backends.cuda.matmul
    old = m.allow_tf32
    try:
        m.allow_tf32 = False
        h_ieee = ref.hessian_blocks(X.cuda(), chunk_rows=1024)
        m.allow_tf32 = True
        h_tf32 = ref.hessian_blocks(X.cuda(), chunk_rows=1024)
    finally:
        m.allow_tf32 = old
    assert h_ieee.dtype == F32 and h_ieee.shape == (4, 16, 16)
    assert torch.allclose(h_ieee.double().cpu(), want, rtol=1e-4, atol=1e-2)
    # TF32 (inputs rounded to 10 mantissa bits) moves entries by ~1e-3 relative.
    assert torch.equal(h_ieee, h_tf32), "hessian_blocks must not follow the TF32 setting"
