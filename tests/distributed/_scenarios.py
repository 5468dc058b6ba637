"""The distributed scenarios, run on every rank by :mod:`._harness` (a scenario passes when
it returns on every rank). Each takes the 1-D mesh of the run and this rank's device.

The single-process results they compare against are computed on every rank from the same
seeded full tensors, so a DTensor result is checked against the op on the whole tensor.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import nvfp4_ops as n
import nvfp4_ops.distributed as nd
from nvfp4_ops.nn import MXFP8Linear, NVFP4Linear

SCENARIOS: Dict[str, Callable] = {}
#: scenario name -> "dtensor" or "tp" (the test file that reports it).
GROUP: Dict[str, str] = {}


def scenario(group: str):
    def deco(fn):
        SCENARIOS[fn.__name__] = fn
        GROUP[fn.__name__] = group
        return fn
    return deco


# -- helpers ---------------------------------------------------------------------------


def full(t: Tensor) -> Tensor:
    """The whole tensor of a DTensor (float8 gathered as bytes: gloo does not move float8)."""
    if not isinstance(t, DTensor):
        return t
    if t.dtype.itemsize == 1 and t.dtype != torch.uint8:
        b = DTensor.from_local(t.to_local().view(torch.uint8), t.device_mesh, t.placements,
                               run_check=False, shape=t.shape, stride=t.stride())
        return b.full_tensor().view(t.dtype)
    return t.full_tensor()


def assert_same(got: Tensor, want: Tensor, what: str) -> None:
    got, want = full(got), want
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"{what}: {got.dtype} {list(got.shape)} != {want.dtype} {list(want.shape)}"
    if got.dtype.itemsize == 1:
        got, want = got.view(torch.uint8), want.view(torch.uint8)
    ok = torch.equal(got, want) if not got.is_floating_point() else \
        torch.equal(torch.nan_to_num(got, 7.0), torch.nan_to_num(want, 7.0)) and \
        torch.equal(got.isnan(), want.isnan())
    assert ok, f"{what}: differs from the single-process result"


def expect_error(fn, *needles: str) -> None:
    try:
        fn()
    except (ValueError, RuntimeError) as e:
        for s in needles:
            assert s in str(e), f"error {str(e)!r} lacks {s!r}"
        return
    raise AssertionError(f"no error raised (expected one with {needles})")


def data(shape, dtype=torch.bfloat16, device="cpu", seed=0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * torch.rand(shape[-1], generator=g) * 4
    return x.to(dtype).to(device)


def placed(x: Tensor, mesh, p) -> DTensor:
    return nd.distribute(x, mesh, p)


def on_rank(mesh, x: Tensor, fill_rank: int, fill) -> Tensor:
    """Zero rank ``fill_rank``'s half of the rows of ``x`` with ``fill`` (rows split in 2)."""
    x = x.clone()
    half = x.shape[0] // 2
    x[fill_rank * half:(fill_rank + 1) * half] = fill
    return x


# -- DTensor ops -----------------------------------------------------------------------


@scenario("dtensor")
def global_scale_is_global(mesh, dev):
    x = data((90, 64), device=dev)
    x[80, 5] = 1000.0  # on rank 1 (rows 45..89): rank 0's shard alone has another scale
    for p in (Shard(0), Shard(1), Replicate()):
        gs = nd.global_scale(placed(x, mesh, p))
        assert isinstance(gs, DTensor) and gs.placements == (Replicate(),), gs
        assert_same(gs, n.global_scale(x), f"global_scale {p}")
        # The op itself (what nvfp4_ops.quantize calls when no scale is given).
        assert_same(torch.ops.nvfp4.global_scale(placed(x, mesh, p)), n.global_scale(x),
                    f"torch.ops.nvfp4.global_scale {p}")
    x3 = data((4, 32, 32), dtype=torch.float32, device=dev)
    assert_same(nd.global_scale(placed(x3, mesh, Shard(0))), n.global_scale(x3), "3-D")
    local = n.global_scale(placed(x, mesh, Shard(0)).to_local())
    assert torch.equal(local, n.global_scale(x)) == (mesh.get_rank() == 1)


