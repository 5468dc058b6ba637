"""nvfp4_ops._library: which implementation serves each op, the build report, and the
package without a compiled ``_C`` (reference and formats still import; ops say how to build)."""

import runpy
import subprocess
import sys
import textwrap

import pytest

from nvfp4_ops import _library


def test_op_implementation_report():
    for op in _library.OPS:
        name, why = _library.op_implementation(op, "cpu")
        assert name == "reference" and why
        name, why = _library.op_implementation(op, "cuda")
        assert name in ("cuda-kernel", "reference", "unavailable") and why
    with pytest.raises(ValueError, match="unknown op"):
        _library.op_implementation("nope")


def test_build_info_keys():
    info = _library.build_info()
    assert set(info) == {"cuda", "archs", "ptx", "built_with_torch", "built_with_cuda"}
    assert info["cuda"] in (True, False, None)
    assert isinstance(info["archs"], list) and isinstance(info["ptx"], list)


@pytest.mark.parametrize(
    "arch, archs, ptx, want",
    [
        ("sm_90", ["sm_80", "sm_90a"], [], True),  # sm_90a cubin runs on sm_90
        ("sm_86", ["sm_80"], [], True),  # a plain cubin runs on later minors
        ("sm_89", ["sm_80", "sm_90"], [], True),
        ("sm_100", ["sm_80", "sm_90a"], [], False),
        ("sm_103", ["sm_100a"], [], False),  # arch-specific: that exact arch only
        ("sm_103", ["sm_100"], [], True),
        ("sm_121", ["sm_120"], [], True),
        ("sm_80", ["sm_90"], [], False),  # never backwards
    ],
)
def test_arch_compiled(arch, archs, ptx, want):
    assert _library._arch_compiled(arch, archs) is want


def test_ptx_for():
    assert _library._ptx_for("sm_121", ["compute_120"]) == "compute_120"
    assert _library._ptx_for("sm_110", ["compute_90", "compute_100"]) == "compute_100"
    assert _library._ptx_for("sm_90", ["compute_100", "compute_120"]) is None
    assert _library._ptx_for("sm_90", []) is None


_WITHOUT_C = textwrap.dedent(
    """
    import sys
    sys.modules["nvfp4_ops._C"] = None  # makes `import nvfp4_ops._C` fail
    import torch
    import nvfp4_ops.formats
    import nvfp4_ops.reference as ref
    x = torch.randn(4, 32)
    p, s = ref.quantize(x, ref.global_scale(x))
    assert ref.dequantize(p, s, ref.global_scale(x), torch.float32).shape == (4, 32)
    import nvfp4_ops
    from nvfp4_ops import _library
    assert _library.op_implementation("quantize", "cpu")[0] == "unavailable"
    try:
        nvfp4_ops.mx_quantize(x)
    except RuntimeError as e:
        print(e)
    else:
        raise SystemExit("mx_quantize ran without _C")
    """
)


def test_reference_and_formats_work_without_the_compiled_library():
    r = subprocess.run([sys.executable, "-c", _WITHOUT_C], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    msg = r.stdout.strip()
    assert msg.startswith("nvfp4_ops.mx_quantize needs the compiled library nvfp4_ops._C")
    assert "python setup.py build_ext --inplace" in msg


def test_info_command(monkeypatch, capsys):
    # `python -m nvfp4_ops info`, run in this process (a subprocess costs an import of torch)
    monkeypatch.setattr(sys, "argv", ["nvfp4_ops", "info"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("nvfp4_ops", run_name="__main__")
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "torch" in out and "quantize" in out and "swizzle_scales" in out
