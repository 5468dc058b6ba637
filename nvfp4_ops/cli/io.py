"""Writing the output: a streaming safetensors shard writer, the atomic output folder
(a temporary folder renamed at the end, removed on any failure, SIGTERM or interrupt),
and the copy of the input folder's other files."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import struct
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .common import CliError


_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf",
                    ".tflite", ".ot", ".safetensors", ".npz", ".pb")
_COPY_LIMIT = 64 << 20  # other files copied along when smaller than this

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
for _name, _code in (("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64"),
                     ("float8_e8m0fnu", "F8_E8M0")):
    if hasattr(torch, _name):
        _ST_DTYPES[getattr(torch, _name)] = _code


class ShardWriter:
    """Writes safetensors shards tensor by tensor, with no more than one tensor in memory.

    Each tensor's bytes go straight into a data file; when a shard is complete its header
    (which must precede the data) is written and the data copied behind it, ordered by
    element size (8, 4, 2, 1 bytes) so that every tensor is aligned, as safetensors' own
    writer does. Shards are named ``model.safetensors`` (one) or
    ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``.
    """

    def __init__(self, folder: Path, max_shard_bytes: int, metadata: Dict[str, str]):
        self.folder = folder
        self.max = max(1, int(max_shard_bytes))
        self.metadata = metadata
        self.done: List[Tuple[List[tuple], Path]] = []
        self.names: set = set()
        self.total = 0
        self._new()

    def _new(self) -> None:
        self.entries: List[tuple] = []  # (name, code, shape, offset, nbytes, itemsize)
        self.path = self.folder / f".shard-{len(self.done)}.data"
        self.fh = open(self.path, "wb")
        self.size = 0

    def add(self, name: str, t: Tensor) -> None:
        """Append tensor ``name`` (copied to the CPU) to the current shard."""
        if name in self.names:
            raise CliError(f"two output tensors are named {name}; rename the input tensor "
                           "that collides with a generated name")
        code = _ST_DTYPES.get(t.dtype)
        if code is None:
            raise CliError(f"{name}: dtype {t.dtype} cannot be stored in safetensors")
        t = t.detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        if self.size and self.size + nbytes > self.max:
            self._finish()
            self._new()
        if nbytes:
            self.fh.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        self.entries.append((name, code, list(t.shape), self.size, nbytes, t.element_size()))
        self.names.add(name)
        self.size += nbytes
        self.total += nbytes

    def _finish(self) -> None:
        self.fh.close()
        self.done.append((self.entries, self.path))

    def close(self) -> List[str]:
        """Write the shards (and the index when there are several); their file names."""
        self._finish()
        n = len(self.done)
        names = (["model.safetensors"] if n == 1 else
                 [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        weight_map = {}
        for (entries, data), fname in zip(self.done, names):
            order = sorted(range(len(entries)), key=lambda i: -entries[i][5])  # stable
            header: Dict[str, Any] = {"__metadata__": self.metadata}
            off = 0
            for i in order:
                name, code, shape, _, nbytes, _ = entries[i]
                header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + nbytes]}
                off += nbytes
                weight_map[name] = fname
            hb = json.dumps(header, separators=(",", ":")).encode()
            hb += b" " * (-len(hb) % 8)
            with open(self.folder / fname, "wb") as out, open(data, "rb") as src:
                out.write(struct.pack("<Q", len(hb)))
                out.write(hb)
                for i in order:
                    _, _, _, src_off, nbytes, _ = entries[i]
                    src.seek(src_off)
                    left = nbytes
                    while left:
                        buf = src.read(min(left, 64 << 20))
                        if not buf:
                            raise OSError(errno.EIO, f"short read from {data}")
                        out.write(buf)
                        left -= len(buf)
            data.unlink()
        if n > 1:
            idx = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(idx, indent=2))
        return names


class AtomicOutput:
    """A temporary folder next to ``out`` that becomes ``out`` on :meth:`commit`, and is
    removed (with any parent folders this created) on failure."""

    @staticmethod
    def check(out: Path, force: bool, inputs: Sequence[Path]) -> None:
        """Refuse an ``out`` that exists (without ``force``) or that is, holds or lies
        inside an input."""
        o = out.absolute().resolve()
        for p in inputs:
            p = p.resolve()
            if o == p or p.is_relative_to(o) or (p.is_dir() and o.is_relative_to(p)):
                raise CliError(f"--out {out} is (or holds, or lies inside) the input {p}; "
                               "the input is never modified: choose another folder")
        if (out.exists() or out.is_symlink()) and not force:
            raise CliError(f"--out {out} exists; pass --force to replace it")

    def __init__(self, out: Path, force: bool, inputs: Sequence[Path]):
        self.check(out, force, inputs)
        self.out = out.absolute()
        self.created: List[Path] = []
        parent = self.out.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir()
            self.created.append(d)
        remove_stale_partials(self.out)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()

    def commit(self) -> None:
        """Move the temporary folder to ``out`` (replacing what was there)."""
        old = None
        if self.out.exists() or self.out.is_symlink():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        self.created = []

    def abort(self) -> None:
        """Remove the temporary folder and the parent folders this created."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in reversed(self.created):
            try:
                d.rmdir()
            except OSError:
                pass


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep its folder
    return True


