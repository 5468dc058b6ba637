"""Fused groups (nvfp4_ops.cli.groups): detection, the override option, the shared scale,
and a vLLM-style loader (max of the shards' per-tensor scales) that must reproduce the
per-layer dequantization exactly."""

import pytest
import torch

import nvfp4_ops.reference as ref
from nvfp4_ops import formats
from nvfp4_ops.cli import groups as G

LLAMA = [f"model.layers.0.{m}.weight" for m in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]


def _labels(names, rules=G.DEFAULT_GROUPS):
    return [g.label for g in G.find_groups(names, rules)]


def test_llama_qkv_and_gate_up():
    gs = G.find_groups(LLAMA)
    assert [g.members for g in gs] == [tuple(LLAMA[:3]), tuple(LLAMA[4:6])]
    assert [g.label for g in gs] == ["model.layers.0.self_attn.{q_proj,k_proj,v_proj}",
                                     "model.layers.0.mlp.{gate_proj,up_proj}"]


def test_families():
    bert = [f"encoder.layer.3.attention.self.{m}.weight" for m in ("value", "query", "key")]
    bert.append("encoder.layer.3.attention.output.dense.weight")
    assert _labels(bert) == ["encoder.layer.3.attention.self.{query,key,value}"]
    mixtral = [f"model.layers.1.block_sparse_moe.experts.{e}.w{i}.weight"
               for e in range(2) for i in (1, 2, 3)]
    assert _labels(mixtral) == [f"model.layers.1.block_sparse_moe.experts.{e}.{{w1,w3}}"
                                for e in range(2)]
    qwen_moe = [f"model.layers.0.mlp.{p}.{m}.weight" for p in ("experts.0", "experts.1",
                                                                 "shared_expert")
                for m in ("gate_proj", "up_proj", "down_proj")]
    assert len(_labels(qwen_moe)) == 3  # one gate/up group per expert and the shared expert
    deepseek = [f"model.layers.0.self_attn.{m}.weight" for m in
                ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")]
    assert _labels(deepseek) == ["model.layers.0.self_attn.{q_a_proj,kv_a_proj_with_mqa}"]
    phi3 = ["model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.mlp.gate_up_proj.weight"]
    assert _labels(phi3) == []  # fused already: one tensor, nothing to share
    # gemma / qwen2 use the llama names; different layers never mix
    two = LLAMA + [n.replace("layers.0", "layers.1") for n in LLAMA]
    assert len(_labels(two)) == 4


def test_excluded_member_leaves_the_group():
    names = [n for n in LLAMA if "k_proj" not in n]
    assert _labels(names)[0] == "model.layers.0.self_attn.{q_proj,v_proj}"
    assert _labels([LLAMA[0]]) == []


def test_parse_option():
    assert G.parse_groups(None) == G.DEFAULT_GROUPS
    assert G.parse_groups("auto") == G.DEFAULT_GROUPS
    assert G.parse_groups("none") == ()
    assert _labels(LLAMA, G.parse_groups("none")) == []
    rules = G.parse_groups(" q_proj,k_proj ; gate_proj,up_proj")
    assert rules == (("q_proj", "k_proj"), ("gate_proj", "up_proj"))
    assert _labels(LLAMA, rules)[0] == "model.layers.0.self_attn.{q_proj,k_proj}"
    for bad, msg in (("q_proj,", "empty member"), ("q_proj", "1 member"),
                     ("a,b;b,c", "'b' is in two groups"), ("x.q,k", "dotted")):
        with pytest.raises(ValueError, match=msg):
            G.parse_groups(bad)


def test_shared_global_scale_rules():
    f = G.shared_global_scale
    t = torch.tensor
    assert f([t(2.0), t(8.0), t(4.0)]).item() == torch.tensor(2688.0 / 8.0).item()
    assert f([t([0.0]), t([0.0])]).item() == 1.0
    assert f([t(1.0), t(float("inf"))]).item() == 0.0
    assert torch.isnan(f([t(1.0), t(float("nan"))])).all()
    tiny = f([t(1e-37), t(0.0)])
    assert tiny.item() == G.FLT_MAX and tiny.dtype == torch.float32 and tiny.shape == (1,)
    assert f([t(1e-30)]).item() == (torch.tensor(2688.0) / torch.tensor(1e-30)).item()
    with pytest.raises(ValueError, match="at least 1"):
        f([])
    with pytest.raises(ValueError, match="1 element per amax"):
        f([t([1.0, 2.0])])


def _quantize_group(ws, shared):
    """Each member quantized with the group's scale (shared) or its own (not shared)."""
    out = []
    gs_group = G.shared_global_scale([w.abs().amax() for w in ws])
    for w in ws:
        gs = gs_group if shared else ref.global_scale(w)
        q, s = ref.quantize(w, gs)
        out.append((q, s, gs))
    return out


def _vllm_load(shards, layout):
    """vLLM's rule for a fused layer: ONE scale, the max over the shards' per-tensor scales
    (compressed-tensors: encode ``weight_global_scale``; ModelOpt: decode ``weight_scale_2``),
    then each shard dequantized with it."""
    if layout == "compressed-tensors":
        d = [formats.to_compressed_tensors(q, s, gs) for q, s, gs in shards]
        gmax = torch.stack([x["weight_global_scale"] for x in d]).max().reshape(1)
        return [ref.dequantize(x["weight_packed"], x["weight_scale"], gmax, torch.float32)
                for x in d]
    d = [formats.to_modelopt(q, s, gs) for q, s, gs in shards]
    dec = torch.stack([x["weight_scale_2"] for x in d]).max()
    gmax = formats.decode_to_encode(dec).reshape(1)
    return [ref.dequantize(x["weight"], x["weight_scale"], gmax, torch.float32) for x in d]


@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
def test_vllm_max_of_shards_rule(layout):
    g = torch.Generator().manual_seed(0)
    # q/k/v with very different ranges (as a real attention layer has)
    ws = [torch.randn(64, 128, generator=g) * s for s in (0.02, 0.3, 5.0)]
    shared = _quantize_group(ws, shared=True)
    per_layer = [ref.dequantize(q, s, gs, torch.float32) for q, s, gs in shared]
    loaded = _vllm_load(shared, layout)
    if layout == "compressed-tensors":
        for a, b in zip(loaded, per_layer):
            assert torch.equal(a, b)
    else:  # decode scales: RN(1/RN(1/gs)) may be 1 ulp off gs (formats docstring)
        for a, b in zip(loaded, per_layer):
            torch.testing.assert_close(a, b, rtol=2.5e-7, atol=0)
    # the rule must matter: per-tensor scales load wrong through the same loader
    own = _quantize_group(ws, shared=False)
    bad = _vllm_load(own, layout)
    errs = [float((b - w).norm() / w.norm()) for b, w in zip(bad, ws)]
    good = [float((a - w).norm() / w.norm()) for a, w in zip(loaded, ws)]
    assert max(errs) > 2 * max(good), (errs, good)


def _fused_ckpt(folder):
    """q/k/v and gate/up with very different ranges, and o_proj alone."""
    from safetensors.torch import save_file

    folder.mkdir()
    g = torch.Generator().manual_seed(5)
    scales = {"q_proj": 0.02, "k_proj": 0.3, "v_proj": 4.0, "o_proj": 1.0, "gate_proj": 0.1,
              "up_proj": 2.0}
    t = {}
    for leaf, s in scales.items():
        part = "mlp" if leaf in ("gate_proj", "up_proj") else "self_attn"
        t[f"model.layers.0.{part}.{leaf}.weight"] = (torch.randn(32, 64, generator=g) * s)
    save_file({k: v.to(torch.bfloat16) for k, v in t.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "llama", "dtype": "bfloat16"}')
    return t


@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
def test_cli_writes_shared_scales_that_vllm_loads_exactly(tmp_path, layout):
    from safetensors.torch import load_file

    from nvfp4_ops.cli.main import main

    _fused_ckpt(tmp_path / "in")
    outs = {}
    for spec in ("auto", "none"):
        out = tmp_path / spec
        assert main(["quantize", str(tmp_path / "in"), "--out", str(out), "--layout", layout,
                     "--scales", "amax", "--fused-groups", spec, "--device", "cpu",
                     "--quiet"]) == 0
        outs[spec] = load_file(str(out / "model.safetensors"))
    import json
    rows = json.loads((tmp_path / "auto" / "report.json").read_text())["fused_groups"]
    assert sorted(r["group"] for r in rows) == ["model.layers.0.mlp.{gate_proj,up_proj}",
                                                "model.layers.0.self_attn.{q_proj,k_proj,v_proj}"]
    assert json.loads((tmp_path / "none" / "report.json").read_text())["fused_groups"] == []
    read = formats.from_compressed_tensors if layout == "compressed-tensors" else \
        formats.from_modelopt
    gkey = "weight_global_scale" if layout == "compressed-tensors" else "weight_scale_2"
    errs = {}
    for spec, sd in outs.items():
        for r in rows:
            mods = [m[:-len(".weight")] for m in r["members"]]
            shards = [read({k[len(m) + 1:]: v for k, v in sd.items() if k.startswith(m + ".")})
                      for m in mods]
            per_layer = [ref.dequantize(q, s, gs, torch.float32) for q, s, gs, _ in shards]
            if spec == "auto":  # one stored scale for the whole group
                assert len({float(sd[f"{m}.{gkey}"].reshape(())) for m in mods}) == 1
            loaded = _vllm_load([(q, s, gs) for q, s, gs, _ in shards], layout)
            for a, b in zip(loaded, per_layer):
                errs.setdefault(spec, []).append(float((a - b).norm() / b.norm()))
    assert max(errs["auto"]) == 0.0   # exactly the per-layer dequantization
    assert max(errs["none"]) > 0.05   # per-tensor scales: vLLM's max rule breaks a shard


def test_group_input_scales():
    rules = G.find_groups(LLAMA)
    t = torch.tensor
    igs = {LLAMA[0]: t([10.0]), LLAMA[1]: t([2.0]), LLAMA[2]: None,  # v_proj: no inputs
           LLAMA[4]: t([1.0]), LLAMA[5]: t([1.0])}
    out = G.group_input_scales(rules, igs.get)
    assert set(out) == {LLAMA[0], LLAMA[1], LLAMA[4], LLAMA[5]}
    assert out[LLAMA[0]].item() == out[LLAMA[1]].item() == 2.0  # 2688 / the largest amax
    assert out[LLAMA[4]].shape == (1,)
    assert G.group_input_scales(rules, lambda m: None) == {}


def test_cli_w4a4_input_scales_shared(tmp_path):
    """ModelOpt W4A4 with captured inputs: q/k/v captured with different ranges get one
    input_scale (vLLM: input_scale.max() over the fused shards); a layer without captured
    inputs is an error in W4A4 (no input scale), so only q/k/v are quantized here."""
    from safetensors.torch import load_file, save_file

    from nvfp4_ops.cli.main import main

    _fused_ckpt(tmp_path / "in")
    g = torch.Generator().manual_seed(6)
    acts = {f"model.layers.0.self_attn.{m}": torch.randn(40, 64, generator=g) * s
            for m, s in (("q_proj", 1.0), ("k_proj", 3.0), ("v_proj", 0.5))}
    save_file(acts, str(tmp_path / "acts.safetensors"))
    out = tmp_path / "o"
    argv = ["quantize", str(tmp_path / "in"), "--out", str(out), "--layout", "modelopt",
            "--scales", "amax", "--calib", str(tmp_path / "acts.safetensors"), "--scheme",
            "w4a4", "--device", "cpu", "--quiet"]
    assert main(argv) == 2 and not out.exists()  # gate/up/o have no captured inputs
    assert main(["quantize", str(tmp_path / "in"), "--out", str(out), "--layout", "modelopt",
                 "--scales", "amax", "--calib", str(tmp_path / "acts.safetensors"), "--scheme", "w4a4",
                 "--include", "*.self_attn.[qkv]_proj", "--device", "cpu", "--quiet"]) == 0
    sd = load_file(str(out / "model.safetensors"))
    got = {m: sd[f"model.layers.0.self_attn.{m}.input_scale"] for m in ("q_proj", "k_proj",
                                                                          "v_proj")}
    want = formats.encode_to_decode(ref.global_scale(acts["model.layers.0.self_attn.k_proj"]))
    for v in got.values():
        assert torch.equal(v.reshape(1), want.reshape(1))


@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
def test_nn_layers_of_a_fused_checkpoint_match_per_layer_dequantization(tmp_path, layout):
    """nvfp4_ops.nn layers built from the CLI's W4A4 output of fused groups
    (``NVFP4Linear.from_quantized(*from_compressed_tensors / from_modelopt(...))``): each
    member's weight is the per-layer dequantization of its stored tensors, the members of a
    group share one weight and one input global scale, and the forward equals quantized
    activations times that weight."""
    from safetensors.torch import load_file, save_file

    from nvfp4_ops.cli.main import main
    from nvfp4_ops.nn import NVFP4Linear

    _fused_ckpt(tmp_path / "in")
    g = torch.Generator().manual_seed(7)
    acts = {f"model.layers.0.{p}.{m}": torch.randn(40, 64, generator=g) * s
            for p, m, s in (("self_attn", "q_proj", 1.0), ("self_attn", "k_proj", 3.0),
                            ("self_attn", "v_proj", 0.5), ("self_attn", "o_proj", 2.0),
                            ("mlp", "gate_proj", 1.5), ("mlp", "up_proj", 0.25))}
    save_file(acts, str(tmp_path / "acts.safetensors"))
    out = tmp_path / "o"
    assert main(["quantize", str(tmp_path / "in"), "--out", str(out), "--layout", layout,
                 "--scales", "amax", "--scheme", "w4a4", "--calib",
                 str(tmp_path / "acts.safetensors"), "--device", "cpu", "--quiet"]) == 0
    sd = load_file(str(out / "model.safetensors"))
    read = formats.from_compressed_tensors if layout == "compressed-tensors" else \
        formats.from_modelopt
    x = torch.randn(5, 64, generator=g)
    for members in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("o_proj",)):
        layers, gss, igss = [], set(), set()
        for leaf in members:
            m = f"model.layers.0.{'mlp' if leaf in ('gate_proj', 'up_proj') else 'self_attn'}.{leaf}"
            stored = read({k[len(m) + 1:]: v for k, v in sd.items() if k.startswith(m + ".")})
            layer = NVFP4Linear.from_quantized(*stored)
            assert layer.act_quant == "static"
            per_layer = ref.dequantize(stored[0], stored[1], stored[2], torch.float32)
            assert torch.equal(layer.dequantize_weight(torch.float32), per_layer)
            xq = ref.quant_dequant(x, stored[3])
            torch.testing.assert_close(layer(x), xq @ per_layer.T, rtol=1e-5, atol=1e-5)
            gss.add(float(layer.weight_global_scale))
            igss.add(float(layer.input_global_scale))
            layers.append(layer)
        assert len(gss) == 1 and len(igss) == 1, (members, gss, igss)
        if len(members) > 1:  # the shared input scale is the one of the widest member input
            amax = max(float(acts[f"model.layers.0.{'mlp' if l in ('gate_proj', 'up_proj') else 'self_attn'}.{l}"].abs().amax()) for l in members)
            want = ref.global_scale(torch.tensor([amax]))
            got = torch.tensor([igss.pop()])
            if layout == "compressed-tensors":
                assert torch.equal(got, want)
            else:  # through the decode scale: RN(1/RN(1/gs)) may be 1 ulp off
                torch.testing.assert_close(got, want, rtol=2.5e-7, atol=0)
