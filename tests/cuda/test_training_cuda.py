"""The training-recipe ops on CUDA (docs/spec.md section 8), csrc/train/ops.cu: the same bytes as
the CPU reference (atol=0, compared as uint8 views) for every mode (axis -1 / -2, 1-D / 2-D
scales, round to nearest / stochastic rounding with one Philox generator on both devices,
the Hadamard transform, linear / swizzled scales, global scale computed / given / per batch),
on random and adversarial inputs (ties, -0.0, zero blocks, NaN / inf, saturation, tiny
values), odd and padded shapes and 3-D; the rowcol op against the two single-operand calls;
the grouped ops with empty, tiny and uneven groups and rows past the last group; CUDA-graph
replay of stochastic rounding (advanced offset: new numbers; unchanged: the same bits) and
of the grouped ops with new offsets; no host synchronisation; torch.compile(fullgraph=True).
Every kernel variant of NVFP4_OPS_TRAIN_KERNEL (csrc/train/quantize.cuh) on shapes where
warps and CTAs loop over several items; the rest of the file runs the variant of the
environment (benchmarks/probe/trainfast.sh runs it once per variant).

The argument contract on CUDA (same messages as on CPU) is in tests/ops/test_training_ops.py
(its ``cuda`` parameters, with an opcheck of other samples). Everything here is skipped without
a GPU.
"""

import itertools

import pytest
import torch

import nvfp4_ops
from nvfp4_ops import _library
from nvfp4_ops import reference as ref

from .._utils import poison_cuda_cache, requires_cuda
from ._helpers import assert_compiles_to_same_bits, assert_exact, opcheck

pytestmark = requires_cuda
OPS = torch.ops.nvfp4
BF16, F16, F32 = torch.bfloat16, torch.float16, torch.float32
TRAINING_OPS = ("train_quantize", "train_quantize_rowcol", "grouped_quantize",
                "mx_grouped_quantize")
NAN, INF = float("nan"), float("inf")


