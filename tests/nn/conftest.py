"""Every nn test starts without the backend environment variable set."""

import pytest

from nvfp4_ops.nn import ENV_VAR


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
