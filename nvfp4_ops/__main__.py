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


def info(args: argparse.Namespace) -> int:
    import platform

    import torch

    import nvfp4_ops
    from nvfp4_ops import _library as backends

    b = backends.build_info()
    print(f"nvfp4_ops {nvfp4_ops.__version__}  (python {platform.python_version()})")
    print(f"torch {torch.__version__}  CUDA runtime {torch.version.cuda or 'none (CPU build)'}")
    if b["cuda"] is None:
        print("build: unknown (no _build_info.py; built outside setup.py)")
    elif b["cuda"]:
        print(f"build: CUDA kernels for {', '.join(b['archs'])} "
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
    width = max(len(op) for op in backends.OPS)
    print()
    print(f"{'op':<{width}}  " + "  ".join(f"{d:<11}" for d in devices) + "  why (cuda)")
    for op in backends.OPS:
        row = [backends.op_implementation(op, d) for d in devices]
        print(f"{op:<{width}}  " + "  ".join(f"{name:<11}" for name, _ in row) + f"  {row[-1][1]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nvfp4-ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="environment, build and which backend serves each op")
    p.set_defaults(func=info)
    from .quantize_checkpoint import add_parsers

    add_parsers(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