def _x(shape, dtype=BF16, seed=0):
    """Seeded randn * 3 with a per-row magnitude spread (10^-2 .. 10^2), on the CPU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    x = x * 10.0 ** (torch.rand((*shape[:-1], 1), generator=g, dtype=torch.float64) * 4 - 2)
    return x.to(dtype)


def _adversarial(shape, dtype, seed=0, nonfinite=True):
    """:func:`_x` with special 16x16 regions (each a whole block of both operands): E2M1 ties
    exact at scale 1 (0.25, 0.75, ..., 5 around a block max of 6), -0.0 and zero blocks,
    saturating magnitudes, subnormal-sized values, and (``nonfinite``) NaN and +-inf."""
    x = _x(shape, dtype, seed).to(F32)
    m, k = x.shape[-2], x.shape[-1]
    ties = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -1.25, -1.75,
                         -2.5, -3.5, -5.0, 0.5])
    fills = [
        ties.repeat(16, 1),
        torch.full((16, 16), -0.0),
        torch.zeros(16, 16),
        torch.full((16, 16), 6e4 if dtype == F16 else 1e30) * ties.sign(),
        ties.repeat(16, 1) * (6e-8 if dtype == F16 else 1e-39),
    ]
    if nonfinite:
        fills += [torch.tensor([NAN] + [1.0] * 15).repeat(16, 1),
                  torch.tensor([INF, -INF] + [2.0] * 14).repeat(16, 1)]
    rows, cols = max(m // 16, 1), max(k // 16, 1)
    for i, f in enumerate(fills):
        r, c = (16 * (i % rows), 16 * ((i // rows) % cols))
        region = x[..., r:r + 16, c:c + 16]
        region.copy_(f[:region.shape[-2], :region.shape[-1]])
    return x.to(dtype)


def _cuda(args):
    return [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]


def _check(name, args, what=""):
    """The op on CUDA (outputs poisoned first: an unwritten byte fails) == the CPU reference."""
    want = getattr(ref, name)(*args)
    poison_cuda_cache(*want)
    got = getattr(OPS, name)(*_cuda(args))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.device.type == "cuda"
        assert_exact(g, w, f"{name} output {i} {what}")
    return got


def test_the_training_ops_run_cuda_kernels():
    for op in TRAINING_OPS:
        name, why = _library.op_implementation(op, "cuda")
        assert name == "cuda-kernel", (op, why)


# --------------------------------------------------------------------------------------
# train_quantize: every option against the reference
# --------------------------------------------------------------------------------------

# (shape, dtype): tiles of 64 x 64, partial tiles in both dims, odd M (axis -1 only), odd K
# and K not a multiple of 8 (axis -2 only: element loads), 3-D, a single row.
SHAPES = [((256, 512), BF16), ((2, 48, 160), F16), ((1040, 64), F32), ((80, 208), BF16),
          ((3, 32, 37), F32), ((33, 48), F16), ((1, 16), BF16), ((16, 9), BF16),
          ((2, 80, 36), F16)]


def _valid(shape, axis):
    return shape[-1] % 16 == 0 if axis == -1 else shape[-2] % 16 == 0


TQ_CASES = [
    (shape, dtype, axis, block_2d, rounding, hadamard, swizzle, gs_mode)
    for (shape, dtype), axis, block_2d, rounding, hadamard, swizzle, gs_mode in itertools.product(
        SHAPES, (-1, -2), (False, True), ("nearest", "stochastic"), (False, True),
        (False, True), ("computed", "given", "per_batch"))
    if _valid(shape, axis) and (gs_mode != "per_batch" or len(shape) == 3)
]


def _tq_args(x, axis, block_2d, rounding, hadamard, swizzle, gs_mode, seed=0x123456789ABCDEF,
             offset=2**32 - 3):
    gs = None
    if gs_mode == "given":
        gs = torch.tensor([0.75])
    elif gs_mode == "per_batch":
        gs = torch.linspace(0.5, 300.0, x.shape[0])
    sr = rounding == "stochastic"
    return (x, gs, axis, block_2d, rounding, torch.tensor([seed]) if sr else None,
            torch.tensor([offset]) if sr else None,
            ref.random_hadamard_signs(torch.tensor([7])) if hadamard else None, swizzle)


@pytest.mark.parametrize("shape,dtype,axis,block_2d,rounding,hadamard,swizzle,gs_mode", TQ_CASES)
def test_train_quantize_matches_cpu(shape, dtype, axis, block_2d, rounding, hadamard, swizzle,
                                    gs_mode):
    # given scales: with non-finite blocks too (a computed scale would then be NaN or 0)
    x = _adversarial(shape, dtype, nonfinite=gs_mode != "computed")
    _check("train_quantize", _tq_args(x, axis, block_2d, rounding, hadamard, swizzle, gs_mode))


@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("block_2d", [False, True])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_train_quantize_special_global_scales(axis, block_2d, rounding):
    """Computed scales of a tensor holding NaN (gs NaN), inf (gs 0), only zeros (gs 1), only
    tiny values (gs FLT_MAX); given scales 0, inf, NaN, negative."""
    base = _x((64, 96), BF16)
    xs = [base.clone().index_fill_(0, torch.tensor([3]), NAN),
          base.clone().index_fill_(1, torch.tensor([5]), INF),
          torch.zeros(64, 96, dtype=BF16), torch.full((64, 96), 1e-38, dtype=BF16)]
    for x in xs:
        _check("train_quantize", _tq_args(x, axis, block_2d, rounding, True, True, "computed"))
    for g in (0.0, INF, NAN, -2.0):
        args = list(_tq_args(base, axis, block_2d, rounding, False, False, "given"))
        args[1] = torch.tensor([g])
        _check("train_quantize", args, f"gs={g}")


@pytest.mark.parametrize("seed,offset", [(0, 0), (-1, 2**63 - 1), (-(2**63), -5), (12345, 2**40)])
def test_stochastic_rounding_cpu_equals_cuda(seed, offset):
    """Signed seeds (two's complement key words) and offsets whose counter wraps 2^64."""
    x = _x((3, 48, 80), F32, seed=3)
    for axis in (-1, -2):
        _check("train_quantize", _tq_args(x, axis, False, "stochastic", False, False, "computed",
                                          seed, offset))
    _check("train_quantize_rowcol", (x, None, None, False, "stochastic", torch.tensor([seed]),
                                     torch.tensor([offset]), None, False))


def test_stochastic_rounding_differs_per_element_and_offset():
    """Not a constant stream: two offsets give different codes; one offset the same codes."""
    x = _x((128, 256), F32).cuda()
    args = [x, None, -1, False, "stochastic", torch.tensor([1], device="cuda"),
            torch.tensor([0], device="cuda")]
    a = OPS.train_quantize(*args)[0]
    assert torch.equal(a, OPS.train_quantize(*args)[0])
    args[6] = torch.tensor([nvfp4_ops.sr_offset_increment(x.numel())], device="cuda")
    b = OPS.train_quantize(*args)[0]
    assert (a != b).float().mean() > 0.2


def test_2d_blocks_give_the_same_values_both_ways_on_cuda():
    w = _x((96, 160), BF16).cuda()
    gs = torch.tensor([1.5], device="cuda")
    rp, rs, _ = OPS.train_quantize(w, gs, -1, True)
    cp, cs, _ = OPS.train_quantize(w, gs, -2, True)
    row = OPS.dequantize(rp, rs, gs, F32, False)
    col = OPS.dequantize(cp, cs, gs, F32, False)
    assert torch.equal(row, col.t())


# --------------------------------------------------------------------------------------
# the kernel variants of NVFP4_OPS_TRAIN_KERNEL (csrc/train/quantize.cuh): the same bits
# --------------------------------------------------------------------------------------

TRAIN_KERNELS = ["auto", "tile", "tile2", "row", "direct", "sr", "smem"]
# large enough that warps and CTAs loop over several items / tiles (the prefetch paths), with
# partial row groups, odd block spans and 3-D batches. "smem" (tiles of 128 rows x 128 bytes,
# the columnwise operand alone): partial row and column tiles in the F16 shape (1040 = 8 * 128
# + 16 rows, 528 = 8 * 64 + 16 columns) and the F32 one (144 = 128 + 16, 8464 = 264 * 32 +
# 16), whose 530 tiles make CTAs of an H200 loop (132 SMs, 4 CTAs each). The rowwise kernels
# of 16-bit x (the direct one: 16 rows x 4 blocks per warp item; the wide one of 2-D scales
# in "auto" / "smem": 16 x 512 tiles): a partial row group and partial spans in the BF16
# 3-D shape (37 = 2 * 16 + 5 rows, 96 columns)
VARIANT_SHAPES = [((4096, 1024), BF16), ((2, 1040, 528), F16), ((3, 37, 96), BF16),
                  ((3, 33, 80), F32), ((144, 8464), F32)]


@pytest.mark.parametrize("kernel", TRAIN_KERNELS)
@pytest.mark.parametrize("shape,dtype", VARIANT_SHAPES)
@pytest.mark.parametrize("axis", [-1, -2])
def test_every_train_kernel_variant_matches_cpu(kernel, shape, dtype, axis, monkeypatch):
    monkeypatch.setenv("NVFP4_OPS_TRAIN_KERNEL", kernel)
    if not _valid(shape, axis):
        pytest.skip("dim not a multiple of 16")
    x = _adversarial(shape, dtype, seed=9)
    per_batch = "per_batch" if len(shape) == 3 else "given"
    modes = [(False, "nearest", False, False, "computed"), (True, "nearest", True, True, per_batch),
             (False, "nearest", True, False, "given"), (True, "nearest", False, False, "computed"),
             (False, "stochastic", True, False, "computed"),
             (True, "stochastic", False, True, per_batch),
             (False, "nearest", False, True, per_batch)]  # axis -1, auto: the codec kernel
    for block_2d, rounding, hadamard, swizzle, gs_mode in modes:
        _check("train_quantize", _tq_args(x, axis, block_2d, rounding, hadamard, swizzle, gs_mode),
               f"{kernel} {block_2d} {rounding} {hadamard} {swizzle} {gs_mode}")
    if axis == -2:  # rowcol: both operands from one read
        signs = ref.random_hadamard_signs(torch.tensor([1]))
        gs = torch.linspace(0.5, 3.0, shape[0]) if len(shape) == 3 else torch.tensor([2.0])
        for block_2d, rounding, hadamard, swizzle in [(True, "stochastic", True, True),
                                                      (True, "nearest", True, True),
                                                      (True, "nearest", False, True),
                                                      (False, "nearest", False, False)]:
            sr = rounding == "stochastic"
            _check("train_quantize_rowcol",
                   (x, None if swizzle else gs, torch.tensor([0.5]) if swizzle else None,
                    block_2d, rounding, torch.tensor([5]) if sr else None,
                    torch.tensor([11]) if sr else None, signs if hadamard else None, swizzle),
                   f"{kernel} {block_2d} {rounding} {hadamard} {swizzle}")


def test_unknown_train_kernel_variant_is_an_error(monkeypatch):
    monkeypatch.setenv("NVFP4_OPS_TRAIN_KERNEL", "fastest")
    with pytest.raises(RuntimeError, match="NVFP4_OPS_TRAIN_KERNEL must be"):
        OPS.train_quantize(torch.ones(16, 16, device="cuda"))


# --------------------------------------------------------------------------------------
# train_quantize_rowcol
# --------------------------------------------------------------------------------------

RC_SHAPES = [((384, 256), F16), ((2, 48, 160), BF16), ((80, 208), F32), ((16, 16), BF16)]


@pytest.mark.parametrize("shape,dtype", RC_SHAPES)
@pytest.mark.parametrize("block_2d", [False, True])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("hadamard", [False, True])
@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("scales", ["computed", "given", "row given", "col given"])
def test_train_quantize_rowcol_matches_cpu(shape, dtype, block_2d, rounding, hadamard, swizzle,
                                           scales):
    x = _adversarial(shape, dtype, seed=5, nonfinite=scales == "given")
    sr = rounding == "stochastic"
    gs = torch.tensor([2.0]) if scales in ("given", "row given") else None
    cgs = torch.tensor([0.5]) if scales in ("given", "col given") else None
    args = (x, gs, cgs, block_2d, rounding, torch.tensor([5]) if sr else None,
            torch.tensor([11]) if sr else None,
            ref.random_hadamard_signs(torch.tensor([1])) if hadamard else None, swizzle)
    got = _check("train_quantize_rowcol", args)
    # and the very bytes of the two single-operand calls on CUDA
    rest = (block_2d, rounding, *_cuda(args[5:7]))
    row = OPS.train_quantize(*_cuda([x, gs]), -1, *rest, None, swizzle)
    col = OPS.train_quantize(*_cuda([x, cgs]), -2, *rest, *_cuda([args[7]]), swizzle)
    for a, b in zip(got, (*row, *col)):
        assert_exact(a, b, "rowcol vs train_quantize")


# --------------------------------------------------------------------------------------
# grouped quantize
# --------------------------------------------------------------------------------------

def _uneven_offsets(t, g, seed=0):
    """g non-decreasing end rows in [0, t] with empty, tiny and large groups, the last < t
    (rows past it belong to no group) when t > 0."""
    gen = torch.Generator().manual_seed(seed)
    cuts = torch.sort(torch.randint(0, max(t - 3, 1), (g,), generator=gen)).values
    cuts[g // 3] = cuts[g // 3 - 1] if g > 3 else cuts[0]  # an empty group
    return cuts


OFFSETS = {
    "mixed": (1000, torch.tensor([0, 3, 300, 300, 777, 990])),
    "one group, all rows": (256, torch.tensor([256])),
    "all empty": (64, torch.tensor([0, 0])),
    "64 uneven experts": (4096, _uneven_offsets(4096, 64)),
    "no rows": (0, torch.tensor([0, 0, 0])),
    "tail only": (200, torch.tensor([130])),
}


@pytest.mark.parametrize("case", list(OFFSETS))
@pytest.mark.parametrize("dtype", [BF16, F16, F32])
@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("given", [False, True])
@pytest.mark.parametrize("offs_dtype", [torch.int32, torch.int64])
def test_grouped_quantize_matches_cpu(case, dtype, swizzle, given, offs_dtype):
    t, offs = OFFSETS[case]
    x = _adversarial((t, 96), dtype, seed=2, nonfinite=given) if t else torch.zeros(0, 96,
                                                                                  dtype=dtype)
    gs = torch.linspace(0.25, 40.0, offs.numel()) if given else None
    _check("grouped_quantize", (x, offs.to(offs_dtype), gs, swizzle), case)


@pytest.mark.parametrize("case", list(OFFSETS))
@pytest.mark.parametrize("dtype", [BF16, F16, F32])
@pytest.mark.parametrize("elem", ["e4m3", "e2m1"])
@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("offs_dtype", [torch.int32, torch.int64])
def test_mx_grouped_quantize_matches_cpu(case, dtype, elem, rounding, swizzle, offs_dtype):
    t, offs = OFFSETS[case]
    x = _adversarial((t, 160), dtype, seed=4) if t else torch.zeros(0, 160, dtype=dtype)
    _check("mx_grouped_quantize", (x, offs.to(offs_dtype), elem, rounding, swizzle), case)


def test_grouped_quantize_more_groups_than_shared_memory_holds():
    """Up to 3072 groups each CTA of the row bookkeeping computes the groups' padded starts in
    shared memory (csrc/train/grouped.cuh, kLocalGroups); above, a separate kernel does: the
    same bytes as the CPU reference on both sides of the limit, both formats."""
    for t, g in ((6000, 3072), (6000, 3100)):
        offs = _uneven_offsets(t, g, seed=3)
        x = _adversarial((t, 32), BF16, seed=5, nonfinite=False)
        for swizzle in (False, True):
            _check("grouped_quantize", (x, offs, None, swizzle), f"{g} groups")
            _check("mx_grouped_quantize", (x, offs, "e4m3", "rceil", swizzle), f"{g} groups")


# --------------------------------------------------------------------------------------
# CUDA graphs, host synchronisation, torch.compile
# --------------------------------------------------------------------------------------

def _capture(fn):
    """Warm ``fn`` up on a side stream, then capture one call of it; returns (graph, outs)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = fn()
    return graph, outs


@pytest.mark.parametrize("op", ["train_quantize", "train_quantize_rowcol"])
def test_stochastic_rounding_replays_under_cuda_graphs(op):
    x = _x((128, 256)).cuda()
    seed = torch.tensor([3], device="cuda")
    offset = torch.zeros(1, dtype=torch.int64, device="cuda")
    inc = nvfp4_ops.sr_offset_increment(x.numel())
    signs = ref.random_hadamard_signs(torch.tensor([4])).cuda()
    if op == "train_quantize":
        args = (x, None, -2, True, "stochastic", seed, offset, signs, True)
    else:
        args = (x, None, None, True, "stochastic", seed, offset, signs, True)

    def step():
        outs = getattr(OPS, op)(*args)
        offset.add_(inc)  # captured: every replay advances the offset on the device
        return outs

    graph, outs = _capture(step)
    offset.zero_()
    graph.replay()
    first = [o.clone() for o in outs]
    graph.replay()
    assert offset.item() == 2 * inc
    assert not torch.equal(outs[0], first[0])  # advanced: new numbers
    offset.zero_()
    graph.replay()
    for a, b in zip(outs, first):  # the same offset: the same bits
        assert_exact(a, b, "replay at the same offset")
    cpu = [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]
    cpu[6] = torch.zeros(1, dtype=torch.int64)
    for a, b in zip(first, getattr(ref, op)(*cpu)):
        assert_exact(a, b, "replay vs reference")


def test_grouped_quantize_replays_new_offsets_under_cuda_graphs():
    """Offsets (and x) live on the device: a replay with new values in the captured buffers
    gives the bytes of a plain call on them."""
    x = _x((512, 128)).cuda()
    offs = torch.tensor([100, 300, 300, 480], device="cuda")

    def step():
        return (*OPS.grouped_quantize(x, offs, None, True),
                *OPS.mx_grouped_quantize(x, offs, "e2m1", "rceil", True))

    graph, outs = _capture(step)
    x.copy_(_x((512, 128), seed=9).cuda())
    offs.copy_(torch.tensor([0, 129, 400, 512], device="cuda"))
    graph.replay()
    want = (*ref.grouped_quantize(x.cpu(), offs.cpu(), None, True),
            *ref.mx_grouped_quantize(x.cpu(), offs.cpu(), "e2m1", "rceil", True))
    for a, b in zip(outs, want):
        assert_exact(a, b, "grouped replay")


def test_no_host_sync():
    x = _x((512, 128)).cuda()
    offs = torch.tensor([100, 300, 512], device="cuda")
    seed = torch.tensor([1], device="cuda")
    off = torch.tensor([2], device="cuda")
    signs = torch.ones(16, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        OPS.train_quantize(x, None, -2, True, "stochastic", seed, off, signs, True)
        OPS.train_quantize_rowcol(x, None, None, True, "stochastic", seed, off, signs, True)
        OPS.grouped_quantize(x, offs, None, True)
        OPS.mx_grouped_quantize(x, offs, "e4m3", "rceil", True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_compile_fullgraph_on_cuda():
    seed = torch.tensor([5], device="cuda")
    off = torch.tensor([3], device="cuda")
    signs = ref.random_hadamard_signs(torch.tensor([2])).cuda()
    offs = torch.tensor([20, 64], device="cuda")

    def f(x):
        a = OPS.train_quantize(x, None, -1, False, "stochastic", seed, off, signs, True)
        b = OPS.train_quantize(x, None, -2, True)
        r = OPS.train_quantize_rowcol(x, None, None, True, "stochastic", seed, off, signs)
        c = OPS.grouped_quantize(x, offs, None, True)
        d = OPS.mx_grouped_quantize(x, offs, "e4m3", "rceil", True)
        return (*a, *b, *r, *c, *d)

    assert_compiles_to_same_bits(f, _x((64, 64)).cuda(), _x((64, 64), seed=1).cuda())


def _opcheck_samples():
    x3 = _x((2, 48, 80), F16).cuda()
    x = _x((100, 64), F32).cuda()
    seed, off = torch.tensor([-3], device="cuda"), torch.tensor([2**40], device="cuda")
    signs = ref.random_hadamard_signs(torch.tensor([6])).cuda()
    offs = torch.tensor([0, 37, 90], dtype=torch.int32, device="cuda")
    return [
        ("train_quantize", (x3, torch.tensor([1.0, 4.0], device="cuda"), -2, True, "stochastic",
                            seed, off, signs, True)),
        ("train_quantize", (x, None, -1, True, "nearest", None, None, signs, False)),
        ("train_quantize_rowcol", (x3, None, torch.tensor([2.0, 3.0], device="cuda"), False,
                                   "stochastic", seed, off, signs, True)),
        ("grouped_quantize", (x, offs, None, True)),
        ("grouped_quantize", (x, offs.long(), torch.ones(3, device="cuda"), False)),
        ("mx_grouped_quantize", (x, offs, "e2m1", "floor", True)),
    ]


@pytest.mark.parametrize("i", range(6))
def test_opcheck_on_cuda(i):
    name, args = _opcheck_samples()[i]
    opcheck(getattr(OPS, name).default, args)
