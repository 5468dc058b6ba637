"""Training-recipe quantize kernels (issue 14): time, GB/s and % of a device-to-device copy.

For bf16 x of each 2-D shape (default [8192, 8192] and [4096, 14336]) the median CUDA-event
time (benchmarks/_common.bench_ms: the L2 is flushed before each call) of

* ``nvfp4.quantize`` (the inference op; linear and swizzled scales): the comparison rows;
* ``nvfp4.train_quantize`` with ``axis=-1`` and ``axis=-2`` (columnwise): a given global
  scale, a computed one (an amax pass first), ``block_2d``, stochastic rounding, the
  16x16 random Hadamard transform, swizzled scales; and the columnwise operand of the
  NVFP4 recipe's wgrad (Hadamard + stochastic rounding, swizzled, computed scale);
* ``nvfp4.train_quantize_rowcol`` (both operands from one read): given and computed global
  scales, ``block_2d``, stochastic rounding, the columnwise Hadamard transform, and the
  recipe's dy (stochastic, columnwise Hadamard, swizzled, computed scales);

and for one MoE case (default T=16384 tokens, K=4096, 64 experts with uneven group sizes,
some empty; ``--moe TxKxG``) ``nvfp4.grouped_quantize`` (given / computed per-group scales,
linear / swizzled) and ``nvfp4.mx_grouped_quantize`` (MXFP8 and MXFP4), beside
``nvfp4.quantize`` and ``nvfp4.mx_quantize`` of the same tensor.

Bytes = each input tensor read once + each output tensor written once, counted from the
tensors themselves (the swizzled scales with their padding; a computed global scale's
amax pass, which reads x a second time, is not counted: those rows give the effective
rate). GB/s and % of the copy bandwidth measured in the same run. The column "vs" gives the
time as a multiple of the row the option is compared with (e.g. 2-D blocks vs 1-D; the
rowcol op vs the two single-axis calls together) and "target" the issue-14 target of the
row (on 8192 x 8192 in the issue; checked here on every shape) and whether it is met.

Markdown on stdout (device line, torch version, the command first); ``--out FILE`` writes
it too. Under a minute on an H100 / H200.

    python benchmarks/bench_training.py [--shapes 8192x8192,4096x14336] [--moe 16384x4096x64]
                                        [--rep 200] [--out RESULTS_training.md]

Needs a CUDA GPU (exits with status 2 and a message otherwise).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch

from _common import bench_ms, copy_gbps, copy_us, device_line, emit, nbytes, table

import nvfp4_ops
from nvfp4_ops import _library

OPS = torch.ops.nvfp4
SHAPES = "8192x8192,4096x14336"
MOE = "16384x4096x64"
COLUMNS = ["shape", "op", "time (ms)", "GB/s", "% copy", "% same-bytes copy", "vs", "target"]
TRAIN_OPS = ("quantize", "mx_quantize", "train_quantize", "train_quantize_rowcol",
             "grouped_quantize", "mx_grouped_quantize")


@dataclass
class Case:
    """One timed call: ``call()`` reads ``inputs`` and returns the tensors it writes.

    ``vs``: the labels of the rows (same shape) whose summed time this one is divided by;
    ``min_copy``: the issue's target as a minimum % of the copy; ``max_vs``: as a maximum of
    the "vs" ratio; ``vs_name``: a shorter name of ``vs`` for the table.
    """

    label: str
    call: Callable[[], object]
    inputs: Tuple[torch.Tensor, ...]
    vs: Sequence[str] = ()
    min_copy: Optional[float] = None
    max_vs: Optional[float] = None
    vs_name: Optional[str] = None  # how the "vs" column names ``vs`` (default: the labels)


def _rng(device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seed, offset, Hadamard signs) on ``device``: int64 [1], int64 [1], fp32 [16]."""
    seed = torch.tensor([0x5EED], dtype=torch.int64, device=device)
    offset = torch.zeros(1, dtype=torch.int64, device=device)
    return seed, offset, nvfp4_ops.random_hadamard_signs(seed)


