"""Run the scenarios of :mod:`._scenarios` in 2 processes (gloo on CPU, NCCL on
2 GPUs), once per backend, and collect each scenario's outcome per rank.

Each process runs every scenario in turn (one process group, one import of torch for the
whole folder); a scenario that raises is recorded with its traceback and the others still
run. Everything is bounded: the process group's timeout and a deadline on the join, after
which the processes are terminated and every scenario reports the timeout.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from datetime import timedelta
from typing import Dict, List, Optional

#: The process-group backends the tests run on (each skipped with a reason when absent).
BACKENDS = ["gloo", "nccl"]
WORLD = 2
#: Seconds for the whole run of one backend (spawn, init, every scenario).
DEADLINE_S = 150
#: Seconds a collective may wait for the other rank before it fails.
PG_TIMEOUT_S = 60
#: "backend rank r" -> {scenario: seconds} of the last runs (for reports).
SECONDS: Dict[str, Dict[str, float]] = {}


def require_distributed() -> None:
    """Skip the calling test module when this torch has no torch.distributed."""
    import pytest
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this torch build",
                    allow_module_level=True)


def backend_skip_reason(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run here (None when it can)."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return "torch.distributed is not available in this torch build"
    if backend == "gloo" and not dist.is_gloo_available():
        return "the gloo backend is not available in this torch build"
    if backend == "nccl":
        if not dist.is_nccl_available():
            return "the NCCL backend is not available in this torch build"
        if torch.cuda.device_count() < WORLD:
            return f"NCCL tests need {WORLD} visible GPUs, got {torch.cuda.device_count()}"
    return None


def _worker(rank: int, backend: str, folder: str, names: List[str]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=PG_TIMEOUT_S))
    results: Dict[str, str] = {}
    seconds: Dict[str, float] = {}
    try:
        from torch.distributed.device_mesh import init_device_mesh

        from . import _scenarios

        device = "cpu"
        if backend == "nccl":
            torch.cuda.set_device(rank)
            device = "cuda"
        mesh = init_device_mesh(device, (WORLD,))
        for name in names:
            t0 = time.perf_counter()
            try:
                _scenarios.SCENARIOS[name](mesh, torch.device(device, rank)
                                           if device == "cuda" else torch.device("cpu"))
                results[name] = "ok"
            except Exception:  # noqa: BLE001 - reported to the test
                results[name] = traceback.format_exc()
            seconds[name] = round(time.perf_counter() - t0, 2)
    finally:
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump({"results": results, "seconds": seconds}, f)
        dist.destroy_process_group()


def run_all(backend: str, names: List[str]) -> Dict[str, List[str]]:
    """Run ``names`` on ``WORLD`` spawned ranks with ``backend``: {name: [outcome per rank]}
    where an outcome is "ok" or the traceback (or why the rank gave no result)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="nvfp4_dist_") as folder:
        # gloo: forkserver (the ranks fork from a fresh server process that has imported
        # torch once; a plain fork would inherit this process's autograd threads, and torch
        # refuses autograd in such a child after an earlier test ran backward here);
        # NCCL: spawn (CUDA cannot be used in a forked child).
        method = "forkserver" if backend != "nccl" and "forkserver" in mp.get_all_start_methods() \
            else "spawn"
        if method == "forkserver":
            mp.set_forkserver_preload(["torch", "nvfp4_ops"])
        ctx = mp.start_processes(_worker, args=(backend, folder, names), nprocs=WORLD,
                                 join=False, start_method=method)
        end = time.monotonic() + DEADLINE_S
        why = None
        try:
            while not ctx.join(timeout=max(0.1, min(1.0, end - time.monotonic()))):
                if time.monotonic() > end:
                    why = f"timed out after {DEADLINE_S} s"
                    break
        except Exception as e:  # a rank died: its results file may still say why
            why = f"a rank failed: {e}"
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
        out: Dict[str, List[str]] = {n: [] for n in names}
        for rank in range(WORLD):
            path = os.path.join(folder, f"rank{rank}.json")
            got = {}
            if os.path.exists(path):
                with open(path) as f:
                    saved = json.load(f)
                got = saved["results"]
                SECONDS[f"{backend} rank {rank}"] = saved["seconds"]
            for n in names:
                out[n].append(got.get(n, f"rank {rank} gave no result ({why or 'no file'})"))
        return out
