"""Sentence encoders run through transformers: calibration on text, the end-to-end check,
and what happens without transformers."""

import builtins
import json

import pytest
import torch

from nvfp4_ops.cli.capture import encode_sentences, load_model, swap_linear_weights

from ._ckpt import make_encoder, run, tensors


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp("enc") / "bert")


def test_swap_linear_weights(encoder_dir):
    """The end-to-end check's weight swap: checkpoint names (with or without the model's
    base_model_prefix) reach the module, the weights come back on exit, bad names are named."""
    model, tok = load_model(encoder_dir)
    q = "encoder.layer.0.attention.self.query.weight"
    s = ["the dog runs ."]
    before = encode_sentences(model, s, tokenizer=tok)
    for name in (q, "bert." + q):
        with swap_linear_weights(model, {name: torch.zeros(32, 32)}):
            assert not torch.allclose(encode_sentences(model, s, tokenizer=tok), before)
        assert torch.equal(encode_sentences(model, s, tokenizer=tok), before)  # restored
    with pytest.raises(ValueError, match="shape \\(32, 16\\), the model has \\(32, 32\\)"):
        with swap_linear_weights(model, {q: torch.zeros(32, 16)}):
            pass
    with pytest.raises(ValueError, match="nope.weight is not a weight of BertModel"):
        with swap_linear_weights(model, {"nope.weight": torch.zeros(1)}):
            pass


def test_quantize_encoder_calibrates_and_checks_end_to_end(encoder_dir, tmp_path, capsys):
    calib = tmp_path / "c.txt"
    calib.write_text("the dog runs in the park .\nthe woman eats food today .\n")
    out = tmp_path / "q"
    rc, stdout, err = run(capsys, str(encoder_dir), "--out", str(out), "--calib", str(calib),
                          "--eval-sentences", "16", "--layout", "modelopt", "--scheme", "w4a4")
    assert rc == 0, err
    r = json.loads((out / "report.json").read_text())
    assert r["calibration"]["source"] == "c.txt: 2 texts"
    assert r["calibration"]["tokens"] == 9 + 8
    assert r["totals"]["quantized"] == 7 and all("out_err" in l for l in r["layers"])
    e2e = r["end_to_end"]
    assert e2e["sentences"] == 16 and set(e2e["cosine"]) == {"amax", "mse"}
    for c in e2e["cosine"].values():
        # the mean is a float sum: with near-equal cosines min may pass it by an ulp or two
        assert 0.5 < c["min"] <= c["mean"] + 1e-6 <= 1.0 + 2e-6
    assert "end to end" in stdout
    q = tensors(out)
    assert q["encoder.layer.0.attention.self.query.input_scale"].numel() == 1


def test_without_transformers(encoder_dir, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    # an encoder without --calib: quantized, with one note line
    rc, _, err = run(capsys, str(encoder_dir), "--out", str(tmp_path / "a"), "--quiet")
    assert rc == 0, err
    notes = [l for l in err.splitlines() if l.startswith("note:")]
    assert len(notes) == 1 and "needs transformers" in notes[0] and "pip install" in notes[0]
    assert json.loads((tmp_path / "a" / "report.json").read_text())["end_to_end"] is None
    # text calibration asked for: one error line, exit 2
    calib = tmp_path / "c.txt"
    calib.write_text("the dog runs .\n")
    rc, _, err = run(capsys, str(encoder_dir), "--out", str(tmp_path / "b"), "--calib",
                     str(calib))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "needs transformers, which is not installed: pip install transformers" in err
    assert not (tmp_path / "b").exists()


def test_builtin_calibration_fits_the_position_table(tmp_path, capsys):
    """No --calib: an encoder calibrates on the built-in texts (the ones the end-to-end check
    does not use), truncated to what its position table holds (16 positions here; the
    longest built-in texts have more tokens)."""
    from nvfp4_ops.cli.calib_texts import calibration_and_eval_texts

    enc = make_encoder(tmp_path / "bert16", max_positions=16)
    out = tmp_path / "q"
    rc, _, err = run(capsys, str(enc), "--out", str(out), "--eval-sentences", "8",
                     "--quiet")
    assert rc == 0, err
    r = json.loads((out / "report.json").read_text())
    n_cal = len(calibration_and_eval_texts(8)[0])
    assert r["calibration"]["source"] == f"{n_cal} built-in texts"
    assert r["end_to_end"]["sentences"] == 8
