"""Forward time of NVFP4Linear / MXFP8Linear / MXFP4Linear against a bf16 nn.Linear, per backend.

For each weight shape [N x K] (out x in) and each M (rows of the activation), the median
CUDA-event time of one forward (benchmarks/_common.bench_ms: L2 flushed before each call)
of:

* ``bf16``: ``nn.Linear`` in bf16 (cuBLAS), the baseline;
* ``NVFP4 W4A16`` / ``W4A4`` (dynamic activation global scale), ``MXFP8 W8A16`` /
  ``W8A8`` and ``MXFP4 W4A16``, each with every backend that can run here (``scaled_mm``
  only on sm_100+, and only for W4A4 / W8A8; ``fused`` only for the weight-only schemes on
  a build with the format's kernel, and it runs dequantize + F.linear above the format's
  ``FUSED_MAX_M``; ``reference`` only with ``--reference``: the weight dequantized to fp32
  and an fp32 matmul, slower, and timed with fewer repetitions).

The automatic choice (the "default backend" lines) never picks ``scaled_mm`` until it has
run on Blackwell; it is timed here wherever it can run, being asked for by name.

Also reported: the ratio to bf16 and the relative Frobenius error of the output against the
reference backend (the target: < 1e-2 for every backend, and at M = 8192 the ``dequant``
backend's NVFP4 W4A16 time at most 1.3x bf16's).

Markdown on stdout (device line first); ``--out FILE`` writes it too. Takes under
3 minutes on an H100 with the defaults.

    python benchmarks/bench_linear.py [--shapes 8192x8192,4096x14336] [--m 1,16,128,1024,8192]
                                      [--reference] [--out RESULTS_linear.md]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from _common import bench_ms, device_line, table

import nvfp4_ops  # noqa: F401  (registers the ops)
from nvfp4_ops.nn import (
    MXFP4Linear,
    MXFP8Linear,
    NVFP4Linear,
    select_mxfp4_linear_backend,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)

VARIANTS = [
    # (label, class, act_quant, select)
    ("NVFP4 W4A16", NVFP4Linear, None, select_nvfp4_linear_backend),
    ("NVFP4 W4A4", NVFP4Linear, "dynamic", select_nvfp4_linear_backend),
    ("MXFP8 W8A16", MXFP8Linear, None, select_mxfp8_linear_backend),
    ("MXFP8 W8A8", MXFP8Linear, "dynamic", select_mxfp8_linear_backend),
    ("MXFP4 W4A16", MXFP4Linear, None, select_mxfp4_linear_backend),
]


def _backends(select, weight_only: bool, with_reference: bool) -> list[str]:
    out = []
    for b in ("scaled_mm", "fused", "dequant") + (("reference",) if with_reference else ()):
        try:
            select("cuda", backend=b, weight_only=weight_only)
            out.append(b)
        except RuntimeError:
            pass
    return out


def _same_weight(base, backend: str):
    """A layer over ``base``'s quantized tensors (no copy) with another backend."""
    if isinstance(base, NVFP4Linear):
        return NVFP4Linear.from_quantized(base.weight_packed, base.weight_scale,
                                          base.weight_global_scale, bias=base.bias,
                                          act_quant=base.act_quant, backend=backend)
    return type(base).from_quantized(base.weight_data, base.weight_scale, bias=base.bias,
                                     act_quant=base.act_quant, rounding=base.rounding,
                                     backend=backend)


def _time(fn) -> float:
    """bench_ms with the repetitions scaled to the op (slow reference paths: few reps)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one_ms = (time.perf_counter() - t0) * 1e3
    if one_ms > 5:
        return bench_ms(fn, warmup=2, rep=max(3, min(20, int(400 / one_ms))))
    return bench_ms(fn, warmup=10, rep=100)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="8192x8192,4096x14336",
                    help="comma-separated NxK weight shapes (out x in)")
    ap.add_argument("--m", default="1,16,128,1024,8192", help="comma-separated M values")
    ap.add_argument("--reference", action="store_true",
                    help="also time the reference backend (fp32 dequantize and matmul; slow)")
    ap.add_argument("--out", help="also write the Markdown here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_linear.py needs a CUDA GPU (CUDA-event timings of the layers' GPU "
              "backends); none is visible here", file=sys.stderr)
        return 2

    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    ms = [int(v) for v in args.m.split(",")]
    dev = torch.device("cuda")
    rows = []
    notes = []
    for label, _, act, select in VARIANTS:
        name, reasons = select(dev, weight_only=act is None)
        why = "; ".join(f"{b}: {r}" for b, r in reasons.items())
        notes.append(f"- {label}: default backend `{name}`" + (f" ({why})" if why else ""))

    torch.manual_seed(0)
    for n, k in shapes:
        lin = torch.nn.Linear(k, n, bias=False, device=dev, dtype=torch.bfloat16)
        layers = {}
        for label, cls, act, select in VARIANTS:
            # quantize once; the other backends' layers share the same weight tensors
            base = cls.from_float(lin, act_quant=act, backend="reference")
            layers[(label, "reference-check")] = base
            for b in _backends(select, act is None, args.reference):
                layers[(label, b)] = _same_weight(base, b)
        for m in ms:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            with torch.inference_mode():
                t_bf16 = _time(lambda: lin(x))
                rows.append({"N x K": f"{n} x {k}", "M": m, "layer": "bf16 nn.Linear",
                             "backend": "cuBLAS", "ms": f"{t_bf16:.4f}", "x bf16": "1.00",
                             "TFLOP/s": f"{2 * m * n * k / t_bf16 / 1e9:.1f}",
                             "rel err vs reference": ""})
                for label, cls, act, _ in VARIANTS:
                    want = layers[(label, "reference-check")](x)
                    for (lab, b), layer in layers.items():
                        if lab != label or b == "reference-check":
                            continue
                        y = layer(x)
                        err = _rel(y, want)
                        nan = bool(torch.isnan(y).any())
                        t = _time(lambda: layer(x))
                        rows.append({
                            "N x K": f"{n} x {k}", "M": m, "layer": label, "backend": b,
                            "ms": f"{t:.4f}", "x bf16": f"{t / t_bf16:.2f}",
                            "TFLOP/s": f"{2 * m * n * k / t / 1e9:.1f}",
                            "rel err vs reference": f"{err:.2e}" + (" NaN!" if nan else ""),
                        })
                del x
        del layers, lin
        torch.cuda.empty_cache()

    cols = ["N x K", "M", "layer", "backend", "ms", "x bf16", "TFLOP/s", "rel err vs reference"]
    text = "\n".join([
        device_line(),
        "",
        "Forward time of one linear layer (median of CUDA-event timings, L2 flushed), "
        "bias-free, bf16 activations. `x bf16` = time / bf16 nn.Linear time. W4A4 / W8A8 "
        "include quantizing the activation (dynamic scales).",
        "",
        *notes,
        "",
        table(rows, cols),
        "",
    ])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
