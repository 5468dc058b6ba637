"""The choice of the GEMM backend: per device (a mocked capability stands for GPUs), by keyword,
by the environment variable, and its resolution in a layer on build and on set_backend."""

import pytest
import torch

from nvfp4_ops import _library
from nvfp4_ops.nn import (
    ENV_VAR as ENV,
    MXFP8Linear,
    NVFP4Linear,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)

from nvfp4_ops.nn.gemm import FUSED_MAX_M, apply_linear, fused_path

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
    weight_only = select("cpu", weight_only=True)[1]["fused"]
    assert weight_only.startswith("no fused MXFP8 kernel yet") or "got device 'cpu'" in weight_only


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
# The fused weight-only GEMM (nvfp4.gemm_nvfp4_w4a16): selection with mocked GPUs and
# builds, and its wiring on CPU (where the op is the reference)
# --------------------------------------------------------------------------------------


def _mock_kernel(monkeypatch, built=True):
    why = "hand-written CUDA kernel" if built else "this is a CPU-only build"
    impl = "cuda-kernel" if built else "reference"
    monkeypatch.setattr(_library, "op_implementation", lambda op, device="cuda": (impl, why))


def test_select_fused_on_ampere_and_hopper(monkeypatch):
    _mock_kernel(monkeypatch)
    weight_only = ("scaled_mm multiplies two block-scaled operands; the weight-only scheme "
                   "(W4A16) keeps the activation in high precision (use act_quant='dynamic' "
                   "or 'static' for the native GEMM)")
    for cap in ((8, 0), (8, 6), (8, 9), (9, 0)):
        _mock_gpu(monkeypatch, cap)
        assert select_nvfp4_linear_backend("cuda", weight_only=True) == (
            "fused", {"scaled_mm": weight_only}), cap
    # W4A4 quantizes the activation: not the fused kernel's scheme
    name, reasons = select_nvfp4_linear_backend("cuda")
    assert name == "dequant"
    assert reasons["fused"] == ("the fused kernel serves the weight-only scheme (W4A16, "
                                "act_quant=None); this layer quantizes its activation")
    with pytest.raises(RuntimeError, match="weight-only scheme"):
        select_nvfp4_linear_backend("cuda", backend="fused")
    # MXFP8 has no fused kernel yet: dequant, and an explicit request fails
    name, reasons = select_mxfp8_linear_backend("cuda", weight_only=True)
    assert name == "dequant"
    assert reasons["fused"] == "no fused MXFP8 kernel yet: W8A16 runs dequantize + F.linear"
    with pytest.raises(RuntimeError, match="no fused MXFP8 kernel yet"):
        select_mxfp8_linear_backend("cuda", backend="fused", weight_only=True)


def test_select_fused_elsewhere(monkeypatch):
    _mock_kernel(monkeypatch)
    # Blackwell: it runs (mma.sync), but was not measured there: only when asked for
    _mock_gpu(monkeypatch, (10, 0))
    name, reasons = select_nvfp4_linear_backend("cuda", weight_only=True)
    assert name == "dequant"
    assert reasons["fused"] == ("not chosen automatically on sm_100: measured on sm_80..sm_90 "
                                f"only; ask for it with backend='fused' or {ENV}=fused")
    assert select_nvfp4_linear_backend("cuda", backend="fused", weight_only=True) == ("fused", {})
    monkeypatch.setenv(ENV, "fused")
    assert select_nvfp4_linear_backend("cuda", weight_only=True) == ("fused", {})
    assert select_nvfp4_linear_backend("cuda", backend="dequant", weight_only=True)[0] == "dequant"
    monkeypatch.delenv(ENV)
    # Turing and older: no bf16 mma.sync
    _mock_gpu(monkeypatch, (7, 5))
    name, reasons = select_nvfp4_linear_backend("cuda", weight_only=True)
    assert name == "dequant"
    assert reasons["fused"] == ("the fused kernel needs sm_80+ (mma.sync with bf16), this GPU "
                                "is sm_75")
    with pytest.raises(RuntimeError, match=r"chosen by the backend= keyword\) cannot run here: "
                       r"the fused kernel needs sm_80\+"):
        select_nvfp4_linear_backend("cuda", backend="fused", weight_only=True)
    # a build without the kernel (CPU-only) on a GPU machine
    _mock_gpu(monkeypatch, (9, 0))
    _mock_kernel(monkeypatch, built=False)
    name, reasons = select_nvfp4_linear_backend("cuda", weight_only=True)
    assert name == "dequant"
    assert reasons["fused"] == ("the fused kernel is not available in this build: this is a "
                                "CPU-only build")
    # CPU: the reference, and fused cannot be forced
    monkeypatch.setenv(ENV, "fused")
    with pytest.raises(RuntimeError, match="the fused kernel needs a CUDA GPU"):
        select_nvfp4_linear_backend("cpu", weight_only=True)
    with pytest.raises(RuntimeError, match="the fused kernel needs a CUDA GPU"):
        NVFP4Linear(64, 8).set_backend("fused")


def test_fused_path_by_rows_and_dtype():
    assert fused_path(1, torch.bfloat16) == (
        "fused", f"M = 1 <= {FUSED_MAX_M}: the fused kernel measured faster (H200)")
    assert fused_path(FUSED_MAX_M, torch.float16)[0] == "fused"
    assert fused_path(FUSED_MAX_M + 1, torch.bfloat16) == (
        "dequant", f"M = {FUSED_MAX_M + 1} > {FUSED_MAX_M}: dequantize + F.linear measured "
        "faster (H200)")
    assert fused_path(1, torch.float32) == (
        "dequant", "the fused kernel takes float16 / bfloat16 activations, got torch.float32")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_gemm_wiring_on_cpu(dtype):
    """The fused backend's GEMM on CPU tensors (the ops are the reference there): the fused
    op up to FUSED_MAX_M rows, exactly the dequant backend above and for fp32 activations."""
    layer = NVFP4Linear.from_float(_linear(64, 24, dtype=dtype))
    for m in (1, FUSED_MAX_M, FUSED_MAX_M + 1):
        x = _x((m, 64), dtype, seed=m)
        y = apply_linear("fused", layer, x, layer.bias)
        if m <= FUSED_MAX_M:
            want = torch.ops.nvfp4.gemm_nvfp4_w4a16(x, layer.weight_packed, layer.weight_scale,
                                                    layer.weight_global_scale, layer.bias)
            # and that is the fp32 reference with one cast, not the dequant path
            assert torch.equal(y, apply_linear("reference", layer, x, layer.bias))
        else:
            want = apply_linear("dequant", layer, x, layer.bias)
        assert torch.equal(y, want), m
    x3 = _x((2, 3, 64), dtype)
    assert apply_linear("fused", layer, x3, None).shape == (2, 3, 24)
    x32 = _x((5, 64))
    assert torch.equal(apply_linear("fused", layer, x32, layer.bias),
                       apply_linear("dequant", layer, x32, layer.bias))
