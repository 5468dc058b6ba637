"""Fused low-bit weight GEMMs against dequantize + F.linear and the bf16 F.linear, per format.

Formats (``--formats``, default all three): ``nvfp4`` (W4A16, op ``nvfp4.gemm_nvfp4_w4a16``;
also its prepacked form ``nvfp4.gemm_nvfp4_w4a16_prepacked`` after
``nvfp4.prepack_nvfp4_w4a16``), ``mxfp4`` (W4A16) and ``mxfp8`` (W8A16), both op
``nvfp4.gemm_mx_w16``. Columns per format, weight shape N x K and rows M: the fused op,
dequantize + F.linear (the ``dequant`` backend), the layers' ``fused`` backend (which picks
between the two by M: ``nvfp4_ops.nn.gemm.fused_max_m``, the format's ``FUSED_MAX_M`` or, where
the wgmma kernel serves, ``FUSED_MAX_M_WGMMA``), F.linear on the bf16
weight; the speed-ups over bf16; at M = 1 the bandwidth on the weight bytes (elements + block
scales) of the fused op as GB/s and as a percentage of a device-to-device copy measured in
the same run; the peak memory of one call above the inputs (fused / dequant).

Times: the median CUDA-event time of one call (``benchmarks/_common.bench_ms``: the L2 is
flushed before each call, by default by writing a buffer, which leaves it full of dirty lines
that the timed call must write back; ``--flush read`` leaves it clean). After the table: per
format and shape, the crossover, the first M from which dequantize + F.linear beats the fused
op (what ``FUSED_MAX_M`` should follow), beside the value the code uses now. The header says which implementation serves each op:
a "reference" there means that this build has no kernel for it and its fused numbers are
the reference's, not a kernel's.

    python benchmarks/bench_gemm.py [--formats nvfp4,mxfp4,mxfp8] [--rep 50]
        [--shapes 8192x8192,...] [--ms 1,16,...] [--flush write|read] [--out FILE]

Needs a CUDA GPU (exits with status 2 and a message otherwise).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from _common import bench_ms, copy_gbps, device_line, emit, nbytes, table

import nvfp4_ops
from nvfp4_ops import _library
from nvfp4_ops.nn.gemm import fused_max_m, fused_path

SHAPES = "8192x8192,14336x4096,4096x14336,28672x8192"
MS = "1,4,16,32,64,128,256,1024"
FORMATS = "nvfp4,mxfp4,mxfp8"
DEVICE = "cuda"  # the device the tensors are made on (a CPU smoke run of the logic sets "cpu")
COLUMNS = ["format", "N x K", "M", "fused us", "prepacked us", "dequant+linear us",
           "backend us", "bf16 linear us", "fused vs bf16", "prepacked vs bf16",
           "backend vs bf16", "M=1 weight GB/s (% copy) fused / prepacked",
           "peak MiB fused / dequant"]


@dataclass
class Weight:
    """One format's weight and the calls the benchmark times (``x`` -> ``[M, N]``)."""

    fused: Callable[[torch.Tensor], torch.Tensor]
    dequant: Callable[[torch.Tensor], torch.Tensor]
    nbytes: int  # elements + block scales (+ the global scale)
    extra: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=dict)


def _nvfp4(w: torch.Tensor) -> Weight:
    ops = torch.ops.nvfp4
    n = w.shape[0]
    gs = nvfp4_ops.global_scale(w)
    packed, scales = nvfp4_ops.quantize(w, gs)
    pp, ss = ops.prepack_nvfp4_w4a16(packed, scales)
    return Weight(
        fused=lambda x: ops.gemm_nvfp4_w4a16(x, packed, scales, gs, None),
        dequant=lambda x: F.linear(x, ops.dequantize(packed, scales, gs, x.dtype, False)),
        nbytes=nbytes(packed, scales, gs),
        extra={"prepacked": lambda x: ops.gemm_nvfp4_w4a16_prepacked(x, pp, ss, gs, n, None)},
    )


def _mx(elem: str) -> Callable[[torch.Tensor], Weight]:
    def make(w: torch.Tensor) -> Weight:
        ops = torch.ops.nvfp4
        data, scales = nvfp4_ops.mx_quantize(w, elem)
        return Weight(
            fused=lambda x: ops.gemm_mx_w16(x, data, scales, elem, None),
            dequant=lambda x: F.linear(x, ops.mx_dequantize(data, scales, elem, x.dtype, False)),
            nbytes=nbytes(data, scales),
        )

    return make


#: --formats name -> (the layers' format name, its fused op, make(bf16 weight) -> Weight)
MAKERS = {
    "nvfp4": ("NVFP4", "gemm_nvfp4_w4a16", _nvfp4),
    "mxfp4": ("MXFP4", "gemm_mx_w16", _mx("e2m1")),
    "mxfp8": ("MXFP8", "gemm_mx_w16", _mx("e4m3")),
}


