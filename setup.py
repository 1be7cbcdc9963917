"""Build script: the Python package plus the C++ CPU extension (and the CUDA one when possible).

Build against the torch already installed: ``pip install --no-build-isolation .`` (an isolated
build would fetch its own, possibly multi-GB CUDA, torch).
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


ext_modules = []
cmdclass = {}
try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # metadata-only builds (sdist) need no torch
    torch = None

if torch is not None and os.environ.get("RVQFAST_NO_EXT") != "1":
    cpu_sources = _rel("kernels/binding/cpu_binding.cpp") + _rel("kernels/cpu/*.cpp")
    if cpu_sources:
        ext_modules.append(
            CppExtension(
                "rvqfast._C",
                cpu_sources,
                include_dirs=[os.path.join(ROOT, "kernels")],
                # Kernels pick AVX-512 / AMX at run time (function target attributes), so the
                # baseline flags stay portable across x86-64 machines.
                # -fopenmp: at::parallel_for is an inline template with `#pragma omp parallel`;
                # compiled without it, every parallel loop in the extension ran on one thread.
                extra_compile_args=["-O3", "-std=c++17", "-fno-math-errno", "-fopenmp"],
                extra_link_args=["-fopenmp"],
            )
        )
    cuda_sources = _rel("kernels/binding/cuda_binding.cpp") + _rel("kernels/cuda/*.cu")
    want_cuda = os.environ.get("RVQFAST_NO_CUDA") != "1" and torch.version.cuda and CUDA_HOME
    if want_cuda and len(cuda_sources) > 1:
        ext_modules.append(
            CUDAExtension(
                "rvqfast._cuda",
                cuda_sources,
                include_dirs=[os.path.join(ROOT, "kernels")],
                extra_compile_args={
                    "cxx": ["-O3", "-std=c++17"],
                    "nvcc": ["-O3", "-std=c++17", "-lineinfo"]
                    + os.environ.get("RVQFAST_NVCC_FLAGS", "").split(),
                },
            )
        )
    elif want_cuda is False or not want_cuda:
        print("rvqfast: building without the CUDA extension (no CUDA torch / toolkit)", file=sys.stderr)
    cmdclass = {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}

setup(
    name="rvqfast",
    version="0.1.0",
    description="Fast residual vector quantization (CPU/Triton/CUDA kernels) and a pose-code motion tokenizer",
    long_description=open(os.path.join(ROOT, "README.md")).read() if os.path.exists(os.path.join(ROOT, "README.md")) else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rvqfast", "rvqfast.*"]),
    # The studio's page and its vendored three.js / onnxruntime-web builds (gzip), so a pip install
    # serves the studio without npm or network.
    package_data={"rvqfast.studio": ["static/*.html", "static/*.js", "static/*.css", "static/vendor/*"]},
    python_requires=">=3.10",
    # 2.13.0 is the CPU wheel on local disk; the GPU machines run 2.11. An open upper bound would
    # let pip pull a newer multi-GB CUDA build.
    install_requires=["torch>=2.4,<2.14", "numpy>=1.24", "tqdm>=4.60", "safetensors>=0.4"],
    extras_require={
        "viz": ["matplotlib>=3.7", "imageio>=2.30"],
        "export": ["onnx>=1.15", "onnxruntime>=1.17"],
        "triton": ["triton>=3.0"],
        "test": [
            "pytest>=7",
            "pytest-benchmark>=4",
            "hypothesis>=6.80",
            "vector-quantize-pytorch==1.32.0",  # parity tests and the names list assume 1.32
            "faiss-cpu>=1.8",
            "triton>=3.0",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "matplotlib>=3.7",
            "imageio>=2.30",
            "safetensors>=0.4",
        ],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