@scenario("dtensor")
def global_scale_special_values(mesh, dev):
    x = data((64, 32), dtype=torch.float32, device=dev)
    for fill, what in ((0.0, "one rank all zero"), (float("nan"), "NaN on one rank"),
                       (float("inf"), "inf on one rank")):
        for r in (0, 1):
            y = on_rank(mesh, x, r, fill)
            assert_same(nd.global_scale(placed(y, mesh, Shard(0))), n.global_scale(y),
                        f"{what} (rank {r})")
    z = torch.zeros(64, 32, device=dev)
    assert_same(nd.global_scale(placed(z, mesh, Shard(0))), n.global_scale(z), "all zero")
    tiny = torch.full((64, 32), 1e-37, device=dev)
    assert_same(nd.global_scale(placed(tiny, mesh, Shard(1))), n.global_scale(tiny), "tiny")
    part = DTensor.from_local(x, mesh, [Partial()], run_check=False)
    expect_error(lambda: nd.global_scale(part), "Partial", "Shard or Replicate")


@scenario("dtensor")
def nvfp4_rows_pass_through(mesh, dev):
    for shape in ((90, 64), (130, 48), (2, 30, 32)):
        x = data(shape, device=dev)
        dx = placed(x, mesh, Shard(0))
        packed, scales = n.quantize(dx)  # no global scale: the global one is used
        assert packed.placements == scales.placements == (Shard(0),)
        P, S = n.quantize(x)
        gs = n.global_scale(x)
        assert_same(packed, P, f"packed {shape}")
        assert_same(scales, S, f"scales {shape}")
        out = n.dequantize(packed, scales, nd.global_scale(dx), torch.float32)
        assert out.placements == (Shard(0),)
        assert_same(out, n.dequantize(P, S, gs, torch.float32), f"dequantize {shape}")
        assert_same(n.quant_dequant(dx), n.quant_dequant(x), f"quant_dequant {shape}")
    # QAT: the straight-through gradient reaches a sharded leaf.
    leaf = placed(data((64, 32), dtype=torch.float32, device=dev), mesh, Shard(0))
    leaf.requires_grad_()
    (n.quant_dequant(leaf) * 3).sum().backward()
    assert_same(leaf.grad, torch.full((64, 32), 3.0, device=dev), "straight-through grad")
    # Rows of a 3-D tensor, and a per-batch global scale with the batch sharded.
    x3 = data((4, 32, 32), dtype=torch.float32, device=dev)
    gs3 = torch.stack([n.global_scale(b) for b in x3]).reshape(4)
    p3, s3 = n.quantize(placed(x3, mesh, Shard(0)), placed(gs3, mesh, Replicate()))
    P3, S3 = n.quantize(x3, gs3)
    assert_same(p3, P3, "3-D batch-sharded packed")
    assert_same(s3, S3, "3-D batch-sharded scales")
    assert_same(n.dequantize(p3, s3, placed(gs3, mesh, Replicate()), torch.float32),
                n.dequantize(P3, S3, gs3, torch.float32), "3-D batch-sharded dequantize")
    assert_same(n.quant_dequant(placed(x3, mesh, Shard(0)), placed(gs3, mesh, Replicate())),
                n.quant_dequant(x3, gs3), "3-D batch-sharded quant_dequant")
    p3, s3 = n.quantize(placed(x3, mesh, Shard(1)), placed(gs3, mesh, Replicate()))
    assert p3.placements == (Shard(1),)
    assert_same(p3, P3, "3-D row-sharded packed")


@scenario("dtensor")
def nvfp4_k_sharding(mesh, dev):
    x = data((40, 96), device=dev)  # local K 48: three blocks of 16 per rank
    dx = placed(x, mesh, Shard(1))
    packed, scales = n.quantize(dx)
    assert packed.placements == scales.placements == (Shard(1),)
    assert packed.to_local().shape == (40, 24) and scales.to_local().shape == (40, 3)
    P, S = n.quantize(x)
    assert_same(packed, P, "packed")
    assert_same(scales, S, "scales")
    gs = nd.global_scale(dx)
    assert_same(n.dequantize(packed, scales, gs, torch.bfloat16),
                n.dequantize(P, S, n.global_scale(x), torch.bfloat16), "dequantize")
    assert_same(n.quant_dequant(dx), n.quant_dequant(x), "quant_dequant")
    # The Hessian search: its [K/16, 16, 16] blocks follow K (redistributed from replicated).
    H = n.hessian_blocks(data((64, 96), dtype=torch.float32, device=dev, seed=1))
    xh = x[:4]
    ph, sh = n.quantize(placed(xh, mesh, Shard(1)), gs, scale_method="hessian",
                        hessian=placed(H, mesh, Replicate()))
    Ph, Sh = n.quantize(xh, n.global_scale(x), scale_method="hessian", hessian=H)
    assert_same(ph, Ph, "hessian packed")
    assert_same(sh, Sh, "hessian scales")
    # A local K that is not a multiple of 16: a clear error, nothing redistributed.
    bad = placed(data((8, 48), device=dev), mesh, Shard(1))
    for fn in (lambda: n.quantize(bad), lambda: n.quant_dequant(bad)):
        expect_error(fn, "multiple of 16", "local sizes [24]", "global 48")
    bp, bs = n.quantize(data((8, 48), device=dev))
    expect_error(lambda: n.dequantize(placed(bp, mesh, Shard(1)), placed(bs, mesh, Shard(1)),
                                      placed(n.global_scale(data((8, 48))), mesh, Replicate())),
                 "multiple of 8", "packed bytes", "local sizes [12]")


