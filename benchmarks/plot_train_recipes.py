"""Plot the loss curves of benchmarks/train_recipes.py: ``loss_curves.csv`` -> ``loss.png``.

Two panels: every run's training loss per step (log-log), and the last part of the run
(``--tail`` steps) as a moving average over ``--smooth`` steps, where the gaps between the
recipes show; the legend gives each run's final loss against bf16's (mean of the last 10 %
of the steps, as train_recipes.py reports it). The title gives the setup (``--title``; the
default is that of the committed run, ``python benchmarks/train_recipes.py --steps 300`` on
the CPU) and the number of steps.

Needs matplotlib, a tool of this script only (not a dependency of nvfp4_ops: the library
and its tests never import it).

    python benchmarks/plot_train_recipes.py [--csv benchmarks/train_recipes/loss_curves.csv]
        [--out benchmarks/train_recipes/loss.png] [--smooth 15] [--tail 150] [--title TEXT]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_recipes")
TITLE = ("Training recipes, synthetic teacher task: MLP 128 -> 3 x 256 -> 64 (GELU), "
         "AdamW lr 2e-3, batch 128, bf16 activations, same init and batches (CPU, reference ops)")
#: line style per run (the ablations of the NVFP4 recipe dashed / dotted)
STYLES = {
    "bf16": dict(color="black", lw=1.6),
    "nvfp4": dict(color="tab:red", lw=1.6),
    "nvfp4_no_sr": dict(color="tab:orange", ls="--"),
    "nvfp4_no_rht": dict(color="tab:purple", ls="--"),
    "nvfp4_no_sr_no_rht": dict(color="tab:brown", ls=":"),
    "nvfp4_1d_weight": dict(color="tab:pink", ls="-."),
    "mxfp8": dict(color="tab:blue", lw=1.6),
}


def read_curves(path: str) -> tuple[list[int], dict[str, list[float]]]:
    """``(steps, {run: losses})`` from the CSV of train_recipes.py (a ``step`` column first)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][0] != "step" or len(rows[0]) < 2:
        raise ValueError(f"{path}: expected a header 'step,<run>,...', got {rows[:1]}")
    names = rows[0][1:]
    steps = [int(r[0]) for r in rows[1:]]
    return steps, {n: [float(r[i + 1]) for r in rows[1:]] for i, n in enumerate(names)}


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def legend_labels(curves: dict[str, list[float]]) -> dict[str, str]:
    """``run (+x.x % vs bf16)``: the final loss (mean of the last 10 % of the steps, as
    train_recipes.py reports it) against bf16's, when there is a bf16 run."""
    tail = max(1, len(next(iter(curves.values()))) // 10)
    final = {n: sum(c[-tail:]) / tail for n, c in curves.items()}
    if "bf16" not in final:
        return {n: n for n in curves}
    return {n: n if n == "bf16" else f"{n} ({(final[n] / final['bf16'] - 1) * 100:+.1f} %)"
            for n in curves}


def plot(steps, curves, out: str, title: str, smooth: int, tail: int) -> None:
    """Draw the two panels and save the PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (full, zoom) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=90)
    first = max(0, len(steps) - tail)
    labels = legend_labels(curves)
    for name, losses in curves.items():
        style = STYLES.get(name, {})
        full.plot([s + 1 for s in steps], losses, label=labels[name], lw=style.get("lw", 1.0),
                  **{k: v for k, v in style.items() if k != "lw"})
        zoom.plot(steps[first:], moving_average(losses, smooth)[first:], label=labels[name],
                  **{k: v for k, v in style.items()})
    full.set(xscale="log", yscale="log", xlabel="step (log)", ylabel="training loss (MSE)",
             title="every step")
    zoom.set(yscale="log", xlabel="step", ylabel=f"loss, mean of the last {smooth} steps",
             title=f"last {len(steps) - first} steps, smoothed")
    for ax in (full, zoom):
        ax.grid(True, which="both", alpha=0.3)
    full.legend(fontsize=8, loc="lower left", title="final loss vs bf16", title_fontsize=8)
    fig.suptitle(f"{title}; {len(steps)} steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=os.path.join(HERE, "loss_curves.csv"))
    p.add_argument("--out", default=os.path.join(HERE, "loss.png"))
    p.add_argument("--smooth", type=int, default=15, help="moving-average window (steps)")
    p.add_argument("--tail", type=int, default=150, help="steps shown in the right panel")
    p.add_argument("--title", default=TITLE)
    args = p.parse_args(argv)
    if args.smooth < 1 or args.tail < 2:
        p.error(f"--smooth must be >= 1 and --tail >= 2, got {args.smooth} and {args.tail}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_train_recipes.py needs matplotlib (a tool for this script, not a "
              "dependency of nvfp4_ops): pip install matplotlib", file=sys.stderr)
        return 2
    steps, curves = read_curves(args.csv)
    plot(steps, curves, args.out, args.title, args.smooth, args.tail)
    print(f"wrote {args.out} ({os.path.getsize(args.out) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
