"""What the user reads after a run: the summary (throughput), warnings, how to load the
output; and the per-format defaults the report shows."""

import json
import re

import torch

from ._ckpt import make_ckpt, run


def test_summary_throughput_and_load_hint(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, str(src), "--out", str(out), "--scales", "amax")
    assert rc == 0, err
    t = json.loads((out / "report.json").read_text())["totals"]
    assert t["bytes_per_s"] == t["bytes_in"] / t["loop_time_s"]
    m = re.search(r"tensors/s, ([0-9.]+) (B|KB|MB|GB|TB)/s;", stdout)
    assert m, stdout
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m.group(2)]
    assert abs(float(m.group(1)) * scale - t["bytes_per_s"]) <= 0.05 * scale + 1
    assert 1 <= float(m.group(1)) < 1000  # a unit that shows the digits, not "0.001 GB/s"
    tail = stdout.rstrip().split("\n")[-3:]
    assert tail[0].startswith("load it (compressed-tensors; read by transformers")
    assert tail[1] == (f"  transformers: from transformers import AutoModel; "
                       f"model = AutoModel.from_pretrained({str(out)!r})")
    assert tail[2].startswith("  vLLM: ")


def test_load_hint_per_layout(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["ToyForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    rc, stdout, _ = run(capsys, str(src), "--out", str(tmp_path / "mo"), "--layout", "modelopt",
                        "--scales", "amax", "--quiet")
    assert rc == 0
    assert "transformers: not readable (transformers has no modelopt method)" in stdout
    assert f"vLLM: vllm serve {tmp_path / 'mo'}" in stdout
    rc, stdout, _ = run(capsys, str(src), "--out", str(tmp_path / "go"), "--format", "mxfp4",
                        "--scales", "amax", "--quiet")
    assert rc == 0
    assert "AutoModelForCausalLM.from_pretrained(" in stdout and "vllm serve" in stdout


def test_mxfp8_defaults_to_amax(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    rc, _, err = run(capsys, str(src), "--out", str(tmp_path / "o"), "--format", "mxfp8",
                     "--quiet")
    assert rc == 0, err
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r["scales"] == "amax"
    assert all(set(l["rel_err"]) == {"amax"} for l in r["layers"])


def test_tiny_valued_weight_warns(tmp_path, capsys):
    """A weight of values far below the smallest MX scale quantizes to zeros: a warning
    above the bar, in the report and on the layer; the other layers are not warned about."""
    src = tmp_path / "in"
    g = torch.Generator().manual_seed(3)
    tiny = torch.randn(32, 64, generator=g) * 1e-42  # fp32 subnormals
    make_ckpt(src, extra={"model.layers.0.tiny_proj.weight": tiny})
    rc, _, err = run(capsys, str(src), "--out", str(tmp_path / "o"), "--format", "mxfp4",
                     "--scales", "amax")
    assert rc == 0, err
    # what a terminal shows: tqdm clears the bar (\r) and prints the warning above it
    warnings = [l for l in re.split(r"[\r\n]", err) if l.startswith("warning:")]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("warning: model.layers.0.tiny_proj.weight: relative error 1.000")
    assert "--exclude model.layers.0.tiny_proj" in warnings[0]
    r = json.loads((tmp_path / "o" / "report.json").read_text())
    row = {l["name"]: l for l in r["layers"]}["model.layers.0.tiny_proj.weight"]
    assert row["warning"] == warnings[0][len("warning: "):]
    assert row["warning"] in r["notes"]
    assert sum("warning" in l for l in r["layers"]) == 1
