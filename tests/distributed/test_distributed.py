"""nvfp4_ops.distributed on 2 ranks (gloo on CPU, NCCL on 2 GPUs; each skipped with the
reason when it cannot run). Every scenario of :mod:`._scenarios` runs in one 2-process run
per backend; a test reports one scenario on both ranks.

* DTensor inputs of every torch.ops.nvfp4 op: equal to the single-process op on the whole
  tensor, bit for bit; the documented errors for K shards and swizzled row shards.
* Tensor-parallel NVFP4Linear / MXFP8Linear: colwise bit for bit, rowwise within the stated
  tolerance (``_scenarios.assert_rowwise_close``); one global scale for all shards.
"""

import pytest

from ._harness import BACKENDS, require_distributed

require_distributed()
from ._scenarios import GROUP  # noqa: E402  (imports torch.distributed.tensor)


def _names(group):
    return sorted(k for k, g in GROUP.items() if g == group)


def _check(dist_outcome, backend, name):
    outcomes = dist_outcome(backend, name)
    assert outcomes == ["ok"] * len(outcomes), "\n".join(outcomes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", _names("dtensor"))
def test_dtensor(dist_outcome, backend, name):
    _check(dist_outcome, backend, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", _names("tp"))
def test_tensor_parallel(dist_outcome, backend, name):
    _check(dist_outcome, backend, name)


def test_core_import_leaves_distributed_alone():
    """``import nvfp4_ops`` (and ``nvfp4_ops.nn``) neither imports nvfp4_ops.distributed nor
    any torch.distributed module that ``import torch`` does not (a fresh interpreter)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, torch\n"
            "before = {m for m in sys.modules if m.startswith('torch.distributed')}\n"
            "import nvfp4_ops, nvfp4_ops.nn\n"
            "after = {m for m in sys.modules if m.startswith('torch.distributed')}\n"
            "assert 'nvfp4_ops.distributed' not in sys.modules, 'nvfp4_ops.distributed imported'\n"
            "assert after == before, sorted(after - before)\n")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
