"""The command line as a user starts it: ``python -m nvfp4_ops``, and ``info``."""

import subprocess
import sys

from nvfp4_ops import _library
from nvfp4_ops.cli.main import main

from ._ckpt import make_ckpt


def test_console_entry_point(tmp_path):
    """`python -m nvfp4_ops quantize` in a real process: exit status and the table; the
    core ops, and the CLI on a checkpoint it does not run, never import transformers."""
    src = tmp_path / "in"
    make_ckpt(src)
    code = ("import runpy, sys\n"
            "import nvfp4_ops, nvfp4_ops.nn, nvfp4_ops.reference\n"
            "assert 'transformers' not in sys.modules, 'the core ops import transformers'\n"
            "sys.argv = ['nvfp4-ops'] + sys.argv[1:]\n"
            "try:\n"
            "    runpy.run_module('nvfp4_ops', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    print('transformers imported:', 'transformers' in sys.modules)\n"
            "    raise\n")
    p = subprocess.run([sys.executable, "-c", code, "quantize", str(src), "--out",
                        str(tmp_path / "out"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "err amax" in p.stdout
    assert "transformers imported: False" in p.stdout
    assert (tmp_path / "out" / "report.json").is_file()


def test_info_lists_every_op(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nvfp4_ops ")
    assert "build:" in out
    for op in _library.OPS:
        name, _ = _library.op_implementation(op, "cpu")
        assert any(line.startswith(op + " ") and name in line for line in out.splitlines()), op
