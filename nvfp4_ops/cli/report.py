"""The report: ``report.json`` (per layer errors and times, totals, the end-to-end check)
and the table printed on stdout."""

from __future__ import annotations

import math
from typing import Any, Dict

import torch

from .common import fmt_bytes


def make_report(args, src, fmt, layout, method, device, backend, why, calib, layers, skipped,
                 kept, notes, e2e, shards, copied, bytes_in, bytes_out, t_loop, total_time,
                 n_tensors) -> dict:
    """The content of ``report.json``."""
    from .. import __version__

    methods = [method] if method == "amax" else ["amax", method]
    totals: Dict[str, Any] = {}
    params = sum(math.prod(l["shape"]) for l in layers)
    # over all quantized weights at once: sqrt(sum ||W - Q(W)||^2 / sum ||W||^2)
    den = sum(l["norm"] ** 2 for l in layers)
    totals["rel_err_overall"] = {
        m: math.sqrt(sum((l["rel_err"][m] * l["norm"]) ** 2 for l in layers) / den) if den else 0.0
        for m in methods}
    totals["rel_err_mean"] = {m: sum(l["rel_err"][m] for l in layers if m in l["rel_err"]) /
                              max(1, sum(1 for l in layers if m in l["rel_err"])) for m in methods}
    outs = [l for l in layers if "out_err" in l]
    if outs:
        totals["out_err_mean"] = {m: sum(l["out_err"][m] for l in outs if m in l["out_err"]) /
                                  max(1, sum(1 for l in outs if m in l["out_err"]))
                                  for m in methods}
    if method != "amax":
        totals["layers_better_than_amax"] = sum(
            1 for l in layers if l["rel_err"].get(method, 1) < l["rel_err"].get("amax", 0))
    totals.update({
        "tensors": n_tensors, "quantized": len(layers), "skipped": len(skipped),
        "kept": len(kept), "params_quantized": params,
        "bytes_in": bytes_in, "bytes_out": bytes_out,
        "time_s": {m: sum(l["time_s"].get(m, 0.0) for l in layers) for m in methods},
        "loop_time_s": t_loop, "total_time_s": total_time,
        "tensors_per_s": n_tensors / t_loop if t_loop > 0 else None,
        "bytes_per_s": bytes_in / t_loop if t_loop > 0 else None,
    })
    return {
        "tool": "nvfp4-ops quantize", "nvfp4_ops_version": __version__,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "input": src.label, "embedded_default": src.embedded, "out": str(args.out),
        "format": fmt, "layout": layout, "scales": method,
        "device": str(device), "backend": backend, "backend_reason": why,
        "calibration": (None if calib is None else
                        {"source": calib.describe, "tokens": calib.tokens}),
        "layers": layers, "skipped": skipped, "kept": kept,
        "totals": totals, "end_to_end": e2e, "notes": notes,
        "files": shards, "copied": copied,
    }


def _columns(values: Dict[str, Any], methods, has_out: bool) -> str:
    """The per-method columns of one table row: ``values["rel_err"]`` (and ``["out_err"]``)
    per method, ``-`` where a method has none."""
    keys = ("rel_err", "out_err") if has_out else ("rel_err",)
    cells = []
    for key in keys:
        for m in methods:
            v = values.get(key, {}).get(m)
            cells.append(f"  {v:>11.5f}" if v is not None else f"  {'-':>11}")
    return "".join(cells)