@scenario("dtensor")
def replicate_passes_through(mesh, dev):
    x = data((33, 64), device=dev)
    dx = placed(x, mesh, Replicate())
    packed, scales = n.quantize(dx, swizzle=True)
    assert packed.placements == scales.placements == (Replicate(),)
    P, S = n.quantize(x, swizzle=True)
    assert_same(packed.to_local(), P, "packed")
    assert_same(scales.to_local(), S, "swizzled scales")
    d, s = n.mx_quantize(dx, "e2m1")
    D, Sm = n.mx_quantize(x, "e2m1")
    assert d.placements == (Replicate(),)
    assert_same(d.to_local(), D, "mxfp4 data")
    assert_same(s.to_local(), Sm, "mxfp4 scales")


@scenario("dtensor")
def partial_input_is_reduced_first(mesh, dev):
    x = data((32, 32), dtype=torch.float32, device=dev)
    # Each rank holds half of x: the partial sum is x.
    part = DTensor.from_local(x / 2, mesh, [Partial()], run_check=False)
    gs = n.global_scale(x)
    qd = n.quant_dequant(part, placed(gs, mesh, Replicate()))
    assert qd.placements == (Replicate(),)
    assert_same(qd, n.quant_dequant(x, gs), "quant_dequant of a partial sum")


@scenario("dtensor")
def mx_rows_and_k(mesh, dev):
    for elem in ("e4m3", "e2m1"):
        for p, shape in ((Shard(0), (90, 64)), (Shard(1), (40, 128))):
            x = data(shape, device=dev)
            d, s = n.mx_quantize(placed(x, mesh, p), elem)
            assert d.placements == s.placements == (p,)
            D, S = n.mx_quantize(x, elem)
            assert_same(d, D, f"{elem} {p} data")
            assert_same(s, S, f"{elem} {p} scales")
            y = n.mx_dequantize(d, s, elem, torch.float32)
            assert y.placements == (p,)
            assert_same(y, n.mx_dequantize(D, S, elem, torch.float32), f"{elem} {p} dequant")
        expect_error(lambda: n.mx_quantize(placed(data((8, 96), device=dev), mesh, Shard(1)),
                                           elem), "multiple of 32", "local sizes [48]")
    # The columnwise cast (axis=-2): blocks along M, the outputs transposed.
    x = data((128, 64), device=dev)
    for p, q in ((Shard(1), Shard(0)), (Shard(0), Shard(1))):
        d, s = n.mx_quantize(placed(x, mesh, p), axis=-2)
        assert d.placements == s.placements == (q,), (p, d.placements)
        D, S = n.mx_quantize(x, axis=-2)
        assert_same(d, D, f"axis=-2 {p} data")
        assert_same(s, S, f"axis=-2 {p} scales")
    expect_error(lambda: n.mx_quantize(placed(data((96, 64), device=dev), mesh, Shard(0)),
                                       axis=-2), "dim -2 (the blocked dim)", "multiple of 32")


def _weight(fmt: str, w: Tensor):
    """(op, data, scales, the op's arguments between the scales and the bias)."""
    ops = torch.ops.nvfp4
    if fmt == "nvfp4":
        gs = n.global_scale(w)
        packed, scales = ops.quantize(w, gs, False, "amax", None)
        return ops.gemm_nvfp4_w4a16, packed, scales, [gs]
    elem = "e2m1" if fmt == "mxfp4" else "e4m3"
    d, s = ops.mx_quantize(w, elem, "rceil", False, -1, "amax")
    return ops.gemm_mx_w16, d, s, [elem]


