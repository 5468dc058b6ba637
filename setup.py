"""Build of nvfp4_ops._C.

A CUDA extension when nvcc and a CUDA build of torch are present (schemas in
csrc/registration.cpp, kernels launched from csrc/*/ops.cu), a CPU-only extension
otherwise (schemas only; every op then runs the pure-PyTorch reference). Built against the LibTorch stable ABI with torch 2.11
as the target version and the Python limited API, so one build serves torch >= 2.11
and every CPython >= 3.10.

Environment:
  TORCH_CUDA_ARCH_LIST   e.g. "9.0a;10.0" (default: 8.0;9.0a;10.0;12.0+PTX: machine code for
                         sm_80, sm_90a, sm_100, sm_120 and PTX of sm_120, which newer GPUs
                         JIT-compile; "+PTX" embeds PTX for an arch, a suffix "a" builds an
                         arch-specific target: sm_90a (H100 / H200 only) holds the wgmma
                         GEMM kernel, which a plain "9.0" build goes without)
  NVFP4_OPS_CPU_ONLY=1   build without the CUDA sources even when nvcc is there
  MAX_JOBS               parallel compile jobs (ninja)

Object files are kept in build/ inside the checkout (build_temp), so that a second
`pip install --no-build-isolation -e .` (or `setup.py build_ext --inplace`) recompiles only
what changed: ninja compares the sources and headers with the objects there.
"""

import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0a;10.0;12.0+PTX"
# torch 2.11 is the oldest torch this build loads into (stable ABI target version).
TORCH_TARGET_VERSION = "0x020b000000000000"


def arch_flags(arch_list):
    """nvcc -gencode flags for a TORCH_CUDA_ARCH_LIST-style string.

    Returns ``(flags, archs, ptx)``: ``archs`` names the machine code (``sm_90``, ``sm_100a``),
    ``ptx`` the virtual archs whose PTX is embedded (``compute_120``).
    """
    flags, archs, ptx_archs = [], [], []
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
            ptx_archs.append(f"compute_{num}")
        archs.append(f"sm_{num}")
    if not archs:
        raise ValueError(f"TORCH_CUDA_ARCH_LIST names no architecture: {arch_list!r}")
    return flags, archs, ptx_archs


def write_build_info(cuda, archs, ptx):
    """nvfp4_ops/_build_info.py: what this build holds, for `python -m nvfp4_ops info`.

    Rewritten only when its text changes, so that an unchanged rebuild touches nothing.
    """
    import torch

    text = (
        "# Written by setup.py at build time.\n"
        f"CUDA = {cuda!r}\n"
        f"ARCHS = {archs!r}\n"
        f"PTX = {ptx!r}\n"
        f"BUILT_WITH_TORCH = {torch.__version__!r}\n"
        f"BUILT_WITH_CUDA = {torch.version.cuda if cuda else None!r}\n"
    )
    path = os.path.join(ROOT, "nvfp4_ops", "_build_info.py")
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with open(path, "w") as f:
        f.write(text)


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
    sources = ["csrc/registration.cpp"]
    if not cuda:
        write_build_info(False, [], [])
        return [
            cpp_extension.CppExtension(
                "nvfp4_ops._C", sources, extra_compile_args={"cxx": cxx}, py_limited_api=True
            )
        ]
    gencode, archs, ptx = arch_flags(os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS)
    write_build_info(True, archs, ptx)
    # One translation unit per op family (few, so that a 2-core CI build stays short).
    sources += sorted(glob.glob("csrc/*/ops.cu"))
    nvcc = [
        "-O3",
        "-std=c++17",
        # Exact IEEE arithmetic is the contract (docs/spec.md): no --use_fast_math.
        "-lineinfo",
        "-DUSE_CUDA",  # exposes the CUDA part of the AOTI shim (current stream)
        *defines,
        f"-DNVFP4_OPS_ARCHS=\"{' '.join(archs + ptx)}\"",
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
    """torch's BuildExtension (ninja, incremental) with its objects kept in ROOT/build.

    pip's PEP 660 editable install builds in a fresh temporary folder each time; pinning
    build_temp to the checkout keeps the objects (and ninja's record of them) between
    installs, so an unchanged source is not compiled again.
    """
    from torch.utils.cpp_extension import BuildExtension

    base = BuildExtension.with_options(no_python_abi_suffix=True)

    class BuildExt(base):
        def finalize_options(self):
            super().finalize_options()
            self.build_temp = os.path.join(ROOT, "build", "temp")

    return BuildExt


CLI_REQUIRES = ["safetensors", "tokenizers", "tqdm", "transformers>=4.56"]

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
    # cli: the checkpoint quantizer (`nvfp4-ops quantize`); its model runs go through transformers.
    # test: the suite, with the real clients that load our checkpoints (transformers,
    # compressed-tensors; accelerate, which transformers needs to load gpt-oss checkpoints).
    extras_require={
        "cli": CLI_REQUIRES,
        "test": CLI_REQUIRES + ["pytest", "numpy", "compressed-tensors", "accelerate"],
    },
    entry_points={"console_scripts": ["nvfp4-ops=nvfp4_ops.cli.main:main"]},
)
