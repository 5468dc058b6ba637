"""Which tensors are quantized: the name rules, --include / --exclude, and weights that
cannot be quantized."""

import json

import torch
from safetensors.torch import save_file

from ._ckpt import make_ckpt, randn, run, tensors


def test_include_exclude(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--include", "*.mlp.*",
                     "--exclude", "re:down_proj", "--quiet")
    assert rc == 0, err
    r = json.loads((out / "report.json").read_text())
    assert [l["name"] for l in r["layers"]] == ["model.layers.0.mlp.up_proj.weight"]
    ignore = json.loads((out / "config.json").read_text())["quantization_config"]["ignore"]
    assert "model.layers.0.mlp.down_proj" in ignore and "model.layers.0.self_attn.q_proj" in ignore
    # --include names lm_head: it is quantized then
    out2 = tmp_path / "out2"
    assert run(capsys, str(src), "--out", str(out2), "--include", "lm_head", "--quiet")[0] == 0
    assert "lm_head.weight_packed" in tensors(out2)


def test_single_file_input_without_config(tmp_path, capsys):
    f = tmp_path / "w.safetensors"
    save_file({"proj.weight": randn(32, 64), "proj.bias": randn(32)}, str(f))
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(f), "--out", str(out), "--quiet")
    assert rc == 0, err
    assert set(tensors(out)) == {"proj.weight_packed", "proj.weight_scale",
                                 "proj.weight_global_scale", "proj.bias"}
    assert "quantization_config" in json.loads((out / "config.json").read_text())


def test_nan_weight_is_skipped(tmp_path, capsys):
    src = tmp_path / "in"
    bad = randn(32, 64)
    bad[1, 2] = float("nan")
    make_ckpt(src, extra={"model.layers.0.bad_proj.weight": bad})
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet")
    assert rc == 0, err
    r = json.loads((out / "report.json").read_text())
    assert {"name": "model.layers.0.bad_proj.weight", "shape": [32, 64], "action": "skip",
            "reason": "holds NaN or inf"} in r["skipped"]
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert "model.layers.0.bad_proj" in cfg["ignore"]
    assert torch.equal(tensors(out)["model.layers.0.bad_proj.weight"].isnan(), bad.isnan())
