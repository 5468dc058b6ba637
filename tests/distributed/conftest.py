"""The distributed runs, shared by the test files: one 2-process run per backend."""

from __future__ import annotations

from typing import Dict, List

import pytest

_RUNS: Dict[str, Dict[str, List[str]]] = {}


@pytest.fixture(scope="session")
def dist_outcome():
    """``dist_outcome(backend, name)`` -> the outcomes of scenario ``name`` on each rank
    (every scenario runs in the first call for a backend)."""
    from . import _harness, _scenarios

    def get(backend: str, name: str) -> List[str]:
        reason = _harness.backend_skip_reason(backend)
        if reason:
            pytest.skip(reason)
        if backend not in _RUNS:
            _RUNS[backend] = _harness.run_all(backend, sorted(_scenarios.SCENARIOS))
        return _RUNS[backend][name]

    return get

