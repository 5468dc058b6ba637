"""MXFP4Linear (gpt-oss style W4A16): building from float and from stored tensors (the CLI's
compressed-tensors output, gpt-oss blocks), outputs against float64 and the reference, state
dict, moves, repr, quantize_linears, and what it refuses."""

import io

import pytest
import torch
from torch import nn

import nvfp4_ops
from nvfp4_ops import formats
from nvfp4_ops import nn as qnn
from nvfp4_ops import reference as ref
from nvfp4_ops.nn import MXFP4Linear, MXFP8Linear

from ._common import N, _bytes, _linear, _rel, _x

K4 = 96  # a multiple of 32, not of 64


def _weight64(layer):
    return ref.mx_dequantize(layer.weight_packed, layer.weight_scale, "e2m1",
                             torch.float32).double()


@pytest.mark.parametrize("rounding", ["rceil", "floor"])
@pytest.mark.parametrize("scale_method", ["amax", "mse"])
def test_from_float_quantizes_like_the_op(rounding, scale_method):
    lin = _linear(K4, N, dtype=torch.bfloat16)
    layer = MXFP4Linear.from_float(lin, rounding=rounding, scale_method=scale_method)
    data, scales = nvfp4_ops.mx_quantize(lin.weight.detach(), "e2m1", rounding=rounding,
                                         scale_method=scale_method)
    assert layer.weight_packed.dtype == torch.uint8 and layer.weight_packed.shape == (N, K4 // 2)
    assert layer.weight_scale.dtype == torch.uint8 and layer.weight_scale.shape == (N, K4 // 32)
    assert torch.equal(layer.weight_packed, data) and torch.equal(layer.weight_scale, scales)
    assert layer.weight_data is layer.weight_packed
    assert layer.rounding == rounding and layer.scale_method == scale_method
    assert layer.scheme == "W4A16" and layer.weight_only
    assert torch.equal(layer.bias, lin.bias.detach())


def test_refuses_activation_schemes_and_bad_shapes():
    with pytest.raises(ValueError, match="act_quant='dynamic' does not exist for MXFP4Linear: "
                       "it is weight-only"):
        MXFP4Linear(64, 8, act_quant="dynamic")
    with pytest.raises(ValueError, match="act_quant='static' does not exist for MX formats"):
        MXFP4Linear(64, 8, act_quant="static")
    with pytest.raises(ValueError, match=r"act_quant must be one of \(None,\), got 'yes'"):
        MXFP4Linear(64, 8, act_quant="yes")
    with pytest.raises(ValueError, match="multiple of 32, got 48"):
        MXFP4Linear(48, 8)
    with pytest.raises(ValueError, match="rounding must be 'rceil' or 'floor', got 'up'"):
        MXFP4Linear(64, 8, rounding="up")
    data, scales = nvfp4_ops.mx_quantize(_x((8, 64)), "e2m1")
    with pytest.raises(ValueError, match=r"weight_packed must be uint8 \[N, K/2\] \(two E2M1 "
                       r"codes per byte\), got torch.float32 \[8, 32\]"):
        MXFP4Linear.from_quantized(data.float(), scales)
    with pytest.raises(ValueError, match=r"weight_scale must be uint8 E8M0 \[N, K/32\] = "
                       r"\[8, 2\], got torch.uint8 \[8, 1\]"):
        MXFP4Linear.from_quantized(data, scales[:, :1])
    with pytest.raises(ValueError, match=r"MXFP8Linear.from_quantized: weight must be "
                       r"float8_e4m3fn \[N, K\]"):
        MXFP8Linear.from_quantized(data.float(), scales)


@pytest.mark.parametrize("backend", ["reference", "dequant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_vs_float64(backend, dtype):
    lin = _linear(K4, N, dtype=dtype)
    x = _x((2, 7, K4), dtype, seed=4)
    layer = MXFP4Linear.from_float(lin, backend=backend)
    assert layer.active_backend == backend
    y = layer(x)
    assert y.shape == (2, 7, N) and y.dtype == dtype and torch.isfinite(y).all()
    want = x.double() @ _weight64(layer).t() + lin.bias.double()
    assert _rel(y, want) < {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    # and the quantized layer approximates the float one (E2M1: ~10 % per weight)
    assert _rel(y, lin(x)) < 0.2


def test_reference_backend_is_the_reference_bitwise():
    lin = _linear(K4, N, dtype=torch.float16)
    layer = MXFP4Linear.from_float(lin, backend="reference")
    x = _x((7, K4), torch.float16, seed=9)
    w = ref.mx_dequantize(layer.weight_packed, layer.weight_scale, "e2m1", torch.float32)
    want = (x.float() @ w.t() + lin.bias.float()).to(torch.float16)
    assert torch.equal(_bytes(layer(x)), _bytes(want))
    # the MX op of the fused backend is the same thing on CPU
    assert torch.equal(layer(x), ref.gemm_mx_w16(x, layer.weight_packed, layer.weight_scale,
                                                 "e2m1", layer.bias))


def test_state_dict_round_trip_and_e8m0_scales():
    for bias in (True, False):
        layer = MXFP4Linear.from_float(_linear(K4, N, bias=bias, dtype=torch.bfloat16),
                                       rounding="floor")
        buf = io.BytesIO()
        torch.save(layer.state_dict(), buf)
        buf.seek(0)
        sd = torch.load(buf, weights_only=True)
        assert set(sd) == {"weight_packed", "weight_scale"} | ({"bias"} if bias else set())
        new = MXFP4Linear(K4, N, bias=bias, rounding="floor")
        new.load_state_dict(sd)
        for name, t in layer.state_dict().items():
            assert new.state_dict()[name].dtype == t.dtype
            assert torch.equal(_bytes(new.state_dict()[name]), _bytes(t)), name
        x = _x((4, K4), torch.bfloat16)
        assert torch.equal(new(x), layer(x))
        sd["weight_scale"] = sd["weight_scale"].view(torch.float8_e8m0fnu)  # as some tools store it
        e8 = MXFP4Linear(K4, N, bias=bias)
        e8.load_state_dict(sd)
        assert e8.weight_scale.dtype == torch.uint8
        assert torch.equal(e8.weight_scale, layer.weight_scale)


def test_from_quantized_and_gpt_oss_blocks():
    lin = _linear(K4, N, dtype=torch.bfloat16)
    data, scales = nvfp4_ops.mx_quantize(lin.weight.detach(), "e2m1")
    bias = lin.bias.detach()
    a = MXFP4Linear.from_quantized(data, scales.view(torch.float8_e8m0fnu), bias=bias)
    assert a.weight_packed.data_ptr() == data.data_ptr()  # used as it is (contiguous)
    assert a.weight_scale.dtype == torch.uint8 and a.in_features == K4 and a.out_features == N
    g = formats.to_gpt_oss_mxfp4(data, scales)  # blocks [N, K/32, 16]
    b = MXFP4Linear.from_quantized(*formats.from_gpt_oss_mxfp4(g), bias=bias)
    x = _x((3, K4), torch.bfloat16)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), MXFP4Linear.from_float(lin)(x))


def test_dtype_moves_keep_the_format_and_repr():
    layer = MXFP4Linear.from_float(_linear(K4, N, dtype=torch.bfloat16), scale_method="mse")
    before = {k: v.clone() for k, v in layer.state_dict().items() if k != "bias"}
    layer.half()
    layer.to(torch.float32)
    assert layer.bias.dtype == torch.float32
    for k, v in before.items():
        assert layer.state_dict()[k].dtype == torch.uint8 and torch.equal(layer.state_dict()[k], v)
    assert layer(_x((2, K4), torch.float16)).dtype == torch.float16
    r = repr(layer)
    assert r.startswith("MXFP4Linear(")
    assert (f"in_features={K4}, out_features={N}, bias=True, format=MXFP4 (E2M1, E8M0 scale "
            "per 32, rounding=rceil), scheme=W4A16 (weight-only), scale_method=mse, "
            "backend=reference") in r


def test_quantize_linears_mxfp4():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 48), nn.Linear(48, 4))
    x = _x((3, 64))
    want = model(x)
    qnn.quantize_linears(model, "mxfp4", skip={"2"}, rounding="floor")
    assert isinstance(model[0], MXFP4Linear) and model[0].rounding == "floor"
    assert type(model[2]) is nn.Linear  # skipped
    assert type(model[3]) is nn.Linear  # K = 48: not a multiple of 32
    y = model(x)
    assert y.shape == (3, 4) and _rel(y, want) < 0.2
    with pytest.raises(KeyError, match="fmt must be one of"):
        qnn.quantize_linears(model, "mxfp6")


def test_layers_from_the_cli_mxfp4_checkpoint(tmp_path):
    """``nvfp4-ops quantize --format mxfp4`` (compressed-tensors ``mxfp4-pack-quantized``)
    writes ``<module>.weight_packed`` / ``.weight_scale``: MXFP4Linear loads them as they are
    (from_quantized, and load_state_dict of a fresh layer), equal to the CLI's stored weight."""
    from safetensors.torch import load_file, save_file

    from nvfp4_ops.cli.main import main

    g = torch.Generator().manual_seed(3)
    src = {"model.layers.0.mlp.up_proj.weight": (torch.randn(48, 64, generator=g) * 0.05)
           .bfloat16(),
           "model.layers.0.mlp.up_proj.bias": torch.randn(48, generator=g).bfloat16()}
    (tmp_path / "in").mkdir()
    save_file(src, str(tmp_path / "in" / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "in" / "config.json").write_text('{"model_type": "toy", "hidden_size": 64}')
    out = tmp_path / "out"
    assert main(["quantize", str(tmp_path / "in"), "--out", str(out), "--format", "mxfp4",
                 "--scales", "amax", "--device", "cpu", "--quiet"]) == 0
    sd = load_file(str(out / "model.safetensors"))
    p = "model.layers.0.mlp.up_proj."
    mod = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    assert set(mod) == {"weight_packed", "weight_scale", "bias"}
    a = MXFP4Linear.from_quantized(mod["weight_packed"], mod["weight_scale"], bias=mod["bias"])
    b = MXFP4Linear(64, 48)
    b.load_state_dict(mod)
    stored = ref.mx_dequantize(mod["weight_packed"], mod["weight_scale"], "e2m1", torch.float32)
    want_w = ref.mx_dequantize(*ref.mx_quantize(src[p + "weight"], "e2m1"), "e2m1", torch.float32)
    assert torch.equal(stored, want_w)  # amax scales: what from_float would store
    x = _x((5, 64))
    for layer in (a, b):
        assert torch.equal(layer.dequantize_weight(torch.float32), stored)
        torch.testing.assert_close(layer(x), x @ stored.T + mod["bias"].float(),
                                   rtol=1e-5, atol=1e-5)
