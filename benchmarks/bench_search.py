"""Time of the scale search (docs/spec.md section 5) against the plain amax quantize, on one GPU.

For each weight-like shape (bf16): NVFP4 quantize with scale_method "amax", "mse" and
"hessian" (the Hessian from hessian_blocks of random correlated activations), MXFP4 and
MXFP8 mx_quantize with "amax" and "mse". Reported: the median CUDA-event time
(benchmarks/_common.bench_ms, L2 flushed), GB/s (x read once, data and scales written
once), the percentage of a device-to-device copy measured in the same run, and the ratio
to the "amax" quantize of the same format. Next to them, torch.compile of the reference's
exhaustive search (on a smaller shape: compiling 126 unrolled candidates over a 64M-element
tensor takes longer than this whole benchmark; the "hessian" reference is timed eagerly,
its 126 x 256-term quadratic form would not compile in reasonable time), and the time of
hessian_blocks for X [8192, 8192] bf16.

Batched rows (``--batched BxMxK``, default 512x16x4096): a 3-D x [B, M, K] with one global
scale per batch (``gs [B]``) against the same blocks as one 2-D tensor [B * M, K] with one
global scale; "x 2-D" is the 3-D time over the 2-D time (the target: 1.00, no slower per
block).

Markdown on stdout (device line first); ``--out FILE`` writes it too. Under 3 minutes on
an H100.

    python benchmarks/bench_search.py [--shapes 8192x8192,4096x14336] [--batched 512x16x4096]
        [--no-reference] [--out FILE]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import bench_ms, copy_gbps, device_line, emit, nbytes, table

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops import _library
from nvfp4_ops import reference as ref

OPS = torch.ops.nvfp4


def correlated_activations(t: int, k: int, seed: int = 0) -> torch.Tensor:
    """[t, k] bf16 activations with neighbouring-channel and low-rank shared correlation."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    z = torch.randn(t, k, device="cuda", generator=g)
    low = (torch.randn(t, 32, device="cuda", generator=g)
           @ torch.randn(32, k, device="cuda", generator=g))
    return (z + 0.6 * z.roll(1, dims=1) + 0.15 * low).to(torch.bfloat16)


def _row(name, shape, fn, outs_bytes, in_bytes, copy, base_ms=None, rep=100, backend=""):
    ms = bench_ms(fn, warmup=5, rep=rep)
    gbs = (in_bytes + outs_bytes) / ms / 1e6
    return {
        "op": name,
        "shape": shape,
        "backend": backend,
        "ms": f"{ms:.3f}",
        "GB/s": f"{gbs:.0f}",
        "% copy": f"{100 * gbs / copy:.0f}",
        "x amax": "1.00" if base_ms is None else f"{ms / base_ms:.2f}",
    }, ms


