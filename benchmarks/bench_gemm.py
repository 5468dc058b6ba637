"""Fused NVFP4 W4A16 GEMM against dequantize + F.linear and the bf16 F.linear.

Columns: the fused op on the plain weight (``nvfp4.gemm_nvfp4_w4a16``), on the prepacked
weight (``nvfp4.gemm_nvfp4_w4a16_prepacked`` after ``nvfp4.prepack_nvfp4_w4a16``),
dequantize + F.linear (the ``dequant`` backend), the ``fused`` backend of ``NVFP4Linear``
(which picks between the first and the third by M: ``nvfp4_ops.nn.gemm.FUSED_MAX_M``), and
F.linear on the bf16 weight.

Per weight shape N x K and rows M: the median CUDA-event time of one call
(benchmarks/_common.bench_ms: L2 flushed before each call), the speed-ups over bf16, the
weight-byte bandwidth of the fused kernels at M = 1 as a percentage of a device-to-device
copy measured in the same run, the peak memory of one call above the inputs, and the M from
which dequantize + F.linear beats the fused kernel (what FUSED_MAX_M should follow).

    python benchmarks/bench_gemm.py [--rep 50] [--shapes 8192x8192,...] [--ms 1,16,...]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _common import bench_ms, copy_gbps, device_line, nbytes, table

import nvfp4_ops
from nvfp4_ops.nn.gemm import fused_path

SHAPES = "8192x8192,14336x4096,4096x14336,28672x8192"
MS = "1,4,16,32,64,128,256,1024"
COLUMNS = ["N x K", "M", "fused us", "prepacked us", "dequant+linear us", "backend us",
           "bf16 linear us", "fused vs bf16", "prepacked vs bf16", "backend vs bf16",
           "fused / prepacked GB/s (% copy)", "peak MiB fused / dequant"]


def peak_mib(fn) -> float:
    """Peak allocation of one call above what was allocated before it, in MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rep", type=int, default=50)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--ms", default=MS)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    copy = copy_gbps()
    print(f"{device_line()}; device copy {copy:.0f} GB/s (read + write)")
    print(f"command: python benchmarks/bench_gemm.py --rep {args.rep} --shapes {args.shapes} "
          f"--ms {args.ms}\n")
    ops = torch.ops.nvfp4
    rows, crossovers = [], {}
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        gs = nvfp4_ops.global_scale(w)
        packed, scales = nvfp4_ops.quantize(w, gs)
        pp, ss = ops.prepack_nvfp4_w4a16(packed, scales)
        wbytes = nbytes(packed, scales)
        cross = None
        for m in (int(v) for v in args.ms.split(",")):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)

            def fused():
                return ops.gemm_nvfp4_w4a16(x, packed, scales, gs, None)

            def prepacked():
                return ops.gemm_nvfp4_w4a16_prepacked(x, pp, ss, gs, n, None)

            def dequant():
                return F.linear(x, ops.dequantize(packed, scales, gs, torch.bfloat16, False))

            def backend():  # what the layer's "fused" backend runs for this M
                return fused() if fused_path(m, x.dtype)[0] == "fused" else dequant()

            def dense():
                return F.linear(x, w)

            tf, tp, td, tk, tb = (bench_ms(f, rep=args.rep)
                                  for f in (fused, prepacked, dequant, backend, dense))

            def gbps(ms):
                return f"{wbytes / ms / 1e6:.0f} ({100 * wbytes / ms / 1e6 / copy:.0f} %)"

            if cross is None and td < min(tf, tp):
                cross = m
            rows.append({
                "N x K": f"{n} x {k}", "M": m, "fused us": f"{tf * 1e3:.1f}",
                "prepacked us": f"{tp * 1e3:.1f}", "dequant+linear us": f"{td * 1e3:.1f}",
                "backend us": f"{tk * 1e3:.1f}", "bf16 linear us": f"{tb * 1e3:.1f}",
                "fused vs bf16": f"{tb / tf:.2f}x", "prepacked vs bf16": f"{tb / tp:.2f}x",
                "backend vs bf16": f"{tb / tk:.2f}x",
                "fused / prepacked GB/s (% copy)": f"{gbps(tf)} / {gbps(tp)}" if m == 1 else "",
                "peak MiB fused / dequant": f"{peak_mib(fused):.1f} / {peak_mib(dequant):.1f}",
            })
        crossovers[shape] = cross
    print(table(rows, COLUMNS))
    print()
    for shape, m in crossovers.items():
        print(f"crossover {shape}: dequant+linear first faster at M = {m}")


if __name__ == "__main__":
    main()
