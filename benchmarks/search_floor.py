"""How close the candidates of the exact NVFP4 scale search come to the minimum (CPU, reference).

For random blocks this evaluates the reference objective (docs/spec.md section 5) of all 126
E4M3 scale bytes and reports, per block: how many bytes lie within a relative margin delta of the
minimum (a search that certifies candidates with bounds of relative precision delta must
evaluate those more precisely: exact evaluations, or ties), how far the winner is from the
naive (amax) byte, and how often the naive byte wins. The numbers feed the cost argument of
docs/search.md ("What an exact search must evaluate").

    python benchmarks/search_floor.py [--blocks 32768] [--method mse|hessian] [--out FILE]
"""

from __future__ import annotations

import argparse

import torch

import nvfp4_ops.reference as ref

DELTAS = (0.0, 2.0 ** -12, 2.0 ** -8, 2.0 ** -4)


def blocks(kind: str, n_blocks: int, seed: int) -> torch.Tensor:
    """``[n_blocks / 16, 256]`` bf16: 16 blocks of 16 per row."""
    g = torch.Generator().manual_seed(seed)
    rows = n_blocks // 16
    x = torch.randn(rows, 256, generator=g)
    if kind == "heavy":  # per-element log-normal magnitudes: outliers inside blocks
        x = x * torch.exp(0.75 * torch.randn(rows, 256, generator=g))
    return x.to(torch.bfloat16)


def stats(x: torch.Tensor, method: str) -> dict:
    gs = ref.global_scale(x)
    hessian = None
    if method == "hessian":
        g = torch.Generator().manual_seed(1)
        X = torch.randn(512, x.shape[-1], generator=g).to(torch.bfloat16)
        hessian = ref.hessian_blocks(X)
    _, naive = ref.quantize(x, gs)  # the amax byte of every block
    naive = naive.view(torch.uint8).long()
    objs = torch.stack([ref.nvfp4_block_objective(
        x, torch.full_like(naive, c, dtype=torch.uint8), gs, method, hessian)
        for c in range(1, 127)])  # [126, rows, blocks]
    objs = torch.where(torch.isnan(objs), torch.full_like(objs, float("inf")), objs)
    best, arg = objs.min(0)
    winner = arg + 1
    out = {"blocks": naive.numel()}
    for d in DELTAS:
        near = (objs <= best * (1 + d)).sum(0) - 1  # the other bytes within delta
        out[f"near {d:g}"] = near.double().mean().item()
        out[f"near {d:g} max"] = int(near.max())
    dist = (winner - naive).abs()
    out["naive wins"] = (objs.gather(0, (naive - 1).unsqueeze(0)).squeeze(0) <= best).double().mean().item()
    out["|winner - naive| mean"] = dist.double().mean().item()
    out["|winner - naive| <= 2"] = (dist <= 2).double().mean().item()
    out["|winner - naive| max"] = int(dist.max())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=32768)
    ap.add_argument("--method", default="mse", choices=("mse", "hessian"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = [f"command: python benchmarks/search_floor.py --blocks {args.blocks} "
             f"--method {args.method} (CPU, nvfp4_ops.reference, torch {torch.__version__})", ""]
    cols = ["data", "blocks", "naive wins"] + [f"near {d:g}" for d in DELTAS] + \
           ["max near 2^-12", "|winner - naive| mean", "|winner - naive| <= 2", "max |winner - naive|"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for kind in ("gaussian", "heavy"):
        s = stats(blocks(kind, args.blocks, seed=0), args.method)
        row = [kind, str(s["blocks"]), f"{100 * s['naive wins']:.1f} %"] + \
              [f"{s[f'near {d:g}']:.3f}" for d in DELTAS] + \
              [str(s[f"near {2.0 ** -12:g} max"]), f"{s['|winner - naive| mean']:.2f}",
               f"{100 * s['|winner - naive| <= 2']:.1f} %", str(s["|winner - naive| max"])]
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
