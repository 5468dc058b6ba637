"""``nvfp4-ops quantize`` on 2 ranks (torchrun's environment, gloo on CPU; the GPU variant
on 2 GPUs): the output folder is byte-identical to the one-process run (the report's
timings aside), and an error on one rank fails the run with one line and no output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nvfp4_ops.cli.ranks import owners

from ._ckpt import leftovers, make_ckpt, randn, run
from ._ranks import WORLD, run_ranks

ROOT = Path(__file__).resolve().parents[2]
#: a q/k/v and a gate/up fused group beside _ckpt's linears
EXTRA = {
    "model.layers.0.self_attn.k_proj.weight": (64, 64),
    "model.layers.0.self_attn.v_proj.weight": (64, 64),
    "model.layers.0.mlp.gate_proj.weight": (64, 32),
}
#: (argv, what) of the comparisons: every layout, several shards with an index
CASES = [
    (["--format", "nvfp4", "--max-shard-size", "12KB"], "nvfp4 compressed-tensors"),
    (["--format", "nvfp4", "--layout", "modelopt", "--scales", "amax"], "nvfp4 modelopt"),
    (["--format", "mxfp8", "--max-shard-size", "20KB"], "mxfp8"),
]


#: options of every run (the report names the thread count)
COMMON = ["--quiet", "--threads", "1"]


def _ckpt(folder: Path) -> Path:
    make_ckpt(folder, extra={n: randn(*s, seed=20 + i) for i, (n, s) in enumerate(EXTRA.items())})
    return folder


def _gpt_oss(folder: Path, E=4, H=64, I=32) -> Path:
    """A one-layer gpt-oss-style checkpoint: 3-D MoE expert parameters (MXFP4 experts)."""
    folder.mkdir(parents=True)
    P = "model.layers.0.mlp.experts"
    t = {f"{P}.gate_up_proj": randn(E, H, 2 * I, seed=1), f"{P}.gate_up_proj_bias": randn(E, 2 * I),
         f"{P}.down_proj": randn(E, I, H, seed=2), f"{P}.down_proj_bias": randn(E, H, seed=3),
         "model.layers.0.mlp.router.weight": randn(E, H, seed=4),
         "model.layers.0.self_attn.q_proj.weight": randn(H, H, seed=5)}
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_oss",
                                                    "torch_dtype": "bfloat16"}))
    return folder


def _files(folder: Path) -> dict:
    """{relative path: bytes}, with report.json's timings taken out (they differ per run)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if not (k == "time_s" or k.endswith("_time_s") or k.endswith("_per_s"))}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            b = f.read_bytes()
            if f.name == "report.json":
                b = json.dumps(strip(json.loads(b)), indent=1).encode()
            out[str(f.relative_to(folder))] = b
    return out


def _assert_same(one: Path, many: Path) -> None:
    a, b = _files(one), _files(many)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs between 1 and {WORLD} ranks"


def _single(capsys, src: Path, out: Path, argv, device="cpu") -> Path:
    """The one-process run into ``out``, moved to ``one-OUT`` (so that the ranks' run can
    write the same ``out``, which the report names)."""
    rc, _, err = run(capsys, str(src), "--out", str(out), *COMMON, "--device", device, *argv)
    assert rc == 0, err
    return out.rename(out.with_name("one-" + out.name))


def _compare(tmp_path, capsys, device: str) -> None:
    src = _ckpt(tmp_path / "in")
    moe = _gpt_oss(tmp_path / "moe")
    cases = [(src, argv, what) for argv, what in CASES]
    cases.append((moe, ["--format", "mxfp4", "--layout", "gpt-oss"], "mxfp4 gpt-oss experts"))
    ones = [_single(capsys, s, tmp_path / f"out{i}", argv, device)
            for i, (s, argv, _) in enumerate(cases)]
    argvs = [["quantize", str(s), "--out", str(tmp_path / f"out{i}"), *COMMON,
              "--device", device, *argv] for i, (s, argv, _) in enumerate(cases)]
    got = run_ranks(argvs, gpu=device == "cuda")
    for i, ((_, argv, what), ranks) in enumerate(zip(cases, got)):
        for r, (rc, out, err) in enumerate(ranks):
            assert rc == 0, f"{what}: rank {r}: {rc}: {err}"
        assert ranks[0][1].startswith("wrote ") and ranks[1][1] == ""  # rank 0 speaks
        _assert_same(ones[i], tmp_path / f"out{i}")
    assert len(list(ones[0].glob("model-*.safetensors"))) > 1  # an index too
    assert json.loads((ones[0] / "report.json").read_text())["fused_groups"]
    assert not leftovers(tmp_path)


