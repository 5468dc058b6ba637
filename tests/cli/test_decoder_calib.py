"""Decoder-LLM calibration by the CLI: a tiny random Llama made in tmp_path, calibrated
from text (layer by layer, nvfp4_ops.cli.capture), quantized with ``--scales hessian`` and
with ``--scheme w4a4`` in the compressed-tensors and ModelOpt layouts.

Oracles: the statistics are ``capture.capture_linear_stats`` of the same texts (its
agreement with a whole-model forward is tests/cli/test_capture.py's job); the Hessian
scales are ``nvfp4_ops.quantize(..., scale_method="hessian", hessian=H)`` with those
Hessians; the input scales are ``global_scale(max amax over the fused group)``; the W4A4
config is parsed by compressed-tensors' own ``QuantizationConfig`` and the folder is loaded
by transformers' default ``from_pretrained`` and run.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

import nvfp4_ops
from nvfp4_ops import formats
from nvfp4_ops.cli import capture
from nvfp4_ops.cli.calib_texts import default_texts

from ._ckpt import run, word_tokenizer

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("compressed_tensors", reason="compressed-tensors is not installed")

TEXTS = default_texts(6)
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
LINEARS = [f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ATTN] + \
          [f"model.layers.{i}.mlp.{m}" for i in range(2) for m in MLP]
GROUPS = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gu", "up_proj": "gu"}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A random 2-block Llama (hidden 64, MLP 128; fp32: bf16 matmuls are slow on a CPU)
    with a word-level tokenizer."""
    tok = word_tokenizer(default_texts())
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=256,
                                   architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("llama")
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def calib_txt(tmp_path_factory):
    p = tmp_path_factory.mktemp("calib") / "texts.json"  # some texts span several lines
    p.write_text(json.dumps(TEXTS))
    return p


@pytest.fixture(scope="module")
def stats(llama_dir):
    """What the CLI should have captured: every linear's statistics on TEXTS."""
    return capture.capture_linear_stats(llama_dir, TEXTS, device="cpu")


def _group_key(name):
    block, leaf = name.rsplit(".", 1)
    return f"{block.rsplit('.', 1)[0]}.{GROUPS[leaf]}" if leaf in GROUPS else name


def _expected_input_scales(stats):
    """``{module: 2688 / max(input amax over its fused group)}`` (fp32 [1])."""
    amax = {}
    for n in LINEARS:
        k = _group_key(n)
        amax[k] = torch.maximum(amax.get(k, torch.zeros(())), stats[n].amax)
    return {n: nvfp4_ops.global_scale(amax[_group_key(n)].reshape(1)) for n in LINEARS}


def test_hessian_scales_from_text(llama_dir, calib_txt, stats, tmp_path, capsys):
    """Block 1's attention (its inputs come through block 0) with the Hessian search (the
    reference search is slow on a CPU: four layers)."""
    out = tmp_path / "h"
    rc, _, err = run(capsys, str(llama_dir), "--out", str(out), "--scales", "hessian",
                     "--calib", str(calib_txt), "--include", "model.layers.1.self_attn.*", "--quiet")
    assert rc == 0, err
    r = json.loads((out / "report.json").read_text())
    assert r["calibration"] == {"source": f"texts.json: {len(TEXTS)} texts",
                                "tokens": stats.tokens}
    assert r["scheme"] == "w4a16" and stats.tokens > len(TEXTS)
    block1 = [n for n in LINEARS if n.startswith("model.layers.1.self_attn.")]
    assert {l["name"] for l in r["layers"]} == {n + ".weight" for n in block1}
    assert all(l["method"] == "hessian" and set(l["out_err"]) == {"amax", "hessian"}
               for l in r["layers"])
    src, q = load_file(str(llama_dir / "model.safetensors")), tensors_of(out)
    differ = 0
    for n in block1:
        w = src[n + ".weight"]
        gs = q[n + ".weight_global_scale"]
        group = [m for m in block1 if _group_key(m) == _group_key(n)]  # one shared gs
        assert torch.equal(gs, nvfp4_ops.global_scale(torch.cat(
            [src[m + ".weight"].flatten() for m in group])))
        _, s_h = nvfp4_ops.quantize(w, gs, scale_method="hessian", hessian=stats[n].hessian)
        assert torch.equal(q[n + ".weight_scale"].view(torch.uint8), s_h.view(torch.uint8)), n
        _, s_m = nvfp4_ops.quantize(w, gs, scale_method="mse")
        differ += int(not torch.equal(s_h.view(torch.uint8), s_m.view(torch.uint8)))
        assert n + ".input_global_scale" not in q  # W4A16
    # the activations are far from isotropic: the Hessian search moves scales in every layer
    assert differ == len(block1)