def train_cases(x: torch.Tensor) -> list:
    """The cases of a 2-D bf16 ``x [M, K]`` (quantize, train_quantize, rowcol)."""
    seed, offset, signs = _rng(x.device)
    gs = OPS.global_scale(x)
    cases = [
        Case("quantize (inference), linear", lambda: OPS.quantize(x, gs, False), (x, gs)),
        Case("quantize (inference), swizzled", lambda: OPS.quantize(x, gs, True), (x, gs)),
    ]

    def tq(axis, given=True, signs_=None, rounding="nearest", **kw):
        """A train_quantize case: the given global scale is the one the op computes for the
        same operand (after the transform), so the numbers are those of a real call."""
        g = OPS.train_quantize(x, None, axis=axis, hadamard_signs=signs_)[2] if given else None
        s, o = (seed, offset) if rounding == "stochastic" else (None, None)
        return (lambda: OPS.train_quantize(x, g, axis=axis, rounding=rounding, seed=s, offset=o,
                                           hadamard_signs=signs_, **kw)), (x, g, signs_, s, o)

    sr = "stochastic"
    for axis in (-1, -2):
        name = f"train_quantize axis {axis}"
        base = f"{name}, given gs"
        cases += [
            Case(base, *tq(axis), min_copy=80.0 if axis == -2 else None),
            Case(f"{name}, computed gs", *tq(axis, given=False), (base,)),
            Case(f"{name}, block_2d", *tq(axis, block_2d=True), (base,), max_vs=1.1),
            Case(f"{name}, stochastic", *tq(axis, rounding=sr), (base,), max_vs=1.1),
            Case(f"{name}, Hadamard", *tq(axis, signs_=signs), (base,), min_copy=75.0),
            Case(f"{name}, swizzled", *tq(axis, swizzle=True), (base,)),
        ]
    cases.append(Case("train_quantize axis -2, Hadamard + stochastic, swizzled, computed gs "
                      "(recipe: wgrad dy^T)",
                      *tq(-2, given=False, signs_=signs, rounding=sr, swizzle=True), (base,)))

    def rc(given=True, signs_=None, rounding="nearest", **kw):
        """A train_quantize_rowcol case (given scales: the ones it computes)."""
        g = (OPS.train_quantize_rowcol(x, None, None, colwise_hadamard_signs=signs_)
             if given else (None,) * 6)
        s, o = (seed, offset) if rounding == "stochastic" else (None, None)
        return (lambda: OPS.train_quantize_rowcol(
            x, g[2], g[5], rounding=rounding, seed=s, offset=o, colwise_hadamard_signs=signs_,
            **kw)), (x, g[2], g[5], signs_, s, o)

    name = "train_quantize_rowcol"
    base = f"{name}, given gs"
    cases += [
        Case(base, *rc(), ("train_quantize axis -1, given gs", "train_quantize axis -2, given gs"),
             min_copy=85.0, vs_name="axis -1 + axis -2 calls (given gs)"),
        Case(f"{name}, computed gs", *rc(given=False), (base,)),
        Case(f"{name}, block_2d", *rc(block_2d=True), (base,), max_vs=1.1),
        Case(f"{name}, stochastic", *rc(rounding=sr), (base,), max_vs=1.1),
        Case(f"{name}, colwise Hadamard", *rc(signs_=signs), (base,)),
        Case(f"{name}, stochastic + colwise Hadamard, swizzled, computed gs (recipe: dy)",
             *rc(given=False, signs_=signs, rounding=sr, swizzle=True), (base,)),
    ]
    return cases


def moe_offsets(tokens: int, experts: int, device) -> torch.Tensor:
    """int32 end rows of ``experts`` uneven groups covering ``tokens`` rows: sizes drawn
    from a skewed distribution (a fixed seed), every 16th group empty."""
    g = torch.Generator().manual_seed(0)
    w = torch.rand(experts, generator=g, dtype=torch.float64) ** 3 + 0.01
    w[::16] = 0.0
    sizes = torch.floor(w / w.sum() * tokens).to(torch.int64)
    sizes[int(torch.argmax(sizes))] += tokens - int(sizes.sum())
    return torch.cumsum(sizes, 0).to(torch.int32).to(device)


def moe_cases(x: torch.Tensor, offs: torch.Tensor) -> list:
    """The cases of MoE tokens ``x [T, K]`` sorted by expert, group ends ``offs``."""
    gs = OPS.global_scale(x)
    ggs = OPS.grouped_quantize(x, offs, None)[2]
    quant, mxq = "quantize (inference), linear, one gs", "mx_quantize e4m3 rceil, linear"
    given = "grouped_quantize, given gs, linear"
    cases = [
        Case(quant, lambda: OPS.quantize(x, gs, False), (x, gs)),
        Case(mxq, lambda: OPS.mx_quantize(x, "e4m3", "rceil", False, -1, "amax"), (x,)),
        Case(given, lambda: OPS.grouped_quantize(x, offs, ggs, False), (x, offs, ggs), (quant,),
             80.0),
        Case("grouped_quantize, computed gs, linear",
             lambda: OPS.grouped_quantize(x, offs, None, False), (x, offs), (given,)),
        Case("grouped_quantize, given gs, swizzled",
             lambda: OPS.grouped_quantize(x, offs, ggs, True), (x, offs, ggs), (given,), 80.0),
        Case("grouped_quantize, computed gs, swizzled",
             lambda: OPS.grouped_quantize(x, offs, None, True), (x, offs),
             ("grouped_quantize, given gs, swizzled",)),
    ]
    for elem, swz in (("e4m3", False), ("e4m3", True), ("e2m1", True)):
        label = f"mx_grouped_quantize {elem} rceil, {'swizzled' if swz else 'linear'}"
        cases.append(Case(label, lambda e=elem, s=swz: OPS.mx_grouped_quantize(
            x, offs, e, "rceil", s), (x, offs), (mxq,) if elem == "e4m3" else (),
            80.0 if elem == "e4m3" else None))
    return cases


