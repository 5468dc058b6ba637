"""The distributed runs, shared by the test files: one 2-process run per backend."""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch

_RUNS: Dict[str, Dict[str, List[str]]] = {}


def backend_skip_reason(backend: str):
    """Why ``backend`` cannot run here (None when it can)."""
    import torch.distributed as dist

    if not dist.is_available():
        return "torch.distributed is not available in this torch build"
    if backend == "gloo" and not dist.is_gloo_available():
        return "the gloo backend is not available in this torch build"
    if backend == "nccl":
        if not dist.is_nccl_available():
            return "the NCCL backend is not available in this torch build"
        if torch.cuda.device_count() < 2:
            return f"NCCL tests need 2 visible GPUs, got {torch.cuda.device_count()}"
    return None


@pytest.fixture(scope="session")
def dist_outcome():
    """``dist_outcome(backend, name)`` -> the outcomes of scenario ``name`` on each rank
    (every scenario runs in the first call for a backend)."""
    from . import _harness, _scenarios

    def get(backend: str, name: str) -> List[str]:
        reason = backend_skip_reason(backend)
        if reason:
            pytest.skip(reason)
        if backend not in _RUNS:
            _RUNS[backend] = _harness.run_all(backend, sorted(_scenarios.SCENARIOS))
        return _RUNS[backend][name]

    return get


BACKENDS = ["gloo", "nccl"]