def test_two_ranks_write_the_one_process_output(tmp_path, capsys):
    _compare(tmp_path, capsys, "cpu")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 visible GPUs")
def test_two_gpus_write_the_one_process_output(tmp_path, capsys):
    _compare(tmp_path, capsys, "cuda")


def test_owners_balance_bytes():
    assert owners([10, 1, 1, 8], 2) == [0, 1, 1, 1]
    assert owners([5, 5, 5], 3) == [0, 1, 2]
    assert owners([], 2) == []
    assert owners([3, 3], 1) == [0, 0]


@pytest.mark.parametrize("bad_rank", [0, 1])
def test_an_error_on_one_rank_fails_the_run(tmp_path, capsys, bad_rank):
    """W4A4 with captured inputs for every layer but one: the rank that owns it raises;
    every rank exits with the one-process status, rank 0 prints the one-process line, and
    no output (nor partial folder) is left."""
    src = _ckpt(tmp_path / "in")
    from nvfp4_ops.cli.discover import discover
    from nvfp4_ops.cli.select import classify

    todo = [t for t in discover(str(src)).tensors
            if classify(t, "nvfp4", [], []).action == "quantize"]
    own = owners([t.nbytes for t in todo], WORLD)
    bad = next(t.name for t, o in zip(todo, own) if o == bad_rank)
    save_file({t.name[:-len(".weight")] + ".input": randn(32, t.shape[1], seed=5)
               for t in todo if t.name != bad}, str(tmp_path / "acts.safetensors"))
    argv = ["--scheme", "w4a4", "--calib", str(tmp_path / "acts.safetensors")]
    rc1, _, err1 = run(capsys, str(src), "--out", str(tmp_path / "out"), *COMMON, *argv)
    assert rc1 == 2 and bad in err1 and "no calibration inputs" in err1
    [ranks] = run_ranks([["quantize", str(src), "--out", str(tmp_path / "out"), *COMMON,
                          "--device", "cpu", *argv]])
    assert [r[0] for r in ranks] == [rc1, rc1]
    assert ranks[0][2] == err1 and ranks[1][2] == ""
    assert not (tmp_path / "out").exists()
    assert not leftovers(tmp_path)


def test_torchrun(tmp_path, capsys):
    """The real launcher: ``python -m torch.distributed.run --nproc-per-node 2 -m nvfp4_ops``."""
    src = _ckpt(tmp_path / "in")
    argv = ["--format", "nvfp4", "--max-shard-size", "12KB"]
    one = _single(capsys, src, tmp_path / "out", argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc-per-node={WORLD}", "-m", "nvfp4_ops", "quantize", str(src),
                        "--out", str(tmp_path / "out"), *COMMON, "--device", "cpu", *argv],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("wrote ") == 1
    _assert_same(one, tmp_path / "out")


def test_combine_capture_sums_in_rank_order():
    """The ranks' statistics: Hessians and Grams summed in rank order, amax the max, tokens
    and texts summed, notes once each; a layer one rank did not reach keeps the others'."""
    from nvfp4_ops.cli.capture import CaptureResult, LinearStats
    from nvfp4_ops.cli.ranks import Ranks

    def part(seed, layers, note):
        g = torch.Generator().manual_seed(seed)
        r = CaptureResult()
        r.notes, r.texts, r.tokens = [note, "shared"], 3 + seed, 10 + seed
        for k in layers:
            r[k] = LinearStats(torch.randn(2, 16, 16, generator=g), torch.rand((), generator=g),
                               5 + seed, torch.randn(32, 32, generator=g))
        return r

    parts = [part(0, ["a", "b"], "n0"), part(1, ["a"], "n1")]

    class Fake(Ranks):
        def agree(self, err, order=-1, payload=None):
            return [(({k: (s.hessian, s.amax, s.tokens, s.gram) for k, s in p.items()},
                      p.notes, p.texts, p.tokens)) for p in parts]

    out = Fake(1, 2, 1).combine_capture(parts[1])
    a0, a1 = parts[0]["a"], parts[1]["a"]
    assert torch.equal(out["a"].hessian, a0.hessian + a1.hessian)
    assert torch.equal(out["a"].gram, a0.gram + a1.gram)
    assert torch.equal(out["a"].amax, torch.maximum(a0.amax, a1.amax))
    assert out["a"].tokens == 11 and torch.equal(out["b"].hessian, parts[0]["b"].hessian)
    assert (out.texts, out.tokens, out.notes) == (7, 21, ["n0", "shared", "n1"])