def _target(case: Case, pct: float, ratio: Optional[float]) -> str:
    """The issue's target of the row and whether it is met ("" when it has none)."""
    if case.min_copy is not None:
        return f">= {case.min_copy:.0f} % copy: {'yes' if pct >= case.min_copy else 'NO'}"
    if case.max_vs is not None and ratio is not None:
        return f"<= {case.max_vs}x: {'yes' if ratio <= case.max_vs else 'NO'}"
    return ""


def run_cases(shape: str, cases: list, copy: float, rep: int) -> list:
    """Time each case; one table row (a dict) per case, printed as it comes."""
    rows, ms_of = [], {}
    for c in cases:
        out = c.call()
        moved = nbytes(*c.inputs) + nbytes(out)
        ms = bench_ms(c.call, rep=rep)
        ms_of[c.label] = ms
        gbps = moved / ms / 1e6
        pct = 100 * gbps / copy
        ratio = ms / sum(ms_of[v] for v in c.vs) if c.vs else None
        cu = copy_us(moved // 2)  # a copy moving the same bytes, same flush
        row = {"shape": shape, "op": c.label, "time (ms)": f"{ms:.4f}", "GB/s": f"{gbps:.0f}",
               "% copy": f"{pct:.1f}", "% same-bytes copy": f"{100 * cu / (ms * 1e3):.0f}",
               "vs": "" if ratio is None else f"{ratio:.2f}x {c.vs_name or ' + '.join(c.vs)}",
               "target": _target(c, pct, ratio)}
        rows.append(row)
        print(" | ".join(row.values()), flush=True)
    return rows


def _dims(text: str, n: int, what: str, ap: argparse.ArgumentParser) -> Tuple[int, ...]:
    """``"AxB..."`` -> ``n`` ints (exits through ``ap.error``, status 2, otherwise)."""
    try:
        dims = tuple(int(v) for v in text.split("x"))
    except ValueError:
        dims = ()
    if len(dims) != n or min(dims) <= 0:
        ap.error(f"{what}: expected {n} positive integers joined by 'x', got {text!r}")
    return dims


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="M x K bf16 shapes, comma-separated")
    ap.add_argument("--moe", default=MOE, help="tokens x K x experts of the grouped case "
                    "('none' skips it)")
    ap.add_argument("--rep", type=int, default=200, help="timed calls per row (median)")
    ap.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = ap.parse_args(argv)
    shapes = [_dims(s, 2, "--shapes", ap) for s in args.shapes.split(",")]
    moe = None if args.moe == "none" else _dims(args.moe, 3, "--moe", ap)
    if not torch.cuda.is_available():
        print("bench_training.py needs a CUDA GPU (the training quantize kernels and the "
              "CUDA-event timings); none is visible here", file=sys.stderr)
        return 2

    t_start = time.time()
    torch.manual_seed(0)
    copy = copy_gbps()
    lines = [device_line(),
             "command: python benchmarks/bench_training.py " + " ".join(
                 sys.argv[1:] if argv is None else argv),
             "implementations: " + ", ".join(
                 f"{op}={_library.op_implementation(op, 'cuda')[0]}" for op in TRAIN_OPS),
             f"device-to-device copy: {copy:.0f} GB/s (read + write, 2 GiB moved)", ""]
    print("\n".join(lines), flush=True)
    rows = []
    for m, k in shapes:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16) * 3
        rows += run_cases(f"[{m}, {k}]", train_cases(x), copy, args.rep)
        del x
        torch.cuda.empty_cache()
    if moe is not None:
        t, k, experts = moe
        x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16) * 3
        offs = moe_offsets(t, experts, "cuda")
        sizes = torch.diff(offs.cpu(), prepend=torch.zeros(1, dtype=torch.int32))
        lines.append(f"MoE case: T={t} tokens, K={k}, {experts} experts, group sizes "
                     f"{int(sizes.min())}..{int(sizes.max())} ({int((sizes == 0).sum())} empty), "
                     "int32 offsets on the device")
        rows += run_cases(f"MoE [{t}, {k}] x {experts}", moe_cases(x, offs), copy, args.rep)
    lines += ["", table(rows, COLUMNS), "",
              "GB/s: (bytes read + bytes written) / time, each input tensor read once and each "
              "output tensor written once (swizzled scales with their padding). 'computed gs' "
              "rows run an amax pass over x first, not counted in the bytes. '% same-bytes copy': "
              "the time of a copy moving the same bytes (L2 flushed the same way) / ours. "
              "'vs': time as a "
              "multiple of the named row(s) of the same shape (summed). 'target': issue 14. "
              f"Total run time {time.time() - t_start:.0f} s."]
    emit(lines, args.out, blank_before=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
