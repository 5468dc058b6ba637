"""Run ``nvfp4-ops`` command lines on 2 ranks in spawned processes (the torchrun
environment: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``; one gloo process group for all the
command lines, so that torch is imported and the group made once), bounded in time."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from datetime import timedelta
from typing import List, Tuple

WORLD = 2
#: seconds for the whole run (spawn, the group, every command line)
DEADLINE_S = 120
#: seconds a collective waits for the other rank
PG_TIMEOUT_S = 60
#: modules the forkserver imports once for all the ranks it forks (transformers and its BERT
#: for the calibration tests: seconds per rank otherwise)
PRELOAD = ["torch", "nvfp4_ops", "nvfp4_ops.cli.main", "transformers",
           "transformers.models.bert.modeling_bert"]


def _worker(rank: int, folder: str, argvs: List[List[str]], gpu: bool) -> None:
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank),
                      OMP_NUM_THREADS="1")
    import torch
    import torch.distributed as dist

    from nvfp4_ops.cli.main import main

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=PG_TIMEOUT_S))
    results = []
    try:
        for argv in argvs:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except BaseException as e:  # noqa: BLE001 - reported to the test
                    rc = f"raised {type(e).__name__}: {e}"
            results.append([rc, out.getvalue(), err.getvalue()])
    finally:
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
        dist.destroy_process_group()


def run_ranks(argvs: List[List[str]], gpu: bool = False) -> List[List[Tuple]]:
    """Run each of ``argvs`` (``main``'s argv) on ``WORLD`` ranks, one after the other;
    ``[[(rc, stdout, stderr) per rank] per argv]``. Fails the test when a rank does not
    finish within ``DEADLINE_S``."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="nvfp4_ranks_") as folder:
        # forkserver on CPU (a fresh server that imported torch once; a plain fork would
        # inherit this process's threads), spawn for CUDA
        method = "spawn" if gpu or "forkserver" not in mp.get_all_start_methods() \
            else "forkserver"
        if method == "forkserver":
            mp.set_forkserver_preload(PRELOAD)
        ctx = mp.start_processes(_worker, args=(folder, argvs, gpu), nprocs=WORLD, join=False,
                                 start_method=method)
        end = time.monotonic() + DEADLINE_S
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > end:
                    raise AssertionError(f"the ranks did not finish within {DEADLINE_S} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
        got = []
        for rank in range(WORLD):
            with open(os.path.join(folder, f"rank{rank}.json")) as f:
                got.append(json.load(f))
        return [[tuple(got[r][i]) for r in range(WORLD)] for i in range(len(argvs))]
