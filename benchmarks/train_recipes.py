"""End-to-end comparison of the training recipes (issue 14): a small MLP trained on a
synthetic teacher task with bf16 GEMMs, the NVFP4 recipe (and its ablations) and the MXFP8
recipe, all from the same initialisation and batches.

Writes ``<out>/loss_curves.csv`` (step, one column per run: the training loss) and prints a
markdown table of the final losses (mean of the last 10% of steps) and their gap to bf16.
No plotting library is needed; the CSV is what a plot is drawn from.

Usage: ``python benchmarks/train_recipes.py [--steps 300] [--device cpu] [--seed 0] [--out DIR]``
(``--seed`` changes the batches and the student's initialisation, not the teacher: runs with
several seeds give the seed-to-seed spread that a gap between recipes must exceed.)
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nvfp4_ops.training import MXFP8Recipe, NVFP4Recipe, TrainingLinear  # noqa: E402

_OFF = dict(quantize_forward=False, quantize_dgrad=False, quantize_wgrad=False)
#: run name -> recipe (bf16: the same layers with nothing quantized: bf16 GEMMs)
RUNS = {
    "bf16": NVFP4Recipe(**_OFF),
    "nvfp4": NVFP4Recipe(),
    "nvfp4_no_sr": NVFP4Recipe(stochastic_rounding=False),
    "nvfp4_no_rht": NVFP4Recipe(hadamard=False),
    "nvfp4_no_sr_no_rht": NVFP4Recipe(stochastic_rounding=False, hadamard=False),
    "nvfp4_1d_weight": NVFP4Recipe(weight_2d=False),
    "mxfp8": MXFP8Recipe(),
}


def make_model(recipe, width: int, depth: int, d_in: int, d_out: int, seed: int):
    """An MLP of ``TrainingLinear`` layers (GELU between), initialised from ``seed``."""
    torch.manual_seed(seed)
    dims = [d_in] + [width] * depth + [d_out]
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(TrainingLinear(a, b, recipe=recipe, seed=100 + i))
        if i < len(dims) - 2:
            layers.append(torch.nn.GELU())
    return torch.nn.Sequential(*layers)


def train(recipe, args) -> list[float]:
    """Training losses of one run (same data and initialisation for every recipe)."""
    g = torch.Generator().manual_seed(args.seed)
    d_in, d_out = 128, 64
    teacher = make_model(NVFP4Recipe(**_OFF), 256, 2, d_in, d_out, seed=1)
    model = make_model(recipe, args.width, args.depth, d_in, d_out,
                       seed=2 + 1000 * args.seed).to(args.device)
    teacher = teacher.to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    losses = []
    for _ in range(args.steps):
        x = torch.randn(args.batch, d_in, generator=g).to(args.device)
        with torch.no_grad():
            y = teacher(x)
        out = model(x.to(torch.bfloat16))
        loss = F.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0,
                   help="data and student seed (0: the committed run)")
    p.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " +
                   ", ".join(RUNS))
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "train_recipes"))
    args = p.parse_args(argv)
    names = args.runs.split(",")
    curves = {}
    for name in names:
        t = time.time()
        curves[name] = train(RUNS[name], args)
        print(f"{name}: {time.time() - t:.1f} s", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "loss_curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", *names])
        for i in range(args.steps):
            w.writerow([i, *(f"{curves[n][i]:.6g}" for n in names)])
    tail = max(1, args.steps // 10)
    final = {n: sum(c[-tail:]) / tail for n, c in curves.items()}
    base = final.get("bf16")
    print(f"| run | final loss (mean of last {tail} steps) | vs bf16 |")
    print("|---|---|---|")
    for n in names:
        gap = "" if base is None else f"{(final[n] / base - 1) * 100:+.1f} %"
        print(f"| {n} | {final[n]:.5f} | {gap} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