def remove_stale_partials(out: Path) -> List[Path]:
    """Remove the ``.OUT.partial-PID`` / ``.OUT.old-PID`` folders next to ``out`` left by
    processes that no longer run (killed with SIGKILL, a power cut); the removed paths."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for kind in ("partial", "old"):
        for p in out.parent.glob(f".{glob_escape(out.name)}.{kind}-*"):
            pid = p.name.rsplit("-", 1)[1]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def copy_side_files(folder: Optional[Path], dest: Path, skip: Sequence[str],
                     recursive: bool = True) -> List[str]:
    """Copy the other small files of the input folder (tokenizer, generation config, ...);
    only its top level when the input was one file in it."""
    copied = []
    if folder is None:
        return copied
    for f in sorted(folder.rglob("*") if recursive else folder.glob("*")):
        rel = f.relative_to(folder)
        if (not f.is_file() or any(part.startswith(".") for part in rel.parts)
                or str(rel) in skip or f.suffix in _WEIGHT_SUFFIXES
                or f.name == "model.safetensors.index.json" or f.stat().st_size > _COPY_LIMIT):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)
        copied.append(str(rel))
    return copied


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = path
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


@contextlib.contextmanager
def atomic_output(out: Path, force: bool, inputs, interrupted: str):
    """Yield an :class:`AtomicOutput` for ``out``; the body writes into ``atomic.tmp`` and
    ends with ``atomic.commit()``. Any failure (a full disk, an interrupt or SIGTERM, a bad
    tensor) removes the partial output and leaves ``out`` untouched; an interrupt exits
    with status 130 and the message ``interrupted``."""
    try:
        atomic = AtomicOutput(out, force, inputs)
    except OSError as e:
        raise CliError(f"cannot create the output next to {out}: {e.strerror or e}", 1) from e
    old_term = _on_sigterm_interrupt()
    try:
        yield atomic
    except KeyboardInterrupt:
        atomic.abort()
        raise CliError(interrupted, 130, plain=True) from None
    except OSError as e:
        atomic.abort()
        if e.errno == errno.ENOSPC:
            raise CliError(f"no space left on the device while writing {out}; removed the "
                           "partial output", 1) from e
        raise CliError(f"cannot write {out}: {e.strerror or e}; removed the partial output",
                       1) from e
    except BaseException:
        atomic.abort()
        raise
    finally:
        _restore_sigterm(old_term)


def _on_sigterm_interrupt():
    """Make SIGTERM raise KeyboardInterrupt (so that the partial output is removed);
    returns the previous handler. Only in the main thread (signals cannot be set elsewhere)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    old = signal.getsignal(signal.SIGTERM)

    def _term(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, _term)
    return old


def _restore_sigterm(old) -> None:
    """Put back the SIGTERM handler :func:`_on_sigterm_interrupt` replaced."""
    if old is not None:
        signal.signal(signal.SIGTERM, old)
