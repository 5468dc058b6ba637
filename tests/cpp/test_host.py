"""Host build of csrc/core, csrc/nvfp4/block.h and csrc/search, checked by tests/cpp/*.cpp.

Each ``test_*.cpp`` here is compiled with g++ (``-O2 -ffp-contract=off``: the headers'
host path must round every fp32 operation once, as the kernels' explicit ``_rn``
intrinsics do) into a temporary folder and run; it prints one line per check group and
exits non-zero on any failure. No GPU and no torch are involved: these are the very
headers the CUDA kernels include, compiled for the CPU.
"""

import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOURCES = sorted(HERE.glob("test_*.cpp"))
GXX = shutil.which("g++")

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ is not installed: the host build of csrc cannot run")


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """All test programs, compiled in parallel (one g++ per source)."""
    out = tmp_path_factory.mktemp("cpp")
    procs = {}
    for src in SOURCES:
        exe = out / src.stem
        cmd = [GXX, "-O2", "-std=c++17", "-ffp-contract=off", "-pthread",
               f"-I{ROOT / 'csrc'}", f"-I{HERE}", str(src), "-o", str(exe)]
        procs[src.stem] = (exe, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    built = {}
    for name, (exe, proc) in procs.items():
        log, _ = proc.communicate()
        built[name] = (exe, proc.returncode, log)
    return built


def test_sources_found():
    assert {s.stem for s in SOURCES} >= {"test_core", "test_search"}


@pytest.mark.parametrize("name", [s.stem for s in SOURCES])
def test_program(binaries, name):
    exe, rc, log = binaries[name]
    assert rc == 0, f"g++ failed for {name}.cpp:\n{log}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    sys.stdout.write(run.stdout)
    assert run.returncode == 0, f"{name} failed:\n{run.stdout}\n{run.stderr}"
    assert "failures" in run.stdout and " 0 failures" in run.stdout
