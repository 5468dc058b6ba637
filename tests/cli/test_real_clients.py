"""The quantizer's outputs loaded by the real clients, with their defaults.

Tiny random transformers models (Llama bf16 and fp16, BERT fp32, GptOss, Qwen2-MoE) are
made in tmp_path, quantized by the CLI (``--device cpu``) in every layout transformers
reads, loaded back with a plain ``AutoModel*.from_pretrained(out)`` and run. The output is
compared with the float model (loose: 4-bit weights) and with the same model whose weights
are ``nvfp4-ops dequantize``'s (tight: the client must decode exactly what nvfp4_ops does).
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("compressed_tensors", reason="compressed-tensors is not installed")

from nvfp4_ops.cli.main import main  # noqa: E402

H = 64  # hidden size: K of every linear is a multiple of 32


@pytest.fixture(autouse=True)
def _quiet_transformers():
    v = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(v)


def _cfg(kind):
    small = dict(vocab_size=128, hidden_size=H, num_hidden_layers=1, num_attention_heads=2)
    if kind == "llama":
        return transformers.LlamaConfig(intermediate_size=128, num_key_value_heads=1, **small)
    if kind == "bert":
        return transformers.BertConfig(intermediate_size=128, **small)
    if kind == "gpt_oss":
        return transformers.GptOssConfig(intermediate_size=64, num_key_value_heads=1, head_dim=32,
                                         num_local_experts=2, num_experts_per_tok=1, **small)
    return transformers.Qwen2MoeConfig(intermediate_size=128, moe_intermediate_size=64,
                                       shared_expert_intermediate_size=64, num_key_value_heads=1,
                                       num_experts=2, num_experts_per_tok=1, **small)


def _auto(kind):
    return transformers.AutoModel if kind == "bert" else transformers.AutoModelForCausalLM


def _make(tmp_path, kind, dtype):
    torch.manual_seed(0)
    m = _auto(kind).from_config(_cfg(kind)).to(dtype).eval()
    src = tmp_path / f"{kind}-{str(dtype)[6:]}"
    m.save_pretrained(src)
    return src


def _forward(m):
    ids = torch.tensor([[1, 5, 9, 17, 33, 65, 100, 127]])
    with torch.no_grad():
        out = m(input_ids=ids)
    return (out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits).float()


def _cli(*argv):
    assert main(list(argv) + ["--device", "cpu"]) == 0


def _quantize(src, out, fmt, layout, *extra):
    _cli("quantize", str(src), "--out", str(out), "--format", fmt, "--layout", layout,
         "--scales", "amax", "--quiet", *extra)
    return json.loads((out / "report.json").read_text())


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _check(tmp_path, src, kind, fmt, layout, loose, **load):
    """Quantize, load with the defaults (or ``load``), run; compare with the float model and
    with the model of nvfp4-ops's dequantized weights (in the dtype the client computes in)."""
    out = tmp_path / f"{src.name}-{fmt}-{layout}"
    report = _quantize(src, out, fmt, layout)
    q = _auto(kind).from_pretrained(out, **load)
    y = _forward(q)
    run_dtype = q.dtype
    deq = tmp_path / f"{out.name}-deq"
    _cli("dequantize", str(out), "--out", str(deq), "--dtype", str(run_dtype)[6:], "--quiet")
    want = _forward(_auto(kind).from_pretrained(deq, dtype=run_dtype))
    assert torch.isfinite(y).all()
    assert _rel(y, want) < 2e-3, (kind, fmt, layout)
    ref = _forward(_auto(kind).from_pretrained(src, dtype=run_dtype))
    assert _rel(y, ref) < loose, (kind, fmt, layout, _rel(y, ref))
    return report, q


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp8", "mxfp4"])
def test_llama_bf16(tmp_path, fmt):
    src = _make(tmp_path, "llama", torch.bfloat16)
    report, q = _check(tmp_path, src, "llama", fmt, "compressed-tensors", loose=0.5)
    assert q.dtype == torch.bfloat16
    if fmt == "nvfp4":  # the fused groups share one global scale
        assert sorted(g["group"] for g in report["fused_groups"]) == [
            "model.layers.0.mlp.{gate_proj,up_proj}",
            "model.layers.0.self_attn.{q_proj,k_proj,v_proj}"]


