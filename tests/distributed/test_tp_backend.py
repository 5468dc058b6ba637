"""Which GEMM backend a quantized layer runs under tensor parallelism (no process group needed)."""

import pytest
import torch

pytest.importorskip("torch.distributed")

from nvfp4_ops.distributed import tensor_parallel as tp  # noqa: E402
from nvfp4_ops.nn import ENV_VAR, NVFP4Linear  # noqa: E402


class _Mesh:
    """The two things the layer check reads of a DeviceMesh: ndim and size()."""

    ndim = 1

    def size(self):
        return 2


def _layer(**kw):
    lin = torch.nn.Linear(64, 32, dtype=torch.bfloat16)
    return NVFP4Linear.from_float(lin, **kw)


@pytest.mark.parametrize("backend", ["fused", "dequant", "reference"])
def test_gemm_backends_are_kept(monkeypatch, backend):
    monkeypatch.delenv(ENV_VAR, raising=False)
    layer = _layer()
    layer.active_backend = backend  # "fused": what the automatic choice gives on sm_80..sm_90
    tp._check_layer(layer, "colwise", _Mesh())
    assert layer.active_backend == backend


@pytest.mark.parametrize("how", ["keyword", "env"])
def test_scaled_mm_asked_for_is_refused(monkeypatch, how):
    monkeypatch.delenv(ENV_VAR, raising=False)
    layer = _layer()
    if how == "keyword":
        layer.backend = "scaled_mm"
    else:
        monkeypatch.setenv(ENV_VAR, "scaled_mm")
    layer.active_backend = "scaled_mm"
    with pytest.raises(ValueError, match=r"under tensor parallelism the backend must be one of"):
        tp._check_layer(layer, "colwise", _Mesh())
    assert layer.active_backend == "scaled_mm"
