"""MoE experts (nvfp4_ops.cli.experts): finding 3-D expert parameters, per-expert
quantization and scales, the gpt-oss MXFP4 tensors as transformers' loader reads them."""

import pytest
import torch

import nvfp4_ops.reference as ref
from nvfp4_ops import formats
from nvfp4_ops.cli import experts as X

GPT_OSS = {"model_type": "gpt_oss"}
P = "model.layers.0.mlp.experts"


def _gpt_oss_tensors(E=2, H=64, I=32):
    return [(f"{P}.gate_up_proj", [E, H, 2 * I], "BF16"), (f"{P}.gate_up_proj_bias", [E, 2 * I],
                                                          "BF16"),
            (f"{P}.down_proj", [E, I, H], "BF16"), (f"{P}.down_proj_bias", [E, H], "BF16"),
            ("model.layers.0.mlp.router.weight", [E, H], "BF16"),
            ("model.layers.0.self_attn.q_proj.weight", [H, H], "BF16")]


def test_find_expert_params_gpt_oss():
    ps = X.find_expert_params(_gpt_oss_tensors(), GPT_OSS)
    assert [p.name for p in ps] == [f"{P}.gate_up_proj", f"{P}.down_proj"]
    assert all(p.k_first for p in ps)
    assert ps[0].nk == (2, 64, 64) and ps[1].nk == (2, 64, 32)  # (E, N, K)
    # a model type whose 3-D experts are [E, N, K] (transformers' in-memory Mixtral form)
    ps = X.find_expert_params(_gpt_oss_tensors(), {"model_type": "mixtral"})
    assert not ps[0].k_first and ps[0].nk == (2, 64, 64)


def test_per_expert_modules_are_not_3d_params():
    mixtral = [(f"model.layers.0.block_sparse_moe.experts.{e}.w{i}.weight", [64, 32], "F32")
               for e in range(2) for i in (1, 2, 3)]
    assert X.find_expert_params(mixtral, {"model_type": "mixtral"}) == []
    with pytest.raises(ValueError, match="--layout gpt-oss holds only MoE experts .* tiny has "
                                         "none; use --layout compressed-tensors"):
        X.require_experts([], "tiny")
    X.require_experts(X.find_expert_params(_gpt_oss_tensors(), GPT_OSS), "tiny")


def test_orientation_round_trip():
    w = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    assert X.to_nk(w, True).shape == (2, 4, 3)
    assert torch.equal(X.from_nk(X.to_nk(w, True), True), w)
    assert X.to_nk(w, False) is w
    with pytest.raises(ValueError, match=r"expected 3 dims \[E, N, K\], got shape \[3, 4\]"):
        X.to_nk(w[0], True)


def test_nvfp4_each_expert_its_own_global_scale():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 32, 64, generator=g) * torch.tensor([0.01, 1.0, 40.0]).view(3, 1, 1)
    r = X.quantize_experts(w, "nvfp4")
    assert r["data"].shape == (3, 32, 32) and r["scales"].shape == (3, 32, 4)
    assert r["global_scale"].shape == (3,)
    for e in range(3):
        gs = ref.global_scale(w[e])
        assert torch.equal(r["global_scale"][e:e + 1], gs)
        q, s = ref.quantize(w[e], gs)
        assert torch.equal(r["data"][e], q) and torch.equal(r["scales"][e], s)
    # one tensor-wide scale would crush the small expert: per-expert keeps its error at 4 bits
    deq = ref.dequantize(r["data"][0], r["scales"][0], r["global_scale"][:1], torch.float32)
    assert float((deq - w[0]).norm() / w[0].norm()) < 0.15


@pytest.mark.parametrize("fmt, elem, per", [("mxfp4", "e2m1", 2), ("mxfp8", "e4m3", 1)])
def test_mx_experts(fmt, elem, per):
    w = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(2))
    r = X.quantize_experts(w, fmt)
    assert "global_scale" not in r
    assert r["data"].shape == (2, 16, 64 // per) and r["scales"].shape == (2, 16, 2)
    q, s = ref.mx_quantize(w[1], elem)
    assert torch.equal(r["data"][1].view(torch.uint8), q.view(torch.uint8))
    assert torch.equal(r["scales"][1].view(torch.uint8), s.view(torch.uint8))
    with pytest.raises(ValueError, match="format must be nvfp4, mxfp8 or mxfp4, got 'int4'"):
        X.quantize_experts(w, "int4")


def test_gpt_oss_tensors_as_transformers_reads_them():
    mx = pytest.importorskip("transformers.integrations.mxfp4",
                             reason="transformers (with its mxfp4 integration) is not installed")
    E, H, I = 2, 64, 32
    g = torch.Generator().manual_seed(3)
    disk = {"gate_up_proj": torch.randn(E, H, 2 * I, generator=g),  # [E, K, N], gpt-oss
            "down_proj": torch.randn(E, I, H, generator=g)}
    for leaf, w in disk.items():
        r = X.quantize_experts(X.to_nk(w, True), "mxfp4")
        t = X.gpt_oss_tensors(f"{P}.{leaf}", r["data"], r["scales"])
        blocks, scales = t[f"{P}.{leaf}_blocks"], t[f"{P}.{leaf}_scales"]
        N, K = w.shape[2], w.shape[1]
        assert blocks.shape == (E, N, K // 32, 16) and blocks.dtype == torch.uint8
        assert scales.shape == (E, N, K // 32) and scales.dtype == torch.uint8
        # transformers' own dequantization (dequantize=True path, and its CPU fallback)
        got = mx.convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
        want = torch.stack([ref.mx_dequantize(r["data"][e], r["scales"][e], "e2m1",
                                              torch.float32) for e in range(E)])
        assert got.shape == w.shape
        assert torch.equal(got, X.from_nk(want, True))
        assert float((got - w).norm() / w.norm()) < 0.2
        # and nvfp4_ops reads it back byte for byte
        data, sc = formats.from_gpt_oss_mxfp4({"blocks": blocks, "scales": scales})
        assert torch.equal(data, r["data"]) and torch.equal(sc, r["scales"].view(torch.uint8))


def test_gpt_oss_quantization_config():
    qc = X.gpt_oss_quantization_config([f"{P}.down_proj", f"{P}.gate_up_proj"])
    assert qc == {"quant_method": "mxfp4",
                  "modules_to_not_convert": ["model.layers.*.self_attn",
                                             "model.layers.*.mlp.router",
                                             "model.embed_tokens", "lm_head", P]}
