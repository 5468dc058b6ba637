"""Decode throughput of a decoder-shaped stack of quantized linear layers under CUDA graphs.

The stack: ``--blocks`` (8) blocks of q/k/v/o projections (hidden ``--hidden`` 4096; k and v
``--kv-dim`` 1024 wide, Llama-3-8B's grouped-query shape) and a gated MLP gate/up/down
(intermediate ``--intermediate`` 14336), random weights (``nn.Linear``'s default init, bf16,
no bias), no attention: each block computes ``x = rms(h)`` (a weightless RMS norm),
``q, k, v = q_proj(x), k_proj(x), v_proj(x)`` (k and v are computed and dropped, as a step
would write them to its KV cache), ``h = h + o_proj(q)``, then
``h = h + down_proj(silu(gate_proj(rms(h))) * up_proj(rms(h)))``. One decode step is one
forward of ``[batch, hidden]`` bf16 tokens.

Variants (``--variants``): ``bf16`` (``nn.Linear``), and per format ``nvfp4`` / ``mxfp4`` /
``mxfp8`` (:func:`nvfp4_ops.nn.quantize_linears`, weight-only: W4A16 / W4A16 / W8A16) with
the ``fused`` backend (the fused kernel up to ``fused_max_m(format)`` rows, so at batch 1 and
16) or the ``dequant`` backend (dequantize + F.linear: the path without the fused kernel).
A variant whose backend cannot run here is listed with the reason.

Timing: one step captured in a ``torch.cuda.CUDAGraph`` (after a warm-up on a side stream)
and replayed ``--iters`` times between two CUDA events, ``--rounds`` times; the median per
step. Reported: step time, tokens/s (batch / step time), the speed-up over bf16, the weight
bytes of the stack read per step as GB/s and as a percentage of a device copy, the weight
GiB, and the relative Frobenius difference of one step's output from the bf16 stack's (a
sanity check of the quantized model: about 0.1 for 4-bit weights, 0.02 for MXFP8).

    python benchmarks/bench_decode.py [--batches 1,16] [--variants bf16,nvfp4-fused,...]
        [--blocks 8] [--hidden 4096] [--kv-dim 1024] [--intermediate 14336]
        [--iters 50] [--rounds 5] [--out FILE]

Needs a CUDA GPU (exits with status 2 and a message otherwise); about 3.5 GB of bf16
weights plus one quantized copy at a time with the defaults.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from _common import copy_gbps, device_line, emit, table

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops.nn import quantize_linears, select_linear_backend

DEVICE = "cuda"  # the device of the stack (a CPU smoke run of the model code sets "cpu")
VARIANTS = ("bf16", "nvfp4-fused", "mxfp4-fused", "mxfp8-fused", "nvfp4-dequant",
            "mxfp4-dequant", "mxfp8-dequant")
COLUMNS = ["variant", "batch", "step ms", "tokens/s", "vs bf16", "weight GB/s (% copy)",
           "weights GiB", "rel. diff vs bf16"]


def _rms(h: torch.Tensor) -> torch.Tensor:
    return h * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(h.dtype)


class Block(nn.Module):
    """q/k/v/o and gate/up/down of one decoder block, without attention (see the module
    docstring)."""

    def __init__(self, hidden: int, kv_dim: int, intermediate: int, device, dtype) -> None:
        super().__init__()

        def lin(k: int, n: int) -> nn.Linear:
            return nn.Linear(k, n, bias=False, device=device, dtype=dtype)

        self.q_proj, self.k_proj, self.v_proj = (lin(hidden, hidden), lin(hidden, kv_dim),
                                                 lin(hidden, kv_dim))
        self.o_proj = lin(hidden, hidden)
        self.gate_proj, self.up_proj = lin(hidden, intermediate), lin(hidden, intermediate)
        self.down_proj = lin(intermediate, hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = _rms(h)
        q = self.q_proj(x)
        self.k_proj(x)  # the step's k and v: computed, then (no attention here) dropped
        self.v_proj(x)
        h = h + self.o_proj(q)
        x = _rms(h)
        return h + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def build_stack(blocks: int, hidden: int, kv_dim: int, intermediate: int,
                seed: int = 0) -> nn.Sequential:
    """The bf16 stack on :data:`DEVICE`, random weights (seeded)."""
    torch.manual_seed(seed)
    return nn.Sequential(*(Block(hidden, kv_dim, intermediate, DEVICE, torch.bfloat16)
                           for _ in range(blocks))).eval()


def parse_variant(name: str) -> Tuple[Optional[str], Optional[str]]:
    """``"bf16"`` -> (None, None); ``"nvfp4-fused"`` -> ("nvfp4", "fused")."""
    if name == "bf16":
        return None, None
    fmt, _, backend = name.partition("-")
    return fmt, backend


def quantized_stack(stack: nn.Module, fmt: str, backend: str) -> Tuple[Optional[nn.Module], str]:
    """A copy of ``stack`` with every linear quantized to ``fmt`` (weight-only) on
    ``backend``; ``(None, reason)`` when that backend cannot run on :data:`DEVICE`."""
    try:
        select_linear_backend(fmt.upper(), DEVICE, backend=backend, weight_only=True)
    except RuntimeError as e:
        return None, str(e)
    q = copy.deepcopy(stack)
    quantize_linears(q, fmt, backend=backend)
    return q, ""


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the stored weights (the state dict: elements, block and global scales)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def step_ms(model: nn.Module, x: torch.Tensor, iters: int, rounds: int) -> Tuple[float, torch.Tensor]:
    """Median ms of one step replayed from a CUDA graph, and the step's output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad():
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model(x)
    for _ in range(5):
        graph.replay()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times), out.clone()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _csv_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16", help="tokens per step, comma-separated")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, of {','.join(VARIANTS)}")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--kv-dim", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--iters", type=int, default=50, help="graph replays per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        ap.error(f"--variants must name some of {', '.join(VARIANTS)}, got {args.variants!r}")
    if not torch.cuda.is_available():
        print("bench_decode.py needs a CUDA GPU (CUDA-graph replay of a decode step); none is "
              "visible here", file=sys.stderr)
        return 2
    batches = _csv_ints(args.batches)
    copy_bw = copy_gbps()
    lines = [
        f"{device_line()}; device copy {copy_bw:.0f} GB/s (read + write)",
        "command: python benchmarks/bench_decode.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        f"stack: {args.blocks} blocks x (q {args.hidden}x{args.hidden}, k/v "
        f"{args.kv_dim}x{args.hidden}, o {args.hidden}x{args.hidden}, gate/up "
        f"{args.intermediate}x{args.hidden}, down {args.hidden}x{args.intermediate}), bf16 "
        "activations, no attention; one step per CUDA-graph replay",
    ]
    print("\n".join(lines), flush=True)
    stack = build_stack(args.blocks, args.hidden, args.kv_dim, args.intermediate)
    xs = {b: torch.randn(b, args.hidden, device=DEVICE, dtype=torch.bfloat16,
                         generator=torch.Generator(DEVICE).manual_seed(b)) for b in batches}
    rows, base_ms, base_out = [], {}, {}
    notes = []
    for v in ["bf16"] + [v for v in variants if v != "bf16"]:
        fmt, backend = parse_variant(v)
        if fmt is None:
            model, why = stack, ""
        else:
            model, why = quantized_stack(stack, fmt, backend)
        if model is None:
            notes.append(f"- {v}: not run: {why}")
            print(notes[-1], flush=True)
            continue
        wbytes = weight_bytes(model)
        for b in batches:
            ms, out = step_ms(model, xs[b], args.iters, args.rounds)
            if fmt is None:
                base_ms[b], base_out[b] = ms, out
            if v not in variants:  # bf16 timed as the baseline only
                continue
            g = wbytes / ms / 1e6
            row = {"variant": v, "batch": b, "step ms": f"{ms:.3f}",
                   "tokens/s": f"{b * 1e3 / ms:.0f}", "vs bf16": f"{base_ms[b] / ms:.2f}x",
                   "weight GB/s (% copy)": f"{g:.0f} ({100 * g / copy_bw:.0f} %)",
                   "weights GiB": f"{wbytes / 2**30:.2f}",
                   "rel. diff vs bf16": "" if fmt is None else f"{_rel(out, base_out[b]):.3f}"}
            rows.append(row)
            print(" | ".join(str(row[c]) for c in COLUMNS), flush=True)
        if model is not stack:
            del model
            torch.cuda.empty_cache()
    report = lines + ["", table(rows, COLUMNS)]
    if notes:
        report += ["", "Variants not run:", *notes]
    emit(report, args.out, blank_before=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