def assert_gemm_close(got: Tensor, want: Tensor, what: str, exact: bool) -> None:
    """The same bits (CPU: the reference on column slices), else the GEMM's tolerance."""
    if exact:
        assert_same(got, want, what)
    else:
        got = full(got)
        err = ((got.double() - want.double()).norm() / want.double().norm()).item()
        assert err < 4e-3, f"{what}: relative Frobenius error {err}"


@scenario("dtensor")
def gemm_ops_tensor_parallel(mesh, dev):
    """The weight-only GEMM ops on the tensor-parallel layouts: weight rows sharded (x
    replicated) -> output columns; K sharded like x -> a Partial sum (bias split over the
    ranks); x rows sharded with the weight replicated; everything replicated."""
    exact = dev == "cpu"  # the CUDA kernel's split-K depends on N and K
    for fmt in ("nvfp4", "mxfp8", "mxfp4"):
        w = data((48, 128), dtype=torch.float32, device=dev, seed=5)
        x = data((6, 128), dtype=torch.bfloat16, device=dev, seed=6)
        bias = data((48,), dtype=torch.bfloat16, device=dev, seed=7)
        op, wd, ws, mid = _weight(fmt, w)
        want = op(x, wd, ws, *mid, bias)
        rep = [placed(t, mesh, Replicate()) if isinstance(t, Tensor) else t for t in mid]
        y = op(placed(x, mesh, Replicate()), placed(wd, mesh, Shard(0)),
               placed(ws, mesh, Shard(0)), *rep, placed(bias, mesh, Shard(0)))
        assert y.placements == (Shard(1),), y.placements
        assert_gemm_close(y, want, f"{fmt} colwise", exact)
        y = op(placed(x, mesh, Shard(1)), placed(wd, mesh, Shard(1)),
               placed(ws, mesh, Shard(1)), *rep, placed(bias, mesh, Replicate()))
        assert y.placements == (Partial(),), y.placements
        assert_rowwise_close(full(y), want, f"{fmt} rowwise")
        y = op(placed(x, mesh, Shard(0)), placed(wd, mesh, Replicate()),
               placed(ws, mesh, Replicate()), *rep, placed(bias, mesh, Replicate()))
        assert y.placements == (Shard(0),), y.placements
        assert_same(y, want, f"{fmt} rows of x")
        y = op(placed(x, mesh, Replicate()), placed(wd, mesh, Replicate()),
               placed(ws, mesh, Replicate()), *rep, None)
        assert_same(y, op(x, wd, ws, *mid, None), f"{fmt} replicated, no bias")
    # K = 96 over 2 ranks: 48 per rank, not a multiple of the MX block (32)
    op, wd, ws, mid = _weight("mxfp8", data((16, 96), dtype=torch.float32, device=dev))
    xk = data((4, 96), device=dev)
    expect_error(lambda: op(placed(xk, mesh, Shard(1)), placed(wd, mesh, Shard(1)),
                            placed(ws, mesh, Shard(1)), *mid, None),
                 "nvfp4.gemm_mx_w16", "multiple of 32")


