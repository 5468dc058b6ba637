"""``nvfp4-ops dequantize``: a float checkpoint back from a quantized one (any layout
this tool writes, read from its ``quantization_config``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import Tensor

from .common import CliError, pick_device
from .discover import discover
from .experts import from_nk, is_k_first
from .hf_config import detect_layout
from .io import AtomicOutput, ShardWriter, atomic_output, copy_side_files


_DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def run_dequantize(args: argparse.Namespace) -> int:
    """Run ``nvfp4-ops dequantize`` with parsed ``args``; the exit status."""
    import nvfp4_ops
    from .. import formats

    from tqdm import tqdm

    folder = Path(args.input)
    if not folder.is_dir():
        raise CliError(f"{folder}: no such folder (dequantize reads a folder written by "
                       "`nvfp4-ops quantize` or another compressed-tensors / ModelOpt / gpt-oss "
                       "MXFP4 checkpoint)")
    src = discover(str(folder))
    fmt, layout = detect_layout(folder, src.config)
    device = pick_device(args.device)
    AtomicOutput.check(Path(args.out), args.force, src.files + [folder])
    by_name = {t.name: t for t in src.tensors}
    recorded: Dict[str, str] = {}
    for m in src.metadata.values():
        if "nvfp4_ops.source_dtypes" in m:
            try:
                recorded.update(json.loads(m["nvfp4_ops.source_dtypes"]))
            except ValueError:
                pass
    codes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "F64": torch.float32}
    cfg_dtype = (src.config or {}).get("torch_dtype") or (src.config or {}).get("dtype")

    def out_dtype(wname: str) -> torch.dtype:
        if args.dtype != "auto":
            return _DTYPE_NAMES[args.dtype]
        if wname in recorded:
            return codes.get(recorded[wname], torch.bfloat16)
        return _DTYPE_NAMES.get(str(cfg_dtype), torch.bfloat16)

    # groups: primary tensor name -> (output weight name, {local: tensor name})
    groups: Dict[str, Tuple[str, Dict[str, str]]] = {}
    for t in src.tensors:
        n = t.name
        if layout == "compressed-tensors" and n.endswith(".weight_packed"):
            p = n[: -len("_packed")]
            parts = {"weight_packed": n, "weight_scale": p + "_scale"}
            if fmt == "nvfp4":
                parts["weight_global_scale"] = p + "_global_scale"
            groups[n] = (p, parts)
        elif layout == "compressed-tensors" and fmt == "mxfp8" and n.endswith(".weight") \
                and t.dtype == "F8_E4M3" and n + "_scale" in by_name:
            groups[n] = (n, {"weight": n, "weight_scale": n + "_scale"})
        elif layout == "modelopt" and n.endswith(".weight") and t.dtype == "U8" \
                and n + "_scale_2" in by_name:
            groups[n] = (n, {"weight": n, "weight_scale": n + "_scale",
                             "weight_scale_2": n + "_scale_2"})
        elif layout == "gpt-oss" and n.endswith("_blocks") and n[:-7] + "_scales" in by_name:
            groups[n] = (n[:-7], {"blocks": n, "scales": n[:-7] + "_scales"})
    consumed = set()
    for prim, (_, parts) in groups.items():
        for v in parts.values():
            if v not in by_name:
                raise CliError(f"{folder}: {prim} has no companion tensor {v}")
            consumed.add(v)
        if layout == "modelopt":
            consumed.add(prim[: -len(".weight")] + ".input_scale")
        if layout == "compressed-tensors":
            consumed.add(prim.rsplit(".", 1)[0] + ".input_global_scale")
    if not groups:
        raise CliError(f"{folder}: its config says {fmt} / {layout}, but no quantized weight "
                       "tensors were found")

    out = Path(args.out)
    handles: Dict[Path, Any] = {}
    n_deq = 0
    with atomic_output(out, args.force, src.files + [folder],
                        "interrupted; removed the partial output") as atomic:
        from safetensors import safe_open

        def get(name: str) -> Tensor:
            t = by_name[name]
            if t.file not in handles:
                handles[t.file] = safe_open(str(t.file), framework="pt")
            return handles[t.file].get_tensor(name)

        writer = ShardWriter(atomic.tmp, args.max_shard_size, {"format": "pt"})
        items = [t for t in src.tensors if t.name in groups or t.name not in consumed]
        with tqdm(items, unit="tensor", desc="dequantize", disable=args.quiet,
                  file=sys.stderr, dynamic_ncols=True, mininterval=0.25) as bar:
            for t in bar:
                if t.name not in groups:
                    writer.add(t.name, get(t.name))
                    continue
                wname, parts = groups[t.name]
                d = {k: get(v).to(device) for k, v in parts.items()}
                dt = out_dtype(wname)
                if fmt == "nvfp4":
                    if layout == "modelopt":
                        packed, scales, gs, _ = formats.from_modelopt(d)
                    else:
                        packed, scales, gs, _ = formats.from_compressed_tensors(d)
                    w = nvfp4_ops.dequantize(packed, scales, gs, dt)
                elif fmt == "mxfp8":
                    w = nvfp4_ops.mx_dequantize(d["weight"], d["weight_scale"], "e4m3", dt)
                elif layout == "gpt-oss":
                    data, scales = formats.from_gpt_oss_mxfp4(d)
                    if data.dim() == 3:  # MoE experts [E, N, K/2]: back to the disk orientation
                        w = from_nk(torch.stack([
                            nvfp4_ops.mx_dequantize(data[e], scales[e], "e2m1", dt)
                            for e in range(data.shape[0])]), is_k_first(src.config))
                    else:
                        w = nvfp4_ops.mx_dequantize(data, scales, "e2m1", dt)
                else:
                    w = nvfp4_ops.mx_dequantize(d["weight_packed"], d["weight_scale"], "e2m1", dt)
                writer.add(wname, w)
                n_deq += 1
        shards = writer.close()
        config = dict(src.config or {})
        config.pop("quantization_config", None)
        orig = [m["nvfp4_ops.config_dtype"] for m in src.metadata.values()
                if "nvfp4_ops.config_dtype" in m]
        if orig:  # quantize wrote bfloat16 for compressed-tensors' decompression
            for key in ("dtype", "torch_dtype"):
                if key in config and orig[0]:
                    config[key] = orig[0]
                elif key in config:  # the source config had no dtype
                    del config[key]
        copy_side_files(folder, atomic.tmp, ["config.json", "hf_quant_config.json", "report.json"])
        (atomic.tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        atomic.commit()
    print(f"dequantized {n_deq} {fmt} weights ({layout}) -> {out} ({', '.join(shards)})")
    return 0
