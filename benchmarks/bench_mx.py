"""MX codec kernels (mx_quantize / mx_dequantize) against the copy bandwidth and torch.compile.

For bf16 inputs of each shape (default [8192, 8192], [4096, 14336], [16, 8192]) the median
CUDA-event time (benchmarks/_common.bench_ms: L2 flushed before each call) of:

* MXFP8 quantize, axis -1: linear and swizzled scales, rceil and floor;
* MXFP8 quantize, axis -2 (columnwise, transposed output), linear and swizzled;
* MXFP4 quantize, axis -1 (linear rceil, swizzled floor) and axis -2;
* MXFP8 / MXFP4 dequantize -> bf16 (linear and swizzled scales);
* MXFP8 quantize_rowcol (both axes from one read; linear rceil, swizzled floor), with the
  time of the two single mx_quantize calls (axis -1 then -2) beside it.

Bytes = each input read once + each output written once (scales: their padded size);
GB/s and % of a device-to-device copy measured in the same run. Beside it, for the cases
marked as key (and, by default, the first shape only: compiling takes ~10 s per case) the
time of torch.compile(reference function) and the speedup over it. Small shapes (fewer
than 1M elements) are latency-bound: they are reported in microseconds, next to the
microseconds of a copy moving the same number of bytes. Axis -2 needs M % 32 == 0.

Markdown on stdout (device line first); ``--out FILE`` writes it too. Under 2 minutes on
an H100 with the defaults.

    python benchmarks/bench_mx.py [--shapes 8192x8192,4096x14336,16x8192]
                                  [--compile key|all|none] [--compile-shapes first|all]
                                  [--out RESULTS_mx.md]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import bench_ms, copy_gbps, copy_us, device_line, emit, nbytes, table

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops import reference as ref

OPS = torch.ops.nvfp4

# (label, kind, elem, rounding, swizzle, axis, key): key cases get the torch.compile column
CASES = [
    ("MXFP8 quantize axis-1 linear rceil", "q", "e4m3", "rceil", False, -1, False),
    ("MXFP8 quantize axis-1 linear floor", "q", "e4m3", "floor", False, -1, False),
    ("MXFP8 quantize axis-1 swizzled rceil", "q", "e4m3", "rceil", True, -1, True),
    ("MXFP8 quantize axis-1 swizzled floor", "q", "e4m3", "floor", True, -1, False),
    ("MXFP8 quantize axis-2 linear rceil", "q", "e4m3", "rceil", False, -2, True),
    ("MXFP8 quantize axis-2 swizzled rceil", "q", "e4m3", "rceil", True, -2, False),
    ("MXFP4 quantize axis-1 linear rceil", "q", "e2m1", "rceil", False, -1, True),
    ("MXFP4 quantize axis-1 swizzled floor", "q", "e2m1", "floor", True, -1, False),
    ("MXFP4 quantize axis-2 linear rceil", "q", "e2m1", "rceil", False, -2, False),
    ("MXFP8 dequantize -> bf16", "dq", "e4m3", "rceil", False, -1, True),
    ("MXFP8 dequantize swizzled -> bf16", "dq", "e4m3", "rceil", True, -1, False),
    ("MXFP4 dequantize -> bf16", "dq", "e2m1", "rceil", False, -1, True),
    ("MXFP4 dequantize swizzled -> bf16", "dq", "e2m1", "rceil", True, -1, False),
    # both axes (axis -2: skipped unless M % 32 == 0); the row also times the two single calls
    ("MXFP8 quantize rowcol linear rceil", "rc", "e4m3", "rceil", False, -2, True),
    ("MXFP8 quantize rowcol swizzled floor", "rc", "e4m3", "floor", True, -2, False),
]

SMALL = 1 << 20  # elements: below this a shape is reported in microseconds


def _make(kind, x, elem, rounding, swz, axis):
    """(kernel fn, reference fn, the reference's argument)."""
    if kind == "q":
        def fn():
            return OPS.mx_quantize(x, elem, rounding, swz, axis, "amax")

        def ref_fn(x):
            return ref.mx_quantize(x, elem, rounding, swz, axis)

        return fn, ref_fn, (x,)
    if kind == "rc":
        def fn():
            return OPS.mx_quantize_rowcol(x, rounding, swz)

        def ref_fn(x):
            return ref.mx_quantize_rowcol(x, rounding, swz)

        return fn, ref_fn, (x,)
    d, s = OPS.mx_quantize(x, elem, rounding, swz, -1, "amax")

    def fn():
        return OPS.mx_dequantize(d, s, elem, torch.bfloat16, swz)

    def ref_fn(d, s):
        return ref.mx_dequantize(d, s, elem, torch.bfloat16, swz)

    return fn, ref_fn, (d, s)


def _fmt_ms(ms, small):
    return f"{ms * 1e3:.1f} us" if small else f"{ms:.4f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="8192x8192,4096x14336,16x8192")
    ap.add_argument("--compile", choices=("key", "all", "none"), default="key",
                    help="which cases get a torch.compile(reference) time")
    ap.add_argument("--compile-shapes", choices=("first", "all"), default="first")
    ap.add_argument("--rep", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)

    t_start = time.time()
    copy = copy_gbps()
    lines = [device_line(), "", f"device-to-device copy: {copy:.0f} GB/s (read + write)", ""]
    rows = []
    for si, shape in enumerate(shapes):
        x = torch.randn(shape, dtype=torch.bfloat16, device="cuda") * 3
        small = x.numel() < SMALL
        for label, kind, elem, rounding, swz, axis, key in CASES:
            if axis == -2 and shape[-2] % 32:
                continue
            fn, ref_fn, ref_args = _make(kind, x, elem, rounding, swz, axis)
            out = fn()
            moved = nbytes(*ref_args) + nbytes(out)
            ms = bench_ms(fn, rep=args.rep)
            gbps = moved / ms / 1e6
            row = {
                "shape": "x".join(map(str, shape)),
                "op": label,
                "time (ms)": _fmt_ms(ms, small),
                "GB/s": f"{gbps:.0f}",
                "% copy": f"{100 * gbps / copy:.1f}",
            }
            cu = copy_us(moved // 2)  # a copy moving the same bytes, same flush
            row["copy, same bytes"] = f"{cu:.1f} us" if small else f"{cu / 1e3:.4f}"
            row["% same-bytes copy"] = f"{100 * cu / (ms * 1e3):.0f}"
            if kind == "rc":
                def two_calls():
                    return (OPS.mx_quantize(x, elem, rounding, swz, -1, "amax"),
                            OPS.mx_quantize(x, elem, rounding, swz, -2, "amax"))

                two_ms = bench_ms(two_calls, rep=args.rep)
                row["two single calls"] = _fmt_ms(two_ms, small)
                row["vs two calls"] = f"{two_ms / ms:.2f}x"
            want_compile = (args.compile == "all" or (args.compile == "key" and key)) and (
                args.compile_shapes == "all" or si == 0)
            if want_compile:
                t0 = time.time()
                try:
                    compiled = torch.compile(ref_fn, dynamic=False)
                    compiled(*ref_args)  # compile outside the timing
                    c_ms = bench_ms(lambda: compiled(*ref_args), warmup=5,
                                    rep=max(20, args.rep // 4))
                    row["torch.compile(ref)"] = _fmt_ms(c_ms, small)
                    row["speedup"] = f"{c_ms / ms:.1f}x"
                except Exception as e:  # report, keep benchmarking the kernels
                    row["torch.compile(ref)"] = f"failed: {type(e).__name__}"
                    print(f"torch.compile of the reference failed: {e}", flush=True)
                print(f"compiled {label} {shape} in {time.time() - t0:.1f} s", flush=True)
            rows.append(row)
            print(row, flush=True)
        del x
        torch.cuda.empty_cache()

    cols = ["shape", "op", "time (ms)", "GB/s", "% copy", "copy, same bytes",
            "% same-bytes copy", "two single calls", "vs two calls", "torch.compile(ref)",
            "speedup"]
    lines.append(table(rows, cols))
    lines.append("")
    lines.append(f"(total {time.time() - t_start:.0f} s; bytes = input read once + outputs "
                 "written once; '% copy': of the 2 GiB copy above; 'copy, same bytes': a copy "
                 "moving the same bytes, L2 flushed the same way (ms, small shapes in us), and its "
                 "time / ours)")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
