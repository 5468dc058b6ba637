"""What the scale search buys: quantization error of amax / mse / hessian scales.

For synthetic weights W [N, K] (Gaussian and Student-t with 3 degrees of freedom) and
correlated synthetic activations X [T, K], prints per scale method

* the relative weight error      ||W - Wq||_F / ||W||_F,
* the relative output error      ||X W^T - X Wq^T||_F / ||X W^T||_F,

with Wq = dequantize(quantize(W)) (NVFP4 with the tensor's global scale; "hessian" uses
H = hessian_blocks(X)), and the same two for MXFP4 (amax = rceil, and mse). "mse"
minimises the first per block, "hessian" the second (through X's second moments). Runs on
the CPU (the pure-PyTorch reference, the default: under a minute at 128 x 1024 on two
cores) or on a GPU (``--device cuda``: the kernels).

    python benchmarks/quality.py [--device cpu|cuda] [--n 128] [--k 1024] [--t 2048]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nvfp4_ops  # noqa: E402,F401  (registers the ops)
from nvfp4_ops import reference as ref  # noqa: E402

OPS = torch.ops.nvfp4


def activations(t: int, k: int, g: torch.Generator) -> torch.Tensor:
    """Correlated channels: neighbour mixing, a low-rank shared part and a few large channels."""
    z = torch.randn(t, k, generator=g)
    low = torch.randn(t, 16, generator=g) @ torch.randn(16, k, generator=g)
    x = z + 0.6 * z.roll(1, dims=1) + 0.2 * low
    x[:, torch.randperm(k, generator=g)[: max(1, k // 128)]] *= 8.0
    return x


def weights(kind: str, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(n, k, generator=g) * 0.02
    z = torch.randn(n, k, generator=g)
    chi2 = torch.distributions.Chi2(torch.tensor(3.0)).sample((n, k))
    return z / (chi2 / 3.0).sqrt() * 0.02  # Student-t, 3 degrees of freedom


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).double().norm() / b.double().norm()).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--t", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    dev = torch.device(args.device)
    start = time.time()
    g = torch.Generator().manual_seed(args.seed)
    X = activations(args.t, args.k, g).to(dev)
    H = ref.hessian_blocks(X)
    rows = []
    for kind in ("gaussian", "student_t"):
        W = weights(kind, args.n, args.k, g).to(dev)
        Y = X @ W.T
        gs = OPS.global_scale(W)
        for method in ("amax", "mse", "hessian"):
            packed, scales = OPS.quantize(W, gs, False, method, H if method == "hessian" else None)
            Wq = OPS.dequantize(packed, scales, gs, torch.float32, False)
            rows.append(("NVFP4", kind, method, rel(Wq, W), rel(X @ Wq.T, Y)))
        for method, rnd in (("amax", "rceil"), ("mse", "rceil")):
            data, sc = OPS.mx_quantize(W, "e2m1", rnd, False, -1, method)
            Wq = OPS.mx_dequantize(data, sc, "e2m1", torch.float32, False)
            rows.append(("MXFP4", kind, method, rel(Wq, W), rel(X @ Wq.T, Y)))
    print(f"device: {dev}; W [{args.n}, {args.k}], X [{args.t}, {args.k}] (correlated)")
    print()
    print("| format | weights | scales | rel. weight error | rel. output error |")
    print("|---|---|---|---|---|")
    for fmt, kind, method, ew, eo in rows:
        print(f"| {fmt} | {kind} | {method} | {ew:.4f} | {eo:.4f} |")
    print()
    print(f"({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
