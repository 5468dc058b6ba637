"""The choice of the GEMM backend: per device (a mocked capability stands for GPUs), by keyword,
by the environment variable, and its resolution in a layer on build and on set_backend."""

import pytest
import torch

from nvfp4_ops import _library
from nvfp4_ops.nn import (
    ENV_VAR as ENV,
    MXFP4Linear,
    MXFP8Linear,
    NVFP4Linear,
    select_linear_backend,
    select_mxfp4_linear_backend,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)
from nvfp4_ops.nn import gemm
from nvfp4_ops.nn.gemm import FUSED_MAX_M, apply_linear, fused_max_m, fused_path

from ._common import _linear, _x


# --------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------


def _mock_gpu(monkeypatch, cap):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)


@pytest.mark.parametrize("select", [select_nvfp4_linear_backend, select_mxfp8_linear_backend])
def test_select_cpu_default(select):
    name, reasons = select("cpu")
    assert name == "reference"
    assert set(reasons) == {"scaled_mm", "fused", "dequant"}
    assert "sm_100+" in reasons["scaled_mm"] and "cpu" in reasons["scaled_mm"]
    assert select("cpu", weight_only=True)[1]["fused"] == (
        "the fused kernel needs a CUDA GPU (sm_80+), got device 'cpu'")


def test_select_cpu_default_mxfp4():
    # weight-only whatever weight_only says: no activation-quantized scheme
    for weight_only in (False, True):
        name, reasons = select_mxfp4_linear_backend("cpu", weight_only=weight_only)
        assert name == "reference"
        assert reasons["scaled_mm"] == _WEIGHT_ONLY["MXFP4"][1]
        assert reasons["fused"] == "the fused kernel needs a CUDA GPU (sm_80+), got device 'cpu'"


@pytest.mark.parametrize("select", [select_nvfp4_linear_backend, select_mxfp8_linear_backend])
def test_select_mocked_blackwell_and_hopper(monkeypatch, select):
    _mock_gpu(monkeypatch, (10, 0))
    # scaled_mm can run on sm_100+, but has not run on Blackwell yet: chosen only when asked
    # the fused kernel serves weight-only schemes only (and NVFP4 only)
    fused_why = select("cuda")[1]["fused"]
    assert "weight-only" in fused_why or "no fused MXFP8 kernel" in fused_why
    not_auto = {"scaled_mm": "not chosen automatically: it has not run on Blackwell hardware "
                             "yet; ask for it with backend='scaled_mm' or "
                             f"{ENV}=scaled_mm", "fused": fused_why}
    assert select("cuda") == ("dequant", not_auto)
    assert select() == ("dequant", not_auto)  # the default device is the GPU
    assert select("cuda", backend="scaled_mm") == ("scaled_mm", {})
    monkeypatch.setenv(ENV, "scaled_mm")
    assert select("cuda") == ("scaled_mm", {})
    monkeypatch.delenv(ENV)
    name, reasons = select("cuda", weight_only=True)
    assert name == "dequant" and "weight-only" in reasons["scaled_mm"]
    with pytest.raises(RuntimeError, match="weight-only"):
        select("cuda", backend="scaled_mm", weight_only=True)
    _mock_gpu(monkeypatch, (12, 0))
    assert select("cuda") == ("dequant", not_auto)
    assert select("cuda", backend="scaled_mm")[0] == "scaled_mm"
    _mock_gpu(monkeypatch, (9, 0))
    name, reasons = select("cuda")
    assert name == "dequant"
    assert reasons == {"scaled_mm": "scaled_mm needs sm_100+, this GPU is sm_90",
                       "fused": fused_why}
    with pytest.raises(RuntimeError, match=r"scaled_mm needs sm_100\+, this GPU is sm_90"):
        select("cuda", backend="scaled_mm")
    assert select("cuda", backend="reference") == ("reference", {})
    _mock_gpu(monkeypatch, (8, 0))
    assert select("cuda")[0] == "dequant"


