"""Calibration from captured inputs: the hessian search and the output error."""

import json

import torch
from safetensors.torch import save_file

import nvfp4_ops

from ._ckpt import make_ckpt, run, tensors


def test_hessian_with_captured_inputs(tmp_path, capsys):
    src = tmp_path / "in"
    t = make_ckpt(src)
    g = torch.Generator().manual_seed(5)
    X_up = torch.randn(200, 64, generator=g) * torch.linspace(0.1, 3, 64)
    X_down = torch.randn(150, 128, generator=g)
    calib = tmp_path / "calib.safetensors"
    # a module name, and a name with the weight suffix: both are accepted
    save_file({"model.layers.0.mlp.up_proj": X_up.bfloat16(),
               "model.layers.0.mlp.down_proj.weight": X_down}, str(calib))
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, str(src), "--out", str(out), "--scales", "hessian",
                          "--calib", str(calib))
    assert rc == 0, err
    q = tensors(out)
    r = {l["name"]: l for l in json.loads((out / "report.json").read_text())["layers"]}
    for name, X in (("model.layers.0.mlp.up_proj.weight", X_up.bfloat16()),
                    ("model.layers.0.mlp.down_proj.weight", X_down)):
        p = name[: -len(".weight")]
        H = nvfp4_ops.hessian_blocks(X.float())
        gs = nvfp4_ops.global_scale(t[name])
        pr, sr = nvfp4_ops.quantize(t[name], gs, scale_method="hessian", hessian=H)
        assert torch.equal(q[p + ".weight_packed"], pr)
        assert torch.equal(q[p + ".weight_scale"].view(torch.uint8), sr.view(torch.uint8))
        assert r[name]["method"] == "hessian"
        assert set(r[name]["out_err"]) == {"amax", "hessian"}
    # no captured inputs for q_proj: it falls back to mse, and says so
    qp = r["model.layers.0.self_attn.q_proj.weight"]
    assert qp["method"] == "mse" and "no calibration inputs" in qp["note"]
    assert "no calibration inputs for this layer" in stdout