@scenario("dtensor")
def swizzled_scales_of_row_shards(mesh, dev):
    # Local M a multiple of 128: the ranks' tiles are the global swizzled scales.
    x = data((256, 96), device=dev)
    dx = placed(x, mesh, Shard(0))
    P, S = n.quantize(x, swizzle=True)
    packed, scales = n.quantize(dx, swizzle=True)
    assert scales.placements == (Shard(0),) and scales.to_local().shape == (128, 8)
    assert_same(packed, P, "packed")
    assert_same(scales, S, "swizzled scales")
    gs = nd.global_scale(dx)
    assert_same(n.dequantize(packed, scales, gs, torch.float32, swizzled=True),
                n.dequantize(P, S, n.global_scale(x), torch.float32, swizzled=True),
                "dequantize swizzled")
    _, lin = n.quantize(dx)
    sw = n.swizzle_scales(lin)
    assert sw.placements == (Shard(0),)
    assert_same(sw, S, "swizzle_scales")
    d, s = n.mx_quantize(dx, swizzle=True)
    D, Sm = n.mx_quantize(x, swizzle=True)
    assert_same(s, Sm, "mx swizzled scales")
    assert_same(n.mx_dequantize(d, s, "e4m3", torch.float32, swizzled=True),
                n.mx_dequantize(D, Sm, "e4m3", torch.float32, swizzled=True), "mx dequant")
    # Local M not a multiple of 128 (130 -> 65 + 65): refused as a DTensor layout; each
    # rank's own tiles (its 65 rows padded to 128) come from local_swizzled_scales.
    x = data((130, 64), device=dev)
    dx = placed(x, mesh, Shard(0))
    expect_error(lambda: n.quantize(dx, swizzle=True), "multiple of 128",
                 "local sizes [65]", "local_swizzled_scales")
    packed, lin = n.quantize(dx)
    expect_error(lambda: n.swizzle_scales(lin), "multiple of 128", "local_swizzled_scales")
    mine = nd.local_swizzled_scales(lin)
    assert not isinstance(mine, DTensor) and mine.shape == (128, 4), mine.shape
    rows = slice(65 * mesh.get_rank(), 65 * (mesh.get_rank() + 1))
    _, S_all = n.quantize(x)
    assert_same(mine, n.swizzle_scales(S_all[rows].contiguous()), "per-rank tiles")
    gs = n.global_scale(x)
    assert_same(n.dequantize(packed.to_local(), mine, gs, torch.float32, swizzled=True),
                n.dequantize(*n.quantize(x, gs), gs, torch.float32)[rows],
                "per-rank tiles dequantize the rank's rows")
    assert_same(n.unswizzle_scales(mine, 65, 4), S_all[rows], "per-rank unswizzle")
    # K-sharded swizzling and row-sharded unswizzling are refused with the reason.
    dk = placed(data((128, 128), device=dev), mesh, Shard(1))
    expect_error(lambda: n.quantize(dk, swizzle=True), "swizzled scales", "sharded")
    expect_error(lambda: n.unswizzle_scales(placed(S, mesh, Shard(0)), 256, 5),
                 "unswizzle_scales", "local tensor")
    # 3-D swizzled scales sharded on the batch: each batch is swizzled alone.
    x3 = data((4, 40, 32), dtype=torch.float32, device=dev)
    _, s3 = n.quantize(x3)
    sw3 = n.swizzle_scales(placed(s3, mesh, Shard(0)))
    assert sw3.placements == (Shard(0),)
    assert_same(sw3, n.swizzle_scales(s3), "3-D swizzle")
    assert_same(n.unswizzle_scales(sw3, 40, 2), s3, "3-D unswizzle")


@scenario("dtensor")
def two_dim_mesh(mesh, dev):
    from torch.distributed.device_mesh import init_device_mesh

    mesh2 = init_device_mesh(dev.type, (mesh.size(), 1), mesh_dim_names=("tp", "x"))
    x = data((64, 96), device=dev)
    x[50, 3] = -300.0  # in rank 1's rows
    for pls in ((Shard(0), Shard(1)), (Shard(1), Shard(0)), (Replicate(), Shard(1))):
        dx = distribute_tensor(x, mesh2, pls)
        assert_same(nd.global_scale(dx), n.global_scale(x), f"global scale {pls}")
        packed, scales = n.quantize(dx)
        assert packed.placements == pls
        P, S = n.quantize(x)
        assert_same(packed, P, f"packed {pls}")
        assert_same(scales, S, f"scales {pls}")
        assert_same(n.quant_dequant(dx), n.quant_dequant(x), f"quant_dequant {pls}")


@scenario("dtensor")
def compiled_global_scale_and_quantize(mesh, dev):
    x = data((64, 64), device=dev)
    dx = placed(x, mesh, Shard(0))

    def f(t):
        gs = torch.ops.nvfp4.global_scale(t)
        return torch.ops.nvfp4.quantize(t, gs, False, "amax", None)

    packed, scales = torch.compile(f, backend="aot_eager", fullgraph=True)(dx)
    P, S = n.quantize(x)
    assert_same(packed, P, "compiled packed")
    assert_same(scales, S, "compiled scales")


# -- tensor parallelism ----------------------------------------------------------------

#: Rowwise tolerance, in ulps (eps) of the output dtype: each rank's partial product is
#: rounded to the output dtype before the all-reduce sums them, so an output may differ from
#: the single-process one by a few roundings of the partials' magnitude.
ROWWISE_ULPS = 4