def test_calibration_is_data_parallel(tmp_path, capsys):
    """An encoder calibrated on 2 ranks (each half of the texts, Hessians summed): the same
    tokens as one process, and the same output up to the fp32 order of the sums (most bytes
    equal, input scales within 1e-5)."""
    from ._ckpt import WORDS, make_encoder, tensors

    enc = make_encoder(tmp_path / "bert")
    words = WORDS * 3
    (tmp_path / "calib.txt").write_text("\n".join(" ".join(words[i:i + 5 + i % 7])
                                                   for i in range(25)) + "\n")
    argv = ["--scales", "hessian", "--scheme", "w4a4", "--eval-sentences", "8",
            "--calib", str(tmp_path / "calib.txt")]
    one = _single(capsys, enc, tmp_path / "out", argv)
    [ranks] = run_ranks([["quantize", str(enc), "--out", str(tmp_path / "out"), *COMMON,
                          "--device", "cpu", *argv]])
    assert [r[0] for r in ranks] == [0, 0], ranks[0][2] + ranks[1][2]
    r1, r2 = (json.loads((p / "report.json").read_text()) for p in (one, tmp_path / "out"))
    assert r1["calibration"] == r2["calibration"]
    assert r2["end_to_end"]["cosine"]["hessian"]["mean"] > 0.99  # rank 0 had every weight
    t1, t2 = tensors(one), tensors(tmp_path / "out")
    assert sorted(t1) == sorted(t2)
    same = total = 0
    for k, v in t1.items():
        if k.endswith("input_global_scale"):
            torch.testing.assert_close(t2[k], v, rtol=1e-5, atol=0)
        elif k.endswith("weight_packed"):
            same += int((t2[k] == v).sum())
            total += v.numel()
    assert total and same / total > 0.95


def test_sigterm_to_torchrun_leaves_no_output(tmp_path):
    """SIGTERM to torchrun while the ranks quantize: it stops the ranks, rank 0 removes the
    partial output folder; nothing is left."""
    import signal
    import time

    src = tmp_path / "in"
    make_ckpt(src, extra={f"model.layers.{i}.mlp.w{i}.weight": randn(512, 256, seed=40 + i)
                          for i in range(8)})
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc-per-node={WORLD}", "-m", "nvfp4_ops", "quantize", str(src),
                          "--out", str(tmp_path / "out"), *COMMON, "--device", "cpu",
                          "--scales", "mse"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        end = time.monotonic() + 60
        while not leftovers(tmp_path) and p.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert leftovers(tmp_path), "no partial output appeared"
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0, err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path), err
    assert "[rank0]:" not in err, err  # no traceback from rank 0, a line at most


def test_dequantize_runs_on_rank_0_alone(tmp_path, capsys):
    """Commands that do not share their work run once under torchrun (rank 0), not once per
    rank racing for the same output."""
    src = _ckpt(tmp_path / "in")
    q = _single(capsys, src, tmp_path / "q", [])
    rc, _, err = run(capsys, "dequantize", str(q), "--out", str(tmp_path / "out"), "--quiet")
    assert rc == 0, err
    one = (tmp_path / "out").rename(tmp_path / "one-out")
    [ranks] = run_ranks([["dequantize", str(q), "--out", str(tmp_path / "out"), "--quiet",
                          "--device", "cpu"]])
    assert [r[0] for r in ranks] == [0, 0] and ranks[1][1:] == ("", "")
    _assert_same(one, tmp_path / "out")


def test_world_size_without_torchrun_is_one_line(tmp_path, capsys, monkeypatch):
    """WORLD_SIZE > 1 with no rendezvous (set by hand, not by torchrun): one line, no output."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    rc, _, err = run(capsys, str(_ckpt(tmp_path / "in")), "--out", str(tmp_path / "out"))
    assert rc == 1 and err.count("\n") == 1 and "cannot join the other ranks" in err, err
    assert not (tmp_path / "out").exists()
