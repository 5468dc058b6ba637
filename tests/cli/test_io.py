"""Reading shards, writing shards, and the atomic output (nothing half-written, the input
never touched)."""

import json

from safetensors.torch import save_file

from nvfp4_ops.cli.io import ShardWriter

from ._ckpt import make_ckpt, leftovers, run, tensors, tree_hash


def test_sharded_input_and_output(tmp_path, capsys):
    src = tmp_path / "in"
    t = make_ckpt(src)
    # split the input into two shards with an index
    (src / "model.safetensors").unlink()
    names = sorted(t)
    a, b = names[: len(names) // 2], names[len(names) // 2:]
    save_file({k: t[k] for k in a}, str(src / "model-00001-of-00002.safetensors"))
    save_file({k: t[k] for k in b}, str(src / "model-00002-of-00002.safetensors"))
    wm = {k: "model-00001-of-00002.safetensors" for k in a}
    wm.update({k: "model-00002-of-00002.safetensors" for k in b})
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    out = tmp_path / "out"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--max-shard-size", "20KB", "--quiet")
    assert rc == 0, err
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0].name.endswith("-of-%05d.safetensors" % len(shards))
    idx = json.loads((out / "model.safetensors.index.json").read_text())
    q = tensors(out)
    assert set(idx["weight_map"]) == set(q)
    assert idx["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in q.values())
    for f in shards:  # every tensor of a shard starts aligned to its element size
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        assert n % 8 == 0
        for k, v in header.items():
            if k != "__metadata__":
                size = q[k].element_size()
                assert v["data_offsets"][0] % size == 0, k
    back = tmp_path / "back"
    assert run(capsys, "dequantize", str(out), "--out", str(back), "--quiet")[0] == 0
    assert set(tensors(back)) == set(t)


def test_existing_out_needs_force(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet")
    assert rc == 2 and "exists; pass --force" in err
    assert (out / "keep.txt").read_text() == "mine"
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet", "--force")
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "report.json").is_file()
    assert not leftovers(tmp_path)


def test_out_must_not_touch_the_input(tmp_path, capsys):
    src = tmp_path / "in"
    make_ckpt(src)
    before = tree_hash(src)
    for out in (src, src / "sub", tmp_path):
        rc, _, err = run(capsys, str(src), "--out", str(out), "--force", "--quiet")
        assert rc == 2 and "the input is never modified" in err, out
    assert tree_hash(src) == before


def test_disk_full_and_interrupt_leave_nothing(tmp_path, capsys, monkeypatch):
    import errno

    src = tmp_path / "in"
    make_ckpt(src)
    out = tmp_path / "sub" / "out"  # its parent is created, and removed again on failure
    real_add = ShardWriter.add
    calls = []

    def full(self, name, t):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add(self, name, t)

    monkeypatch.setattr(ShardWriter, "add", full)
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet")
    assert rc == 1 and "no space left on the device" in err and "removed the partial output" in err
    assert not (tmp_path / "sub").exists() and not leftovers(tmp_path)

    def interrupted(self, name, t):
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardWriter, "add", interrupted)
    out.parent.mkdir()
    rc, _, err = run(capsys, str(src), "--out", str(out), "--quiet")
    assert rc == 130 and "interrupted" in err
    assert not out.exists() and not leftovers(out.parent)


def test_stale_partial_folders_of_dead_processes_are_removed(tmp_path, capsys):
    import os
    import subprocess
    import sys

    src = tmp_path / "in"
    make_ckpt(src)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a process id that no longer runs
    dead = tmp_path / f".out.partial-{p.pid}"
    dead_old = tmp_path / f".out.old-{p.pid}"
    live = tmp_path / f".out.partial-{os.getppid()}"  # a running process: left alone
    other = tmp_path / f".other.partial-{p.pid}"  # another output's: left alone
    for d in (dead, dead_old, live, other):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    rc, _, err = run(capsys, str(src), "--out", str(tmp_path / "out"), "--quiet")
    assert rc == 0, err
    assert not dead.exists() and not dead_old.exists()
    assert live.is_dir() and other.is_dir()
