"""The training-recipe ops on CUDA (docs/spec.md section 8): the same bytes as the CPU
reference for every mode (stochastic rounding included: one generator, bit for bit), large
and odd shapes, and CUDA-graph replay of stochastic rounding (advanced offset: new numbers;
unchanged offset: the same bits). Whatever serves the op on CUDA (kernel or reference) is
what these tests check; ``op_implementation`` says which."""

import pytest
import torch

import nvfp4_ops
from nvfp4_ops import reference as ref

from .._utils import poison_cuda_cache, requires_cuda

pytestmark = requires_cuda
OPS = torch.ops.nvfp4


def _x(shape, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 3).to(dtype)


def _same(a, b):
    for u, v in zip(a, b):
        assert u.shape == v.shape and u.dtype == v.dtype
        if u.dtype == torch.float32:
            torch.testing.assert_close(u.cpu(), v, atol=0, rtol=0, equal_nan=True)
        else:
            assert torch.equal(u.cpu().view(torch.uint8), v.view(torch.uint8))


def _cuda(args):
    return [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("shape", [(256, 512), (2, 48, 160), (1040, 64)])
@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("block_2d", [False, True])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("hadamard", [False, True])
@pytest.mark.parametrize("swizzle", [False, True])
@pytest.mark.parametrize("given_gs", [False, True])
def test_train_quantize_matches_cpu(shape, axis, block_2d, rounding, hadamard, swizzle,
                                    given_gs):
    x = _x(shape)
    gs = None
    if given_gs:  # and a non-finite block (a computed global scale would be NaN)
        gs = ref.global_scale(x)
        x[..., 0, :16] = float("nan")
    sr = rounding == "stochastic"
    seed = torch.tensor([0x123456789ABCDEF]) if sr else None
    offset = torch.tensor([2**32 - 3]) if sr else None  # the counter crosses 2^32
    signs = ref.random_hadamard_signs(torch.tensor([7])) if hadamard else None
    args = (x, gs, axis, block_2d, rounding, seed, offset, signs, swizzle)
    want = ref.train_quantize(*args)
    poison_cuda_cache(*want)
    _same(OPS.train_quantize(*_cuda(args)), want)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_train_quantize_rowcol_matches_cpu(rounding):
    x = _x((384, 256), torch.float16)
    sr = rounding == "stochastic"
    args = (x, None, None, True, rounding, torch.tensor([5]) if sr else None,
            torch.tensor([11]) if sr else None, ref.random_hadamard_signs(torch.tensor([1])), True)
    _same(OPS.train_quantize_rowcol(*_cuda(args)), ref.train_quantize_rowcol(*args))


@pytest.mark.parametrize("swizzle", [False, True])
def test_grouped_quantize_matches_cpu(swizzle):
    x = _x((1000, 256))
    offs = torch.tensor([0, 3, 300, 300, 777, 990], dtype=torch.int32)  # empty, tiny, tail
    args = (x, offs, None, swizzle)
    _same(OPS.grouped_quantize(*_cuda(args)), ref.grouped_quantize(*args))
    args = (x, offs, "e4m3", "rceil", swizzle)
    _same(OPS.mx_grouped_quantize(*_cuda(args)), ref.mx_grouped_quantize(*args))


def test_stochastic_rounding_replays_under_cuda_graphs():
    x = _x((128, 256)).cuda()
    seed = torch.tensor([3], device="cuda")
    offset = torch.zeros(1, dtype=torch.int64, device="cuda")
    inc = nvfp4_ops.sr_offset_increment(x.numel())
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up outside the capture
        OPS.train_quantize(x, None, -1, False, "stochastic", seed, offset)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = OPS.train_quantize(x, None, -1, False, "stochastic", seed, offset)[0]
        offset.add_(inc)
    offset.zero_()
    graph.replay()
    first = out.clone()
    graph.replay()
    assert offset.item() == 2 * inc and not torch.equal(out, first)  # advanced: new numbers
    offset.zero_()
    graph.replay()
    assert torch.equal(out, first)  # the same offset: the same bits
    want = ref.train_quantize(x.cpu(), None, -1, False, "stochastic", seed.cpu(),
                              torch.zeros(1, dtype=torch.int64))[0]
    assert torch.equal(first.cpu(), want)


def test_grouped_quantize_needs_no_host_sync():
    x = _x((512, 128)).cuda()
    offs = torch.tensor([100, 300, 512], device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        OPS.grouped_quantize(x, offs, None, True)
        OPS.mx_grouped_quantize(x, offs, "e4m3", "rceil", True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