@pytest.mark.parametrize("kind, dtype", [("bert", torch.float32), ("llama", torch.float16)])
def test_fp32_and_fp16_sources_load_by_default(tmp_path, kind, dtype):
    """compressed-tensors decompresses to bf16: the config says bfloat16, so the default load
    runs (it crashed with "self and mat2 must have the same dtype" when it kept fp32)."""
    src = _make(tmp_path, kind, dtype)
    report, q = _check(tmp_path, src, kind, "nvfp4", "compressed-tensors", loose=0.5)
    assert q.dtype == torch.bfloat16
    assert any("bfloat16" in n for n in report["notes"])
    if kind == "bert":
        assert report["fused_groups"][0]["group"] == \
            "encoder.layer.0.attention.self.{query,key,value}"
    # dequantize restores the source dtype in the config
    deq = tmp_path / f"{src.name}-nvfp4-compressed-tensors-deq"
    cfg = json.loads((deq / "config.json").read_text())
    assert cfg["dtype"] == str(dtype)[6:]


def test_gpt_oss_layout(tmp_path):
    """The gpt-oss layout loads with the plain default ``from_pretrained`` (transformers'
    mxfp4 loading needs accelerate, a test dependency: on a CPU it dequantizes)."""
    pytest.importorskip("accelerate", reason="accelerate is not installed (pip install "
                        "'nvfp4_ops[test]'): transformers loads gpt-oss MXFP4 only with it")
    src = _make(tmp_path, "gpt_oss", torch.bfloat16)
    report, q = _check(tmp_path, src, "gpt_oss", "mxfp4", "gpt-oss", loose=0.5)
    assert sorted(l["name"] for l in report["layers"]) == [
        "model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.gate_up_proj"]
    cfg = json.loads((tmp_path / "gpt_oss-bfloat16-mxfp4-gpt-oss" / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "mxfp4"
    # attention and router stay bf16 in the loaded model
    assert q.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


def test_gpt_oss_in_compressed_tensors(tmp_path):
    """The other layouts quantize gpt-oss's linear layers and keep its 3-D experts float."""
    src = _make(tmp_path, "gpt_oss", torch.bfloat16)
    report, _ = _check(tmp_path, src, "gpt_oss", "nvfp4", "compressed-tensors", loose=0.5)
    kept = {k["name"]: k["reason"] for k in report["kept"]}
    assert "only --format mxfp4 --layout gpt-oss" in kept["model.layers.0.mlp.experts.gate_up_proj"]
    assert "model.layers.0.mlp.router.weight" not in [l["name"] for l in report["layers"]]


def test_gpt_oss_layout_refused_without_experts(tmp_path, capsys):
    src = _make(tmp_path, "llama", torch.bfloat16)
    assert main(["quantize", str(src), "--out", str(tmp_path / "o"), "--format", "mxfp4",
                 "--layout", "gpt-oss", "--device", "cpu", "--quiet"]) == 2
    assert "--layout gpt-oss holds only MoE experts" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_moe_per_expert_modules(tmp_path):
    """Qwen2-MoE: experts quantized per expert module, gate/up of each expert sharing one
    global scale (vLLM's w13 rule), routers float; the report warns that transformers 5
    does not load quantized per-expert MoE modules (it fuses them into 3-D parameters)."""
    src = _make(tmp_path, "qwen2_moe", torch.bfloat16)
    out = tmp_path / "moe"
    report = _quantize(src, out, "nvfp4", "compressed-tensors")
    groups = {g["group"]: g for g in report["fused_groups"]}
    for e in range(2):
        assert f"model.layers.0.mlp.experts.{e}.{{gate_proj,up_proj}}" in groups
    from safetensors.torch import load_file
    sd = load_file(str(out / "model.safetensors"))
    p = "model.layers.0.mlp.experts.1."
    assert torch.equal(sd[p + "gate_proj.weight_global_scale"],
                       sd[p + "up_proj.weight_global_scale"])
    assert sd[p + "down_proj.weight_packed"].shape == (H, 32)
    assert "model.layers.0.mlp.gate.weight" in sd and "model.layers.0.mlp.gate.weight_packed" \
        not in sd
    cfg = json.loads((out / "config.json").read_text())
    assert "model.layers.0.mlp.shared_expert_gate" in cfg["quantization_config"]["ignore"]
    assert any("does not load correctly there" in n for n in report["notes"])
