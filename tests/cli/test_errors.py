"""Bad inputs and options: one clear line, a non-zero exit, nothing written."""

import os
from pathlib import Path

import pytest
import torch

from ._ckpt import make_ckpt, leftovers, run


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
