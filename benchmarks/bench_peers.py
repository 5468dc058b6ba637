"""The codec rows of issue 13 beside torchao's implementations, timed in one process.

For bf16 x of each shape (default [8192, 8192], [4096, 14336], [16, 8192]), the median
CUDA-event time (``_common.bench_ms``, the L2 flushed before each call) of our op and of
each torchao function that does the same conversion:

* NVFP4 quantize, linear and swizzled scales: torchao ``nvfp4_quantize`` under torch.compile
  (swizzled: followed by ``to_blocked``, also compiled);
* NVFP4 dequantize -> bf16: torchao's ``NVFP4Tensor.dequantize`` arithmetic (``unpack_uint4``,
  ``f4_unpacked_to_f32``, block scale times per-tensor scale) under torch.compile;
* MXFP8 quantize rowwise (floor, rceil; swizzled rceil): ``to_mx`` under torch.compile and
  the Triton kernel ``triton_to_mxfp8_dim0``;
* MXFP8 quantize columnwise: ``triton_to_mxfp8_dim1``; both layouts from one read against
  ``triton_to_mxfp8_dim0`` + ``triton_to_mxfp8_dim1``;
* MXFP8 dequantize: ``to_dtype`` under torch.compile and ``triton_mxfp8_dequant_dim0``;
* MXFP4 quantize / dequantize: ``to_mx`` / ``to_dtype`` under torch.compile;
* swizzle_scales ([8192, 512] and [4096, 896] bytes): ``to_blocked`` under torch.compile
  and with its Triton kernel.

Columns: our time, GB/s, % of a 2 GiB device copy, the time of a copy moving the same bytes
(same flush), each peer's time and our speed-up over it (peer time / ours), and our ratio to
the fastest peer. A peer that fails (missing kernel, unsupported shape) reports its error
instead of a time. torchao is imported only here (``pip install torchao``); without it the
script says so and stops.

    python benchmarks/bench_peers.py [--shapes 8192x8192,4096x14336,16x8192] [--rep 100]
                                     [--out FILE]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import bench_ms, copy_gbps, copy_us, device_line, emit, nbytes, table

import nvfp4_ops  # noqa: F401  (registers the ops)

OPS = torch.ops.nvfp4
BF16 = torch.bfloat16


def torchao_api():
    """The torchao functions used here (raises ImportError without torchao).

    torchao 0.18 defines its Triton MX kernels (``triton_to_mxfp8_dim0`` / ``dim1``) only on
    sm_100+ (elsewhere they are stubs that raise "needs triton"); on Hopper its
    torch.compile path is what a user gets. Their rows then report that error.
    """
    import torchao
    from torchao.prototype.mx_formats import kernels as K
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx
    from torchao.prototype.mx_formats.nvfp4_tensor import (nvfp4_quantize,
                                                           per_tensor_amax_to_scale)
    from torchao.prototype.mx_formats.utils import to_blocked
    api = dict(version=torchao.__version__, K=K, mode=ScaleCalculationMode, to_dtype=to_dtype,
               to_mx=to_mx, nvfp4_quantize=nvfp4_quantize, pts=per_tensor_amax_to_scale,
               to_blocked=to_blocked)
    return api


def compiled(fn):
    return torch.compile(fn, dynamic=False)


def peer_time(fn, rep: int) -> tuple[float | None, str]:
    """(ms, '') or (None, error) for a peer callable (one warm-up call compiles it)."""
    try:
        fn()
        torch.cuda.synchronize()
        return bench_ms(fn, rep=rep), ""
    except Exception as e:  # a peer's failure is a table cell, not the end of the run
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"


def cases(api, x: torch.Tensor):
    """(label, our callable, our outputs for the byte count, {peer name: callable})."""
    K, mode, to_mx, to_dtype = api["K"], api["mode"], api["to_mx"], api["to_dtype"]
    m, k = x.shape
    gs = OPS.global_scale(x)
    pts = api["pts"](x.abs().amax().float())
    nq = compiled(lambda t: api["nvfp4_quantize"](t, 16, pts))
    to_blocked = compiled(api["to_blocked"])
    nq_sw = compiled(lambda t: (lambda s, d: (api["to_blocked"](s.view(m, k // 16)), d))(
        *api["nvfp4_quantize"](t, 16, pts)))

    def tao_nvfp4_dq(q, s):
        from torchao.prototype.mx_formats.kernels import f4_unpacked_to_f32, unpack_uint4
        d = f4_unpacked_to_f32(unpack_uint4(q.contiguous().view(torch.uint8)))
        sc = s.to(torch.float32) * pts
        return (d.view(m, k // 16, 16) * sc.view(m, k // 16, 1)).view(m, k).to(BF16)

    nq_dq = compiled(tao_nvfp4_dq)
    tao_s, tao_q = api["nvfp4_quantize"](x, 16, pts)
    q, s = OPS.quantize(x, gs)
    out = []
    out.append(("NVFP4 quantize (linear)", lambda: OPS.quantize(x, gs), (x, q, s),
                {"torchao nvfp4_quantize (compiled)": lambda: nq(x)}))
    qs, ss = OPS.quantize(x, gs, True)
    out.append(("NVFP4 quantize (swizzled)", lambda: OPS.quantize(x, gs, True), (x, qs, ss),
                {"torchao nvfp4_quantize + to_blocked (compiled)": lambda: nq_sw(x)}))
    out.append(("NVFP4 dequantize -> bf16", lambda: OPS.dequantize(q, s, gs, BF16), (q, s, x),
                {"torchao NVFP4Tensor.dequantize math (compiled)": lambda: nq_dq(tao_q, tao_s)}))
    for rnd, tmode in (("floor", mode.FLOOR), ("rceil", mode.RCEIL)):
        tm = compiled(lambda t, tmode=tmode: to_mx(t, torch.float8_e4m3fn, 32, tmode))
        d8, s8 = OPS.mx_quantize(x, "e4m3", rnd)
        out.append((f"MXFP8 quantize rowwise {rnd}",
                    lambda rnd=rnd: OPS.mx_quantize(x, "e4m3", rnd), (x, d8, s8),
                    {"torchao to_mx (compiled)": lambda tm=tm: tm(x),
                     "torchao triton_to_mxfp8_dim0":
                         lambda rnd=rnd: K.triton_to_mxfp8_dim0(x, 32, rnd)}))
    tms = compiled(lambda t: to_mx(t, torch.float8_e4m3fn, 32, mode.RCEIL, True))
    d8s, s8s = OPS.mx_quantize(x, "e4m3", "rceil", True)
    out.append(("MXFP8 quantize rowwise rceil, swizzled",
                lambda: OPS.mx_quantize(x, "e4m3", "rceil", True), (x, d8s, s8s),
                {"torchao to_mx swizzled (compiled)": lambda: tms(x)}))
    if m % 32 == 0:
        dc, sc_ = OPS.mx_quantize(x, "e4m3", "rceil", False, -2)
        out.append(("MXFP8 quantize columnwise rceil",
                    lambda: OPS.mx_quantize(x, "e4m3", "rceil", False, -2), (x, dc, sc_),
                    {"torchao triton_to_mxfp8_dim1":
                         lambda: K.triton_to_mxfp8_dim1(x, 32, "rceil")}))
        rc = OPS.mx_quantize_rowcol(x, "rceil")
        out.append(("MXFP8 quantize rowwise + columnwise rceil",
                    lambda: OPS.mx_quantize_rowcol(x, "rceil"), (x, rc),
                    {"torchao triton dim0 + dim1":
                         lambda: (K.triton_to_mxfp8_dim0(x, 32, "rceil"),
                                  K.triton_to_mxfp8_dim1(x, 32, "rceil"))}))
    d8, s8 = OPS.mx_quantize(x, "e4m3")
    ts8, td8 = to_mx(x, torch.float8_e4m3fn, 32, mode.RCEIL)
    tdq8 = compiled(lambda d, sc: to_dtype(d, sc, torch.float8_e4m3fn, 32, BF16))
    out.append(("MXFP8 dequantize -> bf16", lambda: OPS.mx_dequantize(d8, s8, "e4m3", BF16),
                (d8, s8, x),
                {"torchao to_dtype (compiled)": lambda: tdq8(td8, ts8),
                 "torchao triton_mxfp8_dequant_dim0":
                     lambda: K.triton_mxfp8_dequant_dim0(td8, ts8, BF16, 32)}))
    tm4 = compiled(lambda t: to_mx(t, torch.float4_e2m1fn_x2, 32, mode.RCEIL))
    d4, s4 = OPS.mx_quantize(x, "e2m1")
    out.append(("MXFP4 quantize rceil", lambda: OPS.mx_quantize(x, "e2m1"), (x, d4, s4),
                {"torchao to_mx (compiled)": lambda: tm4(x)}))
    ts4, td4 = to_mx(x, torch.float4_e2m1fn_x2, 32, mode.RCEIL)
    tdq4 = compiled(lambda d, sc: to_dtype(d, sc, torch.float4_e2m1fn_x2, 32, BF16))
    out.append(("MXFP4 dequantize -> bf16", lambda: OPS.mx_dequantize(d4, s4, "e2m1", BF16),
                (d4, s4, x), {"torchao to_dtype (compiled)": lambda: tdq4(td4, ts4)}))
    return out, to_blocked


def fmt_ms(ms: float, small: bool) -> str:
    return f"{ms * 1e3:.1f} us" if small else f"{ms:.4f} ms"


def with_peers(row: dict, peers: dict, ours_ms: float, small: bool, rep: int) -> dict:
    """Time each peer of a row: the peers cell (time and our speed-up, or the error) and our
    ratio to the fastest; prints the row."""
    cells, best = [], None
    for name, fn in peers.items():
        pt, err = peer_time(fn, rep)
        if pt is None:
            cells.append(f"{name}: {err}")
            continue
        cells.append(f"{name}: {fmt_ms(pt, small)} ({pt / ours_ms:.2f}x)")
        best = pt if best is None else min(best, pt)
    row["peers (time, ours x faster)"] = "; ".join(cells)
    row["vs fastest peer"] = f"{best / ours_ms:.2f}x" if best is not None else ""
    print(" | ".join(row.values()), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="8192x8192,4096x14336,16x8192")
    ap.add_argument("--rep", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    try:
        api = torchao_api()
    except Exception as e:
        raise SystemExit(f"bench_peers.py needs torchao (pip install torchao): {e}")
    torch._dynamo.config.cache_size_limit = 64
    t0 = time.time()
    copy = copy_gbps()
    lines = [device_line(), f"peers: torchao {api['version']} (its Triton kernels and "
             f"torch.compile of its functions), triton "
             f"{getattr(__import__('triton'), '__version__', '?')}",
             f"device-to-device copy: {copy:.0f} GB/s (read + write, 2 GiB moved)", ""]
    cols = ["shape", "op", "ours", "GB/s", "% copy", "copy same bytes",
            "peers (time, ours x faster)", "vs fastest peer"]
    rows = []
    for shape in args.shapes.split(","):
        m, k = (int(v) for v in shape.split("x"))
        x = torch.randn(m, k, device="cuda", dtype=BF16)
        small = m * k < 2**20
        todo, _ = cases(api, x)
        for label, ours, outs, peers in todo:
            b = nbytes(*outs)
            t = bench_ms(ours, rep=args.rep)
            row = {"shape": f"[{m}, {k}]", "op": label, "ours": fmt_ms(t, small),
                   "GB/s": f"{b / t / 1e6:.0f}", "% copy": f"{100 * b / t / 1e6 / copy:.1f}",
                   "copy same bytes": fmt_ms(copy_us(b // 2) / 1e3, small)}
            rows.append(with_peers(row, peers, t, small, args.rep))
    # the scale swizzle, on 1-byte scales
    _, to_blocked = cases(api, torch.randn(128, 128, device="cuda", dtype=BF16))
    for r, c in ((8192, 512), (4096, 896)):
        sc = torch.randint(0, 255, (r, c), device="cuda", dtype=torch.uint8)
        t = bench_ms(lambda: OPS.swizzle_scales(sc), rep=args.rep)
        b = nbytes(sc, OPS.swizzle_scales(sc))
        row = {"shape": f"[{r}, {c}] bytes", "op": "swizzle_scales", "ours": fmt_ms(t, True),
               "GB/s": f"{b / t / 1e6:.0f}", "% copy": f"{100 * b / t / 1e6 / copy:.1f}",
               "copy same bytes": fmt_ms(copy_us(sc.numel()) / 1e3, True)}
        peers = {"torchao to_blocked (compiled)": lambda: to_blocked(sc),
                 "torchao to_blocked (Triton kernel)":
                     lambda: api["to_blocked"](sc, use_triton_kernel=True)}
        rows.append(with_peers(row, peers, t, True, args.rep))
    lines.append(table(rows, cols))
    lines += ["", "Bytes: each input read once + each output written once (ours; the peers' "
              "outputs have the same sizes, torchao's swizzled scales aside). 'copy same bytes': "
              "a device copy moving our bytes, same flush. Peer speed-up = peer time / ours "
              f"(> 1: ours faster). Total {time.time() - t0:.0f} s."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