def print_report(r: dict) -> None:
    """The report as a table on stdout."""
    method = r["scales"]
    methods = [method] if method == "amax" else ["amax", method]
    has_out = any("out_err" in l for l in r["layers"])
    width = max([len("layer")] + [len(l["name"]) for l in r["layers"]])
    head = f"{'layer':<{width}}  {'shape':>11}"
    for m in methods:
        head += f"  {'err ' + m:>11}"
    if has_out:
        for m in methods:
            head += f"  {'out ' + m:>11}"
    head += f"  {'time s':>7}"
    print()
    print(f"{r['format']} / {r['layout']} / scales {method} on {r['device']} ({r['backend']})"
          f" - {r['input']}")
    if r["calibration"]:
        print(f"calibration: {r['calibration']['source']} ({r['calibration']['tokens']} tokens)")
    print("err = relative weight error ||W - Q(W)|| / ||W||"
          + ("; out = relative output error ||X (W - Q(W))^T|| / ||X W^T|| on the calibration "
             "inputs" if has_out else ""))
    print(head)
    print("-" * len(head))
    for l in r["layers"]:
        line = f"{l['name']:<{width}}  {'x'.join(map(str, l['shape'])):>11}"
        line += _columns(l, methods, has_out)
        line += f"  {l['time_s'].get(method, 0.0):>7.2f}"
        if l.get("note"):
            line += f"  ({l['note']})"
        print(line)
    t = r["totals"]
    print("-" * len(head))
    line = f"{'mean over ' + str(t['quantized']) + ' layers':<{width}}  {'':>11}"
    line += _columns({"rel_err": t["rel_err_mean"], "out_err": t.get("out_err_mean", {})},
                     methods, has_out)
    line += f"  {t['time_s'][method]:>7.2f}"
    print(line)
    ov = t.get("rel_err_overall", {})
    print("weight error over all quantized weights: "
          + ", ".join(f"{m} {ov[m]:.5f}" for m in methods if m in ov))
    if method != "amax":
        print(f"{method} beats amax on the weight error in {t['layers_better_than_amax']} of "
              f"{t['quantized']} layers; search time {t['time_s'][method]:.2f} s "
              f"(amax {t['time_s']['amax']:.2f} s)")
    for s in r["skipped"]:
        print(f"skipped {s['name']} {'x'.join(map(str, s['shape']))}: {s['reason']}")
    for k in (k for k in r["kept"] if k.get("action") == "exclude"):
        print(f"not quantized {k['name']}: {k['reason']}")
    print(f"{t['tensors']} tensors: {t['quantized']} quantized ({t['params_quantized']:,} params), "
          f"{t['skipped']} skipped, {t['kept']} kept as they are; "
          f"{fmt_bytes(t['bytes_in'])} -> {fmt_bytes(t['bytes_out'])}; "
          f"{_rate(t['tensors_per_s'], ' tensors/s')}, {_rate(t['bytes_per_s'], '/s', True)}; "
          f"total {t['total_time_s']:.1f} s (calibration {t.get('calibration_time_s', 0):.1f} s, "
          f"quantization {t['loop_time_s']:.1f} s, "
          f"end-to-end check {t.get('eval_time_s', 0):.1f} s; "
          f"{t.get('cpu_time_s', 0):.1f} s of CPU time on {r['threads']} threads)")
    e = r.get("end_to_end")
    if e:
        parts = [f"{m}: mean {v['mean']:.5f}, min {v['min']:.5f}" for m, v in e["cosine"].items()]
        print(f"end to end, cosine(float, quantized) embeddings of {e['sentences']} built-in "
              f"sentences: " + "; ".join(parts))
    for n in r.get("notes", []):
        print(f"note: {n}")


def _rate(v, unit: str, size: bool = False) -> str:
    """A throughput for the summary line: ``12.3 MB/s``, ``4.0 tensors/s`` (``-`` when the
    loop took no measurable time)."""
    if v is None:
        return "-" + unit
    return (fmt_bytes(v) if size else f"{v:.1f}") + unit


#: the engines that read each layout, and how (printed after a run)
_READERS = {
    "compressed-tensors": ("transformers (with compressed-tensors installed)", "vLLM, SGLang"),
    "modelopt": (None, "vLLM, SGLang, TensorRT-LLM"),
    "gpt-oss": ("transformers (its MXFP4 integration)", "vLLM"),
}


def load_hint(layout: str, out, config) -> list:
    """Lines that say how to load the output ``out`` of ``layout`` in transformers and vLLM."""
    archs = (config or {}).get("architectures") or []
    auto = "AutoModel"
    for suffix, cls in (("ForCausalLM", "AutoModelForCausalLM"),
                        ("ForConditionalGeneration", "AutoModelForImageTextToText"),
                        ("ForSequenceClassification", "AutoModelForSequenceClassification"),
                        ("ForMaskedLM", "AutoModelForMaskedLM")):
        if any(str(a).endswith(suffix) for a in archs):
            auto = cls
            break
    tf, serve = _READERS[layout]
    lines = [f"load it ({layout}; read by {', '.join(x for x in (tf, serve) if x)}):"]
    if tf:
        lines.append(f"  transformers: from transformers import {auto}; "
                     f"model = {auto}.from_pretrained({str(out)!r})")
    else:
        lines.append(f"  transformers: not readable (transformers has no {layout} method); "
                     f"nvfp4-ops dequantize {out} --out DIR gives a float checkpoint")
    if auto == "AutoModel":  # an encoder: vLLM serves its embeddings
        lines.append(f"  vLLM: from vllm import LLM; LLM({str(out)!r}, runner='pooling')")
    else:
        lines.append(f"  vLLM: vllm serve {out}")
    return lines