def assert_rowwise_close(got: Tensor, want: Tensor, what: str) -> None:
    """``|got - want| <= 4 eps (|want| + max |want|)``, eps of the output dtype."""
    eps = torch.finfo(want.dtype).eps * ROWWISE_ULPS
    torch.testing.assert_close(got, want, rtol=eps, atol=eps * want.abs().max().item(),
                               msg=lambda m: f"{what}: {m}")


#: Every layer scheme: W4A16, W4A4 dynamic, W8A16, W8A8.
SCHEMES = ((NVFP4Linear, {}), (NVFP4Linear, dict(act_quant="dynamic")),
           (MXFP8Linear, {}), (MXFP8Linear, dict(act_quant="dynamic")))


def float_linear(k, nout, dev, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    lin = nn.Linear(k, nout, bias=True, dtype=dtype).to(dev)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(k, dtype=dtype, device=dev) * 3)
    return lin


def quantized(cls, lin, backend="dequant", **kw):
    layer = cls.from_float(lin, **kw)
    layer.set_backend(backend)
    return layer


def _single_and_tp(cls, style, lin, x, mesh, **kw):
    """(single-process output, the TP layer's output as a plain tensor)."""
    want = quantized(cls, lin, **kw)(x)
    tp = parallelize_module(quantized(cls, lin, **kw), mesh,
                            nd.QuantizedColwiseParallel() if style == "colwise"
                            else nd.QuantizedRowwiseParallel())
    if style == "colwise":
        got = tp(x)  # the local output columns (use_local_output)
        cols = want.shape[-1] // mesh.size()
        want = want[..., cols * mesh.get_rank():cols * (mesh.get_rank() + 1)]
    else:
        k = x.shape[-1] // mesh.size()
        got = tp(x[..., k * mesh.get_rank():k * (mesh.get_rank() + 1)])  # input Shard(-1)
    return want, got


@scenario("tp")
def colwise_bit_exact(mesh, dev):
    for cls, kw in SCHEMES:
        for dtype in (torch.float32, torch.bfloat16):
            for backend in ("dequant", "reference"):
                lin = float_linear(64, 48, dev, dtype=dtype)
                x = data((3, 5, 64), dtype=dtype, device=dev, seed=2)
                want, got = _single_and_tp(cls, "colwise", lin, x, mesh, backend=backend, **kw)
                assert not isinstance(got, DTensor)
                assert_same(got, want, f"colwise {cls.__name__} {kw} {dtype} {backend}")


@scenario("tp")
def rowwise_within_tolerance(mesh, dev):
    for cls, kw in SCHEMES:
        for dtype in (torch.float32, torch.bfloat16):
            lin = float_linear(128, 40, dev, dtype=dtype)
            x = data((7, 128), dtype=dtype, device=dev, seed=3)
            want, got = _single_and_tp(cls, "rowwise", lin, x, mesh, **kw)
            assert not isinstance(got, DTensor) and got.shape == want.shape
            assert_rowwise_close(got, want, f"rowwise {cls.__name__} {kw} {dtype}")


@scenario("tp")
def fused_backend_under_tp(mesh, dev):
    """The weight-only layers on the fused backend (on CPU the GEMM ops' reference, on CUDA
    the kernel) under both styles, against the single-process layer."""
    from nvfp4_ops.nn import MXFP4Linear

    for cls in (NVFP4Linear, MXFP8Linear, MXFP4Linear):
        lin = float_linear(128, 48, dev, dtype=torch.bfloat16)
        x = data((5, 128), dtype=torch.bfloat16, device=dev, seed=4)
        layers = []
        for _ in range(2):
            layer = cls.from_float(lin)
            layer.set_backend("reference")
            layer.active_backend = "fused"  # as chosen on sm_80..sm_90 (CPU: the op's reference)
            layers.append(layer)
        want = layers[0](x)
        col = parallelize_module(layers[1], mesh, nd.QuantizedColwiseParallel())
        cols = want.shape[-1] // mesh.size()
        got = col(x)
        assert col.active_backend == "fused"
        assert_gemm_close(got, want[..., cols * mesh.get_rank():cols * (mesh.get_rank() + 1)],
                          f"colwise fused {cls.__name__}", dev == "cpu")
        layer = cls.from_float(lin)
        layer.set_backend("reference")
        layer.active_backend = "fused"
        row = parallelize_module(layer, mesh, nd.QuantizedRowwiseParallel())
        k = x.shape[-1] // mesh.size()
        got = row(x[..., k * mesh.get_rank():k * (mesh.get_rank() + 1)])
        assert_rowwise_close(got, want, f"rowwise fused {cls.__name__}")


