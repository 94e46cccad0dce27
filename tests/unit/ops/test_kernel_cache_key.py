"""The kernel cache key and the loader's errors, on CPU (the builds themselves are in
tests/kernels/)."""
from __future__ import annotations

import shutil

import pytest
import torch

from bigtrain.ops import _build


@pytest.fixture
def sources(tmp_path, monkeypatch):
    src = tmp_path / "kernels"
    shutil.copytree(_build.KERNEL_DIR, src)
    monkeypatch.setattr(_build, "KERNEL_DIR", src)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    return src


def test_key_follows_source_torch_and_arch(sources, monkeypatch):
    key = _build.build_key("bias_act")
    assert key == _build.build_key("bias_act") and len(key) == 16
    assert key != _build.build_key("upfirdn2d")
    (sources / "bias_act.cu").write_text((sources / "bias_act.cu").read_text() + "\n// edited\n")
    edited = _build.build_key("bias_act")
    assert edited != key
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    two_archs = _build.build_key("bias_act")
    assert two_archs != edited
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert _build.build_key("bias_act") != two_archs


def test_arch_is_required_without_a_gpu(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(_build.KernelBuildError, match="TORCH_CUDA_ARCH_LIST"):
        _build.arch_list()


@pytest.mark.skipif(torch.version.cuda is not None, reason="a CUDA build of torch can compile")
def test_cpu_torch_cannot_build_and_says_so_once(monkeypatch):
    monkeypatch.setattr(_build, "_failed", {})
    monkeypatch.setattr(_build, "_loaded", {})
    for _ in range(2):  # the failure is remembered, not retried per call
        with pytest.raises(_build.KernelBuildError, match="CPU build: it cannot compile CUDA kernels"):
            _build.load("bias_act")
    assert set(_build._failed) == {"bias_act"}