def test_select_env_override(monkeypatch):
    monkeypatch.setenv(ENV, "dequant")
    assert select_nvfp4_linear_backend("cpu") == ("dequant", {})
    assert select_nvfp4_linear_backend("cpu", backend="reference")[0] == "reference"  # keyword wins
    monkeypatch.setenv(ENV, "auto")
    assert select_nvfp4_linear_backend("cpu")[0] == "reference"
    monkeypatch.setenv(ENV, "scaled_mm")
    with pytest.raises(RuntimeError, match=f"chosen by the environment variable {ENV}"):
        select_mxfp8_linear_backend("cpu")
    _mock_gpu(monkeypatch, (9, 0))
    with pytest.raises(RuntimeError, match=r"this GPU is sm_90"):
        select_nvfp4_linear_backend("cuda")
    monkeypatch.setenv(ENV, "cutlass")
    with pytest.raises(ValueError, match="unknown linear backend 'cutlass'"):
        select_nvfp4_linear_backend("cpu")
    with pytest.raises(ValueError, match="unknown linear backend 'fast'"):
        NVFP4Linear(64, 8, backend="fast")


def test_layer_backend_resolution(monkeypatch):
    lin = _linear(64, 16)
    assert NVFP4Linear.from_float(lin).active_backend == "reference"
    monkeypatch.setenv(ENV, "dequant")
    layer = NVFP4Linear.from_float(lin)
    assert layer.active_backend == "dequant" and layer.backend is None
    monkeypatch.delenv(ENV)
    # asking for scaled_mm on CPU builds (to be moved to a GPU later) but cannot run here
    layer = NVFP4Linear.from_float(lin, act_quant="dynamic", backend="scaled_mm")
    assert layer.active_backend is None
    assert "backend=unavailable (asked: scaled_mm)" in repr(layer)
    with pytest.raises(RuntimeError, match="scaled_mm needs a CUDA GPU with sm_100"):
        layer(_x((2, 64)))
    with pytest.raises(RuntimeError, match="scaled_mm needs a CUDA GPU"):
        layer.set_backend("scaled_mm")
    layer.set_backend("dequant")
    assert layer(_x((2, 64))).shape == (2, 16)
    w16 = MXFP8Linear.from_float(_linear(64, 16))
    with pytest.raises(RuntimeError, match="weight-only"):
        w16.set_backend("scaled_mm")


# --------------------------------------------------------------------------------------
# The fused weight-only GEMMs (nvfp4.gemm_nvfp4_w4a16, nvfp4.gemm_mx_w16): selection with
# mocked GPUs and builds, and their wiring on CPU (where the ops are the reference)
# --------------------------------------------------------------------------------------


def _mock_kernel(monkeypatch, built=True, ops=None):
    """``op_implementation`` says "cuda-kernel" for the ops in ``ops`` (all when None) if
    ``built``; it records the ops asked about in the returned list."""
    asked = []

    def impl(op, device="cuda"):
        asked.append(op)
        if built and (ops is None or op in ops):
            return "cuda-kernel", "hand-written CUDA kernel"
        return "reference", ("this is a CPU-only build" if not built else
                             "no CUDA kernel for this op in this build")

    monkeypatch.setattr(_library, "op_implementation", impl)
    return asked


#: format -> (fused op, the scaled_mm reason of its weight-only scheme)
_WEIGHT_ONLY = {
    "NVFP4": ("gemm_nvfp4_w4a16",
              "scaled_mm multiplies two block-scaled operands; the weight-only scheme (W4A16) "
              "keeps the activation in high precision (use act_quant='dynamic' or 'static' "
              "for the native GEMM)"),
    "MXFP8": ("gemm_mx_w16",
              "scaled_mm multiplies two block-scaled operands; the weight-only scheme (W8A16) "
              "keeps the activation in high precision (use act_quant='dynamic' for the "
              "native GEMM)"),
    "MXFP4": ("gemm_mx_w16",
              "scaled_mm multiplies two block-scaled operands; the weight-only scheme (W4A16) "
              "keeps the activation in high precision (the MXFP4 layer has no "
              "activation-quantized scheme)"),
}


