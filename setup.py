"""Build of nvfp4_ops._C.

A CUDA extension when nvcc and a CUDA build of torch are present (kernels in
csrc/ops/*.cu), a CPU-only extension otherwise (schemas only; every op then runs
the pure-PyTorch reference). Built against the LibTorch stable ABI with torch 2.11
as the target version and the Python limited API, so one build serves torch >= 2.11
and every CPython >= 3.10.

Environment:
  TORCH_CUDA_ARCH_LIST   e.g. "9.0a;10.0a" (default: 8.0;9.0a;10.0a;12.0a; "+PTX" adds PTX)
  NVFP4_OPS_CPU_ONLY=1   build without the CUDA sources even when nvcc is there
  MAX_JOBS               parallel compile jobs (ninja)
"""

import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0a;10.0a;12.0a"
# torch 2.11 is the oldest torch this build loads into (stable ABI target version).
TORCH_TARGET_VERSION = "0x020b000000000000"


def arch_flags(arch_list):
    """nvcc -gencode flags for a TORCH_CUDA_ARCH_LIST-style string."""
    flags, archs = [], []
    for item in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        ptx = item.endswith("+PTX")
        item = item.removesuffix("+PTX")
        num = item.replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
        archs.append(f"sm_{num}")
    if not archs:
        raise ValueError(f"TORCH_CUDA_ARCH_LIST names no architecture: {arch_list!r}")
    return flags, archs


def write_build_info(cuda, archs):
    """nvfp4_ops/_build_info.py: what this build holds, for `python -m nvfp4_ops info`."""
    import torch

    with open(os.path.join(ROOT, "nvfp4_ops", "_build_info.py"), "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"CUDA = {cuda!r}\n")
        f.write(f"ARCHS = {archs!r}\n")
        f.write(f"BUILT_WITH_TORCH = {torch.__version__!r}\n")
        f.write(f"BUILT_WITH_CUDA = {torch.version.cuda if cuda else None!r}\n")


def cudart_dirs(cuda_home):
    """Folders holding libcudart.so: CUDA_HOME/lib64 is not the only layout in use."""
    candidates = [os.path.join(cuda_home, d) for d in ("lib64", "lib", "targets/x86_64-linux/lib")]
    candidates += sorted(glob.glob(os.path.join(cuda_home, "cuda*", "lib*")))
    return [d for d in candidates if os.path.exists(os.path.join(d, "libcudart.so"))][:1]


def extensions():
    import torch
    from torch.utils import cpp_extension

    cuda = (
        os.environ.get("NVFP4_OPS_CPU_ONLY", "0") != "1"
        and torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
    )
    defines = [
        f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}",
    ]
    cxx = ["-O3", "-std=c++17", *defines]
    sources = ["csrc/bindings.cpp"]
    if not cuda:
        write_build_info(False, [])
        return [
            cpp_extension.CppExtension(
                "nvfp4_ops._C", sources, extra_compile_args={"cxx": cxx}, py_limited_api=True
            )
        ]
    gencode, archs = arch_flags(os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS)
    write_build_info(True, archs)
    sources += sorted(glob.glob("csrc/ops/*.cu"))
    nvcc = [
        "-O3",
        "-std=c++17",
        # Exact IEEE arithmetic is the contract (SPEC.md): no --use_fast_math.
        "-lineinfo",
        "-DUSE_CUDA",  # exposes the CUDA part of the AOTI shim (current stream)
        *defines,
        f"-DNVFP4_OPS_ARCHS=\"{' '.join(archs)}\"",
        *gencode,
    ]
    return [
        cpp_extension.CUDAExtension(
            "nvfp4_ops._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            library_dirs=cudart_dirs(cpp_extension.CUDA_HOME),
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            py_limited_api=True,
        )
    ]


def build_ext_cmd():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(no_python_abi_suffix=True)


setup(
    name="nvfp4_ops",
    version="0.1.0",
    description="Exact, memory-speed NVFP4 / MXFP8 / MXFP4 codecs for PyTorch on every CUDA GPU",
    packages=find_packages(include=["nvfp4_ops", "nvfp4_ops.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": build_ext_cmd()},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    python_requires=">=3.10",
    install_requires=["torch>=2.11"],
    entry_points={"console_scripts": ["nvfp4-ops=nvfp4_ops.__main__:main"]},
)
