"""Sentence encoders run through transformers: calibration on text, the end-to-end check,
and what happens without transformers."""

import builtins
import json

import pytest
import torch

from nvfp4_ops.cli.encoder import Encoder

from ._ckpt import make_encoder, run


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp("enc") / "bert")


def test_encoder_matches_transformers_mean_pooling(encoder_dir):
    from transformers import AutoModel, AutoTokenizer

    s = ["the dog runs in the park .", "a cat sleeps ?", "the big red house"]
    e = Encoder(encoder_dir).encode(s)
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = AutoModel.from_pretrained(str(encoder_dir)).eval()
    enc = tok(s, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
    assert torch.allclose(e, want, atol=1e-6)
    # padding (a batch with a longer sentence) does not change an embedding
    assert torch.allclose(Encoder(encoder_dir).encode(s[1:2]), e[1:2], atol=1e-5)


def test_capture_and_swap(encoder_dir):
    enc = Encoder(encoder_dir)
    acts = enc.capture_linear_inputs(["the dog runs .", "a cat"])
    q = "encoder.layer.0.attention.self.query.weight"
    k = "encoder.layer.0.attention.self.key.weight"
    assert acts[q] is acts[k]  # one input, one tensor
    tokens = 6 + 4  # [CLS] ... [SEP], no padding rows
    assert acts[q].shape == (tokens, 32)
    assert acts["encoder.layer.0.intermediate.dense.weight"].shape == (tokens, 32)
    assert acts["encoder.layer.0.output.dense.weight"].shape == (tokens, 64)
    assert acts["pooler.dense.weight"].shape == (2, 32)
    before = enc.encode(["the dog runs ."])
    with enc.weights({q: torch.zeros(32, 32)}):
        assert not torch.allclose(enc.encode(["the dog runs ."]), before)
    assert torch.equal(enc.encode(["the dog runs ."]), before)  # restored


def test_quantize_encoder_calibrates_and_checks_end_to_end(encoder_dir, tmp_path, capsys):
    calib = tmp_path / "c.txt"
    calib.write_text("the dog runs in the park .\nthe woman eats food today .\n")
    out = tmp_path / "q"
    rc, stdout, err = run(capsys, str(encoder_dir), "--out", str(out), "--calib", str(calib),
                          "--eval-sentences", "16", "--layout", "modelopt")
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
