"""The choice of the GEMM backend: per device (a mocked capability stands for GPUs), by keyword,
by the environment variable, and its resolution in a layer on build and on set_backend."""

import pytest
import torch

from nvfp4_ops.nn import (
    ENV_VAR as ENV,
    MXFP8Linear,
    NVFP4Linear,
    select_mxfp8_linear_backend,
    select_nvfp4_linear_backend,
)

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
    assert set(reasons) == {"scaled_mm", "dequant"}
    assert "sm_100+" in reasons["scaled_mm"] and "cpu" in reasons["scaled_mm"]


@pytest.mark.parametrize("select", [select_nvfp4_linear_backend, select_mxfp8_linear_backend])
def test_select_mocked_blackwell_and_hopper(monkeypatch, select):
    _mock_gpu(monkeypatch, (10, 0))
    # scaled_mm can run on sm_100+, but has not run on Blackwell yet: chosen only when asked
    not_auto = {"scaled_mm": "not chosen automatically: it has not run on Blackwell hardware "
                             "yet; ask for it with backend='scaled_mm' or "
                             f"{ENV}=scaled_mm"}
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
    assert reasons == {"scaled_mm": "scaled_mm needs sm_100+, this GPU is sm_90"}
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