def bench_shape(m: int, k: int, copy: float) -> list[dict]:
    rows = []
    shape = f"{m}x{k}"
    w = (torch.randn(m, k, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
         * 0.02).to(torch.bfloat16)
    gs = OPS.global_scale(w)
    X = correlated_activations(4096, k)
    H = ref.hessian_blocks(X)
    bk = _library.op_implementation("quantize", "cuda")[0]
    in_b = nbytes(w)

    out = OPS.quantize(w, gs, False, "amax", None)
    r, base = _row("NVFP4 amax", shape, lambda: OPS.quantize(w, gs, False, "amax", None),
                   nbytes(out), in_b, copy, backend=bk)
    rows.append(r)
    for method, h, rep in (("mse", None, 50), ("hessian", H, 10)):
        out = OPS.quantize(w, gs, False, method, h)
        r, _ = _row(f"NVFP4 {method}", shape, lambda: OPS.quantize(w, gs, False, method, h),
                    nbytes(out), in_b, copy, base, rep=rep, backend=bk)
        rows.append(r)
    bkm = _library.op_implementation("mx_quantize", "cuda")[0]
    for elem, label in (("e2m1", "MXFP4"), ("e4m3", "MXFP8")):
        out = OPS.mx_quantize(w, elem, "rceil", False, -1, "amax")
        r, mbase = _row(f"{label} amax", shape,
                        lambda: OPS.mx_quantize(w, elem, "rceil", False, -1, "amax"),
                        nbytes(out), in_b, copy, backend=bkm)
        rows.append(r)
        for rnd in ("rceil", "floor"):
            out = OPS.mx_quantize(w, elem, rnd, False, -1, "mse")
            r, _ = _row(f"{label} mse ({rnd})", shape,
                        lambda: OPS.mx_quantize(w, elem, rnd, False, -1, "mse"),
                        nbytes(out), in_b, copy, mbase, rep=50, backend=bkm)
            rows.append(r)
    del X, H
    return rows


def bench_batched(b: int, m: int, k: int, copy: float) -> list[dict]:
    """NVFP4 amax / mse / hessian on x [b, m, k] with gs [b], next to x as [b * m, k]."""
    rows = []
    g = torch.Generator(device="cuda").manual_seed(3)
    x3 = (torch.randn(b, m, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    x3 *= torch.exp2(torch.randint(-3, 4, (b, 1, 1), device="cuda", generator=g)).to(x3.dtype)
    gs3 = torch.cat([OPS.global_scale(x3[i]) for i in range(b)])
    x2 = x3.reshape(b * m, k)
    gs2 = OPS.global_scale(x2)
    H = ref.hessian_blocks(correlated_activations(4096, k))
    bk = _library.op_implementation("quantize", "cuda")[0]
    in_b = nbytes(x2)
    base = None
    for method, h, rep in (("amax", None, 100), ("mse", None, 50), ("hessian", H, 10)):
        ms2 = None
        for label, x, gs in ((f"{b}x{m}x{k}, gs [{b}]", x3, gs3), (f"{b * m}x{k}", x2, gs2)):
            out = OPS.quantize(x, gs, False, method, h)
            r, ms = _row(f"NVFP4 {method}", label,
                         lambda: OPS.quantize(x, gs, False, method, h), nbytes(out), in_b, copy,
                         base, rep=rep, backend=bk)
            if x is x3:
                base = base if base is not None else ms
                ms3 = ms
            else:
                r["x amax"] = ""
                ms2 = ms
            rows.append(r)
        rows[-2]["x 2-D"] = f"{ms3 / ms2:.2f}"
    return rows


def bench_reference(copy: float) -> list[dict]:
    """torch.compile of the reference search (smaller shapes), next to the kernels there."""
    rows = []
    m, k = 1024, 4096
    shape = f"{m}x{k}"
    w = (torch.randn(m, k, device="cuda", generator=torch.Generator(device="cuda").manual_seed(2))
         * 0.02).to(torch.bfloat16)
    gs = ref.global_scale(w)
    in_b = nbytes(w)
    torch._dynamo.reset()
    t0 = time.time()
    f_mse = torch.compile(lambda x, g: ref.quantize(x, g, False, "mse"), dynamic=False)
    out = f_mse(w, gs)
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    r, _ = _row("NVFP4 mse", shape, lambda: f_mse(w, gs), nbytes(out), in_b, copy, rep=10,
                backend=f"ref compiled ({compile_s:.0f} s compile)")
    rows.append(r)
    r, _ = _row("NVFP4 mse", shape, lambda: OPS.quantize(w, gs, False, "mse", None), nbytes(out),
                in_b, copy, rep=50, backend=_library.op_implementation("quantize", "cuda")[0])
    rows.append(r)
    t0 = time.time()
    f_mx = torch.compile(lambda x: ref.mx_quantize(x, "e2m1", "rceil", False, -1, "mse"),
                         dynamic=False)
    out = f_mx(w)
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    r, _ = _row("MXFP4 mse (rceil)", shape, lambda: f_mx(w), nbytes(out), in_b, copy, rep=10,
                backend=f"ref compiled ({compile_s:.0f} s compile)")
    rows.append(r)
    # "hessian": eager reference on a small shape.
    ms_, ks_ = 128, 1024
    ws = w[:ms_, :ks_].contiguous()
    gss = ref.global_scale(ws)
    H = ref.hessian_blocks(correlated_activations(1024, ks_))
    out = ref.quantize(ws, gss, False, "hessian", H)
    r, _ = _row("NVFP4 hessian", f"{ms_}x{ks_}", lambda: ref.quantize(ws, gss, False, "hessian", H),
                nbytes(out), nbytes(ws), copy, rep=3, backend="ref eager")
    rows.append(r)
    r, _ = _row("NVFP4 hessian", f"{ms_}x{ks_}",
                lambda: OPS.quantize(ws, gss, False, "hessian", H), nbytes(out), nbytes(ws),
                copy, rep=20, backend=_library.op_implementation("quantize", "cuda")[0])
    rows.append(r)
    for row in rows:
        row["x amax"] = ""
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="8192x8192,4096x14336")
    p.add_argument("--batched", default="512x16x4096",
                   help="BxMxK of the per-batch global scale rows ('' to skip)")
    p.add_argument("--no-reference", action="store_true", help="skip the compiled reference")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    start = time.time()
    copy = copy_gbps()
    lines = [device_line(), "", f"copy bandwidth: {copy:.0f} GB/s", ""]
    rows = []
    for s in args.shapes.split(","):
        m, k = (int(v) for v in s.lower().split("x"))
        rows += bench_shape(m, k, copy)
    cols = ["op", "shape", "backend", "ms", "GB/s", "% copy", "x amax"]
    lines.append(table(rows, cols))
    if args.batched:
        b, m, k = (int(v) for v in args.batched.lower().split("x"))
        lines += ["", "One global scale per batch (3-D) vs the same blocks as one 2-D tensor:",
                  ""]
        lines.append(table(bench_batched(b, m, k, copy), cols + ["x 2-D"]))
    X = correlated_activations(8192, 8192)
    hb = bench_ms(lambda: ref.hessian_blocks(X), warmup=2, rep=10)
    lines += ["", f"hessian_blocks(X [8192, 8192] bf16): {hb:.2f} ms", ""]
    del X
    if not args.no_reference:
        lines += ["Reference search (torch.compile of reference.quantize / mx_quantize; "
                  "\"hessian\": eager) next to the kernel on the same smaller shapes:", ""]
        lines.append(table(bench_reference(copy), cols[:-1]))
    lines += ["", f"(total {time.time() - start:.0f} s)"]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
