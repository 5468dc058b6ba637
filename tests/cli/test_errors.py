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
        (["--format", "mxfp4", "--scales", "4over6"], "4over6 is for --format nvfp4 only"),
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
    assert rc == 2 and "texts need a model folder this tool can run" in err
    rc, _, err = run(capsys, str(src), "--out", out, "--device", "cuda")
    if not torch.cuda.is_available():
        assert rc == 2 and "no CUDA device" in err
    assert not leftovers(tmp_path)


def test_dequantize_refuses_a_float_checkpoint(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    rc, _, err = run(capsys, "dequantize", str(src), "--out", str(tmp_path / "o"))
    assert rc == 2 and "not a quantized checkpoint" in err


def test_bad_values_are_one_line_each(tmp_path, capsys):
    """Each bad input: exit 2, one line naming the option, nothing written, no traceback."""
    src = tmp_path / "in"
    make_ckpt(src)
    out = str(tmp_path / "out")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    cases = [
        (["--calib", str(empty)], "--calib " + str(empty) + ": holds no calibration text"),
        (["--eval-sentences", "200"], "--eval-sentences 200: n_eval must be in [0, 134]"),
        (["--format", "mxfp8", "--scheme", "w4a4"], "--scheme w4a4 quantizes activations"),
        (["--scheme", "w4a4"], "--scheme w4a4 needs calibration inputs"),
        (["--exclude", "re:("], "--exclude 're:(': not a valid regular expression"),
        (["--include", "re:[a-"], "--include 're:[a-': not a valid regular expression"),
        (["--max-shard-size", "0"], "argument --max-shard-size: size '0': must be more than 0"),
        (["--eval-sentences", "-5"], "argument --eval-sentences: -5: must be at least 0"),
        (["--threads", "0"], "argument --threads: 0: must be at least 1"),
    ]
    for extra, msg in cases:
        rc, _, err = run(capsys, str(src), "--out", out, *extra)
        assert rc == 2, (extra, err)
        assert msg in err and "Traceback" not in err, (extra, err)
        assert not Path(out).exists()
    assert not leftovers(tmp_path)


def test_ctrl_c_during_start_up(monkeypatch, capsys):
    from nvfp4_ops.cli import main as cli_main

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "_build_parser", interrupted)
    assert cli_main.main(["quantize", "--out", "x"]) == 130
    assert capsys.readouterr().err == "nvfp4-ops: interrupted\n"


def test_error_inside_the_loop_is_printed_on_its_own_line(tmp_path, capsys, monkeypatch):
    """The progress bar is closed before the error is printed: the error starts a line and
    nothing (no redrawn bar) follows it."""
    from nvfp4_ops.cli.common import CliError
    from nvfp4_ops.cli.io import ShardWriter

    src = tmp_path / "in"
    make_ckpt(src)
    real_add = ShardWriter.add
    calls = []

    def failing(self, name, t):
        calls.append(name)
        if len(calls) == 3:
            raise CliError("boom on the third tensor")
        return real_add(self, name, t)

    monkeypatch.setattr(ShardWriter, "add", failing)
    rc, _, err = run(capsys, str(src), "--out", str(tmp_path / "out"))
    assert rc == 2
    assert "quantize nvfp4/mse" in err  # the bar was shown
    lines = [l for l in err.split("\n") if l.strip()]
    assert lines[-1] == "nvfp4-ops quantize: error: boom on the third tensor"
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)
