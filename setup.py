"""bigtrain: distributed training for large GANs (StyleGAN2, ProGAN, BigGAN)."""
import glob
import os
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("bigtrain/_version.py").read_text()).group(1)

# Ahead-of-time CUDA kernels: BIGTRAIN_BUILD_KERNELS=1 pip install --no-build-isolation -e .
# (needs a CUDA build of torch and nvcc; TORCH_CUDA_ARCH_LIST picks the GPUs). Without it the
# kernels are compiled on first use into a cache (docs/kernels.md).
ext_modules, cmdclass = [], {}
if os.environ.get("BIGTRAIN_BUILD_KERNELS") == "1":
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    # CUDA 13 torch wheels carry the CUDA headers in nvidia/cu*/include.
    includes = sorted(glob.glob(os.path.join(os.path.dirname(__import__("torch").__file__), "..", "nvidia", "cu*",
                                             "include")))
    flags = [f for inc in includes for f in ("-isystem", inc)]
    ext_modules = [CUDAExtension(f"bigtrain._kernel_{name}", [f"kernels/{name}.cu", f"kernels/{name}_host.cpp"],
                                 extra_compile_args={"cxx": ["-O3", *flags],
                                                     "nvcc": ["-O3", "--expt-relaxed-constexpr", *flags]})
                   for name in ("upfirdn2d", "bias_act", "modconv")]
    cmdclass = {"build_ext": BuildExtension}

setup(
    name="bigtrain",
    version=version,
    description="Distributed training for large GANs: StyleGAN2, ProGAN, BigGAN",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bigtrain", "bigtrain.*"]),
    # torch is deliberately a range: CPU machines install the CPU wheel first (see README),
    # GPU machines a CUDA build; both satisfy it.
    install_requires=[
        "torch>=2.6,<2.15",  # 2.6: torch.load(weights_only=True) without CVE-2025-32434 (NVlabs import)
        "numpy>=1.24,<3",
        "pyyaml>=6.0,<7",
        "pillow>=10.0,<14",
        "tensorboard>=2.15,<3",
        "tqdm>=4.66,<5",
        "webdataset>=1.0,<2",
        "submitit>=1.5.4,<1.6",  # `bigtrain submit`; private helpers it uses are pinned with it
        "torchmetrics>=1.4,<2",  # MS-SSIM
        "matplotlib>=3.8,<4",  # bigtrain plot
        "safetensors>=0.4,<1",  # export snapshots, loaded without pickle
        "onnx>=1.16,<2",  # bigtrain export --format onnx (torch's exporter writes through it)
        "onnxruntime>=1.18,<2",  # ... and checks the ONNX graph against PyTorch
    ],
    extras_require={
        "deepspeed": ["deepspeed>=0.19,<0.20"],
        # The suite runs real DeepSpeed (CPU, gloo), so the test extra carries it.
        "test": ["pytest>=8.0,<10", "pytest-timeout>=2.3,<3", "pytest-xdist>=3.8,<4", "deepspeed>=0.19,<0.20",
                 "scipy>=1.11,<2"],  # scipy: the tests' independent references (upfirdn, sqrtm, ndtr)
    },
    entry_points={"console_scripts": ["bigtrain=bigtrain.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
