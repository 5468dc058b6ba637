"""The distributed scenarios, run on every rank by :mod:`._harness` (a scenario passes when
it returns on every rank). Each takes the 1-D mesh of the run and this rank's device.

The single-process results they compare against are computed on every rank from the same
seeded full tensors, so a DTensor result is checked against the op on the whole tensor.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

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
    # Rows of a 3-D tensor, and a per-batch global scale with the batch sharded.
    x3 = data((4, 32, 32), dtype=torch.float32, device=dev)
    gs3 = torch.stack([n.global_scale(b) for b in x3]).reshape(4)
    p3, s3 = n.quantize(placed(x3, mesh, Shard(0)), placed(gs3, mesh, Replicate()))
    P3, S3 = n.quantize(x3, gs3)
    assert_same(p3, P3, "3-D batch-sharded packed")
    assert_same(s3, S3, "3-D batch-sharded scales")
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
