"""``quantization_config`` of each layout (written into config.json, and ModelOpt's
hf_quant_config.json), and the reverse: which format and layout a folder holds.

Layouts (the tensor names of a quantized linear layer ``P``, whose weight was ``P.weight``):

==========  ==================  =======================================================
format      --layout            tensors / quantization_config
==========  ==================  =======================================================
nvfp4       compressed-tensors  ``P.weight_packed`` (uint8 [N, K/2]), ``P.weight_scale``
                                (float8_e4m3fn [N, K/16]), ``P.weight_global_scale`` (fp32
                                [1], ENCODE scale 2688/amax); quant_method
                                "compressed-tensors", format "nvfp4-pack-quantized"
                                (--scheme w4a16: the NVFP4A16 scheme; w4a4: the NVFP4
                                scheme, ``P.input_global_scale`` fp32 [1] ENCODE too)
nvfp4       modelopt            ``P.weight`` (uint8 [N, K/2]), ``P.weight_scale`` (e4m3),
                                ``P.weight_scale_2`` (fp32 scalar, DECODE scale amax/2688),
                                ``P.input_scale`` (DECODE) with --scheme w4a4;
                                quant_algo "NVFP4", also in ``hf_quant_config.json``
mxfp8       compressed-tensors  ``P.weight`` (float8_e4m3fn [N, K]), ``P.weight_scale``
                                (uint8 E8M0 [N, K/32]); format "mxfp8-quantized"
mxfp4       compressed-tensors  ``P.weight_packed`` (uint8 [N, K/2]), ``P.weight_scale``
            (default)           (uint8 E8M0 [N, K/32]); format "mxfp4-pack-quantized"
mxfp4       gpt-oss             only the 3-D MoE experts of a gpt-oss-style model
                                ``E.gate_up_proj`` / ``E.down_proj``: ``E.*_blocks`` (uint8
                                [E, N, K/32, 16], each expert transposed to [out, in]),
                                ``E.*_scales`` (uint8 E8M0 [E, N, K/32]); attention,
                                router, embeddings stay float; quant_method "mxfp4",
                                modules_to_not_convert as gpt-oss ships it
==========  ==================  =======================================================

Fused layers (q/k/v, gate/up, query/key/value, w1/w3, ...) share one NVFP4 global scale
(``--fused-groups``), as vLLM's loaders need. Readers: compressed-tensors -> transformers
(weights decompressed to bfloat16; config.json says ``dtype: bfloat16``) and vLLM;
modelopt -> vLLM and SGLang (not transformers); gpt-oss -> transformers and vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from .common import CT_FORMAT, CliError, read_json


def _ct_weights(fmt: str) -> dict:
    """The compressed-tensors ``weights`` quantization args of ``fmt``."""
    if fmt == "nvfp4":
        return {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16,
                "strategy": "tensor_group", "dynamic": False,
                "scale_dtype": "torch.float8_e4m3fn"}
    return {"num_bits": 8 if fmt == "mxfp8" else 4, "type": "float", "symmetric": True,
            "group_size": 32, "strategy": "group", "dynamic": False, "scale_dtype": "torch.uint8"}


def _ct_nvfp4_inputs() -> dict:
    """compressed-tensors' ``input_activations`` of NVFP4 W4A4, as its preset scheme
    ``NVFP4`` (what llm-compressor writes): per-16 block scales computed at run time
    (``dynamic: "local"``) under the static ``input_global_scale`` of the checkpoint."""
    return {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16,
            "strategy": "tensor_group", "dynamic": "local", "observer": "static_minmax",
            "scale_dtype": "torch.float8_e4m3fn"}


def quantization_config(fmt: str, layout: str, ignore: List[str],
                        act_scales: bool) -> Tuple[dict, Optional[dict]]:
    """``(config.json's quantization_config, hf_quant_config.json or None)``; ``act_scales``:
    NVFP4 W4A4 (static input scales written), else weights only."""
    from .. import __version__

    producer = {"name": "nvfp4_ops", "version": __version__}
    if layout == "compressed-tensors":
        f = CT_FORMAT[fmt]
        return ({
            "config_groups": {"group_0": {
                "targets": ["Linear"], "weights": _ct_weights(fmt),
                "input_activations": _ct_nvfp4_inputs() if act_scales else None, "output_activations": None, "format": f}},
            "format": f,
            "global_compression_ratio": None,
            "ignore": ignore,
            "kv_cache_scheme": None,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
        }, None)
    if layout == "modelopt":
        hf = {"producer": producer, "quantization": {
            "quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
            "exclude_modules": ignore}}
        group = {"weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16},
                 "targets": ["Linear"]}
        if act_scales:
            group["input_activations"] = {"dynamic": False, "num_bits": 4, "type": "float",
                                          "group_size": 16}
        return ({
            "config_groups": {"group_0": group},
            "ignore": ignore,
            "exclude_modules": ignore,
            "quant_algo": "NVFP4",
            "group_size": 16,
            "kv_cache_quant_algo": None,
            "producer": producer,
            "quant_method": "modelopt",
        }, hf)
    from .experts import gpt_oss_quantization_config

    return (gpt_oss_quantization_config(ignore), None)


def detect_layout(folder: Path, config: Optional[dict]) -> Tuple[str, str]:
    """``(format, layout)`` of a quantized checkpoint folder."""
    qc = (config or {}).get("quantization_config")
    hf = folder / "hf_quant_config.json"
    if qc is None and hf.is_file():
        h = read_json(hf, "hf_quant_config.json")
        qc = {"quant_method": "modelopt", **h}
    if qc is None:
        raise CliError(f"{folder}: no quantization_config in config.json (nor an "
                       "hf_quant_config.json): not a quantized checkpoint")
    qm = str(qc.get("quant_method", "")).lower()
    if qm == "compressed-tensors":
        groups = (qc.get("config_groups") or {}).values()
        fmts = {qc.get("format")} | {g.get("format") for g in groups if isinstance(g, dict)}
        for fmt, name in CT_FORMAT.items():
            if name in fmts:
                return fmt, "compressed-tensors"
        raise CliError(f"{folder}: compressed-tensors format {sorted(f for f in fmts if f)} is not "
                       f"one this tool reads ({', '.join(CT_FORMAT.values())})")
    if qm == "modelopt":
        algo = qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo")
        if str(algo).upper() == "NVFP4":
            return "nvfp4", "modelopt"
        raise CliError(f"{folder}: ModelOpt quant_algo {algo!r} is not one this tool reads (NVFP4)")
    if qm == "mxfp4":
        return "mxfp4", "gpt-oss"
    raise CliError(f"{folder}: quant_method {qm!r} is not one this tool reads "
                   "(compressed-tensors, modelopt, mxfp4)")
