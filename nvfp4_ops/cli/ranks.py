"""``nvfp4-ops quantize`` launched by ``torchrun`` on several ranks.

``torchrun --nproc-per-node N -m nvfp4_ops quantize ...`` (or ``python -m
torch.distributed.run``) divides the weights to quantize among the ranks, balanced by bytes
(:func:`owners`, deterministic); every rank quantizes its share on its own device
(``cuda:LOCAL_RANK`` when GPUs are visible, else the CPU) into rank-local files inside rank
0's temporary output folder, and rank 0 then writes the shards, the index, the configs and
the report in the one-process order, so the output folder is byte-identical to the
one-process run (the report's timings aside). The ranks talk through a gloo process group
(control messages and the fused groups' amax, a few bytes); the quantized tensors go
through the file system, so all ranks must see rank 0's output folder (one machine, or a
shared file system).

Calibration on texts runs data parallel: each rank runs its contiguous share of the texts
through the model (:meth:`Ranks.texts_share`) and the per-layer statistics are combined on
every rank (:meth:`Ranks.combine_capture`): Hessian blocks and Gram matrices summed in rank
order (deterministic, but not bit-identical to the one-process sums: fp32 additions in
another order, texts batched differently), input amax the max, token counts summed. So the
output is byte-identical to the one-process run for runs without text calibration (amax or
mse scales, captured-input ``--calib`` files, which each rank reads for its own layers); with
text calibration (``--scales hessian``, ``--scheme w4a4``, an encoder's report) it equals
it up to those last bits (in the tests: every byte equal).

An error on any rank is gathered by :meth:`Ranks.agree` at fixed points, and every rank
raises the same :class:`CliError` (the one of the lowest tensor index, as the one-process
run would report first); only rank 0 prints it. A rank that dies (killed) makes torchrun
stop the others (SIGTERM: rank 0 removes the partial output); a rank that hangs is bounded
by the process group's timeout, ``NVFP4_OPS_DIST_TIMEOUT`` seconds (default 3600).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, List, Optional, Sequence

import torch

from .common import CliError

#: seconds a rank waits for the others at a collective (env NVFP4_OPS_DIST_TIMEOUT)
DEFAULT_TIMEOUT_S = 3600


class AgreedError(CliError):
    """An error every rank raises together (:meth:`Ranks.agree`): rank 0 prints it."""


def owners(sizes: Sequence[int], world: int) -> List[int]:
    """The rank that quantizes each item of ``sizes`` (bytes): the largest first, each to the
    least-loaded rank (ties: the lower index, the lower rank), so the split is balanced by
    bytes and the same on every rank."""
    load = [0] * world
    out = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        out[i] = r
        load[r] += sizes[i]
    return out


def _env_int(name: str, default: int) -> int:
    """The integer environment variable ``name`` (``default`` when unset)."""
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise CliError(f"environment variable {name}: expected an integer, got {v!r}") from None


def other_rank() -> bool:
    """Whether this process is a torchrun rank other than 0 (commands that do not share
    their work, ``info`` and ``dequantize``, run on rank 0 alone)."""
    try:
        ranks = Ranks.from_env()
    except CliError:
        return False  # a bad environment: the command itself says so
    return ranks is not None and not ranks.lead


class Ranks:
    """This process's place among the torchrun ranks, and the few collectives the quantizer
    needs (over a gloo process group, made by ``with Ranks(...)``)."""

    def __init__(self, rank: int, world: int, local_rank: int):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        #: whether the other ranks may still wait for this one at a collective
        self.pending = True

    @property
    def lead(self) -> bool:
        """Whether this rank writes the output (rank 0)."""
        return self.rank == 0

    @staticmethod
    def from_env() -> Optional["Ranks"]:
        """The ranks torchrun describes in the environment (``WORLD_SIZE``, ``RANK``,
        ``LOCAL_RANK``); None when not launched by torchrun or with one rank."""
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return None
        rank = _env_int("RANK", 0)
        if not 0 <= rank < world:
            raise CliError(f"environment variable RANK: expected 0 to {world - 1}, got {rank}")
        return Ranks(rank, world, _env_int("LOCAL_RANK", rank))

    def __enter__(self) -> "Ranks":
        import torch.distributed as dist

        timeout = _env_int("NVFP4_OPS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)
        # a caller that made the default group already (an embedding program, the tests)
        # keeps it; else one gloo group from torchrun's environment (env://)
        self._owned = not dist.is_initialized()
        if self._owned:
            try:
                dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
            except Exception as e:  # no MASTER_ADDR (WORLD_SIZE set by hand), a dead rendezvous
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise CliError(f"WORLD_SIZE={self.world}: cannot join the other ranks (launch "
                               f"with torchrun --nproc-per-node N): {why}", 1) from None
        elif (dist.get_rank(), dist.get_world_size()) != (self.rank, self.world):
            raise CliError(f"the process group has rank {dist.get_rank()} of "
                           f"{dist.get_world_size()}, the environment says RANK={self.rank} "
                           f"WORLD_SIZE={self.world}")
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if self._owned and dist.is_initialized():
            dist.destroy_process_group()

    def use_device(self, device: torch.device) -> torch.device:
        """``device`` for this rank: CUDA ``device`` becomes ``cuda:LOCAL_RANK`` (made the
        current device, so that ``torch.device("cuda")`` means it)."""
        if device.type == "cuda":
            n = torch.cuda.device_count()
            if self.local_rank >= n:
                raise CliError(f"rank {self.rank}: LOCAL_RANK {self.local_rank} needs GPU "
                               f"{self.local_rank}, {n} visible (launch at most {n} ranks per "
                               "machine, or --device cpu)")
            torch.cuda.set_device(self.local_rank)
        return device

    def texts_share(self, texts: Sequence) -> Sequence:
        """This rank's contiguous share of the calibration ``texts`` (rank r: from
        ``r*n//world`` to ``(r+1)*n//world``)."""
        n = len(texts)
        return texts[self.rank * n // self.world:(self.rank + 1) * n // self.world]

    def combine_capture(self, res):
        """The calibration statistics of all the ranks' texts from this rank's ``res`` (a
        :class:`~nvfp4_ops.cli.capture.CaptureResult`): per layer the Hessian blocks and
        Gram matrices summed in rank order (fp32; equal to the one-process sums up to the
        order of the fp32 additions), the input amax the max, the tokens summed; the notes
        of every rank, once each. The same on every rank."""
        from .capture import CaptureResult, LinearStats

        mine = ({k: (st.hessian, st.amax, st.tokens, st.gram) for k, st in res.items()},
                list(res.notes), res.texts, res.tokens)
        parts = self.agree(None, payload=mine)
        out = CaptureResult()
        for stats, notes, texts, tokens in parts:
            out.texts += texts
            out.tokens += tokens
            out.notes.extend(n for n in notes if n not in out.notes)
            for k, (h, amax, n, g) in stats.items():
                old = out.get(k)
                if old is None:
                    out[k] = LinearStats(h, amax, n, g)
                    continue
                old.hessian = h if old.hessian is None else (
                    old.hessian if h is None else old.hessian + h)
                old.gram = g if old.gram is None else (old.gram if g is None else old.gram + g)
                old.amax = torch.maximum(old.amax, amax)
                old.tokens += n
        return out

    def gather(self, value: Any) -> List[Any]:
        """``value`` of every rank (picklable), in rank order."""
        import torch.distributed as dist

        out: List[Any] = [None] * self.world
        try:
            dist.all_gather_object(out, value)
        except Exception as e:  # a rank died (killed, or torchrun stopped it) or timed out
            self.pending = False
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise AgreedError(f"rank {self.rank} lost the other ranks (one was stopped or "
                              f"failed, its own output says why): {why}", 1) from None
        return out

    def agree(self, err: Optional[BaseException], order: int = -1,
              payload: Any = None) -> List[Any]:
        """Every rank's ``payload`` once all ranks got here; when some rank passes an
        ``err``, every rank raises the :class:`AgreedError` of the lowest ``order`` (the tensor
        index where it happened; -1 before the tensors), then the lowest rank. An error that
        is not a CliError becomes one line naming the rank and the exception."""
        if err is None:
            mine = (None, payload)
        elif isinstance(err, CliError):
            mine = ((order, self.rank, str(err), err.code, err.plain), payload)
        elif isinstance(err, KeyboardInterrupt):
            mine = ((order, self.rank, "interrupted", 130, True), payload)
        else:
            mine = ((order, self.rank, f"rank {self.rank}: {type(err).__name__}: {err}", 1,
                     False), payload)
        got = self.gather(mine)
        errs = sorted(e for e, _ in got if e is not None)
        if errs:
            _, _, msg, code, plain = errs[0]
            self.pending = False
            raise AgreedError(msg, code, plain)
        return [p for _, p in got]
