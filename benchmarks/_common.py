"""Timing helpers shared by the benchmarks.

Rules (DESIGN.md): median of CUDA-event timings, inputs larger than L2 for the large
shapes, bytes = each input read once + each output written once, reported as GB/s and
as a percentage of a device-to-device copy measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_ms(fn, warmup: int = 20, rep: int = 200, flush: str | None = None) -> float:
    """Median milliseconds of ``fn()`` on the current stream, timed with CUDA events.

    The L2 is flushed before each timed call so that repeated calls on one input don't
    measure the cache: by writing a 256 MiB buffer (``flush="write"``, the default; the L2
    is then full of dirty lines, which the timed call writes back to DRAM as it evicts them)
    or by reading one (``"read"``: the L2 holds clean lines, as after a layer that only read
    its weights). The default is ``$NVFP4_OPS_BENCH_FLUSH``, else ``"write"``.
    """
    if flush is None:
        flush = os.environ.get("NVFP4_OPS_BENCH_FLUSH", "write")
    if flush not in ("write", "read"):
        raise ValueError(f"flush must be 'write' or 'read', got {flush!r}")
    buf = torch.zeros(256 * 2**20, dtype=torch.uint8, device="cuda")
    do_flush = buf.zero_ if flush == "write" else (lambda: torch.sum(buf))
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(rep)]
    for s, e in zip(starts, ends):
        do_flush()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def nbytes(*tensors) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, (tuple, list)):
            total += nbytes(*t)
        elif t is not None:
            total += t.numel() * t.element_size()
    return total


def copy_gbps(nbytes_moved: int = 2 * 2**30) -> float:
    """Device-to-device copy bandwidth (bytes read + bytes written per second), GB/s."""
    n = nbytes_moved // 2
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), rep=50)
    return 2 * n / ms / 1e6


def copy_us(nbytes_in: int) -> float:
    """Microseconds to copy a buffer of ``nbytes_in`` bytes (for the small shapes)."""
    src = torch.empty(nbytes_in, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    return bench_ms(lambda: dst.copy_(src)) * 1e3


def device_line() -> str:
    p = torch.cuda.get_device_properties(0)
    return (f"device: {p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of the rows (dicts) with the given columns."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def emit(lines: list[str], out: str | None, blank_before: bool = False) -> None:
    """Print the report ``lines`` (joined by newlines) and write them to ``out`` when given.

    ``blank_before`` prints an empty line first (after the per-row progress output). The
    file gets the same text with a final newline.
    """
    text = "\n".join(lines)
    if blank_before:
        print()
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