@pytest.mark.parametrize("fmt", ["NVFP4", "MXFP8", "MXFP4"])
def test_select_fused_on_ampere_and_hopper(monkeypatch, fmt):
    op, weight_only = _WEIGHT_ONLY[fmt]
    asked = _mock_kernel(monkeypatch)
    for cap in ((8, 0), (8, 6), (8, 9), (9, 0)):
        _mock_gpu(monkeypatch, cap)
        assert select_linear_backend(fmt, "cuda", weight_only=True) == (
            "fused", {"scaled_mm": weight_only}), cap
    assert set(asked) == {op}  # the availability of the format's own op decides
    if fmt == "MXFP4":  # no activation scheme: weight-only whatever weight_only says
        assert select_mxfp4_linear_backend("cuda") == ("fused", {"scaled_mm": weight_only})
        return
    # W4A4 / W8A8 quantize the activation: not the fused kernel's scheme
    name, reasons = select_linear_backend(fmt, "cuda")
    assert name == "dequant"
    scheme = "W4A16" if fmt == "NVFP4" else "W8A16"
    assert reasons["fused"] == (f"the fused kernel serves the weight-only scheme ({scheme}, "
                                "act_quant=None); this layer quantizes its activation")
    with pytest.raises(RuntimeError, match="weight-only scheme"):
        select_linear_backend(fmt, "cuda", backend="fused")


def test_select_fused_per_format_kernel(monkeypatch):
    # a build with the NVFP4 kernel but no MX kernel (the state before csrc/gemm had one):
    # NVFP4 fused, the MX formats dequant with the reason, and an explicit request fails
    _mock_kernel(monkeypatch, ops={"gemm_nvfp4_w4a16"})
    _mock_gpu(monkeypatch, (9, 0))
    assert select_nvfp4_linear_backend("cuda", weight_only=True)[0] == "fused"
    why = "the fused kernel is not available in this build: no CUDA kernel for this op in this build"
    for select in (select_mxfp8_linear_backend, select_mxfp4_linear_backend):
        name, reasons = select("cuda", weight_only=True)
        assert name == "dequant" and reasons["fused"] == why
        with pytest.raises(RuntimeError, match="not available in this build"):
            select("cuda", backend="fused", weight_only=True)
    # and the other way round
    _mock_kernel(monkeypatch, ops={"gemm_mx_w16"})
    assert select_nvfp4_linear_backend("cuda", weight_only=True)[0] == "dequant"
    assert select_mxfp4_linear_backend("cuda")[0] == "fused"


@pytest.mark.parametrize("select", [select_nvfp4_linear_backend, select_mxfp8_linear_backend,
                                    select_mxfp4_linear_backend])