def tensors_of(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_w4a4_compressed_tensors(llama_dir, calib_txt, stats, tmp_path, capsys):
    from compressed_tensors.quantization import QuantizationConfig

    out = tmp_path / "ct"
    rc, _, err = run(capsys, str(llama_dir), "--out", str(out), "--scheme", "w4a4",
                     "--scales", "amax", "--calib", str(calib_txt), "--quiet")
    assert rc == 0, err
    q = tensors_of(out)
    want = _expected_input_scales(stats)
    for n in LINEARS:
        assert q[n + ".input_global_scale"].dtype == torch.float32
        assert torch.equal(q[n + ".input_global_scale"], want[n]), n
    assert "lm_head.input_global_scale" not in q  # lm_head stays in float
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    parsed = QuantizationConfig.model_validate(qc)
    act = parsed.config_groups["group_0"].input_activations
    assert (act.num_bits, act.group_size, act.strategy, act.dynamic) == (
        4, 16, "tensor_group", "local")  # str enums: equal to their values
    # transformers' default load runs a forward with 4-bit activations
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(llama_dir),
                                                            dtype=model.dtype).eval()
    ids = word_tokenizer(default_texts())(TEXTS[:1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        y, y0 = model(input_ids=ids).logits.float(), ref(input_ids=ids).logits.float()
    assert torch.isfinite(y).all()
    assert float((y - y0).norm() / y0.norm()) < 0.5
    loaded = model.model.layers[0].self_attn.q_proj.input_global_scale
    assert torch.equal(loaded.float().reshape(1), want[LINEARS[0]])


def test_w4a4_modelopt_builtin_texts(llama_dir, tmp_path, capsys):
    """ModelOpt W4A4 with no --calib: the built-in texts calibrate (the default)."""
    from nvfp4_ops.cli.calib_texts import default_texts as builtin

    out = tmp_path / "mo"
    rc, _, err = run(capsys, str(llama_dir), "--out", str(out), "--scheme", "w4a4",
                     "--layout", "modelopt", "--scales", "amax", "--quiet")
    assert rc == 0, err
    r = json.loads((out / "report.json").read_text())
    assert r["calibration"]["source"] == f"{len(builtin())} built-in texts"
    # the oracle runs block 0 only (block 1's scales are checked against each other)
    st = capture.capture_linear_stats(llama_dir, builtin(), device="cpu", want_hessian=False,
                                      layers=[0])
    q = tensors_of(out)
    for n in LINEARS:
        got = q[n + ".input_scale"]
        assert got.shape == () and got.dtype == torch.float32
        if n in st:
            amax = max(float(st[m].amax) for m in LINEARS if _group_key(m) == _group_key(n))
            want = formats.encode_to_decode(nvfp4_ops.global_scale(torch.tensor([amax])))
            assert torch.equal(got, want.reshape(())), n
        else:
            assert all(torch.equal(got, q[m + ".input_scale"]) for m in LINEARS
                       if _group_key(m) == _group_key(n))
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_algo"] == "NVFP4" and qc["config_groups"]["group_0"]["input_activations"]
    hf = json.loads((out / "hf_quant_config.json").read_text())
    assert hf["quantization"]["quant_algo"] == "NVFP4"


def test_calibration_errors(llama_dir, tmp_path, capsys):
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([[2, 5, 10**6]]))
    rc, _, err = run(capsys, str(llama_dir), "--out", str(tmp_path / "o"), "--scheme", "w4a4",
                     "--calib", str(ids))
    assert rc == 2 and "--calib: token id 1000000 is outside the vocabulary" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_w4a4_moe_per_expert_inputs(tmp_path, capsys):
    """Qwen2-MoE: the checkpoint has per-expert modules, transformers 5 runs them as fused
    3-D parameters; each expert's gate/up/down input scale is its captured expert's
    (``capture.expert_key``), gate and up sharing one (fused group)."""
    tok = word_tokenizer(default_texts())
    cfg = transformers.Qwen2MoeConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, moe_intermediate_size=64,
        shared_expert_intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
        architectures=["Qwen2MoeForCausalLM"])
    torch.manual_seed(1)
    src = tmp_path / "moe"
    transformers.Qwen2MoeForCausalLM(cfg).save_pretrained(str(src))
    tok.save_pretrained(str(src))
    calib = tmp_path / "t.json"
    calib.write_text(json.dumps(TEXTS))
    out = tmp_path / "q"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--scheme", "w4a4", "--scales",
                     "amax", "--calib", str(calib), "--quiet")
    assert rc == 0, err
    st = capture.capture_linear_stats(src, TEXTS, device="cpu", want_hessian=False)
    q = tensors_of(out)
    p = "model.layers.0.mlp.experts"
    for e in range(4):
        assert st[capture.expert_key(f"{p}.gate_up_proj", e)].tokens > 0  # texts reach it
        up = nvfp4_ops.global_scale(st[capture.expert_key(f"{p}.gate_up_proj", e)].amax.reshape(1))
        down = nvfp4_ops.global_scale(st[capture.expert_key(f"{p}.down_proj", e)].amax.reshape(1))
        assert torch.equal(q[f"{p}.{e}.gate_proj.input_global_scale"], up)
        assert torch.equal(q[f"{p}.{e}.up_proj.input_global_scale"], up)
        assert torch.equal(q[f"{p}.{e}.down_proj.input_global_scale"], down)
