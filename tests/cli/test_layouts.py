"""Each format in each layout: the stored tensors are exactly the ops' output, the
config is what the readers expect, and dequantize gives the ops' dequantization back."""

import json

import pytest
import torch

import nvfp4_ops
from nvfp4_ops.cli.common import CT_FORMAT

from ._ckpt import LINEARS, make_ckpt, leftovers, run, tensors, tree_hash


def test_compressed_tensors_nvfp4_mse(tmp_path, capsys):
    src = tmp_path / "in"
    t = make_ckpt(src)
    before = tree_hash(src)
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, str(src), "--out", str(out), "--scales", "mse")
    assert rc == 0, err
    assert tree_hash(src) == before  # the input is never modified
    assert not leftovers(tmp_path)
    q = tensors(out)
    for name, (M, K) in LINEARS.items():
        p = name[: -len(".weight")]
        assert name not in q
        packed, scales = q[p + ".weight_packed"], q[p + ".weight_scale"]
        gs = q[p + ".weight_global_scale"]
        assert packed.dtype == torch.uint8 and packed.shape == (M, K // 2)
        assert scales.dtype == torch.float8_e4m3fn and scales.shape == (M, K // 16)
        assert gs.dtype == torch.float32 and gs.shape == (1,)
        w = t[name]
        gs_ref = nvfp4_ops.global_scale(w)
        p_ref, s_ref = nvfp4_ops.quantize(w, gs_ref, scale_method="mse")
        assert torch.equal(gs, gs_ref)
        assert torch.equal(packed, p_ref)
        assert torch.equal(scales.view(torch.uint8), s_ref.view(torch.uint8))
    # everything that is not a quantized linear weight is copied bit for bit
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias",
                 "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight",
                 "model.step", "model.layers.0.odd_proj.weight"):
        assert torch.equal(q[name], t[name]) and q[name].dtype == t[name].dtype, name

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "toy"
    c = cfg["quantization_config"]
    assert c["quant_method"] == "compressed-tensors"
    assert c["format"] == "nvfp4-pack-quantized"
    w = c["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["type"], w["strategy"], w["group_size"]) == \
        (4, "float", "tensor_group", 16)
    assert c["config_groups"]["group_0"]["targets"] == ["Linear"]
    assert sorted(c["ignore"]) == ["lm_head", "model.layers.0.odd_proj"]
    assert (out / "tokenizer.json").is_file()  # the other files come along

    r = json.loads((out / "report.json").read_text())
    assert (r["format"], r["layout"], r["scales"], r["device"]) == \
        ("nvfp4", "compressed-tensors", "mse", "cpu")
    assert {l["name"] for l in r["layers"]} == set(LINEARS)
    for l in r["layers"]:
        assert l["rel_err"]["mse"] <= l["rel_err"]["amax"] and l["rel_err"]["amax"] > 0
        assert l["time_s"]["mse"] >= 0
    assert r["skipped"] == [{"name": "model.layers.0.odd_proj.weight", "shape": [32, 72],
                             "action": "skip",
                             "reason": "K = 72 (the last dim) is not a multiple of the nvfp4 "
                                       "block of 16"}]
    assert r["totals"]["quantized"] == 3 and r["totals"]["skipped"] == 1
    assert r["totals"]["rel_err_mean"]["mse"] < r["totals"]["rel_err_mean"]["amax"]
    assert r["end_to_end"] is None  # a toy model: no end-to-end check
    # the printed table
    assert "err amax" in stdout and "err mse" in stdout
    assert "skipped model.layers.0.odd_proj.weight 32x72: K = 72" in stdout
    assert "not quantized lm_head.weight" in stdout

    # round trip: dequantize gives exactly nvfp4.dequantize of the stored tensors
    back = tmp_path / "back"
    rc, _, err = run(capsys, "dequantize", str(out), "--out", str(back))
    assert rc == 0, err
    d = tensors(back)
    assert set(d) == set(t)
    for name in LINEARS:
        p = name[: -len(".weight")]
        want = nvfp4_ops.dequantize(q[p + ".weight_packed"], q[p + ".weight_scale"],
                                    q[p + ".weight_global_scale"], torch.bfloat16)
        assert d[name].dtype == torch.bfloat16  # the recorded source dtype
        assert torch.equal(d[name], want)
        rel = (d[name].float() - t[name].float()).norm() / t[name].float().norm()
        assert rel < 0.15
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.step"):
        assert torch.equal(d[name], t[name])
    assert "quantization_config" not in json.loads((back / "config.json").read_text())


def test_nvfp4_4over6(tmp_path, capsys):
    """--scales 4over6: the stored bytes are quantize(scale_method="4over6"), and the report
    compares it with amax (never worse in total: each block keeps the smaller error)."""
    src = tmp_path / "in"
    t = make_ckpt(src)
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--scales", "4over6", "--quiet")
    assert rc == 0, err
    q = tensors(out)
    for name in LINEARS:
        p = name[: -len(".weight")]
        gs = nvfp4_ops.global_scale(t[name])
        p_ref, s_ref = nvfp4_ops.quantize(t[name], gs, scale_method="4over6")
        assert torch.equal(q[p + ".weight_packed"], p_ref)
        assert torch.equal(q[p + ".weight_scale"].view(torch.uint8), s_ref.view(torch.uint8))
    r = json.loads((out / "report.json").read_text())
    assert r["scales"] == "4over6"
    for l in r["layers"]:
        assert l["rel_err"]["4over6"] <= l["rel_err"]["amax"]


def test_modelopt_nvfp4(tmp_path, capsys):
    src = tmp_path / "in"
    t = make_ckpt(src, dtype=torch.float16)
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--layout", "modelopt", "--quiet")
    assert rc == 0, err
    q = tensors(out)
    for name, (M, K) in LINEARS.items():
        p = name[: -len(".weight")]
        assert q[name].dtype == torch.uint8 and q[name].shape == (M, K // 2)
        assert q[p + ".weight_scale"].dtype == torch.float8_e4m3fn
        ws2 = q[p + ".weight_scale_2"]
        assert ws2.dtype == torch.float32 and ws2.numel() == 1
        gs = nvfp4_ops.global_scale(t[name])
        assert torch.equal(ws2.reshape(1), torch.ones(1) / gs)  # the DECODE scale
        assert p + ".input_scale" not in q  # no calibration inputs
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "modelopt" and cfg["quant_algo"] == "NVFP4"
    assert cfg["group_size"] == 16 and "lm_head" in cfg["exclude_modules"]
    hf = json.loads((out / "hf_quant_config.json").read_text())
    assert hf["quantization"]["quant_algo"] == "NVFP4"
    assert hf["quantization"]["group_size"] == 16
    assert sorted(hf["quantization"]["exclude_modules"]) == ["lm_head", "model.layers.0.odd_proj"]
    r = json.loads((out / "report.json").read_text())
    assert any("input_scale" in n for n in r["notes"])

    back = tmp_path / "back"
    assert run(capsys, "dequantize", str(out), "--out", str(back), "--dtype", "float32")[0] == 0
    d = tensors(back)
    for name in LINEARS:
        p = name[: -len(".weight")]
        gs = torch.ones(1) / q[p + ".weight_scale_2"].reshape(1)
        want = nvfp4_ops.dequantize(q[name], q[p + ".weight_scale"], gs, torch.float32)
        assert d[name].dtype == torch.float32 and torch.equal(d[name], want)
    assert not (back / "hf_quant_config.json").exists()


@pytest.mark.parametrize("fmt,layout", [("mxfp8", None), ("mxfp4", None)])
def test_mx_layouts(tmp_path, capsys, fmt, layout):
    src = tmp_path / "in"
    t = make_ckpt(src)
    out = tmp_path / "out"
    argv = [str(src), "--out", str(out), "--format", fmt, "--scales", "mse", "--quiet"]
    if layout:
        argv += ["--layout", layout]
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    q = tensors(out)
    elem = "e4m3" if fmt == "mxfp8" else "e2m1"
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    for name, (M, K) in LINEARS.items():
        p = name[: -len(".weight")]
        data_ref, sc_ref = nvfp4_ops.mx_quantize(t[name], elem, scale_method="mse")
        if fmt == "mxfp8":
            data, sc = q[name], q[p + ".weight_scale"]
            assert data.dtype == torch.float8_e4m3fn and data.shape == (M, K)
        else:  # the default layout is compressed-tensors (gpt-oss: tests/cli/test_experts.py)
            data, sc = q[p + ".weight_packed"], q[p + ".weight_scale"]
            assert data.shape == (M, K // 2)
        assert sc.dtype == torch.uint8 and sc.shape == (M, K // 32)
        assert torch.equal(data.view(torch.uint8), data_ref.view(torch.uint8))
        assert torch.equal(sc, sc_ref)
    assert cfg["quant_method"] == "compressed-tensors"
    assert cfg["format"] == CT_FORMAT[fmt]
    w = cfg["config_groups"]["group_0"]["weights"]
    bits = 8 if fmt == "mxfp8" else 4
    assert (w["group_size"], w["strategy"], w["num_bits"]) == (32, "group", bits)
    r = json.loads((out / "report.json").read_text())
    assert "not a multiple of the " + fmt + " block of 32" in r["skipped"][0]["reason"]

    back = tmp_path / "back"
    rc, _, err = run(capsys, "dequantize", str(out), "--out", str(back))
    assert rc == 0, err
    d = tensors(back)
    for name in LINEARS:
        data_ref, sc_ref = nvfp4_ops.mx_quantize(t[name], elem, scale_method="mse")
        assert torch.equal(d[name], nvfp4_ops.mx_dequantize(data_ref, sc_ref, elem, torch.bfloat16))


def test_compressed_tensors_parses_and_decompresses(tmp_path, capsys):
    ct = pytest.importorskip(
        "compressed_tensors",
        reason="compressed-tensors is not installed (it requires transformers, which this "
               "project does not install; pip install compressed-tensors to run this test)")
    from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor
    from compressed_tensors.compressors.mxfp8.base import MXFP8QuantizationCompressor
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationConfig

    src = tmp_path / "in"
    make_ckpt(src)
    p = "model.layers.0.mlp.up_proj."
    for fmt, comp in (("nvfp4", NVFP4PackedCompressor), ("mxfp8", MXFP8QuantizationCompressor),
                      ("mxfp4", MXFP4PackedCompressor)):
        out = tmp_path / fmt
        argv = [str(src), "--out", str(out), "--format", fmt, "--quiet"]
        if fmt == "mxfp4":
            argv += ["--layout", "compressed-tensors"]
        assert run(capsys, *argv)[0] == 0
        cfg = json.loads((out / "config.json").read_text())["quantization_config"]
        parsed = QuantizationConfig.model_validate(cfg)
        assert parsed.format == CT_FORMAT[fmt]
        assert parsed.quantization_status == "compressed"
        # compressed-tensors decompresses one layer to exactly what nvfp4_ops gives
        q = tensors(out)
        d = {k[len(p):]: v for k, v in q.items() if k.startswith(p)}
        w = comp.decompress(d, parsed.config_groups["group_0"])["weight"]
        if fmt == "nvfp4":
            want = nvfp4_ops.dequantize(d["weight_packed"], d["weight_scale"],
                                        d["weight_global_scale"], w.dtype)
        elif fmt == "mxfp8":
            want = nvfp4_ops.mx_dequantize(d["weight"], d["weight_scale"], "e4m3", w.dtype)
        else:
            want = nvfp4_ops.mx_dequantize(d["weight_packed"], d["weight_scale"], "e2m1", w.dtype)
        assert torch.equal(w, want), fmt
    del ct
