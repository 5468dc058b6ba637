"""Device-to-device copy bandwidth against the bytes moved, with the L2 flushed by writing
(dirty lines left for the timed copy to write back) and by reading (clean lines).

Prints one Markdown row per size: the bytes the benchmarks' 8192 x 8192 rows move (e.g.
quantize: 128 MiB read + 36 MiB written) need a copy of that size as their yardstick, not
the 2 GiB copy whose bandwidth the tables divide by.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import bench_ms  # noqa: E402

print("| bytes moved (read + written) | flush | us | GB/s |")
print("|---|---|---|---|")
for mib in (1, 16, 64, 128, 164, 256, 512, 2048):
    n = mib * 2**20 // 2
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    for flush in ("write", "read"):
        ms = bench_ms(lambda: dst.copy_(src), rep=50 if mib >= 512 else 100, flush=flush)
        print(f"| {mib} MiB | {flush} | {ms * 1e3:.1f} | {2 * n / ms / 1e6:.0f} |", flush=True)
    del src, dst