@scenario("tp")
def shards_share_one_global_scale(mesh, dev):
    lin = float_linear(64, 48, dev)
    lin.weight.data[40, 7] = 50.0  # the weight's amax lies in rank 1's rows
    single = quantized(NVFP4Linear, lin)
    for style, dim in (("colwise", 0), ("rowwise", 1)):
        tp = quantized(NVFP4Linear, lin)
        nd.parallelize_quantized(tp, mesh, ColwiseParallel() if style == "colwise"
                                 else RowwiseParallel())
        gs = tp.weight_global_scale
        assert isinstance(gs, DTensor) and gs.placements == (Replicate(),)
        assert_same(gs.to_local(), single.weight_global_scale, f"{style} global scale")
        for name in ("weight_packed", "weight_scale"):
            buf = getattr(tp, name)
            assert buf.placements == (Shard(dim),), (style, name, buf.placements)
            whole = getattr(single, name)
            size = whole.shape[dim] // mesh.size()
            want = whole.narrow(dim, size * mesh.get_rank(), size)
            assert_same(buf.to_local(), want.contiguous(), f"{style} {name} bytes")
        assert tp.bias.placements == ((Shard(0),) if style == "colwise" else (Replicate(),))


@scenario("tp")
def mlp_plan_like_a_float_model(mesh, dev):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).to(dev)
    x = data((6, 64), dtype=torch.float32, device=dev, seed=4)
    from nvfp4_ops.nn import quantize_linears
    single = quantize_linears(model, "nvfp4", act_quant="dynamic", backend="dequant")
    want = single(x)
    torch.manual_seed(0)
    model2 = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).to(dev)
    tp = quantize_linears(model2, "nvfp4", act_quant="dynamic", backend="dequant")
    nd.parallelize_quantized(tp, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    got = tp(x)
    assert not isinstance(got, DTensor) and got.shape == want.shape
    assert_rowwise_close(got, want, "colwise + rowwise MLP")


@scenario("tp")
def quantize_a_sharded_float_weight(mesh, dev):
    lin = float_linear(128, 40, dev)
    lin.weight.data[3, 60] = -80.0
    w = lin.weight.detach()
    P, S = n.quantize(w)
    D, Sm = n.mx_quantize(w)
    for p in (Shard(0), Shard(1)):
        packed, scales, gs = nd.quantize_sharded(placed(w, mesh, p), "nvfp4")
        assert_same(gs, n.global_scale(w), f"{p} global scale")
        assert_same(packed, P, f"{p} packed")
        assert_same(scales, S, f"{p} scales")
        data_, sc = nd.quantize_sharded(placed(w, mesh, p), "mxfp8")
        assert_same(data_, D, f"{p} mxfp8 data")
        assert_same(sc, Sm, f"{p} mxfp8 scales")
    # A rank's NVFP4Linear over its row shard gives the single layer's output columns.
    packed, scales, gs = nd.quantize_sharded(placed(w, mesh, Shard(0)), "nvfp4")
    rows = slice(20 * mesh.get_rank(), 20 * (mesh.get_rank() + 1))
    local = NVFP4Linear.from_quantized(packed.to_local(), scales.to_local(), gs.to_local(),
                                       bias=lin.bias.detach()[rows], backend="dequant")
    x = data((4, 128), dtype=torch.float32, device=dev, seed=5)
    assert_same(local(x), quantized(NVFP4Linear, lin)(x)[:, rows], "local layer")


@scenario("tp")
def tp_errors(mesh, dev):
    lin = float_linear(48, 16, dev)  # rowwise over 2 ranks: local K 24
    expect_error(lambda: parallelize_module(quantized(NVFP4Linear, lin), mesh,
                                            nd.QuantizedRowwiseParallel()),
                 "multiple of 16", "in_features=48", "[24, 24]")
    layer = NVFP4Linear.from_float(float_linear(64, 16, dev), backend="reference")
    layer.active_backend = "scaled_mm"  # as on a Blackwell GPU
    expect_error(lambda: parallelize_module(layer, mesh, nd.QuantizedColwiseParallel()),
                 "backend must be one of", "scaled_mm")
    # A plain style still refuses a quantized layer (parallelize_quantized swaps it).
    expect_error(lambda: parallelize_module(quantized(NVFP4Linear, float_linear(64, 16, dev)),
                                            mesh, ColwiseParallel()), "nn.Linear")
