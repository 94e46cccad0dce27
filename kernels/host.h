// What every kernel's host side (<kernel>_host.cpp) includes: ATen's tensor, allocation and
// dispatch headers, torch's pybind11 casters (torch/csrc/utils/pybind.h, not torch/python.h, which
// brings the whole torch::nn API: 27 s of the C++ compiler's time against 19 s), the launchers
// (launch.h), the device calls the host side makes, as macros, and BT_MODULE(name, m) { ... }, which
// is the extension's module on a GPU and, for the CPU emulation (cpu_emulation.cpp), a function that
// fills the emulation module's submodule `name`.
#pragma once
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#include "launch.h"

#ifdef BIGTRAIN_CPU_EMULATION
#define BT_ON_DEVICE(t) ((t).is_cpu())
#define BT_DEVICE_GUARD(t) (void)0
#define BT_STREAM() bt_stream_t(nullptr)
#define BT_LAUNCH_CHECK() (void)0
#define BT_MODULE(name, m) void bt_register_##name(pybind11::module_& m)
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

// The tensor is on the device the kernels run on.
#define BT_ON_DEVICE(t) ((t).is_cuda())
// Makes t's GPU current for the rest of the scope.
#define BT_DEVICE_GUARD(t) const c10::cuda::CUDAGuard bt_device_guard((t).device())
// The current stream of the current GPU, where the launchers launch.
#define BT_STREAM() bt_stream_t(c10::cuda::getCurrentCUDAStream())
#define BT_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
#define BT_MODULE(name, m) PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
#endif
