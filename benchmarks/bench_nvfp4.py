"""NVFP4 codec kernels: time, GB/s and % of the device-to-device copy bandwidth.

For bf16 x of shape [8192, 8192], [4096, 14336] and [16, 8192], the median CUDA-event
time (benchmarks/_common.bench_ms, L2 flushed before each call) of

* quantize (linear scales), quantize (swizzled scales),
* dequantize -> bf16 from linear and from swizzled scales,
* quant_dequant, global_scale,
* quantize (both layouts) and quant_dequant with scale_method="4over6", with their time as
  a multiple of the same op with "amax" ("x amax"; the target is <= 1.3x),
* swizzle_scales / unswizzle_scales of [8192, 512] and [4096, 896] uint8 scales, next to a
  copy of the same bytes (target: <= 1.5x) and torchao's ``to_blocked`` under torch.compile
  when torchao is installed (target: 2x faster; ``--no-compile`` skips it),

with bytes = each input read once + each output written once, as GB/s and as a
percentage of the copy bandwidth measured in the same run; beside it the same op as
``torch.compile(reference function)`` (ms and GB/s). For the small shape the times are in
microseconds, next to the time of a device-to-device copy that moves the same number of
bytes (reads + writes). Each row also says whether the kernel's output equals the
compiled reference's, byte for byte.

Markdown on stdout (device line first); ``--out FILE`` writes it too. Under 2 minutes on
an H100 (the torch.compile columns are skipped once --compile-budget seconds are spent
compiling; --no-compile skips them all).

    python benchmarks/bench_nvfp4.py [--out RESULTS_nvfp4.md] [--no-compile]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import bench_ms, copy_gbps, copy_us, device_line, emit, nbytes, table

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops import _library
from nvfp4_ops import reference as ref

OPS = torch.ops.nvfp4
SHAPES = [(8192, 8192), (4096, 14336), (16, 8192)]
SMALL = 1 << 24  # bytes moved below which a shape is reported in microseconds


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    if t.element_size() == 1:
        return t.view(torch.uint8)
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


def _same(a, b) -> bool:
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    for u, v in zip(a, b):
        if u.shape != v.shape or u.dtype != v.dtype:
            return False
        if u.dtype.is_floating_point and u.element_size() > 1:
            nu, nv = torch.isnan(u), torch.isnan(v)
            if not torch.equal(nu, nv) or not torch.equal(_bits(u)[~nu], _bits(v)[~nv]):
                return False
        elif not torch.equal(_bits(u), _bits(v)):
            return False
    return True


def cases(x: torch.Tensor):
    """(name, kernel call, reference function, its args, input tensors) per op."""
    gs = OPS.global_scale(x)
    p, s = OPS.quantize(x, gs, False)
    ps, ss = OPS.quantize(x, gs, True)
    bf16 = torch.bfloat16
    return [
        ("quantize (linear)", lambda: OPS.quantize(x, gs, False),
         lambda x, gs: ref.quantize(x, gs, False), (x, gs)),
        ("quantize (swizzled)", lambda: OPS.quantize(x, gs, True),
         lambda x, gs: ref.quantize(x, gs, True), (x, gs)),
        ("dequantize (linear) -> bf16", lambda: OPS.dequantize(p, s, gs, bf16, False),
         lambda p, s, gs: ref.dequantize(p, s, gs, bf16, False), (p, s, gs)),
        ("dequantize (swizzled) -> bf16", lambda: OPS.dequantize(ps, ss, gs, bf16, True),
         lambda p, s, gs: ref.dequantize(p, s, gs, bf16, True), (ps, ss, gs)),
        ("quant_dequant", lambda: OPS.quant_dequant(x, gs),
         lambda x, gs: ref.quant_dequant(x, gs), (x, gs)),
        ("global_scale", lambda: OPS.global_scale(x), lambda x: ref.global_scale(x), (x,)),
        ("quantize (linear) 4over6", lambda: OPS.quantize(x, gs, False, "4over6"),
         lambda x, gs: ref.quantize(x, gs, False, "4over6"), (x, gs)),
        ("quantize (swizzled) 4over6", lambda: OPS.quantize(x, gs, True, "4over6"),
         lambda x, gs: ref.quantize(x, gs, True, "4over6"), (x, gs)),
        ("quant_dequant 4over6", lambda: OPS.quant_dequant(x, gs, "4over6"),
         lambda x, gs: ref.quant_dequant(x, gs, "4over6"), (x, gs)),
    ]

#: The suffix of the "4over6" rows; the row without it is their "amax" baseline.
FOUR_SIX = " 4over6"


SWIZZLE_SHAPES = [(8192, 512), (4096, 896)]


def swizzle_rows(no_compile: bool) -> list[dict]:
    """Time of swizzle_scales / unswizzle_scales beside a copy of the same bytes and, when
    torchao is importable, its compiled ``to_blocked`` (the same layout)."""
    try:
        from torchao.prototype.mx_formats.utils import to_blocked
    except ImportError:
        to_blocked = None
    rows = []
    for m, kb in SWIZZLE_SHAPES:
        s = torch.randint(0, 256, (m, kb), dtype=torch.uint8, device="cuda")
        sw = OPS.swizzle_scales(s)
        cu = copy_us(s.numel())
        for name, call in (("swizzle_scales", lambda: OPS.swizzle_scales(s)),
                           ("unswizzle_scales", lambda: OPS.unswizzle_scales(sw, m, kb))):
            us = bench_ms(call) * 1e3
            row = {"shape": f"[{m}, {kb}] bytes", "op": name, "time": f"{us:.1f} us",
                   "copy same bytes": f"{cu:.1f} us ({us / cu:.2f}x)"}
            if name == "swizzle_scales" and to_blocked is not None and not no_compile:
                try:
                    fn = torch.compile(to_blocked)
                    want = fn(s)
                    tus = bench_ms(lambda: fn(s)) * 1e3
                    same = torch.equal(want.reshape(-1), sw.reshape(-1))
                    row["torchao to_blocked (compiled)"] = (
                        f"{tus:.1f} us ({tus / us:.2f}x ours), "
                        f"same bytes: {'yes' if same else 'NO'}")
                except Exception as e:  # noqa: BLE001 - report and go on
                    row["torchao to_blocked (compiled)"] = f"failed: {type(e).__name__}"
            rows.append(row)
            print(" | ".join(str(v) for v in row.values()), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="also write the Markdown table to this file")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    ap.add_argument("--compile-budget", type=float, default=60.0,
                    help="seconds of torch.compile time after which its columns are skipped "
                         "(also skipped after 95 s in all, to stay under 2 minutes)")
    args = ap.parse_args()

    t_start = time.time()
    torch.manual_seed(0)
    lines = [device_line(), ""]
    which = {op: _library.op_implementation(op)[0] for op in ("quantize", "dequantize",
                                                        "quant_dequant", "global_scale")}
    lines.append("implementations: " + ", ".join(f"{k}={v}" for k, v in which.items()))
    copy_bw = copy_gbps()
    lines.append(f"device-to-device copy: {copy_bw:.0f} GB/s (reads + writes, 2 GiB moved)")
    lines.append("")

    compile_spent = 0.0
    compiled = {}
    rows = []
    amax_ms = {}  # (shape, op) -> ms of the "amax" rows, for the 4over6 ratio
    for m, k in SHAPES:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        for name, call, ref_fn, ref_args in cases(x):
            out = call()
            moved = nbytes(*ref_args) + nbytes(out)
            small = moved < SMALL
            ms = bench_ms(call)
            gbps = moved / ms / 1e6
            row = {"shape": f"[{m}, {k}]", "op": name}
            amax_ms[(m, k, name)] = ms
            if name.endswith(FOUR_SIX):
                row["x amax"] = f"{ms / amax_ms[(m, k, name[: -len(FOUR_SIX)])]:.2f}x"
            cu = copy_us(moved // 2)  # a copy moving the same bytes, same flush
            if small:
                row["time"] = f"{ms * 1e3:.1f} us"
                row["copy same bytes"] = f"{cu:.1f} us ({ms * 1e3 / cu:.2f}x)"
            else:
                row["time"] = f"{ms:.3f} ms"
                row["copy same bytes"] = f"{cu / 1e3:.3f} ms"
            row["% same-bytes copy"] = f"{100 * cu / (ms * 1e3):.0f} %"
            row["GB/s"] = f"{gbps:.0f}"
            row["% copy"] = f"{100 * gbps / copy_bw:.0f} %"
            # torch.compile(reference)
            if args.no_compile:
                row["compiled ref"] = "skipped"
            elif compile_spent > args.compile_budget or time.time() - t_start > 95:
                row["compiled ref"] = "skipped (time budget)"
            else:
                t0 = time.time()
                fn = compiled.setdefault(name, torch.compile(ref_fn, dynamic=True))
                try:
                    want = fn(*ref_args)
                    torch.cuda.synchronize()
                    compile_spent += time.time() - t0
                    rms = bench_ms(lambda: fn(*ref_args), warmup=3, rep=20)
                    rgb = moved / rms / 1e6
                    rt = f"{rms * 1e3:.1f} us" if small else f"{rms:.3f} ms"
                    row["compiled ref"] = f"{rt}, {rgb:.0f} GB/s"
                    row["speedup"] = f"{rms / ms:.1f}x"
                    row["same bytes"] = "yes" if _same(out, want) else "NO"
                except Exception as e:  # noqa: BLE001 - report and go on
                    compile_spent += time.time() - t0
                    row["compiled ref"] = f"failed: {type(e).__name__}"
            rows.append(row)
            print(" | ".join(str(v) for v in row.values()), flush=True)
        del x
        torch.cuda.empty_cache()

    cols = ["shape", "op", "time", "GB/s", "% copy", "x amax", "copy same bytes",
            "% same-bytes copy", "compiled ref", "speedup", "same bytes"]
    lines.append(table(rows, cols))
    lines.append("")
    lines.append("GB/s: (bytes read + bytes written) / time, each input read once and each "
                 "output written once. '% copy': of the 2 GiB copy above. 'copy same bytes': a "
                 "device-to-device copy moving the same number of bytes (reads + writes), L2 "
                 "flushed the same way; '% same-bytes copy': its time / ours. 'compiled ref': "
                 "torch.compile of the "
                 f"pure-PyTorch reference. Total run time {time.time() - t_start:.0f} s.")
    lines += ["", "Scale layout ops (1-byte scales; 'copy same bytes': a copy of the input):", ""]
    lines.append(table(swizzle_rows(args.no_compile),
                       ["shape", "op", "time", "copy same bytes",
                        "torchao to_blocked (compiled)"]))
    emit(lines, args.out, blank_before=True)


if __name__ == "__main__":
    main()