def peak_mib(fn) -> float:
    """Peak allocation of one call above what was allocated before it, in MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _parse_formats(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """The --formats names (exits through ``ap.error``, status 2, on an unknown one)."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    if not names or any(f not in MAKERS for f in names):
        ap.error(f"--formats must name some of {', '.join(MAKERS)}, got {text!r}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default=FORMATS, help=f"comma-separated, of {FORMATS}")
    ap.add_argument("--rep", type=int, default=50)
    ap.add_argument("--shapes", default=SHAPES, help="N x K weight shapes, comma-separated")
    ap.add_argument("--ms", default=MS, help="rows M of the activation, comma-separated")
    ap.add_argument("--flush", default="write", choices=("write", "read"),
                    help="how the L2 is flushed before each timed call (benchmarks/_common."
                         "bench_ms): write leaves it dirty, read leaves it clean")
    ap.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = ap.parse_args(argv)
    formats = _parse_formats(ap, args.formats)
    if not torch.cuda.is_available():
        print("bench_gemm.py needs a CUDA GPU (the fused kernels and the CUDA-event timings); "
              "none is visible here", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    copy = copy_gbps()
    lines = [f"{device_line()}; device copy {copy:.0f} GB/s (read + write)",
             "command: python benchmarks/bench_gemm.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv)]
    for f in formats:
        fmt, op, _ = MAKERS[f]
        impl, why = _library.op_implementation(op, DEVICE)
        lines.append(f"{fmt}: op nvfp4.{op} served by {impl} ({why}); FUSED_MAX_M = "
                     f"{fused_max_m(fmt)[0]} (where the wgmma kernel serves, K permitting: "
                     f"{fused_max_m(fmt, torch.device(DEVICE), 1 << 20)[0]})")
    print("\n".join(lines), flush=True)
    rows, crossovers = [], []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        w = torch.randn(n, k, device=DEVICE, dtype=torch.bfloat16) * 0.02
        for f in formats:
            fmt, _, make = MAKERS[f]
            wt = make(w)
            cross: Optional[int] = None
            for m in (int(v) for v in args.ms.split(",")):
                x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)

                def backend(x=x, m=m):  # what the layer's "fused" backend runs for this M
                    return (wt.fused(x) if fused_path(fmt, m, x.dtype, x.device, k)[0] == "fused"
                            else wt.dequant(x))

                calls = {"fused": lambda x=x: wt.fused(x), "dequant": lambda x=x: wt.dequant(x),
                         "backend": backend, "bf16": lambda x=x: F.linear(x, w)}
                calls.update({name: (lambda x=x, g=g: g(x)) for name, g in wt.extra.items()})
                t = {name: bench_ms(fn, rep=args.rep, flush=args.flush)
                     for name, fn in calls.items()}
                fused_best = min(t["fused"], t.get("prepacked", float("inf")))
                if cross is None and t["dequant"] < fused_best:
                    cross = m

                def gbps(ms):
                    g = wt.nbytes / ms / 1e6
                    return f"{g:.0f} ({100 * g / copy:.0f} %)"

                tp = t.get("prepacked")
                row = {
                    "format": fmt, "N x K": f"{n} x {k}", "M": m,
                    "fused us": f"{t['fused'] * 1e3:.1f}",
                    "prepacked us": "" if tp is None else f"{tp * 1e3:.1f}",
                    "dequant+linear us": f"{t['dequant'] * 1e3:.1f}",
                    "backend us": f"{t['backend'] * 1e3:.1f}",
                    "bf16 linear us": f"{t['bf16'] * 1e3:.1f}",
                    "fused vs bf16": f"{t['bf16'] / t['fused']:.2f}x",
                    "prepacked vs bf16": "" if tp is None else f"{t['bf16'] / tp:.2f}x",
                    "backend vs bf16": f"{t['bf16'] / t['backend']:.2f}x",
                    "M=1 weight GB/s (% copy) fused / prepacked": (
                        "" if m != 1 else gbps(t["fused"]) + ("" if tp is None
                                                              else f" / {gbps(tp)}")),
                    "peak MiB fused / dequant": (f"{peak_mib(calls['fused']):.1f} / "
                                                 f"{peak_mib(calls['dequant']):.1f}"),
                }
                rows.append(row)
                print(" | ".join(str(row[c]) for c in COLUMNS), flush=True)
            crossovers.append({"format": fmt, "N x K": f"{n} x {k}",
                               "dequant+linear first faster at M": cross or "never (in --ms)",
                               "FUSED_MAX_M now": fused_max_m(fmt, torch.device(DEVICE), k)[0]})
            del wt
    emit(lines + ["", table(rows, COLUMNS), "",
                  "Crossover (the first M of --ms at which dequantize + F.linear beats the fused "
                  "op; FUSED_MAX_M should be the M before it):", "",
                  table(crossovers, ["format", "N x K", "dequant+linear first faster at M",
                                     "FUSED_MAX_M now"])], args.out, blank_before=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