def test_select_fused_elsewhere(monkeypatch, select):
    _mock_kernel(monkeypatch)
    # Blackwell: it runs (mma.sync), but was not measured there: only when asked for
    _mock_gpu(monkeypatch, (10, 0))
    name, reasons = select("cuda", weight_only=True)
    assert name == "dequant"
    assert reasons["fused"] == ("not chosen automatically on sm_100: measured on sm_80..sm_90 "
                                f"only; ask for it with backend='fused' or {ENV}=fused")
    assert select("cuda", backend="fused", weight_only=True) == ("fused", {})
    monkeypatch.setenv(ENV, "fused")
    assert select("cuda", weight_only=True) == ("fused", {})
    assert select("cuda", backend="dequant", weight_only=True)[0] == "dequant"
    monkeypatch.delenv(ENV)
    # Turing and older: no bf16 mma.sync
    _mock_gpu(monkeypatch, (7, 5))
    name, reasons = select("cuda", weight_only=True)
    assert name == "dequant"
    assert reasons["fused"] == ("the fused kernel needs sm_80+ (mma.sync with bf16), this GPU "
                                "is sm_75")
    with pytest.raises(RuntimeError, match=r"chosen by the backend= keyword\) cannot run here: "
                       r"the fused kernel needs sm_80\+"):
        select("cuda", backend="fused", weight_only=True)
    # a build without the kernel (CPU-only) on a GPU machine
    _mock_gpu(monkeypatch, (9, 0))
    _mock_kernel(monkeypatch, built=False)
    name, reasons = select("cuda", weight_only=True)
    assert name == "dequant"
    assert reasons["fused"] == ("the fused kernel is not available in this build: this is a "
                                "CPU-only build")
    # CPU: the reference, and fused cannot be forced (keyword or environment variable)
    assert select("cpu", weight_only=True)[0] == "reference"
    monkeypatch.setenv(ENV, "fused")
    with pytest.raises(RuntimeError, match="the fused kernel needs a CUDA GPU"):
        select("cpu", weight_only=True)


def test_fused_cannot_be_forced_on_cpu_layers():
    for layer in (NVFP4Linear(64, 8), MXFP8Linear(64, 8), MXFP4Linear(64, 8)):
        assert layer.active_backend == "reference"
        with pytest.raises(RuntimeError, match="the fused kernel needs a CUDA GPU"):
            layer.set_backend("fused")


def test_fused_path_by_format_rows_and_dtype(monkeypatch):
    assert set(FUSED_MAX_M) == {"NVFP4", "MXFP8", "MXFP4"} == set(gemm.FUSED_BASIS)
    assert FUSED_MAX_M["NVFP4"] == 64  # measured on an H200 (the table in nvfp4_ops.nn.gemm)
    max_m = FUSED_MAX_M["NVFP4"]
    assert fused_path("NVFP4", 1, torch.bfloat16) == (
        "fused", f"M = 1 <= {max_m}: the fused kernel is faster (measured on an H200)")
    assert fused_path("NVFP4", max_m, torch.float16)[0] == "fused"
    assert fused_path("NVFP4", max_m + 1, torch.bfloat16) == (
        "dequant", f"M = {max_m + 1} > {max_m}: dequantize + F.linear is faster (measured on "
        "an H200)")
    assert fused_path("MXFP4", 1, torch.float32) == (
        "dequant", "the fused kernel takes float16 / bfloat16 activations, got torch.float32")
    # each format has its own crossover
    monkeypatch.setitem(FUSED_MAX_M, "MXFP4", 8)
    assert fused_path("MXFP4", 9, torch.bfloat16) == (
        "dequant", "M = 9 > 8: dequantize + F.linear is faster (measured on an H200)")
    assert fused_path("MXFP8", 9, torch.bfloat16)[0] == "fused"
    assert fused_path("NVFP4", 9, torch.bfloat16)[0] == "fused"
    with pytest.raises(KeyError, match="no fused GEMM crossover for format 'FP6'"):
        fused_path("FP6", 1, torch.bfloat16)


