"""Helpers shared by the CUDA tests: exact comparison of outputs and seeded generators."""

from __future__ import annotations

import torch

#: What the CUDA tests share: the ops, the float dtypes (and their test ids), the device.
OPS = torch.ops.nvfp4
E4M3 = torch.float8_e4m3fn
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
OUT_DTYPES = list(DTYPES)  # the out_dtype choices of the dequantize ops: the same three
DEV = "cuda"  # the device under test


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a contiguous copy (1-byte dtypes as uint8), for bitwise comparison."""
    t = t.detach().contiguous()
    if t.element_size() == 1:
        return t.view(torch.uint8)
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


def assert_exact(got: torch.Tensor, want: torch.Tensor, what: str = "") -> None:
    """Same shape, dtype, contiguity of ``got`` and bytes.

    Wider than one byte (fp32 / fp16 / bf16): NaN in the same places (any NaN matches any
    NaN: payloads differ between CPU and GPU arithmetic), every other value bit for bit
    (so -0.0 != 0.0). 1-byte dtypes (uint8, float8): byte for byte.
    """
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert got.is_contiguous(), what
    got, want = got.detach().cpu(), want.detach().cpu()
    bg, bw = bits(got), bits(want)
    if got.element_size() > 1:
        nan_g, nan_w = torch.isnan(got), torch.isnan(want)
        assert torch.equal(nan_g, nan_w), f"{what}: NaN positions differ"
        bad = (bg != bw) & ~nan_g
        if bad.any():
            idx = bad.nonzero()[:5].tolist()
            raise AssertionError(f"{what}: {int(bad.sum())} values differ in sign or bits, "
                                 f"first at {idx}: got {[got[tuple(i)].item() for i in idx]}, "
                                 f"want {[want[tuple(i)].item() for i in idx]}")
    else:
        bad = bg != bw
        if bad.any():
            idx = bad.nonzero()[:5].tolist()
            raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} bytes differ, "
                                 f"first at {idx}: got "
                                 f"{[hex(bg[tuple(i)].item()) for i in idx]}, want "
                                 f"{[hex(bw[tuple(i)].item()) for i in idx]}")


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def capture_and_replay(f, refill) -> tuple:
    """Capture ``f()`` in a CUDA graph, ``refill()`` its input buffers, replay it.

    ``f`` is warmed up on a side stream first (as CUDA-graph capture requires). Asserts that
    the replayed outputs are bit for bit what a plain call of ``f()`` gives on the new data,
    and returns the replayed outputs.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            f()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = f()
    refill()  # new data in the captured input buffers, then replay
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(outs, f()):
        assert torch.equal(bits(a), bits(b))
    return outs


def assert_compiles_to_same_bits(fn, *inputs: torch.Tensor) -> None:
    """``torch.compile(fn, fullgraph=True)`` gives the bits of ``fn`` on each input."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    for x in inputs:
        for a, b in zip(compiled(x), fn(x)):
            assert torch.equal(bits(a), bits(b))


def many_magnitudes(shape, dtype, block: int, seed: int = 0, axis: int = -1,
                    device="cuda") -> torch.Tensor:
    """Seeded randn scaled by 10**uniform per line and per ``block`` elements along ``axis``.

    The line factor spans 1e-8..1e8 for fp32 / bf16 and a range that stays finite for fp16
    (1e-3..3e2); the block factor 0.1..10 (only when the blocked dim is a positive multiple
    of ``block``). 2-D or more; ``axis`` -1 or -2 is the blocked dim. Contiguous.
    """
    g = gen(seed)
    shape = tuple(shape)
    # build with the blocked dim last, then move it into place
    canon = shape if axis == -1 else (*shape[:-2], shape[-1], shape[-2])
    *lead, m, k = canon
    lo, hi = (-3.0, 2.5) if dtype == torch.float16 else (-8.0, 8.0)
    x = torch.randn(canon, generator=g, dtype=torch.float64)
    row = 10.0 ** (torch.rand((*lead, m, 1), generator=g, dtype=torch.float64) * (hi - lo) + lo)
    x = x * row
    if k % block == 0 and k > 0:
        blk = 10.0 ** (torch.rand((*lead, m, k // block, 1), generator=g,
                                  dtype=torch.float64) * 2 - 1)
        x = (x.reshape(*lead, m, k // block, block) * blk).reshape(canon)
    if axis != -1:
        x = x.transpose(-1, -2)
    return x.to(dtype).contiguous().to(device)


def opcheck(op, args, schema_ok: bool = True) -> None:
    """``torch.library.opcheck`` of ``op`` on ``args`` (schema, autograd, fake, AOT dispatch).

    ``schema_ok=False`` leaves out ``test_schema``: SchemaCheckMode cannot compare float8
    inputs (no float8 mul).
    """
    utils = ("test_schema", "test_autograd_registration", "test_faketensor",
             "test_aot_dispatch_dynamic")
    torch.library.opcheck(op, args, test_utils=utils if schema_ok else utils[1:])


def capture_pipeline(pipeline, make, m: int, k: int, pad: int):
    """:func:`capture_and_replay` of ``pipeline(x) + pipeline(xt)`` on refilled inputs.

    ``x`` is bf16 ``[m, k]``; ``xt`` a non-contiguous fp32 ``[m, k]`` (the transposed
    ``[:, :m]`` slice of ``[k, m + pad]``). ``make(shape, dtype, seed=...)`` makes them
    (seeds 24, 25) and the new data copied in before the replay (seeds 26, 27).
    Returns ``(x, xt, replayed outputs)``.
    """
    x = make((m, k), torch.bfloat16, seed=24)
    xt = make((k, m + pad), torch.float32, seed=25)[:, :m].t()

    def f():
        return pipeline(x) + pipeline(xt)

    def refill():
        x.copy_(make((m, k), torch.bfloat16, seed=26))
        xt.copy_(make((k, m + pad), torch.float32, seed=27)[:, :m].t())

    return x, xt, capture_and_replay(f, refill)