def test_fused_max_m_of_the_wgmma_kernel(monkeypatch):
    # where the wgmma kernel serves (sm_90 GPU, sm_90a build), NVFP4 layers with K % 128 == 0
    # take its crossover; elsewhere (CPU, other K, other formats) the format's own
    monkeypatch.setattr(gemm, "_wgmma_serves", lambda index: True)
    cuda = torch.device("cuda", 0)
    assert gemm.FUSED_MAX_M_WGMMA == {"NVFP4": 256, "MXFP4": 256, "MXFP8": 128}
    assert fused_max_m("NVFP4", cuda, 4096) == (256, "measured on an H200, the wgmma kernel")
    assert fused_path("NVFP4", 256, torch.bfloat16, cuda, 4096) == (
        "fused", "M = 256 <= 256: the fused kernel is faster (measured on an H200, the wgmma "
        "kernel)")
    assert fused_path("NVFP4", 257, torch.bfloat16, cuda, 4096)[0] == "dequant"
    assert fused_max_m("NVFP4", cuda, 80) == (64, "measured on an H200")
    assert fused_max_m("NVFP4", torch.device("cpu"), 4096)[0] == 64
    assert fused_max_m("NVFP4")[0] == 64
    assert fused_max_m("MXFP4", cuda, 4096)[0] == 256
    assert fused_max_m("MXFP4", cuda, 4096 + 128)[0] == FUSED_MAX_M["MXFP4"]  # K % 512 != 0
    assert fused_max_m("MXFP8", cuda, 4096)[0] == 128
    assert fused_max_m("MXFP8", cuda, 4096 + 32)[0] == FUSED_MAX_M["MXFP8"]
    monkeypatch.setattr(gemm, "_wgmma_serves", lambda index: False)
    assert fused_max_m("NVFP4", cuda, 4096)[0] == 64


class _Spy:
    """Stands for ``torch.ops.nvfp4`` in nvfp4_ops.nn.gemm and records the ops called."""

    def __init__(self):
        self.called = []

    def __getattr__(self, name):
        self.called.append(name)
        return getattr(torch.ops.nvfp4, name)


def _fused_cases():
    return [
        (NVFP4Linear, "gemm_nvfp4_w4a16", lambda l: (l.weight_packed, l.weight_scale,
                                                     l.weight_global_scale)),
        (MXFP8Linear, "gemm_mx_w16", lambda l: (l.weight, l.weight_scale, "e4m3")),
        (MXFP4Linear, "gemm_mx_w16", lambda l: (l.weight_packed, l.weight_scale, "e2m1")),
    ]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls, op, args", _fused_cases(), ids=["NVFP4", "MXFP8", "MXFP4"])
def test_fused_gemm_wiring_on_cpu(monkeypatch, dtype, cls, op, args):
    """The fused backend's GEMM on CPU tensors (the ops are the reference there): the
    format's fused op up to its crossover, exactly the dequant backend above and for fp32
    activations."""
    layer = cls.from_float(_linear(64, 24, dtype=dtype))
    max_m = FUSED_MAX_M[layer.FORMAT]
    for m in (1, max_m, max_m + 1):
        x = _x((m, 64), dtype, seed=m)
        spy = _Spy()
        with monkeypatch.context() as mp:
            mp.setattr(gemm, "_ops", spy)
            y = apply_linear("fused", layer, x, layer.bias)
        if m <= max_m:
            assert spy.called == [op], m
            want = getattr(torch.ops.nvfp4, op)(x, *args(layer), layer.bias)
            # and that is the fp32 reference with one cast, not the dequant path
            assert torch.equal(y, apply_linear("reference", layer, x, layer.bias))
        else:
            assert op not in spy.called, m
            want = apply_linear("dequant", layer, x, layer.bias)
        assert torch.equal(y, want), m
    x3 = _x((2, 3, 64), dtype)
    assert apply_linear("fused", layer, x3, None).shape == (2, 3, 24)
    x32 = _x((5, 64))
    assert torch.equal(apply_linear("fused", layer, x32, layer.bias),
                       apply_linear("dequant", layer, x32, layer.bias))


def test_fused_gemm_refuses_activation_quantization():
    layer = NVFP4Linear.from_float(_linear(64, 24), act_quant="dynamic")
    with pytest.raises(ValueError, match=r"NVFP4Linear: the fused backend serves the weight-only "
                       r"scheme \(W4A16, act_quant=None\), got act_quant='dynamic'"):
        apply_linear("fused", layer, _x((2, 64), torch.bfloat16))
    layer = MXFP8Linear.from_float(_linear(64, 24), act_quant="dynamic")
    with pytest.raises(ValueError, match=r"\(W8A16, act_quant=None\)"):
        apply_linear("fused", layer, _x((2, 64), torch.bfloat16))
